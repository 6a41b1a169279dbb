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
  (``cache_ttl_s``, 1 s; on PostgreSQL until a notification, tierstore/_watch.py): a policy
  changed through any worker is seen by all within about a second.
- Bucket and object checks also see the bucket's policy (``BucketAccessService.props``, cached
  ~1 s per worker, parsed once per document) as ``iam.evaluate``'s resource policy: an Allow
  from the identity policies or the bucket policy grants, an explicit Deny in either wins, a
  service account's policy still narrows. The root is never restricted by a bucket policy.
- The anonymous principal (an unsigned request) has no identity policies: it is allowed only
  what the bucket's policy grants to ``"*"`` (or, with ACLs, a grant to AllUsers) — and not even
  that when the policy is public and the bucket's RestrictPublicBuckets is on.
- ACL grants (``api/_acl.py``) are one more Allow source where the policies ended in an implicit
  deny: AllUsers for anyone, AuthenticatedUsers for any signed caller (not a service account:
  policies alone decide those). Object Ownership BucketOwnerEnforced and Block Public Access
  IgnorePublicAcls turn them off. Object ACLs and, for s3:ExistingObjectTag conditions, object
  tags are read from ``ObjectService`` only when needed (``_acl_allows``, ``_resolver``).

Temporary credentials (STS, ``_authorize_session``): a role session acts as
``arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`` with the role's identity policies (inline +
attached), narrowed by its session policies (``session=``), ``aws:userid`` = ``ROLEID:SESSION``
and no ``aws:username``, as AWS; a deleted role's sessions stop within the role cache's second.
A GetSessionToken session acts as its user (or the root) but may not call IAM, nor STS beyond
AssumeRole and GetCallerIdentity (AWS); a console sign-in's session (``CONSOLE_CLAIM``) may call
IAM, as AWS's console sign-in may (still only what its user's policies allow). ``sts:AssumeRole*``
on a role also needs the role's trust policy to admit the caller (``_trust_for``,
``iam.trust_admits``); a trust policy naming the caller grants on its own, one naming the account
needs the caller's identity policy too.

A denial raises ``AccessDenied`` with the same message whatever the object (its existence, ETag
or version never shows); the ``Decision`` is kept on the request (``RequestContext.decision``)
for the access log.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tierstore import errors as e
from tierstore import iam
from tierstore.api import _acl
from tierstore.api._access import ENFORCED
from tierstore.api._authorize import Check, LazyConditions, RequestContext
from tierstore.api._bucket_policy import is_public
from tierstore.engine import (
    CONSOLE_CLAIM,
    NOT_CACHED,
    BucketAccessService,
    IdentityService,
    ObjectService,
    RoleState,
    Session,
    StsService,
    WebIdentity,
)
from tierstore.engine import Principal as EnginePrincipal

__all__ = ["ACCOUNT_ID", "IamAuthorizer", "validate_policy"]

