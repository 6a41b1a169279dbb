"""The key service through a real server (2 workers): keys configured with --kms-create-keys exist
at start; ``tierstore admin kms key create|ls|status|rotate|disable|enable`` over the admin
endpoints; users need the kms: actions (403 otherwise, also for a key that does not exist); every
worker answers a change at once; a store holding KMS keys refuses to start without its master
key (docs/security.md "Key service")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_client_commands import cli, ok, one_line_error
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, serve_once
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        tmp_path_factory.mktemp("kms") / "data",
        extra_args=["--workers", "2", "--kms-create-keys", "testkey-1,testkey-2"],
    )
    srv.start()
    yield srv
    srv.stop()


def _client(server: ServerProcess, ak: str = ACCESS_KEY, sk: str = SECRET_KEY) -> TierstoreClient:
    """A new client: a new connection, which the kernel hands to either worker."""
    return TierstoreClient(resolve_settings(server.endpoint, access_key=ak, secret_key=sk, region="us-east-1"))


def _error(call: object) -> tuple[int, str]:
    with pytest.raises(TierstoreClientError) as info:
        call()  # type: ignore[operator]
    return info.value.status, info.value.code


def test_configured_keys_and_the_cli_life_cycle(kms_server: ServerProcess) -> None:
    listed = json.loads(ok(cli(kms_server, "admin", "kms", "key", "ls")))
    configured = [k for k in listed if k["key_id"].startswith("testkey-")]
    assert [(k["key_id"], k["state"], k["versions"]) for k in configured] == [
        ("testkey-1", "Enabled", 1),
        ("testkey-2", "Enabled", 1),
    ]
    assert configured[0]["arn"] == "arn:aws:kms:us-east-1:000000000000:key/testkey-1"

    made = json.loads(ok(cli(kms_server, "admin", "kms", "key", "create", "team-a", "--description", "datasets")))
    assert (made["key_id"], made["enabled"], made["versions"], made["description"]) == ("team-a", True, 1, "datasets")
    assert made["rotated"] is None and made["created"]
    rotated = json.loads(ok(cli(kms_server, "admin", "kms", "key", "rotate", "team-a")))
    assert rotated["versions"] == 2 and rotated["rotated"] is not None
    assert json.loads(ok(cli(kms_server, "admin", "kms", "key", "disable", "team-a")))["state"] == "Disabled"
    one_line_error(cli(kms_server, "admin", "kms", "key", "rotate", "team-a"), "KMS.DisabledException (400)")
    assert json.loads(ok(cli(kms_server, "admin", "kms", "key", "enable", "team-a")))["state"] == "Enabled"
    status = json.loads(ok(cli(kms_server, "admin", "kms", "key", "status", "team-a")))
    assert (status["state"], status["versions"]) == ("Enabled", 2)
    assert set(status) == {"key_id", "arn", "enabled", "state", "created", "versions", "rotated", "description"}

    one_line_error(cli(kms_server, "admin", "kms", "key", "create", "team-a"), "KMS.AlreadyExistsException (400)")
    one_line_error(cli(kms_server, "admin", "kms", "key", "status", "nope"), "KMS.NotFoundException (400)")
    one_line_error(cli(kms_server, "admin", "kms", "key", "create", "tierstore-mine"), "InvalidArgument", "reserved")
    one_line_error(cli(kms_server, "admin", "kms", "key", "create", "bad name"), "InvalidArgument")
    assert "rotate" in ok(cli(kms_server, "admin", "kms", "key", "--help"))


def test_bad_requests_to_the_endpoints(kms_server: ServerProcess) -> None:
    client = _client(kms_server)
    assert _error(lambda: client._call("DELETE", "/_tierstore/admin/kms/keys/testkey-1", None)) == (
        405,
        "MethodNotAllowed",
    )
    assert _error(lambda: client._call("POST", "/_tierstore/admin/kms/keys/testkey-1/explode", {}))[0] == 405
    assert _error(lambda: client._call("POST", "/_tierstore/admin/kms/keys", {"key_id": 7})) == (400, "InvalidRequest")
    assert _error(lambda: client._call("GET", "/_tierstore/admin/kms/nothing", None)) == (501, "NotImplemented")


def test_users_need_the_kms_actions(kms_server: ServerProcess) -> None:
    root = _client(kms_server)
    root.create_user("kms-reader")
    root.put_user_policy(
        "kms-reader",
        "describe-one",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "arn:aws:kms:*:*:key/testkey-1"}
            ],
        },
    )
    created = root.create_access_key("kms-reader")
    user = _client(kms_server, created["access_key_id"], created["secret_key"])
    assert user.kms_key_status("testkey-1")["key_id"] == "testkey-1"
    for call in (
        lambda: user.kms_key_status("testkey-2"),
        lambda: user.kms_key_status("no-such-key"),  # refused before the lookup: existence is not told
        lambda: user.kms_rotate_key("testkey-1"),
        lambda: user.kms_set_key_enabled("testkey-1", False),
        user.kms_list_keys,
        lambda: user.kms_create_key("mine"),
    ):
        assert _error(call) == (403, "AccessDenied")
    after = root.kms_key_status("testkey-1")
    assert (after["state"], after["versions"]) == ("Enabled", 1)  # nothing changed
    assert "mine" not in [k["key_id"] for k in root.kms_list_keys()]


def test_every_worker_answers_a_change_at_once(kms_server: ServerProcess) -> None:
    for _ in range(10):  # both workers have looked the key up (and not found it)
        assert _error(lambda: _client(kms_server).kms_key_status("late-key")) == (400, "KMS.NotFoundException")
    _client(kms_server).kms_create_key("late-key")
    assert {_client(kms_server).kms_key_status("late-key")["state"] for _ in range(10)} == {"Enabled"}
    _client(kms_server).kms_set_key_enabled("late-key", False)
    assert {_client(kms_server).kms_key_status("late-key")["state"] for _ in range(10)} == {"Disabled"}


def test_a_store_with_kms_keys_refuses_to_start_without_its_master_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("TIERSTORE_KMS_CREATE_KEYS", "env-key-1, env-key-2")
    server = ServerProcess(data)
    server.start()
    try:
        keys = json.loads(ok(cli(server, "admin", "kms", "key", "ls")))
        assert [k["key_id"] for k in keys] == ["env-key-1", "env-key-2"]
    finally:
        server.stop()
    (data / "master.key").unlink()  # the store has no access key of its own: only KMS keys are sealed
    proc = serve_once(data)
    assert proc.returncode == 1, proc.stderr
    assert "master key file is missing" in proc.stderr and "Traceback" not in proc.stderr
    assert not (data / "master.key").exists()  # no silent new key
    bad = serve_once(data, "--kms-create-keys", "ok-key,bad!key")
    assert bad.returncode == 1 and "--kms-create-keys 'bad!key': A KMS key id is" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
