"""S3 conformance fixes of issue 14 (part a), each through boto3 or raw HTTP against a real server:
ListObjectVersions resuming after a deleted marker version, CreateBucket of an owned bucket per
region, idempotent and checksum-checked CompleteMultipartUpload, BadDigest for x-amz-checksum-*
values, InvalidRange for UploadPartCopy past the source's end. (GOVERNANCE -> COMPLIANCE needing
the bypass is in test_object_lock.py.)"""

from __future__ import annotations

import base64
import hashlib
import signal
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from awscrt import checksums as crt
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, make_client
from tests.s3http import assert_error, signed_request

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)


def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _sha256(data: bytes) -> str:
    return _b64(hashlib.sha256(data).digest())


# --- 1. ListObjectVersions after the marker's version was deleted ---------------------------


@pytest.mark.parametrize("page_size", [1, 2, 3, 4])
def test_list_versions_deleting_each_page_sees_every_version_once(s3: Any, bucket: str, page_size: int) -> None:
    # "a" has a null version from before versioning (no time in its id), then two more and a
    # delete marker; "b" three versions; "c" one. Pages end inside keys and on the null version.
    s3.put_object(Bucket=bucket, Key="a", Body=b"a-null")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"a1", b"a2"):
        s3.put_object(Bucket=bucket, Key="a", Body=body)
    s3.delete_object(Bucket=bucket, Key="a")
    for body in (b"b1", b"b2", b"b3"):
        s3.put_object(Bucket=bucket, Key="b", Body=body)
    s3.put_object(Bucket=bucket, Key="c", Body=b"c1")
    first = s3.list_object_versions(Bucket=bucket)
    everything = [(v["Key"], v["VersionId"]) for v in [*first.get("Versions", []), *first.get("DeleteMarkers", [])]]
    assert len(everything) == 8 and not first["IsTruncated"]

    seen: list[tuple[str, str]] = []
    kwargs: dict[str, str] = {}
    for _ in range(20):
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=page_size, **kwargs)
        items = [(v["Key"], v["VersionId"]) for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
        seen += items
        if items:
            s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in items], "Quiet": True}
            )
        if not page["IsTruncated"]:
            break
        kwargs = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
    else:
        pytest.fail("the listing never finished")
    assert len(seen) == len(set(seen)) and set(seen) == set(everything)
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)


def test_list_versions_marker_deleted_keeps_its_place(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket=bucket, Key="k", Body=str(i).encode())["VersionId"] for i in range(4)]
    s3.put_object(Bucket=bucket, Key="l", Body=b"l")
    s3.delete_object(Bucket=bucket, Key="k", VersionId=ids[2])
    # Resuming after the vanished ids[2] lists what is older than it, then the next key.
    page = s3.list_object_versions(Bucket=bucket, KeyMarker="k", VersionIdMarker=ids[2])
    assert [(v["Key"], v["VersionId"]) for v in page["Versions"]][:2] == [("k", ids[1]), ("k", ids[0])]
    assert [v["Key"] for v in page["Versions"]] == ["k", "k", "l"]
    # A version id that was never issued but is well formed is placed by its time, too.
    page = s3.list_object_versions(Bucket=bucket, KeyMarker="k", VersionIdMarker="f" * 24)
    assert [v["VersionId"] for v in page["Versions"] if v["Key"] == "k"] == [ids[3], ids[1], ids[0]]
    page = s3.list_object_versions(Bucket=bucket, KeyMarker="k", VersionIdMarker="0" * 24)
    assert [v["Key"] for v in page["Versions"]] == ["l"]
    # A malformed marker is still refused.
    with pytest.raises(ClientError) as exc:
        s3.list_object_versions(Bucket=bucket, KeyMarker="k", VersionIdMarker="not-a-version")
    assert _err(exc) == ("InvalidArgument", 400)


# --- 2. CreateBucket of a bucket you already own ------------------------------------------


