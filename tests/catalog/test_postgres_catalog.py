"""PostgresCatalog (catalog/postgres/) against a real PostgreSQL: every call of the core (buckets,
versions, listings, blobs and trash, inline bodies, multipart uploads, datasets and models) with
SqliteCatalog's semantics; byte-order listings; one winner among 32 concurrent conditional PUTs
of a key; migrations run once however many processes open at once; PostgreSQL stopped -> 503
with Retry-After (no password anywhere), then back without reopening."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest

from tests.postgres import PostgreSQL
from tierstore.catalog import BlobRef, DatasetRecord, ModelAliasInUse, PinGone, VersioningChanged, VersionRecord
from tierstore.catalog import VersionTaken as DatasetVersionTaken
from tierstore.catalog.postgres import SCHEMA_VERSION, PoolSettings, PostgresCatalog, prefix_end, redact_dsn
from tierstore.catalog.postgres._buckets import lock_keys
from tierstore.catalog.postgres._codec import bucket_lock, key_lock
from tierstore.catalog.postgres._pool import RETRY_AFTER_S, translate
from tierstore.catalog.postgres._schema import STEPS
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
    PreconditionFailed,
    SlowDown,
)
from tierstore.runtime import new_blob_id, new_upload_id, new_version_id
from tierstore.types import NULL_VERSION, BucketInfo, ObjectMeta, PartInfo, UploadInfo

pytestmark = pytest.mark.peer

T = TypeVar("T")


@pytest.fixture(scope="module")
def dsn(postgres: PostgreSQL) -> str:
    return postgres.create_database("pgcore")


def run(dsn: str, body: Callable[[PostgresCatalog], Awaitable[T]], **kwargs: Any) -> T:
    """``body(catalog)`` on a catalog opened on ``dsn`` (the schema is current after the first)."""

    async def main() -> T:
        cat = await PostgresCatalog.open(dsn, **kwargs)
        try:
            return await body(cat)
        finally:
            await cat.close()

    return asyncio.run(main())


_buckets = iter(range(1_000_000))


def bucket_name(what: str) -> str:
    return f"{what}-{next(_buckets)}"


def meta(bucket: str, key: str, size: int = 3, **kw: Any) -> ObjectMeta:
    return ObjectMeta(
        bucket=bucket, key=key, version_id=kw.pop("version_id", None) or new_version_id(), size_bytes=size,
        etag=f'"{key}-{size}"', modified_ns=kw.pop("modified_ns", 1_000), **kw,
    )  # fmt: skip


def blob_record(bucket: str, key: str, *blob_ids: str, **kw: Any) -> VersionRecord:
    ids = blob_ids or (new_blob_id(),)
    return VersionRecord(meta=meta(bucket, key, **kw), blobs=[BlobRef(b, 3) for b in ids])


async def new_bucket(cat: PostgresCatalog, what: str, versioning: str | None = None) -> str:
    name = bucket_name(what)
    await cat.create_bucket(BucketInfo(name, 1, "us-east-1"), {"versioning": versioning} if versioning else None)
    return name


async def sql(dsn: str, statement: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()


# --- buckets -------------------------------------------------------------------------------------


def test_buckets(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        first = bucket_name("bk-a")
        await cat.create_bucket(BucketInfo(first, 5, "eu-west-1"), {"versioning": "Enabled"})
        with pytest.raises(BucketAlreadyOwnedByYou):
            await cat.create_bucket(BucketInfo(first, 6, "us-east-1"))
        second = await new_bucket(cat, "bk-b")
        assert await cat.get_bucket(first) == BucketInfo(first, 5, "eu-west-1")
        assert await cat.get_bucket("bk-none") is None
        names = [b.name for b in await cat.list_buckets(prefix="bk-")]
        assert first in names and second in names and names == sorted(names)
        assert [b.name for b in await cat.list_buckets(prefix=first)] == [first]
        assert [b.name for b in await cat.list_buckets(after=first, prefix="bk-a")] == []
        assert first in [b.name for b in await cat.list_buckets(region="eu-west-1")]
        assert second not in [b.name for b in await cat.list_buckets(region="eu-west-1")]
        assert len(await cat.list_buckets(prefix="bk-", limit=1)) == 1
        assert await cat.bucket_count() >= 2

        assert await cat.bucket_props(first) == {"versioning": "Enabled"}
        new = await cat.update_bucket_props(first, lambda p: {**p, "policy": {"a": 1}})
        assert new == await cat.bucket_props(first) == {"versioning": "Enabled", "policy": {"a": 1}}

        def refuse(p: dict[str, Any]) -> dict[str, Any]:
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            await cat.update_bucket_props(first, refuse)
        assert await cat.bucket_props(first) == new  # unchanged
        with pytest.raises(NoSuchBucket):
            await cat.bucket_props("bk-none")
        with pytest.raises(NoSuchBucket):
            await cat.update_bucket_props("bk-none", dict)

        await cat.put_version(blob_record(first, "k"))
        with pytest.raises(BucketNotEmpty):
            await cat.delete_bucket(first)
        await cat.create_upload(UploadInfo(second, "up", new_upload_id(), 1))
        await cat.delete_bucket(second)  # its uploads are aborted with it
        assert await cat.get_bucket(second) is None
        with pytest.raises(NoSuchBucket):
            await cat.delete_bucket(second)
        with pytest.raises(NoSuchBucket):
            await cat.put_version(blob_record(second, "k"))

    run(dsn, body)


# --- versions ------------------------------------------------------------------------------------


def test_unversioned_put_overwrite_delete(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "plain")
        one = blob_record(b, "k", user_meta={"a": "1"}, headers={"content-type": "text/x"})
        assert await cat.put_version(one) == NULL_VERSION
        got = await cat.get_latest(b, "k")
        assert got is not None and got.meta == one.meta and got.blobs == one.blobs
        assert got.bucket_versioning is None
        assert (await cat.get_version(b, "k", NULL_VERSION)) is not None
        two = blob_record(b, "k")
        await cat.put_version(two)
        got = await cat.get_latest(b, "k")
        assert got is not None and got.blobs == two.blobs
        assert await cat.blob_known(one.blobs[0].blob_id)  # in the trash now, not forgotten
        assert one.blobs[0].blob_id in await cat.trash_batch(10_000)
        assert await cat.scan_versions(b, b"", None, b"\xff", 10) == [(got, 1, True)]  # the old null row went

        marker = meta(b, "k")
        removed, added = await cat.delete_object(b, "k", version_id=None, marker=marker)
        assert (removed is not None and removed.meta.version_id == NULL_VERSION, added) == (True, False)
        assert await cat.get_latest(b, "k") is None
        assert await cat.delete_object(b, "k", version_id=None, marker=meta(b, "k")) == (None, False)
        assert two.blobs[0].blob_id in await cat.trash_batch(10_000)

    run(dsn, body)


def test_versioning_enabled_markers_and_order(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "vers", "Enabled")
        records = [blob_record(b, "k") for _ in range(3)]
        ids = [await cat.put_version(r) for r in records]
        assert ids == [r.meta.version_id for r in records]
        latest = await cat.get_latest(b, "k")
        assert latest is not None and latest.meta.version_id == ids[2] and latest.bucket_versioning == "Enabled"
        assert [await cat.version_seq(b, "k", v) for v in ids] == [1, 2, 3]
        assert await cat.version_seq(b, "k", "nope") is None

        marker_meta = meta(b, "k")
        marker, added = await cat.delete_object(b, "k", version_id=None, marker=marker_meta)
        assert added and marker is not None and marker.is_delete_marker
        current = await cat.get_latest(b, "k")
        assert current is not None and current.is_delete_marker and current.meta.version_id == marker_meta.version_id
        assert await cat.scan_latest(b, b"", b"\xff", 10, inclusive=True) == []  # a marker lists as nothing

        # Deleting the marker by id promotes the newest version again.
        await cat.delete_object(b, "k", version_id=marker_meta.version_id, marker=meta(b, "k"))
        current = await cat.get_latest(b, "k")
        assert current is not None and current.meta.version_id == ids[2]
        # Deleting a version in the middle leaves the latest alone; its blob goes to the trash.
        removed, added = await cat.delete_object(b, "k", version_id=ids[1], marker=meta(b, "k"))
        assert removed is not None and removed.meta.version_id == ids[1] and not added
        assert records[1].blobs[0].blob_id in await cat.trash_batch(10_000)
        walk = await cat.scan_versions(b, b"k", None, b"k\xff", 10)
        assert [(r.meta.version_id, seq, latest) for r, seq, latest in walk] == [(ids[2], 3, True), (ids[0], 1, False)]
        assert await cat.delete_object(b, "k", version_id="nope", marker=meta(b, "k")) == (None, False)
        # A new version continues the key's order.
        four = blob_record(b, "k")
        await cat.put_version(four)
        assert await cat.version_seq(b, "k", four.meta.version_id) == 4  # one past the highest left
        # seq_older_than places a vanished version among the others by its id's time.
        assert await cat.seq_older_than(b, "k", ids[1], 0) == 2  # older than it: ids[0] (seq 1)
        assert await cat.seq_older_than(b, "k", "0" * 24, 0) == 1
        assert await cat.seq_older_than(b, "k", NULL_VERSION, 2**62) == 5

    run(dsn, body)


def test_suspended_replaces_the_null_version_in_the_stack(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "susp")
        null_one = blob_record(b, "k")
        await cat.put_version(null_one)  # never versioned: the null version
        await cat.update_bucket_props(b, lambda p: {**p, "versioning": "Enabled"})
        kept = blob_record(b, "k")
        await cat.put_version(kept)
        await cat.update_bucket_props(b, lambda p: {**p, "versioning": "Suspended"})
        null_two = blob_record(b, "k")
        assert await cat.put_version(null_two) == NULL_VERSION
        walk = [(r.meta.version_id, r.blobs) for r, _s, _l in await cat.scan_versions(b, b"", None, b"\xff", 10)]
        assert walk == [(NULL_VERSION, null_two.blobs), (kept.meta.version_id, kept.blobs)]
        assert null_one.blobs[0].blob_id in await cat.trash_batch(10_000)
        # A delete while suspended: a null delete marker replaces the null version.
        marker, added = await cat.delete_object(b, "k", version_id=None, marker=meta(b, "k"))
        assert added and marker is not None and marker.meta.version_id == NULL_VERSION
        walk2 = await cat.scan_versions(b, b"", None, b"\xff", 10)
        assert [(r.meta.version_id, r.is_delete_marker) for r, _s, _l in walk2] == [
            (NULL_VERSION, True), (kept.meta.version_id, False),
        ]  # fmt: skip
        assert null_two.blobs[0].blob_id in await cat.trash_batch(10_000)
        # The guard sees a version about to be destroyed and may refuse. (In a bucket with an
        # object-lock configuration; without one only a version that carries a lock is shown
        # to it: an unlocked one has nothing to refuse with, and the one-statement PUT drops it.)
        await cat.update_bucket_props(b, lambda p: {**p, "object_lock": {"enabled": True}})
        seen: list[str] = []

        def guard(record: VersionRecord, props: dict[str, Any]) -> None:
            seen.append(record.meta.version_id)
            raise PreconditionFailed("locked")

        with pytest.raises(PreconditionFailed):
            await cat.put_version(blob_record(b, "k"), guard=guard)
        assert seen == [NULL_VERSION]
        assert len(await cat.scan_versions(b, b"", None, b"\xff", 10)) == 2  # nothing changed

    run(dsn, body)


def test_conditions_shared_blobs_and_fixed_version_ids(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "cond", "Enabled")

        def none_match(current: VersionRecord | None) -> None:
            if current is not None:
                raise PreconditionFailed(resource="k")

        first = blob_record(b, "k")
        await cat.put_version(first, check=none_match)
        with pytest.raises(PreconditionFailed):
            await cat.put_version(blob_record(b, "k"), check=none_match)
        # A copy shares the source's blobs; if they are gone by then, the copy fails as asked.
        copy = blob_record(b, "copy", first.blobs[0].blob_id)
        await cat.put_version(copy, shared_gone=lambda: NoSuchKey(resource="k"))
        assert first.blobs[0].blob_id not in await cat.trash_batch(10_000)
        await cat.delete_object(b, "k", version_id=first.meta.version_id, marker=meta(b, "k"))
        assert first.blobs[0].blob_id not in await cat.trash_batch(10_000)  # the copy still holds it
        await cat.delete_object(b, "copy", version_id=copy.meta.version_id, marker=meta(b, "copy"))
        assert first.blobs[0].blob_id in await cat.trash_batch(10_000)  # the last reference went
        with pytest.raises(NoSuchKey):
            await cat.put_version(blob_record(b, "copy2", first.blobs[0].blob_id), shared_gone=NoSuchKey)
        assert await cat.get_latest(b, "copy2") is None
        # fixed_version_id: a null id while versioning is Enabled is refused, not rewritten.
        with pytest.raises(VersioningChanged):
            await cat.put_version(blob_record(b, "f", version_id=NULL_VERSION), fixed_version_id=True)
        assert await cat.get_latest(b, "f") is None

    run(dsn, body)


def test_update_version_meta(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "upd", "Enabled")
        old, new = blob_record(b, "k"), blob_record(b, "k")
        await cat.put_version(old)
        await cat.put_version(new)

        def tag(record: VersionRecord) -> None:
            record.meta.tags = {"t": "1"}

        assert (await cat.update_version_meta(b, "k", None, tag)).meta.version_id == new.meta.version_id
        await cat.update_version_meta(b, "k", old.meta.version_id, lambda r: setattr(r.meta, "lock", {"m": 1}))
        got_new, got_old = await cat.get_latest(b, "k"), await cat.get_version(b, "k", old.meta.version_id)
        assert got_new is not None and got_new.meta.tags == {"t": "1"} and got_new.meta.lock == {}
        assert got_old is not None and got_old.meta.lock == {"m": 1} and got_old.meta.tags == {}
        with pytest.raises(NoSuchKey):
            await cat.update_version_meta(b, "none", None, tag)
        with pytest.raises(NoSuchVersion):
            await cat.update_version_meta(b, "k", "nope", tag)

    run(dsn, body)


def test_inline_bodies(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "inline", "Enabled")
        rec = VersionRecord(meta=meta(b, "small", 5), inline_data=b"hello")
        await cat.put_version(rec)
        assert rec.inline_id is not None
        got = await cat.get_latest(b, "small", data=True)
        assert got is not None and got.inline_data == b"hello" and got.inline_id == rec.inline_id
        assert (await cat.get_latest(b, "small")).inline_data is None  # type: ignore[union-attr]
        assert await cat.inline_bodies([rec.inline_id, rec.inline_id, "missing"]) == {rec.inline_id: b"hello"}
        page, damaged = await cat.inline_verify_page(limit=100_000)
        assert (rec.inline_id, 5) in page and rec.inline_id not in damaged
        assert await cat.check_inline(rec.inline_id) == "healthy"
        # Damage behind the catalog's back: every read refuses the bytes.
        await sql(dsn, "UPDATE inline_blobs SET data = $1 WHERE blob_id = $2", b"jello", rec.inline_id)
        with pytest.raises(CorruptBlob):
            await cat.get_version(b, "small", rec.meta.version_id, data=True)
        with pytest.raises(CorruptBlob):
            await cat.inline_bodies([rec.inline_id])
        assert rec.inline_id in (await cat.inline_verify_page(limit=100_000))[1]
        assert await cat.check_inline(rec.inline_id) == "lost"
        assert cat.take_damaged_inline() == []
        # The body goes with its version.
        await cat.delete_object(b, "small", version_id=rec.meta.version_id, marker=meta(b, "small"))
        assert await cat.check_inline(rec.inline_id) == "gone"

    run(dsn, body)


# --- listings ------------------------------------------------------------------------------------

# S3 lists in UTF-8 byte order: 'B' < 'a', '/' < '0', a prefix before its extensions, non-ASCII after
# ASCII, and U+FFFF (ef bf bf) before U+10000 (f0 90 80 80) — what a collation-aware sort gets wrong.
ASCII = ["a", "B", "a/b", "a/b/c", "a/c", "a0", "a.b", "z", "a b", "~", "A"]
KEYS = [*ASCII, "é", "日本/x", "日本/y", "\uffff", "\U00010000"]


def test_prefix_end() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"ab\xff") == b"ac"
    assert prefix_end(b"a\xfe\xff\xff") == b"a\xff"
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"") is None
    for prefix in (b"a/", b"\xe6\x97\xa5", b"a\xfe\xff"):
        end = prefix_end(prefix)
        assert end is not None and all(prefix + tail < end for tail in (b"", b"\xff" * 4, b"\x00"))
        assert not end.startswith(prefix)


def test_listings_are_byte_ordered_keyset_scans(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "list", "Enabled")
        for key in KEYS:
            await cat.put_version(blob_record(b, key, storage_class="STANDARD_IA" if key == "z" else "STANDARD"))
        await cat.delete_object(b, "~", version_id=None, marker=meta(b, "~"))  # a marker: not listed
        live = sorted(k.encode() for k in KEYS if k != "~")
        rows = await cat.scan_latest(b, b"", b"\xff", 1000, inclusive=True)
        assert [r[0] for r in rows] == live
        assert {r[0]: r[4] for r in rows}[b"z"] == "STANDARD_IA"
        assert rows[0] == (b"A", 3, '"A-3"', 1_000, "STANDARD")
        # Pages of 3 by keyset: after the last key of each page.
        walked, after = [], b""
        while page := await cat.scan_latest(b, after, b"\xff", 3):
            walked += [r[0] for r in page]
            after = page[-1][0]
        assert walked == live
        # A prefix: [prefix, successor) with the successor computed in Python; and a common
        # prefix skipped by starting after it + 0xff, as the engine's delimiter roll-up does.
        assert [r[0] for r in await cat.scan_latest(b, b"a/", prefix_end(b"a/") or b"", 100, inclusive=True)] == [
            b"a/b", b"a/b/c", b"a/c",
        ]  # fmt: skip
        assert [r[0] for r in await cat.scan_latest(b, b"a/b/\xff", b"a/\xff", 100)] == [b"a/c"]
        nihon = "日本/".encode()
        assert [r[0] for r in await cat.scan_latest(b, nihon, nihon + b"\xff", 100, inclusive=True)] == [
            "日本/x".encode(), "日本/y".encode(),
        ]  # fmt: skip
        assert [r[0] for r in await cat.scan_latest(b, "\uffff".encode(), b"\xff", 100)] == ["\U00010000".encode()]
        assert await cat.scan_latest(b, b"a", b"a", 100, inclusive=True) == []
        assert await cat.scan_latest(bucket_name("missing"), b"", b"\xff", 100, inclusive=True) == []
        # scan_delimited: one key per common prefix, the rest skipped inside PostgreSQL.
        rolled = await cat.scan_delimited(b, b"", b"\xff", 100, inclusive=True, skip_from=0, delimiter=b"/")
        firsts: dict[bytes, bytes] = {}
        for k in live:
            firsts.setdefault(k[: k.find(b"/") + 1] if b"/" in k else k, k)
        assert [r[0] for r in rolled] == sorted(firsts.values())
        under_a = await cat.scan_delimited(b, b"a/", b"a/\xff", 100, inclusive=True, skip_from=2, delimiter=b"/")
        assert [r[0] for r in under_a] == [b"a/b", b"a/b/c", b"a/c"]  # a/b a key, a/b/c names the prefix a/b/

        # Versions: (key ASC, newest first), resumable from any (key, seq), in pages of 2.
        await cat.put_version(blob_record(b, "a"))
        full = await cat.scan_versions(b, b"", None, b"\xff", 1000)
        order = [(r.meta.key.encode(), seq) for r, seq, _latest in full]
        assert order == sorted(order, key=lambda ks: (ks[0], -ks[1]))
        assert len(full) == len(KEYS) + 2  # "a" twice, "~" and its marker
        walked_v: list[tuple[bytes, int]] = []
        after_key, after_seq = b"", None
        while page_v := await cat.scan_versions(b, after_key, after_seq, b"\xff", 2):
            walked_v += [(r.meta.key.encode(), seq) for r, seq, _l in page_v]
            after_key, after_seq = page_v[-1][0].meta.key.encode(), page_v[-1][1]
        assert walked_v == order

    run(dsn, body)


# --- blobs and trash -----------------------------------------------------------------------------


def test_blob_references_and_trash(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "blobs")
        shared = new_blob_id()
        await cat.put_version(blob_record(b, "one", shared))
        await cat.put_version(blob_record(b, "two", shared), shared_gone=NoSuchKey)
        count = await cat.blob_count()
        assert count >= 1 and await cat.blob_known(shared)
        assert (shared, 3) in await cat.blob_page(after=shared[:-1], limit=100_000)
        await cat.delete_object(b, "one", version_id=None, marker=meta(b, "one"))
        assert shared not in await cat.trash_batch(100_000)
        await cat.delete_object(b, "two", version_id=None, marker=meta(b, "two"))
        assert shared in await cat.trash_batch(100_000) and await cat.blob_known(shared)
        assert await cat.blob_count() == count - 1
        # A blob referenced again before GC is saved from the trash.
        await cat.put_version(blob_record(b, "three", shared))
        assert shared not in await cat.trash_batch(100_000)
        # Written but never published: trash_add (a referenced blob is not queued).
        orphan = new_blob_id()
        await cat.trash_add([orphan, shared])
        trash = await cat.trash_batch(100_000)
        assert orphan in trash and shared not in trash
        await cat.trash_done([orphan])
        assert orphan not in await cat.trash_batch(100_000)
        assert not await cat.blob_known(orphan)
        counts = await cat.counts()
        assert counts["buckets"] >= 1 and counts["versions"] >= 1
        usage = {u[0]: u[1:] for u in await cat.bucket_usage(100_000)}
        assert usage[b] == (1, 3, 1, 0, 3)
        await cat.probe_write()

    run(dsn, body)


# --- multipart uploads ---------------------------------------------------------------------------


def part(number: int, blob_id: str | None = None, size: int = 5) -> PartInfo:
    return PartInfo(number, size, f'"p{number}"', 7, {"CRC32": "AAAA"}, blob_id or new_blob_id(), "np")


def test_multipart_uploads(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "mpu", "Enabled")
        info = UploadInfo(b, "big", new_upload_id(), 10, headers={"content-type": "x/y"}, user_meta={"m": "1"},
                          checksum_algorithm="CRC32", encryption={"kind": "SSE-S3"})  # fmt: skip
        await cat.create_upload(info)
        with pytest.raises(NoSuchBucket):
            await cat.create_upload(UploadInfo(bucket_name("none"), "k", new_upload_id(), 1))
        assert await cat.get_upload(b, "big", info.upload_id) == info
        with pytest.raises(NoSuchUpload):
            await cat.get_upload(b, "other", info.upload_id)
        others = [UploadInfo(b, key, new_upload_id(), 20) for key in ("a", "big", "c")]
        for other in others:
            await cat.create_upload(other)
        expected = sorted([info, *others], key=lambda u: (u.key.encode(), u.upload_id))
        assert [u.upload_id for u in await cat.list_uploads(b, b"", "", 100)] == [u.upload_id for u in expected]
        page = await cat.list_uploads(b, expected[1].key.encode(), expected[1].upload_id, 100)
        assert [u.upload_id for u in page] == [u.upload_id for u in expected[2:]]

        p1, p2, p3 = part(1), part(2), part(3)
        replaced = part(2)
        for p in (p1, replaced, p2, p3):
            await cat.put_part(info.upload_id, p)
        assert replaced.blob_id in await cat.trash_batch(100_000)  # part 2 uploaded again
        listed = await cat.list_parts(info.upload_id)
        assert [(p.part_number, p.blob_id, p.nonce_prefix) for p in listed] == [
            (1, p1.blob_id, "np"), (2, p2.blob_id, "np"), (3, p3.blob_id, "np"),
        ]  # fmt: skip
        assert listed[0].checksums == {"CRC32": "AAAA"}
        assert [p.part_number for p in await cat.list_parts(info.upload_id, after_part=1, limit=1)] == [2]
        with pytest.raises(NoSuchUpload):
            await cat.put_part("nope", part(1))

        # Complete with parts 1 and 3: part 2's blob goes to the trash, 1 and 3 hand their
        # reference to the version (one each, not two).
        record = VersionRecord(meta=meta(b, "big", 10, parts=[5, 5], checksums={"CRC32": "x-2"},
                                         encryption={"kind": "SSE-S3", "dk": "secret"}),
                               blobs=[BlobRef(p1.blob_id, 5), BlobRef(p3.blob_id, 5)])  # fmt: skip
        version_id = await cat.complete_upload(info.upload_id, record, parts_fingerprint="fp", forget_before_ns=0)
        assert version_id == record.meta.version_id
        assert p2.blob_id in await cat.trash_batch(100_000)
        refs = await sql(dsn, "SELECT blob_id, refs FROM blobs WHERE blob_id = ANY($1)", [p1.blob_id, p3.blob_id])
        assert sorted(r["refs"] for r in refs) == [1, 1]
        with pytest.raises(NoSuchUpload):
            await cat.get_upload(b, "big", info.upload_id)
        remembered = await cat.completed_upload(b, "big", info.upload_id)
        assert remembered is not None
        fingerprint, result = remembered
        assert fingerprint == "fp" and result.version_id == version_id and result.parts == [5, 5]
        assert result.encryption == {"kind": "SSE-S3"}  # never the key
        assert await cat.completed_upload(b, "other", info.upload_id) is None
        with pytest.raises(NoSuchUpload):  # completed already
            await cat.complete_upload(info.upload_id, blob_record(b, "big", p1.blob_id))

        # Abort: its parts' blobs go to the trash.
        leftover = part(1)
        await cat.put_part(others[0].upload_id, leftover)
        await cat.abort_upload(others[0].upload_id)
        assert leftover.blob_id in await cat.trash_batch(100_000)
        with pytest.raises(NoSuchUpload):
            await cat.abort_upload(others[0].upload_id)

    run(dsn, body)


def test_stale_uploads_are_claimed_once(dsn: str) -> None:
    """Concurrent ``abort_uploads_before`` callers (gateways) drop each stale upload exactly once."""

    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "stale")
        stale = [UploadInfo(b, f"k{i}", new_upload_id(), 100 + i) for i in range(12)]
        fresh = UploadInfo(b, "fresh", new_upload_id(), 10**18)
        for info in (*stale, fresh):
            await cat.create_upload(info)
        claimed: list[UploadInfo] = []  # (with other tests' old uploads in this database)
        while True:  # rounds of 4 claimers at once, 3 uploads each, until none is left
            claims = await asyncio.gather(*(cat.abort_uploads_before(10**6, 3) for _ in range(4)))
            if not any(claims):
                break
            claimed += [u for c in claims for u in c]
        ids = [u.upload_id for u in claimed]
        assert len(ids) == len(set(ids))  # none twice
        assert sorted(u.upload_id for u in claimed if u.bucket == b) == sorted(u.upload_id for u in stale)
        assert await cat.get_upload(b, "fresh", fresh.upload_id) == fresh
        with pytest.raises(NoSuchUpload):
            await cat.get_upload(b, "k0", stale[0].upload_id)

    run(dsn, body, pool_size=4)


# --- datasets and models -------------------------------------------------------------------------


def test_datasets_models_and_aliases(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "ds")
        pinned = blob_record(b, "d/1")
        await cat.put_version(pinned)
        small = VersionRecord(meta=meta(b, "d/2", 2), inline_data=b"hi")
        await cat.put_version(small)
        rows = await cat.manifest_rows(b, b"d/", None, 10)
        assert [(r[0], r[6]) for r in rows] == [(b"d/1", None), (b"d/2", small.inline_id)]
        assert [r[0] for r in await cat.manifest_rows(b, b"d/", b"d/1", 10)] == [b"d/2"]

        name = bucket_name("set")
        assert await cat.next_dataset_version(name) == 1
        manifest = new_blob_id()
        rec = DatasetRecord(name, 1, manifest, 9, 5, 2, 5, {"source": "d/\x00"})  # a key may hold NUL
        assert small.inline_id is not None
        await cat.create_dataset(rec, [pinned.blobs[0].blob_id], [small.inline_id])
        assert await cat.get_dataset(name) == rec == await cat.get_dataset(name, 1)
        assert await cat.list_datasets(name) == [rec] and rec in await cat.list_datasets()
        assert await cat.next_dataset_version(name) == 2
        with pytest.raises(DatasetVersionTaken):
            await cat.create_dataset(rec, [], [])
        with pytest.raises(PinGone):
            await cat.create_dataset(DatasetRecord(name, 2, new_blob_id(), 9, 5, 0, 0), [new_blob_id()], [])
        assert await cat.get_dataset(name, 2) is None  # nothing of it stayed

        # Pinned bytes outlive their versions until the dataset goes.
        await cat.delete_object(b, "d/1", version_id=None, marker=meta(b, "d/1"))
        await cat.delete_object(b, "d/2", version_id=None, marker=meta(b, "d/2"))
        assert pinned.blobs[0].blob_id not in await cat.trash_batch(100_000)
        assert await cat.inline_bodies([small.inline_id]) == {small.inline_id: b"hi"}
        await cat.delete_dataset(name, 1, [pinned.blobs[0].blob_id], [small.inline_id])
        trash = await cat.trash_batch(100_000)
        assert pinned.blobs[0].blob_id in trash and manifest in trash
        assert await cat.inline_bodies([small.inline_id]) == {}
        with pytest.raises(NoSuchDataset):
            await cat.delete_dataset(name, 1, [], [])

        model = bucket_name("model")
        mrec = DatasetRecord(model, 1, new_blob_id(), 9, 5, 0, 0, {"step": 3})
        await cat.create_dataset(mrec, [], [], table="models")
        assert await cat.get_dataset(model, table="models") == mrec
        assert await cat.set_model_alias(model, "prod", 1, 11) is None
        assert await cat.set_model_alias(model, "prod", 1, 12) == 1
        assert await cat.model_alias(model, "prod") == 1 and await cat.model_alias(model, "x") is None
        assert await cat.model_aliases(model) == [(model, "prod", 1, 12)]
        assert (model, "prod", 1, 12) in await cat.model_aliases()
        with pytest.raises(NoSuchModel):
            await cat.set_model_alias(model, "prod", 2, 13)
        with pytest.raises(ModelAliasInUse):
            await cat.delete_dataset(model, 1, [], [], table="models")
        assert await cat.delete_model_alias(model, "prod") == 1
        with pytest.raises(NoSuchModel):
            await cat.delete_model_alias(model, "prod")
        await cat.delete_dataset(model, 1, [], [], table="models")
        with pytest.raises(NoSuchModel):
            await cat.delete_dataset(model, 1, [], [], table="models")
        with pytest.raises(ValueError, match="pinning"):
            await cat.get_dataset(model, table="versions")

    run(dsn, body)


# --- many writers --------------------------------------------------------------------------------


def test_32_concurrent_conditional_puts_have_one_winner(dsn: str) -> None:
    """``If-None-Match: *`` from 32 writers at once through two catalogs (two gateways' pools):
    the key's advisory lock lets exactly one publish; the 31 others see it and fail."""

    async def main() -> None:
        gateways = [await PostgresCatalog.open(dsn, pool_size=8) for _ in range(2)]
        try:
            b = await new_bucket(gateways[0], "race", "Enabled")

            def none_match(current: VersionRecord | None) -> None:
                if current is not None:
                    raise PreconditionFailed(resource="k")

            records = [blob_record(b, "k") for _ in range(32)]
            outcomes = await asyncio.gather(
                *(gateways[i % 2].put_version(r, check=none_match) for i, r in enumerate(records)),
                return_exceptions=True,
            )
            winners = [r for r, o in zip(records, outcomes, strict=True) if isinstance(o, str)]
            assert len(winners) == 1, outcomes
            assert all(isinstance(o, PreconditionFailed) for o in outcomes if not isinstance(o, str))
            latest = await gateways[1].get_latest(b, "k")
            assert latest is not None and latest.meta.version_id == winners[0].meta.version_id
            assert len(await gateways[1].scan_versions(b, b"", None, b"\xff", 100)) == 1
            # Unconditional writers of one key all land, in one order, none lost.
            more = [blob_record(b, "k") for _ in range(16)]
            await asyncio.gather(*(gateways[i % 2].put_version(r) for i, r in enumerate(more)))
            walk = await gateways[0].scan_versions(b, b"", None, b"\xff", 100)
            assert [seq for _r, seq, _l in walk] == list(range(17, 0, -1))
            assert sum(latest for _r, _s, latest in walk) == 1
        finally:
            for cat in gateways:
                await cat.close()

    asyncio.run(main())


def test_cancelled_writers_leave_no_lock_or_transaction(dsn: str) -> None:
    """Writers cancelled at any point (a client gone): what returned is stored, the key keeps
    one latest version, and no pooled connection stays in a transaction or holds a lock."""

    async def body(cat: PostgresCatalog) -> None:
        b = await new_bucket(cat, "cancel", "Enabled")
        # Every pooled connection open first: cancelled here is a statement, not a connect
        # (asyncpg leaves a cancelled connect's SSL probe future unretrieved: noise, no harm).
        await asyncio.gather(*(cat.get_bucket(b) for _ in range(16)))
        tasks = [asyncio.create_task(cat.put_version(blob_record(b, "k"))) for _ in range(24)]
        for i, task in enumerate(tasks):
            await asyncio.sleep(0)
            if i % 2:
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, (str, asyncio.CancelledError)) for r in results), results
        walk = await cat.scan_versions(b, b"", None, b"\xff", 100)
        assert {r for r in results if isinstance(r, str)} <= {r.meta.version_id for r, _s, _l in walk}
        assert sum(latest for _r, _s, latest in walk) == 1
        await asyncio.gather(*(cat.put_version(blob_record(b, "k")) for _ in range(16)))  # every connection
        held = await sql(
            dsn,
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND a.datname = current_database()",
        )
        idle_in_txn = await sql(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'",
        )
        assert (held[0][0], idle_in_txn[0][0]) == (0, 0)

    run(dsn, body)


