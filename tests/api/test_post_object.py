"""POST Object, browser form uploads (api/_post_object.py), against a real server: forms signed
by botocore's own ``generate_presigned_post`` (SigV4) or built here (SigV2), sent as raw
``multipart/form-data``; every policy condition type, the refusals, the answer variants, the
bucket-override regression, authorization of the form's signer, and a 20 MiB file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.s3http import Resp, send
from tierstore.client import TierstoreClient
from tierstore.crypto import load_master_key, seal_session_token
from tierstore.engine import Session

Fields = Sequence[tuple[str, str]]


def multipart(
    fields: Fields, file: bytes | None, *, filename: str = "photo.jpg", after: Fields = ()
) -> tuple[bytes, str]:
    """A form body with ``fields`` in order, then the file part (S3 requires it last), then
    ``after`` (fields S3 ignores)."""
    boundary = f"----tierstore{uuid.uuid4().hex}"
    out = bytearray()

    def field(name: str, value: str) -> None:
        out.extend(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.extend(value.encode() + b"\r\n")

    for name, value in fields:
        field(name, value)
    if file is not None:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode()
        out += b"Content-Type: application/octet-stream\r\n\r\n" + file + b"\r\n"
    for name, value in after:
        field(name, value)
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def post(server: ServerProcess, bucket: str, fields: Fields, file: bytes | None = b"hello", **kw: Any) -> Resp:
    body, ctype = multipart(fields, file, **kw)
    return send(server.port, "POST", f"/{bucket}", {"Host": f"127.0.0.1:{server.port}", "Content-Type": ctype}, body)


def presigned(s3: Any, bucket: str, key: str, **kw: Any) -> list[tuple[str, str]]:
    """botocore's SigV4 form fields (key, x-amz-*, policy, x-amz-signature)."""
    return list(s3.generate_presigned_post(bucket, key, **kw)["fields"].items())


def v2_form(
    bucket: str, conditions: list[Any], fields: Fields, *, secret: str = SECRET_KEY, expires_s: int = 600
) -> list[tuple[str, str]]:
    """A SigV2 form: the policy and its base64 HMAC-SHA1 signature."""
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expires_s))
    doc = {"expiration": expiration, "conditions": [{"bucket": bucket}, *conditions]}
    policy = base64.b64encode(json.dumps(doc).encode()).decode()
    signature = base64.b64encode(hmac.digest(secret.encode(), policy.encode(), hashlib.sha1)).decode()
    return [*fields, ("AWSAccessKeyId", ACCESS_KEY), ("policy", policy), ("signature", signature)]


def error(resp: Resp, status: int, code: str) -> str:
    assert resp.status == status, (resp.status, resp.body[:400])
    err = resp.error()
    assert err["Code"] == code, err
    return err["Message"]


