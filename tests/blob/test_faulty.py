"""FaultyBlobStore (testing/faulty.py): transparent when no fault is planned (the whole
conformance suite, over both stores), and each fault kind does what it says, replayably."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tierstore.blob import BlobInfo, BlobStore, LocalBlobStore, MemoryBlobStore
from tierstore.errors import CorruptBlob, InsufficientStorage, InternalError
from tierstore.testing.blobstore import BlobStoreConformance, collect, new_blob_id, payload, stream
from tierstore.testing.faulty import (
    MAX_DELAY_S,
    FaultPlan,
    FaultRecord,
    FaultyBlobStore,
    Op,
    Trigger,
    seed_from_env,
    seeds,
)

SEED = seed_from_env(20240601)
SEEDS = seeds(1, 2, 3)


def _faulty(store: BlobStore) -> FaultyBlobStore:
    assert isinstance(store, FaultyBlobStore)
    return store


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


# --- transparent when nothing is planned ------------------------------------------------------
class TestFaultyOverMemory(BlobStoreConformance):
    @pytest.fixture
    def store(self) -> BlobStore:
        print(f"seed={SEED}")
        return FaultyBlobStore(MemoryBlobStore(), FaultPlan(), seed=SEED)

    def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None:
        inner = _faulty(store).inner
        assert isinstance(inner, MemoryBlobStore)
        inner.flip_byte(blob_id, offset)

    def truncate(self, store: BlobStore, blob_id: str) -> None:
        inner = _faulty(store).inner
        assert isinstance(inner, MemoryBlobStore)
        inner.truncate(blob_id)


class TestFaultyOverLocal(BlobStoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        print(f"seed={SEED}")
        return FaultyBlobStore(LocalBlobStore(tmp_path / "store"), FaultPlan(), seed=SEED)

    @staticmethod
    def _local(store: BlobStore) -> LocalBlobStore:
        inner = _faulty(store).inner
        assert isinstance(inner, LocalBlobStore)
        return inner

    def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None:
        _flip(self._local(store).blob_path(blob_id), offset)

    def truncate(self, store: BlobStore, blob_id: str) -> None:
        path = self._local(store).blob_path(blob_id)
        os.truncate(path, path.stat().st_size - 1)

    def leftovers(self, store: BlobStore) -> list[str]:
        return sorted(os.listdir(self._local(store).root / "tmp"))


class TestFaultySlowDriveOverMemory(TestFaultyOverMemory):
    """The suite again with a (tiny) random delay on every call: only timing changes."""

    @pytest.fixture
    def store(self) -> BlobStore:
        print(f"seed={SEED}")
        return FaultyBlobStore(MemoryBlobStore(), FaultPlan(delay_s=0.0005), seed=SEED)


# --- each fault kind --------------------------------------------------------------------------
@pytest.fixture(params=["memory", "local"])
def inner(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "memory":
        return MemoryBlobStore()
    return LocalBlobStore(tmp_path / "store")


def _leftovers(store: BlobStore) -> list[str]:
    if isinstance(store, LocalBlobStore):
        return sorted(os.listdir(store.root / "tmp"))
    return []


async def _blob_ids(store: BlobStore) -> set[str]:
    return {info.blob_id async for info in store.scan()}


async def _put(store: BlobStore, data: bytes) -> str:
    blob_id = new_blob_id()
    assert await store.put(blob_id, stream(data, [4096])) == BlobInfo(blob_id, len(data))
    return blob_id


EIO_ERRORS: dict[Op, type[Exception]] = {
    "put": InternalError,
    "get": CorruptBlob,  # as LocalBlobStore maps a read EIO: damage
    "read": CorruptBlob,
    "stat": CorruptBlob,
    "delete": InternalError,
}


@pytest.mark.parametrize("op", list(EIO_ERRORS))
def test_eio_on_the_nth_call(inner: BlobStore, op: Op) -> None:
    print(f"seed={SEED}")
    store = FaultyBlobStore(inner, FaultPlan(eio={op: Trigger.on(2)}), seed=SEED)
    data = payload(100_000)

    async def call(blob_id: str) -> object:
        if op == "put":
            return await store.put(new_blob_id(), stream(data))
        if op == "get":
            return await collect(store, blob_id)
        if op == "read":
            return await store.read(blob_id)
        if op == "stat":
            return await store.stat(blob_id)
        return await store.delete(new_blob_id())

    async def body() -> None:
        blob_id = await _put(inner, data)  # behind the wrapper: not counted
        await call(blob_id)
        before = await _blob_ids(inner)
        with pytest.raises(EIO_ERRORS[op]) as exc_info:
            await call(blob_id)
        assert type(exc_info.value) is EIO_ERRORS[op]
        assert await _blob_ids(inner) == before  # a failed put left nothing, a failed delete removed nothing
        await call(blob_id)
        assert store.calls[op] == 3
        assert [(r.op, r.call, r.kind) for r in store.log] == [(op, 2, "eio")]
        assert await inner.read(blob_id) == data  # the stored blob was never touched

    asyncio.run(body())
    assert _leftovers(inner) == []


def test_failed_delete_keeps_the_blob(inner: BlobStore) -> None:
    store = FaultyBlobStore(inner, FaultPlan(eio={"delete": Trigger.on(1)}), seed=SEED)

    async def body() -> None:
        blob_id = await _put(store, b"x" * 10)
        with pytest.raises(InternalError):
            await store.delete(blob_id)
        assert await store.stat(blob_id) == BlobInfo(blob_id, 10)
        await store.delete(blob_id)
        assert await store.stat(blob_id) is None

    asyncio.run(body())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("kind", "error"), [("enospc", InsufficientStorage), ("torn", InternalError)])
def test_interrupted_put_leaves_nothing(inner: BlobStore, seed: int, kind: str, error: type[Exception]) -> None:
    print(f"seed={seed}")
    trigger = Trigger.on(2)
    plan = FaultPlan(enospc=trigger) if kind == "enospc" else FaultPlan(torn=trigger)
    store = FaultyBlobStore(inner, plan, seed=seed)
    data = payload(300_000, seed)

    async def body() -> None:
        kept = await _put(store, data)
        torn = new_blob_id()
        with pytest.raises(error) as exc_info:
            await store.put(torn, stream(data, [10_000, 1, 65_536]))
        assert type(exc_info.value) is error
        assert await store.stat(torn) is None
        with pytest.raises(CorruptBlob):
            await store.read(torn)
        assert await _blob_ids(inner) == {kept}
        assert await collect(store, kept) == data
        [record] = store.log
        assert (record.op, record.call, record.kind, record.blob_id) == ("put", 2, kind, torn)
        # the id is free again: a retry of the same put succeeds
        await store.put(torn, stream(data))
        assert await store.read(torn) == data

    asyncio.run(body())
    assert _leftovers(inner) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_bitflip_makes_reads_fail(inner: BlobStore, seed: int) -> None:
    print(f"seed={seed}")
    store = FaultyBlobStore(inner, FaultPlan(bitflip=Trigger.on(1, 3)), seed=seed)
    data = payload(200_000, seed)

    async def body() -> None:
        ids = [await _put(store, data) for _ in range(3)]
        assert store.flipped == {ids[0], ids[2]}
        assert [(r.call, r.kind, r.blob_id) for r in store.log] == [(1, "bitflip", ids[0]), (3, "bitflip", ids[2])]
        for blob_id in ids:
            if blob_id in store.flipped:
                with pytest.raises(CorruptBlob):
                    await collect(store, blob_id)
                with pytest.raises(CorruptBlob):
                    await store.read(blob_id)
                assert not await store.verify(blob_id)
                offset = int(next(r for r in store.log if r.blob_id == blob_id).detail.split()[1])
                block = offset - offset % 65_536
                with pytest.raises(CorruptBlob):  # the damaged block alone
                    await store.read(blob_id, block, min(65_536, len(data) - block))
            else:
                assert await collect(store, blob_id) == data
                assert await store.verify(blob_id)

    asyncio.run(body())


def test_empty_blob_is_never_flipped(inner: BlobStore) -> None:
    store = FaultyBlobStore(inner, FaultPlan(bitflip=Trigger(p=1.0)), seed=SEED)

    async def body() -> None:
        blob_id = await _put(store, b"")
        assert await store.read(blob_id) == b""
        assert store.log == []

    asyncio.run(body())


def test_slow_drive_delays_every_call_within_bound() -> None:
    print(f"seed={SEED}")
    store = FaultyBlobStore(MemoryBlobStore(), FaultPlan(delay_s=0.02), seed=SEED)

    async def body() -> None:
        blob_id = await _put(store, b"abc")
        for _ in range(5):
            assert await store.read(blob_id) == b"abc"

    started = time.monotonic()
    asyncio.run(body())
    elapsed = time.monotonic() - started
    delays = [float(r.detail.rstrip("s")) for r in store.log]
    assert [r.kind for r in store.log] == ["delay"] * 6
    assert all(0.0 <= d <= 0.02 for d in delays)
    assert elapsed >= sum(delays) * 0.9
    with pytest.raises(ValueError, match="delay_s"):
        FaultPlan(delay_s=MAX_DELAY_S * 2)


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="probability"):
        Trigger(p=1.5)
    with pytest.raises(ValueError, match="1-based"):
        Trigger.on(0)
    with pytest.raises(ValueError, match="unknown"):
        FaultPlan(eio={"scan": Trigger.on(1)})  # type: ignore[dict-item]


def test_inactive_wrapper_counts_but_injects_nothing() -> None:
    store = FaultyBlobStore(MemoryBlobStore(), FaultPlan.random(1.0), seed=SEED)
    store.active = False

    async def body() -> None:
        blob_id = await _put(store, b"data")
        assert await store.read(blob_id) == b"data"

    asyncio.run(body())
    assert store.log == []
    assert store.calls["put"] == 1
    assert store.calls["read"] == 1


# --- probability mode and replay ----------------------------------------------------------------
async def _workload(store: FaultyBlobStore, seed: int) -> list[str]:
    """A fixed sequence of calls; returns what each one did."""
    outcomes: list[str] = []
    ids: list[str] = []
    for i in range(120):
        try:
            if i % 4 == 0 or not ids:
                blob_id = f"{seed:08x}{i:024x}"
                await store.put(blob_id, stream(payload(1 + i * 997 % 150_000, seed), [8192]))
                ids.append(blob_id)
                outcomes.append("put ok")
            elif i % 4 == 1:
                outcomes.append(f"get {len(await collect(store, ids[i % len(ids)]))}")
            elif i % 4 == 2:
                outcomes.append(f"read {len(await store.read(ids[i % len(ids)]))}")
            elif i % 8 == 3:
                outcomes.append(f"stat {await store.stat(ids[i % len(ids)])}")
            else:
                await store.delete(ids.pop(0))
                outcomes.append("delete ok")
        except (InternalError, InsufficientStorage) as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def _run_workload(inner: BlobStore, seed: int) -> tuple[list[FaultRecord], list[str]]:
    store = FaultyBlobStore(inner, FaultPlan.random(0.1), seed=seed)
    outcomes = asyncio.run(_workload(store, seed))
    return store.log, outcomes


@pytest.mark.parametrize("seed", SEEDS)
def test_same_seed_same_faults(tmp_path: Path, seed: int) -> None:
    print(f"seed={seed}")
    log_a, out_a = _run_workload(MemoryBlobStore(), seed)
    log_b, out_b = _run_workload(LocalBlobStore(tmp_path / "b"), seed)  # the inner store does not matter
    assert log_a == log_b
    assert out_a == out_b
    kinds = {r.kind for r in log_a}
    assert kinds >= {"eio"}, kinds  # p=0.1 over 120 calls: some fault fires
    assert any(o in ("InternalError", "CorruptBlob", "InsufficientStorage") for o in out_a)
    log_c, _ = _run_workload(MemoryBlobStore(), seed + 1)
    assert log_c != log_a


def test_probability_mode_rate() -> None:
    print(f"seed={SEED}")
    store = FaultyBlobStore(MemoryBlobStore(), FaultPlan(eio={"stat": Trigger(p=0.25)}), seed=SEED)

    async def body() -> int:
        failures = 0
        for _ in range(2000):
            try:
                await store.stat(new_blob_id())
            except CorruptBlob:
                failures += 1
        return failures

    failures = asyncio.run(body())
    assert failures == len(store.log)
    assert 400 <= failures <= 600  # 0.25 * 2000 = 500; this band is > 6 sigma wide
