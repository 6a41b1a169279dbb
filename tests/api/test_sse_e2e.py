"""Encryption at rest end to end (issue 16, the engine slice): SSE-S3, SSE-KMS and SSE-C objects
written with PutObject and read back with GetObject/HeadObject (full, ranges, partNumber,
conditions, versions) byte-exact through boto3 and the aws cli; no plaintext on disk; tampered
packages and swapped metadata refused with a 500; wrong and missing SSE-C keys, unknown and
disabled KMS keys answered as S3 does. One server for the module, started with the test KMS
keys."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, make_client
from tierstore.crypto import PACKAGE_BYTES, ciphertext_size

MiB = 1024 * 1024
CUSTOMER_KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def sse_c(key: bytes = CUSTOMER_KEY) -> dict[str, Any]:
    """boto3's SSE-C arguments: it sends the key base64-encoded with its MD5."""
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


# The three kinds as boto3 write arguments, and what each GET must carry (read arguments).
KINDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "s3": ({"ServerSideEncryption": "AES256"}, {}),
    "kms": ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "testkey-1"}, {}),
    "c": (sse_c(), sse_c()),
}
SIZES = {"inline": 1000, "1MiB": MiB, "3MiB+odd": 3 * MiB + 12_345}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("sse") / "data", extra_args=["--kms-create-keys", "testkey-1,testkey-2"]
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(srv: ServerProcess) -> Any:
    """This module's client: conftest's ``bucket`` fixture makes its buckets through it."""
    return make_client(srv.endpoint)


def err(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as exc:
        call()
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"], exc.value.response["Error"]["Code"]


def body_of(size: int, marker: bytes = b"") -> bytes:
    """``size`` bytes that are not periodic at the package size (a misplaced package shows)."""
    data = bytearray(os.urandom(size))
    data[: len(marker)] = marker
    return bytes(data)


def catalog(srv: ServerProcess) -> sqlite3.Connection:
    paths = list(srv.data_dir.rglob("catalog.db")) or list(srv.data_dir.rglob("*.db"))
    assert paths, "no catalog file"
    return sqlite3.connect(paths[0], timeout=10)


def stored_doc(srv: ServerProcess, bucket: str, key: str) -> dict[str, Any]:
    with contextlib.closing(catalog(srv)) as db:
        rows = db.execute("SELECT meta FROM versions WHERE bucket=? AND key=?", (bucket, key.encode())).fetchall()
    assert len(rows) == 1
    doc: dict[str, Any] = json.loads(rows[0][0])
    return doc


# --- every kind x size x read -------------------------------------------------------------------
@pytest.mark.parametrize("size_name", list(SIZES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_put_get_head_ranges_byte_exact(srv: ServerProcess, s3: Any, bucket: str, kind: str, size_name: str) -> None:
    write, read = KINDS[kind]
    size = SIZES[size_name]
    data = body_of(size)
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm="SHA256", **write)
    md5 = hashlib.md5(data).hexdigest()
    if kind == "s3":
        assert put["ETag"] == f'"{md5}"' and put["ServerSideEncryption"] == "AES256"
    else:
        assert put["ETag"] != f'"{md5}"' and len(put["ETag"].strip('"')) == 32
    if kind == "kms":
        assert put["ServerSideEncryption"] == "aws:kms"
        assert put["SSEKMSKeyId"].endswith(":key/testkey-1")
    if kind == "c":
        assert put["SSECustomerAlgorithm"] == "AES256" and "ServerSideEncryption" not in put
        assert put["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(CUSTOMER_KEY).digest()).decode()

    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED", **read)
    assert got["Body"].read() == data
    assert got["ETag"] == put["ETag"] and got["ContentLength"] == size
    assert got["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    head = s3.head_object(Bucket=bucket, Key="k", **read)
    assert head["ContentLength"] == size and head["ETag"] == put["ETag"]
    for name in ("ServerSideEncryption", "SSEKMSKeyId", "SSECustomerAlgorithm", "SSECustomerKeyMD5"):
        assert head.get(name) == put.get(name) == got.get(name), name

    ranges = [(0, 0), (size - 1, size - 1), (size // 3, size // 3 + 4095)]
    if size > PACKAGE_BYTES:  # across package boundaries, and a suffix
        ranges += [(PACKAGE_BYTES - 7, PACKAGE_BYTES + 7), (PACKAGE_BYTES, 3 * PACKAGE_BYTES - 1)]
    for first, last in ranges:
        part = s3.get_object(Bucket=bucket, Key="k", Range=f"bytes={first}-{last}", **read)
        assert part["Body"].read() == data[first : last + 1], (first, last)
        assert part["ContentRange"] == f"bytes {first}-{min(last, size - 1)}/{size}"
    suffix = s3.get_object(Bucket=bucket, Key="k", Range="bytes=-70000", **read)["Body"].read()
    assert suffix == data[-70000:]
    one = s3.get_object(Bucket=bucket, Key="k", PartNumber=1, **read)
    assert one["Body"].read() == data and one["ContentLength"] == size

    # The stored row: plaintext size, ciphertext blob, the "e" document and nothing of the key.
    doc = stored_doc(srv, bucket, "k")
    e = doc["e"]
    assert e["kind"] == kind and e["n"] == size and e["ps"] == PACKAGE_BYTES
    with contextlib.closing(catalog(srv)) as db:
        (row_size, blobs, inline_id) = db.execute(
            "SELECT size, blobs, inline_id FROM versions WHERE bucket=? AND key=?", (bucket, b"k")
        ).fetchone()
        assert row_size == size
        if size_name == "inline":
            assert inline_id is not None
            (stored,) = db.execute("SELECT data FROM inline_blobs WHERE blob_id=?", (inline_id,)).fetchone()
            assert len(stored) == ciphertext_size(size) and data not in stored
        else:
            assert inline_id is None and json.loads(blobs)[0][1] == ciphertext_size(size)
    if kind == "c":
        assert base64.b64encode(CUSTOMER_KEY).decode() not in json.dumps(doc)


def test_empty_object(s3: Any, bucket: str) -> None:
    for kind, (write, read) in KINDS.items():
        s3.put_object(Bucket=bucket, Key=kind, Body=b"", **write)
        got = s3.get_object(Bucket=bucket, Key=kind, **read)
        assert got["Body"].read() == b"" and got["ContentLength"] == 0, kind
