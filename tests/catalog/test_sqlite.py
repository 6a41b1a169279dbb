"""SqliteCatalog: schema migration (v1 to v6 to v10, single file and mirrored) and reference
counting, below the engine."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from awscrt.checksums import crc32c

from tierstore.catalog import AccessKeyRecord, BlobRef, DatasetRecord, SqliteCatalog, UserRecord, VersionRecord
from tierstore.drives import DriveSet
from tierstore.errors import InternalError
from tierstore.types import BucketInfo, ObjectMeta

# The schema of version 1 (the first release of the catalog), verbatim.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets(
    name TEXT PRIMARY KEY,
    created_ns INTEGER NOT NULL,
    region TEXT NOT NULL,
    props TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS versions(
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    version_id TEXT NOT NULL,
    is_latest INTEGER NOT NULL,
    is_delete_marker INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    modified_ns INTEGER NOT NULL,
    meta TEXT NOT NULL,
    blobs TEXT NOT NULL,
    PRIMARY KEY(bucket, key, version_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS versions_latest ON versions(bucket, key) WHERE is_latest = 1;
CREATE TABLE IF NOT EXISTS blobs(
    blob_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    refs INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trash(blob_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads(
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    initiated_ns INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads(bucket, key, initiated_ns);
CREATE TABLE IF NOT EXISTS parts(
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    modified_ns INTEGER NOT NULL,
    checksums TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    PRIMARY KEY(upload_id, part_number)
) WITHOUT ROWID;
"""


def make_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO meta(name, value) VALUES('schema_version', '1')")
    conn.execute("INSERT INTO buckets(name, created_ns, region, props) VALUES('old', 1, 'us-east-1', '{}')")
    meta = json.dumps({"h": {"content-type": "text/plain"}, "u": {"dataset": "imagenet@3", "loss": "0.25"}})
    conn.execute(
        "INSERT INTO versions(bucket, key, version_id, is_latest, is_delete_marker, size, etag, modified_ns, meta,"
        " blobs) VALUES('old', ?, 'null', 1, 0, 5, '\"e\"', 7, ?, '[[\"0000000000000000aaaa\", 5]]')",
        (b"kept/key", meta),
    )
    conn.execute("INSERT INTO blobs(blob_id, size, refs) VALUES('0000000000000000aaaa', 5, 1)")
    conn.commit()
    conn.close()


def test_v1_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    make_v1(db)
    cat = SqliteCatalog(db)
    try:
        rec = asyncio.run(cat.get_latest("old", "kept/key"))
        assert rec is not None
        assert rec.meta.user_meta == {"dataset": "imagenet@3", "loss": "0.25"}
        assert rec.blobs == [BlobRef("0000000000000000aaaa", 5)]
        # The metadata index was built for the existing object.
        found, _ = asyncio.run(cat.query("old", "meta.dataset = 'imagenet@3' AND meta.loss < 1"))
        assert [r.meta.key for r in found] == ["kept/key"]
        # And new writes version correctly on top of the migrated row.
        meta = ObjectMeta(bucket="old", key="kept/key", version_id="0" * 24, size_bytes=1, etag='"x"', modified_ns=9)
        asyncio.run(cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef("0000000000000000bbbb", 1)])))
        now = asyncio.run(cat.get_latest("old", "kept/key"))
        assert now is not None and now.meta.version_id == "null" and now.meta.etag == '"x"'
        assert asyncio.run(cat.trash_batch()) == ["0000000000000000aaaa"]
    finally:
        cat.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("15",)
    conn.close()


def test_shared_blobs_are_trashed_only_when_the_last_reference_goes(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.db")
    try:
        from tierstore.types import BucketInfo

        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))

        def put(key: str, blob: str) -> None:
            meta = ObjectMeta(bucket="b", key=key, version_id="1" * 24, size_bytes=3, etag='"e"', modified_ns=1)
            asyncio.run(cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(blob, 3)])))

        put("one", "shared0000000000")
        put("two", "shared0000000000")  # a server-side copy shares the blob
        asyncio.run(
            cat.put_version(
                VersionRecord(
                    meta=ObjectMeta(
                        bucket="b", key="one", version_id="2" * 24, size_bytes=3, etag='"f"', modified_ns=2
                    ),
                    blobs=[BlobRef("other00000000000", 3)],
                )
            )
        )
        assert asyncio.run(cat.trash_batch()) == []  # "two" still holds it
        marker = ObjectMeta(bucket="b", key="two", version_id="3" * 24, size_bytes=0, etag="", modified_ns=3)
        asyncio.run(cat.delete_object("b", "two", version_id=None, marker=marker))
        assert asyncio.run(cat.trash_batch()) == ["shared0000000000"]
    finally:
        cat.close()


