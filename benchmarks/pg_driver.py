"""Which PostgreSQL driver should the scale-out catalog (issue 18) ride on? Measured, not guessed.

Two candidates, both async with a pool, against one real PostgreSQL on 127.0.0.1 (started here,
tests/postgres.py), each in its own fresh Python process on uvloop (as a granian worker runs), in
alternating rounds:

- ``asyncpg``: binary protocol, Cython, statements prepared and cached per connection; the pool's
  ``reset`` is a no-op, as the catalog will set it: by default asyncpg runs ``pg_advisory_unlock_all();
  CLOSE ALL; UNLISTEN *; RESET ALL`` on every release, one more round trip per checkout, and the
  catalog keeps no session state on pooled connections (transaction-scoped advisory locks, LISTEN on
  a connection of its own). ``asyncpg-reset`` is the default pool, to show what that costs;
- ``psycopg``: psycopg 3 (``psycopg[binary]``, the C build) with ``psycopg_pool.AsyncConnectionPool``,
  autocommit connections (a read is one round trip, as with asyncpg), server-side prepare after
  its default 5 executions.

The catalog's hot statements, on a ``versions`` table shaped as the PostgreSQL twin will be (key
``bytea``, the partial unique index on the latest version), preloaded with ``--keys`` rows:

``point``   SELECT the latest version of a random (bucket, key): every GET/HEAD;
``insert``  a transaction: supersede the latest (UPDATE ... is_latest) + INSERT a version row: every PUT;
``page``    a keyset page of 1,000 live keys after a random key: every LIST.

each at 1 and 16 concurrent callers (pool size = concurrency). Reported: ops/s, the client
process's CPU microseconds per op (``time.process_time``: all threads) and PostgreSQL's (the
postmaster and its children, from /proc, in 10 ms clock ticks: coarse on small runs) per op.
Ratios are against asyncpg.

psycopg is not a dependency of tierstore: ``.venv/bin/pip install 'psycopg[binary,pool]'`` first.

    PYTHONPATH=src .venv/bin/python benchmarks/pg_driver.py                 # ~3 minutes on a busy 2-core VM
    PYTHONPATH=src .venv/bin/python benchmarks/pg_driver.py --rounds 1 --scale 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the PostgreSQL fixture

DRIVERS = ("asyncpg", "asyncpg-reset", "psycopg")
CONCURRENCY = (1, 16)
BUCKET = "bench"
OPS = {"point": 4000, "insert": 1000, "page": 200}  # per (statement, concurrency), times --scale

DDL = """
CREATE TABLE versions(
    bucket text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    version_id text NOT NULL,
    is_latest boolean NOT NULL,
    is_delete_marker boolean NOT NULL DEFAULT false,
    size bigint NOT NULL,
    etag text NOT NULL,
    modified_ns bigint NOT NULL,
    meta text NOT NULL,
    blobs text NOT NULL,
    seq bigint NOT NULL,
    inline_id text,
    PRIMARY KEY(bucket, key, version_id)
);
CREATE UNIQUE INDEX versions_latest ON versions(bucket, key) WHERE is_latest;
"""
LOAD = """
INSERT INTO versions
SELECT 'bench', convert_to('data/' || lpad(i::text, 9, '0') || '.jpg', 'UTF8'), 'null', true, false,
       10000 + i % 5000, md5(i::text), 1700000000000000000 + i, '{"h":{"content-type":"image/jpeg"}}',
       '["' || md5((i * 7)::text) || '"]', i, NULL