def body_of(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def absent(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("404", "NoSuchKey")
    return False


# --- SigV4 (botocore) and SigV2 forms ------------------------------------------------------------
def test_sigv4_form_from_botocore_stores_the_file(server: ServerProcess, s3: Any, bucket: str) -> None:
    resp = post(server, bucket, presigned(s3, bucket, "up/a.txt"), b"form bytes")
    assert resp.status == 204, resp.body
    assert resp.headers["etag"] == f'"{hashlib.md5(b"form bytes").hexdigest()}"'
    assert body_of(s3, bucket, "up/a.txt") == b"form bytes"


def test_sigv2_form_stores_the_file_with_its_headers_and_metadata(server: ServerProcess, s3: Any, bucket: str) -> None:
    fields = [
        ("key", "docs/${filename}"),
        ("Content-Type", "text/plain"),
        ("Cache-Control", "max-age=60"),
        ("Content-Disposition", "inline"),
        ("x-amz-meta-owner", "alice"),
    ]
    conditions = [
        ["starts-with", "$key", "docs/"],
        {"Content-Type": "text/plain"},
        ["eq", "$Cache-Control", "max-age=60"],
        ["starts-with", "$Content-Disposition", ""],
        {"x-amz-meta-owner": "alice"},
    ]
    resp = post(server, bucket, v2_form(bucket, conditions, fields), b"v2", filename="notes.txt")
    assert resp.status == 204, resp.body
    head = s3.head_object(Bucket=bucket, Key="docs/notes.txt")
    assert head["ContentType"] == "text/plain"
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == "inline"
    assert head["Metadata"] == {"owner": "alice"}


def test_non_ascii_filename_and_metadata_are_stored_as_utf8(server: ServerProcess, s3: Any, bucket: str) -> None:
    fields = [("key", "u/${filename}"), ("x-amz-meta-name", "Zoë"), ("Content-Disposition", "inline; name=é")]
    conditions = [["starts-with", "$key", "u/"], {"x-amz-meta-name": "Zoë"}, {"Content-Disposition": "inline; name=é"}]
    resp = post(server, bucket, v2_form(bucket, conditions, fields), b"utf8", filename="naïve.txt")
    assert resp.status == 204, resp.body
    head = s3.head_object(Bucket=bucket, Key="u/naïve.txt")  # the key is the file's name, as text
    # header values come back as the UTF-8 bytes sent (http.client reads them as latin-1)
    assert head["Metadata"] == {"name": "Zoë".encode().decode("latin-1")}
    assert head["ContentDisposition"] == "inline; name=é".encode().decode("latin-1")


@pytest.mark.parametrize(
    ("name", "value", "status", "code"),
    [
        ("x-amz-checksum-sha256", "AAAA", 501, "NotImplemented"),
        ("x-amz-server-side-encryption", "rot13", 400, "InvalidArgument"),
        ("x-amz-website-redirect-location", "/elsewhere", 501, "NotImplemented"),
    ],
)
def test_unsupported_fields_are_refused_not_ignored(
    server: ServerProcess, s3: Any, bucket: str, name: str, value: str, status: int, code: str
) -> None:
    fields = [("key", "ck"), (name, value)]
    v2 = v2_form(bucket, [{"key": "ck"}, ["starts-with", f"${name}", ""]], fields)
    error(post(server, bucket, v2), status, code)
    assert absent(s3, bucket, "ck")


def test_a_wrong_secret_is_signature_does_not_match(server: ServerProcess, s3: Any, bucket: str) -> None:
    wrong = make_client(server.endpoint, secret_key="not-the-secret")
    error(post(server, bucket, presigned(wrong, bucket, "k1")), 403, "SignatureDoesNotMatch")
    v2 = v2_form(bucket, [{"key": "k1"}], [("key", "k1")], secret="not-the-secret")
    error(post(server, bucket, v2), 403, "SignatureDoesNotMatch")
    assert absent(s3, bucket, "k1")


def test_a_tampered_policy_is_signature_does_not_match(server: ServerProcess, s3: Any, bucket: str) -> None:
    fields = dict(presigned(s3, bucket, "k2", Conditions=[["content-length-range", 0, 3]]))
    doc = json.loads(base64.b64decode(fields["policy"]))
    doc["conditions"] = [c for c in doc["conditions"] if not (isinstance(c, list) and c[0] == "content-length-range")]
    fields["policy"] = base64.b64encode(json.dumps(doc).encode()).decode()
    error(post(server, bucket, list(fields.items()), b"longer than three"), 403, "SignatureDoesNotMatch")
    assert absent(s3, bucket, "k2")


def test_an_unknown_access_key_is_invalid_access_key_id(server: ServerProcess, s3: Any, bucket: str) -> None:
    other = make_client(server.endpoint, access_key="AKNOBODY")
    error(post(server, bucket, presigned(other, bucket, "k3")), 403, "InvalidAccessKeyId")


# --- the policy ----------------------------------------------------------------------------------
def _policy(conditions: list[Any]) -> str:
    doc = {"expiration": "2099-01-01T00:00:00Z", "conditions": conditions}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_an_expired_policy_is_refused(server: ServerProcess, s3: Any, bucket: str) -> None:
    fields = v2_form(bucket, [{"key": "old"}], [("key", "old")], expires_s=-5)
    msg = error(post(server, bucket, fields), 403, "AccessDenied")
    assert msg == "Invalid according to Policy: Policy expired."
    assert absent(s3, bucket, "old")


@pytest.mark.parametrize(
    ("conditions", "fields", "failed"),
    [
        ([{"key": "exact"}], [("key", "other")], '["eq", "$key", "exact"]'),
        ([["eq", "$key", "exact"]], [("key", "exactly")], '["eq", "$key", "exact"]'),
        ([["starts-with", "$key", "user/"]], [("key", "admin/x")], '["starts-with", "$key", "user/"]'),
        (
            [{"key": "k"}, ["starts-with", "$Content-Type", "image/"]],
            [("key", "k"), ("Content-Type", "image/png, text/html")],
            '["starts-with", "$content-type", "image/"]',
        ),
        (
            [{"key": "k"}, {"x-amz-meta-team": "ml"}],
            [("key", "k"), ("x-amz-meta-team", "ops")],
            '["eq", "$x-amz-meta-team", "ml"]',
        ),
        ([{"key": "k"}, {"acl": "private"}], [("key", "k")], '["eq", "$acl", "private"]'),
    ],
)
def test_each_failed_condition_is_access_denied(
    server: ServerProcess, s3: Any, bucket: str, conditions: list[Any], fields: Fields, failed: str
) -> None:
    msg = error(post(server, bucket, v2_form(bucket, conditions, fields)), 403, "AccessDenied")
    assert msg == f"Invalid according to Policy: Policy Condition failed: {failed}"
    assert not s3.list_objects_v2(Bucket=bucket).get("Contents")


def test_the_same_conditions_hold_when_met(server: ServerProcess, s3: Any, bucket: str) -> None:
    conditions = [
        {"key": "img/a.png"},
        ["starts-with", "$Content-Type", "image/"],
        ["eq", "$x-amz-meta-team", "ml"],
        {"acl": "private"},
        ["starts-with", "$x-ignore-nothing", ""],
    ]
    fields = [("key", "img/a.png"), ("Content-Type", "image/png"), ("x-amz-meta-team", "ml"), ("acl", "private")]
    fields += [("x-ignore-note", "not covered, not needed")]
    resp = post(server, bucket, v2_form(bucket, conditions, fields), b"\x89PNG")
    assert resp.status == 204, resp.body
    assert s3.head_object(Bucket=bucket, Key="img/a.png")["ContentType"] == "image/png"


def test_a_field_no_condition_names_is_refused(server: ServerProcess, s3: Any, bucket: str) -> None:
    fields = v2_form(bucket, [{"key": "k"}], [("key", "k"), ("x-amz-meta-sneaky", "1")])
    msg = error(post(server, bucket, fields), 403, "AccessDenied")
    assert msg == "Invalid according to Policy: Extra input fields: x-amz-meta-sneaky"
    assert absent(s3, bucket, "k")


def test_content_length_range(server: ServerProcess, s3: Any, bucket: str) -> None:
    def form(key: str) -> list[tuple[str, str]]:
        return presigned(s3, bucket, key, Conditions=[["content-length-range", 5, 10]])

    assert post(server, bucket, form("fits"), b"12345").status == 204
    assert post(server, bucket, form("fits"), b"1234567890").status == 204
    error(post(server, bucket, form("big"), b"12345678901"), 400, "EntityTooLarge")
    error(post(server, bucket, form("small"), b"1234"), 400, "EntityTooSmall")
    assert absent(s3, bucket, "big")
    assert absent(s3, bucket, "small")


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        ("not base64!", "Invalid JSON."),
        (base64.b64encode(b"[1, 2]").decode(), "Invalid JSON."),
        (base64.b64encode(b'{"conditions": []}').decode(), "Policy missing expiration."),
        (base64.b64encode(b'{"expiration": "tomorrow", "conditions": []}').decode(), "Invalid 'expiration' value"),
        (_policy([["matches", "$key", "x"]]), "Invalid Condition: unknown operator 'matches'"),
        (_policy([["content-length-range", 9, 1]]), "Invalid content-length-range"),
        (_policy([{"key": 5}]), "Invalid Simple-Condition"),
    ],
)
def test_a_malformed_policy_is_invalid_policy_document(
    server: ServerProcess, bucket: str, policy: str, why: str
) -> None:
    signature = base64.b64encode(hmac.digest(SECRET_KEY.encode(), policy.encode(), hashlib.sha1)).decode()
    fields = [("key", "k"), ("AWSAccessKeyId", ACCESS_KEY), ("policy", policy), ("signature", signature)]
    msg = error(post(server, bucket, fields), 400, "InvalidPolicyDocument")
    assert msg.startswith(f"Invalid Policy: {why}"), msg


