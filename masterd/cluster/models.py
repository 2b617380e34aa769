"""
The masters sharing a database, as C{/api/v1/masters} shows them.
"""

from __future__ import annotations

from typing import Any, Literal

from masterd.schema import Document, Time


class MasterInfo(Document):
    name: str
    href: str
    state: Literal["up", "down"]
    version: str
    started_at: Time
    last_seen: Time
    listen: list[str]
    stats: dict[str, Any]


class MasterPage(Document):
    items: list[MasterInfo]
    next: None = None