def test_create_owned_bucket_us_east_1_is_200_elsewhere_409(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="kept", Body=b"kept")
    r = s3.create_bucket(Bucket=bucket)  # the server's region is us-east-1: AWS's legacy 200
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"kept"  # nothing changed
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert _err(exc) == ("BucketAlreadyOwnedByYou", 409)
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    try:
        for again in ({"CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}}, {}):
            with pytest.raises(ClientError) as exc:
                s3.create_bucket(Bucket=name, **again)
            assert _err(exc) == ("BucketAlreadyOwnedByYou", 409), again
        assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"
    finally:
        s3.delete_bucket(Bucket=name)


def test_create_owned_bucket_on_a_server_in_another_region_is_409(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_args=["--region", "eu-west-1"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="owned")
        with pytest.raises(ClientError) as exc:
            s3.create_bucket(Bucket="owned")
        assert _err(exc) == ("BucketAlreadyOwnedByYou", 409)
        # Asking for us-east-1 explicitly: the bucket lives in eu-west-1, so still 409.
        with pytest.raises(ClientError) as exc:
            s3.create_bucket(Bucket="owned", CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
        assert _err(exc) == ("BucketAlreadyOwnedByYou", 409)
    finally:
        srv.stop(signal.SIGKILL)  # graceful shutdown is not what this test is about


# --- 3. CompleteMultipartUpload retried after it succeeded --------------------------------


def test_complete_retried_answers_the_same(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="SHA256")["UploadId"]
    part = s3.upload_part(
        Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"one part", ChecksumAlgorithm="SHA256"
    )
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}]}
    first = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload=parts)
    # The answer was lost; the client retries (also after the key moved on).
    s3.put_object(Bucket=bucket, Key="mp", Body=b"newer")
    again = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload=parts)
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    fields = ("ETag", "ChecksumSHA256", "ChecksumType", "VersionId", "Bucket", "Key")
    assert {f: again.get(f) for f in fields} == {f: first.get(f) for f in fields}
    assert first["ChecksumSHA256"].endswith("-1") and first["ChecksumType"] == "COMPOSITE"
    # Only one object version came of it.
    versions = s3.list_object_versions(Bucket=bucket, Prefix="mp")["Versions"]
    assert len(versions) == 2
    got = s3.get_object(Bucket=bucket, Key="mp", VersionId=first["VersionId"])
    assert got["Body"].read() == b"one part" and got["ETag"] == first["ETag"]
    # Other parts than the completion used: the upload is gone.
    other = {"Parts": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"', "ChecksumSHA256": part["ChecksumSHA256"]}]}
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload=other)
    assert _err(exc) == ("NoSuchUpload", 404)
    # Under another key, or never completed (aborted): NoSuchUpload as before.
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="other", UploadId=up, MultipartUpload=parts)
    assert _err(exc) == ("NoSuchUpload", 404)
    aborted = s3.create_multipart_upload(Bucket=bucket, Key="ab")["UploadId"]
    p = s3.upload_part(Bucket=bucket, Key="ab", UploadId=aborted, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=aborted)
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="ab", UploadId=aborted, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]}
        )
    assert _err(exc) == ("NoSuchUpload", 404)


def test_complete_retried_unversioned_full_object(s3: Any, bucket: str) -> None:
    data = b"full object crc"
    up = s3.create_multipart_upload(Bucket=bucket, Key="f", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
    part = s3.upload_part(Bucket=bucket, Key="f", UploadId=up["UploadId"], PartNumber=1, Body=data)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    crc = _b64(zlib.crc32(data).to_bytes(4, "big"))
    kw = {"Bucket": bucket, "Key": "f", "UploadId": up["UploadId"], "MultipartUpload": parts}
    first = s3.complete_multipart_upload(ChecksumCRC32=crc, ChecksumType="FULL_OBJECT", **kw)
    again = s3.complete_multipart_upload(ChecksumCRC32=crc, ChecksumType="FULL_OBJECT", **kw)
    assert (again["ETag"], again["ChecksumCRC32"], again.get("VersionId")) == (first["ETag"], crc, None)
    assert again["ChecksumType"] == "FULL_OBJECT"
    # A retry naming another object checksum than the one it completed with is refused.
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(ChecksumCRC32="AAAAAA==", ChecksumType="FULL_OBJECT", **kw)
    assert _err(exc) == ("BadDigest", 400)


def test_complete_sent_concurrently_answers_one_result(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    up = s3.create_multipart_upload(Bucket=bucket, Key="race")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="race", UploadId=up, PartNumber=1, Body=b"raced")
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}

    def complete(_: int) -> tuple[str, str]:
        r = s3.complete_multipart_upload(Bucket=bucket, Key="race", UploadId=up, MultipartUpload=parts)
        return r["ETag"], r["VersionId"]

    with ThreadPoolExecutor(4) as pool:
        answers = set(pool.map(complete, range(4)))
    assert len(answers) == 1
    assert [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]] == [answers.pop()[1]]


