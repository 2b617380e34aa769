"""
A submission's meaning, checked after its shape: the declared types
(L{masterd.jobs.models}) have already refused every wrong type, range and
unknown field; what is left are the rules no type can state (frame specs,
placeholders, which fields go together), each a L{InvalidField} naming the
field. Nothing is written until the whole submission has been checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from attrs import Factory, frozen
from openjd.model import validate_amount_capability_name, validate_attribute_capability_name

from masterd.errors import InvalidField, Unprocessable

from .command import CommandError, checkArgument
from .frames import FrameSpecError, chunkFrames, formatFrames, parseFrames
from .models import (
    AmountRequirement,
    AttributeRequirement,
    DependencyModel,
    JobDependencyModel,
    JobPatch,
    JobSubmission,
    RequirementsModel,
)


@frozen
class Requirements:
    cpus: int = 0
    ram_mb: int = 0
    gpus: int = 0
    tags: tuple[str, ...] = ()
    gpu_memory_mb: int = 0
    #: The capabilities beyond the minimums (masterd.jobs.capabilities):
    #: maximums, os family, architecture, attributes, amounts; names and
    #: values in lower case.
    max_cpus: int | None = None
    max_ram_mb: int | None = None
    max_gpus: int | None = None
    os_family: tuple[str, ...] = ()
    cpu_arch: tuple[str, ...] = ()
    attributes: dict[str, dict[str, list[str]]] = Factory(dict)
    amounts: dict[str, dict[str, float | None]] = Factory(dict)


@frozen
class TaskSpec:
    frames: tuple[int, ...]
    command: tuple[str, ...] | None = None
    #: An OpenJD task's parameter set, as JSON (tasks.parameters).
    parameters: bytes | None = None


@frozen
class DependencySpec:
    """
    A checked dependency: on a layer of the same job (C{layer}, its index)
    or on a job (C{job}, its id); C{mode} is "layer", "job" or "frame";
    C{field} names it in the submission, for errors found by the store.
    """

    mode: str
    on_failure: str
    field: str
    layer: int | None = None
    job: int | None = None


@frozen
class LayerSpec:
    name: str
    command: tuple[str, ...] | None
    tasks: tuple[TaskSpec, ...]
    frames: str
    chunk: int
    env: dict[str, str]
    cwd: str | None
    requirements: Requirements
    limits: tuple[str, ...]
    max_running: int | None
    timeout_s: int | None
    stall_timeout_s: int | None
    depends_on: tuple[DependencySpec, ...] = ()
    #: An OpenJD step's script, environments and chunking (layers.openjd).
    openjd: dict[str, Any] | None = None


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
    layers: tuple[LayerSpec, ...] = ()
    project: str | None = None
    limits: tuple[str, ...] = ()
    max_running: int | None = None
    preemptible: bool = False
    stall_timeout_s: int | None = None
    #: Job dependencies given in full (frame by frame, or with on_failure).
    job_dependencies: tuple[DependencySpec, ...] = ()
    #: An OpenJD job's name, parameters, environments (jobs.openjd).
    openjd: dict[str, Any] | None = None

    def allTasks(self) -> int:
        return sum(len(layer.tasks) for layer in self.layers)


def checkCommand(command: Sequence[str], field: str) -> tuple[str, ...]:
    for i, argument in enumerate(command):
        try:
            checkArgument(argument)
        except CommandError as e:
            raise InvalidField(f"{field}[{i}]", str(e)) from None
    return tuple(command)


def requirements(model: RequirementsModel, field: str = "requirements") -> Requirements:
    if model.gpu_memory_mb and not model.gpus:
        # It would never be placed: memory is asked of the GPUs it is given.
        raise Unprocessable(f"{field}.gpu_memory_mb", "needs gpus of at least 1")
    for name in ("cpus", "ram_mb", "gpus"):
        checkMaximum(getattr(model, name), getattr(model, f"max_{name}"), f"{field}.max_{name}")
    return Requirements(
        model.cpus,
        model.ram_mb,
        model.gpus,
        tuple(sorted(set(model.tags))),
        model.gpu_memory_mb,
        model.max_cpus,
        model.max_ram_mb,
        model.max_gpus,
        tuple(sorted(set(model.os_family))),
        tuple(sorted(set(model.cpu_arch))),
        attributeRequirements(model.attributes, f"{field}.attributes"),
        amountRequirements(model.amounts, f"{field}.amounts"),
    )


def checkMaximum(minimum: int, maximum: int | None, field: str) -> None:
    if maximum is not None and maximum < minimum:
        raise Unprocessable(field, f"must be at least the minimum ({minimum})")


def _lowerNames(names: Iterable[str], field: str) -> list[tuple[str, str]]:
    """
    Each name with its lower case form (names are compared in lower case):
    two that differ only in case are one name given twice.
    """
    seen: dict[str, str] = {}
    for name in names:
        lower = name.lower()
        if lower in seen:
            raise Unprocessable(f"{field}.{name}", f"is {seen[lower]!r} again (names ignore case)")
        seen[lower] = name
    return [(name, lower) for lower, name in seen.items()]


def attributeRequirements(
    given: Mapping[str, AttributeRequirement], field: str
) -> dict[str, dict[str, list[str]]]:
    """
    Attribute requirements in lower case, each value once, checked with
    OpenJD's own rule for the names.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for name, lower in _lowerNames(given, field):
        try:
            validate_attribute_capability_name(capability_name=lower, standard_capabilities=())
        except ValueError as e:
            raise InvalidField(f"{field}.{name}", str(e)) from None
        requirement = given[name]
        out[lower] = {
            key: sorted({v.lower() for v in values})
            for key, values in (("any_of", requirement.any_of), ("all_of", requirement.all_of))
            if not isinstance(values, msgspec.UnsetType)
        }
    return dict(sorted(out.items()))


