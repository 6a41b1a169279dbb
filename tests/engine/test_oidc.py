"""OidcVerifier against a real local OpenID Connect provider (tests/oidc.py): discovery and JWKS
over HTTP, tokens signed with real keys; every forgery is refused with STS's error."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.oidc import OidcProvider
from tierstore.engine import OidcVerifier, WebIdentity
from tierstore.errors import ExpiredTokenException, IDPCommunicationError, InvalidIdentityToken


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


def registered(*providers: dict[str, Any]) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """The registered providers, as ``IdentityService.list_oidc_providers`` answers them."""

    async def providers_() -> list[dict[str, Any]]:
        return list(providers)

    return providers_


def verifier(idp: OidcProvider, **kw: float) -> OidcVerifier:
    return OidcVerifier(registered({"url": idp.issuer, "client_ids": ["tierstore", "other-app"]}), **kw)


def verify(v: OidcVerifier, token: str) -> WebIdentity:
    return asyncio.run(v.verify(token))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_each_allowed_algorithm_verifies(idp: OidcProvider, alg: str) -> None:
    who = verify(verifier(idp), idp.token(alg=alg, sub="bob", email="bob@example.org", groups=["ml", "ops"]))
    assert who.subject == "bob"
    assert who.audience == "tierstore"
    assert who.provider_arn == f"arn:aws:iam::000000000000:oidc-provider/{idp.name}"
    assert who.claims[f"{idp.name}:sub"] == "bob"
    assert who.claims[f"{idp.name}:email"] == "bob@example.org"
    assert who.claims[f"{idp.name}:groups"] == ("ml", "ops")


def test_audience_list_matches_any_client_id(idp: OidcProvider) -> None:
    who = verify(verifier(idp), idp.token(aud=["somebody-else", "other-app"]))
    assert who.audience == "other-app"
    assert who.claims[f"{idp.name}:aud"] == "other-app"


def _forged_hs256(idp: OidcProvider) -> str:
    return jwt.encode({"iss": idp.issuer, "sub": "x", "aud": "tierstore", "exp": 2**33}, "s" * 32, algorithm="HS256")


def _unsigned(idp: OidcProvider) -> str:
    def part(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    claims = {"iss": idp.issuer, "sub": "x", "aud": "tierstore", "exp": 2**33}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    ("make", "error"),
    [
        ("wrong signature", InvalidIdentityToken),
        ("wrong audience", InvalidIdentityToken),
        ("unknown issuer", InvalidIdentityToken),
        ("HS256", InvalidIdentityToken),
        ("none", InvalidIdentityToken),
        ("expired", ExpiredTokenException),
        ("not yet valid", InvalidIdentityToken),
        ("unknown kid", InvalidIdentityToken),
        ("key of another algorithm", InvalidIdentityToken),
        ("no sub", InvalidIdentityToken),
        ("garbage", InvalidIdentityToken),
    ],
)
def test_forgeries_are_refused(idp: OidcProvider, make: str, error: type[Exception]) -> None:
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "wrong signature": lambda: idp.token(key=other_rsa),  # kid "rsa", another key
        "wrong audience": lambda: idp.token(aud="not-registered"),
        "unknown issuer": lambda: idp.token(iss=idp.issuer + "-evil"),
        "HS256": lambda: _forged_hs256(idp),
        "none": lambda: _unsigned(idp),
        "expired": lambda: idp.token(exp_in_s=-600),
        "not yet valid": lambda: idp.token(nbf_in_s=600),
        "unknown kid": lambda: idp.token(kid="nope", key=idp.keys["rsa"]),
        "key of another algorithm": lambda: idp.token(alg="RS256", kid="ec", key=idp.keys["rsa"]),
        "no sub": lambda: idp.token(sub=""),
        "garbage": lambda: "not.a.jwt",
    }[make]()
    if make == "no sub":  # a token without the claim at all
        payload = jwt.decode(token, options={"verify_signature": False})
        del payload["sub"]
        token = jwt.encode(payload, idp.keys["rsa"], algorithm="RS256", headers={"kid": "rsa"})
    with pytest.raises(error):
        verify(verifier(idp), token)


def test_keys_are_cached_and_unknown_kids_refetch_boundedly(idp: OidcProvider) -> None:
    v = verifier(idp, refetch_min_s=3600)
    verify(v, idp.token())
    verify(v, idp.token(alg="ES256"))
    assert v.fetches == 1  # one key set for both tokens
    for _ in range(3):  # random kids cannot make the server hammer the provider
        with pytest.raises(InvalidIdentityToken):
            verify(v, idp.token(kid="rotated", key=idp.keys["rsa"]))
    assert v.fetches == 1
    eager = verifier(idp, refetch_min_s=0)
    verify(eager, idp.token())
    with pytest.raises(InvalidIdentityToken):
        verify(eager, idp.token(kid="rotated", key=idp.keys["rsa"]))
    assert eager.fetches == 2  # an unknown kid refetched once the bound allows it


def test_unreachable_provider_is_a_communication_error(idp: OidcProvider) -> None:
    with OidcProvider("/gone") as gone:
        token = gone.token()
        issuer = gone.issuer
    v = OidcVerifier(registered({"url": issuer, "client_ids": ["tierstore"]}), fetch_timeout_s=2)
    with pytest.raises(IDPCommunicationError):
        verify(v, token)
