"""
Real PostgreSQL for the tests: never a mock.

One server serves the whole test run: the embedded one (pgserver, in a
temporary directory, started on first use and deleted at exit), or the one
C{MASTERD_TEST_DSN} names. Each test gets a fresh database cloned from a
template that the real migrations built once.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from typing import Any

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from masterd.db import Pool, migrate

TEMPLATE = "masterd_test_template"

_server: Any = None
_adminDSN: str | None = None
_templateReady = False


def adminDSN() -> str:
    """
    A DSN for the server's maintenance database, starting the embedded server
    the first time it is needed.
    """
    global _server, _adminDSN
    if _adminDSN is not None:
        return _adminDSN
    configured = os.environ.get("MASTERD_TEST_DSN")
    if configured:
        _adminDSN = configured
        return _adminDSN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    directory = tempfile.mkdtemp(prefix="masterd-test-pg-")
    _server = pgserver.get_server(os.path.join(directory, "data"), cleanup_mode="delete")
    info = _server.get_postmaster_info()
    _adminDSN = make_dsn(
        host=str(info.socket_dir), port=info.port or 5432, user="postgres", dbname="postgres"
    )
    return _adminDSN


def dsnFor(database: str) -> str:
    return make_dsn(adminDSN(), dbname=database)


def _admin(sql: str) -> None:
    conn = psycopg2.connect(adminDSN())
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


def createDatabase(name: str, template: str | None = None) -> str:
    clause = f" TEMPLATE {template}" if template else ""
    _admin(f"CREATE DATABASE {name}{clause}")
    return dsnFor(name)


def dropDatabase(name: str) -> None:
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _ensureTemplate() -> None:
    global _templateReady
    if _templateReady:
        return
    dropDatabase(TEMPLATE)
    dsn = createDatabase(TEMPLATE)
    pool = Pool(reactor, dsn, minSize=1, maxSize=1)
    await pool.open()
    try:
        await migrate(pool)
    finally:
        await pool.close()
    _templateReady = True


async def freshDatabase(case: TestCase, migrated: bool = True) -> str:
    """
    A new database for this test, dropped after it; its DSN.
    """
    name = f"masterd_t_{uuid.uuid4().hex[:12]}"
    if migrated:
        await _ensureTemplate()
        dsn = createDatabase(name, TEMPLATE)
    else:
        dsn = createDatabase(name)
    case.addCleanup(dropDatabase, name)
    return dsn


def databaseName(dsn: str) -> str:
    return str(parse_dsn(dsn)["dbname"])
