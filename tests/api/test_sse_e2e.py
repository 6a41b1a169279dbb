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
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.sse_server import sse_server_fixtures
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.s3http import Resp, assert_error, signed_request
from tests.test_clients import Aws
from tierstore.blob import BLOCK_SIZE_BYTES
from tierstore.blob._local import _pack_footer, data_size_from_file_size
from tierstore.blob._protocol import crc32c
from tierstore.client import TierstoreClient, resolve_settings
from tierstore.crypto import PACKAGE_BYTES, ciphertext_size

MiB = 1024 * 1024
CUSTOMER_KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
KEY_STATUS_TTL_S = 1.2  # LocalKeyStore caches a key's status per worker for 1 s


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


srv, s3 = sse_server_fixtures("sse")


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


# --- versions, conditions, headers ---------------------------------------------------------------
def test_versions_and_conditions(s3: Any, bucket: str) -> None:
    """Each kind, two versions in a versioned bucket plus the null version from before: each read
    by id byte-exact (the MAC binds the id the catalog gave it); If-Match / If-None-Match on the
    (keyed) ETag."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"null version", ServerSideEncryption="AES256")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    written: list[tuple[str, bytes, dict[str, Any]]] = []
    for kind, (write, read) in KINDS.items():
        for size in (10, 200_000):
            data = body_of(size, kind.encode())
            vid = s3.put_object(Bucket=bucket, Key="k", Body=data, **write)["VersionId"]
            assert vid != "null"
            written.append((vid, data, read))
    for vid, data, read in written:
        got = s3.get_object(Bucket=bucket, Key="k", VersionId=vid, **read)
        assert got["Body"].read() == data and got["VersionId"] == vid
        etag = got["ETag"]
        assert s3.head_object(Bucket=bucket, Key="k", VersionId=vid, IfMatch=etag, **read)["ETag"] == etag
        unchanged = {"VersionId": vid, "IfNoneMatch": etag, **read}
        assert err(lambda unchanged=unchanged: s3.get_object(Bucket=bucket, Key="k", **unchanged)) == (304, "304")
        ranged = s3.get_object(Bucket=bucket, Key="k", VersionId=vid, Range="bytes=5-9", **read)["Body"].read()
        assert ranged == data[5:10]
    got = s3.get_object(Bucket=bucket, Key="k", VersionId="null")
    assert got["Body"].read() == b"null version" and got["ServerSideEncryption"] == "AES256"
    # The latest (SSE-C) needs its key; the versions listing does not.
    assert err(lambda: s3.get_object(Bucket=bucket, Key="k")) == (400, "InvalidRequest")
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == len(written) + 1


def test_kms_context_bucket_key_and_default(s3: Any, bucket: str) -> None:
    context = base64.b64encode(json.dumps({"project": "faces"}).encode()).decode()
    put = s3.put_object(
        Bucket=bucket, Key="ctx", Body=b"with context", ServerSideEncryption="aws:kms", SSEKMSKeyId="testkey-2",
        SSEKMSEncryptionContext=context, BucketKeyEnabled=True,
    )  # fmt: skip
    assert put["SSEKMSEncryptionContext"] == context and put["BucketKeyEnabled"] is True
    assert put["SSEKMSKeyId"] == "arn:aws:kms:us-east-1:000000000000:key/testkey-2"
    got = s3.get_object(Bucket=bucket, Key="ctx")
    assert got["Body"].read() == b"with context" and got["BucketKeyEnabled"] is True
    assert "SSEKMSEncryptionContext" not in got  # never on GET/HEAD, as AWS
    # No key id: the server's own key. DSSE-KMS: stored the same way, answered as asked.
    assert s3.put_object(Bucket=bucket, Key="dflt", Body=b"d", ServerSideEncryption="aws:kms")["SSEKMSKeyId"].endswith(
        "/tierstore-sse-s3"
    )  # fmt: skip
    dsse = s3.put_object(Bucket=bucket, Key="dsse", Body=b"d", ServerSideEncryption="aws:kms:dsse")
    assert dsse["ServerSideEncryption"] == "aws:kms:dsse"
    assert s3.head_object(Bucket=bucket, Key="dsse")["ServerSideEncryption"] == "aws:kms:dsse"
    # The bucket default applies to a PUT that names none.
    by_default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "testkey-1"}
    s3.put_bucket_encryption(
        Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": by_default}]}
    )
    put = s3.put_object(Bucket=bucket, Key="default", Body=b"by default")
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"].endswith("/testkey-1")
    assert s3.get_object(Bucket=bucket, Key="default")["Body"].read() == b"by default"


# --- SSE-C keys, KMS keys ------------------------------------------------------------------------
def test_sse_c_missing_wrong_and_misplaced_keys(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="c", Body=b"customer", **sse_c())
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    s3.put_object(Bucket=bucket, Key="s3", Body=b"sse-s3", ServerSideEncryption="AES256")
    assert err(lambda: s3.get_object(Bucket=bucket, Key="c")) == (400, "InvalidRequest")
    assert err(lambda: s3.head_object(Bucket=bucket, Key="c")) == (400, "400")
    assert err(lambda: s3.get_object(Bucket=bucket, Key="c", **sse_c(OTHER_KEY))) == (403, "AccessDenied")
    assert err(lambda: s3.head_object(Bucket=bucket, Key="c", **sse_c(OTHER_KEY))) == (403, "403")
    assert err(lambda: s3.get_object(Bucket=bucket, Key="c", Range="bytes=0-1", **sse_c(OTHER_KEY))) == (
        403, "AccessDenied"
    )  # fmt: skip
    for key in ("plain", "s3"):
        assert err(lambda key=key: s3.get_object(Bucket=bucket, Key=key, **sse_c())) == (400, "InvalidRequest")
    assert s3.get_object(Bucket=bucket, Key="c", **sse_c())["Body"].read() == b"customer"


def test_sse_c_key_checked_by_its_hmac_not_only_its_md5(srv: ServerProcess, s3: Any, bucket: str) -> None:
    """A row whose stored MD5 (``ckm``) was made to match another key: the engine's salted HMAC
    check still answers 403, and the other key never opens the data."""
    s3.put_object(Bucket=bucket, Key="c", Body=b"customer", **sse_c())
    doc = stored_doc(srv, bucket, "c")
    doc["e"]["ckm"] = base64.b64encode(hashlib.md5(OTHER_KEY).digest()).decode()
    set_meta(srv, bucket, "c", doc)
    assert err(lambda: s3.get_object(Bucket=bucket, Key="c", **sse_c(OTHER_KEY))) == (403, "AccessDenied")


def test_unknown_and_disabled_kms_keys(srv: ServerProcess, s3: Any, bucket: str) -> None:
    assert err(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms",
                                     SSEKMSKeyId="no-such-key")) == (400, "KMS.NotFoundException")  # fmt: skip
    assert err(lambda: s3.head_object(Bucket=bucket, Key="k")) == (404, "404")  # nothing stored
    kms2 = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "testkey-2"}
    s3.put_object(Bucket=bucket, Key="before", Body=b"under key 2", **kms2)
    admin = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    admin.kms_set_key_enabled("testkey-2", False)
    time.sleep(KEY_STATUS_TTL_S)  # every worker sees a key's status within its cache TTL
    try:
        assert err(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", **kms2)) == (400, "KMS.DisabledException")
        assert err(lambda: s3.get_object(Bucket=bucket, Key="before")) == (400, "KMS.DisabledException")
        assert s3.head_object(Bucket=bucket, Key="before")["ContentLength"] == len(b"under key 2")  # no unwrap
    finally:
        admin.kms_set_key_enabled("testkey-2", True)
        time.sleep(KEY_STATUS_TTL_S)
    assert err(lambda: s3.head_object(Bucket=bucket, Key="k")) == (404, "404")
    assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"under key 2"


# --- nothing in clear on disk --------------------------------------------------------------------
def test_no_plaintext_on_disk(srv: ServerProcess, s3: Any, bucket: str) -> None:
    """Every kind, inline and blob sized, and a plain control: the control's marker is found in
    the raw bytes of the data dir (so the search works), no encrypted object's marker is."""
    markers: dict[str, bytes] = {}
    for kind, (write, _read) in KINDS.items():
        for size_name in ("inline", "1MiB"):
            marker = f"MARKER-{uuid.uuid4().hex}-{kind}-{size_name}".encode()
            markers[f"{kind}-{size_name}"] = marker
            data = marker * (SIZES[size_name] // len(marker) + 1)
            s3.put_object(Bucket=bucket, Key=f"{kind}-{size_name}", Body=data, **write)
    control = f"MARKER-{uuid.uuid4().hex}-plain".encode()
    s3.put_object(Bucket=bucket, Key="plain", Body=control * 100)
    raw = [p.read_bytes() for p in srv.data_dir.rglob("*") if p.is_file()]
    assert any(control in data for data in raw), "the search finds plaintext"
    for name, marker in markers.items():
        assert not any(marker in data for data in raw), name


# --- tampering -----------------------------------------------------------------------------------
def set_meta(srv: ServerProcess, bucket: str, key: str, doc: dict[str, Any], version_id: str | None = None) -> None:
    with contextlib.closing(catalog(srv)) as db, db:
        sql, args = "UPDATE versions SET meta=? WHERE bucket=? AND key=?", [json.dumps(doc), bucket, key.encode()]
        if version_id is not None:
            sql += " AND version_id=?"
            args.append(version_id)
        assert db.execute(sql, args).rowcount == 1


def blob_file(srv: ServerProcess, bucket: str, key: str) -> Path:
    with contextlib.closing(catalog(srv)) as db:
        (blobs,) = db.execute("SELECT blobs FROM versions WHERE bucket=? AND key=?", (bucket, key.encode())).fetchone()
    (blob_id, _size), *_ = json.loads(blobs)
    (path,) = [p for p in srv.data_dir.rglob(blob_id) if p.is_file()]
    return path


def tamper_blob(path: Path, offset: int) -> None:
    """Flip one data byte of a blob file and fix its block CRC, table CRC and footer (the blob
    format, blob/_local.py), so only the encryption can notice."""
    raw = bytearray(path.read_bytes())
    size = data_size_from_file_size(len(raw))
    assert size is not None and offset < size
    raw[offset] ^= 0x01
    block = offset // BLOCK_SIZE_BYTES
    blocks = -(-size // BLOCK_SIZE_BYTES)
    data = raw[block * BLOCK_SIZE_BYTES : min(size, (block + 1) * BLOCK_SIZE_BYTES)]
    raw[size + 4 * block : size + 4 * block + 4] = crc32c(data).to_bytes(4, "little")
    table = raw[size : size + 4 * blocks]
    raw[size + 4 * blocks :] = _pack_footer(size, crc32c(table))
    path.write_bytes(bytes(raw))


def get_status(s3: Any, bucket: str, key: str, **kw: Any) -> tuple[int, bytes | str]:
    """(200, body) or (status, error code); a body cut short mid-stream is (0, what arrived)."""
    try:
        got = s3.get_object(Bucket=bucket, Key=key, **kw)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]
    try:
        return 200, got["Body"].read()
    except Exception:
        return 0, b""


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_flipped_byte_is_a_500_never_wrong_plaintext(srv: ServerProcess, s3: Any, bucket: str, kind: str) -> None:
    write, read = KINDS[kind]
    data = body_of(3 * PACKAGE_BYTES + 100)
    s3.put_object(Bucket=bucket, Key="blob", Body=data, **write)
    # package 1 damaged: a read of package 0 alone still works; one touching package 1 does not
    tamper_blob(blob_file(srv, bucket, "blob"), PACKAGE_BYTES + 16 + 500)
    assert s3.get_object(Bucket=bucket, Key="blob", Range="bytes=0-99", **read)["Body"].read() == data[:100]
    first = f"bytes={PACKAGE_BYTES + 10}-{PACKAGE_BYTES + 20}"
    assert get_status(s3, bucket, "blob", Range=first, **read) == (500, "InternalError")  # before the first byte
    status, body = get_status(s3, bucket, "blob", **read)  # package 0 went out: the stream is cut
    assert status in (0, 500) and body != data
    # inline: flip a ciphertext byte and fix its CRC in the catalog
    s3.put_object(Bucket=bucket, Key="small", Body=b"small secret", **write)
    with contextlib.closing(catalog(srv)) as db, db:
        (inline_id,) = db.execute(
            "SELECT inline_id FROM versions WHERE bucket=? AND key=?", (bucket, b"small")
        ).fetchone()
        (stored,) = db.execute("SELECT data FROM inline_blobs WHERE blob_id=?", (inline_id,)).fetchone()
        bad = bytes([stored[0] ^ 0x80]) + stored[1:]
        db.execute("UPDATE inline_blobs SET data=?, crc32c=? WHERE blob_id=?", (bad, crc32c(bad), inline_id))
    assert get_status(s3, bucket, "small", **read) == (500, "InternalError")
    log = srv.log()
    assert f"sse integrity: {bucket}/small" in log and f"sse integrity: {bucket}/blob" in log
    assert base64.b64encode(CUSTOMER_KEY).decode() not in log
    for doc in (stored_doc(srv, bucket, "small"), stored_doc(srv, bucket, "blob")):
        assert doc["e"]["wk"] not in log and doc["e"]["mac"] not in log


def test_swapped_metadata_is_a_500(srv: ServerProcess, s3: Any, bucket: str) -> None:
    """The "e" of another object (another DK: its wrap names another key), and the "e" of another
    version of the same key (same wrap context, but the MAC names the other version id)."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    one = s3.put_object(Bucket=bucket, Key="a", Body=b"first", ServerSideEncryption="AES256")["VersionId"]
    two = s3.put_object(Bucket=bucket, Key="a", Body=b"other", ServerSideEncryption="AES256")["VersionId"]
    s3.put_object(Bucket=bucket, Key="b", Body=b"bbbbb", ServerSideEncryption="AES256")
    with contextlib.closing(catalog(srv)) as db:
        metas = dict(db.execute("SELECT version_id, meta FROM versions WHERE bucket=? AND key=?", (bucket, b"a")))
        (meta_b,) = db.execute("SELECT meta FROM versions WHERE bucket=? AND key=?", (bucket, b"b")).fetchone()
    set_meta(srv, bucket, "a", json.loads(metas[two]), one)  # version two's "e" on version one
    assert get_status(s3, bucket, "a", VersionId=one) == (500, "InternalError")
    set_meta(srv, bucket, "a", json.loads(meta_b), two)  # object b's "e" on a
    assert get_status(s3, bucket, "a", VersionId=two) == (500, "InternalError")
    set_meta(srv, bucket, "a", json.loads(metas[one]), one)  # back in place: opens again
    assert s3.get_object(Bucket=bucket, Key="a", VersionId=one)["Body"].read() == b"first"
    doc = json.loads(metas[one])
    doc["e"]["n"] = 4  # an edited size (the row's too): the MAC
    set_meta(srv, bucket, "a", doc, one)
    with contextlib.closing(catalog(srv)) as db, db:
        db.execute("UPDATE versions SET size=4 WHERE bucket=? AND key=? AND version_id=?", (bucket, b"a", one))
    assert get_status(s3, bucket, "a", VersionId=one) == (500, "InternalError")


# --- the aws cli ---------------------------------------------------------------------------------
def test_aws_cli_each_kind(srv: ServerProcess, bucket: str, tmp_path: Path) -> None:
    cli = Aws(srv, tmp_path / "home")
    src = tmp_path / "src.bin"
    data = body_of(300_000)
    src.write_bytes(data)
    key_file = tmp_path / "customer.key"
    key_file.write_bytes(CUSTOMER_KEY)
    runs = {
        "s3": (["--sse", "AES256"], []),
        "kms": (["--sse", "aws:kms", "--sse-kms-key-id", "testkey-1"], []),
        "c": (["--sse-c", "AES256", "--sse-c-key", f"fileb://{key_file}"],
              ["--sse-c", "AES256", "--sse-c-key", f"fileb://{key_file}"]),
    }  # fmt: skip
    for kind, (up, down) in runs.items():
        cli.run("s3", "cp", str(src), f"s3://{bucket}/{kind}.bin", *up)
        out = tmp_path / f"{kind}.out"
        cli.run("s3", "cp", f"s3://{bucket}/{kind}.bin", str(out), *down)
        assert out.read_bytes() == data, kind
        head = json.loads(cli.run("s3api", "head-object", "--bucket", bucket, "--key", f"{kind}.bin",
                                  *(["--sse-customer-algorithm", "AES256", "--sse-customer-key",
                                     f"fileb://{key_file}"] if kind == "c" else [])).stdout)  # fmt: skip
        assert head.get("ServerSideEncryption", head.get("SSECustomerAlgorithm")) in ("AES256", "aws:kms"), kind


def sse_c_headers(key: bytes) -> dict[str, str]:
    """The SSE-C request headers of ``key`` (raw HTTP)."""
    return {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
        "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(key).digest()).decode(),
    }


def test_object_attributes_of_an_sse_c_object_need_its_key(srv: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="c", Body=b"customer", **sse_c())
    wanted = {"x-amz-object-attributes": "ObjectSize,ETag"}

    def attributes(key: bytes | None) -> Resp:
        headers = {**wanted, **(sse_c_headers(key) if key else {})}
        return signed_request(srv, "GET", f"/{bucket}/c", query=[("attributes", "")], headers=headers)

    assert_error(attributes(None), 400, "InvalidRequest")
    assert_error(attributes(OTHER_KEY), 403, "AccessDenied")
    ok = attributes(CUSTOMER_KEY)
    assert ok.status == 200 and b"<ObjectSize>8</ObjectSize>" in ok.body


def test_datasets_over_encrypted_objects_read_byte_exact(srv: ServerProcess, s3: Any, bucket: str) -> None:
    """Batch reads decrypt pinned rows (the multipart/copy slice): datasets made by prefix, query
    and rows alike read the plaintext, a row range included."""
    client = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    s3.put_object(Bucket=bucket, Key="train/plain", Body=b"plain")
    s3.put_object(Bucket=bucket, Key="train/secret", Body=b"secret", ServerSideEncryption="AES256")
    made = {
        "prefix": client.create_dataset(f"ds-{uuid.uuid4().hex[:8]}", bucket=bucket, prefix="train/"),
        "query": client.create_dataset(f"ds-{uuid.uuid4().hex[:8]}", bucket=bucket, query="size > 0"),
        "rows": client.create_dataset(
            f"ds-{uuid.uuid4().hex[:8]}",
            rows=[
                {"bucket": bucket, "key": "train/secret", "offset": 1, "size": 3},
                {"bucket": bucket, "key": "train/plain"},
            ],
        ),
    }
    expected = {"prefix": [b"plain", b"secret"], "query": [b"plain", b"secret"], "rows": [b"ecr", b"plain"]}
    for how, rec in made.items():
        assert [i.data for i in client.read_rows(rec["ref"], [0, 1])] == expected[how], how


def test_tagging_and_acl_changes_keep_an_encrypted_object_readable(s3: Any, bucket: str) -> None:
    """Tagging and ACL updates rewrite the version's metadata document: its "e" goes along."""
    for kind, (write, read) in KINDS.items():
        s3.put_object(Bucket=bucket, Key=kind, Body=b"tagged " + kind.encode(), **write)
        s3.put_object_tagging(Bucket=bucket, Key=kind, Tagging={"TagSet": [{"Key": "team", "Value": "ml"}]})
        s3.put_object_acl(Bucket=bucket, Key=kind, ACL="public-read")
        got = s3.get_object(Bucket=bucket, Key=kind, **read)
        assert got["Body"].read() == b"tagged " + kind.encode() and got["TagCount"] == 1, kind


def test_erasure_coded_drives_hold_only_ciphertext_and_serve_around_bitrot(tmp_path: Path) -> None:
    """On a 4-drive erasure set the blob layer codes and CRC-checks ciphertext as it does any
    bytes: a flipped byte in one shard (bitrot, caught by the CRC) is read around from parity
    and the plaintext comes back exact; no drive holds the marker."""
    drives = [tmp_path / f"drive{i}" for i in range(4)]
    args = ["--drives", *map(str, drives), "--stripe-bytes", "262144", "--small-object-bytes", "16384",
            "--scrub-interval", "0", "--kms-create-keys", "testkey-1", "--sse-c-over-http"]  # fmt: skip
    srv = ServerProcess(tmp_path / "log", extra_args=args)
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="ec-sse")
        marker = f"MARKER-{uuid.uuid4().hex}".encode()
        datas = {}
        for kind, (write, _read) in KINDS.items():
            datas[kind] = body_of(3 * 262144 + 5, marker)
            s3.put_object(Bucket="ec-sse", Key=kind, Body=datas[kind], **write)
        shards = [p for d in drives for p in (d / "blobs").rglob("*") if p.is_file()]
        assert shards and not any(marker in p.read_bytes() for d in drives for p in d.rglob("*") if p.is_file())
        for p in shards[::5]:  # bitrot in some shards of every object
            raw = bytearray(p.read_bytes())
            raw[len(raw) // 3] ^= 0xFF
            p.write_bytes(bytes(raw))
        for kind, (_write, read) in KINDS.items():
            assert s3.get_object(Bucket="ec-sse", Key=kind, **read)["Body"].read() == datas[kind], kind
            part = s3.get_object(Bucket="ec-sse", Key=kind, Range="bytes=300000-400000", **read)["Body"].read()
            assert part == datas[kind][300000:400001], kind
    finally:
        srv.stop()
