"""Identities end to end: the root creates a user and a key through the CLI (the admin
extension), boto3 signs with the new key, disabling the key stops it in every worker within
about a second, the secret never reaches the server log or a listing, and a store whose master
key file went missing refuses to start (docs/identities.md)."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.cli.test_client_commands import cli, ok
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client, serve_once
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings


def _list_status(endpoint: str, ak: str, sk: str) -> tuple[int, str]:
    try:
        resp = make_client(endpoint, access_key=ak, secret_key=sk).list_buckets()
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]
    return resp["ResponseMetadata"]["HTTPStatusCode"], ""


def test_root_creates_user_and_key_that_authenticates_until_disabled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, extra_args=["--workers", "2"])
    server.start()
    try:
        assert stat.S_IMODE((data / "master.key").stat().st_mode) == 0o600
        user = json.loads(ok(cli(server, "admin", "user", "create", "alice")))
        assert user["name"] == "alice" and user["enabled"] is True
        created = json.loads(ok(cli(server, "admin", "key", "create", "alice")))
        ak, sk = created["access_key_id"], created["secret_key"]
        assert created["status"] == "Active" and created["user"] == "alice" and len(sk) == 40

        # The key authenticates; a user without a policy may do nothing (docs/security.md).
        assert _list_status(server.endpoint, ak, sk) == (403, "AccessDenied")
        assert _list_status(server.endpoint, ACCESS_KEY, SECRET_KEY) == (200, "")  # the root, as before
        assert _list_status(server.endpoint, ak, "x" * 40) == (403, "SignatureDoesNotMatch")

        # Only the root manages identities: alice's own key is refused.
        settings = resolve_settings(server.endpoint, access_key=ak, secret_key=sk, region="us-east-1")
        with pytest.raises(TierstoreClientError) as info:
            TierstoreClient(settings).create_access_key("alice")
        assert (info.value.status, info.value.code) == (403, "AccessDenied")
        assert sk not in str(info.value)

        ok(cli(server, "admin", "key", "disable", ak))
        disabled = time.monotonic()  # committed: every worker's cached answer is at most 1 s older
        answers = []
        while (sent := time.monotonic()) < disabled + 2.5:
            answers.append((sent - disabled, _list_status(server.endpoint, ak, sk)))
            time.sleep(0.05)
        late = [answer for after_s, answer in answers if after_s >= 1.2]
        assert len(late) >= 4 and set(late) == {(403, "InvalidAccessKeyId")}, answers

        listed = ok(cli(server, "admin", "key", "list", "alice"))
        info_out = ok(cli(server, "admin", "user", "info", "alice"))
        keys = json.loads(listed)
        assert [(k["access_key_id"], k["status"]) for k in keys] == [(ak, "Inactive")]
        assert keys[0]["last_used"] is not None
        assert sk not in listed and sk not in info_out
        failed = cli(server, "admin", "user", "delete", "alice")
        assert failed.returncode == 2 and "DeleteConflict" in failed.stderr and sk not in failed.stderr
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert ak in log  # the access log names the key...
    assert sk not in log  # ...never its secret


def test_a_missing_master_key_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data)
    server.start()
    try:
        ok(cli(server, "admin", "user", "create", "bob"))
        ok(cli(server, "admin", "key", "create", "bob"))
    finally:
        server.stop()
    (data / "master.key").unlink()
    proc = serve_once(data)
    assert proc.returncode == 1, proc.stderr
    assert "master key file is missing" in proc.stderr and "Traceback" not in proc.stderr
    assert not (data / "master.key").exists()  # no silent new key
