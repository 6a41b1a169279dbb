"""Health and usage figures of the embedded catalog (docs/observability.md)."""

from __future__ import annotations

import asyncio
import sqlite3

from tierstore.catalog.sqlite._tables import Tables


class _ProbeDone(Exception):
    """``probe_write``'s job: the write lock was taken; roll back."""


class StatsTables(Tables):
    """The health and usage part of ``SqliteCatalog`` (a mixin: ``_tables.py``)."""

    async def probe_write(self) -> None:
        """Raise unless a write could commit now: a job that takes the write lock as any write
        does (on a mirror: on a quorum of copies) and changes nothing. Cheap: no page is
        written, no fsync (an empty transaction)."""

        def fn(c: sqlite3.Connection) -> None:
            raise _ProbeDone

        try:
            await self._write(fn)
        except _ProbeDone:
            return

    async def bucket_usage(self, limit: int) -> list[tuple[str, int, int, int, int, int]]:
        """Per bucket (the first ``limit`` by name): (bucket, objects, object bytes, versions,
        delete markers, stored bytes of every version). One aggregate query over the version
        rows of those buckets in primary-key order (no index holds the sums: ~0.5 s a million
        versions), so callers cache it; it runs on a worker thread, not on the event loop."""
        return await asyncio.to_thread(self._bucket_usage, limit)

    def _bucket_usage(self, limit: int) -> list[tuple[str, int, int, int, int, int]]:
        c = self._reader()
        names = [str(r[0]) for r in c.execute("SELECT name FROM buckets ORDER BY name LIMIT ?", (limit,))]
        if not names:
            return []
        sums = {
            str(r[0]): tuple(int(x or 0) for x in r[1:])
            for r in c.execute(
                "SELECT bucket, sum(is_latest AND NOT is_delete_marker),"
                " sum(CASE WHEN is_latest AND NOT is_delete_marker THEN size ELSE 0 END),"
                " count(*), sum(is_delete_marker), sum(size)"
                " FROM versions NOT INDEXED WHERE bucket >= ? AND bucket <= ? GROUP BY bucket",
                (names[0], names[-1]),
            )
        }
        out = []
        for name in names:
            objects, object_bytes, versions, markers, stored = sums.get(name, (0, 0, 0, 0, 0))
            out.append((name, objects, object_bytes, versions, markers, stored))
        return out

    async def bucket_count(self) -> int:
        """On a worker thread (the health probe's read: a stuck catalog must not stall the loop)."""
        sql = "SELECT count(*) FROM buckets"
        return await asyncio.to_thread(lambda: int(self._reader().execute(sql).fetchone()[0]))

    async def counts(self) -> dict[str, int]:
        c = self._reader()
        return {
            "buckets": c.execute("SELECT count(*) FROM buckets").fetchone()[0],
            "versions": c.execute("SELECT count(*) FROM versions").fetchone()[0],
            "blobs": c.execute("SELECT count(*) FROM blobs").fetchone()[0],
            "trash": c.execute("SELECT count(*) FROM trash").fetchone()[0],
            "inline": c.execute("SELECT count(*) FROM inline_blobs").fetchone()[0],
            "uploads": c.execute("SELECT count(*) FROM uploads").fetchone()[0],
        }
