"""
What a job requires of the agents that run its tasks, as a client sends
it: host requirements (CPUs, memory, GPUs, tags, operating system and CPU
architecture, and the most an agent may have), the OpenJD capability names
and values of custom attributes and amounts with their requirements, and
a PATCH of them.

masterd.jobs.models re-exports every name here, and is where other code
imports them from (the reference agent's capabilities and talkback's hello
are checked against the same names and patterns).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from masterd.schema import MAX_INT, Meta, Model, Tag

Tags = Annotated[list[Tag], Meta(max_length=100)]


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
