"""Regressions for breaches found in other S3 stores (issue 15, docs/security.md "Breach
regressions"): each test is an attack that worked somewhere, run against a real server.

- streaming uploads in every payload mode signed with a wrong secret, or with a right header
  signature and a wrong (or missing) chunk or trailer signature: refused, nothing written;
- conditional and ranged reads by a caller without read rights: the same 403 for an existing
  and a missing key, no ETag, version or size;
- ``..``, ``%2e%2e``, encoded slashes and backslashes in keys and copy sources never reach
  another bucket;
- presigned URLs with an expiry out of range, SigV2 ``Expires`` in the past;
- the admin endpoints by non-admin users;
- DeleteObjects by a caller denied every key: the same answer whether the bucket exists or not;
- datasets made of (and read by) a caller allowed on one prefix only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from tests.api.test_auth_e2e import aws_chunked_signed, crc32_b64, streaming_headers
from tests.api.test_conformance_b import _presign_v4
from tests.checkpoints.test_registry import write_checkpoint
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.s3http import (
    REGION,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED,
    Resp,
    amz_now,
    assert_error,
    fetch,
    hmac_hex,
    send,
    sign_v4,
    signed_request,
    signing_key,
)
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings

WRONG = "wrong-secret-" + "x" * 27
Keys = tuple[str, str]


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _user(root: TierstoreClient, policy: str | None = None) -> Keys:
    name = f"u-{uuid.uuid4().hex[:10]}"
    root.create_user(name)
    if policy is not None:
        root.put_user_policy(name, "main", policy)
    key = root.create_access_key(name)
    return key["access_key_id"], key["secret_key"]


def _ext(server: ServerProcess, keys: Keys) -> TierstoreClient:
    return TierstoreClient(resolve_settings(server.endpoint, access_key=keys[0], secret_key=keys[1]))


def _body_of(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes as the root reads them; None when there is none."""
    try:
        data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchKey", exc.response
        return None
    return data


@pytest.fixture
def other_bucket(s3: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    for v in s3.list_object_versions(Bucket=name).get("Versions", []):
        s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=name)


# --- streaming uploads with a wrong secret or signature ------------------------------------


def _streaming_put(server: ServerProcess, path: str, data: bytes, mode: str, secret: str, tamper: Any = None) -> Resp:
    """A PUT of ``data`` in payload ``mode``, every signature made with ``secret``; ``tamper``
    edits the body (after signing) to break one chunk or trailer signature."""
    port = server.port
    if mode in (UNSIGNED, "signed"):
        payload = UNSIGNED if mode == UNSIGNED else hashlib.sha256(data).hexdigest()
        s = sign_v4(port, "PUT", path, payload_hash=payload, secret_key=secret)
        return send(port, "PUT", s.target, s.headers, data)
    trailer = {"x-amz-checksum-crc32": crc32_b64(data)}
    extra = {"x-amz-trailer": "x-amz-checksum-crc32"} if mode != STREAMING_SIGNED else None
    s = sign_v4(port, "PUT", path, payload_hash=mode, headers=streaming_headers(len(data), extra), secret_key=secret)
    if mode == STREAMING_UNSIGNED_TRAILER:
        body = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n"
        body += f"x-amz-checksum-crc32:{trailer['x-amz-checksum-crc32']}\r\n\r\n".encode()
    else:
        body, _ = aws_chunked_signed(s, data, 8192, trailer=trailer if mode == STREAMING_SIGNED_TRAILER else None)
    if tamper is not None:
        body = tamper(body)
    return send(port, "PUT", s.target, s.headers, body)


MODES = [STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER, UNSIGNED, "signed"]


@pytest.mark.parametrize("mode", MODES)
def test_every_payload_mode_with_a_wrong_secret_writes_nothing(
    server: ServerProcess, s3: Any, bucket: str, mode: str
) -> None:
    data = b"attacker bytes " * 2000
    r = _streaming_put(server, f"/{bucket}/new", data, mode, WRONG)
    assert_error(r, 403, "SignatureDoesNotMatch")
    assert _body_of(s3, bucket, "new") is None
    s3.put_object(Bucket=bucket, Key="kept", Body=b"previous")
    r = _streaming_put(server, f"/{bucket}/kept", data, mode, WRONG)
    assert_error(r, 403, "SignatureDoesNotMatch")
    assert _body_of(s3, bucket, "kept") == b"previous"
    assert _streaming_put(server, f"/{bucket}/ok", data, mode, SECRET_KEY).status == 200  # the request was right
    assert _body_of(s3, bucket, "ok") == data


