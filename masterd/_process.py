"""
Processes of this machine, for whoever must know whether one still runs
(the agent's adopted tasks, the embedded PostgreSQL's owners).
"""

from __future__ import annotations

import os
from pathlib import Path


def processAlive(pid: int) -> bool:
    """
    Is there a live process C{pid}? (A zombie answers kill(0), yet it has
    exited.)
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
