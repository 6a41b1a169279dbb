"""S3 versioning through boto3 against a real server, AWS S3 as the reference: bucket state,
version ids on every write, delete markers, reads and deletes by version id, the ``null``
version, ListObjectVersions (against a model, paged every way), DeleteObjects with versions,
BucketNotEmpty while any version is left, and versions surviving a restart.

Version-id headers follow S3: writes (PUT, copy, complete) answer ``x-amz-version-id`` only when
versioning is Enabled; reads of the ``null`` version answer ``x-amz-version-id: null`` once the
bucket has a versioning state (never for a bucket that was never versioned); a DELETE that
writes a null delete marker answers ``x-amz-version-id: null``."""

from __future__ import annotations

import contextlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, make_client
from tests.s3http import signed_request

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)

MISSING_VID = "0" * 24  # well-formed, never issued
MALFORMED_VID = "not-a-version-id"


def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def _hdrs(exc: pytest.ExceptionInfo[ClientError]) -> dict[str, str]:
    headers: dict[str, str] = exc.value.response["ResponseMetadata"]["HTTPHeaders"]
    return headers


def purge(s3: Any, bucket: str) -> None:
    """Delete every version and delete marker, then the bucket."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        objs = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", [])]
        objs += [{"Key": m["Key"], "VersionId": m["VersionId"]} for m in page.get("DeleteMarkers", [])]
        if objs:
            r = s3.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})
            assert not r.get("Errors"), r["Errors"]
    s3.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def new_bucket(s3: Any, status: str | None = None) -> Iterator[str]:
    name = f"v-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    if status is not None:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
    yield name
    purge(s3, name)


@pytest.fixture
def vbucket(s3: Any) -> Iterator[str]:
    """A bucket with versioning Enabled; every version is removed afterwards."""
    with new_bucket(s3, "Enabled") as name:
        yield name


@pytest.fixture
def ubucket(s3: Any) -> Iterator[str]:
    """A bucket that was never versioned; removed with all its versions afterwards."""
    with new_bucket(s3) as name:
        yield name


def body_of(s3: Any, bucket: str, key: str, version_id: str | None = None) -> bytes:
    kw = {"VersionId": version_id} if version_id is not None else {}
    data: bytes = s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()
    return data


class Item(NamedTuple):
    """One entry of a ListObjectVersions page in document order; a common prefix has kind 'CP'."""

    kind: str  # "Version", "DeleteMarker" or "CP"
    key: str
    version_id: str | None
    is_latest: bool | None


def raw_versions(server: ServerProcess, bucket: str, **params: object) -> tuple[list[Item], dict[str, str]]:
    """ListObjectVersions over raw HTTP, keeping the order of Version and DeleteMarker elements
    (boto3 splits them into two lists). Returns (items, top-level fields)."""
    query = [("versions", "")] + [(k, str(v)) for k, v in params.items()]
    r = signed_request(server, "GET", f"/{bucket}", query=query)
    assert r.status == 200, r.body[:500]
    root = ET.fromstring(r.body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    assert root.tag == f"{ns}ListVersionsResult"
    items: list[Item] = []
    fields: dict[str, str] = {}
    for el in root:
        tag = el.tag[len(ns) :]
        if tag in ("Version", "DeleteMarker"):
            latest = el.findtext(f"{ns}IsLatest")
            assert latest in ("true", "false"), latest
            items.append(Item(tag, el.findtext(f"{ns}Key") or "", el.findtext(f"{ns}VersionId"), latest == "true"))
        elif tag == "CommonPrefixes":
            items.append(Item("CP", el.findtext(f"{ns}Prefix") or "", None, None))
        else:
            fields[tag] = el.text or ""
    return items, fields


def boto_items(page: dict[str, Any]) -> list[Item]:
    """The entries of one boto3 page as Items (versions, then markers, then prefixes)."""
    out = [Item("Version", v["Key"], v["VersionId"], v["IsLatest"]) for v in page.get("Versions", [])]
    out += [Item("DeleteMarker", m["Key"], m["VersionId"], m["IsLatest"]) for m in page.get("DeleteMarkers", [])]
    out += [Item("CP", p["Prefix"], None, None) for p in page.get("CommonPrefixes", [])]
    return out


# --- bucket versioning state ----------------------------------------------------------------
def test_bucket_versioning_states(s3: Any, ubucket: str) -> None:
    r = s3.get_bucket_versioning(Bucket=ubucket)
    assert "Status" not in r
    assert "MFADelete" not in r
    for status in ("Enabled", "Suspended", "Enabled", "Suspended"):
        s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": status})
        assert s3.get_bucket_versioning(Bucket=ubucket)["Status"] == status
    # MFADelete Disabled is the only MFA setting there is; it is accepted.
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Enabled", "MFADelete": "Disabled"})
    assert s3.get_bucket_versioning(Bucket=ubucket)["Status"] == "Enabled"


def test_bucket_versioning_errors(s3: Any, ubucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Disabled"})
    assert _err(exc) == ("MalformedXML", 400)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "enabled"})
    assert _err(exc) == ("MalformedXML", 400)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"})
    assert _err(exc) == ("NotImplemented", 501)
    # None of the refused requests changed the state.
    assert "Status" not in s3.get_bucket_versioning(Bucket=ubucket)
    missing = f"v-{uuid.uuid4().hex[:16]}"
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_versioning(Bucket=missing)
    assert _err(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=missing, VersioningConfiguration={"Status": "Enabled"})
    assert _err(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.list_object_versions(Bucket=missing)
    assert _err(exc) == ("NoSuchBucket", 404)


# --- version ids on writes ------------------------------------------------------------------
def test_put_returns_version_ids(s3: Any, vbucket: str) -> None:
    v1 = s3.put_object(Bucket=vbucket, Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=vbucket, Key="k", Body=b"two")["VersionId"]
    assert v1 != v2
    assert "null" not in (v1, v2)
    assert body_of(s3, vbucket, "k") == b"two"
    assert body_of(s3, vbucket, "k", v1) == b"one"
    assert body_of(s3, vbucket, "k", v2) == b"two"
    got = s3.get_object(Bucket=vbucket, Key="k")
    assert got["VersionId"] == v2
    assert s3.head_object(Bucket=vbucket, Key="k")["VersionId"] == v2
    head1 = s3.head_object(Bucket=vbucket, Key="k", VersionId=v1)
    assert head1["VersionId"] == v1
    assert head1["ContentLength"] == 3
    ranged = s3.get_object(Bucket=vbucket, Key="k", VersionId=v1, Range="bytes=1-")
    assert ranged["Body"].read() == b"ne"
    assert ranged["VersionId"] == v1


def test_never_versioned_bucket_has_no_version_headers(s3: Any, ubucket: str) -> None:
    put = s3.put_object(Bucket=ubucket, Key="k", Body=b"x")
    assert "VersionId" not in put
    assert "VersionId" not in s3.get_object(Bucket=ubucket, Key="k")
    assert "VersionId" not in s3.head_object(Bucket=ubucket, Key="k")
    copy = s3.copy_object(Bucket=ubucket, Key="c", CopySource={"Bucket": ubucket, "Key": "k"})
    assert "VersionId" not in copy
    deleted = s3.delete_object(Bucket=ubucket, Key="c")
    assert "VersionId" not in deleted
    assert "DeleteMarker" not in deleted
    # The object still is the null version and can be addressed as such.
    assert body_of(s3, ubucket, "k", "null") == b"x"
    r = s3.list_object_versions(Bucket=ubucket)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in r["Versions"]] == [("k", "null", True)]
    assert "DeleteMarkers" not in r
    # An unversioned delete removes the object for good: nothing is left to list.
    s3.delete_object(Bucket=ubucket, Key="k")
    assert "Versions" not in s3.list_object_versions(Bucket=ubucket)


def test_copy_object_versions(s3: Any, vbucket: str) -> None:
    v1 = s3.put_object(Bucket=vbucket, Key="src", Body=b"first", Metadata={"gen": "1"})["VersionId"]
    v2 = s3.put_object(Bucket=vbucket, Key="src", Body=b"second", Metadata={"gen": "2"})["VersionId"]
    # From an old version: its bytes and metadata, a new version id, the source id echoed.
    r = s3.copy_object(Bucket=vbucket, Key="dst", CopySource={"Bucket": vbucket, "Key": "src", "VersionId": v1})
    assert r["CopySourceVersionId"] == v1
    d1 = r["VersionId"]
    assert d1 not in (v1, v2, "null")
    got = s3.get_object(Bucket=vbucket, Key="dst")
    assert got["Body"].read() == b"first"
    assert got["Metadata"] == {"gen": "1"}
    assert got["VersionId"] == d1
    # From the current version.
    d2 = s3.copy_object(Bucket=vbucket, Key="dst", CopySource={"Bucket": vbucket, "Key": "src"})["VersionId"]
    assert d2 not in (d1, v1, v2)
    assert body_of(s3, vbucket, "dst") == b"second"
    assert body_of(s3, vbucket, "dst", d1) == b"first"
    # Restoring an old version by copying it over its own key is allowed (S3's documented way).
    r = s3.copy_object(Bucket=vbucket, Key="src", CopySource={"Bucket": vbucket, "Key": "src", "VersionId": v1})
    assert r["CopySourceVersionId"] == v1
    v3 = r["VersionId"]
    assert body_of(s3, vbucket, "src") == b"first"
    assert [v["VersionId"] for v in s3.list_object_versions(Bucket=vbucket, Prefix="src")["Versions"]] == [v3, v2, v1]
    # Without a version id the copy onto itself still needs a change.
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=vbucket, Key="src", CopySource={"Bucket": vbucket, "Key": "src"})
    assert _err(exc) == ("InvalidRequest", 400)
    # Bad source versions.
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=vbucket, Key="x", CopySource={"Bucket": vbucket, "Key": "src", "VersionId": MISSING_VID})
    assert _err(exc) == ("NoSuchVersion", 404)
    with pytest.raises(ClientError) as exc:
        s3.copy_object(
            Bucket=vbucket, Key="x", CopySource={"Bucket": vbucket, "Key": "src", "VersionId": MALFORMED_VID}
        )
    assert _err(exc) == ("InvalidArgument", 400)
    dm = s3.delete_object(Bucket=vbucket, Key="src")["VersionId"]
    # The current version is a delete marker: the source is gone...
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=vbucket, Key="x", CopySource={"Bucket": vbucket, "Key": "src"})
    assert _err(exc) == ("NoSuchKey", 404)
    # ...and a delete marker cannot be named as a copy source (S3: 400).
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=vbucket, Key="x", CopySource={"Bucket": vbucket, "Key": "src", "VersionId": dm})
    assert _err(exc) == ("InvalidRequest", 400)
    # Older versions stay copyable behind the marker.
    s3.copy_object(Bucket=vbucket, Key="x", CopySource={"Bucket": vbucket, "Key": "src", "VersionId": v2})
    assert body_of(s3, vbucket, "x") == b"second"


def test_copy_between_buckets_and_into_suspended(s3: Any, vbucket: str) -> None:
    v1 = s3.put_object(Bucket=vbucket, Key="src", Body=b"old")["VersionId"]
    s3.put_object(Bucket=vbucket, Key="src", Body=b"new")
    with new_bucket(s3, "Suspended") as other:
        r = s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": vbucket, "Key": "src", "VersionId": v1})
        assert r["CopySourceVersionId"] == v1
        assert "VersionId" not in r  # a null version: S3 answers without x-amz-version-id
        got = s3.get_object(Bucket=other, Key="dst")
        assert got["Body"].read() == b"old"
        assert got["VersionId"] == "null"
        versions = s3.list_object_versions(Bucket=other)["Versions"]
        assert [(v["Key"], v["VersionId"]) for v in versions] == [("dst", "null")]


def test_multipart_version_ids(s3: Any, vbucket: str) -> None:
    def upload(bucket: str, data: bytes) -> dict[str, Any]:
        up = s3.create_multipart_upload(Bucket=bucket, Key="mp")
        part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=data)
        done: dict[str, Any] = s3.complete_multipart_upload(
            Bucket=bucket,
            Key="mp",
            UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        return done

    first = upload(vbucket, b"part-one")
    second = upload(vbucket, b"part-two")
    assert first["VersionId"] != second["VersionId"]
    assert body_of(s3, vbucket, "mp", first["VersionId"]) == b"part-one"
    assert body_of(s3, vbucket, "mp") == b"part-two"
    s3.put_bucket_versioning(Bucket=vbucket, VersioningConfiguration={"Status": "Suspended"})
    third = upload(vbucket, b"part-three")
    assert "VersionId" not in third
    vids = [v["VersionId"] for v in s3.list_object_versions(Bucket=vbucket)["Versions"]]
    assert vids == ["null", second["VersionId"], first["VersionId"]]
    assert body_of(s3, vbucket, "mp", "null") == b"part-three"


# --- delete markers ---------------------------------------------------------------------------
def test_delete_marker_lifecycle(s3: Any, vbucket: str) -> None:
    v1 = s3.put_object(Bucket=vbucket, Key="k", Body=b"v1")["VersionId"]
    r = s3.delete_object(Bucket=vbucket, Key="k")
    assert r["DeleteMarker"] is True
    dm = r["VersionId"]
    assert dm not in (v1, "null")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    # The key reads as deleted, and says why.
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="k")
    assert _err(exc) == ("NoSuchKey", 404)
    assert _hdrs(exc)["x-amz-delete-marker"] == "true"
    assert _hdrs(exc)["x-amz-version-id"] == dm
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=vbucket, Key="k")
    assert _err(exc) == ("404", 404)
    assert _hdrs(exc)["x-amz-delete-marker"] == "true"
    # Reading the marker itself is not allowed.
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as exc:
            call(Bucket=vbucket, Key="k", VersionId=dm)
        code, status = _err(exc)
        assert status == 405
        assert code in ("MethodNotAllowed", "405")  # HEAD has no body to carry the code
        assert _hdrs(exc)["x-amz-delete-marker"] == "true"
        assert _hdrs(exc)["x-amz-version-id"] == dm
        assert "last-modified" in _hdrs(exc)
    # The version behind the marker is intact.
    assert body_of(s3, vbucket, "k", v1) == b"v1"
    assert "Contents" not in s3.list_objects_v2(Bucket=vbucket)
    # A delete on a deleted key adds another marker.
    dm2 = s3.delete_object(Bucket=vbucket, Key="k")["VersionId"]
    assert dm2 != dm
    markers = s3.list_object_versions(Bucket=vbucket)["DeleteMarkers"]
    assert [(m["VersionId"], m["IsLatest"]) for m in markers] == [(dm2, True), (dm, False)]
    # Removing the markers by id brings the object back.
    r = s3.delete_object(Bucket=vbucket, Key="k", VersionId=dm2)
    assert r["DeleteMarker"] is True
    assert r["VersionId"] == dm2
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="k")
    assert _err(exc) == ("NoSuchKey", 404)
    s3.delete_object(Bucket=vbucket, Key="k", VersionId=dm)
    got = s3.get_object(Bucket=vbucket, Key="k")
    assert got["Body"].read() == b"v1"
    assert got["VersionId"] == v1
    assert "DeleteMarker" not in got
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=vbucket)["Contents"]] == ["k"]


def test_delete_marker_for_missing_key(s3: Any, vbucket: str) -> None:
    r = s3.delete_object(Bucket=vbucket, Key="never")
    assert r["DeleteMarker"] is True
    r2 = s3.list_object_versions(Bucket=vbucket)
    assert "Versions" not in r2
    assert [(m["Key"], m["VersionId"], m["IsLatest"]) for m in r2["DeleteMarkers"]] == [("never", r["VersionId"], True)]


def test_delete_version_promotes_previous(s3: Any, vbucket: str) -> None:
    vids = [s3.put_object(Bucket=vbucket, Key="k", Body=f"b{i}".encode())["VersionId"] for i in range(3)]
    # Removing a noncurrent version leaves the current one alone.
    r = s3.delete_object(Bucket=vbucket, Key="k", VersionId=vids[1])
    assert r["VersionId"] == vids[1]
    assert "DeleteMarker" not in r
    assert body_of(s3, vbucket, "k") == b"b2"
    # Removing the current version makes the newest remaining one current.
    s3.delete_object(Bucket=vbucket, Key="k", VersionId=vids[2])
    got = s3.get_object(Bucket=vbucket, Key="k")
    assert got["Body"].read() == b"b0"
    assert got["VersionId"] == vids[0]
    listed = s3.list_object_versions(Bucket=vbucket)["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in listed] == [(vids[0], True)]
    # Removing the last version removes the key.
    s3.delete_object(Bucket=vbucket, Key="k", VersionId=vids[0])
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="k")
    assert _err(exc) == ("NoSuchKey", 404)
    assert "x-amz-delete-marker" not in _hdrs(exc)
    assert "Versions" not in s3.list_object_versions(Bucket=vbucket)


# --- addressing versions: missing and malformed ids -------------------------------------------
@pytest.mark.parametrize("status", [None, "Enabled", "Suspended"])
def test_missing_and_malformed_version_ids(s3: Any, status: str | None) -> None:
    with new_bucket(s3, status) as b:
        s3.put_object(Bucket=b, Key="k", Body=b"data")
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=b, Key="k", VersionId=MISSING_VID)
        assert _err(exc) == ("NoSuchVersion", 404)
        with pytest.raises(ClientError) as exc:
            s3.head_object(Bucket=b, Key="k", VersionId=MISSING_VID)
        assert _err(exc) == ("404", 404)
        # A version id of another key does not address this one.
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=b, Key="other", VersionId="null")
        assert _err(exc) == ("NoSuchVersion", 404)
        for bad in (MALFORMED_VID, "", "NULL", "A" * 24):
            with pytest.raises(ClientError) as exc:
                s3.get_object(Bucket=b, Key="k", VersionId=bad)
            assert _err(exc) == ("InvalidArgument", 400), bad
            with pytest.raises(ClientError) as exc:
                s3.head_object(Bucket=b, Key="k", VersionId=bad)
            assert _err(exc) == ("400", 400), bad
            with pytest.raises(ClientError) as exc:
                s3.delete_object(Bucket=b, Key="k", VersionId=bad)
            assert _err(exc) == ("InvalidArgument", 400), bad
        # Deleting a version that does not exist succeeds and changes nothing (S3: 204).
        r = s3.delete_object(Bucket=b, Key="k", VersionId=MISSING_VID)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert "DeleteMarker" not in r
        assert body_of(s3, b, "k") == b"data"
        assert len(s3.list_object_versions(Bucket=b)["Versions"]) == 1
        assert "DeleteMarkers" not in s3.list_object_versions(Bucket=b)
    missing = f"v-{uuid.uuid4().hex[:16]}"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=missing, Key="k", VersionId=MISSING_VID)
    assert _err(exc) == ("NoSuchBucket", 404)


# --- the null version -------------------------------------------------------------------------
def test_null_version_survives_enabling(s3: Any, ubucket: str) -> None:
    s3.put_object(Bucket=ubucket, Key="k", Body=b"before")
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Enabled"})
    # Now that the bucket is versioned, reads of the null version say so.
    got = s3.get_object(Bucket=ubucket, Key="k")
    assert got["VersionId"] == "null"
    v1 = s3.put_object(Bucket=ubucket, Key="k", Body=b"after")["VersionId"]
    assert v1 != "null"
    got = s3.get_object(Bucket=ubucket, Key="k", VersionId="null")
    assert got["Body"].read() == b"before"
    assert got["VersionId"] == "null"
    assert s3.head_object(Bucket=ubucket, Key="k", VersionId="null")["VersionId"] == "null"
    assert body_of(s3, ubucket, "k") == b"after"
    listed = s3.list_object_versions(Bucket=ubucket)["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in listed] == [(v1, True), ("null", False)]
    # The null version can be copied from and deleted like any other.
    s3.copy_object(Bucket=ubucket, Key="c", CopySource={"Bucket": ubucket, "Key": "k", "VersionId": "null"})
    assert body_of(s3, ubucket, "c") == b"before"
    r = s3.delete_object(Bucket=ubucket, Key="k", VersionId="null")
    assert r["VersionId"] == "null"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=ubucket, Key="k", VersionId="null")
    assert _err(exc) == ("NoSuchVersion", 404)
    assert body_of(s3, ubucket, "k") == b"after"


def test_suspended_put_replaces_null_version(s3: Any, ubucket: str) -> None:
    s3.put_object(Bucket=ubucket, Key="k", Body=b"null-0")
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=ubucket, Key="k", Body=b"v1")["VersionId"]
    v2 = s3.put_object(Bucket=ubucket, Key="k", Body=b"v2")["VersionId"]
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Suspended"})
    put = s3.put_object(Bucket=ubucket, Key="k", Body=b"null-1")
    assert "VersionId" not in put  # S3's sample response for a suspended bucket has no version id
    # The old null version (the oldest) is gone; the new one is current; real versions stay.
    listed = s3.list_object_versions(Bucket=ubucket)["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in listed] == [("null", True), (v2, False), (v1, False)]
    got = s3.get_object(Bucket=ubucket, Key="k")
    assert got["Body"].read() == b"null-1"
    assert got["VersionId"] == "null"
    assert body_of(s3, ubucket, "k", v1) == b"v1"
    # Another suspended PUT replaces it again, in place at the top.
    s3.put_object(Bucket=ubucket, Key="k", Body=b"null-2")
    listed = s3.list_object_versions(Bucket=ubucket)["Versions"]
    assert [v["VersionId"] for v in listed] == ["null", v2, v1]
    assert body_of(s3, ubucket, "k", "null") == b"null-2"
    # Re-enabled: new versions stack on top of the null version.
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Enabled"})
    v3 = s3.put_object(Bucket=ubucket, Key="k", Body=b"v3")["VersionId"]
    listed = s3.list_object_versions(Bucket=ubucket)["Versions"]
    assert [v["VersionId"] for v in listed] == [v3, "null", v2, v1]
    # Suspended again: the null version in the middle is replaced by one at the top.
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=ubucket, Key="k", Body=b"null-3")
    listed = s3.list_object_versions(Bucket=ubucket)["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in listed] == [
        ("null", True),
        (v3, False),
        (v2, False),
        (v1, False),
    ]


def test_suspended_delete_writes_null_marker(s3: Any, ubucket: str) -> None:
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=ubucket, Key="k", Body=b"v1")["VersionId"]
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=ubucket, Key="k", Body=b"null")
    r = s3.delete_object(Bucket=ubucket, Key="k")
    assert r["DeleteMarker"] is True
    assert r["VersionId"] == "null"
    listed = s3.list_object_versions(Bucket=ubucket)
    assert [(v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [(v1, False)]
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [("null", True)]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=ubucket, Key="k")
    assert _err(exc) == ("NoSuchKey", 404)
    assert _hdrs(exc)["x-amz-version-id"] == "null"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=ubucket, Key="k", VersionId="null")
    assert _err(exc) == ("MethodNotAllowed", 405)
    # A second suspended delete replaces the null marker rather than stacking another.
    s3.delete_object(Bucket=ubucket, Key="k")
    listed = s3.list_object_versions(Bucket=ubucket)
    assert [m["VersionId"] for m in listed["DeleteMarkers"]] == ["null"]
    assert [v["VersionId"] for v in listed["Versions"]] == [v1]
    # A suspended PUT replaces the null marker with a null version.
    s3.put_object(Bucket=ubucket, Key="k", Body=b"back")
    listed = s3.list_object_versions(Bucket=ubucket)
    assert "DeleteMarkers" not in listed
    assert [(v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [("null", True), (v1, False)]
    # Deleting the null version by id uncovers v1.
    s3.delete_object(Bucket=ubucket, Key="k", VersionId="null")
    assert body_of(s3, ubucket, "k") == b"v1"


def test_suspended_delete_of_missing_key(s3: Any, ubucket: str) -> None:
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Suspended"})
    r = s3.delete_object(Bucket=ubucket, Key="ghost")
    assert r["DeleteMarker"] is True
    assert r["VersionId"] == "null"
    listed = s3.list_object_versions(Bucket=ubucket)
    assert [(m["Key"], m["VersionId"]) for m in listed["DeleteMarkers"]] == [("ghost", "null")]


# --- ListObjectVersions -----------------------------------------------------------------------
KEYS = ["a", "b/1", "b/2", "b/3/x", "c", "d"]


def _populate(s3: Any, bucket: str) -> list[Item]:
    """A few keys with several versions and markers; returns the expected full listing."""
    history: dict[str, list[tuple[str, str]]] = {k: [] for k in KEYS}  # key -> [(kind, vid)] oldest first
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="c", Body=b"c-null")
    history["c"].append(("Version", "null"))
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    plan = [("a", 3), ("b/1", 2), ("b/2", 1), ("b/3/x", 2), ("c", 2), ("d", 1)]
    for round_ in range(3):
        for key, n in plan:
            if round_ < n:
                vid = s3.put_object(Bucket=bucket, Key=key, Body=f"{key}-{round_}".encode())["VersionId"]
                history[key].append(("Version", vid))
    for key in ("a", "b/2", "d", "d"):
        vid = s3.delete_object(Bucket=bucket, Key=key)["VersionId"]
        history[key].append(("DeleteMarker", vid))
    expected = []
    for key in sorted(KEYS, key=str.encode):
        versions = list(reversed(history[key]))
        expected += [Item(kind, key, vid, i == 0) for i, (kind, vid) in enumerate(versions)]
    return expected


def _roll_up(items: list[Item], prefix: str, delimiter: str) -> list[Item]:
    """The model: filter by prefix, then fold keys under a delimiter into one common prefix."""
    out: list[Item] = []
    seen: set[str] = set()
    for it in items:
        if not it.key.startswith(prefix):
            continue
        if delimiter:
            idx = it.key.find(delimiter, len(prefix))
            if idx >= 0:
                cp = it.key[: idx + len(delimiter)]
                if cp not in seen:
                    seen.add(cp)
                    out.append(Item("CP", cp, None, None))
                continue
        out.append(it)
    return out


@pytest.fixture
def populated(s3: Any, vbucket: str) -> tuple[str, list[Item]]:
    return vbucket, _populate(s3, vbucket)


def test_list_versions_full(s3: Any, server: ServerProcess, populated: tuple[str, list[Item]]) -> None:
    bucket, expected = populated
    items, fields = raw_versions(server, bucket)
    assert items == expected
    assert fields["IsTruncated"] == "false"
    assert "NextKeyMarker" not in fields
    assert fields["MaxKeys"] == "1000"
    r = s3.list_object_versions(Bucket=bucket)
    assert boto_items(r) == [i for i in expected if i.kind == "Version"] + [
        i for i in expected if i.kind == "DeleteMarker"
    ]
    sizes = {(v["Key"], v["VersionId"]): v["Size"] for v in r["Versions"]}
    assert sizes[("c", "null")] == 6
    assert all(v["ETag"].startswith('"') and v["StorageClass"] == "STANDARD" for v in r["Versions"])
    assert all("Size" not in m and "ETag" not in m for m in r["DeleteMarkers"])
    assert all(x["Owner"]["ID"] for x in r["Versions"] + r["DeleteMarkers"])
    # Every listed version reads back (or is a marker).
    for it in expected:
        if it.kind == "Version":
            assert body_of(s3, bucket, it.key, it.version_id).startswith(it.key.encode())


@pytest.mark.parametrize(("prefix", "delimiter"), [("", ""), ("b/", ""), ("b", ""), ("", "/"), ("b/", "/"), ("z", "")])
def test_list_versions_prefix_delimiter(
    server: ServerProcess, populated: tuple[str, list[Item]], prefix: str, delimiter: str
) -> None:
    bucket, expected = populated
    params: dict[str, object] = {"prefix": prefix}
    if delimiter:
        params["delimiter"] = delimiter
    items, fields = raw_versions(server, bucket, **params)
    assert items == doc_order(_roll_up(expected, prefix, delimiter))
    assert fields["Prefix"] == prefix
    assert fields.get("Delimiter", "") == delimiter


def doc_order(items: list[Item]) -> list[Item]:
    """How a page of ``items`` reads in S3's XML: the entries, then the common prefixes."""
    return [i for i in items if i.kind != "CP"] + [i for i in items if i.kind == "CP"]


