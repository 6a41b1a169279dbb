"""Routing details: which query parameters select an operation, and header limits."""

from __future__ import annotations

import pytest

from tests.conftest import ServerProcess
from tests.s3http import signed_request


def test_unknown_query_parameters_are_ignored(server: ServerProcess, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="k", Body=b"value")
    r = signed_request(server, "GET", f"/{bucket}/k", query=[("foo", "bar"), ("utm_source", "x")])
    assert (r.status, r.body) == (200, b"value")
    r = signed_request(server, "GET", f"/{bucket}", query=[("whatever", "1")])
    assert r.status == 200 and b"<Key>k</Key>" in r.body


@pytest.mark.parametrize("sub", ["torrent", "restore"])
def test_known_unimplemented_object_subresources_answer_501(server: ServerProcess, s3, bucket: str, sub: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="k", Body=b"value")
    r = signed_request(server, "GET", f"/{bucket}/k", query=[(sub, "")])
    assert r.status == 501, r.body
    assert r.error()["Code"] == "NotImplemented"


def test_header_section_too_large(server: ServerProcess, bucket: str) -> None:
    headers = {f"x-amz-meta-h{i}": "v" * 1000 for i in range(70)}  # ~70 KB, below granian's own limit
    r = signed_request(server, "GET", f"/{bucket}/k", headers=headers)
    assert r.status == 400, r.body
    assert r.error()["Code"] == "RequestHeaderSectionTooLarge"
