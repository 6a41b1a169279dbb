"""Object operations through boto3 against a real server: put/get/head/delete, copy, ranges,
preconditions, digests and checksums, metadata, and 501 for what is not implemented."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import random
import uuid
import zlib

import pytest
from awscrt import checksums as crt
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, make_client

SEED = int(os.environ.get("TIERSTORE_TEST_SEED", "20240611"))
print(f"test_objects seed: {SEED}")  # replay with TIERSTORE_TEST_SEED

pytestmark = pytest.mark.both_catalogs  # the S3 API core, on SQLite and on PostgreSQL


@pytest.fixture(autouse=True)
def _show_seed() -> None:
    print(f"test_objects seed: {SEED} (replay with TIERSTORE_TEST_SEED={SEED})")


def _rng(salt: str) -> random.Random:
    return random.Random(f"{SEED}-{salt}")


def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def checksum(algorithm: str, data: bytes) -> str:
    """S3's encoding of a full-object checksum, computed independently of the server."""
    if algorithm == "CRC32":
        return _b64(zlib.crc32(data).to_bytes(4, "big"))
    if algorithm == "CRC32C":
        return _b64(crt.crc32c(data).to_bytes(4, "big"))
    if algorithm == "CRC64NVME":
        return _b64(crt.crc64nvme(data).to_bytes(8, "big"))
    return _b64(hashlib.new(algorithm.lower(), data).digest())


# --- basic round trips ------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 8 * 1024 * 1024 + 1])
def test_put_get_head_sizes(s3, bucket: str, size: int) -> None:  # type: ignore[no-untyped-def]
    data = _rng(f"size-{size}").randbytes(size)
    put = s3.put_object(Bucket=bucket, Key="obj", Body=data)
    assert put["ETag"] == f'"{_md5(data)}"'
    got = s3.get_object(Bucket=bucket, Key="obj")
    body = got["Body"].read()
    assert len(body) == size
    assert body == data
    assert got["ETag"] == put["ETag"]
    assert got["ContentLength"] == size
    assert got["ContentType"] == "binary/octet-stream"
    assert got["AcceptRanges"] == "bytes"
    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == size
    assert head["ETag"] == put["ETag"]
    assert head["LastModified"] == got["LastModified"]
    assert "PartsCount" not in head
    if size == 0:
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=bucket, Key="obj", Range="bytes=0-")
        assert _err(exc) == ("InvalidRange", 416)


