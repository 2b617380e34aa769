"""
GPU placement: the claim's choice of devices (deterministic, in memory), the
reference agent's discovery with nvidia-smi and the environment it gives a
task, the claim over a real database across a master restart and an agent
whose devices change, and a farm of real processes where a fake nvidia-smi
reports four devices.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.agent import gpus
from masterd.agent.runner import Runner
from masterd.scheduler.claims import Capacity, _Candidate, _devices, _Job, _Ranking, _Share
from masterd.scheduler.service import AgentSlots, agentDevices, loadSlotsMany
from masterd.talkback.messages import Hello, parseMessage

from ._process import MasterProcess, call, until
from .test_e2e import ADMIN, AGENT, AGENT_TOKEN, farmConfig
from .test_restarts import freePort
from .test_talkback import AGENT as AGENT_ID
from .test_talkback import Base

# -- the claim, in memory ------------------------------------------------------------


def candidate(
    layerID: int, gpus: int = 0, memory: int = 0, queued: int = 10, priority: int = 50,
    cpus: int = 0,
) -> _Candidate:  # fmt: skip
    share = _Share(0, 1)
    job = _Job(layerID, priority, share, _Share(0, 1), None)
    return _Candidate(layerID, 0, job, cpus, 0, gpus, memory, queued, None, ())


def agent(
    devices: tuple[tuple[int, int], ...], slots: int = 8, gpus: int | None = None
) -> Capacity:
    return Capacity("a", slots, 64, 10**6, len(devices) if gpus is None else gpus, (), False,
                    devices)  # fmt: skip


FOUR = ((0, 8192), (1, 8192), (2, 24576), (3, 24576))


class DevicesTests(SynchronousTestCase):
    def test_bestFit(self) -> None:
        """
        The smallest devices that fit, lowest index first among equals, in
        index order; None when too few fit.
        """
        self.assertEqual(_devices(FOUR, 1, 0), ((0, 8192),))
        self.assertEqual(_devices(FOUR, 2, 0), ((0, 8192), (1, 8192)))
        self.assertEqual(_devices(FOUR, 1, 10000), ((2, 24576),))
        self.assertEqual(_devices(FOUR, 2, 8192), ((0, 8192), (1, 8192)))
        self.assertEqual(_devices(FOUR, 3, 0), ((0, 8192), (1, 8192), (2, 24576)))
        self.assertIsNone(_devices(FOUR, 3, 10000))
        self.assertIsNone(_devices(FOUR, 5, 0))
        self.assertIsNone(_devices((), 1, 0))
        self.assertEqual(_devices(((3, 24576), (1, 8192)), 2, 0), ((1, 8192), (3, 24576)))

    def test_pickDisjoint(self) -> None:
        """
        One agent, four devices: a 2-GPU task, then 1-GPU tasks; no device
        given twice, and no more GPUs than the agent has.
        """
        two, one = candidate(1, gpus=2, priority=60), candidate(2, gpus=1)
        picks = _Ranking([two, one], {}).pick(agent(FOUR))
        self.assertEqual(picks, [(1, 1, (0, 1)), (1, 1, (2, 3))])
        picks = _Ranking([candidate(2, gpus=1)], {}).pick(agent(FOUR))
        self.assertEqual([p[2] for p in picks], [(0,), (1,), (2,), (3,)])

    def test_tooManyGPUs(self) -> None:
        """
        A task needing more GPUs than the agent has (or has free) is never
        picked; a smaller one after it still is.
        """
        picks = _Ranking([candidate(1, gpus=5, priority=90), candidate(2, gpus=1)], {}).pick(
            agent(FOUR, slots=1)
        )
        self.assertEqual(picks, [(2, 2, (0,))])
        picks = _Ranking([candidate(1, gpus=3)], {}).pick(agent(FOUR[:2]))
        self.assertEqual(picks, [])

    def test_memory(self) -> None:
        """
        C{gpu_memory_mb}: only devices with that much, and the small devices
        stay for tasks that fit them. An agent that did not say what memory
        its GPUs have takes no task that needs some.
        """
        big, small = candidate(1, gpus=1, memory=16000, priority=60), candidate(2, gpus=1)
        picks = _Ranking([big, small], {}).pick(agent(FOUR))
        self.assertEqual([(p[0], p[2]) for p in picks],
                         [(1, (2,)), (1, (3,)), (2, (0,)), (2, (1,))])  # fmt: skip
        unknown = ((0, 0), (1, 0))
        self.assertEqual(_Ranking([candidate(1, gpus=1, memory=1)], {}).pick(agent(unknown)), [])
        self.assertEqual(_Ranking([candidate(1, gpus=1, memory=1)], {}).pick(agent(())), [])

    def test_countOnlyCapacity(self) -> None:
        """
        A capacity with a count and no devices (as other callers of the
        claim make them): its tasks get no indexes, and the count holds.
        """
        picks = _Ranking([candidate(1, gpus=1)], {}).pick(agent((), gpus=2))
        self.assertEqual(picks, [(1, 1, ()), (1, 1, ())])

    def test_noGPUTasks(self) -> None:
        """
        Tasks that need no GPU get none, and leave them all to those that do.
        """
        picks = _Ranking([candidate(1, priority=60), candidate(2, gpus=2)], {}).pick(
            agent(FOUR, slots=4)
        )
        self.assertEqual([(p[0], p[2]) for p in picks], [(1, ()), (1, ())] * 2)
        picks = _Ranking([candidate(1, queued=1, priority=60), candidate(2, gpus=2)], {}).pick(
            agent(FOUR, slots=4)
        )
        self.assertEqual([(p[0], p[2]) for p in picks], [(1, ()), (2, (0, 1)), (2, (2, 3))])

    def test_randomised(self) -> None:
        """
        Many agents and mixes of layers (seeded): every pick gets exactly
        the GPUs it needs, free ones of its agent with enough memory, none
        twice, and never more tasks than slots.
        """
        rng = random.Random(1414)
        for _ in range(300):
            sizes = [rng.choice((0, 4096, 8192, 24576, 49152)) for _ in range(rng.randint(0, 8))]
            devices = tuple((i * 2, m) for i, m in enumerate(sizes))
            busy = set(rng.sample([d[0] for d in devices], rng.randint(0, len(devices))))
            free = tuple(d for d in devices if d[0] not in busy)
            capacity = agent(free, slots=rng.randint(1, 6))
            candidates = [
                candidate(k, gpus=rng.randint(0, 4), memory=rng.choice((0, 0, 8000, 30000)),
                          queued=rng.randint(1, 5), priority=rng.randint(0, 3))
                for k in range(1, rng.randint(2, 6))
            ]  # fmt: skip
            wanted = {c.layer_id: (c.gpus, c.gpu_memory_mb) for c in candidates}
            picks = _Ranking(candidates, {}).pick(capacity)
            self.assertLessEqual(len(picks), capacity.slots)
            given = [i for p in picks for i in p[2]]
            self.assertEqual(len(given), len(set(given)), picks)
            memory = dict(free)
            for layerID, _, indexes in picks:
                count, mb = wanted[layerID]
                self.assertEqual(len(indexes), count, picks)
                self.assertTrue(all(i in memory and memory[i] >= mb for i in indexes), picks)


class SlotsTests(SynchronousTestCase):
    def slots(self, devices: tuple[tuple[int, int], ...], **running: Any) -> AgentSlots:
        return AgentSlots(
            agent_id="a", enabled=True, max_tasks=8, cpus=64, ram_mb=10**6, gpus=len(devices),
            tags=(), devices=devices, running={int(k[1:]): v for k, v in running.items()},
        )  # fmt: skip

    def test_busyDevicesAreNotFree(self) -> None:
        capacity = self.slots(FOUR, t1=(0, 0, 2, (1, 3))).capacity()
        self.assertEqual((capacity.gpus, capacity.devices), (2, ((0, 8192), (2, 24576))))

    def test_devicesWinOverTheCount(self) -> None:
        """
        A task recorded with more devices than its layer's gpus say now (the
        job's gpus patched while it runs): the free devices decide, so no
        task is ever handed out without devices, or with a busy one.
        """
        capacity = self.slots(FOUR[:2], t1=(0, 0, 1, (0, 1))).capacity()
        self.assertEqual((capacity.gpus, capacity.devices), (0, ()))
        self.assertEqual(_Ranking([candidate(1, gpus=1)], {}).pick(capacity), [])
        # And the other way: the count is lower, it holds.
        capacity = self.slots(FOUR, t1=(0, 0, 3, (0,))).capacity()
        self.assertEqual(capacity.gpus, 1)

    def test_devicesChangedAtReconnect(self) -> None:
        """
        The agent came back with fewer devices while a task runs on one that
        is gone: that task still counts, and only present, free devices go.
        """
        capacity = self.slots(FOUR[:3], t1=(0, 0, 1, (3,))).capacity()
        self.assertEqual((capacity.gpus, capacity.devices), (2, FOUR[:3]))
        picks = _Ranking([candidate(1, gpus=1)], {}).pick(capacity)
        self.assertEqual([p[2] for p in picks], [(0,), (1,)])

    def test_agentDevices(self) -> None:
        self.assertEqual(agentDevices(2, None), ((0, 0), (1, 0)))
        self.assertEqual(agentDevices(2, []), ((0, 0), (1, 0)))
        reported = [{"index": 3, "name": "x", "memory_mb": 8}, {"index": 1, "memory_mb": 4}]
        self.assertEqual(agentDevices(2, reported), ((1, 4), (3, 8)))


# -- the agent's side ------------------------------------------------------------------

SMI = """\
0, NVIDIA RTX A6000, 49140
1, NVIDIA GeForce RTX 4090, 24564
"""


def ran(stdout: str, code: int = 0, stderr: str = "") -> Callable[..., Any]:
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: Any) -> Any:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, code, stdout, stderr)

    run.calls = calls  # type: ignore[attr-defined]
    return run


class DiscoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(gpus.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def test_parse(self) -> None:
        self.assertEqual(
            gpus.parseDevices(SMI),
            [{"index": 0, "name": "NVIDIA RTX A6000", "memory_mb": 49140},
             {"index": 1, "name": "NVIDIA GeForce RTX 4090", "memory_mb": 24564}],
        )  # fmt: skip

    def test_parseOddOutput(self) -> None:
        """
        Warnings, blank lines, CRLF, memory not known, commas in a name,
        repeated or impossible indexes, a name too long: what can be read is
        kept, and nothing the master would refuse.
        """
        odd = (
            "WARNING: infoROM is corrupted at gpu 0000:41:00.0\r\n"
            "\r\n"
            " 2 ,  Tesla K80 , [N/A]\r\n"
            "0, Quadro, rev. B, 16384\n"
            "0, duplicate, 99\n"
            "-1, negative, 5\n"
            "5000, too high, 5\n"
            "x, not a number, 5\n"
            "3, Grid vGPU, [Not Supported]\n"
            "4, half, 8191.5\n"
            f"7, {'n' * 400}, 1\n"
            "No devices were found\n"
            "8, only two fields\n"
        )
        self.assertEqual(
            gpus.parseDevices(odd),
            [{"index": 0, "name": "Quadro, rev. B", "memory_mb": 16384},
             {"index": 2, "name": "Tesla K80", "memory_mb": 0},
             {"index": 3, "name": "Grid vGPU", "memory_mb": 0},
             {"index": 4, "name": "half", "memory_mb": 8191},
             {"index": 7, "name": "n" * 255, "memory_mb": 1}],
        )  # fmt: skip
        self.assertEqual(gpus.parseDevices(""), [])
        self.assertEqual(gpus.parseDevices("No devices were found\n"), [])
        # The master takes every device it kept.
        hello = {"type": "hello", "token": "t", "agent": {
            "id": AGENT_ID, "hostname": "h", "gpu_devices": gpus.parseDevices(odd)}}  # fmt: skip
        parsed = parseMessage(json.dumps(hello))
        assert isinstance(parsed, Hello)
        self.assertEqual(parsed.gpus, 5)

    def test_discover(self) -> None:
        run = ran(SMI)
        self.assertEqual([d["index"] for d in gpus.discoverDevices(run)], [0, 1])
        self.assertEqual(run.calls, [list(gpus.QUERY)])  # type: ignore[attr-defined]

    def test_discoverFails(self) -> None:
        """
        No nvidia-smi, one that fails, hangs or cannot start: no GPUs.
        """
        self.assertEqual(gpus.discoverDevices(ran("", 9, "NVIDIA-SMI has failed")), [])

        def raising(error: Exception) -> Callable[..., Any]:
            def run(argv: list[str], **kw: Any) -> Any:
                raise error

            return run

        self.assertEqual(gpus.discoverDevices(raising(PermissionError("nvidia-smi"))), [])
        self.assertEqual(
            gpus.discoverDevices(raising(subprocess.TimeoutExpired("nvidia-smi", 30))), []
        )
        self.patch(gpus.shutil, "which", lambda name: None)
        self.assertEqual(gpus.discoverDevices(ran(SMI)), [])
        self.flushLoggedErrors()

    def test_offered(self) -> None:
        """
        --gpus N: the first N devices listed; with fewer listed (or no
        nvidia-smi), N devices 0..N-1 of unknown memory; 0 runs nothing.
        """
        self.assertEqual(len(gpus.offeredDevices(None, ran(SMI))), 2)
        self.assertEqual(gpus.offeredDevices(1, ran(SMI)), gpus.parseDevices(SMI)[:1])
        self.assertEqual(
            gpus.offeredDevices(3, ran(SMI)),
            [{"index": i, "name": "", "memory_mb": 0} for i in range(3)],
        )
        none = ran(SMI)
        self.assertEqual(gpus.offeredDevices(0, none), [])
        self.assertEqual(none.calls, [])  # type: ignore[attr-defined]
        self.patch(gpus.shutil, "which", lambda name: None)
        self.assertEqual([d["index"] for d in gpus.offeredDevices(2)], [0, 1])
        self.assertEqual(gpus.offeredDevices(None), [])

    def test_taskEnvironment(self) -> None:
        self.assertEqual(
            gpus.taskEnvironment([1, 3], 4),
            {"CUDA_VISIBLE_DEVICES": "1,3", "MASTERD_GPU_DEVICES": "1,3",
             "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
        )  # fmt: skip
        hidden = gpus.taskEnvironment([], 4)
        self.assertEqual((hidden["CUDA_VISIBLE_DEVICES"], hidden["MASTERD_GPU_DEVICES"]), ("", ""))
        self.assertEqual(gpus.taskEnvironment([], 0), {})

    def test_hello(self) -> None:
        """
        The hello carries the devices found once, and their number.
        """
        from masterd.agent.connection import AgentService, AgentSettings, _Talkback

        from .test_agent import _FakeTransport

        clock = Clock()
        runner = Runner(clock, Path(self.mktemp()), lambda message: None)
        found = tuple(gpus.parseDevices(SMI))
        service = AgentService(clock, AgentSettings("id", "t", ("ws://x",), "h", gpus=2,
                                                    gpu_devices=found), runner)  # fmt: skip
        connection = _Talkback(service)
        transport = _FakeTransport()
        connection.negotiationStarted(transport)  # type: ignore[arg-type]
        connection.negotiationFinished()
        [hello] = transport.take()
        self.assertEqual((hello["agent"]["gpus"], hello["agent"]["gpu_devices"]), (2, list(found)))
        self.patch(gpus.shutil, "which", lambda name: None)
        service = AgentService(clock, AgentSettings("id", "t", ("ws://x",), "h", gpus=1), runner)
        self.assertEqual(service.devices, [{"index": 0, "name": "", "memory_mb": 0}])

    def test_tap(self) -> None:
        """
        twistd's service: devices found once, given to the hello and the
        runner.
        """
        from masterd.agent import tap

        self.patch(tap, "offeredDevices", lambda n: gpus.parseDevices(SMI)[: n or None])
        options = tap.Options()
        options.parseOptions(["--master", "ws://a", "--token", "t", "--state-dir",
                              self.mktemp(), "--gpus", "1"])  # fmt: skip
        service: Any = tap.makeService(options)
        self.addCleanup(service.stateLock.close)
        self.assertEqual(service.settings.gpus, 1)
        self.assertEqual(service.devices, gpus.parseDevices(SMI)[:1])
        self.assertEqual(service.runner.gpus, 1)


class RunnerEnvironmentTests(TestCase):
    timeout = 60

    async def environment(self, offered: int, **task: Any) -> dict[str, str]:
        sent: list[dict[str, Any]] = []
        runner = Runner(reactor, Path(self.mktemp()).resolve(), sent.append, pollInterval=0.05,
                        gpus=offered)  # fmt: skip
        runner.start()
        self.addCleanup(runner.stop)
        keys = ("CUDA_VISIBLE_DEVICES", "MASTERD_GPU_DEVICES", "CUDA_DEVICE_ORDER")
        script = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {keys}}}))"
        runner.run({"task_id": 1, "attempt": 1, "command": [sys.executable, "-c", script],
                    **task})  # fmt: skip
        deadline = time.monotonic() + 30
        while not any(m["type"] == "task_update" and m["state"] == "done" for m in sent):
            self.assertLess(time.monotonic(), deadline, sent)
            await deferLater(reactor, 0.05)
        [line] = [line for m in sent if m["type"] == "log" for line in m["lines"]]
        return dict(json.loads(line))

    async def test_givenDevices(self) -> None:
        """
        The devices given, even over a job's env that names others.
        """
        env = await self.environment(4, gpu_devices=[2, 0], env={"CUDA_VISIBLE_DEVICES": "1"})
        self.assertEqual(env, {"CUDA_VISIBLE_DEVICES": "2,0", "MASTERD_GPU_DEVICES": "2,0",
                               "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})  # fmt: skip

    async def test_hiddenWithoutDevices(self) -> None:
        env = await self.environment(4)
        self.assertEqual((env["CUDA_VISIBLE_DEVICES"], env["MASTERD_GPU_DEVICES"]), ("", ""))

    async def test_untouchedWithoutGPUs(self) -> None:
        """
        An agent that offers no GPUs leaves the variables as they are.
        """
        env = await self.environment(0, env={"CUDA_VISIBLE_DEVICES": "7"})
        self.assertEqual(env["CUDA_VISIBLE_DEVICES"], "7")
        self.assertIsNone(env["MASTERD_GPU_DEVICES"])


# -- the claim over a real database ----------------------------------------------------

DEVICES = [
    {"index": 0, "name": "small", "memory_mb": 8192},
    {"index": 1, "name": "small", "memory_mb": 8192},
    {"index": 2, "name": "large", "memory_mb": 24576},
    {"index": 3, "name": "large", "memory_mb": 24576},
]


class ClaimTests(Base):
    async def gpuAgent(self, devices: list[dict[str, Any]], **extra: Any) -> Any:
        message = self.helloOf(AGENT_ID, **extra)
        message["agent"].update(gpu_devices=devices, max_tasks=8)
        connection, transport = self.connect()
        await self.say(connection, message)
        self.welcomed(AGENT_ID, transport)
        return connection

    async def claim(self) -> list[Any]:
        from masterd.scheduler.claims import claimAll

        async def run(txn: Any) -> list[Any]:
            [slots] = await loadSlotsMany(txn, [AGENT_ID])
            assert slots is not None
            claims = await claimAll(txn, [slots.capacity()])
            return claims.assigned.get(AGENT_ID, [])

        result: list[Any] = await self.api.pool.transaction(run)
        return result

    async def test_acrossARestartAndChangedDevices(self) -> None:
        """
        The devices given are on the attempts and in the assign messages;
        a master that loads the agent again (a restart, a reconnect) reads
        them back from the attempts and gives only the others; an agent
        back with other devices gets only those present and free; tasks
        needing more GPUs, or more memory, than there is are not assigned.
        """
        api = await self.setUpTalkback()
        await self.gpuAgent(DEVICES)
        document = await api.ok("GET", f"/api/v1/agents/{AGENT_ID}")
        self.assertEqual((document["gpus"], document["gpu_devices"]), (4, DEVICES))
        await api.submit(title="five", frames="1", requirements={"gpus": 5})
        await api.submit(title="huge", frames="1",
                         requirements={"gpus": 1, "gpu_memory_mb": 30000})  # fmt: skip
        await api.submit(title="big", frames="1", requirements={"gpus": 1, "gpu_memory_mb": 16000})
        first = await self.claim()
        self.assertEqual([a.gpu_devices for a in first], [(2,)])
        two = await api.submit(title="two", frames="1-3", requirements={"gpus": 2})
        second = await self.claim()
        # Loaded afresh: device 2 is the big task's; 0 and 1 are left.
        self.assertEqual([a.gpu_devices for a in second], [(0, 1)])
        self.assertEqual(second[0].message().gpu_devices, [0, 1])
        self.assertEqual(await self.claim(), [])
        [attempt] = (await api.ok("GET", f"/api/v1/tasks/{second[0].task_id}/attempts"))["items"]
        self.assertEqual(attempt["gpu_devices"], [0, 1])
        # Back with devices 0-2 and 5 (3 is gone), its two tasks still running.
        running = [{"task_id": a.task_id, "attempt": a.attempt} for a in first + second]
        await self.gpuAgent([*DEVICES[:3], {"index": 5, "name": "new", "memory_mb": 8192}],
                            running=running)  # fmt: skip
        self.assertEqual(await self.claim(), [])  # only 5 is free: not two
        one = await api.submit(title="one", frames="1-2", requirements={"gpus": 1})
        self.assertEqual([a.gpu_devices for a in await self.claim()], [(5,)])
        states = await api.pool.query(
            "SELECT j.title, t.state FROM tasks t JOIN jobs j ON j.id = t.job_id ORDER BY t.id"
        )
        self.assertEqual(
            [s for s in states if s[1] == "queued"],
            [("five", "queued"), ("huge", "queued"), ("two", "queued"), ("two", "queued"),
             ("one", "queued")],
        )  # fmt: skip
        del two, one

    async def test_gpusPatchedWhileRunning(self) -> None:
        """
        A job's gpus lowered while its 2-GPU task runs: loaded again, the
        agent's free devices decide, and no task is handed out without one.
        """
        api = await self.setUpTalkback()
        await self.gpuAgent(DEVICES)
        job = await api.submit(frames="1-4", requirements={"gpus": 2})
        self.assertEqual([a.gpu_devices for a in await self.claim()], [(0, 1), (2, 3)])
        await api.ok("PATCH", job["href"], {"requirements": {"gpus": 1}})
        self.assertEqual(await self.claim(), [])
        [slots] = await api.pool.transaction(lambda txn: loadSlotsMany(txn, [AGENT_ID]))
        assert slots is not None
        self.assertEqual((slots.capacity().gpus, slots.capacity().devices), (0, ()))

    async def test_countOnlyAgent(self) -> None:
        """
        An agent that says only how many GPUs it has gets them numbered from
        0, of unknown memory: no task that needs memory.
        """
        api = await self.setUpTalkback()
        message = self.helloOf(AGENT_ID)
        message["agent"].update(gpus=2, max_tasks=4)
        connection, transport = self.connect()
        await self.say(connection, message)
        self.welcomed(AGENT_ID, transport)
        document = await api.ok("GET", f"/api/v1/agents/{AGENT_ID}")
        self.assertEqual([d["index"] for d in document["gpu_devices"]], [0, 1])
        await api.submit(frames="1", requirements={"gpus": 1, "gpu_memory_mb": 1})
        await api.submit(frames="1-3", requirements={"gpus": 1})
        self.assertEqual(sorted(a.gpu_devices for a in await self.claim()), [(0,), (1,)])


# -- a farm of real processes ------------------------------------------------------------

FAKE_SMI = """#!/bin/sh
# A stand-in for nvidia-smi: the devices in the file next to it.
case "$*" in
  *--query-gpu=index,name,memory.total*) cat "$(dirname "$0")/devices.csv" ;;
  *) echo "fake nvidia-smi: $*" >&2; exit 2 ;;
