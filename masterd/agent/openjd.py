"""
OpenJD tasks: an assigned task whose payload has C{openjd} runs through an
OpenJD session of openjd-sessions (docs/agent.md, "OpenJD tasks"), with the
specification's semantics (How-Jobs-Are-Run).

One session per job per slot in use: a session runs one action at a time,
so two tasks of a job running at once have a session each. A session enters
its job's environments once, the step's environments when its step changes
(after exiting the previous step's), and runs each task with its parameter
values. After its last task it lingers (C{openjd-linger-s}) so that the next
task of the job reuses it, then exits every environment it entered, in
reverse order, and is cleaned up; so too after a failure or a cancel (a
session that failed or was canceled can only exit its environments), and
when the agent stops (bounded in time).

openjd-sessions runs each action in its own threads and calls back from
them; its own calls (which write embedded files and start processes, and
clean up working directories) are made in the reactor's thread pool. What
comes back (the callback's action status, the session's log lines) is
marshalled to the reactor thread with C{callFromThread}, in order.

A task's usage (docs/agent.md, "Usage of each task"): openjd-sessions starts
and reaps the action's process itself, so there is no rusage of it to read;
its pid, which the session logs as the process starts, is the root of a
L{TreeSampler} from then until the action ends, and the wall time is that of
the run action.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from openjd.model import (
    RevisionExtensions,
    SpecificationRevision,
)
from openjd.model.v2023_09 import Environment
from openjd.sessions import (
    LOG,
    ActionState,
    ActionStatus,
    PathMappingRule,
    Session,
    SessionState,
)
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ._openjd_tasks import DEFAULT_EXTENSIONS as DEFAULT_EXTENSIONS
from ._openjd_tasks import OpenJDSession, OpenJDTask, cleanText, failureText
from ._openjd_tasks import pathMappingRules as pathMappingRules
from .accounting import TreeSampler, usageReport

log = Logger()

T = TypeVar("T")

#: How long a session waits for another task of its job after its last one.
DEFAULT_LINGER_S = 10.0
#: When the agent stops: how long a running action has to end (an urgent
#: cancel: NOTIFY_THEN_TERMINATE gets this long at the most) ...
STOP_GRACE_S = 5.0
#: ... and how long the sessions have, in all, to exit their environments;
#: past it, whatever still runs is terminated and the sessions cleaned up.
STOP_BOUND_S = 30.0
#: Output lines and progress are gathered for this long, then sent together.
FLUSH_S = 0.2
#: Lines sent in one log message at the most (as the native runner does).
LOG_BATCH_LINES = 500
#: The longest status (TaskUpdate.status) and message (TaskUpdate.message).
MAX_STATUS = 1000
MAX_MESSAGE = 10_000

#: What openjd-sessions logs as it starts an action's process (the
#: process's own output comes after it, under "Output:").
_STARTED = re.compile(r"^Command started as pid: (\d+)$", re.MULTILINE)


class _Forward(logging.Handler):
    """
    The openjd-sessions log lines of this agent's sessions, to the reactor.
    """

    def __init__(self, owner: OpenJDRunner) -> None:
        super().__init__()
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        sessionID = getattr(record, "session_id", None)
        if sessionID is None or sessionID not in self.owner.byID:
            return
        try:
            text = record.getMessage()
        except Exception:
            return
        self.owner.reactor.callFromThread(self.owner.line, sessionID, text)


class OpenJDRunner:
    """
    The OpenJD tasks of an agent. C{report} sends a talkback message (a
    C{running} task_update, C{log}); C{final} records and sends a final
    report (kept until acknowledged, as the native runner's).
    """

    def __init__(
        self,
        reactor: Any,
        report: Callable[[dict[str, Any]], None],
        final: Callable[[dict[str, Any]], None],
        pathMapping: Sequence[PathMappingRule] = (),
        linger: float = DEFAULT_LINGER_S,
        gpus: int = 0,
    ) -> None:
        self.reactor = reactor
        self._report = report
        self._final = final
        self.pathMapping = list(pathMapping)
        self.linger = linger
        self.gpus = gpus
        #: The tasks it runs, by task id.
        self.tasks: dict[int, OpenJDTask] = {}
        #: The sessions, by job id, and by session id.
        self.sessions: dict[int, list[OpenJDSession]] = {}
        self.byID: dict[str, OpenJDSession] = {}
        self.stopping = False
        self._serial = 0
        self._handler: _Forward | None = None

    # -- what the runner asks -----------------------------------------------

    def listed(self) -> list[dict[str, int]]:
        return [{"task_id": t.task_id, "attempt": t.attempt} for t in self.tasks.values()]

    def runningReports(self) -> list[dict[str, Any]]:
        return [
            {"type": "task_update", "task_id": t.task_id, "attempt": t.attempt,
             "state": "running"}
            for t in self.tasks.values()
        ]  # fmt: skip

    def run(self, assigned: dict[str, Any]) -> None:
        taskID, attempt = assigned["task_id"], assigned["attempt"]
        if taskID in self.tasks:
            return
        try:
            task = OpenJDTask(assigned, self.gpus)
        except Exception as e:
            log.warn("task {taskId}: cannot read its OpenJD payload: {why}", taskId=taskID,
                     why=str(e))  # fmt: skip
            self._final(
                {"type": "task_update", "task_id": taskID, "attempt": attempt,
                 "state": "failed", "exit_code": None,
                 "message": cleanText(f"cannot read the OpenJD payload: {e}", MAX_MESSAGE)}
            )  # fmt: skip
            return
        if self.stopping:
            self._final(
                {"type": "task_update", "task_id": taskID, "attempt": attempt,
                 "state": "rejected", "exit_code": None, "message": "the agent is stopping"}
            )  # fmt: skip
            return
        self.tasks[taskID] = task
        session = self._sessionFor(task)
        session.task, task.session = task, session
        if session.linger is not None and session.linger.active():
            session.linger.cancel()
        session.linger = None
        self._report({"type": "task_update", "task_id": taskID, "attempt": attempt,
                      "state": "running"})  # fmt: skip
        if task.timeout_s:
            task.timeoutCall = self.reactor.callLater(
                task.timeout_s, self.cancel, taskID, attempt, "timeout"
            )
        d = Deferred.fromCoroutine(self._runOn(session, task))
        d.addErrback(lambda f: log.failure("OpenJD task {taskId}", f, taskId=taskID))

    def cancel(self, taskID: int, attempt: int, reason: str) -> bool:
        """
        Cancel an OpenJD task: its running action is canceled as its
        C{cancelation} says (openjd-sessions). False: not an OpenJD task of
        this agent's.
        """
        task = self.tasks.get(taskID)
        if task is None or task.attempt != attempt:
            return False
        if not task.canceled:
            task.canceled, task.reason = True, reason
            log.info("canceling OpenJD task {taskId}: {reason}", taskId=taskID, reason=reason)
            session = task.session
            if session is not None and session.task is task and session.started:
                self._cancelAction(session)
        return True

    def cancelAll(self, reason: str) -> None:
        for task in list(self.tasks.values()):
            self.cancel(task.task_id, task.attempt, reason)

    def stop(self) -> Deferred[None]:
        """
        The agent stops: running tasks are canceled (urgently) and handed
        back, every session exits its environments and is cleaned up, in at
        most about C{STOP_BOUND_S}.
        """
        self.stopping = True
        for task in list(self.tasks.values()):
            if not task.canceled:
                task.canceled, task.reason, task.stopping = True, "the agent stopped", True
                session = task.session
                if session is not None and session.task is task and session.started:
                    self._cancelAction(session, timedelta(seconds=STOP_GRACE_S))
        sessions = [s for group in self.sessions.values() for s in group]
        for session in sessions:
            if session.task is None and not session.ending:
                self._endSoon(session)
        if not sessions:
            return succeed(None)
        result: Deferred[None] = Deferred()
        bound = self.reactor.callLater(STOP_BOUND_S, self._hurry, sessions)

        def stopped(_: object = None) -> None:
            # All ended, or, past the bound and a little more, the agent
            # stops anyway.
            for call in (bound, hard):
                if call.active():
                    call.cancel()
            if not result.called:
                result.callback(None)

        hard = self.reactor.callLater(STOP_BOUND_S + STOP_GRACE_S, stopped)
        DeferredList([s.ended for s in sessions], consumeErrors=True).addCallback(stopped)
        return result

    def _hurry(self, sessions: list[OpenJDSession]) -> None:
        log.warn("OpenJD sessions still ending after {s:.0f} s: terminating them", s=STOP_BOUND_S)
        for session in sessions:
            session.hurry = True
            if session.action is not None and session.started:
                self._cancelAction(session, timedelta(seconds=0))

    # -- sessions -----------------------------------------------------------

    def _sessionFor(self, task: OpenJDTask) -> OpenJDSession:
        """
        An idle session of the task's job (one on the task's step first),
        or a new one.
        """
        idle = [s for s in self.sessions.get(task.job_id, ()) if s.task is None and not s.ending]
        for session in idle:
            if session.step == task.step_name:
                return session
        if idle:
            return idle[0]
        self._serial += 1
        session = OpenJDSession(f"masterd-job{task.job_id}-{self._serial}", task)
        self.sessions.setdefault(task.job_id, []).append(session)
        self.byID[session.id] = session
        if self._handler is None:
            self._handler = _Forward(self)
            LOG.addHandler(self._handler)
        return session

    def _thread(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args, **kwargs)

    def _callback(self, sessionID: str, status: ActionStatus) -> None:
        # From openjd-sessions' threads (or the thread that made the call).
        self.reactor.callFromThread(self._status, sessionID, status)

    def _status(self, sessionID: str, status: ActionStatus) -> None:
        session = self.byID.get(sessionID)
        if session is None:
            return
        task = session.task
        if status.state == ActionState.RUNNING:
            if task is not None:
                if task.running and status.progress is not None:
                    task.progress = min(max(float(status.progress) / 100.0, 0.0), 1.0)
                if status.status_message is not None:
                    task.status = cleanText(status.status_message, MAX_STATUS)
                self._soon(task)
            return
        action, session.action = session.action, None
        if action is not None and not action.called:
            action.callback(status)

    async def _action(
        self, session: OpenJDSession, f: Callable[..., object], **kwargs: Any
    ) -> ActionStatus:
        """
        Start an action with C{f(**kwargs)} (a Session method) and wait for
        its end: its final status.
        """
        action: Deferred[ActionStatus] = Deferred()
        session.action, session.started = action, False
        try:
            await self._thread(f, **kwargs)
        except Exception as e:
            if session.action is action:
                session.action = None
            if action.called:
                return await action
            return ActionStatus(state=ActionState.FAILED, fail_message=str(e))
        session.started = True
        task = session.task
        if not action.called and (session.hurry or (task is not None and task.canceled)):
            # Canceled while it was being started.
            self._cancelAction(session, timedelta(seconds=0) if session.hurry else None)
        try:
            return await action
        finally:
            session.started = False

    def _cancelAction(self, session: OpenJDSession, limit: timedelta | None = None) -> None:
        if session.session is None or session.action is None:
            return
        d = self._thread(session.session.cancel_action, time_limit=limit)
        # No action running any more: it ended first.
        d.addErrback(lambda f: f.trap(RuntimeError))
        d.addErrback(lambda f: log.failure("canceling an OpenJD action", f))

    async def _enter(
        self, session: OpenJDSession, env: Environment, task: OpenJDTask, step: bool
    ) -> str | None:
        """
        Enter an environment for C{task}; None if it went well, else why not.
        """
        assert session.session is not None
        identifier = f"{'step' if step else 'job'}:{env.name}"
        if step:
            session.step_entered.append(identifier)
        status = await self._action(
            session,
            session.session.enter_environment,
            environment=env,
            identifier=identifier,
            os_env_vars=task.env or None,
            step_name=task.step_name if step else None,
        )
        if status.state == ActionState.SUCCESS:
            return None
        kind = "step" if step else "job"
        return f"entering the {kind} environment {env.name}: " + failureText(status)

    async def _runOn(self, session: OpenJDSession, task: OpenJDTask) -> None:
        try:
            why = await self._prepare(session, task)
            if task.canceled:
                why = f"stopped: {task.reason}"
            if why is not None:
                self._finish(task, "failed", None, why)
            else:
                assert session.session is not None
                task.running = True
                task.runStarted = time.monotonic()
                status = await self._action(
                    session,
                    session.session.run_task,
                    step_script=task.script,
                    task_parameter_values=task.parameters,
                    os_env_vars=task.task_env,
                    step_name=task.step_name,
                )
                task.runEnded = time.monotonic()
                task.running = False
                self._ended(task, status)
        except Exception as e:
            log.failure("OpenJD task {taskId}", taskId=task.task_id)
            if task.task_id in self.tasks:
                self._finish(task, "failed", None, f"the agent failed to run it: {e}")
        session.task = None
        ready = session.session is not None and session.session.state == SessionState.READY
        if ready and not self.stopping:
            session.linger = self.reactor.callLater(self.linger, self._endSoon, session)
        else:
            self._endSoon(session)

    async def _prepare(self, session: OpenJDSession, task: OpenJDTask) -> str | None:
        """
        The session ready to run C{task}: made, its job's environments
        entered, the task's step's too. None, or why it cannot run.
        """
        if session.session is None:
            try:
                session.session = await self._thread(
                    Session,
                    session_id=session.id,
                    job_parameter_values=task.job_parameters,
                    job_name=task.job_name,
                    path_mapping_rules=self.pathMapping or None,
                    callback=self._callback,
                    revision_extensions=RevisionExtensions(
                        spec_rev=SpecificationRevision.v2023_09,
                        supported_extensions=task.extensions,
                    ),
                )
            except Exception as e:
                return f"cannot start an OpenJD session: {e}"
            for env in task.job_environments:
                if task.canceled:
                    return None
                why = await self._enter(session, env, task, step=False)
                if why is not None:
                    return why
        if session.step != task.step_name:
            why = await self._exitStep(session, keepRunning=True)
            if why is not None:
                return why
            session.step = task.step_name
            for env in task.step_environments:
                if task.canceled:
                    return None
                why = await self._enter(session, env, task, step=True)
                if why is not None:
                    return why
        return None

    async def _exitStep(self, session: OpenJDSession, keepRunning: bool) -> str | None:
        """
        Exit the step's environments, in reverse order.
        """
        assert session.session is not None
        while session.step_entered:
            identifier = session.step_entered.pop()
            why = await self._exit(session, identifier, keepRunning)
            if why is not None:
                return why
        session.step = None
        return None

    async def _exit(self, session: OpenJDSession, identifier: str, keepRunning: bool) -> str | None:
        assert session.session is not None
        status = await self._action(
            session,
            session.session.exit_environment,
            identifier=identifier,
            keep_session_running=keepRunning,
        )
        if status.state == ActionState.SUCCESS:
            return None
        return f"exiting the environment {identifier.split(':', 1)[1]}: " + failureText(status)

    def _endSoon(self, session: OpenJDSession) -> None:
        if session.ending:
            return
        session.ending = True
        if session.linger is not None and session.linger.active():
            session.linger.cancel()
        d = Deferred.fromCoroutine(self._end(session))
        d.addErrback(lambda f: log.failure("ending OpenJD session {id}", f, id=session.id))

    async def _end(self, session: OpenJDSession) -> None:
        """
        Exit every environment the session entered, in reverse order (those
        whose entering failed too, as openjd-sessions lists them), and
        clean it up.
        """
        try:
            openjd = session.session
            if openjd is not None:
                for identifier in reversed(openjd.environments_entered):
                    if session.hurry:
                        break
                    why = await self._exit(session, identifier, keepRunning=False)
                    if why is not None:
                        log.warn("OpenJD session {id}: {why}", id=session.id, why=why)
                await self._thread(openjd.cleanup)
        finally:
            group = self.sessions.get(session.job_id, [])
            if session in group:
                group.remove(session)
            if not group:
                self.sessions.pop(session.job_id, None)
            self.byID.pop(session.id, None)
            if not self.byID and self._handler is not None:
                LOG.removeHandler(self._handler)
                self._handler = None
            session.ended.callback(None)

    # -- reports ------------------------------------------------------------

    def line(self, sessionID: str, text: str) -> None:
        """
        A log line of a session: to its task's log, or the agent's own log
        when it runs none (entering or exiting environments after its last
        task: a finished attempt's log takes no more lines).
        """
        session = self.byID.get(sessionID)
        text = text.replace("\0", "\ufffd")
        task = session.task if session is not None else None
        if task is None or task.task_id not in self.tasks:
            for line in text.split("\n"):
                # Not the banners' rules and blank lines, in the agent's log.
                if line.strip("=- "):
                    log.info("OpenJD session {id}: {line}", id=sessionID, line=line)
            return
        if task.running and task.sampler is None and task.runEnded is None:
            # The first such line of its run action is the session's own:
            # it comes before anything the process prints.
            started = _STARTED.search(text)
            if started is not None:
                task.sampler = TreeSampler.watch(int(started[1]))
        task.lines.extend(text.split("\n"))
        self._soon(task)

    def _soon(self, task: OpenJDTask) -> None:
        if task.flushCall is None or not task.flushCall.active():
            task.flushCall = self.reactor.callLater(FLUSH_S, self._flush, task)

    def _flush(self, task: OpenJDTask) -> None:
        if task.flushCall is not None and task.flushCall.active():
            task.flushCall.cancel()
        task.flushCall = None
        lines, task.lines = task.lines, []
        for i in range(0, len(lines), LOG_BATCH_LINES):
            self._report({"type": "log", "task_id": task.task_id, "attempt": task.attempt,
                          "lines": lines[i : i + LOG_BATCH_LINES]})  # fmt: skip
        if (task.progress, task.status) != task.sent:
            update: dict[str, Any] = {"type": "task_update", "task_id": task.task_id,
                                      "attempt": task.attempt, "state": "running"}  # fmt: skip
            if task.progress is not None and task.progress != task.sent[0]:
                update["progress"] = task.progress
            if task.status is not None and task.status != task.sent[1]:
                update["status"] = task.status
            task.sent = (task.progress, task.status)
            self._report(update)

    def _ended(self, task: OpenJDTask, status: ActionStatus) -> None:
        if status.state == ActionState.SUCCESS:
            self._finish(task, "done", status.exit_code or 0, None)
        elif status.state == ActionState.TIMEOUT:
            self._finish(task, "failed", status.exit_code, "the action timed out"
                         + (f": {status.fail_message}" if status.fail_message else ""))  # fmt: skip
        elif status.state == ActionState.CANCELED or task.canceled:
            self._finish(task, "failed", status.exit_code, f"stopped: {task.reason or 'canceled'}")
        else:
            self._finish(task, "failed", status.exit_code, failureText(status))

    def _finish(
        self, task: OpenJDTask, state: str, exitCode: int | None, message: str | None
    ) -> None:
        if self.tasks.get(task.task_id) is not task:
            return
        self._flush(task)
        if task.timeoutCall is not None and task.timeoutCall.active():
            task.timeoutCall.cancel()
        del self.tasks[task.task_id]
        usage = self._usage(task)
        if task.stopping:
            # The agent stops: handed back, not counted as a failure.
            state, message = "rejected", "the agent stopped while it ran"
        update: dict[str, Any] = {
            "type": "task_update",
            "task_id": task.task_id,
            "attempt": task.attempt,
            "state": state,
            "exit_code": exitCode,
        }
        if message:
            update["message"] = cleanText(message, MAX_MESSAGE)
        if usage is not None and state in ("done", "failed"):
            update["usage"] = usage
        self._final(update)

    def _usage(self, task: OpenJDTask) -> dict[str, Any] | None:
        """
        What the task's run action used (its sampler stopped), or None if it
        never started one.
        """
        sampler, task.sampler = task.sampler, None
        if sampler is not None:
            sampler.stop()
        if task.runStarted is None:
            return None
        ended = time.monotonic() if task.runEnded is None else task.runEnded
        wallS = ended - task.runStarted
        return usageReport(wallS) if sampler is None else sampler.report(wallS)
