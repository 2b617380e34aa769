"""
The master's own counters: requests, unhandled exceptions, database queries.

Everything here is plain arithmetic on dicts, done on the reactor thread; the
Prometheus view reads the same numbers at scrape time, so that a request pays
for one dict update and nothing else.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from attrs import define, field, frozen


@define
class RouteCounter:
    count: int = 0
    totalSeconds: float = 0.0
    maxSeconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.totalSeconds += seconds
        if seconds > self.maxSeconds:
            self.maxSeconds = seconds


@frozen
class ExceptionRecord:
    at: float
    route: str
    type: str
    message: str


@define
class RequestStats:
    """
    Counts by (method, route template, status), with durations.
    """

    byRoute: dict[tuple[str, str, int], RouteCounter] = field(factory=dict)
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
            counter = self.byRoute[key] = RouteCounter()
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

    def record(self, at: float, route: str, type: str, message: str) -> None:
        self.total += 1
        self.recent.append(ExceptionRecord(at, route, type, message))


@define
class QueryStats:
    count: int = 0
    totalSeconds: float = 0.0

    def record(self, seconds: float) -> None:
        self.count += 1
        self.totalSeconds += seconds


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

    def __attrs_post_init__(self) -> None:
        self.startedAt = self.now()

    def snapshot(self) -> dict[str, object]:
        """
        The counters as the C{/api/v1/master} document shows them.
        """
        from masterd._time import isoformat

        r = self.requests
        return {
            "started_at": isoformat(self.startedAt),
            "uptime_s": round(self.now() - self.startedAt, 3),
            "requests": {
                "total": r.total,
                "in_flight": r.inFlight,
                "avg_ms": round(_average(r.totalSeconds, r.total) * 1000, 3),
                "max_ms": round(r.maxSeconds * 1000, 3),
                "by_route": [
                    {
                        "method": method,
                        "route": route,
                        "status": status,
                        "count": c.count,
                        "avg_ms": round(_average(c.totalSeconds, c.count) * 1000, 3),
                        "max_ms": round(c.maxSeconds * 1000, 3),
                    }
                    for (method, route, status), c in sorted(r.byRoute.items())
                ],
            },
            "exceptions": {
                "total": self.exceptions.total,
                "recent": [
                    {"at": isoformat(e.at), "route": e.route, "type": e.type, "message": e.message}
                    for e in reversed(self.exceptions.recent)
                ],
            },
            "database": {
                "queries": self.queries.count,
                "avg_ms": round(_average(self.queries.totalSeconds, self.queries.count) * 1000, 3),
            },
        }
