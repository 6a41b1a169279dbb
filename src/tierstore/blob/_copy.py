"""Copy blobs by id from one store into an object store: the data half of ``tierstore admin
migrate --store`` (docs/scale-out.md "Migrating"). The source is left as it was.

Blobs are immutable and named by id, so a copy is the same id in the target. Each blob is read
twice from the source, both times verified by its own checks: once to learn its CRC32C and size
(compared with the size the catalog holds), once streamed into the target's ``put`` with that
CRC32C, which the target checks before the object exists (``BadDigest`` and nothing stored
otherwise) and records as ``tierstore-crc32c``. Resumable: a blob whose object is already there
with the same size and the same recorded CRC32C is a finished copy of these bytes (a put that
did not finish leaves no object), and is skipped; an object of another size or CRC32C under the
id (a foreign or torn object) is replaced. Memory: one chunk per blob in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tierstore.blob._protocol import BlobStore, crc32c
from tierstore.blob._s3 import S3BlobStore
from tierstore.errors import CorruptBlob

__all__ = ["CRC_META", "BlobCopyReport", "copy_blobs"]

CRC_META = "tierstore-crc32c"


@dataclass(slots=True)
class BlobCopyReport:
    copied: int = 0  # blobs put by this run
    present: int = 0  # blobs a previous run had copied (same size and CRC32C): skipped
    bytes_copied: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (blob id, why): the source is damaged or differs


async def _source_crc(source: BlobStore, blob_id: str) -> tuple[str, int]:
    crc, size = 0, 0
    async for chunk in await source.get(blob_id):
        crc = crc32c(chunk, crc)
        size += len(chunk)
    return f"{crc:08x}", size


async def _copy_one(
    source: BlobStore, target: S3BlobStore, blob_id: str, size_bytes: int, report: BlobCopyReport
) -> None:
    try:
        crc, size = await _source_crc(source, blob_id)
    except CorruptBlob as exc:
        report.failed.append((blob_id, f"the local copy is damaged: {exc}"))
        return
    if size != size_bytes:
        report.failed.append((blob_id, f"the local copy has {size} bytes, the catalog says {size_bytes}"))
        return
    found = await target.stat(blob_id)
    if found is not None:
        meta = await target.head_meta(blob_id) or {}
        if found.size_bytes == size and meta.get(CRC_META) == crc:
            report.present += 1
            return
        await target.delete(blob_id)  # not these bytes: a foreign or torn object under the id
    info = await target.put(blob_id, await source.get(blob_id), meta={CRC_META: crc})
    if info.size_bytes != size:  # put checked the CRC32C of what it sent; the size is the store's answer
        report.failed.append((blob_id, f"the store holds {info.size_bytes} bytes of {size}"))
        return
    report.copied += 1
    report.bytes_copied += size


async def copy_blobs(
    source: BlobStore,
    target: S3BlobStore,
    blobs: Iterable[tuple[str, int]],
    *,
    concurrency: int = 4,
    on_blob: Callable[[int], None] = lambda _n: None,
) -> BlobCopyReport:
    """Copy every (blob id, size) of ``blobs`` from ``source`` into ``target``, ``concurrency`` at
    a time; ``on_blob(size)`` after each. Blobs that cannot be copied are listed in the report's
    ``failed``; the target being unreachable raises (``TierUnavailable``): rerun to resume."""
    report = BlobCopyReport()
    todo = iter(blobs)

    async def worker() -> None:
        for blob_id, size_bytes in todo:  # one shared iterator: each blob taken once
            await _copy_one(source, target, blob_id, size_bytes, report)
            on_blob(size_bytes)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, concurrency)):
            group.create_task(worker())
    return report
