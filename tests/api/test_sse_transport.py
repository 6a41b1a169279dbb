"""Encryption requests AWS refuses for how they arrive (issue 16), through boto3 over HTTP:

- SSE-C over plain HTTP: any request carrying a customer key (or a copy source's) is 400
  ``InvalidRequest`` unless the server runs with ``--sse-c-over-http`` — both ways here;
- SSE-KMS signed with SigV2 (headers or a presigned URL): 400 ``InvalidArgument`` on every read
  and write of a KMS object or upload — PutObject, CreateMultipartUpload, UploadPart,
  UploadPartCopy (either side), CompleteMultipartUpload, CopyObject (either side), GET, HEAD —
  while SigV2 still reads and writes SSE-S3 and plain objects."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.sse_server import sse_server_fixtures
from tests.api.test_post_object import absent, post, presigned
from tests.conftest import ServerProcess, make_client
from tests.s3http import assert_error, fetch, signed_request

srv, s3 = sse_server_fixtures("ssetransport")

KEY = bytes(range(32))
SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}
COPY_SSE_C = {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": KEY}
KMS = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "testkey-1"}
INSECURE = (
    "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection."
)
NEEDS_V4 = "Requests specifying Server Side Encryption with AWS KMS managed keys require AWS Signature Version 4."


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default: SSE-C only over TLS, which plain HTTP never is."""
    server = ServerProcess(tmp_path_factory.mktemp("strict") / "data")
    server.start()
    yield server
    server.stop()


