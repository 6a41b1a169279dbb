"""The catalog side of encryption-at-rest maintenance (docs/encryption.md "Rotation", "Erasure
coding, bitrot, heal and scrub"): walking encrypted versions, re-wrapping a data key in place,
and naming the objects a damaged blob belongs to.

No schema change: an encrypted version is one whose metadata JSON has an ``"e"`` document
(``versions.meta``), found with SQLite's JSON functions. The walks are full scans of
``versions`` in primary-key order, a page at a time, for background jobs (rotation, heal),
never on a request path.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, TypeVar

from tierstore.catalog._records import SseVersion, VersionName
from tierstore.catalog.sqlite._tables import Tables

__all__ = ["SseTables"]

T = TypeVar("T")


class SseTables(Tables):
    """The encryption part of ``SqliteCatalog`` (a mixin, like ``KmsTables``: reads through
    ``_reader()``, writes through ``_write(fn)``, so a drive set changes every catalog copy)."""

    async def sse_versions_page(
        self, *, key_id: str | None = None, after: VersionName | None = None, limit: int = 500
    ) -> list[SseVersion]:
        """The next ``limit`` encrypted versions after ``after`` in (bucket, key, version id)
        order; with ``key_id``, only those whose data key that key service key wrapped (``"kid"``)."""
        sql = "SELECT bucket, key, version_id, json_extract(meta, '$.e') FROM versions WHERE "
        args: list[Any] = []
        if key_id is None:
            sql += "json_extract(meta, '$.e.v') IS NOT NULL"
        else:
            sql += "json_extract(meta, '$.e.kid') = ?"
            args.append(key_id)
        if after is not None:
            sql += " AND (bucket, key, version_id) > (?, ?, ?)"
            args += [after[0], after[1].encode(), after[2]]
        sql += " ORDER BY bucket, key, version_id LIMIT ?"
        args.append(limit)
        rows = self._reader().execute(sql, args).fetchall()
        return [SseVersion(b, bytes(k).decode(), v, json.loads(e)) for b, k, v, e in rows]

    async def sse_replace_wrapped_key(self, name: VersionName, old: str, new: str) -> bool:
        """Set version ``name``'s ``"e"."wk"`` to ``new`` if it still is ``old`` (a compare and
        swap: a version deleted, overwritten or re-wrapped meanwhile is left alone); True if set.
        Nothing else of the row changes (the MAC does not cover the wrapped key)."""
        bucket, key, version_id = name

        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE versions SET meta = json_set(meta, '$.e.wk', ?)"
                " WHERE bucket=? AND key=? AND version_id=? AND json_extract(meta, '$.e.wk') = ?",
                (new, bucket, key.encode(), version_id, old),
            )
            return cur.rowcount > 0

        return await self._write(fn)

    async def versions_of_blob(self, blob_id: str, limit: int = 10) -> list[VersionName]:
        """Up to ``limit`` versions whose body includes blob ``blob_id`` (copies share blobs), or
        whose inline body it is: the objects a damaged blob belongs to, for heal reports."""
        sql = (
            "SELECT bucket, key, version_id FROM versions WHERE inline_id = ?1 OR (blobs LIKE ?2 AND EXISTS"
            " (SELECT 1 FROM json_each(blobs) WHERE json_extract(json_each.value, '$[0]') = ?1))"
            " ORDER BY bucket, key, version_id LIMIT ?3"
        )
        rows = self._reader().execute(sql, (blob_id, f'%"{blob_id}"%', limit)).fetchall()
        return [(b, bytes(k).decode(), v) for b, k, v in rows]
