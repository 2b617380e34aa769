"""
The roll-up service: every master runs one, and every C{interval_s} it
tries to fold the attempts that finished since the watermark into the
farm's hourly history (L{rollUp}); only the master that takes the advisory
lock does the work, the others skip that run. It survives any exception:
logged, counted, and the next run goes on from the watermark.
"""

from __future__ import annotations

from attrs import define
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from masterd.db import DatabaseUnavailable, Pool
from masterd.service import LoopWatcher, Periodic, StagedService

from .rollup import DEFAULT_LAG_S, MAX_STEPS, rollUp

log = Logger()

#: How often each master tries a roll-up, by default.
DEFAULT_INTERVAL_S = 30.0


@define
class HistoryStats:
    runs: int = 0
    #: Runs skipped because another master (or a job's deletion) held the lock.
    busy: int = 0
    steps: int = 0
    attempts: int = 0


class HistoryService(StagedService):
    """
    C{lag_s} and C{interval_s} are the service's own (no configuration
    key): the tests make them small.
    """

    name = "history"

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        watcher: LoopWatcher | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        lag_s: float = DEFAULT_LAG_S,
        maxSteps: int = MAX_STEPS,
    ) -> None:
        self.pool = pool
        self.lag_s = lag_s
        self.maxSteps = maxSteps
        self.stats = HistoryStats()
        self.loop = Periodic("history.rollup", self.runOnce, interval_s, clock, watcher)

    async def start(self) -> None:
        self.loop.start(now=True)

    async def stop(self) -> None:
        # A step under way commits (or rolls back) whole: the watermark
        # moves with its additions or not at all.
        await self.loop.stop()

    async def runOnce(self) -> None:
        """
        One run: steps until caught up, busy, or at C{maxSteps}.
        """
        try:
            run = await rollUp(self.pool, self.lag_s, self.maxSteps)
        except DatabaseUnavailable:
            return  # the attempts wait in the database; the next run folds them
        self.stats.runs += 1
        self.stats.steps += run.steps
        self.stats.attempts += run.attempts
        if run.busy and run.steps == 0:
            self.stats.busy += 1
        if run.behind:
            log.info(
                "the farm's history is catching up: {attempts} attempts in {steps} hours"
                " rolled up, more next run",
                attempts=run.attempts, steps=run.steps,
            )  # fmt: skip
