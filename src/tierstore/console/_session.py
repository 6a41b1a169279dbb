"""Console sessions: an STS session's credentials sealed into the cookie.

The cookie holds one sealed blob (AES-256-GCM under the server's master key, context
``tierstore-console-session``): the temporary access key, secret and session token that sign-in
got from GetSessionToken, when they expire, the CSRF token of the session and the name to show.
Nothing is kept server-side, so every worker process (and every gateway sharing the master key)
opens any session; the browser sees only ciphertext (HttpOnly: not even script can read it).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from tierstore.console._dispatch import Credentials
from tierstore.crypto import MasterKey, SealedSecretError

__all__ = ["COOKIE", "LOGIN_COOKIE", "Session", "SessionSealer", "same_token"]

COOKIE = "tierstore_console"
LOGIN_COOKIE = "tierstore_console_login"  # the sign-in form's CSRF token (double submit), before a session
_CONTEXT = b"tierstore-console-session"


@dataclass(frozen=True)
class Session:
    creds: Credentials
    expires_s: int
    csrf: str
    who: str  # shown in the header: the user name, or "root"

    def __repr__(self) -> str:
        return f"Session(who={self.who!r}, expires_s={self.expires_s})"


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison of two tokens (an empty one never matches)."""
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class SessionSealer:
    """Seals a ``Session`` into a cookie value and opens one (None: not ours, altered, expired)."""

    def __init__(self, key: MasterKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "SessionSealer()"

    def seal(self, creds: Credentials, expires_s: int, who: str) -> tuple[str, Session]:
        session = Session(creds, expires_s, secrets.token_urlsafe(24), who)
        doc = {
            "ak": creds.access_key,
            "sk": creds.secret_key,
            "st": creds.session_token,
            "exp": expires_s,
            "csrf": session.csrf,
            "who": who,
        }
        blob = self._key.seal(json.dumps(doc, separators=(",", ":")).encode(), context=_CONTEXT)
        return base64.urlsafe_b64encode(blob).decode().rstrip("="), session

    def open(self, value: str, now_s: float | None = None) -> Session | None:
        if not value:
            return None
        try:
            blob = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            doc = json.loads(self._key.open_sealed(blob, context=_CONTEXT))
            session = Session(
                Credentials(str(doc["ak"]), str(doc["sk"]), str(doc["st"])),
                int(doc["exp"]),
                str(doc["csrf"]),
                str(doc["who"]),
            )
        except (SealedSecretError, ValueError, KeyError, TypeError):
            return None
        if (time.time() if now_s is None else now_s) >= session.expires_s:
            return None
        return session