# --- 6. CompleteMultipartUpload checks the object checksum it is given -------------------


def test_complete_composite_needs_part_checksums_and_checks_the_object_checksum(s3: Any, bucket: str) -> None:
    data = [b"A" * (5 * 1024 * 1024), b"tail"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="c", ChecksumAlgorithm="SHA256")["UploadId"]
    done = [
        s3.upload_part(Bucket=bucket, Key="c", UploadId=up, PartNumber=i + 1, Body=d, ChecksumAlgorithm="SHA256")
        for i, d in enumerate(data)
    ]
    bare = [{"PartNumber": i + 1, "ETag": p["ETag"]} for i, p in enumerate(done)]
    full = [{**b, "ChecksumSHA256": p["ChecksumSHA256"]} for b, p in zip(bare, done, strict=True)]
    kw = {"Bucket": bucket, "Key": "c", "UploadId": up}
    with pytest.raises(ClientError) as exc:  # the part checksums a COMPOSITE checksum is made of
        s3.complete_multipart_upload(MultipartUpload={"Parts": bare}, **kw)
    assert _err(exc) == ("InvalidRequest", 400)
    assert "missing for part 1" in exc.value.response["Error"]["Message"]
    composite = _b64(hashlib.sha256(b"".join(base64.b64decode(p["ChecksumSHA256"]) for p in done)).digest())
    wrong = _sha256(b"".join(data))  # the plain SHA-256 of the object is not its COMPOSITE checksum
    for value in (wrong, f"{wrong}-2", "not base64", _b64(b"short")):
        with pytest.raises(ClientError) as exc:
            s3.complete_multipart_upload(MultipartUpload={"Parts": full}, ChecksumSHA256=value, **kw)
        assert _err(exc) == ("BadDigest", 400), value
    with pytest.raises(ClientError) as exc:  # another algorithm than the upload's
        s3.complete_multipart_upload(MultipartUpload={"Parts": full}, ChecksumCRC32="AAAAAA==", **kw)
    assert _err(exc) == ("InvalidRequest", 400)
    r = s3.complete_multipart_upload(MultipartUpload={"Parts": full}, ChecksumSHA256=f"{composite}-2", **kw)
    assert r["ChecksumSHA256"] == f"{composite}-2"
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"".join(data)


def test_complete_full_object_wrong_checksum_is_bad_digest(s3: Any, bucket: str) -> None:
    data = b"crc64nvme full object"
    up = s3.create_multipart_upload(Bucket=bucket, Key="n", ChecksumAlgorithm="CRC64NVME")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="n", UploadId=up, PartNumber=1, Body=data)
    kw = {
        "Bucket": bucket,
        "Key": "n",
        "UploadId": up,
        "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    }
    right = _b64(crt.crc64nvme(data).to_bytes(8, "big"))
    for value in (_b64(crt.crc64nvme(b"other").to_bytes(8, "big")), _b64(b"\0" * 4)):
        with pytest.raises(ClientError) as exc:
            s3.complete_multipart_upload(ChecksumCRC64NVME=value, **kw)
        assert _err(exc) == ("BadDigest", 400), value
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(ChecksumSHA256=_sha256(data), **kw)
    assert _err(exc) == ("InvalidRequest", 400)
    # FULL_OBJECT needs no part checksums in the request: the parts' CRCs make the object's.
    r = s3.complete_multipart_upload(ChecksumCRC64NVME=right, **kw)
    assert (r["ChecksumCRC64NVME"], r["ChecksumType"]) == (right, "FULL_OBJECT")


def test_complete_object_checksum_on_an_upload_without_algorithm_is_refused(s3: Any, bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="plain")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="plain", UploadId=up, PartNumber=1, Body=b"plain")
    kw = {"Bucket": bucket, "Key": "plain", "UploadId": up}
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    with pytest.raises(ClientError) as exc:  # nothing to check it against: never a silent 200
        s3.complete_multipart_upload(MultipartUpload=parts, ChecksumSHA256=_sha256(b"plain"), **kw)
    assert _err(exc) == ("InvalidRequest", 400)
    assert s3.complete_multipart_upload(MultipartUpload=parts, **kw)["ETag"].endswith('-1"')


