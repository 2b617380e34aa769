"""
Reading the farm's history: hours of a range by key, for GET
/api/v1/history, and each project's totals over all hours, for /metrics.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from attrs import frozen

from masterd._time import isoformat, isotime
from masterd.db import Pool, Transaction
from masterd.errors import InvalidField, Unprocessable

from .models import (
    DEFAULT_RANGE_DAYS,
    HISTORY_HREF,
    MAX_RANGE_DAYS,
    HistoryBy,
    HistoryDocument,
    HistoryHour,
    HistoryTotal,
)

_AWARE = Annotated[datetime, msgspec.Meta(tz=True)]

_SUMS = "sum(f.tasks_done), sum(f.tasks_failed), sum(f.attempts), sum(f.cpu_s), sum(f.wall_s)"

# The key of each way to read: a pool is each of the tags of the agent
# (an attempt counts once in each), "" for an untagged agent.
_KEYS: dict[str | None, tuple[str, str]] = {
    None: ("''::text", ""),
    "project": ("f.project", ""),
    "owner": ("f.owner", ""),
    "pool": (
        "p.key",
        " CROSS JOIN LATERAL unnest(CASE WHEN f.tags = '{}' THEN ARRAY[''] ELSE f.tags END)"
        " AS p (key)",
    ),
}

# The hours that overlap [since, until): from the one holding since. In
# primary-key order, with keys in byte order (as Python sorts them).
_HOURS = (
    "SELECT f.hour, {key} AS key, " + _SUMS + " FROM farm_history f{join}"
    " WHERE f.hour >= date_trunc('hour', %s::timestamptz, 'UTC') AND f.hour < %s"
    ' GROUP BY 1, 2 ORDER BY 1, {key} COLLATE "C"'
)


def parseTime(text: str, field: str) -> datetime:
    """
    An RFC 3339 time with its zone, in UTC (a query parameter arrives as
    text: strictly a time, never a number).

    @raise InvalidField: naming C{field}.
    """
    try:
        when: datetime = msgspec.convert(text, _AWARE)
    except msgspec.ValidationError:
        raise InvalidField(
            field, f"must be an ISO 8601 time with its zone, not {text[:64]!r}"
        ) from None
    try:
        return when.astimezone(UTC)
    except OverflowError:
        # Before the year 1 or after 9999 in UTC: as early or late as can be.
        return (datetime.min if when.year < 5000 else datetime.max).replace(tzinfo=UTC)


def historyRange(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """
    The range a request asks for, its defaults filled in: until now, since
    L{DEFAULT_RANGE_DAYS} before until.

    @raise InvalidField: a time that is not one.
    @raise Unprocessable: since not before until, or more than
        L{MAX_RANGE_DAYS} between them (both naming since).
    """
    end = parseTime(until, "until") if until is not None else now
    if since is not None:
        start = parseTime(since, "since")
    else:
        try:
            start = end - timedelta(days=DEFAULT_RANGE_DAYS)
        except OverflowError:
            start = datetime.min.replace(tzinfo=UTC)
    if start >= end:
        raise Unprocessable("since", f"must be before until ({isotime(end)})")
    if end - start > timedelta(days=MAX_RANGE_DAYS):
        raise Unprocessable("since", f"must be at most {MAX_RANGE_DAYS} days before until")
    return start, end


def _figures(row: tuple[Any, ...]) -> dict[str, Any]:
    done, failed, attempts, cpu, wall = row
    return {
        "tasks_done": int(done),
        "tasks_failed": int(failed),
        "attempts": int(attempts),
        "core_hours": round(float(cpu) / 3600, 6),
        "wall_hours": round(float(wall) / 3600, 6),
    }


async def readHistory(
    pool: Pool, by: HistoryBy | None, since: datetime, until: datetime
) -> HistoryDocument:
    """
    The figures of the hours overlapping [C{since}, C{until}), by C{by}, and
    each key's totals over them.
    """
    key, join = _KEYS[by]

    async def work(txn: Transaction) -> HistoryDocument:
        rows = await txn.query(_HOURS.format(key=key, join=join), (since, until))
        [(mark,)] = await txn.query("SELECT nullif(rolled_to, '-infinity') FROM farm_history_mark")
        sums: dict[str, list[float]] = {}
        items = []
        for hour, name, *figures in rows:
            items.append(HistoryHour(hour=isotime(hour), key=name, **_figures(tuple(figures))))
            total = sums.setdefault(name, [0, 0, 0, 0.0, 0.0])
            for i, value in enumerate(figures):
                total[i] += value
        return HistoryDocument(
            href=HISTORY_HREF,
            by=by,
            since=isotime(since),
            until=isotime(until),
            rolled_to=isoformat(mark),
            items=items,
            totals=[HistoryTotal(key=name, **_figures(tuple(sums[name]))) for name in sorted(sums)],
        )

    return await pool.transaction(work)


@frozen
class ProjectTotals:
    """
    One project's figures over every hour rolled up.
    """

    project: str
    tasks_done: int
    tasks_failed: int
    attempts: int
    cpu_s: float
    wall_s: float


async def projectTotals(pool: Pool) -> list[ProjectTotals]:
    """
    Every project's totals (farm_history_totals: one row a project), by
    project.
    """
    rows = await pool.query(
        "SELECT project, tasks_done, tasks_failed, attempts, cpu_s, wall_s"
        ' FROM farm_history_totals ORDER BY project COLLATE "C"'
    )
    return [
        ProjectTotals(str(p), int(d), int(f), int(a), float(c), float(w))
        for p, d, f, a, c, w in rows
    ]
