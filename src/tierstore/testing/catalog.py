"""Conformance suite every Catalog passes (STYLE.md 9; issue 18: one protocol, two engines).

Subclass ``CatalogConformance`` in a ``Test*`` class and provide the ``catalog`` fixture: a
factory that, called with no arguments, returns an async context manager which opens the
catalog under test on entry and closes it on exit. Every call made during one test opens the
SAME store, empty at the test's start: a second call while the first is open is a second
gateway (process) on the same store; a call after the first closed is a restart. Tests are
plain functions that run their body with ``asyncio.run`` (no pytest-asyncio), so the catalog
is opened, used and closed inside one event loop (tests/catalog/test_conformance.py runs it
on SQLite, one file and mirrored)::

    class TestPostgresCatalog(CatalogConformance):
        @pytest.fixture
        def catalog(self, postgres: Postgres) -> CatalogFactory:
            dsn = ...  # a fresh, empty database for this test

            @contextlib.asynccontextmanager
            async def open_catalog() -> AsyncIterator[PostgresCatalog]:
                cat = await PostgresCatalog.open(dsn)
                try:
                    yield cat
                finally:
                    await cat.close()

            return open_catalog

A catalog still being built may subclass only the parts it has (``BucketContract``,
``VersionContract``, ``ConditionalWriteContract``, ``ListingContract``, ``BlobContract``,
``UploadContract``, ``DatasetContract``, ``ConcurrencyContract``, ``QueryContract``,
``StatsContract``); ``CatalogConformance`` is all of them plus a reopen.

What the suite pins down is the contract the engine relies on, not any engine's tables:
buckets, versions in every versioning state (with a seeded random history checked against a
model), conditional writes and their callbacks (``check``, ``guard``, ``shared_gone``,
``fixed_version_id``), listings in S3 byte order, blob references and the trash, inline
bodies, multipart uploads, datasets, models and aliases, metadata queries, usage figures.
Engine-specific callbacks (SQLite's ``extra``/``done``, which take a connection) are not part
of it. The callbacks that are (``check``, ``guard``, ``update``) run inside the write's
transaction and may run more than once for one write (a mirrored SQLite runs each job once
per copy; a retried transaction runs it again): the suite's callbacks are pure, as the
engine's are, and it never counts calls.
Random inputs come from ``random.Random`` seeded with ``SEED``; a failure names its seed and
step, and replays. Reads go through ``_r`` while catalogs' reads are still becoming async.
A test module that runs the suite calls ``pytest.register_assert_rewrite("tierstore.testing.catalog")``
before importing it, so a failed assert shows its values.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from tierstore.catalog import (
    BlobRef,
    BucketChanged,
    DatasetRecord,
    GatewayInfo,
    KeyVersion,
    LeaseBacklog,
    ModelAliasInUse,
    Outcome,
    PinGone,
    PlannedAction,
    VersioningChanged,
    VersionRecord,
    VersionTaken,
)
from tierstore.errors import (
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    InvalidObjectState,
    InvalidQuery,
    NoSuchBucket,
    NoSuchDataset,
    NoSuchKey,
    NoSuchModel,
    NoSuchUpload,
    NoSuchVersion,
    PreconditionFailed,
)
from tierstore.types import NULL_VERSION, BucketInfo, ObjectMeta, PartInfo, UploadInfo

__all__ = [
    "SEED",
    "BlobContract",
    "BucketContract",
    "CatalogConformance",
    "CatalogFactory",
    "ConcurrencyContract",
    "ConditionalWriteContract",
    "ConsoleSessionContract",
    "DatasetContract",
    "LeaseContract",
    "ListingContract",
    "QueryContract",
    "StatsContract",
    "UploadContract",
    "VersionContract",
]

SEED = 20261207

# The catalog under test. Typed loosely on purpose: tierstore.catalog.Catalog (the protocol,
# issue 18 slice 2) is the type once it lands; until then reads may be sync or async (``_r``).
Cat = Any
CatalogFactory = Callable[[], AbstractAsyncContextManager[Cat]]

BASE_NS = 1_780_000_000 * 10**9  # a plausible "now": version ids carry their creation time
KB = 1024
MIB = 1024 * 1024
# Keys chosen around the orderings a text collation gets wrong: '/' (0x2f) vs '.' (0x2e) vs
# '0' (0x30) vs '-' (0x2d), upper before lower case, NUL and other control characters, DEL,
# multi-byte UTF-8 up to U+10FFFF (f4 8f bf bf, the highest bytes UTF-8 has: just below the
# 0xff bound listings use).
ORDER_KEYS = [
    "a", "a-b", "a.b", "a/b", "a0", "a/", "a//", "a/b/c", "B", "b", "ab", "a\x7f", "é", "e\u0301",
    "日本/語", "\uffff", "\U0010ffff", "\U0010ffff/x", "z" * 300, "a b", "a\tb", "~", "\x01", "a\x00", "nul\x00byte",
    "k" * 1024, "日" * 341 + "a",  # the longest keys S3 takes: 1024 bytes
]  # fmt: skip
KEY_ALPHABET = ["a", "b", "/", ".", "0", "-", "é", "日", "\U0010ffff", "\x7f", "Z"]


async def _r(x: Any) -> Any:
    """A read's result: awaited if the catalog's read is a coroutine, else as returned.

    Catalog reads are being made ``async def`` everywhere (issue 18, slice 2); this goes once
    every engine's reads are async, and every ``await _r(cat.x(...))`` becomes ``await cat.x(...)``."""
    if inspect.isawaitable(x):
        return await x
    return x


def run(factory: CatalogFactory, body: Callable[[Cat], Awaitable[None]]) -> None:
    """Open one catalog, run ``body`` with it, close it: all in one event loop."""

    async def main() -> None:
        async with factory() as cat:
            await body(cat)

    asyncio.run(main())


# --- records -------------------------------------------------------------------------------
def vid(n: int) -> str:
    """A version id as runtime.new_version_id makes them: creation time in fixed-width hex first."""
    return f"{BASE_NS + n * 1000:016x}{n:08x}"


def bid(n: int, tag: str = "b") -> str:
    """A blob id (32 lowercase hex chars, as runtime.new_blob_id makes them)."""
    return f"{sum(map(ord, tag)):04x}{n:028x}"


def etag(n: int) -> str:
    return f'"{n:032x}"'


def meta(bucket: str, key: str, n: int, *, size_bytes: int = 10, **fields: Any) -> ObjectMeta:
    return ObjectMeta(bucket=bucket, key=key, version_id=vid(n), size_bytes=size_bytes, etag=etag(n),
                      modified_ns=BASE_NS + n, **fields)  # fmt: skip


def record(bucket: str, key: str, n: int, *, inline: bytes | None = None, **fields: Any) -> VersionRecord:
    """Version ``n`` of ``key``: in blob ``bid(n)``, or inline with ``inline`` as its body."""
    if inline is not None:
        return VersionRecord(meta=meta(bucket, key, n, size_bytes=len(inline), **fields), inline_data=inline)
    return VersionRecord(meta=meta(bucket, key, n, **fields), blobs=[BlobRef(bid(n), 10)])


def marker(bucket: str, key: str, n: int) -> ObjectMeta:
    """A would-be delete marker, as the engine passes it to ``delete_object``."""
    return ObjectMeta(bucket=bucket, key=key, version_id=vid(n), size_bytes=0, etag="", modified_ns=BASE_NS + n,
                      is_delete_marker=True)  # fmt: skip


def full_meta(bucket: str, key: str, n: int) -> ObjectMeta:
    """Every field of ObjectMeta set to something other than its default."""
    return meta(
        bucket, key, n, size_bytes=3 * 5 * MIB + 17,
        headers={"content-type": "text/plain; charset=utf-8", "content-disposition": 'attachment; filename="ü.txt"',
                 "cache-control": "no-cache"},
        user_meta={"owner": "zoë", "empty": "", "quote": "a\"b'c\\d"},
        checksums={"crc32c": "yZRlqg==-3"}, checksum_type="COMPOSITE", parts=[5 * MIB, 5 * MIB, 5 * MIB + 17],
        part_checksums={"crc32c": ["AAAAAA==", "AAAAAQ==", "AAAAAg=="]}, storage_class="STANDARD_IA",
        tags={"k": "v", "日本": "語"}, lock={"mode": "GOVERNANCE", "until_ns": BASE_NS * 2, "legal_hold": True},
        acl=[["id", "abc", "READ"], ["group", "AllUsers", "READ_ACP"]],
        encryption={"kind": "SSE-S3", "alg": "AES256", "nested": {"list": [1, 2.5, None, True]}},
    )  # fmt: skip


def upload(bucket: str, key: str, n: int, **fields: Any) -> UploadInfo:
    return UploadInfo(bucket=bucket, key=key, upload_id=f"{n:032x}", initiated_ns=BASE_NS + n, **fields)


def part(number: int, n: int, size_bytes: int = 5 * MIB, **fields: Any) -> PartInfo:
    return PartInfo(number, size_bytes, etag(n), BASE_NS + n, {"crc32c": f"{n:08x}"}, bid(n, "part"), **fields)


def dataset(name: str, version: int, manifest_n: int, *, info: dict[str, Any] | None = None) -> DatasetRecord:
    info = {"source": {"prefix": "é/"}, "columns": ["a"], "n": 1.5} if info is None else info
    return DatasetRecord(name, version, bid(manifest_n, "manifest"), 100 + version, BASE_NS + version, version * 10,
                         version * 1000, info)  # fmt: skip


async def enable(cat: Cat, bucket: str, status: str = "Enabled") -> None:
    """Set the bucket's versioning state as the engine does: the ``versioning`` property."""

    def update(props: dict[str, Any]) -> dict[str, Any]:
        props["versioning"] = status
        return props

    await cat.update_bucket_props(bucket, update)


async def new_bucket(cat: Cat, name: str = "bucket", versioning: str | None = None) -> str:
    await cat.create_bucket(BucketInfo(name, BASE_NS, "us-east-1"))
    if versioning is not None:
        await enable(cat, name, versioning)
    return name


async def put(cat: Cat, bucket: str, key: str, n: int, **kwargs: Any) -> str:
    version_id: str = await cat.put_version(record(bucket, key, n), **kwargs)
    return version_id


async def trash(cat: Cat) -> set[str]:
    return set(await _r(cat.trash_batch(100_000)))


async def all_versions(cat: Cat, bucket: str) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is_latest, is_delete_marker) of every version, in listing order."""
    rows = await _r(cat.scan_versions(bucket, b"", None, b"\xff", 100_000))
    return [(rec.meta.key, rec.meta.version_id, is_latest, rec.is_delete_marker) for rec, _seq, is_latest in rows]


async def live_keys(cat: Cat, bucket: str) -> list[str]:
    rows = await _r(cat.scan_latest(bucket, b"", b"\xff", 100_000, inclusive=True))
    return [bytes(r[0]).decode() for r in rows]


def successor(prefix: bytes) -> bytes:
    """The engine's exclusive upper bound for keys starting with ``prefix`` (0xff never occurs in UTF-8)."""
    return prefix + b"\xff"


# --- the model of one bucket's versions, for the random history -------------------------------
@dataclass(slots=True)
class _Version:
    version_id: str
    is_marker: bool
    etag: str
    blob: str | None


@dataclass(slots=True)
class _Model:
    versioning: str | None = None
    keys: dict[str, list[_Version]] = field(default_factory=dict)  # oldest first
    trash: set[str] = field(default_factory=set)

    def remove(self, key: str, version: _Version) -> None:
        """``version`` goes; its blob goes to the trash unless another version still shares it."""
        self.keys[key].remove(version)
        if not self.keys[key]:
            del self.keys[key]
        if version.blob is not None and all(v.blob != version.blob for vs in self.keys.values() for v in vs):
            self.trash.add(version.blob)

    def drop_null(self, key: str) -> None:
        for v in self.keys.get(key, []):
            if v.version_id == NULL_VERSION:
                self.remove(key, v)
                return

    def add(self, key: str, version: _Version) -> None:
        self.keys.setdefault(key, []).append(version)

    def latest(self, key: str) -> _Version | None:
        versions = self.keys.get(key)
        return versions[-1] if versions else None

    def listing(self) -> list[tuple[str, str, bool, bool]]:
        out = []
        for key in sorted(self.keys, key=str.encode):
            newest_first = self.keys[key][::-1]
            out += [(key, v.version_id, i == 0, v.is_marker) for i, v in enumerate(newest_first)]
        return out


class _Refused(Exception):
    """Raised by a test's callback (a precondition or object-lock guard saying no)."""


class _Contract:
    @pytest.fixture
    def catalog(self) -> CatalogFactory:
        raise NotImplementedError("subclasses provide the catalog fixture")


