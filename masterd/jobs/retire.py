"""
What happens before a finished job is deleted, by hand (DELETE
/api/v1/jobs/{id}) or by retention (masterd.retention): what waits on it is
released, its attempts are folded into the farm's history, and each agent's
share of it is kept (migration 0022), so that deleting a job erases neither
the history of the farm nor that of its agents.
"""

from __future__ import annotations

from masterd.db import Transaction
from masterd.events import EventBus, WorkAvailable
from masterd.history.rollup import rollUpJob

# Each agent's share of the job, summed; and its failed attempts, copied,
# both with the job's title. A job deleted twice (a retry of retention after
# a failure) keeps the first figures.
_KEEP_JOBS = (
    "INSERT INTO agent_job_history (agent_id, job_id, title, attempts, done, failed, cpu_s,"
    " last_started_at) SELECT a.agent_id, a.job_id, j.title, count(*),"
    " count(*) FILTER (WHERE a.state = 'done'), count(*) FILTER (WHERE a.state = 'failed'),"
    " coalesce(sum(a.cpu_user_s + a.cpu_system_s), 0), max(a.started_at)"
    " FROM task_attempts a JOIN jobs j ON j.id = a.job_id"
    " WHERE a.job_id = %s AND a.agent_id IS NOT NULL GROUP BY a.agent_id, a.job_id, j.title"
    " ON CONFLICT (agent_id, job_id) DO NOTHING"
)
_KEEP_FAILURES = (
    "INSERT INTO agent_failure_history (task_id, attempt, job_id, title, agent_id, started_at,"
    " finished_at, exit_code, error, gpu_devices, wall_s, cpu_user_s, cpu_system_s,"
    " peak_rss_kb, gpu_memory_mb) SELECT a.task_id, a.attempt, a.job_id, j.title, a.agent_id,"
    " a.started_at, a.finished_at, a.exit_code, a.error, a.gpu_devices, a.wall_s,"
    " a.cpu_user_s, a.cpu_system_s, a.peak_rss_kb, a.gpu_memory_mb"
    " FROM task_attempts a JOIN jobs j ON j.id = a.job_id"
    " WHERE a.job_id = %s AND a.state = 'failed' AND a.agent_id IS NOT NULL"
    " ON CONFLICT (task_id, attempt) DO NOTHING"
)


async def keepAgentHistory(txn: Transaction, jobID: int) -> None:
    """
    Keep each agent's share of the job and its failed attempts, with the
    job's id and title (agent_job_history, agent_failure_history).
    """
    await txn.execute(_KEEP_JOBS, (jobID,))
    await txn.execute(_KEEP_FAILURES, (jobID,))


async def releaseDependents(txn: Transaction, events: EventBus, jobID: int) -> None:
    """
    What waits on the job (as a whole, or frame by frame) waits no more: it
    is as if done. The release is announced to every master (this one hears
    it at once too) after the commit.
    """
    children = [
        r[0]
        for r in await txn.query(
            "SELECT l.job_id FROM layer_dependencies d JOIN layers l ON l.id = d.child"
            " WHERE d.parent_job = %s UNION SELECT c.job_id FROM tasks p"
            " JOIN task_dependencies d ON d.parent = p.id JOIN tasks c ON c.id = d.child"
            " WHERE p.job_id = %s AND p.has_children ORDER BY 1",
            (jobID, jobID),
        )
    ]
    await txn.execute("SELECT masterd_satisfy_whole(NULL, ARRAY[%s]::bigint[])", (jobID,))
    await txn.execute(
        "SELECT masterd_frame_dependencies(ARRAY(SELECT id FROM tasks WHERE job_id = %s"
        " AND has_children), NULL, NULL, ARRAY(SELECT id FROM layers WHERE job_id = %s),"
        " ARRAY[%s]::bigint[])",
        (jobID, jobID, jobID),
    )
    if children:
        await events.announce(txn, WorkAvailable(tuple(children)))


async def retireJob(txn: Transaction, events: EventBus, jobID: int) -> None:
    """
    Everything a finished job's deletion must do before its rows go, in the
    caller's transaction: release what waits on it, fold its attempts into
    the farm's history (masterd.history), keep its agents' histories.
    """
    await releaseDependents(txn, events, jobID)
    await rollUpJob(txn, jobID)
    await keepAgentHistory(txn, jobID)
