"""
What the agent reports about its machine: hardware at hello, usage with every
heartbeat (psutil, which comes with the master's dependencies).
"""

from __future__ import annotations

import os
import platform
import shutil
from typing import Any

import psutil

from .gpus import discoverDevices

#: platform.system() and platform.machine() as OpenJD names them
#: (attr.worker.os.family, attr.worker.cpu.arch).
_FAMILIES = {"linux": "linux", "windows": "windows", "darwin": "macos"}
_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64",
           "arm64": "arm64", "armv8": "arm64", "armv8l": "arm64"}  # fmt: skip


def _word(text: str) -> str | None:
    """
    What the master takes for a family or an architecture it has no name
    for: a short word (letters, digits, _), or nothing.
    """
    word = "".join(c for c in text.lower() if c.isascii() and (c.isalnum() or c == "_"))
    return word[:32] or None


def osFamily(system: str | None = None) -> str | None:
    """
    The machine's operating system family: linux, windows or macos (others
    as their own lower-case name).
    """
    system = platform.system() if system is None else system
    return _FAMILIES.get(system.lower()) or _word(system)


def cpuArch(machine: str | None = None) -> str | None:
    """
    The machine's CPU architecture: x86_64 (x86_64, AMD64) or arm64
    (aarch64, arm64), others as their own lower-case name.
    """
    machine = platform.machine() if machine is None else machine
    return _ARCHES.get(machine.lower()) or _word(machine)


def hardware(
    gpus: int | None = None, cpus: int | None = None, ramMB: int | None = None
) -> dict[str, Any]:
    """
    What the machine has; C{gpus} as given, else as nvidia-smi lists them
    (0 without it; L{masterd.agent.gpus}); C{cpus} and C{ramMB} as given
    (the agent's options), else as detected.
    """
    found: dict[str, Any] = {
        "os": f"{platform.system()} {platform.release()}".strip(),
        "cpus": (os.cpu_count() or 0) if cpus is None else cpus,
        "ram_mb": int(psutil.virtual_memory().total // (1024 * 1024)) if ramMB is None else ramMB,
        "gpus": len(discoverDevices()) if gpus is None else gpus,
    }
    family, arch = osFamily(), cpuArch()
    if family is not None:
        found["os_family"] = family
    if arch is not None:
        found["cpu_arch"] = arch
    return found


def usage() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    report: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "ram_used_mb": int(memory.used // (1024 * 1024)),
        "ram_free_mb": int(memory.available // (1024 * 1024)),
    }
    try:
        report["load_avg"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        report["disk_free_mb"] = int(shutil.disk_usage(os.getcwd()).free // (1024 * 1024))
    except OSError:
        pass
    # Counters since boot: a rate is the difference between two heartbeats.
    io: dict[str, int] = {}
    disk = psutil.disk_io_counters()
    if disk is not None:
        io["disk_read_bytes"] = disk.read_bytes
        io["disk_write_bytes"] = disk.write_bytes
    net = psutil.net_io_counters()
    if net is not None:
        io["net_recv_bytes"] = net.bytes_recv
        io["net_sent_bytes"] = net.bytes_sent
    if io:
        report["io"] = io
    return report
