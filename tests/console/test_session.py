"""The console's pure parts, without a server: which requests are the console's, and the
sealed session cookie (altered, expired or another key's: no session)."""

from __future__ import annotations

import os

import pytest

from tierstore.console import is_console_request
from tierstore.console._dispatch import Credentials
from tierstore.console._session import SessionSealer
from tierstore.crypto import MasterKey


def _scope(path: str, query: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = ()) -> dict[str, object]:
    return {"type": "http", "path": path, "query_string": query, "headers": [(b"host", b"h:9000"), *headers]}


@pytest.mark.parametrize(
    ("path", "query", "headers", "console"),
    [
        ("/console", b"", (), True),
        ("/console/", b"", (), True),
        ("/console/browse/b", b"prefix=Signature%2F&token=X-Amz-Credential", (), True),  # values, not names
        ("/consoles/x", b"", (), False),  # another bucket
        ("/console-logs/a", b"", (), False),
        ("/console/key", b"", ((b"authorization", b"AWS4-HMAC-SHA256 Credential=..."),), False),  # signed: S3
        ("/console/key", b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a&X-Amz-Signature=s", (), False),
        ("/console/key", b"AWSAccessKeyId=a&Expires=1&Signature=s", (), False),  # SigV2 presigned
        ("/", b"", (), False),
    ],
)
def test_which_requests_are_the_consoles(
    path: str, query: bytes, headers: tuple[tuple[bytes, bytes], ...], console: bool
) -> None:
    assert is_console_request(_scope(path, query, headers)) is console


def test_a_virtual_hosted_request_is_never_the_consoles() -> None:
    scope = _scope("/console/x", headers=((b"host", b"bucket.s3.example.org"),))
    assert is_console_request(scope, domain="s3.example.org") is False
    assert is_console_request(_scope("/console/x"), domain="s3.example.org") is True


def test_a_session_cookie_opens_only_unaltered_unexpired_and_under_its_key() -> None:
    key = MasterKey(os.urandom(32))
    sealer = SessionSealer(key)
    creds = Credentials("ASIAEXAMPLE", "secret-of-the-session", "token")
    value, session = sealer.seal(creds, expires_s=2_000, who="alice")
    assert "secret-of-the-session" not in value and "ASIAEXAMPLE" not in value
    opened = sealer.open(value, now_s=1_000)
    assert opened == session and opened.creds == creds and opened.who == "alice"
    assert sealer.open(value, now_s=2_000) is None  # expired
    flipped = value[:20] + ("A" if value[20] != "A" else "B") + value[21:]
    assert sealer.open(flipped, now_s=1_000) is None  # altered
    assert SessionSealer(MasterKey(os.urandom(32))).open(value, now_s=1_000) is None  # another server's key
    assert sealer.open("", now_s=1_000) is None and sealer.open("not base64!", now_s=1_000) is None
    assert "secret" not in repr(opened) and "secret" not in repr(creds)
