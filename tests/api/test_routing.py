"""Routing details: which query parameters select an operation, and header limits."""

from __future__ import annotations

import http.client

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess


def call(server: ServerProcess, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    url = f"{server.endpoint}{path}"
    req = AWSRequest(method=method, url=url, data=b"", headers=headers or {})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(method, path, headers=dict(req.headers.items()))
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def test_unknown_query_parameters_are_ignored(server: ServerProcess, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="k", Body=b"value")
    assert call(server, "GET", f"/{bucket}/k?foo=bar&utm_source=x") == (200, b"value")
    status, body = call(server, "GET", f"/{bucket}?whatever=1")
    assert status == 200 and b"<Key>k</Key>" in body


@pytest.mark.parametrize("sub", ["tagging", "acl", "retention", "legal-hold", "torrent", "restore"])
def test_known_unimplemented_object_subresources_answer_501(server: ServerProcess, s3, bucket: str, sub: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="k", Body=b"value")
    status, body = call(server, "GET", f"/{bucket}/k?{sub}")
    assert status == 501, body
    assert b"<Code>NotImplemented</Code>" in body


def test_header_section_too_large(server: ServerProcess, bucket: str) -> None:
    headers = {f"x-amz-meta-h{i}": "v" * 1000 for i in range(70)}  # ~70 KB, below granian's own limit
    status, body = call(server, "GET", f"/{bucket}/k", headers)
    assert status == 400, body
    assert b"<Code>RequestHeaderSectionTooLarge</Code>" in body
