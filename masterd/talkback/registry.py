"""
The agents connected to this master: their connections (only this master can
send on them), their last-seen times and usage (held here and written to the
database in one statement a second for all of them), and the talkback
counters.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from masterd.events import AgentChanged, AgentGone, AgentMoved, EventBus, TaskCanceled
from masterd.service import LoopWatcher, Periodic

from .messages import operatorLimits
from .store import AgentStore

if TYPE_CHECKING:
    from ._connection import TalkbackConnection

log = Logger()


@define
class TalkbackStats:
    connected: int = 0
    messagesIn: Counter[str] = field(factory=Counter)
    messagesOut: Counter[str] = field(factory=Counter)
    errors: int = 0
    bytesIn: int = 0
    bytesOut: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "agents_connected": self.connected,
            "messages_in": dict(sorted(self.messagesIn.items())),
            "messages_out": dict(sorted(self.messagesOut.items())),
            "errors": self.errors,
            "bytes_in": self.bytesIn,
            "bytes_out": self.bytesOut,
        }


class AgentRegistry:
    def __init__(
        self,
        master: str,
        store: AgentStore,
        events: EventBus,
        clock: IReactorTime,
        tickInterval: float = 0.1,
        watcher: LoopWatcher | None = None,
    ) -> None:
        self.master = master
        self.store = store
        self.events = events
        self.clock = clock
        self.stats = TalkbackStats()
        self.connections: dict[str, TalkbackConnection] = {}
        #: Every open connection, with or without a hello: the timer pings
        #: them and closes the silent ones.
        self._live: set[TalkbackConnection] = set()
        #: Open connections by the tick that pings them next.
        self._wheel: dict[int, set[TalkbackConnection]] = {}
        self._ticker = Periodic("talkback.ping", self._tick, tickInterval, clock, watcher)
        self._tickInterval = tickInterval
        #: Connections heard from since the last flush; what they said is
        #: kept on them (nothing new is allocated per heartbeat).
        self._dirty: set[TalkbackConnection] = set()
        events.subscribe(TaskCanceled, self._taskCanceled)
        events.subscribe(AgentMoved, self._agentMoved)
        events.subscribe(AgentChanged, self._limitsChanged)

    # -- connections ---------------------------------------------------------

    def add(self, connection: TalkbackConnection) -> TalkbackConnection | None:
        """
        Register a connection that said hello; return the one it replaces.
        """
        assert connection.agentID is not None
        old = self.connections.get(connection.agentID)
        self.connections[connection.agentID] = connection
        self.stats.connected = len(self.connections)
        return old

    def track(self, connection: TalkbackConnection) -> None:
        """
        A connection is open: ping it from now on.
        """
        self._live.add(connection)
        self._place(connection)
        if not self._ticker.running:
            self._ticker.start()

    def untrack(self, connection: TalkbackConnection) -> None:
        self._live.discard(connection)
        self._dirty.discard(connection)
        self._wheel.get(connection.slot, set()).discard(connection)
        if not self._live and self._ticker.running:
            self._ticker.stop()

    def _place(self, connection: TalkbackConnection) -> None:
        # The first tick at or after its next ping.
        connection.slot = math.ceil(connection.nextPing / self._tickInterval)
        self._wheel.setdefault(connection.slot, set()).add(connection)

    def _tick(self) -> None:
        """
        Ping the connections whose time has come: only those, slot by slot
        (a timing wheel), so that each tick costs what it pings and the
        pings of 10,000 agents spread over the heartbeat period.
        """
        now = self.clock.seconds()
        current = math.floor(now / self._tickInterval)
        for slot in sorted(s for s in self._wheel if s <= current):
            for connection in self._wheel.pop(slot):
                connection.tick(now)
                if connection in self._live:
                    self._place(connection)

    def remove(self, connection: TalkbackConnection) -> bool:
        agentID = connection.agentID
        if agentID is None or self.connections.get(agentID) is not connection:
            return False
        del self.connections[agentID]
        self.stats.connected = len(self.connections)
        self.events.publish(AgentGone(agentID))
        return True

    def seen(self, connection: TalkbackConnection, usage: dict[str, Any] | None = None) -> None:
        """
        Note that an agent spoke; written at the next flush.
        """
        if connection.agentID is None or connection.session is None:
            return
        connection.seenAt = self.clock.seconds()
        if usage is not None:
            connection.usage = usage
        self._dirty.add(connection)

    async def flush(self) -> int:
        """
        Write every last-seen time and usage noted since the last flush, in
        one statement.
        """
        dirty, self._dirty = self._dirty, set()
        batch = [
            (c.agentID, c.session, c.seenAt, c.usage)
            for c in dirty
            if c.agentID is not None and c.session is not None
        ]
        try:
            await self.store.flush(batch)
        except Exception:
            # Written at the next flush, unless gone meanwhile.
            self._dirty.update(c for c in dirty if c in self._live)
            raise
        return len(batch)

    # -- events for agents on this master ---------------------------------------

    def _taskCanceled(self, event: TaskCanceled) -> None:
        connection = self.connections.get(event.agent_id)
        if connection is not None:
            connection.sendCancel(event.task_id, event.attempt, event.reason)

    def _limitsChanged(self, event: AgentChanged) -> None:
        connection = self.connections.get(event.agent_id)
        if connection is not None and event.limits is not None:
            connection.send(operatorLimits(event.limits))

    def _agentMoved(self, event: AgentMoved) -> None:
        connection = self.connections.get(event.agent_id)
        if connection is not None and connection.session == event.session:
            connection.close(4409, "the agent connected again elsewhere")

    def closeAll(self, code: int, reason: str) -> None:
        for connection in list(self.connections.values()):
            connection.close(code, reason)
