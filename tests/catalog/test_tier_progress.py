"""The mover's progress and retries (catalog/_tier_progress.py, schema v13): a v11 catalog
upgrades in place (``lifecycle_due`` gains ``storage_class``); the counters; pending writes
are leased by a claim and backed off; removing a tier drops both."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tierstore.catalog import BlobRef, SqliteCatalog, TierRecord, TransitionItem, VersionRecord
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
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("13",)
        assert conn.execute("SELECT action, storage_class FROM lifecycle_due").fetchall() == [("expire", None)]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"tier_stats", "tier_pending", "tier_pending_due", "lifecycle_due_by_class"} <= names
    finally:
        conn.close()


def test_counters_backlog_and_pending_leases(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "catalog.db")
    try:
        asyncio.run(cat.tier_create(TierRecord("COLD", {"endpoint": "http://x", "bucket": "b"}, None, 1)))
        assert cat.tier_progress("COLD", 10 * S).backlog == 0
        asyncio.run(cat.tier_error("COLD", "TierUnavailable: x" * 100, 5 * S))
        asyncio.run(cat.tier_error("COLD", "TierUnavailable: the last one", 6 * S))
        asyncio.run(cat.tier_pending_add("bk", "a/key", "v1", "COLD", 20 * S))
        asyncio.run(cat.tier_pending_add("bk", "b/key", "v2", "COLD", 30 * S))
        p = cat.tier_progress("COLD", 10 * S)
        assert (p.errors, p.last_error, p.last_error_ns, p.pending, p.backlog) == (
            2,
            "TierUnavailable: the last one",
            6 * S,
            2,
            2,
        )
        assert not cat.tier_pending_any(19 * S) and cat.tier_pending_any(20 * S)
        (item,) = asyncio.run(cat.tier_pending_claim(25 * S, 10, 100 * S))
        assert (item.key, item.version_id, item.attempts) == ("a/key", "v1", 1)
        assert [i.key for i in asyncio.run(cat.tier_pending_claim(30 * S, 10, 100 * S))] == ["b/key"]  # leased
        asyncio.run(cat.tier_pending_retry(item, 40 * S))
        (again,) = asyncio.run(cat.tier_pending_claim(40 * S, 10, 100 * S))
        assert again.attempts == 2
        asyncio.run(cat.tier_pending_done(again))
        assert cat.tier_progress("COLD", 10 * S).pending == 1
        assert asyncio.run(cat.tier_delete("COLD")) == "deleted"
        assert cat.tier_progress("COLD", 10 * S) == type(p)()
    finally:
        cat.close()


def test_a_write_in_a_tier_class_waits_for_its_tier_until_the_switch(tmp_path: Path) -> None:
    """The publishing transaction records a version in a tier's class (not a label class, not a
    STANDARD one) in ``tier_pending``; the mover's commit drops it."""
    cat = SqliteCatalog(tmp_path / "catalog.db")
    try:
        asyncio.run(cat.tier_create(TierRecord("COLD", {"endpoint": "http://x", "bucket": "b"}, None, 1)))
        asyncio.run(cat.create_bucket(BucketInfo("bk", 1, "us-east-1")))
        for key, sc in (("cold", "COLD"), ("label", "GLACIER"), ("std", "STANDARD")):
            meta = ObjectMeta(bucket="bk", key=key, version_id="null", size_bytes=3, etag='"e"', modified_ns=S,
                              storage_class=sc)  # fmt: skip
            asyncio.run(cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(f"{key}-blob", 3)])))
        (item,) = asyncio.run(cat.tier_pending_claim(S + 600 * S, 10, S))
        assert (item.bucket, item.key, item.tier, item.attempts) == ("bk", "cold", "COLD", 0)
        assert cat.tier_progress("COLD", S).pending == 1
        assert asyncio.run(cat.transition_commit("bk", "cold", "null", "COLD", [("cold-blob", None)]))
        assert cat.tier_progress("COLD", S).pending == 0
        assert cat.tier_progress("COLD", S).moved_objects == 1 and cat.tier_progress("COLD", S).moved_bytes == 3
    finally:
        cat.close()


def test_a_batch_of_switches_is_checked_and_counted_per_version(tmp_path: Path) -> None:
    """``transition_commit_many`` (the mover's group commit): one transaction, each version as if
    alone — a gone version, a blob the version no longer names, a blob whose old copy waits in
    the target's outbox: False and nothing of it changed; the others switch and are counted."""
    cat = SqliteCatalog(tmp_path / "catalog.db")
    try:
        asyncio.run(cat.tier_create(TierRecord("COLD", {"endpoint": "http://x", "bucket": "b"}, None, 1)))
        asyncio.run(cat.create_bucket(BucketInfo("bk", 1, "us-east-1")))
        for i in range(4):
            meta = ObjectMeta(bucket="bk", key=f"k{i}", version_id="null", size_bytes=10 + i, etag='"e"', modified_ns=S)
            asyncio.run(cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(f"blob-{i}", 10 + i)])))
        conn = sqlite3.connect(tmp_path / "catalog.db")
        conn.execute(
            "INSERT INTO tier_outbox(tier, blob_id, queued_ns, attempts, next_ns) VALUES('COLD','blob-3',1,0,0)"
        )
        conn.commit()
        conn.close()
        items = [
            TransitionItem("bk", "k0", "null", "COLD", (("blob-0", None),)),
            TransitionItem("bk", "gone", "null", "COLD", (("blob-1", None),)),
            TransitionItem("bk", "k1", "null", "COLD", (("blob-2", None),)),  # not k1's blob
            TransitionItem("bk", "k3", "null", "COLD", (("blob-3", None),)),  # an old copy is being deleted
            TransitionItem("bk", "k2", "null", "COLD", (("blob-2", None),)),
        ]
        assert asyncio.run(cat.transition_commit_many(items)) == [True, False, False, False, True]
        assert cat.blob_tiers([f"blob-{i}" for i in range(4)]) == {"blob-0": "COLD", "blob-2": "COLD"}
        classes = {k: cat.get_version("bk", k, "null").meta.storage_class for k in ("k0", "k1", "k2", "k3")}  # type: ignore[union-attr]
        assert classes == {"k0": "COLD", "k1": "STANDARD", "k2": "COLD", "k3": "STANDARD"}
        p = cat.tier_progress("COLD", S)
        assert (p.moved_objects, p.moved_bytes) == (2, 10 + 12)
        assert sorted(cat.trash_batch(10)) == ["blob-0", "blob-2"]  # their local copies, freed after the commit
    finally:
        cat.close()
