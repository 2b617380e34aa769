"""
The dashboard at C{/} (docs/dashboard.md): its page for every view's URL,
so that links can be shared and reloaded, and its versioned files.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from masterd.dashboard import ASSET_NAME, CONTENT_SECURITY_POLICY, Assets, loadAssets
from masterd.errors import NoSuchResource

from ._operations import PathParam, operation

_VERSION = PathParam("version", "name", "asset", "The files' version", r"^[0-9a-f]{16}$", 16)
_ASSET = PathParam("name", "name", "asset", "A file of the dashboard", ASSET_NAME, 64)
_JOB = (PathParam("jobID", "id", "job", "A job id"),)
_TASK = (PathParam("taskID", "id", "task", "A task id"),)
_AGENT = (PathParam("agentID", "agent", "agent", "An agent id"),)


class DashboardRoutes:
    """
    A mixin of L{MasterAPI}. The page needs no token to be loaded: it asks
    for one (a session), and everything it shows comes from the API.
    """

    _assets: Assets | None = None

    def _files(self) -> Assets:
        if self._assets is None:
            self._assets = loadAssets()
        return self._assets

    def _page(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        # The page names the current files: never kept.
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"same-origin")
        return self._files().index

    @operation("GET", "/", summary="The dashboard", role=None, response=str,
               contentType="text/html", errors=(), tag="dashboard")  # fmt: skip
    def dashboard(self, request: IRequest) -> bytes:
        return self._page(request)

    @operation("GET", "/jobs", summary="The dashboard: jobs", role=None, response=str,
               contentType="text/html", errors=(), tag="dashboard")  # fmt: skip
    def dashboardJobs(self, request: IRequest) -> bytes:
        return self._page(request)

    @operation("GET", "/jobs/{jobID}", summary="The dashboard: a job", role=None,
               params=_JOB, response=str, contentType="text/html", tag="dashboard")  # fmt: skip
    def dashboardJob(self, request: IRequest, jobID: int) -> bytes:
        return self._page(request)

    @operation("GET", "/tasks/{taskID}", summary="The dashboard: a task", role=None,
               params=_TASK, response=str, contentType="text/html", tag="dashboard")  # fmt: skip
    def dashboardTask(self, request: IRequest, taskID: int) -> bytes:
        return self._page(request)

    @operation("GET", "/agents", summary="The dashboard: agents", role=None, response=str,
               contentType="text/html", errors=(), tag="dashboard")  # fmt: skip
    def dashboardAgents(self, request: IRequest) -> bytes:
        return self._page(request)

    @operation("GET", "/agents/{agentID}", summary="The dashboard: an agent", role=None,
               params=_AGENT, response=str, contentType="text/html",
               tag="dashboard")  # fmt: skip
    def dashboardAgent(self, request: IRequest, agentID: str) -> bytes:
        return self._page(request)

    @operation("GET", "/masters", summary="The dashboard: masters", role=None, response=str,
               contentType="text/html", errors=(), tag="dashboard")  # fmt: skip
    def dashboardMasters(self, request: IRequest) -> bytes:
        return self._page(request)

    @operation("GET", "/audit", summary="The dashboard: audit trail", role=None, response=str,
               contentType="text/html", errors=(), tag="dashboard")  # fmt: skip
    def dashboardAudit(self, request: IRequest) -> bytes:
        return self._page(request)

    @operation("GET", "/assets/{version}/{name}", summary="A file of the dashboard",
               role=None, params=(_VERSION, _ASSET), response=str,
               contentType="application/octet-stream", tag="dashboard",
               description="Kept by browsers for a year: a new release has a new version. "
               "A version that is not this master's is a 404.")  # fmt: skip
    def dashboardAsset(self, request: IRequest, version: str, name: str) -> Any:
        asset = self._files().get(version, name)
        if asset is None:
            raise NoSuchResource("asset", f"{version}/{name}", field="name")
        request.setHeader(b"content-type", asset.contentType)
        request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return asset.body
