"""
The farm at a glance, for the dashboard's overview: jobs and agents by
state, tasks by state, and the attempts that finished in each minute of the
last hour. Three statements, none of which reads a row per task: the task
counts are the jobs' own counters, the busy agents come from the partial
index of active tasks, and the minutes from the index of finished attempts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from masterd._time import isotime
from masterd.db import Pool, Transaction
from masterd.schema import Document, Meta, Time

JOB_STATES = ("waiting", "queued", "running", "paused", "done", "failed", "canceled")
TASK_STATES = ("waiting", "queued", "assigned", "running", "done", "failed", "canceled")
#: As masterd.talkback.directory computes each agent's.
AGENT_STATES = ("idle", "busy", "offline", "disabled")
#: How many minutes finished_per_minute covers, this one included.
MINUTES = 60

FARM_HREF = "/api/v1/farm"


class JobStateCounts(Document):
    waiting: int
    queued: int
    running: int
    paused: int
    done: int
    failed: int
    canceled: int


class TaskStateCounts(Document):
    """
    The tasks of every job, by state (the jobs' counters summed).
    """

    waiting: int
    queued: int
    assigned: int
    running: int
    done: int
    failed: int
    canceled: int


class AgentStateCounts(Document):
    idle: int
    busy: int
    offline: int
    disabled: int


class MinuteCount(Document):
    """
    The task attempts that finished done or failed in the minute from C{at}.
    """

    at: Time
    done: int
    failed: int


class FarmDocument(Document):
    href: str
    jobs: JobStateCounts
    agents: AgentStateCounts
    tasks: TaskStateCounts
    #: One entry a minute, oldest first; the last is the current minute.
    finished_per_minute: Annotated[list[MinuteCount], Meta(min_length=MINUTES, max_length=MINUTES)]
    limits: str
    masters: str


_JOBS = (
    "SELECT "
    + ", ".join(f"count(*) FILTER (WHERE state = '{s}')" for s in JOB_STATES)
    + ", "
    + ", ".join(f"coalesce(sum(n_{s}), 0)" for s in TASK_STATES)
    + " FROM jobs"
)

# An agent is busy when a task is assigned to it or runs on it: the agents
# with one are read from the partial index tasks_active_agent once, not
# looked up agent by agent.
_AGENTS = (
    "SELECT count(*) FILTER (WHERE a.enabled AND a.session IS NOT NULL AND b.agent_id IS NULL),"
    " count(*) FILTER (WHERE a.enabled AND a.session IS NOT NULL AND b.agent_id IS NOT NULL),"
    " count(*) FILTER (WHERE a.enabled AND a.session IS NULL),"
    " count(*) FILTER (WHERE NOT a.enabled)"
    " FROM agents a LEFT JOIN (SELECT DISTINCT t.agent_id FROM tasks t"
    " WHERE t.state IN ('assigned', 'running')) b ON b.agent_id = a.id"
)

# The last MINUTES minutes up to the current one (from the database's clock
# unless one is given), each with the attempts that finished done or failed
# in it: one range scan of the index task_attempts_finished.
_MINUTES = f"""
WITH m AS (
    SELECT generate_series(t.last - interval '{MINUTES - 1} minutes', t.last,
                           interval '1 minute') AS at
    FROM (SELECT date_trunc('minute', coalesce(%s::timestamptz, now())) AS last) t
), f AS (
    SELECT date_trunc('minute', a.finished_at) AS at,
           count(*) FILTER (WHERE a.state = 'done') AS done,
           count(*) FILTER (WHERE a.state = 'failed') AS failed
    FROM task_attempts a
    WHERE a.finished_at >= (SELECT min(at) FROM m)
      AND a.finished_at < (SELECT max(at) FROM m) + interval '1 minute'
      AND a.state IN ('done', 'failed')
    GROUP BY 1
)
SELECT m.at, coalesce(f.done, 0), coalesce(f.failed, 0)
FROM m LEFT JOIN f ON f.at = m.at ORDER BY m.at
"""


async def farmOverview(pool: Pool, now: datetime | None = None) -> FarmDocument:
    """
    The farm now (or, for the minutes, at C{now}: an aware datetime).
    """

    async def work(txn: Transaction) -> FarmDocument:
        [counts] = await txn.query(_JOBS)
        [agents] = await txn.query(_AGENTS)
        minutes = await txn.query(_MINUTES, (now,))
        jobs = [int(n) for n in counts[: len(JOB_STATES)]]
        tasks = [int(n) for n in counts[len(JOB_STATES) :]]
        return FarmDocument(
            href=FARM_HREF,
            jobs=JobStateCounts(**dict(zip(JOB_STATES, jobs, strict=True))),
            agents=AgentStateCounts(
                **dict(zip(AGENT_STATES, (int(n) for n in agents), strict=True))
            ),
            tasks=TaskStateCounts(**dict(zip(TASK_STATES, tasks, strict=True))),
            finished_per_minute=[
                MinuteCount(at=isotime(at), done=int(done), failed=int(failed))
                for at, done, failed in minutes
            ],
            limits="/api/v1/limits",
            masters="/api/v1/masters",
        )

    return await pool.transaction(work)
