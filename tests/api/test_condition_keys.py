"""Condition keys taken from the request (api/_authorize.py ``RequestContext.conditions``) and the
object (s3:ExistingObjectTag, read lazily), each used by a user's policy end to end through boto3:
s3:x-amz-acl, s3:x-amz-grant-*, s3:RequestObjectTag/<k>, s3:RequestObjectTagKeys (multi-valued,
ForAllValues/ForAnyValue), s3:object-lock-mode, -retain-until-date, -remaining-retention-days,
-legal-hold, s3:x-amz-server-side-encryption, s3:x-amz-storage-class, s3:ExistingObjectTag/<k>."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.test_acl import ALL_USERS, AUTH_USERS, new_user
from tests.conftest import ServerProcess
from tierstore.api._authorize import Principal, RequestContext

PUTS = ["s3:PutObject", "s3:PutObjectAcl", "s3:PutObjectTagging", "s3:PutObjectRetention", "s3:PutObjectLegalHold"]


def policy(bucket: str, *extra: dict[str, Any], condition: dict[str, Any] | None = None) -> str:
    """Allow the writes on ``bucket`` (under ``condition``, if any), plus ``extra`` statements."""
    allow: dict[str, Any] = {"Effect": "Allow", "Action": PUTS, "Resource": f"arn:aws:s3:::{bucket}/*"}
    if condition is not None:
        allow["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [allow, *extra]})


def deny_put(bucket: str, condition: dict[str, Any]) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": condition}


def code(call: Callable[[], Any]) -> str:
    try:
        call()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "OK"


def test_acl_and_grant_header_keys(server: ServerProcess, bucket: str) -> None:
    only_private = new_user(server, policy(bucket, condition={"StringEquals": {"s3:x-amz-acl": "private"}}))
    assert code(lambda: only_private.put_object(Bucket=bucket, Key="a", Body=b"x", ACL="private")) == "OK"
    assert code(lambda: only_private.put_object(Bucket=bucket, Key="a", Body=b"x", ACL="public-read")) == "AccessDenied"
    assert code(lambda: only_private.put_object(Bucket=bucket, Key="a", Body=b"x")) == "AccessDenied"  # key absent
    no_public_grant = new_user(
        server, policy(bucket, deny_put(bucket, {"StringLike": {"s3:x-amz-grant-read": "*AllUsers*"}}))
    )
    put = no_public_grant.put_object
    assert code(lambda: put(Bucket=bucket, Key="g", Body=b"x", GrantRead=f'uri="{AUTH_USERS}"')) == "OK"
    assert code(lambda: put(Bucket=bucket, Key="g", Body=b"x", GrantRead=f'uri="{ALL_USERS}"')) == "AccessDenied"


def test_request_object_tag_keys(server: ServerProcess, bucket: str) -> None:
    team = new_user(server, policy(bucket, condition={"StringEquals": {"s3:RequestObjectTag/team": "ml"}}))
    assert code(lambda: team.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="team=ml&x=1")) == "OK"
    assert code(lambda: team.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="team=web")) == "AccessDenied"
    allowed_keys = {"ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": ["team", "project"]}}
    keys = new_user(server, policy(bucket, condition=allowed_keys))
    assert code(lambda: keys.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="team=a&project=b")) == "OK"
    assert code(lambda: keys.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="team=a&secret=b")) == "AccessDenied"
    # A key without "=" is a tag too (an empty value): it counts among the keys.
    assert code(lambda: keys.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="team=a&secret")) == "AccessDenied"
    needs_one = {"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": "project"}}
    any_key = new_user(server, policy(bucket, condition=needs_one))
    assert code(lambda: any_key.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1&project=b")) == "OK"
    assert code(lambda: any_key.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1")) == "AccessDenied"
    assert code(lambda: any_key.put_object(Bucket=bucket, Key="k", Body=b"x")) == "AccessDenied"


@pytest.fixture
def locked(s3: Any) -> Iterator[str]:
    name = f"cond-lock-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield name
    for v in s3.list_object_versions(Bucket=name).get("Versions", []):
        s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True)
    s3.delete_bucket(Bucket=name)


def test_object_lock_keys(server: ServerProcess, locked: str) -> None:
    soon = datetime.now(UTC) + timedelta(days=2)
    later = datetime.now(UTC) + timedelta(days=60)
    rules = new_user(
        server,
        policy(
            locked,
            deny_put(locked, {"StringEquals": {"s3:object-lock-mode": "COMPLIANCE"}}),
            deny_put(locked, {"NumericGreaterThan": {"s3:object-lock-remaining-retention-days": "30"}}),
            deny_put(locked, {"StringEquals": {"s3:object-lock-legal-hold": "ON"}}),
        ),
    )

    def put(**kw: Any) -> str:
        return code(lambda: rules.put_object(Bucket=locked, Key="l", Body=b"x", **kw))

    assert put(ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=soon) == "OK"
    assert put(ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=soon) == "AccessDenied"
    assert put(ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=later) == "AccessDenied"
    assert put(ObjectLockLegalHoldStatus="OFF") == "OK"
    assert put(ObjectLockLegalHoldStatus="ON") == "AccessDenied"
    until = new_user(
        server,
        policy(locked, condition={"DateLessThan": {"s3:object-lock-retain-until-date": later.strftime("%Y-%m-%d")}}),
    )
    ok = lambda: until.put_object(  # noqa: E731
        Bucket=locked, Key="u", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=soon
    )
    assert code(ok) == "OK"
    far = later + timedelta(days=1)
    too_far = lambda: until.put_object(  # noqa: E731
        Bucket=locked, Key="u", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=far
    )
    assert code(too_far) == "AccessDenied"


def test_encryption_and_storage_class_keys(server: ServerProcess, bucket: str) -> None:
    rules = new_user(
        server,
        policy(
            bucket,
            deny_put(bucket, {"StringEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}),
            deny_put(bucket, {"StringEquals": {"s3:x-amz-storage-class": "STANDARD_IA"}}),
        ),
    )

    def put(**kw: Any) -> str:
        return code(lambda: rules.put_object(Bucket=bucket, Key="e", Body=b"x", **kw))

    assert put(StorageClass="REDUCED_REDUNDANCY") == "OK"
    assert put(StorageClass="STANDARD_IA") == "AccessDenied"
    # Authorization comes first: the policy's Deny, never the key service's answer.
    assert put(ServerSideEncryption="aws:kms") == "AccessDenied"
    assert put(ServerSideEncryption="AES256") == "OK"


def test_existing_object_tag(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="ml", Body=b"m", Tagging="team=ml")
    s3.put_object(Bucket=bucket, Key="web", Body=b"w", Tagging="team=web")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket=bucket, Key="moved", Body=b"1", Tagging="team=ml")["VersionId"]
    s3.put_object(Bucket=bucket, Key="moved", Body=b"2", Tagging="team=web")
    read = {
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:GetObjectVersion"],
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringEquals": {"s3:ExistingObjectTag/team": "ml"}},
    }
    user = new_user(server, json.dumps({"Version": "2012-10-17", "Statement": [read]}))
    assert user.get_object(Bucket=bucket, Key="ml")["Body"].read() == b"m"
    assert code(lambda: user.get_object(Bucket=bucket, Key="web")) == "AccessDenied"
    assert code(lambda: user.get_object(Bucket=bucket, Key="missing")) == "AccessDenied"
    # The version the request names is the one whose tags count.
    assert user.get_object(Bucket=bucket, Key="moved", VersionId=old)["Body"].read() == b"1"
    assert code(lambda: user.get_object(Bucket=bucket, Key="moved")) == "AccessDenied"


def test_request_keys_are_parsed_as_the_handler_parses_them() -> None:
    """In-process: the lock date reaches policies in one UTC form whatever offset it was sent
    with; an x-amz-tagging key without '=' is a key; no such headers, no such keys."""
    headers = {
        "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00+02:00",
        "x-amz-tagging": "team=ml&flag",
        "x-amz-grant-read": f'uri="{ALL_USERS}"',
    }
    got = RequestContext(Principal("k"), "PutObject", (), headers=headers).conditions()
    assert got["s3:object-lock-retain-until-date"] == "2029-12-31T22:00:00.000Z"
    assert int(str(got["s3:object-lock-remaining-retention-days"])) > 365
    assert got["s3:RequestObjectTagKeys"] == ("team", "flag")
    assert (got["s3:RequestObjectTag/team"], got["s3:RequestObjectTag/flag"]) == ("ml", "")
    assert got["s3:x-amz-grant-read"] == f'uri="{ALL_USERS}"'
    bad = RequestContext(Principal("k"), "PutObject", (), headers={"x-amz-object-lock-retain-until-date": "soon"})
    assert not any(k.startswith("s3:object-lock") for k in bad.conditions())
    plain = RequestContext(Principal("k"), "X", ()).conditions()
    assert not any(k.startswith(("s3:Request", "s3:x-amz")) for k in plain)
