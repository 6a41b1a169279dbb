"""``tierstore._hashing.ThreadedHash``: a body's hash fed on a worker thread, in order."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

from tierstore import _hashing
from tierstore._hashing import BATCH_BYTES, GIL_MIN_BYTES, HELD_MAX_BYTES, THREAD_MIN_BYTES, ThreadedHash, update_held


class _Recorder:
    """A hash object that records which thread fed it what, and hashes like MD5."""

    def __init__(self) -> None:
        self.inner = hashlib.md5()
        self.calls: list[tuple[str, int]] = []

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append((threading.current_thread().name, len(data)))
        self.inner.update(data)


def test_the_digest_is_hashlibs_for_every_mix_of_chunks() -> None:
    big = [os.urandom(THREAD_MIN_BYTES + i) for i in range(5)]
    chunks: list[bytes | bytearray | memoryview] = [
        big[0], b"small", big[1], bytearray(big[2]), big[3], memoryview(big[4]), b"", big[0],
    ]  # fmt: skip

    async def run() -> tuple[bytes, _Recorder]:
        rec = _Recorder()
        threaded = ThreadedHash(rec)
        for chunk in chunks:
            await threaded.update(chunk)
        return (await threaded.result()).inner.digest(), rec

    digest, rec = asyncio.run(run())
    assert digest == hashlib.md5(b"".join(bytes(c) for c in chunks)).digest()
    # In the body's order; the large ``bytes`` on the pool's threads, the rest inline.
    assert [n for _, n in rec.calls] == [len(c) for c in chunks]
    on_pool = [name.startswith("tierstore-hash") for name, _ in rec.calls]
    assert on_pool == [True, False, True, False, True, False, False, True]


def test_a_small_chunk_is_hashed_in_slices_that_keep_the_gil() -> None:
    """From 2 KiB to HELD_MAX_BYTES: slices below hashlib's GIL threshold, the same digest;
    smaller and larger chunks in one update (a large one lets other threads run)."""
    for size in (0, 1, GIL_MIN_BYTES - 1, GIL_MIN_BYTES, 4096, 4097, HELD_MAX_BYTES, HELD_MAX_BYTES + 1):
        data = os.urandom(size)
        for chunk in (data, bytearray(data), memoryview(data)):
            rec = _Recorder()
            update_held(rec, chunk)
            assert rec.inner.digest() == hashlib.md5(data).digest(), size
            sizes = [n for _, n in rec.calls]
            assert sum(sizes) == size
            if GIL_MIN_BYTES <= size <= HELD_MAX_BYTES:
                assert max(sizes) < GIL_MIN_BYTES, (size, sizes)
            else:
                assert sizes == [size], (size, sizes)
    wide = memoryview(os.urandom(4096)).cast("I")  # 1,024 items of 4 bytes: sliced by bytes
    rec = _Recorder()
    update_held(rec, wide)
    assert rec.inner.digest() == hashlib.md5(wide.tobytes()).digest()
    assert max(n for _, n in rec.calls) < GIL_MIN_BYTES


def test_large_chunks_go_over_together_in_order() -> None:
    chunks = [os.urandom(THREAD_MIN_BYTES) for _ in range(40)]  # 2.5 MiB: two full batches and a rest

    async def run() -> _Recorder:
        rec = _Recorder()
        threaded = ThreadedHash(rec)
        for chunk in chunks:
            await threaded.update(chunk)
        assert (await threaded.result()) is rec
        return rec

    rec = asyncio.run(run())
    assert rec.inner.digest() == hashlib.md5(b"".join(chunks)).digest()
    assert [n for _, n in rec.calls] == [len(c) for c in chunks]
    assert all(name.startswith("tierstore-hash") for name, _ in rec.calls)
    assert BATCH_BYTES // THREAD_MIN_BYTES == 16  # so the first hand-over held 16 chunks


def test_joined_hashes_what_was_not_handed_over() -> None:
    data = [os.urandom(THREAD_MIN_BYTES) for _ in range(3)]  # below one batch: still held

    async def run() -> ThreadedHash:
        threaded = ThreadedHash(hashlib.sha256())
        for chunk in data:
            await threaded.update(chunk)
        return threaded

    assert asyncio.run(run()).joined().hexdigest() == hashlib.sha256(b"".join(data)).hexdigest()


def test_joined_waits_for_the_last_update() -> None:
    data = os.urandom(BATCH_BYTES)  # one full batch: handed over at once

    async def run() -> ThreadedHash:
        threaded = ThreadedHash(hashlib.sha256())
        await threaded.update(data)
        return threaded

    threaded = asyncio.run(run())
    assert threaded.joined().hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_forked_child_makes_its_own_pool() -> None:
    pool = _hashing._pool.get()
    assert _hashing._pool.get() is pool  # one per process
    _hashing._pool.forget()  # what a forked child runs first
    assert _hashing._pool.get() is not pool
