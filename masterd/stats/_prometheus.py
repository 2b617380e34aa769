"""
The master's counters in the Prometheus text format, from a registry of the
master's own (never the process-global one, which tests and embedding
applications share).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._counters import MasterStats


class _MasterCollector(Collector):
    def __init__(
        self,
        stats: MasterStats,
        name: str,
        version: str,
        ready: Callable[[], bool],
        talkback: Callable[[], Any],
    ):
        self._stats = stats
        self._name = name
        self._version = version
        self._ready = ready
        self._talkback = talkback

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        info = GaugeMetricFamily(
            "masterd_info", "This master's name and version.", labels=["master", "version"]
        )
        info.add_metric([self._name, self._version], 1)
        yield info
        yield GaugeMetricFamily(
            "masterd_start_time_seconds",
            "When this master started (POSIX time).",
            value=s.startedAt,
        )
        yield GaugeMetricFamily(
            "masterd_database_ready",
            "1 when the database answers.",
            value=1 if self._ready() else 0,
        )
        labels = ["method", "route", "status"]
        count = CounterMetricFamily(
            "masterd_http_requests", "HTTP requests handled.", labels=labels
        )
        seconds = CounterMetricFamily(
            "masterd_http_request_duration_seconds", "Time spent on HTTP requests.", labels=labels
        )
        longest = GaugeMetricFamily(
            "masterd_http_request_duration_max_seconds", "The longest HTTP request.", labels=labels
        )
        for (method, route, status), c in sorted(s.requests.byRoute.items()):
            key = [method, route, str(status)]
            count.add_metric(key, c.count)
            seconds.add_metric(key, c.totalSeconds)
            longest.add_metric(key, c.maxSeconds)
        yield count
        yield seconds
        yield longest
        yield GaugeMetricFamily(
            "masterd_http_requests_in_flight",
            "HTTP requests under way.",
            value=s.requests.inFlight,
        )
        yield CounterMetricFamily(
            "masterd_unhandled_exceptions",
            "Unhandled exceptions raised while serving.",
            value=s.exceptions.total,
        )
        yield CounterMetricFamily(
            "masterd_database_queries", "Database statements run.", value=s.queries.count
        )
        yield CounterMetricFamily(
            "masterd_database_query_duration_seconds",
            "Time spent in database statements.",
            value=s.queries.totalSeconds,
        )
        yield from self._gcMetrics()
        b = s.scheduling
        for metric, help, value in (
            ("masterd_batches", "Group-commit transactions written.", b.batches),
            ("masterd_batched_operations", "Reports, log messages and claims in them.",
             b.operations),
            ("masterd_batch_duration_seconds", "Time spent writing them.", b.seconds),
            ("masterd_claims", "Scheduling claims made.", b.claims),
            ("masterd_tasks_assigned", "Tasks assigned by this master.", b.assigned),
            ("masterd_attempts_preempted", "Attempts this master preempted.", b.preempted),
            ("masterd_attempts_timed_out", "Attempts this master stopped past their timeout_s.",
             b.timedOut),
            ("masterd_attempts_stalled", "Attempts this master stopped for no progress in"
             " stall_timeout_s.", b.stalled),
            ("masterd_attempts_unstarted", "Assignments this master took back, not reported"
             " running in time.", b.unstarted),
        ):  # fmt: skip
            yield CounterMetricFamily(metric, help, value=value)
        yield from self._talkbackMetrics()

    def _gcMetrics(self) -> Iterator[Metric]:
        g = self._stats.gc
        count = CounterMetricFamily(
            "masterd_gc_collections", "Garbage collections, by generation.", labels=["generation"]
        )
        seconds = CounterMetricFamily(
            "masterd_gc_pause_seconds",
            "Time the garbage collector held the process, by generation.",
            labels=["generation"],
        )
        longest = GaugeMetricFamily(
            "masterd_gc_pause_max_seconds", "The longest collection, by generation.",
            labels=["generation"],
        )  # fmt: skip
        for generation in range(3):
            label = [str(generation)]
            count.add_metric(label, g.collections[generation])
            seconds.add_metric(label, g.seconds[generation])
            longest.add_metric(label, g.maxSeconds[generation])
        yield count
        yield seconds
        yield longest

    def _talkbackMetrics(self) -> Iterator[Metric]:
        t = self._talkback()
        if t is None:
            return
        yield GaugeMetricFamily(
            "masterd_agents_connected", "Agents connected to this master.", value=t.connected
        )
        for direction, counts in (("in", t.messagesIn), ("out", t.messagesOut)):
            family = CounterMetricFamily(
                f"masterd_talkback_messages_{direction}",
                f"Talkback messages {'received' if direction == 'in' else 'sent'}, by type.",
                labels=["type"],
            )
            for kind, count in sorted(counts.items()):
                family.add_metric([kind], count)
            yield family
        yield CounterMetricFamily(
            "masterd_talkback_errors", "Bad talkback messages.", value=t.errors
        )
        yield CounterMetricFamily(
            "masterd_talkback_bytes_in", "Talkback bytes received.", value=t.bytesIn
        )
        yield CounterMetricFamily(
            "masterd_talkback_bytes_out", "Talkback bytes sent.", value=t.bytesOut
        )


def prometheusRegistry(
    stats: MasterStats,
    name: str,
    version: str,
    ready: Callable[[], bool],
    talkback: Callable[[], Any] = lambda: None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_MasterCollector(stats, name, version, ready, talkback))
    return registry


def renderPrometheus(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
