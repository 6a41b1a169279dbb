"""Hot copies of tiered blobs on PostgreSQL: the semantics of catalog/sqlite/_hot.py (docs/tiers.md "Hot
copies"), statement for statement, for writers that no longer take turns.

SQLite's single writer ran each of these transactions alone; here they run side by side, so:

- one holder's writers (``hot_hold``, ``hot_settle``, ``hot_release``) take turns on an advisory
  transaction lock on the holder's name;
- whatever decides a blob's local copy locks the blob's row first, in blob-id order, in its own
  statement (so the decision that follows reads a snapshot taken after the lock): ``hot_cached``
  (``FOR UPDATE``), ``free_unheld`` (``FOR UPDATE``), ``hot_hold`` (``FOR SHARE``, holds on one
  blob do not wait for each other). A copy marked cached while its last hold goes away is thus
  freed by whichever transaction comes second, and a hold added meanwhile is seen by the free;
- ``hot_claim`` claims ongoing copies with ``FOR UPDATE SKIP LOCKED``: claimers never wait on
  each other, and a dead worker's lease runs out as before;
- ``hot_sweep`` deletes a holder only if it is still expired when its row is locked (a renewal
  committed meanwhile wins).

The per-gateway form of hot copies (``hot_copies(gateway_id, blob_id)``, docs/scale-out.md) is a
later slice: here, as on SQLite, ``blobs.cached`` says the local drives hold a copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from tierstore.catalog._records import HeldBlob, HoldInfo
from tierstore.catalog._rules import TTL_EXPIRY
from tierstore.catalog.postgres._codec import _lock_id
from tierstore.catalog.postgres._pool import Pool

__all__ = ["HOT_DDL", "HotTables", "free_unheld", "lock_blobs"]

HOT_DDL = (
    """CREATE TABLE hot_holds(  -- what keeps a local copy of a remote blob (docs/tiers.md)
        holder text COLLATE "C" NOT NULL,  -- restore:<bucket>/<key>/<version> | pin:<job>
        blob_id text COLLATE "C" NOT NULL,
        expires_ns bigint,  -- NULL: until released
        PRIMARY KEY(holder, blob_id)
    )""",
    "CREATE INDEX hot_holds_blob ON hot_holds(blob_id)",
    "CREATE INDEX hot_holds_expiry ON hot_holds(expires_ns) WHERE expires_ns IS NOT NULL",
    """CREATE TABLE hot_requests(  -- one holder's copy: ongoing (done_ns NULL) or done
        holder text COLLATE "C" PRIMARY KEY,
        created_ns bigint NOT NULL,
        expires_ns bigint,  -- the holds' expiry; NULL: until released (or, with ttl_ns, until the copy is done)
        ttl_ns bigint,  -- set: at the end of the copy, expires_ns = done_ns + ttl_ns (a restore's Days)
        done_ns bigint,  -- NULL: the copy is ongoing
        lease_ns bigint NOT NULL DEFAULT 0  -- a worker copies it until then
    )""",
    "CREATE INDEX hot_requests_ongoing ON hot_requests(lease_ns) WHERE done_ns IS NULL",
    "CREATE INDEX hot_requests_expiry ON hot_requests(expires_ns) WHERE expires_ns IS NOT NULL",
    "CREATE INDEX blobs_cached ON blobs(blob_id) WHERE cached IS NOT NULL",
)

_LIVE_HOLD = (
    "EXISTS (SELECT 1 FROM hot_holds h WHERE h.blob_id = blobs.blob_id AND (h.expires_ns IS NULL OR h.expires_ns > $2))"
)

_MISSING = (  # in the primary key's order
    "SELECT b.blob_id, b.size, b.tier FROM hot_holds h JOIN blobs b ON b.blob_id = h.blob_id"
    " WHERE h.holder = $1 AND b.tier IS NOT NULL AND b.cached IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM trash t WHERE t.blob_id = b.blob_id) ORDER BY h.blob_id LIMIT $2"
)
_MISSING_DESC = _MISSING.replace("ORDER BY h.blob_id", "ORDER BY h.blob_id DESC")

_REQUEST = "SELECT holder, created_ns, expires_ns, ttl_ns, done_ns FROM hot_requests"
# One holder's row with what it holds (remote blobs; local ones need no copy), in one statement.
_INFO = (
    "SELECT r.holder, r.created_ns, r.expires_ns, r.ttl_ns, r.done_ns, s.n, s.size, s.cached, s.cached_size"
    " FROM hot_requests r CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(sum(b.size), 0) AS size,"
    " count(b.cached) AS cached, coalesce(sum(b.size) FILTER (WHERE b.cached IS NOT NULL), 0) AS cached_size"
    " FROM hot_holds h JOIN blobs b ON b.blob_id = h.blob_id WHERE h.holder = r.holder AND b.tier IS NOT NULL) s"
)


def _holder_lock(holder: str) -> int:
    return _lock_id(b"tierstore-hold", holder.encode())


async def lock_blobs(c: Any, blob_ids: Iterable[str], *, share: bool = False) -> None:
    """Lock the rows of ``blob_ids`` (those that exist), in blob-id order, in a statement of
    their own: what this transaction reads next is read after every writer of them finished."""
    ids = sorted(set(blob_ids))
    if ids:
        mode = "SHARE" if share else "UPDATE"
        await c.execute(f"SELECT 1 FROM blobs WHERE blob_id = ANY($1::text[]) ORDER BY blob_id FOR {mode}", ids)  # noqa: S608


async def free_unheld(c: Any, blob_ids: Iterable[str], now_ns: int) -> int:
    """Inside a write: drop the local copy (cached -> NULL, into the trash) of each of ``blob_ids``
    that no live hold needs any more. Returns how many."""
    ids = list(dict.fromkeys(blob_ids))
    if not ids:
        return 0
    await lock_blobs(c, ids)
    freed = await c.fetchval(
        "WITH freed AS (UPDATE blobs SET cached = NULL WHERE blob_id = ANY($1::text[]) AND cached IS NOT NULL"  # noqa: S608 - constant
        f" AND NOT {_LIVE_HOLD} RETURNING blob_id),"
        " queued AS (INSERT INTO trash(blob_id) SELECT blob_id FROM freed ON CONFLICT DO NOTHING)"
        " SELECT count(*) FROM freed",
        ids, now_ns,
    )  # fmt: skip
    return int(freed)


def _info(row: Any) -> HoldInfo:
    holder, created_ns, expires_ns, ttl_ns, done_ns, blobs, size, cached, cached_size = row
    return HoldInfo(
        str(holder), int(created_ns), expires_ns, ttl_ns, done_ns, int(blobs), int(size), int(cached), int(cached_size)
    )


_SETTLE = (
    "UPDATE hot_requests SET done_ns = coalesce(done_ns, $1), expires_ns = CASE"  # noqa: S608
    " WHEN ttl_ns IS NULL THEN expires_ns"
    f" ELSE {TTL_EXPIRY.format(now='$1', unit='$3::bigint')} END WHERE holder = $2 AND done_ns IS NULL"
)


async def _settle(c: Any, holder: str, now_ns: int, round_ns: int) -> bool:
    """Inside a write: if every held remote blob of ``holder`` is copied, the copy is done (its
    expiry set from ``ttl_ns``: ``TTL_EXPIRY``); the holds take the holder's expiry. True if done."""
    missing = await c.fetchval(
        "SELECT 1 FROM hot_holds h JOIN blobs b ON b.blob_id = h.blob_id"
        " WHERE h.holder = $1 AND b.tier IS NOT NULL AND b.cached IS NULL LIMIT 1",
        holder,
    )
    if missing is None:
        await c.execute(_SETTLE, now_ns, holder, round_ns)
    await c.execute(
        "UPDATE hot_holds SET expires_ns = (SELECT expires_ns FROM hot_requests WHERE holder = $1) WHERE holder = $1",
        holder,
    )
    return missing is None


class HotTables:
    """The hot-copy calls of the catalog protocol (``SqliteCatalog``'s ``HotTables``)."""

    _pool: Pool

    async def _free_unheld(self, c: Any, blob_ids: Sequence[str], now_ns: int) -> int:
        """The mover's hook (catalog/postgres/_tier_data.py): a moved blob's local copy is freed
        unless a live hold needs it."""
        return await free_unheld(c, blob_ids, now_ns)

    async def hot_hold(
        self,
        holder: str,
        blob_ids: Sequence[str],
        *,
        now_ns: int,
        expires_ns: int | None = None,
        ttl_ns: int | None = None,
        renew: bool = True,
        round_ns: int = 0,
    ) -> Literal["new", "ongoing", "done"]:
        """``SqliteCatalog.hot_hold`` (catalog/sqlite/_hot.py): hold ``blob_ids`` for ``holder`` and answer
        what the holder was before ("new", "ongoing": a copy runs, "done")."""
        ids = list(dict.fromkeys(blob_ids))

        async def fn(c: Any) -> Literal["new", "ongoing", "done"]:
            await c.execute("SELECT pg_advisory_xact_lock($1)", _holder_lock(holder))
            row = await c.fetchrow("SELECT done_ns FROM hot_requests WHERE holder = $1 FOR UPDATE", holder)
            before: Literal["new", "ongoing", "done"] = (
                "new" if row is None else "ongoing" if row[0] is None else "done"
            )
            if before == "ongoing" and not renew:
                return before
            await lock_blobs(c, ids, share=True)
            await c.execute(
                "INSERT INTO hot_holds(holder, blob_id, expires_ns) SELECT $1, b, NULL FROM unnest($2::text[]) AS b"
                " ON CONFLICT DO NOTHING",
                holder, ids,
            )  # fmt: skip
            if row is None:
                await c.execute(
                    "INSERT INTO hot_requests(holder, created_ns, expires_ns, ttl_ns, done_ns)"
                    " VALUES($1, $2, $3, $4, NULL)",
                    holder, now_ns, expires_ns, ttl_ns,
                )  # fmt: skip
            else:
                await c.execute(
                    "UPDATE hot_requests SET expires_ns = $1, ttl_ns = $2, done_ns = NULL WHERE holder = $3",
                    expires_ns, ttl_ns, holder,
                )  # fmt: skip
            await _settle(c, holder, now_ns, round_ns)
            return before

        return await self._pool.write(fn)

    async def hot_request(self, holder: str) -> HoldInfo | None:
        """The holder's copy and what it holds, or None."""
        row = await self._pool.fetchrow(f"{_INFO} WHERE r.holder = $1", holder)
        return _info(row) if row else None

    async def hot_state(self, holder: str) -> tuple[int | None, int | None] | None:
        """(done_ns, expires_ns) of ``holder``, or None: one point read (HEAD's x-amz-restore)."""
        row = await self._pool.fetchrow("SELECT done_ns, expires_ns FROM hot_requests WHERE holder = $1", holder)
        return None if row is None else (row[0], row[1])

    async def hot_list(self, prefix: str = "") -> list[HoldInfo]:
        """Every holder whose name starts with ``prefix``, by name, with its size."""
        # A range on the primary key, never LIKE (the prefix may hold % and _).
        rows = await self._pool.fetch(f"{_INFO} WHERE left(r.holder, $1) = $2 ORDER BY r.holder", len(prefix), prefix)
        return [_info(r) for r in rows]

    async def hot_missing(self, holder: str, limit: int = 1000, *, descending: bool = False) -> list[HeldBlob]:
        """Held remote blobs of ``holder`` without a local copy, by id (``descending``: from the
        other end, for a second worker that helps); not those still in the trash (a freed copy
        whose bytes the drain has not deleted yet: copied once it has)."""
        rows = await self._pool.fetch(_MISSING_DESC if descending else _MISSING, holder, limit)
        return [HeldBlob(str(b), int(n), str(t)) for b, n, t in rows]

    async def hot_due(self, now_ns: int) -> tuple[bool, bool]:
        """(a holder or hold has expired, an ongoing copy is free to claim) at ``now_ns``: indexed
        reads in one statement, so an idle worker's pass writes nothing."""
        row = await self._pool.fetchrow(
            "SELECT EXISTS(SELECT 1 FROM hot_requests WHERE expires_ns <= $1)"
            " OR EXISTS(SELECT 1 FROM hot_holds WHERE expires_ns <= $1),"
            " EXISTS(SELECT 1 FROM hot_requests WHERE done_ns IS NULL AND lease_ns <= $1)",
            now_ns,
        )
        return bool(row[0]), bool(row[1])

    async def hot_leased(self, now_ns: int, limit: int = 8) -> list[str]:
        """Ongoing copies a live worker holds (their lease runs at ``now_ns``): another may help
        it from the other end (one indexed read)."""
        rows = await self._pool.fetch(
            "SELECT holder FROM hot_requests WHERE done_ns IS NULL AND lease_ns > $1 ORDER BY lease_ns LIMIT $2",
            now_ns, limit,
        )  # fmt: skip
        return [str(r[0]) for r in rows]

    async def hot_claim(self, now_ns: int, lease_ns: int, limit: int = 8, *, owner: str | None = None) -> list[str]:
        """Claim ongoing copies no live worker has: their leases move to ``now_ns + lease_ns``
        (``SKIP LOCKED``: claimers in other processes never wait for each other nor take the same),
        owned by ``owner``."""

        async def fn(c: Any) -> list[str]:
            rows = await c.fetch(
                "WITH picked AS (SELECT holder, lease_ns FROM hot_requests WHERE done_ns IS NULL AND lease_ns <= $1"
                " ORDER BY lease_ns LIMIT $3 FOR UPDATE SKIP LOCKED),"
                " claimed AS (UPDATE hot_requests r SET lease_ns = $2, lease_owner = $4 FROM picked p"
                " WHERE r.holder = p.holder)"
                " SELECT holder FROM picked ORDER BY lease_ns, holder",
                now_ns, now_ns + lease_ns, limit, owner,
            )  # fmt: skip
            return [str(r[0]) for r in rows]

        return await self._pool.write(fn)

    async def hot_renew(self, holder: str, lease_ns: int, *, owner: str | None = None, fenced: bool = False) -> bool:
        """The worker copying ``holder`` keeps (or, with ``owner``, takes) its claim until
        ``lease_ns``; ``fenced``: only while the claim is still ``owner``'s (the heartbeat).
        False if nothing was renewed (done, or another owner's)."""
        found = await self._pool.fetchrow(
            "UPDATE hot_requests SET lease_ns = $1, lease_owner = COALESCE($2, lease_owner)"
            " WHERE holder = $3 AND done_ns IS NULL AND (NOT $4 OR lease_owner = $2) RETURNING 1",
            lease_ns, owner, holder, fenced,
        )  # fmt: skip
        return found is not None

    async def hot_cached(self, blob_ids: Sequence[str], now_ns: int) -> list[str]:
        """The local copies of ``blob_ids`` are complete and verified: marked cached where a live
        hold needs them; the others (released meanwhile, or the blob is gone) go to the trash.
        Returns the ids marked."""
        ids = list(dict.fromkeys(blob_ids))

        async def fn(c: Any) -> list[str]:
            await lock_blobs(c, ids)
            sql = (
                f"UPDATE blobs SET cached = true WHERE blob_id = ANY($1::text[]) AND tier IS NOT NULL AND {_LIVE_HOLD}"  # noqa: S608
            )
            marked = {str(r[0]) for r in await c.fetch(f"{sql} RETURNING blob_id", ids, now_ns)}
            await c.execute(
                "INSERT INTO trash(blob_id) SELECT b FROM unnest($1::text[]) AS b"
                " WHERE NOT EXISTS(SELECT 1 FROM blobs WHERE blob_id = b AND cached IS NOT NULL)"
                " ON CONFLICT DO NOTHING",
                [b for b in ids if b not in marked],
            )
            return [b for b in ids if b in marked]

        return await self._pool.write(fn)

    async def hot_settle(self, holder: str, now_ns: int, *, round_ns: int = 0) -> bool:
        """Finish ``holder``'s copy if nothing is missing (its expiry set from ``ttl_ns``, rounded
        up to a multiple of ``round_ns`` if set: ``TTL_EXPIRY``); True if done."""

        async def fn(c: Any) -> bool:
            await c.execute("SELECT pg_advisory_xact_lock($1)", _holder_lock(holder))
            if await c.fetchval("SELECT 1 FROM hot_requests WHERE holder = $1", holder) is None:
                return False
            return await _settle(c, holder, now_ns, round_ns)

        return await self._pool.write(fn)

    async def hot_release(self, holder: str, now_ns: int) -> bool:
        """Drop ``holder`` and its holds; the copies no other live hold needs go to the trash (one
        transaction). False if there was no such holder."""

        async def fn(c: Any) -> bool:
            await c.execute("SELECT pg_advisory_xact_lock($1)", _holder_lock(holder))
            dropped = await c.fetch("DELETE FROM hot_holds WHERE holder = $1 RETURNING blob_id", holder)
            ids = [str(r[0]) for r in dropped]
            found = await c.execute("DELETE FROM hot_requests WHERE holder = $1", holder) != "DELETE 0"
            await free_unheld(c, ids, now_ns)
            return found or bool(ids)

        return await self._pool.write(fn)

    async def hot_sweep(self, now_ns: int, limit: int = 1000) -> tuple[list[str], int]:
        """Drop holders and holds expired at ``now_ns`` (a page of ``limit`` holders) and free the
        copies no live hold needs, in one transaction. Returns (the holders dropped, copies freed)."""

        async def fn(c: Any) -> tuple[list[str], int]:
            # The expiry is checked again on the locked row: a renewal committed meanwhile wins.
            dropped = await c.fetch(
                "DELETE FROM hot_requests WHERE holder IN (SELECT holder FROM hot_requests"
                " WHERE expires_ns IS NOT NULL AND expires_ns <= $1 LIMIT $2)"
                " AND expires_ns IS NOT NULL AND expires_ns <= $1 RETURNING holder",
                now_ns, limit,
            )  # fmt: skip
            holders = sorted(str(r[0]) for r in dropped)
            held = await c.fetch("DELETE FROM hot_holds WHERE holder = ANY($1::text[]) RETURNING blob_id", holders)
            # Holds whose holder row is gone or that expired on their own (none today; cheap: indexed).
            stray = await c.fetch(
                "DELETE FROM hot_holds WHERE (holder, blob_id) IN (SELECT holder, blob_id FROM hot_holds"
                " WHERE expires_ns IS NOT NULL AND expires_ns <= $1 LIMIT $2)"
                " AND expires_ns <= $1 RETURNING blob_id",
                now_ns, limit * 10,
            )  # fmt: skip
            ids = [str(r[0]) for r in (*held, *stray)]
            return holders, await free_unheld(c, ids, now_ns)

        return await self._pool.write(fn)

    async def hot_lost(self, blob_id: str) -> bool:
        """The local copy of a remote blob is damaged or missing (the scrub): no longer cached;
        the copies of its holders are reopened (the worker copies it again once the drain freed it)."""

        async def fn(c: Any) -> bool:
            status = await c.execute(
                "UPDATE blobs SET cached = NULL WHERE blob_id = $1 AND cached IS NOT NULL", blob_id
            )
            if status == "UPDATE 0":
                return False
            await c.execute("INSERT INTO trash(blob_id) VALUES($1) ON CONFLICT DO NOTHING", blob_id)
            await c.execute(
                "UPDATE hot_requests SET done_ns = NULL"
                " WHERE holder IN (SELECT holder FROM hot_holds WHERE blob_id = $1)",
                blob_id,
            )
            return True

        return await self._pool.write(fn)

    async def blob_cached(self, blob_id: str) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS(SELECT 1 FROM blobs WHERE blob_id = $1 AND cached IS NOT NULL)", blob_id
            )
        )
