"""
Agents as the HTTP API declares them: what an operator may change, the
queries, and the documents answered (masterd.schema).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from masterd.jobs.models import AgentIdText, Ref
from masterd.schema import MAX_INT, UNSET, Document, Meta, Model, PageLimit, Tag, Time, Unset

AgentStateName = Literal["idle", "busy", "offline", "disabled"]

MaxTasks = Annotated[int, Meta(ge=1, le=10_000)]
MaxRamMB = Annotated[int, Meta(ge=1, le=MAX_INT)]
MaxCpus = Annotated[int, Meta(ge=1, le=100_000)]


class LimitsPatch(Model):
    """
    Each limit given is set; null removes it.
    """

    max_tasks: MaxTasks | msgspec.UnsetType | None = msgspec.UNSET
    max_ram_mb: MaxRamMB | msgspec.UnsetType | None = msgspec.UNSET
    max_cpus: MaxCpus | msgspec.UnsetType | None = msgspec.UNSET


class AgentPatch(Model):
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    limits: LimitsPatch | msgspec.UnsetType = msgspec.UNSET
    tags: Annotated[list[Tag], Meta(max_length=100)] | msgspec.UnsetType = msgspec.UNSET


class Limits(Document):
    max_tasks: int
    max_ram_mb: int
    max_cpus: int


class AgentLimits(Document):
    max_tasks: int
    max_ram_mb: int | msgspec.UnsetType = msgspec.UNSET
    max_cpus: int | msgspec.UnsetType = msgspec.UNSET


class OperatorLimits(Document):
    max_tasks: int | msgspec.UnsetType = msgspec.UNSET
    max_ram_mb: int | msgspec.UnsetType = msgspec.UNSET
    max_cpus: int | msgspec.UnsetType = msgspec.UNSET


class GpuDeviceDocument(Document):
    """
    One of an agent's GPUs, as its hello reported it (nvidia-smi's index).
    """

    index: int
    name: str
    #: 0: not known (an agent that reported only how many GPUs it has).
    memory_mb: int


class AgentDocument(Document):
    id: str
    href: str
    hostname: str
    state: AgentStateName
    enabled: bool
    master: str | None
    connected_at: Time | None
    disconnected_at: Time | None
    last_seen: Time | None
    created_at: Time
    #: When the agent id was enrolled (its first hello with an agent token
    #: since its creation or its last credential reset); null: not enrolled.
    enrolled_at: Time | None
    os: str | None
    version: str | None
    cpus: int
    ram_mb: int
    gpus: int
    #: Its GPUs; for an agent that reported only their number, that many
    #: numbered from 0 (as the scheduler hands them out).
    gpu_devices: list[GpuDeviceDocument]
    tags: list[str]
    agent_tags: list[str]
    operator_tags: list[str]
    software: dict[str, str]
    limits: Limits
    agent_limits: AgentLimits
    operator_limits: OperatorLimits
    usage: dict[str, Any] | None
    tasks: str
    failures: str
    jobs: str
    exceptions: str
    #: What it is, for the requirements beyond the minimums (its hello's;
    #: names and values in lower case): null when not reported.
    os_family: str | None = None
    cpu_arch: str | None = None
    #: Custom OpenJD attributes (full name: values) and amounts (full name:
    #: number).
    attributes: dict[str, list[str]] = {}
    amounts: dict[str, float] = {}


class AgentPage(Document):
    items: list[AgentDocument]
    next: str | None


class AgentJob(Document):
    job: Ref
    attempts: int
    done: int
    failed: int
    last_started_at: Time | None
    #: The job's title, kept after it is deleted.
    title: str | None = None
    #: The job was deleted (by hand or by retention): its href is gone, and
    #: these are the figures kept of it (docs/retention.md).
    deleted: bool = False


class AgentJobPage(Document):
    items: list[AgentJob]
    next: str | None


class AgentExceptionDocument(Document):
    at: Time
    message: str
    traceback: str | None


class AgentExceptionPage(Document):
    items: list[AgentExceptionDocument]
    next: None


Limit = PageLimit


class AgentQuery(Model):
    state: AgentStateName | Unset = UNSET
    tag: Annotated[str, Meta(max_length=255)] | Unset = UNSET
    limit: Limit = 50
    after: AgentIdText | Unset = UNSET


class FailureQuery(Model):
    limit: Limit = 50
    after: (
        Annotated[
            str,
            Meta(
                max_length=30,
                pattern=r"^[0-9]{1,18}-[0-9]{1,9}$",
                description="<task id>-<attempt>, as in a next href",
            ),
        ]
        | Unset
    ) = UNSET


class AgentJobQuery(Model):
    limit: Limit = 50
    after: Annotated[int, Meta(ge=1, le=2**63 - 1)] | Unset = UNSET


class PageQuery(Model):
    limit: Limit = 50


class LogQuery(Model):
    attempt: Annotated[int, Meta(ge=0, le=MAX_INT)] | Unset = UNSET
    after: Annotated[int, Meta(ge=0, le=MAX_INT)] = 0
