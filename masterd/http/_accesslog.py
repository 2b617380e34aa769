"""
The access log: one line per request in the combined log format, written in
batches.

One log event per request costs a busy master a fifth of its time (the log
observer formats and flushes each one), so lines are kept and written
together, at most a second after the first of them. The line format is
Twisted's C{combinedLogFormatter}'s, made cheaper for the common case of
plain ASCII values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.http import _escape

log = Logger(namespace="masterd.http.access")

#: The most lines kept before they are written.
BATCH = 500

_NEEDS_ESCAPE = re.compile(rb'[^\x20-\x7e]|["\\]')


def _fast(value: bytes | str) -> str:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if _NEEDS_ESCAPE.search(value) is None:
        return value.decode("ascii")
    escaped: str = _escape(value)
    return escaped


def formatLine(timestamp: str, request: Any) -> str:
    address = request.getClientAddress()
    ip = getattr(address, "host", None) or "-"
    return (
        f'"{_fast(ip)}" - - {timestamp} "{_fast(request.method)} {_fast(request.uri)}'
        f' {_fast(request.clientproto)}" {request.code} {request.sentLength or "-"}'
        f' "{_fast(request.getHeader(b"referer") or b"-")}"'
        f' "{_fast(request.getHeader(b"user-agent") or b"-")}"'
    )


class AccessLog:
    def __init__(self, clock: Callable[[], IReactorTime]) -> None:
        # The site's reactor, looked up when needed: tests swap it.
        self._clock = clock
        self._lines: list[str] = []
        self._flush: IDelayedCall | None = None
        self.enabled = True

    def add(self, timestamp: str, request: Any) -> None:
        if not self.enabled:
            return
        self._lines.append(formatLine(timestamp, request))
        if len(self._lines) >= BATCH:
            self.flush()
        elif self._flush is None:
            self._flush = self._clock().callLater(1.0, self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            if self._flush.active():
                self._flush.cancel()
            self._flush = None
        lines, self._lines = self._lines, []
        if lines:
            log.info("{lines}", lines="\n".join(lines), count=len(lines))
