"""SQLite catalog: the embedded default.

One database file in WAL mode with ``synchronous=FULL``: a transaction that returned is on
disk. Writes run on one dedicated thread per process (``BEGIN IMMEDIATE``, so several server
processes sharing the file serialize through SQLite's lock and ``busy_timeout``); point reads
and listings run inline on the caller's thread with their own connection (WAL readers never
block the writer and see only committed state).

Group commit: when the writer thread becomes free it takes every write job queued meanwhile
(at most ``max_batch``) and runs them in one transaction, each in its own savepoint, so one
WAL fsync (one fan-out commit on a mirror) acknowledges them all. A job that raises is rolled
back to its savepoint and fails alone; a failed COMMIT fails the whole batch. There is no
timer: an idle writer starts a lone job at once. Jobs that are not plain writes (open, close,
migrations, reseed) run alone, between batches.

Keys are stored as BLOB (their UTF-8 bytes) so ordering is byte order, as S3 lists. Blob
references are counted in ``blobs``; a version that goes away moves its unreferenced blobs
into ``trash`` in the same transaction, which GC drains. A blob on disk that is in neither
table is an orphan (a crash between blob write and commit) and GC removes it after a grace
period that covers in-flight uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import queue
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from awscrt.checksums import crc32c

from tierstore.catalog._hot import HOT_DDL, HotTables
from tierstore.catalog._identity import IDENTITY_DDL, IdentityTables
from tierstore.catalog._kms import KMS_DDL, KmsTables
from tierstore.catalog._leases import LEASES_DDL, LeaseTables, add_lease_columns
from tierstore.catalog._lifecycle import LIFECYCLE_DDL, LifecycleTables
from tierstore.catalog._mirror import DEFAULT_RELPATH, MMAP_BYTES, CatalogMirror, Failed, ReconcileReport, run_jobs
from tierstore.catalog._query import INDEX_DDL, attr_num
from tierstore.catalog._records import (
    PINNING_TABLES,
    BlobRef,
    DatasetRecord,
    Guard,
    ModelAliasInUse,
    PinGone,
    VersioningChanged,
    VersionRecord,
    VersionTaken,
)
from tierstore.catalog._sse import SseTables
from tierstore.catalog._tier_data import TIERS_OF_BLOBS, TierDataTables, located
from tierstore.catalog._tier_progress import TIER_PROGRESS_DDL, TierProgressTables, note_tier_write
from tierstore.catalog._tiers import TIERS_DDL, TierTables
from tierstore.drives import DriveSet
from tierstore.errors import (
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    CorruptBlob,
    InsufficientStorage,
    InternalError,
    NoSuchBucket,
    NoSuchDataset,
    NoSuchKey,
    NoSuchModel,
    NoSuchUpload,
    NoSuchVersion,
)
from tierstore.runtime import new_blob_id
from tierstore.types import NULL_VERSION, BucketInfo, ObjectMeta, PartInfo, UploadInfo

__all__ = [
    "PINNING_TABLES",
    "BlobRef",
    "DatasetRecord",
    "ModelAliasInUse",
    "PinGone",
    "SqliteCatalog",
    "VersionRecord",
    "VersionTaken",
]

log = logging.getLogger("tierstore.catalog")

T = TypeVar("T")

SCHEMA_VERSION = 14
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
# the metadata-query index next to its compiler; identities (_identity.py); KMS keys (_kms.py); tiers (_tiers.py);
# the lifecycle due index (_lifecycle.py); hot copies (_hot.py); the mover's progress and retries (_tier_progress.py);
# the gateway registry and leases (_leases.py)


def _index_rows(doc: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    """(name, value, number) rows of ``obj_attrs`` for a version's metadata document."""
    return [(name, value, attr_num(value)) for name, value in index_attrs(doc)]


def index_attrs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The (name, value) pairs the metadata index keeps for a version's metadata document."""
    out = [(f"meta.{k}", v) for k, v in doc.get("u", {}).items()]
    out += [(f"tag.{k}", v) for k, v in doc.get("t", {}).items()]
    out.append(("content_type", doc.get("h", {}).get("content-type", "binary/octet-stream")))
    out.append(("storage_class", doc.get("sc", "STANDARD")))
    return out


_DATASET_COLS = "name, version, manifest_blob, manifest_bytes, created_ns, rows, bytes, info"


class _ProbeDone(Exception):
    """``probe_write``'s job: the write lock was taken; roll back."""


def _pinning(table: str) -> str:
    """``table`` checked against PINNING_TABLES (it is put into SQL text)."""
    if table not in PINNING_TABLES:
        raise ValueError(f"not a pinning table: {table!r}")
    return table


def _meta_json(m: ObjectMeta) -> str:
    return json.dumps(_meta_doc(m), separators=(",", ":"))


def _meta_doc(m: ObjectMeta) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if m.headers:
        doc["h"] = m.headers
    if m.user_meta:
        doc["u"] = m.user_meta
    if m.checksums:
        doc["c"] = m.checksums
    if m.checksum_type:
        doc["ct"] = m.checksum_type
    if m.parts:
        doc["p"] = m.parts
    if m.part_checksums:
        doc["pc"] = m.part_checksums
    if m.storage_class != "STANDARD":
        doc["sc"] = m.storage_class
    if m.tags:
        doc["t"] = m.tags
    if m.lock:
        doc["l"] = m.lock
    if m.acl:
        doc["a"] = m.acl
    if m.encryption:
        doc["e"] = m.encryption  # docs/encryption.md: present exactly when the version is encrypted
    return doc


# The fields of an "e" document a remembered multipart completion keeps: what its answer echoes.
_ECHOED_ENCRYPTION = frozenset({"kind", "alg", "kid", "bk", "ckm"})
# A part of an encrypted upload keeps its nonce prefix in its row's checksums document under
# this name (never a checksum algorithm's), so the parts table needs no new column.
_PART_NONCE_PREFIX = "_np"


def _part_checksums_doc(part: PartInfo) -> dict[str, str]:
    if part.nonce_prefix is None:
        return part.checksums
    return {**part.checksums, _PART_NONCE_PREFIX: part.nonce_prefix}


def _part_from_row(number: int, size: int, etag: str, modified_ns: int, checksums_s: str, blob_id: str) -> PartInfo:
    checksums = json.loads(checksums_s)
    prefix = checksums.pop(_PART_NONCE_PREFIX, None)
    return PartInfo(number, size, etag, modified_ns, checksums, blob_id, prefix)


def _completed_doc(m: ObjectMeta) -> str:
    """A completed upload's result as ``completed_uploads.result`` keeps it (both engines): what a
    retried CompleteMultipartUpload answers; of the encryption, only what a retry echoes, never a key."""
    result: dict[str, Any] = {
        "v": m.version_id,
        "etag": m.etag,
        "size": m.size_bytes,
        "cs": m.checksums,
        "ct": m.checksum_type,
        "parts": m.parts,
    }
    if m.encryption:  # docs/encryption-s3.md
        result["e"] = {k: v for k, v in m.encryption.items() if k in _ECHOED_ENCRYPTION}
    return json.dumps(result)


def _completed_meta(bucket: str, key: str, completed_ns: int, result_s: str) -> ObjectMeta:
    """The ``ObjectMeta`` of a remembered completion, from ``_completed_doc``'s text."""
    doc = json.loads(result_s)
    return ObjectMeta(
        bucket=bucket,
        key=key,
        version_id=doc["v"],
        size_bytes=doc["size"],
        etag=doc["etag"],
        modified_ns=completed_ns,
        checksums=doc["cs"],
        checksum_type=doc["ct"],
        parts=doc["parts"],
        encryption=doc.get("e", {}),
    )


def _row_to_record(bucket: str, row: Sequence[Any]) -> VersionRecord:
    key_b, version_id, is_dm, size, etag, modified_ns, meta_s, blobs_s, inline_id = row
    doc = json.loads(meta_s)
    meta = ObjectMeta(
        bucket=bucket,
        key=bytes(key_b).decode("utf-8"),
        version_id=version_id,
        size_bytes=size,
        etag=etag,
        modified_ns=modified_ns,
        headers=doc.get("h", {}),
        user_meta=doc.get("u", {}),
        checksums=doc.get("c", {}),
        checksum_type=doc.get("ct"),
        parts=doc.get("p", []),
        part_checksums=doc.get("pc", {}),
        storage_class=doc.get("sc", "STANDARD"),
        tags=doc.get("t", {}),
        lock=doc.get("l", {}),
        acl=doc.get("a", []),
        encryption=doc.get("e", {}),
        is_delete_marker=bool(is_dm),
    )
    blobs = [BlobRef(b, s) for b, s in json.loads(blobs_s)] if blobs_s != "[]" else []
    return VersionRecord(meta=meta, blobs=blobs, is_delete_marker=bool(is_dm), inline_id=inline_id)


