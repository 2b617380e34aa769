"""
PostgreSQL, the single source of truth: the pool, migrations, the embedded
server and the service that keeps them connected.
"""

from ._batch import Batcher
from ._connect import ConnectFailed, connect, forget
from ._embedded import EmbeddedPostgresService
from ._migrate import MIGRATION_LOCK, Migration, migrate, packagedMigrations
from ._pool import (
    DatabaseUnavailable,
    Pool,
    StatementCanceled,
    Transaction,
    TransactionConflict,
)
from ._service import DatabaseService

__all__ = [
    "MIGRATION_LOCK",
    "Batcher",
    "ConnectFailed",
    "DatabaseService",
    "DatabaseUnavailable",
    "EmbeddedPostgresService",
    "Migration",
    "Pool",
    "StatementCanceled",
    "Transaction",
    "TransactionConflict",
    "connect",
    "forget",
    "migrate",
    "packagedMigrations",
]
