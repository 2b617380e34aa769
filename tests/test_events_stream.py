"""
GET /api/v1/events over real HTTP and a real database: the stream's start,
the events read from the database (jobs, agents, limits, masters, the audit
trail; made through any master), who receives which, keepalives, who may
open one, and streams that end (their credential gone, or the master's
doing).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from masterd.accounts import Principal
from masterd.config import Role
from masterd.db import DatabaseUnavailable
from masterd.http._events import EventsService, EventStreams, JobFeed
from masterd.http._feeds import AGENTS_QUERY, AgentFeed, AuditFeed, LimitFeed, MasterFeed
from masterd.jobs import lifecycle

from ._api import API, TOKENS, startAPI
from .test_jobs_api import AGENT, OTHER

VIEWER = Principal("viewer", Role.viewer)
OPERATOR = Principal("operator", Role.operator)


def events(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


class Listener:
    """
    A stream opened over HTTP, and what it has received.
    """

    def __init__(self, case: TestCase, response: Any) -> None:
        self.case = case
        self.received: list[bytes] = []
        self.finished: Deferred[None] = treq.collect(response, self.received.append)
        self.ended = False
        self.finished.addBoth(self._ended)

    def _ended(self, result: object) -> None:
        self.ended = True

    def text(self) -> str:
        return b"".join(self.received).decode()

    def events(self, kind: str | None = None) -> list[Any]:
        return [d for k, d in events(self.text()) if kind is None or k == kind]

    async def until(self, check: Any) -> None:
        for _ in range(250):
            if check():
                return
            await deferLater(reactor, 0.02)
        self.case.fail(f"not received: {self.text()!r}")


async def listen(case: TestCase, api: API, headers: dict[str, str]) -> Listener:
    response = await treq.get(
        api.base + "/api/v1/events",
        headers={k: [v] for k, v in headers.items()},
        unbuffered=True,
        persistent=False,
    )
    case.assertEqual(response.code, 200)
    listener = Listener(case, response)
    await listener.until(lambda: "event: hello" in listener.text())
    return listener


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


class StreamTests(TestCase):
    timeout = 60

    async def test_stream(self) -> None:
        """
        A viewer's stream starts with the retry delay and a hello naming the
        master; a job changed in the database arrives as a job event with
        its state and counts; the master ending the streams ends it.
        """
        api = await startAPI(self)
        streams = api.api.streams
        assert streams is not None
        received: list[bytes] = []
        response = await treq.get(
            api.base + "/api/v1/events",
            headers={"Authorization": [f"Bearer {TOKENS['viewer']}"]},
            unbuffered=True,
            persistent=False,
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["text/event-stream; charset=utf-8"])  # fmt: skip
        finished: Deferred[None] = treq.collect(response, received.append)

        async def until(check: Any) -> str:
            for _ in range(200):
                text = b"".join(received).decode()
                if check(text):
                    return text
                await deferLater(reactor, 0.02)
            self.fail(f"not received: {b''.join(received)!r}")

        text = await until(lambda t: "hello" in t)
        self.assertTrue(text.startswith("retry: 3000\n\n"))
        hello = {"master": "test", "user": "viewer", "role": "viewer"}
        self.assertEqual(events(text), [("hello", hello)])
        self.assertEqual(len(streams), 1)

        feed = JobFeed(api.pool, streams)
        await feed.poll()  # where it reads from
        job = await api.submit(frames="1-3")
        await feed.poll()
        text = await until(lambda t: "event: job" in t)
        [(_, document)] = [e for e in events(text) if e[0] == "job"]
        self.assertEqual(document["id"], job["id"])
        self.assertEqual(document["href"], job["href"])
        self.assertEqual(document["state"], "queued")
        self.assertEqual((document["tasks"]["total"], document["tasks"]["queued"]), (3, 3))

        streams.close()
        await finished
        self.assertEqual(len(streams), 0)

    async def test_whoMayOpen(self) -> None:
        """
        No token: 401, as for every route; an agent's token: 403.
        """
        api = await startAPI(self)
        reply = await api.call("GET", "/api/v1/events", role="")
        self.assertEqual(reply.code, 401)
        reply = await api.call("GET", "/api/v1/events", role="agent")
        self.assertEqual(reply.code, 403)

    async def test_signOutEndsTheStream(self) -> None:
        """
        Signing out (DELETE /api/v1/session) ends the open stream of that
        session, on the bus's TokensChanged; a stream of a bearer token and
        one of another session stay open. The hello says who it is for.
        """
        api = await startAPI(self)
        streams = api.api.streams
        assert streams is not None

        async def signIn(token: str) -> tuple[str, str]:
            reply = await api.call("POST", "/api/v1/session", {"token": token}, role="")
            self.assertEqual(reply.code, 201, reply.body)
            header = reply.header("set-cookie") or ""
            cookie = header.split(";")[0].partition("=")[2]
            return cookie, reply.json()["csrf_token"]

        cookie, csrf = await signIn(TOKENS["user"])
        other, _ = await signIn(TOKENS["operator"])
        session = await listen(self, api, {"Cookie": f"masterd_session={cookie}"})
        kept = await listen(self, api, {"Cookie": f"masterd_session={other}"})
        token = await listen(self, api, bearer("viewer"))
        self.assertEqual(session.events("hello"),
                         [{"master": "test", "user": "user", "role": "user"}])  # fmt: skip
        self.assertEqual(kept.events("hello"),
                         [{"master": "test", "user": "operator", "role": "operator"}])  # fmt: skip
        self.assertEqual(len(streams), 3)

        reply = await api.call("DELETE", "/api/v1/session", role="",
                               headers={"Cookie": f"masterd_session={cookie}",
                                        "X-CSRF-Token": csrf})  # fmt: skip
        self.assertEqual(reply.code, 204, reply.body)
        await session.until(lambda: session.ended)
        await deferLater(reactor, 0.2)
        self.assertFalse(kept.ended)
        self.assertFalse(token.ended)
        self.assertEqual(len(streams), 2)
        # The session's cookie no longer opens one.
        reply = await api.call("GET", "/api/v1/events", role="",
                               headers={"Cookie": f"masterd_session={cookie}"})  # fmt: skip
        self.assertEqual(reply.code, 401)

    async def test_auditOnlyForOperators(self) -> None:
        """
        A new entry of the audit trail reaches the streams of operators and
        admins, never those of viewers or users; the first read is a
        baseline (nothing of what was there before is sent).
        """
        api = await startAPI(self)
        streams = api.api.streams
        assert streams is not None
        await api.ok("PUT", "/api/v1/limits/before", {"max": 1}, 201)
        operator = await listen(self, api, bearer("operator"))
        viewer = await listen(self, api, bearer("viewer"))
        user = await listen(self, api, bearer("user"))
        feed = AuditFeed(api.pool, streams)
        await feed.poll()  # the baseline
        await feed.poll()
        await api.ok("PUT", "/api/v1/limits/nuke", {"max": 2}, 201)
        await feed.poll()
        await operator.until(lambda: operator.events("audit"))
        [entry] = operator.events("audit")
        rows = await api.pool.query("SELECT max(id) FROM audit")
        self.assertEqual(entry["id"], rows[0][0])
        self.assertEqual((entry["actor"], entry["action"], entry["resource"]),
                         ("admin", "limit.create", "/api/v1/limits/nuke"))  # fmt: skip
        self.assertTrue(entry["at"].endswith("Z"))
        self.assertEqual(sorted(entry), ["action", "actor", "at", "id", "resource"])
        await deferLater(reactor, 0.1)
        self.assertEqual(viewer.events("audit"), [])
        self.assertEqual(user.events("audit"), [])


class _FakeRequest:
    """
    What a stream uses of a request: writes, and the end of the response.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self._finished: Deferred[None] = Deferred()
        self.transport = type("T", (), {"dataBuffer": b""})()

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def notifyFinish(self) -> Deferred[None]:
        return self._finished

    def lose(self) -> None:
        self._finished.errback(ConnectionError("gone"))


