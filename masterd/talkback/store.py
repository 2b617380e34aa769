"""
Agents in PostgreSQL: who they are, which master holds them, what they
report. The talkback side writes here; the HTTP side reads and steers.

A connection is identified by a session id. Every write on behalf of a
connection names its session, so a master holding a stale connection (the
agent has since reconnected, here or elsewhere) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from attrs import frozen
from psycopg2.extras import Json

from masterd.db import Batcher, Pool, Transaction
from masterd.events import AgentMoved, EventBus
from masterd.jobs import lifecycle

from .messages import Hello, Limits, Log, TaskUpdate

#: The most hellos one transaction of the hello lane writes.
HELLO_BATCH = 2000


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


@frozen
class UpdateResult:
    outcome: lifecycle.Outcome
    #: A stale report for an attempt that was canceled: the agent already
    #: got its cancel, so no second one is sent.
    already_canceled: bool = False
    #: The report finished a job that other jobs wait on: work was released.
    released: bool = False


class AgentStore:
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

    async def connect(self, hello: Hello, master: str, session: str, now: float) -> Welcome:
        """
        Register a hello's connection as the agent's current one. Through
        the batcher, the hellos of a batch are a few set-based statements in
        one transaction (10,000 agents reconnecting at once after a master
        died are welcomed in seconds, not one transaction each).
        """
        item = (hello, master, session, now)
        if self._hellos is not None:
            return await self._hellos.submitGrouped(self._applyHellos, item)
        return (await self._pool.transaction(lambda txn: self._applyHellos(txn, [item])))[0]

    async def _applyHellos(
        self, txn: Transaction, items: list[tuple[Hello, str, str, float]]
    ) -> list[Welcome]:
        """
        Many hellos in one go, as if one after the other: two hellos of one
        agent in a batch (a reconnect racing its own stale connection) are
        applied in rounds, the later one replacing the earlier.
        """
        welcomes: list[Welcome | None] = [None] * len(items)
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
        self, txn: Transaction, items: list[tuple[Hello, str, str, float]]
    ) -> list[Welcome]:
        """
        Hellos of distinct agents, in one statement (a batch's round trips
        are what a master flooded with reconnecting agents waits on): lock
        the agents' rows in id order (as every set-based write here does,
        so that two masters cannot deadlock) and read their previous
        sessions, write the new ones, and lock the tasks each agent holds to
        settle them against those it says it runs.
        """
        ids = [hello.agent_id for hello, _, _, _ in items]
        previous: dict[str, tuple[str | None, Any]] = {}
        stored: dict[str, tuple[bool, dict[str, Any]]] = {}
        active: dict[str, set[tuple[int, int]]] = {}
        rows = await txn.query(
            "WITH x AS (SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[],"
            " %s::int[], %s::int[], %s::int[], %s::jsonb[], %s::jsonb[], %s::int[], %s::text[],"
            " %s::uuid[], %s::timestamptz[]) AS x (id, hostname, os, version, cpus, ram_mb,"
            " gpus, tags, software, max_tasks, master, session, at)),"
            # The previous session is read under the row's lock, before the
            # upsert replaces it: the upsert takes its rows from this join.
            " prev AS (SELECT a.id, a.master, a.session FROM agents a"
            " WHERE a.id IN (SELECT id FROM x) ORDER BY a.id FOR UPDATE),"
            " up AS (INSERT INTO agents (id, hostname, os, version, cpus, ram_mb, gpus, tags,"
            " software, max_tasks, master, session, connected_at, disconnected_at, last_seen)"
            " SELECT x.id, x.hostname, x.os, x.version, x.cpus, x.ram_mb, x.gpus,"
            " ARRAY(SELECT jsonb_array_elements_text(x.tags)), x.software, x.max_tasks,"
            " x.master, x.session, x.at, NULL, x.at"
            " FROM x LEFT JOIN prev ON prev.id = x.id ORDER BY x.id"
            " ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname,"
            " os = EXCLUDED.os, version = EXCLUDED.version, cpus = EXCLUDED.cpus,"
            " ram_mb = EXCLUDED.ram_mb, gpus = EXCLUDED.gpus, tags = EXCLUDED.tags,"
            " software = EXCLUDED.software, max_tasks = EXCLUDED.max_tasks,"
            " master = EXCLUDED.master, session = EXCLUDED.session,"
            " connected_at = EXCLUDED.connected_at, disconnected_at = NULL,"
            " last_seen = EXCLUDED.last_seen"
            " RETURNING id, enabled, operator_limits),"
            " held AS (SELECT agent_id, id, attempt FROM tasks"
            " WHERE agent_id IN (SELECT id FROM x) AND state IN ('assigned', 'running')"
            " ORDER BY id FOR UPDATE)"
            " SELECT 'agent', up.id, up.enabled, up.operator_limits, prev.master, prev.session,"
            " NULL::bigint, NULL::int FROM up LEFT JOIN prev ON prev.id = up.id"
            " UNION ALL SELECT 'task', agent_id, NULL, NULL, NULL, NULL, id, attempt FROM held",
            (
                ids,
                [hello.hostname for hello, _, _, _ in items],
                [hello.os for hello, _, _, _ in items],
                [hello.version for hello, _, _, _ in items],
                [hello.cpus for hello, _, _, _ in items],
                [hello.ram_mb for hello, _, _, _ in items],
                [hello.gpus for hello, _, _, _ in items],
                [Json(list(hello.tags)) for hello, _, _, _ in items],
                [Json(hello.software) for hello, _, _, _ in items],
                [hello.max_tasks for hello, _, _, _ in items],
                [master for _, master, _, _ in items],
                [session for _, _, session, _ in items],
                [_ts(now) for _, _, _, now in items],
            ),
        )
        for kind, agent, enabled, limits, master, session, taskID, attempt in rows:
            if kind == "agent":
                stored[str(agent)] = (enabled, limits)
                if master is not None or session is not None:
                    previous[str(agent)] = (master, session)
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
        welcomes = []
        for hello, _, _, _ in items:
            agentID = hello.agent_id
            held, listed = active.get(agentID, set()), hello.runningTasks()
            requeued = sorted(held - listed)
            for taskID, attempt in requeued:
                await lifecycle.requeue(
                    txn, agentID, taskID, attempt, "lost", "the agent reconnected without it"
                )
            before = previous.get(agentID)
            enabled, operatorLimits = stored[agentID]
            welcomes.append(
                Welcome(
                    previous_master=before[0] if before else None,
                    previous_session=str(before[1]) if before and before[1] else None,
                    requeued=tuple(requeued),
                    cancel=tuple(sorted(listed - held)),
                    enabled=enabled,
                    operator_limits=operatorLimits,
                )
            )
        return welcomes

    async def disconnect(self, agentID: str, session: str, now: float) -> bool:
        rows = await self._pool.query(
            "UPDATE agents SET master = NULL, session = NULL, disconnected_at = %s,"
            " last_seen = greatest(last_seen, %s) WHERE id = %s AND session = %s RETURNING id",
            (_ts(now), _ts(now), agentID, session),
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

        await self._pool.transaction(work)

    async def log(self, agentID: str, log: Log) -> lifecycle.Outcome:
        """
        Store a log message's lines after the attempt's last line, if the
        attempt is still this agent's. Through the batcher, every agent's
        log messages of a batch are one statement, written before the task
        reports of the batch (an agent's last lines come before its done).
        """
        item = (agentID, log)
        if self._batcher is not None:
            return await self._batcher.submitGrouped(self._applyLogs, item, first=True)
        return (await self._pool.transaction(lambda txn: self._applyLogs(txn, [item])))[0]

    async def _applyLogs(
        self, txn: Transaction, items: list[tuple[str, Log]]
    ) -> list[lifecycle.Outcome]:
        """
        Many log messages in one statement: each attempt's chunks numbered
        on from its last stored line, in the order they came. An attempt
        keeps at most C{maxLogLines} lines: the chunk that crosses the limit
        is cut and ends with a line saying so; later ones are dropped (a
        runaway task must not fill the database).
        """
        rows = await txn.query(
            "WITH x AS (SELECT * FROM unnest(%s::bigint[], %s::int[], %s::uuid[], %s::text[],"
            " %s::int[]) AS x (task_id, attempt, agent_id, lines, ord)),"
            " ok AS (SELECT x.task_id, x.attempt, x.ord, ARRAY(SELECT e FROM"
            " jsonb_array_elements_text(x.lines::jsonb) WITH ORDINALITY AS a (e, i)"
            " ORDER BY i) AS lines FROM x JOIN tasks t ON t.id = x.task_id"
            " AND t.attempt = x.attempt AND t.agent_id = x.agent_id"
            " AND t.state IN ('assigned', 'running')),"
            " base AS (SELECT k.task_id, k.attempt, coalesce((SELECT max(l.first_line"
            " + cardinality(l.lines)) FROM task_logs l WHERE l.task_id = k.task_id"
            " AND l.attempt = k.attempt), 0) AS b"
            " FROM (SELECT DISTINCT task_id, attempt FROM ok) k),"
            " placed AS (SELECT ok.task_id, ok.attempt, ok.lines, base.b"
            " + coalesce(sum(cardinality(ok.lines)) OVER (PARTITION BY ok.task_id, ok.attempt"
            " ORDER BY ok.ord ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS first"
            " FROM ok JOIN base USING (task_id, attempt) WHERE cardinality(ok.lines) > 0),"
            " inserted AS (INSERT INTO task_logs (task_id, attempt, first_line, lines)"
            " SELECT task_id, attempt, first, CASE WHEN first + cardinality(lines) <= %s"
            " THEN lines ELSE lines[1:%s - first] || %s::text END"
            # At exactly the limit a chunk leaves only the line saying so.
            " FROM placed WHERE first <= %s)"
            " SELECT ord FROM ok",
            (
                [log.task_id for _, log in items],
                [log.attempt for _, log in items],
                [agentID for agentID, _ in items],
                [orjson.dumps(log.lines).decode() for _, log in items],
                list(range(len(items))),
                self.maxLogLines,
                self.maxLogLines,
                f"[masterd: output cut at {self.maxLogLines} lines]",
                self.maxLogLines,
            ),
        )
        applied = {r[0] for r in rows}
        return [
            lifecycle.Outcome.applied if i in applied else lifecycle.Outcome.stale
            for i in range(len(items))
        ]

    async def taskUpdate(
        self, agentID: str, update: TaskUpdate, at: float | None = None
    ) -> UpdateResult:
        report = (agentID, update, at)
        if self._batcher is not None:
            return await self._batcher.submitGrouped(self._applyReports, report)
        results = await self._pool.transaction(lambda txn: self._applyReports(txn, [report]))
        return results[0]

    async def _applyReports(
        self, txn: Transaction, reports: list[tuple[str, TaskUpdate, float | None]]
    ) -> list[UpdateResult]:
        """
        Apply many agents' task reports: the running ones in one statement,
        the done ones in another, failures and rejections one by one.
        """
        outcomes: list[lifecycle.Outcome] = [lifecycle.Outcome.stale] * len(reports)
        jobs: dict[int, int] = {}
        running = [i for i, r in enumerate(reports) if r[1].state == "running"]
        done = [i for i, r in enumerate(reports) if r[1].state == "done"]
        # A "running" followed by its "done" in the same batch (a short task)
        # is folded into the done: one update of the task, its attempt and
        # its job instead of two. Its start time is kept.
        doneKeys = {(reports[i][0], reports[i][1].task_id, reports[i][1].attempt) for i in done}
        folded: dict[tuple[str, int, int], int] = {}
        for i in running:
            key = (reports[i][0], reports[i][1].task_id, reports[i][1].attempt)
            if key in doneKeys:
                folded[key] = i
        foldedIn = set(folded.values())
        running = [i for i in running if i not in foldedIn]
        if running:
            applied = await lifecycle.runningMany(
                txn, [(reports[i][0], reports[i][1].task_id, reports[i][1].attempt,
                       reports[i][1].progress, reports[i][2]) for i in running],
            )  # fmt: skip
            for i in running:
                if reports[i][1].task_id in applied:
                    outcomes[i] = lifecycle.Outcome.applied
        if done:
            started: list[float | None] = []
            for i in done:
                start = folded.get((reports[i][0], reports[i][1].task_id, reports[i][1].attempt))
                started.append(reports[start][2] if start is not None else None)
            finished = await lifecycle.doneMany(
                txn, [(reports[i][0], reports[i][1].task_id, reports[i][1].attempt,
                       reports[i][1].exit_code, reports[i][2], when)
                      for i, when in zip(done, started, strict=True)],
            )  # fmt: skip
            for i in done:
                update = reports[i][1]
                jobID = finished.get(update.task_id)
                if jobID is not None:
                    outcomes[i] = lifecycle.Outcome.applied
                    jobs[i] = jobID
                    start = folded.get((reports[i][0], update.task_id, update.attempt))
                    if start is not None:
                        outcomes[start] = lifecycle.Outcome.applied
        for i, (agentID, update, at) in enumerate(reports):
            t, a = update.task_id, update.attempt
            if update.state == "failed":
                outcomes[i] = await lifecycle.failed(
                    txn, agentID, t, a, update.exit_code, update.message, at,
                    self.blocklistAfter,
                )  # fmt: skip
            elif update.state == "rejected":
                outcomes[i] = await lifecycle.requeue(
                    txn, agentID, t, a, "rejected", update.message or "rejected by the agent", at
                )
        released: set[int] = set()
        if jobs:
            released = {
                r[0]
                for r in await txn.query(
                    "SELECT j.id FROM jobs j WHERE j.id = ANY (%s) AND j.state = 'done'"
                    " AND EXISTS (SELECT 1 FROM job_dependencies d WHERE d.parent = j.id)",
                    (sorted(set(jobs.values())),),
                )
            }
        stale = [i for i, o in enumerate(outcomes) if o is lifecycle.Outcome.stale]
        canceled: set[tuple[int, int, str]] = set()
        if stale:
            canceled = {
                (r[0], r[1], str(r[2]))
                for r in await txn.query(
                    "SELECT a.task_id, a.attempt, a.agent_id FROM task_attempts a"
                    " JOIN unnest(%s::bigint[], %s::int[], %s::uuid[]) AS x (t, n, g)"
                    " ON a.task_id = x.t AND a.attempt = x.n AND a.agent_id = x.g"
                    " WHERE a.state = 'canceled'",
                    (
                        [reports[i][1].task_id for i in stale],
                        [reports[i][1].attempt for i in stale],
                        [reports[i][0] for i in stale],
                    ),
                )
            }
        return [
            UpdateResult(
                outcomes[i],
                already_canceled=(u.task_id, u.attempt, agentID) in canceled,
                released=jobs.get(i) in released,
            )
            for i, (agentID, u, _) in enumerate(reports)
        ]

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
            return lost

        return await self._pool.transaction(work)
