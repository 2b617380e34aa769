"""
Limits and projects over HTTP: what the scheduler shares out
(docs/scheduler.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.web.iweb import IRequest

from masterd.audit import Actor
from masterd.config import Role
from masterd.jobs.models import (
    LIMIT_NAME_LENGTH,
    LIMIT_NAME_PATTERN,
    PROJECT_NAME_LENGTH,
    PROJECT_NAME_PATTERN,
)
from masterd.scheduler.resources import (
    LimitDocument,
    LimitList,
    LimitPut,
    ProjectDocument,
    ProjectList,
    ProjectPut,
    SchedulingStore,
)

from ._operations import PathParam, operation, respond


def _createdOr(request: IRequest, document: LimitDocument | ProjectDocument, created: bool) -> Any:
    """
    A PUT's answer: 201 with a Location when it created the resource.
    """
    if not created:
        return document
    request.setHeader(b"location", document.href.encode("utf-8"))
    return respond(request, document, 201)


LIMIT = (
    PathParam("name", "name", "limit", "A limit's name", LIMIT_NAME_PATTERN, LIMIT_NAME_LENGTH),
)
PROJECT = (
    PathParam(
        "name", "name", "project", "A project's name", PROJECT_NAME_PATTERN, PROJECT_NAME_LENGTH
    ),
)
#: PUT creates what it names: a name that cannot be one is a 400.
NEW_LIMIT = (attrs.evolve(LIMIT[0], refuse=True),)
NEW_PROJECT = (attrs.evolve(PROJECT[0], refuse=True),)


class SchedulingRoutes:
    """
    A mixin of L{MasterAPI}: C{/api/v1/limits} and C{/api/v1/projects}.
    """

    scheduling: SchedulingStore | None
    actor: Callable[[IRequest], Actor]

    def _scheduling(self) -> SchedulingStore:
        assert self.scheduling is not None
        return self.scheduling

    @operation("GET", "/api/v1/limits", summary="Limits (licences), with their use",
               role=Role.viewer, response=LimitList, tag="scheduling")  # fmt: skip
    async def listLimits(self, request: IRequest) -> LimitList:
        return LimitList(items=await self._scheduling().listLimits())

    @operation("GET", "/api/v1/limits/{name}", summary="A limit", role=Role.viewer,
               params=LIMIT, response=LimitDocument, tag="scheduling")  # fmt: skip
    async def getLimit(self, request: IRequest, name: str) -> LimitDocument:
        return await self._scheduling().getLimit(name)

    @operation("PUT", "/api/v1/limits/{name}", summary="Create or change a limit",
               role=Role.operator, params=NEW_LIMIT, body=LimitPut, response=LimitDocument,
               tag="scheduling", createdToo=True,
               description="At most max tasks of the layers naming the limit are assigned or "
               "running at once, over every master. A max lowered below the use lets the "
               "running tasks finish and assigns none until the use is below it. 201 when "
               "created, 200 when changed.")  # fmt: skip
    async def putLimit(self, request: IRequest, name: str, body: LimitPut) -> Any:
        document, created = await self._scheduling().putLimit(name, body, self.actor(request))
        return _createdOr(request, document, created)

    @operation("DELETE", "/api/v1/limits/{name}", summary="Delete a limit no unfinished job "
               "names", role=Role.operator, params=LIMIT, status=204, errors=(409,),
               tag="scheduling")  # fmt: skip
    async def deleteLimit(self, request: IRequest, name: str) -> None:
        await self._scheduling().deleteLimit(name, self.actor(request))

    @operation("GET", "/api/v1/projects", summary="Projects: their weights and what they run",
               role=Role.viewer, response=ProjectList, tag="scheduling",
               description="Every project with a weight, and every project of an unfinished "
               "job (weight 1 unless set).")  # fmt: skip
    async def listProjects(self, request: IRequest) -> ProjectList:
        return ProjectList(items=await self._scheduling().listProjects())

    @operation("GET", "/api/v1/projects/{name}", summary="A project", role=Role.viewer,
               params=PROJECT, response=ProjectDocument, tag="scheduling")  # fmt: skip
    async def getProject(self, request: IRequest, name: str) -> ProjectDocument:
        return await self._scheduling().getProject(name)

    @operation("PUT", "/api/v1/projects/{name}", summary="Set a project's weight",
               role=Role.operator, params=NEW_PROJECT, body=ProjectPut, response=ProjectDocument,
               tag="scheduling", createdToo=True,
               description="Within a priority, projects share the farm in proportion to their "
               "weights (default 1). 201 when created, 200 when changed.")  # fmt: skip
    async def putProject(self, request: IRequest, name: str, body: ProjectPut) -> Any:
        document, created = await self._scheduling().putProject(name, body, self.actor(request))
        return _createdOr(request, document, created)

    @operation("DELETE", "/api/v1/projects/{name}", summary="Forget a project's weight (back "
               "to 1)", role=Role.operator, params=PROJECT, status=204,
               tag="scheduling")  # fmt: skip
    async def deleteProject(self, request: IRequest, name: str) -> None:
        await self._scheduling().deleteProject(name, self.actor(request))
