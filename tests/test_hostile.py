"""
The master as a hostile client tries it, over real HTTP on a real database:
every kind of input PostgreSQL, JSON or the master itself cannot take gets a
4xx JSON error naming the field, and nothing is written.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from ._api import API, TOKENS, startAPI

AGENT = "7b0c6b2e-0d3c-4a59-9b4b-6a4a0b9d8e11"
BASE: dict[str, Any] = {"title": "t", "command": ["render", "{frame}"], "frames": "1-3"}


def job(**changes: Any) -> dict[str, Any]:
    body = dict(BASE)
    body.update(changes)
    return body


def nested(depth: int, leaf: str = "1") -> str:
    return '{"k":' * depth + leaf + "}" * depth


class _Raw(protocol.Protocol):
    def __init__(self, request: bytes, done: Deferred[bytes]) -> None:
        self.request = request
        self.done = done
        self.data = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        # Done once the declared body is here (the server may keep the
        # connection open).
        head, sep, body = self.data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n")[1:] if sep else ():
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and len(body) >= int(value):
                assert self.transport is not None
                self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.data)


async def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """
    Send exactly these bytes; the status, headers and body of the answer.
    """
    done: Deferred[bytes] = Deferred()
    factory = protocol.ClientFactory()
    factory.protocol = lambda: _Raw(request, done)  # type: ignore[assignment,misc]
    reactor.connectTCP("127.0.0.1", port, factory)
    data = await done
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def get(path: bytes, role: str = "admin", extra: bytes = b"") -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + f"Authorization: Bearer {TOKENS[role]}\r\n".encode()
        + extra
        + b"\r\n"
    )  # fmt: skip


#: (raw JSON body of POST /api/v1/jobs, the field named); each a 400 but for
#: those in UNPROCESSABLE, which fit the schema and break a rule it cannot
#: state (422).
BAD_BODIES: list[tuple[str, str]] = [
    ('{"title": "a\\u0000b", "command": ["x"], "frames": "1"}', "title"),
    ('{"title": "a\\ud800b", "command": ["x"], "frames": "1"}', "title"),
    ('{"title": "\\udc00", "command": ["x"], "frames": "1"}', "title"),
    ('{"title": "t", "command": ["x\\u0000"], "frames": "1"}', "command[0]"),
    ('{"title": "t", "command": ["x"], "frames": "1", "env": {"A\\u0000": "1"}}', 'env["A\\u0000"]'),
    ('{"title": "t", "command": ["x"], "frames": "1", "env": {"A": "\\u0000"}}', "env.A"),
    ('{"title": "t", "command": ["x"], "frames": "1", "env": {"A=B": "1"}}', 'env["A=B"]'),
    ('{"title": "t", "command": ["x"], "frames": "1", "cwd": "/tmp/\\u0000"}', "cwd"),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"a": {"b": "\\u0000"}}}', "metadata.a.b"),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"k\\u0000": 1}}', 'metadata["k\\u0000"]'),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"a": "\\ud83d"}}', "metadata.a"),
    # Numbers beyond what a column or JSON interchange holds.
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"n": 9223372036854775808}}', "metadata.n"),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"n": 9007199254740993}}', "metadata.n"),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"n": -9007199254740993}}', "metadata.n"),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"n": [1, 1e400]}}', "metadata.n[1]"),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"n": 1e300}}', "metadata.n"),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"n": ' + "9" * 5000 + "}}", "metadata.n"),
    ('{"title": "t", "command": ["x"], "frames": "1", "priority": 18446744073709551617}', "priority"),
    ('{"title": "t", "command": ["x"], "frames": "1", "priority": ' + "1" * 4000 + "}", "priority"),
    ('{"title": "t", "command": ["x"], "frames": "1", "priority": 50.5}', "priority"),
    ('{"title": "t", "command": ["x"], "frames": [1, 99999999999]}', "frames[1]"),
    ('{"title": "t", "command": ["x"], "frames": "1", "depends_on": [9223372036854775808]}', "depends_on[0]"),
    ('{"title": "t", "command": ["x"], "frames": "1", "requirements": {"ram_mb": 1e10}}', "requirements.ram_mb"),
    ('{"title": "t", "command": ["x"], "frames": "1", "task_timeout_s": -1e400}', "task_timeout_s"),
    # Nesting: past the limit (32), and far past Python's recursion limit.
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": ' + nested(40) + "}", "metadata" + ".k" * 31),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": ' + nested(100_000) + "}", "metadata" + ".k" * 31),
    ('{"title": "t", "command": ["x"], "frames": "1", "metadata": {"a": ' + "[" * 50_000 + "]" * 50_000 + "}}", "metadata.a" + "[0]" * 30),
    ('{"title": "t", "command": ["x"], "frames": "1", "tasks": ' + "[" * 50_000 + "]" * 50_000 + "}", "tasks[0]"),
    # Strings that build huge strings, frames past the limit.
    ('{"title": "t", "command": ["x", "{frame:200000000}"], "frames": "1"}', "command[1]"),
    ('{"title": "t", "command": ["x", "{frame:.99999999f}"], "frames": "1"}', "command[1]"),
    ('{"title": "t", "command": ["x", "{frame:{start}}"], "frames": "1"}', "command[1]"),
    ('{"title": "t", "command": ["x"], "frames": "1-2000000000"}', "frames"),
    ('{"title": "t", "command": ["x"], "frames": "1-9999999999"}', "frames"),
    ('{"title": "t", "command": ["x"], "frames": "1-99999999999999999999"}', "frames"),
    ('{"title": "' + "x" * 600 + '", "command": ["x"], "frames": "1"}', "title"),
    ('{"title": "t", "command": ["x"], "frames": "1", "requirements": {"tags": ["' + "t" * 300 + '"]}}', "requirements.tags[0]"),
]  # fmt: skip


UNPROCESSABLE = {
    body for body, _ in BAD_BODIES
    # Nested past limits.max_json_depth, or frames past MAX_FRAME or the limit.
    if ((body.count("{") > 32 or body.count("[") > 32) and '"tasks"' not in body)
    or '"1-2000000000"' in body or '"1-9999999999"' in body
}  # fmt: skip


class Base(TestCase):
    api: API

    async def setUp(self) -> None:  # type: ignore[override]
        self.api = await startAPI(self)

    async def nothingWritten(self) -> None:
        for table in ("jobs", "tasks", "job_dependencies", "agents"):
            self.assertEqual(await self.api.count(table), 0, table)

    def port(self) -> int:
        return int(self.api.base.rsplit(":", 1)[1])


class BodyTests(Base):
    async def test_badBodies(self) -> None:
        """
        Each is a 400 (or 422) naming the field, with nothing written.
        """
        for body, field in BAD_BODIES:
            reply = await self.api.call("POST", "/api/v1/jobs", raw=body.encode())
            shown = body[:120]
            expected = 422 if body in UNPROCESSABLE else 400
            self.assertEqual(reply.code, expected, (shown, reply.body[:300]))
            error = reply.json()
            self.assertEqual(error["error"], "invalid_field", (shown, error))
            self.assertEqual(error["details"]["field"], field, (shown, error))
            self.assertTrue(error["message"].startswith(f"{field}: "), error)
        await self.nothingWritten()

    async def test_notJSON(self) -> None:
        for body in (b'{"title": NaN}', b'{"title": Infinity}', b"\xff\xfe{}", b'{"title": "t"'):
            reply = await self.api.call("POST", "/api/v1/jobs", raw=body)
            self.assertEqual(reply.code, 400, body)
            self.assertEqual(reply.json()["error"], "invalid_json", body)
        await self.nothingWritten()

    async def test_contentType(self) -> None:
        reply = await self.api.call(
            "POST",
            "/api/v1/jobs",
            raw=json.dumps(BASE).encode(),
        )
        self.assertEqual(reply.code, 201)
        status, _, body = await raw(
            self.port(),
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Authorization: Bearer {TOKENS['admin']}\r\n".encode()
            + b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
        )
        self.assertEqual(status, 415)
        self.assertEqual(json.loads(body)["error"], "unsupported_media_type")

    async def test_agentPatch(self) -> None:
        """
        An agent PATCHed with limits beyond any column is refused (it used
        to be stored, and then every read of the agent failed).
        """
        for body, field in [
            ({"limits": {"max_tasks": 2**63 + 1}}, "limits.max_tasks"),
            ({"limits": {"max_ram_mb": 2**31}}, "limits.max_ram_mb"),
            ({"limits": {"max_cpus": 0}}, "limits.max_cpus"),
            ({"limits": {"nope": 1}}, "limits.nope"),
            ({"tags": ["a\u0000"]}, "tags[0]"),
            ({"tags": ["ok", " "]}, "tags[1]"),
            ({"enabled": "yes"}, "enabled"),
        ]:
            reply = await self.api.call("PATCH", f"/api/v1/agents/{AGENT}", body)
            self.assertEqual(reply.code, 400, (body, reply.body))
            self.assertEqual(reply.json()["details"]["field"], field, body)

    async def test_jobPatch(self) -> None:
        created = await self.api.submit()
        path = f"/api/v1/jobs/{created['id']}"
        for body, field in [
            ({"priority": 2**64}, "priority"),
            ({"title": "\u0000"}, "title"),
            ({"requirements": {"cpus": 2**40}}, "requirements.cpus"),
            ({"stop_running": True, "paused": False}, "stop_running"),
            ({"owner": "me"}, "owner"),
        ]:
            reply = await self.api.call("PATCH", path, body)
            self.assertEqual(reply.code, 400, (body, reply.body))
            self.assertEqual(reply.json()["details"]["field"], field, body)
        self.assertEqual(await self.api.ok("GET", path), created)


class PathAndQueryTests(Base):
    async def test_paths(self) -> None:
        """
        Segments that cannot name a resource: 404 naming the parameter
        (past bigint, Unicode digits, an escaped slash), 400 for text that
        is not UTF-8; every answer is JSON.
        """
        port = self.port()
        for path, status, field in [
            (b"/api/v1/jobs/99999999999999999999", 404, "jobID"),
            (b"/api/v1/jobs/9223372036854775808", 404, "jobID"),
            (b"/api/v1/jobs/%D9%A1%D9%A2", 404, "jobID"),
            (b"/api/v1/jobs/0", 404, "jobID"),
            (b"/api/v1/jobs/-1", 404, "jobID"),
            (b"/api/v1/jobs/1%2F2", 404, None),
            (b"/api/v1/jobs/%00", 404, "jobID"),
            (b"/api/v1/jobs/%FF", 400, "(path)"),
            (b"/api/v1/tasks/99999999999999999999/attempts", 404, "taskID"),
            (b"/api/v1/agents/%FF%FE", 400, "(path)"),
            (b"/api/v1/agents/nope", 404, "agentID"),
            (b"/api/v1/agents/%D9%A1b0c6b2e-0d3c-4a59-9b4b-6a4a0b9d8e11", 404, "agentID"),
            (b"/api/v1/agents/{7b0c6b2e-0d3c-4a59-9b4b-6a4a0b9d8e11}", 404, "agentID"),
            (b"/api/v1/masters/%00", 404, "name"),
            (b"/%FF", 400, "(path)"),
        ]:
            code, headers, body = await raw(port, get(path))
            self.assertEqual(code, status, (path, body))
            self.assertTrue(headers["content-type"].startswith("application/json"), path)
            error = json.loads(body)
            if field is not None:
                self.assertEqual(error["details"].get("field"), field, (path, error))
            # No string of an error holds a NUL, even one quoting the path.
            self.assertNotIn(b"\\u0000", body.replace(b"\\\\u0000", b""), path)

    async def test_queries(self) -> None:
        port = self.port()
        for query, field in [
            (b"/api/v1/jobs?after=%D9%A1%D9%A2", "after"),
            (b"/api/v1/jobs?after=99999999999999999999", "after"),
            (b"/api/v1/jobs?owner=%00", "owner"),
            (b"/api/v1/jobs?owner=%FF", "owner"),
            (b"/api/v1/jobs?limit=1e3", "limit"),
            (b"/api/v1/jobs?limit=1&limit=2", "limit"),
            (b"/api/v1/jobs?sort=name", "sort"),
            (b"/api/v1/agents?after=%D9%A1", "after"),
            (b"/api/v1/agents?after=nope", "after"),
            (b"/api/v1/agents/" + AGENT.encode() + b"/failures?after=%D9%A1-%D9%A1", "after"),
            (
                b"/api/v1/agents/" + AGENT.encode() + b"/failures?after=99999999999999999999-1",
                "after",
            ),
            (b"/api/v1/agents/" + AGENT.encode() + b"/jobs?after=99999999999999999999", "after"),
            (b"/api/v1/tasks/1/log?after=99999999999", "after"),
            (b"/api/v1/tasks/1/log?attempt=-1", "attempt"),
            (b"/api/v1/assignments?agent=%D9%A1", "agent"),
            (b"/api/v1/jobs/1/tasks?after=99999999999", "after"),
            # A name the message quotes: its NUL is written as an escape.
            (b"/api/v1/agents?%00x=1&%00x=2", "\\u0000x"),
            (b"/api/v1/jobs?%00=1", '["\\u0000"]'),
        ]:
            code, _, body = await raw(port, get(query))
            self.assertEqual(code, 400, (query, body))
            self.assertEqual(json.loads(body)["details"]["field"], field, query)
            self.assertNotIn("\0", json.loads(body)["message"], query)

    async def test_refusedUpgrade(self) -> None:
        """
        A refused WebSocket upgrade is answered in JSON too.
        """
        port = self.port()
        for extra, status in [
            (b"Upgrade: websocket\r\nConnection: Upgrade\r\n", 400),
            (b"", 400),
            (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 400),
            (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             b"Sec-WebSocket-Key: \xff\xfe\r\n", 400),
        ]:  # fmt: skip
            request = b"GET /api/v1/talkback HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"
            code, headers, body = await raw(port, request)
            self.assertEqual(code, status, body)
            self.assertTrue(headers["content-type"].startswith("application/json"))
            json.loads(body)
        code, headers, body = await raw(
            port, get(b"/api/v1/talkback", "viewer", b"Upgrade: websocket\r\n")
        )
        self.assertEqual(code, 403)
        self.assertEqual(json.loads(body)["error"], "forbidden")
        # A master not ready yet: 503 with Retry-After, which agents retry.
        self.api.api.database.ready = False  # type: ignore[misc]
        upgrade = (
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
        code, headers, body = await raw(port, get(b"/api/v1/talkback", "agent", upgrade))
        self.assertEqual(code, 503, body)
        self.assertEqual(headers["retry-after"], "5")
        self.assertEqual(json.loads(body)["error"], "database_unavailable")
