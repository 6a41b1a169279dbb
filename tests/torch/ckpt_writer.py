"""Subprocess targets for tests/torch/test_checkpoints.py, and the state_dicts they save
(``make_state``: a pure function of seed and step, so the test rebuilds what a child saved).

``python -m tests.torch.ckpt_writer kill ENDPOINT URI SEED``: saves step 1, prints
``committed 1``, then saves step 2 printing ``put`` before every PUT request, waiting to be
killed; ``committed 2`` if it was not.

``python -m tests.torch.ckpt_writer writer ENDPOINT URI RUN SEED GO_FILE``: prints ``ready``,
waits for GO_FILE to exist (so all writers start together), saves steps 1-3, prints ``done``.

Keys come from TIERSTORE_ACCESS_KEY/TIERSTORE_SECRET_KEY.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from tierstore.checkpoints import S3Objects
from tierstore.client import resolve_settings
from tierstore.torch.checkpoints import CheckpointStore

MiB = 1 << 20


def make_state(seed: int, step: int, mib: float = 2.0) -> dict[str, Any]:
    """About ``mib`` MiB of float32 in a few tensors of odd sizes, plus small values."""
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    n = int(mib * MiB / 4)
    cuts = [n // 2 + 7, n // 3 - 5]
    return {
        "step": step,
        "big": torch.randn(cuts[0], generator=gen),
        "mid": torch.randn(cuts[1], generator=gen),
        "rest": torch.randint(0, 1 << 30, (n - sum(cuts),), generator=gen, dtype=torch.int32),
        "small": {"bias": torch.randn(13, generator=gen), "count": torch.tensor(step)},
    }


class _LoudObjects(S3Objects):
    """Prints ``put`` before each PUT (whole files, parts, the commit), so the parent knows how far
    a save got when it kills this process."""

    def _request(self, method: str, bucket: str, key: str, **kwargs: Any) -> Any:
        if method == "PUT":  # one write per line: threads print these concurrently
            sys.stdout.write(f"put {key}\n")
            sys.stdout.flush()
        return super()._request(method, bucket, key, **kwargs)


def kill_target(endpoint: str, uri: str, seed: int) -> None:
    settings = resolve_settings(endpoint)
    with CheckpointStore(uri, settings=settings, run="killed", objects=S3Objects(settings, part_bytes=5 * MiB)) as s:
        s.save(make_state(seed, 1), step=1)
    print("committed 1", flush=True)
    objects = _LoudObjects(settings, part_bytes=5 * MiB, max_connections=2)
    # 15 MiB in files of 6 MiB: two multipart uploads of two parts, one single PUT, then the commit
    with CheckpointStore(uri, run="killed", objects=objects, file_bytes=6 * MiB, max_workers=2) as s:
        s.save(make_state(seed, 2, mib=15), step=2)
    print("committed 2", flush=True)


def writer(endpoint: str, uri: str, run: str, seed: int, go_file: str) -> None:
    settings = resolve_settings(endpoint)
    print("ready", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.01)
    with CheckpointStore(uri, settings=settings, run=run, file_bytes=MiB // 2, max_workers=4) as s:
        for step in (1, 2, 3):
            s.save(make_state(seed, step, mib=1.5), step=step, metrics={"loss": seed + step / 10})
    print("done", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "kill":
        kill_target(args[0], args[1], int(args[2]))
    elif mode == "writer":
        writer(args[0], args[1], args[2], int(args[3]), args[4])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
