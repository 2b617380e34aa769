"""
Deliveries end to end in one process: the real delivering service, a real
database and a real twisted.web receiver on 127.0.0.1. Retries with the
same id and body, exactly one successful delivery per event, event order,
a hanging receiver cut at the timeout, giving up, two services on one
database never posting one event at once, and a stop that gives its
leases back.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from masterd.config import WebhooksConfig
from masterd.webhooks import Outbox, Sender, WebhookService, httpClient

from ._api import API, startAPI
from ._receiver import HANG, Receiver, startReceiver

SECRET = "the-receiver-knows-this"


async def until(what: str, check: Callable[[], Awaitable[bool] | bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await deferLater(reactor, 0.02)


class DeliveryTests(TestCase):
    timeout = 90

    async def setUp(self) -> None:
        self.api: API = await startAPI(self)
        self.pool = self.api.pool

    def service(self, master: str = "m1", **settings: Any) -> WebhookService:
        settings.setdefault("timeout_s", 5.0)
        settings.setdefault("poll_s", 0.05)
        config = WebhooksConfig(**settings)
        service = WebhookService(
            Outbox(self.pool, master),
            Sender(httpClient(reactor, config.timeout_s), reactor, config.timeout_s),
            reactor, config, initialBackoff=0.05, jitter=lambda: 0.0,
        )  # fmt: skip
        self.addCleanup(service.stop)
        return service

    async def hook(self, url: str, events: list[str] | None = None) -> dict[str, Any]:
        return dict(await self.api.ok("POST", "/api/v1/webhooks", {
            "url": url, "events": events or ["job.canceled"], "secret": SECRET,
        }, 201))  # fmt: skip

    async def canceledJobs(self, count: int) -> list[int]:
        """
        One job.canceled event each, in this order.
        """
        ids = []
        for i in range(count):
            job = await self.api.submit(title=f"job {i}", frames="1")
            await self.api.ok("POST", f"/api/v1/jobs/{job['id']}/cancel")
            ids.append(job["id"])
        return ids

    async def deliveries(self, hook: dict[str, Any]) -> list[dict[str, Any]]:
        page = await self.api.ok("GET", hook["deliveries"])
        return list(page["items"])

    async def test_retriedUntilDelivered(self) -> None:
        """
        The receiver fails its first three tries (500), then succeeds: every
        try is signed, carries the same delivery id and the same bytes, and
        each event is delivered exactly once, in event order.
        """
        receiver = Receiver(lambda r, n: 500 if n < 3 else 200)
        hook = await self.hook(await startReceiver(self, receiver))
        jobs = await self.canceledJobs(3)
        await self.service().start()
        await until("three deliveries", lambda: len(receiver.delivered()) == 3, 30)

        for r in receiver.requests:
            self.assertTrue(r.signed(SECRET), r.headers)
            self.assertFalse(r.signed("another secret"))
            self.assertEqual(r.headers["content-type"], "application/json")
            self.assertEqual(r.event, "job.canceled")
            self.assertTrue(r.headers["user-agent"].startswith("masterd/"))
        first = receiver.requests[:4]
        self.assertEqual([r.answered for r in receiver.requests], [500, 500, 500, 200, 200, 200])
        self.assertEqual({r.delivery for r in first}, {first[0].delivery})
        self.assertEqual({r.body for r in first}, {first[0].body})
        delivered = receiver.delivered()
        self.assertEqual(len({r.delivery for r in delivered}), 3)
        self.assertEqual([r.json()["data"]["job"]["id"] for r in delivered], jobs)
        body = delivered[0].json()
        self.assertEqual(set(body), {"id", "event", "at", "master", "data"})
        self.assertEqual((body["id"], body["event"]), (delivered[0].delivery, "job.canceled"))
        self.assertTrue(body["at"].endswith("Z"))
        self.assertEqual(body["data"]["job"], {
            "id": jobs[0], "href": f"/api/v1/jobs/{jobs[0]}", "title": "job 0", "owner": "admin",
            "state": "canceled", "tasks": {"total": 1, "done": 0, "failed": 0, "canceled": 1},
        })  # fmt: skip
        # Backoff between the failed tries, head of line meanwhile.
        gaps = [b.at - a.at for a, b in itertools.pairwise(first)]
        self.assertTrue(all(g >= 0.04 for g in gaps), gaps)

        await until("recorded", self._settled(hook), 10)
        items = await self.deliveries(hook)
        self.assertEqual([d["body"]["data"]["job"]["id"] for d in items], jobs[::-1])
        oldest = items[-1]
        self.assertEqual(oldest["id"], first[0].delivery)
        self.assertEqual(oldest["body"], body)
        self.assertEqual((oldest["state"], oldest["attempts"], oldest["status"], oldest["error"]),
                         ("delivered", 4, 200, None))  # fmt: skip
        self.assertEqual([t["status"] for t in oldest["tries"]], [500, 500, 500, 200])
        self.assertEqual(oldest["tries"][0]["error"], "HTTP 500: receiver says no")
        self.assertEqual({t["master"] for t in oldest["tries"]}, {"m1"})
        self.assertIsNone(oldest["next_attempt_at"])
        self.assertIsNotNone(oldest["delivered_at"])
        self.assertEqual([len(d["tries"]) for d in items[:2]], [1, 1])
        self.assertEqual((await self.api.ok("GET", hook["href"]))["pending"], 0)
        page = await self.api.ok("GET", hook["deliveries"] + "?limit=2&state=delivered")
        rest = await self.api.ok("GET", page["next"])
        self.assertEqual([d["id"] for d in page["items"] + rest["items"]],
                         [d["id"] for d in items])  # fmt: skip

    def _settled(self, hook: dict[str, Any]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await self.api.ok("GET", hook["href"]))["pending"] == 0

        return check

    async def test_hangingReceiverIsCut(self) -> None:
        """
        A receiver that never answers costs one slot for the timeout and no
        more; another webhook's deliveries go on meanwhile.
        """
        hanging, fine = Receiver(lambda r, n: HANG), Receiver()
        slow = await self.hook(await startReceiver(self, hanging))
        quick = await self.hook(await startReceiver(self, fine))
        await self.canceledJobs(2)
        service = self.service(timeout_s=0.5, concurrency=2)
        await service.start()
        await until("the other webhook's two deliveries", lambda: len(fine.delivered()) == 2, 10)
        self.assertEqual(len(hanging.requests), 1)  # head of line: only the first
        await until("the cut try recorded", self._tried(slow), 10)
        (newest, oldest) = await self.deliveries(slow)
        (cut,) = oldest["tries"]
        self.assertEqual((cut["status"], cut["error"]), (None, "no answer within 0.5 s"))
        self.assertGreaterEqual(cut["duration_ms"], 450)
        self.assertLess(cut["duration_ms"], 3000)
        self.assertEqual((oldest["state"], newest["state"], newest["attempts"]),
                         ("pending", "pending", 0))  # fmt: skip
        self.assertIsNotNone(oldest["next_attempt_at"])
        self.assertEqual([d["state"] for d in await self.deliveries(quick)], ["delivered"] * 2)
        self.assertEqual(service.stats.failed_tries >= 1, True)

    def _tried(self, hook: dict[str, Any]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return any(d["tries"] for d in await self.deliveries(hook))

        return check

    async def test_givenUpThenTheNextEventGoesOn(self) -> None:
        receiver = Receiver(
            lambda r, n: 500 if r.json()["data"]["job"]["title"] == "job 0" else 200
        )
        hook = await self.hook(await startReceiver(self, receiver))
        await self.canceledJobs(2)
        await self.service(retry_for_s=0.5).start()
        await until("the second event delivered", lambda: len(receiver.delivered()) == 1, 20)
        await until("recorded", self._settled(hook), 10)
        newest, oldest = await self.deliveries(hook)
        self.assertEqual((oldest["state"], newest["state"]), ("failed", "delivered"))
        self.assertGreater(oldest["attempts"], 1)
        self.assertEqual(oldest["status"], 500)
        # The last try was at the deadline, not past it.
        self.assertEqual(receiver.delivered()[0].json()["data"]["job"]["title"], "job 1")

    async def test_twoMastersNeverPostOneEventAtOnce(self) -> None:
        """
        Two services (two masters) on one database, receivers slow enough
        for their polls to overlap: each event is posted once, never twice
        at once, and each webhook's in order.
        """
        receivers = [Receiver(delay=0.05), Receiver(delay=0.05)]
        hooks = [await self.hook(await startReceiver(self, r)) for r in receivers]
        jobs = await self.canceledJobs(12)
        a, b = self.service("m1", concurrency=2), self.service("m2", concurrency=2)
        await a.start()
        await b.start()
        await until("all delivered", lambda: all(len(r.delivered()) == 12 for r in receivers), 30)
        for receiver in receivers:
            self.assertEqual(len(receiver.requests), 12)
            self.assertEqual(max(receiver.maxBusy.values()), 1)
            self.assertEqual([r.json()["data"]["job"]["id"] for r in receiver.requests], jobs)
            # One at a time per webhook: each answered before the next came.
            for earlier, later in itertools.pairwise(receiver.requests):
                assert earlier.finished is not None
                self.assertLessEqual(earlier.finished, later.at)
        for hook in hooks:
            await until("recorded", self._settled(hook), 10)
        masters = await self.pool.query("SELECT DISTINCT master FROM webhook_tries")
        self.assertTrue({m for (m,) in masters} <= {"m1", "m2"})
        self.assertEqual(a.stats.delivered + b.stats.delivered, 24)

    async def test_stopGivesTheLeaseBack(self) -> None:
        hanging = Receiver(lambda r, n: HANG if n == 0 else 200)
        hook = await self.hook(await startReceiver(self, hanging))
        await self.canceledJobs(1)
        first = self.service("m1", timeout_s=30.0)
        await first.start()
        await until("the try under way", lambda: len(hanging.requests) == 1, 10)
        rows = await self.pool.query("SELECT claimed_by FROM webhooks")
        self.assertEqual(rows, [("m1",)])
        began = time.monotonic()
        await first.stop()
        self.assertLess(time.monotonic() - began, 5)
        rows = await self.pool.query("SELECT claimed_by, claimed_until FROM webhooks")
        self.assertEqual(rows, [(None, None)])
        self.assertEqual(await self.pool.query("SELECT error FROM webhook_tries"), [])
        # Another master delivers it at once, with the same id.
        await self.service("m2").start()
        await until("delivered by m2", lambda: len(hanging.delivered()) == 1, 10)
        self.assertEqual(hanging.requests[1].delivery, hanging.requests[0].delivery)
        await until("recorded", self._settled(hook), 10)
        (delivery,) = await self.deliveries(hook)
        self.assertEqual([t["master"] for t in delivery["tries"]], ["m2"])

    async def test_deletedMidDelivery(self) -> None:
        receiver = Receiver(delay=0.3)
        hook = await self.hook(await startReceiver(self, receiver))
        await self.canceledJobs(1)
        service = self.service()
        await service.start()
        await until("the try under way", lambda: len(receiver.requests) == 1, 10)
        self.assertEqual((await self.api.call("DELETE", hook["href"])).code, 204)
        await until("answered", lambda: len(receiver.delivered()) == 1, 10)
        await until("nothing in flight", lambda: service.stats.in_flight == 0, 10)
        self.assertEqual(service.stats.exceptions, 0)
        self.assertEqual(await self.api.count("webhook_tries"), 0)
        self.assertEqual(await self.api.count("webhook_events"), 0)
