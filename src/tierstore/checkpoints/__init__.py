"""Checkpoints and models without torch: the layout and commit object every checkpoint kind
shares, the S3 calls they move bytes with, and the model registry's client side (register a
checkpoint, pull a model version into a directory, walk its lineage; docs/checkpoints.md). The torch faces are
``tierstore.torch.checkpoints`` (CheckpointStore, a torch.distributed.checkpoint writer/reader)."""

from tierstore.checkpoints._commit import (
    COMMITS_DIR,
    DATA_DIR,
    FORMAT,
    Commit,
    CommitFile,
    CommitFormatError,
    checkpoint_name,
    parse_name,
)
from tierstore.checkpoints._objects import (
    ListedObject,
    ObjectError,
    PreconditionFailed,
    PutResult,
    S3Objects,
    StoreUri,
    crc64nvme,
)
from tierstore.checkpoints._registry import (
    CommitLocation,
    ModelPullError,
    file_changed,
    lineage,
    model_info,
    model_rows,
    pull_model,
    register_model,
    resolve_commit,
)

__all__ = [
    "COMMITS_DIR",
    "DATA_DIR",
    "FORMAT",
    "Commit",
    "CommitFile",
    "CommitFormatError",
    "CommitLocation",
    "ListedObject",
    "ModelPullError",
    "ObjectError",
    "PreconditionFailed",
    "PutResult",
    "S3Objects",
    "StoreUri",
    "checkpoint_name",
    "crc64nvme",
    "file_changed",
    "lineage",
    "model_info",
    "model_rows",
    "parse_name",
    "pull_model",
    "register_model",
    "resolve_commit",
]
