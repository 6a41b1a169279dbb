from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import threading
import time
from pathlib import Path

import pytest

from tierstore.blob import BLOCK_SIZE_BYTES, BlobInfo, BlobStore, LocalBlobStore, _local
from tierstore.errors import CorruptBlob, InsufficientStorage, InternalError
from tierstore.testing.blobstore import BlobStoreConformance, collect, new_blob_id, payload, stream

B = BLOCK_SIZE_BYTES
MIB = 1024 * 1024


def _local_store(store: BlobStore) -> LocalBlobStore:
    assert isinstance(store, LocalBlobStore)
    return store


def _flip(path: Path, file_offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(file_offset)
        byte = f.read(1)
        f.seek(file_offset)
        f.write(bytes([byte[0] ^ 0xFF]))


class TestLocalBlobStore(BlobStoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "store")

    def corrupt(self, store: BlobStore, blob_id: str, offset: int) -> None:
        _flip(_local_store(store).blob_path(blob_id), offset)

    def truncate(self, store: BlobStore, blob_id: str) -> None:
        path = _local_store(store).blob_path(blob_id)
        os.truncate(path, path.stat().st_size - 1)

    def leftovers(self, store: BlobStore) -> list[str]:
        return sorted(os.listdir(_local_store(store).root / "tmp"))


def _put(store: LocalBlobStore, data: bytes, blob_id: str | None = None) -> str:
    blob_id = blob_id or new_blob_id()
    asyncio.run(store.put(blob_id, stream(data)))
    return blob_id


def test_layout_and_file_format(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = payload(3 * B + 17)
    blob_id = _put(store, data)
    path = tmp_path / "blobs" / blob_id[-4:-2] / blob_id[-2:] / blob_id
    assert store.blob_path(blob_id) == path
    raw = path.read_bytes()
    assert len(raw) == len(data) + 4 * 4 + 32 == _local.blob_file_size(len(data))
    assert raw[: len(data)] == data  # data first: byte 0 of the blob at file offset 0
    table = raw[len(data) : len(data) + 16]
    assert list(struct.unpack("<4I", table)) == [
        _local.crc32c(data[i : i + B]) for i in range(0, len(data), B)
    ]
    footer = raw[-32:]
    magic, version, reserved1, block_size, reserved2, size, table_crc, footer_crc = struct.unpack(
        "<4sHHIIQII", footer
    )
    assert (magic, version, block_size, size) == (b"TSB1", 1, B, len(data))
    assert reserved1 == reserved2 == 0
    assert table_crc == _local.crc32c(table)
    assert footer_crc == _local.crc32c(footer[:28])
    assert os.listdir(tmp_path / "tmp") == []


def test_empty_blob_is_just_a_footer(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob_id = _put(store, b"")
    raw = store.blob_path(blob_id).read_bytes()
    assert len(raw) == 32
    assert raw[:4] == b"TSB1"


def test_file_size_inverse() -> None:
    for size in [0, 1, 2, B - 1, B, B + 1, 3 * B + 17, 10 * MIB, 10 * MIB + 1, 2**40 + 5]:
        assert _local.data_size_from_file_size(_local.blob_file_size(size)) == size
    valid = {_local.blob_file_size(s) for s in range(3 * B)}
    for file_size in range(3 * B):
        inverse = _local.data_size_from_file_size(file_size)
        assert (inverse is not None) == (file_size in valid)


def test_crash_leftovers_are_removed_on_open(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    kept = _put(store, payload(100))
    tmp = tmp_path / "tmp"
    (tmp / "0123456789abcdef.deadbeef.tmp").write_bytes(b"half a blob")
    (tmp / "junk").write_bytes(b"")
    # a writer in another process that is still alive holds its temp file's flock
    live = tmp / "fedcba9876543210.cafe.tmp"
    live.write_bytes(b"in progress")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        reopened = LocalBlobStore(tmp_path)
        assert sorted(os.listdir(tmp)) == [live.name]
    finally:
        os.close(fd)
    assert asyncio.run(reopened.read(kept)) == payload(100)
    LocalBlobStore(tmp_path)
    assert os.listdir(tmp) == []


def test_scan_ignores_temp_and_stray_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob_id = _put(store, payload(5))
    (store.blob_path(blob_id).parent / "README").write_text("not a blob")
    stray_id = blob_id[:-4] + ("0000" if blob_id.endswith("ffff") else "ffff")  # belongs in another shard
    (store.blob_path(blob_id).parent / stray_id).write_bytes(b"wrong shard")
    (tmp_path / "blobs" / "zz").mkdir()
    (tmp_path / "tmp" / f"{new_blob_id()}.1.tmp").write_bytes(b"")

    async def scan() -> list[BlobInfo]:
        return [info async for info in store.scan()]

    assert asyncio.run(scan()) == [BlobInfo(blob_id, 5)]


def test_scan_reports_damaged_lengths_for_scrub(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob_id = _put(store, payload(2 * B))
    path = store.blob_path(blob_id)
    os.truncate(path, path.stat().st_size - 3)

    async def scan() -> list[BlobInfo]:
        return [info async for info in store.scan()]

    [info] = asyncio.run(scan())
    assert info.blob_id == blob_id
    assert not asyncio.run(store.verify(blob_id))
    with pytest.raises(CorruptBlob):
        asyncio.run(store.stat(blob_id))


@pytest.mark.parametrize("cut", ["footer-byte", "table-and-footer", "half", "all", "extra-byte"])
def test_every_kind_of_truncation_is_corrupt(tmp_path: Path, cut: str) -> None:
    store = LocalBlobStore(tmp_path)
    data = payload(3 * B + 17)
    blob_id = _put(store, data)
    path = store.blob_path(blob_id)
    new_size = {
        "footer-byte": path.stat().st_size - 1,
        "table-and-footer": len(data),
        "half": len(data) // 2,
        "all": 0,
        "extra-byte": path.stat().st_size + 1,
    }[cut]
    os.truncate(path, new_size)

    async def body() -> None:
        assert not await store.verify(blob_id)
        for offset, length in [(0, None), (0, 1), (len(data) - 1, 1), (B, B)]:
            with pytest.raises(CorruptBlob):
                await store.read(blob_id, offset, length)
            with pytest.raises(CorruptBlob):
                await collect(store, blob_id, offset, length)

    asyncio.run(body())


@pytest.mark.parametrize("where", ["footer-magic", "footer-size", "footer-crc", "table"])
def test_damaged_metadata_is_corrupt(tmp_path: Path, where: str) -> None:
    store = LocalBlobStore(tmp_path)
    data = payload(3 * B + 17)
    blob_id = _put(store, data)
    path = store.blob_path(blob_id)
    footer_at = path.stat().st_size - 32
    _flip(path, {"footer-magic": footer_at, "footer-size": footer_at + 16,
                 "footer-crc": footer_at + 30, "table": len(data) + 4}[where])

    async def body() -> None:
        assert not await store.verify(blob_id)
        with pytest.raises(CorruptBlob):
            await store.read(blob_id, B, 1)  # the block whose table entry is damaged
        with pytest.raises(CorruptBlob):
            await collect(store, blob_id)
        if where == "table":  # other blocks are still fine
            assert await store.read(blob_id, 0, B) == data[:B]
            assert await store.read(blob_id, 2 * B) == data[2 * B :]

    asyncio.run(body())


@pytest.mark.parametrize("size_bytes", [10, 3 * MIB])
@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_write_errors_are_mapped_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size_bytes: int, error: int
) -> None:
    store = LocalBlobStore(tmp_path)
    calls = 0
    real_write_all = _local._write_all

    def failing_write_all(fd: int, bufs: list[bytes]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # for a big blob: after some data is already on disk
            raise OSError(error, os.strerror(error))
        real_write_all(fd, bufs)

    if size_bytes < MIB:
        calls = 1  # a small blob is written in one go: fail the only write
    monkeypatch.setattr(_local, "_write_all", failing_write_all)
    blob_id = new_blob_id()
    expected = InternalError if error == errno.EIO else InsufficientStorage
    with pytest.raises(expected) as info:
        asyncio.run(store.put(blob_id, stream(payload(size_bytes), [100_000])))
    assert type(info.value) is expected
    assert info.value.resource == blob_id
    assert isinstance(info.value.__cause__, OSError)
    assert os.listdir(tmp_path / "tmp") == []
    assert asyncio.run(store.stat(blob_id)) is None


def test_fsync_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "fsync failed")

    monkeypatch.setattr(_local, "_fsync", failing_fsync)
    blob_id = new_blob_id()
    with pytest.raises(InternalError):
        asyncio.run(store.put(blob_id, stream(payload(1000))))
    assert os.listdir(tmp_path / "tmp") == []
    assert asyncio.run(store.stat(blob_id)) is None


def test_directory_fsync_failure_takes_the_blob_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    _put(store, b"warm up")  # creates no shard dir for the next id, but opens the store
    blob_id = new_blob_id()
    real_fsync_dir = _local._fsync_dir

    def failing_fsync_dir(path: str) -> None:
        if path.endswith(os.path.join(blob_id[-4:-2], blob_id[-2:])):
            raise OSError(errno.EIO, "fsync failed")
        real_fsync_dir(path)

    monkeypatch.setattr(_local, "_fsync_dir", failing_fsync_dir)
    with pytest.raises(InternalError):
        asyncio.run(store.put(blob_id, stream(payload(1000))))
    assert not store.blob_path(blob_id).exists()
    assert os.listdir(tmp_path / "tmp") == []


def test_a_store_that_is_not_durable_never_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``durable=False`` (a cache's files, blob/_cached.py): puts skip the file and directory
    fsyncs; everything else is the same store. The default fsyncs both."""
    synced: list[object] = []
    monkeypatch.setattr(_local, "_fsync", synced.append)
    monkeypatch.setattr(_local, "_fsync_dir", synced.append)
    cache = LocalBlobStore(tmp_path / "cache", durable=False)
    synced.clear()  # creating the store's own directories is not a put
    data = payload(3 * B + 17)
    blob_id = _put(cache, data)
    assert synced == [] and asyncio.run(cache.read(blob_id)) == data
    _put(LocalBlobStore(tmp_path / "store"), data)
    assert synced


def test_input_errors_are_not_translated(tmp_path: Path) -> None:
    """An OSError from the caller's stream (a dropped connection) is not a storage error."""
    store = LocalBlobStore(tmp_path)

    async def dropped() -> object:
        yield b"x" * 1000
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        asyncio.run(store.put(new_blob_id(), dropped()))  # type: ignore[arg-type]
    assert os.listdir(tmp_path / "tmp") == []


def test_writes_are_batched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small chunks cost a few thread hops and writev calls, not one per chunk."""
    store = LocalBlobStore(tmp_path)
    calls = 0
    real_write_all = _local._write_all

    def counting_write_all(fd: int, bufs: list[bytes]) -> None:
        nonlocal calls
        calls += 1
        real_write_all(fd, bufs)

    monkeypatch.setattr(_local, "_write_all", counting_write_all)
    data = payload(5 * MIB)
    blob_id = _put_chunks(store, data, 4096)
    assert calls <= 5 + 1  # ~1 MiB per batch; the last one carries table and footer
    assert asyncio.run(store.read(blob_id)) == data
    calls = 0
    _put_chunks(store, payload(100 * 1024), 100)
    assert calls == 1  # a small blob: data, table and footer in one writev, in a single hop


def _put_chunks(store: LocalBlobStore, data: bytes, chunk_bytes: int) -> str:
    blob_id = new_blob_id()
    asyncio.run(store.put(blob_id, stream(data, [chunk_bytes])))
    return blob_id


def test_existing_file_is_not_replaced_even_if_it_appears_mid_put(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob_id = new_blob_id()
    path = store.blob_path(blob_id)

    async def racing() -> object:
        yield b"new"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"someone else")

    with pytest.raises(ValueError):
        asyncio.run(store.put(blob_id, racing()))  # type: ignore[arg-type]
    assert path.read_bytes() == b"someone else"
    assert os.listdir(tmp_path / "tmp") == []


def test_read_of_deleted_blob_mid_stream_keeps_going(tmp_path: Path) -> None:
    """An open get() holds the file: GC deleting it does not tear the response."""
    store = LocalBlobStore(tmp_path)
    data = payload(4 * MIB)
    blob_id = _put(store, data)

    async def body() -> bytes:
        got = bytearray()
        async for chunk in await store.get(blob_id):
            got += chunk
            await store.delete(blob_id)
        return bytes(got)

    assert asyncio.run(body()) == data


def test_inline_reads_match(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, inline_read_bytes=256 * 1024)
    data = payload(3 * B + 17)
    blob_id = _put(store, data)
    assert asyncio.run(store.read(blob_id, 5, 4096)) == data[5:4101]
    assert asyncio.run(store.read(blob_id)) == data
    assert asyncio.run(collect(store, blob_id, 5, 4096)) == data[5:4101]
    assert asyncio.run(collect(store, blob_id, B - 1, 2)) == data[B - 1 : B + 1]
    _flip(store.blob_path(blob_id), B)
    with pytest.raises(CorruptBlob):
        asyncio.run(collect(store, blob_id, B - 1, 2))


class TestLocalBlobStoreInlineReads(TestLocalBlobStore):
    """The whole suite again with small reads done on the event loop thread."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "store", inline_read_bytes=256 * 1024, write_batch_bytes=100_000)


def test_cancelled_put_leaves_nothing_even_after_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the worker is publishing: the worker finishes, then the blob is taken back."""
    store = LocalBlobStore(tmp_path)
    blob_id = new_blob_id()
    entered, release = threading.Event(), threading.Event()
    real_fsync_dir = _local._fsync_dir

    def slow_fsync_dir(path: str) -> None:
        real_fsync_dir(path)
        if path.endswith(blob_id[-2:]):
            entered.set()
            release.wait(10)

    monkeypatch.setattr(_local, "_fsync_dir", slow_fsync_dir)

    async def body() -> None:
        task = asyncio.create_task(store.put(blob_id, stream(payload(3 * B))))
        await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    asyncio.run(body())
    for _ in range(100):  # the worker thread finishes on its own time
        if not store.blob_path(blob_id).exists():
            break
        time.sleep(0.01)
    assert not store.blob_path(blob_id).exists()
    assert os.listdir(tmp_path / "tmp") == []


class TestLocalBlobStoreThreadReads(TestLocalBlobStore):
    """The whole suite again with every read in a worker thread (no page-cache-only reads)."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "store", cached_reads=False)


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages (fsynced) really go
    finally:
        os.close(fd)


def test_cached_reads_skip_the_thread_only_for_cached_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    if not store._cached_reads:
        pytest.fail("RWF_NOWAIT reads are not available on this filesystem; the test needs an ext4/xfs tmp_path")
    data = payload(5 * MIB + 3)
    blob_id = _put(store, data)
    path = store.blob_path(blob_id)
    hops: list[int] = []
    real_submit = store._executor.submit

    def counting_submit(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(1)
        return real_submit(fn, *args, **kwargs)

    monkeypatch.setattr(store._executor, "submit", counting_submit)
    _drop_cache(path)
    assert asyncio.run(collect(store, blob_id)) == data  # cold: from worker threads
    cold_hops = len(hops)
    assert cold_hops >= 5
    # The cold read's readahead may still be in flight (its pages locked: RWF_NOWAIT answers
    # EAGAIN for them); a plain read of the file waits for it, so every page is resident now.
    assert path.read_bytes()[:16] == data[:16]
    hops.clear()
    assert asyncio.run(collect(store, blob_id)) == data  # now cached: all on the loop
    assert asyncio.run(collect(store, blob_id, 3 * MIB + 5, 70_000)) == data[3 * MIB + 5 : 3 * MIB + 70_005]
    assert asyncio.run(store.read(blob_id, B - 1, 2)) == data[B - 1 : B + 1]
    assert hops == []
    _drop_cache(path)
    assert asyncio.run(store.read(blob_id, B - 1, 2)) == data[B - 1 : B + 1]
    assert hops == [1]


@pytest.mark.parametrize("verify", [True, False])
def test_cached_pieces_are_their_own_bytes(tmp_path: Path, verify: bool) -> None:
    """Cached reads go through one scratch buffer per reader (no zeroed buffer per piece): every
    piece handed out is its own immutable ``bytes``, unchanged by the pieces read after it."""
    store = LocalBlobStore(tmp_path)
    data = payload(3 * MIB + 5)
    blob_id = _put(store, data)
    assert asyncio.run(collect(store, blob_id)) == data  # now in the page cache

    async def pieces(offset: int, length: int) -> list[bytes]:
        return [piece async for piece in await store.get(blob_id, offset, length, verify=verify)]

    for offset, length in [(B + 7, 3 * MIB - B - 9), (0, 3 * MIB + 5), (MIB - 3, 2 * MIB)]:
        got = asyncio.run(pieces(offset, length))
        assert len(got) >= 2 and all(type(p) is bytes for p in got)
        assert b"".join(got) == data[offset : offset + length]


def test_cached_reads_verify_every_block(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = payload(3 * B + 17)
    blob_id = _put(store, data)
    assert asyncio.run(collect(store, blob_id)) == data  # now in the page cache
    _flip(store.blob_path(blob_id), 2 * B + 1)
    with pytest.raises(CorruptBlob):
        asyncio.run(collect(store, blob_id))
    with pytest.raises(CorruptBlob):
        asyncio.run(store.read(blob_id, 2 * B, 10))
    assert asyncio.run(store.read(blob_id, 0, B)) == data[:B]


def test_big_blobs_start_writeback_while_written(tmp_path: Path) -> None:
    """A blob written in many batches starts writeback of what it wrote (sync_file_range, Linux)
    as it goes; the bytes read back exact and the fsync at the end still makes it durable."""
    assert _local._start_writeback is not None, "sync_file_range is in every Linux libc"
    started: list[tuple[int, int]] = []
    real = _local._start_writeback
    _local._start_writeback = lambda fd, offset, n: started.append((offset, n)) or real(fd, offset, n)
    try:
        store = LocalBlobStore(tmp_path)
        data = payload(20 * 1024 * 1024 + 5)
        blob_id = _put(store, data)
    finally:
        _local._start_writeback = real
    assert started and started[0][0] == 0, started
    assert all(n >= _local._WRITEBACK_BYTES for _, n in started)
    assert [o for o, _ in started] == sorted(o for o, _ in started)  # contiguous, in order
    assert sum(n for _, n in started) <= len(data)
    assert asyncio.run(collect(store, blob_id)) == data


@pytest.mark.parametrize("size", [0, 1, B - 1, B, B + 1, 3 * B + 777])
def test_blob_crc32c_is_folded_from_the_block_table(tmp_path: Path, size: int) -> None:
    """The mover's CRC32C without reading the bytes: the per-block CRC32Cs, combined, are the
    whole blob's; a damaged table is refused."""
    store = LocalBlobStore(tmp_path / "store")
    data = payload(size)
    blob_id = _put(store, data)
    assert asyncio.run(store.blob_crc32c(blob_id)) == _local.crc32c(data)
    if size:
        _flip(store.blob_path(blob_id), size)  # the first byte of the CRC table
        with pytest.raises(CorruptBlob, match="table"):
            asyncio.run(store.blob_crc32c(blob_id))
