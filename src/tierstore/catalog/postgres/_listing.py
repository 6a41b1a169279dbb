"""Listings on PostgreSQL: keyset range scans in byte order, never OFFSET or LIKE.

A page of ListObjects is ``after < key < below ORDER BY key LIMIT n`` on the partial listing
index (latest, not a delete marker; it includes what a listing shows), so it is an index-only
range scan. With a delimiter, one recursive statement walks the index: a seek per entry or
common prefix, past each prefix (its successor), so a page of 1000 prefixes is 1000 seeks.
ListObjectVersions walks (key ASC, seq DESC) from a (key, seq) position on ``versions_seq``.
"""

from __future__ import annotations

from tierstore.catalog._rules import row_to_record
from tierstore.catalog.postgres._codec import VERSION_COLS
from tierstore.catalog.postgres._pool import Pool
from tierstore.types import NULL_VERSION

from tierstore.catalog import VersionRecord  # isort: skip

__all__ = ["ListingTables"]

_BUCKET_ID = "(SELECT id FROM buckets WHERE name = $1)"
_SCAN_LATEST = (
    "SELECT key, size, etag, modified_ns, storage_class FROM versions"  # noqa: S608 - constant fragments
    f" WHERE bucket_id = {_BUCKET_ID} AND is_latest AND NOT is_delete_marker AND key {{op}} $2 AND key < $3"
    " ORDER BY key LIMIT $4"
)
_SCAN_LATEST_AFTER = _SCAN_LATEST.format(op=">")
_SCAN_LATEST_FROM = _SCAN_LATEST.format(op=">=")
# ``scan_delimited``: a delimited listing's page in one statement (a loose index scan): each step is one probe of the
# listing index for the first key past the previous row — past the whole common prefix when that
# row has the delimiter ($6) at or after byte $5 (prefix || 0xff: 0xff never occurs in UTF-8).
# 1,000 common prefixes are 1,000 probes inside PostgreSQL, not 1,000 round trips each reading
# a batch of keys the engine would skip.
_LIVE = "v.bucket_id = (SELECT id FROM b) AND v.is_latest AND NOT v.is_delete_marker"
_COLS = "v.key, v.size, v.etag, v.modified_ns, v.storage_class"
_PAST = (
    "CASE WHEN position($6::bytea IN substring(w.key FROM $5::int + 1)) > 0"
    " THEN substring(w.key FROM 1 FOR $5::int + position($6::bytea IN substring(w.key FROM $5::int + 1))"
    " + length($6::bytea) - 1) || '\\xff'::bytea ELSE w.key END"
)
_SCAN_DELIMITED = (
    "WITH RECURSIVE b AS (SELECT id FROM buckets WHERE name = $1), walk AS ("  # noqa: S608 - constant fragments
    f"(SELECT {_COLS}, 1 AS n FROM versions v WHERE {_LIVE} AND v.key {{op}} $2 AND v.key < $3 ORDER BY v.key LIMIT 1)"
    f" UNION ALL (SELECT {_COLS.replace('v.', 'x.')}, w.n + 1 FROM walk w CROSS JOIN LATERAL"
    f" (SELECT {_COLS} FROM versions v WHERE {_LIVE} AND v.key > {_PAST} AND v.key < $3 ORDER BY v.key LIMIT 1) x"
    " WHERE w.n < $4)) SELECT key, size, etag, modified_ns, storage_class FROM walk ORDER BY key"
)
_SCAN_DELIMITED_AFTER = _SCAN_DELIMITED.format(op=">")
_SCAN_DELIMITED_FROM = _SCAN_DELIMITED.format(op=">=")
_VERSIONS_PAGE = f"SELECT {VERSION_COLS}, v.seq, v.is_latest FROM versions v WHERE v.bucket_id = {_BUCKET_ID}"  # noqa: S608
# From (key, seq) exclusive: the rest of that key's older versions, then the keys after it; each
# part an ordered index range, merged and cut to the page.
_VERSIONS_AFTER = (
    f"({_VERSIONS_PAGE} AND v.key = $2 AND v.seq < $3 ORDER BY v.seq DESC LIMIT $5)"
    f" UNION ALL ({_VERSIONS_PAGE} AND v.key > $2 AND v.key < $4 ORDER BY v.key, v.seq DESC LIMIT $5)"
    " ORDER BY 1, 10 DESC LIMIT $5"
)
_VERSIONS_FROM = f"{_VERSIONS_PAGE} AND v.key >= $2 AND v.key < $3 ORDER BY v.key, v.seq DESC LIMIT $4"


class ListingTables:
    """The listing calls of the catalog protocol."""

    _pool: Pool

    async def scan_latest(
        self, bucket: str, after: bytes, below: bytes, limit: int, *, inclusive: bool = False
    ) -> list[tuple[bytes, int, str, int, str]]:
        """Live latest versions with ``after < key < below`` (``<=`` when inclusive), in byte
        order: (key, size, etag, modified_ns, storage class)."""
        sql = _SCAN_LATEST_FROM if inclusive else _SCAN_LATEST_AFTER
        return [tuple(r) for r in await self._pool.fetch(sql, bucket, after, below, limit)]

    async def scan_delimited(
        self, bucket: str, after: bytes, below: bytes, limit: int, *, inclusive: bool, skip_from: int, delimiter: bytes
    ) -> list[tuple[bytes, int, str, int, str]]:
        """Like ``scan_latest``, but after a key with ``delimiter`` at or after byte ``skip_from``
        the walk seeks past every key sharing its prefix through that delimiter: one row per
        listing entry or common prefix, one statement."""
        sql = _SCAN_DELIMITED_FROM if inclusive else _SCAN_DELIMITED_AFTER
        return [tuple(r) for r in await self._pool.fetch(sql, bucket, after, below, limit, skip_from, delimiter)]

    async def scan_versions(
        self, bucket: str, after_key: bytes, after_seq: int | None, below: bytes, limit: int
    ) -> list[tuple[VersionRecord, int, bool]]:
        """Every version in (key ASC, newest first) order, starting after (after_key, after_seq);
        ``after_seq=None`` starts at ``after_key`` itself (inclusive). Yields (record, seq, is_latest)."""
        if after_seq is None:
            rows = await self._pool.fetch(_VERSIONS_FROM, bucket, after_key, below, limit)
        else:
            rows = await self._pool.fetch(_VERSIONS_AFTER, bucket, after_key, after_seq, below, limit)
        return [(row_to_record(bucket, r[:9]), int(r[9]), bool(r[10])) for r in rows]

    async def version_seq(self, bucket: str, key: str, version_id: str) -> int | None:
        value = await self._pool.fetchval(
            f"SELECT seq FROM versions WHERE bucket_id = {_BUCKET_ID} AND key = $2 AND version_id = $3",  # noqa: S608
            bucket, key.encode(), version_id,
        )  # fmt: skip
        return int(value) if value is not None else None

    async def seq_older_than(self, bucket: str, key: str, version_id: str, created_ns: int) -> int:
        """Where a vanished version ``version_id`` created at ``created_ns`` stood among the
        key's versions (as ``SqliteCatalog.seq_older_than``): one more than the seq of the
        newest version created before it (1 if none)."""
        value = await self._pool.fetchval(
            f"SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE bucket_id = {_BUCKET_ID} AND key = $2"  # noqa: S608
            " AND ((version_id <> $3 AND version_id < $4) OR (version_id = $3 AND modified_ns < $5))",
            bucket, key.encode(), NULL_VERSION, version_id, created_ns,
        )  # fmt: skip
        return int(value)
