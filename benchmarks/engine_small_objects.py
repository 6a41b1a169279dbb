"""In-process ObjectService small PUT/GET micro-benchmark (no HTTP).

16 concurrent tasks PUT (then GET) distinct 4 KiB objects through ObjectService on a real data
dir (LocalBlobStore + SqliteCatalog) or a 4-drive erasure set (ErasureBlobStore + mirrored
catalog). Every PUT is durable before it returns (fsync'd blob + synchronous=FULL commit).
Reports wall us/op, ops/s and process CPU us/op (all threads: what the server would burn).
This is the engine's share of a small request; ``s3_side_by_side.py`` measures the whole path
over HTTP against SeaweedFS. Used to choose the inline threshold (docs/inline.md).

    .venv/bin/python benchmarks/engine_small_objects.py --layout single --size 4096 --ops 3000
    .venv/bin/python benchmarks/engine_small_objects.py --layout drives4 --inline-max 0   # inline off
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tierstore.blob import ErasureBlobStore, LocalBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.drives import DriveSet
from tierstore.engine import ObjectService


def build(root: Path, layout: str, inline_max: int | None) -> tuple[ObjectService, SqliteCatalog]:
    svc_kw: dict[str, object] = {}
    if inline_max is not None and "inline_max_bytes" in inspect.signature(ObjectService).parameters:
        svc_kw["inline_max_bytes"] = inline_max
    if layout == "single":
        catalog = SqliteCatalog(root / "catalog.db")
        blobs = LocalBlobStore(root)
    else:
        n = int(layout.removeprefix("drives"))
        drives = DriveSet.open([root / f"d{i}" for i in range(n)])
        SqliteCatalog.reconcile(drives)
        catalog = SqliteCatalog.on_drives(drives)
        blobs = ErasureBlobStore(drives)  # type: ignore[assignment]
    return ObjectService(catalog, blobs, **svc_kw), catalog  # type: ignore[arg-type]


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="ts-small-put-", dir=args.dir))
    try:
        svc, catalog = build(root, args.layout, args.inline_max)
        await svc.create_bucket("bench")
        data = os.urandom(args.size)
        # warm up (schema pages, connections, thread pools)
        for i in range(50):
            await svc.put_object("bench", f"warm/{i}", one(data))
        counter = iter(range(args.ops))

        async def putter() -> None:
            for i in counter:
                await svc.put_object("bench", f"k/{i:08d}", one(data))

        async def getter() -> None:
            for i in counter:
                _, body = await svc.read_object("bench", f"k/{i:08d}")
                assert len(body) == args.size

        for name, worker in (("put", putter), ("get", getter)):
            counter = iter(range(args.ops))
            b0, j0 = getattr(catalog, "write_batches", 0), getattr(catalog, "write_jobs", 0)
            c0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(
                f"{args.layout:8s} {name} {args.size:>7d} B x{args.concurrency}: "
                f"{wall / args.ops * 1e6:7.1f} us/op wall, {args.ops / wall:8.0f} ops/s, "
                f"{cpu / args.ops * 1e6:7.1f} us/op CPU"
                + (
                    f", {(catalog.write_jobs - j0) / (catalog.write_batches - b0):.1f} writes/commit"
                    if getattr(catalog, "write_batches", 0) > b0
                    else ""
                )
            )
        catalog.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layout", default="single", help="single | drives4 | drives6")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--ops", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--inline-max", type=int, default=None, help="ObjectService inline_max_bytes (None: default)")
    p.add_argument("--dir", default=None, help="parent of the temp data dir (default: $TMPDIR)")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop, as the server does")
    args = p.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
