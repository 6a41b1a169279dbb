"""The metadata query on PostgreSQL (catalog/_query.py's second dialect, docs/query.md).

No side table: the compiler reads each current version's metadata document (``versions.meta``,
json kept as written) in place, so PUT, DELETE and tag changes maintain no attribute index;
numbers are ``tierstore_attr_num`` (SQL twin of ``attr_num``). A GIN index (``jsonb_path_ops``)
over the current versions' documents read as jsonb (an expression index on ``meta::jsonb``)
answers the ``@>`` containment the compiler adds to a positive equality on a meta or tag string
(docs/query.md "On PostgreSQL", by measurement: benchmarks/pg_query.py).
"""

from __future__ import annotations

from typing import Any

from tierstore.catalog._query import PG_ATTR_NUM_DDL, compile_postgres, next_cursor, parse
from tierstore.catalog._rules import row_to_record
from tierstore.catalog.postgres._codec import VERSION_COLS
from tierstore.catalog.postgres._pool import Pool

# Records: one definition for both engines (the package exports them).
from tierstore.catalog import VersionRecord  # isort: skip

__all__ = ["QUERY_DDL", "QueryTables"]

QUERY_DDL = (
    *PG_ATTR_NUM_DDL,
    "CREATE INDEX versions_meta ON versions USING gin ((meta::jsonb) jsonb_path_ops)"
    " WHERE is_latest AND NOT is_delete_marker",
    # ANALYZE's statistics of the same expression: without them the planner prices a containment
    # at a default 1% of the rows and walks the bucket in key order instead of the index (a rare
    # equality on 100,000 versions: 511 ms instead of 0.1 ms, docs/benchmarks.md).
    "CREATE STATISTICS versions_meta_stats ON (meta::jsonb) FROM versions",
)


class QueryTables:
    """The metadata-query call of the catalog protocol."""

    _pool: Pool

    async def query(self, bucket: str, text: str, cursor: str | None = None) -> tuple[list[VersionRecord], str | None]:
        """One page of a metadata query (catalog/_query.py) over the bucket's current objects.
        Returns the matching versions in query order and the cursor of the next page."""
        q = parse(text)
        sql, params = compile_postgres(q, bucket, cursor)
        async with self._pool.connection() as c:
            rows = [tuple(r) for r in await c.fetch(sql, *params)]
            more = len(rows) > q.limit
            rows = rows[: q.limit]
            found: dict[tuple[bytes, str], Any] = {}
            if rows:
                for r in await c.fetch(
                    f"SELECT {VERSION_COLS} FROM versions v JOIN buckets b ON b.id = v.bucket_id"  # noqa: S608 - constant
                    " JOIN unnest($2::bytea[], $3::text[]) AS p(key, version_id)"
                    " ON v.key = p.key AND v.version_id = p.version_id WHERE b.name = $1",
                    bucket, [r[0] for r in rows], [r[1] for r in rows],
                ):  # fmt: skip
                    found[(bytes(r[0]), str(r[1]))] = r
        records = [row_to_record(bucket, found[k]) for r in rows if (k := (bytes(r[0]), str(r[1]))) in found]
        return records, (next_cursor(q, rows[-1]) if more and rows else None)
