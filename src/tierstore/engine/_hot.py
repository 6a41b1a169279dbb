"""Hot copies of tiered blobs (docs/tiers.md "Hot copies"): the primitive under RestoreObject and
dataset pins.

A *holder* (``restore:<bucket>/<key>/<version>``, ``pin:<job>``) holds blobs by id until it is
released or its expiry passes. ``HotCopies``:

- ``ObjectService.hold_blobs(holder, blob_ids, expires_ns=, ttl_ns=)`` records the holds (one
  catalog transaction, ``hot_hold``);
- ``fill(holder)`` copies every held remote blob that has no local copy yet, remote -> local
  under the same id, ``concurrency`` at a time; resumable (a blob already copied is skipped, one
  whose local copy a crashed attempt left complete is verified and kept); verified as the mover's
  copies are: the remote store checks the whole object's CRC32C recorded at the move (the last
  chunk is held back until it matches, so a damaged body never lands: the local put is aborted)
  and its size; then ``hot_cached`` marks them (a catalog job per ``_MARK_BATCH`` copies). No
  stat before a first copy: the put refuses an id that exists, which is then verified. Reads
  prefer the copies;
- ``release(holder)`` and ``sweep()`` drop holds (released, or expired) and free, through the
  trash, the copies no live hold needs — in the transaction that drops the holds;
- ``run_once()`` (a server loop) sweeps, then claims ongoing copies (a lease, so a worker that
  dies leaves them to another, and a restart resumes them) and fills them; then helps the ongoing
  copies another process holds the lease of (a pin's request, another worker's claim): it copies
  their missing blobs from the other end (descending ids; the lease holder goes ascending), so
  every server process works on one holder; where they meet, a blob both copied is kept once (the
  second put is refused, the first copy verified).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from tierstore.blob import BlobStore
from tierstore.catalog import Catalog, HeldBlob
from tierstore.engine._leases import LeaseHolder, LeaseLost, while_leased
from tierstore.engine._mover import TierStores
from tierstore.errors import CorruptBlob, TierUnavailable

__all__ = ["HOT_LEASE_S", "FillResult", "HotCopies", "restore_holder"]

log = logging.getLogger("tierstore.hot")

HOT_LEASE_S = 10.0  # an ongoing copy a worker claimed is another's after this long without news
_MAX_ERRORS = 20  # a FillResult keeps the first errors only
_PAGE = 256  # missing blobs read at a time (two workers on one holder: at most a page each copied twice)
_MARK_BATCH = 64  # published copies marked cached in one catalog job (a crash before: found and kept)


def restore_holder(bucket: str, key: str, version_id: str) -> str:
    """The holder of a RestoreObject's copy of one version."""
    return f"restore:{bucket}/{key}/{version_id}"


@dataclass(slots=True)
class FillResult:
    """What one ``fill`` did: blobs and bytes copied, failures (retried later), whether done."""

    copied: int = 0
    copied_bytes: int = 0
    failed: int = 0
    done: bool = False
    errors: list[str] = field(default_factory=list)  # the first few


