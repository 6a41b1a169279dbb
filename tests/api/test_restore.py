"""RestoreObject and hot copies (docs/tiers.md "Hot copies", "Restore") against a real SeaweedFS:
the restore lifecycle through boto3 (202, ``x-amz-restore`` while it runs and after, 200 when
restored, 409 while one runs), its errors, reads of restored versions (whole, ranged, encrypted,
batch and dataset rows) with the tier stopped, expiry (the copy dropped, GET refused again), and
kill -9 of the worker during a restore (resumed after the restart; nothing lost).

One tierstore server for the module, with a 3 s lifecycle day (Days=1000 keeps a restore for the
whole module; Days=1 expires in 3 s); an archive tier on the session's SeaweedFS, and one on a
SeaweedFS of the test's own for the test that stops it."""

from __future__ import annotations

import email.utils
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.test_tier_data import PREFIX, _add_tier, _catalog, _get, _local_files, _settle, _wait
from tests.api.tier_support import admin_client, module_server
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.s3http import assert_error, signed_request
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, resolve_settings
from tierstore.datasets import DatasetRef, RemoteSource

MIB = 1024 * 1024
LONG = 1000  # days: the whole module at a 3 s day
DONE = re.compile(r'^ongoing-request="false", expiry-date="([^"]+)"$')


@pytest.fixture(scope="module")
def rsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "restore", "--lifecycle-day-seconds", "3")


@pytest.fixture(scope="module")
def s3r(rsrv: ServerProcess) -> Any:
    return make_client(rsrv.endpoint)


@pytest.fixture(scope="module")
def admin(rsrv: ServerProcess) -> TierstoreClient:
    return admin_client(rsrv)


@pytest.fixture(scope="module")
def deep(admin: TierstoreClient, seaweedfs: SeaweedFS) -> Any:
    """An archive (restore-required) tier DEEP on the session SeaweedFS."""
    return _add_tier(admin, seaweedfs, "DEEP", restore_required=True)


@pytest.fixture
def bkt(s3r: Any) -> str:
    name = f"rs-{uuid.uuid4().hex[:12]}"
    s3r.create_bucket(Bucket=name)
    return name


def _err(info: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    r = info.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def _restore(s3: Any, bucket: str, key: str, days: int = LONG, **kw: Any) -> int:
    r = s3.restore_object(Bucket=bucket, Key=key, RestoreRequest={"Days": days}, **kw)
    return int(r["ResponseMetadata"]["HTTPStatusCode"])


def _restored(s3: Any, bucket: str, key: str, **kw: Any) -> bool:
    return DONE.match(s3.head_object(Bucket=bucket, Key=key, **kw).get("Restore", "")) is not None


def _published(srv: ServerProcess, ids: list[str]) -> dict[Path, tuple[int, int]]:
    """The local blob files (not the temporary ones of a put) of ``ids``: (inode, mtime)."""
    out = {}
    for blob_id in ids:
        for path in _local_files(srv, blob_id):
            if not path.name.endswith(".tmp"):
                st = path.stat()
                out[path] = (st.st_ino, st.st_mtime_ns)
    return out


def _multipart(s3: Any, bucket: str, key: str, parts: list[bytes], storage_class: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, StorageClass=storage_class)["UploadId"]
    etags = [
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=i + 1, Body=p)["ETag"]
        for i, p in enumerate(parts)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )  # fmt: skip


