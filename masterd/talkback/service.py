"""
The talkback service: flushes the agents' last-seen times once a second,
requeues the tasks of agents gone longer than the lost grace, and on the way
down closes every connection with the going-away code so that agents
reconnect elsewhere at once.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from masterd.db import DatabaseUnavailable
from masterd.service import StagedService

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
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.lostGrace = lostGrace
        self._flush = LoopingCall(self._flushOnce)
        self._flush.clock = clock
        self._flushInterval = flushInterval
        self._reap = LoopingCall(self._reapOnce)
        self._reap.clock = clock
        self._reapInterval = reapInterval

    async def start(self) -> None:
        self._flush.start(self._flushInterval, now=False)
        self._reap.start(self._reapInterval, now=False)

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
            if loop.running:
                loop.stop()
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
