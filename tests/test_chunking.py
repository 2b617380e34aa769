"""
Adaptive chunk sizing (issue 16; docs/jobs.md, "Adaptive chunks"): an
OpenJD CHUNK[INT] parameter with a target runtime gets its chunks resized
as the scheduler claims them, from the runtimes of the layer's finished
chunks; over a real database, through the real claim.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from masterd.jobs import lifecycle
from masterd.scheduler.chunking import MAX_VALUES, chunkSize, chunkValue
from masterd.scheduler.claims import claimAll
from masterd.scheduler.service import loadSlotsMany

from .test_openjd_intake import space, step, template
from .test_talkback import AGENT
from .test_talkback import Base as TalkbackBase

#: Two agents, as the claim of a farm would see them.
OTHER = "6f1c0000-0000-4000-8000-0000000000c2"


def chunked(frames: str, count: int, target: int | None, contiguous: bool = True) -> Any:
    chunks: dict[str, Any] = {
        "defaultTaskCount": count,
        "rangeConstraint": "CONTIGUOUS" if contiguous else "NONCONTIGUOUS",
    }
    if target is not None:
        chunks["targetRuntimeSeconds"] = target
    return {"name": "Frame", "type": "CHUNK[INT]", "range": frames, "chunks": chunks}


class RuleTests(SynchronousTestCase):
    def test_size(self) -> None:
        """
        The target over the median time a value took, rounded, within
        [1, MAX_VALUES]; None before any chunk finished.
        """
        self.assertIsNone(chunkSize(60, []))
        self.assertEqual(chunkSize(60, [2.0]), 30)
        # The median: one slow outlier does not move it.
        self.assertEqual(chunkSize(60, [2.0, 2.0, 500.0]), 30)
        self.assertEqual(chunkSize(10, [4.0]), 2)  # 2.5, rounded to even
        self.assertEqual(chunkSize(1, [1000.0]), 1)
        self.assertEqual(chunkSize(60, [0.0]), MAX_VALUES)
        self.assertEqual(chunkSize(10**9, [0.001]), MAX_VALUES)

    def test_value(self) -> None:
        """
        A contiguous chunk is written a-b (a-a for one value), as openjd-model
        writes it; another as runs joined by commas.
        """
        self.assertEqual(chunkValue([5, 6, 7], True), "5-7")
        self.assertEqual(chunkValue([7], True), "7-7")
        self.assertEqual(chunkValue([1, 2, 3, 5, 8, 9], False), "1-3,5,8-9")
        self.assertEqual(chunkValue([4], False), "4")


class ClaimTests(TalkbackBase):
    async def setUp(self) -> None:  # type: ignore[override]
        await self.setUpTalkback()
        for agentID in (AGENT, OTHER):
            message = self.helloOf(agentID)
            message["agent"]["max_tasks"] = 1
            connection, transport = self.connect()
            await self.say(connection, message)
            self.welcomed(agentID, transport)

    async def submit(
        self, *definitions: dict[str, Any], combination: str | None = None, **fields: Any
    ) -> int:
        tpl = template(
            step("render", parameterSpace=space(*definitions, combination=combination)),
            extensions=["TASK_CHUNKING"],
        )
        body = {"openjd": {"template": tpl}, **fields}
        reply = await self.api.call("POST", "/api/v1/jobs", body)
        self.assertEqual(reply.code, 201, reply.body)
        return int(reply.json()["id"])

    async def claim(self, *agents: str) -> list[lifecycle.Assignment]:
        async def run(txn: Any) -> list[lifecycle.Assignment]:
            slots = await loadSlotsMany(txn, list(agents or (AGENT,)))
            claims = await claimAll(txn, [s.capacity() for s in slots if s is not None])
            return [a for found in claims.assigned.values() for a in found]

        return await self.api.pool.transaction(run)

    async def finish(self, a: lifecycle.Assignment, started: float, took: float) -> None:
        async def run(txn: Any) -> None:
            await lifecycle.running(txn, a.agent_id, a.task_id, a.attempt, at=started)
            await lifecycle.done(txn, a.agent_id, a.task_id, a.attempt, 0, at=started + took)

        await self.api.pool.transaction(run)

    async def tasks(self, jobID: int) -> list[tuple[int, str, str, list[int]]]:
        """
        The job's tasks in index order: (index, state, chunk value, frames).
        """
        rows = await self.api.pool.query(
            "SELECT index, state, parameters->'Frame'->>'value', frames FROM tasks"
            " WHERE job_id = %s ORDER BY index",
            (jobID,),
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def assertCounts(self, jobID: int) -> None:
        """
        The job's and its layer's counts agree with its tasks after resizing.
        """
        [(total, queued, ltotal, lqueued, n, q)] = await self.api.pool.query(
            "SELECT j.n_total, j.n_queued, l.n_total, l.n_queued, (SELECT count(*) FROM tasks"
            " WHERE job_id = j.id), (SELECT count(*) FROM tasks WHERE job_id = j.id"
            " AND state = 'queued') FROM jobs j JOIN layers l ON l.job_id = j.id WHERE j.id = %s",
            (jobID,),
        )
        self.assertEqual((total, queued, ltotal, lqueued), (n, q, n, q))
        grid = await self.api.ok("GET", f"/api/v1/jobs/{jobID}/states")
        self.assertEqual(len(grid["states"]), n)
        self.assertEqual(sum(run[2] for run in grid["ids"]), n)

    async def test_indexes(self) -> None:
        """
        An adaptive layer's tasks are numbered by the offset of their first
        value; a layer without a target keeps one number a task.
        """
        jobID = await self.submit(chunked("1-10", 4, 60))
        self.assertEqual([t[0] for t in await self.tasks(jobID)], [0, 4, 7])
        fixed = await self.submit(chunked("1-10", 4, None))
        self.assertEqual([t[0] for t in await self.tasks(fixed)], [0, 1, 2])

    async def test_grow(self) -> None:
        """
        Chunks that finish far below the target take the values of the
        queued chunks after them, up to the target, within their own
        combination of the other parameters; the first claim, before any
        chunk finished, hands out the default size.
        """
        jobID = await self.submit(
            {"name": "Pass", "type": "STRING", "range": ["beauty", "depth"]},
            chunked("1-20", 4, 20),
            combination="Pass * Frame",
        )
        [first] = await self.claim()
        self.assertEqual(first.frames, [1, 2, 3, 4])
        await self.finish(first, 1000.0, 8.0)  # 2 s a value: 10 values make 20 s
        [second] = await self.claim()
        self.assertEqual(second.frames, list(range(5, 15)))
        assert second.openjd is not None
        self.assertEqual(second.openjd.parameters["Frame"].value, "5-14")
        self.assertEqual(second.openjd.parameters["Pass"].value, "beauty")
        tasks = await self.tasks(jobID)
        self.assertEqual(
            [(t[0], t[2]) for t in tasks],
            [(0, "1-4"), (4, "5-14"), (14, "15-16"), (16, "17-20"),
             (20, "1-4"), (24, "5-8"), (28, "9-12"), (32, "13-16"), (36, "17-20")],
        )  # fmt: skip
        await self.assertCounts(jobID)
        # Finished at the target, the next takes what is left of beauty and
        # stops where depth begins.
        await self.finish(second, 1010.0, 20.0)
        [third] = await self.claim()
        self.assertEqual(third.frames, list(range(15, 21)))
        self.assertEqual(
            [t[2] for t in await self.tasks(jobID)][:4], ["1-4", "5-14", "15-20", "1-4"]
        )
        await self.assertCounts(jobID)

    async def test_shrink(self) -> None:
        """
        A chunk that would take far longer than the target keeps its first
        values and leaves the rest to a new queued task, numbered by its
        first value, that the next claim hands out (resized again).
        """
        jobID = await self.submit(chunked("1-30", 10, 10))
        [first] = await self.claim()
        self.assertEqual(first.frames, list(range(1, 11)))
        await self.finish(first, 1000.0, 50.0)  # 5 s a value: 2 values make 10 s
        [second] = await self.claim()
        self.assertEqual(second.frames, [11, 12])
        assert second.openjd is not None
        self.assertEqual(second.openjd.parameters["Frame"].value, "11-12")
        self.assertEqual(
            await self.tasks(jobID),
            [(0, "done", "1-10", list(range(1, 11))), (10, "assigned", "11-12", [11, 12]),
             (12, "queued", "13-20", list(range(13, 21))),
             (20, "queued", "21-30", list(range(21, 31)))],
        )  # fmt: skip
        await self.assertCounts(jobID)
        [third] = await self.claim(OTHER)
        self.assertEqual(third.frames, [13, 14])
        await self.assertCounts(jobID)

    async def test_noncontiguous(self) -> None:
        """
        NONCONTIGUOUS chunks grow across the gaps of the range; CONTIGUOUS
        ones stop at a gap.
        """
        sparse = await self.submit(chunked("1-4,10-13,20-23", 4, 40, contiguous=False))
        [first] = await self.claim()
        await self.finish(first, 1000.0, 4.0)  # 1 s a value: 40 values
        [second] = await self.claim()
        self.assertEqual(second.frames, [10, 11, 12, 13, 20, 21, 22, 23])
        assert second.openjd is not None
        self.assertEqual(second.openjd.parameters["Frame"].value, "10-13,20-23")
        await self.assertCounts(sparse)
        await self.finish(second, 1010.0, 8.0)
        dense = await self.submit(chunked("1-4,10-13,20-23", 4, 40))
        [first] = await self.claim()
        self.assertEqual(first.job_id, dense)
        await self.finish(first, 1020.0, 4.0)
        [second] = await self.claim()
        self.assertEqual(second.frames, [10, 11, 12, 13])
        await self.assertCounts(dense)

    async def test_untouched(self) -> None:
        """
        A retried chunk keeps its values; chunks claimed together are not
        taken from one another; a layer without a target is never resized.
        """
        jobID = await self.submit(chunked("1-40", 4, 40), max_retries=2)
        [first] = await self.claim()
        await self.finish(first, 1000.0, 4.0)  # 1 s a value: 40 values
        # Two agents claim together: each gets its own chunk, and neither
        # takes the other's values (the second grows into what follows it).
        both = await self.claim(AGENT, OTHER)
        self.assertEqual(sorted((a.frames[0], a.frames[-1]) for a in both), [(5, 8), (9, 40)])
        await self.assertCounts(jobID)
        # A chunk that failed and is queued again keeps its values.
        failedOne = min(both, key=lambda a: a.frames[0])

        async def fail(txn: Any) -> None:
            await lifecycle.failed(
                txn, failedOne.agent_id, failedOne.task_id, failedOne.attempt, 1, "boom"
            )

        await self.api.pool.transaction(fail)
        [(state,)] = await self.api.pool.query(
            "SELECT state FROM tasks WHERE id = %s", (failedOne.task_id,)
        )
        self.assertEqual(state, "queued")
        [again] = await self.claim(failedOne.agent_id)
        self.assertEqual((again.task_id, again.attempt), (failedOne.task_id, 2))
        self.assertEqual(again.frames, failedOne.frames)
        fixed = await self.submit(chunked("1-8", 2, None))
        rows = await self.tasks(fixed)
        self.assertEqual([t[2] for t in rows], ["1-2", "3-4", "5-6", "7-8"])
