"""Temporary credentials (STS): issuing and opening session tokens, and who a session acts as.

A session is stateless (docs/security.md "STS"): ``issue`` seals its claims into the session
token under the master key (``tierstore.crypto.seal_session_token``) and writes nothing; any
worker opens a token with ``open`` (cached per token). What a session may do is looked up when
it is used, from the catalog, through short-lived caches (``cache_ttl_s``, 1 s; on PostgreSQL
until an ``iam`` notification, tierstore/_watch.py): the role's
policies for a role session (a deleted role's sessions stop working within about a second, and
a role deleted and created again under the same name does not revive them: its id changed), the
user's policies for a GetSessionToken session.

The STS actions' parameter rules (durations, session names, session policies) live here, so the
query API handlers (``api/_sts.py``) only parse the form and shape the XML.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tierstore._watch import ConfigWatch
from tierstore.catalog import RoleRecord
from tierstore.crypto import MasterKey, SealedSecretError, open_session_token, seal_session_token
from tierstore.engine._identity import AppliedPolicy, IdentityService, Principal
from tierstore.errors import (
    AccessDenied,
    ExpiredToken,
    InvalidAccessKeyId,
    InvalidToken,
    NoSuchEntity,
    ValidationError,
)

__all__ = ["ACCOUNT", "CONSOLE_CLAIM", "RoleState", "Session", "StsService", "role_name_of"]

ACCOUNT = "000000000000"  # one account per store; the api layer's ACCOUNT_ID is the same
# The claim of a console sign-in's session (GetSessionToken with ``TierstoreConsole=true``): like
# AWS's console sign-in, and unlike a plain GetSessionToken session, it may call IAM (as its user's
# policies allow). A condition key too, so a policy can tell console sessions apart.
CONSOLE_CLAIM = "tierstore:ConsoleSession"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_ROLE_ARN = re.compile(r"arn:aws:iam::([0-9]{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})", re.ASCII)
_POLICY_ARN = re.compile(r"arn:aws:iam::([0-9]{12}):policy/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,128})", re.ASCII)
_CACHE_MAX = 10_000
MIN_DURATION_S = 900
ROLE_MAX_DURATION_S = 43_200
CHAINED_MAX_DURATION_S = 3_600  # a role session assuming a role (role chaining), as AWS
SESSION_TOKEN_DEFAULT_S = 43_200
SESSION_TOKEN_MAX_S = 129_600
ROOT_SESSION_TOKEN_MAX_S = 3_600
MAX_POLICY_ARNS = 10


@dataclass(frozen=True, slots=True)
class Session:
    """One set of temporary credentials, as sealed in its session token.

    ``kind``: ``role`` (AssumeRole, AssumeRoleWithWebIdentity: ``name`` is the role, ``principal_id``
    its role id), ``user`` (GetSessionToken of a user: ``name``, ``principal_id`` the user's) or
    ``root`` (GetSessionToken of the root). ``policy`` is the inline session policy and
    ``policy_docs`` the managed session policies' (name, document), which together narrow the
    session. ``provider`` (the OIDC provider's ARN) and ``claims`` (condition keys such as
    ``HOST/PATH:sub``) are set for web-identity sessions."""

    access_key_id: str
    secret_key: str = field(repr=False)
    expires_s: int
    issued_s: int
    kind: str
    name: str
    principal_id: str
    session_name: str = ""
    policy: str | None = None
    policy_docs: tuple[tuple[str, str], ...] = ()
    provider: str = ""
    claims: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    account: str = ACCOUNT

    @property
    def arn(self) -> str:
        """The caller's ARN, as GetCallerIdentity and the policies see it."""
        if self.kind == "role":
            return f"arn:aws:sts::{self.account}:assumed-role/{self.name}/{self.session_name}"
        if self.kind == "user":
            return f"arn:aws:iam::{self.account}:user/{self.name}"
        return f"arn:aws:iam::{self.account}:root"

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/{self.name}" if self.kind == "role" else ""

    @property
    def user_id(self) -> str:
        """``aws:userid``: ``ROLEID:SESSION`` for a role session (as AWS), the user's id, the account."""
        if self.kind == "role":
            return f"{self.principal_id}:{self.session_name}"
        return self.principal_id or self.account

    def claims_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "akid": self.access_key_id,
            "secret": self.secret_key,
            "exp": self.expires_s,
            "iat": self.issued_s,
            "kind": self.kind,
            "name": self.name,
            "pid": self.principal_id,
            "sn": self.session_name,
            "pol": self.policy,
            "pols": [list(p) for p in self.policy_docs],
            "idp": self.provider,
            "claims": {k: v if isinstance(v, str) else list(v) for k, v in self.claims.items()},
        }

    @classmethod
    def from_claims(cls, c: Mapping[str, Any], account: str) -> Session:
        """``KeyError``/``TypeError``/``ValueError`` when ``c`` is not what ``claims_json`` wrote."""
        if c["v"] != 1:
            raise ValueError("unknown session token version")
        claims = {str(k): v if isinstance(v, str) else tuple(str(x) for x in v) for k, v in c["claims"].items()}
        return cls(
            str(c["akid"]),
            str(c["secret"]),
            int(c["exp"]),
            int(c["iat"]),
            str(c["kind"]),
            str(c["name"]),
            str(c["pid"]),
            str(c["sn"]),
            None if c["pol"] is None else str(c["pol"]),
            tuple((str(n), str(d)) for n, d in c["pols"]),
            str(c["idp"]),
            claims,
            account,
        )


