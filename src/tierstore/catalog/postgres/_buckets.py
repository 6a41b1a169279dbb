"""Buckets on PostgreSQL, and the locks every write transaction starts with.

SQLite's single writer serializes every write; here two advisory locks, both transaction-scoped,
serialize exactly what must be: a key's writers hold ``key_lock(bucket, key)`` exclusively, and
the bucket's ``bucket_lock`` shared; deleting a bucket or changing its properties holds the
bucket's lock exclusively, so it waits for the writes in flight and no write starts meanwhile
(a version can never land in a deleted bucket, nor read properties being changed). Every
transaction takes the bucket's lock first, then key locks in ``sorted_locks`` order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg

from tierstore.catalog._rules import ABORT_UPLOAD
from tierstore.catalog.postgres._blobs import unref_all
from tierstore.catalog.postgres._codec import bucket_lock, dumps, key_lock, sorted_locks
from tierstore.catalog.postgres._notify import notify_sql
from tierstore.catalog.postgres._pool import Pool
from tierstore.errors import BucketAlreadyOwnedByYou, BucketNotEmpty, NoSuchBucket
from tierstore.types import BucketInfo

__all__ = ["BucketTables", "drop_upload", "lock_bucket", "lock_keys", "rules_changed", "upload_gone", "write_bucket"]


def lock_keys(bucket: str, keys: Iterable[bytes]) -> str:
    """The SQL a transaction changing ``keys`` of ``bucket`` starts with (``Pool.write(first=)``):
    the bucket's lock shared, then each key's lock, in sorted order."""
    ids = sorted_locks(key_lock(bucket, k) for k in keys)
    return "; ".join([lock_bucket(bucket, exclusive=False), *(f"SELECT pg_advisory_xact_lock({i})" for i in ids)])


def lock_bucket(bucket: str, *, exclusive: bool) -> str:
    """The SQL taking ``bucket``'s lock (exclusive: deleting it or changing its properties)."""
    fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    return f"SELECT {fn}({bucket_lock(bucket):d})"


def _changing(bucket: str) -> str:
    """The SQL a transaction deleting ``bucket`` or changing its properties starts with: its lock,
    exclusive, and the notification workers' caches drop it by (at commit; catalog/postgres/_notify.py)."""
    return f"{lock_bucket(bucket, exclusive=True)}; {notify_sql('bucket', bucket)}"


async def write_bucket(c: Any, bucket: str) -> tuple[int, dict[str, Any]]:
    """(id, properties) of ``bucket`` inside a write transaction (after its lock); ``NoSuchBucket``."""
    row = await c.fetchrow("SELECT id, props FROM buckets WHERE name = $1", bucket)
    if row is None:
        raise NoSuchBucket(resource=bucket)
    props: dict[str, Any] = json.loads(row[1])
    return int(row[0]), props


# The lifecycle due index's rows (catalog/postgres/_lifecycle.py) that bucket and upload writes keep.


async def upload_gone(c: Any, upload_id: str) -> None:
    """Inside the write that completes or aborts an upload, before its row goes: its abort row goes."""
    await c.execute(
        "DELETE FROM lifecycle_due d USING uploads u WHERE u.upload_id = $1"
        " AND d.bucket_id = u.bucket_id AND d.key = u.key AND d.version_id = $1 AND d.action = $2",
        upload_id, ABORT_UPLOAD,
    )  # fmt: skip


async def rules_changed(c: Any, bucket_id: int, old: Any, new: Any) -> None:
    """Inside the write that changes a bucket's rules (``old`` -> ``new``): queue its recompute
    (from the start, also when one is under way)."""
    if old != new:
        await c.execute(
            "INSERT INTO lifecycle_recompute(bucket_id, after_key) VALUES($1, ''::bytea)"
            " ON CONFLICT(bucket_id) DO UPDATE SET after_key = excluded.after_key",
            bucket_id,
        )


async def drop_upload(c: Any, upload_id: str) -> None:
    """Remove an upload, its parts and its abort row; their blobs lose a reference."""
    rows = await c.fetch("DELETE FROM parts WHERE upload_id = $1 RETURNING blob_id", upload_id)
    await unref_all(c, (r[0] for r in rows))
    await upload_gone(c, upload_id)
    await c.execute("DELETE FROM uploads WHERE upload_id = $1", upload_id)


class BucketTables:
    """The bucket calls of the catalog protocol."""

    _pool: Pool

    async def create_bucket(self, info: BucketInfo, props: dict[str, Any] | None = None) -> None:
        async def fn(c: Any) -> None:
            try:
                await c.execute(
                    "INSERT INTO buckets(name, created_ns, region, props) VALUES($1, $2, $3, $4::json)",
                    info.name, info.created_ns, info.region, dumps(props or {}),
                )  # fmt: skip
            except asyncpg.UniqueViolationError:
                raise BucketAlreadyOwnedByYou(resource=info.name) from None

        await self._pool.write(fn, first=notify_sql("bucket", info.name))  # a cached 'no such bucket' goes

    async def delete_bucket(self, name: str) -> None:
        async def fn(c: Any) -> None:
            bucket_id, _props = await write_bucket(c, name)
            if await c.fetchval("SELECT EXISTS(SELECT 1 FROM versions WHERE bucket_id = $1)", bucket_id):
                raise BucketNotEmpty(resource=name)
            # S3 refuses while uploads are in progress only in some cases; we abort them.
            for (upload_id,) in await c.fetch("SELECT upload_id FROM uploads WHERE bucket_id = $1", bucket_id):
                await drop_upload(c, upload_id)
            await c.execute("DELETE FROM completed_uploads WHERE bucket_id = $1", bucket_id)
            await c.execute("DELETE FROM buckets WHERE id = $1", bucket_id)

        await self._pool.write(fn, first=_changing(name))

    async def get_bucket(self, name: str) -> BucketInfo | None:
        row = await self._pool.fetchrow("SELECT name, created_ns, region FROM buckets WHERE name = $1", name)
        return BucketInfo(*row) if row else None

    async def list_buckets(
        self, *, after: str = "", prefix: str = "", region: str | None = None, limit: int = -1
    ) -> list[BucketInfo]:
        """Buckets by name: those after ``after`` whose name starts with ``prefix`` (and in
        ``region``), at most ``limit`` (-1: all)."""
        rows = await self._pool.fetch(
            "SELECT name, created_ns, region FROM buckets WHERE name > $1 AND left(name, $2) = $3"
            " AND ($4::text IS NULL OR region = $4) ORDER BY name LIMIT $5",
            after, len(prefix), prefix, region, limit if limit >= 0 else None,
        )  # fmt: skip
        return [BucketInfo(*r) for r in rows]

    async def bucket_props(self, name: str) -> dict[str, Any]:
        value = await self._pool.fetchval("SELECT props FROM buckets WHERE name = $1", name)
        if value is None:
            raise NoSuchBucket(resource=name)
        props: dict[str, Any] = json.loads(value)
        return props

    async def update_bucket_props(
        self, name: str, update: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read-modify-write of a bucket's properties in one transaction; ``update`` may raise."""

        async def fn(c: Any) -> dict[str, Any]:
            bucket_id, props = await write_bucket(c, name)
            new = update(dict(props))
            await c.execute("UPDATE buckets SET props = $1::json WHERE id = $2", dumps(new), bucket_id)
            await rules_changed(c, bucket_id, props.get("lifecycle"), new.get("lifecycle"))
            return new

        return await self._pool.write(fn, first=_changing(name))

    async def bucket_count(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM buckets"))
