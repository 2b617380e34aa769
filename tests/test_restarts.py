"""
Restarts and failures that nobody should notice, with real processes: a
master that is not ready says so (and only so), and comes up ready.
"""

from __future__ import annotations

import json
import random
import signal
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

from ._process import MasterProcess, alive, call, postmasterPID, until
from .test_e2e import ADMIN, AGENT_TOKEN, AgentProcess, farmConfig


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Probe:
    """
    A talkback client that says hello and notes what it hears; it keeps
    the credential a welcome gives its id in C{credentials}, and presents it.
    """

    def __init__(self, agentID: str, credentials: dict[str, str]) -> None:
        self.agentID = agentID
        self.credentials = credentials
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
        credential = self.credentials.get(self.agentID)
        self.transport.sendTextMessage(json.dumps({
            "type": "hello", "token": AGENT_TOKEN,
            **({"credential": credential} if credential else {}),
            "agent": {"id": self.agentID, "hostname": "probe", "max_tasks": 1},
        }))  # fmt: skip

    def textMessageReceived(self, text: str) -> None:
        message = json.loads(text)
        self.messages.append(message)
        if message["type"] == "welcome" and message.get("credential"):
            self.credentials[self.agentID] = message["credential"]
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


async def tryOnce(url: str, agentID: str, credentials: dict[str, str]) -> tuple[str, Any]:
    """
    One talkback try: what came of it.
    """
    probe = _Probe(agentID, credentials)
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
        credentials: dict[str, str] = {}
        seen: list[str] = []
        outcome, _ = await tryOnce(url, agentID, credentials)
        seen.append(outcome)
        master = MasterProcess(config, directory)
        self.addCleanup(master.kill)
        deadline = time.monotonic() + 120
        welcomes = 0
        while welcomes < 3:
            self.assertLess(time.monotonic(), deadline, f"no welcome; seen {set(seen)}")
            outcome, messages = await tryOnce(url, agentID, credentials)
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


class RestartTests(TestCase):
    """
    The promise: any master may die or restart at any moment and the farm
    carries on.
    """

    timeout = 900

    async def call(self, path: str) -> tuple[int, Any]:
        return await call(self.base, path, ADMIN)

    async def until(self, what: str, check: Any, timeout: float) -> float:
        return await until(what, check, timeout, lambda: self.master.log()[-4000:], 0.1)

    def launch(self) -> MasterProcess:
        self.master = MasterProcess(self.config, self.directory)
        self.addCleanup(self.master.kill)
        return self.master

    async def stop(self, kill: bool) -> None:
        if kill:
            self.master.process.kill()
        else:
            self.master.terminate()
        code = await self.master.wait(90)
        if not kill:
            self.assertIn(code, (0, -signal.SIGTERM), self.master.log()[-3000:])

    async def test_twentyRestarts(self) -> None:
        """
        A master and two reference agents; the master is restarted twenty
        times (SIGTERM, and kill -9 every third time, and now and then in
        the middle of its start). After every restart both agents are
        connected again within their backoff cap plus 5 s, and busy again
        within a sweep while work is queued; the job running across all the
        restarts completes with every frame done exactly once; after the
        last clean stop no postgres process is left.
        """
        rng = random.Random(20261201)
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        port = freePort()
        self.base = f"http://127.0.0.1:{port}"
        # A lost grace longer than any restart: no task may run twice.
        self.config = farmConfig(
            self.directory,
            http={"listen": [f"tcp:{port}:interface=127.0.0.1"], "access_log": False},
            talkback={"heartbeat_s": 1, "agent_timeout_s": 4, "lost_grace_s": 300,
                      "reap_interval_s": 0.5},
            scheduler={"sweep_s": 1, "assign_timeout_s": 120},
        )  # fmt: skip
        self.launch()
        await self.until("ready", self.ready, 60)
        agents = [AgentProcess(self.directory, f"agent{i}", self.base) for i in range(2)]
        for agent in agents:
            self.addCleanup(agent.stop)
        out = self.directory / "frames"
        out.mkdir()
        frames = 160
        code, job = await self.post("/api/v1/jobs", {
            "title": "across restarts", "frames": f"1-{frames}",
            "command": ["sh", "-c", f"echo $MASTERD_ATTEMPT >> {out}/{{frame}}; sleep 0.5"],
        })  # fmt: skip
        self.assertEqual(code, 201, job)
        self.jobID = job["id"]
        await self.until("both agents connected", self.bothConnected, 60)
        backoffCap = 30.0
        for i in range(20):
            await deferLater(reactor, rng.uniform(0.2, 2.0))
            await self.stop(kill=i % 3 == 2)
            self.launch()
            if i % 5 == 4:
                # In the middle of its start: stopped again before it is ready.
                await deferLater(reactor, rng.uniform(0.0, 1.5))
                await self.stop(kill=i % 2 == 1)
                self.launch()
            await self.until(f"restart {i + 1}: ready", self.ready, 60)
            await self.until(f"restart {i + 1}: both agents back", self.bothConnected,
                             backoffCap + 5)  # fmt: skip
            if await self.queued():
                await self.until(f"restart {i + 1}: both agents busy", self.bothBusy, 1 + 3)
        await self.until("the job done", self.jobDone, 300)
        counts = {int(p.name): len(p.read_text().splitlines()) for p in out.iterdir()}
        self.assertEqual(sorted(counts), list(range(1, frames + 1)))
        twice = {frame: n for frame, n in counts.items() if n != 1}
        self.assertEqual(twice, {}, "frames run more than once")
        pid = postmasterPID(self.directory / "pgdata")
        await self.stop(kill=False)
        self.assertIsNone(postmasterPID(self.directory / "pgdata"))
        if pid is not None:
            self.assertFalse(alive(pid), "a postgres process is left")
        for agent in agents:
            log = agent.logPath.read_text()
            at = log.find("Traceback")
            self.assertEqual(at, -1, log[max(0, at - 2000) : at + 2000])

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        response = await treq.post(
            self.base + path, json=body, headers={"Authorization": [f"Bearer {ADMIN}"]},
            persistent=False,
        )  # fmt: skip
        return response.code, json.loads(await response.content())

    async def ready(self) -> bool:
        code, _ = await self.call("/readyz")
        return code == 200

    async def bothConnected(self) -> bool:
        code, body = await self.call("/api/v1/master")
        return code == 200 and body.get("talkback", {}).get("agents_connected") == 2

    async def queued(self) -> int:
        code, body = await self.call(f"/api/v1/jobs/{self.jobID}")
        return int(body["tasks"]["queued"]) if code == 200 else 0

    async def bothBusy(self) -> bool:
        code, body = await self.call(f"/api/v1/jobs/{self.jobID}")
        if code != 200:
            return False
        tasks = body["tasks"]
        return bool(tasks["running"] + tasks["assigned"] >= 2 or tasks["queued"] == 0)

    async def jobDone(self) -> bool:
        code, body = await self.call(f"/api/v1/jobs/{self.jobID}")
        return code == 200 and body["state"] == "done"