def _flip_chunk_signature(body: bytes) -> bytes:
    i = body.index(b"chunk-signature=", body.index(b"\r\n") + 1) + len(b"chunk-signature=")  # the second chunk's
    return body[:i] + (b"0" if body[i : i + 1] != b"0" else b"1") + body[i + 1 :]


def _flip_trailer_signature(body: bytes) -> bytes:
    i = body.index(b"x-amz-trailer-signature:") + len(b"x-amz-trailer-signature:")
    return body[:i] + (b"0" if body[i : i + 1] != b"0" else b"1") + body[i + 1 :]


def _drop_trailer_signature(body: bytes) -> bytes:
    start = body.index(b"x-amz-trailer-signature:")
    return body[:start] + body[body.index(b"\r\n", start) + 2 :]


def _drop_chunk_signatures(body: bytes) -> bytes:
    """The same chunks framed as unsigned ones (``<size>\\r\\n``): a signature check skipped."""
    out, pos = bytearray(), 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        out += f"{size:x}\r\n".encode()
        pos = end + 2
        if size == 0:
            return bytes(out + body[pos:])
        out += body[pos : pos + size + 2]
        pos += size + 2


@pytest.mark.parametrize(
    ("mode", "tamper"),
    [
        (STREAMING_SIGNED, _flip_chunk_signature),
        (STREAMING_SIGNED, _drop_chunk_signatures),
        (STREAMING_SIGNED_TRAILER, _flip_chunk_signature),
        (STREAMING_SIGNED_TRAILER, _flip_trailer_signature),
        (STREAMING_SIGNED_TRAILER, _drop_trailer_signature),
        (STREAMING_SIGNED_TRAILER, _drop_chunk_signatures),
    ],
)
def test_right_header_signature_wrong_chunk_or_trailer_writes_nothing(
    server: ServerProcess, s3: Any, bucket: str, mode: str, tamper: Any
) -> None:
    data = b"0123456789abcdef" * 1500  # 24000 bytes: three 8 KiB chunks
    r = _streaming_put(server, f"/{bucket}/t", data, mode, SECRET_KEY, tamper)
    assert 400 <= r.status < 500, r.body
    assert r.status == 403 or r.error()["Code"] in ("IncompleteBody", "InvalidRequest", "MalformedTrailerError")
    assert _body_of(s3, bucket, "t") is None


# --- conditional and ranged reads without read rights ---------------------------------------


def _answer(r: Resp) -> tuple[Any, ...]:
    """What a response tells the caller, less what differs per request (ids, date)."""
    names = sorted(set(r.headers) - {"x-amz-request-id", "x-amz-id-2", "date"})
    error = r.error() if r.body else {}
    return r.status, error.get("Code"), error.get("Message"), names, r.headers.get("content-length")


def test_denied_conditional_reads_say_nothing_about_the_key(server: ServerProcess, s3: Any, bucket: str) -> None:
    root = _ext(server, (ACCESS_KEY, SECRET_KEY))
    peek = _user(root, _policy({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}))
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(Bucket=bucket, Key="here", Body=b"x" * 1000)
    etag, version = put["ETag"], put["VersionId"]
    s3.put_object(Bucket=bucket, Key="dead", Body=b"y")
    s3.delete_object(Bucket=bucket, Key="dead")  # the latest version is a delete marker
    future = "Wed, 01 Jan 2070 00:00:00 GMT"
    past = "Thu, 01 Jan 1970 00:00:00 GMT"
    cases: list[tuple[str, dict[str, str], list[tuple[str, str]]]] = [
        ("HEAD", {}, []),
        ("GET", {}, []),
        ("GET", {"if-match": etag}, []),
        ("GET", {"if-match": '"0"'}, []),
        ("HEAD", {"if-none-match": etag}, []),
        ("GET", {"if-none-match": "*"}, []),
        ("GET", {"if-modified-since": future}, []),
        ("HEAD", {"if-unmodified-since": past}, []),
        ("GET", {"range": "bytes=0-0"}, []),
        ("GET", {"range": "bytes=5000-6000"}, []),
        ("GET", {}, [("versionId", version)]),
        ("HEAD", {}, [("versionId", version)]),
        ("GET", {}, [("versionId", "not-a-version")]),
        ("GET", {}, [("partNumber", "1")]),
    ]
    leaky = {"etag", "last-modified", "x-amz-version-id", "content-range", "x-amz-delete-marker", "accept-ranges"}
    for method, headers, query in cases:
        answers = {}
        for key in ("here", "dead", "gone"):
            r = signed_request(
                server, method, f"/{bucket}/{key}", headers=headers, query=query, access_key=peek[0], secret_key=peek[1]
            )
            assert r.status == 403, (method, headers, query, key, r.status)
            assert not leaky & set(r.headers), (method, headers, query, key, r.headers)
            answers[key] = _answer(r)
        assert answers["here"] == answers["dead"] == answers["gone"], (method, headers, query)


