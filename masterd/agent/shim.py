"""
The task shim: runs one task's command on behalf of the agent.

    python -m masterd.agent.shim EXIT_FILE LOG_FILE -- ARGV...

It starts a new session (so the task's whole process group can be killed at
once), runs the command without a shell, with stdout and stderr appended to
LOG_FILE, and when the command ends writes its exit status to EXIT_FILE
(atomically: written to a temporary name, then renamed). The agent tails the
log and reads the exit status; because neither goes through the agent's own
pipes, a task survives a restart of the agent, which adopts it again.

A command killed by signal N is reported as exit status -N.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: python -m masterd.agent.shim EXIT_FILE LOG_FILE -- ARGV...\n")
        return 2
    exitFile, logFile, command = argv[0], argv[1], argv[3:]
    os.setsid()
    with open(logFile, "ab", buffering=0) as log:
        try:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)  # fmt: skip
        except OSError as e:
            log.write(f"masterd-agent: cannot run {command[0]!r}: {e.strerror or e}\n".encode())
            status = 127
        else:
            # The agent signals the whole group; the shim outlives its child
            # only long enough to record how it ended.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            status = child.wait()
    temporary = exitFile + ".tmp"
    with open(temporary, "w") as out:
        out.write(str(status))
    os.replace(temporary, exitFile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
