"""The lifecycle due index at 1,000,000 rows, and what it costs a PUT (docs/tiers.md "Lifecycle").

Part 1, the index: 1,000,000 ``lifecycle_due`` rows in a real catalog (``SqliteCatalog``), of
which ``--due`` are due now; the worker's claim (``lifecycle_claim``: a page of due rows, leased in
the same transaction) is timed until every due row is found, and its query's EXPLAIN QUERY PLAN
printed (a SEARCH on ``lifecycle_due_at``, no SCAN). The same is measured on the layout not
chosen, a WITHOUT ROWID table keyed by ``due_ns`` first (with an index on the key columns for the
writes), on plain sqlite3 in the same run: bulk load, finding the due rows, and replacing one key's
rows (what every write of a bucket with rules does).

Part 2, the write path: in-process ``ObjectService.put_object`` of 4 KiB objects (inline) into a
bucket without lifecycle, with a rule that matches no key, and with a rule that matches every key.

    .venv/bin/python benchmarks/lifecycle_due.py                 # --rows 1000000 --due 1000 --puts 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tierstore.blob import LocalBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.engine import LifecycleConfig, LifecycleExpiration, LifecycleFilter, LifecycleRule, ObjectService

NS = 1_000_000_000
CLAIM_SQL = "SELECT due_ns, bucket, key, version_id, action FROM lifecycle_due WHERE due_ns<=? ORDER BY due_ns LIMIT ?"
ALT_DDL = """
CREATE TABLE lifecycle_due(
    due_ns INTEGER NOT NULL, bucket TEXT NOT NULL, key BLOB NOT NULL, version_id TEXT NOT NULL, action TEXT NOT NULL,
    PRIMARY KEY(due_ns, bucket, key, version_id, action)
) WITHOUT ROWID;
CREATE UNIQUE INDEX lifecycle_due_key ON lifecycle_due(bucket, key, version_id, action);
"""


def rows(n: int, due: int, now_ns: int, seed: int = 1) -> list[tuple[int, str, bytes, str, str]]:
    """``n`` rows over 100 buckets; ``due`` of them due (in the past hour), the rest within a year."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        when = now_ns - rng.randrange(3600 * NS) if i < due else now_ns + 1 + rng.randrange(365 * 86_400 * NS)
        out.append((when, f"b{i % 100:03d}", f"data/{rng.getrandbits(64):016x}/{i}".encode(), "v" * 32, "expire"))
    rng.shuffle(out)
    return out


async def catalog_part(root: Path, data: list[tuple[int, str, bytes, str, str]], now_ns: int, page: int) -> None:
    catalog = SqliteCatalog(root / "catalog.db")
    try:
        t0 = time.perf_counter()
        for i in range(0, len(data), 50_000):
            chunk = data[i : i + 50_000]

            def load(c: sqlite3.Connection, chunk: list[tuple[int, str, bytes, str, str]] = chunk) -> None:
                c.executemany(
                    "INSERT INTO lifecycle_due(due_ns, bucket, key, version_id, action) VALUES(?,?,?,?,?)", chunk
                )

            await catalog._write(load)
        load_s = time.perf_counter() - t0
        plan = catalog._reader().execute("EXPLAIN QUERY PLAN " + CLAIM_SQL, (now_ns, page)).fetchall()
        print("EXPLAIN QUERY PLAN (the claim):", "; ".join(str(r[-1]) for r in plan))
        assert not any("SCAN" in str(r[-1]) for r in plan), plan
        found = 0
        t0 = time.perf_counter()
        first_s = None
        while True:
            claimed = await catalog.lifecycle_claim(now_ns, page, 600 * NS)
            if first_s is None:
                first_s = time.perf_counter() - t0
            found += len(claimed)
            if len(claimed) < page:
                break
        claim_s = time.perf_counter() - t0
        print(
            f"catalog (chosen: PK bucket,key,version_id,action + index on due_ns): {len(data):,} rows loaded in "
            f"{load_s:.1f} s; first page of {page} in {first_s * 1e3:.1f} ms; all {found:,} due rows claimed "
            f"(leased) in {claim_s * 1e3:.1f} ms"
        )
    finally:
        catalog.close()


