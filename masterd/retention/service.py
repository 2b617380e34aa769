"""
Retention (issue 17; docs/retention.md): what the farm keeps, and for how
long. Every C{retention.interval_s}, on one master at a time (a lease in
retention_marks), it

    - compresses the logs of attempts that ended (retention.compress_logs),
    - deletes the logs of attempts that ended C{logs_days} ago,
    - deletes the finished jobs C{jobs_days} after they finished, after
      those whose deletion began and was left unfinished: archived first
      where C{archive_dir} is set, retired (what waits on them as a whole
      released, marked C{deleting}), then their tasks in batches, each its
      own short transaction folding its attempts into the farm's history
      and its agents' shares (masterd.jobs.retire), and at last the job,
    - deletes the farm's hourly history of hours C{history_days} old.

Every transaction that deletes runs under a C{statement_timeout} of
C{max_lock_ms} and a C{lock_timeout} of half of it: none of its statements
can hold its locks longer. One cut short by its statement timeout is tried
again with half the batch, and batches grow back while they stay well
under it; one cut short by its lock timeout is tried again after a pause.
After each, a pause keeps a deletion to C{duty} of the time. The walks over
ended attempts go by (finished_at, task id, attempt) from a mark kept in
the database, so that any master goes on where another stopped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg2.errors
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from masterd.config import RetentionConfig
from masterd.db import DatabaseUnavailable, Pool, StatementCanceled, Transaction
from masterd.events import EventBus
from masterd.jobs.logs import packAttempts
from masterd.jobs.retire import beginRetirement, finishRetirement, retireTasks
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

#: How many times in a row a transaction cut short by its lock timeout is
#: tried again (after pauses of one, two, ... limits) before the run ends.
LOCK_RETRIES = 5

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
        clock: IReactorTime | None = None,
    ) -> None:
        self._pool = pool
        self._config = config
        self._events = events
        self._master = master
        self._archiver = archiver
        self._now = now
        #: What the pauses between batches wait on (None: no pause).
        self._clock = clock
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
        # Also without jobs_days: a deletion by hand that a master left
        # unfinished is finished here.
        await self.deleteJobs(self._config.jobs_days)
        if self._config.history_days is not None:
            await self.deleteHistory(self._config.history_days)

    # -- bounded statements --------------------------------------------------

    async def _bounded(self, work: Callable[[Transaction], Awaitable[Any]]) -> Any:
        """
        Run C{work} in a transaction whose statements may neither wait for
        nor hold locks longer than max_lock_ms; raises what cut it short.
        """
        limit = self._config.max_lock_ms

        async def bounded(txn: Transaction) -> Any:
            # A wait for a lock gives up at half the limit, so that it is
            # told apart from a statement too long for it (a smaller batch).
            await txn.execute(
                f"SET LOCAL lock_timeout = {max(1, int(limit) // 2)};"
                f" SET LOCAL statement_timeout = {int(limit)}"
            )
            return await work(txn)

        started = self._now()
        try:
            return await self._pool.transaction(bounded)
        finally:
            self.longestMs = max(self.longestMs, (self._now() - started) * 1000)

    async def _adaptive(
        self, delete: Callable[[Transaction, int], Awaitable[int]], batched: bool = True
    ) -> int:
        """
        One bounded transaction of C{delete(txn, size)}; returns what it
        returned. When C{batched}, its size is halved when it was cut short
        by its statement timeout (and it is tried again) or ran past half
        the limit, and doubled back (up to batch_tasks) while it stays under
        an eighth. One cut short by its lock timeout (another transaction
        held what it needed: a claim, the roll-up) is tried again at the
        same size after a pause, up to L{LOCK_RETRIES} times. After each
        one, a pause that keeps deletion to C{retention.duty} of the time.
        """
        limit = self._config.max_lock_ms
        waits = 0
        while True:
            size = self.batch if batched else 1
            started = self._now()
            try:

                async def batch(txn: Transaction, size: int = size) -> int:
                    return await delete(txn, size)

                done: int = await self._bounded(batch)
            except psycopg2.errors.LockNotAvailable:
                self.cutShort += 1
                waits += 1
                if waits > LOCK_RETRIES:
                    raise
                await self._pause(limit / 1000 * waits)
                continue
            except StatementCanceled:
                self.cutShort += 1
                if size == 1:
                    raise
                self.batch = max(1, size // 2)
                continue
            took = self._now() - started
            if batched:
                if took * 1000 > limit / 2:
                    self.batch = max(1, size // 2)
                elif took * 1000 < limit / 8:
                    self.batch = min(self._config.batch_tasks, size * 2)
            duty = self._config.duty
            if duty < 1:
                await self._pause(took * (1 - duty) / duty)
            return done

    async def _pause(self, seconds: float) -> None:
        if self._clock is not None and seconds > 0:
            await deferLater(self._clock, seconds)

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

    async def deleteHistory(self, days: float) -> int:
        """
        Delete the farm's hourly rollups (farm_history) of the hours that
        ended C{days} ago, in bounded batches by the primary key's order
        (hour first), for RUN_BUDGET_S at most. The totals (and the
        Prometheus counters read from them) are kept: they only go up.
        Returns how many rows went.
        """
        gone = 0
        began = self._now()
        cutoff = f"now() - {float(days) * 86400:.0f} * interval '1 second' - interval '1 hour'"

        async def batch(txn: Transaction, size: int) -> int:
            rows = await txn.query(
                "WITH gone AS (DELETE FROM farm_history WHERE (hour, project, owner, tags) IN"
                " (SELECT hour, project, owner, tags FROM farm_history"
                f" WHERE hour < {cutoff} ORDER BY hour LIMIT %s) RETURNING 1)"
                " SELECT count(*) FROM gone",
                (size,),
            )
            return int(rows[0][0])

        while self._now() - began < RUN_BUDGET_S:
            deleted = await self._adaptive(batch)
            gone += deleted
            if deleted == 0:
                break
        return gone

    # -- jobs ----------------------------------------------------------------

    async def deleteJobs(self, days: float | None) -> int:
        """
        Delete the jobs whose deletion began (by hand, on a master that
        stopped midway), then the finished jobs due (none with C{days}
        None), oldest first, each to its end.
        """
        gone = 0
        began = self._now()
        due = "deleting"
        if days is not None:
            due += (
                f" OR (finished_at < now() - {float(days) * 86400:.0f} * interval '1 second'"
                " AND state IN ('done', 'failed', 'canceled'))"
            )
        # A job is tried once a run: one still there after (another
        # deletion of it holds its last batch) is for the next run.
        tried: list[int] = []
        while self._now() - began < RUN_BUDGET_S:
            rows = await self._pool.query(
                f"SELECT id FROM jobs WHERE ({due}) AND id <> ALL (%s)"
                " ORDER BY deleting DESC, finished_at LIMIT 10",
                (tried,),
            )
            if not rows:
                break
            for (jobID,) in rows:
                tried.append(jobID)
                # One kept (its archive failed) is tried again next run; the
                # others due go on meanwhile.
                if await self.deleteJob(jobID):
                    gone += 1
        return gone

    async def deleteJob(self, jobID: int) -> bool:
        """
        Archive, retire, then delete one finished job (masterd.jobs.retire);
        False when it could not be (its archive failed, or it changed
        meanwhile).
        """
        # A job whose deletion began (a run killed midway, a deletion by
        # hand) was archived whole before: its remaining tasks must not
        # overwrite that.
        rows = await self._pool.query("SELECT deleting FROM jobs WHERE id = %s", (jobID,))
        resuming = bool(rows and rows[0][0])
        if self._archiver is not None and not resuming:
            try:
                await self._archiver(jobID)
            except Exception:
                log.failure("retention: job {jobId} could not be archived; it is kept", jobId=jobID)
                return False

        async def begin(txn: Transaction, size: int) -> int:
            rows = await txn.query(
                "SELECT deleting FROM jobs WHERE id = %s AND state IN ('done', 'failed',"
                " 'canceled') FOR UPDATE",
                (jobID,),
            )
            if not rows:
                return 0
            if not rows[0][0]:
                await beginRetirement(txn, self._events, jobID)
            return 1

        if not await self._adaptive(begin, batched=False):
            return False

        async def tasks(txn: Transaction, size: int) -> int:
            return await retireTasks(txn, self._events, jobID, size)

        while True:
            deleted = await self._adaptive(tasks)
            self.deletedTasks += deleted
            if deleted == 0:
                break

        async def job(txn: Transaction, size: int) -> int:
            return int(await finishRetirement(txn, jobID))

        if await self._adaptive(job, batched=False):
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
        except StatementCanceled:
            # Nothing was lost, but a walk whose statement keeps running
            # past max_lock_ms would go nowhere, run after run: say so.
            log.warn("retention: a statement ran past retention.max_lock_ms; the run ends here")
        except DatabaseUnavailable:
            pass  # nothing was lost: the next run goes on from the marks

    async def start(self) -> None:
        self._loop.start(now=False)

    async def stop(self) -> None:
        await self._loop.stop()