@dataclass(frozen=True, slots=True)
class RoleState:
    """A role as its sessions need it: the record (its id, trust policy), its identity policies
    and its permissions boundary."""

    role: RoleRecord
    policies: tuple[AppliedPolicy, ...]
    boundary: AppliedPolicy | None = None


def role_name_of(role_arn: str, account: str = ACCOUNT) -> str:
    """The role name in ``role_arn`` (``arn:aws:iam::ACCOUNT:role/[PATH/]NAME``); ``ValidationError``
    when it is not a role ARN, ``AccessDenied`` when it names another account."""
    m = _ROLE_ARN.fullmatch(role_arn or "")
    if m is None:
        raise ValidationError(f"{role_arn!r} is not a valid role ARN (arn:aws:iam::{account}:role/NAME).")
    if m.group(1) != account:
        raise AccessDenied("Cross-account roles are not supported: this store is one account.")
    return m.group(2)


def _check_session_name(name: str) -> str:
    if not isinstance(name, str) or not _SESSION_NAME.fullmatch(name):
        raise ValidationError(
            "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint: "
            "Member must be 2 to 64 characters of [\\w+=,.@-]"
        )
    return name


def _check_duration(duration_s: int | None, default_s: int, max_s: int) -> int:
    """The requested duration (``default_s``, capped at ``max_s``, when none was asked); the
    upper bounds are each action's own message."""
    if duration_s is None:
        return min(default_s, max_s)
    if duration_s < MIN_DURATION_S:
        raise ValidationError(
            f"1 validation error detected: Value '{duration_s}' at 'durationSeconds' failed to satisfy "
            f"constraint: Member must have value greater than or equal to {MIN_DURATION_S}"
        )
    return duration_s


