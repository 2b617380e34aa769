"""
C{GET /api/v1/events}: a Server-Sent Events stream of what changes on the
farm, for the dashboard (docs/http-api.md, "Events").

Each master serves every event: what it streams is read from the database
(the feeds of L{masterd.http._feeds}: jobs, agents, limits, masters, the
audit trail; each once a second, one statement whatever the number of
streams), so a change made through any master reaches the streams of every
master. An event is a hint: after a reconnect the page reads again what it
shows, so a missed event loses nothing.

A stream is its principal's: an event may be for some roles only (the audit
trail's, for operators), and a stream ends when its credential no longer
authenticates (a token revoked or a session signed out, on any master).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from masterd.accounts import Authenticator, Principal
from masterd.config import Role
from masterd.db import DatabaseUnavailable
from masterd.errors import Forbidden, Unauthorized
from masterd.events import EventBus, TokensChanged
from masterd.service import LoopWatcher, Periodic, StagedService

from ._feeds import DEFAULT_EXPIRE_S, Feed, JobFeed, farmFeeds
from ._operations import operation

__all__ = ["EventRoutes", "EventStreams", "EventsService", "JobFeed", "frame"]

log = Logger()

#: How long the page waits before it reconnects (the SSE retry field).
RETRY_MS = 3000
#: A comment this often keeps proxies from closing a quiet stream.
KEEPALIVE_S = 15.0
#: A stream whose client reads slower than this much is closed (it will
#: reconnect, and read again what it shows).
MAX_BUFFERED = 4 << 20


def waiting(transport: object) -> int:
    """
    The bytes written to C{transport} and not sent yet. Twisted's TCP
    transport keeps their length (C{dataBuffer} and C{_tempDataLen}:
    summing its pieces instead cost a busy master most of its time). Where
    the master serves TLS itself the request's transport is
    twisted.protocols.tls's, which hands what it encrypts to the TCP
    transport below it at once, and (a ProtocolWrapper) reads its
    attributes from there: the same two give what waits below
    (tests/test_events_stream.py checks it with TLS's own class).
    """
    return len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)


def frame(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Stream:
    def __init__(self, request: IRequest, principal: Principal) -> None:
        self.request = request
        self.principal = principal
        self.open = True
        #: Fires when the master ends the stream (Klein then finishes the
        #: response); the client going away cancels it.
        self.done: Deferred[bytes] = Deferred(lambda _: None)

    def end(self) -> None:
        if self.open:
            self.open = False
            if not self.done.called:
                self.done.callback(b"")

    def write(self, data: bytes) -> None:
        if not self.open:
            return
        if waiting(getattr(self.request, "transport", None)) > MAX_BUFFERED:
            log.info("closing an event stream that reads too slowly")
            self.end()
            return
        self.request.write(data)


class EventStreams:
    """
    The open event streams of this master.
    """

    def __init__(self, clock: IReactorTime, keepalive_s: float = KEEPALIVE_S) -> None:
        self._clock = clock
        self._keepalive_s = keepalive_s
        self._streams: set[_Stream] = set()
        self._timer: IDelayedCall | None = None
        self.sent = 0
        self._auth: Authenticator | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._recheck: IDelayedCall | None = None
        self._checking = False
        self._again = False
        self._pending: list[tuple[Role, bytes]] = []
        self._batching = 0

    def __len__(self) -> int:
        return len(self._streams)

    def any(self, role: Role = Role.viewer) -> bool:
        """
        Whether some stream's principal may receive events for C{role}.
        """
        return any(s.principal.may(role) for s in self._streams)

    def open(
        self, request: IRequest, hello: dict[str, Any], principal: Principal
    ) -> Deferred[bytes]:
        """
        Start a stream of C{principal}'s on C{request}; what its route
        returns.
        """
        stream = _Stream(request, principal)
        self._streams.add(stream)

        def gone(_: object) -> None:
            stream.open = False
            self._streams.discard(stream)

        request.notifyFinish().addBoth(gone)  # type: ignore[attr-defined]
        stream.write(f"retry: {RETRY_MS}\n\n".encode() + frame("hello", hello))
        if self._timer is None:
            self._timer = self._clock.callLater(self._keepalive_s, self._keepalive)
        return stream.done

    def _keepalive(self) -> None:
        self._timer = None
        for stream in list(self._streams):
            stream.write(b": keepalive\n\n")
        if self._streams:
            self._timer = self._clock.callLater(self._keepalive_s, self._keepalive)

    def publish(self, kind: str, data: Any, role: Role = Role.viewer) -> None:
        """
        One event to every stream whose principal may C{role}, encoded once;
        inside L{batch}, written with the batch's other events.
        """
        if not self._streams:
            return
        self._pending.append((role, frame(kind, data)))
        self.sent += 1
        if not self._batching:
            self._flush()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """
        Events published inside go to each stream in one write when it ends:
        a feed's tick may publish hundreds, and a write per event and stream
        would cost the master more than the events are worth.
        """
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching:
                self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        # What a role may read, joined once for all the streams of that role.
        joined: dict[Role, bytes] = {}
        for stream in list(self._streams):
            role = stream.principal.role
            data = joined.get(role)
            if data is None:
                data = joined[role] = b"".join(f for r, f in pending if stream.principal.may(r))
            if data:
                stream.write(data)

    # -- streams do not outlive their credentials ---------------------------

    def watch(self, auth: Authenticator, bus: EventBus | None) -> None:
        """
        Check the streams' credentials with C{auth} again whenever C{bus}
        says tokens or sessions changed (on any master). Once is enough.
        """
        if self._auth is not None:
            return
        self._auth = auth
        if bus is not None:
            self._unsubscribe = bus.subscribe(TokensChanged, lambda _: self.credentialsChanged())

    def credentialsChanged(self) -> None:
        """
        A token was revoked or a session ended somewhere: end the streams
        whose request no longer authenticates. The check runs on the next
        turn of the clock (after the authenticator has forgotten what it
        read), once for a burst of changes.
        """
        if self._checking:
            self._again = True
            return
        self._checking = True
        self._recheck = self._clock.callLater(0, self._startRecheck)

    def _startRecheck(self) -> None:
        self._recheck = None
        Deferred.fromCoroutine(self._recheckAll()).addErrback(
            lambda f: log.failure("could not check the event streams' credentials", f)
        )

    async def _recheckAll(self) -> None:
        try:
            while True:
                self._again = False
                streams = [s for s in self._streams if s.open]
                await gatherResults(
                    [Deferred.fromCoroutine(self._check(s)) for s in streams], consumeErrors=True
                )
                if not self._again:
                    return
        finally:
            self._checking = False

    async def _check(self, stream: _Stream) -> None:
        auth = self._auth
        if auth is None:
            return
        try:
            stream.principal = await auth.require(stream.request, Role.viewer)
        except (Unauthorized, Forbidden):
            log.info("ending an event stream of {name}: its credential is no longer valid",
                     name=stream.principal.name)  # fmt: skip
            stream.end()
        except DatabaseUnavailable:
            pass  # checked again at the next change; the cache expires meanwhile
        except Exception:
            log.failure("could not check an event stream's credential")

    def close(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._recheck is not None and self._recheck.active():
            self._recheck.cancel()
            self._checking = False
        self._recheck = None
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._unsubscribe = None
        self._auth = None
        for stream in list(self._streams):
            stream.end()
        self._streams.clear()


class EventRoutes:
    """
    A mixin of L{MasterAPI}.
    """

    name: str
    streams: EventStreams | None
    auth: Authenticator
    events: EventBus | None

    @operation("GET", "/api/v1/events", summary="A stream of what changes (Server-Sent Events)",
               role=Role.viewer, response=str, contentType="text/event-stream", tag="master",
               description="Events: hello (on connecting: the master, the user and their "
               "role); job (a job's state and counts), agent (an agent's state, running tasks "
               "and master, with its previous state), agents (how many agents are in each "
               "state), limit (a limit's max and use; deleted), master (a master up or down), "
               "each read from the database about once a second; audit (each new entry of the "
               "audit trail: operators and admins only). Only changes are sent, from the "
               "moment the stream opens. A stream ends when its token is revoked or its "
               "session signed out. A client that reconnects reads again what it shows: an "
               "event is a hint, never the only record.")  # fmt: skip
    def eventStream(self, request: IRequest) -> Any:
        streams = self.streams
        if streams is None:
            request.setResponseCode(503)
            return b""
        principal: Principal = request.principal  # type: ignore[attr-defined]
        streams.watch(self.auth, self.events)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        hello = {"master": self.name, "user": principal.name, "role": principal.role.value}
        return streams.open(request, hello, principal)


class EventsService(StagedService):
    """
    Feeds the event streams while the master runs; ends them when it stops
    (before the HTTP service closes its connections).

    @param feeds: what is read each tick, in order. A lone L{JobFeed}
        stands for the farm's feeds: it, then those of
        L{masterd.http._feeds.farmFeeds} on its pool.
    @param expire_s: when a master is down (master.expire_s), for the
        master feed that a lone L{JobFeed} brings.
    """

    name = "events"

    def __init__(
        self,
        streams: EventStreams,
        feeds: JobFeed | Sequence[Feed],
        clock: IReactorTime,
        interval: float = 1.0,
        watcher: LoopWatcher | None = None,
        expire_s: float = DEFAULT_EXPIRE_S,
    ) -> None:
        self.streams = streams
        self._loop = Periodic("events.jobs", self._poll, interval, clock, watcher)
        self._watcher = watcher
        self._clock = clock
        if isinstance(feeds, JobFeed):
            feeds = (feeds, *farmFeeds(feeds.pool, streams, clock, expire_s))
        self.feeds: tuple[Feed, ...] = tuple(feeds)

    async def _poll(self) -> None:
        # One feed failing (its statement, or what it read) leaves the
        # others to run: each reads from where it was at the next tick.
        with self.streams.batch():
            for feed in self.feeds:
                try:
                    await feed.poll()
                except DatabaseUnavailable:
                    pass  # the next tick reads from the same point
                except Exception:
                    self._failed(feed, Failure())

    def _failed(self, feed: Feed, failure: Failure) -> None:
        loop = self._loop
        loop.failures += 1
        loop.lastFailureAt = self._clock.seconds()
        log.failure("the {feed} event feed failed; it reads again in {interval} s", failure,
                    feed=feed.name, interval=loop.interval)  # fmt: skip
        if self._watcher is not None:
            try:
                self._watcher.loopFailed(loop, failure)
            except Exception:
                log.failure("could not count a failure of the {loop} loop", loop=loop.name)

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        self.streams.close()
