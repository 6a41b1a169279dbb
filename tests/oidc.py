"""A local OpenID Connect provider for tests: discovery and JWKS served over HTTP on 127.0.0.1
from a thread, keys made with ``cryptography``, ID tokens signed in the test (PyJWT).

    with OidcProvider() as idp:
        token = idp.token(sub="alice", aud="tierstore")              # RS256, kid "rsa"
        token = idp.token(alg="ES256")                                 # kid "ec"; EdDSA: kid "ed"
        idp.issuer        # http://127.0.0.1:PORT/realm (register it as the provider URL)
        idp.name          # 127.0.0.1:PORT/realm (ARNs, condition keys)
        idp.jwks_fetches  # how often the key set was served

Use the ``oidc_provider`` fixture (module scope) or the class as a context manager.
"""

from __future__ import annotations

import json
import threading
import time
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
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == f"{path}/.well-known/openid-configuration":
                    body: dict[str, Any] = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/keys"}
                elif self.path == f"{path}/keys":
                    provider.jwks_fetches += 1
                    body = provider.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
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
