"""
The farm's history (issue 17; docs/history.md): finished attempts folded
into hourly rollups by project, owner and agent tags (migration 0021),
which outlive the jobs: the periodic roll-up on one master at a time
(rollup, service), a job's attempts folded just before its deletion
(retire, foldRetired), the route's reading (store, models), and the totals on
/metrics (metrics).
"""

from .metrics import MAX_PROJECTS, HistoryCollector, HistoryMetrics
from .models import HistoryBy, HistoryDocument, HistoryQuery
from .rollup import (
    DEFAULT_LAG_S,
    LOCK_KEY,
    MAX_STEPS,
    Run,
    Step,
    foldRetired,
    retire,
    rollUp,
    rollUpStep,
)
from .service import DEFAULT_INTERVAL_S, HistoryService, HistoryStats
from .store import historyRange, projectTotals, readHistory

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_LAG_S",
    "LOCK_KEY",
    "MAX_PROJECTS",
    "MAX_STEPS",
    "HistoryBy",
    "HistoryCollector",
    "HistoryDocument",
    "HistoryMetrics",
    "HistoryQuery",
    "HistoryService",
    "HistoryStats",
    "Run",
    "Step",
    "foldRetired",
    "historyRange",
    "projectTotals",
    "readHistory",
    "retire",
    "rollUp",
    "rollUpStep",
]
