"""Bucket default encryption: Put/Get/DeleteBucketEncryption.

The ``ServerSideEncryptionConfiguration`` document holds exactly one ``Rule``:
``ApplyServerSideEncryptionByDefault`` (``SSEAlgorithm`` AES256 | aws:kms | aws:kms:dsse, and
``KMSMasterKeyID`` only with aws:kms[:dsse]) and ``BucketKeyEnabled``. It is validated here with
S3's errors and kept in the bucket's properties (``props["encryption"]``, api/_sse.py
``BucketEncryption``); api/_sse.py applies it to every write that names no encryption. As AWS,
the KMS key id is not checked against the key service when the default is put (a write checks it).

``BlockedEncryptionTypes`` (AWS, 2025: ``EncryptionType`` ``SSE-C`` or ``NONE``) is kept with the
rule and answered as put; blocking ``SSE-C`` makes new SSE-C writes to the bucket (PutObject,
CopyObject, POST, CreateMultipartUpload) 403 AccessDenied (api/_sse.py ``write_request``), while
objects stored so stay readable with their keys. Without a configuration,
GetBucketEncryption answers 404 ``ServerSideEncryptionConfigurationNotFoundError``: this store
does not encrypt by default (AWS applies SSE-S3 to every bucket since 2023); see
docs/encryption-s3.md.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from tierstore import errors as e
from tierstore.api._common import config_body
from tierstore.api._request import Context, Request, Response
from tierstore.api._sse import ALGORITHMS, DSSE, KMS, BucketEncryption
from tierstore.api._xml import E, children, document, text_of

__all__ = ["delete_bucket_encryption", "get_bucket_encryption", "parse_encryption", "put_bucket_encryption"]

_ROOT = "ServerSideEncryptionConfiguration"
_MAX_KEY_ID = 2048  # KMS key ids, ARNs and aliases: 1..2048 characters
_ENCRYPTION_TYPES = ("NONE", "SSE-C")  # BlockedEncryptionTypes' EncryptionType values


def parse_encryption(root: Element) -> BucketEncryption:
    """The default of a ``ServerSideEncryptionConfiguration`` element; S3's errors for a bad one."""
    rules = list(children(root, "Rule"))
    if len(rules) != 1:
        raise e.MalformedXML()
    rule = rules[0]
    blocked = _blocked(rule)
    by_default = next(iter(children(rule, "ApplyServerSideEncryptionByDefault")), None)
    if by_default is None:
        raise e.MalformedXML()
    algorithm = (text_of(by_default, "SSEAlgorithm") or "").strip()
    if algorithm not in ALGORITHMS:
        raise e.MalformedXML()
    key_id = text_of(by_default, "KMSMasterKeyID")
    if key_id is not None:
        if algorithm not in (KMS, DSSE):
            raise e.InvalidArgument(
                "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms or aws:kms:dsse",
                fields={"ArgumentName": "ApplyServerSideEncryptionByDefault"},
            )
        key_id = key_id.strip()
        if not key_id or len(key_id) > _MAX_KEY_ID:
            raise e.MalformedXML()
    flag = (text_of(rule, "BucketKeyEnabled") or "false").strip().lower()
    if flag not in ("true", "false"):
        raise e.MalformedXML()
    return BucketEncryption(algorithm, key_id, flag == "true", blocked)


def _blocked(rule: Element) -> tuple[str, ...]:
    """``BlockedEncryptionTypes``: its ``EncryptionType`` values (``NONE`` | ``SSE-C``), each once;
    ``NONE`` together with a type is a contradiction (MalformedXML); none sent: ()."""
    element = next(iter(children(rule, "BlockedEncryptionTypes")), None)
    if element is None:
        return ()
    types = tuple(dict.fromkeys((t.text or "").strip() for t in children(element, "EncryptionType")))
    if any(t not in _ENCRYPTION_TYPES for t in types) or ("NONE" in types and len(types) > 1):
        raise e.MalformedXML()
    return types


def _document(config: BucketEncryption) -> bytes:
    parts = [E("SSEAlgorithm", config.algorithm)]
    if config.kms_key_id is not None:
        parts.append(E("KMSMasterKeyID", config.kms_key_id))
    rule_parts = [
        E("ApplyServerSideEncryptionByDefault", None, *parts),
        E("BucketKeyEnabled", "true" if config.bucket_key else "false"),
    ]
    if config.blocked:
        rule_parts.append(E("BlockedEncryptionTypes", None, *(E("EncryptionType", t) for t in config.blocked)))
    rule = E("Rule", None, *rule_parts)
    return document(_ROOT, rule)


async def put_bucket_encryption(req: Request, ctx: Context) -> Response:
    bucket = req.bucket or ""
    await ctx.service.get_bucket_encryption(bucket)  # NoSuchBucket before the document is looked at, as S3
    config = parse_encryption(await config_body(req, _ROOT))
    await ctx.service.put_bucket_encryption(bucket, config.to_props())
    return Response(200)


async def get_bucket_encryption(req: Request, ctx: Context) -> Response:
    """``ServerSideEncryptionConfigurationNotFoundError`` (404) when the bucket has none."""
    config = BucketEncryption.from_props(await ctx.service.get_bucket_encryption(req.bucket or ""))
    if config is None:
        raise e.ServerSideEncryptionConfigurationNotFoundError(resource=req.bucket or "")
    return Response(200, [("content-type", "application/xml")], _document(config))


async def delete_bucket_encryption(req: Request, ctx: Context) -> Response:
    """204, also when there was none (as S3)."""
    await ctx.service.delete_bucket_encryption(req.bucket or "")
    return Response(204)
