"""Issue 18, side by side in one run: a tierstore gateway on PostgreSQL + SeaweedFS against
SeaweedFS's own S3 gateway with its filer on the same PostgreSQL; inline bodies against bodies in
the store; a page of a 10,000,000-key listing; the CPU per request behind a capacity model.

    PYTHONPATH=src .venv/bin/python benchmarks/scale_out_side_by_side.py --json scale.json
    PYTHONPATH=src .venv/bin/python benchmarks/scale_out_side_by_side.py --scale 0.2 --keys 1000000

- **Servers**, all on 127.0.0.1, stopped by PID: one PostgreSQL (tests/postgres.py: ``initdb`` in
  a temp dir; databases ``seaweedfs``, ``tierstore``, ``tierstore_noinline``); one SeaweedFS
  (tests/seaweed.py: master, volume, filer and S3 gateway in one ``weed server``) whose filer keeps
  its metadata in that PostgreSQL (``filer.toml``: ``[postgres2]`` on database ``seaweedfs``;
  checked after start: the filer's table has rows); gateway **A**, ``tierstore serve --catalog
  postgresql://.../tierstore --store s3://tierstore-blobs/a?endpoint=<that SeaweedFS>``, and gateway
  **B**, the same with ``--inline-max-bytes 0`` on ``tierstore_noinline`` and prefix ``b`` (every
  body in the store).
- **Load**: ../shared/bench/s3bench.py through benchmarks/_s3bench_groups.py (s3bench's load, plus
  1 and 16 KiB scenarios and CPU per named process group). Side by side: ``small_put_4k``,
  ``small_get_4k``, ``small_put_128k``, ``small_get_128k``, ``list`` (a ListObjectsV2 walk of 100,000
  keys at scale 1), against SeaweedFS's S3 gateway and against A, SeaweedFS first in each pass.
  Inline: ``small_{put,get}_{1,4,16}k`` against A (inline) and B (in the store).
- **CPU per request**, from /proc, per process group over each phase: the tierstore gateway (its
  granian tree), PostgreSQL (postmaster and every backend, exited ones included through the
  postmaster's ``cutime``; split by database from each backend's title), SeaweedFS (``weed``: for
  tierstore it is the store; for SeaweedFS the whole server). Robust on this shared machine where
  rates are not; the capacity model is built from it.
- **10M-key listing** (``--keys``, 0 skips): a bucket through A, then ``--keys`` rows put into
  its catalog's ``versions`` table directly, a BENCHMARK-ONLY SHORTCUT: one ``INSERT ... SELECT
  FROM generate_series`` with the table's indexes dropped first and rebuilt after (each from its
  own ``pg_indexes`` definition), the rows copied from a real row PUT through A (an empty object,
  body reference cleared). Keys ``dNNNNN/fNNN``: 1,000 per "directory". Then pages of
  ListObjectsV2 (1,000 keys) through A, timed (median of 7 after 1 warm-up, wall time of the
  signed HTTP request): at the start, middle and end, with the delimiter ``/`` at the root (1,000
  common prefixes), with a prefix, and prefix + delimiter; each page's count checked. EXPLAIN
  (ANALYZE) of the listing's own SQL (``catalog/postgres/_listing.py``) at the middle.

Prints the tables and ratios; ``--json PATH`` writes everything.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # s3_side_by_side, tests/ (PostgreSQL, SeaweedFS, SigV4)

from s3_side_by_side import AK, SK, Tierstore, _sigterm, loadavg, machine, median  # noqa: E402
from tests.postgres import PostgreSQL  # noqa: E402
from tests.s3http import EMPTY_SHA256, sign_v4  # noqa: E402
from tests.seaweed import SeaweedFS  # noqa: E402

from tierstore.catalog.postgres._listing import _SCAN_DELIMITED_AFTER, _SCAN_LATEST_AFTER  # noqa: E402

WRAPPER = HERE / "_s3bench_groups.py"
STORE_BUCKET = "tierstore-blobs"
SIDE = ["small_put_4k", "small_get_4k", "small_put_128k", "small_get_128k"]
INLINE = [f"small_{op}_{kib}k" for kib in (1, 4, 16) for op in ("put", "get")]
BIG_BUCKET = "big"
FILER_TOML = """\
[postgres2]
enabled = true
createTable = \"\"\"
  CREATE TABLE IF NOT EXISTS "%s" (
    dirhash   BIGINT,
    name      VARCHAR(65535),
    directory VARCHAR(65535),
    meta      bytea,
    PRIMARY KEY (dirhash, name)
  );
