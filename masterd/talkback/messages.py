"""
Talkback messages from agents: JSON text frames C{{"type": ..., ...}},
checked field by field into typed values (docs/talkback.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from attrs import frozen

from masterd.errors import InvalidField, jsonType


@frozen
class Hello:
    token: str | None
    agent_id: str
    hostname: str
    os: str | None
    version: str | None
    cpus: int
    ram_mb: int
    gpus: int
    tags: tuple[str, ...]
    software: dict[str, str]
    max_tasks: int
    running: tuple[tuple[int, int], ...]


@frozen
class Heartbeat:
    usage: dict[str, Any]


@frozen
class Limits:
    max_tasks: int | None
    max_ram_mb: int | None
    max_cpus: int | None

    def asJSON(self) -> dict[str, int]:
        values = {"max_tasks": self.max_tasks, "max_ram_mb": self.max_ram_mb,
                  "max_cpus": self.max_cpus}  # fmt: skip
        return {k: v for k, v in values.items() if v is not None}


@frozen
class TaskUpdate:
    task_id: int
    attempt: int
    state: str
    progress: float | None
    exit_code: int | None
    message: str | None


@frozen
class Log:
    task_id: int
    attempt: int
    lines: tuple[str, ...]


@frozen
class AgentException:
    message: str
    traceback: str | None


Message = Hello | Heartbeat | Limits | TaskUpdate | Log | AgentException

TASK_STATES = ("running", "done", "failed", "rejected")
MAX_LOG_LINES = 10_000
_USAGE_KEYS = ("cpu_percent", "load_avg", "ram_used_mb", "ram_free_mb", "disk_free_mb", "io")


class _Fields:
    def __init__(self, body: Mapping[str, Any], prefix: str, known: tuple[str, ...]) -> None:
        self.body = body
        self.prefix = prefix
        for key in body:
            if key not in known:
                raise InvalidField(self.name(key), "is not a known field")

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def integer(self, key: str, default: Any = ..., lo: int = 0, hi: int = 2**31 - 1) -> Any:
        value = self.body.get(key)
        if value is None:
            if default is ...:
                raise InvalidField(self.name(key), "is required")
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidField(self.name(key), f"must be an integer, not {jsonType(value)}")
        if not lo <= value <= hi:
            raise InvalidField(self.name(key), f"must be between {lo} and {hi}, not {value}")
        return value

    def text(self, key: str, default: Any = ..., limit: int = 1000) -> Any:
        value = self.body.get(key)
        if value is None:
            if default is ...:
                raise InvalidField(self.name(key), "is required")
            return default
        if not isinstance(value, str):
            raise InvalidField(self.name(key), f"must be a string, not {jsonType(value)}")
        if len(value) > limit:
            raise InvalidField(self.name(key), f"must be at most {limit} characters")
        return value

    def obj(self, key: str) -> Mapping[str, Any]:
        value = self.body.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidField(self.name(key), f"must be an object, not {jsonType(value)}")
        return value

    def array(self, key: str) -> list[Any]:
        value = self.body.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidField(self.name(key), f"must be an array, not {jsonType(value)}")
        return value


def _hello(body: Mapping[str, Any]) -> Hello:
    f = _Fields(body, "", ("type", "token", "agent", "running"))
    token = f.text("token", None)
    raw = body.get("agent")
    if not isinstance(raw, dict):
        raise InvalidField(
            "agent", "is required (an object)" if raw is None else "must be an object"
        )
    a = _Fields(raw, "agent.", ("id", "hostname", "os", "version", "cpus", "ram_mb", "gpus",
                                "tags", "software", "max_tasks"))  # fmt: skip
    try:
        agentID = str(uuid.UUID(a.text("id")))
    except ValueError:
        raise InvalidField("agent.id", "must be a UUID") from None
    hostname = a.text("hostname", limit=255)
    if not hostname.strip():
        raise InvalidField("agent.hostname", "must not be empty")
    tags = a.array("tags")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidField(f"agent.tags[{i}]", "must be a non-empty string")
    software = a.obj("software")
    for name, version in software.items():
        if not isinstance(version, str):
            raise InvalidField(
                f"agent.software.{name}", f"must be a string, not {jsonType(version)}"
            )
    running = []
    for i, item in enumerate(f.array("running")):
        if not isinstance(item, dict):
            raise InvalidField(f"running[{i}]", "must be an object")
        r = _Fields(item, f"running[{i}].", ("task_id", "attempt"))
        running.append((r.integer("task_id", lo=1, hi=2**63 - 1), r.integer("attempt", lo=1)))
    return Hello(
        token=token,
        agent_id=agentID,
        hostname=hostname,
        os=a.text("os", None),
        version=a.text("version", None),
        cpus=a.integer("cpus", 0, 0, 100_000),
        ram_mb=a.integer("ram_mb", 0),
        gpus=a.integer("gpus", 0, 0, 1000),
        tags=tuple(sorted(set(tags))),
        software=dict(software),
        max_tasks=a.integer("max_tasks", 1, 1, 10_000),
        running=tuple(running),
    )


def _heartbeat(body: Mapping[str, Any]) -> Heartbeat:
    f = _Fields(body, "", ("type", "usage"))
    usage = f.obj("usage")
    for key, value in usage.items():
        if key not in _USAGE_KEYS:
            raise InvalidField(f"usage.{key}", f"is not known; known: {', '.join(_USAGE_KEYS)}")
        if key == "io":
            if not isinstance(value, dict):
                raise InvalidField("usage.io", f"must be an object, not {jsonType(value)}")
        elif key == "load_avg":
            if not isinstance(value, list | int | float) or isinstance(value, bool):
                raise InvalidField("usage.load_avg", "must be a number or an array of numbers")
        elif not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidField(f"usage.{key}", f"must be a number, not {jsonType(value)}")
    return Heartbeat(dict(usage))


def _limits(body: Mapping[str, Any]) -> Limits:
    f = _Fields(body, "", ("type", "max_tasks", "max_ram_mb", "max_cpus"))
    return Limits(
        max_tasks=f.integer("max_tasks", None, 1, 10_000),
        max_ram_mb=f.integer("max_ram_mb", None),
        max_cpus=f.integer("max_cpus", None, 1, 100_000),
    )


def _taskUpdate(body: Mapping[str, Any]) -> TaskUpdate:
    f = _Fields(body, "", ("type", "task_id", "attempt", "state", "progress", "exit_code",
                           "message"))  # fmt: skip
    state = f.text("state")
    if state not in TASK_STATES:
        raise InvalidField("state", f"must be one of {', '.join(TASK_STATES)}, not {state!r}")
    progress = body.get("progress")
    if progress is not None:
        if not isinstance(progress, int | float) or isinstance(progress, bool):
            raise InvalidField("progress", f"must be a number, not {jsonType(progress)}")
        if not 0 <= progress <= 1:
            raise InvalidField("progress", f"must be between 0 and 1, not {progress}")
        progress = float(progress)
    return TaskUpdate(
        task_id=f.integer("task_id", lo=1, hi=2**63 - 1),
        attempt=f.integer("attempt", lo=1),
        state=state,
        progress=progress,
        exit_code=f.integer("exit_code", None, -(2**31), 2**31 - 1),
        message=f.text("message", None, limit=10_000),
    )


def _log(body: Mapping[str, Any]) -> Log:
    f = _Fields(body, "", ("type", "task_id", "attempt", "lines"))
    lines = f.array("lines")
    if len(lines) > MAX_LOG_LINES:
        raise InvalidField("lines", f"has {len(lines)} lines; at most {MAX_LOG_LINES} a message")
    for i, line in enumerate(lines):
        if not isinstance(line, str):
            raise InvalidField(f"lines[{i}]", f"must be a string, not {jsonType(line)}")
    return Log(f.integer("task_id", lo=1, hi=2**63 - 1), f.integer("attempt", lo=1), tuple(lines))


def _exception(body: Mapping[str, Any]) -> AgentException:
    f = _Fields(body, "", ("type", "message", "traceback"))
    return AgentException(f.text("message", limit=10_000), f.text("traceback", None, 100_000))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    "hello": _hello,
    "heartbeat": _heartbeat,
    "limits": _limits,
    "task_update": _taskUpdate,
    "log": _log,
    "exception": _exception,
}

TYPES = tuple(_PARSERS)


def parseMessage(text: str) -> Message:
    """
    @raise InvalidField: naming the field at fault (C{type} for an unknown
        type, C{(message)} for JSON that is not an object).
    """
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise InvalidField("(message)", f"is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidField("(message)", f"must be a JSON object, not {jsonType(body)}")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise InvalidField("type", "is required (a string)")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise InvalidField("type", f"{kind!r} is not a message type; known: {', '.join(TYPES)}")
    message: Message = parser(body)
    return message


def encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode("utf-8")
