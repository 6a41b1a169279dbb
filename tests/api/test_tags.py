"""Object and bucket tagging through boto3 against a real server: round trips (per version, on
PUT, multipart and copy), x-amz-tagging-count, every S3 limit (InvalidTag), delete markers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess
from tests.s3http import signed_request

MiB = 1024 * 1024


def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def tag_set(tags: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}


def tags_of(s3: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
    args = {"VersionId": version_id} if version_id else {}
    r = s3.get_object_tagging(Bucket=bucket, Key=key, **args)
    return {t["Key"]: t["Value"] for t in r["TagSet"]}


def headers(r: dict[str, Any]) -> dict[str, str]:
    return r["ResponseMetadata"]["HTTPHeaders"]  # type: ignore[no-any-return]


@pytest.fixture
def versioned(s3: Any, bucket: str) -> Iterator[str]:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    yield bucket


# --- round trips ------------------------------------------------------------------------
def test_object_tagging_round_trip(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert tags_of(s3, bucket, "k") == {}
    assert "x-amz-tagging-count" not in headers(s3.head_object(Bucket=bucket, Key="k"))
    tags = {"project": "tierstore", "stage": "", "path": "a/b c+d=e.f_g:h@i-j", "ünï": "çødé"}
    r = s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tag_set(tags))
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert tags_of(s3, bucket, "k") == tags
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["TagCount"] == 4
    assert got["Body"].read() == b"v"
    assert headers(s3.head_object(Bucket=bucket, Key="k"))["x-amz-tagging-count"] == "4"
    # A new tag set replaces the old one entirely.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tag_set({"only": "one"}))
    assert tags_of(s3, bucket, "k") == {"only": "one"}
    r = s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert tags_of(s3, bucket, "k") == {}
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="k")


def test_tagging_missing_object_and_bucket(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=bucket, Key="absent")
    assert _err(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="absent", Tagging=tag_set({"a": "b"}))
    assert _err(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=f"{bucket}-nope", Key="k")
    assert _err(exc) == ("NoSuchBucket", 404)


def test_tagging_per_version(s3: Any, versioned: str) -> None:
    v1 = s3.put_object(Bucket=versioned, Key="k", Body=b"1", Tagging="gen=1")["VersionId"]
    v2 = s3.put_object(Bucket=versioned, Key="k", Body=b"2")["VersionId"]
    assert tags_of(s3, versioned, "k", v1) == {"gen": "1"}
    assert tags_of(s3, versioned, "k") == {}
    r = s3.put_object_tagging(Bucket=versioned, Key="k", VersionId=v1, Tagging=tag_set({"gen": "one"}))
    assert r["VersionId"] == v1
    r = s3.put_object_tagging(Bucket=versioned, Key="k", Tagging=tag_set({"gen": "two"}))
    assert r["VersionId"] == v2
    assert tags_of(s3, versioned, "k", v1) == {"gen": "one"}
    assert tags_of(s3, versioned, "k", v2) == {"gen": "two"}
    got = s3.get_object_tagging(Bucket=versioned, Key="k", VersionId=v1)
    assert got["VersionId"] == v1
    assert s3.get_object(Bucket=versioned, Key="k", VersionId=v1)["TagCount"] == 1
    r = s3.delete_object_tagging(Bucket=versioned, Key="k", VersionId=v1)
    assert r["VersionId"] == v1
    assert tags_of(s3, versioned, "k", v1) == {}
    assert tags_of(s3, versioned, "k", v2) == {"gen": "two"}


def test_tags_on_a_delete_marker(s3: Any, versioned: str) -> None:
    s3.put_object(Bucket=versioned, Key="k", Body=b"x", Tagging="a=b")
    marker = s3.delete_object(Bucket=versioned, Key="k")["VersionId"]
    calls = [
        lambda: s3.get_object_tagging(Bucket=versioned, Key="k", VersionId=marker),
        lambda: s3.put_object_tagging(Bucket=versioned, Key="k", VersionId=marker, Tagging=tag_set({"a": "c"})),
        lambda: s3.delete_object_tagging(Bucket=versioned, Key="k", VersionId=marker),
    ]
    for call in calls:
        with pytest.raises(ClientError) as exc:
            call()
        assert _err(exc) == ("MethodNotAllowed", 405)
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=versioned, Key="k")  # the current version is the marker
    assert _err(exc) == ("NoSuchKey", 404)


def test_tagging_header_on_put(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1&b%20c=d%3De%2Bf+g&empty=&bare")
    assert tags_of(s3, bucket, "k") == {"a": "1", "b c": "d=e+f g", "empty": "", "bare": ""}
    # An overwrite without the header has no tags.
    s3.put_object(Bucket=bucket, Key="k", Body=b"y")
    assert tags_of(s3, bucket, "k") == {}


def test_tagging_on_multipart_upload(s3: Any, bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="kind=multipart&n=2", ContentType="text/x")
    parts = []
    for n, body in ((1, b"a" * (5 * MiB)), (2, b"tail")):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=n, Body=body)["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    assert tags_of(s3, bucket, "mp") == {"kind": "multipart", "n": "2"}
    h = headers(s3.head_object(Bucket=bucket, Key="mp"))
    assert h["x-amz-tagging-count"] == "2"
    assert h["content-type"] == "text/x"
    assert not any(name.startswith("x-tierstore") for name in h)


def test_multipart_with_invalid_tags_is_refused_at_creation(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="aws:x=1")
    assert _err(exc) == ("InvalidTag", 400)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_copy_tagging_directive(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"data", Tagging="from=source&x=1")
    src = {"Bucket": bucket, "Key": "src"}
    s3.copy_object(Bucket=bucket, Key="copy", CopySource=src)
    assert tags_of(s3, bucket, "copy") == {"from": "source", "x": "1"}
    s3.copy_object(Bucket=bucket, Key="explicit-copy", CopySource=src, TaggingDirective="COPY", Tagging="ignored=1")
    assert tags_of(s3, bucket, "explicit-copy") == {"from": "source", "x": "1"}
    s3.copy_object(Bucket=bucket, Key="replaced", CopySource=src, TaggingDirective="REPLACE", Tagging="new=tag")
    assert tags_of(s3, bucket, "replaced") == {"new": "tag"}
    s3.copy_object(Bucket=bucket, Key="cleared", CopySource=src, TaggingDirective="REPLACE")
    assert tags_of(s3, bucket, "cleared") == {}
    assert tags_of(s3, bucket, "src") == {"from": "source", "x": "1"}
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="bad", CopySource=src, TaggingDirective="MERGE")
    assert _err(exc) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="bad", CopySource=src, TaggingDirective="REPLACE", Tagging="a=1&a=2")
    assert _err(exc) == ("InvalidTag", 400)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad")


def test_copy_of_a_version_keeps_that_versions_tags(s3: Any, versioned: str) -> None:
    v1 = s3.put_object(Bucket=versioned, Key="src", Body=b"1", Tagging="gen=1")["VersionId"]
    s3.put_object(Bucket=versioned, Key="src", Body=b"2", Tagging="gen=2")
    s3.copy_object(Bucket=versioned, Key="dst", CopySource={"Bucket": versioned, "Key": "src", "VersionId": v1})
    assert tags_of(s3, versioned, "dst") == {"gen": "1"}


# --- limits -----------------------------------------------------------------------------
VALID_EDGES = [
    {f"k{i}": f"v{i}" for i in range(10)},  # ten tags
    {"k" * 128: "v" * 256},  # longest key and value
    {"k": ""},  # empty value
    {"Ключ 鍵": "値 ünïcode"},  # letters of any script, whitespace
    {"+-=._:/@ ": "+-=._:/@ "},  # every allowed punctuation mark
]
INVALID = {
    "eleven tags": [(f"k{i}", "v") for i in range(11)],
    "key too long": [("k" * 129, "v")],
    "value too long": [("k", "v" * 257)],
    "duplicate key": [("k", "1"), ("k", "2")],
    "bad key character": [("a#b", "v")],
    "bad value character": [("k", "v!")],
    "bad value character 2": [("k", "<x>")],
    "aws prefix": [("aws:owner", "v")],
    "aws prefix upper": [("AWS:owner", "v")],
}


@pytest.mark.parametrize("tags", VALID_EDGES, ids=range(len(VALID_EDGES)))
def test_tag_limits_accept_the_edges(s3: Any, bucket: str, tags: dict[str, str]) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=tag_set(tags))
    assert tags_of(s3, bucket, "k") == tags


@pytest.mark.parametrize("case", list(INVALID))
def test_tag_limits_refuse_with_invalid_tag(s3: Any, bucket: str, case: str) -> None:
    pairs = INVALID[case]
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="keep=me")
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in pairs]})
    assert _err(exc) == ("InvalidTag", 400)
    assert tags_of(s3, bucket, "k") == {"keep": "me"}
    # The same tag set in the x-amz-tagging header of a PUT: refused, nothing written.
    from urllib.parse import quote, urlencode

    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="new", Body=b"x", Tagging=urlencode(pairs, quote_via=quote))
    assert _err(exc) == ("InvalidTag", 400)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="new")
    assert _err(exc)[1] == 404


def test_empty_tag_key_is_invalid(server: ServerProcess, s3: Any, bucket: str) -> None:
    # boto3 refuses an empty key before sending it, so send the document by hand.
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    body = b"<Tagging><TagSet><Tag><Key></Key><Value>v</Value></Tag></TagSet></Tagging>"
    r = signed_request(server, "PUT", f"/{bucket}/k", body, query=[("tagging", "")])
    assert r.status == 400, r.body
    assert r.error()["Code"] == "InvalidTag"
    r = signed_request(server, "PUT", f"/{bucket}/k", b"<Tagging><Tag/></Tagging>", query=[("tagging", "")])
    assert r.status == 400, r.body
    assert r.error()["Code"] == "MalformedXML"


# --- bucket tagging ---------------------------------------------------------------------
def test_bucket_tagging(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert _err(exc) == ("NoSuchTagSet", 404)
    tags = {f"team{i}": f"ml-{i}" for i in range(50)}
    r = s3.put_bucket_tagging(Bucket=bucket, Tagging=tag_set(tags))
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    got = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert {t["Key"]: t["Value"] for t in got} == tags
    # Bucket tags are not object tags.
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert tags_of(s3, bucket, "k") == {}
    for bad in ([{"Key": f"t{i}", "Value": "v"} for i in range(51)], [{"Key": "aws:x", "Value": "v"}]):
        with pytest.raises(ClientError) as exc:
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": bad})
        assert _err(exc) == ("InvalidTag", 400)
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50
    r = s3.delete_bucket_tagging(Bucket=bucket)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert _err(exc) == ("NoSuchTagSet", 404)


def test_bucket_tagging_missing_bucket(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=f"{bucket}-nope")
    assert _err(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_tagging(Bucket=f"{bucket}-nope", Tagging=tag_set({"a": "b"}))
    assert _err(exc) == ("NoSuchBucket", 404)
