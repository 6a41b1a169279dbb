"""FaultyBlobStore: a BlobStore wrapper that injects faults on a seeded schedule (STYLE.md 11).

Every decision (which call fails, where a write tears, which bit flips, how long a call
stalls) comes from one ``random.Random(seed)``, consulted in call order, so a sequential test
replays exactly from its seed. Faults surface as the wrapped store would surface them::

    put    EIO      -> InternalError        (LocalBlobStore: a write error)
    put    ENOSPC   -> InsufficientStorage  (after k bytes; the inner store removes the partial blob)
    put    torn     -> InternalError        (after k bytes, as if the write died mid-way)
    get    EIO      -> CorruptBlob          (LocalBlobStore: a media error on read is damage)
    read   EIO      -> CorruptBlob
    stat   EIO      -> CorruptBlob
    delete EIO      -> InternalError        (the blob stays)

A bit flip lets the put succeed, then damages the stored data through the inner store's
test hook (``MemoryBlobStore.flip_byte``, or the file of a ``LocalBlobStore``), so later
reads raise ``CorruptBlob``. ``scan`` and ``verify`` are passed through untouched.

Usage::

    seed = seed_from_env(1234)
    print(f"seed={seed}")
    store = FaultyBlobStore(MemoryBlobStore(), FaultPlan(eio={"get": Trigger(nth=frozenset({3}))}), seed=seed)
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from tierstore.blob import BlobInfo, BlobStore, LocalBlobStore, MemoryBlobStore
from tierstore.errors import CorruptBlob, InsufficientStorage, InternalError

__all__ = [
    "MAX_DELAY_S",
    "OPS",
    "SEED_ENV",
    "FaultKind",
    "FaultPlan",
    "FaultRecord",
    "FaultyBlobStore",
    "Op",
    "Trigger",
    "seed_from_env",
    "seeds",
]

Op = Literal["put", "get", "read", "delete", "stat"]
FaultKind = Literal["eio", "enospc", "torn", "bitflip", "delay"]
OPS: tuple[Op, ...] = ("put", "get", "read", "delete", "stat")
MAX_DELAY_S = 1.0
"""Upper bound on the per-call delay a plan may ask for (keeps "slow drive" tests bounded)."""
SEED_ENV = "TIERSTORE_TEST_SEED"


def seed_from_env(default: int) -> int:
    """``TIERSTORE_TEST_SEED`` if set (to replay a failure), else ``default``."""
    value = os.environ.get(SEED_ENV, "").strip()
    return int(value, 0) if value else default


def seeds(*defaults: int) -> list[int]:
    """Fixed seeds for ``pytest.mark.parametrize``, plus ``TIERSTORE_TEST_SEED`` if set."""
    out = list(defaults)
    value = os.environ.get(SEED_ENV, "").strip()
    if value and int(value, 0) not in out:
        out.append(int(value, 0))
    return out


@dataclass(frozen=True, slots=True)
class Trigger:
    """When a fault fires: on the listed call numbers (1-based, per operation), and/or on
    each call with probability ``p`` (drawn from the seeded RNG)."""

    nth: frozenset[int] = frozenset()
    p: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"probability {self.p} is not in [0, 1]")
        if any(n < 1 for n in self.nth):
            raise ValueError("call numbers are 1-based")

    @classmethod
    def on(cls, *calls: int) -> Trigger:
        """Fire on exactly these call numbers."""
        return cls(nth=frozenset(calls))

    @property
    def active(self) -> bool:
        return bool(self.nth) or self.p > 0.0

    def fires(self, call: int, rng: random.Random) -> bool:
        if not self.active:
            return False  # draw nothing: an inactive trigger does not shift the schedule
        hit_p = rng.random() < self.p if self.p > 0.0 else False
        return call in self.nth or hit_p


_NEVER = Trigger()


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to inject. The default plan injects nothing (the wrapper is transparent)."""

    eio: Mapping[Op, Trigger] = field(default_factory=lambda: MappingProxyType({}))
    """EIO per operation."""
    enospc: Trigger = _NEVER
    """Disk full during a put, after k bytes (k uniform in [0, tear_max_bytes])."""
    torn: Trigger = _NEVER
    """A put that stops after k bytes and raises."""
    bitflip: Trigger = _NEVER
    """After a successful non-empty put, damage one byte of the stored data."""
    tear_max_bytes: int = 256 * 1024
    delay_s: float = 0.0
    """Slow drive: each call first sleeps uniform [0, delay_s] seconds (at most MAX_DELAY_S)."""

    def __post_init__(self) -> None:
        unknown = set(self.eio) - set(OPS)
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}")
        if not 0.0 <= self.delay_s <= MAX_DELAY_S:
            raise ValueError(f"delay_s must be in [0, {MAX_DELAY_S}]")
        if self.tear_max_bytes < 0:
            raise ValueError("tear_max_bytes must be >= 0")

    @classmethod
    def random(cls, p: float, ops: tuple[Op, ...] = OPS, *, bitflip_p: float | None = None) -> FaultPlan:
        """Every kind of fault with probability ``p`` per call (EIO on ``ops``)."""
        t = Trigger(p=p)
        return cls(
            eio=MappingProxyType(dict.fromkeys(ops, t)),
            enospc=t,
            torn=t,
            bitflip=t if bitflip_p is None else Trigger(p=bitflip_p),
        )


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One injected fault. ``call`` is the per-operation call number (1-based)."""

    op: Op
    call: int
    kind: FaultKind
    blob_id: str
    detail: str = ""

    def replayable(self) -> tuple[str, int, str, str]:
        """The record without the blob id (which a caller may draw at random)."""
        return (self.op, self.call, self.kind, self.detail)


class _Injected(Exception):
    """Raised into the inner store's put to make it abort (then translated)."""


