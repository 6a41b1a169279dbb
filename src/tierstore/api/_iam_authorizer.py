"""``IamAuthorizer``: the request's checks against the caller's IAM policies (``tierstore.iam``).

- The root keys (``IdentityService.is_root_key``: ``--access-key`` and the configured extra
  keys) are allowed everything, at the cost of one set lookup (the hot path of a one-key store).
- Any other principal: every check of the ``RequestContext`` must be allowed by
  ``tierstore.iam.evaluate`` over its identity policies (user inline + attached managed + its
  groups'), parsed once and compiled into a ``PolicySet``; a service account's own policy is a
  ``session`` layer (it can only narrow its parent). A catalog key of the root is the root.
- The compiled policies of a key live as long as ``IdentityService.principal_for``'s answer
  (``cache_ttl_s``, 1 s): a policy changed through any worker is seen by all within about a second.
- Bucket and object checks also see the bucket's policy (``BucketAccessService.props``, cached
  ~1 s per worker, parsed once per document) as ``iam.evaluate``'s resource policy: an Allow
  from the identity policies or the bucket policy grants, an explicit Deny in either wins, a
  service account's policy still narrows. The root is never restricted by a bucket policy.
- The anonymous principal (an unsigned request) has no identity policies: it is allowed only
  what the bucket's policy grants to ``"*"`` (or, with ACLs, a grant to AllUsers) — and not even
  that when the policy is public and the bucket's RestrictPublicBuckets is on.

A denial raises ``AccessDenied`` with the same message whatever the object (its existence, ETag
or version never shows); the ``Decision`` is kept on the request (``RequestContext.decision``)
for the access log.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tierstore import errors as e
from tierstore import iam
from tierstore.api._authorize import Check, RequestContext
from tierstore.api._bucket_policy import is_public
from tierstore.engine import BucketAccessService, IdentityService
from tierstore.engine import Principal as EnginePrincipal

__all__ = ["ACCOUNT_ID", "IamAuthorizer", "validate_policy"]

ACCOUNT_ID = "000000000000"  # one account per store (ARNs: arn:aws:iam::000000000000:user/NAME)
DENIED = "Access Denied"
ROOT_ALLOW = iam.Decision(True, "allow", None, "root", None)
ACL_ALLOW = iam.Decision(True, "allow", "acl", None, None)
ANONYMOUS = iam.Principal.anonymous()
_NO_POLICIES = iam.compile_policies(())
_PARSED_MAX = 4096
_S3_ARN = "arn:aws:s3:::"


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

    __slots__ = ("identity", "principal", "root", "session", "source")

    def __init__(
        self,
        source: EnginePrincipal,
        principal: iam.Principal,
        identity: iam.PolicySet,
        session: tuple[iam.Policy, ...],
    ) -> None:
        self.source = source  # the IdentityService answer this was built from (identity-compared)
        self.principal = principal
        self.identity = identity
        self.session = session
        self.root = principal.type == "Root"


class IamAuthorizer:
    """The ``Authorizer`` that evaluates IAM policies (see the module docstring)."""

    def __init__(
        self, identities: IdentityService, *, account: str = ACCOUNT_ID, buckets: BucketAccessService | None = None
    ) -> None:
        """``buckets``: where bucket policies come from (None: no bucket policy applies)."""
        self._ids = identities
        self._buckets = buckets
        self._public: dict[iam.Policy, bool] = {}
        self._account = account
        self._is_root_key = identities.is_root_key
        self._compiled: dict[str, _Compiled] = {}
        self._parsed: dict[tuple[str, str, str], iam.Policy | None] = {}

    def authorize(self, request: RequestContext) -> None:
        if request.principal.is_anonymous:
            self._decide(request, ANONYMOUS, _NO_POLICIES, ())
            return
        key = request.principal.access_key
        if self._is_root_key(key):
            request.decision = ROOT_ALLOW
            return
        compiled = self._for_key(key)
        if compiled is None:  # the key stopped authenticating since (disabled within the TTL)
            raise e.AccessDenied(DENIED)
        if compiled.root and not compiled.session:
            request.decision = ROOT_ALLOW
            return
        self._decide(request, compiled.principal, compiled.identity, compiled.session)

    def _decide(
        self,
        request: RequestContext,
        principal: iam.Principal,
        identity: iam.PolicySet,
        session: tuple[iam.Policy, ...],
    ) -> None:
        """Every check of ``request`` must be allowed for ``principal`` (AWS's one-account
        evaluation, ``iam.evaluate``): the bucket's policy joins as the resource policy; an
        ACL grant (``_acl_allows``) may allow what no policy does, never what one denies."""
        conditions = request.conditions()
        now = datetime.now(UTC)
        decision: iam.Decision | None = None
        anonymous = principal.type == "Anonymous"
        for check in request.checks:
            resource, restricted = self._resource_policy(check.resource)
            decision = iam.evaluate(
                iam.AuthzRequest(principal, check.action, check.resource, conditions, now),
                identity=identity,
                resource=resource,
                session=session,
            )
            if restricted and anonymous and decision.allowed:
                # RestrictPublicBuckets: a public policy grants nothing outside the account.
                decision = iam.Decision(False, "implicit_deny", decision.policy, "resource", decision.statement)
            implicit = not decision.allowed and decision.reason == "implicit_deny"
            if implicit and not session and self._acl_allows(request, check, principal):
                decision = ACL_ALLOW  # (a caller with a narrowing session policy: policies only)
            if not decision.allowed:
                request.decision = decision
                raise e.AccessDenied(DENIED)
        request.decision = decision

    def _resource_policy(self, resource: str) -> tuple[iam.Policy | None, bool]:
        """(the policy of the bucket ``resource`` is in, whether that policy is public and the
        bucket's RestrictPublicBuckets is on). (None, False) for a resource outside S3 buckets,
        a missing bucket, a bucket without a policy, or a stored one that no longer parses.
        The bucket's properties come from ``BucketAccessService.props`` (cached ~1 s); the
        parsed policy is cached per (bucket, document)."""
        buckets = self._buckets
        if buckets is None or not resource.startswith(_S3_ARN):
            return None, False
        bucket = resource[len(_S3_ARN):].split("/", 1)[0]
        props = buckets.props(bucket)
        if not props or not props.get("policy"):
            return None, False
        document = props["policy"]
        policy = self._policy(f"bucket-policy:{bucket}", document, "resource")
        if policy is None:
            return None, False
        block = props.get("public_access_block")
        return policy, bool(block and block.get("RestrictPublicBuckets") and self._is_public(policy))

    def _is_public(self, policy: iam.Policy) -> bool:
        found = self._public.get(policy)
        if found is None:
            if len(self._public) >= _PARSED_MAX:
                self._public.clear()
            found = self._public[policy] = is_public(policy)
        return found

    def _acl_allows(self, request: RequestContext, check: Check, principal: iam.Principal) -> bool:
        """Whether an ACL grant on the bucket or object of ``check`` allows its action to
        ``principal`` (anonymous: a grant to AllUsers). Consulted only where no policy denied
        explicitly. No ACLs yet: nothing is granted this way."""
        return False

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
        return _Compiled(source, principal, iam.compile_policies(policies), session)