ACCOUNT_ID = "000000000000"  # one account per store (ARNs: arn:aws:iam::000000000000:user/NAME)
DENIED = "Access Denied"
ROOT_ALLOW = iam.Decision(True, "allow", None, "root", None)
ACL_ALLOW = iam.Decision(True, "allow", "acl", None, "grant")  # the access log's policy: "acl:grant"
_S3_ARN = "arn:aws:s3:::"
_BUCKET_AT = len(_S3_ARN)
_EXISTING_TAG = "s3:existingobjecttag/"
_ASSUME_ROLE = "sts:AssumeRole"  # sts:AssumeRole, ...WithWebIdentity, ...WithSAML: the role's trust policy decides too
_PARSED_MAX = 4096
# Remembered allows (``_Compiled.allowed``) over all keys of a worker, then all forgotten at once:
# ~200 bytes each, so at most ~7 MiB; enough for a job re-reading tens of thousands of objects.
_REMEMBERED_MAX = 32768


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

    __slots__ = ("allowed", "boundary", "identity", "principal", "root", "service", "session", "source", "wide")

    def __init__(
        self,
        source: object,
        principal: iam.Principal,
        identity: iam.PolicySet,
        session: tuple[iam.Policy, ...],
        boundary: iam.PolicySet | None = None,
    ) -> None:
        self.source = source  # the answer this was built from (identity-compared): principal, role or user state
        self.principal = principal
        self.identity = identity
        self.session = session
        self.boundary = boundary
        self.root = principal.type == "Root"
        self.service = isinstance(source, EnginePrincipal) and source.kind == "service"
        # Allows that read no condition key, policy variable or tag: a function of these policies,
        # the check and the bucket policy alone (the value: the bucket policy it was decided
        # with, by identity, and the decision). Dropped with this object when the key's policies
        # change; not kept for the anonymous principal (RestrictPublicBuckets, ACLs).
        self.allowed: dict[Check, tuple[iam.Policy | None, iam.Decision]] = {}
        # The same, for every object of a bucket at once, by (action, bucket): an allow on one
        # object when no statement for the action tells the bucket's keys apart
        # (``iam.key_independent``), so a first read of another key is one lookup too.
        self.wide: dict[tuple[str, str], tuple[iam.Policy | None, iam.Decision]] = {}

    def same_source(self, source: object) -> bool:
        """Whether ``source`` (a fresh ``principal_for`` answer, role or user state) is what this
        was built from: the same object, or an equal one (the identity cache reloads every
        second; equal inputs compile to the same policies, so the remembered allows stay)."""
        if self.source is source:
            return True
        if self.source == source:
            self.source = source  # the next lookup is an identity check again
            return True
        return False


class _TagsNeeded(Exception):
    """A statement asked for s3:ExistingObjectTag/*: the object's tags must be read first."""


