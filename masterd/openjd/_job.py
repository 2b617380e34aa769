"""
An OpenJD submission as masterd's internal job spec (L{masterd.jobs.spec.JobSpec}):
the template instantiated by openjd-model, each step a layer, each
combination of its parameter space a task; what the job keeps of the
template for its agents in C{openjd} (jobs.openjd, layers.openjd,
tasks.parameters: migration 0016).
"""

from __future__ import annotations

from typing import Any

import msgspec
from openjd.model import model_to_object

from masterd.errors import InvalidField
from masterd.jobs.models import JobSubmission, RequirementsModel
from masterd.jobs.spec import (
    DependencySpec,
    JobSpec,
    LayerSpec,
    Requirements,
    TaskSpec,
    _jobDependencies,
    _limits,
    requirements,
)
from masterd.schema._paths import join

from ._mapping import adaptive, hostRequirements, layerFrames, stepOpenJD, taskParameters
from ._template import TEMPLATE, instantiate

#: The job fields an OpenJD submission cannot have: the template says them.
REFUSED = ("title", "command", "frames", "chunk", "tasks", "layers", "cwd")

_REQUIREMENT_KEYS = frozenset(RequirementsModel.__struct_fields__)


def layerRequirements(mapped: dict[str, Any], job: RequirementsModel, field: str) -> Requirements:
    """
    The one place where a step's mapped host requirements (L{hostRequirements})
    become a layer's: over the job's own C{requirements} (what the template
    does not ask for, such as tags, stays the job's), each key the template
    sets replaces the job's. Only the keys RequirementsModel declares are
    passed (all of them since capabilities, part 2, landed; a key it does
    not declare would be dropped here and nowhere else), checked by its
    types and by the native rules (L{masterd.jobs.spec.requirements}).
    """
    merged = msgspec.to_builtins(job)
    merged.update({k: v for k, v in mapped.items() if k in _REQUIREMENT_KEYS})
    try:
        model = msgspec.convert(merged, RequirementsModel)
    except msgspec.ValidationError as e:
        raise InvalidField(field, f"cannot be met by masterd: {e}") from None
    return requirements(model, field)


def openjdJobSpec(job: JobSubmission, maxFrames: int = 1_000_000) -> JobSpec:
    """
    The submission's OpenJD template, instantiated with its parameter
    values, as a job of one layer per step.

    @raise InvalidField: naming the field at fault, with openjd-model's
        message for the template and the parameters.
    """
    assert job.openjd is not None
    for key in REFUSED:
        if getattr(job, key) is not None:
            raise InvalidField(key, "cannot be given together with openjd (the template says it)")
    template, values, created = instantiate(job.openjd.template, job.openjd.parameters)
    wholeJobs, jobDependencies = _jobDependencies(job.depends_on, "depends_on")
    limits = _limits(job.limits, "limits")
    indexes = {step.name: i for i, step in enumerate(created.steps)}
    layers: list[LayerSpec] = []
    budget = maxFrames
    for i, step in enumerate(created.steps):
        where = join(join(TEMPLATE, "steps"), i)
        tasks = taskParameters(step, where, budget, maxFrames)
        mapped = hostRequirements(step.hostRequirements, join(where, "hostRequirements"))
        chunks = stepOpenJD(step)
        if chunks["chunks"] is not None:
            chunks["chunks"]["adaptive"] = adaptive(chunks["chunks"], tasks, budget)
        budget -= len(tasks)
        layers.append(
            LayerSpec(
                name=step.name,
                command=None,
                tasks=tuple(TaskSpec(frames, parameters=text) for text, frames in tasks),
                frames=layerFrames(tasks),
                chunk=chunks["chunks"]["default_count"] if chunks["chunks"] else 1,
                env=dict(job.env),
                cwd=None,
                requirements=layerRequirements(
                    mapped, job.requirements, join(where, "hostRequirements")
                ),
                limits=limits,
                max_running=None,
                timeout_s=job.task_timeout_s,
                stall_timeout_s=job.stall_timeout_s,
                depends_on=tuple(
                    DependencySpec(
                        "layer",
                        "wait",
                        join(join(join(where, "dependencies"), k), "dependsOn"),
                        layer=indexes[dependency.dependsOn],
                    )
                    for k, dependency in enumerate(step.dependencies or ())
                ),
                openjd=chunks,
            )
        )
    extensions = [str(getattr(e, "value", e)) for e in template.extensions or ()]
    return JobSpec(
        title=created.name,
        command=None,
        tasks=(),
        env=dict(job.env),
        cwd=None,
        priority=job.priority,
        weight=job.weight,
        requirements=requirements(job.requirements),
        max_retries=job.max_retries,
        task_timeout_s=job.task_timeout_s,
        depends_on=wholeJobs,
        paused=job.paused,
        metadata=job.metadata,
        layers=tuple(layers),
        project=job.project,
        limits=limits,
        max_running=job.max_running,
        preemptible=job.preemptible,
        stall_timeout_s=job.stall_timeout_s,
        job_dependencies=jobDependencies,
        openjd={
            "name": created.name,
            "parameters": {
                name: {"type": value.type.value, "value": value.value}
                for name, value in values.items()
            },
            "environments": [model_to_object(model=e) for e in created.jobEnvironments or ()],
            "extensions": extensions,
        },
    )
