"""The tier data path (docs/tiers.md) against a real SeaweedFS: writes to a tier class, reads
through a tier (whole, ranged, HEAD, listings, batch and dataset reads), copies in and out,
``transition`` of plain, multipart, versioned, encrypted and inline versions (through
``POST /_tierstore/admin/tiers/NAME/transition``), the remote objects' metadata, the outbox,
a restore-required tier, a tier that goes away and comes back, and kill -9 mid-transition.

One tierstore server for the module (its tiers hold data, so the session server, whose other
tests remove every tier, is not used); the session's SeaweedFS is the tier, except for the
tests that stop it, which start their own."""

from __future__ import annotations

import datetime
import email.utils
import re
import signal
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.tier_support import ChunkReader, add_tier, admin_client, module_server, transition_in_bounded_memory
from tests.api.tier_support import catalog_rows as _catalog
from tests.api.tier_support import get_body as _get
from tests.api.tier_support import local_files as _local_files
from tests.api.tier_support import settle as _settle
from tests.api.tier_support import wait_for as _wait
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings
from tierstore.datasets import DatasetRef, RemoteSource

MIB = 1024 * 1024
PREFIX = "t/"


@pytest.fixture(scope="module")
def tsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "tdata")


@pytest.fixture(scope="module")
def s3t(tsrv: ServerProcess) -> Any:
    return make_client(tsrv.endpoint)


@pytest.fixture(scope="module")
def admin(tsrv: ServerProcess) -> TierstoreClient:
    return admin_client(tsrv)


def _add_tier(admin: TierstoreClient, weed: SeaweedFS, name: str, *, restore_required: bool = False) -> Any:
    remote_bucket = f"tdata-{name.lower().replace('_', '-')}"
    return add_tier(admin, weed, name, remote_bucket, PREFIX, restore_required=restore_required)


@pytest.fixture(scope="module")
def cold(admin: TierstoreClient, seaweedfs: SeaweedFS) -> Any:
    """Tier COLD on the session SeaweedFS; its boto3 client (to read the remote objects directly)."""
    return _add_tier(admin, seaweedfs, "COLD")


@pytest.fixture
def bkt(s3t: Any) -> str:
    name = f"td-{uuid.uuid4().hex[:12]}"
    s3t.create_bucket(Bucket=name)
    return name


def _remote(
    raw: Any, bucket: str, key: str, version_id: str | None = None, remote_bucket: str = "tdata-cold"
) -> dict[str, dict[str, str]]:
    """The remote objects (blob id -> user metadata) holding ``key`` (of ``version_id``)."""
    out = {}
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=remote_bucket, Prefix=PREFIX):
        for obj in page.get("Contents", []):
            try:
                meta = raw.head_object(Bucket=remote_bucket, Key=obj["Key"])["Metadata"]
            except ClientError:  # deleted (by the outbox) since the listing
                continue
            named = (meta.get("tierstore-bucket"), meta.get("tierstore-key"))
            if named == (bucket, urllib.parse.quote(key, safe="")) and (
                version_id is None or meta.get("tierstore-version-id") == version_id
            ):
                out[obj["Key"][len(PREFIX) :]] = meta
    return out


