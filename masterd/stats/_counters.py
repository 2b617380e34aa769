"""
The master's own counters: requests, unhandled exceptions, database queries.

Everything here is plain arithmetic on dicts, done on the reactor thread; the
Prometheus view reads the same numbers at scrape time, so that a request pays
for one dict update and nothing else.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable

from attrs import define, field, frozen
from twisted.python.failure import Failure

from masterd._time import isoformat
from masterd.service import Periodic

from ._gc import GCStats


@define
class RouteCounter:
    method: str
    route: str
    status: int
    count: int = 0
    totalSeconds: float = 0.0
    maxSeconds: float = 0.0
    _document: dict[str, object] | None = None

    def add(self, seconds: float) -> None:
        self.count += 1
        self.totalSeconds += seconds
        if seconds > self.maxSeconds:
            self.maxSeconds = seconds
        self._document = None

    def document(self) -> dict[str, object]:
        """
        This row of C{by_route}, rebuilt only after it changed: the master
        document is asked for often, and most rows have not moved since.
        """
        if self._document is None:
            self._document = {
                "method": self.method,
                "route": self.route,
                "status": self.status,
                "count": self.count,
                "avg_ms": round(_average(self.totalSeconds, self.count) * 1000, 3),
                "max_ms": round(self.maxSeconds * 1000, 3),
            }
        return self._document


@frozen
class ExceptionRecord:
    at: float
    route: str
    type: str
    message: str

    def document(self) -> dict[str, object]:
        return {
            "at": isoformat(self.at),
            "route": self.route,
            "type": self.type,
            "message": self.message,
        }


@define
class RequestStats:
    """
    Counts by (method, route template, status), with durations.
    """

    byRoute: dict[tuple[str, str, int], RouteCounter] = field(factory=dict)
    #: The keys of byRoute, kept sorted as they are added.
    keys: list[tuple[str, str, int]] = field(factory=list)
    total: int = 0
    totalSeconds: float = 0.0
    maxSeconds: float = 0.0
    inFlight: int = 0

    def started(self) -> None:
        self.inFlight += 1

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        self.inFlight -= 1
        self.total += 1
        self.totalSeconds += seconds
        if seconds > self.maxSeconds:
            self.maxSeconds = seconds
        key = (method, route, status)
        counter = self.byRoute.get(key)
        if counter is None:
            counter = self.byRoute[key] = RouteCounter(method, route, status)
            bisect.insort(self.keys, key)
        counter.add(seconds)


@define
class ExceptionStats:
    """
    Unhandled exceptions: how many, and the latest few.
    """

    keep: int = 50
    total: int = 0
    recent: deque[ExceptionRecord] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.recent = deque(maxlen=self.keep)

    _documents: list[dict[str, object]] | None = field(init=False, default=None)

    def record(self, at: float, route: str, type: str, message: str) -> None:
        self.total += 1
        self.recent.append(ExceptionRecord(at, route, type, message))
        self._documents = None

    def documents(self) -> list[dict[str, object]]:
        """
        The latest exceptions, newest first (rebuilt only after a new one).
        """
        if self._documents is None:
            self._documents = [e.document() for e in reversed(self.recent)]
        return self._documents


@define
class QueryStats:
    count: int = 0
    totalSeconds: float = 0.0

    def record(self, seconds: float) -> None:
        self.count += 1
        self.totalSeconds += seconds


@define
class SchedulingStats:
    """
    The group-commit batcher's transactions (task reports, log lines and
    claims written together) and what the scheduler assigned.
    """

    batches: int = 0
    operations: int = 0
    seconds: float = 0.0
    largest: int = 0
    claims: int = 0
    assigned: int = 0
    #: Agents whose slots the sweep found wrong (and repaired).
    slotRepairs: int = 0
    #: Attempts this master's sweeps stopped, by reason.
    preempted: int = 0
    timedOut: int = 0
    stalled: int = 0
    unstarted: int = 0

    def batch(self, operations: int, seconds: float) -> None:
        self.batches += 1
        self.operations += operations
        self.seconds += seconds
        if operations > self.largest:
            self.largest = operations

    def snapshot(self) -> dict[str, object]:
        return {
            "batches": self.batches,
            "batched_operations": self.operations,
            "avg_batch": round(_average(self.operations, self.batches), 2),
            "max_batch": self.largest,
            "avg_batch_ms": round(_average(self.seconds, self.batches) * 1000, 3),
            "claims": self.claims,
            "tasks_assigned": self.assigned,
            "slot_repairs": self.slotRepairs,
            "preempted": self.preempted,
            "timed_out": self.timedOut,
            "stalled": self.stalled,
            "unstarted": self.unstarted,
        }


def _average(total: float, count: int) -> float:
    return total / count if count else 0.0


@define
class MasterStats:
    """
    Everything the seed's "Master Information" asks for, in one place.
    """

    now: Callable[[], float]
    startedAt: float = field(init=False)
    requests: RequestStats = field(factory=RequestStats)
    exceptions: ExceptionStats = field(factory=ExceptionStats)
    queries: QueryStats = field(factory=QueryStats)
    gc: GCStats = field(factory=GCStats)
    scheduling: SchedulingStats = field(factory=SchedulingStats)
    #: Every periodic loop of the master (it is their LoopWatcher).
    loops: list[Periodic] = field(factory=list)

    _started: tuple[float, str | None] = field(init=False, default=(-1.0, None))

    def __attrs_post_init__(self) -> None:
        self.startedAt = self.now()

    def loopAdded(self, loop: Periodic) -> None:
        self.loops.append(loop)

    def loopFailed(self, loop: Periodic, failure: Failure) -> None:
        self.exceptions.record(
            self.now(),
            f"loop {loop.name}",
            getattr(failure.type, "__name__", "Exception"),
            failure.getErrorMessage(),
        )

    def _startedText(self) -> str | None:
        # Formatted once, not on every request for the master document.
        if self._started[0] != self.startedAt:
            self._started = (self.startedAt, isoformat(self.startedAt))
        return self._started[1]

    def snapshot(self) -> dict[str, object]:
        """
        The counters as the C{/api/v1/master} document shows them.
        """
        r = self.requests
        return {
            "started_at": self._startedText(),
            "uptime_s": round(self.now() - self.startedAt, 3),
            "requests": {
                "total": r.total,
                "in_flight": r.inFlight,
                "avg_ms": round(_average(r.totalSeconds, r.total) * 1000, 3),
                "max_ms": round(r.maxSeconds * 1000, 3),
                "by_route": [r.byRoute[key].document() for key in r.keys],
            },
            "exceptions": {
                "total": self.exceptions.total,
                "recent": self.exceptions.documents(),
            },
            "database": {
                "queries": self.queries.count,
                "avg_ms": round(_average(self.queries.totalSeconds, self.queries.count) * 1000, 3),
            },
            "gc": self.gc.snapshot(),
            "scheduling": self.scheduling.snapshot(),
            "loops": [
                {
                    "name": loop.name,
                    "interval_s": loop.interval,
                    "running": loop.running,
                    "runs": loop.runs,
                    "failures": loop.failures,
                    "last_failure_at": (
                        isoformat(loop.lastFailureAt) if loop.lastFailureAt is not None else None
                    ),
                }
                for loop in self.loops
            ],
        }