def test_a_body_is_a_blob_where_the_server_keeps_them(server: ServerProcess, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Past the inline limit (16 KiB) an acknowledged PUT's body is one new blob where the server
    keeps its blobs: a file in its data dir, or, on the scale-out configuration (``pg_server``:
    PostgreSQL and ``--store``), an object in the store's bucket holding the body's bytes. A body
    at the limit stays inline in the catalog (no blob)."""
    rng = _rng("where")
    before = server.blob_ids()
    s3.put_object(Bucket=bucket, Key="small", Body=rng.randbytes(16 * 1024))
    assert server.blob_ids() == before
    body = rng.randbytes(16 * 1024 + 1)
    s3.put_object(Bucket=bucket, Key="blob", Body=body)
    (blob_id,) = server.blob_ids() - before
    if server.store is not None:
        weed, store_bucket = server.store
        assert weed.client().get_object(Bucket=store_bucket, Key=f"blobs/{blob_id}")["Body"].read() == body
        assert not (server.data_dir / "blobs").exists()  # nothing but the cache in the data dir
    assert s3.get_object(Bucket=bucket, Key="blob")["Body"].read() == body


@pytest.mark.parametrize(
    "key",
    [
        "plain",
        "with space/and+plus",
        "unicodé/日本語/😀",
        "percent%20literal?query#hash",
        "a//double//slash/",
        "tilde~!$&'()*,;=:@[]",
        "ctrl\x01char\x1f",
        ".",
        "..",
        "a/../b",
        "./x",
        "/",
        "//x",
        "x" * 1024,
    ],
)
def test_key_round_trip(s3, bucket: str, key: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    # botocore asks for encoding-type=url by itself and decodes the keys in the response.
    listed = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_key_too_long(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="x" * 1025, Body=b"x")
    assert _err(exc) == ("KeyTooLongError", 400)


def test_overwrite_replaces(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", Metadata={"a": "1"}, ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second!")
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"second!"
    assert got["Metadata"] == {}
    assert got["ContentType"] == "binary/octet-stream"


def test_missing_key(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="nope")
    assert _err(exc) == ("NoSuchKey", 404)
    assert exc.value.response["Error"].get("Key", "nope") == "nope"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="nope")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_delete_is_idempotent(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r1 = s3.delete_object(Bucket=bucket, Key="k")
    r2 = s3.delete_object(Bucket=bucket, Key="k")
    r3 = s3.delete_object(Bucket=bucket, Key="never-existed")
    for r in (r1, r2, r3):
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="k")
    assert _err(exc) == ("NoSuchKey", 404)


def test_delete_objects(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    keys = [f"d/{i:03d}" for i in range(20)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    targets = [*keys[:10], "d/missing"]
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in targets]})
    assert sorted(d["Key"] for d in r["Deleted"]) == sorted(targets)
    assert "Errors" not in r
    remaining = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert remaining == keys[10:]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[10:]], "Quiet": True})
    assert "Deleted" not in quiet
    assert "Errors" not in quiet
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    odd = ["amp&<>\"'", "uni/ü/😀", "sp ace"]
    for k in odd:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in odd]})
    assert sorted(d["Key"] for d in r["Deleted"]) == sorted(odd)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_delete_objects_errors_and_limits(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="v", Body=b"x")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "v", "VersionId": "no-such-version"}], "Quiet": True})
    # A version id that does not exist deletes nothing: the current object stays.
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"x"
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]})
    assert _err(exc) == ("MalformedXML", 400)
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=f"missing-{uuid.uuid4().hex[:12]}", Delete={"Objects": [{"Key": "a"}]})
    assert _err(exc) == ("NoSuchBucket", 404)


# --- metadata and standard headers ------------------------------------------------------
def test_standard_headers_round_trip(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    expires = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    s3.put_object(
        Bucket=bucket,
        Key="h",
        Body=b"hello",
        ContentType="text/plain; charset=utf-8",
        ContentEncoding="identity",
        ContentDisposition='attachment; filename="h.txt"',
        ContentLanguage="de-CH",
        CacheControl="max-age=3600, public",
        Expires=expires,
        Metadata={"Mixed-Case": "Value 1", "empty": "", "ascii": "plain ascii"},
    )
    for r in (s3.get_object(Bucket=bucket, Key="h"), s3.head_object(Bucket=bucket, Key="h")):
        assert r["ContentType"] == "text/plain; charset=utf-8"
        assert r["ContentEncoding"] == "identity"
        assert r["ContentDisposition"] == 'attachment; filename="h.txt"'
        assert r["ContentLanguage"] == "de-CH"
        assert r["CacheControl"] == "max-age=3600, public"
        assert r["Expires"] == expires
        # S3 lower-cases user metadata names; values are returned as sent.
        assert r["Metadata"] == {"mixed-case": "Value 1", "empty": "", "ascii": "plain ascii"}


def test_metadata_too_large(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="m", Body=b"old")
    ok = {"k": "v" * 2047}  # exactly 2048 bytes of name + value: allowed
    s3.put_object(Bucket=bucket, Key="m-ok", Body=b"x", Metadata=ok)
    assert s3.head_object(Bucket=bucket, Key="m-ok")["Metadata"] == ok
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="m", Body=b"new", Metadata={"k": "v" * 2048})
    assert _err(exc) == ("MetadataTooLarge", 400)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="m", Body=b"new", Metadata={f"k{i}": "v" * 100 for i in range(25)})
    assert _err(exc) == ("MetadataTooLarge", 400)
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(Bucket=bucket, Key="m", Metadata={"k": "v" * 2048})
    assert _err(exc) == ("MetadataTooLarge", 400)
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"old"


# --- ranges ----------------------------------------------------------------------------
@pytest.fixture
def hundred(s3, bucket: str) -> bytes:  # type: ignore[no-untyped-def]
    data = _rng("hundred").randbytes(100)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    return data


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=10-", 10, 99),
        ("bytes=-10", 90, 99),
        ("bytes=90-1000", 90, 99),  # end beyond size clamps
        ("bytes=-1000", 0, 99),  # suffix longer than the object is the whole object
        ("bytes=99-99", 99, 99),
    ],
)
def test_range_reads(s3, bucket: str, hundred: bytes, spec: str, first: int, last: int) -> None:  # type: ignore[no-untyped-def]
    r = s3.get_object(Bucket=bucket, Key="r", Range=spec)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert r["ContentRange"] == f"bytes {first}-{last}/100"
    assert r["ContentLength"] == last - first + 1
    assert r["Body"].read() == hundred[first : last + 1]
    h = s3.head_object(Bucket=bucket, Key="r", Range=spec)
    assert h["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert h["ContentRange"] == f"bytes {first}-{last}/100"


@pytest.mark.parametrize("spec", ["bytes=100-", "bytes=100-200", "bytes=1000-1001", "bytes=-0"])
def test_unsatisfiable_range(s3, bucket: str, hundred: bytes, spec: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r", Range=spec)
    assert _err(exc) == ("InvalidRange", 416)
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == "bytes */100"


@pytest.mark.parametrize("spec", ["bytes=20-10", "bytes=0-1,5-6", "items=0-5", "bytes=x-y"])
def test_ignored_range(s3, bucket: str, hundred: bytes, spec: str) -> None:  # type: ignore[no-untyped-def]
    r = s3.get_object(Bucket=bucket, Key="r", Range=spec)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "ContentRange" not in r
    assert r["Body"].read() == hundred


# --- read preconditions ----------------------------------------------------------------
def _status(call) -> int:  # type: ignore[no-untyped-def]
    try:
        r = call()
    except ClientError as exc:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    if "Body" in r:
        r["Body"].read()
    return int(r["ResponseMetadata"]["HTTPStatusCode"])


def test_read_preconditions(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"content")["ETag"]
    mtime = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    before = mtime - dt.timedelta(days=1)
    after = mtime + dt.timedelta(days=1)
    cases: list[tuple[dict[str, object], int]] = [
        ({"IfMatch": etag}, 200),
        ({"IfMatch": etag.strip('"')}, 200),
        ({"IfMatch": "*"}, 200),
        ({"IfMatch": '"0000"'}, 412),
        ({"IfNoneMatch": etag}, 304),
        ({"IfNoneMatch": "*"}, 304),
        ({"IfNoneMatch": '"0000"'}, 200),
        ({"IfModifiedSince": before}, 200),
        ({"IfModifiedSince": mtime}, 304),
        ({"IfUnmodifiedSince": before}, 412),
        ({"IfUnmodifiedSince": mtime}, 200),
        ({"IfUnmodifiedSince": after}, 200),
        # S3: If-Match true wins over a failing If-Unmodified-Since.
        ({"IfMatch": etag, "IfUnmodifiedSince": before}, 200),
        # S3: If-None-Match false (etag matches) with If-Modified-Since true -> 304.
        ({"IfNoneMatch": etag, "IfModifiedSince": before}, 304),
        # If-None-Match true (etag differs) makes If-Modified-Since irrelevant.
        ({"IfNoneMatch": '"0000"', "IfModifiedSince": mtime}, 200),
        # If-Match failing dominates If-None-Match.
        ({"IfMatch": '"0000"', "IfNoneMatch": etag}, 412),
    ]
    for args, expected in cases:
        assert _status(lambda a=args: s3.get_object(Bucket=bucket, Key="c", **a)) == expected, ("GET", args)
        assert _status(lambda a=args: s3.head_object(Bucket=bucket, Key="c", **a)) == expected, ("HEAD", args)


def test_precondition_error_bodies(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"content")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"nope"')
    assert _err(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    headers = exc.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["etag"] == etag
    assert "last-modified" in headers


# --- response overrides ----------------------------------------------------------------
def test_response_header_overrides(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="o", Body=b"body", ContentType="text/plain", CacheControl="no-cache")
    expires = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    r = s3.get_object(
        Bucket=bucket,
        Key="o",
        ResponseContentType="application/json",
        ResponseContentDisposition='attachment; filename="o.json"',
        ResponseCacheControl="max-age=60",
        ResponseExpires=expires,
        ResponseContentLanguage="fr",
        ResponseContentEncoding="identity",
    )
    assert r["Body"].read() == b"body"
    assert r["ContentType"] == "application/json"
    assert r["ContentDisposition"] == 'attachment; filename="o.json"'
    assert r["CacheControl"] == "max-age=60"
    assert r["Expires"] == expires
    assert r["ContentLanguage"] == "fr"
    assert r["ContentEncoding"] == "identity"
    # Overrides change the response only, never the stored object.
    h = s3.head_object(Bucket=bucket, Key="o")
    assert h["ContentType"] == "text/plain"
    assert h["CacheControl"] == "no-cache"
    assert "ContentDisposition" not in h


# --- conditional writes ----------------------------------------------------------------
def test_put_if_none_match(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    r = s3.put_object(Bucket=bucket, Key="w", Body=b"one", IfNoneMatch="*")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="w", Body=b"two", IfNoneMatch="*")
    assert _err(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="w")["Body"].read() == b"one"
    s3.delete_object(Bucket=bucket, Key="w")
    s3.put_object(Bucket=bucket, Key="w", Body=b"three", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="w")["Body"].read() == b"three"


def test_put_if_match(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="w", Body=b"x", IfMatch='"00000000000000000000000000000000"')
    assert _err(exc) == ("NoSuchKey", 404)
    etag = s3.put_object(Bucket=bucket, Key="w", Body=b"one")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="w", Body=b"two", IfMatch=f'"{_md5(b"other")}"')
    assert _err(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="w")["Body"].read() == b"one"
    r = s3.put_object(Bucket=bucket, Key="w", Body=b"two", IfMatch=etag)
    assert r["ETag"] == f'"{_md5(b"two")}"'
    assert s3.get_object(Bucket=bucket, Key="w")["Body"].read() == b"two"


# --- digests and checksums -------------------------------------------------------------
def test_content_md5(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="d", Body=b"old")
    good = _b64(hashlib.md5(b"new").digest())
    s3.put_object(Bucket=bucket, Key="d2", Body=b"new", ContentMD5=good)
    assert s3.get_object(Bucket=bucket, Key="d2")["Body"].read() == b"new"
    wrong = _b64(hashlib.md5(b"other").digest())
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="d", Body=b"new", ContentMD5=wrong)
    assert _err(exc) == ("BadDigest", 400)
    for malformed in ("not base64!!", _b64(b"short")):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="d", Body=b"new", ContentMD5=malformed)
        assert _err(exc) == ("InvalidDigest", 400)
    assert s3.get_object(Bucket=bucket, Key="d")["Body"].read() == b"old"


ALGORITHMS = ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_put_checksum_algorithm(s3, bucket: str, algorithm: str) -> None:  # type: ignore[no-untyped-def]
    data = _rng(f"ck-{algorithm}").randbytes(300_001)
    expected = checksum(algorithm, data)
    put = s3.put_object(Bucket=bucket, Key="ck", Body=data, ChecksumAlgorithm=algorithm)
    assert put[f"Checksum{algorithm}"] == expected
    got = s3.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got[f"Checksum{algorithm}"] == expected
    assert got["ChecksumType"] == "FULL_OBJECT"
    head = s3.head_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == expected
    # S3 reports the one checksum the object was written with, no other.
    assert {a for a in ALGORITHMS if f"Checksum{a}" in head} == {algorithm}
    # Without ChecksumMode the checksum is not returned.
    assert f"Checksum{algorithm}" not in s3.head_object(Bucket=bucket, Key="ck")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_put_wrong_checksum_value(s3, bucket: str, algorithm: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="ck", Body=b"old body")
    wrong = checksum(algorithm, b"something else")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="ck", Body=b"new body", **{f"Checksum{algorithm}": wrong})
    assert _err(exc) == ("BadDigest", 400)
    got = s3.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"old body"
    assert got["ETag"] == f'"{_md5(b"old body")}"'


def test_put_explicit_checksum_value(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    data = b"explicit checksum"
    value = checksum("SHA256", data)
    r = s3.put_object(Bucket=bucket, Key="e", Body=data, ChecksumSHA256=value)
    assert r["ChecksumSHA256"] == value
    assert s3.head_object(Bucket=bucket, Key="e", ChecksumMode="ENABLED")["ChecksumSHA256"] == value


def test_malformed_checksum_value(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    # A value that cannot be the body's checksum is BadDigest, as a mismatch (issue 14); only a
    # malformed Content-MD5 is InvalidDigest (test_content_md5).
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="e", Body=b"x", ChecksumCRC32="!!notbase64")
    assert _err(exc) == ("BadDigest", 400)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="e")
    assert _err(exc) == ("NoSuchKey", 404)


def test_default_checksum(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    data = _rng("default-ck").randbytes(1000)
    s3.put_object(Bucket=bucket, Key="dflt", Body=data)
    head = s3.head_object(Bucket=bucket, Key="dflt", ChecksumMode="ENABLED")
    # boto3 sends CRC32 by default (when_supported); S3 keeps and reports what the client sent.
    assert {a for a in ALGORITHMS if f"Checksum{a}" in head} == {"CRC32"}
    assert head["ChecksumCRC32"] == checksum("CRC32", data)
    # A client that sends no checksum gets S3's CRC64NVME default.
    plain = make_client(s3.meta.endpoint_url, request_checksum_calculation="when_required")
    plain.put_object(Bucket=bucket, Key="nock", Body=data)
    head = s3.head_object(Bucket=bucket, Key="nock", ChecksumMode="ENABLED")
    assert {a for a in ALGORITHMS if f"Checksum{a}" in head} == {"CRC64NVME"}
    assert head["ChecksumCRC64NVME"] == checksum("CRC64NVME", data)
    assert head["ChecksumType"] == "FULL_OBJECT"


# --- copy ------------------------------------------------------------------------------
def test_copy_object_metadata_directives(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    data = _rng("copy").randbytes(5000)
    etag = s3.put_object(
        Bucket=bucket, Key="src", Body=data, ContentType="text/x-src", Metadata={"a": "1"}, CacheControl="no-store"
    )["ETag"]
    r = s3.copy_object(Bucket=bucket, Key="dst-copy", CopySource={"Bucket": bucket, "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == etag
    got = s3.get_object(Bucket=bucket, Key="dst-copy")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/x-src"
    assert got["CacheControl"] == "no-store"
    assert got["Metadata"] == {"a": "1"}
    # COPY ignores metadata given in the request.
    s3.copy_object(
        Bucket=bucket, Key="dst-copy2", CopySource=f"{bucket}/src", Metadata={"b": "2"}, MetadataDirective="COPY"
    )
    assert s3.head_object(Bucket=bucket, Key="dst-copy2")["Metadata"] == {"a": "1"}
    s3.copy_object(
        Bucket=bucket,
        Key="dst-replace",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="application/x-new",
    )
    h = s3.head_object(Bucket=bucket, Key="dst-replace")
    assert h["Metadata"] == {"b": "2"}
    assert h["ContentType"] == "application/x-new"
    assert "CacheControl" not in h
    assert s3.get_object(Bucket=bucket, Key="dst-replace")["Body"].read() == data
    # The source is untouched.
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"a": "1"}


def test_copy_onto_itself(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="self", Body=b"same", Metadata={"v": "1"})
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"})
    assert _err(exc) == ("InvalidRequest", 400)
    s3.copy_object(
        Bucket=bucket,
        Key="self",
        CopySource={"Bucket": bucket, "Key": "self"},
        MetadataDirective="REPLACE",
        Metadata={"v": "2"},
        ContentType="text/plain",
    )
    got = s3.get_object(Bucket=bucket, Key="self")
    assert got["Body"].read() == b"same"
    assert got["Metadata"] == {"v": "2"}
    assert got["ContentType"] == "text/plain"


def test_copy_source_preconditions(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    etag = s3.put_object(Bucket=bucket, Key="src", Body=b"payload")["ETag"]
    mtime = s3.head_object(Bucket=bucket, Key="src")["LastModified"]
    before = mtime - dt.timedelta(days=1)
    after = mtime + dt.timedelta(days=1)
    src = {"Bucket": bucket, "Key": "src"}
    failing: list[dict[str, object]] = [
        {"CopySourceIfMatch": '"0000"'},
        {"CopySourceIfNoneMatch": etag},
        {"CopySourceIfModifiedSince": mtime},
        {"CopySourceIfUnmodifiedSince": before},
        {"CopySourceIfNoneMatch": etag, "CopySourceIfModifiedSince": before},
    ]
    for i, args in enumerate(failing):
        with pytest.raises(ClientError) as exc:
            s3.copy_object(Bucket=bucket, Key=f"fail-{i}", CopySource=src, **args)
        assert _err(exc) == ("PreconditionFailed", 412), args
        with pytest.raises(ClientError) as exc:
            s3.head_object(Bucket=bucket, Key=f"fail-{i}")
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    passing: list[dict[str, object]] = [
        {"CopySourceIfMatch": etag},
        {"CopySourceIfNoneMatch": '"0000"'},
        {"CopySourceIfModifiedSince": before},
        {"CopySourceIfUnmodifiedSince": after},
        # S3: if-match true and if-unmodified-since false -> the copy proceeds.
        {"CopySourceIfMatch": etag, "CopySourceIfUnmodifiedSince": before},
    ]
    for i, args in enumerate(passing):
        r = s3.copy_object(Bucket=bucket, Key=f"ok-{i}", CopySource=src, **args)
        assert r["CopyObjectResult"]["ETag"] == etag, args
        assert s3.get_object(Bucket=bucket, Key=f"ok-{i}")["Body"].read() == b"payload"


def test_copy_across_buckets_and_delete_source(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    other = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=other)
    try:
        data = _rng("xbucket").randbytes(70_000)
        s3.put_object(Bucket=bucket, Key="a/src", Body=data, Metadata={"m": "x"})
        s3.copy_object(Bucket=other, Key="b/dst", CopySource={"Bucket": bucket, "Key": "a/src"})
        s3.delete_object(Bucket=bucket, Key="a/src")
        got = s3.get_object(Bucket=other, Key="b/dst")
        assert got["Body"].read() == data
        assert got["Metadata"] == {"m": "x"}
        # Overwriting the copy frees only the copy's reference: the data is still intact elsewhere.
        s3.copy_object(Bucket=other, Key="b/dst2", CopySource={"Bucket": other, "Key": "b/dst"})
        s3.put_object(Bucket=other, Key="b/dst", Body=b"replaced")
        assert s3.get_object(Bucket=other, Key="b/dst2")["Body"].read() == data
    finally:
        for k in ("b/dst", "b/dst2"):
            s3.delete_object(Bucket=other, Key=k)
        s3.delete_bucket(Bucket=other)


def test_copy_missing_source(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "missing"})
    assert _err(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": f"m-{uuid.uuid4().hex[:12]}", "Key": "k"})
    assert _err(exc) == ("NoSuchBucket", 404)


def test_copy_key_with_special_characters(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    key = "dir with space/ü+%?#&=.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=b"special")
    s3.copy_object(Bucket=bucket, Key="plain", CopySource={"Bucket": bucket, "Key": key})
    assert s3.get_object(Bucket=bucket, Key="plain")["Body"].read() == b"special"


# --- not implemented -------------------------------------------------------------------
def test_unimplemented_object_operations(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="n", Body=b"x")
    # RestoreObject is implemented (tests/api/test_restore.py): a local object is not archived.
    with pytest.raises(ClientError) as exc:
        s3.restore_object(Bucket=bucket, Key="n", RestoreRequest={"Days": 1})
    assert _err(exc) == ("InvalidObjectState", 403)
    calls = [
        lambda: s3.select_object_content(
            Bucket=bucket,
            Key="n",
            Expression="select * from s3object",
            ExpressionType="SQL",
            InputSerialization={"CSV": {}},
            OutputSerialization={"CSV": {}},
        ),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(ClientError) as exc:
            call()
        assert _err(exc) == ("NotImplemented", 501), i
    # Nothing was written by the refused requests.
    assert s3.get_object(Bucket=bucket, Key="n")["Body"].read() == b"x"


def test_storage_class(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="ia", Body=b"x", StorageClass="STANDARD_IA")
    assert s3.head_object(Bucket=bucket, Key="ia")["StorageClass"] == "STANDARD_IA"
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert listed[0]["StorageClass"] == "STANDARD_IA"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"x", StorageClass="NOPE")
    assert _err(exc) == ("InvalidStorageClass", 400)
