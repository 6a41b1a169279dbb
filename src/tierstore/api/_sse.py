"""Server-side encryption on the S3 surface: what a request asks for, as one typed value; the
bucket's default; the headers an answer carries.

- ``parse_write`` reads the SSE headers of a write (PutObject, CreateMultipartUpload, UploadPart,
  CopyObject/UploadPartCopy with their copy-source SSE-C headers, CompleteMultipartUpload, the
  fields of a POST form) into an ``SseRequest``: its kind (none, SSE-S3, SSE-KMS/DSSE-KMS,
  SSE-C), KMS key id, encryption context (base64 JSON, validated), bucket-key flag, SSE-C key
  (32 bytes, MD5 verified). Malformed combinations answer 400 with the code and message S3
  sends for them; nothing is ever ignored.
- ``with_default`` applies the bucket's default encryption (``BucketEncryption``, from
  PutBucketEncryption) as AWS does: an explicit request wins; SSE-C never comes from a default;
  ``aws:kms`` without ``-bucket-key-enabled`` takes the bucket's Bucket Key setting.
- ``engine_request`` hands what a write asks for to the engine (``EncryptionRequest``): every
  write that stores an object or creates an upload (PutObject, POST, CopyObject,
  CreateMultipartUpload) passes it on; parts and completions carry only an SSE-C upload's key
  (``key_of``) and may not name another encryption than their upload's (``check_part_request``).
- ``stored_of`` / ``stored_doc`` read a version's (or an upload's) stored encryption (the
  engine's ``"e"``) as ``StoredEncryption``.
- ``parse_read``: GET/HEAD: S3 refuses the SSE-S3/KMS headers on reads; the SSE-C key is
  validated here and checked against the object by the engine (``check_read_key``: it must match
  an SSE-C object and is "not applicable" to others).
- How a request arrives: ``refuse_customer_key_over_http`` (the dispatcher: SSE-C only over TLS
  unless ``serve --sse-c-over-http``), ``require_sigv4*`` (SSE-KMS objects and uploads are read
  and written only with SigV4), and a bucket default's ``BlockedEncryptionTypes`` (``write_request``:
  SSE-C writes to a bucket that blocks them are 403).
- ``response_headers`` answers, from an object's stored encryption (``StoredEncryption``), the
  headers AWS returns on each operation (a table; docs/encryption-s3.md).

The SSE-C key is never kept beyond the request, never in a repr, a log or an answer: only its
MD5 is echoed. docs/s3-compatibility.md lists the cases.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tierstore import errors as e
from tierstore.api._iam_authorizer import ACCOUNT_ID
from tierstore.api._request import Context, Request
from tierstore.crypto import kms_key_arn
from tierstore.engine import NOT_APPLICABLE, EncryptionRequest
from tierstore.types import GetOptions, ObjectMeta

__all__ = [
    "DSSE",
    "KMS",
    "NO_SSE",
    "SSE_S3",
    "BucketEncryption",
    "CustomerKey",
    "Kind",
    "SseRequest",
    "StoredEncryption",
    "bucket_default",
    "check_part_request",
    "engine_request",
    "key_of",
    "parse_read",
    "parse_write",
    "refuse_customer_key_over_http",
    "refuse_on_bucket",
    "require_sigv4",
    "require_sigv4_source",
    "require_sigv4_upload",
    "response_headers",
    "stored_doc",
    "stored_of",
    "with_default",
    "write_request",
]

Kind = Literal["none", "s3", "kms", "c"]
SSE_S3 = "AES256"
KMS = "aws:kms"
DSSE = "aws:kms:dsse"
ALGORITHMS = (SSE_S3, KMS, DSSE)  # x-amz-server-side-encryption, and a bucket default's SSEAlgorithm

_SSE = "x-amz-server-side-encryption"
_KMS_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
_CONTEXT = "x-amz-server-side-encryption-context"
_BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
_SSE_C = "x-amz-server-side-encryption-customer-"
# Every header ``parse_read`` looks at: a read that sends none of them has nothing to check.
_READ_HEADERS = frozenset(
    (_SSE, _KMS_KEY, _CONTEXT, _BUCKET_KEY, *(_SSE_C + part for part in ("algorithm", "key", "key-md5")))
)
_COPY_SSE_C = "x-amz-copy-source-server-side-encryption-customer-"
_CUSTOMER_HEADERS = frozenset(p + n for p in (_SSE_C, _COPY_SSE_C) for n in ("algorithm", "key", "key-md5"))
_SSE_C_KEY_BYTES = 32  # AES256
_ARG_MAX = 64  # an ArgumentValue echoed in an error body is cut to this many characters

_SSE_C_BLOCKED = "Server-side encryption with customer-provided keys (SSE-C) is blocked for this bucket."
_CUSTOMER = "Requests specifying Server Side Encryption with Customer provided keys must provide"
_NOT_APPLICABLE = NOT_APPLICABLE


@dataclass(frozen=True)
class CustomerKey:
    """An SSE-C key as a request sent it: 32 bytes whose MD5 matched ``key_md5``."""

    key: bytes = field(repr=False)
    key_md5: str  # base64 of MD5(key): what answers echo


@dataclass(frozen=True)
class BucketEncryption:
    """A bucket's default encryption (``ServerSideEncryptionConfiguration``'s one rule, with its
    ``BlockedEncryptionTypes``), kept in the bucket's properties as ``props["encryption"]``."""

    algorithm: str  # AES256 | aws:kms | aws:kms:dsse
    kms_key_id: str | None = None  # only with aws:kms[:dsse]; None: the server's default KMS key
    bucket_key: bool = False
    blocked: tuple[str, ...] = ()  # BlockedEncryptionTypes as put: () (none sent), ("NONE",) or ("SSE-C",)

    @property
    def blocks_sse_c(self) -> bool:
        """New SSE-C writes (PutObject, CopyObject, POST, CreateMultipartUpload) are refused."""
        return "SSE-C" in self.blocked

    def to_props(self) -> dict[str, Any]:
        doc = {"algorithm": self.algorithm, "kms_key_id": self.kms_key_id, "bucket_key": self.bucket_key}
        return {**doc, "blocked": list(self.blocked)} if self.blocked else doc

    @classmethod
    def from_props(cls, doc: Mapping[str, Any] | None) -> BucketEncryption | None:
        if not doc:
            return None
        blocked = tuple(str(t) for t in doc.get("blocked", ()))
        return cls(str(doc["algorithm"]), doc.get("kms_key_id"), bool(doc.get("bucket_key")), blocked)


