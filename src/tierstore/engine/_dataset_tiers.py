"""A dataset version's bytes moved or held as a whole (docs/tiers.md "Dataset archive", "Job
pins"): ``tierstore dataset archive NAME@N --to CLASS`` and ``tierstore dataset pin NAME@N --job JOB``.

**Pins** are hot copies (engine/_hot.py) under the holder ``pin:JOB/NAME@N``: every blob the
version names is held (local ones need no copy, and keep their bytes as the copy if they are
moved to a tier later), and the remote ones are copied locally now, by the request
(``pin_version``: the primitive's parallel, resumable, verified fill, under the holder's lease,
which keeps the hot-copy worker off it meanwhile and lets it take over if the request dies). Reads prefer the
copies; ``unpin`` or the TTL frees them.

**Archive**:

Datasets name blobs by id, so the archive moves *blobs*, local ones and ones in another tier
(tier -> tier), through the mover's steps for each (``Mover.upload_blob``: a verified read — of
the local blob, or of the other tier's object, checked against the CRC32C its metadata records
—, the copy, checked by its ETag or a HEAD of size and CRC32C), then one catalog transaction per
batch (``blobs_to_tier``: the blobs get the tier, their local copies go to the trash, their
copies in another tier to that tier's outbox) and only then the trash drain frees the local
bytes. A blob in the target tier already is skipped, whether or not it also has a local copy
(a restore's or a pin's: ``blob_tiers`` reports it in its tier); one whose old copy still waits
in the target's outbox is refused until that delete has run (retry), as the mover does. Every version that
shares a blob reads it through the tier from then on (its class stays its own, as for a copy that
shares moved blobs). An inline body the version pins (docs/inline.md) becomes a new remote blob,
as the mover does for an inline version; the manifest is rewritten to name it, and one
transaction (``dataset_inline_to_tier``) switches the version to the new manifest, references
the new blobs and drops the body's pin.

Parallel (``concurrency`` copies in flight), resumable (a blob already in the tier and a row
that no longer names an inline body are skipped; a crash leaves at most one batch copied and not
committed, which the next run keeps: remote objects are found by id and checked), and observable
(``MoveProgress``, streamed to the client as NDJSON by the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from awscrt.checksums import crc32c

from tierstore.catalog import DatasetRecord, InlineMove
from tierstore.errors import (
    InternalError,
    InvalidArgument,
    InvalidRequest,
    NoSuchEntity,
    TierstoreError,
    TierUnavailable,
)
from tierstore.runtime import new_blob_id

if TYPE_CHECKING:
    import pyarrow as pa

    from tierstore.engine._service import ObjectService

__all__ = ["MoveProgress", "NoSuchPin", "archive_version", "check_job", "pin_holder", "pin_version"]

log = logging.getLogger("tierstore.datasets")

BLOB_BATCH = 256  # blobs copied, then committed in one transaction
INLINE_BATCH = 50_000  # inline bodies per manifest rewrite (a crash loses at most this many copies)
_MANIFEST_CHUNK = 1 << 20


PIN_PREFIX = "pin:"
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+-]{0,127}")


class NoSuchPin(NoSuchEntity):
    """The job holds no pin of that dataset version."""


def check_job(job: str) -> str:
    """A job name: 1-128 of letters, digits and ``._:=+-``, starting with a letter or digit."""
    if not _JOB.fullmatch(job):
        raise InvalidArgument(f"Bad job name {job[:40]!r}: 1-128 letters, digits and ._:=+- (no / or @).")
    return job


def pin_holder(job: str, ref: str) -> str:
    """The hot-copy holder of job ``job``'s pin of ``NAME@N``."""
    return f"{PIN_PREFIX}{check_job(job)}/{ref}"


def parse_holder(holder: str) -> tuple[str, str] | None:
    """(job, NAME@N) of a pin's holder; None for another holder."""
    if not holder.startswith(PIN_PREFIX) or "/" not in holder:
        return None
    job, _, ref = holder[len(PIN_PREFIX) :].partition("/")
    return job, ref


