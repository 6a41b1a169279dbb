"""parse_policy: what is accepted, and MalformedPolicy naming the statement and the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tierstore.errors import MalformedPolicy, TierstoreError
from tierstore.iam import MAX_POLICY_CHARS, parse_policy


def stmt(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def doc(*statements: dict[str, Any], version: str | None = "2012-10-17") -> dict[str, Any]:
    out: dict[str, Any] = {"Statement": list(statements)}
    if version is not None:
        out["Version"] = version
    return out


def test_accepts_the_documented_shapes() -> None:
    text = json.dumps({
        "Version": "2012-10-17", "Id": "p1",
        "Statement": {"Sid": "One", "Effect": "Deny", "NotAction": ["s3:Get*", "s3:List?ucket"],
                      "NotResource": "arn:aws:s3:::b/${aws:username}/*",
                      "Condition": {"ForAnyValue:StringLikeIfExists": {"aws:TagKeys": ["a*"]},
                                    "Bool": {"aws:SecureTransport": False},
                                    "NumericLessThan": {"s3:max-keys": 10},
                                    "IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]},
                                    "DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"},
                                    "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::000000000000:user/*"},
                                    "Null": {"s3:x-amz-server-side-encryption": "true"},
                                    "StringEquals": {"accounts.google.com:aud": "client",
                                                     "127.0.0.1:8443/realms/x:sub": "u",
                                                     "s3:ExistingObjectTag/project": "p",
                                                     "aws:PrincipalTag/team": "${aws:PrincipalTag/team}"}}},
    })
    for raw in (text, text.encode(), json.loads(text)):
        policy = parse_policy(raw, kind="identity", name="p")
        assert policy.version == "2012-10-17" and policy.id == "p1" and policy.name == "p"
        (s,) = policy.statements
        assert s.sid == "One" and not s.allow and s.not_action and s.not_resource and len(s.conditions) == 11
    bucket = parse_policy(doc(stmt(Principal={"AWS": ["arn:aws:iam::000000000000:user/a", "000000000000"]}),
                              stmt(Principal="*", Sid="x"), stmt(NotPrincipal={"AWS": "*"}, Effect="Deny")),
                          kind="resource")
    assert len(bucket.statements) == 3
    trust = parse_policy(doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
                              "Principal": {"Federated": "arn:aws:iam::000000000000:oidc-provider/idp"}}),
                         kind="trust")
    assert trust.statements[0].resources is None
    assert parse_policy(doc(stmt(), version=None), kind="identity").version == "2008-10-17"
    assert parse_policy(doc(stmt(Action="*", Resource="*")), kind="session").statements[0].label == "#0"


@pytest.mark.parametrize(("kind", "raw", "message"), [
    ("identity", "{not json", "not valid JSON"),
    ("identity", "[]", "must be a JSON object"),
    ("identity", {"Version": "2012-10-17"}, "Statement is required"),
    ("identity", {"Version": "2012-10-17", "Statement": []}, "non-empty"),
    ("identity", {"Version": "2019-01-01", "Statement": [stmt()]}, "Version must be"),
    ("identity", {"Version": "2012-10-17", "Statement": [stmt()], "Extra": 1}, "unknown top-level field 'Extra'"),
    ("identity", doc(stmt(Effect="allow")), "Statement[0]: Effect must be"),
    ("identity", doc(stmt(), stmt(Sid="B", Effect=None)), "Statement[1] (Sid 'B'): Effect must be"),
    ("identity", doc(stmt(Action=None)), "Action (or NotAction) is required"),
    ("identity", doc(stmt(Resource=None)), "Resource (or NotResource) is required"),
    ("identity", doc(stmt(NotAction="s3:*")), "Action or NotAction, not both"),
    ("identity", doc(stmt(Action="ec2:RunInstances")), "Action 'ec2:RunInstances' names an unknown service"),
    ("identity", doc(stmt(Action="GetObject")), "is not an action"),
    ("identity", doc(stmt(Action=[])), "Action must not be empty"),
    ("identity", doc(stmt(Action=[3])), "Action must be a string"),
    ("identity", doc(stmt(Resource="bucket/*")), "Resource 'bucket/*' is not an ARN"),
    ("identity", doc(stmt(Principal="*")), "Principal is not allowed in an identity policy"),
    ("session", doc(stmt(NotPrincipal="*")), "NotPrincipal is not allowed in a session policy"),
    ("resource", doc(stmt()), "Principal (or NotPrincipal) is required"),
    ("resource", doc(stmt(Principal={"CanonicalUser": "x"})), "Principal type 'CanonicalUser' is not supported"),
    ("resource", doc(stmt(Principal={"AWS": "alice"})), "Principal.AWS 'alice' is not"),
    ("trust", doc(stmt(Principal="*")), "Resource is not allowed in a trust policy"),
    ("identity", doc(stmt(Actions="s3:*")), "unknown field 'Actions'"),
    ("identity", doc(stmt(Sid="A"), stmt(Sid="A")), "Sid 'A' appears in more than one statement"),
    ("identity", doc(stmt(Condition={"StringEqualz": {"s3:prefix": "a"}})), "operator 'StringEqualz'"),
    ("identity", doc(stmt(Condition={"StringEquals": {"aws:usrname": "a"}})), "unknown condition key 'aws:usrname'"),
    ("identity", doc(stmt(Condition={"StringEquals": {"s3:prefixx": "a"}})), "unknown condition key 's3:prefixx'"),
    ("identity", doc(stmt(Condition={"StringEquals": {"prefix": "a"}})), "unknown condition key 'prefix'"),
    ("identity", doc(stmt(Condition={"StringEquals": {"aws:PrincipalTag/": "a"}})), "needs a tag key"),
    ("identity", doc(stmt(Condition={"NumericEquals": {"s3:max-keys": "ten"}})), "'ten' is not a number"),
    ("identity", doc(stmt(Condition={"DateLessThan": {"aws:CurrentTime": "soon"}})), "not an ISO 8601 date"),
    ("identity", doc(stmt(Condition={"Bool": {"aws:SecureTransport": "yes"}})), "'yes' is not true or false"),
    ("identity", doc(stmt(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}})), "not an IPv4 or IPv6"),
    ("identity", doc(stmt(Condition={"Null": {"s3:prefix": "maybe"}})), "Null takes one value"),
    ("identity", doc(stmt(Condition={"NullIfExists": {"s3:prefix": "true"}})), "Null takes no prefix"),
    ("identity", doc(stmt(Condition={"StringEquals": {"s3:prefix": []}})), "must not be empty"),
    ("identity", doc(stmt(Condition={"StringEquals": {"s3:prefix": {"a": 1}}})), "must be a string"),
    ("identity", doc(stmt(Condition={"StringEquals": "x"})), "must be a non-empty object"),
    ("identity", doc(stmt(Condition=["x"])), "Condition must be an object"),
    ("identity", doc(stmt(Resource="arn:aws:s3:::b/${aws:nosuch}/*")), "policy variable ${aws:nosuch}"),
    ("identity", doc(stmt(Condition={"StringLike": {"s3:prefix": "${s3:bogus}/*"}})), "policy variable ${s3:bogus}"),
])
def test_malformed(kind: Any, raw: Any, message: str) -> None:
    with pytest.raises(MalformedPolicy) as info:
        parse_policy(raw, kind=kind)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TierstoreError)
    assert info.value.code == "MalformedPolicy"


def test_size_limits() -> None:
    statements = [stmt(Sid=f"S{i}", Resource=f"arn:aws:s3:::bucket-{i:04d}/*") for i in range(120)]
    big = doc(*statements)
    size = len(json.dumps(big, separators=(",", ":")))
    assert MAX_POLICY_CHARS["identity"] < size < MAX_POLICY_CHARS["resource"]
    with pytest.raises(MalformedPolicy, match="the limit is 6144"):
        parse_policy(big, kind="identity")
    # whitespace does not count for identity policies (AWS), it does for bucket policies (bytes)
    small = doc(*statements[:40])
    parse_policy(json.dumps(small, indent=40), kind="identity")
    with pytest.raises(MalformedPolicy, match="the limit is 20480"):
        parse_policy(json.dumps(small, indent=40), kind="resource")


def test_version_2008_treats_variables_as_literal_text() -> None:
    policy = parse_policy(doc(stmt(Resource="arn:aws:s3:::b/${aws:nosuch}"), version="2008-10-17"), kind="identity")
    assert policy.statements[0].resources is not None
    assert policy.statements[0].resources[0].variables == ()


def test_mapping_status_of_malformed_policy() -> None:
    from tierstore.api._errors import status_of

    assert status_of(MalformedPolicy("x")) == 400
