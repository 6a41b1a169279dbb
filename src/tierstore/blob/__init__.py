"""Blob stores: immutable bytes by opaque blob id, one tier each (DESIGN.md "Layers").

Implementations: ``LocalBlobStore`` (plain files in one directory), ``MemoryBlobStore``
(tests). ``tierstore.testing.blobstore.BlobStoreConformance`` is the suite they all pass.
"""

from tierstore.blob._local import LocalBlobStore
from tierstore.blob._memory import MemoryBlobStore
from tierstore.blob._protocol import (
    BLOCK_SIZE_BYTES,
    BlobInfo,
    BlobStore,
    check_range,
    validate_blob_id,
)

__all__ = [
    "BLOCK_SIZE_BYTES",
    "BlobInfo",
    "BlobStore",
    "LocalBlobStore",
    "MemoryBlobStore",
    "check_range",
    "validate_blob_id",
]
