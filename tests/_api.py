"""
The master's HTTP application on a real socket over a fresh real database:
what the API tests talk to.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from masterd.accounts import SessionStore, TokenStore
from masterd.audit import AuditLog
from masterd.config import Role, TokenConfig
from masterd.db import Batcher, Pool
from masterd.events import EventBus, TokensChanged
from masterd.http import Authenticator, MasterAPI, MasterSite
from masterd.http._events import EventStreams
from masterd.jobs import JobStore
from masterd.scheduler.resources import SchedulingStore
from masterd.stats import MasterStats
from masterd.talkback import (
    AgentDirectory,
    AgentRegistry,
    AgentStore,
    TalkbackFactory,
    TalkbackSettings,
)

from ._http import FakeReadiness
from ._postgres import freshDatabase

TOKENS = {
    "viewer": "viewer-token-0123456789",
    "user": "user-token-0123456789",
    "operator": "operator-token-0123456789",
    "admin": "admin-token-0123456789",
    "agent": "agent-token-0123456789",
}


class Reply:
    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class API:
    def __init__(self, case: TestCase, pool: Pool, port: int, events: EventBus) -> None:
        self.case = case
        self.pool = pool
        self.base = f"http://127.0.0.1:{port}"
        self.events = events
        self.jobs = JobStore(pool, events)
        self.registry: AgentRegistry
        self.auth: Authenticator
        self.settings: TalkbackSettings
        self.api: MasterAPI

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        role: str = "admin",
        raw: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """
        C{role} picks one of the configuration's L{TOKENS}; C{token}, when
        given, is sent instead (a database token's secret).
        """
        secret = token if token is not None else TOKENS.get(role) if role else None
        sent = {"Authorization": [f"Bearer {secret}"]} if secret else {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = ["application/json"]
        for name, value in (headers or {}).items():
            sent[name] = [value]
        response = await treq.request(
            method, self.base + path, headers=sent, data=data, persistent=False
        )
        content = await response.content()
        return Reply(response.code, response.headers, content)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        reply = await self.call(method, path, body)
        self.case.assertEqual(reply.code, status, reply.body)
        return reply.json() if reply.body else None

    async def submit(self, **body: Any) -> dict[str, Any]:
        body.setdefault("title", "a job")
        body.setdefault("command", ["render", "{frame}"])
        body.setdefault("frames", "1-4")
        result: dict[str, Any] = await self.ok("POST", "/api/v1/jobs", body, 201)
        return result

    async def count(self, table: str) -> int:
        rows = await self.pool.query(f"SELECT count(*) FROM {table}")
        return int(rows[0][0])


async def startAPI(
    case: TestCase,
    maxFrames: int = 1_000_000,
    settings: TalkbackSettings | None = None,
    clock: Any = None,
    trustedProxies: tuple[Any, ...] = (),
) -> API:
    dsn = await freshDatabase(case)
    pool = Pool(reactor, dsn, minSize=1, maxSize=4)
    await pool.open()
    case.addCleanup(pool.close)
    events = EventBus()
    stats = MasterStats(now=reactor.seconds)
    settings = settings or TalkbackSettings()
    tokens = TokenStore(pool, events)
    sessions = SessionStore(pool)
    auth = Authenticator(
        (
            TokenConfig(name, Role(name), hashlib.sha256(t.encode()).digest())
            for name, t in TOKENS.items()
        ),
        tokens.lookup,
        reactor,
        sessions=sessions.lookup,
    )
    events.subscribe(TokensChanged, lambda _: auth.invalidate())
    # Hellos, task reports and log lines go through a batcher, as in a
    # running master.
    store = AgentStore(pool, Batcher(pool), events=events)
    registry = AgentRegistry("test", store, events, clock or reactor)
    api = MasterAPI(
        name="test",
        stats=stats,
        auth=auth,
        database=FakeReadiness(True),
        jobs=JobStore(pool, events),
        agents=AgentDirectory(pool, events),
        talkback=TalkbackFactory(registry, auth, settings, clock or reactor),
        maxFrames=maxFrames,
        pool=pool,
        tokens=tokens,
        auditLog=AuditLog(pool),
        scheduling=SchedulingStore(pool, events),
        sessions=sessions,
        events=events,
        trustedProxies=trustedProxies,
        streams=EventStreams(reactor),
    )
    site = MasterSite(api.app.resource(), stats, 1 << 20)
    site.accessLog.enabled = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")

    async def stop() -> None:
        assert api.streams is not None
        api.streams.close()
        await port.stopListening()
        await site.closeConnections(reactor)

    from twisted.internet.defer import Deferred

    case.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    result = API(case, pool, port.getHost().port, events)
    result.registry = registry
    result.auth = auth
    result.settings = settings
    result.api = api
    return result
