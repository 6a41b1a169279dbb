"""S3BlobStore against a real SeaweedFS: the BlobStore conformance suite, plus what only a remote
tier has: object metadata, multipart uploads with bounded memory, timeouts, the tier going away
and coming back, and damage done to the remote object behind the store's back (with boto3)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.seaweed import SeaweedFS
from tests.test_memory import RssPeak
from tierstore.api._errors import status_of
from tierstore.blob import BlobInfo, BlobStore, RemoteBlobStore, S3BlobStore, S3StoreConfig
from tierstore.blob._protocol import crc32c
from tierstore.errors import BadDigest, CorruptBlob, TierUnavailable
from tierstore.testing.blobstore import (
    RANGE_BLOB_SIZE,
    BlobStoreConformance,
    collect,
    new_blob_id,
    payload,
    run,
    stream,
)

pytestmark = pytest.mark.peer

MIB = 1024 * 1024
B = 64 * 1024
PART = 5 * MIB  # S3's minimum part: the smallest body that goes up as a multipart upload is 5 MiB + 1
BUCKET = "tierstore-tier"
HANG_GUARD_S = 60  # a bound on waiting, so a hang fails the test instead of stalling the run


@pytest.fixture(scope="module")
def remote(seaweedfs: SeaweedFS) -> SeaweedFS:
    with contextlib.suppress(Exception):
        seaweedfs.client().create_bucket(Bucket=BUCKET)
    return seaweedfs


def make_store(weed: SeaweedFS, prefix: str | None = None, **config: Any) -> S3BlobStore:
    return S3BlobStore(
        S3StoreConfig(
            endpoint=weed.endpoint,
            bucket=BUCKET,
            prefix=prefix if prefix is not None else f"t/{uuid.uuid4().hex[:12]}",
            access_key=weed.access_key,
            secret_key=weed.secret_key,
            part_size_bytes=config.pop("part_size_bytes", PART),
            **config,
        )
    )


def _key(store: S3BlobStore, blob_id: str) -> str:
    prefix = store.config.prefix.strip("/")
    return f"{prefix}/{blob_id}" if prefix else blob_id


def rewrite(weed: SeaweedFS, store: S3BlobStore, blob_id: str, change: Callable[[bytearray], None]) -> None:
    """Overwrite the remote object behind the store's back: same metadata, changed bytes."""
    client = weed.client()
    obj = client.get_object(Bucket=BUCKET, Key=_key(store, blob_id))
    data = bytearray(obj["Body"].read())
    change(data)
    client.put_object(Bucket=BUCKET, Key=_key(store, blob_id), Body=bytes(data), Metadata=obj["Metadata"])


def uploads_in_progress(weed: SeaweedFS, store: S3BlobStore) -> list[str]:
    listing = weed.client().list_multipart_uploads(Bucket=BUCKET, Prefix=store.config.prefix.strip("/") + "/")
    return [u["Key"] for u in listing.get("Uploads", [])]


class TestS3BlobStore(BlobStoreConformance):
    """The shared suite. Three damage tests are replaced: a plain remote object has no per-block
    checksums, so only whole verified reads detect damage (docs/tiers.md "The remote blob store")."""

    @pytest.fixture
    def store(self, remote: SeaweedFS) -> BlobStore:
        self.weed = remote
        return make_store(remote)

    def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None:
        assert isinstance(store, S3BlobStore)

        def flip(data: bytearray) -> None:
            data[offset] ^= 0xFF

        rewrite(self.weed, store, blob_id, flip)

    def truncate(self, store: BlobStore, blob_id: str) -> None:
        assert isinstance(store, S3BlobStore)

        def cut(data: bytearray) -> None:
            del data[-1:]

        rewrite(self.weed, store, blob_id, cut)

    def leftovers(self, store: BlobStore) -> list[str]:
        assert isinstance(store, S3BlobStore)
        return uploads_in_progress(self.weed, store)

    @pytest.mark.parametrize("damaged_offset", [0, B + 100, RANGE_BLOB_SIZE - 1])
    def test_corruption_is_detected_per_block(self, store: BlobStore, damaged_offset: int) -> None:
        """Whole reads refuse a damaged body and never hand it over complete; ranges return the
        stored bytes (the documented limit of a plain remote object)."""

        async def body() -> None:
            data = payload(RANGE_BLOB_SIZE)
            blob_id = await self.put_bytes(store, data)
            self.corrupt(store, blob_id, damaged_offset)
            with pytest.raises(CorruptBlob):
                await store.read(blob_id)
            got = bytearray()
            with pytest.raises(CorruptBlob):
                async for chunk in await store.get(blob_id):
                    got += chunk
            assert len(got) < RANGE_BLOB_SIZE  # the last chunk is held back until the check
            assert not await store.verify(blob_id)
            flipped = bytes([data[damaged_offset] ^ 0xFF])
            assert await store.read(blob_id, damaged_offset, 1) == flipped  # unverifiable range

        run(body())

    def test_corruption_in_big_blob(self, store: BlobStore) -> None:
        async def body() -> None:
            data = payload(5 * MIB)
            blob_id = await self.put_bytes(store, data)
            self.corrupt(store, blob_id, 3 * MIB + 5)
            got = bytearray()
            with pytest.raises(CorruptBlob):
                async for chunk in await store.get(blob_id):
                    got += chunk
            assert len(got) < 5 * MIB
            assert data[: 3 * MIB].startswith(bytes(got[: 3 * MIB]))
            assert await store.read(blob_id, 0, 3 * MIB) == data[: 3 * MIB]
            assert not await store.verify(blob_id)

        run(body())

    def test_unverified_reads_skip_the_block_checks(self, store: BlobStore) -> None:
        async def body() -> None:
            data = payload(RANGE_BLOB_SIZE)
            blob_id = await self.put_bytes(store, data)
            assert await store.read(blob_id, verify=False) == data
            self.corrupt(store, blob_id, B + 100)
            streamed = await collect(store, blob_id, verify=False)
            assert len(streamed) == RANGE_BLOB_SIZE and streamed != data
            with pytest.raises(CorruptBlob):
                await store.read(blob_id)

        run(body())