\"\"\"
hostname = "127.0.0.1"
port = {port}
username = "postgres"
password = ""
database = "seaweedfs"
schema = ""
sslmode = "disable"
connection_max_idle = 16
connection_max_open = 32
connection_max_lifetime_seconds = 0
pgbouncer_compatible = false
enableUpsert = true
upsertQuery = \"\"\"
  INSERT INTO "%[1]s" (dirhash, name, directory, meta)
    VALUES($1, $2, $3, $4)
    ON CONFLICT (dirhash, name) DO UPDATE SET
      directory=EXCLUDED.directory,
      meta=EXCLUDED.meta
\"\"\"
"""


class SeaweedOnPostgres(SeaweedFS):
    """``weed server`` whose filer stores its metadata in PostgreSQL: ``filer.toml`` in its data
    dir, which is the process's working directory while it starts (the filer reads ``./filer.toml``
    first)."""

    label = "seaweedfs"

    def __init__(self, data_dir: Path, pg_port: int) -> None:
        super().__init__(data_dir)
        self.pg_port = pg_port

    def start(self, timeout_s: float = 120.0, attempts: int = 3) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "filer.toml").write_text(FILER_TOML.replace("{port}", str(self.pg_port)))
        cwd = os.getcwd()
        os.chdir(self.data_dir)
        try:
            super().start(timeout_s, attempts)
        finally:
            os.chdir(cwd)


# --- running s3bench -------------------------------------------------------------------------


def run_s3bench(label: str, port: int, ak: str, sk: str, only: list[str], groups: dict[str, list[int]],
                args: argparse.Namespace, out: Path, warnings: list[str]) -> list[dict[str, Any]]:
    cmd = [sys.executable, str(WRAPPER), "--endpoint", f"http://127.0.0.1:{port}", "--access-key", ak,
           "--secret-key", sk, "--label", label, "--only", ",".join(only), "--scale", str(args.scale),
           "--repeat", str(args.repeat), "--max-seconds", str(args.max_seconds)]
    print(f"[bench] {label}: {' '.join(only)} (groups {groups})", file=sys.stderr, flush=True)
    env = dict(os.environ, S3BENCH_CPU_GROUPS=json.dumps(groups))
    with open(out, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, env=env, start_new_session=True)
        try:
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if rc:
        warnings.append(f"{label} {only}: s3bench exited with {rc}")
    rows = []
    for line in out.read_text().splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if "summary" in row or "scenario" not in row:
                continue
            for flag in ("errors", "fatal", "truncated"):
                if row.get(flag):
                    samples = row.get("error_samples", "")
                    warnings.append(f"{label} {row['scenario']}: {flag} = {row.get(flag)} {samples}")
            if row["scenario"] == "list" and row.get("keys") != row.get("expected_keys"):
                warnings.append(f"{label} list: walked {row.get('keys')} keys, expected {row.get('expected_keys')}")
            rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> Summary:
    """label -> scenario -> {ops_per_s | seconds | <group CPU us/op>: median over repeats}."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        m = acc.setdefault(r["label"], {}).setdefault(r["scenario"], {})
        for k in ("ops_per_s", "seconds", "pages"):
            if isinstance(r.get(k), (int, float)):
                m.setdefault(k, []).append(float(r[k]))
        for g, us in (r.get("cpu_us_per_op_by_group") or {}).items():
            m.setdefault(g, []).append(float(us))
    return {lab: {s: {k: median(v) for k, v in ms.items()} for s, ms in ss.items()} for lab, ss in acc.items()}


def total_us(m: dict[str, float]) -> float:
    return sum(m.get(g, 0.0) for g in ("gateway", "postgres", "seaweedfs"))


