"""The key service interface: what encryption at rest asks of a KMS (docs/encryption.md).

Every encrypted object has its own random data key; a key service wraps it under a named
key-encryption key (KEK) and unwraps it again. ``KeyService`` is all the engine needs, small
enough for an external KMS (Vault/OpenBao transit, AWS KMS) to implement:

- ``generate_data_key(key_id, context)`` -> ``DataKey``: 32 fresh random bytes and their
  wrapped form, the only one that is stored;
- ``decrypt_data_key(key_id, wrapped, context)`` -> the 32 bytes;
- ``key_status(key_id)`` -> ``KeyStatus`` (to refuse a write to a disabled key up front).

The encryption context (a str -> str mapping: KMS's ``EncryptionContext``; the engine puts the
bucket and key there) is bound to the wrapped key as AEAD associated data in its canonical form
(``canonical_context``: JSON, keys sorted, no spaces, UTF-8), so a wrapped key copied to another
object does not open. Errors are the ``KmsError``s below; their codes are the ones S3 answers
for KMS failures (``KMS.NotFoundException``, ...), 400 as in AWS (an unreachable KMS: 500).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Protocol

from tierstore.errors import InvalidArgument, TierstoreError

__all__ = [
    "DATA_KEY_BYTES",
    "KEY_ID_PATTERN",
    "RESERVED_KEY_PREFIX",
    "SSE_S3_KEY_ID",
    "DataKey",
    "KeyService",
    "KeyStatus",
    "KmsError",
    "KmsKeyDisabled",
    "KmsKeyExists",
    "KmsUnavailable",
    "NoSuchKmsKey",
    "WrappedKeyError",
    "canonical_context",
    "check_key_id",
    "kms_key_arn",
    "kms_key_name",
]

DATA_KEY_BYTES = 32  # AES-256
# The key of SSE-S3 (server-managed keys): created on first use, never by an admin.
SSE_S3_KEY_ID = "tierstore-sse-s3"
RESERVED_KEY_PREFIX = "tierstore-"  # ids of keys the server manages itself
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,255}", re.ASCII)  # a KMS alias name's, less "/"
_ARN = re.compile(r"arn:aws[\w-]*:kms:[\w-]*:\d*:(?:key|alias)/(.+)", re.ASCII)


class KmsError(TierstoreError):
    """A key service refused: the base of the errors below."""


class NoSuchKmsKey(KmsError, KeyError):
    """The key does not exist in the key service."""

    code = "KMS.NotFoundException"


class KmsKeyDisabled(KmsError, PermissionError):
    """The key is disabled: it wraps and unwraps nothing until it is enabled again."""

    code = "KMS.DisabledException"


class WrappedKeyError(KmsError, ValueError):
    """A wrapped data key does not open under that key: damaged, tampered with, wrapped under
    another key, or bound to another encryption context."""

    code = "KMS.InvalidCiphertextException"


class KmsUnavailable(KmsError, ConnectionError):
    """The key service could not be reached, refused the server's credentials or answered
    something unexpected (an external KMS): nothing was wrapped or unwrapped."""

    code = "KMS.KMSInternalException"


class KmsKeyExists(KmsError, FileExistsError):
    """A key of that id already exists."""

    code = "KMS.AlreadyExistsException"


@dataclass(frozen=True, slots=True)
class DataKey:
    """A fresh data key: ``plaintext`` encrypts one object and is never stored; ``wrapped`` is."""

    plaintext: bytes = field(repr=False)
    wrapped: bytes


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """What a key service tells about a key: never its material."""

    key_id: str
    enabled: bool
    created_ns: int
    versions: int  # 1 + the number of rotations
    rotated_ns: int | None = None
    description: str = ""


class KeyService(Protocol):
    """Wraps and unwraps data keys under named keys (module docstring). Implementations: the
    built-in ``LocalKeyStore``; an external KMS can be added behind the same three calls."""

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> DataKey: ...

    async def decrypt_data_key(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes: ...

    async def key_status(self, key_id: str) -> KeyStatus: ...


def canonical_context(context: Mapping[str, str]) -> bytes:
    """The bytes an encryption context is bound as: JSON with sorted keys and no spaces, UTF-8.
    Two mappings with the same pairs give the same bytes, whatever their order."""
    try:  # what json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes, at a
        # third of its cost (every encrypted read computes it): its own string escaper, pairs sorted
        if len(context) == 1:  # SSE-S3's (the object's ARN alone): nothing to sort
            ((k, v),) = context.items()
            return ("{" + encode_basestring(k) + ":" + encode_basestring(v) + "}").encode()
        pairs = [encode_basestring(k) + ":" + encode_basestring(v) for k, v in sorted(context.items())]
    except TypeError:  # a value (or key) that is not a string
        raise TypeError("an encryption context maps strings to strings") from None
    return ("{" + ",".join(pairs) + "}").encode()


def check_key_id(key_id: str) -> str:
    """``key_id`` if it is a valid key id (1 to 256 of ``[A-Za-z0-9_.-]``, starting with a
    letter or digit: it is a path segment of the admin endpoints); ``InvalidArgument`` otherwise."""
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
        raise InvalidArgument("A KMS key id is 1 to 256 characters of [A-Za-z0-9_.-], starting with a letter or digit.")
    return key_id


def kms_key_name(value: str) -> str:
    """The key id an S3 request names (``x-amz-server-side-encryption-aws-kms-key-id``): the id
    itself, ``alias/ID``, or an ARN ``arn:aws:kms:REGION:ACCOUNT:key/ID`` (or ``:alias/ID``)."""
    value = value.strip()
    m = _ARN.fullmatch(value)
    if m is not None:
        value = m.group(1)
    return check_key_id(value.removeprefix("alias/"))


def kms_key_arn(key_id: str, region: str, account: str) -> str:
    """The ARN of a key of this store: what S3 answers in the KMS key id header, and the
    resource IAM checks the kms: actions on."""
    return f"arn:aws:kms:{region}:{account}:key/{key_id}"
