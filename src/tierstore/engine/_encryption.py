"""Encryption at rest in the engine (docs/encryption.md): what a write asks for, the stored
``"e"`` document of an encrypted version, its data key, sealing a body and opening a range.

The format (packages, nonces, the binding MAC, the SSE-C wrap) is ``tierstore.crypto``'s; this
module only decides *which* key, *what* is stored and *when* each check runs:

- ``new_data_key``: a fresh data key (DK) for a write: from the key service for SSE-S3 / SSE-KMS
  (a missing or disabled key is the key service's error: nothing is stored), or random and
  wrapped under the customer's key for SSE-C. Returns the DK and the ``"e"`` document without
  its stream layout and MAC.
- ``seal_chunks``: a plaintext stream as its sealed packages.
- ``bind``: the document completed for the row it is about to be committed in (``n``, ``np``,
  ``mac`` over bucket/key/version id/layout).
- ``check_read_key``: the SSE-C key of a read against the document (400/403 as S3), before
  anything else about the object is answered.
- ``open_data_key``: the DK of a stored version, unwrapped and the binding MAC verified before
  any package is opened.
- ``open_range``: plaintext ``[offset, offset+length)`` of a version's ciphertext streams, every
  package verified before a byte of it is returned; ``open_in_memory`` the same for a
  ciphertext held in memory (an inline body), in one call.

Nothing here logs or raises with key material: errors name the object, never a key.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tierstore.crypto import (
    CUSTOMER_SALT_BYTES,
    DATA_KEY_BYTES,
    NONCE_PREFIX_BYTES,
    PACKAGE_BYTES,
    SSE_S3_KEY_ID,
    CustomerKeyMismatch,
    Doorkeeper,
    IntegrityError,
    KeyService,
    KmsError,
    PackageOpener,
    PackageSealer,
    RowBinding,
    StreamLayout,
    WrappedKeyError,
    check_customer_key,
    ciphertext_size,
    customer_key_check,
    derive_part_key,
    keyed_etag,
    kms_key_name,
    open_packages,
    package_span,
    unwrap_customer_data_key,
    verify_row_binding,
    wrap_customer_data_key,
)
from tierstore.crypto._packages import FORMAT_VERSION
from tierstore.errors import AccessDenied, InternalError, InvalidRequest, NotImplementedOperation

__all__ = [
    "CUSTOMER_KEY_WRONG",
    "DEFAULT_KMS_KEY_ID",
    "NOT_APPLICABLE",
    "STORED_ENCRYPTED",
    "EncryptionRequest",
    "Streams",
    "bind",
    "check_read_key",
    "customer_doc",
    "encrypted_etag",
    "kms_context",
    "new_data_key",
    "new_nonce_prefix",
    "open_data_key",
    "open_in_memory",
    "open_range",
    "seal_chunks",
    "streams_of",
    "verified_bindings",
]

log = logging.getLogger("tierstore.engine.sse")

# SSE-KMS without a key id: AWS uses the account's managed key ``aws/s3``; ours is the key the
# server manages for SSE-S3 (created on first use, never disabled).
DEFAULT_KMS_KEY_ID = SSE_S3_KEY_ID

# S3's answers for a read's SSE-C key (api/_sse.py uses the same texts for copy sources).
NOT_APPLICABLE = "The encryption parameters are not applicable to this object."
STORED_ENCRYPTED = (
    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to"
    " retrieve the object."
)
CUSTOMER_KEY_WRONG = (
    "Requests specifying Server Side Encryption with Customer provided keys must provide the correct secret key."
)

Kind = Literal["s3", "kms", "c"]


@dataclass(frozen=True, slots=True)
class EncryptionRequest:
    """What a write asks the engine to encrypt with (api/ builds it from its ``SseRequest``).

    ``kind``: ``s3`` (server-managed key), ``kms`` (``kms_key_id``, or the default key; ``context``
    as decoded, ``context_header`` as sent; ``bucket_key``; ``algorithm`` ``aws:kms`` or
    ``aws:kms:dsse``), ``c`` (``customer_key``, 32 bytes, and its base64 MD5)."""

    kind: Kind
    algorithm: str | None = None
    kms_key_id: str | None = None
    context: Mapping[str, str] | None = None
    context_header: str | None = None
    bucket_key: bool = False
    customer_key: bytes | None = field(default=None, repr=False)
    customer_key_md5: str | None = None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(doc: Mapping[str, Any], name: str) -> bytes:
    """A base64 field of ``doc``, strictly decoded (``binascii.Error``, a ``ValueError``, if it is
    not base64): ``b64decode(validate=True)`` refuses the same, at ~5x the cost of this C check
    (its regular expression), on every encrypted read's wrapped key, prefix and MAC."""
    return binascii.a2b_base64(doc[name], strict_mode=True)


