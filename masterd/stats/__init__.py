"""
Counters the master keeps about itself (the seed's "Master Information").
"""

from ._counters import (
    ExceptionRecord,
    ExceptionStats,
    MasterStats,
    QueryStats,
    RequestStats,
    RouteCounter,
    SchedulingStats,
)
from ._gc import GCStats
from ._prometheus import prometheusRegistry, renderPrometheus
from ._service import StatsService

__all__ = [
    "ExceptionRecord",
    "ExceptionStats",
    "GCStats",
    "MasterStats",
    "QueryStats",
    "RequestStats",
    "RouteCounter",
    "SchedulingStats",
    "StatsService",
    "prometheusRegistry",
    "renderPrometheus",
]
