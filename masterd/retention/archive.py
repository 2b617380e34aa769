"""
A finished job as one JSON document (issue 17; docs/archive.md): the job,
its tasks and their attempts exactly as the API gives them (with their
usage), and optionally their logs. Retention writes it to
C{retention.archive_dir} before it deletes a job; C{GET
/api/v1/jobs/{id}/archive} and C{masterctl archive} give it on demand.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
from twisted.internet.threads import deferToThread

from masterd._time import isotime
from masterd.db import Pool, Transaction
from masterd.errors import Conflict
from masterd.jobs import JobStore
from masterd.jobs.logs import attemptLog, unpack
from masterd.jobs.models import AttemptDocument, JobDocument, TaskDocument
from masterd.jobs.views import ATTEMPT_COLUMNS, TASK_COLUMNS, attemptDocument, taskDocument
from masterd.schema import Document, Model

#: What the document says it is; a reader checks it.
FORMAT = "masterd-archive/1"
#: Tasks (and their attempts) read per statement: a job of 100,000 tasks is
#: read in pages, not as one result.
PAGE = 2000
#: Attempts whose logs L{writeArchive} reads in one statement (two, with
#: the compressed ones): what it holds of the logs at once. One or two
#: statements an attempt, as L{attemptLog} reads them, would be 200,000
#: round trips for a job of 100,000 tasks.
LOG_ATTEMPTS = 200
#: Bytes L{writeArchive} gathers before they go to the file, in one write
#: in a thread: few trips to the thread pool, and little held.
FLUSH = 1 << 20

_FINISHED = ("done", "failed", "canceled")


class ArchiveDocument(Document):
    """
    A finished job, whole: its document, its tasks and their attempts as
    the API gives them, and (when asked) each attempt's log by
    "<task id>/<attempt>".
    """

    format: str
    archived_at: str
    job: JobDocument
    tasks: list[TaskDocument]
    attempts: list[AttemptDocument]
    logs: dict[str, list[str]] | None = None


class ArchiveQuery(Model):
    #: With every attempt's log.
    logs: bool = False


async def _finishedJob(txn: Transaction, jobs: JobStore, jobID: int) -> JobDocument:
    job = await jobs._getJob(txn, jobID)
    if job.state not in _FINISHED:
        raise Conflict(
            f"job {jobID} is {job.state}; only finished jobs can be archived", state=job.state
        )
    return job


async def _taskPages(
    txn: Transaction, jobID: int, columns: str
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """
    A job's tasks, PAGE at a time in index order, as rows of C{columns}
    (of C{tasks t}) after the task's index. Every walk over a job goes by
    these pages, so that each finds its attempts in the same order.
    """
    after = -1
    while True:
        rows = await txn.query(
            f"SELECT t.index, {columns} FROM tasks t WHERE t.job_id = %s AND t.index > %s"
            " ORDER BY t.index LIMIT %s",
            (jobID, after, PAGE),
        )
        if not rows:
            return
        yield rows
        after = rows[-1][0]
        if len(rows) < PAGE:
            return


async def _attemptRows(txn: Transaction, columns: str, taskIDs: list[int]) -> list[tuple[Any, ...]]:
    """
    The attempts of a page's tasks, in task and attempt order.
    """
    return await txn.query(
        f"SELECT {columns} FROM task_attempts WHERE task_id = ANY (%s) ORDER BY task_id, attempt",
        (taskIDs,),
    )


async def archiveDocument(
    txn: Transaction, jobs: JobStore, jobID: int, logs: bool
) -> ArchiveDocument:
    """
    The archive of a finished job, read in C{txn} (one snapshot: a REPEATABLE
    READ transaction gives a consistent document). All of it in memory:
    L{writeArchive} streams the same document to a file instead.

    @raise Conflict: for a job that is not finished.
    @raise masterd.errors.NoSuchResource: for no such job.
    """
    job = await _finishedJob(txn, jobs, jobID)
    [(now,)] = await txn.query("SELECT now()")
    tasks: list[TaskDocument] = []
    attempts: list[AttemptDocument] = []
    texts: dict[str, list[str]] = {}
    async for rows in _taskPages(txn, jobID, TASK_COLUMNS):
        page = [taskDocument(r[1:]) for r in rows]
        tasks.extend(page)
        for row in await _attemptRows(txn, ATTEMPT_COLUMNS, [t.id for t in page]):
            attempt = attemptDocument(row)
            attempts.append(attempt)
            if logs:
                taskID = attempt.task.id
                lines = await attemptLog(txn, taskID, attempt.attempt)
                if lines:
                    texts[f"{taskID}/{attempt.attempt}"] = lines
    return ArchiveDocument(
        format=FORMAT,
        archived_at=isotime(now),
        job=job,
        tasks=tasks,
        attempts=attempts,
        logs=texts if logs else None,
    )


async def readArchive(pool: Pool, jobs: JobStore, jobID: int, logs: bool) -> ArchiveDocument:
    async def work(txn: Transaction) -> ArchiveDocument:
        await txn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return await archiveDocument(txn, jobs, jobID, logs)

    return await pool.transaction(work)


# -- writing: the same document, streamed ------------------------------------


async def _attemptLogs(
    txn: Transaction, keys: list[tuple[int, int]]
) -> list[tuple[tuple[int, int], list[str]]]:
    """
    The logs of the attempts C{keys} (task id, attempt), in their order, as
    L{attemptLog} reads each (its task_logs rows where it has any, else its
    compressed row), those with no lines left out, as archiveDocument
    leaves them out; in two statements for them all.
    """
    pairs = ([k[0] for k in keys], [k[1] for k in keys])
    found: dict[tuple[int, int], list[str]] = {}
    rows = await txn.query(
        "SELECT task_id, attempt, lines FROM task_logs"
        " WHERE (task_id, attempt) IN (SELECT * FROM unnest(%s::bigint[], %s::int[]))"
        " ORDER BY task_id, attempt, first_line",
        pairs,
    )
    for taskID, attempt, lines in rows:
        found.setdefault((taskID, attempt), []).extend(lines)
    # An attempt with rows in task_logs, even empty ones, is read from there
    # alone (attemptLog): only the others are looked for compressed.
    missing = [k for k in keys if k not in found]
    if missing:
        packed = await txn.query(
            "SELECT task_id, attempt, line_count, data FROM task_logs_packed"
            " WHERE (task_id, attempt) IN (SELECT * FROM unnest(%s::bigint[], %s::int[]))",
            ([k[0] for k in missing], [k[1] for k in missing]),
        )
        for taskID, attempt, count, data in packed:
            if count > 0:
                found[(taskID, attempt)] = unpack(bytes(data))
    return [(k, found[k]) for k in keys if found.get(k)]


def _append(out: BinaryIO, data: bytearray) -> None:
    out.write(data)


def _keep(out: BinaryIO, temporary: str, target: Path) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()
    os.replace(temporary, target)
    # The rename itself to disk too: retention deletes the job once this
    # returns, and a crash must not then lose the archive's name.
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _discard(out: BinaryIO | None, temporary: str) -> None:
    if out is not None:
        with suppress(OSError):
            out.close()
    with suppress(FileNotFoundError):
        os.unlink(temporary)


class _TemporaryArchive:
    """
    The temporary file in C{directory} that an archive is streamed to,
    renamed to job-ID.json once whole. The reactor encodes into a buffer;
    every FLUSH bytes of it go to the file in a thread, one write at a time,
    so that neither a big archive's bytes nor the disk's pace hold the
    reactor.
    """

    def __init__(self, directory: Path, jobID: int) -> None:
        self.directory = directory
        self.target = directory / f"job-{jobID}.json"
        self.size = 0
        self._prefix = f".job-{jobID}."
        self._out: BinaryIO | None = None
        self._temporary: str | None = None
        self._buffer = bytearray()
        self._encoder = msgspec.json.Encoder()

    async def open(self) -> None:
        def create() -> None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, self._temporary = tempfile.mkstemp(
                prefix=self._prefix, suffix=".tmp", dir=self.directory
            )
            self._out = os.fdopen(fd, "wb")

        await deferToThread(create)

    def add(self, data: bytes) -> None:
        self._buffer += data

    def encode(self, value: object) -> None:
        # Straight onto the buffer's end: no bytes object of its own.
        self._encoder.encode_into(value, self._buffer, -1)

    async def flush(self, everything: bool = False) -> None:
        if len(self._buffer) < (1 if everything else FLUSH):
            return
        assert self._out is not None
        data, self._buffer = self._buffer, bytearray()
        await deferToThread(_append, self._out, data)
        self.size += len(data)

    async def keep(self) -> Path:
        """
        The rest written, the file synced and renamed to job-ID.json.
        """
        await self.flush(everything=True)
        assert self._out is not None and self._temporary is not None
        await deferToThread(_keep, self._out, self._temporary, self.target)
        self._temporary = None
        return self.target

    async def discard(self) -> None:
        """
        The temporary file closed and gone, if there is one.
        """
        self._buffer = bytearray()
        if self._temporary is not None:
            temporary, self._temporary = self._temporary, None
            await deferToThread(_discard, self._out, temporary)


async def _stream(
    txn: Transaction, jobs: JobStore, jobID: int, logs: bool, out: _TemporaryArchive
) -> None:
    """
    Write C{jobID}'s archive to C{out} as archiveDocument reads it, page by
    page, holding no more than a page of it (and FLUSH bytes).

    The document has all tasks before any attempt, and all attempts before
    any log, so the stream walks the job's pages once for each, in one
    snapshot: the tasks, then the attempts, then (when asked) the logs.
    Spooling the attempts and logs to a second file in one walk instead
    would write the logs, the bulk of the file, twice and read them back
    once; the walks after the first only re-read task ids by the (job_id,
    index) key and attempts by theirs, each a page at a time, so memory
    stays bounded by a page (and LOG_ATTEMPTS attempts' logs) either way.
    """
    job = await _finishedJob(txn, jobs, jobID)
    [(now,)] = await txn.query("SELECT now()")
    # Only a finished job gets a file. The frame is written key by key in
    # the order msgspec encodes an ArchiveDocument's fields (a field added
    # there must be added here: tests/test_archive.py compares the bytes).
    await out.open()
    out.add(b'{"format":')
    out.encode(FORMAT)
    out.add(b',"archived_at":')
    out.encode(isotime(now))
    out.add(b',"job":')
    out.encode(job)
    out.add(b',"tasks":[')
    comma = b""
    async for rows in _taskPages(txn, jobID, TASK_COLUMNS):
        for row in rows:
            out.add(comma)
            out.encode(taskDocument(row[1:]))
            comma = b","
        await out.flush()
    out.add(b'],"attempts":[')
    comma = b""
    async for rows in _taskPages(txn, jobID, "t.id"):
        for row in await _attemptRows(txn, ATTEMPT_COLUMNS, [r[1] for r in rows]):
            out.add(comma)
            out.encode(attemptDocument(row))
            comma = b","
        await out.flush()
    if not logs:
        # As msgspec encodes logs=None (Document does not omit defaults).
        out.add(b'],"logs":null}')
        return
    out.add(b'],"logs":{')
    comma = b""
    async for rows in _taskPages(txn, jobID, "t.id"):
        found = await _attemptRows(txn, "task_id, attempt", [r[1] for r in rows])
        keys = [(taskID, attempt) for taskID, attempt in found]
        for start in range(0, len(keys), LOG_ATTEMPTS):
            for (taskID, attempt), lines in await _attemptLogs(
                txn, keys[start : start + LOG_ATTEMPTS]
            ):
                out.add(comma)
                out.encode(f"{taskID}/{attempt}")
                out.add(b":")
                out.encode(lines)
                comma = b","
            await out.flush()
    out.add(b"}}")


async def writeArchive(
    pool: Pool, jobID: int, directory: Path, logs: bool, jobs: JobStore | None = None
) -> tuple[Path, int]:
    """
    Write a finished job's archive to C{directory}/job-ID.json, atomically
    (a temporary file, fsync, rename; the temporary file removed on any
    failure), streamed as it is read, in one REPEATABLE READ snapshot: the
    file is the document L{readArchive} gives, but a job of 100,000 tasks
    never is in memory whole, and the file is written in a thread so that
    a big one does not hold the reactor. Returns its path and size.

    @raise Conflict: for a job that is not finished (and writes nothing).
    @raise masterd.errors.NoSuchResource: for no such job.
    """
    from masterd.events import EventBus

    store = jobs if jobs is not None else JobStore(pool, EventBus())
    out = _TemporaryArchive(directory, jobID)

    async def work(txn: Transaction) -> None:
        await txn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await _stream(txn, store, jobID, logs, out)

    try:
        # Not run again on a conflict: the archive has been written into.
        await pool.transaction(work, conflictRetries=0)
        # Renamed once the snapshot's transaction is over, whole.
        path = await out.keep()
    except BaseException:
        await out.discard()
        raise
    return path, out.size
