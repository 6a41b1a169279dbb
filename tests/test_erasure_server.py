"""Issue 4's proof, end to end: a real server on 4 drives, real clients, drives pulled and replaced.

- remove 2 of 4 drive directories while the server runs -> every object still GETs byte-exact,
  writes answer 503 SlowDown; put them back empty -> ``tierstore heal`` restores full redundancy
  (proved by then removing the *other* two drives and reading everything again);
- delete the drive that held the primary catalog copy -> no metadata is lost;
- flip bytes in one shard -> GET still byte-exact, the shard is repaired (heal queue), and the
  background scrubber finds and repairs damage nobody read.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess, make_client
from tierstore.client import TierstoreClient, resolve_settings

SEED = int(os.environ.get("TIERSTORE_TEST_SEED", random.randrange(2**32)))
STRIPE = 256 * 1024  # small stripes so a few MiB span many of them
SMALL = 16 * 1024


@pytest.fixture
def seed() -> int:
    print(f"seed: {SEED} (replay: TIERSTORE_TEST_SEED={SEED})")
    return SEED


def _drive_args(drives: list[Path], *extra: str) -> list[str]:
    return [
        "--drives",
        *map(str, drives),
        "--stripe-bytes",
        str(STRIPE),
        "--small-object-bytes",
        str(SMALL),
        "--heal-queue-interval",
        "0.2",
        *extra,
    ]


@pytest.fixture
def drives(tmp_path: Path) -> list[Path]:
    return [tmp_path / f"drive{i}" for i in range(4)]


def _started(tmp_path: Path, drives: list[Path], scrub_interval_h: str = "0") -> ServerProcess:
    srv = ServerProcess(tmp_path / "log", extra_args=_drive_args(drives, "--scrub-interval", scrub_interval_h))
    srv.start()
    return srv


@pytest.fixture
def ec_server(tmp_path: Path, drives: list[Path]) -> Iterator[ServerProcess]:
    srv = _started(tmp_path, drives)
    yield srv
    srv.stop()


def _cli(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
    return subprocess.run(
        [sys.executable, "-m", "tierstore", *args, "--endpoint", srv.endpoint],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def _put_objects(s3, bucket: str, rng: random.Random) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """Objects of every layout: empty, tiny replicas, the threshold, a few stripes, multipart."""
    objects: dict[str, bytes] = {}
    sizes = [0, 1, 100, SMALL - 1, SMALL, SMALL + 1, STRIPE, 3 * STRIPE + 7, 2 * 1024 * 1024 + 333]
    for i, size in enumerate(sizes):
        key = f"obj/{i:02d}-{size}"
        objects[key] = rng.randbytes(size)
        s3.put_object(Bucket=bucket, Key=key, Body=objects[key])
    up = s3.create_multipart_upload(Bucket=bucket, Key="obj/multipart")
    parts, data = [], b""
    for n, size in enumerate([5 * 1024 * 1024, 1234567], start=1):
        chunk = rng.randbytes(size)
        data += chunk
        etag = s3.upload_part(Bucket=bucket, Key="obj/multipart", UploadId=up["UploadId"], PartNumber=n, Body=chunk)
        parts.append({"PartNumber": n, "ETag": etag["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="obj/multipart", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    objects["obj/multipart"] = data
    return objects


def _check_all(s3, bucket: str, objects: dict[str, bytes], rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    listed = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    }
    assert listed == set(objects)
    for key, data in objects.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key
        if len(data) > 2:
            start = rng.randrange(len(data) - 1)
            end = rng.randrange(start, len(data))
            got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"].read()
            assert got == data[start : end + 1], (key, start, end)


def _shard_files(drive: Path) -> dict[str, Path]:
    blobs = drive / "blobs"
    if not blobs.exists():
        return {}
    return {p.name: p for p in blobs.rglob("*") if p.is_file()}


def _admin_info(srv: ServerProcess) -> dict:  # type: ignore[type-arg]
    out = _cli(srv, "admin", "info", "--json")
    assert out.returncode == 0, out.stderr
    doc: dict = json.loads(out.stdout)  # type: ignore[type-arg]
    return doc


def test_lose_two_of_four_drives_then_heal(ec_server: ServerProcess, drives: list[Path], seed: int) -> None:
    rng = random.Random(seed)
    s3 = make_client(ec_server.endpoint)
    s3.create_bucket(Bucket="dsx")
    objects = _put_objects(s3, "dsx", rng)
    before = [set(_shard_files(d)) for d in drives]
    assert all(before), "every drive holds shards or replicas"
    admin = TierstoreClient(resolve_settings(ec_server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    admin.create_user("ec-user")
    list_all = {"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}
    admin.put_user_policy("ec-user", "list", {"Version": "2012-10-17", "Statement": [list_all]})
    user_key = admin.create_access_key("ec-user")  # its secret sealed in the mirrored catalog

    lost = sorted(rng.sample(range(4), 2))
    for i in lost:
        shutil.rmtree(drives[i])
    _check_all(s3, "dsx", objects, rng)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="dsx", Key="new", Body=b"x" * 100)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert err.value.response["Error"]["Code"] == "SlowDown"
    info = _admin_info(ec_server)
    assert [d["state"] for d in info["drives"]] == ["offline" if i in lost else "online" for i in range(4)]
    assert info["writable"] is False and info["readable"] is True

    for i in lost:
        drives[i].mkdir()
    out = _cli(ec_server, "heal", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["state"] == "done"
    assert report["drives_formatted"] == lost
    assert sorted(report["catalog_reseeded"]) == lost
    assert report["blobs_lost"] == 0 and report["blobs_degraded"] == 0
    assert report["blobs_repaired"] == report["blobs_done"] > 0
    assert "heal" in out.stderr  # the progress bar
    after = [set(_shard_files(d)) for d in drives]
    assert after == before, "heal put every shard and replica back where it was"
    master_keys = {(d / ".tierstore" / "master.key").read_bytes() for d in drives}
    assert len(master_keys) == 1, "heal copied the master key onto the replaced drives"
    user_s3 = make_client(ec_server.endpoint, access_key=user_key["access_key_id"], secret_key=user_key["secret_key"])
    assert user_s3.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    info = _admin_info(ec_server)
    assert all(d["state"] == "online" and d["catalog"] == "live" for d in info["drives"])
    assert info["last_heal"]["blobs_repaired"] == report["blobs_repaired"]

    # writes work again, and the repaired drives alone (with the other two gone) serve everything
    objects["after-heal"] = rng.randbytes(3 * STRIPE)
    s3.put_object(Bucket="dsx", Key="after-heal", Body=objects["after-heal"])
    for i in sorted(set(range(4)) - set(lost)):
        shutil.rmtree(drives[i])
    _check_all(s3, "dsx", objects, rng)


def test_losing_the_primary_catalog_drive_loses_no_metadata(tmp_path: Path, drives: list[Path], seed: int) -> None:
    rng = random.Random(seed)
    srv = _started(tmp_path, drives)
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="meta")
        s3.put_bucket_versioning(Bucket="meta", VersioningConfiguration={"Status": "Enabled"})
        objects = {f"k{i}": rng.randbytes(rng.choice([10, 5000, 600_000])) for i in range(12)}
        for key, data in objects.items():
            s3.put_object(Bucket="meta", Key=key, Body=data, Tagging="stage=raw")
        shutil.rmtree(drives[0])  # held catalog copy 0: the one every process reads first
        objects["written-after"] = b"after the primary went away"
        s3.put_object(Bucket="meta", Key="written-after", Body=objects["written-after"])
        s3.delete_object(Bucket="meta", Key="k0")
        del objects["k0"]
        _check_all(s3, "meta", objects, rng)
    finally:
        srv.stop()

    # restart with the primary drive replaced by an empty directory
    drives[0].mkdir()
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        _check_all(s3, "meta", objects, rng)
        assert s3.get_object_tagging(Bucket="meta", Key="k1")["TagSet"] == [{"Key": "stage", "Value": "raw"}]
        versions = s3.list_object_versions(Bucket="meta", Prefix="k0")
        assert len(versions["Versions"]) == 1 and len(versions["DeleteMarkers"]) == 1
        info = _admin_info(srv)
        assert info["drives"][0]["state"] == "online" and info["drives"][0]["catalog"] == "live"
        out = _cli(srv, "heal", "-q")
        assert out.returncode == 0, out.stdout + out.stderr
        # now drive 0's copy alone must carry the metadata: remove two others
        shutil.rmtree(drives[1])
        shutil.rmtree(drives[2])
        _check_all(s3, "meta", objects, rng)
    finally:
        srv.stop()


def _wait_for(predicate, what: str, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _flip(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    pos = rng.randrange(min(len(data), STRIPE))  # inside the data, not only the footer
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def test_bitrot_is_served_around_and_repaired(tmp_path: Path, drives: list[Path], seed: int) -> None:
    rng = random.Random(seed)
    srv = _started(tmp_path, drives, scrub_interval_h="0.0005")  # a scrub pass every ~2 s
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="rot")
        read_data = rng.randbytes(3 * STRIPE + 5)
        seen = set().union(*(_shard_files(d) for d in drives))
        s3.put_object(Bucket="rot", Key="read-me", Body=read_data)
        (read_blob,) = set().union(*(_shard_files(d) for d in drives)) - seen
        quiet_data = rng.randbytes(2 * STRIPE)
        seen |= {read_blob}
        s3.put_object(Bucket="rot", Key="nobody-reads-me", Body=quiet_data)
        (quiet_blob,) = set().union(*(_shard_files(d) for d in drives)) - seen

        # 1. a GET reads around a corrupt shard; the heal queue rewrites it
        victim = _shard_files(drives[rng.randrange(4)])[read_blob]
        good = victim.read_bytes()
        _flip(victim, rng)
        assert s3.get_object(Bucket="rot", Key="read-me")["Body"].read() == read_data
        _wait_for(lambda: victim.exists() and victim.read_bytes() == good, "the heal queue to repair the shard")

        # 2. nobody reads: the scrubber finds it
        victim = _shard_files(drives[rng.randrange(4)])[quiet_blob]
        good = victim.read_bytes()
        _flip(victim, rng)

        _wait_for(lambda: f"scrub: repaired blob {quiet_blob}" in srv.log(), "the scrubber to report the repair")
        assert victim.read_bytes() == good
        assert s3.get_object(Bucket="rot", Key="nobody-reads-me")["Body"].read() == quiet_data
    finally:
        srv.stop()
    assert "beyond repair" not in srv.log()


def test_dataset_on_a_drive_set_survives_overwrite_and_two_lost_drives(
    ec_server: ServerProcess, drives: list[Path], seed: int
) -> None:
    """Datasets on an erasure set: the manifest and the pinned bytes (inline rows in every catalog
    copy, blobs as shards) stay readable after the keys are overwritten and 2 of 4 drives go."""
    from tierstore.client import TierstoreClient, resolve_settings
    from tierstore.datasets import RemoteSource

    rng = random.Random(seed)
    s3 = make_client(ec_server.endpoint)
    s3.create_bucket(Bucket="dsets")
    bodies = {f"s/{i:02d}": rng.randbytes(rng.choice([10, SMALL, SMALL + 1, 3 * STRIPE])) for i in range(12)}
    for key, body in bodies.items():
        s3.put_object(Bucket="dsets", Key=key, Body=body)
    client = TierstoreClient(resolve_settings(ec_server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    rec = client.create_dataset("ec-ds", bucket="dsets", prefix="s/")
    for key in bodies:
        s3.put_object(Bucket="dsets", Key=key, Body=b"overwritten")
    for i in sorted(rng.sample(range(4), 2)):
        shutil.rmtree(drives[i])
    source = RemoteSource(ec_server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    manifest = source.open_manifest(rec["ref"])
    rows = list(range(len(manifest))) * 2
    rng.shuffle(rows)
    keys = manifest.column("key")
    assert [d for _, d in source.read_rows(manifest.ref, rows)] == [bodies[keys[r]] for r in rows]
