"""S3 conformance fixes of issue 14 (part b), each through boto3 or raw HTTP against a real server:
tags sorted by key, an empty continuation token, paginated ListBuckets, the 416 body of a ranged
read (and the AWS CRT reading empty objects through it), ``?partNumber`` of a one-PUT object,
GetObjectAttributes, conditional writes and their race, a negative presigned expiry, keys that
are not UTF-8, and delete markers behind a 404 HEAD."""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from tests.api.test_versions import _err, _hdrs
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tests.s3http import (
    REGION,
    UNSIGNED,
    amz_now,
    assert_error,
    assert_ok,
    fetch,
    hmac_hex,
    send,
    signed_request,
    signing_key,
)

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)

MIB = 1024 * 1024
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _status(r: dict[str, Any]) -> int:
    status: int = r["ResponseMetadata"]["HTTPStatusCode"]
    return status


# --- 10: tags sorted by key -------------------------------------------------------------------
def test_tags_come_back_sorted_by_key(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="t", Body=b"x")
    unsorted = [("zeta", "1"), ("Alpha", "2"), ("beta", "3"), ("éclair", "4"), ("10", "5")]
    tag_set = [{"Key": k, "Value": v} for k, v in unsorted]
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": tag_set})
    in_order = ["10", "Alpha", "beta", "zeta", "éclair"]  # code point order
    got = s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"]
    assert [t["Key"] for t in got] == in_order
    assert {t["Key"]: t["Value"] for t in got} == dict(unsorted)
    # The x-amz-tagging header on PUT, and bucket tags, the same.
    s3.put_object(Bucket=bucket, Key="h", Body=b"x", Tagging="b=2&a=1&c=3")
    assert [t["Key"] for t in s3.get_object_tagging(Bucket=bucket, Key="h")["TagSet"]] == ["a", "b", "c"]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_set})
    assert [t["Key"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]] == in_order


# --- 11: an empty continuation token is no token ------------------------------------------------
def test_list_v2_empty_continuation_token_is_absent(server: ServerProcess, s3: Any, bucket: str) -> None:
    for k in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    r = signed_request(server, "GET", f"/{bucket}", query=[("list-type", "2"), ("continuation-token", "")])
    assert_ok(r)
    root = ET.fromstring(r.body)
    assert [e.text for e in root.iter(f"{NS}Key")] == ["a", "b"]
    assert root.find(f"{NS}ContinuationToken") is None
    # A token that is not one of ours is still refused.
    bad = signed_request(server, "GET", f"/{bucket}", query=[("list-type", "2"), ("continuation-token", "!!")])
    assert_error(bad, 400, "InvalidArgument")


# --- 13: paginated ListBuckets ----------------------------------------------------------------
@pytest.fixture
def bucket_family(s3: Any) -> Iterator[tuple[str, list[str]]]:
    """Five buckets sharing a prefix no other test uses; the last one in eu-west-1."""
    prefix = f"lb-{uuid.uuid4().hex[:10]}-"
    names = [f"{prefix}{i}" for i in range(5)]
    for name in names[:-1]:
        s3.create_bucket(Bucket=name)
    s3.create_bucket(Bucket=names[-1], CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    yield prefix, names
    for name in names:
        s3.delete_bucket(Bucket=name)


def test_list_buckets_paginated(server: ServerProcess, s3: Any, bucket_family: tuple[str, list[str]]) -> None:
    prefix, names = bucket_family
    first = s3.list_buckets(Prefix=prefix, MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == names[:2]
    assert first["Prefix"] == prefix
    assert first["Buckets"][0]["BucketRegion"] == "us-east-1"
    token = first["ContinuationToken"]
    second = s3.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=token)
    assert [b["Name"] for b in second["Buckets"]] == names[2:4]
    third = s3.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=second["ContinuationToken"])
    assert [b["Name"] for b in third["Buckets"]] == names[4:]
    assert "ContinuationToken" not in third  # the last page
    # boto3's paginator follows the tokens.
    pages = s3.get_paginator("list_buckets").paginate(Prefix=prefix, PaginationConfig={"PageSize": 2})
    assert [b["Name"] for page in pages for b in page["Buckets"]] == names
    # bucket-region filters; a page without max-buckets holds them all.
    eu = s3.list_buckets(Prefix=prefix, BucketRegion="eu-west-1")
    assert [(b["Name"], b["BucketRegion"]) for b in eu["Buckets"]] == [(names[-1], "eu-west-1")]
    assert "ContinuationToken" not in eu
    # Without any of the parameters: every bucket, no token, no prefix.
    everything = s3.list_buckets()
    assert set(names) <= {b["Name"] for b in everything["Buckets"]}
    assert "ContinuationToken" not in everything and "Prefix" not in everything
    # max-buckets is 1..10000; a token must be one we gave out.
    for bad in ("0", "10001", "many"):
        assert_error(signed_request(server, "GET", "/", query=[("max-buckets", bad)]), 400, "InvalidArgument")
    assert_error(signed_request(server, "GET", "/", query=[("continuation-token", "!!")]), 400, "InvalidArgument")
    ok = signed_request(server, "GET", "/", query=[("max-buckets", "10000"), ("prefix", prefix)])
    assert_ok(ok)
    assert [e.text for e in ET.fromstring(ok.body).iter(f"{NS}Name")] == names


