"""ErasureBlobStore: one BlobStore over a DriveSet, erasure coded across its drives.

n = k + m drives (``DriveSet.format``: k data shards, m parity). Each drive is a plain
``LocalBlobStore`` rooted at the drive's directory, and every drive stores its piece of a blob
under the **same blob id** — so each piece already has a CRC32C per 64 KiB block, fsync,
atomic link and temp-file cleanup, and a read of any range of a piece is verified before
its bytes are used. Layout (docs/erasure.md "As built"):

- **Placement.** Position j (shard j, or replica j) of a blob lives on drive
  ``(j + rotation) % n``, ``rotation = blake2b-64(blob id) % n``: derived from the id, never
  stored, so parity and hot data spread over every drive.
- **Small objects** (``size <= small_object_bytes``, decided once the stream has passed the
  threshold or ended) and every object when k == 1 (n < 4): **m + 1 full replicas** at
  positions 0..m. Piece data = object bytes + trailer.
- **Erasure coded** (larger objects): the object is cut into stripes of ``stripe_bytes``;
  each stripe is encoded with pyeclib ``isa_l_rs_cauchy`` into n fragments. Piece j holds the
  fragment *payloads* of position j, stripe after stripe (stripe s at ``s * P``, P = the
  payload size of a full stripe; the last stripe's payload may be shorter), then the trailer.
  The 80-byte pyeclib fragment header is **not stored**: it is a pure function of (k, m,
  index, stripe length) — checked at start-up — and is regenerated for decode. So data
  payloads are verbatim object bytes (the code is systematic, also checked at start-up):
  a healthy read is plain ranged reads of the data pieces, no decode; and with P a multiple
  of 64 KiB (1 MiB stripes, k in 1, 2, 4, 8, 16) every fragment sits on whole checksum
  blocks, so damage in one stripe never spills into another.
- **Trailer** (64 bytes, little-endian, at the end because the size is known only then)::

      0  4s  magic b"TSE1"          24 u32 payload bytes of a full stripe (0: replica)
      4  u16 version (1)            28 u32 payload bytes of the last stripe (0: replica)
      6  u8  layout (1 EC, 2 copy)  32 u32 CRC32C of the whole object
      7  u8  position (shard/copy)  36 u32 reserved (0)
      8  u8  k       9 u8 m         40 8s  blake2b-64 of the blob id
      10 u8  codec (1 = isa_l_rs_cauchy), 11 u8 reserved
      12 u32 stripe bytes           48 12s reserved (0)
      16 u64 object size in bytes   60 u32 CRC32C of bytes [0, 60)

Reads look the layout up in a small LRU (blobs are immutable; ``stat``, ``verify``, ``heal``
always go to disk), read only the stripes overlapping the range, and verify every byte
through the pieces' block CRCs. pyeclib decodes corrupt fragments silently, so it only ever
sees payloads that passed our checksums; whole-object reads also check the object CRC32C.
A missing, corrupt or offline piece turns the read into a degraded one for the stripes
concerned (parity pieces are read, the stripe is decoded) and the blob is reported once per
read through ``on_damage`` (or queued for ``take_damaged``). Fewer than k good fragments in a
stripe raise ``CorruptBlob``: never wrong bytes.

Writes stream stripe by stripe into one ``put`` per drive through bounded queues (a slow
drive back-pressures the writer; memory stays at a few stripes per drive). A drive failing
mid-write loses only its piece. Write quorum: k + 1 pieces (EC), min(2, m + 1) copies
(replicas); below it everything written is deleted and ``SlowDown`` (503) is raised —
``InsufficientStorage`` if every failed write failed for lack of space.

Every operation first asks ``DriveSet.state(i)``; a drive that is not ONLINE is skipped, and
its ``LocalBlobStore`` is built again (fresh directory caches) when it comes back. A missing
drive directory is never created.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

from pyeclib.ec_iface import ECDriver, ECDriverError

from tierstore.blob._local import LocalBlobStore
from tierstore.blob._protocol import BlobInfo, BlobStore, HealReport, check_range, crc32c, validate_blob_id
from tierstore.drives import DriveSet, DriveState
from tierstore.errors import CorruptBlob, InsufficientStorage, SlowDown, TierstoreError

__all__ = ["CODEC", "TRAILER", "TRAILER_MAGIC", "ErasureBlobStore", "placement"]

CODEC = "isa_l_rs_cauchy"
_CODEC_ID = 1
TRAILER = struct.Struct("<4sHBBBBBBIQIIII8s12sI")
"""magic, version, layout, position, k, m, codec, reserved, stripe bytes, object size,
full-stripe payload bytes, last-stripe payload bytes, object CRC32C, reserved, id hash,
reserved, trailer CRC32C."""
TRAILER_MAGIC = b"TSE1"
_TRAILER_VERSION = 1
_TRAILER_CRC_OFFSET = TRAILER.size - 4
_EC = 1
_REPLICA = 2
assert TRAILER.size == 64

_GROUP_PAYLOAD_BYTES = 1024 * 1024  # a read hop fetches about this much of one piece
_QUEUE_BYTES = 2 * 1024 * 1024  # per drive, queued between the encoder and the drive's writer
_LAYOUT_CACHE_ENTRIES = 4096
_SCAN_BATCH = 32
_DRIVE_ERRORS = (TierstoreError, OSError, ValueError)  # one drive's failure: that piece is unavailable


def _id_hash(blob_id: str) -> bytes:
    return hashlib.blake2b(blob_id.encode(), digest_size=8).digest()


def placement(blob_id: str, drives: int) -> list[int]:
    """``placement(id, n)[j]`` is the drive that holds position j (shard or replica j)."""
    rotation = int.from_bytes(_id_hash(blob_id), "little") % drives
    return [(j + rotation) % drives for j in range(drives)]


# --- the codec -----------------------------------------------------------------------------------
class _Codec:
    """pyeclib for one (k, m), with the properties this layout relies on checked once."""

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m, self.n = k, m, k + m
        self._driver = ECDriver(k=k, m=m, ec_type=CODEC)
        self._headers: OrderedDict[int, list[bytes]] = OrderedDict()
        self.header_bytes = self._self_check()

    def _self_check(self) -> int:
        """Systematic data fragments; headers that depend only on (index, stripe length)."""
        rng = os.urandom
        header_bytes = -1
        for length in (1, 7 * self.k + 3, 4096 * self.k + 1):
            data = rng(length)
            frags = self._driver.encode(data)
            again = self._driver.encode(rng(length))
            meta: Any = self._driver.get_metadata(frags[0], formatted=True)
            size = int(meta["size"])
            h = len(frags[0]) - size
            header_bytes = h if header_bytes < 0 else header_bytes
            ok = h == header_bytes and len(frags) == self.n
            ok = ok and all(len(f) == h + size and f[:h] == g[:h] for f, g in zip(frags, again, strict=True))
            padded = data + bytes(size * self.k - length)
            ok = ok and all(frags[i][h:] == padded[i * size : (i + 1) * size] for i in range(self.k))
            if not ok:
                raise RuntimeError(f"pyeclib {CODEC} {self.k}+{self.m} does not behave as the shard layout assumes")
        return header_bytes

    def encode(self, stripe: bytes) -> list[bytes]:
        """Fragment payloads (headers stripped) of one stripe, by position."""
        h = self.header_bytes
        return [f[h:] for f in self._driver.encode(stripe)]

    def decode(self, payloads: dict[int, bytes], length: int, blob_id: str) -> bytes:
        """The stripe (``length`` bytes) from at least k verified payloads."""
        headers = self._headers_for(length)
        frags = [headers[p] + bytes(payloads[p]) for p in sorted(payloads)[: self.k]]
        try:
            data = self._driver.decode(frags)
        except ECDriverError as exc:
            raise CorruptBlob(f"blob {blob_id}: cannot decode a stripe ({exc})", resource=blob_id) from exc
        if len(data) != length:
            raise CorruptBlob(f"blob {blob_id}: a stripe decodes to the wrong length", resource=blob_id)
        return bytes(data)

    def _headers_for(self, length: int) -> list[bytes]:
        headers = self._headers.get(length)
        if headers is None:
            h = self.header_bytes
            headers = [f[:h] for f in self._driver.encode(bytes(length))]
            self._headers[length] = headers
            if len(self._headers) > 64:
                self._headers.popitem(last=False)
        else:
            self._headers.move_to_end(length)
        return headers


@cache
def _codec(k: int, m: int) -> _Codec:
    return _Codec(k, m)


# --- layout --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Layout:
    """Everything a trailer says (but the position), plus the id-derived rotation."""

    kind: int
    n: int
    k: int
    m: int
    stripe_bytes: int
    size_bytes: int
    payload_bytes: int  # EC: payload of a full stripe (== last if there is one stripe)
    last_payload_bytes: int
    object_crc: int
    rotation: int
    id_hash: bytes

    @property
    def positions(self) -> int:
        return self.n if self.kind == _EC else self.m + 1

    @property
    def stripes(self) -> int:
        return -(-self.size_bytes // self.stripe_bytes)

    def stripe_len(self, s: int) -> int:
        return min(self.stripe_bytes, self.size_bytes - s * self.stripe_bytes)

    def payload_len(self, s: int) -> int:
        return self.last_payload_bytes if s == self.stripes - 1 else self.payload_bytes

    def group_bytes(self, s0: int, s1: int) -> int:
        """Payload bytes of stripes [s0, s1) in one piece."""
        return (s1 - s0 - 1) * self.payload_bytes + self.payload_len(s1 - 1)

    @property
    def data_bytes(self) -> int:
        """Piece data before the trailer."""
        if self.kind == _REPLICA:
            return self.size_bytes
        return (self.stripes - 1) * self.payload_bytes + self.last_payload_bytes

    def drive(self, position: int) -> int:
        return (position + self.rotation) % self.n

    def groups(self, s_first: int, s_stop: int) -> Iterator[tuple[int, int]]:
        per = max(1, _GROUP_PAYLOAD_BYTES // max(1, self.payload_bytes))
        for s0 in range(s_first, s_stop, per):
            yield s0, min(s_stop, s0 + per)

    def trailer(self, position: int) -> bytes:
        head = TRAILER.pack(
            TRAILER_MAGIC,
            _TRAILER_VERSION,
            self.kind,
            position,
            self.k,
            self.m,
            _CODEC_ID,
            0,
            self.stripe_bytes,
            self.size_bytes,
            self.payload_bytes,
            self.last_payload_bytes,
            self.object_crc,
            0,
            self.id_hash,
            bytes(12),
            0,
        )[:_TRAILER_CRC_OFFSET]
        return head + crc32c(head).to_bytes(4, "little")


def _parse_trailer(raw: bytes, id_hash: bytes, n: int, k: int, m: int) -> tuple[_Layout, int] | None:
    """(layout, position) from a trailer, or None if it is damaged or not this blob's."""
    if len(raw) != TRAILER.size or crc32c(raw[:_TRAILER_CRC_OFFSET]) != int.from_bytes(raw[-4:], "little"):
        return None
    (magic, version, kind, position, tk, tm, codec, _, stripe, size, payload, last, ocrc, _, ih, _, _) = TRAILER.unpack(
        raw
    )
    if magic != TRAILER_MAGIC or version != _TRAILER_VERSION or ih != id_hash or (tk, tm) != (k, m):
        return None
    if kind == _EC:
        ok = codec == _CODEC_ID and position < n and size > 0 and stripe > 0 and 0 < last <= payload
    else:
        ok = kind == _REPLICA and position <= m and payload == last == 0
    if not ok:
        return None
    rotation = int.from_bytes(id_hash, "little") % n
    return _Layout(kind, n, k, m, stripe, size, payload, last, ocrc, rotation, ih), position


