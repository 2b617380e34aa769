"""
Shares and caps with real processes: two masters on one real PostgreSQL,
40 simulated agents (tests/bench/scheduler_load.py, tasks held for a while).

 - Two projects of weights 1 and 3, each with equal jobs: once the farm is
   full, the running split is 10/30 (within 2), and within a project the
   jobs share equally.
 - max_running on jobs and layers: from the attempt times the database
   recorded, never more attempts at once than the cap, and the cap reached.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from .test_cluster_e2e import report
from .test_limits_cluster import SimulatedFarm, holders, maxOverlap, query


class ShareTests(SimulatedFarm):
    async def test_projectWeights(self) -> None:
        """
        Projects "hero" (weight 3) and "rnd" (weight 1), two equal jobs
        each, 40 agents: 30 and 10 run, 15 of each of hero's jobs and 5 of
        each of rnd's, within 2, sample after sample.
        """
        names = ["m1", "m2"]
        dsn = await self.startFarm(names, 20, hold=1.0)
        m1, m2 = names
        project = await self.ok(m1, "PUT", "/api/v1/projects/hero", {"weight": 3}, 201)
        self.assertEqual((project["weight"], project["active"]), (3, 0))
        await self.ok(m2, "PUT", "/api/v1/projects/rnd", {"weight": 2}, 201)
        changed = await self.ok(m2, "PUT", "/api/v1/projects/rnd", {"weight": 1}, 200)
        self.assertEqual(changed["weight"], 1)
        jobs: dict[int, str] = {}
        # rnd's jobs first: they fill the farm before hero's arrive, and
        # the split is reached as their tasks finish.
        for i, name in enumerate(["rnd", "rnd", "hero", "hero"]):
            job = await self.ok(names[i % 2], "POST", "/api/v1/jobs", {
                "title": f"{name} {i}", "command": ["true"], "frames": "1-400",
                "project": name})  # fmt: skip
            self.assertEqual(job["project"], name)
            jobs[job["id"]] = name

        async def api() -> dict[str, int]:
            code, page = await self.call(self.url(m2), "GET", "/api/v1/projects")
            if code != 200:
                return {}
            return {p["name"]: p["active"] for p in page["items"]}

        def running() -> tuple[dict[str, int], dict[int, int]]:
            # What each agent runs now: its newest attempt, if open. (The
            # jobs' counts can count a slot twice for a moment: a claim may
            # commit a slot's next task one batch before the report that
            # freed it.)
            rows = query(dsn, "SELECT j.project, j.id, count(*) FROM (SELECT DISTINCT ON"
                         " (agent_id) job_id, finished_at FROM task_attempts"
                         " ORDER BY agent_id, started_at DESC) x JOIN jobs j ON j.id = x.job_id"
                         " WHERE x.finished_at IS NULL GROUP BY 1, 2")  # fmt: skip
            projects: dict[str, int] = {"hero": 0, "rnd": 0}
            for name, _, n in rows:
                projects[name] += n
            return projects, {j: next((n for _, i, n in rows if i == j), 0) for j in jobs}

        await self.waitFor(api, lambda s: s.get("hero", 0) >= 28, timeout=30)
        # Every task there was then has finished (1.5 s at most): the
        # jobs of a project too have evened out.
        await deferLater(reactor, 1.5)
        shown = await self.ok(m1, "GET", "/api/v1/projects/hero")
        self.assertEqual((shown["weight"], shown["queued"] > 0), (3, True))
        samples: list[dict[str, int]] = []
        perJob: list[dict[int, int]] = []
        apiSamples: list[dict[str, int]] = []
        for _ in range(15):
            projects, byJob = running()
            samples.append(projects)
            perJob.append(byJob)
            apiSamples.append(await api())
            await deferLater(reactor, 0.3)
        report({"splits": [[s["hero"], s["rnd"]] for s in samples],
                "per_job": [list(r.values()) for r in perJob],
                "api_splits": [[s.get("hero"), s.get("rnd")] for s in apiSamples]},
               self.directory)  # fmt: skip
        for s in samples:
            # A slot between a done and its next assign is free a moment.
            self.assertGreaterEqual(s["hero"] + s["rnd"], 38, samples)
            self.assertLessEqual(abs(s["hero"] - 30), 2, samples)
            self.assertLessEqual(abs(s["rnd"] - 10), 2, samples)
        # Within a project, equal jobs share equally.
        for rows in perJob:
            for jobID, active in rows.items():
                expected = 15 if jobs[jobID] == "hero" else 5
                self.assertLessEqual(abs(active - expected), 2, perJob)
        self.assertOneAtATime()
        # Both masters' agents ran both projects' work.
        mixed = query(dsn, "SELECT j.project, g.master, count(*) FROM task_attempts a"
                      " JOIN jobs j ON j.id = a.job_id JOIN agents g ON g.id = a.agent_id"
                      " GROUP BY 1, 2")  # fmt: skip
        self.assertEqual(len(mixed), 4, mixed)
        for jobID in jobs:
            await self.ok(m1, "POST", f"/api/v1/jobs/{jobID}/cancel")


class CapTests(SimulatedFarm):
    async def test_maxRunning(self) -> None:
        """
        A job capped at 4; a job with a layer capped at 3 beside one not
        capped; a job capped at 5 of two layers capped at 3: on 40 agents
        through two masters, no cap is ever exceeded, each is reached, and
        every task completes.
        """
        names = ["m1", "m2"]
        began = time.monotonic()
        dsn = await self.startFarm(names, 20, hold=0.3)
        m1, m2 = names
        true = ["true"]
        bodies: list[dict[str, Any]] = [
            {"title": "job cap", "command": true, "frames": "1-40", "max_running": 4},
            {"title": "layer cap", "layers": [
                {"name": "a", "command": true, "frames": "1-30", "max_running": 3},
                {"name": "b", "command": true, "frames": "1-30"},
            ]},
            {"title": "both", "max_running": 5, "layers": [
                {"name": "x", "command": true, "frames": "1-25", "max_running": 3},
                {"name": "y", "command": true, "frames": "1-25", "max_running": 3},
            ]},
        ]  # fmt: skip
        ids = []
        for i, body in enumerate(bodies):
            ids.append((await self.ok(names[i % 2], "POST", "/api/v1/jobs", body, 201))["id"])
        submitted = time.monotonic()
        document = await self.job(self.url(m2), ids[2])
        self.assertEqual(document["max_running"], 5)
        self.assertEqual([layer["max_running"] for layer in document["layers"]], [3, 3])
        await self.allDone(m1, ids)
        took = time.monotonic() - submitted
        self.assertEveryTaskDoneOnce(ids)

        def overlap(where: str, *params: Any) -> int:
            return maxOverlap(holders(dsn, where, params))

        figures = {
            "job cap 4": overlap("a.job_id = %s", ids[0]),
            "layer a cap 3": overlap("a.job_id = %s AND l.name = 'a'", ids[1]),
            "layer b no cap": overlap("a.job_id = %s AND l.name = 'b'", ids[1]),
            "job cap 5": overlap("a.job_id = %s", ids[2]),
            "layer x cap 3": overlap("a.job_id = %s AND l.name = 'x'", ids[2]),
            "layer y cap 3": overlap("a.job_id = %s AND l.name = 'y'", ids[2]),
        }
        report({"max_overlap": figures, "setup_s": round(submitted - began, 1),
                "jobs_s": round(took, 1)}, self.directory)  # fmt: skip
        # Each cap is reached (40 agents wanted the work) and never exceeded.
        self.assertEqual(figures["job cap 4"], 4, figures)
        self.assertEqual(figures["layer a cap 3"], 3, figures)
        self.assertEqual(figures["job cap 5"], 5, figures)
        self.assertEqual(figures["layer x cap 3"], 3, figures)
        self.assertEqual(figures["layer y cap 3"], 3, figures)
        # A cap is its layer's: the other layer of the job ran wider.
        self.assertGreater(figures["layer b no cap"], 3, figures)
