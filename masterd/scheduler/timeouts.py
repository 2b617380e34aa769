"""
The scheduler's timeouts, as statements over the database (so that any
master enforces them for every agent), timed by the master's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

from masterd.db import Transaction
from masterd.jobs import lifecycle


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def taskTimeouts(
    txn: Transaction, now: float, blocklistAfter: int
) -> list[tuple[str, int, int]]:
    """
    Running attempts older than their layer's timeout_s fail with the
    error "timeout" (a failed attempt: retries and the blocklist apply).
    """
    rows = await txn.query(
        "SELECT t.agent_id, t.id, t.attempt FROM tasks t JOIN layers l ON l.id = t.layer_id"
        " WHERE t.state = 'running' AND l.timeout_s IS NOT NULL"
        " AND t.started_at < %s - l.timeout_s * interval '1 second'"
        " ORDER BY t.id FOR UPDATE OF t SKIP LOCKED",
        (_ts(now),),
    )
    timedOut = []
    for agentID, taskID, attempt in rows:
        outcome = await lifecycle.failed(
            txn, str(agentID), taskID, attempt, None, "timeout", now, blocklistAfter
        )
        if outcome is lifecycle.Outcome.applied:
            timedOut.append((str(agentID), taskID, attempt))
    return timedOut


async def stallTimeouts(
    txn: Transaction, now: float, blocklistAfter: int
) -> list[tuple[str, int, int]]:
    """
    Running attempts that have sent no log line for their layer's
    stall_timeout_s (counted from their start when they have sent none)
    fail with the error "stalled: no output for N s", as a timeout does.

    The running tasks are found through the jobs that run and the layers
    that have a stall timeout, and each attempt's last line by the log's
    primary key (its last chunk), so that the check costs little however
    long the logs are.
    """
    rows = await txn.query(
        "SELECT t.agent_id, t.id, t.attempt, l.stall_timeout_s"
        " FROM jobs j JOIN layers l ON l.job_id = j.id"
        " JOIN tasks t ON t.job_id = j.id AND t.state = 'running' AND t.layer_id = l.id"
        " WHERE j.state IN ('running', 'paused') AND l.stall_timeout_s IS NOT NULL"
        " AND l.n_running > 0 AND greatest(t.started_at, (SELECT g.at FROM task_logs g"
        " WHERE g.task_id = t.id AND g.attempt = t.attempt ORDER BY g.first_line DESC LIMIT 1))"
        " < %s - l.stall_timeout_s * interval '1 second'"
        " ORDER BY t.id FOR UPDATE OF t SKIP LOCKED",
        (_ts(now),),
    )
    stalled = []
    for agentID, taskID, attempt, seconds in rows:
        outcome = await lifecycle.failed(
            txn, str(agentID), taskID, attempt, None, f"stalled: no output for {seconds} s",
            now, blocklistAfter,
        )  # fmt: skip
        if outcome is lifecycle.Outcome.applied:
            stalled.append((str(agentID), taskID, attempt))
    return stalled


async def assignTimeouts(txn: Transaction, cutoff: float, now: float) -> list[tuple[str, int, int]]:
    """
    Tasks assigned before C{cutoff} and still not reported running go back
    to queued (not a failure: the agent may never have got them).
    """
    rows = await txn.query(
        "SELECT t.agent_id, t.id, t.attempt FROM tasks t JOIN task_attempts a"
        " ON a.task_id = t.id AND a.attempt = t.attempt"
        " WHERE t.state = 'assigned' AND a.started_at < %s"
        " ORDER BY t.id FOR UPDATE OF t SKIP LOCKED",
        (_ts(cutoff),),
    )
    requeued = []
    for agentID, taskID, attempt in rows:
        outcome = await lifecycle.requeue(
            txn, str(agentID), taskID, attempt, "lost", "not reported running in time", now
        )
        if outcome is lifecycle.Outcome.applied:
            requeued.append((str(agentID), taskID, attempt))
    return requeued
