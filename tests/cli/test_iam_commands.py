"""``tierstore admin group|role ...``, the managed policies of ``tierstore admin policy ...``, service
accounts from ``admin key create`` and ``tierstore whoami`` against a real server (they speak the
IAM and STS query APIs, with the caller's permissions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.cli.test_client_commands import cli
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client

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


def test_admin_managed_policy_commands(server: ServerProcess, tmp_path: Path) -> None:
    user, group, role = (f"{c}-{uuid.uuid4().hex[:8]}" for c in "ugr")
    iam = _iam(server)
    iam.create_user(UserName=user)
    iam.create_group(GroupName=group)
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))
    doc = tmp_path / "p.json"
    doc.write_text(json.dumps(S3_READ))
    policy = f"m-{uuid.uuid4().hex[:8]}"
    arn = f"{ARN}:policy/{policy}"
    made = _ok(server, "admin", "policy", "create", policy, str(doc), "--description", "read all")
    assert (made["Arn"], made["AttachmentCount"]) == (arn, 0)
    assert policy in _ok(server, "admin", "policy", "managed")
    assert _ok(server, "admin", "policy", "attach", policy, "--user", user) == {"user": user, "attached": arn}
    _ok(server, "admin", "policy", "attach", policy, "--group", group)
    _ok(server, "admin", "policy", "attach", arn, "--role", role)  # by ARN too
    assert [p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]] == [arn]
    assert [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]] == [arn]
    info = _ok(server, "admin", "policy", "info", policy)
    assert (info["Document"], info["AttachmentCount"]) == (S3_READ, 3)
    assert (info["Users"], info["Groups"], info["Roles"]) == ([user], [group], [role])
    refused = cli(server, "admin", "policy", "delete", policy)  # still attached
    assert refused.returncode == 2 and "DeleteConflict" in refused.stderr and refused.stdout == ""
    neither = cli(server, "admin", "policy", "attach", policy)
    assert neither.returncode == 2 and "one of the arguments --user --group --role is required" in neither.stderr
    for kind, name in (("--user", user), ("--group", group), ("--role", role)):
        _ok(server, "admin", "policy", "detach", policy, kind, name)
    assert iam.list_attached_group_policies(GroupName=group)["AttachedPolicies"] == []
    # the user-inline verbs are unchanged beside the managed ones
    _ok(server, "admin", "policy", "put", user, "inline", str(doc))
    assert {k: json.loads(v) for k, v in _ok(server, "admin", "policy", "ls", user).items()} == {"inline": S3_READ}
    assert _ok(server, "admin", "policy", "delete", policy) == {"deleted": arn}
    missing = cli(server, "admin", "policy", "info", policy)
    assert missing.returncode == 2 and "NoSuchEntity" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"Statement": "nope"}')
    malformed = cli(server, "admin", "policy", "create", policy, str(bad))
    assert malformed.returncode == 2 and "MalformedPolicyDocument" in malformed.stderr
    helps = cli(server, "admin", "policy", "--help").stdout
    for verb in ("create", "managed", "info", "delete", "attach", "detach", "put", "ls", "rm"):
        assert f"    {verb} " in helps


def test_admin_key_create_makes_a_narrowed_expiring_service_account(
    server: ServerProcess, s3: Any, bucket: str, tmp_path: Path
) -> None:
    helps = cli(server, "admin", "key", "create", "--help").stdout
    assert all(flag in helps for flag in ("--service", "--policy", "--expires"))
    iam = _iam(server)
    user = f"s-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(S3_READ))
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    narrow = tmp_path / "narrow.json"
    only = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/other/*"}
    narrow.write_text(json.dumps({"Version": "2012-10-17", "Statement": [only]}))
    made = _ok(server, "admin", "key", "create", user, "--service", "--policy", str(narrow), "--expires", "1h",
               "--name", "ci")  # fmt: skip
    assert (made["user"], made["kind"], made["name"]) == (user, "service", "ci")
    assert made["expires"] and json.loads(made["policy"]) == json.loads(narrow.read_text())
    parent = iam.create_access_key(UserName=user)["AccessKey"]
    as_user = make_client(server.endpoint, access_key=parent["AccessKeyId"], secret_key=parent["SecretAccessKey"])
    as_service = make_client(server.endpoint, access_key=made["access_key_id"], secret_key=made["secret_key"])
    assert as_user.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    with pytest.raises(ClientError) as denied:  # the user may, the narrowed service account may not
        as_service.get_object(Bucket=bucket, Key="k")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    listed = _ok(server, "admin", "key", "list", user)
    assert made["secret_key"] not in json.dumps(listed)
    assert {k["access_key_id"]: k["kind"] for k in listed}[made["access_key_id"]] == "service"


def _cli_as(server: ServerProcess, creds: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with no tierstore key configured, so boto3's chain reads ``AWS_*`` (temporary
    credentials: ``AWS_SESSION_TOKEN``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(TIERSTORE_ENDPOINT=server.endpoint, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(creds)
    cmd = [sys.executable, "-m", "tierstore", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_whoami(server: ServerProcess) -> None:
    root = {"type": "root", "arn": f"{ARN}:root", "account": "000000000000", "user_id": "000000000000"}
    assert _ok(server, "whoami", "--json") == root
    shown = cli(server, "whoami")
    assert shown.returncode == 0 and shown.stdout.splitlines()[:2] == ["type:     root", f"arn:      {ARN}:root"]
    iam = _iam(server)
    user = f"w-{uuid.uuid4().hex[:8]}"
    made = iam.create_user(UserName=user)["User"]
    key = iam.create_access_key(UserName=user)["AccessKey"]  # no policy at all: GetCallerIdentity needs none
    out = cli(server, "whoami", "--json", "--access-key", key["AccessKeyId"], "--secret-key", key["SecretAccessKey"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "type": "user", "user": user, "arn": f"{ARN}:user/{user}", "account": "000000000000",
        "user_id": made["UserId"],
    }  # fmt: skip
    # a role session, its temporary credentials from the AWS chain
    role = f"wr-{uuid.uuid4().hex[:8]}"
    statement = {"Effect": "Allow", "Principal": {"AWS": f"{ARN}:user/{user}"}, "Action": "sts:AssumeRole"}
    role_id = iam.create_role(
        RoleName=role, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    )["Role"]["RoleId"]
    sts = boto3.client("sts", endpoint_url=server.endpoint, aws_access_key_id=key["AccessKeyId"],
                       aws_secret_access_key=key["SecretAccessKey"], region_name="us-east-1")  # fmt: skip
    c = sts.assume_role(RoleArn=f"{ARN}:role/{role}", RoleSessionName="nightly")["Credentials"]
    creds = {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
             "AWS_SESSION_TOKEN": c["SessionToken"]}  # fmt: skip
    session = _cli_as(server, creds, "whoami", "--json")
    assert session.returncode == 0, session.stderr
    assert json.loads(session.stdout) == {
        "type": "role-session", "role": role, "session": "nightly",
        "arn": f"arn:aws:sts::000000000000:assumed-role/{role}/nightly", "account": "000000000000",
        "user_id": f"{role_id}:nightly",
    }  # fmt: skip
    lines = _cli_as(server, creds, "whoami").stdout.splitlines()
    assert lines[:3] == ["type:     role session", f"role:     {role}", "session:  nightly"]
    tampered = _cli_as(server, {**creds, "AWS_SESSION_TOKEN": c["SessionToken"][:-4] + "AAAA"}, "whoami")
    assert tampered.returncode == 2 and tampered.stdout == "", tampered.stderr
    assert "InvalidToken" in tampered.stderr and c["SessionToken"][:-4] not in tampered.stderr
    wrong = cli(server, "whoami", "--access-key", key["AccessKeyId"], "--secret-key", "x" * 40)
    assert wrong.returncode == 2 and "SignatureDoesNotMatch" in wrong.stderr and "x" * 40 not in wrong.stderr
