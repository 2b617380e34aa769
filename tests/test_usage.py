"""
Per-attempt usage (issue 17; docs/jobs.md, "Usage"): a final report's
C{usage} is kept on its attempt, shown in the attempt's document, and summed
in its job's and layers' documents (core-hours, peaks, mean and p95 task
time, and when attempts passed the memory their layer asks for); a bad
usage is refused naming its field.
"""

from __future__ import annotations

from typing import Any

from masterd_client._commands import job_details, job_usage_text
from twisted.trial.unittest import SynchronousTestCase

from masterd.client import Client, Job
from masterd.jobs import lifecycle

from .test_client_layers import layeredJobDoc
from .test_talkback import AGENT, Base, ack, update


def usage(**given: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"wall_s": 10.0, "cpu_user_s": 30.0, "cpu_system_s": 6.0,
                             "peak_rss_kb": 2 * 1024 * 1024, "gpu_memory_mb": None}  # fmt: skip
    found.update(given)
    return found


class UsageTests(Base):
    async def assignJob(self, **body: Any) -> list[lifecycle.Assignment]:
        job = await self.api.submit(**body)
        rows = await self.api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],)
        )
        return await self.api.pool.transaction(
            lambda txn: lifecycle.assign(txn, AGENT, [r[0] for r in rows])
        )

    async def test_stored(self) -> None:
        """
        What a done or failed report says its attempt used is on the
        attempt, and in the job's and its layer's totals; a report without
        usage leaves its attempt without.
        """
        await self.setUpTalkback()
        connection, transport = await self.joined()
        tasks = await self.assignJob(frames="1-4", max_retries=0)
        transport.take()
        a, b, c, d = tasks
        await self.say(connection, update(a, "done", exit_code=0, usage=usage()))
        await self.say(connection, update(b, "done", exit_code=0,
                                          usage=usage(wall_s=30.0, peak_rss_kb=4 * 1024 * 1024,
                                                      gpu_memory_mb=1500)))  # fmt: skip
        await self.say(connection, update(c, "failed", exit_code=1, message="boom",
                                          usage=usage(wall_s=2.0, cpu_user_s=1.0,
                                                      cpu_system_s=0.0)))  # fmt: skip
        await self.say(connection, update(d, "done", exit_code=0))
        self.assertEqual([m["type"] for m in transport.take()], ["ack"] * 4)
        [attempt] = (await self.api.ok("GET", f"/api/v1/tasks/{b.task_id}/attempts"))["items"]
        self.assertEqual(attempt["usage"], {"wall_s": 30.0, "cpu_user_s": 30.0,
                                            "cpu_system_s": 6.0, "peak_rss_mb": 4096.0,
                                            "gpu_memory_mb": 1500})  # fmt: skip
        [none] = (await self.api.ok("GET", f"/api/v1/tasks/{d.task_id}/attempts"))["items"]
        self.assertIsNone(none["usage"])
        job = await self.api.ok("GET", f"/api/v1/jobs/{a.job_id}")
        total = job["usage"]
        self.assertEqual(total["attempts"], 3)
        self.assertAlmostEqual(total["core_hours"], (36 + 36 + 1) / 3600, places=6)
        self.assertAlmostEqual(total["wall_hours"], 42 / 3600, places=6)
        self.assertEqual((total["peak_rss_mb"], total["gpu_memory_mb"]), (4096.0, 1500))
        # Task time is the done attempts': 10 s and 30 s.
        self.assertEqual(total["task_s_mean"], 20.0)
        self.assertEqual(total["task_s_p95"], 29.0)
        [layer] = job["layers"]
        self.assertEqual(layer["usage"]["attempts"], 3)
        # The layer asks for no memory: none is exceeded.
        self.assertIsNone(total["ram_exceeded"])
        self.assertIsNone(layer["usage"]["ram_exceeded"])
        await self.say(connection, update(a, "done", exit_code=0))  # a repeat changes nothing
        transport.take()
        listed = await self.api.ok("GET", "/api/v1/jobs")
        self.assertIsNone(listed["items"][0]["usage"])

    async def test_ramExceeded(self) -> None:
        """
        A layer whose attempts peaked above its requirements.ram_mb says so.
        """
        await self.setUpTalkback()
        connection, transport = await self.joined()
        tasks = await self.assignJob(frames="1-3", requirements={"ram_mb": 3000})
        transport.take()
        for a, peak in zip(tasks, (2048, 4096, 5000), strict=True):
            await self.say(connection, update(a, "done", exit_code=0,
                                              usage=usage(peak_rss_kb=peak * 1024)))  # fmt: skip
        transport.take()
        job = await self.api.ok("GET", f"/api/v1/jobs/{tasks[0].job_id}")
        sentence = job["layers"][0]["usage"]["ram_exceeded"]
        self.assertIn("2 of 3 attempts peaked above the 3000 MB", sentence)
        self.assertIn("requirements.ram_mb", sentence)

    async def test_refused(self) -> None:
        """
        A usage that breaks its rules is an error naming the field, and the
        report is not applied.
        """
        await self.setUpTalkback()
        connection, transport = await self.joined()
        [a] = await self.assign()
        transport.take()
        for bad, field in [
            (usage(wall_s=-1), "usage.wall_s"),
            (usage(cpu_user_s=1e30), "usage.cpu_user_s"),
            (usage(peak_rss_kb=2**70), "usage.peak_rss_kb"),
            (usage(gpu_memory_mb="lots"), "usage.gpu_memory_mb"),
            ({"cpu_user_s": 1.0}, "usage.wall_s"),
            ("a lot", "usage"),
        ]:
            await self.say(connection, update(a, "done", exit_code=0, usage=bad))
            [error] = transport.take()
            self.assertEqual((error["type"], error["field"]), ("error", field), bad)
        nan = (f'{{"type": "task_update", "task_id": {a.task_id}, "attempt": {a.attempt},'
               ' "state": "done", "usage": {"wall_s": NaN}}')  # fmt: skip
        await self.say(connection, nan)
        [error] = transport.take()
        self.assertEqual(error["type"], "error")
        [(state,)] = await self.api.pool.query(
            "SELECT state FROM tasks WHERE id = %s", (a.task_id,)
        )
        self.assertEqual(state, "assigned")
        await self.say(connection, update(a, "done", exit_code=0, usage=usage()))
        self.assertEqual(transport.take(), [ack(a, "done")])


class ShownTests(SynchronousTestCase):
    def test_masterctlJob(self) -> None:
        """
        masterctl job shows the job's usage, each layer's, and a warning for
        a layer whose attempts passed the memory it asks for.
        """
        document = layeredJobDoc()
        totals = {"attempts": 40, "core_hours": 1.25, "wall_hours": 0.5, "peak_rss_mb": 4096.0,
                  "peak_rss_p95_mb": 3072.0, "gpu_memory_mb": None, "task_s_mean": 125.0,
                  "task_s_p95": 190.0, "ram_exceeded": None}  # fmt: skip
        document["usage"] = totals
        document["layers"][0]["usage"] = dict(
            totals, ram_exceeded="3 of 40 attempts peaked above the 2048 MB the layer asks for"
        )
        text = job_details(Job(Client("http://127.0.0.1:1", None)._transport, document))
        self.assertIn(
            "1.25 core-hours, peak 4.0 GiB (p95 3.0 GiB), tasks 2m05s mean, 3m10s p95, 40 attempts",
            text,
        )
        self.assertIn("usage by layer:", text)
        self.assertIn(
            f"warning: layer {document['layers'][0]['name']}: 3 of 40 attempts peaked", text
        )
        self.assertIsNone(job_usage_text(None))
