"""
A submission's meaning, checked after its shape: the declared types
(L{masterd.jobs.models}) have already refused every wrong type, range and
unknown field; what is left are the rules no type can state (frame specs,
placeholders, which fields go together), each a L{InvalidField} naming the
field. Nothing is written until the whole submission has been checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from attrs import frozen

from masterd.errors import InvalidField, Unprocessable

from .command import CommandError, checkArgument
from .frames import FrameSpecError, chunkFrames, parseFrames
from .models import JobPatch, JobSubmission, RequirementsModel


@frozen
class Requirements:
    cpus: int = 0
    ram_mb: int = 0
    gpus: int = 0
    tags: tuple[str, ...] = ()


@frozen
class TaskSpec:
    frames: tuple[int, ...]
    command: tuple[str, ...] | None = None


@frozen
class JobSpec:
    title: str
    command: tuple[str, ...] | None
    tasks: tuple[TaskSpec, ...]
    env: dict[str, str]
    cwd: str | None
    priority: int
    weight: int
    requirements: Requirements
    max_retries: int
    task_timeout_s: int | None
    depends_on: tuple[int, ...]
    paused: bool
    metadata: dict[str, Any]


def checkCommand(command: Sequence[str], field: str) -> tuple[str, ...]:
    for i, argument in enumerate(command):
        try:
            checkArgument(argument)
        except CommandError as e:
            raise InvalidField(f"{field}[{i}]", str(e)) from None
    return tuple(command)


def requirements(model: RequirementsModel) -> Requirements:
    return Requirements(model.cpus, model.ram_mb, model.gpus, tuple(sorted(set(model.tags))))


def _frames(value: str | list[int], field: str, maxFrames: int) -> list[int]:
    try:
        return parseFrames(value, maxFrames)
    except FrameSpecError as e:
        raise (Unprocessable if e.meaning else InvalidField)(field, str(e)) from None


def _tasks(job: JobSubmission, maxFrames: int) -> list[TaskSpec]:
    if job.tasks is not None:
        for key in ("frames", "chunk"):
            if getattr(job, key) is not None:
                raise InvalidField(key, "cannot be given together with tasks")
        # Frames may repeat across explicit tasks: each task is its own unit
        # of work, and two tasks of one job may well render the same frame
        # with different commands (a render pass, then a denoise pass).
        tasks: list[TaskSpec] = []
        total = 0
        for i, task in enumerate(job.tasks):
            frames = _frames(task.frames, f"tasks[{i}].frames", maxFrames)
            total += len(frames)
            if total > maxFrames:
                raise Unprocessable("tasks", f"name more than {maxFrames} frames in all")
            command = None
            if task.command is not None:
                command = checkCommand(task.command, f"tasks[{i}].command")
            elif job.command is None:
                raise InvalidField(f"tasks[{i}].command", "is required when the job has no command")
            tasks.append(TaskSpec(tuple(frames), command))
        return tasks
    if job.frames is None:
        raise InvalidField("frames", "is required (or give tasks)")
    frames = _frames(job.frames, "frames", maxFrames)
    return [TaskSpec(tuple(group)) for group in chunkFrames(frames, job.chunk or 1)]


def jobSpec(job: JobSubmission, maxFrames: int = 1_000_000) -> JobSpec:
    """
    A decoded submission, checked completely.

    @raise InvalidField: naming the first field at fault.
    """
    command = None
    if job.command is not None:
        command = checkCommand(job.command, "command")
    elif job.tasks is None:
        raise InvalidField("command", "is required unless tasks give their own")
    tasks = _tasks(job, maxFrames)
    return JobSpec(
        title=job.title,
        command=command,
        tasks=tuple(tasks),
        env=dict(job.env),
        cwd=job.cwd,
        priority=job.priority,
        weight=job.weight,
        requirements=requirements(job.requirements),
        max_retries=job.max_retries,
        task_timeout_s=job.task_timeout_s,
        depends_on=tuple(dict.fromkeys(job.depends_on)),
        paused=job.paused,
        metadata=job.metadata,
    )


PATCH_FIELDS = tuple(JobPatch.__struct_fields__)


def jobChanges(patch: JobPatch) -> dict[str, Any]:
    """
    The changes of a C{PATCH /api/v1/jobs/<id>}, checked; only the keys given.
    """
    changes: dict[str, Any] = {
        name: getattr(patch, name)
        for name in PATCH_FIELDS
        if getattr(patch, name) is not msgspec.UNSET
    }
    if "requirements" in changes:
        given = changes["requirements"]
        merged = {
            name: getattr(given, name)
            for name in given.__struct_fields__
            if getattr(given, name) is not msgspec.UNSET
        }
        if "tags" in merged:
            merged["tags"] = tuple(sorted(set(merged["tags"])))
        changes["requirements"] = merged
    if changes.get("stop_running"):
        # Stopping the running tasks pauses the job (else they would be
        # handed out again at once).
        if changes.get("paused") is False:
            raise InvalidField("stop_running", 'cannot go with "paused": false')
        changes["paused"] = True
    return changes
