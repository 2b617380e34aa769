"""
The agent's GPUs: found with nvidia-smi at start, reported in the hello
(C{gpu_devices}), and shown to each task as the devices its assignment gave
it (docs/agent.md, "GPUs").
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.logger import Logger

log = Logger()

QUERY = ("nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits")

# What the master accepts in a hello (masterd/talkback/messages.py GpuDevice).
_MAX_INDEX = 1023
_MAX_NAME = 255
_MAX_MB = 2**31 - 1

#: A GPU as the hello reports it: {"index", "name", "memory_mb"}.
Device = dict[str, Any]


def parseDevices(text: str) -> list[Device]:
    """
    The devices in the output of L{QUERY}: one C{index, name, memory} line
    each, memory in MiB. Lines that are not a device (blank, a warning, an
    index that is no number) are left out; a memory that is not a number
    (C{[N/A]}, C{[Not Supported]}) is 0, unknown; a name with commas keeps
    them (index first and memory last are the only fixed places). An index
    seen twice counts once: the master refuses a hello that repeats one.
    """
    found: dict[int, Device] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3:
            continue
        try:
            index = int(fields[0])
        except ValueError:
            continue
        if not 0 <= index <= _MAX_INDEX or index in found:
            continue
        try:
            memory = min(max(int(float(fields[-1])), 0), _MAX_MB)
        except ValueError:
            memory = 0
        name = ", ".join(fields[1:-1])[:_MAX_NAME]
        found[index] = {"index": index, "name": name, "memory_mb": memory}
    return [found[i] for i in sorted(found)]


def discoverDevices(run: Callable[..., Any] = subprocess.run) -> list[Device]:
    """
    The machine's NVIDIA GPUs as nvidia-smi lists them; none if there is no
    nvidia-smi on the PATH or it fails (a machine without a driver has none
    to offer).
    """
    if shutil.which(QUERY[0]) is None:
        return []
    try:
        done = run(list(QUERY), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        log.warn("cannot list GPUs with nvidia-smi: {why}", why=str(e))
        return []
    if done.returncode != 0:
        log.warn(
            "nvidia-smi failed (status {code}): {why}",
            code=done.returncode,
            why=(done.stderr or done.stdout or "").strip()[:500],
        )
        return []
    return parseDevices(done.stdout)


def offeredDevices(gpus: int | None, run: Callable[..., Any] = subprocess.run) -> list[Device]:
    """
    The GPUs the agent offers: those nvidia-smi lists, or with C{--gpus N}
    the first N of them; if it lists fewer than N (or there is no
    nvidia-smi), N devices numbered 0 to N-1, of unknown name and memory.
    """
    if gpus == 0:
        return []
    found = discoverDevices(run)
    if gpus is None:
        return found
    if len(found) >= gpus:
        return found[:gpus]
    return [{"index": i, "name": "", "memory_mb": 0} for i in range(gpus)]


def taskEnvironment(given: Sequence[int], offered: int) -> Mapping[str, str]:
    """
    What a task's environment gets from the GPUs its assignment gave it,
    on an agent that offers C{offered} GPUs.

    A task given devices sees those alone: C{CUDA_VISIBLE_DEVICES} and
    C{MASTERD_GPU_DEVICES} are their indexes, comma-separated, and
    C{CUDA_DEVICE_ORDER} is C{PCI_BUS_ID}, the order nvidia-smi numbers them
    in (CUDA's own default, fastest first, may number them otherwise). A
    task given none on an agent that offers GPUs sees none
    (C{CUDA_VISIBLE_DEVICES} empty), as on Deadline and OpenCue: it cannot
    take a device another task was given. An agent that offers no GPUs
    leaves the variables as its own environment has them.
    """
    if not given and offered <= 0:
        return {}
    indexes = ",".join(str(i) for i in given)
    return {
        "CUDA_VISIBLE_DEVICES": indexes,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "MASTERD_GPU_DEVICES": indexes,
    }
