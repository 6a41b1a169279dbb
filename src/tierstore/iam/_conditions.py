"""Condition operators and condition keys: validation at parse time, matching at evaluation.

Semantics (AWS "IAM JSON policy elements: Condition operators"):
- a Condition block is an AND over its operators, each an AND over its keys, each an OR over
  its values (a negated operator - StringNotEquals, NotIpAddress, ... - is the negation of its
  positive form: it matches when the request value equals none of the values);
- a key absent from the request: positive operators do not match, negated operators match,
  ``...IfExists`` matches, ``Null: true`` matches;
- ``ForAllValues:`` matches when every request value matches (vacuously true on an absent or
  empty key); ``ForAnyValue:`` when at least one does (false on an absent or empty key);
- a request value of the wrong type (``abc`` for Numeric*, ``maybe`` for Bool, ``x`` for
  IpAddress, not an ARN for Arn*) matches nothing, for positive and negated operators alike.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tierstore.iam._patterns import Lookup, Pattern

__all__ = ["Condition", "check_condition_key"]

# Every condition key tierstore knows (lowercased; names are case-insensitive, as in AWS).
KNOWN_KEYS = frozenset(k.lower() for k in (
    "aws:SourceIp", "aws:SecureTransport", "aws:CurrentTime", "aws:EpochTime", "aws:username",
    "aws:userid", "aws:PrincipalArn", "aws:PrincipalType", "aws:PrincipalAccount", "aws:TagKeys",
    "aws:UserAgent", "aws:Referer", "aws:SourceVpce", "aws:SourceVpc", "aws:MultiFactorAuthPresent",
    "aws:MultiFactorAuthAge", "aws:TokenIssueTime", "aws:FederatedProvider",
    "s3:prefix", "s3:delimiter", "s3:max-keys", "s3:x-amz-acl", "s3:x-amz-server-side-encryption",
    "s3:x-amz-server-side-encryption-aws-kms-key-id", "s3:x-amz-server-side-encryption-customer-algorithm",
    "s3:x-amz-storage-class", "s3:RequestObjectTagKeys", "s3:versionid", "s3:signatureversion", "s3:authType",
    "s3:object-lock-mode", "s3:object-lock-retain-until-date", "s3:object-lock-remaining-retention-days",
    "s3:object-lock-legal-hold", "s3:TlsVersion", "s3:x-amz-content-sha256", "s3:x-amz-copy-source",
    "s3:x-amz-metadata-directive", "s3:x-amz-grant-read", "s3:x-amz-grant-write", "s3:x-amz-grant-read-acp",
    "s3:x-amz-grant-write-acp", "s3:x-amz-grant-full-control", "s3:LocationConstraint", "s3:ResourceAccount",
    "s3:if-match", "s3:if-none-match",
    "sts:ExternalId", "sts:RoleSessionName", "sts:SourceIdentity",
))
# Keys with a free-form suffix: aws:PrincipalTag/team, s3:ExistingObjectTag/project, ...
TAG_PREFIXES = tuple(p.lower() for p in (
    "aws:PrincipalTag/", "aws:RequestTag/", "aws:ResourceTag/", "s3:ExistingObjectTag/", "s3:RequestObjectTag/",
))
SERVICE_PREFIXES = ("aws:", "s3:", "iam:", "sts:", "tierstore:")
# OIDC claims of a web identity provider: "<host>[:port][/path]:<claim>", e.g.
# "accounts.google.com:sub", "token.actions.githubusercontent.com:aud", "127.0.0.1:8443/realm:sub".
_OIDC_KEY = re.compile(r"^[a-z0-9][a-z0-9.\-]*(:[0-9]{1,5})?(/[^\s:]*)?:[a-z0-9_.\-]+$", re.IGNORECASE)


def check_condition_key(key: str) -> str | None:
    """None when ``key`` is a key tierstore knows, else why not."""
    low = key.lower()
    if low in KNOWN_KEYS:
        return None
    for prefix in TAG_PREFIXES:
        if low.startswith(prefix):
            return None if len(low) > len(prefix) else f"condition key {key!r} needs a tag key after the '/'"
    if low.startswith(SERVICE_PREFIXES):
        return f"unknown condition key {key!r}"
    head = low.split(":", 1)[0]
    if _OIDC_KEY.match(low) and ("." in head or "/" in low or low.count(":") > 1):
        return None  # an OIDC provider's claim
    return f"unknown condition key {key!r}"


class Unresolved(Exception):
    """A policy variable in a condition value has no (single) value in the request."""


def _literal(p: Pattern, lookup: Lookup) -> str:
    text = p.literal(lookup)
    if text is None:
        raise Unresolved
    return text


def _regex(p: Pattern, lookup: Lookup) -> re.Pattern[str]:
    regex = p.resolve(lookup)
    if regex is None:
        raise Unresolved
    return regex


# --- value parsers (request values: None on a type error; policy values: raise ValueError) ---
def _num(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _date(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 date/time or of an epoch number; None if neither."""
    text = text.strip()
    if not text:
        return None
    epoch = _num(text)
    if epoch is not None and re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return epoch
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _bool(text: str) -> bool | None:
    low = text.lower()
    return True if low == "true" else False if low == "false" else None


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> tuple[int, int] | None:
    """(IP version, address as an integer), or None if ``text`` is not an IP address."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return addr.version, int(addr)


# An operator family: (negated, compile one policy value, match one request value against it).
# ``match`` returns None on a type error of the request value.
Matcher = Callable[[object, str, Lookup], "bool | None"]

_NUM_OPS: dict[str, Callable[[float, float], bool]] = {
    "equals": lambda a, b: a == b, "notequals": lambda a, b: a == b,
    "lessthan": lambda a, b: a < b, "lessthanequals": lambda a, b: a <= b,
    "greaterthan": lambda a, b: a > b, "greaterthanequals": lambda a, b: a >= b,
}


def _string_family(op: str, version: str, var_check: Callable[[str], None]
                   ) -> tuple[bool, Callable[[str], object], Matcher]:
    allow_vars = version == "2012-10-17"
    if op in ("stringequals", "stringnotequals"):
        def comp(v: str) -> object:
            return Pattern(v, variables_allowed=allow_vars, check_variable=var_check)

        def match(p: object, v: str, lookup: Lookup) -> bool | None:
            assert isinstance(p, Pattern)
            return _literal(p, lookup) == v
        return op == "stringnotequals", comp, match
    if op in ("stringequalsignorecase", "stringnotequalsignorecase"):
        def comp_ic(v: str) -> object:
            return Pattern(v, variables_allowed=allow_vars, check_variable=var_check)

        def match_ic(p: object, v: str, lookup: Lookup) -> bool | None:
            assert isinstance(p, Pattern)
            return _literal(p, lookup).casefold() == v.casefold()
        return op == "stringnotequalsignorecase", comp_ic, match_ic
    # stringlike / stringnotlike
    def comp_like(v: str) -> object:
        return Pattern(v, variables_allowed=allow_vars, check_variable=var_check)

    def match_like(p: object, v: str, lookup: Lookup) -> bool | None:
        assert isinstance(p, Pattern)
        return p.matches(v, lookup)
    return op == "stringnotlike", comp_like, match_like


def _family(op: str, version: str, var_check: Callable[[str], None]
            ) -> tuple[bool, Callable[[str], object], Matcher] | None:
    """The operator family of a base operator name (lowercased), or None if unknown."""
    if op in ("stringequals", "stringnotequals", "stringequalsignorecase", "stringnotequalsignorecase",
              "stringlike", "stringnotlike"):
        return _string_family(op, version, var_check)
    for prefix, parse, kind in (("numeric", _num, "a number"), ("date", _date, "an ISO 8601 date or epoch time")):
        if op.startswith(prefix) and op[len(prefix):] in _NUM_OPS:
            return _ordered_family(op == f"{prefix}notequals", parse, kind, _NUM_OPS[op[len(prefix):]])
    if op == "bool":
        def comp_bool(v: str) -> object:
            b = _bool(v)
            if b is None:
                raise ValueError(f"{v!r} is not true or false")
            return b

        def match_bool(p: object, v: str, lookup: Lookup) -> bool | None:
            b = _bool(v)
            return None if b is None else b == p
        return False, comp_bool, match_bool
    if op in ("ipaddress", "notipaddress"):
        def comp_ip(v: str) -> object:
            try:
                net = ipaddress.ip_network(v.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{v!r} is not an IPv4 or IPv6 address or CIDR block") from None
            return net.version, int(net.network_address), int(net.netmask)

        def match_ip(p: object, v: str, lookup: Lookup) -> bool | None:
            addr = _ip(v)
            if addr is None:
                return None
            assert isinstance(p, tuple)
            version, network, mask = p
            return bool(addr[0] == version and addr[1] & mask == network)

        return op == "notipaddress", comp_ip, match_ip
    if op in ("arnequals", "arnlike", "arnnotequals", "arnnotlike"):
        allow_vars = version == "2012-10-17"

        def comp_arn(v: str) -> object:
            return Pattern(v, variables_allowed=allow_vars, arn=v != "*", check_variable=var_check)

        def match_arn(p: object, v: str, lookup: Lookup) -> bool | None:
            assert isinstance(p, Pattern)
            if not v.startswith("arn:") or v.count(":") < 5:
                return None
            return _regex(p, lookup).fullmatch(v) is not None
        return op in ("arnnotequals", "arnnotlike"), comp_arn, match_arn
    return None


class Condition:
    """One (operator, key, values) test of a Condition block, compiled."""

    __slots__ = ("compiled", "if_exists", "key", "match", "negated", "null", "operator", "qualifier")

    def __init__(self, operator: str, key: str, values: Sequence[str], *, version: str,
                 var_check: Callable[[str], None]) -> None:
        self.operator = operator
        self.key = key.lower()
        name = operator
        self.qualifier = ""
        low = name.lower()
        if low.startswith("forallvalues:"):
            self.qualifier, name = "all", name[len("ForAllValues:"):]
        elif low.startswith("foranyvalue:"):
            self.qualifier, name = "any", name[len("ForAnyValue:"):]
        base = name.lower()
        self.if_exists = base.endswith("ifexists")
        if self.if_exists:
            base = base[: -len("ifexists")]
        self.null: bool | None = None
        self.compiled: tuple[object, ...] = ()
        self.negated = False
        self.match: Matcher = _never
        if base == "null":
            if self.if_exists or self.qualifier:
                raise ValueError(f"condition operator {operator!r} is not valid (Null takes no prefix or IfExists)")
            if len(values) != 1 or _bool(values[0]) is None:
                raise ValueError(f"Null takes one value, true or false, not {list(values)!r}")
            self.null = _bool(values[0])
            return
        family = _family(base, version, var_check)
        if family is None or name != name.strip():
            raise ValueError(f"unknown condition operator {operator!r}")
        self.negated, comp, self.match = family
        if not values:
            raise ValueError(f"condition {operator!r} on {key!r} has no values")
        self.compiled = tuple(comp(v) for v in values)

    def holds(self, lookup: Lookup) -> bool:
        """Does the request satisfy this test? An unresolved policy variable in the values makes
        the whole statement inapplicable (AWS), so it answers False even for negated operators."""
        try:
            return self._holds(lookup)
        except Unresolved:
            return False

    def _holds(self, lookup: Lookup) -> bool:
        values = lookup(self.key)
        if self.null is not None:
            return (not values) == self.null
        negated = self.negated
        if not values:
            if self.if_exists:
                return True
            if self.qualifier:
                return self.qualifier == "all"
            return negated
        # "every value must satisfy" for ForAllValues and for plain negated operators (NOR);
        # "some value must satisfy" for ForAnyValue and plain positive operators.
        need_all = self.qualifier == "all" or (not self.qualifier and negated)
        match = self.match
        compiled = self.compiled
        for value in values:
            hit = False
            ok = True
            for p in compiled:
                r = match(p, value, lookup)
                if r is None:
                    ok = False  # a type error matches nothing, positive or negated
                    break
                if r:
                    hit = True
                    break
            if ok:
                ok = hit != negated
            if ok != need_all:
                return ok
        return need_all


def _never(p: object, v: str, lookup: Lookup) -> bool | None:
    return False


def _ordered_family(
    negated: bool, parse: Callable[[str], Any], kind: str, cmp: Callable[[Any, Any], bool]
) -> tuple[bool, Callable[[str], object], Matcher]:
    """Numeric* and Date*: the policy value parsed at compile time (else MalformedPolicy), the
    request value at match time (a value that does not parse matches nothing)."""

    def compile_value(v: str) -> object:
        parsed = parse(v)
        if parsed is None:
            raise ValueError(f"{v!r} is not {kind}")
        return parsed

    def match(p: object, v: str, lookup: Lookup) -> bool | None:
        parsed = parse(v)
        return None if parsed is None else cmp(parsed, p)

    return negated, compile_value, match
