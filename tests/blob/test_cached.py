"""CachedBlobStore over a real SeaweedFS (the session fixture) with a local cache directory: the
BlobStore conformance suite (as the S3 store runs it: damage is done to the object and to any
cache file), plus what the cache adds — hits after a fill, the LRU bound, two stores (workers)
on one cache directory, the store down while cached blobs still read, damaged cache files read
again from the store, fills that fail or are abandoned leaving nothing, write-through."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.blob import test_s3 as s3t
from tests.seaweed import SeaweedFS
from tierstore.blob import BlobStore, CachedBlobStore, LocalBlobStore, S3BlobStore, S3StoreConfig
from tierstore.blob._local import blob_file_size
from tierstore.errors import CorruptBlob, TierUnavailable
from tierstore.testing.blobstore import collect, new_blob_id, payload, run, stream

pytestmark = pytest.mark.peer

MIB = 1024 * 1024
B = 64 * 1024
remote = s3t.remote  # the module's bucket on the session's SeaweedFS


def make(
    weed: SeaweedFS, cache_dir: Path, *, cache_bytes: int = 64 * MIB, prefix: str | None = None, **options: Any
) -> CachedBlobStore:
    store = s3t.make_store(weed, prefix)
    return CachedBlobStore(store, LocalBlobStore(cache_dir, durable=False), cache_bytes=cache_bytes, **options)


def flip_cached(store: CachedBlobStore, blob_id: str, offset: int) -> None:
    path = store.cache.blob_path(blob_id)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def append_junk(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"junk")


def cache_files(cache_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (cache_dir / "blobs").glob("*/*/*")}


def temp_files(cache_dir: Path) -> list[str]:
    return sorted(os.listdir(cache_dir / "tmp"))


class TestCachedBlobStore(s3t.TestS3BlobStore):
    """The shared suite, with the S3 store's three damage tests (a blob's durable copy is a plain
    remote object); the damage hooks hit the object and the cache file if there is one."""

    @pytest.fixture
    def store(self, remote: SeaweedFS, tmp_path: Path) -> BlobStore:
        self.weed = remote
        return make(remote, tmp_path / "cache")

    def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None:
        assert isinstance(store, CachedBlobStore)
        super().corrupt(store.store, blob_id, offset)
        if store.is_cached(blob_id):
            flip_cached(store, blob_id, offset)

    def truncate(self, store: BlobStore, blob_id: str) -> None:
        assert isinstance(store, CachedBlobStore)
        super().truncate(store.store, blob_id)
        if store.is_cached(blob_id):
            path = store.cache.blob_path(blob_id)
            os.truncate(path, path.stat().st_size - 1)

    def leftovers(self, store: BlobStore) -> list[str]:
        assert isinstance(store, CachedBlobStore)
        return super().leftovers(store.store) + temp_files(store.cache.root)


# --- hits and fills -------------------------------------------------------------------------------


def test_a_whole_read_fills_the_cache_and_later_reads_hit_it(remote: SeaweedFS, tmp_path: Path) -> None:
    async def body() -> None:
        store = make(remote, tmp_path / "cache")
        by_read, by_get = payload(3 * B + 17), payload(2 * MIB + 5)
        read_id, get_id = new_blob_id(), new_blob_id()
        await store.put(read_id, stream(by_read))
        await store.put(get_id, stream(by_get, [B]))
        assert not store.is_cached(read_id) and store.store_gets == 0  # no write-through by default

        assert await store.read(read_id, 0, len(by_read)) == by_read  # whole, as the engine asks
        assert await collect(store, get_id) == by_get  # streamed to us and into the cache
        assert (store.store_gets, store.fills) == (2, 2)
        assert store.is_cached(read_id) and store.is_cached(get_id)
        for blob_id, data in ((read_id, by_read), (get_id, by_get)):
            assert await store.read(blob_id) == data
            assert await collect(store, blob_id) == data
            assert await store.read(blob_id, B + 1, 7) == data[B + 1 : B + 8]
            assert await collect(store, blob_id, B - 1, B + 2) == data[B - 1 : 2 * B + 1]
        assert (store.store_gets, store.hits) == (2, 8)
        assert store.cached_bytes == blob_file_size(len(by_read)) + blob_file_size(len(by_get))
        assert temp_files(store.cache.root) == []

    run(body())


def test_ranged_and_big_reads_go_to_the_store_uncached(remote: SeaweedFS, tmp_path: Path) -> None:
    async def body() -> None:
        store = make(remote, tmp_path / "cache", fill_max_bytes=MIB)
        small, big = payload(3 * B), payload(MIB + 1)
        small_id, big_id = new_blob_id(), new_blob_id()
        await store.put(small_id, stream(small))
        await store.put(big_id, stream(big))
        assert await store.read(small_id, 1, B) == small[1 : B + 1]  # a range: size unknown
        assert await store.read(small_id, 0, B) == small[:B]
        assert await store.read(big_id) == big  # above fill_max_bytes
        assert await collect(store, big_id) == big
        assert (store.store_gets, store.fills) == (4, 0)
        assert cache_files(store.cache.root) == {}

    run(body())


def test_concurrent_readers_of_one_blob_fill_it_once(remote: SeaweedFS, tmp_path: Path) -> None:
    async def body() -> None:
        store = make(remote, tmp_path / "cache")
        data = payload(3 * MIB + 1)
        blob_id = new_blob_id()
        await store.put(blob_id, stream(data))
        got = await asyncio.gather(*(collect(store, blob_id) for _ in range(4)), store.read(blob_id))
        assert got == [data] * 5
        assert store.fills == 1 and store.is_cached(blob_id)
        assert temp_files(store.cache.root) == []

    run(body())


def test_failed_and_abandoned_fills_leave_no_cache_file(remote: SeaweedFS, tmp_path: Path) -> None:
    async def body() -> None:
        store = make(remote, tmp_path / "cache")
        data = payload(3 * MIB + 7)
        damaged, abandoned = new_blob_id(), new_blob_id()
        for blob_id in (damaged, abandoned):
            await store.put(blob_id, stream(data))

        def flip(buf: bytearray) -> None:
            buf[2 * MIB + 3] ^= 1

        s3t.rewrite(remote, store.store, damaged, flip)  # the durable copy itself is bad
        got = bytearray()
        with pytest.raises(CorruptBlob):
            async for chunk in await store.get(damaged):
                got += chunk
        assert len(got) < len(data)  # the store held its last chunk back
        with pytest.raises(CorruptBlob):
            await store.read(damaged)

        chunks = await store.get(abandoned)
        assert data.startswith(await anext(chunks))
        await chunks.aclose()  # type: ignore[attr-defined]

        assert store.fills == 0 and cache_files(store.cache.root) == {}
        assert temp_files(store.cache.root) == []
        assert await collect(store, abandoned) == data  # and the next whole read fills it
        assert store.is_cached(abandoned)

    run(body())


def test_a_reader_that_stops_at_the_last_byte_still_fills(remote: SeaweedFS, tmp_path: Path) -> None:
    """A reader with every byte may close the stream without asking for its end (api/ does, for a
    body that came in one chunk): the fill is published before the last chunk is handed out."""

    async def body() -> None:
        store = make(remote, tmp_path / "cache")
        for data in (payload(20_000), payload(2 * MIB + 5)):  # one chunk; several
            blob_id = new_blob_id()
            await store.put(blob_id, stream(data))
            chunks = await store.get(blob_id, 0, len(data))
            got = bytearray()
            while len(got) < len(data):
                got += await anext(chunks)
            await chunks.aclose()  # type: ignore[attr-defined]
            assert got == data and store.is_cached(blob_id)
        assert store.fills == 2 and temp_files(store.cache.root) == []

    run(body())


def test_write_through_caches_small_puts(remote: SeaweedFS, tmp_path: Path) -> None:
    async def body() -> None:
        store = make(remote, tmp_path / "cache", write_through_bytes=MIB)
        small, big = payload(B + 3), payload(MIB + 1)
        small_id, big_id = new_blob_id(), new_blob_id()
        await store.put(small_id, stream(small, [1000]))
        await store.put(big_id, stream(big, [B]))
        assert store.is_cached(small_id) and not store.is_cached(big_id)
        assert await store.read(small_id) == small and store.store_gets == 0
        assert await store.store.read(small_id) == small  # the store has it too

    run(body())


# --- the bound ------------------------------------------------------------------------------------


def test_the_cache_stays_within_its_bound_least_recently_used_out(remote: SeaweedFS, tmp_path: Path) -> None:
    file_bytes = blob_file_size(B)
    cache_dir = tmp_path / "cache"

    prefix = f"t/{uuid.uuid4().hex[:12]}"

    async def body() -> list[str]:
        store = make(remote, cache_dir, cache_bytes=4 * file_bytes, prefix=prefix)
        ids = [new_blob_id() for _ in range(7)]
        for blob_id in ids:
            await store.put(blob_id, stream(payload(B)))
        for blob_id in ids[:4]:
            await store.read(blob_id)
        assert store.evictions == 0 and store.cached_bytes == 4 * file_bytes
        await store.read(ids[0])  # a hit: now the most recently used
        await store.read(ids[4])  # evicts ids[1], the least recently used
        await store.read(ids[5])  # then ids[2]
        assert store.evictions == 2
        assert set(cache_files(cache_dir)) == {ids[0], ids[3], ids[4], ids[5]}  # 3, 0, 4, 5 by last use
        assert sum(cache_files(cache_dir).values()) == store.cached_bytes <= store.cache_bytes
        gets = store.store_gets
        assert await store.read(ids[1]) == payload(B)  # evicted: from the store
        assert store.store_gets == gets + 1
        return ids

    ids = run(body())
    # a restart orders the files by their mtimes (a hit sets it now and then): make ids[4] the oldest
    for age, blob_id in enumerate([ids[4], ids[0], ids[5], ids[1]]):
        os.utime(LocalBlobStore(cache_dir).blob_path(blob_id), (1_000_000 + age, 1_000_000 + age))

    async def after_restart() -> None:
        store = make(remote, cache_dir, cache_bytes=4 * file_bytes, prefix=prefix)
        assert store.cached_bytes == 4 * file_bytes
        await store.read(ids[6])
        assert set(cache_files(cache_dir)) == {ids[0], ids[5], ids[1], ids[6]}

    run(after_restart())


def test_a_blob_bigger_than_the_cache_is_not_cached(remote: SeaweedFS, tmp_path: Path) -> None:
    async def body() -> None:
        store = make(remote, tmp_path / "cache", cache_bytes=B)
        assert store.fill_max_bytes < B and blob_file_size(store.fill_max_bytes) <= B
        blob_id = new_blob_id()
        await store.put(blob_id, stream(payload(B)))
        assert await store.read(blob_id) == payload(B)
        assert not store.is_cached(blob_id)

    run(body())


# --- workers sharing a cache ----------------------------------------------------------------------


def test_two_stores_share_one_cache_directory(remote: SeaweedFS, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    file_bytes = blob_file_size(MIB)

    async def body() -> None:
        a = make(remote, cache_dir, cache_bytes=6 * file_bytes)
        b = make(remote, cache_dir, cache_bytes=6 * file_bytes, prefix=a.store.config.prefix)
        data, three = payload(MIB), payload(3 * MIB)
        shared = new_blob_id()
        await a.put(shared, stream(three))
        assert await a.read(shared) == three and a.fills == 1
        assert await b.read(shared) == three and (b.store_gets, b.hits) == (0, 1)  # a's fill

        # a reader in b holds the file open while a removes it: unlink is fine on POSIX
        chunks = await b.get(shared)
        first = await anext(chunks)
        assert len(first) < len(three)
        await a.delete(shared)
        assert first + b"".join([c async for c in chunks]) == three
        assert not b.is_cached(shared)
        with pytest.raises(CorruptBlob):  # deleted everywhere: b's next read finds neither
            await b.read(shared)

        # both fill the same blob at once: one file, right bytes for everyone
        racing = new_blob_id()
        await a.put(racing, stream(data))
        got = await asyncio.gather(collect(a, racing), collect(b, racing), a.read(racing), b.read(racing))
        assert got == [data] * 4 and list(cache_files(cache_dir)) == [racing]
        assert temp_files(cache_dir) == []

        # b's rescan (after it filled an eighth of the bound) counts a's files: the bound holds
        ids = [new_blob_id() for _ in range(8)]
        for blob_id in ids:
            await a.put(blob_id, stream(data))
        for blob_id in ids[:4]:
            assert await a.read(blob_id) == data
        for blob_id in ids[4:]:
            assert await b.read(blob_id) == data
        assert sum(cache_files(cache_dir).values()) <= 6 * file_bytes
        assert b.evictions > 0

    run(body())


def test_held_blobs_survive_eviction_in_every_store_on_the_directory(remote: SeaweedFS, tmp_path: Path) -> None:
    """``hold`` by one store (worker) is seen by another on the same directory: its eviction skips
    the held blobs; ``prefetch`` fills a blob bigger than ``fill_max_bytes``, verified; once the
    held set is emptied the blobs are evicted as any other."""
    cache_dir = tmp_path / "cache"
    file_bytes = blob_file_size(B)

    async def body() -> None:
        a = make(remote, cache_dir, cache_bytes=4 * file_bytes, fill_max_bytes=B // 2)
        b = make(remote, cache_dir, cache_bytes=4 * file_bytes, prefix=a.store.config.prefix)
        assert a.node_id == b.node_id and len(a.node_id) == 12  # one directory, one gateway
        pinned = [new_blob_id() for _ in range(2)]
        for blob_id in pinned:
            await a.put(blob_id, stream(payload(B)))
        await a.hold(pinned)
        assert [await a.prefetch(p) for p in pinned] == [B, B]  # above fill_max_bytes: filled anyway
        assert await a.prefetch(pinned[0]) == 0  # cached already
        assert b.held == frozenset(pinned)
        others = [new_blob_id() for _ in range(4)]
        for blob_id in others:
            await a.put(blob_id, stream(payload(B)))
            assert await b.read(blob_id) == payload(B)  # b fills; its LRU would drop the pinned first
        assert set(pinned) <= set(cache_files(cache_dir)) and b.evictions == 2
        assert sum(cache_files(cache_dir).values()) <= 4 * file_bytes
        await a.hold([])  # unpinned: evictable, and the bound is kept at once
        assert b.held == frozenset()
        await b.read(others[0])
        await b.read(others[1])
        await a.put(extra := new_blob_id(), stream(payload(B)))
        assert await b.read(extra) == payload(B)
        assert not set(pinned) & set(cache_files(cache_dir))

    run(body())


# --- the store down -------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_store_down_cached_blobs_still_read(remote: SeaweedFS, tmp_path: Path, closed_port: int) -> None:
    cache_dir = tmp_path / "cache"

    async def body() -> None:
        up = make(remote, cache_dir)
        data = payload(3 * B + 17)
        cached, uncached = new_blob_id(), new_blob_id()
        for blob_id in (cached, uncached):
            await up.put(blob_id, stream(data))
        assert await up.read(cached) == data
        down_store = S3BlobStore(
            S3StoreConfig(
                endpoint=f"http://127.0.0.1:{closed_port}", bucket=s3t.BUCKET, prefix=f"t/{uuid.uuid4().hex[:12]}",
                access_key="k", secret_key="s", connect_timeout_s=1, read_timeout_s=1, max_retries=0,
            )
        )  # fmt: skip
        down = CachedBlobStore(down_store, LocalBlobStore(cache_dir), cache_bytes=64 * MIB)
        assert await down.read(cached) == data
        assert await collect(down, cached) == data
        assert await down.read(cached, B, 5) == data[B : B + 5]
        for op in (down.read(uncached), collect(down, uncached), down.read(uncached, 1, 2), down.stat(cached)):
            with pytest.raises(TierUnavailable) as info:
                await asyncio.wait_for(op, s3t.HANG_GUARD_S)
            assert info.value.headers["Retry-After"].isdigit()
        with pytest.raises(TierUnavailable):
            await down.put(new_blob_id(), stream(b"x"))
        assert down.store_gets == 3 and down.hits == 3

    run(body())


# --- damaged cache files --------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["block", "footer", "truncated", "stray-bytes"])
def test_a_damaged_cache_file_is_read_again_from_the_store(remote: SeaweedFS, tmp_path: Path, damage: str) -> None:
    size = 40 * B + 9  # several 1 MiB read pieces from the cache

    async def body() -> None:
        store = make(remote, tmp_path / "cache")
        data = payload(size)
        blob_id = new_blob_id()
        await store.put(blob_id, stream(data))

        async def spoil() -> None:
            assert await store.read(blob_id) == data and store.is_cached(blob_id)
            path = store.cache.blob_path(blob_id)
            if damage == "block":
                flip_cached(store, blob_id, 20 * B + 5)  # after the first pieces were sent
            elif damage == "footer":
                flip_cached(store, blob_id, path.stat().st_size - 3)
            elif damage == "truncated":
                os.truncate(path, path.stat().st_size - 1)
            else:
                append_junk(path)

        reads = [
            lambda: store.read(blob_id),
            lambda: collect(store, blob_id),
            lambda: collect(store, blob_id, verify=False) if damage != "block" else collect(store, blob_id),
            lambda: store.read(blob_id, 19 * B, 3 * B),
            lambda: collect(store, blob_id, B, size - B),
        ]
        expected = [data, data, data, data[19 * B : 22 * B], data[B:]]
        for read, want in zip(reads, expected, strict=True):
            await spoil()
            gets = store.store_gets
            assert await read() == want  # never CorruptBlob while the store has good bytes
            assert store.store_gets == gets + 1
        assert await store.verify(blob_id)

    run(body())
