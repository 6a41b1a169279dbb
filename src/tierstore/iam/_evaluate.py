"""The AWS policy evaluation logic for one account, as a pure function (no I/O).

Order (AWS "Policy evaluation logic", single account), as implemented by ``evaluate``:
1. An explicit Deny in any policy that applies (resource, identity, boundary, session) -> deny.
2. Anonymous callers: allowed only by a resource-policy Allow that names them ("*").
3. The root: allowed (it has no identity policies), unless step 1 denied or a session policy
   it carries does not allow.
4. Others: an Allow from an identity policy or from the resource policy (naming the caller,
   its role, or "*") is needed; then a permissions boundary, when given, must also allow; then
   every session policy layer given (STS session policy, service-account policy) must allow.
   Otherwise implicit deny.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from tierstore.iam._patterns import Pattern
from tierstore.iam._policy import Policy, PrincipalSpec, Statement

__all__ = [
    "AuthzRequest",
    "Decision",
    "PolicySet",
    "Principal",
    "compile_policies",
    "evaluate",
    "key_independent",
    "s3_resource_arn",
    "trust_admits",
]

PrincipalType = Literal["User", "AssumedRole", "Root", "Anonymous", "FederatedUser"]
DecisionReason = Literal["explicit_deny", "allow", "implicit_deny"]
_S3_ARN = "arn:aws:s3:::"
PolicyRole = Literal["identity", "resource", "session", "boundary", "root"]
_CACHE_MAX = 4096


def s3_resource_arn(bucket: str = "", key: str | None = None) -> str:
    """The resource ARN policies match for an S3 request: ``arn:aws:s3:::bucket`` for a bucket
    operation, ``arn:aws:s3:::bucket/key`` for an object (the key as is, not URL-encoded), ``*``
    for a service operation such as ListBuckets (no bucket)."""
    if not bucket:
        return "*"
    return f"{_S3_ARN}{bucket}" if key is None else f"{_S3_ARN}{bucket}/{key}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. ``arn`` is the caller's own ARN (for a role session its
    ``arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION``), ``role_arn`` the role's ARN for a role
    session (a resource policy naming the role applies to its sessions; aws:PrincipalArn is the
    role ARN then). ``federated``: the identity provider of a web-identity caller (trust policies).
    """

    arn: str
    account: str
    type: PrincipalType
    username: str = ""
    userid: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    role_arn: str = ""
    federated: str = ""
    service: str = ""

    @classmethod
    def root(cls, account: str) -> Principal:
        return cls(arn=f"arn:aws:iam::{account}:root", account=account, type="Root", userid=account)

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(arn="", account="", type="Anonymous", userid="anonymous")


@dataclass(slots=True)
class AuthzRequest:
    """One authorization question. ``conditions``: request context keys (``aws:SourceIp``,
    ``s3:prefix``, ...; names case-insensitive) to their values. The principal-derived keys
    (aws:username, aws:userid, aws:PrincipalArn, aws:PrincipalType, aws:PrincipalAccount,
    aws:PrincipalTag/*) and the time keys (aws:CurrentTime, aws:EpochTime, from ``now``) are
    computed here and cannot be overridden through ``conditions``.
    """

    principal: Principal
    action: str
    resource: str
    conditions: Mapping[str, Sequence[str]] = field(default_factory=dict)
    now: datetime | None = None
    # Keys too costly to compute up front (s3:ExistingObjectTag/<k> reads the object's tags):
    # asked, with the lowercased key, only when a statement that applies names a key that
    # ``conditions`` lacks; None when the request has no value.
    resolve: Callable[[str], Sequence[str] | None] | None = None
    _context: Mapping[str, Sequence[str]] | None = field(default=None, init=False, repr=False, compare=False)
    _bucket: str | None = field(default=None, init=False, repr=False, compare=False)
    # Whether the evaluation read any context key (a condition, a policy variable, a tag): when it
    # did not, its decision is a function of the principal, the action, the resource and the
    # policies alone, and a caller may reuse it for the same (action, resource).
    read_context: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        resource = self.resource
        if resource.startswith(_S3_ARN):
            self._bucket = resource[13:].split("/", 1)[0]

    def lookup(self, key: str) -> Sequence[str] | None:
        """The values of a (lowercased) condition key, or None when the request has none."""
        self.read_context = True
        derived = _DERIVED.get(key)
        if derived is not None:
            return derived(self)
        if key.startswith("aws:principaltag/"):
            tags = self.principal.tags
            wanted = key[len("aws:principaltag/"):]
            for tag, value in tags.items():
                if tag.lower() == wanted:
                    return (value,)
            return None
        ctx = self._context
        if ctx is None:
            ctx = self._context = {
                k.lower(): (v,) if isinstance(v, str) else v for k, v in self.conditions.items()
            }
        found = ctx.get(key)
        if found is None and self.resolve is not None:
            return self.resolve(key)
        return found


