"""The server the encryption test modules share the shape of (not the process): a module's own
``tierstore serve`` with the test KMS keys, accepting SSE-C over plain HTTP, and a boto3 client
for it. A module takes both with

    srv, s3 = sse_server_fixtures("sse")

so that conftest's ``bucket`` fixture makes its buckets on this server (through this ``s3``).
A module-scoped server, not a session one: some modules damage blobs or disable keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ServerProcess, make_client

__all__ = ["SSE_SERVER_ARGS", "sse_server_fixtures"]

# --sse-c-over-http: the tests speak plain HTTP to 127.0.0.1 (docs/encryption-s3.md).
SSE_SERVER_ARGS = ["--kms-create-keys", "testkey-1,testkey-2", "--sse-c-over-http"]


def sse_server_fixtures(tag: str, *extra_args: str) -> tuple[Any, Any]:
    """Module-scoped fixtures ``srv`` (the server, data under a temp dir named ``tag``) and
    ``s3`` (its client); assign them to those names in the test module."""

    @pytest.fixture(scope="module")
    def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
        server = ServerProcess(tmp_path_factory.mktemp(tag) / "data", extra_args=[*SSE_SERVER_ARGS, *extra_args])
        server.start()
        yield server
        server.stop()

    @pytest.fixture(scope="module")
    def s3(srv: ServerProcess) -> Any:
        """This module's client: conftest's ``bucket`` fixture makes its buckets through it."""
        return make_client(srv.endpoint)

    return srv, s3
