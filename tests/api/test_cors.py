"""CORS (api/_cors.py) against a real server: Put/Get/DeleteBucketCors through boto3, raw
preflight ``OPTIONS`` requests (unauthenticated), and the CORS headers of actual requests."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess
from tests.s3http import EMPTY_SHA256, Resp, send, sign_v4

RULES = [
    {
        "ID": "app",
        "AllowedOrigins": ["https://app.example", "https://*.tools.example"],
        "AllowedMethods": ["GET", "PUT"],
        "AllowedHeaders": ["content-type", "x-amz-meta-*"],
        "ExposeHeaders": ["ETag", "x-amz-version-id"],
        "MaxAgeSeconds": 600,
    },
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]},
]


def options(server: ServerProcess, path: str, headers: dict[str, str]) -> Resp:
    return send(server.port, "OPTIONS", path, {"Host": f"127.0.0.1:{server.port}", **headers})


def code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def cors_bucket(s3: Any, bucket: str) -> str:
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    return bucket


# --- Put/Get/DeleteBucketCors ---------------------------------------------------------------------
def test_put_get_delete_round_trip(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(exc) == ("NoSuchCORSConfiguration", 404)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(exc) == ("NoSuchCORSConfiguration", 404)


@pytest.mark.parametrize(
    ("rule", "expected", "message"),
    [
        ({"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}, "InvalidRequest", "Unsupported method is PATCH"),
        ({"AllowedOrigins": ["https://*.*.example"], "AllowedMethods": ["GET"]}, "InvalidRequest", "wildcard"),
        (
            {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["x-*-*"]},
            "InvalidRequest",
            "wildcard",
        ),
        ({"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "ID": "i" * 256}, "InvalidArgument", "255"),
    ],
)
def test_invalid_rules_are_refused(s3: Any, bucket: str, rule: dict[str, Any], expected: str, message: str) -> None:
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
    assert code(exc) == (expected, 400)
    assert message in exc.value.response["Error"]["Message"]
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES  # nothing lost


def test_malformed_documents_are_malformed_xml(server: ServerProcess, s3: Any, bucket: str) -> None:
    for doc in (
        b"<CORSConfiguration></CORSConfiguration>",
        b"<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>",
        b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>",
        b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
        b"<MaxAgeSeconds>soon</MaxAgeSeconds></CORSRule></CORSConfiguration>",
        b"<CORSConfiguration><CORSRule>",
    ):
        req = sign_v4(
            server.port, "PUT", f"/{bucket}", payload_hash=hashlib.sha256(doc).hexdigest(), query=[("cors", "")]
        )
        resp = send(server.port, "PUT", req.target, req.headers, doc)
        assert resp.status == 400, resp.body
        assert resp.error()["Code"] == "MalformedXML"
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(exc) == ("NoSuchCORSConfiguration", 404)


# --- preflight ------------------------------------------------------------------------------------
def test_preflight_matching_rule(server: ServerProcess, cors_bucket: str) -> None:
    resp = options(
        server,
        f"/{cors_bucket}/some/key",
        {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "Content-Type, X-Amz-Meta-Owner",
        },
    )
    assert resp.status == 200, resp.body
    h = resp.headers
    assert h["access-control-allow-origin"] == "https://app.example"
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-allow-methods"] == "GET, PUT"
    assert h["access-control-allow-headers"] == "content-type, x-amz-meta-owner"
    assert h["access-control-expose-headers"] == "ETag, x-amz-version-id"
    assert h["access-control-max-age"] == "600"
    assert "Origin" in h["vary"]


def test_preflight_wildcards(server: ServerProcess, cors_bucket: str) -> None:
    sub = options(
        server, f"/{cors_bucket}", {"Origin": "https://a.tools.example", "Access-Control-Request-Method": "GET"}
    )
    assert sub.status == 200 and sub.headers["access-control-allow-origin"] == "https://a.tools.example"
    # the second rule (origin "*"): "*" is answered, without credentials
    anyone = options(
        server, f"/{cors_bucket}/k", {"Origin": "https://else.example", "Access-Control-Request-Method": "HEAD"}
    )
    assert anyone.status == 200
    assert anyone.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in anyone.headers
    assert anyone.headers["access-control-allow-methods"] == "GET, HEAD"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://else.example", "Access-Control-Request-Method": "PUT"},  # method of no rule for it
        {"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"},
        {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "x-secret",
        },
        {"Origin": "https://tools.example", "Access-Control-Request-Method": "PUT"},  # "*." needs a subdomain
    ],
)
def test_preflight_without_a_matching_rule_is_403(
    server: ServerProcess, cors_bucket: str, headers: dict[str, str]
) -> None:
    resp = options(server, f"/{cors_bucket}/k", headers)
    assert resp.status == 403, resp.body
    err = resp.error()
    assert err["Code"] == "AccessForbidden"
    assert err["Message"].startswith("CORSResponse: This CORS request is not allowed.")
    assert err["Method"] == headers["Access-Control-Request-Method"] and err["ResourceType"] == "OBJECT"
    assert not any(k.startswith("access-control-") for k in resp.headers)


def test_preflight_without_cors_or_bucket_is_the_same_403(server: ServerProcess, bucket: str) -> None:
    """No configuration and no bucket answer alike: a preflight does not tell whether a bucket exists."""
    asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    answers = [options(server, f"/{b}/k", asked) for b in (bucket, "no-such-bucket-cors")]
    for resp in answers:
        assert resp.status == 403
        assert resp.error()["Message"] == "CORSResponse: CORS is not enabled for this bucket."
    assert answers[0].body.split(b"<RequestId>")[0].replace(bucket.encode(), b"B") == answers[1].body.split(
        b"<RequestId>"
    )[0].replace(b"no-such-bucket-cors", b"B")


def test_preflight_does_not_reveal_keys(server: ServerProcess, s3: Any, cors_bucket: str) -> None:
    s3.put_object(Bucket=cors_bucket, Key="exists", Body=b"x")
    asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    present, missing = (options(server, f"/{cors_bucket}/{k}", asked) for k in ("exists", "missing"))
    assert present.status == missing.status == 200
    strip = {"x-amz-request-id", "x-amz-id-2", "date"}
    assert {k: v for k, v in present.headers.items() if k not in strip} == {
        k: v for k, v in missing.headers.items() if k not in strip
    }
    assert present.body == missing.body == b""


def test_preflight_needs_origin_and_method(server: ServerProcess, cors_bucket: str) -> None:
    for headers in (
        {"Access-Control-Request-Method": "GET"},
        {"Origin": "https://app.example"},
        {"Origin": "https://app.example", "Access-Control-Request-Method": "BREW"},
    ):
        resp = options(server, f"/{cors_bucket}/k", headers)
        assert resp.status == 400, resp.body
        assert resp.error()["Code"] == "BadRequest"


# --- actual requests ------------------------------------------------------------------------------
def _get(server: ServerProcess, path: str, origin: str | None) -> Resp:
    extra = {"origin": origin} if origin else {}
    req = sign_v4(server.port, "GET", path, payload_hash=EMPTY_SHA256, headers=extra)
    return send(server.port, "GET", req.target, req.headers)


def test_actual_requests_get_the_matching_rule_headers(server: ServerProcess, s3: Any, cors_bucket: str) -> None:
    s3.put_object(Bucket=cors_bucket, Key="obj", Body=b"data")
    ok = _get(server, f"/{cors_bucket}/obj", "https://app.example")
    assert ok.status == 200 and ok.body == b"data"
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert ok.headers["access-control-expose-headers"] == "ETag, x-amz-version-id"
    assert "Origin" in ok.headers["vary"]
    # errors carry them too, so the page can read the error
    missing = _get(server, f"/{cors_bucket}/nothing", "https://app.example")
    assert missing.status == 404 and missing.headers["access-control-allow-origin"] == "https://app.example"
    # no Origin, or an origin no rule allows: no CORS headers
    for resp in (_get(server, f"/{cors_bucket}/obj", None),):
        assert not any(k.startswith("access-control-") for k in resp.headers)
    unlisted = _get(server, f"/{cors_bucket}/obj", "https://evil.example")
    assert unlisted.headers["access-control-allow-origin"] == "*"  # the "*" rule allows GET from anyone


def test_actual_requests_on_a_bucket_without_cors_get_none(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="obj", Body=b"data")
    resp = _get(server, f"/{bucket}/obj", "https://app.example")
    assert resp.status == 200
    assert not any(k.startswith("access-control-") for k in resp.headers)
