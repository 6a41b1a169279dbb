"""Parsing and validating IAM policy documents into compiled, immutable ``Policy`` objects."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tierstore.errors import MalformedPolicy
from tierstore.iam._conditions import Condition, check_condition_key
from tierstore.iam._patterns import Pattern

__all__ = ["MAX_POLICY_CHARS", "SERVICES", "Policy", "PolicyKind", "PrincipalSpec", "Statement", "parse_policy"]

PolicyKind = Literal["identity", "resource", "session", "trust"]
VERSIONS = ("2012-10-17", "2008-10-17")
SERVICES = ("s3", "iam", "sts", "kms", "tierstore")  # kms: the key service (api/_kms_ext.py)
# AWS's limits: a managed identity policy 6,144 characters (whitespace not counted), a session
# policy 2,048, a role trust policy 2,048 by default (4,096 at most), a bucket policy 20 KB.
MAX_POLICY_CHARS: dict[str, int] = {"identity": 6144, "session": 2048, "trust": 4096, "resource": 20 * 1024}
_STATEMENT_FIELDS = frozenset(
    {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_ACTION = re.compile(r"^(\*|([a-z0-9-]+):([A-Za-z0-9*?]+))$", re.IGNORECASE)
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_PRINCIPAL_TYPES = ("AWS", "Federated", "Service")


@dataclass(frozen=True, slots=True)
class PrincipalSpec:
    """The principals a statement's Principal (or NotPrincipal) names.

    ``everyone``: ``"*"`` or ``{"AWS": "*"}`` (anonymous callers included). ``arns``: exact
    user/role/session ARNs. ``accounts``: account ids (from ``123456789012`` or
    ``arn:aws:iam::123456789012:root``). ``federated`` and ``services``: the other principal types.
    """

    everyone: bool = False
    arns: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    federated: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, eq=False)
class Statement:
    index: int  # 0-based position in the document
    sid: str
    allow: bool
    actions: tuple[Pattern, ...]
    not_action: bool
    resources: tuple[Pattern, ...] | None  # None: no Resource element (trust policies)
    not_resource: bool
    principal: PrincipalSpec | None
    not_principal: bool
    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        """How the audit log names this statement: its Sid, else its 0-based index."""
        return self.sid or f"#{self.index}"


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """A parsed, validated, compiled policy. Compare by identity; evaluation caches by identity."""

    kind: PolicyKind
    name: str
    version: str
    id: str
    statements: tuple[Statement, ...]
    document: Mapping[str, Any]  # the document as parsed (for GetBucketPolicy-style echo)


def _fail(where: str, message: str) -> MalformedPolicy:
    return MalformedPolicy(f"{where}: {message}" if where else message)


def _str_list(value: object, where: str, field: str, *, allow_scalars: bool = False) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    if not items:
        raise _fail(where, f"{field} must not be empty")
    for item in items:
        if isinstance(item, bool) and allow_scalars:
            out.append("true" if item else "false")
        elif isinstance(item, int | float) and not isinstance(item, bool) and allow_scalars:
            out.append(str(item))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise _fail(where, f"{field} must be a string or a list of strings, not {type(item).__name__}")
    return out


def _check_variable(name: str) -> None:
    problem = check_condition_key(name)
    if problem is not None:
        raise ValueError(f"policy variable ${{{name}}}: {problem}")


def _parse_actions(value: object, where: str, field: str) -> tuple[Pattern, ...]:
    out = []
    for action in _str_list(value, where, field):
        m = _ACTION.match(action)
        if not m:
            raise _fail(where, f"{field} {action!r} is not an action ('service:Name', wildcards * and ?)")
        if action != "*" and m.group(2).lower() not in SERVICES:
            raise _fail(where, f"{field} {action!r} names an unknown service "
                               f"(known: {', '.join(s + ':' for s in SERVICES)})")
        out.append(Pattern(action, variables_allowed=False, ignore_case=True))
    return tuple(out)


def _parse_resources(value: object, where: str, field: str, version: str) -> tuple[Pattern, ...]:
    out = []
    for resource in _str_list(value, where, field):
        if resource != "*" and not (resource.startswith("arn:") and resource.count(":") >= 5):
            raise _fail(where, f"{field} {resource!r} is not an ARN ('arn:aws:s3:::bucket/key') or '*'")
        try:
            out.append(Pattern(resource, variables_allowed=version == "2012-10-17", check_variable=_check_variable))
        except ValueError as exc:
            raise _fail(where, f"{field}: {exc}") from None
    return tuple(out)


def _parse_principal(value: object, where: str, field: str) -> PrincipalSpec:
    if value == "*":
        return PrincipalSpec(everyone=True)
    if not isinstance(value, dict) or not value:
        raise _fail(where, f"{field} must be \"*\" or an object such as {{\"AWS\": [arn, ...]}}")
    everyone = False
    arns: set[str] = set()
    accounts: set[str] = set()
    federated: set[str] = set()
    services: set[str] = set()
    for ptype, ids in value.items():
        if ptype not in _PRINCIPAL_TYPES:
            raise _fail(where, f"{field} type {ptype!r} is not supported (supported: {', '.join(_PRINCIPAL_TYPES)})")
        for ident in _str_list(ids, where, f"{field}.{ptype}"):
            if ptype == "AWS":
                if ident == "*":
                    everyone = True
                elif _ACCOUNT.match(ident):
                    accounts.add(ident)
                elif m := re.fullmatch(r"arn:aws:iam::([0-9]{12}):root", ident):
                    accounts.add(m.group(1))
                elif re.fullmatch(r"arn:aws:(iam|sts)::[0-9]{12}:(user|role|assumed-role|federated-user)/\S+", ident):
                    arns.add(ident)
                else:
                    raise _fail(where, f"{field}.AWS {ident!r} is not \"*\", an account id or a user/role ARN")
            elif ptype == "Federated":
                federated.add(ident)
            else:
                services.add(ident)
    return PrincipalSpec(everyone, frozenset(arns), frozenset(accounts), frozenset(federated), frozenset(services))


def _parse_condition(value: object, where: str, version: str) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise _fail(where, "Condition must be an object {operator: {key: value(s)}}")
    out = []
    for operator, block in value.items():
        if not isinstance(block, dict) or not block:
            raise _fail(where, f"Condition {operator!r} must be a non-empty object {{key: value(s)}}")
        for key, raw in block.items():
            problem = check_condition_key(key)
            if problem is not None:
                raise _fail(where, f"Condition {operator!r}: {problem}")
            values = _str_list(raw, where, f"Condition {operator!r} {key!r}", allow_scalars=True)
            try:
                out.append(Condition(operator, key, values, version=version, var_check=_check_variable))
            except ValueError as exc:
                raise _fail(where, f"Condition {operator!r} {key!r}: {exc}") from None
    return tuple(out)


def _parse_statement(raw: object, index: int, kind: PolicyKind, version: str) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise _fail(where, "a statement must be a JSON object")
    sid = raw.get("Sid", "")
    if not isinstance(sid, str):
        raise _fail(where, "Sid must be a string")
    if sid:
        where = f"Statement[{index}] (Sid {sid!r})"
    unknown = sorted(set(raw) - _STATEMENT_FIELDS)
    if unknown:
        raise _fail(where, f"unknown field {unknown[0]!r}")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise _fail(where, f"Effect must be \"Allow\" or \"Deny\", not {effect!r}")

    def one_of(a: str, b: str, *, required: bool) -> tuple[str, object] | None:
        if a in raw and b in raw:
            raise _fail(where, f"a statement has {a} or {b}, not both")
        if a in raw:
            return a, raw[a]
        if b in raw:
            return b, raw[b]
        if required:
            raise _fail(where, f"{a} (or {b}) is required")
        return None

    act = one_of("Action", "NotAction", required=True)
    assert act is not None
    actions = _parse_actions(act[1], where, act[0])
    res = one_of("Resource", "NotResource", required=kind != "trust")
    if res is not None and kind == "trust":
        raise _fail(where, f"{res[0]} is not allowed in a trust policy")
    resources = _parse_resources(res[1], where, res[0], version) if res is not None else None
    prin = one_of("Principal", "NotPrincipal", required=kind in ("resource", "trust"))
    if prin is not None and kind not in ("resource", "trust"):
        raise _fail(where, f"{prin[0]} is not allowed in an {kind} policy" if kind == "identity"
                    else f"{prin[0]} is not allowed in a {kind} policy")
    principal = _parse_principal(prin[1], where, prin[0]) if prin is not None else None
    conditions = _parse_condition(raw["Condition"], where, version) if "Condition" in raw else ()
    return Statement(
        index=index, sid=sid, allow=effect == "Allow", actions=actions, not_action=act[0] == "NotAction",
        resources=resources, not_resource=res is not None and res[0] == "NotResource",
        principal=principal, not_principal=prin is not None and prin[0] == "NotPrincipal", conditions=conditions,
    )


def parse_policy(doc: str | bytes | Mapping[str, Any], *, kind: PolicyKind, name: str = "") -> Policy:
    """Parse and validate a policy document; raise ``MalformedPolicy`` naming the statement and field.

    ``kind``: ``identity`` (user/group/role policies, no Principal), ``resource`` (bucket
    policies, Principal required), ``session`` (STS session and service-account policies, no
    Principal) or ``trust`` (a role's trust policy: Principal required, no Resource). ``name``
    identifies the policy in decisions and the audit log.
    """
    if kind not in MAX_POLICY_CHARS:
        raise ValueError(f"unknown policy kind {kind!r}")
    if isinstance(doc, bytes | bytearray):
        try:
            doc = bytes(doc).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPolicy("the policy is not UTF-8 text") from None
    if isinstance(doc, str):
        text = doc
        try:
            parsed = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise MalformedPolicy(f"the policy is not valid JSON ({exc.msg} at line {exc.lineno}"
                                  f" column {exc.colno})") from None
    else:
        parsed = doc
        text = json.dumps(doc, separators=(",", ":"), default=str)
    limit = MAX_POLICY_CHARS[kind]
    size = len(text.encode()) if kind == "resource" else sum(1 for ch in text if not ch.isspace())
    if size > limit:
        raise MalformedPolicy(f"the {kind} policy is {size} characters; the limit is {limit}")
    if not isinstance(parsed, Mapping):
        raise MalformedPolicy("a policy must be a JSON object")
    unknown = sorted(set(parsed) - {"Version", "Id", "Statement"})
    if unknown:
        raise MalformedPolicy(f"unknown top-level field {unknown[0]!r} (expected Version, Id, Statement)")
    version = parsed.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise MalformedPolicy(f"Version must be one of {', '.join(VERSIONS)}, not {version!r}")
    policy_id = parsed.get("Id", "")
    if not isinstance(policy_id, str):
        raise MalformedPolicy("Id must be a string")
    raw_statements = parsed.get("Statement")
    if raw_statements is None:
        raise MalformedPolicy("Statement is required")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise MalformedPolicy("Statement must be an object or a non-empty list of objects")
    statements = tuple(_parse_statement(s, i, kind, version) for i, s in enumerate(raw_statements))
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        dup = next(s for s in sids if sids.count(s) > 1)
        raise MalformedPolicy(f"Sid {dup!r} appears in more than one statement")
    return Policy(kind=kind, name=name, version=version, id=policy_id, statements=statements, document=parsed)

