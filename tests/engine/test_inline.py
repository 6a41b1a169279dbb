"""Small bodies stored inline in the catalog (docs/inline.md), through ObjectService on a real
SQLite catalog and a real LocalBlobStore (or, for the mirror, a 4-drive erasure set).

The blob store's own listing (``scan``) and the catalog's ``inline`` count say where each
body went; damage is made with SQL on the database file, as bitrot would leave it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tierstore.blob import BlobInfo, ErasureBlobStore, LocalBlobStore, MemoryBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.drives import DriveSet
from tierstore.engine import CopyOptions, LockRequest, ObjectService, Repairer, Retention
from tierstore.engine._service import DEFAULT_INLINE_MAX_BYTES, CompletedPart
from tierstore.errors import (
    AccessDenied,
    BadDigest,
    CorruptBlob,
    EntityTooLarge,
    IncompleteBody,
    NoSuchKey,
    PreconditionFailed,
)
from tierstore.types import ByteRange, ChecksumExpectation, Conditions, GetOptions, PutOptions

B = "inl"
LIMIT = 1000  # a small threshold keeps the boundary tests fast


async def body(data: bytes, piece: int = 300) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


@dataclass
class Env:
    svc: ObjectService
    catalog: SqliteCatalog
    blobs: LocalBlobStore
    db: Path

    def blob_files(self) -> set[str]:
        async def scan() -> set[str]:
            return {i.blob_id async for i in self.blobs.scan()}

        return asyncio.run(scan())

    def inline_rows(self) -> int:
        return asyncio.run(self.catalog.counts())["inline"]

    def run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run(coro)


@contextmanager
def env(tmp_path: Path, limit: int = LIMIT) -> Iterator[Env]:
    catalog = SqliteCatalog(tmp_path / "catalog.db")
    blobs = LocalBlobStore(tmp_path / "data")
    try:
        e = Env(ObjectService(catalog, blobs, inline_max_bytes=limit), catalog, blobs, tmp_path / "catalog.db")
        e.run(e.svc.create_bucket(B))
        yield e
    finally:
        catalog.close()


def put(e: Env, key: str, data: bytes, **kw: object) -> str:
    return e.run(e.svc.put_object(B, key, body(data), PutOptions(**kw))).version_id  # type: ignore[arg-type]


def get(e: Env, key: str, opts: GetOptions | None = None) -> bytes:
    return e.run(e.svc.read_object(B, key, opts))[1]


def test_put_get_head_and_ranges_of_an_inline_object(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3
    with env(tmp_path) as e:
        put(e, "k", data, headers={"content-type": "text/plain"}, user_meta={"a": "1"})
        assert e.blob_files() == set() and e.inline_rows() == 1
        assert get(e, "k") == data
        head = asyncio.run(e.svc.head_object(B, "k"))
        assert head.meta.size_bytes == len(data) and head.meta.etag == f'"{hashlib.md5(data).hexdigest()}"'
        assert head.meta.user_meta == {"a": "1"} and head.meta.headers["content-type"] == "text/plain"
        assert "crc64nvme" in head.meta.checksums
        for first, last in [(0, 0), (5, 99), (700, 767), (0, 767)]:
            got = get(e, "k", GetOptions(byte_range=ByteRange(first, last)))
            assert got == data[first : last + 1]
        assert get(e, "k", GetOptions(byte_range=ByteRange(None, 10))) == data[-10:]
        assert get(e, "k", GetOptions(part_number=1)) == data
        found, _ = asyncio.run(e.svc.query(B, "meta.a = 1"))  # the metadata index knows it
        assert [m.key for m in found] == ["k"]


@pytest.mark.parametrize("piece", [1, 300, 1_000_000])
def test_the_threshold_boundary(tmp_path: Path, piece: int) -> None:
    with env(tmp_path) as e:
        sizes = {"empty": 0, "below": LIMIT - 1, "at": LIMIT, "above": LIMIT + 1, "far": 5 * LIMIT}
        datas = {k: bytes([i + 1]) * n for i, (k, n) in enumerate(sizes.items())}
        for k, d in datas.items():
            e.run(e.svc.put_object(B, k, body(d, piece)))
        assert e.inline_rows() == 3
        records = {k: asyncio.run(e.catalog.get_latest(B, k)) for k in datas}
        for k in ("empty", "below", "at"):
            r = records[k]
            assert r is not None and r.inline_id is not None and r.blobs == []
        for k in ("above", "far"):
            r = records[k]
            assert r is not None and r.inline_id is None and len(r.blobs) == 1
        assert e.blob_files() == {records[k].blobs[0].blob_id for k in ("above", "far")}  # type: ignore[union-attr]
        for k, d in datas.items():
            assert get(e, k) == d


def test_a_declared_length_counts_too(tmp_path: Path) -> None:
    with env(tmp_path) as e:
        put(e, "at", b"x" * LIMIT, content_length=LIMIT)
        put(e, "above", b"x" * (LIMIT + 1), content_length=LIMIT + 1)
        assert e.inline_rows() == 1 and len(e.blob_files()) == 1
        with pytest.raises(IncompleteBody):  # declared small, sent more: refused, nothing stored
            put(e, "lied", b"x" * (LIMIT + 5), content_length=10)
        with pytest.raises(IncompleteBody):
            put(e, "short", b"x" * 10, content_length=20)
        assert e.inline_rows() == 1 and len(e.blob_files()) == 1
        assert asyncio.run(e.catalog.get_latest(B, "lied")) is None


def test_inlining_off(tmp_path: Path) -> None:
    with env(tmp_path, limit=0) as e:
        put(e, "empty", b"")
        put(e, "tiny", b"t")
        assert e.inline_rows() == 0 and len(e.blob_files()) == 2
        assert get(e, "tiny") == b"t" and get(e, "empty") == b""


def test_every_body_check_applies_to_inline_puts(tmp_path: Path) -> None:
    data = b"checked bytes"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    with env(tmp_path) as e:
        put(e, "ok", data, content_md5=md5)
        with pytest.raises(BadDigest):
            put(e, "bad-md5", data, content_md5=base64.b64encode(b"\0" * 16).decode())
        good = ChecksumExpectation("sha256", base64.b64encode(hashlib.sha256(data).digest()).decode())
        put(e, "ok-sha", data, checksum=good)
        assert asyncio.run(e.svc.head_object(B, "ok-sha")).meta.checksums["sha256"] == good.value
        with pytest.raises(BadDigest):
            put(e, "bad-sha", data, checksum=ChecksumExpectation("sha256", base64.b64encode(b"\0" * 32).decode()))
        put(e, "only-new", data, conditions=Conditions(if_none_match="*"))
        with pytest.raises(PreconditionFailed):
            put(e, "only-new", b"other", conditions=Conditions(if_none_match="*"))
        with pytest.raises(PreconditionFailed):
            put(e, "only-new", b"other", conditions=Conditions(if_match='"nope"'))
        etag = asyncio.run(e.svc.head_object(B, "only-new")).meta.etag
        put(e, "only-new", b"replaced", conditions=Conditions(if_match=etag))
        assert get(e, "only-new") == b"replaced"
        assert asyncio.run(e.catalog.get_latest(B, "bad-md5")) is None
        assert asyncio.run(e.catalog.get_latest(B, "bad-sha")) is None
        assert e.inline_rows() == 3 and e.blob_files() == set()


def test_the_size_limit_applies_to_the_buffered_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tierstore.engine._service.MAX_PUT_BYTES", 500)
    with env(tmp_path) as e, pytest.raises(EntityTooLarge):
        put(e, "big", b"x" * 800)  # within the inline threshold, above the size limit
    with env(tmp_path / "2") as e, pytest.raises(EntityTooLarge):
        put(e, "big", b"x" * 5000)  # streaming into a blob
    assert e.blob_files() == set()


def test_overwrite_and_delete_free_the_row_in_the_same_commit(tmp_path: Path) -> None:
    with env(tmp_path) as e:
        put(e, "k", b"one")
        put(e, "k", b"two")  # inline over inline
        assert e.inline_rows() == 1 and get(e, "k") == b"two"
        put(e, "k", b"x" * (LIMIT * 2))  # a blob over inline
        assert e.inline_rows() == 0 and len(e.blob_files()) == 1
        put(e, "k", b"three")  # inline over a blob: the blob goes to the trash
        assert e.inline_rows() == 1 and len(asyncio.run(e.catalog.trash_batch())) == 1
        e.run(e.svc.drain_trash())
        assert e.blob_files() == set()
        e.run(e.svc.delete_object(B, "k"))
        assert e.inline_rows() == 0
        with pytest.raises(NoSuchKey):
            get(e, "k")


def test_versions_keep_their_rows_until_each_version_goes(tmp_path: Path) -> None:
    with env(tmp_path) as e:
        e.run(e.svc.set_bucket_versioning(B, "Enabled"))
        v1 = put(e, "k", b"v1")
        v2 = put(e, "k", b"v2")
        marker = e.run(e.svc.delete_object(B, "k"))
        assert marker.delete_marker and e.inline_rows() == 2
        assert get(e, "k", GetOptions(version_id=v1)) == b"v1"
        assert get(e, "k", GetOptions(version_id=v2)) == b"v2"
        page = asyncio.run(e.svc.list_object_versions(B))
        assert [m.version_id for m, _ in page.versions] == [marker.version_id, v2, v1]
        e.run(e.svc.delete_object(B, "k", version_id=v1))
        assert e.inline_rows() == 1
        e.run(e.svc.delete_object(B, "k", version_id=marker.version_id))
        assert get(e, "k") == b"v2"
        # Suspended: a new null version replaces the old null one, row included.
        e.run(e.svc.set_bucket_versioning(B, "Suspended"))
        put(e, "k", b"null-1")
        put(e, "k", b"null-2")
        assert e.inline_rows() == 2  # v2 and the current null version
        assert get(e, "k") == b"null-2" and get(e, "k", GetOptions(version_id=v2)) == b"v2"


def test_copies_of_inline_objects_are_independent(tmp_path: Path) -> None:
    data = b"copy me" * 20
    with env(tmp_path) as e:
        put(e, "src", data, headers={"content-type": "text/x"})
        e.run(e.svc.copy_object(B, "src", B, "dst"))
        assert e.inline_rows() == 2 and e.blob_files() == set()
        dst, src = asyncio.run(e.catalog.get_latest(B, "dst")), asyncio.run(e.catalog.get_latest(B, "src"))
        assert dst.inline_id != src.inline_id  # type: ignore[union-attr]
        e.run(e.svc.delete_object(B, "src"))
        assert get(e, "dst") == data and e.inline_rows() == 1
        # A copy onto itself with new metadata and a new checksum algorithm.
        opts = CopyOptions(replace_metadata=True, user_meta={"b": "2"}, checksum_algorithm="crc32")
        e.run(e.svc.copy_object(B, "dst", B, "dst", opts))
        meta = asyncio.run(e.svc.head_object(B, "dst")).meta
        assert meta.user_meta == {"b": "2"} and "crc32" in meta.checksums
        assert get(e, "dst") == data and e.inline_rows() == 1
        # An inline source of a multipart part: the part is a blob.
        up = e.run(e.svc.create_multipart_upload(B, "mp"))
        part = e.run(e.svc.upload_part_copy(B, "mp", up.upload_id, 1, B, "dst"))
        e.run(e.svc.complete_multipart_upload(B, "mp", up.upload_id, [CompletedPart(1, part.etag)]))
        assert get(e, "mp") == data and len(e.blob_files()) == 1
        assert asyncio.run(e.catalog.get_latest(B, "mp")).inline_id is None  # type: ignore[union-attr]


def test_multipart_parts_stay_blobs(tmp_path: Path) -> None:
    with env(tmp_path) as e:
        up = e.run(e.svc.create_multipart_upload(B, "mp"))
        part = e.run(e.svc.upload_part(B, "mp", up.upload_id, 1, body(b"tiny part")))
        assert e.inline_rows() == 0 and len(e.blob_files()) == 1
        e.run(e.svc.complete_multipart_upload(B, "mp", up.upload_id, [CompletedPart(1, part.etag)]))
        assert get(e, "mp") == b"tiny part"


def test_object_lock_protects_inline_versions(tmp_path: Path) -> None:
    with env(tmp_path) as e:
        e.run(e.svc.create_bucket("locked", object_lock=True))
        until = e.svc.clock.now_ns() + 3600 * 10**9
        meta = e.run(
            e.svc.put_object(
                "locked", "k", body(b"keep"), lock=LockRequest(retention=Retention("COMPLIANCE", until))
            )
        )
        with pytest.raises(AccessDenied):
            e.run(e.svc.delete_object("locked", "k", version_id=meta.version_id))
        assert e.run(e.svc.read_object("locked", "k"))[1] == b"keep"
        assert e.inline_rows() == 1


def test_gc_leaves_inline_objects_alone(tmp_path: Path) -> None:
    with env(tmp_path) as e:
        put(e, "small", b"s")
        put(e, "large", b"L" * (LIMIT * 3))
        report = e.run(e.svc.collect_garbage(grace_s=0))
        assert report["orphans"] == 0 and report["scanned"] == 1
        assert get(e, "small") == b"s" and get(e, "large") == b"L" * (LIMIT * 3)


def flip_inline_byte(db: Path, inline_id: str, at: int = 0) -> None:
    conn = sqlite3.connect(db)
    (data,) = conn.execute("SELECT data FROM inline_blobs WHERE blob_id=?", (inline_id,)).fetchone()
    damaged = bytearray(data)
    damaged[at] ^= 0x20
    conn.execute("UPDATE inline_blobs SET data=? WHERE blob_id=?", (bytes(damaged), inline_id))
    conn.commit()
    conn.close()


def test_a_damaged_inline_row_is_corrupt_not_wrong_bytes(tmp_path: Path) -> None:
    with env(tmp_path) as e:
        put(e, "rot", b"precious bytes" * 10)
        put(e, "fine", b"fine")
        inline_id = asyncio.run(e.catalog.get_latest(B, "rot")).inline_id  # type: ignore[union-attr]
        assert inline_id is not None
        flip_inline_byte(e.db, inline_id, at=3)
        with pytest.raises(CorruptBlob):
            e.run(e.svc.get_object(B, "rot"))  # before any byte, before any header
        with pytest.raises(CorruptBlob):
            get(e, "rot", GetOptions(byte_range=ByteRange(100, 110)))  # even a range that avoids it
        with pytest.raises(CorruptBlob):
            e.run(e.svc.copy_object(B, "rot", B, "copy"))
        assert asyncio.run(e.svc.head_object(B, "rot")).meta.size_bytes == 140  # metadata is intact
        assert get(e, "fine") == b"fine"
        # The heal pass (single drive: verify only) reports it lost.
        report = e.run(Repairer(e.catalog, e.blobs, meta_dirs=[tmp_path]).heal())
        assert report.state == "done" and report.inline_checked == 2 and report.blobs_lost == 1
        assert report.lost == [f"inline:{inline_id}"]
        # Overwriting the damaged object frees the bad row.
        put(e, "rot", b"new bytes")
        assert get(e, "rot") == b"new bytes"
        assert e.run(Repairer(e.catalog, e.blobs, meta_dirs=[tmp_path]).heal()).blobs_lost == 0


class RecordingStore(MemoryBlobStore):
    """A real in-memory store that remembers the chunk objects it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        async def keep() -> AsyncIterator[bytes]:
            async for c in chunks:
                self.chunks.append(c)
                yield c

        return await super().put(blob_id, keep())


