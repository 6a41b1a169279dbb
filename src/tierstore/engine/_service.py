"""ObjectService: buckets, objects, multipart, checksums, preconditions, GC.

The write path (DESIGN.md): stream the body into a new blob (checksums computed while
streaming, fsync, rename) -> one catalog transaction publishes the version -> unreferenced
blobs are collected later. A failure before the commit leaves the previous version in place
and the new blob is deleted (or, failing that, collected by GC as an orphan). A body of at
most ``inline_max_bytes`` skips the blob: its bytes go into the catalog in the publishing
transaction itself (docs/inline.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import functools
import hashlib
import itertools
import json
import logging
import re
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from tierstore._hashing import ThreadedHash
from tierstore.blob import BlobStore
from tierstore.catalog import BlobRef, BucketChanged, Catalog, HoldInfo, VersioningChanged, VersionRecord
from tierstore.crypto import KeyService, ciphertext_size
from tierstore.drives import DiskReserve
from tierstore.engine._bucket_access import BucketAccessService
from tierstore.engine._checksums import (
    Hasher,
    composite_checksum,
    decode_checksum,
    full_object_crc,
    is_crc,
    new_hasher,
)
from tierstore.engine._encryption import (
    EncryptionRequest,
    bind,
    check_read_key,
    customer_doc,
    encrypted_etag,
    new_data_key,
    new_nonce_prefix,
    open_data_key,
    open_in_memory,
    open_range,
    seal_chunks,
)
from tierstore.engine._health import Backlog, BucketUsage
from tierstore.engine._hot import FillResult, HotCopies, restore_holder
from tierstore.engine._leases import LeaseHolder
from tierstore.engine._lifecycle import DAY_S, due_after
from tierstore.engine._lifecycle_worker import LifecyclePlan
from tierstore.engine._lock import (
    LockConfig,
    LockRequest,
    Retention,
    change_legal_hold,
    change_retention,
    locked_reason,
    new_version_lock,
    retention_of,
)
from tierstore.engine._mover import MOVE_WAVE, Grouped, Mover, TierStoreFactory, TierStores, backoff_ns
from tierstore.engine._sse_parts import bind_parts, check_part_key, upload_data_key
from tierstore.engine._tags import MAX_BUCKET_TAGS, encode_tagging_header, parse_tagging_header, validate_tags
from tierstore.engine._tiers import TierProgress, TierService
from tierstore.errors import (
    AccessDenied,
    BadDigest,
    BucketAlreadyOwnedByYou,
    CorruptBlob,
    EntityTooLarge,
    EntityTooSmall,
    IncompleteBody,
    InsufficientStorage,
    InternalError,
    InvalidArgument,
    InvalidBucketState,
    InvalidDigest,
    InvalidObjectState,
    InvalidPart,
    InvalidPartNumber,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    MalformedXML,
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchEntity,
    NoSuchKey,
    NoSuchObjectLockConfiguration,
    NoSuchTagSet,
    NoSuchUpload,
    NoSuchVersion,
    NotImplementedOperation,
    NotModified,
    ObjectLockConfigurationNotFoundError,
    PreconditionFailed,
    RestoreAlreadyInProgress,
    SlowDown,
    TierUnavailable,
)
from tierstore.runtime import Clock, new_blob_id, new_upload_id, new_version_id
from tierstore.types import (
    MAX_PUT_BYTES,
    NULL_VERSION,
    BucketInfo,
    BucketName,
    ByteRange,
    ChecksumExpectation,
    Conditions,
    GetOptions,
    ListEntry,
    ListOptions,
    ListPage,
    ObjectKey,
    ObjectMeta,
    PartInfo,
    PutOptions,
    UploadInfo,
    check_user_metadata,
)

__all__ = ["CompletedPart", "CopyOptions", "CopyResult", "DeleteResult", "GetResult", "ObjectService", "VersionsPage"]

log = logging.getLogger("tierstore.engine")
_T = TypeVar("_T")

MIN_PART_BYTES = 5 * 1024 * 1024
# The bucket properties a PUT decides by before its body is read (the default encryption, the
# object-lock default): taken from the worker's cache, checked in the commit (``_put_deciding``).
DECIDING_PROPS = ("encryption", "object_lock")
_VERSIONING_ATTEMPTS = 3  # an encrypted PUT rebinds its version id if versioning is switched meanwhile
DEFAULT_INLINE_MAX_BYTES = 16 * 1024  # bodies up to this size live in the catalog (docs/inline.md)
MAX_PART_NUMBER = 10_000
DEFAULT_CHECKSUM = "crc64nvme"  # stored for every object, as S3 does since 2025
COMPLETED_UPLOAD_KEEP_S = 86_400  # a retried CompleteMultipartUpload is answered from memory this long
LEGACY_REGION = "us-east-1"  # where CreateBucket of a bucket you own answers 200, not 409
_MAX_KEY_SENTINEL = b"\xff"  # never occurs in UTF-8, so it sorts after every key with a given prefix
_AFTER_PREFIX_BATCH = 17  # rows a versions scan asks for just after a common prefix (list_object_versions)
# A multipart upload keeps the tags and object lock its CreateMultipartUpload asked for in its
# headers under these names (the catalog's upload record has no fields for them); completion
# takes them out again, so they never reach the object's headers.
_UPLOAD_TAGS = "x-tierstore-tagging"
_UPLOAD_LOCK = "x-tierstore-object-lock"
_UPLOAD_ACL = "x-tierstore-acl"


async def stream_blobs(
    store: BlobStore,
    refs: Iterable[BlobRef],
    offset: int,
    length: int,
    *,
    verify: bool = True,
    remote: Callable[[str], Awaitable[BlobStore]] | None = None,
) -> AsyncIterator[bytes]:
    """Bytes [offset, offset+length) of the concatenation of blobs ``refs`` (the store verifies;
    ``verify=False``: not its block checksums, for encrypted bodies, ``BlobStore.get``). A blob
    in a tier (``ref.tier``) is read from ``remote(tier)``'s store (docs/tiers.md)."""
    remaining = length
    for ref in refs:
        if remaining <= 0:
            break
        if offset >= ref.size_bytes:
            offset -= ref.size_bytes
            continue
        take = min(ref.size_bytes - offset, remaining)
        if ref.tier is None:
            chunks = await store.get(ref.blob_id, offset, take, verify=verify)
        else:
            assert remote is not None, "a blob in a tier, and no way to reach tiers"
            chunks = await _cached_or_remote(store, await remote(ref.tier), ref, offset, take, verify)
        async for chunk in chunks:
            yield chunk
        remaining -= take
        offset = 0


async def _cached_or_remote(
    store: BlobStore, remote: BlobStore, ref: BlobRef, offset: int, length: int, verify: bool
) -> AsyncIterator[bytes]:
    """A remote blob's bytes: from its local copy when it has one (docs/tiers.md "Hot copies"),
    else (or if the copy was freed since the version was read) from its tier."""
    if ref.cached:
        try:
            return await store.get(ref.blob_id, offset, length, verify=verify)
        except CorruptBlob:
            log.info("the local copy of %s is gone; reading it from tier %s", ref.blob_id, ref.tier)
    return await remote.get(ref.blob_id, offset, length, verify=verify)