# --- dot segments, encoded slashes and backslashes -----------------------------------------


def _sign_raw(
    port: int, method: str, target: str, keys: Keys, headers: Mapping[str, str] | None = None, body: bytes = b""
) -> Resp:
    """A header-signed request whose path goes on the wire exactly as ``target`` (already
    percent-encoded: ``%2e%2e``, ``%2F``, ``%5C`` stay as they are), signed over that path."""
    amz_date = amz_now()
    payload = hashlib.sha256(body).hexdigest()
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs.update({"host": f"127.0.0.1:{port}", "x-amz-date": amz_date, "x-amz-content-sha256": payload})
    names = sorted(hdrs)
    canonical = "".join(f"{k}:{hdrs[k].strip()}\n" for k in names)
    creq = "\n".join([method, target, "", canonical, ";".join(names), payload])
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    sig = hmac_hex(signing_key(keys[1], amz_date[:8]), sts)
    hdrs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={keys[0]}/{scope}, SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    return send(port, method, target, hdrs, body if method == "PUT" else None)


SECRET = b"the other bucket's secret"


def test_dot_segments_and_encoded_separators_stay_in_their_bucket(
    server: ServerProcess, s3: Any, bucket: str, other_bucket: str
) -> None:
    root = _ext(server, (ACCESS_KEY, SECRET_KEY))
    a, b = bucket, other_bucket
    only_a = _user(
        root, _policy({"Effect": "Allow", "Action": "s3:*", "Resource": [f"arn:aws:s3:::{a}", f"arn:aws:s3:::{a}/*"]})
    )
    s3.put_object(Bucket=b, Key="secret", Body=SECRET)
    sources = [
        f"{a}/../{b}/secret",
        f"/{a}/../{b}/secret",
        f"{a}/./../{b}/secret",
        f"{a}/%2e%2e/{b}/secret",
        f"{a}/%2E%2E%2F{b}%2Fsecret",
        f"{a}%2F..%2F{b}%2Fsecret",
        f"{a}/..%5C{b}%5Csecret",
        f"{a}/..\\{b}\\secret",
        f"{a}/%252e%252e/{b}/secret",
    ]
    for i, source in enumerate(sources):
        r = _sign_raw(server.port, "PUT", f"/{a}/copy{i}", only_a, {"x-amz-copy-source": source})
        assert SECRET not in r.body
        assert r.status in (403, 404), (source, r.status, r.body[:200])
        assert _body_of(s3, a, f"copy{i}") is None
    # A key literally named so in A is what such a copy source reads.
    s3.put_object(Bucket=a, Key=f"../{b}/secret", Body=b"decoy in A")
    r = _sign_raw(server.port, "PUT", f"/{a}/copied", only_a, {"x-amz-copy-source": f"{a}/%2e%2e/{b}/secret"})
    assert r.status == 200, r.body
    assert _body_of(s3, a, "copied") == b"decoy in A"
    # Paths: whatever the encoding, the bucket is the first segment and the rest is the key.
    targets = [
        f"/{a}/../{b}/x",
        f"/{a}/%2e%2e/{b}/x",
        f"/{a}/..%2F{b}%2Fx",
        f"/{a}%2F..%2F{b}%2Fx",
        f"/{a}/..%5C{b}%5Cx",
        f"/{a}/./../{b}/x",
    ]
    for target in targets:
        r = _sign_raw(server.port, "PUT", target, only_a, body=b"written through " + target.encode())
        assert r.status in (200, 400, 403), (target, r.status, r.body[:200])
        got = _sign_raw(server.port, "GET", target.replace("/x", "/secret").replace("%2Fx", "%2Fsecret"), only_a)
        assert SECRET not in got.body, target
    assert _body_of(s3, b, "x") is None
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]] == ["secret"]


