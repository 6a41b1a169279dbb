"""The local sample cache (tierstore/datasets/_cache.py): verified reads, "first come, stays"
admission under a byte budget shared by processes, and its hit rate on shuffled epochs against
what LRU gets on the same accesses."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest

from tests.torch.sources import CountingSource, MemorySource, sample_bytes
from tierstore.datasets._cache import HEADER, SampleCache, read_samples, sample_id, sample_ids
from tierstore.torch import epoch_permutation

SIZE = 100
FILE = HEADER.size + SIZE  # bytes a cached sample of SIZE takes


def files(cache: SampleCache) -> list[Path]:
    return [p for p in (cache.directory / "objects").rglob("*") if p.is_file()]


def test_put_get_and_budget(tmp_path: Path) -> None:
    cache = SampleCache(tmp_path / "c", bytes_max=3 * FILE)
    ids = [sample_id(f"loc{i}", None, SIZE) for i in range(5)]
    assert all(ids) and len(set(ids)) == 5
    assert sample_id("loc0", 0, SIZE) != ids[0] and sample_id("loc0", None, SIZE + 1) != ids[0]
    assert sample_id(None, None, SIZE) is None
    blobs = [bytes([i]) * SIZE for i in range(5)]
    admitted = [cache.put(sid, data) for sid, data in zip(ids, blobs, strict=True) if sid]
    assert admitted == [True, True, True, False, False], "first come, stays: no eviction when full"
    assert cache.put(ids[0] or "", blobs[0]) is True, "already there"
    assert cache.bytes_used() == 3 * FILE == sum(p.stat().st_size for p in files(cache))
    assert cache.get(ids[1] or "", SIZE) == blobs[1]
    assert cache.get(ids[4] or "", SIZE) is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.admitted) == (1, 1, 3)
    assert not list((cache.directory / "tmp").iterdir()), "no temporary file left behind"
    cache.clear()
    assert cache.bytes_used() == 0 and files(cache) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "swap"])
def test_damaged_file_is_never_returned_and_is_fetched_again(tmp_path: Path, damage: str) -> None:
    src = MemorySource()
    ref = src.add("d", sample_bytes("d", 1, 4, size=SIZE))
    counting = CountingSource(src, tmp_path / "calls.log")
    manifest = src.open_manifest(ref)
    cache = SampleCache(tmp_path / "c", bytes_max=10 * FILE)
    assert read_samples(counting, manifest, [0, 1, 2, 3], cache) == src.datasets[ref][1]
    sid = sample_ids(manifest, [2])[0]
    assert sid is not None
    path = cache.path_of(sid)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[HEADER.size + 50] ^= 0x01
    elif damage == "truncate":
        raw = raw[:-1]
    elif damage == "extend":
        raw += b"x"
    else:  # another sample's intact file (same size) under this one's name
        other = sample_ids(manifest, [1])[0]
        assert other is not None
        raw = bytearray(cache.path_of(other).read_bytes())
    path.write_bytes(bytes(raw))
    counting.reset()
    got = read_samples(counting, manifest, [3, 2, 0], cache)
    assert got == [src.datasets[ref][1][i] for i in (3, 2, 0)]
    assert counting.row_reads() == [[2]], "only the damaged sample is fetched again"
    assert cache.stats.corrupt == 1
    assert cache.get(sid, SIZE) == src.datasets[ref][1][2], "and cached again, intact"
    assert cache.bytes_used() == sum(p.stat().st_size for p in files(cache))


def test_hit_rate_on_a_dataset_slightly_larger_than_the_cache(tmp_path: Path) -> None:
    """Dataset = 1.1 x cache, shuffled epochs: after a warm-up epoch, every later epoch hits
    the 100 samples admitted first (100/110 = 0.91). LRU on the same accesses evicts samples
    shortly before their reuse; unshuffled, it never hits."""
    n, capacity = 110, 100
    src = MemorySource()
    ref = src.add("d", sample_bytes("d", 1, n, size=SIZE))
    manifest = src.open_manifest(ref)
    cache = SampleCache(tmp_path / "c", bytes_max=capacity * FILE)
    accesses: list[int] = []
    hits_after_warmup = 0
    for epoch in range(4):
        order = epoch_permutation(n, 0, epoch).tolist()
        hits_before = cache.stats.hits
        for start in range(0, n, 16):
            rows = order[start : start + 16]
            assert read_samples(src, manifest, rows, cache) == [src.datasets[ref][1][i] for i in rows]
        if epoch:
            hits_after_warmup += cache.stats.hits - hits_before
            accesses += order
        else:
            warmup = order
    rate = hits_after_warmup / len(accesses)
    assert rate >= 0.9, rate
    assert len(files(cache)) == capacity and cache.bytes_used() == capacity * FILE

    def lru_rate(epochs: list[list[int]]) -> float:
        lru: OrderedDict[int, None] = OrderedDict()
        hits = total = 0
        for e, order in enumerate(epochs):
            for row in order:
                if row in lru:
                    lru.move_to_end(row)
                    hits += e > 0
                else:
                    lru[row] = None
                    if len(lru) > capacity:
                        lru.popitem(last=False)
                total += e > 0
        return hits / total

    shuffled_lru = lru_rate([warmup] + [accesses[i : i + n] for i in range(0, len(accesses), n)])
    assert shuffled_lru < 0.75 and rate - shuffled_lru > 0.15, (rate, shuffled_lru)
    assert lru_rate([list(range(n))] * 4) == 0.0


def _writer(directory: str, bytes_max: int, ids: list[str], seed: int) -> None:
    cache = SampleCache(directory, bytes_max)
    for sid in ids[seed::2] + ids:
        cache.put(sid, sid.encode() * 4)


def test_processes_share_the_budget(tmp_path: Path) -> None:
    """Two processes admit overlapping samples at once: the budget holds exactly, the counter
    matches the files, and every file is intact."""
    ids = [sample_id(f"loc{i}", None, 160) or "" for i in range(300)]
    budget = 150 * (HEADER.size + 160) + 7
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "c"), budget, ids, s)) for s in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = pickle.loads(pickle.dumps(SampleCache(tmp_path / "c", budget)))
    held = files(cache)
    assert len(held) == 150
    assert cache.bytes_used() == sum(p.stat().st_size for p in held) <= budget
    assert all(cache.get(p.name, 160) == p.name.encode() * 4 for p in held)
    (cache.directory / "usage").write_bytes(b"\xff" * 8)  # a crash left the counter high
    assert cache.recount() == 150 * (HEADER.size + 160)


def test_counter_is_rebuilt_from_files_when_missing(tmp_path: Path) -> None:
    cache = SampleCache(tmp_path / "c")
    cache.put(sample_id("a", None, 3) or "", b"abc")
    (tmp_path / "c" / "usage").unlink()
    fresh = SampleCache(tmp_path / "c", bytes_max=HEADER.size + 3)
    assert fresh.bytes_used() == HEADER.size + 3
    assert fresh.put(sample_id("b", None, 1) or "", b"x") is False
    with pytest.raises(ValueError, match="bytes_max"):
        SampleCache(tmp_path / "c", bytes_max=-1)


def test_a_full_disk_fails_the_write_not_the_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """put raises (staging must fail loudly) and leaves no file and no count behind; a loader's
    read through the cache still returns the samples."""
    src = MemorySource()
    ref = src.add("d", sample_bytes("d", 1, 5, size=SIZE))
    manifest = src.open_manifest(ref)
    cache = SampleCache(tmp_path / "c", bytes_max=10 * FILE)
    assert read_samples(src, manifest, [0], cache) == src.datasets[ref][1][:1]

    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", full)
    with pytest.raises(OSError, match="No space"):
        cache.put(sample_id("x", None, 1) or "", b"x")
    assert read_samples(src, manifest, [1, 2, 0], cache) == [src.datasets[ref][1][i] for i in (1, 2, 0)]
    assert cache.stats.write_errors == 2 and cache.stats.hits == 1
    assert cache.bytes_used() == FILE and len(files(cache)) == 1
    assert not list((cache.directory / "tmp").iterdir())
