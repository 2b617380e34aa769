"""
Hints between masters: LISTEN on a connection of its own (never a pooled
one), NOTIFY in the transaction that makes a change.

A cancel for an agent held by another master, an operator's change to an
agent, new work: each is committed to the database first, and announced with
a NOTIFY carrying ids only. Every master listens and turns what it hears into
events on its own bus. A notification is a hint, never the only record: when
the listening connection is lost and comes back, the master listens again and
resynchronises from the database, since whatever was announced meanwhile is
gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from txpostgres import txpostgres

from masterd.db import connect, forget
from masterd.events import CHANNEL, EventBus, decode
from masterd.service import StagedService

log = Logger()


class _Listening(txpostgres.Connection):  # type: ignore[misc]
    onLost: Callable[[], None] = staticmethod(lambda: None)

    def doRead(self) -> None:
        fd = self.fileno()
        try:
            super().doRead()
        except Exception:
            forget(self.reactor, self, fd)
            self.onLost()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.onLost()


class Notifier(StagedService):
    name = "notifier"

    def __init__(
        self,
        reactor: IReactorTime,
        dsn: Callable[[], str],
        events: EventBus,
        onResync: Callable[[], object] = lambda: None,
        maxDelay: float = 10.0,
        connectTimeout: float = 5.0,
    ) -> None:
        self.reactor = reactor
        self.dsn = dsn
        self.events = events
        self.onResync = onResync
        self.maxDelay = maxDelay
        self.connectTimeout = connectTimeout
        self.connection: _Listening | None = None
        self.listening = False
        self.received = 0
        self._listenedBefore = False
        self._stopping = False
        self._loop: Deferred[None] | None = None
        self._sleeping: Deferred[None] | None = None

    async def start(self) -> None:
        self._reconnect()

    def _reconnect(self) -> None:
        if self._loop is None and not self._stopping:
            self._loop = Deferred.fromCoroutine(self._connectLoop())
            self._loop.addErrback(lambda f: log.failure("listening failed", f))

    async def _connectLoop(self) -> None:
        backoff = backoffPolicy(0.5, self.maxDelay, factor=2.0)
        failures = 0
        try:
            while not self._stopping:
                try:
                    await self._listen()
                    return
                except Exception as e:
                    delay = backoff(failures)
                    failures += 1
                    log.warn("cannot listen for other masters ({why}); again in {delay:.1f} s",
                             why=str(e).strip() or type(e).__name__, delay=delay)  # fmt: skip
                if self._stopping:
                    return
                self._sleeping = deferLater(self.reactor, delay)
                try:
                    await self._sleeping
                except CancelledError:
                    return
                finally:
                    self._sleeping = None
        finally:
            self._loop = None

    async def _listen(self) -> None:
        connection = await connect(
            self.reactor,
            self.dsn(),
            lambda: _Listening(reactor=self.reactor),
            self.connectTimeout,
            application_name="masterd-listen",
        )
        connection.onLost = lambda: self._lost(connection)
        connection.addNotifyObserver(self._heard)
        await connection.runOperation(f"LISTEN {CHANNEL}")
        self.connection = connection
        again = self._listenedBefore
        self.listening = self._listenedBefore = True
        log.info("listening for other masters")
        if again:
            # Whatever was announced while we were deaf is gone: look again.
            self.onResync()

    def _lost(self, connection: _Listening) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.listening = False
        if not self._stopping:
            log.warn("lost the listening connection; reconnecting")
            self._reconnect()

    def _heard(self, notify: Any) -> None:
        self.received += 1
        try:
            origin, events = decode(notify.payload)
        except (ValueError, KeyError, IndexError, TypeError):
            log.warn("unreadable notification: {payload!r}", payload=notify.payload[:200])
            return
        if origin and origin == self.events.origin:
            return  # our own: already published here
        for event in events:
            self.events.publish(event)

    async def stop(self) -> None:
        self._stopping = True
        if self._sleeping is not None:
            self._sleeping.cancel()
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass
