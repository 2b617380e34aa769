"""
Apply the package's schema migrations exactly once, whoever else is trying.
"""

from __future__ import annotations

import re
from importlib import resources

from attrs import frozen
from twisted.logger import Logger

from ._pool import Pool, Transaction

log = Logger()

#: The advisory lock that serialises migrations across masters ("masterd" in ASCII).
MIGRATION_LOCK = 0x6D6173746572_64

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@frozen
class Migration:
    version: str
    name: str
    sql: str


def packagedMigrations() -> list[Migration]:
    """
    The migrations shipped in L{masterd.db.migrations}, in order.
    """
    found: list[Migration] = []
    for entry in resources.files("masterd.db.migrations").iterdir():
        match = _FILENAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(match.group(1), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


async def migrate(pool: Pool, migrations: list[Migration] | None = None) -> list[str]:
    """
    Apply what is missing, in one transaction under an advisory lock, so that
    two masters starting at once never both migrate, and a failing migration
    leaves nothing half-applied.

    @return: the versions applied by this call.
    """
    todo = packagedMigrations() if migrations is None else migrations

    async def work(txn: Transaction) -> list[str]:
        await txn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await txn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in await txn.query("SELECT version FROM schema_migrations")}
        applied: list[str] = []
        for m in todo:
            if m.version in done:
                continue
            log.info("applying migration {version} {name}", version=m.version, name=m.name)
            await txn.execute(m.sql)
            await txn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (m.version, m.name),
            )
            applied.append(m.version)
        return applied

    return await pool.transaction(work)
