"""The STS query API (``api/_query.py``): AssumeRole, GetSessionToken, GetCallerIdentity and
AssumeRoleWithWebIdentity (docs/security.md "STS").

Each action names its IAM checks, which the dispatcher authorizes through the one ``Authorizer``
before the handler runs: ``sts:AssumeRole`` on the role (the ``IamAuthorizer`` adds the role's
trust policy to that decision); GetSessionToken and GetCallerIdentity need no permission (AWS),
and GetSessionToken refuses session credentials itself, as AWS does. AssumeRoleWithWebIdentity
is unsigned: its credential is the ID token in the form, so the handler verifies the token
(``OidcVerifier``) and then asks the same ``Authorizer`` whether the web identity may assume the
role (a ``RequestContext`` whose principal is the verified identity: the trust policy decides).

The handlers parse the form and shape AWS's XML; the rules (durations, names, policies) are
``StsService``'s. The secret and session token appear in the answer of the call that issues
them and nowhere else.
"""

from __future__ import annotations

import time

from tierstore import errors as e
from tierstore.api._authorize import Check, Principal, RequestContext
from tierstore.api._query import STS, QueryAction, QueryCall, register
from tierstore.api._xml import E
from tierstore.engine import OidcVerifier, Session, StsService, provider_key
from tierstore.engine import Principal as EnginePrincipal

__all__ = ["ACTIONS"]


def _sts(call: QueryCall) -> StsService:
    if call.ctx.sts is None:
        raise e.NotImplementedOperation("Temporary credentials are not enabled on this server.")
    return call.ctx.sts


def _session_of(call: QueryCall) -> Session | None:
    auth = call.request.auth if call.request is not None else None
    session = auth.session if auth is not None else None
    return session if isinstance(session, Session) else None


async def _caller(call: QueryCall) -> Session | EnginePrincipal:
    """Who signed the request: its STS session, or the long-term key's principal."""
    session = _session_of(call)
    if session is not None:
        return session
    ids = call.ctx.identities
    principal = await ids.principal_for(call.access_key) if ids is not None and call.access_key else None
    if principal is None:
        raise e.AccessDenied("Access Denied")
    return principal


def _duration(call: QueryCall) -> int | None:
    raw = call.get("DurationSeconds")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise e.ValidationError(
            f"1 validation error detected: Value '{raw[:16]}' at 'durationSeconds' failed to satisfy "
            "constraint: Member must be an integer"
        )
    return int(raw)


def _policy_arns(call: QueryCall) -> list[str]:
    """``PolicyArns.member.N.arn``, in order."""
    out = []
    i = 1
    while f"PolicyArns.member.{i}.arn" in call.params:
        out.append(call.params[f"PolicyArns.member.{i}.arn"])
        i += 1
    return out


def _expiration(session: Session) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(session.expires_s))


def _credentials(session: Session, token: str) -> str:
    return E(
        "Credentials",
        None,
        E("AccessKeyId", session.access_key_id),
        E("SecretAccessKey", session.secret_key),
        E("SessionToken", token),
        E("Expiration", _expiration(session)),
    )


def _assumed_role_user(session: Session) -> str:
    return E("AssumedRoleUser", None, E("AssumedRoleId", session.user_id), E("Arn", session.arn))


# --- AssumeRole ----------------------------------------------------------------------------
async def _assume_role_checks(call: QueryCall) -> tuple[Check, ...]:
    return (Check("sts:AssumeRole", call.require("RoleArn")),)


async def _assume_role(call: QueryCall) -> str:
    session, token = await _sts(call).assume_role(
        await _caller(call),
        call.require("RoleArn"),
        call.require("RoleSessionName"),
        duration_s=_duration(call),
        policy=call.get("Policy"),
        policy_arns=_policy_arns(call),
    )
    return _credentials(session, token) + _assumed_role_user(session)


# --- GetSessionToken -------------------------------------------------------------------------
async def _get_session_token(call: QueryCall) -> str:
    if _session_of(call) is not None:
        raise e.AccessDenied("Cannot call GetSessionToken with session credentials")
    caller = await _caller(call)
    assert isinstance(caller, EnginePrincipal)
    # TierstoreConsole=true: the web console's sign-in (docs/console.md), whose session may call IAM
    console = call.get("TierstoreConsole") == "true"
    session, token = _sts(call).get_session_token(caller, duration_s=_duration(call), console=console)
    return _credentials(session, token)


# --- GetCallerIdentity -----------------------------------------------------------------------
async def _get_caller_identity(call: QueryCall) -> str:
    caller = await _caller(call)
    account = _sts(call).account
    if isinstance(caller, Session):
        arn, user_id = caller.arn, caller.user_id
    elif caller.user_name is None:
        arn, user_id = f"arn:aws:iam::{account}:root", account
    else:  # a user's key, or a service account of it: the user
        arn, user_id = f"arn:aws:iam::{account}:user/{caller.user_name}", caller.user_id or ""
    return E("Arn", arn) + E("UserId", user_id) + E("Account", account)


# --- AssumeRoleWithWebIdentity ---------------------------------------------------------------
async def _assume_role_with_web_identity(call: QueryCall) -> str:
    sts = _sts(call)
    role_arn = call.require("RoleArn")
    session_name = sts.check_session_name(call.require("RoleSessionName"))
    token = call.require("WebIdentityToken")
    duration_s = _duration(call)
    oidc: OidcVerifier | None = call.ctx.oidc
    if oidc is None:
        raise e.NotImplementedOperation("Web identity federation is not enabled on this server.")
    who = await oidc.verify(token)
    # The trust policy decides, through the one Authorizer (as the dispatcher would).
    request = call.request
    authz = RequestContext(
        Principal("", who),
        "sts:AssumeRoleWithWebIdentity",
        (Check("sts:AssumeRoleWithWebIdentity", role_arn),),
        scheme="anonymous",
        headers=request.headers if request is not None else None,
        query=call.params,  # sts:RoleSessionName, ... for the trust policy
    )
    if request is not None:
        request.authz = authz  # the decision shows in the access log
    await call.ctx.authorizer.authorize(authz)
    session, sealed = await sts.assume_role_with_web_identity(
        await sts.role_for_assume(role_arn),
        session_name,
        provider_arn=who.provider_arn,
        claims=who.claims,
        duration_s=duration_s,
        policy=call.get("Policy"),
        policy_arns=_policy_arns(call),
    )
    return (
        _credentials(session, sealed)
        + E("SubjectFromWebIdentityToken", who.subject)
        + _assumed_role_user(session)
        + E("Provider", provider_key(who.provider_url))
        + E("Audience", who.audience)
    )


async def _none(call: QueryCall) -> tuple[Check, ...]:
    return ()


ACTIONS = {
    "AssumeRole": QueryAction(_assume_role, _assume_role_checks),
    "GetSessionToken": QueryAction(_get_session_token, _none),  # no permission needed (AWS)
    "GetCallerIdentity": QueryAction(_get_caller_identity, _none),  # no permission needed (AWS)
    # Unsigned: the ID token is the credential; the handler verifies it, then authorizes.
    "AssumeRoleWithWebIdentity": QueryAction(_assume_role_with_web_identity, _none, anonymous=True),
}
register(STS, ACTIONS)
