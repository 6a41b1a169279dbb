"""Bucket policies, anonymous access and Block Public Access end to end (docs/security.md,
"Bucket policies, anonymous access and Block Public Access"): the root makes users through the
admin extension; boto3 signs as them, raw HTTP sends unsigned (anonymous) requests, against a
real server. One worker for the module (a policy change is seen at once by the worker that made
it); the ~1 s propagation between workers has its own two-worker server."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from tests.api.test_iam_e2e import DENIED, status
from tests.api.test_iam_e2e import Env as IamEnv
from tests.conftest import ServerProcess, make_client
from tests.s3http import Resp, send, signed_request
from tests.test_clients import Aws
from tierstore import errors as e
from tierstore import iam
from tierstore.api._bucket_policy import is_public, validate_bucket_policy

ACCOUNT = "000000000000"
A, B, P, R = "bp-a", "bp-b", "bp-public", "bp-root"
OK = (200, "")


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def stmt(effect: str, principal: Any, action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": effect, "Principal": principal, "Action": action, "Resource": resource, **extra}


class Env(IamEnv):
    """test_iam_e2e's root-made users, plus a boto3 client per user and unsigned raw HTTP."""

    def client(self, name: str, policy: str | None = None) -> Any:
        """A new user (with an inline identity policy, if given) and a boto3 client signing as it."""
        return self.s3_of(self.user(name, policy))

    def anon(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> Resp:
        return send(self.server.port, method, path, {"Host": f"127.0.0.1:{self.server.port}", **(headers or {})}, body)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = Path(tmp_path_factory.mktemp("bpol")) / "data"
    server = ServerProcess(data, extra_args=["--workers", "1"])
    server.start()
    try:
        env = Env(server)
        for bucket in (A, B, P, R):
            env.s3.create_bucket(Bucket=bucket)
            for key in ("public/x", "uploads/seed", "secret/s", "other"):
                env.s3.put_object(Bucket=bucket, Key=key, Body=f"{bucket}/{key}".encode())
        yield env
    finally:
        server.stop()


def anon_status(resp: Resp) -> tuple[int, str]:
    code = resp.error()["Code"] if resp.status >= 300 and resp.body else ""
    return resp.status, code


# --- the API through boto3 and the aws cli ------------------------------------------------------


def test_put_get_delete_policy_and_status(env: Env) -> None:
    s3 = env.s3
    assert status(lambda: s3.get_bucket_policy(Bucket=B)) == (404, "NoSuchBucketPolicy")
    assert status(lambda: s3.get_bucket_policy_status(Bucket=B)) == (404, "NoSuchBucketPolicy")
    text = doc(stmt("Allow", {"AWS": [user_arn("nobody-yet")]}, "s3:GetObject", f"arn:aws:s3:::{B}/*"))
    assert status(lambda: s3.put_bucket_policy(Bucket=B, Policy=text)) == (204, "")
    assert s3.get_bucket_policy(Bucket=B)["Policy"] == text  # as sent
    assert s3.get_bucket_policy_status(Bucket=B)["PolicyStatus"] == {"IsPublic": False}
    public = doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{B}/public/*"))
    s3.put_bucket_policy(Bucket=B, Policy=public)
    assert s3.get_bucket_policy_status(Bucket=B)["PolicyStatus"] == {"IsPublic": True}
    assert status(lambda: s3.delete_bucket_policy(Bucket=B)) == (204, "")
    assert status(lambda: s3.get_bucket_policy(Bucket=B)) == (404, "NoSuchBucketPolicy")
    assert status(lambda: s3.delete_bucket_policy(Bucket=B)) == (204, "")  # none: fine, as AWS
    assert status(lambda: s3.get_bucket_policy(Bucket="bp-no-such-bucket")) == (404, "NoSuchBucket")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{B}/*", Condition={"StringEquals": {"aws:Nope": "x"}})),
         "aws:Nope"),
        (doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{B}/*", Condition={"StringSortOf": {"s3:prefix": "x"}})),
         "StringSortOf"),
        (doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{A}/*")), "Policy has invalid resource"),
        (doc(stmt("Allow", "*", "s3:GetObject", "*")), "Policy has invalid resource"),
        (doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{B}x/*")), "Policy has invalid resource"),
        (doc(stmt("Allow", "*", "iam:CreateUser", f"arn:aws:s3:::{B}")), "Policy has invalid action"),
        (doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{B}/*"}), "Principal"),
        ("not json", ""),
    ],
)
def test_malformed_policies_are_refused_and_nothing_is_stored(env: Env, document: str, message: str) -> None:
    s3 = env.s3
    keep = doc(stmt("Allow", {"AWS": user_arn("keep")}, "s3:GetObject", f"arn:aws:s3:::{B}/*"))
    s3.put_bucket_policy(Bucket=B, Policy=keep)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_policy(Bucket=B, Policy=document)
    err = exc.value.response
    assert (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]) == (400, "MalformedPolicy")
    assert message in err["Error"]["Message"]
    assert s3.get_bucket_policy(Bucket=B)["Policy"] == keep  # the old one stays
    s3.delete_bucket_policy(Bucket=B)


def test_aws_cli_put_bucket_policy(env: Env, tmp_path: Path) -> None:
    policy = doc(stmt("Allow", {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "s3:ListBucket", f"arn:aws:s3:::{B}"))
    (tmp_path / "p.json").write_text(policy)
    cli = Aws(env.server, tmp_path / "home")

    def aws(*args: str) -> subprocess.CompletedProcess[str]:
        return cli.run("s3api", *args, "--bucket", B, check=False)

    out = aws("put-bucket-policy", "--policy", f"file://{tmp_path / 'p.json'}")
    assert out.returncode == 0, out.stderr
    out = aws("get-bucket-policy")
    assert out.returncode == 0, out.stderr
    assert json.loads(json.loads(out.stdout)["Policy"]) == json.loads(policy)
    out = aws("delete-bucket-policy")
    assert out.returncode == 0, out.stderr
    assert status(lambda: env.s3.get_bucket_policy(Bucket=B)) == (404, "NoSuchBucketPolicy")


# --- evaluation: users x actions x buckets ------------------------------------------------------


def test_access_matrix(env: Env) -> None:
    """Bucket A's policy grants reader read, writer writes under uploads/, lister a listing of
    public/ only, ipuser reads from 10.0.0.0/8 only (we come from 127.0.0.1); it denies boss
    secret/ although boss's own policy allows s3:*; on B a NotPrincipal Deny leaves only writer
    able to put. No identity policy except boss's and writer's (B only)."""
    everything = doc({"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    reader, lister, ipuser, nobody = (env.client(n) for n in ("reader", "lister", "ipuser", "nobody"))
    boss = env.client("boss", everything)
    writer = env.client("writer", doc({"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{B}/*"}))
    a, b = f"arn:aws:s3:::{A}", f"arn:aws:s3:::{B}"
    env.s3.put_bucket_policy(Bucket=A, Policy=doc(
        stmt("Allow", {"AWS": user_arn("reader")}, ["s3:GetObject", "s3:ListBucket"], [a, f"{a}/*"]),
        stmt("Allow", {"AWS": [user_arn("writer")]}, "s3:PutObject", f"{a}/uploads/*"),
        stmt("Allow", {"AWS": user_arn("lister")}, "s3:ListBucket", a,
             Condition={"StringLike": {"s3:prefix": "public/*"}}),
        stmt("Allow", {"AWS": user_arn("ipuser")}, "s3:GetObject", f"{a}/*",
             Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
        stmt("Allow", {"AWS": user_arn("ipuser")}, "s3:GetObject", f"{a}/public/*",
             Condition={"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}),
        stmt("Deny", {"AWS": user_arn("boss")}, "s3:*", f"{a}/secret/*"),
    ))  # fmt: skip
    env.s3.put_bucket_policy(Bucket=B, Policy=doc(
        {"Effect": "Deny", "NotPrincipal": {"AWS": [user_arn("writer"), f"arn:aws:iam::{ACCOUNT}:root"]},
         "Action": "s3:PutObject", "Resource": f"{b}/*"},
    ))  # fmt: skip
    try:
        matrix: list[tuple[str, Callable[[], Any], tuple[int, str]]] = [
            ("reader get A", lambda: reader.get_object(Bucket=A, Key="other"), OK),
            ("reader list A", lambda: reader.list_objects_v2(Bucket=A), OK),
            ("reader put A", lambda: reader.put_object(Bucket=A, Key="uploads/r", Body=b"r"), DENIED),
            ("reader get B", lambda: reader.get_object(Bucket=B, Key="other"), DENIED),
            ("reader delete A", lambda: reader.delete_object(Bucket=A, Key="other"), DENIED),
            ("reader list buckets", reader.list_buckets, DENIED),
            ("writer put A uploads/", lambda: writer.put_object(Bucket=A, Key="uploads/w", Body=b"w"), OK),
            ("writer put A elsewhere", lambda: writer.put_object(Bucket=A, Key="w", Body=b"w"), DENIED),
            ("writer get A uploads/", lambda: writer.get_object(Bucket=A, Key="uploads/seed"), DENIED),
            ("lister list public/", lambda: lister.list_objects_v2(Bucket=A, Prefix="public/"), OK),
            ("lister list all", lambda: lister.list_objects_v2(Bucket=A), DENIED),
            ("lister list other/", lambda: lister.list_objects_v2(Bucket=A, Prefix="other"), DENIED),
            ("ipuser get other (10/8 only)", lambda: ipuser.get_object(Bucket=A, Key="other"), DENIED),
            ("ipuser get public/ (127/8)", lambda: ipuser.get_object(Bucket=A, Key="public/x"), OK),
            ("boss get secret/ (Deny wins)", lambda: boss.get_object(Bucket=A, Key="secret/s"), DENIED),
            ("boss get other", lambda: boss.get_object(Bucket=A, Key="other"), OK),
            ("boss put B (NotPrincipal Deny)", lambda: boss.put_object(Bucket=B, Key="boss", Body=b"x"), DENIED),
            ("boss get B", lambda: boss.get_object(Bucket=B, Key="other"), OK),
            ("writer put B", lambda: writer.put_object(Bucket=B, Key="writer", Body=b"x"), OK),
            ("nobody get A", lambda: nobody.get_object(Bucket=A, Key="other"), DENIED),
            ("nobody list A", lambda: nobody.list_objects_v2(Bucket=A), DENIED),
            ("root get A secret/", lambda: env.s3.get_object(Bucket=A, Key="secret/s"), OK),
            ("root put B (NotPrincipal names the root)", lambda: env.s3.put_object(Bucket=B, Key="r", Body=b"x"), OK),
        ]
        got = {name: status(call) for name, call, _ in matrix}
        assert got == {name: want for name, _, want in matrix}
        assert env.s3.get_object(Bucket=A, Key="uploads/w")["Body"].read() == b"w"
        with pytest.raises(ClientError):
            env.s3.head_object(Bucket=A, Key="w")  # the denied write stored nothing
        # A copy needs s3:GetObject on the source bucket too: reader may read A but not write B.
        assert status(lambda: writer.copy_object(Bucket=B, Key="c", CopySource={"Bucket": A, "Key": "other"})) == DENIED
    finally:
        env.s3.delete_bucket_policy(Bucket=A)
        env.s3.delete_bucket_policy(Bucket=B)
    assert status(lambda: reader.get_object(Bucket=A, Key="other")) == DENIED  # the grant went with the policy


def test_root_is_not_restricted_by_a_bucket_policy(env: Env) -> None:
    deny_all = doc(stmt("Deny", "*", "s3:*", [f"arn:aws:s3:::{R}", f"arn:aws:s3:::{R}/*"]))
    env.s3.put_bucket_policy(Bucket=R, Policy=deny_all)
    try:
        assert env.s3.get_object(Bucket=R, Key="other")["Body"].read() == f"{R}/other".encode()
        boss = env.client("boss-r", doc({"Effect": "Allow", "Action": "s3:*", "Resource": "*"}))
        assert status(lambda: boss.get_object(Bucket=R, Key="other")) == DENIED
    finally:
        env.s3.delete_bucket_policy(Bucket=R)


# --- anonymous ----------------------------------------------------------------------------------


def test_public_read_by_policy(env: Env) -> None:
    env.s3.put_bucket_policy(Bucket=P, Policy=doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{P}/public/*")))
    try:
        got = env.anon("GET", f"/{P}/public/x")
        assert (got.status, got.body) == (200, f"{P}/public/x".encode())
        head = env.anon("HEAD", f"/{P}/public/x")
        assert (head.status, head.headers["content-length"]) == (200, str(len(got.body)))
        for method, path, body in (
            ("GET", f"/{P}/other", None),  # outside public/
            ("PUT", f"/{P}/public/new", b"anonymous data"),
            ("DELETE", f"/{P}/public/x", None),
            ("GET", f"/{P}", None),  # ListObjects
            ("GET", f"/{P}?list-type=2", None),
            ("GET", f"/{P}?policy", None),
            ("PUT", f"/{P}?policy", doc(stmt("Allow", "*", "s3:*", f"arn:aws:s3:::{P}/*")).encode()),
            ("GET", f"/{A}/public/x", None),  # another bucket
            ("GET", "/", None),  # ListBuckets
            ("GET", "/_tierstore/admin/info", None),
            ("GET", "/_tierstore/datasets", None),
            ("POST", "/_tierstore/batch", b"{}"),
        ):
            assert anon_status(env.anon(method, path, body=body)) == DENIED, (method, path)
        assert env.s3.get_object(Bucket=P, Key="public/x")["Body"].read() == f"{P}/public/x".encode()
        assert status(lambda: env.s3.head_object(Bucket=P, Key="public/new")) == (404, "404")
        assert "Principal" in env.s3.get_bucket_policy(Bucket=P)["Policy"]
        # Through boto3 without credentials (botocore's UNSIGNED) too.
        unsigned = make_client(env.server.endpoint, signature_version=UNSIGNED)
        assert unsigned.get_object(Bucket=P, Key="public/x")["Body"].read() == f"{P}/public/x".encode()
        assert status(lambda: unsigned.list_objects_v2(Bucket=P)) == DENIED
    finally:
        env.s3.delete_bucket_policy(Bucket=P)
    assert anon_status(env.anon("GET", f"/{P}/public/x")) == DENIED


def test_anonymous_write_by_policy(env: Env) -> None:
    """A drop box: anyone may put under drop/, nobody anonymous may read, list or delete there."""
    env.s3.put_bucket_policy(Bucket=P, Policy=doc(stmt("Allow", "*", "s3:PutObject", f"arn:aws:s3:::{P}/drop/*")))
    try:
        assert anon_status(env.anon("PUT", f"/{P}/drop/a", body=b"dropped")) == OK
        assert env.s3.get_object(Bucket=P, Key="drop/a")["Body"].read() == b"dropped"
        for method in ("GET", "DELETE"):
            assert anon_status(env.anon(method, f"/{P}/drop/a")) == DENIED, method
        assert anon_status(env.anon("PUT", f"/{P}/elsewhere", body=b"x")) == DENIED
        assert status(lambda: env.s3.head_object(Bucket=P, Key="elsewhere")) == (404, "404")
    finally:
        env.s3.delete_bucket_policy(Bucket=P)


def test_a_missing_key_is_404_only_for_callers_who_may_list(env: Env) -> None:
    """AWS: reading a key that does not exist is 404 NoSuchKey for a caller allowed
    s3:ListBucket, 403 AccessDenied for one allowed only s3:GetObject (no existence oracle)."""
    reader = env.client("getter", doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{P}/*"}))
    read_only = stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{P}/*")
    env.s3.put_bucket_policy(Bucket=P, Policy=doc(read_only))
    try:
        for method in ("GET", "HEAD"):
            assert env.anon(method, f"/{P}/public/x").status == 200
            assert env.anon(method, f"/{P}/public/missing").status == 403, method
        assert status(lambda: reader.get_object(Bucket=P, Key="public/missing")) == DENIED
        assert status(lambda: reader.head_object(Bucket=P, Key="public/missing")) == (403, "403")
        listing = stmt("Allow", "*", "s3:ListBucket", f"arn:aws:s3:::{P}")
        env.s3.put_bucket_policy(Bucket=P, Policy=doc(read_only, listing))
        assert anon_status(env.anon("GET", f"/{P}/public/missing")) == (404, "NoSuchKey")
        assert env.anon("HEAD", f"/{P}/public/missing").status == 404
        assert status(lambda: reader.get_object(Bucket=P, Key="public/missing")) == (404, "NoSuchKey")
        assert status(lambda: env.s3.get_object(Bucket=P, Key="public/missing")) == (404, "NoSuchKey")  # the root
    finally:
        env.s3.delete_bucket_policy(Bucket=P)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_anonymous_conditional_requests_leak_nothing(env: Env, method: str) -> None:
    """Without a grant, an anonymous GET/HEAD answers the same 403 for a key that exists and one
    that does not, whatever its If-Match / If-None-Match (the right or a wrong ETag)."""
    etag = env.s3.head_object(Bucket=A, Key="other")["ETag"]
    answers = set()
    for key in ("other", "missing"):
        for headers in ({}, {"If-Match": etag}, {"If-Match": '"0"'}, {"If-None-Match": etag}, {"If-None-Match": "*"}):
            r = env.anon(method, f"/{A}/{key}", headers)
            fields = r.error() if r.body else {}
            answers.add((r.status, fields.get("Code"), fields.get("Message"), r.headers.get("etag")))
    want = (403, None, None, None) if method == "HEAD" else (403, "AccessDenied", "Access Denied", None)
    assert answers == {want}


# --- Block Public Access ------------------------------------------------------------------------


def test_block_public_policy(env: Env) -> None:
    s3 = env.s3
    assert status(lambda: s3.get_public_access_block(Bucket=B)) == (404, "NoSuchPublicAccessBlockConfiguration")
    s3.put_public_access_block(Bucket=B, PublicAccessBlockConfiguration={"BlockPublicPolicy": True})
    try:
        assert s3.get_public_access_block(Bucket=B)["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": False,
            "IgnorePublicAcls": False,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": False,
        }
        public = doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{B}/*"))
        assert status(lambda: s3.put_bucket_policy(Bucket=B, Policy=public)) == DENIED
        assert status(lambda: s3.get_bucket_policy(Bucket=B)) == (404, "NoSuchBucketPolicy")
        fixed = doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{B}/*",
                         Condition={"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}))  # fmt: skip
        assert status(lambda: s3.put_bucket_policy(Bucket=B, Policy=fixed)) == (204, "")  # not public
        assert anon_status(env.anon("GET", f"/{B}/other")) == OK  # from 127.0.0.1
    finally:
        s3.delete_bucket_policy(Bucket=B)
        assert status(lambda: s3.delete_public_access_block(Bucket=B)) == (204, "")
    assert status(lambda: s3.get_public_access_block(Bucket=B)) == (404, "NoSuchPublicAccessBlockConfiguration")
    s3.put_bucket_policy(Bucket=B, Policy=public)  # unblocked
    s3.delete_bucket_policy(Bucket=B)


def test_restrict_public_buckets(env: Env) -> None:
    s3 = env.s3
    reader = env.client("reader-p")
    s3.put_bucket_policy(Bucket=P, Policy=doc(
        stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{P}/public/*"),
        stmt("Allow", {"AWS": user_arn("reader-p")}, "s3:GetObject", f"arn:aws:s3:::{P}/*"),
    ))  # fmt: skip
    try:
        assert anon_status(env.anon("GET", f"/{P}/public/x")) == OK
        s3.put_public_access_block(Bucket=P, PublicAccessBlockConfiguration={"RestrictPublicBuckets": True})
        assert anon_status(env.anon("GET", f"/{P}/public/x")) == DENIED
        assert anon_status(env.anon("HEAD", f"/{P}/public/x"))[0] == 403
        assert status(lambda: reader.get_object(Bucket=P, Key="other")) == OK  # the account's users still
        s3.delete_public_access_block(Bucket=P)
        assert anon_status(env.anon("GET", f"/{P}/public/x")) == OK
    finally:
        s3.delete_bucket_policy(Bucket=P)


def test_bad_bodies(env: Env) -> None:
    """A PublicAccessBlock flag that is not a boolean: MalformedXML; a policy whose Content-MD5
    does not match: BadDigest. Nothing stored either way."""
    policy = doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{B}/*")).encode()
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = signed_request(env.server, "PUT", f"/{B}", policy, query=[("policy", "")], headers={"content-md5": wrong_md5})
    assert anon_status(r) == (400, "BadDigest")
    assert status(lambda: env.s3.get_bucket_policy(Bucket=B)) == (404, "NoSuchBucketPolicy")
    body = (
        b'<PublicAccessBlockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<BlockPublicPolicy>maybe</BlockPublicPolicy></PublicAccessBlockConfiguration>"
    )
    r = signed_request(env.server, "PUT", f"/{B}", body, query=[("publicAccessBlock", "")])
    assert anon_status(r) == (400, "MalformedXML")
    assert status(lambda: env.s3.get_public_access_block(Bucket=B)) == (404, "NoSuchPublicAccessBlockConfiguration")


# --- "public", as AWS defines it (pure) ---------------------------------------------------------

_OBJ = f"arn:aws:s3:::{P}/*"


@pytest.mark.parametrize(
    ("statement", "public"),
    [
        (stmt("Allow", "*", "s3:GetObject", _OBJ), True),
        (stmt("Allow", {"AWS": "*"}, "s3:GetObject", _OBJ), True),
        (stmt("Allow", {"AWS": ["*", user_arn("u")]}, "s3:GetObject", _OBJ), True),
        (stmt("Allow", {"AWS": user_arn("u")}, "s3:*", _OBJ), False),
        (stmt("Allow", {"AWS": ACCOUNT}, "s3:*", _OBJ), False),
        (stmt("Deny", "*", "s3:*", _OBJ), False),
        ({"Effect": "Allow", "NotPrincipal": {"AWS": user_arn("u")}, "Action": "s3:GetObject", "Resource": _OBJ}, True),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}), False),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}), True),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"IpAddress": {"aws:SourceIp": "2001:db8::/48"}}), False),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}}), True),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"StringEquals": {"aws:SourceVpc": "vpc-1"}}), False),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1"}}),
         True),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"StringEquals": {"aws:PrincipalAccount": ACCOUNT}}),
         False),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*"}}),
         True),
        (stmt("Allow", "*", "s3:GetObject", _OBJ, Condition={"StringLike": {"s3:prefix": "public/"}}), True),
    ],
)
def test_is_public(statement: dict[str, Any], public: bool) -> None:
    policy = validate_bucket_policy(doc(statement), P)
    assert is_public(policy) is public
    # One public statement among fixed ones makes the policy public.
    mixed = doc(stmt("Allow", {"AWS": user_arn("u")}, "s3:*", _OBJ), statement)
    assert is_public(validate_bucket_policy(mixed, P)) is public


def test_validate_bucket_policy_keeps_the_parser_message() -> None:
    with pytest.raises(e.MalformedPolicy) as exc:
        validate_bucket_policy(b"\xff{", P)
    assert exc.value.message == "Policies must be valid JSON and the first byte must be '{'"
    with pytest.raises(e.MalformedPolicy) as exc:
        validate_bucket_policy(doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": _OBJ}), P)
    assert "Principal" in exc.value.message
    assert isinstance(validate_bucket_policy(doc(stmt("Allow", "*", "s3:*", f"arn:aws:s3:::{P}")), P), iam.Policy)


# --- every worker sees a change within ~1 s ------------------------------------------------------


def test_policy_change_reaches_every_worker(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", extra_args=["--workers", "2"])
    server.start()
    try:
        s3 = make_client(server.endpoint)
        s3.create_bucket(Bucket=P)
        s3.put_object(Bucket=P, Key="k", Body=b"v")

        def anon() -> int:
            return send(server.port, "GET", f"/{P}/k", {"Host": f"127.0.0.1:{server.port}"}).status

        assert anon() == 403  # both workers may have cached "no policy" by now
        assert anon() == 403
        s3.put_bucket_policy(Bucket=P, Policy=doc(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{P}/*")))
        time.sleep(1.5)  # past the 1 s cache lifetime of either worker
        assert {anon() for _ in range(8)} == {200}
        s3.delete_bucket_policy(Bucket=P)
        time.sleep(1.5)
        assert {anon() for _ in range(8)} == {403}
    finally:
        server.stop()
