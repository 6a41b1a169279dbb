"""Crash safety of encrypted writes (issue 16): a small variant of tests/test_crash.py. Clients
PUT SSE-S3, SSE-KMS and SSE-C objects (inline and blob sized) while the server is SIGKILLed at
seeded random moments; after each restart every key reads back (with its SSE-C key when it is
SSE-C) as the last acknowledged write or, for a write that got no answer, as the old or the new
body whole — never torn, never a 500 from a half-written row; at the end no catalog row lacks its
blob file. ``TIERSTORE_TEST_SEED`` replays a run; ``TIERSTORE_SSE_CRASH_ROUNDS`` sets the kills.

Multipart uploads and copies are killed at chosen points instead: in the middle of an UploadPart
body, during CompleteMultipartUpload, and while a CopyObject or UploadPartCopy into an encrypted
destination (from SSE-C, plain or SSE-S3 sources) is writing its new blob ("writing": the temp
file holds a MiB) or right after the blob was published ("written": the temp file of the full
blob went away, the catalog commit is next). After each restart: acknowledged objects and parts
read back byte-exact, an unacknowledged one is absent or whole (a copy over an older object: old
or new), the upload can still be completed (a retried Complete answers as the first) or aborted,
``heal --verify-encryption`` opens every package of every SSE-S3/KMS version cleanly, and no
catalog row lacks its blob file."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.cli.test_client_commands import cli
from tests.conftest import ServerProcess, make_client
from tests.test_durability import start_slow_put

ROUNDS = int(os.environ.get("TIERSTORE_SSE_CRASH_ROUNDS", "5"))
THREADS = 2
KEYS_PER_THREAD = 4
BUCKET = "sse-crash"
CUSTOMER_KEY = bytes(range(32))
WRITES: dict[str, dict[str, Any]] = {
    "s3": {"ServerSideEncryption": "AES256"},
    "kms": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "testkey-1"},
    "c": {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER_KEY},
}
SSE_C_READ = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER_KEY}
# --sse-c-over-http: the clients send customer keys over plain HTTP to 127.0.0.1.
SERVER_ARGS = ["--kms-create-keys", "testkey-1", "--gc-grace", "10", "--sse-c-over-http"]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Writer(threading.Thread):
    """PUTs seeded bodies of random kinds to its own keys until the server dies under it."""

    def __init__(self, s3: Any, keys: list[str], possible: dict[str, set[str | None]], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.s3, self.keys, self.possible, self.rng = s3, keys, possible, rng
        self.errors: list[str] = []
        self.acked = 0

    def run(self) -> None:
        for _ in range(200):
            key = self.rng.choice(self.keys)
            kind = self.rng.choice(list(WRITES))
            size = self.rng.choice(
                [0, 100, 5_000, self.rng.randint(20_000, 200_000), self.rng.randint(200_000, 900_000)]
            )
            data = self.rng.randbytes(size)
            new = digest(data)
            self.possible[key].add(new)  # from now on the key may read as this body
            try:
                self.s3.put_object(Bucket=BUCKET, Key=key, Body=data, **WRITES[kind])
            except BotoCoreError:  # no answer: the server died; old or new, whole
                return
            except ClientError as exc:
                self.errors.append(f"PUT {key} ({kind}): {exc}")
                return
            self.possible[key] = {new}
            self.acked += 1


def read_back(s3: Any, key: str) -> str | None:
    """The digest of what ``key`` reads as (None: absent), with the SSE-C key if it is SSE-C."""
    try:
        return digest(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "NoSuchKey":
            return None
        assert code == "InvalidRequest", f"{key}: {code} {exc}"  # SSE-C: read it with its key
    return digest(s3.get_object(Bucket=BUCKET, Key=key, **SSE_C_READ)["Body"].read())


def rows_without_blob_files(data_dir: Path) -> list[str]:
    db = sqlite3.connect(f"file:{data_dir / 'catalog.db'}?mode=ro", uri=True)
    try:
        ids = {b for (blobs,) in db.execute("SELECT blobs FROM versions") for b, _size in json.loads(blobs)}
    finally:
        db.close()
    files = {p.name for p in (data_dir / "blobs").rglob("*") if p.is_file()}
    return sorted(ids - files)


def test_sigkill_during_encrypted_puts_loses_no_acknowledged_write(tmp_path: Path) -> None:
    seed = int(os.environ.get("TIERSTORE_TEST_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"\nsse crash seed: {seed} (TIERSTORE_TEST_SEED={seed} replays the schedule)")
    rng = random.Random(seed)
    srv = ServerProcess(tmp_path / "data", extra_args=SERVER_ARGS)
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        keys = [f"k{i:02d}" for i in range(THREADS * KEYS_PER_THREAD)]
        possible: dict[str, set[str | None]] = {k: {None} for k in keys}
        acked = 0
        for rnd in range(ROUNDS):
            writers = [
                Writer(make_client(srv.endpoint), keys[i::THREADS], possible, random.Random(rng.getrandbits(64)))
                for i in range(THREADS)
            ]
            for w in writers:
                w.start()
            time.sleep(rng.uniform(0.1, 0.6))
            srv.stop(signal.SIGKILL)
            for w in writers:
                w.join(60)
                assert not w.is_alive(), "writer hung after the kill"
                assert not w.errors, f"round {rnd} (seed {seed}): {w.errors}"
                acked += w.acked
            srv.start()
            for key in keys:
                seen = read_back(s3, key)
                assert seen in possible[key], f"round {rnd} (seed {seed}): {key} reads {seen}, not {possible[key]}"
                possible[key] = {seen}
        print(f"acknowledged encrypted writes: {acked}")
        assert acked > 0, "no write was acknowledged: the kills came too early to test anything"
    finally:
        srv.stop()
    assert rows_without_blob_files(srv.data_dir) == []


# --- multipart uploads and copies, killed at chosen points ------------------------------------------
MiB = 1024 * 1024
PART_BYTES = 5 * MiB  # every part but the last is at least this
SOURCE_BYTES = 12 * MiB  # a copy source: re-sealing it takes long enough to be caught in the middle
WRITING_BYTES = MiB  # "writing": a temp blob holds at least this much
KMS = WRITES["kms"]
S3 = WRITES["s3"]
COPY_SSE_C = {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": CUSTOMER_KEY}


def seeded(name: str) -> random.Random:
    seed = int(os.environ.get("TIERSTORE_TEST_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"\n{name} seed: {seed} (TIERSTORE_TEST_SEED={seed} replays it)")
    return random.Random(seed)


class InFlight(threading.Thread):
    """One request in a thread: ``acked`` once its answer arrived; an error answer is a failure
    (the server must never answer a half-done write with an error); no answer: the server died."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.acked = False
        self.result: Any = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BotoCoreError:
            return
        except ClientError as exc:
            self.error = str(exc)
            return
        self.acked = True

    def done(self) -> bool:
        self.join(60)
        assert not self.is_alive(), "the request hung after the kill"
        assert self.error is None, self.error
        return self.acked


