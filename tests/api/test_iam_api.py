"""The IAM query API end to end (docs/security.md "The IAM API"): boto3's ``iam`` client, the aws
cli and raw signed forms against a real server. Every action group, pagination, each error code
and status, the query protocol's own refusals, identity management as a policy decision (a
non-admin gets 403 for every action; an admin by policy manages; a service account of an admin
is refused), and permissions boundaries."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, aws_cli, make_client
from tierstore.api._iam_api import ACTIONS
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings

ARN = "arn:aws:iam::000000000000"
S3_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
IAM_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]})
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"{ARN}:root"}, "Action": "sts:AssumeRole"}],
    }
)
FORM = "application/x-www-form-urlencoded; charset=utf-8"
AWS_ENV = {  # the aws cli as the root, with nothing from the environment
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
    "PATH": "/usr/bin:/bin",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def iam_client(server: ServerProcess, keys: tuple[str, str] = (ACCESS_KEY, SECRET_KEY)) -> Any:
    return boto3.client(
        "iam",
        endpoint_url=server.endpoint,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture(scope="module")
def iam(server: ServerProcess) -> Any:
    return iam_client(server)


def error_of(call: Callable[[], Any]) -> tuple[int, str]:
    """(HTTP status, error code) of a call that must fail."""
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"], info.value.response["Error"]["Code"]


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether ``check`` turns true (policy changes reach every worker within about a second)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def raw(
    server: ServerProcess,
    form: dict[str, str],
    *,
    keys: tuple[str, str] | None = (ACCESS_KEY, SECRET_KEY),
    service: str = "iam",
    method: str = "POST",
) -> tuple[int, str]:
    """A hand-made query request (signed with botocore's SigV4 for ``service``, or unsigned)."""
    body = urlencode(form) if method == "POST" else ""
    url = server.endpoint + "/" + ("" if method == "POST" else "?" + urlencode(form))
    req = AWSRequest(method, url, data=body, headers={"Content-Type": FORM} if method == "POST" else {})
    if keys is not None:
        SigV4Auth(Credentials(*keys), service, "us-east-1").add_auth(req)
    return _send(url, body.encode() if method == "POST" else None, method, dict(req.prepare().headers.items()))


def _send(url: str, body: bytes | None, method: str, headers: dict[str, str]) -> tuple[int, str]:
    wire = urllib.request.Request(url, data=body, method=method)
    for k, v in headers.items():
        wire.add_header(k, v)
    try:
        with urllib.request.urlopen(wire) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def code_of(text: str) -> str:
    found = re.search(r"<Code>([^<]*)</Code>", text)
    return found.group(1) if found else ""


def new_user(iam: Any, policy: str | None = None, *, prefix: str = "u") -> tuple[str, tuple[str, str]]:
    """A user with an inline policy (optional) and a key: (name, (access key, secret))."""
    name = _name(prefix)
    iam.create_user(UserName=name)
    if policy is not None:
        iam.put_user_policy(UserName=name, PolicyName="main", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return name, (key["AccessKeyId"], key["SecretAccessKey"])


# --- users ------------------------------------------------------------------------------------
def test_users_create_get_tag_list_delete(iam: Any) -> None:
    name = _name("alice")
    user = iam.create_user(UserName=name, Tags=[{"Key": "team", "Value": "ml"}])["User"]
    assert user["Arn"] == f"{ARN}:user/{name}" and user["UserId"].startswith("AIDA") and user["Path"] == "/"
    got = iam.get_user(UserName=name)["User"]
    assert got["UserId"] == user["UserId"] and got["Tags"] == [{"Key": "team", "Value": "ml"}]
    iam.tag_user(UserName=name, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "cv"}])
    tags = iam.list_user_tags(UserName=name)["Tags"]
    assert tags == [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "cv"}]
    iam.untag_user(UserName=name, TagKeys=["team"])
    assert iam.list_user_tags(UserName=name)["Tags"] == [{"Key": "env", "Value": "prod"}]
    names = [u["UserName"] for p in iam.get_paginator("list_users").paginate() for u in p["Users"]]
    assert name in names
    assert error_of(lambda: iam.create_user(UserName=name)) == (409, "EntityAlreadyExists")
    assert error_of(lambda: iam.create_user(UserName=name.upper())) == (409, "EntityAlreadyExists")
    assert error_of(lambda: iam.create_user(UserName="no spaces")) == (400, "ValidationError")
    iam.delete_user(UserName=name)
    assert error_of(lambda: iam.get_user(UserName=name)) == (404, "NoSuchEntity")
    assert error_of(lambda: iam.delete_user(UserName=name)) == (404, "NoSuchEntity")


