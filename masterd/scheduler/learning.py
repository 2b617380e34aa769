"""
Requirements that learn (scheduler.learn_requirements; docs/scheduler.md,
"Learned requirements"): a layer whose tasks declared the memory they need
(requirements.ram_mb) is placed by what its attempts were seen to use once
enough of them reported it: the 95th percentile of the peaks of its latest
L{SAMPLE} attempts, kept in layers.learned_ram_mb, which the claim, the
slots and preemption read instead of req_ram_mb where it is set.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from masterd.db import DatabaseUnavailable, Pool
from masterd.service import LoopWatcher, Periodic, StagedService

#: The latest attempts (of the layer's tasks' current attempts, by task
#: index) a layer's learned memory is taken from.
SAMPLE = 200
#: Attempts that must have reported their peak before a layer's memory is
#: learned: fewer say too little.
MINIMUM = 5
#: How often the learned figures are brought up to date.
INTERVAL_S = 30.0

# Layers of jobs that may still run tasks, that declare their memory: the
# 95th percentile of their latest peaks (MB, rounded up), when enough.
_LEARN = (
    "UPDATE layers l SET learned_ram_mb = s.mb FROM ("
    " SELECT l2.id, CASE WHEN count(x.kb) >= %s THEN"
    " ceil(percentile_cont(0.95) WITHIN GROUP (ORDER BY x.kb) / 1024)::int END AS mb"
    " FROM layers l2 JOIN jobs j ON j.id = l2.job_id"
    " CROSS JOIN LATERAL (SELECT a.peak_rss_kb AS kb FROM tasks t JOIN task_attempts a"
    " ON a.task_id = t.id AND a.attempt = t.attempt WHERE t.layer_id = l2.id"
    " AND t.state IN ('done', 'failed', 'queued') AND a.peak_rss_kb > 0"
    " ORDER BY t.index DESC LIMIT %s) x"
    " WHERE j.state IN ('queued', 'running') AND l2.req_ram_mb > 0 GROUP BY l2.id) s"
    " WHERE l.id = s.id AND l.learned_ram_mb IS DISTINCT FROM s.mb RETURNING l.id"
)


async def learnRequirements(pool: Pool) -> int:
    """
    Bring the learned memory of the layers that may run up to date; the
    number of layers whose figure changed.
    """
    rows = await pool.query(_LEARN, (MINIMUM, SAMPLE))
    return len(rows)


async def forgetRequirements(pool: Pool) -> int:
    """
    Place every layer by its declared memory again (a master that does not
    learn, started after one that did).
    """
    rows = await pool.query(
        "UPDATE layers SET learned_ram_mb = NULL WHERE learned_ram_mb IS NOT NULL RETURNING id"
    )
    return len(rows)


class RequirementLearner(StagedService):
    """
    With C{learn}, L{learnRequirements} every L{INTERVAL_S}; without, the
    learned figures are forgotten once at start.
    """

    name = "scheduler.learn"

    def __init__(
        self,
        pool: Pool,
        learn: bool,
        clock: IReactorTime,
        watcher: LoopWatcher | None = None,
        interval: float = INTERVAL_S,
    ) -> None:
        self._pool = pool
        self._learn = learn
        self._loop = Periodic("scheduler.learn", self._once, interval, clock, watcher)

    async def _once(self) -> None:
        try:
            await learnRequirements(self._pool)
        except DatabaseUnavailable:
            pass  # the figures are as they were; the next run tries again

    async def start(self) -> None:
        if self._learn:
            self._loop.start(now=True)
            return
        try:
            await forgetRequirements(self._pool)
        except DatabaseUnavailable:
            pass  # placed by what was learned until a master forgets it

    async def stop(self) -> None:
        if self._loop.running:
            await self._loop.stop()
