"""MemoryBlobStore: the BlobStore contract in a dict, for fast unit tests.

It keeps a CRC32C per block like the disk stores and verifies it on every read, so the
conformance suite's corruption tests apply; ``flip_byte`` and ``truncate`` are the test hooks
that damage a stored blob.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from tierstore.blob._protocol import BLOCK_SIZE_BYTES, BlobInfo, check_range, crc32c, validate_blob_id
from tierstore.errors import CorruptBlob

__all__ = ["MemoryBlobStore"]

_PIECE_BYTES = 1024 * 1024  # get() yields up to this much at a time


@dataclass(slots=True)
class _Blob:
    data: bytearray  # mutable only so the test hooks can damage it
    size_bytes: int  # as committed; differs from len(data) after truncate()
    block_crcs: tuple[int, ...]


class MemoryBlobStore:
    """BlobStore in process memory. Not durable, obviously; same verification semantics."""

    def __init__(self) -> None:
        self._blobs: dict[str, _Blob] = {}

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        validate_blob_id(blob_id)
        if blob_id in self._blobs:
            raise ValueError(f"blob {blob_id} already exists")
        data = bytearray()
        async for chunk in chunks:
            data += chunk
        if blob_id in self._blobs:  # a concurrent put of the same id won the race
            raise ValueError(f"blob {blob_id} already exists")
        view = memoryview(data)
        crcs = tuple(crc32c(view[i : i + BLOCK_SIZE_BYTES]) for i in range(0, len(data), BLOCK_SIZE_BYTES))
        view.release()
        self._blobs[blob_id] = _Blob(data, len(data), crcs)
        return BlobInfo(blob_id, len(data))

    async def get(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> AsyncIterator[bytes]:
        blob = self._lookup(blob_id)
        end = check_range(blob.size_bytes, offset, length)
        return self._iter(blob_id, blob, offset, end, verify)

    async def _iter(self, blob_id: str, blob: _Blob, start: int, end: int, verify: bool) -> AsyncIterator[bytes]:
        while start < end:
            piece_end = min(end, (start // BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES + _PIECE_BYTES)
            yield self._read(blob_id, blob, start, piece_end, verify)
            start = piece_end

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True) -> bytes:
        blob = self._lookup(blob_id)
        end = check_range(blob.size_bytes, offset, length)
        return self._read(blob_id, blob, offset, end, verify) if offset < end else b""

    async def delete(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        self._blobs.pop(blob_id, None)

    async def stat(self, blob_id: str) -> BlobInfo | None:
        validate_blob_id(blob_id)
        blob = self._blobs.get(blob_id)
        return None if blob is None else BlobInfo(blob_id, blob.size_bytes)

    async def scan(self) -> AsyncIterator[BlobInfo]:
        for blob_id, blob in list(self._blobs.items()):
            yield BlobInfo(blob_id, blob.size_bytes)

    async def verify(self, blob_id: str) -> bool:
        validate_blob_id(blob_id)
        blob = self._blobs.get(blob_id)
        if blob is None:
            return False
        try:
            if blob.size_bytes:
                self._read_verified(blob_id, blob, 0, blob.size_bytes)
        except CorruptBlob:
            return False
        return True

    # --- test hooks ------------------------------------------------------------------------
    def flip_byte(self, blob_id: str, offset: int) -> None:
        """Damage the stored data: invert every bit of the byte at data ``offset``."""
        self._blobs[blob_id].data[offset] ^= 0xFF

    def truncate(self, blob_id: str, size_bytes: int | None = None) -> None:
        """Damage the stored data: cut it to ``size_bytes`` (default: drop the last byte).

        The committed size is kept, as a file system keeps the catalog's idea of it."""
        data = self._blobs[blob_id].data
        del data[len(data) - 1 if size_bytes is None else size_bytes :]

    # --- internals -------------------------------------------------------------------------
    def _lookup(self, blob_id: str) -> _Blob:
        validate_blob_id(blob_id)
        blob = self._blobs.get(blob_id)
        if blob is None:
            raise CorruptBlob(f"blob {blob_id} is missing", resource=blob_id)
        return blob

    @classmethod
    def _read(cls, blob_id: str, blob: _Blob, start: int, end: int, verify: bool) -> bytes:
        """Bytes [start, end); ``verify=False`` checks the length only (``BlobStore.get``)."""
        if verify:
            return cls._read_verified(blob_id, blob, start, end)
        if len(blob.data) != blob.size_bytes:
            raise CorruptBlob(f"blob {blob_id} is truncated", resource=blob_id)
        return bytes(blob.data[start:end])

    @staticmethod
    def _read_verified(blob_id: str, blob: _Blob, start: int, end: int) -> bytes:
        """Bytes [start, end) after checking every block that overlaps them."""
        if len(blob.data) != blob.size_bytes:
            raise CorruptBlob(f"blob {blob_id} is truncated", resource=blob_id)
        first = start // BLOCK_SIZE_BYTES
        last = (end - 1) // BLOCK_SIZE_BYTES
        with memoryview(blob.data) as view:
            for block in range(first, last + 1):
                block_data = view[block * BLOCK_SIZE_BYTES : (block + 1) * BLOCK_SIZE_BYTES]
                if crc32c(block_data) != blob.block_crcs[block]:
                    raise CorruptBlob(f"blob {blob_id} block {block} fails its checksum", resource=blob_id)
            return bytes(view[start:end])
