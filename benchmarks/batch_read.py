"""Batched reads (POST /_tierstore/batch, TierstoreClient.read_many) vs one GET per sample.

Starts ``tierstore serve`` on a free 127.0.0.1 port and a temp data dir, PUTs ``--samples``
objects of ``--size`` bytes, then reads them all in a shuffled order: with ``read_many`` in
batches of ``--batch``, and with one boto3 ``get_object`` per sample (on ``--get-samples`` of
them: it is slow). One client thread each; every sample is byte-checked.

    .venv/bin/python benchmarks/batch_read.py                  # 5,000 x 16 KiB, batches of 256
    .venv/bin/python benchmarks/batch_read.py --samples 50000 --batch 1024
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
AK, SK = "benchaccess", "benchsecret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(0.5)  # the app may still be starting behind the accepting socket
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"tierstore did not start on {port}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--size", type=int, default=16 * 1024)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--get-samples", type=int, default=1000)
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from tierstore.client import TierstoreClient, resolve_settings

    work = Path(tempfile.mkdtemp(prefix="ts-batch-bench-"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tierstore", "serve", "--data", str(work / "data"), "--address", f"127.0.0.1:{port}",
           "--access-key", AK, "--secret-key", SK]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(port)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AK, aws_secret_access_key=SK,
                          region_name="us-east-1", config=Config(max_pool_connections=16))
        s3.create_bucket(Bucket="samples")
        bodies = [os.urandom(args.size) for _ in range(64)]
        keys = [f"s/{i:07d}" for i in range(args.samples)]
        order_put = range(len(keys))
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket="samples", Key=keys[i], Body=bodies[i % 64]), order_put))
        order = list(range(args.samples))
        random.shuffle(order)
        client = TierstoreClient(resolve_settings(endpoint, access_key=AK, secret_key=SK))

        start = time.perf_counter()
        for b in range(0, len(order), args.batch):
            run = order[b : b + args.batch]
            entries = [{"bucket": "samples", "key": keys[i]} for i in run]
            for item, i in zip(client.read_many(entries), run, strict=True):
                assert item.ok and item.data == bodies[i % 64], keys[i]
        batched = args.samples / (time.perf_counter() - start)

        start = time.perf_counter()
        for i in order[: args.get_samples]:
            assert s3.get_object(Bucket="samples", Key=keys[i])["Body"].read() == bodies[i % 64]
        single = args.get_samples / (time.perf_counter() - start)
        print(f"{args.samples} x {args.size} B, shuffled, one client thread:")
        print(f"  read_many, batches of {args.batch}: {batched:10,.0f} samples/s")
        print(f"  boto3 get_object per sample:     {single:10,.0f} samples/s")
        print(f"  ratio: {batched / single:.1f}x")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
