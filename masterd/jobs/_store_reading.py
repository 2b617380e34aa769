"""
Reading jobs and tasks: L{JobReading}, the part of
L{masterd.jobs.store.JobStore} that changes nothing. Jobs' documents are
read with their dependencies, blocklists and layers (the layers'
dependencies, and what no known agent meets) in a few statements for any
number of jobs; the listings page by keyset (and, for jobs in another
order, by offset).

JobStore inherits these reads; masterd.jobs.store re-exports this module's
public names.
"""

from __future__ import annotations

from typing import Any

import msgspec

from masterd.db import Pool, Transaction
from masterd.errors import NoSuchResource
from masterd.schema import MAX_BIGINT

from . import capabilities
from .models import (
    AttemptDocument,
    BlocklistEntry,
    DependencyDocument,
    DependencyMode,
    JobDocument,
    LayerDocument,
    TaskDocument,
)
from .usage import jobUsage
from .views import (
    ATTEMPT_COLUMNS,
    BLOCKLIST_COLUMNS,
    JOB_COLUMNS,
    LAYER_COLUMNS,
    TASK_COLUMNS,
    agentRef,
    attemptDocument,
    jobDocument,
    jobRef,
    layerDocument,
    layerExtra,
    taskDocument,
)


def _page(items: list[Any], limit: int) -> tuple[list[Any], bool]:
    return items[:limit], len(items) > limit


#: What each C{sort} of L{JobStore.listJobs} orders by.
SORT_COLUMNS = {
    "id": "id",
    "priority": "priority",
    "title": "title",
    "state": "state",
    "owner": "owner",
    "updated": "updated_at",
}


def likeEscaped(text: str) -> str:
    """
    C{text} as a LIKE pattern that matches it literally (with C{ESCAPE
    '\\'}): its C{%}, C{_} and C{\\} escaped.
    """
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _jobFilters(
    state: str | None, owner: str | None, project: str | None, search: str | None
) -> tuple[list[str], list[Any]]:
    """
    The WHERE conditions of a job listing, and their parameters.
    """
    where = ["TRUE"]
    params: list[Any] = []
    if state is not None:
        where.append("state = %s")
        params.append(state)
    if owner is not None:
        where.append("owner = %s")
        params.append(owner)
    if project is not None:
        where.append("project = %s")
        params.append(project)
    if search:
        pattern = f"%{likeEscaped(search)}%"
        if search.isascii() and search.isdigit() and int(search) <= MAX_BIGINT:
            where.append("(title ILIKE %s ESCAPE '\\' OR id = %s)")
            params += [pattern, int(search)]
        else:
            where.append("title ILIKE %s ESCAPE '\\'")
            params.append(pattern)
    return where, params


async def _unmet(txn: Transaction, layerRows: list[tuple[Any, ...]]) -> dict[int, str]:
    """
    For the layers with tasks still to run (waiting or queued) and any
    requirement, what no known agent meets; one aggregate over the agents,
    and only when some layer has requirements.
    """
    wanted = [
        (row, layerExtra(row)) for row in layerRows
        if row[19] + row[20] > 0  # n_waiting, n_queued
    ]  # fmt: skip
    wanted = [(row, extra) for row, extra in wanted
              if any(row[9:13]) or row[13] or extra.given()]  # fmt: skip
    if not wanted:
        return {}
    profiles = await capabilities.knownProfiles(txn)
    found: dict[int, str] = {}
    for row, extra in wanted:
        why = capabilities.unmet(row[9], row[10], row[11], row[12], row[13], extra, profiles)
        if why is not None:
            found[row[1]] = why
    return found


