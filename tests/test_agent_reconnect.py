"""
The reference agent always comes back: whatever ends a connection or a try,
it tries again with capped backoff, forever; and one state directory serves
one agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from wsproto.utilities import LocalProtocolError

from masterd.agent.connection import (
    FORBIDDEN,
    GOING_AWAY,
    REPLACED,
    REPLACED_ALARM,
    AgentService,
    AgentSettings,
    _Talkback,
)
from masterd.agent.runner import Runner
from masterd.agent.statedir import StateDirectoryBusy, lockStateDir


class _CloseAtOnce(protocol.Protocol):
    """
    A master stopping at the worst moment: it takes the connection, reads the
    upgrade request, and closes without an answer.
    """

    def dataReceived(self, data: bytes) -> None:
        self.factory.connections += 1  # type: ignore[attr-defined]
        assert self.transport is not None
        self.transport.loseConnection()


class HandshakeTests(TestCase):
    timeout = 30

    async def test_closedDuringHandshake(self) -> None:
        """
        A connection closed before the WebSocket handshake ends is a failed
        try, logged at warn, and tried again (before the fix, the agent
        waited for the handshake forever).
        """
        factory = protocol.Factory.forProtocol(_CloseAtOnce)
        factory.connections = 0  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        warnings: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "masterd.agent.connection":
                warnings.append(str(event.get("why", "")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        runner = Runner(reactor, Path(self.mktemp()), lambda message: None)
        settings = AgentSettings(
            "7b0c6b2e-0d3c-4a59-9b4b-6a4a0b9d8e11", "t",
            (f"ws://127.0.0.1:{port.getHost().port}",), "h",
            backoff_initial_s=0.02, backoff_max_s=0.05,
        )  # fmt: skip
        service = AgentService(reactor, settings, runner)
        service.startService()
        self.addCleanup(service.stopService)
        deadline = time.monotonic() + 20
        while factory.connections < 3:  # type: ignore[attr-defined]
            self.assertLess(time.monotonic(), deadline, "the agent stopped trying")
            await deferLater(reactor, 0.02)
        self.assertIn("the connection closed during the WebSocket handshake", warnings)


class _Transport:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def sendTextMessage(self, text: str) -> None:
        self.sent.append(text)

    def ping(self) -> None:
        pass

    def loseConnection(self, code: int = 1000) -> None:
        pass


class BackoffTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        runner = Runner(self.clock, Path(self.mktemp()), lambda message: None)
        self.service = AgentService(
            self.clock,
            AgentSettings("id", "t", ("ws://a", "ws://b"), "h", backoff_initial_s=0.5,
                          backoff_max_s=30),
            runner,
        )  # fmt: skip
        self.errors: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level") is not None and event["log_level"].name == "error":
                self.errors.append(event["log_format"])

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def ended(self, code: int | None, welcomed: bool = True) -> float:
        connection = _Talkback(self.service)
        connection.negotiationStarted(_Transport())  # type: ignore[arg-type]
        if welcomed:
            connection.textMessageReceived(json.dumps({"type": "welcome", "heartbeat_s": 10}))
        if code is not None:
            connection.textMessageReceived(
                json.dumps({"type": "closing", "code": code, "reason": "because"})
            )
        self.service._disconnected("ws://a", connection)
        return self.service._after(connection)

    def test_goingAwayAtOnce(self) -> None:
        """
        A master that stops (1001) or dies: the next URL at once, once.
        """
        self.assertEqual(self.ended(GOING_AWAY), 0.0)
        self.assertEqual(self.ended(None), 0.0)
        # Never welcomed since: backoff.
        self.assertGreaterEqual(self.ended(None, welcomed=False), 0.5)

    def test_replacedBacksOff(self) -> None:
        """
        Replaced (4409) by a connection with the same id: an ever longer
        wait, and after a few in a row an error naming the cause.
        """
        delays = [self.ended(REPLACED) for _ in range(8)]
        self.assertGreater(delays[0], 0)
        # Doubling from 0.5 s up to the cap, plus up to 0.5 s of jitter.
        for i, delay in enumerate(delays):
            base = min(0.5 * 2**i, 30)
            self.assertTrue(base <= delay <= base + 0.5, (i, delays))
        self.assertLessEqual(max(delays), 30 + 0.5)
        self.assertEqual(len(self.errors), 8 - REPLACED_ALARM + 1)
        self.assertIn("another agent is using this id", self.errors[0])
        # Back to normal after a connection that was not replaced.
        self.assertEqual(self.ended(GOING_AWAY), 0.0)
        self.assertEqual(self.service.replaced, 0)

    def test_tryAgainLater(self) -> None:
        """
        1013 (the master is not ready): backoff, growing to the cap.
        """
        delays = [self.ended(1013, welcomed=False) for _ in range(12)]
        self.assertGreaterEqual(delays[0], 0.5)
        self.assertLessEqual(max(delays), 30.5)
        self.assertGreaterEqual(delays[-1], 30)

    def test_refusedCredentialBacksOffLongest(self) -> None:
        """
        4403 (its credential refused): trying again changes nothing until
        someone acts, so the longest wait, and an error saying what to do.
        """
        delay = self.ended(FORBIDDEN)
        self.assertTrue(30 <= delay <= 30.5, delay)
        [error] = self.errors
        self.assertIn("credential/reset", error)

    def test_beatAfterTheCloseFrame(self) -> None:
        """
        A heartbeat due after the master's close frame came and before the
        connection is gone is dropped, not raised from a timed call.
        """

        class Closed(_Transport):
            def ping(self) -> None:
                raise LocalProtocolError("cannot be sent in state CLOSED")

        connection = _Talkback(self.service)
        connection.negotiationStarted(Closed())  # type: ignore[arg-type]
        connection.textMessageReceived(json.dumps({"type": "welcome", "heartbeat_s": 10}))
        self.clock.advance(10)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 20)


class StateDirectoryTests(SynchronousTestCase):
    def test_oneAgentPerDirectory(self) -> None:
        stateDir = Path(self.mktemp())
        held = lockStateDir(stateDir)
        self.addCleanup(held.close)
        self.assertEqual((stateDir / "agent.lock").read_text().strip(), str(os.getpid()))
        # flock is per open file: a second open in this process conflicts too.
        with self.assertRaises(StateDirectoryBusy) as caught:
            lockStateDir(stateDir)
        self.assertEqual(caught.exception.pid, os.getpid())
        self.assertIn(str(stateDir), str(caught.exception))
        held.close()
        lockStateDir(stateDir).close()

    def test_secondAgentExits(self) -> None:
        """
        A second masterd-agent on the same state directory exits at once,
        status 1, with one line naming the directory and the other's pid.
        """
        stateDir = Path(self.mktemp()).resolve()
        held = lockStateDir(stateDir)
        self.addCleanup(held.close)
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "masterd-agent", "--master", "ws://127.0.0.1:9",
             "--token", "t", "--state-dir", str(stateDir)],
            capture_output=True, text=True, timeout=60, cwd=stateDir,
        )  # fmt: skip
        self.assertEqual(result.returncode, 1, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(str(stateDir), lines[0])
        self.assertIn(f"pid {os.getpid()}", lines[0])
