"""The S3 request path in-process: pre-signed requests straight into the ASGI app, no HTTP.

What a request costs in Python (auth, routing, engine, catalog, blob store, response building)
without granian, the socket or a load generator sharing the CPU. The app is the one
``tierstore serve`` builds (``server.build_app``) on a temp data dir. Requests are signed with
botocore before the clock starts; ``--concurrency`` requests are in flight at once.

    .venv/bin/python benchmarks/api_inprocess.py                          # 4 KiB PUT then GET
    .venv/bin/python benchmarks/api_inprocess.py --size 131072 --objects 1500
    .venv/bin/python benchmarks/api_inprocess.py --size 67108864 --objects 8 --concurrency 4 --sse
    .venv/bin/python benchmarks/api_inprocess.py --profile 25 --profile-phase put
    py-spy record -f raw -o get.txt -- .venv/bin/python benchmarks/api_inprocess.py --get-passes 10

Prints, per pass: wall and CPU microseconds per request and the minor page faults per request.
Every response status is checked; GET bodies are compared with what was PUT (from 1 MiB on, by
their CRC32C computed chunk by chunk: ~7-9 ms per 64 MiB of the CPU shown, the same for every
variant).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from tierstore.blob._protocol import crc32c  # noqa: E402
from tierstore.catalog import SqliteCatalog  # noqa: E402
from tierstore.server import ServerConfig, build_app, prepare_master_key, tune_malloc  # noqa: E402

HOST = "127.0.0.1:9000"
BUCKET = "bench"


def signed_scope(method: str, path: str, body: bytes = b"", extra: dict[str, str] | None = None) -> dict[str, Any]:
    request = AWSRequest(
        method=method,
        url=f"http://{HOST}{path}",
        data=body,
        headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), **(extra or {})},
    )
    SigV4Auth(Credentials("bench", "benchsecret"), "s3", "us-east-1").add_auth(request)
    headers = [(k.lower().encode(), str(v).encode()) for k, v in request.headers.items()]
    headers.append((b"host", HOST.encode()))
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
    }


async def call(app: Any, scope: dict[str, Any], body: bytes = b"", *, crc: bool = False) -> tuple[int, bytes]:
    """Status and body of one request. ``crc``: keep only the body's CRC32C (as 4 bytes), not
    the body (large objects: a join and a compare would cost more than the request)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status: list[int] = []
    parts: list[bytes] = []
    running = [0]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # the app would be waiting for a disconnect
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message.get("body"):
            if crc:
                running[0] = crc32c(message["body"], running[0])
            else:
                parts.append(bytes(message["body"]))

    await app(scope, receive, send)
    return status[0], running[0].to_bytes(4, "big") if crc else b"".join(parts)


def minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


async def run(args: argparse.Namespace, data_dir: Path) -> None:
    tune_malloc()  # as every server worker does
    config = ServerConfig(data_dir=str(data_dir), access_key="bench", secret_key="benchsecret")
    catalog = SqliteCatalog(data_dir / "catalog.db")
    await prepare_master_key(config, catalog)  # what serve() does before the workers start
    catalog.close()
    app = build_app(config)
    status, _ = await call(app, signed_scope("PUT", f"/{BUCKET}"))
    assert status == 200, status
    body = os.urandom(args.size)
    keys = [f"/{BUCKET}/k{i:07d}" for i in range(args.objects)]
    sse = {"x-amz-server-side-encryption": "AES256"} if args.sse else None
    puts = [signed_scope("PUT", k, body, sse) for k in keys]
    gets = [signed_scope("GET", k) for k in keys]
    limit = asyncio.Semaphore(args.concurrency)

    big = args.size >= 1024 * 1024  # check GET bodies by their CRC32C, chunk by chunk
    expect_crc = crc32c(body).to_bytes(4, "big")

    async def one(scope: dict[str, Any], payload: bytes, expect: bytes | None) -> None:
        async with limit:
            code, got = await call(app, scope, payload, crc=big and expect is not None)
        assert code == 200, (code, got[:300])
        if expect is not None:
            assert got == (expect_crc if big else expect), "GET returned other bytes than were PUT"

    async def timed(label: str, scopes: list[dict[str, Any]], payload: bytes, expect: bytes | None,
                    profile: cProfile.Profile | None = None) -> None:
        faults, wall, cpu = minflt(), time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        await asyncio.gather(*(one(s, payload, expect) for s in scopes))
        if profile is not None:
            profile.disable()
        wall, cpu, faults = time.perf_counter() - wall, time.process_time() - cpu, minflt() - faults
        n = len(scopes)
        print(f"{label}: {n} x {args.size} B, {wall / n * 1e6:7.1f} us wall/req, {cpu / n * 1e6:7.1f} us CPU/req, "
              f"{faults / n:5.1f} page faults/req", flush=True)

    profile = cProfile.Profile() if args.profile else None
    await timed("put", puts, body, None, profile if args.profile_phase == "put" else None)
    for i in range(args.get_passes):
        last = i == args.get_passes - 1 and args.profile_phase == "get"
        await timed(f"get pass {i + 1}", gets, b"", body, profile if last else None)
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096, help="object size in bytes (default: %(default)s)")
    ap.add_argument("--objects", type=int, default=3000, help="objects PUT, then GET (default: %(default)s)")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight (default: %(default)s)")
    ap.add_argument("--get-passes", type=int, default=3, help="GET passes over all objects (default: %(default)s)")
    ap.add_argument("--sse", action="store_true", help="PUT with SSE-S3 (x-amz-server-side-encryption: AES256)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile one pass, print the top N functions")
    ap.add_argument("--profile-phase", choices=["put", "get"], default="get", help="which pass to profile")
    ap.add_argument("--dir", type=Path, default=None, help="parent of the temp data dir (default: $TMPDIR)")
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="ts-api-bench-", dir=args.dir))
    try:
        import uvloop

        uvloop.run(run(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