# --- the form itself ------------------------------------------------------------------------------
def test_missing_key_or_file_and_a_non_form_body(server: ServerProcess, s3: Any, bucket: str) -> None:
    fields = [(k, v) for k, v in presigned(s3, bucket, "k") if k != "key"]
    assert "'key'" in error(post(server, bucket, fields), 400, "InvalidArgument")
    msg = error(post(server, bucket, presigned(s3, bucket, "k"), None), 400, "InvalidArgument")
    assert msg == "POST requires exactly one file upload per request."
    plain = send(server.port, "POST", f"/{bucket}", {"Host": "x", "Content-Type": "text/plain"}, b"key=k")
    error(plain, 412, "PreconditionFailed")
    broken = {"Host": "x", "Content-Type": "multipart/form-data; boundary=zz"}
    garbled = send(server.port, "POST", f"/{bucket}", broken, b"--zz\r\nX")
    assert garbled.status == 400, garbled.body
    assert absent(s3, bucket, "k")


def test_fields_after_the_file_are_ignored(server: ServerProcess, s3: Any, bucket: str) -> None:
    late = [("x-amz-meta-late", "1"), ("key", "other"), ("success_action_status", "201")]
    resp = post(server, bucket, presigned(s3, bucket, "first"), b"kept", after=late)
    assert resp.status == 204, resp.body
    assert s3.head_object(Bucket=bucket, Key="first")["Metadata"] == {}
    assert absent(s3, bucket, "other")


