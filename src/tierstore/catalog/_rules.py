"""What both catalog engines share, written once: the documents a version, a part and a
completed upload are stored as, and their decoding back into records. SQLite (``sqlite/``) and
PostgreSQL (``postgres/``) store the same text, so ``tierstore admin migrate`` copies it as is."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tierstore.catalog._records import AccessKeyRecord, BlobRef, KmsKeyRecord, TierRecord, UserRecord, VersionRecord
from tierstore.types import ObjectMeta, PartInfo, UploadInfo


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


LAST_ERROR_MAX_CHARS = 500


# A write's own pending row waits this long before the worker takes it: the write's request
# moves the version itself meanwhile (and drops the row) or, if the tier did not answer, sets an
# earlier retry; only a crash between the commit and either leaves the row to this delay.
WRITE_PENDING_DELAY_NS = 600 * 1_000_000_000
