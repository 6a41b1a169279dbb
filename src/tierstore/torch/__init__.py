"""PyTorch loaders for tierstore datasets (the ``[torch]`` extra): ``MapDataset`` with
``ShuffleSampler``, and the streaming ``IterableDataset``. See docs/datasets.md."""

from tierstore.torch._datasets import IterableDataset, MapDataset, ShuffleSampler
from tierstore.torch._order import epoch_permutation

__all__ = ["IterableDataset", "MapDataset", "ShuffleSampler", "epoch_permutation"]