def test_signed_form_without_policy_is_refused(server: ServerProcess, s3: Any, bucket: str) -> None:
    fields = [(k, v) for k, v in presigned(s3, bucket, "k") if k != "policy"]
    assert "'Policy'" in error(post(server, bucket, fields), 400, "InvalidArgument")


def test_fields_too_large_before_the_file(server: ServerProcess, bucket: str) -> None:
    error(post(server, bucket, [("key", "k"), ("x-ignore-pad", "p" * 70_000)]), 400, "MaxPostPreDataLengthExceeded")


def test_an_unsigned_form_is_anonymous_and_refused(server: ServerProcess, s3: Any, bucket: str) -> None:
    error(post(server, bucket, [("key", "anon")]), 403, "AccessDenied")
    assert absent(s3, bucket, "anon")


# --- answers --------------------------------------------------------------------------------------
def test_success_action_status_variants(server: ServerProcess, s3: Any, bucket: str) -> None:
    def form(status: str) -> list[tuple[str, str]]:
        return presigned(s3, bucket, f"s{status}", Fields={"success_action_status": status},
                         Conditions=[{"success_action_status": status}])  # fmt: skip

    assert (r := post(server, bucket, form("200"))).status == 200 and r.body == b""
    assert post(server, bucket, form("204")).status == 204
    assert post(server, bucket, form("999")).status == 204  # anything else: the default
    created = post(server, bucket, form("201"), b"made")
    assert created.status == 201, created.body
    root = ET.fromstring(created.body)
    assert root.tag == "PostResponse"
    doc = {child.tag: child.text for child in root}
    assert doc["Bucket"] == bucket and doc["Key"] == "s201"
    assert doc["ETag"] == f'"{hashlib.md5(b"made").hexdigest()}"'
    assert doc["Location"].endswith(f"/{bucket}/s201")


