from __future__ import annotations

import asyncio

import pytest

from tierstore.blob import BlobStore, MemoryBlobStore
from tierstore.errors import CorruptBlob
from tierstore.testing.blobstore import BlobStoreConformance, payload, stream


class TestMemoryBlobStore(BlobStoreConformance):
    @pytest.fixture
    def store(self) -> BlobStore:
        return MemoryBlobStore()

    def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None:
        assert isinstance(store, MemoryBlobStore)
        store.flip_byte(blob_id, offset)

    def truncate(self, store: BlobStore, blob_id: str) -> None:
        assert isinstance(store, MemoryBlobStore)
        store.truncate(blob_id)


def test_flip_byte_twice_restores_the_blob() -> None:
    async def body() -> None:
        store = MemoryBlobStore()
        data = payload(1000)
        await store.put("0123456789abcdef", stream(data))
        store.flip_byte("0123456789abcdef", 10)
        with pytest.raises(CorruptBlob):
            await store.read("0123456789abcdef")
        store.flip_byte("0123456789abcdef", 10)
        assert await store.read("0123456789abcdef") == data

    asyncio.run(body())