def test_restore_lifecycle_and_expiry(rsrv: ServerProcess, s3r: Any, deep: Any, bkt: str) -> None:
    s3r.put_bucket_versioning(Bucket=bkt, VersioningConfiguration={"Status": "Enabled"})
    body = bytes(range(256)) * 1200
    old = s3r.put_object(Bucket=bkt, Key="obj", Body=b"old " * 30_000, StorageClass="DEEP")["VersionId"]
    s3r.put_object(Bucket=bkt, Key="obj", Body=body, StorageClass="DEEP")
    assert "Restore" not in s3r.head_object(Bucket=bkt, Key="obj")
    with pytest.raises(ClientError) as info:
        s3r.get_object(Bucket=bkt, Key="obj")
    assert _err(info) == (403, "InvalidObjectState")

    assert _restore(s3r, bkt, "obj") == 202
    head = s3r.head_object(Bucket=bkt, Key="obj")["Restore"]
    assert head == 'ongoing-request="true"' or DONE.match(head), head
    _wait(lambda: _restored(s3r, bkt, "obj"))
    restore = s3r.head_object(Bucket=bkt, Key="obj")["Restore"]
    match = DONE.match(restore)
    assert match is not None
    expiry = email.utils.parsedate_to_datetime(match.group(1))
    assert expiry.tzinfo is not None and match.group(1).endswith(" GMT")
    assert _get(s3r, bkt, "obj") == body
    assert _get(s3r, bkt, "obj", Range="bytes=1000-1999") == body[1000:2000]
    assert s3r.get_object(Bucket=bkt, Key="obj")["Restore"] == restore  # on GET too
    assert _restore(s3r, bkt, "obj") == 200  # restored already: the expiry is renewed

    # Listings tell the restore state when asked (x-amz-optional-object-attributes).
    (entry,) = s3r.list_objects_v2(Bucket=bkt, OptionalObjectAttributes=["RestoreStatus"])["Contents"]
    assert entry["RestoreStatus"]["IsRestoreInProgress"] is False
    assert entry["RestoreStatus"]["RestoreExpiryDate"] >= expiry
    assert "RestoreStatus" not in s3r.list_objects_v2(Bucket=bkt)["Contents"][0]
    versions = s3r.list_object_versions(Bucket=bkt, OptionalObjectAttributes=["RestoreStatus"])["Versions"]
    assert [("RestoreStatus" in v, v["IsLatest"]) for v in versions] == [(True, True), (False, False)]

    # The older version is archived on its own: refused until restored by version id.
    with pytest.raises(ClientError) as info:
        s3r.get_object(Bucket=bkt, Key="obj", VersionId=old)
    assert _err(info) == (403, "InvalidObjectState")
    assert _restore(s3r, bkt, "obj", days=1, VersionId=old) == 202
    ((old_blob,),) = _catalog(
        rsrv, "SELECT json_extract(blobs, '$[0][0]') FROM versions WHERE bucket=? AND version_id=?", bkt, old
    )
    # Days=1 is 3 s here: the worker drops the copy, GET is refused again, the header is gone.
    _wait(lambda: "Restore" not in s3r.head_object(Bucket=bkt, Key="obj", VersionId=old))
    with pytest.raises(ClientError) as info:
        s3r.get_object(Bucket=bkt, Key="obj", VersionId=old)
    assert _err(info) == (403, "InvalidObjectState")
    assert _catalog(rsrv, "SELECT tier, cached FROM blobs WHERE blob_id=?", old_blob) == [("DEEP", None)]
    assert _catalog(rsrv, "SELECT count(*) FROM hot_requests WHERE holder LIKE ?", f"%/{old}") == [(0,)]
    _wait(lambda: not _local_files(rsrv, old_blob))
    assert _get(s3r, bkt, "obj") == body  # the current version's restore is untouched


def test_restore_errors(rsrv: ServerProcess, s3r: Any, deep: Any, bkt: str) -> None:
    s3r.put_object(Bucket=bkt, Key="local", Body=b"on the local drives")
    s3r.put_object(Bucket=bkt, Key="arch", Body=b"a" * 70_000, StorageClass="DEEP")
    with pytest.raises(ClientError) as info:
        _restore(s3r, bkt, "local")
    assert _err(info) == (403, "InvalidObjectState")
    with pytest.raises(ClientError) as info:
        _restore(s3r, bkt, "missing")
    assert _err(info) == (404, "NoSuchKey")

    def post(xml: bytes) -> Any:
        return signed_request(rsrv, "POST", f"/{bkt}/arch", xml, query=[("restore", "")])

    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    assert_error(post(b"<RestoreRequest><Days>1"), 400, "MalformedXML")
    assert_error(post(f"<RestoreRequest {ns}/>".encode()), 400, "MalformedXML")  # no Days
    assert_error(post(b"<RestoreRequest><Days>soon</Days></RestoreRequest>"), 400, "MalformedXML")
    assert_error(post(b"<RestoreRequest><Days>0</Days></RestoreRequest>"), 400, "InvalidArgument")
    job = b"<RestoreRequest><Days>1</Days><GlacierJobParameters><Tier>%s</Tier></GlacierJobParameters></RestoreRequest>"
    assert_error(post(job % b"Fast"), 400, "MalformedXML")
    select = b"<RestoreRequest><Type>SELECT</Type><SelectParameters/></RestoreRequest>"
    assert_error(post(select), 501, "NotImplemented")
    elsewhere = b"<RestoreRequest><Days>1</Days><OutputLocation><S3/></OutputLocation></RestoreRequest>"
    assert_error(post(elsewhere), 501, "NotImplemented")
    assert "Restore" not in s3r.head_object(Bucket=bkt, Key="arch")  # nothing started by the refusals
    assert post(job % b"Bulk").status == 202


