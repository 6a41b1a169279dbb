"""Leases across gateways (issue 18 proof 6, docs/scale-out.md "Background work"): a gateway
killed with kill -9 while it holds leased work leaves it to another gateway once the lease ran
out; the gateway registry lists who is live. Run with the blobs on a local data dir (the second
gateway reuses it) and in an object store (``--store``: the gateways share the blobs, each has
its own data dir)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.api.tier_support import add_tier
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, admin_info, make_client
from tests.postgres import PostgreSQL
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, resolve_settings

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


class _Blobs:
    """Where the test's blobs are: the data dir's files, or the store bucket's objects."""

    def __init__(self, data: Path, weed: SeaweedFS | None, bucket: str) -> None:
        self.data, self.weed, self.bucket = data, weed, bucket

    def present(self, blob_ids: list[str]) -> set[str]:
        if self.weed is None:
            names = [p.name for p in (self.data / "blobs").rglob("*") if p.is_file()]
        else:
            pages = self.weed.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            names = [o["Key"].rsplit("/", 1)[-1] for page in pages for o in page.get("Contents", [])]
        return {b for b in blob_ids if b in names}


@pytest.mark.parametrize("where", ["local", "store"])
def test_trash_leased_by_a_killed_gateway_is_finished_by_the_next(
    where: str, tmp_path: Path, postgres: PostgreSQL, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateway A deletes an object and dies (kill -9) right after its trash pass leased its blob:
    the row stays, leased to A, and the blob stays. Gateway B on the same database (and the same
    data dir, or store) takes the row over once A's lease ran out, deletes the blob and the row.
    ``admin info`` lists B, not A; B leaves the registry at its stop."""
    dsn = postgres.create_database(f"leases_{where}")
    args = ["--catalog", dsn, "--workers", "1", "--lease-seconds", str(LEASE_S), "--scrub-interval", "0"]
    data_a = data_b = tmp_path / "data"
    weed: SeaweedFS | None = None
    if where == "store":
        weed = request.getfixturevalue("seaweedfs")
        assert weed is not None
        weed.client().create_bucket(Bucket="tierstore-leases")
        args += ["--store", f"s3://tierstore-leases/blobs?endpoint={weed.endpoint}"]
        args += ["--store-access-key", weed.access_key, "--store-secret-key", weed.secret_key]
        data_b = tmp_path / "data-b"
    blobs = _Blobs(data_a, weed, "tierstore-leases")
    monkeypatch.setenv("TIERSTORE_TEST_KILL_AFTER_CLAIM", "trash")  # A's worker: kill -9 after a claim took rows
    a = ServerProcess(data_a, extra_args=args)
    a.start(timeout_s=120)
    try:
        s3 = make_client(a.endpoint)
        s3.create_bucket(Bucket="leased")
        for key in ("gone", "kept"):  # blobs, not inline bodies
            s3.put_object(Bucket="leased", Key=key, Body=key.encode() * 20_000)
        blob_ids = [str(r[0]) for r in _sql(dsn, "SELECT blob_id FROM blobs ORDER BY blob_id")]
        assert len(blob_ids) == 2 and blobs.present(blob_ids) == set(blob_ids)
        with pytest.raises(Exception):  # the worker dies inside the request
            s3.delete_object(Bucket="leased", Key="gone")
    finally:
        a.stop(signal.SIGKILL)
    monkeypatch.delenv("TIERSTORE_TEST_KILL_AFTER_CLAIM")
    ((gone, owner_a, until_ns),) = _sql(dsn, "SELECT blob_id, lease_owner, lease_until FROM trash")
    assert gone in blob_ids and owner_a is not None  # committed and trashed, leased to A, not yet deleted
    assert _sql(dsn, "SELECT count(*) FROM gateways WHERE id = $1", owner_a) == [(1,)]  # A registered
    assert blobs.present(blob_ids) == set(blob_ids)  # A died before deleting it
    # B starts once A's lease ran out (B's first GC pass runs at its start; until then the rows
    # are A's and every claim skips them, as tests/catalog's LeaseContract shows).
    while time.time_ns() <= until_ns:
        time.sleep(0.1)
    if data_b != data_a:  # every gateway of a deployment has the same master key
        data_b.mkdir()
        shutil.copy2(data_a / "master.key", data_b / "master.key")
    b = ServerProcess(data_b, extra_args=args)
    b.start(timeout_s=120)
    try:
        _until(lambda: _sql(dsn, "SELECT count(*) FROM trash") == [(0,)], "B drained A's leased trash", b)
        assert blobs.present(blob_ids) == set(blob_ids) - {gone}
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


def test_outbox_leased_by_a_killed_gateway_is_finished_by_the_next(
    tmp_path: Path, postgres: PostgreSQL, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tier outbox across gateways on ``--store``: a version moved to a remote tier through A
    is deleted; A's outbox pass leases the remote delete and A dies (kill -9) right after the
    claim: the row stays, leased to A, and the remote object stays. B, with its own data dir, takes
    the row over once A's lease ran out and deletes the remote object and the row."""
    dsn = postgres.create_database("leases_outbox")
    seaweedfs.client().create_bucket(Bucket="tierstore-leases-outbox")
    args = ["--catalog", dsn, "--workers", "1", "--lease-seconds", str(LEASE_S), "--scrub-interval", "0",
            "--store", f"s3://tierstore-leases-outbox/blobs?endpoint={seaweedfs.endpoint}",
            "--store-access-key", seaweedfs.access_key, "--store-secret-key", seaweedfs.secret_key]  # fmt: skip
    monkeypatch.setenv("TIERSTORE_TEST_KILL_AFTER_CLAIM", "outbox")  # A's worker: kill -9 after an outbox claim
    remote = seaweedfs.client()

    def remote_keys() -> list[str]:
        return [o["Key"] for o in remote.list_objects_v2(Bucket="leases-cold").get("Contents", [])]

    a = ServerProcess(tmp_path / "a", extra_args=args)
    a.start(timeout_s=120)
    try:
        admin = TierstoreClient(resolve_settings(a.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        add_tier(admin, seaweedfs, "LEASECOLD", "leases-cold", "t")
        s3 = make_client(a.endpoint)
        s3.create_bucket(Bucket="leased")
        s3.put_object(Bucket="leased", Key="gone", Body=b"gone" * 20_000)
        assert admin.tier_transition("LEASECOLD", "leased", "gone")["moved"]
        assert len(remote_keys()) == 1
        with contextlib.suppress(Exception):  # the worker may die while answering
            s3.delete_object(Bucket="leased", Key="gone")
        _until(lambda: _sql(dsn, "SELECT count(*) FROM tier_outbox WHERE lease_owner IS NOT NULL") == [(1,)],
               "A's outbox pass claimed the remote delete", a)  # fmt: skip
    finally:
        a.stop(signal.SIGKILL)
    monkeypatch.delenv("TIERSTORE_TEST_KILL_AFTER_CLAIM")
    ((owner_a, until_ns),) = _sql(dsn, "SELECT lease_owner, next_ns FROM tier_outbox")
    assert _sql(dsn, "SELECT count(*) FROM gateways WHERE id = $1", owner_a) == [(1,)]  # A's registration
    assert len(remote_keys()) == 1  # A died before deleting it
    while time.time_ns() <= until_ns:
        time.sleep(0.1)
    (tmp_path / "b").mkdir()
    shutil.copy2(tmp_path / "a" / "master.key", tmp_path / "b" / "master.key")
    b = ServerProcess(tmp_path / "b", extra_args=args)
    b.start(timeout_s=120)
    try:
        _until(lambda: _sql(dsn, "SELECT count(*) FROM tier_outbox") == [(0,)], "B drained A's leased outbox", b)
        assert remote_keys() == []
        assert not make_client(b.endpoint).list_objects_v2(Bucket="leased").get("Contents")
    finally:
        b.stop()
    assert "Traceback" not in b.log(), b.log()[-4000:]


def test_a_lifecycle_expiration_claimed_by_a_killed_gateway_is_done_by_the_next(
    tmp_path: Path, postgres: PostgreSQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateway A's lifecycle worker claims a due expiration (the row is leased to A's gateway id)
    and dies (kill -9) before applying it: the object stays. Gateway B on the same database and
    data dir takes the row once A's lease ran out and expires the object; the key the rule does
    not cover stays."""
    dsn = postgres.create_database("leases_lifecycle")
    args = ["--catalog", dsn, "--workers", "1", "--lease-seconds", str(LEASE_S), "--scrub-interval", "0"]
    args += ["--lifecycle-day-seconds", "1"]
    data = tmp_path / "data"
    monkeypatch.setenv("TIERSTORE_TEST_KILL_AFTER_CLAIM", "lifecycle")  # A's worker: kill -9 after a claim took rows
    a = ServerProcess(data, extra_args=args)
    a.start(timeout_s=120)
    try:
        s3 = make_client(a.endpoint)
        s3.create_bucket(Bucket="aging")
        rule = {"ID": "old", "Status": "Enabled", "Filter": {"Prefix": "old/"}, "Expiration": {"Days": 1}}
        s3.put_bucket_lifecycle_configuration(Bucket="aging", LifecycleConfiguration={"Rules": [rule]})
        for key in ("old/x", "new/y"):
            s3.put_object(Bucket="aging", Key=key, Body=key.encode())
        claimed = "SELECT lease_owner, due_ns FROM lifecycle_due WHERE lease_owner IS NOT NULL"
        _until(lambda: _sql(dsn, claimed) != [], "A's worker claimed the expiration", a)
    finally:
        a.stop(signal.SIGKILL)
    monkeypatch.delenv("TIERSTORE_TEST_KILL_AFTER_CLAIM")
    ((owner_a, until_ns),) = _sql(dsn, claimed)
    assert _sql(dsn, "SELECT count(*) FROM gateways WHERE id = $1", owner_a) == [(1,)]  # a registered gateway's lease
    live = "SELECT v.key FROM versions v JOIN buckets b ON b.id = v.bucket_id WHERE b.name = 'aging' ORDER BY v.key"
    assert _sql(dsn, live) == [(b"new/y",), (b"old/x",)]  # A died before expiring it
    while time.time_ns() <= until_ns:  # B starts once A's lease ran out (until then every claim skips the row)
        time.sleep(0.1)
    b = ServerProcess(data, extra_args=args)
    b.start(timeout_s=120)
    try:
        _until(lambda: _sql(dsn, live) == [(b"new/y",)], "B expired the object A had claimed", b)
        s3 = make_client(b.endpoint)
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="aging")["Contents"]] == ["new/y"]
        assert s3.get_object(Bucket="aging", Key="new/y")["Body"].read() == b"new/y"
    finally:
        b.stop()
    assert "Traceback" not in b.log(), b.log()[-4000:]
