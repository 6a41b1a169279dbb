"""The gateway registry and leased background work (schema v14; docs/scale-out.md "Background
work: leases, for every job").

- ``gateways(id, host, pid, started_ns, seen_ns)``: each serving process registers and
  heartbeats; its id is the owner of every lease it takes. ``tierstore admin info`` lists the
  live ones.
- ``jobs(name, owner, lease_until, cursor)``: a named job one holder runs at a time (the scrub of
  a store, its orphan sweep, a tier's remote orphan sweep). ``job_claim`` takes the row if it is
  free, expired or already ours; a long job heartbeats with ``job_renew`` (and saves its cursor,
  so a dead holder's successor resumes there); ``job_release`` hands it back. Both are fenced:
  they answer False once another holder has taken the row.
- ``trash`` and ``tier_outbox`` rows carry ``lease_owner`` (and the trash ``lease_until``; the
  outbox's ``next_ns`` is its lease): a claim leases a batch ahead, finishing deletes only the
  rows still ours.

On SQLite the server process owns the file and its workers share it through transactions, as
before; the same tables and semantics keep the protocol one (the conformance suite runs both).
Every write takes its times from its caller (a mirrored catalog's writes are deterministic).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from tierstore.catalog._records import GatewayInfo, JobLease, LeaseBacklog, OutboxEntry
from tierstore.catalog._rules import GATEWAY_FORGET_NS
from tierstore.catalog.sqlite._tables import Tables

__all__ = ["LEASES_DDL", "LeaseTables", "add_lease_columns"]

T = TypeVar("T")

LEASES_DDL = """
CREATE TABLE IF NOT EXISTS gateways(  -- v14: serving processes; the id owns their leases
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_ns INTEGER NOT NULL,
    seen_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs(  -- v14: named jobs one holder runs at a time
    name TEXT PRIMARY KEY,
    owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    cursor TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
"""


def add_lease_columns(conn: sqlite3.Connection) -> None:
    """After the schema's DDL (a new database, v13 or v14): the lease columns of ``trash`` and
    ``tier_outbox`` (v14), ``lifecycle_due``, ``tier_pending`` and ``hot_requests`` (v15), unless there."""
    for table, columns in (
        ("trash", ("lease_owner TEXT", "lease_until INTEGER NOT NULL DEFAULT 0")),
        ("tier_outbox", ("lease_owner TEXT",)),
        ("lifecycle_due", ("lease_owner TEXT",)),  # v15: due_ns is the lease
        ("tier_pending", ("lease_owner TEXT",)),  # v15: next_ns is the lease
        ("hot_requests", ("lease_owner TEXT",)),  # v15: lease_ns is the lease
    ):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


class LeaseTables(Tables):
    """The leases' part of ``SqliteCatalog`` (a mixin: ``_reader()``, ``_write(fn)``)."""

    async def release_dead_leases(self, now_ns: int) -> int:
        """At a server's start, under its exclusive lock on the store (SQLite: one server owns the
        file): every lease in the catalog was taken by a process that is gone, so hand them all
        back now rather than after their expiry (a kill -9 would otherwise hold the trash,
        outbox, jobs, lifecycle rows, pending writes and hot copies it had claimed for a lease).
        Rows whose lease pushed their due time ahead are due at ``now_ns``. Answers how many."""

        def fn(c: sqlite3.Connection) -> int:
            n = c.execute("UPDATE trash SET lease_owner=NULL, lease_until=0 WHERE lease_owner IS NOT NULL").rowcount
            n += c.execute("UPDATE jobs SET owner=NULL, lease_until=0 WHERE owner IS NOT NULL").rowcount
            for table, due in (("tier_outbox", "next_ns"), ("lifecycle_due", "due_ns"), ("tier_pending", "next_ns")):
                n += c.execute(
                    f"UPDATE {table} SET lease_owner=NULL, {due}=MIN({due}, ?) WHERE lease_owner IS NOT NULL",  # noqa: S608
                    (now_ns,),
                ).rowcount
            n += c.execute(
                "UPDATE hot_requests SET lease_owner=NULL, lease_ns=0 WHERE lease_owner IS NOT NULL AND done_ns IS NULL"
            ).rowcount
            return n

        return await self._write(fn)

    # --- the gateway registry -------------------------------------------------------------------
    async def gateway_register(self, gateway: GatewayInfo) -> None:
        """Register (or re-register) ``gateway``; registrations unseen for a day go."""

        def fn(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM gateways WHERE seen_ns < ?", (gateway.seen_ns - GATEWAY_FORGET_NS,))
            c.execute(
                "INSERT OR REPLACE INTO gateways(id, host, pid, started_ns, seen_ns) VALUES(?,?,?,?,?)",
                (gateway.id, gateway.host, gateway.pid, gateway.started_ns, gateway.seen_ns),
            )

        await self._write(fn)

    async def gateway_seen(self, gateway_id: str, now_ns: int) -> bool:
        """The heartbeat; False if the registration is gone (the caller registers again)."""

        def fn(c: sqlite3.Connection) -> bool:
            return c.execute("UPDATE gateways SET seen_ns=? WHERE id=?", (now_ns, gateway_id)).rowcount > 0

        return await self._write(fn)

    async def gateway_forget(self, gateway_id: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM gateways WHERE id=?", (gateway_id,))

        await self._write(fn)

    async def gateway_list(self, seen_after_ns: int = 0) -> list[GatewayInfo]:
        """The gateways seen after ``seen_after_ns``, oldest start first."""
        rows = self._reader().execute(
            "SELECT id, host, pid, started_ns, seen_ns FROM gateways WHERE seen_ns > ? ORDER BY started_ns, id",
            (seen_after_ns,),
        )
        return [GatewayInfo(str(i), str(h), int(p), int(s), int(n)) for i, h, p, s, n in rows]

    # --- named jobs -------------------------------------------------------------------------------
    async def job_claim(self, name: str, owner: str, now_ns: int, lease_ns: int) -> JobLease | None:
        """Job ``name`` leased to ``owner`` until ``now_ns + lease_ns`` if it is free, expired or
        already ``owner``'s (its cursor kept); None while another holder's lease runs."""

        def fn(c: sqlite3.Connection) -> JobLease | None:
            c.execute("INSERT OR IGNORE INTO jobs(name) VALUES(?)", (name,))
            row = c.execute(
                "UPDATE jobs SET owner=?, lease_until=? WHERE name=? AND (owner IS NULL OR owner=? OR lease_until<?)"
                " RETURNING cursor",
                (owner, now_ns + lease_ns, name, owner, now_ns),
            ).fetchone()
            return None if row is None else JobLease(name, owner, now_ns + lease_ns, str(row[0]))

        return await self._write(fn)

    async def job_renew(self, name: str, owner: str, now_ns: int, lease_ns: int, cursor: str | None = None) -> bool:
        """The heartbeat of a long job (and its cursor, when given); False once it is not ``owner``'s."""

        def fn(c: sqlite3.Connection) -> bool:
            return (
                c.execute(
                    "UPDATE jobs SET lease_until=?, cursor=COALESCE(?, cursor) WHERE name=? AND owner=?",
                    (now_ns + lease_ns, cursor, name, owner),
                ).rowcount
                > 0
            )

        return await self._write(fn)

    async def job_release(self, name: str, owner: str, cursor: str) -> bool:
        """Hand job ``name`` back with ``cursor``; False (nothing changed) once it is not ``owner``'s."""

        def fn(c: sqlite3.Connection) -> bool:
            sql = "UPDATE jobs SET owner=NULL, lease_until=0, cursor=? WHERE name=? AND owner=?"
            return c.execute(sql, (cursor, name, owner)).rowcount > 0

        return await self._write(fn)

    async def job_get(self, name: str) -> JobLease | None:
        row = self._reader().execute("SELECT owner, lease_until, cursor FROM jobs WHERE name=?", (name,)).fetchone()
        return None if row is None else JobLease(name, row[0], int(row[1]), str(row[2]))

    async def lease_backlog(self, now_ns: int, bound: int) -> LeaseBacklog:
        """The shared queues' backlog, each count capped at ``bound`` (the trash part reads at
        most ``bound`` rows, the outbox ones walk its due index)."""
        row = self._reader().execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM trash LIMIT :bound)),"
            " (SELECT count(*) FROM (SELECT lease_owner, lease_until FROM trash LIMIT :bound)"
            "   WHERE lease_owner IS NOT NULL AND lease_until < :now),"
            " (SELECT count(*) FROM (SELECT 1 FROM tier_outbox WHERE next_ns <= :now LIMIT :bound)),"
            " (SELECT count(*) FROM (SELECT 1 FROM tier_outbox WHERE next_ns <= :now AND lease_owner IS NOT NULL"
            "   LIMIT :bound)),"
            " (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE owner IS NOT NULL AND lease_until < :now"
            "   LIMIT :bound))",
            {"now": now_ns, "bound": bound},
        ).fetchone()
        return LeaseBacklog(*(int(v) for v in row))

    # --- the trash --------------------------------------------------------------------------------
    async def trash_claim(self, owner: str, now_ns: int, lease_ns: int, limit: int = 500) -> list[str]:
        """Up to ``limit`` trash rows no live lease holds, leased to ``owner`` until ``now_ns + lease_ns``."""

        def fn(c: sqlite3.Connection) -> list[str]:
            ids = [r[0] for r in c.execute("SELECT blob_id FROM trash WHERE lease_until<? LIMIT ?", (now_ns, limit))]
            c.executemany(
                "UPDATE trash SET lease_owner=?, lease_until=? WHERE blob_id=?",
                [(owner, now_ns + lease_ns, b) for b in ids],
            )
            return ids

        return await self._write(fn)

    async def trash_finish(self, owner: str, blob_ids: Sequence[str]) -> int:
        """The blobs are deleted: drop the rows still leased to ``owner``; how many went."""

        def fn(c: sqlite3.Connection) -> int:
            sql = "DELETE FROM trash WHERE blob_id=? AND lease_owner=?"
            return sum(c.execute(sql, (b, owner)).rowcount for b in blob_ids)

        return await self._write(fn)

    async def trash_release(self, owner: str, blob_ids: Sequence[str]) -> int:
        """Hand back the rows still leased to ``owner`` (their deletes failed): due again at once."""

        def fn(c: sqlite3.Connection) -> int:
            sql = "UPDATE trash SET lease_owner=NULL, lease_until=0 WHERE blob_id=? AND lease_owner=?"
            return sum(c.execute(sql, (b, owner)).rowcount for b in blob_ids)

        return await self._write(fn)

    # --- the tier outbox --------------------------------------------------------------------------
    async def outbox_claim(self, owner: str, now_ns: int, lease_ns: int, limit: int = 200) -> list[OutboxEntry]:
        """Up to ``limit`` due outbox rows, leased to ``owner`` (their ``next_ns`` moved ahead)."""

        def fn(c: sqlite3.Connection) -> list[OutboxEntry]:
            sql = "SELECT tier, blob_id, attempts FROM tier_outbox WHERE next_ns <= ? ORDER BY next_ns LIMIT ?"
            due = [OutboxEntry(str(t), str(b), int(a)) for t, b, a in c.execute(sql, (now_ns, limit))]
            c.executemany(
                "UPDATE tier_outbox SET lease_owner=?, next_ns=? WHERE tier=? AND blob_id=?",
                [(owner, now_ns + lease_ns, e.tier, e.blob_id) for e in due],
            )
            return due

        return await self._write(fn)

    async def outbox_finish(self, owner: str, entries: Sequence[OutboxEntry]) -> int:
        """The remote objects are deleted: drop the rows still leased to ``owner``; how many went."""

        def fn(c: sqlite3.Connection) -> int:
            sql = "DELETE FROM tier_outbox WHERE tier=? AND blob_id=? AND lease_owner=?"
            return sum(c.execute(sql, (e.tier, e.blob_id, owner)).rowcount for e in entries)

        return await self._write(fn)

    async def outbox_requeue(self, owner: str, entries: Sequence[OutboxEntry], next_ns: Callable[[int], int]) -> int:
        """The tier did not answer: the rows still ``owner``'s get one more attempt, due at
        ``next_ns(attempts)``, and no owner; how many."""

        def fn(c: sqlite3.Connection) -> int:
            sql = (
                "UPDATE tier_outbox SET attempts = attempts + 1, next_ns=?, lease_owner=NULL"
                " WHERE tier=? AND blob_id=? AND lease_owner=?"
            )
            return sum(c.execute(sql, (next_ns(e.attempts + 1), e.tier, e.blob_id, owner)).rowcount for e in entries)

        return await self._write(fn)
