"""Tier tables of the catalog (schema v10): the registry of remote tiers (docs/tiers.md).

A tier is a bucket (and prefix) on an S3-compatible service, named by a storage class. Its row in
``tiers`` holds its configuration as JSON (endpoint, bucket, prefix, region, restore_required,
allow_private, access_key_id) and, apart, its secret key sealed under the server master key and
bound to the tier's name (crypto/ seals and opens it: this module only moves bytes).

The same migration prepares what the next slices use: ``blobs.tier`` (NULL: the blob is on the
local drives; otherwise the tier holding it) and ``tier_outbox`` (remote objects to delete once
the catalog no longer references them). A tier is removed only while neither names it; the check
and the delete are one write transaction, so a mover cannot slip a blob in between.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Literal, TypeVar

from tierstore.catalog._records import TierRecord, TierUsage
from tierstore.catalog._rules import tier_of
from tierstore.catalog.sqlite._tables import Tables

__all__ = ["TIERS_DDL", "TierTables"]

T = TypeVar("T")

# blobs.tier itself is in the blobs table of _schema._SCHEMA (a new database) or added by the
# v9 -> v10 step of _schema.upgrade; the index comes after either.
TIERS_DDL = """
CREATE TABLE IF NOT EXISTS tiers(  -- v10: remote tiers, each a storage class (docs/tiers.md)
    name TEXT PRIMARY KEY,  -- the storage class: [A-Z][A-Z0-9_]{0,31}, never STANDARD
    config TEXT NOT NULL,  -- JSON: endpoint, bucket, prefix, region, restore_required, allow_private, access_key_id
    secret BLOB,  -- the secret key sealed under the master key, bound to the name; NULL: the server's AWS chain
    created_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tier_outbox(  -- remote objects to delete (the catalog no longer references them)
    tier TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    queued_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ns INTEGER NOT NULL,  -- not retried before this time
    PRIMARY KEY(tier, blob_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tier_outbox_due ON tier_outbox(next_ns);
CREATE INDEX IF NOT EXISTS blobs_by_tier ON blobs(tier) WHERE tier IS NOT NULL;
"""


class TierTables(Tables):
    """The tier part of ``SqliteCatalog`` (a mixin, like ``KmsTables``: reads through
    ``_reader()``, writes through ``_write(fn)``, so a drive set changes every catalog copy)."""

    async def tier_create(self, record: TierRecord) -> bool:
        """Add ``record``; False (and nothing changed) when a tier of that name exists."""
        config = json.dumps(record.config, sort_keys=True, separators=(",", ":"))

        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT OR IGNORE INTO tiers(name, config, secret, created_ns) VALUES(?,?,?,?)",
                (record.name, config, record.sealed_secret, record.created_ns),
            )
            return cur.rowcount > 0

        return await self._write(fn)

    async def tier_get(self, name: str) -> TierRecord | None:
        sql = "SELECT name, config, secret, created_ns FROM tiers WHERE name=?"
        row = self._reader().execute(sql, (name,)).fetchone()
        return tier_of(row) if row else None

    async def tier_list(self) -> list[TierRecord]:
        sql = "SELECT name, config, secret, created_ns FROM tiers ORDER BY name"
        return [tier_of(r) for r in self._reader().execute(sql).fetchall()]

    async def tier_names(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT name FROM tiers ORDER BY name").fetchall()]

    async def tier_delete(self, name: str) -> Literal["deleted", "missing"] | TierUsage:
        """Remove the tier ``name`` unless a blob, an outbox entry or an upload names it (then:
        what names it, and nothing changed). The check and the delete are one transaction."""

        def fn(c: sqlite3.Connection) -> Literal["deleted", "missing"] | TierUsage:
            if c.execute("SELECT 1 FROM tiers WHERE name=?", (name,)).fetchone() is None:
                return "missing"
            usage = _usage_of(c, name)
            if usage.in_use:
                return usage
            c.execute("DELETE FROM tiers WHERE name=?", (name,))
            # v13 (_tier_progress.py): its counters go; writes waiting for it stay local, with its class as a label
            c.execute("DELETE FROM tier_stats WHERE tier=?", (name,))
            c.execute("DELETE FROM tier_pending WHERE tier=?", (name,))
            return "deleted"

        return await self._write(fn)

    async def tier_usage(self, name: str) -> TierUsage:
        return _usage_of(self._reader(), name)

    async def tier_sealed_key_ids(self) -> list[bytes]:
        """The sealing headers (first 5 bytes) of the tiers' sealed secrets: which master keys
        sealed them (``server.prepare_master_key`` checks them at start)."""
        sql = "SELECT DISTINCT substr(secret, 1, 5) FROM tiers WHERE secret IS NOT NULL"
        return [bytes(r[0]) for r in self._reader().execute(sql).fetchall()]


def _usage_of(c: sqlite3.Connection, name: str) -> TierUsage:
    blobs, size = c.execute("SELECT count(*), coalesce(sum(size), 0) FROM blobs WHERE tier=?", (name,)).fetchone()
    (outbox,) = c.execute("SELECT count(*) FROM tier_outbox WHERE tier=?", (name,)).fetchone()
    # Uploads are few (stale ones are aborted): their class is read from the JSON, no index.
    (uploads,) = c.execute("SELECT count(*) FROM uploads WHERE json_extract(meta, '$.sc')=?", (name,)).fetchone()
    return TierUsage(int(blobs), int(size), int(outbox), int(uploads))
