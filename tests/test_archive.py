"""
A finished job's archive (issue 17; docs/archive.md): read back equal to
what the API says of the job, its tasks and attempts (with usage) and logs;
written atomically by the master where retention.archive_dir is set; and
masterctl archive / masterctl job --archived.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread

from masterd.client.cli import main as cliMain

from ._api import TOKENS
from .test_retention import RanJobs
from .test_talkback import AGENT, update
from .test_usage import usage


class ArchiveTests(RanJobs):
    async def everything(self, jobID: int) -> dict[str, Any]:
        """
        What the API says of the job, page by page.
        """
        tasks: list[Any] = []
        page = await self.api.ok("GET", f"/api/v1/jobs/{jobID}/tasks?limit=500")
        while True:
            tasks.extend(page["items"])
            if not page["next"]:
                break
            page = await self.api.ok("GET", page["next"])
        attempts: list[Any] = []
        for t in tasks:
            attempts.extend((await self.api.ok("GET", f"{t['href']}/attempts"))["items"])
        return {"job": await self.api.ok("GET", f"/api/v1/jobs/{jobID}"), "tasks": tasks,
                "attempts": attempts}  # fmt: skip

    async def test_readBackEqual(self) -> None:
        """
        The archive's job, tasks and attempts are the API's; its logs the
        attempts' logs; 409 for an unfinished job, 404 for none.
        """
        await self.setUpTalkback()
        jobID, assigned = await self.ranJob(frames="1-4")
        connection, transport = self._agent
        archive = await self.api.ok("GET", f"/api/v1/jobs/{jobID}/archive?logs=true")
        self.assertEqual(archive["format"], "masterd-archive/1")
        expected = await self.everything(jobID)
        for key in ("job", "tasks", "attempts"):
            self.assertEqual(archive[key], expected[key], key)
        for a in assigned:
            self.assertEqual(archive["logs"][f"{a.task_id}/{a.attempt}"], await self.log(a.task_id))
        plain = await self.api.ok("GET", f"/api/v1/jobs/{jobID}/archive")
        self.assertIsNone(plain["logs"])
        # An unfinished job is a 409, no job a 404.
        other = await self.api.submit(frames="1")
        self.assertEqual((await self.api.call("GET", f"/api/v1/jobs/{other['id']}/archive")).code,
                         409)  # fmt: skip
        self.assertEqual((await self.api.call("GET", "/api/v1/jobs/999999/archive")).code, 404)
        del connection, transport

    async def test_usageAndPages(self) -> None:
        """
        A job of 5,000 tasks (more than a page) with usage on its attempts
        archives whole.
        """
        await self.setUpTalkback()
        connection, transport = await self.joined()
        job = await self.api.submit(frames="1-5000", max_retries=0)
        first = (await self.api.ok("GET", f"/api/v1/jobs/{job['id']}/tasks?limit=1"))["items"][0]
        from masterd.jobs import lifecycle

        [a] = await self.api.pool.transaction(
            lambda txn: lifecycle.assign(txn, AGENT, [first["id"]])
        )
        transport.take()
        await self.say(connection, update(a, "done", exit_code=0, usage=usage()))
        await self.api.ok("POST", f"/api/v1/jobs/{job['id']}/cancel")
        began = time.perf_counter()
        archive = await self.api.ok("GET", f"/api/v1/jobs/{job['id']}/archive")
        print(f"\n5,000 tasks archived in {time.perf_counter() - began:.2f} s")
        self.assertEqual(len(archive["tasks"]), 5000)
        self.assertEqual([t["index"] for t in archive["tasks"]], list(range(5000)))
        self.assertEqual(len(archive["attempts"]), 1)
        self.assertEqual(archive["attempts"][0]["usage"]["wall_s"], 10.0)
        self.assertEqual(archive["job"]["usage"]["attempts"], 1)

    async def test_written(self) -> None:
        """
        POST writes job-ID.json to archive_dir, atomically (no temporary file
        left); 409 without a directory; viewers may not.
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1-2")
        path = f"/api/v1/jobs/{jobID}/archive"
        reply = await self.api.call("POST", path)
        self.assertEqual(reply.code, 409, reply.body)
        self.assertIn(b"retention.archive_dir", reply.body)
        directory = Path(self.mktemp())
        self.api.api.archiveDir = directory
        written = await self.api.ok("POST", path)
        self.assertEqual(written["path"], str(directory / f"job-{jobID}.json"))
        self.assertEqual([p.name for p in directory.iterdir()], [f"job-{jobID}.json"])
        document = json.loads((directory / f"job-{jobID}.json").read_text("utf-8"))
        self.assertEqual(written["bytes"], (directory / f"job-{jobID}.json").stat().st_size)
        self.assertEqual(document["job"], await self.api.ok("GET", f"/api/v1/jobs/{jobID}"))
        viewer = await self.api.call("POST", path, role="viewer")
        self.assertEqual(viewer.code, 403)

    async def test_masterctl(self) -> None:
        """
        masterctl archive JOB -o FILE writes the archive; masterctl job
        --archived FILE shows it as masterctl job shows the live job.
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1-2")
        out = Path(self.mktemp())
        base = ["--url", self.api.base, "--token", TOKENS["admin"]]

        def run(*argv: str) -> tuple[int, str, str]:
            import contextlib
            import io

            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    code = cliMain([*base, *argv])
                except SystemExit as e:
                    code = int(e.code or 0)
            return code, stdout.getvalue(), stderr.getvalue()

        code, _, err = await deferToThread(run, "archive", str(jobID), "-o", str(out))
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out.read_text("utf-8"))["job"]["id"], jobID)
        _, live, _ = await deferToThread(run, "job", str(jobID))
        code, shown, err = await deferToThread(run, "job", "--archived", str(out))
        self.assertEqual(code, 0, err)
        self.assertTrue(shown.startswith(live.rstrip("\n")), (live, shown))
        self.assertIn("archived", shown)
        code, _, err = await deferToThread(run, "job", "--archived", str(out) + ".missing")
        self.assertNotEqual(code, 0)
        self.assertIn(".missing", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
