"""
The client library (masterd.client) against a fake opener: no network, no
reactor, every request recorded.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from masterd.client import (
    Attempt,
    Client,
    Job,
    LogFollower,
    MasterdError,
    Requirements,
    Task,
    TaskCounts,
    parse_time,
    submission,
)

BASE = "http://master.test:8080"
AGENT = "6f1c0b9e-52a5-4d36-9a8f-0d1c2b3a4e5f"
#: How the master refers to that agent (its hostname: node-017).
AGENT_REF = {"id": AGENT, "href": f"/api/v1/agents/{AGENT}", "hostname": "node-017"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- a fake master: canned answers by (method, path), requests recorded ------


class Reply:
    def __init__(
        self,
        body: Any = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.status = status
        self.headers = dict(headers or {})
        if raw is not None:
            self.body = raw
        elif body is None:
            self.body = b""
        else:
            self.body = json.dumps(body).encode()
            self.headers.setdefault("Content-Type", "application/json; charset=utf-8")


class FakeResponse:
    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self.headers = _message(reply.headers)
        self._body = io.BytesIO(reply.body)
        self.closed = False

    def read(self) -> bytes:
        return self._body.read()

    def close(self) -> None:
        self.closed = True


def _reply(reply: Any) -> Any:
    if isinstance(reply, Reply | BaseException) or callable(reply):
        return reply
    return Reply(reply)


def _message(headers: dict[str, str]) -> Message:
    message = Message()
    for name, value in headers.items():
        message[name] = value
    return message


class Sent:
    """
    One request the fake received.
    """

    def __init__(self, request: urllib.request.Request, timeout: float) -> None:
        self.method = request.get_method()
        self.url = request.full_url
        parts = urlsplit(self.url)
        self.path = parts.path
        self.query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.headers = {k.lower(): v for k, v in request.header_items()}
        data = request.data
        self.body = json.loads(data) if isinstance(data, bytes) else None
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<Sent {self.method} {self.url} {self.body!r}>"


class FakeOpener:
    """
    Answers like a master: a canned reply per C{(method, path)} (with or
    without its query string; a list of replies is used in turn, its last
    one repeated), a JSON 404 for anything else. Error answers are raised as
    C{HTTPError}, as urllib's own opener does; an exception given as a reply
    is raised. A reply may also be a function, called for each request
    (for answers that change with a fake clock); it returns what a reply
    may be.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Any]] = {}
        self.sent: list[Sent] = []

    def on(self, method: str, path: str, *replies: Reply | BaseException | Any) -> FakeOpener:
        self.routes[(method, path)] = [_reply(r) for r in replies]
        return self

    def open(self, request: urllib.request.Request, timeout: float = 30) -> FakeResponse:
        sent = Sent(request, timeout)
        self.sent.append(sent)
        parts = urlsplit(sent.url)
        withQuery = f"{parts.path}?{parts.query}" if parts.query else parts.path
        replies = self.routes.get((sent.method, withQuery)) or self.routes.get(
            (sent.method, parts.path)
        )
        if not replies:
            reply: Any = Reply(
                {"error": "not_found", "message": f"no such resource: {parts.path}", "details": {}},
                404,
            )
        else:
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if callable(reply):
            reply = _reply(reply())
        if isinstance(reply, BaseException):
            raise reply
        if reply.status >= 400:
            raise urllib.error.HTTPError(
                sent.url, reply.status, "error", _message(reply.headers), io.BytesIO(reply.body)
            )
        return FakeResponse(reply)

    def paths(self) -> list[str]:
        return [f"{s.method} {s.path}" for s in self.sent]


# -- canned documents, as the docs show them --------------------------------


def jobDoc(jobID: int = 42, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": jobID,
        "href": f"/api/v1/jobs/{jobID}",
        "title": "shot 10 beauty",
        "owner": "ops",
        "state": "running",
        "priority": 70,
        "weight": 1,
        "paused": False,
        "created_at": "2026-11-28T23:01:02.345Z",
        "updated_at": "2026-11-28T23:05:00.000Z",
        "finished_at": None,
        "progress": 0.25,
        "command": ["render", "-s", "{start}", "-e", "{end}", "scene.ma"],
        "env": {"OCIO": "/studio/ocio/config.ocio"},
        "cwd": None,
        "requirements": {"cpus": 8, "ram_mb": 16000, "gpus": 0, "tags": ["linux", "maya"]},
        "max_retries": 3,
        "task_timeout_s": 3600,
        "metadata": {"shot": 10},
        "tasks": {
            "href": f"/api/v1/jobs/{jobID}/tasks",
            "total": 40,
            "waiting": 0,
            "queued": 20,
            "assigned": 2,
            "running": 8,
            "done": 10,
            "failed": 0,
            "canceled": 0,
        },
        "parents": [{"id": 41, "href": "/api/v1/jobs/41"}],
        "children": [],
        "blocklist": [{"agent": dict(AGENT_REF), "failures": 3}],
    }
    document.update(changes)
    return document


def counts(**values: int) -> dict[str, Any]:
    names = ("waiting", "queued", "assigned", "running", "done", "failed", "canceled")
    document: dict[str, Any] = {"href": "/api/v1/jobs/42/tasks"}
    document.update({name: values.get(name, 0) for name in names})
    document["total"] = sum(document[name] for name in names)
    return document


