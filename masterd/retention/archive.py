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
from pathlib import Path

import msgspec
from twisted.internet.threads import deferToThread

from masterd._time import isotime
from masterd.db import Pool, Transaction
from masterd.errors import Conflict
from masterd.jobs import JobStore
from masterd.jobs.logs import attemptLog
from masterd.jobs.models import AttemptDocument, JobDocument, TaskDocument
from masterd.jobs.views import ATTEMPT_COLUMNS, TASK_COLUMNS, attemptDocument, taskDocument
from masterd.schema import Document, Model

#: What the document says it is; a reader checks it.
FORMAT = "masterd-archive/1"
#: Tasks (and their attempts) read per statement: a job of 100,000 tasks is
#: read in pages, not as one result.
PAGE = 2000

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


async def archiveDocument(
    txn: Transaction, jobs: JobStore, jobID: int, logs: bool
) -> ArchiveDocument:
    """
    The archive of a finished job, read in C{txn} (one snapshot: a REPEATABLE
    READ transaction gives a consistent document).

    @raise Conflict: for a job that is not finished.
    @raise masterd.errors.NoSuchResource: for no such job.
    """
    job = await jobs._getJob(txn, jobID)
    if job.state not in _FINISHED:
        raise Conflict(
            f"job {jobID} is {job.state}; only finished jobs can be archived", state=job.state
        )
    [(now,)] = await txn.query("SELECT now()")
    tasks: list[TaskDocument] = []
    attempts: list[AttemptDocument] = []
    texts: dict[str, list[str]] = {}
    after = -1
    while True:
        rows = await txn.query(
            f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.job_id = %s AND t.index > %s"
            " ORDER BY t.index LIMIT %s",
            (jobID, after, PAGE),
        )
        if not rows:
            break
        page = [taskDocument(r) for r in rows]
        tasks.extend(page)
        after = page[-1].index
        found = await txn.query(
            f"SELECT {ATTEMPT_COLUMNS} FROM task_attempts WHERE task_id = ANY (%s)"
            " ORDER BY task_id, attempt",
            ([t.id for t in page],),
        )
        for row in found:
            attempt = attemptDocument(row)
            attempts.append(attempt)
            if logs:
                taskID = attempt.task.id
                lines = await attemptLog(txn, taskID, attempt.attempt)
                if lines:
                    texts[f"{taskID}/{attempt.attempt}"] = lines
        if len(rows) < PAGE:
            break
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


def _write(directory: Path, jobID: int, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"job-{jobID}.json"
    fd, temporary = tempfile.mkstemp(prefix=f".job-{jobID}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    return target


async def writeArchive(
    pool: Pool, jobID: int, directory: Path, logs: bool, jobs: JobStore | None = None
) -> tuple[Path, int]:
    """
    Write a finished job's archive to C{directory}/job-ID.json, atomically
    (a temporary file, fsync, rename), the file written in a thread so that
    a big one does not hold the reactor. Returns its path and size.
    """
    from masterd.events import EventBus

    store = jobs if jobs is not None else JobStore(pool, EventBus())
    document = await readArchive(pool, store, jobID, logs)
    data = msgspec.json.encode(document)
    path: Path = await deferToThread(_write, directory, jobID, data)
    return path, len(data)
