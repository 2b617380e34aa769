"""
The agent's state directory: its id, made once, its credential (the secret
the master gave it when it enrolled), and an exclusive lock held for as long
as the agent runs, so that two agents never share one id and one set of task
files.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from pathlib import Path
from typing import IO

LOCK_NAME = "agent.lock"
CREDENTIAL_NAME = "credential"


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


def readCredential(stateDir: Path) -> str | None:
    """
    The credential the master gave this agent id when it enrolled it, if
    it has one.
    """
    try:
        text = (stateDir / CREDENTIAL_NAME).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def writeCredential(stateDir: Path, credential: str) -> None:
    """
    Keep the credential, readable by this user alone, so that a crash at
    any moment leaves either the old file or the new one whole, on disk: a
    temporary file made 0600 from the start (never readable by others, not
    even for a moment), written and synced, then renamed over the old one,
    and the directory synced so that the rename survives a power cut. The
    master cannot say it again: losing it locks the agent's id out until an
    admin resets it.
    """
    stateDir.mkdir(parents=True, exist_ok=True)
    final = stateDir / CREDENTIAL_NAME
    temporary = stateDir / f".{CREDENTIAL_NAME}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        # An old temporary file keeps its mode: say it again.
        os.fchmod(f.fileno(), 0o600)
        f.write(f"{credential}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, final)
    directory = os.open(stateDir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
