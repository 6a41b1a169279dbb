"""Multipart uploads of the embedded catalog: uploads, their parts, completion (one transaction
with the version it publishes) and the remembered completions a retry is answered from."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from tierstore.catalog._records import Guard, VersionRecord
from tierstore.catalog._rules import (
    completed_doc,
    completed_meta,
    part_checksums_doc,
    part_from_row,
    upload_doc,
    upload_from_doc,
)
from tierstore.catalog.sqlite._tables import Tables
from tierstore.errors import NoSuchUpload
from tierstore.types import ObjectMeta, PartInfo, UploadInfo


class UploadTables(Tables):
    """The multipart part of ``SqliteCatalog`` (a mixin: ``_tables.py``)."""

    async def create_upload(self, info: UploadInfo) -> None:
        doc = upload_doc(info)

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
        return upload_from_doc(bucket, key_b, upload_id, initiated_ns, meta_s)

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
                    json.dumps(part_checksums_doc(part)),
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
        return [part_from_row(*row) for row in rows]

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
                (upload_id, m.bucket, m.key.encode(), m.modified_ns, parts_fingerprint, completed_doc(m)),
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
        return fingerprint, completed_meta(bucket, key, completed_ns, result_s)
