"""Verifying OpenID Connect ID tokens for AssumeRoleWithWebIdentity (docs/security.md "STS").

The JOSE work (JWS signature, algorithm/key matching, ``exp``/``nbf``/``iss``/``aud``) is PyJWT's;
this module finds the provider and its keys and turns every failure into STS's error:

1. The token's ``iss`` must be a registered provider (``IdentityService.create_oidc_provider``:
   url = issuer, client ids = the accepted audiences).
2. Its header ``alg`` must be RS256, ES256 or EdDSA: HS256 (a shared secret the provider's public
   keys cannot verify, and an old key-confusion trap) and ``none`` are refused before any key is
   looked at.
3. The provider's keys come from ``ISSUER/.well-known/openid-configuration`` -> ``jwks_uri``,
   cached per worker for ``jwks_ttl_s``; a ``kid`` not in the cached set refetches it, at most
   once per ``refetch_min_s`` per provider (a token naming random kids cannot make the server
   hammer the provider).
4. PyJWT checks the signature, ``exp``, ``nbf``, ``iss`` and ``aud`` (one of the client ids), and
   that ``sub`` is present.

The answer carries the claims as condition keys ``HOST/PATH:claim`` (``127.0.0.1:8443/realm:sub``)
for trust and identity policies.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from tierstore.engine._identity import oidc_url_allowed
from tierstore.errors import ExpiredTokenException, IDPCommunicationError, InvalidIdentityToken

__all__ = ["ALGORITHMS", "OidcVerifier", "WebIdentity", "provider_key"]

ALGORITHMS = ("RS256", "ES256", "EdDSA")
MAX_TOKEN_CHARS = 16 * 1024
MAX_DOCUMENT_BYTES = 1024 * 1024  # discovery documents and key sets are a few KiB
LEEWAY_S = 30  # clock skew allowed between the provider and this server (exp, nbf)


def provider_key(url: str) -> str:
    """``HOST[:PORT][/PATH]`` of an issuer URL: the provider's name in ARNs and condition keys."""
    return url.split("://", 1)[-1].rstrip("/")


@dataclass(frozen=True, slots=True)
class WebIdentity:
    """A verified ID token: its provider (registered URL, ARN), subject, the audience that matched,
    and the claims as condition keys (``HOST/PATH:claim`` -> value or values)."""

    provider_url: str
    provider_arn: str
    subject: str
    audience: str
    claims: Mapping[str, str | tuple[str, ...]]