def test_get_user_without_a_name_is_the_caller(server: ServerProcess, iam: Any) -> None:
    assert iam.get_user()["User"]["Arn"] == f"{ARN}:root"
    name, keys = new_user(iam, json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:GetUser", "Resource": f"{ARN}:user/${{aws:username}}"}]}))  # fmt: skip
    me = iam_client(server, keys)
    assert eventually(lambda: _allowed(me.get_user))
    assert me.get_user()["User"]["UserName"] == name
    assert error_of(lambda: me.get_user(UserName="someone-else")) == (403, "AccessDenied")


def _allowed(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "AccessDenied":
            raise
        return False
    return True


def test_delete_conflict_while_a_user_has_keys(iam: Any) -> None:
    name, keys = new_user(iam)
    assert error_of(lambda: iam.delete_user(UserName=name)) == (409, "DeleteConflict")
    iam.delete_access_key(UserName=name, AccessKeyId=keys[0])
    iam.delete_user(UserName=name)


# --- access keys --------------------------------------------------------------------------
def test_access_keys_lifecycle_quota_and_ownership(server: ServerProcess, iam: Any) -> None:
    name, keys = new_user(iam, S3_ALL)
    other, other_keys = new_user(iam)
    listed = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"], k["UserName"]) for k in listed] == [(keys[0], "Active", name)]
    assert "SecretAccessKey" not in listed[0]
    s3 = make_client(server.endpoint, access_key=keys[0], secret_key=keys[1])
    assert eventually(lambda: _s3_ok(s3.list_buckets))

    def used() -> bool:
        last = iam.get_access_key_last_used(AccessKeyId=keys[0])
        return "LastUsedDate" in last["AccessKeyLastUsed"]

    assert eventually(used)
    assert iam.get_access_key_last_used(AccessKeyId=keys[0])["UserName"] == name
    second = iam.create_access_key(UserName=name)["AccessKey"]
    assert error_of(lambda: iam.create_access_key(UserName=name)) == (409, "LimitExceeded")
    # A key is reached only through its own user.
    assert error_of(lambda: iam.delete_access_key(UserName=other, AccessKeyId=keys[0])) == (404, "NoSuchEntity")
    assert error_of(lambda: iam.update_access_key(UserName=name, AccessKeyId=other_keys[0], Status="Inactive")) == (
        404,
        "NoSuchEntity",
    )
    iam.update_access_key(UserName=name, AccessKeyId=keys[0], Status="Inactive")
    assert eventually(lambda: not _s3_ok(s3.list_buckets))
    status = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]}
    assert status == {keys[0]: "Inactive", second["AccessKeyId"]: "Active"}
    assert error_of(lambda: iam.update_access_key(UserName=name, AccessKeyId=keys[0], Status="Bogus")) == (
        400,
        "ValidationError",
    )
    iam.delete_access_key(UserName=name, AccessKeyId=keys[0])
    assert error_of(lambda: iam.get_access_key_last_used(AccessKeyId=keys[0])) == (404, "NoSuchEntity")


