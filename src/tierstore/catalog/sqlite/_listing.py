"""Listings of the embedded catalog: keyset range scans over the latest versions and over every
version, and one page of a metadata query (compiled by ``catalog/_query.py``)."""

from __future__ import annotations

from tierstore.catalog._query import compile_sqlite, next_cursor, parse
from tierstore.catalog._records import VersionRecord
from tierstore.catalog._rules import row_to_record
from tierstore.catalog.sqlite._tables import Tables
from tierstore.catalog.sqlite._versions import VERSION_COLS

_LIVE = "FROM versions WHERE bucket=:b AND is_latest=1 AND is_delete_marker=0 AND key<:below"
# Where the walk goes on after key k: past k's common prefix (k through the first delimiter
# at or after byte :skip, then 0xff, which no UTF-8 key holds), or past k itself. CAST: || makes
# TEXT, and in SQLite every TEXT sorts before every BLOB.
_AT = "instr(substr(walk.k, :skip + 1), :d)"
_NEXT = (
    f"CASE WHEN {_AT} > 0 THEN CAST(substr(walk.k, 1, :skip + {_AT} - 1 + length(:d)) || x'ff' AS BLOB)"
    " ELSE walk.k END"
)
_SCAN_DELIMITED = (
    "WITH RECURSIVE walk(k, n) AS ("  # noqa: S608 - constant fragments
    f" SELECT (SELECT key {_LIVE} AND key{{op}}:after ORDER BY key LIMIT 1), 1"
    f" UNION ALL SELECT (SELECT key {_LIVE} AND key>{_NEXT} ORDER BY key LIMIT 1), n + 1"
    " FROM walk WHERE k IS NOT NULL AND n < :n)"
    " SELECT v.key, v.size, v.etag, v.modified_ns, coalesce(json_extract(v.meta, '$.sc'), 'STANDARD')"
    " FROM walk JOIN versions v ON v.bucket=:b AND v.key=walk.k AND v.is_latest=1 ORDER BY walk.n"
)


class ListingTables(Tables):
    """The listing and metadata-query part of ``SqliteCatalog`` (a mixin: ``_tables.py``)."""

    async def scan_latest(
        self, bucket: str, after: bytes, below: bytes, limit: int, *, inclusive: bool = False
    ) -> list[tuple[bytes, int, str, int, str]]:
        """Live latest versions with ``after < key < below`` (``<=`` when inclusive), in byte
        order: (key, size, etag, modified_ns, storage class)."""
        op = ">=" if inclusive else ">"
        return (
            self._reader()
            .execute(
                # The storage class is the only part of the metadata a listing shows.
                "SELECT key, size, etag, modified_ns, coalesce(json_extract(meta, '$.sc'), 'STANDARD')"  # noqa: S608
                f" FROM versions WHERE bucket=? AND is_latest=1 AND key{op}? AND key<? AND is_delete_marker=0"
                " ORDER BY key LIMIT ?",
                (bucket, after, below, limit),
            )
            .fetchall()
        )

    async def scan_delimited(
        self, bucket: str, after: bytes, below: bytes, limit: int, *, inclusive: bool, skip_from: int, delimiter: bytes
    ) -> list[tuple[bytes, int, str, int, str]]:
        """Like ``scan_latest``, but after a key with ``delimiter`` at or after byte ``skip_from``
        the walk seeks past every key sharing its prefix through that delimiter (a common
        prefix): one row per listing entry or common prefix, in one query (a recursive index
        seek per row, not a scan of the keys under each prefix)."""
        op = ">=" if inclusive else ">"
        return (
            self._reader()
            .execute(
                _SCAN_DELIMITED.format(op=op),
                {"b": bucket, "after": after, "below": below, "n": limit, "skip": skip_from, "d": delimiter},
            )
            .fetchall()
        )

    async def scan_versions(
        self, bucket: str, after_key: bytes, after_seq: int | None, below: bytes, limit: int
    ) -> list[tuple[VersionRecord, int, bool]]:
        """Every version in (key ASC, newest first) order, starting after (after_key, after_seq);
        ``after_seq=None`` starts at ``after_key`` itself (inclusive). Yields (record, seq, is_latest)."""
        args: tuple[object, ...]
        if after_seq is None:
            where, args = "key >= ?", (after_key,)
        else:
            where, args = "(key > ? OR (key = ? AND seq < ?))", (after_key, after_key, after_seq)
        rows = (
            self._reader()
            .execute(
                f"SELECT {VERSION_COLS}, seq, is_latest FROM versions"  # noqa: S608 - constant fragments
                f" WHERE bucket=? AND {where} AND key<? ORDER BY key, seq DESC LIMIT ?",
                (bucket, *args, below, limit),
            )
            .fetchall()
        )
        return [(row_to_record(bucket, r[:-2]), r[-2], bool(r[-1])) for r in rows]

    async def query(self, bucket: str, text: str, cursor: str | None = None) -> tuple[list[VersionRecord], str | None]:
        """One page of a metadata query (catalog/_query.py) over the bucket's current objects.
        Returns the matching versions in query order and the cursor of the next page."""
        q = parse(text)
        sql, params = compile_sqlite(q, bucket, cursor)
        conn = self._reader()
        rows = conn.execute(sql, params).fetchall()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        records = []
        for row in rows:
            found = conn.execute(
                f"SELECT {VERSION_COLS} FROM versions WHERE bucket=? AND key=? AND version_id=?",  # noqa: S608 - constant
                (bucket, row[0], row[1]),
            ).fetchone()
            if found is not None:
                records.append(row_to_record(bucket, found))
        return records, (next_cursor(q, rows[-1]) if more and rows else None)
