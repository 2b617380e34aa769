"""
The master's own document (C{GET /api/v1/master}), declared (masterd.schema).
"""

from __future__ import annotations

from typing import Any

import msgspec

from masterd.schema import Document, Time


class RouteCount(Document):
    method: str
    route: str
    status: int
    count: int
    avg_ms: float
    max_ms: float


class Requests(Document):
    total: int
    in_flight: int
    avg_ms: float
    max_ms: float
    by_route: list[RouteCount]


class ExceptionSeen(Document):
    """
    An unhandled exception; its message (which may hold SQL or submitted
    data) is shown to admins only.
    """

    at: Time
    route: str
    type: str
    message: str | msgspec.UnsetType = msgspec.UNSET


class Exceptions(Document):
    total: int
    recent: list[ExceptionSeen]


class LoopDocument(Document):
    """
    One of the master's periodic loops: it survives every failure (each is
    also among the exceptions, with the route C{loop <name>}).
    """

    name: str
    interval_s: float
    running: bool
    runs: int
    failures: int
    last_failure_at: Time | None


class MasterDocument(Document):
    name: str
    href: str
    version: str
    started_at: Time
    uptime_s: float
    requests: Requests
    exceptions: Exceptions
    database: dict[str, Any]
    gc: dict[str, Any]
    scheduling: dict[str, Any]
    loops: list[LoopDocument]
    talkback: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    #: This master's webhook deliveries: claims, delivered, failed_tries,
    #: given_up, exceptions, in_flight.
    webhooks: dict[str, int] | msgspec.UnsetType = msgspec.UNSET


class Health(Document):
    status: str
    master: str
