"""
masterctl's two loops that wait on the farm: watching a job's progress and
following a task's log. Both sleep through the runtime (a fake in tests),
and both ride out a few transient failures (the master restarting, its
database briefly away) instead of dying in the middle of a long render.

Both show what changed every C{--interval} seconds, and in between ask the
master every L{END_CHECK_S} whether the job or task finished (one small
request), so that the end is noticed at once whatever the interval.
"""

from __future__ import annotations

from collections.abc import Callable

from ._context import Context, Runtime
from ._errors import MasterdError
from ._follow import LogFollower
from ._output import bar, percent
from .models import Job, Task

#: Consecutive transient failures tolerated before giving up.
MAX_TRANSIENT_FAILURES = 10
#: Off a terminal, a line is printed when something changed, and at least
#: this often, so that a log file shows the watch is alive.
HEARTBEAT_S = 60.0
BAR_WIDTH = 30
MIN_BAR_WIDTH = 5
#: At most this long between two looks at whether the job or task finished.
END_CHECK_S = 0.5


def progress_line(job: Job, columns: int | None = None) -> str:
    """
    C{job 42 running  [#####-----]  50%  done 20/40  running 8  queued 12  failed 0}

    Within C{columns} characters when given (a terminal's width: a line
    that wraps cannot be redrawn in place), by narrowing the bar first.
    """
    counts = job.task_counts
    fraction = counts.done / counts.total if counts.total else 0.0
    head = f"job {job.id} {job.state}"
    tail = [
        f"done {counts.done}/{counts.total}",
        f"running {counts.assigned + counts.running}",
        f"queued {counts.queued}",
    ]
    if counts.waiting:
        tail.append(f"waiting {counts.waiting}")
    tail.append(f"failed {counts.failed}")
    if counts.canceled:
        tail.append(f"canceled {counts.canceled}")
    width = BAR_WIDTH
    if columns is not None:
        # 2 + 2 + 1: the separators around the bar and before the percentage.
        spare = columns - 1 - len(head) - len("  ".join(tail)) - len("[]") - 4 - 5
        width = max(0, min(BAR_WIDTH, spare))
    meter = f"{bar(fraction, width)} {percent(fraction):>4}" if width >= MIN_BAR_WIDTH else ""
    line = "  ".join(part for part in [head, meter, *tail] if part)
    return line if columns is None else line[: max(0, columns - 1)]


class _Retrier:
    """
    Counts consecutive transient failures; re-raises anything else, or one
    too many.
    """

    def __init__(self, context: Context, interval: float) -> None:
        self.context = context
        self.interval = interval
        self.failures = 0

    def failed(self, error: MasterdError) -> None:
        self.failures += 1
        if not error.transient or self.failures > MAX_TRANSIENT_FAILURES:
            raise error
        self.context.note(f"{error.message} (trying again in {self.interval:g}s)")

    def succeeded(self) -> None:
        self.failures = 0


def wait_for_end(runtime: Runtime, interval: float, finished: Callable[[], bool] | None) -> bool:
    """
    Sleep C{interval} seconds, but every L{END_CHECK_S} of them ask
    C{finished()} (a small request), and stop as soon as it says so; True
    then. An error there is left to the next full poll to report (and to
    retry): it ends no wait. Without C{finished} (while the master fails),
    a plain sleep.
    """
    left = interval
    if finished is not None:
        while left > END_CHECK_S:
            runtime.sleep(END_CHECK_S)
            left -= END_CHECK_S
            try:
                if finished():
                    return True
            except MasterdError:
                pass
    runtime.sleep(left)
    return False


def watch_job(context: Context, job: Job, interval: float, show: bool = True) -> int:
    """
    Show the job's progress until it is finished: on a terminal one line
    redrawn in place, otherwise a line whenever it changes (nothing at all
    unless C{show}). 0 when the job is done, 1 when it failed or was
    canceled.
    """
    runtime = context.runtime
    tty = show and runtime.is_tty()
    retrier = _Retrier(context, interval)
    shown = ""
    printed_at = 0.0
    while True:
        line = progress_line(job, runtime.columns() if tty else None)
        if tty:
            # Padded over the previous line: no terminal escapes needed.
            context.write("\r" + line.ljust(len(shown)))
            shown = line
        elif show and (line != shown or runtime.clock() - printed_at >= HEARTBEAT_S):
            context.write(line + "\n")
            shown, printed_at = line, runtime.clock()
        if job.is_finished:
            break
        check = None if retrier.failures else lambda: job.refresh().is_finished
        if wait_for_end(runtime, interval, check):
            continue  # the finished job was just read: show it
        try:
            job.refresh()
        except MasterdError as error:
            if tty:
                context.write("\n")
                shown = ""
            retrier.failed(error)
        else:
            retrier.succeeded()
    if tty:
        context.write("\n")
    return 0 if job.state == "done" else 1


def follow_log(
    context: Context, task: Task, attempt: int | None, after: int, interval: float
) -> int:
    """
    Print the task's log as it grows until the task is finished; a new
    attempt (after a retry) is announced on stderr. 0 when the task is done,
    1 when it failed or was canceled.
    """
    follower = LogFollower(task, attempt, after)
    retrier = _Retrier(context, interval)
    shown: int | None = None
    while True:
        try:
            chunks = follower.poll()
        except MasterdError as error:
            retrier.failed(error)
            context.runtime.sleep(interval)
            continue
        retrier.succeeded()
        for chunk in chunks:
            if shown is not None and chunk.attempt != shown:
                context.note(f"task {task.id}: attempt {chunk.attempt} begins")
            shown = chunk.attempt
            context.write(chunk.text)
        if follower.finished:
            break
        # When the task finished, the next poll reads the rest of its log.
        wait_for_end(context.runtime, interval, lambda: task.refresh().is_finished)
    outcome = f"task {task.id} is {task.state}"
    if task.exit_code is not None:
        outcome += f" (exit code {task.exit_code})"
    if task.error:
        outcome += f": {task.error}"
    context.note(outcome)
    return 0 if task.state == "done" else 1
