"""
The farm's history (docs/history.md) on a real database: attempts folded
into hourly rollups by project, owner and pool, the same figures from GET
/api/v1/history, unchanged once the jobs are deleted, never counted twice
(the advisory lock, retired jobs), the periodic run surviving an
exception, the route's refusals naming their field, and the totals on
/metrics.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

import masterd.history.service as historyService
from masterd.db import Transaction
from masterd.history import (
    HistoryMetrics,
    HistoryService,
    Run,
    retire,
    rollUp,
    rollUpStep,
)
from masterd.history.metrics import bounded
from masterd.history.store import ProjectTotals
from masterd.jobs import lifecycle

from ._api import API, startAPI

#: Tags {"linux", "gpu"}, extra tags {"fast", "gpu"}: the pools fast, gpu
#: and linux.
GPU = "6f1c0b9e-52a5-4d36-9a8f-0d1c2b3a4e5f"
#: Untagged: the pool "".
PLAIN = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
#: An agent deleted since (no row): the pool "" too.
GONE = "1a2b3c4d-0000-4000-8000-000000000004"
TAGS = ["fast", "gpu", "linux"]

H1 = datetime(2025, 3, 10, 10, tzinfo=UTC)
H2 = H1 + timedelta(hours=1)
RANGE = "since=2025-03-10T10:30:00Z&until=2025-03-10T12:00:00Z"


def ts(when: datetime) -> float:
    return when.timestamp()


def figures(done: int, failed: int, attempts: int, cpu: float, wall: float) -> dict[str, Any]:
    return {"tasks_done": done, "tasks_failed": failed, "attempts": attempts,
            "core_hours": round(cpu / 3600, 6), "wall_hours": round(wall / 3600, 6)}  # fmt: skip


def hour(when: datetime, key: str, *values: float) -> dict[str, Any]:
    return {"hour": when.isoformat()[:19] + ".000Z", "key": key, **figures(*values)}  # type: ignore[arg-type]


#: The figures of Work.run by project, owner, pool and for the farm.
BY_PROJECT = [
    hour(H1, "shot010", 1, 0, 2, 36, 10),
    hour(H1, "shot020", 1, 0, 2, 0, 0),
    hour(H2, "shot010", 1, 1, 2, 122, 62),
    hour(H2, "shot020", 1, 0, 1, 3600, 3600),
]
BY_OWNER = [{**item, "key": {"shot010": "admin", "shot020": "user"}[item["key"]]}
            for item in BY_PROJECT]  # fmt: skip
BY_POOL = [
    hour(H1, "", 1, 0, 1, 0, 0),
    *(hour(H1, tag, 1, 0, 3, 36, 10) for tag in TAGS),
    hour(H2, "", 1, 1, 2, 122, 62),
    *(hour(H2, tag, 1, 0, 1, 3600, 3600) for tag in TAGS),
]
FARM = [hour(H1, "", 2, 0, 4, 36, 10), hour(H2, "", 2, 1, 3, 3722, 3662)]


class Work:
    """
    Jobs and attempts with known times and usage, through the lifecycle's
    own functions.
    """

    def __init__(self, api: API) -> None:
        self.api = api
        self.pool = api.pool

    async def agents(self) -> None:
        await self.pool.query(
            "INSERT INTO agents (id, hostname, tags, extra_tags) VALUES"
            " (%s, 'gpu-1', '{linux,gpu}', '{fast,gpu}'), (%s, 'plain-1', '{}', '{}')",
            (GPU, PLAIN),
        )

    async def job(self, project: str, frames: str, role: str = "admin") -> tuple[int, list[int]]:
        reply = await self.api.call("POST", "/api/v1/jobs", {
            "title": f"{project} render", "command": ["render", "{frame}"], "frames": frames,
            "project": project, "max_retries": 0,
        }, role=role)  # fmt: skip
        assert reply.code == 201, reply.body
        jobID = int(reply.json()["id"])
        rows = await self.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (jobID,)
        )
        return jobID, [r[0] for r in rows]

    async def assign(self, agent: str, task: int, at: datetime) -> int:
        [a] = await self.pool.transaction(
            lambda txn: lifecycle.assign(txn, agent, [task], at=ts(at))
        )
        return a.attempt

    async def end(
        self,
        agent: str,
        task: int,
        how: str,
        at: datetime | None,
        cpu: tuple[float, float] | None = None,
        wall: float | None = None,
    ) -> None:
        """
        Run C{task} on C{agent} (from a minute before C{at}) and end it
        C{how}, at C{at} (None: now), with that usage.
        """
        started = (at or datetime.now(UTC)) - timedelta(minutes=1)
        attempt = await self.assign(agent, task, started)
        when = ts(at) if at is not None else None

        async def work(txn: Transaction) -> lifecycle.Outcome:
            if how == "done":
                return await lifecycle.done(txn, agent, task, attempt, 0, when)
            if how == "failed":
                return await lifecycle.failed(txn, agent, task, attempt, 1, "boom", when)
            if how == "preempted":
                assert when is not None
                return await lifecycle.preempt(txn, agent, task, attempt, "urgent", when)
            return await lifecycle.requeue(txn, agent, task, attempt, how, how, when)

        outcome = await self.pool.transaction(work)
        assert outcome is lifecycle.Outcome.applied, outcome
        if cpu is not None or wall is not None:
            user, system = cpu or (0.0, 0.0)
            await self.pool.query(
                "UPDATE task_attempts SET cpu_user_s = %s, cpu_system_s = %s, wall_s = %s"
                " WHERE task_id = %s AND attempt = %s",
                (user, system, wall, task, attempt),
            )

    async def run(self) -> tuple[int, int]:
        """
        Two finished jobs over two hours: done, failed, lost and preempted
        attempts, on tagged, untagged and deleted agents.
        """
        await self.agents()
        a, (a1, a2, a3) = await self.job("shot010", "1-3")
        await self.end(GPU, a1, "done", H1 + timedelta(minutes=10), (30, 6), 10)
        # Lost, then done elsewhere: the lost attempt counts in attempts only.
        await self.end(GPU, a2, "lost", H1 + timedelta(minutes=20))
        await self.end(PLAIN, a2, "done", H2 + timedelta(minutes=5), (100, 20), 60)
        await self.end(PLAIN, a3, "failed", H2 + timedelta(minutes=10), (2, 0), 2)
        b, (b1, b2) = await self.job("shot020", "1-2", role="user")
        await self.end(GPU, b1, "preempted", H1 + timedelta(minutes=35))
        # Done on an agent deleted since, with no usage reported.
        await self.end(GONE, b1, "done", H1 + timedelta(minutes=40))
        await self.end(GPU, b2, "done", H2 + timedelta(minutes=50), (3000, 600), 3600)
        return a, b


class HistoryTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.api = await startAPI(self)
        self.pool = self.api.pool
        self.work = Work(self.api)

    async def history(self, query: str = RANGE) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.ok("GET", f"/api/v1/history?{query}")
        return result

    async def assertFigures(self) -> None:
        """
        The route says what Work.run did, by every key.
        """
        for by, expected in (("project", BY_PROJECT), ("owner", BY_OWNER), ("pool", BY_POOL)):
            document = await self.history(f"by={by}&{RANGE}")
            self.assertEqual(document["by"], by)
            self.assertEqual(document["items"], expected, by)
            keys = sorted({item["key"] for item in expected})
            self.assertEqual([t["key"] for t in document["totals"]], keys)
            for total in document["totals"]:
                mine = [i for i in expected if i["key"] == total["key"]]
                for name in ("tasks_done", "tasks_failed", "attempts"):
                    self.assertEqual(total[name], sum(i[name] for i in mine), (by, name))
                for name in ("core_hours", "wall_hours"):
                    self.assertAlmostEqual(total[name], sum(i[name] for i in mine), places=5)
        farm = await self.history()
        self.assertIsNone(farm["by"])
        self.assertEqual(farm["items"], FARM)
        self.assertEqual(
            (farm["since"], farm["until"]), ("2025-03-10T10:30:00.000Z", "2025-03-10T12:00:00.000Z")
        )

    async def test_rollups(self) -> None:
        """
        Attempts count by the hour they finished in; done and failed only
        for done and failed attempts; CPU is user + system.
        """
        await self.work.run()
        run = await rollUp(self.pool)
        self.assertEqual((run.steps, run.attempts, run.busy, run.behind), (3, 7, False, False))
        rows = await self.pool.query(
            "SELECT hour, project, owner, tags, tasks_done, tasks_failed, attempts, cpu_s, wall_s"
            " FROM farm_history ORDER BY 1, 2"
        )
        self.assertEqual(
            [(r[0], *r[1:]) for r in rows],
            [
                (H1, "shot010", "admin", TAGS, 1, 0, 2, 36.0, 10.0),
                (H1, "shot020", "user", [], 1, 0, 1, 0.0, 0.0),
                (H1, "shot020", "user", TAGS, 0, 0, 1, 0.0, 0.0),
                (H2, "shot010", "admin", [], 1, 1, 2, 122.0, 62.0),
                (H2, "shot020", "user", TAGS, 1, 0, 1, 3600.0, 3600.0),
            ],
        )
        await self.assertFigures()
        # Nothing new: the next run adds nothing.
        again = await rollUp(self.pool)
        self.assertEqual(again.attempts, 0)
        await self.assertFigures()
        document = await self.history()
        mark = datetime.fromisoformat(document["rolled_to"].replace("Z", "+00:00"))
        self.assertLess(abs(mark - (datetime.now(UTC) - timedelta(seconds=60))),
                        timedelta(seconds=10))  # fmt: skip

    async def test_deleted(self) -> None:
        """
        Deleting the jobs changes nothing, and the attempts the watermark
        had not passed yet (finished within the lag) are rolled up by the
        deletion, batch by batch (masterd.jobs.retire).
        """
        a, b = await self.work.run()
        recent, [r1] = await self.work.job("shot030", "1")
        await self.work.end(PLAIN, r1, "done", None, (5, 2), 9)
        await rollUp(self.pool, lag_s=60)
        before = await self.history(f"by=project&{RANGE}")
        # The recent attempt is after the watermark: not counted yet.
        self.assertEqual([i["key"] for i in (await self.history("by=project"))["items"]], [])
        for jobID in (a, b, recent):
            await self.api.ok("DELETE", f"/api/v1/jobs/{jobID}", status=204)
        self.assertEqual(await self.api.count("task_attempts"), 0)
        self.assertEqual(await self.history(f"by=project&{RANGE}"), before)
        await self.assertFigures()
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        [item] = (await self.history("by=project"))["items"]
        self.assertIn(
            item, [hour(h, "shot030", 1, 0, 1, 7, 9) for h in (now, now - timedelta(hours=1))]
        )
        # The periodic roll-up does not count it again, nor do the deleted
        # jobs' remains stay among the retired.
        await rollUp(self.pool, lag_s=0)
        self.assertEqual((await self.history("by=project"))["items"], [item])
        self.assertEqual(await self.api.count("farm_history_retired"), 0)

    async def test_retiredBeforeDeletion(self) -> None:
        """
        A deletion retires a job (retire), then deletes its tasks in
        batches, each its own transaction folding its attempts: a periodic
        roll-up in between leaves the job's attempts alone, and a retired
        job is rolled up once however often it is retired (the first
        watermark is kept).
        """
        await self.work.agents()
        jobID, [t] = await self.work.job("shot040", "1")
        await self.work.end(GPU, t, "done", None, (1, 1), 3)
        for _ in range(2):
            await self.pool.transaction(lambda txn: retire(txn, jobID))
        await rollUp(self.pool, lag_s=0)
        self.assertEqual(await self.api.count("farm_history"), 0)
        self.assertEqual(await self.api.count("farm_history_retired"), 1)
        await self.api.ok("DELETE", f"/api/v1/jobs/{jobID}", status=204)
        await rollUp(self.pool, lag_s=0)
        rows = await self.pool.query("SELECT sum(tasks_done), sum(attempts) FROM farm_history")
        self.assertEqual(rows, [(1, 1)])
        self.assertEqual(await self.api.count("farm_history_retired"), 0)

    async def test_lag(self) -> None:
        """
        An attempt is rolled up only once it finished lag_s ago.
        """
        await self.work.agents()
        _, [t] = await self.work.job("shot050", "1")
        await self.work.end(PLAIN, t, "done", None)
        self.assertEqual((await rollUp(self.pool, lag_s=3600)).attempts, 0)
        self.assertEqual((await rollUp(self.pool, lag_s=0)).attempts, 1)

    async def test_boundedRuns(self) -> None:
        """
        A step folds one clock hour; a run takes at most maxSteps and says
        it is behind; idle hours in between are skipped in one step.
        """
        await self.work.agents()
        _, tasks = await self.work.job("shot060", "1-3")
        for n, task in enumerate(tasks):
            await self.work.end(PLAIN, task, "done", H1 + timedelta(days=n, minutes=5))
        first = await rollUp(self.pool, maxSteps=2)
        self.assertEqual(first, Run(steps=2, attempts=2, busy=False, behind=True))
        [(mark,)] = await self.pool.query("SELECT rolled_to FROM farm_history_mark")
        self.assertEqual(mark, H1 + timedelta(days=1, hours=1))
        second = await rollUp(self.pool, maxSteps=2)
        self.assertEqual(second, Run(steps=2, attempts=1, busy=False, behind=False))
        rows = await self.pool.query("SELECT hour FROM farm_history ORDER BY 1")
        self.assertEqual([r[0] for r in rows], [H1 + timedelta(days=n) for n in range(3)])

    async def test_lockHeld(self) -> None:
        """
        While another transaction holds the lock (another master's step, a
        job's deletion), a run does nothing; two runs at once count once.
        """
        await self.work.run()
        release: Deferred[None] = Deferred()
        locked: Deferred[None] = Deferred()

        async def holder(txn: Transaction) -> None:
            await txn.execute("SELECT pg_advisory_xact_lock(hashtextextended('history', 0))")
            locked.callback(None)
            await release

        holding = Deferred.fromCoroutine(self.pool.transaction(holder))
        await locked
        self.assertEqual(await rollUp(self.pool), Run(0, 0, busy=True, behind=False))
        self.assertEqual(await self.api.count("farm_history"), 0)
        release.callback(None)
        await holding
        runs = await gatherResults([Deferred.fromCoroutine(rollUp(self.pool)) for _ in range(3)])
        self.assertEqual(sum(r.attempts for r in runs), 7)
        await self.assertFigures()

    async def test_jobWaitsForAStep(self) -> None:
        """
        retire waits for a periodic step under way and keeps the watermark
        it moved: the job's attempts that step folded are not folded again
        when the job's deletion folds the rest.
        """
        a, _ = await self.work.run()
        stepped: Deferred[None] = Deferred()
        release: Deferred[None] = Deferred()

        async def step(txn: Transaction) -> None:
            self.assertEqual((await rollUpStep(txn, 60)).attempts, 4)  # the first hour
            stepped.callback(None)
            await release

        stepping = Deferred.fromCoroutine(self.pool.transaction(step))
        await stepped
        order: list[str] = []

        async def retireA(txn: Transaction) -> None:
            await retire(txn, a)
            order.append("job")

        retiring = Deferred.fromCoroutine(self.pool.transaction(retireA))
        await self.api.ok("GET", "/api/v1/farm")  # a round trip: the job waits
        self.assertEqual(order, [])
        order.append("step")
        release.callback(None)
        await gatherResults([stepping, retiring])
        self.assertEqual(order, ["step", "job"])
        await rollUp(self.pool)
        await self.api.ok("DELETE", f"/api/v1/jobs/{a}", status=204)
        await rollUp(self.pool)
        await self.assertFigures()

    async def test_periodicSurvives(self) -> None:
        """
        A run that raises is logged and counted; the next runs and folds.
        """
        await self.work.run()
        clock = Clock()
        calls: list[float] = []
        done: Deferred[Run] = Deferred()

        async def flaky(pool: Any, lag_s: float, maxSteps: int) -> Run:
            calls.append(lag_s)
            if len(calls) == 1:
                raise RuntimeError("boom")
            run = await rollUp(pool, lag_s, maxSteps)
            done.callback(run)
            return run

        self.patch(historyService, "rollUp", flaky)
        service = HistoryService(self.pool, clock, interval_s=30, lag_s=5)
        await service.start()
        self.assertEqual((service.loop.runs, service.loop.failures), (1, 1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        clock.advance(30)
        run = await done
        await service.stop()  # once the run under way has finished
        self.assertEqual(run.attempts, 7)
        self.assertEqual((service.stats.runs, service.stats.attempts), (1, 7))
        self.assertEqual(calls, [5, 5])
        await self.assertFigures()

    async def test_refused(self) -> None:
        """
        A bad by or time is a 400 naming it; since not before until, or
        more than 366 days before it, a 422 naming since.
        """
        for query, status, field in [
            ("by=agent", 400, "by"),
            ("by=", 400, "by"),
            ("since=yesterday", 400, "since"),
            ("until=2026-03-10T10:00:00", 400, "until"),
            ("until=12", 400, "until"),
            ("since=2026-03-10T10:00:00Z&until=2026-03-10T10:00:00Z", 422, "since"),
            ("since=2026-03-11T00:00:00Z&until=2026-03-10T00:00:00Z", 422, "since"),
            ("since=2025-03-10T00:00:00Z&until=2026-03-11T00:00:01Z", 422, "since"),
            ("since=a&since=b", 400, "since"),
        ]:
            reply = await self.api.call("GET", f"/api/v1/history?{query}")
            self.assertEqual(reply.code, status, (query, reply.body))
            self.assertEqual(reply.json()["details"]["field"], field, query)
        await self.history("since=2025-03-10T00:00:00Z&until=2026-03-11T00:00:00Z")  # 366 days
        self.assertEqual((await self.api.call("GET", "/api/v1/history", role="")).code, 401)
        self.assertEqual((await self.api.call("GET", "/api/v1/history", role="agent")).code, 403)
        self.assertEqual((await self.api.call("GET", "/api/v1/history", role="viewer")).code, 200)

    async def test_defaults(self) -> None:
        """
        Until now, since seven days before; another zone is the same instant.
        """
        document = await self.history("")
        until = datetime.fromisoformat(document["until"].replace("Z", "+00:00"))
        since = datetime.fromisoformat(document["since"].replace("Z", "+00:00"))
        self.assertLess(abs(until - datetime.now(UTC)), timedelta(seconds=10))
        self.assertEqual(until - since, timedelta(days=7))
        self.assertEqual((document["items"], document["totals"]), ([], []))
        self.assertIsNone(document["rolled_to"])
        east = await self.history("until=2026-03-10T17:00:00%2B05:30")
        self.assertEqual(east["until"], "2026-03-10T11:30:00.000Z")
        self.assertEqual(east["since"], "2026-03-03T11:30:00.000Z")

    async def test_metrics(self) -> None:
        """
        Each project's totals on /metrics, read in the background: a scrape
        is answered from the last figures and starts a read when they are
        older than 30 s.
        """
        await self.work.run()
        await rollUp(self.pool)
        clock = Clock()
        metrics = HistoryMetrics(self.pool, clock)
        self.api.api.history = metrics
        first = await self.api.call("GET", "/metrics", role="viewer")
        self.assertEqual(first.code, 200)
        self.assertNotIn(b'masterd_history_tasks_total{project="shot010"', first.body)
        assert metrics._reading is not None
        await metrics._reading
        body = (await self.api.call("GET", "/metrics", role="viewer")).body.decode()
        for line in (
            'masterd_history_tasks_total{project="shot010",state="done"} 2.0',
            'masterd_history_tasks_total{project="shot010",state="failed"} 1.0',
            'masterd_history_tasks_total{project="shot020",state="done"} 2.0',
            'masterd_history_attempts_total{project="shot020"} 3.0',
            'masterd_history_core_hours_total{project="shot020"} 1.0',
            'masterd_history_wall_hours_total{project="shot020"} 1.0',
        ):
            self.assertIn(line, body)
        self.assertIn("# TYPE masterd_history_core_hours_total counter", body)
        # Fresh figures: no read until they are 30 s old.
        reading = metrics._reading
        metrics.figures()
        self.assertIs(metrics._reading, reading)
        clock.advance(30)
        metrics.figures()
        self.assertIsNot(metrics._reading, reading)
        await metrics._reading

    def test_boundedProjects(self) -> None:
        """
        Past MAX_PROJECTS, the least busy projects are summed under "".
        """
        totals = [ProjectTotals(f"p{n}", n, 0, n, float(n), 0.0) for n in range(1, 6)]
        self.assertEqual(bounded(totals, 10), totals)
        kept = bounded(totals, 2)
        self.assertEqual([t.project for t in kept], ["", "p4", "p5"])
        self.assertEqual((kept[0].attempts, kept[0].cpu_s), (6, 6.0))

    async def test_openAPI(self) -> None:
        document: dict[str, Any] = await self.api.ok("GET", "/api/v1/openapi.json")
        operation = document["paths"]["/api/v1/history"]["get"]
        self.assertEqual(operation["x-masterd-role"], "viewer")
        names = {p["name"] for p in operation["parameters"]}
        self.assertEqual(names, {"by", "since", "until"})
