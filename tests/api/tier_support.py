"""Helpers of the tier tests against a real server (test_tier_data.py, test_mover.py): a tier
added on a SeaweedFS, the server's catalog read directly, its local blob files, waiting for a
condition, a GET's body."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, resolve_settings


def add_tier(
    admin: TierstoreClient,
    weed: SeaweedFS,
    name: str,
    remote_bucket: str,
    prefix: str,
    *,
    restore_required: bool = False,
) -> Any:
    """Tier ``name`` on ``weed`` (``remote_bucket`` made if need be); the boto3 client of ``weed``."""
    raw = weed.client()
    with contextlib.suppress(ClientError):
        raw.create_bucket(Bucket=remote_bucket)
    admin.tier_add(
        name, weed.endpoint, remote_bucket, prefix=prefix, access_key_id=weed.access_key, secret_key=weed.secret_key,
        restore_required=restore_required, allow_private=True,
    )  # fmt: skip
    settle()
    return raw


def settle() -> None:
    """Past the other workers' 1 s cache of tier names (TierService.class_names): a tier added
    through one worker is a storage class in every worker after that (docs/tiers.md)."""
    time.sleep(1.2)


def catalog_rows(srv: ServerProcess, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(srv.data_dir / "catalog.db")) as conn:
        return conn.execute(sql, args).fetchall()


def local_files(srv: ServerProcess, blob_id: str) -> list[Path]:
    return list(srv.data_dir.rglob(f"{blob_id}*"))


def wait_for(cond: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def get_body(s3: Any, bucket: str, key: str, **kw: Any) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read())


def worker_pid(srv: ServerProcess) -> int:
    """The (last) worker process of a server (``--workers 1``: its only one)."""
    kids = srv._descendants()
    return kids[-1] if kids else srv.pid


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def transition_in_bounded_memory(srv: ServerProcess, admin: TierstoreClient, tier: str, bucket: str, key: str) -> None:
    """Move ``key`` to ``tier`` through the admin API; the peak RSS (VmHWM, reset first) of the
    server's worker (``--workers 1``) grows by less than 64 MiB meanwhile, whatever the size."""
    worker = worker_pid(srv)
    Path(f"/proc/{worker}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    before = status_kib(worker, "VmRSS")
    assert admin.tier_transition(tier, bucket, key)["moved"] is True
    growth_mib = (status_kib(worker, "VmHWM") - before) / 1024
    print(f"moving {key} to {tier}: RSS {before / 1024:.0f} MiB, the peak grew {growth_mib:.0f} MiB")
    assert growth_mib < 64, growth_mib


class ChunkReader:
    """A file-like object over an iterator of chunks (boto3's upload_fileobj)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            nxt = next(self._chunks, None)
            if nxt is None:
                break
            self._buf += nxt
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def module_server(factory: pytest.TempPathFactory, name: str, *extra_args: str) -> Iterator[ServerProcess]:
    """A module fixture's body: a server of its own on a fresh data dir, stopped at the end."""
    srv = ServerProcess(factory.mktemp(name) / "data", extra_args=list(extra_args))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def admin_client(srv: ServerProcess) -> TierstoreClient:
    """The root's extension client of ``srv``."""
    return TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
