"""
A pool of asynchronous PostgreSQL connections on txpostgres.

txpostgres' own C{ConnectionPool} has a fixed size, no health state and no
way to wait with a deadline, so this one keeps its own idle list, grows up to
C{maxSize}, and fails fast with L{DatabaseUnavailable} once a connection has
been found dead, until L{Pool.recover} has shown the server answering again.
A request must get a quick 503, never hang on a database that is gone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from txpostgres import txpostgres

from ._connect import ConnectFailed, connect, forget
from ._connect import closeQuietly as _closeQuietly

T = TypeVar("T")

log = Logger()


class DatabaseUnavailable(Exception):
    """
    The database cannot be used right now; the caller should answer 503.
    """


class StatementCanceled(DatabaseUnavailable):
    """
    The database cancelled a statement: its C{statement_timeout} ran out
    (C{database.statement_timeout_s}, or a C{SET LOCAL} of the caller's), or
    an operator cancelled it. Nothing of its transaction is kept; over HTTP
    it is a 503, like any other moment the database cannot serve.
    """


class TransactionConflict(DatabaseUnavailable):
    """
    PostgreSQL failed a transaction to break a deadlock or a serialization
    conflict, and running it again did not get through either. Nothing of it
    is kept; over HTTP it is a 503, to be tried again.
    """


#: The errors with which PostgreSQL fails one of two transactions that
#: conflict: the other goes on, and this one, run again, usually succeeds.
_CONFLICTS: tuple[type[Exception], ...] = (
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.SerializationFailure,
)
#: How many times L{Pool.transaction} runs again a transaction that failed so.
CONFLICT_RETRIES = 3


def _connectionIsDead(conn: txpostgres.Connection, error: BaseException) -> bool:
    if isinstance(error, txpostgres.RollbackFailed):
        return True
    if not isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError):
        return False
    return _isClosed(conn)


def _isClosed(conn: txpostgres.Connection) -> bool:
    raw = conn.pollable()
    return raw is None or bool(raw.closed)


class _Connection(txpostgres.Connection):  # type: ignore[misc]
    """
    A connection that tells its pool when the server goes away while it sits
    idle, instead of raising out of the reactor's read loop.
    """

    onIdleLoss: Callable[[_Connection], None] = staticmethod(lambda conn: None)
    #: The pool's generation when this connection was opened (L{Pool}).
    generation = 0

    def doRead(self) -> None:
        fd = self.fileno()
        try:
            super().doRead()
        except Exception:
            # psycopg2's error, or the reactor's when txpostgres asks it to
            # watch the descriptor libpq has just closed.
            forget(self.reactor, self, fd)
            self.onIdleLoss(self)


class Transaction:
    """
    A cursor inside an open transaction, with awaitable C{execute}.
    """

    def __init__(self, cursor: txpostgres.Cursor, onQuery: Callable[[float], None]) -> None:
        self._cursor = cursor
        self._onQuery = onQuery
        self._afterCommit: list[Callable[[], object]] = []
        self._withCommit: list[str] = []
        #: BEGIN goes out with the first statement, in the same round trip:
        #: a transaction's latency is its round trips, and when the master
        #: is busiest (thousands of agents reconnecting) each costs most.
        self.begun = False

    def afterCommit(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} once this transaction has committed; never if it
        rolls back.
        """
        self._afterCommit.append(callback)

    def committed(self) -> None:
        callbacks, self._afterCommit = self._afterCommit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.failure("an after-commit callback failed")

    def withCommit(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> None:
        """
        Send C{sql} with this transaction's COMMIT, in its round trip: for a
        row that only records what the transaction did (the audit trail),
        which nothing in the transaction reads. It commits with the rest or
        not at all, and costs no round trip of its own.
        """
        self._withCommit.append(self._cursor.mogrify(sql, params).decode("utf-8"))

    async def commit(self) -> None:
        """
        COMMIT, with the statements given to L{withCommit}; nothing when the
        transaction sent nothing.
        """
        if not self.begun and not self._withCommit:
            return
        pending, self._withCommit = self._withCommit, []
        # No parameters: psycopg2 leaves the mogrified text as it is.
        await self.execute("; ".join([*pending, "COMMIT"]))

    async def begin(self) -> None:
        """
        Send BEGIN now, on its own: for the batcher, whose next batch is
        what arrives during this round trip.
        """
        if not self.begun:
            await self.execute("BEGIN")

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> None:
        if not self.begun and sql == "BEGIN":
            self.begun = True
        elif not self.begun:
            # psycopg2 fills the parameters in on this side, so the two
            # statements travel as one simple query; the rows and the row
            # count are the second's.
            self.begun = True
            sql = f"BEGIN; {sql}"
        started = time.perf_counter()
        try:
            await self._cursor.execute(sql, params)
        except CancelledError:
            # txpostgres turns the server's QueryCanceledError into a
            # CancelledError, as if the Deferred had been cancelled; masterd
            # never cancels a query (masterd.http shields its routes' work),
            # so this is the server's.
            raise StatementCanceled(
                "the database cancelled a statement that ran too long"
            ) from None
        finally:
            self._onQuery(time.perf_counter() - started)

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._cursor.fetchall()
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._cursor.fetchone()
        return row

    @property
    def rowcount(self) -> int:
        count: int = self._cursor.rowcount
        return count

    async def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        await self.execute(sql, params)
        return self.fetchall()


class Pool:
    """
    Connections to one database, lent out one transaction at a time.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        dsn: str | Callable[[], str],
        *,
        minSize: int = 2,
        maxSize: int = 10,
        acquireTimeout: float = 5.0,
        connectTimeout: float = 5.0,
        statementTimeout: float = 30.0,
        onQuery: Callable[[float], None] = lambda seconds: None,
        onDead: Callable[[], None] = lambda: None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self._reactor = reactor
        self._dsn = dsn
        self._minSize = minSize
        self._maxSize = maxSize
        self._acquireTimeout = acquireTimeout
        self._connectTimeout = connectTimeout
        self._statementTimeout = statementTimeout
        self._onQuery = onQuery
        self._onDead = onDead
        #: Session settings of every connection (masterd.master: the name
        #: the webhook triggers record as the master of an event).
        self._settings = dict(settings or {})
        self._idle: list[txpostgres.Connection] = []
        self._size = 0
        self._waiters: deque[Deferred[txpostgres.Connection]] = deque()
        self._closing = False
        self._drained: list[Deferred[None]] = []
        self.healthy = False
        #: How many times the pool has lost the database. A connection
        #: opened before the last loss that is found dead later (one a
        #: transaction held through the outage) says nothing about the server
        #: now: it is dropped without failing the pool again, which after a
        #: recovery would mean a second outage for every request.
        self._generation = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def inUse(self) -> int:
        return self._size - len(self._idle)

    async def _connect(self) -> txpostgres.Connection:
        generation = self._generation

        def factory() -> _Connection:
            conn = _Connection(reactor=self._reactor)
            conn.onIdleLoss = self._idleLost
            conn.generation = generation
            return conn

        options = f"-c statement_timeout={int(self._statementTimeout * 1000)}"
        for name, value in self._settings.items():
            # libpq splits options at spaces; a backslash escapes one.
            escaped = value.replace("\\", "\\\\").replace(" ", "\\ ")
            options += f" -c {name}={escaped}"
        started = time.perf_counter()
        dsn = self._dsn if isinstance(self._dsn, str) else self._dsn()
        # libpq's connect_timeout does not cover every stage of an
        # asynchronous connection, so the reactor enforces it too.
        try:
            conn = await connect(
                self._reactor,
                dsn,
                factory,
                self._connectTimeout,
                connect_timeout=max(1, int(self._connectTimeout)),
                options=options,
                application_name="masterd",
            )
        except ConnectFailed as e:
            raise DatabaseUnavailable(f"cannot connect to the database: {e}") from None
        self._onQuery(time.perf_counter() - started)
        return conn

    async def open(self) -> None:
        """
        Open C{minSize} connections, or raise L{DatabaseUnavailable}.
        """
        self._closing = False
        while self._size < self._minSize:
            conn = await self._connect()
            self._size += 1
            self._release(conn)
        self.healthy = True

    async def recover(self) -> None:
        """
        Show that the server answers again, then accept work once more.
        """
        conn = await self._connect()
        self._size += 1
        self.healthy = True
        self._release(conn)
        await self.open()

    def _idleLost(self, conn: txpostgres.Connection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
            self._lost(conn)

    def _lost(self, conn: txpostgres.Connection) -> None:
        """
        C{conn} was found dead: drop it, and fail the pool unless the
        connection dates from before the pool's last loss.
        """
        self._discard(conn)
        if conn.generation == self._generation:
            self._markDead()

    def _markDead(self) -> None:
        """
        One connection died: the server probably restarted or went away, and
        every idle connection went with it. Drop them all and fail fast until
        recovered.
        """
        for conn in self._idle:
            _closeQuietly(conn)
        self._size -= len(self._idle)
        self._idle.clear()
        while self._waiters:
            self._waiters.popleft().errback(DatabaseUnavailable("the database connection was lost"))
        if self.healthy:
            self.healthy = False
            self._generation += 1
            log.warn("lost the database connection; failing requests fast until it is back")
            self._onDead()

    async def _acquire(self) -> txpostgres.Connection:
        if self._closing:
            raise DatabaseUnavailable("the master is shutting down")
        if not self.healthy:
            raise DatabaseUnavailable("the database is not available")
        while self._idle:
            conn = self._idle.pop()
            if not _isClosed(conn):
                return conn
            self._lost(conn)
            if not self.healthy:
                raise DatabaseUnavailable("the database connection was lost")
        if self._size < self._maxSize:
            self._size += 1
            try:
                return await self._connect()
            except DatabaseUnavailable:
                self._size -= 1
                self._markDead()
                raise
        waiter: Deferred[txpostgres.Connection] = Deferred()
        self._waiters.append(waiter)
        waiter.addTimeout(self._acquireTimeout, self._reactor)
        try:
            return await waiter
        except DeferredTimeout:
            raise DatabaseUnavailable(
                f"no database connection became free within {self._acquireTimeout:g} s"
            ) from None

    def _release(self, conn: txpostgres.Connection) -> None:
        if self._closing:
            _closeQuietly(conn)
            self._size -= 1
            self._checkDrained()
            return
        if _isClosed(conn):
            self._lost(conn)
            self._replace()
            return
        if conn.generation != self._generation:
            # Held through an outage: alive, perhaps, but from before it.
            self._discard(conn)
            self._replace()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.called:
                waiter.callback(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: txpostgres.Connection) -> None:
        _closeQuietly(conn)
        self._size -= 1
        self._checkDrained()

    def _replace(self) -> None:
        """
        A connection was dropped instead of coming back: open one for the
        first waiter, who would otherwise wait for a connection that is not
        coming.
        """
        if not self._waiters or not self.healthy or self._size >= self._maxSize:
            return
        self._size += 1

        async def serve() -> None:
            try:
                conn = await self._connect()
            except DatabaseUnavailable:
                self._size -= 1
                self._markDead()
                return
            self._release(conn)

        Deferred.fromCoroutine(serve())

    async def transaction(
        self,
        work: Callable[[Transaction], Awaitable[T]],
        *,
        conflictRetries: int = CONFLICT_RETRIES,
    ) -> T:
        """
        Run C{work} inside one transaction: committed when it returns, rolled
        back when it raises.

        When PostgreSQL fails it to break a deadlock or a serialization
        conflict, C{work} runs again, in a new transaction, up to
        C{conflictRetries} times, then L{TransactionConflict} is raised. So
        C{work} must keep its effects inside the transaction (the
        transaction's L{Transaction.afterCommit} for anything else); a caller
        whose C{work} changes what is outside passes C{conflictRetries=0}.
        """
        tries = 0
        while True:
            try:
                return await self._transactionOnce(work)
            except _CONFLICTS as e:
                if tries >= conflictRetries:
                    raise TransactionConflict(
                        "the database failed the operation to break a conflict"
                        " with another; try again"
                    ) from e
                tries += 1
                log.info(
                    "transaction failed on a conflict ({error}); running it again, try {tries}",
                    error=type(e).__name__,
                    tries=tries,
                )

    async def _transactionOnce(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        conn = await self._acquire()
        cursor = conn.cursor()
        txn = Transaction(cursor, self._onQuery)
        try:
            result = await work(txn)
            await txn.commit()
        except BaseException as e:
            if _connectionIsDead(conn, e):
                self._lost(conn)
                raise DatabaseUnavailable("the database connection was lost") from e
            try:
                if txn.begun:
                    await txn.execute("ROLLBACK")
            except Exception:
                self._lost(conn)
                raise DatabaseUnavailable("the database connection was lost") from e
            self._release(conn)
            raise
        self._release(conn)
        txn.committed()
        return result

    async def query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """
        One statement in its own transaction; its rows, if it has any.
        """

        async def run(txn: Transaction) -> list[tuple[Any, ...]]:
            await txn.execute(sql, params)
            if txn._cursor.description is None:
                return []
            return txn.fetchall()

        return await self.transaction(run)

    def close(self) -> Deferred[None]:
        """
        Refuse new work, let transactions under way finish, close everything.
        """
        self._closing = True
        self.healthy = False
        for conn in self._idle:
            _closeQuietly(conn)
        self._size -= len(self._idle)
        self._idle.clear()
        while self._waiters:
            self._waiters.popleft().errback(DatabaseUnavailable("the master is shutting down"))
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self._checkDrained()
        return d

    def _checkDrained(self) -> None:
        if self._closing and self._size == 0:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)
