"""Does the metadata query on PostgreSQL (issue 18) want a GIN index over ``versions.meta``?

The PostgreSQL dialect (catalog/_query.py ``compile_postgres``) reads each current version's
metadata document in place; a positive equality on a meta or tag string also says
``v.meta::jsonb @> '{"u": {...}}'``, which a GIN index (``jsonb_path_ops`` over ``meta::jsonb``,
partial: current versions) can answer. This measures both sides of that index on one real
PostgreSQL (tests/postgres.py):

- **writes**: a PUT's version row with and without the index: WAL bytes per row (deterministic)
  and the PostgreSQL processes' CPU per row (from /proc; noisy on a shared machine);
- **queries** over ``--objects`` current versions (each with headers, a checksum, four user
  metadata fields and a tag, as a PUT stores them): PostgreSQL's execution time (median of
  ``--repeat``) and shared buffers touched, from ``EXPLAIN (ANALYZE, BUFFERS)``, with the index
  and after ``DROP INDEX``.

    PYTHONPATH=src .venv/bin/python benchmarks/pg_query.py                 # ~2 minutes on a busy 2-core VM
    PYTHONPATH=src .venv/bin/python benchmarks/pg_query.py --objects 20000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the PostgreSQL fixture

DATASETS = ["imagenet@1", "imagenet@2", "imagenet@3", "cifar10", "coco@7", "laion@1"]
STATUSES = ["tested", "untested", "failed", "staged"]
QUERIES = {
    "rare string =": "meta.run = 'r-{rare}'",
    "common string =": "meta.dataset = 'imagenet@3'",
    "two strings =": "tag.status = 'failed' AND meta.dataset = 'cifar10'",
    "string IN": "meta.run IN ('r-{rare}', 'r-{rare2}')",
    "number range, by it": "meta.loss < 0.001 ORDER BY meta.loss LIMIT 10",
    "sort by number": "ORDER BY meta.loss DESC LIMIT 10",
    "key prefix": "key STARTS WITH 'data/0001'",
}


def doc(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "h": {"content-type": "application/x-tar"},
        "c": {"crc32c": f"{rng.getrandbits(32):08x}"},
        "u": {
            "run": f"r-{i}",
            "dataset": rng.choice(DATASETS),
            "loss": repr(round(rng.random(), 6)),
            "epoch": str(rng.randrange(100)),
        },
        "t": {"status": rng.choice(STATUSES)},
    }


def pg_cpu_ticks(pid: int) -> int:
    """utime + stime (clock ticks) of ``pid`` and its children alive now plus those reaped."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if entry.name == str(pid) or fields[1] == str(pid):
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total


async def insert(conn: Any, bucket_id: int, first: int, n: int, rng: random.Random) -> None:
    rows = [
        (bucket_id, f"data/{i:07d}.tar".encode(), "null", 4096, f'"{i:032x}"', i, json.dumps(doc(i, rng)),
         f'[["b{i}",4096]]')
        for i in range(first, first + n)
    ]  # fmt: skip
    await conn.executemany(
        "INSERT INTO versions(bucket_id, key, version_id, is_latest, size, etag, modified_ns, meta, blobs, seq)"
        " VALUES($1, $2, $3, true, $4, $5, $6, $7::json, $8::json, 1)",
        rows,
    )


async def write_cost(conn: Any, pg_pid: int, bucket_id: int, first: int, n: int, batch: int) -> dict[str, float]:
    """WAL bytes and PostgreSQL CPU per version row, inserted ``batch`` rows per transaction."""
    rng = random.Random(first)
    lsn0 = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
    cpu0, t0 = pg_cpu_ticks(pg_pid), time.perf_counter()
    for start in range(first, first + n, batch):
        await insert(conn, bucket_id, start, batch, rng)
    await conn.execute("CHECKPOINT")  # includes the GIN pending list's flushes, if any were deferred
    wall, cpu = time.perf_counter() - t0, pg_cpu_ticks(pg_pid) - cpu0
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", lsn0)
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    return {"wal_bytes": float(wal) / n, "pg_cpu_us": cpu * tick_us / n, "wall_us": wall * 1e6 / n}