# --- metadata ------------------------------------------------------------------------------------


def test_satisfies_the_remote_protocol(remote: SeaweedFS) -> None:
    assert isinstance(make_store(remote), RemoteBlobStore)


@pytest.mark.parametrize("size_bytes", [10, PART + 1])
def test_metadata_round_trip(remote: SeaweedFS, size_bytes: int) -> None:
    meta = {
        "tierstore-bucket": "photos",
        "tierstore-key": "cats%2F%C3%A9t%C3%A9.jpg",
        "tierstore-version-id": "3HL4kqtJlcpXroDTDmJ",
        "tierstore-etag": '"9b2cf535f27731c974343645a3985328"',
    }

    async def body() -> None:
        store = make_store(remote)
        blob_id = new_blob_id()
        data = payload(size_bytes)
        info = await store.put(blob_id, stream(data, [MIB]), meta=meta)
        assert info == BlobInfo(blob_id, size_bytes) and info.verified  # the ETag was our MD5
        got = await store.head_meta(blob_id)
        assert got is not None
        assert {k: got[k] for k in meta} == meta
        assert set(got) - set(meta) <= {"tierstore-size", "tierstore-crc32c", "tierstore-part-size"}
        # and what any S3 tool sees, without our catalog
        head = remote.client().head_object(Bucket=BUCKET, Key=_key(store, blob_id))
        assert {k: head["Metadata"][k] for k in meta} == meta
        assert await store.head_meta(new_blob_id()) is None
        assert await store.read(blob_id) == data

    run(body())


@pytest.mark.parametrize(
    "meta",
    [
        {"owner": "x"},  # not tierstore-*
        {"tierstore-Key": "x"},  # uppercase
        {"tierstore-size": "1"},  # the store's own
        {"tierstore-crc32c": "0"},
        {"tierstore-key": "é"},  # not ASCII: callers percent-encode
        {"tierstore-key": "a\nb"},
        {"tierstore-key": "x" * 2048},
    ],
)
def test_bad_metadata_is_refused_before_anything_is_sent(remote: SeaweedFS, meta: dict[str, str]) -> None:
    async def body() -> None:
        store = make_store(remote)
        blob_id = new_blob_id()
        with pytest.raises(ValueError):
            await store.put(blob_id, stream(b"data"), meta=meta)
        assert await store.stat(blob_id) is None

    run(body())


def test_scan_skips_objects_that_are_not_blobs(remote: SeaweedFS) -> None:
    async def body() -> None:
        store = make_store(remote)
        mine = await store.put(new_blob_id(), stream(b"mine"))
        client = remote.client()
        prefix = store.config.prefix
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/README.txt", Body=b"hello")
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/nested/{new_blob_id()}", Body=b"x")
        assert [info async for info in store.scan()] == [mine]
        # an object under a blob id that this store did not write is not a blob
        foreign = new_blob_id()
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{foreign}", Body=b"someone else's")
        with pytest.raises(CorruptBlob):
            await store.read(foreign, verify=False)
        assert not await store.verify(foreign)

    run(body())


# --- multipart ---------------------------------------------------------------------------------


