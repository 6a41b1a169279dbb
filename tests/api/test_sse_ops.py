"""Operating encrypted data (issue 16, slice 2c), end to end through real servers: key rotation
re-wraps data keys without touching object bytes (``admin kms key rotate --rewrap`` / ``rewrap``,
resumable), heal names the objects of a lost blob and ``heal --verify-encryption`` finds a
tampered package whose CRCs are valid, and the CRC-off fast read re-reads a rotten shard with
checksums on an erasure set (parity repairs it, the GET is byte-exact)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.sse_server import sse_server_fixtures
from tests.cli.test_client_commands import cli
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tierstore.blob._erasure import placement
from tierstore.blob._local import FOOTER, data_size_from_file_size
from tierstore.blob._protocol import BLOCK_SIZE_BYTES, crc32c
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings
from tierstore.crypto import PACKAGE_BYTES

MiB = 1024 * 1024
SEALED = PACKAGE_BYTES + 16


srv, s3 = sse_server_fixtures("sseops")


def catalog(srv: ServerProcess) -> sqlite3.Connection:
    (path,) = list(srv.data_dir.rglob("catalog.db"))
    return sqlite3.connect(path, timeout=10)


def versions(srv: ServerProcess, bucket: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(key, version id) -> the version's "e" document, straight from the catalog file."""
    with contextlib.closing(catalog(srv)) as db:
        rows = db.execute("SELECT key, version_id, meta, blobs FROM versions WHERE bucket=?", (bucket,)).fetchall()
    return {(bytes(k).decode(), v): {**json.loads(m)["e"], "_blobs": json.loads(b)} for k, v, m, b in rows}


def kek_version(doc: dict[str, Any]) -> int:
    """The key service key version a wrapped data key names (bytes 1..4, big-endian)."""
    wrapped = base64.b64decode(doc["wk"])
    return int.from_bytes(wrapped[1:5], "big")


def blob_file(srv: ServerProcess, blob_id: str) -> Path:
    (path,) = list((srv.data_dir / "blobs").rglob(blob_id))
    return path


