"""
The audit trail as the API shows it.
"""

from __future__ import annotations

from typing import Annotated, Any

from masterd.schema import UNSET, Document, Id, Meta, Model, PageLimit, Time, Unset

Limit = PageLimit


class AuditQuery(Model):
    actor: Annotated[str, Meta(max_length=255)] | Unset = UNSET
    resource: Annotated[str, Meta(max_length=1000)] | Unset = UNSET
    action: Annotated[str, Meta(max_length=255)] | Unset = UNSET
    since: Annotated[str, Meta(max_length=64, extra_json_schema={"format": "date-time"},
                     description="ISO 8601 with its zone, e.g. 2026-12-01T00:00:00Z: rows "
                     "at or after it")] | Unset = UNSET  # fmt: skip
    limit: Limit = 100
    after: Id | Unset = UNSET


class TokenRef(Document):
    id: int
    href: str


class AuditEntry(Document):
    id: int
    at: Time
    #: The user name of the token used.
    actor: str
    role: str
    #: The database token used; null for a token of the configuration file.
    token: TokenRef | None
    action: str
    resource: str
    changes: dict[str, Any]
    address: str | None
    master: str


class AuditPage(Document):
    items: list[AuditEntry]
    next: str | None
