"""The mover's progress, retries and hardening (docs/tiers.md "The mover", "Writes to a tier
class") against real SeaweedFS servers: ``tier status`` (CLI) and ``/metrics`` count what every
worker moved and failed; a write to a tier that did not answer moves once the tier is back;
tier -> tier moves; two movers on the same versions; kill -9 while the lifecycle worker is
mid-transition; ``tierstore:TransitionObject`` authorized on the object (each of a batch's
too); a batch of transitions in one request.

One tierstore server for the module (tiers of its own; the session's SeaweedFS holds them), and
a SeaweedFS of the test's own where a test stops it."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.tier_support import ChunkReader, add_tier, admin_client, module_server, transition_in_bounded_memory
from tests.api.tier_support import catalog_rows as _catalog
from tests.api.tier_support import get_body as _get
from tests.api.tier_support import local_files as _local_files
from tests.api.tier_support import wait_for as _wait
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings

MIB = 1024 * 1024
REMOTE_BUCKET = "tdata-mover"  # one remote bucket, a prefix per tier: SeaweedFS has few volumes per test run


@pytest.fixture(scope="module")
def msrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "mover")


@pytest.fixture(scope="module")
def s3m(msrv: ServerProcess) -> Any:
    return make_client(msrv.endpoint)


@pytest.fixture(scope="module")
def admin(msrv: ServerProcess) -> TierstoreClient:
    return admin_client(msrv)


@pytest.fixture
def bkt(s3m: Any) -> str:
    name = f"mv-{uuid.uuid4().hex[:12]}"
    s3m.create_bucket(Bucket=name)
    return name


def _add_tier(admin: TierstoreClient, weed: SeaweedFS, name: str) -> tuple[Any, str]:
    """Tier ``name`` on ``weed`` (its own prefix of the remote bucket); its boto3 client and prefix."""
    prefix = f"{name.lower()}/"
    return add_tier(admin, weed, name, REMOTE_BUCKET, prefix), prefix


def _remote_ids(raw: Any, prefix: str) -> set[str]:
    """The blob ids of the remote objects under ``prefix``."""
    pages = raw.get_paginator("list_objects_v2").paginate(Bucket=REMOTE_BUCKET, Prefix=prefix)
    return {o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])}


def _blobs_of(srv: ServerProcess, bucket: str, key: str) -> list[tuple[str, str | None]]:
    """(blob id, tier) of every blob the versions of ``key`` name."""
    rows = _catalog(
        srv,
        "SELECT b.blob_id, b.tier FROM versions v, json_each(v.blobs) j JOIN blobs b"
        " ON b.blob_id = json_extract(j.value, '$[0]') WHERE v.bucket=? AND v.key=?",
        bucket,
        key.encode(),
    )
    return [(str(b), t) for b, t in rows]


def _cli_status(srv: ServerProcess, name: str) -> dict[str, Any]:
    """``tierstore admin tier status NAME`` through the CLI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(TIERSTORE_ENDPOINT=srv.endpoint, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
    done = subprocess.run(
        [sys.executable, "-m", "tierstore", "admin", "tier", "status", name],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (status,) = json.loads(done.stdout)
    return dict(status)


def _metrics(srv: ServerProcess, tier: str) -> dict[str, float]:
    """This tier's ``tierstore_tier_*`` samples of /metrics (name -> value)."""
    with urllib.request.urlopen(f"{srv.endpoint}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("tierstore_tier_") and f'tier="{tier}"' in line:
            out[line.split("{", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_write_to_a_tier_that_did_not_answer_moves_once_it_is_back(
    msrv: ServerProcess, s3m: Any, admin: TierstoreClient, tmp_path: Path, bkt: str
) -> None:
    """Progress visible and writes retried: while the tier is down, a PUT in its class stays
    local and shows as backlog and as an error (without secrets); once it is back, the worker
    moves it and the counters say so — through the CLI and /metrics, whichever worker answers."""
    weed = SeaweedFS(tmp_path / "weed")
    weed.start()
    try:
        raw, remote_prefix = _add_tier(admin, weed, "BACKSOON")
        weed.stop()
        body = bytes(range(256)) * (300 * 1024 // 256)
        s3m.put_object(Bucket=bkt, Key="waits", Body=body, StorageClass="BACKSOON")  # durable: not an error
        assert s3m.head_object(Bucket=bkt, Key="waits")["StorageClass"] == "BACKSOON"
        ((blob_id, tier),) = _blobs_of(msrv, bkt, "waits")
        assert tier is None and _local_files(msrv, blob_id)

        status = _cli_status(msrv, "BACKSOON")
        assert status["backlog"]["pending"] == 1 and status["backlog"]["total"] >= 1
        assert status["errors"] >= 1 and status["moved_objects"] == 0
        assert "TierUnavailable" in status["last_error"] and weed.endpoint in status["last_error"]
        assert weed.secret_key not in status["last_error"] and status["last_error_at"].endswith("Z")
        metrics = _metrics(msrv, "BACKSOON")
        assert metrics["tierstore_tier_backlog"] >= 1 and metrics["tierstore_tier_errors_total"] >= 1
        assert metrics["tierstore_tier_moved_objects_total"] == 0

        weed.start()  # the same port and data
        _wait(lambda: _blobs_of(msrv, bkt, "waits") == [(blob_id, "BACKSOON")], 180)
        assert blob_id in _remote_ids(raw, remote_prefix)
        assert _get(s3m, bkt, "waits") == body
        _wait(lambda: not _local_files(msrv, blob_id))  # freed after the switch
        status = _cli_status(msrv, "BACKSOON")
        assert status["backlog"] == {"total": 0, "due": 0, "pending": 0, "outbox": 0}
        assert (status["moved_objects"], status["moved_bytes"]) == (1, len(body))
        metrics = _metrics(msrv, "BACKSOON")
        assert metrics["tierstore_tier_moved_objects_total"] == 1
        assert metrics["tierstore_tier_moved_bytes_total"] == len(body)
        assert metrics["tierstore_tier_backlog"] == 0
        s3m.delete_object(Bucket=bkt, Key="waits")
        _wait(lambda: not _remote_ids(raw, remote_prefix))
        _wait(lambda: _catalog(msrv, "SELECT count(*) FROM tier_outbox WHERE tier='BACKSOON'") == [(0,)])
        admin.tier_remove("BACKSOON")
    finally:
        weed.stop()


def test_tier_to_tier_moves_copy_verify_switch_and_free_the_old_copy(
    msrv: ServerProcess, s3m: Any, admin: TierstoreClient, seaweedfs: SeaweedFS, bkt: str
) -> None:
    raw_a, prefix_a = _add_tier(admin, seaweedfs, "TIER_A")
    raw_b, prefix_b = _add_tier(admin, seaweedfs, "TIER_B")
    plain = bytes(range(251)) * (3 * MIB // 251)
    s3m.put_object(Bucket=bkt, Key="plain", Body=plain, StorageClass="TIER_A")
    s3m.put_object(Bucket=bkt, Key="sse", Body=b"SECRET-TEXT " * 20_000, StorageClass="TIER_A",
                   ServerSideEncryption="AES256")  # fmt: skip
    upload = s3m.create_multipart_upload(Bucket=bkt, Key="mp", StorageClass="TIER_A")["UploadId"]
    parts = [b"p" * (5 * MIB), b"q" * 1234]
    etags = [
        s3m.upload_part(Bucket=bkt, Key="mp", UploadId=upload, PartNumber=i + 1, Body=p)["ETag"]
        for i, p in enumerate(parts)
    ]
    s3m.complete_multipart_upload(
        Bucket=bkt, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )  # fmt: skip
    expected = {"plain": plain, "sse": b"SECRET-TEXT " * 20_000, "mp": b"".join(parts)}
    in_a = {k: _blobs_of(msrv, bkt, k) for k in expected}
    assert all(t == "TIER_A" for blobs in in_a.values() for t in (tier for _, tier in blobs))
    before = _cli_status(msrv, "TIER_B")

    for key in expected:
        assert admin.tier_transition("TIER_B", bkt, key)["moved"] is True, key
        assert admin.tier_transition("TIER_B", bkt, key)["moved"] is False, key  # idempotent
    for key, body in expected.items():
        assert s3m.head_object(Bucket=bkt, Key=key)["StorageClass"] == "TIER_B"
        assert _get(s3m, bkt, key) == body, key
        assert _blobs_of(msrv, bkt, key) == [(b, "TIER_B") for b, _ in in_a[key]]  # same ids, moved in place
    assert _get(s3m, bkt, "plain", Range="bytes=1000000-1000099") == plain[1_000_000:1_000_100]
    ids = {b for blobs in in_a.values() for b, _ in blobs}
    assert ids <= _remote_ids(raw_b, prefix_b)
    _wait(lambda: not ids & _remote_ids(raw_a, prefix_a))  # A's copies went through A's outbox
    after = _cli_status(msrv, "TIER_B")
    sizes = [int(_catalog(msrv, "SELECT size FROM blobs WHERE blob_id=?", b)[0][0]) for b in ids]
    assert after["moved_objects"] - before["moved_objects"] == 3
    assert after["moved_bytes"] - before["moved_bytes"] == sum(sizes)  # blob bytes (the SSE body's are ciphertext)

    # And back again, once A's old copies are gone.
    assert admin.tier_transition("TIER_A", bkt, "plain")["moved"] is True
    assert _get(s3m, bkt, "plain") == plain
    _wait(lambda: not {b for b, _ in in_a["plain"]} & _remote_ids(raw_b, prefix_b))
    for key in expected:
        s3m.delete_object(Bucket=bkt, Key=key)
    _wait(lambda: not _remote_ids(raw_a, prefix_a) and not _remote_ids(raw_b, prefix_b))


def test_two_movers_of_the_same_versions(
    msrv: ServerProcess, s3m: Any, admin: TierstoreClient, seaweedfs: SeaweedFS, bkt: str
) -> None:
    """Every version moved by two requests at once (to the server's workers): one remote object
    per blob, every one referenced, each version counted once, nothing lost."""
    raw, remote_prefix = _add_tier(admin, seaweedfs, "RACE")
    bodies = {f"k{i}": os.urandom(200_000 + i * 1000) for i in range(6)}
    bodies["big"] = os.urandom(9 * MIB)  # a multipart remote upload
    for key, body in bodies.items():
        s3m.put_object(Bucket=bkt, Key=key, Body=body)
    before = _cli_status(msrv, "RACE")["moved_objects"]

    def move(key: str) -> str:
        client = TierstoreClient(resolve_settings(msrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        try:
            return str(client.tier_transition("RACE", bkt, key)["moved"])
        except TierstoreClientError as exc:  # the loser may find the blob switched under it: an error, never damage
            return str(exc.code)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = {key: [pool.submit(move, key) for _ in range(2)] for key in bodies}
        results = {key: sorted(f.result() for f in futures) for key, futures in outcomes.items()}
    for key, found in results.items():
        assert "True" in found, (key, found)
    for key, body in bodies.items():
        assert s3m.head_object(Bucket=bkt, Key=key)["StorageClass"] == "RACE"
        assert _get(s3m, bkt, key) == body, key
    referenced = {b for key in bodies for b, tier in _blobs_of(msrv, bkt, key) if tier == "RACE"}
    assert len(referenced) == len(bodies)
    assert _remote_ids(raw, remote_prefix) == referenced  # no orphan, nothing missing
    assert _cli_status(msrv, "RACE")["moved_objects"] - before == len(bodies)
    for key in bodies:
        s3m.delete_object(Bucket=bkt, Key=key)
    _wait(lambda: not _remote_ids(raw, remote_prefix))


def test_transition_is_authorized_on_the_object(
    msrv: ServerProcess, s3m: Any, admin: TierstoreClient, seaweedfs: SeaweedFS, bkt: str
) -> None:
    _add_tier(admin, seaweedfs, "AUTHZ")
    s3m.put_object(Bucket=bkt, Key="mine/a", Body=b"a" * 1000)
    s3m.put_object(Bucket=bkt, Key="theirs/b", Body=b"b" * 1000)
    user = f"mover-{uuid.uuid4().hex[:8]}"
    admin.create_user(user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "tierstore:TransitionObject", "Resource": f"arn:aws:s3:::{bkt}/mine/*"}
        ],
    }
    admin.put_user_policy(user, "transition-mine", policy)
    key = admin.create_access_key(user)
    mover = TierstoreClient(
        resolve_settings(msrv.endpoint, access_key=key["access_key_id"], secret_key=key["secret_key"])
    )
    assert mover.tier_transition("AUTHZ", bkt, "mine/a")["moved"] is True
    with pytest.raises(TierstoreClientError) as info:
        mover.tier_transition("AUTHZ", bkt, "theirs/b")
    assert (info.value.status, info.value.code) == (403, "AccessDenied")
    with pytest.raises(TierstoreClientError) as info:  # a key that does not exist: denied the same, nothing revealed
        mover.tier_transition("AUTHZ", bkt, "theirs/nothing-here")
    assert (info.value.status, info.value.code) == (403, "AccessDenied")
    assert "StorageClass" not in s3m.head_object(Bucket=bkt, Key="theirs/b")
    # A batch: each entry authorized as its own transition, before it is looked up.
    s3m.put_object(Bucket=bkt, Key="mine/c", Body=b"c" * 1000)
    got = mover.tier_transition_many(
        "AUTHZ", [(bkt, "mine/c"), (bkt, "theirs/b"), (bkt, "theirs/nothing-here"), (bkt, "mine/nothing-here")]
    )
    assert [(r["key"], r.get("moved"), r.get("error", {}).get("code")) for r in got] == [
        ("mine/c", True, None),
        ("theirs/b", None, "AccessDenied"),
        ("theirs/nothing-here", None, "AccessDenied"),  # denied the same: nothing revealed
        ("mine/nothing-here", None, "NoSuchKey"),
    ]
    assert s3m.head_object(Bucket=bkt, Key="mine/c")["StorageClass"] == "AUTHZ"
    # Every entry denied: the same answer whether the tier exists or not.
    (only,) = mover.tier_transition_many("NOSUCHTIER", [(bkt, "theirs/b")])
    assert only["error"]["code"] == "AccessDenied"
    assert "StorageClass" not in s3m.head_object(Bucket=bkt, Key="theirs/b")
    for k in ("mine/a", "mine/c", "theirs/b"):
        s3m.delete_object(Bucket=bkt, Key=k)


def test_a_batch_of_transitions(
    msrv: ServerProcess, s3m: Any, admin: TierstoreClient, seaweedfs: SeaweedFS, bkt: str
) -> None:
    """``tier_transition_many``: every version of the batch moved (plain, inline, an older
    version), readable through, the counters counting each; again: nothing to do; a bad body or
    an unknown tier refused whole, nothing moved."""
    raw, remote_prefix = _add_tier(admin, seaweedfs, "BATCH")
    s3m.put_bucket_versioning(Bucket=bkt, VersioningConfiguration={"Status": "Enabled"})
    bodies = {f"k{i:02d}": os.urandom(70_000 + i) for i in range(12)}
    bodies["small"] = b"inline body"
    for key, body in bodies.items():
        s3m.put_object(Bucket=bkt, Key=key, Body=body)
    old = s3m.put_object(Bucket=bkt, Key="v", Body=b"o" * 100_000)["VersionId"]
    s3m.put_object(Bucket=bkt, Key="v", Body=b"n" * 100_000)
    before = _cli_status(msrv, "BATCH")["moved_objects"]
    wanted: list[tuple[str, str] | tuple[str, str, str | None]] = [(bkt, k) for k in bodies] + [(bkt, "v", old)]
    got = admin.tier_transition_many("BATCH", wanted)
    assert [(r["key"], r["moved"]) for r in got] == [(k, True) for k in bodies] + [("v", True)]
    assert got[-1]["version_id"] == old
    for key, body in bodies.items():
        assert s3m.head_object(Bucket=bkt, Key=key)["StorageClass"] == "BATCH", key
        assert _get(s3m, bkt, key) == body, key
    assert "StorageClass" not in s3m.head_object(Bucket=bkt, Key="v")  # the current one stays
    assert s3m.head_object(Bucket=bkt, Key="v", VersionId=old)["StorageClass"] == "BATCH"
    assert len(_remote_ids(raw, remote_prefix)) == len(bodies) + 1
    assert _cli_status(msrv, "BATCH")["moved_objects"] - before == len(bodies) + 1
    again = admin.tier_transition_many("BATCH", wanted)
    assert [r["moved"] for r in again] == [False] * len(wanted)  # idempotent
    bads: list[dict[str, Any]] = [{"objects": []}, {"objects": [{"bucket": bkt}]}, {"items": []},
                                  {"objects": [{"bucket": bkt, "key": 1}]},
                                  {"objects": [{"bucket": bkt, "key": "k00"}] * 1001}]  # fmt: skip
    for bad in bads:
        with pytest.raises(TierstoreClientError) as info:
            admin._call("POST", "/_tierstore/admin/tiers/BATCH/transitions", bad)
        assert (info.value.status, info.value.code) == (400, "InvalidRequest"), bad
    s3m.put_object(Bucket=bkt, Key="late", Body=b"l" * 1000)
    with pytest.raises(TierstoreClientError) as info:
        admin.tier_transition_many("NOSUCHTIER", [(bkt, "late")])
    assert info.value.status == 404
    assert "StorageClass" not in s3m.head_object(Bucket=bkt, Key="late")


@pytest.mark.parametrize("step", ["uploaded", "committed"])
def test_kill_9_while_the_lifecycle_worker_is_mid_transition(
    step: str, tmp_path: Path, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker process dies right after the remote put (before the switch) or right after the
    switch (before the local bytes are freed), then the whole server is killed; after a restart
    the version reads back byte-exact, and the move completes (the retry keeps the object already
    uploaded; after the switch, the trash frees the local copy)."""
    monkeypatch.setenv("TIERSTORE_TEST_KILL_MOVER_AT", step)
    srv = ServerProcess(tmp_path / "data", extra_args=["--lifecycle-day-seconds", "1"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        admin = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        tier = f"LCKILL_{step.upper()}"
        raw, remote_prefix = _add_tier(admin, seaweedfs, tier)
        s3.create_bucket(Bucket="lckill")
        s3.put_bucket_lifecycle_configuration(
            Bucket="lckill",
            LifecycleConfiguration={"Rules": [{"ID": "cold", "Filter": {"Prefix": ""}, "Status": "Enabled",
                                               "Transitions": [{"Days": 1, "StorageClass": tier}]}]},
        )  # fmt: skip
        body = bytes(range(251)) * (12 * MIB // 251)  # a multipart remote upload
        s3.put_object(Bucket="lckill", Key="run/ckpt.bin", Body=body)
        ((blob_id, _),) = _blobs_of(srv, "lckill", "run/ckpt.bin")
        if step == "uploaded":
            _wait(lambda: blob_id in _remote_ids(raw, remote_prefix))  # uploaded: the hook kills the worker
        else:
            _wait(lambda: _blobs_of(srv, "lckill", "run/ckpt.bin") == [(blob_id, tier)])  # switched: killed
        srv.stop(signal.SIGKILL)
        if step == "uploaded":
            assert _blobs_of(srv, "lckill", "run/ckpt.bin") == [(blob_id, None)]  # never switched...
            assert _local_files(srv, blob_id)  # ...and the local copy is intact
        assert blob_id in _remote_ids(raw, remote_prefix)
        monkeypatch.delenv("TIERSTORE_TEST_KILL_MOVER_AT")
        srv.start()
        s3 = make_client(srv.endpoint)
        assert _get(s3, "lckill", "run/ckpt.bin") == body
        _wait(lambda: s3.head_object(Bucket="lckill", Key="run/ckpt.bin").get("StorageClass") == tier, 120)
        assert _blobs_of(srv, "lckill", "run/ckpt.bin") == [(blob_id, tier)]
        assert _get(s3, "lckill", "run/ckpt.bin") == body
        _wait(lambda: not _local_files(srv, blob_id))
        assert _remote_ids(raw, remote_prefix) == {blob_id}
        s3.delete_object(Bucket="lckill", Key="run/ckpt.bin")
        _wait(lambda: not _remote_ids(raw, remote_prefix))
    finally:
        srv.stop()


def test_a_lifecycle_rule_moves_a_version_from_tier_to_tier(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """Two transitions of one rule (a day to HOPA, two to HOPB): the worker moves the version to
    HOPA, then HOPA -> HOPB (remote -> remote); HOPA's copy goes through its outbox."""
    srv = ServerProcess(tmp_path / "data", extra_args=["--lifecycle-day-seconds", "1"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        admin = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        raw_a, prefix_a = _add_tier(admin, seaweedfs, "HOPA")
        raw_b, prefix_b = _add_tier(admin, seaweedfs, "HOPB")
        s3.create_bucket(Bucket="hops")
        s3.put_bucket_lifecycle_configuration(
            Bucket="hops",
            LifecycleConfiguration={"Rules": [{"ID": "hop", "Filter": {"Prefix": ""}, "Status": "Enabled",
                                               "Transitions": [{"Days": 1, "StorageClass": "HOPA"},
                                                               {"Days": 3, "StorageClass": "HOPB"}]}]},
        )  # fmt: skip
        body = os.urandom(300 * 1024)
        s3.put_object(Bucket="hops", Key="k", Body=body)
        ((blob_id, _),) = _blobs_of(srv, "hops", "k")
        _wait(lambda: s3.head_object(Bucket="hops", Key="k").get("StorageClass") == "HOPB", 120)
        assert _blobs_of(srv, "hops", "k") == [(blob_id, "HOPB")]
        assert _get(s3, "hops", "k") == body
        assert blob_id in _remote_ids(raw_b, prefix_b)
        _wait(lambda: blob_id not in _remote_ids(raw_a, prefix_a))
        assert _cli_status(srv, "HOPA")["moved_objects"] == _cli_status(srv, "HOPB")["moved_objects"] == 1
    finally:
        srv.stop()


def test_a_tier_to_tier_move_has_bounded_memory(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """RSS growth of the server while it moves a 256 MiB object from one tier to another
    (remote -> remote, streamed): under 64 MiB."""
    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "1"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        admin = TierstoreClient(
            resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY), timeout_s=900
        )
        _add_tier(admin, seaweedfs, "MEMA")
        _add_tier(admin, seaweedfs, "MEMB")
        s3.create_bucket(Bucket="bkt")
        chunk = bytes(range(256)) * (4 * MIB // 256)
        s3.upload_fileobj(ChunkReader(iter([chunk] * 64)), "bkt", "big", ExtraArgs={"StorageClass": "MEMA"})
        assert s3.head_object(Bucket="bkt", Key="big")["StorageClass"] == "MEMA"
        transition_in_bounded_memory(srv, admin, "MEMB", "bkt", "big")
        assert s3.head_object(Bucket="bkt", Key="big")["StorageClass"] == "MEMB"
        s3.delete_object(Bucket="bkt", Key="big")
    finally:
        srv.stop()
