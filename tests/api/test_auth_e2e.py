"""Authentication end to end: a real server, real HTTP, requests signed by botocore or by hand.

The hand-made signer below follows the AWS "Signature Version 4" and "aws-chunked" pages
directly, so the server is checked against the spec as well as against botocore.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import random
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import botocore.auth
import botocore.crt.auth
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.s3http import (
    EMPTY_SHA256,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED,
    Resp,
    Signed,
    amz_now,
    assert_error,
    assert_ok,
    fetch,
    hmac_hex,
    send,
    sign_v4,
    signed_request,
    signing_key,
)


def chunk_signature(s: Signed, prev: str, data: bytes) -> str:
    sts = "\n".join(
        ["AWS4-HMAC-SHA256-PAYLOAD", s.amz_date, s.scope, prev, EMPTY_SHA256, hashlib.sha256(data).hexdigest()]
    )
    return hmac_hex(s.key, sts)


def aws_chunked_signed(
    s: Signed, data: bytes, chunk_bytes: int, *, trailer: Mapping[str, str] | None = None
) -> tuple[bytes, list[str]]:
    """Body of a signed aws-chunked upload, and the chunk signatures in order."""
    pieces = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] + [b""]
    out = bytearray()
    prev = s.signature
    sigs = []
    for piece in pieces:
        prev = chunk_signature(s, prev, piece)
        sigs.append(prev)
        out += f"{len(piece):x};chunk-signature={prev}\r\n".encode() + piece + b"\r\n"
    if trailer is None:
        return bytes(out), sigs  # ends "0;chunk-signature=<sig>\r\n\r\n", as the spec shows
    out = out[:-2]  # the 0-size chunk header line ends the data; trailers follow
    canonical = "".join(f"{k}:{v}\n" for k, v in trailer.items())
    sts = "\n".join(
        ["AWS4-HMAC-SHA256-TRAILER", s.amz_date, s.scope, prev, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    for k, v in trailer.items():
        out += f"{k}:{v}\r\n".encode()
    out += f"x-amz-trailer-signature:{hmac_hex(s.key, sts)}\r\n\r\n".encode()
    return bytes(out), sigs


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


# --- fixtures ---------------------------------------------------------------------------



def key_path(bucket: str, key: str) -> str:
    return f"/{bucket}/{key}"


def assert_absent(s3: Any, bucket: str, key: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key=key)
    assert exc.value.response["Error"]["Code"] == "404"


def get_body(s3: Any, bucket: str, key: str) -> bytes:
    resp = s3.get_object(Bucket=bucket, Key=key)
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    data: bytes = resp["Body"].read()
    return data


# --- identity ---------------------------------------------------------------------------


def test_boto3_success_carries_request_id(server: ServerProcess, s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"hello")
    assert put["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    ids = {put["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]}
    for resp in (s3.head_object(Bucket=bucket, Key="k"), s3.list_objects_v2(Bucket=bucket), s3.list_buckets()):
        ids.add(resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"])
    assert len(ids) == 4, "every request gets its own id"
    assert get_body(s3, bucket, "k") == b"hello"


def test_wrong_secret_is_signature_does_not_match(server: ServerProcess, bucket: str) -> None:
    bad = make_client(server.endpoint, secret_key=SECRET_KEY[:-1] + "X")
    with pytest.raises(ClientError) as exc:
        bad.list_objects_v2(Bucket=bucket)
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    r = signed_request(server, "PUT", key_path(bucket, "x"), b"data", secret_key="wrong" * 8)
    assert_error(r, 403, "SignatureDoesNotMatch")
    r = signed_request(server, "GET", f"/{bucket}", secret_key="wrong" * 8)
    assert_error(r, 403, "SignatureDoesNotMatch", resource=f"/{bucket}")


def test_unknown_access_key_is_invalid_access_key_id(server: ServerProcess, s3: Any, bucket: str) -> None:
    for version in ("s3v4", "s3"):
        bad = make_client(server.endpoint, access_key="NOSUCHKEY00000000000", signature_version=version)
        with pytest.raises(ClientError) as exc:
            bad.put_object(Bucket=bucket, Key="k", Body=b"x")
        assert exc.value.response["Error"]["Code"] == "InvalidAccessKeyId", version
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    r = signed_request(server, "GET", key_path(bucket, "k"), access_key="NOSUCHKEY00000000000")
    assert_error(r, 403, "InvalidAccessKeyId", resource=f"/{bucket}/k")
    assert_absent(s3, bucket, "k")


@pytest.mark.parametrize(
    ("method", "path_fmt", "body"),
    [
        ("GET", "/", None),
        ("GET", "/{b}", None),
        ("GET", "/{b}/existing", None),
        ("PUT", "/{b}/new", b"anonymous data"),
        ("DELETE", "/{b}/existing", None),
        ("PUT", "/anon-bucket-{u}", b""),
    ],
)
def test_anonymous_requests_are_denied(
    server: ServerProcess, s3: Any, bucket: str, method: str, path_fmt: str, body: bytes | None
) -> None:
    s3.put_object(Bucket=bucket, Key="existing", Body=b"keep")
    path = path_fmt.format(b=bucket, u=uuid.uuid4().hex[:8])
    r = send(server.port, method, path, {"Host": f"127.0.0.1:{server.port}"}, body)
    fields = assert_error(r, 403, "AccessDenied")
    assert fields["Resource"] == path
    assert get_body(s3, bucket, "existing") == b"keep"
    assert_absent(s3, bucket, "new")
    assert not any(b["Name"].startswith("anon-bucket-") for b in s3.list_buckets()["Buckets"])


def test_hand_signed_request_is_accepted(server: ServerProcess, s3: Any, bucket: str) -> None:
    """Our spec signer and the server agree (so the negative tests below test what they say)."""
    r = signed_request(server, "PUT", key_path(bucket, "dir/a b+c~é"), b"spec", headers={"x-amz-meta-who": "me"})
    assert_ok(r)
    assert r.headers["etag"] == f'"{hashlib.md5(b"spec").hexdigest()}"'
    r = signed_request(server, "GET", f"/{bucket}", query=[("list-type", "2"), ("prefix", "dir/")])
    assert_ok(r)
    assert b"<Key>dir/a b+c~\xc3\xa9</Key>" in r.body
    assert s3.head_object(Bucket=bucket, Key="dir/a b+c~é")["Metadata"] == {"who": "me"}


def test_unsigned_extra_amz_header_is_rejected(server: ServerProcess, s3: Any, bucket: str) -> None:
    s = sign_v4(server.port, "PUT", key_path(bucket, "k"), payload_hash=UNSIGNED)
    headers = {**s.headers, "x-amz-meta-added-later": "evil"}
    assert_error(send(server.port, "PUT", s.target, headers, b"x"), 403, "AccessDenied")
    assert_absent(s3, bucket, "k")


def test_tampered_signed_header_is_rejected(server: ServerProcess, s3: Any, bucket: str) -> None:
    s = sign_v4(server.port, "PUT", key_path(bucket, "k"), payload_hash=UNSIGNED, headers={"x-amz-meta-a": "1"})
    headers = {**s.headers, "x-amz-meta-a": "2"}
    assert_error(send(server.port, "PUT", s.target, headers, b"x"), 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "k")


# --- clock skew -------------------------------------------------------------------------


@pytest.mark.parametrize("offset_s", [-20 * 60, 20 * 60])
def test_clock_skew_is_rejected(server: ServerProcess, s3: Any, bucket: str, offset_s: int) -> None:
    r = signed_request(server, "PUT", key_path(bucket, "k"), b"x", amz_date=amz_now(offset_s))
    assert_error(r, 403, "RequestTimeTooSkewed")
    assert_absent(s3, bucket, "k")
    # A small skew (a normal clock drift) is fine.
    assert_ok(signed_request(server, "PUT", key_path(bucket, "k"), b"x", amz_date=amz_now(offset_s / 20)))


def test_clock_skew_with_botocore_signer(server: ServerProcess, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    skewed = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)

    def fake_now(remove_tzinfo: bool = True) -> dt.datetime:
        return skewed.replace(tzinfo=None) if remove_tzinfo else skewed

    # botocore signs with the awscrt signer when awscrt is installed (it is: tierstore needs it).
    monkeypatch.setattr(botocore.auth, "get_current_datetime", fake_now)
    monkeypatch.setattr(botocore.crt.auth, "get_current_datetime", fake_now)
    client = make_client(server.endpoint)
    with pytest.raises(ClientError) as exc:
        client.list_objects_v2(Bucket=bucket)
    assert exc.value.response["Error"]["Code"] == "RequestTimeTooSkewed"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


# --- payload hashes ---------------------------------------------------------------------


def test_unsigned_payload_put(server: ServerProcess, s3: Any, bucket: str, rng: random.Random) -> None:
    data = rng.randbytes(100_000)
    r = signed_request(server, "PUT", key_path(bucket, "u"), data, payload_hash=UNSIGNED)
    assert_ok(r)
    assert get_body(s3, bucket, "u") == data


def test_payload_sha256_mismatch_stores_nothing(server: ServerProcess, s3: Any, bucket: str) -> None:
    claimed = hashlib.sha256(b"what I promised").hexdigest()
    r = signed_request(server, "PUT", key_path(bucket, "m"), b"what I sent", payload_hash=claimed)
    assert_error(r, 400, "XAmzContentSHA256Mismatch")
    assert_absent(s3, bucket, "m")
    # An existing object survives a failed overwrite.
    s3.put_object(Bucket=bucket, Key="m", Body=b"version one")
    r = signed_request(server, "PUT", key_path(bucket, "m"), b"what I sent", payload_hash=claimed)
    assert_error(r, 400, "XAmzContentSHA256Mismatch")
    assert get_body(s3, bucket, "m") == b"version one"


def test_bad_content_sha256_value_is_rejected(server: ServerProcess, s3: Any, bucket: str) -> None:
    r = signed_request(server, "PUT", key_path(bucket, "m"), b"x", payload_hash="not-a-hash")
    assert r.status == 400, r.body
    assert_absent(s3, bucket, "m")


# --- presigned URLs ---------------------------------------------------------------------


def test_presigned_v4_get_and_put(server: ServerProcess, s3: Any, bucket: str, rng: random.Random) -> None:
    data = rng.randbytes(70_000)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "p/q r.bin"}, ExpiresIn=300)
    assert "X-Amz-Signature=" in put_url
    assert_ok(fetch(put_url, "PUT", data))
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p/q r.bin"}, ExpiresIn=300)
    r = fetch(get_url)
    assert_ok(r)
    assert r.body == data
    assert get_body(s3, bucket, "p/q r.bin") == data


def test_presigned_v4_tampering_is_rejected(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"A")
    s3.put_object(Bucket=bucket, Key="b", Body=b"B")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a"}, ExpiresIn=300)
    assert_ok(fetch(url))
    assert "X-Amz-Expires=300" in url
    variants = {
        "other key": url.replace(f"/{bucket}/a?", f"/{bucket}/b?"),
        "longer expiry": url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000"),
        "added parameter": url + "&response-content-type=text%2Fhtml",
        "signature": url[:-1] + ("0" if url[-1] != "0" else "1"),
    }
    for what, bad in variants.items():
        assert bad != url, what
        r = fetch(bad)
        assert_error(r, 403, "SignatureDoesNotMatch")
        assert r.body not in {b"A", b"B"}, what
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "c"}, ExpiresIn=300)
    assert_error(fetch(put_url.replace(f"/{bucket}/c?", f"/{bucket}/d?"), "PUT", b"x"), 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "c")
    assert_absent(s3, bucket, "d")


def test_presigned_v4_other_method_is_rejected(server: ServerProcess, s3: Any, bucket: str) -> None:
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "m"}, ExpiresIn=300)
    assert_error(fetch(get_url, "PUT", b"smuggled"), 403, "SignatureDoesNotMatch")
    assert_error(fetch(get_url, "DELETE"), 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "m")


def test_presigned_v4_longer_than_a_week_is_refused(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="w", Body=b"w")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "w"}, ExpiresIn=604801)
    fields = assert_error(fetch(url), 403, "AuthorizationQueryParametersError")  # AWS: 403, this message
    assert fields["Message"] == (
        "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires "
        "must be less than 604800 seconds"
    )
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "w"}, ExpiresIn=604800)
    assert fetch(url).body == b"w"


def sign_v2(method: str, path: str, date: str, secret: str = SECRET_KEY) -> str:
    string_to_sign = f"{method}\n\n\n{date}\n{path}"
    digest = hmac.digest(secret.encode(), string_to_sign.encode(), "sha1")
    return f"AWS {ACCESS_KEY}:{base64.b64encode(digest).decode()}"


@pytest.mark.parametrize("offset_s", [-20 * 60, 20 * 60, 0])
def test_sigv2_clock_skew(server: ServerProcess, s3: Any, bucket: str, offset_s: int) -> None:
    s3.put_object(Bucket=bucket, Key="v2skew", Body=b"skew")
    date = email.utils.formatdate(time.time() + offset_s, usegmt=True)
    path = f"/{bucket}/v2skew"
    r = send(
        server.port,
        "GET",
        path,
        {"Host": f"127.0.0.1:{server.port}", "Date": date, "Authorization": sign_v2("GET", path, date)},
    )
    if offset_s:
        assert_error(r, 403, "RequestTimeTooSkewed")
    else:
        assert_ok(r)
        assert r.body == b"skew"


def test_presigned_v2_get_and_put(server: ServerProcess, s3: Any, bucket: str) -> None:
    v2 = make_client(server.endpoint, signature_version="s3")
    put_url = v2.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "v2 key"}, ExpiresIn=300)
    assert "AWSAccessKeyId=" in put_url and "X-Amz-Signature" not in put_url
    assert_ok(fetch(put_url, "PUT", b"sigv2 body"))
    get_url = v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "v2 key"}, ExpiresIn=300)
    r = fetch(get_url)
    assert_ok(r)
    assert r.body == b"sigv2 body"
    s3.put_object(Bucket=bucket, Key="other", Body=b"secret stuff")
    assert_error(fetch(get_url.replace("/v2%20key?", "/other?")), 403, "SignatureDoesNotMatch")


def test_presigned_urls_expire(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e", Body=b"soon gone")
    v2 = make_client(server.endpoint, signature_version="s3")
    urls = {
        "v4 get": (s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "e"}, ExpiresIn=1), "GET"),
        "v4 put": (s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "e"}, ExpiresIn=1), "PUT"),
        "v2 get": (v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "e"}, ExpiresIn=1), "GET"),
        "v2 put": (v2.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "e"}, ExpiresIn=1), "PUT"),
    }
    time.sleep(2.2)
    for what, (url, method) in urls.items():
        r = fetch(url, method, b"overwrite" if method == "PUT" else None)
        fields = assert_error(r, 403, "AccessDenied")
        assert "expired" in fields["Message"].lower(), what
    assert get_body(s3, bucket, "e") == b"soon gone"


# --- SigV2 header auth ------------------------------------------------------------------


def test_sigv2_header_auth(server: ServerProcess, s3: Any, bucket: str, rng: random.Random) -> None:
    v2 = make_client(server.endpoint, signature_version="s3")
    data = rng.randbytes(50_000)
    put = v2.put_object(Bucket=bucket, Key="v2/obj 1", Body=data, ContentType="application/x-test", Metadata={"m": "v"})
    assert put["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    got = v2.get_object(Bucket=bucket, Key="v2/obj 1")
    assert got["Body"].read() == data
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"m": "v"}
    listing = v2.list_objects(Bucket=bucket, Prefix="v2/")
    assert [o["Key"] for o in listing["Contents"]] == ["v2/obj 1"]
    assert [o["Key"] for o in v2.list_objects_v2(Bucket=bucket)["Contents"]] == ["v2/obj 1"]
    v2.delete_object(Bucket=bucket, Key="v2/obj 1")
    assert_absent(s3, bucket, "v2/obj 1")
    bad = make_client(server.endpoint, signature_version="s3", secret_key="nope" * 10)
    with pytest.raises(ClientError) as exc:
        bad.get_object(Bucket=bucket, Key="v2/obj 1")
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


# --- aws-chunked streaming uploads ------------------------------------------------------


def streaming_headers(data_len: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(data_len),
        "content-type": "application/octet-stream",
        **(extra or {}),
    }


def put_streaming_signed(
    server: ServerProcess,
    bucket: str,
    key: str,
    data: bytes,
    *,
    chunk_bytes: int = 64 * 1024,
    tamper: Any = None,
    trailer: Mapping[str, str] | None = None,
) -> Resp:
    mode = STREAMING_SIGNED if trailer is None else STREAMING_SIGNED_TRAILER
    extra = {"x-amz-trailer": ",".join(trailer)} if trailer else None
    headers = streaming_headers(len(data), extra)
    s = sign_v4(server.port, "PUT", key_path(bucket, key), payload_hash=mode, headers=headers)
    body, sigs = aws_chunked_signed(s, data, chunk_bytes, trailer=trailer)
    if tamper is not None:
        body = tamper(body, sigs)
    return send(server.port, "PUT", s.target, s.headers, body)


def test_streaming_signed_upload(server: ServerProcess, s3: Any, bucket: str, rng: random.Random) -> None:
    for size, chunk in ((0, 8192), (1, 8192), (200_000, 64 * 1024), (3 * 65536, 65536), (150_001, 8192)):
        data = rng.randbytes(size)
        key = f"stream-{size}-{chunk}"
        r = put_streaming_signed(server, bucket, key, data, chunk_bytes=chunk)
        assert_ok(r)
        assert r.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
        assert get_body(s3, bucket, key) == data
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == size
        assert "ContentEncoding" not in head  # aws-chunked is framing, not the object's encoding


def _flip_signature(index: int) -> Any:
    def tamper(body: bytes, sigs: list[str]) -> bytes:
        sig = sigs[index]
        bad = sig[:-1] + ("0" if sig[-1] != "0" else "1")
        assert body.count(sig.encode()) == 1
        return body.replace(sig.encode(), bad.encode())

    return tamper


def _flip_data_byte(offset: int) -> Any:
    def tamper(body: bytes, sigs: list[str]) -> bytes:
        # The first chunk's header is "<hex>;chunk-signature=<64>\r\n".
        start = body.index(b"\r\n") + 2 + offset
        return body[:start] + bytes([body[start] ^ 0x01]) + body[start + 1 :]

    return tamper


@pytest.mark.parametrize(
    ("what", "tamper"),
    [
        ("first chunk signature", _flip_signature(0)),
        ("middle chunk signature", _flip_signature(1)),
        ("final chunk signature", _flip_signature(-1)),
        ("first data byte", _flip_data_byte(0)),
        ("last byte of the first chunk", _flip_data_byte(65535)),
    ],
)
def test_streaming_signed_tampering_stores_nothing(
    server: ServerProcess, s3: Any, bucket: str, rng: random.Random, what: str, tamper: Any
) -> None:
    data = rng.randbytes(150_000)
    r = put_streaming_signed(server, bucket, "t", data, tamper=tamper)
    assert_error(r, 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "t")
    s3.put_object(Bucket=bucket, Key="t", Body=b"previous")
    r = put_streaming_signed(server, bucket, "t", data, tamper=tamper)
    assert_error(r, 403, "SignatureDoesNotMatch")
    assert get_body(s3, bucket, "t") == b"previous", what


def test_streaming_signed_truncated_body_stores_nothing(
    server: ServerProcess, s3: Any, bucket: str, rng: random.Random
) -> None:
    data = rng.randbytes(100_000)

    def drop_final_chunk(body: bytes, sigs: list[str]) -> bytes:
        return body[: body.index(f"0;chunk-signature={sigs[-1]}".encode())]

    r = put_streaming_signed(server, bucket, "cut", data, tamper=drop_final_chunk)
    assert 400 <= r.status < 500, r.body
    assert_absent(s3, bucket, "cut")


def test_streaming_signed_trailer(server: ServerProcess, s3: Any, bucket: str, rng: random.Random) -> None:
    data = rng.randbytes(100_000)
    r = put_streaming_signed(server, bucket, "st", data, trailer={"x-amz-checksum-crc32": crc32_b64(data)})
    assert_ok(r)
    assert get_body(s3, bucket, "st") == data
    head = s3.head_object(Bucket=bucket, Key="st", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(data)

    def flip_trailer_signature(body: bytes, sigs: list[str]) -> bytes:
        i = body.index(b"x-amz-trailer-signature:") + len(b"x-amz-trailer-signature:")
        return body[:i] + (b"0" if body[i : i + 1] != b"0" else b"1") + body[i + 1 :]

    r = put_streaming_signed(
        server, bucket, "st2", data, trailer={"x-amz-checksum-crc32": crc32_b64(data)}, tamper=flip_trailer_signature
    )
    assert_error(r, 403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, "st2")


def put_unsigned_trailer(
    server: ServerProcess, bucket: str, key: str, data: bytes, checksum: str, *, chunk_bytes: int = 32 * 1024
) -> Resp:
    headers = streaming_headers(len(data), {"x-amz-trailer": "x-amz-checksum-crc32"})
    s = sign_v4(server.port, "PUT", key_path(bucket, key), payload_hash=STREAMING_UNSIGNED_TRAILER, headers=headers)
    body = bytearray()
    for i in range(0, len(data), chunk_bytes):
        piece = data[i : i + chunk_bytes]
        body += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    body += f"0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n".encode()
    return send(server.port, "PUT", s.target, s.headers, bytes(body))


def test_streaming_unsigned_trailer(server: ServerProcess, s3: Any, bucket: str, rng: random.Random) -> None:
    data = rng.randbytes(90_000)
    r = put_unsigned_trailer(server, bucket, "ut", data, crc32_b64(data))
    assert_ok(r)
    assert r.headers.get("x-amz-checksum-crc32") == crc32_b64(data)
    assert get_body(s3, bucket, "ut") == data

    wrong = crc32_b64(data + b"!")
    r = put_unsigned_trailer(server, bucket, "ut-bad", data, wrong)
    assert_error(r, 400, "BadDigest")
    assert_absent(s3, bucket, "ut-bad")
    r = put_unsigned_trailer(server, bucket, "ut", rng.randbytes(1000), wrong)
    assert_error(r, 400, "BadDigest")
    assert get_body(s3, bucket, "ut") == data


def test_boto3_flexible_checksum_upload(server: ServerProcess, s3: Any, bucket: str, rng: random.Random) -> None:
    """Over plain http botocore signs the payload and sends x-amz-checksum-crc32 as a header
    (it uses the aws-chunked trailer only over https; the hand-made trailer tests cover that)."""
    data = rng.randbytes(300_000)
    s3.put_object(Bucket=bucket, Key="boto", Body=data, ChecksumAlgorithm="CRC32")
    assert get_body(s3, bucket, "boto") == data
    head = s3.head_object(Bucket=bucket, Key="boto", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(data)


# --- the log ----------------------------------------------------------------------------


def _all_failures(server: ServerProcess, bucket: str) -> Iterator[Resp]:
    yield signed_request(server, "GET", f"/{bucket}", secret_key="wrong" * 8)
    yield signed_request(server, "GET", f"/{bucket}", amz_date=amz_now(3600))
    yield send(server.port, "GET", f"/{bucket}", {"Host": "x", "Authorization": "AWS4-HMAC-SHA256 garbage"})
    yield send(server.port, "GET", f"/{bucket}", {"Host": "x", "Authorization": f"AWS {ACCESS_KEY}:{SECRET_KEY}"})


def test_secrets_never_reach_the_log(server: ServerProcess, bucket: str) -> None:
    """Runs last in this module, after every kind of auth failure above."""
    for r in _all_failures(server, bucket):
        assert 400 <= r.status < 500
        assert SECRET_KEY not in r.body.decode("utf-8", "replace")
    log = server.log_path.read_text(errors="replace")
    assert log, "the server log exists and is not empty"
    assert SECRET_KEY not in log
    assert base64.b64encode(SECRET_KEY.encode()).decode() not in log
    assert signing_key(SECRET_KEY, amz_now()[:8]).hex() not in log
