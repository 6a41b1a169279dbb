"""Secrets at rest: the server master key and AEAD sealing (docs/identities.md); the key service
(``KeyService``) and its built-in keystore (``LocalKeyStore``, docs/security.md "Key service")."""

from tierstore.crypto._keystore import KeyTable, LocalKeyStore, wrapped_key_version
from tierstore.crypto._kms import (
    DATA_KEY_BYTES,
    SSE_S3_KEY_ID,
    DataKey,
    KeyService,
    KeyStatus,
    KmsError,
    KmsKeyDisabled,
    KmsKeyExists,
    KmsUnavailable,
    NoSuchKmsKey,
    WrappedKeyError,
    canonical_context,
    check_key_id,
    kms_key_arn,
    kms_key_name,
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
from tierstore.crypto._transit import TransitKeyService

__all__ = [
    "DATA_KEY_BYTES",
    "MASTER_KEY_FILE",
    "MAX_SESSION_TOKEN_CHARS",
    "SESSION_TOKEN_PREFIX",
    "SSE_S3_KEY_ID",
    "DataKey",
    "KeyService",
    "KeyStatus",
    "KeyTable",
    "KmsError",
    "KmsKeyDisabled",
    "KmsKeyExists",
    "KmsUnavailable",
    "LocalKeyStore",
    "MasterKey",
    "MasterKeyError",
    "NoSuchKmsKey",
    "SealedSecretError",
    "TransitKeyService",
    "WrappedKeyError",
    "canonical_context",
    "check_key_id",
    "kms_key_arn",
    "kms_key_name",
    "load_master_key",
    "load_or_create_master_key",
    "open_session_token",
    "seal_session_token",
    "sealed_key_id",
    "wrapped_key_version",
]
