"""
C{GET /api/v1/events}: a Server-Sent Events stream of what changes on the
farm, for the dashboard (docs/http-api.md, "Events").

Each master serves every event: what it streams is read from the database
(L{JobFeed}: the jobs changed since its last read, once a second, one
statement whatever the number of streams), so a change made through any
master reaches the streams of every master. An event is a hint: after a
reconnect the page reads again what it shows, so a missed event loses
nothing.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from masterd.config import Role
from masterd.db import DatabaseUnavailable, Pool
from masterd.service import LoopWatcher, Periodic, StagedService

from ._operations import operation

log = Logger()

#: How long the page waits before it reconnects (the SSE retry field).
RETRY_MS = 3000
#: A comment this often keeps proxies from closing a quiet stream.
KEEPALIVE_S = 15.0
#: A stream whose client reads slower than this much is closed (it will
#: reconnect, and read again what it shows).
MAX_BUFFERED = 4 << 20


def frame(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Stream:
    def __init__(self, request: IRequest) -> None:
        self.request = request
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
        transport = getattr(self.request, "transport", None)
        buffered = len(getattr(transport, "dataBuffer", b"")) + sum(
            len(b) for b in getattr(transport, "_tempDataBuffer", [])
        )
        if buffered > MAX_BUFFERED:
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

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, request: IRequest, hello: dict[str, Any]) -> Deferred[bytes]:
        """
        Start a stream on C{request}; what its route returns.
        """
        stream = _Stream(request)
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

    def publish(self, kind: str, data: Any) -> None:
        """
        One event to every stream, encoded once.
        """
        if not self._streams:
            return
        encoded = frame(kind, data)
        for stream in list(self._streams):
            stream.write(encoded)
        self.sent += 1

    def close(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for stream in list(self._streams):
            stream.end()
        self._streams.clear()


_COUNTS = ("waiting", "queued", "assigned", "running", "done", "failed", "canceled")


class JobFeed:
    """
    The jobs changed since the last read, as C{job} events. Reads overlap
    by a margin (a change's C{updated_at} is its transaction's start, and
    may commit a little later), so a job may be sent twice: an event says
    how a job is, never what happened to it, and a repeat is harmless.
    """

    MARGIN_S = 2.0

    def __init__(self, pool: Pool, streams: EventStreams) -> None:
        self._pool = pool
        self._streams = streams
        self._since: Any = None

    async def poll(self) -> None:
        if not len(self._streams):
            self._since = None
            return
        if self._since is None:
            rows = await self._pool.query("SELECT now()")
            self._since = rows[0][0]
            return
        rows = await self._pool.query(
            "SELECT now(), id, state, n_total, n_waiting, n_queued, n_assigned, n_running,"
            " n_done, n_failed, n_canceled FROM jobs"
            " WHERE updated_at > %s - make_interval(secs => %s) ORDER BY id LIMIT 5000",
            (self._since, self.MARGIN_S),
        )
        if not rows:
            self._since = (await self._pool.query("SELECT now()"))[0][0]
            return
        self._since = rows[0][0]
        for _, jobID, state, total, *counts in rows:
            self._streams.publish(
                "job",
                {"id": jobID, "href": f"/api/v1/jobs/{jobID}", "state": state,
                 "tasks": {"total": total, **dict(zip(_COUNTS, counts, strict=True))}},
            )  # fmt: skip


class EventRoutes:
    """
    A mixin of L{MasterAPI}.
    """

    name: str
    streams: EventStreams | None

    @operation("GET", "/api/v1/events", summary="A stream of what changes (Server-Sent Events)",
               role=Role.viewer, response=str, contentType="text/event-stream", tag="master",
               description="Events: hello (on connecting: the master), job (a job's state and "
               "counts, at most about once a second a job). A client that reconnects reads "
               "again what it shows: an event is a hint, never the only record.")  # fmt: skip
    def eventStream(self, request: IRequest) -> Any:
        streams = self.streams
        if streams is None:
            request.setResponseCode(503)
            return b""
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        return streams.open(request, {"master": self.name})


class EventsService(StagedService):
    """
    Feeds the event streams while the master runs; ends them when it stops
    (before the HTTP service closes its connections).
    """

    name = "events"

    def __init__(
        self,
        streams: EventStreams,
        feed: JobFeed,
        clock: IReactorTime,
        interval: float = 1.0,
        watcher: LoopWatcher | None = None,
    ) -> None:
        self.streams = streams
        self._loop = Periodic("events.jobs", self._poll, interval, clock, watcher)
        self._feed = feed

    async def _poll(self) -> None:
        try:
            await self._feed.poll()
        except DatabaseUnavailable:
            pass  # the next tick reads from the same point

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        self.streams.close()
