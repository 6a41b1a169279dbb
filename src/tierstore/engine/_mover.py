"""The tier data path in the engine (docs/tiers.md): one remote blob store per tier, the
mover's one-version move, its retries, and the outbox loop that deletes remote objects.

- ``TierStores``: a remote blob store per tier, made lazily from the registry
  (``TierService.get_config``) by the factory server.py hands to ObjectService (engine/ never
  constructs a blob backend: the factory builds the ``S3BlobStore`` and its SSRF guard),
  re-checked at most every ``ttl_s`` and replaced when the tier's configuration changes,
  dropped when it is removed.
- ``Mover.transition``: for each blob of a version not yet in the tier — on the local drives
  (or the version's inline body, as a new blob), or in another tier — its CRC32C is learnt
  (folded from the local store's per-block CRC32Cs, or a verified first read where the store
  keeps none; a remote source's from its metadata), the blob streams to ``prefix/ID`` with the
  remote metadata of the design, checked by the put's ETag (the MD5 of what was sent) or else a
  HEAD; then one catalog transaction (``transition_commit``; concurrent moves share the
  catalog's group commit) switches the version and counts the move (``tier_stats``). The old
  copy goes to the trash (local) or the old tier's outbox in that transaction and is freed
  after it. A version that changed meanwhile: new remote objects go to the outbox. A failure
  is counted against the tier with its message (``tier_error``).
- ``Mover.retry_pending``: versions written in a tier's class whose tier did not answer
  (``tier_pending``), moved once the tier is back, with the outbox's backoff.
- ``Mover.drain_outbox``: deletes queued remote objects, backing off (exponential, capped) per
  entry while a tier does not answer; ``sweep_remote_orphans``: objects under a tier's prefix
  that the catalog does not name, older than the grace period (a crash between the remote put
  and the commit).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from awscrt.checksums import crc32c

from tierstore._watch import ConfigWatch
from tierstore.blob import BlobStore, RemoteBlobStore
from tierstore.catalog import BlobRef, Catalog, InlineMove, OutboxEntry, PendingWrite, VersionRecord
from tierstore.engine._leases import LeaseHolder, LeaseLost, while_leased
from tierstore.engine._tiers import NoSuchTier, TierConfig
from tierstore.errors import CorruptBlob, InternalError, TierUnavailable
from tierstore.runtime import new_blob_id

__all__ = [
    "MOVE_WAVE", "FoldsCrc32c", "Grouped", "Mover", "TierStoreFactory", "TierStores", "backoff_ns", "remote_meta",
]  # fmt: skip

log = logging.getLogger("tierstore.mover")

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
T = TypeVar("T")

OUTBOX_BACKOFF_BASE_S = 2.0
OUTBOX_BACKOFF_MAX_S = 600.0
PENDING_PAGE = 50
MOVE_CONCURRENCY = 4  # copies in flight in one ``transition_many`` (as rclone's default --transfers)
MOVE_WAVE = 50  # versions per ``ObjectService.transition_many`` wave: one commit transaction, one trash pass

# server.py's: a tier's configuration -> its remote blob store (with the endpoint guard).
TierStoreFactory = Callable[[TierConfig], RemoteBlobStore]


def _no_factory(cfg: TierConfig) -> RemoteBlobStore:
    raise InternalError(f"This service was built without remote tier stores (tier {cfg.name}).")


class TierStores:
    """One remote blob store per tier, from the registry (module docstring)."""

    def __init__(
        self,
        get_config: Callable[[str], Awaitable[TierConfig]],
        factory: TierStoreFactory | None = None,
        *,
        ttl_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._get_config = get_config
        self.factory = factory or _no_factory
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._stores: dict[str, tuple[float, TierConfig, RemoteBlobStore]] = {}
        self.watch = ConfigWatch()

    def watch_with(self, watch: ConfigWatch) -> None:
        """Keep configurations as ``watch`` says (tierstore/_watch.py), dropped by its ``tier`` changes."""
        self.watch = watch
        watch.on("tier", self.forget)

    async def config(self, name: str) -> TierConfig:
        return (await self._entry(name))[1]

    async def store(self, name: str) -> RemoteBlobStore:
        return (await self._entry(name))[2]

    async def _entry(self, name: str) -> tuple[float, TierConfig, RemoteBlobStore]:
        now = self._monotonic()
        hit = self._stores.get(name)
        if hit is not None and hit[0] > now:
            return hit
        epoch = self.watch.epoch
        try:
            cfg = await self._get_config(name)
        except NoSuchTier:
            self._stores.pop(name, None)
            raise
        store = hit[2] if hit is not None and hit[1] == cfg else self.factory(cfg)
        entry = (now + self.watch.lifetime(self.ttl_s), cfg, store)
        if self.watch.current(epoch):  # else a change was announced meanwhile: not kept
            self._stores[name] = entry
        return entry

    def forget(self, name: str | None = None) -> None:
        if name is None:
            self._stores.clear()
        else:
            self._stores.pop(name, None)


def remote_meta(record: VersionRecord, blob_size: int, crc: int) -> dict[str, str]:
    """The user metadata of a remote blob: what it holds, without our catalog (docs/tiers.md)."""
    m = record.meta
    meta = {
        "tierstore-bucket": m.bucket,
        "tierstore-key": urllib.parse.quote(m.key, safe=""),
        "tierstore-version-id": m.version_id,
        "tierstore-etag": m.etag.strip('"'),
        "tierstore-object-size": str(m.size_bytes),
        "tierstore-blob-size": str(blob_size),
        "tierstore-crc32c": f"{crc:08x}",
    }
    if m.encryption:
        meta["tierstore-encrypted"] = str(m.encryption.get("kind", "e"))
    return meta


@runtime_checkable
class FoldsCrc32c(Protocol):
    """A local store that knows a blob's CRC32C without reading it (``LocalBlobStore`` folds its
    per-block CRC32Cs, ``ErasureBlobStore`` keeps the object's in its trailers); None: unknown."""

    async def blob_crc32c(self, blob_id: str) -> int | None: ...


