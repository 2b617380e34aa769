"""
What the agent reports about its machine: hardware at hello, usage with every
heartbeat (psutil, which comes with the master's dependencies).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import psutil


def hardware(gpus: int | None = None) -> dict[str, Any]:
    """
    What the machine has; C{gpus} as given, else as C{nvidia-smi} counts
    them (0 without it).
    """
    return {
        "os": f"{platform.system()} {platform.release()}".strip(),
        "cpus": os.cpu_count() or 0,
        "ram_mb": int(psutil.virtual_memory().total // (1024 * 1024)),
        "gpus": countGPUs() if gpus is None else gpus,
    }


def countGPUs(run: Callable[..., Any] = subprocess.run) -> int:
    """
    NVIDIA GPUs, one line each in C{nvidia-smi -L}; 0 if there is no
    nvidia-smi or it fails (a machine without a driver has none to offer).
    """
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        done = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    if done.returncode != 0:
        return 0
    return sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))


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
