"""Hypothesis properties of evaluate(): monotonicity, narrowing, order independence, and agreement
with a naive evaluator (no per-action plans, no bucket index, no merged regexes)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.iam.helpers import ACCOUNT, ALICE, ANON, BOB, NOW, ROOT, SESSION, policy
from tierstore.iam import AuthzRequest, Decision, Policy, Statement, evaluate

ACTIONS = ["s3:*", "s3:Get*", "s3:GetObject", "s3:PutObject", "s3:List*", "*", "s3:?etObject", "iam:*"]
RESOURCES = ["*", "arn:aws:s3:::b1/*", "arn:aws:s3:::b1", "arn:aws:s3:::b2/home/${aws:username}/*",
             "arn:aws:s3:::b*", "arn:aws:s3:::b2/x?", "arn:aws:s3:::b2/${aws:PrincipalTag/team}/*"]
CONDITIONS = [
    {"Bool": {"aws:SecureTransport": "true"}},
    {"StringLike": {"s3:prefix": "home/*"}},
    {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"StringEqualsIfExists": {"s3:x-amz-acl": "private"}},
    {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}},
    {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}},
    {"Null": {"s3:prefix": "false"}},
    {"StringNotEquals": {"aws:username": "bob"}},
]
PRINCIPALS_FIELD = ["*", {"AWS": ALICE.arn}, {"AWS": ACCOUNT}, {"AWS": BOB.arn}, {"AWS": SESSION.role_arn}]
REQUEST_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject", "iam:CreateUser"]
REQUEST_RESOURCES = ["arn:aws:s3:::b1", "arn:aws:s3:::b1/k", "arn:aws:s3:::b2/home/alice/x",
                     "arn:aws:s3:::b2/home/bob/x", "arn:aws:s3:::b2/xy", "arn:aws:s3:::b2/ml/z", "arn:aws:s3:::c/k"]
CONTEXTS = {
    "aws:SecureTransport": ["true", "false"], "s3:prefix": ["home/a", "x"], "aws:SourceIp": ["10.1.1.1", "8.8.8.8"],
    "s3:x-amz-acl": ["private", "public-read"], "aws:TagKeys": ["a", "b", "c"],
}


@st.composite
def statements(draw: st.DrawFn, *, effect: str | None = None, resource_policy: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": effect or draw(st.sampled_from(["Allow", "Allow", "Allow", "Deny"]))}
    out["NotAction" if draw(st.integers(0, 5)) == 0 else "Action"] = draw(
        st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2))
    out["NotResource" if draw(st.integers(0, 5)) == 0 else "Resource"] = draw(
        st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=2))
    if draw(st.booleans()):
        condition: dict[str, Any] = {}
        for c in draw(st.lists(st.sampled_from(CONDITIONS), min_size=1, max_size=2)):
            for op, block in c.items():
                condition.setdefault(op, {}).update(block)
        out["Condition"] = condition
    if resource_policy:
        out["NotPrincipal" if draw(st.integers(0, 5)) == 0 else "Principal"] = draw(st.sampled_from(PRINCIPALS_FIELD))
    return out


@st.composite
def requests(draw: st.DrawFn) -> AuthzRequest:
    who = draw(st.sampled_from([ALICE, BOB, ANON, ROOT, SESSION]))
    ctx: dict[str, list[str]] = {}
    for key, values in CONTEXTS.items():
        chosen = draw(st.lists(st.sampled_from(values), max_size=2, unique=True))
        if chosen or draw(st.booleans()):
            ctx[key] = chosen
    return AuthzRequest(who, draw(st.sampled_from(REQUEST_ACTIONS)), draw(st.sampled_from(REQUEST_RESOURCES)), ctx, NOW)


identity_docs = st.lists(st.lists(statements(), min_size=1, max_size=4), max_size=3)
bucket_doc = st.none() | st.lists(statements(resource_policy=True), min_size=1, max_size=3)
session_docs = st.lists(st.lists(statements(), min_size=1, max_size=3), max_size=2) | st.just([])
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(identity: list[list[dict[str, Any]]], bucket: list[dict[str, Any]] | None,
          session: list[list[dict[str, Any]]]) -> tuple[list[Policy], Policy | None, list[Policy]]:
    return ([policy(*s, name=f"i{i}") for i, s in enumerate(identity)],
            policy(*bucket, kind="resource", name="bucket") if bucket else None,
            [policy(*s, kind="session", name=f"s{i}") for i, s in enumerate(session)])


def run(req: AuthzRequest, identity: list[Policy], bucket: Policy | None, session: list[Policy],
        boundary: list[Policy] | None = None) -> Decision:
    fresh = AuthzRequest(req.principal, req.action, req.resource, req.conditions, req.now)
    return evaluate(fresh, identity=identity, resource=bucket, session=session, boundary=boundary)


# --- a naive evaluator, straight from the AWS description ------------------------------------
def naive_applies(stmt: Statement, req: AuthzRequest) -> bool:
    from tierstore.iam._evaluate import _principal_applies

    hit = any(p.regex is not None and p.regex.fullmatch(req.action) for p in stmt.actions)
    if hit == stmt.not_action:
        return False
    if stmt.resources is not None:
        resolved = [p.resolve(req.lookup) for p in stmt.resources]
        if None in resolved:
            return False
        hit = any(r is not None and r.fullmatch(req.resource) for r in resolved)
        if hit == stmt.not_resource:
            return False
    if stmt.principal is not None and not _principal_applies(stmt, req.principal):
        return False
    return all(c.holds(req.lookup) for c in stmt.conditions)


def naive(req: AuthzRequest, identity: list[Policy], bucket: Policy | None, session: list[Policy]) -> str:
    p = req.principal
    def any_effect(policies: list[Policy], allow: bool) -> bool:
        return any(s.allow == allow and naive_applies(s, req) for pol in policies for s in pol.statements)
    applicable = ([bucket] if bucket else []) + ([] if p.type in ("Anonymous", "Root") else identity)
    applicable += [] if p.type == "Anonymous" else session
    if any_effect(applicable, allow=False):
        return "explicit_deny"
    if p.type == "Anonymous":
        return "allow" if bucket and any_effect([bucket], allow=True) else "implicit_deny"
    if p.type != "Root" and not (any_effect(identity, True) or (bucket and any_effect([bucket], True))):
        return "implicit_deny"
    if not all(any_effect([s], True) for s in session):
        return "implicit_deny"
    return "allow"


@SETTINGS
@given(identity_docs, bucket_doc, session_docs, requests())
def test_agrees_with_the_naive_evaluator(identity: Any, bucket: Any, session: Any, req: AuthzRequest) -> None:
    ids, b, ss = build(identity, bucket, session)
    decision = run(req, ids, b, ss)
    assert decision.reason == naive(req, ids, b, ss)
    assert decision.allowed == (decision.reason == "allow")


@SETTINGS
@given(identity_docs, bucket_doc, session_docs, requests(), statements(effect="Deny"), st.integers(0, 3))
def test_adding_a_deny_never_grants(identity: Any, bucket: Any, session: Any, req: AuthzRequest,
                                    extra: dict[str, Any], where: int) -> None:
    before = run(req, *build(identity, bucket, session))
    if where == 0:
        identity = [*identity, [extra]]
    elif where == 1 and identity:
        identity = [[*identity[0], extra], *identity[1:]]
    elif where == 2:
        bucket = [*(bucket or []), {**extra, "Principal": "*"}]
    elif session:
        session = [[*session[0], extra], *session[1:]]
    after = run(req, *build(identity, bucket, session))
    assert not (after.allowed and not before.allowed)


@SETTINGS
@given(identity_docs, bucket_doc, session_docs, requests(), statements(effect="Allow"), st.booleans())
def test_adding_an_allow_never_revokes(identity: Any, bucket: Any, session: Any, req: AuthzRequest,
                                       extra: dict[str, Any], to_bucket: bool) -> None:
    before = run(req, *build(identity, bucket, session))
    if to_bucket:
        bucket = [*(bucket or []), {**extra, "Principal": "*"}]
    else:
        identity = [*identity, [extra]]
    after = run(req, *build(identity, bucket, session))
    assert not (before.allowed and not after.allowed)


@SETTINGS
@given(identity_docs, bucket_doc, st.lists(st.lists(statements(), min_size=1, max_size=3), min_size=1, max_size=2),
       requests())
def test_a_session_policy_or_boundary_never_widens(identity: Any, bucket: Any, session: Any, req: AuthzRequest) -> None:
    ids, b, ss = build(identity, bucket, session)
    without = run(req, ids, b, [])
    assert not (run(req, ids, b, ss).allowed and not without.allowed)
    assert not (run(req, ids, b, [], boundary=[policy(*s) for s in session]).allowed and not without.allowed)


@SETTINGS
@given(identity_docs, bucket_doc, session_docs, requests(), st.randoms(use_true_random=False))
def test_independent_of_statement_and_policy_order(identity: Any, bucket: Any, session: Any, req: AuthzRequest,
                                                   rnd: Any) -> None:
    before = run(req, *build(identity, bucket, session))
    identity = [rnd.sample(s, len(s)) for s in rnd.sample(identity, len(identity))]
    bucket = rnd.sample(bucket, len(bucket)) if bucket else bucket
    session = [rnd.sample(s, len(s)) for s in rnd.sample(session, len(session))]
    after = run(req, *build(identity, bucket, session))
    assert (after.allowed, after.reason) == (before.allowed, before.reason)
