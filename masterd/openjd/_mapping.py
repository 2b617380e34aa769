"""
An instantiated OpenJD job as masterd's own: each step a layer (its name
kept, its dependencies whole-layer dependencies), each combination of its
parameter space a task (in openjd-model's order), its host requirements a
layer's requirements.

The functions here are pure: they take openjd-model's objects and return
plain values, and refuse what masterd cannot honour with an
L{InvalidField} (400) or an L{Unprocessable} (422, too many tasks) naming
the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec
from openjd.model import IntRangeExpr, StepParameterSpaceIterator, model_to_object
from openjd.model.v2023_09 import (
    HostRequirements,
    Step,
    StepParameterSpace,
    TaskChunksRangeConstraint,
    TaskParameterType,
)

from masterd.errors import InvalidField, Unprocessable
from masterd.jobs.frames import MAX_FRAME, formatFrames
from masterd.schema._paths import join

#: The standard amounts masterd maps: name -> (minimum key, maximum key);
#: None where masterd has no such requirement.
STANDARD_AMOUNTS: dict[str, tuple[str, str | None]] = {
    "amount.worker.vcpu": ("cpus", "max_cpus"),
    "amount.worker.memory": ("ram_mb", "max_ram_mb"),
    "amount.worker.gpu": ("gpus", "max_gpus"),
    "amount.worker.gpu.memory": ("gpu_memory_mb", None),
}
#: The standard attributes masterd maps: name -> (key, the values it knows).
STANDARD_ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "attr.worker.os.family": ("os_family", ("linux", "windows", "macos")),
    "attr.worker.cpu.arch": ("cpu_arch", ("x86_64", "arm64")),
}
#: The scopes OpenJD reserves for its own capabilities (amount.worker.*,
#: attr.job.*, ...): one masterd does not map is refused, not ignored.
_RESERVED = ("worker", "job", "step", "task")


def _scope(name: str) -> str:
    """
    The first identifier after "attr." or "amount." (a vendor prefix, as in
    "vendor:attr.x", makes the name a custom one).
    """
    if ":" in name:
        return ""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _number(value: Decimal | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def _atLeast(value: Decimal) -> int:
    return math.ceil(value)


def _atMost(value: Decimal) -> int:
    return math.floor(value)


def hostRequirements(requirements: HostRequirements | None, field: str) -> dict[str, Any]:
    """
    A step's host requirements as masterd's requirements (contract part 2):
    C{cpus}/C{max_cpus} from amount.worker.vcpu, C{ram_mb}/C{max_ram_mb}
    from amount.worker.memory (MiB), C{gpus}/C{max_gpus} from
    amount.worker.gpu, C{gpu_memory_mb} from amount.worker.gpu.memory (and
    then at least one GPU), C{os_family} and C{cpu_arch} from
    attr.worker.os.family and attr.worker.cpu.arch, and every other
    attribute and amount in C{attributes} and C{amounts} under its full
    name. Names and values in lower case (OpenJD compares them so); a
    fractional minimum rounds up, a fractional maximum down. Only the keys
    the template asks for are in the result.

    @raise InvalidField: for a standard capability masterd cannot honour
        (amount.worker.disk.scratch, a maximum of GPU memory, an os family
        it does not know, two of them at once).
    """
    out: dict[str, Any] = {}
    if requirements is None:
        return out
    for i, amount in enumerate(requirements.amounts or ()):
        where = join(join(field, "amounts"), i)
        name = amount.name.lower()
        if name in STANDARD_AMOUNTS:
            low, high = STANDARD_AMOUNTS[name]
            if amount.min is not None:
                out[low] = _atLeast(amount.min)
            if amount.max is not None:
                if high is None:
                    raise InvalidField(
                        join(where, "max"), f"a maximum of {name} is not supported by masterd"
                    )
                out[high] = _atMost(amount.max)
        elif _scope(name) in _RESERVED:
            raise InvalidField(join(where, "name"), f"{name} is not supported by masterd")
        else:
            out.setdefault("amounts", {})[name] = {
                "min": _number(amount.min),
                "max": _number(amount.max),
            }
    for i, attribute in enumerate(requirements.attributes or ()):
        where = join(join(field, "attributes"), i)
        name = attribute.name.lower()
        anyOf = sorted({v.lower() for v in attribute.anyOf}) if attribute.anyOf else None
        allOf = sorted({v.lower() for v in attribute.allOf}) if attribute.allOf else None
        if name in STANDARD_ATTRIBUTES:
            key, known = STANDARD_ATTRIBUTES[name]
            for kind, values in (("anyOf", anyOf), ("allOf", allOf)):
                for value in values or ():
                    if value not in known:
                        raise InvalidField(
                            join(where, kind),
                            f"{value!r} is not one of masterd's values of {name}: "
                            + ", ".join(known),
                        )
            # A host has one os family and one architecture.
            allowed = set(anyOf) if anyOf is not None else set(known)
            if allOf is not None:
                if len(allOf) > 1:
                    raise InvalidField(
                        join(where, "allOf"), f"no host has more than one value of {name}"
                    )
                allowed &= set(allOf)
            if not allowed:
                raise InvalidField(where, f"no value of {name} meets both anyOf and allOf")
            out[key] = sorted(allowed)
        elif _scope(name) in _RESERVED:
            raise InvalidField(join(where, "name"), f"{name} is not supported by masterd")
        else:
            entry: dict[str, list[str]] = {}
            if anyOf is not None:
                entry["any_of"] = anyOf
            if allOf is not None:
                entry["all_of"] = allOf
            out.setdefault("attributes", {})[name] = entry
    if out.get("gpu_memory_mb") and not out.get("gpus"):
        # GPU memory is asked of the GPUs a task is given: it needs one.
        out["gpus"] = 1
    return out


# -- parameter spaces --------------------------------------------------------------

#: What a task of a layer is: its parameter set (JSON text, as stored in
#: tasks.parameters) and its frames.
#: A task's parameter set as JSON, or None where it is its frame's value of
#: the layer's C{frame_parameter} (not stored: derived where it is read),
#: and its frames.
TaskParameters = tuple[bytes | None, tuple[int, ...]]

_encode = msgspec.json.Encoder().encode


def _chunked(space: StepParameterSpace | None) -> tuple[str, Any] | None:
    if space is None:
        return None
    for name, parameter in space.taskParameterDefinitions.items():
        if parameter.type == TaskParameterType.CHUNK_INT:
            return name, parameter
    return None


def chunksOf(step: Step) -> dict[str, Any] | None:
    """
    layers.openjd.chunks: the step's CHUNK[INT] parameter and how it is to
    be chunked, or None.
    """
    found = _chunked(step.parameterSpace)
    if found is None:
        return None
    name, parameter = found
    chunks = parameter.chunks
    target = chunks.targetRuntimeSeconds
    return {
        "parameter": name,
        "default_count": int(chunks.defaultTaskCount),
        "target_runtime_s": int(target) if target is not None else None,
        "contiguous": chunks.rangeConstraint == TaskChunksRangeConstraint.CONTIGUOUS,
    }


def _rangeLength(parameter: Any) -> int:
    return len(parameter.range)


def _frameParameter(space: StepParameterSpace | None) -> str | None:
    """
    The parameter whose values are a task's frames: the space's only INT
    (or CHUNK[INT]) parameter; None when it has none or several.
    """
    if space is None:
        return None
    ints = [
        name
        for name, parameter in space.taskParameterDefinitions.items()
        if parameter.type in (TaskParameterType.INT, TaskParameterType.CHUNK_INT)
    ]
    return ints[0] if len(ints) == 1 else None


def _frames(chunk: str) -> tuple[int, ...]:
    """
    A chunk's frames: the values of its range expression, none when one is
    beyond what a frame may be.
    """
    frames = tuple(IntRangeExpr.from_str(chunk))
    if any(not -MAX_FRAME <= f <= MAX_FRAME for f in frames):
        return ()
    return frames


def taskParameters(step: Step, field: str, budget: int, maxValues: int) -> list[TaskParameters]:
    """
    One task per combination of the step's parameter space, in the order
    openjd-model's StepParameterSpaceIterator gives them; a chunked (CHUNK[INT])
    parameter in chunks of its defaultTaskCount values (contiguous or not,
    as its rangeConstraint says and the library divides them), the chunk's
    value its range expression. A step without a parameter space is one
    task with no parameters.

    @raise Unprocessable: for more than C{budget} tasks, or a chunked
        parameter of more than C{maxValues} values (checked before any task
        is made: a range of a billion values costs nothing to refuse).
    """
    space = step.parameterSpace
    chunked = _chunked(space)
    override = None
    if chunked is not None:
        name, parameter = chunked
        if _rangeLength(parameter) > maxValues:
            raise Unprocessable(
                join(field, "parameterSpace"),
                f"chunks {_rangeLength(parameter)} values of {name}, more than {maxValues}"
                " (limits.max_frames_per_job)",
            )
        # Chunks of the default count, in the space's own order: adaptive
        # sizing (targetRuntimeSeconds) is not done at submission.
        override = int(parameter.chunks.defaultTaskCount)
    single = _singleInt(space) if chunked is None else None
    if single is not None:
        return _singleIntTasks(*single, field, budget)
    iterator = StepParameterSpaceIterator(space=space, chunks_task_count_override=override)
    count = len(iterator)
    if count > budget:
        raise Unprocessable(
            join(field, "parameterSpace"),
            f"makes {count} tasks, more than {budget} (limits.max_frames_per_job, for all steps)",
        )
    frameName = _frameParameter(space)
    # Each parameter's type once (reading an enum's value per task is slow).
    types = {
        name: parameter.type.value
        for name, parameter in (space.taskParameterDefinitions.items() if space else ())
    }
    chunkFrames = frameName is not None and types[frameName] == "CHUNK[INT]"
    out: list[TaskParameters] = []
    append = out.append
    for parameterSet in iterator:
        values = {name: {"type": types[name], "value": v.value} for name, v in parameterSet.items()}
        frames: tuple[int, ...] = ()
        if frameName is not None:
            text = parameterSet[frameName].value
            if chunkFrames:
                frames = _frames(text)
            else:
                frame = int(text)
                frames = (frame,) if -MAX_FRAME <= frame <= MAX_FRAME else ()
        append((_encode(values), frames))
    return out


def _singleInt(space: StepParameterSpace | None) -> tuple[str, Any] | None:
    """
    The space's parameter when it is its only one, an INT, combined with
    nothing: the most common space (a frame range), whose tasks are its
    values in order, made here without the iterator (a third of the time
    of a submission of 100,000 tasks). The same tasks as the iterator's:
    tests/test_openjd_intake.py compares them.
    """
    if space is None or len(space.taskParameterDefinitions) != 1:
        return None
    [(name, parameter)] = space.taskParameterDefinitions.items()
    if parameter.type != TaskParameterType.INT:
        return None
    if space.combination is not None and space.combination.strip() != name:
        return None
    return name, parameter.range


def _singleIntTasks(name: str, values: Any, field: str, budget: int) -> list[TaskParameters]:
    # Counted before a value is made: a range of two billion costs nothing
    # to refuse.
    if len(values) > budget:
        raise Unprocessable(
            join(field, "parameterSpace"),
            f"makes {len(values)} tasks, more than {budget} (limits.max_frames_per_job, for all"
            " steps)",
        )
    frames = [int(v) for v in values]
    if all(-MAX_FRAME <= f <= MAX_FRAME for f in frames):
        # Each task's set is its frame's value of the layer's frame_parameter,
        # derived where it is read: 100,000 jsonb values cost PostgreSQL half
        # a second to store.
        return [(None, (f,)) for f in frames]
    # A value beyond what a frame may be: every set stored, as JSON.
    head = b"{" + _encode(name) + b':{"type":"INT","value":"'
    tail = b'"}}'
    return [
        (b"%s%d%s" % (head, f, tail), (f,) if -MAX_FRAME <= f <= MAX_FRAME else ()) for f in frames
    ]


def adaptive(chunks: dict[str, Any], tasks: Sequence[TaskParameters], budget: int) -> bool:
    """
    Whether a chunked layer's chunks are resized as they are claimed
    (masterd.scheduler.chunking): when its step sets a target runtime, every
    chunk's values are frames, and one task per value would still be within
    the job's C{budget} of tasks (the most a layer can be split into).
    """
    if chunks.get("target_runtime_s") is None:
        return False
    values = 0
    for _, frames in tasks:
        if not frames:
            return False
        values += len(frames)
    return values <= budget


def layerFrames(tasks: Sequence[TaskParameters]) -> str:
    """
    The layer's frames (for its document), in masterd's frame spec: every
    frame of its tasks once, in order; empty when its tasks have none.
    """
    frames = list(dict.fromkeys(f for _, taskFrames in tasks for f in taskFrames))
    return formatFrames(frames) if frames else ""


def stepOpenJD(step: Step) -> dict[str, Any]:
    """
    layers.openjd: what an agent needs of the step (besides its task's
    parameters), each model as model_to_object writes it.
    """
    single = _singleInt(step.parameterSpace) if _chunked(step.parameterSpace) is None else None
    return {
        "script": model_to_object(model=step.script),
        "environments": [model_to_object(model=e) for e in step.stepEnvironments or ()],
        "chunks": chunksOf(step),
        # A task of this layer with no stored parameter set has this INT
        # parameter, of its frame's value (masterd.jobs.views.TASK_PARAMETERS).
        "frame_parameter": single[0] if single is not None else None,
    }
