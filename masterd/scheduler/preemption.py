"""
Preemption (opt-in, C{scheduler.preemption}): urgent work that no free slot
can take displaces running tasks of C{preemptible} jobs far enough below it.

The sweep decides it from the database, so that any master decides for the
whole farm: the queued tasks of jobs of priority P that no connected agent
(on any master) has a free slot and the resources for, and the running
attempts of preemptible jobs of priority at most P - C{priority_gap} that
have run for C{min_runtime_s} on agents where such a task would fit once the
attempt's slot and resources are free. Each waiting task displaces at most
one attempt per sweep: the lowest priority first, then the most recently
started (it loses the least work). The attempt is closed as C{preempted},
its task goes back to queued without counting a failure, and the master
holding the agent is told to stop it (L{TaskCanceled}, reason
C{preempted}). The slot is freed on that master when the agent reports the
process stopped, as after any cancel, and the claim then fills it in the
scheduler's order: priority first, so the urgent work, not the task just
preempted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from attrs import define, frozen
from twisted.logger import Logger

from masterd.db import Batcher, DatabaseUnavailable, Transaction
from masterd.events import EventBus, TaskCanceled
from masterd.jobs import lifecycle
from masterd.jobs.capabilities import NONE, Extra, Host, meets

from .claims import NO_HOST, Device

if TYPE_CHECKING:
    from .service import AgentSlots

log = Logger()

#: The advisory lock a preempting sweep holds for its transaction.
LOCK_KEY = "preemption"

#: The most layers with queued work one sweep looks at.
MAX_LAYERS = 1000


@frozen
class PreemptionSettings:
    enabled: bool = False
    #: A preemptible job must be at least this far below the waiting one.
    priority_gap: int = 20
    #: An attempt must have run this long (since its restart after an
    #: earlier preemption, too) before it may be preempted.
    min_runtime_s: float = 60.0


@frozen
class Preempted:
    agent_id: str
    task_id: int
    attempt: int
    #: The job whose waiting task it made room for.
    for_job: int


@frozen
class _Waiting:
    """
    A layer with queued tasks: what each of them needs.
    """

    layer_id: int
    job_id: int
    priority: int
    cpus: int
    ram_mb: int
    gpus: int
    gpu_memory_mb: int
    tags: frozenset[str]
    #: How many of its tasks may still be placed (queued, within its caps).
    count: int
    limits: tuple[str, ...]
    #: Its requirements beyond the minimums.
    extra: Extra = NONE


@frozen
class _Victim:
    task_id: int
    attempt: int
    agent_id: str
    job_id: int
    priority: int
    limits: tuple[str, ...]


@define
class _Free:
    """
    What an agent has free, as the decision goes on.
    """

    agent_id: str
    slots: int
    cpus: int
    ram_mb: int
    gpus: int
    tags: frozenset[str]
    devices: tuple[Device, ...]
    host: Host = NO_HOST

    def fits(self, w: _Waiting) -> tuple[Device, ...] | None:
        """
        The GPUs a task of C{w} would be given here (as the claim would pick
        them), or None if it does not fit.
        """
        if (self.slots < 1 or w.cpus > self.cpus or w.ram_mb > self.ram_mb
                or w.gpus > self.gpus or not w.tags <= self.tags
                or not meets(w.extra, self.host)):  # fmt: skip
            return None
        if w.gpus and self.devices:
            fitting = sorted((d for d in self.devices if d[1] >= w.gpu_memory_mb),
                             key=lambda d: (d[1], d[0]))  # fmt: skip
            return tuple(fitting[: w.gpus]) if len(fitting) >= w.gpus else None
        if w.gpu_memory_mb:
            return None  # the agent did not say what memory its GPUs have
        return ()

    def take(self, w: _Waiting, devices: tuple[Device, ...]) -> None:
        self.slots -= 1
        self.cpus -= w.cpus
        self.ram_mb -= w.ram_mb
        self.gpus -= w.gpus
        self.devices = tuple(d for d in self.devices if d not in devices)

    def plus(self, taken: tuple[int, int, int, tuple[int, ...]], memory: dict[int, int]) -> _Free:
        """
        What it would have free without a task that takes C{taken}.
        """
        cpus, ram, gpus, indexes = taken
        return _Free(
            self.agent_id, self.slots + 1, self.cpus + cpus, self.ram_mb + ram,
            self.gpus + gpus, self.tags,
            tuple(sorted({*self.devices, *((i, memory.get(i, 0)) for i in indexes)})), self.host,
        )  # fmt: skip


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


_WAITING = (
    "SELECT l.id, j.id, j.priority, l.req_cpus, coalesce(l.learned_ram_mb, l.req_ram_mb),"
    " l.req_gpus, l.req_gpu_memory_mb,"
    " l.req_tags, l.n_queued, least(j.max_running - j.n_assigned - j.n_running,"
    " l.max_running - l.n_assigned - l.n_running), l.limits, l.req_extra, l.req_max_cpus,"
    " l.req_max_ram_mb, l.req_max_gpus, l.req_os_family, l.req_cpu_arch, l.req_attributes,"
    " l.req_amounts"
    " FROM jobs j JOIN layers l ON l.job_id = j.id"
    " WHERE j.state IN ('queued', 'running') AND j.n_queued > 0 AND NOT j.paused"
    " AND NOT j.canceled AND l.n_queued > 0 AND j.priority >= %s"
    " ORDER BY j.priority DESC, j.id, l.index LIMIT %s"
)

# Running attempts that may be preempted, in the order they are: lowest
# priority, then the most recently started. The later of started_at and
# preempted_at counts as the restart: started_at is written by the master
# holding the agent and preempted_at by the one that preempted, and with
# their clocks apart a restart could otherwise seem older than it is.
_VICTIMS = (
    "SELECT t.id, t.attempt, t.agent_id, j.id, j.priority, l.limits"
    " FROM jobs j JOIN tasks t ON t.job_id = j.id AND t.state = 'running'"
    " JOIN layers l ON l.id = t.layer_id"
    " WHERE j.preemptible AND j.state IN ('running', 'paused') AND j.priority <= %s"
    " AND greatest(t.started_at, t.preempted_at) <= %s"
    " ORDER BY j.priority, t.started_at DESC, t.id DESC"
)

# A limit's use, as the claim counts it (masterd_claim_room), without its lock:
# the claim decides exactly; this only says whether freeing helps.
_LIMIT_ROOM = (
    "SELECT lim.name, lim.max - coalesce((SELECT sum(l.n_assigned + l.n_running)"
    " FROM jobs j JOIN layers l ON l.job_id = j.id WHERE j.state IN ('running', 'paused')"
    " AND l.limits @> ARRAY[lim.name]), 0) FROM limits lim WHERE lim.name = ANY (%s)"
)


async def choose(txn: Transaction, now: float, settings: PreemptionSettings) -> list[Preempted]:
    """
    Which running attempts to preempt now, and for which job; nothing is
    changed or locked but the transaction's advisory lock.
    """
    from .service import loadSlotsMany

    # One preempting sweep at a time, whatever the masters: a sweep that
    # finds the lock held skips preemption this time. The next one reads
    # what the previous preempted (its slots count as free), so a waiting
    # task does not make room twice. Only bounded double work remains: a
    # freed slot taken by other work (another agent freed at the same
    # moment took the waiting task) makes the next sweep preempt again for
    # the same job, at most one attempt per waiting task per sweep.
    got = await txn.query("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (LOCK_KEY,))
    if not got[0][0]:
        return []
    gap = settings.priority_gap
    waiting = [
        _Waiting(layerID, jobID, priority, cpus, ram, gpus, gpuMB, frozenset(tags),
                 queued if room is None else min(queued, room), tuple(limits),
                 Extra.of(*extra) if given else NONE)
        for (layerID, jobID, priority, cpus, ram, gpus, gpuMB, tags, queued, room,
             limits, given, *extra) in await txn.query(_WAITING, (gap, MAX_LAYERS))
    ]  # fmt: skip
    waiting = [w for w in waiting if w.count > 0]
    if not waiting:
        return []
    cutoff = _ts(now - settings.min_runtime_s)
    victims = [
        _Victim(taskID, attempt, str(agentID), jobID, priority, tuple(limits))
        for taskID, attempt, agentID, jobID, priority, limits in await txn.query(
            _VICTIMS, (waiting[0].priority - gap, cutoff)
        )
    ]
    if not victims:
        return []
    connected = [str(r[0]) for r in await txn.query(
        "SELECT id FROM agents WHERE session IS NOT NULL ORDER BY id"
    )]  # fmt: skip
    slots = {s.agent_id: s for s in await loadSlotsMany(txn, connected) if s is not None}
    blocked = {
        (r[0], str(r[1]))
        for r in await txn.query(
            "SELECT job_id, agent_id FROM job_blocklist WHERE blocked AND job_id = ANY (%s)",
            (sorted({w.job_id for w in waiting}),),
        )
    }
    names = sorted({n for w in waiting for n in w.limits})
    rooms: dict[str, int] = {}
    if names:
        rooms = {r[0]: r[1] for r in await txn.query(_LIMIT_ROOM, (names,))}
    return _decide(waiting, victims, slots, blocked, rooms, gap)


def _decide(
    waiting: list[_Waiting],
    victims: list[_Victim],
    slots: dict[str, AgentSlots],
    blocked: set[tuple[int, str]],
    rooms: dict[str, int],
    gap: int,
) -> list[Preempted]:
    """
    Place the waiting tasks, best first, in the free capacity as the claims
    would; each that finds none takes the first victim (in their order) on
    an agent where it fits once the victim is gone.
    """
    free: dict[str, _Free] = {}
    memory: dict[str, dict[int, int]] = {}
    for agentID, s in slots.items():
        c = s.capacity()
        free[agentID] = _Free(agentID, c.slots, c.cpus, c.ram_mb, c.gpus, frozenset(c.tags),
                              c.devices, c.host)  # fmt: skip
        memory[agentID] = dict(s.devices)
    chosen: list[Preempted] = []
    left = [v for v in victims if v.agent_id in slots and slots[v.agent_id].enabled
            and v.task_id in slots[v.agent_id].running]  # fmt: skip
    for w in waiting:
        for _ in range(w.count):
            if not all(rooms.get(n, 0) > 0 for n in w.limits) and not left:
                break
            placed = False
            if all(rooms.get(n, 0) > 0 for n in w.limits):
                for f in free.values():
                    if (w.job_id, f.agent_id) in blocked:
                        continue
                    devices = f.fits(w)
                    if devices is not None:
                        f.take(w, devices)
                        placed = True
                        break
            if not placed:
                victim = _victimFor(w, left, free, memory, slots, blocked, rooms, gap)
                if victim is None:
                    # Its other tasks need the same: none will do better.
                    break
                left.remove(victim)
                chosen.append(Preempted(victim.agent_id, victim.task_id, victim.attempt,
                                        w.job_id))  # fmt: skip
                for n in victim.limits:
                    rooms[n] = rooms.get(n, 0) + 1
            for n in w.limits:
                rooms[n] = rooms.get(n, 0) - 1
    return chosen


def _victimFor(
    w: _Waiting,
    left: list[_Victim],
    free: dict[str, _Free],
    memory: dict[str, dict[int, int]],
    slots: dict[str, AgentSlots],
    blocked: set[tuple[int, str]],
    rooms: dict[str, int],
    gap: int,
) -> _Victim | None:
    """
    The first victim whose going would let a task of C{w} run (and take its
    place in C{free}), or None.
    """
    for v in left:
        if v.priority > w.priority - gap:
            # In priority order: none after it is low enough either.
            return None
        if (w.job_id, v.agent_id) in blocked:
            continue
        if not all(rooms.get(n, 0) + v.limits.count(n) > 0 for n in w.limits):
            continue
        after = free[v.agent_id].plus(slots[v.agent_id].running[v.task_id], memory[v.agent_id])
        devices = after.fits(w)
        if devices is None:
            continue
        after.take(w, devices)
        free[v.agent_id] = after
        return v
    return None


async def preempt(txn: Transaction, now: float, settings: PreemptionSettings) -> list[Preempted]:
    """
    Choose, then preempt: each chosen attempt's task row locked (skipped if
    another transaction holds it: a report on its way, say), its attempt
    closed as preempted and its task requeued, fenced as any report.
    """
    chosen = await choose(txn, now, settings)
    if not chosen:
        return []
    locked = {
        r[0]
        for r in await txn.query(
            "SELECT id FROM tasks WHERE id = ANY (%s) AND state = 'running'"
            " ORDER BY id FOR UPDATE SKIP LOCKED",
            (sorted(p.task_id for p in chosen),),
        )
    }
    done = []
    for p in chosen:
        if p.task_id not in locked:
            continue
        outcome = await lifecycle.preempt(
            txn, p.agent_id, p.task_id, p.attempt, f"preempted by job {p.for_job}", now
        )
        if outcome is lifecycle.Outcome.applied:
            done.append(p)
    return done


async def sweepPreemption(
    batcher: Batcher, events: EventBus, now: float, settings: PreemptionSettings
) -> list[Preempted]:
    """
    The sweep's part: preempt what is due, and tell the master holding each
    agent to stop the attempt, in one transaction.
    """
    if not settings.enabled:
        return []

    async def work(txn: Transaction) -> list[Preempted]:
        found = await preempt(txn, now, settings)
        await events.announce(
            txn, *(TaskCanceled(p.task_id, p.attempt, p.agent_id, "preempted") for p in found)
        )
        return found

    try:
        found = await batcher.submit(work)
    except DatabaseUnavailable:
        return []
    for p in found:
        log.info(
            "preempted task {taskId} attempt {attempt} on agent {agentId} for job {jobId}",
            taskId=p.task_id, attempt=p.attempt, agentId=p.agent_id, jobId=p.for_job,
        )  # fmt: skip
    return found
