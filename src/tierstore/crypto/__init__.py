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

__all__ = [
    "MASTER_KEY_FILE",
    "MasterKey",
    "MasterKeyError",
    "SealedSecretError",
    "load_master_key",
    "load_or_create_master_key",
    "sealed_key_id",
]
