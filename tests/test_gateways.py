"""Two gateways over one PostgreSQL catalog and one object store (issue 18, docs/scale-out.md
"Test plan", proofs 1-3): conditional writes, multipart uploads, versioning, object lock,
datasets and checkpoints keep their guarantees when requests are spread over both; the store
down answers 503 with Retry-After while cached blobs still read; the settings a gateway refuses.

``two_gateways`` (tests/conftest.py) is started once per session; each test uses buckets of its own."""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.tier_support import add_tier
from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, Gateways, ServerProcess, make_client, serve_once
from tests.ports import free_port
from tests.postgres import PostgreSQL
from tierstore.checkpoints import Commit, CommitFile, checkpoint_name, crc64nvme, pull_model, register_model
from tierstore.checkpoints._objects import crc_b64
from tierstore.client import TierstoreClient, resolve_settings
from tierstore.datasets import RemoteSource
from tierstore.server import CACHE_DIR

MIB = 1024 * 1024
BLOB_BYTES = 20_000  # above the inline limit (16 KiB): these bodies are blobs in the store
START_TIMEOUT_S = 300  # a server that must refuse to start: it imports, connects, spawns its store check


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


def test_multipart_split_across_gateways(clients: tuple[Any, Any], bucket: str, rng: random.Random) -> None:
    """Proof 2: created on A, parts alternating A and B, completed on B, read byte-exact on A
    (whole and a range spanning a part boundary); an upload created on A is aborted on B, and A
    then knows it no more."""
    a, b = clients
    parts = [rng.randbytes(5 * MIB), rng.randbytes(5 * MIB), rng.randbytes(123_457)]
    upload = a.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    done = []
    for n, data in enumerate(parts, start=1):
        etag = clients[n % 2].upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=data)["ETag"]
        done.append({"PartNumber": n, "ETag": etag})
    listed = a.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 2, 3]  # parts through B are A's parts too
    b.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": done})
    whole = b"".join(parts)
    assert a.get_object(Bucket=bucket, Key="mp")["Body"].read() == whole
    span = f"bytes={5 * MIB - 10}-{5 * MIB + 9}"
    assert a.get_object(Bucket=bucket, Key="mp", Range=span)["Body"].read() == whole[5 * MIB - 10 : 5 * MIB + 10]

    upload = a.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    a.upload_part(Bucket=bucket, Key="gone", UploadId=upload, PartNumber=1, Body=b"p" * BLOB_BYTES)
    b.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=upload)
    with pytest.raises(ClientError) as err:
        a.list_parts(Bucket=bucket, Key="gone", UploadId=upload)
    assert (err.value.response["Error"]["Code"], _status(err.value)) == ("NoSuchUpload", 404)
    assert not a.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_versions_from_both_gateways_in_order(clients: tuple[Any, Any], bucket: str) -> None:
    """Versions written alternately through A and B list newest first, the same on both; each
    version reads back through the gateway that did not write it."""
    clients[0].put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    written = []
    for i in range(6):
        body = bytes([65 + i]) * (BLOB_BYTES if i % 2 else 100)  # blobs and inline bodies
        written.append((clients[i % 2].put_object(Bucket=bucket, Key="v", Body=body)["VersionId"], body))
    for s3 in clients:
        listed = s3.list_object_versions(Bucket=bucket, Prefix="v")["Versions"]
        assert [v["VersionId"] for v in listed] == [vid for vid, _ in reversed(written)]
        assert [v["IsLatest"] for v in listed] == [True] + [False] * 5
    for i, (vid, body) in enumerate(written):
        assert clients[(i + 1) % 2].get_object(Bucket=bucket, Key="v", VersionId=vid)["Body"].read() == body


def test_a_blob_lives_in_the_store_until_deleted_through_either_gateway(
    two_gateways: Gateways, clients: tuple[Any, Any], bucket: str, rng: random.Random
) -> None:
    """A PUT through A is acknowledged with its body already an object in the store (under the
    prefix, named by blob id); a DELETE through B sends that object away (the trash is drained
    to the store)."""
    store = two_gateways.weed.client()

    def stored() -> set[str]:
        pages = store.get_paginator("list_objects_v2").paginate(Bucket=two_gateways.store_bucket, Prefix="blobs/")
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    before = stored()
    body = rng.randbytes(BLOB_BYTES)
    clients[0].put_object(Bucket=bucket, Key="doomed", Body=body)
    (blob_key,) = stored() - before
    assert store.get_object(Bucket=two_gateways.store_bucket, Key=blob_key)["Body"].read() == body
    clients[1].delete_object(Bucket=bucket, Key="doomed")
    _until(lambda: blob_key not in stored(), "the blob deleted from the store", two_gateways.b, timeout_s=180)