def test_multipart_round_trip_ranges_and_damage(remote: SeaweedFS) -> None:
    async def body() -> None:
        store = make_store(remote)
        data = payload(2 * PART + 12345)
        blob_id = new_blob_id()
        info = await store.put(blob_id, stream(data, [B + 1, 3 * MIB]))
        assert info == BlobInfo(blob_id, len(data)) and info.verified  # the composite ETag of our part MD5s
        head = remote.client().head_object(Bucket=BUCKET, Key=_key(store, blob_id))
        assert head["ETag"].endswith('-3"')  # three parts went up
        assert await store.read(blob_id) == data
        assert await collect(store, blob_id) == data
        assert await store.verify(blob_id)
        for offset, length in [(PART - 1, 2), (PART, PART), (0, 1), (len(data) - 1, 1), (7, None)]:
            end = len(data) if length is None else offset + length
            assert await store.read(blob_id, offset, length) == data[offset:end]

        def flip(buf: bytearray) -> None:
            buf[PART + 3] ^= 1

        rewrite(remote, store, blob_id, flip)  # a single PUT now: the multipart ETag is gone
        with pytest.raises(CorruptBlob):
            await store.read(blob_id, verify=False)
        assert not await store.verify(blob_id)

    run(body())


def _rss(pids: Callable[[], list[int]]) -> RssPeak:
    return RssPeak(pids, interval_s=0.02)


