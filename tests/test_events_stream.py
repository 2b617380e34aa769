"""
GET /api/v1/events over real HTTP and a real database: the stream's start,
job events read from the database (made through any master), keepalives,
who may open one, and streams that end.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from masterd.http._events import JobFeed

from ._api import TOKENS, startAPI


def events(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


class StreamTests(TestCase):
    timeout = 60

    async def test_stream(self) -> None:
        """
        A viewer's stream starts with the retry delay and a hello naming the
        master; a job changed in the database arrives as a job event with
        its state and counts; the master ending the streams ends it.
        """
        api = await startAPI(self)
        streams = api.api.streams
        assert streams is not None
        received: list[bytes] = []
        response = await treq.get(
            api.base + "/api/v1/events",
            headers={"Authorization": [f"Bearer {TOKENS['viewer']}"]},
            unbuffered=True,
            persistent=False,
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["text/event-stream; charset=utf-8"])  # fmt: skip
        finished: Deferred[None] = treq.collect(response, received.append)

        async def until(check: Any) -> str:
            for _ in range(200):
                text = b"".join(received).decode()
                if check(text):
                    return text
                await deferLater(reactor, 0.02)
            self.fail(f"not received: {b''.join(received)!r}")

        text = await until(lambda t: "hello" in t)
        self.assertTrue(text.startswith("retry: 3000\n\n"))
        self.assertEqual(events(text), [("hello", {"master": "test"})])
        self.assertEqual(len(streams), 1)

        feed = JobFeed(api.pool, streams)
        await feed.poll()  # where it reads from
        job = await api.submit(frames="1-3")
        await feed.poll()
        text = await until(lambda t: "event: job" in t)
        [(_, document)] = [e for e in events(text) if e[0] == "job"]
        self.assertEqual(document["id"], job["id"])
        self.assertEqual(document["href"], job["href"])
        self.assertEqual(document["state"], "queued")
        self.assertEqual((document["tasks"]["total"], document["tasks"]["queued"]), (3, 3))

        streams.close()
        await finished
        self.assertEqual(len(streams), 0)

    async def test_whoMayOpen(self) -> None:
        """
        No token: 401, as for every route; an agent's token: 403.
        """
        api = await startAPI(self)
        reply = await api.call("GET", "/api/v1/events", role="")
        self.assertEqual(reply.code, 401)
        reply = await api.call("GET", "/api/v1/events", role="agent")
        self.assertEqual(reply.code, 403)


class _FakeRequest:
    """
    What a stream uses of a request: writes, and the end of the response.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self._finished: Deferred[None] = Deferred()
        self.transport = type("T", (), {"dataBuffer": b""})()

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def notifyFinish(self) -> Deferred[None]:
        return self._finished

    def lose(self) -> None:
        self._finished.errback(ConnectionError("gone"))


class StreamUnitTests(TestCase):
    def test_keepaliveAndSlowClients(self) -> None:
        """
        A comment every keepalive_s while a stream is open (on the injected
        clock); a client that reads too slowly has its stream ended; one
        that goes away is forgotten.
        """
        from twisted.internet.task import Clock

        from masterd.http._events import MAX_BUFFERED, EventStreams

        clock = Clock()
        streams = EventStreams(clock, keepalive_s=15)
        fast, slow = _FakeRequest(), _FakeRequest()
        done = streams.open(fast, {"master": "m"})  # type: ignore[arg-type]
        ended = streams.open(slow, {"master": "m"})  # type: ignore[arg-type]
        clock.advance(15)
        self.assertEqual(fast.written[-1], b": keepalive\n\n")
        slow.transport.dataBuffer = b"x" * (MAX_BUFFERED + 1)
        streams.publish("job", {"id": 1})
        self.assertTrue(fast.written[-1].startswith(b"event: job\n"))
        self.assertTrue(ended.called)
        self.assertFalse(done.called)
        fast.lose()
        slow.lose()
        self.assertEqual(len(streams), 0)
        clock.advance(15)
        self.assertEqual(clock.getDelayedCalls(), [])
