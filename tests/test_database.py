"""
The pool, migrations and the database service, against real PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import psycopg2.errors
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from masterd.config import DatabaseConfig, PoolConfig, parseConfig
from masterd.db import (
    Batcher,
    DatabaseService,
    DatabaseUnavailable,
    Migration,
    Pool,
    StatementCanceled,
    Transaction,
    migrate,
    packagedMigrations,
)
from masterd.stats import SchedulingStats
from masterd.tap import buildMaster

from ._postgres import freshDatabase


async def waitFor(condition: Any, timeout: float = 30.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await deferLater(reactor, step)


def d(coroutine: Any) -> Deferred[Any]:
    return Deferred.fromCoroutine(coroutine)


class MigrationTests(TestCase):
    async def pool(self, dsn: str) -> Pool:
        pool = Pool(reactor, dsn, minSize=1, maxSize=2)
        await pool.open()
        self.addCleanup(pool.close)
        return pool

    def test_packaged(self) -> Deferred[None]:
        async def run() -> None:
            migrations = packagedMigrations()
            self.assertEqual(migrations[0].version, "0001")
            self.assertEqual([m.version for m in migrations], sorted(m.version for m in migrations))

        return d(run())

    def test_raceAppliesOnce(self) -> Deferred[None]:
        """
        Several appliers at once, on separate connections: every migration is
        applied by exactly one of them and recorded once.
        """

        async def run() -> None:
            dsn = await freshDatabase(self, migrated=False)
            pools = [await self.pool(dsn) for _ in range(4)]
            results = await gatherResults([d(migrate(p)) for p in pools])
            versions = [m.version for m in packagedMigrations()]
            applied = [r for r in results if r]
            self.assertEqual(applied, [versions])
            rows = await pools[0].query("SELECT version FROM schema_migrations ORDER BY version")
            self.assertEqual([r[0] for r in rows], versions)
            self.assertEqual(await migrate(pools[1]), [])

        return d(run())

    def test_failedMigrationLeavesNothing(self) -> Deferred[None]:
        async def run() -> None:
            dsn = await freshDatabase(self, migrated=False)
            pool = await self.pool(dsn)
            bad = [
                Migration("0001", "good", "CREATE TABLE first (x int)"),
                Migration("0002", "bad", "CREATE TABLE second (x nosuchtype)"),
            ]
            with self.assertRaises(psycopg2.errors.UndefinedObject):
                await migrate(pool, bad)
            rows = await pool.query(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_name IN ('first', 'second', 'schema_migrations')"
            )
            self.assertEqual(rows, [(0,)])

        return d(run())


class PoolTests(TestCase):
    async def openPool(self, queries: list[float], schema: str) -> Pool:
        """
        A pool of one connection on a fresh database that counts its
        statements into C{queries}, with C{schema} run.
        """
        pool = Pool(reactor, await freshDatabase(self), minSize=1, maxSize=1,
                    onQuery=queries.append)  # fmt: skip
        await pool.open()
        self.addCleanup(pool.close)
        await pool.query(schema)
        return pool

    def test_transactionCommitsAndRollsBack(self) -> Deferred[None]:
        async def run() -> None:
            queries: list[float] = []
            pool = await self.openPool(queries, "CREATE TABLE t (x int)")

            async def insertThenFail(txn: Transaction) -> None:
                await txn.execute("INSERT INTO t VALUES (1)")
                raise ValueError("no")

            with self.assertRaises(ValueError):
                await pool.transaction(insertThenFail)

            async def insert(txn: Transaction) -> int:
                await txn.execute("INSERT INTO t VALUES (2), (3)")
                return txn.rowcount

            self.assertEqual(await pool.transaction(insert), 2)
            self.assertEqual(await pool.query("SELECT x FROM t ORDER BY x"), [(2,), (3,)])
            self.assertGreater(len(queries), 5)
            self.assertEqual(pool.inUse, 0)

        return d(run())

    def test_statementTimeout(self) -> Deferred[None]:
        """
        A statement the database cancels (its statement_timeout) raises
        StatementCanceled, a DatabaseUnavailable (txpostgres would make it a
        CancelledError, as if the caller had cancelled); its transaction is
        rolled back and the connection serves the next.
        """

        async def run() -> None:
            pool = await self.openPool([], "CREATE TABLE t (x int)")

            async def slow(txn: Transaction) -> None:
                await txn.execute("INSERT INTO t VALUES (1)")
                await txn.execute("SET LOCAL statement_timeout = 10; SELECT pg_sleep(5)")

            with self.assertRaises(StatementCanceled) as caught:
                await pool.transaction(slow)
            self.assertIsInstance(caught.exception, DatabaseUnavailable)
            self.assertEqual(await pool.query("SELECT count(*) FROM t"), [(0,)])
            self.assertEqual(pool.inUse, 0)

        return d(run())

    def test_beginRidesWithTheFirstStatement(self) -> Deferred[None]:
        """
        BEGIN travels with a transaction's first statement (one round trip
        fewer); a transaction that runs no statement sends nothing; a first
        statement that fails is rolled back, and the connection is usable.
        """

        async def run() -> None:
            queries: list[float] = []
            pool = await self.openPool(queries, "CREATE TABLE t (x int PRIMARY KEY)")
            del queries[:]
            self.assertEqual(await pool.query("SELECT 1"), [(1,)])
            self.assertEqual(len(queries), 2)  # BEGIN with SELECT, then COMMIT

            async def nothing(txn: Transaction) -> str:
                return "done"

            self.assertEqual(await pool.transaction(nothing), "done")
            self.assertEqual(len(queries), 2)

            async def failFirst(txn: Transaction) -> None:
                await txn.execute("INSERT INTO t VALUES (1), (1)")

            with self.assertRaises(psycopg2.IntegrityError):
                await pool.transaction(failFirst)

            async def inTransaction(txn: Transaction) -> list[tuple[Any, ...]]:
                await txn.execute("INSERT INTO t VALUES (2)")
                return await txn.query("SELECT now() = statement_timestamp(), count(*) FROM t")

            # Inside one transaction now() stays at its start.
            [(same, count)] = await pool.transaction(inTransaction)
            self.assertEqual((same, count), (False, 1))
            self.assertEqual(pool.inUse, 0)

        return d(run())

    def test_acquireTimeout(self) -> Deferred[None]:
        """
        When every connection is busy, a caller waits at most the acquire
        timeout, then gets DatabaseUnavailable.
        """

        async def run() -> None:
            dsn = await freshDatabase(self)
            pool = Pool(reactor, dsn, minSize=1, maxSize=1, acquireTimeout=0.2)
            await pool.open()
            self.addCleanup(pool.close)
            release: Deferred[None] = Deferred()

            async def hold(txn: Transaction) -> None:
                await release

            holding = d(pool.transaction(hold))
            with self.assertRaises(DatabaseUnavailable) as caught:
                await pool.query("SELECT 1")
            self.assertIn("no database connection became free", str(caught.exception))
            release.callback(None)
            await holding
            self.assertEqual(await pool.query("SELECT 1"), [(1,)])

        return d(run())

    def test_heldThroughALoss(self) -> Deferred[None]:
        """
        Connections that transactions held while the pool lost the database
        come back dead after it has recovered: each fails (or ends) only its
        own transaction, and the recovered pool stays healthy. Before, the
        first of them failed the whole pool again, a second outage right
        after the first (CI saw /readyz answer 503 just after recovery).
        """

        async def run() -> None:
            dsn = await freshDatabase(self)
            # Four: three held, one idle to notice the loss.
            pool = Pool(reactor, dsn, minSize=4, maxSize=6)
            await pool.open()
            self.addCleanup(pool.close)
            admin = Pool(reactor, dsn, minSize=1, maxSize=1)
            await admin.open()
            self.addCleanup(admin.close)
            gate: Deferred[None] = Deferred()

            async def queriedThenCommits(txn: Transaction) -> str:
                await txn.query("SELECT 1")
                await gate
                return "committed"

            async def queriedThenFails(txn: Transaction) -> None:
                await txn.query("SELECT 1")
                await gate
                raise ValueError("the work's own error")

            async def sentNothing(txn: Transaction) -> str:
                await gate
                return "nothing to commit"

            commits = d(pool.transaction(queriedThenCommits))
            fails = d(pool.transaction(queriedThenFails))
            nothing = d(pool.transaction(sentNothing))
            self.addCleanup(lambda: None if gate.called else gate.callback(None))
            await waitFor(lambda: pool.inUse == 3)
            # The server "restarts": every backend of the pool goes away.
            await admin.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

            async def othersGone() -> bool:
                rows = await admin.query(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                return bool(rows[0][0] == 0)

            while not await othersGone():
                await deferLater(reactor, 0.05)
            await waitFor(lambda: not pool.healthy)
            await pool.recover()
            self.assertTrue(pool.healthy)

            gate.callback(None)
            with self.assertRaises(DatabaseUnavailable):
                await commits
            with self.assertRaises(DatabaseUnavailable):
                await fails
            self.assertEqual(await nothing, "nothing to commit")
            self.assertTrue(pool.healthy)
            # Enough at once to take every idle connection there is.
            answers = await gatherResults([d(pool.query("SELECT 1")) for _ in range(5)])
            self.assertEqual(answers, [[(1,)]] * 5)
            self.assertTrue(pool.healthy)
            self.assertEqual(pool.inUse, 0)

        return d(run())

    def test_unreachable(self) -> Deferred[None]:
        async def run() -> None:
            missing = tempfile.mkdtemp()
            pool = Pool(reactor, f"host={missing} dbname=x user=postgres", minSize=1)
            with self.assertRaises(DatabaseUnavailable):
                await pool.open()
            self.assertFalse(pool.healthy)
            with self.assertRaises(DatabaseUnavailable):
                await pool.query("SELECT 1")

        return d(run())


def _config(**kw: Any) -> DatabaseConfig:
    return DatabaseConfig(
        embedded_data_dir=None,
        dsn="unused",
        pool=PoolConfig(min=1, max=3, acquire_timeout_s=5),
        connect_timeout_s=2,
        reconnect_max_s=0.2,
        **kw,
    )


class DatabaseServiceTests(TestCase):
    def test_retriesUntilReachable(self) -> Deferred[None]:
        """
        An unreachable database at start is retried, not fatal; once it
        answers the service migrates and is ready.
        """

        async def run() -> None:
            dsn = await freshDatabase(self, migrated=False)
            target = {"dsn": f"host={tempfile.mkdtemp()} dbname=x user=postgres"}
            fatal: list[Any] = []
            service = DatabaseService(reactor, _config(), lambda: target["dsn"], initialDelay=0.05)
            service.fatal = fatal.append
            await service.start()
            self.addCleanup(lambda: d(service.stop()))
            await waitFor(lambda: service.attempts >= 3)
            self.assertFalse(service.ready)
            self.assertFalse(await service.ping())
            # Point the pool at the real database, as if it had come up.
            assert service.pool is not None
            target["dsn"] = dsn
            await waitFor(lambda: service.ready)
            self.assertTrue(await service.ping())
            self.assertEqual(fatal, [])
            self.flushLoggedErrors()

        return d(run())


class _LostWhileFilling:
    """
    A pool that, on its first recovery, is lost again while it fills (a
    connection found dead): it fails and asks its service to reconnect, as
    L{Pool} does, while the service's loop is still running.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.size = 1
        self.healthy = False
        self.recoveries = 0
        self.onDead: Any = None

    async def recover(self) -> None:
        await deferLater(self.clock, 0)
        self.recoveries += 1
        self.healthy = True
        if self.recoveries == 1:
            self.healthy = False
            self.onDead()


