"""
A finished job's archive (issue 17; docs/archive.md): read back equal to
what the API says of the job, its tasks and attempts (with usage) and logs;
written atomically by the master where retention.archive_dir is set,
streamed page by page to the same bytes, and nothing left of a write that
fails; and masterctl archive / masterctl job --archived.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from masterd.client.cli import main as cliMain
from masterd.errors import Conflict
from masterd.jobs.logs import pack, packAttempts
from masterd.retention import archive
from masterd.retention.archive import ArchiveDocument, readArchive, writeArchive

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


class StreamTests(RanJobs):
    """
    writeArchive streams the job page by page: its file is, byte for byte,
    the document readArchive reads in one piece.
    """

    async def mixedJob(self) -> tuple[int, dict[str, list[str]]]:
        """
        A finished job of 7 tasks of every kind of log, and the logs that
        its archive must hold: one failed and six done attempts of three
        lines; two of them compressed; a second attempt of one task whose
        log is two rows of awkward lines; an attempt with no log; and one
        whose rows are empty (read from there, though it has a compressed
        row too: an attempt's rows come first).
        """
        await self.setUpTalkback()
        jobID, assigned = await self.ranJob(frames="1-7")
        key = [f"{a.task_id}/{a.attempt}" for a in assigned]
        logs = {f"{a.task_id}/{a.attempt}": [f"line {n} of {a.task_id}" for n in range(3)]
                for a in assigned}  # fmt: skip
        packed = [(a.task_id, a.attempt) for a in assigned[1:3]]
        await self.api.pool.transaction(lambda txn: packAttempts(txn, packed))
        self.assertEqual(await self.api.count("task_logs_packed"), 2)
        retried = assigned[3].task_id
        await self.sql(
            "INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state, started_at,"
            " finished_at, exit_code) SELECT task_id, 2, job_id, agent_id, 'done', started_at,"
            " finished_at, 0 FROM task_attempts WHERE task_id = %s AND attempt = 1",
            (retried,),
        )
        awkward = [
            ['"quoted" \\ back\tslash', "\u00fcn\u00efcode \u2713 \u2028 \x01"],
            ["", "last"],
        ]
        for first, lines in zip((0, 2), awkward, strict=True):
            await self.sql(
                "INSERT INTO task_logs (task_id, attempt, first_line, lines)"
                " VALUES (%s, 2, %s, %s)",
                (retried, first, lines),
            )
        logs[f"{retried}/2"] = awkward[0] + awkward[1]
        a = assigned[4]
        await self.sql("DELETE FROM task_logs WHERE task_id = %s", (a.task_id,))
        del logs[key[4]]
        a = assigned[5]
        await self.sql("UPDATE task_logs SET lines = '{}' WHERE task_id = %s", (a.task_id,))
        await self.sql(
            "INSERT INTO task_logs_packed (task_id, attempt, line_count, data)"
            " VALUES (%s, %s, 1, %s)",
            (a.task_id, a.attempt, pack(["not this"])),
        )
        del logs[key[5]]
        return jobID, logs

    def small(self) -> None:
        """
        Pages of 3 tasks, logs read 2 attempts at a time, the file written
        64 bytes at a time: every page boundary and every write is crossed.
        """
        self.patch(archive, "PAGE", 3)
        self.patch(archive, "LOG_ATTEMPTS", 2)
        self.patch(archive, "FLUSH", 64)

    async def streamed(self, jobID: int, logs: bool) -> tuple[bytes, ArchiveDocument]:
        """
        The file writeArchive writes, checked to be alone in its directory,
        of the size it says; and readArchive's document.
        """
        directory = Path(self.mktemp())
        path, size = await writeArchive(self.api.pool, jobID, directory, logs, self.api.jobs)
        self.assertEqual(path, directory / f"job-{jobID}.json")
        self.assertEqual([p.name for p in directory.iterdir()], [path.name])
        data = path.read_bytes()
        self.assertEqual(size, len(data))
        return data, await readArchive(self.api.pool, self.api.jobs, jobID, logs)

    def assertSameDocument(self, data: bytes, expected: ArchiveDocument) -> ArchiveDocument:
        # archived_at is each snapshot's now(): the rest is the same, to the
        # byte (field order, escapes and all).
        document = msgspec.json.decode(data, type=ArchiveDocument)
        expected = msgspec.structs.replace(expected, archived_at=document.archived_at)
        self.assertEqual(document, expected)
        self.assertEqual(data, msgspec.json.encode(expected))
        return document

    async def test_streamedWithLogs(self) -> None:
        """
        With logs, over several pages: readArchive's document, with every
        kind of log as attemptLog reads it.
        """
        jobID, logs = await self.mixedJob()
        self.small()
        data, expected = await self.streamed(jobID, True)
        document = self.assertSameDocument(data, expected)
        self.assertEqual(document.logs, logs)
        self.assertEqual(len(document.tasks), 7)
        self.assertEqual(len(document.attempts), 8)
        self.assertEqual(json.loads(data)["logs"], logs)

    async def test_streamedWithoutLogs(self) -> None:
        """
        Without logs: the same, with logs null.
        """
        jobID, _ = await self.mixedJob()
        self.small()
        data, expected = await self.streamed(jobID, False)
        self.assertIsNone(self.assertSameDocument(data, expected).logs)
        self.assertIsNone(json.loads(data)["logs"])

    async def test_streamedDefaults(self) -> None:
        """
        With the real page and write sizes (the job one page), the same.
        """
        jobID, _ = await self.mixedJob()
        for logs in (True, False):
            self.assertSameDocument(*await self.streamed(jobID, logs))

    def test_frame(self) -> None:
        """
        The stream writes the document's frame key by key: these, in this
        order.
        """
        self.assertEqual(
            ArchiveDocument.__struct_fields__,
            ("format", "archived_at", "job", "tasks", "attempts", "logs"),
        )

    async def assertNothingLeft(self, jobID: int, failure: type[BaseException]) -> Path:
        directory = Path(self.mktemp())
        await self.assertFailure(
            Deferred.fromCoroutine(
                writeArchive(self.api.pool, jobID, directory, True, self.api.jobs)
            ),
            failure,
        )
        return directory

    async def test_writeFails(self) -> None:
        """
        A write that fails midway leaves neither the temporary file nor a
        target; an archive already there stays as it was.
        """
        jobID, _ = await self.mixedJob()
        self.small()
        calls: list[int] = []
        append = archive._append

        def failing(out: Any, data: bytearray) -> None:
            calls.append(len(data))
            if len(calls) == 3:
                raise OSError("disk full")
            append(out, data)

        self.patch(archive, "_append", failing)
        directory = await self.assertNothingLeft(jobID, OSError)
        self.assertEqual(len(calls), 3)
        self.assertEqual(list(directory.iterdir()), [])
        # Over an older archive: kept, whole.
        (directory / f"job-{jobID}.json").write_bytes(b"older")
        calls.clear()
        await self.assertFailure(
            Deferred.fromCoroutine(
                writeArchive(self.api.pool, jobID, directory, True, self.api.jobs)
            ),
            OSError,
        )
        self.assertEqual([p.name for p in directory.iterdir()], [f"job-{jobID}.json"])
        self.assertEqual((directory / f"job-{jobID}.json").read_bytes(), b"older")

    async def test_readFails(self) -> None:
        """
        A failure in the transaction midway (an attempt that cannot be
        read, past the first pages written) leaves nothing either; the
        connection goes back to the pool, usable.
        """
        jobID, _ = await self.mixedJob()
        self.small()
        self.patch(archive, "FLUSH", 1)
        seen: list[object] = []
        original = archive.attemptDocument

        def failing(row: tuple[Any, ...]) -> Any:
            seen.append(row)
            if len(seen) == 5:
                raise ValueError("bad row")
            return original(row)

        self.patch(archive, "attemptDocument", failing)
        directory = await self.assertNothingLeft(jobID, ValueError)
        self.assertEqual(list(directory.iterdir()), [])
        self.assertEqual(len(seen), 5)
        self.patch(archive, "attemptDocument", original)
        await self.streamed(jobID, False)

    async def test_unfinished(self) -> None:
        """
        An unfinished job is a Conflict, and no file (nor directory).
        """
        await self.setUpTalkback()
        job = await self.api.submit(frames="1-2")
        directory = await self.assertNothingLeft(job["id"], Conflict)
        self.assertFalse(directory.exists())
