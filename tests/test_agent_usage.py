"""
What a task used (masterd.agent.accounting; docs/agent.md, "Usage of each
task"): the shim's measures of real processes that allocate and burn known
amounts, the runner's final reports (native and OpenJD), and the old exit
file of a shim that measured nothing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from attrs import asdict
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.agent.accounting import cleanUsage, usageReport
from masterd.agent.runner import Run, Runner

ROOT = Path(__file__).resolve().parent.parent
#: Sampled often, so that what a test holds for a few tenths of a second is
#: seen many times.
FAST = {"MASTERD_USAGE_SAMPLE_S": "0.05", "MASTERD_USAGE_GPU_SAMPLE_S": "0.05"}
KEYS = {"wall_s", "cpu_user_s", "cpu_system_s", "peak_rss_kb", "gpu_memory_mb"}
MB = 1024  # KiB

# A child that allocates ALLOC_MB (every page touched), burns BURN_S of its
# own CPU time, holds the memory HOLD_S more, and writes what it measured of
# itself to argv[1].
MEASURED = """
import json, resource, sys, time
alloc, burn, hold = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
block = bytearray(alloc * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
began = time.process_time()
while time.process_time() - began < burn:
    pass
time.sleep(hold)
with open(sys.argv[1], "w") as f:
    json.dump({"cpu": time.process_time(),
               "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, f)
"""

# A child that runs two grandchildren of SCRIPT at once (writing to OUT.0 and
# OUT.1, given ALLOC, BURN and what follows), waits for them, and writes its
# own CPU time to OUT.
TREE = """
import json, subprocess, sys, time
out, alloc, burn, script, more = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
children = [subprocess.Popen([sys.executable, "-c", script, f"{out}.{i}", alloc, burn, *more])
            for i in (0, 1)]
for child in children:
    child.wait()
with open(out, "w") as f:
    json.dump({"cpu": time.process_time()}, f)
"""

# MEASURED with a rendezvous, for TREE: it holds its memory until its sibling
# holds its own, then 0.5 s more (so that the tree's sum peaks above either's
# own peak).
TOGETHER = """
import json, os, resource, sys, time
out, alloc, burn = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
block = bytearray(alloc * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
open(out + ".ready", "w").close()
sibling = out[:-1] + ("1" if out.endswith("0") else "0") + ".ready"
deadline = time.monotonic() + 20
while not os.path.exists(sibling) and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.5)
began = time.process_time()
while time.process_time() - began < burn:
    pass
with open(out, "w") as f:
    json.dump({"cpu": time.process_time(),
               "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, f)
"""


def close(measured: float, known: float, share: float = 0.1) -> bool:
    return abs(measured - known) <= share * known


def cpu(usage: dict[str, Any]) -> float:
    return float(usage["cpu_user_s"] + usage["cpu_system_s"])


class ShimTests(SynchronousTestCase):
    """
    The shim on real processes: what it writes in its exit file.
    """

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)

    def shim(
        self, *command: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """
        Run the shim on C{command}: its exit file, read.
        """
        exitFile, logFile = self.dir / "exit", self.dir / "log"
        exitFile.unlink(missing_ok=True)
        environ = dict(os.environ, PYTHONPATH=str(ROOT), **FAST)
        environ.update(env or {})
        shim = subprocess.Popen(
            [sys.executable, "-m", "masterd.agent.shim", str(exitFile), str(logFile), "--",
             *command],
            env=environ,
        )  # fmt: skip
        self.addCleanup(self.killGroup, shim.pid)
        self.assertEqual(shim.wait(timeout), 0)
        ended: dict[str, Any] = json.loads(exitFile.read_text())
        if "usage" in ended:
            self.assertValid(ended["usage"])
        return ended

    def killGroup(self, pgid: int) -> None:
        # Whatever the shim's session left behind (nothing, normally).
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def assertValid(self, usage: dict[str, Any]) -> None:
        self.assertEqual(set(usage), KEYS)
        for key in ("wall_s", "cpu_user_s", "cpu_system_s"):
            self.assertIsInstance(usage[key], float)
            self.assertTrue(math.isfinite(usage[key]) and usage[key] >= 0, usage)
            self.assertEqual(usage[key], round(usage[key], 3))
        self.assertIsInstance(usage["peak_rss_kb"], int)
        self.assertGreaterEqual(usage["peak_rss_kb"], 0)
        gpu = usage["gpu_memory_mb"]
        self.assertTrue(gpu is None or (isinstance(gpu, int) and gpu >= 0), usage)

    def measured(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.dir / name).read_text())
        return result

    def test_memoryAndCPU(self) -> None:
        """
        A child that allocates 300 MB and burns 1 s of CPU: its peak resident
        memory and its CPU time within 10 % of what it measured of itself
        (and of what it allocated, plus an idle interpreter's), its wall
        time from its start to its end.
        """
        idle = self.shim(sys.executable, "-c", "import time; time.sleep(0.2)")["usage"]
        baseline = idle["peak_rss_kb"]
        self.assertGreater(baseline, 0)
        self.assertGreaterEqual(idle["wall_s"], 0.2)

        ended = self.shim(sys.executable, "-c", MEASURED, str(self.dir / "m"), "300", "1.0", "0.3")
        usage, itself = ended["usage"], self.measured("m")
        self.assertEqual(ended["status"], 0)
        allocated = 300 * MB
        self.assertGreaterEqual(usage["peak_rss_kb"], allocated)
        self.assertLessEqual(usage["peak_rss_kb"], allocated * 1.1 + baseline)
        self.assertTrue(close(usage["peak_rss_kb"], itself["maxrss_kb"]), (usage, itself))
        self.assertGreaterEqual(cpu(usage), 1.0)
        self.assertTrue(close(cpu(usage), itself["cpu"]), (usage, itself))
        self.assertGreaterEqual(usage["wall_s"], 1.3)
        self.assertLess(usage["wall_s"], 30)
        # nvidia-smi (if there is one) lists no process of this tree.
        self.assertIsNone(usage["gpu_memory_mb"])

    def test_treeCPU(self) -> None:
        """
        The CPU time of the grandchildren a child waited for counts: two of
        0.5 s each.
        """
        out = str(self.dir / "t")
        ended = self.shim(sys.executable, "-c", TREE, out, "10", "0.5", MEASURED, "0")
        self.assertEqual(ended["status"], 0)
        known = sum(self.measured(name)["cpu"] for name in ("t", "t.0", "t.1"))
        self.assertGreaterEqual(cpu(ended["usage"]), 1.0)
        self.assertTrue(close(cpu(ended["usage"]), known), (ended, known))

    def test_treeMemory(self) -> None:
        """
        Two grandchildren holding 150 MB each at once: the tree's peak is
        their sum (sampled), above the largest single process's peak (all
        that ru_maxrss sees).
        """
        out = str(self.dir / "g")
        ended = self.shim(sys.executable, "-c", TREE, out, "150", "0.1", TOGETHER)
        self.assertEqual(ended["status"], 0)
        single = max(self.measured(f"g.{i}")["maxrss_kb"] for i in (0, 1))
        self.assertLess(single, 250 * MB)
        self.assertGreaterEqual(ended["usage"]["peak_rss_kb"], 300 * MB)
        self.assertLessEqual(ended["usage"]["peak_rss_kb"], 300 * MB * 1.1 + 3 * single)

    def test_exitStatus(self) -> None:
        """
        The exit status, as before; a command killed by signal N is -N (also
        SIGTERM, which the shim itself ignores), and still has its usage.
        """
        ended = self.shim(sys.executable, "-c", "raise SystemExit(3)")
        self.assertEqual(ended["status"], 3)
        self.assertIn("usage", ended)
        for signum in (signal.SIGKILL, signal.SIGTERM):
            ended = self.shim(sys.executable, "-c",
                              f"import os; os.kill(os.getpid(), {int(signum)})")  # fmt: skip
            self.assertEqual(ended["status"], -signum)
            self.assertIn("usage", ended)

    def test_groupTerminated(self) -> None:
        """
        The agent's SIGTERM to the whole group (a cancel) ends the command;
        the shim outlives it and records it, with its usage.
        """
        exitFile, logFile = self.dir / "exit", self.dir / "log"
        shim = subprocess.Popen(
            [sys.executable, "-m", "masterd.agent.shim", str(exitFile), str(logFile), "--",
             "sleep", "30"],
            env=dict(os.environ, PYTHONPATH=str(ROOT), **FAST),
        )  # fmt: skip
        self.addCleanup(self.killGroup, shim.pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # Once the shim has its session and its child.
            children = psutil.Process(shim.pid).children()
            if os.getpgid(shim.pid) == shim.pid and children:
                break
            time.sleep(0.02)
        time.sleep(0.2)
        os.killpg(shim.pid, signal.SIGTERM)
        self.assertEqual(shim.wait(20), 0)
        ended = json.loads(exitFile.read_text())
        self.assertEqual(ended["status"], -signal.SIGTERM)
        self.assertValid(ended["usage"])
        self.assertGreater(ended["usage"]["wall_s"], 0.1)

    def test_cannotStart(self) -> None:
        """
        A command that cannot be started: 127, and no usage (nothing ran).
        """
        self.assertEqual(self.shim("/no/such/program"), {"status": 127})

    def fakeNvidiaSMI(self, body: str) -> dict[str, str]:
        """
        An nvidia-smi of C{body} (sh) first on the PATH: the environment for
        the shim.
        """
        bin = self.dir / "bin"
        bin.mkdir(exist_ok=True)
        fake = bin / "nvidia-smi"
        fake.write_text(
            "#!/bin/sh\n"
            '[ "$1" = --query-compute-apps=pid,used_memory ] || exit 2\n'
            '[ "$2" = --format=csv,noheader,nounits ] || exit 2\n' + body
        )
        fake.chmod(0o755)
        return {"PATH": f"{bin}:{os.environ['PATH']}"}

    def test_gpuMemory(self) -> None:
        """
        The GPU memory nvidia-smi lists for the tree's pids, summed over
        their GPUs; other pids and unreadable lines are not counted.
        """
        pidFile = self.dir / "pid"
        env = self.fakeNvidiaSMI(
            f'pid=$(cat {pidFile} 2>/dev/null) || exit 0\n'
            'echo "$pid, 700"\necho "$pid, 300"\necho "1, 5000"\n'
            'echo "[N/A], [N/A]"\necho "No running processes found"\n'
        )  # fmt: skip
        ended = self.shim(
            sys.executable, "-c",
            f"import os, time; open({str(pidFile)!r}, 'w').write(str(os.getpid())); "
            "time.sleep(0.6)",
            env=env,
        )  # fmt: skip
        self.assertEqual(ended["status"], 0)
        self.assertEqual(ended["usage"]["gpu_memory_mb"], 1000)

    def test_gpuNothingListed(self) -> None:
        """
        nvidia-smi listing no process of the tree: null.
        """
        env = self.fakeNvidiaSMI('echo "1, 5000"\n')
        ended = self.shim(sys.executable, "-c", "import time; time.sleep(0.3)", env=env)
        self.assertIsNone(ended["usage"]["gpu_memory_mb"])

    def test_gpuFailing(self) -> None:
        """
        An nvidia-smi that fails, or hangs past its timeout, breaks nothing:
        the task ends as it would, with no GPU memory.
        """
        for body in ('echo "garbage"; exit 1\n', "exec sleep 10\n"):
            env = self.fakeNvidiaSMI(body)
            env["MASTERD_USAGE_GPU_TIMEOUT_S"] = "0.1"
            began = time.monotonic()
            ended = self.shim(sys.executable, "-c", "import time; time.sleep(0.5)", env=env)
            self.assertLess(time.monotonic() - began, 8)
            self.assertEqual(ended["status"], 0)
            self.assertIsNone(ended["usage"]["gpu_memory_mb"])


class FiguresTests(SynchronousTestCase):
    """
    Every figure sent is finite, non-negative, within what the master takes,
    seconds to the millisecond.
    """

    def test_usageReport(self) -> None:
        self.assertEqual(
            usageReport(1.23456, 0.0004, 2.0004, 1024, 3000),
            {"wall_s": 1.235, "cpu_user_s": 0.0, "cpu_system_s": 2.0, "peak_rss_kb": 1024,
             "gpu_memory_mb": 3000},
        )  # fmt: skip
        self.assertEqual(
            usageReport(math.nan, -1.0, math.inf, -5, -1),
            {"wall_s": 0.0, "cpu_user_s": 0.0, "cpu_system_s": 0.0, "peak_rss_kb": 0,
             "gpu_memory_mb": 0},
        )  # fmt: skip
        huge = usageReport(1e12, 0, 0, 2**60, 2**40)
        self.assertEqual((huge["wall_s"], huge["peak_rss_kb"], huge["gpu_memory_mb"]),
                         (1e9, 2**53 - 1, 2**31 - 1))  # fmt: skip

    def test_cleanUsage(self) -> None:
        """
        A usage read back from an exit file: made safe, or None when it is
        not one.
        """
        for raw in (None, 3, [], {}, {"wall_s": "1"}, {"wall_s": True}):
            self.assertIsNone(cleanUsage(raw), raw)
        self.assertEqual(
            cleanUsage({"wall_s": 2, "cpu_user_s": "x", "cpu_system_s": -3.0,
                        "peak_rss_kb": 10.7, "gpu_memory_mb": False, "other": 1}),
            {"wall_s": 2.0, "cpu_user_s": 0.0, "cpu_system_s": 0.0, "peak_rss_kb": 10,
             "gpu_memory_mb": None},
        )  # fmt: skip


class _Harness(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.stateDir = self.dir / "state"
        self.sent: list[dict[str, Any]] = []

    def runner(self, **kwargs: Any) -> Runner:
        runner = Runner(reactor, self.stateDir, self.sent.append, pollInterval=0.05, **kwargs)
        runner.start()
        self.addCleanup(runner.stopOpenJD)
        self.addCleanup(runner.stop)
        return runner

    async def until(self, condition: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; sent: {self.sent}")
            await deferLater(reactor, 0.02)

    def final(self, taskID: int) -> dict[str, Any] | None:
        for m in self.sent:
            if m["type"] == "task_update" and m["task_id"] == taskID and m["state"] != "running":
                return m
        return None


class RunnerUsageTests(_Harness):
    """
    The runner's final reports carry what the shim measured.
    """

    def task(self, taskID: int, command: list[str], **extra: Any) -> dict[str, Any]:
        return {"task_id": taskID, "attempt": 1, "command": command, "env": FAST, **extra}

    async def test_done(self) -> None:
        runner = self.runner()
        out = self.dir / "m"
        runner.run(self.task(1, [sys.executable, "-c", MEASURED, str(out), "50", "0.3", "0"]))
        await self.until(lambda: self.final(1) is not None)
        final = self.final(1) or {}
        self.assertEqual((final["state"], final["exit_code"]), ("done", 0))
        usage = final["usage"]
        self.assertEqual(set(usage), KEYS)
        itself = json.loads(out.read_text())
        self.assertTrue(close(cpu(usage), itself["cpu"]), (usage, itself))
        self.assertGreaterEqual(usage["peak_rss_kb"], 50 * MB)
        self.assertGreaterEqual(usage["wall_s"], 0.3)
        self.assertIsNone(usage["gpu_memory_mb"])
        # As saved until acknowledged, and sent again.
        self.assertEqual(runner.unacked[1, 1]["usage"], usage)

    async def test_canceled(self) -> None:
        """
        A canceled task (failed after a cancel) still reports what it used.
        """
        runner = self.runner()
        runner.run(self.task(2, ["sleep", "300"]))
        shim = psutil.Process(runner.runs[2].pid)
        await self.until(lambda: bool(shim.children()))  # the command started
        await deferLater(reactor, 0.3)
        runner.cancel(2, 1, "job canceled")
        await self.until(lambda: self.final(2) is not None)
        final = self.final(2) or {}
        self.assertEqual((final["state"], final["exit_code"]), ("failed", -15))
        self.assertEqual(set(final["usage"]), KEYS)
        self.assertGreater(final["usage"]["wall_s"], 0.2)

    async def test_nothingRan(self) -> None:
        """
        No usage where nothing ran: no working directory, no program.
        """
        runner = self.runner()
        runner.run(self.task(3, ["true"], cwd="/no/such/dir"))
        runner.run(self.task(4, ["/no/such/program"]))
        await self.until(lambda: all(self.final(t) for t in (3, 4)))
        for taskID in (3, 4):
            self.assertNotIn("usage", self.final(taskID) or {})

    def adopt(self, taskID: int, recorded: str) -> None:
        """
        A task whose shim ended before this agent started, and wrote
        C{recorded} to its exit file.
        """
        tasks = self.stateDir / "tasks"
        tasks.mkdir(parents=True)
        logPath, exitPath = tasks / f"{taskID}-1.log", tasks / f"{taskID}-1.exit"
        logPath.touch()
        exitPath.write_text(recorded)
        ended = subprocess.Popen(["true"])
        ended.wait()
        run = Run(taskID, 1, ended.pid, str(logPath), str(exitPath))
        (self.stateDir / "running.json").write_text(
            json.dumps({"runs": [asdict(run)], "unacked": []})
        )

    async def test_oldExitFile(self) -> None:
        """
        The exit file of a shim an older agent started (before an upgrade):
        the status alone, as plain text; reported with no usage.
        """
        self.adopt(5, "3")
        self.runner()
        await self.until(lambda: self.final(5) is not None)
        final = self.final(5) or {}
        self.assertEqual((final["state"], final["exit_code"]), ("failed", 3))
        self.assertNotIn("usage", final)

    async def test_damagedUsage(self) -> None:
        """
        A usage that is not finite or not positive is sent made safe.
        """
        damaged = ('{"wall_s": 1.5, "cpu_user_s": NaN, "cpu_system_s": -1, "peak_rss_kb": 100,'
                   ' "gpu_memory_mb": null}')  # fmt: skip
        self.adopt(6, f'{{"status": 0, "usage": {damaged}}}')
        self.runner()
        await self.until(lambda: self.final(6) is not None)
        final = self.final(6) or {}
        self.assertEqual((final["state"], final["exit_code"]), ("done", 0))
        self.assertEqual(
            final["usage"],
            {"wall_s": 1.5, "cpu_user_s": 0.0, "cpu_system_s": 0.0, "peak_rss_kb": 100,
             "gpu_memory_mb": None},
        )  # fmt: skip


class OpenJDUsageTests(_Harness):
    """
    OpenJD tasks: the run action's process tree, sampled.
    """

    def setUp(self) -> None:
        super().setUp()
        # The samplers run in this process (the agent's).
        for name, value in FAST.items():
            self.addCleanup(os.environ.pop, name, None)
            os.environ[name] = value

    def openjdTask(self, taskID: int, args: list[str]) -> dict[str, Any]:
        # As the master sends it (docs/openjd.md): a job of one step of one
        # task, without parameters or environments.
        payload = {
            "job": {"id": 1, "name": "usage", "parameters": {}, "environments": []},
            "step": {
                "name": "Render",
                "script": {"actions": {"onRun": {"command": sys.executable, "args": args}}},
                "environments": [],
            },
            "parameters": {},
        }
        return {"task_id": taskID, "attempt": 1, "command": None, "openjd": payload}

    async def test_runAction(self) -> None:
        """
        Wall time of the run action; the CPU time and peak memory of its
        process tree, sampled while it runs (here it holds both long enough
        after burning, so that the samples see all of it).
        """
        out = self.dir / "m"
        runner = self.runner(openjdLinger=0)
        began = time.monotonic()
        runner.run(self.openjdTask(1, ["-c", MEASURED, str(out), "100", "0.5", "0.5"]))
        await self.until(lambda: self.final(1) is not None)
        took = time.monotonic() - began
        final = self.final(1) or {}
        self.assertEqual(final["state"], "done")
        usage, itself = final["usage"], json.loads(out.read_text())
        self.assertEqual(set(usage), KEYS)
        self.assertGreaterEqual(usage["wall_s"], 1.0)
        self.assertLessEqual(usage["wall_s"], took)
        self.assertGreaterEqual(usage["peak_rss_kb"], 100 * MB)
        self.assertTrue(close(usage["peak_rss_kb"], itself["maxrss_kb"], 0.2), (usage, itself))
        # A lower bound: what the last sample saw.
        self.assertGreaterEqual(cpu(usage), 0.5)
        self.assertLessEqual(cpu(usage), itself["cpu"] * 1.1 + 0.1)
        self.assertIsNone(usage["gpu_memory_mb"])

    async def test_failedRunAction(self) -> None:
        """
        A run action that fails still reports what it used.
        """
        runner = self.runner(openjdLinger=0)
        runner.run(self.openjdTask(2, ["-c", "import time; time.sleep(0.3); raise SystemExit(4)"]))
        await self.until(lambda: self.final(2) is not None)
        final = self.final(2) or {}
        self.assertEqual((final["state"], final["exit_code"]), ("failed", 4))
        self.assertGreaterEqual(final["usage"]["wall_s"], 0.3)
        self.assertGreater(final["usage"]["peak_rss_kb"], 0)
