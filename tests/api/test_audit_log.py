"""The audit log (api/_audit.py, docs/security.md "Audit log"): one JSON line per request with the
principal, action, resource and decision; denied requests too; never a secret or a signature;
rotation by size shared by the workers without losing or cutting a line."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.s3http import fetch
from tests.test_operations import _env, _error_lines, _resolved, _run
from tierstore.api._accesslog import Exchange
from tierstore.api._audit import AuditLog, audit_line
from tierstore.client import TierstoreClient, resolve_settings

FIELDS = [
    "time", "request_id", "source_ip", "access_key", "principal_type", "user", "parent_user", "role_session",
    "action", "api", "resource", "decision", "policy", "status", "error",
]  # fmt: skip
BUCKET = "audited"
READ = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
        ],
    }
)


def _read_all(path: Path) -> list[dict[str, Any]]:
    """Every line of the log and its rotated files (each line must be a whole JSON object)."""
    lines: list[dict[str, Any]] = []
    for p in sorted(path.parent.glob(path.name + "*")):
        if p.name.endswith(".lock"):
            continue
        lines += [json.loads(t) for t in p.read_text().splitlines()]
    return lines


def _status(call: Any) -> int:
    try:
        return int(call()["ResponseMetadata"]["HTTPStatusCode"])
    except ClientError as exc:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    log = tmp_path / "audit.jsonl"
    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "2", "--audit-log", str(log)])
    srv.start()
    try:
        yield srv, log
    finally:
        srv.stop()


def test_allowed_and_denied_requests_of_two_users(audited: tuple[ServerProcess, Path]) -> None:
    srv, log = audited
    root = TierstoreClient(resolve_settings(srv.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    s3 = make_client(srv.endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"v")
    s3.put_object(Bucket=BUCKET, Key="long/" + "é" * 500, Body=b"v")  # 1005 bytes: logged whole
    root.create_user("reader")
    root.put_user_policy("reader", "main", READ)
    reader = root.create_access_key("reader")
    service = root.create_access_key("reader", service=True)
    root.create_user("nobody")
    nobody = root.create_access_key("nobody")
    secrets = [SECRET_KEY, reader["secret_key"], service["secret_key"], nobody["secret_key"]]

    r = make_client(srv.endpoint, access_key=reader["access_key_id"], secret_key=reader["secret_key"])
    sa = make_client(srv.endpoint, access_key=service["access_key_id"], secret_key=service["secret_key"])
    n = make_client(srv.endpoint, access_key=nobody["access_key_id"], secret_key=nobody["secret_key"])
    assert _status(lambda: r.get_object(Bucket=BUCKET, Key="k")) == 200
    assert _status(lambda: r.put_object(Bucket=BUCKET, Key="k", Body=b"x")) == 403
    assert _status(lambda: sa.get_object(Bucket=BUCKET, Key="k")) == 200
    assert _status(lambda: n.get_object(Bucket=BUCKET, Key="k")) == 403
    bad = make_client(srv.endpoint, access_key=nobody["access_key_id"], secret_key="wrong" * 8)
    assert _status(lambda: bad.head_bucket(Bucket=BUCKET)) == 403
    url = r.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "k"}, ExpiresIn=60)
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    assert fetch(url).body == b"v"
    srv.stop()  # the workers flush their buffers at shutdown

    text = log.read_text()
    for secret in (*secrets, signature):
        assert secret not in text
    assert "X-Amz-" not in text and "Credential" not in text
    lines = _read_all(log)
    assert all(list(line) == FIELDS for line in lines), lines[0]
    assert oct(log.stat().st_mode & 0o777) == "0o600"

    def of(key: str) -> list[tuple[Any, ...]]:
        fields = ("principal_type", "user", "parent_user", "action", "api", "resource", "decision", "policy")
        return sorted((*(x[f] for f in fields), x["status"], x["error"]) for x in lines if x["access_key"] == key)

    obj = f"arn:aws:s3:::{BUCKET}/k"
    assert of(reader["access_key_id"]) == [
        ("user", "reader", "", "s3:GetObject", "GetObject", obj, "allow", "main:Read", 200, ""),
        ("user", "reader", "", "s3:GetObject", "GetObject", obj, "allow", "main:Read", 200, ""),
        ("user", "reader", "", "s3:PutObject", "PutObject", obj, "implicit_deny", "", 403, "AccessDenied"),
    ]
    assert of(service["access_key_id"]) == [
        ("service", "", "reader", "s3:GetObject", "GetObject", obj, "allow", "main:Read", 200, ""),
    ]
    # Denied by policy (a decision), then refused by the authenticator (no decision, no principal).
    assert of(nobody["access_key_id"]) == [
        ("user", "nobody", "", "s3:GetObject", "GetObject", obj, "implicit_deny", "", 403, "AccessDenied"),
    ]
    refused = [x for x in lines if x["error"] == "SignatureDoesNotMatch"]
    assert [(x["api"], x["resource"], x["decision"], x["status"]) for x in refused] == [
        ("HeadBucket", f"arn:aws:s3:::{BUCKET}", "", 403)
    ]
    roots = [x for x in lines if x["access_key"] == ACCESS_KEY and x["api"] == "PutObject"]
    assert [(x["principal_type"], x["decision"], x["policy"]) for x in roots] == [("root", "allow", "")] * 2
    assert sorted(x["resource"] for x in roots) == [obj, f"arn:aws:s3:::{BUCKET}/long/" + "é" * 500]
    assert {x["source_ip"] for x in lines} == {"127.0.0.1"}
    assert len({x["request_id"] for x in lines}) == len(lines)


def test_rotation_keeps_every_line_across_two_workers(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    max_bytes = 2048
    srv = ServerProcess(
        tmp_path / "data",
        extra_args=["--workers", "2", "--audit-log", str(log), "--audit-log-max-bytes", str(max_bytes),
                    "--audit-log-backups", "100"],
    )  # fmt: skip
    srv.start()
    try:
        s3 = make_client(srv.endpoint, max_pool_connections=8)
        s3.create_bucket(Bucket=BUCKET)
        keys = [f"k{i:03d}" for i in range(120)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=b"x"), keys))
    finally:
        srv.stop()
    files = [p for p in tmp_path.glob("audit.jsonl*") if not p.name.endswith(".lock")]
    assert len(files) > 5  # it rotated
    assert all(p.stat().st_size <= max_bytes for p in files)
    lines = _read_all(log)
    assert sorted(x["resource"].rsplit("/", 1)[1] for x in lines if x["api"] == "PutObject") == keys


def _writer(path: str, tag: str, count: int) -> None:
    sink = AuditLog(path, max_bytes=1500, backups=1000)
    x = Exchange(None)  # type: ignore[arg-type]
    for i in range(count):
        sink.write(
            audit_line(
                x, request_id=f"{tag}{i:05d}", source_ip="127.0.0.1", access_key="AK", principal=None,
                action="s3:GetObject", api="GetObject", resource="arn:aws:s3:::b/k", status=200, error_code="",
                decision="allow", policy=None,
            )
        )  # fmt: skip
        if i % 7 == 0:
            sink.flush()
    sink.close()


def test_two_processes_rotating_one_file_lose_no_line(tmp_path: Path) -> None:
    """Two writers flushing into one rotated file at once (what two server workers do)."""
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")  # fork would warn in a process with threads
    procs = [ctx.Process(target=_writer, args=(str(path), tag, 400)) for tag in ("A", "B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = [p for p in tmp_path.glob("audit.jsonl*") if not p.name.endswith(".lock")]
    assert all(p.stat().st_size <= 1500 for p in files)
    ids = sorted(x["request_id"] for x in _read_all(path))
    assert ids == sorted(f"{t}{i:05d}" for t in "AB" for i in range(400))


def test_backups_bound_the_files_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = AuditLog(str(path), max_bytes=300, backups=2)
    for i in range(40):
        sink.write(json.dumps({"n": i, "pad": "x" * 100}))
        sink.flush()
    sink.close()
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    kept = [json.loads(t)["n"] for p in ("audit.jsonl.2", "audit.jsonl.1", "audit.jsonl") for t in
            (tmp_path / p).read_text().splitlines()]  # fmt: skip
    assert kept == list(range(40 - len(kept), 40))  # the newest lines, in order
    assert os.stat(path).st_size <= 300


def test_options_from_env_and_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "tierstore.toml"
    cfg.write_text("audit-log-max-bytes = 4096\naudit-log-backups = 2\n")
    got = _resolved(["--config", str(cfg)], _env(TIERSTORE_AUDIT_LOG="/var/log/tierstore/audit.jsonl"))
    assert got["audit-log"] == ("'/var/log/tierstore/audit.jsonl'", "env TIERSTORE_AUDIT_LOG")
    assert got["audit-log-max-bytes"] == ("4096", f"file {cfg}")
    assert got["audit-log-backups"] == ("2", f"file {cfg}")
    assert _resolved([], _env())["audit-log-max-bytes"] == (str(100 * 1024 * 1024), "default")


def test_an_audit_log_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "no-such-dir" / "audit.jsonl"
    proc = _run(["--data", str(tmp_path / "data"), "--address", "127.0.0.1:0", "--audit-log", str(bad)])
    assert proc.returncode == 1
    assert _error_lines(proc) == [f"tierstore serve: cannot open the audit log {bad}: No such file or directory"]
    assert not (tmp_path / "data").exists()  # before the store was touched
