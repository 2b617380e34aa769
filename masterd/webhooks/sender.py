"""
One try of one delivery: a POST with treq, bounded in time from the first
byte sent to the last byte read, and in the bytes of the answer read.

A receiver that hangs, trickles an endless body or answers slowly costs a
try and one slot for at most C{timeout} seconds; nothing it does can hold
up the master.
"""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from .outbox import Claim, Outcome
from .payload import headers, sign

#: The most of an answer read (and kept, for a failed try, in its error).
MAX_ANSWER_BYTES = 4096
MAX_ERROR_CHARS = 500


class _Excerpt(Protocol):
    """
    Reads at most C{limit} bytes of a response body, then closes the
    connection; cancelling closes it too.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def dataReceived(self, data: bytes) -> None:
        self.data += data[: self.limit - len(self.data)]
        if len(self.data) >= self.limit:
            self.close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The end of the body, or a loss after it began: what was read is
        # all that matters.
        if not self.done.called:
            self.done.callback(bytes(self.data))

    def _cancel(self, d: Deferred[bytes]) -> None:
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


def describe(error: BaseException) -> str:
    """
    A connection error in a line: Twisted's HTTP client wraps the causes.
    """
    reasons = getattr(error, "reasons", None)
    if reasons:
        text = "; ".join(r.getErrorMessage() for r in reasons)
    else:
        text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}"[:MAX_ERROR_CHARS]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\0", "")[:MAX_ERROR_CHARS]


class Sender:
    """
    Posts deliveries with an injected treq HTTP client (treq.testing's
    C{StubTreq} in unit tests).
    """

    def __init__(self, client: Any, clock: IReactorTime, timeout: float) -> None:
        self._client = client
        self._clock = clock
        self.timeout = timeout

    async def send(self, claim: Claim) -> Outcome:
        """
        Post C{claim}'s delivery once; never raises. Cancelling it (the
        master is stopping) cuts the request, and what it returns then is
        not a try of the receiver's to record.
        """
        started = self._clock.seconds()
        answered: list[int] = []
        exchange = Deferred.fromCoroutine(self._exchange(claim, answered))
        # Not addTimeout: cancelling a request makes treq fail with
        # ResponseNeverReceived, so the deadline is told apart by its flag.
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            exchange.cancel()

        timer = self._clock.callLater(self.timeout, expire)
        status: int | None = None
        error: str | None = None
        try:
            status, excerpt = await exchange
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (f": {_text(excerpt)}" if excerpt.strip() else "")
        except Exception as e:
            if not expired:
                error = describe(e)
            elif answered:
                status = answered[0]
                if not 200 <= status < 300:
                    error = f"HTTP {status}; the body was not read within {self.timeout:g} s"
            else:
                error = f"no answer within {self.timeout:g} s"
        finally:
            if timer.active():
                timer.cancel()
        ms = round((self._clock.seconds() - started) * 1000)
        delivered = status is not None and 200 <= status < 300
        return Outcome(delivered=delivered, status=status, error=error, durationMS=max(ms, 0))

    async def _exchange(self, claim: Claim, answered: list[int]) -> tuple[int, bytes]:
        response = await self._client.post(
            claim.url,
            data=claim.body,
            headers=Headers(headers(claim.kind, claim.deliveryID, sign(claim.secret, claim.body))),
            allow_redirects=False,
            # Not buffered by treq: only MAX_ANSWER_BYTES are ever read.
            unbuffered=True,
        )
        status = int(response.code)
        answered.append(status)
        reader = _Excerpt(MAX_ANSWER_BYTES)
        response.deliverBody(reader)
        if 200 <= status < 300 and not reader.done.called:
            # Delivered: what the body says does not matter, and waiting
            # for a slow one would only hold the slot.
            reader.close()
        excerpt = await reader.done
        return status, excerpt


def httpClient(reactor: Any, connectTimeout: float) -> Any:
    """
    The treq client a master posts with: a connection per try (a receiver's
    idle connections are nothing to keep), redirects not followed.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, connectTimeout=connectTimeout, pool=pool))
