"""
The agents connected to this master: their connections (only this master can
send on them), their last-seen times and usage (held here and written to the
database in one statement a second for all of them), and the talkback
counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from masterd.events import AgentChanged, AgentMoved, EventBus, TaskCanceled

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


@define
class _Seen:
    session: str
    at: float
    usage: dict[str, Any] | None = None


class AgentRegistry:
    def __init__(
        self,
        master: str,
        store: AgentStore,
        events: EventBus,
        clock: IReactorTime,
    ) -> None:
        self.master = master
        self.store = store
        self.events = events
        self.clock = clock
        self.stats = TalkbackStats()
        self.connections: dict[str, TalkbackConnection] = {}
        self._seen: dict[str, _Seen] = {}
        #: Called with an agent id when it joins, and when a slot of it may
        #: have come free (the scheduler offers work then).
        self.onAgentReady: Callable[[str], object] = lambda agentID: None
        #: Called with an agent id when its connection is gone.
        self.onAgentGone: Callable[[str], object] = lambda agentID: None
        #: Called with an agent id and a task id when the agent reported the
        #: task finished (done, failed or rejected), its slot free again.
        self.onTaskFinished: Callable[[str, int, bool], object] = lambda agentID, taskID, failed: (
            None
        )
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

    def remove(self, connection: TalkbackConnection) -> bool:
        agentID = connection.agentID
        if agentID is None or self.connections.get(agentID) is not connection:
            return False
        del self.connections[agentID]
        self._seen.pop(agentID, None)
        self.stats.connected = len(self.connections)
        self.onAgentGone(agentID)
        return True

    def seen(self, connection: TalkbackConnection, usage: dict[str, Any] | None = None) -> None:
        """
        Note that an agent spoke; written at the next flush.
        """
        agentID, session = connection.agentID, connection.session
        if agentID is None or session is None:
            return
        entry = self._seen.get(agentID)
        now = self.clock.seconds()
        if entry is None or entry.session != session:
            self._seen[agentID] = _Seen(session, now, usage)
        else:
            entry.at = now
            if usage is not None:
                entry.usage = usage

    async def flush(self) -> int:
        """
        Write every last-seen time and usage noted since the last flush, in
        one statement.
        """
        pending, self._seen = self._seen, {}
        batch = [(agentID, s.session, s.at, s.usage) for agentID, s in pending.items()]
        try:
            await self.store.flush(batch)
        except Exception:
            # Keep what could not be written, unless newer news came since.
            for agentID, s in pending.items():
                self._seen.setdefault(agentID, s)
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
            connection.send({"type": "limits", **event.limits})

    def _agentMoved(self, event: AgentMoved) -> None:
        connection = self.connections.get(event.agent_id)
        if connection is not None and connection.session == event.session:
            connection.close(4409, "the agent connected again elsewhere")

    def closeAll(self, code: int, reason: str) -> None:
        for connection in list(self.connections.values()):
            connection.close(code, reason)
