"""The mover's progress and retries (catalog/sqlite/_tier_progress.py, schema v13): a v11 catalog
upgrades in place (``lifecycle_due`` gains ``storage_class``); the counters; pending writes
are leased by a claim and backed off; removing a tier drops both; a write in a tier's class
waits for it until the mover's commit (on both catalogs)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tests.catalog.conftest import Opener
from tierstore.catalog import BlobRef, SqliteCatalog, TierRecord, VersionRecord
from tierstore.types import BucketInfo, ObjectMeta

S = 1_000_000_000


def test_v11_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    SqliteCatalog(db).close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE tier_stats")
    conn.execute("DROP TABLE tier_pending")
    conn.execute("DROP INDEX lifecycle_due_by_class")
    conn.execute("ALTER TABLE lifecycle_due DROP COLUMN storage_class")
    conn.execute(
        "INSERT INTO lifecycle_due(due_ns, bucket, key, version_id, action) VALUES(1, 'b', x'6b', 'v', 'expire')"
    )
    conn.execute("UPDATE meta SET value='11' WHERE name='schema_version'")
    conn.commit()
    conn.close()
    SqliteCatalog(db).close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("15",)
        assert conn.execute("SELECT action, storage_class FROM lifecycle_due").fetchall() == [("expire", None)]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"tier_stats", "tier_pending", "tier_pending_due", "lifecycle_due_by_class"} <= names
    finally:
        conn.close()


def test_counters_backlog_and_pending_leases(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "catalog.db")
    try:
        asyncio.run(cat.tier_create(TierRecord("COLD", {"endpoint": "http://x", "bucket": "b"}, None, 1)))
        assert asyncio.run(cat.tier_progress("COLD", 10 * S)).backlog == 0
        asyncio.run(cat.tier_error("COLD", "TierUnavailable: x" * 100, 5 * S))
        asyncio.run(cat.tier_error("COLD", "TierUnavailable: the last one", 6 * S))
        asyncio.run(cat.tier_pending_add("bk", "a/key", "v1", "COLD", 20 * S))
        asyncio.run(cat.tier_pending_add("bk", "b/key", "v2", "COLD", 30 * S))
        p = asyncio.run(cat.tier_progress("COLD", 10 * S))
        assert (p.errors, p.last_error, p.last_error_ns, p.pending, p.backlog) == (
            2,
            "TierUnavailable: the last one",
            6 * S,
            2,
            2,
        )
        assert not asyncio.run(cat.tier_pending_any(19 * S)) and asyncio.run(cat.tier_pending_any(20 * S))
        (item,) = asyncio.run(cat.tier_pending_claim(25 * S, 10, 100 * S))
        assert (item.key, item.version_id, item.attempts) == ("a/key", "v1", 1)
        assert [i.key for i in asyncio.run(cat.tier_pending_claim(30 * S, 10, 100 * S))] == ["b/key"]  # leased
        asyncio.run(cat.tier_pending_retry(item, 40 * S))
        (again,) = asyncio.run(cat.tier_pending_claim(40 * S, 10, 100 * S))
        assert again.attempts == 2
        asyncio.run(cat.tier_pending_done(again))
        assert asyncio.run(cat.tier_progress("COLD", 10 * S)).pending == 1
        assert asyncio.run(cat.tier_delete("COLD")) == "deleted"
        assert asyncio.run(cat.tier_progress("COLD", 10 * S)) == type(p)()
    finally:
        cat.close()


def test_a_write_in_a_tier_class_waits_for_its_tier_until_the_switch(catalogs: Opener) -> None:
    """The publishing transaction records a version in a tier's class (not a label class, not a
    STANDARD one) in ``tier_pending``; the mover's commit drops it and counts what it moved.
    On both catalogs (PostgreSQL: the write hooks of catalog/postgres/_versions.py, _tier_data.py)."""

    async def main() -> None:
        async with catalogs() as cat:
            await cat.tier_create(TierRecord("COLD", {"endpoint": "http://x", "bucket": "b"}, None, 1))
            await cat.create_bucket(BucketInfo("bk", 1, "us-east-1"))
            for key, sc in (("cold", "COLD"), ("label", "GLACIER"), ("std", "STANDARD")):
                meta = ObjectMeta(bucket="bk", key=key, version_id="null", size_bytes=3, etag='"e"', modified_ns=S,
                                  storage_class=sc)  # fmt: skip
                await cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(f"{key}-blob", 3)]))
            (item,) = await cat.tier_pending_claim(S + 600 * S, 10, S)
            assert (item.bucket, item.key, item.tier, item.attempts) == ("bk", "cold", "COLD", 0)
            assert (await cat.tier_progress("COLD", S)).pending == 1
            assert await cat.transition_commit("bk", "cold", "null", "COLD", [("cold-blob", None)])
            moved = await cat.tier_progress("COLD", S)
            assert (moved.pending, moved.moved_objects, moved.moved_bytes) == (0, 1, 3)

    asyncio.run(main())
