"""
The scheduler: eligibility and order, fair share, the blocklist, both
timeouts on a Clock, claims under concurrency, and the service end to end in
memory, over a real database.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from masterd.db import Batcher, Pool
from masterd.events import TaskCanceled
from masterd.jobs import lifecycle
from masterd.scheduler import (
    Capacity,
    Scheduler,
    SchedulerSettings,
    assignTimeouts,
    claim,
    claimMany,
    taskTimeouts,
)

from ._api import API
from .test_talkback import AGENT, OTHER, Base, update


def capacity(agent: str = AGENT, slots: int = 1, cpus: int = 64, ram: int = 10**6,
             gpus: int = 0, tags: tuple[str, ...] = (), blocklisted: bool = False,
             ) -> Capacity:  # fmt: skip
    return Capacity(agent, slots, cpus, ram, gpus, tags, blocklisted)


async def claimFor(api: API, cap: Capacity, at: float | None = None) -> list[lifecycle.Assignment]:
    return await api.pool.transaction(lambda txn: claim(txn, cap, at))


class ClaimTests(Base):
    async def test_manyAgentsAtOnce(self) -> None:
        """
        One claim for many alike agents fills every free slot, spread by
        fair share, each agent within its own capacity.
        """
        api = await self.setUpTalkback()
        a = await api.submit(frames="1-20")
        b = await api.submit(frames="1-20")
        agents = [capacity(agent=str(uuid.UUID(int=i + 1)), slots=2) for i in range(5)]
        result = await api.pool.transaction(lambda txn: claimMany(txn, agents))
        self.assertEqual(sorted(len(v) for v in result.values()), [2] * 5)
        jobs = [x.job_id for v in result.values() for x in v]
        self.assertEqual((jobs.count(a["id"]), jobs.count(b["id"])), (5, 5))
        tasks = [x.task_id for v in result.values() for x in v]
        self.assertEqual(len(set(tasks)), 10)

    async def test_eligibility(self) -> None:
        api = await self.setUpTalkback()
        paused = await api.submit(paused=True)
        parent = await api.submit(requirements={"cpus": 200})
        await api.submit(depends_on=[parent["id"]])  # waiting
        canceled = await api.submit()
        await api.ok("POST", f"{canceled['href']}/cancel")
        self.assertEqual(await claimFor(api, capacity(slots=4)), [])
        del paused
        cases: list[tuple[dict[str, Any], Capacity, bool]] = [
            ({"cpus": 8}, capacity(cpus=4), False),
            ({"cpus": 8}, capacity(cpus=8), True),
            ({"ram_mb": 9000}, capacity(ram=8000), False),
            ({"gpus": 1}, capacity(gpus=0), False),
            ({"gpus": 1}, capacity(gpus=2), True),
            ({"tags": ["linux", "maya"]}, capacity(tags=("linux",)), False),
            ({"tags": ["linux", "maya"]}, capacity(tags=("linux", "maya", "x")), True),
        ]
        for requirements, cap, eligible in cases:
            job = await api.submit(requirements=requirements, frames="1")
            claimed = await claimFor(api, cap)
            self.assertEqual([a.job_id for a in claimed], [job["id"]] if eligible else [],
                             requirements)  # fmt: skip
            if not eligible:
                await api.ok("POST", f"{job['href']}/cancel")

    async def test_resourcesAddUp(self) -> None:
        """
        Several free slots take only as many tasks as the resources allow.
        """
        api = await self.setUpTalkback()
        await api.submit(frames="1-5", requirements={"cpus": 6, "gpus": 1})
        claimed = await claimFor(api, capacity(slots=4, cpus=16, gpus=4))
        self.assertEqual(len(claimed), 2)
        self.assertEqual(claimed[0].requirements, (6, 0, 1))

    async def test_order(self) -> None:
        """
        Priority first; among equal priority, fair share; then the older job;
        then the task index.
        """
        api = await self.setUpTalkback()
        low = await api.submit(frames="1-3", priority=10)
        old = await api.submit(frames="1-3", priority=60)
        new = await api.submit(frames="1-3", priority=60)
        high = await api.submit(frames="1-2", priority=90)
        picks = []
        for i in range(10):
            [a] = await claimFor(api, capacity(agent=str(uuid.UUID(int=i + 1))))
            picks.append((a.job_id, a.frames[0]))
        self.assertEqual(
            picks,
            [
                (high["id"], 1), (high["id"], 2),
                (old["id"], 1), (new["id"], 1), (old["id"], 2), (new["id"], 2),
                (old["id"], 3), (new["id"], 3),
                (low["id"], 1), (low["id"], 2),
            ],
        )  # fmt: skip

    async def test_fairShare(self) -> None:
        """
        Two equal jobs and ten agents give five and five; a job of weight 2
        gets two tasks for each of a weight-1 job's.
        """
        api = await self.setUpTalkback()
        a = await api.submit(frames="1-20")
        b = await api.submit(frames="1-20")
        counts = {a["id"]: 0, b["id"]: 0}
        for i in range(10):
            [x] = await claimFor(api, capacity(agent=str(uuid.UUID(int=i + 1))))
            counts[x.job_id] += 1
        self.assertEqual(list(counts.values()), [5, 5])
        heavy = await api.submit(frames="1-20", weight=2, priority=80)
        light = await api.submit(frames="1-20", priority=80)
        counts = {heavy["id"]: 0, light["id"]: 0}
        for i in range(9):
            [x] = await claimFor(api, capacity(agent=str(uuid.UUID(int=i + 100))))
            counts[x.job_id] += 1
        self.assertEqual(list(counts.values()), [6, 3])
        # Several slots of one claim spread across equal jobs too.
        c = await api.submit(frames="1-20", priority=95)
        d = await api.submit(frames="1-20", priority=95)
        claimed = await claimFor(api, capacity(slots=4))
        self.assertEqual(sorted(x.job_id for x in claimed), [c["id"], c["id"], d["id"], d["id"]])

    async def test_blocklist(self) -> None:
        api = await self.setUpTalkback()
        job = await api.submit(frames="1-10", max_retries=10)
        for _ in range(3):
            [a] = await claimFor(api, capacity())
            outcome = await api.pool.transaction(
                lambda txn, a=a: lifecycle.failed(
                    txn, AGENT, a.task_id, a.attempt, 1, "x", blocklistAfter=3
                )
            )
            self.assertIs(outcome, lifecycle.Outcome.applied)
        # An agent that failed is claimed for with its blocklist in view.
        self.assertEqual(await claimFor(api, capacity(blocklisted=True)), [])
        self.assertEqual(len(await claimFor(api, capacity(agent=OTHER))), 1)
        doc = await api.ok("GET", job["href"])
        # No agents row here (the agent never said hello): no hostname.
        agent = {"id": AGENT, "href": f"/api/v1/agents/{AGENT}", "hostname": None}
        self.assertEqual(doc["blocklist"], [{"agent": agent, "failures": 3}])
        doc = await api.ok("POST", f"{job['href']}/blocklist/clear")
        self.assertEqual(doc["blocklist"], [])
        self.assertEqual(len(await claimFor(api, capacity(blocklisted=True))), 1)

    async def test_concurrentClaimers(self) -> None:
        """
        Many claimers at once, each on its own connection, never claim the
        same task; every task is claimed once.
        """
        api = await self.setUpTalkback()
        await api.submit(frames="1-200", chunk=1)
        pools = []
        for _ in range(6):
            pool = Pool(reactor, api.pool._dsn, minSize=1, maxSize=1)
            await pool.open()
            self.addCleanup(pool.close)
            pools.append(pool)

        async def worker(pool: Pool, index: int) -> list[int]:
            taken: list[int] = []
            agent = str(uuid.UUID(int=index + 1))
            while True:
                got = await pool.transaction(lambda txn: claim(txn, capacity(agent=agent, slots=3)))
                if not got:
                    return taken
                taken += [a.task_id for a in got]

        results = await gatherResults(
            [Deferred.fromCoroutine(worker(p, i)) for i, p in enumerate(pools)]
        )
        everything = [t for r in results for t in r]
        self.assertEqual(len(everything), 200)
        self.assertEqual(len(set(everything)), 200)
        self.assertTrue(all(len(r) > 0 for r in results), [len(r) for r in results])
        rows = await api.pool.query("SELECT count(*), count(DISTINCT task_id) FROM task_attempts")
        self.assertEqual(rows, [(200, 200)])


class TimeoutTests(Base):
    async def test_taskTimeout(self) -> None:
        api = await self.setUpTalkback()
        job = await api.submit(frames="1-2", task_timeout_s=600, max_retries=0)
        t0 = 1_800_000_000.0
        a, b = await claimFor(api, capacity(slots=2), at=t0)
        for x, started in ((a, t0), (b, t0 + 300)):
            await api.pool.transaction(
                lambda txn, x=x, s=started: lifecycle.running(
                    txn, AGENT, x.task_id, x.attempt, at=s
                )
            )
        self.assertEqual(await api.pool.transaction(lambda txn: taskTimeouts(txn, t0 + 599, 3)), [])
        timedOut = await api.pool.transaction(lambda txn: taskTimeouts(txn, t0 + 601, 3))
        self.assertEqual(timedOut, [(AGENT, a.task_id, a.attempt)])
        task = await api.ok("GET", f"/api/v1/tasks/{a.task_id}")
        self.assertEqual((task["state"], task["error"]), ("failed", "timeout"))
        self.assertEqual((await api.ok("GET", f"/api/v1/tasks/{b.task_id}"))["state"], "running")
        del job

    async def test_assignTimeout(self) -> None:
        api = await self.setUpTalkback()
        await api.submit(frames="1-2")
        t0 = 1_800_000_000.0
        a, b = await claimFor(api, capacity(slots=2), at=t0)
        await api.pool.transaction(
            lambda txn: lifecycle.running(txn, AGENT, b.task_id, b.attempt, at=t0 + 1)
        )
        self.assertEqual(
            await api.pool.transaction(lambda txn: assignTimeouts(txn, t0 - 1, t0 + 59)), []
        )
        requeued = await api.pool.transaction(lambda txn: assignTimeouts(txn, t0 + 1, t0 + 61))
        self.assertEqual(requeued, [(AGENT, a.task_id, a.attempt)])
        task = await api.ok("GET", f"/api/v1/tasks/{a.task_id}")
        self.assertEqual((task["state"], task["agent"]), ("queued", None))
        [attempt] = (await api.ok("GET", task["attempts"]))["items"]
        self.assertEqual(attempt["state"], "lost")


class ServiceTests(Base):
    async def setUpScheduler(self, **settings: Any) -> Scheduler:
        api = await self.setUpTalkback()
        self.batcher = Batcher(api.pool)
        self.registry.store._batcher = self.batcher
        self.scheduler = Scheduler(
            self.batcher, self.registry, api.events, self.clock, SchedulerSettings(**settings)
        )
        await self.scheduler.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.scheduler.stop()))
        return self.scheduler

    async def settle(self) -> None:
        """
        Let offers turn into claims: advance the clock and wait for the
        database, until nothing is pending.
        """
        for _ in range(200):
            self.clock.advance(0)
            if not self.scheduler.busy and not self.batcher._running:
                await deferLater(reactor, 0.01)
                self.clock.advance(0)
                if not self.scheduler.busy and not self.batcher._running:
                    return
            await deferLater(reactor, 0.01)

    def assigned(self, transport: Any) -> list[dict[str, Any]]:
        return [t for m in transport.take() if m["type"] == "assign" for t in m["tasks"]]

    async def test_welcomeThenWork(self) -> None:
        await self.setUpScheduler()
        job = await self.api.submit(frames="1-3", command=["render", "{frame}"])
        connection, transport = await self.joined()  # max_tasks 2
        await self.settle()
        tasks = self.assigned(transport)
        self.assertEqual([t["frames"] for t in tasks], [[1], [2]])
        self.assertEqual(tasks[0]["command"], ["render", "1"])
        self.assertEqual(tasks[0]["job_id"], job["id"])
        # Finishing one frees a slot: the next task comes at once.
        first = lifecycle.Assignment(tasks[0]["task_id"], tasks[0]["attempt"], job["id"], "",
                                     [], {}, None, [], None)  # fmt: skip
        await self.say(connection, update(first, "running"))
        await self.say(connection, update(first, "done", exit_code=0))
        await self.settle()
        self.assertEqual([t["frames"] for t in self.assigned(transport)], [[3]])
        self.assertEqual(self.scheduler.stats.assigned, 3)
        self.assertGreaterEqual(self.scheduler.stats.claims, 2)

    async def test_reportsAndClaimShareOneTransaction(self) -> None:
        """
        A running and a done sent back to back, and the claim for the slot
        the done frees, are written in one transaction: the agent's next
        task waits for one commit, not three.
        """
        await self.setUpScheduler()
        job = await self.api.submit(frames="1-3", command=["render", "{frame}"])
        connection, transport = await self.joined()  # max_tasks 2
        await self.settle()
        task, _ = self.assigned(transport)
        first = lifecycle.Assignment(task["task_id"], task["attempt"], job["id"], "", [], {},
                                     None, [], None)  # fmt: skip
        before = self.batcher.batches
        # Both in one turn of the reactor, as an agent's single write.
        connection.textMessageReceived(json.dumps(update(first, "running")))
        connection.textMessageReceived(json.dumps(update(first, "done", exit_code=0)))
        await connection.drained()
        await self.settle()
        [nextTask] = self.assigned(transport)
        self.assertEqual(nextTask["frames"], [3])
        self.assertEqual(self.batcher.batches - before, 1)
        done = await self.api.ok("GET", f"/api/v1/tasks/{first.task_id}")
        self.assertEqual(done["state"], "done")
        # The running report was folded into the done: its start is kept.
        self.assertIsNotNone(done["started_at"])
        self.assertLessEqual(done["started_at"], done["finished_at"])
        job = await self.api.ok("GET", f"/api/v1/jobs/{job['id']}")
        self.assertEqual(job["tasks"]["done"], 1)

    async def test_submittedWorkReachesIdleAgents(self) -> None:
        await self.setUpScheduler()
        _, first = await self.joined(AGENT)
        _, second = await self.joined(OTHER)
        await self.settle()
        self.assertEqual(self.assigned(first) + self.assigned(second), [])
        await self.api.submit(frames="1-3")
        await self.settle()
        self.assertEqual(len(self.assigned(first)) + len(self.assigned(second)), 3)

    async def test_disabledAndLimits(self) -> None:
        await self.setUpScheduler()
        _, transport = await self.joined()
        await self.api.ok("PATCH", f"/api/v1/agents/{AGENT}", {"enabled": False})
        await self.settle()
        await self.api.submit(frames="1-3")
        await self.settle()
        self.assertEqual(self.assigned(transport), [])
        changes = {"enabled": True, "limits": {"max_tasks": 1}}
        await self.api.ok("PATCH", f"/api/v1/agents/{AGENT}", changes)
        await self.settle()
        self.assertEqual(len(self.assigned(transport)), 1)

    async def test_releaseReachesOthers(self) -> None:
        await self.setUpScheduler()
        connection, transport = await self.joined(AGENT)
        parent = await self.api.submit(frames="1", priority=90)
        await self.settle()
        [task] = self.assigned(transport)
        _, other = await self.joined(OTHER)
        child = await self.api.submit(frames="1-3", depends_on=[parent["id"]])
        await self.settle()
        self.assertEqual(self.assigned(other), [])
        a = lifecycle.Assignment(task["task_id"], task["attempt"], parent["id"], "", [], {},
                                 None, [], None)  # fmt: skip
        await self.say(connection, update(a, "done"))
        await self.settle()
        got = self.assigned(transport) + self.assigned(other)
        self.assertEqual({t["job_id"] for t in got}, {child["id"]})
        self.assertEqual(len(got), 3)

    async def test_sweepTimesOut(self) -> None:
        await self.setUpScheduler(sweep_s=5, assign_timeout_s=60)
        canceled: list[TaskCanceled] = []
        self.api.events.subscribe(TaskCanceled, canceled.append)
        await self.api.submit(frames="1")
        connection, transport = await self.joined()
        await self.settle()
        [task] = self.assigned(transport)
        for _ in range(13):  # 65 s, never reported running
            self.clock.advance(5)
            connection.pongReceived(b"")  # alive all the same
            await self.settle()
        self.assertIn(TaskCanceled(task["task_id"], task["attempt"], AGENT,
                                   "not reported running in time"), canceled)  # fmt: skip
        self.assertEqual(transport.sent[0]["type"], "cancel")


class SlotRepairTests(ServiceTests):
    async def test_reportsDuringTheLoad(self) -> None:
        """
        An agent that reconnects with a task and reports it done before
        the scheduler has loaded its slots (the load read the task still
        running) is not left believed busy: it gets the queued work.
        """
        await self.setUpScheduler()
        await self.api.submit(frames="1-3", command=["render", "{frame}"])
        _, transport = await self.joined()  # max_tasks 2
        await self.settle()
        first, second = self.assigned(transport)
        # Written, but never heard by the scheduler: as when the load of a
        # reconnected agent's slots read them before the reports were.
        for task in (first, second):
            await self.api.pool.transaction(
                lambda txn, t=task: lifecycle.done(txn, AGENT, t["task_id"], t["attempt"])
            )
        self.assertEqual(len(self.scheduler.agents[AGENT].running), 2)
        # The sweep finds the difference, says so, and repairs it.
        self.clock.advance(5)
        await self.settle()
        self.assertEqual([t["frames"] for t in self.assigned(transport)], [[3]])
        self.assertEqual(self.scheduler.stats.slotRepairs, 1)
        self.flushLoggedErrors()

    async def test_freedBeforeTheLoad(self) -> None:
        """
        A final report heard while the agent's slots are being loaded frees
        its slot once they are, whatever the load read.
        """
        await self.setUpScheduler()
        await self.api.submit(frames="1-2")
        _, transport = await self.joined()
        await self.settle()
        first, _ = self.assigned(transport)
        # The task is still running in the database; its report is on its way.
        self.scheduler.taskFinished(AGENT, first["task_id"])
        self.scheduler.agentJoined(AGENT)
        await self.settle()
        self.assertNotIn(first["task_id"], self.scheduler.agents[AGENT].running)
        self.assertEqual(len(self.scheduler.agents[AGENT].running), 1)

    async def test_agreeingSlotsLeftAlone(self) -> None:
        await self.setUpScheduler()
        await self.api.submit(frames="1-2")
        _, transport = await self.joined()
        await self.settle()
        self.assertEqual(len(self.assigned(transport)), 2)
        self.clock.advance(5)
        await self.settle()
        self.assertEqual(self.scheduler.stats.slotRepairs, 0)
        self.assertEqual(len(self.scheduler.agents[AGENT].running), 2)