def _s3_ok(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ClientError:
        return False
    return True


# --- pagination -------------------------------------------------------------------------------
def test_list_calls_paginate_with_marker_and_max_items(iam: Any) -> None:
    prefix = _name("page")
    users = [f"{prefix}-{i}" for i in range(5)]
    groups = [f"{prefix}-g{i}" for i in range(3)]
    for u in users:
        iam.create_user(UserName=u)
    for g in groups:
        iam.create_group(GroupName=g)
    seen: list[str] = []
    pages = 0
    marker: dict[str, str] = {}
    while True:
        page = iam.list_users(MaxItems=2, **marker)
        pages += 1
        assert len(page["Users"]) <= 2
        seen += [u["UserName"] for u in page["Users"]]
        if not page["IsTruncated"]:
            break
        marker = {"Marker": page["Marker"]}
    assert pages >= 3 and len(seen) == len(set(seen)) and set(users) <= set(seen)
    got = [g["GroupName"] for p in iam.get_paginator("list_groups").paginate(PaginationConfig={"PageSize": 1})
           for g in p["Groups"]]  # fmt: skip
    assert set(groups) <= set(got) and len(got) == len(set(got))
    assert error_of(lambda: iam.list_users(MaxItems=1001)) == (400, "ValidationError")


# --- groups -------------------------------------------------------------------------------
def test_groups_and_membership(iam: Any) -> None:
    group, user = _name("grp"), _name("member")
    created = iam.create_group(GroupName=group)["Group"]
    assert created["Arn"] == f"{ARN}:group/{group}" and created["GroupId"].startswith("AGPA")
    iam.create_user(UserName=user)
    iam.add_user_to_group(GroupName=group, UserName=user)
    got = iam.get_group(GroupName=group)
    assert [u["UserName"] for u in got["Users"]] == [user]
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName=user)["Groups"]] == [group]
    assert error_of(lambda: iam.delete_group(GroupName=group)) == (409, "DeleteConflict")
    assert error_of(lambda: iam.add_user_to_group(GroupName=group, UserName="nobody-here")) == (404, "NoSuchEntity")
    iam.remove_user_from_group(GroupName=group, UserName=user)
    assert error_of(lambda: iam.remove_user_from_group(GroupName=group, UserName=user)) == (404, "NoSuchEntity")
    assert iam.get_group(GroupName=group)["Users"] == []
    iam.delete_group(GroupName=group)
    assert error_of(lambda: iam.get_group(GroupName=group)) == (404, "NoSuchEntity")
    assert error_of(lambda: iam.create_group(GroupName=user + "/x")) == (400, "ValidationError")


# --- inline policies ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["User", "Group", "Role"])
def test_inline_policies_of_users_groups_and_roles(iam: Any, kind: str) -> None:
    name = _name(kind.lower())
    {"User": lambda: iam.create_user(UserName=name), "Group": lambda: iam.create_group(GroupName=name),
     "Role": lambda: iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)}[kind]()  # fmt: skip
    snake = kind.lower()
    arg = {f"{kind}Name": name}
    getattr(iam, f"put_{snake}_policy")(**arg, PolicyName="p1", PolicyDocument=S3_ALL)
    got = getattr(iam, f"get_{snake}_policy")(**arg, PolicyName="p1")
    assert got["PolicyDocument"] == json.loads(S3_ALL) and got[f"{kind}Name"] == name  # URL-decoded by botocore
    assert getattr(iam, f"list_{snake}_policies")(**arg)["PolicyNames"] == ["p1"]
    bad = getattr(iam, f"put_{snake}_policy")
    assert error_of(lambda: bad(**arg, PolicyName="p2", PolicyDocument='{"Statement": "nope"}')) == (
        400,
        "MalformedPolicyDocument",
    )
    getattr(iam, f"delete_{snake}_policy")(**arg, PolicyName="p1")
    assert error_of(lambda: getattr(iam, f"get_{snake}_policy")(**arg, PolicyName="p1")) == (404, "NoSuchEntity")
    assert error_of(lambda: getattr(iam, f"list_{snake}_policies")(**{f"{kind}Name": "missing-x"})) == (
        404,
        "NoSuchEntity",
    )


