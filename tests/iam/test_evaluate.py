"""evaluate(): the AWS evaluation order and AWS's documented policy examples, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam.helpers import ACCOUNT, ALICE, ANON, BOB, ROOT, SESSION, allowed, decide, policy

B = "arn:aws:s3:::shared"
OBJ = "arn:aws:s3:::shared/doc.txt"


def allow(action: Any = "s3:*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any = "s3:*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


# --- evaluation order -----------------------------------------------------------------------
def test_default_deny_and_decision_fields() -> None:
    d = decide("s3:GetObject", OBJ)
    assert (d.allowed, d.reason, d.policy, d.statement) == (False, "implicit_deny", None, None)
    p = policy(allow("s3:GetObject", f"{B}/*", Sid="Read"), deny("s3:DeleteObject", f"{B}/*"), name="readers")
    d = decide("s3:GetObject", OBJ, identity=[p])
    assert (d.allowed, d.reason, d.policy, d.source, d.statement) == (True, "allow", "readers", "identity", "Read")
    d = decide("s3:DeleteObject", OBJ, identity=[p])
    assert (d.allowed, d.reason, d.policy, d.statement) == (False, "explicit_deny", "readers", "#1")


def test_explicit_deny_in_any_policy_wins() -> None:
    grant = policy(allow(), name="all")
    assert allowed("s3:GetObject", OBJ, identity=[grant])
    denier = policy(deny("s3:GetObject", f"{B}/*"), name="no-get")
    assert decide("s3:GetObject", OBJ, identity=[grant, denier]).reason == "explicit_deny"
    bucket_deny = policy({**deny("s3:GetObject", f"{B}/*"), "Principal": {"AWS": ALICE.arn}}, kind="resource")
    d = decide("s3:GetObject", OBJ, identity=[grant], bucket=bucket_deny)
    assert (d.reason, d.source) == ("explicit_deny", "resource")
    assert decide("s3:GetObject", OBJ, identity=[grant], session=[policy(allow(), deny("s3:Get*"), kind="session")]
                  ).reason == "explicit_deny"
    assert decide("s3:GetObject", OBJ, identity=[grant], boundary=[policy(deny())]).reason == "explicit_deny"
    assert decide("s3:GetObject", OBJ, identity=[grant], bucket=bucket_deny, principal=BOB).allowed


def test_identity_or_bucket_policy_grants_in_one_account() -> None:
    bucket = policy({**allow("s3:GetObject", f"{B}/*"), "Principal": {"AWS": [ALICE.arn]}, "Sid": "Alice"},
                    kind="resource", name="shared-policy")
    d = decide("s3:GetObject", OBJ, bucket=bucket)
    assert (d.allowed, d.policy, d.source, d.statement) == (True, "shared-policy", "resource", "Alice")
    assert not allowed("s3:GetObject", OBJ, bucket=bucket, principal=BOB)
    assert not allowed("s3:PutObject", OBJ, bucket=bucket)


@pytest.mark.parametrize(("principal_field", "who", "expected"), [
    ("*", ANON, True),
    ({"AWS": "*"}, ANON, True),
    ({"AWS": "*"}, BOB, True),
    ({"AWS": ALICE.arn}, ALICE, True),
    ({"AWS": ALICE.arn}, BOB, False),
    ({"AWS": ALICE.arn}, ANON, False),
    # naming the account delegates to it: its users still need an identity policy (AWS)
    ({"AWS": ACCOUNT}, ALICE, False),
    ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, ALICE, False),
    # a role's ARN covers its sessions; a session ARN only that session
    ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/builder"}, SESSION, True),
    ({"AWS": SESSION.arn}, SESSION, True),
    ({"AWS": f"arn:aws:sts::{ACCOUNT}:assumed-role/builder/other"}, SESSION, False),
    ({"Service": "s3.amazonaws.com"}, ALICE, False),
])
def test_bucket_policy_principals(principal_field: Any, who: Any, expected: bool) -> None:
    bucket = policy({**allow("s3:GetObject", f"{B}/*"), "Principal": principal_field}, kind="resource")
    assert allowed("s3:GetObject", OBJ, bucket=bucket, principal=who) is expected


def test_account_principal_in_a_deny_covers_every_user_of_the_account() -> None:
    grant = policy(allow())
    bucket = policy({**deny("s3:GetObject", f"{B}/*"), "Principal": {"AWS": ACCOUNT}}, kind="resource")
    assert decide("s3:GetObject", OBJ, identity=[grant], bucket=bucket).reason == "explicit_deny"
    assert decide("s3:GetObject", OBJ, bucket=bucket, principal=ROOT).reason == "explicit_deny"


def test_not_principal_deny_everyone_but_alice() -> None:
    grant = policy(allow())
    bucket = policy({**deny("s3:*", [B, f"{B}/*"]), "NotPrincipal": {"AWS": [ALICE.arn]}}, kind="resource")
    assert allowed("s3:GetObject", OBJ, identity=[grant], bucket=bucket)
    assert decide("s3:GetObject", OBJ, identity=[grant], bucket=bucket, principal=BOB).reason == "explicit_deny"
    assert decide("s3:GetObject", OBJ, bucket=bucket, principal=ANON).reason == "explicit_deny"


def test_root_is_allowed_unless_a_bucket_policy_denies() -> None:
    assert decide("s3:DeleteBucket", B, principal=ROOT).source == "root"
    assert allowed("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/x", principal=ROOT)
    assert allowed("s3:GetObject", OBJ, principal=ROOT, identity=[policy(deny())])  # root has no identity policies
    bucket = policy({**deny("s3:DeleteBucket", B), "Principal": "*"}, kind="resource")
    assert decide("s3:DeleteBucket", B, principal=ROOT, bucket=bucket).reason == "explicit_deny"


def test_anonymous_only_through_a_bucket_policy_allow() -> None:
    grant = policy(allow())
    assert not allowed("s3:GetObject", OBJ, identity=[grant], principal=ANON)
    public = policy({**allow("s3:GetObject", f"{B}/*"), "Principal": "*", "Sid": "PublicRead"}, kind="resource")
    assert decide("s3:GetObject", OBJ, bucket=public, principal=ANON).statement == "PublicRead"
    assert not allowed("s3:PutObject", OBJ, bucket=public, principal=ANON)
    assert not allowed("s3:GetObject", "arn:aws:s3:::other/doc.txt", bucket=public, principal=ANON)


def test_session_policies_intersect() -> None:
    grant = policy(allow(), name="admin")
    read_only = policy(allow(["s3:Get*", "s3:List*"], [B, f"{B}/*"]), kind="session", name="ro")
    assert allowed("s3:GetObject", OBJ, identity=[grant], session=[read_only], principal=SESSION)
    d = decide("s3:PutObject", OBJ, identity=[grant], session=[read_only], principal=SESSION)
    assert (d.allowed, d.reason, d.policy, d.source) == (False, "implicit_deny", "ro", "session")
    # a service account's policy and a session policy: every layer must allow
    only_shared_get = policy(allow("s3:GetObject", f"{B}/*"), kind="session", name="sa")
    assert allowed("s3:GetObject", OBJ, identity=[grant], session=[read_only, only_shared_get])
    assert not allowed("s3:ListBucket", B, identity=[grant], session=[read_only, only_shared_get])
    # a session policy never grants by itself
    assert not allowed("s3:GetObject", OBJ, session=[read_only])
    # nor does it escape through a bucket policy naming the role
    bucket = policy({**allow("s3:PutObject", f"{B}/*"), "Principal": {"AWS": SESSION.role_arn}}, kind="resource")
    assert allowed("s3:PutObject", OBJ, bucket=bucket, principal=SESSION)
    assert not allowed("s3:PutObject", OBJ, bucket=bucket, session=[read_only], principal=SESSION)


def test_permissions_boundary() -> None:
    grant = policy(allow())
    boundary = [policy(allow("s3:*", [B, f"{B}/*"]), name="b1"), policy(allow("s3:ListAllMyBuckets"), name="b2")]
    assert allowed("s3:GetObject", OBJ, identity=[grant], boundary=boundary)
    assert allowed("s3:ListAllMyBuckets", "*", identity=[grant], boundary=boundary)
    d = decide("s3:GetObject", "arn:aws:s3:::other/x", identity=[grant], boundary=boundary)
    assert (d.allowed, d.source, d.policy) == (False, "boundary", "b1,b2")
    assert not allowed("s3:GetObject", OBJ, boundary=boundary)  # a boundary never grants
    assert not allowed("s3:GetObject", OBJ, identity=[grant], boundary=[])


# --- actions and resources ------------------------------------------------------------------
@pytest.mark.parametrize(("pattern", "action", "expected"), [
    ("s3:*", "s3:GetObject", True),
    ("s3:Get*", "s3:GetObjectTagging", True),
    ("s3:Get*", "s3:PutObject", False),
    ("s3:getobject", "s3:GetObject", True),  # action names are case-insensitive
    ("S3:GETOBJECT", "s3:GetObject", True),
    ("s3:?etObject", "s3:GetObject", True),
    ("s3:?etObject", "s3:GetObjects", False),
    ("*", "tierstore:Admin", True),
    ("s3:*", "iam:CreateUser", False),
    ("tierstore:*", "tierstore:CreateDataset", True),
])
def test_action_matching(pattern: str, action: str, expected: bool) -> None:
    assert allowed(action, "*", identity=[policy(allow(pattern))]) is expected


def test_not_action_and_not_resource() -> None:
    everything_but_delete = policy(allow(), {"Effect": "Deny", "NotAction": "s3:Get*", "Resource": "*"})
    assert allowed("s3:GetObject", OBJ, identity=[everything_but_delete])
    assert not allowed("s3:DeleteObject", OBJ, identity=[everything_but_delete])
    # deny everything outside the home bucket
    p = policy(allow(), {"Effect": "Deny", "Action": "s3:*", "NotResource": [B, f"{B}/*"]})
    assert allowed("s3:PutObject", OBJ, identity=[p])
    assert not allowed("s3:PutObject", "arn:aws:s3:::other/x", identity=[p])


@pytest.mark.parametrize(("pattern", "resource", "expected"), [
    ("arn:aws:s3:::shared/*", OBJ, True),
    ("arn:aws:s3:::shared/*", B, False),
    ("arn:aws:s3:::shared*", B, True),
    ("arn:aws:s3:::shared/doc.???", OBJ, True),
    ("arn:aws:s3:::shared/doc.??", OBJ, False),
    ("arn:aws:s3:::Shared/*", OBJ, False),  # resources are case-sensitive
    ("arn:aws:s3:::*/doc.txt", OBJ, True),
    ("arn:aws:s3:::shared/a/*", "arn:aws:s3:::shared/a/b/c\nd", True),
    ("arn:aws:s3:::shared/${*}", "arn:aws:s3:::shared/*", True),
    ("arn:aws:s3:::shared/${*}", OBJ, False),
    ("arn:aws:s3:::shared/${?}${$}", "arn:aws:s3:::shared/?$", True),
    ("*", "arn:aws:iam::000000000000:user/x", True),
])
def test_resource_matching(pattern: str, resource: str, expected: bool) -> None:
    assert allowed("s3:GetObject", resource, identity=[policy(allow("s3:GetObject", pattern))]) is expected


# --- AWS's documented examples --------------------------------------------------------------
def home_folder_policy() -> Any:
    """IAM user guide / S3 examples: each user lists and uses only home/<username>/ of a shared bucket."""
    return policy(
        {"Sid": "AllowListingOfUserFolder", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": B,
         "Condition": {"StringLike": {"s3:prefix": ["", "home/", "home/${aws:username}/*"]}}},
        {"Sid": "AllowAllS3ActionsInUserFolder", "Effect": "Allow", "Action": "s3:*",
         "Resource": f"{B}/home/${{aws:username}}/*"},
        name="home-folders",
    )


@pytest.mark.parametrize(("who", "action", "resource", "ctx", "expected"), [
    (ALICE, "s3:GetObject", f"{B}/home/alice/notes.txt", {}, True),
    (ALICE, "s3:PutObject", f"{B}/home/alice/deep/x", {}, True),
    (ALICE, "s3:GetObject", f"{B}/home/bob/notes.txt", {}, False),
    (BOB, "s3:GetObject", f"{B}/home/bob/notes.txt", {}, True),
    (ALICE, "s3:GetObject", f"{B}/home/alice", {}, False),
    (ALICE, "s3:ListBucket", B, {"s3:prefix": ["home/alice/"]}, True),
    (ALICE, "s3:ListBucket", B, {"s3:prefix": ["home/"]}, True),
    (ALICE, "s3:ListBucket", B, {"s3:prefix": [""]}, True),
    (ALICE, "s3:ListBucket", B, {"s3:prefix": ["home/bob/"]}, False),
    (ALICE, "s3:ListBucket", B, {}, False),
    (SESSION, "s3:GetObject", f"{B}/home//x", {}, False),  # no aws:username: the statement does not apply
])
def test_example_per_user_home_folder(who: Any, action: str, resource: str, ctx: Any, expected: bool) -> None:
    assert allowed(action, resource, identity=[home_folder_policy()], principal=who, ctx=ctx) is expected


@pytest.mark.parametrize(("secure", "expected"), [(["true"], True), (["false"], False), (None, True)])
def test_example_deny_insecure_transport(secure: Any, expected: bool) -> None:
    """S3 bucket policy example: deny every request not sent over TLS."""
    bucket = policy({"Sid": "AllowSSLRequestsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                     "Resource": [B, f"{B}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
                    kind="resource")
    ctx = {"aws:SecureTransport": secure} if secure is not None else {}
    assert allowed("s3:GetObject", OBJ, identity=[policy(allow())], bucket=bucket, ctx=ctx) is expected


@pytest.mark.parametrize(("ip", "expected"), [
    ("192.0.2.10", True), ("192.0.2.255", True), ("203.0.113.1", False), ("2001:db8::1", True),
    ("2001:db9::1", False), ("not-an-ip", False), (None, False),
])
def test_example_ip_allow_list(ip: Any, expected: bool) -> None:
    """S3 bucket policy example: deny requests from outside the listed IPv4 and IPv6 ranges."""
    bucket = policy({"Sid": "IPAllow", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                     "Resource": [B, f"{B}/*"],
                     "Condition": {"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8::/32"]}}},
                    kind="resource")
    ctx = {"aws:SourceIp": [ip]} if ip is not None else {}
    got = allowed("s3:GetObject", OBJ, identity=[policy(allow())], bucket=bucket, ctx=ctx)
    # a malformed address matches nothing, so the negated operator does not hold either: not denied
    assert got is (True if ip == "not-an-ip" else expected)


@pytest.mark.parametrize(("header", "expected"), [(["AES256"], True), (["aws:kms"], False), (None, False)])
def test_example_deny_unencrypted_uploads(header: Any, expected: bool) -> None:
    """S3 example: deny PutObject unless x-amz-server-side-encryption is AES256 (and when it is absent)."""
    bucket = policy(
        {"Sid": "DenyIncorrectEncryptionHeader", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{B}/*", "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}}},
        {"Sid": "DenyUnEncryptedObjectUploads", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{B}/*", "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}},
        kind="resource")
    ctx = {"s3:x-amz-server-side-encryption": header} if header is not None else {}
    assert allowed("s3:PutObject", OBJ, identity=[policy(allow())], bucket=bucket, ctx=ctx) is expected


@pytest.mark.parametrize(("tag_keys", "all_values", "any_value"), [
    (None, True, False),  # ForAllValues is vacuously true on an absent key, ForAnyValue false
    ([], True, False),
    (["key1-a"], True, True),
    (["key1-a", "key1-b"], True, True),
    (["key1-a", "other"], False, True),
    (["other"], False, False),
])
def test_example_set_operators(tag_keys: Any, all_values: bool, any_value: bool) -> None:
    ctx = {"aws:TagKeys": tag_keys} if tag_keys is not None else {}
    for qualifier, expected in (("ForAllValues", all_values), ("ForAnyValue", any_value)):
        p = policy(allow("s3:PutObjectTagging", Condition={f"{qualifier}:StringLike": {"aws:TagKeys": "key1*"}}))
        assert allowed("s3:PutObjectTagging", OBJ, identity=[p], ctx=ctx) is expected, qualifier


@pytest.mark.parametrize(("tag_keys", "denied"), [
    (None, False),  # the Null guard: no tag keys, no deny
    (["key1x"], False),
    (["key1x", "key2"], False),  # one value is like key1*: not *all* are unlike it
    (["key2"], True),
    (["key2", "key3"], True),
])
def test_example_for_all_values_negated_with_null_guard(tag_keys: Any, denied: bool) -> None:
    """IAM example: deny tagging when every tag key is unlike key1* (Null guards the absent case)."""
    p = policy(allow(), deny("s3:PutObjectTagging", Condition={
        "Null": {"aws:TagKeys": "false"}, "ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}}))
    ctx = {"aws:TagKeys": tag_keys} if tag_keys is not None else {}
    assert decide("s3:PutObjectTagging", OBJ, identity=[p], ctx=ctx).allowed is not denied


@pytest.mark.parametrize(("ctx", "expected"), [
    ({}, True), ({"s3:max-keys": ["10"]}, True), ({"s3:max-keys": ["1000"]}, False), ({"s3:max-keys": ["x"]}, False),
])
def test_example_if_exists(ctx: Any, expected: bool) -> None:
    p = policy(allow("s3:ListBucket", B, Condition={"NumericLessThanEqualsIfExists": {"s3:max-keys": "100"}}))
    assert allowed("s3:ListBucket", B, identity=[p], ctx=ctx) is expected


def test_example_principal_tags_and_variables() -> None:
    p = policy(allow("s3:*", "arn:aws:s3:::team-${aws:PrincipalTag/team}/*",
                     Condition={"StringEquals": {"s3:ExistingObjectTag/project": "${aws:PrincipalTag/Project}"}}))
    ctx = {"s3:ExistingObjectTag/project": ["Atlas"]}
    assert allowed("s3:GetObject", "arn:aws:s3:::team-ml/x", identity=[p], ctx=ctx)
    wrong_case = {"s3:ExistingObjectTag/project": ["atlas"]}
    assert not allowed("s3:GetObject", "arn:aws:s3:::team-ml/x", identity=[p], ctx=wrong_case)
    assert not allowed("s3:GetObject", "arn:aws:s3:::team-ml/x", identity=[p], ctx=ctx, principal=BOB)
    default = policy(allow("s3:GetObject", "arn:aws:s3:::${aws:PrincipalTag/team, 'public'}/*"))
    assert allowed("s3:GetObject", "arn:aws:s3:::public/x", identity=[default], principal=BOB)
    assert not allowed("s3:GetObject", "arn:aws:s3:::public/x", identity=[default])
    assert allowed("s3:GetObject", "arn:aws:s3:::ml/x", identity=[default])


def test_principal_derived_keys_cannot_be_forged_through_the_context() -> None:
    p = policy(allow(Condition={"StringEquals": {"aws:username": "root-ish", "aws:PrincipalType": "User"}}))
    assert not allowed("s3:GetObject", OBJ, identity=[p], ctx={"aws:username": ["root-ish"]})
    q = policy(allow(Condition={"StringEquals": {"aws:PrincipalArn": SESSION.role_arn,
                                                  "aws:PrincipalType": "AssumedRole", "aws:userid": "AROABUILDER:ci"}}))
    assert allowed("s3:GetObject", OBJ, identity=[q], principal=SESSION)
    r = policy(allow(Condition={"StringEquals": {"aws:PrincipalTag/team": "ml"}}))
    assert not allowed("s3:GetObject", OBJ, identity=[r], principal=BOB, ctx={"aws:PrincipalTag/team": ["ml"]})
    assert allowed("s3:GetObject", OBJ, identity=[r])


def test_time_keys_come_from_now() -> None:
    before = policy(allow(Condition={"DateLessThan": {"aws:CurrentTime": "2026-12-31T00:00:00Z"}}))
    after = policy(allow(Condition={"DateGreaterThan": {"aws:CurrentTime": "2026-12-31T00:00:00Z"}}))
    epoch = policy(allow(Condition={"DateGreaterThan": {"aws:EpochTime": "1700000000"},
                                    "NumericGreaterThan": {"aws:EpochTime": "1700000000"}}))
    assert allowed("s3:GetObject", OBJ, identity=[before])
    assert not allowed("s3:GetObject", OBJ, identity=[after])
    assert allowed("s3:GetObject", OBJ, identity=[epoch])


def test_oidc_claims_as_condition_keys() -> None:
    trust = policy({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                    "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/127.0.0.1:8443/realm"},
                    "Condition": {"StringEquals": {"127.0.0.1:8443/realm:aud": "tierstore"},
                                  "StringLike": {"127.0.0.1:8443/realm:sub": "repo:acme/*"}}},
                   kind="trust")
    from tierstore.iam import Principal

    web = Principal(arn="", account=ACCOUNT, type="FederatedUser",
                    federated=f"arn:aws:iam::{ACCOUNT}:oidc-provider/127.0.0.1:8443/realm")
    role = f"arn:aws:iam::{ACCOUNT}:role/ci"
    ctx = {"127.0.0.1:8443/realm:aud": ["tierstore"], "127.0.0.1:8443/realm:sub": ["repo:acme/app"]}
    assert allowed("sts:AssumeRoleWithWebIdentity", role, bucket=trust, principal=web, ctx=ctx)
    assert not allowed("sts:AssumeRoleWithWebIdentity", role, bucket=trust, principal=web,
                       ctx={**ctx, "127.0.0.1:8443/realm:aud": ["other"]})
    assert not allowed("sts:AssumeRoleWithWebIdentity", role, bucket=trust, principal=ALICE, ctx=ctx)


# --- every operator -------------------------------------------------------------------------
@pytest.mark.parametrize(("operator", "policy_values", "request_values", "expected"), [
    ("StringEquals", ["abc"], ["abc"], True),
    ("StringEquals", ["abc"], ["ABC"], False),
    ("StringEquals", ["a", "b"], ["b"], True),
    ("StringEquals", ["a*"], ["abc"], False),
    ("StringEquals", ["a"], None, False),
    ("StringNotEquals", ["abc"], ["abd"], True),
    ("StringNotEquals", ["a", "b"], ["b"], False),
    ("StringNotEquals", ["a"], None, True),
    ("StringEqualsIgnoreCase", ["ABC"], ["abc"], True),
    ("StringEqualsIgnoreCase", ["ABC"], ["abd"], False),
    ("StringNotEqualsIgnoreCase", ["ABC"], ["abc"], False),
    ("StringNotEqualsIgnoreCase", ["ABC"], ["x"], True),
    ("StringLike", ["a*c"], ["abbbc"], True),
    ("StringLike", ["a?c"], ["abbc"], False),
    ("StringLike", ["a?c"], ["abc"], True),
    ("StringLike", ["A*"], ["abc"], False),
    ("StringNotLike", ["a*"], ["b"], True),
    ("StringNotLike", ["a*"], ["abc"], False),
    ("StringNotLike", ["a*"], None, True),
    ("NumericEquals", ["10"], ["10"], True),
    ("NumericEquals", ["10"], ["10.0"], True),
    ("NumericEquals", ["10"], ["11"], False),
    ("NumericEquals", ["10"], ["ten"], False),
    ("NumericNotEquals", ["10"], ["11"], True),
    ("NumericNotEquals", ["10"], ["10"], False),
    ("NumericNotEquals", ["10"], ["ten"], False),  # a type error matches nothing, negated or not
    ("NumericLessThan", ["10"], ["9"], True),
    ("NumericLessThan", ["10"], ["10"], False),
    ("NumericLessThanEquals", ["10"], ["10"], True),
    ("NumericLessThanEquals", ["10"], ["nan"], False),
    ("NumericGreaterThan", ["10"], ["10.5"], True),
    ("NumericGreaterThan", ["10"], ["-1"], False),
    ("NumericGreaterThanEquals", ["10"], ["10"], True),
    ("NumericGreaterThanEquals", ["10"], [""], False),
    ("DateEquals", ["2026-12-07T00:00:00Z"], ["2026-12-07T00:00:00+00:00"], True),
    ("DateEquals", ["2026-12-07T00:00:00Z"], ["1796601600"], True),
    ("DateNotEquals", ["2026-12-07T00:00:00Z"], ["2026-12-08T00:00:00Z"], True),
    ("DateNotEquals", ["2026-12-07T00:00:00Z"], ["yesterday"], False),
    ("DateLessThan", ["2026-12-07T00:00:00Z"], ["2026-12-06T23:59:59Z"], True),
    ("DateLessThan", ["2026-12-07"], ["2026-12-07T00:00:00Z"], False),
    ("DateLessThanEquals", ["2026-12-07T00:00:00Z"], ["2026-12-07T00:00:00Z"], True),
    ("DateGreaterThan", ["2026-12-07T00:00:00Z"], ["2026-12-07T01:00:00+02:00"], False),
    ("DateGreaterThan", ["2026-12-07T00:00:00Z"], ["2027-01-01T00:00:00Z"], True),
    ("DateGreaterThanEquals", ["2026-12-07T00:00:00Z"], ["not a date"], False),
    ("Bool", ["true"], ["true"], True),
    ("Bool", ["true"], ["TRUE"], True),
    ("Bool", ["true"], ["false"], False),
    ("Bool", ["false"], ["maybe"], False),
    ("Bool", ["false"], None, False),
    ("IpAddress", ["10.0.0.0/8"], ["10.9.8.7"], True),
    ("IpAddress", ["10.0.0.0/8"], ["11.0.0.1"], False),
    ("IpAddress", ["10.1.2.3"], ["10.1.2.3"], True),
    ("IpAddress", ["10.0.0.0/8"], ["::ffff:10.0.0.1"], False),
    ("IpAddress", ["2001:db8::/32"], ["2001:db8:1::5"], True),
    ("IpAddress", ["10.0.0.0/8"], ["junk"], False),
    ("NotIpAddress", ["10.0.0.0/8"], ["11.0.0.1"], True),
    ("NotIpAddress", ["10.0.0.0/8"], ["10.0.0.1"], False),
    ("NotIpAddress", ["10.0.0.0/8"], ["junk"], False),
    ("ArnEquals", ["arn:aws:iam::000000000000:user/alice"], ["arn:aws:iam::000000000000:user/alice"], True),
    ("ArnEquals", ["arn:aws:iam::*:user/alice"], ["arn:aws:iam::000000000000:user/alice"], True),
    ("ArnLike", ["arn:aws:iam::000000000000:user/*"], ["arn:aws:iam::000000000000:user/a/b"], True),
    ("ArnLike", ["arn:aws:*:user/alice"], ["arn:aws:iam::000000000000:user/alice"], False),  # * stays in its field
    ("ArnLike", ["arn:aws:iam::000000000000:user/*"], ["arn:aws:iam::000000000000:role/a"], False),
    ("ArnLike", ["arn:aws:iam::000000000000:user/*"], ["user/alice"], False),
    ("ArnNotEquals", ["arn:aws:iam::000000000000:user/alice"], ["arn:aws:iam::000000000000:user/bob"], True),
    ("ArnNotLike", ["arn:aws:iam::000000000000:user/*"], ["arn:aws:iam::000000000000:user/bob"], False),
    ("ArnNotLike", ["arn:aws:iam::000000000000:user/*"], ["not-an-arn"], False),
    ("ArnNotLike", ["arn:aws:iam::000000000000:user/*"], None, True),
    ("ArnLike", ["*"], ["arn:aws:iam::000000000000:user/alice"], True),
    ("Null", ["true"], None, True),
    ("Null", ["true"], ["x"], False),
    ("Null", ["false"], ["x"], True),
    ("Null", ["false"], [], False),
    ("StringEqualsIfExists", ["a"], None, True),
    ("StringEqualsIfExists", ["a"], ["b"], False),
    ("StringNotEqualsIfExists", ["a"], ["a"], False),
    ("IpAddressIfExists", ["10.0.0.0/8"], None, True),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "b"], True),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "c"], False),
    ("ForAnyValue:StringEquals", ["a", "b"], ["c", "b"], True),
    ("ForAnyValue:StringNotEquals", ["a"], ["a", "b"], True),
    ("ForAnyValue:StringNotEquals", ["a"], ["a"], False),
    ("ForAllValues:StringNotEquals", ["a"], ["b", "c"], True),
    ("ForAllValues:StringNotEquals", ["a"], ["a", "c"], False),
    ("ForAnyValue:StringEqualsIfExists", ["a"], None, True),
])
def test_operator(operator: str, policy_values: list[str], request_values: Any, expected: bool) -> None:
    key = "s3:RequestObjectTagKeys"
    p = policy(allow(Condition={operator: {key: policy_values}}))
    ctx = {key: request_values} if request_values is not None else {}
    assert allowed("s3:GetObject", OBJ, identity=[p], ctx=ctx) is expected


def test_condition_keys_and_values_are_and_and_or() -> None:
    p = policy(allow(Condition={"StringEquals": {"s3:prefix": ["a/", "b/"], "s3:delimiter": "/"},
                                "NumericLessThan": {"s3:max-keys": "100"}}))
    ok = {"s3:prefix": ["b/"], "s3:delimiter": ["/"], "s3:max-keys": ["10"]}
    assert allowed("s3:ListBucket", B, identity=[p], ctx=ok)
    assert not allowed("s3:ListBucket", B, identity=[p], ctx={**ok, "s3:delimiter": ["-"]})
    assert not allowed("s3:ListBucket", B, identity=[p], ctx={**ok, "s3:max-keys": ["500"]})
    # condition key names are case-insensitive; a plain string value is one value
    assert allowed("s3:ListBucket", B, identity=[p], ctx={"S3:Prefix": "a/", "s3:DELIMITER": ["/"], "s3:max-keys": "1"})


def test_s3_resource_arn() -> None:
    from tierstore.iam import s3_resource_arn

    assert s3_resource_arn("shared") == B
    assert s3_resource_arn("shared", "doc.txt") == OBJ
    assert s3_resource_arn("shared", "a b/*?") == "arn:aws:s3:::shared/a b/*?"
    assert s3_resource_arn() == "*"
    # a key with wildcard characters is literal text in the request: it matches only by wildcard or exactly
    p = policy(allow("s3:GetObject", "arn:aws:s3:::shared/${*}"))
    assert allowed("s3:GetObject", s3_resource_arn("shared", "*"), identity=[p])
    assert not allowed("s3:GetObject", s3_resource_arn("shared", "x"), identity=[p])
