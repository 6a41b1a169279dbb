"""``IamAuthorizer``: the request's checks against the caller's IAM policies (``tierstore.iam``).

- The root keys (``IdentityService.is_root_key``: ``--access-key`` and the configured extra
  keys) are allowed everything, at the cost of one set lookup (the hot path of a one-key store).
- Any other principal: every check of the ``RequestContext`` must be allowed by
  ``tierstore.iam.evaluate`` over its identity policies (user inline + attached managed + its
  groups'), parsed once and compiled into a ``PolicySet``; a service account's own policy is a
  ``session`` layer (it can only narrow its parent). A catalog key of the root is the root.
- A user's permissions boundary (``IdentityService.set_boundary``) is passed to
  ``iam.evaluate`` as ``boundary=``: the identity policies grant at most what it allows.
- A service account never manages identities or keys, whatever its parent may do
  (``_refuse_service_account``: every ``iam:`` action but the read-only ``Get*``/``List*``).
- The compiled policies of a key live as long as ``IdentityService.principal_for``'s answer
  (``cache_ttl_s``, 1 s): a policy changed through any worker is seen by all within about a second.

A denial raises ``AccessDenied`` with the same message whatever the object (its existence, ETag
or version never shows); the ``Decision`` is kept on the request (``RequestContext.decision``)
for the access log.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tierstore import errors as e
from tierstore import iam
from tierstore.api._authorize import RequestContext
from tierstore.engine import IdentityService
from tierstore.engine import Principal as EnginePrincipal

__all__ = ["ACCOUNT_ID", "IamAuthorizer", "validate_policy"]

ACCOUNT_ID = "000000000000"  # one account per store (ARNs: arn:aws:iam::000000000000:user/NAME)
DENIED = "Access Denied"
ROOT_ALLOW = iam.Decision(True, "allow", None, "root", None)
_PARSED_MAX = 4096


def validate_policy(document: str, kind: str = "identity") -> iam.Policy:
    """The ``IdentityService.validate_policy`` hook: ``parse_policy`` with the IAM API's error
    (``MalformedPolicyDocument``, the parser's message)."""
    try:
        return iam.parse_policy(document, kind=kind)  # type: ignore[arg-type]
    except e.MalformedPolicy as exc:
        raise e.MalformedPolicyDocument(exc.message) from None


def _deny_all(name: str) -> iam.Policy:
    return iam.parse_policy(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]},
        kind="session",
        name=name,
    )


class _Compiled:
    """One key's evaluation inputs, built from one ``principal_for`` answer."""

    __slots__ = ("boundary", "identity", "principal", "root", "service", "session", "source")

    def __init__(
        self,
        source: EnginePrincipal,
        principal: iam.Principal,
        identity: iam.PolicySet,
        session: tuple[iam.Policy, ...],
        boundary: iam.PolicySet | None = None,
    ) -> None:
        self.source = source  # the IdentityService answer this was built from (identity-compared)
        self.principal = principal
        self.identity = identity
        self.session = session
        self.boundary = boundary
        self.root = principal.type == "Root"
        self.service = source.kind == "service"


class IamAuthorizer:
    """The ``Authorizer`` that evaluates IAM policies (see the module docstring)."""

    def __init__(self, identities: IdentityService, *, account: str = ACCOUNT_ID) -> None:
        self._ids = identities
        self._account = account
        self._is_root_key = identities.is_root_key
        self._compiled: dict[str, _Compiled] = {}
        self._parsed: dict[tuple[str, str, str], iam.Policy | None] = {}

    def authorize(self, request: RequestContext) -> None:
        key = request.principal.access_key
        if self._is_root_key(key):
            request.decision = ROOT_ALLOW
            return
        compiled = self._for_key(key)
        if compiled is None:  # the key stopped authenticating since (disabled within the TTL)
            raise e.AccessDenied(DENIED)
        if compiled.service:
            _refuse_service_account(request)
        if compiled.root and not compiled.session:
            request.decision = ROOT_ALLOW
            return
        conditions = request.conditions()
        now = datetime.now(UTC)
        decision: iam.Decision | None = None
        for check in request.checks:
            decision = iam.evaluate(
                iam.AuthzRequest(compiled.principal, check.action, check.resource, conditions, now),
                identity=compiled.identity,
                session=compiled.session,
                boundary=compiled.boundary,
            )
            if not decision.allowed:
                request.decision = decision
                raise e.AccessDenied(DENIED)
        request.decision = decision

    def _for_key(self, key: str) -> _Compiled | None:
        source = self._ids.principal_for(key)
        if source is None:
            return None
        hit = self._compiled.get(key)
        if hit is not None and hit.source is source:
            return hit
        compiled = self._compile(source)
        if len(self._compiled) >= _PARSED_MAX:
            self._compiled.clear()
        self._compiled[key] = compiled
        return compiled

    def _policy(self, name: str, document: str, kind: str) -> iam.Policy | None:
        """A stored document, parsed once per (kind, name, text); None when it does not parse
        (stored before validation was wired in)."""
        k = (kind, name, document)
        if k in self._parsed:
            return self._parsed[k]
        try:
            found: iam.Policy | None = iam.parse_policy(document, kind=kind, name=name)  # type: ignore[arg-type]
        except e.MalformedPolicy:
            found = None
        if len(self._parsed) >= _PARSED_MAX:
            self._parsed.clear()
        self._parsed[k] = found
        return found

    def _compile(self, source: EnginePrincipal) -> _Compiled:
        session: tuple[iam.Policy, ...] = ()
        if source.session_policy is not None:
            name = f"service-account:{source.access_key_id}"
            # A narrowing policy that does not parse narrows to nothing.
            session = (self._policy(name, source.session_policy, "session") or _deny_all(name),)
        if source.user_name is None:
            return _Compiled(source, iam.Principal.root(self._account), iam.compile_policies(()), session)
        principal = iam.Principal(
            arn=f"arn:aws:iam::{self._account}:user/{source.user_name}",
            account=self._account,
            type="User",
            username=source.user_name,
            userid=source.user_id or "",
            tags=dict(source.tags),
        )
        # An identity policy that does not parse grants nothing.
        parsed = (self._policy(p.name, p.document, "identity") for p in source.policies)
        policies = tuple(p for p in parsed if p is not None)
        return _Compiled(source, principal, iam.compile_policies(policies), session, self._boundary(source))

    def _boundary(self, source: EnginePrincipal) -> iam.PolicySet | None:
        """The compiled permissions boundary of ``source`` (None: unbounded). A boundary that
        does not parse allows nothing."""
        if source.boundary is None:
            return None
        name = f"boundary:{source.boundary.name}"
        parsed = self._policy(name, source.boundary.document, "identity")
        return iam.compile_policies((parsed or _deny_all(name),))


def _refuse_service_account(request: RequestContext) -> None:
    """A service account acts with (part of) its parent's rights on data, never on identities:
    creating a key for its parent would mint an unrestricted credential (a breach seen in other
    stores). Read-only IAM calls stay subject to the policies."""
    for check in request.checks:
        name = check.action.lower()
        if name.startswith("iam:") and not name.startswith(("iam:get", "iam:list")):
            request.decision = iam.Decision(False, "explicit_deny", "service-account-rule", "session", None)
            raise e.AccessDenied("A service account cannot manage identities or access keys.")
