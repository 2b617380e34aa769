"""
Reading the audit trail, oldest first, a page at a time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from masterd._time import isotime
from masterd.db import Pool
from masterd.errors import InvalidField

from .models import AuditEntry, TokenRef

_COLUMNS = "id, at, actor, role, token_id, action, resource, changes, address, master"


_AWARE = Annotated[datetime, msgspec.Meta(tz=True)]


def parseSince(text: str) -> datetime:
    """
    An RFC 3339 time with its zone, as the schema's date-time says (a query
    parameter arrives as text: strictly a time, never a number).

    @raise InvalidField: naming C{since}.
    """
    try:
        when: datetime = msgspec.convert(text, _AWARE)
    except msgspec.ValidationError:
        raise InvalidField(
            "since", f"must be an ISO 8601 time with its zone, not {text[:64]!r}"
        ) from None
    # In UTC: PostgreSQL takes offsets up to 15:59 only, RFC 3339 any.
    try:
        return when.astimezone(UTC)
    except OverflowError:
        # Before the year 1 or after 9999 in UTC: as early or late as can be.
        return (
            datetime.min.replace(tzinfo=UTC)
            if when.year < 5000
            else datetime.max.replace(tzinfo=UTC)
        )


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    id_, at, actor, role, tokenID, action, resource, changes, address, master = row
    return AuditEntry(
        id=id_,
        at=isotime(at),
        actor=actor,
        role=role,
        token=TokenRef(id=tokenID, href=f"/api/v1/tokens/{tokenID}") if tokenID else None,
        action=action,
        resource=resource,
        changes=changes,
        address=address,
        master=master,
    )


class AuditLog:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def entries(
        self,
        *,
        actor: str | None = None,
        resource: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        after: int | None = None,
    ) -> tuple[list[AuditEntry], bool]:
        """
        Rows oldest first; C{resource} matches the href and what lies
        under it (C{/api/v1/jobs/12} finds its tasks' rows too); C{action}
        matches exactly, or a kind with C{job.*}.
        """
        where = ["TRUE"]
        params: list[Any] = []
        if actor is not None:
            where.append("actor = %s")
            params.append(actor)
        if resource is not None:
            where.append("(resource = %s OR starts_with(resource, %s))")
            params += [resource, resource.rstrip("/") + "/"]
        if action is not None:
            if action.endswith(".*"):
                where.append("starts_with(action, %s)")
                params.append(action[:-1])
            else:
                where.append("action = %s")
                params.append(action)
        if since is not None:
            where.append("at >= %s")
            params.append(since)
        if after is not None:
            where.append("id > %s")
            params.append(after)
        params.append(limit + 1)
        rows = await self._pool.query(
            f"SELECT {_COLUMNS} FROM audit WHERE {' AND '.join(where)} ORDER BY id LIMIT %s",
            params,
        )
        return [_entry(r) for r in rows[:limit]], len(rows) > limit
