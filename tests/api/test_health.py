"""Health probes (api/_health.py): MinIO's paths and meaning, unauthenticated, GET and HEAD."""

from __future__ import annotations

import http.client
import os
import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess
from tests.s3http import Resp, send

LIVE = ["/minio/health/live", "/health/live"]
READY = ["/minio/health/ready", "/health/ready"]
CLUSTER = ["/minio/health/cluster"]
READ = ["/minio/health/cluster/read"]


def _probe(server: ServerProcess, path: str, method: str = "GET") -> Resp:
    return send(server.port, method, path, {"Host": f"127.0.0.1:{server.port}"})


def test_probes_answer_unauthenticated(server: ServerProcess) -> None:
    for path in LIVE + READY + CLUSTER + READ:
        r = _probe(server, path)
        assert r.status == 200, (path, r.body)
        assert r.headers["content-type"].startswith("text/plain")
        head = _probe(server, path, "HEAD")
        assert (head.status, head.body) == (200, b""), path
    assert _probe(server, "/minio/health/ready").headers["x-minio-write-quorum"] == "1"


def test_probe_paths_stay_s3_when_signed(server: ServerProcess, s3: Any) -> None:
    """Buckets named like the probe paths keep working for S3 clients (a signed request is S3)."""
    s3.create_bucket(Bucket="health")
    try:
        s3.put_object(Bucket="health", Key="live", Body=b"an object")
        assert s3.get_object(Bucket="health", Key="live")["Body"].read() == b"an object"
        assert _probe(server, "/health/live").body == b"live\n"
        r = _probe(server, "/health/ready", "PUT")  # only GET and HEAD are probes: an anonymous S3 PUT
        assert r.status == 403 and r.error()["Code"] == "AccessDenied"
    finally:
        s3.delete_object(Bucket="health", Key="live")
        s3.delete_bucket(Bucket="health")


def test_ready_needs_a_write_quorum(tmp_path: Path) -> None:
    """4 drives (2 data + 2 parity, write quorum 3): with 2 gone the store still reads (cluster/read
    200) but cannot write: ready and cluster answer 503 until the drives are back."""
    drives = [tmp_path / f"d{i}" for i in range(4)]
    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "1", "--drives", *map(str, drives)])
    srv.start()
    try:
        for path in LIVE + READY + CLUSTER + READ:
            assert _probe(srv, path).status == 200, path
        assert _probe(srv, "/minio/health/cluster").headers["x-minio-write-quorum"] == "3"
        for d in drives[:2]:
            os.rename(d, f"{d}.gone")
        for path in READY + CLUSTER:
            r = _probe(srv, path)
            assert r.status == 503, (path, r.body)
            assert b"2 of 4 drives online" in r.body
            assert _probe(srv, path, "HEAD").status == 503
        for path in LIVE + READ:
            assert _probe(srv, path).status == 200, path
        for d in drives[:2]:
            os.rename(f"{d}.gone", d)
        for path in READY + CLUSTER:
            assert _probe(srv, path).status == 200, path
    finally:
        srv.stop()


def test_ready_needs_a_writable_catalog(tmp_path: Path) -> None:
    """The catalog's write lock held elsewhere for longer than the probe allows: not ready."""
    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "1"])
    srv.start()
    try:
        holder = sqlite3.connect(tmp_path / "data" / "catalog.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # what a stuck writer would hold
        try:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            conn.request("GET", "/minio/health/ready")
            r = conn.getresponse()
            assert r.status == 503
            assert r.read() == b"not ready: the catalog did not take a write within the probe timeout\n"
            conn.close()
            assert _probe(srv, "/minio/health/live").status == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert _probe(srv, "/minio/health/ready").status == 200
    finally:
        srv.stop()
