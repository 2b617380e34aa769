"""
A task's life on an agent: assigned, running, then done, failed, rejected or
lost. Each step is a statement inside the caller's transaction, so that the
scheduler and talkback can group many of them into one.

Every report is fenced: it applies only while the task's current attempt is
the one named and runs on the agent reporting it. A late report from an agent
that lost the task (it was requeued and handed to another agent, or
canceled) changes nothing; the caller answers it with a cancel.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from attrs import frozen

from masterd.db import Transaction

from .command import expandCommand
from .models import (
    AssignedTask,
    OpenJDAssignment,
    OpenJDJobPayload,
    OpenJDStepPayload,
    OpenJDValue,
)


class Outcome(enum.Enum):
    #: The report was applied.
    applied = "applied"
    #: The report names an attempt this agent no longer holds: ignore it,
    #: and tell the agent to stop.
    stale = "stale"


@frozen
class Assignment:
    """
    What an agent needs to run one task.
    """

    task_id: int
    attempt: int
    job_id: int
    title: str
    command: list[str]
    env: dict[str, str]
    cwd: str | None
    frames: list[int]
    timeout_s: int | None
    #: What the task takes of its agent: (cpus, ram_mb, gpus).
    requirements: tuple[int, int, int] = (0, 0, 0)
    #: The agent it was handed to.
    agent_id: str = ""
    layer: str = "main"
    #: The indexes of the agent's GPUs it is given.
    gpu_devices: tuple[int, ...] = ()
    #: What an OpenJD task runs (None for a native one).
    openjd: OpenJDAssignment | None = None

    def message(self) -> AssignedTask:
        """
        As the assign message carries it.
        """
        return AssignedTask(
            task_id=self.task_id,
            attempt=self.attempt,
            job_id=self.job_id,
            title=self.title,
            command=self.command,
            env=self.env,
            cwd=self.cwd,
            frames=self.frames,
            timeout_s=self.timeout_s,
            layer=self.layer,
            gpu_devices=list(self.gpu_devices),
            openjd=self.openjd,
        )


def _at(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


async def assign(
    txn: Transaction, agentID: str, taskIDs: Sequence[int], at: float | None = None
) -> list[Assignment]:
    """
    Hand queued tasks to an agent: a new attempt each. Tasks that are no
    longer queued (taken by another claimer, canceled) are skipped.
    """
    return await assignMany(txn, [(taskID, agentID) for taskID in taskIDs], at)


async def assignMany(
    txn: Transaction,
    pairs: Sequence[tuple[int, str]],
    at: float | None = None,
    devices: dict[int, tuple[int, ...]] | None = None,
) -> list[Assignment]:
    """
    Hand queued tasks to agents, (task id, agent id) pairs, in one statement:
    the tasks become assigned with a new attempt each, the attempts are
    recorded (with the GPU C{devices} given to each task, by task id), and
    what the agents need to run them is returned.
    """
    if not pairs:
        return []
    ordered = sorted(pairs)
    given = devices or {}
    rows = await txn.query(
        "WITH pairs AS (SELECT * FROM unnest(%s::bigint[], %s::uuid[], %s::text[])"
        " AS p (task_id, agent_id, devices)),"
        # Each task by its primary key (a join lets the planner read every
        # queued task instead), locked in id order: the pairs come sorted.
        " claimed AS (SELECT t.id, p.agent_id, p.devices::int[] AS devices FROM pairs p"
        " CROSS JOIN LATERAL"
        " (SELECT id FROM tasks WHERE id = p.task_id AND state = 'queued'"
        " FOR UPDATE SKIP LOCKED) t),"
        " updated AS (UPDATE tasks t SET state = 'assigned', attempt = t.attempt + 1,"
        " agent_id = claimed.agent_id, progress = 0, started_at = NULL, finished_at = NULL,"
        " exit_code = NULL, error = NULL, status_message = NULL"
        " FROM claimed WHERE t.id = claimed.id"
        " RETURNING t.id, t.attempt, t.job_id, t.layer_id, t.frames, t.command, t.agent_id,"
        " claimed.devices, t.parameters),"
        " attempts AS (INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state,"
        " started_at, gpu_devices) SELECT id, attempt, job_id, agent_id, 'assigned',"
        " coalesce(%s, now()), devices FROM updated)"
        " SELECT u.id, u.attempt, u.job_id, u.frames, u.command, u.agent_id, j.title, l.command,"
        " l.env, l.cwd, l.timeout_s, l.req_cpus,"
        " coalesce(l.learned_ram_mb, l.req_ram_mb), l.req_gpus, l.name, u.devices,"
        # What an OpenJD task runs (migration 0016): its parameter set
        # (stored, or its frame's value of the layer's frame_parameter), the
        # job's and the step's; a native task's row costs three NULLs.
        " coalesce(u.parameters, CASE WHEN l.openjd->>'frame_parameter' IS NOT NULL THEN"
        " jsonb_build_object(l.openjd->>'frame_parameter', jsonb_build_object('type', 'INT',"
        " 'value', u.frames[1]::text)) END),"
        " CASE WHEN l.openjd IS NOT NULL THEN j.openjd END, l.openjd"
        " FROM updated u JOIN jobs j ON j.id = u.job_id JOIN layers l ON l.id = u.layer_id"
        " ORDER BY u.id",
        (
            [p[0] for p in ordered],
            [p[1] for p in ordered],
            ["{" + ",".join(map(str, given.get(p[0], ()))) + "}" for p in ordered],
            _at(at),
        ),
    )
    assignments = []
    for (taskID, attempt, jobID, frames, taskCommand, agentID, title, layerCommand, env, cwd,
         timeout, cpus, ram, gpus, layer, gpuDevices, parameters, jobOpenJD,
         layerOpenJD) in rows:  # fmt: skip
        command = taskCommand if taskCommand is not None else layerCommand
        openjd = None
        if parameters is not None:
            openjd = openjdAssignment(jobID, layer, parameters, jobOpenJD, layerOpenJD)
        assignments.append(
            Assignment(
                task_id=taskID,
                attempt=attempt,
                job_id=jobID,
                title=title,
                command=expandCommand(command, frames) if command is not None else [],
                env=env,
                cwd=cwd,
                frames=frames,
                timeout_s=timeout,
                requirements=(cpus, ram, gpus),
                agent_id=str(agentID),
                layer=layer,
                gpu_devices=tuple(gpuDevices),
                openjd=openjd,
            )
        )
    return assignments


def _values(stored: dict[str, Any]) -> dict[str, OpenJDValue]:
    return {name: OpenJDValue(type=v["type"], value=v["value"]) for name, v in stored.items()}


def openjdAssignment(
    jobID: int,
    step: str,
    parameters: dict[str, Any],
    job: dict[str, Any] | None,
    layer: dict[str, Any] | None,
) -> OpenJDAssignment:
    """
    The assign message's C{openjd} of a task, from what its job, layer and
    task keep (jobs.openjd, layers.openjd, tasks.parameters).
    """
    job = job or {}
    layer = layer or {}
    return OpenJDAssignment(
        job=OpenJDJobPayload(
            id=jobID,
            name=job.get("name", ""),
            parameters=_values(job.get("parameters") or {}),
            environments=job.get("environments") or [],
            extensions=job.get("extensions") or [],
        ),
        step=OpenJDStepPayload(
            name=step,
            script=layer.get("script") or {},
            environments=layer.get("environments") or [],
        ),
        parameters=_values(parameters),
    )


_FENCE = "id = %s AND attempt = %s AND agent_id = %s AND state IN ('assigned', 'running')"


async def running(
    txn: Transaction,
    agentID: str,
    taskID: int,
    attempt: int,
    progress: float | None = None,
    at: float | None = None,
) -> Outcome:
    rows = await txn.query(
        "UPDATE tasks SET state = 'running',"
        " started_at = coalesce(started_at, %s, now()),"
        " progress = coalesce(%s, progress)"
        f" WHERE {_FENCE} RETURNING id",
        (_at(at), progress, taskID, attempt, agentID),
    )
    if not rows:
        return Outcome.stale
    await txn.execute(
        "UPDATE task_attempts SET state = 'running' WHERE task_id = %s AND attempt = %s"
        " AND state = 'assigned'",
        (taskID, attempt),
    )
    return Outcome.applied


async def runningMany(
    txn: Transaction, reports: Sequence[tuple[str, int, int, float | None, float | None]]
) -> set[int]:
    """
    Many "running" reports, (agent, task, attempt, progress, at), in one
    statement; the ids of the tasks whose report applied.
    """
    rows = await txn.query(
        "WITH x AS (SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::int[], %s::real[],"
        " %s::timestamptz[]) AS x (agent_id, task_id, attempt, progress, at)),"
        " updated AS (UPDATE tasks t SET state = 'running',"
        " started_at = coalesce(t.started_at, x.at, now()),"
        " progress = coalesce(x.progress, t.progress)"
        " FROM x WHERE t.id = x.task_id AND t.attempt = x.attempt AND t.agent_id = x.agent_id"
        " AND t.state IN ('assigned', 'running') RETURNING t.id, t.attempt),"
        " attempts AS (UPDATE task_attempts a SET state = 'running' FROM updated"
        " WHERE a.task_id = updated.id AND a.attempt = updated.attempt AND a.state = 'assigned')"
        " SELECT id FROM updated",
        (
            [r[0] for r in reports],
            [r[1] for r in reports],
            [r[2] for r in reports],
            [r[3] for r in reports],
            [_at(r[4]) for r in reports],
        ),
    )
    return {r[0] for r in rows}


async def doneMany(
    txn: Transaction,
    reports: Sequence[tuple[str, int, int, int | None, float | None, float | None]],
) -> dict[int, int]:
    """
    Many "done" reports, (agent, task, attempt, exit code, at, started), in
    one statement; task id to job id for the reports that applied. C{started}
    is the time of a "running" report folded into this one (or None).
    """
    rows = await txn.query(
        "WITH x AS (SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::int[], %s::int[],"
        " %s::timestamptz[], %s::timestamptz[])"
        " AS x (agent_id, task_id, attempt, exit_code, at, started)),"
        " updated AS (UPDATE tasks t SET state = 'done', progress = 1,"
        " exit_code = x.exit_code, error = NULL,"
        " started_at = coalesce(t.started_at, x.started, x.at, now()),"
        " finished_at = coalesce(x.at, now())"
        " FROM x WHERE t.id = x.task_id AND t.attempt = x.attempt AND t.agent_id = x.agent_id"
        " AND t.state IN ('assigned', 'running')"
        " RETURNING t.id, t.attempt, t.job_id, x.exit_code, x.at),"
        " attempts AS (UPDATE task_attempts a SET state = 'done',"
        " finished_at = coalesce(updated.at, now()), exit_code = updated.exit_code"
        " FROM updated WHERE a.task_id = updated.id AND a.attempt = updated.attempt"
        " AND a.finished_at IS NULL)"
        " SELECT id, job_id FROM updated",
        (
            [r[0] for r in reports],
            [r[1] for r in reports],
            [r[2] for r in reports],
            [r[3] for r in reports],
            [_at(r[4]) for r in reports],
            [_at(r[5]) for r in reports],
        ),
    )
    return {r[0]: r[1] for r in rows}


async def done(
    txn: Transaction,
    agentID: str,
    taskID: int,
    attempt: int,
    exitCode: int | None = 0,
    at: float | None = None,
) -> Outcome:
    when = _at(at)
    rows = await txn.query(
        "UPDATE tasks SET state = 'done', progress = 1, exit_code = %s, error = NULL,"
        " started_at = coalesce(started_at, %s, now()), finished_at = coalesce(%s, now())"
        f" WHERE {_FENCE} RETURNING id",
        (exitCode, when, when, taskID, attempt, agentID),
    )
    if not rows:
        return Outcome.stale
    await _closeAttempt(txn, taskID, attempt, "done", exitCode, None, when)
    return Outcome.applied


async def failed(
    txn: Transaction,
    agentID: str,
    taskID: int,
    attempt: int,
    exitCode: int | None,
    error: str | None,
    at: float | None = None,
    blocklistAfter: int = 0,
) -> Outcome:
    """
    A failed attempt: back to queued while failures stay within the job's
    max_retries, otherwise the task fails. With C{blocklistAfter}, the
    agent's failures on the job are counted, and past that many the agent
    gets no more of the job's tasks.
    """
    when = _at(at)
    rows = await txn.query(
        "UPDATE tasks t SET failures = t.failures + 1,"
        " state = CASE WHEN t.failures + 1 <= j.max_retries THEN 'queued' ELSE 'failed' END,"
        " agent_id = CASE WHEN t.failures + 1 <= j.max_retries THEN NULL ELSE t.agent_id END,"
        " finished_at = CASE WHEN t.failures + 1 <= j.max_retries THEN NULL"
        " ELSE coalesce(%s, now()) END,"
        " exit_code = %s, error = %s"
        " FROM jobs j WHERE j.id = t.job_id AND t.id = %s AND t.attempt = %s"
        " AND t.agent_id = %s AND t.state IN ('assigned', 'running')"
        " RETURNING t.job_id",
        (when, exitCode, error, taskID, attempt, agentID),
    )
    if not rows:
        return Outcome.stale
    await _closeAttempt(txn, taskID, attempt, "failed", exitCode, error, when)
    if blocklistAfter > 0:
        await txn.execute(
            "INSERT INTO job_blocklist (job_id, agent_id, failures, blocked)"
            " VALUES (%s, %s, 1, 1 >= %s) ON CONFLICT (job_id, agent_id) DO UPDATE"
            " SET failures = job_blocklist.failures + 1,"
            " blocked = job_blocklist.failures + 1 >= %s",
            (rows[0][0], agentID, blocklistAfter, blocklistAfter),
        )
    return Outcome.applied


async def requeue(
    txn: Transaction,
    agentID: str,
    taskID: int,
    attempt: int,
    why: str,
    error: str,
    at: float | None = None,
) -> Outcome:
    """
    Hand a task back without counting a failure: the agent rejected it
    (C{why="rejected"}) or was lost (C{why="lost"}).
    """
    rows = await txn.query(
        "UPDATE tasks SET state = 'queued', agent_id = NULL, progress = 0, started_at = NULL"
        f" WHERE {_FENCE} RETURNING id",
        (taskID, attempt, agentID),
    )
    if not rows:
        return Outcome.stale
    await _closeAttempt(txn, taskID, attempt, why, None, error, _at(at))
    return Outcome.applied


async def preempt(
    txn: Transaction, agentID: str, taskID: int, attempt: int, error: str, at: float
) -> Outcome:
    """
    Take a running task from its agent for more urgent work: its attempt is
    closed as C{preempted}, and the task goes back to queued without counting
    a failure, remembering when (C{preempted_at}: it is not preempted again
    soon after its restart).
    """
    when = _at(at)
    rows = await txn.query(
        "UPDATE tasks SET state = 'queued', agent_id = NULL, progress = 0, started_at = NULL,"
        f" preempted_at = %s WHERE {_FENCE} RETURNING id",
        (when, taskID, attempt, agentID),
    )
    if not rows:
        return Outcome.stale
    await _closeAttempt(txn, taskID, attempt, "preempted", None, error, when)
    return Outcome.applied


async def _closeAttempt(
    txn: Transaction,
    taskID: int,
    attempt: int,
    state: str,
    exitCode: int | None,
    error: str | None,
    when: datetime | None,
) -> None:
    await txn.execute(
        "UPDATE task_attempts SET state = %s, finished_at = coalesce(%s, now()),"
        " exit_code = %s, error = %s"
        " WHERE task_id = %s AND attempt = %s AND finished_at IS NULL",
        (state, when, exitCode, error, taskID, attempt),
    )