def alt_part(root: Path, data: list[tuple[int, str, bytes, str, str]], now_ns: int, *, reverse: bool = False) -> None:
    """Both layouts on plain sqlite3: load, find the due rows, replace one key's rows."""
    layouts = [
        ("chosen", "CREATE TABLE lifecycle_due(due_ns INTEGER NOT NULL, bucket TEXT NOT NULL, key BLOB NOT NULL,"
                   " version_id TEXT NOT NULL, action TEXT NOT NULL, PRIMARY KEY(bucket, key, version_id, action))"
                   " WITHOUT ROWID; CREATE INDEX lifecycle_due_at ON lifecycle_due(due_ns);"),
        ("due_ns-first key", ALT_DDL),
    ]  # fmt: skip
    for name, ddl in reversed(layouts) if reverse else layouts:
        path = root / f"{name.replace(' ', '_')}-{int(reverse)}.db"
        c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.executescript(ddl)
        t0 = time.perf_counter()
        c.execute("BEGIN")
        c.executemany("INSERT INTO lifecycle_due VALUES(?,?,?,?,?)", data)
        c.execute("COMMIT")
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        due = c.execute("SELECT count(*) FROM (SELECT 1 FROM lifecycle_due WHERE due_ns<=?)", (now_ns,)).fetchone()[0]
        find_s = time.perf_counter() - t0
        sample = random.Random(2).sample(data, 2000)
        t0 = time.perf_counter()
        c.execute("BEGIN")
        for due_ns, bucket, key, vid, action in sample:
            c.execute("DELETE FROM lifecycle_due WHERE bucket=? AND key=? AND action<>'abort-upload'", (bucket, key))
            c.execute("INSERT INTO lifecycle_due VALUES(?,?,?,?,?)", (due_ns + NS, bucket, key, vid, action))
        c.execute("COMMIT")
        replace_us = (time.perf_counter() - t0) / len(sample) * 1e6
        size_mb = os.path.getsize(path) / 2**20
        c.close()
        print(
            f"sqlite3 {name:17s}: load {load_s:5.1f} s, {size_mb:5.0f} MiB; {due:,} due rows found in "
            f"{find_s * 1e3:6.1f} ms; one key's rows replaced in {replace_us:5.1f} us"
        )


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put_part(root: Path, puts: int) -> None:
    catalog = SqliteCatalog(root / "put.db")
    service = ObjectService(catalog, LocalBlobStore(root / "blobs"))
    never = LifecycleConfig((LifecycleRule("n", True, LifecycleFilter("prefix", "nomatch/"), LifecycleExpiration(30)),))
    every = LifecycleConfig((LifecycleRule("e", True, LifecycleFilter("all"), LifecycleExpiration(30)),))
    try:
        cases = (("no lifecycle", None), ("a rule matching no key", never), ("a rule matching every key", every))
        for name, config in cases:
            bucket = f"b{len(name)}"
            await service.create_bucket(bucket)
            if config is not None:
                doc = config.to_props()
                await catalog.update_bucket_props(bucket, lambda p, doc=doc: {**p, "lifecycle": doc})
            payload = os.urandom(4096)
            for i in range(100):  # warm up
                await service.put_object(bucket, f"warm/{i}", body(payload))
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(puts):
                await service.put_object(bucket, f"k/{i:08d}", body(payload))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"PUT 4 KiB, {name:26s}: {wall / puts * 1e6:7.1f} us/op wall, {cpu / puts * 1e6:7.1f} us/op CPU")
        print(f"due rows after the PUTs: {await catalog.lifecycle_due_count():,}")
    finally:
        catalog.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--page", type=int, default=200)
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="where the temporary catalogs go")
    parser.add_argument("--layouts-only", action="store_true", help="only the two layouts, in both orders")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    root = Path(tempfile.mkdtemp(prefix="ts-lc-due-", dir=args.dir))
    try:
        now_ns = time.time_ns()
        data = rows(args.rows, args.due, now_ns)
        if not args.layouts_only:
            await catalog_part(root, data, now_ns, args.page)
        alt_part(root, data, now_ns)
        if args.layouts_only:
            alt_part(root, data, now_ns, reverse=True)  # the other order: the first one pays the cold cache
        else:
            await put_part(root, args.puts)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
