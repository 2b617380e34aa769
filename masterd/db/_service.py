"""
The database service: a connection pool that keeps trying.

An unreachable database at start is logged and retried with backoff, never a
crash: the HTTP site still answers (C{/readyz} with 503) meanwhile. A
connection found dead later sends the pool into fail-fast mode and this
service back into its reconnect loop.

The migrations run on a connection of their own before the pool opens: until
the schema is there, every query of the master (a route, a hello, a loop)
gets L{DatabaseUnavailable} (a 503, a 1013, a quiet retry), never a missing
relation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from masterd.config import DatabaseConfig
from masterd.service import StagedService

from ._migrate import Migration, migrate
from ._pool import DatabaseUnavailable, Pool

log = Logger()


class DatabaseService(StagedService):
    name = "database"

    def __init__(
        self,
        reactor: IReactorTime,
        config: DatabaseConfig,
        dsn: Callable[[], str],
        onQuery: Callable[[float], None] = lambda seconds: None,
        migrations: list[Migration] | None = None,
        initialDelay: float = 0.5,
        settings: dict[str, str] | None = None,
    ) -> None:
        self._reactor = reactor
        self._config = config
        self._dsn = dsn
        self._onQuery = onQuery
        self._migrations = migrations
        self._initialDelay = initialDelay
        c = config
        # The pool exists from the start (so that stores can hold it); it
        # connects only when started, to a DSN known only then.
        self.pool: Pool = Pool(
            reactor,
            dsn,
            minSize=c.pool.min,
            maxSize=c.pool.max,
            acquireTimeout=c.pool.acquire_timeout_s,
            connectTimeout=c.connect_timeout_s,
            statementTimeout=c.statement_timeout_s,
            onQuery=onQuery,
            onDead=self._reconnect,
            settings=settings,
        )
        self._migrated = False
        self._migrating = False
        #: Called each time the database becomes ready (after the start's
        #: migrations, and after every reconnection).
        self.onReady: list[Callable[[], object]] = []
        self._loop: Deferred[None] | None = None
        self._sleeping: Deferred[None] | None = None
        self.attempts = 0
        self._stopping = False
        self._started = False

    @property
    def ready(self) -> bool:
        return self.pool.healthy and self._migrated

    @property
    def state(self) -> str:
        """
        C{ready}, C{migrating} (connected, the schema not yet there) or
        C{unavailable}.
        """
        if self.ready:
            return "ready"
        return "migrating" if self._migrating else "unavailable"

    async def start(self) -> None:
        self._started = True
        self._reconnect()

    def _reconnect(self) -> None:
        if self._loop is not None or not self._started or self._stopping:
            return
        self._loop = Deferred.fromCoroutine(self._connectLoop())
        self._loop.addErrback(self._loopFailed)

    def _loopFailed(self, reason: Failure) -> None:
        self._loop = None
        if not reason.check(CancelledError):
            self.fatal(reason)

    async def _migrate(self) -> None:
        c = self._config
        pool = Pool(
            self._reactor,
            self._dsn,
            minSize=1,
            maxSize=1,
            acquireTimeout=c.pool.acquire_timeout_s,
            connectTimeout=c.connect_timeout_s,
            statementTimeout=max(c.statement_timeout_s, 300.0),
            onQuery=self._onQuery,
        )
        try:
            await pool.open()
            self._migrating = True
            applied = await migrate(pool, self._migrations)
        finally:
            self._migrating = False
            await pool.close()
        if applied:
            log.info("applied migrations {versions}", versions=", ".join(applied))
        self._migrated = True

    async def _connectLoop(self) -> None:
        backoff = backoffPolicy(self._initialDelay, self._config.reconnect_max_s, factor=2.0)
        failures = 0
        while not self._stopping:
            self.attempts += 1
            try:
                if not self._migrated:
                    await self._migrate()
                if self.pool.size == 0:
                    await self.pool.open()
                else:
                    await self.pool.recover()
                if self.pool.healthy:
                    break
                # Lost again while the pool was filling: the pool's own
                # call to reconnect found this loop still running, so it
                # is this loop's to go round again.
                why = "the database connection was lost again"
            except DatabaseUnavailable as e:
                if self.pool.healthy:
                    # Recovered, though not to the pool's full size: it
                    # grows on demand.
                    break
                why = str(e)
            delay = backoff(failures)
            failures += 1
            log.warn("database unavailable ({why}); retrying in {delay:.1f} s", why=why,
                     delay=delay)  # fmt: skip
            if self._stopping:
                break
            self._sleeping = deferLater(self._reactor, delay)
            try:
                await self._sleeping
            finally:
                self._sleeping = None
        self._loop = None
        if self.ready:
            log.info("database ready")
            for callback in list(self.onReady):
                try:
                    callback()
                except Exception:
                    log.failure("a database-ready callback failed")

    async def stop(self) -> None:
        self._stopping = True
        if self._sleeping is not None:
            self._sleeping.cancel()
        loop = self._loop
        if loop is not None:
            # A connection attempt under way ends within the connect timeout.
            try:
                await loop
            except Exception:
                pass
        await self.pool.close()

    async def ping(self) -> bool:
        """
        Does the database answer right now?
        """
        if not self.ready:
            return False
        try:
            rows: Any = await self.pool.query("SELECT 1")
        except DatabaseUnavailable:
            return False
        return bool(rows == [(1,)])
