"""
The service collection: children started one after another, asynchronously,
and stopped in the reverse order.

twistd ignores what C{startService} returns, and C{MultiService} starts its
children without waiting for each other. A master needs order: the embedded
PostgreSQL must be up before the pool connects, and on the way down the HTTP
site must close its connections before the pool drains. L{MasterService}
awaits each L{StagedService.start} in turn, and turns a fatal start error into
a logged message, a stopped reactor and a non-zero exit status.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class FatalStartError(Exception):
    """
    A start error with a message for a person; logged without a traceback.
    """


class StagedService(Service):
    """
    A child of L{MasterService}, started and stopped asynchronously, in order.
    """

    #: Called by a child that fails for good after starting (set by the parent).
    fatal: Callable[[Failure], None] = staticmethod(lambda reason: None)

    async def start(self) -> None:
        """
        Start; the next child starts only once this returns.
        """

    async def stop(self) -> None:
        """
        Stop, and return only once everything this child holds is released.
        """


class MasterService(MultiService):
    """
    The root of a master's services.
    """

    def __init__(self, reactor: IReactorCore) -> None:
        super().__init__()
        self._reactor = reactor
        self._started: list[StagedService] = []
        self._starting: Deferred[None] | None = None
        self.exitCode = 0
        self.failure: Failure | None = None

    def addService(self, service: Service) -> None:
        if not isinstance(service, StagedService):
            raise TypeError(f"{service!r} is not a StagedService")
        service.fatal = self._fatal
        super().addService(service)

    def startService(self) -> None:
        Service.startService(self)
        self._starting = Deferred.fromCoroutine(self._startAll())
        self._starting.addErrback(self._fatal)

    async def _startAll(self) -> None:
        for child in list(self):
            assert isinstance(child, StagedService)
            if not self.running:
                return
            await child.start()
            child.running = True
            self._started.append(child)
        log.info("master started")

    def _fatal(self, reason: Failure) -> None:
        if self.failure is not None:
            return
        self.failure = reason
        self.exitCode = 1
        if reason.check(FatalStartError):
            log.critical("cannot start: {message}", message=str(reason.value))
        else:
            log.failure("cannot start", reason)
        if self._reactor.running:
            self._reactor.stop()
        else:
            self._reactor.callWhenRunning(self._reactor.stop)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stopAll())

    async def _stopAll(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.called:
            # A child may be half-way through starting (the embedded database,
            # in a thread): let it finish, so that it can be stopped properly.
            await _settled(starting)
        while self._started:
            child = self._started.pop()
            child.running = False
            try:
                await child.stop()
            except Exception:
                log.failure("error stopping {name}", name=child.name)
        log.info("master stopped")

    def exitWithCode(self) -> None:
        """
        Exit the process with a non-zero status after a fatal start error.

        Registered with L{atexit} before anything else is, so it runs last:
        twistd itself has no way to exit with anything but 0 once the reactor
        has run.
        """
        if self.exitCode:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.exitCode)

    def registerExitCode(self) -> None:
        atexit.register(self.exitWithCode)


async def _settled(d: Deferred[None]) -> None:
    waiter: Deferred[None] = Deferred()

    def settle(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(settle)
    await waiter
