"""LocalBlobStore: one directory of plain files, one file per blob.

Layout under ``root``::

    blobs/<id[-4:-2]>/<id[-2:]>/<id> committed blobs (never overwritten, only deleted); sharded
                                     on the id's random tail (its head is a timestamp)
    tmp/<id>.<random>.tmp            blobs being written; each is flock()ed by its writer

File format, version 1 (all integers little-endian). Self-describing, so a scrubber needs
nothing but the file::

    [0, S)               data: byte 0 of the blob at file offset 0 (ranges can be sendfile()d)
    [S, S + 4*N)         table: CRC32C of each data block as u32; blocks are 64 KiB, the last
                         may be short, N = ceil(S / 65536) (a 0-byte blob has no blocks)
    [S + 4*N, +32)       footer, 32 bytes:
                           0  4s  magic b"TSB1"
                           4  u16 format version (1)
                           6  u16 reserved (0)
                           8  u32 block size in bytes (65536)
                           12 u32 reserved (0)
                           16 u64 data size S in bytes
                           24 u32 CRC32C of the table
                           28 u32 CRC32C of footer bytes [0, 28)

The file length ``S + 4*ceil(S/65536) + 32`` is strictly increasing in S, so S follows from
the length alone: ``scan`` uses that (no open per file) and so does the range check in
``get``/``read``. Reads then check the footer (magic, version, block size, S, its CRC), read
only the table entries and blocks that overlap the range, and verify each block before
returning any of its bytes. ``stat`` checks the footer; ``verify`` also the table CRC and
every block.

Write: stream into a temp file (block CRCs computed as the data passes), append table and
footer, fsync, ``link`` into place (fails if the id exists: no overwrite, ever), fsync the
shard directory, unlink the temp. Blocking I/O runs in worker threads in batches (about
1 MiB per hop, the next batch is collected while the previous one is written); a blob that
fits in one batch costs a single hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import struct
import sys
from array import array
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, Future
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from awscrt.checksums import combine_crc32c

from tierstore._buffers import filled_bytes
from tierstore._threads import LazyPool
from tierstore.blob._protocol import (
    BLOCK_SIZE_BYTES,
    BlobInfo,
    HealReport,
    check_range,
    crc32c,
    validate_blob_id,
)
from tierstore.errors import CorruptBlob, InsufficientStorage, InternalError, InvalidRange, TierstoreError

__all__ = [
    "FOOTER",
    "FORMAT_VERSION",
    "MAGIC",
    "LocalBlobStore",
    "blob_file_size",
    "data_size_from_file_size",
]

MAGIC = b"TSB1"
FORMAT_VERSION = 1
FOOTER = struct.Struct("<4sHHIIQII")
"""magic, version, reserved, block size, reserved, data size, table CRC32C, footer CRC32C."""
_FOOTER_CRC_OFFSET = FOOTER.size - 4
_B = BLOCK_SIZE_BYTES
_CRC_BYTES = 4

_WRITE_BATCH_BYTES = 1024 * 1024  # hand this much to a worker thread at a time
_WRITEBACK_BYTES = 8 * 1024 * 1024  # start writing back every this many bytes of a blob being written
_COALESCE_BYTES = 64 * 1024  # smaller chunks are copied together (bounds the iovec count)
_READ_PIECE_BYTES = 1024 * 1024  # get() yields pieces of up to this many bytes
_INLINE_READ_BYTES = 0  # read() ranges up to this size skip the thread hop; see __init__
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
_TMP_SUFFIX = ".tmp"

_T = TypeVar("_T")
_Buf = bytes | bytearray | memoryview

assert array("I").itemsize == _CRC_BYTES


def blob_file_size(size_bytes: int) -> int:
    """Length of the file that stores a blob of ``size_bytes`` data bytes."""
    return size_bytes + _CRC_BYTES * (-(-size_bytes // _B)) + FOOTER.size


def data_size_from_file_size(file_size: int) -> int | None:
    """Inverse of ``blob_file_size``; None if no data size gives this file length."""
    rest = file_size - FOOTER.size
    if rest < 0:
        return None
    blocks = -(-rest // (_B + _CRC_BYTES))
    size = rest - _CRC_BYTES * blocks
    return size if size >= 0 and blob_file_size(size) == file_size else None


def _floor_data_size(file_size: int) -> int:
    """Largest data size whose file fits in ``file_size`` bytes (for damaged files in scan)."""
    rest = max(0, file_size - FOOTER.size)
    full, tail = divmod(rest, _B + _CRC_BYTES)
    return full * _B + max(0, tail - _CRC_BYTES)


def _pack_footer(size_bytes: int, table_crc: int) -> bytes:
    head = FOOTER.pack(MAGIC, FORMAT_VERSION, 0, _B, 0, size_bytes, table_crc, 0)[:_FOOTER_CRC_OFFSET]
    return head + crc32c(head).to_bytes(4, "little")


# --- low-level I/O (module functions so tests can inject faults) ----------------------------
def _writeback_starter() -> Callable[[int, int, int], object] | None:
    """``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)`` (Linux; not in ``os``): start
    writing those pages back without waiting, so the fsync that makes a big blob durable finds
    most of it on disk already instead of writing it all then (ctypes drops the GIL)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return lambda fd, offset, n: fn(fd, offset, n, 2)  # SYNC_FILE_RANGE_WRITE; errors surface at fsync


