"""IAM policies enforced end to end (docs/security.md "Users, keys and policies today"): the root
creates users and gives them inline policies through the admin extension; boto3 and the
extensions client sign with the users' keys against a real server (two workers)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.cli.test_client_commands import cli, ok, one_line_error
from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)

A = "iam-a"
B = "iam-b"


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


READ_A = _policy(
    {
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{A}", f"arn:aws:s3:::{A}/*"],
    }
)


class Env:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.root = TierstoreClient(self.settings(ACCESS_KEY, SECRET_KEY))
        self.s3 = make_client(server.endpoint)

    def settings(self, ak: str, sk: str) -> Any:
        return resolve_settings(self.server.endpoint, access_key=ak, secret_key=sk, region="us-east-1")

    def user(self, name: str, policy: str | None = None) -> tuple[str, str]:
        self.root.create_user(name)
        if policy is not None:
            self.root.put_user_policy(name, "main", policy)
        key = self.root.create_access_key(name)
        return key["access_key_id"], key["secret_key"]

    def s3_of(self, keys: tuple[str, str]) -> Any:
        return make_client(self.server.endpoint, access_key=keys[0], secret_key=keys[1])

    def ext_of(self, keys: tuple[str, str]) -> TierstoreClient:
        return TierstoreClient(self.settings(*keys))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = Path(tmp_path_factory.mktemp("iam")) / "data"
    server = ServerProcess(data, extra_args=["--workers", "2"])
    server.start()
    try:
        e = Env(server)
        for bucket in (A, B):
            e.s3.create_bucket(Bucket=bucket)
            for key in ("public/x", "other", "home/alice/seed", "shared/y"):
                e.s3.put_object(Bucket=bucket, Key=key, Body=f"{bucket}/{key}".encode())
        yield e
    finally:
        server.stop()


def status(call: Callable[[], Any]) -> tuple[int, str]:
    try:
        resp = call()
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"].get("Code", "")
    return resp["ResponseMetadata"]["HTTPStatusCode"], ""


DENIED = (403, "AccessDenied")


@pytest.fixture(scope="module")
def alice(env: Env) -> tuple[str, str]:
    return env.user("alice", READ_A)


def test_access_matrix(env: Env, alice: tuple[str, str]) -> None:
    a = env.s3_of(alice)
    bob = env.s3_of(env.user("bob"))
    assert status(lambda: a.list_objects_v2(Bucket=A)) == (200, "")
    assert status(lambda: a.get_object(Bucket=A, Key="other")) == (200, "")
    assert a.get_object(Bucket=A, Key="shared/y")["Body"].read() == f"{A}/shared/y".encode()
    assert status(lambda: a.put_object(Bucket=A, Key="new", Body=b"x")) == DENIED
    assert status(lambda: a.get_object(Bucket=B, Key="other")) == DENIED
    assert status(lambda: a.list_objects_v2(Bucket=B)) == DENIED
    assert status(lambda: a.delete_object(Bucket=A, Key="other")) == DENIED
    assert status(a.list_buckets) == DENIED
    for call in (
        bob.list_buckets,
        lambda: bob.list_objects_v2(Bucket=A),
        lambda: bob.get_object(Bucket=A, Key="other"),
        lambda: bob.put_object(Bucket=B, Key="b", Body=b"x"),
        lambda: bob.create_bucket(Bucket="bob-bucket"),
    ):
        assert status(call) == DENIED
    assert status(lambda: env.s3.head_object(Bucket=A, Key="new")) == (404, "404")  # nothing was written


def test_denied_conditional_requests_leak_nothing(env: Env, alice: tuple[str, str]) -> None:
    """If-Match on an existing and a missing key of a forbidden bucket: the same 403."""
    a = env.s3_of(alice)
    etag = env.s3.head_object(Bucket=B, Key="other")["ETag"]
    answers = set()
    for key in ("other", "missing"):
        for extra in ({"IfMatch": etag}, {"IfNoneMatch": etag}, {}):
            answers.add(status(lambda key=key, extra=extra: a.head_object(Bucket=B, Key=key, **extra)))
            answers.add(status(lambda key=key, extra=extra: a.get_object(Bucket=B, Key=key, **extra)))
    # HEAD has no body: botocore names its error by the status code.
    assert answers == {(403, "403"), DENIED}


def test_explicit_deny_wins_and_home_folder_variable(env: Env) -> None:
    policy = _policy(
        {"Effect": "Allow", "Action": "s3:*", "Resource": f"arn:aws:s3:::{A}/*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{A}/shared/*"},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{B}/home/${{aws:username}}/*"},
    )
    carol = env.s3_of(env.user("carol", policy))
    assert status(lambda: carol.get_object(Bucket=A, Key="other")) == (200, "")
    assert status(lambda: carol.get_object(Bucket=A, Key="shared/y")) == DENIED  # Deny beats s3:*
    assert status(lambda: carol.put_object(Bucket=B, Key="home/carol/f", Body=b"c")) == (200, "")
    assert status(lambda: carol.put_object(Bucket=B, Key="home/alice/f", Body=b"c")) == DENIED
    assert status(lambda: carol.put_object(Bucket=B, Key="home/carolx", Body=b"c")) == DENIED


def test_first_reads_of_each_key_are_decided_per_key(env: Env) -> None:
    """Reads alternating between keys a policy tells apart (a Deny on a prefix, a Deny on an
    existing object tag) after allowed reads in the same bucket, several rounds so that both
    workers see each key after an allow: the remembered allows never answer for another key."""
    env.s3.put_object(Bucket=A, Key="tagged", Body=b"t", Tagging="class=secret")
    policy = _policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{A}/*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{A}/shared/*"},
    )
    tags = _policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{A}/*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*",
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "secret"}}},
    )
    for name, doc, forbidden in (("ivy", policy, "shared/y"), ("jack", tags, "tagged")):
        s3 = env.s3_of(env.user(name, doc))
        for _ in range(4):
            assert status(lambda s3=s3: s3.get_object(Bucket=A, Key="other")) == (200, "")
            assert status(lambda s3=s3, k=forbidden: s3.get_object(Bucket=A, Key=k)) == DENIED, name
            assert status(lambda s3=s3: s3.get_object(Bucket=A, Key="public/x")) == (200, "")


def test_service_account_narrows_its_parent(env: Env, alice: tuple[str, str]) -> None:
    narrow = _policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{A}/public/*"})
    sa = env.root.create_access_key("alice", service=True, policy=narrow)
    s = env.s3_of((sa["access_key_id"], sa["secret_key"]))
    assert status(lambda: s.get_object(Bucket=A, Key="public/x")) == (200, "")
    assert status(lambda: s.get_object(Bucket=A, Key="other")) == DENIED  # the parent may; the SA not
    assert status(lambda: s.list_objects_v2(Bucket=A)) == DENIED
    assert status(lambda: s.get_object(Bucket=B, Key="public/x")) == DENIED  # allowed by SA, not by parent
    wide = _policy({"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    sa2 = env.root.create_access_key("alice", service=True, policy=wide)
    s2 = env.s3_of((sa2["access_key_id"], sa2["secret_key"]))
    assert status(lambda: s2.put_object(Bucket=A, Key="sa", Body=b"x")) == DENIED  # never wider


def test_policy_change_is_seen_within_two_seconds(env: Env) -> None:
    dave_keys = env.user("dave", READ_A)
    dave = env.s3_of(dave_keys)
    assert status(lambda: dave.get_object(Bucket=A, Key="other")) == (200, "")
    only_b = _policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{B}/*"})
    env.root.put_user_policy("dave", "main", only_b)
    changed = time.monotonic()
    answers = []
    while (sent := time.monotonic()) < changed + 3.0:
        answers.append((sent - changed, status(lambda: dave.get_object(Bucket=A, Key="other"))))
        time.sleep(0.05)
    late = [answer for after_s, answer in answers if after_s >= 2.0]
    assert late and set(late) == {DENIED}, answers
    assert status(lambda: dave.get_object(Bucket=B, Key="other")) == (200, "")
    env.root.delete_user_policy("dave", "main")
    assert env.root.user_policies("dave") == {}


def test_batch_serves_allowed_entries_and_403_frames_the_rest(env: Env, alice: tuple[str, str]) -> None:
    items = list(
        env.ext_of(alice).read_many(
            [{"bucket": A, "key": "public/x"}, {"bucket": B, "key": "public/x"}, {"bucket": A, "key": "nope"}]
        )
    )
    assert [(i.index, i.status) for i in items] == [(0, 200), (1, 403), (2, 404)]
    assert items[0].data == f"{A}/public/x".encode()
    assert items[1].error is not None and items[1].error["code"] == "AccessDenied"
    assert f"{B}/public/x" not in json.dumps(items[1].error["message"])


def test_query_returns_only_readable_objects(env: Env) -> None:
    policy = _policy(
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{A}"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{A}/public/*"},
    )
    erin = env.ext_of(env.user("erin", policy))
    assert [o["key"] for o in erin.query_all(A, "size >= 0")] == ["public/x"]
    assert {o["key"] for o in env.root.query_all(A, "size >= 0")} >= {"public/x", "other", "shared/y"}
    with pytest.raises(TierstoreClientError) as info:
        erin.query(B, "size >= 0")  # no s3:ListBucket on B
    assert (info.value.status, info.value.code) == DENIED


def test_policy_admin_and_malformed_documents(env: Env, alice: tuple[str, str]) -> None:
    name = f"u{uuid.uuid4().hex[:8]}"
    env.root.create_user(name)
    bad = _policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
                   "Condition": {"StringEqualsSomehow": {"aws:username": "x"}}})
    with pytest.raises(TierstoreClientError) as info:
        env.root.put_user_policy(name, "bad", bad)
    assert (info.value.status, info.value.code) == (400, "MalformedPolicyDocument")
    assert "StringEqualsSomehow" in str(info.value)
    narrow_bad = _policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Principal": "*"})
    with pytest.raises(TierstoreClientError) as info:
        env.root.create_access_key(name, service=True, policy=narrow_bad)  # a session policy names no Principal
    assert (info.value.status, info.value.code) == (400, "MalformedPolicyDocument")
    assert env.root.user_policies(name) == {}
    env.root.put_user_policy(name, "read", READ_A)
    assert json.loads(env.root.user_policy(name, "read")) == json.loads(READ_A)
    with pytest.raises(TierstoreClientError) as info:
        env.root.user_policy(name, "missing")
    assert (info.value.status, info.value.code) == (404, "NoSuchEntity")
    with pytest.raises(TierstoreClientError) as info:  # alice has no iam:PutUserPolicy
        env.ext_of(alice).put_user_policy("alice", "mine", _policy({"Effect": "Allow", "Action": "*", "Resource": "*"}))
    assert (info.value.status, info.value.code) == DENIED
    env.root.delete_user_policy(name, "read")
    assert env.root.user_policies(name) == {}


def test_access_log_names_the_deciding_statement(env: Env) -> None:
    policy = _policy(
        {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{A}/*"},
        {"Sid": "NotShared", "Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{A}/shared/*"},
    )
    frank_keys = env.user("frank", policy)
    frank = env.s3_of(frank_keys)
    assert status(lambda: frank.get_object(Bucket=A, Key="other")) == (200, "")
    assert status(lambda: frank.get_object(Bucket=A, Key="shared/y")) == DENIED
    assert status(lambda: frank.get_object(Bucket=B, Key="other")) == DENIED
    deadline = time.monotonic() + 10
    while True:
        text = env.server.log_path.read_text(errors="replace")
        lines = [json.loads(t) for t in text.splitlines() if t.startswith("{")]
        mine = [(x["key"], x["status"], x["decision"], x["policy"]) for x in lines if x["access_key"] == frank_keys[0]]
        if len(mine) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(mine) == [  # two workers: their lines interleave in any order
        ("other", 200, "allow", "main:Read"),
        ("other", 403, "implicit_deny", ""),
        ("shared/y", 403, "explicit_deny", "main:NotShared"),
    ]


def test_cli_admin_policy_put_ls_rm(env: Env, tmp_path: Path) -> None:
    env.root.create_user("gina")
    good, bad = tmp_path / "read.json", tmp_path / "bad.json"
    good.write_text(READ_A)
    bad.write_text(_policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "not-an-arn"}))
    ok(cli(env.server, "admin", "policy", "put", "gina", "read", str(good)))
    one_line_error(cli(env.server, "admin", "policy", "put", "gina", "bad", str(bad)), "MalformedPolicyDocument")
    assert set(json.loads(ok(cli(env.server, "admin", "policy", "ls", "gina")))) == {"read"}
    ok(cli(env.server, "admin", "policy", "rm", "gina", "read"))
    assert json.loads(ok(cli(env.server, "admin", "policy", "ls", "gina"))) == {}


def test_dataset_batch_needs_read_dataset(env: Env, alice: tuple[str, str]) -> None:
    ref = env.root.create_dataset("iam-pub", bucket=A, prefix="public/")["ref"]
    with pytest.raises(TierstoreClientError) as info:
        list(env.ext_of(alice).read_rows(ref, [0]))  # s3:GetObject on the bucket is not enough
    assert (info.value.status, info.value.code) == DENIED
    dataset_arn = "arn:aws:tierstore:::dataset/iam-pub"  # docs/security.md part 2
    reader = _policy({"Effect": "Allow", "Action": "tierstore:ReadDataset", "Resource": dataset_arn})
    hank = env.ext_of(env.user("hank", reader))
    (item,) = hank.read_rows(ref, [0])  # ...and the row's object too (docs/security.md "Datasets")
    assert (item.status, (item.error or {}).get("code")) == DENIED
    env.root.put_user_policy("hank", "rows", READ_A)
    deadline = time.monotonic() + 10  # a policy change reaches every worker within about a second
    while True:
        (item,) = hank.read_rows(ref, [0])
        if item.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert item.status == 200 and item.data == f"{A}/public/x".encode()
