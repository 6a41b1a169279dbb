"""The catalog on PostgreSQL (issue 18, docs/scale-out.md): many gateways share one database.
Needs the ``[postgres]`` extra (asyncpg); the embedded default (SQLite) does not import this."""

from tierstore.catalog.postgres._catalog import PostgresCatalog
from tierstore.catalog.postgres._codec import prefix_end
from tierstore.catalog.postgres._pool import PoolSettings, redact_dsn
from tierstore.catalog.postgres._schema import MIGRATION_LOCK, SCHEMA_VERSION

__all__ = ["MIGRATION_LOCK", "SCHEMA_VERSION", "PoolSettings", "PostgresCatalog", "prefix_end", "redact_dsn"]
