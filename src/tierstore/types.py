"""Validated names and typed options, shared by every layer.

Validate once, at the boundary (STYLE.md #4): a ``BucketName`` or ``ObjectKey`` that exists is
valid, and code inside trusts it. Object keys are never used as file paths anywhere in
tierstore (blobs have random ids), so a hostile key can only ever be a key.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tierstore.errors import (
    InvalidArgument,
    InvalidBucketName,
    InvalidRange,
    KeyTooLongError,
    MetadataTooLarge,
)

__all__ = [
    "BATCH_FRAME",
    "BATCH_TRAILER",
    "CHECKSUM_ALGORITHMS",
    "MANIFEST_COLUMNS",
    "MANIFEST_HEAD_ROWS_MAX",
    "MANIFEST_META_KEY",
    "MAX_KEY_BYTES",
    "MAX_PUT_BYTES",
    "MAX_USER_META_BYTES",
    "MODEL_COMMIT_MEMBER",
    "NULL_VERSION",
    "RESERVED_ALIASES",
    "STANDARD_HEADERS",
    "BucketInfo",
    "BucketName",
    "ByteRange",
    "ChecksumExpectation",
    "Conditions",
    "DatasetRef",
    "GetOptions",
    "ListEntry",
    "ListOptions",
    "ListPage",
    "ModelRef",
    "ObjectKey",
    "ObjectMeta",
    "PartInfo",
    "PutOptions",
    "UploadInfo",
    "check_alias",
    "dataset_source_text",
]

MAX_KEY_BYTES = 1024
MAX_PUT_BYTES = 5 * 1024**3
MAX_USER_META_BYTES = 2048
NULL_VERSION = "null"
RESERVED_BUCKETS = frozenset({"_tierstore"})

#: Standard headers stored with an object and returned on GET/HEAD (lower-case).
STANDARD_HEADERS = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
)

CHECKSUM_ALGORITHMS: tuple[str, ...] = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")

#: ``POST /_tierstore/batch`` responses (docs/datasets.md): per entry this frame (entry index,
#: HTTP-style status, byte length), then that many bytes; the last frame has index
#: ``BATCH_TRAILER`` and a JSON summary. Written by api/, read by client/.
BATCH_FRAME = struct.Struct("<IHQ")
BATCH_TRAILER = 0xFFFFFFFF

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class BucketName(str):
    """An S3 bucket name that follows the general-purpose bucket naming rules."""

    __slots__ = ()

    def __new__(cls, value: str) -> BucketName:
        if not isinstance(value, str) or not _BUCKET_RE.match(value):
            raise InvalidBucketName(resource=str(value)[:100])
        if ".." in value or ".-" in value or "-." in value:
            raise InvalidBucketName(resource=value)
        if value.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or value.endswith(
            ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
        ):
            raise InvalidBucketName(resource=value)
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            pass
        else:
            raise InvalidBucketName(resource=value)
        return super().__new__(cls, value)


class ObjectKey(str):
    """An object key: 1..1024 bytes of UTF-8. Any character is allowed — it is data, not a path."""

    __slots__ = ()

    def __new__(cls, value: str) -> ObjectKey:
        if not isinstance(value, str) or value == "":
            raise InvalidArgument("Object key must not be empty")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidArgument("Object key is not valid UTF-8") from exc
        if size > MAX_KEY_BYTES:
            raise KeyTooLongError(resource=value[:64])
        return super().__new__(cls, value)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A single HTTP byte range: ``bytes=a-b`` (first/last), ``bytes=a-`` or ``bytes=-n`` (suffix)."""

    first: int | None
    last: int | None

    @classmethod
    def parse(cls, header: str | None) -> ByteRange | None:
        """Parse a Range header. Syntax S3 ignores (multiple ranges, other units) gives None."""
        if not header:
            return None
        unit, _, spec = header.strip().partition("=")
        if unit.strip().lower() != "bytes" or "," in spec:
            return None
        first_s, sep, last_s = spec.strip().partition("-")
        if not sep:
            return None
        first_s, last_s = first_s.strip(), last_s.strip()
        if any(s and not (s.isascii() and s.isdigit()) for s in (first_s, last_s)):
            return None
        if not first_s and not last_s:
            return None
        if first_s and last_s and _digits_key(last_s) < _digits_key(first_s):
            return None  # exact even past _RANGE_HUGE
        first = _range_int(first_s) if first_s else None
        last = _range_int(last_s) if last_s else None
        return cls(first, last)

    def resolve(self, size: int) -> tuple[int, int]:
        """Return (offset, length) inside an object of ``size`` bytes, or raise InvalidRange."""
        if self.first is None:
            assert self.last is not None
            if self.last == 0 or size == 0:
                raise InvalidRange()
            length = min(self.last, size)
            return size - length, length
        if self.first >= size:
            raise InvalidRange()
        end = size - 1 if self.last is None else min(self.last, size - 1)
        return self.first, end - self.first + 1