class IamAuthorizer:
    """The ``Authorizer`` that evaluates IAM policies (see the module docstring)."""

    def __init__(
        self,
        identities: IdentityService,
        *,
        account: str = ACCOUNT_ID,
        buckets: BucketAccessService | None = None,
        objects: ObjectService | None = None,
        sts: StsService | None = None,
    ) -> None:
        """``buckets``: where bucket settings come from (policy, Block Public Access, ACL, Object
        Ownership; None: no bucket policy or bucket ACL applies); ``objects``: where object ACLs
        and existing object tags are read from (None: ACL grants and s3:ExistingObjectTag never
        apply); ``sts``: what opens temporary credentials' roles and users (None: no STS)."""
        self._ids = identities
        self._buckets = buckets
        self._public: dict[iam.Policy, bool] = {}
        self._objects = objects
        self._sts = sts
        self._sessions: dict[str, _Compiled] = {}
        self._account = account
        self._root_key_ids = identities.root_key_ids  # is_root_key without a call per request
        self._compiled: dict[str, _Compiled] = {}
        self._parsed: dict[tuple[str, str, str], iam.Policy | None] = {}
        self._remembered = 0  # allows remembered since the last ``_forget_allows``

    async def authorize(self, request: RequestContext) -> None:
        key, identity = request.principal
        if identity is None:  # a long-term key (most requests): the root's is one set lookup
            if key in self._root_key_ids:
                request.decision = ROOT_ALLOW
                return
        elif request.principal.is_anonymous:
            await self._decide(request, _ANONYMOUS)
            return
        elif isinstance(identity, Session | WebIdentity):  # STS credentials or a web identity
            await self._authorize_session(request, identity)
            return
        elif key in self._root_key_ids:
            request.decision = ROOT_ALLOW
            return
        # The key's principal and the bucket's settings: from this worker's caches without a
        # coroutine on a hit (most requests), from the catalog otherwise.
        source = self._ids.cached_principal(key)
        if source is NOT_CACHED:
            source = await self._ids.principal_for(key)
        compiled = self._for_key(key, source)
        if compiled is None:  # the key stopped authenticating since (disabled within the TTL)
            raise e.AccessDenied(DENIED)
        if compiled.service:
            _refuse_service_account(request)
        if compiled.root and not compiled.session:
            request.decision = ROOT_ALLOW
            return
        checks = request.checks
        if len(checks) == 1 and checks[0][1].startswith(_S3_ARN):
            # Most requests: one S3 check that an allow remembered by ``_decide`` answers, the
            # same lookups as there without its set-up (no trust policy: not a role's ARN).
            action, arn = check = checks[0]
            bucket, on_object, _ = arn[_BUCKET_AT:].partition("/")
            known = compiled.wide.get((action, bucket)) if on_object else None
            if known is None:
                known = compiled.allowed.get(check)
            if known is not None:
                buckets = self._buckets
                props = buckets.cached(bucket) if buckets is not None else None
                if props is NOT_CACHED:
                    props = await self._props(bucket)
                if known[0] is (self._resource_policy(bucket, props)[0] if props and props.get("policy") else None):
                    request.decision = known[1]
                    return
        await self._decide(request, compiled)

    async def allows_every_object(self, request: RequestContext, action: str, bucket: str) -> bool:
        """Whether ``action`` on every object of ``bucket`` is allowed to the principal of
        ``request`` by an allow remembered bucket-wide (``_Compiled.wide``: no statement for the
        action tells the bucket's keys apart, and the allow read no condition) under the bucket's
        current policy: true only after ``authorize`` allowed the action on one of its objects
        for this principal; False whenever unsure (the caller then checks each object). What a
        caller checking many objects of a bucket (a dataset's manifest) asks once per bucket."""
        key, identity = request.principal
        if request.principal.is_anonymous:
            return False
        if identity is None:
            compiled = self._compiled.get(key)
        elif isinstance(identity, Session):
            compiled = self._sessions.get(identity.access_key_id)
        else:
            return False
        known = compiled.wide.get((action, bucket)) if compiled is not None else None
        if known is None:
            return False
        props = await self._props(bucket)
        return known[0] is (self._resource_policy(bucket, props)[0] if props and props.get("policy") else None)

    async def _props(self, bucket: str) -> Mapping[str, Any] | None:
        """The bucket's settings (``BucketAccessService.props``, cached ~1 s); None: no such
        bucket, or no bucket settings service."""
        return await self._buckets.props(bucket) if self._buckets is not None and bucket else None

    async def _decide(
        self, request: RequestContext, compiled: _Compiled, conditions: Mapping[str, Any] | None = None
    ) -> None:
        """Every check of ``request`` must be allowed for ``compiled`` (AWS's one-account
        evaluation, ``iam.evaluate``): the bucket's policy (or, for ``sts:AssumeRole*``, the
        role's trust policy) joins as the resource policy; an ACL grant (``_acl_allows``) may
        allow what no policy does, never what one denies. The last decision (or the denying
        one) is kept on the request. ``conditions``: the request's condition keys (None: read
        from ``request`` when a policy asks).

        An allow that read no condition key is remembered per key for its (action, resource)
        and bucket policy (``_Compiled.allowed``): the same check again is one dict lookup, not
        an evaluation. On an object, when no statement for the action (identity, bucket policy,
        boundary, session) tells the bucket's keys apart (``iam.key_independent``), it is
        remembered for (action, bucket) instead (``_Compiled.wide``): any object of the bucket.
        Denies are never remembered (nor ACL grants: they are consulted only where the policies
        ended in an implicit deny), and any change to the key's policies (a new ``_Compiled``) or
        to the bucket's policy (another ``iam.Policy``) evaluates again."""
        now: datetime | None = None
        decision: iam.Decision | None = None
        principal, session = compiled.principal, compiled.session
        anonymous = principal.type == "Anonymous"
        allowed, wide = compiled.allowed, compiled.wide
        for check in request.checks:
            action, arn = check
            if action.startswith(_ASSUME_ROLE):
                if conditions is None:
                    conditions = LazyConditions(request)
                now = now or datetime.now(UTC)
                trust = await self._trust_for(check, principal, conditions, now)
            else:
                trust = None
            # on_object: "/" when ``arn`` names an object of ``bucket``
            bucket, on_object, _ = arn[_BUCKET_AT:].partition("/") if arn.startswith(_S3_ARN) else ("", "", "")
            resource, restricted = (
                (trust, False) if trust is not None else self._resource_policy(bucket, await self._props(bucket))
            )
            if trust is None and not anonymous:
                known = wide.get((action, bucket)) if on_object else None
                if known is None or known[0] is not resource:
                    known = allowed.get(check)
                if known is not None and known[0] is resource:
                    decision = known[1]
                    continue
            if conditions is None:
                conditions = LazyConditions(request)
            now = now or datetime.now(UTC)
            tags: dict[str, str] | None = None  # s3:ExistingObjectTag/*: read when a statement asks
            while True:
                resolve = self._resolver(check, tags)
                asked = iam.AuthzRequest(principal, action, check.resource, conditions, now, resolve)
                try:
                    decision = iam.evaluate(
                        asked,
                        identity=compiled.identity,
                        resource=resource,
                        session=session,
                        boundary=compiled.boundary,
                    )
                    break
                except _TagsNeeded:  # evaluation is pure: read the object's tags, evaluate again
                    tags = await self._object_tags(check, request)
            if decision.allowed and not asked.read_context and trust is None and not anonymous:
                if self._remembered >= _REMEMBERED_MAX:
                    self._forget_allows()
                if on_object and iam.key_independent(
                    action, bucket, identity=compiled.identity, resource=resource, session=session,
                    boundary=compiled.boundary,
                ):  # fmt: skip
                    wide[action, bucket] = (resource, decision)
                else:
                    allowed[check] = (resource, decision)
                self._remembered += 1
            if restricted and anonymous and decision.allowed:
                # RestrictPublicBuckets: a public policy grants nothing outside the account.
                decision = iam.Decision(False, "implicit_deny", decision.policy, "resource", decision.statement)
            implicit = not decision.allowed and decision.reason == "implicit_deny"
            if implicit and not session and await self._acl_allows(request, check, principal):
                decision = ACL_ALLOW  # (a caller with a narrowing session policy: policies only)
            if not decision.allowed:
                request.decision = decision
                raise e.AccessDenied(DENIED)
        request.decision = decision

    def _forget_allows(self) -> None:
        """Drop every key's remembered allows (the budget is shared by all keys)."""
        for compiled in (*self._compiled.values(), *self._sessions.values()):
            compiled.allowed.clear()
            compiled.wide.clear()
        self._remembered = 0

    def _resource_policy(self, bucket: str, props: Mapping[str, Any] | None) -> tuple[iam.Policy | None, bool]:
        """(the policy of ``bucket`` whose settings are ``props``, whether that policy is public
        and the bucket's RestrictPublicBuckets is on). (None, False) for "" (a resource outside S3
        buckets), a missing bucket, a bucket without a policy, or a stored one that no longer
        parses. The bucket's properties come from ``BucketAccessService.props`` (cached ~1 s); the
        parsed policy is cached per (bucket, document)."""
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

    # --- ACL grants and lazily read object state (api/_acl.py) ---------------------------------
    async def _acl_allows(self, request: RequestContext, check: Check, principal: iam.Principal) -> bool:
        """Whether an ACL grant on the bucket or object of ``check`` allows its action to
        ``principal`` (AllUsers: anyone, anonymous too; AuthenticatedUsers: a signed caller).
        Consulted only where no policy allowed or denied explicitly, and read only then: the
        bucket's settings (cached ~1 s per worker, as for its policy: ``BucketAccessService``),
        and for object reads the version's ACL (one catalog read).
        Object Ownership BucketOwnerEnforced and Block Public Access IgnorePublicAcls turn
        grants off."""
        objects = self._objects
        action = check.action
        on_object = action in _acl.OBJECT_ACL_ACTIONS
        if objects is None or not (on_object or action in _acl.BUCKET_ACL_ACTIONS):
            return False
        if not check.resource.startswith(_S3_ARN):
            return False
        bucket, _, key = check.resource[len(_S3_ARN):].partition("/")
        try:
            # The bucket's settings from the same per-worker cache as its policy (~1 s).
            buckets = self._buckets
            props = await buckets.props(bucket) if buckets is not None else await objects.bucket_props(bucket)
            if props is None:  # no such bucket
                return False
            if props.get("ownership") == ENFORCED or (props.get("public_access_block") or {}).get("IgnorePublicAcls"):
                return False
            if on_object:
                version = request.version_for(check.resource)
                grants = _acl.from_stored(await objects.object_acl(bucket, key, version))
            else:
                grants = _acl.from_stored(props.get("acl"))
        except e.TierstoreError:  # no such bucket, key or version: nothing granted (and nothing told)
            return False
        authenticated = principal.type != "Anonymous"
        return _acl.acl_allows(grants, action, on_object=on_object, authenticated=authenticated)

    def _resolver(self, check: Check, tags: dict[str, str] | None) -> Callable[[str], Sequence[str] | None] | None:
        """s3:ExistingObjectTag/<k> of the object ``check`` names, from ``tags`` (its tags,
        lowercased keys); None: not read yet, so the first such key a statement asks for raises
        ``_TagsNeeded`` (``_decide`` reads them, at most once per check, and evaluates again)."""
        objects = self._objects
        if objects is None or not check.resource.startswith(_S3_ARN) or "/" not in check.resource[len(_S3_ARN):]:
            return None

        def resolve(key: str) -> Sequence[str] | None:
            if not key.startswith(_EXISTING_TAG):
                return None
            if tags is None:
                raise _TagsNeeded
            value = tags.get(key[len(_EXISTING_TAG):])
            return None if value is None else (value,)

        return resolve

    async def _object_tags(self, check: Check, request: RequestContext) -> dict[str, str]:
        """The tags of the object ``check`` names (keys lowercased; none when it is missing)."""
        objects = self._objects
        assert objects is not None
        bucket, _, name = check.resource[len(_S3_ARN):].partition("/")
        version = request.version_for(check.resource)
        try:
            found = (await objects.get_object_tagging(bucket, name, version)).tags
        except e.TierstoreError:
            found = {}
        return {k.lower(): v for k, v in found.items()}

    def _for_key(self, key: str, source: EnginePrincipal | None) -> _Compiled | None:
        """The compiled policies of ``key`` whose principal is ``source`` (None: it cannot
        authenticate now)."""
        if source is None:
            return None
        hit = self._compiled.get(key)
        if hit is not None and (hit.source is source or hit.same_source(source)):  # the first: most requests
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
    # --- STS: temporary credentials, role sessions, web identities ---------------------------
    async def _trust_for(
        self, check: Check, principal: iam.Principal, conditions: Mapping[str, Any], now: datetime
    ) -> iam.Policy | None:
        """For ``sts:AssumeRole*`` on a role: the role's trust policy, as the resource policy of
        that check (None for every other check). ``AccessDenied`` when the role does not exist
        (an unauthorized caller learns nothing) or its trust policy does not admit the caller."""
        if not check.action.startswith(_ASSUME_ROLE) or not check.resource.startswith(self._role_prefix):
            return None
        state = await self._sts.role_state(check.resource.rsplit("/", 1)[1]) if self._sts is not None else None
        trust = self._policy(f"trust:{state.role.name}", state.role.trust_policy, "trust") if state else None
        if trust is None or not iam.trust_admits(
            iam.AuthzRequest(principal, check.action, check.resource, conditions, now), trust
        ):
            raise e.AccessDenied(DENIED)
        return trust

    @property
    def _role_prefix(self) -> str:
        return f"arn:aws:iam::{self._account}:role/"

    async def _authorize_session(self, request: RequestContext, who: Session | WebIdentity) -> None:
        """Every check of a request signed with temporary credentials (``who``: a ``Session``) or
        asked by a verified web identity (``AssumeRoleWithWebIdentity``: the trust policy alone
        can grant)."""
        compiled = await self._for_session(who) if isinstance(who, Session) else self._for_web_identity(who)
        if compiled is None:  # the role or user behind the session is gone (or was re-created)
            raise e.AccessDenied(DENIED)
        if isinstance(who, Session) and who.kind != "role":
            console = who.claims.get(CONSOLE_CLAIM) == "true"  # a console sign-in may manage IAM, as AWS's
            for check in request.checks:
                if _refused_to_session_token(check.action, console):  # GetSessionToken credentials: no IAM (AWS)
                    request.decision = iam.Decision(False, "explicit_deny", "session-token-rule", "session", None)
                    raise e.AccessDenied(DENIED)
        conditions: dict[str, Any] = {**request.conditions(), **who.claims}
        if isinstance(who, Session):
            conditions["aws:TokenIssueTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(who.issued_s))
        await self._decide(request, compiled, conditions)

    async def _for_session(self, session: Session) -> _Compiled | None:
        assert self._sts is not None, "temporary credentials authenticated without an StsService"
        source: object
        if session.kind == "role":
            state = await self._sts.role_state(session.name)
            if state is None or state.role.role_id != session.principal_id:
                return None
            source = state
        elif session.kind == "user":
            user = await self._sts.user_state(session)
            if user is None:
                return None
            source = user
        else:
            source = session.kind  # the root: nothing to look up
        hit = self._sessions.get(session.access_key_id)
        if hit is not None and hit.same_source(source):
            return hit
        compiled = self._compile_session(session, source)
        if len(self._sessions) >= _PARSED_MAX:
            self._sessions.clear()
        self._sessions[session.access_key_id] = compiled
        return compiled

    def _compile_session(self, session: Session, source: object) -> _Compiled:
        layers = self._session_layers(session)
        if isinstance(source, EnginePrincipal):  # GetSessionToken of a user: the user's rights
            user = self._compile(source)
            return _Compiled(source, user.principal, user.identity, layers, user.boundary)
        if session.kind != "role":  # GetSessionToken of the root
            return _Compiled(source, iam.Principal.root(self._account), iam.compile_policies(()), layers)
        assert isinstance(source, RoleState)
        principal = iam.Principal(
            arn=session.arn,
            account=self._account,
            type="AssumedRole",
            userid=session.user_id,
            role_arn=session.role_arn,
            federated=session.provider,
        )
        parsed = (self._policy(p.name, p.document, "identity") for p in source.policies)
        policies = tuple(p for p in parsed if p is not None)
        boundary = None
        if source.boundary is not None:  # the role's permissions boundary caps its sessions too
            name = f"boundary:{source.boundary.name}"
            bound = self._policy(name, source.boundary.document, "identity")
            boundary = iam.compile_policies((bound or _deny_all(name),))
        return _Compiled(source, principal, iam.compile_policies(policies), layers, boundary)

    def _session_layers(self, session: Session) -> tuple[iam.Policy, ...]:
        """The session policies as one narrowing layer: the inline policy and the managed session
        policies together (a union), which the role's (or user's) rights are intersected with."""
        name = f"session:{session.access_key_id}"
        parts: list[iam.Policy] = []
        if session.policy is not None:
            parts.append(self._policy(name, session.policy, "session") or _deny_all(name))
        for policy_name, document in session.policy_docs:
            parts.append(self._policy(policy_name, document, "identity") or _deny_all(policy_name))
        if not parts:
            return ()
        statements = tuple(s for p in parts for s in p.statements)
        return (dataclasses.replace(parts[0], name=name, statements=statements),)

    def _for_web_identity(self, who: WebIdentity) -> _Compiled:
        """A verified web identity asking for a role: no identity policy, so only a trust policy
        naming its provider (``Federated``) can grant."""
        principal = iam.Principal(
            arn=who.provider_arn, account=self._account, type="FederatedUser", userid=who.subject,
            federated=who.provider_arn,
        )  # fmt: skip
        return _Compiled(who, principal, _NO_POLICIES, ())


_NO_POLICIES = iam.compile_policies(())
_ANONYMOUS = _Compiled(None, iam.Principal.anonymous(), _NO_POLICIES, ())  # an unsigned request



def _refuse_service_account(request: RequestContext) -> None:
    """A service account acts with (part of) its parent's rights on data, never on identities:
    creating a key for its parent would mint an unrestricted credential (a breach seen in other
    stores). Read-only IAM calls stay subject to the policies."""
    for check in request.checks:
        name = check.action.lower()
        if name.startswith("iam:") and not name.startswith(("iam:get", "iam:list")):
            request.decision = iam.Decision(False, "explicit_deny", "service-account-rule", "session", None)
            raise e.AccessDenied("A service account cannot manage identities or access keys.")



# What temporary credentials from GetSessionToken may not do (AWS): any IAM action, and any STS
# action but AssumeRole and GetCallerIdentity (so no GetSessionToken from a session either).
_SESSION_TOKEN_STS_ALLOWED = frozenset({"sts:assumerole", "sts:getcalleridentity"})


def _refused_to_session_token(action: str, console: bool = False) -> bool:
    low = action.lower()
    if low.startswith("iam:"):
        return not console
    return low.startswith("sts:") and low not in _SESSION_TOKEN_STS_ALLOWED