def temp_sizes(srv: ServerProcess) -> dict[str, int]:
    out = {}
    try:
        with os.scandir(srv.data_dir / "tmp") as entries:
            for entry in entries:
                try:
                    out[entry.name] = entry.stat().st_size
                except FileNotFoundError:  # published and unlinked meanwhile
                    continue
    except FileNotFoundError:
        pass
    return out


def kill_at(srv: ServerProcess, point: str, flight: InFlight | None = None, full_bytes: int = 0) -> bool:
    """SIGKILL the server at ``point`` of the blob write a request in flight is making:
    "writing" once a temp blob holds WRITING_BYTES, "written" once a temp blob that reached
    ``full_bytes`` is gone (linked into place; the catalog commit comes next). True when the kill
    came at that point, False when the request ended first (then it is killed all the same)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    hit = False
    while time.monotonic() < deadline and not hit:
        sizes = temp_sizes(srv)
        if point == "writing":
            hit = any(size >= WRITING_BYTES for size in sizes.values())
        else:
            hit = bool(seen - set(sizes))
            seen |= {name for name, size in sizes.items() if size >= full_bytes}
        if not hit and flight is not None and not flight.is_alive():
            break
        if not hit:
            time.sleep(0.0005)
    srv.stop(signal.SIGKILL)
    return hit


def reads(s3: Any, bucket: str, key: str, **extra: Any) -> str | None:
    """The digest of what ``key`` reads as (None: absent)."""
    try:
        return digest(s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise


def part_numbers(s3: Any, bucket: str, key: str, upload_id: str) -> list[int]:
    return [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])]


def verify_encryption_clean(srv: ServerProcess) -> int:
    """``heal --verify-encryption``: exit 0, nothing lost, no package that fails to open; the
    number of encrypted versions it opened."""
    out = cli(srv, "heal", "-q", "--json", "--verify-encryption")
    report = json.loads(out.stdout)
    assert out.returncode == 0, report
    assert not report["lost"] and report["sse_failed"] == 0, report
    return int(report["sse_checked"])


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, restarted by it after each kill; at the end (stopped), no
    catalog row may lack its blob file."""
    server = ServerProcess(tmp_path / "data", extra_args=SERVER_ARGS)
    server.start()
    yield server
    server.stop()
    assert rows_without_blob_files(server.data_dir) == []


