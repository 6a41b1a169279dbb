"""Blob stores: immutable bytes by opaque blob id, one tier each (DESIGN.md "Layers").

Implementations: ``LocalBlobStore`` (plain files in one directory), ``ErasureBlobStore`` (a
``DriveSet``, erasure coded across its drives, docs/erasure.md), ``MemoryBlobStore`` (tests).
``tierstore.testing.blobstore.BlobStoreConformance`` is the suite they all pass. Stores that
can rebuild damaged blobs are also ``Healer``s.
"""

from tierstore.blob._endpoint import EndpointRefused, check_endpoint
from tierstore.blob._erasure import ErasureBlobStore
from tierstore.blob._local import LocalBlobStore
from tierstore.blob._memory import MemoryBlobStore
from tierstore.blob._protocol import (
    BLOCK_SIZE_BYTES,
    BlobInfo,
    BlobStore,
    Healer,
    HealReport,
    check_range,
    validate_blob_id,
)

__all__ = [
    "BLOCK_SIZE_BYTES",
    "BlobInfo",
    "BlobStore",
    "EndpointRefused",
    "ErasureBlobStore",
    "HealReport",
    "Healer",
    "LocalBlobStore",
    "MemoryBlobStore",
    "check_endpoint",
    "check_range",
    "validate_blob_id",
]
