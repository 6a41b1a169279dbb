"""Durability of the embedded default, through a real server process: restart, kill -9,
bitrot, orphan collection, graceful shutdown."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import botocore.exceptions
import pytest

from tests.conftest import ServerProcess, make_client
from tests.s3http import UNSIGNED, sign_v4


def blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "blobs").rglob("*") if p.is_file())


def start_slow_put(
    srv: ServerProcess, bucket: str, key: str, size: int, query: list[tuple[str, str]] | None = None
) -> http.client.HTTPConnection:
    """Send the headers of an UNSIGNED-PAYLOAD PUT of ``size`` bytes (an UploadPart with its
    ``query``); the caller sends the body."""
    signed = sign_v4(srv.port, "PUT", f"/{bucket}/{key}", payload_hash=UNSIGNED, query=query or [],
                     headers={"content-length": str(size)})  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.putrequest("PUT", signed.target, skip_host=True, skip_accept_encoding=True)
    for k, v in signed.headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn


def test_restart_keeps_everything(fresh_server: ServerProcess) -> None:
    s3 = make_client(fresh_server.endpoint)
    s3.create_bucket(Bucket="keep")
    rng = random.Random(1)
    objects = {f"k/{i}": rng.randbytes(rng.choice([0, 1, 1000, 70_000])) for i in range(30)}
    for k, v in objects.items():
        s3.put_object(Bucket="keep", Key=k, Body=v, Metadata={"i": k})
    assert fresh_server.stop() == 0  # SIGTERM: clean exit
    fresh_server.start()
    s3 = make_client(fresh_server.endpoint)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["keep"]
    listed = s3.list_objects_v2(Bucket="keep")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(objects)
    for k, v in objects.items():
        got = s3.get_object(Bucket="keep", Key=k)
        assert got["Body"].read() == v
        assert got["Metadata"] == {"i": k}


def test_flipped_byte_fails_loudly_small(fresh_server: ServerProcess) -> None:
    s3 = make_client(fresh_server.endpoint)
    s3.create_bucket(Bucket="rot")
    s3.put_object(Bucket="rot", Key="small", Body=b"precious bytes" * 2000)  # one block, above the inline size
    (blob,) = blob_files(fresh_server.data_dir)
    with open(blob, "r+b") as f:
        f.seek(7)
        b = f.read(1)
        f.seek(7)
        f.write(bytes([b[0] ^ 0x01]))
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        s3.get_object(Bucket="rot", Key="small")
    assert ei.value.response["Error"]["Code"] == "InternalError"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    # A range in the damaged block fails too; the server keeps serving other objects.
    with pytest.raises(botocore.exceptions.ClientError):
        s3.get_object(Bucket="rot", Key="small", Range="bytes=0-3")
    s3.put_object(Bucket="rot", Key="other", Body=b"fine")
    assert s3.get_object(Bucket="rot", Key="other")["Body"].read() == b"fine"


def test_flipped_byte_in_an_inline_object_fails_loudly(fresh_server: ServerProcess) -> None:
    """Objects up to --inline-max-bytes live in the catalog; damage there is caught by their CRC32C."""
    s3 = make_client(fresh_server.endpoint)
    s3.create_bucket(Bucket="rot")
    s3.put_object(Bucket="rot", Key="tiny", Body=b"precious bytes" * 100)
    s3.put_object(Bucket="rot", Key="other", Body=b"fine")
    assert blob_files(fresh_server.data_dir) == []  # both inline
    assert fresh_server.stop() == 0
    with contextlib.closing(sqlite3.connect(fresh_server.data_dir / "catalog.db")) as db, db:
        (inline_id,) = db.execute("SELECT inline_id FROM versions WHERE key = ?", (b"tiny",)).fetchone()
        (data,) = db.execute("SELECT data FROM inline_blobs WHERE blob_id = ?", (inline_id,)).fetchone()
        damaged = data[:7] + bytes([data[7] ^ 0x01]) + data[8:]
        db.execute("UPDATE inline_blobs SET data = ? WHERE blob_id = ?", (damaged, inline_id))
    fresh_server.start()
    s3 = make_client(fresh_server.endpoint)
    for extra in ({}, {"Range": "bytes=100-103"}):
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            s3.get_object(Bucket="rot", Key="tiny", **extra)
        assert ei.value.response["Error"]["Code"] == "InternalError"
    assert s3.get_object(Bucket="rot", Key="other")["Body"].read() == b"fine"


def test_flipped_byte_deep_in_large_object_never_returns_wrong_bytes(fresh_server: ServerProcess) -> None:
    s3 = make_client(fresh_server.endpoint)
    s3.create_bucket(Bucket="rot")
    data = random.Random(2).randbytes(6 * 1024 * 1024)
    s3.put_object(Bucket="rot", Key="large", Body=data)
    (blob,) = blob_files(fresh_server.data_dir)
    offset = 5 * 1024 * 1024 + 123
    with open(blob, "r+b") as f:
        f.seek(offset)
        f.write(bytes([data[offset] ^ 0xFF]))
    # Headers may already be out when the damage is found: the body must then be cut short.
    with pytest.raises((botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError)):
        body = s3.get_object(Bucket="rot", Key="large")["Body"].read()
        assert body == data, "wrong bytes returned"  # pragma: no cover - reaching here is the failure
        raise AssertionError("corrupt object was served in full")
    # An undamaged range of the same object still reads correctly.
    got = s3.get_object(Bucket="rot", Key="large", Range="bytes=0-99999")["Body"].read()
    assert got == data[:100_000]


def test_kill_9_during_overwrite_keeps_previous_version(fresh_server: ServerProcess) -> None:
    s3 = make_client(fresh_server.endpoint)
    s3.create_bucket(Bucket="crash")
    v1 = random.Random(3).randbytes(300_000)
    s3.put_object(Bucket="crash", Key="obj", Body=v1)
    size = 4 * 1024 * 1024
    conn = start_slow_put(fresh_server, "crash", "obj", size)
    conn.send(b"x" * (size // 2))
    time.sleep(0.3)
    fresh_server.stop(signal.SIGKILL)
    conn.close()
    fresh_server.start()
    s3 = make_client(fresh_server.endpoint)
    assert s3.get_object(Bucket="crash", Key="obj")["Body"].read() == v1
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="crash")["Contents"]] == ["obj"]
    # The torn upload left nothing behind once the store reopened.
    tmp = fresh_server.data_dir / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir())
    assert len(blob_files(fresh_server.data_dir)) == 1


def test_orphan_blobs_are_collected_and_live_ones_kept(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_args=["--gc-grace", "0"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="gcb")
        # Bodies above the inline size (16 KiB): these are blob files.
        s3.put_object(Bucket="gcb", Key="live", Body=b"live data" * 2000)
        s3.put_object(Bucket="gcb", Key="gone", Body=b"to be overwritten" * 2000)
        s3.put_object(Bucket="gcb", Key="gone", Body=b"second" * 3000)
        s3.delete_object(Bucket="gcb", Key="gone")
        # Overwritten and deleted versions' blobs are collected right away.
        (live_blob,) = blob_files(srv.data_dir)
        srv.stop()
        # A blob written by a request that died before its commit: valid file, unknown id.
        orphan_id = "00000001" + "ab" * 12
        orphan = srv.data_dir / "blobs" / orphan_id[-4:-2] / orphan_id[-2:] / orphan_id
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(live_blob.read_bytes())
        srv.start()
        deadline = time.monotonic() + 20
        while orphan.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not orphan.exists(), "orphan blob was not collected"
        s3 = make_client(srv.endpoint)
        assert s3.get_object(Bucket="gcb", Key="live")["Body"].read() == b"live data" * 2000
        assert blob_files(srv.data_dir) == [live_blob]
    finally:
        srv.stop()


def test_sigterm_lets_in_flight_request_finish(fresh_server: ServerProcess) -> None:
    s3 = make_client(fresh_server.endpoint)
    s3.create_bucket(Bucket="drain")
    size = 2 * 1024 * 1024
    conn = start_slow_put(fresh_server, "drain", "inflight", size)
    conn.send(b"a" * (size // 2))
    time.sleep(0.2)
    os.kill(fresh_server.pid, signal.SIGTERM)
    time.sleep(0.5)
    conn.send(b"a" * (size - size // 2))
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    conn.close()
    assert fresh_server.proc is not None
    assert fresh_server.proc.wait(30) == 0
    fresh_server.start()
    got = make_client(fresh_server.endpoint).get_object(Bucket="drain", Key="inflight")["Body"].read()
    assert got == b"a" * size


def test_concurrent_overwrites_leave_one_whole_version(server: ServerProcess, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    bodies = [bytes([i]) * (100_000 + i) for i in range(8)]
    errors: list[BaseException] = []

    def put(b: bytes) -> None:
        try:
            make_client(server.endpoint).put_object(Bucket=bucket, Key="race", Body=b)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert s3.get_object(Bucket=bucket, Key="race")["Body"].read() in bodies


def test_workers_die_with_a_killed_main_process(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    workers = [int(p) for p in Path(f"/proc/{srv.pid}/task/{srv.pid}/children").read_text().split()]
    assert workers, "granian runs the app in worker processes"
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGKILL)  # only the main process, not the group
    srv.proc.wait(10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    assert not alive, f"workers {alive} outlived the killed server"
    srv.stop()
