"""
Reading the audit trail, oldest first, a page at a time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from masterd._time import isotime
from masterd.db import Pool
from masterd.errors import InvalidField

from .models import AuditEntry, TokenRef

_COLUMNS = "id, at, actor, role, token_id, action, resource, changes, address, master"


def parseSince(text: str) -> datetime:
    """
    An ISO 8601 time with its offset (C{Z} or C{+01:00}).

    @raise InvalidField: naming C{since}.
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidField("since", f"must be an ISO 8601 time, not {text[:64]!r}") from None
    if when.tzinfo is None:
        raise InvalidField("since", "must say its time zone (2026-12-01T00:00:00Z)")
    return when


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
