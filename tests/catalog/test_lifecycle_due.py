"""The lifecycle due index (catalog/sqlite/_lifecycle.py, schema v11): a v10 catalog (single file and
mirrored) upgrades in place; the writes keep the rows in their own transaction, only in buckets
with rules; a rule change queues a recompute done in pages; claims lease rows."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from tests.catalog.conftest import Opener
from tierstore.catalog import SqliteCatalog, VersionRecord
from tierstore.drives import DriveSet
from tierstore.engine import LifecycleConfig, LifecycleExpiration, LifecycleFilter, LifecyclePlan, LifecycleRule
from tierstore.types import BucketInfo, ObjectMeta, UploadInfo

S = 1_000_000_000
RULES = LifecycleConfig(
    (
        LifecycleRule("e", True, LifecycleFilter("prefix", "tmp/"), LifecycleExpiration(days=2)),
        LifecycleRule("u", True, LifecycleFilter("prefix", "tmp/"), abort_days=3),
    )
).to_props()


def _put(cat: SqliteCatalog, bucket: str, key: str, t_s: int, vid: str = "null") -> None:
    meta = ObjectMeta(bucket=bucket, key=key, version_id=vid, size_bytes=1, etag='"e"', modified_ns=t_s * S)
    asyncio.run(cat.put_version(VersionRecord(meta=meta, inline_data=b"x")))


def _rows(cat: SqliteCatalog, bucket: str) -> list[tuple[str, str, str, int]]:
    return [(r.key, r.version_id, r.action, r.due_ns // S) for r in asyncio.run(cat.lifecycle_rows(bucket))]


def _back_to_v10(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE lifecycle_due")
    conn.execute("DROP TABLE lifecycle_recompute")
    conn.execute("UPDATE meta SET value='10' WHERE name='schema_version'")
    conn.commit()
    conn.close()


def _version_and_tables(db: Path) -> tuple[str, list[str]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        version = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0]
        names = conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'lifecycle%' ORDER BY name").fetchall()
        return str(version), [n[0] for n in names]
    finally:
        conn.close()


def test_v10_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    SqliteCatalog(db).close()
    _back_to_v10(db)
    assert _version_and_tables(db) == ("10", [])
    cat = SqliteCatalog(db)
    cat.lifecycle_planner = LifecyclePlan(day_s=1)
    try:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1, "us-east-1"), {"lifecycle": RULES}))
        _put(cat, "b", "tmp/a", 100)
        assert _rows(cat, "b") == [("tmp/a", "null", "expire", 102)]
    finally:
        cat.close()
    tables = ["lifecycle_due", "lifecycle_due_at", "lifecycle_due_by_class", "lifecycle_recompute"]
    assert _version_and_tables(db) == ("15", tables)


def test_mirrored_v10_catalog_is_migrated_and_every_copy_has_the_rows(tmp_path: Path) -> None:
    drives = DriveSet.open([tmp_path / f"d{i}" for i in range(3)])
    SqliteCatalog.reconcile(drives)
    SqliteCatalog.on_drives(drives).close()
    dbs = [p / "catalog" / "catalog.db" for p in drives.paths]
    for db in dbs:
        _back_to_v10(db)
    cat = SqliteCatalog.on_drives(drives)
    cat.lifecycle_planner = LifecyclePlan(day_s=1)
    try:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1, "us-east-1"), {"lifecycle": RULES}))
        _put(cat, "b", "tmp/a", 100)
    finally:
        cat.close()
    for db in dbs:
        assert _version_and_tables(db)[0] == "15"
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("SELECT due_ns, action FROM lifecycle_due").fetchall() == [(102 * S, "expire")]
        finally:
            conn.close()


def test_writes_keep_the_rows_and_rule_changes_are_recomputed_in_pages(catalogs: Opener) -> None:
    """On both catalogs (PostgreSQL: the hooks of catalog/postgres/_versions.py, _uploads.py,
    _buckets.py keep the rows in the writes' transactions)."""

    async def put(cat: Any, bucket: str, key: str, t_s: int) -> None:
        meta = ObjectMeta(bucket=bucket, key=key, version_id="null", size_bytes=1, etag='"e"', modified_ns=t_s * S)
        await cat.put_version(VersionRecord(meta=meta, inline_data=b"x"))

    async def rows(cat: Any, bucket: str) -> list[tuple[str, str, str, int]]:
        return [(r.key, r.version_id, r.action, r.due_ns // S) for r in await cat.lifecycle_rows(bucket)]

    async def set_rules(cat: Any, bucket: str, rules: object) -> None:
        def update(props: dict[str, object]) -> dict[str, object]:
            return {**{k: v for k, v in props.items() if k != "lifecycle"}, **({"lifecycle": rules} if rules else {})}

        await cat.update_bucket_props(bucket, update)

    async def main() -> None:
        async with catalogs() as cat:
            cat.lifecycle_planner = LifecyclePlan(day_s=1)
            await cat.create_bucket(BucketInfo("plain", 1, "us-east-1"))
            await cat.create_bucket(BucketInfo("ruled", 1, "us-east-1"), {"lifecycle": RULES})
            for bucket in ("plain", "ruled"):
                await put(cat, bucket, "tmp/a", 100)
                await put(cat, bucket, "keep", 100)
                await cat.create_upload(UploadInfo(bucket=bucket, key="tmp/u", upload_id=f"up-{bucket}",
                                                   initiated_ns=50 * S))  # fmt: skip
            assert await rows(cat, "plain") == []  # no rules: no rows, no cost
            assert await rows(cat, "ruled") == [
                ("tmp/a", "null", "expire", 102), ("tmp/u", "up-ruled", "abort-upload", 53),
            ]  # fmt: skip
            await put(cat, "ruled", "tmp/a", 200)  # an overwrite moves the due time
            assert (await rows(cat, "ruled"))[0] == ("tmp/a", "null", "expire", 202)
            await cat.abort_upload("up-ruled")
            await cat.delete_object("ruled", "tmp/a", version_id="null", marker=ObjectMeta(
                bucket="ruled", key="tmp/a", version_id="m", size_bytes=0, etag="", modified_ns=300 * S))  # fmt: skip
            assert await rows(cat, "ruled") == []  # deleting a version deletes its rows
            # Rules put on a bucket with objects: queued, then recomputed a page at a time.
            for i in range(5):
                await put(cat, "plain", f"tmp/{i}", 10 + i)
            await set_rules(cat, "plain", RULES)
            assert await rows(cat, "plain") == []
            pages = []
            while (page := await cat.lifecycle_recompute_page(keys=2)) is not None:
                pages.append(page)
            assert pages == [("plain", 2, False), ("plain", 2, False), ("plain", 2, False), ("plain", 1, True)]
            expected = [(f"tmp/{i}", "null", "expire", 12 + i) for i in range(5)]
            got = await rows(cat, "plain")
            assert [r for r in got if r[2] == "expire"] == [*expected, ("tmp/a", "null", "expire", 102)]
            assert ("tmp/u", "up-plain", "abort-upload", 53) in got
            # A claim leases what is due: a second claim at the same time finds nothing.
            claimed = await cat.lifecycle_claim(14 * S, limit=10, lease_ns=600 * S)
            assert sorted(r.key for r in claimed) == ["tmp/0", "tmp/1", "tmp/2"]
            assert await cat.lifecycle_claim(14 * S, limit=10, lease_ns=600 * S) == []
            # Rules removed: the recompute drops every row of the bucket.
            await set_rules(cat, "plain", None)
            while await cat.lifecycle_recompute_page(keys=2) is not None:
                pass
            assert await rows(cat, "plain") == []

    asyncio.run(main())