class ReconnectLoopTests(TestCase):
    def test_lostAgainWhileFilling(self) -> None:
        """
        A pool lost again while it recovers sends the reconnect loop round
        again. Before, the loop ended, the pool's own call to reconnect had
        found the loop running, and the master stayed unready for good.
        """
        clock = Clock()
        service = DatabaseService(clock, _config(), lambda: "unused", initialDelay=1.0)
        pool = _LostWhileFilling(clock)
        pool.onDead = service._reconnect
        service.pool = pool  # type: ignore[assignment]
        service._migrated = True  # the fake has no schema to migrate
        ready: list[None] = []
        service.onReady.append(lambda: ready.append(None))
        Deferred.fromCoroutine(service.start())
        for _ in range(20):
            clock.advance(1)
        self.assertEqual(pool.recoveries, 2)
        self.assertTrue(service.ready)
        self.assertEqual(ready, [None])


class ServerRestartTests(TestCase):
    """
    A whole master (in this process, on a real socket) whose database server
    stops and comes back: /readyz says 503 at once while it is gone, the
    pool fails fast, and the master reconnects by itself.
    """

    timeout = 90

    def test_lostAndRecovered(self) -> Deferred[None]:
        async def run() -> None:
            import socket
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver

            directory = os.path.join(tempfile.mkdtemp(prefix="masterd-restart-"), "data")
            server = await deferToThread(pgserver.get_server, directory, "delete")
            info = server.get_postmaster_info()
            config = parseConfig(
                {
                    "http": {"listen": ["tcp:0:interface=127.0.0.1"]},
                    "database": {
                        "dsn": f"host={info.socket_dir} user=postgres dbname=postgres",
                        "reconnect_max_s": 0.2,
                    },
                },
                environ={},
            )
            master = buildMaster(config, reactor)
            master.root.startService()
            stopped = False

            async def stop() -> None:
                if not stopped:
                    await master.root.stopService()

            self.addCleanup(lambda: d(stop()))
            await waitFor(lambda: master.database.ready)
            port = master.http.ports[0].getHost().port
            base = f"http://127.0.0.1:{port}"
            self.assertEqual(await status(base + "/readyz"), 200)

            # Stop the server (fast shutdown), keeping the data directory.
            server.cleanup_mode = "stop"
            await deferToThread(server.cleanup)
            started = time.monotonic()
            self.assertEqual(await status(base + "/readyz"), 503)
            pool = master.database.pool
            assert pool is not None
            with self.assertRaises(DatabaseUnavailable):
                await pool.query("SELECT 1")
            self.assertLess(time.monotonic() - started, 3.0)
            self.assertEqual(await status(base + "/healthz"), 200)

            server = await deferToThread(pgserver.get_server, directory, "delete")
            self.addCleanup(deferToThread, server.cleanup)
            await waitFor(lambda: master.database.ready)
            response = await treq.get(base + "/readyz", persistent=False)
            self.assertEqual(response.code, 200, await response.text())

            # An idle keep-alive connection does not hold up the stop.
            client = socket.create_connection(("127.0.0.1", port))
            self.addCleanup(client.close)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await waitFor(lambda: len(master.http.site.connections) == 1)
            stopped = True
            await master.root.stopService()
            self.assertEqual(master.http.site.connections, set())
            self.assertEqual(pool.size, 0)
            self.flushLoggedErrors()

        return d(run())