@dataclass(slots=True)
class MoveProgress:
    """Where a move of a dataset version's bytes stands (``to_dict``: the NDJSON line).
    ``items``: distinct blobs and inline bodies the version names; ``skipped``: already where
    they should be when the run began; ``done`` counts those too."""

    ref: str
    action: str  # archive | pin
    tier: str  # archive: where to; pin: the job
    state: str = "running"  # running | done | failed
    items: int = 0
    bytes: int = 0
    done: int = 0
    done_bytes: int = 0
    skipped: int = 0
    error: dict[str, str] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "ref": self.ref, "action": self.action, "tier": self.tier, "state": self.state, "items": self.items,
            "bytes": self.bytes, "done": self.done, "done_bytes": self.done_bytes, "skipped": self.skipped,
        }  # fmt: skip
        if self.error is not None:
            doc["error"] = self.error
        return doc

    def fail(self, exc: TierstoreError) -> MoveProgress:
        self.state = "failed"
        self.error = {"code": exc.code, "message": exc.message}
        return self


@dataclass(slots=True)
class _Row:
    """What a remote object's metadata says of the first row that reads a blob."""

    bucket: str
    key: str
    version_id: str
    etag: str
    object_size: int | None  # None: the row is a range of its object
    encrypted: str | None

    def meta(self, blob_size: int, crc: int) -> dict[str, str]:
        """As ``engine._mover.remote_meta`` describes a version's blob."""
        meta = {
            "tierstore-bucket": self.bucket,
            "tierstore-key": urllib.parse.quote(self.key, safe=""),
            "tierstore-version-id": self.version_id,
            "tierstore-etag": self.etag.strip('"'),
            "tierstore-blob-size": str(blob_size),
            "tierstore-crc32c": f"{crc:08x}",
        }
        if self.object_size is not None:
            meta["tierstore-object-size"] = str(self.object_size)
        if self.encrypted:
            meta["tierstore-encrypted"] = self.encrypted
        return meta


def _row(table: pa.Table, r: int, has_enc: bool) -> _Row:
    col = table.column
    enc = col("enc")[r].as_py() if has_enc else None
    kind = str(json.loads(enc).get("e", {}).get("kind", "e")) if enc else None
    offset = col("offset")[r].as_py()
    return _Row(
        col("bucket")[r].as_py(), col("key")[r].as_py(), col("version_id")[r].as_py(), col("etag")[r].as_py(),
        int(col("size")[r].as_py()) if offset is None else None, kind,
    )  # fmt: skip


def named(locs: Sequence[str]) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """The distinct blobs (id -> (size, first row)) and inline bodies (id -> first row) that
    manifest locations ``locs`` read."""
    blobs: dict[str, tuple[int, int]] = {}
    inline: dict[str, int] = {}
    for r, loc in enumerate(locs):
        if loc.startswith("i:"):
            inline.setdefault(loc[2:], r)
        elif len(loc) > 2:
            for piece in loc[2:].split(","):
                blob_id, _, size = piece.rpartition(":")
                blobs.setdefault(blob_id, (int(size), r))
    return blobs, inline


