"""A full disk: a clear S3 error (507 InsufficientStorage), and nothing already stored is lost.

The data dir lives on a small tmpfs that the test mounts (the tests run as root, as CI does).
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from tests.conftest import ServerProcess, make_client


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (tests need root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_gives_507_and_keeps_stored_objects(small_disk: Path) -> None:
    srv = ServerProcess(small_disk / "data")
    srv.log_path = small_disk.parent / "server.log"  # keep the log off the full disk
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="full")
        rng = random.Random(7)
        stored: dict[str, bytes] = {}
        error = None
        for i in range(60):  # 60 x 1 MiB cannot fit in 24 MiB
            body = rng.randbytes(1024 * 1024)
            try:
                s3.put_object(Bucket="full", Key=f"obj-{i}", Body=body)
            except botocore.exceptions.ClientError as exc:
                error = exc
                break
            stored[f"obj-{i}"] = body
        assert error is not None, "the disk never filled up"
        assert error.response["Error"]["Code"] == "InsufficientStorage"
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert len(stored) >= 5
        # Everything acknowledged still reads back, and listing shows exactly that.
        for key, body in stored.items():
            assert s3.get_object(Bucket="full", Key=key)["Body"].read() == body
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket="full").get("Contents", [])]
        assert sorted(listed) == sorted(stored)
        # Freeing space makes writes work again.
        for key in list(stored)[:6]:
            s3.delete_object(Bucket="full", Key=key)
            del stored[key]
        s3.put_object(Bucket="full", Key="after", Body=b"room again")
        stored["after"] = b"room again"
        # And all of it survives a restart.
        srv.stop()
        srv.start()
        s3 = make_client(srv.endpoint)
        for key, body in stored.items():
            assert s3.get_object(Bucket="full", Key=key)["Body"].read() == body
    finally:
        srv.stop()
