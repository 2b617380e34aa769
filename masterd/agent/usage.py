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


def hardware() -> dict[str, Any]:
    return {
        "os": f"{platform.system()} {platform.release()}".strip(),
        "cpus": os.cpu_count() or 0,
        "ram_mb": int(psutil.virtual_memory().total // (1024 * 1024)),
        "gpus": 0,
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
    return report