def json_docs(text: str) -> list[Any]:
    """Every JSON document printed one after another (rotate --rewrap prints two)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


def logged(srv: ServerProcess, *texts: str) -> bool:
    """Whether the server's log has every text, waiting up to 10 s: a worker's log lines reach
    the file shortly after its answer does."""
    deadline = time.monotonic() + 10
    while True:
        log = srv.log()
        if all(t in log for t in texts) or time.monotonic() > deadline:
            return all(t in log for t in texts)
        time.sleep(0.05)


def client(srv: ServerProcess) -> TierstoreClient:
    return TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))


# --- rotation: re-wrap without rewriting ------------------------------------------------------------
def test_rotate_rewrap_moves_wrapped_keys_and_leaves_the_data(srv: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    kms1 = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "testkey-1"}
    bodies = {"small": os.urandom(1000), "big": os.urandom(MiB + 12_345), "again": os.urandom(70_000)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, **kms1)
    newer = os.urandom(5000)
    s3.put_object(Bucket=bucket, Key="again", Body=newer, **kms1)  # a second version under the key
    s3.put_object(Bucket=bucket, Key="s3", Body=b"s" * 3000, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="other", Body=b"o" * 3000, ServerSideEncryption="aws:kms", SSEKMSKeyId="testkey-2")
    before = versions(srv, bucket)
    files = {b[0]: blob_file(srv, b[0]).read_bytes() for d in before.values() for b in d["_blobs"]}
    under_1 = {name for name, d in before.items() if d["kid"] == "testkey-1"}
    assert len(under_1) == 4 and all(kek_version(before[n]) == 1 for n in under_1)

    out = cli(srv, "admin", "kms", "key", "rotate", "testkey-1", "--rewrap")
    assert out.returncode == 0, out.stdout + out.stderr
    status, totals = json_docs(out.stdout)
    assert status["versions"] >= 2
    assert (totals["scanned"], totals["rewrapped"], totals["failed"]) == (4, 4, 0), totals
    assert totals["newest_version"] == status["versions"]
    assert "4 rewrapped" in out.stderr  # the progress line

    after = versions(srv, bucket)
    for name, doc in after.items():
        old = before[name]
        moved = name in under_1
        assert kek_version(doc) == (status["versions"] if moved else 1), name
        assert (doc["wk"] != old["wk"]) == moved
        for field in ("mac", "np", "n", "kid", "kind"):  # the data key did not change: nothing else did
            assert doc[field] == old[field], (name, field)
    assert {b: blob_file(srv, b).read_bytes() for b in files} == files  # not one byte rewritten
    for key, body in {**bodies, "again": newer}.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    again_versions = [v for k, v in after if k == "again"]
    got = {s3.get_object(Bucket=bucket, Key="again", VersionId=v)["Body"].read() for v in again_versions}
    assert got == {bodies["again"], newer}
    assert s3.get_object(Bucket=bucket, Key="other")["Body"].read() == b"o" * 3000

    # Resumable: a second walk (a page at a time) finds every version current, without a change.
    out = cli(srv, "admin", "kms", "key", "rewrap", "testkey-1", "--page", "1", "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    totals = json.loads(out.stdout)
    assert (totals["scanned"], totals["current"], totals["rewrapped"]) == (4, 4, 0), totals
    assert versions(srv, bucket) == after


def test_rewrap_pages_resume_from_the_cursor(srv: ServerProcess, s3: Any, bucket: str) -> None:
    kms2 = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "testkey-2"}
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=bytes([i]) * 2000, **kms2)
    c = client(srv)
    newest = c.kms_rotate_key("testkey-2")["versions"]
    page = c.kms_rewrap_key("testkey-2", limit=2)
    assert page["next"] is not None and page["scanned"] == 2
    done = page["rewrapped"]
    while page["next"] is not None:  # stop here and come back later: the cursor says where
        page = c.kms_rewrap_key("testkey-2", after=page["next"], limit=2)
        done += page["rewrapped"]
    assert done >= 3  # other tests' versions under testkey-2 may be in the walk too
    assert all(kek_version(d) == newest for d in versions(srv, bucket).values())
    for i in range(3):
        assert s3.get_object(Bucket=bucket, Key=f"k{i}")["Body"].read() == bytes([i]) * 2000
    with pytest.raises(TierstoreClientError) as exc:
        c.kms_rewrap_key("testkey-2", after="not-a-cursor")
    assert exc.value.code == "InvalidArgument"


def test_rewrap_reports_a_damaged_wrapped_key_and_refuses_missing_or_disabled_keys(
    srv: ServerProcess, s3: Any, bucket: str
) -> None:
    out = cli(srv, "admin", "kms", "key", "create", "rewrap-damage")
    assert out.returncode == 0, out.stderr
    kms = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "rewrap-damage"}
    s3.put_object(Bucket=bucket, Key="good", Body=b"g" * 100, **kms)
    s3.put_object(Bucket=bucket, Key="bad", Body=b"b" * 100, **kms)
    with contextlib.closing(catalog(srv)) as db:
        (meta,) = db.execute("SELECT meta FROM versions WHERE bucket=? AND key=?", (bucket, b"bad")).fetchone()
        doc = json.loads(meta)
        wrapped = bytearray(base64.b64decode(doc["e"]["wk"]))
        wrapped[-1] ^= 1  # the tag of the wrap: it no longer opens
        doc["e"]["wk"] = damaged_wk = base64.b64encode(bytes(wrapped)).decode()
        db.execute("UPDATE versions SET meta=? WHERE bucket=? AND key=?", (json.dumps(doc), bucket, b"bad"))
        db.commit()
    out = cli(srv, "admin", "kms", "key", "rotate", "rewrap-damage", "--rewrap")
    assert out.returncode == 1, out.stdout + out.stderr
    totals = json_docs(out.stdout)[-1]
    assert (totals["scanned"], totals["rewrapped"], totals["failed"]) == (2, 1, 1), totals
    assert totals["failures"] == [f"{bucket}/bad@null"]
    assert s3.get_object(Bucket=bucket, Key="good")["Body"].read() == b"g" * 100
    good_wk = versions(srv, bucket)[("good", "null")]["wk"]
    assert damaged_wk not in srv.log() and good_wk not in srv.log()  # no wrapped key reaches the log

    out = cli(srv, "admin", "kms", "key", "rewrap", "no-such-key")
    assert out.returncode == 2 and "KMS.NotFoundException" in out.stderr, out.stderr
    assert cli(srv, "admin", "kms", "key", "disable", "rewrap-damage").returncode == 0
    out = cli(srv, "admin", "kms", "key", "rewrap", "rewrap-damage")
    assert out.returncode == 2 and "KMS.DisabledException" in out.stderr, out.stderr


# --- heal and scrub ----------------------------------------------------------------------------------
def _tamper_keeping_crcs(path: Path, offset: int) -> None:
    """Flip one data byte of a LocalBlobStore file and write its block's CRC32C, the table's CRC
    and the footer's CRC to match: damage only the GCM tag can see."""
    raw = bytearray(path.read_bytes())
    size = data_size_from_file_size(len(raw))
    assert size is not None and offset < size
    raw[offset] ^= 0x40
    block = offset // BLOCK_SIZE_BYTES
    data = raw[block * BLOCK_SIZE_BYTES : min(size, (block + 1) * BLOCK_SIZE_BYTES)]
    struct.pack_into("<I", raw, size + 4 * block, crc32c(data))
    blocks = -(-size // BLOCK_SIZE_BYTES)
    footer_at = size + 4 * blocks
    struct.pack_into("<I", raw, footer_at + 24, crc32c(raw[size:footer_at]))
    struct.pack_into("<I", raw, footer_at + 28, crc32c(raw[footer_at : footer_at + 28]))
    assert len(raw) == footer_at + FOOTER.size
    path.write_bytes(bytes(raw))


def test_heal_verify_encryption_finds_a_tampered_package_and_names_lost_objects(
    srv: ServerProcess, s3: Any, bucket: str
) -> None:
    body = os.urandom(4 * PACKAGE_BYTES + 999)
    s3.put_object(Bucket=bucket, Key="tampered", Body=body, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="rotten", Body=body, ServerSideEncryption="AES256")
    customer = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": bytes(range(32))}
    s3.put_object(Bucket=bucket, Key="customer", Body=body, **customer)
    docs = versions(srv, bucket)
    tampered = blob_file(srv, docs[("tampered", "null")]["_blobs"][0][0])
    rotten = blob_file(srv, docs[("rotten", "null")]["_blobs"][0][0])
    _tamper_keeping_crcs(tampered, 2 * SEALED + 100)  # inside package 2
    raw = bytearray(rotten.read_bytes())
    raw[10] ^= 1  # plain bitrot: the CRC of block 0 sees it
    rotten.write_bytes(bytes(raw))

    # Reads: the packages before the bad one still serve; a range starting at it is a 500.
    assert s3.get_object(Bucket=bucket, Key="tampered", Range="bytes=0-99")["Body"].read() == body[:100]
    for key in ("tampered", "rotten"):
        start = 2 * PACKAGE_BYTES if key == "tampered" else 0
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + 99}")
        assert exc.value.response["Error"]["Code"] == "InternalError"
    assert logged(srv, f"sse integrity: {bucket}/tampered version null package 2")

    # A plain heal sees valid CRCs in the tampered blob (healthy) and names the rotten blob's object.
    out = cli(srv, "heal", "-q", "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert rotten.name in report["lost"] and tampered.name not in report["lost"]
    assert f"{bucket}/rotten@null" in report["lost_objects"]
    assert f"{bucket}/tampered@null" not in report["lost_objects"]
    assert report["sse_checked"] == 0

    out = cli(srv, "heal", "-q", "--json", "--verify-encryption")
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert f"sse:{bucket}/tampered@null#2" in report["lost"], report["lost"]
    assert f"sse:{bucket}/rotten@null#blob" in report["lost"], report["lost"]
    assert {f"{bucket}/tampered@null", f"{bucket}/rotten@null"} <= set(report["lost_objects"])
    assert report["sse_failed"] >= 2 and report["sse_skipped"] >= 1  # the SSE-C object: no key here
    assert not any("customer" in x for x in report["lost"])
    out = cli(srv, "heal", "-q", "--verify-encryption")
    assert "encrypted objects:" in out.stdout and "objects affected:" in out.stdout, out.stdout
    s3.delete_object(Bucket=bucket, Key="tampered")  # leave the module's server healthy for the next test
    s3.delete_object(Bucket=bucket, Key="rotten")


def test_heal_verify_encryption_passes_intact_objects(srv: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="fine", Body=os.urandom(3 * PACKAGE_BYTES), ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="inline", Body=b"x" * 100, ServerSideEncryption="aws:kms", SSEKMSKeyId="testkey-1")
    # (the other tests of the module leave only intact objects behind)
    out = cli(srv, "heal", "-q", "--json", "--verify-encryption")
    report = json.loads(out.stdout)
    assert out.returncode == 0, report
    assert report["sse_failed"] == 0 and report["sse_checked"] >= 2 and not report["lost"]


# --- the CRC-off fast read on an erasure set -----------------------------------------------------------
def test_fast_read_rereads_a_rotten_shard_with_checksums_and_heals(tmp_path: Path) -> None:
    drives = [tmp_path / f"drive{i}" for i in range(4)]
    args = ["--drives", *map(str, drives), "--heal-queue-interval", "0.2", "--scrub-interval", "0"]
    srv = ServerProcess(tmp_path / "log", extra_args=args)
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="erasure")
        body = os.urandom(3 * MiB + 12_345)
        s3.put_object(Bucket="erasure", Key="obj", Body=body, ServerSideEncryption="AES256")
        with contextlib.closing(sqlite3.connect(next(drives[0].rglob("catalog.db")), timeout=10)) as db:
            (blobs,) = db.execute("SELECT blobs FROM versions WHERE key=?", (b"obj",)).fetchone()
        blob_id = json.loads(blobs)[0][0]
        (piece,) = list((drives[placement(blob_id, 4)[0]] / "blobs").rglob(blob_id))  # data shard 0
        raw = bytearray(piece.read_bytes())
        raw[100] ^= 1  # bitrot in the first package's ciphertext, on one drive
        piece.write_bytes(bytes(raw))

        assert s3.get_object(Bucket="erasure", Key="obj")["Body"].read() == body
        assert s3.get_object(Bucket="erasure", Key="obj", Range="bytes=0-4095")["Body"].read() == body[:4096]
        # the unchecked read handed the rotten byte to the opener, which asked for a checked re-read
        assert logged(srv, "reading it again with checksums")
        assert "sse integrity" not in srv.log()
        out = cli(srv, "heal", "-q", "--json", "--verify-encryption")
        report = json.loads(out.stdout)
        assert out.returncode == 0, report
        assert report["sse_checked"] == 1 and report["sse_failed"] == 0 and not report["lost"]
        assert piece.read_bytes() != bytes(raw)  # the shard was rebuilt (by the heal queue or this heal)
        assert s3.get_object(Bucket="erasure", Key="obj")["Body"].read() == body
    finally:
        srv.stop()
