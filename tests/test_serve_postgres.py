"""``tierstore serve --catalog postgresql://...`` (issue 18, docs/scale-out.md): the catalog in a
real PostgreSQL, the blobs on the data dir; ``--store`` refused; the URL's password never shown;
PostgreSQL unreachable at start retried, then one line; the background loops on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess, make_client
from tests.ports import free_port
from tests.postgres import PostgreSQL

SERVE = [sys.executable, "-m", "tierstore", "serve"]
PASSWORD = "s3cr3t-pa55"  # what must never be shown


def _run(args: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTORE_")}
    env.update(TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
    return subprocess.run(
        [*SERVE, "--address", f"127.0.0.1:{free_port()}", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout_s, check=False,
    )  # fmt: skip


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "--store needs --catalog postgresql://"),
        (["--catalog", f"postgresql://u:{PASSWORD}@127.0.0.1:1/db", "--drives", "d1", "d2"], "--store and --drives"),
        (["--catalog", f"postgresql://u:{PASSWORD}@127.0.0.1:1/db", "--store-access-key", "AK"], "give both"),
    ],
)
def test_store_settings_refused_in_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    """``--store`` alone (an object store without a shared catalog is not a cluster), with
    ``--drives``, or with half a key pair: one line, exit 2, nothing created."""
    proc = _run(["--data", str(tmp_path / "data"), "--store", "s3://b/p?endpoint=http://127.0.0.1:1", *args])
    assert proc.returncode == 2, proc.stderr
    (line,) = _lines(proc.stderr)
    assert line.startswith(f"tierstore serve: {says}"), line
    assert PASSWORD not in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists()


def test_a_catalog_url_that_is_not_postgresql_is_one_line_without_its_password(tmp_path: Path) -> None:
    proc = _run(["--data", str(tmp_path / "data"), "--catalog", f"mysql://u:{PASSWORD}@127.0.0.1/db"])
    assert proc.returncode == 2
    assert "expected postgresql://" in proc.stderr and PASSWORD not in proc.stdout + proc.stderr
    cfg = tmp_path / "tierstore.toml"  # the config file's key, masked by --print-config
    cfg.write_text(f'catalog = "postgresql://u:{PASSWORD}@db.example:5432/ts"\ncatalog-pool = 4\n')
    proc = _run(["--config", str(cfg), "--print-config"])
    assert proc.returncode == 0, proc.stderr
    assert f"catalog = 'postgresql://u:***@db.example:5432/ts'  # file {cfg}" in proc.stdout
    assert f"catalog-pool = 4  # file {cfg}" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr


def test_postgresql_unreachable_at_start_is_retried_then_one_line(tmp_path: Path) -> None:
    dsn = f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/db"  # nothing listens there
    proc = _run(["--data", str(tmp_path / "data"), "--catalog", dsn, "--catalog-start-timeout", "2"])
    assert proc.returncode == 1, proc.stderr
    assert "unreachable; retrying" in proc.stderr  # the log line while it waits
    assert _lines(proc.stderr)[-1] == (
        f"tierstore serve: the catalog postgresql://u:***@{dsn.rsplit('@', 1)[1]} is unreachable: gave up after 2s"
    )
    assert PASSWORD not in proc.stdout + proc.stderr


def test_a_missing_database_is_one_line_at_once(tmp_path: Path, postgres: PostgreSQL) -> None:
    proc = _run(["--data", str(tmp_path / "data"), "--catalog", postgres.dsn("no_such_db")])
    assert proc.returncode == 1, proc.stderr
    last = _lines(proc.stderr)[-1]
    assert last.startswith("tierstore serve: cannot open the catalog") and "does not exist" in last, proc.stderr
    assert "retrying" not in proc.stderr


def _until(check: object, what: str, srv: ServerProcess, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s}s\n{srv.log()[-4000:]}")


def test_workers_share_the_catalog_and_its_background_loops_run(tmp_path: Path, postgres: PostgreSQL) -> None:
    """Two workers on one database: objects written through either read back after a restart (the
    catalog is PostgreSQL's, the blobs the data dir's); the stale-upload loop aborts an abandoned
    upload; no background pass fails (GC, heal, lifecycle, tier outbox, hot copies)."""
    dsn = postgres.create_database("serve_workers").replace("postgres@", f"postgres:{PASSWORD}@")  # trust: ignored
    srv = ServerProcess(
        tmp_path / "data",
        extra_args=["--catalog", dsn, "--workers", "2", "--stale-uploads-expiry", "1s", "--heal-queue-interval", "0.2"],
    )
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="pg-workers")
        bodies = {f"k{i}": bytes([i]) * (100 + 40_000 * (i % 2)) for i in range(8)}  # inline and blob bodies
        for key, body in bodies.items():
            s3.put_object(Bucket="pg-workers", Key=key, Body=body)
        upload = s3.create_multipart_upload(Bucket="pg-workers", Key="abandoned")["UploadId"]
        s3.upload_part(Bucket="pg-workers", Key="abandoned", UploadId=upload, PartNumber=1, Body=b"p" * 1000)
        _until(lambda: not s3.list_multipart_uploads(Bucket="pg-workers").get("Uploads"), "stale upload aborted", srv)
        srv.stop()
        srv.start()
        for key, body in bodies.items():
            assert s3.get_object(Bucket="pg-workers", Key=key)["Body"].read() == body
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pg-workers")["Contents"]]
        assert keys == sorted(bodies)
    finally:
        srv.stop()
    log = srv.log()
    assert "pass failed" not in log and "Traceback" not in log, log[-4000:]
    assert PASSWORD not in log
    assert not (tmp_path / "data" / "catalog.db").exists()  # no SQLite catalog beside the blobs


def test_a_drive_set_with_its_catalog_in_postgresql(tmp_path: Path, postgres: PostgreSQL) -> None:
    """``--drives`` with ``--catalog``: the blobs erasure-coded on the drives, no catalog copy on
    any of them (``admin info`` names none), the master key on every drive."""
    drives = [tmp_path / f"d{i}" for i in range(4)]
    dsn = postgres.create_database("serve_drives")
    srv = ServerProcess(tmp_path / "data", extra_args=["--drives", *map(str, drives), "--catalog", dsn])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="pg-drives")
        bodies = {"inline": b"i" * 10, "blob": bytes(range(256)) * 1200}
        for key, body in bodies.items():
            s3.put_object(Bucket="pg-drives", Key=key, Body=body)
        for key, body in bodies.items():
            assert s3.get_object(Bucket="pg-drives", Key=key)["Body"].read() == body
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTORE_")}
        env.update(TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
        out = subprocess.run(
            [sys.executable, "-m", "tierstore", "admin", "info", "--json", "--endpoint", srv.endpoint],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert info["mode"] == "erasure" and info["online"] == 4 and info["blobs"] == 1
        assert all("catalog" not in d for d in info["drives"])  # no mirror: nothing to reseed or report
    finally:
        srv.stop()
    assert not [p for d in drives for p in d.rglob("catalog.db*")]
    assert all((d / ".tierstore" / "master.key").exists() for d in drives)
    assert "Traceback" not in srv.log()
