"""Memory stays bounded (issue 5): a PUT and a GET of a 5 GiB object each grow the RSS of the
server's process tree by less than 64 MiB.

The body is generated while it is sent and checked while it is received, block by block, so
the test process never holds more than a block either. RSS is summed over the ``tierstore
serve`` process and every worker it forks, sampled every 50 ms from a thread during each
transfer, against a baseline taken right before it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.conftest import ServerProcess, make_client
from tests.s3http import EMPTY_SHA256, UNSIGNED, sign_v4

OBJECT_BYTES = 5 << 30
BLOCK_BYTES = 1 << 20
RSS_BOUND_BYTES = 64 << 20
_BASE = random.Random(5).randbytes(BLOCK_BYTES)  # not periodic: a shifted byte shows


def block(i: int) -> bytes:
    """Block ``i`` of the object: its index, then a fixed random MiB (cheap to make and compare)."""
    return i.to_bytes(8, "little") + _BASE[8:]


def rss_bytes(pids: Iterable[int]) -> int:
    """VmRSS summed over ``pids`` (a process that has gone counts 0)."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def server_pids(srv: ServerProcess) -> list[int]:
    return [srv.pid, *srv._descendants()]  # granian's workers


class RssPeak:
    """``with RssPeak(lambda: pids) as m: ...`` then ``m.growth_bytes``: the peak of the VmRSS
    summed over the processes ``pids()`` names at each sample, taken every ``interval_s`` while
    the block runs, minus its value on entry."""

    def __init__(self, pids: Callable[[], list[int]], interval_s: float = 0.05) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.baseline_bytes = self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, rss_bytes(self.pids()))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> RssPeak:
        self.baseline_bytes = self.peak_bytes = rss_bytes(self.pids())
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def growth_bytes(self) -> int:
        return self.peak_bytes - self.baseline_bytes

    def __str__(self) -> str:
        mib = 1 << 20
        return (f"RSS {self.baseline_bytes / mib:.1f} MiB -> peak {self.peak_bytes / mib:.1f} MiB "
                f"(+{self.growth_bytes / mib:.1f} MiB, {self.samples} samples)")


def test_rss_probe_sees_growth() -> None:
    """The probe itself: a child that touches 256 MiB, 16 MiB at a time, is seen."""
    grow = "import time\nb = []\nfor _ in range(16):\n    b.append(b'x' * (16 << 20)); time.sleep(0.02)\ntime.sleep(60)"
    parent = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {grow!r}])"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 30
        while not children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        with RssPeak(lambda: [proc.pid, *children(proc.pid)]) as m:
            time.sleep(2)
        assert m.growth_bytes > 200 << 20, str(m)
    finally:
        for pid in children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        proc.wait(30)


def _on_tmpfs(path: Path) -> bool:
    """Whether ``path`` lives in memory (then 5 GiB of data would count against the machine's RAM)."""
    best, fstype = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mnt, typ, *_ = line.split()
        if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
            best, fstype = mnt, typ
    return fstype in ("tmpfs", "ramfs")


@pytest.fixture
def big_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, its data on a disk (not tmpfs), wiped at the end: a deleted
    object's blob outlives the DELETE until garbage collection."""
    base = tmp_path
    if _on_tmpfs(base):
        base = Path(tempfile.mkdtemp(prefix="tierstore-memory-", dir="/var/tmp"))
        if _on_tmpfs(base):
            shutil.rmtree(base)
            pytest.skip("no disk-backed temp dir (tmp_path and /var/tmp are tmpfs)")
    if shutil.disk_usage(base).free < OBJECT_BYTES + (2 << 30):
        pytest.skip(f"needs 7 GiB free under {base}")
    srv = ServerProcess(base / "data")
    try:
        srv.start()
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()
        shutil.rmtree(base / "data", ignore_errors=True)
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


def _connect(
    srv: ServerProcess,
    method: str,
    path: str,
    payload_hash: str,
    size: int | None = None,
    extra_headers: dict[str, str] | None = None,
) -> http.client.HTTPConnection:
    """A connection with the signed request line and headers sent; the body, if any, is the caller's."""
    headers = {"content-length": str(size)} if size is not None else {}
    headers.update(extra_headers or {})
    signed = sign_v4(srv.port, method, path, payload_hash=payload_hash, headers=headers)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
    conn.putrequest(method, signed.target, skip_host=True, skip_accept_encoding=True)
    for k, v in signed.headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn


def _put_and_get(srv: ServerProcess, object_bytes: int, headers: dict[str, str]) -> tuple[RssPeak, RssPeak]:
    """PUT ``object_bytes`` (generated while sent, with ``headers`` signed) and GET them back
    (checked as received): the RSS growth of the server's tree during each."""
    s3 = make_client(srv.endpoint)
    bucket, key = f"t-{uuid.uuid4().hex[:16]}", "big/object.bin"
    path = f"/{bucket}/{key}"
    s3.create_bucket(Bucket=bucket)
    blocks = object_bytes // BLOCK_BYTES
    try:
        with RssPeak(lambda: server_pids(srv)) as put:
            conn = _connect(srv, "PUT", path, UNSIGNED, object_bytes, headers)
            for i in range(blocks):
                conn.send(block(i))
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
        assert resp.status == 200, body[:500]
        for name, value in headers.items():
            assert resp.getheader(name) == value, name  # e.g. the encryption the PUT asked for

        with RssPeak(lambda: server_pids(srv)) as get:
            conn = _connect(srv, "GET", path, EMPTY_SHA256)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read(500)
            assert int(resp.getheader("content-length") or -1) == object_bytes
            for i in range(blocks):
                got = resp.read(BLOCK_BYTES)
                if got != block(i):
                    pytest.fail(f"block {i} differs ({len(got)} bytes)")
            assert resp.read(1) == b""
            conn.close()
    finally:
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=bucket, Key=key)
            s3.delete_bucket(Bucket=bucket)
    return put, get


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_put_and_get_5gib_keep_server_rss_bounded(big_server: ServerProcess) -> None:
    put, get = _put_and_get(big_server, OBJECT_BYTES, {})
    print(f"PUT 5 GiB: {put}")
    print(f"GET 5 GiB: {get}")
    assert put.growth_bytes < RSS_BOUND_BYTES, f"PUT: {put}"
    assert get.growth_bytes < RSS_BOUND_BYTES, f"GET: {get}"


def test_encrypted_put_and_get_keep_server_rss_bounded(big_server: ServerProcess) -> None:
    """The same bound for an SSE-S3 object (issue 16), at 512 MiB so that it stays quick; the
    5 GiB run is benchmarks/sse_side_by_side.py's memory phase (docs/benchmarks.md)."""
    put, get = _put_and_get(big_server, 512 << 20, {"x-amz-server-side-encryption": "AES256"})
    print(f"PUT 512 MiB SSE-S3: {put}\nGET 512 MiB SSE-S3: {get}")
    assert put.growth_bytes < RSS_BOUND_BYTES, f"PUT: {put}"
    assert get.growth_bytes < RSS_BOUND_BYTES, f"GET: {get}"
