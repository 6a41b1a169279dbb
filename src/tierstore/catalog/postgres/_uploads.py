"""Multipart uploads on PostgreSQL, as catalog/sqlite/_uploads.py keeps them.

Parts may arrive through any gateway: ``put_part`` holds the upload's row ``FOR SHARE`` (parts
of one upload go in parallel, but not past an abort or a completion, which hold it
``FOR UPDATE``) and an advisory lock on (upload, part number), so a part uploaded twice at once
replaces the other cleanly and neither blob reference leaks. ``abort_uploads_before`` claims the
stale uploads it drops with ``FOR UPDATE SKIP LOCKED``: any number of gateways run it, each
upload is dropped by one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tierstore.catalog._rules import completed_doc, completed_meta, part_checksums_doc, part_from_row, upload_doc
from tierstore.catalog.postgres._blobs import ref, unref_all
from tierstore.catalog.postgres._buckets import drop_upload, lock_bucket, upload_gone, write_bucket
from tierstore.catalog.postgres._codec import dumps, key_lock, upload_from_row
from tierstore.catalog.postgres._pool import Pool
from tierstore.catalog.postgres._versions import Guard, VersionTables
from tierstore.errors import NoSuchUpload
from tierstore.types import ObjectMeta, PartInfo, UploadInfo

from tierstore.catalog import VersionRecord  # isort: skip

__all__ = ["UploadTables"]

_UPLOAD_COLS = "u.upload_id, u.key, u.initiated_ns, u.meta"


async def _lock_upload(c: Any, upload_id: str, mode: str) -> None:
    """The upload's row locked (``SHARE`` or ``UPDATE``); ``NoSuchUpload`` if there is none."""
    assert mode in ("SHARE", "UPDATE")
    if await c.fetchval(f"SELECT 1 FROM uploads WHERE upload_id = $1 FOR {mode}", upload_id) is None:  # noqa: S608
        raise NoSuchUpload(resource=upload_id)


