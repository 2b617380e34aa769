"""
Opening one asynchronous connection, with a deadline the reactor keeps and
the failover a libpq multi-host DSN asks for.

Two things libpq does not do for us here:

- txpostgres cancels a connection attempt with C{PQcancel}, which fails
  while the attempt is under way: a timed-out attempt then never ended,
  and a master waited for its database forever. The deadline here closes
  the connection instead, and fails the attempt itself.
- A multi-host DSN (C{host=a,b target_session_attrs=read-write}) makes
  libpq move to the next host inside one asynchronous attempt, with a new
  socket, behind the reactor's back (epoll then fails on the old file
  descriptor). So the hosts are tried here, one connection attempt each,
  and C{target_session_attrs} is checked with a query once connected: a
  standby (or a read-only server) is closed and the next host tried. When
  a replica is promoted, the next attempt finds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from txpostgres import txpostgres

C = TypeVar("C", bound=txpostgres.Connection)

#: Values of target_session_attrs that need a server that takes writes.
_WRITABLE = {"read-write", "primary"}


class ConnectFailed(Exception):
    """
    No host of the DSN gave a usable connection; the message says why.
    """


def candidates(dsn: str) -> tuple[list[str], bool]:
    """
    The single-host DSNs to try in order, and whether a writable server is
    required (C{target_session_attrs}).
    """
    params = parse_dsn(dsn)
    attrs = params.pop("target_session_attrs", "any")
    hosts = params.pop("host", "").split(",") if params.get("host") else [""]
    ports = params.pop("port", "").split(",") if params.get("port") else [""]
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(ports) != len(hosts):
        raise ConnectFailed(f"the DSN names {len(hosts)} hosts and {len(ports)} ports")
    found = []
    for host, port in zip(hosts, ports, strict=True):
        one = dict(params)
        if host:
            one["host"] = host
        if port:
            one["port"] = port
        found.append(make_dsn(**one))
    return found, attrs in _WRITABLE


async def connect(
    reactor: IReactorTime,
    dsn: str,
    factory: Callable[[], C],
    timeout: float,
    **kwargs: Any,
) -> C:
    """
    A connected C{factory()} connection to the first host of C{dsn} that
    answers (and takes writes, if the DSN asks for it).

    @raise ConnectFailed: naming why each host was refused.
    """
    dsns, writable = candidates(dsn)
    problems: list[str] = []
    for one in dsns:
        conn = factory()
        try:
            await _within(reactor, conn, conn.connect(one, **kwargs), timeout)
        except ConnectFailed as e:
            problems.append(str(e))
            continue
        except psycopg2.Error as e:
            closeQuietly(conn)
            problems.append(firstLine(e))
            continue
        try:
            readOnly = writable and await _readOnly(conn)
        except psycopg2.Error as e:
            closeQuietly(conn)
            problems.append(firstLine(e))
            continue
        if readOnly:
            closeQuietly(conn)
            problems.append(f"{_where(one)} is read-only (a standby?)")
            continue
        return conn
    raise ConnectFailed("; ".join(problems) or "no host to connect to")


async def _within(reactor: IReactorTime, conn: Any, attempt: Deferred[Any], timeout: float) -> None:
    result: Deferred[None] = Deferred()

    def connected(_: object) -> None:
        if not result.called:
            result.callback(None)

    def failed(reason: Any) -> None:
        if not result.called:
            result.errback(reason)

    def late() -> None:
        if not result.called:
            result.errback(ConnectFailed(f"no connection within {timeout:g} s"))
            closeQuietly(conn)

    attempt.addCallbacks(connected, failed)
    timer = reactor.callLater(timeout, late)
    try:
        await result
    finally:
        if timer.active():
            timer.cancel()


async def _readOnly(conn: Any) -> bool:
    rows = await conn.runQuery("SHOW transaction_read_only")
    return bool(rows and rows[0][0] == "on")


def forget(reactor: Any, selectable: Any, fd: int) -> None:
    """
    Take out of the reactor a connection whose socket libpq has already
    closed (the server went away).

    txpostgres then asks the reactor to watch file descriptor -1, and the
    reactor's clean-up calls epoll_ctl on the closed descriptor, fails half
    way, and keeps the number: the next socket to get that number (an
    agent's, a client's) is then refused by epoll. This removes what can
    be removed, ignoring the errors, and drops the number from the epoll
    reactor's own books.
    """
    for remove in (reactor.removeReader, reactor.removeWriter):
        try:
            remove(selectable)
        except (OSError, ValueError):
            pass
    if fd < 0:
        return
    for name in ("_reads", "_writes"):
        table = getattr(reactor, name, None)
        if isinstance(table, set | dict):
            if isinstance(table, set):
                table.discard(fd)
            else:
                table.pop(fd, None)
    selectables = getattr(reactor, "_selectables", None)
    if isinstance(selectables, dict) and selectables.get(fd) is selectable:
        del selectables[fd]
    poller = getattr(reactor, "_poller", None)
    if poller is not None:
        try:
            poller.unregister(fd)
        except (OSError, ValueError):
            pass


def _where(dsn: str) -> str:
    params = parse_dsn(dsn)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"


def closeQuietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass


def firstLine(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
