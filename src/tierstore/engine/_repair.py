"""Heal and scrub: walk every blob the catalog references, verify it, rebuild what is missing.

``Repairer.heal`` is what ``tierstore heal`` (through ``POST /_tierstore/admin/heal``) and the
background scrubber run; ``heal_queued`` repairs the blobs that degraded reads and short writes
reported. The walk follows the *catalog's* blob list, not the drives' contents: a blob whose
shards are all damaged on the surviving drives would not show up in a drive scan, but it is in
the catalog, so heal reports it as lost instead of silently skipping it.

Order of a full heal on an erasure set:

1. format every member directory that is present but empty (a replaced drive);
2. copy the small files under ``.tierstore/`` (credentials) onto members that lack them;
3. re-seed the catalog copy on every online member whose copy is not live;
4. ``heal`` every referenced blob (erasure set: rebuild shards; single drive: verify only);
5. check the CRC32C of every body stored inline in the catalog (docs/inline.md); on a mirror a
   damaged one is rewritten from a good copy;
6. with ``verify_encryption`` (``tierstore heal --verify-encryption``, docs/encryption.md): open
   every package of every encrypted version (SSE-S3, SSE-KMS; SSE-C needs the client's key and
   is counted as skipped), each bad one reported as ``sse:<bucket>/<key>@<version>#<package>``
   (``#<part>.<package>`` for a multipart part, ``#key`` when the data key or the binding does
   not open) in ``lost``. This is the one check the CRCs cannot make: a package whose CRC is
   right and whose tag is not (tampering, or a bug).

A blob or inline body that is lost is also named by the objects it belongs to
(``lost_objects``: ``<bucket>/<key>@<version>``), so a report says what to restore.

Progress is a ``HealProgress``; the final one is also written to ``.tierstore/heal-report.json``
on every online drive (or the data dir), so ``admin info`` in any worker process can show the
last result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from tierstore.blob import BlobStore
from tierstore.catalog import VersionRecord
from tierstore.catalog._records import SseVersion, VersionName
from tierstore.crypto import IntegrityError, KeyService, KmsError, PackageOpener, ciphertext_size, derive_part_key
from tierstore.drives import FORMAT_DIR, DriveSet, DriveState, write_file_durably
from tierstore.engine._encryption import open_data_key
from tierstore.engine._health import DriveHealth, StoreHealth
from tierstore.engine._service import stream_blobs
from tierstore.errors import CorruptBlob, InternalError

__all__ = ["HealProgress", "Repairer", "stream_progress"]

log = logging.getLogger("tierstore.heal")

REPORT_FILE = "heal-report.json"
_MAX_LISTED = 100  # ids listed per category in a report (the counts are exact)
_PAGE = 500


class _BlobCatalog(Protocol):
    async def blob_page(self, after: str = "", limit: int = 1000) -> list[tuple[str, int]]: ...

    async def blob_count(self) -> int: ...

    async def blob_known(self, blob_id: str) -> bool: ...

    async def blob_cached(self, blob_id: str) -> bool: ...

    async def hot_lost(self, blob_id: str) -> bool: ...

    async def inline_verify_page(
        self, after: str = "", limit: int = 1000
    ) -> tuple[list[tuple[str, int]], set[str]]: ...

    async def check_inline(self, inline_id: str) -> str: ...

    def take_damaged_inline(self) -> list[str]: ...

    async def versions_of_blob(self, blob_id: str, limit: int = 10) -> list[VersionName]: ...

    async def sse_versions_page(
        self, *, key_id: str | None = None, after: VersionName | None = None, limit: int = 500
    ) -> list[SseVersion]: ...

    async def get_version(
        self, bucket: str, key: str, version_id: str, *, data: bool = False
    ) -> VersionRecord | None: ...


@runtime_checkable
class _MirroredCatalog(Protocol):
    def copies_state(self) -> list[dict[str, Any]]: ...

    async def reseed(self, index: int) -> None: ...


@runtime_checkable
class _HealingStore(Protocol):
    async def heal(self, blob_id: str) -> Any: ...

    def take_damaged(self) -> list[str]: ...


Checkpoint = Callable[[str], Awaitable[bool]]


class _LeaseLost(Exception):
    """A leased scrub's checkpoint answered False: another gateway holds the scrub now."""


