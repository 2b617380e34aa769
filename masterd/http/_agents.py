"""
Agents over HTTP (the seed's "Agent Information"), task logs, and the
talkback WebSocket.
"""

from __future__ import annotations

import uuid

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.websocket import WebSocketResource

from masterd.auth import Authenticator
from masterd.config import Role
from masterd.errors import Forbidden, InvalidField
from masterd.jobs import JobStore
from masterd.talkback import AgentDirectory, TalkbackFactory
from masterd.talkback.directory import AGENT_STATES, parseAgentPatch

from ._app import ID, app
from ._auth import requires
from ._json import APIError, jsonResponse, readJSON
from ._query import nextHref, queryChoice, queryInt, queryLimit, queryText


def _agentID(text: str, field: str = "id") -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidField(field, f"must be an agent id (a UUID), not {text!r}") from None


class AgentRoutes:
    """
    A mixin of L{MasterAPI}.
    """

    auth: Authenticator
    jobs: JobStore
    agents: AgentDirectory
    talkback: TalkbackFactory | None

    @app.route("/api/v1/talkback", methods=["GET"])
    def talkbackChannel(self, request: IRequest) -> IResource:
        if self.talkback is None:
            raise APIError(404, "not_found", "this master has no talkback channel")
        upgrade = request.getHeader(b"upgrade") or b""
        if upgrade.lower() != b"websocket":
            raise APIError(
                400,
                "websocket_required",
                "this is the agents' WebSocket channel: connect with a WebSocket client",
            )
        if request.getHeader(b"authorization") is not None:
            principal = self.auth.authenticate(request)
            if not principal.may(Role.agent):
                raise Forbidden(f"role {principal.role.value} may not be an agent")
            request.principal = principal  # type: ignore[attr-defined]
        return WebSocketResource(self.talkback)

    @app.route("/api/v1/agents", methods=["GET"])
    @requires(Role.viewer)
    async def listAgents(self, request: IRequest) -> bytes:
        state = queryChoice(request, "state", AGENT_STATES)
        tag = queryText(request, "tag") or None
        limit = queryLimit(request)
        afterText = queryText(request, "after")
        after = _agentID(afterText, "after") if afterText else None
        items, more = await self.agents.listAgents(state=state, tag=tag, limit=limit, after=after)
        following = None
        if more:
            following = nextHref(
                "/api/v1/agents", {"state": state, "tag": tag, "limit": limit}, items[-1]["id"]
            )
        return jsonResponse(request, {"items": items, "next": following})

    @app.route("/api/v1/agents/<agentID>", methods=["GET"])
    @requires(Role.viewer)
    async def getAgent(self, request: IRequest, agentID: str) -> bytes:
        return jsonResponse(request, await self.agents.get(_agentID(agentID)))

    @app.route("/api/v1/agents/<agentID>", methods=["PATCH"])
    @requires(Role.operator)
    async def patchAgent(self, request: IRequest, agentID: str) -> bytes:
        changes = parseAgentPatch(readJSON(request))
        return jsonResponse(request, await self.agents.patch(_agentID(agentID), changes))

    @app.route("/api/v1/agents/<agentID>", methods=["DELETE"])
    @requires(Role.admin)
    async def deleteAgent(self, request: IRequest, agentID: str) -> bytes:
        await self.agents.delete(_agentID(agentID))
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/agents/<agentID>/tasks", methods=["GET"])
    @requires(Role.viewer)
    async def agentTasks(self, request: IRequest, agentID: str) -> bytes:
        agent = await self.agents.get(_agentID(agentID))
        items, _ = await self.jobs.assignments(agent=agent["id"], job=None, limit=5000, after=None)
        # Its current tasks: as many as its slots, always one page.
        return jsonResponse(request, {"items": items, "next": None})

    @app.route("/api/v1/agents/<agentID>/failures", methods=["GET"])
    @requires(Role.viewer)
    async def agentFailures(self, request: IRequest, agentID: str) -> bytes:
        limit, afterText = queryLimit(request), queryText(request, "after")
        after = _attemptCursor(afterText) if afterText else None
        agent = _agentID(agentID)
        items, more = await self.agents.failures(agent, limit, after)
        following = None
        if more:
            last = items[-1]
            following = nextHref(
                f"/api/v1/agents/{agent}/failures", {"limit": limit},
                f"{last['task']['id']}-{last['attempt']}",
            )  # fmt: skip
        return jsonResponse(request, {"items": items, "next": following})

    @app.route("/api/v1/agents/<agentID>/jobs", methods=["GET"])
    @requires(Role.viewer)
    async def agentJobs(self, request: IRequest, agentID: str) -> bytes:
        limit = queryLimit(request)
        after = queryInt(request, "after", None, 1, 2**63 - 1)
        agent = _agentID(agentID)
        items, more = await self.agents.jobs(agent, limit, after)
        following = None
        if more:
            following = nextHref(
                f"/api/v1/agents/{agent}/jobs", {"limit": limit}, items[-1]["job"]["id"]
            )
        return jsonResponse(request, {"items": items, "next": following})

    @app.route("/api/v1/agents/<agentID>/exceptions", methods=["GET"])
    @requires(Role.viewer)
    async def agentExceptions(self, request: IRequest, agentID: str) -> bytes:
        items = await self.agents.exceptions(_agentID(agentID), queryLimit(request))
        # The latest hundred are all that is kept: one page.
        return jsonResponse(request, {"items": items, "next": None})

    @app.route(f"/api/v1/tasks/<{ID}:taskID>/log", methods=["GET"])
    @requires(Role.viewer)
    async def taskLog(self, request: IRequest, taskID: int) -> bytes:
        attempt = queryInt(request, "attempt", None, 0, 2**31 - 1)
        after = queryInt(request, "after", 0, 0, 2**31 - 1)
        assert after is not None
        chosen, lines = await self.agents.taskLog(taskID, attempt, after)
        body = "".join(f"{line}\n" for line in lines).encode("utf-8")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-masterd-attempt", str(chosen).encode("ascii"))
        request.setHeader(b"x-masterd-next-after", str(after + len(lines)).encode("ascii"))
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        return body


def _attemptCursor(text: str) -> tuple[int, int]:
    """
    An attempt as a page cursor: "<task id>-<attempt>".
    """
    task, dash, attempt = text.partition("-")
    if not (dash and task.isdigit() and attempt.isdigit()) or len(text) > 40:
        raise InvalidField("after", "must be <task id>-<attempt>, as in a next href")
    return int(task), int(attempt)
