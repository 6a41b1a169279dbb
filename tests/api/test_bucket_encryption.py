"""Bucket default encryption end to end (boto3, raw HTTP, the aws cli once): Put/Get/Delete-
BucketEncryption, S3's errors, the IAM actions, writes into a bucket with a default (PutObject
encrypts; the writes of the next slice are refused: never stored in clear), and a bucket policy that requires
``x-amz-server-side-encryption``."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.test_acl import new_user
from tests.api.test_post_object import absent, post, presigned
from tests.conftest import ServerProcess, make_client
from tests.s3http import assert_error, signed_request
from tests.test_clients import Aws

ENC = [("encryption", "")]
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
NOT_FOUND = (404, "ServerSideEncryptionConfigurationNotFoundError")


def rules(algorithm: str, key_id: str | None = None, *, bucket_key: bool | None = None) -> dict[str, Any]:
    by_default = {"SSEAlgorithm": algorithm, **({"KMSMasterKeyID": key_id} if key_id else {})}
    rule: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": by_default}
    if bucket_key is not None:
        rule["BucketKeyEnabled"] = bucket_key
    return {"Rules": [rule]}


def err(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as exc:
        call()
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"], exc.value.response["Error"]["Code"]


def test_put_get_delete(s3: Any, bucket: str) -> None:
    assert err(lambda: s3.get_bucket_encryption(Bucket=bucket)) == NOT_FOUND
    r = s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rules("AES256"))
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    got = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert got == rules("AES256", bucket_key=False)  # BucketKeyEnabled always answered
    # A second put replaces the first.
    kms = rules("aws:kms", "testkey-1", bucket_key=True)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=kms)
    got = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert got == kms
    for _ in range(2):  # none left: 204 again, as S3
        assert s3.delete_bucket_encryption(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert err(lambda: s3.get_bucket_encryption(Bucket=bucket)) == NOT_FOUND


def _config(rule: str) -> bytes:
    return f"<ServerSideEncryptionConfiguration {NS}>{rule}</ServerSideEncryptionConfiguration>".encode()


BY_DEFAULT = "<ApplyServerSideEncryptionByDefault><SSEAlgorithm>{}</SSEAlgorithm>{}</Apply" + (
    "ServerSideEncryptionByDefault>"
)
BAD: dict[str, tuple[bytes, int, str]] = {
    "no rule": (_config(""), 400, "MalformedXML"),
    "two rules": (_config(2 * f"<Rule>{BY_DEFAULT.format('AES256', '')}</Rule>"), 400, "MalformedXML"),
    "unknown algorithm": (_config(f"<Rule>{BY_DEFAULT.format('AES128', '')}</Rule>"), 400, "MalformedXML"),
    "key id with AES256": (
        _config(f"<Rule>{BY_DEFAULT.format('AES256', '<KMSMasterKeyID>k</KMSMasterKeyID>')}</Rule>"),
        400, "InvalidArgument",
    ),
    "not XML": (b"<ServerSideEncryptionConfiguration><Rule>", 400, "MalformedXML"),
    "blocks SSE-S3": (
        _config(f"<Rule>{BY_DEFAULT.format('AES256', '')}<BlockedEncryptionTypes><EncryptionType>SSE-S3"
                "</EncryptionType></BlockedEncryptionTypes></Rule>"),
        400, "MalformedXML",
    ),
}  # fmt: skip


def test_bad_configurations_change_nothing(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rules("AES256"))
    for case, (body, status, code) in BAD.items():
        fields = assert_error(signed_request(server, "PUT", f"/{bucket}", body, query=ENC), status, code)
        if code == "InvalidArgument":
            assert fields["ArgumentName"] == "ApplyServerSideEncryptionByDefault", case
    got = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert got["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}


def test_no_such_bucket_comes_first(server: ServerProcess, s3: Any) -> None:
    assert err(lambda: s3.get_bucket_encryption(Bucket="no-such-bucket-enc")) == (404, "NoSuchBucket")
    assert err(lambda: s3.delete_bucket_encryption(Bucket="no-such-bucket-enc")) == (404, "NoSuchBucket")
    r = signed_request(server, "PUT", "/no-such-bucket-enc", _config(""), query=ENC)  # a bad document too
    assert_error(r, 404, "NoSuchBucket")


def test_iam_actions(server: ServerProcess, s3: Any, bucket: str) -> None:
    """GetBucketEncryption needs s3:GetEncryptionConfiguration; Put and Delete need
    s3:PutEncryptionConfiguration (there is no Delete action, as AWS)."""
    arn = f"arn:aws:s3:::{bucket}"
    reader = new_user(server, json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetEncryptionConfiguration", "Resource": arn}]}))  # fmt: skip
    writer = new_user(server, json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:PutEncryptionConfiguration", "Resource": arn}]}))  # fmt: skip
    aes = rules("AES256")
    assert err(lambda: reader.get_bucket_encryption(Bucket=bucket)) == NOT_FOUND
    assert err(lambda: writer.get_bucket_encryption(Bucket=bucket)) == (403, "AccessDenied")
    assert err(lambda: reader.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=aes)) == (
        403, "AccessDenied"
    )  # fmt: skip
    writer.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=aes)
    assert reader.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert err(lambda: reader.delete_bucket_encryption(Bucket=bucket)) == (403, "AccessDenied")
    writer.delete_bucket_encryption(Bucket=bucket)
    assert err(lambda: s3.get_bucket_encryption(Bucket=bucket)) == NOT_FOUND


@pytest.mark.parametrize("config", [rules("AES256"), rules("aws:kms", "testkey-1", bucket_key=True)])
def test_writes_into_a_bucket_with_a_default_are_encrypted_or_refused_never_stored_in_clear(
    server: ServerProcess, s3: Any, bucket: str, config: dict[str, Any]
) -> None:
    """Every write that makes an object or an upload (PutObject, CopyObject,
    CreateMultipartUpload, POST) takes the default: stored encrypted (SSE-S3), or, for a KMS key
    the session server lacks, the key service's 400 and nothing stored. An upload begun before
    the default keeps going in clear (its encryption was fixed then)."""
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="early")["UploadId"]
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=config)
    if config["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256":
        put = s3.put_object(Bucket=bucket, Key="put", Body=b"personal data")
        assert put["ServerSideEncryption"] == "AES256"
        got = s3.get_object(Bucket=bucket, Key="put")
        assert got["Body"].read() == b"personal data" and got["ServerSideEncryption"] == "AES256"
        s3.delete_object(Bucket=bucket, Key="put")
    else:  # the session server has no key testkey-1
        put = lambda: s3.put_object(Bucket=bucket, Key="new", Body=b"personal data")  # noqa: E731
        assert err(put) == (400, "KMS.NotFoundException")
    writes = {
        "CopyObject": lambda: s3.copy_object(Bucket=bucket, Key="new", CopySource={"Bucket": bucket, "Key": "src"}),
        "CreateMultipartUpload": lambda: s3.create_multipart_upload(Bucket=bucket, Key="new"),
    }
    if config["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256":
        assert writes["CopyObject"]()["ServerSideEncryption"] == "AES256"
        assert s3.head_object(Bucket=bucket, Key="new")["ServerSideEncryption"] == "AES256"
        s3.delete_object(Bucket=bucket, Key="new")
        created = writes["CreateMultipartUpload"]()
        assert created["ServerSideEncryption"] == "AES256"
        s3.abort_multipart_upload(Bucket=bucket, Key="new", UploadId=created["UploadId"])
        assert post(server, bucket, presigned(s3, bucket, "new"), b"personal data").status == 204
        got = s3.get_object(Bucket=bucket, Key="new")
        assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == b"personal data"
        s3.delete_object(Bucket=bucket, Key="new")
    else:
        for op, call in writes.items():
            assert err(call) == (400, "KMS.NotFoundException"), op
        post_kms = post(server, bucket, presigned(s3, bucket, "new"), b"personal data")
        assert_error(post_kms, 400, "KMS.NotFoundException")
    assert absent(s3, bucket, "new")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])[0]["UploadId"] == upload  # only the early one
    # A malformed request is still a 400: parsed before the default is looked at.
    bad = signed_request(server, "PUT", f"/{bucket}/new", b"x", headers={"x-amz-server-side-encryption": "rot13"})
    assert_error(bad, 400, "InvalidArgument")
    # The upload from before the default goes on in clear, as it began.
    etag = s3.upload_part(Bucket=bucket, Key="early", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="early", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert s3.get_object(Bucket=bucket, Key="early")["Body"].read() == b"part"
    # Reads are unaffected; without the default, writes store again.
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == b"source"
    s3.delete_bucket_encryption(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="new", Body=b"plain again")
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"plain again"


def test_an_explicit_sse_c_request_is_not_the_default(server: ServerProcess, s3: Any, bucket: str) -> None:
    """SSE-C is never a default, and an explicit request wins over one: the object is SSE-C (its
    GET needs the key); the copy source's SSE-C key is checked against the source (not
    encrypted)."""
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rules("AES256"))
    key = bytes(range(32))
    put = s3.put_object(Bucket=bucket, Key="sse-c", Body=b"x", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert "ServerSideEncryption" not in put and put["SSECustomerAlgorithm"] == "AES256"
    assert err(lambda: s3.get_object(Bucket=bucket, Key="sse-c")) == (400, "InvalidRequest")
    copy = lambda: s3.copy_object(  # noqa: E731
        Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key,
    )  # fmt: skip
    assert err(copy) == (400, "InvalidRequest")
    assert absent(s3, bucket, "c")


def test_sse_kms_needs_sigv4(server: ServerProcess, s3: Any, bucket: str) -> None:
    """As AWS: an SSE-KMS write signed with SigV2 is a 400, whether it names aws:kms or the
    bucket default does; SSE-S3 with SigV2 is stored."""
    v2 = make_client(server.endpoint, signature_version="s3")
    assert err(lambda: v2.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms")) == (
        400, "InvalidArgument"
    )  # fmt: skip
    assert v2.put_object(Bucket=bucket, Key="s3", Body=b"x", ServerSideEncryption="AES256")["ServerSideEncryption"] == (
        "AES256"
    )  # fmt: skip
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rules("aws:kms", "testkey-1"))
    assert err(lambda: v2.put_object(Bucket=bucket, Key="k", Body=b"x")) == (400, "InvalidArgument")
    # SigV4: past the signature check, to the key service (the session server lacks testkey-1)
    assert err(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x")) == (400, "KMS.NotFoundException")
    assert absent(s3, bucket, "k")


def test_a_bucket_policy_can_require_the_sse_header(server: ServerProcess, s3: Any, bucket: str) -> None:
    """A Deny on PutObject with ``Null: s3:x-amz-server-side-encryption``: without the header the
    dispatcher denies; with it the request passes authorization and is stored encrypted.
    Another Deny refuses aws:kms by value."""
    arn = f"arn:aws:s3:::{bucket}/*"
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": arn}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {**deny, "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}},
        {**deny, "Condition": {"StringEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}},
    ]}))  # fmt: skip
    user = new_user(server, json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": arn}]}))  # fmt: skip
    assert err(lambda: user.put_object(Bucket=bucket, Key="k", Body=b"x")) == (403, "AccessDenied")
    assert err(lambda: user.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms")) == (
        403, "AccessDenied"
    )  # fmt: skip
    assert absent(s3, bucket, "k")
    put = user.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    assert user.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    # A bucket default does not satisfy the condition: it looks at the request, as AWS.
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rules("AES256"))
    assert err(lambda: user.put_object(Bucket=bucket, Key="k2", Body=b"x")) == (403, "AccessDenied")
    assert absent(s3, bucket, "k2")


def test_aws_cli(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    cli = Aws(server, tmp_path / "home")

    def aws(*args: str) -> subprocess.CompletedProcess[str]:
        return cli.run("s3api", *args, "--bucket", bucket, check=False)

    config = json.dumps(rules("aws:kms", "testkey-2"))
    out = aws("put-bucket-encryption", "--server-side-encryption-configuration", config)
    assert out.returncode == 0, out.stderr
    out = aws("get-bucket-encryption")
    assert out.returncode == 0, out.stderr
    rule = json.loads(out.stdout)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "testkey-2"}
    assert aws("delete-bucket-encryption").returncode == 0
    out = aws("get-bucket-encryption")
    assert out.returncode != 0 and "ServerSideEncryptionConfigurationNotFoundError" in out.stderr


def test_blocked_encryption_types_sse_c(server: ServerProcess, s3: Any, bucket: str) -> None:
    """BlockedEncryptionTypes SSE-C: kept and answered; new SSE-C writes (PutObject, CopyObject,
    CreateMultipartUpload, POST) are 403 AccessDenied and store nothing; objects stored with
    SSE-C before stay readable (and copyable to another encryption) with their key, and an
    upload begun before completes. NONE unblocks."""
    key = bytes(range(32))
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    s3.put_object(Bucket=bucket, Key="old", Body=b"stored before", **sse_c)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", **sse_c)["UploadId"]
    block = {"Rules": [{**rules("AES256")["Rules"][0], "BlockedEncryptionTypes": {"EncryptionType": ["SSE-C"]}}]}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=block)
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule == {**block["Rules"][0], "BucketKeyEnabled": False}

    old = {"Bucket": bucket, "Key": "old"}
    copy_c = {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}
    writes = {
        "PutObject": lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", **sse_c),
        "CopyObject": lambda: s3.copy_object(Bucket=bucket, Key="k", CopySource=old, **copy_c, **sse_c),
        "CreateMultipartUpload": lambda: s3.create_multipart_upload(Bucket=bucket, Key="k", **sse_c),
    }
    for name, write in writes.items():
        assert err(write) == (403, "AccessDenied"), name
    fields = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
              "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
              "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    form = presigned(s3, bucket, "k", Fields=fields, Conditions=[{k: v} for k, v in fields.items()])  # fmt: skip
    assert_error(post(server, bucket, form, b"x"), 403, "AccessDenied")
    assert absent(s3, bucket, "k")
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix="k").get("Uploads", []) == []

    # What is not SSE-C goes on: the default, reads and copies of what is stored, the old upload.
    assert s3.put_object(Bucket=bucket, Key="new", Body=b"n")["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="old", **sse_c)["Body"].read() == b"stored before"
    s3.copy_object(Bucket=bucket, Key="copy", CopySource=old, **copy_c)  # to the default, SSE-S3
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"stored before"
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"part", **sse_c)
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, **sse_c,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})  # fmt: skip
    assert s3.get_object(Bucket=bucket, Key="mp", **sse_c)["Body"].read() == b"part"

    unblock = {"Rules": [{**rules("AES256")["Rules"][0], "BlockedEncryptionTypes": {"EncryptionType": ["NONE"]}}]}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=unblock)
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["BlockedEncryptionTypes"] == {"EncryptionType": ["NONE"]}
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"x", **sse_c)["SSECustomerAlgorithm"] == "AES256"
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=block)
    s3.delete_bucket_encryption(Bucket=bucket)  # the block goes with the configuration
    assert s3.put_object(Bucket=bucket, Key="k2", Body=b"x", **sse_c)["SSECustomerAlgorithm"] == "AES256"
