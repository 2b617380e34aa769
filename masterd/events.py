"""
Events inside one master: what happened, for whoever must act on it.

Events are published after the transaction that caused them has committed;
the database holds the record, an event only says "look". Talkback delivers
L{TaskCanceled} to the agent running the task; the scheduler listens for
L{WorkAvailable}. (Several masters relay them through LISTEN/NOTIFY.)

There is one way to say that something changed: L{EventBus.announce}, in
the transaction that makes the change. It sends the NOTIFY in that
transaction (PostgreSQL delivers it only if, and once, it commits) and
publishes on this master's bus after the commit; after a rollback, neither.
"""

from __future__ import annotations

import json
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
    def __init__(self, origin: str = "") -> None:
        self._subscribers: dict[type, list[Callable[[Any], object]]] = defaultdict(list)
        self.published: int = 0
        #: This master's name, in the notifications it sends.
        self.origin = origin

    async def announce(self, txn: Any, *events: object) -> None:
        """
        Say, in the transaction that makes a change, what changed: every
        master hears it once the transaction commits (this one on its bus
        at once, the others through LISTEN), and nobody if it rolls back.

        @param txn: a L{masterd.db.Transaction}.
        """
        if not events:
            return
        # Every payload in one statement: one round trip however many
        # events a batch announces (a takeover moves thousands of agents).
        await txn.execute(
            "SELECT masterd_announce(%s, p) FROM unnest(%s::json[]) WITH ORDINALITY AS x (p, i)"
            " ORDER BY i",
            (self.origin, batches(list(events))),
        )
        txn.afterCommit(lambda: self._publishAll(events))

    def _publishAll(self, events: tuple[object, ...]) -> None:
        for event in events:
            self.publish(event)

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


@frozen
class AgentMoved:
    """
    An agent connected again (here or on another master): whichever master
    still holds its older connection (session) closes it.
    """

    agent_id: str
    session: str


@frozen
class AgentReady:
    """
    This master's connection with an agent is welcomed, or its limits
    changed: what it may run is to be (re)loaded and work offered. Local
    to one master, never announced.
    """

    agent_id: str


@frozen
class AgentGone:
    """
    This master's connection with an agent is gone. Local.
    """

    agent_id: str


@frozen
class SlotFreed:
    """
    An agent here reported a task finished (done, failed or rejected): its
    slot is free. Local; published for every final report.
    """

    agent_id: str
    task_id: int
    failed: bool


@frozen
class TokensChanged:
    """
    A database token was created or revoked: every master forgets what it
    read of tokens (a revoked one must be refused everywhere at once).
    """

    token_id: int


#: The channel every master listens on (docs/operations.md).
CHANNEL = "masterd"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
_PAYLOAD_LIMIT = 7000


def batches(events: list[object]) -> list[str]:
    """
    Events as the JSON arrays of NOTIFY payloads (ids only: the receiver
    reads the rest from the database), several to a payload, each under the
    size limit. The envelope (C{{"origin": ..., "events": [...]}}) is
    written by the SQL function C{masterd_announce}, which the task-count
    trigger uses too: one place for the payload's shape.
    """
    encoded = [_encode(e) for e in events]
    out: list[str] = []
    batch: list[Any] = []
    size = 0
    for item in encoded:
        length = len(json.dumps(item))
        if batch and size + length > _PAYLOAD_LIMIT:
            out.append(json.dumps(batch))
            batch, size = [], 0
        batch.append(item)
        size += length + 1
    if batch:
        out.append(json.dumps(batch))
    return out


def _encode(event: object) -> list[Any]:
    if isinstance(event, TaskCanceled):
        return ["cancel", event.task_id, event.attempt, event.agent_id, event.reason]
    if isinstance(event, WorkAvailable):
        return ["work", list(event.job_ids)]
    if isinstance(event, AgentChanged):
        return ["agent", event.agent_id, event.limits]
    if isinstance(event, AgentMoved):
        return ["moved", event.agent_id, event.session]
    if isinstance(event, TokensChanged):
        return ["tokens", event.token_id]
    raise TypeError(f"{event!r} is not sent between masters")


def decode(payload: str) -> tuple[str, list[object]]:
    """
    The origin master and the events of a payload; what cannot be read is
    skipped (a hint is never the only record).
    """
    body = json.loads(payload)
    events: list[object] = []
    for item in body.get("events", []):
        kind = item[0]
        if kind == "cancel":
            events.append(TaskCanceled(int(item[1]), int(item[2]), str(item[3]), str(item[4])))
        elif kind == "work":
            events.append(WorkAvailable(tuple(int(j) for j in item[1])))
        elif kind == "agent":
            events.append(AgentChanged(str(item[1]), item[2]))
        elif kind == "moved":
            events.append(AgentMoved(str(item[1]), str(item[2])))
        elif kind == "tokens":
            events.append(TokensChanged(int(item[1])))
    return str(body.get("origin", "")), events