@dataclass(frozen=True)
class SseRequest:
    """What a write asks for. ``kind``: none, ``s3`` (AES256), ``kms`` (aws:kms or aws:kms:dsse:
    ``algorithm`` says which), ``c`` (SSE-C, ``customer``)."""

    kind: Kind = "none"
    algorithm: str | None = None  # the x-amz-server-side-encryption value (s3, kms); AES256 for c
    kms_key_id: str | None = None  # kms without one: the server's default KMS key
    context: Mapping[str, str] | None = None  # the KMS encryption context, decoded and validated
    bucket_key: bool | None = None  # kms: None until the bucket default decides (then False at most)
    customer: CustomerKey | None = None
    source_key: CustomerKey | None = None  # the copy source's SSE-C key (CopyObject, UploadPartCopy)
    from_default: bool = False  # the bucket's default encryption chose it
    context_header: str | None = None  # the context exactly as sent (stored and echoed so)


NO_SSE = SseRequest()


@dataclass(frozen=True)
class StoredEncryption:
    """How an object (or an upload) is encrypted, as the engine records it: enough to answer
    the headers, never a key."""

    kind: Literal["s3", "kms", "c"]
    algorithm: str  # AES256 | aws:kms | aws:kms:dsse; AES256 for SSE-C
    kms_key_id: str | None = None
    context_header: str | None = None  # the encryption context as the client sent it (base64 JSON)
    bucket_key: bool = False
    customer_key_md5: str | None = None