# --- 15: the 416 body -------------------------------------------------------------------------
def test_unsatisfiable_range_body_names_the_size(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    s3.put_object(Bucket=bucket, Key="ten", Body=b"0123456789")
    for key, size, spec in (("empty", 0, "bytes=0-8388607"), ("empty", 0, "bytes=-5"), ("ten", 10, "bytes=10-20")):
        r = signed_request(server, "GET", f"/{bucket}/{key}", headers={"Range": spec})
        fields = assert_error(r, 416, "InvalidRange", resource=f"/{bucket}/{key}")
        assert fields["RangeRequested"] == spec
        assert fields["ActualObjectSize"] == str(size)
        assert fields["HostId"]
        assert r.headers["content-range"] == f"bytes */{size}"
        head = signed_request(server, "HEAD", f"/{bucket}/{key}", headers={"Range": spec})
        assert head.status == 416
        assert head.headers["content-range"] == f"bytes */{size}"
    # A satisfiable range of a non-empty object is unaffected.
    r = s3.get_object(Bucket=bucket, Key="ten", Range="bytes=8-8388607")
    assert r["ContentRange"] == "bytes 8-9/10"
    assert r["Body"].read() == b"89"


def test_s3torchconnector_reads_empty_and_small_objects(
    server: ServerProcess, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AWS CRT (through s3torchconnector, as Mountpoint) reads an object's first part with a
    Range: an empty object is known only from the 416 body's ActualObjectSize."""
    from s3torchconnector import S3ClientConfig, S3MapDataset

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    small = bytes(range(256)) * 40
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    uris = [f"s3://{bucket}/empty", f"s3://{bucket}/small"]
    dataset = S3MapDataset.from_objects(
        uris, region="us-east-1", endpoint=server.endpoint, s3client_config=S3ClientConfig(force_path_style=True)
    )
    assert [(item.key, item.read()) for item in (dataset[0], dataset[1])] == [("empty", b""), ("small", small)]


# --- 16: ?partNumber --------------------------------------------------------------------------
def test_part_number_of_a_single_put_object(server: ServerProcess, s3: Any, bucket: str) -> None:
    body = b"one part of eleven bytes"[:11]
    s3.put_object(Bucket=bucket, Key="one", Body=body, ChecksumAlgorithm="SHA256")
    for method in ("GET", "HEAD"):
        r = signed_request(server, method, f"/{bucket}/one", query=[("partNumber", "1")])
        assert_ok(r, 206)
        assert r.headers["content-range"] == "bytes 0-10/11"
        assert r.headers["content-length"] == "11"
        assert "x-amz-mp-parts-count" not in r.headers
        assert r.body == (body if method == "GET" else b"")
    got = s3.get_object(Bucket=bucket, Key="one", PartNumber=1, ChecksumMode="ENABLED")
    assert (got["ContentRange"], got["Body"].read()) == ("bytes 0-10/11", body)
    assert "PartsCount" not in got
    assert got["ChecksumSHA256"] == _b64(hashlib.sha256(body).digest())  # the part is the whole object
    # Past the last part: 416 InvalidPartNumber naming what was asked and what there is.
    r = signed_request(server, "GET", f"/{bucket}/one", query=[("partNumber", "2")])
    fields = assert_error(r, 416, "InvalidPartNumber")
    assert (fields["PartNumberRequested"], fields["ActualPartCount"]) == ("2", "1")
    # Outside 1..10000: 400.
    for bad in ("0", "10001", "x"):
        r = signed_request(server, "GET", f"/{bucket}/one", query=[("partNumber", bad)])
        assert_error(r, 400, "InvalidArgument")
    # An empty object has no range to name: its part 1 is a plain 200.
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    r = signed_request(server, "GET", f"/{bucket}/empty", query=[("partNumber", "1")])
    assert_ok(r, 200)
    assert "content-range" not in r.headers and r.body == b""


def test_part_number_of_a_multipart_object(s3: Any, bucket: str) -> None:
    parts = [b"a" * (5 * MIB), b"tail"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    done = [
        {"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=n, Body=p)["ETag"]}
        for n, p in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": done})
    r = s3.head_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert _status(r) == 206
    assert r["ContentRange"] == f"bytes {5 * MIB}-{5 * MIB + 3}/{5 * MIB + 4}"
    assert r["PartsCount"] == 2
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert _status(exc.value.response) == 416


# --- GetObjectAttributes ----------------------------------------------------------------------
ALL_ATTRIBUTES = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def test_object_attributes_of_a_single_put(server: ServerProcess, s3: Any, bucket: str) -> None:
    body = b"attributes of one object"
    put = s3.put_object(Bucket=bucket, Key="one", Body=body, ChecksumAlgorithm="SHA256")
    r = s3.get_object_attributes(Bucket=bucket, Key="one", ObjectAttributes=ALL_ATTRIBUTES)
    assert r["ETag"] == hashlib.md5(body).hexdigest() == put["ETag"].strip('"')  # no quotes, as S3
    assert r["Checksum"] == {"ChecksumSHA256": _b64(hashlib.sha256(body).digest()), "ChecksumType": "FULL_OBJECT"}
    assert r["ObjectSize"] == len(body)
    assert r["StorageClass"] == "STANDARD"
    assert "ObjectParts" not in r  # not a multipart object
    head = s3.head_object(Bucket=bucket, Key="one")
    assert r["LastModified"] == head["LastModified"]
    assert "VersionId" not in r  # never versioned
    # Only what was asked for.
    r = s3.get_object_attributes(Bucket=bucket, Key="one", ObjectAttributes=["ObjectSize"])
    assert r["ObjectSize"] == len(body)
    assert not {"ETag", "Checksum", "StorageClass", "ObjectParts"} & set(r)
    # Without a checksum of its own (raw HTTP: boto3 would add a CRC32), the CRC64NVME every object gets.
    put_raw = signed_request(server, "PUT", f"/{bucket}/plain", body, headers={"x-amz-storage-class": "STANDARD_IA"})
    assert_ok(put_raw)
    r = s3.get_object_attributes(Bucket=bucket, Key="plain", ObjectAttributes=["Checksum", "StorageClass"])
    assert set(r["Checksum"]) == {"ChecksumCRC64NVME", "ChecksumType"}
    assert r["StorageClass"] == "STANDARD_IA"
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ETag"])
    assert _err(exc) == ("NoSuchKey", 404)


def test_object_attributes_bad_request(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = signed_request(server, "GET", f"/{bucket}/k", query=[("attributes", "")])
    assert_error(r, 400, "InvalidArgument")  # no x-amz-object-attributes
    r = signed_request(
        server, "GET", f"/{bucket}/k", query=[("attributes", "")], headers={"x-amz-object-attributes": "ETag,Owner"}
    )
    assert_error(r, 400, "InvalidArgument")


def test_object_attributes_of_a_multipart_object(s3: Any, bucket: str) -> None:
    parts = [b"p" * (5 * MIB), b"tail"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="SHA256")["UploadId"]
    done = []
    for n, data in enumerate(parts, start=1):
        r = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=n, Body=data, ChecksumAlgorithm="SHA256")
        assert r["ChecksumSHA256"] == _b64(hashlib.sha256(data).digest())
        done.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    c = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": done})
    composite = c["ChecksumSHA256"]
    assert composite.endswith("-2")
    r = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=ALL_ATTRIBUTES)
    assert r["ETag"] == c["ETag"].strip('"')
    assert r["Checksum"] == {"ChecksumSHA256": composite.removesuffix("-2"), "ChecksumType": "COMPOSITE"}
    assert r["ObjectSize"] == sum(map(len, parts))
    expected = [
        {"PartNumber": d["PartNumber"], "Size": len(p), "ChecksumSHA256": d["ChecksumSHA256"]}
        for d, p in zip(done, parts, strict=True)
    ]
    op = r["ObjectParts"]
    assert (op["TotalPartsCount"], op["MaxParts"], op["IsTruncated"]) == (2, 1000, False)
    assert op["Parts"] == expected
    # Paged by x-amz-max-parts / x-amz-part-number-marker.
    page = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=1)
    op = page["ObjectParts"]
    assert (op["Parts"], op["IsTruncated"], op["NextPartNumberMarker"]) == (expected[:1], True, 1)
    page = s3.get_object_attributes(
        Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=1, PartNumberMarker=1
    )
    op = page["ObjectParts"]
    assert (op["Parts"], op["IsTruncated"], op["PartNumberMarker"]) == (expected[1:], False, 1)
    # Without a checksum algorithm S3 reports the count, not the parts.
    up = s3.create_multipart_upload(Bucket=bucket, Key="plain")["UploadId"]
    done = [
        {"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="plain", UploadId=up, PartNumber=n, Body=p)["ETag"]}
        for n, p in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(Bucket=bucket, Key="plain", UploadId=up, MultipartUpload={"Parts": done})
    op = s3.get_object_attributes(Bucket=bucket, Key="plain", ObjectAttributes=["ObjectParts"])["ObjectParts"]
    assert op["TotalPartsCount"] == 2
    assert "Parts" not in op


def test_object_attributes_of_versions(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"22")["VersionId"]
    r = s3.get_object_attributes(Bucket=bucket, Key="v", ObjectAttributes=["ObjectSize", "ETag"])
    assert (r["VersionId"], r["ObjectSize"], r["ETag"]) == (v2, 2, hashlib.md5(b"22").hexdigest())
    r = s3.get_object_attributes(Bucket=bucket, Key="v", VersionId=v1, ObjectAttributes=["ObjectSize"])
    assert (r["VersionId"], r["ObjectSize"]) == (v1, 1)
    marker = s3.delete_object(Bucket=bucket, Key="v")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="v", ObjectAttributes=["ObjectSize"])
    assert _err(exc) == ("NoSuchKey", 404)
    assert (_hdrs(exc)["x-amz-delete-marker"], _hdrs(exc)["x-amz-version-id"]) == ("true", marker)
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="v", VersionId=marker, ObjectAttributes=["ObjectSize"])
    assert _err(exc) == ("MethodNotAllowed", 405)
    assert _hdrs(exc)["x-amz-delete-marker"] == "true"
    r = s3.get_object_attributes(Bucket=bucket, Key="v", VersionId=v2, ObjectAttributes=["ObjectSize"])
    assert r["ObjectSize"] == 2


# --- conditional writes -----------------------------------------------------------------------
def test_conditional_put_edges(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"one")["ETag"]
    # If-None-Match takes only "*": S3 implements nothing else (501), and nothing is written.
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="c", Body=b"two", IfNoneMatch=etag)
    assert _err(exc) == ("NotImplemented", 501)
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"one"
    # If-Match: * matches any current object.
    s3.put_object(Bucket=bucket, Key="c", Body=b"three", IfMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="nothing", Body=b"x", IfMatch="*")
    assert _err(exc) == ("NoSuchKey", 404)
    # A current delete marker is no object: If-Match -> 404, If-None-Match: * writes.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    etag = s3.put_object(Bucket=bucket, Key="d", Body=b"x")["ETag"]
    s3.delete_object(Bucket=bucket, Key="d")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="d", Body=b"y", IfMatch=etag)
    assert _err(exc) == ("NoSuchKey", 404)
    s3.put_object(Bucket=bucket, Key="d", Body=b"z", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="d")["Body"].read() == b"z"


def test_conditional_put_race_has_one_winner(s3: Any, bucket: str) -> None:
    """Concurrent If-None-Match: * writers of one key: the condition is checked in the commit,
    so exactly one lands and every other gets 412."""
    writers = 8
    start = threading.Barrier(writers)

    def put(i: int) -> int:
        start.wait()
        try:
            s3.put_object(Bucket=bucket, Key="race", Body=f"writer {i}".encode(), IfNoneMatch="*")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "PreconditionFailed", exc.response
            assert _status(dict(exc.response)) == 412
            return -1
        return i

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(put, range(writers)))
    winners = [i for i in results if i >= 0]
    assert len(winners) == 1, results
    assert s3.get_object(Bucket=bucket, Key="race")["Body"].read() == f"writer {winners[0]}".encode()
    # If-Match compare-and-swap: of writers holding the same ETag, exactly one replaces it.
    etag = s3.head_object(Bucket=bucket, Key="race")["ETag"]
    start.reset()

    def swap(i: int) -> int:
        start.wait()
        try:
            s3.put_object(Bucket=bucket, Key="race", Body=f"swap {i}".encode(), IfMatch=etag)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "PreconditionFailed", exc.response
            return -1
        return i

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(swap, range(writers)))
    winners = [i for i in results if i >= 0]
    assert len(winners) == 1, results
    assert s3.get_object(Bucket=bucket, Key="race")["Body"].read() == f"swap {winners[0]}".encode()