class _InMemory:
    """A body already in memory as a GET's stream: one chunk (none for an empty one). Not an
    async generator, which the event loop's hooks track from its first step to its close: the
    4 KiB GET answers from ``GetResult.data`` and never steps this; other readers do."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> _InMemory:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, b""
        if not data:
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        self._data = b""


@dataclass(slots=True)
class GetResult:
    meta: ObjectMeta
    offset: int
    length: int
    partial: bool  # a Range (or partNumber) selected part of the object
    body: AsyncIterator[bytes] | None = None
    parts_count: int | None = None
    bucket_versioning: str | None = None  # the bucket's state when the version was read
    data: bytes | None = None  # the selected bytes when they are in memory (an inline body): ``body`` streams them


@dataclass(slots=True)
class CopyOptions:
    """CopyObject / UploadPartCopy options. ``source_conditions`` use the x-amz-copy-source-if-* values."""

    source_conditions: Conditions = field(default_factory=Conditions)
    replace_metadata: bool = False  # x-amz-metadata-directive: REPLACE
    headers: dict[str, str] = field(default_factory=dict)
    user_meta: dict[str, str] = field(default_factory=dict)
    conditions: Conditions = field(default_factory=Conditions)  # on the destination
    source_range: ByteRange | None = None  # UploadPartCopy only
    checksum_algorithm: str | None = None
    storage_class: str | None = None
    replace_tags: bool = False  # x-amz-tagging-directive: REPLACE (CopyObject only)
    tags: list[tuple[str, str]] = field(default_factory=list)  # the new tags when replace_tags
    lock: LockRequest | None = None  # x-amz-object-lock-* (CopyObject only; the source's lock is never copied)
    acl: list[list[str]] = field(default_factory=list)  # the copy's ACL (CopyObject; the source's is never copied)


@dataclass(slots=True)
class CompletedPart:
    part_number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)


_VERSION_ID_RE = re.compile(r"[0-9a-f]{24}")


def check_version_id(version_id: str) -> None:
    """Version ids are ``null`` or what runtime.new_version_id makes; anything else is malformed."""
    if version_id != NULL_VERSION and not _VERSION_ID_RE.fullmatch(version_id):
        raise InvalidArgument("Invalid version id specified", resource=version_id[:64])


def _marker_headers(meta: ObjectMeta) -> dict[str, str]:
    return {
        "x-amz-delete-marker": "true",
        "x-amz-version-id": meta.version_id,
        "last-modified": email.utils.formatdate(meta.modified_ns / 1e9, usegmt=True),
    }


@dataclass(slots=True)
class CopyResult:
    meta: ObjectMeta  # the new object (version)
    source_version_id: str  # the version that was copied


@dataclass(slots=True)
class DeleteResult:
    version_id: str | None  # the version removed, or the delete marker added
    delete_marker: bool


@dataclass(slots=True)
class VersionsPage:
    versions: list[tuple[ObjectMeta, bool]]  # (version or delete marker, is_latest)
    common_prefixes: list[str]
    is_truncated: bool
    next_key_marker: str | None
    next_version_id_marker: str | None


def _names_common_prefix(marker: bytes, prefix: bytes, delimiter: bytes) -> bool:
    """Whether a listing marker is a common prefix (prefix + one segment + delimiter): resuming
    after it must skip every key under it."""
    rest = marker[len(prefix) :] if marker.startswith(prefix) else b""
    return bool(delimiter) and rest.endswith(delimiter) and rest.find(delimiter) == len(rest) - len(delimiter)


def _strip_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def _etag_matches(header: str, etag: str) -> bool:
    bare = etag.strip('"')
    return any(t == "*" or _strip_etag(t) == bare for t in header.split(","))


def _seconds(ns: int) -> int:
    return ns // 1_000_000_000


def evaluate_read_conditions(cond: Conditions, meta: ObjectMeta) -> None:
    """GET/HEAD preconditions as S3 applies them: 412 PreconditionFailed or 304 NotModified."""
    if cond.is_empty():
        return
    mtime = _seconds(meta.modified_ns)
    if cond.if_match is not None:
        if not _etag_matches(cond.if_match, meta.etag):
            raise PreconditionFailed(resource=meta.key)
    elif cond.if_unmodified_since_ns is not None and mtime > _seconds(cond.if_unmodified_since_ns):
        raise PreconditionFailed(resource=meta.key)
    if cond.if_none_match is not None:
        if _etag_matches(cond.if_none_match, meta.etag):
            raise NotModified(resource=meta.key)
    elif cond.if_modified_since_ns is not None and mtime <= _seconds(cond.if_modified_since_ns):
        raise NotModified(resource=meta.key)


def _copy_source_conditions(cond: Conditions, meta: ObjectMeta) -> None:
    """x-amz-copy-source-if-*: every failure is 412 (a copy never answers 304)."""
    try:
        evaluate_read_conditions(cond, meta)
    except NotModified as exc:
        raise PreconditionFailed(resource=meta.key) from exc


def _check_write_condition_values(cond: Conditions) -> None:
    """S3 writes take ``If-None-Match: *`` only; another value is refused before a body is read."""
    if cond.if_none_match is not None and cond.if_none_match.strip() != "*":
        raise NotImplementedOperation("If-None-Match on a write supports only '*'")


def _conditional(cond: Conditions) -> bool:
    """Whether a write has conditions to check in its commit (If-Match, If-None-Match)."""
    return cond.if_match is not None or cond.if_none_match is not None


def _write_conditions(cond: Conditions, key: str) -> Callable[[VersionRecord | None], None]:
    """Conditional writes (If-None-Match: *, If-Match: etag), checked inside the commit."""
    _check_write_condition_values(cond)

    def check(current: VersionRecord | None) -> None:
        live = current if current is not None and not current.is_delete_marker else None
        if cond.if_none_match is not None and live is not None:
            raise PreconditionFailed(resource=key)
        if cond.if_match is not None:
            if live is None:
                raise NoSuchKey(resource=key)
            if not _etag_matches(cond.if_match, live.meta.etag):
                raise PreconditionFailed(resource=key)

    return check


def _parts_fingerprint(parts: list[CompletedPart]) -> str:
    """What identifies the part list of a CompleteMultipartUpload: numbers and ETags, in order."""
    text = "\n".join(f"{p.part_number}:{_strip_etag(p.etag)}" for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_object_checksum(sent: tuple[str | None, str], checksums: dict[str, str]) -> None:
    """The object checksum a CompleteMultipartUpload names (x-amz-checksum-<alg>) against the one
    the parts make: another algorithm than the upload's (or any, for an upload created without
    one: its parts carry nothing to check it against) -> InvalidRequest; another value (a
    COMPOSITE one with or without its ``-N``; malformed too) -> BadDigest, as S3 answers."""
    alg, value = sent
    ours = next(iter(checksums), None)  # a multipart object has its upload's algorithm, or none
    alg = alg or ours  # an embedded caller may leave the algorithm to the upload
    if ours is None or alg != ours:
        raise InvalidRequest(
            f"Checksum Type mismatch occurred, expected checksum Type: {ours}, actual checksum Type: {alg}"
        )
    expected = checksums[alg]
    if value.strip() not in (expected, expected.partition("-")[0]):
        raise BadDigest(f"The {alg.upper()} you specified did not match the calculated checksum.")


def _lock_request_json(lock: LockRequest) -> str:
    doc: dict[str, Any] = {}
    if lock.retention is not None:
        doc.update(mode=lock.retention.mode, until_ns=lock.retention.until_ns)
    if lock.legal_hold is not None:
        doc["legal_hold"] = lock.legal_hold
    return json.dumps(doc)


def _lock_request_from_json(raw: str | None) -> LockRequest | None:
    if raw is None:
        return None
    doc = json.loads(raw)
    retention = Retention(doc["mode"], int(doc["until_ns"])) if "mode" in doc else None
    return LockRequest(retention, doc.get("legal_hold"))


def _shares_under_customer_key(src: ObjectMeta, encryption: EncryptionRequest) -> bool:
    """Whether a copy of ``src`` to ``encryption`` can share the source's bytes: an encrypted
    source (its data key re-wrapped under the customer's key) copied to SSE-C, unless the source
    is an SSE-S3 multipart object (its part ETags are plaintext MD5s; SSE-C ones are keyed)."""
    kind = src.encryption.get("kind")
    return encryption.kind == "c" and (kind in ("kms", "c") or (kind == "s3" and "-" not in src.etag))


class _Tap:
    """Counts and hashes a body while it streams into a blob."""

    def __init__(
        self, body: AsyncIterable[bytes], algorithms: list[str], limit_bytes: int, *, md5: bool = True
    ) -> None:
        """``md5=False``: no MD5 (a part whose ETag comes from its verified checksum)."""
        self._body = body
        self._limit = limit_bytes
        self.size = 0
        # The MD5 (~40% of a large PUT's CPU) is fed on a worker thread (tierstore._hashing).
        self._md5_hash = ThreadedHash(hashlib.md5())  # noqa: S324 - the S3 ETag is an MD5 by definition
        self.hashers: dict[str, Hasher] = {a: new_hasher(a) for a in algorithms}
        self._md5 = md5

    @property
    def md5(self) -> Any:
        """The body's MD5 (read once the body has been consumed)."""
        return self._md5_hash.joined()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        hashers: list[Any] = list(self.hashers.values())
        md5 = self._md5_hash if self._md5 else None
        async for chunk in self._body:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self._limit:
                raise EntityTooLarge(f"Your proposed upload exceeds the maximum allowed size of {self._limit} bytes.")
            if md5 is not None:
                await md5.update(chunk)
            for h in hashers:
                h.update(chunk)
            yield chunk
        if md5 is not None:
            await md5.result()

    def b64(self, algorithm: str) -> str:
        return base64.b64encode(self.hashers[algorithm].digest()).decode()


class ObjectService:
    """What api/, cli/ and the embedded SDK see. Only server.py constructs one."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        *,
        clock: Clock | None = None,
        region: str = "us-east-1",
        inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
        reserve: DiskReserve | None = None,
        kms: KeyService | None = None,
        lifecycle_day_s: int = DAY_S,
        tier_store: TierStoreFactory | None = None,
    ) -> None:
        """``inline_max_bytes``: a PUT body of at most this many bytes is stored in the catalog,
        in the commit that publishes it, instead of as a blob (docs/inline.md); 0 turns it off.
        ``reserve``: space kept for deletes and aborts on a full disk (``_freeing``).
        ``kms``: the key service that wraps the data keys of SSE-S3 / SSE-KMS objects.
        ``lifecycle_day_s``: a lifecycle rule's day; the catalog plans due times with it.
        ``tier_store``: makes a tier's remote blob store from its configuration (server.py's;
        None: no tier can be reached)."""
        self.catalog = catalog
        self.blobs = blobs
        self.kms = kms
        self.reserve = reserve
        self.clock = clock or Clock()
        self.region = region
        self.inline_max_bytes = max(0, inline_max_bytes)
        # Bucket policies and Block Public Access, with the per-worker cache the authorizer reads.
        self.bucket_access = BucketAccessService(catalog)
        # The registry of remote tiers (docs/tiers.md); server.py gives it the master key.
        self.tiers = TierService(catalog, clock=self.clock.now_s)
        # Writes keep the lifecycle due index with these rules (docs/tiers.md "Lifecycle").
        self.lifecycle_day_s = lifecycle_day_s
        catalog.lifecycle_planner = LifecyclePlan(lifecycle_day_s)
        # One remote blob store per tier, and the mover (engine/_mover.py). Late-bound: server.py
        # replaces ``self.tiers`` with one that holds the master key.
        self.tier_stores = TierStores(lambda name: self.tiers.get_config(name), tier_store)  # noqa: PLW0108
        # Who this process's leases name and how long they last (engine/_leases.py); server.py
        # sets the owner to its gateway id and the length from --lease-seconds.
        self.leases = LeaseHolder()
        self._draining: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None  # drain_trash's turns, per loop
        self.mover = Mover(catalog, blobs, self.tier_stores, leases=self.leases)
        # The moves' frees, grouped: one trash pass (one catalog write) for the moves committed
        # while another pass runs; each waits for a pass that started after its commit.
        self._drain_moved: Grouped[None, None] = Grouped(self._drain_for)
        # Local copies of remote blobs and the holds that keep them (engine/_hot.py). A restore's
        # expiry is rounded up to the next midnight UTC when a day is a real one (AWS; a shortened
        # day is not rounded, as lifecycle Days).
        self.restore_round_ns = DAY_S * 1_000_000_000 if lifecycle_day_s >= DAY_S else 0
        self.hot = HotCopies(
            catalog, blobs, self.tier_stores, now_ns=self.clock.now_ns, drain=self._drain_after_commit,
            ttl_round_ns=self.restore_round_ns, owner=self.leases.owner,
        )  # fmt: skip

    # --- buckets ---------------------------------------------------------------------
    async def create_bucket(
        self,
        name: str,
        region: str | None = None,
        *,
        object_lock: bool = False,
        acl: list[list[str]] | None = None,
        ownership: str | None = None,
    ) -> BucketInfo:
        """``object_lock`` (x-amz-bucket-object-lock-enabled) turns on object lock and versioning
        in the same transaction that creates the bucket; ``acl`` (x-amz-acl, x-amz-grant-*) and
        ``ownership`` (x-amz-object-ownership) land in the same transaction too."""
        info = BucketInfo(BucketName(name), self.clock.now_ns(), region or self.region)
        props: dict[str, Any] | None = (
            {"object_lock": LockConfig().to_props(), "versioning": "Enabled"} if object_lock else None
        )
        if acl or ownership:
            props = dict(props or {})
            if acl:
                props["acl"] = acl
            if ownership:
                props["ownership"] = ownership
        try:
            await self.catalog.create_bucket(info, props)
        except BucketAlreadyOwnedByYou:
            # AWS's legacy us-east-1 behaviour: creating a bucket you already own there answers
            # 200 and changes nothing; in any other region it is BucketAlreadyOwnedByYou.
            existing = await self.catalog.get_bucket(name)
            if info.region == LEGACY_REGION and existing is not None and existing.region == LEGACY_REGION:
                return existing
            raise
        self.bucket_access.forget(name)  # a cached 'no such bucket' must not hide its ACL
        return info

    async def delete_bucket(self, name: str) -> None:
        try:
            await self.catalog.delete_bucket(name)
        finally:
            self.bucket_access.forget(name)  # its policy goes with it (other workers: within the TTL)

    async def head_bucket(self, name: str) -> BucketInfo:
        info = await self.catalog.get_bucket(name)
        if info is None:
            raise NoSuchBucket(resource=name)
        return info

    async def list_buckets(
        self, *, after: str = "", prefix: str = "", region: str | None = None, max_buckets: int | None = None
    ) -> tuple[list[BucketInfo], bool]:
        """One page of ListBuckets, by name: (buckets, truncated). ``max_buckets`` None: all."""
        if max_buckets is None:
            return await self.catalog.list_buckets(after=after, prefix=prefix, region=region), False
        page = await self.catalog.list_buckets(after=after, prefix=prefix, region=region, limit=max_buckets + 1)
        return page[:max_buckets], len(page) > max_buckets

    # --- health and usage (docs/observability.md) ----------------------------------------
    async def probe_catalog_write(self) -> None:
        """Raise unless the catalog could commit a write now (takes the write lock, changes nothing)."""
        await self.catalog.probe_write()

    async def bucket_usage(self, limit: int = 1000) -> list[BucketUsage]:
        """Objects, versions and bytes of the first ``limit`` buckets by name: one aggregate
        catalog query that reads every version row of those buckets (cache the answer)."""
        return [BucketUsage(*row) for row in await self.catalog.bucket_usage(limit)]

    async def bucket_count(self) -> int:
        return await self.catalog.bucket_count()

    async def backlog(self, bound: int) -> Backlog:
        """The shared work's backlog (metrics: cache it): the leased queues counted up to ``bound``
        rows each, the lifecycle due index, the gateways seen within a lease."""
        now_ns = time.time_ns()
        leases = await self.catalog.lease_backlog(now_ns, bound)
        gateways = await self.catalog.gateway_list(seen_after_ns=now_ns - self.leases.lease_ns)
        return Backlog(leases, await self.catalog.lifecycle_due_count(), len(gateways))

    async def tier_progress(self) -> dict[str, TierProgress]:
        """Each tier's movers' progress and backlog (metrics; read from the catalog, so every
        worker process and gateway answers the same sums)."""
        now_ns = self.clock.now_ns()
        return {name: await self.catalog.tier_progress(name, now_ns) for name in await self.catalog.tier_names()}

    # --- object lock: what may be destroyed --------------------------------------------
    def _locked_reason(self, record: VersionRecord, *, bypass_governance: bool) -> str | None:
        return locked_reason(record.meta.lock, self.clock.now_ns(), bypass_governance=bypass_governance)

    def _guard(self, record: VersionRecord, props: dict[str, Any], *, bypass_governance: bool = False) -> None:
        """Called inside the commit for every version about to be destroyed."""
        reason = self._locked_reason(record, bypass_governance=bypass_governance)
        if reason:
            raise AccessDenied(f"Access Denied because {reason}.", resource=record.meta.key)

    async def _new_lock(
        self,
        bucket: str,
        request: LockRequest | None,
        *,
        require_future: bool = True,
        props: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The lock of a version written now: explicit retention, else the bucket default.
        ``props``: the bucket's properties as the caller read them (else read now)."""
        if props is None:
            props = await self.catalog.bucket_props(bucket)
        config = LockConfig.from_props(dict(props))
        return new_version_lock(request, config, self.clock.now_ns(), require_future=require_future)

    async def _put_deciding(
        self,
        record: VersionRecord,
        props: Mapping[str, Any] | None,
        lock: LockRequest | None,
        commit: Callable[[Mapping[str, Any] | None], Awaitable[str]],
    ) -> str:
        """``commit(expect)`` of a PUT decided from ``props`` (a worker's cached copy; None: read
        by the commit itself): the commit refuses (``BucketChanged``) unless the bucket's default
        encryption and object-lock configuration are still those. Then this worker's copy is
        dropped; a changed lock default is applied and the commit run again, a changed encryption
        default (the body was stored by the old one) is answered 503 SlowDown: the client's retry
        is decided by the new one (docs/scale-out.md "The PUT path")."""
        if props is None:
            return await commit(None)
        expect = {name: props.get(name) for name in DECIDING_PROPS}
        try:
            return await commit(expect)
        except BucketChanged:
            self.bucket_access.forget(record.meta.bucket)
            now = await self.catalog.bucket_props(record.meta.bucket)
            if now.get("encryption") != expect["encryption"]:
                raise SlowDown(
                    "The bucket's default encryption changed during the request; retry it.",
                    headers={"Retry-After": "1"},
                ) from None
        record.meta.lock = await self._new_lock(record.meta.bucket, lock, props=now)
        return await commit({name: now.get(name) for name in DECIDING_PROPS})

    # --- blobs -----------------------------------------------------------------------
    async def _write_blob(
        self,
        body: AsyncIterable[bytes],
        algorithms: list[str],
        limit_bytes: int,
        *,
        md5: bool = True,
        seal: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None,
    ) -> tuple[str, _Tap]:
        """``seal``: the blob holds the sealed packages of the body (the tap sees the plaintext)."""
        blob_id = new_blob_id()
        tap = _Tap(body, algorithms, limit_bytes, md5=md5)
        stream = tap.__aiter__()
        await self.blobs.put(blob_id, stream if seal is None else seal(stream))
        return blob_id, tap

    async def _ingest(
        self,
        body: AsyncIterable[bytes],
        algorithms: list[str],
        content_length: int | None,
        seal: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None,
    ) -> tuple[_Tap, str | None, bytes | None]:
        """Read a PUT body: (tap, blob id, None) if it went to a new blob, (tap, None, bytes) if
        it ended within ``inline_max_bytes`` and goes into the catalog (docs/inline.md).
        ``seal``: the body is encrypted (docs/encryption.md): the tap sees the plaintext, what
        is stored (and compared with the threshold) is ``seal``'s ciphertext.

        The first chunks are held until the body ends or passes the threshold; a larger body
        then streams into the blob store as those same chunks followed by the rest (no join,
        no second buffer). A declared length above the threshold skips the holding."""
        tap = _Tap(body, algorithms, MAX_PUT_BYTES)
        stream = tap.__aiter__() if seal is None else seal(tap.__aiter__())
        if seal is not None and content_length is not None:
            content_length = ciphertext_size(content_length)
        limit = self.inline_max_bytes
        if limit <= 0 or (content_length is not None and content_length > limit):
            blob_id = new_blob_id()
            await self.blobs.put(blob_id, stream)
            return tap, blob_id, None
        head: list[bytes] = []
        held = 0
        async for chunk in stream:
            head.append(chunk)
            held += len(chunk)
            if held > limit:
                break
        else:
            return tap, None, b"".join(head)

        async def rest() -> AsyncIterator[bytes]:
            for chunk in head:
                yield chunk
            head.clear()
            async for chunk in stream:
                yield chunk

        blob_id = new_blob_id()
        await self.blobs.put(blob_id, rest())
        return tap, blob_id, None

    async def _discard_blobs(self, blob_ids: list[str]) -> None:
        """Best effort removal of blobs that were written but will never be published."""
        try:
            for blob_id in blob_ids:
                await self.blobs.delete(blob_id)
        except Exception:
            log.warning("could not delete unpublished blobs %s; GC will collect them", blob_ids, exc_info=True)

    async def _abandon(self, blob_id: str, exc: BaseException) -> None:
        """A blob whose publishing commit failed or was interrupted. Cancelled while the commit
        was queued or running, we cannot know whether it committed: the trash takes the blob
        only if no version references it (that job runs after the commit job, in order)."""
        if isinstance(exc, asyncio.CancelledError):
            try:
                await asyncio.shield(self.catalog.trash_add([blob_id]))
            except Exception:
                log.warning("could not queue unpublished blob %s; GC will collect it", blob_id, exc_info=True)
            return
        await asyncio.shield(self._discard_blobs([blob_id]))

    @staticmethod
    def _verify_body(tap: _Tap, opts: PutOptions) -> None:
        if opts.content_length is not None and tap.size != opts.content_length:
            raise IncompleteBody(f"Expected {opts.content_length} bytes, received {tap.size}.")
        if opts.content_md5 is not None:
            try:
                expected = base64.b64decode(opts.content_md5, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidDigest() from exc
            if len(expected) != 16:
                raise InvalidDigest()
            if expected != tap.md5.digest():
                raise BadDigest()
        if opts.checksum is not None:
            value = opts.checksum.expected()
            if value is not None:
                raw = decode_checksum(opts.checksum.algorithm, value)
                if raw != tap.hashers[opts.checksum.algorithm].digest():
                    raise BadDigest(
                        f"The {opts.checksum.algorithm.upper()} you specified did not match the calculated checksum."
                    )

    @staticmethod
    def _algorithms(checksum: ChecksumExpectation | None) -> list[str]:
        algs = [DEFAULT_CHECKSUM]
        if checksum is not None and checksum.algorithm not in algs:
            algs.append(checksum.algorithm)
        return algs

    # --- objects ---------------------------------------------------------------------
    async def _bucket_exists(self, bucket: str) -> None:
        if await self.catalog.get_bucket(bucket) is None:
            raise NoSuchBucket(resource=bucket)

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: AsyncIterable[bytes],
        opts: PutOptions | None = None,
        *,
        tags: Iterable[tuple[str, str]] = (),
        lock: LockRequest | None = None,
        acl: list[list[str]] | None = None,
        encryption: EncryptionRequest | None = None,
        props: Mapping[str, Any] | None = None,
    ) -> ObjectMeta:
        """``tags`` (x-amz-tagging) and ``lock`` (x-amz-object-lock-*) are checked before the body
        is read; ``acl``: the version's grants (api/_acl.py), none: private. ``encryption``: store
        the body encrypted (docs/encryption.md; the data key is made, and a missing or disabled
        KMS key refused, before the body is read). ``props``: the bucket's properties the caller
        decided ``encryption`` by (its worker's cached copy, api/_objects.py); the lock default
        is taken from them too, and the commit checks both are still the bucket's
        (``_put_deciding``). None: read from the catalog now."""
        opts = opts or PutOptions()
        key = ObjectKey(key)
        check_user_metadata(opts.user_meta)
        # NoSuchBucket (unless the caller's props say it exists), then the lock config
        version_lock = await self._new_lock(bucket, lock, props=props)
        if opts.content_length is not None and opts.content_length > MAX_PUT_BYTES:
            raise EntityTooLarge()
        valid_tags = validate_tags(tags)
        _check_write_condition_values(opts.conditions)
        algorithms = self._algorithms(opts.checksum)
        if encryption is not None:
            meta = await self._put_encrypted(
                bucket, key, body, opts, encryption, algorithms, valid_tags, version_lock, list(acl or []),
                props, lock,
            )  # fmt: skip
            await self._into_tier(meta)
            return meta
        tap, blob_id, inline = await self._ingest(body, algorithms, opts.content_length)
        try:
            self._verify_body(tap, opts)
            checksums = {a: tap.b64(a) for a in algorithms}
            meta = ObjectMeta(
                bucket=bucket,
                key=key,
                version_id=new_version_id(),  # the catalog makes it "null" unless versioning is on
                size_bytes=tap.size,
                etag=f'"{tap.md5.hexdigest()}"',
                modified_ns=self.clock.now_ns(),
                headers=dict(opts.headers),
                user_meta=dict(opts.user_meta),
                checksums=checksums,
                checksum_type="FULL_OBJECT",
                storage_class=opts.storage_class,
                tags=valid_tags,
                lock=version_lock,
                acl=list(acl or []),
            )
            if blob_id is None:
                record = VersionRecord(meta=meta, inline_data=inline)
            else:
                record = VersionRecord(meta=meta, blobs=[BlobRef(blob_id, tap.size)])
            check = _write_conditions(opts.conditions, key) if _conditional(opts.conditions) else None

            async def commit(expect: Mapping[str, Any] | None) -> str:
                return await self.catalog.put_version(record, check=check, guard=self._guard, expect=expect)

            meta.version_id = await self._put_deciding(record, props, lock, commit)
        except BaseException as exc:
            if blob_id is not None:
                await self._abandon(blob_id, exc)
            raise
        await self._into_tier(meta)
        return meta

    async def _into_tier(self, meta: ObjectMeta) -> None:
        """A version just written in a tier's class: move its bytes there before answering.

        Written locally first (the body's ETag, checksums and version id are in the remote
        object's metadata, and are known only once the body is in: docs/tiers.md "Writes to a
        tier class"). If the tier does not answer, the version stays on the local drives with
        the tier's class (a durable write is not turned into an error) and a later transition
        moves it."""
        if meta.storage_class not in await self.tiers.class_names():
            return
        try:
            if not await self.transition(meta.bucket, meta.key, meta.version_id, meta.storage_class):
                # Nothing to move (its blobs were there already): it waits for nothing. (A
                # commit that moved it dropped the row the write added, in its transaction.)
                await self.catalog.tier_pending_forget(meta.bucket, meta.key, meta.version_id)
        except TierUnavailable:
            log.warning(
                "tier %s did not answer: %s/%s (%s) stays local for now",
                meta.storage_class, meta.bucket, meta.key, meta.version_id, exc_info=True,
            )  # fmt: skip
            # The worker moves it once the tier is back (Mover.retry_pending): the row the write
            # added (due in 10 min, for a crash before this) is due in 2 s now.
            next_ns = self.clock.now_ns() + backoff_ns(1)
            await self.catalog.tier_pending_add(meta.bucket, meta.key, meta.version_id, meta.storage_class, next_ns)

    async def retry_tier_writes(self) -> dict[str, int]:
        """The worker's pass over writes that stayed local because their tier did not answer
        (docs/tiers.md "Writes to a tier class"); the local bytes of what moved are freed."""
        counts = await self.mover.retry_pending(self.clock.now_ns())
        if counts["moved"]:
            await self._drain_after_commit()
        return counts

    async def transition(self, bucket: str, key: str, version_id: str, tier: str) -> bool:
        """Move version ``version_id`` of ``key`` to ``tier`` (docs/tiers.md "The mover"):
        idempotent, crash-safe; False when there was nothing to do. The local bytes are freed
        after the commit."""
        moved = await self.mover.transition(bucket, key, version_id, tier)
        if moved:
            await self._drain_moved(None)
        return moved

    async def transition_many(self, tier: str, versions: Sequence[tuple[str, str, str]]) -> list[bool | Exception]:
        """Versions ``(bucket, key, version_id)`` to ``tier``, each as ``transition`` (its result
        or its exception, in order): the lifecycle worker's page, an admin batch. In waves of
        ``MOVE_WAVE``: each wave's commits in one catalog transaction (``Mover.transition_many``),
        then one trash pass, so local bytes are freed as waves commit, not once a whole page of
        large objects has been copied."""
        results: list[bool | Exception] = []
        for start in range(0, len(versions), MOVE_WAVE):
            wave = await self.mover.transition_many(tier, versions[start : start + MOVE_WAVE])
            if any(r is True for r in wave):
                await self._drain_moved(None)
            results += wave
        return results

    async def _drain_for(self, callers: list[None]) -> list[None]:
        await self._drain_after_commit()
        return [None] * len(callers)

    # --- hot copies (docs/tiers.md "Hot copies") ----------------------------------------------
    async def hold_blobs(
        self,
        holder: str,
        blob_ids: Sequence[str],
        *,
        expires_ns: int | None = None,
        ttl_ns: int | None = None,
        renew: bool = True,
    ) -> Literal["new", "ongoing", "done"]:
        """Hold blobs by id for ``holder`` (``pin:<job>``, ``restore:...``) until ``expires_ns``
        (None: until released) or ``ttl_ns`` after the copy is done (rounded up to the next
        midnight UTC when a lifecycle day is a real day: only restores give ``ttl_ns``); what the
        holder was before. ``fill_hold`` (or the server's worker) makes the local copies."""
        return await self.catalog.hot_hold(
            holder, blob_ids, now_ns=self.clock.now_ns(), expires_ns=expires_ns, ttl_ns=ttl_ns, renew=renew,
            round_ns=self.restore_round_ns,
        )  # fmt: skip

    async def fill_hold(self, holder: str, *, progress: Callable[[int, int], None] | None = None) -> FillResult:
        """Copy ``holder``'s remote blobs locally now (parallel, resumable, verified), holding
        the worker's lease on it meanwhile (so the server's worker does not copy it too)."""
        return await self.hot.fill(holder, progress=progress, lease_ns=int(self.hot.lease_s * 1e9))

    async def release_hold(self, holder: str) -> bool:
        """Drop ``holder``; the copies no other live hold needs are freed. False if unknown."""
        return await self.hot.release(holder)

    async def hold_info(self, holder: str) -> HoldInfo | None:
        return await self.catalog.hot_request(holder)

    async def list_holds(self, prefix: str = "") -> list[HoldInfo]:
        """Holders (names starting with ``prefix``) with their byte size and what is copied."""
        return await self.catalog.hot_list(prefix)

    async def sweep_holds(self) -> dict[str, int]:
        """The worker's pass: drop expired holds, free unneeded copies, resume ongoing copies."""
        return await self.hot.run_once()

    # --- RestoreObject (docs/tiers.md "Restore") ----------------------------------------------
    async def restore_object(self, bucket: str, key: str, version_id: str | None, days: int) -> bool:
        """Bring a version in a restore-required tier back for ``days`` (lifecycle days): True if
        a restore started (202: the server's hot-copy worker makes the copy), False if it was
        restored already (200: its expiry is now + ``days``). Either way the expiry is rounded up
        to the next midnight UTC, as AWS does (unless a day is shortened: ``due_after``; a new
        copy's counts from the end of the copy). ``RestoreAlreadyInProgress`` while one runs;
        ``InvalidObjectState`` if no blob of the version is in a restore-required tier."""
        record = await self._latest(bucket, key, version_id)
        if not await self._archived(record.blobs):
            raise InvalidObjectState("Restore is not allowed for the object's current storage class.", resource=key)
        holder = restore_holder(bucket, key, record.meta.version_id)
        ids = [b.blob_id for b in record.blobs]
        ttl_ns = days * self.lifecycle_day_s * 1_000_000_000
        state = await self.catalog.hot_state(holder)
        if state is not None and state[0] is None:
            raise RestoreAlreadyInProgress(resource=key)
        if state is not None:  # restored: a new expiry from now
            expires_ns = due_after(self.clock.now_ns(), days, self.lifecycle_day_s)
            before = await self.hold_blobs(holder, ids, expires_ns=expires_ns)
        else:
            before = await self.hold_blobs(holder, ids, ttl_ns=ttl_ns, renew=False)
        if before == "ongoing":
            raise RestoreAlreadyInProgress(resource=key)
        return before == "new"

    async def restore_status(
        self, bucket: str, key: str, version_id: str | None, storage_class: str
    ) -> tuple[bool, int | None] | None:
        """For ``x-amz-restore`` and listings' ``RestoreStatus``: (ongoing, expiry) of the
        version's restore (``version_id`` None: the current one), or None (no restore, or not in
        a restore-required tier). A set lookup for every other object; a point read of the
        catalog for an archived one (two for the current version by key)."""
        if storage_class == "STANDARD" or storage_class not in await self.tiers.class_names():
            return None
        try:
            if not (await self.tier_stores.config(storage_class)).restore_required:
                return None
        except NoSuchEntity:
            return None
        if version_id is None:
            record = await self.catalog.get_latest(bucket, key)
            if record is None:
                return None
            version_id = record.meta.version_id
        state = await self.catalog.hot_state(restore_holder(bucket, key, version_id))
        if state is None:
            return None
        done_ns, expires_ns = state
        return done_ns is None, expires_ns

    async def _archived(self, refs: Iterable[BlobRef]) -> bool:
        for r in refs:
            if r.tier is not None and (await self.tier_stores.config(r.tier)).restore_required:
                return True
        return False

    async def _remote_store(self, tier: str) -> BlobStore:
        try:
            return await self.tier_stores.store(tier)
        except NoSuchEntity as exc:  # tier rm refuses while a blob names it: cannot happen
            raise InternalError(f"The tier {tier} holding an object's bytes is not registered.") from exc

    async def _check_readable(self, refs: Iterable[BlobRef], what: str) -> None:
        """InvalidObjectState if a blob is in a restore-required (archive) tier without a local
        copy (a restore's, or a pin's: docs/tiers.md "Hot copies")."""
        for ref in refs:
            if ref.tier is not None and not ref.cached and (await self.tier_stores.config(ref.tier)).restore_required:
                raise InvalidObjectState(resource=what)

    async def read_refs(
        self, refs: list[BlobRef], offset: int, length: int, *, verify: bool = True, what: str = ""
    ) -> AsyncIterator[bytes]:
        """Bytes of blobs named by id outside a version read (dataset and model manifests): their
        tiers are looked up first (one query), then read as ``stream_blobs`` does (a blob with
        a local copy from it, or from its tier if the copy was freed since)."""
        tiers = await self.catalog.blob_tiers([r.blob_id for r in refs]) if refs else {}
        if tiers:
            refs = [
                r if (t := tiers.get(r.blob_id)) is None else BlobRef(r.blob_id, r.size_bytes, t.tier, t.cached)
                for r in refs
            ]
            await self._check_readable(refs, what)
        return stream_blobs(self.blobs, refs, offset, length, verify=verify, remote=self._remote_store)

    async def _put_encrypted(
        self,
        bucket: str,
        key: str,
        body: AsyncIterable[bytes],
        opts: PutOptions,
        encryption: EncryptionRequest,
        algorithms: list[str],
        tags: dict[str, str],
        version_lock: dict[str, Any],
        acl: list[list[str]],
        props: Mapping[str, Any] | None,
        lock: LockRequest | None,
    ) -> ObjectMeta:
        """PutObject of an encrypted body (docs/encryption.md): a fresh data key, the body sealed
        in packages on its way into the blob (or the inline body), MD5 and checksums over the
        plaintext; the version id chosen before the commit so the binding MAC covers it."""
        data_key, doc = await new_data_key(self.kms, encryption, bucket, key)
        prefix = new_nonce_prefix()

        def seal(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            return seal_chunks(chunks, data_key, prefix)

        tap, blob_id, inline = await self._ingest(body, algorithms, opts.content_length, seal)
        try:
            self._verify_body(tap, opts)
            meta = ObjectMeta(
                bucket=bucket,
                key=key,
                version_id=await self._next_version_id(bucket, props),
                size_bytes=tap.size,
                etag=encrypted_etag(doc, data_key, tap.md5.digest()),
                modified_ns=self.clock.now_ns(),
                headers=dict(opts.headers),
                user_meta=dict(opts.user_meta),
                checksums={a: tap.b64(a) for a in algorithms},
                checksum_type="FULL_OBJECT",
                storage_class=opts.storage_class,
                tags=tags,
                lock=version_lock,
                acl=acl,
            )
            if blob_id is None:
                record = VersionRecord(meta=meta, inline_data=inline)
            else:
                record = VersionRecord(meta=meta, blobs=[BlobRef(blob_id, ciphertext_size(tap.size))])

            def bound(version_id: str) -> dict[str, Any]:
                return bind(doc, data_key, bucket=bucket, key=key, version_id=version_id, size=tap.size,
                            nonce_prefix=prefix)  # fmt: skip

            async def commit(fixed: bool) -> str:
                async def deciding(expect: Mapping[str, Any] | None) -> str:
                    return await self.catalog.put_version(
                        record, check=_write_conditions(opts.conditions, key), guard=self._guard,
                        fixed_version_id=fixed, expect=expect,
                    )  # fmt: skip

                return await self._put_deciding(record, props, lock, deciding)

            await self._commit_bound(meta, bound, commit)
        except BaseException as exc:
            if blob_id is not None:
                await self._abandon(blob_id, exc)
            raise
        return meta

    async def _next_version_id(self, bucket: str, props: Mapping[str, Any] | None = None) -> str:
        """The id the catalog will give a version written now: new with versioning Enabled,
        else ``null`` (it refuses, ``VersioningChanged``, if that changes before the commit).
        ``props``: the bucket's properties as the caller read them (else read now)."""
        if props is None:
            props = await self.catalog.bucket_props(bucket)
        enabled = props.get("versioning") == "Enabled"
        return new_version_id() if enabled else NULL_VERSION

    async def _latest(
        self, bucket: str, key: str, version_id: str | None = None, *, data: bool = False
    ) -> VersionRecord:
        """The version a read addresses: the current one, or ``version_id``; ``data`` also loads
        an inline body (verified).

        A current delete marker reads as NoSuchKey; addressing a delete marker by id is
        MethodNotAllowed; both carry ``x-amz-delete-marker`` as S3 does."""
        if version_id is not None:
            check_version_id(version_id)
            record = await self.catalog.get_version(bucket, key, version_id, data=data)
            if record is None:
                await self._bucket_exists(bucket)
                raise NoSuchVersion(resource=key)
            if record.is_delete_marker:
                raise MethodNotAllowed(
                    "The specified method is not allowed against this resource.",
                    resource=key,
                    headers=_marker_headers(record.meta),
                )
            return record
        record = await self.catalog.get_latest(bucket, key, data=data)
        if record is None:
            await self._bucket_exists(bucket)
            raise NoSuchKey(resource=key)
        if record.is_delete_marker:
            raise NoSuchKey(resource=key, headers=_marker_headers(record.meta))
        return record

    async def version_record(self, bucket: str, key: str, version_id: str | None = None) -> VersionRecord:
        """The catalog record of the version a read of ``key`` addresses (current, or
        ``version_id``), with where its bytes are: what a dataset row pins (engine/_datasets.py)."""
        return await self._latest(bucket, key, version_id)

    async def _copy_source(self, bucket: str, key: str, version_id: str | None) -> VersionRecord:
        """The version a copy reads (with its inline body, if it has one). S3 answers 400 when
        ``versionId`` names a delete marker."""
        try:
            return await self._latest(bucket, key, version_id, data=True)
        except MethodNotAllowed as exc:
            raise InvalidRequest(
                "The source of a copy request may not specifically refer to a delete marker by version id.",
                resource=key,
            ) from exc

    async def head_object(self, bucket: str, key: str, opts: GetOptions | None = None) -> GetResult:
        opts = opts or GetOptions()
        record = await self._latest(bucket, key, opts.version_id)
        return self._select(record, opts)

    def _select(self, record: VersionRecord, opts: GetOptions) -> GetResult:
        if record.meta.encryption or opts.customer_key is not None:  # (nothing to check otherwise)
            check_read_key(record.meta.encryption, opts.customer_key)  # SSE-C: before anything else
        result = self._selected_range(record, opts)
        result.bucket_versioning = record.bucket_versioning
        return result

    @staticmethod
    def _selected_range(record: VersionRecord, opts: GetOptions) -> GetResult:
        meta = record.meta
        evaluate_read_conditions(opts.conditions, meta)
        size = meta.size_bytes
        parts_count = len(meta.parts) if meta.parts else None
        if opts.part_number is not None:
            if opts.byte_range is not None:
                raise InvalidRequest("Cannot specify both Range header and partNumber query parameter.")
            sizes = meta.parts or [size]
            if not 1 <= opts.part_number <= len(sizes):
                fields = {"PartNumberRequested": str(opts.part_number), "ActualPartCount": str(len(sizes))}
                raise InvalidPartNumber(fields=fields)
            offset = sum(sizes[: opts.part_number - 1])
            # S3 answers a part with 206 and its Content-Range, also part 1 of an object stored
            # in one PUT (the AWS CRT reads the object's size from it); an empty object has no
            # range to name, so it is a plain 200.
            return GetResult(meta, offset, sizes[opts.part_number - 1], size > 0, None, parts_count)
        if opts.byte_range is None:
            return GetResult(meta, 0, size, False, None, parts_count)
        try:
            offset, length = opts.byte_range.resolve(size)
        except InvalidRange as exc:
            # What S3 sends with a 416: the size (the AWS CRT learns from it that an object is
            # empty, having asked for its first part with a Range) and Content-Range: bytes */size.
            raise InvalidRange(
                headers={"content-range": f"bytes */{size}"}, fields={"ActualObjectSize": str(size)}
            ) from exc
        return GetResult(meta, offset, length, True, None, parts_count)

    async def get_object(self, bucket: str, key: str, opts: GetOptions | None = None) -> GetResult:
        opts = opts or GetOptions()
        # The current version (most reads): one coroutine, the catalog's read; a missing key, a
        # delete marker or a version by id go through ``_latest`` (and its errors).
        record = await self.catalog.get_latest(bucket, key, data=True) if opts.version_id is None else None
        if record is None or record.is_delete_marker:
            record = await self._latest(bucket, key, opts.version_id, data=True)
        result = self._select(record, opts)
        if record.blobs:  # an inline body is local: nothing to check (the 4 KiB GET path)
            await self._check_readable(record.blobs, key)
        if record.meta.encryption:
            body = await self._decrypted(record, result.offset, result.length, opts.customer_key)
        elif record.inline_id is not None:  # the 4 KiB GET: loaded and verified by the catalog read
            assert record.inline_data is not None, "inline body not loaded"
            body = record.inline_data[result.offset : result.offset + result.length]
        else:
            body = self._stream(record, result.offset, result.length)
        if isinstance(body, bytes):
            result.data, result.body = body, _InMemory(body)
        else:
            result.body = body
        return result

    async def _decrypted(
        self, record: VersionRecord, offset: int, length: int, customer_key: bytes | None
    ) -> AsyncIterator[bytes] | bytes:
        """Plaintext [offset, offset+length) of an encrypted version. The data key is unwrapped
        and the binding verified here, before the answer starts (a key service error or moved
        metadata is a clean error status); the packages are opened as the body streams, or, for
        an inline body, here too (one call, the bytes returned: a damaged package is a clean 500
        as well)."""
        meta = record.meta
        data_key, streams = await open_data_key(
            self.kms, meta.encryption, bucket=meta.bucket, key=meta.key, version_id=meta.version_id,
            size=meta.size_bytes, part_sizes=meta.parts, customer_key=customer_key,
        )  # fmt: skip
        name = (meta.bucket, meta.key, meta.version_id)
        package_bytes = int(meta.encryption["ps"])
        if record.inline_id is not None:  # the 4 KiB GET
            assert record.inline_data is not None, "inline body not loaded"
            plain = open_in_memory(
                data_key, streams, record.inline_data, offset, length, package_bytes=package_bytes, name=name
            )
            if plain is not None:
                return plain

        def read(start: int, size: int, verify: bool) -> AsyncGenerator[bytes, None]:
            return self._stored_bytes(record, start, size, verify=verify)

        return open_range(read, data_key, streams, offset, length, package_bytes=package_bytes, name=name)

    async def _stored_bytes(
        self, record: VersionRecord, offset: int, length: int, *, verify: bool = True
    ) -> AsyncGenerator[bytes, None]:
        """Stored bytes [offset, offset+length) of a version as they are on disk (ciphertext for
        an encrypted one): its inline body or the concatenation of its blobs (``verify``: the
        blob layer's checksums; an inline body is always checked when the catalog loads it)."""
        if record.inline_id is not None:
            assert record.inline_data is not None, "inline body not loaded"
            if length:
                yield record.inline_data[offset : offset + length]
            return
        stream = stream_blobs(self.blobs, record.blobs, offset, length, verify=verify, remote=self._remote_store)
        async for chunk in stream:
            yield chunk

    def _stream(self, record: VersionRecord, offset: int, length: int) -> AsyncIterator[bytes]:
        """Bytes [offset, offset+length) of a plain version: its inline body (loaded and verified
        by the catalog read), or the concatenation of its blobs (the blob store verifies)."""
        if record.meta.encryption:  # never ciphertext as if it were the object (copies: next slice)
            raise NotImplementedOperation("Reading an encrypted object this way is not implemented yet.")
        return self._stored_bytes(record, offset, length)

    async def read_object(self, bucket: str, key: str, opts: GetOptions | None = None) -> tuple[ObjectMeta, bytes]:
        """Convenience for small objects: the whole (selected) body in memory."""
        result = await self.get_object(bucket, key, opts)
        assert result.body is not None
        return result.meta, b"".join([c async for c in result.body])

    async def delete_object(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
        bypass_governance: bool = False,
    ) -> DeleteResult:
        """S3 DeleteObject: idempotent. Without ``version_id``: removes the object (never versioned)
        or adds a delete marker (versioning on or suspended). With it: destroys that version."""
        if version_id is not None:
            check_version_id(version_id)

        def check(current: VersionRecord | None) -> None:
            if if_match is not None:
                if current is None or current.is_delete_marker:
                    raise NoSuchKey(resource=key)
                if not _etag_matches(if_match, current.meta.etag):
                    raise PreconditionFailed(resource=key)

        marker = ObjectMeta(
            bucket=bucket,
            key=key,
            version_id=new_version_id(),
            size_bytes=0,
            etag="",
            modified_ns=self.clock.now_ns(),
            is_delete_marker=True,
        )
        guard = functools.partial(self._guard, bypass_governance=bypass_governance)
        record, added_marker = await self._freeing(
            lambda: self.catalog.delete_object(
                bucket, key, version_id=version_id, marker=marker, check=check, guard=guard
            )
        )
        await self._drain_after_commit()
        if added_marker:
            assert record is not None
            return DeleteResult(version_id=record.meta.version_id, delete_marker=True)
        if version_id is not None:
            return DeleteResult(version_id=version_id, delete_marker=bool(record and record.is_delete_marker))
        return DeleteResult(version_id=None, delete_marker=False)

    # --- metadata query --------------------------------------------------------------
    async def query(self, bucket: str, text: str, cursor: str | None = None) -> tuple[list[ObjectMeta], str | None]:
        """One page of a metadata query over the current objects of ``bucket`` (docs/query.md)."""
        await self._bucket_exists(bucket)
        records, next_cursor = await self.catalog.query(bucket, text, cursor)
        return [r.meta for r in records], next_cursor

    # --- versioning ------------------------------------------------------------------
    async def get_bucket_versioning(self, bucket: str) -> str | None:
        """ "Enabled", "Suspended", or None for a bucket that was never versioned."""
        status = (await self.catalog.bucket_props(bucket)).get("versioning")
        return str(status) if status else None

    async def set_bucket_versioning(self, bucket: str, status: str) -> None:
        if status not in ("Enabled", "Suspended"):
            raise MalformedXML("Versioning status must be Enabled or Suspended.")

        def update(props: dict[str, Any]) -> dict[str, Any]:
            if status == "Suspended" and props.get("object_lock"):
                raise InvalidBucketState("Versioning cannot be suspended on a bucket with Object Lock.")
            props["versioning"] = status
            return props

        await self.catalog.update_bucket_props(bucket, update)

    async def _marker_seq(self, bucket: str, key: str, version_id: str) -> int | None:
        """Where a listing resumes after (key, version_id): versions of ``key`` with a lower seq
        follow. A marker version deleted since the last page (a client deleting each page before
        fetching the next) keeps its place: a time-ordered id sits among the key's versions by
        its creation time; a vanished ``null`` version has no time, so the listing resumes at the
        key's newest remaining version (None) — nothing is skipped."""
        seq = await self.catalog.version_seq(bucket, key, version_id)
        if seq is not None:
            return seq
        if version_id == NULL_VERSION:
            return None
        created_ns = min(int(version_id[:16], 16), 2**63 - 1)  # a made-up id may lie past SQLite's range
        return await self.catalog.seq_older_than(bucket, key, version_id, created_ns)

    async def list_object_versions(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        version_id_marker: str = "",
        max_keys: int = 1000,
    ) -> VersionsPage:
        """One page of ListObjectVersions: keys in byte order, each key's versions newest first."""
        await self._bucket_exists(bucket)
        if version_id_marker and not key_marker:
            raise InvalidArgument("A version-id marker cannot be specified without a key marker.")
        prefix_b, delim_b = prefix.encode(), delimiter.encode()
        below = prefix_b + _MAX_KEY_SENTINEL
        after_key: bytes = prefix_b
        after_seq: int | None = None
        if key_marker:
            km = key_marker.encode()
            if version_id_marker:
                check_version_id(version_id_marker)
                seq = await self._marker_seq(bucket, key_marker, version_id_marker)
                after_key, after_seq = max(km, prefix_b), seq if km >= prefix_b else None
            else:
                # Everything of key_marker itself is skipped.
                after_key, after_seq = (km, 0) if km >= prefix_b else (prefix_b, None)
            if _names_common_prefix(km, prefix_b, delim_b):
                after_key, after_seq = km + _MAX_KEY_SENTINEL, None
        page = VersionsPage([], [], False, None, None)
        if max_keys == 0:
            return page
        count = 0
        # A scan after a common prefix asks for a few rows first: the next entry is often another
        # common prefix, and a full batch would read up to 1,000 rows under it only to skip them.
        batch = 1001
        while True:
            rows = await self.catalog.scan_versions(bucket, after_key, after_seq, below, batch)
            if not rows:
                return page
            restart = False
            for record, seq, is_latest in rows:
                key_b = record.meta.key.encode()
                if delim_b:
                    idx = key_b.find(delim_b, len(prefix_b))
                    if idx >= 0:
                        cp = key_b[: idx + len(delim_b)].decode()
                        if count >= max_keys:
                            page.is_truncated = True
                            return page
                        page.common_prefixes.append(cp)
                        page.next_key_marker, page.next_version_id_marker = cp, None
                        count += 1
                        after_key, after_seq = cp.encode() + _MAX_KEY_SENTINEL, None
                        restart = True
                        batch = _AFTER_PREFIX_BATCH
                        break
                if count >= max_keys:
                    page.is_truncated = True
                    return page
                page.versions.append((record.meta, is_latest))
                page.next_key_marker, page.next_version_id_marker = record.meta.key, record.meta.version_id
                count += 1
                after_key, after_seq = key_b, seq
            if not restart:
                if len(rows) < batch:
                    return page
                batch = 1001

    async def copy_object(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        opts: CopyOptions | None = None,
        *,
        src_version_id: str | None = None,
        encryption: EncryptionRequest | None = None,
        source_key: bytes | None = None,
    ) -> CopyResult:
        """Server-side copy. The data of a plain copy is shared (blob reference counts), not
        re-written. ``encryption``: the destination is encrypted so (api/ applies the destination
        bucket's default, never the source's encryption); ``source_key``: an SSE-C source's key.
        A copy from or to an encrypted object re-writes the body: decrypted from the source,
        sealed under the destination's own new data key (docs/encryption.md, "Copies")."""
        opts = opts or CopyOptions()
        dst_key = ObjectKey(dst_key)
        await self._bucket_exists(dst_bucket)
        src = await self._copy_source(src_bucket, src_key, src_version_id)
        check_read_key(src.meta.encryption, source_key)  # SSE-C source: its key, before anything else
        await self._check_readable(src.blobs, src_key)  # an archived source is not copied (AWS)
        _copy_source_conditions(opts.source_conditions, src.meta)
        # Copying a named version over its own key is how S3 restores an old version: allowed.
        same = src_bucket == dst_bucket and src_key == dst_key and src_version_id is None
        unchanged = opts.storage_class is None and opts.checksum_algorithm is None and encryption is None
        if same and not opts.replace_metadata and unchanged:
            raise InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without changing"
                " the object's metadata, storage class, website redirect location or encryption attributes."
            )
        if opts.replace_metadata:
            check_user_metadata(opts.user_meta)
            headers, user_meta = dict(opts.headers), dict(opts.user_meta)
        else:
            headers, user_meta = dict(src.meta.headers), dict(src.meta.user_meta)
        tags = validate_tags(opts.tags) if opts.replace_tags else dict(src.meta.tags)
        version_lock = await self._new_lock(dst_bucket, opts.lock)
        checksums = dict(src.meta.checksums)
        checksum_type = src.meta.checksum_type
        rewrite = bool(src.meta.encryption) or encryption is not None
        if opts.checksum_algorithm and opts.checksum_algorithm not in checksums and not rewrite:
            checksums[opts.checksum_algorithm] = await self._checksum_of(src, opts.checksum_algorithm)
            checksum_type = "FULL_OBJECT"
        meta = replace(
            src.meta,
            bucket=dst_bucket,
            key=dst_key,
            version_id=new_version_id(),
            modified_ns=self.clock.now_ns(),
            headers=headers,
            user_meta=user_meta,
            checksums=checksums,
            checksum_type=checksum_type,
            storage_class=opts.storage_class or src.meta.storage_class,
            tags=tags,
            lock=version_lock,
            acl=list(opts.acl),
            encryption={},
        )
        if rewrite and encryption is not None and _shares_under_customer_key(src.meta, encryption):
            meta = await self._copy_rewrapped(src, meta, opts, encryption, source_key)
            await self._into_tier(meta)
            return CopyResult(meta=meta, source_version_id=src.meta.version_id)
        if rewrite:
            meta = await self._copy_rewritten(src, meta, opts, encryption, source_key)
            await self._into_tier(meta)
            return CopyResult(meta=meta, source_version_id=src.meta.version_id)
        # Blobs are shared; an inline body (a few KiB, already read and verified) is copied.
        if src.inline_id is not None:
            record = VersionRecord(meta=meta, inline_data=src.inline_data)
        else:
            record = VersionRecord(meta=meta, blobs=list(src.blobs))
        meta.version_id = await self.catalog.put_version(
            record,
            check=_write_conditions(opts.conditions, dst_key),
            guard=self._guard,
            # The source may have been deleted since we read it; its blobs must still be live.
            shared_gone=lambda: NoSuchKey(resource=src_key),
        )
        await self._drain_after_commit()
        await self._into_tier(meta)
        return CopyResult(meta=meta, source_version_id=src.meta.version_id)

    async def _copy_rewrapped(
        self,
        src: VersionRecord,
        meta: ObjectMeta,
        opts: CopyOptions,
        encryption: EncryptionRequest,
        source_key: bytes | None,
    ) -> ObjectMeta:
        """A copy from an encrypted object to SSE-C that shares the source's bytes: the source's
        data key (unwrapped, its binding checked) is wrapped under the customer's key for the
        destination and the destination's MAC binds the same stream layout to its own row.
        Nothing is sealed again (no new nonce under that key): O(1) whatever the size, which is
        how an SSE-C key is rotated (a copy onto itself with the new key). The ETag is the
        source's keyed one (same key, same bytes), or keyed from an SSE-S3 source's MD5."""
        s = src.meta
        data_key, streams = await open_data_key(
            self.kms, s.encryption, bucket=s.bucket, key=s.key, version_id=s.version_id, size=s.size_bytes,
            part_sizes=s.parts, customer_key=source_key,
        )  # fmt: skip
        doc = customer_doc(encryption, data_key, bucket=meta.bucket, key=meta.key)
        if s.encryption["kind"] == "s3":  # the MD5 of a single stream's plaintext: keyed now
            meta.etag = encrypted_etag(doc, data_key, bytes.fromhex(s.etag.strip('"')))
        layout = [(st.part_number, st.plaintext_size, base64.b64encode(st.nonce_prefix).decode()) for st in streams]

        def bound(version_id: str) -> dict[str, Any]:
            if "parts" in s.encryption:
                return bind_parts(doc, data_key, bucket=meta.bucket, key=meta.key, version_id=version_id, parts=layout)
            return bind(doc, data_key, bucket=meta.bucket, key=meta.key, version_id=version_id, size=s.size_bytes,
                        nonce_prefix=streams[0].nonce_prefix)  # fmt: skip

        # Blobs are shared; an inline body (its ciphertext, already read and verified) is copied.
        if src.inline_id is not None:
            record = VersionRecord(meta=meta, inline_data=src.inline_data)
        else:
            record = VersionRecord(meta=meta, blobs=list(src.blobs))

        async def commit(fixed: bool) -> str:
            return await self.catalog.put_version(
                record, check=_write_conditions(opts.conditions, meta.key), guard=self._guard,
                shared_gone=lambda: NoSuchKey(resource=s.key), fixed_version_id=fixed,
            )  # fmt: skip

        meta.version_id = await self._next_version_id(meta.bucket)
        await self._commit_bound(meta, bound, commit)
        await self._drain_after_commit()
        return meta

    async def _copy_rewritten(
        self,
        src: VersionRecord,
        meta: ObjectMeta,
        opts: CopyOptions,
        encryption: EncryptionRequest | None,
        source_key: bytes | None,
    ) -> ObjectMeta:
        """A copy whose source or destination is encrypted: the source's plaintext (decrypted,
        every package verified) streams into a new blob or inline body, sealed under a new data
        key when the destination is encrypted. ETag as a PUT of the same bytes would get (SSE-S3
        and plain: the MD5 of the plaintext; SSE-KMS/SSE-C: keyed), except that a plain or SSE-S3
        source keeps its own (a multipart one its ``-N`` form) for a plain or SSE-S3 destination."""
        algorithms = [a for a in (opts.checksum_algorithm,) if a and a not in meta.checksums]
        size = src.meta.size_bytes
        plain = await self._plaintext(src, 0, size, source_key)
        data_key: bytes | None = None
        doc: dict[str, Any] = {}
        prefix = b""
        seal: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None
        if encryption is not None:
            data_key, doc = await new_data_key(self.kms, encryption, meta.bucket, meta.key)
            prefix = new_nonce_prefix()
            seal = functools.partial(seal_chunks, data_key=data_key, nonce_prefix=prefix)

        tap, blob_id, inline = await self._ingest(plain, algorithms, size, seal)
        try:
            if tap.size != size:
                raise InternalError(f"The copy source {src.meta.key} ended early.")
            for a in algorithms:
                meta.checksums[a] = tap.b64(a)
                meta.checksum_type = "FULL_OBJECT"
            keeps_etag = src.meta.encryption.get("kind", "s3") == "s3" and doc.get("kind", "s3") == "s3"
            if not keeps_etag:
                md5 = tap.md5.digest()
                meta.etag = encrypted_etag(doc, data_key, md5) if data_key is not None else f'"{md5.hex()}"'
            if blob_id is None:
                record = VersionRecord(meta=meta, inline_data=inline)
            else:
                stored = ciphertext_size(tap.size) if data_key is not None else tap.size
                record = VersionRecord(meta=meta, blobs=[BlobRef(blob_id, stored)])

            async def commit(fixed: bool) -> str:
                return await self.catalog.put_version(
                    record, check=_write_conditions(opts.conditions, meta.key), guard=self._guard,
                    fixed_version_id=fixed,
                )  # fmt: skip

            if data_key is not None:
                dk = data_key
                meta.version_id = await self._next_version_id(meta.bucket)

                def bound(version_id: str) -> dict[str, Any]:
                    return bind(doc, dk, bucket=meta.bucket, key=meta.key, version_id=version_id, size=size,
                                nonce_prefix=prefix)  # fmt: skip

                await self._commit_bound(meta, bound, commit)
            else:
                meta.version_id = await commit(False)
        except BaseException as exc:
            if blob_id is not None:
                await self._abandon(blob_id, exc)
            raise
        await self._drain_after_commit()
        return meta

    async def _plaintext(
        self, record: VersionRecord, offset: int, length: int, customer_key: bytes | None
    ) -> AsyncIterator[bytes]:
        """Plaintext [offset, offset+length) of any version (a copy source): decrypted (its
        data key unwrapped and the binding checked now), or as stored. ``check_read_key`` first."""
        if record.meta.encryption:
            body = await self._decrypted(record, offset, length, customer_key)
            return _InMemory(body) if isinstance(body, bytes) else body
        return self._stream(record, offset, length)

    async def _checksum_of(self, record: VersionRecord, algorithm: str) -> str:
        h = new_hasher(algorithm)
        async for chunk in self._stream(record, 0, record.meta.size_bytes):
            h.update(chunk)
        return base64.b64encode(h.digest()).decode()

    # --- listing ---------------------------------------------------------------------
    async def list_objects(self, bucket: str, opts: ListOptions) -> ListPage:
        """One page of the live keys in byte order, with delimiter roll-up into common prefixes."""
        await self._bucket_exists(bucket)
        if opts.max_keys < 0:
            raise InvalidArgument("max-keys must be non-negative")
        prefix_b = opts.prefix.encode()
        delim_b = opts.delimiter.encode()
        below = prefix_b + _MAX_KEY_SENTINEL
        # The scan bound is exclusive unless we start at the prefix itself (a key may equal it).
        after, inclusive = prefix_b, True
        start_b = opts.start_after.encode()
        if start_b >= prefix_b:
            after, inclusive = start_b, False
            # After a common prefix was returned as the marker, skip everything under it.
            if _names_common_prefix(start_b, prefix_b, delim_b):
                after = start_b + _MAX_KEY_SENTINEL
        entries: list[ListEntry] = []
        prefixes: list[str] = []
        limit = opts.max_keys
        if limit == 0:
            return ListPage([], [], False, None)
        batch = min(limit + 1, 1001)
        last: str | None = None
        if not delim_b and batch == limit + 1:  # no roll-up, one query: one comprehension (a hot path)
            rows = await self.catalog.scan_latest(bucket, after, below, batch, inclusive=inclusive)
            truncated = len(rows) > limit
            entries = [ListEntry(k.decode(), size, etag, mod, sc) for k, size, etag, mod, sc in rows[:limit]]
            return ListPage(entries, [], truncated, entries[-1].key if truncated else None)
        while True:
            if delim_b:  # one row per entry or common prefix: the catalog seeks past each prefix
                batch = min(limit - len(entries) - len(prefixes) + 1, 1001)
                rows = await self.catalog.scan_delimited(
                    bucket, after, below, batch, inclusive=inclusive, skip_from=len(prefix_b), delimiter=delim_b
                )
            else:
                rows = await self.catalog.scan_latest(bucket, after, below, batch, inclusive=inclusive)
            if not rows:
                return ListPage(entries, prefixes, False, None)
            # Keys under the common prefix just returned are skipped (scan_delimited returns
            # none; kept as the roll-up's rule), the next query starts past the whole prefix.
            skip: bytes | None = None
            for raw_key, size, etag, modified_ns, sc in rows:
                key_b = bytes(raw_key)
                if skip is not None and key_b.startswith(skip):
                    continue
                if len(entries) + len(prefixes) >= limit:
                    return ListPage(entries, prefixes, True, last)
                if delim_b:
                    idx = key_b.find(delim_b, len(prefix_b))
                    if idx >= 0:
                        skip = key_b[: idx + len(delim_b)]
                        prefixes.append(skip.decode())
                        last = prefixes[-1]
                        after, inclusive = skip + _MAX_KEY_SENTINEL, False
                        continue
                entries.append(ListEntry(key_b.decode(), size, etag, modified_ns, sc))
                last = entries[-1].key
                after, inclusive = key_b, False
            if len(rows) < batch:
                return ListPage(entries, prefixes, False, None)

    # --- multipart -------------------------------------------------------------------
    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        headers: dict[str, str] | None = None,
        user_meta: dict[str, str] | None = None,
        checksum_algorithm: str | None = None,
        checksum_type: str | None = None,
        storage_class: str = "STANDARD",
        tags: Iterable[tuple[str, str]] = (),
        lock: LockRequest | None = None,
        acl: list[list[str]] | None = None,
        encryption: EncryptionRequest | None = None,
    ) -> UploadInfo:
        """``tags``, ``lock`` and ``acl`` are checked now and land on the completed object.
        ``encryption``: the upload's data key is made (a missing or disabled KMS key refused)
        and kept wrapped in the upload now; every part is sealed under a key derived from it
        (docs/encryption.md, engine/_sse_parts.py)."""
        key = ObjectKey(key)
        user_meta = user_meta or {}
        check_user_metadata(user_meta)
        headers = dict(headers or {})
        valid_tags = validate_tags(tags)
        await self._bucket_exists(bucket)
        await self._new_lock(bucket, lock)  # validates against the bucket; applied again at completion
        if valid_tags:
            headers[_UPLOAD_TAGS] = encode_tagging_header(valid_tags)
        if lock is not None and not lock.is_empty():
            headers[_UPLOAD_LOCK] = _lock_request_json(lock)
        if acl:
            headers[_UPLOAD_ACL] = json.dumps(acl)
        if checksum_type is not None:
            checksum_type = checksum_type.upper()
            if checksum_type not in ("COMPOSITE", "FULL_OBJECT"):
                raise InvalidRequest("Invalid value for x-amz-checksum-type")
            if checksum_algorithm is None:
                raise InvalidRequest("x-amz-checksum-type requires x-amz-checksum-algorithm")
        if checksum_algorithm is not None:
            if checksum_type is None:
                checksum_type = "FULL_OBJECT" if checksum_algorithm == "crc64nvme" else "COMPOSITE"
            if checksum_type == "FULL_OBJECT" and not is_crc(checksum_algorithm):
                raise InvalidRequest("The FULL_OBJECT checksum type requires a CRC algorithm.")
            if checksum_type == "COMPOSITE" and checksum_algorithm == "crc64nvme":
                raise InvalidRequest("The COMPOSITE checksum type is not supported for CRC64NVME.")
        upload_doc: dict[str, Any] = {}
        if encryption is not None:
            _, upload_doc = await new_data_key(self.kms, encryption, bucket, key)
        initiated_ns = self.clock.now_ns()
        info = UploadInfo(
            bucket=bucket,
            key=key,
            # Time first: uploads of one key list in initiation order (S3), and the catalog
            # orders them by (key, upload_id).
            upload_id=f"{initiated_ns:016x}{new_upload_id()[:16]}",
            initiated_ns=initiated_ns,
            headers=headers,
            user_meta=dict(user_meta),
            checksum_algorithm=checksum_algorithm,
            checksum_type=checksum_type,
            storage_class=storage_class,
            encryption=upload_doc,
        )
        await self.catalog.create_upload(info)
        return info

    async def _upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        await self._bucket_exists(bucket)
        return await self.catalog.get_upload(bucket, key, upload_id)

    async def upload_info(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        """An upload in progress (NoSuchBucket, NoSuchUpload): what its parts' answers echo."""
        return await self._upload(bucket, key, upload_id)

    @staticmethod
    def _check_part_number(part_number: int) -> None:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive")

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterable[bytes],
        opts: PutOptions | None = None,
        *,
        etag_from_checksum: bool = False,
        customer_key: bytes | None = None,
    ) -> PartInfo:
        """``etag_from_checksum`` (``x-tierstore-etag: checksum``, docs/checkpoints.md): a part
        that carries its checksum value and no Content-MD5 gets an ETag derived from that
        verified checksum instead of the MD5 of its bytes — MD5 is the costliest work per byte
        of an upload, and a multipart object's ETag is not the MD5 of its content anyway.

        A part of an encrypted upload is sealed under its own derived key and a fresh nonce
        prefix (``customer_key``: an SSE-C upload's key, which each part must carry)."""
        opts = opts or PutOptions()
        self._check_part_number(part_number)
        upload = await self._upload(bucket, key, upload_id)
        check_part_key(upload.encryption, customer_key)
        data_key, prefix, seal = await self._part_sealer(upload, part_number, customer_key)
        checksum = opts.checksum
        if checksum is None and upload.checksum_algorithm:
            checksum = ChecksumExpectation(upload.checksum_algorithm)
            opts = replace(opts, checksum=checksum)
        algorithms = [checksum.algorithm] if checksum else []
        if upload.checksum_algorithm and upload.checksum_algorithm not in algorithms:
            # A part sent with another algorithm than its upload's is verified by the one it
            # names and still gets the upload's checksum, which completion combines.
            algorithms.append(upload.checksum_algorithm)
        from_checksum = (
            etag_from_checksum and opts.content_md5 is None and checksum is not None and checksum.expected() is not None
        )
        blob_id, tap = await self._write_blob(body, algorithms, MAX_PUT_BYTES, md5=not from_checksum, seal=seal)
        try:
            self._verify_body(tap, opts)
            if from_checksum:
                assert checksum is not None
                seed = f"{checksum.algorithm}:{tap.b64(checksum.algorithm)}:{tap.size}".encode()
                etag = f'"{hashlib.md5(seed).hexdigest()}"'  # noqa: S324 - an opaque ETag, as S3's are
            elif data_key is not None:  # SSE-S3: the MD5; SSE-KMS/SSE-C: keyed, never the MD5
                etag = encrypted_etag(upload.encryption, data_key, tap.md5.digest())
            else:
                etag = f'"{tap.md5.hexdigest()}"'
            part = PartInfo(
                part_number=part_number,
                size_bytes=tap.size,
                etag=etag,
                modified_ns=self.clock.now_ns(),
                checksums={a: tap.b64(a) for a in algorithms},
                blob_id=blob_id,
                nonce_prefix=base64.b64encode(prefix).decode() if prefix is not None else None,
                stored_bytes=ciphertext_size(tap.size) if prefix is not None else None,
            )
            await self.catalog.put_part(upload_id, part)
        except BaseException as exc:
            await self._abandon(blob_id, exc)
            raise
        await self._drain_after_commit()
        return part

    async def _part_sealer(
        self, upload: UploadInfo, part_number: int, customer_key: bytes | None
    ) -> tuple[bytes | None, bytes | None, Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None]:
        """(data key, nonce prefix, sealer) of a new part of ``upload``; all None when it is
        stored in clear. A fresh prefix per attempt: a retried part gets a new part key."""
        if not upload.encryption:
            return None, None, None
        data_key = await upload_data_key(
            self.kms, upload.encryption, bucket=upload.bucket, key=upload.key, customer_key=customer_key
        )
        prefix = new_nonce_prefix()

        def seal(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            return seal_chunks(chunks, data_key, prefix, part_number=part_number)

        return data_key, prefix, seal

    async def upload_part_copy(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        src_bucket: str,
        src_key: str,
        opts: CopyOptions | None = None,
        *,
        src_version_id: str | None = None,
        customer_key: bytes | None = None,
        source_key: bytes | None = None,
    ) -> PartInfo:
        """A part copied from (a range of) another object: its plaintext, decrypted if the source
        is encrypted (``source_key``: an SSE-C source's key), stored as ``upload_part`` stores a
        part of this upload (``customer_key``: an SSE-C upload's key)."""
        opts = opts or CopyOptions()
        self._check_part_number(part_number)
        upload = await self._upload(bucket, key, upload_id)
        check_part_key(upload.encryption, customer_key)
        src = await self._copy_source(src_bucket, src_key, src_version_id)
        check_read_key(src.meta.encryption, source_key)
        _copy_source_conditions(opts.source_conditions, src.meta)
        if opts.source_range is not None:
            if opts.source_range.first is None or opts.source_range.last is None:
                raise InvalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last")
            if opts.source_range.last >= src.meta.size_bytes:  # well formed, past the end: 416 as S3
                raise InvalidRange(f"Range specified is not valid for source object of size: {src.meta.size_bytes}")
            offset, length = opts.source_range.resolve(src.meta.size_bytes)
        else:
            offset, length = 0, src.meta.size_bytes
        popts = PutOptions(
            checksum=ChecksumExpectation(upload.checksum_algorithm) if upload.checksum_algorithm else None
        )
        body = await self._plaintext(src, offset, length, source_key)
        return await self.upload_part(bucket, key, upload_id, part_number, body, popts, customer_key=customer_key)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self._upload(bucket, key, upload_id)
        await self._freeing(lambda: self.catalog.abort_upload(upload_id))
        await self._drain_after_commit()

    async def abort_stale_uploads(self, *, older_than_s: float, batch: int = 500) -> int:
        """Abort every multipart upload initiated more than ``older_than_s`` ago and free its
        parts' space (``--stale-uploads-expiry``); returns how many. Safe in several processes
        at once: the catalog hands each upload to one of them."""
        cutoff_ns = self.clock.now_ns() - int(older_than_s * 1e9)
        aborted = 0
        while True:
            done = await self.catalog.abort_uploads_before(cutoff_ns, batch)
            aborted += len(done)
            for u in done:
                log.info("aborted stale upload %s of %s/%s", u.upload_id, u.bucket, u.key)
            if len(done) < batch:
                break
        if aborted:
            await self._drain_after_commit()
        return aborted

    async def list_parts(
        self, bucket: str, key: str, upload_id: str, *, after_part: int = 0, max_parts: int = 1000
    ) -> tuple[UploadInfo, list[PartInfo], bool]:
        upload = await self._upload(bucket, key, upload_id)
        parts = await self.catalog.list_parts(upload_id, after_part, max_parts + 1)
        return upload, parts[:max_parts], len(parts) > max_parts

    async def list_multipart_uploads(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        max_uploads: int = 1000,
    ) -> tuple[list[UploadInfo], list[str], bool]:
        """In-progress uploads by key, then initiation time: (uploads, common prefixes, truncated).
        As in S3, common prefixes count toward ``max_uploads``, and a ``key_marker`` that is a
        common prefix continues after everything under it."""
        await self._bucket_exists(bucket)
        uploads: list[UploadInfo] = []
        prefixes: list[str] = []
        prefix_b, delim_b = prefix.encode(), delimiter.encode()
        after_key, after_upload = key_marker.encode(), upload_id_marker if key_marker else ""
        if key_marker and not upload_id_marker:
            after_upload = "\U0010ffff"  # everything for key_marker itself is skipped
        skip: bytes | None = None
        if _names_common_prefix(after_key, prefix_b, delim_b):
            skip = after_key
        if after_key < prefix_b:
            after_key, after_upload = prefix_b, ""
        while True:
            rows = await self.catalog.list_uploads(bucket, after_key, after_upload, 1000)
            for u in rows:
                key_b = u.key.encode()
                if not key_b.startswith(prefix_b):
                    return uploads, prefixes, False  # sorted: past the prefix
                if skip is not None and key_b.startswith(skip):
                    continue
                if len(uploads) + len(prefixes) >= max_uploads:
                    return uploads, prefixes, True
                if delim_b:
                    idx = key_b.find(delim_b, len(prefix_b))
                    if idx >= 0:
                        skip = key_b[: idx + len(delim_b)]
                        prefixes.append(skip.decode())
                        continue
                uploads.append(u)
            if len(rows) < 1000:
                return uploads, prefixes, False
            after_key, after_upload = rows[-1].key.encode(), rows[-1].upload_id

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[CompletedPart],
        *,
        conditions: Conditions | None = None,
        checksum_type: str | None = None,
        full_object_checksum: str | None = None,
        object_checksum_algorithm: str | None = None,
        customer_key: bytes | None = None,
    ) -> ObjectMeta:
        """``full_object_checksum``: the object's checksum the client sent (x-amz-checksum-<alg>,
        ``object_checksum_algorithm``, default the upload's), checked against what the parts make.

        Idempotent: a retry of a completion that succeeded (same parts, within
        ``COMPLETED_UPLOAD_KEEP_S``) is answered with the same result; other parts -> NoSuchUpload.

        An encrypted upload: the chosen parts' numbers and nonce prefixes become the version's
        ``"e"`` layout and the binding MAC covers the final version id (SSE-C: ``customer_key``
        is needed to compute it, as for every part)."""
        _check_write_condition_values(conditions or Conditions())
        sent = (object_checksum_algorithm, full_object_checksum) if full_object_checksum is not None else None
        try:
            upload = await self._upload(bucket, key, upload_id)
        except NoSuchUpload as gone:
            return await self._completed(bucket, key, upload_id, parts, sent, gone)
        check_part_key(upload.encryption, customer_key)
        if not parts:
            raise InvalidRequest("You must specify at least one part")  # S3: MalformedXML in practice
        numbers = [p.part_number for p in parts]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InvalidPartOrder()
        stored = {p.part_number: p for p in await self.catalog.list_parts(upload_id, 0, MAX_PART_NUMBER + 1)}
        if any(p.part_number not in stored for p in parts):
            # A concurrent completion may have taken the parts after ``_upload`` found the upload:
            # answered as a retry of it is, rather than InvalidPart.
            try:
                await self._upload(bucket, key, upload_id)
            except NoSuchUpload as gone:
                return await self._completed(bucket, key, upload_id, parts, sent, gone)
        chosen: list[PartInfo] = []
        for i, p in enumerate(parts):
            sp = stored.get(p.part_number)
            if sp is None or _strip_etag(p.etag) != sp.etag.strip('"'):
                raise InvalidPart(resource=str(p.part_number))
            if i < len(parts) - 1 and sp.size_bytes < MIN_PART_BYTES:
                raise EntityTooSmall(
                    f"Part {p.part_number} is {sp.size_bytes} bytes; every part but the last must be at least 5 MiB."
                )
            alg = upload.checksum_algorithm
            if alg and p.checksums.get(alg) is None and upload.checksum_type == "COMPOSITE":
                # As S3: a COMPOSITE checksum is made of the part checksums the client names.
                raise InvalidRequest(
                    f"The upload was created using a {alg} checksum. The complete request must include the"
                    f" checksum for each part. It was missing for part {p.part_number} in the request."
                )
            if alg and p.checksums.get(alg) is not None and p.checksums[alg] != sp.checksums.get(alg):
                raise InvalidPart(f"The checksum of part {p.part_number} did not match.")
            chosen.append(sp)
        md5s = b"".join(binascii.unhexlify(sp.etag.strip('"')) for sp in chosen)
        etag = f'"{hashlib.md5(md5s).hexdigest()}-{len(chosen)}"'  # noqa: S324 - S3 multipart ETag
        checksums: dict[str, str] = {}
        ctype = upload.checksum_type
        if checksum_type is not None and ctype is not None and checksum_type.upper() != ctype:
            raise InvalidRequest("The upload was created using a different checksum type.")
        alg = upload.checksum_algorithm
        if alg:
            digests = [base64.b64decode(sp.checksums[alg]) for sp in chosen]
            if ctype == "FULL_OBJECT":
                checksums[alg] = full_object_crc(alg, list(zip(digests, [sp.size_bytes for sp in chosen], strict=True)))
            else:
                checksums[alg] = composite_checksum(alg, digests)
        if sent is not None:
            _check_object_checksum(sent, checksums)
        headers = dict(upload.headers)
        tags = dict(parse_tagging_header(headers.pop(_UPLOAD_TAGS, "")))
        lock_request = _lock_request_from_json(headers.pop(_UPLOAD_LOCK, None))
        acl = json.loads(headers.pop(_UPLOAD_ACL, "[]"))
        meta = ObjectMeta(
            bucket=bucket,
            key=key,
            version_id=new_version_id(),
            size_bytes=sum(sp.size_bytes for sp in chosen),
            etag=etag,
            modified_ns=self.clock.now_ns(),
            headers=headers,
            user_meta=dict(upload.user_meta),
            checksums=checksums,
            checksum_type=ctype if alg else None,
            parts=[sp.size_bytes for sp in chosen],
            part_checksums={alg: [sp.checksums[alg] for sp in chosen]} if alg else {},
            storage_class=upload.storage_class,
            tags=tags,
            lock=await self._new_lock(bucket, lock_request, require_future=False),
            acl=acl,
        )
        record = VersionRecord(meta=meta, blobs=[BlobRef(sp.blob_id, sp.size_bytes) for sp in chosen])

        async def commit(fixed: bool) -> str:
            return await self.catalog.complete_upload(
                upload_id,
                record,
                check=_write_conditions(conditions or Conditions(), key),
                guard=self._guard,
                parts_fingerprint=_parts_fingerprint(parts),
                forget_before_ns=meta.modified_ns - COMPLETED_UPLOAD_KEEP_S * 1_000_000_000,
                fixed_version_id=fixed,
            )

        try:
            if upload.encryption:
                data_key = await upload_data_key(
                    self.kms, upload.encryption, bucket=bucket, key=key, customer_key=customer_key
                )
                layout = [(sp.part_number, sp.size_bytes, sp.nonce_prefix or "") for sp in chosen]
                if not all(prefix for _, _, prefix in layout):
                    raise InternalError(f"A part of the encrypted upload {upload_id} has no nonce prefix.")
                record.blobs = [BlobRef(sp.blob_id, ciphertext_size(sp.size_bytes)) for sp in chosen]
                meta.version_id = await self._next_version_id(bucket)

                def bound(version_id: str) -> dict[str, Any]:
                    return bind_parts(
                        upload.encryption, data_key, bucket=bucket, key=key, version_id=version_id, parts=layout
                    )

                await self._commit_bound(meta, bound, commit)
            else:
                meta.version_id = await commit(False)
        except NoSuchUpload as gone:  # a concurrent completion of the same upload won
            return await self._completed(bucket, key, upload_id, parts, sent, gone)
        await self._drain_after_commit()
        await self._into_tier(meta)  # the parts stayed local; the completed version moves now
        return meta

    async def _commit_bound(
        self, meta: ObjectMeta, bound: Callable[[str], dict[str, Any]], commit: Callable[[bool], Awaitable[str]]
    ) -> None:
        """Commit an encrypted version whose ``"e"`` (``bound(version id)``) binds its version id
        (``meta.version_id``, chosen by ``_next_version_id``): if the bucket's versioning state
        changes before the commit, the catalog refuses (``VersioningChanged``) and the other id is
        bound and tried."""
        for _attempt in range(_VERSIONING_ATTEMPTS):
            meta.encryption = bound(meta.version_id)
            try:
                meta.version_id = await commit(True)
                return
            except VersioningChanged:
                meta.version_id = new_version_id() if meta.version_id == NULL_VERSION else NULL_VERSION
        raise InternalError("The bucket's versioning kept changing during the write; try again.")

    async def _completed(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[CompletedPart],
        sent: tuple[str | None, str] | None,
        gone: NoSuchUpload,
    ) -> ObjectMeta:
        """The result of an earlier successful completion of ``upload_id`` with the same parts;
        ``gone`` (the NoSuchUpload that found the upload missing) is raised when there is none
        (never completed, completed with other parts, or too long ago)."""
        found = await self.catalog.completed_upload(bucket, key, upload_id)
        if found is None:
            raise gone
        fingerprint, result = found
        if fingerprint != _parts_fingerprint(parts) or result.modified_ns < self.clock.now_ns() - (
            COMPLETED_UPLOAD_KEEP_S * 1_000_000_000
        ):
            raise gone
        if sent is not None:
            _check_object_checksum(sent, result.checksums)
        return result

    # --- tags (engine/_tags.py has the rules) ---------------------------------------------
    async def _update_version(
        self, bucket: str, key: str, version_id: str | None, change: Callable[[ObjectMeta], None]
    ) -> ObjectMeta:
        """Change one version's tags or lock in place. A delete marker has neither: addressed by
        id it is MethodNotAllowed, as the current version NoSuchKey (as for GET)."""
        if version_id is not None:
            check_version_id(version_id)

        def update(record: VersionRecord) -> None:
            if record.is_delete_marker:
                if version_id is None:
                    raise NoSuchKey(resource=key, headers=_marker_headers(record.meta))
                raise MethodNotAllowed(resource=key, headers=_marker_headers(record.meta))
            change(record.meta)

        return (await self.catalog.update_version_meta(bucket, key, version_id, update)).meta

    async def get_object_tagging(self, bucket: str, key: str, version_id: str | None = None) -> ObjectMeta:
        """The version (with its ``tags``) GetObjectTagging addresses."""
        return (await self._latest(bucket, key, version_id)).meta

    async def put_object_tagging(
        self, bucket: str, key: str, tags: Iterable[tuple[str, str]], version_id: str | None = None
    ) -> ObjectMeta:
        valid = validate_tags(tags)

        def change(meta: ObjectMeta) -> None:
            meta.tags = valid

        return await self._update_version(bucket, key, version_id, change)

    async def delete_object_tagging(self, bucket: str, key: str, version_id: str | None = None) -> ObjectMeta:
        def change(meta: ObjectMeta) -> None:
            meta.tags = {}

        return await self._update_version(bucket, key, version_id, change)

    async def get_bucket_tagging(self, bucket: str) -> dict[str, str]:
        tags = (await self.catalog.bucket_props(bucket)).get("tags")
        if not tags:
            raise NoSuchTagSet(resource=bucket)
        return dict(tags)

    async def put_bucket_tagging(self, bucket: str, tags: Iterable[tuple[str, str]]) -> None:
        valid = validate_tags(tags, max_tags=MAX_BUCKET_TAGS)

        def update(props: dict[str, Any]) -> dict[str, Any]:
            props["tags"] = valid
            return props

        await self.catalog.update_bucket_props(bucket, update)

    async def delete_bucket_tagging(self, bucket: str) -> None:
        def update(props: dict[str, Any]) -> dict[str, Any]:
            props.pop("tags", None)
            return props

        await self.catalog.update_bucket_props(bucket, update)

    # --- CORS (the rules are parsed and matched by api/_cors.py) ------------------------------
    async def get_bucket_cors(self, bucket: str) -> list[dict[str, Any]] | None:
        """The bucket's CORS rules as stored (None: no configuration); NoSuchBucket if none."""
        rules = (await self.catalog.bucket_props(bucket)).get("cors")
        return list(rules) if rules else None

    async def cached_bucket_cors(self, bucket: str) -> list[dict[str, Any]] | None:
        """The same from the per-worker cache of bucket properties (``bucket_access.props``, at
        most ~1 s old; a change through this worker is seen at once): what the preflight and the
        CORS headers of every request with ``Origin`` read. None also when there is no bucket."""
        props = await self.bucket_access.props(bucket)
        rules = props.get("cors") if props is not None else None
        return list(rules) if rules else None

    async def put_bucket_cors(self, bucket: str, rules: list[dict[str, Any]]) -> None:
        await self._set_bucket_prop(bucket, "cors", rules)

    async def delete_bucket_cors(self, bucket: str) -> None:
        await self._set_bucket_prop(bucket, "cors", None)

    # --- default encryption (the document is parsed and applied by api/_sse.py) ---------------
    async def get_bucket_encryption(self, bucket: str) -> dict[str, Any] | None:
        """The bucket's default encryption as stored (None: none); NoSuchBucket if no bucket.
        Read from the catalog, not the per-worker cache: a write must never miss a default that
        another worker has just put (it would store data in clear)."""
        config = (await self.catalog.bucket_props(bucket)).get("encryption")
        return dict(config) if config else None

    async def put_bucket_encryption(self, bucket: str, config: dict[str, Any]) -> None:
        await self._set_bucket_prop(bucket, "encryption", config)

    async def delete_bucket_encryption(self, bucket: str) -> None:
        await self._set_bucket_prop(bucket, "encryption", None)

    async def _set_bucket_prop(self, bucket: str, name: str, value: Any) -> None:
        """Set one bucket property (``None``: remove it) in one catalog transaction."""

        def update(props: dict[str, Any]) -> dict[str, Any]:
            if value is None:
                props.pop(name, None)
            else:
                props[name] = value
            return props

        try:
            await self.catalog.update_bucket_props(bucket, update)
        finally:
            self.bucket_access.forget(bucket)  # this worker sees it at once, the others within the TTL

    # --- object lock (engine/_lock.py has the rules) ---------------------------------------
    # --- ACLs and Object Ownership (the grammar and the rules: api/_acl.py) -----------------
    async def bucket_props(self, bucket: str) -> dict[str, Any]:
        """A bucket's stored settings (a copy): ``acl``, ``ownership``, ``public_access_block``,
        ...; NoSuchBucket when there is no such bucket."""
        return dict(await self.catalog.bucket_props(bucket))

    async def update_bucket_props(self, bucket: str, update: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Read-modify-write of a bucket's settings in one catalog transaction (``update`` may
        raise to refuse: the check and the write see the same settings). This worker's cached
        settings (``bucket_access``) are dropped; other workers see the change within ~1 s."""
        try:
            await self.catalog.update_bucket_props(bucket, update)
        finally:
            self.bucket_access.forget(bucket)

    async def object_acl(self, bucket: str, key: str, version_id: str | None = None) -> list[list[str]]:
        """The stored grants of the version a read addresses (NoSuchKey, NoSuchVersion, ...)."""
        return list((await self._latest(bucket, key, version_id)).meta.acl)

    async def put_object_acl(
        self, bucket: str, key: str, acl: list[list[str]], version_id: str | None = None
    ) -> ObjectMeta:
        def change(meta: ObjectMeta) -> None:
            meta.acl = list(acl)

        return await self._update_version(bucket, key, version_id, change)

    async def get_object_lock_configuration(self, bucket: str) -> LockConfig:
        config = LockConfig.from_props(await self.catalog.bucket_props(bucket))
        if config is None:
            raise ObjectLockConfigurationNotFoundError(resource=bucket)
        return config

    async def put_object_lock_configuration(self, bucket: str, config: LockConfig) -> None:
        """Enable object lock (S3 allows it on an existing bucket with versioning Enabled) and
        set or clear the default retention. Lock can never be turned off again."""

        def update(props: dict[str, Any]) -> dict[str, Any]:
            if LockConfig.from_props(props) is None and props.get("versioning") != "Enabled":
                raise InvalidBucketState(
                    "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration", resource=bucket
                )
            props["object_lock"] = config.to_props()
            return props

        await self.catalog.update_bucket_props(bucket, update)

    async def _require_lock(self, bucket: str) -> None:
        if LockConfig.from_props(await self.catalog.bucket_props(bucket)) is None:
            raise InvalidRequest("Bucket is missing Object Lock Configuration", resource=bucket)

    async def get_object_retention(self, bucket: str, key: str, version_id: str | None = None) -> Retention:
        await self._require_lock(bucket)
        retention = retention_of((await self._latest(bucket, key, version_id)).meta.lock)
        if retention is None:
            raise NoSuchObjectLockConfiguration(resource=key)
        return retention

    async def put_object_retention(
        self,
        bucket: str,
        key: str,
        retention: Retention | None,
        *,
        version_id: str | None = None,
        bypass_governance: bool = False,
    ) -> ObjectMeta:
        """Set, extend, shorten or (``retention=None``) remove a version's retention."""
        await self._require_lock(bucket)

        def change(meta: ObjectMeta) -> None:
            meta.lock = change_retention(meta.lock, retention, self.clock.now_ns(), bypass_governance=bypass_governance)

        return await self._update_version(bucket, key, version_id, change)

    async def get_object_legal_hold(self, bucket: str, key: str, version_id: str | None = None) -> bool:
        await self._require_lock(bucket)
        lock = (await self._latest(bucket, key, version_id)).meta.lock
        if "legal_hold" not in lock:
            raise NoSuchObjectLockConfiguration(resource=key)
        return bool(lock["legal_hold"])

    async def put_object_legal_hold(
        self, bucket: str, key: str, on: bool, *, version_id: str | None = None
    ) -> ObjectMeta:
        await self._require_lock(bucket)

        def change(meta: ObjectMeta) -> None:
            meta.lock = change_legal_hold(meta.lock, on)

        return await self._update_version(bucket, key, version_id, change)

    # --- garbage collection ----------------------------------------------------------
    async def _drain_after_commit(self) -> None:
        """Collect what a committed write released. Housekeeping, not part of the write: a
        failure here must not turn a committed write into an error (GC retries the trash)."""
        try:
            await self.drain_trash()
        except Exception:
            log.warning("could not drain the trash after a commit; GC will retry", exc_info=True)

    async def _freeing(self, commit: Callable[[], Awaitable[_T]]) -> _T:
        """Run a catalog commit that frees space (a delete, an abort). On a full disk, give up
        the space reserve and try once more: the API must be able to free space."""
        try:
            return await commit()
        except InsufficientStorage:
            if self.reserve is None or not self.reserve.release():
                raise
            log.warning("disk full: released the space reserve so that a delete can commit")
            return await commit()

    async def drain_trash(self) -> int:
        """Delete blobs no version references any more. Returns how many were removed. Each
        batch is leased to this process (``self.leases``): other workers and gateways skip it,
        and if this one dies its lease runs out and another takes the batch."""
        loop = asyncio.get_running_loop()
        if self._draining is None or self._draining[0] is not loop:
            self._draining = (loop, asyncio.Lock())
        async with self._draining[1]:  # passes of this process take turns: a caller's rows are gone when it returns
            return await self._drain_trash()

    async def _drain_trash(self) -> int:
        removed = 0
        while True:
            batch = await self.catalog.trash_claim(self.leases.owner, time.time_ns(), self.leases.lease_ns, 500)
            if not batch:
                if self.reserve is not None and self.reserve.released:
                    self.reserve.restore()
                return removed
            self.leases.fault("trash")
            deleted = 0
            try:
                for blob_id in batch:
                    await self.blobs.delete(blob_id)
                    deleted += 1
            except Exception:  # the rest is handed back at once, for the next pass (not a lease later)
                with contextlib.suppress(Exception):
                    await self.catalog.trash_finish(self.leases.owner, batch[:deleted])
                    await self.catalog.trash_release(self.leases.owner, batch[deleted:])
                raise
            removed += await self.catalog.trash_finish(self.leases.owner, batch)

    async def collect_garbage(self, *, grace_s: float = 86_400.0) -> dict[str, int]:
        """Drain the trash, then delete orphan blobs (``sweep_orphans``)."""
        trashed = await self.drain_trash()
        return {"trash": trashed, **await self.sweep_orphans(grace_s=grace_s)}

    async def sweep_orphans(self, *, grace_s: float = 86_400.0) -> dict[str, int]:
        """Delete orphan blobs (in the store, unknown to the catalog) older than ``grace_s`` —
        written by a request that crashed before its commit. The grace period protects uploads
        still in flight; blob ids carry their creation second."""
        now_s = self.clock.now_s()
        orphans = 0
        scanned = 0
        async for info in self.blobs.scan():
            scanned += 1
            try:
                born_s = int(info.blob_id[:8], 16)
            except ValueError:
                born_s = 0
            if now_s - born_s < grace_s:
                continue
            if not await self.catalog.blob_known(info.blob_id):
                await self.blobs.delete(info.blob_id)
                orphans += 1
        if orphans:
            log.info("GC removed %d orphan blobs (scanned %d)", orphans, scanned)
        return {"orphans": orphans, "scanned": scanned}
