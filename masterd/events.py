"""
Events inside one master: what happened, for whoever must act on it.

Events are published after the transaction that caused them has committed;
the database holds the record, an event only says "look". Talkback delivers
L{TaskCanceled} to the agent running the task; the scheduler listens for
L{WorkAvailable}. (Several masters relay them through LISTEN/NOTIFY.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from attrs import frozen
from twisted.logger import Logger

log = Logger()


@frozen
class TaskCanceled:
    """
    A task that an agent is running must stop: the task was canceled, its
    job was canceled, or its job was paused with stop_running.
    """

    task_id: int
    attempt: int
    agent_id: str
    reason: str


@frozen
class WorkAvailable:
    """
    Tasks of these jobs may have become queued (submitted, resumed,
    retried, or released by a finished parent).
    """

    job_ids: tuple[int, ...]


E = TypeVar("E")


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[type, list[Callable[[Any], object]]] = defaultdict(list)
        self.published: int = 0

    def subscribe(self, kind: type[E], callback: Callable[[E], object]) -> Callable[[], None]:
        self._subscribers[kind].append(callback)

        def unsubscribe() -> None:
            self._subscribers[kind].remove(callback)

        return unsubscribe

    def publish(self, event: object) -> None:
        self.published += 1
        for callback in list(self._subscribers[type(event)]):
            try:
                callback(event)
            except Exception:
                log.failure("event subscriber failed on {event!r}", event=event)


@frozen
class AgentChanged:
    """
    An operator changed an agent (enabled, tags, limits). The master holding
    its connection reloads what it may run and, when its limits changed,
    tells the agent at once.
    """

    agent_id: str
    #: The operator's limits, when they changed.
    limits: dict[str, Any] | None = None
