"""The BlobStore protocol: bytes by opaque blob id, one tier.

blob/ is the bottom layer. It knows nothing about buckets, keys or versions: the engine
generates a blob id, streams bytes into it, and records the id in the catalog (the commit
point, DESIGN.md "Write path"). Every read is verified against stored checksums and fails
loudly with ``CorruptBlob`` rather than return wrong bytes.

Shared here, so every implementation agrees on them: blob id validation, range validation,
the block size and the CRC32C function.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from awscrt import checksums as _checksums

from tierstore.errors import InvalidRange

__all__ = [
    "BLOCK_SIZE_BYTES",
    "BlobInfo",
    "BlobStore",
    "HealReport",
    "Healer",
    "RemoteBlobStore",
    "check_range",
    "crc32c",
    "validate_blob_id",
]

BLOCK_SIZE_BYTES = 64 * 1024
"""Checksum granularity: every block of this many bytes (the last may be short) has a CRC32C."""

_BLOB_ID_RE = re.compile(r"[0-9a-z_-]{16,64}")


def validate_blob_id(blob_id: str) -> str:
    """Return ``blob_id`` if it is 16..64 chars of ``[0-9a-z_-]``; else raise ValueError.

    The id becomes a file name, so this is what keeps it from ever naming a path outside a store.
    """
    if not isinstance(blob_id, str) or _BLOB_ID_RE.fullmatch(blob_id) is None:
        raise ValueError(f"invalid blob id {blob_id!r}: need 16..64 chars of [0-9a-z_-]")
    return blob_id


def check_range(size_bytes: int, offset: int, length: int | None) -> int:
    """Validate ``[offset, offset+length)`` against a blob of ``size_bytes``; return the end offset.

    ``length=None`` means "to the end". A zero-length range is valid anywhere in ``[0, size]``.
    Anything reaching beyond the end raises ``InvalidRange`` (a ValueError): the blob layer is
    strict; clamping an HTTP range to the object is the api layer's business.
    """
    if offset < 0 or (length is not None and length < 0):
        raise InvalidRange(f"negative range: offset={offset} length={length}")
    end = size_bytes if length is None else offset + length
    if offset > size_bytes or end > size_bytes:
        raise InvalidRange(f"range offset={offset} length={length} is beyond the blob's {size_bytes} bytes")
    return end


def crc32c(data: bytes | bytearray | memoryview, previous_crc: int = 0) -> int:
    """CRC32C (Castagnoli), hardware accelerated by awscrt; accepts any buffer without copying."""
    result: int = _checksums.crc32c(data, previous_crc)
    return result


@dataclass(frozen=True, slots=True)
class BlobInfo:
    blob_id: str
    size_bytes: int
    # From a put: the store proved it stored exactly the bytes sent (a remote tier: the service's
    # ETag equals the MD5 we computed of them), so a caller need not read it back to know.
    verified: bool = field(default=False, compare=False)


@runtime_checkable
class BlobStore(Protocol):
    """One tier: immutable blobs of bytes addressed by caller-generated ids.

    ``get`` is a coroutine that returns an iterator, so that a bad id, a bad range or a
    missing blob raise at ``await`` time, before a caller (the api layer) has sent response
    headers. Damage found while reading raises ``CorruptBlob`` from the iteration::

        async for chunk in await store.get(blob_id, offset, length): ...
    """

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        """Stream ``chunks`` into a new blob; durable when this returns.

        If the iterator raises or anything fails, nothing is left behind and the exception
        propagates. An existing blob id is never overwritten (ValueError). Chunks must not be
        mutated after they are yielded (they may be written without a copy).
        """
        ...

    async def get(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> AsyncIterator[bytes]:
        """Return an iterator over the bytes ``[offset, offset+length)`` (``None``: to the end).

        Raises at ``await``: ValueError for a bad id, ``InvalidRange`` (a ValueError) for a range
        beyond the end, ``CorruptBlob`` for a missing blob (the catalog said it exists). Every block
        is verified before any of its bytes are yielded; a mismatch or truncation raises
        ``CorruptBlob`` from the iteration. Yielded chunks are never empty.

        ``verify=False`` skips the per-block checksum pass (structure is still checked: length,
        footer/trailer, short reads). Only for callers that authenticate the bytes themselves
        (encrypted bodies: the AES-GCM tag of every package, docs/encryption.md) and re-read with
        ``verify=True`` when that check fails, to tell bitrot (repairable) from tampering.
        """
        ...

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True) -> bytes:
        """The whole range in memory (for small objects); same checks (and ``verify``) as ``get``."""
        ...

    async def delete(self, blob_id: str) -> None:
        """Remove the blob; deleting a missing blob is not an error."""
        ...

    async def stat(self, blob_id: str) -> BlobInfo | None:
        """Size of a committed blob, or None if there is none. Does not verify checksums."""
        ...

    def scan(self) -> AsyncIterator[BlobInfo]:
        """Every committed blob (in no particular order), for GC and scrub."""
        ...

    async def verify(self, blob_id: str) -> bool:
        """Full checksum pass over the blob (scrub). False if damaged or missing."""
        ...


@runtime_checkable
class RemoteBlobStore(BlobStore, Protocol):
    """A BlobStore that keeps metadata with each blob (a remote tier's object metadata), so what
    a blob holds can be told without the catalog (docs/tiers.md "Remote naming"). The mover
    writes to these; local stores have no use for it and stay plain ``BlobStore``s."""

    async def put(
        self, blob_id: str, chunks: AsyncIterable[bytes], *, meta: Mapping[str, str] | None = None
    ) -> BlobInfo:
        """``BlobStore.put``, plus ``meta`` (``tierstore-*`` names, printable ASCII values, about
        1.9 KiB in all) stored with the blob. A ``tierstore-crc32c`` given there (8 hex digits)
        must be the CRC32C of the body (``BadDigest`` otherwise) and lets whole reads verify by it."""
        ...

    async def head_meta(self, blob_id: str) -> Mapping[str, str] | None:
        """The ``meta`` stored with the blob (``tierstore-*`` fields, the store's own included),
        or None if there is no such blob."""
        ...


@dataclass(frozen=True, slots=True)
class HealReport:
    """What ``heal`` found and did for one blob.

    A *shard* is one of the ``shards_total`` pieces the layout places on distinct drives (an
    erasure-coded fragment file or a full replica; a single-directory store has one).
    ``shards_unavailable`` counts pieces that could not be checked or rewritten (their drive is
    offline, or the rewrite failed): the blob stays degraded until a later heal. ``lost`` means
    the blob cannot be read in full from what is left (or was not found at all); nothing is
    rewritten then.
    """

    blob_id: str
    size_bytes: int
    shards_total: int
    shards_ok: int
    shards_rebuilt: int
    shards_unavailable: int
    bytes_written: int
    lost: bool

    @property
    def healthy(self) -> bool:
        """Full redundancy now: every shard present and intact (after this heal's rewrites)."""
        return not self.lost and self.shards_ok + self.shards_rebuilt == self.shards_total


@runtime_checkable
class Healer(Protocol):
    """A store that can repair a blob in place; callers without one fall back to ``verify``."""

    async def heal(self, blob_id: str) -> HealReport:
        """Check every shard of the blob and rebuild the missing or damaged ones it can."""
        ...
