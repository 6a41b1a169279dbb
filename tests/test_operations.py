"""Running `tierstore serve` as an operator: one server per port and per store, graceful
shutdown, idle and stalled connections, options from flags, env vars and a config file."""

from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess, free_port, make_client

SERVE = [sys.executable, "-m", "tierstore", "serve"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTORE_")}
    return {**env, "TIERSTORE_ACCESS_KEY": ACCESS_KEY, "TIERSTORE_SECRET_KEY": SECRET_KEY, **extra}


def _run(args: list[str], env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *args], capture_output=True, text=True, env=env or _env(), cwd=REPO, timeout=timeout_s, check=False
    )


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


# --- one server per port and per store ----------------------------------------------------------


def test_a_second_server_on_the_port_or_the_store_refuses_to_start(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "data")
    first.start()
    try:
        # Same port, other data: one line, non-zero, and nothing listens twice.
        other = _run(["--data", str(tmp_path / "other"), "--address", f"127.0.0.1:{first.port}"])
        assert other.returncode != 0
        assert _error_lines(other) == [f"tierstore serve: port 127.0.0.1:{first.port} is in use"], other.stderr
        # Same data, other port: refused, naming the pid that holds the store.
        same = _run(["--data", str(first.data_dir), "--address", f"127.0.0.1:{free_port()}"])
        assert same.returncode != 0
        lines = _error_lines(same)
        assert len(lines) == 1, same.stderr
        assert f"data directory {first.data_dir} is in use by another tierstore server (pid {first.pid};" in lines[0]
        # The first server still serves every request alone.
        s3 = make_client(first.endpoint)
        s3.create_bucket(Bucket="still-mine")
        for _ in range(20):  # a second server sharing the port would take some of these
            assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["still-mine"]
        # kill -9 releases the lock and the port: a new server starts on the same store and port.
        first.stop(signal.SIGKILL)
        first.start()
        assert [b["Name"] for b in make_client(first.endpoint).list_buckets()["Buckets"]] == ["still-mine"]
    finally:
        first.stop()


def test_a_second_server_on_the_same_drive_set_refuses_to_start(tmp_path: Path) -> None:
    drives = [str(tmp_path / f"d{i}") for i in range(4)]
    first = ServerProcess(tmp_path / "unused", extra_args=["--drives", *drives])
    first.start()
    try:
        # Any one drive of the set is enough to refuse.
        second = _run(["--drives", drives[2], str(tmp_path / "x1"), "--address", f"127.0.0.1:{free_port()}"])
        assert second.returncode != 0
        lines = _error_lines(second)
        assert len(lines) == 1, second.stderr
        assert f"drive {drives[2]} is in use by another tierstore server (pid {first.pid};" in lines[0]
        assert not (tmp_path / "x1" / ".tierstore" / "format.json").exists()  # nothing was formatted
    finally:
        first.stop()


# --- graceful shutdown ----------------------------------------------------------------------