_INLINE_ROW = "SELECT crc32c, data FROM inline_blobs WHERE blob_id=?"
_VERSION_COLS = "key, version_id, is_delete_marker, size, etag, modified_ns, meta, blobs, inline_id"
# The same columns and the inline body with them: one statement, so one snapshot — a concurrent
# overwrite can never pair one version's metadata with another's bytes.
_WITH_DATA = (
    "SELECT v.key, v.version_id, v.is_delete_marker, v.size, v.etag, v.modified_ns, v.meta, v.blobs, v.inline_id,"  # noqa: S608
    " (SELECT json_extract(props, '$.versioning') FROM buckets WHERE name = v.bucket),"
    f" {TIERS_OF_BLOBS}, d.crc32c, d.data FROM versions v LEFT JOIN inline_blobs d ON d.blob_id = v.inline_id"
)
_WITHOUT_DATA = (
    f"SELECT {_VERSION_COLS},"  # noqa: S608 - constant
    " (SELECT json_extract(props, '$.versioning') FROM buckets WHERE name = v.bucket),"
    f" {TIERS_OF_BLOBS} FROM versions v"
)


def _translate(exc: sqlite3.Error) -> Exception:
    msg = str(exc).lower()
    if "disk is full" in msg or "database or disk is full" in msg:
        return InsufficientStorage("The catalog could not be written: the disk is full.")
    return InternalError("Catalog error.")


def _translated(exc: BaseException) -> BaseException:
    """What a writer's caller sees: sqlite errors become domain errors (a fresh one per caller)."""
    if isinstance(exc, sqlite3.Error):
        out = _translate(exc)
        out.__cause__ = exc
        return out
    return exc


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


def _schema_version(conn: sqlite3.Connection) -> int | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
    return int(row[0]) if row else None


