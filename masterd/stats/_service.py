"""
The stats service: the home of the master's counters in the service tree.
"""

from __future__ import annotations

from masterd.service import StagedService

from ._counters import MasterStats


class StatsService(StagedService):
    name = "stats"

    def __init__(self, stats: MasterStats) -> None:
        self.stats = stats

    async def start(self) -> None:
        self.stats.startedAt = self.stats.now()
        self.stats.gc.install()

    async def stop(self) -> None:
        self.stats.gc.uninstall()