def fakeStreams(*principals: Principal) -> tuple[EventStreams, list[_FakeRequest]]:
    streams = EventStreams(Clock())
    requests = [_FakeRequest() for _ in principals]
    for request, principal in zip(requests, principals, strict=True):
        streams.open(request, {}, principal)  # type: ignore[arg-type]
    return streams, requests


def sent(request: _FakeRequest, kind: str | None = None) -> list[Any]:
    """
    What a fake request received since last asked, hello left out.
    """
    text = b"".join(request.written).decode()
    request.written.clear()
    return [d for k, d in events(text) if k != "hello" and (kind is None or k == kind)]


class FeedTests(TestCase):
    """
    The feeds against a real database: what each sends, from its baseline.
    """

    timeout = 60

    async def test_agents(self) -> None:
        """
        Agents connecting, becoming busy and idle again, going offline,
        disabled and deleted: an agent event each time, with the state it
        had; and the counts by state when they change. The first read sends
        nothing, nor does a read where nothing changed.
        """
        api = await startAPI(self)
        streams, [request] = fakeStreams(VIEWER)
        feed = AgentFeed(api.pool, streams)
        await api.pool.query("INSERT INTO agents (id, hostname) VALUES (%s, 'a1')", (AGENT,))
        await feed.poll()
        self.assertEqual(sent(request), [])

        async def connect(agentID: str) -> None:
            await api.pool.query(
                "UPDATE agents SET session = %s, master = 'test' WHERE id = %s",
                (str(uuid.uuid4()), agentID),
            )

        await connect(AGENT)
        await api.pool.query("INSERT INTO agents (id, hostname) VALUES (%s, 'a2')", (OTHER,))
        await feed.poll()
        href = f"/api/v1/agents/{AGENT}"
        self.assertEqual(sent(request), [
            {"id": AGENT, "href": href, "hostname": "a1", "state": "idle",
             "previous": "offline", "running": 0, "master": "test"},
            {"id": OTHER, "href": f"/api/v1/agents/{OTHER}", "hostname": "a2",
             "state": "offline", "previous": None, "running": 0, "master": None},
            {"idle": 1, "busy": 0, "offline": 1, "disabled": 0},
        ])  # fmt: skip
        await feed.poll()
        self.assertEqual(sent(request), [])

        job = await api.submit(frames="1-2")
        rows = await api.pool.query("SELECT id FROM tasks WHERE job_id = %s", (job["id"],))
        taskIDs = [r[0] for r in rows]
        first, second = await api.pool.transaction(
            lambda txn: lifecycle.assign(txn, AGENT, taskIDs)
        )
        await feed.poll()
        self.assertEqual(sent(request), [
            {"id": AGENT, "href": href, "hostname": "a1", "state": "busy",
             "previous": "idle", "running": 2, "master": "test"},
            {"idle": 0, "busy": 1, "offline": 1, "disabled": 0},
        ])  # fmt: skip
        for a in (first, second):
            await api.pool.transaction(
                lambda txn, a=a: lifecycle.done(txn, AGENT, a.task_id, a.attempt)
            )
            await feed.poll()
        self.assertEqual(sent(request, "agent"), [
            {"id": AGENT, "href": href, "hostname": "a1", "state": "busy",
             "previous": "busy", "running": 1, "master": "test"},
            {"id": AGENT, "href": href, "hostname": "a1", "state": "idle",
             "previous": "busy", "running": 0, "master": "test"},
        ])  # fmt: skip

        await api.pool.query("UPDATE agents SET session = NULL, master = NULL WHERE id = %s",
                             (AGENT,))  # fmt: skip
        await api.pool.query("UPDATE agents SET enabled = false WHERE id = %s", (OTHER,))
        await feed.poll()
        self.assertEqual(sent(request), [
            {"id": AGENT, "href": href, "hostname": "a1", "state": "offline",
             "previous": "idle", "running": 0, "master": None},
            {"id": OTHER, "href": f"/api/v1/agents/{OTHER}", "hostname": "a2",
             "state": "disabled", "previous": "offline", "running": 0, "master": None},
            {"idle": 0, "busy": 0, "offline": 1, "disabled": 1},
        ])  # fmt: skip
        await api.pool.query("DELETE FROM agents WHERE id = %s", (OTHER,))
        await feed.poll()
        self.assertEqual(sent(request), [
            {"id": OTHER, "href": f"/api/v1/agents/{OTHER}", "deleted": True},
            {"idle": 0, "busy": 0, "offline": 1, "disabled": 0},
        ])  # fmt: skip

    async def test_agentsPlan(self) -> None:
        """
        The agents' states and running tasks in one statement for 10,000
        agents (3,000 of 23,000 tasks active): the active tasks counted once
        by agent over the tasks_active_agent index, hash-joined, never a
        subquery per agent; and quickly.
        """
        api = await startAPI(self)
        await api.pool.query(
            "INSERT INTO agents (id, hostname, session, master)"
            " SELECT md5(i::text)::uuid, 'host' || i,"
            " CASE WHEN i % 3 = 0 THEN NULL ELSE md5('s' || i)::uuid END, 'test'"
            " FROM generate_series(1, 10000) i"
        )
        await api.submit(frames="1-20000")  # queued: not on the partial index
        job = await api.submit(frames="1-3000")
        await api.pool.query(
            "UPDATE tasks SET state = 'assigned', agent_id = md5(((id %% 2000) + 1)::text)::uuid"
            " WHERE job_id = %s",
            (job["id"],),
        )
        await api.pool.query("ANALYZE agents")
        await api.pool.query("ANALYZE tasks")
        plan = "\n".join(r[0] for r in await api.pool.query(f"EXPLAIN {AGENTS_QUERY}"))
        self.assertNotIn("SubPlan", plan)
        self.assertIn("Hash Left Join", plan)
        self.assertIn("tasks_active_agent", plan)
        rows = await api.pool.query(f"EXPLAIN (ANALYZE, FORMAT JSON) {AGENTS_QUERY}")
        [document] = rows[0][0]
        self.assertLess(document["Execution Time"], 500.0, plan)

    async def test_limits(self) -> None:
        """
        A limit created, its use changing, then deleted: a limit event
        each time; nothing for the limits that were there at the baseline.
        """
        api = await startAPI(self)
        streams, [request] = fakeStreams(VIEWER)
        feed = LimitFeed(api.pool, streams)
        await api.ok("PUT", "/api/v1/limits/old", {"max": 1}, 201)
        await feed.poll()
        await api.ok("PUT", "/api/v1/limits/nuke", {"max": 2}, 201)
        await feed.poll()
        href = "/api/v1/limits/nuke"
        self.assertEqual(sent(request), [{"name": "nuke", "href": href, "max": 2, "in_use": 0}])
        await api.ok("PUT", "/api/v1/limits/nuke", {"max": 3}, 200)
        job = await api.submit(frames="1", limits=["nuke"])
        rows = await api.pool.query("SELECT id FROM tasks WHERE job_id = %s", (job["id"],))
        [a] = await api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, [rows[0][0]]))
        await feed.poll()
        self.assertEqual(sent(request), [{"name": "nuke", "href": href, "max": 3, "in_use": 1}])
        await api.pool.transaction(lambda txn: lifecycle.done(txn, AGENT, a.task_id, a.attempt))
        await feed.poll()
        self.assertEqual(sent(request), [{"name": "nuke", "href": href, "max": 3, "in_use": 0}])
        reply = await api.call("DELETE", "/api/v1/limits/nuke")
        self.assertEqual(reply.code, 204, reply.body)
        await feed.poll()
        self.assertEqual(sent(request), [{"name": "nuke", "href": href, "deleted": True}])
        await feed.poll()
        self.assertEqual(sent(request), [])

    async def test_masters(self) -> None:
        """
        A master that registers, and one whose heartbeat grows older than
        expire_s: a master event each, with its last heartbeat.
        """
        api = await startAPI(self)
        streams, [request] = fakeStreams(VIEWER)
        feed = MasterFeed(api.pool, streams, reactor, expire_s=60)
        await api.pool.query("INSERT INTO masters (name, version) VALUES ('m1', 'x')")
        await feed.poll()
        self.assertEqual(sent(request), [])
        await api.pool.query("INSERT INTO masters (name, version) VALUES ('m 2', 'x')")
        await feed.poll()
        [born] = sent(request)
        self.assertEqual((born["name"], born["href"], born["state"]),
                         ("m 2", "/api/v1/masters/m%202", "up"))  # fmt: skip
        await api.pool.query(
            "UPDATE masters SET last_seen = '2020-01-02T03:04:05Z' WHERE name = 'm1'"
        )
        await feed.poll()
        self.assertEqual(sent(request), [{"name": "m1", "href": "/api/v1/masters/m1",
                                          "state": "down",
                                          "last_seen": "2020-01-02T03:04:05.000Z"}])  # fmt: skip
        await feed.poll()
        self.assertEqual(sent(request), [])


