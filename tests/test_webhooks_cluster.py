"""
Webhooks across real master processes on one real PostgreSQL: a master
killed with SIGKILL in the middle of a delivery (its receiver hangs on it)
loses no event; once its lease runs out the other master delivers every
pending event, in order, with the same delivery ids, and tells of the
dead master too.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg2
from twisted.trial.unittest import TestCase

from ._postgres import freshDatabase
from ._process import MasterProcess, call, until
from ._receiver import HANG, Receiver, startReceiver
from .test_e2e import ADMIN, farmConfig

SECRET = "cluster-receiver-secret"
#: Short, so that the dead master's lease (timeout + 5 s) runs out soon.
TIMEOUT_S = 2.0


class KilledMidDeliveryTests(TestCase):
    timeout = 180

    async def startMasters(self, dsn: str, names: list[str]) -> None:
        root = Path(self.mktemp()).resolve()
        self.masters: dict[str, MasterProcess] = {}
        self.urls: dict[str, str] = {}
        for name in names:
            directory = root / name
            directory.mkdir(parents=True)
            config = farmConfig(
                directory,
                master={"name": name, "heartbeat_s": 1, "expire_s": 4},
                database={"dsn": dsn},
                webhooks={"timeout_s": TIMEOUT_S, "poll_s": 0.2, "max_backoff_s": 1},
            )
            master = MasterProcess(config, directory)
            self.addCleanup(master.kill)
            self.masters[name] = master
        for name, master in self.masters.items():
            self.urls[name] = f"http://127.0.0.1:{await master.waitForPort()}"
            await until("ready", lambda n=name: self.ready(n), 60, self.logs)

    async def ready(self, name: str) -> bool:
        code, _ = await call(self.urls[name], "/readyz", ADMIN)
        return code == 200

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{m.log()[-3000:]}" for n, m in self.masters.items())

    async def api(self, name: str, method: str, path: str, body: Any = None) -> Any:
        code, answer = await call(self.urls[name], path, ADMIN, method, body)
        self.assertLess(code, 300, (method, path, answer))
        return answer

    async def test_killedMidDelivery(self) -> None:
        dsn = await freshDatabase(self)
        await self.startMasters(dsn, ["a", "b"])
        receiver = Receiver(lambda r, n: HANG if n == 0 else 200)
        hook = await self.api("a", "POST", "/api/v1/webhooks", {
            "url": await startReceiver(self, receiver), "secret": SECRET,
            "events": ["job.canceled", "master.down"],
        })  # fmt: skip
        jobs = []
        for i in range(3):
            submission = {"title": f"job {i}", "command": ["true"], "frames": "1"}
            job = await self.api("a", "POST", "/api/v1/jobs", submission)
            await self.api("a", "POST", f"/api/v1/jobs/{job['id']}/cancel")
            jobs.append(job["id"])

        async def hanging() -> bool:
            return len(receiver.requests) >= 1

        await until("the first delivery under way", hanging, 30, self.logs, interval=0.05)
        conn = psycopg2.connect(dsn)
        self.addCleanup(conn.close)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT claimed_by FROM webhooks")
            ((victim,),) = cursor.fetchall()
        survivor = "b" if victim == "a" else "a"
        self.masters[victim].process.send_signal(signal.SIGKILL)
        self.masters[victim].process.wait(10)
        killed = time.monotonic()

        async def allDelivered() -> bool:
            return len(receiver.delivered()) >= 4

        await until("the survivor delivers everything", allDelivered, 60, self.logs)
        took = time.monotonic() - killed
        # Nothing is delivered before the dead master's lease runs out.
        self.assertGreater(took, TIMEOUT_S)
        self.assertLess(took, TIMEOUT_S + 5 + 15)

        hung = receiver.requests[0]
        delivered = receiver.delivered()
        events = [(r.event, r.json()) for r in delivered]
        self.assertEqual([e for e, _ in events[:3]], ["job.canceled"] * 3)
        self.assertEqual([b["data"]["job"]["id"] for _, b in events[:3]], jobs)
        # The event it died delivering comes again, same id, same bytes.
        self.assertEqual(delivered[0].delivery, hung.delivery)
        self.assertEqual(delivered[0].body, hung.body)
        self.assertEqual(len({r.delivery for r in delivered}), len(delivered))
        self.assertTrue(all(r.signed(SECRET) for r in receiver.requests))
        self.assertEqual(max(receiver.maxBusy.values()), 1)
        # Recorded by a's transactions (the cancels); the death by the survivor.
        self.assertEqual({b["master"] for _, b in events[:3]}, {"a"})
        (down,) = [b for e, b in events if e == "master.down"]
        self.assertEqual(down["data"]["master"]["name"], victim)
        self.assertEqual(down["master"], survivor)

        async def recorded() -> bool:
            code, page = await call(self.urls[survivor], hook["deliveries"], ADMIN)
            return code == 200 and all(d["state"] == "delivered" for d in page["items"])

        await until("every delivery recorded", recorded, 20, self.logs)
        page = await self.api(survivor, "GET", hook["deliveries"])
        oldest = page["items"][-1]
        self.assertEqual(oldest["id"], hung.delivery)
        # The dead master never recorded its try; the survivor's is the one.
        self.assertEqual([(t["status"], t["master"]) for t in oldest["tries"]], [(200, survivor)])
        self.assertEqual((await self.api(survivor, "GET", hook["href"]))["pending"], 0)
        counters = (await self.api(survivor, "GET", "/api/v1/master"))["webhooks"]
        self.assertEqual((counters["delivered"], counters["in_flight"]), (4, 0))
        loops = (await self.api(survivor, "GET", "/api/v1/master"))["loops"]
        self.assertIn("webhooks.deliver", [loop["name"] for loop in loops])
