"""The standard tier's local cache (blob/_cached.py): GETs cold (from SeaweedFS) vs warm (the cache).

One real SeaweedFS on 127.0.0.1 (tests/seaweed.py, started here), one ``S3BlobStore`` on it, and a
``CachedBlobStore`` over that store with a cache directory in a temp dir on the local disk. For
4 KiB blobs (concurrency 16) and 64 MiB blobs (one at a time, streamed), in this process:

``peer``   ``S3BlobStore.get`` straight from SeaweedFS (verified whole reads): the store alone;
``cold``   ``CachedBlobStore.get`` of blobs not cached yet: from SeaweedFS, verified, and filled
           into the cache in the same pass (the fill's fsync included);
``warm``   the same GETs again: from the cache files, block CRCs verified.

Reported: rate (ops/s or MB/s), this process's CPU (all threads) per op or per GB, SeaweedFS's
CPU for the same (its /proc stat), and ratios against ``peer``. Then the write-through choice:
4 KiB PUTs with ``write_through_bytes=0`` (the default) and with write-through (the put also
writes the cache file and fsyncs it), rate and CPU.

    PYTHONPATH=src .venv/bin/python benchmarks/cached_store.py                 # ~1 minute
    PYTHONPATH=src .venv/bin/python benchmarks/cached_store.py --small 500 --big 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the SeaweedFS fixture

from tests.seaweed import SeaweedFS  # noqa: E402

from tierstore.blob import BlobStore, CachedBlobStore, LocalBlobStore, S3BlobStore, S3StoreConfig  # noqa: E402

MIB = 1024 * 1024
BUCKET = "cachebench"
CONCURRENCY = 16


def _cpu_s() -> float:
    return time.process_time()  # user + system of every thread, ns resolution


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _workers(n: int, jobs: list[Callable[[], Awaitable[Any]]]) -> None:
    """``n`` workers taking the jobs in turn from one iterator."""
    todo = iter(jobs)

    async def worker() -> None:
        for job in todo:
            await job()

    await asyncio.gather(*(worker() for _ in range(n)))


async def _drain(store: BlobStore, blob_id: str, size: int) -> None:
    got = 0
    async for chunk in await store.get(blob_id, 0, size):
        got += len(chunk)
    assert got == size, (blob_id, got, size)


async def _chunks(data: bytes, chunk_bytes: int = MIB) -> AsyncIterator[bytes]:
    for pos in range(0, len(data), chunk_bytes):
        yield data[pos : pos + chunk_bytes]


class Measure:
    def __init__(self, weed_pid: int) -> None:
        self.weed_pid = weed_pid
        self.rows: list[dict[str, Any]] = []

    async def run(self, name: str, jobs: list[Callable[[], Awaitable[Any]]], concurrency: int, nbytes: int) -> None:
        cpu0, weed0, t0 = _cpu_s(), _proc_cpu_s(self.weed_pid), time.perf_counter()
        await _workers(concurrency, jobs)
        wall = time.perf_counter() - t0
        cpu, weed = _cpu_s() - cpu0, _proc_cpu_s(self.weed_pid) - weed0
        self.rows.append({"name": name, "n": len(jobs), "bytes": nbytes, "wall": wall, "cpu": cpu, "weed": weed})


def _report(rows: list[dict[str, Any]]) -> None:
    by_name = {r["name"]: r for r in rows}
    print(f"{'scenario':<22} {'rate':>14} {'client CPU':>18} {'SeaweedFS CPU':>18} {'rate vs peer':>13}")
    for r in rows:
        small = r["bytes"] / r["n"] < MIB
        if small:
            rate = f"{r['n'] / r['wall']:,.0f} ops/s"
            cpu = f"{r['cpu'] / r['n'] * 1e6:,.0f} us/op"
            weed = f"{r['weed'] / r['n'] * 1e6:,.0f} us/op"
        else:
            rate = f"{r['bytes'] / MIB / r['wall']:,.0f} MB/s"
            cpu = f"{r['cpu'] / (r['bytes'] / 2**30):,.2f} s/GB"
            weed = f"{r['weed'] / (r['bytes'] / 2**30):,.2f} s/GB"
        base = r["name"].split()[0]
        peer = by_name.get(f"{base} peer")
        ratio = f"{(peer['wall'] / r['wall']):.2f}x" if peer is not None else ""
        print(f"{r['name']:<22} {rate:>14} {cpu:>18} {weed:>18} {ratio:>13}")


async def bench(weed: SeaweedFS, cache_root: Path, n_small: int, n_big: int) -> list[dict[str, Any]]:
    config = S3StoreConfig(
        endpoint=weed.endpoint, bucket=BUCKET, prefix=f"b/{uuid.uuid4().hex[:8]}",
        access_key=weed.access_key, secret_key=weed.secret_key,
    )  # fmt: skip
    s3 = S3BlobStore(config)
    durable = os.environ.get("CACHE_FSYNC") == "1"  # the cache's files fsynced (off: a cache's choice)
    cached = CachedBlobStore(
        S3BlobStore(config), LocalBlobStore(cache_root / "a", durable=durable), cache_bytes=4 * 2**30
    )
    through = CachedBlobStore(
        S3BlobStore(config), LocalBlobStore(cache_root / "b", durable=durable), cache_bytes=4 * 2**30,
        write_through_bytes=MIB,
    )  # fmt: skip
    m = Measure(weed.pid)
    small = os.urandom(4096)
    big = os.urandom(64 * MIB)

    # the write-through choice first (it also makes the small blobs)
    half = n_small // 2
    warmup, peer_ids, cache_ids, through_ids = ([uuid.uuid4().hex for _ in range(k)] for k in (8, half, half, half))
    size = len(small)
    await m.run("PUT-4KiB warmup", [lambda i=i: s3.put(i, _chunks(small)) for i in warmup], CONCURRENCY, 0)
    m.rows.pop()  # connections made
    for name, store, ids in (
        ("peer", s3, peer_ids),
        ("no-cache", cached, cache_ids),
        ("write-thru", through, through_ids),
    ):
        await m.run(
            f"PUT-4KiB {name}", [lambda i=i, st=store: st.put(i, _chunks(small)) for i in ids], CONCURRENCY, size * half
        )

    await m.run("GET-4KiB peer", [lambda i=i: _drain(s3, i, size) for i in peer_ids], CONCURRENCY, size * half)
    await m.run("GET-4KiB cold", [lambda i=i: _drain(cached, i, size) for i in cache_ids], CONCURRENCY, size * half)
    await m.run("GET-4KiB warm", [lambda i=i: _drain(cached, i, size) for i in cache_ids], CONCURRENCY, size * half)
    assert cached.fills == half and cached.store_gets == half, (cached.fills, cached.store_gets)

    big_ids = [uuid.uuid4().hex for _ in range(2 * n_big)]
    for i in big_ids:
        await s3.put(i, _chunks(big))
    size = len(big)
    peer_ids, cache_ids = big_ids[:n_big], big_ids[n_big:]
    await m.run("GET-64MiB peer", [lambda i=i: _drain(s3, i, size) for i in peer_ids], 1, size * n_big)
    await m.run("GET-64MiB cold", [lambda i=i: _drain(cached, i, size) for i in cache_ids], 1, size * n_big)
    await m.run("GET-64MiB warm", [lambda i=i: _drain(cached, i, size) for i in cache_ids], 1, size * n_big)
    assert cached.is_cached(cache_ids[0])
    return m.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--small", type=int, default=2000, help="4 KiB blobs (half peer, half cached)")
    parser.add_argument("--big", type=int, default=3, help="64 MiB blobs per scenario")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cachebench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        weed = SeaweedFS(Path(tmp) / "weed")
        weed.start()
        try:
            weed.client().create_bucket(Bucket=BUCKET)
            rows = asyncio.run(bench(weed, Path(tmp) / "cache", args.small, args.big))
        finally:
            weed.stop()
    print(f"# {platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load {os.getloadavg()[0]:.1f}, cache fsync {os.environ.get('CACHE_FSYNC') == '1'}")  # fmt: skip
    _report(rows)


if __name__ == "__main__":
    main()
