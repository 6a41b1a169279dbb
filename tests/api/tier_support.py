"""Helpers of the tier tests against a real server (test_tier_data.py, test_mover.py): a tier
added on a SeaweedFS, the server's catalog read directly, its local blob files, waiting for a
condition, a GET's body."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from tests.conftest import ServerProcess
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient


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
