"""Pinning a dataset version from a remote tier vs staging it (issue 17, "Proof and speed": pinning
50,000 x 16 KiB samples from the remote tier must be at least as fast as our ``stage``).

One real SeaweedFS (tests/seaweed.py) is the tier, one real ``tierstore serve`` (tests/conftest.py
``ServerProcess``) the store, both on 127.0.0.1, started here. N samples of 16 KiB (random bytes)
are PUT, made a dataset, and archived to the tier (``dataset archive``: timed too, the rate of the
archive's copies). Then, per round, on the same samples, both read through the tier:

- ``stage``: ``tierstore.datasets.stage(RemoteSource, NAME@1, DIR)`` — the client fetches every
  sample with batch reads (256 rows a request) into packs in a fresh local directory;
- ``pin``: ``TierstoreClient.pin_dataset(NAME@1, job)`` — the server copies every remote blob onto
  its local drives (the hot-copy fill), then ``unpin`` frees the copies for the next round.

Printed: samples/s and MB/s of each, the ratio pin / stage per round and the median, the CPU
seconds of each server worker process (and of the staging client) during each, and the load
average (the machine is shared: rates are noisy; the ratio, measured in the same run, is the number).

    PYTHONPATH=src .venv/bin/python benchmarks/pin.py                       # 50,000 samples, 3 rounds
    PYTHONPATH=src .venv/bin/python benchmarks/pin.py --samples 2000 --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the server and SeaweedFS fixtures

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client  # noqa: E402
from tests.seaweed import SeaweedFS  # noqa: E402

from tierstore.client import TierstoreClient, resolve_settings  # noqa: E402
from tierstore.datasets import RemoteSource, stage  # noqa: E402

SAMPLE_BYTES = 16 * 1024
TIER = "BENCH"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _timed(fn: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.0f} samples/s {n * SAMPLE_BYTES / seconds / 1e6:7.1f} MB/s ({seconds:.1f} s)"


def _cpu_s(pids: list[int], system: bool = False) -> list[float]:
    """User + system (or, ``system``, system only) CPU seconds of each of ``pids`` (/proc; 0 for a
    process that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            out.append(0.0)
            continue
        out.append(((0 if system else int(fields[11])) + int(fields[12])) / tick)
    return out


def _busy(pids: list[int], fn: Any) -> tuple[float, Any, list[str], float]:
    """``fn()`` timed: (wall s, result, "CPU s (of which system)" of each of ``pids``, CPU s of
    this process)."""
    before, before_sys, mine = _cpu_s(pids), _cpu_s(pids, system=True), os.times()
    wall, out = _timed(fn)
    after, after_sys, done = _cpu_s(pids), _cpu_s(pids, system=True), os.times()
    cpu = [f"{b - a:.1f} (sys {bs - as_:.1f})"
           for a, b, as_, bs in zip(before, after, before_sys, after_sys, strict=True)]  # fmt: skip
    return wall, out, cpu, round(done.user + done.system - mine.user - mine.system, 1)


@contextlib.contextmanager
def _profiled(pids: list[int], out: Path | None) -> Any:
    """py-spy (``$PYSPY`` or on PATH) records each of ``pids`` meanwhile, into ``out/pin-PID.txt``
    (collapsed stacks: ``py-spy`` folded format); nothing when ``out`` is None."""
    if out is None:
        yield
        return
    spy = os.environ.get("PYSPY") or shutil.which("py-spy") or "py-spy"
    out.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--nonblocking",
                               "--output", str(out / f"pin-{pid}.txt")], stdout=subprocess.DEVNULL)
             for pid in pids]  # fmt: skip
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.wait(timeout=60)


def _fill(s3: Any, bucket: str, n: int, threads: int) -> None:
    def put(start: int) -> None:
        for i in range(start, min(n, start + 500)):
            s3.put_object(Bucket=bucket, Key=f"s/{i:07d}", Body=os.urandom(SAMPLE_BYTES))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(0, n, 500)))


def bench(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="pinbench-"))
    weed = SeaweedFS(work / "weed")
    srv = ServerProcess(work / "data")
    try:
        weed.start()
        srv.start()
        admin = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY),
                                timeout_s=600)  # fmt: skip
        weed.client().create_bucket(Bucket="pinbench")
        admin.tier_add(TIER, weed.endpoint, "pinbench", prefix="t/", access_key_id=weed.access_key,
                       secret_key=weed.secret_key, allow_private=True)  # fmt: skip
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="src")
        n = args.samples
        print(f"# {platform.node()} {os.cpu_count()} cpus, {n} x {SAMPLE_BYTES} B samples; load {_load()}")
        put_s, _ = _timed(lambda: _fill(s3, "src", n, 16))
        print(f"put        {_rate(n, put_s)}", flush=True)
        admin.create_dataset("bench", bucket="src", prefix="s/")
        arch_s, final = _timed(lambda: list(admin.archive_dataset("bench@1", TIER))[-1])
        assert final["state"] == "done" and final["done"] == final["items"] == n, final
        print(f"archive    {_rate(n, arch_s)}   (to the tier; load {_load()})", flush=True)
        source = RemoteSource(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        ratios = []
        for r in range(args.rounds):
            dest = work / f"stage-{r}"
            workers = srv._descendants()
            stage_s, report, stage_cpu, client_cpu = _busy(
                workers, lambda dest=dest: stage(source, "bench@1", dest, progress=False)
            )
            assert report.rows == report.rows_fetched == n, report
            shutil.rmtree(dest)
            with _profiled(workers, args.profile):
                pin_s, final, pin_cpu, _ = _busy(workers, lambda: list(admin.pin_dataset("bench@1", "bench"))[-1])
            ratios.append(stage_s / pin_s)
            print(f"round {r}: stage {_rate(n, stage_s)} | pin {_rate(n, pin_s)} | pin/stage {ratios[-1]:.2f}x"
                  f"   (load {_load()})", flush=True)  # fmt: skip
            print(f"  CPU s: stage: server workers {stage_cpu}, client {client_cpu} | pin: server workers {pin_cpu}")
            assert final["state"] == "done" and final["done"] == final["items"] == n and not final["skipped"], final
            admin.unpin_dataset("bench@1", "bench")
        print(f"median pin/stage: {statistics.median(ratios):.2f}x over {len(ratios)} rounds (>= 1.0 asked)")
    finally:
        with contextlib.suppress(Exception):
            srv.stop()
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=50_000, help="samples of 16 KiB (default 50,000)")
    ap.add_argument("--rounds", type=int, default=3, help="stage-then-pin rounds (default 3)")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy each server worker during the pins (into DIR)")
    return bench(ap.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
