"""
Jobs, tasks and attempts as the API shows them: rows in, typed documents
(L{masterd.jobs.models}) out, other resources by href.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from masterd._time import isoformat, isotime

from .capabilities import Extra
from .models import (
    AgentRef,
    AmountRequirementDocument,
    AttemptDocument,
    AttributeRequirementDocument,
    BlocklistEntry,
    DependencyDocument,
    JobDocument,
    LayerDocument,
    OpenJDValue,
    Ref,
    Requirements,
    TaskCounts,
    TaskDocument,
)
from .usage import USAGE_COLUMNS, attemptUsage

#: The requirements beyond the minimums, of a job ("") or a layer ("l.").
REQUIREMENT_COLUMNS = (
    "{0}req_max_cpus, {0}req_max_ram_mb, {0}req_max_gpus, {0}req_os_family, {0}req_cpu_arch,"
    " {0}req_attributes, {0}req_amounts"
)
#: How many columns REQUIREMENT_COLUMNS has, and where they are in a layer
#: row (after its counts).
_EXTRA = 7
_LAYER_EXTRA = slice(26, 26 + _EXTRA)

JOB_COLUMNS = (
    "id, title, owner, state, priority, weight, paused, command, env, cwd,"
    " req_cpus, req_ram_mb, req_gpus, req_tags, max_retries, task_timeout_s, metadata,"
    " created_at, updated_at, finished_at, n_total, n_waiting, n_queued, n_assigned,"
    " n_running, n_done, n_failed, n_canceled, project, max_running, preemptible, limits,"
    " stall_timeout_s, req_gpu_memory_mb, " + REQUIREMENT_COLUMNS.format("")
)

LAYER_COLUMNS = (
    "l.job_id, l.id, l.name, l.index, l.command, l.frames, l.chunk, l.env, l.cwd, l.req_cpus,"
    " l.req_ram_mb, l.req_gpus, l.req_gpu_memory_mb, l.req_tags, l.limits, l.max_running,"
    " l.timeout_s, l.stall_timeout_s, l.n_total, l.n_waiting, l.n_queued, l.n_assigned,"
    " l.n_running, l.n_done, l.n_failed, l.n_canceled, " + REQUIREMENT_COLUMNS.format("l.")
)

#: The hostname of the agent a row names (no foreign key: a deleted agent's
#: tasks and attempts keep its id, and then have no hostname).
_HOSTNAME = "(SELECT h.hostname FROM agents h WHERE h.id = {}.agent_id)"

#: An OpenJD task's parameter set: stored (tasks.parameters), or, for a
#: layer whose one INT parameter is its tasks' frame (its openjd
#: frame_parameter), derived from the frame; NULL for a native task.
TASK_PARAMETERS = (
    "coalesce({t}.parameters, (SELECT jsonb_build_object({l}.openjd->>'frame_parameter',"
    " jsonb_build_object('type', 'INT', 'value', {t}.frames[1]::text)) FROM layers {l}"
    " WHERE {l}.id = {t}.layer_id AND {l}.openjd->>'frame_parameter' IS NOT NULL))"
)
TASK_COLUMNS = (
    "t.id, t.job_id, t.index, t.frames, t.command, t.state, t.attempt, t.agent_id,"
    " t.progress, t.started_at, t.finished_at, t.exit_code, t.error, t.status_message, "
    + _HOSTNAME.format("t")
    + ", (SELECT l.name FROM layers l WHERE l.id = t.layer_id),"
    " (SELECT a.gpu_devices FROM task_attempts a WHERE a.task_id = t.id"
    " AND a.attempt = t.attempt), " + TASK_PARAMETERS.format(t="t", l="l")
)


def attemptColumns(table: str) -> str:
    """
    An attempt's columns, as L{attemptDocument} reads them, for C{FROM
    table} (not aliased): task_attempts, or agent_failure_history (the
    failed attempts of deleted jobs, migration 0022).
    """
    return (
        "task_id, attempt, job_id, agent_id, state, started_at, finished_at, exit_code, error, "
        + _HOSTNAME.format(table)
        + ", gpu_devices, "
        + USAGE_COLUMNS
    )


#: For C{FROM task_attempts} (not aliased).
ATTEMPT_COLUMNS = attemptColumns("task_attempts")

#: For C{FROM job_blocklist} (not aliased).
BLOCKLIST_COLUMNS = "job_id, agent_id, failures, " + _HOSTNAME.format("job_blocklist")


def jobHref(jobID: int) -> str:
    return f"/api/v1/jobs/{jobID}"


def taskHref(taskID: int) -> str:
    return f"/api/v1/tasks/{taskID}"


def agentRef(agentID: Any, hostname: str | None) -> AgentRef | None:
    if agentID is None:
        return None
    return AgentRef(id=str(agentID), href=f"/api/v1/agents/{agentID}", hostname=hostname)


def jobRef(jobID: int) -> Ref:
    return Ref(id=jobID, href=jobHref(jobID))


def counts(href: str, row: Sequence[int]) -> TaskCounts:
    total, waiting, queued, assigned, running, done, failed, canceled = row
    return TaskCounts(
        href=href,
        total=total,
        waiting=waiting,
        queued=queued,
        assigned=assigned,
        running=running,
        done=done,
        failed=failed,
        canceled=canceled,
    )


def layerState(canceled: bool, paused: bool, n: Sequence[int]) -> str:
    """
    A layer's state, derived as the database derives a job's.
    """
    total, _, queued, assigned, running, done, failed, cancels = n
    if done + failed + cancels == total:
        if canceled:
            return "canceled"
        if failed:
            return "failed"
        return "canceled" if cancels else "done"
    if paused:
        return "paused"
    if assigned + running:
        return "running"
    return "queued" if queued else "waiting"


def requirementsDocument(
    cpus: int, ram: int, gpus: int, tags: Sequence[str], gpuMB: int, extra: Sequence[Any]
) -> Requirements:
    """
    Requirements from their columns (C{extra}: those of REQUIREMENT_COLUMNS).
    """
    maxCpus, maxRam, maxGpus, osFamily, cpuArch, attributes, amounts = extra
    return Requirements(
        cpus=cpus, ram_mb=ram, gpus=gpus, tags=list(tags), gpu_memory_mb=gpuMB,
        max_cpus=maxCpus, max_ram_mb=maxRam, max_gpus=maxGpus, os_family=list(osFamily),
        cpu_arch=list(cpuArch),
        attributes={k: AttributeRequirementDocument(**v) for k, v in attributes.items()},
        amounts={k: AmountRequirementDocument(**v) for k, v in amounts.items()},
    )  # fmt: skip


def layerExtra(row: tuple[Any, ...]) -> Extra:
    """
    A layer row's requirements beyond the minimums.
    """
    return Extra.of(*row[_LAYER_EXTRA])


def layerDocument(
    row: tuple[Any, ...],
    canceled: bool,
    paused: bool,
    dependencies: list[DependencyDocument],
    unmet: str | None = None,
) -> LayerDocument:
    (jobID, _, name, index, command, frames, chunk, env, cwd, cpus, ram, gpus, gpuMB, tags,
     limits, maxRunning, timeout, stall) = row[:18]  # fmt: skip
    n = row[18:26]
    return LayerDocument(
        name=name,
        index=index,
        state=layerState(canceled, paused, n),  # type: ignore[arg-type]
        command=command,
        frames=frames,
        chunk=chunk,
        env=env,
        cwd=cwd,
        requirements=requirementsDocument(cpus, ram, gpus, tags, gpuMB, row[_LAYER_EXTRA]),
        limits=list(limits),
        max_running=maxRunning,
        timeout_s=timeout,
        stall_timeout_s=stall,
        depends_on=dependencies,
        tasks=counts(f"{jobHref(jobID)}/tasks?layer={name}", n),
        unmet=unmet,
    )


def jobDocument(
    row: tuple[Any, ...],
    parents: list[int],
    children: list[int],
    blocklist: list[BlocklistEntry] | None = None,
    layers: list[LayerDocument] | None = None,
) -> JobDocument:
    (
        jobID,
        title,
        owner,
        state,
        priority,
        weight,
        paused,
        command,
        env,
        cwd,
        cpus,
        ramMB,
        gpus,
        tags,
        maxRetries,
        timeout,
        metadata,
        createdAt,
        updatedAt,
        finishedAt,
        total,
        waiting,
        queued,
        assigned,
        running,
        done,
        failed,
        canceled,
        project,
        maxRunning,
        preemptible,
        limits,
        stall,
        gpuMB,
        *extra,
    ) = row
    href = jobHref(jobID)
    return JobDocument(
        id=jobID,
        href=href,
        title=title,
        owner=owner,
        state=state,
        priority=priority,
        weight=weight,
        paused=paused,
        created_at=isotime(createdAt),
        updated_at=isotime(updatedAt),
        finished_at=isoformat(finishedAt),
        progress=round(done / total, 4) if total else 0.0,
        command=command,
        env=env,
        cwd=cwd,
        requirements=requirementsDocument(cpus, ramMB, gpus, tags, gpuMB, extra[:_EXTRA]),
        max_retries=maxRetries,
        task_timeout_s=timeout,
        metadata=metadata,
        tasks=TaskCounts(
            href=f"{href}/tasks",
            total=total,
            waiting=waiting,
            queued=queued,
            assigned=assigned,
            running=running,
            done=done,
            failed=failed,
            canceled=canceled,
        ),
        parents=[jobRef(p) for p in parents],
        children=[jobRef(c) for c in children],
        blocklist=blocklist or [],
        project=project,
        max_running=maxRunning,
        preemptible=preemptible,
        limits=list(limits),
        stall_timeout_s=stall,
        layers=layers or [],
    )


def taskDocument(row: tuple[Any, ...]) -> TaskDocument:
    (
        taskID,
        jobID,
        index,
        frames,
        command,
        state,
        attempt,
        agentID,
        progress,
        startedAt,
        finishedAt,
        exitCode,
        error,
        status,
        hostname,
        layer,
        devices,
        parameters,
    ) = row
    href = taskHref(taskID)
    return TaskDocument(
        id=taskID,
        href=href,
        job=jobRef(jobID),
        index=index,
        frames=frames,
        command=command,
        state=state,
        attempt=attempt,
        agent=agentRef(agentID, hostname),
        progress=round(float(progress), 4),
        started_at=isoformat(startedAt),
        finished_at=isoformat(finishedAt),
        exit_code=exitCode,
        error=error,
        status=status,
        attempts=f"{href}/attempts",
        log=f"{href}/log",
        layer=layer,
        gpu_devices=list(devices or ()),
        parameters=openjdValues(parameters),
    )


def openjdValues(values: dict[str, Any] | None) -> dict[str, OpenJDValue] | None:
    """
    OpenJD parameter values as stored (tasks.parameters), typed; None for
    a native task.
    """
    if values is None:
        return None
    return {name: OpenJDValue(type=v["type"], value=v["value"]) for name, v in values.items()}


def attemptDocument(row: tuple[Any, ...]) -> AttemptDocument:
    (taskID, attempt, jobID, agentID, state, startedAt, finishedAt, exitCode, error, hostname,
     devices) = row[:11]  # fmt: skip
    return AttemptDocument(
        task=Ref(id=taskID, href=taskHref(taskID)),
        job=jobRef(jobID),
        attempt=attempt,
        agent=agentRef(agentID, hostname),
        state=state,
        started_at=isoformat(startedAt),
        finished_at=isoformat(finishedAt),
        exit_code=exitCode,
        error=error,
        gpu_devices=list(devices),
        usage=attemptUsage(row[11:16]),
        job_title=row[16] if len(row) > 16 else None,
    )