def kms_context(doc: Mapping[str, Any], bucket: str, key: str) -> dict[str, str]:
    """The key service context a DK is wrapped under: the client's SSE-KMS context (if any) plus
    ``aws:s3:arn`` of the object (AWS's default context), so a wrapped key moved to another
    object does not open."""
    context: dict[str, str] = {}
    if doc.get("ctx"):
        context.update(json.loads(base64.b64decode(doc["ctx"])))
    context["aws:s3:arn"] = f"arn:aws:s3:::{bucket}/{key}"  # the object's ARN
    return context


async def new_data_key(
    kms: KeyService | None, request: EncryptionRequest, bucket: str, key: str
) -> tuple[bytes, dict[str, Any]]:
    """A fresh DK for a write of ``bucket/key`` and its ``"e"`` document (without ``n``, ``np``,
    ``mac``: ``bind`` adds them). Raises the key service's errors (``KMS.NotFoundException``,
    ``KMS.DisabledException`` ...) before any byte of the body is read."""
    if request.kind == "c":
        data_key = os.urandom(DATA_KEY_BYTES)
        return data_key, customer_doc(request, data_key, bucket=bucket, key=key)
    doc: dict[str, Any] = {"v": FORMAT_VERSION, "kind": request.kind, "ps": PACKAGE_BYTES}
    if kms is None:
        raise NotImplementedOperation("Server-side encryption needs a key service; this server has none.")
    if request.kind == "s3":
        key_id = SSE_S3_KEY_ID
    else:
        key_id = kms_key_name(request.kms_key_id) if request.kms_key_id else DEFAULT_KMS_KEY_ID
        if request.algorithm and request.algorithm != "aws:kms":
            doc["alg"] = request.algorithm
        if request.context_header:
            doc["ctx"] = request.context_header
        if request.bucket_key:
            doc["bk"] = True
    doc["kid"] = key_id
    generated = await kms.generate_data_key(key_id, kms_context(doc, bucket, key))
    doc["wk"] = _b64(generated.wrapped)
    return generated.plaintext, doc


def customer_doc(request: EncryptionRequest, data_key: bytes, *, bucket: str, key: str) -> dict[str, Any]:
    """The ``"e"`` document (without layout and MAC) of ``data_key`` wrapped under an SSE-C
    request's key for ``bucket/key``: a fresh salt, the salted check and the wrap. A new DK (a
    write) or an existing one (a copy to SSE-C that shares the source's bytes)."""
    if request.customer_key is None or len(request.customer_key) != DATA_KEY_BYTES:
        raise InvalidRequest("An SSE-C write needs a 32-byte customer key.")
    salt = os.urandom(CUSTOMER_SALT_BYTES)
    wrapped = wrap_customer_data_key(request.customer_key, data_key, salt=salt, bucket=bucket, key=key)
    return {
        "v": FORMAT_VERSION, "kind": "c", "ps": PACKAGE_BYTES, "cs": _b64(salt), "ckm": request.customer_key_md5 or "",
        "ckh": _b64(customer_key_check(request.customer_key, salt)), "wk": _b64(wrapped),
    }  # fmt: skip


async def seal_chunks(
    chunks: AsyncIterable[bytes], data_key: bytes, nonce_prefix: bytes, *, part_number: int = 0
) -> AsyncIterator[bytes]:
    """The sealed packages of a plaintext stream (a single PUT: part number 0)."""
    sealer = PackageSealer(_stream_key(data_key, part_number, nonce_prefix), nonce_prefix, part_number=part_number)
    async for chunk in chunks:
        sealed = sealer.update_joined(chunk)  # the packages it completes, in one chunk
        if sealed:
            yield sealed
    yield sealer.finish()


def new_nonce_prefix() -> bytes:
    """A fresh random nonce prefix for one stream (docs/encryption.md, "Nonce uniqueness")."""
    return os.urandom(NONCE_PREFIX_BYTES)


def encrypted_etag(doc: Mapping[str, Any], data_key: bytes, plaintext_md5: bytes) -> str:
    """The (quoted) ETag of a single-PUT version: the plaintext's MD5 for SSE-S3 (as AWS), a
    keyed MD5 for SSE-KMS / SSE-C (AWS: "not an MD5 of the object data")."""
    if doc["kind"] == "s3":
        return f'"{plaintext_md5.hex()}"'
    return f'"{keyed_etag(data_key, plaintext_md5)}"'


Streams = tuple[StreamLayout, ...]