def test_success_action_redirect_is_303_with_bucket_key_etag(server: ServerProcess, s3: Any, bucket: str) -> None:
    target = "https://app.example/done?x=1"
    fields = presigned(
        s3, bucket, "red/${filename}", Fields={"success_action_redirect": target},
        Conditions=[{"success_action_redirect": target}],
    )  # fmt: skip
    resp = post(server, bucket, fields, b"r", filename="r.txt")
    assert resp.status == 303, resp.body
    where = urlsplit(resp.headers["location"])
    assert (where.scheme, where.netloc, where.path) == ("https", "app.example", "/done")
    query = parse_qs(where.query)
    assert query["x"] == ["1"] and query["bucket"] == [bucket] and query["key"] == ["red/r.txt"]
    assert query["etag"] == [f'"{hashlib.md5(b"r").hexdigest()}"']


def test_tagging_field_sets_the_object_tags(server: ServerProcess, s3: Any, bucket: str) -> None:
    tagging = "<Tagging><TagSet><Tag><Key>team</Key><Value>ml</Value></Tag></TagSet></Tagging>"
    fields = v2_form(bucket, [{"key": "tagged"}, {"tagging": tagging}], [("key", "tagged"), ("tagging", tagging)])
    assert post(server, bucket, fields).status == 204
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == [{"Key": "team", "Value": "ml"}]


def test_a_large_file_streams_through(server: ServerProcess, s3: Any, bucket: str) -> None:
    data = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32)  # 20 MiB
    resp = post(server, bucket, presigned(s3, bucket, "big.bin"), data)
    assert resp.status == 204, resp.body[:300]
    got = s3.get_object(Bucket=bucket, Key="big.bin")
    assert got["ContentLength"] == len(data)
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(data).digest()


# --- the bucket is the URL's: regression for the form-bucket override ----------------------------
def test_the_form_bucket_field_never_overrides_the_url(server: ServerProcess, s3: Any, bucket: str) -> None:
    """A form signed for bucket A, posted to bucket B's URL with ``bucket=A`` in the fields (or
    to A's URL with ``bucket=B``): nothing is written to either bucket."""
    other = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=other)
    try:
        signed_for_other = presigned(s3, other, "x")  # its policy's bucket condition names `other`
        error(post(server, bucket, [*signed_for_other, ("bucket", other)]), 400, "InvalidArgument")
        msg = error(post(server, bucket, signed_for_other), 403, "AccessDenied")
        assert msg == f'Invalid according to Policy: Policy Condition failed: ["eq", "$bucket", "{other}"]'
        fields = presigned(s3, bucket, "x", Fields={"bucket": bucket}, Conditions=[{"bucket": bucket}])
        error(post(server, other, fields), 400, "InvalidArgument")
        assert absent(s3, bucket, "x") and absent(s3, other, "x")
        assert post(server, bucket, fields).status == 204  # the same form at its own URL
    finally:
        for b in (other,):
            for obj in s3.list_objects_v2(Bucket=b).get("Contents", []):
                s3.delete_object(Bucket=b, Key=obj["Key"])
            s3.delete_bucket(Bucket=b)


