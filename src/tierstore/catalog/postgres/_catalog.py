"""``PostgresCatalog``: the catalog on PostgreSQL for gateways that share it (docs/scale-out.md).

``await PostgresCatalog.open(dsn)`` migrates the schema under the advisory lock (whichever
gateway starts first), then opens the bounded pool; ``await close()``. The server's composition
root builds ``PostgresCatalog(dsn)`` first (synchronously, to hand it to every engine object) and
``await start()``s it in each worker's event loop (an asyncpg pool is bound to its loop). Every public method is a
coroutine with the name, parameters and result of ``SqliteCatalog``'s; the resources live in
one module each (``_buckets``, ``_versions``, ``_listing``, ``_uploads``, ``_blobs``,
``_datasets``), the connections and their errors in ``_pool``, the DDL in ``_schema``.

Slice 4 adds ``_identity``, ``_kms``, ``_sse``, ``_tiers``, ``_tier_data``, ``_lifecycle``, ``_hot``,
``_tier_progress``, ``_query``; slice 6 ``_leases`` (the gateway registry, named jobs, the
leased trash and outbox). Each write keeps the other modules' tables in its own transaction
through hooks, as SQLite's; a hook a module owns is a method of its mixin, which comes before the
mixin calling it in the bases below (``_tier_data``'s defaults are right without that module).
``CatalogOperations`` (catalog/_protocol.py, checked by mypy) is what it implements: every
operation of ``Catalog`` but its synchronous ``close()``.
"""

from __future__ import annotations

from typing import Any

from tierstore.catalog.postgres._blobs import BlobTables
from tierstore.catalog.postgres._buckets import BucketTables
from tierstore.catalog.postgres._console import ConsoleSessionTables
from tierstore.catalog.postgres._datasets import DatasetTables
from tierstore.catalog.postgres._hot import HotTables
from tierstore.catalog.postgres._identity import IdentityTables
from tierstore.catalog.postgres._kms import KmsTables
from tierstore.catalog.postgres._leases import LeaseTables
from tierstore.catalog.postgres._lifecycle import LifecycleTables
from tierstore.catalog.postgres._listing import ListingTables
from tierstore.catalog.postgres._notify import ConfigEvents, ConfigListener
from tierstore.catalog.postgres._pool import Pool, PoolSettings, PoolStats, redact_dsn
from tierstore.catalog.postgres._query import QueryTables
from tierstore.catalog.postgres._schema import migrate
from tierstore.catalog.postgres._sse import SseTables
from tierstore.catalog.postgres._tier_data import TierDataTables
from tierstore.catalog.postgres._tier_progress import TierProgressTables
from tierstore.catalog.postgres._tiers import TierTables
from tierstore.catalog.postgres._uploads import UploadTables

__all__ = ["PostgresCatalog"]