def _now(req: AuthzRequest) -> datetime | None:
    now = req.now
    if now is None:
        return None
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _current_time(req: AuthzRequest) -> Sequence[str] | None:
    now = _now(req)
    return None if now is None else (now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),)


def _epoch_time(req: AuthzRequest) -> Sequence[str] | None:
    now = _now(req)
    return None if now is None else (str(int(now.timestamp())),)


def _opt(value: str) -> Sequence[str] | None:
    return (value,) if value else None


def _principal_arn(req: AuthzRequest) -> Sequence[str] | None:
    p = req.principal
    return None if p.type == "Anonymous" else (p.role_arn or p.arn,)


def _principal_account(req: AuthzRequest) -> Sequence[str] | None:
    p = req.principal
    return None if p.type == "Anonymous" else _opt(p.account)


# Keys computed from the principal and the clock; never taken from AuthzRequest.conditions.
_DERIVED: dict[str, Callable[[AuthzRequest], Sequence[str] | None]] = {
    "aws:username": lambda r: _opt(r.principal.username),
    "aws:userid": lambda r: _opt(r.principal.userid),
    "aws:principalarn": _principal_arn,
    "aws:principalaccount": _principal_account,
    "aws:principaltype": lambda r: ("Account" if r.principal.type == "Root" else r.principal.type,),
    "aws:federatedprovider": lambda r: _opt(r.principal.federated),
    "aws:currenttime": _current_time,
    "aws:epochtime": _epoch_time,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer, and what decided it (for the audit log).

    ``policy``: the deciding policy's name (None for an implicit deny with no Allow anywhere,
    or for the root); ``source``: which kind of policy it was; ``statement``: its Sid, else
    ``#<0-based index>``.
    """

    allowed: bool
    reason: DecisionReason
    policy: str | None = None
    source: PolicyRole | None = None
    statement: str | None = None


IMPLICIT_DENY = Decision(False, "implicit_deny")
ROOT_ALLOW = Decision(True, "allow", None, "root", None)


# --- compiled plans -------------------------------------------------------------------------
_Entry = tuple[Statement, Decision]


def _principal_matches(spec: PrincipalSpec, p: Principal, *, broad: bool) -> bool:
    """``broad``: an account principal covers every caller of the account (used where matching
    more means less access); otherwise only the root (AWS: naming an account in a resource
    policy delegates to it; its users still need an identity policy)."""
    if spec.everyone:
        return True
    if p.type == "Anonymous":
        return False
    if p.arn in spec.arns or (p.role_arn and p.role_arn in spec.arns):
        return True
    if p.account in spec.accounts and (broad or p.type == "Root"):
        return True
    return bool((p.federated and p.federated in spec.federated) or (p.service and p.service in spec.services))


def _principal_applies(stmt: Statement, p: Principal) -> bool:
    assert stmt.principal is not None
    if stmt.not_principal:
        return not _principal_matches(stmt.principal, p, broad=stmt.allow)
    return _principal_matches(stmt.principal, p, broad=not stmt.allow)


def _resource_applies(stmt: Statement, req: AuthzRequest) -> bool:
    if stmt.resources is None:
        return True
    hit = False
    for pattern in stmt.resources:
        regex = pattern.regex if pattern.regex is not None else pattern.resolve(req.lookup)
        if regex is None:
            return False  # an unresolved policy variable: the statement does not apply (AWS)
        if regex.fullmatch(req.resource) is not None:
            hit = True
    return hit != stmt.not_resource


def _rest_applies(stmt: Statement, req: AuthzRequest) -> bool:
    """Principal and conditions (action and resource already matched)."""
    if stmt.principal is not None and not _principal_applies(stmt, req.principal):
        return False
    if stmt.conditions:
        lookup = req.lookup
        for c in stmt.conditions:
            if not c.holds(lookup):
                return False
    return True


def _bucket_of_pattern(pattern: Pattern) -> str | None:
    """The literal bucket an S3 resource pattern is confined to, or None (wildcard/variable there)."""
    text = pattern.text
    if not text.startswith(_S3_ARN):
        return None
    head = text[len(_S3_ARN):]
    bucket = head.split("/", 1)[0]
    if not bucket or any(ch in bucket for ch in "*?$"):
        return None
    return bucket


class _Index:
    """Statements with a Resource element (one effect, one action, one bucket or the wildcard
    group), matched together by one combined regex per binding of their policy variables."""

    __slots__ = ("_regexes", "decisions", "statements", "variables")

    def __init__(self, entries: Sequence[_Entry]) -> None:
        self.statements = tuple(s for s, _ in entries)
        self.decisions = tuple(d for _, d in entries)
        self.variables = tuple(sorted({v for s in self.statements for p in s.resources or () for v in p.variables}))
        self._regexes: dict[tuple[str | None, ...], re.Pattern[str]] = {}

    def _regex(self, req: AuthzRequest) -> re.Pattern[str]:
        variables = self.variables
        if not variables:
            binding: tuple[str | None, ...] = ()
        elif len(variables) == 1:
            binding = (_single(req.lookup(variables[0])),)
        else:
            binding = tuple(_single(req.lookup(v)) for v in variables)
        regex = self._regexes.get(binding)
        if regex is None:
            bound = dict(zip(self.variables, binding, strict=True))

            def lookup(key: str) -> Sequence[str] | None:
                value = bound.get(key)
                return None if value is None else (value,)
            alternatives = []
            for stmt in self.statements:
                resolved = [p.resolve(lookup) for p in stmt.resources or ()]
                # An unresolved policy variable makes the whole statement inapplicable (AWS).
                body = "(?!)" if None in resolved else "|".join(f"(?:{r.pattern})" for r in resolved if r)
                alternatives.append(f"({body})")
            if len(self._regexes) >= 256:
                self._regexes.clear()
            regex = self._regexes[binding] = re.compile("|".join(alternatives), re.DOTALL)
        return regex

    def first(self, req: AuthzRequest) -> Decision | None:
        m = self._regex(req).fullmatch(req.resource)
        if m is None:
            return None
        i = (m.lastindex or 1) - 1  # group i+1 is statement i (the patterns have no groups of their own)
        stmt = self.statements[i]
        if (stmt.principal is None and not stmt.conditions) or _rest_applies(stmt, req):
            return self.decisions[i]
        # That statement's principal or conditions failed: the later ones, one by one.
        for j in range(i + 1, len(self.statements)):
            stmt = self.statements[j]
            if _resource_applies(stmt, req) and _rest_applies(stmt, req):
                return self.decisions[j]
        return None


def _single(values: Sequence[str] | None) -> str | None:
    return values[0] if values is not None and len(values) == 1 else None


class _EffectPlan:
    """The statements of one effect applying to one action: indexed by S3 bucket where the
    Resource names one literally, one wildcard group, and the rest (NotResource, no Resource)."""

    __slots__ = ("by_bucket", "others", "wild")

    def __init__(self, entries: list[_Entry]) -> None:
        buckets: dict[str, list[_Entry]] = {}
        wild: list[_Entry] = []
        others: list[_Entry] = []
        for stmt, decision in entries:
            if stmt.resources is None or stmt.not_resource:
                others.append((stmt, decision))
                continue
            names = {_bucket_of_pattern(p) for p in stmt.resources}
            if None in names:
                wild.append((stmt, decision))
                continue
            for name in names:
                assert name is not None
                buckets.setdefault(name, []).append((stmt, decision))
        self.by_bucket = {name: _Index(group) for name, group in buckets.items()}
        self.wild = _Index(wild) if wild else None
        self.others = tuple(others)

    def first(self, req: AuthzRequest) -> Decision | None:
        if self.by_bucket:
            index = self.by_bucket.get(req._bucket or "")
            if index is not None:
                found = index.first(req)
                if found is not None:
                    return found
        if self.wild is not None:
            found = self.wild.first(req)
            if found is not None:
                return found
        for stmt, decision in self.others:
            if _resource_applies(stmt, req) and _rest_applies(stmt, req):
                return decision
        return None


def _over_bucket(stmt: Statement, prefix: str) -> bool | None:
    """Whether ``stmt``'s Resource (or NotResource) covers every string starting with ``prefix``
    (True), none (False), or some or not known (None; see ``Pattern.over_prefix``)."""
    if stmt.resources is None:
        return True
    found = {p.over_prefix(prefix) for p in stmt.resources}
    if None in found:
        return None
    return (True in found) != stmt.not_resource


class _Plan:
    """The statements of a policy set that apply to one action, split by effect."""

    __slots__ = ("_uniform", "allow", "deny", "statements")

    def __init__(self, entries: Sequence[tuple[Statement, Decision, Decision]]) -> None:
        deny = _EffectPlan([(s, d) for s, d, _ in entries if not s.allow])
        allow = _EffectPlan([(s, a) for s, _, a in entries if s.allow])
        self.deny = deny.first
        self.allow = allow.first
        self.statements = tuple(s for s, _, _ in entries)
        self._uniform: dict[str, bool] = {}

    def key_independent(self, bucket: str) -> bool:
        """Whether every statement of this plan matches all objects of ``bucket`` or none of them
        (by Resource/NotResource alone; cached per bucket)."""
        found = self._uniform.get(bucket)
        if found is None:
            prefix = f"{_S3_ARN}{bucket}/"
            found = all(_over_bucket(s, prefix) is not None for s in self.statements)
            if len(self._uniform) >= _CACHE_MAX:
                self._uniform.clear()
            self._uniform[bucket] = found
        return found


class PolicySet:
    """Policies compiled together (a union: any Allow in any of them counts), with a per-action
    plan cache. Build once per set (``compile_policies``); ``evaluate`` also caches them."""

    __slots__ = ("_entries", "_plans", "policies")

    def __init__(self, policies: Sequence[Policy], source: PolicyRole) -> None:
        self.policies = tuple(policies)
        self._entries = tuple(
            (stmt, Decision(False, "explicit_deny", p.name, source, stmt.label),
             Decision(True, "allow", p.name, source, stmt.label))
            for p in self.policies for stmt in p.statements
        )
        self._plans: dict[str, _Plan] = {}

    def plan(self, action: str) -> _Plan:
        plan = self._plans.get(action)
        if plan is None:
            if len(self._plans) >= _CACHE_MAX:
                self._plans.clear()
            plan = self._plans[action] = _Plan([e for e in self._entries if _action_matches(e[0], action)])
        return plan


def _action_matches(stmt: Statement, action: str) -> bool:
    hit = any(p.regex is not None and p.regex.fullmatch(action) is not None for p in stmt.actions)
    return hit != stmt.not_action


_SETS: dict[tuple[str, tuple[Policy, ...]], PolicySet] = {}
_SINGLES: dict[str, dict[Policy, PolicySet]] = {"resource": {}, "session": {}}


def _single_set(policy: Policy, source: Literal["resource", "session"]) -> PolicySet:
    cache = _SINGLES[source]
    found = cache.get(policy)
    if found is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        found = cache[policy] = PolicySet((policy,), source)
    return found


def compile_policies(policies: Sequence[Policy] | PolicySet, source: PolicyRole = "identity") -> PolicySet:
    """The compiled set for ``policies`` (cached by the identity of the Policy objects)."""
    if isinstance(policies, PolicySet):
        return policies
    key = (source, tuple(policies))
    found = _SETS.get(key)
    if found is None:
        if len(_SETS) >= _CACHE_MAX:
            _SETS.clear()
        found = _SETS[key] = PolicySet(key[1], source)
    return found


def evaluate(
    request: AuthzRequest,
    *,
    identity: Sequence[Policy] | PolicySet,
    resource: Policy | None = None,
    session: Sequence[Policy] = (),
    boundary: Sequence[Policy] | PolicySet | None = None,
) -> Decision:
    """Is ``request`` allowed? See the module docstring for the order.

    ``identity``: every identity policy of the caller (user inline + managed + groups', or the
    role's): a union. ``resource``: the bucket policy. ``session``: narrowing layers, each of
    which must allow (an STS session policy, a service account's inline policy). ``boundary``:
    a permissions boundary (a union of its policies); None when there is none.
    """
    ptype = request.principal.type
    action = request.action
    anonymous = ptype == "Anonymous"
    root = ptype == "Root"
    resource_plan = _single_set(resource, "resource").plan(action) if resource is not None else None
    identity_plan = None if anonymous or root else compile_policies(identity, "identity").plan(action)
    boundary_plan = None
    if boundary is not None and not (anonymous or root):
        boundary_plan = compile_policies(boundary, "boundary").plan(action)
    session_plans = [_single_set(s, "session").plan(action) for s in session] if session and not anonymous else ()

    # 1. explicit deny anywhere
    if resource_plan is not None and (denied := resource_plan.deny(request)) is not None:
        return denied
    if identity_plan is not None and (denied := identity_plan.deny(request)) is not None:
        return denied
    if boundary_plan is not None and (denied := boundary_plan.deny(request)) is not None:
        return denied
    for plan in session_plans:
        if (denied := plan.deny(request)) is not None:
            return denied
    # 2. anonymous
    if anonymous:
        granted = resource_plan.allow(request) if resource_plan is not None else None
        return granted if granted is not None else IMPLICIT_DENY
    # 3./4. who grants
    if root:
        granted = ROOT_ALLOW
    else:
        assert identity_plan is not None
        granted = identity_plan.allow(request)
        if granted is None and resource_plan is not None:
            granted = resource_plan.allow(request)
        if granted is None:
            return IMPLICIT_DENY
        if boundary_plan is not None and boundary_plan.allow(request) is None:
            return Decision(False, "implicit_deny", _names(boundary), "boundary", None)
    for plan, policy in zip(session_plans, session, strict=True):
        if plan.allow(request) is None:
            return Decision(False, "implicit_deny", policy.name, "session", None)
    return granted


def key_independent(
    action: str,
    bucket: str,
    *,
    identity: Sequence[Policy] | PolicySet,
    resource: Policy | None = None,
    session: Sequence[Policy] = (),
    boundary: Sequence[Policy] | PolicySet | None = None,
) -> bool:
    """Whether ``evaluate`` of ``action`` on an object of ``bucket`` with these policies takes
    the same path for every object key of the bucket, as far as it reads no context key: every
    statement for ``action`` in every policy given (both effects; identity, resource, session,
    boundary) has a Resource/NotResource that covers all of the bucket's objects or none of them,
    without policy variables (a Deny on a prefix, an Allow of ``b/home/*``, a ``${aws:username}``
    make it False). Then a decision on one object that did not read the request context
    (``AuthzRequest.read_context`` False: no condition, variable or tag was looked at) is the
    decision on every object of the bucket: the statements that apply are the same ones, in the
    same order. Each plan caches its answer per bucket."""
    sets: list[PolicySet] = [compile_policies(identity, "identity")]
    if resource is not None:
        sets.append(_single_set(resource, "resource"))
    if boundary is not None:
        sets.append(compile_policies(boundary, "boundary"))
    sets.extend(_single_set(s, "session") for s in session)
    return all(ps.plan(action).key_independent(bucket) for ps in sets)


def _names(policies: Sequence[Policy] | PolicySet | None) -> str | None:
    if policies is None:
        return None
    items = policies.policies if isinstance(policies, PolicySet) else policies
    return ",".join(p.name for p in items) or None


def trust_admits(request: AuthzRequest, trust: Policy) -> bool:
    """Whether a role's trust policy lets ``request.principal`` even ask (``sts:AssumeRole*``).

    AWS's same-account rule for roles: the trust policy must have an Allow statement for the
    action whose principal covers the caller — the caller itself (its ARN, its role's for a
    role session, its identity provider), or its account (``arn:aws:iam::ACCOUNT:root``), with
    its conditions holding. Naming the caller itself grants on its own (``evaluate`` with the
    trust policy as ``resource`` finds that Allow); naming the account only admits, and an
    identity policy must then allow the action. Explicit denies are ``evaluate``'s."""
    for stmt in trust.statements:
        if not stmt.allow or not _action_matches(stmt, request.action):
            continue
        spec = stmt.principal
        if spec is not None and _principal_matches(spec, request.principal, broad=True) == stmt.not_principal:
            continue
        if all(c.holds(request.lookup) for c in stmt.conditions):
            return True
    return False
