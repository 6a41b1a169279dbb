"""The mover's progress and its retries (schema v13; docs/tiers.md "The mover").

``tier_stats`` holds, per tier, what every mover of every process and gateway has done: bytes
and objects moved, errors, the last error (a message that never holds a secret) and when. The
counts are written in the transaction that moves the bytes (``transition_commit``), so they are
exact whoever commits and survive restarts; an error costs one small write.

``tier_pending`` holds the versions written in a tier's class until the mover has switched
them there: the write's own transaction adds the row (``note_tier_write``), the mover's commit
drops it. The write's request moves the version at once; if the tier did not answer, the row
is due soon and the worker retries it (``tier_pending_claim``, leased like the lifecycle's due
rows, so several processes share them) with the mover's backoff; after a crash between the
commit and the move, in 10 minutes.

``lifecycle_due.storage_class`` (v13: a transition's target) lets ``tier_backlog`` count the
transitions due to a tier through a partial index, without re-running the rules.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from tierstore.catalog._records import PendingWrite, TierProgress
from tierstore.catalog._rules import LAST_ERROR_MAX_CHARS, WRITE_PENDING_DELAY_NS
from tierstore.catalog.sqlite._tables import Tables

if TYPE_CHECKING:
    from tierstore.types import ObjectMeta

__all__ = ["TIER_PROGRESS_DDL", "TierProgressTables", "note_tier_write"]

T = TypeVar("T")

TIER_PROGRESS_DDL = """
CREATE TABLE IF NOT EXISTS tier_stats(  -- v13: what the movers did, per tier (docs/tiers.md "The mover")
    tier TEXT PRIMARY KEY,
    moved_bytes INTEGER NOT NULL DEFAULT 0,
    moved_objects INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,  -- never a secret: the errors of the tier client name endpoint and bucket only
    last_error_ns INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tier_pending(  -- v13: versions written in a tier's class that stayed local
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    version_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ns INTEGER NOT NULL,  -- not retried before this time (a claim leases it ahead)
    PRIMARY KEY(bucket, key, version_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tier_pending_due ON tier_pending(next_ns);
CREATE INDEX IF NOT EXISTS lifecycle_due_by_class ON lifecycle_due(storage_class, due_ns)
    WHERE storage_class IS NOT NULL;
"""


def note_tier_write(c: sqlite3.Connection, meta: ObjectMeta, key_b: bytes) -> None:
    """Inside the transaction that publishes version ``meta``: if its class is a tier's, it waits
    for that tier (``tier_pending``) until the mover's commit switches it. Deterministic (the
    version's own time), as every write of a mirrored catalog must be."""
    sc = meta.storage_class
    if not sc or sc == "STANDARD" or meta.is_delete_marker:
        return
    if c.execute("SELECT 1 FROM tiers WHERE name=?", (sc,)).fetchone() is None:
        return  # a class that is no tier: a label
    c.execute(
        "INSERT OR REPLACE INTO tier_pending(bucket, key, version_id, tier, attempts, next_ns) VALUES(?,?,?,?,0,?)",
        (meta.bucket, key_b, meta.version_id, sc, meta.modified_ns + WRITE_PENDING_DELAY_NS),
    )


class TierProgressTables(Tables):
    """The mover's part of ``SqliteCatalog`` (a mixin: ``_reader()``, ``_write(fn)``)."""

    # --- counters -----------------------------------------------------------------------------
    @staticmethod
    def count_moved(c: sqlite3.Connection, tier: str, size_bytes: int) -> None:
        """Inside the mover's commit: one more object (of ``size_bytes``) moved to ``tier``."""
        c.execute(
            "INSERT INTO tier_stats(tier, moved_bytes, moved_objects) VALUES(?,?,1) ON CONFLICT(tier) DO UPDATE"
            " SET moved_bytes = moved_bytes + excluded.moved_bytes, moved_objects = moved_objects + 1",
            (tier, size_bytes),
        )

    async def tier_error(self, tier: str, message: str, now_ns: int) -> None:
        """A move to ``tier`` failed: counted, and ``message`` (no secrets; cut to 500 characters) kept."""
        text = message[:LAST_ERROR_MAX_CHARS]

        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO tier_stats(tier, errors, last_error, last_error_ns) VALUES(?,1,?,?)"
                " ON CONFLICT(tier) DO UPDATE SET errors = errors + 1, last_error = excluded.last_error,"
                " last_error_ns = excluded.last_error_ns",
                (tier, text, now_ns),
            )

        await self._write(fn)

    async def tier_progress(self, tier: str, now_ns: int) -> TierProgress:
        """``tier``'s counters and backlog (four indexed reads)."""
        c = self._reader()
        row = c.execute(
            "SELECT moved_bytes, moved_objects, errors, last_error, last_error_ns FROM tier_stats WHERE tier=?", (tier,)
        ).fetchone()
        (due,) = c.execute(
            "SELECT count(*) FROM lifecycle_due WHERE storage_class=? AND due_ns<=?", (tier, now_ns)
        ).fetchone()
        (pending,) = c.execute("SELECT count(*) FROM tier_pending WHERE tier=?", (tier,)).fetchone()
        (outbox,) = c.execute("SELECT count(*) FROM tier_outbox WHERE tier=?", (tier,)).fetchone()
        counts = (0, 0, 0, None, None) if row is None else row
        return TierProgress(
            moved_bytes=int(counts[0]),
            moved_objects=int(counts[1]),
            errors=int(counts[2]),
            last_error=counts[3],
            last_error_ns=None if counts[4] is None else int(counts[4]),
            due=int(due),
            pending=int(pending),
            outbox=int(outbox),
        )

    # --- writes waiting for their tier ----------------------------------------------------------
    async def tier_pending_add(self, bucket: str, key: str, version_id: str, tier: str, next_ns: int) -> None:
        """Version ``version_id`` was written in ``tier``'s class and stayed local: retry from ``next_ns``."""

        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO tier_pending(bucket, key, version_id, tier, attempts, next_ns)"
                " VALUES(?,?,?,?,1,?)",
                (bucket, key.encode(), version_id, tier, next_ns),
            )

        await self._write(fn)

    async def tier_pending_any(self, now_ns: int) -> bool:
        """Whether a pending write is due (one index read: the worker's common case)."""
        row = self._reader().execute("SELECT 1 FROM tier_pending WHERE next_ns<=? LIMIT 1", (now_ns,)).fetchone()
        return row is not None

    async def tier_pending_claim(
        self, now_ns: int, limit: int, lease_ns: int, *, owner: str | None = None
    ) -> list[PendingWrite]:
        """Up to ``limit`` due pending writes, leased to ``owner`` ``lease_ns`` ahead in the same
        transaction (another process does not take them; a worker that dies leaves them to be
        taken again)."""

        def fn(c: sqlite3.Connection) -> list[PendingWrite]:
            rows = c.execute(
                "SELECT bucket, key, version_id, tier, attempts FROM tier_pending WHERE next_ns<=?"
                " ORDER BY next_ns LIMIT ?",
                (now_ns, limit),
            ).fetchall()
            c.executemany(
                "UPDATE tier_pending SET next_ns=?, lease_owner=? WHERE bucket=? AND key=? AND version_id=?",
                [(now_ns + lease_ns, owner, b, k, v) for b, k, v, _, _ in rows],
            )
            return [PendingWrite(str(b), bytes(k).decode(), str(v), str(t), int(a)) for b, k, v, t, a in rows]

        return await self._write(fn)

    async def tier_pending_renew(self, items: Sequence[PendingWrite], owner: str, until_ns: int) -> int:
        """The heartbeat of a long move: the items still ``owner``'s stay leased until ``until_ns``."""

        def fn(c: sqlite3.Connection) -> int:
            sql = "UPDATE tier_pending SET next_ns=? WHERE bucket=? AND key=? AND version_id=? AND lease_owner=?"
            return sum(
                c.execute(sql, (until_ns, i.bucket, i.key.encode(), i.version_id, owner)).rowcount for i in items
            )

        return await self._write(fn)

    async def tier_pending_done(self, item: PendingWrite, *, owner: str | None = None) -> bool:
        """The write waits no more; with ``owner``, only if the item is still its (False if not)."""

        def fn(c: sqlite3.Connection) -> bool:
            sql = "DELETE FROM tier_pending WHERE bucket=? AND key=? AND version_id=? AND tier=?"
            args: tuple[object, ...] = (item.bucket, item.key.encode(), item.version_id, item.tier)
            if owner is not None:
                sql, args = sql + " AND lease_owner=?", (*args, owner)
            return c.execute(sql, args).rowcount > 0

        return await self._write(fn)

    async def tier_pending_forget(self, bucket: str, key: str, version_id: str) -> None:
        """The version waits for no tier (a move found nothing to do)."""

        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "DELETE FROM tier_pending WHERE bucket=? AND key=? AND version_id=?", (bucket, key.encode(), version_id)
            )

        await self._write(fn)

    async def tier_pending_retry(self, item: PendingWrite, next_ns: int, *, owner: str | None = None) -> bool:
        """One more attempt, due at ``next_ns``, no owner; with ``owner``, only if still its."""

        def fn(c: sqlite3.Connection) -> bool:
            sql = (
                "UPDATE tier_pending SET attempts = attempts + 1, next_ns=?, lease_owner=NULL"
                " WHERE bucket=? AND key=? AND version_id=?"
            )
            args: tuple[object, ...] = (next_ns, item.bucket, item.key.encode(), item.version_id)
            if owner is not None:
                sql, args = sql + " AND lease_owner=?", (*args, owner)
            return c.execute(sql, args).rowcount > 0

        return await self._write(fn)
