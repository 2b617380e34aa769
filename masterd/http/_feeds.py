"""
What the event streams say (docs/http-api.md, "Events"): each feed reads one
kind of thing from the database, in one statement for all of this master's
streams, once a tick, and publishes what changed since its previous read.
Jobs are read only while there are streams (from a margin before the first
read); the small snapshots (agents, limits, masters, the audit trail) are
read with no stream too, so that a change made between a page's read and
its stream's first tick is not taken for the baseline.

Every master reads for itself what any master changed, so each serves every
change; an event is a hint, and a page that reconnects reads again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime

from masterd._time import isotime
from masterd.config import MasterConfig, Role
from masterd.db import Pool
from masterd.scheduler.resources import _LIMIT
from masterd.talkback.directory import AGENT_STATES, agentHref

if TYPE_CHECKING:
    from ._events import EventStreams

__all__ = [
    "AgentFeed",
    "AuditFeed",
    "Feed",
    "JobFeed",
    "LimitFeed",
    "MasterFeed",
    "farmFeeds",
]

#: A master whose heartbeat is older than this is down, unless told otherwise
#: (master.expire_s).
DEFAULT_EXPIRE_S = MasterConfig(name="").expire_s


class Feed(Protocol):
    """
    One kind of event: C{poll} reads and publishes, once a tick.
    """

    name: str

    async def poll(self) -> None: ...


_COUNTS = ("waiting", "queued", "assigned", "running", "done", "failed", "canceled")


class JobFeed:
    """
    The jobs changed since the last read, as C{job} events. Reads overlap
    by a margin (a change's C{updated_at} is its transaction's start, and
    may commit a little later), so a job may be sent twice: an event says
    how a job is, never what happened to it, and a repeat is harmless.
    """

    name = "job"
    MARGIN_S = 2.0

    def __init__(self, pool: Pool, streams: EventStreams) -> None:
        self.pool = pool
        self._streams = streams
        self._since: Any = None

    async def poll(self) -> None:
        if not len(self._streams):
            self._since = None
            return
        if self._since is None:
            rows = await self.pool.query("SELECT now()")
            self._since = rows[0][0]
            return
        rows = await self.pool.query(
            "SELECT now(), id, state, n_total, n_waiting, n_queued, n_assigned, n_running,"
            " n_done, n_failed, n_canceled FROM jobs"
            " WHERE updated_at > %s - make_interval(secs => %s) ORDER BY id LIMIT 5000",
            (self._since, self.MARGIN_S),
        )
        if not rows:
            self._since = (await self.pool.query("SELECT now()"))[0][0]
            return
        self._since = rows[0][0]
        for _, jobID, state, total, *counts in rows:
            self._streams.publish(
                "job",
                {"id": jobID, "href": f"/api/v1/jobs/{jobID}", "state": state,
                 "tasks": {"total": total, **dict(zip(_COUNTS, counts, strict=True))}},
            )  # fmt: skip


class _Snapshot:
    """
    A feed that reads the whole of something small each tick (what it
    reads is keyed), and publishes the difference with its previous read.
    """

    name = ""
    #: Who receives its events.
    role = Role.viewer

    def __init__(self, pool: Pool, streams: EventStreams) -> None:
        self.pool = pool
        self._streams = streams
        self._seen: dict[Any, Any] | None = None

    async def poll(self) -> None:
        # Read even with no stream open: a baseline taken only once one
        # opens would miss what changed between the page's own read and
        # the baseline. What it reads is small (10,000 agents: ~4 ms).
        current = await self.read()
        previous, self._seen = self._seen, current
        if previous is not None:
            self.changed(previous, current)

    async def read(self) -> dict[Any, Any]:
        raise NotImplementedError

    def changed(self, previous: dict[Any, Any], current: dict[Any, Any]) -> None:
        raise NotImplementedError


#: Every agent's state (as masterd.talkback.directory computes it) and its
#: number of assigned and running tasks, in one statement: the tasks are
#: counted once, by agent, over the tasks_active_agent partial index.
AGENTS_QUERY = (
    "SELECT a.id, a.hostname, a.master,"
    " CASE WHEN NOT a.enabled THEN 'disabled' WHEN a.session IS NULL THEN 'offline'"
    " WHEN t.n IS NOT NULL THEN 'busy' ELSE 'idle' END, coalesce(t.n, 0)"
    " FROM agents a LEFT JOIN (SELECT agent_id, count(*)::int AS n FROM tasks"
    " WHERE state IN ('assigned', 'running') GROUP BY agent_id) t ON t.agent_id = a.id"
)


class AgentFeed(_Snapshot):
    """
    C{agent} events: an agent that appeared, or whose state, number of
    running tasks or master changed (with the state it had), or that was
    deleted; and C{agents}, the number of agents in each state, when those
    numbers change.
    """

    name = "agent"

    async def read(self) -> dict[Any, Any]:
        rows = await self.pool.query(AGENTS_QUERY)
        return {str(i): (host, state, int(n), master) for i, host, master, state, n in rows}

    def changed(self, previous: dict[Any, Any], current: dict[Any, Any]) -> None:
        publish = self._streams.publish
        for agentID, now in current.items():
            hostname, state, running, master = now
            before = previous.get(agentID)
            if before is not None and before[1:] == now[1:]:
                continue
            publish("agent", {
                "id": agentID, "href": agentHref(agentID), "hostname": hostname,
                "state": state, "previous": None if before is None else before[1],
                "running": running, "master": master,
            })  # fmt: skip
        for agentID in previous.keys() - current.keys():
            publish("agent", {"id": agentID, "href": agentHref(agentID), "deleted": True})
        counts = _counts(current)
        if counts != _counts(previous):
            publish("agents", counts)


def _counts(agents: dict[Any, Any]) -> dict[str, int]:
    found = Counter(state for _, state, _, _ in agents.values())
    return {state: found[state] for state in AGENT_STATES}


class LimitFeed(_Snapshot):
    """
    C{limit} events: a limit created, or whose max or use changed; one
    deleted.
    """

    name = "limit"

    async def read(self) -> dict[Any, Any]:
        return {r[0]: (r[1], int(r[2])) for r in await self.pool.query(_LIMIT)}

    def changed(self, previous: dict[Any, Any], current: dict[Any, Any]) -> None:
        for name, now in sorted(current.items()):
            if previous.get(name) != now:
                self._streams.publish("limit", {"name": name, "href": _limitHref(name),
                                                "max": now[0], "in_use": now[1]})  # fmt: skip
        for name in sorted(previous.keys() - current.keys()):
            self._streams.publish("limit", {"name": name, "href": _limitHref(name),
                                            "deleted": True})  # fmt: skip


def _limitHref(name: str) -> str:
    return f"/api/v1/limits/{quote(name, safe='')}"


class MasterFeed(_Snapshot):
    """
    C{master} events: a master that registered, or went up or down (its
    heartbeat older than C{expire_s}, on this master's clock, as
    C{GET /api/v1/masters} says).
    """

    name = "master"

    def __init__(
        self,
        pool: Pool,
        streams: EventStreams,
        clock: IReactorTime,
        expire_s: float = DEFAULT_EXPIRE_S,
    ) -> None:
        super().__init__(pool, streams)
        self._clock = clock
        self.expire_s = expire_s

    async def read(self) -> dict[Any, Any]:
        rows = await self.pool.query("SELECT name, last_seen FROM masters")
        now = self._clock.seconds()
        return {
            name: ("up" if now - seen.timestamp() <= self.expire_s else "down", isotime(seen))
            for name, seen in rows
        }

    def changed(self, previous: dict[Any, Any], current: dict[Any, Any]) -> None:
        for name, (state, seen) in sorted(current.items()):
            before = previous.get(name)
            if before is None or before[0] != state:
                self._streams.publish("master", {
                    "name": name, "href": f"/api/v1/masters/{quote(name, safe='')}",
                    "state": state, "last_seen": seen,
                })  # fmt: skip


class AuditFeed:
    """
    C{audit} events, for the streams that may read the audit trail: the
    rows written since the last read, at most C{BATCH} a read (the rest
    follow a tick later). Rows are read by id: one whose transaction
    commits after a later id's has been read is missed (a hint; the page
    reads the trail itself).
    """

    name = "audit"
    role = Role.operator
    BATCH = 500

    def __init__(self, pool: Pool, streams: EventStreams) -> None:
        self.pool = pool
        self._streams = streams
        self._after: int | None = None

    async def poll(self) -> None:
        # Read with no stream open too (one indexed probe for rows past
        # the last): a baseline taken when one opens would miss the rows
        # written between the page's read and it.
        if self._after is None:
            self._after = (await self.pool.query("SELECT coalesce(max(id), 0) FROM audit"))[0][0]
            return
        rows = await self.pool.query(
            "SELECT id, at, actor, action, resource FROM audit WHERE id > %s ORDER BY id LIMIT %s",
            (self._after, self.BATCH),
        )
        for auditID, at, actor, action, resource in rows:
            self._after = auditID
            self._streams.publish(
                "audit",
                {"id": auditID, "at": isotime(at), "actor": actor, "action": action,
                 "resource": resource},
                role=self.role,
            )  # fmt: skip


def farmFeeds(
    pool: Pool, streams: EventStreams, clock: IReactorTime, expire_s: float = DEFAULT_EXPIRE_S
) -> Sequence[Feed]:
    """
    Every feed but the jobs': agents, limits, masters, the audit trail.
    """
    return (
        AgentFeed(pool, streams),
        LimitFeed(pool, streams),
        MasterFeed(pool, streams, clock, expire_s),
        AuditFeed(pool, streams),
    )
