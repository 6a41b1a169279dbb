"""Object versions on PostgreSQL: reads, PUT (every versioning state, the ``null`` version,
conditional writes), DELETE (delete markers), metadata updates — with the semantics of
catalog/sqlite/_versions.py.

Every transaction that changes a key starts with ``lock_keys`` (the key's advisory lock, sent
with ``BEGIN``), then reads the bucket's properties and the key's current version in one
statement: the writers of one key run one at a time, as SQLite's single writer runs them, while
other keys proceed. The decisions (what a PUT supersedes, the callbacks) are made here; what
they write goes in one call (``tierstore_publish``, ``tierstore_drop_version``). The partial
unique index (one latest per key) stays as the backstop.

Each write keeps the tables of other modules in its own transaction, as catalog/sqlite/_versions.py's
do: the key's lifecycle rows (``self._lifecycle_key``, catalog/postgres/_lifecycle.py) and a
version written in a tier's class waiting for the mover (``note_tier_write``,
catalog/postgres/_tier_progress.py). The metadata query needs no index maintained: it reads
``meta`` in place (catalog/postgres/_query.py). A read adds where the version's blobs are
(``TIERS_OF_BLOBS``, as on SQLite).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from awscrt.checksums import crc32c

from tierstore.catalog._rules import (
    check_expected,
    check_version_kind,
    ever_versioned,
    located,
    meta_doc,
    row_to_record,
    writes_null,
)
from tierstore.catalog.postgres._blobs import verified_inline
from tierstore.catalog.postgres._buckets import lock_keys
from tierstore.catalog.postgres._codec import TIERS_OF_BLOBS, VERSION_COLS, blobs_json, bucket_lock, dumps, key_lock
from tierstore.catalog.postgres._pool import Pool
from tierstore.catalog.postgres._tier_progress import note_tier_write, tier_write
from tierstore.errors import NoSuchBucket, NoSuchKey, NoSuchVersion
from tierstore.runtime import new_blob_id
from tierstore.types import NULL_VERSION, ObjectMeta

# Records and exceptions: one definition for both engines (the package exports them).
from tierstore.catalog import BucketChanged, VersioningChanged, VersionRecord  # isort: skip

__all__ = ["Guard", "TxnHook", "VersionTables", "version_in"]

Guard = Callable[[VersionRecord, dict[str, Any]], None]
TxnHook = Callable[[Any], Awaitable[None]]  # an async callback given the transaction's connection

_WITHOUT_DATA = (
    f"SELECT {VERSION_COLS}, b.props->>'versioning', {TIERS_OF_BLOBS}"  # noqa: S608 - constant
    " FROM buckets b JOIN versions v ON v.bucket_id = b.id WHERE b.name = $1 AND v.key = $2"
)
# The same columns and the inline body with them: one statement, so one snapshot — a concurrent
# overwrite can never pair one version's metadata with another's bytes.
_WITH_DATA = (
    f"SELECT {VERSION_COLS}, b.props->>'versioning', {TIERS_OF_BLOBS}, d.crc32c, d.data"  # noqa: S608 - constant
    " FROM buckets b JOIN versions v ON v.bucket_id = b.id LEFT JOIN inline_blobs d ON d.blob_id = v.inline_id"
    " WHERE b.name = $1 AND v.key = $2"
)
# Inside a write, after the key's lock: the bucket's id and properties and the key's current version.
_CURRENT = (
    f"SELECT b.id, b.props, {VERSION_COLS} FROM buckets b"  # noqa: S608 - constant
    " LEFT JOIN versions v ON v.bucket_id = b.id AND v.key = $2 AND v.is_latest WHERE b.name = $1"
)


# The common PUT in one statement (schema step 8, catalog/postgres/_schema.py ``_PUT``).
_PUT = (
    "SELECT tierstore_put($1, $2, $3, $4, $5::json, $6, $7, $8, $9, $10, $11, $12, $13::json, $14::json,"
    " $15, $16, $17, $18::text[], $19::bigint[], $20::text[])"
)
# Why ``tierstore_put`` wrote nothing, as the general path would say it (``!general``: run it).
_REFUSED: dict[str, Callable[[str], Exception]] = {
    "!bucket": lambda bucket: NoSuchBucket(resource=bucket),
    "!changed": BucketChanged,
    "!versioning": VersioningChanged,
}


async def version_in(c: Any, bucket: str, bucket_id: int, key_b: bytes, version_id: str) -> VersionRecord | None:
    row = await c.fetchrow(
        f"SELECT {VERSION_COLS} FROM versions v WHERE bucket_id = $1 AND key = $2 AND version_id = $3",  # noqa: S608
        bucket_id, key_b, version_id,
    )  # fmt: skip
    return row_to_record(bucket, row) if row else None


async def _current(c: Any, bucket: str, key_b: bytes) -> tuple[int, dict[str, Any], VersionRecord | None]:
    """(bucket id, properties, the key's latest version) inside a write; ``NoSuchBucket``."""
    row = await c.fetchrow(_CURRENT, bucket, key_b)
    if row is None:
        raise NoSuchBucket(resource=bucket)
    props: dict[str, Any] = json.loads(row[1])
    return int(row[0]), props, (row_to_record(bucket, row[2:]) if row[2] is not None else None)


async def _remove_version(c: Any, bucket_id: int, key_b: bytes, record: VersionRecord) -> None:
    """The version's row, its inline body (unless a dataset pins it) and one reference to each
    of its blobs, in one round trip (``tierstore_drop_version``)."""
    await c.execute(
        "SELECT tierstore_drop_version($1, $2, $3, $4, $5::text[])",
        bucket_id, key_b, record.meta.version_id, record.inline_id, [b.blob_id for b in record.blobs],
    )  # fmt: skip


async def _null_to_drop(
    c: Any,
    bucket: str,
    bucket_id: int,
    key_b: bytes,
    props: dict[str, Any],
    guard: Guard | None,
    current: VersionRecord | None,
    *,
    known: bool,
) -> VersionRecord | None:
    """The ``null`` version a new ``null`` version (or marker) replaces, wherever it is in the
    stack, once ``guard`` allowed it. ``known``: ``current`` is the key's latest version as this
    transaction read it (no versions at all, or the null version itself, spare the lookup)."""
    if known and current is None:
        return None
    if known and current is not None and current.meta.version_id == NULL_VERSION:
        old_null: VersionRecord | None = current
    else:
        old_null = await version_in(c, bucket, bucket_id, key_b, NULL_VERSION)
    if old_null is not None and guard is not None:
        guard(old_null, props)
    return old_null


async def _publish(
    c: Any,
    bucket_id: int,
    key_b: bytes,
    record: VersionRecord,
    meta_s: str,
    *,
    current: VersionRecord | None,
    drop: VersionRecord | None,
) -> None:
    """``record`` becomes the key's latest version in one round trip (``tierstore_publish``):
    its inline body and blob references, ``drop`` removed, ``current`` (unless dropped) demoted,
    the row inserted with seq one past the key's highest."""
    demote = current is not None and (drop is None or drop.meta.version_id != current.meta.version_id)
    await c.execute(
        "SELECT tierstore_publish($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10::json, $11, $12, $13,"
        " $14::text[], $15::bigint[], $16::text[], $17, $18, $19::text[], $20)",
        bucket_id, key_b, *_row_args(record, meta_s),
        None if drop is None else drop.meta.version_id, None if drop is None else drop.inline_id,
        [] if drop is None else [b.blob_id for b in drop.blobs], demote,
    )  # fmt: skip


def _row_args(record: VersionRecord, meta_s: str) -> tuple[Any, ...]:
    """The new version's columns, inline body and blob references, in the order both
    ``tierstore_publish`` and ``tierstore_put`` take them."""
    m = record.meta
    inline = record.inline_data
    blobs = record.blobs
    return (
        m.version_id, record.is_delete_marker, m.size_bytes, m.etag, m.modified_ns, m.storage_class, meta_s,
        blobs_json(blobs), record.inline_id, None if inline is None else crc32c(inline), inline,
        [b.blob_id for b in blobs], [b.size_bytes for b in blobs], [b.tier for b in blobs],
    )  # fmt: skip


async def _promote_newest(c: Any, bucket_id: int, key_b: bytes) -> None:
    await c.execute(
        "UPDATE versions SET is_latest = true WHERE bucket_id = $1 AND key = $2"
        " AND seq = (SELECT MAX(seq) FROM versions WHERE bucket_id = $1 AND key = $2)",
        bucket_id, key_b,
    )  # fmt: skip


class VersionTables:
    """The object-version calls of the catalog protocol."""

    _pool: Pool

    if TYPE_CHECKING:  # LifecycleTables' (after this class in PostgresCatalog's bases: no stub at run time)

        async def _lifecycle_key(self, c: Any, bucket_id: int, key_b: bytes, props: dict[str, Any]) -> None: ...

    async def get_latest(self, bucket: str, key: str, *, data: bool = False) -> VersionRecord | None:
        """The current version (or delete marker) of ``key``. ``data=True`` also loads an inline
        body (verified; ``CorruptBlob`` if it is damaged)."""
        return await self._read_version(" AND v.is_latest", (bucket, key.encode()), data)

    async def get_version(self, bucket: str, key: str, version_id: str, *, data: bool = False) -> VersionRecord | None:
        return await self._read_version(" AND v.version_id = $3", (bucket, key.encode(), version_id), data)

    async def _read_version(self, where: str, args: tuple[Any, ...], data: bool) -> VersionRecord | None:
        row = await self._pool.fetchrow((_WITH_DATA if data else _WITHOUT_DATA) + where, *args)
        if row is None:
            return None
        record = row_to_record(args[0], row[:9])
        record.bucket_versioning = row[9]
        if row[10] is not None:
            record.blobs = located(record.blobs, row[10])
        if data and record.inline_id is not None:
            record.inline_data = verified_inline(record.inline_id, row[11], row[12], record.meta.key)
        return record

    async def put_version(
        self,
        record: VersionRecord,
        *,
        check: Callable[[VersionRecord | None], None] | None = None,
        extra: TxnHook | None = None,
        guard: Guard | None = None,
        shared_gone: Callable[[], Exception] | None = None,
        done: TxnHook | None = None,
        fixed_version_id: bool = False,
        expect: Mapping[str, Any] | None = None,
    ) -> str:
        """Publish ``record`` as the latest version of its key and return its version id; as
        ``SqliteCatalog.put_version`` (versioning states, ``null`` version, ``check``, ``guard``,
        ``shared_gone``, inline bodies, ``fixed_version_id``, ``expect``). ``extra`` and ``done``
        are awaited with the transaction's connection (multipart completion uses them).

        A PUT without callbacks to run in the transaction (no ``check``, ``extra``, ``done``,
        ``shared_gone``) in the standard class is one statement (``tierstore_put``, schema step
        8): what it cannot decide (``!general``) runs the transaction below."""
        m = record.meta
        key_b = m.key.encode()
        meta_s = dumps(meta_doc(m))
        chosen_id = m.version_id
        if record.inline_data is not None:
            assert not record.blobs, "a version is either inline or in blobs"
            record.inline_id = new_blob_id()
        else:
            assert record.inline_id is None, "an inline version is published with its bytes"
        if check is None and extra is None and done is None and shared_gone is None and not tier_write(m):
            answer = await self._pool.statement(
                _PUT, m.bucket, key_b, bucket_lock(m.bucket), key_lock(m.bucket, key_b),
                None if expect is None else dumps(dict(expect)), fixed_version_id,
                *_row_args(record, meta_s),
            )  # fmt: skip
            if not answer.startswith("!"):
                m.version_id = answer
                return str(answer)
            if answer != "!general":
                raise _REFUSED[answer](m.bucket)

        async def fn(c: Any) -> str:
            m.version_id = chosen_id  # a transaction run again starts from the caller's record
            bucket_id, props, current = await _current(c, m.bucket, key_b)
            check_expected(props, m, expect)
            if check is not None:
                check(current)
            if extra is not None:
                await extra(c)
            if shared_gone is not None and record.blobs:
                ids = list({b.blob_id for b in record.blobs})
                # FOR SHARE: a transaction dropping the last reference meanwhile is waited for.
                found = await c.fetch("SELECT blob_id FROM blobs WHERE blob_id = ANY($1::text[]) FOR SHARE", ids)
                if len(found) != len(ids):
                    raise shared_gone()
            check_version_kind(props, m, fixed_version_id)
            drop = None
            if writes_null(props):
                m.version_id = NULL_VERSION
                drop = await _null_to_drop(c, m.bucket, bucket_id, key_b, props, guard, current, known=True)
            await _publish(c, bucket_id, key_b, record, meta_s, current=current, drop=drop)
            await note_tier_write(c, m, key_b)  # in a tier's class: pending until the mover switches it
            await self._lifecycle_key(c, bucket_id, key_b, props)
            if done is not None:
                await done(c)
            return m.version_id

        return await self._pool.write(fn, first=lock_keys(m.bucket, (key_b,)))

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
        marker_id = marker.version_id

        async def fn(c: Any) -> tuple[VersionRecord | None, bool]:
            marker.version_id = marker_id  # a transaction run again starts from the caller's marker
            bucket_id, props, current = await _current(c, bucket, key_b)
            out = await change(c, bucket_id, props, current)
            if out[0] is not None:
                await self._lifecycle_key(c, bucket_id, key_b, props)
            return out

        async def change(
            c: Any, bucket_id: int, props: dict[str, Any], current: VersionRecord | None
        ) -> tuple[VersionRecord | None, bool]:
            if version_id is not None:
                target = await version_in(c, bucket, bucket_id, key_b, version_id)
                if check is not None:
                    check(target)
                if target is None:
                    return None, False
                if guard is not None:
                    guard(target, props)
                await _remove_version(c, bucket_id, key_b, target)
                if current is not None and current.meta.version_id == version_id:
                    await _promote_newest(c, bucket_id, key_b)
                return target, False
            if check is not None:
                check(current)
            if not ever_versioned(props):  # the object simply goes away
                if current is None:
                    return None, False
                if guard is not None:
                    guard(current, props)
                await _remove_version(c, bucket_id, key_b, current)
                return current, False
            record = VersionRecord(meta=marker, blobs=[], is_delete_marker=True)
            drop = None
            if writes_null(props):
                marker.version_id = NULL_VERSION
                drop = await _null_to_drop(c, bucket, bucket_id, key_b, props, guard, current, known=False)
            await _publish(c, bucket_id, key_b, record, dumps(meta_doc(marker)), current=current, drop=drop)
            return record, True

        return await self._pool.write(fn, first=lock_keys(bucket, (key_b,)))

    async def update_version_meta(
        self, bucket: str, key: str, version_id: str | None, update: Callable[[VersionRecord], None]
    ) -> VersionRecord:
        """Change a version's metadata in place (tags, retention, legal hold); ``update`` mutates
        ``record.meta`` and may raise. ``version_id=None`` means the current version."""
        key_b = key.encode()

        async def fn(c: Any) -> VersionRecord:
            bucket_id, props, current = await _current(c, bucket, key_b)
            record = current if version_id is None else await version_in(c, bucket, bucket_id, key_b, version_id)
            if record is None:
                raise (NoSuchKey(resource=key) if version_id is None else NoSuchVersion(resource=key))
            update(record)
            await c.execute(
                "UPDATE versions SET meta = $1::json, storage_class = $2"
                " WHERE bucket_id = $3 AND key = $4 AND version_id = $5",
                dumps(meta_doc(record.meta)), record.meta.storage_class, bucket_id, key_b, record.meta.version_id,
            )  # fmt: skip
            await self._lifecycle_key(c, bucket_id, key_b, props)  # tags and locks change what is due
            return record

        return await self._pool.write(fn, first=lock_keys(bucket, (key_b,)))