# --- authorization: the form's signer, s3:PutObject on BUCKET/KEY ---------------------------------
@pytest.fixture(scope="module")
def uploader(client: TierstoreClient, server: ServerProcess) -> Iterator[Any]:
    """A user allowed s3:PutObject only under ``uploads/`` of every bucket."""
    name = f"poster-{uuid.uuid4().hex[:8]}"
    client.create_user(name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::*/uploads/*"}],
    }
    client.put_user_policy(name, "upload", policy)
    key = client.create_access_key(name)
    yield make_client(server.endpoint, access_key=key["access_key_id"], secret_key=key["secret_key"])


def test_the_signer_needs_put_object_on_the_key(server: ServerProcess, s3: Any, bucket: str, uploader: Any) -> None:
    assert post(server, bucket, presigned(uploader, bucket, "uploads/ok")).status == 204
    error(post(server, bucket, presigned(uploader, bucket, "elsewhere")), 403, "AccessDenied")
    # ${filename} is part of the key that is authorized
    fields = presigned(uploader, bucket, "${filename}")
    error(post(server, bucket, fields, filename="sneaky"), 403, "AccessDenied")
    assert absent(s3, bucket, "elsewhere") and absent(s3, bucket, "sneaky")
    assert body_of(s3, bucket, "uploads/ok") == b"hello"


def test_virtual_hosted_post_and_preflight(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The bucket from the Host header (``--domain``): a form upload, and a CORS preflight
    (api/_cors.py) to the same host, as a browser page would send them."""
    srv = ServerProcess(tmp_path_factory.mktemp("vh") / "data", extra_args=["--domain", "s3.test", "--workers", "1"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="vhb")
        host = f"vhb.s3.test:{srv.port}"
        body, ctype = multipart(presigned(s3, "vhb", "v/k"), b"virtual")
        resp = send(srv.port, "POST", "/", {"Host": host, "Content-Type": ctype}, body)
        assert resp.status == 204, resp.body
        assert body_of(s3, "vhb", "v/k") == b"virtual"
        asked = {"Host": host, "Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        assert send(srv.port, "OPTIONS", "/", asked).status == 403  # no CORS configuration yet
        rule = {"AllowedOrigins": ["https://app.example"], "AllowedMethods": ["POST"]}
        s3.put_bucket_cors(Bucket="vhb", CORSConfiguration={"CORSRules": [rule]})
        ok = send(srv.port, "OPTIONS", "/", asked)
        assert ok.status == 200, ok.body
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
    finally:
        srv.stop()


# --- anonymous forms: allowed exactly where the bucket policy allows anonymous writes -----------
def test_an_unsigned_form_is_allowed_by_a_bucket_policy(server: ServerProcess, s3: Any, bucket: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/drop/*"}
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert post(server, bucket, [("key", "drop/${filename}")], b"anon", filename="a.txt").status == 204
    assert body_of(s3, bucket, "drop/a.txt") == b"anon"
    error(post(server, bucket, [("key", "elsewhere")]), 403, "AccessDenied")
    # an anonymous form that carries a policy is held to it
    unsigned = [("key", "drop/b"), ("policy", _policy([{"key": "drop/c"}]))]
    error(post(server, bucket, unsigned), 403, "AccessDenied")
    assert absent(s3, bucket, "elsewhere") and absent(s3, bucket, "drop/b")


# --- forms signed with temporary (STS) credentials: x-amz-security-token --------------------------
def _boto(server: ServerProcess, service: str, keys: Sequence[str], **cfg: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        aws_session_token=keys[2] if len(keys) > 2 else None,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}, **cfg),
    )


@pytest.fixture(scope="module")
def role_session(server: ServerProcess) -> tuple[str, str, str]:
    """AssumeRole credentials of a role allowed s3:PutObject only under ``uploads/``; a user
    with no policy of her own assumes it (the role trusts her by ARN)."""
    iam = _boto(server, "iam", (ACCESS_KEY, SECRET_KEY))
    user, role = f"u-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    statement = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::000000000000:user/{user}"}}
    trust = {"Version": "2012-10-17", "Statement": [{**statement, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
    allow = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::*/uploads/*"}
    policy = {"Version": "2012-10-17", "Statement": [allow]}
    iam.put_role_policy(RoleName=role, PolicyName="upload", PolicyDocument=json.dumps(policy))
    sts = _boto(server, "sts", (key["AccessKeyId"], key["SecretAccessKey"]))
    c = sts.assume_role(RoleArn=f"arn:aws:iam::000000000000:role/{role}", RoleSessionName="browser")["Credentials"]
    return c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]


def test_a_role_session_signs_forms_and_its_policy_decides(
    server: ServerProcess, s3: Any, bucket: str, role_session: tuple[str, str, str]
) -> None:
    v4 = _boto(server, "s3", role_session, signature_version="s3v4")
    v2 = _boto(server, "s3", role_session, signature_version="s3")
    fields = presigned(v4, bucket, "uploads/v4")
    assert ("x-amz-security-token", role_session[2]) in fields  # botocore adds the field and its condition
    assert post(server, bucket, fields, b"by a role").status == 204
    assert post(server, bucket, presigned(v2, bucket, "uploads/v2"), b"v2 too").status == 204
    assert body_of(s3, bucket, "uploads/v4") == b"by a role" and body_of(s3, bucket, "uploads/v2") == b"v2 too"
    # the role's policy, not the root's or the user's, decides
    error(post(server, bucket, presigned(v4, bucket, "elsewhere")), 403, "AccessDenied")
    error(post(server, bucket, presigned(v2, bucket, "elsewhere")), 403, "AccessDenied")
    assert absent(s3, bucket, "elsewhere")


def test_a_session_form_without_a_good_token_is_refused(
    server: ServerProcess, s3: Any, bucket: str, role_session: tuple[str, str, str]
) -> None:
    access_key, secret, token = role_session
    fields = presigned(_boto(server, "s3", role_session, signature_version="s3v4"), bucket, "uploads/t")
    without = [(k, v) for k, v in fields if k != "x-amz-security-token"]  # a session key alone
    error(post(server, bucket, without), 403, "InvalidAccessKeyId")
    i = len(token) // 2
    tampered = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    swapped = [(k, tampered if k == "x-amz-security-token" else v) for k, v in fields]
    error(post(server, bucket, swapped), 400, "InvalidToken")
    # a token the policy does not name is an extra field: the signature must cover the token
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    doc = {"expiration": expiration, "conditions": [{"bucket": bucket}, {"key": "uploads/t"}]}
    policy = base64.b64encode(json.dumps(doc).encode()).decode()
    signature = base64.b64encode(hmac.digest(secret.encode(), policy.encode(), hashlib.sha1)).decode()
    uncovered = [("key", "uploads/t"), ("AWSAccessKeyId", access_key), ("x-amz-security-token", token)]
    uncovered += [("policy", policy), ("signature", signature)]
    msg = error(post(server, bucket, uncovered), 403, "AccessDenied")
    assert msg == "Invalid according to Policy: Extra input fields: x-amz-security-token"
    # an expired session (sealed with the server's own master key: a real token, no mock)
    now = int(time.time())
    past = Session("ASIAEXPIREDPOSTFORM0", "expired-secret-000000000000000000000000", now - 5, now - 905,
                   "role", "gone", "AROAGONE", "old")  # fmt: skip
    sealed = seal_session_token(load_master_key([server.data_dir]), past.claims_json())
    expired = _boto(server, "s3", (past.access_key_id, past.secret_key, sealed), signature_version="s3v4")
    error(post(server, bucket, presigned(expired, bucket, "uploads/t")), 400, "ExpiredToken")
    assert absent(s3, bucket, "uploads/t")
    log = server.log()
    assert token not in log and secret not in log and tampered not in log


# --- the policy as a pure function (api/_post_object.py) -----------------------------------------
def test_policy_check_unit() -> None:
    from datetime import UTC, datetime

    from tierstore import errors as e
    from tierstore.api._post_object import parse_policy

    now = datetime(2030, 1, 1, tzinfo=UTC)
    policy = parse_policy(
        base64.b64encode(
            json.dumps(
                {
                    "expiration": "2030-01-01T00:00:01.000Z",
                    "conditions": [
                        {"bucket": "b", "$key": "k"},  # two exact matches in one object; "$" tolerated
                        ["starts-with", "$Content-Type", "image/"],
                        ["content-length-range", 0, 100],
                        ["content-length-range", "10", "50"],  # the tightest range wins
                    ],
                }
            ).encode()
        ).decode()
    )
    assert policy.length_range == (10, 50)
    base = {"key": "k", "content-type": "image/png, image/gif", "x-ignore-a": "1", "policy": "p", "signature": "s"}
    policy.check(base, "b", now)
    for fields, bucket, why in [
        ({**base, "content-type": "image/png, text/html"}, "b", "Policy Condition failed"),
        ({**base, "bucket": "b"}, "other", '["eq", "$bucket", "b"]'),  # the URL's bucket, not the field
        ({**base, "acl": "private"}, "b", "Extra input fields: acl"),
    ]:
        with pytest.raises(e.AccessDenied) as exc:
            policy.check(fields, bucket, now)
        assert why in exc.value.message
    with pytest.raises(e.AccessDenied, match="Policy expired"):
        policy.check(base, "b", datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC))