def refused(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as exc:
        call()
    return {"status": exc.value.response["ResponseMetadata"]["HTTPStatusCode"], **exc.value.response["Error"]}


# --- SSE-C over plain HTTP -------------------------------------------------------------------------
def test_sse_c_over_plain_http_is_refused_by_default(strict: ServerProcess) -> None:
    c = make_client(strict.endpoint)
    c.create_bucket(Bucket="strict")
    c.put_object(Bucket="strict", Key="plain", Body=b"plain")  # no customer key: served as ever
    upload = c.create_multipart_upload(Bucket="strict", Key="mp")["UploadId"]
    calls = {
        "PutObject": lambda: c.put_object(Bucket="strict", Key="k", Body=b"secret", **SSE_C),
        "GetObject": lambda: c.get_object(Bucket="strict", Key="plain", **SSE_C),
        "CopyObject (source key)": lambda: c.copy_object(
            Bucket="strict", Key="k", CopySource={"Bucket": "strict", "Key": "plain"}, **COPY_SSE_C
        ),
        "CreateMultipartUpload": lambda: c.create_multipart_upload(Bucket="strict", Key="k", **SSE_C),
        "UploadPart": lambda: c.upload_part(
            Bucket="strict", Key="mp", UploadId=upload, PartNumber=1, Body=b"part", **SSE_C
        ),
        "GetObject of a missing bucket": lambda: c.get_object(Bucket="no-such-strict", Key="k", **SSE_C),
    }
    for name, call in calls.items():
        error = refused(call)
        assert (error["status"], error["Code"], error["Message"]) == (400, "InvalidRequest", INSECURE), name
    assert refused(lambda: c.head_object(Bucket="strict", Key="plain", **SSE_C))["status"] == 400  # no body
    # Any one of the headers is enough (the key might be in it); nothing was stored.
    r = signed_request(strict, "PUT", "/strict/k", b"x", headers={"x-amz-server-side-encryption-customer-key-MD5": "x"})
    assert_error(r, 400, "InvalidRequest")
    form = presigned(c, "strict", "k", Fields={"x-amz-server-side-encryption-customer-algorithm": "AES256"},
                     Conditions=[{"x-amz-server-side-encryption-customer-algorithm": "AES256"}])  # fmt: skip
    assert_error(post(strict, "strict", form, b"x"), 400, "InvalidRequest")
    assert absent(c, "strict", "k")
    assert c.list_parts(Bucket="strict", Key="mp", UploadId=upload).get("Parts", []) == []
    assert c.get_object(Bucket="strict", Key="plain")["Body"].read() == b"plain"
    assert base64.b64encode(KEY).decode() not in strict.log()


def test_sse_c_over_plain_http_with_the_option(srv: ServerProcess, s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"secret", **SSE_C)
    assert put["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(KEY).digest()).decode()
    assert s3.get_object(Bucket=bucket, Key="k", **SSE_C)["Body"].read() == b"secret"
    assert s3.head_object(Bucket=bucket, Key="k", **SSE_C)["ContentLength"] == 6
    s3.copy_object(Bucket=bucket, Key="s3", CopySource={"Bucket": bucket, "Key": "k"}, ServerSideEncryption="AES256",
                   **COPY_SSE_C)  # fmt: skip
    assert s3.get_object(Bucket=bucket, Key="s3")["Body"].read() == b"secret"


# --- SSE-KMS and SigV2 -----------------------------------------------------------------------------
def test_sse_kms_needs_sigv4_on_every_read_and_write(srv: ServerProcess, s3: Any, bucket: str) -> None:
    v2 = make_client(srv.endpoint, signature_version="s3")
    body = b"k" * 70_000
    s3.put_object(Bucket=bucket, Key="kms", Body=body, **KMS)
    s3.put_object(Bucket=bucket, Key="s3", Body=body, ServerSideEncryption="AES256")
    kms_upload = s3.create_multipart_upload(Bucket=bucket, Key="mp-kms", **KMS)["UploadId"]
    plain_upload = s3.create_multipart_upload(Bucket=bucket, Key="mp-plain")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp-kms", UploadId=kms_upload, PartNumber=1, Body=b"p" * 100)
    complete = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}

    def source(key: str) -> dict[str, str]:
        return {"Bucket": bucket, "Key": key}

    calls = {
        "GetObject": lambda: v2.get_object(Bucket=bucket, Key="kms"),
        "ranged GetObject": lambda: v2.get_object(Bucket=bucket, Key="kms", Range="bytes=10-20"),
        "PutObject": lambda: v2.put_object(Bucket=bucket, Key="new", Body=b"x", **KMS),
        "CreateMultipartUpload": lambda: v2.create_multipart_upload(Bucket=bucket, Key="new", **KMS),
        "UploadPart of a KMS upload": lambda: v2.upload_part(
            Bucket=bucket, Key="mp-kms", UploadId=kms_upload, PartNumber=2, Body=b"x"
        ),
        "UploadPartCopy into a KMS upload": lambda: v2.upload_part_copy(
            Bucket=bucket, Key="mp-kms", UploadId=kms_upload, PartNumber=2, CopySource=source("s3")
        ),
        "UploadPartCopy from a KMS source": lambda: v2.upload_part_copy(
            Bucket=bucket, Key="mp-plain", UploadId=plain_upload, PartNumber=1, CopySource=source("kms")
        ),
        "CompleteMultipartUpload of a KMS upload": lambda: v2.complete_multipart_upload(
            Bucket=bucket, Key="mp-kms", UploadId=kms_upload, MultipartUpload=complete
        ),
        "CopyObject into KMS": lambda: v2.copy_object(Bucket=bucket, Key="new", CopySource=source("s3"), **KMS),
        "CopyObject from a KMS source": lambda: v2.copy_object(Bucket=bucket, Key="new", CopySource=source("kms")),
    }
    for name, call in calls.items():
        error = refused(call)
        assert (error["status"], error["Code"], error["Message"]) == (400, "InvalidArgument", NEEDS_V4), name
        assert error["ArgumentName"] == "Authorization", name
    assert refused(lambda: v2.head_object(Bucket=bucket, Key="kms"))["status"] == 400
    url = v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "kms"})
    assert_error(fetch(url), 400, "InvalidArgument")
    assert absent(s3, bucket, "new")
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="mp-kms", UploadId=kms_upload)["Parts"]] == [1]
    assert s3.list_parts(Bucket=bucket, Key="mp-plain", UploadId=plain_upload).get("Parts", []) == []

    # SigV2 still reads and writes what is not under KMS; SigV4 does everything refused above.
    assert v2.get_object(Bucket=bucket, Key="s3")["Body"].read() == body
    assert v2.head_object(Bucket=bucket, Key="s3")["ServerSideEncryption"] == "AES256"
    assert v2.put_object(Bucket=bucket, Key="v2", Body=b"x", ServerSideEncryption="AES256")["ETag"]
    v2.upload_part(Bucket=bucket, Key="mp-plain", UploadId=plain_upload, PartNumber=1, Body=b"plain part")
    assert s3.get_object(Bucket=bucket, Key="kms", Range="bytes=10-20")["Body"].read() == body[10:21]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp-kms", UploadId=kms_upload, MultipartUpload=complete)
    assert s3.get_object(Bucket=bucket, Key="mp-kms")["Body"].read() == b"p" * 100
    s3.copy_object(Bucket=bucket, Key="new", CopySource=source("kms"))
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == body
    s3.abort_multipart_upload(Bucket=bucket, Key="mp-plain", UploadId=plain_upload)
