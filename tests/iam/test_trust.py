"""trust_admits(): AWS's same-account rules for a role's trust policy, table-driven; with
evaluate() (the trust policy as the resource policy) it decides sts:AssumeRole*."""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam.helpers import ACCOUNT, ALICE, BOB, NOW, SESSION, policy
from tierstore.iam import AuthzRequest, Principal, evaluate, trust_admits

ROLE = f"arn:aws:iam::{ACCOUNT}:role/builder"
IDP = f"arn:aws:iam::{ACCOUNT}:oidc-provider/idp.example.org/realm"
WEB = Principal(arn=IDP, account=ACCOUNT, type="FederatedUser", userid="alice", federated=IDP)


def trust(principal: Any, action: Any = "sts:AssumeRole", **extra: Any) -> Any:
    return policy({"Effect": "Allow", "Principal": principal, "Action": action, **extra}, kind="trust")


ALLOW_ASSUME = policy({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE})


@pytest.mark.parametrize(
    ("trust_policy", "who", "identity", "admitted", "allowed"),
    [
        # named directly: admitted and granted without an identity policy
        (trust({"AWS": ALICE.arn}), ALICE, (), True, True),
        (trust({"AWS": ALICE.arn}), BOB, (ALLOW_ASSUME,), False, True),  # evaluate alone would allow: the gate refuses
        # the account: admitted; the identity policy must allow
        (trust({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}), ALICE, (), True, False),
        (trust({"AWS": ACCOUNT}), ALICE, (ALLOW_ASSUME,), True, True),
        # a role session is named by its role's ARN (role chaining)
        (trust({"AWS": ROLE}), SESSION, (), True, True),
        # web identities: the provider, for the web-identity action only
        (trust({"Federated": IDP}, "sts:AssumeRoleWithWebIdentity"), WEB, (), True, True),
        (trust({"Federated": IDP}, "sts:AssumeRole"), WEB, (), False, False),
        (trust({"AWS": ALICE.arn}, "sts:AssumeRoleWithWebIdentity"), WEB, (), False, False),
    ],
)
def test_trust_rules(trust_policy: Any, who: Principal, identity: Any, admitted: bool, allowed: bool) -> None:
    action = "sts:AssumeRoleWithWebIdentity" if who is WEB else "sts:AssumeRole"
    request = AuthzRequest(who, action, ROLE, {}, NOW)
    assert trust_admits(request, trust_policy) is admitted
    assert evaluate(request, identity=identity, resource=trust_policy).allowed is allowed


def test_trust_conditions_and_explicit_deny() -> None:
    conditional = trust({"Federated": IDP}, "sts:AssumeRoleWithWebIdentity",
                        Condition={"StringEquals": {"idp.example.org/realm:sub": "alice"}})  # fmt: skip
    def ask(sub: str) -> AuthzRequest:
        return AuthzRequest(WEB, "sts:AssumeRoleWithWebIdentity", ROLE, {"idp.example.org/realm:sub": sub}, NOW)
    assert trust_admits(ask("alice"), conditional)
    assert not trust_admits(ask("mallory"), conditional)
    deny_bob = policy(
        {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"},
        {"Effect": "Deny", "Principal": {"AWS": BOB.arn}, "Action": "sts:AssumeRole"},
        kind="trust",
    )
    bob = AuthzRequest(BOB, "sts:AssumeRole", ROLE, {}, NOW)
    assert trust_admits(bob, deny_bob)  # admitted by the account statement ...
    assert not evaluate(bob, identity=(ALLOW_ASSUME,), resource=deny_bob).allowed  # ... but the Deny wins
