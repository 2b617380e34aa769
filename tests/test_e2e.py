"""
A farm that renders, end to end, with real processes: a master on the
embedded database, reference agents, jobs whose commands write files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from ._process import MasterProcess, alive, writeConfig

ADMIN = "proc-admin-token-123456"
AGENT_TOKEN = "proc-agent-token-123456"

AGENT = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class AgentProcess:
    def __init__(self, directory: Path, name: str, master: str, maxTasks: int = 1) -> None:
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.logPath = self.directory / "agent.log"
        self._log = self.logPath.open("wb")
        self.process = subprocess.Popen(
            [*AGENT, "-n", "--pidfile=", "masterd-agent", "--master", master,
             "--token", AGENT_TOKEN, "--state-dir", str(self.directory / "state"),
             "--max-tasks", str(maxTasks), "--hostname", name],
            cwd=self.directory, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def farmConfig(directory: Path, **overrides: Any) -> Path:
    """
    A master for a farm under test: an admin and an agent token, a free
    port, no access log, and timers short enough for a test.
    """
    settings: dict[str, Any] = {
        "auth": {"tokens": [
            {"name": "admin", "role": "admin", "token": ADMIN},
            {"name": "agents", "role": "agent", "token": AGENT_TOKEN},
        ]},
        "http": {"listen": ["tcp:0:interface=127.0.0.1"], "access_log": False},
        "talkback": {"heartbeat_s": 1, "agent_timeout_s": 4, "lost_grace_s": 2,
                     "reap_interval_s": 0.5},
        "scheduler": {"sweep_s": 1, "assign_timeout_s": 10},
    }  # fmt: skip
    settings.update(overrides)
    return writeConfig(directory, **settings)


class EndToEndTests(TestCase):
    timeout = 240

    async def setUpFarm(self, agents: int = 2, maxTasks: int = 1) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        config = farmConfig(self.directory)
        self.master = MasterProcess(config, self.directory)
        self.addCleanup(self.master.kill)
        port = await self.master.waitForPort()
        self.base = f"http://127.0.0.1:{port}"
        await self.waitFor(lambda: self.call("GET", "/readyz"), lambda r: r[0] == 200)
        self.agents = []
        for i in range(agents):
            agent = AgentProcess(self.directory, f"agent{i}", self.base, maxTasks)
            self.addCleanup(agent.stop)
            self.agents.append(agent)
        await self.waitFor(
            lambda: self.call("GET", "/api/v1/agents?state=idle"),
            lambda r: len(r[1]["items"]) == agents,
        )

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": [f"Bearer {ADMIN}"]}
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        response = await treq.request(
            method, self.base + path, headers=headers, persistent=False, **kwargs
        )
        content = await response.content()
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content

    async def waitFor(self, fetch: Any, done: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await fetch()
            if done(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last: {result}\n{self.master.log()[-3000:]}")
            await deferLater(reactor, 0.2)

    async def job(self, jobID: int) -> dict[str, Any]:
        _, body = await self.call("GET", f"/api/v1/jobs/{jobID}")
        return dict(body)

    async def test_renderSequence(self) -> None:
        """
        Twenty frames in chunks of two on two agents: every frame's file
        exists exactly once, the job is done, and the logs read back.
        """
        await self.setUpFarm()
        out = self.directory / "frames"
        out.mkdir()
        script = (
            "for f in $(echo {frames} | tr , ' '); do"
            f' echo "frame $f" >> {out}/$f.txt; echo rendered $f; done'
        )
        code, job = await self.call(
            "POST", "/api/v1/jobs",
            {"title": "sequence", "command": ["sh", "-c", script], "frames": "1-20", "chunk": 2},
        )  # fmt: skip
        self.assertEqual(code, 201, job)
        job = await self.waitFor(lambda: self.job(job["id"]), lambda j: j["state"] == "done")
        self.assertEqual(job["tasks"]["done"], 10)
        files = sorted(int(p.stem) for p in out.iterdir())
        self.assertEqual(files, list(range(1, 21)))
        for path in out.iterdir():
            self.assertEqual(path.read_text(), f"frame {path.stem}\n")
        _, tasks = await self.call("GET", f"/api/v1/jobs/{job['id']}/tasks")
        first = tasks["items"][0]
        code, log = await self.call("GET", f"/api/v1/tasks/{first['id']}/log")
        self.assertEqual(log, b"rendered 1\nrendered 2\n")
        _, agents = await self.call("GET", "/api/v1/agents")
        processed = [a["hostname"] for a in agents["items"]]
        self.assertEqual(sorted(processed), ["agent0", "agent1"])

    async def test_cancelStopsProcesses(self) -> None:
        await self.setUpFarm(agents=1, maxTasks=2)
        pids = self.directory / "pids"
        pids.mkdir()
        code, job = await self.call(
            "POST", "/api/v1/jobs",
            {"title": "long", "frames": "1-2",
             "command": ["sh", "-c", f"echo $$ > {pids}/{{frame}}; sleep 300"]},
        )  # fmt: skip
        self.assertEqual(code, 201)
        await self.waitFor(lambda: self.job(job["id"]), lambda j: j["tasks"]["running"] == 2)
        await self.waitFor(lambda: _count(pids), lambda n: n == 2)
        running = [int(p.read_text()) for p in pids.iterdir()]
        self.assertTrue(all(alive(pid) for pid in running))
        code, _ = await self.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
        self.assertEqual(code, 200)
        await self.waitFor(_returning(lambda: [alive(p) for p in running]),
                           lambda states: not any(states), timeout=30)  # fmt: skip
        job = await self.job(job["id"])
        self.assertEqual(job["state"], "canceled")
        _, agents = await self.call("GET", "/api/v1/agents")
        await self.waitFor(
            lambda: self.call("GET", "/api/v1/agents?state=idle"),
            lambda r: len(r[1]["items"]) == 1,
        )
        del agents

    async def test_killedAgent(self) -> None:
        """
        An agent killed with SIGKILL in the middle of a task: the task runs
        again on the other agent and the job completes.
        """
        await self.setUpFarm(agents=2)
        marks = self.directory / "marks"
        marks.mkdir()
        code, job = await self.call(
            "POST", "/api/v1/jobs",
            {"title": "slow", "frames": "1-2",
             "command": ["sh", "-c", f"echo $MASTERD_ATTEMPT >> {marks}/{{frame}}; sleep 3"]},
        )  # fmt: skip
        self.assertEqual(code, 201)
        await self.waitFor(lambda: self.job(job["id"]), lambda j: j["tasks"]["running"] == 2)
        _, tasks = await self.call("GET", f"/api/v1/jobs/{job['id']}/tasks")
        victimName = None
        _, agents = await self.call("GET", "/api/v1/agents")
        byID = {a["id"]: a["hostname"] for a in agents["items"]}
        victimName = byID[tasks["items"][0]["agent"]["id"]]
        victim = next(a for a in self.agents if a.directory.name == victimName)
        victim.stop(signal.SIGKILL)
        # Its task's process group is orphaned; kill it too, as a machine
        # that died would have.
        subprocess.run(["pkill", "-9", "-f", f"{marks}/1"], check=False)
        job = await self.waitFor(
            lambda: self.job(job["id"]), lambda j: j["state"] == "done", timeout=90
        )
        self.assertEqual(job["tasks"]["done"], 2)
        _, attempts = await self.call("GET", f"/api/v1/tasks/{tasks['items'][0]['id']}/attempts")
        states = [a["state"] for a in attempts["items"]]
        self.assertEqual(states[-1], "done")
        self.assertIn("lost", states)
        self.assertEqual(len([s for s in states if s == "done"]), 1)


def _count(directory: Path) -> Any:
    async def count() -> int:
        return len(os.listdir(directory))

    return count()


def _returning(f: Any) -> Any:
    async def call() -> Any:
        return f()

    return call