_RANGE_HUGE = 10**20  # past any object size; stands for every longer number


def _digits_key(digits: str) -> tuple[int, str]:
    """Orders ASCII decimals of any length by value, without converting them."""
    digits = digits.lstrip("0")
    return len(digits), digits


def _range_int(digits: str) -> int:
    """An ASCII decimal of any length, capped: a 4,300-digit offset must not reach int()'s
    digit limit (ValueError) or cost quadratic time; past ``_RANGE_HUGE`` every number acts alike."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else _RANGE_HUGE


@dataclass(slots=True)
class Conditions:
    """HTTP preconditions against the current object (RFC 9110 order is applied by the engine)."""

    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since_ns: int | None = None
    if_unmodified_since_ns: int | None = None

    def is_empty(self) -> bool:
        return (
            self.if_match is None
            and self.if_none_match is None
            and self.if_modified_since_ns is None
            and self.if_unmodified_since_ns is None
        )


@dataclass(slots=True)
class ChecksumExpectation:
    """A checksum the client asked for. ``value`` may arrive late (an aws-chunked trailer):
    the api layer fills ``trailers`` before the body iterator is exhausted."""

    algorithm: str  # one of CHECKSUM_ALGORITHMS
    value: str | None = None
    trailers: dict[str, str] | None = None

    def expected(self) -> str | None:
        if self.value is not None:
            return self.value
        if self.trailers is not None:
            return self.trailers.get(f"x-amz-checksum-{self.algorithm}")
        return None


def check_user_metadata(meta: dict[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())
    if size > MAX_USER_META_BYTES:
        raise MetadataTooLarge(f"Your metadata headers are {size} bytes; the limit is {MAX_USER_META_BYTES}.")


@dataclass(slots=True)
class PutOptions:
    headers: dict[str, str] = field(default_factory=dict)  # STANDARD_HEADERS subset, lower-case names
    user_meta: dict[str, str] = field(default_factory=dict)  # without the x-amz-meta- prefix
    conditions: Conditions = field(default_factory=Conditions)
    content_md5: str | None = None  # base64, as sent
    checksum: ChecksumExpectation | None = None
    content_length: int | None = None  # decoded length, if the client declared it
    storage_class: str = "STANDARD"


@dataclass(slots=True)
class GetOptions:
    byte_range: ByteRange | None = None
    conditions: Conditions = field(default_factory=Conditions)
    part_number: int | None = None
    version_id: str | None = None
    # SSE-C: the customer key the read sent (32 bytes, its MD5 checked by api/); never shown
    customer_key: bytes | None = field(default=None, repr=False)


@dataclass(slots=True)
class ObjectMeta:
    bucket: str
    key: str
    version_id: str
    size_bytes: int
    etag: str  # quoted, as S3 returns it
    modified_ns: int
    headers: dict[str, str] = field(default_factory=dict)
    user_meta: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64 (or "b64-N" composite)
    checksum_type: str | None = None  # FULL_OBJECT | COMPOSITE
    parts: list[int] = field(default_factory=list)  # part sizes, for multipart objects
    # the upload's checksum algorithm -> each part's checksum (multipart uploads that had one)
    part_checksums: dict[str, list[str]] = field(default_factory=dict)
    storage_class: str = "STANDARD"
    tags: dict[str, str] = field(default_factory=dict)
    lock: dict[str, Any] = field(default_factory=dict)  # object lock: mode, until_ns, legal_hold
    # the version's ACL grants, [kind, grantee, permission] (api/_acl.py); empty: private
    acl: list[list[str]] = field(default_factory=list)
    # encryption at rest: the "e" document of docs/encryption.md (kind, wrapped data key, nonce
    # prefix, binding MAC ...); empty: stored in clear
    encryption: dict[str, Any] = field(default_factory=dict)
    is_delete_marker: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "binary/octet-stream")


@dataclass(slots=True)
class ListOptions:
    prefix: str = ""
    delimiter: str = ""
    start_after: str = ""  # exclusive; continuation tokens and markers are decoded to this
    max_keys: int = 1000


@dataclass(slots=True)
class ListEntry:
    key: str
    size_bytes: int
    etag: str
    modified_ns: int
    storage_class: str = "STANDARD"


@dataclass(slots=True)
class ListPage:
    entries: list[ListEntry]
    common_prefixes: list[str]
    is_truncated: bool
    next_marker: str | None  # the last key or prefix returned, when truncated


@dataclass(slots=True)
class BucketInfo:
    name: str
    created_ns: int
    region: str = "us-east-1"


@dataclass(slots=True)
class UploadInfo:
    bucket: str
    key: str
    upload_id: str
    initiated_ns: int
    headers: dict[str, str] = field(default_factory=dict)
    user_meta: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    storage_class: str = "STANDARD"
    # an encrypted upload: its "e" document without a stream layout or MAC (kind, wrapped data
    # key, ...), fixed at CreateMultipartUpload so every part uses the same data key (docs/encryption.md)
    encryption: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PartInfo:
    part_number: int
    size_bytes: int  # plaintext bytes
    etag: str
    modified_ns: int
    checksums: dict[str, str] = field(default_factory=dict)
    blob_id: str = ""
    nonce_prefix: str | None = None  # a part of an encrypted upload: its stream's prefix (base64)
    stored_bytes: int | None = None  # what its blob holds, when not size_bytes (ciphertext); not kept


# --- datasets (docs/datasets.md) ------------------------------------------------------------
# The columns of every dataset manifest, in order (chosen metadata columns follow), and the key
# of the Parquet file metadata that holds the dataset's record.
MANIFEST_COLUMNS = ("bucket", "key", "version_id", "etag", "offset", "size", "member", "label", "loc")
MANIFEST_META_KEY = b"tierstore.dataset"
MANIFEST_HEAD_ROWS_MAX = 1000  # rows a manifest's head (``manifest?head=K``) answers at most
_DATASET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """``NAME@N`` (version N) or ``NAME`` (the latest version, ``version`` None)."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str | DatasetRef) -> DatasetRef:
        if isinstance(text, DatasetRef):
            return text
        name, sep, ver = text.partition("@")
        if not _DATASET_NAME_RE.fullmatch(name):
            raise InvalidArgument(f"bad dataset name {name!r}: 1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric")
        if not sep:
            return cls(name)
        if not ver.isdigit() or int(ver) < 1:
            raise InvalidArgument(f"bad dataset version in {text!r}: NAME@N with N >= 1")
        return cls(name, int(ver))

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


