"""A local OpenID Connect provider for tests: discovery and JWKS served over HTTP on 127.0.0.1
from a thread, keys made with ``cryptography``, ID tokens signed in the test (PyJWT).

    with OidcProvider() as idp:
        token = idp.token(sub="alice", aud="tierstore")              # RS256, kid "rsa"
        token = idp.token(alg="ES256")                                 # kid "ec"; EdDSA: kid "ed"
        idp.issuer        # http://127.0.0.1:PORT/realm (register it as the provider URL)
        idp.name          # 127.0.0.1:PORT/realm (ARNs, condition keys)
        idp.jwks_fetches  # how often the key set was served

It is also an authorization server for the code flow with PKCE, as a browser sign-in uses it:
``/authorize`` consents at once for ``idp.user`` (``idp.user_claims`` added to its ID token;
``idp.user = None``: the user declines, ``error=access_denied``) and redirects back to the
client's ``redirect_uri`` with a code and the state; ``/token`` exchanges a code once, for the
client and redirect URI it was issued to, when the ``code_verifier`` hashes (S256) to the
challenge (and ``client_secret`` matches ``idp.client_secret`` when set): an ID token for the
client id (the audience) carrying the nonce. ``idp.token_refusals`` counts refused exchanges.

Use the ``oidc_provider`` fixture (module scope) or the class as a context manager.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = ["OidcProvider", "oidc_provider"]


class OidcProvider:
    """See the module docstring. ``path``: the issuer's path (several providers can differ by it)."""

    def __init__(self, path: str = "/realm") -> None:
        self.keys: dict[str, Any] = {
            "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "ed": ed25519.Ed25519PrivateKey.generate(),
        }
        self.jwks_fetches = 0
        self.user: str | None = "alice"  # who /authorize signs in (None: the user declines)
        self.user_claims: dict[str, Any] = {}
        self.client_secret: str | None = None
        self.token_refusals = 0
        self._codes: dict[str, dict[str, str]] = {}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path == f"{path}/.well-known/openid-configuration":
                    body: dict[str, Any] = {
                        "issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/keys",
                        "authorization_endpoint": f"{provider.issuer}/authorize",
                        "token_endpoint": f"{provider.issuer}/token",
                        "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
                    }  # fmt: skip
                elif url.path == f"{path}/keys":
                    provider.jwks_fetches += 1
                    body = provider.jwks()
                elif url.path == f"{path}/authorize":
                    self._redirect(provider._authorize(dict(urllib.parse.parse_qsl(url.query))))
                    return
                else:
                    self.send_error(404)
                    return
                self._json(200, body)

            def do_POST(self) -> None:
                if self.path != f"{path}/token":
                    self.send_error(404)
                    return
                size = int(self.headers.get("content-length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(size).decode()))
                status, body = provider._exchange(form)
                self._json(status, body)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}{path}"
        self.name = self.issuer.split("://", 1)[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _authorize(self, q: dict[str, str]) -> str:
        """Consent at once for ``self.user``: where the browser goes back to (code and state)."""
        back = q.get("redirect_uri", "")
        sep = "&" if "?" in back else "?"
        state = {"state": q["state"]} if "state" in q else {}
        if self.user is None:
            return back + sep + urllib.parse.urlencode({"error": "access_denied", **state})
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
            return back + sep + urllib.parse.urlencode({"error": "invalid_request", **state})
        code = secrets.token_urlsafe(16)
        self._codes[code] = {
            "client_id": q.get("client_id", ""), "redirect_uri": back, "nonce": q.get("nonce", ""),
            "challenge": q.get("code_challenge", ""), "sub": self.user,
        }  # fmt: skip
        return back + sep + urllib.parse.urlencode({"code": code, **state})

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint: a code (once) -> an ID token, PKCE and the client checked."""
        issued = self._codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).decode().rstrip("=")
        if (
            form.get("grant_type") != "authorization_code"
            or issued is None
            or form.get("client_id") != issued["client_id"]
            or form.get("redirect_uri") != issued["redirect_uri"]
            or not verifier
            or challenge != issued["challenge"]
            or (self.client_secret is not None and form.get("client_secret") != self.client_secret)
        ):
            self.token_refusals += 1
            return 400, {"error": "invalid_grant"}
        claims = {**self.user_claims, "nonce": issued["nonce"]}
        token = self.token(sub=issued["sub"], aud=issued["client_id"], **claims)
        return 200, {"id_token": token, "access_token": secrets.token_urlsafe(16), "token_type": "Bearer"}

    def jwks(self) -> dict[str, Any]:
        """The public keys, as a JWKS (kid, alg, use set)."""
        out = []
        kinds = (("rsa", "RS256", RSAAlgorithm), ("ec", "ES256", ECAlgorithm), ("ed", "EdDSA", OKPAlgorithm))
        for kid, alg, algo in kinds:
            jwk = algo.to_jwk(self.keys[kid].public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": out}

    def token(
        self,
        *,
        sub: str = "alice",
        aud: str | list[str] = "tierstore",
        alg: str = "RS256",
        kid: str | None = None,
        key: Any = None,
        iss: str | None = None,
        exp_in_s: float = 300,
        nbf_in_s: float | None = None,
        **claims: Any,
    ) -> str:
        """An ID token signed with this provider's key for ``alg`` (or ``key``: a forgery)."""
        kid = kid or {"RS256": "rsa", "ES256": "ec", "EdDSA": "ed"}.get(alg, "rsa")
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": iss or self.issuer, "sub": sub, "aud": aud, "iat": now, "exp": now + int(exp_in_s), **claims,
        }  # fmt: skip
        if nbf_in_s is not None:
            payload["nbf"] = now + int(nbf_in_s)
        return jwt.encode(payload, key if key is not None else self.keys[kid], algorithm=alg, headers={"kid": kid})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OidcProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def oidc_provider() -> Iterator[OidcProvider]:
    with OidcProvider() as idp:
        yield idp