def test_large_multipart_put_and_get_use_bounded_memory(remote: SeaweedFS) -> None:
    total = 320 * MIB
    chunk = payload(MIB)

    async def body_stream() -> AsyncIterator[bytes]:
        for i in range(total // MIB):
            yield i.to_bytes(8, "little") + chunk[8:]  # fresh bytes, as a file read gives

    async def body() -> None:
        store = make_store(remote, part_size_bytes=8 * MIB, part_concurrency=2)
        blob_id = new_blob_id()
        with _rss(lambda: [os.getpid()]) as put_rss:
            assert await store.put(blob_id, body_stream()) == BlobInfo(blob_id, total)
        with _rss(lambda: [os.getpid()]) as get_rss:
            n, i, tail = 0, 0, b""
            async for piece in await store.get(blob_id):  # verified: the ETag is recomputed
                tail += piece
                while len(tail) >= MIB:
                    assert tail[:8] == i.to_bytes(8, "little")
                    tail, i = tail[MIB:], i + 1
                n += len(piece)
            assert n == total
        assert await store.stat(blob_id) == BlobInfo(blob_id, total)
        # parts in flight + one being filled + the client's buffers; nowhere near the 320 MiB body
        assert put_rss.growth_bytes < 96 * MIB, str(put_rss)
        assert get_rss.growth_bytes < 64 * MIB, str(get_rss)
        await store.delete(blob_id)

    run(body())


def test_failed_multipart_upload_is_aborted(remote: SeaweedFS) -> None:
    class Boom(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        for _ in range(3 * PART // MIB + 1):
            yield payload(MIB)
        raise Boom

    async def body() -> None:
        store = make_store(remote)
        blob_id = new_blob_id()
        with pytest.raises(Boom):
            await store.put(blob_id, failing())
        assert await store.stat(blob_id) is None
        assert uploads_in_progress(remote, store) == []
        assert [i async for i in store.scan()] == []

    run(body())


@pytest.mark.parametrize("size_bytes", [100, PART + 100])
def test_a_given_crc32c_is_checked_and_recorded(remote: SeaweedFS, size_bytes: int) -> None:
    async def body() -> None:
        store = make_store(remote)
        data = payload(size_bytes)
        right = f"{crc32c(data):08x}"
        wrong = f"{crc32c(data) ^ 1:08x}"
        blob_id = new_blob_id()
        with pytest.raises(BadDigest):
            await store.put(blob_id, stream(data, [MIB]), meta={"tierstore-crc32c": wrong})
        assert await store.stat(blob_id) is None
        assert uploads_in_progress(remote, store) == []
        await store.put(blob_id, stream(data, [MIB]), meta={"tierstore-crc32c": right})
        assert (await store.head_meta(blob_id) or {}).get("tierstore-crc32c") == right
        assert await store.read(blob_id) == data

        def flip(buf: bytearray) -> None:
            buf[size_bytes // 2] ^= 4

        rewrite(remote, store, blob_id, flip)
        assert not await store.verify(blob_id)

    run(body())


def test_existing_blob_is_not_overwritten_by_a_multipart_put(remote: SeaweedFS) -> None:
    async def body() -> None:
        store = make_store(remote)
        blob_id = await store.put(new_blob_id(), stream(b"first"))
        with pytest.raises(ValueError):
            await store.put(blob_id.blob_id, stream(payload(PART + 1)))
        assert await store.read(blob_id.blob_id) == b"first"

    run(body())


# --- failures ----------------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A socket that listens (the kernel completes the handshake) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


def test_a_server_that_never_answers_times_out(silent_port: int) -> None:
    store = S3BlobStore(
        S3StoreConfig(
            endpoint=f"http://127.0.0.1:{silent_port}", bucket="b", access_key="k", secret_key="s",
            connect_timeout_s=1, read_timeout_s=1, max_retries=0,
        )
    )  # fmt: skip

    async def body() -> None:
        for op in (store.stat(new_blob_id()), store.read(new_blob_id()), store.put(new_blob_id(), stream(b"x"))):
            with pytest.raises(TierUnavailable) as info:
                await asyncio.wait_for(op, HANG_GUARD_S)
            assert info.value.headers["Retry-After"].isdigit()
            assert (info.value.code, status_of(info.value)) == ("ServiceUnavailable", 503)  # the api's table

    run(body())


def test_wrong_keys_are_unavailable_and_no_secret_leaks(remote: SeaweedFS) -> None:
    secret = "not-the-secret/0123456789abcdefghij"
    store = S3BlobStore(
        S3StoreConfig(endpoint=remote.endpoint, bucket=BUCKET, access_key="WRONGKEY", secret_key=secret)
    )

    async def body() -> None:
        with pytest.raises(TierUnavailable) as info:
            await store.put(new_blob_id(), stream(b"x"))
        assert secret not in str(info.value) and secret not in repr(store)

    run(body())


def test_tier_stopped_is_unavailable_and_comes_back(tmp_path: Path) -> None:
    weed = SeaweedFS(tmp_path / "weed")
    weed.start()
    try:
        weed.client().create_bucket(Bucket=BUCKET)
        store = make_store(weed, max_retries=1, connect_timeout_s=1, read_timeout_s=2)
        data = payload(3 * B)

        async def before() -> str:
            info = await store.put(new_blob_id(), stream(data))
            assert await store.read(info.blob_id) == data
            return info.blob_id

        blob_id = run(before())
        weed.stop()

        async def down() -> None:
            ops: list[Any] = [
                store.read(blob_id),
                store.get(blob_id, 5, 7),
                store.stat(blob_id),
                store.verify(blob_id),
                store.delete(blob_id),
                store.put(new_blob_id(), stream(b"x")),
                collect_scan(store),
            ]
            for op in ops:
                with pytest.raises(TierUnavailable):
                    await asyncio.wait_for(op, HANG_GUARD_S)

        run(down())
        weed.start()  # same port, same data

        async def back() -> None:
            assert await store.read(blob_id) == data

        run(back())
    finally:
        weed.stop()


async def collect_scan(store: S3BlobStore) -> list[BlobInfo]:
    return [info async for info in store.scan()]


def test_endpoint_guard_runs_before_connecting_and_after_failures(remote: SeaweedFS, silent_port: int) -> None:
    seen: list[str] = []
    refused = threading.Event()

    def guard(endpoint: str) -> None:
        seen.append(endpoint)
        if refused.is_set():
            raise PermissionError(f"endpoint {endpoint} is not allowed")

    config = S3StoreConfig(
        endpoint=remote.endpoint, bucket=BUCKET, prefix=f"t/{uuid.uuid4().hex[:12]}",
        access_key=remote.access_key, secret_key=remote.secret_key,
    )  # fmt: skip
    store = S3BlobStore(config, endpoint_guard=guard)
    assert seen == []  # nothing connects at construction

    async def body() -> None:
        blob_id = await store.put(new_blob_id(), stream(b"x"))
        await store.read(blob_id.blob_id)
        assert seen == [remote.endpoint]  # once, while the connection is good
        refused.set()
        # a tier that failed reconnects through the guard; a guard that refuses stops it there
        dead = S3BlobStore(
            S3StoreConfig(endpoint=f"http://127.0.0.1:{silent_port}", bucket="b", access_key="k", secret_key="s",
                          connect_timeout_s=1, read_timeout_s=1, max_retries=0),
            endpoint_guard=guard,
        )  # fmt: skip
        with pytest.raises(PermissionError):
            await dead.stat(new_blob_id())
        refused.clear()
        with pytest.raises(TierUnavailable):
            await asyncio.wait_for(dead.stat(new_blob_id()), HANG_GUARD_S)
        refused.set()
        with pytest.raises(PermissionError):  # the next attempt goes through the guard again
            await dead.stat(new_blob_id())

    run(body())


def test_config_is_checked() -> None:
    ok = {"endpoint": "http://127.0.0.1:1", "bucket": "b"}
    S3StoreConfig(**ok)  # the AWS credential chain, looked up at the first operation
    for bad in (
        {"endpoint": "ftp://x"},
        {"bucket": ""},
        {"access_key": "k"},  # without its secret
        {"prefix": "a/../b"},
        {"part_size_bytes": MIB},
        {"read_timeout_s": 0},
    ):
        with pytest.raises(ValueError):
            S3StoreConfig(**{**ok, **bad})  # type: ignore[arg-type]
    assert "hunter2" not in repr(S3StoreConfig(**ok, access_key="k", secret_key="hunter2"))
