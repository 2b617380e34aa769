"""
Jobs, tasks and attempts as declared types: what a client may send (models)
and what the API answers (documents). Validation, encoding and the OpenAPI
document all come from these declarations (masterd.schema).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from masterd.schema import (
    MAX_BIGINT,
    MAX_INT,
    UNSET,
    Document,
    FreeObject,
    Id,
    Meta,
    Model,
    PageLimit,
    Tag,
    Text1K,
    Text10K,
    Time,
    Title,
    Unset,
)

from .command import ARGUMENT_PATTERN
from .frames import MAX_FRAME, SPEC_PATTERN
from .usage import AttemptUsage, UsageTotals

MAX_TASKS_PER_JOB = 1_000_000

Frame = Annotated[int, Meta(ge=-MAX_FRAME, le=MAX_FRAME)]
FrameSpec = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=10_000,
        extra_json_schema={"pattern": SPEC_PATTERN},
        description='Frames like "1-100", "1-100x5,200,210-215" (ranges run upwards, '
        "a step after x); each frame once",
    ),
]
Frames = (
    FrameSpec
    | Annotated[
        list[Frame],
        Meta(min_length=1, max_length=MAX_TASKS_PER_JOB, extra_json_schema={"uniqueItems": True}),
    ]
)
Argument = Annotated[str, Meta(max_length=10_000)]
CommandArgument = Annotated[
    str, Meta(max_length=10_000, extra_json_schema={"pattern": ARGUMENT_PATTERN})
]
Command = Annotated[
    list[CommandArgument],
    Meta(
        min_length=1,
        max_length=1000,
        description="An argv (no shell); {frame}, {start}, {end} and {frames} are expanded "
        "per task, with an alignment, a sign, zero padding and a width up to 64 "
        "({frame:04d}, {frames:<20}); {{ and }} are literal braces",
    ),
]
EnvName = Annotated[str, Meta(min_length=1, max_length=1000, pattern=r"^[^=]+$")]
Env = Annotated[dict[EnvName, Argument], Meta(max_length=1000)]
Priority = Annotated[int, Meta(ge=0, le=100)]
Weight = Annotated[int, Meta(ge=1, le=1000)]
Retries = Annotated[int, Meta(ge=0, le=100)]
Timeout = Annotated[int, Meta(ge=1, le=30 * 24 * 3600)]
Chunk = Annotated[int, Meta(ge=1, le=MAX_TASKS_PER_JOB)]
Path = Annotated[str, Meta(min_length=1, max_length=4096)]
Tags = Annotated[list[Tag], Meta(max_length=100)]
JobStateName = Literal["waiting", "queued", "running", "paused", "done", "failed", "canceled"]
TaskStateName = Literal["waiting", "queued", "assigned", "running", "done", "failed", "canceled"]


# -- what clients send -------------------------------------------------------------


GpuMemory = Annotated[
    int, Meta(ge=0, le=MAX_INT, description="The memory each of the task's GPUs must have, MB")
]


#: The operating system families and CPU architectures requirements may name
#: (OpenJD's attr.worker.os.family and attr.worker.cpu.arch).
OS_FAMILIES = ("linux", "windows", "macos")
CPU_ARCHES = ("x86_64", "arm64")
OsFamily = Literal["linux", "windows", "macos"]
CpuArch = Literal["x86_64", "arm64"]


def _anyCase(word: str) -> str:
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word)


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_RESERVED = "|".join(_anyCase(s) for s in ("worker", "job", "step", "task"))


def _capabilityPattern(kind: str) -> str:
    """
    OpenJD's custom capability names of a kind ("attr" or "amount"), in any
    case: an optional vendor prefix, the kind, and dotted identifiers whose
    first is none of the reserved scopes (worker, job, step, task).
    """
    return (
        rf"^(?:[A-Za-z_][A-Za-z0-9_]+:)?{_anyCase(kind)}\.(?!(?:{_RESERVED})(?:\.|$))"
        rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*$"
    )


ATTRIBUTE_NAME_PATTERN = _capabilityPattern("attr")
AMOUNT_NAME_PATTERN = _capabilityPattern("amount")
#: OpenJD's attribute values: letters, digits, _ and -, not starting with a
#: digit or -.
ATTRIBUTE_VALUE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
#: How many attributes and amounts a requirement may name (OpenJD: 50 in all),
#: and how many values one attribute requirement may list.
MAX_CAPABILITIES = 50
MAX_ATTRIBUTE_VALUES = 50
MAX_AMOUNT = 1e15

AttributeName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=ATTRIBUTE_NAME_PATTERN,
        description="A custom OpenJD attribute capability name, e.g. attr.custom.renderer"
        " (any case: names are compared in lower case)",
    ),
]
AmountName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=AMOUNT_NAME_PATTERN,
        description="A custom OpenJD amount capability name, e.g. amount.custom.licences"
        " (any case: names are compared in lower case)",
    ),
]
AttributeValue = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=ATTRIBUTE_VALUE_PATTERN,
        description="An attribute value: letters, digits, _ and - (compared in lower case)",
    ),
]
AttributeValues = Annotated[
    list[AttributeValue], Meta(min_length=1, max_length=MAX_ATTRIBUTE_VALUES)
]
Amount = Annotated[float, Meta(ge=0, le=MAX_AMOUNT)]


class AttributeRequirement(Model):
    """
    The agent's values of the attribute hold at least one of C{any_of} and
    every one of C{all_of} (at least one of the two is given).
    """

    __schema_rules__ = {"anyOf": [{"required": ["any_of"]}, {"required": ["all_of"]}]}

    # Not nullable: a null would satisfy the schema's "required" and still
    # say nothing.
    any_of: AttributeValues | msgspec.UnsetType = msgspec.UNSET
    all_of: AttributeValues | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.any_of is msgspec.UNSET and self.all_of is msgspec.UNSET:
            raise ValueError("any_of: give any_of or all_of (or both)")


class AmountRequirement(Model):
    """
    The agent declares the amount, and it is at least C{min} and at most
    C{max} (each when given).
    """

    min: Amount | None = None
    max: Amount | None = None


MaxCount = Annotated[int, Meta(ge=0, le=MAX_INT)]
OsFamilies = Annotated[list[OsFamily], Meta(max_length=3)]
CpuArches = Annotated[list[CpuArch], Meta(max_length=2)]
AttributeRequirements = Annotated[
    dict[AttributeName, AttributeRequirement], Meta(max_length=MAX_CAPABILITIES)
]
AmountRequirements = Annotated[
    dict[AmountName, AmountRequirement], Meta(max_length=MAX_CAPABILITIES)
]


class RequirementsModel(Model):
    cpus: Annotated[int, Meta(ge=0, le=4096)] = 0
    ram_mb: Annotated[int, Meta(ge=0, le=MAX_INT)] = 0
    gpus: Annotated[int, Meta(ge=0, le=256)] = 0
    gpu_memory_mb: GpuMemory = 0
    tags: Tags = []
    #: The most an agent may have (an agent with more does not qualify).
    max_cpus: MaxCount | None = None
    max_ram_mb: MaxCount | None = None
    max_gpus: MaxCount | None = None
    #: Any of these (empty: any).
    os_family: OsFamilies = []
    cpu_arch: CpuArches = []
    attributes: AttributeRequirements = {}
    amounts: AmountRequirements = {}


class RequirementsPatch(Model):
    """
    A merge: only the requirements named change.
    """

    cpus: Annotated[int, Meta(ge=0, le=4096)] | msgspec.UnsetType = msgspec.UNSET
    ram_mb: Annotated[int, Meta(ge=0, le=MAX_INT)] | msgspec.UnsetType = msgspec.UNSET
    gpus: Annotated[int, Meta(ge=0, le=256)] | msgspec.UnsetType = msgspec.UNSET
    gpu_memory_mb: GpuMemory | msgspec.UnsetType = msgspec.UNSET
    tags: Tags | msgspec.UnsetType = msgspec.UNSET
    max_cpus: MaxCount | msgspec.UnsetType | None = msgspec.UNSET
    max_ram_mb: MaxCount | msgspec.UnsetType | None = msgspec.UNSET
    max_gpus: MaxCount | msgspec.UnsetType | None = msgspec.UNSET
    os_family: OsFamilies | msgspec.UnsetType = msgspec.UNSET
    cpu_arch: CpuArches | msgspec.UnsetType = msgspec.UNSET
    attributes: AttributeRequirements | msgspec.UnsetType = msgspec.UNSET
    amounts: AmountRequirements | msgspec.UnsetType = msgspec.UNSET


class TaskSubmission(Model):
    frames: Frames
    command: Command | None = None


LayerName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="A layer's name, unique in its job: letters, digits, _ . -",
    ),
]
#: What a limit's and a project's name may be (also checked in the path of
#: PUT /api/v1/limits/{name} and /api/v1/projects/{name}).
LIMIT_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
LIMIT_NAME_LENGTH = 64
PROJECT_NAME_PATTERN = r"^[^\s/?#%][^/?#%]*$"
PROJECT_NAME_LENGTH = 255
LimitName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=LIMIT_NAME_LENGTH,
        pattern=LIMIT_NAME_PATTERN,
        description="A limit's name: letters, digits, _ . -",
    ),
]
ProjectName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=PROJECT_NAME_LENGTH,
        pattern=PROJECT_NAME_PATTERN,
        description="A project's name (no /, ?, # or %)",
    ),
]
LimitNames = Annotated[list[LimitName], Meta(max_length=32)]
MaxRunning = Annotated[int, Meta(ge=1, le=MAX_INT)]
DependencyMode = Literal["layer", "job", "frame"]
OnFailure = Literal["wait", "cancel"]


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


# -- what the API answers ----------------------------------------------------------


class Ref(Document):
    id: int
    href: str


class AgentRef(Document):
    id: str
    href: str
    #: The agent's hostname, to tell agents apart at a glance; null when the
    #: agent was deleted since.
    hostname: str | None


class AttributeRequirementDocument(Document):
    any_of: list[str] | None = None
    all_of: list[str] | None = None


class AmountRequirementDocument(Document):
    min: float | None = None
    max: float | None = None


class Requirements(Document):
    cpus: int
    ram_mb: int
    gpus: int
    tags: list[str]
    gpu_memory_mb: int = 0
    max_cpus: int | None = None
    max_ram_mb: int | None = None
    max_gpus: int | None = None
    os_family: list[str] = []
    cpu_arch: list[str] = []
    #: Names and values in lower case, as they are compared.
    attributes: dict[str, AttributeRequirementDocument] = {}
    amounts: dict[str, AmountRequirementDocument] = {}


class TaskCounts(Document):
    href: str
    total: int
    waiting: int
    queued: int
    assigned: int
    running: int
    done: int
    failed: int
    canceled: int


class DependencyDocument(Document):
    """
    A dependency as the job shows it: on a layer of the job (C{layer}, its
    name) or on a job (C{job}); C{satisfied} once the parent was done as a
    whole (frame dependencies are satisfied task by task).
    """

    mode: DependencyMode
    on_failure: OnFailure
    layer: str | None = None
    job: Ref | None = None
    satisfied: bool = False


class LayerDocument(Document):
    name: str
    index: int
    state: JobStateName
    command: list[str] | None
    frames: str
    chunk: int
    env: dict[str, str]
    cwd: str | None
    requirements: Requirements
    limits: list[str]
    max_running: int | None
    timeout_s: int | None
    stall_timeout_s: int | None
    depends_on: list[DependencyDocument]
    tasks: TaskCounts
    #: Null, or a sentence naming the requirement no known agent meets (for
    #: a layer with tasks still to run; see docs/jobs.md).
    unmet: str | None = None
    #: What its attempts used (in a job's own document; null in lists and
    #: before any attempt reported it).
    usage: UsageTotals | None = None


class BlocklistEntry(Document):
    agent: AgentRef
    failures: int


class JobDocument(Document):
    id: int
    href: str
    title: str
    owner: str
    state: JobStateName
    priority: int
    weight: int
    paused: bool
    created_at: Time
    updated_at: Time
    finished_at: Time | None
    progress: float
    command: list[str] | None
    env: dict[str, str]
    cwd: str | None
    requirements: Requirements
    max_retries: int
    task_timeout_s: int | None
    metadata: FreeObject
    tasks: TaskCounts
    parents: list[Ref]
    children: list[Ref]
    blocklist: list[BlocklistEntry] = []
    project: str = ""
    max_running: int | None = None
    preemptible: bool = False
    limits: list[str] = []
    stall_timeout_s: int | None = None
    layers: list[LayerDocument] = []
    #: What its attempts used (in a job's own document; null in lists and
    #: before any attempt reported it).
    usage: UsageTotals | None = None


class OpenJDValue(Document):
    """
    One OpenJD parameter value, as openjd-model carries it: its type (INT,
    FLOAT, STRING, PATH, CHUNK[INT]) and its value as text.
    """

    type: str
    value: str


class TaskDocument(Document):
    id: int
    href: str
    job: Ref
    index: int
    frames: list[int]
    command: list[str] | None
    state: TaskStateName
    attempt: int
    layer: str
    agent: AgentRef | None
    progress: float
    started_at: Time | None
    finished_at: Time | None
    exit_code: int | None
    error: str | None
    attempts: str
    log: str
    #: The GPUs of its agent its current (or last) attempt was given.
    gpu_devices: list[int] = []
    #: The status message of its current (or last) attempt: an OpenJD task's
    #: latest C{openjd_status} (null when none).
    status: str | None = None
    #: An OpenJD task's parameter values (null for a native task).
    parameters: dict[str, OpenJDValue] | None = None


class AttemptDocument(Document):
    task: Ref
    job: Ref
    attempt: int
    agent: AgentRef | None
    state: Literal[
        "assigned", "running", "done", "failed", "canceled", "lost", "rejected", "preempted"
    ]
    started_at: Time | None
    finished_at: Time | None
    exit_code: int | None
    error: str | None
    gpu_devices: list[int] = []
    #: What the attempt used, as its agent measured it (null when not).
    usage: AttemptUsage | None = None
    #: Its job's title, in an agent's failures (where the job may have been
    #: deleted since); null elsewhere.
    job_title: str | None = None


class JobPage(Document):
    items: list[JobDocument]
    next: str | None
    #: How many jobs match the filters (q, state, owner, project), on every
    #: page alike.
    total: int


class TaskPage(Document):
    items: list[TaskDocument]
    next: str | None


class AttemptPage(Document):
    items: list[AttemptDocument]
    next: str | None


class OpenJDJobPayload(Document):
    """
    An OpenJD task's job: its id, its formatted name, every job parameter's
    value, its job environments and the template's extensions.
    """

    id: int
    name: str
    parameters: dict[str, OpenJDValue]
    #: Each as openjd-model's model_to_object wrote it (parse_model takes it
    #: back as a v2023_09.Environment).
    environments: list[dict[str, Any]]
    extensions: list[str] = []


class OpenJDStepPayload(Document):
    name: str
    #: As model_to_object wrote it (a v2023_09.StepScript).
    script: dict[str, Any]
    environments: list[dict[str, Any]]


class OpenJDAssignment(Document):
    """
    What an agent needs to run an OpenJD task: its job and step, and the
    task's parameter values.
    """

    job: OpenJDJobPayload
    step: OpenJDStepPayload
    parameters: dict[str, OpenJDValue]


class AssignedTask(Document):
    """
    What an agent needs to run one task (in talkback's assign message).
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
    layer: str = "main"
    #: The indexes of the agent's GPUs the task is given (set as
    #: CUDA_VISIBLE_DEVICES and MASTERD_GPU_DEVICES by the reference agent).
    gpu_devices: list[int] = []
    #: What an OpenJD task runs (null for a native task): see OpenJDAssignment.
    openjd: OpenJDAssignment | None = None


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
