"""
The master's HTTP application: health, readiness, metrics, the JSON API
under C{/api/v1}, and the documents that describe it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from attrs import define, field
from twisted.web.iweb import IRequest

from masterd._version import __version__
from masterd.accounts import SessionStore, TokenStore
from masterd.audit import Actor, AuditLog
from masterd.cluster import MasterRegistry
from masterd.cluster.models import MasterInfo, MasterPage
from masterd.config import Role
from masterd.db import Pool
from masterd.errors import NoSuchResource
from masterd.events import EventBus
from masterd.history import HistoryCollector
from masterd.jobs import JobStore
from masterd.schema import DEFAULT_LIMITS, InputLimits
from masterd.stats import MasterStats, prometheusRegistry, renderPrometheus
from masterd.stats.models import Health, MasterDocument
from masterd.talkback import AgentDirectory, TalkbackFactory

from ._accounts import AccountRoutes
from ._agents import AgentRoutes
from ._app import app
from ._archive import ArchiveRoutes
from ._auth import Authenticator, actorOf, authorized
from ._dashboard import DashboardRoutes
from ._errors import installErrorHandlers
from ._events import EventRoutes, EventStreams
from ._farm import FarmRoutes
from ._history import HistoryRoutes
from ._jobs import JobRoutes
from ._json import APIError, errorResponse
from ._openapi import asyncAPIDocument, openAPIDocument
from ._operations import PathParam, operation
from ._readiness import Readiness
from ._scheduling import SchedulingRoutes
from ._session import SessionRoutes
from ._webhooks import WebhookRoutes

MASTER = (PathParam("name", "name", "master", "A master's name"),)


@define(slots=False)
class MasterAPI(
    JobRoutes,
    ArchiveRoutes,
    AgentRoutes,
    AccountRoutes,
    SessionRoutes,
    WebhookRoutes,
    SchedulingRoutes,
    DashboardRoutes,
    EventRoutes,
    FarmRoutes,
    HistoryRoutes,
):
    """
    Holds what the routes need; C{app} is the one Klein application, whose
    routes the mixins (L{JobRoutes}, ...) define.
    """

    name: str
    stats: MasterStats
    auth: Authenticator
    database: Readiness
    jobs: JobStore
    agents: AgentDirectory
    talkback: TalkbackFactory | None = None
    cluster: MasterRegistry | None = None
    publicMetrics: bool = False
    maxFrames: int = 1_000_000
    inputLimits: InputLimits = DEFAULT_LIMITS
    pool: Pool | None = None
    tokens: TokenStore | None = None
    auditLog: AuditLog | None = None
    #: Limits and projects (masterd.scheduler.resources.SchedulingStore).
    scheduling: Any = None
    #: The webhook service's counters (masterd.webhooks.WebhookStats).
    webhookStats: Any = None
    #: ip_network values: the proxies whose X-Forwarded-For is believed.
    trustedProxies: tuple[Any, ...] = ()
    sessions: SessionStore | None = None
    #: How long a session lasts (auth.session_hours).
    sessionLifetime_s: float = 12 * 3600.0
    events: EventBus | None = None
    #: The open event streams (GET /api/v1/events).
    streams: EventStreams | None = None
    #: The farm's history totals for /metrics (masterd.history.HistoryMetrics).
    history: Any = None
    #: Where POST /api/v1/jobs/{id}/archive writes (retention.archive_dir).
    archiveDir: Path | None = None
    archiveLogs: bool = False
    version: str = __version__
    _registry: Any = field(init=False, default=None)
    _documents: dict[str, bytes] = field(init=False, factory=dict)

    app = app

    def __attrs_post_init__(self) -> None:
        self._registry = prometheusRegistry(
            self.stats,
            self.name,
            self.version,
            lambda: self.database.ready,
            lambda: self.talkback.registry.stats if self.talkback is not None else None,
        )
        self._registry.register(HistoryCollector(lambda: self.history))

    def actor(self, request: IRequest) -> Actor:
        """
        Who makes this authenticated request, through this master.
        """
        return actorOf(request, self.name, self.trustedProxies)

    # -- health, for load balancers: no auth ------------------------------

    @operation("GET", "/healthz", summary="The process is up", role=None, response=Health,
               errors=())  # fmt: skip
    def healthz(self, request: IRequest) -> Health:
        return Health(status="ok", master=self.name)

    @operation("GET", "/readyz", summary="The master can serve: its database is migrated "
               "and answers, and the master is registered", role=None, response=Health,
               errors=(503,))  # fmt: skip
    async def readyz(self, request: IRequest) -> Health | bytes:
        if await self.database.ping():
            return Health(status="ready", master=self.name)
        details = self.database.details()
        waiting = ", ".join(
            f"{k} {v}" for k, v in details.items() if v not in ("ready", "registered")
        )
        request.setHeader(b"retry-after", b"5")
        return errorResponse(
            request,
            APIError(503, "not_ready", f"not ready: {waiting or 'the database does not answer'}",
                     details),
        )  # fmt: skip

    # -- metrics ------------------------------------------------------------

    @operation("GET", "/metrics", summary="Counters in the Prometheus text format",
               role=None, response=str, contentType="text/plain", errors=(401, 403),
               description="Needs a viewer's token unless http.public_metrics is set.")  # fmt: skip
    def metrics(self, request: IRequest) -> Any:
        if not self.publicMetrics:
            return authorized(self.auth, request, Role.viewer, lambda: self._metrics(request))
        return self._metrics(request)

    def _metrics(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        body: bytes = renderPrometheus(self._registry)
        return body

    # -- the documents of the API ------------------------------------------------

    @operation("GET", "/api/v1/openapi.json", summary="This document (OpenAPI 3.1)",
               role=None, response=dict[str, Any], errors=())  # fmt: skip
    def openapi(self, request: IRequest) -> bytes:
        return self._document(request, "openapi", lambda: openAPIDocument(self.version))

    @operation("GET", "/api/v1/asyncapi.json", summary="The talkback channel (AsyncAPI 3.0)",
               role=None, response=dict[str, Any], errors=())  # fmt: skip
    def asyncapi(self, request: IRequest) -> bytes:
        return self._document(request, "asyncapi", lambda: asyncAPIDocument(self.version))

    def _document(self, request: IRequest, name: str, build: Any) -> bytes:
        body = self._documents.get(name)
        if body is None:
            body = self._documents[name] = msgspec.json.encode(build())
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    # -- the master itself ------------------------------------------------------

    @operation("GET", "/api/v1/master", summary="This master and its counters",
               role=Role.viewer, response=MasterDocument, database=False,
               description="Viewers and operators see the type and route of recent "
               "exceptions; only admins see their messages.")  # fmt: skip
    def master(self, request: IRequest) -> MasterDocument:
        snapshot = self.stats.snapshot()
        principal = request.principal  # type: ignore[attr-defined]
        if not principal.may(Role.admin):
            exceptions: dict[str, Any] = snapshot["exceptions"]  # type: ignore[assignment]
            exceptions["recent"] = [
                {k: v for k, v in item.items() if k != "message"} for item in exceptions["recent"]
            ]
        snapshot["database"]["ready"] = self.database.ready  # type: ignore[index]
        if self.talkback is not None:
            snapshot["talkback"] = self.talkback.registry.stats.snapshot()
        if self.webhookStats is not None:
            snapshot["webhooks"] = self.webhookStats.snapshot()
        return msgspec.convert(
            {"name": self.name, "href": "/api/v1/master", "version": self.version, **snapshot},
            MasterDocument,
        )

    def snapshot(self) -> dict[str, Any]:
        """
        What this master stores with each heartbeat: the headline counters.
        """
        r = self.stats.requests
        return {
            "requests": r.total,
            "in_flight": r.inFlight,
            "avg_ms": round(r.totalSeconds / r.total * 1000, 3) if r.total else 0.0,
            "exceptions": self.stats.exceptions.total,
            # The dashboard's masters view shows them for every master.
            "recent_exceptions": self.stats.exceptions.documents()[:5],
            "agents_connected": (
                self.talkback.registry.stats.connected if self.talkback is not None else 0
            ),
            "tasks_assigned": self.stats.scheduling.assigned,
        }

    @operation("GET", "/api/v1/masters", summary="Every master sharing the database",
               role=Role.viewer, response=MasterPage)  # fmt: skip
    async def masters(self, request: IRequest) -> MasterPage:
        if self.cluster is None:
            return MasterPage(items=[])
        return MasterPage(items=await self.cluster.masters())

    @operation("GET", "/api/v1/masters/{name}", summary="A master", role=Role.viewer,
               params=MASTER, response=MasterInfo)  # fmt: skip
    async def oneMaster(self, request: IRequest, name: str) -> MasterInfo:
        items = await self.cluster.masters() if self.cluster is not None else []
        for item in items:
            if item.name == name:
                return item
        raise NoSuchResource("master", name)


installErrorHandlers(MasterAPI.app)