def streams_of(doc: Mapping[str, Any], part_sizes: list[int], size: int) -> Streams:
    """The stream layout a version's ``"e"`` describes: one stream (``np``) of ``size`` bytes, or
    one per multipart part (``parts``: [part number, prefix] in object order, sizes ``part_sizes``)."""
    if "parts" in doc:
        parts = doc["parts"]
        if len(parts) != len(part_sizes):
            raise IntegrityError("the encryption metadata and the part list disagree")
        return tuple(
            StreamLayout(int(number), int(plain), binascii.a2b_base64(prefix, strict_mode=True))
            for (number, prefix), plain in zip(parts, part_sizes, strict=True)
        )
    return (StreamLayout(0, size, _unb64(doc, "np")),)


def _binding(doc: Mapping[str, Any], bucket: str, key: str, version_id: str, streams: Streams) -> RowBinding:
    return RowBinding(bucket, key, version_id, str(doc["kind"]), streams, int(doc["ps"]))


def bind(
    doc: dict[str, Any], data_key: bytes, *, bucket: str, key: str, version_id: str, size: int, nonce_prefix: bytes
) -> dict[str, Any]:
    """``doc`` completed for a single-stream version about to be committed as ``version_id``:
    its plaintext size, nonce prefix and binding MAC (a new dict; ``doc`` is not changed)."""
    bound = {**doc, "n": size, "np": _b64(nonce_prefix)}
    streams = (StreamLayout(0, size, nonce_prefix),)
    bound["mac"] = _b64(_binding(bound, bucket, key, version_id, streams).mac(data_key))
    return bound


def check_read_key(doc: Mapping[str, Any] | None, customer_key: bytes | None) -> None:
    """The SSE-C key of a read (GET, HEAD, a copy source) against the version's ``"e"`` (None or
    empty: not encrypted). S3's answers: a key for an object that is not SSE-C, or none for one
    that is: 400 InvalidRequest; a key that is not the one it was stored with: 403 AccessDenied
    (checked by the salted HMAC ``ckh``, not only by the MD5 the client sends)."""
    if not doc or doc.get("kind") != "c":
        if customer_key is not None:
            raise InvalidRequest(NOT_APPLICABLE)
        return
    if customer_key is None:
        raise InvalidRequest(STORED_ENCRYPTED)
    try:
        check_customer_key(customer_key, _unb64(doc, "cs"), _unb64(doc, "ckh"))
    except CustomerKeyMismatch:
        raise AccessDenied(CUSTOMER_KEY_WRONG) from None
    except ValueError:  # a malformed stored salt or check: damage
        raise InternalError("The encryption metadata of the object is damaged.") from None


def _damaged(bucket: str, key: str, version_id: str, exc: Exception) -> InternalError:
    """The 500 for an encrypted version that does not open, and its log line (no key material:
    the crypto errors never carry any)."""
    package = getattr(exc, "package", None)
    where = f" package {package}" if package is not None else ""
    log.error("sse integrity: %s/%s version %s%s: %s", bucket, key, version_id, where, exc)
    return InternalError(
        f"The stored data of {bucket}/{key} (version {version_id}) failed its integrity check.", resource=key
    )


