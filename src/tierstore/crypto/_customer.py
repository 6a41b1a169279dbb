"""SSE-C: a version's data key wrapped under the customer's key, and the check of that key
(docs/encryption.md, "SSE-C").

The customer key is used only inside a request; what is stored is a random salt ``cs``, a salted
HMAC ``ckh`` of the key (to answer 403 for a wrong key, as AWS does, without storing anything
that opens the data) and the data key sealed under a key derived from the customer key and the
salt, bound to the object's bucket and key::

    ckh = HMAC-SHA256(customer_key, "tierstore-sse/1 sse-c check" | cs)
    KEK = HKDF-SHA256(ikm=customer_key, salt=cs, info="tierstore-sse/1 sse-c kek")
    wk  = nonce (12 random bytes)
          | AES-256-GCM(KEK).encrypt(nonce, data key, "tierstore-sse/1 sse-c" | lp(bucket) | lp(key))
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tierstore.crypto._kms import DATA_KEY_BYTES
from tierstore.crypto._packages import TAG_BYTES, IntegrityError, length_prefixed

__all__ = [
    "CUSTOMER_SALT_BYTES",
    "CustomerKeyMismatch",
    "check_customer_key",
    "customer_key_check",
    "unwrap_customer_data_key",
    "wrap_customer_data_key",
]

CUSTOMER_SALT_BYTES = 16
_NONCE_BYTES = 12
_CHECK_LABEL = b"tierstore-sse/1 sse-c check"
_KEK_INFO = b"tierstore-sse/1 sse-c kek"
_WRAP_LABEL = b"tierstore-sse/1 sse-c"


class CustomerKeyMismatch(ValueError):
    """The SSE-C key of a request is not the key the object was stored with (S3: 403)."""


def _check_inputs(customer_key: bytes, salt: bytes) -> None:
    if len(customer_key) != DATA_KEY_BYTES:
        raise ValueError(f"an SSE-C key is {DATA_KEY_BYTES} bytes, not {len(customer_key)}")
    if len(salt) != CUSTOMER_SALT_BYTES:
        raise ValueError(f"an SSE-C salt is {CUSTOMER_SALT_BYTES} bytes, not {len(salt)}")


def customer_key_check(customer_key: bytes, salt: bytes) -> bytes:
    """``ckh``: the salted HMAC stored to recognise the customer key later."""
    _check_inputs(customer_key, salt)
    return hmac.new(customer_key, _CHECK_LABEL + salt, hashlib.sha256).digest()


def check_customer_key(customer_key: bytes, salt: bytes, stored_check: bytes) -> None:
    """``CustomerKeyMismatch`` unless ``customer_key`` is the key ``stored_check`` was made from
    (constant-time compare)."""
    if not hmac.compare_digest(customer_key_check(customer_key, salt), stored_check):
        raise CustomerKeyMismatch("the SSE-C key does not match the key the object was stored with")


def _kek(customer_key: bytes, salt: bytes) -> AESGCM:
    _check_inputs(customer_key, salt)
    key = HKDF(algorithm=hashes.SHA256(), length=DATA_KEY_BYTES, salt=salt, info=_KEK_INFO).derive(customer_key)
    return AESGCM(key)


def _aad(bucket: str, key: str) -> bytes:
    return _WRAP_LABEL + length_prefixed(bucket) + length_prefixed(key)


def wrap_customer_data_key(customer_key: bytes, data_key: bytes, *, salt: bytes, bucket: str, key: str) -> bytes:
    """``wk`` for SSE-C: ``data_key`` sealed under the customer key (a fresh random nonce),
    bound to ``bucket`` and ``key``."""
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes, not {len(data_key)}")
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _kek(customer_key, salt).encrypt(nonce, data_key, _aad(bucket, key))


def unwrap_customer_data_key(customer_key: bytes, wrapped: bytes, *, salt: bytes, bucket: str, key: str) -> bytes:
    """The data key of ``wrapped``. Check the key with ``check_customer_key`` first: once it
    matches, a ``wrapped`` that does not open is damage or metadata moved from another object
    (``IntegrityError``), not a wrong key."""
    if len(wrapped) != _NONCE_BYTES + DATA_KEY_BYTES + TAG_BYTES:
        raise IntegrityError("the wrapped SSE-C data key has the wrong size")
    try:
        return _kek(customer_key, salt).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _aad(bucket, key))
    except InvalidTag:
        raise IntegrityError(
            "the wrapped SSE-C data key does not open (damaged, or moved from another object)"
        ) from None
