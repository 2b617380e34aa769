"""
What a client may submit as a job, checked field by field.

Every rejection names the field and the reason (L{InvalidField}); nothing is
written until the whole submission has been checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from masterd.errors import InvalidField, jsonType

from .command import CommandError, checkArgument
from .frames import FrameSpecError, chunkFrames, parseFrames

MAX_TASKS_PER_JOB = 1_000_000

_TOP_KEYS = {
    "title",
    "command",
    "frames",
    "chunk",
    "tasks",
    "env",
    "cwd",
    "priority",
    "weight",
    "requirements",
    "max_retries",
    "task_timeout_s",
    "depends_on",
    "paused",
    "metadata",
}
_REQUIREMENT_KEYS = ("cpus", "ram_mb", "gpus", "tags")
_PATCH_KEYS = {
    "title",
    "priority",
    "weight",
    "paused",
    "stop_running",
    "max_retries",
    "requirements",
}


@frozen
class Requirements:
    cpus: int = 0
    ram_mb: int = 0
    gpus: int = 0
    tags: tuple[str, ...] = ()

    def asJSON(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "ram_mb": self.ram_mb,
            "gpus": self.gpus,
            "tags": list(self.tags),
        }


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


def _isInt(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(body: Mapping[str, Any], key: str, default: Any, lo: int, hi: int, field: str = "") -> Any:
    field = field or key
    if key not in body or body[key] is None:
        return default
    value = body[key]
    if not _isInt(value):
        raise InvalidField(field, f"must be an integer, not {jsonType(value)}")
    if not lo <= value <= hi:
        raise InvalidField(field, f"must be between {lo} and {hi}, not {value}")
    return value


def _str(body: Mapping[str, Any], key: str, default: Any, field: str = "") -> Any:
    field = field or key
    if key not in body or body[key] is None:
        return default
    value = body[key]
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string, not {jsonType(value)}")
    return value


def _object(body: object, field: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise InvalidField(field, f"must be an object, not {jsonType(body)}")
    return body


def parseTitle(body: Mapping[str, Any]) -> str:
    title = _str(body, "title", None)
    if title is None:
        raise InvalidField("title", "is required")
    title = title.strip()
    if not title:
        raise InvalidField("title", "must not be empty")
    if len(title) > 500:
        raise InvalidField("title", "must be at most 500 characters")
    return str(title)


def parseCommand(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidField(field, f"must be an array of strings (an argv), not {jsonType(value)}")
    if not value:
        raise InvalidField(field, "must not be empty")
    for i, argument in enumerate(value):
        if not isinstance(argument, str):
            raise InvalidField(f"{field}[{i}]", f"must be a string, not {jsonType(argument)}")
        try:
            checkArgument(argument)
        except CommandError as e:
            raise InvalidField(f"{field}[{i}]", str(e)) from None
    return tuple(value)


def parseRequirements(value: object, field: str = "requirements") -> Requirements:
    body = _object(value, field)
    for key in body:
        if key not in _REQUIREMENT_KEYS:
            raise InvalidField(
                f"{field}.{key}",
                f"is not a known requirement; known: {', '.join(_REQUIREMENT_KEYS)}",
            )
    tags = body.get("tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list):
        raise InvalidField(f"{field}.tags", f"must be an array of strings, not {jsonType(tags)}")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidField(f"{field}.tags[{i}]", "must be a non-empty string")
    return Requirements(
        cpus=_int(body, "cpus", 0, 0, 4096, f"{field}.cpus"),
        ram_mb=_int(body, "ram_mb", 0, 0, 2**31 - 1, f"{field}.ram_mb"),
        gpus=_int(body, "gpus", 0, 0, 256, f"{field}.gpus"),
        tags=tuple(sorted(set(tags))),
    )


def _parseEnv(value: object) -> dict[str, str]:
    env = _object(value, "env")
    for key, item in env.items():
        if not key or "=" in key or "\0" in key:
            raise InvalidField(f"env.{key}", "is not a valid environment variable name")
        if not isinstance(item, str):
            raise InvalidField(f"env.{key}", f"must be a string, not {jsonType(item)}")
    return dict(env)


def _parseFrames(value: object, field: str, maxFrames: int) -> list[int]:
    if not isinstance(value, str | list):
        raise InvalidField(
            field,
            f'must be a frame spec like "1-100" or an array of integers, not {jsonType(value)}',
        )
    try:
        return parseFrames(value, maxFrames)
    except FrameSpecError as e:
        raise InvalidField(field, str(e)) from None


def _parseTasks(body: Mapping[str, Any], maxFrames: int) -> list[TaskSpec]:
    if "tasks" in body and body["tasks"] is not None:
        for key in ("frames", "chunk"):
            if body.get(key) is not None:
                raise InvalidField(key, "cannot be given together with tasks")
        raw = body["tasks"]
        if not isinstance(raw, list):
            raise InvalidField("tasks", f"must be an array of tasks, not {jsonType(raw)}")
        if not raw:
            raise InvalidField("tasks", "must not be empty")
        if len(raw) > MAX_TASKS_PER_JOB:
            raise InvalidField("tasks", f"has {len(raw)} tasks; the limit is {MAX_TASKS_PER_JOB}")
        tasks: list[TaskSpec] = []
        seen: set[int] = set()
        total = 0
        for i, item in enumerate(raw):
            task = _object(item, f"tasks[{i}]")
            for key in task:
                if key not in ("frames", "command"):
                    raise InvalidField(
                        f"tasks[{i}].{key}", "is not a known key; known: frames, command"
                    )
            if task.get("frames") is None:
                raise InvalidField(f"tasks[{i}].frames", "is required")
            frames = _parseFrames(task["frames"], f"tasks[{i}].frames", maxFrames)
            total += len(frames)
            if total > maxFrames:
                raise InvalidField("tasks", f"name more than {maxFrames} frames in all")
            for frame in frames:
                if frame in seen:
                    raise InvalidField(
                        f"tasks[{i}].frames", f"frame {frame} is in another task too"
                    )
                seen.add(frame)
            command = None
            if task.get("command") is not None:
                command = parseCommand(task["command"], f"tasks[{i}].command")
            elif body.get("command") is None:
                raise InvalidField(f"tasks[{i}].command", "is required when the job has no command")
            tasks.append(TaskSpec(tuple(frames), command))
        return tasks
    if body.get("frames") is None:
        raise InvalidField("frames", "is required (or give tasks)")
    frames = _parseFrames(body["frames"], "frames", maxFrames)
    chunk = _int(body, "chunk", 1, 1, maxFrames)
    return [TaskSpec(tuple(group)) for group in chunkFrames(frames, chunk)]


def _parseDependsOn(value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise InvalidField("depends_on", f"must be an array of job ids, not {jsonType(value)}")
    for i, item in enumerate(value):
        if not _isInt(item) or item < 1:
            raise InvalidField(f"depends_on[{i}]", "must be a job id (a positive integer)")
    return tuple(dict.fromkeys(value))


def parseJob(raw: object, maxFrames: int = 1_000_000) -> JobSpec:
    """
    Check a submission completely.

    @raise InvalidField: naming the first field at fault.
    """
    body = _object(raw, "(body)")
    for key in body:
        if key not in _TOP_KEYS:
            raise InvalidField(key, "is not a known field")
    title = parseTitle(body)
    command = None
    if body.get("command") is not None:
        command = parseCommand(body["command"], "command")
    elif body.get("tasks") is None:
        raise InvalidField("command", "is required unless tasks give their own")
    tasks = _parseTasks(body, maxFrames)
    cwd = _str(body, "cwd", None)
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        raise InvalidField("paused", f"must be true or false, not {jsonType(paused)}")
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    return JobSpec(
        title=title,
        command=command,
        tasks=tuple(tasks),
        env=_parseEnv(body["env"]) if body.get("env") is not None else {},
        cwd=cwd,
        priority=_int(body, "priority", 50, 0, 100),
        weight=_int(body, "weight", 1, 1, 1000),
        requirements=(
            parseRequirements(body["requirements"])
            if body.get("requirements") is not None
            else Requirements()
        ),
        max_retries=_int(body, "max_retries", 3, 0, 100),
        task_timeout_s=_int(body, "task_timeout_s", None, 1, 30 * 24 * 3600),
        depends_on=_parseDependsOn(body["depends_on"]) if body.get("depends_on") else (),
        paused=paused,
        metadata=dict(_object(metadata, "metadata")),
    )


def parseJobPatch(raw: object) -> dict[str, Any]:
    """
    The changes of a C{PATCH /api/v1/jobs/<id>}, checked; only the keys given.
    """
    body = _object(raw, "(body)")
    if not body:
        raise InvalidField("(body)", f"names no change; fields: {', '.join(sorted(_PATCH_KEYS))}")
    changes: dict[str, Any] = {}
    for key in body:
        if key not in _PATCH_KEYS:
            raise InvalidField(key, f"cannot be changed; fields: {', '.join(sorted(_PATCH_KEYS))}")
    if "title" in body:
        changes["title"] = parseTitle(body)
    if "priority" in body:
        changes["priority"] = _int(body, "priority", None, 0, 100)
    if "weight" in body:
        changes["weight"] = _int(body, "weight", None, 1, 1000)
    if "max_retries" in body:
        changes["max_retries"] = _int(body, "max_retries", None, 0, 100)
    if "paused" in body:
        if not isinstance(body["paused"], bool):
            raise InvalidField("paused", f"must be true or false, not {jsonType(body['paused'])}")
        changes["paused"] = body["paused"]
    if "requirements" in body:
        # A merge: the requirements named change, the others stay.
        given = _object(body["requirements"], "requirements")
        parsed = parseRequirements(given)
        changes["requirements"] = {key: getattr(parsed, key) for key in given}
    if "stop_running" in body:
        if not isinstance(body["stop_running"], bool):
            raise InvalidField(
                "stop_running", f"must be true or false, not {jsonType(body['stop_running'])}"
            )
        if body["stop_running"] and changes.get("paused") is not True:
            raise InvalidField("stop_running", 'goes only with "paused": true')
        changes["stop_running"] = body["stop_running"]
    for key, value in changes.items():
        if value is None:
            raise InvalidField(key, "must not be null")
    return changes
