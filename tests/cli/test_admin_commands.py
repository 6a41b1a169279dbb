"""``tierstore heal`` and ``tierstore admin info`` on a single data directory, and ``serve`` errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.cli.test_client_commands import cli
from tests.conftest import REPO, ServerProcess, free_port, make_client
from tests.s3http import send, signed_request
from tierstore.blob._local import data_size_from_file_size


def test_admin_info_single_directory(fresh_server: ServerProcess) -> None:
    out = cli(fresh_server, "admin", "info", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["mode"] == "single"
    (drive,) = doc["drives"]
    assert drive["state"] == "online" and drive["total_bytes"] >= drive["free_bytes"] > 0
    assert Path(drive["path"]) == fresh_server.data_dir
    table = cli(fresh_server, "admin", "info")
    assert table.returncode == 0 and "online" in table.stdout and str(fresh_server.data_dir) in table.stdout


def test_heal_single_directory_verifies_and_reports_damage(fresh_server: ServerProcess) -> None:
    s3 = make_client(fresh_server.endpoint)
    s3.create_bucket(Bucket="heal")
    for i in range(5):
        s3.put_object(Bucket="heal", Key=f"k{i}", Body=bytes([i]) * (100_000 + i))
    out = cli(fresh_server, "heal")
    assert out.returncode == 0, out.stdout + out.stderr
    # a person gets a summary: what was checked, what it found, how long it took
    assert re.fullmatch(
        r"heal done in \d+\.\d s: 5 blobs checked, 5 healthy, 0 repaired, 0 degraded, 0 lost\n", out.stdout
    ), out.stdout
    out = cli(fresh_server, "heal", "--json", "-q")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert (report["state"], report["blobs_done"], report["blobs_healthy"], report["blobs_lost"]) == ("done", 5, 5, 0)

    # one drive cannot repair: a flipped byte is reported as lost, exit status 1
    blob = next(p for p in (fresh_server.data_dir / "blobs").rglob("*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[10] ^= 1
    blob.write_bytes(bytes(data))
    out = cli(fresh_server, "heal", "-q")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith("5 blobs checked, 4 healthy, 0 repaired, 0 degraded, 1 lost"), out.stdout
    assert lines[-2] == f"lost blobs: {blob.name}"
    size = data_size_from_file_size(len(data))
    assert size is not None
    assert lines[-1] == f"objects affected: heal/k{size - 100_000}@null"  # the object to restore
    assert out.stderr == ""
    out = cli(fresh_server, "heal", "-q", "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["blobs_lost"] == 1 and report["lost"] == [blob.name]
    assert report["lost_objects"] == [f"heal/k{size - 100_000}@null"]
    info = json.loads(cli(fresh_server, "admin", "info", "--json").stdout)
    assert info["last_heal"]["blobs_lost"] == 1


def test_admin_endpoints_reject_wrong_methods_and_anonymous(fresh_server: ServerProcess) -> None:
    resp = signed_request(fresh_server, "POST", "/_tierstore/admin/info", b"{}")
    assert resp.status == 405, resp.body
    resp = signed_request(fresh_server, "GET", "/_tierstore/admin/heal")
    assert resp.status == 405, resp.body
    resp = send(fresh_server.port, "GET", "/_tierstore/admin/info", {"Host": f"127.0.0.1:{fresh_server.port}"})
    assert resp.status == 403, resp.body


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # A port of its own: the port is claimed before the drive set is checked.
        [sys.executable, "-m", "tierstore", "serve", "--address", f"127.0.0.1:{free_port()}", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_serve_refuses_a_bad_drive_set(tmp_path: Path) -> None:
    drives = [str(tmp_path / f"d{i}") for i in range(4)]
    out = _serve("--drives", *drives, "--parity", "3")
    assert out.returncode == 2 and "parity" in out.stderr, out.stderr
    assert not any(Path(d).exists() for d in drives), "nothing is formatted when the set is refused"
    out = _serve("--drives", drives[0], drives[0], drives[1], drives[2])
    assert out.returncode == 2 and "twice" in out.stderr, out.stderr


def test_serve_help_documents_drives() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tierstore", "serve", "--help"], capture_output=True, text=True, cwd=REPO, check=True
    )
    for flag in ("--drives", "--parity", "--scrub-interval", "--scrub-rate"):
        assert flag in out.stdout