class UploadTables(VersionTables):
    """The multipart-upload calls of the catalog protocol."""

    _pool: Pool

    if TYPE_CHECKING:  # LifecycleTables' (after this class in PostgresCatalog's bases: no stub at run time)

        async def _lifecycle_upload(
            self, c: Any, bucket_id: int, key_b: bytes, upload_id: str, initiated_ns: int, props: dict[str, Any]
        ) -> None: ...

    async def create_upload(self, info: UploadInfo) -> None:
        doc = dumps(upload_doc(info))

        async def fn(c: Any) -> None:
            bucket_id, props = await write_bucket(c, info.bucket)
            key_b = info.key.encode()
            await c.execute(
                "INSERT INTO uploads(upload_id, bucket_id, key, initiated_ns, meta) VALUES($1, $2, $3, $4, $5::json)",
                info.upload_id, bucket_id, key_b, info.initiated_ns, doc,
            )  # fmt: skip
            await self._lifecycle_upload(c, bucket_id, key_b, info.upload_id, info.initiated_ns, props)

        await self._pool.write(fn, first=lock_bucket(info.bucket, exclusive=False))

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        row = await self._pool.fetchrow(
            f"SELECT {_UPLOAD_COLS} FROM uploads u JOIN buckets b ON b.id = u.bucket_id"  # noqa: S608 - constant
            " WHERE u.upload_id = $1 AND b.name = $2 AND u.key = $3",
            upload_id, bucket, key.encode(),
        )  # fmt: skip
        if row is None:
            raise NoSuchUpload(resource=upload_id)
        return upload_from_row(bucket, row)

    async def list_uploads(self, bucket: str, after_key: bytes, after_upload: str, limit: int) -> list[UploadInfo]:
        rows = await self._pool.fetch(
            f"SELECT {_UPLOAD_COLS} FROM uploads u WHERE u.bucket_id = (SELECT id FROM buckets WHERE name = $1)"  # noqa: S608
            " AND (u.key, u.upload_id) > ($2, $3) ORDER BY u.key, u.upload_id LIMIT $4",
            bucket, after_key, after_upload, limit,
        )  # fmt: skip
        return [upload_from_row(bucket, r) for r in rows]

    async def put_part(self, upload_id: str, part: PartInfo) -> None:
        """Record a part; a part uploaded again under the same number replaces the old one."""
        # the blob's own size (the heal walk reads it): ciphertext for an encrypted part
        stored = part.size_bytes if part.stored_bytes is None else part.stored_bytes
        checksums = dumps(part_checksums_doc(part))
        number_lock = key_lock(upload_id, part.part_number.to_bytes(4, "big"))

        async def fn(c: Any) -> None:
            await _lock_upload(c, upload_id, "SHARE")
            old = await c.fetchval(
                "SELECT blob_id FROM parts WHERE upload_id = $1 AND part_number = $2", upload_id, part.part_number
            )
            if old is not None:
                await unref_all(c, [old])
            await ref(c, part.blob_id, stored)
            await c.execute(
                "INSERT INTO parts(upload_id, part_number, size, etag, modified_ns, checksums, blob_id)"
                " VALUES($1, $2, $3, $4, $5, $6::json, $7) ON CONFLICT(upload_id, part_number) DO UPDATE SET"
                " size = excluded.size, etag = excluded.etag, modified_ns = excluded.modified_ns,"
                " checksums = excluded.checksums, blob_id = excluded.blob_id",
                upload_id, part.part_number, part.size_bytes, part.etag, part.modified_ns, checksums, part.blob_id,
            )  # fmt: skip

        await self._pool.write(fn, first=f"SELECT pg_advisory_xact_lock({number_lock:d})")

    async def list_parts(self, upload_id: str, after_part: int = 0, limit: int = 10_000) -> list[PartInfo]:
        rows = await self._pool.fetch(
            "SELECT part_number, size, etag, modified_ns, checksums, blob_id FROM parts"
            " WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3",
            upload_id, after_part, limit,
        )  # fmt: skip
        return [part_from_row(*row) for row in rows]

    async def abort_upload(self, upload_id: str) -> None:
        async def fn(c: Any) -> None:
            await _lock_upload(c, upload_id, "UPDATE")
            await drop_upload(c, upload_id)

        await self._pool.write(fn)

    async def abort_uploads_before(self, initiated_before_ns: int, limit: int) -> list[UploadInfo]:
        """Abort up to ``limit`` uploads initiated before ``initiated_before_ns``, in one
        transaction, and return them; each upload is claimed (dropped) by exactly one caller
        (``SKIP LOCKED``: concurrent callers take different ones). Their parts' blobs go to the trash."""

        async def fn(c: Any) -> list[UploadInfo]:
            rows = await c.fetch(
                f"SELECT {_UPLOAD_COLS}, b.name FROM uploads u JOIN buckets b ON b.id = u.bucket_id"  # noqa: S608
                " WHERE u.initiated_ns < $1 ORDER BY u.initiated_ns LIMIT $2 FOR UPDATE OF u SKIP LOCKED",
                initiated_before_ns, limit,
            )  # fmt: skip
            for row in rows:
                await drop_upload(c, row[0])
            return [upload_from_row(row[4], row[:4]) for row in rows]

        return await self._pool.write(fn)

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
        atomically; remembered as completed with ``parts_fingerprint`` (``completed_upload``);
        completions from before ``forget_before_ns`` are forgotten in the same transaction."""
        chosen = {b.blob_id for b in record.blobs}
        m = record.meta

        async def remember(c: Any) -> None:
            await c.execute("DELETE FROM completed_uploads WHERE completed_ns < $1", forget_before_ns)
            await c.execute(
                "INSERT INTO completed_uploads(upload_id, bucket_id, key, completed_ns, parts, result)"
                " VALUES($1, (SELECT id FROM buckets WHERE name = $2), $3, $4, $5, $6::json)"
                " ON CONFLICT(upload_id) DO UPDATE SET bucket_id = excluded.bucket_id, key = excluded.key,"
                " completed_ns = excluded.completed_ns, parts = excluded.parts, result = excluded.result",
                upload_id, m.bucket, m.key.encode(), m.modified_ns, parts_fingerprint, completed_doc(m),
            )  # fmt: skip

        async def extra(c: Any) -> None:
            await _lock_upload(c, upload_id, "UPDATE")
            # Parts chosen for the object hand their reference over to the version (put_version
            # takes one per blob right after this); the others go to the trash.
            rows = await c.fetch("DELETE FROM parts WHERE upload_id = $1 RETURNING blob_id", upload_id)
            blob_ids = [r[0] for r in rows]
            handed = [b for b in blob_ids if b in chosen]
            if handed:
                await c.execute("UPDATE blobs SET refs = refs - 1 WHERE blob_id = ANY($1::text[])", handed)
            await unref_all(c, [b for b in blob_ids if b not in chosen])
            await upload_gone(c, upload_id)
            await c.execute("DELETE FROM uploads WHERE upload_id = $1", upload_id)

        return await self.put_version(
            record, check=check, extra=extra, guard=guard, done=remember, fixed_version_id=fixed_version_id
        )

    async def completed_upload(self, bucket: str, key: str, upload_id: str) -> tuple[str, ObjectMeta] | None:
        """(parts fingerprint, result) of a remembered completion of ``upload_id`` of ``key``."""
        row = await self._pool.fetchrow(
            "SELECT c.completed_ns, c.parts, c.result FROM completed_uploads c JOIN buckets b ON b.id = c.bucket_id"
            " WHERE c.upload_id = $1 AND b.name = $2 AND c.key = $3",
            upload_id, bucket, key.encode(),
        )  # fmt: skip
        if row is None:
            return None
        completed_ns, fingerprint, result_s = row
        return fingerprint, completed_meta(bucket, key, completed_ns, result_s)
