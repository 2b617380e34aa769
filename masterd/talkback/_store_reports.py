"""
What agents report on their tasks: L{AgentReports}, the part of
L{masterd.talkback.store.AgentStore} that writes task updates (running,
done, failed, rejected, with their status messages and what the attempts
used) and log lines. Reports are many and small: through the batcher,
those of a batch share one transaction, the running and the done ones a
statement each.

AgentStore inherits these writes; masterd.talkback.store re-exports
L{UpdateResult}.
"""

from __future__ import annotations

import orjson
from attrs import frozen

from masterd.db import Batcher, Pool, Transaction
from masterd.jobs import lifecycle

from .messages import Log, TaskUpdate


@frozen
class UpdateResult:
    outcome: lifecycle.Outcome
    #: A stale report for an attempt that was canceled: the agent already
    #: got its cancel, so no second one is sent.
    already_canceled: bool = False
    #: The report finished a job that other jobs wait on: work was released.
    released: bool = False


class AgentReports:
    """
    Agents' task reports and log lines: a mixin of L{AgentStore}, whose
    constructor sets these attributes.
    """

    _pool: Pool
    _batcher: Batcher | None
    maxLogLines: int
    blocklistAfter: int

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
        await self._lockReported(txn, reports)
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

    async def _lockReported(
        self, txn: Transaction, reports: list[tuple[str, TaskUpdate, float | None]]
    ) -> None:
        """
        Lock the reported tasks that are still active, then their jobs, in
        id order, before any of them changes. The statements that follow
        lock them again each in its own order (a join's plan decides that of
        an C{UPDATE ... FROM unnest}; failures go one by one), while a
        cancel, a pause or a retry locks a job's tasks in id order: taken
        piecemeal, the two deadlocked, and PostgreSQL failed the operator's
        cancel. Held from here, the batch's reports wait on no lock again
        (its claims skip locked tasks). C{NO KEY UPDATE} is the lock the
        updates take anyway, and leaves the log and attempt inserts'
        foreign-key locks free.
        """
        ids = sorted({update.task_id for _, update, _ in reports})
        # The jobs in a second statement of the same round trip, once every
        # task is held: the count trigger of each statement below locks the
        # jobs it touches, and two batches that took them statement by
        # statement could each hold a job the other waits for.
        await txn.execute(
            "SELECT id FROM tasks WHERE id = ANY (%(ids)s) AND state IN ('assigned', 'running')"
            " ORDER BY id FOR NO KEY UPDATE;"
            " SELECT id FROM jobs WHERE id IN (SELECT job_id FROM tasks WHERE id = ANY (%(ids)s)"
            " AND state IN ('assigned', 'running')) ORDER BY id FOR NO KEY UPDATE",
            {"ids": ids},
        )

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