def test_restored_reads_with_the_tier_stopped(
    rsrv: ServerProcess, s3r: Any, admin: TierstoreClient, tmp_path: Path, bkt: str
) -> None:
    weed = SeaweedFS(tmp_path / "weed")
    weed.start()
    try:
        _add_tier(admin, weed, "VAULT", restore_required=True)
        plain = bytes(range(251)) * 2000
        secret = b"TOP-SECRET-PLAINTEXT " * 20_000
        parts = [b"p" * (5 * MIB), b"q" * 4000]
        s3r.put_object(Bucket=bkt, Key="ds/plain", Body=plain, StorageClass="VAULT")
        s3r.put_object(Bucket=bkt, Key="ds/sse", Body=secret, StorageClass="VAULT", ServerSideEncryption="AES256")
        kms = b"KMS-SEALED " * 9000
        s3r.put_object(Bucket=bkt, Key="kms", Body=kms, StorageClass="VAULT", ServerSideEncryption="aws:kms")
        _multipart(s3r, bkt, "mp", parts, "VAULT")
        s3r.put_object(Bucket=bkt, Key="later", Body=b"l" * 90_000, StorageClass="VAULT")
        name = f"rds-{uuid.uuid4().hex[:8]}"
        admin.create_dataset(name, bucket=bkt, prefix="ds/")
        for key in ("ds/plain", "ds/sse", "kms", "mp"):
            assert _restore(s3r, bkt, key) == 202
        for key in ("ds/plain", "ds/sse", "kms", "mp"):
            _wait(lambda k=key: _restored(s3r, bkt, k))  # type: ignore[misc]
        weed.stop()  # the tier is gone: restored versions read from their local copies

        assert _get(s3r, bkt, "ds/plain") == plain
        assert _get(s3r, bkt, "ds/plain", Range="bytes=100-100099") == plain[100:100_100]
        assert _get(s3r, bkt, "ds/sse") == secret
        assert _get(s3r, bkt, "ds/sse", Range="bytes=70000-70099") == secret[70000:70100]
        assert _get(s3r, bkt, "kms") == kms and _get(s3r, bkt, "kms", Range="bytes=5-14") == kms[5:15]
        assert _get(s3r, bkt, "mp") == b"".join(parts)
        assert _get(s3r, bkt, "mp", PartNumber=2) == parts[1]
        reader = admin_client(rsrv)
        entries = [{"bucket": bkt, "key": "ds/plain", "range": "bytes=5-9"}, {"bucket": bkt, "key": "mp"}]
        assert [i.data for i in reader.read_many(entries)] == [plain[5:10], b"".join(parts)]
        source = RemoteSource(rsrv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        assert [d for _, d in source.read_rows(DatasetRef(name, 1), [0, 1])] == [plain, secret]

        # A restore cannot copy while the tier is down: it stays ongoing, and a second one is 409.
        assert _restore(s3r, bkt, "later") == 202
        assert s3r.head_object(Bucket=bkt, Key="later")["Restore"] == 'ongoing-request="true"'
        listed = s3r.list_objects_v2(Bucket=bkt, Prefix="later", OptionalObjectAttributes=["RestoreStatus"])
        assert listed["Contents"][0]["RestoreStatus"] == {"IsRestoreInProgress": True}
        with pytest.raises(ClientError) as info:
            _restore(s3r, bkt, "later")
        assert _err(info) == (409, "RestoreAlreadyInProgress")
        with pytest.raises(ClientError) as info:
            s3r.get_object(Bucket=bkt, Key="later")
        assert _err(info) == (403, "InvalidObjectState")
        weed.start()  # back: the worker finishes it
        _wait(lambda: _restored(s3r, bkt, "later"), 120)
        assert _get(s3r, bkt, "later") == b"l" * 90_000
        copies = [r[0] for r in _catalog(rsrv, "SELECT blob_id FROM blobs WHERE tier='VAULT' AND cached=1")]
        assert len(copies) == 6  # three single blobs, two parts, and "later"
        admin.delete_dataset(f"{name}@1")
        for key in ("ds/plain", "ds/sse", "kms", "mp", "later"):
            s3r.delete_object(Bucket=bkt, Key=key)
        # Deleting the versions frees the local copies and the remote objects.
        _wait(lambda: _catalog(rsrv, "SELECT count(*) FROM blobs WHERE tier='VAULT'") == [(0,)])
        _wait(lambda: _catalog(rsrv, "SELECT count(*) FROM tier_outbox WHERE tier='VAULT'") == [(0,)])
        _wait(lambda: not any(_local_files(rsrv, b) for b in copies))
        admin.tier_remove("VAULT")
    finally:
        weed.stop()


def test_kill_9_during_a_restore(tmp_path: Path, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERSTORE_TEST_KILL_HOT_AT", "copied")
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        admin = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        raw = seaweedfs.client()
        remote_bucket = "restore-kill"
        raw.create_bucket(Bucket=remote_bucket)
        admin.tier_add(
            "ICE", seaweedfs.endpoint, remote_bucket, prefix=PREFIX, access_key_id=seaweedfs.access_key,
            secret_key=seaweedfs.secret_key, restore_required=True, allow_private=True,
        )  # fmt: skip
        _settle()
        s3.create_bucket(Bucket="bkt")
        parts = [bytes([i]) * (5 * MIB) for i in range(3)] + [b"end"]
        _multipart(s3, "bkt", "big", parts, "ICE")
        ids = [r[0] for r in _catalog(srv, "SELECT blob_id FROM blobs WHERE tier='ICE'")]
        assert len(ids) == 4
        assert _restore(s3, "bkt", "big") == 202
        # The worker kills itself right after the first local copy lands (before marking it).
        _wait(lambda: bool(_published(srv, ids)))
        srv.stop(signal.SIGKILL)
        monkeypatch.delenv("TIERSTORE_TEST_KILL_HOT_AT")
        assert _catalog(srv, "SELECT done_ns FROM hot_requests") == [(None,)]  # still ongoing
        landed = _published(srv, ids)
        # No GC grace: the startup GC takes every local blob the catalog does not know; a held
        # copy (published, not yet marked) is known.
        srv.extra_args = ["--gc-grace", "0"]
        srv.start()
        s3 = make_client(srv.endpoint)
        admin = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        _wait(lambda: _restored(s3, "bkt", "big"), 120)  # resumed
        assert _get(s3, "bkt", "big") == b"".join(parts)
        assert _catalog(srv, "SELECT count(*) FROM blobs WHERE tier='ICE' AND cached=1") == [(4,)]
        remote = {o["Key"] for o in raw.list_objects_v2(Bucket=remote_bucket).get("Contents", [])}
        assert remote == {PREFIX + b for b in ids}  # the archive keeps every blob
        kept = _published(srv, ids)
        assert landed and all(kept[p] == landed[p] for p in landed)  # the same files: kept, not copied again

        # The heal walk verifies the copies; a damaged one is dropped and copied again.
        ((victim,),) = _catalog(srv, "SELECT blob_id FROM blobs WHERE size=? LIMIT 1", 5 * MIB)
        (path,) = _local_files(srv, victim)
        with path.open("r+b") as f:
            f.seek(MIB)
            byte = f.read(1)
            f.seek(MIB)
            f.write(bytes([byte[0] ^ 0xFF]))
        report = list(admin.heal())[-1]
        assert report["state"] == "done" and victim in report["repaired"] and report["blobs_lost"] == 0
        assert report["blobs_total"] >= 4  # the copies are walked as local blobs
        _wait(lambda: _restored(s3, "bkt", "big"), 120)
        _wait(lambda: _catalog(srv, "SELECT cached FROM blobs WHERE blob_id=?", victim) == [(1,)], 120)
        assert _get(s3, "bkt", "big") == b"".join(parts)
    finally:
        srv.stop()
