"""The catalog side of encryption-at-rest maintenance on PostgreSQL (docs/encryption.md
"Rotation", "Erasure coding, bitrot, heal and scrub"), as catalog/sqlite/_sse.py: walking encrypted
versions, re-wrapping a data key in place, naming the objects a damaged blob belongs to.

No tables of its own: an encrypted version is one whose ``versions.meta`` has an ``"e"``
document. The walks scan ``versions`` in (bucket name, key, version id) order a page at a time,
for background jobs (rotation, heal), never on a request path; no index serves them, as none
does on SQLite.
"""

from __future__ import annotations

import json
from typing import Any

from tierstore.catalog._records import SseVersion, VersionName
from tierstore.catalog.postgres._codec import dumps
from tierstore.catalog.postgres._pool import Pool

__all__ = ["SseTables"]

# Buckets in name order from the cursor's, and in each a range scan of the versions' primary
# key from the cursor (the first bucket) or its start (the others, ('', '') being below every
# key), filtered, at most $4 each: a page costs its own rows, never a sort of the whole table.
_WALK = (
    "SELECT b.name, v.key, v.version_id, v.e FROM (SELECT id, name FROM buckets WHERE name >= $1) b,"
    " LATERAL (SELECT key, version_id, meta -> 'e' AS e FROM versions WHERE bucket_id = b.id"
    " AND (key, version_id) > (CASE WHEN b.name = $1 THEN $2 ELSE ''::bytea END,"
    " CASE WHEN b.name = $1 THEN $3 ELSE '' END) AND {match} ORDER BY key, version_id LIMIT $4) v"
    " ORDER BY b.name, v.key, v.version_id LIMIT $4"
)
_ENCRYPTED = _WALK.format(match="meta #>> '{e,v}' IS NOT NULL")
_WRAPPED_BY = _WALK.format(match="meta #>> '{e,kid}' = $5")


class SseTables:
    """The encryption-maintenance calls of the catalog protocol."""

    _pool: Pool

    async def sse_versions_page(
        self, *, key_id: str | None = None, after: VersionName | None = None, limit: int = 500
    ) -> list[SseVersion]:
        """The next ``limit`` encrypted versions after ``after`` in (bucket, key, version id)
        order; with ``key_id``, only those whose data key that key service key wrapped (``"kid"``)."""
        bucket, key, version_id = after if after is not None else ("", "", "")
        args: list[Any] = [bucket, key.encode(), version_id, limit]
        if key_id is None:
            rows = await self._pool.fetch(_ENCRYPTED, *args)
        else:
            rows = await self._pool.fetch(_WRAPPED_BY, *args, key_id)
        return [SseVersion(b, bytes(k).decode(), v, json.loads(e)) for b, k, v, e in rows]

    async def sse_replace_wrapped_key(self, name: VersionName, old: str, new: str) -> bool:
        """Set version ``name``'s ``"e"."wk"`` to ``new`` if it still is ``old`` (a compare and
        swap, one statement: a version deleted, overwritten or re-wrapped meanwhile is left
        alone); True if set. Nothing else of the row changes (the MAC does not cover the wrapped key)."""
        bucket, key, version_id = name

        async def fn(c: Any) -> bool:
            # The document is json kept as written (catalog/postgres/_schema.py): rewritten here
            # compact and in its keys' order, as SQLite's json_set writes it; the row locked
            # between the read and the write.
            row = await c.fetchrow(
                "SELECT v.bucket_id, v.meta FROM versions v JOIN buckets b ON b.id = v.bucket_id"
                " WHERE b.name = $1 AND v.key = $2 AND v.version_id = $3 FOR UPDATE OF v",
                bucket, key.encode(), version_id,
            )  # fmt: skip
            if row is None:
                return False
            doc = json.loads(row[1])
            e = doc.get("e")
            if not isinstance(e, dict) or e.get("wk") != old:
                return False
            e["wk"] = new
            await c.execute(
                "UPDATE versions SET meta = $1::json WHERE bucket_id = $2 AND key = $3 AND version_id = $4",
                dumps(doc), row[0], key.encode(), version_id,
            )  # fmt: skip
            return True

        return await self._pool.write(fn)

    async def versions_of_blob(self, blob_id: str, limit: int = 10) -> list[VersionName]:
        """Up to ``limit`` versions whose body includes blob ``blob_id`` (copies share blobs), or
        whose inline body it is: the objects a damaged blob belongs to, for heal reports."""
        rows = await self._pool.fetch(
            "SELECT b.name, v.key, v.version_id FROM versions v JOIN buckets b ON b.id = v.bucket_id"
            " WHERE v.inline_id = $1 OR v.blobs::jsonb @> jsonb_build_array(jsonb_build_array($1::text))"
            " ORDER BY b.name, v.key, v.version_id LIMIT $2",
            blob_id, limit,
        )  # fmt: skip
        return [(b, bytes(k).decode(), v) for b, k, v in rows]
