"""ErasureBlobStore through its BlobStore API, against LocalBlobStore on one directory, same run.

Layouts: 4 drives (2+2) and 6 drives (4+2), drives = directories under one temp dir (so on
one machine they share one device: an erasure-coded PUT writes n/k times the object bytes to
it). Object: 64 MiB, streamed in 1 MiB chunks, default stripe 1 MiB and small-object threshold.

- **put**: MB/s of object data, fsynced (as every BlobStore put);
- **get warm / cold**: full-object ``get``, page cache warm (just written) and cold (every piece
  file evicted with ``posix_fadvise(DONTNEED)`` first, no root needed);
- **degraded get**: the m drives holding the blob's first m data pieces removed (``rmtree``), so
  2+2 decodes everything from parity and 4+2 rebuilds half of each stripe — warm and cold;
- **heal**: the drive of data piece 0 emptied and re-formatted, then ``heal(blob)``; MB/s of
  object data (reads every remaining piece, writes the lost one, fsync).

Every read is checked against the object's CRC32C. Best of ``--repeat`` runs per cell. Ratios are against
LocalBlobStore in the same run.

    .venv/bin/python benchmarks/erasure_store.py            # ~1 minute
    .venv/bin/python benchmarks/erasure_store.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from tierstore.blob import BlobStore, ErasureBlobStore, LocalBlobStore
from tierstore.blob._erasure import placement
from tierstore.blob._protocol import crc32c
from tierstore.drives import DriveSet

MIB = 1024 * 1024
CHUNK = MIB


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for pos in range(0, len(data), CHUNK):
        yield bytes(view[pos : pos + CHUNK])


async def _get_all(store: BlobStore, blob_id: str, expected_crc: int) -> None:
    """Stream the whole blob; check it by CRC32C (awscrt, ~60 GB/s: not what is measured)."""
    crc = 0
    async for chunk in await store.get(blob_id):
        crc = crc32c(chunk, crc)
    if crc != expected_crc:
        raise SystemExit(f"{blob_id}: wrong bytes read back")


def _evict(root: Path) -> None:
    """Drop every file under ``root`` from the page cache (they are clean: fsynced)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


async def _best(repeat: int, size_bytes: int, fn: Callable[[int], Awaitable[None]]) -> float:
    """Best MB/s of ``repeat`` runs of ``fn(run)``."""
    best = 0.0
    for run in range(repeat):
        t0 = time.perf_counter()
        await fn(run)
        best = max(best, size_bytes / (time.perf_counter() - t0) / 1e6)
    return best


def _blob_id(tag: str, run: int) -> str:
    return f"{int(time.time()):08x}{tag:0>8}{run:016x}"


async def bench_local(root: Path, data: bytes, repeat: int) -> dict[str, float]:
    store = LocalBlobStore(root)
    crc = crc32c(data)
    ids = [_blob_id("local", r) for r in range(repeat)]

    async def put(run: int) -> None:
        await store.put(ids[run], _chunks(data))

    async def get(_run: int) -> None:
        await _get_all(store, ids[0], crc)

    async def get_cold(_run: int) -> None:
        _evict(root)
        await _get_all(store, ids[0], crc)

    out = {"put": await _best(repeat, len(data), put)}
    out["get_warm"] = await _best(repeat, len(data), get)
    out["get_cold"] = await _best(repeat, len(data), get_cold)
    return out


async def bench_erasure(root: Path, drives_n: int, parity: int, data: bytes, repeat: int) -> dict[str, float]:
    paths = [root / f"d{i}" for i in range(drives_n)]
    drives = DriveSet.open(paths, parity=parity)
    store = ErasureBlobStore(drives)
    crc = crc32c(data)
    ids = [_blob_id(f"ec{drives_n}", r) for r in range(repeat)]

    async def put(run: int) -> None:
        await store.put(ids[run], _chunks(data))

    async def get(_run: int) -> None:
        await _get_all(store, ids[0], crc)

    async def get_cold(_run: int) -> None:
        _evict(root)
        await _get_all(store, ids[0], crc)

    out = {"put": await _best(repeat, len(data), put)}
    out["get_warm"] = await _best(repeat, len(data), get)
    out["get_cold"] = await _best(repeat, len(data), get_cold)
    if store.take_damaged():
        raise SystemExit("a healthy read reported damage")

    blob_id = ids[0]
    order = placement(blob_id, drives_n)
    gone = order[:parity]  # the first m data pieces
    for d in gone:
        shutil.rmtree(paths[d])
    out["degraded_get_warm"] = await _best(repeat, len(data), get)
    out["degraded_get_cold"] = await _best(repeat, len(data), get_cold)
    if store.take_damaged() != [blob_id]:
        raise SystemExit("a degraded read did not report the blob")
    for d in gone:
        paths[d].mkdir()
        drives.format_drive(d)

    async def heal(run: int) -> None:
        if run:  # empty the drive of data piece 0 again
            shutil.rmtree(paths[order[0]])
            paths[order[0]].mkdir()
            drives.format_drive(order[0])
        report = await store.heal(blob_id)
        if report.lost or not report.healthy or report.shards_rebuilt < 1:
            raise SystemExit(f"heal failed: {report}")

    out["heal"] = await _best(repeat, len(data), heal)
    if not await store.verify(blob_id):
        raise SystemExit("not healthy after heal")
    return out


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    data = os.urandom(args.mib * MIB)
    results: dict[str, dict[str, float]] = {}
    base = Path(args.dir) if args.dir else None
    with tempfile.TemporaryDirectory(dir=base, prefix="tierstore-bench-") as tmp:
        root = Path(tmp)
        results["local"] = await bench_local(root / "local", data, args.repeat)
        results["2+2"] = await bench_erasure(root / "ec4", 4, 2, data, args.repeat)
        shutil.rmtree(root / "ec4")
        results["4+2"] = await bench_erasure(root / "ec6", 6, 2, data, args.repeat)
    return {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "object_mib": args.mib,
        "repeat": args.repeat,
        "results": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="object size in MiB")
    ap.add_argument("--repeat", type=int, default=5, help="runs per cell (best is reported)")
    ap.add_argument("--dir", help="where the temp drive directories go (default: the system temp dir)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = asyncio.run(main_async(args))
    results = report["results"]
    assert isinstance(results, dict)
    local = results["local"]
    print(f"{args.mib} MiB objects, best of {args.repeat}; MB/s (ratio vs LocalBlobStore on one directory)")
    print(f"{'operation':<22}{'local':>10}{'2+2':>20}{'4+2':>20}")
    for op in ("put", "get_warm", "get_cold", "degraded_get_warm", "degraded_get_cold", "heal"):
        ref = local["put"] if op == "heal" else local[op.replace("degraded_", "")]
        cells = []
        for layout in ("2+2", "4+2"):
            value = results[layout][op]
            cells.append(f"{value:>10,.0f} ({value / ref:.2f}x)")
        ref_text = f"{local[op]:,.0f}" if op in local else "-"  # degraded/heal: ratio vs the plain cell
        print(f"{op:<22}{ref_text:>10}{cells[0]:>20}{cells[1]:>20}")
    print("heal ratio is against local put (a rebuild writes one piece of the object)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
