"""
The masters of a farm, in the database: each registers at start and
heartbeats every C{master.heartbeat_s} with its latest stats snapshot, so that
an operator asking any master sees the whole cluster; a master whose
heartbeat is older than C{master.expire_s} is down.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from psycopg2.extras import Json
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from masterd._process import processAlive
from masterd._time import isotime
from masterd._version import __version__
from masterd.db import DatabaseUnavailable, Pool, Transaction
from masterd.service import LoopWatcher, Periodic, StagedService
from masterd.webhooks import mastersDown

from .models import MasterInfo

log = Logger()

#: This machine, in the masters table (with the pid: a previous run here that
#: is gone is no rival).
HOST = socket.gethostname()

#: The advisory lock one surviving master takes to expire the dead ones.
EXPIRY_LOCK = 0x6D6173746572_65


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class MasterRegistry(StagedService):
    """
    This master's row in the masters table, kept fresh.
    """

    name = "cluster"

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        master: str,
        listen: tuple[str, ...],
        snapshot: Callable[[], dict[str, Any]],
        heartbeat_s: float,
        expire_s: float,
        watcher: LoopWatcher | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.master = master
        self.listen = listen
        self.snapshot = snapshot
        self.heartbeat_s = heartbeat_s
        self.expire_s = expire_s
        self.instance = str(uuid.uuid4())
        self._claimedOwn = False
        #: This master's row is written: it is listed in /api/v1/masters.
        #: The master is not ready (/readyz) before.
        self.registered = False
        self.startedAt = clock.seconds()
        self._loop = Periodic("cluster.heartbeat", self.beat, heartbeat_s, clock, watcher)

    async def start(self) -> None:
        self._loop.start(now=True)

    async def stop(self) -> None:
        await self._loop.stop()

    def beatNow(self) -> None:
        """
        The database has just become ready: register now rather than at the
        next tick, so that the master is ready (and listed) at once.
        """
        if self._loop.running:
            Deferred.fromCoroutine(self.beat()).addErrback(
                lambda f: log.failure("cannot register this master", f)
            )

    async def beat(self) -> None:
        """
        Register or refresh this master; the first beat after a restart
        takes the name over (a master of the same name that still
        heartbeats is reported, since two masters must not share a name).
        """
        now = self.clock.seconds()
        try:
            rows = await self.pool.query(
                "INSERT INTO masters (name, version, started_at, last_seen, listen, stats,"
                " instance, host, pid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version,"
                " started_at = CASE WHEN masters.instance = EXCLUDED.instance"
                " THEN masters.started_at ELSE EXCLUDED.started_at END,"
                " last_seen = EXCLUDED.last_seen, listen = EXCLUDED.listen,"
                " stats = EXCLUDED.stats, instance = EXCLUDED.instance,"
                " host = EXCLUDED.host, pid = EXCLUDED.pid"
                " RETURNING (SELECT instance FROM masters WHERE name = %s),"
                " (SELECT last_seen FROM masters WHERE name = %s),"
                " (SELECT host FROM masters WHERE name = %s),"
                " (SELECT pid FROM masters WHERE name = %s)",
                (self.master, __version__, _ts(self.startedAt), _ts(now), list(self.listen),
                 Json(self.snapshot()), self.instance, HOST, os.getpid(),
                 self.master, self.master, self.master, self.master),
            )  # fmt: skip
        except DatabaseUnavailable:
            return
        self.registered = True
        previous, seen, host, pid = rows[0]
        if previous is not None and str(previous) != self.instance and seen is not None:
            age = now - seen.timestamp()
            if host == HOST and pid is not None and pid != os.getpid() and not processAlive(pid):
                log.info(
                    "taking the name {name} over from its previous run here (pid {pid}),"
                    " which is gone",
                    name=self.master,
                    pid=pid,
                )
            elif age < self.expire_s:
                log.warn(
                    "another master named {name} heartbeat {age:.0f} s ago; master.name must"
                    " be unique in a farm",
                    name=self.master,
                    age=age,
                )
        await self.expire()

    async def expire(self) -> list[tuple[str, str]]:
        """
        One surviving master (whichever holds the advisory lock this time)
        marks the agents of masters that stopped heartbeating offline, as of
        their master's last heartbeat. Their tasks then follow the lost
        grace: requeued by the sweep unless the agents reconnect to another
        master and list them.
        """
        cutoff = _ts(self.clock.seconds() - self.expire_s)

        async def work(txn: Transaction) -> list[tuple[str, str]]:
            locked = await txn.query("SELECT pg_try_advisory_xact_lock(%s)", (EXPIRY_LOCK,))
            if not locked[0][0]:
                return []
            rows = await txn.query(
                "UPDATE agents a SET master = NULL, session = NULL,"
                " disconnected_at = m.last_seen"
                " FROM masters m WHERE a.master = m.name AND a.session IS NOT NULL"
                " AND m.last_seen < %s AND m.name <> %s RETURNING a.id, m.name",
                (cutoff, self.master),
            )
            # Under the same lock, so that one master says each death once.
            for name, lastSeen, _ in await mastersDown(txn, cutoff, self.master):
                log.warn("master {master} is down (last heartbeat {at})", master=name,
                         at=isotime(lastSeen))  # fmt: skip
            return [(str(r[0]), r[1]) for r in rows]

        async def mine(txn: Transaction) -> list[tuple[str, str]]:
            # Agents held by an earlier run of this master (it crashed, or
            # they were not marked offline on the way down): nobody holds
            # them now.
            rows = await txn.query(
                "UPDATE agents SET master = NULL, session = NULL, disconnected_at = %s"
                " WHERE master = %s AND session IS NOT NULL AND connected_at < %s"
                " RETURNING id, master",
                (_ts(self.startedAt), self.master, _ts(self.startedAt)),
            )
            return [(str(r[0]), r[1]) for r in rows]

        try:
            expired = await self.pool.transaction(work)
            if not self._claimedOwn:
                expired += await self.pool.transaction(mine)
                self._claimedOwn = True
        except DatabaseUnavailable:
            return []
        for agentID, master in expired:
            log.warn(
                "master {master} is down: agent {agentId} marked offline",
                master=master,
                agentId=agentID,
            )
        return expired

    async def masters(self) -> list[MasterInfo]:
        rows = await self.pool.query(
            "SELECT name, version, started_at, last_seen, listen, stats FROM masters ORDER BY name"
        )
        now = self.clock.seconds()
        return [
            MasterInfo(
                name=name,
                href=f"/api/v1/masters/{quote(name, safe='')}",
                state="up" if now - lastSeen.timestamp() <= self.expire_s else "down",
                version=version,
                started_at=isotime(startedAt),
                last_seen=isotime(lastSeen),
                listen=list(listen),
                stats=stats,
            )
            for name, version, startedAt, lastSeen, listen, stats in rows
        ]
