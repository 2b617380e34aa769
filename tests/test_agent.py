"""
The reference agent: options, identity, and running tasks through the shim
with real processes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import msgspec
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from masterd.agent.connection import RESEND_AFTER_S, talkbackURL
from masterd.agent.runner import Run, Runner
from masterd.agent.statedir import agentID
from masterd.agent.tap import Options

from ._process import alive


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str, env: dict[str, str] | None = None) -> Any:
        old = os.environ.pop("MASTERD_AGENT_TOKEN", None)
        if env:
            os.environ.update(env)
        try:
            options = Options()
            options.parseOptions(list(argv))
            return options["settings"]
        finally:
            os.environ.pop("MASTERD_AGENT_TOKEN", None)
            if old is not None:
                os.environ["MASTERD_AGENT_TOKEN"] = old

    def test_commandLine(self) -> None:
        s = self.parse(
            *("--master", "ws://a:8080", "--master", "http://b:8080", "--token", "t"),
            *("--max-tasks", "3", "--tag", "linux", "--tag", "gpu", "--hostname", "n1"),
        )
        self.assertEqual(s["masters"], ("ws://a:8080", "http://b:8080"))
        self.assertEqual((s["token"], s["max_tasks"], s["tags"], s["hostname"]),
                         ("t", 3, ("linux", "gpu"), "n1"))  # fmt: skip

    def test_tokenFromEnvironment(self) -> None:
        s = self.parse("--master", "ws://a", env={"MASTERD_AGENT_TOKEN": "secret"})
        self.assertEqual(s["token"], "secret")

    def test_configFile(self) -> None:
        path = Path(self.mktemp())
        path.write_text("master: [ws://a, ws://b]\ntoken: fromfile\nmax-tasks: 2\ntag: [x]\n")
        s = self.parse("--config", str(path), "--max-tasks", "4")
        self.assertEqual((s["masters"], s["token"], s["max_tasks"], s["tags"]),
                         (("ws://a", "ws://b"), "fromfile", 4, ("x",)))  # fmt: skip

    def test_problems(self) -> None:
        path = Path(self.mktemp())
        path.write_text("mastr: ws://a\n")
        for argv, words in [
            ((), "--master: at least one master URL is needed"),
            (("--master", "ws://a"), "--token: needed"),
            (("--master", "ws://a", "--token", "t", "--max-tasks", "0"), "at least 1"),
            (("--master", "ws://a", "--token", "t", "--max-tasks", "x"), "must be an integer"),
            (("--config", str(path)), "mastr: is not a known key"),
        ]:
            with self.assertRaises(SystemExit) as caught:
                self.parse(*argv)
            self.assertEqual(caught.exception.code, 2, argv)
            del words

    def test_gpus(self) -> None:
        base = ("--master", "ws://a", "--token", "t")
        self.assertIsNone(self.parse(*base)["gpus"])  # counted at start
        self.assertEqual(self.parse(*base, "--gpus", "2")["gpus"], 2)
        for bad in ("-1", "two"):
            with self.assertRaises(SystemExit) as caught:
                self.parse(*base, "--gpus", bad)
            self.assertEqual(caught.exception.code, 2)

    def test_talkbackURL(self) -> None:
        self.assertEqual(talkbackURL("ws://h:8080"), "ws://h:8080/api/v1/talkback")
        self.assertEqual(talkbackURL("http://h:8080/"), "ws://h:8080/api/v1/talkback")
        self.assertEqual(talkbackURL("https://h"), "wss://h/api/v1/talkback")
        self.assertEqual(talkbackURL("ws://h/api/v1/talkback"), "ws://h/api/v1/talkback")

    def test_identityKept(self) -> None:
        directory = Path(self.mktemp())
        first = agentID(directory)
        self.assertEqual(agentID(directory), first)
        (directory / "agent.json").write_text("garbage")
        self.assertNotEqual(agentID(directory), first)


class RunnerTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.stateDir = Path(self.mktemp()).resolve()
        self.sent: list[dict[str, Any]] = []

    def runner(self) -> Runner:
        runner = Runner(reactor, self.stateDir, self.sent.append, pollInterval=0.05)
        runner.start()
        self.addCleanup(runner.stop)
        return runner

    async def until(self, condition: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; sent: {self.sent}")
            await deferLater(reactor, 0.05)

    def final(self, taskID: int) -> dict[str, Any] | None:
        for m in self.sent:
            if m["type"] == "task_update" and m["task_id"] == taskID and m["state"] != "running":
                return m
        return None

    def lines(self, taskID: int) -> list[str]:
        return [line for m in self.sent if m["type"] == "log" and m["task_id"] == taskID
                for line in m["lines"]]  # fmt: skip

    def task(self, taskID: int, command: list[str], **extra: Any) -> dict[str, Any]:
        return {"task_id": taskID, "attempt": 1, "command": command, **extra}

    async def test_done(self) -> None:
        runner = self.runner()
        runner.run(self.task(1, ["sh", "-c", "echo one; echo two >&2; echo $MASTERD_TASK_ID $X"],
                             env={"X": "y"}))  # fmt: skip
        await self.until(lambda: self.final(1) is not None)
        self.assertEqual(self.sent[0], {"type": "task_update", "task_id": 1, "attempt": 1,
                                        "state": "running"})  # fmt: skip
        self.assertEqual(self.lines(1), ["one", "two", "1 y"])
        final = dict(self.final(1) or {})
        # What it used: tests/test_agent_usage.py.
        self.assertIn("wall_s", final.pop("usage"))
        self.assertEqual(final, {"type": "task_update", "task_id": 1, "attempt": 1,
                                 "state": "done", "exit_code": 0})  # fmt: skip
        self.assertEqual(runner.runs, {})
        self.assertEqual(os.listdir(self.stateDir / "tasks"), [])

    async def test_failed(self) -> None:
        runner = self.runner()
        runner.run(self.task(2, ["sh", "-c", "exit 3"]))
        runner.run(self.task(3, ["/no/such/program"]))
        runner.run(self.task(4, ["true"], cwd="/no/such/dir"))
        await self.until(lambda: all(self.final(t) for t in (2, 3, 4)))
        self.assertEqual((self.final(2) or {})["exit_code"], 3)
        self.assertEqual((self.final(3) or {})["exit_code"], 127)
        self.assertIn("cannot run '/no/such/program'", " ".join(self.lines(3)))
        self.assertIn("does not exist", (self.final(4) or {})["message"])

    async def test_cancelKillsTheGroup(self) -> None:
        runner = self.runner()
        pidFile = self.stateDir / "child.pid"
        runner.run(self.task(5, ["sh", "-c", f"sleep 300 & echo $! > {pidFile}; wait"]))
        await self.until(pidFile.exists)
        await self.until(lambda: pidFile.read_text().strip() != "")
        child = int(pidFile.read_text())
        self.assertTrue(alive(child))
        runner.cancel(5, 1, "job canceled")
        await self.until(lambda: self.final(5) is not None)
        final = self.final(5) or {}
        self.assertEqual((final["state"], final["exit_code"]), ("failed", -15))
        self.assertEqual(final["message"], "stopped: job canceled")
        await self.until(lambda: not alive(child))

    async def test_timeout(self) -> None:
        runner = self.runner()
        runner.run(self.task(6, ["sleep", "300"], timeout_s=0.3))
        await self.until(lambda: self.final(6) is not None)
        self.assertEqual((self.final(6) or {})["message"], "stopped: timeout")

    async def test_adoptedAfterRestart(self) -> None:
        """
        A task outlives its agent: a new agent on the same state directory
        lists it, follows its log, and reports how it ended.
        """
        first = Runner(reactor, self.stateDir, self.sent.append, pollInterval=0.05)
        gate = self.stateDir / "go"
        first.run(self.task(7, ["sh", "-c", f"echo before; while [ ! -e {gate} ]; do sleep 0.05;"
                                            " done; echo after"]))  # fmt: skip
        # The agent "dies" without stopping its task.
        second = self.runner()
        self.assertEqual(second.listed(), [{"task_id": 7, "attempt": 1}])
        gate.touch()
        await self.until(lambda: self.final(7) is not None)
        self.assertEqual((self.final(7) or {})["state"], "done")
        self.assertEqual(self.lines(7), ["before", "after"])
        await self.until(lambda: 7 in first._ended)  # its child, reaped

    async def test_outbox(self) -> None:
        """
        Reports wait in the outbox until the connection says they were sent;
        a finished task is still listed in the hello, and its final report
        kept (across a restart too) and offered again, until the master
        acknowledges it.
        """
        runner = self.runner()
        runner.run(self.task(8, ["true"]))
        await self.until(lambda: self.final(8) is not None)
        self.assertEqual(runner.listed(), [{"task_id": 8, "attempt": 1}])
        self.assertEqual(runner.unsent(), [])  # still in the outbox
        for message in list(runner.outbox):
            runner.sent(message)
        self.assertEqual(runner.outbox, [])
        self.assertEqual(runner.listed(), [{"task_id": 8, "attempt": 1}])
        [final] = runner.unsent()
        self.assertEqual((final["task_id"], final["state"]), (8, "done"))
        # A restarted agent still has it.
        runner.stop()
        again = Runner(reactor, self.stateDir, lambda message: None)
        self.assertEqual(again.listed(), [{"task_id": 8, "attempt": 1}])
        self.assertEqual(again.unsent(), [final])
        again.acknowledged(8, 1)
        self.assertEqual((again.listed(), again.unsent()), ([], []))
        self.assertEqual(Runner(reactor, self.stateDir, lambda message: None).listed(), [])


class ExceptionReportTests(SynchronousTestCase):
    def test_loggedFailuresGoToTheMaster(self) -> None:
        """
        The agent's own unhandled exceptions are queued as exception
        messages for the master.
        """
        from twisted.logger import Logger
        from twisted.python.failure import Failure

        from masterd.agent.connection import AgentService, AgentSettings

        runner = Runner(reactor, Path(self.mktemp()), lambda message: None)
        service = AgentService(reactor, AgentSettings("id", "t", ("ws://x",), "h"), runner)
        try:
            raise KeyError("gpu0")
        except KeyError:
            failure = Failure()
        service.reportFailures({"log_failure": failure, "log_namespace": "x"})
        service.reportFailures({"log_format": "just a message"})
        [message] = runner.outbox
        self.assertEqual(message["type"], "exception")
        self.assertEqual(message["message"], "KeyError: 'gpu0'")
        self.assertIn("Traceback", message["traceback"])
        del Logger


class _FakeTransport:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def sendTextMessage(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def ping(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass

    def take(self) -> list[dict[str, Any]]:
        sent, self.sent = self.sent, []
        return sent


class AcknowledgementTests(SynchronousTestCase):
    """
    A final report stays with the agent until the master acknowledges it.
    """

    def connected(self) -> tuple[Runner, Any, _FakeTransport, Clock]:
        from masterd.agent.connection import AgentService, AgentSettings, _Talkback

        clock = Clock()
        runner = Runner(clock, Path(self.mktemp()), lambda message: None)
        final = {"type": "task_update", "task_id": 8, "attempt": 1, "state": "done",
                 "exit_code": 0}  # fmt: skip
        runner.unacked[8, 1] = final
        service = AgentService(clock, AgentSettings("id", "t", ("ws://x",), "h"), runner)
        connection = _Talkback(service)
        transport = _FakeTransport()
        connection.negotiationStarted(transport)  # type: ignore[arg-type]
        connection.negotiationFinished()
        return runner, connection, transport, clock

    def test_sentAgainAfterWelcomeUntilAcknowledged(self) -> None:
        runner, connection, transport, _clock = self.connected()
        [hello] = transport.take()
        self.assertEqual(hello["running"], [{"task_id": 8, "attempt": 1}])
        connection.textMessageReceived(json.dumps({"type": "welcome", "heartbeat_s": 10}))
        sent = [m for m in transport.take() if m["type"] == "task_update"]
        self.assertEqual([(m["task_id"], m["state"]) for m in sent], [(8, "done")])
        connection.textMessageReceived(
            json.dumps({"type": "ack", "task_id": 8, "attempt": 1, "state": "done"})
        )
        self.assertEqual((runner.listed(), runner.unsent()), ([], []))

    def test_sentAgainAfterAnErrorToRetry(self) -> None:
        runner, connection, transport, clock = self.connected()
        connection.textMessageReceived(json.dumps({"type": "welcome", "heartbeat_s": 100}))
        transport.take()
        connection.textMessageReceived(
            json.dumps({"type": "error", "retry": True, "message": "database away"})
        )
        connection.textMessageReceived(
            json.dumps({"type": "error", "retry": True, "message": "database away"})
        )
        runner.runs[9] = Run(9, 2, 0, "/dev/null", "/nonexistent")
        clock.advance(RESEND_AFTER_S)
        sent = [m for m in transport.take() if m["type"] == "task_update"]
        # Once for both errors: the task it runs, and the unacknowledged end.
        self.assertEqual([(m["task_id"], m["state"]) for m in sent], [(9, "running"), (8, "done")])


class UsageTests(SynchronousTestCase):
    def test_hardware(self) -> None:
        """
        GPUs as given (discovery is in tests/test_gpus.py).
        """
        from masterd.agent import usage

        self.assertEqual(usage.hardware(gpus=3)["gpus"], 3)

    def test_usage(self) -> None:
        """
        What a heartbeat carries: CPU, memory, disk and I/O counters.
        """
        from masterd.agent.usage import usage

        report = usage()
        for key in ("cpu_percent", "ram_used_mb", "ram_free_mb", "disk_free_mb"):
            self.assertIn(key, report)
        self.assertIsInstance(report.get("io", {}).get("net_recv_bytes", 0), int)
        # The master takes it as it is.
        from masterd.talkback.messages import Heartbeat, parseMessage

        parsed = parseMessage(json.dumps({"type": "heartbeat", "usage": report}))
        assert isinstance(parsed, Heartbeat)
        self.assertEqual(msgspec.to_builtins(parsed.usage), report)
