"""ListObjectsV2 with a delimiter over 1,000,000 keys in 1000 common prefixes, through boto3 and
through the console's object browser (issue 19: the slowest console page was this listing).

The bucket is bulk-loaded as benchmarks/dataset_1m.py does it (``train/clsNNN/NNNNNNN.bin``), or
reused from ``--data`` (a directory holding ``tierstore/catalog.db`` from an earlier run, so one
load serves a before/after pair). ``tierstore serve`` runs from whatever ``PYTHONPATH`` names
(point it at an older checkout's ``src`` for "before"). Per request: the wall time (request to
last byte, kept-alive loopback) and the server's CPU time (utime + stime of the server's process
tree, /proc, divided by the requests), which the machine's load disturbs far less.

    PYTHONPATH=src .venv/bin/python benchmarks/list_delimiter.py --data /tmp/list1m
    PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/list_delimiter.py --data /tmp/list1m
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from console_pages import Browser  # noqa: E402
from dataset_1m import BUCKET, PREFIX, load  # noqa: E402
from s3_side_by_side import AK, SK, Tierstore, loadavg, machine, process_tree  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int) -> float:
    """utime + stime of ``pid``'s process tree, in ms."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total * 1000 / TICK


def timed(name: str, repeat: int, pid: int, call: Callable[[], object]) -> None:
    call()  # warm up
    times = []
    c0 = cpu_ms(pid)
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    cpu = (cpu_ms(pid) - c0) / repeat
    print(f"{name:<52} {statistics.median(times):>9.1f} {max(times):>8.1f} {cpu:>11.1f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, default=None, help="reuse (or load once into) this directory")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    server_src = os.environ.get("PYTHONPATH", "")
    print(f"# ListObjectsV2 delimiter pages, {args.objects:,} objects; {machine()}; server PYTHONPATH={server_src}")
    print(f"# load at start {loadavg()}")
    with tempfile.TemporaryDirectory(prefix="list-delim-") as tmp:
        work = args.data or Path(tmp)
        (work / "tierstore").mkdir(parents=True, exist_ok=True)
        if not (work / "tierstore" / "catalog.db").exists():
            print(f"bulk load: {load(work / 'tierstore', args.objects, args.seed):.0f} s", flush=True)
        server = Tierstore(work, args.workers, 0)
        server.start()
        try:
            s3 = boto3.client(
                "s3", endpoint_url=f"http://127.0.0.1:{server.port}", aws_access_key_id=AK,
                aws_secret_access_key=SK, region_name="us-east-1",
                config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
            )  # fmt: skip

            def page(max_keys: int, **extra: str) -> Callable[[], object]:
                def call() -> object:
                    got = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX, Delimiter="/", MaxKeys=max_keys, **extra)
                    assert len(got.get("CommonPrefixes", [])) == min(max_keys, 1000 - int(bool(extra)) * 500), got
                    return got

                return call

            def walk() -> object:  # every common prefix, 100 a page (10 requests)
                n, token = 0, None
                while True:
                    kw = {"ContinuationToken": token} if token else {}
                    got = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX, Delimiter="/", MaxKeys=100, **kw)
                    n += len(got.get("CommonPrefixes", []))
                    if not got["IsTruncated"]:
                        assert n == 1000, n
                        return n
                    token = got["NextContinuationToken"]

            def browse() -> object:
                status, text, _ = browser.request("GET", f"/console/browse/{BUCKET}?prefix={quote(PREFIX, safe='')}")
                assert status == 200 and "cls199/" in text, status
                return text

            print(f"{'request':<52} {'median ms':>9} {'max ms':>8} {'server CPU ms':>11}")
            timed(f"boto3 ListObjectsV2 {PREFIX} Delimiter=/ MaxKeys=1000", args.repeat, server.pid, page(1000))
            timed(f"boto3 ListObjectsV2 {PREFIX} Delimiter=/ MaxKeys=200", args.repeat, server.pid, page(200))
            timed("boto3 same, StartAfter=train/cls499/ MaxKeys=1000", args.repeat, server.pid,
                  page(1000, StartAfter=f"{PREFIX}cls499/"))  # fmt: skip
            timed("boto3 all 1000 prefixes, 10 pages of 100 (per walk)", args.repeat, server.pid, walk)

            def versions() -> object:
                got = s3.list_object_versions(Bucket=BUCKET, Prefix=PREFIX, Delimiter="/", MaxKeys=1000)
                assert len(got.get("CommonPrefixes", [])) == 1000, got.get("IsTruncated")
                return got

            timed(f"boto3 ListObjectVersions {PREFIX} Delimiter=/ MaxKeys=1000", args.repeat, server.pid, versions)
            browser = Browser(server.port)  # signed in now: a slow "before" outlasts a kept-alive idle
            browser.sign_in()
            timed(f"console browse {PREFIX} (200 of 1000 prefixes)", args.repeat, server.pid, browse)
            print(f"# load at end {loadavg()}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