def _fetch_json(url: str, timeout_s: float) -> Any:
    """GET ``url`` and parse it as JSON; ``IDPCommunicationError`` on any failure (blocking)."""
    if not oidc_url_allowed(url):
        raise IDPCommunicationError("The identity provider's key URL must be https (or http on this host).")
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - scheme checked above
            body = resp.read(MAX_DOCUMENT_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise IDPCommunicationError(f"The identity provider could not be reached: {type(exc).__name__}.") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise IDPCommunicationError("The identity provider's answer is too large.")
    try:
        return json.loads(body)
    except ValueError:
        raise IDPCommunicationError("The identity provider's answer is not JSON.") from None


class OidcVerifier:
    """Verifies ID tokens against the registered providers (see the module docstring).

    ``providers()`` returns the registered providers as ``IdentityService.list_oidc_providers``
    does (``url``, ``client_ids``); ``fetch(url, timeout_s)`` gets a JSON document (blocking; run
    in a thread)."""

    def __init__(
        self,
        providers: Callable[[], Awaitable[Sequence[Mapping[str, Any]]]],
        *,
        account: str = "000000000000",
        jwks_ttl_s: float = 600.0,
        refetch_min_s: float = 10.0,
        fetch_timeout_s: float = 5.0,
        fetch: Callable[[str, float], Any] = _fetch_json,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = providers
        self.account = account
        self.jwks_ttl_s = jwks_ttl_s
        self.refetch_min_s = refetch_min_s
        self.fetch_timeout_s = fetch_timeout_s
        self._fetch = fetch
        self._monotonic = monotonic
        self._keys: dict[str, tuple[float, jwt.PyJWKSet | None]] = {}  # issuer -> (fetched at, keys)
        self.fetches = 0  # how many key sets were fetched (observability, tests)

    def __repr__(self) -> str:
        return f"OidcVerifier(jwks_ttl_s={self.jwks_ttl_s!r}, refetch_min_s={self.refetch_min_s!r})"

    async def verify(self, token: str) -> WebIdentity:
        """The verified identity in ``token``; ``InvalidIdentityToken``, ``ExpiredTokenException``
        or ``IDPCommunicationError`` otherwise. No message carries the token."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidIdentityToken("The web identity token is missing or too long.")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidIdentityToken("The web identity token is not a well-formed JWT.") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidIdentityToken(f"The web identity token's algorithm must be one of {', '.join(ALGORITHMS)}.")
        issuer = unverified.get("iss")
        provider = await self._provider(issuer)
        url = str(provider["url"])
        client_ids = [str(c) for c in provider.get("client_ids") or []]
        if not client_ids:
            raise InvalidIdentityToken("The provider has no client id (audience) registered.")
        key = await self._key(url, header.get("kid"), alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=client_ids,
                issuer=issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise ExpiredTokenException("Token expired: the web identity token's exp is in the past.") from None
        except jwt.ImmatureSignatureError:
            raise InvalidIdentityToken("The web identity token is not valid yet (nbf).") from None
        except jwt.InvalidAudienceError:
            raise InvalidIdentityToken("Incorrect token audience.") from None
        except jwt.InvalidSignatureError:
            raise InvalidIdentityToken("The web identity token's signature does not verify.") from None
        except jwt.PyJWTError as exc:
            raise InvalidIdentityToken(f"The web identity token is not valid ({type(exc).__name__}).") from None
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else [str(a) for a in aud]
        audience = next(a for a in audiences if a in client_ids)
        name = provider_key(url)
        conditions: dict[str, str | tuple[str, ...]] = {}
        for claim, value in claims.items():
            if isinstance(value, str):
                conditions[f"{name}:{claim}"] = value
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                conditions[f"{name}:{claim}"] = tuple(value)
        conditions[f"{name}:aud"] = audience  # the client id that matched, as AWS
        return WebIdentity(
            url, f"arn:aws:iam::{self.account}:oidc-provider/{name}", str(claims["sub"]), audience, conditions
        )

    async def _provider(self, issuer: object) -> Mapping[str, Any]:
        if isinstance(issuer, str) and issuer:
            for p in await self._providers():
                if str(p["url"]).rstrip("/") == issuer.rstrip("/"):
                    return p
        shown = issuer[:255] if isinstance(issuer, str) else "(none)"
        raise InvalidIdentityToken(f"No OpenIDConnect provider found in your account for {shown}")

    async def _key(self, issuer: str, kid: object, alg: str) -> jwt.PyJWK:
        now = self._monotonic()
        cached = self._keys.get(issuer)
        keys = cached[1] if cached is not None and now - cached[0] < self.jwks_ttl_s else None
        found = _pick(keys, kid, alg) if keys is not None else None
        if found is None and (cached is None or keys is None or now - cached[0] >= self.refetch_min_s):
            keys = await asyncio.to_thread(self._fetch_keys, issuer)
            self._keys[issuer] = (self._monotonic(), keys)
            found = _pick(keys, kid, alg)
        if found is None:
            raise InvalidIdentityToken("The web identity token's key (kid) is not among the provider's keys.")
        return found

    def _fetch_keys(self, issuer: str) -> jwt.PyJWKSet:
        self.fetches += 1
        config = self._fetch(issuer.rstrip("/") + "/.well-known/openid-configuration", self.fetch_timeout_s)
        jwks_uri = config.get("jwks_uri") if isinstance(config, dict) else None
        if not isinstance(jwks_uri, str):
            raise IDPCommunicationError("The provider's discovery document has no jwks_uri.")
        data = self._fetch(jwks_uri, self.fetch_timeout_s)
        try:
            return jwt.PyJWKSet.from_dict(data)
        except (jwt.PyJWTError, KeyError, TypeError, AttributeError):
            raise IDPCommunicationError("The provider's key set (JWKS) has no usable key.") from None


def _pick(keys: jwt.PyJWKSet, kid: object, alg: str) -> jwt.PyJWK | None:
    """The key ``kid`` names (or, without a kid, the only key fit for ``alg``)."""
    if isinstance(kid, str):
        return next((k for k in keys.keys if k.key_id == kid), None)
    fit = [k for k in keys.keys if k.algorithm_name == alg]
    return fit[0] if len(fit) == 1 else None
