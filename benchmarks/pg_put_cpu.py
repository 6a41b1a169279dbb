"""PostgreSQL's CPU per small PUT and GET of the catalog (issue 18, "a small PUT's PostgreSQL CPU").

One real PostgreSQL (tests/postgres.py, ``pg_stat_statements`` preloaded, ``track = all``), one
database per tree. Each tree (``NAME=SRC_DIR``) runs in its own fresh Python process, in
alternating rounds (A/B back to back): it opens ``PostgresCatalog`` as a gateway does, creates a
bucket, then ``--puts`` 4 KiB inline PUTs (``put_version``, new keys, 16 concurrent callers) and
as many GETs of them with their bodies (``get_latest(data=True)``). Reported per request: the
PostgreSQL CPU (postmaster and all children, /proc, 10 ms ticks) and the client process's CPU;
with ``--statements``, the top statements by execution time per PUT (pg_stat_statements, nested
ones included: the lines of ``tierstore_publish`` show on their own).

    PYTHONPATH=src .venv/bin/python benchmarks/pg_put_cpu.py base=../t_base/src new=src --rounds 3
    # a schema variant: NAME=SRC;SQL (run after the catalog opened, before the PUTs)
    PYTHONPATH=src .venv/bin/python benchmarks/pg_put_cpu.py a=src 'b=src;DROP INDEX versions_meta'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the PostgreSQL fixture

from benchmarks.pg_driver import _server_cpu_s  # noqa: E402

CONCURRENCY = 16
BODY = os.urandom(4096)  # 4 KiB, incompressible (as s3bench's)


async def _child(dsn: str, postmaster: int, puts: int, tag: str, statements: bool) -> dict[str, float]:
    import asyncpg

    from tierstore.catalog import VersionRecord
    from tierstore.catalog.postgres import PostgresCatalog
    from tierstore.types import BucketInfo, ObjectMeta

    cat = await PostgresCatalog.open(dsn, pool_size=CONCURRENCY)
    bucket = f"b{tag}"
    await cat.create_bucket(BucketInfo(bucket, time.time_ns()))
    admin = await asyncpg.connect(dsn)
    if os.environ.get("PG_PUT_CPU_SQL"):  # a schema variant to try (NAME=SRC;SQL)
        await admin.execute(os.environ["PG_PUT_CPU_SQL"])
    out: dict[str, float] = {}

    async def run(name: str, op: object) -> None:
        queue = iter(range(puts))

        async def worker() -> None:
            for i in queue:
                await op(i)  # type: ignore[operator]

        if statements:
            await admin.execute("SELECT pg_stat_statements_reset()")
        s0, c0 = _server_cpu_s(postmaster), time.process_time()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        s1, c1 = _server_cpu_s(postmaster), time.process_time()
        out[f"{name}_pg_us"] = (s1 - s0) / puts * 1e6
        out[f"{name}_client_us"] = (c1 - c0) / puts * 1e6
        if statements:
            rows = await admin.fetch(
                "SELECT calls, total_exec_time, query FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " ORDER BY total_exec_time DESC LIMIT 12"
            )
            for r in rows:
                q = " ".join(r["query"].split())[:110]
                per = r["total_exec_time"] * 1000 / puts
                print(f"  {name} {per:8.1f} us/op {r['calls'] / puts:5.2f} calls/op  {q}")

    async def put(i: int) -> None:
        m = ObjectMeta(bucket=bucket, key=f"k/{i:08d}", version_id="", size_bytes=len(BODY), etag=f'"{i:032x}"',
                       modified_ns=time.time_ns())  # fmt: skip
        from tierstore.runtime import new_version_id

        m.version_id = new_version_id()
        await cat.put_version(VersionRecord(meta=m, inline_data=BODY))

    async def get(i: int) -> None:
        rec = await cat.get_latest(bucket, f"k/{i:08d}", data=True)
        assert rec is not None and rec.inline_data == BODY

    await run("put", put)
    await run("get", get)
    await admin.close()
    await cat.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="*", help="NAME=SRC_DIR (default: this tree)")
    ap.add_argument("--puts", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--statements", action="store_true", help="print the top statements per op")
    ap.add_argument("--child", nargs=4, metavar=("DSN", "POSTMASTER", "TAG", "STATEMENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        dsn, pm, tag, st = args.child
        print(json.dumps(asyncio.run(_child(dsn, int(pm), args.puts, tag, st == "1"))))
        return
    from tests.postgres import PostgreSQL

    trees = [t.split("=", 1) for t in args.trees] or [["this", str(HERE.parent / "src")]]
    sqls = {name: src.split(";", 1)[1] if ";" in src else "" for name, src in trees}
    trees = [[name, src.split(";", 1)[0]] for name, src in trees]
    pg = PostgreSQL(settings={"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"})
    pg.start()
    try:
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
        for rnd in range(args.rounds):
            for name, src in trees:
                db = f"{name}_{rnd}"
                pg.create_database(db)
                pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", db)
                env = {**os.environ, "PYTHONPATH": f"{Path(src).resolve()}:{HERE.parent}", "PG_PUT_CPU_SQL": sqls[name]}
                cmd = [sys.executable, __file__, "--puts", str(args.puts), "--child", pg.dsn(db), str(pg.pid), name,
                       "1" if args.statements else "0"]  # fmt: skip
                done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                lines = done.stdout.strip().splitlines()
                for line in lines[:-1]:
                    print(f"[{name} r{rnd}] {line}")
                r = json.loads(lines[-1])
                results[name].append(r)
                print(f"round {rnd} {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()),
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        print("\nmedian per request (us):")
        for name, rs in results.items():
            keys = rs[0].keys()
            print(f"  {name}: " + ", ".join(f"{k} {sorted(r[k] for r in rs)[len(rs) // 2]:.0f}" for k in keys))
    finally:
        pg.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()
