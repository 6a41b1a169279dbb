"""Failures of a deployment of two gateways (issue 18 "Failures" and "Proof", docs/scale-out.md
"Failure behaviour"): PostgreSQL restarted during writes through both gateways; kill -9 of a
gateway during writes (PUTs, multipart parts, dataset commits), its restart and the leased GC of
the orphan blobs it left in the store. The store down for one gateway is in tests/test_gateways.py,
leases taken over from a killed gateway in tests/test_leases_e2e.py.

The gateways here run on a PostgreSQL cluster of this module's own (the restart must never touch
the session's) and a SeaweedFS bucket of their own, with a short lease and a short pool timeout.
No timed assertions: every wait is "until the condition, within a generous deadline"."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    ACCESS_KEY,
    SECRET_KEY,
    Gateways,
    ServerProcess,
    admin_info,
    make_client,
    start_gateways,
    stop_gateways,
)
from tests.postgres import PostgreSQL
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, resolve_settings
from tierstore.datasets import RemoteSource

LEASE_S = 2  # --lease-seconds: a dead gateway's registration (and leases) age out soon
CATALOG_TIMEOUT_S = 3  # --catalog-timeout: a pool checkout waits this long, then 503
GC_GRACE_S = 2  # --gc-grace of the restarted gateway (the test knob; 1 day by default)
DATABASE = "failures"
BLOB_BYTES = 20_000  # above the inline limit (16 KiB): a blob in the store
INLINE_BYTES = 300  # an inline body: in the catalog
MIB = 1024 * 1024


@dataclass
class Cluster:
    pg: PostgreSQL  # this module's own: restarted by a test
    gw: Gateways


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFS) -> Iterator[Cluster]:
    pg = PostgreSQL()
    pg.start()
    try:
        extra = ("--lease-seconds", str(LEASE_S), "--catalog-timeout", str(CATALOG_TIMEOUT_S))
        gw = start_gateways(tmp_path_factory.mktemp("failures"), pg.create_database(DATABASE), seaweedfs,
                            "tierstore-failures", extra_args=extra)  # fmt: skip
        try:
            yield Cluster(pg, gw)
        finally:
            stop_gateways(gw)
    finally:
        pg.cleanup()


def _client(srv: ServerProcess) -> Any:
    # A hang (past the pool timeout) would show as a read timeout, which no test accepts.
    return make_client(srv.endpoint, connect_timeout=10, read_timeout=120)


def _until(check: Callable[[], bool], what: str, *servers: ServerProcess, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    logs = "\n".join(srv.log()[-3000:] for srv in servers)
    raise AssertionError(f"{what}: not within {timeout_s}s\n{logs}")


@dataclass
class Writes:
    """What writer threads tried and what was acknowledged (200), per writer; every failure."""

    tried: dict[str, bytes] = field(default_factory=dict)
    acked: dict[str, bytes] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)  # acknowledged, per writer
    # writer, error, whether ``mark`` was set when the request started, and when it failed
    errors: list[tuple[str, BaseException, bool, bool]] = field(default_factory=list)
    mark: threading.Event = field(default_factory=threading.Event)  # set by the test: the failure began / ended
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def run(self, name: str, step: Callable[[int], None]) -> None:
        """A thread calling ``step(i)`` for i = 0, 1, ... until ``stop``; a failure is recorded
        (with whether ``mark`` was set when the request started and when it failed) and the next
        step follows."""

        def loop() -> None:
            i = 0
            while not self.stop.is_set():
                marked = self.mark.is_set()
                try:
                    step(i)
                except Exception as exc:  # recorded: the test asserts on each
                    self.errors.append((name, exc, marked, self.mark.is_set()))
                    time.sleep(0.05)  # a dead gateway refuses at once: do not spin
                else:
                    self.count[name] = self.count.get(name, 0) + 1
                i += 1

        self.count[name] = 0
        thread = threading.Thread(target=loop, daemon=True, name=name)
        self.threads.append(thread)
        thread.start()

    def put(self, name: str, s3: Any, bucket: str, seed: int) -> Callable[[int], None]:
        """A step: PUT a fresh key (a blob and an inline body in turn) of random bytes."""
        rand = random.Random(seed)

        def step(i: int) -> None:
            key = f"{name}/{i:05d}"
            body = rand.randbytes(BLOB_BYTES if i % 2 == 0 else INLINE_BYTES)
            self.tried[key] = body
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            self.acked[key] = body

        return step

    def wait(self, counts: dict[str, int], what: str, *servers: ServerProcess) -> None:
        _until(lambda: all(self.count[n] >= c for n, c in counts.items()), what, *servers)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=300)
            assert not thread.is_alive(), f"{thread.name} hangs"


def _status(exc: BaseException) -> tuple[str, int, int]:
    """(code, status, Retry-After) of an S3 error answer."""
    assert isinstance(exc, ClientError), repr(exc)
    headers = exc.response["ResponseMetadata"]["HTTPHeaders"]
    return (
        exc.response["Error"]["Code"],
        exc.response["ResponseMetadata"]["HTTPStatusCode"],
        int(headers.get("retry-after", 0)),
    )


def _read_back(s3: Any, bucket: str, writes: Writes, prefix: str = "") -> None:
    """Every acknowledged write reads back byte-exact; a write tried but not acknowledged is
    there whole or not at all (never half-visible); the listing holds exactly one of each."""
    for key, body in writes.tried.items():
        if not key.startswith(prefix):
            continue
        try:
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            assert key not in writes.acked, f"acknowledged {key}: {exc}"
            assert _status(exc)[:2] == ("NoSuchKey", 404), exc
            continue
        assert got == body, key
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    listed = {o["Key"] for page in pages for o in page.get("Contents", [])}
    assert {k for k in writes.acked if k.startswith(prefix)} <= listed <= set(writes.tried)


def _listeners(pg: PostgreSQL) -> int:
    return int(pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DATABASE}'"
                       " AND application_name = 'tierstore-listen'"))  # fmt: skip


def test_postgres_restarted_during_writes(cluster: Cluster) -> None:
    """PostgreSQL stopped (fast shutdown, as ``pg_ctl restart -m fast``) and started again on
    its port while two writers per gateway PUT and GET: every request during the outage is 503
    SlowDown with Retry-After (never another error, never a hang); every request started after
    PostgreSQL is back succeeds, without restarting a gateway; every acknowledged write reads
    back byte-exact through both; both gateways' LISTEN connections come back."""
    gw, pg = cluster.gw, cluster.pg
    s3 = {"a": _client(gw.a), "b": _client(gw.b)}
    bucket = "restarted"
    s3["a"].create_bucket(Bucket=bucket)
    _until(lambda: _listeners(pg) == 2, "both gateways LISTEN", *gw.both)
    writes = Writes()
    for n, name in enumerate(("a1", "a2", "b1", "b2")):
        writes.run(name, writes.put(name, s3[name[0]], bucket, seed=n))
    try:
        writes.wait(dict.fromkeys(("a1", "a2", "b1", "b2"), 5), "writes before the restart", *gw.both)
        pg.stop()  # SIGINT: a fast shutdown (sessions ended, a checkpoint)
        # Reads during the outage too (of keys written before it), through the other gateway.
        before = dict(writes.acked)
        for name, key in zip(("a", "b"), sorted(before)[:2], strict=True):
            with pytest.raises(ClientError) as err:
                s3[name].get_object(Bucket=bucket, Key=key)
            code, status, retry_after = _status(err.value)
            assert (code, status) == ("SlowDown", 503) and retry_after > 0
        _until(lambda: {e[0][0] for e in writes.errors} == {"a", "b"}, "writes failed on both", *gw.both)
        pg.start()  # the same port and data dir
        writes.mark.set()
        after = {n: c + 5 for n, c in writes.count.items()}
        writes.wait(after, "writes after the restart", *gw.both)
    finally:
        writes.finish()
    assert writes.errors, "no request failed while PostgreSQL was down"
    for name, exc, after_restart, _ in writes.errors:
        code, status, retry_after = _status(exc)
        assert (code, status) == ("SlowDown", 503) and retry_after > 0, (name, exc)
        assert not after_restart, f"{name}: failed after PostgreSQL was back: {exc}"
    for name in ("a", "b"):
        _read_back(s3[name], bucket, writes)
    assert all(srv.proc is not None and srv.proc.poll() is None for srv in gw.both)
    _until(lambda: _listeners(pg) == 2, "both gateways LISTEN again", *gw.both)
    for srv in gw.both:
        assert "Traceback" not in srv.log(), srv.log()[-4000:]


