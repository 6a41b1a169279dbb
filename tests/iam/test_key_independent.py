"""``iam.key_independent``: when one decision on an object stands for every object of its bucket
(what ``IamAuthorizer`` remembers per (action, bucket)). Table cases, ``Pattern.over_prefix``,
and a Hypothesis property: whenever it says so and an evaluation read no request context, every
other key of the bucket gets the same decision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.iam.helpers import ALICE, ANON, NOW, ROOT, SESSION, policy
from tierstore.iam import AuthzRequest, Decision, Policy, evaluate, key_independent
from tierstore.iam._patterns import Pattern

B = "arn:aws:s3:::b/"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*", True),
        ("arn:aws:s3:::*", True),
        ("arn:aws:s3:::b/*", True),
        ("arn:aws:s3:::b*", True),
        ("arn:aws:s3:::b*/*", True),
        ("arn:aws:s3:::?/*", True),
        ("arn:aws:s3:::b/**", True),
        ("arn:aws:s3:::b", False),  # the bucket itself, not an object
        ("arn:aws:s3:::bb/*", False),
        ("arn:aws:s3:::c/*", False),
        ("arn:aws:s3:::a*", False),
        ("arn:aws:s3:::b/k", None),  # one object
        ("arn:aws:s3:::b/secret/*", None),  # a prefix
        ("arn:aws:s3:::b/*.txt", None),
        ("arn:aws:s3:::b/?*", None),  # not the empty key (there is none; "some" is still the safe answer)
        ("arn:aws:s3:::*/x", None),
        ("arn:aws:s3:::b/${aws:username}/*", None),  # a policy variable
        ("arn:aws:s3:::c/${aws:username}/*", False),  # ... in another bucket
        ("arn:aws:s3:::b/${*}", None),  # the object named "*"
    ],
)
def test_over_prefix(text: str, expected: bool | None) -> None:
    assert Pattern(text, variables_allowed=True).over_prefix(B) is expected


def allow(resource: Any, action: Any = "s3:GetObject", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(resource: Any, action: Any = "s3:GetObject", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


@pytest.mark.parametrize(
    ("statements", "bucket_statements", "expected"),
    [
        ([allow("arn:aws:s3:::b/*")], [], True),
        ([allow(["arn:aws:s3:::b", "arn:aws:s3:::b/*"]), allow("arn:aws:s3:::c/x/*")], [], True),
        ([allow("*"), deny("arn:aws:s3:::c/*")], [], True),
        ([allow("*", Condition={"Bool": {"aws:SecureTransport": "true"}})], [], True),  # read_context decides
        ([allow("arn:aws:s3:::b/*"), deny("arn:aws:s3:::b/secret/*")], [], False),  # a Deny on one prefix
        ([allow("arn:aws:s3:::b/*"), deny("arn:aws:s3:::b/secret/*", action="s3:PutObject")], [], True),
        ([allow("arn:aws:s3:::b/public/*")], [], False),  # a resource with a prefix
        ([allow("arn:aws:s3:::b/home/${aws:username}/*")], [], False),  # a policy variable
        ([{"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::b/x/*"}], [], False),
        ([{"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::c/*"}], [], True),
        ([allow("arn:aws:s3:::b/*")], [deny("arn:aws:s3:::b/locked/*", Principal="*")], False),  # bucket policy
        ([allow("arn:aws:s3:::b/*")], [deny("arn:aws:s3:::b/*", Principal={"AWS": "000000000000"})], True),
    ],
)
def test_key_independent(statements: list[dict[str, Any]], bucket_statements: list[dict[str, Any]],
                         expected: bool) -> None:
    identity = [policy(*statements)]
    bucket = policy(*bucket_statements, kind="resource", name="bp") if bucket_statements else None
    assert key_independent("s3:GetObject", "b", identity=identity, resource=bucket) is expected


def test_session_and_boundary_count_too() -> None:
    identity = [policy(allow("*"))]
    narrow = [policy(allow("arn:aws:s3:::b/public/*"), kind="session", name="s")]
    assert key_independent("s3:GetObject", "b", identity=identity)
    assert not key_independent("s3:GetObject", "b", identity=identity, session=narrow)
    assert not key_independent("s3:GetObject", "b", identity=identity, boundary=[policy(allow("arn:aws:s3:::b/p*"))])
    assert key_independent("s3:GetObject", "c", identity=identity, session=narrow)  # b's prefix is not c's


# --- the property --------------------------------------------------------------------------
RESOURCES = ["*", "arn:aws:s3:::b1/*", "arn:aws:s3:::b1", "arn:aws:s3:::b*", "arn:aws:s3:::b1/home/*",
             "arn:aws:s3:::b1/home/${aws:username}/*", "arn:aws:s3:::b2/x?", "arn:aws:s3:::b?/*",
             "arn:aws:s3:::b1/*.txt", "arn:aws:s3:::b2/*", "arn:aws:s3:::b1/k"]
CONDITIONS = [
    {"Bool": {"aws:SecureTransport": "true"}},
    {"StringEquals": {"s3:ExistingObjectTag/team": "ml"}},
    {"StringNotEquals": {"aws:username": "bob"}},
]
ACTIONS = ["s3:GetObject", "s3:*", "s3:Put*", "*"]
KEYS = ["k", "home/alice/x", "home/bob/a.txt", "xy", "x", "a:b/c", "secret/y.txt", "*"]
TAGS = {"k": "ml", "xy": "ml", "secret/y.txt": "ops"}  # the ExistingObjectTag/team of each key


@st.composite
def statement(draw: st.DrawFn, *, resource_policy: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": draw(st.sampled_from(["Allow", "Allow", "Deny"]))}
    out["Action"] = draw(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2))
    out["NotResource" if draw(st.integers(0, 5)) == 0 else "Resource"] = draw(
        st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=2))
    if draw(st.integers(0, 3)) == 0:
        out["Condition"] = draw(st.sampled_from(CONDITIONS))
    if resource_policy:
        out["Principal"] = "*"
    return out


def evaluated(who: Any, key_arn: str, identity: Sequence[Policy], bucket: Policy | None,
              session: Sequence[Policy]) -> tuple[Decision, bool]:
    def resolve(name: str) -> Sequence[str] | None:
        tag = TAGS.get(key_arn.split("/", 1)[1]) if name == "s3:existingobjecttag/team" else None
        return None if tag is None else (tag,)

    req = AuthzRequest(who, "s3:GetObject", key_arn, {"aws:SecureTransport": ["true"]}, NOW, resolve)
    return evaluate(req, identity=identity, resource=bucket, session=session), req.read_context


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(statement(), min_size=1, max_size=4), max_size=3),
    st.none() | st.lists(statement(resource_policy=True), min_size=1, max_size=3),
    st.lists(st.lists(statement(), min_size=1, max_size=2), max_size=1),
    st.sampled_from([ALICE, ROOT, SESSION, ANON]),
    st.sampled_from(["b1", "b2", "c"]),
    st.sampled_from(KEYS),
)
def test_one_decision_stands_for_every_key(identity_docs: Any, bucket_doc: Any, session_docs: Any, who: Any,
                                           bucket: str, first: str) -> None:
    identity = [policy(*s, name=f"i{i}") for i, s in enumerate(identity_docs)]
    resource = policy(*bucket_doc, kind="resource", name="bp") if bucket_doc else None
    session = [policy(*s, kind="session", name=f"s{i}") for i, s in enumerate(session_docs)]
    if not key_independent("s3:GetObject", bucket, identity=identity, resource=resource, session=session):
        return
    decision, read = evaluated(who, f"arn:aws:s3:::{bucket}/{first}", identity, resource, session)
    if read:
        return  # not reusable (IamAuthorizer remembers only what read no context)
    for key in KEYS:
        assert evaluated(who, f"arn:aws:s3:::{bucket}/{key}", identity, resource, session)[0] == decision, key
