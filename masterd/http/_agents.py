"""
Agents over HTTP (the seed's "Agent Information"), task logs, and the
talkback WebSocket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.iweb import IRequest

from masterd.accounts import Authenticator
from masterd.audit import Actor
from masterd.config import Role
from masterd.db import DatabaseUnavailable
from masterd.errors import InvalidField
from masterd.jobs import JobStore
from masterd.jobs.models import AttemptPage, TaskPage, given
from masterd.schema import MAX_BIGINT, MAX_INT
from masterd.talkback import AgentDirectory, TalkbackFactory
from masterd.talkback.directory import agentChanges
from masterd.talkback.models import (
    AgentDocument,
    AgentExceptionPage,
    AgentJobPage,
    AgentJobQuery,
    AgentPage,
    AgentPatch,
    AgentQuery,
    FailureQuery,
    LogQuery,
    PageQuery,
)

from ._auth import authorized
from ._json import APIError
from ._operations import PathParam, agentID, operation
from ._query import nextHref
from ._readiness import Readiness
from ._upgrade import TalkbackResource

AGENT = (PathParam("agentID", "agent", "agent", "An agent id (a UUID)"),)
TASK = (PathParam("taskID", "id", "task", "A task id"),)


class AgentRoutes:
    """
    A mixin of L{MasterAPI}.
    """

    auth: Authenticator
    database: Readiness
    jobs: JobStore
    agents: AgentDirectory
    talkback: TalkbackFactory | None
    actor: Callable[[IRequest], Actor]

    @operation("GET", "/api/v1/talkback", summary="The agents' WebSocket channel",
               role=None, status=101, errors=(400, 401, 403, 404), tag="talkback",
               description="Upgrade to a WebSocket (see the AsyncAPI document at "
               "/api/v1/asyncapi.json). A token of role agent goes in the Authorization "
               "header or in the hello message.")  # fmt: skip
    def talkbackChannel(self, request: IRequest) -> Any:
        if self.talkback is None:
            raise APIError(404, "not_found", "this master has no talkback channel")
        if not self.database.ready:
            # Agents back off and try again (docs/talkback.md).
            raise DatabaseUnavailable("the master is not ready yet")
        upgrade = request.getHeader(b"upgrade") or b""
        if upgrade.lower() != b"websocket":
            raise APIError(
                400,
                "websocket_required",
                "this is the agents' WebSocket channel: connect with a WebSocket client",
            )
        resource = TalkbackResource(self.talkback)
        if request.getHeader(b"authorization") is not None:
            return authorized(self.auth, request, Role.agent, lambda: resource)
        return resource

    @operation("GET", "/api/v1/agents", summary="List agents by id", role=Role.viewer,
               query=AgentQuery, response=AgentPage, tag="agents")  # fmt: skip
    async def listAgents(self, request: IRequest, query: AgentQuery) -> AgentPage:
        after = agentID(query.after, "after") if isinstance(query.after, str) else None
        state, tag = given(query.state), given(query.tag)
        items, more = await self.agents.listAgents(
            state=state, tag=tag, limit=query.limit, after=after
        )
        following = None
        if more:
            following = nextHref(
                "/api/v1/agents",
                {"state": state, "tag": tag, "limit": query.limit},
                items[-1].id,
            )
        return AgentPage(items=items, next=following)

    @operation("GET", "/api/v1/agents/{agentID}", summary="An agent", role=Role.viewer,
               params=AGENT, response=AgentDocument, tag="agents")  # fmt: skip
    async def getAgent(self, request: IRequest, agentID: str) -> AgentDocument:
        return await self.agents.get(agentID)

    @operation("PATCH", "/api/v1/agents/{agentID}", summary="Enable, disable, limit or tag "
               "an agent", role=Role.operator, params=AGENT, body=AgentPatch,
               response=AgentDocument, tag="agents")  # fmt: skip
    async def patchAgent(self, request: IRequest, agentID: str, body: AgentPatch) -> AgentDocument:
        return await self.agents.patch(agentID, agentChanges(body), self.actor(request))

    @operation("DELETE", "/api/v1/agents/{agentID}", summary="Forget an offline agent",
               role=Role.admin, params=AGENT, status=204, errors=(409,),
               tag="agents")  # fmt: skip
    async def deleteAgent(self, request: IRequest, agentID: str) -> None:
        await self.agents.delete(agentID, self.actor(request))

    @operation("POST", "/api/v1/agents/{agentID}/credential/reset", summary="Forget an "
               "agent's credential, so that its id may enroll again", role=Role.admin,
               params=AGENT, response=AgentDocument, tag="agents",
               description="The next hello for this agent id with a token of role agent "
               "enrolls it anew and gets a new credential (a reinstalled host that lost its "
               "state directory). Until then, no hello without such a token is accepted for "
               "the id. A connection open now is not closed. Audited as "
               "agent.credential_reset.")  # fmt: skip
    async def resetAgentCredential(self, request: IRequest, agentID: str) -> AgentDocument:
        return await self.agents.resetCredential(agentID, self.actor(request))

    @operation("GET", "/api/v1/agents/{agentID}/tasks", summary="An agent's current tasks "
               "(one page)", role=Role.viewer, params=AGENT, response=TaskPage,
               tag="agents")  # fmt: skip
    async def agentTasks(self, request: IRequest, agentID: str) -> TaskPage:
        agent = await self.agents.get(agentID)
        items, _ = await self.jobs.assignments(agent=agent.id, job=None, limit=5000, after=None)
        return TaskPage(items=items, next=None)

    @operation("GET", "/api/v1/agents/{agentID}/failures", summary="An agent's failed "
               "attempts, newest first", role=Role.viewer, params=AGENT, query=FailureQuery,
               response=AttemptPage, tag="agents")  # fmt: skip
    async def agentFailures(
        self, request: IRequest, agentID: str, query: FailureQuery
    ) -> AttemptPage:
        after = _attemptCursor(query.after) if isinstance(query.after, str) else None
        items, more = await self.agents.failures(agentID, query.limit, after)
        following = None
        if more:
            last = items[-1]
            following = nextHref(
                f"/api/v1/agents/{agentID}/failures", {"limit": query.limit},
                f"{last.task.id}-{last.attempt}",
            )  # fmt: skip
        return AttemptPage(items=items, next=following)

    @operation("GET", "/api/v1/agents/{agentID}/jobs", summary="The jobs an agent worked on, "
               "latest first", role=Role.viewer, params=AGENT, query=AgentJobQuery,
               response=AgentJobPage, tag="agents")  # fmt: skip
    async def agentJobs(
        self, request: IRequest, agentID: str, query: AgentJobQuery
    ) -> AgentJobPage:
        items, more = await self.agents.jobs(agentID, query.limit, given(query.after))
        following = None
        if more:
            following = nextHref(
                f"/api/v1/agents/{agentID}/jobs", {"limit": query.limit}, items[-1].job.id
            )
        return AgentJobPage(items=items, next=following)

    @operation("GET", "/api/v1/agents/{agentID}/exceptions", summary="An agent's latest "
               "exceptions (the last hundred are kept)", role=Role.viewer, params=AGENT,
               query=PageQuery, response=AgentExceptionPage, tag="agents")  # fmt: skip
    async def agentExceptions(
        self, request: IRequest, agentID: str, query: PageQuery
    ) -> AgentExceptionPage:
        items = await self.agents.exceptions(agentID, query.limit)
        return AgentExceptionPage(items=items, next=None)

    @operation("GET", "/api/v1/tasks/{taskID}/log", summary="A task attempt's log",
               role=Role.viewer, params=TASK, query=LogQuery, response=str,
               contentType="text/plain", tag="jobs",
               description="Lines after line number `after` (from 1) of the attempt "
               "(default: the task's current one), one per line. The headers "
               "X-Masterd-Attempt and X-Masterd-Next-After say which attempt and where "
               "the next read starts.")  # fmt: skip
    async def taskLog(self, request: IRequest, taskID: int, query: LogQuery) -> bytes:
        chosen, lines = await self.agents.taskLog(taskID, given(query.attempt), query.after)
        body = "".join(f"{line}\n" for line in lines).encode("utf-8")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-masterd-attempt", str(chosen).encode("ascii"))
        request.setHeader(b"x-masterd-next-after", str(query.after + len(lines)).encode("ascii"))
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        return body


def _attemptCursor(text: str) -> tuple[int, int]:
    """
    An attempt as a page cursor: "<task id>-<attempt>" (the pattern is
    checked by the query's type; the numbers here).
    """
    task, _, attempt = text.partition("-")
    if int(task) > MAX_BIGINT or int(attempt) > MAX_INT:
        raise InvalidField("after", "must be <task id>-<attempt>, as in a next href")
    return int(task), int(attempt)
