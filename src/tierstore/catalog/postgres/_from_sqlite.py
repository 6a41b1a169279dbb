"""Copy an embedded (SQLite) catalog into a PostgreSQL one: ``tierstore admin migrate --to
postgresql://...`` (docs/scale-out.md "Migrating").

Table by table, rows as they are: both engines keep the same documents (metadata, blob lists,
properties, sealed secrets) in the same text, so a row moves with its column types converted
(``INTEGER`` 0/1 to ``boolean``, ``TEXT`` JSON to ``jsonb`` where PostgreSQL keeps it so, a bucket
name to its id) and nothing re-encoded: secrets stay sealed by the same master key, a version
keeps its ``seq`` (the order of a key's versions) and its delete-marker flag.

- **Bulk**: pages of ``batch_rows`` rows in primary-key order, each sent with
  ``copy_records_to_table`` (PostgreSQL's ``COPY``, binary).
- **Resumable**: a page's rows and the table's cursor (the last primary key copied, in
  ``meta`` as ``migrate:TABLE``) commit in one transaction, so a migration killed anywhere
  resumes after the last page that committed, with no row twice (a duplicate would fail the
  primary key, loudly). No schema step: the cursors live in the ``meta`` table every schema has.
- **One source per target**: the first page records the source's master key id as
  ``migrate:store``; a target holding another store's migration, or data no migration wrote,
  is refused before anything is written.
- **Verified**: at the end, per table, the row count and an order-independent digest (the sum
  of SHA-256 over each row's canonical form, modulo 2^256) are computed on both sides from the
  rows as PostgreSQL holds them; any difference fails, naming the table.

Not copied: ``meta`` (schema versions and generations are each engine's own), ``obj_attrs``
(SQLite's side index of the metadata query; PostgreSQL reads ``versions.meta`` in place),
``gateways`` and ``jobs`` (the registry and named leases of running processes: the source has no
server running, and a job's cursor only saves work, e.g. where a scrub pass resumes), the lease
columns of ``trash`` and ``tier_outbox`` (unclaimed on the target), and rows of a bucket that
no longer exists (SQLite has no foreign keys; such rows are counted and reported as skipped).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tierstore.catalog.postgres._pool import redact_dsn
from tierstore.catalog.postgres._schema import migrate
from tierstore.errors import SlowDown, TierstoreError

__all__ = [
    "TABLES",
    "MigrateError",
    "MigrationReport",
    "SourceCatalog",
    "Table",
    "TableReport",
    "migrate_catalog",
    "record_blob_store",
]

Row = tuple[Any, ...]
BucketIds = dict[str, int]
STORE_NAME = "migrate:store"  # meta: the master key id of the store this target was migrated from
_CURSOR = "migrate:"  # meta: ``migrate:TABLE`` -> {"after": [...], "rows": n, "skipped": n, "done": bool}
_KILL_ENV = "TIERSTORE_TEST_KILL_MIGRATE_AT"  # TABLE: SIGKILL after that table's first committed page (tests)
_DIGEST_MOD = 1 << 256
_MIGRATE_LOCK = 0x7469_6572_6D69_67  # "tiermig": held (session) by the one migration running on a target


class MigrateError(RuntimeError):
    """The migration cannot run or did not verify: one line for the operator (no password)."""


@dataclass(frozen=True, slots=True)
class Table:
    """One table of both schemas: the SQLite columns read (``key`` first in order: its primary
    key, the copy's order and cursor), the PostgreSQL columns written, and the conversion of a
    row (None: a row of a vanished bucket, skipped)."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    pg_columns: tuple[str, ...]
    convert: Callable[[Row, BucketIds], Row | None] = field(default=lambda row, _ids: row)
    jsonb: tuple[int, ...] = ()  # positions in the PostgreSQL row held as jsonb (re-spaced by PostgreSQL)
    max_page: int = 1 << 30  # rows per page at most, whatever --batch-rows says (rows holding bodies)

    @property
    def needs_buckets(self) -> bool:
        return self.name != "buckets" and ("bucket_id" in self.pg_columns)


def _b(value: Any) -> Any:
    """A key as bytes (SQLite may hold a TEXT key from an old schema)."""
    return value.encode() if isinstance(value, str) else value


def _flag(value: Any) -> bool:
    return bool(value)


def _versions(row: Row, ids: BucketIds) -> Row | None:
    bucket, key, version_id, latest, marker, size, etag, modified_ns, meta, blobs, seq, inline_id = row
    bucket_id = ids.get(bucket)
    if bucket_id is None:
        return None
    # The listing's column: meta's "sc" (absent for STANDARD: most documents need no parse).
    storage_class = json.loads(meta).get("sc", "STANDARD") if '"sc"' in meta else "STANDARD"
    return (
        bucket_id,
        _b(key),
        version_id,
        _flag(latest),
        _flag(marker),
        size,
        etag,
        modified_ns,
        storage_class,
        meta,
        blobs,
        seq,
        inline_id,
    )


def _by_bucket(position: int, *, key_at: int | None = None) -> Callable[[Row, BucketIds], Row | None]:
    """A row whose column ``position`` is a bucket name, written with the bucket's id there."""

    def convert(row: Row, ids: BucketIds) -> Row | None:
        bucket_id = ids.get(row[position])
        if bucket_id is None:
            return None
        out = list(row)
        out[position] = bucket_id
        if key_at is not None:
            out[key_at] = _b(out[key_at])
        return tuple(out)

    return convert


def _flags(*positions: int, nullable: bool = False) -> Callable[[Row, BucketIds], Row | None]:
    def convert(row: Row, _ids: BucketIds) -> Row | None:
        out = list(row)
        for i in positions:
            out[i] = None if nullable and out[i] is None else bool(out[i])
        return tuple(out)

    return convert


def _same(*names: str) -> tuple[str, ...]:
    return names


def _table(name: str, key: tuple[str, ...], columns: tuple[str, ...], **kw: Any) -> Table:
    return Table(name, key, columns, kw.pop("pg_columns", columns), **kw)


_DATASET = _same("name", "version", "manifest_blob", "manifest_bytes", "created_ns", "rows", "bytes", "info")
_V = ("bucket", "key", "version_id", "is_latest", "is_delete_marker", "size", "etag", "modified_ns", "meta", "blobs",
      "seq", "inline_id")  # fmt: skip
# PostgreSQL's versions: the bucket by id, the listing's storage_class (meta's "sc") after modified_ns.
_PG_V = ("bucket_id", *_V[1:8], "storage_class", *_V[8:])

# In dependency order: buckets first (the others name them by id).
TABLES: tuple[Table, ...] = (
    _table("buckets", ("name",), _same("name", "created_ns", "region", "props")),
    _table(
        "versions",
        ("bucket", "key", "version_id"),
        _V,
        convert=_versions,
        pg_columns=_PG_V,
    ),
    _table("blobs", ("blob_id",), _same("blob_id", "size", "refs", "tier", "cached"), convert=_flags(4, nullable=True)),
    _table("trash", ("blob_id",), _same("blob_id")),
    _table(  # bodies of up to 16 KiB by default (docs/inline.md): pages of at most 4 MiB of them
        "inline_blobs",
        ("blob_id",),
        _same("blob_id", "crc32c", "data", "pins", "released"),
        convert=_flags(4),
        max_page=256,
    ),
    _table(
        "uploads",
        ("upload_id",),
        _same("upload_id", "bucket", "key", "initiated_ns", "meta"),
        pg_columns=("upload_id", "bucket_id", "key", "initiated_ns", "meta"),
        convert=_by_bucket(1, key_at=2),
    ),
    _table(
        "completed_uploads",
        ("upload_id",),
        _same("upload_id", "bucket", "key", "completed_ns", "parts", "result"),
        pg_columns=("upload_id", "bucket_id", "key", "completed_ns", "parts", "result"),
        convert=_by_bucket(1, key_at=2),
    ),
    _table(
        "parts",
        ("upload_id", "part_number"),
        _same("upload_id", "part_number", "size", "etag", "modified_ns", "checksums", "blob_id"),
    ),
    _table("datasets", ("name", "version"), _DATASET),
    _table("models", ("name", "version"), _DATASET),
    _table("model_aliases", ("name", "alias"), _same("name", "alias", "version", "updated_ns")),
    _table(
        "iam_users", ("name",), _same("name", "user_id", "enabled", "tags", "created_ns"), convert=_flags(2), jsonb=(3,)
    ),
    _table(
        "iam_access_keys",
        ("access_key_id",),
        _same(
            "access_key_id",
            "user_name",
            "kind",
            "sealed_secret",
            "status",
            "created_ns",
            "last_used_ns",
            "expires_ns",
            "policy",
            "name",
        ),
    ),
    _table("iam_groups", ("name",), _same("name", "group_id", "created_ns")),
    _table("iam_group_members", ("group_name", "user_name"), _same("group_name", "user_name")),
    _table(
        "iam_policies", ("name",), _same("name", "policy_id", "document", "description", "created_ns", "updated_ns")
    ),
    _table(
        "iam_attachments",
        ("principal_type", "principal_name", "policy_name"),
        _same("principal_type", "principal_name", "policy_name"),
    ),
    _table(
        "iam_inline_policies",
        ("principal_type", "principal_name", "policy_name"),
        _same("principal_type", "principal_name", "policy_name", "document"),
    ),
    _table(
        "iam_roles", ("name",), _same("name", "role_id", "trust_policy", "max_session_s", "description", "created_ns")
    ),
    _table(
        "iam_boundaries", ("principal_type", "principal_name"), _same("principal_type", "principal_name", "policy_name")
    ),
    _table("iam_oidc_providers", ("url",), _same("url", "client_ids", "thumbprints", "created_ns"), jsonb=(1, 2)),
    _table(
        "kms_keys",
        ("key_id",),
        _same("key_id", "enabled", "description", "created_ns", "updated_ns"),
        convert=_flags(1),
    ),
    _table("kms_key_versions", ("key_id", "version"), _same("key_id", "version", "sealed_material", "created_ns")),
    _table("tiers", ("name",), _same("name", "config", "secret", "created_ns"), jsonb=(1,)),
    _table("tier_outbox", ("tier", "blob_id"), _same("tier", "blob_id", "queued_ns", "attempts", "next_ns")),
    _table(
        "tier_pending",
        ("bucket", "key", "version_id"),
        _same("bucket", "key", "version_id", "tier", "attempts", "next_ns"),
    ),
    _table(
        "tier_stats",
        ("tier",),
        _same("tier", "moved_bytes", "moved_objects", "errors", "last_error", "last_error_ns"),
        pg_columns=("tier", "slot", "moved_bytes", "moved_objects", "errors", "last_error", "last_error_ns"),
        convert=lambda row, _ids: (row[0], 0, *row[1:]),  # PostgreSQL sums a tier's slots: all in slot 0
    ),
    _table(
        "lifecycle_due",
        ("bucket", "key", "version_id", "action"),
        _same("bucket", "key", "version_id", "action", "due_ns", "storage_class"),
        pg_columns=("bucket_id", "key", "version_id", "action", "due_ns", "storage_class"),
        convert=_by_bucket(0, key_at=1),
    ),
    _table(
        "lifecycle_recompute",
        ("bucket",),
        _same("bucket", "after_key"),
        pg_columns=("bucket_id", "after_key"),
        convert=_by_bucket(0, key_at=1),
    ),
    _table("hot_holds", ("holder", "blob_id"), _same("holder", "blob_id", "expires_ns")),
    _table("hot_requests", ("holder",), _same("holder", "created_ns", "expires_ns", "ttl_ns", "done_ns", "lease_ns")),
)
assert all(t.columns[: len(t.key)] == t.key for t in TABLES)  # the cursor is a row's first columns


class SourceCatalog:
    """The embedded catalog file, read-only, in one read transaction (a consistent snapshot for
    the whole copy and its verification; the caller holds the store's lock, so no writer runs)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise MigrateError(f"no catalog at {path}")
        self.path = path
        self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        self._conn.execute("BEGIN")
        found = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t.name for t in TABLES if t.name not in found]
        if missing:
            raise MigrateError(f"{path} lacks tables {', '.join(missing)}: not a current tierstore catalog")

    def close(self) -> None:
        self._conn.close()

    def count(self, table: Table) -> int:
        return int(self._conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0])  # noqa: S608

    def page(self, table: Table, after: Sequence[Any] | None, limit: int) -> list[Row]:
        """Up to ``limit`` rows with a primary key past ``after``, in primary-key order."""
        cols, key = ", ".join(table.columns), ", ".join(table.key)
        where = f"WHERE ({key}) > ({', '.join('?' * len(table.key))})" if after is not None else ""
        sql = f"SELECT {cols} FROM {table.name} {where} ORDER BY {key} LIMIT ?"  # noqa: S608
        return self._conn.execute(sql, (*(after or ()), limit)).fetchall()

    def local_blobs(self) -> list[tuple[str, int]]:
        """(blob id, size) of every blob on the local drives (not in a remote tier): what
        ``--store`` copies. Inline bodies stay in the catalog."""
        rows = self._conn.execute("SELECT blob_id, size FROM blobs WHERE tier IS NULL ORDER BY blob_id")
        return [(str(blob_id), int(size)) for blob_id, size in rows]

    def rows(self, table: Table, batch: int = 10_000) -> Iterator[Row]:
        after: Sequence[Any] | None = None
        while rows := self.page(table, after, min(batch, table.max_page)):
            yield from rows
            after = rows[-1][: len(table.key)]


def _canonical(table: Table, row: Sequence[Any]) -> bytes:
    """A PostgreSQL row in one form whichever side it came from (jsonb re-spaced and sorted)."""
    out = list(row)
    for i in table.jsonb:
        if out[i] is not None:
            out[i] = json.dumps(json.loads(out[i]), sort_keys=True, separators=(",", ":"))
    return repr(tuple(out)).encode()


@dataclass(slots=True)
class Digest:
    rows: int = 0
    total: int = 0

    def add(self, canonical: bytes) -> None:
        self.rows += 1
        self.total = (self.total + int.from_bytes(hashlib.sha256(canonical).digest(), "big")) % _DIGEST_MOD

    @property
    def hex(self) -> str:
        return f"{self.total:064x}"


@dataclass(slots=True)
class TableReport:
    name: str
    source_rows: int
    copied: int = 0  # by this run
    skipped: int = 0  # rows of a vanished bucket (over every run)
    target_rows: int = 0
    digest: str = ""
    verified: bool = False


@dataclass(slots=True)
class MigrationReport:
    store: str  # the source's master key id
    tables: list[TableReport]
    resumed: bool  # an earlier run had copied some of it
    copy_s: float = 0.0
    verify_s: float = 0.0

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables)

    @property
    def mismatched(self) -> list[str]:
        return [t.name for t in self.tables if not t.verified]


def _encode_key(values: Sequence[Any]) -> list[Any]:
    return [{"b": v.hex()} if isinstance(v, bytes) else v for v in values]


def _decode_key(values: Sequence[Any]) -> list[Any]:
    return [bytes.fromhex(v["b"]) if isinstance(v, dict) else v for v in values]


async def _cursors(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch("SELECT name, value FROM meta WHERE name LIKE 'migrate:%' AND name <> $1", STORE_NAME)
    return {r["name"][len(_CURSOR) :]: json.loads(r["value"]) for r in rows}


async def _save(conn: asyncpg.Connection, table: str, state: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO meta(name, value) VALUES($1, $2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        _CURSOR + table,
        json.dumps(state),
    )


async def _claim_target(conn: asyncpg.Connection, store: str) -> bool:
    """Record ``store`` as the target's source, or refuse a target holding anything else; True
    when an earlier run already started this migration."""
    found = await conn.fetchval("SELECT value FROM meta WHERE name = $1", STORE_NAME)
    if found is not None and found != store:
        raise MigrateError(
            f"the target holds the catalog of another store (master key {found}; this store's is {store}): "
            "use an empty database"
        )
    if found is None:
        for table in TABLES:
            if await conn.fetchval(f"SELECT EXISTS(SELECT 1 FROM {table.name})"):  # noqa: S608
                raise MigrateError(
                    f"the target already holds data (table {table.name}) that no migration of this store wrote: "
                    "use an empty database"
                )
        await conn.execute("INSERT INTO meta(name, value) VALUES($1, $2)", STORE_NAME, store)
    return found is not None


async def _bucket_ids(conn: asyncpg.Connection) -> BucketIds:
    return {r["name"]: r["id"] for r in await conn.fetch("SELECT name, id FROM buckets")}


async def _copy_table(
    conn: asyncpg.Connection,
    source: SourceCatalog,
    table: Table,
    state: dict[str, Any],
    ids: BucketIds,
    report: TableReport,
    *,
    batch_rows: int,
    on_rows: Callable[[int], None],
) -> None:
    after: Sequence[Any] | None = _decode_key(state["after"]) if state.get("after") is not None else None
    kill = os.environ.get(_KILL_ENV) == table.name
    while rows := source.page(table, after, min(batch_rows, table.max_page)):
        records = [r for r in (table.convert(row, ids) for row in rows) if r is not None]
        last = rows[-1][: len(table.key)]
        after = last
        state = {
            "after": _encode_key(last),
            "rows": state.get("rows", 0) + len(rows),
            "skipped": state.get("skipped", 0) + len(rows) - len(records),
            "done": False,
        }
        async with conn.transaction():
            if records:
                await conn.copy_records_to_table(table.name, records=records, columns=table.pg_columns)
            await _save(conn, table.name, state)
        report.copied += len(records)
        on_rows(len(rows))
        if kill:  # a crash half way, for the resume test: this page committed, the rest not
            os.kill(os.getpid(), signal.SIGKILL)
    state["done"] = True
    await _save(conn, table.name, state)
    report.skipped = state.get("skipped", 0)


async def _verify(
    conn: asyncpg.Connection, source: SourceCatalog, table: Table, ids: BucketIds, report: TableReport
) -> None:
    """Count and digest the table on both sides, from the rows as PostgreSQL holds them."""
    want = Digest()
    for row in source.rows(table):
        converted = table.convert(row, ids)
        if converted is not None:
            want.add(_canonical(table, converted))
    got = Digest()
    query = f"SELECT {', '.join(table.pg_columns)} FROM {table.name}"  # noqa: S608
    async with conn.transaction():  # a cursor needs one
        async for record in conn.cursor(query, prefetch=min(5000, table.max_page)):
            got.add(_canonical(table, tuple(record)))
    report.target_rows, report.digest = got.rows, got.hex
    report.verified = (want.rows, want.total) == (got.rows, got.total)


async def migrate_catalog(
    source: SourceCatalog,
    dsn: str,
    store: str,
    *,
    batch_rows: int = 5000,
    on_phase: Callable[[str, int], None] = lambda _what, _n: None,
    on_rows: Callable[[int], None] = lambda _n: None,
    timeout_s: float = 30.0,
) -> MigrationReport:
    """Copy ``source`` into the PostgreSQL database at ``dsn`` (its schema brought current
    first), resuming an earlier run of the same ``store`` (the source's master key id), then
    verify every table. ``on_phase("copying", rows left to copy)``, then ``on_rows`` after each
    page; ``on_phase("verifying", source rows)``, then ``on_rows`` after each table.
    ``MigrateError`` when the target is refused or unreachable; a report with ``mismatched``
    tables when the verification failed."""
    shown = redact_dsn(dsn)
    started = time.monotonic()
    try:
        await migrate(dsn, shown, timeout_s=timeout_s)
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except SlowDown:  # the schema step's translation of a refused or dropped connection
        raise MigrateError(f"the target {shown} is unreachable (or starting): retry when it answers") from None
    except TierstoreError as exc:  # a schema newer than this code, settings that are not valid
        raise MigrateError(f"cannot open the target {shown}: {exc}") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MigrateError(f"cannot open the target {shown}: {_pg_text(exc)}") from None
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _MIGRATE_LOCK):
            raise MigrateError(f"another migration is running on {shown}")
        async with conn.transaction():
            resumed = await _claim_target(conn, store)
        states = await _cursors(conn)
        reports = [TableReport(t.name, source.count(t)) for t in TABLES]
        on_phase(
            "copying",
            sum(
                r.source_rows - states.get(r.name, {}).get("rows", 0)
                for r in reports
                if not states.get(r.name, {}).get("done")
            ),
        )
        ids: BucketIds = {}
        for table, report in zip(TABLES, reports, strict=True):
            state = states.get(table.name, {})
            if table.needs_buckets and not ids:
                ids = await _bucket_ids(conn)
            if state.get("done"):
                report.skipped = state.get("skipped", 0)
                continue
            await _copy_table(conn, source, table, state, ids, report, batch_rows=batch_rows, on_rows=on_rows)
        copied = time.monotonic()
        ids = await _bucket_ids(conn)
        on_phase("verifying", sum(r.source_rows for r in reports))
        for table, report in zip(TABLES, reports, strict=True):
            await _verify(conn, source, table, ids, report)
            on_rows(report.source_rows)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MigrateError(f"the target {shown} failed: {_pg_text(exc)}") from None
    finally:
        await conn.close()
    return MigrationReport(store, reports, resumed, copied - started, time.monotonic() - copied)


async def record_blob_store(dsn: str, location: str, *, timeout_s: float = 30.0) -> None:
    """After ``--store``'s blobs are all copied: record ``location`` (``s3://BUCKET/PREFIX``) as
    where the target's blobs live, the ``meta`` row ``blob_store`` the first gateway would
    otherwise record (``serve --store`` refuses a catalog whose blobs live elsewhere).
    ``MigrateError`` if the target already records another place (it was served meanwhile)."""
    shown = redact_dsn(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
        try:
            await conn.execute(
                "INSERT INTO meta(name, value) VALUES('blob_store', $1) ON CONFLICT(name) DO NOTHING", location
            )
            recorded = await conn.fetchval("SELECT value FROM meta WHERE name = 'blob_store'")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MigrateError(f"the target {shown} failed: {_pg_text(exc)}") from None
    if recorded != location:
        where = (
            f"in the store {recorded}" if recorded else "on a gateway's local drives (it was served without --store)"
        )
        raise MigrateError(f"the target {shown} already keeps its blobs {where}, not in {location}")


def _pg_text(exc: BaseException) -> str:
    """What PostgreSQL or the network said: never the client's DSN (asyncpg does not echo it)."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{message} ({type(exc).__name__})"