def test_several_keys_are_locked_in_one_order(dsn: str) -> None:
    """A transaction over several keys takes the bucket's lock shared, then the keys' locks
    once each in ascending id order, whatever order it was given them in (no deadlock)."""
    statements = lock_keys("b", [b"x", b"a", b"x", b"m"]).split("; ")
    assert statements[0] == f"SELECT pg_advisory_xact_lock_shared({bucket_lock('b')})"
    ids = [int(s.removeprefix("SELECT pg_advisory_xact_lock(").removesuffix(")")) for s in statements[1:]]
    assert ids == sorted({key_lock("b", k) for k in (b"a", b"m", b"x")})
    assert lock_keys("b", [b"m", b"a", b"x"]) == "; ".join(statements)

    async def held() -> set[tuple[str, int]]:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute("; ".join(statements))
                rows = await conn.fetch(
                    "SELECT mode, (classid::bigint << 32) | objid::bigint FROM pg_locks"
                    " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                )
                return {(r[0], r[1]) for r in rows}
        finally:
            await conn.close()

    assert asyncio.run(held()) == {("ShareLock", bucket_lock("b")), *(("ExclusiveLock", i) for i in ids)}


# --- migrations ----------------------------------------------------------------------------------


def test_migrations_run_once_under_the_lock(postgres: PostgreSQL) -> None:
    fresh = postgres.create_database("pgcore_migrate")

    async def main() -> None:
        cats = await asyncio.gather(*(PostgresCatalog.open(fresh, pool_size=1) for _ in range(4)))
        try:
            assert sorted(c.migrated_steps for c in cats) == [0, 0, 0, len(STEPS)]
            rows = await sql(fresh, "SELECT version FROM migrations ORDER BY version")
            assert [r["version"] for r in rows] == [s.version for s in STEPS]
            assert (await sql(fresh, "SELECT value FROM meta WHERE name = 'schema_version'"))[0][0] == str(
                SCHEMA_VERSION
            )
        finally:
            for cat in cats:
                await cat.close()
        # A schema newer than the code: refused with one line, before anything is opened.
        await sql(fresh, "UPDATE meta SET value = $1 WHERE name = 'schema_version'", str(SCHEMA_VERSION + 1))
        with pytest.raises(InternalError) as refused:
            await PostgresCatalog.open(fresh)
        assert "newer" in str(refused.value) and "\n" not in str(refused.value)

    asyncio.run(main())


# --- PostgreSQL down -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgreSQL]:
    """A PostgreSQL of this module's own: the test stops and restarts it."""
    pg = PostgreSQL()
    pg.start()
    yield pg
    pg.cleanup()


def test_redact_dsn() -> None:
    assert redact_dsn("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_dsn("postgresql://u@h/db?password=s3cret&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert redact_dsn("postgresql://h/db") == "postgresql://h/db"
    assert "s3cret" not in redact_dsn("postgresql://u:s3cret@[::1")


def test_driver_errors_are_translated_in_one_place() -> None:
    shown = "postgresql://u:***@h/db"
    unavailable = (
        ConnectionRefusedError(), TimeoutError(), asyncpg.ConnectionDoesNotExistError("gone"),
        asyncpg.CannotConnectNowError("starting up"), asyncpg.TooManyConnectionsError("full"),
        asyncpg.ReadOnlySQLTransactionError("standby"), asyncpg.InterfaceError("connection is closed"),
    )  # fmt: skip
    for exc in unavailable:
        out = translate(exc, shown)
        assert isinstance(out, SlowDown) and out.headers["Retry-After"] == str(RETRY_AFTER_S), exc
        assert out.__cause__ is exc
    assert isinstance(translate(asyncpg.DiskFullError("no space"), shown), InsufficientStorage)
    for exc in (asyncpg.UndefinedTableError('relation "x" does not exist'), asyncpg.ProtocolViolationError("bad")):
        bug = translate(exc, shown)
        assert isinstance(bug, InternalError) and str(bug) == "Catalog error."  # the driver's text stays inside
    for mine in (NoSuchKey(), PreconditionFailed(), SlowDown(), ValueError("a callback's"), PinGone()):
        assert translate(mine, shown) is mine  # domain errors and callbacks' errors pass through
    with pytest.raises(ValueError, match="pool"):
        PoolSettings(pool_size=0)
    with pytest.raises(InternalError, match="settings are invalid") as bad:  # not a 503: no retry helps
        asyncio.run(PostgresCatalog.open("postgresql://u:pa55@127.0.0.1:notaport/db"))
    assert "pa55" not in str(bad.value) and "u:***@" in str(bad.value)


def test_postgres_down_is_503_then_recovers(own_postgres: PostgreSQL, caplog: pytest.LogCaptureFixture) -> None:
    secret = "pa55-not-for-logs"
    dsn = own_postgres.dsn().replace("postgres@", f"postgres:{secret}@")  # trust: the password is not checked

    async def main() -> None:
        cat = await PostgresCatalog.open(dsn, pool_size=2, checkout_timeout_s=5)
        try:
            assert secret not in repr(cat)
            b = await new_bucket(cat, "down")
            await cat.put_version(blob_record(b, "k"))

            own_postgres.stop(immediate=True)  # a crash
            for call in (lambda: cat.get_latest(b, "k"), lambda: cat.put_version(blob_record(b, "k2"))):
                with pytest.raises(SlowDown) as down:
                    await call()
                assert down.value.headers["Retry-After"].isdigit()
                assert secret not in str(down.value)
            with pytest.raises(SlowDown):
                await PostgresCatalog.open(dsn)

            stats = cat.pool_stats
            assert stats is not None and stats.errors >= 2 and stats.timeouts == 0 and stats.in_use == 0
            own_postgres.start()
            got = await cat.get_latest(b, "k")  # the same catalog: the pool reconnects
            assert got is not None
            await cat.put_version(blob_record(b, "k2"))
            assert await cat.get_latest(b, "k2") is not None

        finally:
            await cat.close()
        # The pool is bounded: a checkout that waits past its timeout is a 503, not a queue.
        small = await PostgresCatalog.open(dsn, pool_size=1, checkout_timeout_s=0.2)
        try:
            async with small._pool.connection():
                with pytest.raises(SlowDown):
                    await small.get_bucket(b)
            assert await small.get_bucket(b) is not None
            stats = small.pool_stats  # what /metrics reports of the pool
            assert stats is not None
            assert (stats.size, stats.in_use, stats.waits, stats.timeouts, stats.errors) == (1, 0, 1, 1, 1)
            assert stats.wait_s > 0
        finally:
            await small.close()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert "unavailable" in caplog.text
    assert secret not in caplog.text
