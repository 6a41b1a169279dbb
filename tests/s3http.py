"""Raw S3 over HTTP for tests: a SigV4 signer written from the AWS spec and a one-shot sender.

Used where a test must control the exact bytes on the wire (hand-made signatures, aws-chunked
bodies, hostile paths, a chosen Host header, a body sent in pieces) instead of going through boto3.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess

REGION = "us-east-1"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# --- raw HTTP ---------------------------------------------------------------------------


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str]:
        root = ET.fromstring(self.body)
        assert root.tag == "Error", self.body[:300]
        return {child.tag: child.text or "" for child in root}


def send(port: int, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None) -> Resp:
    """One request on a fresh connection; ``target`` is sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None and not any(k.lower() == "content-length" for k in headers):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def fetch(url: str, method: str = "GET", body: bytes | None = None) -> Resp:
    """Send to a (presigned) URL without re-encoding its path or query."""
    parts = urlsplit(url)
    target = urlunsplit(("", "", parts.path, parts.query, ""))
    assert parts.port is not None
    return send(parts.port, method, target, {"Host": parts.netloc}, body)


def assert_error(resp: Resp, status: int, code: str, resource: str | None = None) -> dict[str, str]:
    assert resp.status == status, (resp.status, resp.body[:500])
    request_id = resp.headers.get("x-amz-request-id")
    assert request_id, resp.headers
    fields = resp.error()
    assert fields["Code"] == code, fields
    assert fields["Message"], fields
    assert "Resource" in fields, fields
    if resource is not None:
        assert fields["Resource"] == resource, fields
    assert fields["RequestId"] == request_id, fields
    assert SECRET_KEY not in resp.body.decode("utf-8", "replace")
    return fields


def assert_ok(resp: Resp, status: int = 200) -> None:
    assert resp.status == status, (resp.status, resp.body[:500])
    assert resp.headers.get("x-amz-request-id"), resp.headers


# --- a SigV4 signer written from the spec -----------------------------------------------


def amz_now(offset_s: float = 0.0) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + offset_s))


def signing_key(secret: str, date: str, region: str = REGION) -> bytes:
    k = hmac.digest(("AWS4" + secret).encode(), date.encode(), "sha256")
    for part in (region, "s3", "aws4_request"):
        k = hmac.digest(k, part.encode(), "sha256")
    return k


def hmac_hex(key: bytes, msg: str | bytes) -> str:
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, hashlib.sha256).hexdigest()


@dataclass
class Signed:
    target: str
    headers: dict[str, str]
    signature: str
    key: bytes
    amz_date: str
    scope: str


def sign_v4(
    port: int,
    method: str,
    path: str,
    *,
    payload_hash: str,
    query: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
    amz_date: str | None = None,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
) -> Signed:
    """Header-signed SigV4 request; every header given (plus host/date/sha256) is signed. A ``host``
    header in ``headers`` is kept (virtual-hosted style); otherwise it is 127.0.0.1:port."""
    amz_date = amz_date or amz_now()
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs.setdefault("host", f"127.0.0.1:{port}")
    hdrs.update({"x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
    names = sorted(hdrs)
    uri = quote(path, safe="/~")
    enc = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query)
    canonical_query = "&".join(f"{k}={v}" for k, v in enc)
    canonical_headers = "".join(f"{k}:{' '.join(hdrs[k].split())}\n" for k in names)
    creq = "\n".join([method, uri, canonical_query, canonical_headers, ";".join(names), payload_hash])
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = signing_key(secret_key, amz_date[:8])
    sig = hmac_hex(key, sts)
    hdrs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    target = uri + (f"?{canonical_query}" if canonical_query else "")
    return Signed(target, hdrs, sig, key, amz_date, scope)


def signed_request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    payload_hash: str | None = None,
    **kw: Any,
) -> Resp:
    if payload_hash is None:
        payload_hash = hashlib.sha256(body or b"").hexdigest()
    s = sign_v4(server.port, method, path, payload_hash=payload_hash, **kw)
    return send(server.port, method, s.target, s.headers, body)