_start_writeback = _writeback_starter()


def _write_all(fd: int, bufs: Sequence[_Buf]) -> None:
    """writev() every buffer, resuming after short writes, at most IOV_MAX buffers per call."""
    views = [memoryview(b) for b in bufs if len(b)]
    i = 0
    while i < len(views):
        written = os.writev(fd, views[i : i + _IOV_MAX])
        while written:
            n = len(views[i])
            if written >= n:
                written -= n
                i += 1
            else:
                views[i] = views[i][written:]
                written = 0


def _fsync(fd: int) -> None:
    os.fsync(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pread_exact(fd: int, n: int, offset: int, blob_id: str) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:  # only a truncated (damaged) file reads short
        raise CorruptBlob(f"blob {blob_id} is truncated", resource=blob_id)
    return data


_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


def _nowait_reads_work(directory: str) -> bool:
    """Whether ``preadv(RWF_NOWAIT)`` works on the filesystem of ``directory`` (some answer
    EOPNOTSUPP); probed once per store on an unlinked temp file of its own."""
    try:
        fd = os.open(directory, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        os.write(fd, b"\0")
        os.preadv(fd, [bytearray(1)], 0, _RWF_NOWAIT or 0)
        return True
    except BlockingIOError:
        return True  # supported; the byte just is not cached
    except OSError:
        return False
    finally:
        os.close(fd)


class _NotCached(Exception):
    """A page-cache-only read found bytes that are not in memory (the caller reads in a thread)."""


def _pread_cached(fd: int, n: int, offset: int) -> bytearray:
    """``n`` bytes at ``offset`` only if the page cache holds them all (``preadv(RWF_NOWAIT)``,
    Linux >= 4.14): a read that would touch the disk raises ``_NotCached`` instead of blocking
    the event loop. A short read (a truncated file, or a partly cached range) also raises
    ``_NotCached``: the blocking path then tells the two apart."""
    buf = bytearray(n)
    with memoryview(buf) as view:
        _pread_cached_into(fd, view, offset)
    return buf


def _pread_cached_into(fd: int, buf: memoryview, offset: int) -> None:
    """``_pread_cached`` into ``buf`` (all of it): a new ``bytes`` being filled (``filled_bytes``)
    or a reader's scratch buffer, so that a stream of reads neither zeroes a fresh buffer for
    each (``bytearray(n)`` writes every byte once more, as much as the read itself) nor copies
    out of one."""
    assert _RWF_NOWAIT is not None
    try:
        got = os.preadv(fd, [buf], offset, _RWF_NOWAIT)
    except BlockingIOError:
        raise _NotCached from None
    if got != len(buf):
        raise _NotCached


def _write_error(exc: OSError, blob_id: str) -> TierstoreError:
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(f"cannot store blob {blob_id}: {reason}", resource=blob_id)
    return InternalError(f"cannot store blob {blob_id}: {reason}", resource=blob_id)


def _read_error(exc: OSError, blob_id: str) -> TierstoreError:
    if exc.errno == errno.ENOENT:
        return CorruptBlob(f"blob {blob_id} is missing", resource=blob_id)
    if exc.errno == errno.EIO:  # a media error: to the caller this is damage, like bitrot
        return CorruptBlob(f"blob {blob_id} is unreadable (I/O error)", resource=blob_id)
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return InternalError(f"cannot read blob {blob_id}: {reason}", resource=blob_id)


# --- a shared thread pool ----------------------------------------------------------------------
_pool = LazyPool("tierstore-blob", min(32, (os.cpu_count() or 1) + 4))


def _shared_executor() -> Executor:
    return _pool.get()


def _after(future: Future[Any] | None, fn: Callable[[], None]) -> None:
    """Run ``fn`` once ``future`` (work on the same fd) is finished: now, or in its thread later.

    A cancelled await does not stop a running thread; closing its fd under it could let the
    number be reused by another open() and the late write land in the wrong file.
    """
    if future is None or future.done():
        fn()
    else:
        future.add_done_callback(lambda _f: fn())


# --- writing --------------------------------------------------------------------------------------
class _BlobWriter:
    """One blob being written. Its methods run in worker threads, strictly one after another."""

    def __init__(self, store: LocalBlobStore, blob_id: str, final_path: str) -> None:
        self._store = store
        self._blob_id = blob_id
        self._final_path = final_path
        self._published = False
        self._fd = -1
        self._tmp_path = ""
        self._size_bytes = 0
        self._crcs = array("I")
        self._block_crc = 0
        self._block_fill = 0
        self._written_back = 0  # bytes whose writeback was started (sync_file_range)

    def write(self, bufs: Sequence[_Buf]) -> None:
        self._open()
        for buf in bufs:
            self._checksum(buf)
        _write_all(self._fd, bufs)
        if _start_writeback is not None and self._size_bytes - self._written_back >= _WRITEBACK_BYTES:
            _start_writeback(self._fd, self._written_back, self._size_bytes - self._written_back)
            self._written_back = self._size_bytes

    def finish(self, bufs: Sequence[_Buf]) -> int:
        """Write the last data, table and footer (one writev); make the blob durable and visible."""
        self._open()
        for buf in bufs:
            self._checksum(buf)
        if self._block_fill:
            self._crcs.append(self._block_crc)
        assert len(self._crcs) == -(-self._size_bytes // _B)
        if sys.byteorder != "little":
            self._crcs.byteswap()
        table = self._crcs.tobytes()
        _write_all(self._fd, [*bufs, table, _pack_footer(self._size_bytes, crc32c(table))])
        if self._store.durable:
            _fsync(self._fd)
        self._store._publish(self._blob_id, self._tmp_path, self._final_path)
        self._published = True  # from here on, abort() takes the blob back
        _unlink_missing_ok(self._tmp_path)  # its data now lives under final_path too
        self._tmp_path = ""
        if self._store.durable:
            _fsync_dir(os.path.dirname(self._final_path))
        self._close()  # releases the flock
        return self._size_bytes

    def _open(self) -> None:
        if self._fd < 0:
            if os.path.lexists(self._final_path):  # early and cheap; link() in _publish is the guard
                raise ValueError(f"blob {self._blob_id} already exists")
            self._fd, self._tmp_path = self._store._create_temp(self._blob_id)

    def abort(self) -> None:
        """Undo everything: the put failed or was cancelled (maybe after finish). Never raises."""
        self._close()
        if self._tmp_path:
            path, self._tmp_path = self._tmp_path, ""
            with contextlib.suppress(OSError):  # else it is removed when the store is next opened
                os.unlink(path)
        if self._published:
            self._published = False
            with contextlib.suppress(OSError):  # else GC finds it unreferenced
                os.unlink(self._final_path)

    def _close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)

    def _checksum(self, buf: _Buf) -> None:
        view = memoryview(buf).cast("B")
        pos, n = 0, len(view)
        self._size_bytes += n
        while pos < n:
            take = min(_B - self._block_fill, n - pos)
            self._block_crc = crc32c(view[pos : pos + take], self._block_crc)
            self._block_fill += take
            pos += take
            if self._block_fill == _B:
                self._crcs.append(self._block_crc)
                self._block_crc = 0
                self._block_fill = 0


# --- reading -------------------------------------------------------------------------------------
class _BlobReader:
    """Reads verified ranges of one blob file; methods run in a thread or inline, one at a time.

    ``verify=False``: ``read``/``read_cached`` skip the CRC table and the block checks (the
    length and the footer are still checked); for callers that authenticate the bytes
    themselves (``BlobStore.get``). ``verify`` (the scrub) always checks everything."""

    def __init__(self, path: str, blob_id: str, size_bytes: int, *, verify: bool = True) -> None:
        self._path = path
        self._blob_id = blob_id
        self._size_bytes = size_bytes
        self._check = verify
        self._fd = -1
        self._table_crc = 0
        self._footer_ok = False
        self._scratch = bytearray()  # read_cached reads into it, then copies out what it returns

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (non-empty) after verifying every block that overlaps them."""
        assert 0 <= start < end <= self._size_bytes
        try:
            if not self._footer_ok:
                self.open()
            if not self._check:
                return _pread_exact(self._fd, end - start, start, self._blob_id)
            first, stop = start // _B, -(-end // _B)
            table = _pread_exact(
                self._fd, _CRC_BYTES * (stop - first), self._size_bytes + _CRC_BYTES * first, self._blob_id
            )
            base = first * _B
            data = _pread_exact(self._fd, min(stop * _B, self._size_bytes) - base, base, self._blob_id)
        except OSError as exc:
            raise _read_error(exc, self._blob_id) from exc
        self._check_blocks(data, table, first)
        if start == base and end - base == len(data):
            return data
        with memoryview(data) as view:
            return bytes(view[start - base : end - base])

    def verify(self) -> None:
        """Check footer, table CRC and every block; raise CorruptBlob on any damage."""
        try:
            if not self._footer_ok:
                self.open()
            blocks = -(-self._size_bytes // _B)
            table = _pread_exact(self._fd, _CRC_BYTES * blocks, self._size_bytes, self._blob_id)
            if crc32c(table) != self._table_crc:
                raise CorruptBlob(f"blob {self._blob_id} checksum table is damaged", resource=self._blob_id)
            per_piece = _READ_PIECE_BYTES // _B
            for first in range(0, blocks, per_piece):
                stop = min(blocks, first + per_piece)
                data = _pread_exact(
                    self._fd, min(stop * _B, self._size_bytes) - first * _B, first * _B, self._blob_id
                )
                self._check_blocks(data, table[_CRC_BYTES * first : _CRC_BYTES * stop], first)
        except OSError as exc:
            raise _read_error(exc, self._blob_id) from exc

    def blob_crc32c(self) -> int:
        """The CRC32C of the whole blob, folded from its per-block CRC32Cs (``combine_crc32c``)
        without reading the blocks; the table is checked against its own CRC32C first."""
        try:
            if not self._footer_ok:
                self.open()
            blocks = -(-self._size_bytes // _B)
            table = _pread_exact(self._fd, _CRC_BYTES * blocks, self._size_bytes, self._blob_id)
        except OSError as exc:
            raise _read_error(exc, self._blob_id) from exc
        if crc32c(table) != self._table_crc:
            raise CorruptBlob(f"blob {self._blob_id} checksum table is damaged", resource=self._blob_id)
        crc = 0
        for i, (block_crc,) in enumerate(struct.iter_unpack("<I", table)):
            crc = combine_crc32c(crc, block_crc, min(_B, self._size_bytes - i * _B))
        return int(crc)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def open(self, *, cached: bool = False) -> None:
        """Open the file and check its length and footer (``cached``: from the page cache only)."""
        if self._fd < 0:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        file_size = os.fstat(self._fd).st_size
        if file_size != blob_file_size(self._size_bytes):
            raise CorruptBlob(f"blob {self._blob_id} has the wrong length", resource=self._blob_id)
        at = file_size - FOOTER.size
        if cached:
            footer: bytes | bytearray = _pread_cached(self._fd, FOOTER.size, at)
        else:
            footer = _pread_exact(self._fd, FOOTER.size, at, self._blob_id)
        magic, version, _, block_size, _, size_bytes, self._table_crc, footer_crc = FOOTER.unpack(footer)
        if (
            footer_crc != crc32c(footer[:_FOOTER_CRC_OFFSET])
            or magic != MAGIC
            or version != FORMAT_VERSION
            or block_size != _B
            or size_bytes != self._size_bytes
        ):
            raise CorruptBlob(f"blob {self._blob_id} footer is damaged", resource=self._blob_id)
        self._footer_ok = True

    def read_cached(self, start: int, end: int) -> bytes | None:
        """``read(start, end)`` on the calling thread if every byte it needs (footer, CRC table
        entries, blocks) is in the page cache, else None, having blocked on nothing: then the
        caller reads in a worker thread. Verification is the same as ``read``'s."""
        assert 0 <= start < end <= self._size_bytes
        try:
            if not self._footer_ok:
                self.open(cached=True)
            fd = self._fd
            if not self._check:
                return filled_bytes(end - start, partial(_pread_cached_into, fd, offset=start))
            first, stop = start // _B, -(-end // _B)
            table = _pread_cached(fd, _CRC_BYTES * (stop - first), self._size_bytes + _CRC_BYTES * first)
            base = first * _B
            if start == base and end == min(stop * _B, self._size_bytes):  # whole blocks: no copy out
                data = filled_bytes(end - start, partial(_pread_cached_into, fd, offset=start))
                self._check_blocks(data, table, first)
                return data
            # A range that starts or ends inside a block: the whole blocks go into the reader's
            # scratch buffer to be checked, and the range is copied out once.
            with self._scratch_view(min(stop * _B, self._size_bytes) - base) as view:
                _pread_cached_into(self._fd, view, base)
                self._check_blocks(view, table, first)
                return bytes(view[start - base : end - base])
        except _NotCached:
            return None
        except OSError as exc:
            raise _read_error(exc, self._blob_id) from exc

    def _scratch_view(self, n: int) -> memoryview:
        """The first ``n`` bytes of the reader's scratch buffer (grown as needed; release the
        view before the next call)."""
        if len(self._scratch) < n:
            self._scratch = bytearray(n)
        return memoryview(self._scratch)[:n]

    def _check_blocks(
        self, data: bytes | bytearray | memoryview, table: bytes | bytearray | memoryview, first_block: int
    ) -> None:
        with memoryview(data) as view:
            for i, (expected,) in enumerate(struct.iter_unpack("<I", table)):
                if crc32c(view[i * _B : (i + 1) * _B]) != expected:
                    block = first_block + i
                    raise CorruptBlob(
                        f"blob {self._blob_id} block {block} fails its checksum", resource=self._blob_id
                    )


# --- the store -------------------------------------------------------------------------------------
class LocalBlobStore:
    """BlobStore over one local directory (a drive, or the NVMe hot tier).

    Constructing it creates the directories and removes temp files left by crashed writers
    (blocking; do it at startup). Several stores, also in several processes, may share one
    root: a temp file is removed only if no live writer holds its flock.

    ``executor`` runs the blocking I/O (default: a thread pool shared by all local stores).
    ``write_batch_bytes``: data handed to a worker per hop. ``inline_read_bytes``: ``get`` and
    ``read`` ranges up to this size are read on the event loop thread, skipping the ~50 us
    thread hop (a 64 KiB range: ~17 us inline vs ~75 us). Worth it only where a miss costs
    little (NVMe, page cache); on spinning disks a miss would stall the loop, hence default 0.
    ``cached_reads`` (default on, where the kernel and filesystem support ``RWF_NOWAIT``):
    reads first try the page cache on the loop thread and go to a worker only for bytes that
    would touch the disk; hot data then costs no thread hop at any size.
    ``durable=False`` skips the fsyncs of a put (files and directories): for a cache
    (``CachedBlobStore``), whose blobs have a durable home elsewhere and whose every read checks
    the footer and block CRCs, so a file torn by a power loss is found damaged and fetched again.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        executor: Executor | None = None,
        write_batch_bytes: int = _WRITE_BATCH_BYTES,
        inline_read_bytes: int = _INLINE_READ_BYTES,
        cached_reads: bool = True,
        durable: bool = True,
    ) -> None:
        self.root = Path(root)
        self.durable = durable
        self._blobs_dir = str(self.root / "blobs")
        self._tmp_dir = str(self.root / "tmp")
        self._executor = executor if executor is not None else _shared_executor()
        self._write_batch_bytes = max(1, write_batch_bytes)
        self._inline_read_bytes = inline_read_bytes
        self._durable_dirs: set[str] = set()  # shard dirs whose entries are known to be fsynced
        self._open()
        self._cached_reads = cached_reads and _RWF_NOWAIT is not None and _nowait_reads_work(self._tmp_dir)

    def blob_path(self, blob_id: str) -> Path:
        """Where the blob's file lives (for sendfile, tests and repair tools)."""
        return Path(self._path(blob_id))

    # --- BlobStore ------------------------------------------------------------------------------
    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        writer = _BlobWriter(self, blob_id, self._path(blob_id))
        pending: Future[None] | None = None  # the batch being written while the next is collected
        last: Future[Any] | None = None  # the most recent work on the writer's fd
        batch: list[_Buf] = []
        batch_bytes = 0
        small = bytearray()
        try:
            async for chunk in chunks:
                n = len(chunk)
                if n < _COALESCE_BYTES:
                    small += chunk
                else:
                    if small:
                        batch.append(small)
                        small = bytearray()
                    batch.append(chunk)
                batch_bytes += n
                if batch_bytes >= self._write_batch_bytes:
                    if small:
                        batch.append(small)
                        small = bytearray()
                    if pending is not None:
                        await self._await_write(pending, blob_id)
                    pending = self._executor.submit(writer.write, batch)
                    last = pending
                    batch, batch_bytes = [], 0
            if small:
                batch.append(small)
            if pending is not None:
                await self._await_write(pending, blob_id)
            done = self._executor.submit(writer.finish, batch)
            last = done
            size_bytes = await self._await_write(done, blob_id)
        except asyncio.CancelledError:
            _after(last, writer.abort)  # do not delay the cancellation: undo once the worker is done
            raise
        except BaseException:
            await self._abort_put(writer, last)  # so nothing is left when put() raises
            raise
        return BlobInfo(blob_id, size_bytes)

    async def get(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> AsyncIterator[bytes]:
        path = self._path(blob_id)
        size_bytes, end = self._check_range(path, blob_id, offset, length)
        return self._iter(_BlobReader(path, blob_id, size_bytes, verify=verify), offset, end)

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True) -> bytes:
        path = self._path(blob_id)
        size_bytes, end = self._check_range(path, blob_id, offset, length)
        if offset == end:
            return b""
        reader = _BlobReader(path, blob_id, size_bytes, verify=verify)

        def read_and_close() -> bytes:
            try:
                return reader.read(offset, end)
            finally:
                reader.close()

        if end - offset <= self._inline_read_bytes:
            return read_and_close()
        if self._cached_reads:
            try:
                data = reader.read_cached(offset, end)
            except BaseException:
                reader.close()
                raise
            if data is not None:
                reader.close()
                return data
        return await asyncio.wrap_future(self._executor.submit(read_and_close))

    async def delete(self, blob_id: str) -> None:
        path = self._path(blob_id)
        try:
            await asyncio.wrap_future(self._executor.submit(_unlink_missing_ok, path))
        except OSError as exc:
            raise InternalError(f"cannot delete blob {blob_id}", resource=blob_id) from exc

    async def stat(self, blob_id: str) -> BlobInfo | None:
        """Size from the checked footer; None if missing; CorruptBlob if the footer is damaged."""
        path = self._path(blob_id)

        def stat_in_thread() -> BlobInfo | None:
            try:
                size_bytes = self._committed_size(path, blob_id)
            except CorruptBlob as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    return None
                raise
            reader = _BlobReader(path, blob_id, size_bytes)
            try:
                reader.open()
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    return None  # deleted just now
                raise _read_error(exc, blob_id) from exc
            finally:
                reader.close()
            return BlobInfo(blob_id, size_bytes)

        return await asyncio.wrap_future(self._executor.submit(stat_in_thread))

    async def scan(self) -> AsyncIterator[BlobInfo]:
        """Every committed blob. ``size_bytes`` comes from the file length; for a file whose
        length is damaged it is a best guess (``verify`` tells)."""
        try:
            top = await asyncio.wrap_future(self._executor.submit(_list_dirs, self._blobs_dir))
        except OSError as exc:
            raise InternalError("cannot list blobs") from exc
        for level1 in top:
            try:
                infos = await asyncio.wrap_future(self._executor.submit(self._scan_level1, level1))
            except OSError as exc:
                raise InternalError("cannot list blobs") from exc
            for info in infos:
                yield info

    async def blob_crc32c(self, blob_id: str) -> int | None:
        """The blob's CRC32C from its stored per-block CRC32Cs, without reading its bytes (the
        mover's metadata, docs/tiers.md "The mover"); those bytes are verified when read."""
        path = self._path(blob_id)
        size_bytes = self._committed_size(path, blob_id)
        reader = _BlobReader(path, blob_id, size_bytes)

        def fold_and_close() -> int:
            try:
                return reader.blob_crc32c()
            finally:
                reader.close()

        return await asyncio.wrap_future(self._executor.submit(fold_and_close))

    async def verify(self, blob_id: str) -> bool:
        path = self._path(blob_id)
        try:
            size_bytes = self._committed_size(path, blob_id)
        except CorruptBlob:
            return False
        reader = _BlobReader(path, blob_id, size_bytes)

        def verify_and_close() -> None:
            try:
                reader.verify()
            finally:
                reader.close()

        try:
            await asyncio.wrap_future(self._executor.submit(verify_and_close))
        except CorruptBlob:
            return False
        return True

    async def heal(self, blob_id: str) -> HealReport:
        """Verify-only (``Healer``): one directory holds no redundancy to rebuild from, so a
        damaged or missing blob is reported ``lost`` and nothing is written."""
        ok = await self.verify(blob_id)
        size_bytes = 0
        with contextlib.suppress(CorruptBlob):
            info = await self.stat(blob_id)
            size_bytes = info.size_bytes if info is not None else 0
        return HealReport(
            blob_id=blob_id,
            size_bytes=size_bytes,
            shards_total=1,
            shards_ok=1 if ok else 0,
            shards_rebuilt=0,
            shards_unavailable=0,
            bytes_written=0,
            lost=not ok,
        )

    # --- internals ----------------------------------------------------------------------------
    def _path(self, blob_id: str) -> str:
        validate_blob_id(blob_id)
        level1, level2 = _shard(blob_id)
        return f"{self._blobs_dir}/{level1}/{level2}/{blob_id}"  # os.path.join costs more, on every read

    def _open(self) -> None:
        """Create the directories; remove temp files whose writer is gone."""
        root = str(self.root)
        if not os.path.isdir(root):
            os.makedirs(root, exist_ok=True)
            _fsync_dir(os.path.dirname(os.path.abspath(root)))
        for path in (self._blobs_dir, self._tmp_dir):
            if _mkdir(path):
                _fsync_dir(root)
        with os.scandir(self._tmp_dir) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    _remove_if_unlocked(entry.path)

    def _create_temp(self, blob_id: str) -> tuple[int, str]:
        """Create and flock a fresh temp file (runs in a worker thread)."""
        while True:
            path = os.path.join(self._tmp_dir, f"{blob_id}.{secrets.token_hex(8)}{_TMP_SUFFIX}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # A store opening right now may have removed the file between open and flock.
                st = os.fstat(fd)
                if st.st_nlink > 0:
                    return fd, path
            except BaseException:
                os.close(fd)
                _unlink_missing_ok(path)
                raise
            os.close(fd)

    def _publish(self, blob_id: str, tmp_path: str, final_path: str) -> None:
        """Link the finished temp file to its final name (runs in a worker thread)."""
        shard = os.path.join(self._blobs_dir, *_shard(blob_id))
        if shard not in self._durable_dirs:
            level1 = os.path.dirname(shard)
            os.makedirs(shard, exist_ok=True)
            # fsync both parents even if another writer created the dirs: it may not have yet.
            if self.durable:
                _fsync_dir(self._blobs_dir)
                _fsync_dir(level1)
            self._durable_dirs.add(shard)
        assert os.path.dirname(final_path) == shard
        try:
            os.link(tmp_path, final_path)
        except FileExistsError:
            raise ValueError(f"blob {blob_id} already exists") from None

    async def _abort_put(self, writer: _BlobWriter, last: Future[Any] | None) -> None:
        """Wait for the writer's work in flight, then undo the put (in a worker)."""
        try:
            if last is not None and not last.done():
                with contextlib.suppress(Exception):  # its error is not the one to report
                    await asyncio.wrap_future(last)
        except BaseException:  # cancelled while waiting
            _after(last, writer.abort)
            raise
        await asyncio.wrap_future(self._executor.submit(writer.abort))  # runs even if we are cancelled

    async def _await_write(self, future: Future[_T], blob_id: str) -> _T:
        try:
            return await asyncio.wrap_future(future)
        except OSError as exc:
            raise _write_error(exc, blob_id) from exc

    async def _iter(self, reader: _BlobReader, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield verified pieces. A piece the page cache holds is read on the loop (no thread
        hop); after the first miss, pieces come from a worker, the next one read while the
        caller consumes this one."""
        future: Future[bytes] | None = None
        try:
            if 0 < end - start <= self._inline_read_bytes:
                yield reader.read(start, end)
                return
            while start < end:
                piece: bytes | None = None
                if future is None and self._cached_reads:
                    piece = reader.read_cached(start, self._piece_end(start, end))
                if piece is None:
                    if future is None:
                        future = self._executor.submit(reader.read, start, self._piece_end(start, end))
                    piece = await asyncio.wrap_future(future)
                    future = None
                    if start + len(piece) < end:
                        nxt = start + len(piece)
                        future = self._executor.submit(reader.read, nxt, self._piece_end(nxt, end))
                start += len(piece)
                yield piece
        finally:
            _after(future, reader.close)

    @staticmethod
    def _piece_end(start: int, end: int) -> int:
        return min(end, start - start % _B + _READ_PIECE_BYTES)

    def _check_range(self, path: str, blob_id: str, offset: int, length: int | None) -> tuple[int, int]:
        """(size, end of range) from the file length; CorruptBlob if missing or cut short."""
        size_bytes = self._committed_size(path, blob_id)
        try:
            return size_bytes, check_range(size_bytes, offset, length)
        except InvalidRange:
            # Rare path: a truncated file can have a plausible length. Is the range really
            # beyond the blob (the caller's error), or is the blob damaged?
            reader = _BlobReader(path, blob_id, size_bytes)
            try:
                reader.open()
            except OSError as exc:
                raise _read_error(exc, blob_id) from exc
            finally:
                reader.close()
            raise

    def _committed_size(self, path: str, blob_id: str) -> int:
        try:
            file_size = os.stat(path).st_size
        except OSError as exc:
            raise _read_error(exc, blob_id) from exc
        size_bytes = data_size_from_file_size(file_size)
        if size_bytes is None:
            raise CorruptBlob(f"blob {blob_id} has a damaged length", resource=blob_id)
        return size_bytes

    def _scan_level1(self, level1: str) -> list[BlobInfo]:
        infos: list[BlobInfo] = []
        for level2 in _list_dirs(os.path.join(self._blobs_dir, level1)):
            with os.scandir(os.path.join(self._blobs_dir, level1, level2)) as entries:
                for entry in entries:
                    name = entry.name
                    if _shard(name) != (level1, level2) or not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        validate_blob_id(name)
                        file_size = entry.stat(follow_symlinks=False).st_size
                    except (ValueError, FileNotFoundError):
                        continue  # a stray file, or deleted under us
                    size_bytes = data_size_from_file_size(file_size)
                    if size_bytes is None:
                        size_bytes = _floor_data_size(file_size)
                    infos.append(BlobInfo(name, size_bytes))
        return infos


def _shard(blob_id: str) -> tuple[str, str]:
    """The two directory levels a blob lives under (the only place that decides it).

    The tail of an id is random; its head is the creation time (runtime.new_blob_id), which
    would put every blob of ~18 hours into one directory."""
    return blob_id[-4:-2], blob_id[-2:]


def _mkdir(path: str) -> bool:
    """Create a directory; True if it was created now."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    return True


def _list_dirs(path: str) -> list[str]:
    with os.scandir(path) as entries:
        return [e.name for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]


def _unlink_missing_ok(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_if_unlocked(path: str) -> None:
    """Remove a temp file unless a live writer holds its flock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a writer is alive
        _unlink_missing_ok(path)
    finally:
        os.close(fd)