class FaultyBlobStore:
    """BlobStore wrapper injecting the faults of ``plan`` on a schedule fixed by ``seed``.

    ``calls`` counts every call per operation; ``log`` lists the injected faults in order;
    ``flipped`` holds the ids of blobs whose data was damaged. Set ``active = False`` (or
    assign a new ``plan``) to stop injecting; counting and logging go on.
    """

    def __init__(self, inner: BlobStore, plan: FaultPlan, *, seed: int) -> None:
        self.inner = inner
        self.plan = plan
        self.seed = seed
        self.active = True
        self.calls: Counter[str] = Counter()
        self.log: list[FaultRecord] = []
        self.flipped: set[str] = set()
        self._rng = random.Random(seed)

    # --- BlobStore ------------------------------------------------------------------------
    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        call = await self._enter("put", blob_id)
        if self._eio("put", call, blob_id):
            raise InternalError(f"cannot store blob {blob_id}: {os.strerror(errno.EIO)}", resource=blob_id)
        tears: tuple[tuple[FaultKind, Trigger], ...] = (("enospc", self.plan.enospc), ("torn", self.plan.torn))
        for kind, trigger in tears:
            if self.active and trigger.fires(call, self._rng):
                limit = self._rng.randint(0, self.plan.tear_max_bytes)
                self._record("put", call, kind, blob_id, f"after {limit} bytes")
                try:
                    await self.inner.put(blob_id, _cut(chunks, limit))
                except _Injected:
                    pass
                else:  # pragma: no cover - _cut always raises
                    raise AssertionError("a torn put committed")
                if kind == "enospc":
                    reason = os.strerror(errno.ENOSPC)
                    raise InsufficientStorage(f"cannot store blob {blob_id}: {reason}", resource=blob_id)
                raise InternalError(f"cannot store blob {blob_id}: write torn after {limit} bytes", resource=blob_id)
        info = await self.inner.put(blob_id, chunks)
        if self.active and info.size_bytes > 0 and self.plan.bitflip.fires(call, self._rng):
            offset = self._rng.randrange(info.size_bytes)
            mask = 1 << self._rng.randrange(8)
            self._flip(blob_id, offset, mask)
            self.flipped.add(blob_id)
            self._record("put", call, "bitflip", blob_id, f"offset {offset}")
        return info

    async def get(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> AsyncIterator[bytes]:
        call = await self._enter("get", blob_id)
        if self._eio("get", call, blob_id):
            raise CorruptBlob(f"blob {blob_id} is unreadable (I/O error)", resource=blob_id)
        return await self.inner.get(blob_id, offset, length, verify=verify)

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True) -> bytes:
        call = await self._enter("read", blob_id)
        if self._eio("read", call, blob_id):
            raise CorruptBlob(f"blob {blob_id} is unreadable (I/O error)", resource=blob_id)
        return await self.inner.read(blob_id, offset, length, verify=verify)

    async def delete(self, blob_id: str) -> None:
        call = await self._enter("delete", blob_id)
        if self._eio("delete", call, blob_id):
            raise InternalError(f"cannot delete blob {blob_id}", resource=blob_id)
        await self.inner.delete(blob_id)

    async def stat(self, blob_id: str) -> BlobInfo | None:
        call = await self._enter("stat", blob_id)
        if self._eio("stat", call, blob_id):
            raise CorruptBlob(f"blob {blob_id} is unreadable (I/O error)", resource=blob_id)
        return await self.inner.stat(blob_id)

    def scan(self) -> AsyncIterator[BlobInfo]:
        return self.inner.scan()

    async def verify(self, blob_id: str) -> bool:
        return await self.inner.verify(blob_id)

    # --- internals ------------------------------------------------------------------------
    async def _enter(self, op: Op, blob_id: str) -> int:
        self.calls[op] += 1
        call = self.calls[op]
        if self.active and self.plan.delay_s > 0.0:
            delay = self._rng.uniform(0.0, self.plan.delay_s)
            self._record(op, call, "delay", blob_id, f"{delay:.6f}s")
            await asyncio.sleep(delay)
        return call

    def _eio(self, op: Op, call: int, blob_id: str) -> bool:
        if not self.active or not self.plan.eio.get(op, _NEVER).fires(call, self._rng):
            return False
        self._record(op, call, "eio", blob_id)
        return True

    def _record(self, op: Op, call: int, kind: FaultKind, blob_id: str, detail: str = "") -> None:
        self.log.append(FaultRecord(op, call, kind, blob_id, detail))

    def _flip(self, blob_id: str, offset: int, mask: int) -> None:
        inner = self.inner
        if isinstance(inner, MemoryBlobStore):
            inner.flip_byte(blob_id, offset)  # its hook inverts the whole byte
        elif isinstance(inner, LocalBlobStore):
            with inner.blob_path(blob_id).open("r+b") as f:  # data byte k is file byte k
                f.seek(offset)
                byte = f.read(1)
                f.seek(offset)
                f.write(bytes([byte[0] ^ mask]))
        else:
            raise NotImplementedError(f"no bit flip hook for {type(inner).__name__}")


async def _cut(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """Pass on the first ``limit`` bytes of ``chunks``, then raise ``_Injected``."""
    left = limit
    async for chunk in chunks:
        if left <= 0:
            break
        piece = chunk[:left]
        left -= len(piece)
        if piece:
            yield piece
    raise _Injected
