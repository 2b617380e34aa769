"""
Claiming queued tasks for an agent's free slots, exactly once.

Agents that may take the same work are claimed for together. For each such
group one statement finds the candidate layers in the scheduler's order:
priority, highest first; then fair share between projects (the fewest
active tasks per unit of the project's weight); then between the jobs of
a project (per unit of the job's weight); then the older job, and its
layers in order. Each agent's slots are filled in that order, re-ranking
after each pick so that slots spread across equal projects and jobs. Then
exactly the picked number of queued tasks of each layer is locked with
C{FOR UPDATE SKIP LOCKED}, so that concurrent claimers, on this master or
another, never take the same task, and the locked tasks are assigned, all
in the same transaction.

Limits (licences) and the caps of jobs and layers (C{max_running}) are
decided here too, exactly across masters: a claim that would take a task
holding limit L first takes a transaction-scoped advisory lock for L, then
reads L's use (the tasks assigned or running in layers that name it, as
committed), and takes no more than the room left. Only claims take these
locks, and they only try (C{pg_try_advisory_xact_lock}): a claim never
waits for another, so none can deadlock with the task reports batched
before it in the same transaction. A lock held by another claim leaves its
work out of this claim; the agents concerned are offered work again at
once (L{Claims.contended}).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import define, field

from masterd.db import Transaction
from masterd.jobs import lifecycle
from masterd.jobs.capabilities import Host

from .chunking import sizeChunks

#: An agent that said nothing of what it is.
NO_HOST = Host()

#: A GPU an agent has free: (index, memory in MB; 0 when not known).
Device = tuple[int, int]


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
    #: Its free GPUs, when it reported them (else only their number counts).
    devices: tuple[Device, ...] = ()
    #: What it is (its reported cpus, RAM and GPUs, os family, architecture,
    #: attributes, amounts): what requirements beyond the minimums match.
    host: Host = NO_HOST


@define
class Claims:
    """
    What a claim assigned, per agent, and which agents may have missed work
    because another claim held a limit or cap it needed.
    """

    assigned: dict[str, list[lifecycle.Assignment]] = field(factory=dict)
    contended: set[str] = field(factory=set)


@define(eq=False)
class _Share:
    """
    Active tasks per unit of weight: of a project, or of a job.
    """

    active: int
    weight: int

    def share(self) -> float:
        return self.active / self.weight


@define(eq=False)
class _Job:
    job_id: int
    priority: int
    project: _Share
    own: _Share
    #: How many more tasks its max_running allows (None: no cap).
    room: int | None


@define(eq=False)
class _Candidate:
    layer_id: int
    index: int
    job: _Job
    cpus: int
    ram_mb: int
    gpus: int
    gpu_memory_mb: int
    #: Queued tasks not yet picked in this claim.
    available: int
    room: int | None
    limits: tuple[str, ...]

    def rank(self) -> tuple[int, float, float, int, int]:
        job = self.job
        return (-job.priority, job.project.share(), job.own.share(), job.job_id, self.index)

    def usable(self, limits: dict[str, int]) -> bool:
        return (
            self.available > 0
            and (self.room is None or self.room > 0)
            and (self.job.room is None or self.job.room > 0)
            and all(limits.get(name, 0) > 0 for name in self.limits)
        )

    def take(self, limits: dict[str, int]) -> None:
        self.available -= 1
        self.job.own.active += 1
        self.job.project.active += 1
        if self.room is not None:
            self.room -= 1
        if self.job.room is not None:
            self.job.room -= 1
        for name in self.limits:
            limits[name] -= 1


def _devices(free: tuple[Device, ...], count: int, memory: int) -> tuple[Device, ...] | None:
    """
    C{count} of the C{free} GPUs with at least C{memory} MB each, the
    smallest that do (the largest stay for tasks that need them); None if
    there are not enough.
    """
    fitting = sorted((d for d in free if d[1] >= memory), key=lambda d: (d[1], d[0]))
    if len(fitting) < count:
        return None
    return tuple(sorted(fitting[:count]))


class _JobLayers:
    """
    A job's candidate layers, in their order; keyed by the job's share.
    """

    __slots__ = ("job", "layers")

    def __init__(self, job: _Job, layers: list[_Candidate]) -> None:
        self.job = job
        self.layers = layers

    def key(self) -> tuple[float, int]:
        return (self.job.own.share(), self.job.job_id)


_JobEntry = tuple[tuple[float, int], int, _JobLayers]


class _Group:
    """
    The jobs of one project at one priority, best first (a heap). Their
    order within the group depends only on their own shares, which change
    only when they are picked: the heap is never stale.
    """

    __slots__ = ("aside", "jobs", "priority", "project", "seq", "version")

    def __init__(self, priority: int, project: _Share, seq: int) -> None:
        self.priority = priority
        self.project = project
        self.jobs: list[_JobEntry] = []
        #: Jobs with nothing that fits the agent being served, until it is.
        self.aside: list[_JobEntry] = []
        #: Only the entry of the group's current version in the ranking's
        #: heap is live (a restored group is pushed again, with a better key).
        self.version = 0
        self.seq = seq

    def key(self) -> tuple[int, float, float, int]:
        share, jobID = self.jobs[0][0]
        return (-self.priority, self.project.share(), share, jobID)


class _Ranking:
    """
    The candidate layers of a group of alike agents, in the scheduler's
    order: priority, project share, job share, job id, layer order. Picks
    are made from a heap of (priority, project) groups, each a heap of its
    jobs, each a list of its layers: a pick re-keys one job and its group,
    not every candidate of the project (the cost of a claim of a few
    hundred slots over many jobs stays well under a millisecond a hundred
    picks). A pick makes the ranks of the groups of the same project at
    other priorities worse, never better: an entry whose rank went stale is
    put back with its current rank when it comes up.
    """

    def __init__(self, candidates: list[_Candidate], limits: dict[str, int]) -> None:
        self._limits = limits
        groups: dict[tuple[int, int], _Group] = {}
        jobs: dict[int, _JobLayers] = {}
        for c in sorted(candidates, key=lambda c: (c.job.job_id, c.index)):
            if not c.usable(limits):
                continue
            entry = jobs.get(c.job.job_id)
            if entry is None:
                entry = jobs[c.job.job_id] = _JobLayers(c.job, [])
                gk = (c.job.priority, id(c.job.project))
                group = groups.get(gk)
                if group is None:
                    group = groups[gk] = _Group(c.job.priority, c.job.project, len(groups))
                group.jobs.append((entry.key(), c.job.job_id, entry))
            entry.layers.append(c)
        self._heap: list[tuple[tuple[int, float, float, int], int, int, _Group]] = []
        for group in groups.values():
            heapq.heapify(group.jobs)
            self._heap.append((group.key(), group.seq, 0, group))
        heapq.heapify(self._heap)

    def _fit(
        self, best: _Candidate, cpus: int, ram: int, gpus: int, devices: tuple[Device, ...]
    ) -> tuple[Device, ...] | None:
        if best.cpus > cpus or best.ram_mb > ram or best.gpus > gpus:
            return None
        if best.gpus and devices:
            return _devices(devices, best.gpus, best.gpu_memory_mb)
        if best.gpu_memory_mb:
            return None  # the agent did not say what memory its GPUs have
        return ()

    def pick(self, capacity: Capacity) -> list[tuple[int, int, tuple[int, ...]]]:
        """
        Fill an agent's free slots: the best-ranked layer whose requirements
        still fit the resources left, one task at a time. Returns (layer id,
        job id, GPU device indexes) for each pick.
        """
        chosen: list[tuple[int, int, tuple[int, ...]]] = []
        cpus, ram, gpus = capacity.cpus, capacity.ram_mb, capacity.gpus
        devices = capacity.devices
        limits = self._limits
        # Groups whose jobs had nothing that fits what this agent has left:
        # those jobs are set aside until it is served (they may fit the next).
        touched: list[_Group] = []
        while len(chosen) < capacity.slots and self._heap:
            rank, seq, version, group = heapq.heappop(self._heap)
            if version != group.version or not group.jobs:
                continue
            current = group.key()
            if current != rank:
                heapq.heappush(self._heap, (current, seq, version, group))
                continue
            entry = heapq.heappop(group.jobs)
            layers = entry[2].layers
            layers[:] = [c for c in layers if c.usable(limits)]
            for best in layers:
                given = self._fit(best, cpus, ram, gpus, devices)
                if given is None:
                    continue
                chosen.append((best.layer_id, best.job.job_id, tuple(d[0] for d in given)))
                best.take(limits)
                cpus, ram, gpus = cpus - best.cpus, ram - best.ram_mb, gpus - best.gpus
                devices = tuple(d for d in devices if d not in given)
                heapq.heappush(group.jobs, (entry[2].key(), entry[1], entry[2]))
                break
            else:
                if layers:
                    group.aside.append(entry)
                    if not touched or touched[-1] is not group:
                        touched.append(group)
            if group.jobs:
                heapq.heappush(self._heap, (group.key(), seq, version, group))
        for group in set(touched):
            for entry in group.aside:
                heapq.heappush(group.jobs, entry)
            group.aside.clear()
            group.version += 1
            heapq.heappush(self._heap, (group.key(), group.seq, group.version, group))
        return chosen


def _groups(capacities: list[Capacity]) -> dict[tuple[Any, ...], list[Capacity]]:
    """
    Agents that may take exactly the same work are claimed for together.
    """
    groups: dict[tuple[Any, ...], list[Capacity]] = {}
    for c in capacities:
        if c.slots <= 0:
            continue
        key = (c.cpus, c.ram_mb, c.gpus, c.tags, c.devices, c.host,
               c.agent_id if c.blocklisted else None)  # fmt: skip
        groups.setdefault(key, []).append(c)
    return groups


# The layers an agent of this capacity may take from, in the scheduler's
# order. No rows are locked here: the tasks are locked afterwards, exactly
# as many as were picked (locking a few of every candidate would make
# concurrent claimers skip far more than they need to). The projects'
# shares are summed over their jobs that may have active tasks.
_CANDIDATES = (
    "WITH p AS (SELECT project, sum(n_assigned + n_running)::int AS active FROM jobs"
    " WHERE state IN ('queued', 'running') GROUP BY project)"
    " SELECT l.id, l.index, j.id, j.priority, j.project, coalesce(p.active, 0),"
    " coalesce(w.weight, 1), j.n_assigned + j.n_running, j.weight, j.max_running,"
    " l.req_cpus, coalesce(l.learned_ram_mb, l.req_ram_mb), l.req_gpus, l.req_gpu_memory_mb,"
    " l.n_queued, l.max_running,"
    " l.n_assigned + l.n_running, l.limits"
    " FROM jobs j JOIN layers l ON l.job_id = j.id"
    " LEFT JOIN p ON p.project = j.project LEFT JOIN projects w ON w.name = j.project"
    " WHERE j.state IN ('queued', 'running') AND j.n_queued > 0 AND NOT j.paused"
    " AND NOT j.canceled AND l.n_queued > 0"
    " AND l.req_cpus <= %(cpus)s AND coalesce(l.learned_ram_mb, l.req_ram_mb) <= %(ram)s"
    " AND l.req_gpus <= %(gpus)s"
    " AND l.req_gpu_memory_mb <= %(gpu_mb)s AND l.req_tags <@ %(tags)s::text[]"
    # Beyond the minimums (maximums, os, architecture, attributes, amounts),
    # only for the layers that have such requirements (migration 0017).
    " AND (NOT l.req_extra OR masterd_capabilities_met(l.req_max_cpus, l.req_max_ram_mb,"
    " l.req_max_gpus, l.req_os_family, l.req_cpu_arch, l.req_attributes, l.req_amounts,"
    " %(h_cpus)s, %(h_ram)s, %(h_gpus)s, %(h_os)s, %(h_arch)s, %(h_attributes)s::jsonb,"
    " %(h_amounts)s::jsonb))"
    " AND (j.max_running IS NULL OR j.n_assigned + j.n_running < j.max_running)"
    " AND (l.max_running IS NULL OR l.n_assigned + l.n_running < l.max_running)"
    " AND NOT EXISTS (SELECT 1 FROM job_blocklist b WHERE b.job_id = j.id"
    " AND b.agent_id = ANY (%(agents)s::uuid[]) AND b.blocked)"
    " ORDER BY j.priority DESC, coalesce(p.active, 0)::float8 / coalesce(w.weight, 1),"
    " (j.n_assigned + j.n_running)::float8 / j.weight, j.id, l.index"
    " LIMIT %(layers)s"
)

# Each row says too whether the task's layer sizes its chunks (migration
# 0019): those are resized before they are handed out (chunking.py).
_LOCK = (
    "SELECT n.layer_id, t.id, l.chunk_target_s IS NOT NULL"
    " FROM unnest(%s::bigint[], %s::int[]) AS n (layer_id, k)"
    " JOIN layers l ON l.id = n.layer_id"
    " CROSS JOIN LATERAL (SELECT id, index FROM tasks WHERE layer_id = n.layer_id"
    " AND state = 'queued' ORDER BY index LIMIT n.k FOR UPDATE SKIP LOCKED) t"
    " ORDER BY n.layer_id, t.index"
)

# The advisory locks a claim tries to take, by name ('limit:NAME', 'job:ID',
# 'layer:ID'), and, once locked, the room of those it got, as committed, in
# one round trip (migration 0013: the read is a statement of its own after
# the locks). A limit's use is counted over the layers of the jobs that may
# have active tasks (running or paused): bounded by what runs, not by history.
_ROOMS = "SELECT claim_key, claim_room FROM masterd_claim_room(%s::text[])"


def _candidates(rows: list[tuple[Any, ...]], known: dict[Any, Any]) -> list[_Candidate]:
    """
    Rows of _CANDIDATES as candidates; jobs and projects are shared between
    the candidates (and groups) of one claim, so that a pick for one agent
    counts for all.
    """
    found: list[_Candidate] = []
    for (layerID, index, jobID, priority, project, projectActive, projectWeight, jobActive,
         jobWeight, jobMax, cpus, ram, gpus, gpuMB, queued, layerMax, layerActive,
         limits) in rows:  # fmt: skip
        share = known.setdefault(("project", project), _Share(projectActive, projectWeight))
        job = known.get(("job", jobID))
        if job is None:
            job = known[("job", jobID)] = _Job(
                jobID, priority, share, _Share(jobActive, jobWeight),
                None if jobMax is None else jobMax - jobActive,
            )  # fmt: skip
        candidate = known.get(("layer", layerID))
        if candidate is None:
            candidate = known[("layer", layerID)] = _Candidate(
                layerID, index, job, cpus, ram, gpus, gpuMB, queued,
                None if layerMax is None else layerMax - layerActive, tuple(limits),
            )  # fmt: skip
        found.append(candidate)
    return found


async def _rooms(
    txn: Transaction, candidates: list[_Candidate], claims: Claims, group: dict[int, list[str]]
) -> dict[str, int]:
    """
    Take the locks the candidates need and read their room; a candidate
    whose lock another claim holds gets no room (and its agents are noted
    as contended). Returns the room of every limit by name.
    """
    wanted: dict[str, list[_Candidate]] = {}
    for c in candidates:
        for name in c.limits:
            wanted.setdefault(f"limit:{name}", []).append(c)
        if c.job.room is not None:
            wanted.setdefault(f"job:{c.job.job_id}", []).append(c)
        if c.room is not None:
            wanted.setdefault(f"layer:{c.layer_id}", []).append(c)
    if not wanted:
        return {}
    keys = sorted(wanted)
    rooms = dict(await txn.query(_ROOMS, (keys,)))
    got = set(rooms)
    limits: dict[str, int] = {}
    for key in keys:
        if key not in got:
            for c in wanted[key]:
                c.available = 0
                claims.contended.update(group.get(id(c), ()))
    for key in got:
        room = max(0, rooms.get(key, 0) or 0)
        if key.startswith("limit:"):
            limits[key[6:]] = room
        for c in wanted[key]:
            if key.startswith("job:"):
                c.job.room = room
            elif key.startswith("layer:"):
                c.room = room
    return limits


async def claimAll(
    txn: Transaction, capacities: list[Capacity], at: float | Callable[[], float] | None = None
) -> Claims:
    """
    Assign queued tasks to the free slots of several agents, in a few
    statements whatever their number: one candidate query per group of alike
    agents, (only where limits or caps are involved) one to take their locks
    and read their room, one to lock the picked number of tasks of
    each layer, one to assign them. C{at} (a clock, or a time) is the
    attempts' start: a clock is read once the room is read, so that an
    attempt never seems to start before the report or change that made its
    room (committed by another master meanwhile) was received.
    """
    claims = Claims()
    known: dict[Any, Any] = {}
    groups: list[tuple[list[Capacity], list[_Candidate]]] = []
    #: The agents of the group(s) each candidate came from, by its id().
    agentsOf: dict[int, list[str]] = {}
    everyCandidate: dict[int, _Candidate] = {}
    for group in _groups(capacities).values():
        first = group[0]
        host = first.host
        total = sum(c.slots for c in group)
        rows = await txn.query(
            _CANDIDATES,
            {
                "cpus": first.cpus,
                "ram": first.ram_mb,
                "gpus": first.gpus,
                "gpu_mb": max((d[1] for d in first.devices), default=0),
                "tags": list(first.tags),
                "agents": [c.agent_id for c in group] if first.blocklisted else [],
                "layers": total,
                "h_cpus": host.cpus,
                "h_ram": host.ram_mb,
                "h_gpus": host.gpus,
                "h_os": host.os_family,
                "h_arch": host.cpu_arch,
                "h_attributes": host.attributesJSON(),
                "h_amounts": host.amountsJSON(),
            },
        )
        candidates = _candidates(rows, known)
        for c in candidates:
            agentsOf.setdefault(id(c), []).extend(a.agent_id for a in group)
            everyCandidate[id(c)] = c
        groups.append((group, candidates))
    limits = await _rooms(txn, list(everyCandidate.values()), claims, agentsOf)
    when = at() if callable(at) else at
    picks: list[tuple[str, int, tuple[int, ...]]] = []
    for group, candidates in groups:
        ranking = _Ranking(candidates, limits)
        for agent in group:
            picks.extend(
                (agent.agent_id, layerID, devices) for layerID, _, devices in ranking.pick(agent)
            )
    if not picks:
        return claims
    need = Counter(layerID for _, layerID, _ in picks)
    layerIDs = sorted(need)
    locked: dict[int, list[int]] = {}
    sized: list[int] = []
    for layerID, taskID, chunked in await txn.query(_LOCK, (layerIDs, [need[k] for k in layerIDs])):
        locked.setdefault(layerID, []).append(taskID)
        if chunked:
            sized.append(taskID)
    if sized:
        await sizeChunks(txn, sized, [t for tasks in locked.values() for t in tasks])
    pairs: list[tuple[int, str]] = []
    devices: dict[int, tuple[int, ...]] = {}
    for agentID, layerID, given in picks:
        tasks = locked.get(layerID)
        if tasks:
            # Tasks another claimer holds were skipped: fewer to hand out.
            taskID = tasks.pop(0)
            pairs.append((taskID, agentID))
            if given:
                devices[taskID] = given
    for a in await lifecycle.assignMany(txn, pairs, when, devices):
        claims.assigned.setdefault(a.agent_id, []).append(a)
    return claims


async def claimMany(
    txn: Transaction, capacities: list[Capacity], at: float | None = None
) -> dict[str, list[lifecycle.Assignment]]:
    """
    L{claimAll}'s assignments only.
    """
    return (await claimAll(txn, capacities, at)).assigned


async def claim(
    txn: Transaction, capacity: Capacity, at: float | None = None
) -> list[lifecycle.Assignment]:
    """
    Assign up to C{capacity.slots} queued tasks to one agent.
    """
    return (await claimMany(txn, [capacity], at)).get(capacity.agent_id, [])
