"""
Jobs and tasks in PostgreSQL: every operation is one transaction.

Locks are always taken tasks first, jobs second (the count trigger locks the
jobs of the tasks a statement changed, in id order), so that operations on
the same job never deadlock; a retry locks its job's row first, as every
release of a job's tasks does (migration 0012). Tasks and jobs are locked
in id order, all those of a statement at once, and C{FOR NO KEY UPDATE}: the
lock an C{UPDATE} takes, which leaves free the key-share locks that
inserting a log chunk or an attempt takes on its task and its job (only a
deletion takes C{FOR UPDATE}). An agents' report batch locks its tasks, then
their jobs, the same way before it changes any
(masterd.talkback._store_reports).
A state change names the states it may come from in its WHERE clause: an
illegal transition changes nothing and is reported as a L{Conflict}.

L{JobStore} reads with L{JobReading} (masterd.jobs._store_reading, the
documents and listings) and creates and changes jobs and tasks here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg2.extras import Json

from masterd.audit import Actor, record
from masterd.db import Pool, Transaction
from masterd.errors import Conflict, NoSuchResource, Unprocessable
from masterd.events import EventBus, TaskCanceled, WorkAvailable

from ._store_reading import SORT_COLUMNS as SORT_COLUMNS
from ._store_reading import JobReading
from ._store_reading import likeEscaped as likeEscaped
from .models import JobDocument, TaskDocument
from .retire import beginRetirement, finishRetirement, retireTasks
from .spec import JobSpec
from .states import ACTIVE, UNFINISHED, TaskState
from .submit import insertJob

_UNFINISHED = [s.value for s in UNFINISHED]
_FINISHED_JOB = ("done", "failed", "canceled")
#: Tasks a deletion by hand deletes a transaction (masterd.jobs.retire):
#: tens of milliseconds each, so that a job of any size never holds its
#: locks long.
DELETE_BATCH = 1000


def _auditable(changes: dict[str, Any]) -> dict[str, Any]:
    """
    A patch's changes as JSON (tags are a tuple inside).
    """
    out = dict(changes)
    if "requirements" in out:
        out["requirements"] = {
            k: list(v) if isinstance(v, tuple | list) else v for k, v in out["requirements"].items()
        }
    return out


def _requirementValue(key: str, value: Any) -> Any:
    """
    A requirement of a PATCH as its column takes it.
    """
    if key in ("tags", "os_family", "cpu_arch"):
        return list(value)
    if key in ("attributes", "amounts"):
        return Json(value)
    return value


async def _checkMaximums(txn: Transaction, jobID: int, required: dict[str, Any]) -> None:
    """
    A maximum (cpus, ram_mb, gpus) patched, or its minimum: refuse (rolling
    the change back) one below its minimum on any layer.
    """
    for name in ("cpus", "ram_mb", "gpus"):
        if name not in required and f"max_{name}" not in required:
            continue
        low = await txn.query(
            f"SELECT name, req_{name} FROM layers WHERE job_id = %s"
            f" AND req_max_{name} < req_{name} ORDER BY index LIMIT 1",
            (jobID,),
        )
        if low:
            raise Unprocessable(
                f"requirements.max_{name}",
                f"must be at least the minimum ({low[0][1]}, layer {low[0][0]!r})",
            )


async def _closeAttempts(
    txn: Transaction, active: Sequence[tuple[int, int]], state: str, error: str
) -> None:
    if not active:
        return
    await txn.execute(
        "UPDATE task_attempts a SET state = %s, finished_at = now(), error = %s"
        " FROM unnest(%s::bigint[], %s::int[]) AS x (task_id, attempt)"
        " WHERE a.task_id = x.task_id AND a.attempt = x.attempt AND a.finished_at IS NULL",
        (state, error, [t for t, _ in active], [a for _, a in active]),
    )


class JobStore(JobReading):
    """
    Jobs and tasks: read (L{JobReading}), created and changed.
    """

    def __init__(self, pool: Pool, events: EventBus) -> None:
        self._pool = pool
        self._events = events

    # -- creating -------------------------------------------------------------

    async def createJob(self, spec: JobSpec, owner: str | Actor) -> JobDocument:
        """
        Insert the job, its dependencies and all its tasks in one
        transaction (tasks in one statement, whatever their number). The
        owner is the actor's user name.
        """
        actor = owner if isinstance(owner, Actor) else None
        ownerName = owner.name if isinstance(owner, Actor) else owner

        async def work(txn: Transaction) -> JobDocument:
            jobID, queued = await insertJob(txn, spec, ownerName)
            if queued and not spec.paused:
                await self._events.announce(txn, WorkAvailable((jobID,)))
            record(txn, actor, "job.submit", f"/api/v1/jobs/{jobID}", {
                "title": spec.title, "priority": spec.priority, "weight": spec.weight,
                "paused": spec.paused, "tasks": spec.allTasks(),
                "layers": [layer.name for layer in spec.layers],
                "project": spec.project or ownerName,
                "depends_on": list(spec.depends_on),
            })  # fmt: skip
            return await self._getJob(txn, jobID)

        return await self._pool.transaction(work)

    # -- changing ---------------------------------------------------------------

    async def _jobState(self, txn: Transaction, jobID: int, actor: Actor | None = None) -> str:
        """
        The job's state, once the actor is known to be allowed to change it.
        """
        rows = await txn.query("SELECT state, owner, deleting FROM jobs WHERE id = %s", (jobID,))
        if not rows:
            raise NoSuchResource("job", jobID)
        if rows[0][2]:
            raise Conflict(f"job {jobID} is being deleted", state="deleting")
        state: str = rows[0][0]
        if actor is not None:
            actor.checkOwner("job", jobID, rows[0][1])
        return state

    async def _stopTasks(
        self, txn: Transaction, where: str, params: Sequence[Any], target: str, reason: str
    ) -> tuple[int, list[TaskCanceled]]:
        """
        Move the unfinished tasks C{where} selects to C{target} (canceled, or
        queued for a stopping pause), close the attempts of those that were
        running; return how many moved, and the events for their agents.
        """
        sources = _UNFINISHED if target == "canceled" else [s.value for s in ACTIVE]
        rows = await txn.query(
            "WITH old AS (SELECT id, state, attempt, agent_id FROM tasks"
            f" WHERE {where} AND state = ANY (%s) ORDER BY id FOR NO KEY UPDATE)"
            " UPDATE tasks t SET state = %s,"
            " agent_id = CASE WHEN %s = 'queued' THEN NULL ELSE t.agent_id END,"
            " finished_at = CASE WHEN %s = 'canceled' THEN now() ELSE NULL END,"
            " progress = CASE WHEN %s = 'queued' THEN 0 ELSE t.progress END"
            " FROM old WHERE t.id = old.id"
            " RETURNING old.id, old.state, old.attempt, old.agent_id",
            (*params, sources, target, target, target, target),
        )
        active = [(r[0], r[2], str(r[3])) for r in rows if r[1] in ACTIVE and r[3] is not None]
        await _closeAttempts(txn, [(t, a) for t, a, _ in active], "canceled", reason)
        events = [TaskCanceled(t, a, agent, reason) for t, a, agent in active]
        await self._events.announce(txn, *events)
        return len(rows), events

    async def cancelJob(self, jobID: int, actor: Actor | None = None) -> JobDocument:
        async def work(txn: Transaction) -> tuple[JobDocument, list[TaskCanceled]]:
            state = await self._jobState(txn, jobID, actor)
            if state in ("done", "failed"):
                raise Conflict(
                    f"job {jobID} is {state}; only unfinished jobs can be canceled", state=state
                )
            _, events = await self._stopTasks(
                txn, "job_id = %s", (jobID,), "canceled", "job canceled"
            )
            await txn.execute(
                "UPDATE jobs SET canceled = true, updated_at = now() WHERE id = %s", (jobID,)
            )
            record(txn, actor, "job.cancel", f"/api/v1/jobs/{jobID}")
            return await self._getJob(txn, jobID), events

        document, _ = await self._pool.transaction(work)
        return document

    async def patchJob(
        self, jobID: int, changes: dict[str, Any], actor: Actor | None = None
    ) -> JobDocument:
        async def work(txn: Transaction) -> tuple[JobDocument, list[TaskCanceled], bool]:
            if not changes:
                # An empty PATCH changes nothing and says so.
                if actor is not None:
                    await self._jobState(txn, jobID, actor)
                return await self._getJob(txn, jobID), [], False
            before = await self._jobState(txn, jobID, actor)
            if changes.get("paused") is False and before in _FINISHED_JOB:
                # Nothing of a finished job would run: resuming it is a
                # mistake (a retry is what brings its tasks back).
                raise Conflict(
                    f"job {jobID} is {before}; only unfinished jobs can be resumed", state=before
                )
            events: list[TaskCanceled] = []
            if changes.get("stop_running"):
                _, events = await self._stopTasks(
                    txn, "job_id = %s", (jobID,), "queued", "job paused"
                )
            sets: list[str] = []
            params: list[Any] = []
            for key in ("title", "priority", "weight", "paused", "max_retries", "project",
                        "max_running", "preemptible"):  # fmt: skip
                if key in changes:
                    sets.append(f"{key} = %s")
                    params.append(changes[key])
            required: dict[str, Any] = changes.get("requirements", {})
            layerSets: list[str] = []
            for key, value in required.items():
                sets.append(f"req_{key} = %s")
                layerSets.append(f"req_{key} = %s")
                params.append(_requirementValue(key, value))
            sets.append("updated_at = now()")
            await txn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = %s", (*params, jobID))
            if layerSets:
                # Requirements given for the job apply to each of its layers.
                await txn.execute(
                    f"UPDATE layers SET {', '.join(layerSets)} WHERE job_id = %s",
                    (*[_requirementValue(k, v) for k, v in required.items()], jobID),
                )
                await _checkMaximums(txn, jobID, required)
                if "gpus" in required or "gpu_memory_mb" in required:
                    # As at submission: GPU memory means nothing without GPUs
                    # (raising here rolls the whole change back).
                    bare = await txn.query(
                        "SELECT name FROM layers WHERE job_id = %s AND req_gpu_memory_mb > 0"
                        " AND req_gpus = 0 ORDER BY index LIMIT 1",
                        (jobID,),
                    )
                    if bare:
                        raise Unprocessable(
                            "requirements.gpu_memory_mb",
                            f"needs gpus of at least 1 (layer {bare[0][0]!r} would have none)",
                        )
            document = await self._getJob(txn, jobID)
            resumed = before == "paused" and document.state == "queued"
            # New requirements may fit agents that sat idle.
            widened = (
                bool(required)
                or changes.get("stop_running")
                or "max_running" in changes
                or "project" in changes
            )
            wake = resumed or bool(widened and document.tasks.queued)
            if wake:
                await self._events.announce(txn, WorkAvailable((jobID,)))
            paused = changes.get("paused")
            action = "job.patch" if paused is None else ("job.pause" if paused else "job.resume")
            record(txn, actor, action, f"/api/v1/jobs/{jobID}", _auditable(changes))
            return document, events, wake

        document, _, _ = await self._pool.transaction(work)
        return document

    async def _retry(
        self,
        txn: Transaction,
        where: str,
        params: Sequence[Any],
        jobID: int,
        states: Sequence[str] = ("failed", "canceled"),
    ) -> int:
        """
        Bring tasks back: queued, or waiting while a dependency holds them
        back. The job's row is locked first, as every release of its tasks
        is made under it (migration 0012): a dependency satisfied meanwhile
        is seen.
        """
        await txn.execute("SELECT 1 FROM jobs WHERE id = %s FOR NO KEY UPDATE", (jobID,))
        rows = await txn.query(
            "WITH old AS (SELECT id FROM tasks"
            f" WHERE {where} AND state = ANY (%s) ORDER BY id FOR NO KEY UPDATE)"
            " UPDATE tasks t SET state = CASE WHEN t.wait_count > 0 OR l.blockers > 0"
            " THEN 'waiting' ELSE 'queued' END, failures = 0, agent_id = NULL,"
            " progress = 0, started_at = NULL, finished_at = NULL, exit_code = NULL,"
            " error = NULL, dep_canceled = false, preempted_at = NULL"
            " FROM old, layers l WHERE t.id = old.id AND l.id = t.layer_id RETURNING t.id",
            (*params, list(states)),
        )
        if rows:
            await txn.execute(
                "UPDATE jobs SET canceled = false, updated_at = now() WHERE id = %s", (jobID,)
            )
        return len(rows)

    async def retryJob(self, jobID: int, actor: Actor | None = None) -> JobDocument:
        async def work(txn: Transaction) -> JobDocument:
            state = await self._jobState(txn, jobID, actor)
            retried = await self._retry(txn, "job_id = %s", (jobID,), jobID)
            if not retried:
                raise Conflict(f"job {jobID} has no failed or canceled tasks to retry", state=state)
            await self._events.announce(txn, WorkAvailable((jobID,)))
            record(txn, actor, "job.retry", f"/api/v1/jobs/{jobID}", {"tasks": retried})
            return await self._getJob(txn, jobID)

        return await self._pool.transaction(work)

    async def clearBlocklist(self, jobID: int, actor: Actor | None = None) -> JobDocument:
        async def work(txn: Transaction) -> JobDocument:
            await self._jobState(txn, jobID, actor)
            await txn.execute("DELETE FROM job_blocklist WHERE job_id = %s", (jobID,))
            await self._events.announce(txn, WorkAvailable((jobID,)))
            record(txn, actor, "job.blocklist_clear", f"/api/v1/jobs/{jobID}")
            return await self._getJob(txn, jobID)

        return await self._pool.transaction(work)

    async def deleteJob(self, jobID: int, actor: Actor | None = None) -> None:
        """
        Delete a finished job as retention does (masterd.jobs.retire): one
        transaction checks and retires it, then its tasks go in batches of
        L{DELETE_BATCH}, each its own transaction, then the job. A job
        whose deletion began already (a request cut short, retention) is
        deleted to its end, the batches shared with any other deletion of
        it; one left unfinished by a master that stopped is finished by
        retention.
        """

        async def begin(txn: Transaction) -> None:
            rows = await txn.query(
                "SELECT state, owner, deleting FROM jobs WHERE id = %s FOR UPDATE", (jobID,)
            )
            if not rows:
                raise NoSuchResource("job", jobID)
            state, owner, deleting = rows[0]
            if actor is not None:
                actor.checkOwner("job", jobID, owner)
            if state not in _FINISHED_JOB:
                raise Conflict(
                    f"job {jobID} is {state}; cancel it first, only finished jobs can be deleted",
                    state=state,
                )
            if not deleting:
                await beginRetirement(txn, self._events, jobID)
                record(txn, actor, "job.delete", f"/api/v1/jobs/{jobID}")

        await self._pool.transaction(begin)

        async def batch(txn: Transaction) -> int:
            return await retireTasks(txn, self._events, jobID, DELETE_BATCH)

        while await self._pool.transaction(batch):
            pass

        async def finish(txn: Transaction) -> bool:
            return await finishRetirement(txn, jobID)

        await self._pool.transaction(finish)

    async def _taskJob(
        self, txn: Transaction, taskID: int, actor: Actor | None = None
    ) -> tuple[int, str]:
        rows = await txn.query(
            "SELECT t.job_id, t.state, j.owner, j.deleting FROM tasks t"
            " JOIN jobs j ON j.id = t.job_id WHERE t.id = %s",
            (taskID,),
        )
        if not rows:
            raise NoSuchResource("task", taskID)
        if rows[0][3]:
            raise Conflict(f"task {taskID}'s job {rows[0][0]} is being deleted", state="deleting")
        if actor is not None:
            actor.checkOwner(f"task {taskID} of job", rows[0][0], rows[0][2])
        return rows[0][0], rows[0][1]

    async def cancelTask(self, taskID: int, actor: Actor | None = None) -> TaskDocument:
        async def work(txn: Transaction) -> list[TaskCanceled]:
            _, state = await self._taskJob(txn, taskID, actor)
            moved, events = await self._stopTasks(
                txn, "id = %s", (taskID,), "canceled", "task canceled"
            )
            if not moved:
                raise Conflict(
                    f"task {taskID} is {state}; only unfinished tasks can be canceled",
                    state=state,
                )
            record(txn, actor, "task.cancel", f"/api/v1/tasks/{taskID}")
            return events

        await self._pool.transaction(work)
        return await self.getTask(taskID)

    async def retryTask(
        self, taskID: int, actor: Actor | None = None, done: bool = False
    ) -> TaskDocument:
        """
        Run a failed or canceled task again; with C{done}, a done one too
        (a re-render: what it released stays released).
        """
        states = ("failed", "canceled", "done") if done else ("failed", "canceled")

        async def work(txn: Transaction) -> int:
            jobID, state = await self._taskJob(txn, taskID, actor)
            if not await self._retry(txn, "id = %s", (taskID,), jobID, states):
                which = "failed, canceled or done" if done else "failed or canceled"
                hint = (
                    "" if done or state != "done" else ' (give {"done": true} to render it again)'
                )
                raise Conflict(
                    f"task {taskID} is {state}; only {which} tasks can be retried{hint}",
                    state=state,
                )
            await self._events.announce(txn, WorkAvailable((jobID,)))
            record(txn, actor, "task.retry", f"/api/v1/tasks/{taskID}", {"done": done})
            return jobID

        await self._pool.transaction(work)
        return await self.getTask(taskID)


__all__ = ["JobStore", "TaskState"]