FROM generate_series(0, LAST) AS i;
ANALYZE versions;
"""

POINT = (
    "SELECT version_id, is_delete_marker, size, etag, modified_ns, meta, blobs, inline_id"
    " FROM versions WHERE bucket = $1 AND key = $2 AND is_latest"
)
SUPERSEDE = "UPDATE versions SET is_latest = false WHERE bucket = $1 AND key = $2 AND is_latest"
INSERT = (
    "INSERT INTO versions(bucket, key, version_id, is_latest, size, etag, modified_ns, meta, blobs, seq)"
    " VALUES ($1, $2, $3, true, $4, $5, $6, $7, $8, $9)"
)
PAGE = (
    "SELECT key, size, etag, modified_ns, meta FROM versions"
    " WHERE bucket = $1 AND is_latest AND NOT is_delete_marker AND key > $2 ORDER BY key LIMIT 1000"
)


def _psycopg_sql(sql: str) -> str:
    """``$n`` -> ``%s`` (the statements use each parameter once, in order)."""
    out = sql
    for n in range(9, 0, -1):
        out = out.replace(f"${n}", "%s")
    return out


def _server_cpu_s(postmaster: int) -> float:
    """CPU seconds of the postmaster and all its children (backends, walwriter, checkpointer)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:  # its own, and that of the backends it reaped (cutime + cstime)
            total += sum(int(f) for f in fields[11:15])
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / tick


# --- one driver, in a child process ------------------------------------------------------------


class _Ops:
    """The three statements through one driver's pool."""

    point: Callable[[bytes], Awaitable[Any]]
    insert: Callable[[bytes, int], Awaitable[Any]]
    page: Callable[[bytes], Awaitable[int]]


async def _no_reset(con: Any) -> None:
    """The catalog's pool reset: nothing to undo (no session state on pooled connections)."""


async def _asyncpg_ops(dsn: str, size: int, *, reset: bool) -> tuple[_Ops, Callable[[], Awaitable[None]]]:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size, reset=None if reset else _no_reset)
    ops = _Ops()

    async def point(key: bytes) -> Any:
        async with pool.acquire() as con:
            return await con.fetchrow(POINT, BUCKET, key)

    async def insert(key: bytes, n: int) -> None:
        async with pool.acquire() as con, con.transaction():
            await con.execute(SUPERSEDE, BUCKET, key)
            await con.execute(INSERT, BUCKET, key, f"v{n}", 12345, "etag", time.time_ns(), "{}", "[]", n)

    async def page(after: bytes) -> int:
        async with pool.acquire() as con:
            return len(await con.fetch(PAGE, BUCKET, after))

    ops.point, ops.insert, ops.page = point, insert, page
    return ops, pool.close


async def _psycopg_ops(dsn: str, size: int) -> tuple[_Ops, Callable[[], Awaitable[None]]]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(dsn, min_size=size, max_size=size, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True)
    point_sql, supersede_sql, insert_sql, page_sql = map(_psycopg_sql, (POINT, SUPERSEDE, INSERT, PAGE))
    ops = _Ops()

    async def point(key: bytes) -> Any:
        async with pool.connection() as conn:
            cur = await conn.execute(point_sql, (BUCKET, key))
            return await cur.fetchone()

    async def insert(key: bytes, n: int) -> None:
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(supersede_sql, (BUCKET, key))
            await conn.execute(insert_sql, (BUCKET, key, f"v{n}", 12345, "etag", time.time_ns(), "{}", "[]", n))

    async def page(after: bytes) -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(page_sql, (BUCKET, after))
            return len(await cur.fetchall())

    ops.point, ops.insert, ops.page = point, insert, page
    return ops, pool.close


async def _measure(ops: _Ops, stmt: str, n: int, conc: int, keys: int, postmaster: int, tag: str) -> dict[str, Any]:
    rng = random.Random(1)
    todo = list(range(n))

    def key_of(i: int) -> bytes:
        return f"data/{i:09d}.jpg".encode()

    async def worker() -> None:
        while todo:
            i = todo.pop()
            if stmt == "point":
                row = await ops.point(key_of(rng.randrange(keys)))
                assert row is not None
            elif stmt == "insert":
                await ops.insert(f"w/{tag}/{i:09d}".encode(), i)
            else:
                got = await ops.page(key_of(rng.randrange(max(1, keys - 1000))))
                assert got == 1000, got

    # warm-up: connections open, statements prepared (psycopg prepares after 5 runs per connection)
    warm = todo[: conc * 8]
    del todo[: conc * 8]
    saved, todo[:] = list(todo), warm
    await asyncio.gather(*(worker() for _ in range(conc)))
    todo[:] = saved
    done = len(todo)
    s0, c0, t0 = _server_cpu_s(postmaster), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall, cpu, server = time.perf_counter() - t0, time.process_time() - c0, _server_cpu_s(postmaster) - s0
    return {"ops_s": done / wall, "client_us": cpu / done * 1e6, "server_us": server / done * 1e6}


