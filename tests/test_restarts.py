"""
Restarts and failures that nobody should notice, with real processes: a
master that is not ready says so (and only so), and comes up ready.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.websocket import ConnectionRejected, WebSocketClientEndpoint, WebSocketTransport

from ._process import MasterProcess
from .test_e2e import ADMIN, AGENT_TOKEN, farmConfig


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Probe:
    """
    A talkback client that says hello and notes what it hears.
    """

    def __init__(self, agentID: str) -> None:
        self.agentID = agentID
        self.messages: list[dict[str, Any]] = []
        self.transport: WebSocketTransport | None = None
        self.lost: Deferred[None] = Deferred()
        self.connecting: Deferred[Any] | None = None

    def buildProtocol(self, url: str) -> _Probe:
        return self

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        assert self.transport is not None
        self.transport.sendTextMessage(json.dumps({
            "type": "hello", "token": AGENT_TOKEN,
            "agent": {"id": self.agentID, "hostname": "probe", "max_tasks": 1},
        }))  # fmt: skip

    def textMessageReceived(self, text: str) -> None:
        message = json.loads(text)
        self.messages.append(message)
        if message["type"] == "welcome" and self.transport is not None:
            self.transport.loseConnection()

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        if self.connecting is not None and not self.connecting.called:
            self.connecting.cancel()
        self.lost.callback(None)


async def tryOnce(url: str, agentID: str) -> tuple[str, Any]:
    """
    One talkback try: what came of it.
    """
    probe = _Probe(agentID)
    endpoint = WebSocketClientEndpoint.new(reactor, url, connectTimeout=5)
    probe.connecting = Deferred.fromCoroutine(endpoint.connect(probe))
    probe.connecting.addTimeout(10, reactor)
    try:
        await probe.connecting
    except (ConnectError, ConnectionRefusedError):
        return "refused", None
    except ConnectionRejected as e:
        code = getattr(e.response, "code", None)
        return ("503" if code == 503 else f"HTTP {code}"), None
    except CancelledError:
        return "closed during the handshake", None
    lost = probe.lost
    lost.addTimeout(10, reactor)
    await lost
    types = [m["type"] for m in probe.messages]
    if "welcome" in types:
        return "welcome", probe.messages
    closing = [m for m in probe.messages if m["type"] == "closing"]
    if closing and closing[0]["code"] == 1013 and "error" not in types:
        return "1013", probe.messages
    return "something else", probe.messages


class ReadyMeansReadyTests(TestCase):
    timeout = 180

    async def test_talkbackFromBeforeStart(self) -> None:
        """
        A client that connects in a loop from before the master starts sees
        only refused connections, 503s, 1013s and, once the master is
        ready, a welcome; and the master is listed once it says ready.
        """
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        port = freePort()
        config = farmConfig(directory, http={"listen": [f"tcp:{port}:interface=127.0.0.1"],
                                             "access_log": False})  # fmt: skip
        url = f"ws://127.0.0.1:{port}/api/v1/talkback"
        agentID = str(uuid.uuid4())
        seen: list[str] = []
        outcome, _ = await tryOnce(url, agentID)
        seen.append(outcome)
        master = MasterProcess(config, directory)
        self.addCleanup(master.kill)
        deadline = time.monotonic() + 120
        welcomes = 0
        while welcomes < 3:
            self.assertLess(time.monotonic(), deadline, f"no welcome; seen {set(seen)}")
            outcome, messages = await tryOnce(url, agentID)
            seen.append(outcome)
            self.assertIn(outcome, {"refused", "503", "1013", "welcome"},
                          f"{outcome}: {messages}\n{master.log()[-3000:]}")  # fmt: skip
            if outcome == "welcome":
                welcomes += 1
            else:
                await deferLater(reactor, 0.01)
        self.assertEqual(seen[0], "refused")
        # Ready means registered: listed among the masters at once.
        base = f"http://127.0.0.1:{port}"
        response = await treq.get(base + "/readyz", persistent=False)
        self.assertEqual(response.code, 200)
        response = await treq.get(
            base + "/api/v1/masters", headers={"Authorization": [f"Bearer {ADMIN}"]},
            persistent=False,
        )  # fmt: skip
        names = [m["name"] for m in json.loads(await response.content())["items"]]
        self.assertIn("proc-master", names)
        self.assertNotIn("Traceback", master.log())