async def _no_checkpoint(cursor: str) -> bool:
    return True


@dataclass(slots=True)
class HealProgress:
    """Where a heal or scrub pass stands; JSON-serialisable with ``to_dict``."""

    kind: str = "heal"  # "heal" (tierstore heal), "scrub" (background), "queue" (reported blobs)
    state: str = "running"  # running | done | failed | stopped (a scrub whose lease another gateway took)
    started_s: float = 0.0
    finished_s: float | None = None
    blobs_total: int = 0
    blobs_done: int = 0
    bytes_done: int = 0
    blobs_healthy: int = 0
    blobs_repaired: int = 0
    shards_rebuilt: int = 0
    bytes_written: int = 0
    blobs_degraded: int = 0  # still missing shards afterwards (a drive is offline)
    blobs_lost: int = 0  # fewer good pieces than needed: unreadable (inline bodies included)
    inline_checked: int = 0  # bodies stored in the catalog whose CRC32C was checked
    inline_repaired: int = 0  # of those, rewritten from a good catalog copy (mirror)
    sse_checked: int = 0  # encrypted versions whose every package was opened (--verify-encryption)
    sse_failed: int = 0  # of those, the ones with a package (or key, or binding) that does not open
    sse_skipped: int = 0  # SSE-C (no key here) or the key service refused (disabled key)
    drives_formatted: list[int] = field(default_factory=list)
    catalog_reseeded: list[int] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    lost_objects: list[str] = field(default_factory=list)  # bucket/key@version of what is in ``lost``
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _note(ids: list[str], blob_id: str) -> None:
    if len(ids) < _MAX_LISTED:
        ids.append(blob_id)