class HotCopies:
    """Local copies of remote blobs, held by holders (module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        local: BlobStore,
        stores: TierStores,
        *,
        now_ns: Callable[[], int] = time.time_ns,
        concurrency: int = 32,
        lease_s: float = HOT_LEASE_S,
        drain: Callable[[], Awaitable[None]] | None = None,
        ttl_round_ns: int = 0,
        owner: str | None = None,
    ) -> None:
        """``ttl_round_ns``: an expiry counted from the end of a copy (a restore's) is rounded up
        to a multiple of it when it is positive (the next midnight UTC: ``ObjectService``)."""
        self.catalog = catalog
        self.local = local
        self.stores = stores
        self.now_ns = now_ns
        self.concurrency = max(1, concurrency)
        self.lease_s = lease_s
        self.ttl_round_ns = ttl_round_ns
        # The owner of this process's claims on copies (its gateway id, engine/_leases.py).
        self.owner = owner or LeaseHolder().owner
        # Frees what a release or sweep put in the trash (ObjectService._drain_after_commit).
        self._drain = drain
        self._filling: Counter[str] = Counter()  # holders this process copies now (not helped by itself)
        # Tests: called with "copied" after each blob's local copy is published, before its commit.
        self.fault: Callable[[str], None] = lambda step: None

    # --- holds (recorded by ``ObjectService.hold_blobs``: ``catalog.hot_hold``) ------------------
    async def release(self, holder: str) -> bool:
        """Drop ``holder``; copies no other live hold needs are freed. False if unknown."""
        found = await self.catalog.hot_release(holder, self.now_ns())
        await self._freed()
        return found

    async def sweep(self) -> tuple[list[str], int]:
        """Drop expired holders and free the copies no live hold needs: (holders dropped, copies freed)."""
        dropped: list[str] = []
        freed = 0
        while (await self.catalog.hot_due(self.now_ns()))[0]:
            holders, n = await self.catalog.hot_sweep(self.now_ns())
            dropped += holders
            freed += n
            if len(holders) < 1000:
                break
        # Always (one indexed query when the trash is empty): a copy the scrub dropped is copied
        # again only once the drain has deleted its damaged bytes.
        await self._freed()
        if dropped:
            log.info("hot copies: %d holders expired, %d local copies freed", len(dropped), freed)
        return dropped, freed

    async def _freed(self) -> None:
        if self._drain is not None:
            await self._drain()

    # --- copies -------------------------------------------------------------------------------
    async def fill(
        self,
        holder: str,
        *,
        progress: Callable[[int, int], None] | None = None,
        lease_ns: int | None = None,
        helping: bool = False,
    ) -> FillResult:
        """Copy ``holder``'s held remote blobs that have no local copy (resumable; parallel).
        ``progress(blobs, bytes)`` after each blob. A blob that fails (tier down, damaged) is
        counted and left for a later fill, and so are the other blobs of a tier that did not
        answer; the copy is done when nothing is missing. ``lease_ns``: the claim on the holder
        (taken by this call if another process has it), heartbeated while the copy goes on (so
        another worker does not take it over; if one did, after a stall, the copy stops and
        leaves the rest to it). ``helping``: another worker has the holder (``run_once``): copy
        from the other end of its blob ids, without the lease."""
        self._filling[holder] += 1
        result = FillResult()
        try:
            if lease_ns is None:
                return await self._fill(holder, result, progress, helping)
            await self.catalog.hot_renew(holder, self.now_ns() + lease_ns, owner=self.owner)  # ours now
            owner, lease = self.owner, lease_ns

            async def renew() -> bool:
                return await self.catalog.hot_renew(holder, self.now_ns() + lease, owner=owner, fenced=True)

            filling = self._fill(holder, result, progress, helping)
            try:
                return await while_leased(filling, renew, lease_ns / 1e9, f"hot copy of {holder}")
            except LeaseLost:  # the new holder copies the rest
                return result
        finally:
            self._filling[holder] -= 1
            if not self._filling[holder]:
                del self._filling[holder]

    async def _fill(
        self, holder: str, result: FillResult, progress: Callable[[int, int], None] | None, helping: bool
    ) -> FillResult:
        sem = asyncio.Semaphore(self.concurrency)
        skipped: set[str] = set()
        down: set[str] = set()

        async def mark(ids: list[str], size: int) -> None:
            """Mark a group of published copies cached (one catalog job), then count them."""
            await self.catalog.hot_cached(ids, self.now_ns())
            result.copied += len(ids)
            result.copied_bytes += size
            if progress is not None:
                progress(result.copied, result.copied_bytes)

        published: list[str] = []  # copied, not yet marked
        published_bytes = 0

        async def one(blob: HeldBlob) -> None:
            nonlocal published, published_bytes
            async with sem:
                if blob.tier in down:
                    skipped.add(blob.blob_id)
                    result.failed += 1
                    return
                try:
                    await self._copy(blob)
                except (TierUnavailable, CorruptBlob, OSError) as exc:
                    if isinstance(exc, TierUnavailable):
                        down.add(blob.tier)
                    skipped.add(blob.blob_id)
                    result.failed += 1
                    if len(result.errors) < _MAX_ERRORS:
                        result.errors.append(f"{blob.blob_id}: {exc}")
                    log.warning("hot copy of %s from tier %s failed: %s", blob.blob_id, blob.tier, exc)
                    return
                self.fault("copied")
                published.append(blob.blob_id)
                published_bytes += blob.size_bytes
                if len(published) >= _MARK_BATCH:
                    ids, size = published, published_bytes
                    published, published_bytes = [], 0
                    await mark(ids, size)

        while True:
            page = await self.catalog.hot_missing(holder, _PAGE, descending=helping)
            missing = [b for b in page if b.blob_id not in skipped]
            if not missing:
                break
            try:
                await asyncio.gather(*(one(b) for b in missing))
            finally:  # what was published is marked even if the pass was cut short (or cancelled)
                if published:
                    ids, size = published, published_bytes
                    published, published_bytes = [], 0
                    await mark(ids, size)
            if result.failed:
                break  # retried by a later fill: do not spin on a tier that is down
        result.done = await self.catalog.hot_settle(holder, self.now_ns(), round_ns=self.ttl_round_ns)
        return result

    async def _copy(self, blob: HeldBlob) -> None:
        """Remote blob -> a local blob of the same id, verified (size; the remote's CRC32C). No
        stat first: a local blob of that id (a crashed attempt's, or another worker's) makes the
        put refuse, and is then verified and kept, or replaced."""
        for _ in range(2):
            remote = await self.stores.store(blob.tier)
            chunks = await remote.get(blob.blob_id, 0, None, verify=True)  # whole object: CRC32C checked
            bounded = _bounded(chunks, blob.size_bytes, blob.blob_id)
            try:
                put = await self.local.put(blob.blob_id, bounded)
            except ValueError:  # already there
                info = await self.local.stat(blob.blob_id)
                if info is not None and info.size_bytes == blob.size_bytes and await self.local.verify(blob.blob_id):
                    return
                if info is not None:  # damaged or short: replaced by a fresh copy
                    await self.local.delete(blob.blob_id)
                continue
            finally:
                await bounded.aclose()
                aclose = getattr(chunks, "aclose", None)  # the remote body's connection goes back now
                if aclose is not None:
                    await aclose()
            if put.size_bytes != blob.size_bytes:
                await self.local.delete(blob.blob_id)
                raise CorruptBlob(
                    f"blob {blob.blob_id}: the local copy is not {blob.size_bytes} bytes", resource=blob.blob_id
                )
            return
        raise CorruptBlob(f"blob {blob.blob_id}: its local copy could not be replaced", resource=blob.blob_id)

    async def run_once(self) -> dict[str, int]:
        """The worker: sweep expired holds, then claim and fill ongoing copies, then help the
        copies other processes run (a pin's request fills in one process: the others take the
        other end of its blob ids, so every server process copies)."""
        dropped, freed = await self.sweep()
        lease_ns = int(self.lease_s * 1e9)
        claimable = (await self.catalog.hot_due(self.now_ns()))[1]
        claimed = await self.catalog.hot_claim(self.now_ns(), lease_ns, owner=self.owner) if claimable else []
        leased = await self.catalog.hot_leased(self.now_ns())
        helped = [h for h in leased if h not in self._filling and h not in claimed]
        filled = failed = 0
        for holder, helping in [(h, False) for h in claimed] + [(h, True) for h in helped]:
            try:
                result = await self.fill(holder, lease_ns=None if helping else lease_ns, helping=helping)
            except (TierUnavailable, CorruptBlob, OSError) as exc:
                log.warning("hot copy of %s failed: %s", holder, exc)
                failed += 1
                continue
            filled += result.copied
            failed += result.failed
        return {"expired": len(dropped), "freed": freed, "copied": filled, "failed": failed}


async def _bounded(chunks: AsyncIterator[bytes], size: int, blob_id: str) -> AsyncGenerator[bytes]:
    """``chunks``, refusing more than ``size`` bytes (the local put is then aborted)."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise CorruptBlob(f"blob {blob_id}: the remote object is longer than {size} bytes", resource=blob_id)
        yield chunk
