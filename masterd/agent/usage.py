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


def hardware(gpus: int | None = None) -> dict[str, Any]:
    """
    What the machine has; C{gpus} as given, else as nvidia-smi lists them
    (0 without it; L{masterd.agent.gpus}).
    """
    return {
        "os": f"{platform.system()} {platform.release()}".strip(),
        "cpus": os.cpu_count() or 0,
        "ram_mb": int(psutil.virtual_memory().total // (1024 * 1024)),
        "gpus": len(discoverDevices()) if gpus is None else gpus,
    }


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