class Repairer:
    """Heals one store. ``drives`` is None for a single data directory (``meta_dirs`` then
    names where reports go)."""

    def __init__(
        self,
        catalog: _BlobCatalog,
        blobs: BlobStore,
        *,
        drives: DriveSet | None = None,
        meta_dirs: list[Path] | None = None,
        meta_files: tuple[str, ...] = (),
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.drives = drives
        self._meta_dirs = meta_dirs or []
        self._meta_files = meta_files
        self.current: HealProgress | None = None
        self._task: asyncio.Task[HealProgress] | None = None
        self.kms: KeyService | None = None  # set by server.py: opens data keys for verify_encryption
        # Set by server.py: the live gateways of the registry, for ``info`` (engine/_leases.py).
        self.gateways: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None

    # --- full pass ----------------------------------------------------------------------
    def start(
        self, *, kind: str = "heal", rate_bytes_s: float | None = None, verify_encryption: bool = False
    ) -> asyncio.Task[HealProgress]:
        """Start a pass in the background (or return the one already running in this process)."""
        if self._task is None or self._task.done():
            heal = self.heal(kind=kind, rate_bytes_s=rate_bytes_s, verify_encryption=verify_encryption)
            self._task = asyncio.get_running_loop().create_task(heal)
        return self._task

    async def heal(
        self,
        *,
        kind: str = "heal",
        rate_bytes_s: float | None = None,
        verify_encryption: bool = False,
        resume: str = "",
        checkpoint: Checkpoint | None = None,
    ) -> HealProgress:
        """One full pass. ``rate_bytes_s`` throttles the blob walk (the scrubber's budget);
        ``verify_encryption`` adds step 6 (module docstring). A leased scrub (server.py) passes
        ``checkpoint``, called after each page with the walk's cursor ("b:<blob id>", then
        "i:<inline id>"), which saves it and answers False once the lease is lost (the pass
        stops, state "stopped"); ``resume`` is such a cursor: the walk starts after it."""
        p = HealProgress(kind=kind, started_s=time.time())
        save = checkpoint or _no_checkpoint
        self.current = p
        try:
            if self.drives is not None:
                await asyncio.to_thread(self._prepare_drives, p)
                if isinstance(self.catalog, _MirroredCatalog):
                    await self._reseed_catalog(p)
            p.blobs_total = await self.catalog.blob_count()
            began = time.monotonic()
            walk, _, after = resume.partition(":")
            if walk != "i":
                await self._walk(p, rate_bytes_s, began, after, save)
            await self._walk_inline(p, rate_bytes_s, began, after if walk == "i" else "", save)
            if verify_encryption:
                await self._walk_encrypted(p)
            p.state = "done"
        except _LeaseLost:
            p.state = "stopped"
        except Exception as exc:
            log.exception("%s pass failed", kind)
            p.state, p.error = "failed", f"{type(exc).__name__}: {exc}"
        p.finished_s = time.time()
        log.info(
            "%s pass %s: %d blobs (%d healthy, %d repaired, %d degraded, %d lost), %d shards rebuilt, %.1fs",
            kind,
            p.state,
            p.blobs_done,
            p.blobs_healthy,
            p.blobs_repaired,
            p.blobs_degraded,
            p.blobs_lost,
            p.shards_rebuilt,
            p.finished_s - p.started_s,
        )
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._write_report, p)
        return p

    def _prepare_drives(self, p: HealProgress) -> None:
        drives = self.drives
        assert drives is not None
        for i in range(drives.format.drives):
            if drives.state(i) is DriveState.UNFORMATTED:
                drives.format_drive(i)
                p.drives_formatted.append(i)
                log.info("formatted replacement drive %s as member %d", drives.paths[i], i)
        online = drives.online()
        for name in self._meta_files:
            sources = [drives.paths[i] / FORMAT_DIR / name for i in online]
            source = next((s for s in sources if s.exists()), None)
            if source is None:
                continue
            for i in online:
                target = drives.paths[i] / FORMAT_DIR / name
                if not target.exists():
                    write_file_durably(target, source.read_bytes(), mode=source.stat().st_mode & 0o777)

    async def _reseed_catalog(self, p: HealProgress) -> None:
        drives = self.drives
        catalog = self.catalog
        assert drives is not None and isinstance(catalog, _MirroredCatalog)
        for copy in catalog.copies_state():
            index = int(copy["index"])
            if copy["state"] != "live" and drives.state(index) is DriveState.ONLINE:
                await catalog.reseed(index)
                p.catalog_reseeded.append(index)
                log.info("re-seeded the catalog copy on %s", drives.paths[index])

    async def _walk(
        self, p: HealProgress, rate_bytes_s: float | None, began: float, after: str, save: Checkpoint
    ) -> None:
        while True:
            page = await self.catalog.blob_page(after, _PAGE)
            if not page:
                return
            for blob_id, size_bytes in page:
                await self._heal_one(p, blob_id)
                p.blobs_done += 1
                p.bytes_done += size_bytes
                await _throttle(p, rate_bytes_s, began)
            p.blobs_total = max(p.blobs_total, p.blobs_done)
            after = page[-1][0]
            if not await save(f"b:{after}"):
                raise _LeaseLost

    async def _walk_inline(
        self, p: HealProgress, rate_bytes_s: float | None, began: float, after: str, save: Checkpoint
    ) -> None:
        """Check every inline body: a page at a time on every catalog copy; only the damaged
        ones are looked at again (and, on a mirror, rewritten from a good copy)."""
        while True:
            page, damaged = await self.catalog.inline_verify_page(after, _PAGE)
            if not page:
                return
            for inline_id, size_bytes in page:
                if inline_id in damaged:
                    await self._check_inline(p, inline_id)
                else:
                    p.inline_checked += 1
                p.bytes_done += size_bytes
            await _throttle(p, rate_bytes_s, began)
            after = page[-1][0]
            if not await save(f"i:{after}"):
                raise _LeaseLost

    async def _check_inline(self, p: HealProgress, inline_id: str) -> None:
        outcome = await self.catalog.check_inline(inline_id)
        if outcome == "gone":  # deleted while we walked
            return
        p.inline_checked += 1
        if outcome == "repaired":
            p.inline_repaired += 1
            log.info("%s: repaired inline body %s from another catalog copy", p.kind, inline_id)
        elif outcome == "lost":
            p.blobs_lost += 1
            _note(p.lost, f"inline:{inline_id}")
            log.error("inline body %s of %s is damaged beyond repair", inline_id, await self._name_owners(p, inline_id))

    async def _heal_one(self, p: HealProgress, blob_id: str) -> None:
        if isinstance(self.blobs, _HealingStore):
            report = await self.blobs.heal(blob_id)
            rebuilt = int(report.shards_rebuilt)
            lost = bool(report.lost)
            degraded = not lost and int(report.shards_unavailable) > 0
            p.shards_rebuilt += rebuilt
            p.bytes_written += int(report.bytes_written)
        else:
            rebuilt, degraded = 0, False
            lost = not await self.blobs.verify(blob_id)
        if lost and not await self.catalog.blob_known(blob_id):
            return  # deleted while we walked
        if lost and await self.catalog.blob_cached(blob_id) and await self.catalog.hot_lost(blob_id):
            # A local copy of a remote blob (docs/tiers.md "Hot copies"): the tier still has it;
            # reads go there again and the hot-copy worker copies it anew.
            p.blobs_repaired += 1
            _note(p.repaired, blob_id)
            log.warning("%s: the local copy of remote blob %s was damaged; to be copied again", p.kind, blob_id)
            return
        if lost:
            p.blobs_lost += 1
            _note(p.lost, blob_id)
            log.error("blob %s of %s is damaged beyond repair", blob_id, await self._name_owners(p, blob_id))
        elif degraded:
            p.blobs_degraded += 1
            _note(p.degraded, blob_id)
        elif rebuilt:
            p.blobs_repaired += 1
            _note(p.repaired, blob_id)
            level = logging.DEBUG if p.kind == "heal" else logging.INFO  # a drive rebuild: the report lists them
            log.log(level, "%s: repaired blob %s (%d shards rebuilt)", p.kind, blob_id, rebuilt)
        else:
            p.blobs_healthy += 1

    async def _name_owners(self, p: HealProgress, blob_id: str) -> str:
        """Note the objects a lost blob (or inline body) belongs to; their names, for the log."""
        names = [f"{b}/{k}@{v}" for b, k, v in await self.catalog.versions_of_blob(blob_id)]
        for name in names:
            if name not in p.lost_objects:
                _note(p.lost_objects, name)
        return ", ".join(names) or "no object"

    # --- encrypted versions (verify_encryption) -----------------------------------------------
    async def _walk_encrypted(self, p: HealProgress) -> None:
        after: VersionName | None = None
        while True:
            page = await self.catalog.sse_versions_page(after=after, limit=_PAGE)
            if not page:
                return
            for v in page:
                await self._open_encrypted(p, v.name)
            after = page[-1].name

    async def _open_encrypted(self, p: HealProgress, name: VersionName) -> None:
        """Unwrap the version's data key, verify its binding and open every package of every
        stream (reading its ciphertext with the blob layer's checks on)."""
        bucket, key, version_id = name
        where = f"{bucket}/{key}@{version_id}"
        try:
            record = await self.catalog.get_version(bucket, key, version_id, data=True)
        except CorruptBlob:
            return self._sse_bad(p, where, "inline", "its inline body is unreadable")
        if record is None or not record.meta.encryption:
            return  # deleted or overwritten while we walked
        meta, doc = record.meta, record.meta.encryption
        if doc.get("kind") == "c":
            p.sse_skipped += 1  # the customer's key is not ours to keep
            return
        try:
            data_key, streams = await open_data_key(
                self.kms, doc, bucket=bucket, key=key, version_id=version_id,
                size=meta.size_bytes, part_sizes=meta.parts, customer_key=None,
            )  # fmt: skip
        except InternalError:
            return self._sse_bad(p, where, "key", "its data key or binding does not open")
        except KmsError as exc:
            p.sse_skipped += 1
            log.warning("verify-encryption: %s skipped: %s", where, exc.code)
            return
        package_bytes = int(doc["ps"])
        base = 0
        for stream in streams:
            stream_key = data_key if stream.part_number == 0 else derive_part_key(
                data_key, stream.part_number, stream.nonce_prefix
            )
            sealed = ciphertext_size(stream.plaintext_size, package_bytes=package_bytes)
            opener = PackageOpener(
                stream_key, stream.nonce_prefix, plaintext_size=stream.plaintext_size,
                part_number=stream.part_number, package_bytes=package_bytes,
            )  # fmt: skip
            try:
                async for chunk in self._ciphertext(record, base, sealed):
                    opener.update(chunk)
                opener.finish()
            except IntegrityError as exc:
                package = "?" if exc.package is None else str(exc.package)
                at = package if stream.part_number == 0 else f"{stream.part_number}.{package}"
                return self._sse_bad(p, where, at, f"package {at} does not open")
            except CorruptBlob:
                return self._sse_bad(p, where, "blob", "its blob is unreadable (see the blob report)")
            base += sealed
        p.sse_checked += 1

    async def _ciphertext(self, record: VersionRecord, offset: int, length: int) -> AsyncIterator[bytes]:
        if record.inline_data is not None:
            yield record.inline_data[offset : offset + length]
            return
        async for chunk in stream_blobs(self.blobs, record.blobs, offset, length):
            yield chunk

    def _sse_bad(self, p: HealProgress, where: str, at: str, why: str) -> None:
        p.sse_checked += 1
        p.sse_failed += 1
        _note(p.lost, f"sse:{where}#{at}")
        if where not in p.lost_objects:
            _note(p.lost_objects, where)
        log.error("sse integrity: %s: %s", where, why)  # never a key or a byte of the object

    # --- reported blobs -----------------------------------------------------------------
    async def heal_queued(self) -> HealProgress | None:
        """Heal the blobs and inline bodies that reads or writes reported as damaged (None if
        there were none)."""
        ids = sorted(set(self.blobs.take_damaged())) if isinstance(self.blobs, _HealingStore) else []
        inline_ids = self.catalog.take_damaged_inline()
        if not ids and not inline_ids:
            return None
        p = HealProgress(kind="queue", started_s=time.time(), blobs_total=len(ids))
        for blob_id in ids:
            await self._heal_one(p, blob_id)
            p.blobs_done += 1
        for inline_id in inline_ids:
            await self._check_inline(p, inline_id)
        p.state, p.finished_s = "done", time.time()
        log.info(
            "healed %d reported blobs and %d inline bodies: %d repaired, %d degraded, %d lost",
            len(ids),
            len(inline_ids),
            p.blobs_repaired + p.inline_repaired,
            p.blobs_degraded,
            p.blobs_lost,
        )
        return p

    # --- reports ------------------------------------------------------------------------
    def _report_dirs(self) -> list[Path]:
        if self.drives is None:
            return self._meta_dirs
        return [self.drives.paths[i] / FORMAT_DIR for i in self.drives.online()]

    def _write_report(self, p: HealProgress) -> None:
        data = (json.dumps(p.to_dict(), indent=1) + "\n").encode()
        for d in self._report_dirs():
            with contextlib.suppress(OSError):
                write_file_durably(d / REPORT_FILE, data)

    def last_report(self) -> dict[str, Any] | None:
        for d in self._report_dirs():
            with contextlib.suppress(OSError, ValueError):
                doc: dict[str, Any] = json.loads((d / REPORT_FILE).read_text())
                return doc
        return None

    def health(self) -> StoreHealth:
        """Drive states and capacity now, with the set's quorums (one stat and one statvfs per
        drive): what health probes and metrics read, cheaper than ``info``."""
        if self.drives is not None:
            fmt = self.drives.format
            drives = tuple(
                DriveHealth(d["index"], d["path"], d["state"], d["total_bytes"], d["free_bytes"])
                for d in self.drives.describe()
            )
            mode = "erasure" if fmt.drives >= 4 else "replicas"
            return StoreHealth(mode, drives, fmt.write_quorum, fmt.data_shards)
        single = []
        for i, meta_dir in enumerate(self._meta_dirs):
            usage = _usage(meta_dir) if meta_dir.is_dir() else None
            state = "online" if usage else "offline"
            single.append(DriveHealth(i, str(meta_dir), state, *(usage or (None, None))))
        return StoreHealth("single", tuple(single), len(single), len(single))

    async def info(self) -> dict[str, Any]:
        """What ``tierstore admin info`` prints: drives, their state and capacity, catalog copies."""
        out = await asyncio.to_thread(self._drives_info)  # a stat per drive: off the event loop
        out["blobs"] = await self.catalog.blob_count()
        out["heal_running"] = self.current.to_dict() if self.current and self.current.state == "running" else None
        out["last_heal"] = self.last_report()
        if self.gateways is not None:
            out["gateways"] = await self.gateways()
        return out

    def _drives_info(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.drives is not None:
            fmt = self.drives.format
            out["mode"] = "erasure" if fmt.drives >= 4 else "replicas"
            out["set"] = {
                "set_id": fmt.set_id,
                "drives": fmt.drives,
                "data_shards": fmt.data_shards,
                "parity_shards": fmt.parity,
                "write_quorum": fmt.write_quorum,
                "stripe_bytes": fmt.stripe_bytes,
                "small_object_bytes": fmt.small_object_bytes,
            }
            drives = self.drives.describe()
            if isinstance(self.catalog, _MirroredCatalog):
                copies = {int(c["index"]): c for c in self.catalog.copies_state()}
                for d in drives:
                    c = copies.get(int(d["index"]))
                    d["catalog"] = c["state"] if c else "missing"
            out["drives"] = drives
            online = sum(1 for d in drives if d["state"] == DriveState.ONLINE.value)
            out["online"] = online
            out["writable"] = online >= fmt.write_quorum
            out["readable"] = online >= fmt.data_shards
        else:
            out["mode"] = "single"
            drives = []
            for meta_dir in self._meta_dirs:
                usage = _usage(meta_dir)
                drives.append(
                    {
                        "index": 0,
                        "path": str(meta_dir),
                        "state": "online" if usage else "offline",
                        "total_bytes": usage[0] if usage else None,
                        "free_bytes": usage[1] if usage else None,
                    }
                )
            out["drives"] = drives
        return out


async def _throttle(p: HealProgress, rate_bytes_s: float | None, began: float) -> None:
    """Sleep while the walk is ahead of ``rate_bytes_s`` (the scrubber's budget)."""
    if rate_bytes_s:
        ahead_s = p.bytes_done / rate_bytes_s - (time.monotonic() - began)
        if ahead_s > 0:
            await asyncio.sleep(ahead_s)


def _usage(path: Path) -> tuple[int, int] | None:
    try:
        u = shutil.disk_usage(path)
    except OSError:
        return None
    return u.total, u.free


class _Report(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Report)


async def stream_progress(
    task: asyncio.Task[R], current: Callable[[], R | None], interval_s: float = 0.5
) -> AsyncIterator[bytes]:
    """NDJSON lines: the progress every ``interval_s`` while ``task`` runs, then the final report.
    (A heal's, or a dataset archive's: anything with ``to_dict``.)

    The pass is shielded: a client that goes away stops the stream, not the heal."""
    while not task.done():
        p = current()
        if p is not None:
            yield (json.dumps(p.to_dict()) + "\n").encode()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), interval_s)
    yield (json.dumps(task.result().to_dict()) + "\n").encode()
