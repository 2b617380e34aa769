"""
The scheduler: keeps the agents connected to this master busy.

Each connected agent's free capacity is this master's to know (it holds the
connection), so it is kept here, in memory, and claims are made for agents
with free slots whenever one may have come free: after their welcome, after
each task they finish, when work becomes available (a job submitted,
resumed, retried or released), when their limits change, and on a periodic
sweep as a safety net. Claims and task reports go through one group-commit
batcher, so that a busy farm writes in few transactions.

The sweep also enforces the timeouts: a running attempt older than its
job's task_timeout_s, or silent for its stall_timeout_s, is canceled on its
agent and counted as a failed attempt ("timeout", "stalled: ..."); an
assigned task not reported running within assign_timeout_s is requeued.
When enabled, it also preempts (preemption.py).
"""

from __future__ import annotations

from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from masterd.db import Batcher, DatabaseUnavailable, Transaction
from masterd.events import (
    AgentChanged,
    AgentGone,
    AgentReady,
    EventBus,
    SlotFreed,
    TaskCanceled,
    WorkAvailable,
)
from masterd.jobs import lifecycle
from masterd.jobs.capabilities import Host
from masterd.service import LoopWatcher, Periodic, StagedService
from masterd.stats import SchedulingStats
from masterd.talkback import AgentRegistry

from .claims import NO_HOST, Capacity, Claims, Device, claimAll
from .preemption import PreemptionSettings, sweepPreemption
from .timeouts import assignTimeouts, stallTimeouts, taskTimeouts

log = Logger()

#: How soon agents whose work another claim held locked are offered again.
CONTENDED_RETRY_S = 0.02


@frozen
class SchedulerSettings:
    sweep_s: float = 5.0
    assign_timeout_s: float = 60.0
    blocklist_after: int = 3
    preemption: PreemptionSettings = field(factory=PreemptionSettings)


@define
class AgentSlots:
    """
    An agent connected here: what it may run, and what it runs.
    """

    agent_id: str
    enabled: bool
    max_tasks: int
    cpus: int
    ram_mb: int
    gpus: int
    tags: tuple[str, ...]
    #: What each task it runs takes: (cpus, ram_mb, gpus, GPU indexes).
    running: dict[int, Taken] = field(factory=dict)
    #: It has failed on some job: it may be blocklisted there.
    blocklisted: bool = False
    #: Its GPUs: (index, memory in MB).
    devices: tuple[Device, ...] = ()
    #: What it is, for the requirements beyond the minimums.
    host: Host = NO_HOST

    def capacity(self) -> Capacity:
        running = self.running.values()
        used = [sum(r[0] for r in running), sum(r[1] for r in running), sum(r[2] for r in running)]
        busy = {index for r in self.running.values() for index in r[3]}
        free = tuple(d for d in self.devices if d[0] not in busy)
        gpus = self.gpus - used[2]
        if self.devices:
            # The devices decide: the count can say more are free (a job's
            # gpus patched while its tasks run, devices gone at a
            # reconnect), and a task given no device, or a busy one, would
            # share one.
            gpus = min(gpus, len(free))
        return Capacity(
            agent_id=self.agent_id,
            slots=(self.max_tasks - len(self.running)) if self.enabled else 0,
            cpus=self.cpus - used[0],
            ram_mb=self.ram_mb - used[1],
            gpus=gpus,
            tags=self.tags,
            blocklisted=self.blocklisted,
            devices=free,
            host=self.host,
        )


#: What a task takes of its agent: (cpus, ram_mb, gpus, GPU indexes).
Taken = tuple[int, int, int, tuple[int, ...]]


def taken(assignment: lifecycle.Assignment) -> Taken:
    return (*assignment.requirements, assignment.gpu_devices)


