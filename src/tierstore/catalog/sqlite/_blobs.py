"""Blob references, the trash and inline bodies of the embedded catalog.

Blob references are counted in ``blobs``; a version that goes away moves its unreferenced blobs
into ``trash`` in the same transaction, which GC drains. A blob on disk that is in neither table is
an orphan (a crash between blob write and commit) and GC removes it after a grace period that
covers in-flight uploads. Inline bodies (docs/inline.md) are verified on every read; on a mirror a
damaged one is served from another copy and repaired.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TypeVar

from awscrt.checksums import crc32c

from tierstore.catalog.sqlite._tables import Tables
from tierstore.catalog.sqlite._tier_data import TierDataTables
from tierstore.errors import CorruptBlob

log = logging.getLogger("tierstore.catalog")

T = TypeVar("T")


_INLINE_ROW = "SELECT crc32c, data FROM inline_blobs WHERE blob_id=?"


class BlobTables(Tables):
    """The blob, trash and inline-body part of ``SqliteCatalog`` (a mixin: ``_tables.py``)."""

    @staticmethod
    def _ref(c: sqlite3.Connection, blob_id: str, size: int, tier: str | None = None) -> None:
        """One more reference to ``blob_id`` (new: on the local drives, or in ``tier``)."""
        c.execute(
            "INSERT INTO blobs(blob_id, size, refs, tier) VALUES(?,?,1,?)"
            " ON CONFLICT(blob_id) DO UPDATE SET refs = refs + 1",
            (blob_id, size, tier),
        )
        # A local blob queued for deletion is saved; a moved blob's local copy stays queued.
        sql = "DELETE FROM trash WHERE blob_id=? AND (SELECT tier FROM blobs WHERE blob_id=?) IS NULL"
        c.execute(sql, (blob_id, blob_id))

    @staticmethod
    def _unref_all(c: sqlite3.Connection, blob_ids: Iterable[str]) -> None:
        """One reference less to each; a blob no one references goes: a local one to the trash,
        a remote one to its tier's outbox (docs/tiers.md "Deleting remote bytes")."""
        for blob_id in blob_ids:
            c.execute("UPDATE blobs SET refs = refs - 1 WHERE blob_id=?", (blob_id,))
            row = c.execute("SELECT refs, tier, cached FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
            if row is None or row[0] <= 0:
                c.execute("DELETE FROM blobs WHERE blob_id=?", (blob_id,))
                if row is not None and row[1] is not None:
                    TierDataTables.queue_remote_delete(c, row[1], blob_id)
                    if row[2] is not None:  # and its local copy (docs/tiers.md "Hot copies")
                        c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (blob_id,))
                else:
                    c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (blob_id,))

    async def blob_known(self, blob_id: str) -> bool:
        """True if the catalog references ``blob_id`` as a blob on the local drives or still has
        it queued for deletion there (a blob moved to a tier is no longer local), or as a remote
        blob with a local copy or held (a copy may be on its way: docs/tiers.md "Hot copies")."""
        c = self._reader()
        local = "SELECT 1 FROM blobs WHERE blob_id=? AND (tier IS NULL OR cached IS NOT NULL)"
        return bool(
            c.execute(local, (blob_id,)).fetchone()
            or c.execute("SELECT 1 FROM trash WHERE blob_id=?", (blob_id,)).fetchone()
            or c.execute("SELECT 1 FROM hot_holds WHERE blob_id=? LIMIT 1", (blob_id,)).fetchone()
        )

    async def blob_page(self, after: str = "", limit: int = 1000) -> list[tuple[str, int]]:
        """Referenced local blobs (and local copies of remote ones) in blob_id order after ``after``:
        (blob_id, size_bytes). The heal walk."""
        sql = (
            "SELECT blob_id, size FROM blobs WHERE blob_id > ? AND (tier IS NULL OR cached IS NOT NULL)"
            " ORDER BY blob_id LIMIT ?"
        )
        rows = self._reader().execute(sql, (after, limit)).fetchall()
        return [(str(b), int(n)) for b, n in rows]

    async def blob_count(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM blobs").fetchone()[0])

    def _verified_inline(self, blob_id: str, crc: int | None, data: bytes | None, what: str) -> bytes:
        """Inline body ``blob_id`` (of object key ``what``) as read (``crc``, ``data``), if it
        matches its CRC32C. On a mirror a damaged row is read again from the other live copies,
        the first good one is served and the id queued for repair (``take_damaged_inline``)."""
        if data is not None and crc is not None and crc32c(data) == crc:
            return data
        if self._mirror is not None:
            for index, rows in self._mirror.read_elsewhere(_INLINE_ROW, (blob_id,)):
                other = rows[0] if rows else None
                if other is not None and crc32c(other[1]) == other[0]:
                    log.warning("inline body %s is damaged in a catalog copy; served from drive %d", blob_id, index)
                    with self._damaged_lock:
                        self._damaged_inline.add(blob_id)
                    return bytes(other[1])
        log.error("inline body %s of %r is damaged beyond repair", blob_id, what)
        raise CorruptBlob(f"The stored bytes of {what!r} are damaged.", resource=what)

    async def inline_verify_page(self, after: str = "", limit: int = 1000) -> tuple[list[tuple[str, int]], set[str]]:
        """The scrub's walk over inline bodies: the next ``limit`` of them in id order after
        ``after`` as (inline id, size_bytes), and the ids among them whose CRC32C fails on any
        catalog copy (one query per copy per page; ``check_inline`` then repairs those)."""
        rows = (
            self._reader()
            .execute(
                "SELECT blob_id, crc32c, data FROM inline_blobs WHERE blob_id > ? ORDER BY blob_id LIMIT ?",
                (after, limit),
            )
            .fetchall()
        )
        page = [(str(b), len(d)) for b, _crc, d in rows]
        damaged = {str(b) for b, crc, d in rows if crc32c(d) != crc}
        if self._mirror is not None and rows:
            sql = "SELECT blob_id, crc32c, data FROM inline_blobs WHERE blob_id > ? AND blob_id <= ?"
            for _index, others in self._mirror.read_elsewhere(sql, (after, rows[-1][0])):
                damaged |= {str(b) for b, crc, d in others if crc32c(d) != crc}
        return page, damaged

    def take_damaged_inline(self) -> list[str]:
        """Inline ids that reads found damaged (and, on a mirror, served from another copy)."""
        with self._damaged_lock:
            ids, self._damaged_inline = sorted(self._damaged_inline), set()
        return ids

    async def check_inline(self, inline_id: str) -> str:
        """Verify one inline body on every copy: "healthy", "repaired" (a mirror copy was damaged
        and is rewritten from a good one, on every copy in one transaction), "lost" (no copy
        matches its CRC32C) or "gone" (deleted meanwhile)."""
        rows = [self._reader().execute(_INLINE_ROW, (inline_id,)).fetchone()]
        if self._mirror is not None:
            elsewhere = self._mirror.read_elsewhere(_INLINE_ROW, (inline_id,))
            rows += [found[0] if found else None for _index, found in elsewhere]
        present = [row for row in rows if row is not None]
        if not present:
            return "gone"
        good = [row for row in present if crc32c(row[1]) == row[0]]
        if len(good) == len(present):
            return "healthy"
        if not good:
            return "lost"
        crc, data = good[0]

        def fn(c: sqlite3.Connection) -> int:  # rows are never changed otherwise: rewriting is safe
            sql = "UPDATE inline_blobs SET crc32c=?, data=? WHERE blob_id=?"
            return c.execute(sql, (crc, data, inline_id)).rowcount

        return "repaired" if await self._write(fn) else "gone"

    async def inline_bodies(self, ids: Sequence[str]) -> dict[str, bytes]:
        """The inline bodies ``ids`` (verified, as a GET reads them), by id; a missing id is absent.
        One query for the lot: a batch of dataset rows costs one statement, not one per row."""
        found: dict[str, bytes] = {}
        conn = self._reader()
        distinct = list(dict.fromkeys(ids))
        for start in range(0, len(distinct), 500):  # SQLite's bound-parameter limit
            part = distinct[start : start + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT blob_id, crc32c, data FROM inline_blobs WHERE blob_id IN ({marks})"  # noqa: S608
            for blob_id, crc, data in conn.execute(sql, part).fetchall():
                found[blob_id] = self._verified_inline(blob_id, crc, data, f"inline body {blob_id}")
        return found

    async def trash_batch(self, limit: int = 1000) -> list[str]:
        rows = self._reader().execute("SELECT blob_id FROM trash LIMIT ?", (limit,)).fetchall()
        return [r[0] for r in rows]

    async def trash_done(self, blob_ids: list[str]) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.executemany("DELETE FROM trash WHERE blob_id=?", [(b,) for b in blob_ids])

        await self._write(fn)

    async def trash_add(self, blob_ids: list[str]) -> None:
        """Queue blobs that were written but never published (a failed request) for deletion."""

        def fn(c: sqlite3.Connection) -> None:
            for b in blob_ids:
                if not c.execute("SELECT 1 FROM blobs WHERE blob_id=?", (b,)).fetchone():
                    c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (b,))

        await self._write(fn)
