"""tierstore.api._auth: S3 request authentication, checked against botocore's own signers.

Requests are signed by botocore (a real boto3 client whose ``before-send`` hook captures the
request instead of sending it, or the signer classes directly) and converted into what an ASGI
server would hand us: the raw percent-encoded path, the raw query string, lower-case headers.
Randomized tests print their seed; replay with ``TIERSTORE_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import datetime
import email.utils
import hashlib
import hmac
import io
import os
import random
import types
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

try:
    from botocore.crt import auth as crt_auth
except ImportError:  # pragma: no cover - awscrt is a dependency, but keep the tests runnable
    crt_auth = None

from tierstore import errors
from tierstore.api import _sigv4
from tierstore.api._auth import Authenticator, AuthRequest, AuthResult, PayloadMode, wrap_body
from tierstore.api._chunked import ChunkedDecoder

AK = "AKIDTIERSTORE00000001"
SECRET = "tier/Secret+Key/0123456789abcdefEXAMPLE"
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
AMZ_T0 = "20231114T221320Z"
EMPTY = hashlib.sha256(b"").hexdigest()
SEED = int(os.environ.get("TIERSTORE_SEED") or random.SystemRandom().randrange(1, 2**31))

HOSTILE_KEYS = [
    "a b",
    "ünïcødé/ключ/日本語",
    "a+b=c&d",
    "100%",
    "%2F%41 literally",
    "~user/~",
    "dir//double//",
    "../up/../x",
    "a/./b/.",
    "sp ace/+/%/",
    "*'()!$,;:@",
    "tab\tand\nnewline",
    "?q#frag",
    "trailing/",
]


# --- botocore plumbing ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's signers read the clock themselves; pin them all to T0."""
    real_formatdate = email.utils.formatdate

    def formatdate(timeval: float | None = None, localtime: bool = False, usegmt: bool = False) -> str:
        return real_formatdate(T0 if timeval is None else timeval, localtime, usegmt)

    def now(remove_tzinfo: bool = True) -> datetime.datetime:
        aware = datetime.datetime.fromtimestamp(T0, datetime.UTC)
        return aware.replace(tzinfo=None) if remove_tzinfo else aware

    monkeypatch.setattr(botocore.auth, "get_current_datetime", now)
    if crt_auth is not None:  # with awscrt installed, clients sign with the CRT signers
        monkeypatch.setattr(crt_auth, "get_current_datetime", now)
    monkeypatch.setattr(botocore.auth, "formatdate", formatdate)
    monkeypatch.setattr(botocore.auth, "time", types.SimpleNamespace(time=lambda: float(T0)))


class _Captured(Exception):
    pass


def client(
    *,
    signature_version: str = "s3v4",
    addressing_style: str = "path",
    endpoint: str = "http://localhost:9000",
    secret: str = SECRET,
    region: str = "us-east-1",
    payload_signing: bool | None = None,
) -> Any:
    s3_config: dict[str, Any] = {"addressing_style": addressing_style}
    if payload_signing is not None:
        s3_config["payload_signing_enabled"] = payload_signing
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=AK,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(
            signature_version=signature_version,
            s3=s3_config,
            retries={"max_attempts": 1},
        ),
    )


def capture(s3: Any, operation: str, **params: Any) -> tuple[AuthRequest, bytes]:
    """Run ``operation`` through botocore up to the wire; return what the server would see."""
    seen: list[Any] = []

    def before_send(request: Any, **_: Any) -> None:
        seen.append(request)
        raise _Captured

    s3.meta.events.register("before-send.s3", before_send)
    with pytest.raises(_Captured):
        getattr(s3, operation)(**params)
    request = seen[0]
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    return to_auth_request(request.method, request.url, request.headers), body or b""


def to_auth_request(method: str, url: str, headers: Mapping[str, Any]) -> AuthRequest:
    """As an ASGI server sees it: raw path bytes, raw query, lower-case latin-1 headers."""
    parts = urlsplit(url)
    seen: dict[str, str] = {}
    for name, value in headers.items():
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        key = name.lower()
        seen[key] = f"{seen[key]},{text}" if key in seen else text
    seen.setdefault("host", parts.netloc)
    host = parts.hostname or ""
    virtual = host.split(".", 1)[0] if host.endswith(".localhost") else None
    return AuthRequest(method, parts.path.encode("latin-1") or b"/", parts.query.encode("latin-1"), seen, virtual)


def sign_direct(
    signer_cls: type[Any],
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    secret: str = SECRET,
    **signer_kw: Any,
) -> AuthRequest:
    """Sign with a botocore signer class directly (no client, no handlers)."""
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    creds = Credentials(AK, secret)
    if signer_cls in (HmacV1Auth,):
        signer = signer_cls(creds)
    elif signer_cls is HmacV1QueryAuth:
        signer = signer_cls(creds, **signer_kw)
    else:
        signer = signer_cls(creds, "s3", signer_kw.pop("region", "us-east-1"), **signer_kw)
    signer.add_auth(request)
    return to_auth_request(method, request.url, request.headers)


def authenticator(clock: float = T0, **kw: Any) -> Authenticator:
    secrets = {AK: SECRET}
    return Authenticator(secrets.get, clock=lambda: clock, **kw)


def replace(req: AuthRequest, **changes: Any) -> AuthRequest:
    fields = {
        "method": req.method,
        "raw_path": req.raw_path,
        "query_string": req.query_string,
        "headers": dict(req.headers),
        "virtual_bucket": req.virtual_bucket,
    }
    fields.update(changes)
    return AuthRequest(**fields)


def with_headers(req: AuthRequest, **changes: str | None) -> AuthRequest:
    headers = dict(req.headers)
    for attr, value in changes.items():
        name = attr.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return replace(req, headers=headers)