def _one_part_upload(s3: Any, bucket: str, key: str, body: bytes) -> tuple[str, list[dict[str, Any]]]:
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=body)["ETag"]
    return up, [{"PartNumber": 1, "ETag": etag}]


def test_conditional_complete_multipart(s3: Any, bucket: str) -> None:
    # If-Match on a key that does not exist: 404 NoSuchKey, and the upload stays.
    up, parts = _one_part_upload(s3, bucket, "m", b"first")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="m", UploadId=up, MultipartUpload={"Parts": parts}, IfMatch='"0123456789abcdef"'
        )
    assert _err(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="m", UploadId=up, MultipartUpload={"Parts": parts}, IfNoneMatch='"abc"'
        )
    assert _err(exc) == ("NotImplemented", 501)
    first = s3.complete_multipart_upload(
        Bucket=bucket, Key="m", UploadId=up, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
    )
    # If-Match with another ETag: 412, the object unchanged, the upload still completable.
    up, parts = _one_part_upload(s3, bucket, "m", b"second")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="m", UploadId=up, MultipartUpload={"Parts": parts}, IfMatch='"0123456789abcdef"'
        )
    assert _err(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"first"
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="m", UploadId=up, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
        )
    assert _err(exc) == ("PreconditionFailed", 412)
    r = s3.complete_multipart_upload(
        Bucket=bucket, Key="m", UploadId=up, MultipartUpload={"Parts": parts}, IfMatch=first["ETag"]
    )
    assert _status(r) == 200
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"second"


