"""Hot copies of tiered blobs (schema v12): local copies of remote blobs and the holds that keep
them (docs/tiers.md "Hot copies").

A blob in a remote tier (``blobs.tier``) may also have a complete, verified copy on the local
drives, under the same id: ``blobs.cached`` is then 1 (NULL otherwise). Reads prefer it
(``TIERS_OF_BLOBS`` marks such a blob ``c``; ``blob_tiers`` leaves it out). A copy is made for a
*holder* and kept while a hold needs it:

- ``hot_holds(holder, blob_id, expires_ns)``: holder ``restore:<bucket>/<key>/<version>`` (a
  RestoreObject) or ``pin:<job>`` (a dataset pin), ``expires_ns`` NULL = until released;
- ``hot_requests(holder, ...)``: the state of the holder's copy: ``done_ns`` NULL while it is
  ongoing (the worker resumes it after a restart: ``lease_ns`` keeps two workers from copying the
  same holder at once, and a dead worker's lease runs out), ``ttl_ns`` for an expiry counted from
  the end of the copy (a restore's Days).

A local copy is freed (through the trash) only in the transaction that drops its last live
hold, or that drops the blob itself; a copy is marked cached only while a hold needs it, and a
blob waiting in the trash is not copied again until the drain has freed it — so the trash never
deletes a copy that a hold needs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Literal, TypeVar

from tierstore.catalog._records import HeldBlob, HoldInfo
from tierstore.catalog._rules import TTL_EXPIRY
from tierstore.catalog.sqlite._tables import Tables

__all__ = ["HOT_DDL", "HotTables", "free_unheld"]

T = TypeVar("T")

# blobs.cached itself is in the blobs table of _schema._SCHEMA (a new database) or added by the
# v11 -> v12 step of _schema.upgrade; the index comes after either.
HOT_DDL = """
CREATE TABLE IF NOT EXISTS hot_holds(  -- v12: what keeps a local copy of a remote blob (docs/tiers.md)
    holder TEXT NOT NULL,  -- restore:<bucket>/<key>/<version> | pin:<job>
    blob_id TEXT NOT NULL,
    expires_ns INTEGER,  -- NULL: until released
    PRIMARY KEY(holder, blob_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hot_holds_blob ON hot_holds(blob_id);
CREATE INDEX IF NOT EXISTS hot_holds_expiry ON hot_holds(expires_ns) WHERE expires_ns IS NOT NULL;
CREATE TABLE IF NOT EXISTS hot_requests(  -- v12: one holder's copy: ongoing (done_ns NULL) or done
    holder TEXT PRIMARY KEY,
    created_ns INTEGER NOT NULL,
    expires_ns INTEGER,  -- the holds' expiry; NULL: until released (or, with ttl_ns, until the copy is done)
    ttl_ns INTEGER,  -- set: at the end of the copy, expires_ns = done_ns + ttl_ns (a restore's Days)
    done_ns INTEGER,  -- NULL: the copy is ongoing
    lease_ns INTEGER NOT NULL DEFAULT 0  -- a worker copies it until then
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hot_requests_ongoing ON hot_requests(lease_ns) WHERE done_ns IS NULL;
CREATE INDEX IF NOT EXISTS hot_requests_expiry ON hot_requests(expires_ns) WHERE expires_ns IS NOT NULL;
CREATE INDEX IF NOT EXISTS blobs_cached ON blobs(blob_id) WHERE cached IS NOT NULL;
"""

_SETTLE = (
    "UPDATE hot_requests SET done_ns=coalesce(done_ns, ?1), expires_ns=CASE WHEN ttl_ns IS NULL THEN expires_ns"  # noqa: S608
    f" ELSE {TTL_EXPIRY.format(now='?1', unit='?2')} END WHERE holder=?3 AND done_ns IS NULL"
)
_LIVE_HOLD = (
    "EXISTS (SELECT 1 FROM hot_holds h WHERE h.blob_id = blobs.blob_id AND (h.expires_ns IS NULL OR h.expires_ns > ?))"
)

_MISSING = (  # in the primary key's order
    "SELECT b.blob_id, b.size, b.tier FROM hot_holds h JOIN blobs b ON b.blob_id = h.blob_id"
    " WHERE h.holder=? AND b.tier IS NOT NULL AND b.cached IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM trash t WHERE t.blob_id = b.blob_id) ORDER BY h.blob_id LIMIT ?"
)
_MISSING_DESC = _MISSING.replace("ORDER BY h.blob_id", "ORDER BY h.blob_id DESC")


def free_unheld(c: sqlite3.Connection, blob_ids: Iterable[str], now_ns: int) -> int:
    """Inside a write: drop the local copy (cached -> NULL, into the trash) of each of ``blob_ids``
    that no live hold needs any more. Returns how many."""
    freed = 0
    for blob_id in blob_ids:
        cur = c.execute(
            f"UPDATE blobs SET cached=NULL WHERE blob_id=? AND cached IS NOT NULL AND NOT {_LIVE_HOLD}",  # noqa: S608
            (blob_id, now_ns),
        )
        if cur.rowcount:
            c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (blob_id,))
            freed += 1
    return freed


def _info(c: sqlite3.Connection, row: tuple[object, ...]) -> HoldInfo:
    holder, created_ns, expires_ns, ttl_ns, done_ns = row
    blobs, size, cached, cached_size = c.execute(
        "SELECT count(*), coalesce(sum(b.size), 0), coalesce(sum(b.cached IS NOT NULL), 0),"
        " coalesce(sum(CASE WHEN b.cached IS NULL THEN 0 ELSE b.size END), 0)"
        " FROM hot_holds h JOIN blobs b ON b.blob_id = h.blob_id WHERE h.holder=? AND b.tier IS NOT NULL",
        (holder,),
    ).fetchone()
    return HoldInfo(
        str(holder),
        int(created_ns),  # type: ignore[call-overload]
        None if expires_ns is None else int(expires_ns),  # type: ignore[call-overload]
        None if ttl_ns is None else int(ttl_ns),  # type: ignore[call-overload]
        None if done_ns is None else int(done_ns),  # type: ignore[call-overload]
        int(blobs),
        int(size),
        int(cached),
        int(cached_size),
    )


_REQUEST = "SELECT holder, created_ns, expires_ns, ttl_ns, done_ns FROM hot_requests"


class HotTables(Tables):
    """The hot-copy part of ``SqliteCatalog`` (a mixin: reads through ``_reader()``, writes
    through ``_write(fn)``, so a drive set changes every catalog copy)."""

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
        """Hold ``blob_ids`` for ``holder`` (added to what it holds). Answers what the holder was
        before: "new" (none), "ongoing" (a copy runs; with ``renew`` False nothing changes), or
        "done" (its copy was complete). Unless "ongoing" without ``renew``, the holder's expiry
        becomes ``expires_ns`` (or, with ``ttl_ns``, ``now_ns + ttl_ns`` once the copy is done, now
        if it is, rounded up to a multiple of ``round_ns`` if set: ``TTL_EXPIRY``), and the copy
        is (re)opened if a held remote blob has no local copy."""

        def fn(c: sqlite3.Connection) -> Literal["new", "ongoing", "done"]:
            row = c.execute("SELECT done_ns FROM hot_requests WHERE holder=?", (holder,)).fetchone()
            before: Literal["new", "ongoing", "done"] = (
                "new" if row is None else "ongoing" if row[0] is None else "done"
            )
            if before == "ongoing" and not renew:
                return before
            c.executemany(
                "INSERT OR IGNORE INTO hot_holds(holder, blob_id, expires_ns) VALUES(?,?,NULL)",
                [(holder, b) for b in dict.fromkeys(blob_ids)],
            )
            if row is None:
                c.execute(
                    "INSERT INTO hot_requests(holder, created_ns, expires_ns, ttl_ns, done_ns) VALUES(?,?,?,?,NULL)",
                    (holder, now_ns, expires_ns, ttl_ns),
                )
            else:
                c.execute(
                    "UPDATE hot_requests SET expires_ns=?, ttl_ns=?, done_ns=NULL WHERE holder=?",
                    (expires_ns, ttl_ns, holder),
                )
            self._hot_settle(c, holder, now_ns, round_ns)
            return before

        return await self._write(fn)

    @staticmethod
    def _hot_settle(c: sqlite3.Connection, holder: str, now_ns: int, round_ns: int) -> bool:
        """Inside a write: if every held remote blob of ``holder`` is copied, the copy is done (its
        expiry set from ``ttl_ns``: ``TTL_EXPIRY``); the holds take the holder's expiry. True if done."""
        missing = c.execute(
            "SELECT 1 FROM hot_holds h JOIN blobs b ON b.blob_id = h.blob_id"
            " WHERE h.holder=? AND b.tier IS NOT NULL AND b.cached IS NULL LIMIT 1",
            (holder,),
        ).fetchone()
        if missing is None:
            c.execute(_SETTLE, (now_ns, round_ns, holder))
        (expires_ns,) = c.execute("SELECT expires_ns FROM hot_requests WHERE holder=?", (holder,)).fetchone()
        c.execute("UPDATE hot_holds SET expires_ns=? WHERE holder=?", (expires_ns, holder))
        return missing is None

    async def hot_request(self, holder: str) -> HoldInfo | None:
        """The holder's copy and what it holds, or None."""
        c = self._reader()
        row = c.execute(f"{_REQUEST} WHERE holder=?", (holder,)).fetchone()
        return _info(c, row) if row else None

    async def hot_state(self, holder: str) -> tuple[int | None, int | None] | None:
        """(done_ns, expires_ns) of ``holder``, or None: one point read (HEAD's x-amz-restore)."""
        row = (
            self._reader().execute("SELECT done_ns, expires_ns FROM hot_requests WHERE holder=?", (holder,)).fetchone()
        )
        return None if row is None else (row[0], row[1])

    async def hot_list(self, prefix: str = "") -> list[HoldInfo]:
        """Every holder whose name starts with ``prefix``, by name, with its size."""
        c = self._reader()
        sql = f"{_REQUEST} WHERE substr(holder, 1, ?) = ? ORDER BY holder"
        return [_info(c, row) for row in c.execute(sql, (len(prefix), prefix)).fetchall()]

    async def hot_missing(self, holder: str, limit: int = 1000, *, descending: bool = False) -> list[HeldBlob]:
        """Held remote blobs of ``holder`` without a local copy, by id (``descending``: from the
        other end, for a second worker that helps); not those still in the trash (a freed copy
        whose bytes the drain has not deleted yet: copied once it has)."""
        sql = _MISSING_DESC if descending else _MISSING
        return [HeldBlob(str(b), int(n), str(t)) for b, n, t in self._reader().execute(sql, (holder, limit))]

    async def hot_due(self, now_ns: int) -> tuple[bool, bool]:
        """(a holder or hold has expired, an ongoing copy is free to claim) at ``now_ns``: two
        indexed reads, so an idle worker's pass writes nothing."""
        c = self._reader()
        expired = (
            c.execute("SELECT 1 FROM hot_requests WHERE expires_ns <= ? LIMIT 1", (now_ns,)).fetchone()
            or c.execute("SELECT 1 FROM hot_holds WHERE expires_ns <= ? LIMIT 1", (now_ns,)).fetchone()
        )
        sql = "SELECT 1 FROM hot_requests WHERE done_ns IS NULL AND lease_ns <= ? LIMIT 1"
        return expired is not None, c.execute(sql, (now_ns,)).fetchone() is not None

    async def hot_leased(self, now_ns: int, limit: int = 8) -> list[str]:
        """Ongoing copies a live worker holds (their lease runs at ``now_ns``): another may help
        it from the other end (one indexed read)."""
        sql = "SELECT holder FROM hot_requests WHERE done_ns IS NULL AND lease_ns > ? ORDER BY lease_ns LIMIT ?"
        return [str(r[0]) for r in self._reader().execute(sql, (now_ns, limit))]

    async def hot_claim(self, now_ns: int, lease_ns: int, limit: int = 8, *, owner: str | None = None) -> list[str]:
        """Claim ongoing copies no live worker has: their leases move to ``now_ns + lease_ns``, owned by ``owner``."""

        def fn(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT holder FROM hot_requests WHERE done_ns IS NULL AND lease_ns <= ? ORDER BY lease_ns LIMIT ?",
                (now_ns, limit),
            ).fetchall()
            c.executemany(
                "UPDATE hot_requests SET lease_ns=?, lease_owner=? WHERE holder=?",
                [(now_ns + lease_ns, owner, r[0]) for r in rows],
            )
            return [str(r[0]) for r in rows]

        return await self._write(fn)

    async def hot_renew(self, holder: str, lease_ns: int, *, owner: str | None = None, fenced: bool = False) -> bool:
        """The worker copying ``holder`` keeps (or, with ``owner``, takes) its claim until
        ``lease_ns``; ``fenced``: only while the claim is still ``owner``'s (the heartbeat).
        False if nothing was renewed (done, or another owner's)."""

        def fn(c: sqlite3.Connection) -> bool:
            sql = (
                "UPDATE hot_requests SET lease_ns=?, lease_owner=COALESCE(?, lease_owner)"
                " WHERE holder=? AND done_ns IS NULL"
            )
            args: tuple[object, ...] = (lease_ns, owner, holder)
            if fenced:
                sql, args = sql + " AND lease_owner=?", (*args, owner)
            return c.execute(sql, args).rowcount > 0

        return await self._write(fn)

    async def hot_cached(self, blob_ids: Sequence[str], now_ns: int) -> list[str]:
        """The local copies of ``blob_ids`` are complete and verified: marked cached where a live
        hold needs them; the others (released meanwhile, or the blob is gone) go to the trash.
        Returns the ids marked."""

        def fn(c: sqlite3.Connection) -> list[str]:
            marked = []
            for blob_id in blob_ids:
                cur = c.execute(
                    f"UPDATE blobs SET cached=1 WHERE blob_id=? AND tier IS NOT NULL AND {_LIVE_HOLD}",  # noqa: S608
                    (blob_id, now_ns),
                )
                if cur.rowcount:
                    marked.append(blob_id)
                elif not c.execute("SELECT 1 FROM blobs WHERE blob_id=? AND cached IS NOT NULL", (blob_id,)).fetchone():
                    c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (blob_id,))
            return marked

        return await self._write(fn)

    async def hot_settle(self, holder: str, now_ns: int, *, round_ns: int = 0) -> bool:
        """Finish ``holder``'s copy if nothing is missing (its expiry set from ``ttl_ns``, rounded
        up to a multiple of ``round_ns`` if set: ``TTL_EXPIRY``); True if done."""

        def fn(c: sqlite3.Connection) -> bool:
            if c.execute("SELECT 1 FROM hot_requests WHERE holder=?", (holder,)).fetchone() is None:
                return False
            return self._hot_settle(c, holder, now_ns, round_ns)

        return await self._write(fn)

    async def hot_release(self, holder: str, now_ns: int) -> bool:
        """Drop ``holder`` and its holds; the copies no other live hold needs go to the trash (one
        transaction). False if there was no such holder."""

        def fn(c: sqlite3.Connection) -> bool:
            ids = [r[0] for r in c.execute("SELECT blob_id FROM hot_holds WHERE holder=?", (holder,)).fetchall()]
            c.execute("DELETE FROM hot_holds WHERE holder=?", (holder,))
            found = c.execute("DELETE FROM hot_requests WHERE holder=?", (holder,)).rowcount > 0
            free_unheld(c, ids, now_ns)
            return found or bool(ids)

        return await self._write(fn)

    async def hot_sweep(self, now_ns: int, limit: int = 1000) -> tuple[list[str], int]:
        """Drop holders and holds expired at ``now_ns`` (a page of ``limit`` holders) and free the
        copies no live hold needs, in one transaction. Returns (the holders dropped, copies freed)."""

        def fn(c: sqlite3.Connection) -> tuple[list[str], int]:
            holders = [
                str(r[0])
                for r in c.execute(
                    "SELECT holder FROM hot_requests WHERE expires_ns IS NOT NULL AND expires_ns <= ? LIMIT ?",
                    (now_ns, limit),
                )
            ]
            ids: list[str] = []
            for holder in holders:
                ids += [r[0] for r in c.execute("SELECT blob_id FROM hot_holds WHERE holder=?", (holder,))]
                c.execute("DELETE FROM hot_holds WHERE holder=?", (holder,))
                c.execute("DELETE FROM hot_requests WHERE holder=?", (holder,))
            # Holds whose holder row is gone or that expired on their own (none today; cheap: indexed).
            stray = c.execute(
                "SELECT holder, blob_id FROM hot_holds WHERE expires_ns IS NOT NULL AND expires_ns <= ? LIMIT ?",
                (now_ns, limit * 10),
            ).fetchall()
            c.executemany("DELETE FROM hot_holds WHERE holder=? AND blob_id=?", stray)
            ids += [r[1] for r in stray]
            return holders, free_unheld(c, dict.fromkeys(ids), now_ns)

        return await self._write(fn)

    async def hot_lost(self, blob_id: str) -> bool:
        """The local copy of a remote blob is damaged or missing (the scrub): no longer cached;
        the copies of its holders are reopened (the worker copies it again once the drain freed it)."""

        def fn(c: sqlite3.Connection) -> bool:
            if not c.execute(
                "UPDATE blobs SET cached=NULL WHERE blob_id=? AND cached IS NOT NULL", (blob_id,)
            ).rowcount:
                return False
            c.execute("INSERT OR IGNORE INTO trash(blob_id) VALUES(?)", (blob_id,))
            c.execute(
                "UPDATE hot_requests SET done_ns=NULL WHERE holder IN (SELECT holder FROM hot_holds WHERE blob_id=?)",
                (blob_id,),
            )
            return True

        return await self._write(fn)

    async def blob_cached(self, blob_id: str) -> bool:
        row = (
            self._reader().execute("SELECT 1 FROM blobs WHERE blob_id=? AND cached IS NOT NULL", (blob_id,)).fetchone()
        )
        return row is not None
