"""
Agents in PostgreSQL: who they are, which master holds them, what they
report. The talkback side writes here; the HTTP side reads and steers.

A connection is identified by a session id. Every write on behalf of a
connection names its session, so a master holding a stale connection (the
agent has since reconnected, here or elsewhere) changes nothing.

Every agent is itself: a hello is accepted only for an id that is not
enrolled yet (a valid agent token enrolls it, and the master makes it a
secret) or with that id's secret. The check is made in the hello's own
statement, under the agent row's lock, so that it holds whichever master
has the agent now and however many hellos race.

L{AgentStore} writes agents' task reports and logs with L{AgentReports}
(masterd.talkback._store_reports); their hellos, sessions and the lost
agents' tasks here.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from attrs import frozen
from psycopg2.extras import Json

from masterd.accounts import digestOf
from masterd.db import Batcher, Pool, Transaction
from masterd.events import AgentMoved, EventBus
from masterd.jobs import lifecycle
from masterd.webhooks import emit as webhooks

from ._store_reports import AgentReports
from ._store_reports import UpdateResult as UpdateResult
from .messages import Hello, Limits

#: The most hellos one transaction of the hello lane writes.
HELLO_BATCH = 2000
#: What an agent's secret starts with, so that one found lying about says
#: what it is (as tokens scanners look for).
CREDENTIAL_PREFIX = "mda_"

#: One hello for the hello lane: the message, the master and session it
#: would start, when, and whether it carried a valid agent token (and so may
#: enroll an id that is not enrolled).
HelloItem = tuple[Hello, str, str, float, bool]


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@frozen
class Welcome:
    """
    What the master learned while accepting a hello.
    """

    #: The master and session that held the agent before, if any.
    previous_master: str | None
    previous_session: str | None
    #: Tasks the master had on the agent that it no longer runs: requeued.
    requeued: tuple[tuple[int, int], ...]
    #: Tasks the agent runs that are no longer its own: to cancel.
    cancel: tuple[tuple[int, int], ...]
    enabled: bool
    operator_limits: dict[str, Any]
    #: The secret made for this agent id when this hello enrolled it (only
    #: its digest is stored): for the welcome, and never again.
    credential: str | None = None


@frozen
class Refused:
    """
    A hello that may not speak for its agent id; nothing was written.
    """

    #: The id is enrolled and the hello's credential is not its own (or it
    #: has none); otherwise the id is not enrolled and the hello had neither
    #: a valid agent token to enroll it nor anything else.
    enrolled: bool

    @property
    def reason(self) -> str:
        if self.enrolled:
            return "this agent id is enrolled: the hello must present its credential"
        return (
            "this agent id is not enrolled (or its credential was reset): a token of role"
            " agent is needed to enroll it"
        )


class AgentStore(AgentReports):
    """
    Agents: their hellos and sessions, their reports (L{AgentReports}), and
    the tasks of those lost.
    """

    def __init__(
        self,
        pool: Pool,
        batcher: Batcher | None = None,
        blocklistAfter: int = 0,
        events: EventBus | None = None,
        maxLogLines: int = 1_000_000,
        hellos: Batcher | None = None,
    ) -> None:
        self._pool = pool
        #: Hellos have a lane of their own (docs/architecture.md): the
        #: thousands that arrive when a master dies share a few large
        #: transactions, without waiting behind task reports or holding
        #: them up.
        self._hellos = hellos or batcher
        self.maxLogLines = maxLogLines
        self._events = events
        # Task reports are many and small: they share transactions when a
        # batcher is given.
        self._batcher = batcher
        self.blocklistAfter = blocklistAfter

    async def connect(
        self, hello: Hello, master: str, session: str, now: float, mayEnroll: bool = False
    ) -> Welcome | Refused:
        """
        Register a hello's connection as the agent's current one, if it may
        speak for its agent id: with the id's credential, or (for an id not
        enrolled) with C{mayEnroll}, a valid agent token, which enrolls it.
        Through the batcher, the hellos of a batch are a few set-based
        statements in one transaction (10,000 agents reconnecting at once
        after a master died are welcomed in seconds, not one transaction
        each).
        """
        item = (hello, master, session, now, mayEnroll)
        if self._hellos is not None:
            return await self._hellos.submitGrouped(self._applyHellos, item)
        return (await self._pool.transaction(lambda txn: self._applyHellos(txn, [item])))[0]

    async def _applyHellos(
        self, txn: Transaction, items: list[HelloItem]
    ) -> list[Welcome | Refused]:
        """
        Many hellos in one go, as if one after the other: two hellos of one
        agent in a batch (a reconnect racing its own stale connection, or an
        impostor) are applied in rounds, in arrival order: the later one
        replaces the earlier if it may speak for the id as it is after the
        earlier (enrolled by it, perhaps).
        """
        welcomes: list[Welcome | Refused | None] = [None] * len(items)
        remaining = list(range(len(items)))
        while remaining:
            seen: set[str] = set()
            round_: list[int] = []
            later: list[int] = []
            for i in remaining:
                agentID = items[i][0].agent_id
                (later if agentID in seen else round_).append(i)
                seen.add(agentID)
            for i, welcome in zip(
                round_, await self._helloRound(txn, [items[i] for i in round_]), strict=True
            ):
                welcomes[i] = welcome
            remaining = later
        return [w for w in welcomes if w is not None]

    async def _helloRound(
        self, txn: Transaction, items: list[HelloItem]
    ) -> list[Welcome | Refused]:
        """
        Hellos of distinct agents, in one statement (a batch's round trips
        are what a master flooded with reconnecting agents waits on): lock
        the agents' rows in id order (as every set-based write here does,
        so that two masters cannot deadlock) and read their previous
        sessions and credentials; decide which hellos may speak for their
        ids; write the sessions of those, enrolling the ids not enrolled
        yet; and lock the tasks each accepted agent holds to settle them
        against those it says it runs. A refused hello writes nothing and
        touches neither the agent that holds the id nor its tasks.
        """
        ids = [hello.agent_id for hello, _, _, _, _ in items]
        # A fresh secret for each hello that may enroll: the statement keeps
        # its digest only if the id turns out not to be enrolled.
        fresh = [
            CREDENTIAL_PREFIX + secrets.token_urlsafe(32) if mayEnroll else None
            for _, _, _, _, mayEnroll in items
        ]
        previous: dict[str, tuple[str | None, Any]] = {}
        stored: dict[str, tuple[bool, dict[str, Any], bool]] = {}
        refused: dict[str, bool] = {}
        active: dict[str, set[tuple[int, int]]] = {}
        rows = await txn.query(
            "WITH x AS (SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[],"
            " %s::int[], %s::int[], %s::int[], %s::jsonb[], %s::jsonb[], %s::int[], %s::text[],"
            " %s::uuid[], %s::timestamptz[], %s::bytea[], %s::bytea[], %s::jsonb[], %s::text[],"
            " %s::text[], %s::jsonb[], %s::jsonb[])"
            " AS x (id, hostname, os, version, cpus, ram_mb, gpus, tags, software, max_tasks,"
            " master, session, at, presented, fresh, gpu_devices, os_family, cpu_arch,"
            " attributes, amounts)),"
            # The previous session and credential are read under the row's
            # lock, before the upsert replaces them: the upsert takes its
            # rows from this join.
            " prev AS (SELECT a.id, a.master, a.session, a.credential_sha256 AS credential,"
            " a.enrolled_at FROM agents a"
            " WHERE a.id IN (SELECT id FROM x) ORDER BY a.id FOR UPDATE),"
            # The credential each hello leaves the id with: its own for an
            # enrolled id (digests of 256-bit secrets compared as they are:
            # nothing to learn from timing), a new one for an id not
            # enrolled if the hello had an agent token; NULL: refused.
            " ok AS (SELECT x.*, CASE WHEN prev.credential IS NULL THEN x.fresh"
            " WHEN x.presented = prev.credential THEN prev.credential END AS credential,"
            " CASE WHEN prev.credential IS NULL THEN x.at ELSE prev.enrolled_at END AS since,"
            " prev.credential IS NOT NULL AS enrolled FROM x LEFT JOIN prev ON prev.id = x.id),"
            " up AS (INSERT INTO agents (id, hostname, os, version, cpus, ram_mb, gpus, tags,"
            " software, max_tasks, master, session, connected_at, disconnected_at, last_seen,"
            " credential_sha256, enrolled_at, gpu_devices, os_family, cpu_arch, attributes,"
            " amounts)"
            " SELECT ok.id, ok.hostname, ok.os, ok.version, ok.cpus, ok.ram_mb, ok.gpus,"
            " ARRAY(SELECT jsonb_array_elements_text(ok.tags)), ok.software, ok.max_tasks,"
            " ok.master, ok.session, ok.at, NULL, ok.at, ok.credential, ok.since,"
            " ok.gpu_devices, ok.os_family, ok.cpu_arch, ok.attributes, ok.amounts"
            " FROM ok WHERE ok.credential IS NOT NULL ORDER BY ok.id"
            " ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname,"
            " os = EXCLUDED.os, version = EXCLUDED.version, cpus = EXCLUDED.cpus,"
            " ram_mb = EXCLUDED.ram_mb, gpus = EXCLUDED.gpus, tags = EXCLUDED.tags,"
            " software = EXCLUDED.software, max_tasks = EXCLUDED.max_tasks,"
            " master = EXCLUDED.master, session = EXCLUDED.session,"
            " connected_at = EXCLUDED.connected_at, disconnected_at = NULL,"
            " last_seen = EXCLUDED.last_seen, credential_sha256 = EXCLUDED.credential_sha256,"
            " enrolled_at = EXCLUDED.enrolled_at, gpu_devices = EXCLUDED.gpu_devices,"
            " os_family = EXCLUDED.os_family, cpu_arch = EXCLUDED.cpu_arch,"
            " attributes = EXCLUDED.attributes, amounts = EXCLUDED.amounts"
            # A new id that another transaction enrolled after this one's
            # snapshot (two first hellos at once, on two masters) is not
            # taken over: only the first enrollment counts.
            " WHERE agents.credential_sha256 IS NULL"
            " OR agents.credential_sha256 = EXCLUDED.credential_sha256"
            " RETURNING id, enabled, operator_limits, credential_sha256),"
            " held AS (SELECT agent_id, id, attempt FROM tasks"
            " WHERE agent_id IN (SELECT id FROM up) AND state IN ('assigned', 'running')"
            # The lock an update takes, as everywhere tasks are held in id
            # order (masterd.jobs.store): not one a log insert waits on.
            " ORDER BY id FOR NO KEY UPDATE)"
            " SELECT 'agent', up.id, up.enabled, up.operator_limits, prev.master, prev.session,"
            " NULL::bigint, NULL::int, up.credential_sha256 IS NOT DISTINCT FROM ok.fresh"
            " FROM up JOIN ok ON ok.id = up.id LEFT JOIN prev ON prev.id = up.id"
            " UNION ALL SELECT 'task', agent_id, NULL, NULL, NULL, NULL, id, attempt, NULL"
            " FROM held"
            " UNION ALL SELECT 'refused', ok.id, NULL, NULL, NULL, NULL, NULL, NULL,"
            " ok.enrolled OR ok.credential IS NOT NULL FROM ok"
            " WHERE NOT EXISTS (SELECT 1 FROM up WHERE up.id = ok.id)",
            (
                ids,
                [hello.hostname for hello, _, _, _, _ in items],
                [hello.os for hello, _, _, _, _ in items],
                [hello.version for hello, _, _, _, _ in items],
                [hello.cpus for hello, _, _, _, _ in items],
                [hello.ram_mb for hello, _, _, _, _ in items],
                [hello.gpus for hello, _, _, _, _ in items],
                [Json(list(hello.tags)) for hello, _, _, _, _ in items],
                [Json(hello.software) for hello, _, _, _, _ in items],
                [hello.max_tasks for hello, _, _, _, _ in items],
                [master for _, master, _, _, _ in items],
                [session for _, _, session, _, _ in items],
                [_ts(now) for _, _, _, now, _ in items],
                [
                    digestOf(hello.credential) if hello.credential is not None else None
                    for hello, _, _, _, _ in items
                ],
                [digestOf(f) if f is not None else None for f in fresh],
                [
                    Json(
                        [
                            {"index": d.index, "name": d.name, "memory_mb": d.memory_mb}
                            for d in hello.agent.gpu_devices
                        ]
                    )
                    for hello, _, _, _, _ in items
                ],
                [hello.agent.os_family for hello, _, _, _, _ in items],
                [hello.agent.cpu_arch for hello, _, _, _, _ in items],
                [Json(hello.agent.attributes) for hello, _, _, _, _ in items],
                [Json(hello.agent.amounts) for hello, _, _, _, _ in items],
            ),
        )
        for kind, agent, enabled, limits, master, session, taskID, attempt, flag in rows:
            if kind == "agent":
                stored[str(agent)] = (enabled, limits, flag)
                if master is not None or session is not None:
                    previous[str(agent)] = (master, session)
            elif kind == "refused":
                refused[str(agent)] = flag
            else:
                active.setdefault(str(agent), set()).add((taskID, attempt))
        moved = [
            AgentMoved(agentID, str(session))
            for agentID, (_, session) in sorted(previous.items())
            if session is not None
        ]
        if moved and self._events is not None:
            # The masters holding the older connections close them.
            await self._events.announce(txn, *moved)
        welcomes: list[Welcome | Refused] = []
        for (hello, _, _, _, _), secret in zip(items, fresh, strict=True):
            agentID = hello.agent_id
            if agentID in refused:
                welcomes.append(Refused(enrolled=refused[agentID]))
                continue
            held, listed = active.get(agentID, set()), hello.runningTasks()
            requeued = sorted(held - listed)
            for taskID, attempt in requeued:
                await lifecycle.requeue(
                    txn, agentID, taskID, attempt, "lost", "the agent reconnected without it"
                )
            before = previous.get(agentID)
            enabled, operatorLimits, enrolled = stored[agentID]
            welcomes.append(
                Welcome(
                    previous_master=before[0] if before else None,
                    previous_session=str(before[1]) if before and before[1] else None,
                    requeued=tuple(requeued),
                    cancel=tuple(sorted(listed - held)),
                    enabled=enabled,
                    operator_limits=operatorLimits,
                    credential=secret if enrolled else None,
                )
            )
        return welcomes

    async def disconnect(
        self, agentID: str, session: str, now: float, unenroll: bool = False
    ) -> bool:
        """
        The session's connection is gone. With C{unenroll}, its hello had
        just enrolled the id and the connection went before the welcome
        carried the secret: the enrollment is undone too, or the agent
        could never say hello as itself again.
        """
        rows = await self._pool.query(
            "UPDATE agents SET master = NULL, session = NULL, disconnected_at = %s,"
            " last_seen = greatest(last_seen, %s),"
            " credential_sha256 = CASE WHEN %s THEN NULL ELSE credential_sha256 END,"
            " enrolled_at = CASE WHEN %s THEN NULL ELSE enrolled_at END"
            " WHERE id = %s AND session = %s RETURNING id",
            (_ts(now), _ts(now), unenroll, unenroll, agentID, session),
        )
        return bool(rows)

    async def disconnectMany(self, sessions: list[tuple[str, str]], now: float) -> None:
        if not sessions:
            return
        await self._pool.query(
            "UPDATE agents a SET master = NULL, session = NULL, disconnected_at = %s"
            " FROM unnest(%s::uuid[], %s::uuid[]) AS x (id, session)"
            " WHERE a.id = x.id AND a.session = x.session",
            (_ts(now), [s[0] for s in sessions], [s[1] for s in sessions]),
        )

    async def flush(self, seen: Sequence[tuple[str, str, float, dict[str, Any] | None]]) -> None:
        """
        Write the last-seen times (and latest usage) of many agents in one
        statement: (agent id, session, seen at, usage or None).
        """
        if not seen:
            return
        await self._pool.query(
            "UPDATE agents a SET last_seen = x.seen, usage = coalesce(x.usage, a.usage)"
            " FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[], %s::jsonb[])"
            " AS x (id, session, seen, usage)"
            " WHERE a.id = x.id AND a.session = x.session",
            (
                [s[0] for s in seen],
                [s[1] for s in seen],
                [_ts(s[2]) for s in seen],
                [Json(s[3]) if s[3] is not None else None for s in seen],
            ),
        )

    async def agentLimits(self, agentID: str, session: str, limits: Limits) -> None:
        await self._pool.query(
            "UPDATE agents SET agent_limits = agent_limits || %s WHERE id = %s AND session = %s",
            (Json(limits.asJSON()), agentID, session),
        )

    async def exception(self, agentID: str, message: str, traceback: str | None) -> None:
        async def work(txn: Transaction) -> None:
            await txn.execute(
                "INSERT INTO agent_exceptions (agent_id, message, traceback) VALUES (%s, %s, %s)",
                (agentID, message, traceback),
            )
            # Keep the latest hundred per agent.
            await txn.execute(
                "DELETE FROM agent_exceptions WHERE agent_id = %s AND id <= ("
                " SELECT id FROM agent_exceptions WHERE agent_id = %s"
                " ORDER BY id DESC OFFSET 100 LIMIT 1)",
                (agentID, agentID),
            )
            await webhooks.agentException(txn, agentID, message, traceback)

        await self._pool.transaction(work)

    async def reap(self, cutoff: float) -> list[tuple[str, int, int]]:
        """
        Requeue, as lost, the tasks of agents that have been offline since
        before C{cutoff} (the lost grace has passed without a reconnect).
        """

        async def work(txn: Transaction) -> list[tuple[str, int, int]]:
            rows = await txn.query(
                "SELECT t.agent_id, t.id, t.attempt FROM tasks t JOIN agents a"
                " ON a.id = t.agent_id WHERE t.state IN ('assigned', 'running')"
                " AND a.session IS NULL AND a.disconnected_at < %s"
                " ORDER BY t.id FOR UPDATE OF t SKIP LOCKED",
                (_ts(cutoff),),
            )
            lost = []
            for agentID, taskID, attempt in rows:
                outcome = await lifecycle.requeue(
                    txn, str(agentID), taskID, attempt, "lost",
                    "the agent was offline longer than the lost grace",
                )  # fmt: skip
                if outcome is lifecycle.Outcome.applied:
                    lost.append((str(agentID), taskID, attempt))
            # Every agent past the grace is said lost once for each of its
            # disconnections, idle or not (the row lock orders two masters'
            # sweeps; the second finds lost_at already set).
            gone = await txn.query(
                "UPDATE agents SET lost_at = disconnected_at WHERE session IS NULL"
                " AND disconnected_at < %s AND lost_at IS DISTINCT FROM disconnected_at"
                " RETURNING id",
                (_ts(cutoff),),
            )
            await webhooks.agentsLost(txn, [str(r[0]) for r in gone], lost)
            return lost

        return await self._pool.transaction(work)
