"""Where blobs live and the tier outbox on PostgreSQL: the catalog side of the tier data path
(docs/tiers.md), as catalog/sqlite/_tier_data.py.

``blobs.tier`` says where a blob's authoritative bytes are (NULL: the local drives or the
store); ``TIERS_OF_BLOBS`` is the column a version read adds to learn it (``located`` reads it,
as on SQLite). ``transition_commit`` is the mover's one transaction: it takes the key's lock (it
changes the version), holds the tier's row ``FOR SHARE`` (``tier_delete`` waits) and locks the
blob rows it checks, so what it checked is what it switches. ``queue_remote_delete`` is what a
remote blob's last reference going away does (the local trash's counterpart).

What the mover's commit also does in tables of other modules goes through four hooks, each
correct for a catalog without that module, overridden by the module that owns the table (its
mixin comes before this one in ``PostgresCatalog``'s bases):
``_count_moved`` (``tier_stats``), ``_free_unheld`` (hot holds: without any, a moved blob's local
copy is freed), ``_tier_write_settled`` (``tier_pending``) and ``_reindex`` (the metadata query's
index of the key's current version).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tierstore.catalog._records import BlobTier, InlineMove, OutboxEntry
from tierstore.catalog._rules import transition_applies
from tierstore.catalog.postgres._blobs import ref, release_inline, unref_all
from tierstore.catalog.postgres._buckets import lock_keys
from tierstore.catalog.postgres._codec import TIERS_OF_BLOBS, dumps
from tierstore.catalog.postgres._pool import Pool
from tierstore.catalog.postgres._versions import version_in

from tierstore.catalog import PINNING_TABLES  # isort: skip

__all__ = ["TIERS_OF_BLOBS", "TierDataTables", "queue_remote_delete"]


async def queue_remote_delete(c: Any, tier: str, blob_id: str) -> None:
    """Inside a write: the remote object ``blob_id`` of ``tier`` is to be deleted (due now)."""
    await c.execute(
        "INSERT INTO tier_outbox(tier, blob_id, queued_ns, attempts, next_ns) VALUES($1, $2, $3, 0, 0)"
        " ON CONFLICT DO NOTHING",
        tier, blob_id, time.time_ns(),
    )  # fmt: skip


async def _hold_tier(c: Any, tier: str) -> None:
    """The tier's row held ``FOR SHARE`` until commit: ``tier_delete`` cannot count and drop it
    meanwhile (a tier that does not exist is no one's to protect: the caller goes on, as on SQLite)."""
    await c.execute("SELECT 1 FROM tiers WHERE name = $1 FOR SHARE", tier)


class TierDataTables:
    """The tier-data calls of the catalog protocol (and the hooks named in the module docstring)."""

    _pool: Pool

    # --- hooks: the defaults are right for a catalog without the module owning the table ----
    async def _count_moved(self, c: Any, tier: str, size_bytes: int) -> None:
        """Inside the mover's commit: one more object (of ``size_bytes``) moved to ``tier``."""

    async def _free_unheld(self, c: Any, blob_ids: Sequence[str], now_ns: int) -> int:
        """Inside a write: drop the local copy (cached -> NULL, into the trash) of each of
        ``blob_ids`` that no live hold needs; returns how many. Without hot holds none does."""
        rows = await c.fetch(
            "UPDATE blobs SET cached = NULL WHERE blob_id = ANY($1::text[]) AND cached IS NOT NULL RETURNING blob_id",
            list(blob_ids),
        )
        if rows:
            await c.execute(
                "INSERT INTO trash(blob_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", [r[0] for r in rows]
            )
        return len(rows)

    async def _tier_write_settled(self, c: Any, bucket: str, bucket_id: int, key_b: bytes, version_id: str) -> None:
        """Inside the mover's commit: the version no longer waits for a tier."""

    async def _reindex(self, c: Any, bucket: str, bucket_id: int, key_b: bytes) -> None:
        """Inside a write that changed the key's current version's metadata (its class)."""

    if TYPE_CHECKING:  # LifecycleTables' (after this class in PostgresCatalog's bases: no stub at run time)

        async def _lifecycle_key(self, c: Any, bucket_id: int, key_b: bytes, props: dict[str, Any]) -> None: ...

    # --- where blobs are ------------------------------------------------------------------
    async def blob_tiers(self, blob_ids: Sequence[str]) -> dict[str, BlobTier]:
        """Where each of ``blob_ids`` that is in a remote tier is: the tier, and whether it has a
        local copy too (read from it; counted in the tier). Local and unknown ones are absent."""
        rows = await self._pool.fetch(
            "SELECT blob_id, tier, cached FROM blobs WHERE blob_id = ANY($1::text[]) AND tier IS NOT NULL",
            list(dict.fromkeys(blob_ids)),
        )
        return {str(b): BlobTier(str(t), c is not None) for b, t, c in rows}

    async def remote_blob_known(self, tier: str, blob_id: str) -> bool:
        """Whether the catalog names ``blob_id``: referenced (anywhere: a local blob may be on its
        way to the tier) or waiting in ``tier``'s outbox. The remote orphan sweep's test."""
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS(SELECT 1 FROM blobs WHERE blob_id = $2)"
                " OR EXISTS(SELECT 1 FROM tier_outbox WHERE tier = $1 AND blob_id = $2)",
                tier,
                blob_id,
            )
        )

    # --- the mover's transaction ----------------------------------------------------------------
    async def transition_commit(
        self,
        bucket: str,
        key: str,
        version_id: str,
        tier: str,
        moved: Sequence[tuple[str, str | None]],
        inline: InlineMove | None = None,
    ) -> bool:
        """Switch a version's bytes to ``tier`` (docs/tiers.md "The mover", step 3), as
        ``SqliteCatalog.transition_commit``: each of ``moved`` (``(blob_id, from)``) gets ``tier``,
        its local copy goes to the trash (unless held), a copy in another tier to that tier's
        outbox; ``inline``: the inline body becomes that new remote blob and the inline row is
        released as a delete releases it; the version's class becomes ``tier``; the tier's
        counters count what this commit moved. Only if the version still exists and still names
        those blobs (or that inline body), each still where ``from`` says or in ``tier`` already,
        and no old copy of one waits in ``tier``'s outbox: False, and nothing changed, otherwise."""
        key_b = key.encode()

        async def fn(c: Any) -> bool:
            await _hold_tier(c, tier)
            found = await c.fetchrow("SELECT id, props FROM buckets WHERE name = $1", bucket)
            if found is None:
                return False
            bucket_id = int(found[0])
            record = await version_in(c, bucket, bucket_id, key_b, version_id)
            if record is None or record.is_delete_marker:
                return False  # (no blob rows to lock)
            ids = [blob_id for blob_id, _ in moved]
            where = dict(
                await c.fetch(
                    "SELECT blob_id, tier FROM blobs WHERE blob_id = ANY($1::text[]) ORDER BY blob_id FOR UPDATE", ids
                )
            )
            queued = bool(
                await c.fetchval(
                    "SELECT 1 FROM tier_outbox WHERE tier = $1 AND blob_id = ANY($2::text[]) LIMIT 1", tier, ids
                )
            )
            if not transition_applies(record, tier, moved, inline, where, queued):
                return False
            size, now_ns = 0, time.time_ns()
            for blob_id, source in moved:
                changed = await c.fetchval(
                    "UPDATE blobs SET tier = $1 WHERE blob_id = $2 AND tier IS NOT DISTINCT FROM $3 RETURNING size",
                    tier, blob_id, source,
                )  # fmt: skip
                if changed is None:
                    continue  # already in ``tier``
                size += int(changed)
                if source is None:
                    # A blob a hot copy holds (a pin) keeps its local bytes as that copy.
                    await c.execute("UPDATE blobs SET cached = true WHERE blob_id = $1", blob_id)
                    await self._free_unheld(c, [blob_id], now_ns)
                else:
                    await queue_remote_delete(c, source, blob_id)
            if inline is not None:
                size += inline.size_bytes
            if size or inline is not None:
                await self._count_moved(c, tier, size)
            doc: dict[str, Any] = json.loads(
                await c.fetchval(
                    "SELECT meta FROM versions WHERE bucket_id = $1 AND key = $2 AND version_id = $3",
                    bucket_id,
                    key_b,
                    version_id,
                )
            )
            doc["sc"] = tier
            if inline is not None:
                await c.execute(
                    "INSERT INTO blobs(blob_id, size, refs, tier) VALUES($1, $2, 1, $3)",
                    inline.blob_id, inline.size_bytes, tier,
                )  # fmt: skip
                await c.execute(
                    "UPDATE versions SET meta = $1::json, storage_class = $2, blobs = $3::json, inline_id = NULL"
                    " WHERE bucket_id = $4 AND key = $5 AND version_id = $6",
                    dumps(doc), tier, dumps([[inline.blob_id, inline.size_bytes]]), bucket_id, key_b, version_id,
                )  # fmt: skip
                await release_inline(c, inline.inline_id)  # as a delete releases it: gone unless a dataset pins it
            else:
                await c.execute(
                    "UPDATE versions SET meta = $1::json, storage_class = $2"
                    " WHERE bucket_id = $3 AND key = $4 AND version_id = $5",
                    dumps(doc), tier, bucket_id, key_b, version_id,
                )  # fmt: skip
            await self._reindex(c, bucket, bucket_id, key_b)  # the class is an indexed attribute
            # ... and an input of the key's lifecycle rules: its rows (the worker's claimed
            # transition row among them) recomputed here, not in a transaction of their own.
            await self._lifecycle_key(c, bucket_id, key_b, json.loads(found[1]))
            await self._tier_write_settled(c, bucket, bucket_id, key_b, version_id)
            return True

        return await self._pool.write(fn, first=lock_keys(bucket, (key_b,)))

    # --- blobs moved by id (a dataset version's archive, docs/tiers.md "Dataset archive") ------------
    async def blobs_to_tier(self, tier: str, moved: Sequence[tuple[str, str | None]]) -> list[str]:
        """As ``SqliteCatalog.blobs_to_tier``: each ``(blob_id, from)`` still referenced and still
        in ``from`` (None: local) gets ``tier``, its old copy to the trash (unless a hold keeps it)
        or ``from``'s outbox; returns the ids that did not move (gone, elsewhere, or an old copy
        waiting in ``tier``'s outbox)."""
        now_ns = time.time_ns()
        ids = [blob_id for blob_id, _ in moved]

        async def fn(c: Any) -> list[str]:
            await _hold_tier(c, tier)
            where = dict(
                await c.fetch(
                    "SELECT blob_id, tier FROM blobs WHERE blob_id = ANY($1::text[]) ORDER BY blob_id FOR UPDATE", ids
                )
            )
            waiting = {
                r[0] for r in await c.fetch(
                    "SELECT blob_id FROM tier_outbox WHERE tier = $1 AND blob_id = ANY($2::text[])", tier, ids
                )
            }  # fmt: skip
            lost = []
            for blob_id, source in moved:
                if blob_id in where and where[blob_id] == tier:
                    continue
                if blob_id not in where or where[blob_id] != source or blob_id in waiting:
                    lost.append(blob_id)
                    continue
                size = await c.fetchval("UPDATE blobs SET tier = $1 WHERE blob_id = $2 RETURNING size", tier, blob_id)
                where[blob_id] = tier  # an id listed twice moves once
                if source is None:  # a blob a hot copy holds keeps its local bytes as that copy
                    await c.execute("UPDATE blobs SET cached = true WHERE blob_id = $1", blob_id)
                    await self._free_unheld(c, [blob_id], now_ns)
                else:
                    await queue_remote_delete(c, source, blob_id)
                await self._count_moved(c, tier, int(size))  # each blob one object of the tier's counters
            return lost

        return await self._pool.write(fn)

    async def dataset_inline_to_tier(
        self,
        table: str,
        name: str,
        version: int,
        manifests: tuple[str, tuple[str, int]],
        tier: str,
        moves: Sequence[InlineMove],
    ) -> bool:
        """As ``SqliteCatalog.dataset_inline_to_tier``: the version's pinned inline bodies become
        remote blobs in ``tier`` and its manifest the new one, in one transaction; False, nothing
        changed, if the version is gone or its manifest is no longer ``manifests[0]``."""
        if table not in PINNING_TABLES:
            raise ValueError(f"not a pinning table: {table!r}")
        old_manifest, (new_manifest, new_bytes) = manifests

        async def fn(c: Any) -> bool:
            await _hold_tier(c, tier)
            sql = f"SELECT manifest_blob FROM {table} WHERE name = $1 AND version = $2 FOR UPDATE"  # noqa: S608 - checked
            if await c.fetchval(sql, name, version) != old_manifest:
                return False
            for move in moves:
                await c.execute(
                    "INSERT INTO blobs(blob_id, size, refs, tier) VALUES($1, $2, 1, $3)",
                    move.blob_id, move.size_bytes, tier,
                )  # fmt: skip
                await self._count_moved(c, tier, move.size_bytes)
            ids = [m.inline_id for m in moves]
            # Pinned rows locked in id order (as pins are taken: catalog/postgres/_datasets.py), then unpinned.
            await c.execute(
                "SELECT 1 FROM inline_blobs WHERE blob_id = ANY($1::text[]) ORDER BY blob_id FOR UPDATE", ids
            )
            await c.executemany("UPDATE inline_blobs SET pins = pins - 1 WHERE blob_id = $1", [(i,) for i in ids])
            await c.execute("DELETE FROM inline_blobs WHERE blob_id = ANY($1::text[]) AND pins <= 0 AND released", ids)
            await ref(c, new_manifest, new_bytes)
            await c.execute(
                f"UPDATE {table} SET manifest_blob = $1, manifest_bytes = $2 WHERE name = $3 AND version = $4",  # noqa: S608
                new_manifest, new_bytes, name, version,
            )  # fmt: skip
            await unref_all(c, [old_manifest])
            return True

        return await self._pool.write(fn)

    # --- the outbox -----------------------------------------------------------------------------
    async def outbox_add(self, tier: str, blob_ids: Sequence[str]) -> None:
        """Queue remote objects written for nothing (a transition that lost its version); one the
        catalog references as ``tier``'s is skipped (another mover published it)."""

        async def fn(c: Any) -> None:
            await c.execute(
                "INSERT INTO tier_outbox(tier, blob_id, queued_ns, attempts, next_ns)"
                " SELECT DISTINCT $1, b, $3::bigint, 0, 0 FROM unnest($2::text[]) AS b"
                " WHERE NOT EXISTS(SELECT 1 FROM blobs WHERE blob_id = b AND tier = $1) ON CONFLICT DO NOTHING",
                tier, list(blob_ids), time.time_ns(),
            )  # fmt: skip

        await self._pool.write(fn)

    async def outbox_holds(self, tier: str, blob_ids: Sequence[str]) -> str | None:
        """One of ``blob_ids`` whose old copy in ``tier`` waits in the outbox, or None."""
        rows = await self._pool.fetch(
            "SELECT blob_id FROM tier_outbox WHERE tier = $1 AND blob_id = ANY($2::text[])", tier, list(blob_ids)
        )
        waiting = {r[0] for r in rows}
        return next((b for b in blob_ids if b in waiting), None)

    async def outbox_due(self, now_ns: int, limit: int = 500) -> list[OutboxEntry]:
        rows = await self._pool.fetch(
            "SELECT tier, blob_id, attempts FROM tier_outbox WHERE next_ns <= $1 ORDER BY next_ns LIMIT $2",
            now_ns, limit,
        )  # fmt: skip
        return [OutboxEntry(str(t), str(b), int(a)) for t, b, a in rows]

    async def outbox_done(self, entries: Sequence[OutboxEntry]) -> None:
        """The remote objects are deleted: drop their rows."""

        async def fn(c: Any) -> None:
            await c.execute(
                "DELETE FROM tier_outbox o USING unnest($1::text[], $2::text[]) AS d(tier, blob_id)"
                " WHERE o.tier = d.tier AND o.blob_id = d.blob_id",
                [e.tier for e in entries], [e.blob_id for e in entries],
            )  # fmt: skip

        await self._pool.write(fn)

    async def outbox_retry(self, entries: Sequence[OutboxEntry], next_ns: Callable[[int], int]) -> None:
        """The tier did not answer: one more attempt counted, not retried before ``next_ns(attempts)``."""

        async def fn(c: Any) -> None:
            await c.executemany(
                "UPDATE tier_outbox SET attempts = attempts + 1, next_ns = $1 WHERE tier = $2 AND blob_id = $3",
                [(next_ns(e.attempts + 1), e.tier, e.blob_id) for e in entries],
            )

        await self._pool.write(fn)