def _walk_by_hand(
    server: ServerProcess, bucket: str, max_keys: int, prefix: str, delimiter: str, model: list[Item]
) -> int:
    """Follow NextKeyMarker/NextVersionIdMarker; every page must be the model's next slice."""
    params: dict[str, object] = {"max-keys": max_keys, "prefix": prefix}
    if delimiter:
        params["delimiter"] = delimiter
    pos = pages = 0
    while True:
        page, fields = raw_versions(server, bucket, **params)
        want = model[pos : pos + max_keys]
        assert page == doc_order(want), (pos, params)
        pages += 1
        pos += len(want)
        if fields["IsTruncated"] == "false":
            assert pos == len(model)
            assert "NextKeyMarker" not in fields
            return pages
        assert pos < len(model)
        # The next markers name the page's last entry (a common prefix has no version id).
        assert fields["NextKeyMarker"] == want[-1].key
        assert fields.get("NextVersionIdMarker") == want[-1].version_id
        params["key-marker"] = fields["NextKeyMarker"]
        params.pop("version-id-marker", None)
        if "NextVersionIdMarker" in fields:
            params["version-id-marker"] = fields["NextVersionIdMarker"]


@pytest.mark.parametrize("max_keys", [1, 2, 3])
@pytest.mark.parametrize(("prefix", "delimiter"), [("", ""), ("", "/"), ("b/", "/"), ("b/", "")])
def test_list_versions_pagination(
    s3: Any, server: ServerProcess, populated: tuple[str, list[Item]], max_keys: int, prefix: str, delimiter: str
) -> None:
    bucket, expected = populated
    model = _roll_up(expected, prefix, delimiter)
    pages = _walk_by_hand(server, bucket, max_keys, prefix, delimiter, model)
    assert pages == max(1, -(-len(model) // max_keys))  # no empty trailing page
    # The boto3 paginator follows the same markers.
    paginator = s3.get_paginator("list_object_versions")
    kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": max_keys}}
    if delimiter:
        kw["Delimiter"] = delimiter
    got: list[Item] = []
    for page in paginator.paginate(**kw):
        page_items = boto_items(page)
        assert len(page_items) <= max_keys
        got += page_items
    order = {(i.kind, i.key, i.version_id): n for n, i in enumerate(model)}
    assert sorted(got, key=lambda i: order[(i.kind, i.key, i.version_id)]) == model
    assert len(got) == len(model)


def test_list_versions_markers(server: ServerProcess, populated: tuple[str, list[Item]]) -> None:
    bucket, expected = populated
    # key-marker alone: every version of that key is skipped.
    items, _ = raw_versions(server, bucket, **{"key-marker": "b/1"})
    assert items == [i for i in expected if i.key > "b/1"]
    items, _ = raw_versions(server, bucket, **{"key-marker": "b"})  # not a key: starts after it
    assert items == [i for i in expected if i.key > "b"]
    # key-marker + version-id-marker: starts after that version of that key.
    a_versions = [i for i in expected if i.key == "a"]
    items, fields = raw_versions(server, bucket, **{"key-marker": "a", "version-id-marker": a_versions[1].version_id})
    assert items == expected[2:]
    assert fields["KeyMarker"] == "a"
    assert fields["VersionIdMarker"] == a_versions[1].version_id
    # The null version works as a marker too.
    c_versions = [i for i in expected if i.key == "c"]
    assert c_versions[-1].version_id == "null"
    items, _ = raw_versions(server, bucket, **{"key-marker": "c", "version-id-marker": "null"})
    assert items == [i for i in expected if i.key > "c"]
    # A common prefix as key-marker skips everything under it.
    items, _ = raw_versions(server, bucket, delimiter="/", **{"key-marker": "b/"})
    assert items == doc_order([i for i in _roll_up(expected, "", "/") if i.key > "b/"])
    assert all(not i.key.startswith("b/") for i in items)
    # max-keys=0 lists nothing and is not truncated.
    items, fields = raw_versions(server, bucket, **{"max-keys": 0})
    assert items == []
    assert fields["IsTruncated"] == "false"
    # A version-id marker needs a key marker.
    r = signed_request(server, "GET", f"/{bucket}", query=[("versions", ""), ("version-id-marker", "null")])
    assert r.status == 400, r.body


def test_list_versions_delimiter_batches(s3: Any, server: ServerProcess, vbucket: str) -> None:
    """Keys past a common prefix with more versions than the engine's short scan after a prefix
    (``_AFTER_PREFIX_BATCH``) and prefixes with more keys than it: the whole listing and every
    page size walk the same model."""
    history: dict[str, list[str]] = {}
    plan = [*((f"p/{i:02d}", 1) for i in range(40)), ("q", 30), *((f"r/{i}", 2) for i in range(3)), ("s", 1)]
    for key, n in plan:
        history[key] = [s3.put_object(Bucket=vbucket, Key=key, Body=b"x")["VersionId"] for _ in range(n)]
    expected = [
        Item("Version", key, vid, i == 0) for key in sorted(history) for i, vid in enumerate(reversed(history[key]))
    ]
    model = _roll_up(expected, "", "/")
    assert [i.key for i in model if i.kind == "CP"] == ["p/", "r/"]
    items, _ = raw_versions(server, vbucket, delimiter="/")
    assert items == doc_order(model)
    for max_keys in (7, 20):
        _walk_by_hand(server, vbucket, max_keys, "", "/", model)


def test_list_versions_encoding_type(s3: Any, server: ServerProcess, vbucket: str) -> None:
    keys = ["sp ace/ü", "plus+amp&", "lt<gt>", "tab\tnl\n"]
    vids = {k: [s3.put_object(Bucket=vbucket, Key=k, Body=b"x")["VersionId"] for _ in range(2)] for k in keys}
    dm = s3.delete_object(Bucket=vbucket, Key=keys[0])["VersionId"]
    ordered = sorted(keys, key=str.encode)
    # botocore asks for encoding-type=url itself and decodes.
    r = s3.list_object_versions(Bucket=vbucket)
    assert [v["Key"] for v in r["Versions"]] == [k for k in ordered for _ in range(2)]
    assert [v["VersionId"] for v in r["Versions"]] == [v for k in ordered for v in reversed(vids[k])]
    assert [(m["Key"], m["VersionId"]) for m in r["DeleteMarkers"]] == [(keys[0], dm)]
    # Raw: every key-like field is percent-encoded.
    items, fields = raw_versions(
        server, vbucket, **{"encoding-type": "url", "max-keys": 1, "key-marker": keys[1], "prefix": ""}
    )
    assert fields["EncodingType"] == "url"
    assert len(items) == 1
    for raw in (items[0].key, fields["NextKeyMarker"], fields["KeyMarker"]):
        assert all(c.isascii() and c.isprintable() and c not in " \t\n<>&+" for c in raw), raw
    assert unquote_plus(fields["KeyMarker"]) == keys[1]
    assert unquote_plus(items[0].key) == ordered[ordered.index(keys[1]) + 1]
    # A delimiter folds "sp ace/" into a common prefix, encoded as well.
    items, _ = raw_versions(server, vbucket, **{"encoding-type": "url", "delimiter": "/"})
    assert [unquote_plus(i.key) for i in items if i.kind == "CP"] == ["sp ace/"]
    with pytest.raises(ClientError) as exc:
        s3.list_object_versions(Bucket=vbucket, EncodingType="base64")
    assert _err(exc) == ("InvalidArgument", 400)


# --- DeleteObjects with versions --------------------------------------------------------------
def test_delete_objects_with_versions(s3: Any, vbucket: str) -> None:
    k1v1 = s3.put_object(Bucket=vbucket, Key="k1", Body=b"1")["VersionId"]
    k1v2 = s3.put_object(Bucket=vbucket, Key="k1", Body=b"2")["VersionId"]
    k2v = s3.put_object(Bucket=vbucket, Key="k2", Body=b"x")["VersionId"]
    k2dm = s3.delete_object(Bucket=vbucket, Key="k2")["VersionId"]
    k3v = s3.put_object(Bucket=vbucket, Key="k3", Body=b"y")["VersionId"]
    r = s3.delete_objects(
        Bucket=vbucket,
        Delete={
            "Objects": [
                {"Key": "k1", "VersionId": k1v1},  # a noncurrent version
                {"Key": "k2", "VersionId": k2dm},  # a delete marker
                {"Key": "k3"},  # no version: a new marker
                {"Key": "k1", "VersionId": MISSING_VID},  # nothing there: still "deleted"
                {"Key": "k1", "VersionId": MALFORMED_VID},
            ]
        },
    )
    deleted = {(d["Key"], d.get("VersionId")): d for d in r["Deleted"]}
    assert set(deleted) == {("k1", k1v1), ("k2", k2dm), ("k3", None), ("k1", MISSING_VID)}
    assert "DeleteMarker" not in deleted[("k1", k1v1)]
    assert "DeleteMarkerVersionId" not in deleted[("k1", k1v1)]
    assert deleted[("k2", k2dm)]["DeleteMarker"] is True
    assert deleted[("k2", k2dm)]["DeleteMarkerVersionId"] == k2dm
    k3 = deleted[("k3", None)]
    assert k3["DeleteMarker"] is True
    k3dm = k3["DeleteMarkerVersionId"]
    assert k3dm not in ("null", "")
    assert "DeleteMarker" not in deleted[("k1", MISSING_VID)]
    assert len(r["Errors"]) == 1
    err = r["Errors"][0]
    assert (err["Key"], err["VersionId"], err["Code"]) == ("k1", MALFORMED_VID, "InvalidArgument")
    # The bucket now holds exactly what the results said.
    listed = s3.list_object_versions(Bucket=vbucket)
    assert [(v["Key"], v["VersionId"]) for v in listed["Versions"]] == [
        ("k1", k1v2),
        ("k2", k2v),
        ("k3", k3v),
    ]
    assert [(m["Key"], m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [("k3", k3dm, True)]
    assert body_of(s3, vbucket, "k2") == b"x"  # its marker is gone
    # Quiet mode reports nothing for successes.
    q = s3.delete_objects(Bucket=vbucket, Delete={"Objects": [{"Key": "k1", "VersionId": k1v2}], "Quiet": True})
    assert "Deleted" not in q
    assert "Errors" not in q
    assert "Versions" in s3.list_object_versions(Bucket=vbucket, Prefix="k3")
    assert "Versions" not in s3.list_object_versions(Bucket=vbucket, Prefix="k1")


def test_delete_objects_suspended_null_marker(s3: Any, ubucket: str) -> None:
    s3.put_object(Bucket=ubucket, Key="k", Body=b"x")
    s3.put_bucket_versioning(Bucket=ubucket, VersioningConfiguration={"Status": "Suspended"})
    r = s3.delete_objects(Bucket=ubucket, Delete={"Objects": [{"Key": "k"}]})
    (d,) = r["Deleted"]
    assert d["DeleteMarker"] is True
    assert d["DeleteMarkerVersionId"] == "null"
    listed = s3.list_object_versions(Bucket=ubucket)
    assert "Versions" not in listed  # the null version was replaced by the null marker
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [("null", True)]


# --- bucket deletion --------------------------------------------------------------------------
def test_bucket_with_versions_is_not_empty(s3: Any) -> None:
    name = f"v-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    try:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        v1 = s3.put_object(Bucket=name, Key="k", Body=b"x")["VersionId"]
        dm = s3.delete_object(Bucket=name, Key="k")["VersionId"]
        assert "Contents" not in s3.list_objects_v2(Bucket=name)
        # A noncurrent version and a marker.
        with pytest.raises(ClientError) as exc:
            s3.delete_bucket(Bucket=name)
        assert _err(exc) == ("BucketNotEmpty", 409)
        # Only a delete marker.
        s3.delete_object(Bucket=name, Key="k", VersionId=v1)
        with pytest.raises(ClientError) as exc:
            s3.delete_bucket(Bucket=name)
        assert _err(exc) == ("BucketNotEmpty", 409)
        s3.head_bucket(Bucket=name)
        # Suspended changes nothing: the marker is still a version.
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
        with pytest.raises(ClientError) as exc:
            s3.delete_bucket(Bucket=name)
        assert _err(exc) == ("BucketNotEmpty", 409)
        # The last version gone, the bucket is empty.
        s3.delete_object(Bucket=name, Key="k", VersionId=dm)
        assert s3.list_object_versions(Bucket=name).get("Versions", []) == []
        s3.delete_bucket(Bucket=name)
    except BaseException:
        purge(s3, name)
        raise
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=name)
    assert _err(exc) == ("404", 404)


# --- listing current objects ------------------------------------------------------------------
def test_list_objects_shows_current_versions_only(s3: Any, populated: tuple[str, list[Item]]) -> None:
    bucket, expected = populated
    live = [i for i in expected if i.is_latest and i.kind == "Version"]
    want = [i.key for i in live]
    assert want == ["b/1", "b/3/x", "c"]
    for v2 in (True, False):
        r = s3.list_objects_v2(Bucket=bucket) if v2 else s3.list_objects(Bucket=bucket)
        contents = r["Contents"]
        assert [o["Key"] for o in contents] == want
        for o, it in zip(contents, live, strict=True):
            head = s3.head_object(Bucket=bucket, Key=it.key, VersionId=it.version_id)
            assert o["ETag"] == head["ETag"]
            assert o["Size"] == head["ContentLength"]
    r = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["c"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/"]
    # A prefix whose keys are all deleted lists nothing.
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="b/2")
    assert s3.list_objects_v2(Bucket=bucket, Prefix="a")["KeyCount"] == 0


# --- persistence ------------------------------------------------------------------------------
def test_versions_survive_restart(fresh_server: ServerProcess) -> None:
    s3 = make_client(fresh_server.endpoint)
    s3.create_bucket(Bucket="keep")
    s3.put_object(Bucket="keep", Key="k", Body=b"null")
    s3.put_bucket_versioning(Bucket="keep", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="keep", Key="k", Body=b"v1")["VersionId"]
    v2 = s3.put_object(Bucket="keep", Key="k", Body=b"v2")["VersionId"]
    dm = s3.delete_object(Bucket="keep", Key="k")["VersionId"]
    s3.put_object(Bucket="keep", Key="other", Body=b"o")
    s3.create_bucket(Bucket="susp")
    s3.put_bucket_versioning(Bucket="susp", VersioningConfiguration={"Status": "Suspended"})
    before = s3.list_object_versions(Bucket="keep")
    fresh_server.stop()
    fresh_server.start()
    s3 = make_client(fresh_server.endpoint)
    assert s3.get_bucket_versioning(Bucket="keep")["Status"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket="susp")["Status"] == "Suspended"
    after = s3.list_object_versions(Bucket="keep")
    for field in ("Versions", "DeleteMarkers"):
        assert after[field] == before[field]
    assert [v["VersionId"] for v in after["Versions"] if v["Key"] == "k"] == [v2, v1, "null"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="keep", Key="k")
    assert _err(exc) == ("NoSuchKey", 404)
    assert _hdrs(exc)["x-amz-version-id"] == dm
    assert body_of(s3, "keep", "k", "null") == b"null"
    assert body_of(s3, "keep", "k", v1) == b"v1"
    assert body_of(s3, "keep", "k", v2) == b"v2"
    # New versions after the restart stack on top, and ids keep increasing.
    v3 = s3.put_object(Bucket="keep", Key="k", Body=b"v3")["VersionId"]
    vids = [v["VersionId"] for v in s3.list_object_versions(Bucket="keep", Prefix="k")["Versions"]]
    assert vids == [v3, v2, v1, "null"]
    assert v3 > v2 > v1


def test_copy_of_the_current_version_reports_its_source_version(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    src = s3.put_object(Bucket=bucket, Key="src", Body=b"one")["VersionId"]
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert r["CopySourceVersionId"] == src
    assert r["VersionId"] not in (src, "null")
    assert s3.get_object(Bucket=bucket, Key="dst", VersionId=r["VersionId"])["Body"].read() == b"one"
