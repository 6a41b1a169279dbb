"""A 4 KiB PUT through a real gateway on PostgreSQL, source trees A/B (issue 18, "the 4 KiB PUT,
session 12 part 2").

One PostgreSQL (tests/postgres.py); per round and tree (``NAME=SRC_DIR``, alternating) a fresh
database and ``tierstore serve --workers 1 --catalog ...`` from that tree, then s3bench's
``small_put_4k`` (../shared/bench/s3bench.py, 16 in flight, signed payloads; ``--keep-bucket``: the
phase is PUTs only). Reported per PUT: the gateway worker's CPU (s3bench's ``server_cpu_us_per_op``),
the catalog's PostgreSQL CPU (postmaster and children, /proc) and, with ``perf`` on PATH, the
worker's context switches (``perf stat``): the thread switches a GIL release costs show there.

    PYTHONPATH=src .venv/bin/python benchmarks/gateway_put_ab.py base=../t_base/src new=src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the PostgreSQL fixture

from benchmarks.pg_driver import _server_cpu_s  # noqa: E402

S3BENCH = HERE.parent.parent / "shared" / "bench" / "s3bench.py"  # the worktrees' shared yardstick
AK, SK = "benchaccess", "benchsecret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one(pg: object, db: str, src: str, work: Path, scale: float) -> dict[str, float]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    cmd = [sys.executable, "-m", "tierstore", "serve", "--data", str(work / "data"), "--catalog", pg.dsn(db),  # type: ignore[attr-defined]
           "--address", f"127.0.0.1:{port}", "--workers", "1", "--access-key", AK, "--secret-key", SK]  # fmt: skip
    with open(work / "serve.log", "w") as log:
        gw = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(1.5)  # the worker's lifespan (catalog pool, caches)
        ps = subprocess.run(["ps", "--ppid", str(gw.pid), "-o", "pid="], capture_output=True, text=True, check=True)
        worker = int(ps.stdout.split()[0])
        perf = None
        if shutil.which("perf"):
            perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "context-switches", "-p", str(worker),
                                     "-o", str(work / "perf.txt")])  # fmt: skip
        pg0 = _server_cpu_s(pg.pid)  # type: ignore[attr-defined]
        out = subprocess.run(
            [sys.executable, str(S3BENCH), "--endpoint", f"http://127.0.0.1:{port}", "--access-key", AK,
             "--secret-key", SK, "--only", "small_put_4k", "--scale", str(scale), "--server-pid", str(worker),
             "--max-seconds", "60", "--keep-bucket"],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""},
        ).stdout  # fmt: skip
        pg1 = _server_cpu_s(pg.pid)  # type: ignore[attr-defined]
        switches = None
        if perf is not None:
            perf.send_signal(2)
            perf.wait(10)
            for line in (work / "perf.txt").read_text().splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[2] == "context-switches" and parts[0].isdigit():
                    switches = float(parts[0])
        m = next(json.loads(x) for x in out.splitlines() if '"scenario"' in x)
        r = {"ops_per_s": m["ops_per_s"], "gateway_us": m["server_cpu_us_per_op"],
             "postgres_us": (pg1 - pg0) / m["ops"] * 1e6}  # fmt: skip
        if switches is not None:
            r["switches"] = switches / m["ops"]
        return r
    finally:
        os.killpg(gw.pid, 15)
        gw.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="+", help="NAME=SRC_DIR")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=0.25, help="s3bench --scale (0.25: 5,000 PUTs)")
    args = ap.parse_args()
    from tests.postgres import PostgreSQL

    trees = [t.split("=", 1) for t in args.trees]
    pg = PostgreSQL()
    pg.start()
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    try:
        for rnd in range(args.rounds):
            for name, src in trees:
                db = f"{name}_{rnd}"
                pg.create_database(db)
                with tempfile.TemporaryDirectory() as tmp:
                    r = _one(pg, db, src, Path(tmp), args.scale)
                results[name].append(r)
                print(f"round {rnd} {name}: " + ", ".join(f"{k} {v:,.2f}" for k, v in r.items()),
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        print("\nmedian per PUT:")
        for name, rs in results.items():
            print(f"  {name}: " + ", ".join(f"{k} {sorted(r[k] for r in rs)[len(rs) // 2]:,.2f}" for k in rs[0]))
    finally:
        pg.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()