# The schema of version 2 (versions in order, the metadata index), verbatim.
V2_SCHEMA = (
    V1_SCHEMA.replace(
        "    blobs TEXT NOT NULL,\n    PRIMARY KEY(bucket, key, version_id)",
        "    blobs TEXT NOT NULL,\n    seq INTEGER NOT NULL DEFAULT 0,\n    PRIMARY KEY(bucket, key, version_id)",
    )
    + """
CREATE INDEX IF NOT EXISTS versions_seq ON versions(bucket, key, seq);
CREATE TABLE IF NOT EXISTS obj_attrs(
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    num REAL,
    PRIMARY KEY(bucket, key, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS obj_attrs_value ON obj_attrs(bucket, name, value);
CREATE INDEX IF NOT EXISTS obj_attrs_num ON obj_attrs(bucket, name, num) WHERE num IS NOT NULL;
"""
)


def make_v2(path: Path, *, seq: int | None = None) -> None:
    """A v2 catalog with one (blob-backed) object; ``seq``: also a mirror's catalog_seq row."""
    conn = sqlite3.connect(path)
    conn.executescript(V2_SCHEMA)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("INSERT INTO meta(name, value) VALUES('schema_version', '2')")
    if seq is not None:
        conn.execute("INSERT INTO meta(name, value) VALUES('catalog_seq', ?)", (str(seq),))
    conn.execute("INSERT INTO buckets(name, created_ns, region, props) VALUES('old', 1, 'us-east-1', '{}')")
    conn.execute(
        "INSERT INTO versions(bucket, key, version_id, is_latest, is_delete_marker, size, etag, modified_ns, meta,"
        " blobs, seq) VALUES('old', ?, 'null', 1, 0, 5, '\"e\"', 7, '{\"u\":{\"a\":\"1\"}}',"
        " '[[\"0000000000000000aaaa\", 5]]', 1)",
        (b"kept/key",),
    )
    conn.execute(
        "INSERT INTO obj_attrs(bucket, key, name, value, num) VALUES('old', ?, 'meta.a', '1', 1.0)", (b"kept/key",)
    )
    conn.execute("INSERT INTO blobs(blob_id, size, refs) VALUES('0000000000000000aaaa', 5, 1)")
    conn.commit()
    conn.close()


def _use_migrated(cat: SqliteCatalog) -> None:
    rec = asyncio.run(cat.get_latest("old", "kept/key", data=True))
    assert rec is not None and rec.inline_id is None and rec.inline_data is None
    assert rec.blobs == [BlobRef("0000000000000000aaaa", 5)]
    found, _ = asyncio.run(cat.query("old", "meta.a = 1"))
    assert [r.meta.key for r in found] == ["kept/key"]
    # New writes: an inline body over the old blob-backed version.
    meta = ObjectMeta(bucket="old", key="kept/key", version_id="0" * 24, size_bytes=3, etag='"x"', modified_ns=9)
    asyncio.run(cat.put_version(VersionRecord(meta=meta, inline_data=b"new")))
    now = asyncio.run(cat.get_latest("old", "kept/key", data=True))
    assert now is not None and now.inline_data == b"new" and now.blobs == []
    assert asyncio.run(cat.trash_batch()) == ["0000000000000000aaaa"]
    assert asyncio.run(cat.counts())["inline"] == 1


def _schema_of(path: Path) -> tuple[str, list[str]]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        version = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0]
        cols = [r[1] for r in conn.execute("PRAGMA table_info(versions)")]
        return version, cols
    finally:
        conn.close()


def test_v2_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    make_v2(db)
    cat = SqliteCatalog(db)
    try:
        _use_migrated(cat)
    finally:
        cat.close()
    version, cols = _schema_of(db)
    assert version == "15" and cols[-1] == "inline_id"
    cat = SqliteCatalog(db)  # and opens again as v5
    try:
        rec = asyncio.run(cat.get_latest("old", "kept/key", data=True))
        assert rec is not None and rec.inline_data == b"new"
    finally:
        cat.close()


# Version 3 added the inline bodies: a column on versions and this table, verbatim.
V3_INLINE_DDL = "CREATE TABLE inline_blobs(blob_id TEXT PRIMARY KEY, crc32c INTEGER NOT NULL, data BLOB NOT NULL)"