# --- fan-out writes ------------------------------------------------------------------------------
_END = object()
_ABORT = object()


class _Aborted(Exception):
    """Raised into a drive's put to make it remove its partial piece."""


async def _drain(queue: asyncio.Queue[object]) -> AsyncIterator[bytes]:
    while True:
        item = await queue.get()
        if item is _END:
            return
        if item is _ABORT:
            raise _Aborted
        assert isinstance(item, bytes)
        yield item


def _empty(queue: asyncio.Queue[object]) -> None:
    while not queue.empty():
        queue.get_nowait()


def _empty_when_done(queue: asyncio.Queue[object], _task: asyncio.Future[Any]) -> None:
    _empty(queue)  # the writer is gone: wake a producer blocked on its full queue


class _Fanout:
    """One ``put`` per target position, each fed through its own bounded queue.

    A target whose put fails stops being fed (its queue is emptied so the producer never waits
    on it); the others carry on.
    """

    def __init__(self, blob_id: str, targets: dict[int, BlobStore], item_bytes: int) -> None:
        self.blob_id = blob_id
        self.targets = targets
        maxsize = max(2, _QUEUE_BYTES // max(1, item_bytes))
        self._queues: dict[int, asyncio.Queue[object]] = {}
        self._tasks: dict[int, asyncio.Task[BlobInfo]] = {}
        for p, store in targets.items():
            queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
            task = asyncio.ensure_future(store.put(blob_id, _drain(queue)))
            task.add_done_callback(partial(_empty_when_done, queue))
            self._queues[p], self._tasks[p] = queue, task

    async def send(self, position: int, item: bytes) -> None:
        if not self._tasks[position].done():
            await self._queues[position].put(item)

    async def finish(self, trailers: dict[int, bytes]) -> dict[int, BlobInfo | BaseException]:
        """Send each target its trailer and the end; wait for every put."""
        for p in self._tasks:
            await self.send(p, trailers[p])
            if not self._tasks[p].done():
                await self._queues[p].put(_END)
        if self._tasks:
            await asyncio.wait(self._tasks.values())
        results: dict[int, BlobInfo | BaseException] = {}
        for p, task in self._tasks.items():
            exc = task.exception()
            results[p] = exc if exc is not None else task.result()
        return results

    async def abort(self) -> None:
        """Stop every put (each removes its partial piece) and delete the pieces that were
        committed already. Never raises but CancelledError."""
        for p, task in self._tasks.items():
            if not task.done():
                _empty(self._queues[p])
                self._queues[p].put_nowait(_ABORT)
        pending = list(self._tasks.values())
        try:
            if pending:
                await asyncio.wait(pending)
        except BaseException:
            for task in pending:
                task.cancel()
            raise
        for p, task in self._tasks.items():
            if not task.cancelled() and task.exception() is None:
                with contextlib.suppress(*_DRIVE_ERRORS):
                    await self.targets[p].delete(self.blob_id)


# --- reads ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Damage:
    """Reports a blob's damage at most once per operation."""

    blob_id: str
    report: Callable[[str], None]
    reported: bool = False

    def __call__(self) -> None:
        if not self.reported:
            self.reported = True
            self.report(self.blob_id)


_Piece = tuple[bytes, CorruptBlob | None]  # bytes read, then the error that stopped the read


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # mark it retrieved: an abandoned read's error is nobody's business


async def _pipeline(jobs: Iterator[Callable[[], Coroutine[Any, Any, _Piece]]]) -> AsyncGenerator[bytes, None]:
    """Run the jobs in order, one ahead of the consumer; yield their non-empty bytes."""
    job = next(jobs, None)
    task = asyncio.ensure_future(job()) if job is not None else None
    try:
        while task is not None:
            data, error = await task
            job = next(jobs, None) if error is None else None
            task = asyncio.ensure_future(job()) if job is not None else None
            if data:
                yield data
            if error is not None:
                raise error
    finally:
        if task is not None:
            if task.done():
                _retrieve(task)
            else:
                task.cancel()
                task.add_done_callback(_retrieve)


@dataclass(slots=True)
class _Scrub:
    """Outcome of one pass over every stripe (verify/heal)."""

    bad: set[int] = field(default_factory=set)  # source positions found damaged during the pass
    lost: bool = False
    written: dict[int, BlobInfo | BaseException] = field(default_factory=dict)


class ErasureBlobStore:
    """BlobStore over the n drives of a ``DriveSet``; any m of them may be missing.

    ``drive_store(path)`` builds the store of one drive (default: ``LocalBlobStore(path,
    executor=executor)``; tests wrap it in a ``FaultyBlobStore``). ``on_damage(blob_id)`` is
    called when a read or write finds a piece missing, damaged or on an offline drive; without
    it, such ids collect in a set that ``take_damaged()`` hands out (for the repairer).
    Also a ``Healer``: ``heal(blob_id)`` rebuilds missing and damaged pieces.
    """

    def __init__(
        self,
        drives: DriveSet,
        *,
        executor: Executor | None = None,
        drive_store: Callable[[Path], BlobStore] | None = None,
        on_damage: Callable[[str], None] | None = None,
    ) -> None:
        fmt = drives.format
        fmt.validate()
        self.drives = drives
        self._n, self._m = fmt.drives, fmt.parity
        self._k = fmt.data_shards
        self._stripe_bytes = fmt.stripe_bytes
        self._small_bytes = fmt.small_object_bytes
        self._codec = _codec(self._k, self._m) if self._k > 1 else None
        if drive_store is None:

            def drive_store(path: Path) -> BlobStore:
                return LocalBlobStore(path, executor=executor)

        self._factory = drive_store
        self._damaged: set[str] = set()
        self._on_damage = on_damage if on_damage is not None else self._damaged.add
        self._layouts: OrderedDict[str, _Layout] = OrderedDict()
        self._drive_stores: list[tuple[tuple[int, ...], BlobStore] | None] = [None] * self._n
        self._stores()  # build the ONLINE drives' stores now (blocking: they clean their tmp/)

    # --- drives ----------------------------------------------------------------------------
    def _stores(self) -> list[BlobStore | None]:
        """The store of each drive that is ONLINE now (None for the others)."""
        out: list[BlobStore | None] = []
        for i in range(self._n):
            store = None
            state, identity = self.drives.probe(i)
            if state is DriveState.ONLINE and identity is not None:
                store = self._drive(i, identity)
            if store is None:
                self._drive_stores[i] = None  # built again when the drive is back
            out.append(store)
        return out

    def _drive(self, i: int, identity: tuple[int, ...]) -> BlobStore:
        # The format file's identity changes whenever the drive is formatted again (a recreated
        # directory gets a new format.json): then the old store's directory caches are stale.
        cached = self._drive_stores[i]
        if cached is not None and cached[0] == identity:
            return cached[1]
        store = self._factory(self.drives.paths[i])  # the directory exists: state() said ONLINE
        self._drive_stores[i] = (identity, store)
        return store

    def _describe(self, drives: Sequence[int]) -> str:
        return ", ".join(f"{self.drives.paths[d]} ({self.drives.state(d).value})" for d in drives) or "none"

    def take_damaged(self) -> list[str]:
        """Ids reported damaged since the last call (only when no ``on_damage`` was given)."""
        ids = sorted(self._damaged)
        self._damaged.clear()
        return ids

    # --- layout cache ------------------------------------------------------------------------
    def _remember(self, blob_id: str, layout: _Layout) -> None:
        self._layouts[blob_id] = layout
        self._layouts.move_to_end(blob_id)
        if len(self._layouts) > _LAYOUT_CACHE_ENTRIES:
            self._layouts.popitem(last=False)

    def _parse(self, blob_id: str, raw: bytes) -> tuple[_Layout, int] | None:
        return _parse_trailer(raw, _id_hash(blob_id), self._n, self._k, self._m)

    async def _probe(
        self, store: BlobStore, blob_id: str, drive: int, *, want_body: bool = False
    ) -> tuple[str, _Layout | None, bytes | None]:
        """One drive's piece: ("ok", layout, replica body or None) | ("missing" | "bad", None, None)."""
        try:
            info = await store.stat(blob_id)
        except _DRIVE_ERRORS:
            return "bad", None, None
        if info is None:
            return "missing", None, None
        size = info.size_bytes
        if size < TRAILER.size:
            return "bad", None, None
        body = None
        try:
            if want_body and size <= self._small_bytes + TRAILER.size:
                whole = await store.read(blob_id)
                body, raw = whole[: size - TRAILER.size], whole[size - TRAILER.size :]
            else:
                raw = await store.read(blob_id, size - TRAILER.size, TRAILER.size)
        except _DRIVE_ERRORS:
            return "bad", None, None
        parsed = self._parse(blob_id, raw)
        if parsed is None:
            return "bad", None, None
        layout, position = parsed
        if layout.drive(position) != drive or layout.data_bytes + TRAILER.size != size:
            return "bad", None, None
        if body is None or layout.kind != _REPLICA:
            return "ok", layout, None
        if crc32c(body) != layout.object_crc:
            return "bad", None, None
        return "ok", layout, body

    async def _locate(
        self, blob_id: str, stores: list[BlobStore | None], *, cached: bool = True, want_body: bool = False
    ) -> tuple[_Layout | None, bytes | None, bool]:
        """(layout, replica body if read along, damaged).

        Probes the positions in order; ``damaged``: a piece before the one that answered was
        missing, damaged or offline (with no answer: whether any damaged piece was seen).
        """
        if cached and (layout := self._layouts.get(blob_id)) is not None:
            self._layouts.move_to_end(blob_id)
            return layout, None, False
        damaged = skipped = False
        for drive in placement(blob_id, self._n):
            store = stores[drive]
            if store is None:
                skipped = True
                continue
            state, layout, body = await self._probe(store, blob_id, drive, want_body=want_body)
            if layout is not None:
                self._remember(blob_id, layout)
                return layout, body, damaged or skipped
            damaged = damaged or state == "bad"
            skipped = True
        return None, None, damaged

    async def _open_range(
        self, blob_id: str, offset: int, length: int | None, verify: bool = True
    ) -> tuple[int, AsyncIterator[bytes]]:
        """(end of the range, iterator over it); raises for a bad id or range, or a missing blob.

        ``verify=False`` (``BlobStore.get``): healthy pieces are read without their block CRCs
        and a whole-object read skips the object CRC32C; an unreadable piece still turns the
        read into a degraded one, whose fragments are always verified (pyeclib must only see
        good ones)."""
        validate_blob_id(blob_id)
        stores = self._stores()
        layout, body, damaged = await self._locate(blob_id, stores, want_body=True)
        if layout is None:
            raise CorruptBlob(f"blob {blob_id} is missing (no readable piece on any online drive)", resource=blob_id)
        end = check_range(layout.size_bytes, offset, length)
        damage = _Damage(blob_id, self._on_damage)
        if damaged:
            damage()
        return end, self._iter(blob_id, layout, stores, offset, end, body, damage, verify)

    # --- BlobStore -------------------------------------------------------------------------------
    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        validate_blob_id(blob_id)
        n, k, m = self._n, self._k, self._m
        quorum = self.drives.format.write_quorum
        stores = self._stores()
        offline = [d for d in range(n) if stores[d] is None]
        if n - len(offline) < quorum:
            raise SlowDown(
                f"cannot store blob {blob_id}: {n - len(offline)} of {n} drives online, {quorum} needed; "
                f"offline: {self._describe(offline)}",
                resource=blob_id,
            )
        it = aiter(chunks)
        head = bytearray()
        ended = True
        async for chunk in it:
            head += chunk
            if len(head) > self._small_bytes:
                ended = False
                break
        replicas = ended or self._codec is None
        rotation = placement(blob_id, n)[0]
        kind = _REPLICA if replicas else _EC
        positions = m + 1 if replicas else n
        drive_of = [(p + rotation) % n for p in range(positions)]
        targets = {p: s for p in range(positions) if (s := stores[drive_of[p]]) is not None}
        item_bytes = self._stripe_bytes if replicas else -(-self._stripe_bytes // k)
        fan = _Fanout(blob_id, targets, item_bytes)
        try:
            size = object_crc = full_payload = last_payload = 0
            buf = head
            while True:
                while len(buf) >= self._stripe_bytes or (ended and buf):
                    piece = bytes(buf[: self._stripe_bytes])
                    del buf[: self._stripe_bytes]
                    size += len(piece)
                    object_crc = crc32c(piece, object_crc)
                    if replicas:
                        for p in targets:
                            await fan.send(p, piece)
                        continue
                    assert self._codec is not None
                    payloads = self._codec.encode(piece)
                    last_payload = len(payloads[0])
                    if len(piece) == self._stripe_bytes:
                        assert full_payload in (0, last_payload)
                        full_payload = last_payload
                    for p in targets:
                        await fan.send(p, payloads[p])
                if ended:
                    break
                try:
                    buf += await anext(it)
                except StopAsyncIteration:
                    ended = True
            layout = _Layout(
                kind,
                n,
                k,
                m,
                self._stripe_bytes,
                size,
                full_payload or last_payload,
                last_payload,
                object_crc,
                rotation,
                _id_hash(blob_id),
            )
            results = await fan.finish({p: layout.trailer(p) for p in targets})
        except BaseException:
            await fan.abort()
            raise
        stored = [p for p, r in results.items() if isinstance(r, BlobInfo)]
        failed = {p: r for p, r in results.items() if isinstance(r, BaseException)}
        needed = min(2, m + 1) if replicas else quorum
        exists = any(isinstance(e, ValueError) and not isinstance(e, TierstoreError) for e in failed.values())
        foreign = any(not isinstance(e, _DRIVE_ERRORS) for e in failed.values())
        if len(stored) < needed or exists or foreign:
            for p in stored:
                with contextlib.suppress(*_DRIVE_ERRORS):
                    await targets[p].delete(blob_id)
            self._raise_write_failure(blob_id, failed, drive_of, offline, len(stored), needed)
        if len(stored) < positions:
            self._on_damage(blob_id)
        self._remember(blob_id, layout)
        return BlobInfo(blob_id, size)

    def _raise_write_failure(
        self,
        blob_id: str,
        failed: dict[int, BaseException],
        drive_of: list[int],
        offline: list[int],
        stored: int,
        needed: int,
    ) -> None:
        for exc in failed.values():  # anything but a drive error is not ours to translate
            if not isinstance(exc, _DRIVE_ERRORS):
                raise exc
        for exc in failed.values():
            if isinstance(exc, ValueError) and not isinstance(exc, TierstoreError):
                raise ValueError(f"blob {blob_id} already exists") from exc
        reasons = "; ".join(f"{self.drives.paths[drive_of[p]]}: {exc}" for p, exc in failed.items())
        message = (
            f"cannot store blob {blob_id}: {stored} pieces written, {needed} needed; "
            f"offline: {self._describe(offline)}; failed: {reasons or 'none'}"
        )
        if failed and all(isinstance(e, InsufficientStorage) for e in failed.values()):
            raise InsufficientStorage(message, resource=blob_id)
        raise SlowDown(message, resource=blob_id)

    async def get(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> AsyncIterator[bytes]:
        _, chunks = await self._open_range(blob_id, offset, length, verify)
        return chunks

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True) -> bytes:
        _, chunks = await self._open_range(blob_id, offset, length, verify)
        parts = [chunk async for chunk in chunks]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def delete(self, blob_id: str) -> None:
        """Delete on every ONLINE drive (a piece on an offline drive is left for GC to find)."""
        validate_blob_id(blob_id)
        self._layouts.pop(blob_id, None)
        stores = [s for s in self._stores() if s is not None]
        results = await asyncio.gather(*(s.delete(blob_id) for s in stores), return_exceptions=True)
        self._layouts.pop(blob_id, None)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def stat(self, blob_id: str) -> BlobInfo | None:
        """Size from the first readable trailer (read from disk); CorruptBlob if pieces exist
        but none has a readable trailer."""
        validate_blob_id(blob_id)
        layout, _, damaged = await self._locate(blob_id, self._stores(), cached=False)
        if layout is not None:
            return BlobInfo(blob_id, layout.size_bytes)
        if damaged:
            raise CorruptBlob(f"blob {blob_id}: no piece has a readable trailer", resource=blob_id)
        return None

    async def blob_crc32c(self, blob_id: str) -> int | None:
        """The whole blob's CRC32C, as its trailer records it (no data read; the mover's
        metadata, docs/tiers.md "The mover"); the bytes are verified when read. None without a
        readable trailer (the mover then reads the blob)."""
        validate_blob_id(blob_id)
        layout, _, _ = await self._locate(blob_id, self._stores(), cached=False)
        return None if layout is None else int(layout.object_crc)

    async def scan(self) -> AsyncIterator[BlobInfo]:
        """Union of the ONLINE drives' listings. The size comes from the listed piece's trailer
        (one 64-byte read per blob not in the layout cache; a damaged blob is listed with a best
        guess). Remembers every id seen during the scan (memory: O(blobs))."""
        stores = self._stores()
        seen: set[str] = set()
        for drive, store in enumerate(stores):
            if store is None:
                continue
            batch: list[BlobInfo] = []
            listing = aiter(store.scan())
            while True:
                try:
                    info = await anext(listing)
                except StopAsyncIteration:
                    break
                except _DRIVE_ERRORS:
                    break  # this drive went away mid-scan: the others still list their pieces
                if info.blob_id in seen:
                    continue
                seen.add(info.blob_id)
                batch.append(info)
                if len(batch) >= _SCAN_BATCH:
                    for result in await self._sizes(stores, store, drive, batch):
                        yield result
                    batch = []
            for result in await self._sizes(stores, store, drive, batch):
                yield result

    async def _sizes(
        self, stores: list[BlobStore | None], store: BlobStore, drive: int, infos: list[BlobInfo]
    ) -> list[BlobInfo]:
        async def one(info: BlobInfo) -> BlobInfo:
            blob_id, piece_bytes = info.blob_id, info.size_bytes
            layout = self._layouts.get(blob_id)
            if layout is None and piece_bytes >= TRAILER.size:
                with contextlib.suppress(*_DRIVE_ERRORS):
                    parsed = self._parse(blob_id, await store.read(blob_id, piece_bytes - TRAILER.size, TRAILER.size))
                    if parsed is not None and parsed[0].drive(parsed[1]) == drive:
                        layout = parsed[0]
                        self._remember(blob_id, layout)
            if layout is None:
                layout, _, _ = await self._locate(blob_id, stores, cached=False)
            size = layout.size_bytes if layout is not None else max(0, piece_bytes - TRAILER.size)
            return BlobInfo(blob_id, size)

        return list(await asyncio.gather(*(one(info) for info in infos)))

    async def verify(self, blob_id: str) -> bool:
        """True iff the blob is fully readable *and* at full redundancy: every piece present on
        an ONLINE drive, its trailer intact, every block checksum good and every fragment
        consistent with the others (re-encoded), and the object CRC32C matches."""
        validate_blob_id(blob_id)
        stores = self._stores()
        layout, _, _ = await self._locate(blob_id, stores, cached=False)
        if layout is None:
            return False
        states = await self._probe_all(blob_id, layout, stores)
        if any(state != "ok" for state in states):
            return False
        scrub = await self._scrub(blob_id, layout, stores, list(range(layout.positions)), {}, stop_early=True)
        return not scrub.lost and not scrub.bad

    # --- heal ------------------------------------------------------------------------------
    async def heal(self, blob_id: str) -> HealReport:
        """Check every piece; rewrite missing or damaged ones on ONLINE drives.

        Reads every present piece in full and rebuilds the others stripe by stripe from any k
        good fragments (replicas: copied from a good one) in the same pass. A piece whose
        trailer is unreadable is deleted first (it was never used as a source); a piece found
        damaged during the pass is deleted and rewritten in a second pass. Nothing is written
        when the blob is ``lost``. Pieces on offline drives count as ``shards_unavailable``.
        """
        validate_blob_id(blob_id)
        stores = self._stores()
        layout, _, _ = await self._locate(blob_id, stores, cached=False)
        if layout is None:
            return HealReport(blob_id, 0, 0, 0, 0, 0, 0, lost=True)
        states = await self._probe_all(blob_id, layout, stores)
        sources = [p for p, state in enumerate(states) if state == "ok"]
        targets = [p for p, state in enumerate(states) if state in ("missing", "bad")]
        await self._delete_pieces(blob_id, layout, stores, [p for p in targets if states[p] == "bad"])
        first = await self._scrub(blob_id, layout, stores, sources, self._targets(layout, stores, targets))
        rebuilt, written, failed = self._tally(layout, first)
        lost, damaged = first.lost, set(first.bad)
        if damaged and not lost:  # damage found while reading: rewrite those pieces too
            again = sorted(damaged)
            await self._delete_pieces(blob_id, layout, stores, again)
            good = [p for p in sources if p not in damaged]
            good += [p for p, r in first.written.items() if isinstance(r, BlobInfo)]
            second = await self._scrub(blob_id, layout, stores, sorted(good), self._targets(layout, stores, again))
            more = self._tally(layout, second)
            rebuilt, written, failed = rebuilt + more[0], written + more[1], failed + more[2]
            lost, damaged = second.lost, damaged | second.bad
        self._layouts.pop(blob_id, None)
        return HealReport(
            blob_id=blob_id,
            size_bytes=layout.size_bytes,
            shards_total=layout.positions,
            shards_ok=sum(p not in damaged for p in sources),
            shards_rebuilt=rebuilt,
            shards_unavailable=states.count("offline") + failed,
            bytes_written=written,
            lost=lost,
        )

    def _targets(self, layout: _Layout, stores: list[BlobStore | None], positions: list[int]) -> dict[int, BlobStore]:
        return {p: s for p in positions if (s := stores[layout.drive(p)]) is not None}

    @staticmethod
    def _tally(layout: _Layout, scrub: _Scrub) -> tuple[int, int, int]:
        rebuilt = sum(isinstance(r, BlobInfo) for r in scrub.written.values())
        failed = len(scrub.written) - rebuilt
        return rebuilt, rebuilt * (layout.data_bytes + TRAILER.size), failed

    async def _delete_pieces(
        self, blob_id: str, layout: _Layout, stores: list[BlobStore | None], positions: list[int]
    ) -> None:
        for p in positions:
            store = stores[layout.drive(p)]
            if store is not None:
                with contextlib.suppress(*_DRIVE_ERRORS):
                    await store.delete(blob_id)

    async def _probe_all(self, blob_id: str, layout: _Layout, stores: list[BlobStore | None]) -> list[str]:
        """Per position: "ok" (trailer agrees with ``layout``), "missing", "bad" or "offline"."""

        async def one(p: int) -> str:
            drive = layout.drive(p)
            store = stores[drive]
            if store is None:
                return "offline"
            state, found, _ = await self._probe(store, blob_id, drive)
            if state == "ok" and found != layout:
                return "bad"
            return state

        return list(await asyncio.gather(*(one(p) for p in range(layout.positions))))

    # --- the pass behind verify and heal -----------------------------------------------------
    async def _scrub(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        sources: list[int],
        targets: dict[int, BlobStore],
        *,
        stop_early: bool = False,
    ) -> _Scrub:
        """Read every source piece in full, checking it; feed rebuilt pieces to ``targets``."""
        result = _Scrub()
        item_bytes = layout.stripe_bytes if layout.kind == _REPLICA else layout.payload_bytes
        fan = _Fanout(blob_id, targets, item_bytes) if targets else None
        try:
            if layout.kind == _EC:
                await self._scrub_ec(blob_id, layout, stores, sources, fan, result, stop_early)
            else:
                await self._scrub_replicas(blob_id, layout, stores, sources, fan, result, stop_early)
            if fan is not None:
                if result.lost or (stop_early and result.bad):
                    await fan.abort()
                else:
                    result.written = await fan.finish({p: layout.trailer(p) for p in targets})
        except BaseException:
            if fan is not None:
                await fan.abort()
            raise
        return result

    async def _scrub_ec(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        sources: list[int],
        fan: _Fanout | None,
        result: _Scrub,
        stop_early: bool,
    ) -> None:
        codec = self._codec
        assert codec is not None
        object_crc = 0
        for s0, s1 in layout.groups(0, layout.stripes):
            per_stripe = await self._fragments(blob_id, layout, stores, sources, s0, s1)
            for s in range(s0, s1):
                frags = per_stripe[s - s0]
                result.bad.update(p for p in sources if p not in frags)
                if len(frags) < layout.k:
                    result.lost = True
                    return
                data = codec.decode(frags, layout.stripe_len(s), blob_id)
                payloads = codec.encode(data)
                result.bad.update(p for p, payload in frags.items() if payload != payloads[p])
                object_crc = crc32c(data, object_crc)
                if stop_early and result.bad:
                    return
                if fan is not None:
                    for p in fan.targets:
                        await fan.send(p, payloads[p])
        if object_crc != layout.object_crc:
            result.lost = True

    async def _scrub_replicas(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        sources: list[int],
        fan: _Fanout | None,
        result: _Scrub,
        stop_early: bool,
    ) -> None:
        crcs = dict.fromkeys(sources, 0)
        fed_crc = 0
        for start in range(0, layout.size_bytes, _GROUP_PAYLOAD_BYTES):
            end = min(layout.size_bytes, start + _GROUP_PAYLOAD_BYTES)
            pieces = await asyncio.gather(
                *(self._read_piece(stores[layout.drive(p)], blob_id, start, end - start) for p in sources)
            )
            good: bytes | None = None
            for p, piece in zip(sources, pieces, strict=True):
                if piece is None:
                    result.bad.add(p)
                    continue
                crcs[p] = crc32c(piece, crcs[p])
                good = piece if good is None else good
            if good is None:
                result.lost = True
                return
            if stop_early and result.bad:
                return
            fed_crc = crc32c(good, fed_crc)
            if fan is not None:
                for p in fan.targets:
                    await fan.send(p, good)
        result.bad.update(p for p, value in crcs.items() if value != layout.object_crc)
        if fed_crc != layout.object_crc:  # pieces good by their block CRCs yet not the object: give up
            result.lost = True

    # --- reading --------------------------------------------------------------------------------
    @staticmethod
    async def _read_piece(
        store: BlobStore | None, blob_id: str, offset: int, length: int, verify: bool = True
    ) -> bytes | None:
        """Verified bytes of one drive's piece (``verify=False``: unchecked), or None if that
        drive cannot give them."""
        if store is None:
            return None
        try:
            return await store.read(blob_id, offset, length, verify=verify)
        except _DRIVE_ERRORS:
            return None

    async def _fragments(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        positions: Sequence[int],
        s0: int,
        s1: int,
        have: dict[int, bytes] | None = None,
    ) -> list[dict[int, bytes]]:
        """Per stripe of [s0, s1): the verified payloads of ``positions`` (those readable).

        A whole-group read per piece first; a piece that fails it is read stripe by stripe, so
        one bad checksum block costs only the stripes it covers. ``have`` holds group buffers
        already read.
        """
        base = s0 * layout.payload_bytes
        span = layout.group_bytes(s0, s1)
        groups = dict(have or {})
        todo = [p for p in positions if p not in groups]
        reads = await asyncio.gather(*(self._read_piece(stores[layout.drive(p)], blob_id, base, span) for p in todo))
        failed = []
        for p, buf in zip(todo, reads, strict=True):
            if buf is None:
                failed.append(p)
            else:
                groups[p] = buf
        out: list[dict[int, bytes]] = []
        for s in range(s0, s1):
            off = (s - s0) * layout.payload_bytes
            out.append({p: buf[off : off + layout.payload_len(s)] for p, buf in groups.items()})
        if failed and s1 - s0 > 1:
            singles = await asyncio.gather(
                *(
                    self._read_piece(stores[layout.drive(p)], blob_id, s * layout.payload_bytes, layout.payload_len(s))
                    for s in range(s0, s1)
                    for p in failed
                )
            )
            it = iter(singles)
            for s in range(s0, s1):
                for p in failed:
                    piece = next(it)
                    if piece is not None:
                        out[s - s0][p] = piece
        return out

    def _iter(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        start: int,
        end: int,
        body: bytes | None,
        damage: _Damage,
        verify: bool = True,
    ) -> AsyncIterator[bytes]:
        if body is not None:
            return _yield_slice(body, start, end)
        if layout.kind == _REPLICA:
            jobs = self._replica_jobs(blob_id, layout, stores, start, end, damage, verify)
        else:
            jobs = self._ec_jobs(blob_id, layout, stores, start, end, damage, verify)
        pieces = _pipeline(jobs)
        if verify and start == 0 and end == layout.size_bytes:
            return _checked(pieces, layout.object_crc, blob_id)
        return pieces

    def _replica_jobs(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        start: int,
        end: int,
        damage: _Damage,
        verify: bool,
    ) -> Iterator[Callable[[], Coroutine[Any, Any, _Piece]]]:
        order = [stores[layout.drive(p)] for p in range(layout.positions)]
        if any(s is None for s in order):
            damage()
        replicas = [s for s in order if s is not None]

        async def piece(lo: int, hi: int) -> _Piece:
            for store in replicas:
                data = await self._read_piece(store, blob_id, lo, hi - lo, verify)
                if data is not None:
                    return data, None
                damage()
            return b"", CorruptBlob(
                f"blob {blob_id}: bytes [{lo}, {hi}) are unreadable on every copy", resource=blob_id
            )

        for lo in range(start, end, _GROUP_PAYLOAD_BYTES):
            yield partial(piece, lo, min(end, lo + _GROUP_PAYLOAD_BYTES))

    def _ec_jobs(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        start: int,
        end: int,
        damage: _Damage,
        verify: bool,
    ) -> Iterator[Callable[[], Coroutine[Any, Any, _Piece]]]:
        first, stop = start // layout.stripe_bytes, -(-end // layout.stripe_bytes)
        for s0, s1 in layout.groups(first, stop):
            yield partial(self._read_group, blob_id, layout, stores, s0, s1, start, end, damage, verify)

    async def _read_group(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        s0: int,
        s1: int,
        start: int,
        end: int,
        damage: _Damage,
        verify: bool = True,
    ) -> _Piece:
        """Object bytes [start, end) ∩ stripes [s0, s1): data pieces only when they are healthy."""
        k, stripe_bytes, payload_bytes = layout.k, layout.stripe_bytes, layout.payload_bytes
        wanted: list[tuple[int, int, int, int]] = []  # (stripe, position, payload lo, payload hi)
        spans: dict[int, list[int]] = {}  # position -> [piece lo, piece hi)
        for s in range(s0, s1):
            base, length, p_len = s * stripe_bytes, layout.stripe_len(s), layout.payload_len(s)
            x0, x1 = max(start, base) - base, min(end, base + length) - base
            for i in range(k):
                u, v = max(x0, i * p_len), min(x1, (i + 1) * p_len)
                if u < v:
                    lo, hi = s * payload_bytes + u - i * p_len, s * payload_bytes + v - i * p_len
                    wanted.append((s, i, lo, hi))
                    span = spans.setdefault(i, [lo, hi])
                    span[0], span[1] = min(span[0], lo), max(span[1], hi)
        positions = sorted(spans)
        reads = await asyncio.gather(
            *(
                self._read_piece(stores[layout.drive(i)], blob_id, spans[i][0], spans[i][1] - spans[i][0], verify)
                for i in positions
            )
        )
        bufs = dict(zip(positions, reads, strict=True))
        if all(buf is not None for buf in bufs.values()):
            parts = []
            for _s, i, lo, hi in wanted:
                buf = bufs[i]
                assert buf is not None
                parts.append(memoryview(buf)[lo - spans[i][0] : hi - spans[i][0]])
            return b"".join(parts), None
        damage()
        return await self._read_group_degraded(
            blob_id, layout, stores, s0, s1, start, end, {p for p in bufs if bufs[p] is None}
        )

    async def _read_group_degraded(
        self,
        blob_id: str,
        layout: _Layout,
        stores: list[BlobStore | None],
        s0: int,
        s1: int,
        start: int,
        end: int,
        failed: set[int],
    ) -> _Piece:
        codec = self._codec
        assert codec is not None
        k = layout.k
        order = [p for p in range(layout.n) if p not in failed and stores[layout.drive(p)] is not None]
        base, span = s0 * layout.payload_bytes, layout.group_bytes(s0, s1)
        groups: dict[int, bytes] = {}
        tried = 0
        while len(groups) < k and tried < len(order):  # whole-group reads, as few pieces as will do
            batch = order[tried : tried + k - len(groups)]
            tried += len(batch)
            reads = await asyncio.gather(
                *(self._read_piece(stores[layout.drive(p)], blob_id, base, span) for p in batch)
            )
            groups.update((p, buf) for p, buf in zip(batch, reads, strict=True) if buf is not None)
        if len(groups) >= k:
            per_stripe = await self._fragments(blob_id, layout, stores, sorted(groups), s0, s1, groups)
        else:  # stripe by stripe from every piece still reachable
            candidates = [p for p in range(layout.n) if stores[layout.drive(p)] is not None]
            per_stripe = await self._fragments(blob_id, layout, stores, candidates, s0, s1, groups)
        parts: list[bytes] = []
        for s in range(s0, s1):
            frags = per_stripe[s - s0]
            if len(frags) < k:
                error = CorruptBlob(
                    f"blob {blob_id}: stripe {s} has {len(frags)} readable fragments, {k} needed", resource=blob_id
                )
                return b"".join(parts), error
            data = codec.decode(frags, layout.stripe_len(s), blob_id)
            stripe_start = s * layout.stripe_bytes
            lo, hi = max(start, stripe_start) - stripe_start, min(end, stripe_start + len(data)) - stripe_start
            parts.append(data if (lo, hi) == (0, len(data)) else data[lo:hi])
        return b"".join(parts), None


async def _yield_slice(body: bytes, start: int, end: int) -> AsyncIterator[bytes]:
    if start < end:
        yield body[start:end]


async def _checked(pieces: AsyncGenerator[bytes, None], object_crc: int, blob_id: str) -> AsyncIterator[bytes]:
    """Pass ``pieces`` on; at the end, check the whole object's CRC32C (a decoder-bug guard)."""
    crc = 0
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            crc = crc32c(piece, crc)
            yield piece
    if crc != object_crc:
        raise CorruptBlob(f"blob {blob_id}: the object checksum does not match", resource=blob_id)
