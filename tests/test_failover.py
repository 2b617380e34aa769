"""
The database may fail over too: a real primary with a synchronous streaming
replica (built with pg_basebackup and the server binaries pgserver ships),
two masters given a libpq multi-host DSN, and agents mid-job. The primary
is killed with -9 and the replica promoted: the job completes with every
frame done exactly once, and both masters are ready again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg2
import treq
from twisted.trial.unittest import SkipTest, TestCase

from ._process import MasterProcess, call, until
from .test_e2e import ADMIN, AGENT, AGENT_TOKEN, farmConfig
from .test_restarts import freePort

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pgserver

BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"
#: PostgreSQL refuses to run as root; pgserver runs its servers as this user.
SERVER_USER = "pgserver"


def _asServer(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *argv]
    return argv


def _run(*argv: str) -> str:
    result = subprocess.run(
        _asServer([str(BIN / argv[0]), *argv[1:]]), capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise AssertionError(f"{argv}: {result.stdout}\n{result.stderr}")
    return result.stdout


class Server:
    """
    One PostgreSQL server of the pair, on 127.0.0.1.
    """

    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.port = port

    def configure(self, **settings: str) -> None:
        with (self.data / "postgresql.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def start(self) -> None:
        _run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", "start")

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def connect(self, dbname: str = "postgres") -> Any:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)
        conn.autocommit = True
        return conn

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                _asServer([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                capture_output=True, timeout=60,
            )  # fmt: skip


class FailoverTests(TestCase):
    timeout = 600

    def setUp(self) -> None:
        if not (BIN / "pg_basebackup").exists():
            raise SkipTest("pgserver ships no pg_basebackup here")
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            ensure_user_exists(SERVER_USER)
        self.base = Path(tempfile.mkdtemp(prefix="masterd-failover-"))
        self.addCleanup(shutil.rmtree, self.base, True)
        if os.geteuid() == 0:
            shutil.chown(self.base, SERVER_USER)

    def pair(self) -> tuple[Server, Server]:
        primary = Server(self.base / "primary", freePort())
        _run("initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust")
        primary.configure(
            port=str(primary.port), listen_addresses="'127.0.0.1'",
            unix_socket_directories=f"'{primary.data}'", wal_level="replica",
            max_wal_senders="5", hot_standby="on", fsync="off",
        )  # fmt: skip
        primary.start()
        self.addCleanup(primary.stop)
        primary.sql("CREATE DATABASE masterd")
        replica = Server(self.base / "replica", freePort())
        _run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
             "-D", str(replica.data), "-R", "-X", "stream")  # fmt: skip
        replica.configure(port=str(replica.port), unix_socket_directories=f"'{replica.data}'")
        replica.start()
        self.addCleanup(replica.stop)
        # Synchronous from now on: nothing committed is lost in the failover.
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.sql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 30
        while primary.sql("SELECT sync_state FROM pg_stat_replication") != [("sync",)]:
            self.assertLess(time.monotonic(), deadline, "the replica never became synchronous")
            time.sleep(0.1)
        return primary, replica

    async def get(self, base: str, path: str) -> tuple[int, Any]:
        return await call(base, path, ADMIN)

    async def until(self, what: str, check: Any, timeout: float) -> None:
        await until(what, check, timeout, lambda: "\n".join(m.log()[-3000:] for m in self.masters))

    async def test_primaryDiesReplicaPromoted(self) -> None:
        primary, replica = self.pair()
        dsn = (
            f"host=127.0.0.1,127.0.0.1 port={primary.port},{replica.port} user=postgres"
            " dbname=masterd target_session_attrs=read-write"
        )
        self.masters: list[MasterProcess] = []
        bases = []
        for name in ("m1", "m2"):
            directory = self.base / name
            directory.mkdir()
            config = farmConfig(
                directory, master={"name": name},
                database={"dsn": dsn, "connect_timeout_s": 2, "reconnect_max_s": 1},
            )  # fmt: skip
            master = MasterProcess(config, directory)
            self.addCleanup(master.kill)
            self.masters.append(master)
            bases.append(f"http://127.0.0.1:{await master.waitForPort()}")
        for base in bases:
            await self.until(f"{base} ready", lambda b=base: self.ready(b), 60)
        out = self.base / "frames"
        out.mkdir()
        agents = []
        for i in range(2):
            agents.append(self.agent(f"agent{i}", bases if i == 0 else bases[::-1]))
        frames = 40
        response = await treq.post(
            bases[0] + "/api/v1/jobs", persistent=False,
            headers={"Authorization": [f"Bearer {ADMIN}"]},
            json={"title": "across a failover", "frames": f"1-{frames}",
                  "command": ["sh", "-c", f"echo $MASTERD_ATTEMPT >> {out}/{{frame}}; sleep 0.5"]},
        )  # fmt: skip
        job = json.loads(await response.content())
        self.assertEqual(response.code, 201, job)

        async def someDone() -> bool:
            code, body = await self.get(bases[1], f"/api/v1/jobs/{job['id']}")
            return code == 200 and body["tasks"]["done"] >= 8

        await self.until("work under way", someDone, 120)
        # The primary dies mid-job; the replica is promoted.
        os.kill(primary.pid(), signal.SIGKILL)
        _run("pg_ctl", "-D", str(replica.data), "-w", "promote")

        async def done() -> bool:
            for base in bases:
                code, body = await self.get(base, f"/api/v1/jobs/{job['id']}")
                if code == 200 and body["state"] == "done":
                    return True
            return False

        await self.until("the job done after the failover", done, 300)
        for base in bases:
            await self.until(f"{base} ready again", lambda b=base: self.ready(b), 60)
        counts = {int(p.name): len(p.read_text().splitlines()) for p in out.iterdir()}
        self.assertEqual(sorted(counts), list(range(1, frames + 1)))
        self.assertEqual({f: n for f, n in counts.items() if n != 1}, {}, "run more than once")
        rows = replica.sql(
            "SELECT count(*) FROM task_attempts WHERE state = 'done'", dbname="masterd"
        )
        self.assertEqual(rows, [(frames,)])
        for master in self.masters:
            self.assertNotIn("Traceback", master.log())

    async def ready(self, base: str) -> bool:
        code, _ = await self.get(base, "/readyz")
        return code == 200

    def agent(self, name: str, masters: list[str]) -> subprocess.Popen[bytes]:
        directory = self.base / name
        directory.mkdir()
        log = (directory / "agent.log").open("wb")
        argv = [*AGENT, "-n", "--pidfile=", "masterd-agent", "--token", AGENT_TOKEN,
                "--state-dir", str(directory / "state"), "--hostname", name]  # fmt: skip
        for url in masters:
            argv += ["--master", url]
        process = subprocess.Popen(argv, cwd=directory, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)  # fmt: skip

        def stop() -> None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()

        self.addCleanup(stop)
        return process
