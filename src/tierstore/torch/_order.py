"""Sample order: per-epoch permutations, their partition over ranks and workers, and resume.

Pure numpy (no torch), shared by ``IterableDataset`` and ``ShuffleSampler``.

- Epoch ``e`` reads ``permutation(seed, e)``: a true per-sample shuffle of all rows.
- Reading starts at global position ``consumed`` (0, or where a resumed run left off). Of the
  positions ``consumed..end``, rank ``r`` of ``W`` reads ``consumed + r, consumed + r + W, ...``
  (its rank-local order). Cut into batches of B, rank-local batch ``b`` goes to DataLoader worker
  ``b % num_workers``: a DataLoader returns an iterable dataset's batches round-robin over its
  workers, so every rank's loop sees its rank-local batches in order.
- Hence, once every rank has taken k batches, the samples consumed are exactly the positions
  ``consumed .. consumed + k*B*W`` of the permutation: a prefix of what remains. A checkpoint
  stores that one number, and a resume re-partitions ``permutation[consumed:]`` over any world
  size, worker count or batch size: nothing repeated, nothing skipped.
- ``end``: the whole permutation (``drop_last=False``: every sample exactly once; when the rest
  is not a multiple of W, the first ranks get one sample more, so ranks may differ by one batch,
  which a DDP loop must tolerate, e.g. with ``torch.distributed.algorithms.Join``) or cut to a
  multiple of W (``drop_last=True``: equal ranks; up to W-1 samples of the epoch's shuffled tail
  are not read that epoch, as DistributedSampler(drop_last=True) does). Nothing is ever padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["STATE_FORMAT", "EpochCursor", "EpochPlan", "epoch_permutation", "num_batches", "worker_batches"]

STATE_FORMAT = 1


def epoch_permutation(n: int, seed: int, epoch: int, *, shuffle: bool = True) -> npt.NDArray[np.int64]:
    """Rows in the order epoch ``epoch`` reads them: ``PCG64([seed, epoch])``'s permutation of
    ``range(n)`` (``shuffle=False``: ``range(n)``). The same on every rank and worker."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n).astype(np.int64, copy=False)


def num_batches(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def worker_batches(rank_rows: int, batch_size: int, worker: int, num_workers: int) -> list[slice]:
    """Slices of a rank's rank-local order that ``worker`` of ``num_workers`` reads, in order."""
    assert 0 <= worker < num_workers
    return [
        slice(b * batch_size, min(rank_rows, (b + 1) * batch_size))
        for b in range(worker, num_batches(rank_rows, batch_size), num_workers)
    ]


@dataclass(frozen=True, slots=True)
class EpochPlan:
    """Which positions of an epoch's permutation each rank reads, from ``consumed`` on."""

    n: int
    consumed: int
    world_size: int
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, not {self.world_size}")
        assert 0 <= self.consumed <= self.n

    @property
    def end(self) -> int:
        """One past the last position read this epoch."""
        rest = self.n - self.consumed
        return self.n - (rest % self.world_size if self.drop_last else 0)

    def rank_rows(self, rank: int) -> int:
        """How many samples rank ``rank`` reads."""
        return max(0, num_batches(self.end - self.consumed - rank, self.world_size))

    def rank_positions(self, rank: int) -> npt.NDArray[np.int64]:
        """The global positions rank ``rank`` reads, in its rank-local order."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), not {rank}")
        return np.arange(self.consumed + rank, self.end, self.world_size, dtype=np.int64)

    def consumed_after(self, batches: int, batch_size: int) -> int:
        """The global position reached once every rank has taken ``batches`` batches of
        ``batch_size`` (the last ones may be short) from this plan; ``n`` when the epoch is done."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        most = num_batches(self.rank_rows(0), batch_size)  # rank 0 reads the most
        if not 0 <= batches <= most:
            raise ValueError(
                f"batches_consumed={batches}, but a rank reads at most {most} batches of {batch_size} in this "
                "epoch: count the batches taken from the current epoch's iterator only"
            )
        taken = sum(min(batches * batch_size, self.rank_rows(r)) for r in range(self.world_size))
        reached = self.consumed + taken
        return self.n if reached == self.end else reached


class EpochCursor:
    """The current epoch and the position reading starts from; the state_dict format.

    ``load`` sets the epoch and its start position; ``set_epoch`` to that same epoch keeps the
    start (so a loop calling ``set_epoch(epoch)`` at each epoch's top resumes correctly), to any
    other epoch starts from 0."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0
        self.start = 0
        self._loaded: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, not {epoch}")
        self.epoch = epoch
        self.start = self._loaded[1] if self._loaded is not None and self._loaded[0] == epoch else 0

    def plan(self, world_size: int, drop_last: bool) -> EpochPlan:
        return EpochPlan(self.n, self.start, world_size, drop_last)

    def state(self, consumed: int) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "rows": self.n, "seed": self.seed, "epoch": self.epoch, "consumed": consumed}

    def load(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown loader state format {state.get('format')!r} (expected {STATE_FORMAT})")
        if state["rows"] != self.n:
            raise ValueError(f"the state is of a dataset of {state['rows']} rows, this one has {self.n}")
        if state["seed"] != self.seed:
            raise ValueError(f"the state was saved with seed={state['seed']}, this loader has seed={self.seed}")
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if epoch < 0 or not 0 <= consumed <= self.n:
            raise ValueError(f"bad loader state: epoch {epoch}, consumed {consumed} of {self.n}")
        self._loaded = (epoch, consumed)
        self.epoch = epoch
        self.start = consumed
