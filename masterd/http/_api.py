"""
The master's HTTP application: health, readiness, metrics and the JSON API
under C{/api/v1}.
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import define, field
from twisted.web.iweb import IRequest

from masterd._version import __version__
from masterd.cluster import MasterRegistry
from masterd.config import Role
from masterd.errors import NoSuchResource
from masterd.jobs import JobStore
from masterd.stats import MasterStats, prometheusRegistry, renderPrometheus
from masterd.talkback import AgentDirectory, TalkbackFactory

from ._agents import AgentRoutes
from ._app import app
from ._auth import Authenticator, requires
from ._errors import installErrorHandlers
from ._jobs import JobRoutes
from ._json import APIError, errorResponse, jsonResponse


class Readiness(Protocol):
    @property
    def ready(self) -> bool: ...

    async def ping(self) -> bool: ...


@define(slots=False)
class MasterAPI(JobRoutes, AgentRoutes):
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
    version: str = __version__
    _registry: Any = field(init=False, default=None)

    app = app

    def __attrs_post_init__(self) -> None:
        self._registry = prometheusRegistry(
            self.stats,
            self.name,
            self.version,
            lambda: self.database.ready,
            lambda: self.talkback.registry.stats if self.talkback is not None else None,
        )

    # -- health, for load balancers: no auth ------------------------------

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return jsonResponse(request, {"status": "ok", "master": self.name})

    @app.route("/readyz", methods=["GET"])
    async def readyz(self, request: IRequest) -> bytes:
        if await self.database.ping():
            return jsonResponse(request, {"status": "ready", "master": self.name})
        return errorResponse(
            request,
            APIError(503, "not_ready", "the database is not available", {"database": "down"}),
        )

    # -- metrics ------------------------------------------------------------

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        if not self.publicMetrics:
            self.auth.require(request, Role.viewer)
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        body: bytes = renderPrometheus(self._registry)
        return body

    # -- the master itself ------------------------------------------------------

    @app.route("/api/v1/master", methods=["GET"])
    @requires(Role.viewer)
    def master(self, request: IRequest) -> bytes:
        document: dict[str, Any] = {
            "name": self.name,
            "href": "/api/v1/master",
            "version": self.version,
        }
        document.update(self.stats.snapshot())
        database = document["database"]
        database["ready"] = self.database.ready
        if self.talkback is not None:
            document["talkback"] = self.talkback.registry.stats.snapshot()
        return jsonResponse(request, document)

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
            "agents_connected": (
                self.talkback.registry.stats.connected if self.talkback is not None else 0
            ),
            "tasks_assigned": self.stats.scheduling.assigned,
        }

    @app.route("/api/v1/masters", methods=["GET"])
    @requires(Role.viewer)
    async def masters(self, request: IRequest) -> bytes:
        if self.cluster is None:
            return jsonResponse(request, {"items": []})
        return jsonResponse(request, {"items": await self.cluster.masters()})

    @app.route("/api/v1/masters/<name>", methods=["GET"])
    @requires(Role.viewer)
    async def oneMaster(self, request: IRequest, name: str) -> bytes:
        items = await self.cluster.masters() if self.cluster is not None else []
        for item in items:
            if item["name"] == name:
                return jsonResponse(request, item)
        raise NoSuchResource("master", name)


installErrorHandlers(MasterAPI.app)
