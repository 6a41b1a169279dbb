"""The tier data path in the engine (docs/tiers.md): one remote blob store per tier, the
mover's one-version move, and the outbox loop that deletes remote objects.

- ``TierStores``: an ``S3BlobStore`` per tier, made lazily from the registry
  (``TierService.get_config``, the SSRF guard honouring the tier's ``allow_private`` at each
  (re)connection), re-checked at most every ``ttl_s`` and replaced when the tier's configuration
  changes, dropped when it is removed.
- ``Mover.transition``: for each local blob of a version (or its inline body, as a new blob):
  a verified local read computes the CRC32C, the blob streams to ``prefix/ID`` with the remote
  metadata of the design, a HEAD checks what landed; then one catalog transaction
  (``transition_commit``) switches the version. The local copy goes to the trash in that
  transaction and is freed after it. A version that changed meanwhile: the remote objects go
  to the outbox.
- ``Mover.drain_outbox``: deletes queued remote objects, backing off (exponential, capped) per
  entry while a tier does not answer; ``sweep_remote_orphans``: objects under a tier's prefix
  that the catalog does not name, older than the grace period (a crash between the remote put
  and the commit).
"""

from __future__ import annotations

import functools
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from awscrt.checksums import crc32c

from tierstore.blob import BlobStore, S3BlobStore, S3StoreConfig, check_endpoint
from tierstore.catalog import InlineMove, OutboxEntry, SqliteCatalog, VersionRecord
from tierstore.engine._tiers import NoSuchTier, TierConfig
from tierstore.errors import CorruptBlob, InternalError, InvalidRequest, TierUnavailable
from tierstore.runtime import new_blob_id

__all__ = ["Mover", "TierStores", "remote_meta"]

log = logging.getLogger("tierstore.mover")

OUTBOX_BACKOFF_BASE_S = 2.0
OUTBOX_BACKOFF_MAX_S = 600.0


class TierStores:
    """One ``S3BlobStore`` per tier, from the registry (module docstring)."""

    def __init__(
        self,
        get_config: Callable[[str], TierConfig],
        *,
        ttl_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        config: Callable[[TierConfig], S3StoreConfig] | None = None,
    ) -> None:
        self._get_config = get_config
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._config = config or store_config
        self._stores: dict[str, tuple[float, TierConfig, S3BlobStore]] = {}

    def config(self, name: str) -> TierConfig:
        return self._entry(name)[1]

    def store(self, name: str) -> S3BlobStore:
        return self._entry(name)[2]

    def _entry(self, name: str) -> tuple[float, TierConfig, S3BlobStore]:
        now = self._monotonic()
        hit = self._stores.get(name)
        if hit is not None and hit[0] > now:
            return hit
        try:
            cfg = self._get_config(name)
        except NoSuchTier:
            self._stores.pop(name, None)
            raise
        if hit is not None and hit[1] == cfg:
            entry = (now + self.ttl_s, cfg, hit[2])
        else:
            guard = functools.partial(check_endpoint, allow_private=cfg.allow_private)
            entry = (now + self.ttl_s, cfg, S3BlobStore(self._config(cfg), endpoint_guard=guard))
        self._stores[name] = entry
        return entry

    def forget(self, name: str | None = None) -> None:
        if name is None:
            self._stores.clear()
        else:
            self._stores.pop(name, None)


def store_config(cfg: TierConfig) -> S3StoreConfig:
    return S3StoreConfig(
        endpoint=cfg.endpoint,
        bucket=cfg.bucket,
        prefix=cfg.prefix,
        access_key=cfg.access_key_id if cfg.secret_key is not None else None,
        secret_key=cfg.secret_key,
        region=cfg.region,
    )


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


@dataclass(slots=True)
class _Written:
    blob_id: str
    size_bytes: int


