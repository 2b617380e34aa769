"""
One try of a delivery, without a database: the headers, the signature and
the payload (treq.testing's in-memory client over a twisted.web resource),
what counts as delivered, the deadline on a receiver that hangs (a
deterministic clock), and a refused connection (a real closed port).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from datetime import UTC, datetime
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from masterd.webhooks import Claim, Sender, httpClient, sign, verify
from masterd.webhooks.payload import encode, payload

SECRET = "s3cret-of-the-receiver"


class Answer(Resource):
    isLeaf = True

    def __init__(self, status: int = 200, body: bytes = b"", hang: bool = False) -> None:
        super().__init__()
        self.status, self.body, self.hang = status, body, hang
        self.seen: list[tuple[dict[str, list[str]], bytes]] = []

    def render_POST(self, request: Any) -> Any:
        headers = {k.decode().lower(): [x.decode() for x in v]
                   for k, v in request.requestHeaders.getAllRawHeaders()}  # fmt: skip
        self.seen.append((headers, request.content.read()))
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        if self.status in (301, 302):
            request.setHeader(b"location", b"http://elsewhere.example/")
        return self.body


def claim(url: str = "http://receiver.example/hook") -> Claim:
    at = datetime(2026, 11, 28, 22, 50, 18, 123000, tzinfo=UTC)
    data = {"job": {"id": 7, "href": "/api/v1/jobs/7", "title": "shot 10", "owner": "ana",
                    "state": "done"}}  # fmt: skip
    body = encode(payload("6f1c0b9e-0000-4000-8000-000000000001", "job.done", at, "m1", data))
    return Claim(webhookID=1, url=url, secret=SECRET, lease="l", kind="job.done",
                 deliveryID="6f1c0b9e-0000-4000-8000-000000000001", attempts=0, at=at,
                 body=body)  # fmt: skip


class SenderTests(TestCase):
    async def test_signedPayload(self) -> None:
        answer = Answer(204)
        outcome = await Sender(StubTreq(answer), Clock(), 10.0).send(claim())
        self.assertEqual((outcome.delivered, outcome.status, outcome.error), (True, 204, None))
        ((headers, body),) = answer.seen
        self.assertEqual(headers["content-type"], ["application/json"])
        self.assertEqual(headers["x-masterd-event"], ["job.done"])
        self.assertEqual(headers["x-masterd-delivery"], ["6f1c0b9e-0000-4000-8000-000000000001"])
        self.assertTrue(headers["user-agent"][0].startswith("masterd/"))
        # The receiver's own check, written without the master's code.
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        self.assertEqual(headers["x-masterd-signature"], [f"sha256={expected}"])
        self.assertTrue(verify(SECRET, body, f"sha256={expected}"))
        self.assertFalse(verify(SECRET, body + b" ", f"sha256={expected}"))
        self.assertFalse(verify("another-secret-16", body, f"sha256={expected}"))
        self.assertEqual(json.loads(body), {
            "id": "6f1c0b9e-0000-4000-8000-000000000001", "event": "job.done",
            "at": "2026-11-28T22:50:18.123Z", "master": "m1",
            "data": {"job": {"id": 7, "href": "/api/v1/jobs/7", "title": "shot 10",
                             "owner": "ana", "state": "done"}},
        })  # fmt: skip

    def test_sameBytesEveryTime(self) -> None:
        self.assertEqual(claim().body, claim().body)
        self.assertEqual(sign(SECRET, claim().body), sign(SECRET, claim().body))

    async def test_onlyTwoHundredsDeliver(self) -> None:
        for status in (200, 201, 202, 299):
            outcome = await Sender(StubTreq(Answer(status)), Clock(), 10.0).send(claim())
            self.assertTrue(outcome.delivered, status)
        for status in (301, 302, 304, 400, 404, 410, 429, 500, 503):
            answer = Answer(status, b"nope")
            outcome = await Sender(StubTreq(answer), Clock(), 10.0).send(claim())
            self.assertFalse(outcome.delivered, status)
            self.assertEqual(outcome.status, status)
            # A 304 has no body, by HTTP's rules.
            self.assertEqual(outcome.error, f"HTTP {status}" + ("" if status == 304 else ": nope"))
            self.assertEqual(len(answer.seen), 1)  # redirects are not followed

    async def test_longAnswerCut(self) -> None:
        outcome = await Sender(StubTreq(Answer(500, b"\0x" * 100_000)), Clock(), 10.0).send(claim())
        assert outcome.error is not None
        self.assertEqual(outcome.error, "HTTP 500: " + "x" * 500)

    async def test_hangingReceiverCutAtTheTimeout(self) -> None:
        clock = Clock()
        sent = Deferred.fromCoroutine(
            Sender(StubTreq(Answer(hang=True)), clock, 10.0).send(claim())
        )
        clock.advance(9.9)
        self.assertFalse(sent.called)
        clock.advance(0.1)
        outcome = await sent
        self.assertEqual((outcome.delivered, outcome.status), (False, None))
        self.assertEqual(outcome.error, "no answer within 10 s")
        self.assertEqual(outcome.durationMS, 10_000)

    async def test_connectionRefused(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        sender = Sender(httpClient(reactor, 5.0), reactor, 5.0)
        outcome = await sender.send(claim(f"http://127.0.0.1:{port}/hook"))
        self.assertEqual((outcome.delivered, outcome.status), (False, None))
        assert outcome.error is not None
        self.assertIn("refused", outcome.error.lower())