def test_a_large_body_streams_through_without_a_copy(tmp_path: Path) -> None:
    store = RecordingStore()
    catalog = SqliteCatalog(tmp_path / "c.db")
    try:
        svc = ObjectService(catalog, store, inline_max_bytes=LIMIT)
        pieces = [bytes([i]) * 400 for i in range(10)]  # the threshold falls inside the third

        async def gen() -> AsyncIterator[bytes]:
            for p in pieces:
                yield p

        async def main() -> bytes:
            await svc.create_bucket(B)
            await svc.put_object(B, "big", gen())
            return (await svc.read_object(B, "big"))[1]

        assert asyncio.run(main()) == b"".join(pieces)
        assert len(store.chunks) == len(pieces)
        assert all(a is b for a, b in zip(store.chunks, pieces, strict=True))  # the caller's own chunks
    finally:
        catalog.close()


def test_the_default_threshold() -> None:
    assert DEFAULT_INLINE_MAX_BYTES == 16 * 1024


# --- the mirrored catalog: a damaged copy is read around and repaired -------------------------
def test_a_damaged_copy_is_served_around_and_healed(tmp_path: Path) -> None:
    drives = DriveSet.open([tmp_path / f"d{i}" for i in range(4)])
    SqliteCatalog.reconcile(drives)
    catalog = SqliteCatalog.on_drives(drives)
    blobs = ErasureBlobStore(drives)
    repairer = Repairer(catalog, blobs, drives=drives)
    data = b"mirrored small body" * 5
    try:
        svc = ObjectService(catalog, blobs)

        async def setup() -> str:
            await svc.create_bucket(B)
            await svc.put_object(B, "k", body(data))
            record = await catalog.get_latest(B, "k")
            assert record is not None and record.inline_id is not None
            return record.inline_id

        inline_id = asyncio.run(setup())
        dbs = [p / "catalog" / "catalog.db" for p in drives.paths]
        flip_inline_byte(dbs[0], inline_id)  # copy 0: the one this process reads
        assert asyncio.run(svc.read_object(B, "k"))[1] == data
        report = asyncio.run(repairer.heal_queued())
        assert report is not None and report.inline_repaired == 1 and report.blobs_lost == 0
        rows = set()
        for db in dbs:
            conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
            rows.add(conn.execute("SELECT crc32c, data FROM inline_blobs WHERE blob_id=?", (inline_id,)).fetchone())
            conn.close()
        assert len(rows) == 1 and rows.pop()[1] == data  # every copy identical again
        assert len({c["seq"] for c in catalog.copies_state()}) == 1

        # Damage nobody reads: the heal pass finds and repairs it; on every copy: lost.
        flip_inline_byte(dbs[2], inline_id)
        full = asyncio.run(repairer.heal())
        assert (full.inline_checked, full.inline_repaired, full.blobs_lost) == (1, 1, 0)
        for db in dbs:
            flip_inline_byte(db, inline_id)
        with pytest.raises(CorruptBlob):
            asyncio.run(svc.read_object(B, "k"))
        assert asyncio.run(repairer.heal()).lost == [f"inline:{inline_id}"]
    finally:
        catalog.close()