_STORED_S3 = StoredEncryption("s3", SSE_S3)  # every SSE-S3 object's: one value, not one per answer


# --- requests ---------------------------------------------------------------------------------
def parse_write(headers: Mapping[str, str], *, copy: bool = False) -> SseRequest:
    """The SSE a write asks for (``headers`` lower-cased). ``copy``: the write has a copy source,
    whose SSE-C key is kept (``source_key``); on any other write such a key is refused. Raises
    S3's 400s for malformed combinations."""
    method = headers.get(_SSE)
    if method is not None:
        method = method.strip()
        if method not in ALGORITHMS:
            raise e.InvalidArgument("The encryption method specified is not supported", fields=_argument(_SSE, method))
    kms = method in (KMS, DSSE)
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
    if method is not None and any(h.startswith(_SSE_C) for h in headers):
        # S3 answers this before it looks at the SSE-C headers themselves.
        raise e.InvalidArgument(
            "Server Side Encryption with Customer provided key is incompatible with the encryption method specified",
            fields=_argument(_SSE, method),
        )
    customer = _customer_key(headers, _SSE_C)
    source = _customer_key(headers, _COPY_SSE_C)  # validated on every write: never ignored
    if source is not None and not copy:
        raise e.InvalidRequest(_NOT_APPLICABLE)  # a copy source's key on a write with no source
    if customer is not None:
        return SseRequest("c", SSE_S3, customer=customer, source_key=source)
    if method is None:
        return SseRequest(source_key=source)
    if not kms:
        return SseRequest("s3", method, source_key=source)
    key_id = headers.get(_KMS_KEY)
    if key_id is not None and not key_id.strip():
        raise e.InvalidArgument("The KMS key id must not be empty.", fields=_argument(_KMS_KEY, ""))
    raw_context = headers[_CONTEXT].strip() if _CONTEXT in headers else None
    context = _context(raw_context) if raw_context is not None else None
    bucket_key = _flag(headers[_BUCKET_KEY]) if _BUCKET_KEY in headers else None
    return SseRequest(
        "kms", method, key_id.strip() if key_id else None, context, bucket_key, source_key=source,
        context_header=raw_context,
    )  # fmt: skip


def with_default(sse: SseRequest, default: BucketEncryption | None) -> SseRequest:
    """Apply a bucket's default encryption to a request that names none (PutObject, CopyObject,
    CreateMultipartUpload, POST). An explicit request wins (SSE-C never comes from a default);
    an explicit ``aws:kms`` without ``-bucket-key-enabled`` takes the bucket's Bucket Key setting."""
    if sse.kind == "kms" and sse.bucket_key is None:
        return replace(sse, bucket_key=default is not None and default.bucket_key and sse.algorithm == KMS)
    if sse.kind != "none" or default is None:
        return sse
    if default.algorithm == SSE_S3:
        return replace(sse, kind="s3", algorithm=SSE_S3, from_default=True)
    bucket_key = default.bucket_key and default.algorithm == KMS  # no Bucket Keys with DSSE-KMS
    return replace(
        sse, kind="kms", algorithm=default.algorithm, kms_key_id=default.kms_key_id, bucket_key=bucket_key,
        from_default=True,
    )  # fmt: skip


def parse_read(headers: Mapping[str, str]) -> CustomerKey | None:
    """GetObject / HeadObject: S3 refuses the SSE-S3/KMS headers there (the object's encryption
    cannot change on a read); the SSE-C key, if any, validated."""
    if _READ_HEADERS.isdisjoint(headers):  # nearly every read: one C-level pass over the names
        return None
    for name in (_SSE, _KMS_KEY, _CONTEXT, _BUCKET_KEY):
        if name in headers:
            raise e.InvalidArgument(f"{name} header is not supported for this operation.")
    return _customer_key(headers, _SSE_C)


