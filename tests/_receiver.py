"""
A webhook receiver on 127.0.0.1 (an ephemeral port) in the test's own
process: a real twisted.web server that records every request and answers
as its script says (a status, or hanging until the test lets it go).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from attrs import define
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from masterd.webhooks import verify

#: An answer: a status, or HANG (never answer until released).
HANG = -1


@define
class Received:
    at: float
    headers: dict[str, str]
    body: bytes
    answered: int | None = None
    finished: float | None = None

    @property
    def delivery(self) -> str:
        return self.headers["x-masterd-delivery"]

    @property
    def event(self) -> str:
        return self.headers["x-masterd-event"]

    def json(self) -> Any:
        return json.loads(self.body)

    def signed(self, secret: str) -> bool:
        return verify(secret, self.body, self.headers.get("x-masterd-signature", ""))


class Receiver(Resource):
    """
    C{script(received, n)} says how to answer the C{n}th request (from 0):
    a status, or L{HANG}.
    """

    isLeaf = True

    def __init__(
        self, script: Callable[[Received, int], int] = lambda received, n: 200, delay: float = 0.0
    ) -> None:
        super().__init__()
        self.script = script
        #: Seconds to wait before answering (a slow receiver).
        self.delay = delay
        self.requests: list[Received] = []
        self.hanging: list[Request] = []
        #: Requests being answered now, by delivery id; the most at once.
        self.busy: dict[str, int] = {}
        self.maxBusy: dict[str, int] = {}

    def render_POST(self, request: Request) -> Any:
        raw = request.requestHeaders.getAllRawHeaders()
        headers = {k.decode().lower(): v[0].decode() for k, v in raw}
        assert request.content is not None
        received = Received(time.monotonic(), headers, request.content.read())
        n = len(self.requests)
        self.requests.append(received)
        answer = self.script(received, n)
        key = received.delivery
        self.busy[key] = self.busy.get(key, 0) + 1
        self.maxBusy[key] = max(self.maxBusy.get(key, 0), self.busy[key])

        def done(_: object = None) -> None:
            self.busy[key] -= 1

        if answer == HANG:
            self.hanging.append(request)
            request.notifyFinish().addBoth(done)
            return NOT_DONE_YET

        def answerNow() -> None:
            received.answered = answer
            received.finished = time.monotonic()
            request.setResponseCode(answer)
            request.setHeader(b"content-type", b"text/plain")
            request.write(b"ok" if 200 <= answer < 300 else b"receiver says no")
            request.finish()

        if self.delay:
            request.notifyFinish().addBoth(done)
            reactor.callLater(self.delay, answerNow)
            return NOT_DONE_YET
        answerNow()
        done()
        return NOT_DONE_YET

    def delivered(self) -> list[Received]:
        """
        The requests answered 2xx, in the order they came.
        """
        return [r for r in self.requests if r.answered is not None and 200 <= r.answered < 300]


async def startReceiver(case: TestCase, receiver: Receiver) -> str:
    """
    Listen on 127.0.0.1; the URL to give a webhook.
    """
    site = Site(receiver)
    site.displayTracebacks = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")

    async def stop() -> None:
        for request in receiver.hanging:
            if not request.finished and request.channel is not None:
                request.channel.transport.abortConnection()
        await port.stopListening()

    case.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return f"http://127.0.0.1:{port.getHost().port}/hook"
