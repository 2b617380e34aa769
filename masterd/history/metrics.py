"""
The farm's history on /metrics: each project's totals over every hour
rolled up, as counters.

A scrape never waits on the database: it is answered from the figures read
last, and starts a read (one statement over farm_history_totals, one row a
project) when they are older than C{maxAge_s}, for the scrapes after it.
The labels are the project (and the state of tasks) only, never owners or
pools, and at most L{MAX_PROJECTS} projects, the busiest; the others are
summed under project "" (no project's name: names have a character at
least).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from masterd.db import DatabaseUnavailable, Pool

from .store import ProjectTotals, projectTotals

log = Logger()

#: The most projects labelled; the rest are summed under project "".
MAX_PROJECTS = 1000
#: How old the figures may be before a scrape starts a read.
MAX_AGE_S = 30.0


def bounded(totals: list[ProjectTotals], most: int = MAX_PROJECTS) -> list[ProjectTotals]:
    """
    The C{most} busiest projects (by attempts), and the others summed under
    project "", by project.
    """
    if len(totals) <= most:
        return totals
    ranked = sorted(totals, key=lambda t: (-t.attempts, t.project))
    kept, rest = ranked[:most], ranked[most:]
    other = ProjectTotals(
        "",
        sum(t.tasks_done for t in rest),
        sum(t.tasks_failed for t in rest),
        sum(t.attempts for t in rest),
        sum(t.cpu_s for t in rest),
        sum(t.wall_s for t in rest),
    )
    return sorted([*kept, other], key=lambda t: t.project)


class HistoryMetrics:
    """
    The last figures read, and the reading of the next.
    """

    def __init__(self, pool: Pool, clock: IReactorTime, maxAge_s: float = MAX_AGE_S) -> None:
        self._pool = pool
        self._clock = clock
        self.maxAge_s = maxAge_s
        self.totals: list[ProjectTotals] = []
        #: When the last read ended (or failed): the next is due maxAge_s on.
        self.readAt: float | None = None
        self._reading: Deferred[None] | None = None

    def figures(self) -> list[ProjectTotals]:
        """
        The figures read last, at once; a read is started when they are
        stale (never more than one at a time).
        """
        now = self._clock.seconds()
        stale = self.readAt is None or now - self.readAt >= self.maxAge_s
        if stale and (self._reading is None or self._reading.called):
            self._reading = Deferred.fromCoroutine(self.refresh())
        return self.totals

    async def refresh(self) -> None:
        """
        Read the figures now; a failure keeps the last ones (logged, unless
        the database is away).
        """
        try:
            self.totals = bounded(await projectTotals(self._pool))
        except DatabaseUnavailable:
            pass
        except Exception:
            log.failure("could not read the farm's history for /metrics")
        finally:
            self.readAt = self._clock.seconds()


class HistoryCollector(Collector):
    """
    The counters of L{HistoryMetrics}, for the master's Prometheus registry;
    C{source} gives none where the master has no history (nothing is
    exported).
    """

    def __init__(self, source: Callable[[], HistoryMetrics | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        metrics = self._source()
        if metrics is None:
            return
        totals = metrics.figures()
        tasks = CounterMetricFamily(
            "masterd_history_tasks",
            "Attempts finished done or failed, by project, over the farm's history.",
            labels=["project", "state"],
        )
        attempts = CounterMetricFamily(
            "masterd_history_attempts",
            "Attempts finished in any state, by project, over the farm's history.",
            labels=["project"],
        )
        core = CounterMetricFamily(
            "masterd_history_core_hours",
            "User and system CPU time of finished attempts, by project, in core-hours.",
            labels=["project"],
        )
        wall = CounterMetricFamily(
            "masterd_history_wall_hours",
            "Wall time of finished attempts, by project, in hours.",
            labels=["project"],
        )
        for t in totals:
            tasks.add_metric([t.project, "done"], t.tasks_done)
            tasks.add_metric([t.project, "failed"], t.tasks_failed)
            attempts.add_metric([t.project], t.attempts)
            core.add_metric([t.project], t.cpu_s / 3600)
            wall.add_metric([t.project], t.wall_s / 3600)
        yield tasks
        yield attempts
        yield core
        yield wall
