"""Server-side encryption request headers: refuse what we cannot honour, never ignore it.

tierstore does not encrypt objects yet (issue 16), so a request asking for encryption must fail
instead of storing the data in clear. Malformed combinations answer 400 with the code and message
S3 sends for them; a well-formed request for SSE-S3, SSE-KMS or SSE-C on a write answers 501
NotImplemented. Reads and copy sources: no stored object is encrypted, so SSE-C key headers there
are S3's "not applicable to this object", and ``x-amz-server-side-encryption*`` on GET/HEAD is
refused as S3 refuses it. docs/s3-compatibility.md lists the cases.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

from tierstore import errors as e

__all__ = ["check_read", "check_write"]

_SSE = "x-amz-server-side-encryption"
_KMS_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
_CONTEXT = "x-amz-server-side-encryption-context"
_BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
_SSE_METHODS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
_KMS_METHODS = frozenset({"aws:kms", "aws:kms:dsse"})
_SSE_C = "x-amz-server-side-encryption-customer-"
_COPY_SSE_C = "x-amz-copy-source-server-side-encryption-customer-"
_SSE_C_KEY_BYTES = 32  # AES256


def _customer_key(headers: Mapping[str, str], prefix: str) -> bool:
    """Validate an SSE-C triplet under ``prefix``; True when one was sent (well-formed)."""
    algorithm = headers.get(prefix + "algorithm")
    key = headers.get(prefix + "key")
    key_md5 = headers.get(prefix + "key-md5")
    if algorithm is None and key is None and key_md5 is None:
        return False
    what = "Requests specifying Server Side Encryption with Customer provided keys must provide"
    if algorithm is None:
        raise e.InvalidArgument(f"{what} a valid encryption algorithm.")
    if algorithm.strip() != "AES256":
        raise e.InvalidEncryptionAlgorithmError()
    if key is None:
        raise e.InvalidArgument(f"{what} an appropriate secret key.")
    if key_md5 is None:
        raise e.InvalidArgument(f"{what} the client calculated MD5 of the secret key.")
    try:
        raw_key = base64.b64decode(key.strip(), validate=True)
        raw_md5 = base64.b64decode(key_md5.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise e.InvalidArgument("The secret key was invalid for the specified algorithm.") from exc
    if len(raw_key) != _SSE_C_KEY_BYTES:
        raise e.InvalidArgument("The secret key was invalid for the specified algorithm.")
    if raw_md5 != hashlib.md5(raw_key).digest():  # noqa: S324 - protocol-defined
        raise e.InvalidArgument("The calculated MD5 hash of the key did not match the hash that was provided.")
    return True


def check_write(headers: Mapping[str, str]) -> None:
    """A request that stores data (PUT, CopyObject, CreateMultipartUpload, UploadPart[Copy],
    CompleteMultipartUpload). ``headers`` are lower-cased names. Raises; returns when no SSE
    header was sent."""
    method = headers.get(_SSE)
    if method is not None and method.strip() not in _SSE_METHODS:
        raise e.InvalidArgument("The encryption method specified is not supported")
    kms = method is not None and method.strip() in _KMS_METHODS
    for name in (_KMS_KEY, _CONTEXT):
        if name in headers and not kms:
            raise e.InvalidArgument(
                "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption"
                " : aws:kms"
            )
    if _BUCKET_KEY in headers and not kms:
        raise e.InvalidArgument(
            "Bucket Key is supported with Server Side Encryption with AWS KMS managed keys only: it requires"
            " HTTP header x-amz-server-side-encryption : aws:kms"
        )
    customer = _customer_key(headers, _SSE_C)
    if customer and method is not None:
        raise e.InvalidArgument(
            "Server Side Encryption with Customer provided key is incompatible with the encryption method specified"
        )
    _copy_source(headers)
    if method is not None or customer:
        raise e.NotImplementedOperation("Server-side encryption is not implemented yet: nothing was stored.")


def check_read(headers: Mapping[str, str]) -> None:
    """GetObject / HeadObject: S3 refuses the SSE-S3/KMS headers there; an SSE-C key names an
    encrypted object, and none is."""
    for name in (_SSE, _KMS_KEY, _CONTEXT, _BUCKET_KEY):
        if name in headers:
            raise e.InvalidArgument(f"{name} header is not supported for this operation.")
    if _customer_key(headers, _SSE_C):
        raise e.InvalidRequest("The encryption parameters are not applicable to this object.")


def _copy_source(headers: Mapping[str, str]) -> None:
    if _customer_key(headers, _COPY_SSE_C):
        raise e.InvalidRequest("The encryption parameters are not applicable to this object.")