def _upgrade(conn: sqlite3.Connection) -> None:
    """Inside a write transaction: bring a new, v1, ... or v12 database to the current schema. Steps
    are plain statements (no executescript, which would commit), so a mirror can run this as
    one fan-out job and every copy changes together."""
    found = _schema_version(conn)
    if found == 1:  # v1 (unversioned only) -> v2: version order and the metadata index
        conn.execute("ALTER TABLE versions ADD COLUMN seq INTEGER NOT NULL DEFAULT 1")
        for stmt in _statements(INDEX_DDL):
            conn.execute(stmt)
        for bucket, key_b in conn.execute("SELECT bucket, key FROM versions WHERE is_latest=1").fetchall():
            SqliteCatalog._reindex(conn, bucket, bytes(key_b))
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
    if found is not None and found != SCHEMA_VERSION:  # before the DDL: a newer schema may lack what it names
        raise InternalError(f"catalog schema {found} is not supported (expected {SCHEMA_VERSION})")
    for stmt in _statements(_SCHEMA):  # a new database; IF NOT EXISTS everywhere
        conn.execute(stmt)
    add_lease_columns(conn)
    conn.execute("INSERT OR IGNORE INTO meta(name, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.execute("UPDATE meta SET value=? WHERE name='schema_version'", (str(SCHEMA_VERSION),))


def _init_schema(conn: sqlite3.Connection) -> None:
    """The current schema on a new database, or an older one upgraded; one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _upgrade(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_schema(conn: sqlite3.Connection, *, upgradable: bool = False) -> None:
    """Raise unless the database has the current schema (or, with ``upgradable``, v2 to v13)."""
    found = _schema_version(conn)
    if found != SCHEMA_VERSION and not (upgradable and found in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)):
        raise InternalError(f"catalog schema {found or 'missing'} is not supported (expected {SCHEMA_VERSION})")


class _Job:
    """One unit of work for the writer thread. A write job is ``fn(conn)`` run inside a batch
    transaction and answered through an asyncio future of its caller's ``loop``; an ``alone``
    job is ``fn()`` run by itself, outside any transaction (open, close, migrations, reseed),
    answered through a concurrent future."""

    __slots__ = ("alone", "fn", "future", "loop", "waiter")

    def __init__(self, fn: Callable[..., Any], *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.fn = fn
        self.alone = loop is None
        self.loop = loop
        self.future: Future[Any] | None = Future() if loop is None else None
        self.waiter: asyncio.Future[Any] | None = loop.create_future() if loop is not None else None

    def cancelled(self) -> bool:
        """Whether the caller gave up before the job started (it is then skipped). Read from the
        writer thread: a cancellation racing the start is one that came after it."""
        assert self.waiter is not None
        return self.waiter.cancelled()


class _WriterLock:
    """An flock() shared by every process writing the same catalog, held around each batch.

    SQLite alone would serialize them too, but a writer that finds the database locked polls
    with sleeps of 1 to 100 ms (its busy handler): with one worker per core, small PUTs then
    waited tens of milliseconds for nothing. A writer blocked in flock() wakes the moment the
    other one's COMMIT is done, and meanwhile its queue grows into the next batch."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _deliver(answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the callers' loop: resolve each waiter with its job's result or exception."""
    for waiter, failed, value in answers:
        if waiter.done():  # cancelled while the batch ran
            continue
        if failed:
            waiter.set_exception(value)
        else:
            waiter.set_result(value)


_STOP = _Job(lambda: None)  # ends the writer thread
DEFAULT_MAX_BATCH = 256


class SqliteCatalog(
    IdentityTables, KmsTables, SseTables, TierTables, TierDataTables, LifecycleTables, HotTables, TierProgressTables,
    LeaseTables,
):  # fmt: skip
    """All metadata in one SQLite file: ``SqliteCatalog(path)``; or mirrored on every drive of a
    set: ``SqliteCatalog.on_drives(drives)`` (catalog/_mirror.py). ``close()`` when done.

    ``max_batch`` caps how many queued write jobs share one transaction (group commit)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._setup(busy_timeout_ms, max_batch, None, lock_path=f"{self.path}.writer-lock")
        try:
            self._run_alone(self._open_writer)
        except BaseException:
            self._stop_writer()
            raise

    def _setup(self, busy_timeout_ms: int, max_batch: int, mirror: CatalogMirror | None, *, lock_path: str) -> None:
        self._writer_lock = _WriterLock(lock_path)
        assert max_batch >= 1
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._mirror = mirror
        self._wconn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._closed = False
        self.write_batches = 0  # transactions the writer ran (observability: jobs per batch)
        self.write_jobs = 0
        self._damaged_lock = threading.Lock()
        self._damaged_inline: set[str] = set()  # inline ids a read found damaged (mirror: served around)
        self._thread = threading.Thread(target=self._writer_loop, name="catalog-writer", daemon=True)
        self._thread.start()

    @classmethod
    def on_drives(
        cls,
        drives: DriveSet,
        relpath: str = DEFAULT_RELPATH,
        *,
        busy_timeout_ms: int = 30_000,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> SqliteCatalog:
        """The catalog mirrored on every drive of ``drives`` (one copy at ``paths[i] / relpath``).

        Opens the copies that exist; those at the highest ``catalog_seq`` are live. It creates
        nothing: ``reconcile`` (run once at server start) creates or repairs the copies.
        """
        self = cls.__new__(cls)
        mirror = CatalogMirror(drives, relpath, busy_timeout_ms=busy_timeout_ms)
        self.path = Path(drives.paths[0]) / relpath  # where copy 0 lives; informational
        # No one drive holds the lock file (any may be gone): the temp directory, named after the set.
        digest = hashlib.sha256(drives.format.set_id.encode()).hexdigest()[:16]
        lock_path = os.path.join(tempfile.gettempdir(), f"tierstore-catalog-{digest}.lock")
        self._setup(busy_timeout_ms, max_batch, mirror, lock_path=lock_path)
        try:
            self._run_alone(lambda: mirror.open(functools.partial(_check_schema, upgradable=True)))
            self._upgrade_mirror()
        except BaseException:
            self._stop_writer()
            raise
        return self

    @staticmethod
    def reconcile(drives: DriveSet, relpath: str = DEFAULT_RELPATH) -> ReconcileReport:
        """Create the mirrored catalog, or bring every online drive's copy up to the newest one
        (highest ``catalog_seq``). Run before any process opens the catalog (server start, heal);
        refuses when fewer than k drives are online or when data exists but no copy does."""
        return CatalogMirror.reconcile(drives, _init_schema, relpath)

    @property
    def mirrored(self) -> bool:
        return self._mirror is not None

    async def reseed(self, index: int) -> None:
        """Mirrored mode: rebuild drive ``index``'s copy from the newest live one while holding
        every copy's write lock, and make it live (``tierstore heal`` on a replaced drive)."""
        mirror = self._require_mirror()
        await asyncio.wrap_future(self._submit(lambda: mirror.reseed(index)))

    def copies_state(self) -> list[dict[str, Any]]:
        """Mirrored mode: one dict per drive — index, path, state (live/stale/missing/offline),
        seq (its catalog_seq, None unless readable), why it is not live, and ``joined``: whether
        this process uses it now (a copy at the live seq that this process has not rejoined yet,
        e.g. re-seeded by another process, is live but not joined until this process's next write)."""
        return self._require_mirror().copies_state()

    def _require_mirror(self) -> CatalogMirror:
        if self._mirror is None:
            raise InternalError("this catalog is a single file, not mirrored on drives")
        return self._mirror

    # --- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        return conn

    def _open_writer(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        _init_schema(conn)
        _check_schema(conn)
        self._wconn = conn

    def _upgrade_mirror(self) -> None:
        """A mirrored older catalog (v2, v3, v4) becomes current in one fan-out transaction (every copy, one seq
        step). Several processes may race here: the job re-checks inside the transaction."""
        mirror = self._mirror
        assert mirror is not None
        if _schema_version(mirror.reader()) == SCHEMA_VERSION:
            return
        (outcome,) = self._run_alone(lambda: mirror.transact([_upgrade]))
        if isinstance(outcome, Failed):
            raise outcome.exc

    def _reader(self) -> sqlite3.Connection:
        if self._mirror is not None:
            return self._mirror.reader()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        if self._closed:
            return
        mirror = self._mirror

        def _close() -> None:
            if mirror is not None:
                mirror.close()
            if self._wconn is not None:
                self._wconn.close()
                self._wconn = None

        self._run_alone(_close)
        self._stop_writer()
        if mirror is not None:
            mirror.close_readers()
            return
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- the writer thread: group commit ------------------------------------------------
    def _enqueue(self, job: _Job) -> None:
        if self._closed:
            raise InternalError("the catalog is closed")
        self._jobs.put(job)

    def _submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn()`` to run on the writer thread by itself, between batches."""
        job = _Job(fn)
        self._enqueue(job)
        assert job.future is not None
        return job.future

    def _run_alone(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer thread, by itself, and wait for it (from a non-async caller)."""
        return self._submit(fn).result()

    def _stop_writer(self) -> None:
        self._closed = True
        self._jobs.put(_STOP)
        self._thread.join()
        self._writer_lock.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction on the writer thread; returns once it is committed.

        ``fn`` shares its transaction (and its commit's fsync) with the other jobs queued at the
        time, inside its own savepoint: if it raises, only its changes are rolled back and only
        its caller gets the exception (sqlite errors translated). A failed commit fails every job
        of the batch. Cancelling the caller before the batch starts drops the job."""
        job = _Job(fn, loop=asyncio.get_running_loop())
        self._enqueue(job)
        assert job.waiter is not None
        result: T = await job.waiter
        return result

    def _writer_loop(self) -> None:
        """Take the next job; if it is a write, add every write queued behind it (up to
        ``max_batch``) and run them as one transaction. No timer: the batch is what arrived
        while the previous one ran, so a lone write on an idle catalog waits for nothing."""
        jobs = self._jobs
        carry: _Job | None = None
        while True:
            job = carry if carry is not None else jobs.get()
            carry = None
            if job is _STOP:
                return
            if job.future is not None:  # an alone job
                if job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(job.fn())
                    except BaseException as exc:
                        job.future.set_exception(exc)
                continue
            batch = [job]
            with self._writer_lock:  # other processes' writers: take turns, whole batches each
                # Collected after the lock is ours: what queued while another process committed
                # joins this batch.
                while len(batch) < self._max_batch:
                    try:
                        nxt = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt.alone:
                        carry = nxt
                        break
                    batch.append(nxt)
                try:
                    self._run_batch(batch)
                except BaseException:  # a bug here must neither stop the writer nor leave callers waiting
                    log.exception("catalog writer: a batch of %d jobs failed unexpectedly", len(batch))
                    self._answer(batch, [Failed(InternalError("Catalog error."))] * len(batch))

    def _run_batch(self, batch: list[_Job]) -> None:
        batch = [j for j in batch if not j.cancelled()]
        if not batch:
            return
        fns = [j.fn for j in batch]
        self.write_batches += 1
        self.write_jobs += len(batch)
        try:
            outcomes = self._mirror.transact(fns) if self._mirror is not None else self._transact(fns)
        except BaseException as exc:
            outcomes = [Failed(exc)] * len(batch)
        self._answer(batch, outcomes)

    @staticmethod
    def _answer(batch: list[_Job], outcomes: list[Any]) -> None:
        """Resolve each job's waiter: one wake-up per event loop for the whole batch, not one per job."""
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for j, outcome in zip(batch, outcomes, strict=True):
            assert j.loop is not None and j.waiter is not None
            failed = isinstance(outcome, Failed)
            value = _translated(outcome.exc) if failed else outcome
            answers.setdefault(j.loop, []).append((j.waiter, failed, value))
        for loop, items in answers.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_deliver, items)

    def _transact(self, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """One transaction on the single database file: BEGIN IMMEDIATE, the jobs, one COMMIT."""
        conn = self._wconn
        assert conn is not None, "catalog is closed"
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes, _changes = run_jobs(conn, fns)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return outcomes

    # --- buckets ---------------------------------------------------------------------
    async def create_bucket(self, info: BucketInfo, props: dict[str, Any] | None = None) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM buckets WHERE name=?", (info.name,)).fetchone():
                raise BucketAlreadyOwnedByYou(resource=info.name)
            c.execute(
                "INSERT INTO buckets(name, created_ns, region, props) VALUES(?,?,?,?)",
                (info.name, info.created_ns, info.region, json.dumps(props or {})),
            )

        await self._write(fn)

    async def delete_bucket(self, name: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM buckets WHERE name=?", (name,)).fetchone():
                raise NoSuchBucket(resource=name)
            if c.execute("SELECT 1 FROM versions WHERE bucket=? LIMIT 1", (name,)).fetchone():
                raise BucketNotEmpty(resource=name)
            # S3 refuses while uploads are in progress only in some cases; we abort them.
            for (upload_id,) in c.execute("SELECT upload_id FROM uploads WHERE bucket=?", (name,)).fetchall():
                self._drop_upload(c, upload_id)
            c.execute("DELETE FROM completed_uploads WHERE bucket=?", (name,))
            self._lifecycle_bucket_gone(c, name)
            c.execute("DELETE FROM buckets WHERE name=?", (name,))

        await self._write(fn)

    async def get_bucket(self, name: str) -> BucketInfo | None:
        row = self._reader().execute("SELECT name, created_ns, region FROM buckets WHERE name=?", (name,)).fetchone()
        return BucketInfo(*row) if row else None

    async def list_buckets(
        self, *, after: str = "", prefix: str = "", region: str | None = None, limit: int = -1
    ) -> list[BucketInfo]:
        """Buckets by name: those after ``after`` whose name starts with ``prefix`` (and in
        ``region``), at most ``limit`` (-1: all)."""
        sql = "SELECT name, created_ns, region FROM buckets WHERE name > ? AND substr(name, 1, ?) = ?"
        args: list[Any] = [after, len(prefix), prefix]
        if region is not None:
            sql += " AND region = ?"
            args.append(region)
        rows = self._reader().execute(sql + " ORDER BY name LIMIT ?", (*args, limit)).fetchall()
        return [BucketInfo(*r) for r in rows]

    # --- objects ---------------------------------------------------------------------
    async def get_latest(self, bucket: str, key: str, *, data: bool = False) -> VersionRecord | None:
        """The current version (or delete marker) of ``key``. ``data=True`` also loads an inline
        body (verified; ``CorruptBlob`` if it is damaged beyond what the mirror can serve)."""
        where = " WHERE bucket=? AND key=? AND is_latest=1"
        return self._read_version(where, (bucket, key.encode()), bucket, data)

    async def get_version(self, bucket: str, key: str, version_id: str, *, data: bool = False) -> VersionRecord | None:
        where = " WHERE bucket=? AND key=? AND version_id=?"
        return self._read_version(where, (bucket, key.encode(), version_id), bucket, data)

    def _read_version(self, where: str, args: tuple[Any, ...], bucket: str, data: bool) -> VersionRecord | None:
        conn = self._reader()
        if not data:
            row = conn.execute(_WITHOUT_DATA + where, args).fetchone()
            if row is None:
                return None
            record = _row_to_record(bucket, row[:-2])
            record.bucket_versioning = row[-2]
            if row[-1] is not None:
                record.blobs = located(record.blobs, row[-1])
            return record
        row = conn.execute(_WITH_DATA + where, args).fetchone()
        if row is None:
            return None
        record = _row_to_record(bucket, row[:-4])
        record.bucket_versioning = row[-4]
        if row[-3] is not None:
            record.blobs = located(record.blobs, row[-3])
        if record.inline_id is not None:
            record.inline_data = self._verified(record, row[-2], row[-1])
        return record

    def _verified(self, record: VersionRecord, crc: int | None, data: bytes | None) -> bytes:
        assert record.inline_id is not None
        return self._verified_inline(record.inline_id, crc, data, record.meta.key)

    def _verified_inline(self, blob_id: str, crc: int | None, data: bytes | None, what: str) -> bytes:
        """Inline body ``blob_id`` (of object key ``what``) as read (``crc``, ``data``), if it
        matches its CRC32C. On a mirror a damaged row is read again from the other live copies,
        the first good one is served and the id queued for repair (``take_damaged_inline``)."""
        if data is not None and crc is not None and crc32c(data) == crc:
            return data
        if self._mirror is not None:
            for index, rows in self._mirror.read_elsewhere(_INLINE_ROW, (blob_id,)):
                other = rows[0] if rows else None
                if other is not None and crc32c(other[1]) == other[0]:
                    log.warning("inline body %s is damaged in a catalog copy; served from drive %d", blob_id, index)
                    with self._damaged_lock:
                        self._damaged_inline.add(blob_id)
                    return bytes(other[1])
        log.error("inline body %s of %r is damaged beyond repair", blob_id, what)
        raise CorruptBlob(f"The stored bytes of {what!r} are damaged.", resource=what)

    async def bucket_props(self, name: str) -> dict[str, Any]:
        row = self._reader().execute("SELECT props FROM buckets WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NoSuchBucket(resource=name)
        props: dict[str, Any] = json.loads(row[0])
        return props

    async def update_bucket_props(
        self, name: str, update: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read-modify-write of a bucket's properties in one transaction; ``update`` may raise."""

        def fn(c: sqlite3.Connection) -> dict[str, Any]:
            props = self._props(c, name)
            new = update(dict(props))
            c.execute("UPDATE buckets SET props=? WHERE name=?", (json.dumps(new), name))
            self._lifecycle_rules_changed(c, name, props.get("lifecycle"), new.get("lifecycle"))
            return new

        return await self._write(fn)

    # --- versions (inside write transactions) -----------------------------------------
    @staticmethod
    def _props(c: sqlite3.Connection, bucket: str) -> dict[str, Any]:
        row = c.execute("SELECT props FROM buckets WHERE name=?", (bucket,)).fetchone()
        if row is None:
            raise NoSuchBucket(resource=bucket)
        props: dict[str, Any] = json.loads(row[0])
        return props

    @staticmethod
    def _latest_in(c: sqlite3.Connection, bucket: str, key_b: bytes) -> VersionRecord | None:
        row = c.execute(
            f"SELECT {_VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND is_latest=1",  # noqa: S608 - constant
            (bucket, key_b),
        ).fetchone()
        return _row_to_record(bucket, row) if row else None

    @staticmethod
    def _version_in(c: sqlite3.Connection, bucket: str, key_b: bytes, version_id: str) -> VersionRecord | None:
        row = c.execute(
            f"SELECT {_VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND version_id=?",  # noqa: S608 - constant
            (bucket, key_b, version_id),
        ).fetchone()
        return _row_to_record(bucket, row) if row else None

    def _remove_version(self, c: sqlite3.Connection, bucket: str, key_b: bytes, record: VersionRecord) -> None:
        c.execute(
            "DELETE FROM versions WHERE bucket=? AND key=? AND version_id=?", (bucket, key_b, record.meta.version_id)
        )
        c.execute(  # its lifecycle rows with it (the key's others are recomputed by the caller's write)
            "DELETE FROM lifecycle_due WHERE bucket=? AND key=? AND version_id=?",
            (bucket, key_b, record.meta.version_id),
        )
        inline_id = record.inline_id  # gone with its version, unless a dataset pins it
        if inline_id is not None and not c.execute(
            "DELETE FROM inline_blobs WHERE blob_id=? AND pins=0", (inline_id,)
        ).rowcount:
            c.execute("UPDATE inline_blobs SET released=1 WHERE blob_id=?", (inline_id,))
        self._unref_all(c, (b.blob_id for b in record.blobs))

    def _drop_null_version(
        self,
        c: sqlite3.Connection,
        bucket: str,
        key_b: bytes,
        props: dict[str, Any],
        guard: Guard | None,
        latest: tuple[VersionRecord | None] | None = None,
    ) -> None:
        """A new ``null`` version (or marker) replaces the old one, wherever it is in the stack.
        ``latest``: the key's current version as this transaction read it, if known (no versions
        at all, or the null version itself, spare the lookup)."""
        if latest is None:
            old_null = self._version_in(c, bucket, key_b, NULL_VERSION)
        elif latest[0] is None:
            return
        elif latest[0].meta.version_id == NULL_VERSION:
            old_null = latest[0]
        else:
            old_null = self._version_in(c, bucket, key_b, NULL_VERSION)
        if old_null is not None:
            if guard is not None:
                guard(old_null, props)
            self._remove_version(c, bucket, key_b, old_null)

    @staticmethod
    def _insert_version(
        c: sqlite3.Connection, record: VersionRecord, key_b: bytes, *, first: bool = False, meta_s: str | None = None
    ) -> None:
        """Insert ``record`` as the key's latest version. ``first``: the key has no versions (as
        read in this transaction), so there is no order to continue and nothing to demote."""
        m = record.meta
        seq = 1
        if not first:
            seq = c.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE bucket=? AND key=?", (m.bucket, key_b)
            ).fetchone()[0]
            c.execute("UPDATE versions SET is_latest=0 WHERE bucket=? AND key=? AND is_latest=1", (m.bucket, key_b))
        c.execute(
            "INSERT INTO versions(bucket, key, version_id, is_latest, is_delete_marker, size, etag,"
            " modified_ns, meta, blobs, seq, inline_id) VALUES(?,?,?,1,?,?,?,?,?,?,?,?)",
            (
                m.bucket,
                key_b,
                m.version_id,
                int(record.is_delete_marker),
                m.size_bytes,
                m.etag,
                m.modified_ns,
                meta_s if meta_s is not None else _meta_json(m),
                json.dumps([[b.blob_id, b.size_bytes] for b in record.blobs]) if record.blobs else "[]",
                seq,
                record.inline_id,
            ),
        )

    @staticmethod
    def _new_marker(meta: ObjectMeta) -> VersionRecord:
        return VersionRecord(meta=meta, blobs=[], is_delete_marker=True)

    @staticmethod
    def _promote_newest(c: sqlite3.Connection, bucket: str, key_b: bytes) -> None:
        c.execute(
            "UPDATE versions SET is_latest=1 WHERE bucket=? AND key=? AND seq="
            "(SELECT MAX(seq) FROM versions WHERE bucket=? AND key=?)",
            (bucket, key_b, bucket, key_b),
        )

    @staticmethod
    def _reindex(
        c: sqlite3.Connection,
        bucket: str,
        key_b: bytes,
        attrs: list[tuple[str, str, float | None]] | None = None,
        *,
        stale: bool = True,
    ) -> None:
        """Make the metadata index show the key's current live version (or nothing).

        A caller that just made a live version current passes its ``attrs`` (``_index_rows``),
        and ``stale=False`` if the key had no live current version before (no rows to delete)."""
        if stale:
            c.execute("DELETE FROM obj_attrs WHERE bucket=? AND key=?", (bucket, key_b))
        if attrs is None:
            row = c.execute(
                "SELECT meta FROM versions WHERE bucket=? AND key=? AND is_latest=1 AND is_delete_marker=0",
                (bucket, key_b),
            ).fetchone()
            if row is None:
                return
            attrs = _index_rows(json.loads(row[0]))
        c.executemany(
            "INSERT INTO obj_attrs(bucket, key, name, value, num) VALUES(?,?,?,?,?)",
            [(bucket, key_b, name, value, num) for name, value, num in attrs],
        )

    async def put_version(
        self,
        record: VersionRecord,
        *,
        check: Callable[[VersionRecord | None], None] | None = None,
        extra: Callable[[sqlite3.Connection], None] | None = None,
        guard: Guard | None = None,
        shared_gone: Callable[[], Exception] | None = None,
        done: Callable[[sqlite3.Connection], None] | None = None,
        fixed_version_id: bool = False,
    ) -> str:
        """Publish ``record`` as the latest version of its key and return its version id.

        With versioning Enabled the record keeps its (new) ``meta.version_id`` and older versions
        stay; otherwise it becomes the ``null`` version, replacing any earlier ``null`` version.
        ``check`` runs inside the transaction with the current version (conditional writes);
        ``extra`` runs in the same transaction (multipart completion uses it); ``guard`` is
        called with any version about to be destroyed (object lock refuses by raising).
        ``shared_gone``: the record's blobs are shared with another version (a copy); if one of
        them is no longer referenced when the transaction runs, the write fails with
        ``shared_gone()``. A record with ``inline_data`` is stored inline (docs/inline.md).
        ``done`` runs last in the transaction, once ``record.meta.version_id`` is final.
        ``fixed_version_id``: the caller chose the id from the versioning state (an encrypted
        version binds it); if the state now wants the other kind, ``VersioningChanged``.
        """
        m = record.meta
        key_b = m.key.encode()
        # Everything that does not depend on the database is computed once, not per mirror copy.
        doc = _meta_doc(m)
        meta_s = json.dumps(doc, separators=(",", ":"))
        attrs = None if record.is_delete_marker else _index_rows(doc)
        inline: tuple[str, int, bytes] | None = None
        if record.inline_data is not None:
            assert not record.blobs, "a version is either inline or in blobs"
            record.inline_id = new_blob_id()  # chosen here: the same on every mirror copy
            inline = (record.inline_id, crc32c(record.inline_data), record.inline_data)
        else:
            assert record.inline_id is None, "an inline version is published with its bytes"

        def fn(c: sqlite3.Connection) -> str:
            props = self._props(c, m.bucket)
            current = self._latest_in(c, m.bucket, key_b)
            if check is not None:
                check(current)
            if extra is not None:
                extra(c)
            if shared_gone is not None:
                for b in record.blobs:
                    if c.execute("SELECT 1 FROM blobs WHERE blob_id=?", (b.blob_id,)).fetchone() is None:
                        raise shared_gone()
            if inline is not None:
                c.execute("INSERT INTO inline_blobs(blob_id, crc32c, data) VALUES(?,?,?)", inline)
            # New references first: a copy onto itself shares the blobs it replaces.
            for b in record.blobs:
                self._ref(c, b.blob_id, b.size_bytes, b.tier)
            if fixed_version_id and (props.get("versioning") == "Enabled") == (m.version_id == NULL_VERSION):
                raise VersioningChanged(m.bucket)
            if props.get("versioning") != "Enabled":
                m.version_id = NULL_VERSION
                self._drop_null_version(c, m.bucket, key_b, props, guard, (current,))
            self._insert_version(c, record, key_b, first=current is None, meta_s=meta_s)
            note_tier_write(c, m, key_b)  # in a tier's class: pending until the mover switches it
            stale = current is not None and not current.is_delete_marker
            self._reindex(c, m.bucket, key_b, attrs, stale=stale)
            self._lifecycle_key(c, m.bucket, key_b, props)
            if done is not None:
                done(c)
            return m.version_id

        return await self._write(fn)

    async def delete_object(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None,
        marker: ObjectMeta,
        check: Callable[[VersionRecord | None], None] | None = None,
        guard: Guard | None = None,
    ) -> tuple[VersionRecord | None, bool]:
        """S3 DeleteObject. Returns (the version removed or the delete marker added, whether a
        delete marker was added). ``marker`` carries the would-be marker's id and time."""
        key_b = key.encode()

        def fn(c: sqlite3.Connection) -> tuple[VersionRecord | None, bool]:
            props = self._props(c, bucket)
            out = change(c, props)
            if out[0] is not None:
                self._lifecycle_key(c, bucket, key_b, props)
            return out

        def change(c: sqlite3.Connection, props: dict[str, Any]) -> tuple[VersionRecord | None, bool]:
            status = props.get("versioning")
            if version_id is not None:
                target = self._version_in(c, bucket, key_b, version_id)
                if check is not None:
                    check(target)
                if target is None:
                    return None, False
                if guard is not None:
                    guard(target, props)
                was_latest = self._latest_in(c, bucket, key_b)
                self._remove_version(c, bucket, key_b, target)
                if was_latest is not None and was_latest.meta.version_id == version_id:
                    self._promote_newest(c, bucket, key_b)
                    self._reindex(c, bucket, key_b)
                return target, False
            current = self._latest_in(c, bucket, key_b)
            if check is not None:
                check(current)
            if status is None:  # never versioned: the object simply goes away
                if current is None:
                    return None, False
                if guard is not None:
                    guard(current, props)
                self._remove_version(c, bucket, key_b, current)
                self._reindex(c, bucket, key_b)
                return current, False
            record = VersionRecord(meta=marker, blobs=[], is_delete_marker=True)
            if status != "Enabled":
                marker.version_id = NULL_VERSION
                self._drop_null_version(c, bucket, key_b, props, guard)
            self._insert_version(c, record, key_b)
            self._reindex(c, bucket, key_b)
            return record, True

        return await self._write(fn)

    async def update_version_meta(
        self, bucket: str, key: str, version_id: str | None, update: Callable[[VersionRecord], None]
    ) -> VersionRecord:
        """Change a version's metadata in place (tags, retention, legal hold); ``update`` mutates
        ``record.meta`` and may raise. ``version_id=None`` means the current version."""
        key_b = key.encode()

        def fn(c: sqlite3.Connection) -> VersionRecord:
            props = self._props(c, bucket)
            if version_id is None:
                record = self._latest_in(c, bucket, key_b)
            else:
                record = self._version_in(c, bucket, key_b, version_id)
            if record is None:
                raise (NoSuchKey(resource=key) if version_id is None else NoSuchVersion(resource=key))
            update(record)
            c.execute(
                "UPDATE versions SET meta=? WHERE bucket=? AND key=? AND version_id=?",
                (_meta_json(record.meta), bucket, key_b, record.meta.version_id),
            )
            self._reindex(c, bucket, key_b)
            self._lifecycle_key(c, bucket, key_b, props)  # tags and locks change what is due
            return record

        return await self._write(fn)

    async def scan_latest(
        self, bucket: str, after: bytes, below: bytes, limit: int, *, inclusive: bool = False,
        rollup: tuple[int, bytes] | None = None,  # a hint (the protocol): ignored in process
    ) -> list[tuple[bytes, int, str, int, str]]:
        """Live latest versions with ``after < key < below`` (``<=`` when inclusive), in byte
        order: (key, size, etag, modified_ns, storage class)."""
        op = ">=" if inclusive else ">"
        return (
            self._reader()
            .execute(
                # The storage class is the only part of the metadata a listing shows.
                "SELECT key, size, etag, modified_ns, coalesce(json_extract(meta, '$.sc'), 'STANDARD')"  # noqa: S608
                f" FROM versions WHERE bucket=? AND is_latest=1 AND key{op}? AND key<? AND is_delete_marker=0"
                " ORDER BY key LIMIT ?",
                (bucket, after, below, limit),
            )
            .fetchall()
        )

    async def scan_versions(
        self, bucket: str, after_key: bytes, after_seq: int | None, below: bytes, limit: int
    ) -> list[tuple[VersionRecord, int, bool]]:
        """Every version in (key ASC, newest first) order, starting after (after_key, after_seq);
        ``after_seq=None`` starts at ``after_key`` itself (inclusive). Yields (record, seq, is_latest)."""
        args: tuple[object, ...]
        if after_seq is None:
            where, args = "key >= ?", (after_key,)
        else:
            where, args = "(key > ? OR (key = ? AND seq < ?))", (after_key, after_key, after_seq)
        rows = (
            self._reader()
            .execute(
                f"SELECT {_VERSION_COLS}, seq, is_latest FROM versions"  # noqa: S608 - constant fragments
                f" WHERE bucket=? AND {where} AND key<? ORDER BY key, seq DESC LIMIT ?",
                (bucket, *args, below, limit),
            )
            .fetchall()
        )
        return [(_row_to_record(bucket, r[:-2]), r[-2], bool(r[-1])) for r in rows]

    async def version_seq(self, bucket: str, key: str, version_id: str) -> int | None:
        row = (
            self._reader()
            .execute(
                "SELECT seq FROM versions WHERE bucket=? AND key=? AND version_id=?", (bucket, key.encode(), version_id)
            )
            .fetchone()
        )
        return int(row[0]) if row else None

    async def seq_older_than(self, bucket: str, key: str, version_id: str, created_ns: int) -> int:
        """Where a vanished version ``version_id`` created at ``created_ns`` stood among the
        key's versions: one more than the seq of the newest version created before it (1 if
        none), so ``seq < result`` selects exactly the versions older than it. Version ids other than
        ``null`` begin with their creation time in fixed-width hex (runtime.new_version_id), so
        they compare as text; a ``null`` version is placed by its modification time."""
        row = (
            self._reader()
            .execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE bucket=? AND key=? AND"
                " ((version_id != ? AND version_id < ?) OR (version_id = ? AND modified_ns < ?))",
                (bucket, key.encode(), NULL_VERSION, version_id, NULL_VERSION, created_ns),
            )
            .fetchone()
        )
        return int(row[0])

    # --- metadata query ------------------------------------------------------------
    async def query(self, bucket: str, text: str, cursor: str | None = None) -> tuple[list[VersionRecord], str | None]:
        """One page of a metadata query (catalog/_query.py) over the bucket's current objects.
        Returns the matching versions in query order and the cursor of the next page."""
        from tierstore.catalog._query import compile_sqlite, next_cursor, parse

        q = parse(text)
        sql, params = compile_sqlite(q, bucket, cursor)
        conn = self._reader()
        rows = conn.execute(sql, params).fetchall()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        records = []
        for row in rows:
            found = conn.execute(
                f"SELECT {_VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND version_id=?",  # noqa: S608 - constant
                (bucket, row[0], row[1]),
            ).fetchone()
            if found is not None:
                records.append(_row_to_record(bucket, found))
        return records, (next_cursor(q, rows[-1]) if more and rows else None)

    # --- blob references -------------------------------------------------------------
    @staticmethod
    def _ref(c: sqlite3.Connection, blob_id: str, size: int, tier: str | None = None) -> None:
        """One more reference to ``blob_id`` (new: on the local drives, or in ``tier``)."""
        c.execute(
            "INSERT INTO blobs(blob_id, size, refs, tier) VALUES(?,?,1,?)"
            " ON CONFLICT(blob_id) DO UPDATE SET refs = refs + 1",
            (blob_id, size, tier),
        )
        # A local blob queued for deletion is saved; a moved blob's local copy stays queued.
        sql = "DELETE FROM trash WHERE blob_id=? AND (SELECT tier FROM blobs WHERE blob_id=?) IS NULL"
        c.execute(sql, (blob_id, blob_id))

    @staticmethod
    def _unref_all(c: sqlite3.Connection, blob_ids: Iterable[str]) -> None:
        """One reference less to each; a blob no one references goes: a local one to the trash,
        a remote one to its tier's outbox (docs/tiers.md "Deleting remote bytes")."""
        for blob_id in blob_ids:
            c.execute("UPDATE blobs SET refs = refs - 1 WHERE blob_id=?", (blob_id,))
            row = c.execute("SELECT refs, tier, cached FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
            if row is None or row[0] <= 0:
                c.execute("DELETE FROM blobs WHERE blob_id=?", (blob_id,))
                if row is not None and row[1] is not None:
                    TierDataTables.queue_remote_delete(c, row[1], blob_id)
                    if row[2] is not None:  # and its local copy (docs/tiers.md "Hot copies")
                        c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (blob_id,))
                else:
                    c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (blob_id,))

    async def blob_known(self, blob_id: str) -> bool:
        """True if the catalog references ``blob_id`` as a blob on the local drives or still has
        it queued for deletion there (a blob moved to a tier is no longer local), or as a remote
        blob with a local copy or held (a copy may be on its way: docs/tiers.md "Hot copies")."""
        c = self._reader()
        local = "SELECT 1 FROM blobs WHERE blob_id=? AND (tier IS NULL OR cached IS NOT NULL)"
        return bool(
            c.execute(local, (blob_id,)).fetchone()
            or c.execute("SELECT 1 FROM trash WHERE blob_id=?", (blob_id,)).fetchone()
            or c.execute("SELECT 1 FROM hot_holds WHERE blob_id=? LIMIT 1", (blob_id,)).fetchone()
        )

    async def blob_page(self, after: str = "", limit: int = 1000) -> list[tuple[str, int]]:
        """Referenced local blobs (and local copies of remote ones) in blob_id order after ``after``:
        (blob_id, size_bytes). The heal walk."""
        sql = (
            "SELECT blob_id, size FROM blobs WHERE blob_id > ? AND (tier IS NULL OR cached IS NOT NULL)"
            " ORDER BY blob_id LIMIT ?"
        )
        rows = self._reader().execute(sql, (after, limit)).fetchall()
        return [(str(b), int(n)) for b, n in rows]

    async def blob_count(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM blobs").fetchone()[0])

    # --- inline bodies: the heal walk (docs/inline.md) ------------------------------------
    async def inline_verify_page(self, after: str = "", limit: int = 1000) -> tuple[list[tuple[str, int]], set[str]]:
        """The scrub's walk over inline bodies: the next ``limit`` of them in id order after
        ``after`` as (inline id, size_bytes), and the ids among them whose CRC32C fails on any
        catalog copy (one query per copy per page; ``check_inline`` then repairs those)."""
        rows = (
            self._reader()
            .execute(
                "SELECT blob_id, crc32c, data FROM inline_blobs WHERE blob_id > ? ORDER BY blob_id LIMIT ?",
                (after, limit),
            )
            .fetchall()
        )
        page = [(str(b), len(d)) for b, _crc, d in rows]
        damaged = {str(b) for b, crc, d in rows if crc32c(d) != crc}
        if self._mirror is not None and rows:
            sql = "SELECT blob_id, crc32c, data FROM inline_blobs WHERE blob_id > ? AND blob_id <= ?"
            for _index, others in self._mirror.read_elsewhere(sql, (after, rows[-1][0])):
                damaged |= {str(b) for b, crc, d in others if crc32c(d) != crc}
        return page, damaged

    def take_damaged_inline(self) -> list[str]:
        """Inline ids that reads found damaged (and, on a mirror, served from another copy)."""
        with self._damaged_lock:
            ids, self._damaged_inline = sorted(self._damaged_inline), set()
        return ids

    async def check_inline(self, inline_id: str) -> str:
        """Verify one inline body on every copy: "healthy", "repaired" (a mirror copy was damaged
        and is rewritten from a good one, on every copy in one transaction), "lost" (no copy
        matches its CRC32C) or "gone" (deleted meanwhile)."""
        rows = [self._reader().execute(_INLINE_ROW, (inline_id,)).fetchone()]
        if self._mirror is not None:
            elsewhere = self._mirror.read_elsewhere(_INLINE_ROW, (inline_id,))
            rows += [found[0] if found else None for _index, found in elsewhere]
        present = [row for row in rows if row is not None]
        if not present:
            return "gone"
        good = [row for row in present if crc32c(row[1]) == row[0]]
        if len(good) == len(present):
            return "healthy"
        if not good:
            return "lost"
        crc, data = good[0]

        def fn(c: sqlite3.Connection) -> int:  # rows are never changed otherwise: rewriting is safe
            sql = "UPDATE inline_blobs SET crc32c=?, data=? WHERE blob_id=?"
            return c.execute(sql, (crc, data, inline_id)).rowcount

        return "repaired" if await self._write(fn) else "gone"

    async def trash_batch(self, limit: int = 1000) -> list[str]:
        rows = self._reader().execute("SELECT blob_id FROM trash LIMIT ?", (limit,)).fetchall()
        return [r[0] for r in rows]

    async def trash_done(self, blob_ids: list[str]) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.executemany("DELETE FROM trash WHERE blob_id=?", [(b,) for b in blob_ids])

        await self._write(fn)

    async def trash_add(self, blob_ids: list[str]) -> None:
        """Queue blobs that were written but never published (a failed request) for deletion."""

        def fn(c: sqlite3.Connection) -> None:
            for b in blob_ids:
                if not c.execute("SELECT 1 FROM blobs WHERE blob_id=?", (b,)).fetchone():
                    c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (b,))

        await self._write(fn)

    # --- multipart -------------------------------------------------------------------
    async def create_upload(self, info: UploadInfo) -> None:
        doc = {
            "h": info.headers,
            "u": info.user_meta,
            "ca": info.checksum_algorithm,
            "ctype": info.checksum_type,
            "sc": info.storage_class,
        }
        if info.encryption:
            doc["e"] = info.encryption

        def fn(c: sqlite3.Connection) -> None:
            props = self._props(c, info.bucket)
            key_b = info.key.encode()
            c.execute(
                "INSERT INTO uploads(upload_id, bucket, key, initiated_ns, meta) VALUES(?,?,?,?,?)",
                (info.upload_id, info.bucket, key_b, info.initiated_ns, json.dumps(doc)),
            )
            self._lifecycle_upload(c, info.bucket, key_b, info.upload_id, info.initiated_ns, props)

        await self._write(fn)

    @staticmethod
    def _upload_from_row(row: tuple[Any, ...]) -> UploadInfo:
        upload_id, bucket, key_b, initiated_ns, meta_s = row
        doc = json.loads(meta_s)
        return UploadInfo(
            bucket=bucket,
            key=bytes(key_b).decode(),
            upload_id=upload_id,
            initiated_ns=initiated_ns,
            headers=doc.get("h", {}),
            user_meta=doc.get("u", {}),
            checksum_algorithm=doc.get("ca"),
            checksum_type=doc.get("ctype"),
            storage_class=doc.get("sc", "STANDARD"),
            encryption=doc.get("e", {}),
        )

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        row = (
            self._reader()
            .execute(
                "SELECT upload_id, bucket, key, initiated_ns, meta FROM uploads WHERE upload_id=?",
                (upload_id,),
            )
            .fetchone()
        )
        if row is None or row[1] != bucket or bytes(row[2]) != key.encode():
            raise NoSuchUpload(resource=upload_id)
        return self._upload_from_row(row)

    async def list_uploads(self, bucket: str, after_key: bytes, after_upload: str, limit: int) -> list[UploadInfo]:
        rows = (
            self._reader()
            .execute(
                "SELECT upload_id, bucket, key, initiated_ns, meta FROM uploads WHERE bucket=?"
                " AND (key > ? OR (key = ? AND upload_id > ?)) ORDER BY key, upload_id LIMIT ?",
                (bucket, after_key, after_key, after_upload, limit),
            )
            .fetchall()
        )
        return [self._upload_from_row(r) for r in rows]

    async def put_part(self, upload_id: str, part: PartInfo) -> None:
        """Record a part; a part uploaded again under the same number replaces the old one."""

        def fn(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM uploads WHERE upload_id=?", (upload_id,)).fetchone():
                raise NoSuchUpload(resource=upload_id)
            old = c.execute(
                "SELECT blob_id FROM parts WHERE upload_id=? AND part_number=?", (upload_id, part.part_number)
            ).fetchone()
            if old is not None:
                self._unref_all(c, [old[0]])
            # the blob's own size (the heal walk reads it): ciphertext for an encrypted part
            self._ref(c, part.blob_id, part.size_bytes if part.stored_bytes is None else part.stored_bytes)
            c.execute(
                "INSERT OR REPLACE INTO parts(upload_id, part_number, size, etag, modified_ns, checksums, blob_id)"
                " VALUES(?,?,?,?,?,?,?)",
                (
                    upload_id,
                    part.part_number,
                    part.size_bytes,
                    part.etag,
                    part.modified_ns,
                    json.dumps(_part_checksums_doc(part)),
                    part.blob_id,
                ),
            )

        await self._write(fn)

    async def list_parts(self, upload_id: str, after_part: int = 0, limit: int = 10_000) -> list[PartInfo]:
        rows = (
            self._reader()
            .execute(
                "SELECT part_number, size, etag, modified_ns, checksums, blob_id FROM parts"
                " WHERE upload_id=? AND part_number>? ORDER BY part_number LIMIT ?",
                (upload_id, after_part, limit),
            )
            .fetchall()
        )
        return [_part_from_row(*row) for row in rows]

    def _drop_upload(self, c: sqlite3.Connection, upload_id: str) -> None:
        blob_ids = [r[0] for r in c.execute("SELECT blob_id FROM parts WHERE upload_id=?", (upload_id,))]
        self._unref_all(c, blob_ids)
        c.execute("DELETE FROM parts WHERE upload_id=?", (upload_id,))
        self._lifecycle_upload_gone(c, upload_id)
        c.execute("DELETE FROM uploads WHERE upload_id=?", (upload_id,))

    async def abort_upload(self, upload_id: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM uploads WHERE upload_id=?", (upload_id,)).fetchone():
                raise NoSuchUpload(resource=upload_id)
            self._drop_upload(c, upload_id)

        await self._write(fn)

    async def abort_uploads_before(self, initiated_before_ns: int, limit: int) -> list[UploadInfo]:
        """Abort up to ``limit`` uploads initiated before ``initiated_before_ns``, in one
        transaction, and return them: several processes may run this at once, and each upload
        is claimed (dropped) by exactly one of them. Their parts' blobs go to the trash."""

        def fn(c: sqlite3.Connection) -> list[UploadInfo]:
            rows = c.execute(
                "SELECT upload_id, bucket, key, initiated_ns, meta FROM uploads WHERE initiated_ns < ?"
                " ORDER BY initiated_ns LIMIT ?",
                (initiated_before_ns, limit),
            ).fetchall()
            for row in rows:
                self._drop_upload(c, row[0])
            return [self._upload_from_row(r) for r in rows]

        return await self._write(fn)

    async def complete_upload(
        self,
        upload_id: str,
        record: VersionRecord,
        *,
        check: Callable[[VersionRecord | None], None] | None = None,
        guard: Guard | None = None,
        parts_fingerprint: str = "",
        forget_before_ns: int = 0,
        fixed_version_id: bool = False,
    ) -> str:
        """Publish ``record`` (whose blobs are the chosen parts' blobs) and drop the upload,
        atomically. The upload is remembered as completed with ``parts_fingerprint`` and the
        result (``completed_upload``), so a retry can be answered; completions from before
        ``forget_before_ns`` are forgotten in the same transaction. ``fixed_version_id``: as for
        ``put_version`` (an encrypted object binds its version id)."""

        chosen = {b.blob_id for b in record.blobs}
        m = record.meta

        def remember(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM completed_uploads WHERE completed_ns < ?", (forget_before_ns,))
            c.execute(
                "INSERT OR REPLACE INTO completed_uploads(upload_id, bucket, key, completed_ns, parts, result)"
                " VALUES(?,?,?,?,?,?)",
                (upload_id, m.bucket, m.key.encode(), m.modified_ns, parts_fingerprint, _completed_doc(m)),
            )

        def extra(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM uploads WHERE upload_id=?", (upload_id,)).fetchone():
                raise NoSuchUpload(resource=upload_id)
            # Parts chosen for the object hand their reference over to the version (put_version
            # takes one per blob right after this); the others go to the trash.
            blob_ids = [r[0] for r in c.execute("SELECT blob_id FROM parts WHERE upload_id=?", (upload_id,))]
            for blob_id in blob_ids:
                if blob_id in chosen:
                    c.execute("UPDATE blobs SET refs = refs - 1 WHERE blob_id=?", (blob_id,))
            self._unref_all(c, [b for b in blob_ids if b not in chosen])
            c.execute("DELETE FROM parts WHERE upload_id=?", (upload_id,))
            self._lifecycle_upload_gone(c, upload_id)
            c.execute("DELETE FROM uploads WHERE upload_id=?", (upload_id,))

        return await self.put_version(
            record, check=check, extra=extra, guard=guard, done=remember, fixed_version_id=fixed_version_id
        )

    async def completed_upload(self, bucket: str, key: str, upload_id: str) -> tuple[str, ObjectMeta] | None:
        """(parts fingerprint, result) of a remembered completion of ``upload_id`` of ``key``."""
        row = (
            self._reader()
            .execute(
                "SELECT completed_ns, parts, result FROM completed_uploads WHERE upload_id=? AND bucket=? AND key=?",
                (upload_id, bucket, key.encode()),
            )
            .fetchone()
        )
        if row is None:
            return None
        completed_ns, fingerprint, result_s = row
        return fingerprint, _completed_meta(bucket, key, completed_ns, result_s)

    # --- datasets (docs/datasets.md) -------------------------------------------------
    async def manifest_rows(
        self, bucket: str, prefix: bytes, after: bytes | None, limit: int
    ) -> list[tuple[bytes, str, int, str, str, str, str | None]]:
        """Live latest versions under ``prefix`` after key ``after`` (None: from the start), in
        key order: (key, version_id, size, etag, meta JSON, blobs JSON, inline_id)."""
        below = prefix + b"\xff"
        start, op = (prefix, ">=") if after is None else (after, ">")
        return (
            self._reader()
            .execute(
                "SELECT key, version_id, size, etag, meta, blobs, inline_id FROM versions"  # noqa: S608 - constant
                f" WHERE bucket=? AND is_latest=1 AND is_delete_marker=0 AND key{op}? AND key<? ORDER BY key LIMIT ?",
                (bucket, start, below, limit),
            )
            .fetchall()
        )

    async def get_dataset(
        self, name: str, version: int | None = None, *, table: str = "datasets"
    ) -> DatasetRecord | None:
        """Version ``version`` of dataset ``name``, or its latest version (None). ``table``:
        ``datasets`` or ``models`` (PINNING_TABLES; a model version has the same record shape)."""
        table = _pinning(table)
        if version is None:
            sql = f"SELECT {_DATASET_COLS} FROM {table} WHERE name=? ORDER BY version DESC LIMIT 1"  # noqa: S608
            row = self._reader().execute(sql, (name,)).fetchone()
        else:
            sql = f"SELECT {_DATASET_COLS} FROM {table} WHERE name=? AND version=?"  # noqa: S608 - constant
            row = self._reader().execute(sql, (name, version)).fetchone()
        return DatasetRecord.from_row(row) if row else None

    async def list_datasets(self, name: str | None = None, *, table: str = "datasets") -> list[DatasetRecord]:
        """Every dataset version (or every version of ``name``), by name then version."""
        table = _pinning(table)
        if name is None:
            rows = self._reader().execute(f"SELECT {_DATASET_COLS} FROM {table} ORDER BY name, version").fetchall()  # noqa: S608
        else:
            sql = f"SELECT {_DATASET_COLS} FROM {table} WHERE name=? ORDER BY version"  # noqa: S608 - constant
            rows = self._reader().execute(sql, (name,)).fetchall()
        return [DatasetRecord.from_row(r) for r in rows]

    async def next_dataset_version(self, name: str, *, table: str = "datasets") -> int:
        sql = f"SELECT MAX(version) FROM {_pinning(table)} WHERE name=?"  # noqa: S608 - constant
        row = self._reader().execute(sql, (name,)).fetchone()
        return int(row[0] or 0) + 1

    async def create_dataset(
        self, record: DatasetRecord, blobs: Sequence[str], inline: Sequence[str], *, table: str = "datasets"
    ) -> None:
        """Publish ``record`` (its manifest blob already durable) and pin what its rows read:
        one reference per distinct blob in ``blobs`` (``blobs.refs``, as versions count theirs)
        and one pin per inline body in ``inline``, in one transaction. Raises ``PinGone`` if a
        pinned blob or body was deleted since the manifest was built (the caller rebuilds it),
        ``VersionTaken`` if another writer published ``record.version`` first. ``table``:
        ``datasets`` or ``models`` — a model version pins its checkpoint's bytes the same way."""
        table = _pinning(table)

        def fn(c: sqlite3.Connection) -> None:
            sql = f"SELECT MAX(version) FROM {table} WHERE name=?"  # noqa: S608 - constant
            latest = c.execute(sql, (record.name,)).fetchone()[0]
            if int(latest or 0) + 1 != record.version:
                raise VersionTaken(record.name)
            # In bulk, in key order (a million pins: ~3 s instead of ~8 one statement each);
            # every id must hit its row, else something was deleted since the manifest was built.
            big = len(blobs) + len(inline) > 100_000
            if big:  # the pages a million updates touch, held at once: 8 s -> 3 s
                c.execute("PRAGMA cache_size=-262144")
            try:
                for pinned, column, ids in (("blobs", "refs", blobs), ("inline_blobs", "pins", inline)):
                    sql = f"UPDATE {pinned} SET {column} = {column} + 1 WHERE blob_id=?"  # noqa: S608 - constants
                    if c.executemany(sql, ((i,) for i in sorted(ids))).rowcount != len(ids):
                        raise PinGone(f"a pinned {pinned} row is gone")
            finally:
                if big:
                    c.execute("PRAGMA cache_size=-2000")  # SQLite's default again
            self._ref(c, record.manifest_blob, record.manifest_bytes)
            c.execute(f"INSERT INTO {table}({_DATASET_COLS}) VALUES(?,?,?,?,?,?,?,?)", record.to_row())

        await self._write(fn)

    async def delete_dataset(
        self, name: str, version: int, blobs: Sequence[str], inline: Sequence[str], *, table: str = "datasets"
    ) -> None:
        """Remove dataset version ``name@version`` and release its pins (``blobs`` and ``inline``:
        the same lists ``create_dataset`` was given). A blob or body no longer referenced by
        anything goes to the trash, or is deleted, in the same transaction. A model version an
        alias points at is refused (``ModelAliasInUse``), checked in the same transaction."""
        table = _pinning(table)

        def fn(c: sqlite3.Connection) -> None:
            sql = f"SELECT manifest_blob FROM {table} WHERE name=? AND version=?"  # noqa: S608 - constant
            row = c.execute(sql, (name, version)).fetchone()
            if row is None:
                missing = NoSuchModel if table == "models" else NoSuchDataset
                raise missing(resource=f"{name}@{version}")
            if table == "models":
                aliases = [a for (a,) in c.execute(
                    "SELECT alias FROM model_aliases WHERE name=? AND version=? ORDER BY alias", (name, version)
                )]  # fmt: skip
                if aliases:
                    raise ModelAliasInUse(name, version, aliases)
            c.execute(f"DELETE FROM {table} WHERE name=? AND version=?", (name, version))  # noqa: S608 - constant
            self._unref_all(c, [*blobs, row[0]])
            ids = [(i,) for i in sorted(inline)]
            c.executemany("UPDATE inline_blobs SET pins = pins - 1 WHERE blob_id=?", ids)
            c.executemany("DELETE FROM inline_blobs WHERE blob_id=? AND pins<=0 AND released=1", ids)

        await self._write(fn)

    # --- model aliases (docs/checkpoints.md) ---------------------------------------------
    async def model_aliases(self, name: str | None = None) -> list[tuple[str, str, int, int]]:
        """(name, alias, version, updated_ns) of every alias (of model ``name``), by name and alias."""
        if name is None:
            sql = "SELECT name, alias, version, updated_ns FROM model_aliases ORDER BY name, alias"
            return [tuple(r) for r in self._reader().execute(sql).fetchall()]
        sql = "SELECT name, alias, version, updated_ns FROM model_aliases WHERE name=? ORDER BY alias"
        return [tuple(r) for r in self._reader().execute(sql, (name,)).fetchall()]

    async def model_alias(self, name: str, alias: str) -> int | None:
        """The version ``name@alias`` points at (None: no such alias)."""
        sql = "SELECT version FROM model_aliases WHERE name=? AND alias=?"
        row = self._reader().execute(sql, (name, alias)).fetchone()
        return int(row[0]) if row else None

    async def set_model_alias(self, name: str, alias: str, version: int, updated_ns: int) -> int | None:
        """Point ``name@alias`` at ``version`` (creating or moving it) in one transaction, so a
        reader sees the old version or the new one, never neither; returns the version it
        pointed at before (None: a new alias). ``NoSuchModel`` if ``name@version`` does not exist."""

        def fn(c: sqlite3.Connection) -> int | None:
            if c.execute("SELECT 1 FROM models WHERE name=? AND version=?", (name, version)).fetchone() is None:
                raise NoSuchModel(f"No model version {name}@{version}.", resource=f"{name}@{version}")
            row = c.execute("SELECT version FROM model_aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            c.execute(
                "INSERT INTO model_aliases(name, alias, version, updated_ns) VALUES(?,?,?,?)"
                " ON CONFLICT(name, alias) DO UPDATE SET version=excluded.version, updated_ns=excluded.updated_ns",
                (name, alias, version, updated_ns),
            )
            return int(row[0]) if row else None

        return await self._write(fn)

    async def delete_model_alias(self, name: str, alias: str) -> int:
        """Remove ``name@alias``; returns the version it pointed at (``NoSuchModel`` if none)."""

        def fn(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT version FROM model_aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            if row is None:
                raise NoSuchModel(f"No alias {name}@{alias}.", resource=f"{name}@{alias}")
            c.execute("DELETE FROM model_aliases WHERE name=? AND alias=?", (name, alias))
            return int(row[0])

        return await self._write(fn)

    async def inline_bodies(self, ids: Sequence[str]) -> dict[str, bytes]:
        """The inline bodies ``ids`` (verified, as a GET reads them), by id; a missing id is absent.
        One query for the lot: a batch of dataset rows costs one statement, not one per row."""
        found: dict[str, bytes] = {}
        conn = self._reader()
        distinct = list(dict.fromkeys(ids))
        for start in range(0, len(distinct), 500):  # SQLite's bound-parameter limit
            part = distinct[start : start + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT blob_id, crc32c, data FROM inline_blobs WHERE blob_id IN ({marks})"  # noqa: S608
            for blob_id, crc, data in conn.execute(sql, part).fetchall():
                found[blob_id] = self._verified_inline(blob_id, crc, data, f"inline body {blob_id}")
        return found

    # --- health and usage (docs/observability.md) ----------------------------------------
    async def probe_write(self) -> None:
        """Raise unless a write could commit now: a job that takes the write lock as any write
        does (on a mirror: on a quorum of copies) and changes nothing. Cheap: no page is
        written, no fsync (an empty transaction)."""

        def fn(c: sqlite3.Connection) -> None:
            raise _ProbeDone

        try:
            await self._write(fn)
        except _ProbeDone:
            return

    async def bucket_usage(self, limit: int) -> list[tuple[str, int, int, int, int, int]]:
        """Per bucket (the first ``limit`` by name): (bucket, objects, object bytes, versions,
        delete markers, stored bytes of every version). One aggregate query over the version
        rows of those buckets in primary-key order (no index holds the sums: ~0.5 s a million
        versions), so callers cache it; it runs on a worker thread, not on the event loop."""
        return await asyncio.to_thread(self._bucket_usage, limit)

    def _bucket_usage(self, limit: int) -> list[tuple[str, int, int, int, int, int]]:
        c = self._reader()
        names = [str(r[0]) for r in c.execute("SELECT name FROM buckets ORDER BY name LIMIT ?", (limit,))]
        if not names:
            return []
        sums = {
            str(r[0]): tuple(int(x or 0) for x in r[1:])
            for r in c.execute(
                "SELECT bucket, sum(is_latest AND NOT is_delete_marker),"
                " sum(CASE WHEN is_latest AND NOT is_delete_marker THEN size ELSE 0 END),"
                " count(*), sum(is_delete_marker), sum(size)"
                " FROM versions NOT INDEXED WHERE bucket >= ? AND bucket <= ? GROUP BY bucket",
                (names[0], names[-1]),
            )
        }
        out = []
        for name in names:
            objects, object_bytes, versions, markers, stored = sums.get(name, (0, 0, 0, 0, 0))
            out.append((name, objects, object_bytes, versions, markers, stored))
        return out

    async def bucket_count(self) -> int:
        """On a worker thread (the health probe's read: a stuck catalog must not stall the loop)."""
        sql = "SELECT count(*) FROM buckets"
        return await asyncio.to_thread(lambda: int(self._reader().execute(sql).fetchone()[0]))

    # --- maintenance -----------------------------------------------------------------
    async def counts(self) -> dict[str, int]:
        c = self._reader()
        return {
            "buckets": c.execute("SELECT count(*) FROM buckets").fetchone()[0],
            "versions": c.execute("SELECT count(*) FROM versions").fetchone()[0],
            "blobs": c.execute("SELECT count(*) FROM blobs").fetchone()[0],
            "trash": c.execute("SELECT count(*) FROM trash").fetchone()[0],
            "inline": c.execute("SELECT count(*) FROM inline_blobs").fetchone()[0],
            "uploads": c.execute("SELECT count(*) FROM uploads").fetchone()[0],
        }
