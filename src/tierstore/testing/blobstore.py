"""Conformance suite every BlobStore passes (STYLE.md 9).

Subclass ``BlobStoreConformance`` in a ``Test*`` class, provide the ``store`` fixture and the
damage hooks, and pytest runs the whole suite against your store::

    class TestLocalBlobStore(BlobStoreConformance):
        @pytest.fixture
        def store(self, tmp_path: Path) -> BlobStore:
            return LocalBlobStore(tmp_path)

        def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None: ...
        def truncate(self, store: BlobStore, blob_id: str) -> None: ...

Tests are plain functions that call ``asyncio.run`` (no pytest-asyncio). Random data comes
from ``random.Random`` seeded with ``SEED`` and the size, so every failure replays.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterable
from itertools import cycle
from typing import Any, TypeVar

import pytest

from tierstore.blob import BLOCK_SIZE_BYTES, BlobInfo, BlobStore
from tierstore.errors import CorruptBlob

__all__ = ["SEED", "BlobStoreConformance", "collect", "new_blob_id", "payload", "stream"]

SEED = 20240601
B = BLOCK_SIZE_BYTES
MIB = 1024 * 1024
SIZES = [0, 1, B - 1, B, B + 1, 3 * B + 17, 5 * MIB]
RANGE_BLOB_SIZE = 3 * B + 17  # four blocks, the last one short
RANGE_POINTS = sorted(
    {0, 1, B - 1, B, B + 1, 2 * B - 1, 2 * B, 2 * B + 1, 3 * B, 3 * B + 1, 3 * B + 16, 3 * B + 17}
)
INVALID_IDS = [
    "",
    "../x",
    "../../../../etc/passwd",
    "a/b",
    "0123456789abcdef/../x",
    "0123456789abcde",  # 15 chars: too short
    "a" * 65,  # too long
    "0123456789ABCDEF",  # uppercase
    "0123456789abcdef.",
    "0123456789abcdef\x00",
    "0123456789abcdéf",
    " 0123456789abcdef",
]

_T = TypeVar("_T")


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


def payload(size_bytes: int, seed: int = SEED) -> bytes:
    """Deterministic random bytes."""
    return random.Random(seed * 1_000_003 + size_bytes).randbytes(size_bytes)


def new_blob_id() -> str:
    return secrets.token_hex(16)


async def stream(data: bytes, sizes: Iterable[int] | None = None) -> AsyncIterator[bytes]:
    """Yield ``data`` in chunks of the given sizes (cycled); one chunk if ``sizes`` is None."""
    if sizes is None:
        yield data
        return
    sizes = list(sizes)
    assert any(sizes), "chunk sizes must not all be 0"
    pos = 0
    for n, size in enumerate(cycle(sizes)):
        if pos >= len(data) and size:
            return
        yield data[pos : pos + size]
        pos += size
        if n % 256 == 0:
            await asyncio.sleep(0)  # really suspend now and then, like a network stream


async def collect(
    store: BlobStore, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
) -> bytes:
    """Join ``get``; also checks that no empty chunk is yielded."""
    parts = []
    async for chunk in await store.get(blob_id, offset, length, verify=verify):
        assert len(chunk) > 0, "get() yielded an empty chunk"
        parts.append(chunk)
    return b"".join(parts)


async def _failing(data: bytes, fail_after_bytes: int) -> AsyncIterator[bytes]:
    step = 4096
    for pos in range(0, fail_after_bytes, step):
        yield data[pos : min(pos + step, fail_after_bytes)]
    raise _Boom


class _Boom(Exception):
    """Raised by a test input stream (an upstream checksum failure, say)."""


async def _scan(store: BlobStore) -> set[BlobInfo]:
    return {info async for info in store.scan()}


async def _raises_corrupt(aw: Awaitable[object]) -> None:
    with pytest.raises(CorruptBlob):
        await aw


class BlobStoreConformance:
    """Tests every BlobStore must pass. Subclasses provide ``store`` and the damage hooks."""

    @pytest.fixture
    def store(self) -> BlobStore:
        raise NotImplementedError("subclasses provide the store fixture")

    def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None:
        """Flip one byte of the stored data at data ``offset``, behind the store's back."""
        raise NotImplementedError

    def truncate(self, store: BlobStore, blob_id: str) -> None:
        """Cut the stored blob short, behind the store's back."""
        raise NotImplementedError

    def leftovers(self, store: BlobStore) -> list[str]:
        """Anything a failed put may have left behind (temp files, say); [] if not applicable."""
        return []

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    async def put_bytes(store: BlobStore, data: bytes, sizes: Iterable[int] | None = None) -> str:
        blob_id = new_blob_id()
        info = await store.put(blob_id, stream(data, sizes))
        assert info == BlobInfo(blob_id, len(data))
        return blob_id

    # --- round trips --------------------------------------------------------------------------
    def test_satisfies_protocol(self, store: BlobStore) -> None:
        assert isinstance(store, BlobStore)

    @pytest.mark.parametrize("size_bytes", SIZES)
    def test_round_trip(self, store: BlobStore, size_bytes: int) -> None:
        async def body() -> None:
            data = payload(size_bytes)
            blob_id = await self.put_bytes(store, data)
            assert await store.stat(blob_id) == BlobInfo(blob_id, size_bytes)
            assert await store.read(blob_id) == data
            assert await collect(store, blob_id) == data
            assert await store.verify(blob_id)
            assert await _scan(store) == {BlobInfo(blob_id, size_bytes)}

        run(body())

    @pytest.mark.parametrize(
        ("size_bytes", "sizes"),
        [
            pytest.param(size_bytes, sizes, id=f"{size_bytes}-{name}")
            for size_bytes in (3 * B + 17, 2 * MIB + 5)
            for name, sizes in [
                ("1-byte", [1]),
                ("odd", [7, 4093, B + 1, 1, 100_003]),
                ("with-empty", [0, 5, 0, B]),
                ("block", [B]),
                ("2block-1", [2 * B - 1]),
                ("one-big", [3 * MIB]),
            ]
            if not (sizes == [1] and size_bytes > MIB)  # would only time the test's own loop
        ],
    )
    def test_chunkings(self, store: BlobStore, size_bytes: int, sizes: list[int]) -> None:
        async def body() -> None:
            data = payload(size_bytes)
            blob_id = await self.put_bytes(store, data, sizes)
            assert await store.read(blob_id) == data
            assert await collect(store, blob_id) == data
            assert await store.verify(blob_id)

        run(body())

    def test_concurrent_puts_and_gets(self, store: BlobStore) -> None:
        sizes = [0, 1, B, 3 * B + 17, MIB + 3, 2 * MIB, 17, 5 * B]

        async def one(size_bytes: int) -> None:
            data = payload(size_bytes, seed=SEED + 1)
            blob_id = await self.put_bytes(store, data, [B // 2 + 3])
            assert await collect(store, blob_id) == data
            assert await store.read(blob_id, size_bytes // 3) == data[size_bytes // 3 :]

        async def body() -> None:
            await asyncio.gather(*(one(s) for s in sizes))
            assert len(await _scan(store)) == len(sizes)

        run(body())

    # --- ranges -------------------------------------------------------------------------------
    def test_ranges_at_block_boundaries(self, store: BlobStore) -> None:
        async def body() -> None:
            data = payload(RANGE_BLOB_SIZE)
            blob_id = await self.put_bytes(store, data)
            for start in RANGE_POINTS:
                for end in RANGE_POINTS:
                    if end < start:
                        continue
                    expected = data[start:end]
                    where = f"range [{start}, {end})"
                    assert await store.read(blob_id, start, end - start) == expected, where
                    assert await collect(store, blob_id, start, end - start) == expected, where
                assert await store.read(blob_id, start) == data[start:], f"offset {start} to end"
                assert await collect(store, blob_id, start) == data[start:], f"offset {start} to end"

        run(body())

    def test_ranges_in_big_blob(self, store: BlobStore) -> None:
        async def body() -> None:
            data = payload(5 * MIB)
            blob_id = await self.put_bytes(store, data)
            rng = random.Random(SEED)
            ranges = [(MIB - 1, 2), (MIB, MIB), (MIB - 3, MIB + 7), (5 * MIB - 1, 1), (0, 5 * MIB)]
            ranges += [(o, rng.randrange(0, 5 * MIB - o + 1)) for o in rng.sample(range(5 * MIB), 20)]
            for offset, length in ranges:
                expected = data[offset : offset + length]
                assert await store.read(blob_id, offset, length) == expected, (offset, length)
                assert await collect(store, blob_id, offset, length) == expected, (offset, length)

        run(body())

    @pytest.mark.parametrize(
        ("offset", "length"),
        [
            (RANGE_BLOB_SIZE + 1, None),
            (RANGE_BLOB_SIZE + 1, 0),
            (RANGE_BLOB_SIZE, 1),
            (0, RANGE_BLOB_SIZE + 1),
            (B, RANGE_BLOB_SIZE),
            (-1, None),
            (-1, 1),
            (0, -1),
        ],
    )
    def test_range_beyond_end_is_refused(self, store: BlobStore, offset: int, length: int | None) -> None:
        async def body() -> None:
            blob_id = await self.put_bytes(store, payload(RANGE_BLOB_SIZE))
            with pytest.raises(ValueError):
                await store.read(blob_id, offset, length)
            with pytest.raises(ValueError):  # at await time, before any byte is produced
                await store.get(blob_id, offset, length)

        run(body())

    def test_zero_length_ranges(self, store: BlobStore) -> None:
        async def body() -> None:
            blob_id = await self.put_bytes(store, payload(RANGE_BLOB_SIZE))
            for offset in (0, B, RANGE_BLOB_SIZE):
                assert await store.read(blob_id, offset, 0) == b""
                assert await collect(store, blob_id, offset, 0) == b""
            assert await store.read(blob_id, RANGE_BLOB_SIZE) == b""
            empty = await self.put_bytes(store, b"")
            assert await store.read(empty, 0, 0) == b""
            assert await collect(store, empty) == b""
            with pytest.raises(ValueError):
                await store.read(empty, 0, 1)

        run(body())

    # --- failure and lifecycle ----------------------------------------------------------------
    @pytest.mark.parametrize("fail_after_bytes", [0, 1000, B, 3 * MIB + 5])
    def test_failing_input_leaves_nothing(self, store: BlobStore, fail_after_bytes: int) -> None:
        async def body() -> None:
            kept = await self.put_bytes(store, payload(100))
            before = await _scan(store)
            data = payload(fail_after_bytes)
            blob_id = new_blob_id()
            with pytest.raises(_Boom):
                await store.put(blob_id, _failing(data, fail_after_bytes))
            assert await store.stat(blob_id) is None
            assert await _scan(store) == before
            assert self.leftovers(store) == []
            assert await store.read(kept) == payload(100)
            # the id is still free
            await store.put(blob_id, stream(data))
            assert await store.read(blob_id) == data

        run(body())

    def test_existing_blob_is_never_overwritten(self, store: BlobStore) -> None:
        async def body() -> None:
            data = payload(B + 1)
            blob_id = await self.put_bytes(store, data)
            for other in (b"", b"x", payload(3 * B)):
                with pytest.raises(ValueError):
                    await store.put(blob_id, stream(other))
            assert await store.read(blob_id) == data
            assert self.leftovers(store) == []

        run(body())

    def test_delete_is_idempotent(self, store: BlobStore) -> None:
        async def body() -> None:
            blob_id = await self.put_bytes(store, payload(B))
            await store.delete(blob_id)
            await store.delete(blob_id)
            await store.delete(new_blob_id())
            assert await store.stat(blob_id) is None
            assert await _scan(store) == set()
            await self.put_bytes(store, b"")  # the store still works

        run(body())

    def test_missing_blob_is_corrupt(self, store: BlobStore) -> None:
        async def body() -> None:
            blob_id = new_blob_id()
            assert await store.stat(blob_id) is None
            assert not await store.verify(blob_id)
            await _raises_corrupt(store.read(blob_id))
            await _raises_corrupt(store.get(blob_id))  # at await time
            deleted = await self.put_bytes(store, payload(10))
            await store.delete(deleted)
            await _raises_corrupt(store.read(deleted, 0, 1))
            await _raises_corrupt(collect(store, deleted))

        run(body())

    def test_scan_lists_exactly_the_committed_blobs(self, store: BlobStore) -> None:
        async def body() -> None:
            expected = set()
            for size_bytes in (0, 1, B, 3 * B + 17, 100):
                blob_id = await self.put_bytes(store, payload(size_bytes))
                expected.add(BlobInfo(blob_id, size_bytes))
            gone = await self.put_bytes(store, payload(5))
            await store.delete(gone)
            with pytest.raises(_Boom):
                await store.put(new_blob_id(), _failing(payload(B * 2), B * 2))
            assert await _scan(store) == expected

        run(body())

    @pytest.mark.parametrize("blob_id", INVALID_IDS)
    def test_invalid_blob_ids_are_refused(self, store: BlobStore, blob_id: str) -> None:
        async def body() -> None:
            with pytest.raises(ValueError):
                await store.put(blob_id, stream(b"data"))
            with pytest.raises(ValueError):
                await store.read(blob_id)
            with pytest.raises(ValueError):
                await store.get(blob_id)
            with pytest.raises(ValueError):
                await store.stat(blob_id)
            with pytest.raises(ValueError):
                await store.delete(blob_id)
            with pytest.raises(ValueError):
                await store.verify(blob_id)
            assert await _scan(store) == set()
            assert self.leftovers(store) == []

        run(body())

    def test_valid_blob_id_edge_cases(self, store: BlobStore) -> None:
        async def body() -> None:
            for blob_id in ("0" * 16, "z" * 64, "__--0123456789ab", "-" * 20):
                await store.put(blob_id, stream(b"ok"))
                assert await store.read(blob_id) == b"ok"

        run(body())

    def test_abandoned_get_is_harmless(self, store: BlobStore) -> None:
        async def body() -> None:
            data = payload(5 * MIB)
            blob_id = await self.put_bytes(store, data)
            chunks = await store.get(blob_id)
            first = await anext(chunks)
            assert data.startswith(first)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            untouched = await store.get(blob_id, B)  # never iterated
            del untouched
            await store.delete(blob_id)
            assert await store.stat(blob_id) is None

        run(body())

    # --- damage -------------------------------------------------------------------------------
    @pytest.mark.parametrize("damaged_offset", [0, B - 1, B + 100, 2 * B, RANGE_BLOB_SIZE - 1])
    def test_corruption_is_detected_per_block(self, store: BlobStore, damaged_offset: int) -> None:
        async def body() -> None:
            data = payload(RANGE_BLOB_SIZE)
            blob_id = await self.put_bytes(store, data)
            self.corrupt(store, blob_id, damaged_offset)
            damaged = damaged_offset // B
            ranges = [(0, RANGE_BLOB_SIZE)]
            for block in range(-(-RANGE_BLOB_SIZE // B)):
                start, end = block * B, min((block + 1) * B, RANGE_BLOB_SIZE)
                ranges += [(start, end), (start, start + 1), (end - 1, end), (max(0, start - 1), start + 1)]
            ranges.append((damaged_offset, damaged_offset + 1))
            for start, end in ranges:
                touches = start // B <= damaged <= (end - 1) // B
                where = f"range [{start}, {end}), damaged block {damaged}"
                if touches:
                    with pytest.raises(CorruptBlob):
                        await store.read(blob_id, start, end - start)
                    await _raises_corrupt(collect(store, blob_id, start, end - start))
                else:
                    assert await store.read(blob_id, start, end - start) == data[start:end], where
                    assert await collect(store, blob_id, start, end - start) == data[start:end], where
            # a streaming read yields good blocks, then fails before any byte of the bad block
            got = bytearray()
            with pytest.raises(CorruptBlob):
                async for chunk in await store.get(blob_id):
                    got += chunk
            assert len(got) <= damaged * B
            assert data.startswith(got)
            assert not await store.verify(blob_id)

        run(body())

    def test_corruption_in_big_blob(self, store: BlobStore) -> None:
        async def body() -> None:
            data = payload(5 * MIB)
            blob_id = await self.put_bytes(store, data)
            self.corrupt(store, blob_id, 3 * MIB + 5)
            got = bytearray()
            with pytest.raises(CorruptBlob):
                async for chunk in await store.get(blob_id):
                    got += chunk
            assert len(got) <= 3 * MIB
            assert data.startswith(got)
            assert await store.read(blob_id, 0, 3 * MIB) == data[: 3 * MIB]
            assert await store.read(blob_id, 3 * MIB + B) == data[3 * MIB + B :]
            await _raises_corrupt(store.read(blob_id, 3 * MIB, 6))
            assert not await store.verify(blob_id)

        run(body())

    def test_unverified_reads_skip_the_block_checks(self, store: BlobStore) -> None:
        """``verify=False`` (encrypted bodies, whose AEAD tags authenticate them) returns the
        stored bytes as they are, damage included; ``verify=True`` on the same range refuses."""

        async def body() -> None:
            data = payload(RANGE_BLOB_SIZE)
            blob_id = await self.put_bytes(store, data)
            assert await store.read(blob_id, verify=False) == data
            assert await collect(store, blob_id, 7, B + 9, verify=False) == data[7 : B + 16]
            damaged_offset = B + 100
            self.corrupt(store, blob_id, damaged_offset)
            raw = await store.read(blob_id, B, B, verify=False)
            assert len(raw) == B and raw != data[B : 2 * B]
            streamed = await collect(store, blob_id, verify=False)
            assert len(streamed) == RANGE_BLOB_SIZE and streamed != data
            with pytest.raises(CorruptBlob):
                await store.read(blob_id, B, B)
            await _raises_corrupt(collect(store, blob_id))

        run(body())

    @pytest.mark.parametrize("size_bytes", [1, B, 3 * B + 17])
    def test_truncation_is_detected(self, store: BlobStore, size_bytes: int) -> None:
        async def body() -> None:
            blob_id = await self.put_bytes(store, payload(size_bytes))
            self.truncate(store, blob_id)
            assert not await store.verify(blob_id)
            await _raises_corrupt(store.read(blob_id))
            await _raises_corrupt(collect(store, blob_id))
            await _raises_corrupt(store.read(blob_id, size_bytes - 1, 1))
            await _raises_corrupt(store.read(blob_id, verify=False))  # the length is always checked
            await _raises_corrupt(collect(store, blob_id, verify=False))

        run(body())
