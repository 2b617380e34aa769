"""
Preemption and stall timeouts: the choice over a real database (gap,
runtime, order, fit, the restart guard, two masters at once), the scheduler
in memory on a Clock (a farm full of preemptible work, urgent work arriving,
no thrashing, off by default), the configuration, and a real farm: a master
process and reference agents.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.config import ConfigError, parseConfig
from masterd.db import Batcher, Transaction
from masterd.events import TaskCanceled
from masterd.jobs import lifecycle
from masterd.scheduler import (
    PreemptionSettings,
    Scheduler,
    SchedulerSettings,
    stallTimeouts,
)
from masterd.scheduler.preemption import Preempted, choose, preempt

from ._process import MasterProcess
from .test_e2e import ADMIN, AgentProcess, farmConfig
from .test_talkback import Base

T0 = 1_800_000_000.0
ON = PreemptionSettings(enabled=True)


def agentID(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Farm(Base):
    async def join(self, agent: str, **fields: Any) -> tuple[Any, Any]:
        """
        A simulated agent connected with these hello fields (by default 16
        cpus, 64 GB, 1 GPU, tags linux and gpu), one task at a time.
        """
        fields.setdefault("max_tasks", 1)
        message = self.helloOf(agent)
        message["agent"].update(fields)
        connection, transport = self.connect()
        await self.say(connection, message)
        self.welcomed(agent, transport)
        return connection, transport

    async def runOn(self, job: dict[str, Any], agent: str, at: float, index: int = 0) -> int:
        """
        Assign a task of C{job} to C{agent} and report it running at C{at}.
        """
        pool = self.api.pool
        rows = await pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],)
        )
        taskID = rows[index][0]
        [a] = await pool.transaction(lambda txn: lifecycle.assign(txn, agent, [taskID], at))
        await pool.transaction(
            lambda txn: lifecycle.running(txn, agent, a.task_id, a.attempt, at=at)
        )
        return int(taskID)

    async def choose(self, now: float, settings: PreemptionSettings = ON) -> list[Preempted]:
        return await self.api.pool.transaction(lambda txn: choose(txn, now, settings))

    async def victims(self, now: float, settings: PreemptionSettings = ON) -> set[int]:
        return {p.task_id for p in await self.choose(now, settings)}


class ChoiceTests(Farm):
    async def test_gapRuntimeAndPreemptible(self) -> None:
        api = await self.setUpTalkback()
        a = agentID(0)
        await self.join(a)
        low = await api.submit(frames="1", priority=30, preemptible=True)
        task = await self.runOn(low, a, T0)
        high = await api.submit(frames="1", priority=49)
        self.assertEqual(await self.choose(T0 + 3600), [], "a gap of 19")
        await api.ok("PATCH", high["href"], {"priority": 50})
        self.assertEqual(await self.choose(T0 + 59), [], "ran for 59 s")
        self.assertEqual(await self.choose(T0 + 60), [Preempted(a, task, 1, high["id"])])
        wide = PreemptionSettings(enabled=True, priority_gap=21, min_runtime_s=10)
        self.assertEqual(await self.choose(T0 + 60, wide), [])
        await api.ok("PATCH", low["href"], {"preemptible": False})
        self.assertEqual(await self.choose(T0 + 3600), [])

    async def test_order(self) -> None:
        """
        Lowest priority first, then the most recently started; at most one
        attempt for each waiting task.
        """
        api = await self.setUpTalkback()
        agents = [agentID(i) for i in range(4)]
        for a in agents:
            await self.join(a)
        lowest = await api.submit(frames="1", priority=5, preemptible=True)
        low = await api.submit(frames="1-3", priority=10, preemptible=True)
        first = await self.runOn(low, agents[0], T0)
        newest = await self.runOn(low, agents[1], T0 + 20, 1)
        middle = await self.runOn(low, agents[2], T0 + 10, 2)
        bottom = await self.runOn(lowest, agents[3], T0)
        high = await api.submit(frames="1", priority=90)
        self.assertEqual(await self.victims(T0 + 100), {bottom})
        await api.ok("POST", f"{high['href']}/cancel")
        await api.submit(frames="1-3", priority=90)
        self.assertEqual(await self.victims(T0 + 100), {bottom, newest, middle})
        await api.submit(frames="1-10", priority=80)
        self.assertEqual(await self.victims(T0 + 100), {bottom, newest, middle, first})

    async def test_onlyWhatCannotBePlaced(self) -> None:
        """
        A task that a free slot anywhere can take preempts nothing; one
        that no agent could take even when free preempts nothing either; a
        task that only one agent can take preempts there.
        """
        api = await self.setUpTalkback()
        busy, idle, other = agentID(0), agentID(1), agentID(2)
        await self.join(busy, tags=["linux", "maya"])
        await self.join(idle)
        await self.join(other)
        low = await api.submit(frames="1-2", priority=10, preemptible=True)
        onBusy = await self.runOn(low, busy, T0)
        await self.runOn(low, other, T0 + 5, 1)
        high = await api.submit(frames="1", priority=90)
        self.assertEqual(await self.choose(T0 + 100), [], "the idle agent takes it")
        await api.ok("POST", f"{high['href']}/cancel")
        big = await api.submit(frames="1", priority=90, requirements={"cpus": 32})
        self.assertEqual(await self.choose(T0 + 100), [], "too big for any agent")
        await api.ok("POST", f"{big['href']}/cancel")
        await api.submit(frames="1", priority=90, requirements={"tags": ["maya"]})
        # Only the busy agent has the tag: its task goes, though the
        # other's started later.
        self.assertEqual(await self.victims(T0 + 100), {onBusy})

    async def test_resourcesOfTheAttempt(self) -> None:
        """
        The waiting task must fit once the attempt's slot and resources
        are free: a free slot without the cpus is not enough.
        """
        api = await self.setUpTalkback()
        a = agentID(0)
        await self.join(a, max_tasks=2, cpus=16)
        low = await api.submit(frames="1", priority=10, preemptible=True,
                               requirements={"cpus": 8, "gpus": 1})  # fmt: skip
        task = await self.runOn(low, a, T0)
        fits = await api.submit(frames="1", priority=90, requirements={"cpus": 8})
        self.assertEqual(await self.choose(T0 + 100), [], "the free slot has 8 cpus")
        await api.ok("POST", f"{fits['href']}/cancel")
        gpu = await api.submit(frames="1", priority=90, requirements={"gpus": 1})
        self.assertEqual(await self.victims(T0 + 100), {task}, "the only GPU is taken")
        await api.ok("POST", f"{gpu['href']}/cancel")
        await api.submit(frames="1", priority=90, requirements={"cpus": 12})
        self.assertEqual(await self.victims(T0 + 100), {task})

    async def test_restartGuard(self) -> None:
        """
        A task preempted once is not preempted again within min_runtime_s
        of its restart, even if its start reads earlier than the
        preemption (the two were timed by different masters' clocks).
        """
        api = await self.setUpTalkback()
        a = agentID(0)
        await self.join(a)
        low = await api.submit(frames="1", priority=10, preemptible=True)
        task = await self.runOn(low, a, T0)
        await api.pool.query(
            "UPDATE tasks SET preempted_at = %s WHERE id = %s", (ts(T0 + 30), task)
        )
        await api.submit(frames="1", priority=90)
        self.assertEqual(await self.choose(T0 + 89), [])
        self.assertEqual(await self.victims(T0 + 90), {task})

    async def test_preemptRecords(self) -> None:
        """
        The attempt is preempted, the task queued again with no failure
        counted, and its preemption time kept; a later attempt of the task
        is assigned as usual.
        """
        api = await self.setUpTalkback()
        a = agentID(0)
        await self.join(a)
        low = await api.submit(frames="1", priority=10, preemptible=True, max_retries=0)
        task = await self.runOn(low, a, T0)
        high = await api.submit(frames="1", priority=90)
        done = await api.pool.transaction(lambda txn: preempt(txn, T0 + 61, ON))
        self.assertEqual(done, [Preempted(a, task, 1, high["id"])])
        document = await api.ok("GET", f"/api/v1/tasks/{task}")
        self.assertEqual((document["state"], document["agent"]), ("queued", None))
        [attempt] = (await api.ok("GET", document["attempts"]))["items"]
        self.assertEqual(attempt["state"], "preempted")
        self.assertEqual(attempt["error"], f"preempted by job {high['id']}")
        self.assertIsNotNone(attempt["finished_at"])
        rows = await api.pool.query(
            "SELECT failures, preempted_at FROM tasks WHERE id = %s", (task,)
        )
        self.assertEqual(rows, [(0, ts(T0 + 61))])
        job = await api.ok("GET", low["href"])
        self.assertEqual((job["state"], job["tasks"]["queued"]), ("queued", 1))
        # Nothing more to preempt: the freed slot counts as free.
        self.assertEqual(await api.pool.transaction(lambda txn: preempt(txn, T0 + 62, ON)), [])

    async def test_twoMastersAtOnce(self) -> None:
        """
        Two masters' sweeps at the same moment: one preempts, the other
        finds the preemption lock taken and preempts nothing; a sweep after
        the first commits sees its freed slot and preempts nothing either.
        """
        api = await self.setUpTalkback()
        for i in range(3):
            await self.join(agentID(i))
        low = await api.submit(frames="1-3", priority=10, preemptible=True)
        for i in range(3):
            await self.runOn(low, agentID(i), T0 + i, i)
        await api.submit(frames="1", priority=90)
        gate: Deferred[None] = Deferred()
        inside: Deferred[None] = Deferred()

        async def first(txn: Transaction) -> list[Preempted]:
            found = await preempt(txn, T0 + 100, ON)
            inside.callback(None)
            await gate
            return found

        one = Deferred.fromCoroutine(api.pool.transaction(first))
        await inside
        self.assertEqual(await api.pool.transaction(lambda txn: preempt(txn, T0 + 100, ON)), [])
        gate.callback(None)
        self.assertEqual(len(await one), 1)
        self.assertEqual(await api.pool.transaction(lambda txn: preempt(txn, T0 + 101, ON)), [])

    async def test_stallTimeouts(self) -> None:
        """
        An attempt silent for its stall_timeout_s (since its last log line,
        or its start) fails as stalled; retries apply; a layer's own value
        counts, and a layer without one never stalls.
        """
        api = await self.setUpTalkback()
        job = await api.submit(frames="1-3", stall_timeout_s=30, max_retries=1)
        layered = await api.ok("POST", "/api/v1/jobs", {"title": "layers", "layers": [
            {"name": "quiet", "command": ["x"], "frames": "1", "stall_timeout_s": 10},
            {"name": "free", "command": ["x"], "frames": "1"},
        ]}, 201)  # fmt: skip
        agent = agentID(0)
        silent = await self.runOn(job, agent, T0)
        early = await self.runOn(job, agent, T0, 1)
        chatty = await self.runOn(job, agent, T0, 2)
        quiet = await self.runOn(layered, agent, T0)
        free = await self.runOn(layered, agent, T0, 1)
        for task, line, at in ((early, 0, 20), (chatty, 0, 25), (chatty, 1, 40)):
            await api.pool.query(
                "INSERT INTO task_logs (task_id, attempt, first_line, lines, at)"
                " VALUES (%s, 1, %s, '{x}', %s)",
                (task, line, ts(T0 + at)),
            )

        async def stalled(now: float) -> set[int]:
            found = await api.pool.transaction(lambda txn: stallTimeouts(txn, now, 3))
            return {t for _, t, _ in found}

        self.assertEqual(await stalled(T0 + 9), set())
        self.assertEqual(await stalled(T0 + 11), {quiet})
        self.assertEqual(await stalled(T0 + 31), {silent})
        self.assertEqual(await stalled(T0 + 51), {early})
        self.assertEqual(await stalled(T0 + 69), set())
        self.assertEqual(await stalled(T0 + 71), {chatty})
        self.assertEqual(await stalled(T0 + 10**6), set())
        rows = await api.pool.query(
            "SELECT state, failures, error FROM tasks WHERE id = %s", (silent,)
        )
        self.assertEqual(rows, [("queued", 1, "stalled: no output for 30 s")])
        [attempt] = (await api.ok("GET", f"/api/v1/tasks/{silent}/attempts"))["items"]
        self.assertEqual((attempt["state"], attempt["error"]),
                         ("failed", "stalled: no output for 30 s"))  # fmt: skip
        document = await api.ok("GET", f"/api/v1/tasks/{free}")
        self.assertEqual(document["state"], "running")
        blocklist = await api.pool.query(
            "SELECT failures FROM job_blocklist WHERE job_id = %s", (job["id"],)
        )
        self.assertEqual(blocklist, [(3,)])


class SweepTests(Farm):
    async def setUpScheduler(self, **settings: Any) -> Scheduler:
        api = await self.setUpTalkback()
        self.batcher = Batcher(api.pool)
        self.registry.store._batcher = self.batcher
        self.scheduler = Scheduler(
            self.batcher, self.registry, api.events, self.clock, SchedulerSettings(**settings)
        )
        await self.scheduler.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.scheduler.stop()))
        self.canceled: list[TaskCanceled] = []
        api.events.subscribe(TaskCanceled, self.canceled.append)
        return self.scheduler

    async def settle(self) -> None:
        for _ in range(200):
            self.clock.advance(0)
            if not self.scheduler.busy and not self.batcher._running:
                await deferLater(reactor, 0.01)
                self.clock.advance(0)
                if not self.scheduler.busy and not self.batcher._running:
                    return
            await deferLater(reactor, 0.01)

    async def until(self, seconds: float, connections: list[Any]) -> None:
        """
        Advance the clock to C{seconds}, sweep by sweep, agents alive.
        """
        while self.clock.seconds() < seconds:
            self.clock.advance(min(5, seconds - self.clock.seconds()))
            for c in connections:
                c.pongReceived(b"")
            await self.settle()

    def messages(self, transport: Any, kind: str) -> list[dict[str, Any]]:
        return [m for m in transport.take() if m["type"] == kind]

    def assigned(self, transport: Any) -> list[dict[str, Any]]:
        return [t for m in self.messages(transport, "assign") for t in m["tasks"]]

    async def report(self, connection: Any, task: dict[str, Any], state: str, **extra: Any) -> None:
        message = {"type": "task_update", "task_id": task["task_id"],
                   "attempt": task["attempt"], "state": state, **extra}  # fmt: skip
        await self.say(connection, message)
        await self.settle()

    async def fullFarm(self, agents: int = 2) -> tuple[list[Any], list[Any], dict[str, Any]]:
        """
        C{agents} agents running a preemptible job's tasks, one each, from 0 s.
        """
        farm = [await self.join(agentID(i)) for i in range(agents)]
        low = await self.api.submit(frames="1-4", priority=10, preemptible=True, max_retries=0)
        await self.settle()
        tasks = []
        for connection, transport in farm:
            [task] = self.assigned(transport)
            await self.report(connection, task, "running")
            tasks.append(task)
        return [c for c, _ in farm], [t for _, t in farm], low | {"running": tasks}

    async def test_urgentWorkGetsTheFarm(self) -> None:
        """
        A preemptible job fills the farm; an urgent job arrives: at the
        first sweep after min_runtime_s its tasks take the agents, the
        preempted attempts are recorded as such and counted as no failure,
        and their tasks complete later.
        """
        await self.setUpScheduler(preemption=ON)
        connections, transports, low = await self.fullFarm()
        high = await self.api.submit(frames="1-2", priority=90)
        await self.until(55, connections)
        self.assertEqual(self.canceled, [])
        await self.until(60, connections)
        self.assertEqual(
            sorted(self.canceled, key=lambda e: e.task_id),
            [TaskCanceled(t["task_id"], 1, agentID(i), "preempted")
             for i, t in enumerate(low["running"])],
        )  # fmt: skip
        # Counted by the master that preempted (its document and /metrics).
        self.assertEqual(self.scheduler.stats.snapshot()["preempted"], 2)
        urgents: list[dict[str, Any]] = []
        for connection, transport, task in zip(connections, transports, low["running"],
                                               strict=True):  # fmt: skip
            # Two more sweeps: the slot stays the stopping task's until the
            # agent says it ended.
            await self.until(self.clock.seconds() + 10, connections)
            sent = [m for m in transport.take() if m["type"] in ("assign", "cancel")]
            [cancel] = sent
            self.assertEqual((cancel["type"], cancel["task_id"], cancel["reason"]),
                             ("cancel", task["task_id"], "preempted"))  # fmt: skip
            # The agent stops it and says so, as the reference agent does:
            # its slot goes to the urgent work.
            await self.report(connection, task, "failed", message="stopped: preempted")
            [urgent] = self.assigned(transport)
            self.assertEqual(urgent["job_id"], high["id"])
            urgents.append(urgent)
        rows = await self.api.pool.query(
            "SELECT t.failures, a.state, a.error FROM tasks t JOIN task_attempts a"
            " ON a.task_id = t.id WHERE t.job_id = %s ORDER BY t.index",
            (low["id"],),
        )
        self.assertEqual(rows, [(0, "preempted", f"preempted by job {high['id']}")] * 2)
        # Everything completes: the urgent tasks, then all of the other job.
        for connection, urgent in zip(connections, urgents, strict=True):
            await self.report(connection, urgent, "running")
            await self.report(connection, urgent, "done", exit_code=0)
        self.assertEqual((await self.api.ok("GET", high["href"]))["state"], "done")
        pending = list(zip(connections, transports, strict=True))
        finished = 0
        for _ in range(10):
            for connection, transport in pending:
                for task in self.assigned(transport):
                    await self.report(connection, task, "running")
                    await self.report(connection, task, "done", exit_code=0)
                    finished += 1
            await self.until(self.clock.seconds() + 5, connections)
        self.assertEqual(finished, 4)
        job = await self.api.ok("GET", low["href"])
        self.assertEqual((job["state"], job["tasks"]["done"]), ("done", 4))

    async def test_noThrashing(self) -> None:
        """
        A task preempted once, restarted, is not preempted again within
        min_runtime_s of its restart.
        """
        await self.setUpScheduler(preemption=ON)
        connections, transports, low = await self.fullFarm(agents=1)
        [connection], [transport] = connections, transports
        [task] = low["running"]
        await self.api.submit(frames="1", priority=90)
        await self.until(60, connections)
        await self.report(connection, task, "failed", message="stopped: preempted")
        [urgent] = self.assigned(transport)
        await self.until(65, connections)
        await self.report(connection, urgent, "running")
        await self.report(connection, urgent, "done", exit_code=0)
        # Restarted at 65 s: the preempted task comes back first (index 0).
        [again] = self.assigned(transport)
        self.assertEqual((again["task_id"], again["attempt"]), (task["task_id"], 2))
        await self.report(connection, again, "running")
        await self.api.submit(frames="1", priority=90)
        self.canceled.clear()
        await self.until(120, connections)
        self.assertEqual(self.canceled, [])
        await self.until(125, connections)
        self.assertEqual(self.canceled, [TaskCanceled(task["task_id"], 2, agentID(0), "preempted")])

    async def test_offByDefault(self) -> None:
        await self.setUpScheduler()
        connections, transports, _ = await self.fullFarm()
        await self.api.submit(frames="1-2", priority=90)
        await self.until(300, connections)
        self.assertEqual(self.canceled, [])
        self.assertEqual([self.messages(t, "cancel") for t in transports], [[], []])


class ConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        p = parseConfig({"database": {"dsn": "x"}}, environ={}).scheduler.preemption
        self.assertEqual((p.enabled, p.priority_gap, p.min_runtime_s), (False, 20, 60.0))

    def test_values(self) -> None:
        raw = {"database": {"dsn": "x"}, "scheduler": {"preemption": {
            "enabled": True, "priority_gap": 30, "min_runtime_s": 5}}}  # fmt: skip
        p = parseConfig(raw, environ={}).scheduler.preemption
        self.assertEqual((p.enabled, p.priority_gap, p.min_runtime_s), (True, 30, 5.0))

    def test_problems(self) -> None:
        raw = {"database": {"dsn": "x"}, "scheduler": {"preemption": {
            "enabled": "yes", "priority_gap": 0, "min_runtime_s": -1, "gap": 3}}}  # fmt: skip
        with self.assertRaises(ConfigError) as caught:
            parseConfig(raw, source="m.yaml", environ={})
        self.assertEqual(
            caught.exception.lines,
            [
                "m.yaml: scheduler.preemption.enabled: must be true or false, not a string",
                "m.yaml: scheduler.preemption.priority_gap: must be at least 1, not 0",
                "m.yaml: scheduler.preemption.min_runtime_s: must be at least 0.0, not -1",
                "m.yaml: scheduler.preemption.gap: is not a known key",
            ],
        )


class FarmTests(TestCase):
    """
    A real master and reference agents.
    """

    timeout = 240

    async def setUpFarm(self, agents: int = 2, **scheduler: Any) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        config = farmConfig(
            self.directory, scheduler={"sweep_s": 0.5, "assign_timeout_s": 10, **scheduler}
        )
        self.master = MasterProcess(config, self.directory)
        self.addCleanup(self.master.kill)
        port = await self.master.waitForPort()
        self.base = f"http://127.0.0.1:{port}"
        await self.waitFor(lambda: self.call("GET", "/readyz"), lambda r: r[0] == 200)
        for i in range(agents):
            agent = AgentProcess(self.directory, f"agent{i}", self.base)
            self.addCleanup(agent.stop)
        await self.waitFor(
            lambda: self.call("GET", "/api/v1/agents?state=idle"),
            lambda r: len(r[1]["items"]) == agents,
        )

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        import treq

        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        response = await treq.request(
            method, self.base + path, headers={"Authorization": [f"Bearer {ADMIN}"]},
            persistent=False, **kwargs,
        )  # fmt: skip
        content = await response.content()
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    async def get(self, path: str) -> Any:
        code, body = await self.call("GET", path)
        self.assertEqual(code, 200, body)
        return body

    async def submit(self, **job: Any) -> dict[str, Any]:
        code, body = await self.call("POST", "/api/v1/jobs", job)
        self.assertEqual(code, 201, body)
        return dict(body)

    async def waitFor(self, fetch: Any, done: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await fetch()
            if done(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last: {result}\n{self.master.log()[-3000:]}")
            await deferLater(reactor, 0.2)

    async def attempts(self, jobID: int) -> list[dict[str, Any]]:
        tasks = await self.get(f"/api/v1/jobs/{jobID}/tasks")
        found = []
        for task in tasks["items"]:
            found.extend((await self.get(task["attempts"]))["items"])
        return found

    async def test_preemption(self) -> None:
        await self.setUpFarm(preemption={"enabled": True, "min_runtime_s": 2})
        # The first attempts of frames 1 and 2 would run for a minute; any
        # other ends at once.
        long = (
            'if [ "$MASTERD_ATTEMPT" = 1 ] && [ {frame} -le 2 ]; then sleep 60; fi;'
            " echo frame {frame}"
        )
        low = await self.submit(title="low", command=["sh", "-c", long], frames="1-3",
                                priority=10, preemptible=True, max_retries=0)  # fmt: skip
        await self.waitFor(lambda: self.get(low["href"]), lambda j: j["tasks"]["running"] == 2)
        high = await self.submit(title="high", command=["sh", "-c", "sleep 1; echo urgent"],
                                 frames="1-2", priority=90)  # fmt: skip
        submitted = time.monotonic()
        await self.waitFor(
            lambda: self.get(high["href"]),
            lambda j: j["tasks"]["running"] + j["tasks"]["done"] == 2,
            timeout=20,
        )
        # min_runtime_s, a sweep, the agents stopping their processes and the
        # claim, with room for a slow machine: well within the minute the
        # low tasks would otherwise hold the agents.
        self.assertLess(time.monotonic() - submitted, 15)
        await self.waitFor(lambda: self.get(high["href"]), lambda j: j["state"] == "done")
        job = await self.waitFor(lambda: self.get(low["href"]), lambda j: j["state"] == "done")
        self.assertEqual(job["tasks"]["done"], 3)
        attempts = await self.attempts(low["id"])
        preempted = [a for a in attempts if a["state"] == "preempted"]
        self.assertEqual(len(preempted), 2, attempts)
        for a in preempted:
            self.assertEqual(a["error"], f"preempted by job {high['id']}")
        self.assertEqual(sorted(a["state"] for a in attempts if a["state"] != "preempted"),
                         ["done"] * 3)  # fmt: skip

    async def test_stall(self) -> None:
        await self.setUpFarm()
        # Silent for a minute on its first attempt, at once done after.
        silent = 'if [ "$MASTERD_ATTEMPT" = 1 ]; then sleep 60; fi; echo ok'
        chatty = "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.5; done"
        quiet = await self.submit(title="quiet", command=["sh", "-c", silent], frames="1",
                                  stall_timeout_s=2, max_retries=1)  # fmt: skip
        talking = await self.submit(title="talking", command=["sh", "-c", chatty], frames="1",
                                    stall_timeout_s=2, max_retries=0)  # fmt: skip
        for job in (quiet, talking):
            await self.waitFor(lambda j=job: self.get(j["href"]), lambda j: j["state"] == "done")
        stalled = await self.attempts(quiet["id"])
        self.assertEqual(
            [(a["state"], a["error"]) for a in stalled],
            [("failed", "stalled: no output for 2 s"), ("done", None)],
        )
        self.assertEqual([a["state"] for a in await self.attempts(talking["id"])], ["done"])