def test_conditional_complete_race_has_one_winner(s3: Any, bucket: str) -> None:
    uploads = [_one_part_upload(s3, bucket, "mr", f"upload {i}".encode()) for i in range(4)]
    start = threading.Barrier(len(uploads))

    def complete(i: int) -> int:
        up, parts = uploads[i]
        start.wait()
        try:
            s3.complete_multipart_upload(
                Bucket=bucket, Key="mr", UploadId=up, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "PreconditionFailed", exc.response
            return -1
        return i

    with ThreadPoolExecutor(len(uploads)) as pool:
        results = list(pool.map(complete, range(len(uploads))))
    winners = [i for i in results if i >= 0]
    assert len(winners) == 1, results
    assert s3.get_object(Bucket=bucket, Key="mr")["Body"].read() == f"upload {winners[0]}".encode()


# --- decided and documented -------------------------------------------------------------------
def _presign_v4(port: int, path: str, expires: str) -> str:
    """A presigned SigV4 GET written from the spec (boto3's CRT signer refuses a negative expiry)."""
    amz_date = amz_now()
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{ACCESS_KEY}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": expires,
        "X-Amz-SignedHeaders": "host",
    }
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    creq = "\n".join(["GET", path, query, f"host:127.0.0.1:{port}\n", "host", UNSIGNED])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    signature = hmac_hex(signing_key(SECRET_KEY, amz_date[:8]), sts)
    return f"http://127.0.0.1:{port}{path}?{query}&X-Amz-Signature={signature}"