async def activeTasks(txn: Transaction, agentIDs: list[str]) -> dict[str, dict[int, Taken]]:
    """
    What the database says each agent runs (assigned or running), with the
    requirements of each task's layer and the GPUs its attempt was given.
    """
    rows = await txn.query(
        "SELECT t.agent_id, t.id, l.req_cpus, coalesce(l.learned_ram_mb, l.req_ram_mb),"
        " l.req_gpus, a.gpu_devices"
        " FROM tasks t JOIN layers l ON l.id = t.layer_id"
        " LEFT JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt"
        " WHERE t.agent_id = ANY (%s::uuid[]) AND t.state IN ('assigned', 'running')",
        (agentIDs,),
    )
    found: dict[str, dict[int, Taken]] = {}
    for agentID, taskID, cpus, ram, gpus, devices in rows:
        found.setdefault(str(agentID), {})[taskID] = (cpus, ram, gpus, tuple(devices or ()))
    return found


def agentDevices(gpus: int, reported: list[dict[str, Any]] | None) -> tuple[Device, ...]:
    """
    An agent's GPUs as it reported them at hello; an agent that gave only
    their number (C{--gpus}) has that many, numbered from 0, of unknown
    memory.
    """
    if reported:
        return tuple(sorted((int(d["index"]), int(d.get("memory_mb") or 0)) for d in reported))
    return tuple((i, 0) for i in range(gpus))


async def loadSlots(txn: Transaction, agentID: str) -> AgentSlots | None:
    return (await loadSlotsMany(txn, [agentID]))[0]


async def loadSlotsMany(txn: Transaction, agentIDs: list[str]) -> list[AgentSlots | None]:
    """
    What each agent may run and runs now, in three statements for any number
    of agents (a batch of agents joining at once, after a master died, is
    loaded together); None for an agent that is not connected.
    """
    from masterd.talkback.directory import effectiveLimits

    rows = await txn.query(
        "SELECT id, enabled, max_tasks, agent_limits, operator_limits, cpus, ram_mb, gpus,"
        " gpu_devices, tags || extra_tags, EXISTS (SELECT 1 FROM job_blocklist b"
        " WHERE b.agent_id = a.id AND b.blocked), os_family, cpu_arch, attributes, amounts"
        " FROM agents a"
        " WHERE id = ANY (%s::uuid[]) AND session IS NOT NULL",
        (agentIDs,),
    )
    running = await activeTasks(txn, [str(r[0]) for r in rows])
    found: dict[str, AgentSlots] = {}
    for (
        agentID,
        enabled,
        maxTasks,
        agentLimits,
        operatorLimits,
        cpus,
        ram,
        gpus,
        gpuDevices,
        tags,
        blocked,
        osFamily,
        cpuArch,
        attributes,
        amounts,
    ) in rows:
        limits = effectiveLimits(cpus, ram, maxTasks, agentLimits, operatorLimits)
        found[str(agentID)] = AgentSlots(
            agent_id=str(agentID),
            blocklisted=bool(blocked),
            enabled=enabled,
            max_tasks=limits["max_tasks"],
            # An agent that reports no cpus or ram is not limited by them.
            cpus=limits["max_cpus"] if cpus else 2**31 - 1,
            ram_mb=limits["max_ram_mb"] if ram else 2**31 - 1,
            gpus=gpus,
            tags=tuple(sorted(set(tags))),
            running=running.get(str(agentID), {}),
            devices=agentDevices(gpus, gpuDevices),
            host=Host.of(cpus, ram, gpus, osFamily, cpuArch, attributes, amounts),
        )
    return [found.get(agentID) for agentID in agentIDs]


