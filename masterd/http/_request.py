"""
The request class of the master's site: every request passes through here, so
the counters, the body limit and the last-resort JSON error need no code in
any route.
"""

from __future__ import annotations

import io
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from masterd.stats import MasterStats

from ._json import APIError, encodeJSON

log = Logger()

#: The route template recorded for a request that matched no route.
UNMATCHED = "<unmatched>"


class _Discard(io.BytesIO):
    """
    Swallows an oversized body: counted, never stored.
    """

    def write(self, data: Any) -> int:
        return len(data)


class MasterRequest(server.Request):
    """
    A request that times itself, enforces the body limit and never lets an
    HTML error page or a traceback out.
    """

    #: The route template (C{/api/v1/jobs/<id>}), set by the application.
    route: str = UNMATCHED
    #: Who made the request, once authenticated.
    principal: Any = None

    _tooLarge = False
    _bodyBytes = 0
    _started = 0.0
    _stats: MasterStats | None = None

    def _limits(self) -> tuple[MasterStats | None, int]:
        site: Any = self.channel.site  # type: ignore[attr-defined]
        return site.stats, site.maxBodyBytes

    def gotLength(self, length: int | None) -> None:
        _, limit = self._limits()
        if length is not None and length > limit:
            self._tooLarge = True
            self.content = _Discard()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if not self._tooLarge:
            _, limit = self._limits()
            self._bodyBytes += len(data)
            if self._bodyBytes > limit:
                # A chunked body with no declared length grew past the limit.
                self._tooLarge = True
                self.content = _Discard()
                return
        super().handleContentChunk(data)

    def process(self) -> None:
        stats, limit = self._limits()
        self._started = time.perf_counter()
        if stats is not None:
            stats.requests.started()
            self._stats = stats
        if not self._pathIsText():
            self.site = getattr(self.channel, "site", None)
            self._writeError(
                APIError(
                    400,
                    "invalid_path",
                    "the path is not UTF-8 once its %-escapes are decoded",
                    {"field": "(path)"},
                )
            )
            return
        if self._tooLarge:
            self.site = getattr(self.channel, "site", None)
            # The client may still be sending: close once answered, rather
            # than read on into an unbounded body.
            self.setHeader(b"connection", b"close")
            if self.channel is not None:
                self.channel.persistent = False
            self._writeError(
                APIError(
                    413,
                    "payload_too_large",
                    f"the request body is larger than the limit of {limit} bytes",
                    {"limit_bytes": limit},
                )
            )
            return
        super().process()

    def _pathIsText(self) -> bool:
        path = self.path
        if b"%" not in path and path.isascii():
            return True
        try:
            unquote_to_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    def _record(self) -> None:
        # Counted here rather than through notifyFinish: one Deferred less
        # on every request.
        stats, self._stats = self._stats, None
        if stats is not None:
            stats.requests.finished(
                self.method.decode("ascii", "replace"),
                self.route,
                self.code,
                time.perf_counter() - self._started,
            )

    def finish(self) -> None:
        super().finish()
        self._record()

    def upgraded(self) -> None:
        """
        The connection became a WebSocket: this request will never finish,
        so count it now, as answered 101.
        """
        self.code = 101
        self._record()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._record()

    def _writeError(self, error: APIError) -> None:
        body = encodeJSON(error.body())
        self.setResponseCode(error.status)
        self.setHeader(b"content-type", b"application/json; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % (len(body),))
        for name, value in error.headers.items():
            self.setHeader(name, value)
        self.write(body)
        self.finish()

    def recordException(self, reason: Failure) -> None:
        """
        Count and keep an unhandled exception, and log it with its traceback.
        """
        stats, _ = self._limits()
        log.failure(
            "unhandled error in {method} {route}",
            reason,
            method=self.method.decode("ascii", "replace"),
            route=self.route,
        )
        if stats is not None:
            stats.exceptions.record(
                time.time(),
                self.route,
                reason.type.__name__ if reason.type else "Exception",
                str(reason.value)[:500],
            )

    def processingFailed(self, reason: Failure) -> Deferred[None] | None:
        """
        The last resort, for errors outside the application's own handlers.
        """
        self.recordException(reason)
        if self.finished or self.startedWriting:
            self.loseConnection()
            return None
        self._writeError(
            APIError(500, "internal_error", "the master failed to handle this request")
        )
        return None
