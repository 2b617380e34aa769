"""
OpenJD end to end: templates submitted through the API, run by a real
reference agent with openjd-sessions, against a master process on the
embedded database.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from . import test_e2e
from ._process import MasterProcess
from .test_e2e import AGENT, AGENT_TOKEN, farmConfig

RENDER = """\
specificationVersion: jobtemplate-2023-09
name: "e2e {{Param.Shot}}"
parameterDefinitions:
  - {name: Shot, type: STRING, allowedValues: [sh010, sh020]}
  - {name: Out, type: PATH}
jobEnvironments:
  - name: Farm
    script:
      actions:
        onEnter: {command: sh, args: ["-c", "echo enter-job >> {{Param.Out}}/env.log"]}
        onExit: {command: sh, args: ["-c", "echo exit-job >> {{Param.Out}}/env.log"]}
steps:
  - name: render
    parameterSpace:
      taskParameterDefinitions:
        - {name: Frame, type: INT, range: "1-4"}
    stepEnvironments:
      - name: RenderEnv
        script:
          actions:
            onEnter: {command: sh, args: ["-c", "echo enter-render >> {{Param.Out}}/env.log"]}
            onExit: {command: sh, args: ["-c", "echo exit-render >> {{Param.Out}}/env.log"]}
    script:
      embeddedFiles:
        - name: Run
          type: TEXT
          data: |
            echo "openjd_progress: 50"
            echo "openjd_status: rendering {{Task.Param.Frame}}"
            echo "{{Task.Param.Frame}} $(date +%s.%N)" >> {{Param.Out}}/render.log
      actions:
        onRun: {command: sh, args: ["{{Task.File.Run}}"]}
  - name: encode
    dependencies: [{dependsOn: render}]
    script:
      actions:
        onRun:
          command: sh
          args: ["-c", "echo encode $(date +%s.%N) >> {{Param.Out}}/encode.log"]
"""

LONG = """\
specificationVersion: jobtemplate-2023-09
name: long
parameterDefinitions:
  - {name: Out, type: PATH}