class PostgresCatalog(
    BucketTables,
    UploadTables,
    ListingTables,
    BlobTables,
    DatasetTables,
    HotTables,
    TierProgressTables,
    QueryTables,
    IdentityTables,
    KmsTables,
    SseTables,
    TierTables,
    TierDataTables,
    LifecycleTables,
    LeaseTables,
    ConsoleSessionTables,
):
    """All metadata in one PostgreSQL database, shared by any number of gateway processes."""

    mirrored = False  # SQLite's drive mirror has no counterpart: PostgreSQL's replicas are its own

    def __init__(self, dsn: str, **settings: Any) -> None:
        """The catalog at ``dsn`` (``postgresql://USER[:PASSWORD]@HOST:PORT/DB``), not connected
        until ``start()``; ``settings``: ``PoolSettings``'s fields (``pool_size``,
        ``checkout_timeout_s``, ``statement_timeout_s``)."""
        self._dsn = dsn
        self._settings = PoolSettings(**settings)
        self.shown_dsn = redact_dsn(dsn)  # for messages and logs: the password as ***
        self.migrated_steps = 0  # schema steps this process applied at start (0: it was current)

    @classmethod
    async def open(cls, dsn: str, **settings: Any) -> PostgresCatalog:
        """``PostgresCatalog(dsn, **settings)``, started."""
        catalog = cls(dsn, **settings)
        await catalog.start()
        return catalog

    async def start(self) -> None:
        """Migrate the database and open the pool, in the event loop that will use it.
        PostgreSQL unreachable: ``SlowDown`` (the caller may retry)."""
        self.migrated_steps = await migrate(self._dsn, self.shown_dsn, timeout_s=self._settings.checkout_timeout_s)
        self._pool = await Pool.open(self._dsn, self._settings)

    def listen(self, events: ConfigEvents) -> ConfigListener:
        """Hand ``events`` the configuration changes committed from now on, through one connection
        outside the pool (catalog/postgres/_notify.py), in the running event loop; ``close()``
        stops it."""
        listener = self.__dict__.get("_listener")
        assert listener is None, "already listening"
        self._listener = ConfigListener(self._dsn, events, connect_timeout_s=self._settings.checkout_timeout_s)
        self._listener.start()
        return self._listener

    @property
    def pool_stats(self) -> PoolStats | None:
        """This process's pool's counters (metrics); None before ``start()``."""
        pool: Pool | None = self.__dict__.get("_pool")
        return None if pool is None else pool.stats

    @property
    def listener(self) -> ConfigListener | None:
        """This process's LISTEN connection (metrics: ``listening``, ``connects``), once ``listen``ed."""
        listener: ConfigListener | None = self.__dict__.get("_listener")
        return listener

    async def close(self) -> None:
        """Stop listening and close the pool (nothing to do if never started; a second call is a no-op)."""
        listener: ConfigListener | None = self.__dict__.pop("_listener", None)
        if listener is not None:
            await listener.close()
        pool: Pool | None = self.__dict__.pop("_pool", None)
        if pool is not None:
            await pool.close()

    def __repr__(self) -> str:
        return f"PostgresCatalog({self.shown_dsn})"

    async def claim_blob_store(self, location: str) -> str:
        """Where this catalog's blobs live: ``location`` (``s3://BUCKET/PREFIX`` of ``--store``, or
        ``""`` for a gateway's local drives) is recorded by the first gateway to start (a ``meta``
        row; no schema step) and the recorded one returned, for the caller to compare."""

        async def fn(c: Any) -> str:
            await c.execute(
                "INSERT INTO meta(name, value) VALUES('blob_store', $1) ON CONFLICT(name) DO NOTHING", location
            )
            return str(await c.fetchval("SELECT value FROM meta WHERE name = 'blob_store'"))

        return await self._pool.write(fn)

    async def master_key_id(self) -> str:
        """The id (a hash, never the key) of the master key recorded by the first gateway to start,
        else that of the store this catalog was migrated from (``migrate:store``); "" if neither."""
        value = await self._pool.fetchval(
            "SELECT COALESCE((SELECT value FROM meta WHERE name = 'master_key_id'),"
            " (SELECT value FROM meta WHERE name = 'migrate:store'), '')"
        )
        return str(value)

    async def claim_master_key(self, key_id: str) -> str:
        """Record ``key_id`` as the master key's unless one is recorded (``master_key_id``'s
        fallback first: a migrated catalog keeps its source's); the recorded one, to compare."""

        async def fn(c: Any) -> str:
            await c.execute(
                "INSERT INTO meta(name, value) VALUES('master_key_id',"
                " COALESCE((SELECT value FROM meta WHERE name = 'migrate:store'), $1)) ON CONFLICT(name) DO NOTHING",
                key_id,
            )
            return str(await c.fetchval("SELECT value FROM meta WHERE name = 'master_key_id'"))

        return await self._pool.write(fn)

    # --- health and usage ------------------------------------------------------------------
    async def probe_write(self) -> None:
        """Raise unless a write could commit now: an empty transaction on a pooled connection."""

        async def fn(c: Any) -> None:
            await c.execute("SELECT 1")

        await self._pool.write(fn)

    async def bucket_usage(self, limit: int) -> list[tuple[str, int, int, int, int, int]]:
        """Per bucket (the first ``limit`` by name): (bucket, objects, object bytes, versions,
        delete markers, stored bytes of every version); one aggregate, so callers cache it."""
        rows = await self._pool.fetch(
            "SELECT b.name,"
            " count(*) FILTER (WHERE v.is_latest AND NOT v.is_delete_marker),"
            " COALESCE(sum(v.size) FILTER (WHERE v.is_latest AND NOT v.is_delete_marker), 0),"
            " count(v.bucket_id), count(*) FILTER (WHERE v.is_delete_marker), COALESCE(sum(v.size), 0)"
            " FROM (SELECT id, name FROM buckets ORDER BY name LIMIT $1) b"
            " LEFT JOIN versions v ON v.bucket_id = b.id GROUP BY b.name ORDER BY b.name",
            limit,
        )
        return [(str(r[0]), *(int(x) for x in r[1:])) for r in rows]  # type: ignore[misc]

    async def counts(self) -> dict[str, int]:
        row = await self._pool.fetchrow(
            "SELECT (SELECT count(*) FROM buckets), (SELECT count(*) FROM versions), (SELECT count(*) FROM blobs),"
            " (SELECT count(*) FROM trash), (SELECT count(*) FROM inline_blobs), (SELECT count(*) FROM uploads)"
        )
        names = ("buckets", "versions", "blobs", "trash", "inline", "uploads")
        return {name: int(value) for name, value in zip(names, row, strict=True)}