def check_no_secret(exc: BaseException) -> None:
    text = f"{exc} {exc!r} {exc.args!r} {getattr(exc, 'message', '')}"
    assert SECRET not in text
    assert quote(SECRET, safe="") not in text


# --- body plumbing -------------------------------------------------------------------------


def pieces_of(data: bytes, rng: random.Random, max_piece: int) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, max_piece)
        out.append(data[pos : pos + n])
        pos += n
    return out


async def _aiter(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def consume(
    pieces: Iterable[bytes], auth: AuthResult, headers: Mapping[str, str]
) -> tuple[list[bytes], dict[str, str]]:
    """Drain ``wrap_body`` like a committing consumer: data counts only after exhaustion."""

    async def run() -> tuple[list[bytes], dict[str, str]]:
        body, trailers = wrap_body(_aiter(pieces), auth, headers)
        received = [piece async for piece in body]
        return received, trailers

    return asyncio.run(run())


def signing_key(secret: str, date: str, region: str = "us-east-1") -> bytes:
    """Test-side SigV4 key derivation (independent of the code under test)."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def chunk_frames(
    key: bytes,
    amz_date: str,
    scope: str,
    seed: str,
    chunks: list[bytes],
    trailers: dict[str, str] | None = None,
) -> list[bytes]:
    """Test-side aws-chunked signer: one frame per chunk, then the final frame (+ trailers)."""
    frames = []
    prev = seed
    for chunk in [*chunks, b""]:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY, hashlib.sha256(chunk).hexdigest()])
        prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        head = f"{len(chunk):x};chunk-signature={prev}\r\n".encode()
        frames.append(head + chunk + b"\r\n" if chunk else head)
    if trailers is None:
        frames[-1] += b"\r\n"
    else:
        canonical = "".join(f"{k}:{v}\n" for k, v in trailers.items()).encode()
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev, hashlib.sha256(canonical).hexdigest()])
        trailer_sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        lines = "".join(f"{k}:{v}\r\n" for k, v in trailers.items())
        frames[-1] += f"{lines}x-amz-trailer-signature:{trailer_sig}\r\n\r\n".encode()
    return frames


class _StreamingSigV4(S3SigV4Auth):
    """botocore's S3 signer with the payload line set to a streaming literal (botocore itself
    never sends signed aws-chunked bodies, so only the seed request comes from it)."""

    literal = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"

    def payload(self, request: Any) -> str:
        return self.literal


def streaming_request(
    decoded_length: int, *, trailer: str | None = None, region: str = "us-east-1"
) -> tuple[AuthRequest, str]:
    """A botocore-signed seed request for a signed aws-chunked PUT; returns it and its seed."""
    headers = {"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(decoded_length)}
    literal = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    if trailer is not None:
        headers["X-Amz-Trailer"] = trailer
        literal += "-TRAILER"
    request = AWSRequest(method="PUT", url="http://localhost:9000/bkt/chunked%20key", headers=headers)
    signer = _StreamingSigV4(Credentials(AK, SECRET), "s3", region)
    signer.literal = literal
    signer.add_auth(request)
    req = to_auth_request("PUT", request.url, request.headers)
    seed = req.headers["authorization"].rsplit("Signature=", 1)[1]
    return req, seed


# === SigV4, Authorization header =============================================================


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_v4_header_put_with_hostile_key(key: str) -> None:
    req, body = capture(client(), "put_object", Bucket="bkt", Key=key, Body=b"payload", Metadata={"m": "two  spaces "})
    result = authenticator().authenticate(req)
    assert (result.access_key, result.scheme, result.payload) == (AK, "v4-header", PayloadMode.SIGNED)
    assert result.expected_sha256 == hashlib.sha256(body).hexdigest()
    received, _ = consume([body[:3], body[3:]], result, req.headers)
    assert b"".join(received) == body


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_v4_header_tampered_path_is_rejected(key: str) -> None:
    req, _ = capture(client(), "get_object", Bucket="bkt", Key=key)
    other = replace(req, raw_path=req.raw_path + b"x")
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(other)


@pytest.mark.parametrize("key", HOSTILE_KEYS)
@pytest.mark.parametrize("signer_cls", [S3SigV4Auth, S3SigV4QueryAuth])
def test_v4_pure_python_signers_with_hostile_key(key: str, signer_cls: type[Any]) -> None:
    # The client above signs with awscrt when it is installed; this checks botocore's own classes.
    url = "http://localhost:9000/bkt/" + quote(key, safe="/~") + "?versionId=a%2Bb&tagging"
    body = b"body" if signer_cls is S3SigV4Auth else b""  # the query signer moves a body into the URL
    req = sign_direct(signer_cls, "PUT", url, {"x-amz-meta-k": "  v  w "}, body)
    result = authenticator().authenticate(req)
    assert result.access_key == AK
    assert result.scheme == ("v4-header" if signer_cls is S3SigV4Auth else "v4-query")
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(replace(req, raw_path=req.raw_path.replace(b"/bkt/", b"/bkt/x")))


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("list_objects_v2", {"Bucket": "bkt", "Prefix": "a b+é/", "Delimiter": "/", "StartAfter": "x~y"}),
        ("list_objects", {"Bucket": "bkt"}),
        ("create_multipart_upload", {"Bucket": "bkt", "Key": "k"}),
        ("upload_part", {"Bucket": "bkt", "Key": "k", "UploadId": "u/+=", "PartNumber": 3, "Body": b"x" * 10}),
        ("get_object", {"Bucket": "bkt", "Key": "k", "Range": "bytes=0-9", "VersionId": "v 1"}),
        ("delete_objects", {"Bucket": "bkt", "Delete": {"Objects": [{"Key": "a"}, {"Key": "b&c"}]}}),
        ("list_buckets", {}),
    ],
)
@pytest.mark.parametrize("endpoint", ["http://localhost:9000", "https://127.0.0.1"])
def test_v4_header_botocore_operations(operation: str, params: dict[str, Any], endpoint: str) -> None:
    req, body = capture(client(endpoint=endpoint), operation, **params)
    result = authenticator().authenticate(req)
    assert result.access_key == AK
    assert result.scheme == "v4-header"
    received, _ = consume([body], result, req.headers)
    assert b"".join(received) == params.get("Body", body)  # aws-chunked over https, decoded


def test_v4_header_any_region_in_scope_is_accepted() -> None:
    req, _ = capture(client(region="eu-west-3"), "head_object", Bucket="bkt", Key="k")
    assert "/eu-west-3/s3/aws4_request" in req.headers["authorization"]
    assert authenticator(region="us-east-1").authenticate(req).access_key == AK


def test_v4_header_wrong_secret_and_unknown_key() -> None:
    req, _ = capture(client(secret="not-the-secret"), "get_object", Bucket="bkt", Key="k")
    with pytest.raises(errors.SignatureDoesNotMatch) as wrong:
        authenticator().authenticate(req)
    check_no_secret(wrong.value)
    nobody = Authenticator(lambda _ak: None, clock=lambda: T0)
    with pytest.raises(errors.InvalidAccessKeyId) as unknown:
        nobody.authenticate(req)
    check_no_secret(unknown.value)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: replace(r, method="DELETE"),
        lambda r: replace(r, query_string=r.query_string.replace(b"prefix=p", b"prefix=q")),
        lambda r: replace(r, query_string=r.query_string + b"&max-keys=1"),
        lambda r: replace(r, query_string=b""),
        lambda r: with_headers(r, host="evil.localhost:9000"),
        lambda r: with_headers(r, x_amz_date="20231114T221321Z"),
        lambda r: replace(r, raw_path=b"/bkt2"),
    ],
)
def test_v4_header_tampered_request_is_rejected(tamper: Callable[[AuthRequest], AuthRequest]) -> None:
    req, _ = capture(client(), "list_objects_v2", Bucket="bkt", Prefix="p")
    with pytest.raises(errors.SignatureDoesNotMatch) as info:
        authenticator().authenticate(tamper(req))
    check_no_secret(info.value)


def test_v4_header_tampered_signed_header_value() -> None:
    req, _ = capture(client(), "put_object", Bucket="bkt", Key="k", Body=b"x", Metadata={"owner": "alice"})
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(with_headers(req, x_amz_meta_owner="mallory"))


def test_v4_header_unsigned_amz_header_is_rejected() -> None:
    req, _ = capture(client(), "put_object", Bucket="bkt", Key="k", Body=b"x")
    with pytest.raises(errors.AccessDenied, match="not signed"):
        authenticator().authenticate(with_headers(req, x_amz_acl="public-read"))


def test_v4_header_unsigned_ordinary_header_is_fine() -> None:
    req, _ = capture(client(), "get_object", Bucket="bkt", Key="k")
    assert authenticator().authenticate(with_headers(req, user_agent="curl", accept="*/*")).access_key == AK


@pytest.mark.parametrize(("offset_s", "ok"), [(0, True), (899, True), (-899, True), (901, False), (-901, False)])
def test_v4_header_clock_skew(offset_s: int, ok: bool) -> None:
    req, _ = capture(client(), "get_object", Bucket="bkt", Key="k")
    auth = authenticator(clock=T0 + offset_s)
    if ok:
        assert auth.authenticate(req).access_key == AK
    else:
        with pytest.raises(errors.RequestTimeTooSkewed):
            auth.authenticate(req)


def test_v4_header_date_header_instead_of_x_amz_date() -> None:
    # botocore signs with Date (and no X-Amz-Date) when the request already carries a Date.
    req = sign_direct(S3SigV4Auth, "GET", "http://localhost:9000/bkt/k", {"Date": "whatever"})
    assert "x-amz-date" not in req.headers
    assert req.headers["date"].startswith("Tue, 14 Nov 2023 22:13:20")
    assert authenticator().authenticate(req).access_key == AK
    with pytest.raises(errors.RequestTimeTooSkewed):
        authenticator(clock=T0 + 3600).authenticate(req)


def test_v4_header_missing_or_bad_date() -> None:
    req, _ = capture(client(), "get_object", Bucket="bkt", Key="k")
    with pytest.raises(errors.AccessDenied, match="Date"):
        authenticator().authenticate(with_headers(req, x_amz_date=None))
    with pytest.raises(errors.AccessDenied, match="Date"):
        authenticator().authenticate(with_headers(req, x_amz_date="yesterday"))
    with pytest.raises(errors.AuthorizationHeaderMalformed, match="date"):
        authenticator().authenticate(with_headers(req, x_amz_date="20231115T221320Z"))


def test_v4_header_content_sha256_rules() -> None:
    req, _ = capture(client(), "get_object", Bucket="bkt", Key="k")
    with pytest.raises(errors.InvalidRequest, match="x-amz-content-sha256"):
        authenticator().authenticate(with_headers(req, x_amz_content_sha256=None))
    for bad in ["nothex", "UNSIGNED", "a" * 63, "g" * 64, "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"]:
        with pytest.raises(errors.InvalidArgument):
            authenticator().authenticate(with_headers(req, x_amz_content_sha256=bad))


def test_v4_header_unsigned_payload() -> None:
    req, _ = capture(client(payload_signing=False), "put_object", Bucket="bkt", Key="k", Body=b"abc")
    assert req.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    result = authenticator().authenticate(req)
    assert (result.payload, result.expected_sha256) == (PayloadMode.UNSIGNED, None)
    assert b"".join(consume([b"anything"], result, req.headers)[0]) == b"anything"


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        ("AWS4-HMAC-SHA256 ", errors.AuthorizationHeaderMalformed),
        ("AWS4-HMAC-SHA256 Credential=AK/20231114/us-east-1/s3/aws4_request", errors.AuthorizationHeaderMalformed),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20231114/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature="
            + "0" * 64,
            errors.AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/2023-11-14/us-east-1/s3/aws4_request, SignedHeaders=host, Signature="
            + "0" * 64,
            errors.AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20231114/us-east-1/s3/aws4_request, SignedHeaders=x-amz-date, Signature="
            + "0" * 64,
            errors.AuthorizationHeaderMalformed,
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20231114/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=xyz",
            errors.AuthorizationHeaderMalformed,
        ),
        ("AWS4-ECDSA-P256-SHA256 Credential=AK/20231114/s3/aws4_request", errors.InvalidArgument),
        ("Bearer abc", errors.InvalidArgument),
    ],
)
def test_v4_header_malformed_authorization(authorization: str, error: type[Exception]) -> None:
    req, _ = capture(client(), "get_object", Bucket="bkt", Key="k")
    with pytest.raises(error):
        authenticator().authenticate(with_headers(req, authorization=authorization))


def test_v4_path_escaping_variants() -> None:
    # botocore signs the path exactly as it sends it...
    req = sign_direct(S3SigV4Auth, "GET", "http://localhost:9000/bkt/a!b(c)")
    assert req.raw_path == b"/bkt/a!b(c)"
    assert authenticator().authenticate(req).access_key == AK
    # ...and a client that signed the RFC 3986 form but sent lower-case escapes is accepted too.
    req = sign_direct(S3SigV4Auth, "GET", "http://localhost:9000/bkt/%C3%BC%20x")
    assert authenticator().authenticate(replace(req, raw_path=b"/bkt/%c3%bc%20x")).access_key == AK
    # A different resource is not: '/' and '%2F' are different keys.
    req = sign_direct(S3SigV4Auth, "GET", "http://localhost:9000/bkt/a%2Fb")
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(replace(req, raw_path=b"/bkt/a/b"))


def test_v4_non_ascii_header_value() -> None:
    # botocore hashes the str (UTF-8) while http.client sends it latin-1; a client that hashed
    # the raw bytes it sent is accepted as well.
    req = sign_direct(S3SigV4Auth, "PUT", "http://localhost:9000/bkt/k", {"x-amz-meta-m": "café"}, b"")
    assert req.headers["x-amz-meta-m"] == "café"
    assert authenticator().authenticate(req).access_key == AK


def test_v4_signing_key_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = _sigv4.derive_signing_key

    def counting(*args: str) -> bytes:
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(_sigv4, "derive_signing_key", counting)
    auth = authenticator()
    for key in ("a", "b", "c"):
        req, _ = capture(client(), "get_object", Bucket="bkt", Key=key)
        auth.authenticate(req)
    req, _ = capture(client(region="ap-south-1"), "get_object", Bucket="bkt", Key="k")
    auth.authenticate(req)
    assert calls == [("20231114", "us-east-1", "s3"), ("20231114", "ap-south-1", "s3")]


def test_repr_hides_secret_material() -> None:
    req, _ = streaming_request(3)
    result = authenticator().authenticate(req)
    key = signing_key(SECRET, "20231114")
    for text in (repr(result), repr(authenticator()), str(result)):
        assert SECRET not in text
        assert key.hex() not in text
        assert repr(key) not in text


# === SigV4, presigned query ===================================================================


def presign(operation: str = "get_object", expires_s: int = 60, **params: Any) -> AuthRequest:
    params = {"Bucket": "bkt", "Key": "k", **params}
    url = client().generate_presigned_url(operation, Params=params, ExpiresIn=expires_s)
    return to_auth_request("GET" if operation == "get_object" else "PUT", url, {})


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_v4_presigned_get(key: str) -> None:
    req = presign(Key=key, ResponseContentType="text/plain; charset=utf-8", VersionId="v+1")
    result = authenticator(clock=T0 + 30).authenticate(req)
    assert (result.access_key, result.scheme, result.payload) == (AK, "v4-query", PayloadMode.UNSIGNED)


def test_v4_presigned_expiry_and_future() -> None:
    req = presign(expires_s=60)
    assert authenticator(clock=T0 + 60).authenticate(req).access_key == AK
    with pytest.raises(errors.AccessDenied, match="Request has expired"):
        authenticator(clock=T0 + 61).authenticate(req)
    # The skew window does not apply to a presigned URL's past...
    week = presign(expires_s=604800)
    assert authenticator(clock=T0 + 86400).authenticate(week).access_key == AK
    # ...only to a date in the future.
    assert authenticator(clock=T0 - 899).authenticate(req).access_key == AK
    with pytest.raises(errors.RequestTimeTooSkewed):
        authenticator(clock=T0 - 901).authenticate(req)


@pytest.mark.parametrize("expires", [b"604801", b"-1", b"soon", b""])
def test_v4_presigned_bad_expires(expires: bytes) -> None:
    req = presign(expires_s=60)
    query = req.query_string.replace(b"X-Amz-Expires=60", b"X-Amz-Expires=" + expires)
    with pytest.raises(errors.AuthorizationQueryParametersError):
        authenticator().authenticate(replace(req, query_string=query))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: replace(r, raw_path=b"/bkt/other"),
        lambda r: replace(r, query_string=r.query_string.replace(b"text%2Fplain", b"text%2Fhtml")),
        lambda r: replace(r, query_string=r.query_string + b"&versionId=1"),
        lambda r: replace(r, method="DELETE"),
        lambda r: with_headers(r, host="other:1"),
    ],
)
def test_v4_presigned_tampered(tamper: Callable[[AuthRequest], AuthRequest]) -> None:
    req = presign(ResponseContentType="text/plain")
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(tamper(req))


def test_v4_presigned_put_with_unsigned_amz_header() -> None:
    req = presign("put_object")
    assert authenticator().authenticate(req).payload is PayloadMode.UNSIGNED
    with pytest.raises(errors.AccessDenied, match="not signed"):
        authenticator().authenticate(with_headers(req, x_amz_acl="public-read"))


def test_v4_presigned_missing_parameter() -> None:
    req = presign()
    query = b"&".join(p for p in req.query_string.split(b"&") if not p.startswith(b"X-Amz-Date="))
    with pytest.raises(errors.AuthorizationQueryParametersError):
        authenticator().authenticate(replace(req, query_string=query))


def test_v4_presigned_with_signed_content_sha256() -> None:
    digest = hashlib.sha256(b"body").hexdigest()
    req = sign_direct(S3SigV4QueryAuth, "PUT", "http://localhost:9000/bkt/k", {"X-Amz-Content-SHA256": digest})
    result = authenticator().authenticate(req)
    assert (result.payload, result.expected_sha256) == (PayloadMode.SIGNED, digest)
    with pytest.raises(errors.XAmzContentSHA256Mismatch):
        consume([b"other"], result, req.headers)


def test_header_and_query_auth_together() -> None:
    req = presign()
    header_req, _ = capture(client(), "get_object", Bucket="bkt", Key="k")
    both = with_headers(req, authorization=header_req.headers["authorization"])
    with pytest.raises(errors.InvalidArgument, match="Only one auth mechanism"):
        authenticator().authenticate(both)


def test_anonymous() -> None:
    req = AuthRequest("GET", b"/bkt/k", b"versionId=3", {"host": "localhost"})
    result = authenticator().authenticate(req)
    assert (result.access_key, result.scheme, result.payload) == (None, "anonymous", PayloadMode.NONE)


# === SigV2 =================================================================================


@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("put_object", {"Bucket": "bkt", "Key": "a b/ü+%~//../x", "Body": b"hi", "Metadata": {"m": "x  y"}}),
        ("list_objects", {"Bucket": "bkt", "Prefix": "p q"}),
        ("create_multipart_upload", {"Bucket": "bkt", "Key": "k"}),
        ("get_object", {"Bucket": "bkt", "Key": "k", "VersionId": "v 1", "ResponseContentType": "text/plain"}),
        ("get_object_acl", {"Bucket": "bkt", "Key": "k"}),
        ("delete_objects", {"Bucket": "bkt", "Delete": {"Objects": [{"Key": "a"}]}}),
    ],
)
def test_v2_header_botocore_operations(style: str, operation: str, params: dict[str, Any]) -> None:
    req, body = capture(client(signature_version="s3", addressing_style=style), operation, **params)
    assert req.headers["authorization"].startswith("AWS ")
    assert (req.virtual_bucket is not None) == (style == "virtual")
    result = authenticator().authenticate(req)
    assert (result.access_key, result.scheme, result.payload) == (AK, "v2-header", PayloadMode.NONE)
    assert b"".join(consume([body], result, req.headers)[0]) == body


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_v2_header_hostile_keys(key: str) -> None:
    req, _ = capture(client(signature_version="s3"), "get_object", Bucket="bkt", Key=key)
    assert authenticator().authenticate(req).access_key == AK
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(replace(req, raw_path=req.raw_path + b"x"))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: replace(r, raw_path=b"/bkt/other"),
        lambda r: replace(r, query_string=r.query_string.replace(b"versionId=v", b"versionId=w")),
        lambda r: replace(r, query_string=r.query_string + b"&acl"),
        lambda r: replace(r, virtual_bucket="other"),
        lambda r: replace(r, method="DELETE"),
        lambda r: with_headers(r, x_amz_meta_extra="1"),
        lambda r: with_headers(r, content_type="text/evil"),
    ],
)
def test_v2_header_tampered(tamper: Callable[[AuthRequest], AuthRequest]) -> None:
    req, _ = capture(client(signature_version="s3"), "get_object", Bucket="bkt", Key="k", VersionId="v1")
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(tamper(req))


def test_v2_header_failures() -> None:
    req, _ = capture(client(signature_version="s3", secret="wrong"), "get_object", Bucket="bkt", Key="k")
    with pytest.raises(errors.SignatureDoesNotMatch) as wrong:
        authenticator().authenticate(req)
    check_no_secret(wrong.value)
    with pytest.raises(errors.InvalidAccessKeyId):
        Authenticator(lambda _: None, clock=lambda: T0).authenticate(req)
    with pytest.raises(errors.RequestTimeTooSkewed):
        authenticator(clock=T0 + 901).authenticate(req)
    with pytest.raises(errors.AccessDenied, match="Date"):
        authenticator().authenticate(with_headers(req, date=None))
    with pytest.raises(errors.AuthorizationHeaderMalformed):
        authenticator().authenticate(with_headers(req, authorization="AWS nocolon"))


def test_v2_header_x_amz_date_signs_an_empty_date_line() -> None:
    # Per the S3 SigV2 spec (botocore never sends x-amz-date with SigV2): Date line is empty.
    amz_date = email.utils.formatdate(T0 + 10, usegmt=True)
    sts = f"GET\n\n\n\nx-amz-date:{amz_date}\n/bkt/k?acl"
    sig = base64.b64encode(hmac.new(SECRET.encode(), sts.encode(), hashlib.sha1).digest()).decode()
    headers = {"host": "localhost", "x-amz-date": amz_date, "date": "Thu, 01 Jan 1970 00:00:00 GMT",
               "authorization": f"AWS {AK}:{sig}"}  # fmt: skip
    req = AuthRequest("GET", b"/bkt/k", b"acl", headers)
    assert authenticator().authenticate(req).scheme == "v2-header"
    with pytest.raises(errors.RequestTimeTooSkewed):
        authenticator(clock=T0 + 1000).authenticate(req)


@pytest.mark.parametrize("style", ["path", "virtual"])
def test_v2_presigned(style: str) -> None:
    s3 = client(signature_version="s3", addressing_style=style)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "bkt", "Key": "a b/ü", "ResponseContentType": "text/plain"}, ExpiresIn=60
    )
    req = to_auth_request("GET", url, {})
    assert b"AWSAccessKeyId=" in req.query_string
    result = authenticator(clock=T0 + 60).authenticate(req)
    assert (result.access_key, result.scheme, result.payload) == (AK, "v2-query", PayloadMode.NONE)
    with pytest.raises(errors.AccessDenied, match="Request has expired"):
        authenticator(clock=T0 + 61).authenticate(req)
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(replace(req, raw_path=req.raw_path + b"2"))
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(replace(req, query_string=req.query_string.replace(b"text", b"html")))
    missing = b"&".join(p for p in req.query_string.split(b"&") if not p.startswith(b"Expires="))
    with pytest.raises(errors.AccessDenied):
        authenticator().authenticate(replace(req, query_string=missing))


def test_v2_presigned_put_with_content_type_and_amz_params() -> None:
    # botocore moves Content-Type and x-amz-* into the query string of a SigV2 presigned URL.
    req = sign_direct(
        HmacV1QueryAuth,
        "PUT",
        "http://localhost:9000/bkt/k",
        {"Content-Type": "text/plain", "x-amz-acl": "private"},
        expires=300,
    )
    assert b"content-type=text%2Fplain" in req.query_string
    assert authenticator().authenticate(req).scheme == "v2-query"
    with pytest.raises(errors.SignatureDoesNotMatch):
        authenticator().authenticate(replace(req, query_string=req.query_string.replace(b"private", b"public-read")))


def test_v2_direct_signer_path_style_bucket() -> None:
    req = sign_direct(HmacV1Auth, "GET", "http://localhost:9000/bkt?uploads", {"x-amz-meta-a": " padded "})
    assert authenticator().authenticate(req).scheme == "v2-header"


# === wrap_body: signed payload ================================================================


def test_signed_payload_hash_checked_before_exhaustion() -> None:
    req, body = capture(client(), "put_object", Bucket="bkt", Key="k", Body=b"0123456789" * 1000)
    result = authenticator().authenticate(req)
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    received, _ = consume(pieces_of(body, rng, 333), result, req.headers)
    assert b"".join(received) == body
    flipped = bytearray(body)
    flipped[rng.randrange(len(body))] ^= 1
    with pytest.raises(errors.XAmzContentSHA256Mismatch):
        consume([bytes(flipped)], result, req.headers)
    with pytest.raises(errors.XAmzContentSHA256Mismatch):
        consume([body[:-1]], result, req.headers)


# === wrap_body: signed aws-chunked ===========================================================

AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_EXAMPLE_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_EXAMPLE_CHUNK_SIGS = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
AWS_EXAMPLE_HEADERS = {
    "host": "s3.amazonaws.com",
    "x-amz-date": "20130524T000000Z",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
    "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
    "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
    "x-amz-decoded-content-length;x-amz-storage-class,Signature=" + AWS_EXAMPLE_SEED,
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": "66560",
    "content-length": "66824",
}
AWS_EXAMPLE_T = calendar.timegm((2013, 5, 24, 0, 0, 0))


def aws_example_body() -> bytes:
    sigs = [s.encode() for s in AWS_EXAMPLE_CHUNK_SIGS]
    return (
        b"10000;chunk-signature=" + sigs[0] + b"\r\n" + b"a" * 65536 + b"\r\n"
        b"400;chunk-signature=" + sigs[1] + b"\r\n" + b"a" * 1024 + b"\r\n"
        b"0;chunk-signature=" + sigs[2] + b"\r\n\r\n"
    )


def aws_example_auth() -> AuthResult:
    auth = Authenticator({"AKIAIOSFODNN7EXAMPLE": AWS_EXAMPLE_SECRET}.get, clock=lambda: AWS_EXAMPLE_T)
    return auth.authenticate(AuthRequest("PUT", b"/examplebucket/chunkObject.txt", b"", AWS_EXAMPLE_HEADERS))


def test_aws_streaming_example_vector() -> None:
    body = aws_example_body()
    assert len(body) == 66824
    result = aws_example_auth()
    assert (result.access_key, result.payload) == ("AKIAIOSFODNN7EXAMPLE", PayloadMode.STREAMING_SIGNED)
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    for max_piece in (1, 7, 4096, 70000):
        received, trailers = consume(pieces_of(body, rng, max_piece), result, AWS_EXAMPLE_HEADERS)
        assert b"".join(received) == b"a" * 66560, max_piece
        assert trailers == {}
    with pytest.raises(errors.SignatureDoesNotMatch):
        consume([body.replace(b"a" * 1024, b"a" * 1023 + b"b")], result, AWS_EXAMPLE_HEADERS)


def test_test_signer_reproduces_the_aws_example() -> None:
    key = signing_key(AWS_EXAMPLE_SECRET, "20130524")
    frames = chunk_frames(
        key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", AWS_EXAMPLE_SEED, [b"a" * 65536, b"a" * 1024]
    )
    assert b"".join(frames) == aws_example_body()


def signed_upload(
    rng: random.Random, size: int, *, trailers: dict[str, str] | None = None
) -> tuple[AuthRequest, AuthResult, bytes, list[bytes]]:
    data = rng.randbytes(size)
    chunks = []
    pos = 0
    while pos < size:
        n = rng.choice([1, 17, 8192, 65536, 100_000])
        chunks.append(data[pos : pos + n])
        pos += n
    trailer = ",".join(trailers) if trailers is not None else None
    req, seed = streaming_request(size, trailer=trailer)
    result = authenticator().authenticate(req)
    frames = chunk_frames(signing_key(SECRET, "20231114"), AMZ_T0, "20231114/us-east-1/s3/aws4_request", seed,
                          chunks, trailers)  # fmt: skip
    return req, result, data, frames


@pytest.mark.parametrize("size", [0, 1, 1000, 65536, 300_000])
def test_signed_chunked_random_bodies_and_splits(size: int) -> None:
    rng = random.Random(SEED + size)
    print(f"seed={SEED}")
    req, result, data, frames = signed_upload(rng, size)
    assert result.payload is PayloadMode.STREAMING_SIGNED
    body = b"".join(frames)
    for max_piece in (1, 3, 1000, 70_000, len(body)):
        if max_piece == 1 and size > 70_000:
            continue  # covered at smaller sizes; keeps the test fast
        received, _ = consume(pieces_of(body, rng, max_piece), result, req.headers)
        assert b"".join(received) == data, (SEED, max_piece)


def test_signed_chunked_yields_large_pieces_from_tiny_input() -> None:
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    req, result, data, frames = signed_upload(rng, 200_000)
    received, _ = consume(pieces_of(b"".join(frames), rng, 1), result, req.headers)
    assert b"".join(received) == data
    assert all(len(p) >= 64 * 1024 for p in received[:-1]), [len(p) for p in received]


def _tamper_cases(frames: list[bytes], rng: random.Random) -> list[tuple[str, bytes, type[Exception]]]:
    body = b"".join(frames)
    first = frames[0]
    data_at = first.index(b"\r\n") + 2
    flipped = bytearray(body)
    flipped[data_at + rng.randrange(len(first) - data_at - 2)] ^= 0x20
    sig_at = first.index(b"chunk-signature=") + len(b"chunk-signature=")
    bad_sig = bytearray(body)
    bad_sig[sig_at] = ord("0") if bad_sig[sig_at] != ord("0") else ord("1")
    return [
        ("changed data byte", bytes(flipped), errors.SignatureDoesNotMatch),
        ("changed chunk signature", bytes(bad_sig), errors.SignatureDoesNotMatch),
        ("dropped chunk", b"".join(frames[:1] + frames[2:]), errors.SignatureDoesNotMatch),
        ("dropped last data chunk", b"".join(frames[:-2] + frames[-1:]), errors.SignatureDoesNotMatch),
        ("reordered chunks", b"".join([frames[1], frames[0], *frames[2:]]), errors.SignatureDoesNotMatch),
        ("truncated", body[: rng.randrange(len(body))], errors.IncompleteBody),
        ("no final chunk", b"".join(frames[:-1]), errors.IncompleteBody),
        ("trailing garbage", body + b"x", errors.InvalidRequest),
    ]


def test_signed_chunked_tampering() -> None:
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    req, result, _, frames = signed_upload(rng, 5000)
    while len(frames) < 4:  # need at least three data chunks
        req, result, _, frames = signed_upload(rng, 5000)
    for name, body, error in _tamper_cases(frames, rng):
        for max_piece in (1, 5, len(body) or 1):
            with pytest.raises(error) as info:
                consume(pieces_of(body, rng, max_piece), result, req.headers)
            check_no_secret(info.value)
            assert info.type is error, (name, SEED)


def test_signed_chunked_every_truncation_point() -> None:
    rng = random.Random(SEED)
    req, result, _, frames = signed_upload(rng, 40)
    body = b"".join(frames)
    for cut in range(len(body)):
        with pytest.raises(errors.IncompleteBody):
            consume([body[:cut]], result, req.headers)


def test_signed_chunked_decoded_length_mismatch() -> None:
    rng = random.Random(SEED)
    req, result, _, frames = signed_upload(rng, 5000)
    body = b"".join(frames)
    for wrong in ("4999", "5001", "0"):
        with pytest.raises(errors.IncompleteBody):
            consume([body], result, {**req.headers, "x-amz-decoded-content-length": wrong})
    with pytest.raises(errors.InvalidArgument):
        wrap_body(_aiter([body]), result, {**req.headers, "x-amz-decoded-content-length": "-5"})
    # Without the header the total is not checked.
    headers = {k: v for k, v in req.headers.items() if k != "x-amz-decoded-content-length"}
    assert len(b"".join(consume([body], result, headers)[0])) == 5000


def test_signed_chunked_with_trailer() -> None:
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    # The seed request declares the trailer; the frames are re-signed with the real checksum.
    req, result, data, _ = signed_upload(rng, 3000, trailers={"x-amz-checksum-crc32": "PLACEHOLDER"})
    checksum = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    seed = req.headers["authorization"].rsplit("Signature=", 1)[1]
    key = signing_key(SECRET, "20231114")
    scope = "20231114/us-east-1/s3/aws4_request"
    chunks = [data[:1000], data[1000:]]
    good_trailers = {"x-amz-checksum-crc32": checksum}
    good = chunk_frames(key, AMZ_T0, scope, seed, chunks, good_trailers)
    assert result.payload is PayloadMode.STREAMING_SIGNED_TRAILER
    received, trailers = consume(pieces_of(b"".join(good), rng, 7), result, req.headers)
    assert b"".join(received) == data
    assert trailers == {"x-amz-checksum-crc32": checksum}

    body = b"".join(good)
    cases = [
        (body.replace(checksum.encode(), b"AAAAAA=="), errors.SignatureDoesNotMatch),
        (body[: body.index(b"x-amz-trailer-signature")] + b"\r\n", errors.SignatureDoesNotMatch),
        (
            b"".join(chunk_frames(key, AMZ_T0, scope, seed, chunks, {**good_trailers, "x-amz-meta-sneaky": "1"})),
            errors.InvalidRequest,
        ),
        (b"".join(chunk_frames(key, AMZ_T0, scope, seed, chunks, {})), errors.IncompleteBody),
        (body[:-2], errors.IncompleteBody),
    ]
    for bad, error in cases:
        with pytest.raises(error):
            consume(pieces_of(bad, rng, 9), result, req.headers)


# === wrap_body: unsigned trailer ===============================================================


def unsigned_trailer_request(size: int) -> tuple[AuthRequest, bytes]:
    """What boto3 sends for put_object over HTTPS: CRC32 trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER."""
    return capture(client(endpoint="https://localhost:9000"), "put_object", Bucket="bkt", Key="k",
                   Body=b"z" * size, ChecksumAlgorithm="CRC32")  # fmt: skip


def test_unsigned_trailer_as_boto3_sends_it() -> None:
    req, body = unsigned_trailer_request(5)
    assert req.headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert req.headers["x-amz-trailer"] == "x-amz-checksum-crc32"
    crc = base64.b64encode(zlib.crc32(b"zzzzz").to_bytes(4, "big")).decode()
    assert body == f"5\r\nzzzzz\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()  # the spec, by hand
    result = authenticator().authenticate(req)
    assert result.payload is PayloadMode.STREAMING_UNSIGNED_TRAILER
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    for max_piece in (1, 4, len(body)):
        received, trailers = consume(pieces_of(body, rng, max_piece), result, req.headers)
        assert b"".join(received) == b"zzzzz"
        assert trailers == {"x-amz-checksum-crc32": crc}


def test_unsigned_trailer_botocore_wrapper_large() -> None:
    req, _ = unsigned_trailer_request(3_000_000)
    result = authenticator().authenticate(req)
    rng = random.Random(SEED)
    print(f"seed={SEED}")
    data = rng.randbytes(3_000_000)
    wrapper = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32")
    body = wrapper.read()
    received, trailers = consume(pieces_of(body, rng, 100_000), result, req.headers)
    assert b"".join(received) == data
    assert trailers == {"x-amz-checksum-crc32": base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()}


def test_unsigned_trailer_failures() -> None:
    req, body = unsigned_trailer_request(5)
    result = authenticator().authenticate(req)
    cases = [
        (body.replace(b"x-amz-checksum-crc32", b"x-amz-checksum-sha1"), errors.InvalidRequest),  # undeclared
        (body.replace(b"0\r\nx-amz-checksum-crc32:", b"0\r\nx-amz-trailer-signature:"), errors.InvalidRequest),
        (
            body.replace(b"0\r\nx-amz-checksum-crc32", b"0\r\nx-amz-checksum-crc32:a\r\nx-amz-checksum-crc32"),
            errors.InvalidRequest,
        ),
        (b"5\r\nzzzzz\r\n0\r\n\r\n", errors.IncompleteBody),  # declared trailer missing
        (body[:-1], errors.IncompleteBody),
        (b"5\r\nzzzz", errors.IncompleteBody),
        (b"5\r\nzzzzzz\r\n0\r\n\r\n", errors.InvalidRequest),  # data not followed by CRLF
        (b"4\r\nzzzz\r\n0\r\n\r\n", errors.IncompleteBody),  # x-amz-decoded-content-length is 5
    ]
    for bad, error in cases:
        with pytest.raises(error):
            consume([bad], result, req.headers)


# === framing hostility ============================================================================


def _unsigned_result() -> AuthResult:
    return AuthResult(access_key="x", scheme="v4-header", payload=PayloadMode.STREAMING_UNSIGNED_TRAILER)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"f" * 10_000, errors.InvalidRequest),  # endless size line: rejected, not buffered
        (b"1" * 300 + b"\r\n", errors.InvalidRequest),
        (b"0x10\r\n", errors.InvalidRequest),
        (b"+10\r\n", errors.InvalidRequest),
        (b" 10\r\n", errors.InvalidRequest),
        (b"1_0\r\n", errors.InvalidRequest),
        (b"\r\n", errors.InvalidRequest),
        (b"10\n", errors.InvalidRequest),
        (b"ffffffffffffffff\r\nabc", errors.IncompleteBody),  # huge declared chunk, short body
        (b"fffffffffffffffff\r\n", errors.InvalidRequest),  # 17 hex digits
        (b"", errors.IncompleteBody),
        (b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n\r\n", errors.InvalidRequest),  # bytes after the end
        (b"0\r\n" + b"x-amz-checksum-crc32:" + b"A" * 2000 + b"\r\n\r\n", errors.InvalidRequest),
    ],
)
def test_unsigned_framing_errors(body: bytes, error: type[Exception]) -> None:
    headers = {"x-amz-trailer": "x-amz-checksum-crc32"}
    for max_piece in (1, len(body) or 1):
        with pytest.raises(error):
            consume(pieces_of(body, random.Random(SEED), max_piece), _unsigned_result(), headers)


def test_signed_framing_errors() -> None:
    result = aws_example_auth()
    body = aws_example_body()
    cases = [
        body.replace(b"10000;chunk-signature=", b"10000;chunk-signature:"),
        body.replace(b"10000;chunk-signature=", b"10000;chunk-signature=00"),
        body.replace(b"10000;chunk-signature=", b"10000\r\n"),
        body.replace(b"\r\n400;", b"\n400;"),
    ]
    for bad in cases:
        with pytest.raises((errors.InvalidRequest, errors.SignatureDoesNotMatch)) as info:
            consume([bad], result, AWS_EXAMPLE_HEADERS)
        assert isinstance(info.value, errors.InvalidRequest)


def test_big_chunk_is_streamed_not_buffered() -> None:
    decoder = ChunkedDecoder(verifier=None, has_trailer=True)
    out = list(decoder.feed(b"%x\r\n" % (1 << 40)))
    assert out == []
    piece = b"q" * 1_000_000
    for _ in range(5):
        out = list(decoder.feed(piece))
        assert sum(len(v) for v in out) == len(piece)
    assert decoder.decoded_bytes == 1 << 40
    with pytest.raises(errors.IncompleteBody):
        decoder.finish()


def test_modes_without_body_checks_pass_through() -> None:
    for mode in (PayloadMode.NONE, PayloadMode.UNSIGNED):
        result = AuthResult(access_key=None, scheme="anonymous", payload=mode)
        assert consume([b"a", b"b"], result, {}) == ([b"a", b"b"], {})
