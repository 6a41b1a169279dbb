"""Encryption at rest for multipart uploads (docs/encryption.md, "Multipart"): the upload's data
key and the SSE-C key rules of its parts, and the binding of a completed object's parts.

An encrypted upload keeps, from CreateMultipartUpload on, the ``"e"`` document of
``engine/_encryption.new_data_key`` without a layout or MAC (``UploadInfo.encryption``): every
part is sealed under ``derive_part_key(DK, part number, the part's own random prefix)``, so a
retried part never reuses a key and nonce of an earlier attempt. Completion lists each chosen
part's number and prefix in ``parts`` and computes the binding MAC for the final version id.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from tierstore.crypto import (
    CustomerKeyMismatch,
    IntegrityError,
    KeyService,
    KmsError,
    RowBinding,
    StreamLayout,
    WrappedKeyError,
    check_customer_key,
    unwrap_customer_data_key,
)
from tierstore.engine._encryption import CUSTOMER_KEY_WRONG, NOT_APPLICABLE, kms_context
from tierstore.errors import AccessDenied, InternalError, InvalidRequest, NotImplementedOperation

__all__ = ["PART_NEEDS_KEY", "bind_parts", "check_part_key", "upload_data_key"]

# AWS's answer to a part (or completion) of an SSE-C upload sent without the key.
PART_NEEDS_KEY = (
    "The multipart upload initiate requested encryption. Subsequent part requests must include the appropriate"
    " encryption parameters."
)


def check_part_key(doc: Mapping[str, Any], customer_key: bytes | None) -> None:
    """The SSE-C key of UploadPart / UploadPartCopy / CompleteMultipartUpload against the upload's
    encryption (``doc``; empty: stored in clear), as S3 answers: an SSE-C upload needs the key it
    was created with (none: 400 InvalidRequest, another: 403 AccessDenied, checked by the salted
    HMAC); a key for an upload that is not SSE-C: 400 InvalidRequest."""
    if doc.get("kind") != "c":
        if customer_key is not None:
            raise InvalidRequest(NOT_APPLICABLE)
        return
    if customer_key is None:
        raise InvalidRequest(PART_NEEDS_KEY)
    try:
        check_customer_key(customer_key, base64.b64decode(doc["cs"]), base64.b64decode(doc["ckh"]))
    except CustomerKeyMismatch:
        raise AccessDenied(CUSTOMER_KEY_WRONG) from None
    except (KeyError, ValueError):
        raise InternalError("The encryption metadata of the upload is damaged.") from None


async def upload_data_key(
    kms: KeyService | None, doc: Mapping[str, Any], *, bucket: str, key: str, customer_key: bytes | None
) -> bytes:
    """The data key of an encrypted upload (after ``check_part_key``): unwrapped by the key
    service (bound to ``bucket/key``) or under the customer's key. A wrapped key that does not
    open is damage (500); the key service's refusals (a disabled key) are its own errors."""
    try:
        wrapped = base64.b64decode(doc["wk"], validate=True)
        if doc["kind"] == "c":
            assert customer_key is not None, "check_part_key runs first"
            salt = base64.b64decode(doc["cs"], validate=True)
            return unwrap_customer_data_key(customer_key, wrapped, salt=salt, bucket=bucket, key=key)
        if kms is None:
            raise NotImplementedOperation("This upload is encrypted and this server has no key service.")
        return await kms.decrypt_data_key(str(doc["kid"]), wrapped, kms_context(doc, bucket, key))
    except KmsError as exc:
        if not isinstance(exc, WrappedKeyError):
            raise
        raise InternalError(f"The encryption metadata of the upload of {bucket}/{key} is damaged.") from None
    except (IntegrityError, KeyError, ValueError):
        raise InternalError(f"The encryption metadata of the upload of {bucket}/{key} is damaged.") from None


def bind_parts(
    doc: Mapping[str, Any],
    data_key: bytes,
    *,
    bucket: str,
    key: str,
    version_id: str,
    parts: Sequence[tuple[int, int, str]],
) -> dict[str, Any]:
    """The ``"e"`` of a completed upload about to be committed as ``version_id``: the upload's
    document plus the plaintext size, ``parts`` ([part number, nonce prefix] in object order)
    and the binding MAC over the layout. ``parts``: (number, plaintext size, prefix in base64)."""
    streams = tuple(StreamLayout(n, size, base64.b64decode(prefix, validate=True)) for n, size, prefix in parts)
    bound = {**doc, "n": sum(size for _, size, _ in parts), "parts": [[n, prefix] for n, _, prefix in parts]}
    binding = RowBinding(bucket, key, version_id, str(doc["kind"]), streams, int(doc["ps"]))
    bound["mac"] = base64.b64encode(binding.mac(data_key)).decode()
    return bound