async def archive_version(
    service: ObjectService,
    table_name: str,
    record: DatasetRecord,
    manifest: bytes,
    tier: str,
    progress: MoveProgress,
    *,
    concurrency: int = 8,
) -> MoveProgress:
    """Move every blob and inline body ``record`` (of ``table_name``) names to ``tier``
    (module docstring). ``manifest``: its Parquet bytes. Returns ``progress``, done or failed
    (a ``TierstoreError`` fails it; what was committed before stays moved)."""
    from tierstore._parquet import read_parquet

    try:
        table = await asyncio.to_thread(read_parquet, manifest)
        has_enc = "enc" in table.column_names
        blobs, inline = named(table.column("loc").to_pylist())
        # Where each blob is: local (absent), in ``tier`` already (a local copy of it, a restore's
        # or a pin's, does not matter), or in another tier (moved from there, tier -> tier).
        where = {b: t.tier for b, t in (await service.catalog.blob_tiers(list(blobs))).items()}
        todo = [b for b in blobs if where.get(b) != tier]
        progress.items = len(blobs) + len(inline)
        sizes = table.column("size").to_pylist()
        inline_bytes = {i: int(sizes[r]) for i, r in inline.items()}  # the sample's size (not its stored bytes)
        progress.bytes = sum(s for s, _ in blobs.values()) + sum(inline_bytes.values())
        there = [b for b in blobs if where.get(b) == tier]
        progress.skipped = progress.done = len(there)
        progress.done_bytes = sum(blobs[b][0] for b in there)
        remote = await service.tier_stores.store(tier)
        mover = service.mover
        gate = asyncio.Semaphore(concurrency)

        async def bounded(step: Awaitable[None]) -> None:
            async with gate:
                await step

        async def run(steps: Sequence[Awaitable[None]]) -> list[BaseException | None]:
            return list(await asyncio.gather(*(bounded(s) for s in steps), return_exceptions=True))

        for start in range(0, len(todo), BLOB_BATCH):
            batch = todo[start : start + BLOB_BATCH]
            waiting = await service.catalog.outbox_holds(tier, batch)
            if waiting:  # an old copy in the target being deleted could take the new one (as the mover)
                raise TierUnavailable(f"Blob {waiting}'s old copy in tier {tier} is still being deleted; retry.")
            results = await run([
                mover.upload_blob(remote, b, blobs[b][0], _describe(table, blobs[b], has_enc), where.get(b))
                for b in batch
            ])  # fmt: skip
            copied = [b for b, exc in zip(batch, results, strict=True) if exc is None]
            lost = await service.catalog.blobs_to_tier(tier, [(b, where.get(b)) for b in copied]) if copied else []
            if lost:  # no longer referenced (the version was deleted meanwhile): no one's
                await service.catalog.outbox_add(tier, lost)
            moved = sum(blobs[b][0] for b in copied)  # counted in tier status by blobs_to_tier
            progress.done += len(copied)
            progress.done_bytes += moved
            await service.drain_trash()
            _raise_first(results)
        if inline:
            await _archive_inline(service, table_name, record, table, inline, inline_bytes, tier, progress, run)
    except TierstoreError as exc:
        with contextlib.suppress(Exception):  # the count is best effort, as the mover's
            await service.catalog.tier_error(tier, f"{type(exc).__name__}: {exc}", time.time_ns())
        log.warning("archive of %s to %s stopped: %s", progress.ref, tier, exc)
        return progress.fail(exc)
    except Exception:  # a bug: the stream still ends with a failed record, not cut short
        log.exception("archive of %s to %s failed", progress.ref, tier)
        return progress.fail(InternalError(f"The archive of {progress.ref} failed; see the server's log."))
    progress.state = "done"
    log.info("archived %s to %s: %d items, %d already there", progress.ref, tier, progress.items, progress.skipped)
    return progress


async def pin_version(service: ObjectService, holder: str, progress: MoveProgress) -> MoveProgress:
    """Copy locally the remote blobs ``holder`` (already held: ``ObjectService.hold_blobs``)
    holds (module docstring). Returns ``progress``: done, or failed when some blob could not be
    copied (the hot-copy worker keeps trying; running the pin again follows it)."""
    info = await service.hold_info(holder)
    if info is not None:
        progress.items, progress.bytes = info.blobs, info.bytes
        progress.skipped = progress.done = info.cached_blobs
        progress.done_bytes = info.cached_bytes
    base, base_bytes = progress.done, progress.done_bytes

    def advanced(blobs: int, size: int) -> None:
        progress.done, progress.done_bytes = base + blobs, base_bytes + size

    try:
        result = await service.fill_hold(holder, progress=advanced)  # renews the worker's lease meanwhile
    except TierstoreError as exc:
        return progress.fail(exc)
    except Exception:  # a bug: the stream still ends with a failed record
        log.exception("pin %s failed", holder)
        return progress.fail(InternalError(f"The pin of {progress.ref} failed; see the server's log."))
    if not result.done:
        first = result.errors[0] if result.errors else "unknown"
        return progress.fail(TierUnavailable(
            f"{result.failed} of {progress.items} blobs of {progress.ref} could not be copied yet (first: {first});"
            " the server keeps trying: run the pin again to follow it."
        ))  # fmt: skip
    info = await service.hold_info(holder)  # the worker may have copied some too (before the lease was taken)
    if info is not None:
        progress.done, progress.done_bytes = info.cached_blobs, info.cached_bytes
    progress.state = "done"
    log.info("pinned %s: %d blobs, %d already local", holder, progress.items, progress.skipped)
    return progress


