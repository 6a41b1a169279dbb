"""MapDataset, IterableDataset and ShuffleSampler (tierstore/torch/_datasets.py) under a real
torch DataLoader with forked worker processes, reading a dataset from a real server through
``RemoteSource`` (one test through ``EmbeddedSource``; edge cases through an in-memory source).

Ranks are simulated with explicit rank/world_size (one test initializes torch.distributed in two
processes); "consumed" batches are what the loop took from the DataLoader.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import ServerProcess
from tests.torch.sources import CountingSource, MemorySource, Served, create_served, sample_bytes
from tierstore.datasets import DatasetRef, EmbeddedSource
from tierstore.torch import IterableDataset, MapDataset, ShuffleSampler, epoch_permutation

N = 230  # not a multiple of the world sizes or batch sizes used
B = 16


@pytest.fixture(scope="module")
def served(server: ServerProcess, s3: Any) -> Served:
    return create_served(server, s3, N)


@pytest.fixture
def counting(served: Served, tmp_path: Path) -> CountingSource:
    return CountingSource(served.source, tmp_path / "calls.log")


def loader(ds: IterableDataset, workers: int) -> DataLoader[Any]:
    return DataLoader(ds, batch_size=None, num_workers=workers, multiprocessing_context="fork" if workers else None)


def take(ds: IterableDataset, workers: int, batches: int | None = None) -> list[list[int]]:
    """The rows of each batch the loop takes (all of the epoch, or the first ``batches``)."""
    it: Iterator[Any] = iter(loader(ds, workers))
    out = [[s["index"] for s in batch] for batch in islice(it, batches)]
    del it  # stops the workers
    return out


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def test_map_dataset_reads_samples_of_the_pinned_version(served: Served) -> None:
    ds = MapDataset(served.ref.name, served.source)  # NAME: the latest version, pinned here
    assert ds.ref == served.ref and len(ds) == N
    s = ds[7]
    assert s == {"index": 7, "key": "s/00007", "data": served.bodies[7], "label": "7"}
    assert [x["index"] for x in ds.__getitems__([5, 2, 5])] == [5, 2, 5]
    with pytest.raises(IndexError):
        ds[N]
    sized = MapDataset(served.ref, served.source, transform=lambda s: (len(s["data"]), s["label"]))
    assert sized[3] == (153, "3")


def test_map_dataset_with_sampler_reads_each_batch_in_one_call(served: Served, counting: CountingSource) -> None:
    """DataLoader(batch_size=B, sampler=ShuffleSampler) with 2 workers: __getitems__ gets each
    batch whole (one read_rows call of exactly the batch's rows), default_collate works, and two
    ranks read every sample once."""
    ds = MapDataset(str(served.ref), counting)
    counting.reset()
    batches_rows: list[tuple[int, ...]] = []
    for rank in range(2):
        sampler = ShuffleSampler(ds, seed=3, rank=rank, world_size=2)
        dl = DataLoader(ds, batch_size=B, sampler=sampler, num_workers=2, multiprocessing_context="fork")
        batches = list(dl)
        assert len(batches) == -(-len(sampler) // B) == 8
        for batch in batches:
            assert isinstance(batch["index"], torch.Tensor)
            rows = batch["index"].tolist()
            assert batch["data"] == [served.bodies[i] for i in rows]
            assert batch["label"] == [served.label(i) for i in rows]
            batches_rows.append(tuple(rows))
    assert sorted(i for rows in batches_rows for i in rows) == list(range(N))
    assert sorted(map(tuple, counting.row_reads())) == sorted(batches_rows), "one read_rows call per batch"


def test_iterable_every_sample_once_across_ranks_and_workers(served: Served, counting: CountingSource) -> None:
    """3 ranks x 2 workers: the union is exactly range(N); each batch is one read_rows call and
    carries the right bytes and labels."""
    counting.reset()
    seen: list[int] = []
    for rank in range(3):
        ds = IterableDataset(served.ref, counting, seed=11, batch_size=B, rank=rank, world_size=3)
        it: Iterator[Any] = iter(loader(ds, 2))
        batches = list(it)
        assert len(batches) == len(ds)
        for batch in batches:
            assert all(s["data"] == served.bodies[s["index"]] for s in batch)
            assert all(s["label"] == served.label(s["index"]) for s in batch)
            seen += [s["index"] for s in batch]
    assert len(seen) == N and sorted(seen) == list(range(N))
    reads = counting.row_reads()
    assert sorted(flat(reads)) == list(range(N)) and max(map(len, reads)) == B
    assert len(reads) == sum(-(-rows // B) for rows in (77, 77, 76)), "one read_rows call per batch"


def test_iterable_order_is_a_function_of_seed_and_epoch(served: Served) -> None:
    ds = IterableDataset(served.ref, served.source, seed=5, batch_size=B)
    epoch0 = take(ds, 2)
    assert flat(epoch0) == epoch_permutation(N, 5, 0).tolist(), "one rank reads the permutation in order"
    assert take(IterableDataset(served.ref, served.source, seed=5, batch_size=B), 0) == epoch0, "workers: same order"
    ds.set_epoch(1)
    epoch1 = take(ds, 2)
    assert sorted(flat(epoch1)) == list(range(N)) and flat(epoch1) != flat(epoch0)
    ds.set_epoch(0)
    assert take(ds, 2) == epoch0
    assert flat(take(IterableDataset(served.ref, served.source, seed=6, batch_size=B), 2)) != flat(epoch0)
    unshuffled = IterableDataset(served.ref, served.source, batch_size=B, shuffle=False, rank=1, world_size=2)
    assert flat(take(unshuffled, 2)) == list(range(1, N, 2))


def test_iterable_resume_on_more_ranks_and_fewer_workers(served: Served) -> None:
    """2 ranks x 2 workers take 3 batches each; the state (the same from either rank) resumes
    the epoch on 3 ranks x 1 worker with a new batch size: nothing repeated, nothing skipped."""
    first = [IterableDataset(served.ref, served.source, seed=9, batch_size=B, rank=r, world_size=2) for r in range(2)]
    for ds in first:
        ds.set_epoch(4)
    taken = [take(ds, 2, batches=3) for ds in first]
    states = [ds.state_dict(batches_consumed=3) for ds in first]
    assert states[0] == states[1] and states[0]["consumed"] == 3 * B * 2 and states[0]["epoch"] == 4
    consumed = flat(taken[0]) + flat(taken[1])
    assert sorted(consumed) == sorted(epoch_permutation(N, 9, 4)[: 3 * B * 2].tolist()), "a prefix"

    rest: list[int] = []
    for rank in range(3):
        ds = IterableDataset(served.ref, served.source, seed=9, batch_size=10, rank=rank, world_size=3)
        ds.load_state_dict(pickle.loads(pickle.dumps(states[0])))
        ds.set_epoch(4)
        rest += flat(take(ds, 1))
        ds.set_epoch(5)
        assert len(ds) == -(-len(range(rank, N, 3)) // 10), "the next epoch is whole again"
    assert len(consumed) + len(rest) == N
    assert sorted(consumed + rest) == list(range(N))


def test_sampler_resume_on_more_ranks(served: Served) -> None:
    ds = MapDataset(served.ref, served.source, transform=lambda s: s["index"])
    samplers = [ShuffleSampler(ds, seed=2, rank=r, world_size=2) for r in range(2)]
    consumed: list[int] = []
    for s in samplers:
        s.set_epoch(1)
        it: Iterator[Any] = iter(DataLoader(ds, batch_size=B, sampler=s, num_workers=2, multiprocessing_context="fork"))
        consumed += [i for batch in islice(it, 2) for i in batch.tolist()]
        del it
    state = samplers[1].state_dict(batches_consumed=2, batch_size=B)
    assert state == samplers[0].state_dict(batches_consumed=2, batch_size=B)
    rest: list[int] = []
    for r in range(3):
        s = ShuffleSampler(N, seed=2, rank=r, world_size=3)
        s.load_state_dict(state)
        s.set_epoch(1)
        rest += [i for batch in DataLoader(ds, batch_size=B, sampler=s, num_workers=1) for i in batch.tolist()]
    assert sorted(consumed + rest) == list(range(N))


def test_iterable_cache_keeps_what_it_admitted(served: Served, counting: CountingSource, tmp_path: Path) -> None:
    """A cache with room for about half the dataset: epoch 0 reads everything from the server;
    epoch 1 (another order) reads exactly the samples not cached, with the right bytes."""
    budget = N * 200 // 2
    ds = IterableDataset(served.ref, counting, batch_size=B, cache_dir=tmp_path / "cache", cache_bytes_max=budget)
    counting.reset()
    assert sorted(flat(take(ds, 2))) == list(range(N))
    assert sorted(flat(counting.row_reads())) == list(range(N))
    assert ds.cache is not None
    cached = ds.cache.bytes_used()
    files = list((tmp_path / "cache" / "objects").rglob("*"))
    n_cached = sum(1 for f in files if f.is_file())
    assert 0 < n_cached < N and cached <= budget
    counting.reset()
    ds.set_epoch(1)
    it: Iterator[Any] = iter(loader(ds, 2))
    samples = [s for batch in it for s in batch]
    assert all(s["data"] == served.bodies[s["index"]] for s in samples)
    assert len(flat(counting.row_reads())) == N - n_cached, "every cached sample was a hit"
    assert ds.cache.bytes_used() == cached, "first come, stays: nothing evicted, nothing more admitted"


def test_datasets_pickle_and_read_after(served: Served) -> None:
    ds = IterableDataset(served.ref, served.source, batch_size=B, rank=1, world_size=2, prefetch=0)
    copy = pickle.loads(pickle.dumps(ds))
    assert flat(take(copy, 0)) == flat(take(ds, 0))
    m = pickle.loads(pickle.dumps(MapDataset(served.ref, served.source)))
    assert m[9]["data"] == served.bodies[9]


def test_embedded_source_every_sample_once(server: ServerProcess, served: Served) -> None:
    source = EmbeddedSource(server.data_dir)
    try:
        seen: list[int] = []
        for rank in range(2):
            ds = IterableDataset(served.ref, source, seed=1, batch_size=B, rank=rank, world_size=2)
            for batch in loader(ds, 2):
                assert all(s["data"] == served.bodies[s["index"]] for s in batch)
                seen += [s["index"] for s in batch]
        assert sorted(seen) == list(range(N))
        m = MapDataset(served.ref.name, source)
        assert m.ref == served.ref and m[N - 1]["data"] == served.bodies[N - 1]
    finally:
        source.close()


# -- edge cases, through an in-memory source ------------------------------------------------


@pytest.fixture
def mem() -> tuple[MemorySource, DatasetRef]:
    src = MemorySource()
    src.add("imgs", sample_bytes("imgs", 1, 10))
    ref = src.add("imgs", sample_bytes("imgs", 2, 50))
    return src, ref


def test_refuses_persistent_workers(mem: tuple[MemorySource, DatasetRef]) -> None:
    src, ref = mem
    ds = IterableDataset(ref, src, batch_size=8)
    dl = DataLoader(ds, batch_size=None, num_workers=1, persistent_workers=True, multiprocessing_context="fork")
    assert len(list(dl)) == 7
    with pytest.raises(RuntimeError, match="persistent_workers"):
        list(dl)


def test_state_dict_misuse_is_refused(mem: tuple[MemorySource, DatasetRef]) -> None:
    src, ref = mem
    ds = IterableDataset(ref, src, batch_size=8, rank=0, world_size=2)
    with pytest.raises(ValueError, match="current epoch"):
        ds.state_dict(batches_consumed=5)  # a rank reads 4 batches of 8 of 25 rows
    assert ds.state_dict(batches_consumed=4)["consumed"] == 50, "epoch done"
    state = ds.state_dict(batches_consumed=1)
    with pytest.raises(ValueError, match="seed"):
        IterableDataset(ref, src, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="dataset"):
        IterableDataset("imgs@1", src).load_state_dict(state)
    with pytest.raises(TypeError):
        ds.state_dict()  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="rank"):
        IterableDataset(ref, src, rank=0)


def test_prefetch_keeps_order_and_stops_its_thread(mem: tuple[MemorySource, DatasetRef]) -> None:
    src, ref = mem
    plain = [[s["index"] for s in b] for b in IterableDataset(ref, src, batch_size=4, prefetch=0)]
    ahead = IterableDataset(ref, src, batch_size=4, prefetch=3, collate=lambda xs: [s["index"] for s in xs])
    assert list(ahead) == plain
    before = threading.active_count()
    it = iter(ahead)
    next(it)
    assert threading.active_count() == before + 1
    it.close()  # type: ignore[attr-defined]
    assert threading.active_count() == before


def test_drop_last_gives_ranks_equal_batches(mem: tuple[MemorySource, DatasetRef]) -> None:
    src, ref = mem
    counts = [len(IterableDataset(ref, src, batch_size=4, rank=r, world_size=3, drop_last=True)) for r in range(3)]
    assert counts == [4, 4, 4]  # 48 of 50 rows, 16 per rank
    uneven = [len(IterableDataset(ref, src, batch_size=4, rank=r, world_size=3)) for r in range(3)]
    assert uneven == [5, 5, 4]  # 17, 17, 16 rows


def _ddp_rank(rank: int, store: str, ref: DatasetRef, src: MemorySource, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        ds = IterableDataset(ref, src, batch_size=4)
        assert ds.world() == (rank, 2) == ShuffleSampler(50).world()
        rows = [s["index"] for batch in loader(ds, 2) for s in batch]
        Path(out).write_text(",".join(map(str, rows)))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_rank_from_torch_distributed(mem: tuple[MemorySource, DatasetRef], tmp_path: Path) -> None:
    """Two processes in a gloo process group, each with 2 forked DataLoader workers: the rank
    comes from torch.distributed, and the two read every sample once."""
    src, ref = mem
    ctx = multiprocessing.get_context("fork")
    outs = [tmp_path / f"rank{r}.txt" for r in range(2)]
    procs = [ctx.Process(target=_ddp_rank, args=(r, str(tmp_path / "store"), ref, src, str(outs[r]))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    rows = [int(x) for o in outs for x in o.read_text().split(",")]
    assert sorted(rows) == list(range(50))
