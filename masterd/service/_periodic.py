"""
Periodic work that survives anything it raises.

A bare C{LoopingCall} stops for good the first time its function raises, and
nothing restarts it: one unexpected error in the last-seen flush once
stopped every agent's last_seen. L{Periodic} is the one way the master runs
something every so often: each run's exception is logged with its traceback,
counted (in C{/api/v1/master}'s C{loops}, and among its exceptions), and the
next tick runs again as if nothing happened.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class LoopWatcher(Protocol):
    """
    Told of every loop and of each of its failures (L{MasterStats} is one).
    """

    def loopAdded(self, loop: Periodic) -> None: ...

    def loopFailed(self, loop: Periodic, failure: Failure) -> None: ...


class Periodic:
    """
    C{f} every C{interval} seconds of C{clock}, from L{start} to L{stop}; a
    run that has not finished when the next is due delays it (runs never
    overlap).
    """

    def __init__(
        self,
        name: str,
        f: Callable[[], Awaitable[object] | object],
        interval: float,
        clock: IReactorTime,
        watcher: LoopWatcher | None = None,
    ) -> None:
        self.name = name
        self.f = f
        self.interval = interval
        self.runs = 0
        self.failures = 0
        self.lastFailureAt: float | None = None
        self._clock = clock
        self._watcher = watcher
        self._loop = LoopingCall(self._once)
        self._loop.clock = clock
        self._current: Deferred[None] | None = None
        if watcher is not None:
            watcher.loopAdded(self)

    @property
    def running(self) -> bool:
        return bool(self._loop.running)

    def start(self, now: bool = False) -> None:
        if not self._loop.running:
            # Its Deferred fires only when stopped: _run never raises.
            self._loop.start(self.interval, now=now)

    def stop(self) -> Deferred[None]:
        """
        Stop ticking; the Deferred fires once the run in progress (if any)
        has finished.
        """
        if self._loop.running:
            self._loop.stop()
        done: Deferred[None] = Deferred()
        current = self._current
        if current is None or current.called:
            done.callback(None)
        else:
            current.addBoth(lambda _: done.callback(None))
        return done

    def _once(self) -> Deferred[None]:
        self._current = Deferred.fromCoroutine(self._run())
        return self._current

    async def _run(self) -> None:
        self.runs += 1
        try:
            result = self.f()
            if inspect.isawaitable(result):
                await result
        except Exception:
            failure = Failure()
            self.failures += 1
            self.lastFailureAt = self._clock.seconds()
            log.failure(
                "the {loop} loop failed; it runs again in {interval} s",
                failure,
                loop=self.name,
                interval=self.interval,
            )
            if self._watcher is not None:
                try:
                    self._watcher.loopFailed(self, failure)
                except Exception:
                    log.failure("could not count a failure of the {loop} loop", loop=self.name)
        finally:
            self._current = None
