
"""Metadata query at scale: 1,000,000 objects with user metadata and tags.

Targets (issue 3): an equality query on a ``meta.`` field returns its first page in < 100 ms;
a range query with ORDER BY in < 500 ms, on this machine.

Loading a million objects through PUTs would take most of an hour here, so the catalog is
bulk-loaded: the same tables and the same metadata encoding the write path produces
(``catalog._rules.meta_json``, ``catalog.sqlite._index.index_attrs`` / ``attr_num``), written in large
transactions. The queries then run the real path twice: in-process (``SqliteCatalog.query``)
and end to end over HTTP (``POST /_tierstore/query`` through ``TierstoreClient``, against a
``tierstore serve`` on that data dir).

The peer: what S3 users do today without a query — list the keys and HEAD each candidate to
read its metadata. That is measured on SeaweedFS with --peer-objects objects (default 2,000),
and the per-object cost is extrapolated to the full count, clearly labelled as such.

    .venv/bin/python benchmarks/query_1m.py                       # 1,000,000 objects
    .venv/bin/python benchmarks/query_1m.py --objects 100000 --peer-objects 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from s3_side_by_side import AK, BENCH, SK, free_port_block, wait_port  # noqa: E402

from tierstore.catalog import SqliteCatalog, VersionRecord  # noqa: E402
from tierstore.catalog._query import attr_num  # noqa: E402
from tierstore.catalog._rules import meta_json  # noqa: E402
from tierstore.catalog.sqlite._index import index_attrs  # noqa: E402
from tierstore.client import TierstoreClient, resolve_settings  # noqa: E402
from tierstore.types import BucketInfo, ObjectMeta  # noqa: E402

DATASETS = [f"imagenet@{i}" for i in range(1, 21)]
TEAMS = ["vision", "nlp", "speech", "robotics"]
QUERIES = {
    "equality meta (first page)": "meta.dataset = 'imagenet@3'",
    "equality meta+tag, ORDER BY, LIMIT 5": (
        "tag.status = 'tested' AND meta.dataset = 'imagenet@3' ORDER BY meta.loss LIMIT 5"
    ),
    "range + ORDER BY (first page)": "meta.loss < 0.05 ORDER BY meta.loss",
    "range + ORDER BY DESC, LIMIT 10": "meta.epoch >= 90 AND tag.team = 'nlp' ORDER BY meta.loss DESC LIMIT 10",
    "prefix on key": "key LIKE 'run-0042/%' ORDER BY meta.epoch",
}
TARGETS_MS = {"equality meta (first page)": 100.0, "range + ORDER BY (first page)": 500.0}


def object_meta(i: int, rng: random.Random) -> ObjectMeta:
    return ObjectMeta(
        bucket="bench",
        key=f"run-{i // 1000:04d}/ckpt-{i % 1000:04d}.pt",
        version_id="null",
        size_bytes=rng.randrange(1 << 20, 1 << 30),
        etag=f'"{rng.getrandbits(128):032x}"',
        modified_ns=1_760_000_000_000_000_000 + i * 1_000_000_000,
        headers={"content-type": "application/octet-stream"},
        user_meta={
            "dataset": rng.choice(DATASETS),
            "loss": f"{rng.random():.6f}",
            "epoch": str(rng.randrange(100)),
            "run": f"run-{i // 1000:04d}",
        },
        tags={"status": "tested" if rng.random() < 0.1 else "untested", "team": rng.choice(TEAMS)},
    )


def load(data_dir: Path, n: int, seed: int) -> float:
    """Bulk-load ``n`` objects into a fresh catalog; returns seconds."""
    t0 = time.perf_counter()
    cat = SqliteCatalog(data_dir / "catalog.db")
    import asyncio

    asyncio.run(cat.create_bucket(BucketInfo("bench", 0)))
    cat.close()
    conn = sqlite3.connect(data_dir / "catalog.db")
    conn.execute("PRAGMA synchronous=OFF")
    rng = random.Random(seed)
    batch = 50_000
    for start in range(0, n, batch):
        versions, attrs = [], []
        for i in range(start, min(n, start + batch)):
            m = object_meta(i, rng)
            rec = VersionRecord(meta=m)
            key_b = m.key.encode()
            doc = meta_json(m)
            versions.append(("bench", key_b, "null", 1, 0, m.size_bytes, m.etag, m.modified_ns, doc, "[]", 1))
            attrs += [("bench", key_b, k, v, attr_num(v)) for k, v in index_attrs(json.loads(doc))]
            del rec
        with conn:
            conn.executemany(
                "INSERT INTO versions(bucket, key, version_id, is_latest, is_delete_marker, size, etag,"
                " modified_ns, meta, blobs, seq) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                versions,
            )
            conn.executemany("INSERT INTO obj_attrs(bucket, key, name, value, num) VALUES(?,?,?,?,?)", attrs)
        print(f"[load] {min(n, start + batch):,}/{n:,}", file=sys.stderr, flush=True)
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - t0


def time_ms(fn, repeat: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    times, count = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), count


def peer_list_and_head(n: int, seed: int, work: Path) -> dict[str, float]:
    """SeaweedFS: PUT n objects with the same metadata, then LIST + HEAD each to evaluate
    ``meta.dataset = 'imagenet@3'`` client-side (S3 has no query)."""
    import boto3
    from botocore.config import Config

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    port = free_port_block(8)
    sw = work / "seaweed"
    env = {"WEED": weed, "PATH": "/usr/bin:/bin"}
    subprocess.run(["bash", str(BENCH / "start-seaweed.sh"), str(port), str(sw), AK, SK], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(3)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=AK,
                          aws_secret_access_key=SK, region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
        s3.create_bucket(Bucket="bench")
        rng = random.Random(seed)
        from concurrent.futures import ThreadPoolExecutor

        metas = [object_meta(i, rng) for i in range(n)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda m: s3.put_object(Bucket="bench", Key=m.key, Body=b"", Metadata=m.user_meta), metas))
        t0 = time.perf_counter()
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench")
                for o in page.get("Contents", [])]
        with ThreadPoolExecutor(16) as pool:
            heads = list(pool.map(lambda k: s3.head_object(Bucket="bench", Key=k)["Metadata"], keys))
        hits = sum(1 for h in heads if h.get("dataset") == "imagenet@3")
        seconds = time.perf_counter() - t0
        return {"objects": n, "seconds": seconds, "hits": hits, "ms_per_object": seconds * 1000 / n}
    finally:
        subprocess.run(["bash", str(BENCH / "stop-seaweed.sh"), str(sw), "--wipe"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--peer-objects", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tierstore-query-"))
    data = work / "tierstore"
    data.mkdir(parents=True, exist_ok=True)
    load_s = load(data, args.objects, args.seed)
    print(f"[load] {args.objects:,} objects in {load_s:.1f} s", file=sys.stderr)

    cat = SqliteCatalog(data / "catalog.db")
    results: dict[str, dict[str, float]] = {}
    for name, q in QUERIES.items():
        ms, count = time_ms(lambda q=q: len(asyncio.run(cat.query("bench", q))[0]), args.repeat)
        results[name] = {"in_process_ms": ms, "rows": count}
    cat.close()

    port = free_port_block(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierstore", "serve", "--data", str(data), "--address", f"127.0.0.1:{port}",
         "--log-level", "warning", "--access-key", AK, "--secret-key", SK],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        client = TierstoreClient(resolve_settings(f"http://127.0.0.1:{port}", access_key=AK, secret_key=SK))
        client.query("bench", "size > 0 LIMIT 1")  # warm the connection
        for name, q in QUERIES.items():
            ms, _ = time_ms(lambda q=q: len(client.query("bench", q).objects), args.repeat)
            results[name]["http_ms"] = ms
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    peer = peer_list_and_head(args.peer_objects, args.seed, work) if args.peer_objects else None
    print(f"\n{args.objects:,} objects, 8 indexed attributes each; medians of {args.repeat} runs\n")
    print("| query | rows (first page) | in-process | over HTTP | target |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        target = f"< {TARGETS_MS[name]:.0f} ms" if name in TARGETS_MS else ""
        print(
            f"| `{QUERIES[name]}` | {int(r['rows'])} | {r['in_process_ms']:.1f} ms | {r['http_ms']:.1f} ms | {target} |"
        )
    if peer:
        est_s = peer["ms_per_object"] * args.objects / 1000
        eq = results["equality meta (first page)"]["http_ms"]
        print(f"\npeer (SeaweedFS, LIST + HEAD every object, {peer['objects']:,} objects): {peer['seconds']:.1f} s "
              f"= {peer['ms_per_object']:.2f} ms/object -> extrapolated to {args.objects:,}: {est_s:,.0f} s; "
              f"ratio vs tierstore's equality query over HTTP: {est_s * 1000 / eq:,.0f}x")
    print(json.dumps({"objects": args.objects, "load_s": load_s, "results": results, "peer": peer}))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
