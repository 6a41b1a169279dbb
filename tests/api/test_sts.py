"""STS end to end (docs/security.md "STS"): boto3's sts, iam and s3 clients against a real server
(two workers, so a token issued by one is opened by the other): AssumeRole and the S3 calls its
credentials may make, session policies that narrow and cannot be escaped, trust policy rules,
duration bounds, GetSessionToken, GetCallerIdentity, expired and tampered tokens (sealed with the
server's real master key), role deletion, and AssumeRoleWithWebIdentity against a local OpenID
Connect provider (tests/oidc.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.api.test_iam_api import eventually
from tests.api.test_iam_e2e import status
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, aws_cli, make_client
from tests.oidc import OidcProvider
from tierstore.crypto import load_master_key, seal_session_token
from tierstore.engine import Session

ACCOUNT = "000000000000"
A = "sts-a"
B = "sts-b"
DENIED = (403, "AccessDenied")


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str | list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def trust(principal: dict[str, Any], action: str = "sts:AssumeRole", **extra: Any) -> str:
    return doc({"Effect": "Allow", "Principal": principal, "Action": action, **extra})


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def role_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


READ_A = allow(["s3:GetObject", "s3:ListBucket"], [f"arn:aws:s3:::{A}", f"arn:aws:s3:::{A}/*"])


class Env:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.s3 = make_client(server.endpoint)
        self.iam = self.client("iam")
        self.sts = self.client("sts")

    def client(self, service: str, keys: tuple[str, ...] = (ACCESS_KEY, SECRET_KEY)) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.server.endpoint,
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            aws_session_token=keys[2] if len(keys) > 2 else None,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )

    def s3_of(self, keys: tuple[str, ...], **cfg: Any) -> Any:
        config = Config(
            signature_version=cfg.pop("signature_version", "s3v4"),
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.server.endpoint,
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            aws_session_token=keys[2] if len(keys) > 2 else None,
            region_name="us-east-1",
            config=config,
        )

    def user(self, policy: str | None = None) -> tuple[str, tuple[str, str]]:
        name = f"u-{uuid.uuid4().hex[:8]}"
        self.iam.create_user(UserName=name)
        if policy is not None:
            self.iam.put_user_policy(UserName=name, PolicyName="main", PolicyDocument=policy)
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        return name, (key["AccessKeyId"], key["SecretAccessKey"])

    def role(self, trust_policy: str, policy: str | None = None, *, max_s: int = 3600) -> str:
        name = f"r-{uuid.uuid4().hex[:8]}"
        self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust_policy, MaxSessionDuration=max_s)
        if policy is not None:
            self.iam.put_role_policy(RoleName=name, PolicyName="main", PolicyDocument=policy)
        return name

    def assume(self, keys: tuple[str, ...], role: str, **kw: Any) -> tuple[str, str, str]:
        creds = self.client("sts", keys).assume_role(RoleArn=role_arn(role), RoleSessionName="job-1", **kw)
        c = creds["Credentials"]
        return c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]


@contextlib.contextmanager
def two_workers(root: Path, buckets: tuple[str, ...], *extra_args: str) -> Iterator[Env]:
    """A two-worker server under ``root`` whose ``buckets`` each hold ``public/x`` and ``other``
    (body: ``BUCKET/KEY``); stopped on exit. Also used by tests/api/test_identity_e2e.py."""
    server = ServerProcess(root / "data", extra_args=["--workers", "2", *extra_args])
    server.start()
    try:
        e = Env(server)
        for bucket in buckets:
            e.s3.create_bucket(Bucket=bucket)
            for key in ("public/x", "other"):
                e.s3.put_object(Bucket=bucket, Key=key, Body=f"{bucket}/{key}".encode())
        yield e
    finally:
        server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = Path(tmp_path_factory.mktemp("sts"))
    with two_workers(root, (A, B), "--audit-log", str(root / "audit.jsonl")) as e:
        yield e


@pytest.fixture(scope="module")
def alice(env: Env) -> tuple[str, tuple[str, str]]:
    """A user with no policy of its own; roles trust her by name."""
    return env.user()


# --- AssumeRole and the S3 calls of its credentials ---------------------------------------------
def test_assume_role_credentials_act_as_the_role(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    name, keys = alice
    role = env.role(trust({"AWS": user_arn(name)}), doc(READ_A))
    out = env.client("sts", keys).assume_role(RoleArn=role_arn(role), RoleSessionName="train-7", DurationSeconds=900)
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert 850 <= (creds["Expiration"].timestamp() - time.time()) <= 905
    role_id = env.iam.get_role(RoleName=role)["Role"]["RoleId"]
    assert out["AssumedRoleUser"] == {
        "AssumedRoleId": f"{role_id}:train-7",
        "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/train-7",
    }
    s3 = env.s3_of((creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]))
    assert s3.get_object(Bucket=A, Key="other")["Body"].read() == f"{A}/other".encode()
    assert status(lambda: s3.list_objects_v2(Bucket=A)) == (200, "")
    assert status(lambda: s3.get_object(Bucket=B, Key="other")) == DENIED
    assert status(lambda: s3.put_object(Bucket=A, Key="new", Body=b"x")) == DENIED
    assert status(lambda: env.s3_of(keys).get_object(Bucket=A, Key="other")) == DENIED  # alice herself cannot
    me = env.client("sts", (creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]))
    ident = me.get_caller_identity()
    assert (ident["Arn"], ident["UserId"], ident["Account"]) == (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/train-7", f"{role_id}:train-7", ACCOUNT
    )


def test_the_audit_log_names_the_role_session_never_the_token(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    role = env.role(trust({"AWS": user_arn(alice[0])}), doc(READ_A))
    creds = env.assume(alice[1], role)
    s3 = env.s3_of(creds)
    s3.get_object(Bucket=A, Key="other")
    assert status(lambda: s3.get_object(Bucket=B, Key="other")) == DENIED
    path = env.server.data_dir.parent / "audit.jsonl"
    session_arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/job-1"

    def lines() -> list[dict[str, object]]:
        found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [d for d in found if d["role_session"] == session_arn]

    assert eventually(lambda: len(lines()) >= 2)
    got = {(d["resource"], d["decision"], d["status"]) for d in lines()}
    assert (f"arn:aws:s3:::{A}/other", "allow", 200) in got
    assert (f"arn:aws:s3:::{B}/other", "implicit_deny", 403) in got
    assert all(d["access_key"] == creds[0] and d["principal_type"] == "role" for d in lines())
    text = path.read_text()
    assert creds[1] not in text and creds[2] not in text  # neither the secret nor the token


def test_presigned_and_sigv2_requests_carry_the_token(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    role = env.role(trust({"AWS": user_arn(alice[0])}), doc(READ_A))
    creds = env.assume(alice[1], role)
    url = env.s3_of(creds).generate_presigned_url("get_object", Params={"Bucket": A, "Key": "other"}, ExpiresIn=60)
    assert "X-Amz-Security-Token=" in url
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == f"{A}/other".encode()
    v2 = env.s3_of(creds, signature_version="s3")
    assert v2.get_object(Bucket=A, Key="other")["Body"].read() == f"{A}/other".encode()
    url = v2.generate_presigned_url("get_object", Params={"Bucket": A, "Key": "other"}, ExpiresIn=60)
    assert "x-amz-security-token=" in url and "AWSAccessKeyId=" in url  # a SigV2 presigned URL
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == f"{A}/other".encode()
    assert status(lambda: v2.get_object(Bucket=B, Key="other")) == DENIED


# --- session policies narrow, and a session cannot escape its policy ----------------------------
def test_session_policy_narrows_and_cannot_be_escaped(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    name, keys = alice
    broad = doc(
        allow("s3:*", [f"arn:aws:s3:::{A}", f"arn:aws:s3:::{A}/*", f"arn:aws:s3:::{B}", f"arn:aws:s3:::{B}/*"]),
        allow(["sts:AssumeRole", "iam:*"]),
    )
    role = env.role(trust({"AWS": [user_arn(name), f"arn:aws:iam::{ACCOUNT}:root"]}), broad)
    narrow = doc(allow("s3:GetObject", f"arn:aws:s3:::{A}/public/*"))
    creds = env.assume(keys, role, Policy=narrow)
    s3 = env.s3_of(creds)
    assert status(lambda: s3.get_object(Bucket=A, Key="public/x")) == (200, "")
    assert status(lambda: s3.get_object(Bucket=A, Key="other")) == DENIED  # the role may; the session not
    assert status(lambda: s3.put_object(Bucket=A, Key="public/new", Body=b"x")) == DENIED
    assert status(lambda: s3.get_object(Bucket=B, Key="public/x")) == DENIED
    # Widening by assuming the (broad) role again: the session policy does not allow sts:AssumeRole.
    sts = env.client("sts", creds)
    assert status(lambda: sts.assume_role(RoleArn=role_arn(role), RoleSessionName="again")) == DENIED
    # Minting long-term keys: the role may (iam:*), the session may not.
    iam = env.client("iam", creds)
    assert status(lambda: iam.create_access_key(UserName=name)) == DENIED
    assert len(env.iam.list_access_keys(UserName=name)["AccessKeyMetadata"]) == 1
    # With sts:AssumeRole in the session policy, role chaining works (and is capped at one hour).
    chain = doc(allow("sts:AssumeRole", role_arn(role)))
    chained = env.client("sts", env.assume(keys, role, Policy=chain))
    assert status(lambda: chained.assume_role(RoleArn=role_arn(role), RoleSessionName="ch", DurationSeconds=3600)) == (
        200, ""
    )
    assert status(
        lambda: chained.assume_role(RoleArn=role_arn(role), RoleSessionName="ch", DurationSeconds=3601)
    ) == (400, "ValidationError")


def test_malformed_session_policy_is_refused(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    role = env.role(trust({"AWS": user_arn(alice[0])}), doc(READ_A))
    sts = env.client("sts", alice[1])
    bad = doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Condition": {"Bogus": {"a": "b"}}})
    for policy in ("{not json", bad):
        assert status(lambda policy=policy: sts.assume_role(
            RoleArn=role_arn(role), RoleSessionName="s1", Policy=policy
        )) == (400, "MalformedPolicyDocument")


# --- trust policies ----------------------------------------------------------------------------
def test_trust_policy_rules(env: Env) -> None:
    plain_name, plain = env.user()  # no identity policy
    allowed_name, allowed = env.user(doc(allow("sts:AssumeRole", f"arn:aws:iam::{ACCOUNT}:role/*")))
    by_account = env.role(trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}), doc(READ_A))
    by_name = env.role(trust({"AWS": user_arn(plain_name)}), doc(READ_A))
    other = env.role(trust({"AWS": user_arn("somebody-else")}), doc(READ_A))

    def assume(keys: tuple[str, str], role: str) -> tuple[int, str]:
        return status(lambda: env.client("sts", keys).assume_role(RoleArn=role_arn(role), RoleSessionName="s1"))

    assert assume(plain, by_name) == (200, "")  # named in the trust policy: no identity policy needed
    assert assume(plain, by_account) == DENIED  # the account is trusted: its identity policy must allow
    assert assume(allowed, by_account) == (200, "")
    assert assume(allowed, other) == DENIED  # identity policy allows, the trust policy does not admit
    assert assume(allowed, "no-such-role") == DENIED  # a missing role is not revealed
    assert assume((ACCESS_KEY, SECRET_KEY), by_account) == DENIED  # the root may not assume roles (AWS)
    assert allowed_name


def test_trust_policy_conditions(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    role = env.role(
        trust({"AWS": user_arn(alice[0])}, Condition={"StringLike": {"aws:UserAgent": "*tierstore-ci*"}}),
        doc(READ_A),
    )
    sts = env.client("sts", alice[1])
    assert status(lambda: sts.assume_role(RoleArn=role_arn(role), RoleSessionName="s1")) == DENIED
    tagged = boto3.client(
        "sts", endpoint_url=env.server.endpoint, aws_access_key_id=alice[1][0], aws_secret_access_key=alice[1][1],
        region_name="us-east-1", config=Config(user_agent_extra="tierstore-ci/1", retries={"max_attempts": 1}),
    )  # fmt: skip
    assert status(lambda: tagged.assume_role(RoleArn=role_arn(role), RoleSessionName="s1")) == (200, "")
    # The STS form's keys: sts:ExternalId (the confused-deputy guard) and sts:RoleSessionName.
    guarded = env.role(
        trust({"AWS": user_arn(alice[0])}, Condition={
            "StringEquals": {"sts:ExternalId": "tenant-42"}, "StringLike": {"sts:RoleSessionName": "ci-*"},
        }),
        doc(READ_A),
    )

    def assume(**kw: str) -> tuple[int, str]:
        return status(lambda: sts.assume_role(RoleArn=role_arn(guarded), **kw))

    assert assume(RoleSessionName="ci-1", ExternalId="tenant-42") == (200, "")
    assert assume(RoleSessionName="ci-1") == DENIED
    assert assume(RoleSessionName="ci-1", ExternalId="tenant-43") == DENIED
    assert assume(RoleSessionName="dev-1", ExternalId="tenant-42") == DENIED


# --- durations ---------------------------------------------------------------------------------
def test_duration_bounds(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    role = env.role(trust({"AWS": user_arn(alice[0])}), doc(READ_A), max_s=7200)
    sts = env.client("sts", alice[1])

    def assume(seconds: int) -> tuple[int, str]:
        return status(lambda: sts.assume_role(RoleArn=role_arn(role), RoleSessionName="s1", DurationSeconds=seconds))

    # botocore checks the lower bound itself; a raw form reaches the server (below).
    assert assume(7200) == (200, "")
    assert assume(7201) == (400, "ValidationError")  # above the role's MaxSessionDuration
    assert status(lambda: sts.get_session_token(DurationSeconds=129_600)) == (200, "")
    assert status(lambda: sts.get_session_token(DurationSeconds=129_601)) == (400, "ValidationError")
    low = Config(parameter_validation=False, retries={"max_attempts": 1})
    raw = boto3.client(
        "sts", endpoint_url=env.server.endpoint, aws_access_key_id=alice[1][0], aws_secret_access_key=alice[1][1],
        region_name="us-east-1", config=low,
    )  # fmt: skip
    assert status(lambda: raw.assume_role(RoleArn=role_arn(role), RoleSessionName="s1", DurationSeconds=899)) == (
        400, "ValidationError"
    )
    assert status(lambda: raw.get_session_token(DurationSeconds=899)) == (400, "ValidationError")
    assert status(lambda: raw.assume_role(RoleArn=role_arn(role), RoleSessionName="x")) == (400, "ValidationError")


# --- GetSessionToken and GetCallerIdentity -------------------------------------------------------
def test_get_session_token_acts_as_the_user_without_iam(env: Env) -> None:
    name, keys = env.user(doc(READ_A, allow(["iam:*", "sts:*"])))
    out = env.client("sts", keys).get_session_token(DurationSeconds=900)["Credentials"]
    creds = (out["AccessKeyId"], out["SecretAccessKey"], out["SessionToken"])
    s3 = env.s3_of(creds)
    assert status(lambda: s3.get_object(Bucket=A, Key="other")) == (200, "")
    assert status(lambda: s3.get_object(Bucket=B, Key="other")) == DENIED
    assert status(lambda: env.client("iam", creds).create_access_key(UserName=name)) == DENIED  # no IAM (AWS)
    assert status(lambda: env.client("iam", creds).list_users()) == DENIED
    assert status(lambda: env.client("sts", creds).get_session_token()) == DENIED  # not from a session
    ident = env.client("sts", creds).get_caller_identity()
    user_id = env.iam.get_user(UserName=name)["User"]["UserId"]
    assert (ident["Arn"], ident["UserId"]) == (user_arn(name), user_id)
    env.iam.update_access_key(UserName=name, AccessKeyId=keys[0], Status="Inactive")  # the session is the user's
    env.iam.delete_user_policy(UserName=name, PolicyName="main")
    deadline = time.monotonic() + 10
    while status(lambda: s3.get_object(Bucket=A, Key="other")) != DENIED and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(lambda: s3.get_object(Bucket=A, Key="other")) == DENIED  # its rights follow the user's


def test_get_caller_identity_of_root_and_user(env: Env) -> None:
    root = env.sts.get_caller_identity()
    assert (root["Arn"], root["UserId"], root["Account"]) == (f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, ACCOUNT)
    name, keys = env.user()  # no policy: GetCallerIdentity needs no permission (AWS)
    me = env.client("sts", keys).get_caller_identity()
    assert me["Arn"] == user_arn(name)
    assert me["UserId"] == env.iam.get_user(UserName=name)["User"]["UserId"]
    root_session = env.sts.get_session_token(DurationSeconds=900)["Credentials"]
    creds = (root_session["AccessKeyId"], root_session["SecretAccessKey"], root_session["SessionToken"])
    assert env.client("sts", creds).get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert status(lambda: env.s3_of(creds).get_object(Bucket=B, Key="other")) == (200, "")
    assert status(lambda: env.client("iam", creds).list_users()) == DENIED  # the root's session: no IAM either
    assert status(lambda: env.client("sts", ("AKIDNOTAKEY000000000", "x")).get_caller_identity()) == (
        403, "InvalidClientTokenId"
    )


# --- expired, tampered and mismatched tokens ------------------------------------------------------
def test_expired_tampered_and_mismatched_tokens(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    role = env.role(trust({"AWS": user_arn(alice[0])}), doc(READ_A))
    role_id = env.iam.get_role(RoleName=role)["Role"]["RoleId"]
    key = load_master_key([env.server.data_dir])  # the server's own key: a real seal, no mock
    now = int(time.time())
    past = Session("ASIAEXPIREDEXPIRED00", "expired-secret-0000000000000000000000000", now - 5, now - 905,
                   "role", role, role_id, "old")  # fmt: skip
    expired = (past.access_key_id, past.secret_key, seal_session_token(key, past.claims_json()))
    assert status(lambda: env.s3_of(expired).get_object(Bucket=A, Key="other")) == (400, "ExpiredToken")
    live = Session("ASIALIVELIVELIVE0000", "live-secret-000000000000000000000000000", now + 900, now,
                   "role", role, role_id, "new")  # fmt: skip
    token = seal_session_token(key, live.claims_json())
    good = (live.access_key_id, live.secret_key, token)
    assert status(lambda: env.s3_of(good).get_object(Bucket=A, Key="other")) == (200, "")  # the forge is valid
    i = len(token) // 2
    tampered = (live.access_key_id, live.secret_key, token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :])
    assert status(lambda: env.s3_of(tampered).get_object(Bucket=A, Key="other")) == (400, "InvalidToken")
    assert status(lambda: env.s3_of((*good[:2], "garbage")).get_object(Bucket=A, Key="other")) == (
        400, "InvalidToken"
    )
    other = env.assume(alice[1], role)
    mismatched = (other[0], other[1], token)  # a valid token, signed with another session's key
    assert status(lambda: env.s3_of(mismatched).get_object(Bucket=A, Key="other")) == (403, "InvalidAccessKeyId")
    wrong_secret = (live.access_key_id, "not-the-secret", token)
    assert status(lambda: env.s3_of(wrong_secret).get_object(Bucket=A, Key="other")) == (403, "SignatureDoesNotMatch")
    log = env.server.log()
    for secret in (token, live.secret_key, other[1], other[2]):
        assert secret not in log


def test_deleting_the_role_ends_its_sessions(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    role = env.role(trust({"AWS": user_arn(alice[0])}), doc(READ_A))
    s3 = env.s3_of(env.assume(alice[1], role))
    assert status(lambda: s3.get_object(Bucket=A, Key="other")) == (200, "")
    env.iam.delete_role_policy(RoleName=role, PolicyName="main")
    env.iam.delete_role(RoleName=role)
    env.role(trust({"AWS": user_arn(alice[0])}), doc(READ_A))  # unrelated churn
    env.iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust({"AWS": user_arn(alice[0])}))
    env.iam.put_role_policy(RoleName=role, PolicyName="main", PolicyDocument=doc(READ_A))  # same name, new role
    deadline = time.monotonic() + 10
    answers = set()
    while time.monotonic() < deadline:  # both workers' caches (1 s) must drop the old role
        answers = {status(lambda: s3.get_object(Bucket=A, Key="other")) for _ in range(4)}
        if answers == {DENIED}:
            break
        time.sleep(0.2)
    assert answers == {DENIED}


# --- AssumeRoleWithWebIdentity ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def idp(env: Env) -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        env.iam.create_open_id_connect_provider(Url=provider.issuer, ClientIDList=["tierstore"], ThumbprintList=[])
        yield provider


def test_web_identity(env: Env, idp: OidcProvider) -> None:
    provider_arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{idp.name}"
    assert provider_arn in [p["Arn"] for p in env.iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]
    role = env.role(
        trust(
            {"Federated": provider_arn},
            "sts:AssumeRoleWithWebIdentity",
            Condition={"StringEquals": {f"{idp.name}:aud": "tierstore", f"{idp.name}:sub": "alice"}},
        ),
        doc(allow("s3:GetObject", f"arn:aws:s3:::{A}/public/*"),
            allow("s3:GetObject", f"arn:aws:s3:::{B}/*", Condition={"StringEquals": {f"{idp.name}:team": "b"}})),
    )  # fmt: skip
    anonymous = boto3.client(
        "sts", endpoint_url=env.server.endpoint, region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )  # fmt: skip

    def assume(token: str) -> Any:
        return anonymous.assume_role_with_web_identity(
            RoleArn=role_arn(role), RoleSessionName="web", WebIdentityToken=token, DurationSeconds=900
        )

    out = assume(idp.token(sub="alice", team="a"))
    assert out["SubjectFromWebIdentityToken"] == "alice"
    assert out["Provider"] == idp.name and out["Audience"] == "tierstore"
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/web"
    c = out["Credentials"]
    s3 = env.s3_of((c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]))
    assert status(lambda: s3.get_object(Bucket=A, Key="public/x")) == (200, "")
    assert status(lambda: s3.get_object(Bucket=A, Key="other")) == DENIED
    assert status(lambda: s3.get_object(Bucket=B, Key="other")) == DENIED  # a claim as a condition key: team a
    c = assume(idp.token(sub="alice", team="b", alg="EdDSA"))["Credentials"]
    s3b = env.s3_of((c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]))
    assert status(lambda: s3b.get_object(Bucket=B, Key="other")) == (200, "")
    assert status(lambda: assume(idp.token(sub="mallory"))) == DENIED  # the trust policy's sub condition

    hs256 = jwt.encode({"iss": idp.issuer, "sub": "alice", "aud": "tierstore", "exp": int(time.time()) + 300},
                       "s" * 32, algorithm="HS256")  # fmt: skip
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token, expected in (
        (idp.token(key=stranger), (400, "InvalidIdentityToken")),  # wrong signature
        (idp.token(aud="another-app"), (400, "InvalidIdentityToken")),  # wrong audience
        (idp.token(iss="http://127.0.0.1:1/nobody"), (400, "InvalidIdentityToken")),  # unknown issuer
        (hs256, (400, "InvalidIdentityToken")),  # algorithm
        (idp.token(exp_in_s=-600), (400, "ExpiredTokenException")),
        (idp.token(nbf_in_s=600), (400, "InvalidIdentityToken")),
    ):
        assert status(lambda token=token: assume(token)) == expected
    assert status(anonymous.get_caller_identity) == (403, "MissingAuthenticationToken")
    assert status(lambda: anonymous.assume_role(RoleArn=role_arn(role), RoleSessionName="s1")) == (
        403, "MissingAuthenticationToken"
    )


def test_aws_cli_get_caller_identity_and_get_session_token(env: Env, alice: tuple[str, tuple[str, str]]) -> None:
    cli = aws_cli()
    environ = {
        **os.environ, "AWS_ACCESS_KEY_ID": alice[1][0], "AWS_SECRET_ACCESS_KEY": alice[1][1],
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }  # fmt: skip
    base = [cli, "--endpoint-url", env.server.endpoint, "--output", "json", "sts"]
    ident = json.loads(subprocess.run([*base, "get-caller-identity"], env=environ, check=True,
                                      capture_output=True, text=True, timeout=60).stdout)  # fmt: skip
    assert ident["Arn"] == user_arn(alice[0]) and ident["Account"] == ACCOUNT
    out = json.loads(subprocess.run([*base, "get-session-token", "--duration-seconds", "900"], env=environ,
                                    check=True, capture_output=True, text=True, timeout=60).stdout)  # fmt: skip
    assert out["Credentials"]["AccessKeyId"].startswith("ASIA")