# --- presigned URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires", "message"),
    [
        ("604801", "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires "
                   "must be less than 604800 seconds"),
        ("99999999999", "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires "
                        "must be less than 604800 seconds"),
        ("-1", "X-Amz-Expires must be non-negative"),
        ("soon", "X-Amz-Expires should be a number"),
        ("", "X-Amz-Expires should be a number"),
        ("1e3", "X-Amz-Expires should be a number"),
    ],
)  # fmt: skip
def test_presigned_expiry_out_of_range_is_403(
    server: ServerProcess, s3: Any, bucket: str, expires: str, message: str
) -> None:
    s3.put_object(Bucket=bucket, Key="p", Body=b"p")
    assert fetch(_presign_v4(server.port, f"/{bucket}/p", "604800")).body == b"p"  # the signer is right
    r = fetch(_presign_v4(server.port, f"/{bucket}/p", expires))
    fields = assert_error(r, 403, "AuthorizationQueryParametersError")
    assert fields["Message"] == message
    assert r.body != b"p"


def test_presigned_v2_expired_is_403(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="v2", Body=b"v2 body")
    for expires, status in ((int(time.time()) + 60, 200), (int(time.time()) - 1, 403), (0, 403)):
        sts = f"GET\n\n\n{expires}\n/{bucket}/v2"
        sig = base64.b64encode(hmac.digest(SECRET_KEY.encode(), sts.encode(), "sha1")).decode()
        url = (
            f"{server.endpoint}/{bucket}/v2?AWSAccessKeyId={ACCESS_KEY}&Expires={expires}"
            f"&Signature={quote(sig, safe='')}"
        )
        r = fetch(url)
        if status == 200:
            assert r.body == b"v2 body"
        else:
            assert_error(r, 403, "AccessDenied")


# --- the admin endpoints ---------------------------------------------------------------------


def test_admin_endpoints_refuse_non_admin_users(server: ServerProcess, s3: Any) -> None:
    root = _ext(server, (ACCESS_KEY, SECRET_KEY))
    everything_s3 = _user(root, _policy({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}))
    nothing = _user(root)
    parent = f"p-{uuid.uuid4().hex[:8]}"  # a service account of a user allowed everything in S3
    root.create_user(parent)
    root.put_user_policy(parent, "main", _policy({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}))
    service = root.create_access_key(parent, service=True)
    victim = f"v-{uuid.uuid4().hex[:8]}"
    root.create_user(victim)
    users_before = sorted(u["name"] for u in root.list_users())
    kms_key = root.kms_create_key(f"k-{uuid.uuid4().hex[:8]}")["key_id"]
    grant = _policy({"Effect": "Allow", "Action": "*", "Resource": "*"}).encode()
    calls = [
        ("GET", "/_tierstore/admin/info", b""),
        ("POST", "/_tierstore/admin/heal", b"{}"),
        ("GET", "/_tierstore/admin/users", b""),
        ("POST", "/_tierstore/admin/users", b'{"name": "intruder"}'),
        ("GET", f"/_tierstore/admin/users/{victim}", b""),
        ("PUT", f"/_tierstore/admin/users/{victim}", b'{"enabled": false}'),
        ("DELETE", f"/_tierstore/admin/users/{victim}", b""),
        ("PUT", f"/_tierstore/admin/users/{victim}/policies/all", grant),
        ("GET", f"/_tierstore/admin/keys?user={victim}", b""),
        ("POST", "/_tierstore/admin/keys", json.dumps({"user": victim}).encode()),
        ("GET", "/_tierstore/admin/kms/keys", b""),
        ("POST", "/_tierstore/admin/kms/keys", b'{"key_id": "intruder-key"}'),
        ("GET", f"/_tierstore/admin/kms/keys/{kms_key}", b""),
        ("POST", f"/_tierstore/admin/kms/keys/{kms_key}/disable", b"{}"),
        ("POST", f"/_tierstore/admin/kms/keys/{kms_key}/rotate", b"{}"),
        ("POST", "/_tierstore/admin/kms/keys/no-such-key/rotate", b"{}"),  # 403 too: existence is not told
    ]
    for keys in (everything_s3, nothing, (service["access_key_id"], service["secret_key"])):
        for method, target, body in calls:
            path, _, query = target.partition("?")
            r = signed_request(
                server, method, path, body, query=[tuple(query.split("="))] if query else [],  # type: ignore[list-item]
                access_key=keys[0], secret_key=keys[1],
            )  # fmt: skip
            assert_error(r, 403, "AccessDenied")
    assert sorted(u["name"] for u in root.list_users()) == users_before
    assert root.list_access_keys(victim) == []
    assert root.user_policies(victim) == {}
    assert root.user_info(victim)["enabled"] is True
    assert "intruder-key" not in [k["key_id"] for k in root.kms_list_keys()]
    kms_after = root.kms_key_status(kms_key)
    assert (kms_after["enabled"], kms_after["versions"]) == (True, 1)


