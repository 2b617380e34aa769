"""
The farm at a glance over HTTP, for the dashboard's overview.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from masterd.config import Role
from masterd.db import Pool
from masterd.jobs.farm import FarmDocument, farmOverview

from ._operations import operation


class FarmRoutes:
    """
    A mixin of L{MasterAPI}: C{/api/v1/farm}.
    """

    pool: Pool | None

    @operation("GET", "/api/v1/farm", summary="The farm at a glance", role=Role.viewer,
               response=FarmDocument,
               description="Jobs and agents by state (every state, zeros included), the "
               "tasks of every job by state, and the task attempts that finished done or "
               "failed in each minute of the last hour (60 entries, oldest first, the last "
               "the current minute); limits and masters are hrefs.")  # fmt: skip
    async def farm(self, request: IRequest) -> FarmDocument:
        assert self.pool is not None
        return await farmOverview(self.pool)
