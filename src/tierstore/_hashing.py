"""``ThreadedHash``: a body's hash (the PUT's MD5, a signed payload's SHA-256) fed on a worker
thread, one chunk behind the event loop, in order.

A 64 MiB PUT spends ~40% of its server CPU in MD5 (the ETag; OpenSSL's ~700 MB/s per core, a
serial algorithm) and ~15% in the SHA-256 of a signed payload (docs/benchmarks.md, "Issue 16,
session 11"). hashlib releases the GIL while it hashes more than 2 KiB, so those passes can run
on another core while the event loop receives the next chunk, seals it and writes it: the work
is the same, but one worker's loop (a single thread) no longer carries it. With the few large
PUTs of a bulk upload spread unevenly over the workers (SO_REUSEPORT hashes connections; four
connections land 3:1 half the time), a worker with more PUTs than the others then uses more than
its one core.

Large chunks are handed over together, ``BATCH_BYTES`` at a time (granian delivers a PUT body
in frames of up to ~400 KiB: one thread hop per ~1 MiB, not per frame), and each hand-over is
submitted once the previous one is done (awaited, not blocked on), so the updates run in the
body's order and at most one batch per hash is in flight (at most ~2.4 MiB of a body referenced
by a hash at once). Only ``bytes`` chunks are handed over (immutable: nobody can change them
under the thread); anything else, and chunks below ``THREAD_MIN_BYTES`` (a thread hop costs more
than hashing them), is hashed inline after everything before it. ``result()`` waits for the last
update and returns the hash object.

A small chunk hashed inline is fed in slices below ``GIL_MIN_BYTES`` (``update_held``): hashlib
lets go of the GIL for 2 KiB and more, and on a gateway whose granian threads wait for the GIL to
hand the loop the next request, every such release is a thread switch (a 4 KiB PUT's SHA-256
took ~130 us of wall time instead of 4 us, docs/benchmarks.md "Issue 18: the 4 KiB PUT, session
12 part 2"). Hashing a few KiB on the loop thread costs less than handing the GIL over.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future
from typing import Any

from tierstore._threads import LazyPool

__all__ = ["BATCH_BYTES", "HELD_MAX_BYTES", "THREAD_MIN_BYTES", "ThreadedHash", "update_held"]

THREAD_MIN_BYTES = 64 * 1024  # smaller chunks are hashed inline (no thread hop)
BATCH_BYTES = 1 << 20  # large chunks go to the thread together, at least this many bytes at a time

GIL_MIN_BYTES = 2048  # hashlib's HASHLIB_GIL_MINSIZE: from this many bytes an update lets go of the GIL
HELD_MAX_BYTES = 16 * 1024  # larger chunks are hashed in one update (the GIL let go: others may run)

_pool = LazyPool("tierstore-hash", max(2, os.cpu_count() or 1))


def update_held(hasher: Any, chunk: bytes | bytearray | memoryview) -> None:
    """``hasher.update(chunk)``, holding the GIL throughout for a chunk of at most
    ``HELD_MAX_BYTES`` (fed in slices below ``GIL_MIN_BYTES``: the same digest)."""
    size = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
    if size < GIL_MIN_BYTES or size > HELD_MAX_BYTES:
        hasher.update(chunk)
        return
    view = memoryview(chunk).cast("B")
    for start in range(0, size, GIL_MIN_BYTES - 1):
        hasher.update(view[start : start + GIL_MIN_BYTES - 1])


def _update_all(hasher: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


class ThreadedHash:
    """A hashlib object (``md5``, ``sha256`` ...) updated on a worker thread, chunk after chunk."""

    __slots__ = ("_batch", "_hasher", "_held", "_pending")

    def __init__(self, hasher: Any) -> None:
        self._hasher = hasher
        self._pending: Future[None] | None = None
        self._batch: list[bytes] = []  # large chunks not handed over yet (at most ~BATCH_BYTES)
        self._held = 0

    async def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Hash ``chunk`` after every chunk before it (on a thread when it is a large ``bytes``)."""
        if type(chunk) is bytes and len(chunk) >= THREAD_MIN_BYTES:
            self._batch.append(chunk)
            self._held += len(chunk)
            if self._held >= BATCH_BYTES:
                await self._hand_over()
            return
        await self._hand_over()
        await self._wait()
        update_held(self._hasher, chunk)

    async def result(self) -> Any:
        """The hash object, every chunk given so far hashed into it."""
        await self._hand_over()
        await self._wait()
        return self._hasher

    def joined(self) -> Any:
        """``result()`` for a caller that cannot await (the chunks have all been handed over and
        the last update is normally done by then): waits for it on this thread if it is not."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()
        _update_all(self._hasher, self._batch)
        self._batch, self._held = [], 0
        return self._hasher

    async def _hand_over(self) -> None:
        """The held chunks to the thread, once the previous hand-over is hashed."""
        if self._batch:
            await self._wait()
            batch, self._batch, self._held = self._batch, [], 0
            self._pending = _pool.get().submit(_update_all, self._hasher, batch)

    async def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            if not pending.done():
                await asyncio.wrap_future(pending)
            pending.result()  # an error of the thread's update (none expected) surfaces here
