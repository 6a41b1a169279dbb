"""The hand-written HKDF-SHA256 of the SSE format (``crypto/_packages._hkdf``) gives exactly
what ``cryptography``'s HKDF gives (RFC 5869, no salt, 32 bytes): part keys, binding MACs and
keyed ETags of objects already stored keep opening."""

from __future__ import annotations

import random

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tierstore.crypto._packages import _hkdf


def reference(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def test_matches_cryptography_hkdf() -> None:
    rng = random.Random(16)
    for _ in range(500):
        key = rng.randbytes(rng.choice([16, 32, 33, 64]))
        info = rng.randbytes(rng.randrange(0, 80))
        assert _hkdf(key, info) == reference(key, info)


def test_rfc5869_vector_shape() -> None:
    """RFC 5869 test case 3 (SHA-256, no salt, no info), first 32 of its 42 bytes."""
    ikm = bytes([0x0B]) * 22
    okm = bytes.fromhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    assert _hkdf(ikm, b"") == okm[:32]
