"""
Jobs, tasks and attempts as declared types: what a client may send (models)
and what the API answers (documents). Validation, encoding and the OpenAPI
document all come from these declarations (masterd.schema).

This module declares the submissions, patches and queries; the field types
they share with the documents (masterd.jobs._model_fields), the
requirements (masterd.jobs._model_requirements) and the documents
(masterd.jobs._model_documents) are declared beside it, to keep each
module short, and re-exported here: every declaration is imported from
masterd.jobs.models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from masterd.schema import (
    MAX_BIGINT,
    MAX_INT,
    UNSET,
    FreeObject,
    Id,
    Meta,
    Model,
    PageLimit,
    Text1K,
    Text10K,
    Title,
    Unset,
)

# Declared beside this module (see above), imported from here.
from ._model_documents import AgentRef as AgentRef
from ._model_documents import AmountRequirementDocument as AmountRequirementDocument
from ._model_documents import AssignedTask as AssignedTask
from ._model_documents import AttemptDocument as AttemptDocument
from ._model_documents import AttemptPage as AttemptPage
from ._model_documents import AttributeRequirementDocument as AttributeRequirementDocument
from ._model_documents import BlocklistEntry as BlocklistEntry
from ._model_documents import DependencyDocument as DependencyDocument
from ._model_documents import JobDocument as JobDocument
from ._model_documents import JobPage as JobPage
from ._model_documents import LayerDocument as LayerDocument
from ._model_documents import OpenJDAssignment as OpenJDAssignment
from ._model_documents import OpenJDJobPayload as OpenJDJobPayload
from ._model_documents import OpenJDStepPayload as OpenJDStepPayload
from ._model_documents import OpenJDValue as OpenJDValue
from ._model_documents import Ref as Ref
from ._model_documents import Requirements as Requirements
from ._model_documents import TaskCounts as TaskCounts
from ._model_documents import TaskDocument as TaskDocument
from ._model_documents import TaskPage as TaskPage
from ._model_fields import LIMIT_NAME_LENGTH as LIMIT_NAME_LENGTH
from ._model_fields import LIMIT_NAME_PATTERN as LIMIT_NAME_PATTERN
from ._model_fields import MAX_TASKS_PER_JOB as MAX_TASKS_PER_JOB
from ._model_fields import PROJECT_NAME_LENGTH as PROJECT_NAME_LENGTH
from ._model_fields import PROJECT_NAME_PATTERN as PROJECT_NAME_PATTERN
from ._model_fields import Argument as Argument
from ._model_fields import Chunk as Chunk
from ._model_fields import Command as Command
from ._model_fields import CommandArgument as CommandArgument
from ._model_fields import DependencyMode as DependencyMode
from ._model_fields import Env as Env
from ._model_fields import EnvName as EnvName
from ._model_fields import Frame as Frame
from ._model_fields import Frames as Frames
from ._model_fields import FrameSpec as FrameSpec
from ._model_fields import JobStateName as JobStateName
from ._model_fields import LayerName as LayerName
from ._model_fields import LimitName as LimitName
from ._model_fields import LimitNames as LimitNames
from ._model_fields import MaxRunning as MaxRunning
from ._model_fields import OnFailure as OnFailure
from ._model_fields import Path as Path
from ._model_fields import Priority as Priority
from ._model_fields import ProjectName as ProjectName
from ._model_fields import Retries as Retries
from ._model_fields import TaskStateName as TaskStateName
from ._model_fields import Timeout as Timeout
from ._model_fields import Weight as Weight
from ._model_requirements import AMOUNT_NAME_PATTERN as AMOUNT_NAME_PATTERN
from ._model_requirements import ATTRIBUTE_NAME_PATTERN as ATTRIBUTE_NAME_PATTERN
from ._model_requirements import ATTRIBUTE_VALUE_PATTERN as ATTRIBUTE_VALUE_PATTERN
from ._model_requirements import CPU_ARCHES as CPU_ARCHES
from ._model_requirements import MAX_AMOUNT as MAX_AMOUNT
from ._model_requirements import MAX_ATTRIBUTE_VALUES as MAX_ATTRIBUTE_VALUES
from ._model_requirements import MAX_CAPABILITIES as MAX_CAPABILITIES
from ._model_requirements import OS_FAMILIES as OS_FAMILIES
from ._model_requirements import Amount as Amount
from ._model_requirements import AmountName as AmountName
from ._model_requirements import AmountRequirement as AmountRequirement
from ._model_requirements import AmountRequirements as AmountRequirements
from ._model_requirements import AttributeName as AttributeName
from ._model_requirements import AttributeRequirement as AttributeRequirement
from ._model_requirements import AttributeRequirements as AttributeRequirements
from ._model_requirements import AttributeValue as AttributeValue
from ._model_requirements import AttributeValues as AttributeValues
from ._model_requirements import CpuArch as CpuArch
from ._model_requirements import CpuArches as CpuArches
from ._model_requirements import GpuMemory as GpuMemory
from ._model_requirements import MaxCount as MaxCount
from ._model_requirements import OsFamilies as OsFamilies
from ._model_requirements import OsFamily as OsFamily
from ._model_requirements import RequirementsModel as RequirementsModel
from ._model_requirements import RequirementsPatch as RequirementsPatch
from ._model_requirements import Tags as Tags

# -- what clients send -------------------------------------------------------------


class TaskSubmission(Model):
    frames: Frames
    command: Command | None = None


class DependencyModel(Model):
    """
    One dependency of a layer: on a layer of the same job (by name) or on
    another job (by id); as a whole ("layer" for a layer, "job" for a job:
    the default) or frame by frame ("frame").
    """

    __schema_rules__ = {
        "oneOf": [
            {"required": ["layer"], "properties": {
                "layer": {"type": "string"}, "job": {"type": "null"},
                "mode": {"enum": ["layer", "frame", None]}}},
            {"required": ["job"], "properties": {
                "job": {"type": "integer"}, "layer": {"type": "null"},
                "mode": {"enum": ["job", "frame", None]}}},
        ]
    }  # fmt: skip

    layer: LayerName | None = None
    job: Id | None = None
    mode: DependencyMode | None = None
    on_failure: OnFailure = "wait"


class JobDependencyModel(Model):
    """
    One dependency of a whole job, on another job: as a whole ("job", the
    default) or frame by frame ("frame").
    """

    job: Id
    mode: Literal["job", "frame"] | None = None
    on_failure: OnFailure = "wait"


#: A layer name or a job id is short for a whole dependency on it.
Dependency = LayerName | Id | DependencyModel
JobDependency = Id | JobDependencyModel


class LayerSubmission(Model):
    """
    One layer of a job: a command over frames, split into tasks of
    C{chunk} frames. What it does not say, it takes from the job.
    """

    name: LayerName
    command: Command
    frames: Frames
    chunk: Chunk | None = None
    requirements: RequirementsModel | None = None
    env: Env = {}
    cwd: Path | None = None
    limits: LimitNames = []
    max_running: MaxRunning | None = None
    timeout_s: Timeout | None = None
    stall_timeout_s: Timeout | None = None
    depends_on: Annotated[list[Dependency], Meta(max_length=100)] = []


TaskList = Annotated[list[TaskSubmission], Meta(min_length=1, max_length=MAX_TASKS_PER_JOB)]

#: The most characters an OpenJD template's text may have (the body limit,
#: limits.max_body_bytes, is usually lower).
OPENJD_TEMPLATE_CHARS = 4 * 1024 * 1024
OpenJDParameterName = Annotated[str, Meta(min_length=1, max_length=64)]
OpenJDParameterInput = Annotated[str, Meta(max_length=100_000)] | int | float


class OpenJDSubmission(Model):
    """
    An Open Job Description job template (jobtemplate-2023-09) and the
    values of its job parameters, as a submitter writes them; decoded,
    checked and instantiated with openjd-model (docs/openjd.md).
    """

    template: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=OPENJD_TEMPLATE_CHARS,
                description="The template as YAML or JSON text",
            ),
        ]
        | Annotated[dict[str, Any], Meta(description="The template as an object")]
    )
    parameters: Annotated[
        dict[OpenJDParameterName, OpenJDParameterInput],
        Meta(
            max_length=1000,
            description="Job parameter values by name: strings or numbers, as the template's "
            "types take them; parameters not given take their defaults",
        ),
    ] = {}


class JobSubmission(Model):
    """
    A job: a command over frames (split into tasks of C{chunk} frames), or
    explicit C{tasks}.
    """

    __freeform__ = ("metadata",)

    #: Required, except with C{openjd} (whose job name is the title).
    title: Title | None = None
    command: Command | None = None
    frames: Frames | None = None
    chunk: Chunk | None = None
    tasks: (
        Annotated[list[TaskSubmission], Meta(min_length=1, max_length=MAX_TASKS_PER_JOB)] | None
    ) = None
    env: Env = {}
    cwd: Path | None = None
    priority: Priority = 50
    weight: Weight = 1
    requirements: RequirementsModel = msgspec.field(default_factory=RequirementsModel)
    max_retries: Retries = 3
    task_timeout_s: Timeout | None = None
    stall_timeout_s: Timeout | None = None
    depends_on: Annotated[list[JobDependency], Meta(max_length=1000)] = []
    paused: bool = False
    metadata: FreeObject = {}
    layers: Annotated[list[LayerSubmission], Meta(min_length=1, max_length=100)] | None = None
    project: ProjectName | None = None
    limits: LimitNames = []
    max_running: MaxRunning | None = None
    preemptible: bool = False
    #: Instead of title, command, frames, chunk, tasks, layers and cwd.
    openjd: OpenJDSubmission | None = None


_ARRAY, _NULL, _STRING = {"type": "array"}, {"type": "null"}, {"type": "string"}

#: What no field's type says: a job is a command over frames, or a command
#: with explicit tasks, or tasks that each have their own command, or
#: layers, or an OpenJD template.
JOB_SHAPES = {
    "anyOf": [
        {
            "required": ["title", "command", "frames"],
            "properties": {"title": _STRING, "command": _ARRAY,
                           "frames": {"type": ["string", "array"]},
                           "tasks": _NULL, "layers": _NULL, "openjd": _NULL},
        },
        {
            "required": ["title", "command", "tasks"],
            "properties": {"title": _STRING, "command": _ARRAY, "tasks": _ARRAY, "frames": _NULL,
                           "chunk": _NULL, "layers": _NULL, "openjd": _NULL},
        },
        {
            "required": ["title", "tasks"],
            "properties": {
                "title": _STRING, "command": _NULL, "frames": _NULL, "chunk": _NULL,
                "layers": _NULL, "openjd": _NULL,
                "tasks": {"type": "array",
                          "items": {"required": ["command"], "properties": {"command": _ARRAY}}},
            },
        },
        {
            "required": ["title", "layers"],
            "properties": {"title": _STRING, "layers": _ARRAY, "command": _NULL, "frames": _NULL,
                           "chunk": _NULL, "tasks": _NULL, "openjd": _NULL},
        },
        {
            "required": ["openjd"],
            "properties": {"openjd": {"type": "object"}, "title": _NULL, "command": _NULL,
                           "frames": _NULL, "chunk": _NULL, "tasks": _NULL, "layers": _NULL,
                           "cwd": _NULL},
        },
    ]
}  # fmt: skip

#: A stopping pause cannot be an unpause.
PATCH_RULES = {
    "not": {
        "required": ["stop_running", "paused"],
        "properties": {"stop_running": {"const": True}, "paused": {"const": False}},
    }
}


class JobPatch(Model):
    title: Title | msgspec.UnsetType = msgspec.UNSET
    priority: Priority | msgspec.UnsetType = msgspec.UNSET
    weight: Weight | msgspec.UnsetType = msgspec.UNSET
    paused: bool | msgspec.UnsetType = msgspec.UNSET
    stop_running: bool | msgspec.UnsetType = msgspec.UNSET
    max_retries: Retries | msgspec.UnsetType = msgspec.UNSET
    requirements: RequirementsPatch | msgspec.UnsetType = msgspec.UNSET
    project: ProjectName | msgspec.UnsetType = msgspec.UNSET
    max_running: MaxRunning | msgspec.UnsetType | None = msgspec.UNSET
    preemptible: bool | msgspec.UnsetType = msgspec.UNSET


class TaskRetry(Model):
    #: Render a done task again too.
    done: bool = False


JobSubmissionBody = Annotated[JobSubmission, Meta(extra_json_schema=JOB_SHAPES)]
JobPatchBody = Annotated[JobPatch, Meta(extra_json_schema=PATCH_RULES)]


# -- queries ------------------------------------------------------------------------

Limit = PageLimit

#: An agent id as a query or path parameter: a UUID, written in ASCII.
AgentIdText = Annotated[
    str,
    Meta(
        pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
        r"[0-9a-fA-F]{12}$",
        description="An agent id (a UUID)",
    ),
]


def given(value: Any) -> Any:
    """
    A query parameter's value, or None when it was not given.
    """
    return None if value is msgspec.UNSET else value


#: The orders GET /api/v1/jobs can list in: a column, "-" first for
#: descending; ties always go by id, newest first.
JobSort = Literal[
    "-id", "id", "priority", "-priority", "title", "-title", "state", "-state", "owner",
    "-owner", "updated", "-updated",
]  # fmt: skip
DEFAULT_JOB_SORT = "-id"
MAX_JOB_OFFSET = 100_000


class JobQuery(Model):
    state: JobStateName | Unset = UNSET
    owner: Annotated[str, Meta(max_length=255)] | Unset = UNSET
    project: Annotated[str, Meta(max_length=255)] | Unset = UNSET
    q: (
        Annotated[
            str,
            Meta(
                max_length=255,
                description="Jobs whose title holds this text, in any case (% and _ are "
                "literal); all digits: also the job with that id",
            ),
        ]
        | Unset
    ) = UNSET
    sort: (
        Annotated[
            JobSort,
            Meta(
                description='The order: a field, "-" first for descending (updated: '
                "updated_at); ties go by id, newest first. Default -id"
            ),
        ]
        | Unset
    ) = UNSET
    limit: Limit = 50
    offset: Annotated[
        int,
        Meta(
            ge=0,
            le=MAX_JOB_OFFSET,
            description="Jobs to skip (the next href of a sorted listing uses it)",
        ),
    ] = 0
    after: (
        Annotated[
            int,
            Meta(
                ge=1,
                le=MAX_BIGINT,
                description="Only jobs with a smaller id: the next href of the default order "
                "(-id); with another sort it is a 422",
            ),
        ]
        | Unset
    ) = UNSET


class TaskQuery(Model):
    state: TaskStateName | Unset = UNSET
    layer: LayerName | Unset = UNSET
    limit: Limit = 50
    after: Annotated[int, Meta(ge=-1, le=MAX_INT)] | Unset = UNSET


class AssignmentQuery(Model):
    agent: AgentIdText | Unset = UNSET
    job: Id | Unset = UNSET
    limit: Annotated[int, Meta(ge=1, le=5000)] = 500
    after: Id | Unset = UNSET


__all__ = [
    "MAX_TASKS_PER_JOB",
    "Text1K",
    "Text10K",
]