class StreamUnitTests(TestCase):
    def test_keepaliveAndSlowClients(self) -> None:
        """
        A comment every keepalive_s while a stream is open (on the injected
        clock); a client that reads too slowly has its stream ended; one
        that goes away is forgotten.
        """
        from twisted.internet.task import Clock

        from masterd.http._events import MAX_BUFFERED, EventStreams

        clock = Clock()
        streams = EventStreams(clock, keepalive_s=15)
        fast, slow = _FakeRequest(), _FakeRequest()
        done = streams.open(fast, {"master": "m"}, VIEWER)  # type: ignore[arg-type]
        ended = streams.open(slow, {"master": "m"}, VIEWER)  # type: ignore[arg-type]
        clock.advance(15)
        self.assertEqual(fast.written[-1], b": keepalive\n\n")
        slow.transport.dataBuffer = b"x" * (MAX_BUFFERED + 1)
        streams.publish("job", {"id": 1})
        self.assertTrue(fast.written[-1].startswith(b"event: job\n"))
        self.assertTrue(ended.called)
        self.assertFalse(done.called)
        fast.lose()
        slow.lose()
        self.assertEqual(len(streams), 0)
        clock.advance(15)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_slowClientUnderTLS(self) -> None:
        """
        Where the master serves TLS itself, the request's transport is TLS's
        (twisted.protocols.tls), which passes what it encrypts to the TCP
        transport below it at once and reads that one's attributes: what
        waits there counts, and a client that reads too slowly has its
        stream ended as over plain TCP.
        """
        from twisted.internet.task import Clock
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        from masterd.http._events import MAX_BUFFERED, EventStreams, waiting

        tcp = type("TCP", (), {"dataBuffer": b"", "_tempDataLen": 0})()
        tls = TLSMemoryBIOProtocol(None, None)
        tls.transport = tcp
        self.assertEqual(waiting(tls), 0)
        tcp._tempDataLen = 10
        tcp.dataBuffer = b"x" * 5
        self.assertEqual(waiting(tls), 15)
        streams = EventStreams(Clock(), keepalive_s=15)
        request = _FakeRequest()
        request.transport = tls
        ended = streams.open(request, {"master": "m"}, VIEWER)  # type: ignore[arg-type]
        streams.publish("job", {"id": 1})
        self.assertFalse(ended.called)
        tcp.dataBuffer = b"x" * (MAX_BUFFERED + 1)
        streams.publish("job", {"id": 2})
        self.assertTrue(ended.called)
        self.assertEqual(sent(request), [{"id": 1}])

    def test_roles(self) -> None:
        """
        An event for a role reaches only the streams whose principal may
        act as it; every stream receives a viewer's.
        """
        streams, [viewer, operator] = fakeStreams(VIEWER, OPERATOR)
        self.assertTrue(streams.any(Role.operator))
        streams.publish("audit", {"id": 1}, role=Role.operator)
        streams.publish("job", {"id": 2})
        self.assertEqual(sent(viewer), [{"id": 2}])
        self.assertEqual(sent(operator), [{"id": 1}, {"id": 2}])
        operator.lose()
        self.assertFalse(streams.any(Role.operator))
        self.assertTrue(streams.any(Role.viewer))

    async def test_baseline(self) -> None:
        """
        A feed's first read sets what it compares with and sends nothing;
        it reads with no stream open too, so that a change made between a
        page's read and its stream's first events is sent; the audit
        trail's rows go only to operators' streams.
        """
        pool = FakePool()
        pool.rows["FROM agents"] = [(AGENT, "a1", None, "offline", 0)]
        pool.rows["FROM audit WHERE"] = []
        pool.rows["max(id)"] = [(6,)]
        streams = EventStreams(Clock())
        agents, audit = AgentFeed(pool, streams), AuditFeed(pool, streams)  # type: ignore[arg-type]
        await agents.poll()
        await audit.poll()
        self.assertEqual(len(pool.queries), 2)
        request = _FakeRequest()
        streams.open(request, {}, VIEWER)  # type: ignore[arg-type]
        self.assertEqual(sent(request), [])
        # Changed while the page read the agents, before the next tick.
        pool.rows["FROM agents"] = [(AGENT, "a1", "m", "idle", 0)]
        await agents.poll()
        self.assertEqual([e.get("state") for e in sent(request)], ["idle", None])
        staff = _FakeRequest()
        streams.open(staff, {}, OPERATOR)  # type: ignore[arg-type]
        pool.rows["FROM audit WHERE"] = [(7, 1.0e9, "admin", "limit.create", "/x")]
        await audit.poll()
        self.assertEqual(sent(staff, "audit"), [{"id": 7, "at": "2001-09-09T01:46:40.000Z",
                                                 "actor": "admin", "action": "limit.create",
                                                 "resource": "/x"}])  # fmt: skip
        self.assertEqual(sent(request), [])

    async def test_oneFeedFailing(self) -> None:
        """
        A feed that raises is logged and counted, and the feeds after it
        in the same tick still run; one whose database is away is quiet;
        the next tick runs them all again.
        """

        class Feed:
            def __init__(self, name: str, error: Exception | None = None) -> None:
                self.name = name
                self.error = error
                self.polls = 0

            async def poll(self) -> None:
                self.polls += 1
                if self.error is not None:
                    raise self.error

        clock = Clock()
        streams = EventStreams(clock)
        feeds = [Feed("broken", RuntimeError("boom")), Feed("away", DatabaseUnavailable()),
                 Feed("fine")]  # fmt: skip
        service = EventsService(streams, feeds, clock, interval=1.0)
        await service.start()
        clock.advance(1)
        clock.advance(1)
        self.assertEqual([f.polls for f in feeds], [2, 2, 2])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(service._loop.failures, 2)
        await service.stop()

    def test_farmFeeds(self) -> None:
        """
        A lone job feed brings the farm's others, in order (as the master
        wires it).
        """
        streams = EventStreams(Clock())
        job = JobFeed(FakePool(), streams)  # type: ignore[arg-type]
        service = EventsService(streams, job, Clock(), expire_s=5)
        self.assertEqual([f.name for f in service.feeds],
                         ["job", "agent", "limit", "master", "audit"])  # fmt: skip
        self.assertIs(service.feeds[0], job)
        self.assertEqual(service.feeds[3].expire_s, 5)  # type: ignore[attr-defined]


class FakePool:
    """
    Answers a query with the rows of the first key its text contains.
    """

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.queries: list[str] = []

    async def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        self.queries.append(sql)
        for key, rows in self.rows.items():
            if key in sql:
                return rows
        return []


class BatchTests(TestCase):
    def test_oneWriteAStream(self) -> None:
        """
        The events of a batch reach each stream in one write, each stream
        only those its role may read, in the order published.
        """
        streams, [viewer, operator] = fakeStreams(VIEWER, OPERATOR)
        viewer.written.clear()
        operator.written.clear()
        with streams.batch():
            streams.publish("job", {"id": 1})
            streams.publish("audit", {"id": 2}, role=Role.operator)
            streams.publish("job", {"id": 3})
            self.assertEqual((viewer.written, operator.written), ([], []))
        self.assertEqual((len(viewer.written), len(operator.written)), (1, 1))
        self.assertEqual(sent(viewer), [{"id": 1}, {"id": 3}])
        self.assertEqual(sent(operator), [{"id": 1}, {"id": 2}, {"id": 3}])
        with streams.batch():
            pass
        self.assertEqual((viewer.written, operator.written), ([], []))
