"""
The talkback protocol in memory (a fake WebSocket transport and a Clock),
over a real database.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from masterd.db import Batcher
from masterd.events import TaskCanceled
from masterd.jobs import lifecycle
from masterd.talkback import (
    POLICY,
    REPLACED,
    TIMED_OUT,
    TOO_BIG,
    UNAUTHORIZED,
    TalkbackConnection,
    TalkbackSettings,
)
from masterd.talkback._connection import _CappedBuffer

from ._api import API, TOKENS, startAPI

AGENT = "6f1c0b9e-52a5-4d36-9a8f-0d1c2b3a4e5f"
OTHER = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


class FakeTCP:
    def __init__(self) -> None:
        self.paused = False
        self.aborted = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def abortConnection(self) -> None:
        self.aborted = True


class FakeWebSocket:
    """
    The transport side of a WebSocket connection, in memory.
    """

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: int | None = None
        self.pings = 0
        self.transport = FakeTCP()
        self._textBuffer: Any = None
        self._bytesBuffer: Any = None

    def sendTextMessage(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def sendBytesMessage(self, data: bytes) -> None:
        raise AssertionError("the master sends text")

    def loseConnection(self, code: int = 1000) -> None:
        self.closed = code

    def ping(self, payload: bytes = b"") -> None:
        self.pings += 1

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]

    def take(self) -> list[dict[str, Any]]:
        sent, self.sent = self.sent, []
        return sent


def hello(
    agentID: str = AGENT, token: str | None = TOKENS["agent"], **extra: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "hello",
        "agent": {
            "id": agentID,
            "hostname": f"node-{agentID[:4]}",
            "os": "linux",
            "version": "1.0",
            "cpus": 16,
            "ram_mb": 64000,
            "gpus": 1,
            "tags": ["linux", "gpu"],
            "software": {"blender": "4.2"},
            "max_tasks": 2,
        },
        "running": [],
    }
    if token is not None:
        message["token"] = token
    message.update(extra)
    return message


def update(a: lifecycle.Assignment, state: str, **extra: Any) -> dict[str, Any]:
    message = {"type": "task_update", "task_id": a.task_id, "attempt": a.attempt, "state": state}
    message.update(extra)
    return message


def ack(a: lifecycle.Assignment, state: str, **extra: Any) -> dict[str, Any]:
    message = {"type": "ack", "task_id": a.task_id, "attempt": a.attempt, "state": state}
    message.update(extra)
    return message


def cancel(a: lifecycle.Assignment, reason: str, **extra: Any) -> dict[str, Any]:
    message = {"type": "cancel", "task_id": a.task_id, "attempt": a.attempt, "reason": reason}
    message.update(extra)
    return message


class Base(TestCase):
    timeout = 60

    async def setUpTalkback(self, **settings: Any) -> API:
        self.clock = Clock()
        self.api = await startAPI(self, settings=TalkbackSettings(**settings), clock=self.clock)
        self.registry = self.api.registry
        #: The credential each agent id got when it enrolled: what its later
        #: hellos present, as a real agent's do.
        self.credentials: dict[str, str] = {}
        return self.api

    def connect(self, principal: Any = None) -> tuple[TalkbackConnection, FakeWebSocket]:
        connection = TalkbackConnection(
            self.registry, self.api.auth, self.api.settings, self.clock, principal
        )
        transport = FakeWebSocket()
        connection.negotiationStarted(transport)  # type: ignore[arg-type]
        connection.negotiationFinished()
        self.addCleanup(self.lose, connection)
        return connection, transport

    async def lose(self, connection: TalkbackConnection) -> None:
        if not connection.closing or connection.agentID in self.registry.connections:
            connection.connectionLost(Failure(ConnectionError("gone")))
        await connection.drained()

    async def say(self, connection: TalkbackConnection, message: Any) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        connection.textMessageReceived(text)
        await connection.drained()

    def helloOf(self, agent: str = AGENT, **extra: Any) -> dict[str, Any]:
        """
        A hello for C{agent} with its credential once it has one.
        """
        if agent in self.credentials:
            extra.setdefault("credential", self.credentials[agent])
        return hello(agent, **extra)

    def welcomed(self, agent: str, transport: FakeWebSocket) -> None:
        """
        Check the first message is a welcome; keep the credential it brings.
        """
        self.assertEqual(transport.sent[0]["type"], "welcome", transport.sent)
        if transport.sent[0]["credential"] is not None:
            self.credentials[agent] = transport.sent[0]["credential"]

    async def joined(
        self, agent: str = AGENT, **extra: Any
    ) -> tuple[TalkbackConnection, FakeWebSocket]:
        connection, transport = self.connect()
        await self.say(connection, self.helloOf(agent, **extra))
        self.welcomed(agent, transport)
        return connection, transport

    async def assign(self, agent: str = AGENT, frames: str = "1") -> list[lifecycle.Assignment]:
        job = await self.api.submit(frames=frames)
        rows = await self.api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],)
        )
        return await self.api.pool.transaction(
            lambda txn: lifecycle.assign(txn, agent, [r[0] for r in rows])
        )

    async def agent(self, agent: str = AGENT) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.ok("GET", f"/api/v1/agents/{agent}")
        return result


class HelloTests(Base):
    async def test_welcome(self) -> None:
        await self.setUpTalkback(heartbeat_s=7)
        connection, transport = await self.joined()
        self.assertTrue(self.credentials[AGENT].startswith("mda_"))
        self.assertEqual(
            transport.sent,
            [{"type": "welcome", "agent_id": AGENT, "master": "test", "heartbeat_s": 7,
              "agent_timeout_s": 45.0, "credential": self.credentials[AGENT]}],
        )  # fmt: skip
        self.assertIs(self.registry.connections[AGENT], connection)
        agent = await self.agent()
        self.assertEqual(
            (agent["state"], agent["master"], agent["hostname"]), ("idle", "test", "node-6f1c")
        )
        self.assertEqual((agent["cpus"], agent["ram_mb"], agent["gpus"]), (16, 64000, 1))
        self.assertEqual(agent["tags"], ["gpu", "linux"])
        self.assertEqual(agent["software"], {"blender": "4.2"})
        self.assertEqual(agent["limits"], {"max_tasks": 2, "max_ram_mb": 64000, "max_cpus": 16})
        self.assertTrue(agent["connected_at"].endswith("Z"))

    async def test_tokenFromUpgrade(self) -> None:
        await self.setUpTalkback()
        principal = self.api.auth.identify(TOKENS["agent"])
        connection, transport = self.connect(principal)
        await self.say(connection, hello(token=None))
        self.assertEqual(transport.types(), ["welcome"])

    async def test_adminMayBeAnAgent(self) -> None:
        await self.setUpTalkback()
        connection, transport = self.connect()
        await self.say(connection, hello(token=TOKENS["admin"]))
        self.assertEqual(transport.types(), ["welcome"])

    async def test_refused(self) -> None:
        await self.setUpTalkback()
        for token, words in [
            (None, "a valid token of role agent is needed"),
            ("wrong-token-0123456789", "a valid token of role agent is needed"),
            (TOKENS["viewer"], "role viewer may not be an agent"),
        ]:
            connection, transport = self.connect()
            await self.say(connection, hello(token=token))
            [error, closing] = transport.sent
            self.assertEqual((error["type"], error["field"]), ("error", "token"))
            self.assertIn(words, error["message"])
            # Why it closes, for clients that cannot read the close frame.
            self.assertEqual(
                closing, {"type": "closing", "code": UNAUTHORIZED, "reason": "not authorized"}
            )
            self.assertEqual(transport.closed, UNAUTHORIZED)
        self.assertEqual(self.registry.connections, {})
        self.assertEqual((await self.api.call("GET", f"/api/v1/agents/{AGENT}")).code, 404)

    async def test_helloWhileTheDatabaseIsAway(self) -> None:
        """
        A hello the master cannot write (its pool failing fast, as in an
        outage) is closed with 1013, try again later, saying so first:
        never "failed to handle".
        """
        await self.setUpTalkback()
        self.api.pool.healthy = False
        self.addCleanup(setattr, self.api.pool, "healthy", True)
        connection, transport = self.connect()
        await self.say(connection, hello())
        self.assertEqual(transport.sent[-1]["type"], "closing")
        self.assertEqual(transport.sent[-1]["code"], 1013)
        self.assertIn("try again later", transport.sent[-1]["reason"])
        self.assertEqual(transport.closed, 1013)
        self.assertNotIn("error", [m["type"] for m in transport.sent])

    async def test_helloFirst(self) -> None:
        await self.setUpTalkback()
        connection, transport = self.connect()
        await self.say(connection, {"type": "heartbeat"})
        self.assertEqual(transport.sent[0]["message"], "type: the first message must be hello")
        self.assertEqual(transport.closed, UNAUTHORIZED)

    async def test_badHello(self) -> None:
        await self.setUpTalkback()
        for change, field in [
            ({"agent": None}, "agent"),
            ({"agent": {"hostname": "x"}}, "agent.id"),
            ({"agent": {"id": "nope", "hostname": "x"}}, "agent.id"),
            ({"agent": {"id": AGENT, "hostname": ""}}, "agent.hostname"),
            ({"agent": {"id": AGENT, "hostname": "x", "cpus": "many"}}, "agent.cpus"),
            ({"agent": {"id": AGENT, "hostname": "x", "tags": [1]}}, "agent.tags[0]"),
            ({"agent": {"id": AGENT, "hostname": "x", "colour": 1}}, "agent.colour"),
            ({"running": [{"task_id": 1}]}, "running[0].attempt"),
        ]:
            connection, transport = self.connect()
            await self.say(connection, hello(**change))
            [error] = transport.sent
            self.assertEqual(error["field"], field, change)
            self.assertIsNone(transport.closed)
            # The connection stays, and a good hello still works.
            await self.say(connection, self.helloOf())
            self.assertEqual(transport.types(), ["error", "welcome"])
            self.credentials.setdefault(AGENT, transport.sent[1]["credential"])
            await self.lose(connection)

    async def test_replaced(self) -> None:
        await self.setUpTalkback()
        first, firstTransport = await self.joined()
        second, _ = await self.joined()
        self.assertEqual(firstTransport.closed, REPLACED)
        self.assertIs(self.registry.connections[AGENT], second)
        await self.lose(first)
        self.assertEqual((await self.agent())["state"], "idle")  # still connected


class MessageTests(Base):
    async def test_badMessagesKeepTheConnection(self) -> None:
        await self.setUpTalkback(max_errors=3)
        connection, transport = await self.joined()
        transport.take()
        for message, field in [
            ("{not json", "(message)"),
            ("[1, 2]", "(message)"),
            ({"type": "dance"}, "type"),
            ({"type": "task_update", "task_id": 1, "attempt": 1, "state": "asleep"}, "state"),
        ]:
            await self.say(connection, message)
            error = transport.take()[0]
            self.assertEqual((error["type"], error["field"]), ("error", field))
        self.assertEqual(transport.closed, POLICY)  # the fourth error is one too many
        self.assertEqual(self.registry.stats.errors, 4)

    async def test_binaryRefused(self) -> None:
        await self.setUpTalkback()
        connection, transport = await self.joined()
        transport.take()
        connection.bytesMessageReceived(b"\x00")
        [error] = transport.take()
        self.assertIn("binary messages are not accepted", error["message"])

    def test_tooBig(self) -> None:
        """
        A message past the limit closes with 1009 as soon as its fragments
        pass the limit, without keeping them.
        """
        overflowed: list[bool] = []
        buffer = _CappedBuffer("", 10, lambda: overflowed.append(True))
        buffer.add("12345")
        buffer.add("678")
        self.assertEqual(buffer.done(), "12345678")
        buffer.add("123456")
        buffer.add("7890ab")
        self.assertEqual((overflowed, buffer.data), ([True], ""))
        buffer.add("more")
        self.assertEqual(overflowed, [True])

    async def test_tooBigCloses(self) -> None:
        await self.setUpTalkback(max_message_bytes=1024)
        _, transport = self.connect()
        transport._textBuffer.add("x" * 2000)
        self.assertEqual(transport.closed, TOO_BIG)

    async def test_heartbeatsBatched(self) -> None:
        await self.setUpTalkback()
        connection, transport = await self.joined()
        queries = self.api.pool
        usage = {
            "cpu_percent": 12.5,
            "load_avg": [1, 2, 3],
            "ram_free_mb": 1000,
            "io": {"disk_read_bytes": 1},
        }
        self.clock.advance(3)
        for _ in range(5):
            await self.say(connection, {"type": "heartbeat", "usage": usage})
        # Nothing written per heartbeat: one statement for all, at the flush.
        before = (await self.agent())["last_seen"]
        self.assertEqual(await self.registry.flush(), 1)
        agent = await self.agent()
        self.assertEqual(agent["usage"], usage)
        self.assertGreater(agent["last_seen"], before)
        self.assertEqual(await self.registry.flush(), 0)
        await self.say(connection, {"type": "heartbeat", "usage": {"cpu_percent": "hot"}})
        self.assertEqual(transport.sent[-1]["field"], "usage.cpu_percent")
        del queries

    async def test_limits(self) -> None:
        await self.setUpTalkback()
        connection, _ = await self.joined()
        await self.say(connection, {"type": "limits", "max_tasks": 1, "max_ram_mb": 32000})
        agent = await self.agent()
        self.assertEqual(agent["limits"], {"max_tasks": 1, "max_ram_mb": 32000, "max_cpus": 16})

    async def test_exception(self) -> None:
        await self.setUpTalkback()
        connection, _ = await self.joined()
        await self.say(connection, {"type": "exception", "message": "KeyError: 'x'",
                                    "traceback": "Traceback ..."})  # fmt: skip
        [item] = (await self.api.ok("GET", f"/api/v1/agents/{AGENT}/exceptions"))["items"]
        self.assertEqual((item["message"], item["traceback"]), ("KeyError: 'x'", "Traceback ..."))

    async def test_stats(self) -> None:
        await self.setUpTalkback()
        connection, _ = await self.joined()
        await self.say(connection, {"type": "heartbeat"})
        master = await self.api.ok("GET", "/api/v1/master")
        talkback = master["talkback"]
        self.assertEqual(talkback["agents_connected"], 1)
        self.assertEqual(talkback["messages_in"], {"Heartbeat": 1, "Hello": 1})
        self.assertEqual(talkback["messages_out"], {"welcome": 1})
        self.assertGreater(talkback["bytes_in"], 100)


class LivenessTests(Base):
    async def test_pingsAndTimeout(self) -> None:
        await self.setUpTalkback(heartbeat_s=10, agent_timeout_s=25)
        connection, transport = await self.joined()
        self.clock.advance(10)
        self.assertEqual(transport.pings, 1)
        connection.pongReceived(b"")
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertEqual((transport.pings, transport.closed), (3, None))
        self.clock.advance(10)  # 30 s since the pong
        self.assertEqual(transport.closed, TIMED_OUT)
        self.clock.advance(5)
        self.assertTrue(transport.transport.aborted)

    async def test_eachOnItsOwnPeriod(self) -> None:
        """
        One timer serves every connection, yet each is pinged a heartbeat
        after its own last ping; the timer stops with the last connection.
        """
        await self.setUpTalkback(heartbeat_s=10, agent_timeout_s=25, hello_timeout_s=60)
        _, first = self.connect()
        self.clock.advance(5)
        _, later = self.connect()
        self.clock.advance(5)
        self.assertEqual((first.pings, later.pings), (1, 0))
        self.clock.advance(5)
        self.assertEqual((first.pings, later.pings), (1, 1))
        for connection in list(self.registry._live):
            connection.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def test_messagesCountAsLife(self) -> None:
        await self.setUpTalkback(heartbeat_s=10, agent_timeout_s=25)
        connection, transport = await self.joined()
        for _ in range(6):
            self.clock.advance(10)
            await self.say(connection, {"type": "heartbeat"})
        self.assertIsNone(transport.closed)

    async def test_noHello(self) -> None:
        await self.setUpTalkback(heartbeat_s=10, agent_timeout_s=25)
        _, transport = self.connect()
        self.clock.advance(30)
        self.assertEqual(transport.closed, TIMED_OUT)


class TaskTests(Base):
    async def test_updatesAndFencing(self) -> None:
        await self.setUpTalkback()
        connection, transport = await self.joined()
        [a] = await self.assign()
        transport.take()
        await self.say(connection, update(a, "running", progress=0.5))
        task = await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}")
        self.assertEqual((task["state"], task["progress"]), ("running", 0.5))
        # A report for another attempt changes nothing; a "running" one is
        # refused with a cancel, a final one only acknowledged (the agent
        # has stopped that task already).
        await self.say(connection, update(a, "running", attempt=a.attempt + 1))
        self.assertEqual(
            transport.take(), [cancel(a, "not this agent's attempt", attempt=a.attempt + 1)]
        )
        await self.say(connection, update(a, "done", attempt=a.attempt + 1))
        self.assertEqual(transport.take(), [ack(a, "done", attempt=a.attempt + 1)])
        self.assertEqual(
            (await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}"))["state"], "running"
        )
        await self.say(connection, update(a, "done", exit_code=0))
        self.assertEqual((await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}"))["state"], "done")
        # Acknowledged once written, so that the agent may forget it.
        self.assertEqual(transport.take(), [ack(a, "done")])
        # Sent again (the ack was lost): acknowledged again, nothing changes.
        await self.say(connection, update(a, "done", exit_code=0))
        self.assertEqual(transport.take(), [ack(a, "done")])
        [attempt] = (await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}/attempts"))["items"]
        self.assertEqual(attempt["state"], "done")

    async def test_status(self) -> None:
        """
        A report's status (an OpenJD task's openjd_status) becomes the task's
        status; a report without one leaves it; a new attempt starts without
        one.
        """
        await self.setUpTalkback()
        connection, transport = await self.joined()
        [a] = await self.assign()
        transport.take()
        path = f"/api/v1/tasks/{a.task_id}"
        self.assertIsNone((await self.api.ok("GET", path))["status"])
        await self.say(connection, update(a, "running", progress=0.2, status="loading scene"))
        await self.say(connection, update(a, "running", progress=0.4))
        task = await self.api.ok("GET", path)
        self.assertEqual((task["progress"], task["status"]), (0.4, "loading scene"))
        await self.say(connection, update(a, "running", status="x" * 1001))
        [error] = transport.take()
        self.assertEqual((error["type"], error["field"]), ("error", "status"))
        # Another attempt's status changes nothing.
        await self.say(connection, update(a, "running", attempt=a.attempt + 1, status="other"))
        self.assertEqual((await self.api.ok("GET", path))["status"], "loading scene")
        transport.take()
        await self.say(connection, update(a, "failed", exit_code=2, message="no licence left",
                                          status="giving up"))  # fmt: skip
        task = await self.api.ok("GET", path)
        self.assertEqual((task["state"], task["error"], task["status"]),
                         ("queued", "no licence left", "giving up"))  # fmt: skip
        [b] = await self.api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, [a.task_id]))
        self.assertEqual(b.attempt, a.attempt + 1)
        self.assertIsNone((await self.api.ok("GET", path))["status"])

    async def test_anotherAgentsTask(self) -> None:
        """
        Nothing an agent sends touches another agent's tasks.
        """
        await self.setUpTalkback()
        connection, transport = await self.joined()
        [a] = await self.assign(agent=OTHER)
        transport.take()
        for message in (
            {"type": "task_update", "task_id": a.task_id, "attempt": a.attempt, "state": "failed"},
            {"type": "log", "task_id": a.task_id, "attempt": a.attempt, "lines": ["x"]},
        ):
            await self.say(connection, message)
            # The failed report is only acknowledged: the agent has stopped.
            expected = "ack" if message["type"] == "task_update" else "cancel"
            self.assertEqual(transport.take()[0]["type"], expected)
        task = await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}")
        self.assertEqual((task["state"], task["agent"]["id"]), ("assigned", OTHER))
        self.assertEqual((await self.api.call("GET", f"{task['href']}/log")).body, b"")

    async def test_logsBatched(self) -> None:
        """
        Log messages of several attempts written in one batch are numbered
        on per attempt in the order they came, and written before a done
        that came after them; another agent's lines are refused.
        """
        await self.setUpTalkback()
        batcher = Batcher(self.api.pool)
        self.registry.store._batcher = batcher
        connection, transport = await self.joined()
        a, b = await self.assign(frames="1-2")
        [c] = await self.assign(agent=OTHER)
        await self.say(connection, {"type": "log", "task_id": a.task_id, "attempt": a.attempt,
                                    "lines": ["a1"]})  # fmt: skip
        transport.take()
        before = batcher.batches
        # A report first, so that reports come first in the batch: the log
        # lines must still be written before the done that follows them.
        connection.textMessageReceived(json.dumps(update(b, "running")))
        for task, lines in ((a, ["a2", "a3"]), (b, ["b1"]), (a, []), (c, ["x"]), (a, ["a4"])):
            connection.textMessageReceived(json.dumps(
                {"type": "log", "task_id": task.task_id, "attempt": task.attempt,
                 "lines": lines}))  # fmt: skip
        connection.textMessageReceived(json.dumps(update(a, "done", exit_code=0)))
        await connection.drained()
        self.assertEqual(batcher.batches - before, 1)
        for task, text in ((a, "a1\na2\na3\na4\n"), (b, "b1\n"), (c, "")):
            reply = await self.api.call("GET", f"/api/v1/tasks/{task.task_id}/log")
            self.assertEqual(reply.body.decode(), text)
        self.assertEqual(
            [m["type"] for m in transport.take()], ["cancel", "ack"]
        )  # the other agent's task; the done
        task = await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}")
        self.assertEqual(task["state"], "done")

    async def test_logsCut(self) -> None:
        """
        An attempt keeps at most the configured number of lines: the chunk
        that crosses the limit is cut and says so, later ones are dropped.
        """
        await self.setUpTalkback()
        self.registry.store.maxLogLines = 5
        connection, transport = await self.joined()
        a, b = await self.assign(frames="1-2")
        for task, lines in ((a, ["1", "2", "3"]), (a, ["4", "5", "6", "7"]), (a, ["8"]),
                            (b, ["1", "2", "3", "4", "5"]), (b, ["6"]), (b, ["7"])):  # fmt: skip
            await self.say(connection, {"type": "log", "task_id": task.task_id,
                                        "attempt": task.attempt, "lines": lines})  # fmt: skip
        cut = "[masterd: output cut at 5 lines]"
        for task, expected in ((a, ["1", "2", "3", "4", "5", cut]),
                               (b, ["1", "2", "3", "4", "5", cut])):  # fmt: skip
            reply = await self.api.call("GET", f"/api/v1/tasks/{task.task_id}/log")
            self.assertEqual(reply.body.decode().splitlines(), expected)
        # Still the agent's attempts: no cancel for the lines dropped.
        self.assertEqual([m for m in transport.take() if m["type"] == "cancel"], [])

    async def test_logs(self) -> None:
        await self.setUpTalkback()
        connection, _ = await self.joined()
        [a] = await self.assign()
        for lines in (["one", "two"], ["three"], ["four", "fünf"]):
            await self.say(connection, {"type": "log", "task_id": a.task_id,
                                        "attempt": a.attempt, "lines": lines})  # fmt: skip
        reply = await self.api.call("GET", f"/api/v1/tasks/{a.task_id}/log")
        self.assertEqual(reply.body.decode(), "one\ntwo\nthree\nfour\nfünf\n")
        self.assertEqual(reply.header("content-type"), "text/plain; charset=utf-8")
        self.assertEqual(reply.header("x-masterd-next-after"), "5")
        reply = await self.api.call("GET", f"/api/v1/tasks/{a.task_id}/log?after=2&attempt=1")
        self.assertEqual(reply.body.decode(), "three\nfour\nfünf\n")
        reply = await self.api.call("GET", f"/api/v1/tasks/{a.task_id}/log?after=5")
        self.assertEqual((reply.body, reply.header("x-masterd-next-after")), (b"", "5"))
        reply = await self.api.call("GET", f"/api/v1/tasks/{a.task_id}/log?attempt=x")
        self.assertEqual(reply.json()["details"]["field"], "attempt")

    async def test_cancelDelivered(self) -> None:
        """
        Canceling a job reaches the agent running its task as cancel; the
        agent's following "failed" ends nothing more and draws no second
        cancel.
        """
        await self.setUpTalkback()
        connection, transport = await self.joined()
        [a] = await self.assign()
        transport.take()
        await self.api.ok("POST", f"/api/v1/jobs/{a.job_id}/cancel")
        self.assertEqual(transport.take(), [cancel(a, "job canceled")])
        await self.say(connection, update(a, "failed", exit_code=-15))
        self.assertEqual(transport.take(), [ack(a, "failed")])
        [attempt] = (await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}/attempts"))["items"]
        self.assertEqual(attempt["state"], "canceled")

    async def test_cancelForAgentElsewhere(self) -> None:
        await self.setUpTalkback()
        _, transport = await self.joined()
        transport.take()
        self.api.events.publish(TaskCanceled(1, 1, OTHER, "x"))
        self.assertEqual(transport.take(), [])

    async def test_operatorLimits(self) -> None:
        await self.setUpTalkback()
        _, transport = await self.joined()
        transport.take()
        agent = await self.api.ok("PATCH", f"/api/v1/agents/{AGENT}", {"limits": {"max_tasks": 1}})
        self.assertEqual(agent["limits"]["max_tasks"], 1)
        self.assertEqual(transport.take(), [{"type": "limits", "max_tasks": 1}])


class ReconnectTests(Base):
    async def test_reconcile(self) -> None:
        """
        On hello, tasks the master has on the agent that it does not list are
        requeued as lost; tasks it lists that are not its own get cancel.
        """
        await self.setUpTalkback()
        first, _ = await self.joined()
        a, b = await self.assign(frames="1-2")
        [c] = await self.assign(agent=OTHER)
        first.connectionLost(Failure(ConnectionError("dropped")))
        await first.drained()
        self.assertEqual((await self.agent())["state"], "offline")
        _, transport = await self.joined(
            running=[{"task_id": b.task_id, "attempt": b.attempt},
                     {"task_id": c.task_id, "attempt": c.attempt}]
        )  # fmt: skip
        self.assertEqual(transport.sent[1:], [{"type": "cancel", "task_id": c.task_id,
                                                "attempt": c.attempt,
                                                "reason": "not this agent's attempt"}])  # fmt: skip
        lost = await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}")
        self.assertEqual((lost["state"], lost["agent"]), ("queued", None))
        [attempt] = (await self.api.ok("GET", lost["attempts"]))["items"]
        self.assertEqual(attempt["state"], "lost")
        kept = await self.api.ok("GET", f"/api/v1/tasks/{b.task_id}")
        self.assertEqual((kept["state"], kept["agent"]["id"]), ("assigned", AGENT))
        other = await self.api.ok("GET", f"/api/v1/tasks/{c.task_id}")
        self.assertEqual(other["agent"]["id"], OTHER)
        self.assertEqual((await self.agent())["state"], "busy")

    async def test_lostGrace(self) -> None:
        """
        A dropped agent's tasks are requeued once the lost grace has passed,
        unless it has reconnected and listed them.
        """
        await self.setUpTalkback()
        self.clock.advance(1_800_000_000)
        first, _ = await self.joined()
        [a] = await self.assign()
        first.connectionLost(Failure(ConnectionError("dropped")))
        await first.drained()
        store = self.registry.store
        self.assertEqual(await store.reap(self.clock.seconds() - 45), [])
        self.clock.advance(46)
        self.assertEqual(await store.reap(self.clock.seconds() - 45), [(AGENT, a.task_id, 1)])
        self.assertEqual(
            (await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}"))["state"], "queued"
        )

        # Back in time: the agent reconnects within the grace, listing its task.
        [b] = await self.assign()
        _, _ = await self.joined(running=[{"task_id": b.task_id, "attempt": b.attempt}])
        self.clock.advance(100)
        self.assertEqual(await store.reap(self.clock.seconds() - 45), [])


class ServiceTests(Base):
    async def test_stopSaysGoingAway(self) -> None:
        """
        A master stopping cleanly closes every talkback connection with 1001
        (going away), so agents reconnect elsewhere at once.
        """
        from masterd.talkback import GOING_AWAY, TalkbackService

        await self.setUpTalkback()
        _, first = await self.joined()
        _, second = await self.joined(OTHER)
        service = TalkbackService(self.registry, self.clock, 1.0, 45.0, 5.0)
        await service.start()
        await service.stop()
        self.assertEqual((first.closed, second.closed), (GOING_AWAY, GOING_AWAY))
        # Marked offline before the database goes, not when the sockets close.
        self.assertEqual((await self.agent())["state"], "offline")
        self.assertEqual((await self.agent(OTHER))["state"], "offline")

    async def test_flushAndReapLoops(self) -> None:
        from masterd.talkback import TalkbackService

        await self.setUpTalkback()
        self.clock.advance(1_800_000_000)
        connection, _ = await self.joined()
        [a] = await self.assign()
        service = TalkbackService(self.registry, self.clock, 1.0, 45.0, 5.0)
        await service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(service.stop()))
        connection.connectionLost(Failure(ConnectionError("dropped")))
        await connection.drained()
        self.clock.advance(46)  # past the grace: the sweep due now requeues the task
        for _ in range(500):
            task = await self.api.ok("GET", f"/api/v1/tasks/{a.task_id}")
            if task["state"] == "queued":
                break
            await deferLater(reactor, 0.02)
        self.assertEqual(task["state"], "queued")
