"""
Every agent is itself, with real processes: a reference agent enrolls and
keeps its credential in its state directory, a forged hello for its id is
refused while it keeps its connection and its task, and the agent comes
back with its credential after a restart.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.websocket import WebSocketClientEndpoint, WebSocketTransport

from ._process import MasterProcess, call, until
from .test_e2e import ADMIN, AGENT_TOKEN, AgentProcess, farmConfig


class _Forger:
    """
    A raw talkback client: one hello, then it notes what it hears until the
    master closes the connection.
    """

    def __init__(self, hello: dict[str, Any]) -> None:
        self.hello = hello
        self.messages: list[dict[str, Any]] = []
        self.transport: WebSocketTransport | None = None
        self.lost: Deferred[None] = Deferred()

    def buildProtocol(self, url: str) -> _Forger:
        return self

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        assert self.transport is not None
        self.transport.sendTextMessage(json.dumps(self.hello))

    def textMessageReceived(self, text: str) -> None:
        self.messages.append(json.loads(text))

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


class EnrolledAgentTests(TestCase):
    timeout = 240

    async def test_enrollRefuseImpostorRestart(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        master = MasterProcess(farmConfig(directory), directory)
        self.addCleanup(master.kill)
        base = f"http://127.0.0.1:{await master.waitForPort()}"

        def logs() -> str:
            return master.log()[-3000:]

        async def get(path: str) -> Any:
            code, body = await call(base, path, ADMIN)
            return body if code == 200 else None

        async def agentIs(**wanted: Any) -> bool:
            agents = await get("/api/v1/agents")
            items = agents["items"] if agents else []
            return len(items) == 1 and all(items[0][k] == v for k, v in wanted.items())

        await until("ready", lambda: _ok(get("/readyz")), 60, logs)
        agent = AgentProcess(directory, "agent0", base)
        self.addCleanup(agent.stop)
        await until("the agent is idle", lambda: agentIs(state="idle"), 60, logs)

        # Enrolled: the secret is in the state directory, readable by the
        # agent's user alone.
        state = agent.directory / "state"
        agentID = json.loads((state / "agent.json").read_text())["id"]
        credential = (state / "credential").read_text().strip()
        self.assertTrue(credential.startswith("mda_"))
        self.assertEqual(stat.S_IMODE((state / "credential").stat().st_mode), 0o600)
        enrolled = (await get(f"/api/v1/agents/{agentID}"))["enrolled_at"]
        self.assertIsNotNone(enrolled)

        code, job = await call(
            base, "/api/v1/jobs", ADMIN, "POST",
            {"title": "long", "frames": "1",
             "command": [sys.executable, "-c", "import time; time.sleep(120)"]},
        )  # fmt: skip
        self.assertEqual(code, 201, job)
        await until("the task runs", lambda: agentIs(state="busy"), 60, logs)
        before = await get(f"/api/v1/agents/{agentID}")
        [task] = (await get(f"/api/v1/jobs/{job['id']}/tasks"))["items"]
        await until(
            "the task is running",
            lambda: _ok(get(f"/api/v1/tasks/{task['id']}"), state="running"),
            60,
            logs,
        )

        # The impostor: the right token, the agent's id, no credential.
        forger = _Forger({
            "type": "hello", "token": AGENT_TOKEN,
            "agent": {"id": agentID, "hostname": "impostor", "max_tasks": 4},
        })  # fmt: skip
        url = base.replace("http://", "ws://") + "/api/v1/talkback"
        await WebSocketClientEndpoint.new(reactor, url).connect(forger)
        forger.lost.addTimeout(30, reactor)
        await forger.lost
        [error, closing] = forger.messages
        self.assertEqual((error["type"], error["field"]), ("error", "credential"))
        self.assertEqual(closing["code"], 4403)

        # The agent was not evicted: same connection, same task, running.
        after = await get(f"/api/v1/agents/{agentID}")
        for key in ("state", "master", "connected_at", "hostname", "enrolled_at"):
            self.assertEqual(after[key], before[key], key)
        running = await get(f"/api/v1/tasks/{task['id']}")
        self.assertEqual((running["state"], running["agent"]["id"]), ("running", agentID))
        self.assertNotIn("closed the connection", agent.logPath.read_text())

        # Restarted, the agent says hello with its credential: the same
        # enrollment, no new secret.
        code, _ = await call(base, f"/api/v1/jobs/{job['id']}/cancel", ADMIN, "POST")
        self.assertEqual(code, 200)
        await until("the agent is idle again", lambda: agentIs(state="idle"), 60, logs)
        agent.stop()
        await until("the agent is offline", lambda: agentIs(state="offline"), 60, logs)
        again = AgentProcess(directory, "agent0", base)
        self.addCleanup(again.stop)
        await until("the agent is back", lambda: agentIs(state="idle"), 60, logs)
        back = await get(f"/api/v1/agents/{agentID}")
        self.assertGreater(back["connected_at"], before["connected_at"])
        self.assertEqual(back["enrolled_at"], enrolled)
        self.assertEqual((state / "credential").read_text().strip(), credential)
        self.assertNotIn("refused", again.logPath.read_text())


async def _ok(pending: Any, **wanted: Any) -> bool:
    body = await pending
    return body is not None and all(body.get(k) == v for k, v in wanted.items())
