"""The embedded catalog's schema: the core tables (the other parts' DDL lives beside their code
and is appended here), and the migrations from every older version (v1 to v12) to the current one,
each a plain statement so a mirror runs them as one fan-out transaction.

Keys are stored as BLOB (their UTF-8 bytes) so ordering is byte order, as S3 lists.
"""

from __future__ import annotations

import sqlite3

from tierstore.catalog._query import INDEX_DDL
from tierstore.catalog.sqlite._hot import HOT_DDL
from tierstore.catalog.sqlite._identity import IDENTITY_DDL
from tierstore.catalog.sqlite._index import reindex
from tierstore.catalog.sqlite._kms import KMS_DDL
from tierstore.catalog.sqlite._leases import LEASES_DDL, add_lease_columns
from tierstore.catalog.sqlite._lifecycle import LIFECYCLE_DDL
from tierstore.catalog.sqlite._tier_progress import TIER_PROGRESS_DDL
from tierstore.catalog.sqlite._tiers import TIERS_DDL
from tierstore.errors import InternalError

SCHEMA_VERSION = 15


_SCHEMA = """
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
    seq INTEGER NOT NULL DEFAULT 0,  -- order of the versions of one key (newest = highest)
    inline_id TEXT,  -- the body is in inline_blobs (docs/inline.md); NULL: in the blob store
    PRIMARY KEY(bucket, key, version_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS versions_latest ON versions(bucket, key) WHERE is_latest = 1;
CREATE INDEX IF NOT EXISTS versions_seq ON versions(bucket, key, seq);
CREATE TABLE IF NOT EXISTS blobs(
    blob_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    refs INTEGER NOT NULL,
    tier TEXT,  -- v10: NULL: on the local drives; else the remote tier holding it (_tiers.py)
    cached INTEGER  -- v12: 1: a remote blob with a verified local copy a hold needs (_hot.py); else NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trash(blob_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inline_blobs(
    blob_id TEXT PRIMARY KEY,
    crc32c INTEGER NOT NULL,
    data BLOB NOT NULL,
    pins INTEGER NOT NULL DEFAULT 0,  -- dataset versions that pin this body (docs/datasets.md)
    released INTEGER NOT NULL DEFAULT 0  -- its version is gone; the row lives on for the pins
);
CREATE TABLE IF NOT EXISTS datasets(
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_blob TEXT NOT NULL,  -- the Parquet manifest, a blob counted in blobs.refs
    manifest_bytes INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    info TEXT NOT NULL,  -- JSON: source, label, columns, lineage
    PRIMARY KEY(name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models(  -- registered models (docs/checkpoints.md): pins exactly as datasets do
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_blob TEXT NOT NULL,  -- Parquet: one row per byte range of each checkpoint file + the commit
    manifest_bytes INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    info TEXT NOT NULL,  -- JSON: checkpoint, commit version, step, run, kind, metrics, datasets, tags
    PRIMARY KEY(name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_aliases(
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY(name, alias)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS uploads(
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    initiated_ns INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads(bucket, key, initiated_ns);
CREATE TABLE IF NOT EXISTS completed_uploads(  -- answers a retried CompleteMultipartUpload (kept a day)
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    completed_ns INTEGER NOT NULL,
    parts TEXT NOT NULL,  -- fingerprint of the part list that completed it
    result TEXT NOT NULL  -- JSON: version id, ETag, size, checksums, part sizes
);
CREATE INDEX IF NOT EXISTS completed_uploads_age ON completed_uploads(completed_ns);
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
""" + INDEX_DDL + IDENTITY_DDL + KMS_DDL + TIERS_DDL + LIFECYCLE_DDL + HOT_DDL + TIER_PROGRESS_DDL + LEASES_DDL