def test_put_to_tier_class_reads_through(tsrv: ServerProcess, s3t: Any, cold: Any, bkt: str) -> None:
    body = bytes(range(256)) * (3 * MIB // 256) + b"tail"
    put = s3t.put_object(Bucket=bkt, Key="big.bin", Body=body, StorageClass="COLD", Metadata={"a": "1"})
    s3t.put_object(Bucket=bkt, Key="small.txt", Body=b"tiny body", StorageClass="COLD")
    s3t.put_object(Bucket=bkt, Key="local.txt", Body=b"stays here")

    head = s3t.head_object(Bucket=bkt, Key="big.bin")
    assert head["StorageClass"] == "COLD" and head["ContentLength"] == len(body)
    assert _get(s3t, bkt, "big.bin") == body
    assert _get(s3t, bkt, "big.bin", Range="bytes=1000-2999999") == body[1000:3_000_000]
    assert _get(s3t, bkt, "small.txt") == b"tiny body"
    assert "StorageClass" not in s3t.head_object(Bucket=bkt, Key="local.txt")
    listed = {o["Key"]: o["StorageClass"] for o in s3t.list_objects_v2(Bucket=bkt)["Contents"]}
    assert listed == {"big.bin": "COLD", "small.txt": "COLD", "local.txt": "STANDARD"}
    assert {o["Key"]: o["StorageClass"] for o in s3t.list_objects(Bucket=bkt)["Contents"]} == listed
    assert {v["Key"]: v["StorageClass"] for v in s3t.list_object_versions(Bucket=bkt)["Versions"]} == listed

    # The remote objects say what they hold; the catalog knows where; no local copy is left.
    ((blob_id, meta),) = _remote(cold, bkt, "big.bin").items()
    assert meta["tierstore-version-id"] == "null" and meta["tierstore-etag"] == put["ETag"].strip('"')
    assert meta["tierstore-object-size"] == meta["tierstore-blob-size"] == str(len(body))
    assert len(meta["tierstore-crc32c"]) == 8 and "tierstore-encrypted" not in meta
    assert _catalog(tsrv, "SELECT tier FROM blobs WHERE blob_id=?", blob_id) == [("COLD",)]
    _wait(lambda: not _local_files(tsrv, blob_id))
    ((small_id, _),) = _remote(cold, bkt, "small.txt").items()  # an inline-sized body too: never inline in a tier
    assert _catalog(tsrv, "SELECT inline_id FROM versions WHERE bucket=? AND key=?", bkt, b"small.txt") == [(None,)]
    assert small_id != blob_id

    # Storage classes: a tier's name is one, any other unknown name is not.
    with pytest.raises(ClientError) as info:
        s3t.put_object(Bucket=bkt, Key="x", Body=b"x", StorageClass="NOSUCHTIER")
    assert info.value.response["Error"]["Code"] == "InvalidStorageClass"

    # Batch reads read through too.
    reader = TierstoreClient(resolve_settings(tsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    entries = [{"bucket": bkt, "key": "big.bin", "range": "bytes=5-9"}, {"bucket": bkt, "key": "small.txt"}]
    assert [i.data for i in reader.read_many(entries)] == [body[5:10], b"tiny body"]


def test_copy_into_and_out_of_a_tier(s3t: Any, cold: Any, bkt: str) -> None:
    body = b"copy me " * 100_000
    s3t.put_object(Bucket=bkt, Key="src", Body=body)
    s3t.copy_object(Bucket=bkt, Key="in", CopySource={"Bucket": bkt, "Key": "src"}, StorageClass="COLD")
    assert s3t.head_object(Bucket=bkt, Key="in")["StorageClass"] == "COLD"
    assert _get(s3t, bkt, "in") == body
    # The copy shared the source's blob: moving it moved the source's bytes too (class is per version).
    assert "StorageClass" not in s3t.head_object(Bucket=bkt, Key="src")
    assert _get(s3t, bkt, "src") == body

    # A copy onto itself that only changes the class (allowed by S3), and a copy out of the tier.
    s3t.put_object(Bucket=bkt, Key="self", Body=b"in place " * 5000)
    s3t.copy_object(Bucket=bkt, Key="self", CopySource={"Bucket": bkt, "Key": "self"}, StorageClass="COLD")
    assert s3t.head_object(Bucket=bkt, Key="self")["StorageClass"] == "COLD"
    assert _get(s3t, bkt, "self") == b"in place " * 5000
    assert len(_remote(cold, bkt, "self")) == 1
    s3t.copy_object(Bucket=bkt, Key="out", CopySource={"Bucket": bkt, "Key": "self"}, StorageClass="STANDARD")
    assert "StorageClass" not in s3t.head_object(Bucket=bkt, Key="out")
    assert _get(s3t, bkt, "out") == b"in place " * 5000


def test_transition_of_every_kind_of_version(
    tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, cold: Any, bkt: str
) -> None:
    s3t.put_bucket_versioning(Bucket=bkt, VersioningConfiguration={"Status": "Enabled"})
    plain = b"plain " * 200_000
    old = s3t.put_object(Bucket=bkt, Key="v", Body=b"old version " * 10_000)["VersionId"]
    s3t.put_object(Bucket=bkt, Key="v", Body=b"new version")
    s3t.put_object(Bucket=bkt, Key="plain", Body=plain)
    s3t.put_object(Bucket=bkt, Key="inline", Body=b"an inline body")
    secret = b"TOP-SECRET-PLAINTEXT " * 5000
    s3t.put_object(Bucket=bkt, Key="sse", Body=secret, ServerSideEncryption="AES256")
    upload = s3t.create_multipart_upload(Bucket=bkt, Key="mp")["UploadId"]
    parts_body = [b"a" * (5 * MIB), b"b" * 1000]
    etags = [
        s3t.upload_part(Bucket=bkt, Key="mp", UploadId=upload, PartNumber=i + 1, Body=p)["ETag"]
        for i, p in enumerate(parts_body)
    ]
    s3t.complete_multipart_upload(
        Bucket=bkt, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )  # fmt: skip

    expected = {"plain": plain, "inline": b"an inline body", "sse": secret, "mp": b"".join(parts_body)}
    for key in expected:
        assert admin.tier_transition("COLD", bkt, key)["moved"] is True, key
        assert admin.tier_transition("COLD", bkt, key)["moved"] is False, key  # idempotent
    assert admin.tier_transition("COLD", bkt, "v", old) == {"moved": True, "version_id": old}
    for key, body in expected.items():
        assert s3t.head_object(Bucket=bkt, Key=key)["StorageClass"] == "COLD"
        assert _get(s3t, bkt, key) == body, key
    assert _get(s3t, bkt, "sse", Range="bytes=70000-70099") == secret[70000:70100]
    assert _get(s3t, bkt, "v", VersionId=old) == b"old version " * 10_000
    assert "StorageClass" not in s3t.head_object(Bucket=bkt, Key="v")  # the current version stayed
    versions = {v["VersionId"]: v["StorageClass"] for v in s3t.list_object_versions(Bucket=bkt, Prefix="v")["Versions"]}
    assert versions[old] == "COLD" and sorted(versions.values()) == ["COLD", "STANDARD"]

    assert len(_remote(cold, bkt, "mp")) == 2  # one remote object per blob (each part)
    ((sse_id, sse_meta),) = _remote(cold, bkt, "sse").items()
    assert sse_meta["tierstore-encrypted"] == "s3"
    stored = cold.get_object(Bucket="tdata-cold", Key=PREFIX + sse_id)["Body"].read()
    assert b"TOP-SECRET" not in stored and len(stored) > len(secret)  # ciphertext, moved as it was
    ((inline_id, _),) = _remote(cold, bkt, "inline").items()
    assert _catalog(tsrv, "SELECT tier, refs FROM blobs WHERE blob_id=?", inline_id) == [("COLD", 1)]


def test_delete_queues_the_remote_object_and_datasets_keep_reading(
    tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, cold: Any, bkt: str
) -> None:
    s3t.put_object(Bucket=bkt, Key="gone", Body=b"g" * 100_000, StorageClass="COLD")
    ((gone_id, _),) = _remote(cold, bkt, "gone").items()
    s3t.delete_object(Bucket=bkt, Key="gone")
    _wait(lambda: not _remote(cold, bkt, "gone"))
    assert _catalog(tsrv, "SELECT count(*) FROM tier_outbox WHERE blob_id=?", gone_id) == [(0,)]

    pinned = b"pinned sample " * 10_000
    s3t.put_object(Bucket=bkt, Key="ds/a.bin", Body=pinned, StorageClass="COLD")
    s3t.put_object(Bucket=bkt, Key="ds/b.bin", Body=b"local sample")
    name = f"tds-{uuid.uuid4().hex[:8]}"
    admin.create_dataset(name, bucket=bkt, prefix="ds/")
    s3t.delete_object(Bucket=bkt, Key="ds/a.bin")
    source = RemoteSource(tsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    assert [d for _, d in source.read_rows(DatasetRef(name, 1), [0, 1, 0])] == [pinned, b"local sample", pinned]
    assert len(_remote(cold, bkt, "ds/a.bin")) == 1  # the dataset still references it
    admin.delete_dataset(f"{name}@1")
    _wait(lambda: not _remote(cold, bkt, "ds/a.bin"))


def test_dataset_loaders_read_samples_from_a_tier(
    tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, cold: Any, bkt: str
) -> None:
    """A dataset whose samples are partly in a tier, through the torch loaders (a DataLoader over
    MapDataset's batch reads, and IterableDataset's epoch): every sample, byte-exact."""
    from torch.utils.data import DataLoader

    from tierstore.torch import IterableDataset, MapDataset

    samples = {f"ds/{i:02d}.bin": bytes([i]) * (20_000 + i) for i in range(12)}
    for i, (key, data) in enumerate(samples.items()):
        s3t.put_object(Bucket=bkt, Key=key, Body=data, **({"StorageClass": "COLD"} if i % 3 else {}))
    name = f"tload-{uuid.uuid4().hex[:8]}"
    admin.create_dataset(name, bucket=bkt, prefix="ds/")
    assert len(_remote(cold, bkt, "ds/01.bin")) == 1
    source = RemoteSource(tsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    mapped = MapDataset(f"{name}@1", source)
    got = {s["key"]: s["data"] for batch in DataLoader(mapped, batch_size=5, collate_fn=list) for s in batch}
    assert got == samples
    streamed = IterableDataset(f"{name}@1", source, batch_size=4, shuffle=False)
    got = {s["key"]: s["data"] for batch in DataLoader(streamed, batch_size=None) for s in batch}
    assert got == samples
    admin.delete_dataset(f"{name}@1")


def test_restore_required_tier_refuses_get(
    tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, seaweedfs: SeaweedFS, bkt: str
) -> None:
    _add_tier(admin, seaweedfs, "DEEP", restore_required=True)
    s3t.put_object(Bucket=bkt, Key="archived", Body=b"z" * 50_000, StorageClass="DEEP")
    assert s3t.head_object(Bucket=bkt, Key="archived")["StorageClass"] == "DEEP"
    with pytest.raises(ClientError) as info:
        s3t.get_object(Bucket=bkt, Key="archived")
    err = info.value.response
    assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (403, "InvalidObjectState")
    assert err["Error"]["Message"] == "The operation is not valid for the object's storage class"

    # A real day (this server's): the restored copy's expiry is rounded up to the next midnight
    # UTC, as AWS does, counted from the end of the copy; a renewal counts from the request.
    def expiry() -> datetime.datetime | None:
        found = re.fullmatch(r'ongoing-request="false", expiry-date="([^"]+)"',
                             s3t.head_object(Bucket=bkt, Key="archived").get("Restore", ""))  # fmt: skip
        return None if found is None else email.utils.parsedate_to_datetime(found.group(1))

    def restore(days: int) -> int:
        r = s3t.restore_object(Bucket=bkt, Key="archived", RestoreRequest={"Days": days})
        return int(r["ResponseMetadata"]["HTTPStatusCode"])

    for days, status in ((1, 202), (3, 200)):
        start = datetime.datetime.now(datetime.UTC)
        assert restore(days) == status
        _wait(lambda: expiry() is not None)
        end = expiry()
        assert end is not None and (end.hour, end.minute, end.second) == (0, 0, 0), end
        assert start + datetime.timedelta(days=days) < end <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            days=days + 1)  # fmt: skip
    assert s3t.get_object(Bucket=bkt, Key="archived")["Body"].read() == b"z" * 50_000
    s3t.delete_object(Bucket=bkt, Key="archived")


def test_tier_down_then_back(tsrv: ServerProcess, s3t: Any, admin: TierstoreClient, tmp_path: Path, bkt: str) -> None:
    weed = SeaweedFS(tmp_path / "weed")
    weed.start()
    try:
        raw = _add_tier(admin, weed, "FLAKY")
        s3t.put_object(Bucket=bkt, Key="far", Body=b"f" * 200_000, StorageClass="FLAKY")
        s3t.put_object(Bucket=bkt, Key="near", Body=b"n" * 200_000)
        s3t.put_object(Bucket=bkt, Key="doomed", Body=b"d" * 200_000, StorageClass="FLAKY")
        doomed = [o["Key"] for o in raw.list_objects_v2(Bucket="tdata-flaky", Prefix=PREFIX).get("Contents", [])]
        assert len(doomed) == 2
        weed.stop()
        with pytest.raises(ClientError) as info:
            s3t.get_object(Bucket=bkt, Key="far")
        err = info.value.response
        assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (503, "ServiceUnavailable")
        assert err["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "5"
        assert _get(s3t, bkt, "near") == b"n" * 200_000  # local objects are unaffected
        assert s3t.head_object(Bucket=bkt, Key="far")["StorageClass"] == "FLAKY"  # metadata is local
        with pytest.raises(TierstoreClientError) as refused:  # the mover: nothing switched, nothing lost
            admin.tier_transition("FLAKY", bkt, "near")
        assert (refused.value.status, refused.value.code) == (503, "ServiceUnavailable")
        assert "StorageClass" not in s3t.head_object(Bucket=bkt, Key="near")
        assert _get(s3t, bkt, "near") == b"n" * 200_000
        # A write in the tier's class succeeds (durable locally, with the tier's class).
        s3t.put_object(Bucket=bkt, Key="late", Body=b"l" * 100_000, StorageClass="FLAKY")
        assert s3t.head_object(Bucket=bkt, Key="late")["StorageClass"] == "FLAKY"
        assert _get(s3t, bkt, "late") == b"l" * 100_000
        s3t.delete_object(Bucket=bkt, Key="doomed")
        _wait(lambda: _catalog(tsrv, "SELECT attempts FROM tier_outbox WHERE tier='FLAKY'") not in ([], [(0,)]))
        weed.start()  # the same port and data
        assert admin.tier_transition("FLAKY", bkt, "near")["moved"] is True  # resumes once it answers
        assert s3t.head_object(Bucket=bkt, Key="near")["StorageClass"] == "FLAKY"
        # Its bytes were still local: moved now, unless the worker's retry of writes whose tier was
        # down (tier_pending, tests/api/test_mover.py) came first; either way they are in the tier.
        admin.tier_transition("FLAKY", bkt, "late")
        assert len(_remote(raw, bkt, "late", remote_bucket="tdata-flaky")) == 1
        _wait(lambda: _catalog(tsrv, "SELECT count(*) FROM tier_outbox WHERE tier='FLAKY'") == [(0,)], 120)
        left = [o["Key"] for o in raw.list_objects_v2(Bucket="tdata-flaky", Prefix=PREFIX).get("Contents", [])]
        assert len(left) == 3 and _get(s3t, bkt, "far") == b"f" * 200_000  # far, near, late; doomed is gone
        assert _get(s3t, bkt, "near") == b"n" * 200_000 and _get(s3t, bkt, "late") == b"l" * 100_000
        for key in ("far", "near", "late"):
            s3t.delete_object(Bucket=bkt, Key=key)
        _wait(lambda: _catalog(tsrv, "SELECT count(*) FROM blobs WHERE tier='FLAKY'") == [(0,)])
        _wait(lambda: _catalog(tsrv, "SELECT count(*) FROM tier_outbox WHERE tier='FLAKY'") == [(0,)])
        admin.tier_remove("FLAKY")
    finally:
        weed.stop()


@pytest.mark.parametrize("step", ["uploaded", "committed"])
def test_kill_9_during_a_transition(
    step: str, tmp_path: Path, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERSTORE_TEST_KILL_MOVER_AT", step)
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        admin = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        raw = seaweedfs.client()
        remote_bucket = f"tdata-kill-{step}"
        raw.create_bucket(Bucket=remote_bucket)
        admin.tier_add(
            "KILL", seaweedfs.endpoint, remote_bucket, access_key_id=seaweedfs.access_key,
            secret_key=seaweedfs.secret_key, allow_private=True,
        )  # fmt: skip
        _settle()
        s3.create_bucket(Bucket="bkt")
        body = bytes(range(251)) * (24 * MIB // 251)  # several remote parts
        s3.put_object(Bucket="bkt", Key="big", Body=body)
        with pytest.raises(Exception):
            admin.tier_transition("KILL", "bkt", "big")
        srv.stop(signal.SIGKILL)
        monkeypatch.delenv("TIERSTORE_TEST_KILL_MOVER_AT")
        srv.start()
        s3 = make_client(srv.endpoint)
        assert _get(s3, "bkt", "big") == body  # from wherever it is
        ((blob_id, tier),) = _catalog(srv, "SELECT blob_id, tier FROM blobs")
        remote = {o["Key"] for o in raw.list_objects_v2(Bucket=remote_bucket).get("Contents", [])}
        assert blob_id in remote  # uploaded before the kill, at either step
        if step == "uploaded":  # the switch never happened: the local copy is authoritative and intact
            assert tier is None and _local_files(srv, blob_id)
            assert admin.tier_transition("KILL", "bkt", "big")["moved"] is True  # the retry reuses the object
        else:
            assert tier == "KILL"
        assert _get(s3, "bkt", "big") == body
        _wait(lambda: not _local_files(srv, blob_id))  # freed only after the switch
        assert _get(s3, "bkt", "big", Range="bytes=9000000-9000009") == body[9_000_000:9_000_010]
        s3.delete_object(Bucket="bkt", Key="big")
        _wait(lambda: not raw.list_objects_v2(Bucket=remote_bucket).get("Contents"))
    finally:
        srv.stop()


def test_a_1_gib_transition_has_bounded_memory(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    """RSS growth of the server while it moves a 1 GiB object: under 64 MiB."""
    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "1"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        admin = TierstoreClient(
            resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY), timeout_s=900
        )
        raw = seaweedfs.client()
        raw.create_bucket(Bucket="tdata-mem")
        admin.tier_add(
            "MEM", seaweedfs.endpoint, "tdata-mem", access_key_id=seaweedfs.access_key,
            secret_key=seaweedfs.secret_key, allow_private=True,
        )  # fmt: skip
        _settle()
        s3.create_bucket(Bucket="bkt")
        chunk = bytes(range(256)) * (4 * MIB // 256)
        size = 1024 * MIB

        def body() -> Iterator[bytes]:
            for _ in range(size // len(chunk)):
                yield chunk

        s3.upload_fileobj(ChunkReader(body()), "bkt", "huge")
        transition_in_bounded_memory(srv, admin, "MEM", "bkt", "huge")
        assert s3.head_object(Bucket="bkt", Key="huge")["StorageClass"] == "MEM"
        s3.delete_object(Bucket="bkt", Key="huge")
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def lc(tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFS) -> Iterator[tuple[ServerProcess, Any, Any]]:
    """A server whose lifecycle day is a second, with tier LCMOVE: (server, its boto3 client, the
    tier's remote boto3 client)."""
    srv = ServerProcess(tmp_path_factory.mktemp("lc") / "data", extra_args=["--lifecycle-day-seconds", "1"])
    srv.start()
    try:
        admin = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        raw = _add_tier(admin, seaweedfs, "LCMOVE")
        yield srv, make_client(srv.endpoint), raw
    finally:
        srv.stop()


def _rules(s3: Any, bucket: str, *rules: dict[str, Any]) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)})


def test_a_lifecycle_rule_moves_a_version_to_its_tier(lc: tuple[ServerProcess, Any, Any]) -> None:
    """The lifecycle worker hands a due Transition to the mover: the version's class becomes the
    tier's, its blob is in the tier (and no longer on the local drives), and it reads back."""
    srv, s3, _ = lc
    _rules(s3, "lcmove", {"ID": "cold", "Filter": {"Prefix": "runs/"}, "Status": "Enabled",
                          "Transitions": [{"Days": 1, "StorageClass": "LCMOVE"}]})  # fmt: skip
    body = bytes(range(256)) * 1024  # 256 KiB: above the default 128 KiB transition minimum
    s3.put_object(Bucket="lcmove", Key="runs/a.bin", Body=body)
    s3.put_object(Bucket="lcmove", Key="keep/b.bin", Body=body)  # outside the rule's prefix
    _wait(lambda: s3.head_object(Bucket="lcmove", Key="runs/a.bin").get("StorageClass") == "LCMOVE")
    assert _get(s3, "lcmove", "runs/a.bin") == body
    (blob_id,) = [b for (b,) in _catalog(srv, "SELECT blob_id FROM blobs WHERE tier = 'LCMOVE'")]
    _wait(lambda: not _local_files(srv, blob_id))  # the local copy goes once the switch committed
    assert "StorageClass" not in s3.head_object(Bucket="lcmove", Key="keep/b.bin")  # STANDARD


def test_lifecycle_moves_noncurrent_versions_and_expires_tiered_objects(lc: tuple[ServerProcess, Any, Any]) -> None:
    """NoncurrentVersionTransition moves the old version and leaves the current one; an
    Expiration of an object whose bytes are in a tier deletes it, and the outbox then deletes
    its remote object."""
    srv, s3, raw = lc
    _rules(s3, "lcnc", {"ID": "old", "Filter": {}, "Status": "Enabled",
                        "NoncurrentVersionTransitions": [{"NoncurrentDays": 1, "StorageClass": "LCMOVE"}]})  # fmt: skip
    s3.put_bucket_versioning(Bucket="lcnc", VersioningConfiguration={"Status": "Enabled"})
    old_body, new_body = b"o" * (200 * 1024), b"n" * (200 * 1024)
    old = s3.put_object(Bucket="lcnc", Key="m.bin", Body=old_body)["VersionId"]
    s3.put_object(Bucket="lcnc", Key="m.bin", Body=new_body)

    def classes() -> dict[str, str]:
        return {v["VersionId"]: v["StorageClass"] for v in s3.list_object_versions(Bucket="lcnc")["Versions"]}

    _wait(lambda: classes()[old] == "LCMOVE")
    assert sorted(classes().values()) == ["LCMOVE", "STANDARD"]  # the current version stays
    assert _get(s3, "lcnc", "m.bin", VersionId=old) == old_body and _get(s3, "lcnc", "m.bin") == new_body
    assert len(_remote(raw, "lcnc", "m.bin", old, remote_bucket="tdata-lcmove")) == 1

    _rules(s3, "lcexp", {"ID": "gone", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 1}})
    s3.put_object(Bucket="lcexp", Key="tmp/x.bin", Body=b"x" * 50_000, StorageClass="LCMOVE")
    assert len(_remote(raw, "lcexp", "tmp/x.bin", remote_bucket="tdata-lcmove")) == 1
    _wait(lambda: "Contents" not in s3.list_objects_v2(Bucket="lcexp"))
    _wait(lambda: not _remote(raw, "lcexp", "tmp/x.bin", remote_bucket="tdata-lcmove"))
    assert _catalog(srv, "SELECT count(*) FROM tier_outbox") == [(0,)]
