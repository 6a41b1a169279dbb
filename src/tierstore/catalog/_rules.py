"""The rules both catalog engines apply, written once (``sqlite/`` and ``postgres/`` keep only the SQL).

- The documents a version, a part, an upload and a completed upload are stored as, and their
  decoding back into records (and the decoders of identity, KMS-key and tier rows): both engines
  store the same text, so ``tierstore admin migrate`` copies it as is.
- What a write supersedes, by the bucket's versioning state as the write's transaction reads it
  (``writes_null``, ``ever_versioned``, ``check_version_kind``).
- The mover's commit decision (``transition_applies``) and a version's blobs with their tiers
  (``located``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tierstore.catalog._records import (
    AccessKeyRecord,
    BlobRef,
    BucketChanged,
    InlineMove,
    KmsKeyRecord,
    TierRecord,
    UserRecord,
    VersioningChanged,
    VersionRecord,
)
from tierstore.types import NULL_VERSION, ObjectMeta, PartInfo, UploadInfo

if TYPE_CHECKING:
    from tierstore.catalog._protocol import LifecyclePlanner

__all__ = [
    "ABORT_UPLOAD",
    "ECHOED_ENCRYPTION",
    "GATEWAY_FORGET_NS",
    "LAST_ERROR_MAX_CHARS",
    "SIGNED_OUT_PREFIX",
    "TTL_EXPIRY",
    "WRITE_PENDING_DELAY_NS",
    "check_version_kind",
    "completed_doc",
    "completed_meta",
    "ever_versioned",
    "key_of",
    "kms_key_of",
    "located",
    "meta_doc",
    "meta_json",
    "part_checksums_doc",
    "part_from_row",
    "row_to_record",
    "tier_of",
    "transition_applies",
    "upload_abort_due",
    "upload_doc",
    "upload_from_doc",
    "user_of",
    "writes_null",
]

TTL_EXPIRY = "CASE WHEN {unit} > 0 THEN (({now} + ttl_ns + {unit} - 1) / {unit}) * {unit} ELSE {now} + ttl_ns END"
"""A hot copy's expiry counted from its end (``ttl_ns``, a restore's Days), in SQL for both
catalogs: ``{now}`` + ``ttl_ns``, rounded up to a multiple of ``{unit}`` when it is positive (a real
day: AWS rounds a restored copy's expiry up to the next midnight UTC, as lifecycle Days)."""


def meta_json(m: ObjectMeta) -> str:
    return json.dumps(meta_doc(m), separators=(",", ":"))


def meta_doc(m: ObjectMeta) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if m.headers:
        doc["h"] = m.headers
    if m.user_meta:
        doc["u"] = m.user_meta
    if m.checksums:
        doc["c"] = m.checksums
    if m.checksum_type:
        doc["ct"] = m.checksum_type
    if m.parts:
        doc["p"] = m.parts
    if m.part_checksums:
        doc["pc"] = m.part_checksums
    if m.storage_class != "STANDARD":
        doc["sc"] = m.storage_class
    if m.tags:
        doc["t"] = m.tags
    if m.lock:
        doc["l"] = m.lock
    if m.acl:
        doc["a"] = m.acl
    if m.encryption:
        doc["e"] = m.encryption  # docs/encryption.md: present exactly when the version is encrypted
    return doc


# The fields of an "e" document a remembered multipart completion keeps: what its answer echoes.
ECHOED_ENCRYPTION = frozenset({"kind", "alg", "kid", "bk", "ckm"})


# A part of an encrypted upload keeps its nonce prefix in its row's checksums document under
# this name (never a checksum algorithm's), so the parts table needs no new column.
_PART_NONCE_PREFIX = "_np"


def part_checksums_doc(part: PartInfo) -> dict[str, str]:
    if part.nonce_prefix is None:
        return part.checksums
    return {**part.checksums, _PART_NONCE_PREFIX: part.nonce_prefix}


def part_from_row(number: int, size: int, etag: str, modified_ns: int, checksums_s: str, blob_id: str) -> PartInfo:
    checksums = json.loads(checksums_s)
    prefix = checksums.pop(_PART_NONCE_PREFIX, None)
    return PartInfo(number, size, etag, modified_ns, checksums, blob_id, prefix)


def completed_doc(m: ObjectMeta) -> str:
    """A completed upload's result as ``completed_uploads.result`` keeps it (both engines): what a
    retried CompleteMultipartUpload answers; of the encryption, only what a retry echoes, never a key."""
    result: dict[str, Any] = {
        "v": m.version_id,
        "etag": m.etag,
        "size": m.size_bytes,
        "cs": m.checksums,
        "ct": m.checksum_type,
        "parts": m.parts,
    }
    if m.encryption:  # docs/encryption-s3.md
        result["e"] = {k: v for k, v in m.encryption.items() if k in ECHOED_ENCRYPTION}
    return json.dumps(result)


def completed_meta(bucket: str, key: str, completed_ns: int, result_s: str) -> ObjectMeta:
    """The ``ObjectMeta`` of a remembered completion, from ``completed_doc``'s text."""
    doc = json.loads(result_s)
    return ObjectMeta(
        bucket=bucket,
        key=key,
        version_id=doc["v"],
        size_bytes=doc["size"],
        etag=doc["etag"],
        modified_ns=completed_ns,
        checksums=doc["cs"],
        checksum_type=doc["ct"],
        parts=doc["parts"],
        encryption=doc.get("e", {}),
    )


def row_to_record(bucket: str, row: Sequence[Any]) -> VersionRecord:
    key_b, version_id, is_dm, size, etag, modified_ns, meta_s, blobs_s, inline_id = row
    doc = json.loads(meta_s)
    meta = ObjectMeta(
        bucket=bucket,
        key=bytes(key_b).decode("utf-8"),
        version_id=version_id,
        size_bytes=size,
        etag=etag,
        modified_ns=modified_ns,
        headers=doc.get("h", {}),
        user_meta=doc.get("u", {}),
        checksums=doc.get("c", {}),
        checksum_type=doc.get("ct"),
        parts=doc.get("p", []),
        part_checksums=doc.get("pc", {}),
        storage_class=doc.get("sc", "STANDARD"),
        tags=doc.get("t", {}),
        lock=doc.get("l", {}),
        acl=doc.get("a", []),
        encryption=doc.get("e", {}),
        is_delete_marker=bool(is_dm),
    )
    blobs = [BlobRef(b, s) for b, s in json.loads(blobs_s)] if blobs_s != "[]" else []
    return VersionRecord(meta=meta, blobs=blobs, is_delete_marker=bool(is_dm), inline_id=inline_id)


def upload_doc(info: UploadInfo) -> dict[str, Any]:
    """An upload's ``uploads.meta`` document (both engines): what its completion's version gets."""
    doc: dict[str, Any] = {
        "h": info.headers,
        "u": info.user_meta,
        "ca": info.checksum_algorithm,
        "ctype": info.checksum_type,
        "sc": info.storage_class,
    }
    if info.encryption:
        doc["e"] = info.encryption
    return doc


def upload_from_doc(bucket: str, key_b: bytes, upload_id: str, initiated_ns: int, meta_s: str) -> UploadInfo:
    """An ``UploadInfo`` from its row: ``upload_doc``'s text and the columns beside it."""
    doc = json.loads(meta_s)
    return UploadInfo(
        bucket=bucket,
        key=bytes(key_b).decode(),
        upload_id=upload_id,
        initiated_ns=initiated_ns,
        headers=doc.get("h", {}),
        user_meta=doc.get("u", {}),
        checksum_algorithm=doc.get("ca"),
        checksum_type=doc.get("ctype"),
        storage_class=doc.get("sc", "STANDARD"),
        encryption=doc.get("e", {}),
    )


# engine/_lifecycle.py's name of the action that aborts a stale multipart upload (the only one the catalogs name)
ABORT_UPLOAD = "abort-upload"


def located(refs: list[BlobRef], tiers_s: str) -> list[BlobRef]:
    """``refs`` with their tiers (and local copies) from a ``TIERS_OF_BLOBS`` value
    (each engine's SQL that lists a version's remote blobs: ``sqlite/_tier_data.py``, ``postgres/_codec.py``)."""
    found = {parts[0]: parts for parts in (item.split(" ") for item in tiers_s.split(","))}
    out = []
    for ref in refs:
        parts = found.get(ref.blob_id)
        out.append(ref if parts is None else replace(ref, tier=parts[1], cached=len(parts) > 2))
    return out


def key_of(row: tuple[Any, ...]) -> AccessKeyRecord:
    return AccessKeyRecord(
        access_key_id=row[0],
        user_name=row[1],
        kind=row[2],
        sealed_secret=bytes(row[3]),
        status=row[4],
        created_ns=row[5],
        last_used_ns=row[6],
        expires_ns=row[7],
        policy=row[8],
        name=row[9],
    )


def user_of(row: tuple[Any, ...]) -> UserRecord:
    return UserRecord(row[0], row[1], bool(row[2]), json.loads(row[3]), row[4])


def kms_key_of(row: tuple[Any, ...]) -> KmsKeyRecord:
    key_id, enabled, description, created_ns, updated_ns, newest, newest_ns = row
    return KmsKeyRecord(
        key_id, bool(enabled), description, created_ns, updated_ns, newest, newest_ns if newest > 1 else None
    )


def tier_of(row: tuple[Any, ...]) -> TierRecord:
    name, config, secret, created_ns = row
    return TierRecord(name, json.loads(config), bytes(secret) if secret is not None else None, int(created_ns))


GATEWAY_FORGET_NS = 86_400 * 1_000_000_000
"""A gateway registration unseen this long is dropped (at another's register), on both catalogs."""

SIGNED_OUT_PREFIX = "console-signed-out:"
"""``meta`` rows ``PREFIX + session id`` -> expiry (Unix s, ``%020d``: compared as text): signed-out
console sessions, on both catalogs."""

LAST_ERROR_MAX_CHARS = 500


# A write's own pending row waits this long before the worker takes it: the write's request
# moves the version itself meanwhile (and drops the row) or, if the tier did not answer, sets an
# earlier retry; only a crash between the commit and either leaves the row to this delay.
WRITE_PENDING_DELAY_NS = 600 * 1_000_000_000


# --- what a write supersedes: the versioning state of the bucket, read in the write's transaction
def writes_null(props: dict[str, Any]) -> bool:
    """Whether a version or delete marker written now is its key's ``null`` version, replacing the
    one there is wherever it stands in the key's stack (versioning never set, or Suspended);
    otherwise (Enabled) it keeps its own id and every older version stays."""
    return props.get("versioning") != "Enabled"


def ever_versioned(props: dict[str, Any]) -> bool:
    """Whether a delete without a version id (or a lifecycle expiration) leaves a delete marker:
    the bucket's versioning was set once (Enabled or Suspended). Never set: the object goes."""
    return props.get("versioning") is not None


def check_expected(props: dict[str, Any], meta: ObjectMeta, expect: Mapping[str, Any] | None) -> None:
    """``BucketChanged`` when a property the caller decided by (``expect``: name -> value, None:
    absent) is not the bucket's now (read inside the commit)."""
    if expect is not None and any(props.get(name) != value for name, value in expect.items()):
        raise BucketChanged(meta.bucket)


def check_version_kind(props: dict[str, Any], meta: ObjectMeta, fixed_version_id: bool) -> None:
    """``VersioningChanged`` when the caller chose ``meta.version_id`` from the versioning state
    (``fixed_version_id``: an encrypted version binds its id) and the state now wants the other kind."""
    if fixed_version_id and writes_null(props) != (meta.version_id == NULL_VERSION):
        raise VersioningChanged(meta.bucket)


# --- the mover's commit decision (docs/tiers.md "The mover", step 3) -----------------------------
def transition_applies(
    record: VersionRecord | None,
    tier: str,
    moved: Sequence[tuple[str, str | None]],
    inline: InlineMove | None,
    where: dict[str, str | None],
    queued: bool,
) -> bool:
    """Whether the mover's transaction switches ``record`` to ``tier``: the version still exists
    (not a delete marker) and still names the moved blobs (or the inline body ``inline`` moved),
    each still where it was copied from or in ``tier`` already (``where``: blob id -> its tier as
    the transaction reads it, None: local; an id absent: no longer referenced), and no old copy of
    one waits in ``tier``'s outbox (``queued``). Otherwise nothing changes."""
    if record is None or record.is_delete_marker:
        return False
    if inline is not None and record.inline_id != inline.inline_id:
        return False
    names = {b.blob_id for b in record.blobs}
    for blob_id, source in moved:
        if blob_id not in names or blob_id not in where or where[blob_id] not in (source, tier):
            return False
    return not queued


def upload_abort_due(
    planner: LifecyclePlanner | None, props: dict[str, Any], key_b: bytes, initiated_ns: int
) -> int | None:
    """When the abort row of an upload of ``key_b`` initiated at ``initiated_ns`` falls due under
    the bucket's lifecycle rules (``props["lifecycle"]``); None: no rule aborts it (no row)."""
    rules = props.get("lifecycle")
    if not rules or planner is None:
        return None
    return planner.upload(rules, key_b.decode(), initiated_ns)
