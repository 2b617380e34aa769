"""
Folding finished attempts into the farm's hourly history (migration 0021;
docs/history.md).

Two ways in, which never count an attempt twice:

    - L{rollUpStep}, run periodically by L{HistoryService} under an
      advisory lock (L{LOCK_KEY}): the attempts that finished since the
      watermark, at most up to the end of that clock hour and never later
      than the database's now minus a lag, added to the rollups, and the
      watermark moved past them, in one transaction. It only tries the
      lock: a master that does not get it skips the step (another master is
      rolling up, or a job's deletion is beginning). It leaves alone the
      attempts of retired jobs (farm_history_retired).
    - Job deletion (masterd.jobs.retire): L{retire} records the job as
      retired with the watermark of then, under the same lock (waiting for
      it); then L{foldRetired}, in the transaction that deletes each batch
      of its tasks, folds the batch's attempts that watermark had not
      passed, because they will not be there when it does.
"""

from __future__ import annotations

from functools import partial

from attrs import frozen
from twisted.logger import Logger

from masterd.db import Pool, Transaction

log = Logger()

#: The advisory lock of rolling up, as C{hashtextextended('history', 0)},
#: in the key space of the scheduler's named locks ('preemption',
#: 'limit:NAME', 'job:ID'): held for the transaction of each periodic step
#: and of each job's roll-up.
LOCK_KEY = "history"

#: How long after an attempt's finished_at it is rolled up, at the least,
#: by default. finished_at is set in the transaction that closes the
#: attempt (the master's time of the report, or the transaction's start),
#: and that transaction commits within seconds (the batcher's are
#: milliseconds; no statement runs past database.statement_timeout_s, 30 s
#: by default). A step that moved the watermark past an attempt not yet
#: committed would never count it: the lag leaves that time, and some for
#: the masters' clocks to differ from the database's.
DEFAULT_LAG_S = 60.0

#: The most steps (each at most one clock hour of attempts, its own
#: transaction) one periodic run takes: a master back after a long outage
#: catches up a day of busy hours a run, in statements of an hour each.
MAX_STEPS = 24

# The attempts chosen by {where} (an alias "a" of task_attempts), summed by
# hour, project, owner and their agent's tags, added to farm_history and to
# each project's totals; the number of attempts folded.
_FOLD = """
WITH a AS (
    SELECT date_trunc('hour', a.finished_at, 'UTC') AS hour, a.job_id, a.agent_id,
           count(*) FILTER (WHERE a.state = 'done') AS done,
           count(*) FILTER (WHERE a.state = 'failed') AS failed,
           count(*) AS attempts,
           coalesce(sum(a.cpu_user_s + a.cpu_system_s), 0) AS cpu_s,
           coalesce(sum(a.wall_s), 0) AS wall_s
    FROM task_attempts a
    WHERE a.finished_at IS NOT NULL AND {where}
    GROUP BY 1, 2, 3
), k AS (
    SELECT a.hour, j.project, j.owner,
           ARRAY(SELECT DISTINCT x.t COLLATE "C" FROM unnest(g.tags || g.extra_tags) AS x (t)
                 ORDER BY 1) AS tags,
           a.done, a.failed, a.attempts, a.cpu_s, a.wall_s
    FROM a JOIN jobs j ON j.id = a.job_id LEFT JOIN agents g ON g.id = a.agent_id
), s AS (
    SELECT hour, project, owner, tags, sum(done)::bigint AS done, sum(failed)::bigint AS failed,
           sum(attempts)::bigint AS attempts, sum(cpu_s)::float8 AS cpu_s,
           sum(wall_s)::float8 AS wall_s
    FROM k GROUP BY 1, 2, 3, 4
), h AS (
    INSERT INTO farm_history AS f
        (hour, project, owner, tags, tasks_done, tasks_failed, attempts, cpu_s, wall_s)
    SELECT hour, project, owner, tags, done, failed, attempts, cpu_s, wall_s FROM s
    ON CONFLICT (hour, project, owner, tags) DO UPDATE SET
        tasks_done = f.tasks_done + EXCLUDED.tasks_done,
        tasks_failed = f.tasks_failed + EXCLUDED.tasks_failed,
        attempts = f.attempts + EXCLUDED.attempts,
        cpu_s = f.cpu_s + EXCLUDED.cpu_s,
        wall_s = f.wall_s + EXCLUDED.wall_s
), t AS (
    INSERT INTO farm_history_totals AS f
        (project, tasks_done, tasks_failed, attempts, cpu_s, wall_s)
    SELECT project, sum(done), sum(failed), sum(attempts), sum(cpu_s), sum(wall_s)
    FROM s GROUP BY project
    ON CONFLICT (project) DO UPDATE SET
        tasks_done = f.tasks_done + EXCLUDED.tasks_done,
        tasks_failed = f.tasks_failed + EXCLUDED.tasks_failed,
        attempts = f.attempts + EXCLUDED.attempts,
        cpu_s = f.cpu_s + EXCLUDED.cpu_s,
        wall_s = f.wall_s + EXCLUDED.wall_s
)
SELECT coalesce(sum(attempts), 0)::bigint FROM s
"""