def test_sigterm_lets_an_upload_in_flight_finish_and_refuses_new_connections(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_args=["--shutdown-grace-s", "60"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="drain")
        url = urlsplit(s3.generate_presigned_url("put_object", Params={"Bucket": "drain", "Key": "k"}, ExpiresIn=600))
        piece, pieces = b"0123456789abcdef" * 4096, 16
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        conn.putrequest("PUT", f"{url.path}?{url.query}")
        conn.putheader("Content-Length", str(len(piece) * pieces))
        conn.putheader("Expect", "100-continue")
        conn.endheaders()
        # "100 Continue" comes when the app starts reading the body: the upload is in flight.
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += conn.sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        conn.send(piece)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        refused = False
        for _ in range(400):  # the listening socket closes at once; the upload's connection stays
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
            except ConnectionRefusedError:
                refused = True
                break
            time.sleep(0.025)
        assert refused, "new connections were still accepted after SIGTERM"
        for _ in range(pieces - 1):
            conn.send(piece)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        conn.close()
        assert srv.proc.wait(60) == 0
        srv.start()
        got = make_client(srv.endpoint).get_object(Bucket="drain", Key="k")["Body"].read()
        assert got == piece * pieces
    finally:
        srv.stop()


def test_sigterm_closes_idle_keep_alive_connections_at_once(tmp_path: Path) -> None:
    """Clients that made a request and keep their connection open (boto3's pool, a raw HTTP/1.1
    client) do not hold the server for its shutdown grace: the idle connections are closed at
    the signal. The grace is 60 s; the exit must come well inside it (a bound, not a speed)."""
    srv = ServerProcess(tmp_path / "data", extra_args=["--shutdown-grace-s", "60"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="idle")
        s3.put_object(Bucket="idle", Key="k", Body=b"x" * 4096)
        assert s3.get_object(Bucket="idle", Key="k")["Body"].read() == b"x" * 4096  # pooled, kept open
        raw = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        raw.request("GET", "/minio/health/live")
        resp = raw.getresponse()
        resp.read()
        assert resp.status == 200 and not resp.will_close  # HTTP/1.1 keep-alive: the socket stays open
        time.sleep(0.5)  # both connections idle between requests
        assert srv.proc is not None
        began = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
        took_s = time.monotonic() - began
        assert took_s < 20, f"SIGTERM took {took_s:.1f} s with idle keep-alive connections open"
        assert raw.sock is not None
        raw.sock.settimeout(10)
        assert raw.sock.recv(1) == b"", "the server left the idle connection open"
        raw.close()
        s3.close()
    finally:
        srv.stop()


# --- idle and stalled connections ----------------------------------------------------------------


def test_idle_connections_do_not_starve_the_server_and_are_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,000 idle sockets, then a normal request still answers at once; an idle socket is closed
    after the header timeout; a stalled upload is answered RequestTimeout after the idle timeout.
    The timeouts come from a config file and the env (env beats file)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert hard >= 2500, f"this test needs 2,500 open files (hard limit {hard})"
    cfg = tmp_path / "tierstore.toml"
    cfg.write_text("header-timeout-s = 300\nidle_timeout_s = 2\n")
    monkeypatch.setenv("TIERSTORE_HEADER_TIMEOUT_S", "2")
    srv = ServerProcess(tmp_path / "data", extra_args=["--config", str(cfg)])
    idle: list[socket.socket] = []
    try:
        srv.start()
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="idle")
        for _ in range(2000):
            idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        began = time.monotonic()
        assert s3.list_objects_v2(Bucket="idle")["KeyCount"] == 0
        assert time.monotonic() - began < 1.0
        # An idle socket is closed by the server (header timeout 2 s from the env, not 300 from the file).
        probe = idle[-1]
        probe.settimeout(30)
        assert probe.recv(1) == b""
        # A PUT whose body stalls: RequestTimeout (idle timeout 2 s from the file), and the connection closes.
        url = urlsplit(s3.generate_presigned_url("put_object", Params={"Bucket": "idle", "Key": "k"}, ExpiresIn=600))
        host = f"127.0.0.1:{srv.port}"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as stalled:
            head = f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n"
            stalled.sendall(head.encode() + b"only ten b")
            raw = b""
            while chunk := stalled.recv(65536):
                raw += chunk
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line.split()[1] == b"400", raw[:300]
        assert b"<Code>RequestTimeout</Code>" in rest, raw[:600]
        assert "Contents" not in s3.list_objects_v2(Bucket="idle")
        # A slow upload is not a stalled one: pauses of 1 s, 5 s in all, with the 2 s idle timeout.
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.putrequest("PUT", f"{url.path}?{url.query}")
        conn.putheader("Content-Length", "5000")
        conn.endheaders()
        for _ in range(5):
            conn.send(b"s" * 1000)
            time.sleep(1)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        conn.close()
        assert s3.get_object(Bucket="idle", Key="k")["Body"].read() == b"s" * 5000
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        srv.stop()


# --- options: flag > env > file > default ----------------------------------------------------


def _resolved(args: list[str], env: dict[str, str]) -> dict[str, tuple[str, str]]:
    proc = _run([*args, "--print-config"], env=env)
    assert proc.returncode == 0, proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        key, _, rest = line.partition(" = ")
        value, _, source = rest.partition("  # ")
        out[key] = (value, source)
    return out


def test_options_come_from_flag_then_env_then_file_then_default(tmp_path: Path) -> None:
    cfg = tmp_path / "tierstore.toml"
    cfg.write_text(
        'region = "file-region"\nworkers = 3\nlog-level = "warning"\nidle-timeout-s = 5\n'
        'drives = ["/d/a", "/d/b"]\nsecret_key = "file-secret"\naccess-log = false\n'
    )
    env = _env(TIERSTORE_CONFIG=str(cfg), TIERSTORE_WORKERS="5", TIERSTORE_IDLE_TIMEOUT_S="7")
    env["TIERSTORE_ADDRESS"] = "127.0.0.1:1234"  # the names older versions read keep working
    got = _resolved(["--idle-timeout-s", "9"], env)
    assert got["idle-timeout-s"] == ("9.0", "flag")
    assert got["workers"] == ("5", "env TIERSTORE_WORKERS")
    assert got["address"] == ("'127.0.0.1:1234'", "env TIERSTORE_ADDRESS")
    assert got["region"] == ("'file-region'", f"file {cfg}")
    assert got["log-level"] == ("'warning'", f"file {cfg}")
    assert got["drives"] == ("['/d/a', '/d/b']", f"file {cfg}")
    assert got["access-log"] == ("False", f"file {cfg}")
    assert got["header-timeout-s"] == ("10.0", "default")
    assert got["shutdown-grace-s"] == ("30.0", "default")
    assert got["secret-key"] == ("'********'", "env TIERSTORE_SECRET_KEY")  # never printed
    # --config beats TIERSTORE_CONFIG; a flag beats everything.
    other = tmp_path / "other.toml"
    other.write_text("region = 'other-region'\n")
    got = _resolved(["--config", str(other), "--workers", "2"], env)
    assert got["region"] == ("'other-region'", f"file {other}")
    assert got["workers"] == ("2", "flag")


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("idle-timout-s = 3\n", {}, "unknown key 'idle-timout-s'"),
        ('workers = "many"\n', {}, "workers: expected an integer, got 'many'"),
        ("region = \n", {}, "is not valid TOML"),
        ("", {"TIERSTORE_WORKERS": "many"}, "TIERSTORE_WORKERS: expected an integer, got 'many'"),
        ("", {"TIERSTORE_LOG_LEVEL": "loud"}, "TIERSTORE_LOG_LEVEL: expected one of debug, info, warning, error"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    cfg = tmp_path / "tierstore.toml"
    cfg.write_text(toml)
    proc = _run(["--config", str(cfg), "--data", str(tmp_path / "data")], env=_env(**env))
    assert proc.returncode == 2
    lines = _error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("tierstore serve: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "data").exists()


def test_help_names_the_env_var_of_every_option() -> None:
    from tierstore.cli._serve import SERVE_OPTIONS

    out = _run(["--help"]).stdout
    assert "TIERSTORE_CONFIG" in out
    for opt in SERVE_OPTIONS:
        if not opt.hidden:
            assert opt.flag in out and opt.env in out, opt.flag
    assert "TIERSTORE_IDLE_TIMEOUT_S" in out


def test_the_config_file_in_the_docs_is_accepted(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = tmp_path / "tierstore.toml"
    cfg.write_text(block)
    got = _resolved(["--config", str(cfg)], _env())
    assert got["address"] == ("'0.0.0.0:9000'", f"file {cfg}")
    assert got["drives"][1] == f"file {cfg}"
    assert got["shutdown-grace-s"] == ("60.0", f"file {cfg}")


def test_past_the_connection_cap_a_request_waits_only_until_idle_ones_time_out(tmp_path: Path) -> None:
    """granian cannot refuse past the cap (docs/operations.md): new connections wait in the listen
    queue. The header timeout bounds that wait: idle connections holding every slot are closed,
    and the waiting request is answered."""
    srv = ServerProcess(
        tmp_path / "data", extra_args=["--workers", "1", "--max-connections", "32", "--header-timeout-s", "2"]
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # the server inherits a low soft limit
    try:
        srv.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    idle: list[socket.socket] = []
    try:
        # It raised its own soft limit to the hard one (each connection is a file descriptor).
        limits = Path(f"/proc/{srv.pid}/limits").read_text()
        open_files = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()
        assert open_files[3] == open_files[4] == str(hard), limits
        make_client(srv.endpoint).create_bucket(Bucket="capped")
        for _ in range(40):
            idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        s3 = make_client(srv.endpoint, connect_timeout=30, read_timeout=30)  # a new connection, queued
        assert s3.list_objects_v2(Bucket="capped")["KeyCount"] == 0
        idle[0].settimeout(30)
        assert idle[0].recv(1) == b""
    finally:
        for s in idle:
            s.close()
        srv.stop()