def test_presigned_v4_negative_expiry_is_refused(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="p", Body=b"p")
    assert fetch(_presign_v4(server.port, f"/{bucket}/p", "60")).body == b"p"  # the signer is right
    refused = fetch(_presign_v4(server.port, f"/{bucket}/p", "-7"))
    fields = assert_error(refused, 403, "AuthorizationQueryParametersError")
    assert fields["Message"] == "X-Amz-Expires must be non-negative"


def test_key_that_is_not_utf8_is_invalid_uri(server: ServerProcess, s3: Any, bucket: str) -> None:
    host = {"Host": f"127.0.0.1:{server.port}"}
    for method, body in (("PUT", b"x"), ("GET", None), ("HEAD", None)):
        r = send(server.port, method, f"/{bucket}/bad%ff%fekey", host, body)
        if method == "HEAD":
            assert r.status == 400
        else:
            assert_error(r, 400, "InvalidURI")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_delete_marker_headers_on_404_and_405(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="gone")["VersionId"]
    head = signed_request(server, "HEAD", f"/{bucket}/gone")
    get = signed_request(server, "GET", f"/{bucket}/gone")
    assert head.status == 404
    assert_error(get, 404, "NoSuchKey")
    for r in (head, get):
        assert (r.headers["x-amz-delete-marker"], r.headers["x-amz-version-id"]) == ("true", marker)
    for method in ("HEAD", "GET"):
        r = signed_request(server, method, f"/{bucket}/gone", query=[("versionId", marker)])
        assert r.status == 405
        assert (r.headers["x-amz-delete-marker"], r.headers["x-amz-version-id"]) == ("true", marker)
        assert r.headers["last-modified"]
    # A key that never existed carries no marker header.
    r = signed_request(server, "HEAD", f"/{bucket}/never")
    assert r.status == 404
    assert "x-amz-delete-marker" not in r.headers
