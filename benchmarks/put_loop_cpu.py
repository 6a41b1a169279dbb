"""One 64 MiB PUT in-process: the CPU of the event loop thread against the whole process's.

A worker is one event loop thread: whatever a PUT computes on that thread caps what the worker
can take in, however idle the other cores are. ``tierstore._hashing.ThreadedHash`` moves the
body's MD5 and the signed payload's SHA-256 to a worker thread; this shows how much of a PUT's
CPU is left on the loop thread (``time.thread_time``) and what the process spends in all
(``time.process_time``), per 64 MiB PUT, for one source tree (``PYTHONPATH``). Thread CPU times
are inflated by a loaded machine too, but the loop thread's share is what to compare.

    PYTHONPATH=src .venv/bin/python benchmarks/put_loop_cpu.py [--sse] [--puts 6]

The body arrives in frames of 400 KiB (what granian hands over for a large PUT), signed with
its SHA-256 (as s3bench and boto3 over http send it); every answer must be 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from get_instructions import call, signed

FRAME_BYTES = 400 * 1024


async def put(app: Any, scope: dict[str, Any], body: bytes) -> int:
    """One PUT of ``body`` in frames, as a server hands them to the app; its status."""
    frames = [body[i : i + FRAME_BYTES] for i in range(0, len(body), FRAME_BYTES)]
    frames.reverse()
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        if frames:
            frame = frames.pop()
            await asyncio.sleep(0)  # a frame arrives on a later turn of the loop
            return {"type": "http.request", "body": frame, "more_body": bool(frames)}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def run(puts: int, size: int, sse: bool, data_dir: Path) -> None:
    from tierstore import server
    from tierstore.catalog import SqliteCatalog

    config = server.ServerConfig(data_dir=str(data_dir), access_key="bench", secret_key="benchsecret")
    catalog = SqliteCatalog(data_dir / "catalog.db")
    await server.prepare_master_key(config, catalog)
    catalog.close()
    app = server.build_app(config)
    assert (await call(app, signed("PUT", "/bench", "bench", "benchsecret")))[0] == 200
    body = os.urandom(size)
    extra = {"x-amz-server-side-encryption": "AES256"} if sse else None
    loop_ms, process_ms, wall_ms = [], [], []
    for i in range(puts):
        scope = signed("PUT", f"/bench/o{i}", "bench", "benchsecret", body, extra)
        t, p, w = time.thread_time(), time.process_time(), time.perf_counter()
        assert await put(app, scope, body) == 200
        loop_ms.append((time.thread_time() - t) * 1e3)
        process_ms.append((time.process_time() - p) * 1e3)
        wall_ms.append((time.perf_counter() - w) * 1e3)
    print(
        f"{'SSE-S3' if sse else 'plain'} {size >> 20} MiB PUT, medians of {puts}: loop thread "
        f"{statistics.median(loop_ms):.0f} ms, process {statistics.median(process_ms):.0f} ms, "
        f"wall {statistics.median(wall_ms):.0f} ms (load {os.getloadavg()[0]:.1f})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--puts", type=int, default=6)
    ap.add_argument("--size", type=int, default=64 << 20)
    ap.add_argument("--sse", action="store_true", help="PUT with x-amz-server-side-encryption: AES256")
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="put-loop-", dir="/var/tmp"))
    try:
        asyncio.run(run(args.puts, args.size, args.sse, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
