"""STS session tokens: a temporary credential's claims sealed under the master key.

A session token is ``TS1.`` + base64url(sealed JSON claims). The claims carry everything a
worker needs to authenticate and authorize a request signed with the temporary credentials
(access key id, secret, expiry, who the session acts as, its session policy, web-identity
claims), so issuing a session writes nothing to the catalog and any worker of any gateway that
holds the master key can open it (docs/security.md "STS").

The sealing context is fixed (``_CONTEXT``) so that a token opens the same everywhere; the
access key id it was issued with is inside the authenticated plaintext, and the caller compares
it with the access key id that signed the request. AES-256-GCM makes any change to a token
fail to open.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from tierstore.crypto._sealing import MasterKey, SealedSecretError

__all__ = ["MAX_SESSION_TOKEN_CHARS", "SESSION_TOKEN_PREFIX", "open_session_token", "seal_session_token"]

SESSION_TOKEN_PREFIX = "TS1."  # noqa: S105 - a format marker, not a secret
MAX_SESSION_TOKEN_CHARS = 16 * 1024  # a session policy is at most 2,048 characters; claims are small
_CONTEXT = b"tierstore sts session token v1"


def seal_session_token(key: MasterKey, claims: Mapping[str, Any]) -> str:
    """The token for ``claims`` (a JSON-serializable mapping), sealed under ``key``."""
    plaintext = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    sealed = key.seal(plaintext, context=_CONTEXT)
    return SESSION_TOKEN_PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def open_session_token(key: MasterKey, token: str) -> dict[str, Any]:
    """The claims sealed in ``token``; ``SealedSecretError`` when it is not a token this key
    sealed, unchanged (malformed, truncated, altered, or sealed under another master key)."""
    if len(token) > MAX_SESSION_TOKEN_CHARS or not token.startswith(SESSION_TOKEN_PREFIX):
        raise SealedSecretError("not a tierstore session token")
    body = token[len(SESSION_TOKEN_PREFIX) :]
    try:
        sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise SealedSecretError("the session token is not base64url") from None
    plaintext = key.open_sealed(sealed, context=_CONTEXT)
    claims = json.loads(plaintext)
    if not isinstance(claims, dict):
        raise SealedSecretError("the session token's claims are not an object")
    return claims
