"""
A finished job's archive (docs/archive.md): read it, or have the master
write it to retention.archive_dir.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.iweb import IRequest

from masterd.audit import Actor, record
from masterd.config import Role
from masterd.db import Pool, Transaction
from masterd.errors import Conflict
from masterd.jobs import JobStore
from masterd.jobs.models import Ref
from masterd.retention.archive import ArchiveDocument, ArchiveQuery, readArchive, writeArchive
from masterd.schema import Document

from ._jobs import JOB
from ._operations import operation


class ArchiveWritten(Document):
    path: str
    bytes: int
    job: Ref


class ArchiveRoutes:
    jobs: JobStore
    pool: Pool | None
    archiveDir: Path | None
    archiveLogs: bool

    def actor(self, request: IRequest) -> Actor:
        raise NotImplementedError

    @operation("GET", "/api/v1/jobs/{jobID}/archive", summary="A finished job as one document",
               role=Role.viewer, params=JOB, query=ArchiveQuery, response=ArchiveDocument,
               errors=(409,), tag="jobs",
               description="The job, all its tasks and their attempts as the API gives them "
               "(with their usage), and with logs=true every attempt's log. 409 for a job "
               "not finished.")  # fmt: skip
    async def getArchive(
        self, request: IRequest, jobID: int, query: ArchiveQuery
    ) -> ArchiveDocument:
        assert self.pool is not None
        return await readArchive(self.pool, self.jobs, jobID, query.logs)

    @operation("POST", "/api/v1/jobs/{jobID}/archive", summary="Write a finished job's archive "
               "to the master's retention.archive_dir", role=Role.operator, params=JOB,
               response=ArchiveWritten, errors=(409,), tag="jobs",
               description="Written as job-ID.json, atomically, with the logs when "
               "retention.archive_logs is set. 409 for a job not finished, or a master "
               "without retention.archive_dir.")  # fmt: skip
    async def postArchive(self, request: IRequest, jobID: int) -> ArchiveWritten:
        assert self.pool is not None
        if self.archiveDir is None:
            raise Conflict("this master has no archive directory (retention.archive_dir)")
        path, size = await writeArchive(
            self.pool, jobID, self.archiveDir, self.archiveLogs, self.jobs
        )
        actor = self.actor(request)

        async def audit(txn: Transaction) -> None:
            record(txn, actor, "job.archive", f"/api/v1/jobs/{jobID}", {"path": str(path)})

        await self.pool.transaction(audit)
        return ArchiveWritten(
            path=str(path), bytes=size, job=Ref(id=jobID, href=f"/api/v1/jobs/{jobID}")
        )