def _statements(script: str) -> list[str]:
    """The SQL statements of ``script``, each complete (a ``;`` inside a comment does not split)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    return out


def schema_version(conn: sqlite3.Connection) -> int | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
    return int(row[0]) if row else None


def upgrade(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: bring a new, v1, ... or v12 database to the current schema. Steps
    are plain statements (no executescript, which would commit), so a mirror can run this as
    one fan-out job and every copy changes together."""
    found = schema_version(conn)
    if found == 1:  # v1 (unversioned only) -> v2: version order and the metadata index
        conn.execute("ALTER TABLE versions ADD COLUMN seq INTEGER NOT NULL DEFAULT 1")
        for stmt in _statements(INDEX_DDL):
            conn.execute(stmt)
        for bucket, key_b in conn.execute("SELECT bucket, key FROM versions WHERE is_latest=1").fetchall():
            reindex(conn, bucket, bytes(key_b))
        found = 2
    if found == 2:  # v2 -> v3: small bodies inline (docs/inline.md); no row is rewritten
        conn.execute("ALTER TABLE versions ADD COLUMN inline_id TEXT")
        found = 3
    has_inline = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='inline_blobs'").fetchone()
    if found == 3 and has_inline:  # v3 -> v4: datasets pin inline bodies (docs/datasets.md)
        conn.execute("ALTER TABLE inline_blobs ADD COLUMN pins INTEGER NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE inline_blobs ADD COLUMN released INTEGER NOT NULL DEFAULT 0")
    if found == 3:  # the datasets table itself comes with the schema below
        found = 4
    if found == 4:  # v4 -> v5: the model registry; its two tables come with the schema below
        found = 5
    if found == 5:  # v5 -> v6: completed uploads (idempotent completion); the table comes below
        found = 6
    if found == 6:  # v6 -> v7: identities (users, keys, groups, policies, roles, OIDC); the tables come below
        found = 7
    if found == 7:  # v7 -> v8: permissions boundaries (iam_boundaries); the table comes below
        found = 8
    if found == 8:  # v8 -> v9: the local key service's keys (kms_keys, kms_key_versions); the tables come below
        found = 9
    if found == 9:  # v9 -> v10: tiers (docs/tiers.md); blobs.tier here, tiers and tier_outbox come below
        if "tier" not in {row[1] for row in conn.execute("PRAGMA table_info(blobs)")}:
            conn.execute("ALTER TABLE blobs ADD COLUMN tier TEXT")
        found = 10
    if found == 10:  # v10 -> v11: the lifecycle due index (docs/tiers.md); its tables come below
        found = 11
    if found == 11:  # v11 -> v12: hot copies (docs/tiers.md); blobs.cached here, hot_holds and hot_requests below
        if "cached" not in {row[1] for row in conn.execute("PRAGMA table_info(blobs)")}:
            conn.execute("ALTER TABLE blobs ADD COLUMN cached INTEGER")
        found = 12
    if found == 12:  # v12 -> v13: the mover's progress and retries (_tier_progress.py); the tables come below
        columns = {row[1] for row in conn.execute("PRAGMA table_info(lifecycle_due)")}
        if columns and "storage_class" not in columns:  # no table yet (from v10 or older): made below
            conn.execute("ALTER TABLE lifecycle_due ADD COLUMN storage_class TEXT")
        found = 13
    if found == 13:  # v13 -> v14: the gateway registry and leases (_leases.py); tables and columns below
        found = 14
    if found == 14:  # v14 -> v15: owner-fenced lifecycle and pending-write leases (_leases.py); columns below
        found = 15
    if found is not None and found != SCHEMA_VERSION:  # before the DDL: a newer schema may lack what it names
        raise InternalError(f"catalog schema {found} is not supported (expected {SCHEMA_VERSION})")
    for stmt in _statements(_SCHEMA):  # a new database; IF NOT EXISTS everywhere
        conn.execute(stmt)
    add_lease_columns(conn)
    conn.execute("INSERT OR IGNORE INTO meta(name, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.execute("UPDATE meta SET value=? WHERE name='schema_version'", (str(SCHEMA_VERSION),))


def init_schema(conn: sqlite3.Connection) -> None:
    """The current schema on a new database, or an older one upgraded; one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        upgrade(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def check_schema(conn: sqlite3.Connection, *, upgradable: bool = False) -> None:
    """Raise unless the database has the current schema (or, with ``upgradable``, v2 to v14)."""
    found = schema_version(conn)
    if found != SCHEMA_VERSION and not (upgradable and found in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)):
        raise InternalError(f"catalog schema {found or 'missing'} is not supported (expected {SCHEMA_VERSION})")