steps:
  - name: hold
    script:
      actions:
        onRun:
          command: sh
          args: ["-c", "trap 'echo notified >> {{Param.Out}}/cancel.log; exit 1' TERM;
                  echo started >> {{Param.Out}}/cancel.log; while true; do sleep 0.1; done"]
          cancelation: {mode: NOTIFY_THEN_TERMINATE, notifyPeriodInSeconds: 5}
"""

CHUNKED = """\
specificationVersion: jobtemplate-2023-09
extensions: [TASK_CHUNKING]
name: chunked
parameterDefinitions:
  - {name: Out, type: PATH}
steps:
  - name: render
    parameterSpace:
      taskParameterDefinitions:
        - name: Frame
          type: CHUNK[INT]
          range: "1-12"
          chunks: {defaultTaskCount: 1, rangeConstraint: CONTIGUOUS, targetRuntimeSeconds: 1}
    script:
      actions:
        onRun:
          command: sh
          args: ["-c", "echo {{Task.Param.Frame}} >> {{Param.Out}}/chunks.log; sleep 0.2"]
"""


class OpenJDEndToEndTests(TestCase):
    timeout = 240

    async def setUp(self) -> None:  # type: ignore[override]
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.master = MasterProcess(farmConfig(self.directory), self.directory)
        self.addCleanup(self.master.kill)
        port = await self.master.waitForPort()
        self.base = f"http://127.0.0.1:{port}"
        await self.waitFor(lambda: self.call("GET", "/readyz"), lambda r: r[0] == 200)
        # One agent of one slot: every task of a job goes through the same
        # OpenJD session while it lingers (2 s here).
        agentDir = self.directory / "agent"
        agentDir.mkdir()
        self._agentLog = (agentDir / "agent.log").open("wb")
        self.agent = subprocess.Popen(
            [*AGENT, "-n", "--pidfile=", "masterd-agent", "--master", self.base,
             "--token", AGENT_TOKEN, "--state-dir", str(agentDir / "state"),
             "--max-tasks", "1", "--hostname", "ojd1", "--openjd-linger-s", "2"],
            cwd=agentDir, stdout=self._agentLog, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.addCleanup(self.stopAgent)
        await self.waitFor(
            lambda: self.call("GET", "/api/v1/agents?state=idle"),
            lambda r: len(r[1]["items"]) == 1,
        )

    def stopAgent(self) -> None:
        if self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(40)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        self._agentLog.close()

    # The end-to-end suite's: the admin's requests, and polls that show
    # the master's log when they time out.
    call = test_e2e.EndToEndTests.call
    waitFor = test_e2e.EndToEndTests.waitFor

    async def test_renderAndEncode(self) -> None:
        """
        Four render tasks with their frame parameter, then the encode step
        once they are all done; the job and step environments are entered
        and exited once each, in one session; the tasks' openjd_status
        lines are their status over HTTP.
        """
        out = self.directory / "out"
        out.mkdir()
        code, job = await self.call("POST", "/api/v1/jobs", {
            "openjd": {"template": RENDER, "parameters": {"Shot": "sh010", "Out": str(out)}},
            "priority": 60,
        })  # fmt: skip
        self.assertEqual(code, 201, job)
        self.assertEqual(job["title"], "e2e sh010")
        self.assertEqual([layer["name"] for layer in job["layers"]], ["render", "encode"])
        _, tasks = await self.call("GET", f"{job['href']}/tasks")
        self.assertEqual(
            [t["parameters"] for t in tasks["items"]],
            [{"Frame": {"type": "INT", "value": str(f)}} for f in range(1, 5)] + [{}],
        )
        await self.waitFor(lambda: self.call("GET", job["href"]),
                           lambda r: r[1]["state"] == "done", timeout=90)  # fmt: skip
        renders = [line.split() for line in (out / "render.log").read_text().splitlines()]
        self.assertEqual(sorted(int(f) for f, _ in renders), [1, 2, 3, 4])
        [encode] = (out / "encode.log").read_text().splitlines()
        self.assertGreater(float(encode.split()[1]), max(float(t) for _, t in renders))
        # The session lingers 2 s after its last task, then exits.
        await self.waitFor(_reading(out / "env.log"), lambda text: "exit-job" in text)
        self.assertEqual((out / "env.log").read_text().split(),
                         ["enter-job", "enter-render", "exit-render", "exit-job"])  # fmt: skip
        _, first = await self.call("GET", f"/api/v1/tasks/{tasks['items'][0]['id']}")
        self.assertEqual(first["status"], "rendering 1")

    async def test_adaptiveChunks(self) -> None:
        """
        Chunks of one frame with a target of a second, run by the real
        agent: once the first has finished the next ones are sized larger
        from its runtime; every frame runs exactly once, each chunk's
        script sees its range, and the tasks say what ran.
        """
        out = self.directory / "chunks"
        out.mkdir()
        code, job = await self.call("POST", "/api/v1/jobs", {
            "openjd": {"template": CHUNKED, "parameters": {"Out": str(out)}}})  # fmt: skip
        self.assertEqual(code, 201, job)
        await self.waitFor(lambda: self.call("GET", job["href"]),
                           lambda r: r[1]["state"] == "done", timeout=90)  # fmt: skip
        ran = (out / "chunks.log").read_text().split()
        frames = []
        for value in ran:
            first, last = value.split("-")
            frames.extend(range(int(first), int(last) + 1))
        self.assertEqual(sorted(frames), list(range(1, 13)))
        self.assertEqual(ran[0], "1-1")
        self.assertLess(len(ran), 12)
        _, tasks = await self.call("GET", f"{job['href']}/tasks")
        self.assertEqual(
            sorted(t["parameters"]["Frame"]["value"] for t in tasks["items"]), sorted(ran)
        )
        _, document = await self.call("GET", job["href"])
        self.assertEqual(document["tasks"]["total"], len(ran))

    async def test_refused(self) -> None:
        """
        A parameter value out of its allowed values is a 400 naming it, and
        nothing is written.
        """
        code, body = await self.call("POST", "/api/v1/jobs", {
            "openjd": {"template": RENDER, "parameters": {"Shot": "sh999", "Out": "/tmp"}},
        })  # fmt: skip
        self.assertEqual(code, 400, body)
        self.assertEqual(body["details"]["field"], "openjd.parameters.Shot")
        _, jobs = await self.call("GET", "/api/v1/jobs")
        self.assertEqual(jobs["items"], [])

    async def test_cancelNotifies(self) -> None:
        """
        Canceling the job reaches the running action by its cancelation
        mode: NOTIFY_THEN_TERMINATE sends SIGTERM first, which the script
        traps.
        """
        out = self.directory / "out"
        out.mkdir()
        code, job = await self.call("POST", "/api/v1/jobs", {
            "openjd": {"template": LONG, "parameters": {"Out": str(out)}},
        })  # fmt: skip
        self.assertEqual(code, 201, job)
        await self.waitFor(_reading(out / "cancel.log"), lambda text: "started" in text)
        code, _ = await self.call("POST", f"{job['href']}/cancel")
        self.assertEqual(code, 200)
        await self.waitFor(_reading(out / "cancel.log"), lambda text: "notified" in text)
        _, document = await self.call("GET", job["href"])
        self.assertEqual(document["state"], "canceled")


def _reading(path: Path) -> Any:
    async def read() -> str:
        return path.read_text() if path.exists() else ""

    return read
