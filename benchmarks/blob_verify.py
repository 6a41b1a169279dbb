"""What the CRC-off read saves (issue 16, docs/encryption.md "A speed lever for GET").

In-process, no HTTP: one 64 MiB blob read whole and 2,000 ranges of one sealed package
(64 KiB + 16 bytes at a random package boundary, what a 4 KiB encrypted range GET fetches),
each with ``verify=True`` (every plain read) and ``verify=False`` (encrypted reads, whose
AES-GCM tags authenticate the bytes), on a ``LocalBlobStore`` and on a 2+2
``ErasureBlobStore`` in a temp directory. The blob is read once first so the page cache holds
it: the numbers are CPU, not disk. Reported: MB/s of wall time and CPU per read
(``time.process_time``: user + system of this process, threads included), best of
``--repeat``; one whole read per mode is compared with what was written (outside the timing).

    .venv/bin/python benchmarks/blob_verify.py [--repeat 5] [--dir /tmp] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from tierstore.blob import BlobStore, ErasureBlobStore, LocalBlobStore
from tierstore.crypto import PACKAGE_BYTES
from tierstore.drives import DriveSet
from tierstore.runtime import new_blob_id
from tierstore.server import tune_malloc

MIB = 1024 * 1024
SEALED_PACKAGE = PACKAGE_BYTES + 16


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for i in range(0, len(body), MIB):
        yield bytes(view[i : i + MIB])


async def best(fn: Callable[[], Awaitable[object]], repeat: int) -> tuple[float, float]:
    """(least wall seconds, least CPU seconds) of ``repeat`` runs."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        await fn()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return wall, cpu


async def measure(name: str, store: BlobStore, body: bytes, repeat: int, ranges: int) -> dict[str, object]:
    blob_id = new_blob_id()
    await store.put(blob_id, chunks(body))
    rng = random.Random(7)
    packages = len(body) // SEALED_PACKAGE
    offsets = [rng.randrange(packages) * SEALED_PACKAGE for _ in range(ranges)]
    row: dict[str, object] = {"store": name}
    for verify in (True, False):

        async def check(verify: bool = verify) -> None:
            got = bytearray()
            async for piece in await store.get(blob_id, verify=verify):
                got += piece
            assert got == body

        async def whole(verify: bool = verify) -> None:
            n = 0
            async for piece in await store.get(blob_id, verify=verify):
                n += len(piece)
            assert n == len(body)

        async def ranged(verify: bool = verify) -> None:
            for offset in offsets:
                async for _piece in await store.get(blob_id, offset, SEALED_PACKAGE, verify=verify):
                    pass

        await check()  # byte-exact; warms the page cache and the layout cache
        wall, cpu = await best(whole, repeat)
        r_wall, r_cpu = await best(ranged, repeat)
        tag = "crc" if verify else "nocrc"
        row[f"whole_{tag}_MB_s"] = round(len(body) / wall / 1e6)
        row[f"whole_{tag}_cpu_ms"] = round(cpu * 1e3, 2)
        row[f"range_{tag}_us_cpu"] = round(r_cpu / ranges * 1e6, 1)
        row[f"range_{tag}_us_wall"] = round(r_wall / ranges * 1e6, 1)
    await store.delete(blob_id)
    return row


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    body = os.urandom(args.mib * MIB)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        local = LocalBlobStore(root / "local")
        drives = DriveSet.open([root / f"d{i}" for i in range(4)], parity=2)
        rows = [
            await measure("local", local, body, args.repeat, args.ranges),
            await measure("erasure 2+2", ErasureBlobStore(drives), body, args.repeat, args.ranges),
        ]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ranges", type=int, default=2000)
    ap.add_argument("--dir", default=None, help="where the temp stores go (default: the system temp dir)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    tune_malloc()
    rows = asyncio.run(main_async(args))
    print(f"{args.mib} MiB blob; {args.ranges} reads of one sealed package ({SEALED_PACKAGE} bytes)", end="")
    print(f"; best of {args.repeat}")
    print("| store | whole MB/s crc / no crc | whole CPU ms crc / no crc | package range CPU us crc / no crc |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['store']} | {r['whole_crc_MB_s']} / {r['whole_nocrc_MB_s']} "
            f"| {r['whole_crc_cpu_ms']} / {r['whole_nocrc_cpu_ms']} "
            f"| {r['range_crc_us_cpu']} / {r['range_nocrc_us_cpu']} |"
        )
    doc = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
