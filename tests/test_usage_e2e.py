"""
Usage end to end (issue 17): a real reference agent measures a task that
allocates a known amount of memory and burns a known amount of CPU, and the
master keeps it on the attempt and sums it in the job's document, within
10 % of what the task did.
"""

from __future__ import annotations

import sys

from twisted.trial.unittest import TestCase

from . import test_openjd_e2e

# Its master and reference agent, not its tests (trial would run them again).
_E2E = test_openjd_e2e.OpenJDEndToEndTests

#: Allocates 300 MiB (touched, so that it is resident), then burns 1.5 s of
#: CPU time, as measured by the process itself.
TASK = (
    "import time\n"
    "block = bytearray(300 * 1024 * 1024)\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"
    "start = time.process_time()\n"
    "while time.process_time() - start < 1.5: pass\n"
    "print('burnt', time.process_time())\n"
)


class UsageEndToEndTests(TestCase):
    timeout = 240

    setUp = _E2E.setUp
    stopAgent = _E2E.stopAgent
    call = _E2E.call
    waitFor = _E2E.waitFor

    async def test_measured(self) -> None:
        """
        CPU within 10 % (and the interpreter's start), peak memory within
        10 %, wall time at least the burn; the job's totals are the attempt's.
        """
        code, job = await self.call("POST", "/api/v1/jobs", {
            "title": "usage", "command": [sys.executable, "-c", TASK], "frames": "1"})  # fmt: skip
        self.assertEqual(code, 201, job)
        await self.waitFor(lambda: self.call("GET", job["href"]),
                           lambda r: r[1]["state"] == "done", timeout=90)  # fmt: skip
        _, tasks = await self.call("GET", f"{job['href']}/tasks")
        _, attempts = await self.call("GET", f"/api/v1/tasks/{tasks['items'][0]['id']}/attempts")
        usage = attempts["items"][0]["usage"]
        self.assertIsNotNone(usage, attempts)
        cpu = usage["cpu_user_s"] + usage["cpu_system_s"]
        # 1.5 s burnt, plus the interpreter's start and the allocation: the
        # process's own figure for all of it, from its log (on a loaded
        # machine its start and its page faults cost more than a fixed
        # allowance), and a little for its exit.
        taskID = tasks["items"][0]["id"]
        code, text = await self.call("GET", f"/api/v1/tasks/{taskID}/log")
        self.assertEqual(code, 200, text)
        lines = text.decode("utf-8").splitlines() if isinstance(text, bytes) else []
        [burnt] = [float(line.split()[1]) for line in lines if line.startswith("burnt ")]
        self.assertGreaterEqual(cpu, 1.5)
        self.assertGreaterEqual(cpu, burnt * 0.9)
        self.assertLessEqual(cpu, burnt * 1.1 + 0.1)
        # 300 MiB and the interpreter's own (about 10 MiB).
        self.assertGreaterEqual(usage["peak_rss_mb"], 300)
        self.assertLessEqual(usage["peak_rss_mb"], 300 * 1.1)
        self.assertGreaterEqual(usage["wall_s"], 1.5)
        _, document = await self.call("GET", job["href"])
        self.assertAlmostEqual(document["usage"]["core_hours"], cpu / 3600, places=5)
        self.assertEqual(document["usage"]["peak_rss_mb"], usage["peak_rss_mb"])


del _E2E
