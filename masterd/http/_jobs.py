"""
Jobs and tasks over HTTP: the seed's "Job Processing".
"""

from __future__ import annotations

import uuid

from twisted.web.iweb import IRequest

from masterd.config import Role
from masterd.errors import InvalidField
from masterd.jobs import JobState, JobStore, TaskState, parseJob, parseJobPatch

from ._app import ID, app
from ._auth import requires
from ._json import jsonResponse, readJSON
from ._query import nextHref, queryChoice, queryInt, queryLimit, queryText


class JobRoutes:
    """
    A mixin of L{MasterAPI}: the routes under C{/api/v1/jobs},
    C{/api/v1/tasks} and C{/api/v1/assignments}.
    """

    jobs: JobStore
    maxFrames: int

    @app.route("/api/v1/jobs", methods=["POST"])
    @requires(Role.operator)
    async def createJob(self, request: IRequest) -> bytes:
        spec = parseJob(readJSON(request), self.maxFrames)
        owner = request.principal.name  # type: ignore[attr-defined]
        job = await self.jobs.createJob(spec, owner)
        request.setHeader(b"location", job["href"].encode("ascii"))
        return jsonResponse(request, job, 201)

    @app.route("/api/v1/jobs", methods=["GET"])
    @requires(Role.viewer)
    async def listJobs(self, request: IRequest) -> bytes:
        state = queryChoice(request, "state", [s.value for s in JobState])
        owner = queryText(request, "owner") or None
        limit = queryLimit(request)
        after = queryInt(request, "after", None, 1)
        items, more = await self.jobs.listJobs(state=state, owner=owner, limit=limit, after=after)
        following = None
        if more:
            following = nextHref(
                "/api/v1/jobs",
                {"state": state, "owner": owner, "limit": limit},
                items[-1]["id"],
            )
        return jsonResponse(request, {"items": items, "next": following})

    @app.route(f"/api/v1/jobs/<{ID}:jobID>", methods=["GET"])
    @requires(Role.viewer)
    async def getJob(self, request: IRequest, jobID: int) -> bytes:
        return jsonResponse(request, await self.jobs.getJob(jobID))

    @app.route(f"/api/v1/jobs/<{ID}:jobID>", methods=["PATCH"])
    @requires(Role.operator)
    async def patchJob(self, request: IRequest, jobID: int) -> bytes:
        changes = parseJobPatch(readJSON(request))
        return jsonResponse(request, await self.jobs.patchJob(jobID, changes))

    @app.route(f"/api/v1/jobs/<{ID}:jobID>", methods=["DELETE"])
    @requires(Role.operator)
    async def deleteJob(self, request: IRequest, jobID: int) -> bytes:
        await self.jobs.deleteJob(jobID)
        request.setResponseCode(204)
        return b""

    @app.route(f"/api/v1/jobs/<{ID}:jobID>/cancel", methods=["POST"])
    @requires(Role.operator)
    async def cancelJob(self, request: IRequest, jobID: int) -> bytes:
        return jsonResponse(request, await self.jobs.cancelJob(jobID))

    @app.route(f"/api/v1/jobs/<{ID}:jobID>/retry", methods=["POST"])
    @requires(Role.operator)
    async def retryJob(self, request: IRequest, jobID: int) -> bytes:
        return jsonResponse(request, await self.jobs.retryJob(jobID))

    @app.route(f"/api/v1/jobs/<{ID}:jobID>/blocklist/clear", methods=["POST"])
    @requires(Role.operator)
    async def clearBlocklist(self, request: IRequest, jobID: int) -> bytes:
        return jsonResponse(request, await self.jobs.clearBlocklist(jobID))

    @app.route(f"/api/v1/jobs/<{ID}:jobID>/tasks", methods=["GET"])
    @requires(Role.viewer)
    async def listTasks(self, request: IRequest, jobID: int) -> bytes:
        state = queryChoice(request, "state", [s.value for s in TaskState])
        limit = queryLimit(request)
        after = queryInt(request, "after", None, -1, 2**31 - 1)
        items, more = await self.jobs.listTasks(jobID, state=state, limit=limit, after=after)
        following = None
        if more:
            following = nextHref(
                f"/api/v1/jobs/{jobID}/tasks",
                {"state": state, "limit": limit},
                items[-1]["index"],
            )
        return jsonResponse(request, {"items": items, "next": following})

    @app.route(f"/api/v1/tasks/<{ID}:taskID>", methods=["GET"])
    @requires(Role.viewer)
    async def getTask(self, request: IRequest, taskID: int) -> bytes:
        return jsonResponse(request, await self.jobs.getTask(taskID))

    @app.route(f"/api/v1/tasks/<{ID}:taskID>/attempts", methods=["GET"])
    @requires(Role.viewer)
    async def taskAttempts(self, request: IRequest, taskID: int) -> bytes:
        # Every attempt of the task, oldest first: one page.
        items = await self.jobs.taskAttempts(taskID)
        return jsonResponse(request, {"items": items, "next": None})

    @app.route(f"/api/v1/tasks/<{ID}:taskID>/cancel", methods=["POST"])
    @requires(Role.operator)
    async def cancelTask(self, request: IRequest, taskID: int) -> bytes:
        return jsonResponse(request, await self.jobs.cancelTask(taskID))

    @app.route(f"/api/v1/tasks/<{ID}:taskID>/retry", methods=["POST"])
    @requires(Role.operator)
    async def retryTask(self, request: IRequest, taskID: int) -> bytes:
        return jsonResponse(request, await self.jobs.retryTask(taskID))

    @app.route("/api/v1/assignments", methods=["GET"])
    @requires(Role.viewer)
    async def assignments(self, request: IRequest) -> bytes:
        agent = _agentID(queryText(request, "agent"))
        job = queryInt(request, "job", None, 1)
        limit = queryInt(request, "limit", 500, 1, 5000)
        assert limit is not None
        after = queryInt(request, "after", None, 1)
        items, more = await self.jobs.assignments(agent=agent, job=job, limit=limit, after=after)
        following = None
        if more:
            following = nextHref(
                "/api/v1/assignments",
                {"agent": agent, "job": job, "limit": limit},
                items[-1]["id"],
            )
        return jsonResponse(request, {"items": items, "next": following})


def _agentID(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidField("agent", f"must be an agent id (a UUID), not {text!r}") from None