class BucketContract(_Contract):
    """Buckets: create, get, list in byte order, properties, delete."""

    def test_bucket_create_get_delete(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            assert await _r(cat.get_bucket("b1")) is None
            await cat.create_bucket(BucketInfo("b1", BASE_NS + 5, "eu-west-3"))
            assert await _r(cat.get_bucket("b1")) == BucketInfo("b1", BASE_NS + 5, "eu-west-3")
            with pytest.raises(BucketAlreadyOwnedByYou):
                await cat.create_bucket(BucketInfo("b1", BASE_NS + 6, "us-east-1"))
            assert await _r(cat.get_bucket("b1")) == BucketInfo("b1", BASE_NS + 5, "eu-west-3")  # untouched
            with pytest.raises(NoSuchBucket):
                await cat.delete_bucket("nope")
            with pytest.raises(NoSuchBucket):
                await _r(cat.bucket_props("nope"))
            with pytest.raises(NoSuchBucket):
                await cat.update_bucket_props("nope", lambda p: p)
            with pytest.raises(NoSuchBucket):
                await put(cat, "nope", "k", 1)
            with pytest.raises(NoSuchBucket):
                await cat.delete_object("nope", "k", version_id=None, marker=marker("nope", "k", 1))
            # Not empty while any version is there, a delete marker included.
            await enable(cat, "b1")
            await put(cat, "b1", "k", 1)
            await cat.delete_object("b1", "k", version_id=None, marker=marker("b1", "k", 2))
            await cat.delete_object("b1", "k", version_id=vid(1), marker=marker("b1", "k", 3))
            assert await all_versions(cat, "b1") == [("k", vid(2), True, True)]
            with pytest.raises(BucketNotEmpty):
                await cat.delete_bucket("b1")
            assert await _r(cat.get_bucket("b1")) is not None
            await cat.delete_object("b1", "k", version_id=vid(2), marker=marker("b1", "k", 4))
            await cat.delete_bucket("b1")
            assert await _r(cat.get_bucket("b1")) is None
            # The name is free again, with none of the old bucket's settings.
            await cat.create_bucket(BucketInfo("b1", BASE_NS + 7, "us-east-1"))
            assert await _r(cat.bucket_props("b1")) == {}
            assert await all_versions(cat, "b1") == []

        run(catalog, body)

    def test_list_buckets_in_byte_order(self, catalog: CatalogFactory) -> None:
        names = ["a-b", "a.b", "a0b", "a-b.c", "zz9", "abc", "ab-c", "b00", "b0-0"]
        regions = {"a.b": "eu-west-3", "b00": "eu-west-3"}

        async def body(cat: Cat) -> None:
            for i, name in enumerate(names):
                await cat.create_bucket(BucketInfo(name, BASE_NS + i, regions.get(name, "us-east-1")))
            expected = [BucketInfo(n, BASE_NS + names.index(n), regions.get(n, "us-east-1"))
                        for n in sorted(names, key=str.encode)]  # fmt: skip
            assert await _r(cat.list_buckets()) == expected
            assert [b.name for b in await _r(cat.list_buckets(after="a.b"))] == [
                "a0b",
                "ab-c",
                "abc",
                "b0-0",
                "b00",
                "zz9",
            ]
            assert [b.name for b in await _r(cat.list_buckets(prefix="a-"))] == ["a-b", "a-b.c"]
            assert [b.name for b in await _r(cat.list_buckets(prefix="ab", after="ab-c"))] == ["abc"]
            assert [b.name for b in await _r(cat.list_buckets(region="eu-west-3"))] == ["a.b", "b00"]
            # Pages of 2 walk the whole list exactly once.
            seen: list[str] = []
            while page := await _r(cat.list_buckets(after=seen[-1] if seen else "", limit=2)):
                assert len(page) <= 2
                seen += [b.name for b in page]
            assert seen == [b.name for b in expected]
            assert await _r(cat.list_buckets(prefix="q")) == []

        run(catalog, body)

    def test_bucket_props_round_trip_and_update(self, catalog: CatalogFactory) -> None:
        props = {"versioning": "Enabled", "policy": {"Statement": [{"Effect": "Allow", "n": 1.5}]}, "tags": {"é": "日"},
                 "object_lock": True, "cors": None, "empty": {}, "list": []}  # fmt: skip

        async def body(cat: Cat) -> None:
            await cat.create_bucket(BucketInfo("b", BASE_NS), dict(props))
            assert await _r(cat.bucket_props("b")) == props

            def update(p: dict[str, Any]) -> dict[str, Any]:
                assert p == props  # the current props, read in the same transaction
                p["policy"] = {"changed": True}
                del p["tags"]
                return p

            new = await cat.update_bucket_props("b", update)
            expected = {k: v for k, v in props.items() if k != "tags"} | {"policy": {"changed": True}}
            assert new == expected
            assert await _r(cat.bucket_props("b")) == expected

            def refuse(p: dict[str, Any]) -> dict[str, Any]:
                p["versioning"] = "Suspended"  # a change made before the refusal is not kept
                raise _Refused

            with pytest.raises(_Refused):
                await cat.update_bucket_props("b", refuse)
            assert await _r(cat.bucket_props("b")) == expected

        run(catalog, body)


class VersionContract(_Contract):
    """Versions in every versioning state, delete markers, inline bodies, metadata updates."""

    def test_every_field_round_trips(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            for versioning in (None, "Enabled"):
                bucket = await new_bucket(cat, f"b-{versioning or 'none'}".lower(), versioning)
                m = full_meta(bucket, "dir/ключ ü", 1)
                blobs = [BlobRef(bid(3), 5 * MIB), BlobRef(bid(1), 5 * MIB), BlobRef(bid(2), 5 * MIB + 17)]
                returned = await cat.put_version(VersionRecord(meta=m, blobs=blobs))
                expected_id = vid(1) if versioning else NULL_VERSION
                assert returned == expected_id
                want = full_meta(bucket, "dir/ключ ü", 1)
                want.version_id = expected_id
                for got in (await _r(cat.get_latest(bucket, "dir/ключ ü")),
                            await _r(cat.get_version(bucket, "dir/ключ ü", expected_id)),
                            await _r(cat.get_latest(bucket, "dir/ключ ü", data=True))):  # fmt: skip
                    assert got is not None
                    assert got.meta == want
                    assert got.blobs == blobs  # in order, as given
                    assert not got.is_delete_marker
                    assert got.inline_id is None and got.inline_data is None
                    assert got.bucket_versioning == versioning
                assert await _r(cat.get_latest(bucket, "dir/ключ")) is None
                assert await _r(cat.get_version(bucket, "dir/ключ ü", vid(9))) is None
                assert await _r(cat.get_latest("other", "dir/ключ ü")) is None

        run(catalog, body)

    @pytest.mark.parametrize("size_bytes", [0, 1, 4 * KB, 16 * KB])
    def test_inline_bodies(self, catalog: CatalogFactory, size_bytes: int) -> None:
        data = random.Random(SEED + size_bytes).randbytes(size_bytes)

        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            rec = record(bucket, "small", 1, inline=data)
            await cat.put_version(rec)
            inline_id = rec.inline_id
            assert inline_id is not None, "the catalog names the inline body at publish"
            got = await _r(cat.get_latest(bucket, "small", data=True))
            assert got is not None and got.inline_id == inline_id and got.inline_data == data and got.blobs == []
            assert got.meta.size_bytes == size_bytes
            lean = await _r(cat.get_version(bucket, "small", NULL_VERSION))
            assert lean is not None and lean.inline_id == inline_id and lean.inline_data is None
            assert (await _r(cat.get_version(bucket, "small", NULL_VERSION, data=True))).inline_data == data
            assert await _r(cat.inline_bodies([inline_id, "f" * 32, inline_id])) == {inline_id: data}
            assert await cat.check_inline(inline_id) == "healthy"
            page, damaged = await _r(cat.inline_verify_page())
            assert page == [(inline_id, size_bytes)] and damaged == set()
            # Overwritten (unversioned): the old body goes with its version, in the same commit.
            await put(cat, bucket, "small", 2)
            assert await _r(cat.inline_bodies([inline_id])) == {}
            assert await cat.check_inline(inline_id) == "gone"
            assert (await _r(cat.get_latest(bucket, "small", data=True))).inline_data is None

        run(catalog, body)

    def test_unversioned_overwrite_replaces_the_null_version(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            assert await put(cat, bucket, "k", 1) == NULL_VERSION
            assert await put(cat, bucket, "k", 2) == NULL_VERSION
            assert await all_versions(cat, bucket) == [("k", NULL_VERSION, True, False)]
            got = await _r(cat.get_version(bucket, "k", NULL_VERSION))
            assert got is not None and got.meta.etag == etag(2) and got.blobs == [BlobRef(bid(2), 10)]
            assert await trash(cat) == {bid(1)}
            # Deleting in a never-versioned bucket removes the object; no marker.
            removed, added_marker = await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 3))
            assert not added_marker and removed is not None and removed.meta.etag == etag(2)
            assert await all_versions(cat, bucket) == []
            assert await trash(cat) == {bid(1), bid(2)}
            assert await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 4)) == (None, False)

        run(catalog, body)

    def test_enabled_keeps_history_newest_first(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat, versioning="Enabled")
            for n in (1, 2, 3):
                assert await put(cat, bucket, "k", n) == vid(n)
            assert await all_versions(cat, bucket) == [("k", vid(3), True, False), ("k", vid(2), False, False),
                                                       ("k", vid(1), False, False)]  # fmt: skip
            for n in (1, 2, 3):
                got = await _r(cat.get_version(bucket, "k", vid(n)))
                assert got is not None and got.meta.etag == etag(n) and got.blobs == [BlobRef(bid(n), 10)]
            assert (await _r(cat.get_latest(bucket, "k"))).meta.version_id == vid(3)
            seqs = [await _r(cat.version_seq(bucket, "k", vid(n))) for n in (1, 2, 3)]
            assert seqs[0] < seqs[1] < seqs[2], seqs
            assert await _r(cat.version_seq(bucket, "k", vid(7))) is None
            assert await _r(cat.version_seq(bucket, "k2", vid(1))) is None
            assert await trash(cat) == set()

        run(catalog, body)

    def test_suspended_replaces_only_the_null_version(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            await put(cat, bucket, "k", 1)  # null, from before versioning
            await enable(cat, bucket)
            await put(cat, bucket, "k", 2)
            assert await all_versions(cat, bucket) == [("k", vid(2), True, False), ("k", NULL_VERSION, False, False)]
            await enable(cat, bucket, "Suspended")
            assert await put(cat, bucket, "k", 3) == NULL_VERSION  # replaces the old null, under v2
            assert await all_versions(cat, bucket) == [("k", NULL_VERSION, True, False), ("k", vid(2), False, False)]
            assert (await _r(cat.get_version(bucket, "k", NULL_VERSION))).meta.etag == etag(3)
            assert await trash(cat) == {bid(1)}
            # A delete adds a null marker, which replaces the null version.
            removed, added_marker = await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 4))
            assert added_marker and removed is not None and removed.is_delete_marker
            assert removed.meta.version_id == NULL_VERSION
            assert await all_versions(cat, bucket) == [("k", NULL_VERSION, True, True), ("k", vid(2), False, False)]
            assert await trash(cat) == {bid(1), bid(3)}
            latest = await _r(cat.get_latest(bucket, "k"))
            assert latest is not None and latest.is_delete_marker and latest.meta.is_delete_marker
            assert latest.bucket_versioning == "Suspended"
            # Enabled again: new versions stack on top; the null marker stays in the history.
            await enable(cat, bucket)
            await put(cat, bucket, "k", 5)
            assert await all_versions(cat, bucket) == [("k", vid(5), True, False), ("k", NULL_VERSION, False, True),
                                                       ("k", vid(2), False, False)]  # fmt: skip

        run(catalog, body)

    def test_delete_markers_and_promotion(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat, versioning="Enabled")
            for n in (1, 2, 3):
                await put(cat, bucket, "k", n)
            await put(cat, bucket, "other", 9)
            removed, added_marker = await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 4))
            assert added_marker and removed is not None and removed.is_delete_marker
            assert removed.meta.version_id == vid(4)
            assert await live_keys(cat, bucket) == ["other"]
            latest = await _r(cat.get_latest(bucket, "k"))
            assert latest is not None and latest.is_delete_marker and latest.meta.version_id == vid(4)
            assert latest.blobs == [] and latest.inline_id is None
            # A marker on a key with no versions at all is still a marker.
            await cat.delete_object(bucket, "ghost", version_id=None, marker=marker(bucket, "ghost", 5))
            assert await all_versions(cat, bucket) == [
                ("ghost", vid(5), True, True),
                ("k", vid(4), True, True), ("k", vid(3), False, False), ("k", vid(2), False, False),
                ("k", vid(1), False, False),
                ("other", vid(9), True, False),
            ]  # fmt: skip
            # Deleting the marker by id brings the newest version back.
            removed, added_marker = await cat.delete_object(
                bucket, "k", version_id=vid(4), marker=marker(bucket, "k", 6)
            )
            assert not added_marker and removed is not None and removed.is_delete_marker
            assert (await _r(cat.get_latest(bucket, "k"))).meta.version_id == vid(3)
            assert await live_keys(cat, bucket) == ["k", "other"]
            # Deleting an older version leaves the latest alone; deleting the latest promotes the next.
            await cat.delete_object(bucket, "k", version_id=vid(2), marker=marker(bucket, "k", 7))
            assert (await _r(cat.get_latest(bucket, "k"))).meta.version_id == vid(3)
            removed, _ = await cat.delete_object(bucket, "k", version_id=vid(3), marker=marker(bucket, "k", 8))
            assert removed is not None and removed.meta.etag == etag(3) and removed.blobs == [BlobRef(bid(3), 10)]
            assert (await _r(cat.get_latest(bucket, "k"))).meta.version_id == vid(1)
            assert await trash(cat) == {bid(2), bid(3)}
            nothing = await cat.delete_object(bucket, "k", version_id=vid(99), marker=marker(bucket, "k", 10))
            assert nothing == (None, False)
            await cat.delete_object(bucket, "k", version_id=vid(1), marker=marker(bucket, "k", 11))
            assert await _r(cat.get_latest(bucket, "k")) is None
            assert await live_keys(cat, bucket) == ["other"]

        run(catalog, body)

    def test_random_history_matches_a_model(self, catalog: CatalogFactory) -> None:
        """Seeded random puts, copies (blobs shared between versions), deletes, version deletes and
        versioning changes on a few keys, checked after every step against a model of S3
        versioning and of the reference counts (what is in the trash)."""
        keys = ["k", "k/", "ké", "k\U0010ffff", "j"]

        async def body(cat: Cat) -> None:
            rng = random.Random(SEED)
            bucket = await new_bucket(cat)
            model = _Model()
            for step in range(1, 161):
                where = f"seed {SEED} step {step}"
                key = rng.choice(keys)
                op = rng.choices(["put", "copy", "delete", "delete_version", "versioning"], [4, 2, 3, 3, 1])[0]
                sources = [v for vs in model.keys.values() for v in vs if v.blob is not None]
                if op == "versioning":
                    model.versioning = rng.choice(["Enabled", "Suspended"])
                    await enable(cat, bucket, model.versioning)
                elif op in ("put", "copy"):
                    # a copy shares the blob of any version (of any key, itself included)
                    blob = rng.choice(sources).blob if op == "copy" and sources else bid(step)
                    assert blob is not None
                    rec = VersionRecord(meta=meta(bucket, key, step), blobs=[BlobRef(blob, 10)])
                    gone = (lambda: NoSuchKey(resource="source")) if blob != bid(step) else None
                    got = await cat.put_version(rec, shared_gone=gone)
                    version_id = vid(step) if model.versioning == "Enabled" else NULL_VERSION
                    assert got == version_id, where
                    if model.versioning != "Enabled":
                        model.drop_null(key)
                    model.add(key, _Version(version_id, False, etag(step), blob))
                elif op == "delete":
                    removed, added = await cat.delete_object(
                        bucket, key, version_id=None, marker=marker(bucket, key, step)
                    )
                    current = model.latest(key)
                    if model.versioning is None:
                        assert not added, where
                        assert (removed and removed.meta.version_id) == (current and current.version_id), where
                        if current is not None:
                            model.remove(key, current)
                    else:
                        version_id = vid(step) if model.versioning == "Enabled" else NULL_VERSION
                        assert added and removed is not None and removed.meta.version_id == version_id, where
                        if model.versioning != "Enabled":
                            model.drop_null(key)
                        model.add(key, _Version(version_id, True, "", None))
                else:
                    versions = model.keys.get(key, [])
                    target = rng.choice(versions) if versions and rng.random() < 0.8 else None
                    absent = [vid(10_000 + step)] + [NULL_VERSION] * all(v.version_id != NULL_VERSION for v in versions)
                    version_id = target.version_id if target else rng.choice(absent)
                    removed, added = await cat.delete_object(bucket, key, version_id=version_id,
                                                             marker=marker(bucket, key, step))  # fmt: skip
                    assert not added, where
                    if target is None:
                        assert removed is None, where
                    else:
                        assert removed is not None and removed.meta.version_id == version_id, where
                        assert removed.is_delete_marker == target.is_marker, where
                        model.remove(key, target)
                latest = await _r(cat.get_latest(bucket, key))
                want = model.latest(key)
                assert (latest is None) == (want is None), where
                if latest is not None and want is not None:
                    assert (latest.meta.version_id, latest.is_delete_marker) == (want.version_id, want.is_marker), where
                    assert latest.meta.etag == want.etag, where
                if step % 20 == 0 or step == 160:
                    assert await all_versions(cat, bucket) == model.listing(), where
                    live = [k for k in sorted(model.keys, key=str.encode) if not model.keys[k][-1].is_marker]
                    assert await live_keys(cat, bucket) == live, where
                    assert await trash(cat) == model.trash, where

        run(catalog, body)

    def test_update_version_meta(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat, versioning="Enabled")
            await put(cat, bucket, "k", 1)
            await put(cat, bucket, "k", 2)

            def tag(rec: VersionRecord) -> None:
                rec.meta.tags = {"state": "tagged", "é": "ü"}
                rec.meta.lock = {"legal_hold": True}

            out = await cat.update_version_meta(bucket, "k", None, tag)
            assert out.meta.version_id == vid(2) and out.meta.tags == {"state": "tagged", "é": "ü"}
            got = await _r(cat.get_latest(bucket, "k"))
            assert got.meta.tags == {"state": "tagged", "é": "ü"} and got.meta.lock == {"legal_hold": True}
            assert got.meta.etag == etag(2) and got.blobs == [BlobRef(bid(2), 10)]  # the rest as it was
            assert (await _r(cat.get_version(bucket, "k", vid(1)))).meta.tags == {}

            def untag(rec: VersionRecord) -> None:
                rec.meta.tags = {}

            await cat.update_version_meta(bucket, "k", vid(2), untag)
            assert (await _r(cat.get_version(bucket, "k", vid(2)))).meta.tags == {}

            def refuse(rec: VersionRecord) -> None:
                rec.meta.tags = {"lost": "yes"}
                raise _Refused

            with pytest.raises(_Refused):
                await cat.update_version_meta(bucket, "k", vid(1), refuse)
            assert (await _r(cat.get_version(bucket, "k", vid(1)))).meta.tags == {}
            with pytest.raises(NoSuchKey):
                await cat.update_version_meta(bucket, "nope", None, untag)
            with pytest.raises(NoSuchVersion):
                await cat.update_version_meta(bucket, "k", vid(9), untag)
            with pytest.raises(NoSuchBucket):
                await cat.update_version_meta("nope", "k", None, untag)

        run(catalog, body)

    def test_seq_older_than_places_a_vanished_version(self, catalog: CatalogFactory) -> None:
        """Where a listing resumes after a version deleted since the last page: ids other than
        ``null`` carry their creation time; a ``null`` version is placed by its modification time."""

        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            null = record(bucket, "k", 5)
            null.meta.modified_ns = BASE_NS + 5 * 1000  # on the clock version ids carry
            await cat.put_version(null)
            await enable(cat, bucket)
            for n in (10, 20, 30):
                await put(cat, bucket, "k", n)
            seqs = {n: await _r(cat.version_seq(bucket, "k", vid(n))) for n in (10, 20, 30)}
            seqs[5] = await _r(cat.version_seq(bucket, "k", NULL_VERSION))
            assert seqs[5] < seqs[10] < seqs[20] < seqs[30], seqs
            await cat.delete_object(bucket, "k", version_id=vid(20), marker=marker(bucket, "k", 40))

            async def older(n: int) -> int:
                result: int = await _r(cat.seq_older_than(bucket, "k", vid(n), BASE_NS + n * 1000))
                return result

            # versions with seq < result are exactly those created before the vanished one
            assert seqs[10] < await older(20) <= seqs[30]
            assert seqs[5] < await older(7) <= seqs[10]  # after the null version, by its time
            assert await older(3) <= seqs[5]
            assert await older(35) > seqs[30]

        run(catalog, body)


