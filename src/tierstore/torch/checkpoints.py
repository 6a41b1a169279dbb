"""Checkpoints in tierstore (docs/checkpoints.md): ``CheckpointStore`` saves a state_dict as data
files uploaded in parallel plus one commit object written last (all or nothing, also after a
kill -9), loads it back into memory, keeps the last K, and records the dataset versions it was
trained on. ``TierstoreWriter``/``TierstoreReader`` do the same for
``torch.distributed.checkpoint`` (N ranks, one commit)."""

from tierstore.torch._checkpoints import (
    CheckpointCorrupt,
    CheckpointExists,
    CheckpointInfo,
    CheckpointNotFound,
    CheckpointStore,
    load_pulled,
    opened_datasets,
)
from tierstore.torch._dcp import TierstoreReader, TierstoreWriter

__all__ = [
    "CheckpointCorrupt",
    "CheckpointExists",
    "CheckpointInfo",
    "CheckpointNotFound",
    "CheckpointStore",
    "TierstoreReader",
    "TierstoreWriter",
    "load_pulled",
    "opened_datasets",
]