def engine_request(sse: SseRequest) -> EncryptionRequest | None:
    """What the engine encrypts a write with (None: stored in clear): PutObject hands this to
    ``ObjectService.put_object``. The SSE-C key goes along, and nowhere else."""
    if sse.kind == "none":
        return None
    if sse.kind == "c":
        assert sse.customer is not None
        return EncryptionRequest(
            "c", sse.algorithm, customer_key=sse.customer.key, customer_key_md5=sse.customer.key_md5
        )
    return EncryptionRequest(
        sse.kind, sse.algorithm, sse.kms_key_id, sse.context, sse.context_header, bool(sse.bucket_key)
    )


def stored_of(meta: ObjectMeta, region: str) -> StoredEncryption | None:
    """How ``meta``'s version is stored (its ``"e"``, docs/encryption.md), as the answers name
    it: the KMS key as its ARN in ``region``, as AWS answers; None when stored in clear."""
    return stored_doc(meta.encryption, region)


def stored_doc(doc: Mapping[str, Any], region: str) -> StoredEncryption | None:
    """``stored_of`` for an ``"e"`` document itself (a version's, or a multipart upload's)."""
    if not doc:
        return None
    kind = doc["kind"]
    if kind == "s3":
        return _STORED_S3
    if kind == "c":
        return StoredEncryption("c", SSE_S3, customer_key_md5=doc.get("ckm"))
    arn = kms_key_arn(doc["kid"], region, ACCOUNT_ID)
    return StoredEncryption("kms", doc.get("alg", KMS), arn, doc.get("ctx"), bool(doc.get("bk")))


async def bucket_default(ctx: Context, bucket: str) -> BucketEncryption | None:
    """The bucket's default encryption, read from the catalog (not the per-worker cache: a write
    must never miss a default another worker has just put). No bucket: None, and the write
    answers NoSuchBucket in its usual order."""
    try:
        return BucketEncryption.from_props(await ctx.service.get_bucket_encryption(bucket))
    except e.NoSuchBucket:
        return None


async def write_request(
    req: Request,
    ctx: Context,
    *,
    copy: bool = False,
    default: bool = True,
    props: Mapping[str, Any] | None = None,
) -> SseRequest:
    """``parse_write`` of the request's headers (a POST form's: its fields), then, for a write
    that creates an object or an upload (``default``), ``with_default`` of its bucket's default
    (an SSE-C write to a bucket that blocks SSE-C: 403 AccessDenied).
    UploadPart/UploadPartCopy/Complete take no default: the upload's encryption was fixed when it
    was created. ``props``: the bucket's properties to take the default from (PutObject: the
    worker's cached copy, which its commit checks is still the bucket's); None: read now."""
    assert req.bucket is not None
    sse = parse_write(req.headers, copy=copy)
    if default:
        if props is None:
            config = await bucket_default(ctx, req.bucket)
        else:
            config = BucketEncryption.from_props(props.get("encryption"))
        if sse.kind != "c":
            sse = with_default(sse, config)
        elif config is not None and config.blocks_sse_c:
            # AWS (BlockedEncryptionTypes): a blocked type's new writes are 403 AccessDenied;
            # reads of the objects already stored so, and parts of uploads begun before, go on.
            raise e.AccessDenied(_SSE_C_BLOCKED)
    if sse.kind == "kms" and _signed_v2(req):
        raise _needs_sigv4()
    return sse


def require_sigv4(req: Request, stored: Mapping[str, Any]) -> None:
    """A version's or an upload's stored encryption (its ``"e"``) under SSE-KMS (or DSSE-KMS) is
    read or written only with SigV4: GET/HEAD, UploadPart, UploadPartCopy and Complete of a KMS
    upload; AWS: "All GET and PUT requests for an object protected by AWS KMS fail if [not] ...
    Signature Version 4" (SigV2 headers, presigned URLs and POST forms alike)."""
    if stored.get("kind") == "kms" and _signed_v2(req):
        raise _needs_sigv4()


async def require_sigv4_upload(req: Request, ctx: Context) -> None:
    """CompleteMultipartUpload signed with SigV2: ``require_sigv4`` of its upload (looked up only
    then). An upload gone already (a retried Complete, answered from memory) has nothing to check."""
    if not _signed_v2(req):
        return
    assert req.bucket is not None and req.key is not None
    try:
        upload = await ctx.service.upload_info(req.bucket, req.key, req.query.get("uploadId", ""))
    except e.TierstoreError:
        return  # the completion answers it, in its own order
    require_sigv4(req, upload.encryption)


