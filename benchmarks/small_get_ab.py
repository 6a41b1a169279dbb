"""Server CPU per 4 KiB GET (or any one s3bench scenario), A/B: source trees of tierstore side by
side in one run.

Issue 15 asks that a small GET costs at most 10% more server CPU than before authorization
landed. On a shared 2-core machine raw rates drift by tens of percent within minutes, so this
starts one ``tierstore serve`` per tree (``PYTHONPATH`` at that tree's ``src/``), both running the
whole time, and drives them alternately with ../shared/bench/s3bench.py (``--only small_get_4k``:
a fresh bucket, N PUTs untimed, then ``--repeat`` GET passes, every body byte-checked). Server CPU
is utime+stime of each server's whole process tree (/proc), before and after each GET pass;
the table gives the median per tree over every pass of every round, and the context switches
per GET of the server's threads (/proc, voluntary / involuntary, the run's untimed PUTs
included: on a loaded machine a server whose threads sleep and wake often gets more CPU):

    .venv/bin/python benchmarks/small_get_ab.py base=../base/src new=src --rounds 4

Each ``LABEL=SRC[,NAME=VALUE|,--serve-flag|,+sse|,user]...`` is a server: a source tree, with
environment variables and ``tierstore serve`` flags of its own (``new=src,--no-access-log``); the
first is the reference the others are compared with. ``+sse`` drives it through
benchmarks/_s3bench_encrypted.py (buckets SSE-S3 by default, checked by a probe). ``,user``: that
server's GETs (and its PUTs) are signed by an IAM user whose one attached policy allows ``s3:*``,
made through the server's IAM API (issue 15 trees only), not by the root key:

    .venv/bin/python benchmarks/small_get_ab.py base=../base/src new=src new_user=src,user

``--only large_get --scale 1`` measures 8 x 64 MiB GETs instead (a tree may appear twice, plain
and ``+sse``, to compare encrypted with plain):

    .venv/bin/python benchmarks/small_get_ab.py plain=src sse=src,+sse --only large_get --scale 1 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_side_by_side import AK, BENCH, SK, Tierstore, free_port_block, loadavg, process_tree, wait_http

ENCRYPTED = Path(__file__).resolve().parent / "_s3bench_encrypted.py"


class Tree(Tierstore):
    """One ``tierstore serve`` from one source tree (stopped as ``s3_side_by_side`` stops its own)."""

    def __init__(self, spec: str, work: Path, workers: int, extra: list[str]) -> None:
        self.label, _, rest = spec.partition("=")
        src, *opts = rest.split(",")
        super().__init__(work / self.label, workers, 0, label=self.label)
        self.src = Path(src).resolve()
        self.extra = extra + [o for o in opts if o.startswith("--")]
        self.env = dict(o.split("=", 1) for o in opts if "=" in o and not o.startswith(("--", "+")))
        self.script = ENCRYPTED if "+sse" in opts else BENCH / "s3bench.py"
        self.user = "user" in opts
        self.key = (AK, SK)
        self.cpu_us: list[float] = []
        self.ops_s: list[float] = []
        self.mb_s: list[float] = []
        self.switches: list[tuple[float, float]] = []  # voluntary, involuntary context switches per GET

    def start(self) -> None:
        self.port = free_port_block(1)
        self.work.mkdir(parents=True)
        with open(self.work / "server.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tierstore", "serve", "--data", str(self.work / "data"),
                 "--address", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                 "--log-level", "warning", *self.extra],
                env=dict(os.environ, **self.env, PYTHONPATH=str(self.src),
                         TIERSTORE_ACCESS_KEY=AK, TIERSTORE_SECRET_KEY=SK),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_http(self.port, proc=self.proc)
        time.sleep(1)
        self.tree = process_tree(self.proc.pid)
        if self.user:
            self.key = self._make_user()

    def _make_user(self) -> tuple[str, str]:
        """An IAM user allowed ``s3:*`` by one attached managed policy; its new access key."""
        import boto3

        iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{self.port}", region_name="us-east-1",
                           aws_access_key_id=AK, aws_secret_access_key=SK)  # fmt: skip
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.create_user(UserName="bench")
        arn = iam.create_policy(PolicyName="bench-s3", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="bench", PolicyArn=arn)
        key = iam.create_access_key(UserName="bench")["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def bench(self, args: argparse.Namespace) -> None:
        assert self.proc is not None
        pids = process_tree(self.proc.pid)
        cmd = [sys.executable, str(self.script), "--endpoint", f"http://127.0.0.1:{self.port}",
               "--access-key", self.key[0], "--secret-key", self.key[1],
               *(x for p in pids for x in ("--server-pid", str(p))),
               "--only", args.only, "--scale", str(args.scale), "--repeat", str(args.repeat),
               "--label", self.label]
        switches = context_switches(pids)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        switches = [b - a for a, b in zip(switches, context_switches(pids), strict=True)]
        ops = 0
        for line in out.splitlines():
            row = json.loads(line)
            if row.get("scenario") == args.only and "summary" not in row and not row.get("errors"):
                self.cpu_us.append(float(row["server_cpu_us_per_op"]))
                self.ops_s.append(float(row.get("ops_per_s") or 0))
                self.mb_s.append(float(row.get("MB_per_s") or 0))
                ops += int(row.get("ops") or 0)
        if ops:  # the whole s3bench run's (its untimed PUTs too): per GET, roughly
            self.switches.append((switches[0] / ops, switches[1] / ops))
        print(f"[ab] {self.label}: cpu us/op {self.cpu_us[-args.repeat:]}", file=sys.stderr, flush=True)


def context_switches(pids: list[int]) -> tuple[int, int]:
    """Voluntary and involuntary context switches of every thread of ``pids`` so far (/proc): a
    server whose threads sleep and wake often is favoured by the scheduler on a loaded machine."""
    voluntary = involuntary = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/status") as status:
                    for line in status:
                        if line.startswith("voluntary_ctxt_switches"):
                            voluntary += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            involuntary += int(line.split()[1])
            except OSError:
                continue
    return voluntary, involuntary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="LABEL=SRC_DIR[,NAME=VALUE|,--flag]..., the first is the reference")
    ap.add_argument("--only", default="small_get_4k", help="the s3bench GET scenario (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=4, help="each round runs every tree once, order alternating")
    ap.add_argument("--repeat", type=int, default=3, help="GET passes per s3bench run")
    ap.add_argument("--scale", type=float, default=0.25, help="s3bench --scale (0.25: 5,000 objects)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--serve-arg", action="append", default=[], help="extra argument for every tierstore serve")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tierstore-ab-"))
    trees = [Tree(spec, work, args.workers, args.serve_arg) for spec in args.trees]
    try:
        for t in trees:
            t.start()
        for r in range(args.rounds):
            for t in trees if r % 2 == 0 else reversed(trees):
                t.bench(args)
    finally:
        for t in trees:
            t.stop()
    ref = statistics.median(trees[0].cpu_us)
    print(f"{args.only}, load {loadavg()}")
    print("| tree | passes | server CPU/GET median (min-max) | vs first | ops/s median | MB/s median "
          "| context switches per GET, voluntary / involuntary |")
    print("|---|---|---|---|---|---|---|")
    for t in trees:
        med = statistics.median(t.cpu_us)
        vol = statistics.median(v for v, _ in t.switches) if t.switches else 0.0
        invol = statistics.median(i for _, i in t.switches) if t.switches else 0.0
        print(f"| {t.label} | {len(t.cpu_us)} | {med:.0f} us ({min(t.cpu_us):.0f}-{max(t.cpu_us):.0f}) "
              f"| {med / ref:.2f}x | {statistics.median(t.ops_s):,.0f} | {statistics.median(t.mb_s):,.1f} "
              f"| {vol:,.0f} / {invol:,.0f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
