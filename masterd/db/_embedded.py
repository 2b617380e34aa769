"""
The embedded PostgreSQL server (pgserver), so that a new user needs nothing
but pip. Production points C{database.dsn} at a real server instead.

pgserver keeps the pids of the processes using a server in
C{.handle_pids.json} and stops the server when the last of them lets go. A
master killed with -9 never lets go: its pid stayed in the list, the next
master took it for a live owner, and no later clean stop shut the server
down. Before taking a server, a master now drops the pids of processes
that are gone, so that it takes over a server a dead master left running,
and stops it on its own clean stop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from masterd._process import processAlive
from masterd.service import FatalStartError, StagedService

log = Logger()

DATABASE_NAME = "masterd"


HANDLES = ".handle_pids.json"


def pruneDeadHandles(dataDir: Path) -> list[int]:
    """
    Drop from pgserver's list of a server's users the processes that are
    gone; return the pids dropped.
    """
    path = dataDir / HANDLES
    try:
        text = path.read_text()
    except OSError:
        return []
    try:
        pids = [int(p) for p in json.loads(text)]
    except (ValueError, TypeError):
        # Half written by a process killed while writing it (pgserver writes
        # it in place): unreadable, it would stop every later start.
        log.warn("{path} was unreadable ({text!r}); starting it afresh", path=str(path),
                 text=text[:100])  # fmt: skip
        _replace(path, [])
        return []
    gone = [pid for pid in pids if not processAlive(pid)]
    if gone:
        _replace(path, [pid for pid in pids if pid not in gone])
    return gone


def _replace(path: Path, pids: list[int]) -> None:
    # Written aside, then renamed: a kill leaves the old list or the new one.
    aside = path.with_name(path.name + ".new")
    aside.write_text(json.dumps(pids))
    os.replace(aside, path)


def _startServer(dataDir: Path) -> tuple[Any, str]:
    """
    Start (or find running) the server for C{dataDir}, make sure the
    C{masterd} database exists, and return the server and a DSN for it.
    Blocking: run in a thread.
    """
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (services, CI);
        # pgserver then uses /tmp/runtime-<uid>, which is what we want.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server
    import psycopg2

    dataDir.parent.mkdir(parents=True, exist_ok=True)
    gone = pruneDeadHandles(dataDir)
    if gone:
        log.warn(
            "the embedded PostgreSQL in {dataDir} was left by processes that are gone"
            " ({pids}); this master takes it over",
            dataDir=str(dataDir),
            pids=", ".join(map(str, gone)),
        )
    server = get_server(dataDir, cleanup_mode="stop")
    info = server.get_postmaster_info()
    host = str(info.socket_dir) if info.socket_dir is not None else "127.0.0.1"
    port = info.port or 5432
    admin = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {DATABASE_NAME}")
    finally:
        admin.close()
    return server, f"host={host} port={port} user=postgres dbname={DATABASE_NAME}"


def _stopServer(server: Any) -> None:
    server.cleanup()


class EmbeddedPostgresService(StagedService):
    """
    Runs PostgreSQL from the pgserver package in a data directory.
    """

    name = "embedded-postgres"

    def __init__(self, reactor: IReactorThreads, dataDir: Path) -> None:
        self._reactor = reactor
        self.dataDir = dataDir
        self._server: Any = None
        self.dsn: str | None = None

    def _inThread(self, f: Any, *args: Any) -> Any:
        reactor: Any = self._reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    async def start(self) -> None:
        log.info("starting the embedded PostgreSQL in {dataDir}", dataDir=str(self.dataDir))
        try:
            self._server, self.dsn = await self._inThread(_startServer, self.dataDir)
        except Exception as e:
            raise FatalStartError(
                f"the embedded PostgreSQL in {self.dataDir} did not start: {e}"
                f" (its log: {self.dataDir / 'log'})"
            ) from e
        log.info("embedded PostgreSQL is up (pid {pid})", pid=self.pid)

    @property
    def pid(self) -> int | None:
        if self._server is None:
            return None
        pid: int | None = self._server.get_pid()
        return pid

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        log.info("stopping the embedded PostgreSQL")
        await self._inThread(_stopServer, server)
