"""engine/_encryption.py and the encrypted write path of ObjectService, in process, on a real
SQLite catalog, a real LocalBlobStore and the real local keystore: the version id bound at
commit (``VersioningChanged`` and the retry), ranged opens across the streams of a multipart
layout, and the ``"e"`` document itself. End to end over HTTP: tests/api/test_sse_e2e.py."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tierstore.blob import LocalBlobStore
from tierstore.catalog import SqliteCatalog, VersioningChanged, VersionRecord
from tierstore.crypto import PACKAGE_BYTES, KmsKeyDisabled, LocalKeyStore, MasterKey, StreamLayout
from tierstore.engine import EncryptionRequest, ObjectService
from tierstore.engine._encryption import (
    VerifiedBindings,
    new_nonce_prefix,
    open_range,
    seal_chunks,
    verified_bindings,
)
from tierstore.errors import InternalError
from tierstore.types import NULL_VERSION, GetOptions, ObjectMeta

B = "enc"


async def body(data: bytes, piece: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


class SwitchingCatalog(SqliteCatalog):
    """A real catalog whose bucket versioning is switched once, just before the next publish:
    what a concurrent PutBucketVersioning does to a write between its choice of version id and
    its commit."""

    switch_to: str | None = None

    async def put_version(self, record: VersionRecord, **kw: Any) -> str:
        if self.switch_to is not None:
            status, self.switch_to = self.switch_to, None

            def update(props: dict[str, Any]) -> dict[str, Any]:
                props["versioning"] = status
                return props

            await self.update_bucket_props(record.meta.bucket, update)
        return await super().put_version(record, **kw)


@contextmanager
def service(tmp_path: Path) -> Iterator[tuple[ObjectService, SwitchingCatalog]]:
    catalog = SwitchingCatalog(tmp_path / "catalog.db")
    kms = LocalKeyStore(catalog, MasterKey(os.urandom(32)))
    try:
        svc = ObjectService(catalog, LocalBlobStore(tmp_path / "data"), kms=kms, inline_max_bytes=1000)
        asyncio.run(svc.create_bucket(B))
        yield svc, catalog
    finally:
        catalog.close()


def put(svc: ObjectService, key: str, data: bytes, kind: str = "s3") -> ObjectMeta:
    return asyncio.run(svc.put_object(B, key, body(data), encryption=EncryptionRequest(kind)))  # type: ignore[arg-type]


def read(svc: ObjectService, key: str, version_id: str | None = None) -> bytes:
    return asyncio.run(svc.read_object(B, key, GetOptions(version_id=version_id)))[1]


@pytest.mark.parametrize("size", [10, 300_000])  # inline and blob
def test_versioning_switched_before_the_commit_rebinds_the_version_id(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    with service(tmp_path) as (svc, catalog):
        catalog.switch_to = "Enabled"  # chosen "null", committed in a versioned bucket
        meta = put(svc, "k", data)
        assert meta.version_id != NULL_VERSION
        assert read(svc, "k", meta.version_id) == data
        catalog.switch_to = "Suspended"  # chosen a new id, committed as the null version
        meta = put(svc, "k", data[::-1])
        assert meta.version_id == NULL_VERSION
        assert read(svc, "k") == data[::-1] and read(svc, "k", NULL_VERSION) == data[::-1]


def test_the_catalog_refuses_a_fixed_version_id_of_the_wrong_kind(tmp_path: Path) -> None:
    with service(tmp_path) as (svc, catalog):
        meta = ObjectMeta(B, "k", "0" * 24, 0, '"x"', 1)
        with pytest.raises(VersioningChanged):  # a new id in a bucket that never had versioning
            asyncio.run(catalog.put_version(VersionRecord(meta, inline_data=b""), fixed_version_id=True))
        assert asyncio.run(catalog.get_latest(B, "k")) is None
        meta.version_id = NULL_VERSION
        asyncio.run(catalog.put_version(VersionRecord(meta, inline_data=b""), fixed_version_id=True))
        asyncio.run(svc.set_bucket_versioning(B, "Enabled"))
        with pytest.raises(VersioningChanged):  # "null" in a versioned bucket
            asyncio.run(catalog.put_version(VersionRecord(meta, inline_data=b""), fixed_version_id=True))


def test_the_stored_document(tmp_path: Path) -> None:
    with service(tmp_path) as (svc, catalog):
        meta = put(svc, "k", b"x" * 70_000, "kms")
        e = asyncio.run(svc.head_object(B, "k")).meta.encryption
        assert e == meta.encryption
        assert set(e) == {"v", "kind", "ps", "n", "kid", "wk", "np", "mac"}
        assert (e["v"], e["kind"], e["ps"], e["n"], e["kid"]) == (1, "kms", PACKAGE_BYTES, 70_000, "tierstore-sse-s3")
        (ref,) = asyncio.run(catalog.get_latest(B, "k")).blobs  # type: ignore[union-attr]
        assert ref.size_bytes == 70_000 + 2 * 16


def test_a_cached_data_key_is_refused_once_its_key_is_disabled(tmp_path: Path) -> None:
    """docs/encryption.md "The data key cache": a reread takes the data key from the worker's
    cache and skips the binding MAC it verified before, yet the key's status is checked on every
    read (a disabled key unwraps nothing, from the cache either), and SSE-C reads are kept in
    neither."""
    data = os.urandom(5_000)
    with service(tmp_path) as (svc, _catalog):
        kms = svc.kms
        assert isinstance(kms, LocalKeyStore)
        asyncio.run(kms.create_key("team-key"))
        request = EncryptionRequest("kms", kms_key_id="team-key")
        asyncio.run(svc.put_object(B, "k", body(data), encryption=request))
        kms.data_keys.clear()
        verified_bindings.clear()
        assert read(svc, "k") == data
        assert (len(kms.data_keys), len(verified_bindings)) == (0, 0)  # read once: nothing kept (Doorkeeper)
        assert read(svc, "k") == data
        assert (len(kms.data_keys), len(verified_bindings)) == (1, 1)  # what the next reads are served from
        assert read(svc, "k") == data
        asyncio.run(kms.set_enabled("team-key", False))  # this worker: at once (other workers: within 1 s)
        with pytest.raises(KmsKeyDisabled):
            read(svc, "k")
        asyncio.run(kms.set_enabled("team-key", True))
        assert read(svc, "k") == data  # nothing was lost
        customer = os.urandom(32)
        sse_c = EncryptionRequest("c", customer_key=customer, customer_key_md5="md5")
        asyncio.run(svc.put_object(B, "c", body(data), encryption=sse_c))
        got = asyncio.run(svc.read_object(B, "c", GetOptions(customer_key=customer)))[1]
        assert got == data and (len(kms.data_keys), len(verified_bindings)) == (1, 1)


def test_open_range_across_multipart_streams() -> None:
    """The reader opens any range of a layout of several streams (multipart parts under derived
    keys), reading only the ciphertext of the packages it touches."""
    rng = random.Random(16)
    data_key = os.urandom(32)
    sizes = [PACKAGE_BYTES * 2 + 5, 1, PACKAGE_BYTES, 3 * PACKAGE_BYTES - 1]
    plain = [rng.randbytes(n) for n in sizes]
    streams = tuple(StreamLayout(i + 1, n, new_nonce_prefix()) for i, n in enumerate(sizes))

    async def sealed(i: int) -> bytes:
        async def one() -> AsyncIterator[bytes]:
            yield plain[i]

        s = streams[i]
        return b"".join([c async for c in seal_chunks(one(), data_key, s.nonce_prefix, part_number=s.part_number)])

    cipher = b"".join(asyncio.run(sealed(i)) for i in range(len(sizes)))
    whole = b"".join(plain)
    asked: list[tuple[int, int]] = []

    async def read(start: int, size: int, verify: bool = True) -> AsyncIterator[bytes]:
        asked.append((start, size))
        yield cipher[start : start + size]

    async def opened(offset: int, length: int) -> bytes:
        it = open_range(read, data_key, streams, offset, length, name=("b", "k", "v"))
        return b"".join([c async for c in it])

    for _ in range(40):
        a = rng.randrange(len(whole))
        b = rng.randrange(a, len(whole)) + 1
        asked.clear()
        assert asyncio.run(opened(a, b - a)) == whole[a:b]
        assert sum(n for _, n in asked) <= (b - a) + 2 * len(sizes) * (PACKAGE_BYTES + 16)
    broken = bytearray(cipher)
    broken[len(cipher) - 5] ^= 1  # the last package of the last part

    async def read_broken(start: int, size: int, verify: bool = True) -> AsyncIterator[bytes]:
        yield bytes(broken[start : start + size])

    async def opened_broken() -> bytes:
        it = open_range(read_broken, data_key, streams, 0, len(whole), name=("b", "k", "v"))
        return b"".join([c async for c in it])

    with pytest.raises(InternalError, match="b/k"):
        asyncio.run(opened_broken())


def test_verified_bindings_keep_a_row_read_again_and_drop_the_older_half_when_full() -> None:
    """A row verified twice is kept (``Doorkeeper``), found again only with every input the same,
    and a full memo drops its older half in one pass, keeping the newer rows."""
    memo = VerifiedBindings(4)
    streams = (StreamLayout(0, 1, bytes(7)),)

    def doc(i: int) -> dict[str, object]:
        return {"mac": f"mac{i}", "wk": f"wk{i}", "n": 1}

    for i in range(4):
        memo.put(doc(i), "b", f"k{i}", "v1", [], streams)
        assert memo.get(doc(i), "b", f"k{i}", "v1", []) is None  # verified once: not kept
        memo.put(doc(i), "b", f"k{i}", "v1", [], streams)
        assert memo.get(doc(i), "b", f"k{i}", "v1", []) is streams
    assert memo.get(doc(0), "b", "k0", "v2", []) is None  # another input: a miss, though the MAC is the same
    assert memo.get({**doc(0), "wk": "moved"}, "b", "k0", "v1", []) is None
    memo.put(doc(4), "b", "k4", "v1", [], streams)
    memo.put(doc(4), "b", "k4", "v1", [], streams)  # full: rows 0 and 1 dropped, 2 and 3 kept, then 4
    assert [memo.get(doc(i), "b", f"k{i}", "v1", []) is streams for i in range(5)] == [False, False, True, True, True]
    assert len(memo) == 3
