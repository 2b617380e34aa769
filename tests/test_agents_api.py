"""
Agents over HTTP, and talkback over a real socket on 127.0.0.1.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.websocket import WebSocketClientEndpoint, WebSocketTransport

from ._api import TOKENS
from .test_talkback import AGENT, OTHER, Base, hello


class AgentHTTPTests(Base):
    async def test_listAndFilter(self) -> None:
        await self.setUpTalkback()
        await self.joined(AGENT)
        second, _ = await self.joined(OTHER)
        await self.say(second, {"type": "heartbeat"})
        await self.assign(agent=OTHER)
        page = await self.api.ok("GET", "/api/v1/agents")
        self.assertEqual([a["id"] for a in page["items"]], sorted([AGENT, OTHER]))
        self.assertEqual(page["next"], None)
        busy = await self.api.ok("GET", "/api/v1/agents?state=busy")
        self.assertEqual([a["id"] for a in busy["items"]], [OTHER])
        idle = await self.api.ok("GET", "/api/v1/agents?state=idle&tag=gpu")
        self.assertEqual([a["id"] for a in idle["items"]], [AGENT])
        self.assertEqual((await self.api.ok("GET", "/api/v1/agents?tag=mac"))["items"], [])
        first = await self.api.ok("GET", "/api/v1/agents?limit=1")
        self.assertEqual(len(first["items"]), 1)
        rest = await self.api.ok("GET", first["next"])
        self.assertEqual(len(rest["items"]), 1)
        agent = page["items"][0]
        for key in ("tasks", "failures", "jobs", "exceptions"):
            self.assertEqual(agent[key], f"/api/v1/agents/{agent['id']}/{key}")
        for path, field in [
            ("/api/v1/agents?state=sleepy", "state"),
            ("/api/v1/agents?after=nope", "after"),
        ]:
            reply = await self.api.call("GET", path)
            self.assertEqual((reply.code, reply.json()["details"]["field"]), (400, field), path)
        # Text that is no agent id names no agent.
        reply = await self.api.call("GET", "/api/v1/agents/nope")
        self.assertEqual((reply.code, reply.json()["details"]["field"]), (404, "agentID"))
        self.assertEqual((await self.api.call("GET", f"/api/v1/agents/{AGENT[:-1]}0")).code, 404)

    async def test_tasksFailuresJobs(self) -> None:
        await self.setUpTalkback()
        connection, _ = await self.joined()
        a, b = await self.assign(frames="1-2")
        tasks = await self.api.ok("GET", f"/api/v1/agents/{AGENT}/tasks")
        self.assertEqual([t["id"] for t in tasks["items"]], [a.task_id, b.task_id])
        for task, state in ((a, "failed"), (b, "done")):
            await self.say(connection, {"type": "task_update", "task_id": task.task_id,
                                        "attempt": task.attempt, "state": state, "exit_code": 1,
                                        "message": "boom"})  # fmt: skip
        [failure] = (await self.api.ok("GET", f"/api/v1/agents/{AGENT}/failures"))["items"]
        self.assertEqual((failure["task"]["id"], failure["error"]), (a.task_id, "boom"))
        [job] = (await self.api.ok("GET", f"/api/v1/agents/{AGENT}/jobs"))["items"]
        self.assertEqual(
            (job["job"]["id"], job["attempts"], job["done"], job["failed"]), (a.job_id, 2, 1, 1)
        )
        self.assertEqual((await self.api.ok("GET", f"/api/v1/agents/{AGENT}/tasks"))["items"], [])

    async def test_agentRefsCarryHostname(self) -> None:
        """
        Wherever a task, an attempt, an assignment or a blocklist names an
        agent, its hostname comes with its id (to tell agents apart); null
        once the agent is deleted.
        """
        await self.setUpTalkback()
        connection, _ = await self.joined()
        a, _ = await self.assign(frames="1-2")
        ref = {"id": AGENT, "href": f"/api/v1/agents/{AGENT}", "hostname": f"node-{AGENT[:4]}"}
        self.assertEqual((await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}"))["agent"], ref)
        for href in (f"/api/v1/assignments?agent={AGENT}", f"/api/v1/agents/{AGENT}/tasks",
                     f"/api/v1/jobs/{a.job_id}/tasks"):  # fmt: skip
            items = (await self.api.ok("GET", href))["items"]
            self.assertEqual([t["agent"] for t in items], [ref, ref], href)
        await self.say(connection, {"type": "task_update", "task_id": a.task_id,
                                    "attempt": a.attempt, "state": "failed",
                                    "exit_code": 1})  # fmt: skip
        [attempt] = (await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}/attempts"))["items"]
        self.assertEqual(attempt["agent"], ref)
        [failure] = (await self.api.ok("GET", f"/api/v1/agents/{AGENT}/failures"))["items"]
        self.assertEqual(failure["agent"], ref)
        await self.api.pool.query(
            "INSERT INTO job_blocklist (job_id, agent_id, failures, blocked)"
            " VALUES (%s, %s, 3, true)",
            (a.job_id, AGENT),
        )
        job = await self.api.ok("GET", f"/api/v1/jobs/{a.job_id}")
        self.assertEqual(job["blocklist"], [{"agent": ref, "failures": 3}])
        connection.connectionLost(Failure(ConnectionError("bye")))
        await connection.drained()
        self.assertEqual((await self.api.call("DELETE", f"/api/v1/agents/{AGENT}")).code, 204)
        [attempt] = (await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}/attempts"))["items"]
        self.assertEqual(attempt["agent"], dict(ref, hostname=None))

    async def test_failuresAndJobsInPages(self) -> None:
        """
        An agent's failures and jobs grow without bound: they come in pages,
        newest first, each with the href of the next.
        """
        await self.setUpTalkback()
        connection, _ = await self.joined()
        failed = []
        for _ in range(3):  # three jobs of two tasks, every task failing
            for task in await self.assign(frames="1-2"):
                await self.say(connection, {"type": "task_update", "task_id": task.task_id,
                                            "attempt": task.attempt, "state": "failed",
                                            "exit_code": 1})  # fmt: skip
                failed.append((task.task_id, task.attempt, task.job_id))
        for what, key, expected in [
            ("failures", lambda i: (i["task"]["id"], i["attempt"]),
             [(t, a) for t, a, _ in reversed(failed)]),
            ("jobs", lambda i: i["job"]["id"], sorted({j for _, _, j in failed}, reverse=True)),
        ]:  # fmt: skip
            seen, href, pages = [], f"/api/v1/agents/{AGENT}/{what}?limit=2", 0
            while href is not None:
                page = await self.api.ok("GET", href)
                seen.extend(key(i) for i in page["items"])
                href, pages = page["next"], pages + 1
            self.assertEqual(seen, expected, what)
            self.assertEqual(pages, (len(expected) + 1) // 2, what)
        for path, field in [
            (f"/api/v1/agents/{AGENT}/failures?after=12", "after"),
            (f"/api/v1/agents/{AGENT}/jobs?after=x", "after"),
        ]:
            reply = await self.api.call("GET", path)
            self.assertEqual((reply.code, reply.json()["details"]["field"]), (400, field), path)

    async def test_patch(self) -> None:
        await self.setUpTalkback()
        await self.joined()
        agent = await self.api.ok(
            "PATCH", f"/api/v1/agents/{AGENT}",
            {"enabled": False, "tags": ["farm-b"], "limits": {"max_ram_mb": 1000}},
        )  # fmt: skip
        self.assertEqual((agent["state"], agent["enabled"]), ("disabled", False))
        self.assertEqual(agent["tags"], ["farm-b", "gpu", "linux"])
        self.assertEqual(agent["limits"]["max_ram_mb"], 1000)
        agent = await self.api.ok(
            "PATCH", f"/api/v1/agents/{AGENT}", {"enabled": True, "limits": {"max_ram_mb": None}}
        )
        self.assertEqual((agent["state"], agent["operator_limits"]), ("idle", {}))
        self.assertEqual(await self.api.ok("PATCH", f"/api/v1/agents/{AGENT}", {}), agent)
        for body, field in [
            ({"enabled": "yes"}, "enabled"),
            ({"limits": {"max_gpus": 1}}, "limits.max_gpus"),
            ({"limits": {"max_tasks": 0}}, "limits.max_tasks"),
            ({"tags": "x"}, "tags"),
            ({"hostname": "x"}, "hostname"),
        ]:
            reply = await self.api.call("PATCH", f"/api/v1/agents/{AGENT}", body)
            self.assertEqual((reply.code, reply.json()["details"]["field"]), (400, field), body)
        reply = await self.api.call("PATCH", f"/api/v1/agents/{AGENT}", {"enabled": False},
                                    role="viewer")  # fmt: skip
        self.assertEqual(reply.code, 403)

    async def test_delete(self) -> None:
        await self.setUpTalkback()
        connection, _ = await self.joined()
        reply = await self.api.call("DELETE", f"/api/v1/agents/{AGENT}", role="operator")
        self.assertEqual(reply.code, 403)
        reply = await self.api.call("DELETE", f"/api/v1/agents/{AGENT}")
        self.assertEqual((reply.code, reply.json()["details"]), (409, {"state": "idle"}))
        connection.connectionLost(Failure(ConnectionError("bye")))
        await connection.drained()
        self.assertEqual((await self.api.call("DELETE", f"/api/v1/agents/{AGENT}")).code, 204)
        self.assertEqual((await self.api.call("GET", f"/api/v1/agents/{AGENT}")).code, 404)


class Client:
    """
    A talkback client over a real WebSocket: collects what the master sends.
    """

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.transport: WebSocketTransport | None = None
        self.lost: Deferred[None] = Deferred()
        self._waiting: list[Deferred[dict[str, Any]]] = []

    def buildProtocol(self, url: str) -> Client:
        return self

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        parsed = json.loads(message)
        if self._waiting:
            self._waiting.pop(0).callback(parsed)
        else:
            self.received.append(parsed)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)

    def next(self) -> Deferred[dict[str, Any]]:
        if self.received:
            return _now(self.received.pop(0))
        d: Deferred[dict[str, Any]] = Deferred()
        d.addTimeout(10, reactor)
        self._waiting.append(d)
        return d

    def send(self, message: Any) -> None:
        assert self.transport is not None
        self.transport.sendTextMessage(message if isinstance(message, str) else json.dumps(message))


def _now(value: dict[str, Any]) -> Deferred[dict[str, Any]]:
    d: Deferred[dict[str, Any]] = Deferred()
    d.callback(value)
    return d


class SocketTests(Base):
    async def setUpSocket(self, **settings: Any) -> str:
        api = await self.setUpTalkback(**settings)
        return api.base.replace("http://", "ws://") + "/api/v1/talkback"

    async def client(self, url: str) -> Client:
        client = Client()
        await WebSocketClientEndpoint.new(reactor, url).connect(client)
        self.addCleanup(self._close, client)
        return client

    async def _close(self, client: Client) -> None:
        if not client.lost.called:
            assert client.transport is not None
            client.transport.loseConnection()
            await client.lost

    async def test_session(self) -> None:
        url = await self.setUpSocket()
        client = await self.client(url)
        client.send(hello())
        welcome = await client.next()
        self.assertEqual((welcome["type"], welcome["agent_id"]), ("welcome", AGENT))
        client.send({"type": "heartbeat", "usage": {"cpu_percent": 3}})
        client.send("{broken")
        error = await client.next()
        self.assertEqual((error["type"], error["field"]), ("error", "(message)"))
        agent = await self.agent()
        self.assertEqual((agent["state"], agent["master"]), ("idle", "test"))
        master = await self.api.ok("GET", "/api/v1/master")
        rows = [r for r in master["requests"]["by_route"] if r["route"] == "/api/v1/talkback"]
        self.assertEqual([(r["status"], r["count"]) for r in rows], [(101, 1)])
        self.assertEqual(master["requests"]["in_flight"], 1)  # only this request
        assert client.transport is not None
        client.transport.loseConnection()
        await client.lost
        for _ in range(100):
            if (await self.agent())["state"] == "offline":
                break
            await deferLater(reactor, 0.02)
        self.assertEqual((await self.agent())["state"], "offline")

    async def test_tooBig(self) -> None:
        url = await self.setUpSocket(max_message_bytes=4096)
        client = await self.client(url)
        client.send(hello())
        await client.next()
        client.send(json.dumps({"type": "heartbeat", "pad": "x" * 10_000}))
        await client.lost
        self.assertEqual(self.registry.stats.errors, 1)

    async def test_upgradeAuth(self) -> None:
        url = await self.setUpSocket()
        http = url.replace("ws://", "http://")
        upgrade = {
            "Connection": ["Upgrade"],
            "Upgrade": ["websocket"],
            "Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQ=="],
            "Sec-WebSocket-Version": ["13"],
        }
        for token, status in (("wrong-token-0123456789", 401), (TOKENS["viewer"], 403)):
            response = await treq.get(
                http, headers={**upgrade, "Authorization": [f"Bearer {token}"]}, persistent=False
            )
            body = json.loads(await response.content())
            self.assertEqual(response.code, status)
            self.assertIn(body["error"], ("unauthorized", "forbidden"))
        response = await treq.get(http, persistent=False)
        body = json.loads(await response.content())
        self.assertEqual((response.code, body["error"]), (400, "websocket_required"))
