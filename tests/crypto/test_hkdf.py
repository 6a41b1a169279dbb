"""The hand-written HKDF-SHA256 and HMAC-SHA256 of the SSE format (``crypto/_packages._hkdf``,
``_hmac_sha256``) give exactly what ``cryptography``'s HKDF and the standard library's HMAC
give (RFC 5869 with no salt, 32 bytes; RFC 2104): part keys, binding MACs and keyed ETags of
objects already stored keep opening."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tierstore.crypto import (
    HmacSha256Keys,
    IntegrityError,
    RowBinding,
    StreamLayout,
    derive_part_key,
    keyed_etag,
    verify_row_binding,
)
from tierstore.crypto._packages import _hkdf, _hmac_sha256


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


def test_hmac_matches_the_standard_library() -> None:
    rng = random.Random(2104)
    for _ in range(500):
        key = rng.randbytes(rng.choice([0, 1, 16, 32, 63, 64]))
        message = rng.randbytes(rng.randrange(0, 300))
        assert _hmac_sha256(key, message) == hmac.digest(key, message, "sha256")


def test_hmac_with_kept_key_pads_matches_the_standard_library() -> None:
    """The SigV4 check's HMAC (api/_sigv4.py): the same bytes as ``hmac.digest`` for every key
    and message, also for a key seen before (its pads kept) and after the table filled up."""
    rng = random.Random(7)
    keys = HmacSha256Keys(3)
    pool = [rng.randbytes(n) for n in (0, 1, 32, 32, 63, 64)]
    for _ in range(300):
        key, message = rng.choice(pool), rng.randbytes(rng.randrange(0, 300))
        assert keys.digest(key, message) == hmac.digest(key, message, "sha256")
    assert len(keys._pads) <= 3 and "HmacSha256Keys(" in repr(keys) and pool[2].hex() not in repr(keys)


def test_binding_mac_part_key_and_etag_are_the_documented_construction() -> None:
    """docs/encryption.md: mac = HMAC-SHA256(HKDF(DK, "... binding key"), canonical row); the
    part key and the keyed ETag likewise, each computed here with the reference primitives."""
    dk, prefix, md5 = bytes(range(32)), bytes(range(7)), hashlib.md5(b"x").digest()
    row = RowBinding("bkt", "k/ey", "v1", "kms", (StreamLayout(0, 5, prefix),))
    canonical = (
        b"tierstore-sse/1 binding" + b"\0\0\0\x03bkt" + b"\0\0\0\x04k/ey" + b"\0\0\0\x02v1"
        + (5).to_bytes(8, "big") + (65536).to_bytes(4, "big") + b"\0\0\0\x03kms" + (1).to_bytes(4, "big")
        + (0).to_bytes(4, "big") + (5).to_bytes(8, "big") + prefix
    )  # fmt: skip
    assert row.mac(dk) == hmac.new(reference(dk, b"tierstore-sse/1 binding key"), canonical, hashlib.sha256).digest()
    part_info = b"tierstore-sse/1 part key" + (3).to_bytes(4, "big") + prefix
    assert derive_part_key(dk, 3, prefix) == reference(dk, part_info)
    etag_key = reference(dk, b"tierstore-sse/1 etag key")
    assert keyed_etag(dk, md5) == hmac.new(etag_key, md5, hashlib.sha256).hexdigest()[:32]


def test_verify_row_binding_is_the_row_bindings_check() -> None:
    """The read path's ``verify_row_binding`` (no ``RowBinding`` built) accepts exactly the MAC
    ``RowBinding.mac`` gives and keeps its argument checks."""
    dk, prefix = bytes(range(32)), bytes(range(7))
    streams = (StreamLayout(0, 5, prefix),)
    mac = RowBinding("bkt", "k/ey", "v1", "s3", streams, 4096).mac(dk)
    verify_row_binding(mac, dk, "bkt", "k/ey", "v1", "s3", streams, 4096)
    for args in (("bkt", "k/ey", "v2", "s3", streams, 4096), ("bkt", "k/ey", "v1", "kms", streams, 4096),
                 ("bkt", "k/eY", "v1", "s3", streams, 4096), ("bkt", "k/ey", "v1", "s3", streams, 65536),
                 ("bkt", "k/ey", "v1", "s3", (StreamLayout(0, 6, prefix),), 4096)):  # fmt: skip
        with pytest.raises(IntegrityError):
            verify_row_binding(mac, dk, *args)
    with pytest.raises(IntegrityError):
        verify_row_binding(mac, bytes(32), "bkt", "k/ey", "v1", "s3", streams, 4096)
    for bad in (("bkt", "k", "v1", "s3", (), 4096), ("bkt", "k", "v1", "s3", (StreamLayout(0, 5, b"x"),), 4096),
                ("bkt", "k", "v1", "s3", streams, 0)):  # fmt: skip
        with pytest.raises(ValueError):
            verify_row_binding(mac, dk, *bad)
