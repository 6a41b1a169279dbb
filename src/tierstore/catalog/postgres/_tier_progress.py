"""The mover's progress and its retries on PostgreSQL: the semantics of catalog/sqlite/_tier_progress.py
(docs/tiers.md "The mover").

- ``tier_stats`` is not one counter row per tier that every mover commit of every gateway
  updates (docs/scale-out.md: no hot counter rows): each tier has up to ``STAT_SLOTS`` rows, a
  connection writes the slot of its backend pid, and ``tier_progress`` sums them. The last error
  is the newest one of any slot.
- ``tier_pending`` rows are claimed with ``FOR UPDATE SKIP LOCKED`` and leased ahead in the same
  statement, so the workers of several gateways share them without waiting for each other; a
  dead worker's lease runs out as before.
- The backlog counts read the tiers' tables (``tiers``, ``tier_outbox``, ``lifecycle_due`` and
  its ``(storage_class, due_ns)`` index): those are catalog/postgres/_tiers.py's,
  _tier_data.py's and _lifecycle.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tierstore.catalog._records import PendingWrite, TierProgress
from tierstore.catalog._rules import LAST_ERROR_MAX_CHARS, WRITE_PENDING_DELAY_NS
from tierstore.catalog.postgres._pool import Pool
from tierstore.types import ObjectMeta

__all__ = ["STAT_SLOTS", "TIER_PROGRESS_DDL", "TierProgressTables", "count_moved", "note_tier_write", "tier_write"]

STAT_SLOTS = 16  # rows per tier in tier_stats: concurrent movers rarely share one

TIER_PROGRESS_DDL = (
    """CREATE TABLE tier_stats(  -- what the movers did, per tier, in STAT_SLOTS rows each (summed)
        tier text COLLATE "C" NOT NULL,
        slot smallint NOT NULL,
        moved_bytes bigint NOT NULL DEFAULT 0,
        moved_objects bigint NOT NULL DEFAULT 0,
        errors bigint NOT NULL DEFAULT 0,
        last_error text,  -- never a secret: the errors of the tier client name endpoint and bucket only
        last_error_ns bigint,
        PRIMARY KEY(tier, slot)
    )""",
    """CREATE TABLE tier_pending(  -- versions written in a tier's class that stayed local
        bucket text COLLATE "C" NOT NULL,
        key bytea NOT NULL,
        version_id text COLLATE "C" NOT NULL,
        tier text COLLATE "C" NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_ns bigint NOT NULL,  -- not retried before this time (a claim leases it ahead)
        PRIMARY KEY(bucket, key, version_id)
    )""",
    "CREATE INDEX tier_pending_due ON tier_pending(next_ns)",
    "CREATE INDEX tier_pending_tier ON tier_pending(tier)",  # tier_progress's count, a tier's removal
    # The mover's backlog per tier (tier_progress): the transitions due, by target class.
    "CREATE INDEX lifecycle_due_by_class ON lifecycle_due(storage_class, due_ns) WHERE storage_class IS NOT NULL",
)

_SLOT = f"(pg_backend_pid() % {STAT_SLOTS})"


async def count_moved(c: Any, tier: str, size_bytes: int) -> None:
    """Inside the mover's commit: one more object (of ``size_bytes``) moved to ``tier``."""
    await c.execute(
        f"INSERT INTO tier_stats(tier, slot, moved_bytes, moved_objects) VALUES($1, {_SLOT}, $2, 1)"
        " ON CONFLICT(tier, slot) DO UPDATE SET moved_bytes = tier_stats.moved_bytes + excluded.moved_bytes,"
        " moved_objects = tier_stats.moved_objects + 1",
        tier, size_bytes,
    )  # fmt: skip


def tier_write(meta: ObjectMeta) -> bool:
    """Whether publishing version ``meta`` may make it wait for a tier (its class is not the standard one)."""
    sc = meta.storage_class
    return bool(sc) and sc != "STANDARD" and not meta.is_delete_marker


