"""
The task and job state machines (documented in docs/jobs.md).

The database enforces them: every change of a task's state is an UPDATE
whose WHERE clause names the states it may come from, so an illegal
transition changes nothing and is reported as a conflict, never applied.
"""

from __future__ import annotations

import enum


class TaskState(enum.StrEnum):
    waiting = "waiting"
    queued = "queued"
    assigned = "assigned"
    running = "running"
    done = "done"
    failed = "failed"
    canceled = "canceled"


class JobState(enum.StrEnum):
    waiting = "waiting"
    queued = "queued"
    running = "running"
    paused = "paused"
    done = "done"
    failed = "failed"
    canceled = "canceled"


T = TaskState

#: Where each task state may go.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # Released, or canceled (also when a dependency fails, with
    # "on_failure": "cancel").
    T.waiting: frozenset({T.queued, T.canceled}),
    T.queued: frozenset({T.assigned, T.waiting, T.canceled}),
    # An agent may report done or failed without a running report first.
    T.assigned: frozenset({T.running, T.done, T.failed, T.queued, T.canceled}),
    # Back to queued: a retry after a failed attempt, a lost agent, a
    # rejection, or a pause that stops running tasks.
    T.running: frozenset({T.done, T.failed, T.queued, T.canceled}),
    # A re-render (a retry with "done": true).
    T.done: frozenset({T.queued, T.waiting}),
    # A manual retry.
    T.failed: frozenset({T.queued, T.waiting}),
    # A manual retry, or the retry of the dependency that canceled it.
    T.canceled: frozenset({T.queued, T.waiting}),
}

UNFINISHED = frozenset({T.waiting, T.queued, T.assigned, T.running})
FINISHED = frozenset({T.done, T.failed, T.canceled})
ACTIVE = frozenset({T.assigned, T.running})


def sources(target: TaskState) -> frozenset[TaskState]:
    """
    The states from which a task may move to C{target}.
    """
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def jobState(
    *,
    canceled: bool,
    paused: bool,
    counts: dict[TaskState, int],
) -> JobState:
    """
    The same derivation as the database's C{masterd_job_state}, for tests
    and documentation.
    """
    total = sum(counts.values())
    finished = sum(counts.get(s, 0) for s in FINISHED)
    if finished == total:
        if canceled:
            return JobState.canceled
        if counts.get(T.failed, 0):
            return JobState.failed
        if counts.get(T.canceled, 0):
            return JobState.canceled
        return JobState.done
    if paused:
        return JobState.paused
    if counts.get(T.assigned, 0) + counts.get(T.running, 0):
        return JobState.running
    if counts.get(T.queued, 0):
        return JobState.queued
    return JobState.waiting
