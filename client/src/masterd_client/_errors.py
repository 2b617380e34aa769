"""
The one exception the client raises for everything the master (or the
network between) refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Statuses worth trying again after a pause: no answer at all, or a proxy or
#: master that says it cannot serve right now (the database is down).
TRANSIENT_STATUSES = frozenset({0, 502, 503, 504})


class MasterdError(Exception):
    """
    An error answered by the master, or no answer at all.

    @ivar status: the HTTP status, or 0 when no HTTP answer came (the master
        is unreachable, the connection broke, the request timed out).
    @ivar code: the server's stable error code (C{"not_found"},
        C{"conflict"}, C{"invalid_field"}, ...), C{"unreachable"} with status
        0, C{"http_error"} for an error answer that is not masterd's JSON (a
        proxy's HTML page), C{"invalid_response"} for a success whose body is
        not the JSON expected.
    @ivar message: for a person; the server's own message when there is one.
    @ivar details: the server's C{details} object (the field at fault, the
        current state of a conflict, ...).
    """

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        # All four in args, so that the error pickles and copies intact.
        super().__init__(status, code, message, dict(details or {}))
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"MasterdError({self.status!r}, {self.code!r}, {self.message!r}, {self.details!r})"

    @property
    def transient(self) -> bool:
        """
        Whether the same request may well succeed if tried again later.
        """
        return self.status in TRANSIENT_STATUSES or self.code == "database_unavailable"