# --- managed policies -----------------------------------------------------------------------
def test_managed_policies_attachments_and_entities(iam: Any) -> None:
    pname, user, group, role = _name("pol"), _name("pu"), _name("pg"), _name("pr")
    policy = iam.create_policy(PolicyName=pname, PolicyDocument=S3_ALL, Description="all of s3")["Policy"]
    arn = policy["Arn"]
    assert arn == f"{ARN}:policy/{pname}" and policy["DefaultVersionId"] == "v1" and policy["AttachmentCount"] == 0
    assert iam.get_policy(PolicyArn=arn)["Policy"]["PolicyId"] == policy["PolicyId"]
    version = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert version["Document"] == json.loads(S3_ALL) and version["IsDefaultVersion"] is True
    assert error_of(lambda: iam.get_policy_version(PolicyArn=arn, VersionId="v2")) == (404, "NoSuchEntity")
    listed = [p["PolicyName"] for pg in iam.get_paginator("list_policies").paginate(Scope="Local")
              for p in pg["Policies"]]  # fmt: skip
    assert pname in listed
    iam.create_user(UserName=user)
    iam.create_group(GroupName=group)
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=TRUST)
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    iam.attach_group_policy(GroupName=group, PolicyArn=arn)
    iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    for kind, name in (("user", user), ("group", group), ("role", role)):
        attached = getattr(iam, f"list_attached_{kind}_policies")(**{f"{kind.capitalize()}Name": name})
        assert attached["AttachedPolicies"] == [{"PolicyName": pname, "PolicyArn": arn}]
    entities = iam.list_entities_for_policy(PolicyArn=arn)
    assert [u["UserName"] for u in entities["PolicyUsers"]] == [user]
    assert [g["GroupName"] for g in entities["PolicyGroups"]] == [group]
    assert [r["RoleName"] for r in entities["PolicyRoles"]] == [role]
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 3
    assert error_of(lambda: iam.delete_policy(PolicyArn=arn)) == (409, "DeleteConflict")
    iam.detach_user_policy(UserName=user, PolicyArn=arn)
    iam.detach_group_policy(GroupName=group, PolicyArn=arn)
    iam.detach_role_policy(RoleName=role, PolicyArn=arn)
    assert error_of(lambda: iam.detach_role_policy(RoleName=role, PolicyArn=arn)) == (404, "NoSuchEntity")
    iam.delete_policy(PolicyArn=arn)
    assert error_of(lambda: iam.get_policy(PolicyArn=arn)) == (404, "NoSuchEntity")
    aws_managed = "arn:aws:iam::aws:policy/AdministratorAccess"
    assert error_of(lambda: iam.attach_user_policy(UserName=user, PolicyArn=aws_managed)) == (404, "NoSuchEntity")
    assert error_of(lambda: iam.create_policy(PolicyName=_name("bad"), PolicyDocument="{")) == (
        400,
        "MalformedPolicyDocument",
    )


# --- roles --------------------------------------------------------------------------------
def test_roles_trust_policy_and_updates(server: ServerProcess, iam: Any) -> None:
    name = _name("role")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST, MaxSessionDuration=7200)["Role"]
    assert role["Arn"] == f"{ARN}:role/{name}" and role["MaxSessionDuration"] == 7200
    assert role["AssumeRolePolicyDocument"] == json.loads(TRUST)
    no_principal = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]})
    assert error_of(lambda: iam.create_role(RoleName=_name("r"), AssumeRolePolicyDocument=no_principal)) == (
        400,
        "MalformedPolicyDocument",
    )
    short = {"Action": "CreateRole", "Version": "2010-05-08", "RoleName": _name("r"),
             "AssumeRolePolicyDocument": TRUST, "MaxSessionDuration": "60"}  # fmt: skip
    status, body = raw(server, short)  # botocore itself refuses a session under 3600 s
    assert (status, code_of(body)) == (400, "ValidationError")
    assert error_of(lambda: iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST)) == (
        409,
        "EntityAlreadyExists",
    )
    federated = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                            "Principal": {"AWS": f"{ARN}:user/someone"}}]})  # fmt: skip
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=federated)
    iam.update_role(RoleName=name, MaxSessionDuration=3600, Description="ci")
    got = iam.get_role(RoleName=name)["Role"]
    assert got["AssumeRolePolicyDocument"] == json.loads(federated)
    assert (got["MaxSessionDuration"], got["Description"]) == (3600, "ci")
    assert name in [r["RoleName"] for p in iam.get_paginator("list_roles").paginate() for r in p["Roles"]]
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=S3_ALL)
    assert error_of(lambda: iam.delete_role(RoleName=name)) == (409, "DeleteConflict")
    iam.delete_role_policy(RoleName=name, PolicyName="p")
    iam.delete_role(RoleName=name)
    assert error_of(lambda: iam.get_role(RoleName=name)) == (404, "NoSuchEntity")


