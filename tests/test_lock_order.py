"""
Conflicts between transactions, against real PostgreSQL: the order in which
tasks are locked (masterd.jobs.store's docstring), so that agents' report
batches and operators' cancels of the same tasks never deadlock; and what the
pool and the batcher do when PostgreSQL fails a transaction for a conflict
all the same (it is run again).

Each test holds one side's transaction open at a chosen point, lets the other
run into its locks, and only then lets the first go on: a lock order that
could deadlock does, and PostgreSQL fails one of the two.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from masterd.db import (
    Batcher,
    DatabaseUnavailable,
    Pool,
    Transaction,
    TransactionConflict,
)
from masterd.talkback.messages import Log, TaskUpdate
from masterd.talkback.store import UpdateResult

from ._postgres import freshDatabase
from .test_talkback import AGENT, Base

#: PostgreSQL's own error for a deadlock it broke, raised on purpose.
DEADLOCK = (
    "DO $$ BEGIN RAISE EXCEPTION 'deadlock (on purpose)'"
    " USING ERRCODE = 'deadlock_detected'; END $$"
)


async def lockWaits(pool: Pool) -> int:
    """
    How many lock requests of this database's sessions are waiting.
    """
    rows = await pool.query(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid"
        " WHERE NOT l.granted AND s.datname = current_database()"
    )
    return int(rows[0][0])


async def until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await deferLater(reactor, 0.02)


#: Another transaction's part: it runs its first statements, fires the first
#: Deferred once it holds what it first locks, then waits for the second.
Other = Callable[[Transaction, Deferred[None], Deferred[None]], Awaitable[None]]


class LockOrderTests(Base):
    async def reportAcross(
        self, other: Other, reports: list[tuple[str, TaskUpdate, None]]
    ) -> list[UpdateResult]:
        """
        Run C{other} until it holds its first locks, then the report batch
        C{reports} until it waits on a lock, then let C{other} go on. Neither
        is run again on a conflict: both must go through.
        """
        pool, store = self.api.pool, self.registry.store
        held: Deferred[None] = Deferred()
        goOn: Deferred[None] = Deferred()
        holding = Deferred.fromCoroutine(
            pool.transaction(lambda txn: other(txn, held, goOn), conflictRetries=0)
        )
        await held
        reporting = Deferred.fromCoroutine(
            pool.transaction(lambda txn: store._applyReports(txn, reports), conflictRetries=0)
        )
        await until(lambda: lockWaits(pool))
        goOn.callback(None)
        await holding
        return await reporting

    async def test_reportsWaitHoldingNothing(self) -> None:
        """
        An operator's transaction locks a job's first task, then its last,
        as a cancel locks them (in id order). A report batch that fails the
        last task, then the first, waits for the first before it locks the
        last, so the operator gets the last and both go through. (Locked as
        each report came, the batch held the last task while it waited for
        the first, and PostgreSQL broke the deadlock by failing one.)
        """
        await self.setUpTalkback()
        await self.joined()
        first, _, last = await self.assign(frames="1-3")

        async def operator(txn: Transaction, held: Deferred[None], goOn: Deferred[None]) -> None:
            lock = "SELECT id FROM tasks WHERE id = %s FOR NO KEY UPDATE"
            await txn.execute(lock, (first.task_id,))
            held.callback(None)
            await goOn
            await txn.execute(lock, (last.task_id,))
            await txn.execute(
                "UPDATE tasks SET progress = progress WHERE id = ANY (%s)",
                ([first.task_id, last.task_id],),
            )

        reports = [
            (AGENT, TaskUpdate(task_id=t.task_id, attempt=t.attempt, state="failed",
                               exit_code=1, message="boom"), None)
            for t in (last, first)
        ]  # fmt: skip
        results = await self.reportAcross(operator, reports)
        self.assertEqual([r.outcome.name for r in results], ["applied", "applied"])
        rows = await self.api.pool.query(
            "SELECT failures FROM tasks WHERE id = ANY (%s) ORDER BY id",
            ([first.task_id, last.task_id],),
        )
        self.assertEqual(rows, [(1,), (1,)])

    async def test_reportsLockTheirJobsFirst(self) -> None:
        """
        Another transaction holds the first of two jobs and then takes the
        second, as another master's batch takes the jobs of its reports. A
        report batch that starts the second job's task, then fails the
        first's, waits for the first job before it holds the second, so the
        other gets the second and both go through. (Locked statement by
        statement by the count trigger, the batch held the second job while
        it waited for the first: a deadlock.)
        """
        await self.setUpTalkback()
        await self.joined()
        [first] = await self.assign(frames="1")
        [second] = await self.assign(frames="1")
        self.assertLess(first.job_id, second.job_id)

        async def other(txn: Transaction, held: Deferred[None], goOn: Deferred[None]) -> None:
            await txn.execute(
                "SELECT id FROM jobs WHERE id = %s FOR NO KEY UPDATE", (first.job_id,)
            )
            held.callback(None)
            await goOn
            await txn.execute("UPDATE jobs SET updated_at = now() WHERE id = %s", (second.job_id,))

        reports = [
            (AGENT, TaskUpdate(task_id=second.task_id, attempt=second.attempt,
                               state="running"), None),
            (AGENT, TaskUpdate(task_id=first.task_id, attempt=first.attempt, state="failed",
                               exit_code=1, message="boom"), None),
        ]  # fmt: skip
        results = await self.reportAcross(other, reports)
        self.assertEqual([r.outcome.name for r in results], ["applied", "applied"])

    async def test_noFunctionLocksJobsForUpdate(self) -> None:
        """
        The trigger functions lock jobs C{FOR NO KEY UPDATE} (migration
        0024), which an attempt's insert (its foreign key's lock on the job)
        does not wait on.
        """
        await self.setUpTalkback()
        rows = await self.api.pool.query(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'masterd%'"
            " AND prosrc ~ 'FROM jobs[^;]*FOR UPDATE'"
        )
        self.assertEqual(rows, [])
        [task] = await self.assign(frames="1")
        holding: Deferred[None] = Deferred()
        goOn: Deferred[None] = Deferred()

        async def counting(txn: Transaction) -> None:
            await txn.execute("UPDATE tasks SET state = 'running' WHERE id = %s", (task.task_id,))
            holding.callback(None)
            await goOn

        counted = Deferred.fromCoroutine(self.api.pool.transaction(counting, conflictRetries=0))
        await holding
        # The job's row is held by the count trigger; a row that refers to
        # the job is still inserted at once.
        inserting = Deferred.fromCoroutine(
            self.api.pool.query(
                "INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state)"
                " VALUES (%s, 99, %s, %s, 'canceled')",
                (task.task_id, task.job_id, AGENT),
            )
        )

        async def settled() -> bool:
            return inserting.called or await lockWaits(self.api.pool) > 0

        await until(settled)
        self.assertTrue(inserting.called, "the insert waits on the job's counts")
        goOn.callback(None)
        await counted
        await inserting

    async def test_cancelDoesNotWaitOnLogs(self) -> None:
        """
        A batch that has written a running task's log lines (a foreign-key
        lock on the task) does not hold up a cancel of its job: the cancel
        takes the lock an update takes, not one that waits on those.
        """
        await self.setUpTalkback()
        await self.joined()
        [task] = await self.assign(frames="1")
        pool, store = self.api.pool, self.registry.store
        logged: Deferred[None] = Deferred()
        goOn: Deferred[None] = Deferred()

        async def batch(txn: Transaction) -> None:
            await store._applyLogs(
                txn, [(AGENT, Log(task_id=task.task_id, attempt=task.attempt, lines=["x"]))]
            )
            logged.callback(None)
            await goOn

        logging = Deferred.fromCoroutine(pool.transaction(batch, conflictRetries=0))
        await logged
        canceling = Deferred.fromCoroutine(self.api.jobs.cancelJob(task.job_id))

        async def settled() -> bool:
            return canceling.called or await lockWaits(pool) > 0

        await until(settled)
        self.assertTrue(canceling.called, "the cancel waits on the batch's log lines")
        goOn.callback(None)
        await logging
        document = await canceling
        self.assertEqual(document.state, "canceled")


class ConflictRetryTests(TestCase):
    """
    A transaction that PostgreSQL fails for a deadlock or a serialization
    failure is run again, whole, in a new transaction.
    """

    async def pool(self) -> Pool:
        pool = Pool(reactor, await freshDatabase(self), minSize=1, maxSize=2)
        await pool.open()
        self.addCleanup(pool.close)
        await pool.query("CREATE TABLE notes (id serial PRIMARY KEY, text text NOT NULL)")
        return pool

    @staticmethod
    def conflicting(times: int, text: str, runs: list[str]) -> Any:
        """
        Work that inserts C{text}, then fails for a deadlock its first
        C{times} runs.
        """

        async def work(txn: Transaction) -> int:
            runs.append(text)
            rows = await txn.query("INSERT INTO notes (text) VALUES (%s) RETURNING id", (text,))
            if runs.count(text) <= times:
                await txn.execute(DEADLOCK)
            return int(rows[0][0])

        return work

    async def notes(self, pool: Pool) -> list[str]:
        return [r[0] for r in await pool.query("SELECT text FROM notes ORDER BY id")]

    async def test_runAgain(self) -> None:
        """
        Run again after a conflict, the work is committed once: the first
        run's insert was rolled back.
        """
        pool = await self.pool()
        runs: list[str] = []
        await pool.transaction(self.conflicting(2, "a", runs))
        self.assertEqual((runs, await self.notes(pool)), (["a"] * 3, ["a"]))
        self.assertEqual(pool.inUse, 0)

    async def test_givesUp(self) -> None:
        """
        After C{conflictRetries} more runs, L{TransactionConflict}: a
        L{DatabaseUnavailable}, a 503 over HTTP. With none, one run.
        """
        pool = await self.pool()
        runs: list[str] = []
        with self.assertRaises(TransactionConflict) as caught:
            await pool.transaction(self.conflicting(10, "a", runs), conflictRetries=2)
        self.assertIsInstance(caught.exception, DatabaseUnavailable)
        self.assertEqual(len(runs), 3)
        with self.assertRaises(TransactionConflict):
            await pool.transaction(self.conflicting(10, "b", runs), conflictRetries=0)
        self.assertEqual(runs.count("b"), 1)
        self.assertEqual(await self.notes(pool), [])

    async def test_otherErrorsNotRunAgain(self) -> None:
        pool = await self.pool()
        runs: list[str] = []

        async def bad(txn: Transaction) -> None:
            runs.append("x")
            await txn.execute("INSERT INTO notes (text) VALUES (NULL)")

        with self.assertRaises(Exception) as caught:
            await pool.transaction(bad)
        self.assertNotIsInstance(caught.exception, DatabaseUnavailable)
        self.assertEqual(runs, ["x"])

    async def test_batchConflictRunsOneByOne(self) -> None:
        """
        A batch that conflicts is not run again as a batch (taking it took it
        off the queue) but one operation at a time, each committed once.
        """
        pool = await self.pool()
        batcher = Batcher(pool)
        runs: list[str] = []
        done = [batcher.submit(self.conflicting(t, text, runs))
                for t, text in ((0, "a"), (1, "b"), (0, "c"))]  # fmt: skip
        await gatherResults(done)
        self.assertEqual(sorted(await self.notes(pool)), ["a", "b", "c"])
        # The batch ran a, then b which conflicted; then each alone.
        self.assertEqual(runs, ["a", "b", "a", "b", "c"])
