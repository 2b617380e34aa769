"""
GET /api/v1/farm, the dashboard's overview, against a real database.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

from twisted.trial.unittest import TestCase

from masterd.jobs.farm import farmOverview

from ._api import API, startAPI
from .test_jobs_api import assignAll, finish

BUSY = "6f1c0b9e-52a5-4d36-9a8f-0d1c2b3a4e5f"
IDLE = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
OFFLINE = "1a2b3c4d-0000-4000-8000-000000000001"
DISABLED = "1a2b3c4d-0000-4000-8000-000000000002"
DISABLED_OFFLINE = "1a2b3c4d-0000-4000-8000-000000000003"
GONE = "1a2b3c4d-0000-4000-8000-000000000004"

JOB_STATES = ("waiting", "queued", "running", "paused", "done", "failed", "canceled")
TASK_STATES = ("waiting", "queued", "assigned", "running", "done", "failed", "canceled")


def zeros(states: tuple[str, ...]) -> dict[str, int]:
    return dict.fromkeys(states, 0)


def minute(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FarmTests(TestCase):
    timeout = 60

    async def api(self) -> API:
        return await startAPI(self)

    async def agent(self, api: API, agentID: str, connected: bool, enabled: bool = True) -> None:
        await api.pool.query(
            "INSERT INTO agents (id, hostname, session, enabled) VALUES (%s, %s, %s, %s)",
            (agentID, f"host-{agentID[-4:]}", str(uuid.uuid4()) if connected else None, enabled),
        )

    async def test_empty(self) -> None:
        api = await self.api()
        farm = await api.ok("GET", "/api/v1/farm")
        minutes = farm.pop("finished_per_minute")
        self.assertEqual(
            farm,
            {
                "href": "/api/v1/farm",
                "jobs": zeros(JOB_STATES),
                "agents": {"idle": 0, "busy": 0, "offline": 0, "disabled": 0},
                "tasks": zeros(TASK_STATES),
                "limits": "/api/v1/limits",
                "masters": "/api/v1/masters",
            },
        )
        self.assertEqual(len(minutes), 60)
        self.assertEqual({(m["done"], m["failed"]) for m in minutes}, {(0, 0)})
        times = [minute(m["at"]) for m in minutes]
        for m, at in zip(minutes, times, strict=True):
            self.assertRegex(m["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z$")
            self.assertEqual(at.second, 0)
        self.assertEqual([b - a for a, b in pairwise(times)], [timedelta(minutes=1)] * 59)
        now = datetime.now(UTC)
        self.assertLessEqual(times[-1], now)
        self.assertGreater(times[-1], now - timedelta(minutes=2))
        # The linked resources exist.
        await api.ok("GET", farm["limits"])
        await api.ok("GET", farm["masters"])

    async def test_counts(self) -> None:
        """
        Every job state, agent state and task state counted, zeros
        included.
        """
        api = await self.api()
        await self.agent(api, BUSY, connected=True)
        await self.agent(api, IDLE, connected=True)
        await self.agent(api, OFFLINE, connected=False)
        await self.agent(api, DISABLED, connected=True, enabled=False)
        await self.agent(api, DISABLED_OFFLINE, connected=False, enabled=False)
        queued = await api.submit(frames="1-4")
        await api.submit(frames="1-2", paused=True)
        running = await api.submit(frames="1-3")
        [first, *_] = await assignAll(api, running["id"], BUSY)
        await finish(api, first, BUSY)
        done = await api.submit(frames="1-2")
        for a in await assignAll(api, done["id"], IDLE):
            await finish(api, a, IDLE)
        await api.ok("POST", f"/api/v1/jobs/{(await api.submit(frames='1'))['id']}/cancel")
        # A task assigned to an agent deleted since: it makes no agent busy.
        gone = await api.submit(frames="1")
        await assignAll(api, gone["id"], GONE)
        self.assertEqual((await api.ok("GET", queued["href"]))["state"], "queued")
        farm = await api.ok("GET", "/api/v1/farm")
        self.assertEqual(
            farm["jobs"],
            {**zeros(JOB_STATES), "queued": 1, "paused": 1, "running": 2, "done": 1,
             "canceled": 1},
        )  # fmt: skip
        self.assertEqual(farm["agents"], {"idle": 1, "busy": 1, "offline": 1, "disabled": 2})
        self.assertEqual(
            farm["tasks"],
            {**zeros(TASK_STATES), "queued": 6, "assigned": 3, "done": 3, "canceled": 1},
        )
        # Counted minute by minute: the three done attempts.
        self.assertEqual(sum(m["done"] for m in farm["finished_per_minute"]), 3)
        self.assertEqual(sum(m["failed"] for m in farm["finished_per_minute"]), 0)

    async def test_minutes(self) -> None:
        """
        Attempts that finished done or failed, by the minute they finished
        in, over the 60 minutes up to the current one; other ends, and
        attempts outside the hour, are not counted.
        """
        api = await self.api()
        job = await api.submit(frames="1-20")
        rows = await api.pool.query("SELECT id FROM tasks WHERE job_id = %s ORDER BY index",
                                    (job["id"],))  # fmt: skip
        tasks = iter(r[0] for r in rows)
        now = datetime(2030, 1, 1, 12, 30, 45, 500000, tzinfo=UTC)
        last = datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
        first = last - timedelta(minutes=59)

        async def attempt(state: str, finished: datetime | None) -> None:
            await api.pool.query(
                "INSERT INTO task_attempts (task_id, attempt, job_id, state, started_at,"
                " finished_at) VALUES (%s, 1, %s, %s, %s, %s)",
                (next(tasks), job["id"], state, finished or now, finished),
            )

        for state, finished in [
            ("done", last),
            ("done", last + timedelta(seconds=45)),
            ("failed", last + timedelta(seconds=59, microseconds=999999)),
            ("done", last - timedelta(microseconds=1)),
            ("failed", last - timedelta(minutes=10, seconds=-30)),
            ("done", first),
            ("failed", first + timedelta(seconds=59)),
            # Not counted: before the hour, after now's minute, other ends.
            ("done", first - timedelta(microseconds=1)),
            ("done", last + timedelta(minutes=1)),
            ("canceled", last),
            ("lost", last),
            ("rejected", last),
            ("preempted", last),
            ("running", None),
        ]:
            await attempt(state, finished)
        farm = await farmOverview(api.pool, now)
        minutes = farm.finished_per_minute
        self.assertEqual(len(minutes), 60)
        self.assertEqual(
            [m.at for m in minutes],
            [(first + timedelta(minutes=n)).isoformat()[:19] + ".000Z" for n in range(60)],
        )
        self.assertEqual((minutes[0].at, minutes[-1].at),
                         ("2030-01-01T11:31:00.000Z", "2030-01-01T12:30:00.000Z"))  # fmt: skip
        counted = {n: (m.done, m.failed) for n, m in enumerate(minutes) if m.done or m.failed}
        self.assertEqual(counted, {0: (1, 1), 49: (0, 1), 58: (1, 0), 59: (2, 1)})
        # A time given in another zone is the same instant.
        east = now.astimezone(timezone(timedelta(hours=5, minutes=30)))
        self.assertEqual((await farmOverview(api.pool, east)).finished_per_minute, minutes)

    async def test_roles(self) -> None:
        api = await self.api()
        self.assertEqual((await api.call("GET", "/api/v1/farm", role="")).code, 401)
        reply = await api.call("GET", "/api/v1/farm", token="not-a-token-0123456789")
        self.assertEqual(reply.code, 401)
        self.assertEqual((await api.call("GET", "/api/v1/farm", role="agent")).code, 403)
        for role in ("viewer", "user", "operator", "admin"):
            reply = await api.call("GET", "/api/v1/farm", role=role)
            self.assertEqual(reply.code, 200, role)
            self.assertEqual(reply.header("cache-control"), "no-store")

    async def test_openAPI(self) -> None:
        api = await self.api()
        document: dict[str, Any] = await api.ok("GET", "/api/v1/openapi.json")
        operation = document["paths"]["/api/v1/farm"]["get"]
        self.assertEqual(operation["x-masterd-role"], "viewer")
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[1]
        farm = document["components"]["schemas"][name]
        self.assertEqual(
            set(farm["required"]),
            {"href", "jobs", "agents", "tasks", "finished_per_minute", "limits", "masters"},
        )
        minutes = farm["properties"]["finished_per_minute"]
        self.assertEqual((minutes["minItems"], minutes["maxItems"]), (60, 60))
