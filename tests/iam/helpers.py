"""Shared builders for the iam tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tierstore.iam import AuthzRequest, Decision, Policy, Principal, evaluate, parse_policy

ACCOUNT = "000000000000"
NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
ALICE = Principal(arn=f"arn:aws:iam::{ACCOUNT}:user/alice", account=ACCOUNT, type="User", username="alice",
                  userid="AIDAALICE", tags={"team": "ml", "Project": "Atlas"})
BOB = Principal(arn=f"arn:aws:iam::{ACCOUNT}:user/bob", account=ACCOUNT, type="User", username="bob",
                userid="AIDABOB")
ROOT = Principal.root(ACCOUNT)
ANON = Principal.anonymous()
SESSION = Principal(arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/builder/ci", account=ACCOUNT, type="AssumedRole",
                    userid="AROABUILDER:ci", role_arn=f"arn:aws:iam::{ACCOUNT}:role/builder")


def policy(*statements: Mapping[str, Any], kind: Any = "identity", name: str = "p",
           version: str = "2012-10-17") -> Policy:
    return parse_policy({"Version": version, "Statement": list(statements)}, kind=kind, name=name)


def decide(
    action: str,
    resource: str,
    *,
    identity: Sequence[Policy] = (),
    bucket: Policy | None = None,
    session: Sequence[Policy] = (),
    boundary: Sequence[Policy] | None = None,
    principal: Principal = ALICE,
    ctx: Mapping[str, Sequence[str]] | None = None,
) -> Decision:
    request = AuthzRequest(principal, action, resource, dict(ctx or {}), NOW)
    return evaluate(request, identity=identity, resource=bucket, session=session, boundary=boundary)


def allowed(*args: Any, **kwargs: Any) -> bool:
    return decide(*args, **kwargs).allowed