# --- OpenID Connect providers ---------------------------------------------------------------
def test_oidc_providers(iam: Any) -> None:
    host = f"{_name('idp')}.example.com"
    arn = iam.create_open_id_connect_provider(
        Url=f"https://{host}/realm", ClientIDList=["app-1", "app-2"], ThumbprintList=["a" * 40]
    )["OpenIDConnectProviderArn"]
    assert arn == f"{ARN}:oidc-provider/{host}/realm"
    got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)
    assert (got["Url"], got["ClientIDList"], got["ThumbprintList"]) == (f"{host}/realm", ["app-1", "app-2"], ["a" * 40])
    assert arn in [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]
    assert error_of(lambda: iam.create_open_id_connect_provider(Url=f"https://{host}/realm", ThumbprintList=[])) == (
        409,
        "EntityAlreadyExists",
    )
    iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=arn)
    assert error_of(lambda: iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)) == (404, "NoSuchEntity")


# --- the query protocol itself -------------------------------------------------------------
def test_query_protocol_refusals(server: ServerProcess) -> None:
    status, body = raw(server, {"Action": "ListUsers", "Version": "2010-05-08"})
    assert status == 200 and "<ListUsersResponse" in body and "<RequestId>" in body
    status, body = raw(server, {"Action": "ListUsers", "Version": "2010-05-08"}, method="GET")
    assert status == 200 and "<ListUsersResult>" in body
    assert code_of(raw(server, {"Action": "Frobnicate", "Version": "2010-05-08"})[1]) == "InvalidAction"
    assert raw(server, {"Version": "2010-05-08"})[0] == 400
    assert raw(server, {"Action": "ListUsers", "Version": "1999-01-01"})[0] == 400
    status, body = raw(server, {"Action": "ListUsers", "Version": "2010-05-08"}, keys=None)
    assert (status, code_of(body)) == (403, "MissingAuthenticationToken")
    status, body = raw(server, {"Action": "ListUsers", "Version": "2010-05-08"}, service="s3")
    assert (status, code_of(body)) == (403, "SignatureDoesNotMatch")  # signed for S3, not IAM
    assert "scoped to correct service: 'iam'" in body
    status, body = raw(server, {"Action": "ListUsers", "Version": "2010-05-08"}, keys=(ACCESS_KEY, "wrong" * 8))
    assert (status, code_of(body)) == (403, "SignatureDoesNotMatch")
    status, body = raw(server, {"Action": "ListUsers", "Version": "2010-05-08"}, keys=("NOSUCHKEY0000", "x" * 40))
    assert (status, code_of(body)) == (403, "InvalidClientTokenId")
    assert "<Type>Sender</Type>" in body and "x" * 40 not in body


def test_a_signature_covers_the_form(server: ServerProcess) -> None:
    """The form is the payload SigV4 hashes: a body changed after signing is refused."""
    form = urlencode({"Action": "CreateUser", "Version": "2010-05-08", "UserName": _name("sig")})
    req = AWSRequest("POST", server.endpoint + "/", data=form, headers={"Content-Type": FORM})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "iam", "us-east-1").add_auth(req)
    tampered = form.replace("sig-", "evl-").encode()
    status, body = _send(server.endpoint + "/", tampered, "POST", dict(req.prepare().headers.items()))
    assert (status, code_of(body)) == (403, "SignatureDoesNotMatch")