# A step's span: from the first attempt finished at or after the watermark
# (the attempts before it were folded; an idle span is skipped at once)
# to the end of its clock hour, or the cutoff if that comes first. The
# first attempt is one look at the index task_attempts_finished (0015).
# NULLs when there is nothing to fold; lo is never -infinity (the mark
# before the first step), which psycopg2 cannot read.
_SPAN = """
WITH m AS (
    SELECT rolled_to, now() - %s * interval '1 second' AS cutoff FROM farm_history_mark
), f AS (
    SELECT min(a.finished_at) AS first FROM task_attempts a
    WHERE a.finished_at >= (SELECT rolled_to FROM m) AND a.finished_at < (SELECT cutoff FROM m)
)
SELECT m.rolled_to < m.cutoff, f.first,
       least(m.cutoff, date_trunc('hour', f.first, 'UTC') + interval '1 hour'),
       f.first IS NULL OR date_trunc('hour', f.first, 'UTC') + interval '1 hour' >= m.cutoff
FROM m, f
"""

_PERIODIC = (
    "a.finished_at >= %(lo)s AND a.finished_at < %(hi)s"
    " AND NOT EXISTS (SELECT 1 FROM farm_history_retired r WHERE r.job_id = a.job_id)"
)
# A retired job's attempts of one batch of its tasks, those its watermark had
# not passed (NULL, for a job retired before migration 0023: it was folded
# whole then).
_RETIRED_TASKS = (
    "a.task_id = ANY (%(tasks)s) AND a.finished_at >= (SELECT r.folded_from"
    " FROM farm_history_retired r WHERE r.job_id = %(job)s)"
)


@frozen
class Step:
    """
    What one step did: C{busy} when another transaction held the lock (and
    nothing was done), C{attempts} folded, and whether C{more} is due now.
    """

    busy: bool = False
    attempts: int = 0
    more: bool = False


@frozen
class Run:
    """
    What one periodic run did, over its steps.
    """

    steps: int
    attempts: int
    busy: bool
    #: Whether attempts due now were left for the next run (a catch-up).
    behind: bool


async def _lock(txn: Transaction, wait: bool) -> bool:
    if wait:
        await txn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (LOCK_KEY,))
        return True
    rows = await txn.query("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (LOCK_KEY,))
    return bool(rows[0][0])


async def rollUpStep(txn: Transaction, lag_s: float = DEFAULT_LAG_S, prune: bool = False) -> Step:
    """
    Fold the attempts of the watermark's hour (or the next hour with any)
    finished before now minus C{lag_s}, and move the watermark past them,
    in C{txn}; nothing when another transaction holds the lock. With
    C{prune}, forget the retired jobs that are gone.
    """
    if not await _lock(txn, wait=False):
        return Step(busy=True)
    if prune:
        await txn.execute(
            "DELETE FROM farm_history_retired r"
            " WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.job_id)"
        )
    [(behind, first, hi, last)] = await txn.query(_SPAN, (lag_s,))
    if not behind:
        return Step()
    if first is None:
        # Nothing finished since: the watermark moves to the cutoff.
        await txn.execute(
            "UPDATE farm_history_mark SET rolled_to = now() - %s * interval '1 second'", (lag_s,)
        )
        return Step()
    rows = await txn.query(_FOLD.format(where=_PERIODIC), {"lo": first, "hi": hi})
    await txn.execute("UPDATE farm_history_mark SET rolled_to = %s", (hi,))
    return Step(attempts=int(rows[0][0]), more=not last)


async def rollUp(pool: Pool, lag_s: float = DEFAULT_LAG_S, maxSteps: int = MAX_STEPS) -> Run:
    """
    Steps, each its own transaction, until the watermark reaches now minus
    C{lag_s}, another master holds the lock, or C{maxSteps} were taken.
    """
    steps = attempts = 0
    while True:
        # The first step of a run forgets the retired jobs that are gone.
        step = await pool.transaction(partial(rollUpStep, lag_s=lag_s, prune=steps == 0))
        if step.busy:
            return Run(steps, attempts, busy=True, behind=False)
        steps += 1
        attempts += step.attempts
        if not step.more:
            return Run(steps, attempts, busy=False, behind=False)
        if steps >= maxSteps:
            return Run(steps, attempts, busy=False, behind=True)


async def retire(txn: Transaction, jobID: int) -> None:
    """
    Take job C{jobID} out of the periodic roll-up, in the caller's
    transaction, as its deletion begins (masterd.jobs.retire): it is
    recorded in farm_history_retired with the watermark of now, so that no
    periodic step folds its attempts while its tasks are deleted batch by
    batch, and L{foldRetired} folds, batch by batch, those the watermark
    had not passed. Waits for the roll-up lock, so that a periodic step
    under way commits (and moves the watermark) first; none starts until
    C{txn} ends. Once per job: a second call keeps the first watermark.
    C{txn} must be READ COMMITTED (the pool's), so that the watermark is
    read after the lock.
    """
    await _lock(txn, wait=True)
    await txn.execute(
        "INSERT INTO farm_history_retired (job_id, folded_from)"
        " SELECT %s, rolled_to FROM farm_history_mark ON CONFLICT DO NOTHING",
        (jobID,),
    )


async def foldRetired(txn: Transaction, jobID: int, tasks: list[int]) -> int:
    """
    Fold the attempts of C{tasks}, of job C{jobID} retired by L{retire},
    that finished at or after the watermark it was retired with, in the
    caller's transaction, which deletes those tasks: nothing of them is
    lost from the history, nor counted twice. No lock: the periodic steps
    leave a retired job's attempts alone. Returns how many were folded.
    """
    rows = await txn.query(_FOLD.format(where=_RETIRED_TASKS), {"job": jobID, "tasks": tasks})
    folded = int(rows[0][0])
    if folded:
        log.debug("rolled up {attempts} attempts of job {jobId} before their deletion",
                  attempts=folded, jobId=jobID)  # fmt: skip
    return folded