class Mover:
    """Moves versions to tiers and deletes remote objects no one references (module docstring)."""

    def __init__(
        self,
        catalog: SqliteCatalog,
        local: BlobStore,
        stores: TierStores,
        *,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.local = local
        self.stores = stores
        # Tests: called at "uploaded" (every remote put done, before the commit) and
        # "committed" (after the commit, before the local bytes are freed).
        self.fault: Callable[[str], None] = fault or (lambda step: None)
        self.moved_bytes = 0
        self.errors = 0
        self.last_error: str | None = None

    async def transition(self, bucket: str, key: str, version_id: str, tier: str) -> bool:
        """Move version ``version_id`` of ``key`` to ``tier``; False when there was nothing to do
        (already there, or the version is gone). Idempotent; crash-safe at every step."""
        record = self.catalog.get_version(bucket, key, version_id, data=True)
        if record is None or record.is_delete_marker:
            return False
        self.stores.config(tier)  # NoSuchTier before anything moves
        elsewhere = [b for b in record.blobs if b.tier not in (None, tier)]
        if elsewhere:
            raise InvalidRequest(
                f"The object's bytes are in tier {elsewhere[0].tier}; moving between tiers is not supported."
            )
        local = [b for b in record.blobs if b.tier is None]
        if not local and record.inline_id is None:
            if record.meta.storage_class == tier:
                return False
            # Its blobs are there already (shared with a moved copy): only the class changes.
            return await self.catalog.transition_commit(bucket, key, version_id, tier, [])
        remote = self.stores.store(tier)
        written: list[_Written] = []
        try:
            for ref in local:
                await self._upload(remote, record, ref.blob_id, ref.size_bytes)
                written.append(_Written(ref.blob_id, ref.size_bytes))
            inline = None
            if record.inline_id is not None:
                assert record.inline_data is not None
                body = record.inline_data
                new_id = new_blob_id()
                meta = remote_meta(record, len(body), crc32c(body))
                await self._put_checked(remote, new_id, _once(body), len(body), meta)
                written.append(_Written(new_id, len(body)))
                inline = InlineMove(record.inline_id, new_id, len(body))
            self.fault("uploaded")
            ok = await self.catalog.transition_commit(bucket, key, version_id, tier, [b.blob_id for b in local], inline)
        except (TierUnavailable, CorruptBlob) as exc:
            self.errors += 1
            self.last_error = str(exc)
            raise
        if not ok:
            # The version changed meanwhile. A new blob (from an inline body) is no one's: the
            # outbox deletes it. A copy of a blob the catalog still names is left to the orphan
            # sweep, which takes it only once no one names the id (the outbox could race a retry
            # that reuses it).
            if inline is not None:
                await self.catalog.outbox_add(tier, [inline.blob_id])
            return False
        self.moved_bytes += sum(w.size_bytes for w in written)
        self.fault("committed")
        return True

    async def _upload(self, remote: S3BlobStore, record: VersionRecord, blob_id: str, size: int) -> None:
        await self.upload_blob(remote, blob_id, size, lambda crc: remote_meta(record, size, crc))

    async def upload_blob(
        self, remote: S3BlobStore, blob_id: str, size: int, describe: Callable[[int], dict[str, str]]
    ) -> None:
        """Local blob ``blob_id`` -> the remote object of the same id, verified; ``describe(crc)``:
        its remote metadata. A remote object left by an earlier attempt is kept if it is this
        blob (size and CRC32C), else replaced. (Also the dataset archive's copy step.)"""
        crc = 0
        read = 0
        async for chunk in await self.local.get(blob_id, 0, size, verify=True):
            crc = crc32c(chunk, crc)
            read += len(chunk)
        if read != size:
            raise CorruptBlob(f"blob {blob_id}: {read} of {size} bytes read", resource=blob_id)
        meta = describe(crc)
        found = await remote.head_meta(blob_id)
        if found is not None:
            if _matches(found, size, crc):
                return
            await remote.delete(blob_id)
        chunks = await self.local.get(blob_id, 0, size, verify=True)
        await self._put_checked(remote, blob_id, chunks, size, meta)

    async def upload_body(self, remote: S3BlobStore, blob_id: str, body: bytes, meta: dict[str, str]) -> None:
        """A body from memory (an inline body) -> the new remote object ``blob_id``, verified."""
        await self._put_checked(remote, blob_id, _once(body), len(body), meta)

    @staticmethod
    async def _put_checked(
        remote: S3BlobStore, blob_id: str, chunks: AsyncIterator[bytes], size: int, meta: dict[str, str]
    ) -> None:
        await remote.put(blob_id, chunks, meta=meta)  # ETag against the MD5 of what was sent; CRC32C given
        found = await remote.head_meta(blob_id)
        if found is None or not _matches(found, size, int(meta["tierstore-crc32c"], 16)):
            raise CorruptBlob(f"blob {blob_id}: the remote object does not match what was sent", resource=blob_id)

    # --- the outbox -------------------------------------------------------------------------
    async def drain_outbox(self, now_ns: int | None = None) -> dict[str, int]:
        """Delete the remote objects due in the outbox; entries of a tier that does not answer
        are retried later (exponential backoff from 2 s, capped at 10 minutes)."""
        deleted = failed = 0
        now = time.time_ns() if now_ns is None else now_ns
        down: set[str] = set()
        while True:
            due = [e for e in self.catalog.outbox_due(now, 200) if e.tier not in down]
            if not due:
                return {"deleted": deleted, "failed": failed}
            done: list[OutboxEntry] = []
            retry: list[OutboxEntry] = []
            for entry in due:
                if entry.tier in down:
                    retry.append(entry)
                    continue
                try:
                    await self.stores.store(entry.tier).delete(entry.blob_id)
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
                await self.catalog.outbox_done(done)
                deleted += len(done)
            if retry:
                await self.catalog.outbox_retry(retry, lambda attempts: now + _backoff_ns(attempts))
                failed += len(retry)

    async def sweep_remote_orphans(self, tier: str, *, grace_s: float, now_s: float | None = None) -> int:
        """Delete objects under ``tier``'s prefix that the catalog does not name and that are
        older than ``grace_s`` (their ids carry their creation second). Returns how many."""
        now = time.time() if now_s is None else now_s
        remote = self.stores.store(tier)
        removed = 0
        async for info in remote.scan():
            try:
                born_s = int(info.blob_id[:8], 16)
            except ValueError:
                continue
            if now - born_s < grace_s or self.catalog.remote_blob_known(tier, info.blob_id):
                continue
            await remote.delete(info.blob_id)
            removed += 1
        if removed:
            log.info("tier %s: removed %d orphan remote objects", tier, removed)
        return removed


def _backoff_ns(attempts: int) -> int:
    return int(min(OUTBOX_BACKOFF_MAX_S, OUTBOX_BACKOFF_BASE_S * 2 ** min(attempts - 1, 20)) * 1e9)


def _matches(found: Mapping[str, str], size: int, crc: int) -> bool:
    return found.get("tierstore-blob-size") == str(size) and found.get("tierstore-crc32c") == f"{crc:08x}"


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