def test_aws_cli_create_and_list_users(server: ServerProcess) -> None:
    name = _name("cli")
    env = AWS_ENV
    base = [aws_cli(), "iam", "--endpoint-url", server.endpoint, "--output", "json"]
    made = subprocess.run(
        [*base, "create-user", "--user-name", name], env=env, capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["User"]["Arn"] == f"{ARN}:user/{name}"
    listed = subprocess.run([*base, "list-users"], env=env, capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    assert name in [u["UserName"] for u in json.loads(listed.stdout)["Users"]]


# --- identity management is a policy decision --------------------------------------------------
_PARAMS = {
    "UserName": "victim",
    "GroupName": "g",
    "RoleName": "r",
    "PolicyName": "p",
    "PolicyArn": f"{ARN}:policy/p",
    "PermissionsBoundary": f"{ARN}:policy/p",
    "PolicyDocument": S3_ALL,
    "AssumeRolePolicyDocument": TRUST,
    "AccessKeyId": ACCESS_KEY,
    "Status": "Inactive",
    "OpenIDConnectProviderArn": f"{ARN}:oidc-provider/idp.example.com",
    "Url": "https://idp.example.com",
    "VersionId": "v1",
    "Tags.member.1.Key": "k",
    "Tags.member.1.Value": "v",
    "TagKeys.member.1": "k",
}


@pytest.fixture(scope="module")
def s3_only(iam: Any) -> tuple[str, tuple[str, str]]:
    return new_user(iam, S3_ALL, prefix="s3only")


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_non_admin_is_refused_every_iam_action(server: ServerProcess, s3_only: Any, action: str) -> None:
    keys = s3_only[1]
    form = {"Action": action, "Version": "2010-05-08", **_PARAMS}
    status, body = raw(server, form, keys=keys)
    assert (status, code_of(body)) == (403, "AccessDenied"), body


def test_an_admin_by_policy_manages_identities(server: ServerProcess, iam: Any) -> None:
    pname = _name("IAMFullAccess")
    arn = iam.create_policy(PolicyName=pname, PolicyDocument=IAM_ALL)["Policy"]["Arn"]
    admin, keys = new_user(iam, prefix="admin")
    iam.attach_user_policy(UserName=admin, PolicyArn=arn)
    as_admin = iam_client(server, keys)
    assert eventually(lambda: _allowed(lambda: as_admin.list_users(MaxItems=1)))
    made = _name("made")
    as_admin.create_user(UserName=made)
    key = as_admin.create_access_key(UserName=made)["AccessKey"]
    as_admin.put_user_policy(UserName=made, PolicyName="s3", PolicyDocument=S3_ALL)
    s3 = make_client(server.endpoint, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    assert eventually(lambda: _s3_ok(s3.list_buckets))
    # Scoped: allowed to create only team-* users.
    scoped_doc = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iam:CreateUser", "Resource": f"{ARN}:user/team-*"}]})  # fmt: skip
    _scoped, scoped_keys = new_user(iam, scoped_doc, prefix="scoped")
    scoped = iam_client(server, scoped_keys)
    team = "team-" + uuid.uuid4().hex[:8]
    assert eventually(lambda: _allowed(lambda: scoped.create_user(UserName=team)))
    assert error_of(lambda: scoped.create_user(UserName=_name("other"))) == (403, "AccessDenied")
    assert error_of(lambda: scoped.delete_user(UserName=team)) == (403, "AccessDenied")


def test_a_service_account_of_an_admin_is_refused(server: ServerProcess, iam: Any) -> None:
    """Regression (a breach in other stores): a service account minting keys for its parent, or
    managing identities, whatever the parent may do."""
    admin, _keys = new_user(iam, IAM_ALL, prefix="sa-parent")
    root_ext = TierstoreClient(resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    sa = root_ext.create_access_key(admin, service=True)
    sa_keys = (sa["access_key_id"], sa["secret_key"])
    as_sa = iam_client(server, sa_keys)
    assert eventually(lambda: _allowed(lambda: as_sa.list_users(MaxItems=1)))  # reads follow the parent's policy
    assert error_of(lambda: as_sa.create_access_key(UserName=admin)) == (403, "AccessDenied")
    assert error_of(as_sa.create_access_key) == (403, "AccessDenied")
    assert error_of(lambda: as_sa.create_user(UserName=_name("sa-made"))) == (403, "AccessDenied")
    assert error_of(lambda: as_sa.attach_user_policy(UserName=admin, PolicyArn=f"{ARN}:policy/x")) == (
        403,
        "AccessDenied",
    )
    sa_ext = TierstoreClient(resolve_settings(server.endpoint, access_key=sa_keys[0], secret_key=sa_keys[1]))
    with pytest.raises(TierstoreClientError) as info:
        sa_ext.create_access_key(admin)
    assert info.value.status == 403
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName=admin)["AccessKeyMetadata"]] == [_keys[0]]


def test_admin_endpoints_are_decided_by_policy(server: ServerProcess, iam: Any) -> None:
    """The JSON admin extension: each endpoint needs its iam: action, not the root key."""
    lister_doc = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["iam:ListUsers", "iam:GetUser", "iam:ListAccessKeys",
                                       "iam:ListGroupsForUser"], "Resource": "*"}]})  # fmt: skip
    lister, keys = new_user(iam, lister_doc, prefix="lister")
    ext = TierstoreClient(resolve_settings(server.endpoint, access_key=keys[0], secret_key=keys[1]))
    assert eventually(lambda: _ext_ok(ext.list_users))
    assert ext.user_info(lister)["name"] == lister
    with pytest.raises(TierstoreClientError) as info:
        ext.create_user(_name("nope"))
    assert info.value.status == 403
    with pytest.raises(TierstoreClientError) as info:
        ext.set_access_key_status(keys[0], active=False)
    assert info.value.status == 403
    with pytest.raises(TierstoreClientError) as info:  # an unknown key: the same refusal
        ext.delete_access_key("TKNOSUCHKEY000000000")
    assert info.value.status == 403
    _plain, plain_keys = new_user(iam, S3_ALL, prefix="plain")
    plain = TierstoreClient(resolve_settings(server.endpoint, access_key=plain_keys[0], secret_key=plain_keys[1]))
    with pytest.raises(TierstoreClientError) as info:
        plain.list_users()
    assert info.value.status == 403


