"""
Hints between masters: NOTIFY in the transaction, LISTEN on a connection of
its own, listening again (and resynchronising) after that connection is lost.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from masterd.cluster import Notifier
from masterd.events import AgentChanged, EventBus, TaskCanceled, WorkAvailable
from masterd.jobs import JobStore

from .test_jobs_api import assignAll
from .test_talkback import AGENT, Base


class ListeningBase(Base):
    """
    Talkback tests with other masters' listeners on the same database.
    """

    async def until(self, condition: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("timed out")
            await deferLater(reactor, 0.02)

    async def listener(self, origin: str, resync: Any = lambda: None) -> tuple[Notifier, list[Any]]:
        bus = EventBus(origin=origin)
        heard: list[Any] = []
        for kind in (TaskCanceled, WorkAvailable, AgentChanged):
            bus.subscribe(kind, heard.append)
        notifier = Notifier(reactor, lambda: self.api.pool._dsn, bus, resync, maxDelay=0.2)
        await notifier.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(notifier.stop()))
        await self.until(lambda: notifier.listening)
        return notifier, heard


class NotifyTests(ListeningBase):
    async def test_hintsCrossMasters(self) -> None:
        api = await self.setUpTalkback()
        _, heardByOther = await self.listener("m2")
        _, heardBySelf = await self.listener("m1")
        m1 = JobStore(api.pool, EventBus(origin="m1"))
        job = await api.submit(frames="1-2")
        [a, _] = await assignAll(api, job["id"])
        await m1.cancelJob(job["id"])
        await self.until(lambda: any(isinstance(e, TaskCanceled) for e in heardByOther))
        cancels = [e for e in heardByOther if isinstance(e, TaskCanceled)]
        self.assertEqual(sorted(e.task_id for e in cancels), sorted([a.task_id, a.task_id + 1]))
        self.assertEqual(cancels[0].agent_id, AGENT)
        # A master ignores its own notifications: it published them already.
        self.assertEqual([e for e in heardBySelf if isinstance(e, TaskCanceled)], [])

    async def test_releaseAnnounced(self) -> None:
        """
        Work released by the database itself (a parent finished) is
        announced to every master.
        """
        api = await self.setUpTalkback()
        _, heard = await self.listener("m1")
        parent = await api.submit(frames="1")
        child = await api.submit(frames="1", depends_on=[parent["id"]])
        [a] = await assignAll(api, parent["id"])
        from masterd.jobs import lifecycle

        await api.pool.transaction(lambda txn: lifecycle.done(txn, AGENT, a.task_id, a.attempt))
        await self.until(lambda: WorkAvailable((child["id"],)) in heard)

    async def test_listensAgainAndResyncs(self) -> None:
        api = await self.setUpTalkback()
        resyncs: list[bool] = []
        notifier, heard = await self.listener("m2", lambda: resyncs.append(True))
        await api.pool.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'masterd-listen'"
        )
        await self.until(lambda: resyncs == [True], timeout=20)
        self.assertTrue(notifier.listening)
        await api.submit(frames="1")  # announced by the tests' own bus, origin ""
        await self.until(lambda: any(isinstance(e, WorkAvailable) for e in heard))
