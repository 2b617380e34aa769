"""
The agent's state directory: its id, made once, and an exclusive lock held
for as long as the agent runs, so that two agents never share one id and one
set of task files.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from pathlib import Path
from typing import IO

LOCK_NAME = "agent.lock"


class StateDirectoryBusy(Exception):
    """
    Another running agent holds the state directory.
    """

    def __init__(self, stateDir: Path, pid: int | None) -> None:
        who = f"the agent with pid {pid}" if pid is not None else "another agent"
        super().__init__(f"{stateDir} is in use by {who}; give each agent its own --state-dir")
        self.stateDir = stateDir
        self.pid = pid


def lockStateDir(stateDir: Path) -> IO[str]:
    """
    Take the state directory's lock, and write this process's pid in it.

    The lock is a C{flock} on C{agent.lock}: the kernel lets go of it when
    the process ends, however it ends, so a killed agent never leaves it
    held. Keep the returned file open for as long as the agent runs.

    @raise StateDirectoryBusy: if another process holds it.
    """
    stateDir.mkdir(parents=True, exist_ok=True)
    # Held open on purpose: the lock lasts as long as the file is open.
    lock = open(stateDir / LOCK_NAME, "a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        text = lock.read().strip()
        lock.close()
        raise StateDirectoryBusy(stateDir, int(text) if text.isdigit() else None) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def agentID(stateDir: Path) -> str:
    """
    The agent's id, made once and kept in the state directory.
    """
    stateDir.mkdir(parents=True, exist_ok=True)
    path = stateDir / "agent.json"
    try:
        return str(uuid.UUID(json.loads(path.read_text())["id"]))
    except (OSError, ValueError, KeyError, TypeError):
        ident = str(uuid.uuid4())
        path.write_text(json.dumps({"id": ident}))
        return ident