def test_retention_set_on_a_refuses_delete_on_b(clients: tuple[Any, Any]) -> None:
    """Object lock: a version retained (GOVERNANCE) through A cannot be deleted through B without
    the bypass; its bytes stay readable through both."""
    a, b = clients
    bucket = f"gw-lock-{uuid.uuid4().hex[:8]}"  # versions under a lock stay: a bucket of its own
    a.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    until = datetime.now(UTC) + timedelta(days=1)
    vid = a.put_object(
        Bucket=bucket, Key="held", Body=b"h" * BLOB_BYTES, ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until
    )["VersionId"]
    with pytest.raises(ClientError) as err:
        b.delete_object(Bucket=bucket, Key="held", VersionId=vid)
    assert (err.value.response["Error"]["Code"], _status(err.value)) == ("AccessDenied", 403)
    assert b.get_object_retention(Bucket=bucket, Key="held", VersionId=vid)["Retention"]["Mode"] == "GOVERNANCE"
    for s3 in clients:
        assert s3.get_object(Bucket=bucket, Key="held", VersionId=vid)["Body"].read() == b"h" * BLOB_BYTES


def test_encrypted_on_a_read_on_b(clients: tuple[Any, Any], bucket: str, rng: random.Random) -> None:
    """SSE-S3 and SSE-KMS (the built-in key service's ``testkey-1``, sealed under the master key
    both gateways share): written through A, read through B."""
    a, b = clients
    body = rng.randbytes(BLOB_BYTES)
    a.put_object(Bucket=bucket, Key="s3", Body=body, ServerSideEncryption="AES256")
    a.put_object(Bucket=bucket, Key="kms", Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId="testkey-1")
    for key in ("s3", "kms"):
        got = b.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body and got["ServerSideEncryption"] in ("AES256", "aws:kms")


def test_a_version_moved_to_a_remote_tier_through_a_reads_through_b(
    two_gateways: Gateways, clients: tuple[Any, Any], bucket: str, rng: random.Random
) -> None:
    """Remote tiers on ``--store``: a tier added through A (another SeaweedFS bucket), a version
    moved there from the standard tier (the store) through A; B serves it in the tier's class."""
    admin = _tierstore_client(two_gateways.a.endpoint)
    add_tier(admin, two_gateways.weed, "GWCOLD", "gw-cold", "t")
    body = rng.randbytes(BLOB_BYTES)
    clients[0].put_object(Bucket=bucket, Key="cold", Body=body)
    assert admin.tier_transition("GWCOLD", bucket, "cold")["moved"]
    got = clients[1].get_object(Bucket=bucket, Key="cold")
    assert got["Body"].read() == body and got["StorageClass"] == "GWCOLD"


