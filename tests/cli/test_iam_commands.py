"""``tierstore admin group|role ...`` and ``tierstore whoami`` against a real server (they speak
the IAM query API, with the caller's permissions)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.cli.test_client_commands import cli
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess

ARN = "arn:aws:iam::000000000000"
S3_READ = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"{ARN}:root"},
                                                 "Action": "sts:AssumeRole"}]}  # fmt: skip


def _ok(server: ServerProcess, *args: str) -> Any:
    out = cli(server, *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _iam(server: ServerProcess) -> Any:
    return boto3.client("iam", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name="us-east-1")  # fmt: skip


def test_admin_group_commands(server: ServerProcess, tmp_path: Path) -> None:
    group, user = f"g-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    iam = _iam(server)
    iam.create_user(UserName=user)
    assert _ok(server, "admin", "group", "create", group)["Arn"] == f"{ARN}:group/{group}"
    assert group in _ok(server, "admin", "group", "ls")
    _ok(server, "admin", "group", "add", group, user)
    assert _ok(server, "admin", "group", "ls", user) == [group]
    assert _ok(server, "admin", "group", "info", group)["Users"] == [user]
    doc = tmp_path / "p.json"
    doc.write_text(json.dumps(S3_READ))
    _ok(server, "admin", "group", "policy", "put", group, "read", str(doc))
    policy = f"cli-{uuid.uuid4().hex[:8]}"
    iam.create_policy(PolicyName=policy, PolicyDocument=json.dumps(S3_READ))
    _ok(server, "admin", "group", "policy", "attach", group, policy)
    assert _ok(server, "admin", "group", "policy", "ls", group) == {
        "inline": ["read"],
        "attached": [f"{ARN}:policy/{policy}"],
    }
    refused = cli(server, "admin", "group", "rm", group)  # members and policies first
    assert refused.returncode == 2 and "DeleteConflict" in refused.stderr and refused.stdout == ""
    _ok(server, "admin", "group", "policy", "detach", group, policy)
    _ok(server, "admin", "group", "policy", "rm", group, "read")
    _ok(server, "admin", "group", "remove", group, user)
    _ok(server, "admin", "group", "rm", group)
    missing = cli(server, "admin", "group", "info", group)
    assert missing.returncode == 2 and "NoSuchEntity" in missing.stderr


def test_admin_role_commands(server: ServerProcess, tmp_path: Path) -> None:
    role = f"r-{uuid.uuid4().hex[:8]}"
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps(TRUST))
    made = _ok(server, "admin", "role", "create", role, str(trust), "--max-session", "2h", "--description", "ci")
    assert (made["Arn"], made["MaxSessionDuration"], made["Description"]) == (f"{ARN}:role/{role}", 7200, "ci")
    assert role in _ok(server, "admin", "role", "ls")
    assert _ok(server, "admin", "role", "info", role)["AssumeRolePolicyDocument"] == TRUST
    doc = tmp_path / "p.json"
    doc.write_text(json.dumps(S3_READ))
    _ok(server, "admin", "role", "policy", "put", role, "read", str(doc))
    assert _ok(server, "admin", "role", "policy", "ls", role) == {"inline": ["read"], "attached": []}
    _ok(server, "admin", "role", "policy", "rm", role, "read")
    _ok(server, "admin", "role", "rm", role)
    bad = tmp_path / "bad.json"
    bad.write_text('{"Statement": []}')
    refused = cli(server, "admin", "role", "create", role, str(bad))
    assert refused.returncode == 2 and "MalformedPolicyDocument" in refused.stderr


def test_whoami(server: ServerProcess) -> None:
    assert _ok(server, "whoami") == {"type": "root", "arn": f"{ARN}:root", "account": "000000000000"}
    iam = _iam(server)
    user = f"w-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    own = {"Effect": "Allow", "Action": "iam:GetUser", "Resource": f"{ARN}:user/${{aws:username}}"}
    iam.put_user_policy(
        UserName=user, PolicyName="self", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [own]})
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    out = cli(server, "whoami", "--access-key", key["AccessKeyId"], "--secret-key", key["SecretAccessKey"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["arn"] == f"{ARN}:user/{user}"
    wrong = cli(server, "whoami", "--access-key", key["AccessKeyId"], "--secret-key", "x" * 40)
    assert wrong.returncode == 2 and "SignatureDoesNotMatch" in wrong.stderr and "x" * 40 not in wrong.stderr
