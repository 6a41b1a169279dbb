"""The tier tables (catalog/sqlite/_tiers.py, schema v10): a v9 catalog (single file and mirrored on a
drive set) upgrades in place and keeps its rows; tiers are created, listed and removed; removal
is refused while a blob, an outbox entry or an upload names the tier."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tests.catalog.migration import old_mirror
from tierstore.catalog import BlobRef, SqliteCatalog, TierRecord, TierUsage, VersionRecord
from tierstore.types import BucketInfo, ObjectMeta, UploadInfo

BLOB = "0000000000000000cccc"


def _store(cat: SqliteCatalog) -> None:
    asyncio.run(cat.create_bucket(BucketInfo("old", 1, "us-east-1")))
    meta = ObjectMeta(bucket="old", key="big", version_id="0" * 24, size_bytes=5, etag='"x"', modified_ns=9)
    asyncio.run(cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(BLOB, 5)])))


def _back_to_v9(db: Path) -> None:
    """A current catalog taken back to v9: no tier tables, no blobs.tier (its v9 DDL, verbatim)."""
    conn = sqlite3.connect(db)
    for table in ("hot_holds", "hot_requests"):  # v12 (catalog/sqlite/_hot.py)
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DROP INDEX blobs_cached")
    conn.execute("ALTER TABLE blobs DROP COLUMN cached")
    conn.execute("DROP INDEX blobs_by_tier")
    conn.execute("ALTER TABLE blobs DROP COLUMN tier")
    conn.execute("DROP TABLE tiers")
    conn.execute("DROP TABLE tier_outbox")
    conn.execute("UPDATE meta SET value='9' WHERE name='schema_version'")
    conn.commit()
    conn.close()


def _columns(db: Path, table: str) -> list[str]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


def _version(db: Path) -> str:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return str(conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0])
    finally:
        conn.close()


def _use_tiers(cat: SqliteCatalog) -> None:
    rec = asyncio.run(cat.get_latest("old", "big"))
    assert rec is not None and rec.blobs == [BlobRef(BLOB, 5)]  # nothing lost
    assert asyncio.run(cat.tier_list()) == [] and asyncio.run(cat.tier_usage("COLD")) == TierUsage()
    record = TierRecord("COLD", {"endpoint": "http://127.0.0.1:1", "bucket": "b"}, b"\x01sealed", 7)
    assert asyncio.run(cat.tier_create(record))
    assert asyncio.run(cat.tier_get("COLD")) == record
    assert asyncio.run(cat.tier_names()) == ["COLD"]


def test_v9_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    cat = SqliteCatalog(db)
    try:
        _store(cat)
    finally:
        cat.close()
    _back_to_v9(db)
    assert "tier" not in _columns(db, "blobs") and _version(db) == "9"
    cat = SqliteCatalog(db)
    try:
        _use_tiers(cat)
    finally:
        cat.close()
    assert _version(db) == "15"  # v9 -> v10 -> v11 -> v12 -> v13 -> v14 -> v15 in one step
    assert _columns(db, "blobs") == ["blob_id", "size", "refs", "tier", "cached"]
    assert _columns(db, "tier_outbox") == ["tier", "blob_id", "queued_ns", "attempts", "next_ns", "lease_owner"]
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT blob_id, size, refs, tier, cached FROM blobs").fetchall()
        assert rows == [(BLOB, 5, 1, None, None)]
    finally:
        conn.close()
    SqliteCatalog(db).close()  # and it opens again as current


def test_mirrored_v9_catalog_is_migrated_on_every_copy(tmp_path: Path) -> None:
    drives, dbs = old_mirror(tmp_path, 4, _store, _back_to_v9)
    cat = SqliteCatalog.on_drives(drives)
    other = SqliteCatalog.on_drives(drives)  # a second worker process: finds it done
    try:
        assert len({c["seq"] for c in cat.copies_state()}) == 1  # one fan-out transaction
        _use_tiers(cat)
        assert [c["state"] for c in other.copies_state()] == ["live"] * 4
        assert asyncio.run(other.tier_names()) == ["COLD"]
    finally:
        other.close()
        cat.close()
    for db in dbs:
        assert _version(db) == "15" and "tier" in _columns(db, "blobs")
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("SELECT name FROM tiers").fetchall() == [("COLD",)]
        finally:
            conn.close()


def test_remove_is_refused_while_anything_names_the_tier(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    cat = SqliteCatalog(db)
    try:
        _store(cat)
        record = TierRecord("COLD", {"endpoint": "http://127.0.0.1:1", "bucket": "b"}, None, 7)
        assert asyncio.run(cat.tier_create(record))
        assert not asyncio.run(cat.tier_create(TierRecord("COLD", {"other": 1}, None, 8)))  # taken: unchanged
        assert asyncio.run(cat.tier_get("COLD")) == record and asyncio.run(cat.tier_sealed_key_ids()) == []
        conn = sqlite3.connect(db)
        conn.execute("UPDATE blobs SET tier='COLD' WHERE blob_id=?", (BLOB,))
        conn.commit()
        assert asyncio.run(cat.tier_delete("COLD")) == TierUsage(blobs=1, bytes=5)
        conn.execute("UPDATE blobs SET tier=NULL")
        conn.execute("INSERT INTO tier_outbox(tier, blob_id, queued_ns, next_ns) VALUES('COLD', 'gone', 1, 1)")
        conn.commit()
        assert asyncio.run(cat.tier_delete("COLD")) == TierUsage(outbox=1)
        conn.execute("DELETE FROM tier_outbox")
        conn.commit()
        conn.close()
        upload = UploadInfo(upload_id="u1", bucket="old", key="k", initiated_ns=1, storage_class="COLD")
        asyncio.run(cat.create_upload(upload))
        assert asyncio.run(cat.tier_delete("COLD")) == TierUsage(uploads=1)
        asyncio.run(cat.abort_upload("u1"))
        assert asyncio.run(cat.tier_delete("COLD")) == "deleted"
        assert asyncio.run(cat.tier_delete("COLD")) == "missing"
        assert asyncio.run(cat.tier_list()) == []
    finally:
        cat.close()
