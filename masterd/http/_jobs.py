"""
Jobs and tasks over HTTP: the seed's "Job Processing".
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from twisted.web.iweb import IRequest

# Loaded with the routes, so that the first OpenJD submission does not pay
# for importing openjd-model (pydantic), about half a second.
import masterd.openjd  # noqa: F401
from masterd.audit import Actor
from masterd.config import Role
from masterd.db import Pool
from masterd.errors import Unprocessable
from masterd.jobs import JobStore, jobChanges, jobSpec
from masterd.jobs.grid import TaskStates, taskStates
from masterd.jobs.models import (
    DEFAULT_JOB_SORT,
    MAX_JOB_OFFSET,
    AssignmentQuery,
    AttemptPage,
    JobDocument,
    JobPage,
    JobPatch,
    JobPatchBody,
    JobQuery,
    JobSubmission,
    JobSubmissionBody,
    TaskDocument,
    TaskPage,
    TaskQuery,
    TaskRetry,
    given,
)

from ._operations import PathParam, agentID, operation
from ._query import nextHref

JOB = (PathParam("jobID", "id", "job", "A job id"),)
TASK = (PathParam("taskID", "id", "task", "A task id"),)


class JobRoutes:
    """
    A mixin of L{MasterAPI}: the routes under C{/api/v1/jobs},
    C{/api/v1/tasks} and C{/api/v1/assignments}.
    """

    jobs: JobStore
    maxFrames: int
    pool: Pool | None

    actor: Callable[[IRequest], Actor]

    @operation("POST", "/api/v1/jobs", summary="Submit a job", role=Role.user,
               body=JobSubmissionBody, status=201, response=JobDocument, errors=(404, 422),
               tag="jobs",
               description="Checked completely first: a refused submission writes nothing. "
               "The answer's Location header is the new job's href.")  # fmt: skip
    async def createJob(self, request: IRequest, body: JobSubmission) -> JobDocument:
        spec = jobSpec(body, self.maxFrames)
        job = await self.jobs.createJob(spec, self.actor(request))
        request.setHeader(b"location", job.href.encode("ascii"))
        return job

    @operation("GET", "/api/v1/jobs", summary="List jobs, newest first unless sorted",
               role=Role.viewer, query=JobQuery, response=JobPage, errors=(422,), tag="jobs",
               description="total counts every job the filters (q, state, owner, project) "
               "match. The next href pages on with after in the default order (-id) and with "
               "offset in any other; after with another sort is a 422.")  # fmt: skip
    async def listJobs(self, request: IRequest, query: JobQuery) -> JobPage:
        state, owner, project = given(query.state), given(query.owner), given(query.project)
        search, sort, after = given(query.q), given(query.sort), given(query.after)
        keyset = sort in (None, DEFAULT_JOB_SORT)
        if after is not None and not keyset:
            raise Unprocessable(
                "after",
                f"pages only the default order ({DEFAULT_JOB_SORT}); with sort={sort} page "
                "with offset",
            )
        items, more, total = await self.jobs.listJobs(
            state=state, owner=owner, limit=query.limit, after=after, project=project,
            search=search, sort=sort or DEFAULT_JOB_SORT, offset=query.offset,
        )  # fmt: skip
        following = None
        if more:
            params = {"q": search, "state": state, "owner": owner, "project": project,
                      "sort": sort, "limit": query.limit}  # fmt: skip
            if keyset:
                following = nextHref("/api/v1/jobs", params, items[-1].id)
            elif query.offset + len(items) <= MAX_JOB_OFFSET:
                # Past the largest offset, a sorted listing ends: filter to
                # see further.
                params["offset"] = query.offset + len(items)
                following = "/api/v1/jobs?" + urlencode(
                    {k: v for k, v in params.items() if v is not None}
                )
        return JobPage(items=items, next=following, total=total)

    @operation("GET", "/api/v1/jobs/{jobID}", summary="A job", role=Role.viewer, params=JOB,
               response=JobDocument, tag="jobs")  # fmt: skip
    async def getJob(self, request: IRequest, jobID: int) -> JobDocument:
        return await self.jobs.getJob(jobID)

    @operation("PATCH", "/api/v1/jobs/{jobID}", summary="Change a job", role=Role.user,
               owned=True,
               params=JOB, body=JobPatchBody, response=JobDocument, errors=(409, 422), tag="jobs",
               description="Only the fields given change; requirements are merged. "
               '"paused": false on a finished job (done, failed, canceled) is a 409: '
               "nothing of it would run.")  # fmt: skip
    async def patchJob(self, request: IRequest, jobID: int, body: JobPatch) -> JobDocument:
        return await self.jobs.patchJob(jobID, jobChanges(body), self.actor(request))

    @operation("DELETE", "/api/v1/jobs/{jobID}", summary="Delete a finished job",
               role=Role.user, owned=True, params=JOB, status=204, errors=(409,),
               tag="jobs", description="With its layers, tasks, attempts and logs, in "
               "batches (docs/retention.md); what waits on it is released, its history "
               "and its agents' shares kept. A job whose deletion began is deleted to its "
               "end. 409 for a job not finished.")  # fmt: skip
    async def deleteJob(self, request: IRequest, jobID: int) -> None:
        await self.jobs.deleteJob(jobID, self.actor(request))

    @operation("POST", "/api/v1/jobs/{jobID}/cancel", summary="Cancel a job",
               role=Role.user, owned=True, params=JOB, response=JobDocument, errors=(409,),
               tag="jobs")  # fmt: skip
    async def cancelJob(self, request: IRequest, jobID: int) -> JobDocument:
        return await self.jobs.cancelJob(jobID, self.actor(request))

    @operation("POST", "/api/v1/jobs/{jobID}/retry", summary="Retry a job's failed and "
               "canceled tasks", role=Role.user, owned=True, params=JOB, response=JobDocument,
               errors=(409,), tag="jobs")  # fmt: skip
    async def retryJob(self, request: IRequest, jobID: int) -> JobDocument:
        return await self.jobs.retryJob(jobID, self.actor(request))

    @operation("POST", "/api/v1/jobs/{jobID}/blocklist/clear", summary="Clear a job's "
               "blocklist", role=Role.user, owned=True, params=JOB, response=JobDocument,
               tag="jobs")  # fmt: skip
    async def clearBlocklist(self, request: IRequest, jobID: int) -> JobDocument:
        return await self.jobs.clearBlocklist(jobID, self.actor(request))

    @operation("GET", "/api/v1/jobs/{jobID}/tasks", summary="A job's tasks in index order",
               role=Role.viewer, params=JOB, query=TaskQuery, response=TaskPage,
               tag="jobs")  # fmt: skip
    async def listTasks(self, request: IRequest, jobID: int, query: TaskQuery) -> TaskPage:
        state = given(query.state)
        layer = given(query.layer)
        items, more = await self.jobs.listTasks(
            jobID, state=state, limit=query.limit, after=given(query.after), layer=layer
        )
        following = None
        if more:
            following = nextHref(
                f"/api/v1/jobs/{jobID}/tasks",
                {"state": state, "layer": layer, "limit": query.limit},
                items[-1].index,
            )
        return TaskPage(items=items, next=following)

    @operation("GET", "/api/v1/jobs/{jobID}/states", summary="A job's task states, one "
               "character a task (the dashboard's frame grid)", role=Role.viewer, params=JOB,
               response=TaskStates, tag="jobs",
               description="states: one character a task in index order (legend); ids: runs "
               "of [first position (from 0, in index order), its task's id, count].")  # fmt: skip
    async def taskStates(self, request: IRequest, jobID: int) -> TaskStates:
        assert self.pool is not None
        return await taskStates(self.pool, jobID)

    @operation("GET", "/api/v1/tasks/{taskID}", summary="A task", role=Role.viewer,
               params=TASK, response=TaskDocument, tag="jobs")  # fmt: skip
    async def getTask(self, request: IRequest, taskID: int) -> TaskDocument:
        return await self.jobs.getTask(taskID)

    @operation("GET", "/api/v1/tasks/{taskID}/attempts", summary="A task's attempts, oldest "
               "first (one page)", role=Role.viewer, params=TASK, response=AttemptPage,
               tag="jobs")  # fmt: skip
    async def taskAttempts(self, request: IRequest, taskID: int) -> AttemptPage:
        return AttemptPage(items=await self.jobs.taskAttempts(taskID), next=None)

    @operation("POST", "/api/v1/tasks/{taskID}/cancel", summary="Cancel a task",
               role=Role.user, owned=True, params=TASK, response=TaskDocument, errors=(409,),
               tag="jobs")  # fmt: skip
    async def cancelTask(self, request: IRequest, taskID: int) -> TaskDocument:
        return await self.jobs.cancelTask(taskID, self.actor(request))

    @operation("POST", "/api/v1/tasks/{taskID}/retry", summary="Retry a failed or canceled "
               "task, or render a done one again", role=Role.user, owned=True, params=TASK,
               body=TaskRetry, bodyOptional=True, response=TaskDocument, errors=(409,),
               tag="jobs",
               description='With {"done": true} a done task runs again too (a re-render); '
               "what its first done released stays released. The body may be left out.",
               )  # fmt: skip
    async def retryTask(self, request: IRequest, taskID: int, body: TaskRetry) -> TaskDocument:
        return await self.jobs.retryTask(taskID, self.actor(request), done=body.done)

    @operation("GET", "/api/v1/assignments", summary="The tasks assigned or running now",
               role=Role.viewer, query=AssignmentQuery, response=TaskPage,
               tag="jobs")  # fmt: skip
    async def assignments(self, request: IRequest, query: AssignmentQuery) -> TaskPage:
        agent = agentID(query.agent, "agent") if isinstance(query.agent, str) else None
        job = given(query.job)
        items, more = await self.jobs.assignments(
            agent=agent, job=job, limit=query.limit, after=given(query.after)
        )
        following = None
        if more:
            following = nextHref(
                "/api/v1/assignments",
                {"agent": agent, "job": job, "limit": query.limit},
                items[-1].id,
            )
        return TaskPage(items=items, next=following)
