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
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from attrs import frozen
from psycopg2.extras import Json

from masterd.accounts import digestOf
from masterd.db import Batcher, Pool, Transaction
from masterd.events import AgentMoved, EventBus
from masterd.jobs import lifecycle
from masterd.webhooks import emit as webhooks

from .messages import Hello, Limits, Log, TaskUpdate

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
            " ORDER BY id FOR UPDATE)"
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
        await self._applyStatuses(txn, reports)
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
        await self._applyUsage(txn, reports)
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
                    " WHERE a.state IN ('canceled', 'preempted')",
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

    async def _applyUsage(
        self, txn: Transaction, reports: list[tuple[str, TaskUpdate, float | None]]
    ) -> None:
        """
        What the final reports say their attempts used, on the attempts, in
        one statement (none when no report carries usage). Written whatever
        the report's outcome, as long as the attempt is the reporting agent's:
        a canceled or late attempt used the farm as much as a done one.
        """
        found = {
            (update.task_id, update.attempt, agentID): update.usage
            for agentID, update, _ in reports
            if update.usage is not None and update.state in ("done", "failed")
        }
        if not found:
            return
        # In task id order, after the reports' own statements (which lock
        # the tasks, then their attempts, in that order).
        keys = sorted(found)
        usages = [found[k] for k in keys]
        await txn.execute(
            "UPDATE task_attempts a SET wall_s = x.w, cpu_user_s = x.u, cpu_system_s = x.s,"
            " peak_rss_kb = x.r, gpu_memory_mb = x.g"
            " FROM unnest(%s::bigint[], %s::int[], %s::uuid[], %s::float8[], %s::float8[],"
            " %s::float8[], %s::bigint[], %s::int[]) AS x (t, n, agent, w, u, s, r, g)"
            " WHERE a.task_id = x.t AND a.attempt = x.n AND a.agent_id = x.agent",
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [u.wall_s for u in usages if u is not None],
                [u.cpu_user_s for u in usages if u is not None],
                [u.cpu_system_s for u in usages if u is not None],
                [u.peak_rss_kb for u in usages if u is not None],
                [u.gpu_memory_mb for u in usages if u is not None],
            ),
        )

    async def _applyStatuses(
        self, txn: Transaction, reports: list[tuple[str, TaskUpdate, float | None]]
    ) -> None:
        """
        The status messages the reports carry (an OpenJD task's
        C{openjd_status}), the latest per attempt, in one statement; before
        the reports change the tasks' states, while the attempt is still the
        agent's. Nothing to do, and no statement, when none carries one.
        """
        latest: dict[tuple[str, int, int], str] = {}
        for agentID, update, _ in reports:
            if update.status is not None:
                latest[agentID, update.task_id, update.attempt] = update.status
        if not latest:
            return
        # In task id order, as the other statements lock them.
        keys = sorted(latest, key=lambda k: (k[1], k[2], k[0]))
        await txn.execute(
            "UPDATE tasks t SET status_message = x.s"
            " FROM unnest(%s::uuid[], %s::bigint[], %s::int[], %s::text[]) AS x (g, t, n, s)"
            " WHERE t.id = x.t AND t.attempt = x.n AND t.agent_id = x.g"
            " AND t.state IN ('assigned', 'running')",
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [latest[k] for k in keys],
            ),
        )

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
