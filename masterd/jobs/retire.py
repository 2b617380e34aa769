"""
How a finished job is deleted, by hand (DELETE /api/v1/jobs/{id}) or by
retention (masterd.retention), so that its deletion erases neither the
history of the farm nor that of its agents, and no transaction of it grows
with the job:

    1. L{beginRetirement}, in the transaction that locks the finished job:
       what waits on the job as a whole is released, the job is recorded as
       retired for the farm's history (with the watermark it had then), and
       it is marked C{deleting} (from then on a change to it is a 409);
    2. L{retireTasks}, a batch at a time, each its own transaction: the
       batch's tasks release what waits on them frame by frame, their
       attempts not rolled up yet are folded into the farm's history, each
       agent's share of them is added to its history, and they are deleted
       with their attempts, logs and edges;
    3. L{finishRetirement}: the job itself, once none of its tasks is left.

Each batch does its share and deletes it in one transaction: a deletion cut
short anywhere (a master killed, a batch cancelled by its lock timeout)
counts nothing twice and loses nothing, and whoever finds the job
C{deleting} (retention, on any master) goes on from where it stopped.
"""

from __future__ import annotations

from masterd.db import Transaction
from masterd.events import EventBus, WorkAvailable
from masterd.history.rollup import foldRetired, retire

# Each agent's share of the batch's attempts, added to what it has of the
# job already (an earlier batch), with the job's title; its failed attempts
# copied. The batch's tasks are deleted in the same transaction: nothing is
# counted twice.
_KEEP_JOBS = (
    "INSERT INTO agent_job_history AS h (agent_id, job_id, title, attempts, done, failed,"
    " cpu_s, last_started_at) SELECT a.agent_id, a.job_id, j.title, count(*),"
    " count(*) FILTER (WHERE a.state = 'done'), count(*) FILTER (WHERE a.state = 'failed'),"
    " coalesce(sum(a.cpu_user_s + a.cpu_system_s), 0), max(a.started_at)"
    " FROM task_attempts a JOIN jobs j ON j.id = a.job_id"
    " WHERE a.task_id = ANY (%s) AND a.agent_id IS NOT NULL GROUP BY a.agent_id, a.job_id, j.title"
    " ON CONFLICT (agent_id, job_id) DO UPDATE SET attempts = h.attempts + EXCLUDED.attempts,"
    " done = h.done + EXCLUDED.done, failed = h.failed + EXCLUDED.failed,"
    " cpu_s = h.cpu_s + EXCLUDED.cpu_s,"
    " last_started_at = greatest(h.last_started_at, EXCLUDED.last_started_at)"
)
_KEEP_FAILURES = (
    "INSERT INTO agent_failure_history (task_id, attempt, job_id, title, agent_id, started_at,"
    " finished_at, exit_code, error, gpu_devices, wall_s, cpu_user_s, cpu_system_s,"
    " peak_rss_kb, gpu_memory_mb) SELECT a.task_id, a.attempt, a.job_id, j.title, a.agent_id,"
    " a.started_at, a.finished_at, a.exit_code, a.error, a.gpu_devices, a.wall_s,"
    " a.cpu_user_s, a.cpu_system_s, a.peak_rss_kb, a.gpu_memory_mb"
    " FROM task_attempts a JOIN jobs j ON j.id = a.job_id"
    " WHERE a.task_id = ANY (%s) AND a.state = 'failed' AND a.agent_id IS NOT NULL"
    " ON CONFLICT (task_id, attempt) DO NOTHING"
)


async def beginRetirement(txn: Transaction, events: EventBus, jobID: int) -> None:
    """
    The first step of a finished job's deletion, in the caller's
    transaction, which holds the job's row (FOR UPDATE) and found it
    finished and not C{deleting} yet. What waits on the job as a whole (a
    few rows) is released as if it were done, announced to every master
    after the commit; the job is retired from the periodic roll-up
    (masterd.history.rollup.retire); and it is marked C{deleting}. Its
    tasks' share is left to L{retireTasks}.
    """
    children = [
        r[0]
        for r in await txn.query(
            "SELECT DISTINCT l.job_id FROM layer_dependencies d JOIN layers l ON l.id = d.child"
            " WHERE d.parent_job = %s ORDER BY 1",
            (jobID,),
        )
    ]
    await txn.execute("SELECT masterd_satisfy_whole(NULL, ARRAY[%s]::bigint[])", (jobID,))
    await retire(txn, jobID)
    await txn.execute("UPDATE jobs SET deleting = true WHERE id = %s", (jobID,))
    if children:
        await events.announce(txn, WorkAvailable(tuple(children)))


async def retireTasks(txn: Transaction, events: EventBus, jobID: int, size: int) -> int:
    """
    Retire and delete up to C{size} tasks of job C{jobID} (begun by
    L{beginRetirement}) in the caller's transaction; returns how many.

    The batch is taken C{FOR UPDATE SKIP LOCKED}, so that two deletions of
    the same job (by hand, and by retention after a restart) share its
    tasks instead of both counting one; in the order of the index
    C{tasks_job_state} (job, state, index), so that no batch sorts the job.
    """
    rows = await txn.query(
        "SELECT id, has_children FROM tasks WHERE job_id = %s ORDER BY state, index"
        " LIMIT %s FOR UPDATE SKIP LOCKED",
        (jobID, size),
    )
    if not rows:
        return 0
    tasks = [r[0] for r in rows]
    parents = [r[0] for r in rows if r[1]]
    if parents:
        # What waits on these tasks frame by frame waits no more: as if done.
        children = [
            r[0]
            for r in await txn.query(
                "SELECT DISTINCT c.job_id FROM task_dependencies d JOIN tasks c ON c.id = d.child"
                " WHERE d.parent = ANY (%s) ORDER BY 1",
                (parents,),
            )
        ]
        await txn.execute(
            "SELECT masterd_frame_dependencies(%s::bigint[], NULL, NULL,"
            " ARRAY(SELECT id FROM layers WHERE job_id = %s), ARRAY[%s]::bigint[])",
            (parents, jobID, jobID),
        )
        if children:
            await events.announce(txn, WorkAvailable(tuple(children)))
    await foldRetired(txn, jobID, tasks)
    await txn.execute(_KEEP_JOBS, (tasks,))
    await txn.execute(_KEEP_FAILURES, (tasks,))
    await txn.execute("DELETE FROM tasks WHERE id = ANY (%s)", (tasks,))
    return len(tasks)


async def finishRetirement(txn: Transaction, jobID: int) -> bool:
    """
    Delete the job (its layers and dependencies with it) once it has no
    tasks left; False while it has (another deletion of it has a batch
    under way: whichever commits its last batch last deletes the job).
    """
    rows = await txn.query(
        "DELETE FROM jobs j WHERE j.id = %s AND j.deleting"
        " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id) RETURNING 1",
        (jobID,),
    )
    return bool(rows)
