"""The gateway registry and leased background work on PostgreSQL: the semantics of
catalog/sqlite/_leases.py (docs/scale-out.md "Background work: leases, for every job"), schema step 5.

Claims are one statement each, ``UPDATE ... WHERE <key> IN (SELECT ... FOR UPDATE SKIP LOCKED)``:
claimers never wait on each other, a row another transaction is claiming is skipped, and the
lease runs out at ``lease_until`` (the outbox's ``next_ns``), after which any gateway takes it.
Finishing is fenced (``AND lease_owner = $owner``): a holder whose lease expired and was taken
over finishes nothing. A named job's row is taken by one conditional upsert.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tierstore.catalog._records import GatewayInfo, JobLease, LeaseBacklog, OutboxEntry
from tierstore.catalog._rules import GATEWAY_FORGET_NS
from tierstore.catalog.postgres._pool import Pool

__all__ = ["LEASES_DDL", "OWNER_FENCE_DDL", "LeaseTables"]

LEASES_DDL = (
    """CREATE TABLE gateways(  -- serving processes; the id owns their leases
        id text COLLATE "C" PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started_ns bigint NOT NULL,
        seen_ns bigint NOT NULL
    )""",
    """CREATE TABLE jobs(  -- named jobs one holder runs at a time (scrub, orphan sweeps)
        name text COLLATE "C" PRIMARY KEY,
        owner text COLLATE "C",
        lease_until bigint NOT NULL DEFAULT 0,
        cursor text NOT NULL DEFAULT ''
    )""",
    'ALTER TABLE trash ADD COLUMN lease_owner text COLLATE "C"',
    "ALTER TABLE trash ADD COLUMN lease_until bigint NOT NULL DEFAULT 0",
    'ALTER TABLE tier_outbox ADD COLUMN lease_owner text COLLATE "C"',
)
OWNER_FENCE_DDL = (  # lifecycle rows, pending writes, hot copies: their due_ns / next_ns / lease_ns is the lease
    'ALTER TABLE lifecycle_due ADD COLUMN lease_owner text COLLATE "C"',
    'ALTER TABLE tier_pending ADD COLUMN lease_owner text COLLATE "C"',
    'ALTER TABLE hot_requests ADD COLUMN lease_owner text COLLATE "C"',  # its lease_ns is the lease
)


class LeaseTables:
    """The leases' part of ``PostgresCatalog`` (a mixin over its ``_pool``)."""

    _pool: Pool

    # --- the gateway registry -------------------------------------------------------------------
    async def gateway_register(self, gateway: GatewayInfo) -> None:
        """Register (or re-register) ``gateway``; registrations unseen for a day go."""

        async def fn(c: Any) -> None:
            await c.execute("DELETE FROM gateways WHERE seen_ns < $1", gateway.seen_ns - GATEWAY_FORGET_NS)
            await c.execute(
                "INSERT INTO gateways(id, host, pid, started_ns, seen_ns) VALUES($1, $2, $3, $4, $5)"
                " ON CONFLICT(id) DO UPDATE SET seen_ns = excluded.seen_ns",
                gateway.id, gateway.host, gateway.pid, gateway.started_ns, gateway.seen_ns,
            )  # fmt: skip

        await self._pool.write(fn)

    async def gateway_seen(self, gateway_id: str, now_ns: int) -> bool:
        """The heartbeat; False if the registration is gone (the caller registers again)."""
        sql = "UPDATE gateways SET seen_ns = $1 WHERE id = $2 RETURNING 1"
        row = await self._pool.fetchrow(sql, now_ns, gateway_id)
        return row is not None

    async def gateway_forget(self, gateway_id: str) -> None:
        await self._pool.fetch("DELETE FROM gateways WHERE id = $1", gateway_id)

    async def gateway_list(self, seen_after_ns: int = 0) -> list[GatewayInfo]:
        """The gateways seen after ``seen_after_ns``, oldest start first."""
        rows = await self._pool.fetch(
            "SELECT id, host, pid, started_ns, seen_ns FROM gateways WHERE seen_ns > $1 ORDER BY started_ns, id",
            seen_after_ns,
        )
        return [GatewayInfo(str(i), str(h), int(p), int(s), int(n)) for i, h, p, s, n in rows]

    # --- named jobs -------------------------------------------------------------------------------
    async def job_claim(self, name: str, owner: str, now_ns: int, lease_ns: int) -> JobLease | None:
        """Job ``name`` leased to ``owner`` until ``now_ns + lease_ns`` if it is free, expired or
        already ``owner``'s (its cursor kept); None while another holder's lease runs."""
        row = await self._pool.fetchrow(
            "INSERT INTO jobs(name, owner, lease_until) VALUES($1, $2, $3)"
            " ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until"
            " WHERE jobs.owner IS NULL OR jobs.owner = excluded.owner OR jobs.lease_until < $4"
            " RETURNING cursor",
            name, owner, now_ns + lease_ns, now_ns,
        )  # fmt: skip
        return None if row is None else JobLease(name, owner, now_ns + lease_ns, str(row[0]))

    async def job_renew(self, name: str, owner: str, now_ns: int, lease_ns: int, cursor: str | None = None) -> bool:
        """The heartbeat of a long job (and its cursor, when given); False once it is not ``owner``'s."""
        row = await self._pool.fetchrow(
            "UPDATE jobs SET lease_until = $1, cursor = COALESCE($2, cursor)"
            " WHERE name = $3 AND owner = $4 RETURNING 1",
            now_ns + lease_ns, cursor, name, owner,
        )  # fmt: skip
        return row is not None

    async def job_release(self, name: str, owner: str, cursor: str) -> bool:
        """Hand job ``name`` back with ``cursor``; False (nothing changed) once it is not ``owner``'s."""
        row = await self._pool.fetchrow(
            "UPDATE jobs SET owner = NULL, lease_until = 0, cursor = $1 WHERE name = $2 AND owner = $3 RETURNING 1",
            cursor, name, owner,
        )  # fmt: skip
        return row is not None

    async def job_get(self, name: str) -> JobLease | None:
        row = await self._pool.fetchrow("SELECT owner, lease_until, cursor FROM jobs WHERE name = $1", name)
        return None if row is None else JobLease(name, row[0], int(row[1]), str(row[2]))

    async def lease_backlog(self, now_ns: int, bound: int) -> LeaseBacklog:
        """The shared queues' backlog, each count capped at ``bound`` (one round trip; the trash
        part reads at most ``bound`` rows, the outbox ones walk its due index)."""
        row = await self._pool.fetchrow(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM trash LIMIT $2) t),"
            " (SELECT count(*) FROM (SELECT lease_owner, lease_until FROM trash LIMIT $2) t"
            "   WHERE lease_owner IS NOT NULL AND lease_until < $1),"
            " (SELECT count(*) FROM (SELECT 1 FROM tier_outbox WHERE next_ns <= $1 LIMIT $2) o),"
            " (SELECT count(*) FROM (SELECT 1 FROM tier_outbox WHERE next_ns <= $1 AND lease_owner IS NOT NULL"
            "   LIMIT $2) o),"
            " (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE owner IS NOT NULL AND lease_until < $1 LIMIT $2) j)",
            now_ns, bound,
        )  # fmt: skip
        return LeaseBacklog(*(int(v) for v in row))

    # --- the trash --------------------------------------------------------------------------------
    async def trash_claim(self, owner: str, now_ns: int, lease_ns: int, limit: int = 500) -> list[str]:
        """Up to ``limit`` trash rows no live lease holds, leased to ``owner`` until ``now_ns + lease_ns``."""
        rows = await self._pool.fetch(
            "UPDATE trash SET lease_owner = $1, lease_until = $2 WHERE blob_id IN"
            " (SELECT blob_id FROM trash WHERE lease_until < $3 LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " RETURNING blob_id",
            owner, now_ns + lease_ns, now_ns, limit,
        )  # fmt: skip
        return [str(r[0]) for r in rows]

    async def trash_finish(self, owner: str, blob_ids: Sequence[str]) -> int:
        """The blobs are deleted: drop the rows still leased to ``owner``; how many went."""
        rows = await self._pool.fetch(
            "DELETE FROM trash WHERE blob_id = ANY($1::text[]) AND lease_owner = $2 RETURNING 1", list(blob_ids), owner
        )
        return len(rows)

    async def trash_release(self, owner: str, blob_ids: Sequence[str]) -> int:
        """Hand back the rows still leased to ``owner`` (their deletes failed): due again at once."""
        rows = await self._pool.fetch(
            "UPDATE trash SET lease_owner = NULL, lease_until = 0"
            " WHERE blob_id = ANY($1::text[]) AND lease_owner = $2 RETURNING 1",
            list(blob_ids), owner,
        )  # fmt: skip
        return len(rows)

    # --- the tier outbox --------------------------------------------------------------------------
    async def outbox_claim(self, owner: str, now_ns: int, lease_ns: int, limit: int = 200) -> list[OutboxEntry]:
        """Up to ``limit`` due outbox rows, leased to ``owner`` (their ``next_ns`` moved ahead)."""
        rows = await self._pool.fetch(
            "UPDATE tier_outbox o SET lease_owner = $1, next_ns = $2 FROM"
            " (SELECT tier, blob_id FROM tier_outbox WHERE next_ns <= $3 ORDER BY next_ns LIMIT $4"
            "  FOR UPDATE SKIP LOCKED) d WHERE o.tier = d.tier AND o.blob_id = d.blob_id"
            " RETURNING o.tier, o.blob_id, o.attempts",
            owner, now_ns + lease_ns, now_ns, limit,
        )  # fmt: skip
        return [OutboxEntry(str(t), str(b), int(a)) for t, b, a in rows]

    async def outbox_finish(self, owner: str, entries: Sequence[OutboxEntry]) -> int:
        """The remote objects are deleted: drop the rows still leased to ``owner``; how many went."""
        rows = await self._pool.fetch(
            "DELETE FROM tier_outbox o USING unnest($1::text[], $2::text[]) AS d(tier, blob_id)"
            " WHERE o.tier = d.tier AND o.blob_id = d.blob_id AND o.lease_owner = $3 RETURNING 1",
            [e.tier for e in entries], [e.blob_id for e in entries], owner,
        )  # fmt: skip
        return len(rows)

    async def outbox_requeue(self, owner: str, entries: Sequence[OutboxEntry], next_ns: Callable[[int], int]) -> int:
        """The tier did not answer: the rows still ``owner``'s get one more attempt, due at
        ``next_ns(attempts)``, and no owner; how many."""
        rows = await self._pool.fetch(
            "UPDATE tier_outbox o SET attempts = o.attempts + 1, next_ns = d.next_ns, lease_owner = NULL"
            " FROM unnest($1::text[], $2::text[], $3::bigint[]) AS d(tier, blob_id, next_ns)"
            " WHERE o.tier = d.tier AND o.blob_id = d.blob_id AND o.lease_owner = $4 RETURNING 1",
            [e.tier for e in entries], [e.blob_id for e in entries], [next_ns(e.attempts + 1) for e in entries], owner,
        )  # fmt: skip
        return len(rows)
