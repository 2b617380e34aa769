"""
Talkback messages, both ways: JSON text frames C{{"type": ..., ...}},
declared once (masterd.schema). The master decodes what agents send with
these types (each refusal names the field), encodes what it sends with the
others, and the AsyncAPI document is built from both (docs/talkback.md).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec

from masterd.errors import InvalidField
from masterd.jobs.models import (
    Amount,
    AmountName,
    AssignedTask,
    AttributeName,
    AttributeValue,
)
from masterd.schema import (
    DEFAULT_LIMITS,
    MAX_BIGINT,
    MAX_INT,
    Document,
    Id,
    InputLimits,
    MalformedJSON,
    Meta,
    Model,
    Tag,
    Text1K,
    Text10K,
    Text100K,
    decode,
)

#: An os family or an architecture: a short lower-case word.
_WORD = r"^[A-Za-z0-9_]+$"
Attempt = Annotated[int, Meta(ge=1, le=MAX_INT)]
Counter = Annotated[int, Meta(ge=0, le=MAX_BIGINT)]
Megabytes = Annotated[int, Meta(ge=0, le=2**53 - 1)]
TASK_STATES = ("running", "done", "failed", "rejected")
MAX_LOG_LINES = 10_000


class _In(Model, tag_field="type", kw_only=True):
    """
    A message from an agent.
    """


class _Out(Document, tag_field="type", kw_only=True):
    """
    A message to an agent.
    """


# -- from agents -------------------------------------------------------------------


class RunningTask(Model):
    task_id: Id
    attempt: Attempt


class GpuDevice(Model):
    """
    One of the agent's GPUs, as nvidia-smi numbers it (CUDA_VISIBLE_DEVICES
    takes these indexes).
    """

    index: Annotated[int, Meta(ge=0, le=1023)]
    name: Annotated[str, Meta(max_length=255)] = ""
    memory_mb: Annotated[int, Meta(ge=0, le=MAX_INT)] = 0


class AgentInfo(Model):
    id: Annotated[str, Meta(min_length=1, max_length=45, description="A UUID, chosen once")]
    hostname: Annotated[str, Meta(min_length=1, max_length=255, pattern=r"\S")]
    os: Text1K | None = None
    version: Text1K | None = None
    cpus: Annotated[int, Meta(ge=0, le=100_000)] = 0
    ram_mb: Annotated[int, Meta(ge=0, le=MAX_INT)] = 0
    gpus: Annotated[int, Meta(ge=0, le=1000)] = 0
    tags: Annotated[list[Tag], Meta(max_length=100)] = []
    software: Annotated[dict[Annotated[str, Meta(min_length=1, max_length=255)], Text1K],
                        Meta(max_length=1000)] = {}  # fmt: skip
    max_tasks: Annotated[int, Meta(ge=1, le=10_000)] = 1
    gpu_devices: Annotated[
        list[GpuDevice],
        Meta(max_length=1024, description="Its GPUs; gpus is then their number"),
    ] = []
    os_family: (
        Annotated[
            str,
            Meta(
                max_length=32,
                pattern=_WORD,
                description="Its operating system's family, as OpenJD names them (linux,"
                " windows, macos; another is kept but no requirement names it)",
            ),
        ]
        | None
    ) = None
    cpu_arch: (
        Annotated[
            str,
            Meta(
                max_length=32,
                pattern=_WORD,
                description="Its CPUs' architecture, as OpenJD names them (x86_64, arm64;"
                " another is kept but no requirement names it)",
            ),
        ]
        | None
    ) = None
    attributes: Annotated[
        dict[AttributeName, Annotated[list[AttributeValue], Meta(max_length=100)]],
        Meta(max_length=100, description="Custom OpenJD attributes: full name to its values"),
    ] = {}
    amounts: Annotated[
        dict[AmountName, Amount],
        Meta(max_length=100, description="Custom OpenJD amounts: full name to a number"),
    ] = {}

    def __post_init__(self) -> None:
        try:
            if not self.id.isascii():
                raise ValueError
            self.id = str(uuid.UUID(self.id))
        except ValueError:
            raise ValueError("id: must be a UUID") from None
        if self.gpu_devices:
            indexes = [d.index for d in self.gpu_devices]
            if len(set(indexes)) != len(indexes):
                raise ValueError("gpu_devices: each index once")
            self.gpus = len(self.gpu_devices)
        # Compared in lower case, as OpenJD says (requirements are stored so).
        if self.os_family is not None:
            self.os_family = self.os_family.lower()
        if self.cpu_arch is not None:
            self.cpu_arch = self.cpu_arch.lower()
        if self.attributes:
            attributes: dict[str, list[str]] = {}
            for name, values in self.attributes.items():
                attributes.setdefault(name.lower(), []).extend(v.lower() for v in values)
            self.attributes = {k: sorted(set(v)) for k, v in sorted(attributes.items())}
        if self.amounts:
            self.amounts = {k.lower(): v for k, v in sorted(self.amounts.items())}


class Hello(_In, tag="hello"):
    """
    The first message on a connection: who the agent is, what it has, and
    the tasks it runs.
    """

    agent: AgentInfo
    token: Text1K | None = None
    credential: (
        Annotated[
            Text1K,
            Meta(
                description="The secret the welcome that enrolled this agent id gave it;"
                " once enrolled, a hello for the id must present it (no token needed), and"
                " any other is refused with close code 4403"
            ),
        ]
        | None
    ) = None
    running: Annotated[list[RunningTask], Meta(max_length=10_000)] = []

    @property
    def agent_id(self) -> str:
        return self.agent.id

    @property
    def hostname(self) -> str:
        return self.agent.hostname

    @property
    def os(self) -> str | None:
        return self.agent.os

    @property
    def version(self) -> str | None:
        return self.agent.version

    @property
    def cpus(self) -> int:
        return self.agent.cpus

    @property
    def ram_mb(self) -> int:
        return self.agent.ram_mb

    @property
    def gpus(self) -> int:
        return self.agent.gpus

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.agent.tags)))

    @property
    def software(self) -> dict[str, str]:
        return self.agent.software

    @property
    def max_tasks(self) -> int:
        return self.agent.max_tasks

    def runningTasks(self) -> set[tuple[int, int]]:
        return {(r.task_id, r.attempt) for r in self.running}


class IOCounters(Model):
    """
    Counters since boot: a rate is the difference between two heartbeats.
    """

    disk_read_bytes: Counter | msgspec.UnsetType = msgspec.UNSET
    disk_write_bytes: Counter | msgspec.UnsetType = msgspec.UNSET
    net_recv_bytes: Counter | msgspec.UnsetType = msgspec.UNSET
    net_sent_bytes: Counter | msgspec.UnsetType = msgspec.UNSET


class Usage(Model):
    cpu_percent: Annotated[float, Meta(ge=0, le=1_000_000)] | msgspec.UnsetType = msgspec.UNSET
    load_avg: (
        Annotated[float, Meta(ge=0, le=1e9)]
        | Annotated[list[Annotated[float, Meta(ge=0, le=1e9)]], Meta(max_length=3)]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    ram_used_mb: Megabytes | msgspec.UnsetType = msgspec.UNSET
    ram_free_mb: Megabytes | msgspec.UnsetType = msgspec.UNSET
    disk_free_mb: Megabytes | msgspec.UnsetType = msgspec.UNSET
    io: IOCounters | msgspec.UnsetType = msgspec.UNSET


class Heartbeat(_In, tag="heartbeat"):
    """
    The agent is alive; its machine's usage now.
    """

    usage: Usage = msgspec.field(default_factory=Usage)


class Limits(_In, tag="limits"):
    """
    What the agent itself allows from now on (each limit left out: none).
    """

    max_tasks: Annotated[int, Meta(ge=1, le=10_000)] | None = None
    max_ram_mb: Annotated[int, Meta(ge=1, le=MAX_INT)] | None = None
    max_cpus: Annotated[int, Meta(ge=1, le=100_000)] | None = None

    def asJSON(self) -> dict[str, int]:
        values = {"max_tasks": self.max_tasks, "max_ram_mb": self.max_ram_mb,
                  "max_cpus": self.max_cpus}  # fmt: skip
        return {k: v for k, v in values.items() if v is not None}


#: Seconds of a task's usage: up to about 31 years.
Seconds = Annotated[float, Meta(ge=0, le=1e9)]


class TaskUsage(Model, kw_only=True):
    """
    What a task's attempt used, measured by the agent for the task's own
    process tree (docs/agent.md, "Usage of each task").
    """

    wall_s: Seconds
    cpu_user_s: Seconds = 0.0
    cpu_system_s: Seconds = 0.0
    peak_rss_kb: Annotated[int, Meta(ge=0, le=2**53 - 1)] = 0
    #: Null where the agent could not tell (no nvidia-smi, or no GPU use).
    gpu_memory_mb: Annotated[int, Meta(ge=0, le=MAX_INT)] | None = None


class TaskUpdate(_In, tag="task_update"):
    """
    A task's attempt is running, or has ended (done, failed, rejected).
    """

    task_id: Id
    attempt: Attempt
    state: Literal["running", "done", "failed", "rejected"]
    progress: Annotated[float, Meta(ge=0, le=1)] | None = None
    exit_code: Annotated[int, Meta(ge=-(2**31), le=MAX_INT)] | None = None
    message: Text10K | None = None
    #: The task's status message (an OpenJD task's latest C{openjd_status});
    #: None: unchanged.
    status: Text1K | None = None
    #: What the attempt used (a final report's; kept on the attempt).
    usage: TaskUsage | None = None


class Log(_In, tag="log"):
    """
    Output lines of a task's attempt, in order.
    """

    task_id: Id
    attempt: Attempt
    lines: Annotated[list[str], Meta(max_length=MAX_LOG_LINES)] = []


class AgentException(_In, tag="exception"):
    """
    Something went wrong in the agent itself.
    """

    message: Text10K
    traceback: Text100K | None = None


Message = Hello | Heartbeat | Limits | TaskUpdate | Log | AgentException
INBOUND: tuple[type, ...] = (Hello, Heartbeat, Limits, TaskUpdate, Log, AgentException)
TYPES = ("hello", "heartbeat", "limits", "task_update", "log", "exception")


def parseMessage(text: str | bytes, limits: InputLimits = DEFAULT_LIMITS) -> Message:
    """
    @raise InvalidField: naming the field at fault (C{type} for an unknown
        type, C{(message)} for text that is not a JSON object).
    """
    try:
        message: Message = decode(text, Message, limits)  # type: ignore[arg-type]
    except MalformedJSON as e:
        raise InvalidField("(message)", e.message) from None
    except InvalidField as e:
        if e.field == "(body)":
            raise InvalidField("(message)", e.message) from None
        raise
    return message


# -- to agents -----------------------------------------------------------------------


class Welcome(_Out, tag="welcome"):
    """
    The hello is accepted: the agent's session starts.
    """

    agent_id: str
    master: str
    heartbeat_s: float
    agent_timeout_s: float
    credential: Annotated[
        str | None,
        Meta(
            description="Only in the welcome of the hello that enrolled this agent id (null"
            " otherwise): its secret, which every later hello for the id must present as"
            " credential. Keep it (the master stores only its digest and cannot say it again)."
        ),
    ] = None


class Assign(_Out, tag="assign"):
    """
    Tasks to run now, each as an attempt to report on.
    """

    tasks: list[AssignedTask]


class Cancel(_Out, tag="cancel"):
    """
    Stop this attempt (canceled, or no longer this agent's).
    """

    task_id: int
    attempt: int
    reason: str


class Ack(_Out, tag="ack"):
    """
    A final report is written: the agent may forget it.
    """

    task_id: int
    attempt: int
    state: str


class OperatorLimits(_Out, tag="limits"):
    """
    What an operator allows this agent (each limit left out: none).
    """

    max_tasks: int | msgspec.UnsetType = msgspec.UNSET
    max_ram_mb: int | msgspec.UnsetType = msgspec.UNSET
    max_cpus: int | msgspec.UnsetType = msgspec.UNSET


class Error(_Out, tag="error"):
    """
    A message was refused (C{field} names what was wrong), or could not be
    handled now (C{retry}: send it again later).
    """

    message: str
    field: str | msgspec.UnsetType = msgspec.UNSET
    retry: bool | msgspec.UnsetType = msgspec.UNSET


#: The close codes the master uses (docs/talkback.md), for the AsyncAPI
#: document.
CLOSE_CODES = (
    "1000 normal; 1001 going away (the master stops: reconnect at once); 1008 too many bad"
    " messages; 1009 a message too large; 1013 try again later (the master is not ready);"
    " 4401 hello refused: no valid token of role agent (or a message before hello); 4403"
    " hello refused: the credential is not this agent id's (the connected agent with this id"
    " keeps its connection); 4408 timed out: no valid hello within talkback.hello_timeout_s,"
    " or nothing heard within agent_timeout_s; 4409 replaced by a newer connection with this"
    " agent id"
)


class Closing(_Out, tag="closing"):
    """
    The master is about to close the connection, with this WebSocket close
    code, and why: sent just before the close frame, because a client cannot
    always see the frame's code (Twisted's cannot).
    """

    code: Annotated[int, Meta(ge=1000, le=4999, description=CLOSE_CODES)]
    reason: str = ""


Outgoing = Welcome | Assign | Cancel | Ack | OperatorLimits | Error | Closing
OUTBOUND: tuple[type, ...] = (Welcome, Assign, Cancel, Ack, OperatorLimits, Error, Closing)

_encoder = msgspec.json.Encoder()


def encode(message: Any) -> str:
    return _encoder.encode(message).decode("utf-8")


def operatorLimits(limits: dict[str, Any]) -> OperatorLimits:
    return OperatorLimits(**{k: v for k, v in limits.items() if isinstance(v, int)})


def typeName(message: Any) -> str:
    return str(type(message).__struct_config__.tag)


__all__ = ["TASK_STATES", "TYPES", "InvalidField"]
