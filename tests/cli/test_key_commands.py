"""``tierstore admin key create --service --policy FILE --expires DURATION --name LABEL`` against
a real server: the service account's policy narrows its parent over HTTP (boto3 with its keys),
and an expiring one stops authenticating once its expiry has passed (the server's own clock)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.api.test_iam_api import eventually, iam_client
from tests.api.test_iam_e2e import DENIED, status
from tests.cli.test_client_commands import cli, ok, one_line_error
from tests.conftest import ServerProcess, make_client

OK = (200, "")


def _allow_get(resource: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": resource}]})  # fmt: skip


def _s3_of(server: ServerProcess, created: dict[str, Any]) -> Any:
    return make_client(server.endpoint, access_key=created["access_key_id"], secret_key=created["secret_key"])


def test_service_account_from_the_cli_narrows_and_expires(
    server: ServerProcess, s3: Any, bucket: str, tmp_path: Path
) -> None:
    for key in ("public/x", "other"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    parent_name = f"sa-parent-{uuid.uuid4().hex[:8]}"
    ok(cli(server, "admin", "user", "create", parent_name))
    iam_client(server).put_user_policy(UserName=parent_name, PolicyName="main",
                                       PolicyDocument=_allow_get(f"arn:aws:s3:::{bucket}/*"))  # fmt: skip
    parent = _s3_of(server, json.loads(ok(cli(server, "admin", "key", "create", parent_name))))
    narrow = tmp_path / "narrow.json"
    narrow.write_text(_allow_get(f"arn:aws:s3:::{bucket}/public/*"))
    made = json.loads(ok(cli(server, "admin", "key", "create", parent_name, "--service", "--policy", str(narrow),
                             "--name", "reader")))  # fmt: skip
    assert (made["kind"], made["user"], made["name"], made["expires"]) == ("service", parent_name, "reader", None)
    assert json.loads(made["policy"]) == json.loads(narrow.read_text())
    sa = _s3_of(server, made)
    assert eventually(lambda: status(lambda: parent.get_object(Bucket=bucket, Key="other")) == OK)
    assert sa.get_object(Bucket=bucket, Key="public/x")["Body"].read() == b"public/x"
    assert status(lambda: sa.get_object(Bucket=bucket, Key="other")) == DENIED  # the parent may; not the SA
    assert status(lambda: sa.put_object(Bucket=bucket, Key="public/y", Body=b"y")) == DENIED  # neither may

    short = json.loads(ok(cli(server, "admin", "key", "create", parent_name, "--service", "--expires", "8s")))
    expires_at = datetime.fromisoformat(short["expires"]).timestamp()  # whole seconds, rounded down
    assert 0 < expires_at - time.time() <= 8
    expiring = _s3_of(server, short)
    assert status(lambda: expiring.get_object(Bucket=bucket, Key="public/x")) == OK
    listed = {k["access_key_id"]: k for k in json.loads(ok(cli(server, "admin", "key", "list", parent_name)))}
    assert listed[short["access_key_id"]]["expires"] == short["expires"]
    # Past its expiry (+1 s: the listed time is rounded down; +1.2 s: each worker's key cache).
    time.sleep(max(0.0, expires_at + 2.2 - time.time()))
    assert status(lambda: expiring.get_object(Bucket=bucket, Key="public/x")) == (403, "InvalidAccessKeyId")
    assert status(lambda: parent.get_object(Bucket=bucket, Key="public/x")) == OK  # the parent is untouched

    plain = cli(server, "admin", "key", "create", parent_name, "--expires", "1h")
    one_line_error(plain, "InvalidRequest", "Only a service account has a policy or an expiry")
    assert len(json.loads(ok(cli(server, "admin", "key", "list", parent_name)))) == 3  # nothing more was made
