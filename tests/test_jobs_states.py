"""
Job and task state changes: every transition, every refusal, the events for
running tasks, dependency release, and counts that always equal a recount.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.trial.unittest import TestCase

from masterd.events import TaskCanceled, WorkAvailable
from masterd.jobs import TaskState, jobState, lifecycle

from ._api import API, startAPI
from .test_jobs_api import AGENT, OTHER, assignAll, finish

#: The requirements beyond the minimums, at their defaults.
NO_EXTRA: dict[str, Any] = {
    "max_cpus": None,
    "max_ram_mb": None,
    "max_gpus": None,
    "os_family": [],
    "cpu_arch": [],
    "attributes": {},
    "amounts": {},
}


class Base(TestCase):
    timeout = 60

    async def setUpAPI(self) -> API:
        api = await startAPI(self)
        self.canceled: list[TaskCanceled] = []
        self.work: list[WorkAvailable] = []
        api.jobs._events.subscribe(TaskCanceled, self.canceled.append)
        api.jobs._events.subscribe(WorkAvailable, self.work.append)
        return api

    async def tasks(self, api: API, jobID: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await api.ok("GET", f"/api/v1/jobs/{jobID}/tasks"))["items"]
        return items

    async def states(self, api: API, jobID: int) -> list[str]:
        return [t["state"] for t in await self.tasks(api, jobID)]

    async def markRunning(self, api: API, a: lifecycle.Assignment, agent: str = AGENT) -> None:
        outcome = await api.pool.transaction(
            lambda txn: lifecycle.running(txn, agent, a.task_id, a.attempt)
        )
        self.assertIs(outcome, lifecycle.Outcome.applied)

    async def fail(self, api: API, a: lifecycle.Assignment, agent: str = AGENT) -> Any:
        return await api.pool.transaction(
            lambda txn: lifecycle.failed(txn, agent, a.task_id, a.attempt, 3, "boom")
        )


class LifecycleTests(Base):
    async def test_doneJob(self) -> None:
        api = await self.setUpAPI()
        job = await api.submit(frames="1-2")
        assignments = await assignAll(api, job["id"])
        doc = await api.ok("GET", job["href"])
        self.assertEqual((doc["state"], doc["tasks"]["assigned"]), ("running", 2))
        current = await api.ok("GET", f"/api/v1/assignments?agent={AGENT}")
        self.assertEqual([t["id"] for t in current["items"]], [a.task_id for a in assignments])
        self.assertEqual(current["items"][0]["agent"]["href"], f"/api/v1/agents/{AGENT}")
        await self.markRunning(api, assignments[0])
        await finish(api, assignments[0])
        await finish(api, assignments[1])  # done without a running report
        doc = await api.ok("GET", job["href"])
        self.assertEqual((doc["state"], doc["progress"], doc["tasks"]["done"]), ("done", 1.0, 2))
        self.assertTrue(doc["finished_at"].endswith("Z"))
        attempts = await api.ok("GET", f"/api/v1/tasks/{assignments[0].task_id}/attempts")
        [attempt] = attempts["items"]
        self.assertEqual(
            (attempt["attempt"], attempt["state"], attempt["exit_code"]), (1, "done", 0)
        )
        self.assertEqual(attempt["agent"]["id"], AGENT)
        self.assertEqual(await api.ok("GET", "/api/v1/assignments"), {"items": [], "next": None})

    async def test_retriesThenFails(self) -> None:
        """
        A failed attempt goes back to queued with the attempt number raised
        while failures stay within max_retries; then the task fails.
        """
        api = await self.setUpAPI()
        job = await api.submit(frames="1", max_retries=1)
        [a] = await assignAll(api, job["id"])
        await self.fail(api, a)
        task = (await self.tasks(api, job["id"]))[0]
        self.assertEqual((task["state"], task["attempt"], task["agent"]), ("queued", 1, None))
        [b] = await assignAll(api, job["id"], OTHER)
        self.assertEqual(b.attempt, 2)
        await self.fail(api, b, OTHER)
        task = (await self.tasks(api, job["id"]))[0]
        self.assertEqual((task["state"], task["exit_code"], task["error"]), ("failed", 3, "boom"))
        doc = await api.ok("GET", job["href"])
        self.assertEqual((doc["state"], doc["tasks"]["failed"]), ("failed", 1))
        attempts = (await api.ok("GET", task["attempts"]))["items"]
        self.assertEqual([x["state"] for x in attempts], ["failed", "failed"])

    async def test_fencing(self) -> None:
        """
        A report for an attempt that is not the task's current one on this
        agent changes nothing.
        """
        api = await self.setUpAPI()
        job = await api.submit(frames="1")
        [a] = await assignAll(api, job["id"])
        requeued = await api.pool.transaction(
            lambda txn: lifecycle.requeue(txn, AGENT, a.task_id, a.attempt, "lost", "gone")
        )
        self.assertIs(requeued, lifecycle.Outcome.applied)
        [b] = await assignAll(api, job["id"], OTHER)
        for report in (
            lambda txn: lifecycle.done(txn, AGENT, a.task_id, a.attempt),
            lambda txn: lifecycle.failed(txn, AGENT, a.task_id, a.attempt, 1, "late"),
            lambda txn: lifecycle.running(txn, AGENT, a.task_id, a.attempt),
            lambda txn: lifecycle.done(txn, AGENT, b.task_id, b.attempt),  # wrong agent
            lambda txn: lifecycle.done(txn, OTHER, b.task_id, b.attempt + 1),  # wrong attempt
        ):
            self.assertIs(await api.pool.transaction(report), lifecycle.Outcome.stale)
        task = (await self.tasks(api, job["id"]))[0]
        self.assertEqual((task["state"], task["attempt"], task["agent"]["id"]),
                         ("assigned", 2, OTHER))  # fmt: skip
        attempts = (await api.ok("GET", task["attempts"]))["items"]
        self.assertEqual([x["state"] for x in attempts], ["lost", "assigned"])

    async def test_rejectedIsNoFailure(self) -> None:
        api = await self.setUpAPI()
        job = await api.submit(frames="1", max_retries=0)
        [a] = await assignAll(api, job["id"])
        await api.pool.transaction(
            lambda txn: lifecycle.requeue(txn, AGENT, a.task_id, a.attempt, "rejected", "busy")
        )
        [b] = await assignAll(api, job["id"])
        await finish(api, b)
        self.assertEqual((await api.ok("GET", job["href"]))["state"], "done")


class ModifyTests(Base):
    async def test_cancelJob(self) -> None:
        api = await self.setUpAPI()
        job = await api.submit(frames="1-4")
        tasks = await self.tasks(api, job["id"])
        # Task 0 running, 1 done, 2 assigned, 3 still queued.
        a, b, c = await api.pool.transaction(
            lambda txn: lifecycle.assign(txn, AGENT, [t["id"] for t in tasks[:3]])
        )
        await self.markRunning(api, a)
        await finish(api, b)
        doc = await api.ok("POST", f"{job['href']}/cancel")
        self.assertEqual(doc["state"], "canceled")
        self.assertEqual(
            await self.states(api, job["id"]), ["canceled", "done", "canceled", "canceled"]
        )
        # Only the agents of the running and assigned tasks are told.
        self.assertEqual(
            sorted(self.canceled, key=lambda e: e.task_id),
            [TaskCanceled(x.task_id, 1, AGENT, "job canceled") for x in (a, c)],
        )
        attempts = (await api.ok("GET", f"/api/v1/tasks/{a.task_id}/attempts"))["items"]
        self.assertEqual((attempts[0]["state"], attempts[0]["error"]), ("canceled", "job canceled"))
        # A late report of the canceled attempt is fenced off.
        self.assertIs(await self.fail(api, a), lifecycle.Outcome.stale)
        again = await api.ok("POST", f"{job['href']}/cancel")
        self.assertEqual(again["state"], "canceled")

    async def test_cancelFinishedRefused(self) -> None:
        api = await self.setUpAPI()
        job = await api.submit(frames="1")
        [a] = await assignAll(api, job["id"])
        await finish(api, a)
        reply = await api.call("POST", f"{job['href']}/cancel")
        self.assertEqual((reply.code, reply.json()["error"]), (409, "conflict"))
        self.assertEqual(reply.json()["details"], {"state": "done"})

    async def test_resumeFinishedRefused(self) -> None:
        """
        Resuming a finished job is a mistake (nothing of it would run): a
        409 with its state, and nothing changes. Pausing it is harmless.
        """
        api = await self.setUpAPI()
        job = await api.submit(frames="1-2")
        [a, b] = await assignAll(api, job["id"])
        await api.ok("PATCH", job["href"], {"paused": True})
        await finish(api, a)
        await api.ok("POST", f"/api/v1/tasks/{b.task_id}/cancel")
        before = await api.ok("GET", job["href"])
        self.assertEqual((before["state"], before["paused"]), ("canceled", True))
        for body in ({"paused": False}, {"paused": False, "priority": 1}):
            reply = await api.call("PATCH", job["href"], body)
            self.assertEqual((reply.code, reply.json()["error"]), (409, "conflict"))
            self.assertEqual(reply.json()["details"], {"state": "canceled"})
            self.assertEqual(
                reply.json()["message"],
                f"job {job['id']} is canceled; only unfinished jobs can be resumed",
            )
        self.assertEqual(await api.ok("GET", job["href"]), before)
        self.assertEqual((await api.ok("PATCH", job["href"], {"priority": 1}))["priority"], 1)
        # A retry brings its tasks back, paused still; then it resumes.
        retried = await api.ok("POST", f"{job['href']}/retry")
        self.assertEqual(retried["state"], "paused")
        self.assertEqual((await api.ok("PATCH", job["href"], {"paused": False}))["state"], "queued")

    async def test_pause(self) -> None:
        """
        A plain pause stops new assignments and lets running tasks finish;
        with stop_running the running ones are stopped and requeued.
        """
        api = await self.setUpAPI()
        job = await api.submit(frames="1-3")
        tasks = await self.tasks(api, job["id"])
        [a] = await api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, [tasks[0]["id"]]))
        await self.markRunning(api, a)
        doc = await api.ok("PATCH", job["href"], {"paused": True})
        self.assertEqual(
            (doc["state"], doc["paused"], doc["tasks"]["running"]), ("paused", True, 1)
        )
        self.assertEqual(self.canceled, [])
        doc = await api.ok("PATCH", job["href"], {"paused": True, "stop_running": True})
        self.assertEqual((doc["tasks"]["running"], doc["tasks"]["queued"]), (0, 3))
        self.assertEqual(self.canceled, [TaskCanceled(a.task_id, 1, AGENT, "job paused")])
        attempts = (await api.ok("GET", f"/api/v1/tasks/{a.task_id}/attempts"))["items"]
        self.assertEqual(attempts[0]["state"], "canceled")
        del self.work[:]
        doc = await api.ok("PATCH", job["href"], {"paused": False})
        self.assertEqual(doc["state"], "queued")
        self.assertEqual(self.work, [WorkAvailable((job["id"],))])

    async def test_patch(self) -> None:
        api = await self.setUpAPI()
        job = await api.submit()
        doc = await api.ok(
            "PATCH",
            job["href"],
            {"priority": 90, "title": "renamed", "max_retries": 5,
             "requirements": {"gpus": 1, "tags": ["gpu"]}},
        )  # fmt: skip
        self.assertEqual((doc["priority"], doc["title"], doc["max_retries"]), (90, "renamed", 5))
        self.assertEqual(
            doc["requirements"],
            {"cpus": 0, "ram_mb": 0, "gpus": 1, "gpu_memory_mb": 0, "tags": ["gpu"], **NO_EXTRA},
        )
        # Requirements merge: the ones named change, the others stay.
        doc = await api.ok("PATCH", job["href"], {"requirements": {"cpus": 4}})
        self.assertEqual(
            doc["requirements"],
            {"cpus": 4, "ram_mb": 0, "gpus": 1, "gpu_memory_mb": 0, "tags": ["gpu"], **NO_EXTRA},
        )
        doc = await api.ok("PATCH", job["href"], {"requirements": {"tags": [], "gpus": 0}})
        self.assertEqual(
            doc["requirements"],
            {"cpus": 4, "ram_mb": 0, "gpus": 0, "gpu_memory_mb": 0, "tags": [], **NO_EXTRA},
        )
        for body, field in [
            ({"requirements": None}, "requirements"),
            ({"requirements": {"ram_mb": "lots"}}, "requirements.ram_mb"),
            ({"priority": 200}, "priority"),
            ({"owner": "me"}, "owner"),
            ({"stop_running": True, "paused": False}, "stop_running"),
            ({"paused": None}, "paused"),
            ({"title": ""}, "title"),
        ]:
            reply = await api.call("PATCH", job["href"], body)
            self.assertEqual(reply.code, 400, body)
            self.assertEqual(reply.json()["details"]["field"], field, body)
        reply = await api.call("PATCH", "/api/v1/jobs/777777", {"priority": 1})
        self.assertEqual(reply.code, 404)
        # An empty PATCH changes nothing (not even updated_at).
        before = await api.ok("GET", job["href"])
        self.assertEqual(await api.ok("PATCH", job["href"], {}), before)

    async def test_retryJob(self) -> None:
        api = await self.setUpAPI()
        job = await api.submit(frames="1-3", max_retries=0)
        a, b, c = await assignAll(api, job["id"])
        await self.fail(api, a)
        await finish(api, b)
        await api.ok("POST", f"/api/v1/tasks/{c.task_id}/cancel")
        self.assertEqual((await api.ok("GET", job["href"]))["state"], "failed")
        reply = await api.call("POST", f"/api/v1/tasks/{b.task_id}/retry")
        self.assertEqual((reply.code, reply.json()["details"]), (409, {"state": "done"}))
        doc = await api.ok("POST", f"{job['href']}/retry")
        self.assertEqual(doc["state"], "queued")
        self.assertEqual(await self.states(api, job["id"]), ["queued", "done", "queued"])
        [again, _] = await assignAll(api, job["id"])
        self.assertEqual(again.attempt, 2)
        reply = await api.call("POST", f"{job['href']}/retry")
        self.assertEqual(reply.code, 409)

    async def test_taskCancelAndRetry(self) -> None:
        api = await self.setUpAPI()
        job = await api.submit(frames="1-2")
        [first, second] = await self.tasks(api, job["id"])
        doc = await api.ok("POST", f"{first['href']}/cancel")
        self.assertEqual(doc["state"], "canceled")
        self.assertEqual(self.canceled, [])  # it was not running anywhere
        reply = await api.call("POST", f"{first['href']}/cancel")
        self.assertEqual((reply.code, reply.json()["details"]), (409, {"state": "canceled"}))
        reply = await api.call("POST", f"{second['href']}/retry")
        self.assertEqual((reply.code, reply.json()["details"]), (409, {"state": "queued"}))
        doc = await api.ok("POST", f"{first['href']}/retry")
        self.assertEqual(doc["state"], "queued")
        [_, b] = await assignAll(api, job["id"])
        await api.ok("POST", f"/api/v1/tasks/{b.task_id}/cancel")
        self.assertEqual(self.canceled, [TaskCanceled(b.task_id, 1, AGENT, "task canceled")])
        reply = await api.call("POST", "/api/v1/tasks/987654/cancel")
        self.assertEqual(reply.code, 404)

    async def test_delete(self) -> None:
        api = await self.setUpAPI()
        job = await api.submit(frames="1")
        reply = await api.call("DELETE", job["href"])
        self.assertEqual((reply.code, reply.json()["details"]), (409, {"state": "queued"}))
        await api.ok("POST", f"{job['href']}/cancel")
        reply = await api.call("DELETE", job["href"])
        self.assertEqual((reply.code, reply.body), (204, b""))
        self.assertEqual((await api.call("GET", job["href"])).code, 404)
        self.assertEqual(await api.count("tasks"), 0)
        self.assertEqual((await api.call("DELETE", job["href"])).code, 404)


class DependencyTests(Base):
    async def test_release(self) -> None:
        """
        A child's tasks wait until every parent is done, then are queued.
        """
        api = await self.setUpAPI()
        p1 = await api.submit(frames="1")
        p2 = await api.submit(frames="1")
        child = await api.submit(frames="1-2", depends_on=[p1["id"], p2["id"]])
        self.assertEqual(child["state"], "waiting")
        self.assertEqual([p["id"] for p in child["parents"]], sorted([p1["id"], p2["id"]]))
        self.assertEqual((await api.ok("GET", p1["href"]))["children"],
                         [{"id": child["id"], "href": child["href"]}])  # fmt: skip
        self.assertNotIn(WorkAvailable((child["id"],)), self.work)
        [a] = await assignAll(api, p1["id"])
        await finish(api, a)
        self.assertEqual(await self.states(api, child["id"]), ["waiting", "waiting"])
        [b] = await assignAll(api, p2["id"])
        await finish(api, b)
        self.assertEqual(await self.states(api, child["id"]), ["queued", "queued"])
        self.assertEqual((await api.ok("GET", child["href"]))["state"], "queued")
        # A job submitted after its parents are done starts queued.
        late = await api.submit(depends_on=[p1["id"]])
        self.assertEqual(late["state"], "queued")

    async def test_chain(self) -> None:
        api = await self.setUpAPI()
        a = await api.submit(frames="1")
        b = await api.submit(frames="1", depends_on=[a["id"]])
        c = await api.submit(frames="1", depends_on=[b["id"]])
        for job in (a, b, c):
            self.assertEqual((await api.ok("GET", job["href"]))["tasks"]["queued"], 1)
            [x] = await assignAll(api, job["id"])
            await finish(api, x)
        self.assertEqual((await api.ok("GET", c["href"]))["state"], "done")

    async def test_deletedParentReleases(self) -> None:
        api = await self.setUpAPI()
        parent = await api.submit(frames="1")
        child = await api.submit(frames="1", depends_on=[parent["id"]])
        await api.ok("POST", f"{parent['href']}/cancel")
        self.assertEqual(await self.states(api, child["id"]), ["waiting"])
        await api.call("DELETE", parent["href"])
        self.assertEqual(await self.states(api, child["id"]), ["queued"])


ACTIONS = [
    "assign", "run", "done", "fail", "requeue", "cancelTask", "retryTask", "cancelJob",
    "retryJob", "pause", "resume",
]  # fmt: skip


def _report(verb: str, agent: str, a: lifecycle.Assignment) -> Any:
    if verb == "run":
        return lambda txn: lifecycle.running(txn, agent, a.task_id, a.attempt)
    if verb == "done":
        return lambda txn: lifecycle.done(txn, agent, a.task_id, a.attempt)
    if verb == "fail":
        return lambda txn: lifecycle.failed(txn, agent, a.task_id, a.attempt, 1, "x")
    return lambda txn: lifecycle.requeue(txn, agent, a.task_id, a.attempt, "lost", "")


class CountTests(Base):
    timeout = 120

    async def test_countsEqualRecount(self) -> None:
        """
        After a random sequence of every kind of change, each job's counts
        and state equal what a recount of its tasks says.
        """
        api = await self.setUpAPI()
        rng = random.Random(20261128)
        jobs = [(await api.submit(frames=f"1-{rng.randint(1, 6)}", max_retries=rng.randint(0, 2)))
                for _ in range(5)]  # fmt: skip
        jobs.append(await api.submit(frames="1-3", depends_on=[jobs[0]["id"]]))
        live: list[tuple[lifecycle.Assignment, str]] = []
        for _ in range(150):
            action = rng.choice(ACTIONS)
            job = rng.choice(jobs)
            if action == "assign":
                agent = rng.choice([AGENT, OTHER])
                live += [(a, agent) for a in await assignAll(api, job["id"], agent)]
            elif action in ("run", "done", "fail", "requeue") and live:
                a, agent = live.pop(rng.randrange(len(live)))
                await api.pool.transaction(_report(action, agent, a))
                if action == "run":
                    live.append((a, agent))
            elif action in ("cancelTask", "retryTask"):
                tasks = await self.tasks(api, job["id"])
                task = rng.choice(tasks)
                verb = "cancel" if action == "cancelTask" else "retry"
                reply = await api.call("POST", f"{task['href']}/{verb}")
                self.assertIn(reply.code, (200, 409))
            elif action in ("cancelJob", "retryJob"):
                verb = "cancel" if action == "cancelJob" else "retry"
                reply = await api.call("POST", f"{job['href']}/{verb}")
                self.assertIn(reply.code, (200, 409))
            elif action in ("pause", "resume"):
                body: dict[str, Any] = {"paused": action == "pause"}
                if action == "pause" and rng.random() < 0.5:
                    body["stop_running"] = True
                reply = await api.call("PATCH", job["href"], body)
                if reply.code == 409:
                    # Only a finished job refuses, and only to be resumed.
                    self.assertEqual(action, "resume")
                    self.assertIn(reply.json()["details"]["state"], ("done", "failed", "canceled"))
                else:
                    self.assertEqual(reply.code, 200)
            await self.assertCountsTrue(api)

    async def assertCountsTrue(self, api: API) -> None:
        counted = ", ".join(
            f"count(t.id) FILTER (WHERE t.state = '{state}')" for state in list(TaskState)
        )
        rows = await api.pool.query(
            "SELECT j.id, j.state, j.n_total, j.n_waiting, j.n_queued, j.n_assigned,"
            " j.n_running, j.n_done, j.n_failed, j.n_canceled, j.paused, j.canceled,"
            f" count(t.id), {counted}"
            " FROM jobs j LEFT JOIN tasks t ON t.job_id = j.id GROUP BY j.id ORDER BY j.id"
        )
        for row in rows:
            self.assertEqual(row[2:10], row[12:20], f"job {row[0]} counts drifted")
            counts = dict(zip(list(TaskState), row[13:20], strict=True))
            expected = jobState(canceled=row[11], paused=row[10], counts=counts)
            self.assertEqual(row[1], expected.value, f"job {row[0]}")
        # Every active task has exactly one open attempt, and no other does.
        bad = await api.pool.query(
            "SELECT t.id FROM tasks t LEFT JOIN task_attempts a ON a.task_id = t.id"
            " AND a.finished_at IS NULL"
            " GROUP BY t.id, t.state"
            " HAVING count(a.task_id) <> (CASE WHEN t.state IN ('assigned', 'running')"
            " THEN 1 ELSE 0 END)"
        )
        self.assertEqual(bad, [])