def test_v3_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    """v3 -> v5: inline bodies get pin counts (datasets), the datasets and model tables appear; rows are kept."""
    db = tmp_path / "catalog.db"
    make_v2(db)
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE versions ADD COLUMN inline_id TEXT")
    conn.execute(V3_INLINE_DDL)
    conn.execute("INSERT INTO inline_blobs VALUES('00000000000000000bbb', ?, x'6e6577')", (crc32c(b"new"),))
    conn.execute(
        "UPDATE versions SET blobs='[]', size=3, inline_id='00000000000000000bbb' WHERE bucket='old'"
    )
    conn.execute("DELETE FROM blobs")
    conn.execute("UPDATE meta SET value='3' WHERE name='schema_version'")
    conn.commit()
    conn.close()
    cat = SqliteCatalog(db)
    try:
        rec = asyncio.run(cat.get_latest("old", "kept/key", data=True))
        assert rec is not None and rec.inline_data == b"new"
        assert asyncio.run(cat.list_datasets()) == []
    finally:
        cat.close()
    conn = sqlite3.connect(db)
    try:
        assert [r[1] for r in conn.execute("PRAGMA table_info(inline_blobs)")][-2:] == ["pins", "released"]
        assert conn.execute("SELECT pins, released FROM inline_blobs").fetchall() == [(0, 0)]
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("15",)
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    make_v2(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(InternalError, match="schema 99"):
        SqliteCatalog(db)


def test_mirrored_v2_catalog_is_migrated_on_every_copy(tmp_path: Path) -> None:
    drives = DriveSet.open([tmp_path / f"d{i}" for i in range(4)])
    for p in drives.paths:
        (p / "catalog").mkdir()
        make_v2(p / "catalog" / "catalog.db", seq=5)
    assert SqliteCatalog.reconcile(drives).current == [0, 1, 2, 3]
    cat = SqliteCatalog.on_drives(drives)
    other = SqliteCatalog.on_drives(drives)  # a second worker process: finds it done
    try:
        assert [c["seq"] for c in cat.copies_state()] == [6] * 4  # one fan-out transaction
        _use_migrated(cat)
        assert [c["state"] for c in other.copies_state()] == ["live"] * 4
        assert asyncio.run(other.get_latest("old", "kept/key", data=True)).inline_data == b"new"  # type: ignore[union-attr]
    finally:
        other.close()
        cat.close()
    for p in drives.paths:
        assert _schema_of(p / "catalog" / "catalog.db") == _schema_of(drives.paths[0] / "catalog" / "catalog.db")
        assert _schema_of(p / "catalog" / "catalog.db")[0] == "15"


def test_v4_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    """v4 -> v5: the model registry's tables appear; datasets, pins and versions are kept as they were."""
    db = tmp_path / "catalog.db"
    cat = SqliteCatalog(db)  # a current catalog with a dataset pinning an inline body...
    try:
        asyncio.run(cat.create_bucket(BucketInfo("old", 1, "us-east-1")))
        meta = ObjectMeta(bucket="old", key="k", version_id="0" * 24, size_bytes=3, etag='"x"', modified_ns=9)
        asyncio.run(cat.put_version(VersionRecord(meta=meta, inline_data=b"abc")))
        rec = asyncio.run(cat.get_latest("old", "k"))
        assert rec is not None and rec.inline_id is not None
        inline_id = rec.inline_id
        record = DatasetRecord("ds", 1, "manifest0000000001", 10, 1, 1, 3, {"source": {"rows": 1}})
        asyncio.run(cat.create_dataset(record, [], [inline_id]))
    finally:
        cat.close()
    conn = sqlite3.connect(db)  # ...taken back to v4: no model tables
    conn.execute("DROP TABLE models")
    conn.execute("DROP TABLE model_aliases")
    conn.execute("UPDATE meta SET value='4' WHERE name='schema_version'")
    conn.commit()
    conn.close()
    cat = SqliteCatalog(db)
    try:
        listed = asyncio.run(cat.list_datasets())
        assert [(r.name, r.version, r.info) for r in listed] == [("ds", 1, {"source": {"rows": 1}})]
        assert asyncio.run(cat.list_datasets(table="models")) == [] and asyncio.run(cat.model_aliases()) == []
        assert asyncio.run(cat.inline_bodies([inline_id])) == {inline_id: b"abc"}
        model = DatasetRecord("m", 1, "manifest0000000002", 10, 2, 1, 3, {"checkpoint": {"step": 1}})
        asyncio.run(cat.create_dataset(model, [], [inline_id], table="models"))
        asyncio.run(cat.set_model_alias("m", "production", 1, 5))
        assert asyncio.run(cat.model_alias("m", "production")) == 1
    finally:
        cat.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("15",)
        assert conn.execute("SELECT pins FROM inline_blobs WHERE blob_id=?", (inline_id,)).fetchone() == (2,)
        assert conn.execute("SELECT name, alias, version FROM model_aliases").fetchall() == [("m", "production", 1)]
        assert conn.execute("SELECT count(*) FROM completed_uploads").fetchone() == (0,)  # v5 -> v6
    finally:
        conn.close()


_IAM_TABLES = [
    "iam_access_keys",
    "iam_attachments",
    "iam_boundaries",
    "iam_group_members",
    "iam_groups",
    "iam_inline_policies",
    "iam_oidc_providers",
    "iam_policies",
    "iam_roles",
    "iam_users",
]


def _back_to_v6(db: Path) -> None:
    """A current catalog taken back to v6: no identity tables."""
    conn = sqlite3.connect(db)
    for table in _IAM_TABLES:
        conn.execute(f"DROP TABLE {table}")
    conn.execute("UPDATE meta SET value='6' WHERE name='schema_version'")
    conn.commit()
    conn.close()


def _v6_store(cat: SqliteCatalog) -> None:
    asyncio.run(cat.create_bucket(BucketInfo("old", 1, "us-east-1")))
    meta = ObjectMeta(bucket="old", key="k", version_id="0" * 24, size_bytes=3, etag='"x"', modified_ns=9)
    asyncio.run(cat.put_version(VersionRecord(meta=meta, inline_data=b"abc")))


def _use_identities(cat: SqliteCatalog) -> None:
    rec = asyncio.run(cat.get_latest("old", "k", data=True))
    assert rec is not None and rec.inline_data == b"abc"  # nothing lost
    asyncio.run(cat.iam_create_user(UserRecord("alice", "AIDA1", True, {}, 5)))
    key = AccessKeyRecord("TKX", "alice", "user", b"\x01sealed", "Active", 5, None, None, None)
    asyncio.run(cat.iam_create_key(key))
    assert asyncio.run(cat.iam_get_key("TKX")) == key
    assert [u.name for u in asyncio.run(cat.iam_list_users())] == ["alice"]


def test_v6_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    """v6 -> v7: the identity tables appear; buckets and objects are kept."""
    db = tmp_path / "catalog.db"
    cat = SqliteCatalog(db)
    try:
        _v6_store(cat)
    finally:
        cat.close()
    _back_to_v6(db)
    cat = SqliteCatalog(db)
    try:
        _use_identities(cat)
    finally:
        cat.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("15",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert set(_IAM_TABLES) <= tables
    finally:
        conn.close()


def test_mirrored_v6_catalog_is_migrated_on_every_copy(tmp_path: Path) -> None:
    drives = DriveSet.open([tmp_path / f"d{i}" for i in range(4)])
    SqliteCatalog.reconcile(drives)
    cat = SqliteCatalog.on_drives(drives)
    try:
        _v6_store(cat)
    finally:
        cat.close()
    for p in drives.paths:
        _back_to_v6(p / "catalog" / "catalog.db")
    cat = SqliteCatalog.on_drives(drives)
    try:
        _use_identities(cat)
    finally:
        cat.close()
    for p in drives.paths:
        assert _schema_of(p / "catalog" / "catalog.db")[0] == "15"
        conn = sqlite3.connect(p / "catalog" / "catalog.db")
        try:
            assert conn.execute("SELECT user_name, status FROM iam_access_keys").fetchall() == [("alice", "Active")]
        finally:
            conn.close()


def test_v7_catalog_gains_permissions_boundaries(tmp_path: Path) -> None:
    """v7 -> v8: the iam_boundaries table appears; users, keys and policies are kept, and a
    boundary can be set, read and removed."""
    db = tmp_path / "catalog.db"
    cat = SqliteCatalog(db)
    try:
        _v6_store(cat)
        _use_identities(cat)
        asyncio.run(cat.iam_create_policy("cap", "ANPA1", '{"Statement": []}', "", 5))
    finally:
        cat.close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE iam_boundaries")
    conn.execute("UPDATE meta SET value='7' WHERE name='schema_version'")
    conn.commit()
    conn.close()
    cat = SqliteCatalog(db)
    try:
        assert asyncio.run(cat.iam_get_key("TKX")) is not None and asyncio.run(cat.iam_get_policy("cap")) is not None
        assert asyncio.run(cat.iam_boundary("user", "alice")) is None
        asyncio.run(cat.iam_set_boundary("user", "alice", "cap"))
        assert asyncio.run(cat.iam_boundary("user", "alice")) == ("cap", '{"Statement": []}')
        asyncio.run(cat.iam_set_boundary("user", "alice", None))
        assert asyncio.run(cat.iam_boundary("user", "alice")) is None
    finally:
        cat.close()
    assert _schema_of(db)[0] == "15"
