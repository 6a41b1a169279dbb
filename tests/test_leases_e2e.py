"""Leases across gateways (issue 18 proof 6, docs/scale-out.md "Background work"): a gateway
killed with kill -9 while it holds leased work leaves it to another gateway once the lease ran
out; the gateway registry lists who is live."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import ServerProcess, admin_info, make_client
from tests.postgres import PostgreSQL

LEASE_S = 2  # --lease-seconds: short, so the takeover comes soon


def _sql(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(r) for r in await conn.fetch(statement, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _until(check: Any, what: str, srv: ServerProcess, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s}s\n{srv.log()[-4000:]}")


def _blob_files(data: Path, blob_ids: list[str]) -> list[Path]:
    return [p for p in (data / "blobs").rglob("*") if p.is_file() and any(b in p.name for b in blob_ids)]


def test_trash_leased_by_a_killed_gateway_is_finished_by_the_next(
    tmp_path: Path, postgres: PostgreSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateway A deletes an object and dies (kill -9) right after its trash pass leased its blob:
    the row stays, leased to A. Gateway B on the same database and data dir takes it over
    once A's lease ran out, deletes the blob file and the row. ``admin info`` lists B, not A."""
    dsn = postgres.create_database("leases_e2e")
    args = ["--catalog", dsn, "--workers", "1", "--lease-seconds", str(LEASE_S), "--scrub-interval", "0"]
    data = tmp_path / "data"
    monkeypatch.setenv("TIERSTORE_TEST_KILL_AFTER_CLAIM", "trash")  # A's worker: kill -9 after a claim took rows
    a = ServerProcess(data, extra_args=args)
    a.start(timeout_s=120)
    try:
        s3 = make_client(a.endpoint)
        s3.create_bucket(Bucket="leased")
        for key in ("gone", "kept"):  # blobs, not inline bodies
            s3.put_object(Bucket="leased", Key=key, Body=key.encode() * 20_000)
        blob_ids = [str(r[0]) for r in _sql(dsn, "SELECT blob_id FROM blobs ORDER BY blob_id")]
        assert len(blob_ids) == 2 and len(_blob_files(data, blob_ids)) == 2
        with pytest.raises(Exception):  # the worker dies inside the request
            s3.delete_object(Bucket="leased", Key="gone")
    finally:
        a.stop(signal.SIGKILL)
    monkeypatch.delenv("TIERSTORE_TEST_KILL_AFTER_CLAIM")
    ((gone, owner_a, until_ns),) = _sql(dsn, "SELECT blob_id, lease_owner, lease_until FROM trash")
    assert gone in blob_ids and owner_a is not None  # committed and trashed, leased to A, not yet deleted
    assert _sql(dsn, "SELECT count(*) FROM gateways WHERE id = $1", owner_a) == [(1,)]  # A registered
    assert len(_blob_files(data, [gone])) == 1  # A died before deleting it
    # B starts once A's lease ran out (B's first GC pass runs at its start; until then the rows
    # are A's and every claim skips them, as tests/catalog's LeaseContract shows).
    while time.time_ns() <= until_ns:
        time.sleep(0.1)
    b = ServerProcess(data, extra_args=args)
    b.start(timeout_s=120)
    try:
        _until(lambda: _sql(dsn, "SELECT count(*) FROM trash") == [(0,)], "B drained A's leased trash", b)
        assert _blob_files(data, [gone]) == [] and len(_blob_files(data, blob_ids)) == 1
        info = admin_info(b.endpoint)
        (live,) = info["gateways"]  # one worker; A's registration is stale, not live
        assert live["id"] != owner_a and live["pid"] != a.pid and live["host"]
        s3 = make_client(b.endpoint)
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="leased")["Contents"]] == ["kept"]
        assert s3.get_object(Bucket="leased", Key="kept")["Body"].read() == b"kept" * 20_000
    finally:
        b.stop()
    assert _sql(dsn, "SELECT id FROM gateways WHERE id <> $1", owner_a) == []  # B left the registry at its stop
    assert "Traceback" not in b.log(), b.log()[-4000:]