async def require_sigv4_source(
    req: Request, ctx: Context, bucket: str, key: str, version_id: str | None, source_key: CustomerKey | None
) -> None:
    """CopyObject / UploadPartCopy signed with SigV2 from a KMS source: a read of a KMS object,
    refused as a GET would be (the source is looked up only for SigV2 requests)."""
    if not _signed_v2(req):
        return
    try:
        opts = GetOptions(version_id=version_id, customer_key=key_of(source_key))
        meta = await ctx.service.head_object(bucket, key, opts)
    except e.TierstoreError:
        return  # the copy answers it, in its own order
    require_sigv4(req, meta.meta.encryption)


def _signed_v2(req: Request) -> bool:
    return req.auth is not None and req.auth.scheme.startswith("v2")


def _needs_sigv4() -> e.InvalidArgument:
    return e.InvalidArgument(
        "Requests specifying Server Side Encryption with AWS KMS managed keys require AWS Signature Version 4.",
        fields={"ArgumentName": "Authorization", "ArgumentValue": "null"},
    )


def key_of(customer: CustomerKey | None) -> bytes | None:
    """The 32 key bytes of an SSE-C key a request sent, for the engine (None: none sent)."""
    return customer.key if customer is not None else None


def check_part_request(sse: SseRequest, upload: StoredEncryption | None) -> None:
    """UploadPart / UploadPartCopy: the upload's encryption was fixed at CreateMultipartUpload.
    A part may repeat it (some clients send ``x-amz-server-side-encryption`` on every part) but
    never name another: 400 InvalidArgument. The SSE-C key is the engine's to check."""
    if sse.kind not in ("s3", "kms"):
        return
    if upload is None or upload.kind != sse.kind or upload.algorithm != sse.algorithm:
        raise e.InvalidArgument(
            "The server-side encryption of a part must be the one its multipart upload was created with.",
            fields=_argument(_SSE, sse.algorithm or ""),
        )


def refuse_customer_key_over_http(headers: Mapping[str, str], scope: Mapping[str, Any]) -> None:
    """Any request that carries an SSE-C header (its own or a copy source's) over plain HTTP: 400
    InvalidRequest, before anything else is looked at (AWS; MinIO in its request-validity
    middleware): the customer's key would cross the network in clear. The dispatcher calls this
    unless ``serve --sse-c-over-http`` (a TLS-terminating proxy in front, or loopback tests)."""
    if scope.get("scheme") != "https" and not _CUSTOMER_HEADERS.isdisjoint(headers):
        raise e.InvalidRequest(
            "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure"
            " connection."
        )


def refuse_on_bucket(headers: Mapping[str, str]) -> None:
    """CreateBucket: an object's encryption headers are no bucket setting (PutBucketEncryption
    is): 400, never ignored."""
    if parse_write(headers).kind != "none":
        raise e.InvalidArgument(
            "Server-side encryption headers are not supported for this operation; use PutBucketEncryption."
        )


# --- answers ------------------------------------------------------------------------------------
_ALL = frozenset({"sse", "kms", "context", "bucket_key", "customer"})
_NO_CONTEXT = _ALL - {"context"}
# What each operation's answer carries (AWS's response syntax of each API; POST: RESTObjectPOST).
_ECHO: dict[str, frozenset[str]] = {
    "PutObject": _ALL,
    "CopyObject": _ALL,
    "CreateMultipartUpload": _ALL,
    "PostObject": _NO_CONTEXT,
    "UploadPart": _NO_CONTEXT,
    "UploadPartCopy": _NO_CONTEXT,
    "GetObject": _NO_CONTEXT,
    "HeadObject": _NO_CONTEXT,
    "CompleteMultipartUpload": frozenset({"sse", "kms", "bucket_key"}),
}


