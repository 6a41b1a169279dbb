"""Two gateways over one PostgreSQL catalog and one object store (issue 18, docs/scale-out.md
"Test plan", proofs 1-3): conditional writes, multipart uploads, versioning, object lock,
datasets and checkpoints keep their guarantees when requests are spread over both; the store
down answers 503 with Retry-After while cached blobs still read; the settings a gateway refuses.

``two_gateways`` (tests/conftest.py) is started once per session; each test uses buckets of its own."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Gateways, make_client

BLOB_BYTES = 20_000  # above the inline limit (16 KiB): these bodies are blobs in the store


def _status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture(scope="module")
def clients(two_gateways: Gateways) -> tuple[Any, Any]:
    """boto3 clients of gateway A and gateway B."""
    return make_client(two_gateways.a.endpoint), make_client(two_gateways.b.endpoint)


@pytest.fixture
def bucket(clients: tuple[Any, Any]) -> str:
    name = f"gw-{uuid.uuid4().hex[:12]}"
    clients[0].create_bucket(Bucket=name)
    return name


def test_one_conditional_put_wins_across_gateways(clients: tuple[Any, Any], bucket: str) -> None:
    """Proof 1: 32 concurrent ``If-None-Match: *`` PUTs of one key, alternating between the
    gateways: exactly one 200, every other 412 PreconditionFailed (or 409, as AWS answers a
    conflicting concurrent write), and both gateways read the winner's body."""
    writers = 32
    start = threading.Barrier(writers)
    bodies = [bytes([i]) * BLOB_BYTES + f"writer {i}".encode() for i in range(writers)]

    def put(i: int) -> int:
        start.wait()
        try:
            clients[i % 2].put_object(Bucket=bucket, Key="race", Body=bodies[i], IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            assert (code, _status(exc)) in {("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)}
            return -1
        return i

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(put, range(writers)))
    winners = [i for i in results if i >= 0]
    assert len(winners) == 1, results
    for s3 in clients:
        assert s3.get_object(Bucket=bucket, Key="race")["Body"].read() == bodies[winners[0]]
