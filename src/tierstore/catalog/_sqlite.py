"""SQLite catalog: the embedded default.

One database file in WAL mode with ``synchronous=FULL``: a transaction that returned is on
disk. Writes run on one dedicated thread per process (``BEGIN IMMEDIATE``, so several server
processes sharing the file serialize through SQLite's lock and ``busy_timeout``); point reads
and listings run inline on the caller's thread with their own connection (WAL readers never
block the writer and see only committed state).

Keys are stored as BLOB (their UTF-8 bytes) so ordering is byte order, as S3 lists. Blob
references are counted in ``blobs``; a version that goes away moves its unreferenced blobs
into ``trash`` in the same transaction, which GC drains. A blob on disk that is in neither
table is an orphan (a crash between blob write and commit) and GC removes it after a grace
period that covers in-flight uploads.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tierstore.errors import (
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    InsufficientStorage,
    InternalError,
    NoSuchBucket,
    NoSuchUpload,
)
from tierstore.types import BucketInfo, ObjectMeta, PartInfo, UploadInfo

__all__ = ["BlobRef", "SqliteCatalog", "VersionRecord"]

T = TypeVar("T")

SCHEMA_VERSION = 1
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


@dataclass(frozen=True, slots=True)
class BlobRef:
    blob_id: str
    size_bytes: int


@dataclass(slots=True)
class VersionRecord:
    """One object version as the catalog stores it: what clients see plus where the bytes are."""

    meta: ObjectMeta
    blobs: list[BlobRef] = field(default_factory=list)
    is_delete_marker: bool = False


def _meta_json(m: ObjectMeta) -> str:
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
    if m.storage_class != "STANDARD":
        doc["sc"] = m.storage_class
    return json.dumps(doc, separators=(",", ":"))


def _row_to_record(bucket: str, row: tuple[Any, ...]) -> VersionRecord:
    key_b, version_id, is_dm, size, etag, modified_ns, meta_s, blobs_s = row
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
        storage_class=doc.get("sc", "STANDARD"),
    )
    blobs = [BlobRef(b, s) for b, s in json.loads(blobs_s)]
    return VersionRecord(meta=meta, blobs=blobs, is_delete_marker=bool(is_dm))


_VERSION_COLS = "key, version_id, is_delete_marker, size, etag, modified_ns, meta, blobs"


def _translate(exc: sqlite3.Error) -> Exception:
    msg = str(exc).lower()
    if "disk is full" in msg or "database or disk is full" in msg:
        return InsufficientStorage("The catalog could not be written: the disk is full.")
    return InternalError("Catalog error.")


class SqliteCatalog:
    """All metadata in one SQLite file. Create with ``SqliteCatalog(path)``, then ``close()``."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-writer")
        self._wconn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._writer.submit(self._open_writer).result()

    # --- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    def _open_writer(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta(name, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
        row = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        if int(row[0]) != SCHEMA_VERSION:
            raise InternalError(f"catalog schema {row[0]} is not supported (expected {SCHEMA_VERSION})")
        self._wconn = conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        def _close() -> None:
            if self._wconn is not None:
                self._wconn.close()
                self._wconn = None

        self._writer.submit(_close).result()
        self._writer.shutdown(wait=True)
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction on the writer thread; commit on success."""

        def run() -> T:
            conn = self._wconn
            assert conn is not None, "catalog is closed"
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _translate(exc) from exc
            return result

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, run)

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
            c.execute("DELETE FROM buckets WHERE name=?", (name,))

        await self._write(fn)

    def get_bucket(self, name: str) -> BucketInfo | None:
        row = self._reader().execute("SELECT name, created_ns, region FROM buckets WHERE name=?", (name,)).fetchone()
        return BucketInfo(*row) if row else None

    def list_buckets(self) -> list[BucketInfo]:
        rows = self._reader().execute("SELECT name, created_ns, region FROM buckets ORDER BY name").fetchall()
        return [BucketInfo(*r) for r in rows]

    # --- objects ---------------------------------------------------------------------
    def get_latest(self, bucket: str, key: str) -> VersionRecord | None:
        row = (
            self._reader()
            .execute(
                f"SELECT {_VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND is_latest=1",  # noqa: S608 - constant
                (bucket, key.encode()),
            )
            .fetchone()
        )
        return _row_to_record(bucket, row) if row else None

    async def put_version(
        self,
        record: VersionRecord,
        *,
        check: Callable[[VersionRecord | None], None] | None = None,
        extra: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Publish ``record`` as the latest version of its key (unversioned: replaces the old one).

        ``check`` runs inside the transaction with the current version, for conditional writes;
        it raises to abort. ``extra`` runs in the same transaction (multipart completion uses it).
        """
        m = record.meta
        key_b = m.key.encode()

        def fn(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM buckets WHERE name=?", (m.bucket,)).fetchone():
                raise NoSuchBucket(resource=m.bucket)
            row = c.execute(
                f"SELECT {_VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND is_latest=1",  # noqa: S608 - constant
                (m.bucket, key_b),
            ).fetchone()
            current = _row_to_record(m.bucket, row) if row else None
            if check is not None:
                check(current)
            if extra is not None:
                extra(c)
            if current is not None:
                # Unversioned bucket: the previous version goes away in this same transaction.
                c.execute(
                    "DELETE FROM versions WHERE bucket=? AND key=? AND version_id=?",
                    (m.bucket, key_b, current.meta.version_id),
                )
                self._unref_all(c, (b.blob_id for b in current.blobs))
            for b in record.blobs:
                self._ref(c, b.blob_id, b.size_bytes)
            c.execute(
                "INSERT INTO versions(bucket, key, version_id, is_latest, is_delete_marker, size, etag,"
                " modified_ns, meta, blobs) VALUES(?,?,?,?,?,?,?,?,?,?)",
                (
                    m.bucket,
                    key_b,
                    m.version_id,
                    1,
                    int(record.is_delete_marker),
                    m.size_bytes,
                    m.etag,
                    m.modified_ns,
                    _meta_json(m),
                    json.dumps([[b.blob_id, b.size_bytes] for b in record.blobs]),
                ),
            )

        await self._write(fn)

    async def delete_latest(
        self, bucket: str, key: str, *, check: Callable[[VersionRecord | None], None] | None = None
    ) -> VersionRecord | None:
        """Remove the latest version of ``key`` (unversioned delete). Returns what was removed."""
        key_b = key.encode()

        def fn(c: sqlite3.Connection) -> VersionRecord | None:
            if not c.execute("SELECT 1 FROM buckets WHERE name=?", (bucket,)).fetchone():
                raise NoSuchBucket(resource=bucket)
            row = c.execute(
                f"SELECT {_VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND is_latest=1",  # noqa: S608 - constant
                (bucket, key_b),
            ).fetchone()
            current = _row_to_record(bucket, row) if row else None
            if check is not None:
                check(current)
            if current is None:
                return None
            c.execute(
                "DELETE FROM versions WHERE bucket=? AND key=? AND version_id=?",
                (bucket, key_b, current.meta.version_id),
            )
            self._unref_all(c, (b.blob_id for b in current.blobs))
            return current

        return await self._write(fn)

    def scan_latest(
        self, bucket: str, after: bytes, below: bytes, limit: int, *, inclusive: bool = False
    ) -> list[tuple[bytes, int, str, int, str]]:
        """Live latest versions with ``after < key < below`` (``<=`` when inclusive), in byte
        order: (key, size, etag, modified_ns, meta json)."""
        op = ">=" if inclusive else ">"
        return (
            self._reader()
            .execute(
                "SELECT key, size, etag, modified_ns, meta FROM versions"  # noqa: S608 - op is > or >=
                f" WHERE bucket=? AND is_latest=1 AND key{op}? AND key<? AND is_delete_marker=0"
                " ORDER BY key LIMIT ?",
                (bucket, after, below, limit),
            )
            .fetchall()
        )

    # --- blob references -------------------------------------------------------------
    @staticmethod
    def _ref(c: sqlite3.Connection, blob_id: str, size: int) -> None:
        c.execute(
            "INSERT INTO blobs(blob_id, size, refs) VALUES(?,?,1) ON CONFLICT(blob_id) DO UPDATE SET refs = refs + 1",
            (blob_id, size),
        )
        c.execute("DELETE FROM trash WHERE blob_id=?", (blob_id,))

    @staticmethod
    def _unref_all(c: sqlite3.Connection, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            c.execute("UPDATE blobs SET refs = refs - 1 WHERE blob_id=?", (blob_id,))
            row = c.execute("SELECT refs FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
            if row is None or row[0] <= 0:
                c.execute("DELETE FROM blobs WHERE blob_id=?", (blob_id,))
                c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (blob_id,))

    def blob_known(self, blob_id: str) -> bool:
        """True if the catalog references ``blob_id`` or still has it queued for deletion."""
        c = self._reader()
        return bool(
            c.execute("SELECT 1 FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
            or c.execute("SELECT 1 FROM trash WHERE blob_id=?", (blob_id,)).fetchone()
        )

    def trash_batch(self, limit: int = 1000) -> list[str]:
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

        def fn(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM buckets WHERE name=?", (info.bucket,)).fetchone():
                raise NoSuchBucket(resource=info.bucket)
            c.execute(
                "INSERT INTO uploads(upload_id, bucket, key, initiated_ns, meta) VALUES(?,?,?,?,?)",
                (info.upload_id, info.bucket, info.key.encode(), info.initiated_ns, json.dumps(doc)),
            )

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
        )

    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        row = (
            self._reader()
            .execute("SELECT upload_id, bucket, key, initiated_ns, meta FROM uploads WHERE upload_id=?",
                (upload_id,),)
            .fetchone()
        )
        if row is None or row[1] != bucket or bytes(row[2]) != key.encode():
            raise NoSuchUpload(resource=upload_id)
        return self._upload_from_row(row)

    def list_uploads(self, bucket: str, after_key: bytes, after_upload: str, limit: int) -> list[UploadInfo]:
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
            self._ref(c, part.blob_id, part.size_bytes)
            c.execute(
                "INSERT OR REPLACE INTO parts(upload_id, part_number, size, etag, modified_ns, checksums, blob_id)"
                " VALUES(?,?,?,?,?,?,?)",
                (
                    upload_id,
                    part.part_number,
                    part.size_bytes,
                    part.etag,
                    part.modified_ns,
                    json.dumps(part.checksums),
                    part.blob_id,
                ),
            )

        await self._write(fn)

    def list_parts(self, upload_id: str, after_part: int = 0, limit: int = 10_000) -> list[PartInfo]:
        rows = (
            self._reader()
            .execute(
                "SELECT part_number, size, etag, modified_ns, checksums, blob_id FROM parts"
                " WHERE upload_id=? AND part_number>? ORDER BY part_number LIMIT ?",
                (upload_id, after_part, limit),
            )
            .fetchall()
        )
        return [PartInfo(n, s, e, m, json.loads(cs), b) for n, s, e, m, cs, b in rows]

    def _drop_upload(self, c: sqlite3.Connection, upload_id: str) -> None:
        blob_ids = [r[0] for r in c.execute("SELECT blob_id FROM parts WHERE upload_id=?", (upload_id,))]
        self._unref_all(c, blob_ids)
        c.execute("DELETE FROM parts WHERE upload_id=?", (upload_id,))
        c.execute("DELETE FROM uploads WHERE upload_id=?", (upload_id,))

    async def abort_upload(self, upload_id: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM uploads WHERE upload_id=?", (upload_id,)).fetchone():
                raise NoSuchUpload(resource=upload_id)
            self._drop_upload(c, upload_id)

        await self._write(fn)

    async def complete_upload(
        self, upload_id: str, record: VersionRecord, *, check: Callable[[VersionRecord | None], None] | None = None
    ) -> None:
        """Publish ``record`` (whose blobs are the chosen parts' blobs) and drop the upload, atomically."""

        chosen = {b.blob_id for b in record.blobs}

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
            c.execute("DELETE FROM uploads WHERE upload_id=?", (upload_id,))

        await self.put_version(record, check=check, extra=extra)

    # --- maintenance -----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        c = self._reader()
        return {
            "buckets": c.execute("SELECT count(*) FROM buckets").fetchone()[0],
            "versions": c.execute("SELECT count(*) FROM versions").fetchone()[0],
            "blobs": c.execute("SELECT count(*) FROM blobs").fetchone()[0],
            "trash": c.execute("SELECT count(*) FROM trash").fetchone()[0],
            "uploads": c.execute("SELECT count(*) FROM uploads").fetchone()[0],
        }