# --- DeleteObjects by a caller denied every key ----------------------------------------------


def test_delete_objects_denied_everywhere_hides_the_bucket(server: ServerProcess, s3: Any, bucket: str) -> None:
    root = _ext(server, (ACCESS_KEY, SECRET_KEY))
    nobody = make_client(server.endpoint, access_key=(k := _user(root))[0], secret_key=k[1])
    s3.put_object(Bucket=bucket, Key="a", Body=b"a")
    answers = []
    for name in (bucket, f"missing-{uuid.uuid4().hex[:12]}"):
        resp = nobody.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}]})
        answers.append((resp["ResponseMetadata"]["HTTPStatusCode"], resp.get("Deleted"), resp["Errors"]))
    assert answers[0] == answers[1]
    assert [(x["Key"], x["Code"]) for x in answers[0][2]] == [("a", "AccessDenied"), ("b", "AccessDenied")]
    assert _body_of(s3, bucket, "a") == b"a"
    # A caller allowed one key still learns that a missing bucket is missing (it may act on it).
    one = _user(root, _policy({"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::*/a"}))
    some = make_client(server.endpoint, access_key=one[0], secret_key=one[1])
    with pytest.raises(ClientError) as info:
        some.delete_objects(Bucket=f"missing-{uuid.uuid4().hex[:12]}", Delete={"Objects": [{"Key": "a"}]})
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"
    resp = some.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}]})
    assert [x["Key"] for x in resp["Deleted"]] == ["a"]
    assert [(x["Key"], x["Code"]) for x in resp["Errors"]] == [("b", "AccessDenied")]
    assert _body_of(s3, bucket, "a") is None


# --- datasets from readable objects ----------------------------------------------------------

DATASET_ACTIONS = ["tierstore:CreateDataset", "tierstore:GetDataset", "tierstore:GetDatasetManifest",
                   "tierstore:ReadDataset", "tierstore:ListDatasets"]  # fmt: skip


def _prefix_user(root: TierstoreClient, actions: list[str], bucket: str, prefix: str) -> Keys:
    """A user allowed ``actions`` (on ``*``) and s3:GetObject under ``prefix`` of ``bucket`` only."""
    return _user(
        root,
        _policy(
            {"Effect": "Allow", "Action": actions, "Resource": "*"},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"},
        ),
    )


def _status(call: Any) -> tuple[int, str]:
    try:
        call()
    except TierstoreClientError as exc:
        return exc.status, exc.code
    return 200, ""


