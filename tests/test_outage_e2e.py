"""
A database outage in the middle of a job, with real processes: a master on a
PostgreSQL of the test's own, two reference agents, short tasks. PostgreSQL
stops for a few seconds and comes back; the job completes, every frame runs
once, every task has exactly one done attempt.
"""

from __future__ import annotations

import collections
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from . import test_e2e as e2e
from ._process import MasterProcess

FRAMES = 60


class DatabaseOutageTests(TestCase):
    timeout = 240

    # The end-to-end suite's helpers (not its tests).
    call = e2e.EndToEndTests.call
    waitFor = e2e.EndToEndTests.waitFor
    job = e2e.EndToEndTests.job

    async def startPostgres(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        self.pgDirectory = os.path.join(tempfile.mkdtemp(prefix="masterd-outage-"), "data")
        self.pg: Any = await deferToThread(pgserver.get_server, self.pgDirectory, "delete")
        self.addCleanup(lambda: deferToThread(self.pg.cleanup))
        info = self.pg.get_postmaster_info()
        return f"host={info.socket_dir} user=postgres dbname=postgres"

    async def restartPostgres(self, downFor: float) -> None:
        import pgserver

        self.pg.cleanup_mode = "stop"  # keep the data
        await deferToThread(self.pg.cleanup)
        await deferLater(reactor, downFor)
        self.pg = await deferToThread(pgserver.get_server, self.pgDirectory, "delete")

    async def test_outageMidJob(self) -> None:
        dsn = await self.startPostgres()
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        config = e2e.farmConfig(self.directory, database={"dsn": dsn, "reconnect_max_s": 0.5})
        self.master = MasterProcess(config, self.directory)
        self.addCleanup(self.master.kill)
        port = await self.master.waitForPort()
        self.base = f"http://127.0.0.1:{port}"
        await self.waitFor(lambda: self.call("GET", "/readyz"), lambda r: r[0] == 200)
        for i in range(2):
            agent = e2e.AgentProcess(self.directory, f"agent{i}", self.base, maxTasks=2)
            self.addCleanup(agent.stop)
        await self.waitFor(
            lambda: self.call("GET", "/api/v1/agents?state=idle"),
            lambda r: len(r[1]["items"]) == 2,
        )
        doneLog = self.directory / "done.log"
        code, job = await self.call(
            "POST", "/api/v1/jobs",
            {"title": "through an outage", "frames": f"1-{FRAMES}",
             "command": ["sh", "-c", f"sleep 0.3; echo {{frame}} >> {doneLog}"]},
        )  # fmt: skip
        self.assertEqual(code, 201, job)
        await self.waitFor(lambda: self.job(job["id"]), lambda j: j["tasks"]["done"] >= 10)

        # Reports and claims fail while it is away; the master answers 503,
        # the agents keep their final reports and send them again.
        await self.restartPostgres(downFor=3.0)

        done = await self.waitFor(
            # While it comes back the master may still answer 503.
            lambda: self.job(job["id"]),
            lambda j: j.get("state") == "done",
            timeout=120,
        )
        self.assertEqual(done["tasks"]["done"], FRAMES)
        connection = psycopg2.connect(dsn)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*), count(DISTINCT task_id) FROM task_attempts"
                    " WHERE job_id = %s AND state = 'done'",
                    (job["id"],),
                )
                self.assertEqual(cursor.fetchone(), (FRAMES, FRAMES))
                cursor.execute(
                    "SELECT DISTINCT t.frames[1] FROM tasks t JOIN task_attempts a"
                    " ON a.task_id = t.id AND a.state IN ('lost', 'canceled')"
                    " WHERE t.job_id = %s",
                    (job["id"],),
                )
                rerun = {str(r[0]) for r in cursor.fetchall()}
        finally:
            connection.close()
        lines = collections.Counter(doneLog.read_text().split())
        self.assertEqual(set(lines), {str(f) for f in range(1, FRAMES + 1)})
        twice = {f for f, n in lines.items() if n > 1}
        self.assertEqual(twice - rerun, set(), "frames run twice without a lost attempt")
        self.assertEqual(twice, set(), "a three-second outage made frames run twice")
