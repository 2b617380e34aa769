"""
The farm's history over HTTP: C{/api/v1/history}.
"""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.web.iweb import IRequest

from masterd.config import Role
from masterd.db import Pool
from masterd.history import HistoryDocument, HistoryQuery, historyRange, readHistory
from masterd.jobs.models import given

from ._operations import operation


class HistoryRoutes:
    """
    A mixin of L{MasterAPI}: C{/api/v1/history}.
    """

    pool: Pool | None

    @operation("GET", "/api/v1/history", summary="The farm's history, hour by hour",
               role=Role.viewer, query=HistoryQuery, response=HistoryDocument, errors=(422,),
               description="The attempts that finished in each hour (UTC) overlapping "
               "[since, until), by the job's project, its owner, or each pool (tag) of the "
               "agent that ran it (an attempt counts once in each of its agent's tags, so "
               "pool sums exceed the farm's; an untagged agent's go under the pool \"\"); "
               "without by, one key \"\" for the whole farm. Hours with no attempt are left "
               "out. Kept after the jobs are deleted; complete up to rolled_to (the roll-up "
               "runs a minute or two behind). since not before until, or more than 366 days "
               "before it, is a 422 naming since. See docs/history.md.")  # fmt: skip
    async def history(self, request: IRequest, query: HistoryQuery) -> HistoryDocument:
        assert self.pool is not None
        since, until = historyRange(given(query.since), given(query.until), datetime.now(UTC))
        return await readHistory(self.pool, given(query.by), since, until)
