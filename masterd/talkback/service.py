"""
The talkback service: flushes the agents' last-seen times once a second,
requeues the tasks of agents gone longer than the lost grace, and on the way
down closes every connection with the going-away code so that agents
reconnect elsewhere at once.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from masterd.db import DatabaseUnavailable
from masterd.service import LoopWatcher, Periodic, StagedService

from ._connection import GOING_AWAY
from .registry import AgentRegistry

log = Logger()


class TalkbackService(StagedService):
    name = "talkback"

    def __init__(
        self,
        registry: AgentRegistry,
        clock: IReactorTime,
        flushInterval: float,
        lostGrace: float,
        reapInterval: float,
        watcher: LoopWatcher | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.lostGrace = lostGrace
        self._flush = Periodic("talkback.flush", self._flushOnce, flushInterval, clock, watcher)
        self._reap = Periodic("talkback.reap", self._reapOnce, reapInterval, clock, watcher)

    async def start(self) -> None:
        self._flush.start()
        self._reap.start()

    async def _flushOnce(self) -> None:
        try:
            await self.registry.flush()
        except DatabaseUnavailable:
            pass  # kept, and tried again at the next tick

    async def _reapOnce(self) -> None:
        try:
            lost = await self.registry.store.reap(self.clock.seconds() - self.lostGrace)
        except DatabaseUnavailable:
            return
        for agentID, taskID, attempt in lost:
            log.info(
                "requeued task {taskId} (attempt {attempt}): agent {agentId} is lost",
                taskId=taskID,
                attempt=attempt,
                agentId=agentID,
            )

    async def stop(self) -> None:
        for loop in (self._flush, self._reap):
            await loop.stop()
        # Closing handshakes finish while the HTTP service closes its
        # connections next (it aborts whatever is left after a few seconds).
        sessions = [
            (c.agentID, c.session)
            for c in self.registry.connections.values()
            if c.agentID is not None and c.session is not None
        ]
        self.registry.closeAll(GOING_AWAY, "master shutting down")
        try:
            await self.registry.flush()
            # Mark them offline now, while the database is still ours: their
            # connections are lost only after the pool has closed.
            await self.registry.store.disconnectMany(sessions, self.clock.seconds())
        except DatabaseUnavailable:
            pass