def response_headers(stored: StoredEncryption | None, action: str) -> list[tuple[str, str]]:
    """The encryption headers of the answer to ``action`` for an object stored as ``stored``
    (None: not encrypted). Operations not in the table (ListParts, GetObjectAttributes, listings)
    carry none. SSE-C answers echo the algorithm and the key's MD5, never
    ``x-amz-server-side-encryption``; the bucket-key header only when true (aws:kms only)."""
    echo = _ECHO.get(action)
    if stored is None or echo is None:
        return []
    if stored is _STORED_S3:  # SSE-S3 answers carry at most its one header
        return [(_SSE, SSE_S3)] if "sse" in echo else []
    out: list[tuple[str, str]] = []
    if stored.kind == "c":
        if "customer" in echo:
            out.append((_SSE_C + "algorithm", stored.algorithm))
            out.append((_SSE_C + "key-md5", stored.customer_key_md5 or ""))
        return out
    if "sse" in echo:
        out.append((_SSE, stored.algorithm))
    if stored.kind == "kms":
        if "kms" in echo and stored.kms_key_id:
            out.append((_KMS_KEY, stored.kms_key_id))
        if "context" in echo and stored.context_header:
            out.append((_CONTEXT, stored.context_header))
        if "bucket_key" in echo and stored.bucket_key and stored.algorithm == KMS:
            out.append((_BUCKET_KEY, "true"))
    return out


# --- helpers ------------------------------------------------------------------------------------
def _argument(name: str, value: str) -> dict[str, str]:
    return {"ArgumentName": name, "ArgumentValue": value[:_ARG_MAX]}


def _customer_key(headers: Mapping[str, str], prefix: str) -> CustomerKey | None:
    """The SSE-C triplet under ``prefix`` (None when none of it was sent), S3's 400s when bad."""
    algorithm = headers.get(prefix + "algorithm")
    key = headers.get(prefix + "key")
    key_md5 = headers.get(prefix + "key-md5")
    if algorithm is None and key is None and key_md5 is None:
        return None
    if algorithm is None:
        raise e.InvalidArgument(f"{_CUSTOMER} a valid encryption algorithm.", fields={"ArgumentName": _SSE})
    if algorithm.strip() != "AES256":
        raise e.InvalidEncryptionAlgorithmError(
            "The Encryption request you specified is not valid. Supported value: AES256.",
            fields=_argument(_SSE, algorithm.strip()),
        )
    if key is None:
        raise e.InvalidArgument(f"{_CUSTOMER} an appropriate secret key.")
    if key_md5 is None:
        raise e.InvalidArgument(f"{_CUSTOMER} the client calculated MD5 of the secret key.")
    try:
        raw_key = base64.b64decode(key.strip(), validate=True)
        raw_md5 = base64.b64decode(key_md5.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise e.InvalidArgument("The secret key was invalid for the specified algorithm.") from exc
    # S3 compares the MD5 before the key's length (a 24-byte key with a wrong MD5: the MD5 error).
    if raw_md5 != hashlib.md5(raw_key).digest():  # noqa: S324 - protocol-defined
        raise e.InvalidArgument(
            "The calculated MD5 hash of the key did not match the hash that was provided.",
            fields={"ArgumentName": _SSE},
        )
    if len(raw_key) != _SSE_C_KEY_BYTES:
        raise e.InvalidArgument("The secret key was invalid for the specified algorithm.")
    return CustomerKey(raw_key, base64.b64encode(raw_md5).decode())


def _context(value: str) -> dict[str, str]:
    """``x-amz-server-side-encryption-context``: base64 of UTF-8 JSON, an object of strings."""
    try:
        doc = json.loads(base64.b64decode(value.strip(), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise e.InvalidArgument(
            f"The header '{_CONTEXT}' shall be Base64-encoded UTF-8 string holding JSON which represents a"
            " string-string map",
            fields={"ArgumentName": _CONTEXT},
        )
    return doc


def _flag(value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise e.InvalidArgument(
            f"The header '{_BUCKET_KEY}' must be true or false.", fields=_argument(_BUCKET_KEY, value)
        )
    return text == "true"
