"""PyTorch datasets over a tierstore dataset version, read through the ``SampleSource`` protocol.

Both are picklable (DataLoader workers fork or spawn): they hold the source (which connects
lazily, per process), the opened manifest (a pyarrow Table) and the cache's path.
"""

from __future__ import annotations

import operator
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

from torch.utils import data as tud

from tierstore.datasets._cache import SampleCache, read_samples
from tierstore.datasets._manifest import DatasetRef, Manifest, SampleSource
from tierstore.datasets._stage import StagedPacks, staged_manifest
from tierstore.torch._lineage import record_opened
from tierstore.torch._order import EpochCursor, epoch_permutation, num_batches, worker_batches

__all__ = ["IterableDataset", "MapDataset", "ShuffleSampler"]

Sample = dict[str, Any]


def _world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): explicit values, else torch.distributed's when initialized, else (0, 1)."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("give both rank and world_size, or neither")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        return rank, world_size
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Reader:
    """Samples of one pinned dataset version: bytes from the cache or the source, key and label
    from the manifest. The manifest comes from a complete staging in ``cache_dir`` when there is
    one (then a fully staged dataset needs no source call at all), else from the source."""

    def __init__(
        self,
        ref: DatasetRef | str,
        source: SampleSource,
        cache_dir: str | os.PathLike[str] | None,
        cache_bytes_max: int | None,
    ) -> None:
        manifest = staged_manifest(cache_dir, ref) if cache_dir is not None else None
        self.manifest: Manifest = manifest if manifest is not None else source.open_manifest(DatasetRef.parse(ref))
        record_opened(str(self.manifest.ref))  # lineage: checkpoints saved in this process name it
        self.source = source
        self.cache = SampleCache(Path(cache_dir), cache_bytes_max) if cache_dir is not None else None
        self.packs = StagedPacks(cache_dir, manifest) if cache_dir is not None and manifest is not None else None

    def read(self, rows: Sequence[int]) -> list[Sample]:
        import pyarrow as pa

        if self.packs is not None:
            staged = self.packs.read(rows)
            bad = [j for j, data in enumerate(staged) if data is None]  # damaged on disk: from the source
            for j, data in zip(bad, read_samples(self.source, self.manifest, [rows[j] for j in bad]), strict=True):
                staged[j] = data
            datas: list[bytes] = [d for d in staged if d is not None]
        else:
            datas = read_samples(self.source, self.manifest, rows, self.cache)
        take = pa.array(rows, type=pa.int64())
        keys = self.manifest.table.column("key").take(take).to_pylist()
        labels = self.manifest.table.column("label").take(take).to_pylist()
        return [
            {"index": row, "key": key, "data": data, "label": label}
            for row, key, data, label in zip(rows, keys, datas, labels, strict=True)
        ]


class _OnReader:
    """What both datasets expose of the version they read."""

    _reader: _Reader

    @property
    def ref(self) -> DatasetRef:
        """The pinned version read."""
        return self._reader.manifest.ref

    @property
    def manifest(self) -> Manifest:
        return self._reader.manifest

    @property
    def cache(self) -> SampleCache | None:
        return self._reader.cache


