"""Rows to records and back, and the ids of the advisory locks that serialize writers.

The metadata document and the row shape are the SQLite catalog's (one format for both engines,
so ``tierstore admin migrate`` copies documents as they are); asyncpg hands ``json`` over as
its text (as written), which the shared decoders read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from tierstore.catalog._rules import upload_from_doc
from tierstore.types import UploadInfo

__all__ = [
    "TIERS_OF_BLOBS",
    "VERSION_COLS",
    "blobs_json",
    "bucket_lock",
    "dumps",
    "key_lock",
    "prefix_end",
    "sorted_locks",
    "upload_from_row",
]

# The columns ``row_to_record`` reads, in its order (alias ``v``).
VERSION_COLS = "v.key, v.version_id, v.is_delete_marker, v.size, v.etag, v.modified_ns, v.meta, v.blobs, v.inline_id"

# A column of a version read (alias ``v``): "id tier,id tier c" for its blobs that are remote
# (" c": with a local copy), NULL if all are local. Inline versions and delete markers skip the
# subquery. The same text catalog/sqlite/_tier_data.py's ``located`` reads.
TIERS_OF_BLOBS = (
    "CASE WHEN v.blobs::text = '[]' THEN NULL ELSE (SELECT string_agg(b.blob_id || ' ' || b.tier"
    " || CASE WHEN b.cached IS NULL THEN '' ELSE ' c' END, ',')"
    " FROM json_array_elements(v.blobs) j JOIN blobs b ON b.blob_id = j.value ->> 0"
    " WHERE b.tier IS NOT NULL) END"
)


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def blobs_json(blobs: Iterable[Any]) -> str:
    return dumps([[b.blob_id, b.size_bytes] for b in blobs])


def _lock_id(kind: bytes, *parts: bytes) -> int:
    digest = hashlib.blake2b(b"\0".join(parts), digest_size=8, person=kind).digest()
    return int.from_bytes(digest, "big", signed=True)


def key_lock(bucket: str, key_b: bytes) -> int:
    """The advisory lock id of one key's writers: a 64-bit hash of (bucket name, key). A
    collision only makes two keys' writers take turns."""
    return _lock_id(b"tierstore-key", bucket.encode(), key_b)


def bucket_lock(bucket: str) -> int:
    """The advisory lock id of a bucket: writers of its keys hold it shared, deleting the bucket
    or changing its properties holds it exclusively (what SQLite's single writer gave)."""
    return _lock_id(b"tierstore-bkt", bucket.encode())


def sorted_locks(ids: Iterable[int]) -> list[int]:
    """Lock ids in the one order every transaction takes them (no deadlock), each once."""
    return sorted(set(ids))


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``: the prefix
    with its last byte below 0xff incremented and what follows dropped (None: no upper bound,
    the prefix is empty or all 0xff). A listing scans ``prefix <= key < prefix_end(prefix)``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def upload_from_row(bucket: str, row: Any) -> UploadInfo:
    """An ``UploadInfo`` from (upload_id, key, initiated_ns, meta)."""
    upload_id, key_b, initiated_ns, meta_s = row
    return upload_from_doc(bucket, key_b, upload_id, initiated_ns, meta_s)