esac
"""

TASK = """\
import json, os, sys, time
record = {k: os.environ.get(k) for k in
          ("CUDA_VISIBLE_DEVICES", "MASTERD_GPU_DEVICES", "CUDA_DEVICE_ORDER")}
record["start"] = time.time()
time.sleep(float(sys.argv[2]))
record["end"] = time.time()
name = os.environ["MASTERD_TASK_ID"] + "-" + os.environ["MASTERD_ATTEMPT"] + ".json"
with open(os.path.join(sys.argv[1], name), "w") as f:
    json.dump(record, f)
"""

CSV = "0, Fake GPU S, 8192\n1, Fake GPU S, 8192\n2, Fake GPU L, 24576\n3, Fake GPU L, 24576\n"


class GpuAgent:
    """
    A reference agent whose PATH finds the fake nvidia-smi first.
    """

    def __init__(self, directory: Path, master: str, fakeBin: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.logPath = directory / f"agent-{time.monotonic_ns()}.log"
        self._log = self.logPath.open("wb")
        env = {**os.environ, "PATH": f"{fakeBin}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.process = subprocess.Popen(
            [*AGENT, "-n", "--pidfile=", "masterd-agent", "--master", master,
             "--token", AGENT_TOKEN, "--state-dir", str(directory / "state"),
             "--max-tasks", "6", "--hostname", "gpu-node"],
            cwd=directory, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _overlaps(intervals: dict[int, list[tuple[float, float, str]]]) -> list[Any]:
    """
    Pairs of intervals on one device that overlap (touching is not).
    """
    found = []
    for device, spans in intervals.items():
        latest: tuple[float, float, str] | None = None  # the span that ends last so far
        for span in sorted(spans):
            if latest is not None and span[0] < latest[1]:
                found.append((device, latest, span))
            if latest is None or span[1] > latest[1]:
                latest = span
    return found


class FarmTests(TestCase):
    timeout = 400

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await call(self.base, path, ADMIN, method, body)

    async def until(self, what: str, check: Callable[[], Any], timeout: float = 60) -> None:
        def logs() -> str:
            agent = getattr(self, "agent", None)
            tail = agent.logPath.read_text()[-3000:] if agent is not None else ""
            return self.master.log()[-3000:] + "\n" + tail

        await until(what, check, timeout, logs, 0.2)

    def launch(self) -> None:
        self.master = MasterProcess(self.config, self.directory)
        self.addCleanup(self.master.kill)

    def startAgent(self) -> None:
        self.agent = GpuAgent(self.directory / "agent", self.base, self.fakeBin)
        self.addCleanup(self.agent.stop)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        code, answer = await self.call(method, path, body)
        self.assertEqual(code, status, answer)
        return answer

    async def counts(self, jobID: int) -> dict[str, int]:
        code, job = await self.call("GET", f"/api/v1/jobs/{jobID}")
        return dict(job["tasks"]) if code == 200 else {}

    async def agentDocument(self) -> dict[str, Any] | None:
        code, page = await self.call("GET", "/api/v1/agents")
        items = page.get("items", []) if code == 200 else []
        return items[0] if items and items[0]["state"] in ("idle", "busy") else None

    async def test_fourDevices(self) -> None:
        """
        One agent whose nvidia-smi reports four devices, 1- and 2-GPU tasks,
        some needing 16 GB, some none, across a master restart and an agent
        restart that comes back with device 3 gone: no device is ever in
        two running tasks at once (from the tasks' own clocks and from the
        attempts in the database), each task saw exactly the devices its
        attempt was given, and a task needing five GPUs never runs.
        """
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.fakeBin = self.directory / "bin"
        self.fakeBin.mkdir()
        smi = self.fakeBin / "nvidia-smi"
        smi.write_text(FAKE_SMI)
        smi.chmod(0o755)
        (self.fakeBin / "devices.csv").write_text(CSV)
        out = self.directory / "records"
        out.mkdir()
        script = self.directory / "task.py"
        script.write_text(TASK)
        port = freePort()
        self.base = f"http://127.0.0.1:{port}"
        # A lost grace longer than any restart: tasks stay the agent's.
        self.config = farmConfig(
            self.directory,
            http={"listen": [f"tcp:{port}:interface=127.0.0.1"], "access_log": False},
            talkback={"heartbeat_s": 1, "agent_timeout_s": 4, "lost_grace_s": 300,
                      "reap_interval_s": 0.5},
            scheduler={"sweep_s": 1, "assign_timeout_s": 120},
        )  # fmt: skip
        self.launch()
        await self.until("ready", lambda: self._ready())
        self.startAgent()
        await self.until("the agent connected", lambda: self._connected())
        document = await self.agentDocument()
        assert document is not None
        self.assertEqual(
            (document["gpus"], [(d["index"], d["memory_mb"]) for d in document["gpu_devices"]]),
            (4, [(0, 8192), (1, 8192), (2, 24576), (3, 24576)]),
        )

        def command(hold: float) -> list[str]:
            return [sys.executable, str(script), str(out), str(hold)]

        five = await self.ok("POST", "/api/v1/jobs", {
            "title": "five", "frames": "1", "command": command(0),
            "requirements": {"gpus": 5}}, 201)  # fmt: skip
        job = await self.ok("POST", "/api/v1/jobs", {"title": "gpus", "layers": [
            {"name": "one", "command": command(2), "frames": "1-10",
             "requirements": {"gpus": 1}},
            {"name": "two", "command": command(2), "frames": "1-5",
             "requirements": {"gpus": 2}},
            {"name": "big", "command": command(2), "frames": "1-4",
             "requirements": {"gpus": 1, "gpu_memory_mb": 16000}},
            {"name": "cpu", "command": command(1), "frames": "1-3"},
        ]}, 201)  # fmt: skip
        jobID = job["id"]

        async def doneAtLeast(n: int) -> bool:
            counts = await self.counts(jobID)
            return counts.get("done", 0) >= n and counts.get("running", 0) >= 1

        # A master restart while tasks run on devices.
        await self.until("tasks running", lambda: doneAtLeast(0))
        self.master.terminate()
        await self.master.wait(90)
        self.launch()
        await self.until("ready again", lambda: self._ready())
        await self.until("the agent back", lambda: self._connected())
        # An agent restart, back with device 3 gone, while tasks run.
        await self.until("more done", lambda: doneAtLeast(6), 120)
        (self.fakeBin / "devices.csv").write_text(CSV.rsplit("3,", 1)[0])
        self.agent.stop()
        self.startAgent()
        await self.until("the agent back with three", lambda: self._connected(3))
        document = await self.agentDocument()
        assert document is not None
        reconnected = _time(document["connected_at"])
        total = 10 + 5 + 4 + 3

        async def finished() -> bool:
            return (await self.counts(jobID)).get("done") == total

        await self.until("every task done", finished, 180)

        attempts: list[dict[str, Any]] = []
        layerOf: dict[int, str] = {}
        _, tasks = await self.call("GET", f"/api/v1/jobs/{jobID}/tasks?limit=100")
        for task in tasks["items"]:
            layerOf[task["id"]] = task["layer"]
            _, page = await self.call("GET", f"/api/v1/tasks/{task['id']}/attempts")
            attempts.extend(page["items"])
        need = {"one": 1, "two": 2, "big": 1, "cpu": 0}
        fromTasks: dict[int, list[tuple[float, float, str]]] = {}
        fromDatabase: dict[int, list[tuple[float, float, str]]] = {}
        for attempt in attempts:
            taskID = attempt["task"]["id"]
            key = f"{taskID}-{attempt['attempt']}"
            devices = attempt["gpu_devices"]
            layer = layerOf[taskID]
            self.assertEqual(len(devices), need[layer], attempt)
            if layer == "big":
                self.assertTrue(set(devices) <= {2, 3}, attempt)
            if _time(attempt["started_at"]) > reconnected:
                self.assertNotIn(3, devices, attempt)
            if attempt["state"] != "done":
                continue
            record = json.loads((out / f"{key}.json").read_text())
            indexes = ",".join(map(str, devices))
            self.assertEqual(
                (record["CUDA_VISIBLE_DEVICES"], record["MASTERD_GPU_DEVICES"]),
                (indexes, indexes), key,
            )  # fmt: skip
            self.assertEqual(record["CUDA_DEVICE_ORDER"], "PCI_BUS_ID")
            for device in devices:
                fromTasks.setdefault(device, []).append((record["start"], record["end"], key))
                fromDatabase.setdefault(device, []).append(
                    (_time(attempt["started_at"]), _time(attempt["finished_at"]), key)
                )
        self.assertEqual(len([a for a in attempts if a["state"] == "done"]), total)
        self.assertEqual(_overlaps(fromTasks), [])
        self.assertEqual(_overlaps(fromDatabase), [])
        # Several tasks did run at once (the test tests something).
        spans = sorted(s for spans in fromTasks.values() for s in spans)
        self.assertTrue(any(b[0] < a[1] for a, b in itertools.pairwise(spans)))
        self.assertEqual((await self.counts(five["id"])).get("queued"), 1)
        _, fiveAttempts = await self.call("GET", f"/api/v1/jobs/{five['id']}/tasks")
        self.assertEqual(fiveAttempts["items"][0]["attempt"], 0)

    async def _ready(self) -> bool:
        code, _ = await self.call("GET", "/readyz")
        return code == 200

    async def _connected(self, devices: int = 4) -> bool:
        """
        The agent is connected to the master running now, with C{devices}.
        """
        code, master = await self.call("GET", "/api/v1/master")
        if code != 200 or master.get("talkback", {}).get("agents_connected") != 1:
            return False
        document = await self.agentDocument()
        return document is not None and len(document["gpu_devices"]) == devices