def taskDoc(taskID: int = 9001, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": taskID,
        "href": f"/api/v1/tasks/{taskID}",
        "job": {"id": 42, "href": "/api/v1/jobs/42"},
        "index": 3,
        "frames": [7, 8],
        "command": None,
        "state": "running",
        "attempt": 2,
        "agent": dict(AGENT_REF),
        "progress": 0.4,
        "started_at": "2026-11-28T23:04:10.000Z",
        "finished_at": None,
        "exit_code": None,
        "error": None,
        "attempts": f"/api/v1/tasks/{taskID}/attempts",
    }
    document.update(changes)
    return document


def attemptDoc(number: int = 1, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "task": {"id": 9001, "href": "/api/v1/tasks/9001"},
        "job": {"id": 42, "href": "/api/v1/jobs/42"},
        "attempt": number,
        "agent": dict(AGENT_REF),
        "state": "failed",
        "started_at": "2026-11-28T23:00:00.000Z",
        "finished_at": "2026-11-28T23:01:00.500Z",
        "exit_code": 1,
        "error": "exit status 1",
    }
    document.update(changes)
    return document


def agentDoc(agentID: str = AGENT, **changes: Any) -> dict[str, Any]:
    href = f"/api/v1/agents/{agentID}"
    document: dict[str, Any] = {
        "id": agentID,
        "href": href,
        "hostname": "node-017",
        "state": "busy",
        "enabled": True,
        "master": "master-1",
        "connected_at": "2026-11-28T23:40:00.000Z",
        "disconnected_at": None,
        "last_seen": "2026-11-28T23:41:07.500Z",
        "created_at": "2026-11-01T08:00:00.000Z",
        "os": "linux",
        "version": "1.0.0",
        "cpus": 16,
        "ram_mb": 64000,
        "gpus": 1,
        "tags": ["farm-b", "gpu", "linux"],
        "agent_tags": ["gpu", "linux"],
        "operator_tags": ["farm-b"],
        "software": {"blender": "4.2"},
        "limits": {"max_tasks": 2, "max_ram_mb": 64000, "max_cpus": 16},
        "agent_limits": {"max_tasks": 2},
        "operator_limits": {},
        "usage": {"cpu_percent": 73.5, "ram_free_mb": 23000},
        "tasks": f"{href}/tasks",
        "failures": f"{href}/failures",
        "jobs": f"{href}/jobs",
        "exceptions": f"{href}/exceptions",
    }
    document.update(changes)
    return document


def masterDoc() -> dict[str, Any]:
    return {
        "name": "dev-master",
        "href": "/api/v1/master",
        "version": "0.1.0",
        "started_at": "2026-11-28T22:56:42.838Z",
        "uptime_s": 4.456,
        "requests": {
            "total": 2,
            "in_flight": 1,
            "avg_ms": 1.413,
            "max_ms": 1.89,
            "by_route": [
                {
                    "method": "GET",
                    "route": "/healthz",
                    "status": 200,
                    "count": 1,
                    "avg_ms": 1.89,
                    "max_ms": 1.89,
                },
            ],
        },
        "exceptions": {"total": 0, "recent": []},
        "database": {"queries": 12, "avg_ms": 1.609, "ready": True},
        "talkback": {
            "agents_connected": 1,
            "messages_in": {"Heartbeat": 1, "Hello": 1},
            "messages_out": {"welcome": 1},
            "errors": 0,
            "bytes_in": 412,
            "bytes_out": 96,
        },
    }


def page(items: list[Any], following: str | None = None) -> dict[str, Any]:
    return {"items": items, "next": following}


def error(status: int, code: str, message: str, **details: Any) -> Reply:
    return Reply({"error": code, "message": message, "details": details}, status)


def clientWith(opener: FakeOpener, token: str | None = "secret") -> Client:
    return Client(BASE, token, timeout=7, opener=opener)


# -- tests --------------------------------------------------------------------


class TimeTests(SynchronousTestCase):
    def test_zulu(self) -> None:
        when = parse_time("2026-11-28T22:50:18.123Z")
        self.assertEqual(when, datetime(2026, 11, 28, 22, 50, 18, 123000, tzinfo=UTC))
        assert when is not None
        self.assertEqual(when.utcoffset(), timedelta(0))

    def test_offset(self) -> None:
        when = parse_time("2026-11-28T23:50:18+01:00")
        self.assertEqual(when, datetime(2026, 11, 28, 22, 50, 18, tzinfo=UTC))
        assert when is not None
        self.assertEqual(when.tzinfo, timezone(timedelta(hours=1)))

    def test_naiveIsUTC(self) -> None:
        self.assertEqual(
            parse_time("2026-11-28T22:50:18"), datetime(2026, 11, 28, 22, 50, 18, tzinfo=UTC)
        )

    def test_none(self) -> None:
        self.assertIsNone(parse_time(None))

    def test_garbage(self) -> None:
        for value in ["yesterday", 1764370218, ""]:
            e = self.assertRaises(MasterdError, parse_time, value)
            self.assertEqual(e.code, "invalid_response")


class ModelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = clientWith(self.opener)

    def test_jobFields(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        job = self.client.job(42)
        self.assertIsInstance(job, Job)
        self.assertEqual(
            (job.id, job.title, job.owner, job.state), (42, "shot 10 beauty", "ops", "running")
        )
        self.assertEqual((job.priority, job.weight, job.paused), (70, 1, False))
        self.assertEqual(job.created_at, datetime(2026, 11, 28, 23, 1, 2, 345000, tzinfo=UTC))
        self.assertIsNotNone(job.updated_at)
        self.assertIsNone(job.finished_at)
        self.assertEqual(job.progress, 0.25)
        self.assertEqual(job.command, ["render", "-s", "{start}", "-e", "{end}", "scene.ma"])
        self.assertEqual(job.env, {"OCIO": "/studio/ocio/config.ocio"})
        self.assertIsNone(job.cwd)
        self.assertEqual(job.requirements, Requirements(8, 16000, 0, ("linux", "maya")))
        self.assertEqual((job.max_retries, job.task_timeout_s), (3, 3600))
        self.assertEqual(job.metadata, {"shot": 10})
        self.assertEqual(job.task_counts, TaskCounts(40, 0, 20, 2, 8, 10, 0, 0))
        self.assertEqual(job.task_counts.finished, 10)
        self.assertEqual((job.parent_ids, job.child_ids), ([41], []))
        self.assertEqual(
            job.blocklist, [{"agent_id": AGENT, "hostname": "node-017", "failures": 3}]
        )
        self.assertFalse(job.is_finished)
        self.assertEqual(job.href, "/api/v1/jobs/42")
        self.assertEqual(job.raw, jobDoc())
        self.assertIn("42", repr(job))
        # From a master that does not send hostnames: None.
        job.raw["blocklist"][0]["agent"].pop("hostname")
        self.assertEqual(job.blocklist, [{"agent_id": AGENT, "hostname": None, "failures": 3}])

    def test_unknownFieldsStayInRaw(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc(shiny_new_field=1))
        self.assertEqual(self.client.job(42).raw["shiny_new_field"], 1)

    def test_taskFields(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        task = self.client.task(9001)
        self.assertEqual((task.id, task.job_id, task.index, task.frames), (9001, 42, 3, [7, 8]))
        self.assertEqual((task.state, task.attempt, task.agent_id), ("running", 2, AGENT))
        self.assertEqual(task.agent_hostname, "node-017")
        self.assertIsNone(Task(task._transport, taskDoc(agent=None)).agent_hostname)
        self.assertIsNone(task.command)
        self.assertEqual(task.progress, 0.4)
        self.assertEqual(task.started_at, datetime(2026, 11, 28, 23, 4, 10, tzinfo=UTC))
        self.assertIsNone(task.finished_at)
        self.assertEqual((task.exit_code, task.error, task.is_finished), (None, None, False))

    def test_agentFields(self) -> None:
        self.opener.on("GET", f"/api/v1/agents/{AGENT}", agentDoc())
        agent = self.client.agent(AGENT)
        self.assertEqual((agent.id, agent.hostname, agent.state), (AGENT, "node-017", "busy"))
        self.assertTrue(agent.enabled)
        self.assertEqual(agent.last_seen, datetime(2026, 11, 28, 23, 41, 7, 500000, tzinfo=UTC))
        self.assertIsNone(agent.disconnected_at)
        self.assertEqual((agent.cpus, agent.ram_mb, agent.gpus), (16, 64000, 1))
        self.assertEqual(agent.tags, ["farm-b", "gpu", "linux"])
        self.assertEqual(agent.operator_tags, ["farm-b"])
        self.assertEqual(agent.limits["max_tasks"], 2)
        self.assertEqual(agent.usage["cpu_percent"], 73.5)
        self.assertEqual(agent.software, {"blender": "4.2"})

    def test_agentIdIsQuoted(self) -> None:
        """
        An agent id typed by a person cannot reach another route.
        """
        self.assertRaises(MasterdError, self.client.agent, "../jobs/42")
        self.assertEqual(self.opener.sent[0].url, f"{BASE}/api/v1/agents/..%2Fjobs%2F42")

    def test_master(self) -> None:
        self.opener.on("GET", "/api/v1/master", masterDoc())
        master = self.client.master()
        self.assertEqual((master.name, master.version), ("dev-master", "0.1.0"))
        self.assertEqual(master.started_at, datetime(2026, 11, 28, 22, 56, 42, 838000, tzinfo=UTC))
        self.assertEqual(master.requests["total"], 2)
        self.assertEqual(master.database["queries"], 12)
        self.assertEqual(master.exceptions["total"], 0)
        assert master.talkback is not None
        self.assertEqual(master.talkback["agents_connected"], 1)

    def test_refresh(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc(), jobDoc(state="done", progress=1.0))
        job = self.client.job(42)
        self.assertIs(job.refresh(), job)
        self.assertEqual((job.state, job.progress), ("done", 1.0))
        self.assertTrue(job.is_finished)
        self.assertEqual(len(self.opener.sent), 2)

    def test_equality(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        self.assertEqual(self.client.job(42), self.client.job(42))
        self.assertEqual(len({self.client.job(42), self.client.job(42)}), 1)


class LazyReferenceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = clientWith(self.opener)
        self.opener.on(
            "GET", "/api/v1/jobs/42", jobDoc(children=[{"id": 43, "href": "/api/v1/jobs/43"}])
        )
        self.opener.on("GET", "/api/v1/jobs/41", jobDoc(41, state="done"))
        self.opener.on("GET", "/api/v1/jobs/43", jobDoc(43, state="waiting"))

    def test_nothingUntilAsked(self) -> None:
        job = self.client.job(42)
        self.assertEqual(self.opener.paths(), ["GET /api/v1/jobs/42"])
        self.assertEqual(job.parent_ids, [41])
        self.assertEqual(len(self.opener.sent), 1)

    def test_parentsAndChildren(self) -> None:
        job = self.client.job(42)
        parents = job.parents()
        self.assertEqual([(p.id, p.state) for p in parents], [(41, "done")])
        self.assertEqual([c.id for c in job.children()], [43])
        self.assertEqual(
            self.opener.paths(),
            ["GET /api/v1/jobs/42", "GET /api/v1/jobs/41", "GET /api/v1/jobs/43"],
        )

    def test_taskJobAndAgent(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        self.opener.on("GET", f"/api/v1/agents/{AGENT}", agentDoc())
        task = self.client.task(9001)
        self.assertEqual(task.job().id, 42)
        agent = task.agent()
        assert agent is not None
        self.assertEqual(agent.hostname, "node-017")
        self.assertIsNone(Task(task._transport, taskDoc(agent=None)).agent())

    def test_taskAttempts(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        self.opener.on(
            "GET",
            "/api/v1/tasks/9001/attempts",
            page([attemptDoc(1), attemptDoc(2, state="running", finished_at=None, exit_code=None)]),
        )
        attempts = self.client.task(9001).attempts()
        self.assertEqual([a.attempt for a in attempts], [1, 2])
        first = attempts[0]
        self.assertIsInstance(first, Attempt)
        self.assertEqual((first.task_id, first.job_id, first.agent_id), (9001, 42, AGENT))
        self.assertEqual(first.agent_hostname, "node-017")
        self.assertEqual(
            (first.state, first.exit_code, first.error), ("failed", 1, "exit status 1")
        )
        self.assertEqual(first.finished_at, datetime(2026, 11, 28, 23, 1, 0, 500000, tzinfo=UTC))
        self.assertIsNone(attempts[1].finished_at)
        self.assertEqual(first.task().id, 9001)
        self.assertEqual(first.job().id, 42)

    def test_agentLists(self) -> None:
        href = f"/api/v1/agents/{AGENT}"
        self.opener.on("GET", href, agentDoc())
        self.opener.on("GET", f"{href}/tasks", page([taskDoc(1), taskDoc(2)]))
        self.opener.on("GET", f"{href}/failures", page([attemptDoc(3)]))
        self.opener.on(
            "GET",
            f"{href}/jobs",
            page(
                [
                    {
                        "job": {"id": 42, "href": "/api/v1/jobs/42"},
                        "attempts": 5,
                        "done": 4,
                        "failed": 1,
                        "last_started_at": "2026-11-28T23:00:00.000Z",
                    }
                ]
            ),
        )
        self.opener.on(
            "GET",
            f"{href}/exceptions",
            page([{"at": "2026-11-28T23:00:00.000Z", "message": "KeyError", "traceback": "TB"}]),
        )
        agent = self.client.agent(AGENT)
        self.assertEqual([t.id for t in agent.current_tasks()], [1, 2])
        failures = agent.failures(limit=5)
        self.assertEqual([f.attempt for f in failures], [3])
        self.assertEqual(self.opener.sent[-1].query, {"limit": "5"})
        [worked] = agent.jobs()
        self.assertEqual(
            (worked.job_id, worked.attempts, worked.done, worked.failed), (42, 5, 4, 1)
        )
        self.assertEqual(worked.last_started_at, datetime(2026, 11, 28, 23, 0, tzinfo=UTC))
        self.assertEqual(worked.job().title, "shot 10 beauty")
        [exception] = agent.exceptions()
        self.assertEqual((exception.message, exception.traceback), ("KeyError", "TB"))
        self.assertEqual(exception.at, datetime(2026, 11, 28, 23, 0, tzinfo=UTC))

    def test_agentFailuresInPages(self) -> None:
        href = f"/api/v1/agents/{AGENT}"
        self.opener.on("GET", href, agentDoc())
        self.opener.on(
            "GET", f"{href}/failures?limit=2",
            page([attemptDoc(5), attemptDoc(4)], f"{href}/failures?limit=2&after=9001-4"),
        )  # fmt: skip
        self.opener.on("GET", f"{href}/failures?limit=2&after=9001-4", page([attemptDoc(3)]))
        agent = self.client.agent(AGENT)
        self.assertEqual([f.attempt for f in agent.all_failures(page_size=2)], [5, 4, 3])
        self.opener.on(
            "GET", f"{href}/jobs?limit=100",
            page([{"job": {"id": 42, "href": "/api/v1/jobs/42"}, "attempts": 1, "done": 1,
                   "failed": 0, "last_started_at": None}], f"{href}/jobs?limit=100&after=42"),
        )  # fmt: skip
        self.opener.on("GET", f"{href}/jobs?limit=100&after=42", page([]))
        self.assertEqual([j.job_id for j in agent.all_jobs()], [42])


class PaginationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = clientWith(self.opener)

    def test_jobsFollowNext(self) -> None:
        self.opener.on(
            "GET",
            "/api/v1/jobs?state=failed&owner=ops&limit=2",
            page([jobDoc(9), jobDoc(8)], "/api/v1/jobs?state=failed&owner=ops&limit=2&after=8"),
        )
        self.opener.on(
            "GET",
            "/api/v1/jobs?state=failed&owner=ops&limit=2&after=8",
            page([jobDoc(7), jobDoc(6)], "/api/v1/jobs?state=failed&owner=ops&limit=2&after=6"),
        )
        self.opener.on(
            "GET", "/api/v1/jobs?state=failed&owner=ops&limit=2&after=6", page([jobDoc(5)])
        )
        jobs = self.client.jobs(state="failed", owner="ops", limit=2)
        self.assertEqual(self.opener.sent, [], "nothing is fetched before iterating")
        self.assertEqual([j.id for j in jobs], [9, 8, 7, 6, 5])
        self.assertEqual(len(self.opener.sent), 3)
        self.assertEqual(
            self.opener.sent[0].query, {"state": "failed", "owner": "ops", "limit": "2"}
        )

    def test_pagesFetchedAsNeeded(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", page([jobDoc(9), jobDoc(8)], "/api/v1/jobs?after=8"))
        self.opener.on("GET", "/api/v1/jobs?after=8", page([jobDoc(7)]))
        jobs = self.client.jobs()
        self.assertEqual(next(jobs).id, 9)
        self.assertEqual(next(jobs).id, 8)
        self.assertEqual(len(self.opener.sent), 1)
        self.assertEqual(next(jobs).id, 7)
        self.assertEqual(len(self.opener.sent), 2)

    def test_jobTasks(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        self.opener.on(
            "GET",
            "/api/v1/jobs/42/tasks",
            page(
                [taskDoc(1, index=0), taskDoc(2, index=1)], "/api/v1/jobs/42/tasks?limit=2&after=1"
            ),
        )
        self.opener.on("GET", "/api/v1/jobs/42/tasks?limit=2&after=1", page([taskDoc(3, index=2)]))
        tasks = list(self.client.job(42).tasks(state="queued", limit=2))
        self.assertEqual([t.index for t in tasks], [0, 1, 2])
        self.assertEqual(self.opener.sent[1].query, {"state": "queued", "limit": "2"})

    def test_agents(self) -> None:
        other = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
        self.opener.on(
            "GET", "/api/v1/agents", page([agentDoc(other)], f"/api/v1/agents?after={other}")
        )
        self.opener.on("GET", f"/api/v1/agents?after={other}", page([agentDoc()]))
        agents = list(self.client.agents(state="busy", tag="gpu"))
        self.assertEqual([a.id for a in agents], [other, AGENT])
        self.assertEqual(self.opener.sent[0].query, {"state": "busy", "tag": "gpu", "limit": "50"})

    def test_samePageTwiceStops(self) -> None:
        """
        A server that hands back the same next href forever does not make
        the client loop forever.
        """
        self.opener.on("GET", "/api/v1/jobs", page([jobDoc(9)], "/api/v1/jobs?after=9"))
        self.opener.on("GET", "/api/v1/jobs?after=9", page([jobDoc(8)], "/api/v1/jobs?after=9"))
        self.assertEqual([j.id for j in self.client.jobs()], [9, 8])

    def test_notAList(self) -> None:
        self.opener.on("GET", "/api/v1/jobs", {"surprise": True})
        e = self.assertRaises(MasterdError, list, self.client.jobs())
        self.assertEqual(e.code, "invalid_response")


class ChangeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = clientWith(self.opener)
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        self.job = self.client.job(42)

    def last(self) -> Any:
        return self.opener.sent[-1]

    def test_cancel(self) -> None:
        self.opener.on("POST", "/api/v1/jobs/42/cancel", jobDoc(state="canceled"))
        self.assertIs(self.job.cancel(), self.job)
        self.assertEqual(self.job.state, "canceled")
        self.assertEqual((self.last().method, self.last().path), ("POST", "/api/v1/jobs/42/cancel"))

    def test_pause(self) -> None:
        self.opener.on("PATCH", "/api/v1/jobs/42", jobDoc(state="paused", paused=True))
        self.job.pause()
        self.assertEqual(self.last().body, {"paused": True})
        self.assertEqual(self.last().headers["content-type"], "application/json")
        self.job.pause(stop_running=True)
        self.assertEqual(self.last().body, {"paused": True, "stop_running": True})
        self.assertTrue(self.job.paused)

    def test_resume(self) -> None:
        self.opener.on("PATCH", "/api/v1/jobs/42", jobDoc(state="queued"))
        self.job.resume()
        self.assertEqual(self.last().body, {"paused": False})
        self.assertEqual(self.job.state, "queued")

    def test_retryAndBlocklist(self) -> None:
        self.opener.on("POST", "/api/v1/jobs/42/retry", jobDoc(state="queued"))
        self.opener.on("POST", "/api/v1/jobs/42/blocklist/clear", jobDoc(blocklist=[]))
        self.job.retry()
        self.assertEqual(self.job.state, "queued")
        self.job.clear_blocklist()
        self.assertEqual(self.job.blocklist, [])
        self.assertEqual(
            self.opener.paths()[1:],
            ["POST /api/v1/jobs/42/retry", "POST /api/v1/jobs/42/blocklist/clear"],
        )

    def test_update(self) -> None:
        self.opener.on("PATCH", "/api/v1/jobs/42", jobDoc(priority=90))
        self.job.update(priority=90, requirements=Requirements(cpus=4, tags=("gpu",)))
        self.assertEqual(
            self.last().body,
            {"priority": 90, "requirements": {"cpus": 4, "ram_mb": 0, "gpus": 0, "tags": ["gpu"]}},
        )
        self.assertEqual(self.job.priority, 90)
        self.job.update(title="t", max_retries=0, requirements={"gpus": 1})
        self.assertEqual(
            self.last().body, {"title": "t", "max_retries": 0, "requirements": {"gpus": 1}}
        )

    def test_delete(self) -> None:
        self.opener.on("DELETE", "/api/v1/jobs/42", Reply(status=204))
        self.assertIsNone(self.job.delete())
        self.assertEqual(self.last().method, "DELETE")

    def test_task(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        self.opener.on("POST", "/api/v1/tasks/9001/cancel", taskDoc(state="canceled"))
        self.opener.on("POST", "/api/v1/tasks/9001/retry", taskDoc(state="queued"))
        task = self.client.task(9001)
        self.assertEqual(task.cancel().state, "canceled")
        self.assertEqual(task.retry().state, "queued")

    def test_agent(self) -> None:
        href = f"/api/v1/agents/{AGENT}"
        self.opener.on("GET", href, agentDoc())
        self.opener.on("PATCH", href, agentDoc(enabled=False, state="disabled"))
        agent = self.client.agent(AGENT)
        self.assertEqual(agent.disable().state, "disabled")
        self.assertEqual(self.last().body, {"enabled": False})
        agent.enable()
        self.assertEqual(self.last().body, {"enabled": True})
        agent.update(limits={"max_tasks": 1, "max_ram_mb": None}, tags=["farm-b"])
        self.assertEqual(
            self.last().body, {"limits": {"max_tasks": 1, "max_ram_mb": None}, "tags": ["farm-b"]}
        )

    def test_headers(self) -> None:
        sent = self.opener.sent[0]
        self.assertEqual(sent.headers["authorization"], "Bearer secret")
        self.assertEqual(sent.headers["accept"], "application/json")
        self.assertTrue(sent.headers["user-agent"].startswith("masterd-client/"))
        self.assertEqual(sent.timeout, 7)
        self.assertNotIn("content-type", sent.headers)

    def test_noToken(self) -> None:
        client = clientWith(self.opener, token=None)
        client.job(42)
        self.assertNotIn("authorization", self.opener.sent[-1].headers)


class SubmitTests(SynchronousTestCase):
    def test_onlyWhatIsGiven(self) -> None:
        self.assertEqual(
            submission(title="t", command=["render", "{frame}"], frames="1-10"),
            {"title": "t", "command": ["render", "{frame}"], "frames": "1-10"},
        )

    def test_everything(self) -> None:
        opener = FakeOpener()
        opener.on("GET", "/api/v1/jobs/41", jobDoc(41))
        client = clientWith(opener)
        parent = client.job(41)
        body = submission(
            title="shot 10",
            command=("render", "-s", "{start}"),
            frames=[1, 2, 3],
            chunk=2,
            priority=70,
            weight=2,
            requirements=Requirements(cpus=8, ram_mb=16000, tags=("linux",)),
            depends_on=[parent, 40],
            paused=True,
            env={"A": "b"},
            cwd="/work",
            max_retries=0,
            task_timeout_s=3600,
            metadata={"shot": 10},
        )
        self.assertEqual(
            body,
            {
                "title": "shot 10",
                "command": ["render", "-s", "{start}"],
                "frames": [1, 2, 3],
                "chunk": 2,
                "priority": 70,
                "weight": 2,
                "requirements": {"cpus": 8, "ram_mb": 16000, "gpus": 0, "tags": ["linux"]},
                "depends_on": [41, 40],
                "paused": True,
                "env": {"A": "b"},
                "cwd": "/work",
                "max_retries": 0,
                "task_timeout_s": 3600,
                "metadata": {"shot": 10},
            },
        )

    def test_explicitTasks(self) -> None:
        body = submission(title="t", tasks=[{"frames": [1], "command": ["a"]}, {"frames": "2-3"}])
        self.assertEqual(body["tasks"], [{"frames": [1], "command": ["a"]}, {"frames": "2-3"}])
        self.assertNotIn("command", body)

    def test_submit(self) -> None:
        opener = FakeOpener()
        opener.on(
            "POST",
            "/api/v1/jobs",
            Reply(jobDoc(state="queued"), 201, {"Location": "/api/v1/jobs/42"}),
        )
        job = clientWith(opener).submit(
            title="t", command=["r"], frames="1-4", requirements={"cpus": 2}
        )
        self.assertEqual((job.id, job.state), (42, "queued"))
        sent = opener.sent[0]
        self.assertEqual((sent.method, sent.path), ("POST", "/api/v1/jobs"))
        self.assertEqual(
            sent.body,
            {"title": "t", "command": ["r"], "frames": "1-4", "requirements": {"cpus": 2}},
        )


class ErrorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = clientWith(self.opener)

    def test_conflict(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        self.opener.on(
            "DELETE",
            "/api/v1/jobs/42",
            error(409, "conflict", "job 42 is running; cancel it first", state="running"),
        )
        e = self.assertRaises(MasterdError, self.client.job(42).delete)
        self.assertEqual((e.status, e.code), (409, "conflict"))
        self.assertEqual(e.message, "job 42 is running; cancel it first")
        self.assertEqual(e.details, {"state": "running"})
        self.assertEqual(str(e), "job 42 is running; cancel it first")
        self.assertFalse(e.transient)

    def test_notFound(self) -> None:
        e = self.assertRaises(MasterdError, self.client.job, 7)
        self.assertEqual((e.status, e.code), (404, "not_found"))

    def test_invalidField(self) -> None:
        self.opener.on(
            "POST",
            "/api/v1/jobs",
            error(400, "invalid_field", "priority: must be between 0 and 100", field="priority"),
        )
        e = self.assertRaises(
            MasterdError, self.client.submit, title="t", command=["r"], frames="1", priority=101
        )
        self.assertEqual(
            (e.status, e.code, e.details), (400, "invalid_field", {"field": "priority"})
        )

    def test_htmlErrorPage(self) -> None:
        """
        A proxy's HTML page is still a MasterdError, quoting its title.
        """
        page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
        self.opener.on(
            "GET",
            "/api/v1/master",
            Reply(raw=page, status=502, headers={"Content-Type": "text/html"}),
        )
        e = self.assertRaises(MasterdError, self.client.master)
        self.assertEqual((e.status, e.code), (502, "http_error"))
        self.assertIn("502 Bad Gateway", e.message)
        self.assertNotIn("<", e.message)
        self.assertTrue(e.transient)

    def test_garbageErrorBody(self) -> None:
        self.opener.on("GET", "/api/v1/master", Reply(raw=b"\xff\x00 oops" * 100, status=500))
        e = self.assertRaises(MasterdError, self.client.master)
        self.assertEqual((e.status, e.code), (500, "http_error"))
        self.assertLess(len(e.message), 400)

    def test_jsonErrorOfAnotherShape(self) -> None:
        self.opener.on("GET", "/api/v1/master", Reply({"detail": "nope"}, 500))
        e = self.assertRaises(MasterdError, self.client.master)
        self.assertEqual(e.code, "http_error")

    def test_successNotJSON(self) -> None:
        self.opener.on("GET", "/api/v1/master", Reply(raw=b"<html>hello</html>"))
        e = self.assertRaises(MasterdError, self.client.master)
        self.assertEqual((e.status, e.code), (200, "invalid_response"))

    def test_errorReturnedNotRaised(self) -> None:
        """
        An opener that returns error answers instead of raising them (one
        without urllib's HTTPErrorProcessor) gets the same errors.
        """

        class Returning(FakeOpener):
            def open(self, request: urllib.request.Request, timeout: float = 30) -> FakeResponse:
                return FakeResponse(error(409, "conflict", "no", state="done"))

        e = self.assertRaises(MasterdError, clientWith(Returning()).master)
        self.assertEqual((e.status, e.code, e.details), (409, "conflict", {"state": "done"}))

    def unreachable(self, failure: BaseException) -> MasterdError:
        self.opener.on("GET", "/api/v1/master", failure)
        e = self.assertRaises(MasterdError, self.client.master)
        self.assertEqual((e.status, e.code), (0, "unreachable"))
        self.assertTrue(e.transient)
        # Not chained to urllib's exception: nothing of urllib is shown.
        self.assertIsNone(e.__cause__)
        self.assertTrue(e.__suppress_context__)
        self.assertIn(BASE, e.message)
        return e

    def test_connectionRefused(self) -> None:
        refused = ConnectionRefusedError(111, "Connection refused")
        e = self.unreachable(urllib.error.URLError(refused))
        self.assertEqual(e.message, f"cannot reach the master at {BASE}: Connection refused")

    def test_nameUnknown(self) -> None:
        e = self.unreachable(
            urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
        )
        self.assertIn("Name or service not known", e.message)

    def test_timeout(self) -> None:
        e = self.unreachable(TimeoutError("timed out"))
        self.assertIn("timed out", e.message)

    def test_disconnected(self) -> None:
        e = self.unreachable(http.client.RemoteDisconnected("Remote end closed connection"))
        self.assertIn("closed without an answer", e.message)

    def test_realClosedPort(self) -> None:
        """
        The default opener, against a port nobody listens on.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = Client(f"http://127.0.0.1:{port}", "t", timeout=5)
        e = self.assertRaises(MasterdError, client.master)
        self.assertEqual((e.status, e.code), (0, "unreachable"))
        self.assertIn("refused", e.message.lower())

    def test_pickles(self) -> None:
        e = MasterdError(409, "conflict", "no", {"state": "done"})
        again = pickle.loads(pickle.dumps(e))
        self.assertEqual(
            (again.status, again.code, again.message, again.details),
            (409, "conflict", "no", {"state": "done"}),
        )

    def test_transient(self) -> None:
        self.assertTrue(MasterdError(503, "database_unavailable", "x").transient)
        self.assertTrue(MasterdError(0, "unreachable", "x").transient)
        self.assertFalse(MasterdError(404, "not_found", "x").transient)


class ClientTests(SynchronousTestCase):
    def test_fromEnv(self) -> None:
        opener = FakeOpener().on("GET", "/api/v1/master", masterDoc())
        client = Client.from_env(
            opener=opener, environ={"MASTERD_URL": "https://farm.example/", "MASTERD_TOKEN": "tok"}
        )
        self.assertEqual(client.url, "https://farm.example")
        client.master()
        self.assertEqual(opener.sent[0].url, "https://farm.example/api/v1/master")
        self.assertEqual(opener.sent[0].headers["authorization"], "Bearer tok")

    def test_fromEnvDefaults(self) -> None:
        client = Client.from_env(environ={})
        self.assertEqual(client.url, "http://127.0.0.1:8080")

    def test_pathPrefix(self) -> None:
        """
        Hrefs are paths from the master's root, appended to a base URL that
        may have a path of its own (a reverse proxy's prefix).
        """
        opener = FakeOpener()
        client = Client("https://farm.example/masterd/", "t", opener=opener)
        self.assertRaises(MasterdError, client.job, 1)
        self.assertEqual(opener.sent[0].url, "https://farm.example/masterd/api/v1/jobs/1")

    def test_badURL(self) -> None:
        for url in ["farm:8080", "ftp://farm", "http://", "http://farm:port", "http://f/?a=1"]:
            self.assertRaises(ValueError, Client, url, "t")


class LogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = clientWith(self.opener)
        self.opener.on("GET", "/api/v1/tasks/9001", taskDoc())
        self.task = self.client.task(9001)

    def logReply(self, lines: list[str], attempt: int, nextAfter: int | None) -> Reply:
        headers = {"Content-Type": "text/plain; charset=utf-8", "X-Masterd-Attempt": str(attempt)}
        if nextAfter is not None:
            headers["X-Masterd-Next-After"] = str(nextAfter)
        return Reply(raw="".join(f"{line}\n" for line in lines).encode(), headers=headers)

    def test_log(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001/log", self.logReply(["a", "b"], 2, 2))
        self.assertEqual(self.task.log(), "a\nb\n")
        self.assertEqual(self.opener.sent[-1].query, {})

    def test_readLog(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001/log", self.logReply(["c", "ü"], 1, 7))
        chunk = self.task.read_log(attempt=1, after=5)
        self.assertEqual((chunk.text, chunk.attempt, chunk.next_after), ("c\nü\n", 1, 7))
        self.assertEqual(chunk.lines, ["c", "ü"])
        self.assertEqual(self.opener.sent[-1].query, {"attempt": "1", "after": "5"})

    def test_readLogWithoutHeaders(self) -> None:
        self.opener.on("GET", "/api/v1/tasks/9001/log", Reply(raw=b"x\ny\n"))
        chunk = self.task.read_log(after=3)
        self.assertEqual((chunk.attempt, chunk.next_after), (0, 5))

    def test_followAcrossAttempts(self) -> None:
        """
        Following reads each new piece once; when a retry starts attempt 2,
        the rest of attempt 1 is read first, then attempt 2 from its start.
        It stops once the task is finished, sleeping between polls only.
        """
        self.opener.on(
            "GET",
            "/api/v1/tasks/9001",
            taskDoc(attempt=1),
            taskDoc(attempt=1),
            taskDoc(attempt=2, state="queued"),
            taskDoc(attempt=2, state="done"),
        )
        log = "/api/v1/tasks/9001/log"
        self.opener.on("GET", log, self.logReply(["one"], 1, 1))
        self.opener.on("GET", f"{log}?after=1", self.logReply(["two"], 1, 2))
        # The third poll: the master now answers for attempt 2, after line 2.
        self.opener.on("GET", f"{log}?after=2", self.logReply(["(attempt 2, line 3)"], 2, 3))
        self.opener.on("GET", f"{log}?attempt=1&after=2", self.logReply(["three"], 1, 3))
        self.opener.on("GET", f"{log}?attempt=2", self.logReply(["2a", "2b", "2c"], 2, 3))
        self.opener.on("GET", f"{log}?after=3", self.logReply(["2d"], 2, 4))
        slept: list[float] = []
        task = Task(self.task._transport, taskDoc(attempt=1))
        chunks = list(task.follow_log(poll_s=1.5, sleep=slept.append))
        self.assertEqual(
            [(c.attempt, c.text) for c in chunks],
            [(1, "one\n"), (1, "two\n"), (1, "three\n"), (2, "2a\n2b\n2c\n"), (2, "2d\n")],
        )
        self.assertEqual(slept, [1.5, 1.5, 1.5])
        self.assertEqual(task.state, "done")

    def test_followPinnedAttempt(self) -> None:
        self.opener.on(
            "GET", "/api/v1/tasks/9001", taskDoc(state="running"), taskDoc(state="failed")
        )
        self.opener.on("GET", "/api/v1/tasks/9001/log?attempt=1", self.logReply(["a"], 1, 1))
        self.opener.on(
            "GET", "/api/v1/tasks/9001/log?attempt=1&after=1", self.logReply(["b"], 1, 2)
        )
        slept: list[float] = []
        texts = [c.text for c in self.task.follow_log(attempt=1, sleep=slept.append)]
        self.assertEqual(texts, ["a\n", "b\n"])
        self.assertEqual(slept, [2.0])

    def test_failedPollChangesNothing(self) -> None:
        """
        A poll that fails leaves the follower where it was: the next asks
        for the same lines again, so that none is lost or repeated.
        """
        self.opener.on(
            "GET",
            "/api/v1/tasks/9001",
            taskDoc(),
            error(503, "database_unavailable", "try again shortly"),
            taskDoc(state="done"),
        )
        self.opener.on("GET", "/api/v1/tasks/9001/log", self.logReply(["a"], 2, 1))
        self.opener.on("GET", "/api/v1/tasks/9001/log?after=1", self.logReply(["b"], 2, 2))
        follower = LogFollower(self.task)
        self.assertEqual([c.text for c in follower.poll()], ["a\n"])
        self.assertRaises(MasterdError, follower.poll)
        self.assertEqual((follower.attempt, follower.after, follower.finished), (2, 1, False))
        self.assertEqual([c.text for c in follower.poll()], ["b\n"])
        self.assertTrue(follower.finished)


class WaitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = clientWith(self.opener)

    def test_waitUntilFinished(self) -> None:
        self.opener.on(
            "GET",
            "/api/v1/jobs/42",
            jobDoc(),
            jobDoc(),
            jobDoc(state="failed"),
        )
        job = self.client.job(42)
        slept: list[float] = []
        self.assertIs(job.wait(poll_s=3, sleep=slept.append), job)
        self.assertEqual(job.state, "failed")
        self.assertEqual(slept, [3])

    def test_waitTimeout(self) -> None:
        self.opener.on("GET", "/api/v1/jobs/42", jobDoc())
        job = self.client.job(42)
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        clock: Callable[[], float] = lambda: now[0]  # noqa: E731
        e = self.assertRaises(
            TimeoutError, job.wait, poll_s=10, timeout_s=35, sleep=sleep, clock=clock
        )
        self.assertIn("still running", str(e))
        self.assertEqual(now[0], 30)


class StandardLibraryOnlyTests(SynchronousTestCase):
    def test_importsNothingElse(self) -> None:
        """
        masterd_client and masterctl, and masterd.client (their old name),
        load nothing outside the standard library: imported with
        site-packages off (C{-S}), from the source tree alone (client/src
        and the root), they work, and no other top-level module is loaded.
        """
        code = (
            "import json, sys\n"
            "sys.path.insert(0, 'client/src')\n"
            "import masterd_client, masterd_client.cli\n"
            "import masterd.client, masterd.client.cli\n"
            "allowed = set(sys.stdlib_module_names) | {'masterd', 'masterd_client', '__main__'}\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} - allowed)))\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        result = subprocess.run(
            [sys.executable, "-S", "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout), [])
