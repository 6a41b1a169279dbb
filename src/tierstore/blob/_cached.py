"""CachedBlobStore: the object store as the durable home of every blob, local drives as its cache.

The standard tier of a scale-out gateway (docs/scale-out.md "The store as the standard tier")::

    CachedBlobStore(
        S3BlobStore(S3StoreConfig(endpoint, bucket, prefix, ...)),  # where blobs live
        LocalBlobStore(cache_dir, durable=False),  # a directory of its own; no fsync (below)
        cache_bytes=50 * 2**30,        # the bound on the cache's files (data, block CRCs, footers)
        fill_max_bytes=64 * 2**20,     # whole reads of blobs up to this size fill the cache
        write_through_bytes=0,         # puts up to this size also go to the cache (default: none)
    )

Constructing it scans the cache directory (blocking: do it at startup, as ``LocalBlobStore``).
The cache's ``LocalBlobStore`` should be ``durable=False``: its blobs live in the store, and every
read of a cache file checks its footer and block CRCs, so a file a power loss tore is found
damaged and fetched again; the fsyncs would only slow the fills (docs/benchmarks.md).

- **put** streams to the store and returns when the store has the blob (a body held only on one
  gateway's drives would die with it). Nothing goes to the cache by default: behind a load
  balancer without affinity a gateway serves 1/N of the reads of what it wrote, and training
  data and checkpoints are written once and read elsewhere, so write-through would mostly evict
  blobs that are read for blobs that are not. ``write_through_bytes`` turns it on for bodies up
  to that size (kept in memory while they stream to the store, written to the cache after it has
  them; a cache that fails does not fail the put). docs/benchmarks.md "Issue 18: the standard
  tier's local cache" has what it costs.
- **get/read** try the cache first. A miss reads from the store; a read of the *whole* blob of at
  most ``fill_max_bytes`` is verified by the store (its CRC32C, or its multipart ETag) and fills
  the cache in the same pass: chunks go to the reader and into a cache temp file together, and
  the file is published only after the store's check passed (the store holds its last chunk back
  until then), so an unverified or interrupted fill leaves no cache file. Ranged reads on a miss
  and whole reads of bigger blobs go to the store and are not cached: the size of a blob is known
  only from the answer, so filling on a range would mean a HEAD plus a whole GET for one range,
  and caching block-aligned pieces of big blobs would need a second index of pieces that a remote
  object cannot verify per block anyway (docs/tiers.md: ranged remote reads are not checked).
- A cache file that fails its checks (a block, the footer, the length, or gone under the reader)
  is dropped and the bytes come from the store instead: ``CorruptBlob`` reaches the reader only if
  the store's copy is bad too. A whole read that fails mid-stream is re-read whole and verified
  from the store (the bytes already sent skipped); a ranged one continues with a store range.
- **delete** removes the cache file, then the object. **stat**, **scan** and **verify** are the
  store's. With the store down, cached blobs still read; everything else raises the store's
  ``TierUnavailable`` (503 with Retry-After), never wrong bytes.
- **The bound**: an LRU by last access over the cache's file sizes. Access times live in memory
  (a hit costs a dict move); a hit also sets the file's mtime when it has not been set for a
  minute, and the start-up scan orders the files by mtime, so the order survives restarts.
  Several processes (granian workers) share one directory: fills publish by ``link`` (a
  concurrent fill of the same blob loses harmlessly), eviction unlinks (a reader in another
  process keeps its open file), and a file another process removed is a miss. Each process
  counts what it has seen; after filling an eighth of ``cache_bytes`` it rescans the directory
  (in a thread) to learn the others' files and mtimes, so the directory can exceed the bound by
  about that much per process between rescans.

- **Held blobs** (dataset pins on a cluster, docs/scale-out.md "Dataset pins on every gateway"):
  ``hold(blob_ids)`` names the blobs eviction must skip, and ``prefetch(blob_id)`` fills one
  whole, verified by the store, whatever its size (``fill_max_bytes`` is for reads). The held set
  is a file in the cache directory (``held``, replaced by rename), so every process sharing the
  directory skips the same blobs: eviction rereads it when its mtime or size changed. Held files
  count towards the bound; when they alone exceed it the cache grows past it rather than drop a
  pinned blob (``hold`` logs it).

``fills``, ``hits``, ``store_gets``, ``evictions`` count what this instance did (tests, metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass

from tierstore.blob._local import LocalBlobStore, blob_file_size, data_size_from_file_size
from tierstore.blob._protocol import BLOCK_SIZE_BYTES, BlobInfo, check_range, validate_blob_id
from tierstore.blob._s3 import S3BlobStore
from tierstore.errors import CorruptBlob, TierstoreError

__all__ = ["CachedBlobStore"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_TOUCH_INTERVAL_S = 60.0  # a hit sets the file's mtime at most this often (the order across restarts)
_FILL_QUEUE_CHUNKS = 4  # chunks in flight between a reader and the cache file being filled
_RESCAN_FRACTION = 8  # rescan the directory after filling cache_bytes / this
NODE_FILE = "node-id"  # the cache directory's id (CachedBlobStore.node_id), beside blobs/
HELD_FILE = "held"  # the held set: blob ids, one a line (in the cache directory, beside blobs/)


@dataclass(slots=True)
class _Entry:
    file_bytes: int
    access_s: float  # last access (wall clock, comparable with mtimes)
    touched_s: float  # when the file's mtime was last set (or read)


class CachedBlobStore:
    """A BlobStore whose blobs live in ``store`` and whose reads go through ``cache`` (module doc)."""

    def __init__(
        self,
        store: S3BlobStore,
        cache: LocalBlobStore,
        *,
        cache_bytes: int,
        fill_max_bytes: int = 64 * MIB,
        write_through_bytes: int = 0,
    ) -> None:
        if cache_bytes <= 0:
            raise ValueError("cache_bytes must be positive")
        if fill_max_bytes < 0 or write_through_bytes < 0:
            raise ValueError("fill_max_bytes and write_through_bytes must not be negative")
        self.store = store
        self.cache = cache
        self.cache_bytes = cache_bytes
        # a blob whose file alone would exceed the bound is never cached
        self.fill_max_bytes = min(fill_max_bytes, _max_data_bytes(cache_bytes))
        self.write_through_bytes = min(write_through_bytes, self.fill_max_bytes)
        self.fills = self.hits = self.store_gets = self.evictions = 0
        self._index: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._total_bytes = 0
        self._filling: set[str] = set()
        self._filled_since_scan = 0
        self._held: frozenset[str] = frozenset()
        self._held_stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the held file read
        self._replace_index(_scan_dir(self._blobs_dir))
        self._load_held()

    def __repr__(self) -> str:
        return f"CachedBlobStore({self.store!r}, cache={str(self.cache.root)!r}, cache_bytes={self.cache_bytes})"

    @property
    def cached_bytes(self) -> int:
        """What this process counts in the cache directory (file sizes)."""
        return self._total_bytes

    @property
    def node_id(self) -> str:
        """This cache directory's id: made once (by whichever process comes first), then read by
        every process sharing the directory (one gateway: docs/scale-out.md "Dataset pins on
        every gateway")."""
        path = os.path.join(self.cache.root, NODE_FILE)
        try:
            with open(path, encoding="ascii") as f:
                found = f.read().strip()
            if found:
                return found
        except FileNotFoundError:
            pass
        os.makedirs(self.cache.root, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(6))
        try:
            os.link(tmp, path)  # the first process's id wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        with open(path, encoding="ascii") as f:
            return f.read().strip()

    def is_cached(self, blob_id: str) -> bool:
        """Whether the blob has a cache file now (any process's)."""
        return os.path.exists(self.cache.blob_path(blob_id))

    # --- held blobs (pins) ---------------------------------------------------------------
    @property
    def held(self) -> frozenset[str]:
        """The blobs eviction skips (the held file's, as last read)."""
        self._load_held()
        return self._held

    async def hold(self, blob_ids: Iterable[str]) -> None:
        """Make ``blob_ids`` the held set of every process on this directory (written only if it
        changed). Blobs no longer held become evictable at once."""
        held = frozenset(blob_ids)
        self._load_held()
        if held == self._held:
            return
        await asyncio.to_thread(self._write_held, held)
        self._held = held
        await self._evict()

    def _write_held(self, held: frozenset[str]) -> None:
        path = os.path.join(self.cache.root, HELD_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write("".join(f"{blob_id}\n" for blob_id in sorted(held)))
        os.replace(tmp, path)
        st = os.stat(path)
        self._held_stamp = (st.st_mtime_ns, st.st_size)

    def _load_held(self) -> None:
        """Reread the held file if it changed since this process read it (another wrote it)."""
        path = os.path.join(self.cache.root, HELD_FILE)
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._held_stamp:
                return
            with open(path, encoding="ascii") as f:
                self._held = frozenset(line for line in f.read().split("\n") if line)
            self._held_stamp = stamp
        except FileNotFoundError:
            self._held, self._held_stamp = frozenset(), None

    async def prefetch(self, blob_id: str) -> int:
        """Fill the cache with the whole blob, verified by the store (its CRC32C, or its multipart
        ETag), whatever its size: the bytes filled, 0 if it was cached already. The store's
        errors (``TierUnavailable``, ``CorruptBlob``, ``NoSuchBlob``) are the caller's."""
        if self._path_if_cached(blob_id) is not None:
            return 0
        self.store_gets += 1
        _, chunks = await self.store.get_sized(blob_id, 0, None, verify=True)
        self._filling.add(blob_id)
        try:
            info = await self.cache.put(blob_id, chunks)  # published only once the store's check passed
        except ValueError:  # another process filled it meanwhile
            return 0
        finally:
            self._filling.discard(blob_id)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        self._filled(blob_id, info.size_bytes)
        await self._evict()
        return info.size_bytes

    # --- BlobStore --------------------------------------------------------------------------
    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        """To the store; durable (there) when this returns. Bodies up to ``write_through_bytes``
        are then written to the cache too."""
        if self.write_through_bytes == 0:
            return await self.store.put(blob_id, chunks)
        kept: list[bytes] | None = []
        kept_bytes = 0

        async def tee() -> AsyncIterator[bytes]:
            nonlocal kept, kept_bytes
            async for chunk in chunks:
                if kept is not None:
                    kept_bytes += len(chunk)
                    if kept_bytes > self.write_through_bytes:
                        kept = None
                    else:
                        kept.append(chunk)
                yield chunk

        info = await self.store.put(blob_id, tee())
        if kept is not None:
            await self._fill_from(blob_id, kept)
        return info

    async def get(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> AsyncIterator[bytes]:
        hit = await self._cached_get(blob_id, offset, length, verify)
        if hit is not None:
            return hit
        self.store_gets += 1
        if not self._may_fill(blob_id, offset, length):
            return await self.store.get(blob_id, offset, length, verify=verify)
        size_bytes, chunks = await self.store.get_sized(blob_id, offset, length, verify=True)
        if length not in (None, size_bytes) or size_bytes > self.fill_max_bytes or size_bytes == 0:
            return chunks
        return self._filling_iter(blob_id, size_bytes, chunks)

    async def read(self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True) -> bytes:
        path = self._path_if_cached(blob_id)
        if path is not None:
            try:
                data = await self.cache.read(blob_id, offset, length, verify=verify)
            except CorruptBlob as exc:
                await self._drop(blob_id, exc)
            else:
                self._hit(blob_id, path)
                return data
        self.store_gets += 1
        if not self._may_fill(blob_id, offset, length):
            return await self.store.read(blob_id, offset, length, verify=verify)
        size_bytes, data = await self.store.read_sized(blob_id, offset, length, verify=True)
        if len(data) == size_bytes <= self.fill_max_bytes and size_bytes:
            await self._fill_from(blob_id, [data])
        return data

    async def delete(self, blob_id: str) -> None:
        """The cache file first: once the object is gone, no read here may find the bytes."""
        validate_blob_id(blob_id)
        await self._drop(blob_id)
        await self.store.delete(blob_id)

    async def stat(self, blob_id: str) -> BlobInfo | None:
        return await self.store.stat(blob_id)

    def scan(self) -> AsyncIterator[BlobInfo]:
        return self.store.scan()

    async def verify(self, blob_id: str) -> bool:
        """The durable copy's check (a whole verified read from the store)."""
        return await self.store.verify(blob_id)

    # --- hits -------------------------------------------------------------------------------
    def _path_if_cached(self, blob_id: str) -> str | None:
        """The cache file's path if there is one (an ``os.stat``: other processes fill too)."""
        path = str(self.cache.blob_path(blob_id))  # validates the id
        if blob_id in self._index or os.path.exists(path):
            return path
        return None

    async def _cached_get(
        self, blob_id: str, offset: int, length: int | None, verify: bool
    ) -> AsyncIterator[bytes] | None:
        path = str(self.cache.blob_path(blob_id))  # validates the id
        try:
            file_bytes = os.stat(path).st_size
            # InvalidRange is the caller's; the cache tells it from a damaged length (CorruptBlob)
            chunks = await self.cache.get(blob_id, offset, length, verify=verify)
            size_bytes = data_size_from_file_size(file_bytes)
            if size_bytes is None:
                raise CorruptBlob(f"cached blob {blob_id} has a damaged length", resource=blob_id)
            end = check_range(size_bytes, offset, length)
        except FileNotFoundError:
            self._forget(blob_id)  # not cached, or evicted by another process
            return None
        except CorruptBlob as exc:
            await self._drop(blob_id, exc)
            return None
        self._hit(blob_id, path, file_bytes)
        return self._hit_iter(blob_id, chunks, offset, end, whole=offset == 0 and end == size_bytes, verify=verify)

    async def _hit_iter(
        self, blob_id: str, chunks: AsyncIterator[bytes], offset: int, end: int, *, whole: bool, verify: bool
    ) -> AsyncIterator[bytes]:
        """The cache file's bytes; if it fails its checks midway, the rest from the store."""
        pos = offset
        try:
            async for chunk in chunks:
                pos += len(chunk)
                yield chunk
            return
        except CorruptBlob as exc:
            await self._drop(blob_id, exc)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        self.store_gets += 1
        if not whole:
            if pos < end:
                async for chunk in await self.store.get(blob_id, pos, end - pos, verify=verify):
                    yield chunk
            return
        skip = pos  # re-read whole, so the store checks the blob's CRC32C before its last chunk
        async for chunk in await self.store.get(blob_id, verify=True):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            yield chunk[skip:] if skip else chunk
            skip = 0

    def _hit(self, blob_id: str, path: str, file_bytes: int | None = None) -> None:
        """Count an access: LRU order in memory; the file's mtime now and then (restarts)."""
        self.hits += 1
        now = time.time()
        entry = self._index.get(blob_id)
        if entry is None:  # filled by another process
            if file_bytes is None:
                with contextlib.suppress(OSError):
                    file_bytes = os.stat(path).st_size
            if file_bytes is None:
                return
            self._index[blob_id] = _Entry(file_bytes, now, now)
            self._total_bytes += file_bytes
            return
        self._index.move_to_end(blob_id)
        entry.access_s = now
        if now - entry.touched_s >= _TOUCH_INTERVAL_S:
            entry.touched_s = now
            with contextlib.suppress(OSError):
                os.utime(path)

    # --- fills ------------------------------------------------------------------------------
    def _may_fill(self, blob_id: str, offset: int, length: int | None) -> bool:
        """A read that may be of a whole blob small enough to cache, not being filled already."""
        return (
            offset == 0
            and (length is None or 0 < length <= self.fill_max_bytes)
            and self.fill_max_bytes > 0
            and blob_id not in self._filling
        )

    async def _filling_iter(self, blob_id: str, size_bytes: int, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The store's verified whole read, to the reader and into the cache in one pass."""
        self._filling.add(blob_id)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(_FILL_QUEUE_CHUNKS)

        async def from_queue() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not None:
                yield chunk

        writer = asyncio.create_task(self.cache.put(blob_id, from_queue()))
        feeding, received, reported = True, 0, False
        try:
            async for chunk in chunks:
                received += len(chunk)
                if feeding:
                    feeding = await _send(queue, chunk, writer)
                    # The store hands out its last chunk only after its check passed: publish the
                    # file before the reader has every byte, since a reader that has them may stop
                    # iterating here (api/ does, for a body that came in one chunk).
                    if feeding and received == size_bytes:
                        feeding, reported = False, True
                        if await _send(queue, None, writer):
                            await asyncio.wait([writer])
                        await self._fill_done(blob_id, size_bytes, writer)
                yield chunk
        finally:
            self._filling.discard(blob_id)
            if not writer.done():
                writer.cancel()  # a failed or abandoned read: the put removes its temp file
                await asyncio.wait([writer])
            if not reported:
                await self._fill_done(blob_id, size_bytes, writer)

    async def _fill_done(self, blob_id: str, size_bytes: int, writer: asyncio.Task[BlobInfo]) -> None:
        """Count a finished fill, or log why it failed (a cancelled one: nothing to say)."""
        error = None if writer.cancelled() else writer.exception()
        if error is not None:
            _log_fill_failure(blob_id, error)
        elif not writer.cancelled():
            self._filled(blob_id, size_bytes)
            await self._evict()

    async def _fill_from(self, blob_id: str, data: Iterable[bytes]) -> None:
        """Write verified bytes in memory to the cache; a failure only costs the cache entry."""
        if blob_id in self._filling:
            return
        self._filling.add(blob_id)
        try:
            info = await self.cache.put(blob_id, _aiter(data))
        except Exception as exc:  # the cache is best effort
            _log_fill_failure(blob_id, exc)
            return
        finally:
            self._filling.discard(blob_id)
        self._filled(blob_id, info.size_bytes)
        await self._evict()

    def _filled(self, blob_id: str, size_bytes: int) -> None:
        self.fills += 1
        file_bytes = blob_file_size(size_bytes)
        now = time.time()
        self._forget(blob_id)
        self._index[blob_id] = _Entry(file_bytes, now, now)
        self._total_bytes += file_bytes
        self._filled_since_scan += file_bytes

    # --- the bound --------------------------------------------------------------------------
    async def _evict(self) -> None:
        """Least recently used files out until the cache is within its bound; now and then a
        rescan first, to count what other processes filled."""
        if self._filled_since_scan * _RESCAN_FRACTION >= self.cache_bytes:
            self._filled_since_scan = 0
            found = await asyncio.to_thread(_scan_dir, self._blobs_dir)
            self._replace_index(found, keep=self._index)
        victims: list[str] = []
        if self._total_bytes > self.cache_bytes:
            self._load_held()
            held = self._held
            for blob_id, entry in list(self._index.items()):  # least recently used first
                if self._total_bytes <= self.cache_bytes or len(self._index) <= 1:
                    break
                if blob_id in held:
                    continue
                del self._index[blob_id]
                self._total_bytes -= entry.file_bytes
                victims.append(blob_id)
        for blob_id in victims:
            self.evictions += 1
            try:
                await self.cache.delete(blob_id)
            except TierstoreError as exc:
                log.warning("could not evict blob %s from the cache: %s", blob_id, exc)

    def _replace_index(self, found: dict[str, tuple[int, float]], keep: dict[str, _Entry] | None = None) -> None:
        """The index from a directory scan (``{blob_id: (file bytes, mtime)}``), ordered by last
        access: the later of what this process saw and the file's mtime."""
        entries: list[tuple[str, _Entry]] = []
        for blob_id, (file_bytes, mtime) in found.items():
            seen = keep.get(blob_id) if keep is not None else None
            access = max(mtime, seen.access_s) if seen is not None else mtime
            entries.append((blob_id, _Entry(file_bytes, access, seen.touched_s if seen else mtime)))
        entries.sort(key=lambda item: item[1].access_s)
        self._index = OrderedDict(entries)
        self._total_bytes = sum(entry.file_bytes for _, entry in entries)

    def _forget(self, blob_id: str) -> None:
        entry = self._index.pop(blob_id, None)
        if entry is not None:
            self._total_bytes -= entry.file_bytes

    async def _drop(self, blob_id: str, damage: CorruptBlob | None = None) -> None:
        """Remove the blob's cache file: the blob is deleted, or the file failed its checks
        (``damage``; a file that vanished, evicted by another process, is only forgotten)."""
        self._forget(blob_id)
        if damage is None:
            await self.cache.delete(blob_id)
            return
        if isinstance(damage.__cause__, FileNotFoundError):
            return
        log.warning("dropping the cache file of blob %s (%s); reading it from the store", blob_id, damage)
        try:
            await self.cache.delete(blob_id)
        except TierstoreError as exc:
            log.warning("could not remove the damaged cache file of blob %s: %s", blob_id, exc)

    @property
    def _blobs_dir(self) -> str:
        return str(self.cache.root / "blobs")


async def _send(queue: asyncio.Queue[bytes | None], item: bytes | None, writer: asyncio.Task[BlobInfo]) -> bool:
    """Hand ``item`` to the cache writer; False if the writer is gone (it failed: stop feeding)."""
    if writer.done():
        return False
    if not queue.full():
        queue.put_nowait(item)
        return True
    put = asyncio.ensure_future(queue.put(item))
    await asyncio.wait([put, writer], return_when=asyncio.FIRST_COMPLETED)
    if put.done():
        return True
    put.cancel()
    return False


async def _aiter(data: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in data:
        yield chunk


def _log_fill_failure(blob_id: str, exc: BaseException | None) -> None:
    if isinstance(exc, ValueError):  # another reader (or process) filled it first
        return
    log.warning("could not cache blob %s: %s", blob_id, exc)


def _max_data_bytes(file_bytes: int) -> int:
    """The largest blob whose cache file fits in ``file_bytes``."""
    size = max(0, (file_bytes - blob_file_size(0)) * BLOCK_SIZE_BYTES // (BLOCK_SIZE_BYTES + 4))
    while size and blob_file_size(size) > file_bytes:
        size -= 1
    return size


def _scan_dir(blobs_dir: str) -> dict[str, tuple[int, float]]:
    """``{blob_id: (file bytes, mtime)}`` of the cache files (blocking)."""
    found: dict[str, tuple[int, float]] = {}
    try:
        level1s = os.listdir(blobs_dir)
    except FileNotFoundError:
        return found
    for level1 in level1s:
        with contextlib.suppress(NotADirectoryError, FileNotFoundError):
            for level2 in os.listdir(os.path.join(blobs_dir, level1)):
                with (
                    contextlib.suppress(NotADirectoryError, FileNotFoundError),
                    os.scandir(os.path.join(blobs_dir, level1, level2)) as entries,
                ):
                    for entry in entries:
                        with contextlib.suppress(FileNotFoundError):
                            st = entry.stat(follow_symlinks=False)
                            found[entry.name] = (st.st_size, st.st_mtime)
    return found
