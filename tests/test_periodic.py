"""
Periodic loops survive anything they raise, and every loop of a master is
one of them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from masterd.config import parseConfig
from masterd.service import Periodic
from masterd.stats import MasterStats
from masterd.tap import buildMaster


class Boom(Exception):
    pass


def failingOnce(calls: list[str]) -> Any:
    def f() -> None:
        calls.append("run")
        if len(calls) == 1:
            raise Boom("the first run")

    return f


class PeriodicTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = MasterStats(now=self.clock.seconds)
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_survivesAnException(self) -> None:
        calls: list[str] = []
        loop = Periodic("test.loop", failingOnce(calls), 5.0, self.clock, self.stats)
        loop.start()
        self.clock.advance(5)
        self.assertEqual((loop.runs, loop.failures), (1, 1))
        self.assertTrue(loop.running)
        self.clock.advance(5)
        self.assertEqual((loop.runs, loop.failures, calls), (2, 1, ["run", "run"]))
        self.flushLoggedErrors(Boom)
        # Logged with its traceback, and counted where operators look.
        failures = [e for e in self.logged if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["log_level"], LogLevel.critical)
        self.assertEqual(failures[0]["loop"], "test.loop")
        snapshot = self.stats.snapshot()
        self.assertEqual(snapshot["exceptions"]["total"], 1)  # type: ignore[index]
        self.assertEqual(snapshot["exceptions"]["recent"][0]["route"], "loop test.loop")  # type: ignore[index]
        (row,) = snapshot["loops"]  # type: ignore[misc]
        self.assertEqual(
            row,
            {"name": "test.loop", "interval_s": 5.0, "running": True, "runs": 2, "failures": 1,
             "last_failure_at": "1970-01-01T00:00:05.000Z"},
        )  # fmt: skip

    def test_asyncFailure(self) -> None:
        gate: Deferred[None] = Deferred()
        runs: list[int] = []

        async def f() -> None:
            runs.append(1)
            await gate
            raise Boom("later")

        loop = Periodic("test.async", f, 1.0, self.clock, self.stats)
        loop.start()
        self.clock.advance(1)
        # Still running: the next tick waits for it (runs never overlap).
        self.clock.advance(1)
        self.assertEqual(len(runs), 1)
        stopped = loop.stop()
        self.assertNoResult(stopped)
        gate.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(loop.failures, 1)
        self.assertFalse(loop.running)
        self.flushLoggedErrors(Boom)

    def test_stopIdle(self) -> None:
        loop = Periodic("test.idle", lambda: None, 1.0, self.clock)
        loop.start()
        self.successResultOf(loop.stop())
        self.clock.advance(10)
        self.assertEqual(loop.runs, 0)


class MasterLoopTests(SynchronousTestCase):
    def test_everyLoopSurvives(self) -> None:
        """
        Each periodic loop of a master (flush, reap, ping, sweep, heartbeat)
        is a Periodic counted in /api/v1/master: made to raise once, it runs
        again at its next tick.
        """
        reactor = MemoryReactorClock()
        config = parseConfig({"database": {"dsn": "dbname=x"}}, environ={})
        master = buildMaster(config, reactor)
        names = sorted(loop.name for loop in master.stats.loops)
        self.assertEqual(
            names,
            ["cluster.heartbeat", "events.jobs", "history.rollup", "retention",
             "scheduler.learn", "scheduler.sweep", "talkback.flush", "talkback.ping",
             "talkback.reap", "webhooks.deliver"],
        )  # fmt: skip
        for loop in master.stats.loops:
            calls: list[str] = []
            loop.f = failingOnce(calls)
            loop.start()
            reactor.advance(loop.interval)
            reactor.advance(loop.interval)
            self.assertEqual(len(calls), 2, loop.name)
            self.assertEqual(loop.failures, 1, loop.name)
            self.assertTrue(loop.running, loop.name)
            loop.stop()
        self.assertEqual(len(self.flushLoggedErrors(Boom)), len(names))
        self.assertEqual(master.stats.exceptions.total, len(names))


class FailureType(SynchronousTestCase):
    def test_failureOfUnknownType(self) -> None:
        """
        The watcher is told even of a failure whose type it cannot name.
        """
        clock = Clock()
        stats = MasterStats(now=clock.seconds)
        loop = Periodic("x", lambda: None, 1.0, clock, stats)
        try:
            raise Boom("b")
        except Boom:
            stats.loopFailed(loop, Failure())
        self.assertEqual(stats.exceptions.total, 1)
