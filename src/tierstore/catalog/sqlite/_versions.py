"""Versions of the embedded catalog: point reads (with an inline body in the same snapshot) and
the writes that publish, delete and change versions, with the helpers every other write uses inside
its transaction (what a put supersedes, what a delete leaves: ``catalog/_rules.py``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from awscrt.checksums import crc32c

from tierstore.catalog._records import Guard, VersionRecord
from tierstore.catalog._rules import (
    check_expected,
    check_version_kind,
    ever_versioned,
    located,
    meta_doc,
    meta_json,
    row_to_record,
    writes_null,
)
from tierstore.catalog.sqlite._index import index_rows, reindex
from tierstore.catalog.sqlite._tables import Tables
from tierstore.catalog.sqlite._tier_data import TIERS_OF_BLOBS
from tierstore.catalog.sqlite._tier_progress import note_tier_write
from tierstore.errors import NoSuchKey, NoSuchVersion
from tierstore.runtime import new_blob_id
from tierstore.types import NULL_VERSION, ObjectMeta

VERSION_COLS = "key, version_id, is_delete_marker, size, etag, modified_ns, meta, blobs, inline_id"


# The same columns and the inline body with them: one statement, so one snapshot — a concurrent
# overwrite can never pair one version's metadata with another's bytes.
_WITH_DATA = (
    "SELECT v.key, v.version_id, v.is_delete_marker, v.size, v.etag, v.modified_ns, v.meta, v.blobs, v.inline_id,"  # noqa: S608
    " (SELECT json_extract(props, '$.versioning') FROM buckets WHERE name = v.bucket),"
    f" {TIERS_OF_BLOBS}, d.crc32c, d.data FROM versions v LEFT JOIN inline_blobs d ON d.blob_id = v.inline_id"
)


_WITHOUT_DATA = (
    f"SELECT {VERSION_COLS},"  # noqa: S608 - constant
    " (SELECT json_extract(props, '$.versioning') FROM buckets WHERE name = v.bucket),"
    f" {TIERS_OF_BLOBS} FROM versions v"
)


class VersionTables(Tables):
    """The version part of ``SqliteCatalog`` (a mixin: ``_tables.py``)."""

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
            record = row_to_record(bucket, row[:-2])
            record.bucket_versioning = row[-2]
            if row[-1] is not None:
                record.blobs = located(record.blobs, row[-1])
            return record
        row = conn.execute(_WITH_DATA + where, args).fetchone()
        if row is None:
            return None
        record = row_to_record(bucket, row[:-4])
        record.bucket_versioning = row[-4]
        if row[-3] is not None:
            record.blobs = located(record.blobs, row[-3])
        if record.inline_id is not None:
            record.inline_data = self._verified(record, row[-2], row[-1])
        return record

    def _verified(self, record: VersionRecord, crc: int | None, data: bytes | None) -> bytes:
        assert record.inline_id is not None
        return self._verified_inline(record.inline_id, crc, data, record.meta.key)

    @staticmethod
    def _latest_in(c: sqlite3.Connection, bucket: str, key_b: bytes) -> VersionRecord | None:
        row = c.execute(
            f"SELECT {VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND is_latest=1",  # noqa: S608 - constant
            (bucket, key_b),
        ).fetchone()
        return row_to_record(bucket, row) if row else None

    @staticmethod
    def _version_in(c: sqlite3.Connection, bucket: str, key_b: bytes, version_id: str) -> VersionRecord | None:
        row = c.execute(
            f"SELECT {VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND version_id=?",  # noqa: S608 - constant
            (bucket, key_b, version_id),
        ).fetchone()
        return row_to_record(bucket, row) if row else None

    def _remove_version(self, c: sqlite3.Connection, bucket: str, key_b: bytes, record: VersionRecord) -> None:
        c.execute(
            "DELETE FROM versions WHERE bucket=? AND key=? AND version_id=?", (bucket, key_b, record.meta.version_id)
        )
        c.execute(  # its lifecycle rows with it (the key's others are recomputed by the caller's write)
            "DELETE FROM lifecycle_due WHERE bucket=? AND key=? AND version_id=?",
            (bucket, key_b, record.meta.version_id),
        )
        inline_id = record.inline_id  # gone with its version, unless a dataset pins it
        if (
            inline_id is not None
            and not c.execute("DELETE FROM inline_blobs WHERE blob_id=? AND pins=0", (inline_id,)).rowcount
        ):
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
                meta_s if meta_s is not None else meta_json(m),
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
        expect: Mapping[str, Any] | None = None,
    ) -> str:
        """Publish ``record`` as the latest version of its key and return its version id.

        With versioning Enabled the record keeps its (new) ``meta.version_id`` and older versions
        stay; otherwise it becomes the ``null`` version, replacing any earlier ``null`` version.
        ``check`` runs inside the transaction with the current version (conditional writes);
        ``extra`` runs in the same transaction (multipart completion uses it); ``guard`` is
        called with any version about to be destroyed (object lock refuses by raising; it may
        be skipped for a version without a lock in a bucket without an object-lock
        configuration: PostgreSQL's one-statement PUT).
        ``shared_gone``: the record's blobs are shared with another version (a copy); if one of
        them is no longer referenced when the transaction runs, the write fails with
        ``shared_gone()``. A record with ``inline_data`` is stored inline (docs/inline.md).
        ``done`` runs last in the transaction, once ``record.meta.version_id`` is final.
        ``fixed_version_id``: the caller chose the id from the versioning state (an encrypted
        version binds it); if the state now wants the other kind, ``VersioningChanged``.
        ``expect``: bucket properties the caller decided by (name -> value, None: absent); if
        the bucket's differ now, ``BucketChanged`` and nothing is written.
        """
        m = record.meta
        key_b = m.key.encode()
        # Everything that does not depend on the database is computed once, not per mirror copy.
        doc = meta_doc(m)
        meta_s = json.dumps(doc, separators=(",", ":"))
        attrs = None if record.is_delete_marker else index_rows(doc)
        inline: tuple[str, int, bytes] | None = None
        if record.inline_data is not None:
            assert not record.blobs, "a version is either inline or in blobs"
            record.inline_id = new_blob_id()  # chosen here: the same on every mirror copy
            inline = (record.inline_id, crc32c(record.inline_data), record.inline_data)
        else:
            assert record.inline_id is None, "an inline version is published with its bytes"

        def fn(c: sqlite3.Connection) -> str:
            props = self._props(c, m.bucket)
            check_expected(props, m, expect)
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
            check_version_kind(props, m, fixed_version_id)
            if writes_null(props):
                m.version_id = NULL_VERSION
                self._drop_null_version(c, m.bucket, key_b, props, guard, (current,))
            self._insert_version(c, record, key_b, first=current is None, meta_s=meta_s)
            note_tier_write(c, m, key_b)  # in a tier's class: pending until the mover switches it
            stale = current is not None and not current.is_delete_marker
            reindex(c, m.bucket, key_b, attrs, stale=stale)
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
                    reindex(c, bucket, key_b)
                return target, False
            current = self._latest_in(c, bucket, key_b)
            if check is not None:
                check(current)
            if not ever_versioned(props):  # the object simply goes away
                if current is None:
                    return None, False
                if guard is not None:
                    guard(current, props)
                self._remove_version(c, bucket, key_b, current)
                reindex(c, bucket, key_b)
                return current, False
            record = VersionRecord(meta=marker, blobs=[], is_delete_marker=True)
            if writes_null(props):
                marker.version_id = NULL_VERSION
                self._drop_null_version(c, bucket, key_b, props, guard)
            self._insert_version(c, record, key_b)
            reindex(c, bucket, key_b)
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
                (meta_json(record.meta), bucket, key_b, record.meta.version_id),
            )
            reindex(c, bucket, key_b)
            self._lifecycle_key(c, bucket, key_b, props)  # tags and locks change what is due
            return record

        return await self._write(fn)

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
