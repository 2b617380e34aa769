"""
A job's layers: what one is submitted as (L{LayerSpec}), what the master
shows of one (L{Layer}), and what a layer or a job waits for
(L{Dependency}).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._base import (
    FINISHED_JOB_STATES,
    Record,
    Requirements,
    TaskCounts,
    iterate_pages,
    ref_href,
    ref_id,
    requirements_json,
)

if TYPE_CHECKING:
    from ._jobs import Task

MODES = ("layer", "job", "frame")
ON_FAILURE = ("wait", "cancel")


@dataclass(frozen=True)
class Dependency:
    """
    What a layer (or a whole job) waits for: a layer of the same job, by
    name, or another job, by id; as a whole (C{mode} C{"layer"} or
    C{"job"}, the default) or frame by frame (C{mode="frame"}: a task
    waits only for the parent's tasks that cover its frames). A parent
    that fails for good leaves its dependents waiting (C{on_failure}
    C{"wait"}) or cancels them (C{"cancel"}).

        Dependency(layer="render", mode="frame")
        Dependency(job=12, mode="frame", on_failure="cancel")

    Read from a job's document, C{satisfied} says whether a whole
    dependency is met (frame dependencies are met task by task).

    @raise ValueError: unless exactly one of C{layer} and C{job} is given.
    """

    layer: str | None = None
    job: int | None = None
    mode: str | None = None
    on_failure: str = "wait"
    satisfied: bool = False

    def __post_init__(self) -> None:
        if (self.layer is None) == (self.job is None):
            raise ValueError("a dependency names a layer or a job, not both or neither")

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Dependency:
        job = raw.get("job")
        # The master refers to a job as {"id", "href"}; a body gives its id.
        job_id = ref_id(job) if isinstance(job, Mapping) else job
        return cls(
            layer=raw.get("layer"),
            job=int(job_id) if job_id is not None else None,
            mode=raw.get("mode"),
            on_failure=str(raw.get("on_failure") or "wait"),
            satisfied=bool(raw.get("satisfied")),
        )

    @property
    def frame_by_frame(self) -> bool:
        return self.mode == "frame"

    def to_json(self) -> dict[str, Any]:
        """
        As C{POST /api/v1/jobs} takes it: only what differs from the
        defaults (C{satisfied} is the master's to say).
        """
        body: dict[str, Any] = {"layer": self.layer} if self.layer is not None else {}
        if self.job is not None:
            body["job"] = self.job
        if self.mode is not None:
            body["mode"] = self.mode
        if self.on_failure != "wait":
            body["on_failure"] = self.on_failure
        return body


def dependency_json(item: Any) -> Any:
    """
    One entry of a C{depends_on} list as the API takes it: a name or an id
    as it is, a model as its id, a L{Dependency} or a dict as JSON (a model
    as its C{"job"} becomes its id).
    """
    if isinstance(item, Dependency):
        return item.to_json()
    if isinstance(item, Record):
        return item.raw["id"]
    if isinstance(item, Mapping):
        body = dict(item)
        if isinstance(body.get("job"), Record):
            body["job"] = body["job"].raw["id"]
        return body
    return item


def dependencies_json(items: Sequence[Any]) -> list[Any]:
    return [dependency_json(item) for item in items]


@dataclass(frozen=True, init=False)
class LayerSpec:
    """
    One layer of a job to submit: a command over frames, split into tasks
    of C{chunk} frames (a job with layers has no top-level command, frames
    or chunk). What else it leaves out it takes from the job
    (requirements, env, cwd, timeouts); its C{limits} are added to the
    job's. C{depends_on} takes layer names, job ids, L{Job}s,
    L{Dependency}s or dicts. Also accepted as a plain dict by
    C{Client.submit(layers=...)}.

        LayerSpec("comp", command=["nuke", "-F", "{frame}", "comp.nk"], frames="1-100",
                  limits=["nuke"], depends_on=[Dependency(layer="render", mode="frame")])
    """

    name: str
    command: Sequence[str] | None = None
    frames: str | Sequence[int] | None = None
    chunk: int | None = None
    requirements: Requirements | Mapping[str, Any] | None = None
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    limits: Sequence[str] | None = None
    max_running: int | None = None
    timeout_s: int | None = None
    stall_timeout_s: int | None = None
    depends_on: Sequence[Any] | None = None

    # Everything but the name by keyword only, written out: dataclasses'
    # KW_ONLY is Python 3.10's, and the client runs on 3.9.
    def __init__(
        self,
        name: str,
        *,
        command: Sequence[str] | None = None,
        frames: str | Sequence[int] | None = None,
        chunk: int | None = None,
        requirements: Requirements | Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        limits: Sequence[str] | None = None,
        max_running: int | None = None,
        timeout_s: int | None = None,
        stall_timeout_s: int | None = None,
        depends_on: Sequence[Any] | None = None,
    ) -> None:
        given = dict(locals())
        del given["self"]
        for key, value in given.items():
            object.__setattr__(self, key, value)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if self.command is not None:
            body["command"] = list(self.command)
        if self.frames is not None:
            body["frames"] = self.frames if isinstance(self.frames, str) else list(self.frames)
        if self.requirements is not None:
            body["requirements"] = requirements_json(self.requirements)
        if self.env is not None:
            body["env"] = dict(self.env)
        if self.limits is not None:
            body["limits"] = list(self.limits)
        if self.depends_on:
            body["depends_on"] = dependencies_json(self.depends_on)
        plain = {
            "chunk": self.chunk,
            "cwd": self.cwd,
            "max_running": self.max_running,
            "timeout_s": self.timeout_s,
            "stall_timeout_s": self.stall_timeout_s,
        }
        body.update({key: value for key, value in plain.items() if value is not None})
        return body


def layer_json(value: LayerSpec | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, LayerSpec):
        return value.to_json()
    body = dict(value)
    if isinstance(body.get("requirements"), Requirements):
        body["requirements"] = body["requirements"].to_json()
    if isinstance(body.get("depends_on"), Sequence) and not isinstance(body["depends_on"], str):
        body["depends_on"] = dependencies_json(body["depends_on"])
    return body


class Layer(Record):
    """
    A layer of a job as the master shows it: its own command, frames and
    requirements (the job's where it gave none), its state and task counts
    (kept by the database), and what it waits for. No href of its own:
    C{job.refresh()} reads it again.
    """

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def index(self) -> int:
        """
        Its place in the job's list of layers, from 0.
        """
        return int(self.raw.get("index") or 0)

    @property
    def state(self) -> str:
        """
        Derived from its tasks as a job's is: C{waiting}, C{queued},
        C{running}, C{paused}, C{done}, C{failed} or C{canceled}.
        """
        return str(self.raw["state"])

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_JOB_STATES

    @property
    def command(self) -> list[str] | None:
        command = self.raw.get("command")
        return list(command) if command is not None else None

    @property
    def frames(self) -> str:
        """
        Its frames as a spec (C{"1-100"}).
        """
        return str(self.raw.get("frames") or "")

    @property
    def chunk(self) -> int:
        return int(self.raw.get("chunk") or 1)

    @property
    def env(self) -> dict[str, str]:
        return dict(self.raw.get("env") or {})

    @property
    def cwd(self) -> str | None:
        return self.raw.get("cwd")

    @property
    def requirements(self) -> Requirements:
        return Requirements.from_json(self.raw.get("requirements"))

    @property
    def limits(self) -> list[str]:
        """
        The limits each of its tasks takes: the job's and its own.
        """
        return list(self.raw.get("limits") or [])

    @property
    def max_running(self) -> int | None:
        return self.raw.get("max_running")

    @property
    def timeout_s(self) -> int | None:
        return self.raw.get("timeout_s")

    @property
    def stall_timeout_s(self) -> int | None:
        return self.raw.get("stall_timeout_s")

    @property
    def depends_on(self) -> list[Dependency]:
        return [Dependency.from_json(raw) for raw in self.raw.get("depends_on") or []]

    @property
    def task_counts(self) -> TaskCounts:
        return TaskCounts.from_json(self.raw.get("tasks"))

    @property
    def usage(self) -> dict[str, Any] | None:
        """
        What its attempts used, as L{Job.usage} says, and C{ram_exceeded}: a
        sentence when attempts peaked above the memory it asks for.
        """
        usage = self.raw.get("usage")
        return dict(usage) if usage else None

    @property
    def progress(self) -> float:
        """
        Done tasks over all its tasks, 0 to 1.
        """
        counts = self.task_counts
        return counts.done / counts.total if counts.total else 0.0

    def tasks(self, state: str | None = None, limit: int | None = None) -> Iterator[Task]:
        """
        The layer's tasks in index order, or those in C{state}; C{limit}
        is the page size, as for C{Job.tasks}.
        """
        from ._jobs import Task

        href = ref_href(self.raw.get("tasks"), "tasks")
        query = {"state": state, "limit": limit}
        return iterate_pages(self._transport, href, query, lambda raw: Task(self._transport, raw))

    def __repr__(self) -> str:
        return f"<Layer {self.raw.get('name')} {self.raw.get('state')}>"
