"""
Claiming queued tasks for an agent's free slots, exactly once.

One statement finds the candidate jobs for the agent in the scheduler's
order (priority, highest first; then fair share: the fewest active tasks per
unit of weight; then the older job) and locks a few queued tasks of each with
C{FOR UPDATE SKIP LOCKED}, so that concurrent claimers, on this master or
another, never take the same task. The slots are then filled in that order,
re-ranking after each pick so that the slots of one claim spread across equal
jobs, and the chosen tasks are assigned in the same transaction.
"""

from __future__ import annotations

from attrs import define, field

from masterd.db import Transaction
from masterd.jobs import lifecycle


@define
class Capacity:
    """
    What an agent can take now: its free slots and resources.
    """

    agent_id: str
    slots: int
    cpus: int
    ram_mb: int
    gpus: int
    tags: tuple[str, ...] = ()


@define
class _Candidate:
    job_id: int
    priority: int
    active: int
    weight: int
    cpus: int
    ram_mb: int
    gpus: int
    tasks: list[int] = field(factory=list)

    def rank(self) -> tuple[int, float, int]:
        return (-self.priority, self.active / self.weight, self.job_id)


_CANDIDATES = (
    "WITH j AS ("
    " SELECT id, priority, n_assigned + n_running AS active, weight,"
    " req_cpus, req_ram_mb, req_gpus"
    " FROM jobs"
    " WHERE n_queued > 0 AND NOT paused AND NOT canceled"
    " AND req_cpus <= %(cpus)s AND req_ram_mb <= %(ram)s AND req_gpus <= %(gpus)s"
    " AND req_tags <@ %(tags)s::text[]"
    " AND NOT EXISTS (SELECT 1 FROM job_blocklist b WHERE b.job_id = jobs.id"
    " AND b.agent_id = %(agent)s AND b.blocked)"
    " ORDER BY priority DESC, (n_assigned + n_running)::float8 / weight, id"
    " LIMIT %(jobs)s)"
    " SELECT j.id, j.priority, j.active, j.weight, j.req_cpus, j.req_ram_mb, j.req_gpus, t.id"
    " FROM j CROSS JOIN LATERAL (SELECT id, index FROM tasks"
    " WHERE job_id = j.id AND state = 'queued' ORDER BY index LIMIT %(slots)s"
    " FOR UPDATE SKIP LOCKED) t"
    " ORDER BY j.priority DESC, j.active::float8 / j.weight, j.id, t.index"
)


def _pick(capacity: Capacity, candidates: list[_Candidate]) -> list[int]:
    """
    Fill the free slots: the best-ranked job whose requirements still fit
    the resources left, one task at a time.
    """
    chosen: list[int] = []
    cpus, ram, gpus = capacity.cpus, capacity.ram_mb, capacity.gpus
    while len(chosen) < capacity.slots:
        fitting = [
            c
            for c in candidates
            if c.tasks and c.cpus <= cpus and c.ram_mb <= ram and c.gpus <= gpus
        ]
        if not fitting:
            break
        best = min(fitting, key=_Candidate.rank)
        chosen.append(best.tasks.pop(0))
        best.active += 1
        cpus, ram, gpus = cpus - best.cpus, ram - best.ram_mb, gpus - best.gpus
    return chosen


async def claim(
    txn: Transaction, capacity: Capacity, at: float | None = None
) -> list[lifecycle.Assignment]:
    """
    Assign up to C{capacity.slots} queued tasks to the agent.
    """
    if capacity.slots <= 0:
        return []
    rows = await txn.query(
        _CANDIDATES,
        {
            "cpus": capacity.cpus,
            "ram": capacity.ram_mb,
            "gpus": capacity.gpus,
            "tags": list(capacity.tags),
            "agent": capacity.agent_id,
            "jobs": capacity.slots,
            "slots": capacity.slots,
        },
    )
    candidates: dict[int, _Candidate] = {}
    for jobID, priority, active, weight, cpus, ram, gpus, taskID in rows:
        candidate = candidates.get(jobID)
        if candidate is None:
            candidate = candidates[jobID] = _Candidate(
                jobID, priority, active, weight, cpus, ram, gpus
            )
        candidate.tasks.append(taskID)
    chosen = _pick(capacity, list(candidates.values()))
    if not chosen:
        return []
    return await lifecycle.assign(txn, capacity.agent_id, chosen, at)
