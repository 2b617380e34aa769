"""
Retention (issue 17; docs/retention.md): what the farm keeps, and for how
long. Every C{retention.interval_s}, on one master at a time (a lease in
retention_marks), it

    - compresses the logs of attempts that ended (retention.compress_logs),
    - deletes the logs of attempts that ended C{logs_days} ago,
    - deletes the finished jobs C{jobs_days} after they finished: archived
      first where C{archive_dir} is set, retired (what waits on them
      released, their history rolled up, their agents' shares kept:
      masterd.jobs.retire), then their tasks in batches, each its own
      short transaction, and at last the job.

Every statement that deletes runs under C{lock_timeout} and
C{statement_timeout} of C{max_lock_ms}: none can hold its locks longer; one
cut short is tried again with half the batch, and batches grow back while
they stay well under it. The walks over ended attempts go by
(finished_at, task id, attempt) from a mark kept in the database, so that
any master goes on where another stopped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg2.errors
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from masterd.config import RetentionConfig
from masterd.db import DatabaseUnavailable, Pool, Transaction
from masterd.events import EventBus
from masterd.jobs.logs import packAttempts
from masterd.jobs.retire import retireJob
from masterd.service import LoopWatcher, Periodic, StagedService

log = Logger()

#: An attempt's log is compressed once it ended this long ago: its last
#: lines and its final report may still be in flight a little after.
PACK_AFTER = timedelta(minutes=5)
#: Attempts whose logs one transaction compresses.
PACK_BATCH = 200
#: The most one run spends on each of its walks, so that every part of
#: retention gets its turn in a run however much is due.
RUN_BUDGET_S = 5.0

_CUT_SHORT = (psycopg2.errors.QueryCanceled, psycopg2.errors.LockNotAvailable)

#: Archives a finished job (pool, job id): what masterd.retention.archive's
#: writeArchive does for retention.archive_dir.
Archiver = Callable[[int], Awaitable[Any]]


class Retention:
    """
    One run's work, step by step; L{RetentionService} runs it periodically.
    """

    def __init__(
        self,
        pool: Pool,
        config: RetentionConfig,
        events: EventBus,
        master: str,
        archiver: Archiver | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._config = config
        self._events = events
        self._master = master
        self._archiver = archiver
        self._now = now
        self.batch = config.batch_tasks
        #: The longest any deleting statement took, in ms, and how many were
        #: cut short (figures for the benchmark and the tests).
        self.longestMs = 0.0
        self.cutShort = 0
        self.deletedTasks = 0
        self.deletedJobs = 0

    # -- the lease -----------------------------------------------------------

    async def lease(self) -> bool:
        """
        Take or keep the lease for two intervals; False while another master
        holds it.
        """
        seconds = max(2 * self._config.interval_s, 30.0)
        rows = await self._pool.query(
            "INSERT INTO retention_marks (name, at, holder)"
            " VALUES ('lease', now() + %s * interval '1 second', %s)"
            " ON CONFLICT (name) DO UPDATE SET at = EXCLUDED.at, holder = EXCLUDED.holder"
            " WHERE retention_marks.at < now() OR retention_marks.holder = EXCLUDED.holder"
            " RETURNING holder",
            (seconds, self._master),
        )
        return bool(rows)

    async def run(self) -> None:
        if not await self.lease():
            return
        if self._config.compress_logs:
            await self.compressLogs()
        if self._config.logs_days is not None:
            await self.deleteLogs(self._config.logs_days)
        if self._config.jobs_days is not None:
            await self.deleteJobs(self._config.jobs_days)

    # -- bounded statements --------------------------------------------------

    async def _bounded(self, work: Callable[[Transaction], Awaitable[Any]]) -> Any:
        """
        Run C{work} in a transaction whose statements may neither wait for
        nor hold locks longer than max_lock_ms; raises what cut it short.
        """
        limit = self._config.max_lock_ms

        async def bounded(txn: Transaction) -> Any:
            await txn.execute(
                f"SET LOCAL lock_timeout = {int(limit)}; SET LOCAL statement_timeout = {int(limit)}"
            )
            return await work(txn)

        started = self._now()
        try:
            return await self._pool.transaction(bounded)
        finally:
            self.longestMs = max(self.longestMs, (self._now() - started) * 1000)

    async def _adaptive(self, delete: Callable[[Transaction, int], Awaitable[int]]) -> int:
        """
        One batch of C{delete(txn, size)}, its size halved when the batch
        was cut short (and tried again) or ran past half the limit, doubled
        back (up to batch_tasks) while it stays under an eighth. Returns
        how many it deleted.
        """
        limit = self._config.max_lock_ms
        while True:
            size = self.batch
            started = self._now()
            try:

                async def batch(txn: Transaction, size: int = size) -> int:
                    return await delete(txn, size)

                done: int = await self._bounded(batch)
            except _CUT_SHORT:
                self.cutShort += 1
                if size == 1:
                    raise
                self.batch = max(1, size // 2)
                continue
            took = (self._now() - started) * 1000
            if took > limit / 2:
                self.batch = max(1, size // 2)
            elif took < limit / 8:
                self.batch = min(self._config.batch_tasks, size * 2)
            return done

    # -- logs ----------------------------------------------------------------

    async def _walk(
        self,
        name: str,
        before: str,
        step: Callable[[Transaction, list[Any]], Awaitable[None]],
        size: int,
    ) -> int:
        """
        Go through the attempts that ended before C{before} (SQL, a time) by
        (finished_at, task id, attempt) from the mark C{name}, C{size} at a
        time, C{step} for each batch in the transaction that moves the mark;
        for RUN_BUDGET_S at most. Returns how many attempts it went through.
        """
        seen = 0
        began = self._now()
        while self._now() - began < RUN_BUDGET_S:

            async def work(txn: Transaction) -> int:
                mark = await txn.query(
                    "SELECT at, task_id, attempt FROM retention_marks WHERE name = %s FOR UPDATE",
                    (name,),
                )
                after = " AND (finished_at, task_id, attempt) > (%(at)s, %(t)s, %(n)s)"
                rows = await txn.query(
                    "SELECT finished_at, task_id, attempt FROM task_attempts"
                    f" WHERE finished_at IS NOT NULL AND finished_at < {before}"
                    + (after if mark else "")
                    + " ORDER BY finished_at, task_id, attempt LIMIT %(size)s",
                    {"at": mark[0][0] if mark else None, "t": mark[0][1] if mark else 0,
                     "n": mark[0][2] if mark else 0, "size": size},
                )  # fmt: skip
                if not rows:
                    return 0
                await step(txn, [(r[1], r[2]) for r in rows])
                last = rows[-1]
                await txn.execute(
                    "INSERT INTO retention_marks (name, at, task_id, attempt)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE"
                    " SET at = EXCLUDED.at, task_id = EXCLUDED.task_id,"
                    " attempt = EXCLUDED.attempt",
                    (name, last[0], last[1], last[2]),
                )
                return len(rows)

            count = await self._bounded(work)
            seen += count
            if count < size:
                break
        return seen

    async def compressLogs(self) -> int:
        async def step(txn: Transaction, attempts: list[Any]) -> None:
            await packAttempts(txn, attempts)

        before = f"now() - interval '{int(PACK_AFTER.total_seconds())} seconds'"
        return await self._walk("packed", before, step, PACK_BATCH)

    async def deleteLogs(self, days: float) -> int:
        async def step(txn: Transaction, attempts: list[Any]) -> None:
            keys = ([a[0] for a in attempts], [a[1] for a in attempts])
            for table in ("task_logs", "task_logs_packed"):
                await txn.execute(
                    f"DELETE FROM {table} WHERE (task_id, attempt) IN"
                    " (SELECT * FROM unnest(%s::bigint[], %s::int[]))",
                    keys,
                )

        before = f"now() - interval '{float(days) * 86400:.0f} seconds'"
        return await self._walk("logs", before, step, max(1, self.batch // 4))

    # -- jobs ----------------------------------------------------------------

    async def deleteJobs(self, days: float) -> int:
        """
        Delete the finished jobs due, oldest first, each to its end.
        """
        gone = 0
        began = self._now()
        while self._now() - began < RUN_BUDGET_S:
            due = await self._pool.query(
                "SELECT id FROM jobs WHERE finished_at < now() - %s * interval '1 day'"
                " AND state IN ('done', 'failed', 'canceled') ORDER BY deleting DESC,"
                " finished_at LIMIT 10",
                (days,),
            )
            if not due:
                break
            for (jobID,) in due:
                if await self.deleteJob(jobID):
                    gone += 1
        return gone

    async def deleteJob(self, jobID: int) -> bool:
        """
        Archive, retire, then delete one finished job; False when it could
        not be (its archive failed, or it changed meanwhile).
        """
        # A job whose deletion began (a run killed midway) is archived
        # already, whole: its remaining tasks must not overwrite that.
        rows = await self._pool.query("SELECT deleting FROM jobs WHERE id = %s", (jobID,))
        resuming = bool(rows and rows[0][0])
        if self._archiver is not None and not resuming:
            try:
                await self._archiver(jobID)
            except Exception:
                log.failure("retention: job {jobId} could not be archived; it is kept", jobId=jobID)
                return False

        async def retire(txn: Transaction) -> bool:
            rows = await txn.query(
                "SELECT deleting FROM jobs WHERE id = %s AND state IN ('done', 'failed',"
                " 'canceled') FOR UPDATE",
                (jobID,),
            )
            if not rows:
                return False
            if not rows[0][0]:
                await retireJob(txn, self._events, jobID)
                await txn.execute("UPDATE jobs SET deleting = true WHERE id = %s", (jobID,))
            return True

        if not await self._pool.transaction(retire):
            return False

        async def tasks(txn: Transaction, size: int) -> int:
            rows = await txn.query(
                "WITH gone AS (DELETE FROM tasks WHERE id IN (SELECT id FROM tasks"
                " WHERE job_id = %s ORDER BY id LIMIT %s) RETURNING 1) SELECT count(*) FROM gone",
                (jobID, size),
            )
            return int(rows[0][0])

        while True:
            deleted = await self._adaptive(tasks)
            self.deletedTasks += deleted
            if deleted == 0:
                break

        async def job(txn: Transaction) -> int:
            await txn.execute("DELETE FROM jobs WHERE id = %s AND deleting", (jobID,))
            return 0

        await self._bounded(job)
        self.deletedJobs += 1
        log.info("retention: deleted job {jobId}", jobId=jobID)
        return True


class RetentionService(StagedService):
    """
    Runs L{Retention} every C{retention.interval_s}; a run that raises is
    logged, and the next runs as planned.
    """

    name = "retention"

    def __init__(
        self,
        retention: Retention,
        interval: float,
        clock: IReactorTime,
        watcher: LoopWatcher | None = None,
    ) -> None:
        self.retention = retention
        self._loop = Periodic("retention", self._runOnce, interval, clock, watcher)

    async def _runOnce(self) -> None:
        try:
            await self.retention.run()
        except DatabaseUnavailable:
            pass  # nothing was lost: the next run goes on from the marks

    async def start(self) -> None:
        self._loop.start(now=False)

    async def stop(self) -> None:
        await self._loop.stop()