# --- models (docs/checkpoints.md) -----------------------------------------------------------
# A model name is spelled like a dataset name; an alias is lower case and never all digits, so
# ``NAME@3`` is version 3 and ``NAME@production`` an alias. "latest" and "aliases" are reserved
# (``NAME`` alone is the latest version; ``/_tierstore/models/NAME/aliases/...`` is the alias API).
#: The manifest member (and the file ``pull`` writes) holding a model's checkpoint commit object.
MODEL_COMMIT_MEMBER = "COMMIT.json"
_ALIAS_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
RESERVED_ALIASES = frozenset({"latest", "aliases"})


def dataset_source_text(record: Mapping[str, Any]) -> str:
    """Where a dataset version's samples came from, in one line, from its record (the JSON
    ``/_tierstore/datasets`` answers): a prefix, a query, the version it was derived from, or rows."""
    src = record.get("source") or {}
    if "prefix" in src:
        return f"s3://{src['bucket']}/{src['prefix']}"
    if "query" in src:
        return f"query on {src['bucket']}: {src['query']}"
    lineage = record.get("lineage") or {}
    if "source" in lineage:
        return f"derived from {lineage['source']}"
    return f"{src.get('rows', '?')} explicit rows"


def check_alias(alias: str) -> str:
    """``alias`` if it is a valid model alias, else ``InvalidArgument``."""
    if not _ALIAS_RE.fullmatch(alias) or alias.isdigit() or alias in RESERVED_ALIASES:
        raise InvalidArgument(
            f"bad model alias {alias[:80]!r}: 1-63 of a-z 0-9 _ -, starting with a letter or digit, not all digits,"
            " not 'latest' or 'aliases'"
        )
    return alias


@dataclass(frozen=True, slots=True)
class ModelRef:
    """``NAME@N`` (version N), ``NAME@ALIAS`` (the version the alias points at) or ``NAME`` (the
    latest version): at most one of ``version`` and ``alias`` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str | ModelRef) -> ModelRef:
        if isinstance(text, ModelRef):
            return text
        name, sep, ver = text.partition("@")
        if not _DATASET_NAME_RE.fullmatch(name):
            raise InvalidArgument(f"bad model name {name[:140]!r}: 1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric")
        if not sep:
            return cls(name)
        if ver.isdigit():
            if int(ver) < 1:
                raise InvalidArgument(f"bad model version in {text!r}: NAME@N with N >= 1")
            return cls(name, int(ver))
        return cls(name, alias=check_alias(ver))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return self.name if self.alias is None else f"{self.name}@{self.alias}"