class ConditionalWriteContract(_Contract):
    """The callbacks a write runs inside its transaction: ``check``, ``guard``, ``shared_gone``,
    ``fixed_version_id``; and one winner among concurrent conditional writes."""

    def test_check_sees_the_current_version_and_can_refuse(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat, versioning="Enabled")
            seen: list[tuple[str, bool] | None] = []

            def check(current: VersionRecord | None) -> None:
                seen.append(None if current is None else (current.meta.version_id, current.is_delete_marker))

            await put(cat, bucket, "k", 1, check=check)
            await put(cat, bucket, "k", 2, check=check)
            await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 3), check=check)
            await put(cat, bucket, "k", 4, check=check)
            # (a callback may run more than once for one write: once per mirror copy, say)
            assert list(dict.fromkeys(seen)) == [None, (vid(1), False), (vid(2), False), (vid(3), True)]

            def refuse(current: VersionRecord | None) -> None:
                raise PreconditionFailed(resource="k")

            before = await all_versions(cat, bucket)
            with pytest.raises(PreconditionFailed):
                await put(cat, bucket, "k", 5, check=refuse)
            with pytest.raises(PreconditionFailed):
                await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 6), check=refuse)
            with pytest.raises(PreconditionFailed):
                await cat.delete_object(bucket, "k", version_id=vid(1), marker=marker(bucket, "k", 7), check=refuse)
            assert await all_versions(cat, bucket) == before
            # The refused put's blob was never referenced: the engine trashes it itself.
            assert not await _r(cat.blob_known(bid(5)))
            assert await trash(cat) == set()

        run(catalog, body)

    def test_concurrent_if_none_match_puts_have_exactly_one_winner(self, catalog: CatalogFactory) -> None:
        """32 ``If-None-Match: *`` PUTs of one key, spread over two open catalogs (two gateways)."""

        def if_none_match(current: VersionRecord | None) -> None:
            if current is not None and not current.is_delete_marker:
                raise PreconditionFailed(resource="k")

        async def main() -> None:
            async with catalog() as a, catalog() as b:
                for versioning in (None, "Enabled"):
                    bucket = await new_bucket(a, f"race-{versioning or 'none'}".lower(), versioning)
                    base = 1000 if versioning else 0
                    results = await asyncio.gather(
                        *(put(a if n % 2 else b, bucket, "k", base + n, check=if_none_match) for n in range(32)),
                        return_exceptions=True,
                    )
                    winners = [n for n, r in enumerate(results) if isinstance(r, str)]
                    assert len(winners) == 1, results
                    assert all(isinstance(r, PreconditionFailed) for r in results if not isinstance(r, str)), results
                    for cat in (a, b):
                        assert (await _r(cat.get_latest(bucket, "k"))).meta.etag == etag(base + winners[0])
                        assert len(await all_versions(cat, bucket)) == 1
                    assert [await _r(a.blob_known(bid(base + n))) for n in range(32)] == [
                        n in winners for n in range(32)
                    ]

        asyncio.run(main())

    def test_guard_sees_what_a_write_destroys_and_can_refuse(self, catalog: CatalogFactory) -> None:
        """``guard(version, props)`` (object lock) is asked before any version is destroyed."""

        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            await cat.update_bucket_props(bucket, lambda p: p | {"object_lock": {"mode": "GOVERNANCE"}})
            guarded: dict[tuple[str, str], None] = {}  # in order, once each (a callback may run more than once)

            def watch(rec: VersionRecord, props: dict[str, Any]) -> None:
                assert props["object_lock"] == {"mode": "GOVERNANCE"}
                guarded[rec.meta.key, rec.meta.etag] = None

            def locked(rec: VersionRecord, props: dict[str, Any]) -> None:
                raise InvalidObjectState(resource=rec.meta.key)

            await put(cat, bucket, "k", 1, guard=watch)
            assert list(guarded) == []  # nothing destroyed
            with pytest.raises(InvalidObjectState):  # an unversioned overwrite destroys the old version
                await put(cat, bucket, "k", 2, guard=locked)
            await put(cat, bucket, "k", 3, guard=watch)
            assert list(guarded) == [("k", etag(1))]
            with pytest.raises(InvalidObjectState):
                await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 4), guard=locked)
            with pytest.raises(InvalidObjectState):
                await cat.delete_object(
                    bucket, "k", version_id=NULL_VERSION, marker=marker(bucket, "k", 5), guard=locked
                )
            assert (await _r(cat.get_latest(bucket, "k"))).meta.etag == etag(3)
            assert await trash(cat) == {bid(1)}
            await enable(cat, bucket)
            await put(cat, bucket, "k", 6, guard=locked)  # a new version destroys nothing
            await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 7), guard=locked)
            await enable(cat, bucket, "Suspended")
            with pytest.raises(InvalidObjectState):  # the null version (under two others) would go
                await put(cat, bucket, "k", 8, guard=locked)
            await cat.delete_object(bucket, "k", version_id=vid(6), marker=marker(bucket, "k", 9), guard=watch)
            assert list(guarded) == [("k", etag(1)), ("k", etag(6))]
            assert await all_versions(cat, bucket) == [("k", vid(7), True, True), ("k", NULL_VERSION, False, False)]

        run(catalog, body)

    def test_fixed_version_id_refuses_a_changed_versioning_state(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            with pytest.raises(VersioningChanged):  # an id bound for Enabled, but the bucket is unversioned
                await cat.put_version(record(bucket, "k", 1), fixed_version_id=True)
            rec = record(bucket, "k", 2)
            rec.meta.version_id = NULL_VERSION
            assert await cat.put_version(rec, fixed_version_id=True) == NULL_VERSION
            await enable(cat, bucket)
            rec = record(bucket, "k", 3)
            rec.meta.version_id = NULL_VERSION
            with pytest.raises(VersioningChanged):
                await cat.put_version(rec, fixed_version_id=True)
            assert await cat.put_version(record(bucket, "k", 4), fixed_version_id=True) == vid(4)
            assert await all_versions(cat, bucket) == [("k", vid(4), True, False), ("k", NULL_VERSION, False, False)]
            assert not await _r(cat.blob_known(bid(1))) and not await _r(cat.blob_known(bid(3)))

        run(catalog, body)

    def test_expect_refuses_a_changed_bucket_property(self, catalog: CatalogFactory) -> None:
        """``expect``: the bucket properties a PUT was decided by (the engine's cached default
        encryption and lock), checked in the commit; refused, nothing is written."""

        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            sse = {"algorithm": "AES256"}
            plain = {"encryption": None, "object_lock": None}
            assert await put(cat, bucket, "k", 1, expect=plain) == NULL_VERSION
            await cat.update_bucket_props(bucket, lambda p: p | {"encryption": sse})
            checked: list[VersionRecord | None] = []
            for kwargs in ({}, {"check": checked.append}):  # PostgreSQL: its one-statement PUT, the general path
                with pytest.raises(BucketChanged):
                    await put(cat, bucket, "k", 2, expect=plain, **kwargs)
                assert (await _r(cat.get_latest(bucket, "k"))).meta.etag == etag(1)
                assert not await _r(cat.blob_known(bid(2))) and await trash(cat) == set()
            assert checked == []  # refused before the conditions are looked at
            assert await put(cat, bucket, "k", 3, expect=plain | {"encryption": sse}) == NULL_VERSION
            assert await all_versions(cat, bucket) == [("k", NULL_VERSION, True, False)]
            assert await trash(cat) == {bid(1)}
            with pytest.raises(NoSuchBucket):
                await put(cat, "nobucket", "k", 4, expect=plain)

        run(catalog, body)

    def test_a_locked_null_version_is_guarded_without_a_lock_configuration(self, catalog: CatalogFactory) -> None:
        """The guard decides whether a null version that carries a lock may go, whatever the
        bucket's properties say."""

        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            held = record(bucket, "k", 1)
            held.meta.lock = {"legal_hold": True}
            await cat.put_version(held)

            def locked(rec: VersionRecord, props: dict[str, Any]) -> None:
                if rec.meta.lock:
                    raise InvalidObjectState(resource=rec.meta.key)

            with pytest.raises(InvalidObjectState):
                await put(cat, bucket, "k", 2, guard=locked)
            assert (await _r(cat.get_latest(bucket, "k"))).meta.etag == etag(1)
            await put(cat, bucket, "other", 3, guard=locked)
            await put(cat, bucket, "other", 4, guard=locked)  # an unlocked null version goes
            assert await trash(cat) == {bid(3)}

        run(catalog, body)

    def test_shared_gone_refuses_a_copy_of_deleted_bytes(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            await put(cat, bucket, "src", 1)
            copy = VersionRecord(meta=meta(bucket, "dst", 2), blobs=[BlobRef(bid(1), 10)])
            await cat.put_version(copy, shared_gone=lambda: NoSuchKey(resource="src"))
            await cat.delete_object(bucket, "src", version_id=None, marker=marker(bucket, "src", 3))
            assert await trash(cat) == set()  # "dst" still holds the blob
            await cat.delete_object(bucket, "dst", version_id=None, marker=marker(bucket, "dst", 4))
            assert await trash(cat) == {bid(1)}
            late = VersionRecord(meta=meta(bucket, "late", 5), blobs=[BlobRef(bid(1), 10)])
            with pytest.raises(NoSuchKey):
                await cat.put_version(late, shared_gone=lambda: NoSuchKey(resource="src"))
            assert await _r(cat.get_latest(bucket, "late")) is None
            assert await trash(cat) == {bid(1)}

        run(catalog, body)


class ListingContract(_Contract):
    """``scan_latest`` and ``scan_versions``: S3 byte order, windows, pages, the engine's seeks."""

    def test_scan_latest_in_byte_order(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat, versioning="Enabled")
            for n, key in enumerate(ORDER_KEYS, 1):
                await put(cat, bucket, key, n)
            await put(cat, bucket, "a/b", 100)  # a newer version: listed once, as its latest
            await cat.delete_object(bucket, "a0", version_id=None, marker=marker(bucket, "a0", 101))  # hidden
            rec = record(bucket, "cold", 102, storage_class="GLACIER")
            await cat.put_version(rec)
            live = sorted((k for k in [*ORDER_KEYS, "cold"] if k != "a0"), key=str.encode)
            rows = await _r(cat.scan_latest(bucket, b"", b"\xff", 1000, inclusive=True))
            assert [bytes(r[0]).decode() for r in rows] == live
            by_key = {bytes(r[0]).decode(): tuple(r[1:]) for r in rows}
            assert by_key["a/b"] == (10, etag(100), BASE_NS + 100, "STANDARD")
            assert by_key["cold"] == (10, etag(102), BASE_NS + 102, "GLACIER")
            assert all(isinstance(r[0], bytes) for r in rows)
            # exclusive and inclusive starts, an upper bound, a limit
            keys_b = [k.encode() for k in live]

            async def scan(after: bytes, below: bytes, limit: int = 1000, inclusive: bool = False) -> list[bytes]:
                return [
                    bytes(r[0]) for r in await _r(cat.scan_latest(bucket, after, below, limit, inclusive=inclusive))
                ]

            assert await scan(b"a", successor(b"a")) == [k for k in keys_b if k.startswith(b"a") and k != b"a"]
            assert await scan(b"a", successor(b"a"), inclusive=True) == [k for k in keys_b if k.startswith(b"a")]
            assert await scan(b"a/", successor(b"a/")) == [b"a//", b"a/b", b"a/b/c"]
            top = "\U0010ffff".encode()
            assert await scan(top, successor(top), inclusive=True) == [top, top + b"/x"]
            assert await scan(b"a.b", b"a0", 2) == [b"a/", b"a//"]
            assert await scan(b"~", b"\xff") == [k for k in keys_b if k > b"~"]
            assert await scan(b"zz", b"zz") == []

        run(catalog, body)

    def test_scan_latest_random_windows_and_pages(self, catalog: CatalogFactory) -> None:
        """Seeded random keys; random (after, below, inclusive) windows and pages against sorted()."""

        async def body(cat: Cat) -> None:
            rng = random.Random(SEED + 1)
            bucket = await new_bucket(cat)
            keys = sorted({"".join(rng.choices(KEY_ALPHABET, k=rng.randint(1, 5))) for _ in range(150)}, key=str.encode)
            for n, key in enumerate(keys, 1):
                await put(cat, bucket, key, n)
            keys_b = [k.encode() for k in keys]
            for probe in range(60):
                where = f"seed {SEED + 1} probe {probe}"
                after = rng.choice(keys_b)[: rng.randint(0, 4)]
                if rng.random() < 0.5:  # a prefix listing: [prefix, its successor)
                    below, inclusive = successor(after), True
                else:
                    below, inclusive = rng.choice([*keys_b, b"\xff", after + b"\xff"]), rng.random() < 0.5
                want = [k for k in keys_b if (k >= after if inclusive else k > after) and k < below]
                limit = rng.choice([1, 2, 7, 1000])
                rows = await _r(cat.scan_latest(bucket, after, below, limit, inclusive=inclusive))
                assert [bytes(r[0]) for r in rows] == want[:limit], where
            # paging as the engine does: each page resumes after the last key it saw
            got: list[bytes] = []
            after, inclusive = b"", True
            while rows := await _r(cat.scan_latest(bucket, after, b"\xff", 7, inclusive=inclusive)):
                got += [bytes(r[0]) for r in rows]
                after, inclusive = bytes(rows[-1][0]), False
            assert got == keys_b

        run(catalog, body)

    def test_scan_delimited_one_row_per_entry_or_prefix(self, catalog: CatalogFactory) -> None:
        """Seeded random keys; ``scan_delimited`` against a model: each row a key, and after a key
        with the delimiter at or after ``skip_from`` nothing more under that common prefix."""

        async def body(cat: Cat) -> None:
            rng = random.Random(SEED + 5)
            bucket = await new_bucket(cat, versioning="Enabled")
            keys = sorted({"".join(rng.choices(KEY_ALPHABET, k=rng.randint(1, 6))) for _ in range(200)}, key=str.encode)
            for n, key in enumerate(keys, 1):
                await put(cat, bucket, key, n)
            hidden = keys[::9]  # a delete marker on top: neither an entry nor a prefix's first key
            for n, key in enumerate(hidden, 1000):
                await cat.delete_object(bucket, key, version_id=None, marker=marker(bucket, key, n))
            live = [k.encode() for k in keys if k not in hidden]
            for probe in range(40):
                where = f"seed {SEED + 5} probe {probe}"
                prefix = rng.choice(live)[: rng.randint(0, 2)]
                delim = rng.choice([b"/", b"a", b"/a", "é".encode()])
                under = [k for k in live if k.startswith(prefix)]  # the engine resumes within the prefix
                after, inclusive = (prefix, True) if rng.random() < 0.5 else (rng.choice(under), False)
                limit = rng.choice([1, 3, 1000])
                want: list[bytes] = []
                cut: bytes | None = None
                for k in live:
                    if not (k >= after if inclusive else k > after) or not k.startswith(prefix) or len(want) == limit:
                        continue
                    if cut is not None and k.startswith(cut):
                        continue
                    at = k.find(delim, len(prefix))
                    cut = k[: at + len(delim)] if at >= 0 else None
                    want.append(k)
                rows = await _r(cat.scan_delimited(
                    bucket, after, successor(prefix), limit, inclusive=inclusive, skip_from=len(prefix), delimiter=delim
                ))  # fmt: skip
                assert [bytes(r[0]) for r in rows] == want, where
                assert all(tuple(r[1:3]) == (10, etag(keys.index(bytes(r[0]).decode()) + 1)) for r in rows), where

        run(catalog, body)

    def test_delimiter_roll_up_as_the_engine_asks(self, catalog: CatalogFactory) -> None:
        """The engine rolls keys up into common prefixes itself, seeking past each one with
        ``after = prefix + 0xff``: a catalog must make that seek land right after the prefix."""

        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            keys = ["a", "a/", "a/1", "a/2/x", "a.b", "a0", "b/\U0010ffff", "b/\U0010ffff/z", "b0", "c/d/e", "c/é/"]
            for n, key in enumerate(keys, 1):
                await put(cat, bucket, key, n)
            for prefix, delimiter in [("", "/"), ("a", "/"), ("b/", "/"), ("c/", "/"), ("", "a"), ("c", "/d")]:
                pb, db = prefix.encode(), delimiter.encode()
                want_keys, want_prefixes = [], []
                for k in sorted(keys, key=str.encode):
                    kb = k.encode()
                    if not kb.startswith(pb):
                        continue
                    idx = kb.find(db, len(pb))
                    if idx < 0:
                        want_keys.append(k)
                    elif (cp := kb[: idx + len(db)].decode()) not in want_prefixes:
                        want_prefixes.append(cp)
                got_keys, got_prefixes = [], []
                after, inclusive, scans = pb, True, 0
                while rows := await _r(cat.scan_latest(bucket, after, successor(pb), 1, inclusive=inclusive)):
                    scans += 1
                    kb = bytes(rows[0][0])
                    idx = kb.find(db, len(pb))
                    if idx < 0:
                        got_keys.append(kb.decode())
                        after, inclusive = kb, False
                    else:
                        got_prefixes.append(kb[: idx + len(db)].decode())
                        after, inclusive = successor(kb[: idx + len(db)]), False
                where = f"prefix {prefix!r} delimiter {delimiter!r}"
                assert (got_keys, got_prefixes) == (want_keys, want_prefixes), where
                assert scans == len(want_keys) + len(want_prefixes), where  # one seek per prefix

        run(catalog, body)

    def test_scan_versions_order_and_paging(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            rng = random.Random(SEED + 2)
            bucket = await new_bucket(cat, versioning="Enabled")
            keys = ["x", "x/", "x.", "x0", "é", "\U0010ffff", "y"]
            history: dict[str, list[str]] = {}
            for n in range(1, 41):
                key = rng.choice(keys)
                if rng.random() < 0.2:
                    await cat.delete_object(bucket, key, version_id=None, marker=marker(bucket, key, n))
                else:
                    await put(cat, bucket, key, n)
                history.setdefault(key, []).append(vid(n))
            want = [(k, v) for k in sorted(history, key=str.encode) for v in reversed(history[k])]
            rows = await _r(cat.scan_versions(bucket, b"", None, b"\xff", 1000))
            assert [(r.meta.key, r.meta.version_id) for r, _s, _l in rows] == want
            assert [latest for _r_, _s, latest in rows] == [
                i == 0 or want[i - 1][0] != k for i, (k, _v) in enumerate(want)
            ]
            # pages of 3, resuming after (key, seq) as the engine's markers do
            got: list[tuple[str, str]] = []
            after_key, after_seq = b"", None
            while page := await _r(cat.scan_versions(bucket, after_key, after_seq, b"\xff", 3)):
                assert len(page) <= 3
                got += [(r.meta.key, r.meta.version_id) for r, _s, _l in page]
                last, seq, _latest = page[-1]
                after_key, after_seq = last.meta.key.encode(), seq
            assert got == want
            # a window of one prefix; a start at a key (inclusive) and after a key's every version
            for key in ("x", "é"):
                kb = key.encode()
                rows = await _r(cat.scan_versions(bucket, kb, None, successor(kb), 1000))
                assert [(r.meta.key, r.meta.version_id) for r, _s, _l in rows] == [
                    w for w in want if w[0].startswith(key)
                ]
                rows = await _r(cat.scan_versions(bucket, kb, 0, b"\xff", 1000))
                assert [(r.meta.key, r.meta.version_id) for r, _s, _l in rows] == [
                    w for w in want if w[0].encode() > kb
                ]

        run(catalog, body)


class BlobContract(_Contract):
    """Blob references, the trash, the heal walk."""

    def test_blob_references_and_the_trash(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            assert await _r(cat.blob_count()) == 0 and await _r(cat.blob_page()) == []
            await put(cat, bucket, "a", 1)
            shared = VersionRecord(meta=meta(bucket, "b", 2), blobs=[BlobRef(bid(1), 10), BlobRef(bid(2), 20)])
            await cat.put_version(shared)  # a copy shares "a"'s blob
            assert await _r(cat.blob_known(bid(1))) and await _r(cat.blob_known(bid(2)))
            assert not await _r(cat.blob_known(bid(3)))
            assert await _r(cat.blob_count()) == 2
            assert await _r(cat.blob_page()) == sorted([(bid(1), 10), (bid(2), 20)])
            await put(cat, bucket, "a", 3)
            assert await trash(cat) == set()  # "b" still references bid(1)
            await cat.delete_object(bucket, "b", version_id=None, marker=marker(bucket, "b", 4))
            assert await trash(cat) == {bid(1), bid(2)}
            assert await _r(cat.blob_known(bid(1)))  # queued for deletion: still known
            assert await _r(cat.blob_count()) == 1
            assert await _r(cat.blob_page()) == [(bid(3), 10)]
            # A trashed blob referenced again is saved from the trash.
            await cat.put_version(VersionRecord(meta=meta(bucket, "c", 5), blobs=[BlobRef(bid(2), 20)]))
            assert await trash(cat) == {bid(1)}
            await cat.trash_done([bid(1)])
            assert await trash(cat) == set() and not await _r(cat.blob_known(bid(1)))
            # trash_add: blobs written but never published; a referenced one is never queued.
            await cat.trash_add([bid(7), bid(8), bid(3)])
            assert await trash(cat) == {bid(7), bid(8)}
            assert len(await _r(cat.trash_batch(1))) == 1
            await cat.trash_done([bid(7), bid(8), bid(9)])  # an id not there is fine
            assert await trash(cat) == set()
            assert await _r(cat.blob_known(bid(3)))

        run(catalog, body)

    def test_a_copy_onto_itself_keeps_its_blobs(self, catalog: CatalogFactory) -> None:
        """An unversioned copy of a key onto itself (new metadata) shares the blobs it replaces:
        the new reference is taken before the old one is dropped, so nothing goes to the trash."""

        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            await put(cat, bucket, "k", 1)
            itself = VersionRecord(meta=meta(bucket, "k", 2), blobs=[BlobRef(bid(1), 10)])
            await cat.put_version(itself, shared_gone=lambda: NoSuchKey(resource="k"))
            got = await _r(cat.get_latest(bucket, "k"))
            assert got is not None and got.meta.etag == etag(2) and got.blobs == [BlobRef(bid(1), 10)]
            assert await trash(cat) == set() and await _r(cat.blob_known(bid(1)))
            await cat.delete_object(bucket, "k", version_id=None, marker=marker(bucket, "k", 3))
            assert await trash(cat) == {bid(1)}

        run(catalog, body)

    def test_blob_page_walks_every_blob_once(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            ids = random.Random(SEED + 3).sample(range(1, 10_000), 23)
            for n in ids:
                await put(cat, bucket, f"k{n}", n)
            seen: list[tuple[str, int]] = []
            while page := await _r(cat.blob_page(seen[-1][0] if seen else "", 5)):
                assert len(page) <= 5
                seen += page
            assert seen == sorted((bid(n), 10) for n in ids)
            assert await _r(cat.blob_count()) == len(ids)

        run(catalog, body)


class UploadContract(_Contract):
    """Multipart uploads: create, list, parts, abort, the stale sweep, completion."""

    def test_upload_round_trip_and_listing(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            full = upload(
                bucket, "dir/ü", 1, headers={"content-type": "image/png"}, user_meta={"a": "é"},
                checksum_algorithm="crc32c", checksum_type="COMPOSITE", storage_class="STANDARD_IA",
                encryption={"kind": "SSE-KMS", "kid": "k1", "wrapped": "AAAA"},
            )  # fmt: skip
            await cat.create_upload(full)
            assert await _r(cat.get_upload(bucket, "dir/ü", full.upload_id)) == full
            for wrong in ((bucket, "dir/u"), ("other", "dir/ü")):
                with pytest.raises(NoSuchUpload):
                    await _r(cat.get_upload(*wrong, full.upload_id))
            with pytest.raises(NoSuchUpload):
                await _r(cat.get_upload(bucket, "dir/ü", "f" * 32))
            with pytest.raises(NoSuchBucket):
                await cat.create_upload(upload("nope", "k", 2))
            # several uploads of one key, and keys in byte order
            uploads = [full]
            for n, key in [(5, "a"), (3, "a"), (4, "a/"), (6, "a.b"), (7, "\U0010ffff"), (8, "a0")]:
                uploads.append(upload(bucket, key, n))
                await cat.create_upload(uploads[-1])
            want = sorted(uploads, key=lambda u: (u.key.encode(), u.upload_id))
            assert await _r(cat.list_uploads(bucket, b"", "", 1000)) == want
            got: list[UploadInfo] = []
            while page := await _r(cat.list_uploads(bucket, got[-1].key.encode() if got else b"",
                                                    got[-1].upload_id if got else "", 2)):  # fmt: skip
                got += page
            assert got == want
            assert await _r(cat.list_uploads("other", b"", "", 1000)) == []

        run(catalog, body)

    def test_parts_replace_page_and_abort(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            up = upload(bucket, "k", 1)
            await cat.create_upload(up)
            assert await _r(cat.list_parts(up.upload_id)) == []
            for number in (3, 1, 2, 10_000, 7):
                await cat.put_part(up.upload_id, part(number, number))
            encrypted = part(5, 5, nonce_prefix="AAECAwQFBgc=", stored_bytes=5 * MIB + 16)
            await cat.put_part(up.upload_id, encrypted)
            parts = await _r(cat.list_parts(up.upload_id))
            assert [p.part_number for p in parts] == [1, 2, 3, 5, 7, 10_000]
            assert parts[0] == part(1, 1)
            assert parts[3] == part(5, 5, nonce_prefix="AAECAwQFBgc=")  # stored_bytes is not kept
            assert await _r(cat.blob_known(bid(5, "part")))
            # a part uploaded again replaces the old one, whose blob goes to the trash
            await cat.put_part(up.upload_id, part(2, 22, size_bytes=123))
            assert (await _r(cat.list_parts(up.upload_id, 1, 1))) == [part(2, 22, size_bytes=123)]
            assert await trash(cat) == {bid(2, "part")}
            assert [p.part_number for p in await _r(cat.list_parts(up.upload_id, 3, 2))] == [5, 7]
            assert await _r(cat.list_parts(up.upload_id, 10_000)) == []
            with pytest.raises(NoSuchUpload):
                await cat.put_part("f" * 32, part(1, 99))
            assert not await _r(cat.blob_known(bid(99, "part")))
            # abort: the upload and its parts go, every part's blob to the trash
            await cat.abort_upload(up.upload_id)
            with pytest.raises(NoSuchUpload):
                await _r(cat.get_upload(bucket, "k", up.upload_id))
            with pytest.raises(NoSuchUpload):
                await cat.abort_upload(up.upload_id)
            assert await _r(cat.list_parts(up.upload_id)) == []
            assert await trash(cat) == {bid(n, "part") for n in (1, 2, 3, 5, 7, 10_000, 22)}

        run(catalog, body)

    def test_abort_uploads_before_claims_each_once(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            async with catalog() as a, catalog() as b:
                bucket = await new_bucket(a)
                for n in range(1, 21):
                    await a.create_upload(upload(bucket, f"k{n % 3}", n))
                    await a.put_part(f"{n:032x}", part(1, n))
                # two gateways sweep at once: every old upload is aborted by exactly one of them
                got = await asyncio.gather(*(c.abort_uploads_before(BASE_NS + 17, 4) for c in (a, b, a, b, a, b)))
                claimed = [u.upload_id for batch in got for u in batch]
                assert sorted(claimed) == [f"{n:032x}" for n in range(1, 17)]
                for batch in got:
                    assert [u.initiated_ns for u in batch] == sorted(u.initiated_ns for u in batch)
                assert await a.abort_uploads_before(BASE_NS + 17, 4) == []
                left = await _r(b.list_uploads(bucket, b"", "", 1000))
                assert sorted(u.upload_id for u in left) == [f"{n:032x}" for n in range(17, 21)]
                assert await trash(a) == {bid(n, "part") for n in range(1, 17)}

        asyncio.run(main())

    def test_complete_upload(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat, versioning="Enabled")
            up = upload(bucket, "k", 1)
            await cat.create_upload(up)
            for number in (1, 2, 3):
                await cat.put_part(up.upload_id, part(number, 10 + number))
            encryption = {"kind": "SSE-S3", "alg": "AES256", "secret": "x"}
            m = meta(bucket, "k", 20, size_bytes=10 * MIB, checksums={"crc32c": "abc=-2"}, checksum_type="COMPOSITE",
                     parts=[5 * MIB, 5 * MIB], encryption=encryption)  # fmt: skip
            chosen = [BlobRef(bid(11, "part"), 5 * MIB), BlobRef(bid(13, "part"), 5 * MIB)]

            def refuse(current: VersionRecord | None) -> None:
                raise PreconditionFailed(resource="k")

            with pytest.raises(PreconditionFailed):  # nothing happens: the upload is still there
                await cat.complete_upload(up.upload_id, VersionRecord(meta=m, blobs=chosen), check=refuse)
            assert len(await _r(cat.list_parts(up.upload_id))) == 3
            assert await _r(cat.completed_upload(bucket, "k", up.upload_id)) is None
            version_id = await cat.complete_upload(up.upload_id, VersionRecord(meta=m, blobs=chosen),
                                                   parts_fingerprint="fp1", forget_before_ns=0)  # fmt: skip
            assert version_id == vid(20)
            got = await _r(cat.get_latest(bucket, "k"))
            assert got is not None and got.blobs == chosen and got.meta.parts == m.parts
            # the chosen parts' blobs belong to the version now; the unchosen one is trashed
            assert await trash(cat) == {bid(12, "part")}
            with pytest.raises(NoSuchUpload):
                await _r(cat.get_upload(bucket, "k", up.upload_id))
            assert await _r(cat.list_uploads(bucket, b"", "", 1000)) == []
            fingerprint, done = await _r(cat.completed_upload(bucket, "k", up.upload_id))
            assert fingerprint == "fp1"
            assert (done.bucket, done.key, done.version_id, done.size_bytes, done.etag, done.modified_ns) == (
                bucket, "k", vid(20), 10 * MIB, etag(20), BASE_NS + 20)  # fmt: skip
            assert (done.checksums, done.checksum_type, done.parts) == ({"crc32c": "abc=-2"}, "COMPOSITE", m.parts)
            assert done.encryption == {"kind": "SSE-S3", "alg": "AES256"}  # what an answer echoes, no more
            assert await _r(cat.completed_upload(bucket, "other", up.upload_id)) is None
            # completing again (a retry the engine did not catch) finds no upload
            with pytest.raises(NoSuchUpload):
                await cat.complete_upload(up.upload_id, VersionRecord(meta=meta(bucket, "k", 21), blobs=chosen))
            # completions from before forget_before_ns are forgotten by the next completion
            up2 = upload(bucket, "k2", 2)
            await cat.create_upload(up2)
            await cat.put_part(up2.upload_id, part(1, 30))
            m2 = meta(bucket, "k2", 31, size_bytes=5 * MIB)
            rec2 = VersionRecord(meta=m2, blobs=[BlobRef(bid(30, "part"), 5 * MIB)])
            await cat.complete_upload(up2.upload_id, rec2, parts_fingerprint="fp2", forget_before_ns=BASE_NS + 21)
            assert await _r(cat.completed_upload(bucket, "k", up.upload_id)) is None
            assert (await _r(cat.completed_upload(bucket, "k2", up2.upload_id)))[0] == "fp2"

        run(catalog, body)

    def test_deleting_a_bucket_aborts_its_uploads(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            done = upload(bucket, "done", 2)
            await cat.create_upload(done)
            await cat.put_part(done.upload_id, part(1, 2))
            rec = VersionRecord(meta=meta(bucket, "done", 3), blobs=[BlobRef(bid(2, "part"), 5 * MIB)])
            await cat.complete_upload(done.upload_id, rec, parts_fingerprint="fp")
            await cat.delete_object(bucket, "done", version_id=None, marker=marker(bucket, "done", 4))
            up = upload(bucket, "k", 1)
            await cat.create_upload(up)
            await cat.put_part(up.upload_id, part(1, 1))
            await cat.delete_bucket(bucket)
            with pytest.raises(NoSuchUpload):
                await cat.put_part(up.upload_id, part(2, 5))
            assert await trash(cat) == {bid(1, "part"), bid(2, "part")}
            await new_bucket(cat)  # the same name again: nothing of the old bucket's uploads
            assert await _r(cat.list_uploads(bucket, b"", "", 1000)) == []
            assert await _r(cat.completed_upload(bucket, "done", done.upload_id)) is None

        run(catalog, body)


class DatasetContract(_Contract):
    """Dataset and model versions, their pins, model aliases."""

    def test_datasets_pin_what_they_read(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            await put(cat, bucket, "big", 1)
            small = record(bucket, "small", 2, inline=b"tiny")
            await cat.put_version(small)
            assert small.inline_id is not None
            assert await _r(cat.next_dataset_version("ds")) == 1
            assert await _r(cat.get_dataset("ds")) is None
            ds1 = dataset("ds", 1, 1)
            await cat.create_dataset(ds1, [bid(1)], [small.inline_id])
            assert await _r(cat.get_dataset("ds")) == ds1
            assert await _r(cat.get_dataset("ds", 1)) == ds1
            assert await _r(cat.blob_known(ds1.manifest_blob))
            with pytest.raises(VersionTaken):
                await cat.create_dataset(dataset("ds", 1, 2), [], [])
            with pytest.raises(VersionTaken):
                await cat.create_dataset(dataset("ds", 3, 2), [], [])
            with pytest.raises(PinGone):  # a pin on bytes already gone refuses the whole publish
                await cat.create_dataset(dataset("ds", 2, 2), [bid(1), bid(77)], [])
            with pytest.raises(PinGone):
                await cat.create_dataset(dataset("ds", 2, 2), [], ["e" * 32])
            assert not await _r(cat.blob_known(bid(2, "manifest")))
            ds2 = dataset("ds", 2, 2, info={})
            await cat.create_dataset(ds2, [], [])
            other = dataset("a-ds", 1, 3)
            await cat.create_dataset(other, [bid(1)], [])
            assert await _r(cat.next_dataset_version("ds")) == 3
            assert await _r(cat.get_dataset("ds")) == ds2
            assert await _r(cat.list_datasets()) == [other, ds1, ds2]
            assert await _r(cat.list_datasets("ds")) == [ds1, ds2]
            # The pinned bytes outlive their versions...
            await cat.delete_object(bucket, "big", version_id=None, marker=marker(bucket, "big", 3))
            await cat.delete_object(bucket, "small", version_id=None, marker=marker(bucket, "small", 4))
            assert await trash(cat) == set()
            assert await _r(cat.inline_bodies([small.inline_id])) == {small.inline_id: b"tiny"}
            # ...until the last dataset version reading them goes.
            await cat.delete_dataset("ds", 1, [bid(1)], [small.inline_id])
            assert await _r(cat.inline_bodies([small.inline_id])) == {}
            assert await trash(cat) == {bid(1, "manifest")}
            await cat.delete_dataset("a-ds", 1, [bid(1)], [])
            assert await trash(cat) == {bid(1, "manifest"), bid(3, "manifest"), bid(1)}
            with pytest.raises(NoSuchDataset):
                await cat.delete_dataset("ds", 1, [], [])
            assert await _r(cat.list_datasets()) == [ds2]
            assert await _r(cat.get_dataset("ds", 1)) is None

        run(catalog, body)

    def test_manifest_rows(self, catalog: CatalogFactory) -> None:
        """The rows a dataset manifest is built from: live latest versions under a prefix, in
        byte order, with the metadata document and the blob list as JSON text."""

        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat, versioning="Enabled")
            encryption = {"kind": "SSE-S3", "alg": "AES256", "dk": "d2sK"}
            await cat.put_version(record(bucket, "ds/a", 1, user_meta={"label": "cat"}, tags={"split": "train"}))
            small = record(bucket, "ds/b", 2, inline=b"tiny")
            await cat.put_version(small)
            await cat.put_version(record(bucket, "ds/c", 3, encryption=encryption, parts=[5, 5]))
            await put(cat, bucket, "ds/d", 4)
            await cat.delete_object(bucket, "ds/d", version_id=None, marker=marker(bucket, "ds/d", 5))
            for n, key in [(6, "ds/"), (7, "ds0"), (8, "dr"), (9, "ds/e"), (10, "ds/e"), (11, "ds/\U0010ffff")]:
                await put(cat, bucket, key, n)
            rows = await _r(cat.manifest_rows(bucket, b"ds/", None, 1000))
            got = {bytes(r[0]).decode(): tuple(r[1:]) for r in rows}
            assert [bytes(r[0]) for r in rows] == [b"ds/", b"ds/a", b"ds/b", b"ds/c", b"ds/e", "ds/\U0010ffff".encode()]
            version_id, size, tag, meta_s, blobs_s, inline_id = got["ds/a"]
            assert (version_id, size, tag, inline_id) == (vid(1), 10, etag(1), None)
            doc = json.loads(meta_s)
            assert (doc.get("u"), doc.get("t")) == ({"label": "cat"}, {"split": "train"})
            assert json.loads(blobs_s) == [[bid(1), 10]]
            version_id, size, _tag, _meta_s, blobs_s, inline_id = got["ds/b"]
            assert (version_id, size, inline_id, json.loads(blobs_s)) == (vid(2), 4, small.inline_id, [])
            _version_id, _size, _tag, meta_s, _blobs_s, _inline_id = got["ds/c"]
            assert (json.loads(meta_s).get("e"), json.loads(meta_s).get("p")) == (encryption, [5, 5])
            assert got["ds/e"][:2] == (vid(10), 10)
            # The engine spots encrypted rows by their text before parsing any (engine/_datasets.py
            # _ENCRYPTED): the document is compact JSON, as json.dumps(separators=(",", ":")) writes it.
            assert {key for key, row in got.items() if '"e":{' in row[3]} == {"ds/c"}
            page = await _r(cat.manifest_rows(bucket, b"ds/", b"ds/a", 2))
            assert [bytes(r[0]) for r in page] == [b"ds/b", b"ds/c"]
            assert await _r(cat.manifest_rows(bucket, b"nothing/", None, 10)) == []

        run(catalog, body)

    def test_models_and_aliases(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            bucket = await new_bucket(cat)
            await put(cat, bucket, "ckpt", 1)
            m1, m2 = dataset("m", 1, 1), dataset("m", 2, 2)
            await cat.create_dataset(m1, [bid(1)], [], table="models")
            await cat.create_dataset(m2, [], [], table="models")
            assert await _r(cat.list_datasets()) == []  # models and datasets are separate
            assert await _r(cat.list_datasets(table="models")) == [m1, m2]
            assert await _r(cat.get_dataset("m", table="models")) == m2
            assert await _r(cat.next_dataset_version("m", table="models")) == 3
            assert await _r(cat.next_dataset_version("m")) == 1
            assert await cat.set_model_alias("m", "prod", 1, BASE_NS + 1) is None
            assert await cat.set_model_alias("m", "canary", 2, BASE_NS + 2) is None
            assert await _r(cat.model_alias("m", "prod")) == 1
            assert await _r(cat.model_alias("m", "nope")) is None
            with pytest.raises(NoSuchModel):
                await cat.set_model_alias("m", "prod", 9, BASE_NS + 3)
            assert await _r(cat.model_alias("m", "prod")) == 1
            with pytest.raises(ModelAliasInUse) as refused:
                await cat.delete_dataset("m", 1, [bid(1)], [], table="models")
            assert refused.value.aliases == ["prod"]
            assert await cat.set_model_alias("m", "prod", 2, BASE_NS + 4) == 1  # moved
            assert await _r(cat.model_aliases()) == [("m", "canary", 2, BASE_NS + 2), ("m", "prod", 2, BASE_NS + 4)]
            assert await _r(cat.model_aliases("m")) == await _r(cat.model_aliases())
            assert await _r(cat.model_aliases("x")) == []
            await cat.delete_dataset("m", 1, [bid(1)], [], table="models")
            await cat.delete_object(bucket, "ckpt", version_id=None, marker=marker(bucket, "ckpt", 2))
            assert await trash(cat) == {bid(1, "manifest"), bid(1)}
            assert await cat.delete_model_alias("m", "canary") == 2
            with pytest.raises(NoSuchModel):
                await cat.delete_model_alias("m", "canary")
            with pytest.raises(NoSuchModel):
                await cat.delete_dataset("m", 1, [], [], table="models")
            assert await _r(cat.model_aliases()) == [("m", "prod", 2, BASE_NS + 4)]

        run(catalog, body)


class ConcurrencyContract(_Contract):
    """Writes through two open catalogs (two gateways on one store) at once: nothing lost, one
    winner where only one may win, exactly one latest version per key."""

    def test_concurrent_versions_of_a_key_keep_one_latest(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            async with catalog() as a, catalog() as b:
                bucket = await new_bucket(a, versioning="Enabled")
                writes = []
                for n in range(1, 41):
                    cat, key = (a if n % 2 else b), ("k" if n % 3 else "k/")
                    if n % 5 == 0:
                        writes.append(cat.delete_object(bucket, key, version_id=None, marker=marker(bucket, key, n)))
                    else:
                        writes.append(put(cat, bucket, key, n))
                await asyncio.gather(*writes)
                for cat in (a, b):
                    rows = await _r(cat.scan_versions(bucket, b"", None, b"\xff", 1000))
                    assert sorted(r.meta.version_id for r, _s, _l in rows) == [vid(n) for n in range(1, 41)]
                    for key in ("k", "k/"):
                        mine = [(r.meta.version_id, seq, latest) for r, seq, latest in rows if r.meta.key == key]
                        assert [latest for _v, _s, latest in mine] == [True] + [False] * (len(mine) - 1), key
                        seqs = [seq for _v, seq, _l in mine]
                        assert seqs == sorted(set(seqs), reverse=True), key  # distinct, newest first
                        assert (await _r(cat.get_latest(bucket, key))).meta.version_id == mine[0][0]

        asyncio.run(main())

    def test_concurrent_props_updates_lose_nothing(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            async with catalog() as a, catalog() as b:
                bucket = await new_bucket(a)

                def add(n: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
                    return lambda props: props | {"seen": [*props.get("seen", []), n]}

                await asyncio.gather(*((a if n % 2 else b).update_bucket_props(bucket, add(n)) for n in range(16)))
                assert sorted((await _r(b.bucket_props(bucket)))["seen"]) == list(range(16))

        asyncio.run(main())

    def test_concurrent_creates_have_one_winner(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            async with catalog() as a, catalog() as b:
                results = await asyncio.gather(
                    *((a if n % 2 else b).create_bucket(BucketInfo("race", BASE_NS + n)) for n in range(8)),
                    return_exceptions=True,
                )
                winners = [n for n, r in enumerate(results) if r is None]
                assert len(winners) == 1, results
                assert all(isinstance(r, BucketAlreadyOwnedByYou) for r in results if r is not None), results
                assert await _r(b.get_bucket("race")) == BucketInfo("race", BASE_NS + winners[0])
                results = await asyncio.gather(
                    *((a if n % 2 else b).create_dataset(dataset("ds", 1, n), [], []) for n in range(8)),
                    return_exceptions=True,
                )
                winners = [n for n, r in enumerate(results) if r is None]
                assert len(winners) == 1, results
                assert all(isinstance(r, VersionTaken) for r in results if r is not None), results
                assert await _r(a.get_dataset("ds")) == dataset("ds", 1, winners[0])
                known = [await _r(a.blob_known(bid(n, "manifest"))) for n in range(8)]
                assert known == [n in winners for n in range(8)]

        asyncio.run(main())

    def test_concurrent_uploads_of_one_part_keep_one(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            async with catalog() as a, catalog() as b:
                bucket = await new_bucket(a)
                up = upload(bucket, "k", 1)
                await a.create_upload(up)
                await asyncio.gather(*((a if n % 2 else b).put_part(up.upload_id, part(1, n)) for n in range(8)))
                (kept,) = await _r(b.list_parts(up.upload_id))
                assert kept.blob_id in {bid(n, "part") for n in range(8)}
                assert await trash(a) == {bid(n, "part") for n in range(8)} - {kept.blob_id}
                await b.abort_upload(up.upload_id)
                assert await trash(a) == {bid(n, "part") for n in range(8)}

        asyncio.run(main())


class QueryContract(_Contract):
    """Metadata queries (docs/query.md) over the current versions: one language, the same answers
    whatever dialect it compiles to."""

    QUERIES: ClassVar[list[tuple[str, list[str]]]] = [
        ("", ["ckpt/a", "ckpt/b", "ckpt/c", "ckpt/d", "data/x", "data/é", "over"]),
        ("meta.epoch < 10", ["ckpt/a", "ckpt/c", "over"]),  # 'abc' < '10' is false as text
        ("meta.epoch > 9", ["ckpt/b", "ckpt/c", "ckpt/d"]),  # 'abc' > '9' as text
        ("meta.epoch = '10.0'", ["ckpt/b"]),  # a quoted number is a number
        ("meta.epoch < 'a'", ["ckpt/a", "ckpt/b", "ckpt/c", "over"]),  # a text literal: all text
        ("tag.status = 'tested'", ["ckpt/a", "ckpt/d"]),
        ("tag.status != 'tested'", ["ckpt/b"]),
        ("NOT tag.status = 'tested'", ["ckpt/b", "ckpt/c", "data/x", "data/é", "over"]),
        ("tag.status IS NULL AND key STARTS WITH 'ckpt/'", ["ckpt/c"]),
        ("tag.\"team name\" IN ('vision', 'speech') OR meta.loss >= 0.5", ["ckpt/a", "ckpt/d"]),
        ("content_type = 'application/x-tar' AND size > 1e9", ["data/é"]),
        ("storage_class IN ('GLACIER', 'STANDARD_IA')", ["data/é"]),
        ("key LIKE 'data/_'", ["data/x", "data/é"]),  # é is one code point
        ("key >= 'ckpt/c' AND key < 'data/é'", ["ckpt/c", "ckpt/d", "data/x"]),
        (f"etag = '{2:032x}'", ["ckpt/b"]),
        ("modified >= 1780000050", ["data/x", "data/é"]),
        ("meta.dataset = 'imagenet@3' ORDER BY size DESC", ["data/é", "data/x"]),
        ("key STARTS WITH 'ckpt/' ORDER BY meta.loss DESC", ["ckpt/d", "ckpt/a", "ckpt/b", "ckpt/c"]),
        # numbers by value, then text, then absent (ties by key)
        ("ORDER BY meta.epoch", ["over", "ckpt/a", "ckpt/c", "ckpt/b", "ckpt/d", "data/x", "data/é"]),
        ("ORDER BY meta.epoch DESC", ["ckpt/b", "ckpt/c", "ckpt/a", "over", "ckpt/d", "data/x", "data/é"]),
    ]

    def test_queries_and_pages(self, catalog: CatalogFactory) -> None:
        objects: list[tuple[str, dict[str, Any]]] = [
            ("ckpt/a", {"user_meta": {"epoch": "9", "loss": "0.5"}, "tags": {"status": "tested"}}),
            ("ckpt/b", {"user_meta": {"epoch": "10", "loss": "0.25"}, "tags": {"status": "failed"}}),
            ("ckpt/c", {"user_meta": {"epoch": "9.5"}}),
            ("ckpt/d", {"user_meta": {"epoch": "abc", "loss": "0.75"},
                        "tags": {"status": "tested", "team name": "vision"}}),
            ("data/é", {"user_meta": {"dataset": "imagenet@3"}, "headers": {"content-type": "application/x-tar"},
                        "storage_class": "GLACIER", "size_bytes": 10**10}),
            ("data/x", {"user_meta": {"dataset": "imagenet@3"}, "headers": {"content-type": "application/x-tar"}}),
            ("gone", {"user_meta": {"epoch": "1"}}),
            ("over", {"user_meta": {"epoch": "1"}, "tags": {"status": "tested"}}),
            ("over", {"user_meta": {"epoch": "2"}}),  # the current version: the old one is not queried
        ]  # fmt: skip

        async def query(cat: Cat, text: str, cursor: str | None = None) -> tuple[list[str], str | None]:
            records, next_cursor = await _r(cat.query("q", text, cursor))
            return [r.meta.key for r in records], next_cursor

        async def body(cat: Cat) -> None:
            await new_bucket(cat, "q", versioning="Enabled")
            for n, (key, fields) in enumerate(objects, 1):
                rec = VersionRecord(meta=meta("q", key, n, **fields), blobs=[BlobRef(bid(n), 10)])
                if key.startswith("data/"):
                    rec.meta.modified_ns = BASE_NS + 100 * 10**9  # 100 s later
                await cat.put_version(rec)
            await cat.delete_object("q", "gone", version_id=None, marker=marker("q", "gone", 20))
            for text, want in self.QUERIES:
                assert await query(cat, text) == (want, None), text
            # pages by key set: every object once, in order, whatever the page size
            full, _ = await query(cat, "ORDER BY meta.epoch DESC")
            got: list[str] = []
            cursor = None
            for page_size in (2, 1, 3, 2, 5):
                keys, cursor = await query(cat, f"ORDER BY meta.epoch DESC LIMIT {page_size}", cursor)
                got += keys
                if cursor is None:
                    break
            assert got == full and cursor is None
            # the index follows every change of a current version, in the same transaction
            def tag(rec: VersionRecord) -> None:
                rec.meta.tags = {"status": "tested"}

            await cat.update_version_meta("q", "ckpt/c", None, tag)
            await cat.delete_object("q", "ckpt/a", version_id=None, marker=marker("q", "ckpt/a", 21))
            assert await query(cat, "tag.status = 'tested'") == (["ckpt/c", "ckpt/d"], None)
            await cat.delete_object("q", "ckpt/a", version_id=vid(21), marker=marker("q", "ckpt/a", 22))
            assert await query(cat, "tag.status = 'tested'") == (["ckpt/a", "ckpt/c", "ckpt/d"], None)
            with pytest.raises(InvalidQuery):
                await query(cat, "tag.status = ")

        run(catalog, body)


class StatsContract(_Contract):
    """What health probes and metrics read: usage per bucket, the bucket count, a write probe."""

    def test_bucket_usage_and_probe(self, catalog: CatalogFactory) -> None:
        async def body(cat: Cat) -> None:
            assert await _r(cat.bucket_usage(10)) == [] and await _r(cat.bucket_count()) == 0
            await cat.probe_write()  # a write could commit now; it changes nothing
            a = await new_bucket(cat, "a1", versioning="Enabled")
            await new_bucket(cat, "b2")
            await put(cat, a, "k", 1)
            await cat.put_version(record(a, "k", 2, inline=b"four"))
            await put(cat, a, "j", 3)
            await cat.delete_object(a, "j", version_id=None, marker=marker(a, "j", 4))
            # (bucket, objects, object bytes, versions, delete markers, stored bytes of every version)
            assert await _r(cat.bucket_usage(10)) == [("a1", 1, 4, 4, 1, 24), ("b2", 0, 0, 0, 0, 0)]
            assert await _r(cat.bucket_usage(1)) == [("a1", 1, 4, 4, 1, 24)]
            assert await _r(cat.bucket_count()) == 2
            await cat.probe_write()
            assert await _r(cat.bucket_usage(10)) == [("a1", 1, 4, 4, 1, 24), ("b2", 0, 0, 0, 0, 0)]

        run(catalog, body)


SECOND_NS = 10**9


class LeaseContract(_Contract):
    """The gateway registry and leases (docs/scale-out.md "Background work"), through two open
    catalogs (two gateways): claims at once take disjoint items, an expired lease is taken over,
    the old owner's fenced finish does nothing, a heartbeat keeps a lease."""

    def test_gateways_register_heartbeat_and_go(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            async with catalog() as a, catalog() as b:
                await a.gateway_register(GatewayInfo("gw-a", "host-1", 11, BASE_NS, BASE_NS))
                await b.gateway_register(GatewayInfo("gw-b", "host-2", 22, BASE_NS + 1, BASE_NS + 1))
                for cat in (a, b):
                    assert [g.id for g in await cat.gateway_list()] == ["gw-a", "gw-b"]
                assert await b.gateway_seen("gw-b", BASE_NS + 30 * SECOND_NS)
                live = await a.gateway_list(seen_after_ns=BASE_NS + 10 * SECOND_NS)  # gw-a missed its beats
                assert live == [GatewayInfo("gw-b", "host-2", 22, BASE_NS + 1, BASE_NS + 30 * SECOND_NS)]
                await a.gateway_forget("gw-a")
                assert not await a.gateway_seen("gw-a", BASE_NS + 31 * SECOND_NS)  # gone: register again
                assert [g.id for g in await b.gateway_list()] == ["gw-b"]
                # A registration unseen for a day goes when another gateway registers.
                later = BASE_NS + 2 * 86_400 * SECOND_NS
                await a.gateway_register(GatewayInfo("gw-a", "host-1", 12, later, later))
                assert [g.id for g in await b.gateway_list()] == ["gw-a"]

        asyncio.run(main())

    def test_a_job_lease_is_exclusive_renewed_taken_over_and_fenced(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            lease = 60 * SECOND_NS
            async with catalog() as a, catalog() as b:
                assert await a.job_get("scrub") is None
                got = await a.job_claim("scrub", "gw-a", BASE_NS, lease)
                assert got is not None and (got.owner, got.lease_until_ns, got.cursor) == ("gw-a", BASE_NS + lease, "")
                assert await b.job_claim("scrub", "gw-b", BASE_NS + 1, lease) is None  # held: never waits
                assert await a.job_claim("scrub", "gw-a", BASE_NS + 2, lease) is not None  # its own: kept
                # The heartbeat keeps it past the first lease's end, and saves the cursor.
                assert await a.job_renew("scrub", "gw-a", BASE_NS + 50 * SECOND_NS, lease, "blob-0042")
                assert await b.job_claim("scrub", "gw-b", BASE_NS + 70 * SECOND_NS, lease) is None
                held = await b.job_get("scrub")
                assert held is not None and (held.owner, held.cursor) == ("gw-a", "blob-0042")
                # gw-a stops beating: its lease runs out and gw-b resumes at the cursor.
                took = await b.job_claim("scrub", "gw-b", BASE_NS + 111 * SECOND_NS, lease)
                assert took is not None and (took.owner, took.cursor) == ("gw-b", "blob-0042")
                assert not await a.job_renew("scrub", "gw-a", BASE_NS + 112 * SECOND_NS, lease, "blob-0099")
                assert not await a.job_release("scrub", "gw-a", "blob-0099")  # fenced: nothing changed
                now = await a.job_get("scrub")
                assert now is not None and (now.owner, now.cursor) == ("gw-b", "blob-0042")
                assert await b.job_release("scrub", "gw-b", "")
                again = await a.job_claim("scrub", "gw-a", BASE_NS + 113 * SECOND_NS, lease)
                assert again is not None and again.cursor == ""
                assert await b.job_claim("other", "gw-b", BASE_NS, lease) is not None  # jobs are independent

        asyncio.run(main())

    def test_trash_claims_are_disjoint_expire_and_finish_fenced(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            lease = 60 * SECOND_NS
            async with catalog() as a, catalog() as b:
                ids = [bid(n) for n in range(1, 41)]
                await a.trash_add(ids)
                claims = await asyncio.gather(
                    *(cat.trash_claim(f"gw-{i % 2}", BASE_NS, lease, 3) for i, cat in enumerate([a, b] * 6))
                )
                taken = [blob for claim in claims for blob in claim]
                assert sorted(taken) == sorted(set(taken)) and len(taken) == 36  # 12 claims of 3, none twice
                rest = await b.trash_claim("gw-1", BASE_NS + 1, lease, 100)
                assert sorted(rest + taken) == sorted(ids)
                assert await a.trash_claim("gw-0", BASE_NS + 2, lease, 100) == []  # all leased
                # A failed delete hands its rows back (only the holder can): claimable again at once.
                assert await a.trash_release("gw-0", rest) == 0
                assert await b.trash_release("gw-1", rest) == len(rest)
                assert sorted(await a.trash_claim("gw-1", BASE_NS + 3, lease, 100)) == sorted(rest)
                mine = [blob for i, claim in enumerate(claims) if i % 2 == 0 for blob in claim]  # gw-0's
                # Every lease runs out: gw-1 takes all the rows; gw-0's finish then drops nothing.
                over = await b.trash_claim("gw-1", BASE_NS + lease + 10, lease, 100)
                assert sorted(over) == sorted(ids)
                assert await a.trash_finish("gw-0", mine) == 0
                assert await trash(a) == set(ids)
                assert await b.trash_finish("gw-1", ids) == len(ids)
                assert await trash(a) == set()

        asyncio.run(main())

    def test_outbox_claims_are_disjoint_expire_and_finish_fenced(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            lease = 60 * SECOND_NS
            async with catalog() as a, catalog() as b:
                ids = [bid(n, "r") for n in range(1, 13)]
                await a.outbox_add("COLD", ids)
                first, second = await asyncio.gather(
                    a.outbox_claim("gw-a", BASE_NS, lease, 6), b.outbox_claim("gw-b", BASE_NS, lease, 6)
                )
                assert len(first) == len(second) == 6
                assert sorted(e.blob_id for e in first + second) == sorted(ids)
                assert await a.outbox_claim("gw-a", BASE_NS + 1, lease) == []
                assert await a.outbox_finish("gw-a", first[:2]) == 2
                # The tier did not answer for gw-b: requeued (one attempt more) and free again at once.
                assert await b.outbox_requeue("gw-b", second[:3], lambda attempts: BASE_NS + attempts) == 3
                again = await a.outbox_claim("gw-a", BASE_NS + 5, lease)
                assert sorted(e.blob_id for e in again) == sorted(e.blob_id for e in second[:3])
                assert {e.attempts for e in again} == {1}
                # gw-b's other rows expire; gw-a takes them over; gw-b's finish and requeue do nothing.
                taken = await a.outbox_claim("gw-a", BASE_NS + lease + 1, lease)
                assert {e.blob_id for e in taken} == {e.blob_id for e in first[2:] + second[3:]}
                assert await b.outbox_finish("gw-b", second) == 0
                assert await b.outbox_requeue("gw-b", second, lambda attempts: 0) == 0
                assert await a.outbox_finish("gw-a", again + taken) == 10
                assert await a.outbox_claim("gw-a", BASE_NS + 10 * lease, lease) == []

        asyncio.run(main())

    def test_lifecycle_claims_are_disjoint_expire_and_apply_fenced(self, catalog: CatalogFactory) -> None:
        """Lifecycle rows are leased to an owner: a holder whose lease was taken over, or whose row
        a write re-planned, applies and defers nothing; the new holder does."""

        async def main() -> None:
            lease, now = 60 * SECOND_NS, BASE_NS + 100 * SECOND_NS
            async with catalog() as a, catalog() as b:
                for cat in (a, b):
                    cat.lifecycle_planner = _ExpireAfter(SECOND_NS)
                await a.create_bucket(BucketInfo("ruled", BASE_NS, "us-east-1"), {"lifecycle": {"expire": 1}})
                for n in range(1, 9):
                    await put(a, "ruled", f"k{n}", n)
                first, second = await asyncio.gather(
                    a.lifecycle_claim(now, 4, lease, owner="gw-a"), b.lifecycle_claim(now, 4, lease, owner="gw-b")
                )
                assert sorted(r.key for r in first + second) == [f"k{n}" for n in range(1, 9)]  # disjoint
                assert await a.lifecycle_claim(now + 1, 100, lease, owner="gw-a") == []  # all leased
                # gw-b heartbeats its rows past the first lease; gw-a cannot renew gw-b's.
                assert await a.lifecycle_renew(second, "gw-a", now + 2 * lease) == 0
                assert await b.lifecycle_renew(second, "gw-b", now + 2 * lease) == 4
                # gw-a's lease runs out: gw-b takes its rows; gw-a's apply and defer then do nothing.
                later = now + lease + 1
                taken = await b.lifecycle_claim(later, 100, lease, owner="gw-b")
                assert sorted(r.key for r in taken) == sorted(r.key for r in first)
                back, dm = BASE_NS + 10**6, marker("ruled", taken[0].key, 99)  # unversioned: no marker is added
                assert await a.lifecycle_apply(taken[0], later, dm, _unlocked, owner="gw-a") == Outcome()
                assert not await a.lifecycle_defer(taken[1], back, owner="gw-a")
                assert taken[0].key in await live_keys(a, "ruled")
                done = await b.lifecycle_apply(taken[0], later, dm, _unlocked, owner="gw-b")
                assert done == Outcome(done="expire") and taken[0].key not in await live_keys(a, "ruled")
                # A failed action is backed off by its holder only, and free to anyone then.
                assert await b.lifecycle_defer(taken[1], back, owner="gw-b")
                assert [r.key for r in await a.lifecycle_claim(back, 100, lease, owner="gw-a")] == [taken[1].key]
                # A write re-plans a held row: its holder no longer acts on it (the write's plan stands).
                await put(a, "ruled", second[0].key, 50)
                replanned = await b.lifecycle_apply(
                    second[0], now + 2 * lease, marker("ruled", second[0].key, 98), _unlocked, owner="gw-b"
                )
                assert replanned == Outcome() and second[0].key in await live_keys(a, "ruled")
                assert await b.lifecycle_renew(second[:1], "gw-b", now + 3 * lease) == 0

        asyncio.run(main())

    def test_pending_write_claims_are_disjoint_expire_and_finish_fenced(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            lease = 60 * SECOND_NS
            async with catalog() as a, catalog() as b:
                for n in range(12):
                    await a.tier_pending_add("bk", f"k{n:02}", vid(n), "COLD", BASE_NS)
                first, second = await asyncio.gather(
                    a.tier_pending_claim(BASE_NS, 6, lease, owner="gw-a"),
                    b.tier_pending_claim(BASE_NS, 6, lease, owner="gw-b"),
                )
                assert sorted(i.key for i in first + second) == [f"k{n:02}" for n in range(12)]  # disjoint
                assert await a.tier_pending_claim(BASE_NS + 1, 100, lease, owner="gw-a") == []
                assert await a.tier_pending_renew(second, "gw-a", BASE_NS + 2 * lease) == 0
                assert await b.tier_pending_renew(second, "gw-b", BASE_NS + 2 * lease) == 6
                # gw-a's lease runs out: gw-b takes its items; gw-a's done and retry do nothing.
                taken = await b.tier_pending_claim(BASE_NS + lease + 1, 100, lease, owner="gw-b")
                assert sorted(i.key for i in taken) == sorted(i.key for i in first)
                assert not await a.tier_pending_done(taken[0], owner="gw-a")
                assert not await a.tier_pending_retry(taken[1], BASE_NS, owner="gw-a")
                assert await b.tier_pending_done(taken[0], owner="gw-b")
                # A retry (the tier did not answer) is the holder's: one attempt more, free to anyone.
                assert await b.tier_pending_retry(taken[1], BASE_NS + lease + 5, owner="gw-b")
                (again,) = await a.tier_pending_claim(BASE_NS + lease + 5, 100, lease, owner="gw-a")
                assert (again.key, again.attempts) == (taken[1].key, taken[1].attempts + 1)
                assert await a.tier_pending_done(again, owner="gw-a")
                left = await a.tier_pending_claim(BASE_NS + 10 * lease, 100, lease, owner="gw-a")
                assert sorted(i.key for i in left) == sorted(i.key for i in second + taken[2:])

        asyncio.run(main())


    def test_hot_copy_claims_are_owned_and_their_heartbeat_fenced(self, catalog: CatalogFactory) -> None:
        """A claimed copy is its claimer's: the heartbeat (``fenced``) keeps it only while it is,
        another process takes it once the lease ran out, and the old claimer's heartbeat then
        fails (its fill stops); an explicit fill takes the claim (``owner`` without ``fenced``)."""

        async def main() -> None:
            lease = 1000
            async with catalog() as a, catalog() as b:
                await a.create_bucket(BucketInfo("held", BASE_NS, "us-east-1"))
                refs = [BlobRef(bid(n, "cold"), 1, "COLD") for n in range(4)]
                await a.put_version(VersionRecord(meta=meta("held", "k", 1, size_bytes=4), blobs=refs))
                holders = [f"pin:h{n}" for n in range(4)]
                for n, h in enumerate(holders):
                    assert await a.hot_hold(h, [bid(n, "cold")], now_ns=2) == "new"
                first, second = await asyncio.gather(
                    a.hot_claim(10, lease, 2, owner="gw-a"), b.hot_claim(10, lease, 2, owner="gw-b")
                )
                assert sorted(first + second) == holders  # disjoint
                assert await a.hot_claim(11, lease, owner="gw-a") == []
                assert not await a.hot_renew(second[0], 500 + lease, owner="gw-a", fenced=True)  # gw-b's
                for h in second:
                    assert await b.hot_renew(h, 500 + lease, owner="gw-b", fenced=True)
                # gw-a stalls past its lease: gw-b takes its copies; gw-a's heartbeat fails.
                taken = await b.hot_claim(20 + lease, lease, owner="gw-b")
                assert sorted(taken) == sorted(first)
                assert not await a.hot_renew(first[0], 30 + lease, owner="gw-a", fenced=True)
                # An explicit fill takes a claim back; the old owner's heartbeat then fails in turn.
                assert await a.hot_renew(first[0], 40 + lease, owner="gw-a")
                assert not await b.hot_renew(first[0], 50 + lease, owner="gw-b", fenced=True)
                assert await a.hot_renew(first[0], 60 + lease, owner="gw-a", fenced=True)

        asyncio.run(main())

    def test_lease_backlog_counts_the_queues_up_to_a_bound(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            lease = 60 * SECOND_NS
            async with catalog() as a, catalog() as b:
                assert await a.lease_backlog(BASE_NS, 100) == LeaseBacklog(0, 0, 0, 0, 0)
                await a.trash_add([bid(n) for n in range(1, 11)])
                await a.outbox_add("COLD", [bid(n, "r") for n in range(1, 6)])
                assert len(await a.trash_claim("gw-a", BASE_NS, lease, 4)) == 4
                assert len(await b.outbox_claim("gw-b", BASE_NS, lease, 2)) == 2
                assert await a.job_claim("scrub", "gw-a", BASE_NS, lease) is not None
                # Within the leases: 10 trash rows, 3 outbox rows due (2 are leased ahead), none expired.
                assert await b.lease_backlog(BASE_NS + 1, 100) == LeaseBacklog(10, 0, 3, 0, 0)
                # The holders died: every lease ran out unfinished, and the leased rows are due again.
                assert await b.lease_backlog(BASE_NS + lease + 1, 100) == LeaseBacklog(10, 4, 5, 2, 1)
                capped = await b.lease_backlog(BASE_NS + lease + 1, 3)
                assert (capped.trash, capped.outbox_due, capped.outbox_expired) == (3, 3, 2)

        asyncio.run(main())


class _ExpireAfter:
    """A lifecycle planner for the lease cases: every key's current version expires ``after_ns``
    after it was written (the engine's planner is engine/_lifecycle_worker.py's; pure, as it is)."""

    def __init__(self, after_ns: int) -> None:
        self.after_ns = after_ns

    def versions(self, rules: dict[str, Any], key: str, versions: Sequence[KeyVersion]) -> list[PlannedAction]:
        return [PlannedAction(v.version_id, "expire", v.modified_ns + self.after_ns, None) for v in versions[:1]]

    def upload(self, rules: dict[str, Any], key: str, initiated_ns: int) -> int | None:
        return None

    def may_apply(self, rules: dict[str, Any], key: str) -> bool:
        return True


def _unlocked(record: Any, props: dict[str, Any]) -> None:
    """An object-lock guard with nothing locked."""


class ConsoleSessionContract(_Contract):
    """Signed-out console sessions (docs/console.md "Sign-out"): one gateway's sign-out is seen
    by another at once; expired records go when another session signs out."""

    def test_a_sign_out_is_seen_by_every_gateway_until_it_expires(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            async with catalog() as a, catalog() as b:
                assert not await b.console_signed_out("ASIAONE")
                await a.console_sign_out("ASIAONE", 1_000, 900)
                assert await b.console_signed_out("ASIAONE") and await a.console_signed_out("ASIAONE")
                assert not await b.console_signed_out("ASIATWO") and not await b.console_signed_out("ASIAONE2")
                await b.console_sign_out("ASIAONE", 1_000, 950)  # twice: still one record
                await b.console_sign_out("ASIATWO", 5_000, 1_000)  # ASIAONE expired at 1,000: it goes
                assert not await a.console_signed_out("ASIAONE")
                assert await a.console_signed_out("ASIATWO")

        asyncio.run(main())


class CatalogConformance(
    BucketContract,
    VersionContract,
    ConditionalWriteContract,
    ListingContract,
    BlobContract,
    UploadContract,
    DatasetContract,
    ConcurrencyContract,
    QueryContract,
    StatsContract,
    LeaseContract,
    ConsoleSessionContract,
):
    """Every test of the suite. Subclasses provide the ``catalog`` fixture (module docstring); a
    catalog still being built may subclass the parts it has (``BucketContract``, ...) instead."""

    def test_what_was_acknowledged_survives_a_reopen(self, catalog: CatalogFactory) -> None:
        async def main() -> None:
            async with catalog() as cat:
                bucket = await new_bucket(cat, versioning="Enabled")
                await cat.update_bucket_props(bucket, lambda p: p | {"note": "é"})
                await put(cat, bucket, "k", 1)
                small = record(bucket, "s", 2, inline=b"body")
                await cat.put_version(small)
                await cat.create_upload(upload(bucket, "u", 3))
                await cat.put_part(f"{3:032x}", part(1, 4))
                await cat.trash_add([bid(5)])
            async with catalog() as cat:
                assert await _r(cat.bucket_props(bucket)) == {"versioning": "Enabled", "note": "é"}
                assert await all_versions(cat, bucket) == [("k", vid(1), True, False), ("s", vid(2), True, False)]
                got = await _r(cat.get_latest(bucket, "s", data=True))
                assert got is not None and got.inline_data == b"body"
                assert [p.part_number for p in await _r(cat.list_parts(f"{3:032x}"))] == [1]
                assert await trash(cat) == {bid(5)}

        asyncio.run(main())
