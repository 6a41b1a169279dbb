"""Which S3 client library should the remote tier (blob/_s3.py) ride on? Measured, not guessed.

Three candidates against one real SeaweedFS on 127.0.0.1 (started here, tests/seaweed.py), each in
its own fresh Python process (so CPU seconds and peak RSS are its own), in alternating rounds:

- ``obstore``: Rust ``object_store`` behind an asyncio API (new dependency);
- ``aiobotocore``: botocore on aiohttp, natively async (today only in the ``s3fs`` extra);
- ``botocore-threads``: a boto3 client (a base dependency) called through ``asyncio.to_thread``;

and, not a candidate, ``tierstore``: ``S3BlobStore`` on obstore with its integrity checks, to show
what the store adds. botocore's clients run with flexible checksums off (``when_required``), so
neither side hashes bodies beyond the SigV4 payload hash.

Scenarios, each the way the blob store would use the library (async, streamed):
``put64m``  N x 64 MiB PUT from an async generator of 1 MiB chunks, 8 MiB multipart parts, up to 4
            parts in flight (obstore: its own multipart, ``max_concurrency=4``);
``get64m``  GET them back streamed (chunks counted, never joined);
``range64k`` random 64 KiB ranged GETs inside them, concurrency 16;
``put16k`` / ``get16k`` 16 KiB objects, concurrency 16.

Reported per scenario: rate (MB/s or ops/s), the client process's CPU seconds per GB or per 1,000
ops (all threads: obstore's Rust runtime, botocore's pool), peak RSS above the post-import
baseline; plus import time and RSS of the library. The ratio table is against botocore-threads.

    PYTHONPATH=src .venv/bin/python benchmarks/tier_client.py            # ~5 minutes on 2 cores
    PYTHONPATH=src .venv/bin/python benchmarks/tier_client.py --rounds 1 --objects 2 --ops 500
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the SeaweedFS fixture

MIB = 1024 * 1024
LIBS = ("obstore", "aiobotocore", "botocore-threads", "tierstore")
PART_BYTES = 8 * MIB
PART_CONCURRENCY = 4
CONCURRENCY = 16
BUCKET = "tierbench"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def _chunks(data: bytes, chunk_bytes: int = MIB) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for pos in range(0, len(data), chunk_bytes):
        yield bytes(view[pos : pos + chunk_bytes])  # a fresh buffer, as a file read would give


async def _parts(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        while len(buf) >= PART_BYTES:
            yield bytes(buf[:PART_BYTES])
            del buf[:PART_BYTES]
    if buf:
        yield bytes(buf)


async def _bounded(n: int, jobs: list[Callable[[], Awaitable[Any]]]) -> None:
    sem = asyncio.Semaphore(n)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with sem:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


async def _multipart_put(call: Callable[..., Awaitable[Any]], data: bytes) -> None:
    """A botocore-style multipart upload: ``call(method, **kwargs)`` runs one S3 call on the key."""
    upload_id = (await call("create_multipart_upload", Metadata={"tierstore-crc32c": "0"}))["UploadId"]
    etags: dict[int, str] = {}
    sem = asyncio.Semaphore(PART_CONCURRENCY)
    tasks = []

    async def part(n: int, body: bytes) -> None:
        try:
            etags[n] = (await call("upload_part", UploadId=upload_id, PartNumber=n, Body=body))["ETag"]
        finally:
            sem.release()

    n = 0
    async for body in _parts(_chunks(data)):
        n += 1
        await sem.acquire()
        tasks.append(asyncio.create_task(part(n, body)))
    await asyncio.gather(*tasks)
    parts = [{"PartNumber": i, "ETag": etags[i]} for i in sorted(etags)]
    await call("complete_multipart_upload", UploadId=upload_id, MultipartUpload={"Parts": parts})


# --- the clients, one shape: put_big, put_small, get_stream, get_small, get_range -------------------


class Obstore:
    def __init__(self, endpoint: str, ak: str, sk: str) -> None:
        from obstore.store import S3Store

        self.store = S3Store(
            BUCKET, endpoint=endpoint, access_key_id=ak, secret_access_key=sk, region="us-east-1",
            virtual_hosted_style_request=False, client_options={"allow_http": True, "pool_max_idle_per_host": "32"},
        )  # fmt: skip

    async def setup(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put_big(self, key: str, data: bytes) -> None:
        import obstore

        await obstore.put_async(
            self.store, key, _chunks(data), chunk_size=PART_BYTES, max_concurrency=PART_CONCURRENCY,
            attributes={"tierstore-crc32c": "0"},
        )  # fmt: skip

    async def put_small(self, key: str, data: bytes) -> None:
        import obstore

        await obstore.put_async(self.store, key, data, use_multipart=False)

    async def get_stream(self, key: str) -> int:
        import obstore

        result = await obstore.get_async(self.store, key)
        n = 0
        async for chunk in result.stream(min_chunk_size=MIB):
            n += len(chunk)
        return n

    async def get_small(self, key: str) -> int:
        import obstore

        result = await obstore.get_async(self.store, key)
        return len(await result.bytes_async())

    async def get_range(self, key: str, start: int, length: int) -> int:
        import obstore

        return len(await obstore.get_range_async(self.store, key, start=start, length=length))


class Aiobotocore:
    def __init__(self, endpoint: str, ak: str, sk: str) -> None:
        self.args = {"endpoint_url": endpoint, "aws_access_key_id": ak, "aws_secret_access_key": sk}
        self.client: Any = None
        self._cm: Any = None

    async def setup(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            s3={"addressing_style": "path"}, max_pool_connections=32, region_name="us-east-1",
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )  # fmt: skip
        self._cm = get_session().create_client("s3", config=config, **self.args)
        self.client = await self._cm.__aenter__()

    async def close(self) -> None:
        await self._cm.__aexit__(None, None, None)

    async def put_big(self, key: str, data: bytes) -> None:
        async def call(method: str, **kwargs: Any) -> Any:
            return await getattr(self.client, method)(Bucket=BUCKET, Key=key, **kwargs)

        await _multipart_put(call, data)

    async def put_small(self, key: str, data: bytes) -> None:
        await self.client.put_object(Bucket=BUCKET, Key=key, Body=data)

    async def get_stream(self, key: str) -> int:
        r = await self.client.get_object(Bucket=BUCKET, Key=key)
        n = 0
        async with r["Body"] as body:
            async for chunk in body.iter_chunks(MIB):
                n += len(chunk)
        return n

    async def get_small(self, key: str) -> int:
        r = await self.client.get_object(Bucket=BUCKET, Key=key)
        async with r["Body"] as body:
            return len(await body.read())

    async def get_range(self, key: str, start: int, length: int) -> int:
        r = await self.client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{start + length - 1}")
        async with r["Body"] as body:
            return len(await body.read())


class BotocoreThreads:
    def __init__(self, endpoint: str, ak: str, sk: str) -> None:
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"}, max_pool_connections=32, region_name="us-east-1",
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )  # fmt: skip
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk, config=config
        )

    async def setup(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32))

    async def close(self) -> None:
        pass

    async def put_big(self, key: str, data: bytes) -> None:
        async def call(method: str, **kwargs: Any) -> Any:
            return await asyncio.to_thread(getattr(self.client, method), Bucket=BUCKET, Key=key, **kwargs)

        await _multipart_put(call, data)

    async def put_small(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self.client.put_object, Bucket=BUCKET, Key=key, Body=data)

    async def get_stream(self, key: str) -> int:
        r = await asyncio.to_thread(self.client.get_object, Bucket=BUCKET, Key=key)
        body = r["Body"]
        n = 0
        try:
            while chunk := await asyncio.to_thread(body.read, MIB):
                n += len(chunk)
        finally:
            body.close()
        return n

    async def get_small(self, key: str) -> int:
        def fetch() -> int:
            return len(self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

        return await asyncio.to_thread(fetch)

    async def get_range(self, key: str, start: int, length: int) -> int:
        def fetch() -> int:
            r = self.client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{start + length - 1}")
            return len(r["Body"].read())

        return await asyncio.to_thread(fetch)


class Tierstore:
    """Not a candidate: ``S3BlobStore`` itself (obstore plus its checks: CRC32C and MD5 at put,
    CRC32C on whole verified reads), to show what the store adds to the library."""

    def __init__(self, endpoint: str, ak: str, sk: str) -> None:
        from tierstore.blob import S3BlobStore, S3StoreConfig

        config = S3StoreConfig(
            endpoint=endpoint, bucket=BUCKET, prefix="blobs", access_key=ak, secret_key=sk,
            part_size_bytes=PART_BYTES, part_concurrency=PART_CONCURRENCY,
        )  # fmt: skip
        self.store = S3BlobStore(config)
        self.big_crc: str | None = None

    @staticmethod
    def _id(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    async def setup(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put_big(self, key: str, data: bytes) -> None:
        # as a caller that knows the body's CRC32C (the local blob's block CRCs, combined) would:
        # whole reads then verify by it, not by recomputing the multipart ETag (MD5)
        if self.big_crc is None:
            from tierstore.blob._protocol import crc32c

            self.big_crc = f"{crc32c(data):08x}"
        await self.store.put(self._id(key), _chunks(data), meta={"tierstore-crc32c": self.big_crc})

    async def put_small(self, key: str, data: bytes) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield data

        await self.store.put(self._id(key), one())

    async def get_stream(self, key: str) -> int:
        n = 0
        async for chunk in await self.store.get(self._id(key)):  # verified
            n += len(chunk)
        return n

    async def get_small(self, key: str) -> int:
        return len(await self.store.read(self._id(key)))

    async def get_range(self, key: str, start: int, length: int) -> int:
        return len(await self.store.read(self._id(key), start, length))


CLIENTS: dict[str, Callable[[str, str, str], Any]] = {
    "obstore": Obstore,
    "aiobotocore": Aiobotocore,
    "botocore-threads": BotocoreThreads,
    "tierstore": Tierstore,
}


# --- one library, in its own process --------------------------------------------------------


class _RssPeak:
    """Peak RSS of this process, sampled every 10 ms from a thread while a phase runs."""

    def __init__(self) -> None:
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_bytes())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return (max(self.peak, _rss_bytes()) - self.base) / MIB


async def _phase(name: str, out: dict[str, Any], units: float, unit: str, fn: Callable[[], Awaitable[None]]) -> None:
    rss, cpu0, t0 = _RssPeak(), _cpu_s(), time.perf_counter()
    await fn()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    per = "cpu_s_per_GB" if unit == "MB/s" else "cpu_ms_per_op"
    out[name] = {
        "rate": units / wall,
        "unit": unit,
        per: cpu / (units / 1000) if unit == "MB/s" else 1000 * cpu / units,
        "peak_rss_MiB": rss.stop(),
    }


async def _worker(lib: str, endpoint: str, ak: str, sk: str, objects: int, ops: int, tag: str) -> dict[str, Any]:
    t0, rss0 = time.perf_counter(), _rss_bytes()
    client = CLIENTS[lib](endpoint, ak, sk)
    await client.setup()
    out: dict[str, Any] = {
        "lib": lib,
        "import_s": time.perf_counter() - t0,
        "import_rss_MiB": (_rss_bytes() - rss0) / MIB,
    }
    big = random.Random(1).randbytes(64 * MIB)
    small = random.Random(2).randbytes(16 * 1024)
    big_keys = [f"{tag}/{lib}/big{i}" for i in range(objects)]
    small_keys = [f"{tag}/{lib}/small{i}" for i in range(ops)]
    mb = objects * 64 * MIB / 1e6

    async def put_big() -> None:
        for key in big_keys:
            await client.put_big(key, big)

    async def get_big() -> None:
        for key in big_keys:
            assert await client.get_stream(key) == len(big)

    rng = random.Random(3)
    ranges = [(rng.choice(big_keys), rng.randrange(0, 64 * MIB - 65536)) for _ in range(ops)]

    async def get_ranges() -> None:
        async def one(key: str, start: int) -> None:
            assert await client.get_range(key, start, 65536) == 65536

        await _bounded(CONCURRENCY, [lambda k=k, s=s: one(k, s) for k, s in ranges])

    async def put_smalls() -> None:
        await _bounded(CONCURRENCY, [lambda k=k: client.put_small(k, small) for k in small_keys])

    async def get_smalls() -> None:
        async def one(key: str) -> None:
            assert await client.get_small(key) == len(small)

        await _bounded(CONCURRENCY, [lambda k=k: one(k) for k in small_keys])

    await _phase("put64m", out, mb, "MB/s", put_big)
    await _phase("get64m", out, mb, "MB/s", get_big)
    await _phase("range64k", out, ops, "ops/s", get_ranges)
    await _phase("put16k", out, ops, "ops/s", put_smalls)
    await _phase("get16k", out, ops, "ops/s", get_smalls)
    await client.close()
    return out


# --- the driver ------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_1m": os.getloadavg()[0],
        "python": platform.python_version(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("obstore", "aiobotocore", "botocore")}


def _table(results: dict[str, list[dict[str, Any]]]) -> str:
    scenarios = ["put64m", "get64m", "range64k", "put16k", "get16k"]
    med: dict[str, dict[str, dict[str, float]]] = {}
    for lib, runs in results.items():
        med[lib] = {}
        for sc in scenarios:
            keys = [k for k in runs[0][sc] if k != "unit"]
            med[lib][sc] = {k: statistics.median(r[sc][k] for r in runs) for k in keys}
    base = "botocore-threads" if "botocore-threads" in results else next(iter(results))
    lines = [
        f"| scenario | library | rate | x {base} | client CPU | peak RSS +MiB |",
        "|---|---|---|---|---|---|",
    ]
    for sc in scenarios:
        for lib in results:
            m = med[lib][sc]
            unit = results[lib][0][sc]["unit"]
            cpu = f"{m['cpu_s_per_GB']:.2f} s/GB" if "cpu_s_per_GB" in m else f"{m['cpu_ms_per_op']:.2f} ms/op"
            ratio = m["rate"] / med[base][sc]["rate"]
            lines.append(f"| {sc} | {lib} | {m['rate']:,.0f} {unit} | {ratio:.2f}x | {cpu} | {m['peak_rss_MiB']:.0f} |")
    lines.append("")
    lines.append("| library | import + client s | import RSS MiB |")
    lines.append("|---|---|---|")
    for lib, runs in results.items():
        imp = statistics.median(r["import_s"] for r in runs)
        rss = statistics.median(r["import_rss_MiB"] for r in runs)
        lines.append(f"| {lib} | {imp:.2f} | {rss:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds over the libraries (median)")
    ap.add_argument("--objects", type=int, default=4, help="64 MiB objects per round")
    ap.add_argument("--ops", type=int, default=2000, help="ranged GETs and small PUT/GETs per round")
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="r0", help=argparse.SUPPRESS)
    args = ap.parse_args()

    from tests.seaweed import SeaweedFS

    if args.worker:
        out = asyncio.run(
            _worker(
                args.worker, args.endpoint, SeaweedFS.access_key, SeaweedFS.secret_key, args.objects, args.ops, args.tag
            )
        )
        print(json.dumps(out))
        return

    libs = args.libs.split(",")
    results: dict[str, list[dict[str, Any]]] = {lib: [] for lib in libs}
    with tempfile.TemporaryDirectory(prefix="tier-client-") as work:
        seaweed = SeaweedFS(Path(work) / "seaweed")
        seaweed.start()
        try:
            seaweed.client().create_bucket(Bucket=BUCKET)
            machine = _machine()
            for rnd in range(args.rounds):
                order = libs if rnd % 2 == 0 else libs[::-1]
                for lib in order:
                    cmd = [sys.executable, __file__, "--worker", lib, "--endpoint", seaweed.endpoint,
                           "--objects", str(args.objects), "--ops", str(args.ops), "--tag", f"r{rnd}"]  # fmt: skip
                    line = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
                    results[lib].append(json.loads(line.splitlines()[-1]))
                    print(f"round {rnd} {lib}: done", file=sys.stderr, flush=True)
        finally:
            seaweed.stop()
    doc = {"machine": machine, "versions": _versions(), "args": vars(args), "results": results}
    print(f"{machine['date']}, {machine['cpus']} cpus, load {machine['load_1m']:.1f} at start; {doc['versions']}")
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    main()