class MapDataset(_OnReader, tud.Dataset[Any]):
    """Random access to the samples of ``ref`` (``"NAME@N"``, or ``"NAME"``: the latest version,
    resolved once here and pinned). A sample is ``{"index", "key", "data" (bytes), "label"}``, or
    what ``transform`` makes of it.

    ``dataset[i]`` reads one row; a DataLoader with a batch size calls ``__getitems__`` with the
    whole batch, which is one ``read_rows`` call. Pair it with ``ShuffleSampler`` for shuffled,
    rank-partitioned, resumable epochs. ``cache_dir``: a ``SampleCache`` (or staged) directory,
    ``cache_bytes_max`` its budget (None: unbounded)."""

    def __init__(
        self,
        ref: DatasetRef | str,
        source: SampleSource,
        *,
        transform: Callable[[Sample], Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_bytes_max: int | None = None,
    ) -> None:
        self._reader = _Reader(ref, source, cache_dir, cache_bytes_max)
        self.transform = transform

    def __len__(self) -> int:
        return len(self._reader.manifest)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        n = len(self)
        rows = [operator.index(i) for i in indices]
        for i in rows:
            if not 0 <= i < n:
                raise IndexError(f"sample index {i} out of range for {self.ref} ({n} rows)")
        samples = self._reader.read(rows)
        return samples if self.transform is None else [self.transform(s) for s in samples]


class IterableDataset(_OnReader, tud.IterableDataset[Any]):
    """Streams epochs of ``ref`` as whole batches; use ``DataLoader(ds, batch_size=None,
    num_workers=W)`` (and its default ``in_order=True``, which the order below relies on). Each
    batch's samples not in the cache are one ``read_rows`` call, and a thread per worker fetches
    the next ``prefetch`` batches while the current one is used. A batch is the list of samples
    (``{"index", "key", "data", "label"}`` or ``transform``'s result), or ``collate(list)``.

    Order (``_order.py``): epoch e is ``permutation(seed, e)`` (``shuffle=False``: row order),
    split over the DDP ranks (``rank``/``world_size``, else torch.distributed when initialized,
    else one rank) and the DataLoader's workers; every sample exactly once per epoch, no padding
    (``drop_last=True``: ranks equal, up to world_size-1 samples of the tail skipped that epoch).

    Resume: ``state_dict(batches_consumed=k)``, where k counts the batches this rank's loop took
    from the current epoch's iterator (ranks step in lockstep, so any rank's state is the same);
    ``load_state_dict`` then ``set_epoch(state["epoch"])`` continues the epoch where it stopped,
    also with another world size, worker count or batch size. ``persistent_workers=True`` is
    refused: workers that outlive an epoch would not see ``set_epoch`` or ``load_state_dict``."""

    def __init__(
        self,
        ref: DatasetRef | str,
        source: SampleSource,
        *,
        seed: int = 0,
        batch_size: int = 256,
        prefetch: int = 2,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Callable[[Sample], Any] | None = None,
        collate: Callable[[list[Any]], Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_bytes_max: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, not {prefetch}")
        _world(rank, world_size)  # validate now, not in a worker
        self._reader = _Reader(ref, source, cache_dir, cache_bytes_max)
        self.seed = seed
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.transform = transform
        self.collate = collate
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._rank = rank
        self._world_size = world_size
        self._cursor = EpochCursor(len(self._reader.manifest), seed)
        self._iterated_in_pid = 0

    @property
    def epoch(self) -> int:
        return self._cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch`` next (from where a loaded state left it, if it is that epoch)."""
        self._cursor.set_epoch(epoch)

    def state_dict(self, *, batches_consumed: int) -> dict[str, Any]:
        """Where to resume, once this rank's loop has taken ``batches_consumed`` batches from the
        current epoch's iterator: ``{"format", "dataset", "rows", "seed", "epoch", "consumed"}``,
        ``consumed`` being global positions of the epoch's permutation (``rows``: epoch done)."""
        _rank, world_size = self.world()
        plan = self._cursor.plan(world_size, self.drop_last)
        consumed = plan.consumed_after(batches_consumed, self.batch_size)
        return {**self._cursor.state(consumed), "dataset": str(self.ref)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the epoch is set to ``state["epoch"]``; its remaining samples
        are split over this run's ranks and workers."""
        if state.get("dataset") != str(self.ref):
            raise ValueError(f"the state is of dataset {state.get('dataset')!r}, this loader reads {self.ref}")
        self._cursor.load(state)

    def world(self) -> tuple[int, int]:
        """(rank, world_size) this dataset reads as."""
        return _world(self._rank, self._world_size)

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (over all its workers)."""
        rank, world_size = self.world()
        return num_batches(self._cursor.plan(world_size, self.drop_last).rank_rows(rank), self.batch_size)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for spawned workers, in the main process: freeze the rank torch.distributed
        # gives here (a spawned worker has no process group).
        state = self.__dict__.copy()
        state["_rank"], state["_world_size"] = self.world()
        return state

    def __iter__(self) -> Iterator[Any]:
        # A generator: errors surface at the first next(), where a DataLoader worker reports them
        # to the main process (an error in iter() itself, on a worker's second epoch, kills it).
        info = tud.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            if self._iterated_in_pid == os.getpid():
                raise RuntimeError(
                    "tierstore IterableDataset: a DataLoader worker started a second epoch; "
                    "persistent_workers=True is not supported (set_epoch and load_state_dict "
                    "would not reach the workers)"
                )
            self._iterated_in_pid = os.getpid()
        rank, world_size = self.world()
        plan = self._cursor.plan(world_size, self.drop_last)
        order = epoch_permutation(len(self._reader.manifest), self.seed, self._cursor.epoch, shuffle=self.shuffle)
        mine = order[plan.rank_positions(rank)]
        batches = [mine[s].tolist() for s in worker_batches(len(mine), self.batch_size, worker, num_workers)]
        yield from self._batches(batches)

    def _batches(self, batches: list[list[int]]) -> Iterator[Any]:
        if self.prefetch == 0:
            for rows in batches:
                yield self._finish(self._reader.read(rows))
            return
        todo = iter(batches)
        with ThreadPoolExecutor(1, thread_name_prefix="tierstore-prefetch") as pool:
            pending: deque[Future[list[Sample]]] = deque()
            try:
                for rows in islice(todo, self.prefetch + 1):  # the current batch and the next `prefetch`
                    pending.append(pool.submit(self._reader.read, rows))
                while pending:
                    samples = pending.popleft().result()
                    for rows in islice(todo, 1):
                        pending.append(pool.submit(self._reader.read, rows))
                    yield self._finish(samples)
            finally:
                for fut in pending:
                    fut.cancel()

    def _finish(self, samples: list[Sample]) -> Any:
        items = samples if self.transform is None else [self.transform(s) for s in samples]
        return items if self.collate is None else self.collate(items)


class ShuffleSampler(tud.Sampler[int]):
    """Indices for a ``MapDataset`` (or any map-style dataset of ``n`` rows), with the same order,
    partition and resume as ``IterableDataset``: ``DataLoader(ds, batch_size=B, sampler=s)``.

    Epoch e is ``permutation(seed, e)``; rank r of W gets positions r, r+W, ... (workers need no
    split: the DataLoader hands whole batches of these indices to them, in order). Exactly once
    per epoch, no padding; ``drop_last=True`` makes ranks equal (as ``DistributedSampler``).
    Resume: ``state_dict(batches_consumed=k, batch_size=B)`` (k: batches this rank's loop took
    from the current epoch), then ``load_state_dict`` and ``set_epoch(state["epoch"])``."""

    def __init__(
        self,
        dataset_or_n: Sized | int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        shuffle: bool = True,
    ) -> None:
        n = dataset_or_n if isinstance(dataset_or_n, int) else len(dataset_or_n)
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        _world(rank, world_size)  # validate now
        self._rank = rank
        self._world_size = world_size
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle = shuffle
        self._cursor = EpochCursor(n, seed)

    @property
    def epoch(self) -> int:
        return self._cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Sample epoch ``epoch`` next (from where a loaded state left it, if it is that epoch)."""
        self._cursor.set_epoch(epoch)

    def state_dict(self, *, batches_consumed: int, batch_size: int) -> dict[str, Any]:
        """Where to resume once this rank's loop took ``batches_consumed`` batches of
        ``batch_size`` (the DataLoader's) from the current epoch: ``{"format", "rows", "seed",
        "epoch", "consumed"}``."""
        _rank, world_size = self.world()
        plan = self._cursor.plan(world_size, self.drop_last)
        return self._cursor.state(plan.consumed_after(batches_consumed, batch_size))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._cursor.load(state)

    def world(self) -> tuple[int, int]:
        """(rank, world_size) this sampler samples for (resolved at each use: a sampler made
        before ``init_process_group`` still gets the rank)."""
        return _world(self._rank, self._world_size)

    def __len__(self) -> int:
        rank, world_size = self.world()
        return self._cursor.plan(world_size, self.drop_last).rank_rows(rank)

    def __iter__(self) -> Iterator[int]:
        rank, world_size = self.world()
        plan = self._cursor.plan(world_size, self.drop_last)
        order = epoch_permutation(self._cursor.n, self.seed, self._cursor.epoch, shuffle=self.shuffle)
        return iter(order[plan.rank_positions(rank)].tolist())