class Scheduler(StagedService):
    name = "scheduler"

    def __init__(
        self,
        batcher: Batcher,
        registry: AgentRegistry,
        events: EventBus,
        clock: IReactorTime,
        settings: SchedulerSettings,
        stats: SchedulingStats | None = None,
        watcher: LoopWatcher | None = None,
    ) -> None:
        self.batcher = batcher
        self.stats = stats if stats is not None else SchedulingStats()
        self.registry = registry
        self.events = events
        self.clock = clock
        self.settings = settings
        self.agents: dict[str, AgentSlots] = {}
        #: Tasks each agent reported finished since the last check of the
        #: slots: their reports may not be written yet.
        self._freed: dict[str, set[int]] = {}
        #: Tasks that agents here were told to stop (canceled, timed out,
        #: preempted), and since when: their slots stay taken until the
        #: agent reports the process ended, for assign_timeout_s at most,
        #: so that no task (nor the same one again) starts beside it.
        self._stopping: dict[str, dict[int, float]] = {}
        self._wanted: set[str] = set()
        #: A claim waits in the batcher; it will take every offer made
        #: until its transaction runs.
        self._claimQueued = False
        self._inFlight = 0
        self._round: Deferred[None] | None = None
        self._sweep = Periodic("scheduler.sweep", self.sweep, settings.sweep_s, clock, watcher)
        self.rounds = 0
        self._contended: set[str] = set()
        self._retry: IDelayedCall | None = None
        events.subscribe(AgentReady, lambda event: self.agentJoined(event.agent_id))
        events.subscribe(AgentGone, lambda event: self.agentGone(event.agent_id))
        events.subscribe(
            SlotFreed, lambda event: self.taskFinished(event.agent_id, event.task_id, event.failed)
        )
        events.subscribe(WorkAvailable, lambda event: self.offerAll())
        events.subscribe(AgentChanged, lambda event: self.agentJoined(event.agent_id))
        events.subscribe(TaskCanceled, self._taskStopping)

    async def start(self) -> None:
        self._sweep.start()

    async def stop(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        await self._sweep.stop()
        if self._round is not None:
            await self._round

    # -- who wants work ------------------------------------------------------

    def agentJoined(self, agentID: str) -> None:
        """
        Load (or reload) what the agent may run, then offer it work.
        """

        async def load() -> None:
            try:
                slots = await self.batcher.submitGrouped(loadSlotsMany, agentID)
            except DatabaseUnavailable:
                return
            if slots is None or agentID not in self.registry.connections:
                self.agents.pop(agentID, None)
                return
            # Reported finished while the load was on its way (a reconnected
            # agent sends its final reports at once): their slots are free
            # even if the load read them before the reports were written.
            for taskID in self._freed.get(agentID, ()):
                slots.running.pop(taskID, None)
            self.agents[agentID] = slots
            self.offer(agentID)

        Deferred.fromCoroutine(load()).addErrback(
            lambda f: log.failure("cannot load agent {agentId}", f, agentId=agentID)
        )

    def agentGone(self, agentID: str) -> None:
        self.agents.pop(agentID, None)
        self._freed.pop(agentID, None)
        self._stopping.pop(agentID, None)
        self._wanted.discard(agentID)

    def taskFinished(self, agentID: str, taskID: int, failed: bool = False) -> None:
        if agentID in self.registry.connections:
            self._freed.setdefault(agentID, set()).add(taskID)
        self._stopping.get(agentID, {}).pop(taskID, None)
        slots = self.agents.get(agentID)
        if slots is None:
            return
        if failed:
            slots.blocklisted = True
        if slots.running.pop(taskID, None) is not None:
            self.offer(agentID)

    def _taskStopping(self, event: TaskCanceled) -> None:
        slots = self.agents.get(event.agent_id)
        if slots is not None and event.task_id in slots.running:
            self._stopping.setdefault(event.agent_id, {})[event.task_id] = self.clock.seconds()

    def offer(self, agentID: str) -> None:
        self._wanted.add(agentID)
        self._schedule()

    def offerAll(self) -> None:
        self._wanted.update(self.agents)
        self._schedule()

    def _schedule(self) -> None:
        if not self._claimQueued:
            self._claimQueued = True
            self._round = Deferred.fromCoroutine(self._claimRound())
            self._round.addErrback(lambda f: log.failure("scheduling round failed", f))

    @property
    def busy(self) -> bool:
        """
        A claim is queued or being written.
        """
        return self._claimQueued or self._inFlight > 0

    async def _claimRound(self) -> None:
        """
        Queue one claim in the batcher. It decides whom to claim for only
        when its transaction runs, after the task reports of the same batch:
        a slot freed by a report is filled in the transaction that records
        the report, and every offer made until then rides along.
        """
        taken: list[Capacity] = []
        ran = False

        async def claimNow(txn: Transaction) -> Claims:
            nonlocal ran
            ran = True
            # Offers from now on need another claim (in the next batch).
            self._claimQueued = False
            # Run again after a failed batch: claim for the same agents.
            wanted = self._wanted | {c.agent_id for c in taken}
            self._wanted = set()
            taken.clear()
            for agentID in sorted(wanted):
                slots = self.agents.get(agentID)
                if slots is not None:
                    capacity = slots.capacity()
                    if capacity.slots > 0:
                        taken.append(capacity)
            if not taken:
                return Claims()
            self.rounds += 1
            return await claimAll(txn, taken, self.clock.seconds)

        self._inFlight += 1
        try:
            results = await self.batcher.submit(claimNow)
        except Exception as e:
            if not ran:
                self._claimQueued = False
            # Offered again at the next chance, at the latest by the sweep.
            self._wanted.update(c.agent_id for c in taken)
            if isinstance(e, DatabaseUnavailable):
                return
            raise
        finally:
            self._inFlight -= 1
        if taken:
            self.stats.claims += 1
        for agentID, assignments in results.assigned.items():
            self.stats.assigned += len(assignments)
            self._assigned(agentID, assignments)
        if results.contended:
            # Another claim held a limit or cap these agents' work needs: it
            # commits within a batch, so try again very soon.
            self._contended.update(results.contended)
            if self._retry is None or not self._retry.active():
                self._retry = self.clock.callLater(CONTENDED_RETRY_S, self._retryContended)

    def _assigned(self, agentID: str, assignments: list[lifecycle.Assignment]) -> None:
        slots = self.agents.get(agentID)
        connection = self.registry.connections.get(agentID)
        freed = self._freed.get(agentID)
        if freed:
            freed.difference_update(a.task_id for a in assignments)
        if slots is not None:
            for a in assignments:
                slots.running[a.task_id] = taken(a)
        if connection is not None:
            connection.assign(assignments)
        # If the connection went meanwhile, the tasks are found again by the
        # assign timeout or the lost grace, whichever comes first.

    def _retryContended(self) -> None:
        self._retry = None
        wanted, self._contended = self._contended, set()
        for agentID in wanted:
            if agentID in self.agents:
                self.offer(agentID)

    def resync(self) -> None:
        """
        After hints may have been missed (the listening connection was
        lost): cancels for attempts closed meanwhile, and work for everyone.
        """

        async def closed(txn: Transaction) -> list[tuple[str, int, int, str]]:
            pairs = [(t, a) for a in self.agents.values() for t in a.running]
            if not pairs:
                return []
            rows = await txn.query(
                "SELECT t.agent_id, t.id, a.attempt, a.state FROM tasks t"
                " JOIN task_attempts a ON a.task_id = t.id AND a.agent_id = t.agent_id"
                " WHERE t.id = ANY (%s) AND a.finished_at IS NOT NULL"
                " AND a.state IN ('canceled', 'lost')",
                ([t for t, _ in pairs],),
            )
            return [(str(r[0]), r[1], r[2], r[3]) for r in rows]

        async def run() -> None:
            try:
                found = await self.batcher.submit(closed)
            except DatabaseUnavailable as e:
                # The database's return calls resync again (tap.py).
                log.warn("resynchronising waits for the database: {why}", why=str(e))
                return
            for agentID, taskID, attempt, _ in found:
                self.events.publish(TaskCanceled(taskID, attempt, agentID, "canceled"))
            self.offerAll()

        Deferred.fromCoroutine(run()).addErrback(lambda f: log.failure("resync failed", f))

    # -- the sweep --------------------------------------------------------------

    async def sweep(self) -> None:
        """
        Enforce the timeouts, then offer work to every agent with room.
        """
        now = self.clock.seconds()

        async def timeouts(txn: Transaction) -> list[tuple[str, int, int]]:
            found = await taskTimeouts(txn, now, self.settings.blocklist_after)
            stalled = await stallTimeouts(txn, now, self.settings.blocklist_after)
            # Whichever master holds the agent stops the attempt.
            await self.events.announce(
                txn,
                *(TaskCanceled(t, a, agent, "timeout") for agent, t, a in found),
                *(TaskCanceled(t, a, agent, "stalled") for agent, t, a in stalled),
            )
            # Counted once committed: a batch may be written again.
            txn.afterCommit(lambda: self._countTimeouts(len(found), len(stalled), 0))
            return found + stalled

        async def unstartedTimeouts(txn: Transaction) -> list[tuple[str, int, int]]:
            found = await assignTimeouts(txn, now - self.settings.assign_timeout_s, now)
            await self.events.announce(
                txn,
                *(TaskCanceled(t, a, agent, "not reported running in time")
                  for agent, t, a in found),
            )  # fmt: skip
            txn.afterCommit(lambda: self._countTimeouts(0, 0, len(found)))
            return found

        try:
            await self.batcher.submit(timeouts)
            unstarted = await self.batcher.submit(unstartedTimeouts)
        except DatabaseUnavailable:
            return
        for agentID, taskID, _ in unstarted:
            # Not the agent's any more, and it may never have heard of it:
            # its slot is free now.
            self.taskFinished(agentID, taskID)
        await self.checkSlots()
        self.offerAll()
        # A preempted attempt's slot is freed when its agent reports the
        # process stopped, as after any cancel (_stopping).
        preempted = await sweepPreemption(self.batcher, self.events, now, self.settings.preemption)
        self.stats.preempted += len(preempted)

    def _countTimeouts(self, timedOut: int, stalled: int, unstarted: int) -> None:
        self.stats.timedOut += timedOut
        self.stats.stalled += stalled
        self.stats.unstarted += unstarted

    async def checkSlots(self) -> None:
        """
        Hold what each agent runs, as this master believes, against the
        database, and repair a difference (logged and counted): a slot
        believed taken for good would keep an idle agent from work.

        The query goes through the batcher, so that every claim is either
        in the database it reads or not yet in memory when it is compared.
        Tasks reported finished since the last check are left alone: their
        reports may still be on their way to the database; so are tasks
        being stopped, until their agent says they ended.
        """
        agentIDs = sorted(self.agents)
        if not agentIDs:
            return
        try:
            actual = await self.batcher.submit(lambda txn: activeTasks(txn, agentIDs))
        except DatabaseUnavailable:
            return
        freed, self._freed = self._freed, {}
        now, keep = self.clock.seconds(), self.settings.assign_timeout_s
        for agentID in agentIDs:
            slots = self.agents.get(agentID)
            if slots is None:
                continue
            truth = actual.get(agentID, {})
            recent = freed.get(agentID, set())
            stopping = self._stopping.get(agentID, {})
            for taskID in [t for t, since in stopping.items() if now - since >= keep]:
                del stopping[taskID]
            stale = sorted(t for t in slots.running if t not in truth and t not in stopping)
            missing = sorted(t for t in truth if t not in slots.running and t not in recent)
            if not stale and not missing:
                continue
            self.stats.slotRepairs += 1
            log.warn(
                "agent {agentId}: believed to run {stale} (not so in the database) and not"
                " {missing} (so in the database); repaired",
                agentId=agentID,
                stale=stale,
                missing=missing,
            )
            for taskID in stale:
                del slots.running[taskID]
            for taskID in missing:
                slots.running[taskID] = truth[taskID]
            self._wanted.add(agentID)
