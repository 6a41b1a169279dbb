"""Epoch order, rank/worker partition and resume arithmetic (tierstore/torch/_order.py), with no
DataLoader: the DataLoader-backed proofs are in test_datasets.py."""

from __future__ import annotations

import numpy as np
import pytest

from tierstore.torch._order import EpochCursor, EpochPlan, epoch_permutation, num_batches, worker_batches


def loader_order(rank_rows: int, batch_size: int, num_workers: int) -> list[slice]:
    """Rank-local batches in the order a DataLoader returns them: round-robin over the workers,
    skipping a worker once it is exhausted."""
    per_worker = [iter(worker_batches(rank_rows, batch_size, w, num_workers)) for w in range(num_workers)]
    active = [True] * num_workers
    out = []
    while any(active):
        for w in range(num_workers):
            s = next(per_worker[w], None) if active[w] else None
            if s is None:
                active[w] = False
            else:
                out.append(s)
    return out


def test_permutation_is_seeded_per_epoch() -> None:
    a = epoch_permutation(1000, seed=7, epoch=0)
    assert sorted(a.tolist()) == list(range(1000))
    assert np.array_equal(a, epoch_permutation(1000, seed=7, epoch=0))
    assert not np.array_equal(a, epoch_permutation(1000, seed=7, epoch=1))
    assert not np.array_equal(a, epoch_permutation(1000, seed=8, epoch=0))
    assert np.array_equal(epoch_permutation(10, 7, 3, shuffle=False), np.arange(10))


@pytest.mark.parametrize("n", [0, 1, 97, 100, 256])
@pytest.mark.parametrize("world_size", [1, 3, 4])
@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_every_sample_once_and_loader_order_is_rank_local_order(n: int, world_size: int, num_workers: int) -> None:
    batch_size = 8
    plan = EpochPlan(n, 0, world_size)
    seen: list[int] = []
    for rank in range(world_size):
        positions = plan.rank_positions(rank)
        assert len(positions) == plan.rank_rows(rank)
        order = loader_order(len(positions), batch_size, num_workers)
        assert [i for s in order for i in range(s.start, s.stop)] == list(range(len(positions)))
        seen += positions.tolist()
    assert sorted(seen) == list(range(n))
    counts = [plan.rank_rows(r) for r in range(world_size)]
    assert max(counts, default=0) - min(counts, default=0) <= 1, "no padding: ranks differ by at most one sample"


@pytest.mark.parametrize(("n", "world_size", "batch_size"), [(100, 3, 8), (250, 2, 16), (7, 3, 2), (64, 4, 4)])
def test_lockstep_batches_consume_a_prefix(n: int, world_size: int, batch_size: int) -> None:
    plan = EpochPlan(n, 0, world_size)
    most = num_batches(plan.rank_rows(0), batch_size)
    for k in range(most + 1):
        taken = {int(p) for r in range(world_size) for p in plan.rank_positions(r)[: k * batch_size]}
        consumed = plan.consumed_after(k, batch_size)
        assert taken == set(range(consumed))
    assert plan.consumed_after(most, batch_size) == n
    with pytest.raises(ValueError, match="current epoch"):
        plan.consumed_after(most + 1, batch_size)


def test_resume_repartitions_the_rest_over_a_new_world() -> None:
    n, perm = 203, epoch_permutation(203, 1, 0)
    first = EpochPlan(n, 0, world_size=2)
    consumed = first.consumed_after(batches=5, batch_size=8)
    assert consumed == 5 * 8 * 2
    read = [perm[first.rank_positions(r)[:40]] for r in range(2)]
    second = EpochPlan(n, consumed, world_size=3)
    read += [perm[second.rank_positions(r)] for r in range(3)]
    got = np.concatenate(read).tolist()
    assert sorted(got) == list(range(n))


def test_drop_last_makes_ranks_equal_and_reads_no_sample_twice() -> None:
    plan = EpochPlan(103, 10, world_size=4, drop_last=True)
    assert plan.end == 102
    assert {plan.rank_rows(r) for r in range(4)} == {23}
    seen = np.concatenate([plan.rank_positions(r) for r in range(4)]).tolist()
    assert sorted(seen) == list(range(10, 102))
    assert plan.consumed_after(2, 8) == 10 + 2 * 8 * 4
    assert plan.consumed_after(3, 8) == 103, "the epoch is done: the dropped tail is not left for a resume"


def test_cursor_state_round_trip_and_checks() -> None:
    cur = EpochCursor(100, seed=5)
    cur.set_epoch(3)
    state = cur.state(40)
    other = EpochCursor(100, seed=5)
    other.load(state)
    assert (other.epoch, other.start) == (3, 40)
    other.set_epoch(3)
    assert other.start == 40, "set_epoch(the loaded epoch) keeps the resume point"
    other.set_epoch(4)
    assert other.start == 0
    with pytest.raises(ValueError, match="seed"):
        EpochCursor(100, seed=6).load(state)
    with pytest.raises(ValueError, match="rows"):
        EpochCursor(99, seed=5).load(state)
    with pytest.raises(ValueError, match="format"):
        EpochCursor(100, seed=5).load({**state, "format": 99})
    with pytest.raises(ValueError, match="world_size"):
        EpochPlan(10, 0, 0)