def amountRequirements(
    given: Mapping[str, AmountRequirement], field: str
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, lower in _lowerNames(given, field):
        try:
            validate_amount_capability_name(capability_name=lower, standard_capabilities=())
        except ValueError as e:
            raise InvalidField(f"{field}.{name}", str(e)) from None
        requirement = given[name]
        if (requirement.min is not None and requirement.max is not None
                and requirement.max < requirement.min):  # fmt: skip
            raise Unprocessable(f"{field}.{name}.max", f"must be at least min ({requirement.min})")
        out[lower] = {"min": requirement.min, "max": requirement.max}
    return dict(sorted(out.items()))


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
    if job.openjd is not None:
        # Imported here: openjd-model (pydantic) is loaded for OpenJD jobs
        # only, and masterd.openjd builds on this module.
        from masterd.openjd import openjdJobSpec

        return openjdJobSpec(job, maxFrames)
    if job.title is None:
        raise InvalidField("title", "is required")
    wholeJobs, jobDependencies = _jobDependencies(job.depends_on, "depends_on")
    limits = _limits(job.limits, "limits")
    if job.layers is not None:
        for key in ("command", "frames", "chunk", "tasks"):
            if getattr(job, key) is not None:
                raise InvalidField(key, "cannot be given together with layers (give it per layer)")
        layers = _layers(job, limits, maxFrames)
        command = None
        tasks: list[TaskSpec] = []
    else:
        command = None
        if job.command is not None:
            command = checkCommand(job.command, "command")
        elif job.tasks is None:
            raise InvalidField("command", "is required unless tasks give their own")
        tasks = _tasks(job, maxFrames)
        frames = ""
        if job.frames is not None:
            frames = job.frames if isinstance(job.frames, str) else formatFrames(job.frames)
        layers = (
            LayerSpec(
                name="main",
                command=command,
                tasks=tuple(tasks),
                frames=frames,
                chunk=job.chunk or 1,
                env=dict(job.env),
                cwd=job.cwd,
                requirements=requirements(job.requirements),
                limits=limits,
                max_running=None,
                timeout_s=job.task_timeout_s,
                stall_timeout_s=job.stall_timeout_s,
            ),
        )
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
        depends_on=wholeJobs,
        paused=job.paused,
        metadata=job.metadata,
        layers=layers,
        project=job.project,
        limits=limits,
        max_running=job.max_running,
        preemptible=job.preemptible,
        stall_timeout_s=job.stall_timeout_s,
        job_dependencies=jobDependencies,
    )