# --- 7. x-amz-checksum-* values that are not the body's checksum -------------------------


@pytest.mark.parametrize("algorithm", ["SHA256", "CRC64NVME", "CRC32"])
def test_put_and_upload_part_checksum_not_the_body_is_bad_digest(s3: Any, bucket: str, algorithm: str) -> None:
    s3.put_object(Bucket=bucket, Key="x", Body=b"old")
    up = s3.create_multipart_upload(Bucket=bucket, Key="x")["UploadId"]
    other = s3.put_object(Bucket=bucket, Key="probe", Body=b"something else", ChecksumAlgorithm=algorithm)
    mismatch = other[f"Checksum{algorithm}"]
    raw = base64.b64decode(mismatch)
    for value in (mismatch, _b64(raw + b"\0"), _b64(raw[:-1]), "!!not base64"):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="x", Body=b"new body", **{f"Checksum{algorithm}": value})
        assert _err(exc) == ("BadDigest", 400), value
        with pytest.raises(ClientError) as exc:
            s3.upload_part(
                Bucket=bucket, Key="x", UploadId=up, PartNumber=1, Body=b"new body", **{f"Checksum{algorithm}": value}
            )
        assert _err(exc) == ("BadDigest", 400), value
    assert s3.get_object(Bucket=bucket, Key="x")["Body"].read() == b"old"
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="x", UploadId=up)
    s3.abort_multipart_upload(Bucket=bucket, Key="x", UploadId=up)


def test_raw_put_checksum_wrong_length_is_bad_digest(server: ServerProcess, s3: Any, bucket: str) -> None:
    body = b"raw body"
    for value in (_b64(hashlib.sha256(body).digest()[:16]), _b64(hashlib.sha256(body).digest() + b"\1")):
        r = signed_request(server, "PUT", f"/{bucket}/raw", body, headers={"x-amz-checksum-sha256": value})
        assert_error(r, 400, "BadDigest")
    r = signed_request(server, "PUT", f"/{bucket}/raw", body, headers={"x-amz-checksum-sha256": _sha256(body)})
    assert r.status == 200
    # Content-MD5 keeps S3's split: malformed -> InvalidDigest, mismatch -> BadDigest.
    r = signed_request(server, "PUT", f"/{bucket}/raw", body, headers={"content-md5": _b64(b"short")})
    assert_error(r, 400, "InvalidDigest")
    md5_other = _b64(hashlib.md5(b"other").digest())
    r = signed_request(server, "PUT", f"/{bucket}/raw", body, headers={"content-md5": md5_other})
    assert_error(r, 400, "BadDigest")


# --- 8. UploadPartCopy with a range past the source's end -------------------------------


def test_upload_part_copy_range_past_end_is_invalid_range(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=bytes(range(100)))
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    kw = {"Bucket": bucket, "Key": "dst", "UploadId": up, "PartNumber": 1, "CopySource": f"{bucket}/src"}
    for rng in ("bytes=50-100", "bytes=100-150", "bytes=0-1000"):
        with pytest.raises(ClientError) as exc:
            s3.upload_part_copy(CopySourceRange=rng, **kw)
        assert _err(exc) == ("InvalidRange", 416), rng
    for rng in ("bytes=10-5", "bytes=5-", "items=0-1"):  # malformed: still InvalidArgument
        with pytest.raises(ClientError) as exc:
            s3.upload_part_copy(CopySourceRange=rng, **kw)
        assert _err(exc) == ("InvalidArgument", 400), rng
    r = s3.upload_part_copy(CopySourceRange="bytes=50-99", **kw)
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dst",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}]},
    )
    assert done["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == bytes(range(50, 100))
