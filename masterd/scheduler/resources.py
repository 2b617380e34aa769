"""
What the scheduler shares out, as the API sets and shows it: limits
(licences, counted farm-wide) and projects (shares of the farm by weight).

A limit's use is not stored: it is the number of tasks assigned or running
in layers that name it, counted from the layers' own counts (which the
database keeps in every task's transaction), so that nothing can drift. The
claim that takes a limit reads it the same way, under the limit's advisory
lock (masterd.scheduler.claims).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, quote_plus

from masterd._time import isotime
from masterd.audit import Actor, record
from masterd.db import Pool, Transaction
from masterd.errors import Conflict, NoSuchResource
from masterd.events import EventBus, WorkAvailable
from masterd.schema import MAX_INT, Document, Meta, Model, Time

LimitMax = Annotated[int, Meta(ge=0, le=MAX_INT)]
Weight = Annotated[int, Meta(ge=1, le=1000)]


class LimitPut(Model):
    max: LimitMax
    description: Annotated[str, Meta(max_length=1000)] = ""


class LimitDocument(Document):
    name: str
    href: str
    max: int
    #: Tasks holding it now (assigned or running); above max after the max
    #: was lowered, until enough of them finish.
    in_use: int
    description: str
    created_at: Time
    updated_at: Time


class LimitList(Document):
    items: list[LimitDocument]


class ProjectPut(Model):
    weight: Weight


class ProjectDocument(Document):
    name: str
    href: str
    weight: int
    #: Tasks of the project assigned or running now, and queued.
    active: int
    queued: int
    jobs: str
    created_at: Time | None
    updated_at: Time | None


class ProjectList(Document):
    items: list[ProjectDocument]


_LIMIT = (
    "SELECT lim.name, lim.max, coalesce((SELECT sum(l.n_assigned + l.n_running)"
    " FROM jobs j JOIN layers l ON l.job_id = j.id WHERE j.state IN ('running', 'paused')"
    " AND l.limits @> ARRAY[lim.name]), 0), lim.description, lim.created_at, lim.updated_at"
    " FROM limits lim"
)

_PROJECT = (
    "WITH p AS (SELECT project AS name, sum(n_assigned + n_running)::int AS active,"
    " sum(n_queued)::int AS queued FROM jobs WHERE state IN ('queued', 'running', 'paused')"
    " GROUP BY project)"
    " SELECT coalesce(w.name, p.name) AS name, coalesce(w.weight, 1), coalesce(p.active, 0),"
    " coalesce(p.queued, 0), w.created_at, w.updated_at"
    " FROM projects w FULL JOIN p ON p.name = w.name"
)


def _limit(row: tuple[Any, ...]) -> LimitDocument:
    name, maximum, used, description, created, updated = row
    return LimitDocument(
        name=name, href=f"/api/v1/limits/{quote(name, safe='')}", max=maximum, in_use=int(used),
        description=description, created_at=isotime(created), updated_at=isotime(updated),
    )  # fmt: skip


def _project(row: tuple[Any, ...]) -> ProjectDocument:
    name, weight, active, queued, created, updated = row
    return ProjectDocument(
        name=name, href=f"/api/v1/projects/{quote(name, safe='')}", weight=weight,
        active=active, queued=queued, jobs=f"/api/v1/jobs?project={quote_plus(name)}",
        created_at=isotime(created) if isinstance(created, datetime) else None,
        updated_at=isotime(updated) if isinstance(updated, datetime) else None,
    )  # fmt: skip


class SchedulingStore:
    def __init__(self, pool: Pool, events: EventBus) -> None:
        self._pool = pool
        self._events = events

    # -- limits ------------------------------------------------------------

    async def listLimits(self) -> list[LimitDocument]:
        return [_limit(r) for r in await self._pool.query(f"{_LIMIT} ORDER BY lim.name")]

    async def getLimit(self, name: str) -> LimitDocument:
        rows = await self._pool.query(f"{_LIMIT} WHERE lim.name = %s", (name,))
        if not rows:
            raise NoSuchResource("limit", name)
        return _limit(rows[0])

    async def putLimit(
        self, name: str, body: LimitPut, actor: Actor | None = None
    ) -> tuple[LimitDocument, bool]:
        """
        Create or change a limit; whether it was created. A lower max lets
        the tasks holding it run on; a higher one may let work start.
        """

        async def work(txn: Transaction) -> tuple[LimitDocument, bool]:
            rows = await txn.query(
                "INSERT INTO limits (name, max, description) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET max = EXCLUDED.max,"
                " description = EXCLUDED.description, updated_at = now()"
                " RETURNING (xmax = 0)",
                (name, body.max, body.description),
            )
            created = bool(rows[0][0])
            await self._events.announce(txn, WorkAvailable(()))
            record(
                txn,
                actor,
                "limit.create" if created else "limit.update",
                f"/api/v1/limits/{name}",
                {"max": body.max, "description": body.description},
            )
            found = await txn.query(f"{_LIMIT} WHERE lim.name = %s", (name,))
            return _limit(found[0]), created  # fmt: skip

        return await self._pool.transaction(work)

    async def deleteLimit(self, name: str, actor: Actor | None = None) -> None:
        async def work(txn: Transaction) -> None:
            # The row's lock first: a submission naming the limit holds it
            # shared until it commits, so the check below sees its layers.
            if not await txn.query("SELECT 1 FROM limits WHERE name = %s FOR UPDATE", (name,)):
                raise NoSuchResource("limit", name)
            users = await txn.query(
                "SELECT DISTINCT j.id FROM jobs j JOIN layers l ON l.job_id = j.id"
                " WHERE j.state NOT IN ('done', 'failed', 'canceled')"
                " AND l.limits @> ARRAY[%s] ORDER BY j.id LIMIT 10",
                (name,),
            )
            if users:
                jobs = [r[0] for r in users]
                raise Conflict(
                    f"limit {name!r} is named by unfinished jobs ({', '.join(map(str, jobs))}"
                    f"{', ...' if len(jobs) == 10 else ''}); finish or delete them first",
                    jobs=[f"/api/v1/jobs/{j}" for j in jobs],
                )
            await txn.execute("DELETE FROM limits WHERE name = %s", (name,))
            record(txn, actor, "limit.delete", f"/api/v1/limits/{name}")

        await self._pool.transaction(work)

    # -- projects ----------------------------------------------------------

    async def listProjects(self) -> list[ProjectDocument]:
        rows = await self._pool.query(f"{_PROJECT} ORDER BY 1")
        return [_project(r) for r in rows]

    async def getProject(self, name: str) -> ProjectDocument:
        rows = await self._pool.query(f"SELECT * FROM ({_PROJECT}) x WHERE x.name = %s", (name,))
        if rows:
            return _project(rows[0])
        known = await self._pool.query("SELECT 1 FROM jobs WHERE project = %s LIMIT 1", (name,))
        if not known:
            raise NoSuchResource("project", name)
        return _project((name, 1, 0, 0, None, None))

    async def putProject(
        self, name: str, body: ProjectPut, actor: Actor | None = None
    ) -> tuple[ProjectDocument, bool]:
        async def work(txn: Transaction) -> bool:
            rows = await txn.query(
                "INSERT INTO projects (name, weight) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET weight = EXCLUDED.weight, updated_at = now()"
                " RETURNING (xmax = 0)",
                (name, body.weight),
            )
            await self._events.announce(txn, WorkAvailable(()))
            created = bool(rows[0][0])
            record(txn, actor, "project.create" if created else "project.update",
                   f"/api/v1/projects/{quote(name, safe='')}", {"weight": body.weight})  # fmt: skip
            return created

        created = await self._pool.transaction(work)
        return await self.getProject(name), created

    async def deleteProject(self, name: str, actor: Actor | None = None) -> None:
        """
        Forget a project's weight (it is 1 again); its jobs are untouched.
        """

        async def work(txn: Transaction) -> None:
            if not await txn.query("DELETE FROM projects WHERE name = %s RETURNING 1", (name,)):
                raise NoSuchResource("project", name)
            record(txn, actor, "project.delete", f"/api/v1/projects/{quote(name, safe='')}")

        await self._pool.transaction(work)