class JobReading:
    """
    Jobs and tasks as the API shows them: a mixin of L{JobStore}, whose
    changes answer with the same documents (read by L{_getJob} in the
    changing transaction).
    """

    _pool: Pool

    async def _documents(self, txn: Transaction, rows: list[tuple[Any, ...]]) -> list[JobDocument]:
        ids = [row[0] for row in rows]
        parents: dict[int, list[int]] = {i: [] for i in ids}
        children: dict[int, list[int]] = {i: [] for i in ids}
        if ids:
            for parent, child in await txn.query(
                "SELECT parent, child FROM job_dependencies"
                " WHERE parent = ANY (%s) OR child = ANY (%s) ORDER BY parent, child",
                (ids, ids),
            ):
                if child in parents:
                    parents[child].append(parent)
                if parent in children:
                    children[parent].append(child)
        blocklists: dict[int, list[BlocklistEntry]] = {i: [] for i in ids}
        if ids:
            for jobID, agentID, failures, hostname in await txn.query(
                f"SELECT {BLOCKLIST_COLUMNS} FROM job_blocklist"
                " WHERE job_id = ANY (%s) AND blocked ORDER BY job_id, agent_id",
                (ids,),
            ):
                agent = agentRef(agentID, hostname)
                assert agent is not None
                blocklists[jobID].append(BlocklistEntry(agent=agent, failures=failures))
        layers = await self._layers(txn, rows)
        return [
            jobDocument(row, parents[row[0]], children[row[0]], blocklists[row[0]], layers[row[0]])
            for row in rows
        ]

    async def _layers(
        self, txn: Transaction, rows: list[tuple[Any, ...]]
    ) -> dict[int, list[LayerDocument]]:
        """
        The layers of the jobs of C{rows} (job columns), with their
        dependencies: two statements for any number of jobs.
        """
        # A layer's state is derived from its counts and its job's pause.
        flags = {row[0]: (False, bool(row[6])) for row in rows}
        found: dict[int, list[LayerDocument]] = {jobID: [] for jobID in flags}
        if not flags:
            return found
        layerRows = await txn.query(
            f"SELECT {LAYER_COLUMNS} FROM layers l WHERE l.job_id = ANY (%s)"
            " ORDER BY l.job_id, l.index",
            (list(flags),),
        )
        names = {r[1]: r[2] for r in layerRows}
        dependencies: dict[int, list[DependencyDocument]] = {r[1]: [] for r in layerRows}
        if layerRows:
            for child, parentLayer, parentJob, mode, onFailure, satisfied in await txn.query(
                "SELECT child, parent_layer, parent_job, mode, on_failure, satisfied"
                " FROM layer_dependencies WHERE child = ANY (%s) ORDER BY child, parent_layer,"
                " parent_job, mode",
                (list(names),),
            ):
                kind: DependencyMode = "layer" if parentLayer is not None else "job"
                dependencies[child].append(DependencyDocument(
                    mode="frame" if mode == "frame" else kind, on_failure=onFailure,
                    layer=names.get(parentLayer) if parentLayer is not None else None,
                    job=jobRef(parentJob) if parentJob is not None else None,
                    satisfied=satisfied,
                ))  # fmt: skip
        unmet = await _unmet(txn, layerRows)
        for row in layerRows:
            canceled, paused = flags[row[0]]
            found[row[0]].append(
                layerDocument(row, canceled, paused, dependencies[row[1]], unmet.get(row[1]))
            )
        return found

    async def _getJob(self, txn: Transaction, jobID: int) -> JobDocument:
        rows = await txn.query(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (jobID,))
        if not rows:
            raise NoSuchResource("job", jobID)
        document = (await self._documents(txn, rows))[0]
        # A job's own document says what its attempts used (lists do not:
        # it is read from every attempt of the job).
        total, layers = await jobUsage(txn, jobID)
        if total is None:
            return document
        return msgspec.structs.replace(
            document,
            usage=total,
            layers=[
                msgspec.structs.replace(layer, usage=layers.get(layer.index))
                for layer in document.layers
            ],
        )

    async def getJob(self, jobID: int) -> JobDocument:
        return await self._pool.transaction(lambda txn: self._getJob(txn, jobID))

    async def listJobs(
        self,
        *,
        state: str | None,
        owner: str | None,
        limit: int,
        after: int | None,
        project: str | None = None,
        search: str | None = None,
        sort: str = "-id",
        offset: int = 0,
    ) -> tuple[list[JobDocument], bool, int]:
        """
        One page in the order C{sort} names (L{SORT_COLUMNS}; ties by id,
        newest first): after the id C{after} (keyset pagination, for the
        default order), then C{offset} skipped. Also says whether there is
        a next page, and how many jobs match the filters in all.
        """
        where, params = _jobFilters(state, owner, project, search)
        counted = list(params)
        descending = sort.startswith("-")
        column = SORT_COLUMNS[sort.lstrip("-")]
        order = f"{column} {'DESC' if descending else 'ASC'}"
        if column != "id":
            order += ", id DESC"
        paged = list(where)
        if after is not None:
            paged.append("id < %s")
            params.append(after)
        params += [limit + 1, offset]
        sql = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(paged)}"
            f" ORDER BY {order} LIMIT %s OFFSET %s"
        )
        countSQL = f"SELECT count(*) FROM jobs WHERE {' AND '.join(where)}"

        async def work(txn: Transaction) -> tuple[list[JobDocument], bool, int]:
            rows, more = _page(await txn.query(sql, params), limit)
            [(total,)] = await txn.query(countSQL, counted)
            return await self._documents(txn, rows), more, int(total)

        return await self._pool.transaction(work)

    async def listTasks(
        self,
        jobID: int,
        *,
        state: str | None,
        limit: int,
        after: int | None,
        layer: str | None = None,
    ) -> tuple[list[TaskDocument], bool]:
        """
        A job's tasks in index order; C{after} is an index.
        """

        async def work(txn: Transaction) -> tuple[list[TaskDocument], bool]:
            if not await txn.query("SELECT 1 FROM jobs WHERE id = %s", (jobID,)):
                raise NoSuchResource("job", jobID)
            where = ["t.job_id = %s"]
            params: list[Any] = [jobID]
            if state is not None:
                where.append("t.state = %s")
                params.append(state)
            if layer is not None:
                found = await txn.query(
                    "SELECT id FROM layers WHERE job_id = %s AND name = %s", (jobID, layer)
                )
                if not found:
                    raise NoSuchResource("layer", layer, field="layer")
                where.append("t.layer_id = %s")
                params.append(found[0][0])
            if after is not None:
                where.append("t.index > %s")
                params.append(after)
            params.append(limit + 1)
            rows, more = _page(
                await txn.query(
                    f"SELECT {TASK_COLUMNS} FROM tasks t WHERE {' AND '.join(where)}"
                    " ORDER BY t.index LIMIT %s",
                    params,
                ),
                limit,
            )
            return [taskDocument(r) for r in rows], more

        return await self._pool.transaction(work)

    async def getTask(self, taskID: int) -> TaskDocument:
        rows = await self._pool.query(
            f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = %s", (taskID,)
        )
        if not rows:
            raise NoSuchResource("task", taskID)
        return taskDocument(rows[0])

    async def taskAttempts(self, taskID: int) -> list[AttemptDocument]:
        async def work(txn: Transaction) -> list[AttemptDocument]:
            if not await txn.query("SELECT 1 FROM tasks WHERE id = %s", (taskID,)):
                raise NoSuchResource("task", taskID)
            rows = await txn.query(
                f"SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE task_id = %s ORDER BY attempt",
                (taskID,),
            )
            return [attemptDocument(r) for r in rows]

        return await self._pool.transaction(work)

    async def assignments(
        self, *, agent: str | None, job: int | None, limit: int, after: int | None
    ) -> tuple[list[TaskDocument], bool]:
        """
        The tasks assigned or running right now, by task id.
        """
        where = ["t.state IN ('assigned', 'running')"]
        params: list[Any] = []
        if agent is not None:
            where.append("t.agent_id = %s")
            params.append(agent)
        if job is not None:
            where.append("t.job_id = %s")
            params.append(job)
        if after is not None:
            where.append("t.id > %s")
            params.append(after)
        params.append(limit + 1)
        rows, more = _page(
            await self._pool.query(
                f"SELECT {TASK_COLUMNS} FROM tasks t WHERE {' AND '.join(where)}"
                " ORDER BY t.id LIMIT %s",
                params,
            ),
            limit,
        )
        return [taskDocument(r) for r in rows], more
