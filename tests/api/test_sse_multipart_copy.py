"""Encryption at rest over multipart uploads, copies, POST forms and batch/dataset reads (issue 16,
docs/encryption.md): every kind (plain, SSE-S3, SSE-KMS, SSE-C) through boto3 against a real
server started with the KMS keys ``testkey-1`` and ``testkey-2``; byte-exact reads, the headers
AWS answers on each operation, the SSE-C key errors of parts and copy sources, and the aws cli.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.sse_server import sse_server_fixtures
from tests.api.test_post_object import post
from tests.checkpoints.test_registry import write_checkpoint
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, aws_cli
from tests.s3http import signed_request
from tierstore.checkpoints import register_model
from tierstore.client import TierstoreClient, resolve_settings
from tierstore.datasets import RemoteSource

MiB = 1024 * 1024
KEY_A = bytes(range(32))  # SSE-C keys of the tests (a customer's; never stored by the server)
KEY_B = bytes(range(100, 132))
MARKER = b"MARKER-ssemp-plaintext-never-on-disk-0123456789"
PART_SIZES = (5 * MiB, 5 * MiB, MiB + 13)  # three parts, an odd last one
KINDS = ("plain", "s3", "kms", "c")


srv, s3 = sse_server_fixtures("ssemp")


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> TierstoreClient:
    return TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"e-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def write_args(kind: str, customer: bytes = KEY_A, kms_key: str = "testkey-1") -> dict[str, Any]:
    """boto3 arguments of a write that stores ``kind``."""
    if kind == "s3":
        return {"ServerSideEncryption": "AES256"}
    if kind == "kms":
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
    if kind == "c":
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer}
    return {}


def read_args(kind: str, customer: bytes = KEY_A) -> dict[str, Any]:
    """boto3 arguments of a read (or an UploadPart) of an object stored as ``kind``."""
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer} if kind == "c" else {}


def source_args(kind: str, customer: bytes = KEY_A) -> dict[str, Any]:
    """The copy-source SSE-C arguments of a copy from an object stored as ``kind``."""
    if kind != "c":
        return {}
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": customer}


def md5_b64(key: bytes) -> str:
    return base64.b64encode(hashlib.md5(key).digest()).decode()


def assert_kind(resp: dict[str, Any], kind: str, *, customer: bytes = KEY_A, kms_key: str = "testkey-1") -> None:
    """The encryption headers of an answer (GET, HEAD, PUT, Copy, Create, UploadPart) say ``kind``."""
    if kind == "plain":
        assert "ServerSideEncryption" not in resp and "SSECustomerAlgorithm" not in resp
    elif kind == "s3":
        assert resp["ServerSideEncryption"] == "AES256" and "SSEKMSKeyId" not in resp
    elif kind == "kms":
        assert resp["ServerSideEncryption"] == "aws:kms"
        assert resp["SSEKMSKeyId"].rsplit("/", 1)[-1] == kms_key  # the id, or its ARN
    else:
        assert "ServerSideEncryption" not in resp
        assert resp["SSECustomerAlgorithm"] == "AES256" and resp["SSECustomerKeyMD5"] == md5_b64(customer)


def body(s3: Any, bucket: str, key: str, kind: str, customer: bytes = KEY_A, **kw: Any) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key, **read_args(kind, customer), **kw)["Body"].read()
    return data


def code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    err = exc.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]


def multipart(
    s3: Any,
    bucket: str,
    key: str,
    kind: str,
    parts: list[bytes],
    *,
    stored: str | None = None,
    kms_key: str = "testkey-1",
) -> tuple[dict[str, Any], list[str]]:
    """Upload ``parts`` as one multipart object, asking for ``kind`` (``stored``: what the bucket
    default makes of it, if another): (the Complete answer, part ETags). Each answer's
    encryption headers are checked on the way."""
    created = s3.create_multipart_upload(Bucket=bucket, Key=key, **write_args(kind))
    assert_kind(created, stored or kind, kms_key=kms_key)
    upload = created["UploadId"]
    etags = []
    for n, data in enumerate(parts, 1):
        up = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=data, **read_args(kind))
        assert_kind(up, stored or kind, kms_key=kms_key)
        etags.append(up["ETag"])
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload)
    assert [p["Size"] for p in listed["Parts"]] == [len(p) for p in parts]
    assert [p["ETag"] for p in listed["Parts"]] == etags
    assert_kind(listed, "plain")  # ListParts answers no encryption headers (as AWS)
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, 1)]},
        **read_args(kind),
    )  # fmt: skip
    return done, etags


# --- multipart ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_multipart_of_every_kind_reads_back_whole_ranged_and_by_part(
    s3: Any, bucket: str, kind: str, rng: random.Random
) -> None:
    parts = [rng.randbytes(n) for n in PART_SIZES]
    whole = b"".join(parts)
    done, etags = multipart(s3, bucket, "mp", kind, parts)
    plain_md5s = [hashlib.md5(p).hexdigest() for p in parts]
    multipart_etag = '"' + hashlib.md5(b"".join(bytes.fromhex(m) for m in plain_md5s)).hexdigest() + '-3"'
    if kind in ("plain", "s3"):  # as AWS: part ETags are MD5s of the plaintext, the object's MD5 of those -N
        assert [t.strip('"') for t in etags] == plain_md5s and done["ETag"] == multipart_etag
    else:  # SSE-KMS / SSE-C: never the MD5 of the data, still the multipart shape
        assert not {t.strip('"') for t in etags} & set(plain_md5s)
        assert done["ETag"] != multipart_etag and done["ETag"].endswith('-3"')
    if kind in ("s3", "kms"):
        assert_kind(done, kind)  # CompleteMultipartUpload: SSE and KMS, never the SSE-C pair
    assert "SSECustomerAlgorithm" not in done

    head = s3.head_object(Bucket=bucket, Key="mp", **read_args(kind))
    assert head["ContentLength"] == len(whole) and head["ETag"] == done["ETag"]
    assert_kind(head, kind)
    got = s3.get_object(Bucket=bucket, Key="mp", **read_args(kind))
    assert_kind(got, kind)
    assert got["Body"].read() == whole
    # Ranges inside one package, across package and part boundaries, the tail, a suffix.
    edge = PART_SIZES[0]
    for first, last in [(0, 0), (70_000, 70_100), (edge - 5, edge + 5), (edge - 1, 2 * edge + 70_000),
                        (len(whole) - 20, len(whole) - 1), (65_535, 65_536)]:  # fmt: skip
        data = body(s3, bucket, "mp", kind, Range=f"bytes={first}-{last}")
        assert data == whole[first : last + 1], (first, last)
    assert body(s3, bucket, "mp", kind, Range="bytes=-77") == whole[-77:]
    offset = 0
    for n, part in enumerate(parts, 1):
        got = s3.get_object(Bucket=bucket, Key="mp", PartNumber=n, **read_args(kind))
        assert got["PartsCount"] == 3 and got["ContentRange"] == f"bytes {offset}-{offset + len(part) - 1}/{len(whole)}"
        assert got["Body"].read() == part
        offset += len(part)


def test_a_retried_part_replaces_the_first_attempt(s3: Any, bucket: str, rng: random.Random) -> None:
    created = s3.create_multipart_upload(Bucket=bucket, Key="k", **write_args("kms"))
    upload = created["UploadId"]
    first, second, tail = rng.randbytes(5 * MiB), rng.randbytes(5 * MiB), rng.randbytes(1000)
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=first)
    e1 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=second)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=2, Body=tail)["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )  # fmt: skip
    assert body(s3, bucket, "k", "kms") == second + tail


def test_sse_c_parts_must_carry_the_uploads_key(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="c", **write_args("c"))["UploadId"]
    with pytest.raises(ClientError) as exc:  # no key: AWS's 400
        s3.upload_part(Bucket=bucket, Key="c", UploadId=upload, PartNumber=1, Body=b"x")
    assert code(exc) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as exc:  # another key: 403
        s3.upload_part(Bucket=bucket, Key="c", UploadId=upload, PartNumber=1, Body=b"x", **read_args("c", KEY_B))
    assert code(exc) == (403, "AccessDenied")
    plain = s3.create_multipart_upload(Bucket=bucket, Key="p")["UploadId"]
    with pytest.raises(ClientError) as exc:  # a key for an upload that is not SSE-C
        s3.upload_part(Bucket=bucket, Key="p", UploadId=plain, PartNumber=1, Body=b"x", **read_args("c"))
    assert code(exc) == (400, "InvalidRequest")
    assert s3.list_parts(Bucket=bucket, Key="c", UploadId=upload).get("Parts", []) == []  # nothing stored
    s3.put_object(Bucket=bucket, Key="src", Body=b"copied")
    with pytest.raises(ClientError) as exc:  # UploadPartCopy into it: the destination key too
        s3.upload_part_copy(Bucket=bucket, Key="c", UploadId=upload, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "src"})  # fmt: skip
    assert code(exc) == (400, "InvalidRequest")
    etag = s3.upload_part(Bucket=bucket, Key="c", UploadId=upload, PartNumber=1, Body=b"x", **read_args("c"))["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    for extra, expected in [({}, (400, "InvalidRequest")), (read_args("c", KEY_B), (403, "AccessDenied"))]:
        with pytest.raises(ClientError) as exc:  # the completion computes the MAC: it needs the key
            s3.complete_multipart_upload(Bucket=bucket, Key="c", UploadId=upload, MultipartUpload=parts, **extra)
        assert code(exc) == expected
    s3.complete_multipart_upload(Bucket=bucket, Key="c", UploadId=upload, MultipartUpload=parts, **read_args("c"))
    assert body(s3, bucket, "c", "c") == b"x"


def test_parts_may_repeat_their_uploads_encryption_never_name_another(
    srv: ServerProcess, s3: Any, bucket: str
) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k", **write_args("s3"))["UploadId"]
    query = [("partNumber", "1"), ("uploadId", upload)]

    def part(sse: str) -> Any:
        return signed_request(srv, "PUT", f"/{bucket}/k", b"part", query=query,
                              headers={"x-amz-server-side-encryption": sse})  # fmt: skip

    same = part("AES256")
    assert same.status == 200 and same.headers["x-amz-server-side-encryption"] == "AES256"
    other = part("aws:kms")
    assert other.status == 400 and b"InvalidArgument" in other.body
    assert [p["ETag"] for p in s3.list_parts(Bucket=bucket, Key="k", UploadId=upload)["Parts"]] == [
        same.headers["etag"]
    ]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    bucket_sse = signed_request(srv, "PUT", f"/{bucket}-x", headers={"x-amz-server-side-encryption": "AES256"})
    assert bucket_sse.status == 400 and b"InvalidArgument" in bucket_sse.body  # CreateBucket: never ignored
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=f"{bucket}-x")


def test_bucket_default_applies_to_multipart_and_no_plaintext_reaches_the_drives(
    s3: Any, bucket: str, srv: ServerProcess, rng: random.Random
) -> None:
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "testkey-2"}}
            ]
        },
    )
    parts = [rng.randbytes(5 * MiB - 200) + MARKER * 4 + rng.randbytes(200), MARKER + rng.randbytes(3000)]
    done, _ = multipart(s3, bucket, "dflt", "plain", parts, stored="kms", kms_key="testkey-2")  # names none
    assert_kind(done, "kms", kms_key="testkey-2")
    assert_kind(s3.head_object(Bucket=bucket, Key="dflt"), "kms", kms_key="testkey-2")
    assert body(s3, bucket, "dflt", "kms") == b"".join(parts)
    for path in srv.data_dir.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path


def test_versions_of_encrypted_multipart_objects_and_copies_of_old_versions(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first, second = [os.urandom(5 * MiB), b"one"], [os.urandom(5 * MiB), b"two"]
    v1 = multipart(s3, bucket, "k", "kms", first)[0]["VersionId"]
    v2 = multipart(s3, bucket, "k", "c", second)[0]["VersionId"]
    assert v1 != v2 and "null" not in (v1, v2)
    assert body(s3, bucket, "k", "kms", VersionId=v1) == b"".join(first)
    assert body(s3, bucket, "k", "c", VersionId=v2, Range="bytes=5242878-5242881") == second[0][-2:] + b"tw"
    copied = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k", "VersionId": v1},
                            **write_args("s3"))  # fmt: skip
    assert copied["CopySourceVersionId"] == v1 and copied["VersionId"] not in (v1, v2)
    assert_kind(s3.head_object(Bucket=bucket, Key="k"), "s3")
    assert body(s3, bucket, "k", "s3") == b"".join(first)
    assert body(s3, bucket, "k", "c", VersionId=v2) == b"".join(second)  # the old versions stay as they were


# --- copies ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources(s3: Any) -> tuple[str, dict[str, bytes]]:
    """One object of each kind (several packages; one also multipart), in a bucket of their own."""
    name = f"src-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    bodies = {}
    for kind in KINDS:
        bodies[kind] = os.urandom(200_007)
        s3.put_object(Bucket=name, Key=kind, Body=bodies[kind], **write_args(kind))
    return name, bodies


@pytest.mark.parametrize("dst", KINDS)
@pytest.mark.parametrize("src", KINDS)
def test_copy_between_every_pair_of_kinds(s3: Any, bucket: str, sources: tuple[str, dict[str, bytes]], src: str,
                                          dst: str) -> None:  # fmt: skip
    src_bucket, bodies = sources
    copied = s3.copy_object(
        Bucket=bucket, Key="dst", CopySource={"Bucket": src_bucket, "Key": src},
        **write_args(dst, customer=KEY_B), **source_args(src),
    )  # fmt: skip
    assert_kind(copied, dst, customer=KEY_B)
    etag = copied["CopyObjectResult"]["ETag"]
    plain_md5 = '"' + hashlib.md5(bodies[src]).hexdigest() + '"'
    assert (etag == plain_md5) == (dst in ("plain", "s3")), etag  # SSE-KMS/SSE-C: never the MD5
    got = s3.get_object(Bucket=bucket, Key="dst", **read_args(dst, KEY_B))
    assert_kind(got, dst, customer=KEY_B)
    assert got["ETag"] == etag and got["Body"].read() == bodies[src]
    assert body(s3, bucket, "dst", dst, KEY_B, Range="bytes=65530-131080") == bodies[src][65530:131081]
    assert body(s3, src_bucket, src, src) == bodies[src]  # the source is untouched


@pytest.mark.parametrize(("src", "dst"), [("kms", "c"), ("c", "plain"), ("plain", "s3"), ("s3", "kms")])
def test_copies_of_small_inline_objects(s3: Any, bucket: str, src: str, dst: str) -> None:
    data = os.urandom(1000)  # stored in the catalog (docs/inline.md), as ciphertext when encrypted
    s3.put_object(Bucket=bucket, Key="small", Body=data, **write_args(src))
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "small"},
                   **write_args(dst, KEY_B), **source_args(src))  # fmt: skip
    got = s3.get_object(Bucket=bucket, Key="copy", **read_args(dst, KEY_B))
    assert_kind(got, dst, customer=KEY_B)
    assert got["Body"].read() == data
    assert body(s3, bucket, "copy", dst, KEY_B, Range="bytes=10-19") == data[10:20]


def test_copy_onto_itself_rotates_an_sse_c_key_and_keeps_metadata(s3: Any, bucket: str) -> None:
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="k", Body=data, Metadata={"a": "1"}, Tagging="t=1", **write_args("c"))
    s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k"},
                   **write_args("c", KEY_B), **source_args("c", KEY_A))  # fmt: skip
    assert body(s3, bucket, "k", "c", KEY_B) == data
    head = s3.head_object(Bucket=bucket, Key="k", **read_args("c", KEY_B))
    assert head["Metadata"] == {"a": "1"}
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [{"Key": "t", "Value": "1"}]
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k", **read_args("c", KEY_A))  # the old key no longer opens it
    assert code(exc)[0] == 403


def _blobs(srv: ServerProcess, bucket: str, key: str) -> list[list[Any]]:
    """The blob references of the current version of ``key`` (from the catalog file)."""
    path = next(srv.data_dir.rglob("catalog.db"))
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        row = db.execute(
            "SELECT blobs FROM versions WHERE bucket=? AND key=? AND is_latest=1", (bucket, key.encode())
        ).fetchone()
    return list(json.loads(row[0]))


def test_copies_to_sse_c_share_the_sources_bytes(
    srv: ServerProcess, s3: Any, bucket: str, rng: random.Random
) -> None:
    """An encrypted source copied to SSE-C keeps its bytes (its data key re-wrapped under the
    customer's key): the destination references the very same blobs; an SSE-S3 multipart source
    (plaintext-MD5 part ETags) is the exception and is re-written."""
    data = rng.randbytes(300_001)
    for src in ("kms", "s3", "c"):
        s3.put_object(Bucket=bucket, Key=f"src-{src}", Body=data, **write_args(src))
    parts = [rng.randbytes(5 * MiB), rng.randbytes(777)]
    multipart(s3, bucket, "src-mp-kms", "kms", parts)
    multipart(s3, bucket, "src-mp-s3", "s3", parts)
    for src, kind, shared in [("src-kms", "kms", True), ("src-s3", "s3", True), ("src-c", "c", True),
                              ("src-mp-kms", "kms", True), ("src-mp-s3", "s3", False)]:  # fmt: skip
        copied = s3.copy_object(Bucket=bucket, Key=f"to-c-{src}", CopySource={"Bucket": bucket, "Key": src},
                                **write_args("c", KEY_B), **source_args(kind))  # fmt: skip
        assert_kind(copied, "c", customer=KEY_B)
        assert (_blobs(srv, bucket, f"to-c-{src}") == _blobs(srv, bucket, src)) == shared, src
        expected = b"".join(parts) if "mp" in src else data
        got = s3.get_object(Bucket=bucket, Key=f"to-c-{src}", **read_args("c", KEY_B))
        assert got["Body"].read() == expected and got["ETag"] == copied["CopyObjectResult"]["ETag"], src
        assert body(s3, bucket, f"to-c-{src}", "c", KEY_B, Range="bytes=65530-65545") == expected[65530:65546]
        with pytest.raises(ClientError) as exc:  # the source's key does not open the copy
            s3.head_object(Bucket=bucket, Key=f"to-c-{src}", **read_args("c", KEY_A))
        assert code(exc)[0] == 403
    assert body(s3, bucket, "to-c-src-mp-kms", "c", KEY_B, PartNumber=2) == parts[1]
    s3.delete_object(Bucket=bucket, Key="src-kms")  # the shared bytes outlive the source
    assert body(s3, bucket, "to-c-src-kms", "c", KEY_B) == data


def test_copy_source_sse_c_key_errors(s3: Any, bucket: str, sources: tuple[str, dict[str, bytes]]) -> None:
    src_bucket, _ = sources
    cases = [
        ("c", {}, (400, "InvalidRequest")),  # an SSE-C source without its key
        ("c", source_args("c", KEY_B), (403, "AccessDenied")),  # with another key
        ("s3", source_args("c"), (400, "InvalidRequest")),  # a key for a source that is not SSE-C
    ]
    for src, extra, expected in cases:
        with pytest.raises(ClientError) as exc:
            s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": src_bucket, "Key": src}, **extra)
        assert code(exc) == expected, (src, extra)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="y")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket=bucket, Key="y", UploadId=upload, PartNumber=1,
                            CopySource={"Bucket": src_bucket, "Key": "c"})  # fmt: skip
    assert code(exc) == (400, "InvalidRequest")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="x")


def test_upload_part_copy_from_encrypted_sources_with_ranges(
    s3: Any, bucket: str, sources: tuple[str, dict[str, bytes]], rng: random.Random
) -> None:
    src_bucket, bodies = sources
    big = rng.randbytes(5 * MiB + 70_001)
    s3.put_object(Bucket=bucket, Key="big-c", Body=big, **write_args("c"))
    big_s3 = rng.randbytes(5 * MiB + 3)
    s3.put_object(Bucket=bucket, Key="big-s3", Body=big_s3, **write_args("s3"))
    created = s3.create_multipart_upload(Bucket=bucket, Key="mp", **write_args("c", KEY_B))
    upload = created["UploadId"]
    first = s3.upload_part_copy(
        Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, CopySource={"Bucket": bucket, "Key": "big-c"},
        CopySourceRange=f"bytes=1-{5 * MiB}", **read_args("c", KEY_B), **source_args("c"),
    )  # fmt: skip
    assert_kind(first, "c", customer=KEY_B)
    second = s3.upload_part_copy(
        Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, CopySource={"Bucket": bucket, "Key": "big-s3"},
        **read_args("c", KEY_B),
    )  # fmt: skip
    third = s3.upload_part_copy(
        Bucket=bucket, Key="mp", UploadId=upload, PartNumber=3, CopySource={"Bucket": src_bucket, "Key": "kms"},
        CopySourceRange="bytes=65000-140000", **read_args("c", KEY_B),
    )  # fmt: skip
    etags = [r["CopyPartResult"]["ETag"] for r in (first, second, third)]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload, **read_args("c", KEY_B),
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, 1)]},
    )  # fmt: skip
    expected = big[1 : 5 * MiB + 1] + big_s3 + bodies["kms"][65000:140001]
    assert body(s3, bucket, "mp", "c", KEY_B) == expected
    assert body(s3, bucket, "mp", "c", KEY_B, PartNumber=3) == bodies["kms"][65000:140001]


# --- POST forms ----------------------------------------------------------------------------------
def _form(s3: Any, bucket: str, key: str, fields: dict[str, str]) -> list[tuple[str, str]]:
    conditions: list[Any] = [{k: v} for k, v in fields.items()]
    signed = s3.generate_presigned_post(bucket, key, Fields=fields, Conditions=conditions)
    return list(signed["fields"].items())


def test_post_forms_with_sse_fields_and_the_bucket_default(srv: ServerProcess, s3: Any, bucket: str) -> None:
    kms = {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": "testkey-2"}
    customer = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(KEY_A).decode(),
        "x-amz-server-side-encryption-customer-key-MD5": md5_b64(KEY_A),
    }
    forms = {
        "s3": ({"x-amz-server-side-encryption": "AES256"}, {}),
        "kms": (kms, {"kms_key": "testkey-2"}),
        "c": (customer, {}),
    }
    for kind, (fields, expect) in forms.items():
        data = MARKER + kind.encode() * 1000
        resp = post(srv, bucket, _form(s3, bucket, f"post-{kind}", fields), data)
        assert resp.status == 204, resp.body
        head = s3.head_object(Bucket=bucket, Key=f"post-{kind}", **read_args(kind))
        assert_kind(head, kind, **expect)
        assert body(s3, bucket, f"post-{kind}", kind) == data
    resp = post(srv, bucket, _form(s3, bucket, "post-c", {**customer, "x-amz-server-side-encryption-customer-key":
                base64.b64encode(KEY_B).decode()}), b"x")  # fmt: skip
    assert resp.status == 400  # the MD5 field no longer matches the key
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    assert post(srv, bucket, _form(s3, bucket, "post-default", {}), b"by default").status == 204
    assert_kind(s3.head_object(Bucket=bucket, Key="post-default"), "s3")
    assert body(s3, bucket, "post-default", "s3") == b"by default"


# --- batch reads and datasets -----------------------------------------------------------------------
def test_a_dataset_of_encrypted_objects_reads_byte_exact_through_the_batch_api(
    s3: Any, bucket: str, srv: ServerProcess, client: TierstoreClient, rng: random.Random
) -> None:
    bodies: dict[str, bytes] = {}
    for i, size in enumerate([0, 700, 16 * 1024 + 1, 200_000]):  # inline and blob bodies
        bodies[f"train/{i}"] = rng.randbytes(size)
        s3.put_object(
            Bucket=bucket, Key=f"train/{i}", Body=bodies[f"train/{i}"], **write_args("s3" if i % 2 else "kms")
        )
    parts = [rng.randbytes(5 * MiB), rng.randbytes(333)]
    multipart(s3, bucket, "train/mp", "s3", parts)
    bodies["train/mp"] = b"".join(parts)
    name = f"ds-{uuid.uuid4().hex[:10]}"
    rec = client.create_dataset(name, bucket=bucket, prefix="train/")
    assert rec["rows"] == len(bodies) and rec["bytes"] == sum(map(len, bodies.values()))
    source = RemoteSource(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    manifest = source.open_manifest(name)
    keys = manifest.column("key")
    order = [*range(len(keys))] * 2
    rng.shuffle(order)
    got = list(source.read_rows(manifest.ref, order))
    assert [data for _, data in got] == [bodies[keys[r]] for r in order]
    # By key: SSE-S3/KMS transparently; an SSE-C object is a clear per-entry error, not a crash.
    s3.put_object(Bucket=bucket, Key="secret", Body=b"needs its key", **write_args("c"))
    entries = [{"bucket": bucket, "key": k} for k in ("train/1", "secret", "train/mp")]
    entries.append({"bucket": bucket, "key": "train/mp", "range": f"bytes={5 * MiB - 3}-{5 * MiB + 2}"})
    items = list(client.read_many(entries))
    assert items[0].ok and items[0].data == bodies["train/1"]
    assert not items[1].ok and items[1].status == 400
    assert items[2].ok and items[2].data == bodies["train/mp"]
    assert items[3].data == bodies["train/mp"][5 * MiB - 3 : 5 * MiB + 3]


def test_a_dataset_row_of_an_sse_c_object_is_a_per_row_error(s3: Any, bucket: str, client: TierstoreClient) -> None:
    s3.put_object(Bucket=bucket, Key="d/0", Body=b"plain row")
    s3.put_object(Bucket=bucket, Key="d/1", Body=b"customer row", **write_args("c"))
    s3.put_object(Bucket=bucket, Key="d/2", Body=b"kms row", **write_args("kms"))
    name = f"ds-{uuid.uuid4().hex[:10]}"
    client.create_dataset(name, bucket=bucket, prefix="d/")
    items = list(client.read_rows(f"{name}@1", [0, 1, 2, 1]))
    assert [i.status for i in items] == [200, 400, 200, 400]
    assert items[0].data == b"plain row" and items[2].data == b"kms row"
    assert items[1].error is not None and items[1].error["code"] == "InvalidRequest"
    assert b"customer row" not in items[1].data


def test_a_model_pulled_from_an_encrypted_checkpoint_reads_byte_exact(
    s3: Any, bucket: str, client: TierstoreClient
) -> None:
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "testkey-1"}}
            ]
        },
    )
    weights = {"a.bin": os.urandom(300_000), "b.bin": b"small"}
    key, commit = write_checkpoint(s3, bucket, "ck", 4, weights, metrics={"acc": 0.9})
    assert_kind(s3.head_object(Bucket=bucket, Key=key), "kms")  # the checkpoint's files are encrypted
    rec = register_model(client, f"m-{uuid.uuid4().hex[:10]}", f"s3://{bucket}/ck")
    items = list(client.read_model_rows(rec["ref"], [2, 0, 1]))
    assert [i.data for i in items] == [commit, weights["a.bin"], weights["b.bin"]]


# --- the aws cli ----------------------------------------------------------------------------------
def test_aws_cli_multipart_copy_with_sse_kms(srv: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = home / "config"
    config.write_text("[default]\ns3 =\n  multipart_threshold = 5MB\n  multipart_chunksize = 5MB\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "AWS_CONFIG_FILE": str(config),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"), "AWS_EC2_METADATA_DISABLED": "true", "AWS_PAGER": "",
    }  # fmt: skip
    src = tmp_path / "big.bin"
    data = os.urandom(20 * MiB)
    src.write_bytes(data)

    def aws(*args: str) -> None:
        done = subprocess.run([aws_cli(), "--endpoint-url", srv.endpoint, *args], env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr

    aws("s3", "cp", str(src), f"s3://{bucket}/big.bin", "--sse", "aws:kms", "--sse-kms-key-id", "testkey-1")
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert_kind(head, "kms")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-4"')  # four 5 MiB parts
    aws("s3", "cp", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    # SSE-C through the cli's multipart: every part and the completion carry the key
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(KEY_A)
    sse_c = ["--sse-c", "AES256", "--sse-c-key", f"fileb://{key_file}"]
    aws("s3", "cp", str(src), f"s3://{bucket}/big-c.bin", *sse_c)
    head = s3.head_object(Bucket=bucket, Key="big-c.bin", **read_args("c"))
    assert_kind(head, "c")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-4"')
    aws("s3", "cp", f"s3://{bucket}/big-c.bin", str(tmp_path / "back-c.bin"), *sse_c)
    assert (tmp_path / "back-c.bin").read_bytes() == data
