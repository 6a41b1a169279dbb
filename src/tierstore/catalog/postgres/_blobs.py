"""Blob references, the trash, and inline bodies on PostgreSQL (as catalog/sqlite/_blobs.py keeps them).

Blobs are counted in ``blobs.refs``; the last reference going away moves a blob to ``trash`` in
the same transaction, which GC drains. Inline bodies (docs/inline.md) live in ``inline_blobs``
with their CRC32C, verified on every read. Row locks serialize writers of one blob's row;
nothing here takes a key's lock (the callers that change a key already hold it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from awscrt.checksums import crc32c

from tierstore.catalog.postgres._pool import Pool
from tierstore.errors import CorruptBlob

__all__ = ["BlobTables", "ref", "release_inline", "unref_all", "verified_inline"]


async def ref(c: Any, blob_id: str, size: int, tier: str | None = None) -> None:
    """One more reference to ``blob_id`` (``tierstore_ref``, catalog/postgres/_schema.py)."""
    await c.execute("SELECT tierstore_ref($1::text[], $2::bigint[], $3::text[])", [blob_id], [size], [tier])


async def unref_all(c: Any, blob_ids: Iterable[str]) -> None:
    """One reference less to each (an id listed twice loses two); a blob no one references goes:
    a local one to the trash, a remote one to its tier's outbox (and its local copy, if any, to
    the trash) (``tierstore_unref``, catalog/postgres/_schema.py: one round trip)."""
    ids = list(blob_ids)
    if ids:
        await c.execute("SELECT tierstore_unref($1::text[])", ids)


async def release_inline(c: Any, inline_id: str) -> None:
    """An inline body's version no longer names it: the row goes, unless a dataset pins it (then
    it is marked released and lives on for the pins), as ``tierstore_drop_version`` releases one."""
    await c.execute(
        "WITH gone AS (DELETE FROM inline_blobs WHERE blob_id = $1 AND pins = 0 RETURNING 1)"
        " UPDATE inline_blobs SET released = true WHERE blob_id = $1 AND NOT EXISTS(SELECT 1 FROM gone)",
        inline_id,
    )


def verified_inline(blob_id: str, crc: int | None, data: bytes | None, what: str) -> bytes:
    """Inline body ``blob_id`` (of object key ``what``) as read, if it matches its CRC32C.
    PostgreSQL keeps one copy (its own page checksums and replicas are its business), so a
    mismatch is ``CorruptBlob``."""
    if data is not None and crc is not None and crc32c(data) == crc:
        return bytes(data)
    raise CorruptBlob(f"The stored bytes of {what!r} are damaged.", resource=what)


class BlobTables:
    """The blob, trash and inline-body calls of the catalog protocol."""

    _pool: Pool

    async def blob_known(self, blob_id: str) -> bool:
        """True if the catalog references ``blob_id`` as a local blob (or a remote one with a
        local copy), still has it queued for deletion, or holds it (a hot copy may be on its way:
        docs/tiers.md "Hot copies")."""
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS(SELECT 1 FROM blobs WHERE blob_id = $1 AND (tier IS NULL OR cached IS NOT NULL))"
                " OR EXISTS(SELECT 1 FROM trash WHERE blob_id = $1)"
                " OR EXISTS(SELECT 1 FROM hot_holds WHERE blob_id = $1)",
                blob_id,
            )
        )

    async def blob_page(self, after: str = "", limit: int = 1000) -> list[tuple[str, int]]:
        """Referenced local blobs in blob_id order after ``after``: (blob_id, size_bytes)."""
        rows = await self._pool.fetch(
            "SELECT blob_id, size FROM blobs WHERE blob_id > $1 AND (tier IS NULL OR cached IS NOT NULL)"
            " ORDER BY blob_id LIMIT $2",
            after, limit,
        )  # fmt: skip
        return [(str(b), int(n)) for b, n in rows]

    async def blob_count(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM blobs"))

    async def trash_batch(self, limit: int = 1000) -> list[str]:
        rows = await self._pool.fetch("SELECT blob_id FROM trash LIMIT $1", limit)
        return [str(r[0]) for r in rows]

    async def trash_done(self, blob_ids: list[str]) -> None:
        async def fn(c: Any) -> None:
            await c.execute("DELETE FROM trash WHERE blob_id = ANY($1::text[])", blob_ids)

        await self._pool.write(fn)

    async def trash_add(self, blob_ids: list[str]) -> None:
        """Queue blobs that were written but never published (a failed request) for deletion."""

        async def fn(c: Any) -> None:
            await c.execute(
                "INSERT INTO trash(blob_id) SELECT b FROM unnest($1::text[]) AS b"
                " WHERE NOT EXISTS(SELECT 1 FROM blobs WHERE blob_id = b) ON CONFLICT DO NOTHING",
                blob_ids,
            )

        await self._pool.write(fn)

    async def inline_bodies(self, ids: Sequence[str]) -> dict[str, bytes]:
        """The inline bodies ``ids`` (verified, as a GET reads them), by id; a missing id is absent."""
        rows = await self._pool.fetch(
            "SELECT blob_id, crc32c, data FROM inline_blobs WHERE blob_id = ANY($1::text[])", list(dict.fromkeys(ids))
        )
        return {b: verified_inline(b, crc, data, f"inline body {b}") for b, crc, data in rows}

    async def inline_verify_page(self, after: str = "", limit: int = 1000) -> tuple[list[tuple[str, int]], set[str]]:
        """The scrub's walk over inline bodies: the next ``limit`` in id order after ``after`` as
        (inline id, size_bytes), and the ids among them whose CRC32C fails."""
        rows = await self._pool.fetch(
            "SELECT blob_id, crc32c, data FROM inline_blobs WHERE blob_id > $1 ORDER BY blob_id LIMIT $2", after, limit
        )
        page = [(str(b), len(d)) for b, _crc, d in rows]
        return page, {str(b) for b, crc, d in rows if crc32c(d) != crc}

    def take_damaged_inline(self) -> list[str]:  # synchronous, as the protocol's: it reads no table
        """Inline ids a read found damaged and served from elsewhere: none here (one copy)."""
        return []

    async def check_inline(self, inline_id: str) -> str:
        """One of "healthy", "lost" (its CRC32C fails: there is no other copy to repair it from)
        or "gone" (deleted meanwhile)."""
        row = await self._pool.fetchrow("SELECT crc32c, data FROM inline_blobs WHERE blob_id = $1", inline_id)
        if row is None:
            return "gone"
        return "healthy" if crc32c(row[1]) == row[0] else "lost"