def _ext_ok(call: Callable[[], Any]) -> bool:
    try:
        call()
    except TierstoreClientError as exc:
        if exc.status != 403:
            raise
        return False
    return True


# --- permissions boundaries ---------------------------------------------------------------
def test_a_boundary_caps_a_user_whose_policy_allows_more(server: ServerProcess, iam: Any, bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    read_only = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]})  # fmt: skip
    boundary = iam.create_policy(PolicyName=_name("boundary"), PolicyDocument=read_only)["Policy"]["Arn"]
    name, keys = new_user(iam, S3_ALL, prefix="bounded")
    user_s3 = make_client(server.endpoint, access_key=keys[0], secret_key=keys[1])
    assert eventually(lambda: _s3_ok(lambda: user_s3.put_object(Bucket=bucket, Key="before", Body=b"x")))
    iam.put_user_permissions_boundary(UserName=name, PermissionsBoundary=boundary)
    assert iam.get_user(UserName=name)["User"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    assert eventually(lambda: not _s3_ok(lambda: user_s3.put_object(Bucket=bucket, Key="after", Body=b"x")))
    assert user_s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"  # allowed by both
    assert error_of(lambda: iam.delete_policy(PolicyArn=boundary)) == (409, "DeleteConflict")
    iam.delete_user_permissions_boundary(UserName=name)
    assert "PermissionsBoundary" not in iam.get_user(UserName=name)["User"]
    assert eventually(lambda: _s3_ok(lambda: user_s3.put_object(Bucket=bucket, Key="again", Body=b"x")))
    assert error_of(lambda: iam.delete_user_permissions_boundary(UserName=name)) == (404, "NoSuchEntity")
    assert error_of(lambda: iam.put_user_permissions_boundary(UserName=name, PermissionsBoundary=f"{ARN}:policy/none")
                    ) == (404, "NoSuchEntity")  # fmt: skip


def test_role_permissions_boundary_is_kept(iam: Any) -> None:
    boundary = iam.create_policy(PolicyName=_name("rb"), PolicyDocument=S3_ALL)["Policy"]["Arn"]
    name = _name("brole")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST, PermissionsBoundary=boundary)
    assert iam.get_role(RoleName=name)["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    iam.delete_role_permissions_boundary(RoleName=name)
    assert "PermissionsBoundary" not in iam.get_role(RoleName=name)["Role"]
    iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary=boundary)
    assert iam.get_role(RoleName=name)["Role"]["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary


def test_responses_have_the_result_wrapper_botocore_expects() -> None:
    """An action answers ``<ActionResult>`` (its handler returns ``str``, not ``None``) exactly
    when botocore's model has a result wrapper: botocore cannot parse a response without it
    (UpdateRole's is empty) and AWS sends none for the others."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("iam")
    for name, action in ACTIONS.items():
        output = model.operation_model(name).output_shape
        wrapped = output is not None and bool(output.serialization.get("resultWrapper"))
        returns = action.handler.__annotations__["return"]
        assert returns == ("str" if wrapped else "None"), name


def test_security_doc_iam_walkthrough_runs(fresh_server: ServerProcess) -> None:
    """docs/security.md "The IAM API": the aws cli walkthrough runs as written (endpoint
    aside), and the user it makes an admin then manages identities."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = text[text.index("## The IAM API") :]
    block = re.search(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert block is not None
    commands = block.group(1).replace("\\\n", " ").splitlines()
    assert len(commands) == 6
    env = AWS_ENV
    out = ""
    for line in commands:
        argv = shlex.split(line.split("   #")[0].replace("http://127.0.0.1:9000", fresh_server.endpoint))
        assert argv[0] == "aws"
        done = subprocess.run([aws_cli(), *argv[1:]], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (line, done.stderr)
        out = done.stdout
    key = json.loads(out)["AccessKey"]
    carol = iam_client(fresh_server, (key["AccessKeyId"], key["SecretAccessKey"]))
    assert eventually(lambda: _allowed(lambda: carol.create_user(UserName="dave")))
    assert carol.get_user(UserName="dave")["User"]["Arn"] == f"{ARN}:user/dave"


def test_bad_forms_are_clear_errors(server: ServerProcess) -> None:
    """Bad input: a form too large, a parameter twice, a body that is not UTF-8, a missing
    parameter: each a 400 with a clear message, and nothing is created."""
    name = _name("bad")
    big = {"Action": "CreateUser", "Version": "2010-05-08", "UserName": name, "Pad": "x" * (300 * 1024)}
    status, body = raw(server, big)
    assert (status, code_of(body)) == (400, "ValidationError") and "larger than" in body
    twice = f"Action=CreateUser&Version=2010-05-08&UserName={name}&UserName=other"
    status, body = _raw_body(server, twice.encode())
    assert (status, code_of(body)) == (400, "ValidationError") and "more than once" in body
    status, body = _raw_body(server, b"Action=CreateUser&Version=2010-05-08&UserName=%ff%fe")
    assert (status, code_of(body)) == (400, "ValidationError")
    status, body = raw(server, {"Action": "CreateUser", "Version": "2010-05-08"})
    assert (status, code_of(body)) == (400, "ValidationError") and "UserName" in body
    assert raw(server, {"Action": "GetUser", "Version": "2010-05-08", "UserName": name})[0] == 404


def _raw_body(server: ServerProcess, body: bytes) -> tuple[int, str]:
    """A form sent as these exact bytes, signed by botocore for IAM."""
    req = AWSRequest("POST", server.endpoint + "/", data=body, headers={"Content-Type": FORM})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "iam", "us-east-1").add_auth(req)
    return _send(server.endpoint + "/", body, "POST", dict(req.prepare().headers.items()))


def test_the_access_log_names_iam_actions_and_never_a_secret(server: ServerProcess, iam: Any) -> None:
    name = _name("logged")
    iam.create_user(UserName=name)
    secret = iam.create_access_key(UserName=name)["AccessKey"]["SecretAccessKey"]

    def logged() -> bool:
        return '"api": "iam:CreateAccessKey"' in server.log()

    assert eventually(logged)
    assert secret not in server.log()


def test_admin_endpoints_without_an_action_need_tierstore_admin(server: ServerProcess, iam: Any) -> None:
    """A method or path no admin endpoint answers is refused (405) for the root, 403 for a
    user without tierstore:Admin: never a 500, never a hint."""

    root = TierstoreClient(resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    with pytest.raises(TierstoreClientError) as info:
        root._send("POST", "/_tierstore/admin/keys/TKSOMEKEY", {})
    assert (info.value.status, info.value.code) == (405, "MethodNotAllowed")
    _user, keys = new_user(iam, IAM_ALL, prefix="noadmin")
    user = TierstoreClient(resolve_settings(server.endpoint, access_key=keys[0], secret_key=keys[1]))
    assert eventually(lambda: _ext_ok(user.list_users))
    with pytest.raises(TierstoreClientError) as info:
        user._send("POST", "/_tierstore/admin/keys/TKSOMEKEY", {})
    assert info.value.status == 403