def rate(m: dict[str, float], scen: str) -> float | None:
    if scen == "list":  # pages per second of the walk
        return m["pages"] / m["seconds"] if m.get("seconds") and m.get("pages") else None
    return m.get("ops_per_s")


def us(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


Summary = dict[str, dict[str, dict[str, float]]]


def side_table(summary: Summary, scenarios: list[str]) -> tuple[str, list[dict[str, Any]]]:
    ts, sw = summary.get("tierstore", {}), summary.get("seaweedfs", {})
    lines = ["| scenario | tierstore | SeaweedFS | ratio"
             " | tierstore CPU us/req: gateway + PostgreSQL + SeaweedFS = total"
             " | SeaweedFS CPU us/req: weed + PostgreSQL = total | CPU ratio |", "|---|---|---|---|---|---|---|"]
    out = []
    for scen in scenarios:
        a, b = ts.get(scen), sw.get(scen)
        if not a or not b:
            continue
        ra, rb = rate(a, scen), rate(b, scen)
        ratio = ra / rb if ra and rb else None
        unit = "pages/s" if scen == "list" else "ops/s"
        cpu_ratio = total_us(b) / total_us(a) if total_us(a) else None
        lines.append(
            f"| {scen} | {ra or 0:,.0f} {unit} | {rb or 0:,.0f} {unit} | {ratio or 0:.2f}x"
            f" | {us(a.get('gateway'))} + {us(a.get('postgres'))} + {us(a.get('seaweedfs'))} = {us(total_us(a))}"
            f" | {us(b.get('seaweedfs'))} + {us(b.get('postgres'))} = {us(total_us(b))}"
            f" | {cpu_ratio or 0:.2f}x |")
        out.append({"scenario": scen, "tierstore": ra, "seaweedfs": rb, "ratio": ratio, "cpu_ratio": cpu_ratio,
                    "tierstore_cpu_us": a, "seaweedfs_cpu_us": b})
    return "\n".join(lines), out


def inline_table(summary: Summary) -> tuple[str, list[dict[str, Any]]]:
    a, b = summary.get("inline", {}), summary.get("store", {})
    lines = ["| scenario | inline ops/s | in the store ops/s | ratio"
             " | inline CPU us/req: gateway + PostgreSQL + SeaweedFS = total"
             " | in the store: gateway + PostgreSQL + SeaweedFS = total | CPU ratio (store/inline) |",
             "|---|---|---|---|---|---|---|"]
    out = []
    for scen in INLINE:
        x, y = a.get(scen), b.get(scen)
        if not x or not y:
            continue
        rx, ry = x.get("ops_per_s"), y.get("ops_per_s")
        lines.append(
            f"| {scen} | {rx or 0:,.0f} | {ry or 0:,.0f} | {(rx or 0) / (ry or 1):.2f}x"
            f" | {us(x.get('gateway'))} + {us(x.get('postgres'))} + {us(x.get('seaweedfs'))} = {us(total_us(x))}"
            f" | {us(y.get('gateway'))} + {us(y.get('postgres'))} + {us(y.get('seaweedfs'))} = {us(total_us(y))}"
            f" | {total_us(y) / total_us(x) if total_us(x) else 0:.2f}x |")
        out.append({"scenario": scen, "inline": x, "store": y})
    return "\n".join(lines), out


def capacity(summary: Summary) -> tuple[str, list[dict[str, Any]]]:
    """Requests/s one core sustains in each tier, from CPU per request (1e6 / us); PostgreSQL's
    share is the tierstore catalog's backends (``pg:tierstore``) — the store's filer database is
    the store's cost, not the catalog's, and a store other than SeaweedFS-on-PostgreSQL has none."""
    ts = summary.get("tierstore", {})
    lines = ["| request | gateway CPU us | catalog PostgreSQL CPU us | req/s per gateway core"
             " | req/s per PostgreSQL core | gateway cores one PostgreSQL core carries |", "|---|---|---|---|---|---|"]
    out = []
    for scen, name in (("small_put_4k", "PUT 4 KiB"), ("small_get_4k", "GET 4 KiB"), ("list", "LIST page of 1000")):
        m = ts.get(scen)
        if not m or not m.get("gateway") or not m.get("pg:tierstore"):
            continue
        g, p = m["gateway"], m["pg:tierstore"]
        lines.append(f"| {name} | {g:,.0f} | {p:,.0f} | {1e6 / g:,.0f} | {1e6 / p:,.0f} | {g / p:.1f} |")
        out.append({"request": name, "gateway_us": g, "postgres_us": p, "per_gateway_core": 1e6 / g,
                    "per_postgres_core": 1e6 / p, "gateway_cores_per_pg_core": g / p})
    return "\n".join(lines), out


# --- the 10M-key listing ------------------------------------------------------------------------


def request(port: int, method: str, path: str, query: list[tuple[str, str]] | None = None) -> tuple[int, bytes]:
    signed = sign_v4(port, method, path, payload_hash=EMPTY_SHA256, query=query or [], access_key=AK, secret_key=SK)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, signed.target, body=b"" if method == "PUT" else None, headers=signed.headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def big_key(i: int) -> str:
    return f"d{i // 1000:05d}/f{i % 1000:03d}"


def load_keys(pg: PostgreSQL, db: str, port: int, n: int) -> dict[str, float]:
    """BENCHMARK-ONLY: ``n`` live keys straight into the catalog's tables (see the module doc)."""
    for method, path in (("PUT", f"/{BIG_BUCKET}"), ("PUT", f"/{BIG_BUCKET}/template")):
        status, body = request(port, method, path)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {body[:300]!r}")
    bucket_id = int(pg.psql(f"SELECT id FROM buckets WHERE name = '{BIG_BUCKET}'", db).strip())
    idx = [line for line in pg.psql("SELECT indexname || '|' || indexdef FROM pg_indexes WHERE tablename = 'versions'"
                                    " AND indexname <> 'versions_pkey'", db).splitlines() if line]
    pkey = pg.psql("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'versions_pkey'", db).strip()
    dirs = "lpad((i / 1000)::text, 5, '0')"
    t0 = time.monotonic()
    pg.psql(
        "SET maintenance_work_mem = '256MB';"
        + "".join(f"DROP INDEX {line.split('|')[0]};" for line in idx)
        + "ALTER TABLE versions DROP CONSTRAINT versions_pkey;"
        "INSERT INTO versions(bucket_id, key, version_id, is_latest, is_delete_marker, size, etag, modified_ns,"
        " storage_class, meta, blobs, seq, inline_id)"
        f" SELECT {bucket_id}, convert_to('d' || {dirs} || '/f' || lpad((i % 1000)::text, 3, '0'), 'UTF8'),"
        " t.version_id, true, false, t.size, t.etag, t.modified_ns, t.storage_class, t.meta, '[]', t.seq, NULL"
        f" FROM generate_series(0, {n - 1}) AS i,"
        f" (SELECT * FROM versions WHERE bucket_id = {bucket_id} AND key = 'template'::bytea) AS t;",
        db)
    t1 = time.monotonic()
    pg.psql("SET maintenance_work_mem = '256MB';"
            f"ALTER TABLE versions ADD CONSTRAINT versions_pkey {pkey};"
            + "".join(line.split("|", 1)[1] + ";" for line in idx), db)
    pg.psql("VACUUM (ANALYZE) versions", db)  # what autovacuum would do: the visibility map, for index-only scans
    t2 = time.monotonic()
    status, body = request(port, "DELETE", f"/{BIG_BUCKET}/template")
    if status != 204:
        raise RuntimeError(f"DELETE template: {status} {body[:300]!r}")
    return {"insert_s": round(t1 - t0, 1), "index_s": round(t2 - t1, 1), "indexes": len(idx) + 1}


def count(body: bytes) -> tuple[int, int]:
    text = body.decode()
    prefixes = len(re.findall(r"<CommonPrefixes>", text))
    return len(re.findall(r"<Key>", text)), prefixes


def time_pages(port: int, n: int, rounds: int) -> list[dict[str, Any]]:
    dirs = (n + 999) // 1000
    mid_dir = f"d{dirs // 2:05d}/"
    cases: list[tuple[str, list[tuple[str, str]], tuple[int, int]]] = [
        ("start", [], (1000, 0)),
        ("middle", [("start-after", big_key(n // 2))], (1000, 0)),
        ("end", [("start-after", big_key(n - 1001))], (1000, 0)),
        ("delimiter / at the root", [("delimiter", "/")], (0, min(1000, dirs))),
        (f"prefix {mid_dir}", [("prefix", mid_dir)], (1000, 0)),
        (f"prefix {mid_dir} + delimiter /", [("prefix", mid_dir), ("delimiter", "/")], (1000, 0)),
    ]
    out = []
    for name, query, want in cases:
        q = [("list-type", "2"), ("max-keys", "1000"), *query]
        ms = []
        got = (0, 0)
        for i in range(rounds + 1):
            t0 = time.perf_counter()
            status, body = request(port, "GET", f"/{BIG_BUCKET}", q)
            dt = (time.perf_counter() - t0) * 1e3
            if status != 200:
                raise RuntimeError(f"list {name}: {status} {body[:300]!r}")
            got = count(body)
            if i:
                ms.append(dt)
        out.append({"case": name, "query": dict(query), "median_ms": round(statistics.median(ms), 1),
                    "min_ms": round(min(ms), 1), "keys": got[0], "prefixes": got[1], "ok": got == want})
    return out


def explain(pg: PostgreSQL, db: str, n: int) -> str:
    """EXPLAIN ANALYZE of the catalog's own page queries (catalog/postgres/_listing.py): from the
    middle of the bucket, and the delimited one at the root after its first common prefix."""
    below = (b"\xff" * 8).hex()  # any upper bound past every key
    plain = pg.psql(f"PREPARE page(text, bytea, bytea, int) AS {_SCAN_LATEST_AFTER};"
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)"
                    f" EXECUTE page('{BIG_BUCKET}', '\\x{big_key(n // 2).encode().hex()}', '\\x{below}', 1001);", db)
    after = (b"d00000/\xff").hex()
    rolled = pg.psql(f"PREPARE page(text, bytea, bytea, int, int, bytea) AS {_SCAN_DELIMITED_AFTER};"
                     "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)"
                     f" EXECUTE page('{BIG_BUCKET}', '\\x{after}', '\\x{below}', 1001, 0, '\\x2f');", db)
    return f"-- a page from the middle (no delimiter):\n{plain}\n-- delimiter / at the root (scan_delimited):\n{rolled}"


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="s3bench --scale: multiplies every count")
    ap.add_argument("--repeat", type=int, default=1, help="s3bench --repeat: the tables show medians")
    ap.add_argument("--max-seconds", type=float, default=180,
                    help="s3bench's cap per phase (a PUT phase cut short leaves keys its GET phase then misses: 404s)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tierstore server processes")
    ap.add_argument("--keys", type=int, default=10_000_000, help="keys of the big listing (0: skip it)")
    ap.add_argument("--rounds", type=int, default=7, help="timed requests per listing case")
    ap.add_argument("--skip", default="", help="comma list of passes to skip: side,list,inline")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a temp dir, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON document here")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    work = args.work or Path(tempfile.mkdtemp(prefix="tierstore-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    doc: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info,
                           "args": {k: str(v) for k, v in vars(args).items()}}
    signal.signal(signal.SIGTERM, _sigterm)
    pg = PostgreSQL(settings={"shared_buffers": "256MB", "max_connections": "300", "synchronous_commit": "on"})
    weed = SeaweedOnPostgres(work / "seaweed", 0)
    gateways: list[Tierstore] = []
    t0 = time.monotonic()
    try:
        pg.start()
        for db in ("seaweedfs", "tierstore", "tierstore_noinline"):
            pg.create_database(db)
        weed.pg_port = pg.port
        weed.start()
        filer_rows = int(pg.psql("SELECT count(*) FROM filemeta", "seaweedfs").strip() or 0)
        if filer_rows == 0:
            raise RuntimeError("SeaweedFS's filer wrote nothing to PostgreSQL: is filer.toml read?")
        info["seaweedfs_filer_rows_in_postgres_at_start"] = filer_rows
        weed.client().create_bucket(Bucket=STORE_BUCKET)
        for label, db, prefix, inline in (("inline", "tierstore", "a", []), ("store", "tierstore_noinline", "b",
                                                                             ["--inline-max-bytes", "0"])):
            gw = Tierstore(work, args.workers, 0, label=label, extra=(
                "--catalog", pg.dsn(db), "--store", f"s3://{STORE_BUCKET}/{prefix}?endpoint={weed.endpoint}",
                "--store-access-key", weed.access_key, "--store-secret-key", weed.secret_key, *inline))
            gw.start()
            gateways.append(gw)
        a, b = gateways
        pgroups = {"postgres": [pg.pid]}
        sw_groups = {"seaweedfs": [weed.pid], **pgroups}

        def ts_groups(gw: Tierstore) -> dict[str, list[int]]:
            return {"gateway": [gw.pid], **pgroups, "seaweedfs": [weed.pid]}

        def bench(label: str, port: int, ak: str, sk: str, only: list[str], groups: dict[str, list[int]],
                  tag: str) -> None:
            got = run_s3bench(label, port, ak, sk, only, groups, args, work / f"{label}-{tag}.jsonl", warnings)
            for r in got:
                r["label"] = label
            rows.extend(got)

        if "side" not in skip:
            bench("seaweedfs", weed.port, weed.access_key, weed.secret_key, SIDE, sw_groups, "side")
            bench("tierstore", a.port, AK, SK, SIDE, ts_groups(a), "side")
        if "list" not in skip:
            bench("seaweedfs", weed.port, weed.access_key, weed.secret_key, ["list"], sw_groups, "list")
            bench("tierstore", a.port, AK, SK, ["list"], ts_groups(a), "list")
        if "inline" not in skip:
            bench("store", b.port, AK, SK, INLINE, ts_groups(b), "inline")
            bench("inline", a.port, AK, SK, INLINE, ts_groups(a), "inline")
        summary = summarize(rows)
        doc["summary"] = summary
        if args.keys:
            b.stop()
            doc["big_load"] = load_keys(pg, "tierstore", a.port, args.keys)
            print(f"[bench] loaded {args.keys:,} keys: {doc['big_load']}", file=sys.stderr, flush=True)
            doc["big_pages"] = time_pages(a.port, args.keys, args.rounds)
            doc["big_explain"] = explain(pg, "tierstore", args.keys)
    finally:
        for gw in reversed(gateways):
            gw.stop()
        weed.stop()
        pg.cleanup()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    info["wall_s"] = round(time.monotonic() - t0, 1)

    summary = doc.get("summary", {})
    text, doc["side_by_side"] = side_table(summary, [*SIDE, "list"])
    print(f"\n## tierstore (PostgreSQL + SeaweedFS store) vs SeaweedFS S3 (filer on PostgreSQL)\n{text}")
    text, doc["inline"] = inline_table(summary)
    print(f"\n## inline bodies (gateway A) vs bodies in the store (gateway B, --inline-max-bytes 0)\n{text}")
    text, doc["capacity"] = capacity(summary)
    print(f"\n## capacity (from CPU per request)\n{text}")
    if "big_pages" in doc:
        print(f"\n## ListObjectsV2 page of 1000 in {args.keys:,} keys (load {doc['big_load']})")
        print("| case | median ms | min ms | keys | prefixes | ok |\n|---|---|---|---|---|---|")
        for p in doc["big_pages"]:
            print(f"| {p['case']} | {p['median_ms']} | {p['min_ms']} | {p['keys']} | {p['prefixes']} | {p['ok']} |")
        print(f"\nEXPLAIN ANALYZE:\n{doc['big_explain']}")
    for w in warnings:
        print(f"warning: {w}")
    print(f"({info['cpus']} CPUs {info['cpu']}, load {info['loadavg_start']} -> {info['loadavg_end']}, "
          f"tierstore {info['commit']} with {args.workers} workers, {info['wall_s']} s)")
    doc["warnings"] = warnings
    doc["runs"] = rows
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
