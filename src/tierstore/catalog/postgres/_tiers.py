"""The registry of remote tiers on PostgreSQL (docs/tiers.md), as catalog/sqlite/_tiers.py keeps it: a
tier's configuration as JSON and, apart, its secret key sealed by crypto/ (bytes here), and
``tier_outbox`` (remote objects to delete once the catalog no longer references them).

A tier is removed only while no blob, outbox entry or upload names it. ``tier_delete`` locks the
tier's row ``FOR UPDATE`` before it counts; the movers' transactions (``_tier_data.py``) hold it
``FOR SHARE``, so a blob cannot be switched to the tier between the count and the delete.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from tierstore.catalog._records import TierRecord, TierUsage
from tierstore.catalog._rules import tier_of
from tierstore.catalog.postgres._notify import notify_sql
from tierstore.catalog.postgres._pool import Pool

__all__ = ["DDL", "TierTables"]

DDL = (
    """CREATE TABLE tiers(  -- remote tiers, each a storage class (docs/tiers.md)
        name text COLLATE "C" PRIMARY KEY,  -- the storage class: [A-Z][A-Z0-9_]{0,31}, never STANDARD
        config jsonb NOT NULL,  -- endpoint, bucket, prefix, region, restore_required, allow_private, access_key_id
        secret bytea,  -- the secret key sealed under the master key, bound to the name; NULL: the AWS chain
        created_ns bigint NOT NULL
    )""",
    """CREATE TABLE tier_outbox(  -- remote objects to delete (the catalog no longer references them)
        tier text COLLATE "C" NOT NULL,
        blob_id text COLLATE "C" NOT NULL,
        queued_ns bigint NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_ns bigint NOT NULL,  -- not retried before this time
        PRIMARY KEY(tier, blob_id)
    )""",
    "CREATE INDEX tier_outbox_due ON tier_outbox(next_ns)",
    "CREATE INDEX blobs_by_tier ON blobs(tier) WHERE tier IS NOT NULL",
)

_COLUMNS = "name, config, secret, created_ns"


async def usage_of(c: Any, name: str) -> TierUsage:
    """What names tier ``name``: its blobs (and their bytes), outbox entries, uploads in its class."""
    row = await c.fetchrow(
        "SELECT (SELECT count(*) FROM blobs WHERE tier = $1),"
        " (SELECT COALESCE(sum(size), 0) FROM blobs WHERE tier = $1),"
        " (SELECT count(*) FROM tier_outbox WHERE tier = $1),"
        " (SELECT count(*) FROM uploads WHERE meta ->> 'sc' = $1)",  # uploads are few: no index, as on SQLite
        name,
    )
    return TierUsage(*(int(x) for x in row))


class TierTables:
    """The tier-registry calls of the catalog protocol."""

    _pool: Pool

    async def _tier_removed(self, c: Any, name: str) -> None:
        """Inside ``tier_delete``'s transaction: what else goes with the tier. Nothing here; the
        mover's progress (``tier_stats``, ``tier_pending``: catalog/postgres/_tier_progress.py)
        drops its rows by overriding this (that mixin comes before this one)."""

    async def tier_create(self, record: TierRecord) -> bool:
        """Add ``record``; False (and nothing changed) when a tier of that name exists."""
        config = json.dumps(record.config, sort_keys=True, separators=(",", ":"))

        async def fn(c: Any) -> bool:
            done = await c.execute(
                "INSERT INTO tiers(name, config, secret, created_ns) VALUES($1, $2::jsonb, $3, $4)"
                " ON CONFLICT(name) DO NOTHING",
                record.name, config, record.sealed_secret, record.created_ns,
            )  # fmt: skip
            return bool(done != "INSERT 0 0")

        return await self._pool.write(fn, first=notify_sql("tier", record.name))

    async def tier_get(self, name: str) -> TierRecord | None:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM tiers WHERE name = $1", name)  # noqa: S608
        return tier_of(row) if row else None

    async def tier_list(self) -> list[TierRecord]:
        return [tier_of(r) for r in await self._pool.fetch(f"SELECT {_COLUMNS} FROM tiers ORDER BY name")]  # noqa: S608

    async def tier_names(self) -> list[str]:
        return [r[0] for r in await self._pool.fetch("SELECT name FROM tiers ORDER BY name")]

    async def tier_delete(self, name: str) -> Literal["deleted", "missing"] | TierUsage:
        """Remove the tier ``name`` unless a blob, an outbox entry or an upload names it (then:
        what names it, and nothing changed). The check and the delete are one transaction, under
        the tier row's lock."""

        async def fn(c: Any) -> Literal["deleted", "missing"] | TierUsage:
            if await c.fetchval("SELECT 1 FROM tiers WHERE name = $1 FOR UPDATE", name) is None:
                return "missing"
            usage = await usage_of(c, name)
            if usage.in_use:
                return usage
            await c.execute("DELETE FROM tiers WHERE name = $1", name)
            await self._tier_removed(c, name)
            return "deleted"

        return await self._pool.write(fn, first=notify_sql("tier", name))

    async def tier_usage(self, name: str) -> TierUsage:
        async with self._pool.connection() as c:
            return await usage_of(c, name)

    async def tier_sealed_key_ids(self) -> list[bytes]:
        """The sealing headers (first 5 bytes) of the tiers' sealed secrets: which master keys
        sealed them (``server.prepare_master_key`` checks them at start)."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT substring(secret FROM 1 FOR 5) FROM tiers WHERE secret IS NOT NULL"
        )
        return [bytes(r[0]) for r in rows]