def test_sigkill_during_encrypted_multipart_uploads(srv: ServerProcess) -> None:
    """For an SSE-KMS and an SSE-S3 upload: a kill in the middle of a part's body (the part is
    absent after the restart, the parts before it intact), then a kill during the completion
    (the object is absent with the upload still there, or whole); then the upload completes —
    a retried Complete answers as the first did — and reads back byte-exact. A third upload,
    killed mid-part, is aborted."""
    rng = seeded("sse multipart crash")
    s3 = make_client(srv.endpoint)
    s3.create_bucket(Bucket=BUCKET)
    bodies = {kind: [rng.randbytes(PART_BYTES), rng.randbytes(PART_BYTES + 12_345)] for kind in ("kms", "s3")}
    uploads: dict[str, str] = {}
    for kind, args in (("kms", KMS), ("s3", S3), ("abort", KMS)):
        uploads[kind] = s3.create_multipart_upload(Bucket=BUCKET, Key=f"mp-{kind}", **args)["UploadId"]
    etags: dict[str, list[str]] = {}
    for kind in ("kms", "s3"):
        etags[kind] = [s3.upload_part(Bucket=BUCKET, Key=f"mp-{kind}", UploadId=uploads[kind], PartNumber=1,
                                      Body=bodies[kind][0])["ETag"]]  # fmt: skip

    # 1. Killed in the middle of part 2's body (of every upload at once).
    size = PART_BYTES + 12_345
    conns = [start_slow_put(srv, BUCKET, f"mp-{kind}", size, [("partNumber", "2"), ("uploadId", uploads[kind])])
             for kind in ("kms", "s3", "abort")]  # fmt: skip
    for conn in conns:
        conn.send(rng.randbytes(size // 2))
    assert kill_at(srv, "writing"), "no part was being written when the server was killed"
    for conn in conns:
        conn.close()
    srv.start()
    for kind in ("kms", "s3"):
        assert part_numbers(s3, BUCKET, f"mp-{kind}", uploads[kind]) == [1], kind
    assert part_numbers(s3, BUCKET, "mp-abort", uploads["abort"]) == []
    s3.abort_multipart_upload(Bucket=BUCKET, Key="mp-abort", UploadId=uploads["abort"])
    listed = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    assert uploads["abort"] not in listed and reads(s3, BUCKET, "mp-abort") is None

    # 2. Killed during the completion, at a seeded moment after it was sent.
    for kind in ("kms", "s3"):
        key, upload_id = f"mp-{kind}", uploads[kind]
        etags[kind].append(s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=2,
                                          Body=bodies[kind][1])["ETag"])  # fmt: skip
        parts = {"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags[kind], 1)]}
        client = make_client(srv.endpoint)
        flight = InFlight(lambda key=key, upload_id=upload_id, parts=parts, client=client: (
            client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload=parts)
        ))  # fmt: skip
        flight.start()
        time.sleep(rng.uniform(0.0, 0.05))
        srv.stop(signal.SIGKILL)
        acked = flight.done()
        srv.start()
        whole = digest(b"".join(bodies[kind]))
        seen = reads(s3, BUCKET, key)
        assert seen in ({whole} if acked else {None, whole}), (kind, acked, seen)
        if seen is None:
            assert part_numbers(s3, BUCKET, key, upload_id) == [1, 2], kind
        again = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload=parts)
        if acked:
            assert again["ETag"] == flight.result["ETag"], kind  # remembered: the same answer
        assert reads(s3, BUCKET, key) == whole, kind
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == (KMS if kind == "kms" else S3)["ServerSideEncryption"]
    assert verify_encryption_clean(srv) >= 2