class VerifiedBindings:
    """The rows whose binding MAC this process verified (SSE-S3/SSE-KMS), by everything the
    check reads: the whole ``"e"`` document (wrapped key, key id, context, kind, package size,
    size, stream layout, the stored MAC), bucket, key, version id and part sizes. The key
    service unwraps a wrapped key under a context to one data key or to none, so the same inputs
    verify again exactly as they did: a repeated read skips the HKDF and the HMAC. Holds catalog
    data only (no key, no plaintext); at most ``entries``: when full, the older half is dropped
    in one pass (a miss, every first read, costs a lookup and an insert, nothing that grows
    with the size). The unwrap (and its key status check) still runs on every read. SSE-C rows
    are not kept: the customer's key is another input."""

    __slots__ = ("_rows", "_seen", "entries")

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._rows: dict[Any, tuple[tuple[Any, ...], Streams]] = {}  # the stored MAC -> (every input, layout)
        self._seen = Doorkeeper(entries)

    def __len__(self) -> int:
        return len(self._rows)

    def get(
        self, doc: Mapping[str, Any], bucket: str, key: str, version_id: str, part_sizes: list[int]
    ) -> Streams | None:
        """The layout of a row verified before with these very inputs, or None."""
        hit = self._rows.get(doc["mac"])  # by the stored MAC (hashing it alone is cheaper), then every input compared
        if hit is None:
            return None
        return hit[1] if hit[0] == _binding_memo_key(doc, bucket, key, version_id, part_sizes) else None

    def put(
        self, doc: Mapping[str, Any], bucket: str, key: str, version_id: str, part_sizes: list[int], streams: Streams
    ) -> None:
        """Keep the row just verified, if it was verified before (``Doorkeeper``)."""
        if self.entries <= 0 or not self._seen.again(doc["mac"]):
            return
        memo = _binding_memo_key(doc, bucket, key, version_id, part_sizes)
        rows = self._rows
        if len(rows) >= self.entries:  # the newer half kept, in order (deleting the oldest one at a
            # time leaves holes at the front of the dict that every later ``next(iter())`` walks)
            rows = self._rows = dict(itertools.islice(rows.items(), len(rows) // 2, None))
        rows[memo[0]] = (memo, streams)

    def clear(self) -> None:
        self._rows.clear()
        self._seen.clear()


verified_bindings = VerifiedBindings(4096)  # per process (worker)


def _binding_memo_key(
    doc: Mapping[str, Any], bucket: str, key: str, version_id: str, part_sizes: list[int]
) -> tuple[Any, ...]:
    """Every input of an SSE-S3/KMS version's unwrap and binding check (``VerifiedBindings``),
    the stored MAC first (the memo is keyed by it): the document's items as they are (strings
    and numbers; a multipart layout's lists copied into tuples, so nothing kept can change)."""
    items = tuple(doc.items())
    if "parts" in doc:
        items = tuple((name, tuple(tuple(p) for p in value) if name == "parts" else value) for name, value in items)
    return (doc["mac"], bucket, key, version_id, tuple(part_sizes), items)


async def open_data_key(
    kms: KeyService | None,
    doc: Mapping[str, Any],
    *,
    bucket: str,
    key: str,
    version_id: str,
    size: int,
    part_sizes: list[int],
    customer_key: bytes | None,
) -> tuple[bytes, Streams]:
    """The DK of a stored version and its stream layout, after ``check_read_key``: unwrapped (key
    service, or the customer's key) and the binding MAC verified against the row, so metadata
    or bytes moved from another object or version never open. Damage: 500 InternalError naming
    the object; the key service's own refusals (a disabled or deleted key) are its errors."""
    try:
        if doc.get("v") != FORMAT_VERSION:
            raise IntegrityError(f"unknown encryption format {doc.get('v')!r}")
        if int(doc["n"]) != size:
            raise IntegrityError("the encrypted size does not match the object's")
        wrapped = binascii.a2b_base64(doc["wk"], strict_mode=True)  # ``_unb64``, inline
        keystore = doc["kind"] != "c"  # SSE-S3/SSE-KMS: the memo of verified rows applies
        if not keystore:
            assert customer_key is not None, "check_read_key runs first"
            data_key = unwrap_customer_data_key(customer_key, wrapped, salt=_unb64(doc, "cs"), bucket=bucket, key=key)
        else:
            if kms is None:
                raise NotImplementedOperation("This object is encrypted and this server has no key service.")
            data_key = await kms.decrypt_data_key(str(doc["kid"]), wrapped, kms_context(doc, bucket, key))
            streams_seen = verified_bindings.get(doc, bucket, key, version_id, part_sizes)
            if streams_seen is not None:  # this very row verified under this very wrapped key before
                return data_key, streams_seen
        if "parts" in doc:
            streams = streams_of(doc, part_sizes, size)
        else:  # a single stream (``streams_of``, inline: every small object's first read)
            streams = (StreamLayout(0, size, binascii.a2b_base64(doc["np"], strict_mode=True)),)
        mac = binascii.a2b_base64(doc["mac"], strict_mode=True)
        verify_row_binding(mac, data_key, bucket, key, version_id, str(doc["kind"]), streams, int(doc["ps"]))
        if keystore:
            verified_bindings.put(doc, bucket, key, version_id, part_sizes, streams)
    except KmsError as exc:
        if not isinstance(exc, WrappedKeyError):  # a deleted or disabled key, a key service down
            raise
        raise _damaged(bucket, key, version_id, exc) from None
    except (IntegrityError, KeyError, TypeError, ValueError) as exc:  # damaged or moved metadata
        raise _damaged(bucket, key, version_id, exc) from None
    return data_key, streams


def _stream_key(data_key: bytes, part_number: int, nonce_prefix: bytes) -> bytes:
    """The key a stream is sealed under: the DK for a single PUT (part 0), else the part's
    derived key."""
    return data_key if part_number == 0 else derive_part_key(data_key, part_number, nonce_prefix)


def open_in_memory(
    data_key: bytes,
    streams: Streams,
    ciphertext: bytes,
    offset: int,
    length: int,
    *,
    package_bytes: int = PACKAGE_BYTES,
    name: tuple[str, str, str],
) -> bytes | None:
    """Plaintext ``[offset, offset+length)`` of a single-stream version whose whole ciphertext is
    ``ciphertext`` (an inline body: the catalog checked its CRC when it loaded it), opened in one
    call, so a damaged package is a clean 500 before the answer starts. The 4 KiB GET path: no
    opener object, no generator (``open_range``'s machinery costs more than the cipher here).
    None for a version of several streams: ``open_range`` reads those."""
    if len(streams) != 1:
        return None
    stream = streams[0]
    if not length and stream.plaintext_size:
        return b""
    try:
        if not offset and length == stream.plaintext_size and not stream.part_number:  # the whole body
            return open_packages(
                data_key, stream.nonce_prefix, ciphertext, plaintext_size=length, package_bytes=package_bytes
            )
        if offset or length != stream.plaintext_size:  # a range: the packages it touches
            span = package_span(offset, offset + length, stream.plaintext_size, package_bytes=package_bytes)
            ciphertext = ciphertext[span.cipher_start : span.cipher_end]
        return open_packages(
            _stream_key(data_key, stream.part_number, stream.nonce_prefix),
            stream.nonce_prefix,
            ciphertext,
            plaintext_size=stream.plaintext_size,
            plain_start=offset,
            plain_end=offset + length,
            part_number=stream.part_number,
            package_bytes=package_bytes,
        )
    except IntegrityError as exc:
        raise _damaged(*name, exc) from None


async def open_range(
    read: Callable[[int, int, bool], AsyncGenerator[bytes, None]],
    data_key: bytes,
    streams: Streams,
    offset: int,
    length: int,
    *,
    package_bytes: int = PACKAGE_BYTES,
    name: tuple[str, str, str],
) -> AsyncIterator[bytes]:
    """Plaintext ``[offset, offset+length)`` of a version whose ciphertext ``read(start, size,
    verify)`` returns (the concatenation of its streams' sealed bytes). Only the packages the
    range touches are read, and each is verified before any of its bytes is yielded. A package
    that does not open: 500 InternalError naming the object (``name``: bucket, key, version id).

    The CRC-off fast read (docs/encryption.md "A speed lever for GET"): the GCM tags
    authenticate every byte, so the ciphertext is read with ``verify=False`` (no per-block
    CRC32C pass in the blob layer). When a package does not open, the rest of the stream is
    read again from that package with ``verify=True``: bitrot then shows as the blob layer's
    ``CorruptBlob`` (and an erasure set reads around it from parity and queues the blob for
    heal), so only a package that still does not open, CRC-valid yet not authentic, is
    reported as damage."""
    cipher_base = 0
    end = offset + length
    plain_base = 0
    try:
        for stream in streams:
            plain_end = plain_base + stream.plaintext_size
            lo, hi = max(offset, plain_base), min(end, plain_end)
            empty_object = length == 0 and stream.plaintext_size == 0 and len(streams) == 1
            verify = False
            while lo < hi or empty_object:
                opener = PackageOpener(
                    _stream_key(data_key, stream.part_number, stream.nonce_prefix),
                    stream.nonce_prefix,
                    plaintext_size=stream.plaintext_size,
                    plain_start=lo - plain_base,
                    plain_end=hi - plain_base,
                    part_number=stream.part_number,
                    package_bytes=package_bytes,
                )
                span = opener.span
                chunks = read(cipher_base + span.cipher_start, span.cipher_end - span.cipher_start, verify)
                try:
                    async for chunk in chunks:
                        # One chunk out per chunk read (~1 MiB), its packages opened straight
                        # into it (docs/benchmarks.md, "64 MiB encrypted GET/PUT, session 10").
                        plain = opener.update_joined(chunk)
                        if plain:
                            lo += len(plain)
                            yield plain
                    opener.finish()
                except IntegrityError:
                    if verify or lo >= hi:
                        raise
                    log.warning("sse: %s/%s version %s: a package did not open; reading it again with checksums", *name)
                    verify = True
                    continue
                finally:
                    # Closed here, not left to the garbage collector when the answer stops early
                    # (a response's first chunk is the whole body; a client gone): an abandoned
                    # async generator costs the loop a wake-up through its self-pipe.
                    await chunks.aclose()
                break
            cipher_base += ciphertext_size(stream.plaintext_size, package_bytes=package_bytes)
            plain_base = plain_end
            if length and plain_base >= end:
                break
    except IntegrityError as exc:
        raise _damaged(*name, exc) from None