async def _child_main(driver: str, dsn: str, keys: int, scale: float, postmaster: int, tag: str) -> None:
    out: dict[str, Any] = {}
    for conc in CONCURRENCY:
        if driver == "psycopg":
            ops, close = await _psycopg_ops(dsn, conc)
        else:
            ops, close = await _asyncpg_ops(dsn, conc, reset=driver == "asyncpg-reset")
        try:
            for stmt, base in OPS.items():
                n = max(conc * 10, int(base * scale))
                out[f"{stmt}/{conc}"] = await _measure(ops, stmt, n, conc, keys, postmaster, f"{tag}-{conc}")
        finally:
            await close()
    print(json.dumps(out))


def child(argv: list[str]) -> None:
    import uvloop

    driver, dsn, keys, scale, postmaster, tag = argv
    uvloop.run(_child_main(driver, dsn, int(keys), float(scale), int(postmaster), tag))


# --- the parent: server, rounds, report --------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=200_000, help="rows preloaded in the bucket")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the op counts")
    args = ap.parse_args()

    from tests.postgres import PostgreSQL

    pg = PostgreSQL()
    pg.start()
    try:
        dsn = pg.create_database("bench")
        pg.psql(DDL, "bench")
        pg.psql(LOAD.replace("LAST", str(args.keys - 1)), "bench")
        results: dict[str, list[dict[str, Any]]] = {d: [] for d in DRIVERS}
        for r in range(args.rounds):
            order = DRIVERS if r % 2 == 0 else DRIVERS[::-1]  # alternating: drift hits each alike
            for driver in order:
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), str(HERE.parent)]))
                out = subprocess.run(
                    [sys.executable, __file__, "--child", driver, dsn, str(args.keys), str(args.scale),
                     str(pg.pid), f"{driver}{r}"],
                    capture_output=True, text=True, env=env, check=False,
                )  # fmt: skip
                if out.returncode != 0:
                    raise SystemExit(f"{driver} failed:\n{out.stderr}")
                results[driver].append(json.loads(out.stdout.strip().splitlines()[-1]))
        report(results, args)
    finally:
        pg.cleanup()


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def med(driver: str, case: str, what: str) -> float:
        return statistics.median(r[case][what] for r in results[driver])

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "n/a (under a clock tick)"

    import asyncpg
    import psycopg

    print(f"# {platform.node()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
          f"{args.keys:,} keys, {args.rounds} rounds (medians), asyncpg {asyncpg.__version__}, "
          f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__})")  # fmt: skip
    print("| statement | conc | driver | ops/s | client CPU µs/op | PostgreSQL CPU µs/op |")
    print("|---|---:|---|---:|---:|---:|")
    cases = [f"{s}/{c}" for c in CONCURRENCY for s in OPS]
    for case in cases:
        stmt, conc = case.split("/")
        for d in DRIVERS:
            print(f"| {stmt} | {conc} | {d} | {med(d, case, 'ops_s'):,.0f} | {med(d, case, 'client_us'):,.0f} "
                  f"| {med(d, case, 'server_us'):,.0f} |")  # fmt: skip
    for other in DRIVERS[1:]:
        print(f"\n{other} / asyncpg (ops/s: >1 {other} faster; CPU: >1 {other} costlier)\n")
        print("| statement | conc | ops/s | client CPU | PostgreSQL CPU |")
        print("|---|---:|---:|---:|---:|")
        for case in cases:
            stmt, conc = case.split("/")
            r = [ratio(med(other, case, w), med("asyncpg", case, w)) for w in ("ops_s", "client_us", "server_us")]
            print(f"| {stmt} | {conc} | {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