def test_sigkill_during_copies_into_encrypted_destinations(srv: ServerProcess) -> None:
    """CopyObject and UploadPartCopy into SSE-S3 and SSE-KMS destinations, from SSE-C (with its
    key), plain and SSE-S3 sources, each killed while its new blob is being written and right
    after it was published. A CopyObject's destination already holds an older object: after the
    restart it reads as the old one or the copy, whole; an UploadPartCopy's part is absent or
    whole, and its upload completes byte-exact."""
    rng = seeded("sse copy crash")
    s3 = make_client(srv.endpoint)
    s3.create_bucket(Bucket=BUCKET)
    sources = {"c": rng.randbytes(SOURCE_BYTES), "plain": rng.randbytes(SOURCE_BYTES),
               "s3": rng.randbytes(SOURCE_BYTES)}  # fmt: skip
    source_args = {"c": WRITES["c"], "plain": {}, "s3": S3}
    for kind, body in sources.items():
        s3.put_object(Bucket=BUCKET, Key=f"src-{kind}", Body=body, **source_args[kind])
    copies = [("c", S3), ("plain", KMS), ("s3", KMS)]  # (source kind, destination's encryption)
    hits = 0
    for point in ("writing", "written"):
        for src, dest in copies:
            key = f"copy-{src}-{dest['ServerSideEncryption']}-{point}"
            old = rng.randbytes(70_000)
            s3.put_object(Bucket=BUCKET, Key=key, Body=old, **dest)
            client = make_client(srv.endpoint)
            extra = COPY_SSE_C if src == "c" else {}
            flight = InFlight(lambda key=key, src=src, dest=dest, extra=extra, client=client: client.copy_object(
                Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": f"src-{src}"}, **dest, **extra
            ))  # fmt: skip
            flight.start()
            hits += kill_at(srv, point, flight, SOURCE_BYTES)
            acked = flight.done()
            srv.start()
            new = digest(sources[src])
            seen = reads(s3, BUCKET, key)
            assert seen in ({new} if acked else {digest(old), new}), (key, acked)

        # UploadPartCopy: part 1 of an encrypted upload copied from each source, killed.
        for src, dest in copies:
            key = f"mpc-{src}-{dest['ServerSideEncryption']}-{point}"
            upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **dest)["UploadId"]
            client = make_client(srv.endpoint)
            extra = COPY_SSE_C if src == "c" else {}
            flight = InFlight(lambda key=key, upload_id=upload_id, src=src, extra=extra, client=client: (
                client.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1,
                                        CopySource={"Bucket": BUCKET, "Key": f"src-{src}"}, **extra)
            ))  # fmt: skip
            flight.start()
            hits += kill_at(srv, point, flight, SOURCE_BYTES)
            acked = flight.done()
            srv.start()
            listed = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id).get("Parts", [])
            assert [p["PartNumber"] for p in listed] in ([[1]] if acked else [[], [1]]), (key, acked)
            if listed:
                assert listed[0]["Size"] == SOURCE_BYTES, key  # whole, or not there
                etag = listed[0]["ETag"]
            else:
                etag = s3.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1,
                                           CopySource={"Bucket": BUCKET, "Key": f"src-{src}"},
                                           **extra)["CopyPartResult"]["ETag"]  # fmt: skip
            s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id,
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})  # fmt: skip
            assert reads(s3, BUCKET, key) == digest(sources[src]), key
    print(f"copies killed at their chosen point: {hits} of {4 * len(copies)}")
    assert hits > 0, "every copy ended before the kill: nothing was tested"
    assert reads(s3, BUCKET, "src-c", **SSE_C_READ) == digest(sources["c"])
    assert verify_encryption_clean(srv) >= 4 * len(copies)
