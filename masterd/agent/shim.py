"""
The task shim: runs one task's command on behalf of the agent.

    python -m masterd.agent.shim EXIT_FILE LOG_FILE -- ARGV...

It starts a new session (so the task's whole process group can be killed at
once), runs the command without a shell, with stdout and stderr appended to
LOG_FILE, and when the command ends writes how it ended to EXIT_FILE
(atomically: written to a temporary name, then renamed). The agent tails the
log and reads the exit file; because neither goes through the agent's own
pipes, a task survives a restart of the agent, which adopts it again.

The exit file is JSON: C{{"status": N, "usage": {...}}}, C{usage} being what
the command's process tree used (L{masterd.agent.accounting}; docs/agent.md,
"Usage of each task"), absent when the command could not be started. A
command killed by signal N is reported as exit status -N. (Shims of agents
before usage wrote the status alone, as plain text: the runner reads both.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from .accounting import TreeSampler, maxRSSKB, usageReport


def _wait(child: subprocess.Popen[bytes], started: float) -> tuple[int, dict[str, Any]]:
    """
    Wait for C{child}, sampling its tree meanwhile: its exit status and its
    usage.
    """
    sampler = TreeSampler.watch(child.pid)
    # wait4, not child.wait(): the rusage of the child, which includes that
    # of every descendant it (or they) waited for.
    _, waitStatus, rusage = os.wait4(child.pid, 0)
    wallS = time.monotonic() - started
    status = child.returncode = os.waitstatus_to_exitcode(waitStatus)
    if sampler is None:
        usage = usageReport(wallS, rusage.ru_utime, rusage.ru_stime, maxRSSKB(rusage))
    else:
        sampler.stop()
        usage = sampler.report(wallS, rusage)
    return status, usage


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: python -m masterd.agent.shim EXIT_FILE LOG_FILE -- ARGV...\n")
        return 2
    exitFile, logFile, command = argv[0], argv[1], argv[3:]
    os.setsid()
    ended: dict[str, Any]
    with open(logFile, "ab", buffering=0) as log:
        started = time.monotonic()
        try:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)  # fmt: skip
        except OSError as e:
            log.write(f"masterd-agent: cannot run {command[0]!r}: {e.strerror or e}\n".encode())
            # Nothing ran: no usage.
            ended = {"status": 127}
        else:
            # The agent signals the whole group; the shim outlives its child
            # only long enough to record how it ended.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            status, usage = _wait(child, started)
            ended = {"status": status, "usage": usage}
    temporary = exitFile + ".tmp"
    with open(temporary, "w") as out:
        json.dump(ended, out)
    os.replace(temporary, exitFile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
