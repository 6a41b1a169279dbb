"""Every command ends an expected failure — server gone, connection dropped, reader of stdout
gone, Ctrl-C — with one line on stderr and a non-zero exit code, never a traceback (cli.main)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.test_client_commands import cli, one_line_error, put_many
from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess

# One of each kind: boto3 (ls, mb, uploads) and the extensions client (query, dataset, models, heal...).
COMMANDS = [
    ["ls"],
    ["mb", "s3://b"],
    ["uploads", "ls", "s3://b"],
    ["query", "b", "meta.x = '1'"],
    ["dataset", "ls"],
    ["models", "ls"],
    ["stage", "d@1", "--to", "/nonexistent/stage"],
    ["heal", "-q"],
    ["admin", "info"],
]


class FakeServer:
    """A TCP listener on 127.0.0.1 that, per connection, closes at once (``drop``) or holds it
    without answering (``hang``); ``connected`` is set once a client got in."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.connected = threading.Event()
        self.stopped = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connected.set()
            if self.mode == "drop":
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()
        for conn in self.held:
            conn.close()


@contextlib.contextmanager
def fake_server(mode: str) -> Iterator[FakeServer]:
    srv = FakeServer(mode)
    try:
        yield srv
    finally:
        srv.close()


class Endpoint:
    """What ``cli`` needs of a server: its endpoint."""

    def __init__(self, port: int) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens here once closed


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a[:2]) for a in COMMANDS])
def test_server_not_listening_is_one_line(args: list[str]) -> None:
    dead: Any = Endpoint(_dead_port())
    line = one_line_error(cli(dead, *args, timeout_s=120))
    assert line.startswith(f"tierstore {args[0]}"), line
    assert "connect" in line.lower() or "cannot reach" in line, line


@pytest.mark.parametrize("args", [["dataset", "ls"], ["query", "b", "meta.x = '1'"], ["heal", "-q"], ["ls"]])
def test_connection_dropped_by_the_server_is_one_line(args: list[str]) -> None:
    with fake_server("drop") as srv:
        proc = cli(Endpoint(srv.port), *args, timeout_s=120)  # type: ignore[arg-type]
    one_line_error(proc, f"tierstore {args[0]}")


def test_ctrl_c_is_one_line_and_exit_130() -> None:
    with fake_server("hang") as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
        env.update(TIERSTORE_ENDPOINT=f"http://127.0.0.1:{srv.port}", TIERSTORE_ACCESS_KEY=ACCESS_KEY)
        env.update(TIERSTORE_SECRET_KEY=SECRET_KEY)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tierstore", "dataset", "ls"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert srv.connected.wait(60), "the command never connected"
            time.sleep(0.2)  # inside its request now, waiting for an answer
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and err.strip().splitlines() == ["tierstore dataset ls: interrupted"], err


def test_ls_into_a_reader_that_closes_early(server: ServerProcess, s3: Any, bucket: str) -> None:
    # well past the pipe's buffer: the writer is still writing when the reader goes away
    put_many(s3, bucket, [f"pipe/{i:05d}-{'x' * 100}" for i in range(1200)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(TIERSTORE_ENDPOINT=server.endpoint, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
    query = ["query", bucket, "key STARTS WITH 'pipe/'", "--all", "--json"]
    for args in (["ls", "-r", "--json", f"s3://{bucket}"], ["ls", "-r", f"s3://{bucket}"], query):
        with subprocess.Popen(  # tierstore ls ... | head -1
            [sys.executable, "-m", "tierstore", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            first = proc.stdout.readline()
            proc.stdout.close()
            err = proc.stderr.read().decode()
            assert proc.wait(timeout=120) != 0
        assert b"pipe/00000-" in first
        assert err == "", err  # quiet, like any filter whose reader stopped: no traceback, no noise


def test_version_is_the_package_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    proc = subprocess.run(
        [sys.executable, "-m", "tierstore", "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert (proc.returncode, proc.stdout) == (0, f"tierstore {version}\n"), proc.stderr