def _limits(names: Sequence[str], field: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _jobDependencies(
    given: Sequence[int | JobDependencyModel], field: str
) -> tuple[tuple[int, ...], tuple[DependencySpec, ...]]:
    """
    A job's own dependencies: on other jobs only. Plain ids (and whole
    dependencies that wait on failure) are also kept as the job's parents.
    """
    whole: list[int] = []
    full: list[DependencySpec] = []
    for i, item in enumerate(given):
        model = (
            DependencyModel(job=item.job, mode=item.mode, on_failure=item.on_failure)
            if isinstance(item, JobDependencyModel)
            else DependencyModel(job=item)
        )
        spec = _dependency(model, f"{field}[{i}]", layers=None)
        assert spec.job is not None
        if spec.mode == "job":
            whole.append(spec.job)
        full.append(spec)
    return tuple(dict.fromkeys(whole)), tuple(full)


def _dependency(
    item: str | int | DependencyModel, field: str, layers: dict[str, int] | None
) -> DependencySpec:
    if isinstance(item, str):
        item = DependencyModel(layer=item)
    elif isinstance(item, int):
        item = DependencyModel(job=item)
    if (item.layer is None) == (item.job is None):
        raise InvalidField(field, 'names either a "layer" or a "job"')
    if item.layer is not None:
        if layers is None:
            raise InvalidField(f"{field}.layer", "a job depends on jobs; layers depend on layers")
        if item.layer not in layers:
            raise Unprocessable(f"{field}.layer", f"no layer named {item.layer!r} in this job")
        mode = item.mode or "layer"
        if mode not in ("layer", "frame"):
            raise InvalidField(f"{field}.mode", 'is "layer" or "frame" for a layer')
        return DependencySpec(mode, item.on_failure, field, layer=layers[item.layer])
    mode = item.mode or "job"
    if mode not in ("job", "frame"):
        raise InvalidField(f"{field}.mode", 'is "job" or "frame" for a job')
    return DependencySpec(mode, item.on_failure, field, job=item.job)


def _layers(
    job: JobSubmission, jobLimits: tuple[str, ...], maxFrames: int
) -> tuple[LayerSpec, ...]:
    assert job.layers is not None
    indexes: dict[str, int] = {}
    for i, layer in enumerate(job.layers):
        if layer.name in indexes:
            raise Unprocessable(f"layers[{i}].name", f"{layer.name!r} is the name of another layer")
        indexes[layer.name] = i
    specs: list[LayerSpec] = []
    total = 0
    for i, layer in enumerate(job.layers):
        where = f"layers[{i}]"
        command = checkCommand(layer.command, f"{where}.command")
        frames = _frames(layer.frames, f"{where}.frames", maxFrames)
        total += len(frames)
        if total > maxFrames:
            raise Unprocessable("layers", f"name more than {maxFrames} frames in all")
        chunk = layer.chunk or 1
        dependencies: list[DependencySpec] = []
        for k, item in enumerate(layer.depends_on):
            dependency = _dependency(item, f"{where}.depends_on[{k}]", indexes)
            if dependency.layer == i:
                raise Unprocessable(dependency.field + ".layer", "a layer cannot depend on itself")
            dependencies.append(dependency)
        specs.append(
            LayerSpec(
                name=layer.name,
                command=command,
                tasks=tuple(TaskSpec(tuple(group)) for group in chunkFrames(frames, chunk)),
                frames=layer.frames if isinstance(layer.frames, str) else formatFrames(frames),
                chunk=chunk,
                env={**job.env, **layer.env},
                cwd=layer.cwd if layer.cwd is not None else job.cwd,
                requirements=(
                    requirements(layer.requirements, f"{where}.requirements")
                    if layer.requirements is not None
                    else requirements(job.requirements)
                ),
                limits=tuple(dict.fromkeys((*jobLimits, *layer.limits))),
                max_running=layer.max_running,
                timeout_s=layer.timeout_s if layer.timeout_s is not None else job.task_timeout_s,
                stall_timeout_s=(
                    layer.stall_timeout_s
                    if layer.stall_timeout_s is not None
                    else job.stall_timeout_s
                ),
                depends_on=tuple(dependencies),
            )
        )
    _checkCycles(specs)
    for checked in specs:
        for dependency in checked.depends_on:
            if dependency.mode == "frame" and dependency.layer is not None:
                parent = specs[dependency.layer]
                mine = {f for task in checked.tasks for f in task.frames}
                if not any(f in mine for task in parent.tasks for f in task.frames):
                    raise Unprocessable(
                        dependency.field + ".mode",
                        f"layers {checked.name!r} and {parent.name!r} have no frame in common",
                    )
    return tuple(specs)


def _checkCycles(layers: Sequence[LayerSpec]) -> None:
    """
    Refuse a cycle of layers, naming a dependency on it.
    """
    state = [0] * len(layers)  # 0: not seen, 1: on the path, 2: done

    def visit(i: int) -> None:
        state[i] = 1
        for dependency in layers[i].depends_on:
            j = dependency.layer
            if j is None:
                continue
            if state[j] == 1:
                raise Unprocessable(
                    dependency.field + ".layer",
                    f"makes a cycle: {layers[j].name!r} already depends on {layers[i].name!r}",
                )
            if state[j] == 0:
                visit(j)
        state[i] = 2

    for i in range(len(layers)):
        if state[i] == 0:
            visit(i)


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
        for key in ("os_family", "cpu_arch"):
            if key in merged:
                merged[key] = tuple(sorted(set(merged[key])))
        if "attributes" in merged:
            merged["attributes"] = attributeRequirements(
                merged["attributes"], "requirements.attributes"
            )
        if "amounts" in merged:
            merged["amounts"] = amountRequirements(merged["amounts"], "requirements.amounts")
        for name in ("cpus", "ram_mb", "gpus"):
            # Both given: checked here; one given: against the stored other
            # by the store (a layer's own minimum may differ from the job's).
            if name in merged and merged.get(f"max_{name}") is not None:
                checkMaximum(merged[name], merged[f"max_{name}"], f"requirements.max_{name}")
        changes["requirements"] = merged
    if changes.get("stop_running"):
        # Stopping the running tasks pauses the job (else they would be
        # handed out again at once).
        if changes.get("paused") is False:
            raise InvalidField("stop_running", 'cannot go with "paused": false')
        changes["paused"] = True
    return changes
