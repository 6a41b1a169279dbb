"""Console sign-in with an OpenID Connect provider (docs/console.md "Sign-in with an OIDC provider").

The console is an OIDC relying party using the authorization code flow with PKCE (S256), a
``state`` and a ``nonce``:

1. ``GET /console/login/oidc`` makes a random state, nonce and code verifier, seals them (with
   where to go after sign-in) into a short-lived cookie of their own, and redirects the browser
   to the provider's ``authorization_endpoint`` (from its discovery document).
2. The provider sends the browser back to ``/console/login/oidc/callback?code=&state=``: the
   state must be the sealed one; the code (with the verifier, and the client secret if any) is
   exchanged at the provider's ``token_endpoint`` for an ID token whose ``nonce`` must be the
   sealed one.
3. The ID token goes to STS ``AssumeRoleWithWebIdentity`` *through the dispatcher* (an unsigned
   botocore call, as any web identity client makes it): the server verifies the token against
   its registered IAM OIDC providers, and the role's trust policy and its conditions decide.
   The role session's credentials become the same sealed session cookie as a key sign-in.

No token, code, verifier or client secret is logged or shown; an error is a page that says what
failed (the provider refused, the state does not match, the provider is down, the role refuses).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tierstore.crypto import MasterKey, SealedSecretError
from tierstore.engine._identity import oidc_url_allowed

__all__ = ["FLOW_COOKIE", "FLOW_S", "OidcFailed", "OidcFlow", "OidcSignIn", "config_problem", "session_name_of"]

FLOW_COOKIE = "tierstore_console_oidc"  # the flow's sealed state, nonce and verifier (Path=/console/login)
FLOW_S = 600  # a sign-in at the provider must come back within ten minutes
_CONTEXT = b"tierstore-console-oidc-flow"
_TIMEOUT_S = 5.0
_MAX_ANSWER_BYTES = 1024 * 1024
_DISCOVERY_TTL_S = 600.0


class OidcFailed(Exception):
    """A sign-in through the provider failed: ``status`` and a message for the page (never a token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class OidcFlow:
    """What the browser's round trip through the provider must bring back (sealed in a cookie)."""

    state: str
    nonce: str
    verifier: str
    next: str
    expires_s: int

    def __repr__(self) -> str:
        return f"OidcFlow(next={self.next!r}, expires_s={self.expires_s})"


def session_name_of(subject: str) -> str:
    """A RoleSessionName from the token's subject (2-64 of ``[\\w+=,.@-]``): who the audit log names."""
    name = re.sub(r"[^\w+=,.@-]", "-", subject)[:64]
    return name if len(name) >= 2 else "console"


def config_problem(issuer: str, client_id: str, role_arn: str) -> str:
    """What is wrong with the operator's OIDC sign-in options ("" when nothing; ``serve`` checks at start)."""
    if not oidc_url_allowed(issuer):
        return "--console-oidc-issuer must be an https URL (or http to this host)"
    if not client_id or not role_arn:
        return "--console-oidc-issuer needs --console-oidc-client-id and --console-oidc-role"
    if not role_arn.startswith("arn:aws:iam::") or ":role/" not in role_arn:
        return "--console-oidc-role must be a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
    return ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class OidcSignIn:
    """The operator's OIDC configuration (``serve --console-oidc-*``) and the relying party's steps.

    ``issuer``: the provider's issuer URL, registered as an IAM OIDC provider with ``client_id``
    among its client ids (audiences); ``role_arn``: the role the console assumes with the ID
    token; ``redirect_url``: the callback URL the provider knows (empty: derived from the URL the
    browser reached the console at); ``name``: shown on the button (empty: the issuer's host)."""

    def __init__(
        self,
        master_key: MasterKey,
        *,
        issuer: str,
        client_id: str,
        role_arn: str,
        client_secret: str = "",
        redirect_url: str = "",
        name: str = "",
    ) -> None:
        problem = config_problem(issuer, client_id, role_arn)
        if problem:
            raise ValueError(problem)
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.role_arn = role_arn
        self._client_secret = client_secret
        self.redirect_url = redirect_url
        self.name = name or (urllib.parse.urlsplit(issuer).hostname or issuer)
        self._key = master_key
        self._discovery: tuple[float, dict[str, Any]] | None = None

    def __repr__(self) -> str:  # never the client secret
        return f"OidcSignIn(issuer={self.issuer!r}, client_id={self.client_id!r}, role_arn={self.role_arn!r})"

    def callback_url(self, endpoint: str) -> str:
        return self.redirect_url or f"{endpoint}/console/login/oidc/callback"

    # --- the flow cookie -------------------------------------------------------------------
    def new_flow(self, next_path: str) -> tuple[OidcFlow, str]:
        """A fresh flow and its sealed cookie value."""
        flow = OidcFlow(
            secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48), next_path,
            int(time.time()) + FLOW_S,
        )  # fmt: skip
        doc = {"s": flow.state, "n": flow.nonce, "v": flow.verifier, "next": flow.next, "exp": flow.expires_s}
        blob = self._key.seal(json.dumps(doc, separators=(",", ":")).encode(), context=_CONTEXT)
        return flow, _b64(blob)

    def open_flow(self, value: str) -> OidcFlow | None:
        if not value:
            return None
        try:
            blob = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            doc = json.loads(self._key.open_sealed(blob, context=_CONTEXT))
            flow = OidcFlow(str(doc["s"]), str(doc["n"]), str(doc["v"]), str(doc["next"]), int(doc["exp"]))
        except (SealedSecretError, ValueError, KeyError, TypeError):
            return None
        return flow if time.time() < flow.expires_s else None

    # --- the provider ----------------------------------------------------------------------
    async def authorize_url(self, flow: OidcFlow, endpoint: str) -> str:
        """Where the browser goes to sign in at the provider."""
        config = await self._config()
        auth = config.get("authorization_endpoint")
        if not isinstance(auth, str) or not oidc_url_allowed(auth):
            raise OidcFailed(502, "The identity provider's discovery document has no usable authorization endpoint.")
        challenge = _b64(hashlib.sha256(flow.verifier.encode()).digest())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.callback_url(endpoint),
                "scope": "openid",
                "state": flow.state,
                "nonce": flow.nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{auth}{'&' if '?' in auth else '?'}{query}"

    async def id_token(self, code: str, flow: OidcFlow, endpoint: str) -> tuple[str, str]:
        """Exchange ``code`` at the token endpoint: (the ID token, its subject), its nonce checked."""
        config = await self._config()
        token_url = config.get("token_endpoint")
        if not isinstance(token_url, str) or not oidc_url_allowed(token_url):
            raise OidcFailed(502, "The identity provider's discovery document has no usable token endpoint.")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.callback_url(endpoint),
            "client_id": self.client_id,
            "code_verifier": flow.verifier,
        }
        if self._client_secret:
            form["client_secret"] = self._client_secret  # client_secret_post
        status, answer = await asyncio.to_thread(_post_form, token_url, form)
        if status != 200 or not isinstance(answer, dict):
            err = answer.get("error") if isinstance(answer, dict) else None
            shown = err if isinstance(err, str) and re.fullmatch(r"[\w.-]{1,64}", err) else f"HTTP {status}"
            raise OidcFailed(502, f"The identity provider did not exchange the sign-in code ({shown}).")
        token = answer.get("id_token")
        if not isinstance(token, str) or not token:
            raise OidcFailed(502, "The identity provider's answer has no ID token.")
        try:
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        except (ValueError, IndexError):
            raise OidcFailed(502, "The identity provider's ID token is not a JWT.") from None
        # The signature, issuer, audience and expiry are verified by STS; the nonce binds the
        # token to this browser's flow (a token replayed from another sign-in is refused here).
        nonce = claims.get("nonce") if isinstance(claims, dict) else None
        if not isinstance(nonce, str) or not secrets.compare_digest(nonce.encode(), flow.nonce.encode()):
            raise OidcFailed(400, "The ID token is not this sign-in's (its nonce does not match); start again.")
        subject = claims.get("sub")
        return token, subject if isinstance(subject, str) else ""

    async def _config(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._discovery is not None and now - self._discovery[0] < _DISCOVERY_TTL_S:
            return self._discovery[1]
        url = f"{self.issuer}/.well-known/openid-configuration"
        status, config = await asyncio.to_thread(_get_json, url)
        if status != 200 or not isinstance(config, dict):
            raise OidcFailed(502, f"The identity provider's discovery document could not be read (HTTP {status}).")
        self._discovery = (now, config)
        return config


def _answer(req: urllib.request.Request) -> tuple[int, Any]:
    """(status, JSON body or None); ``OidcFailed`` (502) when the provider cannot be reached."""
    try:
        with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp:  # noqa: S310 - URLs checked by oidc_url_allowed
            status, body = resp.status, resp.read(_MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(_MAX_ANSWER_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OidcFailed(502, f"The identity provider could not be reached ({type(exc).__name__}).") from None
    try:
        return status, json.loads(body) if len(body) <= _MAX_ANSWER_BYTES else None
    except ValueError:
        return status, None


def _get_json(url: str) -> tuple[int, Any]:
    return _answer(urllib.request.Request(url, headers={"accept": "application/json"}))  # noqa: S310


def _post_form(url: str, form: dict[str, str]) -> tuple[int, Any]:
    data = urllib.parse.urlencode(form).encode()
    headers = {"accept": "application/json", "content-type": "application/x-www-form-urlencoded"}
    return _answer(urllib.request.Request(url, data=data, headers=headers, method="POST"))  # noqa: S310
