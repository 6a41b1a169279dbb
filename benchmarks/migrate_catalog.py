"""``tierstore admin migrate`` (issue 18): rows/s copying an embedded catalog of ``--versions``
versions (100,000 by default) into PostgreSQL, and the bulk path against the row-by-row one.

An embedded catalog (SQLite, current schema) gets ``--buckets`` buckets and ``--versions``
version rows shaped as a PUT writes them (a metadata document with headers, user metadata and a
checksum; one blob per version, its ``blobs`` row), written straight into its tables (the
benchmark measures the copy, not PUTs). Then, against a real PostgreSQL on 127.0.0.1 (started
here, tests/postgres.py):

``copy``      ``migrate_catalog`` as the command runs it: every table in pages of ``--batch``
              rows, each page one ``COPY`` (``copy_records_to_table``) + its cursor in one
              transaction, then the verification (count and digest of every table, both sides);
``rowwise``   the peer: the same version records with ``executemany`` of an ``INSERT`` in
              transactions of ``--batch`` rows, the usual row-by-row path (versions only).

Reported: wall seconds, rows/s, the client's CPU (``time.process_time``) and PostgreSQL's
(postmaster and children from /proc) per 1,000 rows, and the ratio copy/rowwise for the
versions table alone. The machine is shared: say its load (``uptime``) next to the numbers.

    PYTHONPATH=src .venv/bin/python benchmarks/migrate_catalog.py                  # ~1-2 minutes
    PYTHONPATH=src .venv/bin/python benchmarks/migrate_catalog.py --versions 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the PostgreSQL fixture

from benchmarks.pg_driver import _server_cpu_s  # noqa: E402
from tests.postgres import PostgreSQL  # noqa: E402

from tierstore.catalog import SqliteCatalog  # noqa: E402


def build_source(path: Path, buckets: int, versions: int) -> None:
    SqliteCatalog(path).close()  # the current schema
    conn = sqlite3.connect(path)
    now = time.time_ns()
    with conn:
        conn.executemany(
            "INSERT INTO buckets(name, created_ns, region, props) VALUES(?, ?, 'us-east-1', '{}')",
            [(f"bench-{b}", now) for b in range(buckets)],
        )
        rows, blobs = [], []
        for i in range(versions):
            blob_id = f"{i:032x}"
            meta = json.dumps(
                {
                    "h": {"content-type": "application/octet-stream"},
                    "u": {"label": str(i % 10), "shard": str(i)},
                    "c": {"crc32c": "AAAAAA=="},
                },
                separators=(",", ":"),
            )
            key = f"train/shard-{i // 1000:04d}/sample-{i:08d}.bin".encode()
            rows.append(
                (
                    f"bench-{i % buckets}",
                    key,
                    f"v{i:020d}",
                    1,
                    0,
                    4096,
                    f'"{i:032x}"',
                    now + i,
                    meta,
                    json.dumps([[blob_id, 4096]]),
                    1,
                    None,
                )
            )
            blobs.append((blob_id, 4096, 1))
        conn.executemany("INSERT INTO versions VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO blobs(blob_id, size, refs) VALUES(?, ?, ?)", blobs)
    conn.close()


async def run_copy(source_path: Path, dsn: str, batch: int, postmaster: int) -> dict[str, float]:
    from tierstore.catalog.postgres._from_sqlite import SourceCatalog, migrate_catalog

    source = SourceCatalog(source_path)
    cpu0, pg0, t0 = time.process_time(), _server_cpu_s(postmaster), time.perf_counter()
    report = await migrate_catalog(source, dsn, "bench-store", batch_rows=batch)
    wall, cpu, pg = time.perf_counter() - t0, time.process_time() - cpu0, _server_cpu_s(postmaster) - pg0
    source.close()
    assert not report.mismatched, report.mismatched
    rows = sum(t.target_rows for t in report.tables)
    print(f"migrate: copy {report.copy_s:.2f} s ({rows / report.copy_s:,.0f} rows/s), verify {report.verify_s:.2f} s")
    return {"rows": rows, "wall_s": wall, "cpu_s": cpu, "pg_s": pg}


async def run_versions(source_path: Path, dsn: str, batch: int, postmaster: int, *, bulk: bool) -> dict[str, float]:
    """The versions table alone, COPY or executemany, into a fresh migrated database."""
    import asyncpg

    from tierstore.catalog.postgres._from_sqlite import TABLES, SourceCatalog
    from tierstore.catalog.postgres._schema import migrate

    await migrate(dsn, dsn, timeout_s=30)
    source = SourceCatalog(source_path)
    buckets, versions = TABLES[0], TABLES[1]
    conn = await asyncpg.connect(dsn)
    await conn.copy_records_to_table("buckets", records=list(source.rows(buckets)), columns=buckets.pg_columns)
    ids = {r["name"]: r["id"] for r in await conn.fetch("SELECT name, id FROM buckets")}
    insert = (
        f"INSERT INTO versions({', '.join(versions.pg_columns)}) "
        f"VALUES({', '.join(f'${i + 1}' for i in range(len(versions.pg_columns)))})"
    )
    cpu0, pg0, t0 = time.process_time(), _server_cpu_s(postmaster), time.perf_counter()
    n, after = 0, None
    while rows := source.page(versions, after, batch):
        after = rows[-1][: len(versions.key)]
        records = [r for r in (versions.convert(row, ids) for row in rows) if r is not None]
        async with conn.transaction():
            if bulk:
                await conn.copy_records_to_table("versions", records=records, columns=versions.pg_columns)
            else:
                await conn.executemany(insert, records)
        n += len(records)
    wall, cpu, pg = time.perf_counter() - t0, time.process_time() - cpu0, _server_cpu_s(postmaster) - pg0
    await conn.close()
    source.close()
    return {"rows": n, "wall_s": wall, "cpu_s": cpu, "pg_s": pg}


def _line(name: str, r: dict[str, float]) -> str:
    k = r["rows"] / 1000
    return (
        f"{name:<24}{r['rows']:>9.0f} rows {r['wall_s']:>7.2f} s {r['rows'] / r['wall_s']:>10,.0f} rows/s"
        f"  client CPU {r['cpu_s'] / k * 1000:>6.1f} ms/1k rows  PostgreSQL CPU {r['pg_s'] / k * 1000:>6.1f} ms/1k rows"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", type=int, default=100_000)
    ap.add_argument("--buckets", type=int, default=4)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tierstore-migrate-bench-"))
    source = tmp / "catalog.db"
    t0 = time.perf_counter()
    build_source(source, args.buckets, args.versions)
    print(
        f"source: {args.versions:,} versions + {args.versions:,} blobs in {args.buckets} buckets "
        f"({source.stat().st_size / 1e6:.1f} MB, built in {time.perf_counter() - t0:.1f} s)"
    )
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; batch {args.batch} rows")
    pg = PostgreSQL()
    pg.start()
    try:
        full = asyncio.run(run_copy(source, pg.create_database("full"), args.batch, pg.pid))
        bulk = asyncio.run(run_versions(source, pg.create_database("bulk"), args.batch, pg.pid, bulk=True))
        rowwise = asyncio.run(run_versions(source, pg.create_database("rowwise"), args.batch, pg.pid, bulk=False))
    finally:
        pg.stop()
        pg.cleanup()
    print(_line("migrate (all, verified)", full))
    print(_line("versions: COPY", bulk))
    print(_line("versions: executemany", rowwise))
    print(
        f"versions COPY / executemany: {rowwise['wall_s'] / bulk['wall_s']:.1f}x the rows/s, "
        f"{bulk['cpu_s'] / rowwise['cpu_s']:.2f}x the client CPU, {bulk['pg_s'] / max(rowwise['pg_s'], 1e-9):.2f}x "
        "PostgreSQL's CPU"
    )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