async def status(url: str) -> int:
    response = await treq.get(url, persistent=False)
    await response.content()
    code: int = response.code
    return code


class BatcherTests(TestCase):
    """
    Group commit against a real database.
    """

    async def batcher(self) -> tuple[Pool, Batcher]:
        pool = Pool(reactor, await freshDatabase(self), minSize=1, maxSize=2)
        await pool.open()
        self.addCleanup(pool.close)
        await pool.query("CREATE TABLE notes (id serial PRIMARY KEY, text text NOT NULL)")
        return pool, Batcher(pool)

    @staticmethod
    def note(text: str | None) -> Any:
        async def work(txn: Transaction) -> int:
            rows = await txn.query("INSERT INTO notes (text) VALUES (%s) RETURNING id", (text,))
            return int(rows[0][0])

        return work

    def test_arrivalsDuringBeginRideAlong(self) -> Deferred[None]:
        """
        What is submitted after a batch has started, but before its
        transaction has begun, is written in that same transaction.
        """

        async def run() -> None:
            pool, _ = await self.batcher()
            stats = SchedulingStats()
            batcher = Batcher(pool, stats=stats)
            first = batcher.submit(self.note("a"))
            second = batcher.submit(self.note("b"))
            self.assertEqual(await gatherResults([first, second]), [1, 2])
            self.assertEqual((batcher.batches, batcher.operations), (1, 2))
            self.assertEqual((stats.batches, stats.operations, stats.largest), (1, 2, 2))
            self.assertGreater(stats.seconds, 0)

        return d(run())

    def test_groupedBeforeSingles(self) -> Deferred[None]:
        """
        In a batch, grouped items run before single operations, whatever the
        order they came in: a claim sees the reports of its own batch.
        """

        async def run() -> None:
            _, batcher = await self.batcher()

            async def count(txn: Transaction) -> int:
                return int((await txn.query("SELECT count(*) FROM notes"))[0][0])

            async def insertAll(txn: Transaction, texts: list[str]) -> list[int]:
                return [await self.note(text)(txn) for text in texts]

            counted = batcher.submit(count)
            inserted = [batcher.submitGrouped(insertAll, t) for t in ("x", "y")]
            self.assertEqual(await counted, 2)
            self.assertEqual(await gatherResults(inserted), [1, 2])
            self.assertEqual(batcher.batches, 1)

        return d(run())

    def test_oneBadOperationFailsAlone(self) -> Deferred[None]:
        """
        A batch that fails is written again one operation at a time: the bad
        one fails, the others are written.
        """

        async def run() -> None:
            pool, batcher = await self.batcher()
            good = batcher.submit(self.note("fine"))
            bad = batcher.submit(self.note(None))  # NOT NULL
            alsoGood = batcher.submit(self.note("also fine"))
            self.assertIsInstance(await good, int)
            self.assertIsInstance(await alsoGood, int)
            with self.assertRaises(psycopg2.errors.NotNullViolation):
                await bad
            rows = await pool.query("SELECT text FROM notes ORDER BY id")
            self.assertEqual([r[0] for r in rows], ["fine", "also fine"])

        return d(run())

    def test_databaseDownFailsTheBatch(self) -> Deferred[None]:
        """
        With the database gone, every operation of the batch fails with
        DatabaseUnavailable, and the batcher takes the next ones afterwards.
        """

        async def run() -> None:
            pool, batcher = await self.batcher()
            await pool.close()
            pending = [batcher.submit(self.note("x")) for _ in range(3)]
            for each in pending:
                with self.assertRaises(DatabaseUnavailable):
                    await each
            self.assertFalse(batcher._running)

        return d(run())


class HandleListTests(TestCase):
    """
    pgserver's list of the processes using an embedded server.
    """

    def test_deadDropped(self) -> None:
        import json
        import subprocess
        import sys
        from pathlib import Path

        from masterd.db._embedded import HANDLES, pruneDeadHandles

        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        data = Path(self.mktemp())
        data.mkdir()
        (data / HANDLES).write_text(json.dumps([os.getpid(), gone.pid]))
        self.assertEqual(pruneDeadHandles(data), [gone.pid])
        self.assertEqual(json.loads((data / HANDLES).read_text()), [os.getpid()])
        self.assertEqual(pruneDeadHandles(data), [])

    def test_halfWritten(self) -> None:
        """
        A list a killed process left half written no longer stops every
        later start: it is started afresh.
        """
        import json
        from pathlib import Path

        from masterd.db._embedded import HANDLES, pruneDeadHandles

        data = Path(self.mktemp())
        data.mkdir()
        (data / HANDLES).write_text("[123, 45")
        self.assertEqual(pruneDeadHandles(data), [])
        self.assertEqual(json.loads((data / HANDLES).read_text()), [])
        self.flushLoggedErrors()
