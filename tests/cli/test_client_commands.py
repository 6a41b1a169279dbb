"""``tierstore ls/cp/rm`` as real subprocesses against a real server; verified through boto3."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess

MIB = 1024 * 1024

# Names that trip naive URL, shell or XML handling; every one must round-trip.
ODD_NAMES = [
    "space name.txt",
    "plus+sign.txt",
    "percent%20literal.txt",
    "percent%.txt",
    "hash#frag.txt",
    "question?mark.txt",
    "amp&semi;.txt",
    "quote'and\"dq.txt",
    "ünïcødé-файл-日本.bin",
    "emoji-🙂.txt",
    "tilde~star*.txt",
    "brackets[1](2){3}.txt",
    "equals=comma,.txt",
    "caret^dollar$at@bang!.txt",
    "back`tick\\slash.txt",
    "<angle>&amp;.xml",
    ".hidden",
]
ODD_DIRS = ["", "dir one/", "nested/a/b/c/", "ünï/子dir/", "x+y/%41/", "q?#/"]


def cli(
    server: ServerProcess, *args: str, cwd: Path | None = None, timeout_s: float = 180, as_script: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -m tierstore ARGS``; ``as_script``: with ``-P``, so that, as under the installed
    ``tierstore`` script, the current directory is not on sys.path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(
        TIERSTORE_ENDPOINT=server.endpoint,
        TIERSTORE_ACCESS_KEY=ACCESS_KEY,
        TIERSTORE_SECRET_KEY=SECRET_KEY,
        PYTHONIOENCODING="utf-8",
    )
    return subprocess.run(
        [sys.executable, *(["-P"] if as_script else []), "-m", "tierstore", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=cwd,
        timeout=timeout_s,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tierstore "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def get_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def all_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def put_many(s3: Any, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# --- ls ---------------------------------------------------------------------------------------------


def test_ls_lists_buckets(server: ServerProcess, bucket: str) -> None:
    assert re.search(rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {bucket}$", ok(cli(server, "ls")), re.MULTILINE)
    records = json_lines(ok(cli(server, "ls", "--json")))
    assert any(r["type"] == "bucket" and r["name"] == bucket and r["created"].endswith("Z") for r in records)


def test_ls_empty_bucket(server: ServerProcess, bucket: str) -> None:
    assert ok(cli(server, "ls", f"s3://{bucket}")) == ""
    assert ok(cli(server, "ls", "-r", f"s3://{bucket}")) == ""
    assert ok(cli(server, "ls", "--json", f"s3://{bucket}/nothing/")) == ""


def test_ls_prefixes_recursive_and_json(server: ServerProcess, s3: Any, bucket: str) -> None:
    for key, body in [("a.txt", b"1"), ("dir/b.txt", b"22"), ("dir/sub/c.txt", b"333"), ("dirx.txt", b"4444")]:
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    lines = ok(cli(server, "ls", f"s3://{bucket}")).splitlines()
    assert lines[0] == f"{'PRE':>30} dir/"
    assert [line.split()[-2:] for line in lines[1:]] == [["1", "a.txt"], ["4", "dirx.txt"]]

    lines = ok(cli(server, "ls", f"s3://{bucket}/dir/")).splitlines()
    assert lines[0].split() == ["PRE", "sub/"]
    assert lines[1].split()[-2:] == ["2", "b.txt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +2 b\.txt", lines[1])

    # A partial name lists what starts with it, names relative to its "directory".
    lines = ok(cli(server, "ls", f"s3://{bucket}/di")).splitlines()
    assert [line.split()[-1] for line in lines] == ["dir/", "dirx.txt"]

    lines = ok(cli(server, "ls", "-r", f"s3://{bucket}")).splitlines()
    assert [line.split()[-1] for line in lines] == ["a.txt", "dir/b.txt", "dir/sub/c.txt", "dirx.txt"]
    lines = ok(cli(server, "ls", "--recursive", f"s3://{bucket}/dir/")).splitlines()
    assert [line.split()[-1] for line in lines] == ["dir/b.txt", "dir/sub/c.txt"]

    records = json_lines(ok(cli(server, "ls", "--json", f"s3://{bucket}")))
    assert records[0] == {"type": "prefix", "prefix": "dir/"}
    assert [(r["type"], r["key"], r["size"]) for r in records[1:]] == [
        ("object", "a.txt", 1),
        ("object", "dirx.txt", 4),
    ]
    assert all(r["etag"] and r["last_modified"].endswith("Z") for r in records[1:])
    records = json_lines(ok(cli(server, "ls", "-r", "--json", f"s3://{bucket}")))
    assert [r["key"] for r in records] == ["a.txt", "dir/b.txt", "dir/sub/c.txt", "dirx.txt"]


def test_ls_odd_keys_round_trip(server: ServerProcess, s3: Any, bucket: str) -> None:
    keys = sorted(d + n for d in ODD_DIRS for n in ODD_NAMES[:6])
    put_many(s3, bucket, keys)
    records = json_lines(ok(cli(server, "ls", "-r", "--json", f"s3://{bucket}")))
    assert [r["key"] for r in records] == keys


def test_ls_paginates_1500_keys(server: ServerProcess, s3: Any, bucket: str) -> None:
    keys = [f"many/{i:05d}" for i in range(1500)]
    put_many(s3, bucket, [*keys, "top"])
    lines = ok(cli(server, "ls", "-r", f"s3://{bucket}/many/")).splitlines()
    assert [line.split()[-1] for line in lines] == keys
    assert len(json_lines(ok(cli(server, "ls", "-r", "--json", f"s3://{bucket}")))) == 1501
    # Without -r the 1500 keys collapse into one prefix, even across listing pages.
    assert [line.split()[-1] for line in ok(cli(server, "ls", f"s3://{bucket}")).splitlines()] == ["many/", "top"]
    assert len(ok(cli(server, "ls", f"s3://{bucket}/many/")).splitlines()) == 1500


def test_ls_missing_bucket(server: ServerProcess) -> None:
    one_line_error(cli(server, "ls", "s3://no-such-bucket-ls"), "NoSuchBucket")


def test_wrong_credentials(server: ServerProcess, bucket: str) -> None:
    one_line_error(cli(server, "ls", "--secret-key", "wrong-secret", f"s3://{bucket}"))


def test_endpoint_flag_wins_over_env(server: ServerProcess, bucket: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens here once closed
    one_line_error(cli(server, "ls", "--endpoint", dead, f"s3://{bucket}"), "connect")


# --- cp ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 20 * MIB], ids=["0B", "1B", "20MiB"])
def test_cp_up_and_down_byte_exact(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    ok(cli(server, "cp", "--quiet", str(src), f"s3://{bucket}/obj/data.bin"))
    assert get_bytes(s3, bucket, "obj/data.bin") == data
    if size > 8 * MIB:
        etag = s3.head_object(Bucket=bucket, Key="obj/data.bin")["ETag"]
        assert re.fullmatch(r'"[0-9a-f]{32}-3"', etag), etag  # three 8 MiB parts

    dst = tmp_path / "down" / "copy.bin"
    ok(cli(server, "cp", "--quiet", f"s3://{bucket}/obj/data.bin", str(dst)))
    assert dst.read_bytes() == data
    assert sorted(p.name for p in dst.parent.iterdir()) == ["copy.bin"]


def test_cp_progress_and_lines(server: ServerProcess, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(b"\0" * (9 * MIB))
    proc = cli(server, "cp", str(src), f"s3://{bucket}/big.bin")
    assert ok(proc).strip() == f"upload: {src} to s3://{bucket}/big.bin"
    assert "100%" in proc.stderr  # the tqdm bar
    proc = cli(server, "cp", "-q", str(src), f"s3://{bucket}/big.bin")
    assert ok(proc) == ""
    assert proc.stderr == ""


def test_cp_destination_naming(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "name with space+plus.txt"
    src.write_bytes(b"hello")
    ok(cli(server, "cp", "-q", str(src), f"s3://{bucket}/p/"))
    ok(cli(server, "cp", "-q", str(src), f"s3://{bucket}"))
    ok(cli(server, "cp", "-q", str(src), f"s3://{bucket}/exact-key"))
    assert sorted(all_keys(s3, bucket)) == ["exact-key", "name with space+plus.txt", "p/name with space+plus.txt"]

    out = tmp_path / "out"
    out.mkdir()
    ok(cli(server, "cp", "-q", f"s3://{bucket}/p/name with space+plus.txt", str(out)))
    ok(cli(server, "cp", "-q", f"s3://{bucket}/exact-key", str(tmp_path / "new-dir") + "/"))
    ok(cli(server, "cp", "-q", f"s3://{bucket}/exact-key", "renamed.txt", cwd=out))
    assert (out / "name with space+plus.txt").read_bytes() == b"hello"
    assert (tmp_path / "new-dir" / "exact-key").read_bytes() == b"hello"
    assert (out / "renamed.txt").read_bytes() == b"hello"


def make_odd_tree(root: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    expected: dict[str, bytes] = {}
    for i, (d, n) in enumerate((d, n) for d in ODD_DIRS for n in ODD_NAMES):
        if i % 2:  # about 50 files spread over every directory
            continue
        rel = d + n
        size = 0 if i % 11 == 0 else rng.randrange(1, 200_000)
        expected[rel] = rng.randbytes(size)
    expected["nested/a/b/c/large.bin"] = rng.randbytes(9 * MIB)  # a multipart transfer inside the pool
    for rel, data in expected.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return expected


def test_cp_recursive_tree_round_trip(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = make_odd_tree(src)
    assert len(expected) >= 50
    proc = cli(server, "cp", "-r", "--jobs", "6", str(src), f"s3://{bucket}/pfx")
    ok(proc)
    assert len(proc.stdout.splitlines()) == len(expected)
    assert sorted(all_keys(s3, bucket)) == sorted(f"pfx/{rel}" for rel in expected)
    for rel in ["ünï/子dir/emoji-🙂.txt", "q?#/hash#frag.txt", "x+y/%41/percent%20literal.txt"]:
        if rel in expected:
            assert get_bytes(s3, bucket, f"pfx/{rel}") == expected[rel]

    dst = tmp_path / "dst"
    ok(cli(server, "cp", "-r", "-q", f"s3://{bucket}/pfx", str(dst)))
    assert tree_bytes(dst) == expected
    # And the trailing-slash spelling of the same prefix, into an existing directory.
    dst2 = tmp_path / "dst2"
    dst2.mkdir()
    ok(cli(server, "cp", "-r", "-q", f"s3://{bucket}/pfx/", str(dst2)))
    assert tree_bytes(dst2) == expected


def test_cp_recursive_prefix_is_a_directory(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    put_many(s3, bucket, ["d/a", "d/sub/b", "dx/not-me"])
    ok(cli(server, "cp", "-r", "-q", f"s3://{bucket}/d", str(tmp_path / "out")))
    assert sorted(tree_bytes(tmp_path / "out")) == ["a", "sub/b"]


def test_cp_s3_to_s3(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src/one#?.bin", Body=b"one")
    s3.put_object(Bucket=bucket, Key="src/deep/two %.bin", Body=b"two" * 1000)
    ok(cli(server, "cp", "-q", f"s3://{bucket}/src/one#?.bin", f"s3://{bucket}/single/copy"))
    assert get_bytes(s3, bucket, "single/copy") == b"one"
    ok(cli(server, "cp", "-q", f"s3://{bucket}/src/one#?.bin", f"s3://{bucket}/into/"))
    assert get_bytes(s3, bucket, "into/one#?.bin") == b"one"
    ok(cli(server, "cp", "-r", "-q", f"s3://{bucket}/src", f"s3://{bucket}/dst"))
    assert sorted(all_keys(s3, bucket, "dst/")) == ["dst/deep/two %.bin", "dst/one#?.bin"]
    assert get_bytes(s3, bucket, "dst/deep/two %.bin") == b"two" * 1000


def test_cp_errors_are_one_line(server: ServerProcess, bucket: str, tmp_path: Path) -> None:
    existing = tmp_path / "f.txt"
    existing.write_bytes(b"data")
    one_line_error(cli(server, "cp", "-q", str(tmp_path / "missing.txt"), f"s3://{bucket}/k"), "missing.txt")
    one_line_error(cli(server, "cp", "-q", "-r", str(tmp_path / "missing-dir"), f"s3://{bucket}/k"), "missing-dir")
    one_line_error(cli(server, "cp", "-q", str(tmp_path), f"s3://{bucket}/k"), "directory")
    one_line_error(cli(server, "cp", "-q", str(existing), "s3://no-such-bucket-cp/k"), "NoSuchBucket")
    one_line_error(cli(server, "cp", "-q", "-r", str(tmp_path), "s3://no-such-bucket-cp/k"), "NoSuchBucket")
    one_line_error(cli(server, "cp", "-q", f"s3://{bucket}/no/such/key", str(tmp_path / "x")), "NoSuchKey")
    one_line_error(cli(server, "cp", "-q", "s3://no-such-bucket-cp/key", str(tmp_path / "x")), "NoSuchBucket")
    one_line_error(cli(server, "cp", "-q", "-r", "s3://no-such-bucket-cp/p", str(tmp_path / "x")), "NoSuchBucket")
    one_line_error(cli(server, "cp", "-q", f"s3://{bucket}/no/such/key", f"s3://{bucket}/k2"), "NoSuchKey")
    one_line_error(cli(server, "cp", "-q", str(existing), str(tmp_path / "y")), "s3://")
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


class CuttingProxy:
    """TCP forwarder to the server that cuts connections after ``limit_bytes`` of response:
    every connection, or only the first ``cuts``."""

    def __init__(self, upstream_port: int, limit_bytes: int, cuts: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.limit_bytes = limit_bytes
        self.cuts_left = cuts
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)  # accept() is not woken by close(); poll a stop flag instead
        self.stopped = threading.Event()
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                client.settimeout(None)
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                return
            limit: int | None = self.limit_bytes
            if self.cuts_left is not None:
                limit = limit if self.cuts_left > 0 else None
                self.cuts_left -= 1
            self._spawn(self._pipe, client, upstream, None)
            self._spawn(self._pipe, upstream, client, limit)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if limit is not None and sent + len(chunk) >= limit:
                    dst.sendall(chunk[: limit - sent])
                    break
                dst.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for t in self.threads:
            t.join(timeout=5)


@pytest.fixture
def cutting_proxy(server: ServerProcess) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(server.port, limit_bytes=256 * 1024)
    yield proxy
    proxy.close()


@pytest.mark.parametrize("size", [2 * MIB, 20 * MIB], ids=["single-get", "multipart"])
@pytest.mark.parametrize("pre_existing", [False, True], ids=["new", "replace"])
def test_cp_download_is_atomic(
    server: ServerProcess,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    cutting_proxy: CuttingProxy,
    size: int,
    pre_existing: bool,
) -> None:
    data = random.Random(1).randbytes(size)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    dst = tmp_path / "out" / "big.bin"
    dst.parent.mkdir()
    if pre_existing:
        dst.write_bytes(b"old")
    # --endpoint beats TIERSTORE_ENDPOINT: the download goes through the proxy and is cut short.
    proc = cli(server, "cp", "-q", "--endpoint", cutting_proxy.endpoint, f"s3://{bucket}/big.bin", str(dst))
    one_line_error(proc, "download failed")
    if pre_existing:
        assert dst.read_bytes() == b"old"
    else:
        assert not dst.exists()
    assert sorted(p.name for p in dst.parent.iterdir()) == (["big.bin"] if pre_existing else [])

    # Through the real endpoint the same download succeeds and replaces the file whole.
    ok(cli(server, "cp", "-q", f"s3://{bucket}/big.bin", str(dst)))
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["big.bin"]


def test_cp_download_retries_a_cut_body(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = random.Random(2).randbytes(2 * MIB)
    s3.put_object(Bucket=bucket, Key="mid.bin", Body=data)
    proxy = CuttingProxy(server.port, limit_bytes=256 * 1024, cuts=1)
    try:
        dst = tmp_path / "mid.bin"
        ok(cli(server, "cp", "-q", "--endpoint", proxy.endpoint, f"s3://{bucket}/mid.bin", str(dst)))
    finally:
        proxy.close()
    assert dst.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["mid.bin"]


# --- rm ---------------------------------------------------------------------------------------------


def test_rm_single(server: ServerProcess, s3: Any, bucket: str) -> None:
    put_many(s3, bucket, ["keep", "odd key +%#?ü"])
    assert ok(cli(server, "rm", f"s3://{bucket}/odd key +%#?ü")).strip() == f"delete: s3://{bucket}/odd key +%#?ü"
    assert all_keys(s3, bucket) == ["keep"]
    assert ok(cli(server, "rm", "--quiet", f"s3://{bucket}/keep")) == ""
    assert all_keys(s3, bucket) == []


def test_rm_recursive_1500(server: ServerProcess, s3: Any, bucket: str) -> None:
    keys = [f"many/{i:05d}" for i in range(1500)]
    put_many(s3, bucket, [*keys, "many", "manyx/keep"])
    out = ok(cli(server, "rm", "-r", f"s3://{bucket}/many"))
    assert out.splitlines() == [f"delete: s3://{bucket}/{k}" for k in keys]
    assert sorted(all_keys(s3, bucket)) == ["many", "manyx/keep"]
    assert ok(cli(server, "rm", "-r", "-q", f"s3://{bucket}")) == ""
    assert all_keys(s3, bucket) == []


def test_rm_errors(server: ServerProcess, bucket: str) -> None:
    one_line_error(cli(server, "rm", f"s3://{bucket}"), "-r")
    one_line_error(cli(server, "rm", "s3://no-such-bucket-rm/k"), "NoSuchBucket")
    one_line_error(cli(server, "rm", "-r", "s3://no-such-bucket-rm/p"), "NoSuchBucket")
    one_line_error(cli(server, "rm", "not-an-uri"), "s3://")
