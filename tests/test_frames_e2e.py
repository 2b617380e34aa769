"""
Frame-by-frame dependencies end to end, with real processes: a master on a
real PostgreSQL and reference agents running real commands. Three jobs of a
render layer and a comp layer over frames 1-14, with render chunks of 1, 3
and 5 against comp chunks of 3, 5 and 1: from the attempt times the
database recorded, each comp task starts only after every render task
covering one of its frames is done, while other render tasks still run.
The commands check it too: a render task writes a file per frame, and a
comp task fails if a file of one of its frames is missing.
"""

from __future__ import annotations

import time
from typing import Any

from ._postgres import freshDatabase
from .test_cluster_e2e import ClusterBase, report
from .test_e2e import AgentProcess
from .test_limits_cluster import query

FRAMES = "1-14"
#: (render chunk, comp chunk): each size on each side; the last chunks of
#: 14 frames are short, so that a comp task waits for 1 to 3 render tasks.
CASES = [(1, 3), (3, 5), (5, 1)]
#: 12 slots: the three render layers take at most 6 of them.
AGENTS, SLOTS = 3, 4


def shotJob(out: str, render: int, comp: int) -> dict[str, Any]:
    frames = "$(seq {start} {end})"
    return {
        "title": f"render {render} comp {comp}",
        "layers": [
            # A render task takes 0.1 s to 0.4 s by its first frame, so
            # that they finish out of order; at most 2 at once, so that
            # comp tasks find free agents while render tasks still run.
            {"name": "render", "frames": FRAMES, "chunk": render, "max_running": 2,
             "command": ["sh", "-c", f"sleep 0.$(( {{start}} % 4 + 1 ));"
                         f" for f in {frames}; do touch {out}/$f; done"]},
            {"name": "comp", "frames": FRAMES, "chunk": comp,
             "depends_on": [{"layer": "render", "mode": "frame"}],
             "command": ["sh", "-c", f"for f in {frames}; do test -e {out}/$f || exit 3;"
                         " done; sleep 0.1"]},
        ],
    }  # fmt: skip


class FrameByFrameTests(ClusterBase):
    timeout = 180

    async def test_compWaitsForItsFrames(self) -> None:
        began = time.monotonic()
        dsn = await freshDatabase(self)
        await self.startMasters(dsn, ["m"])
        base = self.url("m")
        for i in range(AGENTS):
            agent = AgentProcess(self.directory / "agents", f"agent{i}", base, SLOTS)
            self.addCleanup(agent.stop)
            self.agents.append(agent)
        await self.waitFor(
            lambda: self.call(base, "GET", "/api/v1/agents?state=idle"),
            lambda r: r[0] == 200 and len(r[1]["items"]) == AGENTS,
        )
        setup = time.monotonic() - began
        jobs = []
        for render, comp in CASES:
            out = self.directory / f"out-{render}-{comp}"
            out.mkdir()
            code, job = await self.call(base, "POST", "/api/v1/jobs",
                                        shotJob(str(out), render, comp))  # fmt: skip
            self.assertEqual(code, 201, job)
            self.assertEqual([x["name"] for x in job["layers"]], ["render", "comp"])
            jobs.append(job["id"])
        submitted = time.monotonic()
        for jobID in jobs:
            await self.waitFor(lambda j=jobID: self.job(base, j), lambda d: d["state"] == "done",
                               timeout=120, interval=0.5)  # fmt: skip
        took = time.monotonic() - submitted

        figures: dict[str, Any] = {"setup_s": round(setup, 1), "jobs_s": round(took, 1)}
        for (render, comp), jobID in zip(CASES, jobs, strict=True):
            rows = query(
                dsn,
                "SELECT t.id, l.name, t.frames, a.state, extract(epoch FROM a.started_at),"
                " extract(epoch FROM a.finished_at) FROM task_attempts a JOIN tasks t"
                " ON t.id = a.task_id JOIN layers l ON l.id = t.layer_id WHERE a.job_id = %s",
                (jobID,),
            )
            # Every attempt done at the first go: no comp task found a
            # render file missing.
            self.assertEqual({r[3] for r in rows}, {"done"}, rows)
            renders = [r for r in rows if r[1] == "render"]
            comps = [r for r in rows if r[1] == "comp"]
            self.assertEqual(len(renders), -(-14 // render))
            self.assertEqual(len(comps), -(-14 // comp))
            self.assertEqual(len({r[0] for r in rows}), len(rows))
            waits = []
            concurrent = 0
            for _, _, frames, _, started, _ in comps:
                covering = [r for r in renders if set(r[2]) & set(frames)]
                waits.append(len(covering))
                self.assertTrue(covering)
                # Every render task covering one of its frames was done
                # before it started.
                late = [r for r in covering if not r[5] <= started]
                self.assertEqual(late, [], (frames, started))
                # Render tasks still running when it started (assigned
                # before it, or by the same claim).
                if any(r[4] <= started < r[5] for r in renders if r not in covering):
                    concurrent += 1
            self.assertGreater(concurrent, 0, (render, comp, rows))
            # Frame by frame, not the whole layer: some comp task started
            # before the last render task finished.
            self.assertLess(min(c[4] for c in comps), max(r[5] for r in renders))
            figures[f"render {render} comp {comp}"] = {
                "render_tasks_per_comp": sorted(set(waits)),
                "comp_tasks_started_while_others_render": f"{concurrent}/{len(comps)}",
            }
        report(figures, self.directory)
