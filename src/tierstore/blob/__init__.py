"""Blob stores: immutable bytes by opaque blob id, one tier each (DESIGN.md "Layers").

Implementations: ``LocalBlobStore`` (plain files in one directory), ``ErasureBlobStore`` (a
``DriveSet``, erasure coded across its drives, docs/erasure.md), ``MemoryBlobStore`` (tests),
``S3BlobStore`` (a remote tier: a bucket and prefix on any S3-compatible service, docs/tiers.md;
a ``RemoteBlobStore``, which keeps metadata with each blob), ``CachedBlobStore`` (a store's blobs
read through a bounded local cache: the standard tier of scale-out gateways, docs/scale-out.md).
``tierstore.testing.blobstore.BlobStoreConformance`` is the suite they all pass. Stores that
can rebuild damaged blobs are also ``Healer``s.
"""

from tierstore.blob._cached import CachedBlobStore
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
    RemoteBlobStore,
    check_range,
    validate_blob_id,
)
from tierstore.blob._s3 import S3BlobStore, S3StoreConfig, StoreRefused, StoreUrl, parse_store_url

__all__ = [
    "BLOCK_SIZE_BYTES",
    "BlobInfo",
    "BlobStore",
    "CachedBlobStore",
    "EndpointRefused",
    "ErasureBlobStore",
    "HealReport",
    "Healer",
    "LocalBlobStore",
    "MemoryBlobStore",
    "RemoteBlobStore",
    "S3BlobStore",
    "S3StoreConfig",
    "StoreRefused",
    "StoreUrl",
    "check_endpoint",
    "check_range",
    "parse_store_url",
    "validate_blob_id",
]
