"""
The service tree: order, asynchronous start, fatal errors, stop.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase

from masterd.config import parseConfig
from masterd.service import FatalStartError, MasterService, StagedService
from masterd.tap import buildMaster


class Recording(StagedService):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.gate: Deferred[None] | None = None
        self.failWith: Exception | None = None

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.gate is not None:
            await self.gate
        if self.failWith is not None:
            raise self.failWith
        self.log.append(f"started {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


class MasterServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.running = True
        self.log: list[str] = []
        self.root = MasterService(self.reactor)
        self.a = Recording("a", self.log)
        self.b = Recording("b", self.log)
        self.c = Recording("c", self.log)
        for s in (self.a, self.b, self.c):
            s.setServiceParent(self.root)

    def test_inOrderOneAfterAnother(self) -> None:
        self.b.gate = Deferred()
        self.root.startService()
        self.assertEqual(self.log, ["start a", "started a", "start b"])
        self.b.gate.callback(None)
        self.assertEqual(
            self.log, ["start a", "started a", "start b", "started b", "start c", "started c"]
        )
        del self.log[:]
        d = self.root.stopService()
        self.successResultOf(d)
        self.assertEqual(self.log, ["stop c", "stop b", "stop a"])

    def test_stopWhileStarting(self) -> None:
        """
        A stop during a slow start waits for that child, then stops only what
        had started, in reverse.
        """
        self.b.gate = Deferred()
        self.root.startService()
        d = self.root.stopService()
        self.assertNoResult(d)
        self.b.gate.callback(None)
        self.successResultOf(d)
        self.assertEqual(
            self.log, ["start a", "started a", "start b", "started b", "stop b", "stop a"]
        )

    def test_fatalStartError(self) -> None:
        """
        A fatal start error is logged, stops the reactor, and sets a non-zero
        exit code; the children after it never start.
        """
        self.b.failWith = FatalStartError("port 8080 is taken")
        self.root.startService()
        self.assertEqual(self.log, ["start a", "started a", "start b"])
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(self.root.exitCode, 1)
        self.successResultOf(self.root.stopService())
        self.assertEqual(self.log[-1], "stop a")

    def test_unexpectedStartError(self) -> None:
        self.a.failWith = RuntimeError("surprise")
        self.root.startService()
        self.assertEqual(self.root.exitCode, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_onlyStagedChildren(self) -> None:
        from twisted.application.service import Service

        self.assertRaises(TypeError, self.root.addService, Service())


class TreeTests(SynchronousTestCase):
    def test_dependencyOrder(self) -> None:
        config = parseConfig({"database": {"embedded": {"data_dir": "/tmp/x"}}}, environ={})
        master = buildMaster(config, MemoryReactorClock())
        self.assertEqual(
            [s.name for s in master.root],
            [
                "embedded-postgres",
                "database",
                "stats",
                "http",
                "events",
                "talkback",
                "scheduler",
                "notifier",
                "cluster",
                "history",
                "scheduler.learn",
                "retention",
                "webhooks",
            ],
        )
        config = parseConfig({"database": {"dsn": "dbname=x"}}, environ={})
        master = buildMaster(config, MemoryReactorClock())
        self.assertEqual(
            [s.name for s in master.root],
            [
                "database",
                "stats",
                "http",
                "events",
                "talkback",
                "scheduler",
                "notifier",
                "cluster",
                "history",
                "scheduler.learn",
                "retention",
                "webhooks",
            ],
        )


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """
        twistd finds the masterd plugin through twisted.plugins.
        """
        from twisted.application.service import IServiceMaker

        from twisted import plugins

        found = {p.tapname: p for p in getPlugins(IServiceMaker, plugins)}
        self.assertIn("masterd", found)
        plugin = found["masterd"]
        self.assertTrue(IPlugin.providedBy(plugin))
        self.assertEqual(plugin.options.__module__, "masterd.tap")


class GarbageCollectorTests(SynchronousTestCase):
    def test_tuned(self) -> None:
        """
        The master raises the young generations' thresholds at once, and
        freezes what its start made once the reactor runs.
        """
        import gc

        from masterd.tap import GC_THRESHOLDS, tuneGarbageCollector

        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        reactor = MemoryReactorClock()
        tuneGarbageCollector(reactor)
        self.assertEqual(gc.get_threshold(), (*GC_THRESHOLDS, before[2]))
        self.assertEqual(reactor.whenRunningHooks, [(gc.freeze, (), {})])