def _describe(table: pa.Table, blob: tuple[int, int], has_enc: bool) -> Callable[[int], dict[str, str]]:
    size, r = blob
    row = _row(table, r, has_enc)
    return lambda crc: row.meta(size, crc)


def _raise_first(results: Sequence[BaseException | None]) -> None:
    for exc in results:
        if exc is not None:
            raise exc


async def _archive_inline(
    service: ObjectService,
    table_name: str,
    record: DatasetRecord,
    table: pa.Table,
    inline: dict[str, int],
    inline_bytes: dict[str, int],
    tier: str,
    progress: MoveProgress,
    run: Callable[[Sequence[Awaitable[None]]], Awaitable[list[BaseException | None]]],
) -> None:
    """The inline bodies: copied as new remote blobs, then per ``INLINE_BATCH`` a rewritten
    manifest and one transaction (module docstring)."""
    remote = await service.tier_stores.store(tier)
    has_enc = "enc" in table.column_names
    ids = list(inline)
    manifest_blob = record.manifest_blob
    source = table  # the rows' other columns, for the remote metadata

    async def copy(inline_id: str, body: bytes, moves: list[InlineMove]) -> None:
        move = InlineMove(inline_id, new_blob_id(), len(body))
        meta = _row(source, inline[inline_id], has_enc).meta(len(body), crc32c(body))
        await service.mover.upload_body(remote, move.blob_id, body, meta)
        moves.append(move)

    for start in range(0, len(ids), INLINE_BATCH):
        batch = ids[start : start + INLINE_BATCH]
        bodies = await service.catalog.inline_bodies(batch)  # verified, as a GET reads them
        moves: list[InlineMove] = []
        results = await run([copy(i, bodies[i], moves) for i in batch if i in bodies])
        if moves:
            table = _relocated(table, {m.inline_id: f"b:{m.blob_id}:{m.size_bytes}" for m in moves})
            new_manifest, size = await _write_manifest(service, table)
            ok = await service.catalog.dataset_inline_to_tier(
                table_name, record.name, record.version, (manifest_blob, (new_manifest, size)), tier, moves
            )
            if not ok:  # another archive (or a delete) changed the version first: these copies are no one's
                await service.blobs.delete(new_manifest)
                await service.catalog.outbox_add(tier, [m.blob_id for m in moves])
                raise InvalidRequest(f"{progress.ref} changed while it was archived; run the archive again.")
            manifest_blob = new_manifest
            progress.done += len(moves)
            progress.done_bytes += sum(inline_bytes[m.inline_id] for m in moves)
            await service.drain_trash()
        _raise_first(results)
        missing = [i for i in batch if i not in bodies]
        if missing:
            raise InvalidRequest(f"{len(missing)} inline bodies of {progress.ref} are missing.")


def _relocated(table: pa.Table, new_locs: dict[str, str]) -> pa.Table:
    import pyarrow as pa

    i = table.column_names.index("loc")
    locs = [new_locs.get(loc[2:], loc) if loc.startswith("i:") else loc for loc in table.column("loc").to_pylist()]
    out = table.set_column(i, "loc", pa.array(locs, type=pa.string()))
    return out.replace_schema_metadata(table.schema.metadata)


async def _write_manifest(service: ObjectService, table: pa.Table) -> tuple[str, int]:
    """``table`` as a new manifest blob (durable, not yet referenced): its id and size."""
    import pyarrow.parquet as pq

    def encode() -> bytes:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", row_group_size=65_536)
        return buf.getvalue()

    data = await asyncio.to_thread(encode)
    blob_id = new_blob_id()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), _MANIFEST_CHUNK):
            yield data[start : start + _MANIFEST_CHUNK]

    await service.blobs.put(blob_id, chunks())
    return blob_id, len(data)
