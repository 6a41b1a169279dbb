"""Bucket operations through boto3 against a real server."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)


def _name() -> str:
    return f"b-{uuid.uuid4().hex[:16]}"


def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def test_create_list_head_delete(s3) -> None:  # type: ignore[no-untyped-def]
    name = _name()
    r = s3.create_bucket(Bucket=name)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert r["Location"] == f"/{name}"
    listed = s3.list_buckets()
    names = [b["Name"] for b in listed["Buckets"]]
    assert name in names
    assert names == sorted(names)
    assert listed["Owner"]["ID"]
    entry = next(b for b in listed["Buckets"] if b["Name"] == name)
    assert entry["CreationDate"].tzinfo is not None
    h = s3.head_bucket(Bucket=name)
    assert h["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert h["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None
    d = s3.delete_bucket(Bucket=name)
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=name)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize(
    "name",
    [
        "ab",  # too short
        "a" * 64,  # too long
        "Upper-case",
        "under_score",
        "192.168.1.10",  # IP-like
        "dots..twice",
        "-leading-dash",
        "trailing-dash-",
        "dash.-dot",
        "xn--punycode",
        "ends-s3alias",
    ],
)
def test_invalid_bucket_names(s3, name: str) -> None:  # type: ignore[no-untyped-def]
    # Every name here passes botocore's lenient client-side check, so the server decides.
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=name)
    assert _err(exc) == ("InvalidBucketName", 400)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("name", ["abc", "a" * 63, "a.b-c.d1", "0123"])
def test_valid_bucket_names(s3, name: str) -> None:  # type: ignore[no-untyped-def]
    s3.create_bucket(Bucket=name)
    try:
        s3.head_bucket(Bucket=name)
    finally:
        s3.delete_bucket(Bucket=name)


def test_create_existing_bucket(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    # us-east-1 answers 200 for a bucket you own (AWS's legacy behaviour); other regions 409
    # (more in test_conformance_a.py).
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert _err(exc) == ("BucketAlreadyOwnedByYou", 409)


def test_create_with_location_constraint(s3) -> None:  # type: ignore[no-untyped-def]
    name = _name()
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    try:
        assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"
        h = s3.head_bucket(Bucket=name)
        assert h["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "eu-west-1"
        entry = next(b for b in s3.list_buckets()["Buckets"] if b["Name"] == name)
        assert entry.get("BucketRegion") == "eu-west-1"
    finally:
        s3.delete_bucket(Bucket=name)


def test_create_with_malformed_configuration(s3) -> None:  # type: ignore[no-untyped-def]
    name = _name()

    def bad_body(request, **kwargs) -> None:  # type: ignore[no-untyped-def]
        request.data = b"<NotAConfiguration/>"
        request.headers["Content-Length"] = str(len(request.data))

    s3.meta.events.register("before-sign.s3.CreateBucket", bad_body)
    try:
        with pytest.raises(ClientError) as exc:
            s3.create_bucket(Bucket=name)
    finally:
        s3.meta.events.unregister("before-sign.s3.CreateBucket", bad_body)
    assert _err(exc) == ("MalformedXML", 400)


def test_head_missing_bucket(s3) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=_name())
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert exc.value.response["Error"]["Code"] in ("404", "NoSuchBucket")


def test_missing_bucket_errors(s3) -> None:  # type: ignore[no-untyped-def]
    name = _name()
    for call in (
        lambda: s3.delete_bucket(Bucket=name),
        lambda: s3.get_bucket_location(Bucket=name),
        lambda: s3.list_objects_v2(Bucket=name),
        lambda: s3.list_objects(Bucket=name),
        lambda: s3.put_object(Bucket=name, Key="k", Body=b"x"),
        lambda: s3.get_object(Bucket=name, Key="k"),
        lambda: s3.list_multipart_uploads(Bucket=name),
        lambda: s3.create_multipart_upload(Bucket=name, Key="k"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert _err(exc) == ("NoSuchBucket", 404)


def test_delete_non_empty_bucket(s3) -> None:  # type: ignore[no-untyped-def]
    name = _name()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="a/b", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=name)
    assert _err(exc) == ("BucketNotEmpty", 409)
    s3.head_bucket(Bucket=name)
    assert s3.get_object(Bucket=name, Key="a/b")["Body"].read() == b"x"
    s3.delete_object(Bucket=name, Key="a/b")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=name)
    assert _err(exc) == ("NoSuchBucket", 404)


def test_bucket_name_reusable_after_delete(s3) -> None:  # type: ignore[no-untyped-def]
    name = _name()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="k", Body=b"old")
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    s3.create_bucket(Bucket=name)
    try:
        assert s3.list_objects_v2(Bucket=name)["KeyCount"] == 0
    finally:
        s3.delete_bucket(Bucket=name)


@pytest.mark.parametrize(
    "call",
    [
        "get_bucket_website",
        "put_bucket_replication",
        "get_bucket_logging",
    ],
)
def test_unimplemented_bucket_ops(s3, bucket: str, call: str) -> None:  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"Bucket": bucket}
    if call == "put_bucket_replication":
        args["ReplicationConfiguration"] = {
            "Role": "arn:aws:iam::123456789012:role/r",
            "Rules": [{"Status": "Enabled", "Destination": {"Bucket": "arn:aws:s3:::other"}, "Prefix": ""}],
        }
    with pytest.raises(ClientError) as exc:
        getattr(s3, call)(**args)
    assert _err(exc) == ("NotImplemented", 501)


def test_versioning_status_reads_unversioned(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    r = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in r
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
