"""Identity and access points proven end to end against one real two-worker server (issue 15):
disabling a user (``tierstore admin user disable``) or one key (IAM ``UpdateAccessKey``) refuses
its keys on every worker within about a second and enabling restores them; an admin's service
account cannot mint keys for another user (IAM API and JSON admin endpoint); a group's managed
policy grants S3 access until the user leaves the group; ``aws:PrincipalTag/*`` and
``aws:userid`` decide for a tagged user; ``aws sts assume-role`` / ``get-caller-identity``
through the aws cli, the role session then used by ``aws s3 cp``; and SigV2 presigned URLs with
an out-of-range or malformed ``Expires``.

Requests whose answer must come from both workers go through ``tests/s3http.py``, one fresh
connection each, so the kernel spreads them over the workers (a keep-alive client would stay
on one)."""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.api.test_iam_api import error_of, eventually
from tests.api.test_iam_e2e import DENIED, status
from tests.api.test_sts import ACCOUNT, Env, allow, doc, role_arn, trust, two_workers, user_arn
from tests.cli.test_client_commands import cli, ok
from tests.conftest import ACCESS_KEY, SECRET_KEY, aws_cli
from tests.s3http import assert_error, fetch, signed_request
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)

A = "ide-a"
B = "ide-b"
OK = (200, "")
READ_A = doc(allow("s3:GetObject", f"arn:aws:s3:::{A}/*"))
IAM_ALL = doc(allow("iam:*"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with two_workers(Path(tmp_path_factory.mktemp("ide")), (A, B)) as e:
        yield e


def ext(env: Env, keys: tuple[str, str] = (ACCESS_KEY, SECRET_KEY)) -> TierstoreClient:
    """The extensions client (the JSON admin endpoints) signing with ``keys``."""
    return TierstoreClient(resolve_settings(env.server.endpoint, access_key=keys[0], secret_key=keys[1]))


def fresh_get(env: Env, keys: tuple[str, str], bucket: str = A, key: str = "public/x") -> tuple[int, str]:
    """(status, error code) of a GET signed with ``keys`` on a new connection."""
    resp = signed_request(env.server, "GET", f"/{bucket}/{key}", access_key=keys[0], secret_key=keys[1])
    return resp.status, "" if resp.status < 300 else resp.error()["Code"]


def answers_after_a_second(check: Callable[[], tuple[int, str]], window_s: float = 2.5) -> set[tuple[int, str]]:
    """Every answer of ``check`` sent 1.2 s or more after now (a committed change is seen by each
    worker's 1-second caches by then), polling for ``window_s``."""
    changed = time.monotonic()
    answers = []
    while (sent := time.monotonic()) < changed + window_s:
        answers.append((sent - changed, check()))
        time.sleep(0.05)
    late = [answer for after_s, answer in answers if after_s >= 1.2]
    assert len(late) >= 6, answers  # enough fresh connections that both workers answer some
    return set(late)


# --- disabling a user and a key ----------------------------------------------------------------
def test_cli_user_disable_refuses_every_key_on_every_worker_and_enable_restores(env: Env) -> None:
    name, k1 = env.user(READ_A)
    k2 = env.iam.create_access_key(UserName=name)["AccessKey"]
    keys = [k1, (k2["AccessKeyId"], k2["SecretAccessKey"])]
    assert all(eventually(lambda k=k: fresh_get(env, k) == OK) for k in keys)

    ok(cli(env.server, "admin", "user", "disable", name))
    turns = itertools.cycle(keys)
    assert answers_after_a_second(lambda: fresh_get(env, next(turns))) == {(403, "InvalidAccessKeyId")}
    users = {u["name"]: u for u in json.loads(ok(cli(env.server, "admin", "user", "list")))}
    assert users[name]["enabled"] is False
    info = json.loads(ok(cli(env.server, "admin", "user", "info", name)))
    assert info["enabled"] is False
    assert sorted(k["access_key_id"] for k in info["keys"]) == sorted(k[0] for k in keys)
    assert {k["status"] for k in info["keys"]} == {"Active"}  # the keys themselves are untouched

    ok(cli(env.server, "admin", "user", "enable", name))
    assert answers_after_a_second(lambda: fresh_get(env, next(turns))) == {OK}
    assert json.loads(ok(cli(env.server, "admin", "user", "info", name)))["enabled"] is True


def test_update_access_key_inactive_refuses_that_key_only(env: Env) -> None:
    name, k1 = env.user(READ_A)
    k2 = env.iam.create_access_key(UserName=name)["AccessKey"]
    other = (k2["AccessKeyId"], k2["SecretAccessKey"])
    assert eventually(lambda: fresh_get(env, k1) == OK)
    env.iam.update_access_key(UserName=name, AccessKeyId=k1[0], Status="Inactive")
    assert answers_after_a_second(lambda: fresh_get(env, k1)) == {(403, "InvalidAccessKeyId")}
    assert fresh_get(env, other) == OK
    listed = env.iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert {k["AccessKeyId"]: k["Status"] for k in listed} == {k1[0]: "Inactive", other[0]: "Active"}
    env.iam.update_access_key(UserName=name, AccessKeyId=k1[0], Status="Active")
    assert answers_after_a_second(lambda: fresh_get(env, k1)) == {OK}


# --- a service account never manages keys ------------------------------------------------------
def test_an_admins_service_account_cannot_create_keys_for_another_user(env: Env) -> None:
    admin, admin_keys = env.user(IAM_ALL)
    victim, _victim_keys = env.user()
    before = env.iam.list_access_keys(UserName=victim)["AccessKeyMetadata"]
    sa = ext(env).create_access_key(admin, service=True)
    sa_keys = (sa["access_key_id"], sa["secret_key"])
    as_sa = env.client("iam", sa_keys)
    assert eventually(lambda: status(lambda: as_sa.list_users(MaxItems=1)) == OK)  # reads: the parent's rights
    assert error_of(lambda: as_sa.create_access_key(UserName=victim)) == DENIED
    for service in (False, True):
        with pytest.raises(TierstoreClientError) as info:
            ext(env, sa_keys).create_access_key(victim, service=service)
        assert (info.value.status, info.value.code) == DENIED
    assert env.iam.list_access_keys(UserName=victim)["AccessKeyMetadata"] == before
    assert [k["kind"] for k in ext(env).list_access_keys(victim)] == ["user"]  # no service account either
    made = env.client("iam", admin_keys).create_access_key(UserName=victim)["AccessKey"]  # the parent may
    env.iam.delete_access_key(UserName=victim, AccessKeyId=made["AccessKeyId"])


# --- groups and principal-derived condition keys -----------------------------------------------
def test_a_groups_managed_policy_grants_until_the_user_leaves(env: Env) -> None:
    arn = env.iam.create_policy(PolicyName="ide-read-a", PolicyDocument=READ_A)["Policy"]["Arn"]
    env.iam.create_group(GroupName="ide-readers")
    env.iam.attach_group_policy(GroupName="ide-readers", PolicyArn=arn)
    name, keys = env.user()
    assert fresh_get(env, keys) == DENIED
    env.iam.add_user_to_group(GroupName="ide-readers", UserName=name)
    assert eventually(lambda: fresh_get(env, keys) == OK)
    assert fresh_get(env, keys, B) == DENIED  # the group's policy, no more
    env.iam.remove_user_from_group(GroupName="ide-readers", UserName=name)
    assert answers_after_a_second(lambda: fresh_get(env, keys)) == {DENIED}


def test_principal_tag_and_userid_conditions(env: Env) -> None:
    ml, ml_keys = env.user()
    env.iam.tag_user(UserName=ml, Tags=[{"Key": "team", "Value": "ml"}])
    web, web_keys = env.user()
    env.iam.tag_user(UserName=web, Tags=[{"Key": "team", "Value": "web"}])
    ml_id = env.iam.get_user(UserName=ml)["User"]["UserId"]
    policy = doc(
        allow("s3:GetObject", f"arn:aws:s3:::{A}/*", Condition={"StringEquals": {"aws:PrincipalTag/team": "ml"}}),
        allow("s3:GetObject", f"arn:aws:s3:::{B}/*", Condition={"StringEquals": {"aws:userid": ml_id}}),
    )
    for name in (ml, web):
        env.iam.put_user_policy(UserName=name, PolicyName="main", PolicyDocument=policy)
    assert eventually(lambda: fresh_get(env, ml_keys) == OK)
    assert fresh_get(env, ml_keys, B) == OK
    assert fresh_get(env, web_keys) == DENIED  # tagged, but not team=ml
    assert fresh_get(env, web_keys, B) == DENIED  # another user id
    env.iam.untag_user(UserName=ml, TagKeys=["team"])
    assert answers_after_a_second(lambda: fresh_get(env, ml_keys)) == {DENIED}
    assert fresh_get(env, ml_keys, B) == OK


# --- STS through the aws cli -------------------------------------------------------------------
def _aws(env: Env, creds: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environ.update(creds, AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull,
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull)  # fmt: skip
    return subprocess.run([aws_cli(), "--endpoint-url", env.server.endpoint, "--output", "json", *args],
                          env=environ, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_aws_cli_assume_role_then_s3_cp_with_the_session(env: Env, tmp_path: Path) -> None:
    name, keys = env.user()
    role = env.role(trust({"AWS": user_arn(name)}), READ_A)
    user = {"AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]}
    out = _aws(env, user, "sts", "assume-role", "--role-arn", role_arn(role), "--role-session-name", "cli-job")
    assert out.returncode == 0, out.stderr
    c = json.loads(out.stdout)["Credentials"]
    session = {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
               "AWS_SESSION_TOKEN": c["SessionToken"]}  # fmt: skip
    out = _aws(env, session, "sts", "get-caller-identity")
    assert out.returncode == 0, out.stderr
    ident = json.loads(out.stdout)
    assert ident["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/cli-job" and ident["Account"] == ACCOUNT
    got = tmp_path / "x"
    out = _aws(env, session, "s3", "cp", f"s3://{A}/public/x", str(got))
    assert out.returncode == 0, out.stderr
    assert got.read_bytes() == f"{A}/public/x".encode()
    out = _aws(env, session, "s3", "cp", f"s3://{B}/public/x", str(tmp_path / "y"))  # the role reads only A
    assert out.returncode != 0 and "403" in out.stderr and not (tmp_path / "y").exists()
    out = _aws(env, {**session, "AWS_SESSION_TOKEN": ""}, "s3", "cp", f"s3://{A}/public/x", str(tmp_path / "z"))
    assert out.returncode != 0 and "403" in out.stderr  # the session's keys are nothing without the token


# --- SigV2 presigned URLs: Expires out of range or malformed ------------------------------------
def _v2_url(env: Env, key: str, expires: str) -> str:
    sts = f"GET\n\n\n{expires}\n/{A}/{key}"
    sig = base64.b64encode(hmac.digest(SECRET_KEY.encode(), sts.encode(), "sha1")).decode()
    return (f"{env.server.endpoint}/{A}/{key}?AWSAccessKeyId={ACCESS_KEY}&Expires={quote(expires, safe='')}"
            f"&Signature={quote(sig, safe='')}")  # fmt: skip


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (7 * 86400 + 3600, "Presigned URLs must expire within 7 days (604800 seconds)"),
        ("soon", "Invalid date (should be seconds since epoch): Expires"),
        ("-60", "Request has expired"),  # a time before the epoch
        ("1e12", "Invalid date (should be seconds since epoch): Expires"),
    ],
)
def test_presigned_v2_expires_out_of_range_is_403(env: Env, offset: int | str, message: str) -> None:
    """AWS puts no cap on a SigV2 URL's lifetime; we cap it as SigV4's (docs/s3-compatibility.md)."""
    expires = str(int(time.time()) + offset) if isinstance(offset, int) else offset
    fields = assert_error(fetch(_v2_url(env, "public/x", expires)), 403, "AccessDenied")
    assert fields["Message"] == message
    within = fetch(_v2_url(env, "public/x", str(int(time.time()) + 7 * 86400 - 60)))  # the same URL, in range
    assert within.status == 200 and within.body == f"{A}/public/x".encode()