def test_dataset_made_on_a_reads_shuffled_through_both(
    two_gateways: Gateways, clients: tuple[Any, Any], bucket: str, rng: random.Random
) -> None:
    """Proof 3: a dataset created on A from a prefix (inline and blob bodies, one in several
    pieces) reads, shuffled, through A and through B with the batch reads of ``RemoteSource``:
    every sample's bytes checked."""
    sizes = [0, 700, 16 * 1024 + 1, 90_000, 3 * MIB + 5] * 2
    bodies = {}
    for i, size in enumerate(sizes):
        key = f"train/{i:03d}.bin"
        bodies[key] = rng.randbytes(size)
        clients[i % 2].put_object(Bucket=bucket, Key=key, Body=bodies[key])
    made = _tierstore_client(two_gateways.a.endpoint).create_dataset("gw-ds", bucket=bucket, prefix="train/")
    assert made["rows"] == len(sizes)
    for srv in two_gateways.both:
        source = RemoteSource(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        manifest = source.open_manifest(made["ref"])
        keys = manifest.column("key")
        assert keys == sorted(bodies)
        order = list(range(len(keys))) * 2
        rng.shuffle(order)
        got = list(source.read_rows(manifest.ref, order))
        assert [pos for pos, _ in got] == list(range(len(order)))
        for (_, data), row in zip(got, order, strict=True):
            assert data == bodies[keys[row]], keys[row]


def test_checkpoint_committed_on_a_pulled_through_b(
    two_gateways: Gateways, clients: tuple[Any, Any], bucket: str, rng: random.Random, tmp_path: Path
) -> None:
    """A checkpoint's files and commit object written through A; registered as a model and
    pulled (every file's size and CRC64NVME checked against the commit) through B."""
    files = {"000000.bin": rng.randbytes(2 * MIB + 3), "meta.json": b'{"layers": 3}'}
    name = checkpoint_name(7, "run1")
    entries = []
    for path, data in files.items():
        key = f"ck/data/{name}/{path}"
        clients[0].put_object(Bucket=bucket, Key=key, Body=data)
        entries.append(CommitFile(path, key, None, len(data), crc_b64(crc64nvme(data))))
    commit = Commit(step=7, run="run1", kind="state_dict", created_ns=time.time_ns(), files=entries,
                    metrics={}, tags={}, datasets=[], body={"tensors": {}})  # fmt: skip
    clients[0].put_object(Bucket=bucket, Key=f"ck/commits/{name}.json", Body=commit.to_json())
    model = f"gw-model-{uuid.uuid4().hex[:8]}"
    on_b = _tierstore_client(two_gateways.b.endpoint)
    assert register_model(on_b, model, f"s3://{bucket}/ck")["checkpoint"]["step"] == 7
    pulled = pull_model(on_b, model, tmp_path / "pulled", progress=False)
    assert {p: (pulled / p).read_bytes() for p in files} == files


def _tierstore_client(endpoint: str) -> TierstoreClient:
    return TierstoreClient(resolve_settings(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))


class _Forwarder:
    """A TCP forwarder on 127.0.0.1 to ``upstream_port``: the store as one gateway reaches it.
    ``stop()`` closes the port and every connection (the store is down for that gateway);
    ``start()`` opens the same port again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._socks = [listener]
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return
            with self._lock:
                self._socks += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _third_gateway(gw: Gateways, data_dir: Path, config: str) -> ServerProcess:
    """A gateway with settings ``config`` (TOML) and the deployment's master key in ``data_dir``."""
    data_dir.mkdir()
    shutil.copy2(gw.a.data_dir / "master.key", data_dir / "master.key")
    config_file = data_dir.parent / f"{data_dir.name}.toml"
    config_file.write_text(config)
    return ServerProcess(data_dir, extra_args=["--config", str(config_file)])


def _unavailable(call: Any) -> None:
    with pytest.raises(ClientError) as err:
        call()
    assert (err.value.response["Error"]["Code"], _status(err.value)) == ("ServiceUnavailable", 503)
    assert int(err.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) > 0


def test_store_down_cached_blobs_read_the_rest_503(
    two_gateways: Gateways, clients: tuple[Any, Any], bucket: str, rng: random.Random, tmp_path: Path
) -> None:
    """A gateway C that reaches the store through a forwarder; the forwarder stops (the store is
    down for C): a blob C has cached still reads; an uncached one and a new blob PUT answer 503
    ServiceUnavailable with Retry-After (never wrong bytes, never a hang); listings still answer
    (the catalog's), and so do inline bodies (≤ 16 KiB, in the catalog): one written before
    reads, a new one is written (and read through B). The store back: C reads the uncached blob
    and writes blobs again, without a restart."""
    weed = two_gateways.weed
    forwarder = _Forwarder(int(weed.endpoint.rsplit(":", 1)[1]))
    forwarder.start()
    config = two_gateways.config_file.read_text().replace(weed.endpoint, f"http://127.0.0.1:{forwarder.port}")
    c = _third_gateway(two_gateways, tmp_path / "c", config)
    c.start(timeout_s=120)
    try:
        s3c = make_client(c.endpoint)
        cached, uncached = rng.randbytes(BLOB_BYTES), rng.randbytes(BLOB_BYTES)
        s3c.put_object(Bucket=bucket, Key="cached", Body=cached)
        assert s3c.get_object(Bucket=bucket, Key="cached")["Body"].read() == cached  # fills C's cache
        _until(lambda: any((c.data_dir / CACHE_DIR / "blobs").rglob("*")), "C's cache filled", c)
        clients[0].put_object(Bucket=bucket, Key="uncached", Body=uncached)
        clients[0].put_object(Bucket=bucket, Key="inline", Body=b"i" * 300)
        forwarder.stop()
        assert s3c.get_object(Bucket=bucket, Key="cached")["Body"].read() == cached
        _unavailable(functools.partial(s3c.get_object, Bucket=bucket, Key="uncached"))
        _unavailable(functools.partial(s3c.put_object, Bucket=bucket, Key="new", Body=b"n" * BLOB_BYTES))
        assert s3c.head_object(Bucket=bucket, Key="uncached")["ContentLength"] == BLOB_BYTES
        assert s3c.get_object(Bucket=bucket, Key="inline")["Body"].read() == b"i" * 300
        s3c.put_object(Bucket=bucket, Key="inline-new", Body=b"j" * 300)
        assert clients[1].get_object(Bucket=bucket, Key="inline-new")["Body"].read() == b"j" * 300
        listed = sorted(o["Key"] for o in s3c.list_objects_v2(Bucket=bucket)["Contents"])
        assert listed == ["cached", "inline", "inline-new", "uncached"]
        forwarder.start()
        assert s3c.get_object(Bucket=bucket, Key="uncached")["Body"].read() == uncached
        s3c.put_object(Bucket=bucket, Key="new", Body=b"n" * BLOB_BYTES)
        assert clients[1].get_object(Bucket=bucket, Key="new")["Body"].read() == b"n" * BLOB_BYTES
    finally:
        forwarder.stop()
        c.stop()
    assert "Traceback" not in c.log()


@pytest.mark.parametrize("store", ["s3://another-bucket/blobs", None])
def test_a_gateway_with_another_store_is_refused(two_gateways: Gateways, tmp_path: Path, store: str | None) -> None:
    """The catalog recorded where its blobs live at its first start: a gateway started with
    another store (or none: local drives) against it stops with one line, before serving."""
    lines = two_gateways.config_file.read_text().splitlines()
    config = [line for line in lines if not line.startswith("store = ")]
    if store is not None:
        with contextlib.suppress(ClientError):  # a bucket that exists: the store's check passes
            two_gateways.weed.client().create_bucket(Bucket=store.split("/")[2])
        config.append(f'store = "{store}?endpoint={two_gateways.weed.endpoint}"')
    config_file = _write(tmp_path / "d.toml", "\n".join(config) + "\n")
    proc = serve_once(tmp_path / "d", "--config", config_file, timeout_s=START_TIMEOUT_S)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    theirs = f"s3://{two_gateways.store_bucket}/blobs"
    this = f"--store {store}" if store else "no --store"
    assert last.endswith(f"keeps its blobs in the store {theirs}; this gateway has {this}"), proc.stderr
    assert two_gateways.weed.secret_key not in proc.stdout + proc.stderr


def test_store_unreachable_or_missing_at_start_is_one_line(
    two_gateways: Gateways, postgres: PostgreSQL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start the store is checked before the catalog records it: unreachable, it is retried
    (a log line each time) until ``--catalog-start-timeout``, then one line; a bucket that does
    not exist, or no credentials anywhere, is one line at once. No line shows the secret key."""
    weed = two_gateways.weed
    keys = ["--store-access-key", weed.access_key, "--store-secret-key", weed.secret_key]
    closed = free_port()
    proc = serve_once(
        tmp_path / "down", "--catalog", postgres.create_database("store_down"), "--catalog-start-timeout", "2",
        "--store", f"s3://b/p?endpoint=http://127.0.0.1:{closed}", *keys, timeout_s=START_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "is unreachable; retrying" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tierstore serve: the store http://127.0.0.1:{closed} bucket b is unreachable: gave up after 2s"
    )
    proc = serve_once(
        tmp_path / "missing", "--catalog", postgres.create_database("store_missing"),
        "--store", f"s3://no-such-bucket/p?endpoint={weed.endpoint}", *keys, timeout_s=START_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tierstore serve: cannot use the store:") and last.endswith("NoSuchBucket"), proc.stderr
    assert "retrying" not in proc.stderr
    assert weed.secret_key not in proc.stdout + proc.stderr

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)  # no keys, and none in the AWS credential chain
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    proc = serve_once(
        tmp_path / "nokeys", "--catalog", postgres.create_database("store_nokeys"),
        "--store", f"s3://{two_gateways.store_bucket}/p?endpoint={weed.endpoint}", timeout_s=START_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tierstore serve: cannot use the store: no credentials")
    assert "retrying" not in proc.stderr


def test_the_store_secret_is_never_shown(two_gateways: Gateways) -> None:
    """``--print-config`` masks the store's secret key; neither gateway's log holds it."""
    proc = subprocess.run(
        [sys.executable, "-m", "tierstore", "serve", "--config", str(two_gateways.config_file), "--print-config"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "store-secret-key = '********'" in proc.stdout
    assert f"store-access-key = '{two_gateways.weed.access_key}'" in proc.stdout
    for text in (proc.stdout, proc.stderr, two_gateways.a.log(), two_gateways.b.log()):
        assert two_gateways.weed.secret_key not in text


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _until(check: Any, what: str, srv: ServerProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s}s\n{srv.log()[-4000:]}")
