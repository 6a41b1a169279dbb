"""Secrets at rest: the server master key and AEAD sealing (docs/identities.md)."""

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
    "MASTER_KEY_FILE",
    "MAX_SESSION_TOKEN_CHARS",
    "SESSION_TOKEN_PREFIX",
    "MasterKey",
    "MasterKeyError",
    "SealedSecretError",
    "load_master_key",
    "load_or_create_master_key",
    "open_session_token",
    "seal_session_token",
    "sealed_key_id",
]
