"""
Claiming queued tasks for an agent's free slots, exactly once.

Agents that may take the same jobs are claimed for together. For each such
group one statement finds the candidate jobs in the scheduler's order
(priority, highest first; then fair share: the fewest active tasks per unit
of weight; then the older job). Each agent's slots are filled in that order,
re-ranking after each pick so that slots spread across equal jobs. Then
exactly the picked number of queued tasks of each job is locked with C{FOR
UPDATE SKIP LOCKED}, so that concurrent claimers, on this master or another,
never take the same task, and the locked tasks are assigned, all in the same
transaction.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

from attrs import define

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
    #: The agent may be blocklisted for some job: it is claimed for alone.
    blocklisted: bool = False


@define
class _Candidate:
    job_id: int
    priority: int
    active: int
    weight: int
    cpus: int
    ram_mb: int
    gpus: int
    #: Queued tasks not yet picked in this claim.
    available: int

    def rank(self) -> tuple[int, float, int]:
        return (-self.priority, self.active / self.weight, self.job_id)


# The jobs an agent of this capacity may take from, in the scheduler's order.
# No rows are locked here: the tasks are locked afterwards, exactly as many
# as were picked (locking a few of every candidate job would make concurrent
# claimers skip far more than they need to).
_CANDIDATES = (
    "SELECT id, priority, n_assigned + n_running, weight, req_cpus, req_ram_mb, req_gpus,"
    " n_queued FROM jobs"
    " WHERE state IN ('queued', 'running') AND n_queued > 0 AND NOT paused AND NOT canceled"
    " AND req_cpus <= %(cpus)s AND req_ram_mb <= %(ram)s AND req_gpus <= %(gpus)s"
    " AND req_tags <@ %(tags)s::text[]"
    " AND NOT EXISTS (SELECT 1 FROM job_blocklist b WHERE b.job_id = jobs.id"
    " AND b.agent_id = ANY (%(agents)s::uuid[]) AND b.blocked)"
    " ORDER BY priority DESC, (n_assigned + n_running)::float8 / weight, id"
    " LIMIT %(jobs)s"
)

_LOCK = (
    "SELECT n.job_id, t.id FROM unnest(%s::bigint[], %s::int[]) AS n (job_id, k)"
    " CROSS JOIN LATERAL (SELECT id, index FROM tasks WHERE job_id = n.job_id"
    " AND state = 'queued' ORDER BY index LIMIT n.k FOR UPDATE SKIP LOCKED) t"
    " ORDER BY n.job_id, t.index"
)


class _Ranking:
    """
    The candidate jobs of a group of alike agents, best first, kept in a
    heap: each pick costs a logarithm, not a pass over every candidate (a
    claim for 500 agents among 1,000 jobs would otherwise be quadratic).
    """

    def __init__(self, candidates: list[_Candidate]) -> None:
        self._heap = [(c.rank(), i, c) for i, c in enumerate(candidates) if c.available]
        heapq.heapify(self._heap)

    def pick(self, capacity: Capacity) -> list[int]:
        """
        Fill an agent's free slots: the best-ranked job whose requirements
        still fit the resources left, one task at a time; re-ranked after
        each pick, so that slots spread across equal jobs. Returns job ids.
        """
        chosen: list[int] = []
        cpus, ram, gpus = capacity.cpus, capacity.ram_mb, capacity.gpus
        # Jobs too big for what this agent has left, set aside until it is
        # served: they may fit the next agent.
        tooBig: list[tuple[tuple[int, float, int], int, _Candidate]] = []
        while len(chosen) < capacity.slots and self._heap:
            rank, i, best = heapq.heappop(self._heap)
            if best.cpus > cpus or best.ram_mb > ram or best.gpus > gpus:
                tooBig.append((rank, i, best))
                continue
            chosen.append(best.job_id)
            best.available -= 1
            best.active += 1
            cpus, ram, gpus = cpus - best.cpus, ram - best.ram_mb, gpus - best.gpus
            if best.available:
                heapq.heappush(self._heap, (best.rank(), i, best))
        for entry in tooBig:
            heapq.heappush(self._heap, entry)
        return chosen


def _groups(capacities: list[Capacity]) -> dict[tuple[Any, ...], list[Capacity]]:
    """
    Agents that may take exactly the same jobs are claimed for together.
    """
    groups: dict[tuple[Any, ...], list[Capacity]] = {}
    for c in capacities:
        if c.slots <= 0:
            continue
        key = (c.cpus, c.ram_mb, c.gpus, c.tags, c.agent_id if c.blocklisted else None)
        groups.setdefault(key, []).append(c)
    return groups


async def claimMany(
    txn: Transaction, capacities: list[Capacity], at: float | None = None
) -> dict[str, list[lifecycle.Assignment]]:
    """
    Assign queued tasks to the free slots of several agents, in a few
    statements whatever their number: one candidate query per group of alike
    agents, one to lock the picked number of tasks of each job, one to assign
    them.
    """
    picks: list[tuple[str, int]] = []
    for group in _groups(capacities).values():
        first = group[0]
        total = sum(c.slots for c in group)
        rows = await txn.query(
            _CANDIDATES,
            {
                "cpus": first.cpus,
                "ram": first.ram_mb,
                "gpus": first.gpus,
                "tags": list(first.tags),
                "agents": [c.agent_id for c in group] if first.blocklisted else [],
                "jobs": total,
            },
        )
        candidates = [
            _Candidate(j, p, a, w, cpus, ram, gpus, min(queued, total))
            for j, p, a, w, cpus, ram, gpus, queued in rows
        ]
        ranking = _Ranking(candidates)
        for c in group:
            picks.extend((c.agent_id, jobID) for jobID in ranking.pick(c))
    if not picks:
        return {}
    need = Counter(jobID for _, jobID in picks)
    jobIDs = sorted(need)
    locked: dict[int, list[int]] = {}
    for jobID, taskID in await txn.query(_LOCK, (jobIDs, [need[j] for j in jobIDs])):
        locked.setdefault(jobID, []).append(taskID)
    pairs = []
    for agentID, jobID in picks:
        tasks = locked.get(jobID)
        if tasks:
            # Tasks another claimer holds were skipped: fewer to hand out.
            pairs.append((tasks.pop(0), agentID))
    result: dict[str, list[lifecycle.Assignment]] = {}
    for a in await lifecycle.assignMany(txn, pairs, at):
        result.setdefault(a.agent_id, []).append(a)
    return result


async def claim(
    txn: Transaction, capacity: Capacity, at: float | None = None
) -> list[lifecycle.Assignment]:
    """
    Assign up to C{capacity.slots} queued tasks to one agent.
    """
    return (await claimMany(txn, [capacity], at)).get(capacity.agent_id, [])