def _store_blobs(gw: Gateways) -> set[str]:
    pages = gw.weed.client().get_paginator("list_objects_v2").paginate(Bucket=gw.store_bucket, Prefix="blobs/")
    return {o["Key"].split("/", 1)[1] for page in pages for o in page.get("Contents", [])}


def _known_blobs(pg: PostgreSQL) -> set[str]:
    """Blob ids the catalog references, holds, or has queued for deletion."""
    out = pg.psql("SELECT blob_id FROM blobs UNION SELECT blob_id FROM trash UNION SELECT blob_id FROM hot_holds",
                  database=DATABASE)  # fmt: skip
    return set(out.split())


def _live_gateways(srv: ServerProcess) -> dict[int, str]:
    """pid -> registry id of the gateways (serving processes) ``admin info`` lists as live."""
    return {int(g["pid"]): str(g["id"]) for g in admin_info(srv.endpoint)["gateways"]}  # type: ignore[union-attr]


def test_kill_a_during_writes(cluster: Cluster, rng: random.Random) -> None:
    """Gateway A killed (kill -9) while writers PUT through A and B, multipart parts go through
    A and dataset versions are committed through A. Through B afterwards: every write A or B
    acknowledged reads back byte-exact, a write not acknowledged is whole or absent; the parts A
    acknowledged are listed and complete the upload through B; every dataset version A
    acknowledged reads. B never failed. A restarted (on its data dir) joins again, and its
    leased GC removes the orphan blobs in the store — the one planted as a write that reached
    the store but never committed, and any the kill left — once they are older than the grace
    period, and no blob the catalog references."""
    gw, pg = cluster.gw, cluster.pg
    a, b = gw.a, gw.b
    s3a, s3b = _client(a), _client(b)
    ext_a = TierstoreClient(resolve_settings(a.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    ext_b = TierstoreClient(resolve_settings(b.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    bucket = "killed"
    s3b.create_bucket(Bucket=bucket)
    sources = {f"src/{i}": rng.randbytes(BLOB_BYTES if i % 2 else INLINE_BYTES) for i in range(4)}
    for key, body in sources.items():
        s3b.put_object(Bucket=bucket, Key=key, Body=body)
    a_workers = set(a._descendants())
    old_a = {gid for pid, gid in _live_gateways(b).items() if pid in a_workers}
    assert len(old_a) == 1, old_a

    # An upload through A: a first part of 5 MiB before the writes, then small parts in a loop.
    upload = s3a.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    first = rng.randbytes(5 * MIB)
    parts: dict[int, tuple[bytes, str]] = {1: (first, s3a.upload_part(
        Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=first)["ETag"])}  # fmt: skip
    tried_parts: set[int] = {1}
    part_rand = random.Random(rng.random())

    def part(i: int) -> None:
        number, body = i + 2, part_rand.randbytes(BLOB_BYTES)
        tried_parts.add(number)
        etag = s3a.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=body)["ETag"]
        parts[number] = (body, etag)

    datasets: list[str] = []

    def dataset(i: int) -> None:
        datasets.append(ext_a.create_dataset("killed-ds", bucket=bucket, prefix="src/")["ref"])

    writes = Writes()
    writes.run("a", writes.put("a", s3a, bucket, seed=rng.randrange(2**32)))
    writes.run("b", writes.put("b", s3b, bucket, seed=rng.randrange(2**32)))
    writes.run("parts", part)
    writes.run("datasets", dataset)
    try:
        writes.wait({"a": 10, "b": 10, "parts": 3, "datasets": 2}, "writes before the kill", a, b)
        writes.mark.set()
        a.stop(signal.SIGKILL)  # the main process, then its session (the worker)
        killed = dict(writes.count)
        _until(lambda: all(n in {e[0] for e in writes.errors} for n in ("a", "parts", "datasets")),
               "A's writers saw it die", b)  # fmt: skip
        writes.wait({"b": killed["b"] + 10}, "writes through B after the kill", b)
    finally:
        writes.finish()
    assert not [e for e in writes.errors if e[0] == "b"], "B failed"
    assert all(failed_after for *_, failed_after in writes.errors), [e for e in writes.errors if not e[3]]

    _read_back(s3b, bucket, writes, prefix="a/")
    _read_back(s3b, bucket, writes, prefix="b/")
    listed = {p["PartNumber"]: p["ETag"] for p in s3b.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]}
    assert {n: etag for n, (_, etag) in parts.items()}.items() <= listed.items() and set(listed) <= tried_parts
    last = max(parts)
    done = [{"PartNumber": n, "ETag": parts[n][1]} for n in (1, last)]
    s3b.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": done})
    assert s3b.get_object(Bucket=bucket, Key="mp")["Body"].read() == first + parts[last][0]
    made = {d["ref"] for d in ext_b.list_datasets("killed-ds")}
    assert set(datasets) <= made and len(made) <= len(datasets) + 1  # at most the one in flight
    source = RemoteSource(b.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    for ref in sorted(made):
        manifest = source.open_manifest(ref)
        assert manifest.column("key") == sorted(sources)
        got = dict(source.read_rows(manifest.ref, range(len(sources))))
        assert [got[i] for i in range(len(sources))] == [sources[k] for k in sorted(sources)]

    # The orphans: blobs in the store the catalog does not know. One planted (a write that
    # reached the store and died before its commit, an hour ago), and whatever the kill left.
    planted = f"{int(time.time()) - 3600:08x}{os.urandom(12).hex()}"
    gw.weed.client().put_object(Bucket=gw.store_bucket, Key=f"blobs/{planted}", Body=b"never committed")
    orphans = _store_blobs(gw) - _known_blobs(pg)
    assert planted in orphans
    print(f"orphans in the store: {len(orphans)} (the planted one and {len(orphans) - 1} from the kill)")
    newest_s = max(int(o[:8], 16) for o in orphans)
    while time.time() < newest_s + GC_GRACE_S + 1:  # every orphan past the grace period
        time.sleep(0.1)
    a.extra_args = [*a.extra_args, "--gc-grace", str(GC_GRACE_S)]
    a.start(timeout_s=120)
    _until(lambda: not orphans & _store_blobs(gw), "A's GC removed the orphans", a)
    referenced = set(pg.psql("SELECT blob_id FROM blobs", database=DATABASE).split())
    assert referenced <= _store_blobs(gw)

    # A is back: it serves what was written and writes again; the registry lists it, not its past.
    s3a = _client(a)
    for key in sorted(writes.acked)[:4]:
        assert s3a.get_object(Bucket=bucket, Key=key)["Body"].read() == writes.acked[key]
    body = rng.randbytes(BLOB_BYTES)
    s3a.put_object(Bucket=bucket, Key="after", Body=body)
    assert s3b.get_object(Bucket=bucket, Key="after")["Body"].read() == body
    _until(lambda: len(live := set(_live_gateways(b).values())) == 2 and not live & old_a,
           "A registered again and its dead registration aged out", a, b)  # fmt: skip
    for srv in gw.both:
        assert "Traceback" not in srv.log(), srv.log()[-4000:]
