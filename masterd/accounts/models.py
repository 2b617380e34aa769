"""
Tokens as the API takes and shows them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from masterd.schema import UNSET, Document, Id, Meta, Model, PageLimit, Time, Unset

Limit = PageLimit

#: A user name: what jobs record as their owner.
UserName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$",
        description="1-63 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
    ),
]
RoleName = Literal["viewer", "user", "operator", "admin", "agent"]


class TokenCreate(Model):
    user: UserName
    role: RoleName
    description: Annotated[str, Meta(max_length=1000)] = ""
    expires_at: (
        Annotated[datetime, Meta(tz=True, description="ISO 8601 with its zone; in the future")]
        | None
    ) = None


class TokenQuery(Model):
    user: Annotated[str, Meta(max_length=255)] | Unset = UNSET
    revoked: bool = False
    limit: Limit = 100
    after: Id | Unset = UNSET


class TokenDocument(Document):
    id: int
    href: str
    user: str
    role: RoleName
    description: str
    created_at: Time
    created_by: str
    expires_at: Time | None
    revoked_at: Time | None
    revoked_by: str | None
    #: Whether the token is accepted now (neither revoked nor expired).
    active: bool


class CreatedToken(TokenDocument):
    #: The token itself: shown in this answer only, never again.
    secret: str


class TokenPage(Document):
    items: list[TokenDocument]
    next: str | None


class SessionCreate(Model):
    #: The token to sign in with (any role but agent's).
    token: Annotated[str, Meta(min_length=1, max_length=4096)]


class SessionDocument(Document):
    href: str
    user: str
    role: RoleName
    #: What a change made with the session sends in X-CSRF-Token; None when
    #: the request presented a bearer token instead of a session.
    csrf_token: str | None
    expires_at: Time | None
