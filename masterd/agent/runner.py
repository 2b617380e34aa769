"""
Running tasks: each through the shim (L{masterd.agent.shim}), in its own
session, with its output tailed from a log file and its exit status read
from a file, so that a task outlives an agent restart and is adopted again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import asdict, define
from openjd.sessions import PathMappingRule
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from masterd._process import processAlive
from masterd.service import Periodic

from .accounting import cleanUsage
from .gpus import taskEnvironment
from .openjd import DEFAULT_LINGER_S, OpenJDRunner

log = Logger()

#: Lines sent in one log message at the most.
LOG_BATCH_LINES = 500
#: How long a task may take to stop after SIGTERM before it is killed.
KILL_GRACE_S = 10.0


@define
class Run:
    task_id: int
    attempt: int
    pid: int
    log_path: str
    exit_path: str
    offset: int = 0
    canceled: bool = False
    reason: str = ""
    partial: str = ""


class _Quiet(ProcessProtocol):
    """
    The shim's own pipes carry nothing; its end is noticed by the runner.
    """

    def __init__(self, onEnd: Callable[[], None]) -> None:
        self.onEnd = onEnd

    def processEnded(self, reason: Any) -> None:
        self.onEnd()


class Runner:
    """
    The tasks this agent runs. C{report} is called with talkback messages
    (task_update and log) to send.
    """

    def __init__(
        self,
        reactor: Any,
        stateDir: Path,
        report: Callable[[dict[str, Any]], None],
        pollInterval: float = 0.5,
        gpus: int = 0,
        pathMapping: Sequence[PathMappingRule] = (),
        openjdLinger: float = DEFAULT_LINGER_S,
    ) -> None:
        self._reactor = reactor
        #: How many GPUs the agent offers: on a GPU host a task sees only
        #: the devices it was given (gpus.taskEnvironment).
        self.gpus = gpus
        self._stateDir = stateDir
        self._tasksDir = stateDir / "tasks"
        self._tasksDir.mkdir(parents=True, exist_ok=True)
        self._send = report
        #: Messages not yet sent: the connection drains it whenever it can.
        self.outbox: list[dict[str, Any]] = []
        #: Final reports (done, failed) the master has not acknowledged yet,
        #: by (task, attempt): kept, across restarts too, and sent again
        #: after each welcome until the master says it has written them.
        self.unacked: dict[tuple[int, int], dict[str, Any]] = {}
        self.runs: dict[int, Run] = {}
        #: Tasks whose shim this process started (and will see end), and
        #: those whose shim has ended.
        self._spawned: set[int] = set()
        self._ended: set[int] = set()
        #: Pending timeouts and kill escalations, by task.
        self._calls: dict[int, list[IDelayedCall]] = {}
        self._poll = Periodic("agent.poll", self.poll, pollInterval, reactor)
        #: The tasks whose assignment has C{openjd}: run in OpenJD sessions.
        self.openjd = OpenJDRunner(
            reactor, self._report, self._final, pathMapping, openjdLinger, gpus
        )
        self._load()

    def _report(self, message: dict[str, Any]) -> None:
        self.outbox.append(message)
        self._send(message)

    def sent(self, message: dict[str, Any]) -> None:
        """
        The connection sent C{message}: it leaves the outbox.
        """
        try:
            self.outbox.remove(message)
        except ValueError:
            pass

    # -- state that survives a restart -------------------------------------

    @property
    def _statePath(self) -> Path:
        return self._stateDir / "running.json"

    def _load(self) -> None:
        try:
            saved = json.loads(self._statePath.read_text())
        except (OSError, ValueError):
            return
        if isinstance(saved, list):  # the runs alone, as written before acks
            saved = {"runs": saved, "unacked": []}
        for message in saved.get("unacked", []):
            self.unacked[message["task_id"], message["attempt"]] = message
        for item in saved.get("runs", []):
            run = Run(**item)
            if processAlive(run.pid) or Path(run.exit_path).exists():
                self.runs[run.task_id] = run
                log.info("adopted task {taskId} (pid {pid})", taskId=run.task_id, pid=run.pid)

    def _save(self) -> None:
        temporary = self._statePath.with_suffix(".tmp")
        temporary.write_text(
            json.dumps(
                {
                    "runs": [asdict(r) for r in self.runs.values()],
                    "unacked": list(self.unacked.values()),
                }
            )
        )
        os.replace(temporary, self._statePath)

    def listed(self) -> list[dict[str, int]]:
        """
        What the agent runs, for its hello: also the tasks that finished and
        whose final report the master has not acknowledged (it may never
        have reached a master), so that they are not taken for lost.
        """
        running = [{"task_id": r.task_id, "attempt": r.attempt} for r in self.runs.values()]
        running += self.openjd.listed()
        return running + [{"task_id": t, "attempt": a} for t, a in self.unacked]

    def acknowledged(self, taskID: int, attempt: int) -> None:
        """
        The master has written the final report of this attempt.
        """
        if self.unacked.pop((taskID, attempt), None) is not None:
            self._save()

    def runningReports(self) -> list[dict[str, Any]]:
        """
        A C{running} report for each task it runs now.
        """
        return [
            {"type": "task_update", "task_id": r.task_id, "attempt": r.attempt,
             "state": "running"}
            for r in self.runs.values()
        ] + self.openjd.runningReports()  # fmt: skip

    def unsent(self) -> list[dict[str, Any]]:
        """
        Final reports sent but not acknowledged: to send again.
        """
        queued = {id(m) for m in self.outbox}
        return [m for m in self.unacked.values() if id(m) not in queued]

    def start(self) -> None:
        self._poll.start()

    def stop(self) -> None:
        self._poll.stop()
        for taskID in list(self._calls):
            self._cancelCalls(taskID)

    def stopOpenJD(self) -> Deferred[None]:
        """
        OpenJD tasks cannot outlive the agent (their sessions are its own):
        they are canceled and handed back, and their sessions exit their
        environments (bounded in time).
        """
        return self.openjd.stop()

    def _later(self, taskID: int, delay: float, f: Callable[..., object], *args: Any) -> None:
        clock: IReactorTime = self._reactor
        self._calls.setdefault(taskID, []).append(clock.callLater(delay, f, *args))

    def _cancelCalls(self, taskID: int) -> None:
        for call in self._calls.pop(taskID, []):
            if call.active():
                call.cancel()

    # -- running ------------------------------------------------------------

    def run(self, task: dict[str, Any]) -> None:
        taskID, attempt = task["task_id"], task["attempt"]
        if taskID in self.runs:
            return
        if task.get("openjd"):
            self.openjd.run(task)
            return
        base = self._tasksDir / f"{taskID}-{attempt}"
        logPath, exitPath = f"{base}.log", f"{base}.exit"
        for stale in (logPath, exitPath):
            if os.path.exists(stale):
                os.unlink(stale)
        Path(logPath).touch()
        env = dict(os.environ)
        env.update(task.get("env") or {})
        env["MASTERD_TASK_ID"] = str(taskID)
        env["MASTERD_ATTEMPT"] = str(attempt)
        # After the job's env: a job cannot reach a GPU another task holds.
        env.update(taskEnvironment(task.get("gpu_devices") or (), self.gpus))
        argv = [sys.executable, "-m", "masterd.agent.shim", exitPath, logPath, "--",
                *task["command"]]  # fmt: skip
        cwd = task.get("cwd") or None
        if cwd is not None and not os.path.isdir(cwd):
            self._finish(Run(taskID, attempt, 0, logPath, exitPath), "failed", None,
                         f"the working directory {cwd} does not exist")  # fmt: skip
            return
        reactor: IReactorProcess = self._reactor
        process = reactor.spawnProcess(
            _Quiet(lambda: self._ended.add(taskID)), sys.executable, argv, env=env, path=cwd,
            childFDs={0: "w", 1: "r", 2: "r"},
        )  # fmt: skip
        run = Run(taskID, attempt, process.pid, logPath, exitPath)
        self._spawned.add(taskID)
        self.runs[taskID] = run
        self._save()
        self._report({"type": "task_update", "task_id": taskID, "attempt": attempt,
                      "state": "running"})  # fmt: skip
        timeout = task.get("timeout_s")
        if timeout:
            self._later(taskID, timeout, self.cancel, taskID, attempt, "timeout")

    def cancel(self, taskID: int, attempt: int, reason: str) -> None:
        if self.openjd.cancel(taskID, attempt, reason):
            return
        run = self.runs.get(taskID)
        if run is None or run.attempt != attempt or run.canceled:
            return
        run.canceled, run.reason = True, reason
        log.info("stopping task {taskId}: {reason}", taskId=taskID, reason=reason)
        self._signal(run, signal.SIGTERM)
        self._later(taskID, KILL_GRACE_S, self._signal, run, signal.SIGKILL)

    def _signal(self, run: Run, signum: int) -> None:
        if run.pid <= 0 or self.runs.get(run.task_id) is not run:
            return
        try:
            os.killpg(run.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def cancelAll(self, reason: str) -> None:
        for run in list(self.runs.values()):
            self.cancel(run.task_id, run.attempt, reason)
        self.openjd.cancelAll(reason)

    def _final(self, update: dict[str, Any]) -> None:
        """
        A final report: saved before it is sent, so that it is never lost,
        even if the agent stops right now, and kept until acknowledged.
        """
        self.unacked[update["task_id"], update["attempt"]] = update
        self._save()
        self._report(update)

    # -- watching -----------------------------------------------------------

    def poll(self) -> None:
        for run in list(self.runs.values()):
            self._tail(run)
            if run.task_id in self._spawned:
                # Our own child: wait until it is reaped, pipes closed.
                ended = run.task_id in self._ended
            else:
                # Adopted after a restart: its shim is not our child.
                ended = Path(run.exit_path).exists() or not processAlive(run.pid)
            if ended:
                self._tail(run, final=True)
                self._ended.discard(run.task_id)
                self._spawned.discard(run.task_id)
                status, usage = self._status(run)
                if run.canceled:
                    self._finish(run, "failed", status, f"stopped: {run.reason}", usage)
                elif status == 0:
                    self._finish(run, "done", 0, None, usage)
                else:
                    self._finish(run, "failed", status, f"exited with status {status}", usage)

    def _status(self, run: Run) -> tuple[int | None, dict[str, Any] | None]:
        """
        How the task ended, as its shim wrote it in the exit file: its exit
        status (None: the shim wrote none, it was killed) and what it used
        (None: not known). The file is JSON, C{{"status": N, "usage":
        {...}}}, or, from the shim of an agent before usage (adopted after
        an upgrade), the status alone as plain text.
        """
        try:
            ended = json.loads(Path(run.exit_path).read_text())
        except (OSError, ValueError):
            return None, None
        if isinstance(ended, dict):
            status, usage = ended.get("status"), cleanUsage(ended.get("usage"))
        else:
            status, usage = ended, None
        if not isinstance(status, int) or isinstance(status, bool):
            return None, usage
        return status, usage

    def _tail(self, run: Run, final: bool = False) -> None:
        try:
            with open(run.log_path, "rb") as f:
                f.seek(run.offset)
                data = f.read()
        except OSError:
            return
        if not data and not (final and run.partial):
            return
        run.offset += len(data)
        # Output is bytes of any kind; the master stores text, which holds no
        # NUL (PostgreSQL refuses it): shown as U+FFFD, as bad UTF-8 is.
        text = run.partial + data.decode("utf-8", "replace").replace("\0", "\ufffd")
        lines = text.split("\n")
        run.partial = "" if final else lines.pop()
        if final and lines and lines[-1] == "":
            lines.pop()
        for i in range(0, len(lines), LOG_BATCH_LINES):
            self._report({"type": "log", "task_id": run.task_id, "attempt": run.attempt,
                          "lines": lines[i : i + LOG_BATCH_LINES]})  # fmt: skip
        self._save()

    def _finish(
        self,
        run: Run,
        state: str,
        status: int | None,
        message: str | None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        update: dict[str, Any] = {
            "type": "task_update",
            "task_id": run.task_id,
            "attempt": run.attempt,
            "state": state,
            "exit_code": status,
        }
        if message:
            update["message"] = message
        if usage is not None:
            update["usage"] = usage
        self.runs.pop(run.task_id, None)
        self._cancelCalls(run.task_id)
        self._final(update)
        for path in (run.log_path, run.exit_path):
            try:
                os.unlink(path)
            except OSError:
                pass
