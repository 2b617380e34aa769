"""
Jobs, tasks and attempts as the API answers them (documents), and what an
agent is given to run a task (in talkback's assign message).

masterd.jobs.models re-exports every one, and is where other code imports
them from.
"""

from __future__ import annotations

from typing import Any, Literal

from masterd.schema import Document, FreeObject, Time

from ._model_fields import DependencyMode, JobStateName, OnFailure, TaskStateName
from .usage import AttemptUsage, UsageTotals


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
