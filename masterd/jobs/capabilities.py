"""
Requirements against what agents have: the rules, in Python, that the
claim's SQL applies too (migration 0017, C{masterd_capabilities_met}).

A layer's requirements are minimums (cpus, ram_mb, gpus, gpu_memory_mb,
tags: what an agent must have free, checked by the claim against its free
capacity) and, beyond them, what the agent must be (its C{Host}): at most
C{max_cpus}, C{max_ram_mb}, C{max_gpus} (what it reports, not what it has
free: a task asking for at most 1 vcpu does not go to a 16-core host), any
of the C{os_family} and C{cpu_arch} listed, the C{attributes} (any of, all
of their values) and C{amounts} (between their min and max). Names and
values are compared in lower case (OpenJD's are case-insensitive); both
sides are stored that way.

An agent that reports no cpus or RAM (0) is not limited by the minimums, but
meets no maximum of them (nothing says it has few); one without an os family
or an architecture meets no list of them; one that does not declare an
amount meets no requirement on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from masterd.db import Transaction

#: What the claim passes for a host's cpus or RAM when it did not report
#: them (the minimums do not limit it).
UNLIMITED = 2**31 - 1


@frozen(cache_hash=True)
class Host:
    """
    What an agent is, as its hello said: what the requirements beyond the
    minimums are matched against (hashable: alike agents are claimed for
    together).
    """

    cpus: int = 0
    ram_mb: int = 0
    gpus: int = 0
    os_family: str | None = None
    cpu_arch: str | None = None
    #: (name, values), sorted; names and values in lower case.
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    amounts: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(
        cls,
        cpus: int,
        ram_mb: int,
        gpus: int,
        os_family: str | None,
        cpu_arch: str | None,
        attributes: Mapping[str, Sequence[str]] | None,
        amounts: Mapping[str, float] | None,
    ) -> Host:
        return cls(
            cpus or 0,
            ram_mb or 0,
            gpus or 0,
            os_family,
            cpu_arch,
            tuple(sorted((k, tuple(sorted(v))) for k, v in (attributes or {}).items())),
            tuple(sorted((k, float(v)) for k, v in (amounts or {}).items())),
        )

    def attributesJSON(self) -> str:
        return json.dumps({k: list(v) for k, v in self.attributes}) if self.attributes else "{}"

    def amountsJSON(self) -> str:
        return json.dumps(dict(self.amounts)) if self.amounts else "{}"


@frozen
class Extra:
    """
    A layer's requirements beyond the minimums (C{layers.req_*}; none set:
    C{layers.req_extra} is false and the claim does not look further).
    """

    max_cpus: int | None = None
    max_ram_mb: int | None = None
    max_gpus: int | None = None
    os_family: tuple[str, ...] = ()
    cpu_arch: tuple[str, ...] = ()
    attributes: Mapping[str, Mapping[str, Sequence[str]]] = {}
    amounts: Mapping[str, Mapping[str, float | None]] = {}

    @classmethod
    def of(
        cls,
        max_cpus: int | None,
        max_ram_mb: int | None,
        max_gpus: int | None,
        os_family: Sequence[str] | None,
        cpu_arch: Sequence[str] | None,
        attributes: Mapping[str, Any] | None,
        amounts: Mapping[str, Any] | None,
    ) -> Extra:
        return cls(max_cpus, max_ram_mb, max_gpus, tuple(os_family or ()),
                   tuple(cpu_arch or ()), attributes or {}, amounts or {})  # fmt: skip

    def given(self) -> bool:
        return bool(
            self.max_cpus is not None or self.max_ram_mb is not None
            or self.max_gpus is not None or self.os_family or self.cpu_arch
            or self.attributes or self.amounts
        )  # fmt: skip


NONE = Extra()


def _listed(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def failed(extra: Extra, host: Host) -> str | None:
    """
    The first requirement of C{extra} that C{host} does not meet, as
    C{"field: why"} (field as in the layer's requirements); None if it
    meets them all.
    """
    if extra.max_cpus is not None and not 0 < host.cpus <= extra.max_cpus:
        return f"max_cpus: at most {extra.max_cpus} cpus"
    if extra.max_ram_mb is not None and not 0 < host.ram_mb <= extra.max_ram_mb:
        return f"max_ram_mb: at most {extra.max_ram_mb} MB of RAM"
    if extra.max_gpus is not None and host.gpus > extra.max_gpus:
        return f"max_gpus: at most {extra.max_gpus} GPUs"
    if extra.os_family and host.os_family not in extra.os_family:
        return f"os_family: {' or '.join(extra.os_family)}"
    if extra.cpu_arch and host.cpu_arch not in extra.cpu_arch:
        return f"cpu_arch: {' or '.join(extra.cpu_arch)}"
    if extra.attributes:
        have = dict(host.attributes)
        for name, requirement in extra.attributes.items():
            values = set(have.get(name, ()))
            anyOf = requirement.get("any_of")
            allOf = requirement.get("all_of")
            if anyOf is not None and not values.intersection(anyOf):
                return f"attributes.{name}: any of {_listed(anyOf)}"
            if allOf is not None and not values.issuperset(allOf):
                return f"attributes.{name}: all of {_listed(allOf)}"
    if extra.amounts:
        amounts = dict(host.amounts)
        for name, bounds in extra.amounts.items():
            value = amounts.get(name)
            low, high = bounds.get("min"), bounds.get("max")
            if value is None or (low is not None and value < low) or (
                    high is not None and value > high):  # fmt: skip
                wanted = [f"at least {low:g}" if low is not None else "",
                          f"at most {high:g}" if high is not None else ""]  # fmt: skip
                return f"amounts.{name}: {' and '.join(w for w in wanted if w) or 'declared'}"
    return None


def meets(extra: Extra, host: Host) -> bool:
    return not extra.given() or failed(extra, host) is None


@frozen
class Profile:
    """
    What some known agents are alike in, for telling a layer that none of
    them can run its tasks: their offered cpus, RAM and GPUs (the lower of
    what they have and their limits; C{UNLIMITED} when not reported), their
    GPUs' memory, tags and host.
    """

    cpus: int
    ram_mb: int
    gpus: int
    gpu_memory: tuple[int, ...]
    tags: frozenset[str]
    host: Host


def _minimumFailed(
    cpus: int, ram: int, gpus: int, gpuMB: int, tags: Sequence[str], p: Profile
) -> str | None:
    if cpus > p.cpus:
        return f"cpus: {cpus} cpus"
    if ram > p.ram_mb:
        return f"ram_mb: {ram} MB of RAM"
    if gpus > p.gpus:
        return f"gpus: {gpus} GPUs"
    if gpuMB and sum(1 for m in p.gpu_memory if m >= gpuMB) < gpus:
        return f"gpu_memory_mb: {gpus} GPUs of {gpuMB} MB"
    if not p.tags.issuperset(tags):
        return f"tags: {_listed(tags)}"
    return None


def unmet(
    cpus: int,
    ram: int,
    gpus: int,
    gpuMB: int,
    tags: Sequence[str],
    extra: Extra,
    profiles: Sequence[Profile],
) -> str | None:
    """
    None if some known agent meets every requirement (minimums against what
    it offers in all, not what it has free now); else a sentence naming
    the requirement that none meets, or saying that none meets them all
    together.
    """
    if not (cpus or ram or gpus or gpuMB or tags or extra.given()):
        return None
    if not profiles:
        return "no agent is known yet"
    fails = [
        _minimumFailed(cpus, ram, gpus, gpuMB, tags, p) or (failed(extra, p.host) if extra.given()
                                                            else None)
        for p in profiles
    ]  # fmt: skip
    if any(f is None for f in fails):
        return None
    # A requirement that every agent fails on its own, if there is one.
    for why in dict.fromkeys(f for f in fails if f is not None):
        if all(_fails(why, cpus, ram, gpus, gpuMB, tags, extra, p) for p in profiles):
            field, _, wanted = why.partition(": ")
            return f"no known agent meets requirements.{field} ({wanted})"
    return "no known agent meets all of these requirements together"


def _fails(
    why: str, cpus: int, ram: int, gpus: int, gpuMB: int, tags: Sequence[str], extra: Extra,
    p: Profile,
) -> bool:  # fmt: skip
    """
    Whether C{p} fails the one requirement C{why} names.
    """
    field = why.partition(":")[0]
    if field in ("cpus", "ram_mb", "gpus", "gpu_memory_mb", "tags"):
        only = {"cpus": (cpus, 0, 0, 0, ()), "ram_mb": (0, ram, 0, 0, ()),
                "gpus": (0, 0, gpus, 0, ()), "gpu_memory_mb": (0, 0, gpus, gpuMB, ()),
                "tags": (0, 0, 0, 0, tags)}[field]  # fmt: skip
        return _minimumFailed(*only, p) is not None
    single = _single(field, extra)
    return failed(single, p.host) is not None


def _single(field: str, extra: Extra) -> Extra:
    """
    C{extra} with only the requirement C{field} names.
    """
    if field.startswith("attributes."):
        name = field[len("attributes.") :]
        return Extra(attributes={name: extra.attributes[name]})
    if field.startswith("amounts."):
        name = field[len("amounts.") :]
        return Extra(amounts={name: extra.amounts[name]})
    return Extra(**{field: getattr(extra, field)})


#: The most distinct kinds of agent a job's read looks at (a farm's agents
#: come in few kinds: pools of alike machines).
MAX_PROFILES = 10_000

_PROFILES = (
    "SELECT cpus, ram_mb, gpus, gpu_devices, tags || extra_tags, os_family, cpu_arch,"
    " attributes, amounts, agent_limits, operator_limits FROM agents"
    " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 LIMIT %s"
)


def _offered(have: int, *limits: Any) -> int:
    return min(v for v in (have or UNLIMITED, *limits) if isinstance(v, int) and v > 0)


async def knownProfiles(txn: Transaction) -> list[Profile]:
    """
    The kinds of agent known (every agent of the agents table, connected or
    not): one aggregate.
    """
    profiles: list[Profile] = []
    for (cpus, ram, gpus, devices, tags, osFamily, cpuArch, attributes, amounts,
         agentLimits, operatorLimits) in await txn.query(_PROFILES, (MAX_PROFILES,)):  # fmt: skip
        memory = tuple(int(d.get("memory_mb") or 0) for d in devices) if devices else (0,) * gpus
        profiles.append(Profile(
            cpus=_offered(cpus, agentLimits.get("max_cpus"), operatorLimits.get("max_cpus")),
            ram_mb=_offered(ram, agentLimits.get("max_ram_mb"), operatorLimits.get("max_ram_mb")),
            gpus=gpus, gpu_memory=memory, tags=frozenset(tags),
            host=Host.of(cpus, ram, gpus, osFamily, cpuArch, attributes, amounts),
        ))  # fmt: skip
    return profiles
