"""
One agent's talkback connection: a WebSocket protocol (twisted.web.websocket)
that authenticates the agent's hello (a token to enroll an agent id, the
id's own credential once enrolled) within a deadline, is pinged by the
registry's timing wheel, and turns each message into a database change in
the order they came:
task reports and log lines through the group-commit batcher (which keeps
their order) without holding up the connection, other messages one at a
time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import msgspec
from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.websocket import WebSocketTransport

from masterd.accounts import Authenticator, Principal, digestOf
from masterd.config import Role
from masterd.db import DatabaseUnavailable
from masterd.errors import InvalidField
from masterd.events import AgentReady, SlotFreed, WorkAvailable
from masterd.jobs import lifecycle
from masterd.schema import DEFAULT_LIMITS, InputLimits, printable

from . import messages as m
from .registry import AgentRegistry
from .store import Refused, UpdateResult

log = Logger()

T = TypeVar("T")

#: Messages handled as they arrive when nothing is queued before them.
_AT_ONCE = (m.Heartbeat, m.TaskUpdate, m.Log)

# Close codes (docs/talkback.md).
NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
TOO_BIG = 1009
TRY_AGAIN = 1013
UNAUTHORIZED = 4401
FORBIDDEN = 4403
TIMED_OUT = 4408
REPLACED = 4409

#: Messages waiting to be handled before the connection stops reading.
_HIGH_WATER = 64
_LOW_WATER = 16
#: How long a closing connection may take before it is aborted.
_CLOSE_GRACE_S = 5.0


@frozen
class TalkbackSettings:
    heartbeat_s: float = 10.0
    agent_timeout_s: float = 45.0
    max_message_bytes: int = 1024 * 1024
    max_errors: int = 20
    inputLimits: InputLimits = DEFAULT_LIMITS
    #: A connection without a valid hello this long after its upgrade is
    #: closed (4408): nobody holds a connection open without saying who.
    hello_timeout_s: float = 10.0


class _CappedBuffer:
    """
    Stands in for the WebSocket implementation's message buffer: counts a
    message's fragments as they arrive and gives up on one larger than the
    limit, instead of holding it whole in memory.
    """

    def __init__(self, empty: Any, limit: int, overflow: Callable[[], None]) -> None:
        self.data = empty
        self._empty = empty
        self._limit = limit
        self._overflow = overflow
        self._over = False

    def add(self, new: Any) -> None:
        if self._over:
            return
        if len(self.data) + len(new) > self._limit:
            self._over = True
            self.data = self._empty
            self._overflow()
            return
        self.data += new

    def done(self) -> Any:
        result, self.data = self.data, self._empty
        return result


class TalkbackConnection:
    """
    Implements L{twisted.web.websocket.WebSocketProtocol}.
    """

    def __init__(
        self,
        registry: AgentRegistry,
        auth: Authenticator,
        settings: TalkbackSettings,
        clock: IReactorTime,
        principal: Principal | None,
    ) -> None:
        self.registry = registry
        self.auth = auth
        self.settings = settings
        self.clock = clock
        self.principal = principal
        self.transport: WebSocketTransport | None = None
        self.agentID: str | None = None
        self.session: str | None = None
        self.errors = 0
        self.closing = False
        self._lastHeard = 0.0
        #: When a valid hello must have come by, and whether one is being
        #: checked now (its answer decides, whenever the deadline passes).
        self._helloBy = 0.0
        self._helloing = False
        #: When the registry's timer next pings this connection, and the
        #: slot of its timing wheel that holds it.
        self.nextPing = 0.0
        self.slot = 0
        #: When the agent last spoke, and its last usage report: written by
        #: the registry's flush.
        self.seenAt = 0.0
        self.usage: dict[str, Any] | None = None
        self._abort: IDelayedCall | None = None
        self._queue: Deferred[None] = succeed(None)
        self._offline: Deferred[None] = succeed(None)
        self._queued = 0
        #: Messages waiting in the queue for their turn.
        self._handling = 0
        self._paused = False
        #: Task reports and log lines handed to the batcher, not yet written.
        self._writing: set[Deferred[Any]] = set()

    # -- WebSocketProtocol ---------------------------------------------------

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport
        # Twisted's WebSocket buffers a message whole before delivering it;
        # cap that buffer ourselves (1009 past the limit).
        limit = self.settings.max_message_bytes
        wire: Any = transport
        if hasattr(wire, "_textBuffer"):
            wire._textBuffer = _CappedBuffer("", limit, self._tooBig)
            wire._bytesBuffer = _CappedBuffer(b"", limit, self._tooBig)

    def negotiationFinished(self) -> None:
        self._lastHeard = self.clock.seconds()
        self._helloBy = self._lastHeard + self.settings.hello_timeout_s
        # The timer's first visit: the first ping, or the hello's deadline
        # if that comes first.
        self.nextPing = min(self._lastHeard + self.settings.heartbeat_s, self._helloBy)
        self.registry.track(self)

    def pongReceived(self, payload: bytes) -> None:
        self._lastHeard = self.clock.seconds()

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self._lastHeard = self.clock.seconds()
        self.registry.stats.bytesIn += len(data)
        self._error("(message)", "binary messages are not accepted; send JSON text")

    def textMessageReceived(self, message: str) -> None:
        self._lastHeard = self.clock.seconds()
        stats = self.registry.stats
        stats.bytesIn += len(message)
        if self.closing:
            return
        try:
            parsed = m.parseMessage(message, self.settings.inputLimits)
        except InvalidField as e:
            stats.messagesIn["invalid"] += 1
            self._error(e.field, e.message)
            return
        stats.messagesIn[type(parsed).__name__] += 1
        self._enqueue(parsed)

    def connectionLost(self, reason: Failure) -> None:
        self.closing = True
        self.registry.untrack(self)
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        if self.registry.remove(self) and self.agentID and self.session:
            log.info("agent {agentId} disconnected", agentId=self.agentID)
            self._offline = Deferred.fromCoroutine(self._markOffline(self.agentID, self.session))

    async def _markOffline(self, agentID: str, session: str) -> None:
        try:
            await self.registry.store.disconnect(agentID, session, self.clock.seconds())
        except DatabaseUnavailable as e:
            # The lost-grace sweep still finds the agent by its stale session
            # once the master holding it is gone; nothing is lost.
            log.warn("cannot mark agent {agentId} offline: {why}", agentId=agentID, why=str(e))
        except Exception:
            log.failure("cannot mark agent {agentId} offline", agentId=agentID)

    def drained(self) -> Deferred[None]:
        """
        Fires once every message received so far has been handled.
        """
        d: Deferred[None] = Deferred()

        def offline(result: object) -> object:
            d.callback(None)
            return result

        def fire(result: object) -> object:
            # ... its reports written and, once the connection is lost, its
            # agent marked offline.
            def written(_: object) -> None:
                self._offline.addBoth(offline)

            DeferredList(list(self._writing), consumeErrors=True).addBoth(written)
            return result

        self._queue.addBoth(fire)
        return d

    # -- sending ------------------------------------------------------------------

    def send(self, message: m.Outgoing) -> None:
        if self.transport is None or self.closing:
            return
        text = m.encode(message)
        stats = self.registry.stats
        stats.messagesOut[m.typeName(message)] += 1
        stats.bytesOut += len(text)
        self.transport.sendTextMessage(text)

    def sendCancel(self, taskID: int, attempt: int, reason: str) -> None:
        self.send(m.Cancel(task_id=taskID, attempt=attempt, reason=reason))

    def assign(self, assignments: list[lifecycle.Assignment]) -> None:
        if assignments:
            self.send(m.Assign(tasks=[a.message() for a in assignments]))

    def close(self, code: int, reason: str = "") -> None:
        if self.closing or self.transport is None:
            return
        self.send(m.Closing(code=code, reason=reason))
        self.closing = True
        self.transport.loseConnection(code)
        # A peer that has gone silent never finishes the closing handshake.
        self._abort = self.clock.callLater(_CLOSE_GRACE_S, self._abortNow)

    def _abortNow(self) -> None:
        self._abort = None
        tcp = getattr(self.transport, "transport", None)
        if tcp is not None:
            tcp.abortConnection()

    # -- liveness -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """
        Called by the registry's one timer for all connections (a timer per
        connection would make a thousand short-lived objects a second at
        10,000 agents, and full garbage collections with them): ping once
        C{heartbeat_s} has passed since the last ping, close a connection
        silent for C{agent_timeout_s}, or one without a valid hello past its
        deadline.
        """
        if now < self.nextPing or self.closing or self.transport is None:
            return
        if self.agentID is None and now >= self._helloBy and not self._helloing:
            self._helloTimedOut()
            return
        self.nextPing = now + self.settings.heartbeat_s
        if self.agentID is None and self._helloBy > now:
            self.nextPing = min(self.nextPing, self._helloBy)
        silent = now - self._lastHeard
        if silent >= self.settings.agent_timeout_s:
            log.warn(
                "agent {agentId} silent for {silent:.0f} s; closing",
                agentId=self.agentID or "(no hello yet)",
                silent=silent,
            )
            self.close(TIMED_OUT, "timed out")
            return
        self.transport.ping()

    def _helloTimedOut(self) -> None:
        log.warn(
            "no valid hello from {peer} within {timeout:g} s; closing",
            peer=self._peer(),
            timeout=self.settings.hello_timeout_s,
        )
        self.close(TIMED_OUT, "hello timed out")

    def _peer(self) -> str:
        tcp = getattr(self.transport, "transport", None)
        peer = tcp.getPeer() if tcp is not None and hasattr(tcp, "getPeer") else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        return f"{host}:{port}" if host is not None else "(unknown peer)"

    def _tooBig(self) -> None:
        self.registry.stats.errors += 1
        self.close(TOO_BIG, "message too big")

    def _error(self, field: str, message: str) -> None:
        self.errors += 1
        self.registry.stats.errors += 1
        self.send(m.Error(field=printable(field), message=printable(f"{field}: {message}")))
        if self.errors > self.settings.max_errors:
            self.close(POLICY, "too many bad messages")

    # -- handling, in order ------------------------------------------------------

    def _enqueue(self, message: m.Message) -> None:
        if not self._handling and self.agentID is not None and isinstance(message, _AT_ONCE):
            # Nothing waits before it, and it needs no database round trip
            # of its own: handled now, without a coroutine and a Deferred
            # (most messages of a busy farm are these).
            try:
                self._atOnce(message)
            except Exception:
                self._failed(message, Failure())
            return
        self._track(+1)
        self._handling += 1

        def handle(_: object) -> Deferred[None]:
            return Deferred.fromCoroutine(self._handle(message))

        def handled(result: object) -> None:
            self._track(-1)
            self._handling -= 1
            if isinstance(result, Failure):
                self._failed(message, result)

        self._queue.addCallback(handle)
        self._queue.addBoth(handled)

    def _track(self, change: int) -> None:
        """
        Count messages received and not yet handled; stop reading past the
        high-water mark, read again below the low one.
        """
        self._queued += change
        if change > 0 and self._queued >= _HIGH_WATER and not self._paused:
            self._pauseReading(True)
        elif change < 0 and self._paused and self._queued <= _LOW_WATER:
            self._pauseReading(False)

    def _pauseReading(self, pause: bool) -> None:
        tcp = getattr(self.transport, "transport", None)
        if tcp is None:
            return
        self._paused = pause
        if pause:
            tcp.pauseProducing()
        else:
            tcp.resumeProducing()

    def _failed(self, message: m.Message, reason: Failure) -> None:
        if reason.check(DatabaseUnavailable) and isinstance(message, m.Hello):
            # Nothing was written: the agent backs off and says hello again.
            self.close(TRY_AGAIN, "the master cannot reach its database; try again later")
            return
        if reason.check(DatabaseUnavailable):
            self.send(
                m.Error(
                    retry=True,
                    message="the master cannot write it to its database now; send it again later",
                )
            )
            return
        log.failure("cannot handle {kind} from agent {agentId}", reason,
                    kind=type(message).__name__, agentId=self.agentID)  # fmt: skip
        self.send(m.Error(message="the master failed to handle that message"))

    async def _handle(self, message: m.Message) -> None:
        if self.closing:
            return
        if isinstance(message, m.Hello):
            await self._hello(message)
            return
        if self.agentID is None:
            self._error("type", "the first message must be hello")
            self.close(UNAUTHORIZED, "hello first")
            return
        if isinstance(message, _AT_ONCE):
            self._atOnce(message)
            return
        self.registry.seen(self)
        if isinstance(message, m.Limits):
            assert self.session is not None
            await self.registry.store.agentLimits(self.agentID, self.session, message)
            self.registry.events.publish(AgentReady(self.agentID))
        elif isinstance(message, m.AgentException):
            await self.registry.store.exception(self.agentID, message.message, message.traceback)

    def _atOnce(self, message: m.Heartbeat | m.TaskUpdate | m.Log) -> None:
        """
        A heartbeat, task report or log lines from a welcomed agent: noted,
        and the writes handed to the batcher.
        """
        if self.closing:
            return
        if isinstance(message, m.Heartbeat):
            self.registry.seen(self, msgspec.to_builtins(message.usage))
            return
        self.registry.seen(self)
        if isinstance(message, m.TaskUpdate):
            self._report(message)
        else:
            self._logLines(message)

    def _report(self, update: m.TaskUpdate) -> None:
        """
        Hand a task report to the batcher without waiting for it: the
        batcher keeps this connection's reports in order, so the next one
        (done right after running) can share its transaction instead of
        waiting for the previous commit. Reports in flight still count
        towards the read backpressure.
        """
        agentID = self.agentID
        assert agentID is not None
        if update.state != "running":
            # Applied or not, the agent no longer runs it: its slot is free,
            # and a claim in the same transaction as this report may fill it.
            self.registry.events.publish(
                SlotFreed(agentID, update.task_id, update.state == "failed")
            )

        def reported(result: UpdateResult) -> None:
            if update.state == "running":
                if result.outcome is lifecycle.Outcome.stale and not result.already_canceled:
                    self.sendCancel(update.task_id, update.attempt, "not this agent's attempt")
            else:
                # A final report is written (or was stale: the agent stopped
                # the task either way, so no cancel): the agent may forget it.
                # Until this ack it keeps the report and sends it again after
                # each welcome, so a master dying before its commit loses
                # nothing.
                self.send(m.Ack(task_id=update.task_id, attempt=update.attempt,
                                state=update.state))  # fmt: skip
            if result.released:
                self.registry.events.publish(WorkAvailable(()))

        store = self.registry.store
        self._written(update, store.taskUpdate(agentID, update, self.clock.seconds()), reported)

    def _logLines(self, log: m.Log) -> None:
        """
        Hand log lines to the batcher, as task reports (they are written
        before the reports of their batch: an agent's last lines come before
        its done).
        """
        assert self.agentID is not None

        def written(outcome: lifecycle.Outcome) -> None:
            if outcome is lifecycle.Outcome.stale:
                self.sendCancel(log.task_id, log.attempt, "not this agent's attempt")

        self._written(log, self.registry.store.log(self.agentID, log), written)

    def _written(
        self, message: m.Message, writing: Coroutine[Any, Any, T], then: Callable[[T], object]
    ) -> None:
        """
        Follow a write handed to the batcher without holding up the
        connection: C{then} with its result, an error message if it fails.
        Writes in flight count towards the read backpressure.
        """
        self._track(+1)
        pending = Deferred.fromCoroutine(writing)
        self._writing.add(pending)

        def settled(result: object) -> None:
            self._writing.discard(pending)
            self._track(-1)
            if isinstance(result, Failure):
                self._failed(message, result)

        pending.addCallback(then)
        pending.addBoth(settled)

    async def _hello(self, hello: m.Hello) -> None:
        if self.agentID is not None:
            self._error("type", "hello was already received on this connection")
            return
        self._helloing = True
        try:
            await self._checkHello(hello)
        finally:
            self._helloing = False
            if self.agentID is None and not self.closing and self.clock.seconds() >= self._helloBy:
                # The deadline passed while the database was checking it,
                # and it did not make this connection an agent's.
                self._helloTimedOut()

    async def _checkHello(self, hello: m.Hello) -> None:
        """
        Accept a hello that may speak for its agent id: one with the id's
        credential, or, for an id not enrolled yet, one with a valid agent
        token (which enrolls it). Which it is, the database decides in the
        hello's own statement (another master may hold the id now).
        """
        principal = self.principal
        if hello.token is not None:
            principal = await self.auth.resolve(digestOf(hello.token))
        mayEnroll = principal is not None and principal.may(Role.agent)
        if not mayEnroll and hello.credential is None:
            why = (
                "a valid token of role agent is needed (or, once enrolled, the agent's credential)"
                if principal is None
                else f"role {principal.role.value} may not be an agent"
            )
            self._error("token", why)
            self.close(UNAUTHORIZED, "not authorized")
            return
        if self.closing:
            return
        session = str(uuid.uuid4())
        outcome = await self.registry.store.connect(
            hello, self.registry.master, session, self.clock.seconds(), mayEnroll
        )
        if isinstance(outcome, Refused):
            # Nothing was written: whoever holds this id keeps it.
            log.warn(
                "hello for agent {agentId} from {peer} refused: {why}",
                agentId=hello.agent_id,
                peer=self._peer(),
                why=outcome.reason,
            )
            self._error("credential", outcome.reason)
            self.close(FORBIDDEN, "credential refused")
            return
        welcome = outcome
        if self.closing:
            # Gone while we were registering it: let the new session go too,
            # and an enrollment whose secret no welcome carried.
            await self.registry.store.disconnect(
                hello.agent_id, session, self.clock.seconds(), welcome.credential is not None
            )
            return
        self.agentID, self.session = hello.agent_id, session
        replaced = self.registry.add(self)
        if replaced is not None and replaced is not self:
            replaced.close(REPLACED, "replaced by a newer connection")
        log.info(
            "agent {agentId} connected ({hostname}){enrolled}; requeued {requeued},"
            " cancels {cancels}",
            agentId=hello.agent_id,
            hostname=hello.hostname,
            enrolled=", enrolled" if welcome.credential is not None else "",
            requeued=len(welcome.requeued),
            cancels=len(welcome.cancel),
        )
        self.send(
            m.Welcome(
                agent_id=hello.agent_id,
                master=self.registry.master,
                heartbeat_s=self.settings.heartbeat_s,
                agent_timeout_s=self.settings.agent_timeout_s,
                credential=welcome.credential,
            )
        )
        if welcome.operator_limits:
            self.send(m.operatorLimits(welcome.operator_limits))
        for taskID, attempt in welcome.cancel:
            self.sendCancel(taskID, attempt, "not this agent's attempt")
        self.registry.events.publish(AgentReady(hello.agent_id))
