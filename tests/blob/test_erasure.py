"""ErasureBlobStore (blob/_erasure.py): the conformance suite on 2+2, 4+2 and 3 replicas, and
what erasure coding is for — losing drives, bit rot, failed writes, heal — on real files.

Randomized tests take their seed from ``seeds(...)`` / ``TIERSTORE_TEST_SEED`` (testing/faulty.py)
and print it; rerun one with ``TIERSTORE_TEST_SEED=<seed> pytest tests/blob/test_erasure.py -k ...``.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tierstore.blob import (
    BLOCK_SIZE_BYTES,
    BlobInfo,
    BlobStore,
    ErasureBlobStore,
    Healer,
    LocalBlobStore,
    MemoryBlobStore,
)
from tierstore.blob._erasure import TRAILER, TRAILER_MAGIC, placement
from tierstore.blob._local import blob_file_size, data_size_from_file_size
from tierstore.blob._protocol import crc32c
from tierstore.drives import DriveSet
from tierstore.errors import CorruptBlob, InsufficientStorage, SlowDown
from tierstore.testing.blobstore import BlobStoreConformance, collect, new_blob_id, payload, stream
from tierstore.testing.faulty import FaultPlan, FaultyBlobStore, Trigger, seed_from_env, seeds

B = BLOCK_SIZE_BYTES
MIB = 1024 * 1024
KIB = 1024
SMALL = 4 * KIB  # small_object_bytes in these tests: objects up to 4 KiB are replicated
SEED = seed_from_env(20261122)
SEEDS = seeds(1, 2, 3)
T = TypeVar("T")


# --- a drive set on real directories -----------------------------------------------------------
@dataclass
class Rig:
    drives: DriveSet
    store: ErasureBlobStore
    damaged: list[str] = field(default_factory=list)
    built: list[Path] = field(default_factory=list)  # drive stores built, in order

    @property
    def n(self) -> int:
        return self.drives.format.drives

    @property
    def k(self) -> int:
        return self.drives.format.data_shards

    @property
    def m(self) -> int:
        return self.drives.format.parity

    def piece(self, drive: int, blob_id: str) -> Path:
        return self.drives.paths[drive] / "blobs" / blob_id[-4:-2] / blob_id[-2:] / blob_id

    def pieces(self, blob_id: str) -> dict[int, Path]:
        """Drive -> piece file, for the drives that hold one."""
        return {d: p for d in range(self.n) if (p := self.piece(d, blob_id)).exists()}

    def trailer(self, drive: int, blob_id: str) -> tuple[int, ...]:
        raw = self.piece(drive, blob_id).read_bytes()
        size = data_size_from_file_size(len(raw))
        assert size is not None
        fields = TRAILER.unpack(raw[size - TRAILER.size : size])
        assert fields[0] == TRAILER_MAGIC
        return fields

    def remove(self, drives: list[int]) -> None:
        for d in drives:
            shutil.rmtree(self.drives.paths[d])

    def replace(self, drives: list[int]) -> None:
        """Empty directories in place of the removed drives, formatted as their members."""
        for d in drives:
            self.drives.paths[d].mkdir()
            self.drives.format_drive(d)

    def leftovers(self) -> list[str]:
        out = []
        for path in self.drives.paths:
            tmp = path / "tmp"
            if tmp.is_dir():
                out += [str(tmp / name) for name in os.listdir(tmp)]
        return out


def make_rig(
    root: Path,
    n: int,
    parity: int | None = None,
    *,
    stripe_bytes: int = 64 * KIB,
    small_object_bytes: int = SMALL,
    wrap: Callable[[int, LocalBlobStore], BlobStore] | None = None,
    on_damage: bool = True,
) -> Rig:
    drives = DriveSet.open(
        [root / f"d{i}" for i in range(n)],
        parity=parity,
        stripe_bytes=stripe_bytes,
        small_object_bytes=small_object_bytes,
    )
    built: list[Path] = []
    damaged: list[str] = []

    def factory(path: Path) -> BlobStore:
        built.append(path)
        local = LocalBlobStore(path)
        return wrap(drives.paths.index(path), local) if wrap is not None else local

    store = ErasureBlobStore(drives, drive_store=factory, on_damage=damaged.append if on_damage else None)
    return Rig(drives, store, damaged, built)


def flip(path: Path, offset: int) -> None:
    """Invert one byte of a piece's data (file offset == data offset in a LocalBlobStore file)."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def stripe_geometry(rig: Rig, blob_id: str, offset: int) -> tuple[int, int, int, int]:
    """(stripe, data position holding ``offset``, piece offset of that byte, piece offset of
    the stripe's payload) for an erasure-coded blob."""
    fields = rig.trailer(placement(blob_id, rig.n)[0], blob_id)
    stripe_bytes, size, payload, last = fields[8], fields[9], fields[10], fields[11]
    s = offset // stripe_bytes
    p_len = last if s == -(-size // stripe_bytes) - 1 else payload
    within = offset - s * stripe_bytes
    i = within // p_len
    return s, i, s * payload + within - i * p_len, s * payload


def is_replicated(rig: Rig, blob_id: str) -> bool:
    return rig.trailer(placement(blob_id, rig.n)[0], blob_id)[2] == 2


def ruin_stripe(rig: Rig, blob_id: str, offset: int) -> None:
    """Damage m + 1 pieces (every data piece among them) in the stripe holding ``offset``:
    beyond repair for that stripe, no other stripe touched (needs payloads of k * 64 KiB)."""
    order = placement(blob_id, rig.n)
    if is_replicated(rig, blob_id):
        for j in range(rig.m + 1):
            flip(rig.piece(order[j], blob_id), offset)
        return
    _, i, at, stripe_at = stripe_geometry(rig, blob_id, offset)
    victims = list(range(rig.k)) + list(range(rig.k, rig.n))[: max(0, rig.m + 1 - rig.k)]
    for j in victims:
        flip(rig.piece(order[j], blob_id), at if j == i else stripe_at)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- the conformance suite -----------------------------------------------------------------------
class _ErasureConformance(BlobStoreConformance):
    N = 4
    PARITY: int | None = 2
    STRIPE = 128 * KIB

    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        self.rig = make_rig(tmp_path, self.N, self.PARITY, stripe_bytes=self.STRIPE)
        return self.rig.store

    def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None:
        ruin_stripe(self.rig, blob_id, offset)

    def truncate(self, store: BlobStore, blob_id: str) -> None:
        for path in self.rig.pieces(blob_id).values():
            os.truncate(path, path.stat().st_size - 1)

    def leftovers(self, store: BlobStore) -> list[str]:
        return self.rig.leftovers()


class _StripeDamage:
    """Erasure-coded blobs fail per stripe, not per 64 KiB block: the two damage tests of the
    suite restated for that unit (``corrupt`` ruins the stripe holding the offset)."""

    STRIPE: int
    rig: Rig
    corrupt: Callable[[BlobStore, str, int], None]

    @pytest.mark.parametrize("damaged_offset", [0, B - 1, B + 100, 2 * B, 3 * B + 16])
    def test_corruption_is_detected_per_block(self, store: BlobStore, damaged_offset: int) -> None:
        size = 3 * B + 17
        stripe = self.STRIPE

        async def body() -> None:
            data = payload(size)
            blob_id = await BlobStoreConformance.put_bytes(store, data)
            self.corrupt(store, blob_id, damaged_offset)
            bad = damaged_offset // stripe
            points = sorted({0, 1, size, size - 1} | {x for b in range(0, size, B) for x in (b - 1, b, b + 1)})
            points = [p for p in points if 0 <= p <= size]
            for start in points:
                for end in points:
                    if end <= start:
                        continue
                    where = f"range [{start}, {end}), damaged stripe {bad}"
                    if start // stripe <= bad <= (end - 1) // stripe:
                        with pytest.raises(CorruptBlob):
                            await store.read(blob_id, start, end - start)
                        with pytest.raises(CorruptBlob):
                            await collect(store, blob_id, start, end - start)
                    else:
                        assert await store.read(blob_id, start, end - start) == data[start:end], where
                        assert await collect(store, blob_id, start, end - start) == data[start:end], where
            got = bytearray()
            with pytest.raises(CorruptBlob):
                async for chunk in await store.get(blob_id):
                    got += chunk
            assert len(got) <= bad * stripe
            assert data.startswith(got)
            assert not await store.verify(blob_id)
            assert (await self.rig.store.heal(blob_id)).lost

        run(body())

    def test_corruption_in_big_blob(self, store: BlobStore) -> None:
        stripe = self.STRIPE

        async def body() -> None:
            data = payload(5 * MIB)
            blob_id = await BlobStoreConformance.put_bytes(store, data)
            self.corrupt(store, blob_id, 3 * MIB + 5)
            bad_start = (3 * MIB + 5) // stripe * stripe
            got = bytearray()
            with pytest.raises(CorruptBlob):
                async for chunk in await store.get(blob_id):
                    got += chunk
            assert len(got) <= bad_start
            assert data.startswith(got)
            assert await store.read(blob_id, 0, bad_start) == data[:bad_start]
            assert await store.read(blob_id, bad_start + stripe) == data[bad_start + stripe :]
            with pytest.raises(CorruptBlob):
                await store.read(blob_id, 3 * MIB, 6)
            assert not await store.verify(blob_id)

        run(body())


class TestErasure2Plus2(_StripeDamage, _ErasureConformance):
    N, PARITY, STRIPE = 4, 2, 128 * KIB  # payload per stripe = 64 KiB: one checksum block


class TestErasure4Plus2(_StripeDamage, _ErasureConformance):
    N, PARITY, STRIPE = 6, 2, 256 * KIB


class TestErasureReplicas3(_ErasureConformance):
    """n = 3: every blob is 3 full copies; the suite's per-block damage tests apply as written."""

    N, PARITY, STRIPE = 3, None, 64 * KIB


# --- layout --------------------------------------------------------------------------------------
def test_layout_on_disk(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 4, 2)
    order_of: dict[str, list[int]] = {}

    async def body() -> tuple[str, str, bytes, bytes]:
        big, small = payload(3 * 64 * KIB + 100), payload(SMALL)
        big_id, small_id = new_blob_id(), new_blob_id()
        await rig.store.put(big_id, stream(big, [1000]))
        await rig.store.put(small_id, stream(small))
        order_of[big_id] = placement(big_id, 4)
        order_of[small_id] = placement(small_id, 4)
        return big_id, small_id, big, small

    big_id, small_id, big, small = run(body())
    # erasure coded: a piece on every drive, position j on drive order[j], data payloads verbatim
    order = order_of[big_id]
    assert sorted(rig.pieces(big_id)) == [0, 1, 2, 3]
    for j, drive in enumerate(order):
        fields = rig.trailer(drive, big_id)
        magic, version, layout, position, k, m, codec = fields[:7]
        assert (magic, version, layout, position, k, m, codec) == (b"TSE1", 1, 1, j, 2, 2, 1)
        assert fields[8:10] == (64 * KIB, len(big))
        assert fields[10] == 32 * KIB  # payload of a full stripe: 64 KiB / k, no pyeclib header
        assert fields[11] == 50  # last stripe: 100 bytes / 2
        piece = rig.piece(drive, big_id).read_bytes()
        assert len(piece) == blob_file_size(3 * 32 * KIB + 50 + TRAILER.size)
    for s in range(3):
        for i in range(2):
            piece = rig.piece(order[i], big_id).read_bytes()
            assert piece[s * 32 * KIB : (s + 1) * 32 * KIB] == big[s * 64 * KIB + i * 32 * KIB :][: 32 * KIB]
    # small: m + 1 = 3 full copies on positions 0..2, the object bytes first
    order = order_of[small_id]
    assert sorted(rig.pieces(small_id)) == sorted(order[:3])
    for j in range(3):
        assert rig.trailer(order[j], small_id)[2:4] == (2, j)
        assert rig.piece(order[j], small_id).read_bytes()[:SMALL] == small


def test_placement_spreads_position_zero() -> None:
    firsts = {placement(new_blob_id(), 6)[0] for _ in range(200)}
    assert firsts == set(range(6))
    assert placement("0123456789abcdef", 6) == placement("0123456789abcdef", 6)


def test_is_a_healer_and_local_heal_is_verify_only(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "set", 4, 2)
    assert isinstance(rig.store, Healer)
    assert not isinstance(MemoryBlobStore(), Healer)
    local = LocalBlobStore(tmp_path / "local")
    assert isinstance(local, Healer)

    async def body() -> None:
        blob_id = new_blob_id()
        await local.put(blob_id, stream(payload(100)))
        report = await local.heal(blob_id)
        assert report.healthy and report.size_bytes == 100 and report.shards_total == 1
        flip(local.blob_path(blob_id), 5)
        report = await local.heal(blob_id)
        assert report.lost and report.shards_rebuilt == 0 and not report.healthy
        assert (await local.heal(new_blob_id())).lost

    run(body())


# --- losing drives -------------------------------------------------------------------------------
CONFIGS = [pytest.param(4, 2, id="2+2"), pytest.param(6, 2, id="4+2"), pytest.param(3, None, id="3-copies")]
BLOB_SIZES = [0, 1, SMALL, SMALL + 1, 64 * KIB, 3 * 64 * KIB + 7, MIB + 12345]


async def _check_all(rig: Rig, blobs: dict[str, bytes], rng: random.Random) -> None:
    for blob_id, data in blobs.items():
        assert await rig.store.read(blob_id) == data
        assert await collect(rig.store, blob_id) == data
        assert await rig.store.stat(blob_id) == BlobInfo(blob_id, len(data))
        for _ in range(6):
            start = rng.randrange(len(data) + 1)
            end = rng.randrange(start, len(data) + 1)
            assert await rig.store.read(blob_id, start, end - start) == data[start:end], (start, end)
            assert await collect(rig.store, blob_id, start, end - start) == data[start:end], (start, end)


@pytest.mark.parametrize(("n", "parity"), CONFIGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_any_m_drives_may_go_and_heal_brings_them_back(tmp_path: Path, n: int, parity: int | None, seed: int) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    rig = make_rig(tmp_path, n, parity)
    m = rig.m

    async def body() -> None:
        blobs = {}
        for size in BLOB_SIZES:
            blob_id = new_blob_id()
            blobs[blob_id] = payload(size, seed)
            await rig.store.put(blob_id, stream(blobs[blob_id], [rng.randrange(1, 100_000)]))
        assert rig.damaged == []
        holders = {blob_id: set(rig.pieces(blob_id)) for blob_id in blobs}
        first = sorted(rng.sample(range(n), m))
        hit = {blob_id for blob_id, drives in holders.items() if drives & set(first)}
        rig.remove(first)
        rig.store._layouts.clear()  # also find every layout again with the drives gone
        await _check_all(rig, blobs, rng)
        assert {info.blob_id: info.size_bytes async for info in rig.store.scan()} == {
            b: len(d) for b, d in blobs.items()
        }
        for blob_id in blobs:
            assert await rig.store.verify(blob_id) == (blob_id not in hit)
        # writes still work with m drives gone (if the write quorum is still there)
        if n - m >= rig.drives.format.write_quorum:
            extra = new_blob_id()
            blobs[extra] = payload(2 * 64 * KIB + 3, seed + 1)
            await rig.store.put(extra, stream(blobs[extra]))
            hit.add(extra)
        else:
            with pytest.raises(SlowDown):
                await rig.store.put(new_blob_id(), stream(b"x"))
        rig.replace(first)
        for blob_id, data in blobs.items():
            report = await rig.store.heal(blob_id)
            assert not report.lost and report.healthy, report
            assert report.size_bytes == len(data)
            assert (report.shards_rebuilt > 0, report.bytes_written > 0) == (blob_id in hit, blob_id in hit)
            assert report.shards_unavailable == 0
            assert await rig.store.verify(blob_id)
            again = await rig.store.heal(blob_id)
            assert again.shards_rebuilt == 0 and again.shards_ok == again.shards_total
        second = first
        while second == first:  # a different set of m drives (disjoint when there are enough)
            rest = [d for d in range(n) if d not in first]
            second = sorted(rng.sample(rest if len(rest) >= m else range(n), m))
        rig.remove(second)
        rig.store._layouts.clear()
        await _check_all(rig, blobs, rng)

    run(body())


def test_more_than_m_drives_gone_is_corrupt_never_wrong(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 4, 2)

    async def body() -> None:
        big, small = new_blob_id(), new_blob_id()
        await rig.store.put(big, stream(payload(300_000)))
        await rig.store.put(small, stream(payload(100)))
        rig.remove(placement(small, 4)[:3])  # every copy of the small one, 3 of 4 pieces of the big one
        for blob_id in (big, small):
            with pytest.raises(CorruptBlob):
                await rig.store.read(blob_id)
            report = await rig.store.heal(blob_id)
            assert report.lost or report.shards_unavailable >= 1
            assert not await rig.store.verify(blob_id)

    run(body())


def test_heal_reports_offline_drives_as_unavailable(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 4, 2)

    async def body() -> None:
        blob_id = new_blob_id()
        await rig.store.put(blob_id, stream(payload(200_000)))
        rig.remove([placement(blob_id, 4)[1]])
        report = await rig.store.heal(blob_id)
        assert (report.shards_ok, report.shards_rebuilt, report.shards_unavailable) == (3, 0, 1)
        assert not report.lost and not report.healthy
        assert (await rig.store.heal(new_blob_id())).lost  # never written

    run(body())


def test_a_returning_drive_gets_a_fresh_store_and_no_dir_is_created(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 4, 2)

    async def body() -> None:
        assert len(rig.built) == 4
        rig.remove([1])
        blob_id = new_blob_id()
        await rig.store.put(blob_id, stream(payload(100_000)))
        assert not rig.drives.paths[1].exists()  # never recreated behind the operator's back
        assert rig.damaged == [blob_id]
        rig.replace([1])
        report = await rig.store.heal(blob_id)
        assert report.shards_rebuilt == 1 and report.healthy
        assert rig.built.count(rig.drives.paths[1]) == 2
        assert await rig.store.verify(blob_id)

    run(body())


def test_replica_read_fails_over_mid_stream(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 3)  # copies only

    async def body() -> None:
        data = payload(3 * MIB + 5)
        blob_id = new_blob_id()
        await rig.store.put(blob_id, stream(data, [100_000]))
        order = placement(blob_id, 3)
        flip(rig.piece(order[0], blob_id), 2 * MIB + 7)  # first copy bad in its third MiB
        flip(rig.piece(order[1], blob_id), 5)  # second copy bad in its first block
        assert await collect(rig.store, blob_id) == data
        assert await rig.store.read(blob_id, 2 * MIB, 100) == data[2 * MIB : 2 * MIB + 100]
        assert rig.damaged and set(rig.damaged) == {blob_id}
        report = await rig.store.heal(blob_id)
        assert report.shards_rebuilt == 2 and report.healthy
        assert await rig.store.verify(blob_id)

    run(body())


# --- bit rot --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "parity"), [pytest.param(4, 2, id="2+2"), pytest.param(6, 2, id="4+2")])
@pytest.mark.parametrize("seed", SEEDS)
def test_one_flipped_byte_is_read_around_and_healed(tmp_path: Path, n: int, parity: int, seed: int) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    rig = make_rig(tmp_path, n, parity)

    async def body() -> None:
        for size in (SMALL, 5 * 64 * KIB + 999):
            data = payload(size, seed)
            blob_id = new_blob_id()
            await rig.store.put(blob_id, stream(data))
            drive = rng.choice(sorted(rig.pieces(blob_id)))
            path = rig.piece(drive, blob_id)
            flip(path, rng.randrange(data_size_from_file_size(path.stat().st_size) or 1))
            rig.damaged.clear()
            rig.store._layouts.clear()
            assert await rig.store.read(blob_id) == data
            assert await collect(rig.store, blob_id) == data
            for _ in range(10):
                start = rng.randrange(size)
                end = rng.randrange(start, size + 1)
                assert await rig.store.read(blob_id, start, end - start) == data[start:end]
            assert not await rig.store.verify(blob_id)
            report = await rig.store.heal(blob_id)
            assert report.shards_rebuilt == 1 and report.healthy and not report.lost, report
            assert await rig.store.verify(blob_id)
            assert await rig.store.read(blob_id) == data

    run(body())


@pytest.mark.parametrize("size", [SMALL, 5 * 64 * KIB + 999], ids=["replicas", "erasure-coded"])
def test_unverified_read_then_verified_reread_repairs_from_parity(tmp_path: Path, size: int) -> None:
    """The encrypted-GET fast path (docs/encryption.md): a read with ``verify=False`` hands back
    a flipped data byte unchecked (the caller's AEAD tag catches it); the re-read with
    ``verify=True`` finds the bad block, reads around it and returns the right bytes."""
    rig = make_rig(tmp_path, 4, 2)

    async def body() -> None:
        data = payload(size)
        blob_id = new_blob_id()
        await rig.store.put(blob_id, stream(data))
        offset = size - 3 if is_replicated(rig, blob_id) else stripe_geometry(rig, blob_id, size - 3)[2]
        position = 0 if is_replicated(rig, blob_id) else stripe_geometry(rig, blob_id, size - 3)[1]
        flip(rig.piece(placement(blob_id, rig.n)[position], blob_id), offset)
        rig.damaged.clear()
        unchecked = await rig.store.read(blob_id, verify=False)
        assert len(unchecked) == size and unchecked != data and unchecked[: size - 3] == data[: size - 3]
        assert await collect(rig.store, blob_id, size - 64, 64, verify=False) == unchecked[size - 64 :]
        assert not rig.damaged  # nothing was checked, so nothing was reported
        assert await rig.store.read(blob_id, size - 64, 64) == data[size - 64 :]
        assert await collect(rig.store, blob_id) == data
        assert rig.damaged and set(rig.damaged) == {blob_id}

    run(body())


def test_damage_is_reported_once_per_read(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 4, 2)

    async def body() -> None:
        data = payload(10 * 64 * KIB)
        blob_id = new_blob_id()
        await rig.store.put(blob_id, stream(data))
        order = placement(blob_id, 4)
        for s in range(10):  # a bad block in every stripe of data piece 0
            flip(rig.piece(order[0], blob_id), s * 32 * KIB + 3)
        assert await rig.store.read(blob_id) == data
        assert rig.damaged == [blob_id]
        assert await rig.store.read(blob_id, 64 * KIB + 40_000, 10) == data[64 * KIB + 40_000 :][:10]
        assert rig.damaged == [blob_id]  # that range is on data piece 1 only
        assert await rig.store.read(blob_id, 3, 10) == data[3:13]
        assert rig.damaged == [blob_id, blob_id]

    run(body())


def test_take_damaged_without_a_callback(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 4, 2, on_damage=False)

    async def body() -> None:
        blob_id = new_blob_id()
        await rig.store.put(blob_id, stream(payload(100_000)))
        assert rig.store.take_damaged() == []
        rig.remove([placement(blob_id, 4)[0]])
        assert await rig.store.read(blob_id) == payload(100_000)
        assert rig.store.take_damaged() == [blob_id]
        assert rig.store.take_damaged() == []

    run(body())


@pytest.mark.parametrize("seed", SEEDS)
def test_m_plus_1_flips_in_one_stripe_is_corrupt(tmp_path: Path, seed: int) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    rig = make_rig(tmp_path, 4, 2)

    async def body() -> None:
        size = 6 * 64 * KIB + 5
        data = payload(size, seed)
        blob_id = new_blob_id()
        await rig.store.put(blob_id, stream(data))
        s = rng.randrange(6)
        order = placement(blob_id, 4)
        victims = rng.sample(range(4), 3)
        for j in victims:
            flip(rig.piece(order[j], blob_id), s * 32 * KIB + rng.randrange(32 * KIB))
        with pytest.raises(CorruptBlob):
            await rig.store.read(blob_id)
        got = bytearray()
        with pytest.raises(CorruptBlob):
            async for chunk in await rig.store.get(blob_id):
                got += chunk
        assert data.startswith(got)
        # stripes whose pieces share no damaged checksum block still read (64 KiB blocks hold 2 stripes)
        pair = s - s % 2
        for t in range(6):
            lo, hi = t * 64 * KIB, min(size, (t + 1) * 64 * KIB)
            if t in (pair, pair + 1):
                continue
            assert await rig.store.read(blob_id, lo, hi - lo) == data[lo:hi]
        before = {d: p.read_bytes() for d, p in rig.pieces(blob_id).items()}
        report = await rig.store.heal(blob_id)
        assert report.lost and report.shards_rebuilt == 0 and report.bytes_written == 0
        assert {d: p.read_bytes() for d, p in rig.pieces(blob_id).items()} == before  # nothing touched
        assert not await rig.store.verify(blob_id)

    run(body())


def test_damaged_trailer_is_replaced(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 4, 2)

    async def body() -> None:
        data = payload(200_000)
        blob_id = new_blob_id()
        await rig.store.put(blob_id, stream(data))
        drive = placement(blob_id, 4)[0]
        path = rig.piece(drive, blob_id)
        size = data_size_from_file_size(path.stat().st_size)
        assert size is not None
        flip(path, size - 10)  # inside the trailer
        assert await rig.store.stat(blob_id) == BlobInfo(blob_id, len(data))
        rig.store._layouts.clear()
        assert await rig.store.read(blob_id) == data
        report = await rig.store.heal(blob_id)
        assert report.shards_rebuilt == 1 and report.shards_ok == 3 and report.healthy
        assert await rig.store.verify(blob_id)

    run(body())


# --- failed writes -------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "parity"), CONFIGS)
def test_write_below_quorum_is_refused_up_front(tmp_path: Path, n: int, parity: int | None) -> None:
    rig = make_rig(tmp_path, n, parity)
    quorum = rig.drives.format.write_quorum
    gone = list(range(n - quorum + 1))
    rig.remove(gone)

    async def body() -> None:
        consumed = []

        async def chunks() -> AsyncIterator[bytes]:
            consumed.append(1)
            yield b"x" * 100_000

        for data in (b"small", payload(300_000)):
            with pytest.raises(SlowDown, match="offline") as info:
                await rig.store.put(new_blob_id(), stream(data))
            assert str(rig.drives.paths[gone[0]]) in str(info.value)
        with pytest.raises(SlowDown):
            await rig.store.put(new_blob_id(), chunks())
        assert consumed == []
        assert [info async for info in rig.store.scan()] == []
        assert rig.leftovers() == []

    run(body())


def _faulty_on(
    drives: set[int], plan: FaultPlan, seed: int, made: dict[int, FaultyBlobStore]
) -> Callable[[int, LocalBlobStore], BlobStore]:
    def wrap(index: int, local: LocalBlobStore) -> BlobStore:
        if index not in drives:
            return local
        made[index] = FaultyBlobStore(local, plan, seed=seed + index)
        return made[index]

    return wrap


@pytest.mark.parametrize("size", [100, 300_000])
def test_eio_on_one_drive_still_stores_and_heal_repairs(tmp_path: Path, size: int) -> None:
    print(f"seed={SEED}")
    made: dict[int, FaultyBlobStore] = {}
    plan = FaultPlan(eio={"put": Trigger(p=1.0)})
    rig = make_rig(tmp_path, 4, 2, wrap=_faulty_on({0, 1, 2, 3}, FaultPlan(), SEED, made))

    async def body() -> None:
        data = payload(size)
        blob_id = new_blob_id()
        victim = placement(blob_id, 4)[1]
        made[victim].plan = plan
        info = await rig.store.put(blob_id, stream(data, [5000]))
        assert info == BlobInfo(blob_id, size)
        assert rig.damaged == [blob_id]
        assert victim not in rig.pieces(blob_id)
        assert [r.kind for r in made[victim].log] == ["eio"]
        assert await rig.store.read(blob_id) == data
        assert not await rig.store.verify(blob_id)
        made[victim].active = False
        report = await rig.store.heal(blob_id)
        assert report.shards_rebuilt == 1 and report.healthy
        assert await rig.store.verify(blob_id)
        assert rig.leftovers() == []

    run(body())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("size", [100, 300_000])
def test_too_many_failed_writes_leave_nothing(tmp_path: Path, seed: int, size: int) -> None:
    """Torn writes / EIO on positions 1 and 2 of 2+2: below quorum for EC (3 of 4) and for
    copies (2 of 3), so SlowDown and no piece anywhere."""
    print(f"seed={seed}")
    made: dict[int, FaultyBlobStore] = {}
    rng = random.Random(seed)
    rig = make_rig(tmp_path, 4, 2, wrap=_faulty_on({0, 1, 2, 3}, FaultPlan(), seed, made))

    async def body() -> None:
        blob_id = new_blob_id()
        order = placement(blob_id, 4)
        for j in (1, 2):
            kind = rng.choice(["eio", "torn"])
            made[order[j]].plan = (
                FaultPlan(eio={"put": Trigger.on(1)}) if kind == "eio" else FaultPlan(torn=Trigger.on(1))
            )
        data = payload(size, seed)
        with pytest.raises(SlowDown) as info:
            await rig.store.put(blob_id, stream(data, [rng.randrange(1, 70_000)]))
        expected = "1 pieces written, 2 needed" if size <= SMALL else "2 pieces written, 3 needed"
        assert expected in str(info.value)
        assert rig.pieces(blob_id) == {}
        assert rig.leftovers() == []
        assert await rig.store.stat(blob_id) is None

    run(body())


def test_small_object_needs_two_copies(tmp_path: Path) -> None:
    made: dict[int, FaultyBlobStore] = {}
    rig = make_rig(tmp_path, 4, 2, wrap=_faulty_on({0, 1, 2, 3}, FaultPlan(), SEED, made))

    async def body() -> None:
        blob_id = new_blob_id()
        order = placement(blob_id, 4)
        made[order[0]].plan = FaultPlan(eio={"put": Trigger.on(1)})
        await rig.store.put(blob_id, stream(b"abc"))
        assert sorted(rig.pieces(blob_id)) == sorted(order[1:3])
        assert rig.damaged == [blob_id]
        assert await rig.store.read(blob_id) == b"abc"
        other = new_blob_id()
        order = placement(other, 4)
        for j in (0, 1):
            made[order[j]].plan = FaultPlan(eio={"put": Trigger(p=1.0)})
        with pytest.raises(SlowDown):
            await rig.store.put(other, stream(b"abc"))
        assert rig.pieces(other) == {}

    run(body())


@pytest.mark.parametrize("size", [100, 300_000])
def test_disk_full_everywhere_is_insufficient_storage(tmp_path: Path, size: int) -> None:
    print(f"seed={SEED}")
    made: dict[int, FaultyBlobStore] = {}
    plan = FaultPlan(enospc=Trigger(p=1.0), tear_max_bytes=50_000)
    rig = make_rig(tmp_path, 4, 2, wrap=_faulty_on({0, 1, 2, 3}, plan, SEED, made))

    async def body() -> None:
        blob_id = new_blob_id()
        with pytest.raises(InsufficientStorage):
            await rig.store.put(blob_id, stream(payload(size)))
        assert rig.pieces(blob_id) == {}
        assert rig.leftovers() == []

    run(body())


def test_slow_drive_still_stores_everything(tmp_path: Path) -> None:
    print(f"seed={SEED}")
    made: dict[int, FaultyBlobStore] = {}
    rig = make_rig(tmp_path, 4, 2, wrap=_faulty_on({2}, FaultPlan(delay_s=0.002), SEED, made))

    async def body() -> None:
        blobs = {new_blob_id(): payload(size) for size in (10, 200_000, MIB)}
        await asyncio.gather(*(rig.store.put(b, stream(d, [30_000])) for b, d in blobs.items()))
        for blob_id, data in blobs.items():
            assert await rig.store.read(blob_id) == data
            assert await rig.store.verify(blob_id)
        assert rig.damaged == []

    run(body())


def test_cancelled_put_leaves_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, 4, 2)

    async def body() -> None:
        started = asyncio.Event()

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b"y" * 50_000
                started.set()
                await asyncio.sleep(0)

        blob_id = new_blob_id()
        task = asyncio.ensure_future(rig.store.put(blob_id, endless()))
        await started.wait()
        for _ in range(50):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert rig.pieces(blob_id) == {}
        await asyncio.sleep(0.05)  # a cancelled put cleans up once its worker thread is done
        assert rig.leftovers() == []

    run(body())


# --- randomized ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_random_damage_never_returns_wrong_bytes(tmp_path: Path, seed: int) -> None:
    """Random blobs, random drive loss and bit flips: every read is byte-exact or CorruptBlob,
    and it is byte-exact whenever every stripe kept k good fragments."""
    print(f"seed={seed}")
    rng = random.Random(seed)
    n = rng.choice([4, 5, 6])
    rig = make_rig(tmp_path, n, rng.choice([1, 2]))

    async def body() -> None:
        blobs = {}
        for _ in range(6):
            size = rng.choice([0, rng.randrange(1, SMALL + 1), rng.randrange(SMALL + 1, 600_000)])
            blob_id = new_blob_id()
            blobs[blob_id] = payload(size, rng.randrange(1 << 30))
            await rig.store.put(blob_id, stream(blobs[blob_id], [rng.randrange(1, 90_000)]))
        for blob_id in blobs:
            for _ in range(rng.randrange(0, rig.m + 2)):
                pieces = rig.pieces(blob_id)
                if not pieces:
                    break
                path = pieces[rng.choice(sorted(pieces))]
                size = data_size_from_file_size(path.stat().st_size) or 1
                flip(path, rng.randrange(size))
        rig.store._layouts.clear()
        for blob_id, data in blobs.items():
            for _ in range(5):
                start = rng.randrange(len(data) + 1)
                end = rng.randrange(start, len(data) + 1)
                try:
                    got = await rig.store.read(blob_id, start, end - start)
                except CorruptBlob:
                    continue
                assert got == data[start:end], (blob_id, start, end)
            report = await rig.store.heal(blob_id)
            if not report.lost:
                assert report.healthy, report
                assert await rig.store.verify(blob_id)
                assert await rig.store.read(blob_id) == data

    run(body())


@pytest.mark.parametrize("n, parity, size", [(4, 2, 3 * 64 * KIB + 100), (3, None, SMALL), (4, 2, 0)])
def test_blob_crc32c_is_the_trailers(tmp_path: Path, n: int, parity: int | None, size: int) -> None:
    """The mover's CRC32C without reading the bytes: the object CRC32C every trailer records."""
    rig = make_rig(tmp_path, n, parity)
    data = payload(size)
    blob_id = new_blob_id()
    run(rig.store.put(blob_id, stream(data)))
    assert run(rig.store.blob_crc32c(blob_id)) == crc32c(data)
    assert run(rig.store.blob_crc32c(new_blob_id())) is None  # no such blob: the mover reads it instead