async def explain(conn: Any, sql: str, params: list[Any], repeat: int) -> dict[str, float]:
    times, buffers = [], 0
    for _ in range(repeat):
        plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *params))[0]
        times.append(plan["Execution Time"])
        top = plan["Plan"]
        buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
    return {"ms": statistics.median(times), "buffers": buffers}


async def run(args: argparse.Namespace, dsn: str, pg_pid: int) -> dict[str, Any]:
    import asyncpg

    from tierstore.catalog._query import compile_postgres, parse
    from tierstore.catalog.postgres import PostgresCatalog

    await (await PostgresCatalog.open(dsn)).close()  # the schema, with the GIN index
    conn = await asyncpg.connect(dsn)
    try:
        ids = {}
        for name in ("q", "w-gin", "w-plain"):
            ids[name] = await conn.fetchval(
                "INSERT INTO buckets(name, created_ns, region) VALUES($1, 1, 'us-east-1') RETURNING id", name
            )
        rng = random.Random(18)
        for start in range(0, args.objects, 5000):
            await insert(conn, ids["q"], start, min(5000, args.objects - start), rng)
        await conn.execute("VACUUM ANALYZE versions")
        rare = args.objects // 3
        texts = {k: v.format(rare=rare, rare2=rare + 7) for k, v in QUERIES.items()}
        compiled = {k: compile_postgres(parse(t), "q") for k, t in texts.items()}
        out: dict[str, Any] = {"queries": texts, "with": {}, "without": {}}
        out["write_with"] = await write_cost(conn, pg_pid, ids["w-gin"], 0, args.writes, args.batch)
        out["index_mb"] = await conn.fetchval("SELECT pg_relation_size('versions_meta')") / 2**20
        for name, (sql, params) in compiled.items():
            out["with"][name] = await explain(conn, sql, params, args.repeat)
        await conn.execute("DROP INDEX versions_meta")
        out["write_without"] = await write_cost(conn, pg_pid, ids["w-plain"], 0, args.writes, args.batch)
        for name, (sql, params) in compiled.items():
            out["without"][name] = await explain(conn, sql, params, args.repeat)
        return out
    finally:
        await conn.close()


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"# {platform.node()} {time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.1f}; {args.objects:,}"
          f" current versions, {args.writes:,} rows written per side ({args.batch} per transaction)")  # fmt: skip
    w, wo = out["write_with"], out["write_without"]
    print("\n| a version row written | with the GIN index | without | ratio |\n|---|---|---|---|")
    for key, label in (("wal_bytes", "WAL bytes"), ("pg_cpu_us", "PostgreSQL CPU µs"), ("wall_us", "wall µs")):
        print(f"| {label} | {w[key]:.0f} | {wo[key]:.0f} | {w[key] / wo[key]:.2f}x |")
    print(f"\nGIN index size: {out['index_mb']:.1f} MiB for {args.objects + args.writes:,} current versions")
    print("\n| query | with: ms | buffers | without: ms | buffers | without / with (ms) |\n|---|---|---|---|---|---|")
    for name, text in out["queries"].items():
        a, b = out["with"][name], out["without"][name]
        cells = f"{a['ms']:.2f} | {a['buffers']} | {b['ms']:.2f} | {b['buffers']} | {b['ms'] / a['ms']:.1f}x"
        print(f"| `{text}` | {cells} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--writes", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1, help="rows per transaction when measuring writes")
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()

    from tests.postgres import PostgreSQL

    pg = PostgreSQL()
    pg.start()
    try:
        dsn = pg.create_database("bench")
        assert pg.pid is not None
        out = asyncio.run(run(args, dsn, pg.pid))
        report(out, args)
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