class Grouped(Generic[ItemT, ResultT]):
    """Calls of ``run`` grouped: ``await grouped(item)`` queues ``item``; one task runs ``run`` on
    what is queued, again and again while items arrive meanwhile (``ObjectService``'s trash pass
    after moves). A caller gets its item's result (or the batch's exception) from a run that
    started after it queued."""

    def __init__(self, run: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]]) -> None:
        self._run = run
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: ItemT) -> ResultT:
        fut: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        return await asyncio.shield(fut)  # a cancelled caller leaves the batch to finish

    async def _loop(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._run([item for item, _ in batch])
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            except BaseException:
                for _, fut in batch + self._queue:
                    if not fut.done():
                        fut.set_exception(InternalError("The batch was cancelled; retry."))
                self._queue = []
                raise
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)


@dataclass(frozen=True, slots=True)
class _Uploaded:
    """A move whose copies are in the tier, verified: what its commit needs."""

    bucket: str
    key: str
    version_id: str
    tier: str
    moved: list[tuple[str, str | None]]  # (blob id, where it was: None local, else a tier)
    inline: InlineMove | None


class Mover:
    """Moves versions to tiers and deletes remote objects no one references (module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        local: BlobStore,
        stores: TierStores,
        *,
        fault: Callable[[str], None] | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        leases: LeaseHolder | None = None,
    ) -> None:
        self.catalog = catalog
        self.leases = leases or LeaseHolder()  # the outbox rows are leased to this owner
        self.local = local
        self.stores = stores
        # Tests: called at "uploaded" (every remote put done, before the commit) and
        # "committed" (after the commit, before the local bytes are freed).
        self.fault: Callable[[str], None] = fault or (lambda step: None)
        self._now_ns = now_ns
        # Remote stores a HEAD has shown to keep the metadata a put sends (``_put_checked``).
        self._keeps_meta: weakref.WeakSet[RemoteBlobStore] = weakref.WeakSet()

    async def transition(self, bucket: str, key: str, version_id: str, tier: str) -> bool:
        """Move version ``version_id`` of ``key`` to ``tier``; False when there was nothing to do
        (already there, or the version is gone). Idempotent; crash-safe at every step. A failure
        (the tier, or a source, did not answer; bytes did not match) is counted against ``tier``."""
        step = await self._counted(tier, self._upload(bucket, key, version_id, tier))
        return step if isinstance(step, bool) else await self._counted(tier, self._commit(step))

    async def transition_many(
        self, tier: str, versions: Sequence[tuple[str, str, str]], *, concurrency: int = MOVE_CONCURRENCY
    ) -> list[bool | Exception]:
        """Versions ``(bucket, key, version_id)`` to ``tier``, each as ``transition`` moves one
        (its result, or its exception, in ``versions``' order): the copies ``concurrency`` at a
        time, then every commit queued at once, so they share the catalog's transaction and its
        fsync (the writer's group commit) instead of one each. NoSuchTier before anything moves."""
        await self.stores.config(tier)
        gate = asyncio.Semaphore(concurrency)

        async def upload(bucket: str, key: str, version_id: str) -> bool | _Uploaded:
            async with gate:
                return await self._counted(tier, self._upload(bucket, key, version_id, tier))

        async def commit(step: bool | _Uploaded | BaseException) -> bool:
            if isinstance(step, BaseException):
                raise step
            return step if isinstance(step, bool) else await self._counted(tier, self._commit(step))

        steps = await asyncio.gather(*(upload(*v) for v in versions), return_exceptions=True)
        results = await asyncio.gather(*(commit(s) for s in steps), return_exceptions=True)
        out: list[bool | Exception] = []
        for r in results:
            if not isinstance(r, bool | Exception):
                raise r  # cancelled, interrupted: not an item's outcome
            out.append(r)
        return out

    async def _counted(self, tier: str, step: Awaitable[T]) -> T:
        """``step``; a failure of it is counted against ``tier`` with its message (``tier_error``)."""
        try:
            return await step
        except (TierUnavailable, CorruptBlob, InternalError) as exc:
            try:
                await self.catalog.tier_error(tier, f"{type(exc).__name__}: {exc}", self._now_ns())
            except Exception:  # the count is best effort; the move's own error is what matters
                log.exception("tier %s: the error could not be counted", tier)
            raise

    async def _upload(self, bucket: str, key: str, version_id: str, tier: str) -> bool | _Uploaded:
        """A move up to its commit: the version's bytes copied to ``tier`` and verified; False
        when there is nothing to do."""
        record = await self.catalog.get_version(bucket, key, version_id, data=True)
        if record is None or record.is_delete_marker:
            return False
        await self.stores.config(tier)  # NoSuchTier before anything moves
        todo = [b for b in record.blobs if b.tier != tier]
        if not todo and record.inline_id is None:
            if record.meta.storage_class == tier:
                return False
            # Its blobs are there already (shared with a moved copy): only the class changes.
            return _Uploaded(bucket, key, version_id, tier, [], None)
        waiting = await self.catalog.outbox_holds(tier, [b.blob_id for b in todo])
        if waiting:  # an old copy in the target is being deleted: writing there now could lose the new one
            raise TierUnavailable(f"An earlier copy of blob {waiting} in tier {tier} is still being deleted; retry.")
        remote = await self.stores.store(tier)
        inline = None
        for ref in todo:
            await self._copy(remote, record, ref)
        if record.inline_id is not None:
            assert record.inline_data is not None
            body = record.inline_data
            new_id = new_blob_id()
            meta = remote_meta(record, len(body), crc32c(body))
            await self._put_checked(remote, new_id, _once(body), len(body), meta)
            inline = InlineMove(record.inline_id, new_id, len(body))
        self.fault("uploaded")
        return _Uploaded(bucket, key, version_id, tier, [(b.blob_id, b.tier) for b in todo], inline)

    async def _commit(self, step: _Uploaded) -> bool:
        """The move's one catalog transaction (``transition_commit``)."""
        ok = await self.catalog.transition_commit(
            step.bucket, step.key, step.version_id, step.tier, step.moved, step.inline
        )
        if not step.moved and step.inline is None:
            return ok  # only the class changed
        if not ok:
            # The version changed meanwhile. A new blob (from an inline body) is no one's: the
            # outbox deletes it. A copy of a blob the catalog still names is left to the orphan
            # sweep, which takes it only once no one names the id (the outbox could race a retry
            # that reuses it).
            if step.inline is not None:
                await self.catalog.outbox_add(step.tier, [step.inline.blob_id])
            return False
        self.fault("committed")
        return True

    async def _copy(self, remote: RemoteBlobStore, record: VersionRecord, ref: BlobRef) -> None:
        size = ref.size_bytes
        await self.upload_blob(remote, ref.blob_id, size, lambda crc: remote_meta(record, size, crc), ref.tier)

    async def upload_blob(
        self,
        remote: RemoteBlobStore,
        blob_id: str,
        size: int,
        describe: Callable[[int], dict[str, str]],
        source_tier: str | None = None,
    ) -> None:
        """Blob ``blob_id`` (local, or in tier ``source_tier``) -> the remote object of the same
        id, verified; ``describe(crc)``: its remote metadata. No HEAD before the put (one request
        less per blob): the put refuses an id that is taken, and a remote object an earlier
        attempt left is then kept if it is this blob (size and CRC32C), else replaced. Streamed
        both ways: memory is the stores' chunk and part size. (Also the dataset archive's copy.)"""
        source: BlobStore = self.local
        if source_tier is None:
            crc = await self._local_crc(blob_id, size)
        else:
            remote_source = await self.stores.store(source_tier)
            crc = _crc_of(await remote_source.head_meta(blob_id), blob_id, size, source_tier)
            source = remote_source
        meta = describe(crc)
        for attempt in range(2):
            # A whole verified read: a remote source checks its CRC32C before its last chunk.
            chunks = await source.get(blob_id, 0, size, verify=True)
            try:
                await self._put_checked(remote, blob_id, chunks, size, meta)
                return
            except ValueError:  # taken by another blob's bytes (_put_checked keeps a matching one)
                if attempt:
                    raise
            await remote.delete(blob_id)

    async def _local_crc(self, blob_id: str, size: int) -> int:
        """The CRC32C of local blob ``blob_id``: folded from the store's per-block CRC32Cs when it
        keeps them (verified against their table's own checksum), else a verified read."""
        if isinstance(self.local, FoldsCrc32c):
            found = await self.local.blob_crc32c(blob_id)
            if found is not None:
                return found
        crc = read = 0
        async for chunk in await self.local.get(blob_id, 0, size, verify=True):
            crc = int(crc32c(chunk, crc))
            read += len(chunk)
        if read != size:
            raise CorruptBlob(f"blob {blob_id}: {read} of {size} bytes read", resource=blob_id)
        return crc

    async def upload_body(self, remote: RemoteBlobStore, blob_id: str, body: bytes, meta: dict[str, str]) -> None:
        """A body from memory (an inline body) -> the new remote object ``blob_id``, verified."""
        await self._put_checked(remote, blob_id, _once(body), len(body), meta)

    async def _put_checked(
        self, remote: RemoteBlobStore, blob_id: str, chunks: AsyncIterator[bytes], size: int, meta: dict[str, str]
    ) -> None:
        """Put, then know the remote object is this blob: its bytes by the put's own proof (the
        service's ETag against the MD5 of the bytes sent, which were read verified against
        their CRC32C: ``BlobInfo.verified``) once this store has shown it keeps our metadata
        (one HEAD per store); else, or without that proof, by a HEAD of its size and CRC32C."""
        crc = int(meta["tierstore-crc32c"], 16)
        try:
            info = await remote.put(blob_id, chunks, meta=meta)  # ETag against the MD5 of what was sent; CRC32C given
        except ValueError:
            # The object exists: another mover of the same blob wrote it first (a put never
            # overwrites). Kept if it is this blob, as a retry keeps what a crash left.
            found = await remote.head_meta(blob_id)
            if found is None or not _matches(found, size, crc):
                raise
            return
        if info.verified and info.size_bytes == size and remote in self._keeps_meta:
            return
        found = await remote.head_meta(blob_id)
        if found is None or not _matches(found, size, crc):
            raise CorruptBlob(f"blob {blob_id}: the remote object does not match what was sent", resource=blob_id)
        self._keeps_meta.add(remote)

    # --- writes waiting for their tier --------------------------------------------------------
    async def retry_pending(self, now_ns: int | None = None) -> dict[str, int]:
        """Move the versions written in a tier's class while it did not answer (``tier_pending``),
        once their retry is due; a tier that still does not answer is skipped for the rest of
        the pass and its entries wait longer (the outbox's backoff). Returns counts."""
        moved = failed = dropped = 0
        now = self._now_ns() if now_ns is None else now_ns
        if not await self.catalog.tier_pending_any(now):
            return {"moved": 0, "failed": 0, "dropped": 0}
        down: set[str] = set()
        owner, lease_s = self.leases.owner, self.leases.lease_s
        while True:
            items = await self.catalog.tier_pending_claim(now, PENDING_PAGE, int(lease_s * 1e9), owner=owner)
            if not items:
                break
            self.leases.fault("pending")

            async def renew(page: list[PendingWrite] = items) -> bool:  # the page's items still ours
                return await self.catalog.tier_pending_renew(page, owner, self._now_ns() + int(lease_s * 1e9)) > 0

            for item in items:
                try:
                    outcome = await while_leased(
                        self._retry_one(item, down, now), renew, lease_s, f"tier {item.tier}: pending writes"
                    )
                except LeaseLost:  # the page was taken over: its new holder moves the rest
                    break
                moved += outcome == "moved"
                failed += outcome == "failed"
                dropped += outcome == "dropped"
            if len(items) < PENDING_PAGE:
                break
        return {"moved": moved, "failed": failed, "dropped": dropped}

    async def _retry_one(self, item: PendingWrite, down: set[str], now_ns: int) -> str:
        owner = self.leases.owner
        if item.tier in down:
            await self.catalog.tier_pending_retry(item, now_ns + backoff_ns(item.attempts + 1), owner=owner)
            return "failed"
        try:
            done = await self.transition(item.bucket, item.key, item.version_id, item.tier)
        except NoSuchTier:  # removed meanwhile: the class stays a label, the bytes local
            await self.catalog.tier_pending_done(item, owner=owner)
            return "dropped"
        except Exception as exc:
            log.warning("tier %s: %s/%s (%s) still waits: %s", item.tier, item.bucket, item.key, item.version_id, exc)
            if isinstance(exc, TierUnavailable):
                down.add(item.tier)
            await self.catalog.tier_pending_retry(item, now_ns + backoff_ns(item.attempts + 1), owner=owner)
            return "failed"
        await self.catalog.tier_pending_done(item, owner=owner)
        return "moved" if done else "dropped"

    # --- the outbox -------------------------------------------------------------------------
    async def drain_outbox(self, now_ns: int | None = None) -> dict[str, int]:
        """Delete the remote objects due in the outbox; entries of a tier that does not answer
        are retried later (exponential backoff from 2 s, capped at 10 minutes). Each batch is
        leased to this process (``self.leases``), and dropped only while the lease is ours."""
        deleted = failed = 0
        now = time.time_ns() if now_ns is None else now_ns
        owner = self.leases.owner
        down: set[str] = set()
        while True:
            due = await self.catalog.outbox_claim(owner, now, self.leases.lease_ns, 200)
            if not due:
                return {"deleted": deleted, "failed": failed}
            self.leases.fault("outbox")
            done: list[OutboxEntry] = []
            retry: list[OutboxEntry] = []
            for entry in due:
                if entry.tier in down:
                    retry.append(entry)
                    continue
                try:
                    await (await self.stores.store(entry.tier)).delete(entry.blob_id)
                    done.append(entry)
                except NoSuchTier:
                    log.error("outbox: tier %s is gone; %s stays queued", entry.tier, entry.blob_id)
                    retry.append(entry)
                    down.add(entry.tier)
                except (TierUnavailable, InternalError) as exc:
                    log.warning("outbox: tier %s did not answer (%s); will retry", entry.tier, exc)
                    retry.append(entry)
                    down.add(entry.tier)
            if done:
                deleted += await self.catalog.outbox_finish(owner, done)
            if retry:
                failed += await self.catalog.outbox_requeue(owner, retry, lambda attempts: now + backoff_ns(attempts))

    async def sweep_remote_orphans(self, tier: str, *, grace_s: float, now_s: float | None = None) -> int:
        """Delete objects under ``tier``'s prefix that the catalog does not name and that are
        older than ``grace_s`` (their ids carry their creation second). Returns how many."""
        now = time.time() if now_s is None else now_s
        remote = await self.stores.store(tier)
        removed = 0
        async for info in remote.scan():
            try:
                born_s = int(info.blob_id[:8], 16)
            except ValueError:
                continue
            if now - born_s < grace_s or await self.catalog.remote_blob_known(tier, info.blob_id):
                continue
            await remote.delete(info.blob_id)
            removed += 1
        if removed:
            log.info("tier %s: removed %d orphan remote objects", tier, removed)
        return removed


def backoff_ns(attempts: int) -> int:
    return int(min(OUTBOX_BACKOFF_MAX_S, OUTBOX_BACKOFF_BASE_S * 2 ** min(attempts - 1, 20)) * 1e9)


def _matches(found: Mapping[str, str], size: int, crc: int) -> bool:
    return found.get("tierstore-blob-size") == str(size) and found.get("tierstore-crc32c") == f"{crc:08x}"


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _crc_of(found: Mapping[str, str] | None, blob_id: str, size: int, tier: str) -> int:
    """The CRC32C a remote source's metadata records for blob ``blob_id`` (its size checked)."""
    if found is None:
        raise CorruptBlob(f"blob {blob_id}: missing in tier {tier}", resource=blob_id)
    crc_s = found.get("tierstore-crc32c")
    if found.get("tierstore-blob-size") != str(size) or crc_s is None:
        raise CorruptBlob(f"blob {blob_id} in tier {tier}: its metadata does not match the catalog", resource=blob_id)
    return int(crc_s, 16)