def test_datasets_only_from_and_for_readable_objects(server: ServerProcess, s3: Any, bucket: str) -> None:
    root = _ext(server, (ACCESS_KEY, SECRET_KEY))
    mine = f"home/{uuid.uuid4().hex[:6]}/"
    user = _ext(server, _prefix_user(root, DATASET_ACTIONS, bucket, mine))
    for key in (f"{mine}1", f"{mine}2", "home/other/1", "top"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    name = f"ds-{uuid.uuid4().hex[:8]}"
    own = [{"bucket": bucket, "key": f"{mine}1"}, {"bucket": bucket, "key": f"{mine}2"}]
    record = user.create_dataset(name, rows=own)
    assert record["rows"] == 2
    assert [i.data for i in user.read_rows(record["ref"], [0, 1])] == [f"{mine}1".encode(), f"{mine}2".encode()]
    assert len(pq.read_table(io.BytesIO(user.dataset_manifest(record["ref"])))) == 2
    denied = (403, "AccessDenied")
    # Another's object, an object missing outside the prefix, and a missing one inside it.
    assert _status(lambda: user.create_dataset(name, rows=[*own, {"bucket": bucket, "key": "home/other/1"}])) == denied
    assert _status(lambda: user.create_dataset(name, rows=[{"bucket": bucket, "key": "home/other/none"}])) == denied
    versioned = [{"bucket": bucket, "key": "x", "version_id": "v"}]
    assert _status(lambda: user.create_dataset(name, rows=versioned)) == denied
    assert _status(lambda: user.create_dataset(name, rows=[{"bucket": bucket, "key": f"{mine}none"}]))[0] == 400
    # A prefix or a query lists the bucket: s3:ListBucket, asked before the bucket's existence shows.
    assert _status(lambda: user.create_dataset(name, bucket=bucket, prefix=mine)) == denied
    assert _status(lambda: user.create_dataset(name, bucket=f"missing-{uuid.uuid4().hex[:8]}", prefix=mine)) == denied
    assert [d["version"] for d in user.list_datasets(name)] == [1]  # nothing else was made

    # A dataset made by the root of the whole home/: the user reads its own rows, not the rest.
    mixed = root.create_dataset(f"{name}-all", bucket=bucket, prefix="home/")
    assert mixed["rows"] == 3
    items = list(user.read_rows(mixed["ref"], [0, 1, 2]))
    by_key = {i.data.decode(): i.status for i in items if i.ok}
    assert by_key == {f"{mine}1": 200, f"{mine}2": 200}
    assert [(i.status, (i.error or {}).get("code")) for i in items if not i.ok] == [(403, "AccessDenied")]
    assert _status(lambda: user.dataset_manifest(mixed["ref"])) == denied
    assert len(pq.read_table(io.BytesIO(root.dataset_manifest(mixed["ref"])))) == 3
    # A user allowed the whole bucket (list and read) makes datasets from prefixes.
    wide = _user(
        root,
        _policy(
            {"Effect": "Allow", "Action": DATASET_ACTIONS, "Resource": "*"},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]},
        ),
    )  # fmt: skip
    w = _ext(server, wide)
    assert w.create_dataset(f"{name}-w", bucket=bucket, prefix="home/")["rows"] == 3
    assert len(pq.read_table(io.BytesIO(w.dataset_manifest(mixed["ref"])))) == 3
    for ref in (record["ref"], mixed["ref"], f"{name}-w@1"):
        root.delete_dataset(ref)


def test_models_only_from_readable_objects(server: ServerProcess, s3: Any, bucket: str) -> None:
    root = _ext(server, (ACCESS_KEY, SECRET_KEY))
    mine = f"home/{uuid.uuid4().hex[:6]}"
    actions = ["tierstore:RegisterModel", "tierstore:GetModelManifest"]
    user = _ext(server, _prefix_user(root, actions, bucket, mine + "/"))
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    own, _ = write_checkpoint(s3, bucket, mine, 1, {"a.bin": b"a"})
    other, _ = write_checkpoint(s3, bucket, "home/other", 1, {"b.bin": b"b"})
    name = f"m-{uuid.uuid4().hex[:8]}"
    row = {"bucket": bucket, "member": "COMMIT.json"}
    record = user.create_model(name, [{**row, "key": own}], {})  # the server pins the commit's version
    assert record["rows"] == 1
    assert len(pq.read_table(io.BytesIO(user.model_manifest(record["ref"])))) == 1
    denied = (403, "AccessDenied")
    assert _status(lambda: user.create_model(name, [{**row, "key": other}], {})) == denied
    assert _status(lambda: user.create_model(name, [{**row, "key": "home/other/none"}], {})) == denied
    outside = {"bucket": bucket, "key": other, "member": "x"}
    assert _status(lambda: user.create_model(name, [{**row, "key": own}, outside], {})) == denied
    assert [m["version"] for m in root.list_models(name)] == [1]
    root.delete_model(record["ref"])
