"""Secrets at rest: the server master key and AEAD sealing (docs/identities.md); the SSE body
format of encrypted objects (docs/encryption.md)."""

from tierstore.crypto._packages import (
    DATA_KEY_BYTES,
    NONCE_PREFIX_BYTES,
    PACKAGE_BYTES,
    IntegrityError,
    PackageOpener,
    PackageSealer,
    PackageSpan,
    RowBinding,
    StreamLayout,
    ciphertext_size,
    derive_part_key,
    keyed_etag,
    open_packages,
    package_count,
    package_span,
)
from tierstore.crypto._sealing import (
    MASTER_KEY_FILE,
    MasterKey,
    MasterKeyError,
    SealedSecretError,
    load_master_key,
    load_or_create_master_key,
    sealed_key_id,
)
from tierstore.crypto._session import (
    MAX_SESSION_TOKEN_CHARS,
    SESSION_TOKEN_PREFIX,
    open_session_token,
    seal_session_token,
)

__all__ = [
    "DATA_KEY_BYTES",
    "MASTER_KEY_FILE",
    "MAX_SESSION_TOKEN_CHARS",
    "NONCE_PREFIX_BYTES",
    "PACKAGE_BYTES",
    "SESSION_TOKEN_PREFIX",
    "IntegrityError",
    "MasterKey",
    "MasterKeyError",
    "PackageOpener",
    "PackageSealer",
    "PackageSpan",
    "RowBinding",
    "SealedSecretError",
    "StreamLayout",
    "ciphertext_size",
    "derive_part_key",
    "keyed_etag",
    "load_master_key",
    "load_or_create_master_key",
    "open_packages",
    "open_session_token",
    "package_count",
    "package_span",
    "seal_session_token",
    "sealed_key_id",
]
