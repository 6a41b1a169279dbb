"""Where blobs live and the tier outbox: the catalog side of the tier data path (docs/tiers.md).

``blobs.tier`` (schema v10) says where a blob's authoritative bytes are: NULL on the local
drives, else the remote tier of that name. Reads of a version learn it with the version row
(``TIERS_OF_BLOBS``: one subquery, skipped for inline versions, ``NULL`` when every blob is
local); readers that name blobs by id (dataset and model manifests) ask ``blob_tiers``.

``transition_commit`` is the mover's one transaction; ``queue_remote_delete`` is what a blob's
last reference going away does for a remote blob (the local trash's counterpart), and the
``outbox_*`` calls are the loop that deletes those remote objects.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tierstore.catalog._records import PINNING_TABLES, BlobTier, InlineMove, OutboxEntry
from tierstore.catalog._rules import transition_applies
from tierstore.catalog.sqlite._hot import free_unheld
from tierstore.catalog.sqlite._index import reindex
from tierstore.catalog.sqlite._tables import Tables
from tierstore.catalog.sqlite._tier_progress import TierProgressTables

if TYPE_CHECKING:
    pass

__all__ = ["TIERS_OF_BLOBS", "TierDataTables"]


T = TypeVar("T")

count_moved = TierProgressTables.count_moved

# A column of a version read (alias ``v``): "id tier,id tier c" for its blobs that are remote
# (" c": with a local copy, catalog/sqlite/_hot.py), NULL if all are local. Inline versions and delete
# markers (blobs '[]') skip the subquery.
TIERS_OF_BLOBS = (
    "CASE WHEN v.blobs = '[]' THEN NULL ELSE (SELECT group_concat(b.blob_id || ' ' || b.tier"
    " || CASE WHEN b.cached IS NULL THEN '' ELSE ' c' END)"
    " FROM json_each(v.blobs) j JOIN blobs b ON b.blob_id = json_extract(j.value, '$[0]')"
    " WHERE b.tier IS NOT NULL) END"
)


class TierDataTables(Tables):
    """The tier data part of ``SqliteCatalog`` (a mixin: ``_tables.py``)."""

    # --- where blobs are ------------------------------------------------------------------
    async def blob_tiers(self, blob_ids: Sequence[str]) -> dict[str, BlobTier]:
        """Where each of ``blob_ids`` that is in a remote tier is: the tier, and whether it has a
        local copy too (read from it; counted in the tier). Local and unknown ones are absent."""
        out: dict[str, BlobTier] = {}
        conn = self._reader()
        ids = list(dict.fromkeys(blob_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT blob_id, tier, cached FROM blobs WHERE blob_id IN ({marks}) AND tier IS NOT NULL"  # noqa: S608
            out.update((str(b), BlobTier(str(t), c is not None)) for b, t, c in conn.execute(sql, chunk))
        return out

    async def remote_blob_known(self, tier: str, blob_id: str) -> bool:
        """Whether the catalog names ``blob_id``: referenced (anywhere: a local blob may be on its
        way to the tier) or waiting in ``tier``'s outbox. The remote orphan sweep's test."""
        c = self._reader()
        return bool(
            c.execute("SELECT 1 FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
            or c.execute("SELECT 1 FROM tier_outbox WHERE tier=? AND blob_id=?", (tier, blob_id)).fetchone()
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
        """Switch a version's bytes to ``tier`` (docs/tiers.md "The mover", step 3): each of
        ``moved`` (``(blob_id, from)``: a blob of the version now copied to ``tier`` and verified,
        and where it was: None for the local drives, else another tier) gets ``tier``; its local
        copy goes to the trash, a copy in another tier to that tier's outbox. ``inline``: the
        version's inline body becomes that new remote blob and the inline row is released as a
        delete releases it; the version's class becomes ``tier``; the tier's counters
        (``tier_stats``) count what this commit moved. Only if the version still exists and still
        names those blobs (or that inline body), each still where ``from`` says or in ``tier``
        already, and no old copy of one waits in ``tier``'s outbox (its delete could take the
        object this move relies on): False, and nothing changed, otherwise. The key's lifecycle
        rows are recomputed (the class is an input of its rules)."""
        key_b = key.encode()

        def fn(c: sqlite3.Connection) -> bool:
            record = self._version_in(c, bucket, key_b, version_id)
            tiers: dict[str, str | None] = {}
            queued = False
            for blob_id, _source in moved:
                row = c.execute("SELECT tier FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
                if row is not None:
                    tiers[blob_id] = row[0]
                if c.execute("SELECT 1 FROM tier_outbox WHERE tier=? AND blob_id=?", (tier, blob_id)).fetchone():
                    queued = True
            if not transition_applies(record, tier, moved, inline, tiers, queued):
                return False
            size, now_ns = 0, time.time_ns()
            for blob_id, source in moved:
                where = "tier IS NULL" if source is None else "tier=?"
                changed = c.execute(
                    f"UPDATE blobs SET tier=? WHERE blob_id=? AND {where} RETURNING size",  # noqa: S608
                    (tier, blob_id) if source is None else (tier, blob_id, source),
                ).fetchone()
                if changed is None:
                    continue  # another mover switched it first
                size += int(changed[0])
                if source is None:
                    # A blob a hot copy holds (a pin) keeps its local bytes as that copy.
                    c.execute("UPDATE blobs SET cached=1 WHERE blob_id=?", (blob_id,))
                    free_unheld(c, [blob_id], now_ns)
                else:
                    self.queue_remote_delete(c, source, blob_id)
            if inline is not None:
                size += inline.size_bytes
            if size or inline is not None:
                count_moved(c, tier, size)
            doc: dict[str, Any] = json.loads(
                c.execute(
                    "SELECT meta FROM versions WHERE bucket=? AND key=? AND version_id=?", (bucket, key_b, version_id)
                ).fetchone()[0]
            )
            doc["sc"] = tier
            meta_s = json.dumps(doc, separators=(",", ":"))
            if inline is not None:
                c.execute(
                    "INSERT INTO blobs(blob_id, size, refs, tier) VALUES(?,?,1,?)",
                    (inline.blob_id, inline.size_bytes, tier),
                )
                c.execute(
                    "UPDATE versions SET meta=?, blobs=?, inline_id=NULL WHERE bucket=? AND key=? AND version_id=?",
                    (meta_s, json.dumps([[inline.blob_id, inline.size_bytes]]), bucket, key_b, version_id),
                )
                # Released as a delete releases it: gone, unless a dataset pins it.
                if not c.execute("DELETE FROM inline_blobs WHERE blob_id=? AND pins=0", (inline.inline_id,)).rowcount:
                    c.execute("UPDATE inline_blobs SET released=1 WHERE blob_id=?", (inline.inline_id,))
            else:
                c.execute(
                    "UPDATE versions SET meta=? WHERE bucket=? AND key=? AND version_id=?",
                    (meta_s, bucket, key_b, version_id),
                )
            reindex(c, bucket, key_b)  # the class is an indexed attribute of the current version
            # ... and the input of the key's lifecycle rows: its next action (the worker's claimed
            # transition row among them) recomputed here, not in a transaction of its own.
            self._lifecycle_key(c, bucket, key_b, self._props(c, bucket))
            # No longer waiting for a tier (written in a tier's class: catalog/sqlite/_tier_progress.py).
            c.execute("DELETE FROM tier_pending WHERE bucket=? AND key=? AND version_id=?", (bucket, key_b, version_id))
            return True

        return await self._write(fn)

    # --- blobs moved by id (a dataset version's archive, docs/tiers.md "Dataset archive") ------------
    async def blobs_to_tier(self, tier: str, moved: Sequence[tuple[str, str | None]]) -> list[str]:
        """The mover's transaction for blobs named by id, each copied to ``tier`` and verified:
        ``moved`` is ``(blob_id, from)``, where it was (None: the local drives, else another
        tier). A blob still referenced and still where ``from`` says gets ``tier``; its local copy
        goes to the trash (a blob a hot copy holds, a job's pin, keeps its local bytes as that
        copy), a copy in another tier to that tier's outbox; one in ``tier`` already: nothing to
        do. Returns the ids that did not move: no longer referenced, elsewhere than ``from``, or
        an old copy of it waits in ``tier``'s outbox (its delete would take this copy; the
        caller checks first, ``outbox_holds``, so that is a race); their new remote copies are
        no one's (the caller queues them; ``outbox_add`` skips one the catalog names)."""
        now_ns = time.time_ns()

        def fn(c: sqlite3.Connection) -> list[str]:
            lost = []
            for blob_id, source in moved:
                row = c.execute("SELECT tier FROM blobs WHERE blob_id=?", (blob_id,)).fetchone()
                if row is not None and row[0] == tier:
                    continue
                if (
                    row is None
                    or row[0] != source
                    or c.execute("SELECT 1 FROM tier_outbox WHERE tier=? AND blob_id=?", (tier, blob_id)).fetchone()
                ):
                    lost.append(blob_id)
                    continue
                sql = "UPDATE blobs SET tier=? WHERE blob_id=? RETURNING size"
                (size,) = c.execute(sql, (tier, blob_id)).fetchone()
                if source is None:  # as transition_commit: a held blob keeps its local bytes as its copy
                    c.execute("UPDATE blobs SET cached=1 WHERE blob_id=?", (blob_id,))
                    free_unheld(c, [blob_id], now_ns)
                else:  # its local copy, if any, stays what it was: the same bytes
                    self.queue_remote_delete(c, source, blob_id)
                count_moved(c, tier, int(size))  # each blob one object of the tier's counters
            return lost

        return await self._write(fn)

    async def dataset_inline_to_tier(
        self,
        table: str,
        name: str,
        version: int,
        manifests: tuple[str, tuple[str, int]],
        tier: str,
        moves: Sequence[InlineMove],
    ) -> bool:
        """Switch inline bodies a dataset (model) version pins to remote blobs, in one
        transaction: ``manifests`` is (the manifest blob the version has now, (a new manifest
        blob, its size) whose rows name the new blobs instead); each new blob is referenced once,
        in ``tier``; each body loses this version's pin (and goes if nothing else holds it). False,
        nothing changed, if the version is gone or its manifest is no longer the old one."""
        if table not in PINNING_TABLES:
            raise ValueError(f"not a pinning table: {table!r}")
        old_manifest, (new_manifest, new_bytes) = manifests

        def fn(c: sqlite3.Connection) -> bool:
            sql = f"SELECT manifest_blob FROM {table} WHERE name=? AND version=?"  # noqa: S608 - checked
            row = c.execute(sql, (name, version)).fetchone()
            if row is None or row[0] != old_manifest:
                return False
            for move in moves:
                c.execute(
                    "INSERT INTO blobs(blob_id, size, refs, tier) VALUES(?,?,1,?)",
                    (move.blob_id, move.size_bytes, tier),
                )
                count_moved(c, tier, move.size_bytes)
            ids = [(m.inline_id,) for m in moves]
            c.executemany("UPDATE inline_blobs SET pins = pins - 1 WHERE blob_id=?", ids)
            c.executemany("DELETE FROM inline_blobs WHERE blob_id=? AND pins<=0 AND released=1", ids)
            self._ref(c, new_manifest, new_bytes)
            sql = f"UPDATE {table} SET manifest_blob=?, manifest_bytes=? WHERE name=? AND version=?"  # noqa: S608
            c.execute(sql, (new_manifest, new_bytes, name, version))
            self._unref_all(c, [old_manifest])
            return True

        return await self._write(fn)

    # --- the outbox -----------------------------------------------------------------------------
    @staticmethod
    def queue_remote_delete(c: sqlite3.Connection, tier: str, blob_id: str) -> None:
        """Inside a write: the remote object ``blob_id`` of ``tier`` is to be deleted (due now)."""
        c.execute(
            "INSERT OR IGNORE INTO tier_outbox(tier, blob_id, queued_ns, attempts, next_ns) VALUES(?,?,?,0,0)",
            (tier, blob_id, time.time_ns()),
        )

    async def outbox_add(self, tier: str, blob_ids: Sequence[str]) -> None:
        """Queue remote objects written for nothing (a transition that lost its version); one the
        catalog references as ``tier``'s is skipped (another mover published it)."""

        def fn(c: sqlite3.Connection) -> None:
            for blob_id in blob_ids:
                if not c.execute("SELECT 1 FROM blobs WHERE blob_id=? AND tier=?", (blob_id, tier)).fetchone():
                    self.queue_remote_delete(c, tier, blob_id)

        await self._write(fn)

    async def outbox_holds(self, tier: str, blob_ids: Sequence[str]) -> str | None:
        """One of ``blob_ids`` whose old copy in ``tier`` waits in the outbox, or None."""
        c = self._reader()
        for blob_id in blob_ids:
            if c.execute("SELECT 1 FROM tier_outbox WHERE tier=? AND blob_id=?", (tier, blob_id)).fetchone():
                return blob_id
        return None

    async def outbox_due(self, now_ns: int, limit: int = 500) -> list[OutboxEntry]:
        sql = "SELECT tier, blob_id, attempts FROM tier_outbox WHERE next_ns <= ? ORDER BY next_ns LIMIT ?"
        return [OutboxEntry(str(t), str(b), int(a)) for t, b, a in self._reader().execute(sql, (now_ns, limit))]

    async def outbox_done(self, entries: Sequence[OutboxEntry]) -> None:
        """The remote objects are deleted: drop their rows."""

        def fn(c: sqlite3.Connection) -> None:
            c.executemany("DELETE FROM tier_outbox WHERE tier=? AND blob_id=?", [(e.tier, e.blob_id) for e in entries])

        await self._write(fn)

    async def outbox_retry(self, entries: Sequence[OutboxEntry], next_ns: Callable[[int], int]) -> None:
        """The tier did not answer: one more attempt counted, not retried before ``next_ns(attempts)``."""

        def fn(c: sqlite3.Connection) -> None:
            c.executemany(
                "UPDATE tier_outbox SET attempts = attempts + 1, next_ns = ? WHERE tier=? AND blob_id=?",
                [(next_ns(e.attempts + 1), e.tier, e.blob_id) for e in entries],
            )

        await self._write(fn)