async def note_tier_write(c: Any, meta: ObjectMeta, key_b: bytes) -> None:
    """Inside the transaction that publishes version ``meta``: if its class is a tier's, it waits
    for that tier (``tier_pending``) until the mover's commit switches it."""
    if not tier_write(meta):
        return
    sc = meta.storage_class
    await c.execute(
        "INSERT INTO tier_pending(bucket, key, version_id, tier, attempts, next_ns)"
        " SELECT $1, $2, $3, name, 0, $5 FROM tiers WHERE name = $4"  # a class that is no tier: a label
        " ON CONFLICT(bucket, key, version_id) DO UPDATE SET tier = excluded.tier, attempts = 0,"
        " next_ns = excluded.next_ns, lease_owner = NULL",
        meta.bucket, key_b, meta.version_id, sc, meta.modified_ns + WRITE_PENDING_DELAY_NS,
    )  # fmt: skip


class TierProgressTables:
    """The mover's calls of the catalog protocol (``SqliteCatalog``'s ``TierProgressTables``)."""

    _pool: Pool

    # --- the hooks of the mover's commits (catalog/postgres/_tier_data.py) and tier_delete --------
    async def _count_moved(self, c: Any, tier: str, size_bytes: int) -> None:
        await count_moved(c, tier, size_bytes)

    async def _tier_write_settled(self, c: Any, bucket: str, bucket_id: int, key_b: bytes, version_id: str) -> None:
        """The version no longer waits for a tier (it was written in a tier's class)."""
        await c.execute(
            "DELETE FROM tier_pending WHERE bucket = $1 AND key = $2 AND version_id = $3", bucket, key_b, version_id
        )

    async def _tier_removed(self, c: Any, name: str) -> None:
        """Its counters go; writes waiting for it stay local, with its class as a label."""
        await c.execute("DELETE FROM tier_stats WHERE tier = $1", name)
        await c.execute("DELETE FROM tier_pending WHERE tier = $1", name)

    # --- counters -----------------------------------------------------------------------------

    async def tier_error(self, tier: str, message: str, now_ns: int) -> None:
        """A move to ``tier`` failed: counted, and ``message`` (no secrets; cut to 500 characters) kept."""
        text = message[:LAST_ERROR_MAX_CHARS]

        async def fn(c: Any) -> None:
            await c.execute(
                f"INSERT INTO tier_stats(tier, slot, errors, last_error, last_error_ns) VALUES($1, {_SLOT}, 1, $2, $3)"
                " ON CONFLICT(tier, slot) DO UPDATE SET errors = tier_stats.errors + 1,"
                " last_error = excluded.last_error, last_error_ns = excluded.last_error_ns",
                tier, text, now_ns,
            )  # fmt: skip

        await self._pool.write(fn)

    async def tier_progress(self, tier: str, now_ns: int) -> TierProgress:
        """``tier``'s counters and backlog (indexed reads, one statement)."""
        row = await self._pool.fetchrow(
            "SELECT s.moved_bytes, s.moved_objects, s.errors, e.last_error, e.last_error_ns,"
            " (SELECT count(*) FROM lifecycle_due WHERE storage_class = $1 AND due_ns <= $2),"
            " (SELECT count(*) FROM tier_pending WHERE tier = $1),"
            " (SELECT count(*) FROM tier_outbox WHERE tier = $1)"
            " FROM (SELECT coalesce(sum(moved_bytes), 0) AS moved_bytes,"
            " coalesce(sum(moved_objects), 0) AS moved_objects, coalesce(sum(errors), 0) AS errors"
            " FROM tier_stats WHERE tier = $1) s"
            " LEFT JOIN LATERAL (SELECT last_error, last_error_ns FROM tier_stats WHERE tier = $1"
            " AND last_error_ns IS NOT NULL ORDER BY last_error_ns DESC LIMIT 1) e ON true",
            tier, now_ns,
        )  # fmt: skip
        moved_bytes, moved_objects, errors, last_error, last_error_ns, due, pending, outbox = row
        return TierProgress(
            moved_bytes=int(moved_bytes),
            moved_objects=int(moved_objects),
            errors=int(errors),
            last_error=last_error,
            last_error_ns=last_error_ns,
            due=int(due),
            pending=int(pending),
            outbox=int(outbox),
        )

    # --- writes waiting for their tier ----------------------------------------------------------
    async def tier_pending_add(self, bucket: str, key: str, version_id: str, tier: str, next_ns: int) -> None:
        """Version ``version_id`` was written in ``tier``'s class and stayed local: retry from ``next_ns``."""

        async def fn(c: Any) -> None:
            await c.execute(
                "INSERT INTO tier_pending(bucket, key, version_id, tier, attempts, next_ns)"
                " VALUES($1, $2, $3, $4, 1, $5)"
                " ON CONFLICT(bucket, key, version_id) DO UPDATE SET tier = excluded.tier, attempts = 1,"
                " next_ns = excluded.next_ns, lease_owner = NULL",
                bucket, key.encode(), version_id, tier, next_ns,
            )  # fmt: skip

        await self._pool.write(fn)

    async def tier_pending_any(self, now_ns: int) -> bool:
        """Whether a pending write is due (one index read: the worker's common case)."""
        return bool(await self._pool.fetchval("SELECT EXISTS(SELECT 1 FROM tier_pending WHERE next_ns <= $1)", now_ns))

    async def tier_pending_claim(
        self, now_ns: int, limit: int, lease_ns: int, *, owner: str | None = None
    ) -> list[PendingWrite]:
        """Up to ``limit`` due pending writes, leased to ``owner`` ``lease_ns`` ahead in the same
        transaction (another process does not take them; a worker that dies leaves them to be
        taken again)."""

        async def fn(c: Any) -> list[PendingWrite]:
            rows = await c.fetch(
                "WITH picked AS (SELECT bucket, key, version_id, tier, attempts, next_ns FROM tier_pending"
                " WHERE next_ns <= $1 ORDER BY next_ns LIMIT $2 FOR UPDATE SKIP LOCKED),"
                " leased AS (UPDATE tier_pending t SET next_ns = $3, lease_owner = $4 FROM picked p"
                " WHERE (t.bucket, t.key, t.version_id) = (p.bucket, p.key, p.version_id))"
                " SELECT bucket, key, version_id, tier, attempts FROM picked ORDER BY next_ns, bucket, key, version_id",
                now_ns, limit, now_ns + lease_ns, owner,
            )  # fmt: skip
            return [PendingWrite(str(b), bytes(k).decode(), str(v), str(t), int(a)) for b, k, v, t, a in rows]

        return await self._pool.write(fn)

    async def tier_pending_renew(self, items: Sequence[PendingWrite], owner: str, until_ns: int) -> int:
        """The heartbeat of a long move: the items still ``owner``'s stay leased until ``until_ns``."""
        found = await self._pool.fetch(
            "UPDATE tier_pending t SET next_ns = $1"
            " FROM unnest($2::text[], $3::bytea[], $4::text[]) AS i(bucket, key, version_id)"
            " WHERE (t.bucket, t.key, t.version_id) = (i.bucket, i.key, i.version_id) AND t.lease_owner = $5"
            " RETURNING 1",
            until_ns, [i.bucket for i in items], [i.key.encode() for i in items], [i.version_id for i in items], owner,
        )  # fmt: skip
        return len(found)

    async def tier_pending_done(self, item: PendingWrite, *, owner: str | None = None) -> bool:
        """The write waits no more; with ``owner``, only if the item is still its (False if not)."""
        found = await self._pool.fetchrow(
            "DELETE FROM tier_pending WHERE bucket = $1 AND key = $2 AND version_id = $3 AND tier = $4"
            " AND ($5::text IS NULL OR lease_owner = $5) RETURNING 1",
            item.bucket, item.key.encode(), item.version_id, item.tier, owner,
        )  # fmt: skip
        return found is not None

    async def tier_pending_forget(self, bucket: str, key: str, version_id: str) -> None:
        """The version waits for no tier (a move found nothing to do)."""

        async def fn(c: Any) -> None:
            await c.execute(
                "DELETE FROM tier_pending WHERE bucket = $1 AND key = $2 AND version_id = $3",
                bucket, key.encode(), version_id,
            )  # fmt: skip

        await self._pool.write(fn)

    async def tier_pending_retry(self, item: PendingWrite, next_ns: int, *, owner: str | None = None) -> bool:
        """One more attempt, due at ``next_ns``, no owner; with ``owner``, only if still its."""
        found = await self._pool.fetchrow(
            "UPDATE tier_pending SET attempts = attempts + 1, next_ns = $1, lease_owner = NULL"
            " WHERE bucket = $2 AND key = $3 AND version_id = $4 AND ($5::text IS NULL OR lease_owner = $5)"
            " RETURNING 1",
            next_ns, item.bucket, item.key.encode(), item.version_id, owner,
        )  # fmt: skip
        return found is not None