class StsService:
    """Issues and opens session tokens; answers who a session acts as (see the module docstring).

    ``validate_session_policy(document)`` vets an inline session policy (the composition root
    gives ``tierstore.iam.parse_policy`` with kind ``session``; ``MalformedPolicyDocument``)."""

    def __init__(
        self,
        identities: IdentityService,
        master_key: MasterKey,
        *,
        account: str = ACCOUNT,
        cache_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identities = identities
        self._key = master_key
        self.account = account
        self.cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._monotonic = monotonic
        self._opened: dict[str, Session] = {}
        self._roles: dict[str, tuple[float, RoleState | None]] = {}
        self._users: dict[tuple[str, str], tuple[float, Principal | None]] = {}
        self.watch = ConfigWatch()

    def watch_with(self, watch: ConfigWatch) -> None:
        """Keep roles and session users as ``watch`` says; every ``iam`` change drops them all."""
        self.watch = watch
        watch.on("iam", self.forget)

    def forget(self, _name: str | None = None) -> None:
        """Drop this worker's cached roles and session users."""
        self._roles.clear()
        self._users.clear()

    def __repr__(self) -> str:
        return f"StsService(account={self.account!r}, master_key={self._key!r})"

    # --- tokens ----------------------------------------------------------------------------
    def issue(
        self,
        *,
        kind: str,
        name: str,
        principal_id: str,
        duration_s: int,
        session_name: str = "",
        policy: str | None = None,
        policy_docs: tuple[tuple[str, str], ...] = (),
        provider: str = "",
        claims: Mapping[str, str | tuple[str, ...]] | None = None,
    ) -> tuple[Session, str]:
        """New temporary credentials: (the session, its token). Nothing is stored."""
        now = int(self._clock())
        access_key_id = "ASIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        session = Session(
            access_key_id, secret, now + duration_s, now, kind, name, principal_id, session_name,
            policy, policy_docs, provider, dict(claims or {}), self.account,
        )  # fmt: skip
        return session, seal_session_token(self._key, session.claims_json())

    def open(self, access_key_id: str, token: str) -> Session:
        """The session of ``token``, for a request signed by ``access_key_id``.

        ``InvalidToken`` when the token is not one this store sealed (malformed, altered, another
        master key), ``ExpiredToken`` past its expiry, ``InvalidAccessKeyId`` when the request's
        access key id is not the session's. No message carries the token or the secret."""
        session = self._opened.get(token)
        if session is None:
            try:
                session = Session.from_claims(open_session_token(self._key, token), self.account)
            except (SealedSecretError, KeyError, TypeError, ValueError, AttributeError):
                raise InvalidToken() from None
            if len(self._opened) >= _CACHE_MAX:
                self._opened.clear()
            self._opened[token] = session
        if self._clock() >= session.expires_s:
            raise ExpiredToken()
        if session.access_key_id != access_key_id:
            raise InvalidAccessKeyId()
        return session

    def secret_for_token(self, access_key_id: str, token: str) -> tuple[str, Session]:
        """The authenticator's hook: (the secret that must have signed the request, its session)."""
        session = self.open(access_key_id, token)
        return session.secret_key, session

    # --- who a session acts as (cached for cache_ttl_s) ------------------------------------
    async def role_state(self, name: str) -> RoleState | None:
        """The role ``name`` and its policies; None when it does not exist (now)."""
        now = self._monotonic()
        hit = self._roles.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        epoch = self.watch.epoch
        cat = self.identities.catalog
        role = await cat.iam_get_role(name)
        state = None
        if role is not None:
            bound = await cat.iam_boundary("role", name)
            boundary = AppliedPolicy(bound[0], "role-boundary", name, bound[1]) if bound is not None else None
            state = RoleState(role, await self.identities.role_policies(name), boundary)
        if self.watch.current(epoch):
            if len(self._roles) >= _CACHE_MAX:
                self._roles.clear()
            self._roles[name] = (now + self.watch.lifetime(self.cache_ttl_s), state)
        return state

    async def user_state(self, session: Session) -> Principal | None:
        """The user behind a GetSessionToken session with its policies; None when gone or disabled."""
        k = (session.name, session.access_key_id)
        now = self._monotonic()
        hit = self._users.get(k)
        if hit is not None and hit[0] > now:
            return hit[1]
        epoch = self.watch.epoch
        found = await self.identities.user_principal(session.name, session.access_key_id)
        if found is not None and found.user_id != session.principal_id:
            found = None  # deleted and created again: not the user the session was issued to
        if self.watch.current(epoch):
            if len(self._users) >= _CACHE_MAX:
                self._users.clear()
            self._users[k] = (now + self.watch.lifetime(self.cache_ttl_s), found)
        return found

    # --- the STS actions' rules --------------------------------------------------------------
    async def role_for_assume(self, role_arn: str) -> RoleRecord:
        """The role an AssumeRole names (``NoSuchEntity``/``ValidationError``/``AccessDenied``)."""
        name = role_name_of(role_arn, self.account)
        state = await self.role_state(name)
        if state is None:
            raise NoSuchEntity(f"The role with name {name} cannot be found.", resource=role_arn)
        return state.role

    async def _session_policies(
        self, policy: str | None, policy_arns: list[str]
    ) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        if policy is not None:
            self.identities.validate_policy(policy, "session")
        if len(policy_arns) > MAX_POLICY_ARNS:
            raise ValidationError(f"At most {MAX_POLICY_ARNS} managed session policies (PolicyArns) are allowed.")
        docs: list[tuple[str, str]] = []
        for arn in policy_arns:
            m = _POLICY_ARN.fullmatch(arn)
            if m is None or m.group(1) != self.account:
                raise ValidationError(f"{arn!r} is not a managed policy ARN of this account.")
            found = await self.identities.catalog.iam_get_policy(m.group(2))
            if found is None:
                raise NoSuchEntity(f"Policy {arn} does not exist or is not attachable.", resource=arn)
            docs.append((found[0], found[2]))
        return policy, tuple(docs)

    async def assume_role(
        self,
        caller: Session | Principal,
        role_arn: str,
        session_name: str,
        *,
        duration_s: int | None = None,
        policy: str | None = None,
        policy_arns: list[str] | None = None,
    ) -> tuple[Session, str]:
        """AssumeRole for ``caller`` (its trust was decided by the authorizer before this runs)."""
        _check_session_name(session_name)
        role = await self.role_for_assume(role_arn)
        if isinstance(caller, Principal) and caller.is_root:
            raise AccessDenied("Roles may not be assumed by root accounts.")
        chained = isinstance(caller, Session)
        if chained and caller.kind == "root":
            raise AccessDenied("Roles may not be assumed by root accounts.")
        duration = _check_duration(duration_s, 3600, role.max_session_s)
        if duration > ROLE_MAX_DURATION_S or duration > role.max_session_s:
            raise ValidationError("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
        if chained and caller.kind == "role" and duration > CHAINED_MAX_DURATION_S:
            raise ValidationError(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
            )
        pol, docs = await self._session_policies(policy, policy_arns or [])
        return self.issue(
            kind="role", name=role.name, principal_id=role.role_id, duration_s=duration,
            session_name=session_name, policy=pol, policy_docs=docs,
        )  # fmt: skip

    def get_session_token(
        self, caller: Principal, *, duration_s: int | None = None, console: bool = False
    ) -> tuple[Session, str]:
        """GetSessionToken for a user or the root (long-term credentials only: the dispatcher's
        authorizer refuses session credentials; a service account is refused here). ``console``:
        a console sign-in's session, marked with ``CONSOLE_CLAIM`` (it may call IAM)."""
        if caller.kind == "service":
            raise AccessDenied("A service account cannot get session tokens.")
        root = caller.is_root
        max_s = ROOT_SESSION_TOKEN_MAX_S if root else SESSION_TOKEN_MAX_S
        duration = _check_duration(duration_s, SESSION_TOKEN_DEFAULT_S, max_s)
        if duration > SESSION_TOKEN_MAX_S:
            raise ValidationError(
                f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy "
                f"constraint: Member must have value less than or equal to {SESSION_TOKEN_MAX_S}"
            )
        duration = min(duration, max_s)  # the root's sessions are capped at one hour, as AWS
        claims = {CONSOLE_CLAIM: "true"} if console else None
        if root:
            return self.issue(kind="root", name="", principal_id="", duration_s=duration, claims=claims)
        assert caller.user_name is not None and caller.user_id is not None
        return self.issue(
            kind="user", name=caller.user_name, principal_id=caller.user_id, duration_s=duration, claims=claims
        )

    async def assume_role_with_web_identity(
        self,
        role: RoleRecord,
        session_name: str,
        *,
        provider_arn: str,
        claims: Mapping[str, str | tuple[str, ...]],
        duration_s: int | None = None,
        policy: str | None = None,
        policy_arns: list[str] | None = None,
    ) -> tuple[Session, str]:
        """AssumeRoleWithWebIdentity once the token was verified and the trust policy allowed it."""
        duration = _check_duration(duration_s, 3600, role.max_session_s)
        if duration > role.max_session_s:
            raise ValidationError("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
        pol, docs = await self._session_policies(policy, policy_arns or [])
        return self.issue(
            kind="role", name=role.name, principal_id=role.role_id, duration_s=duration,
            session_name=session_name, policy=pol, policy_docs=docs, provider=provider_arn, claims=claims,
        )  # fmt: skip

    def check_session_name(self, name: str) -> str:
        return _check_session_name(name)
