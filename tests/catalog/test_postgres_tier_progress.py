"""The mover's progress and retries on PostgreSQL (catalog/postgres/_tier_progress.py) with
SqliteCatalog's semantics (tests/catalog/test_tier_progress.py): the counters (summed over their
slots: no one hot row per tier), the backlog, pending writes leased by a claim and backed off; a
write in a tier's class waits for its tier. And across connections: parallel claims never take
one pending write twice; counts from many connections add up.

The backlog also counts rows of the tiers' and lifecycle's tables (``tiers``, ``tier_outbox``,
``lifecycle_due``), which another module of slice 4 creates; until its schema step is in this
branch, ``_their_tables`` stands in for them with SQLite's columns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.catalog.test_postgres_catalog import run
from tests.postgres import PostgreSQL
from tierstore.catalog import BlobRef, TierProgress, VersionRecord
from tierstore.catalog.postgres import PostgresCatalog
from tierstore.catalog.postgres._tier_progress import STAT_SLOTS, count_moved, note_tier_write
from tierstore.types import BucketInfo, ObjectMeta

pytestmark = pytest.mark.peer

S = 1_000_000_000

_STAND_INS = (
    'CREATE TABLE IF NOT EXISTS tiers(name text COLLATE "C" PRIMARY KEY, config text NOT NULL, secret bytea,'
    " created_ns bigint NOT NULL)",
    'CREATE TABLE IF NOT EXISTS tier_outbox(tier text COLLATE "C" NOT NULL, blob_id text COLLATE "C" NOT NULL,'
    " queued_ns bigint NOT NULL, attempts integer NOT NULL DEFAULT 0, next_ns bigint NOT NULL,"
    " PRIMARY KEY(tier, blob_id))",
    'CREATE TABLE IF NOT EXISTS lifecycle_due(due_ns bigint NOT NULL, bucket text COLLATE "C" NOT NULL,'
    ' key bytea NOT NULL, version_id text COLLATE "C" NOT NULL, action text NOT NULL, storage_class text,'
    " PRIMARY KEY(bucket, key, version_id, action))",
)


@pytest.fixture(scope="module")
def dsn(postgres: PostgreSQL) -> str:
    dsn = postgres.create_database("pgprogress")

    async def their_tables(cat: PostgresCatalog) -> None:
        async def fn(c: Any) -> None:
            for statement in _STAND_INS:
                await c.execute(statement)

        await cat._pool.write(fn)

    run(dsn, their_tables)
    return dsn


async def sql(cat: PostgresCatalog, statement: str, *args: Any) -> None:
    async def fn(c: Any) -> None:
        await c.execute(statement, *args)

    await cat._pool.write(fn)


def test_counters_backlog_and_pending_leases(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        await sql(cat, "INSERT INTO tiers(name, config, created_ns) VALUES('COLD', '{}', 1)")
        assert (await cat.tier_progress("COLD", 10 * S)) == TierProgress()
        await cat.tier_error("COLD", "TierUnavailable: x" * 100, 5 * S)
        await cat.tier_error("COLD", "TierUnavailable: the last one", 6 * S)
        await cat.tier_pending_add("bk", "a/key", "v1", "COLD", 20 * S)
        await cat.tier_pending_add("bk", "b/key", "v2", "COLD", 30 * S)
        await cat.tier_pending_add("bk", "c/key", "v3", "WARM", 30 * S)
        p = await cat.tier_progress("COLD", 10 * S)
        assert (p.errors, p.last_error, p.last_error_ns, p.pending, p.backlog) == (
            2, "TierUnavailable: the last one", 6 * S, 2, 2,
        )  # fmt: skip
        assert not await cat.tier_pending_any(19 * S) and await cat.tier_pending_any(20 * S)
        (item,) = await cat.tier_pending_claim(25 * S, 10, 100 * S)
        assert (item.bucket, item.key, item.version_id, item.tier, item.attempts) == ("bk", "a/key", "v1", "COLD", 1)
        claimed = await cat.tier_pending_claim(30 * S, 10, 100 * S)
        assert [i.key for i in claimed] == ["b/key", "c/key"]  # a/key is leased
        await cat.tier_pending_retry(item, 40 * S)
        (again,) = await cat.tier_pending_claim(40 * S, 10, 100 * S)
        assert again.attempts == 2
        await cat.tier_pending_done(again)
        assert (await cat.tier_progress("COLD", 10 * S)).pending == 1
        await cat.tier_pending_forget("bk", "b/key", "v2")
        assert (await cat.tier_progress("COLD", 10 * S)).pending == 0
        await cat.tier_pending_done(claimed[1])  # WARM's, so the next tests start with none
        assert not await cat.tier_pending_any(2**62)

        # The backlog counts transitions due to the tier and remote deletes queued for it.
        await cat.create_bucket(BucketInfo("bk", 1, "us-east-1"))
        await sql(
            cat,
            "INSERT INTO lifecycle_due(due_ns, bucket_id, key, version_id, action, storage_class)"
            " SELECT d, id, k, 'v', a, sc FROM buckets, (VALUES ($1::bigint, 'x'::bytea, 'transition', 'COLD'),"
            " ($2, 'y', 'transition', 'COLD'), ($1, 'z', 'expire', NULL)) AS r(d, k, a, sc) WHERE name = 'bk'",
            5 * S, 50 * S,
        )  # fmt: skip
        await sql(cat, "INSERT INTO tier_outbox(tier, blob_id, queued_ns, next_ns) VALUES('COLD', 'gone', 1, 1)")
        p = await cat.tier_progress("COLD", 10 * S)
        assert (p.due, p.outbox, p.backlog) == (1, 1, 2)

    run(dsn, body)


def test_counts_from_many_connections_add_up(dsn: str) -> None:
    """Movers in parallel count into the slots of their connections; the sums are exact."""

    async def body(cat: PostgresCatalog) -> None:
        async def move(size: int) -> None:
            async def fn(c: Any) -> None:
                await count_moved(c, "MANY", size)

            await cat._pool.write(fn)

        await asyncio.gather(*(move(size) for size in range(1, 41)))
        await asyncio.gather(*(cat.tier_error("MANY", f"error {i}", i * S) for i in range(1, 9)))
        p = await cat.tier_progress("MANY", 0)
        assert (p.moved_objects, p.moved_bytes, p.errors, p.last_error, p.last_error_ns) == (
            40, sum(range(1, 41)), 8, "error 8", 8 * S,
        )  # fmt: skip
        assert await cat._pool.fetchval("SELECT count(*) FROM tier_stats WHERE tier = 'MANY'") <= STAT_SLOTS

    run(dsn, body)


def test_parallel_claims_never_take_one_pending_write_twice(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        keys = [f"claim/{i:02d}" for i in range(30)]
        for key in keys:
            await cat.tier_pending_add("claims", key, "v", "PAR", 1)
        claims = await asyncio.gather(*(cat.tier_pending_claim(10, 6, 1000) for _ in range(8)))
        assert sorted(i.key for claim in claims for i in claim) == keys
        assert await cat.tier_pending_claim(10, 100, 1000) == []
        for claim in claims:
            for item in claim:
                await cat.tier_pending_done(item)

    run(dsn, body)


def test_a_write_in_a_tier_class_waits_for_its_tier(dsn: str) -> None:
    """``put_version`` calls ``note_tier_write`` in the publishing transaction: it records a
    version in a tier's class (not a label class, not STANDARD, not a delete marker) in ``tier_pending``."""

    async def body(cat: PostgresCatalog) -> None:
        await sql(cat, "INSERT INTO tiers(name, config, created_ns) VALUES('ICE', '{}', 1)")
        await cat.create_bucket(BucketInfo("notes", 1, "us-east-1"))
        for key, sc in (("ice", "ICE"), ("label", "GLACIER"), ("std", "STANDARD")):
            meta = ObjectMeta(bucket="notes", key=key, version_id="null", size_bytes=3, etag='"e"', modified_ns=S,
                              storage_class=sc)  # fmt: skip
            await cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(f"{key}-blob", 3)]))  # notes it
        marker = ObjectMeta(bucket="notes", key="dm", version_id="m", size_bytes=0, etag="", modified_ns=S,
                            storage_class="ICE", is_delete_marker=True)  # fmt: skip

        async def fn(c: Any) -> None:
            await note_tier_write(c, marker, b"dm")

        await cat._pool.write(fn)
        assert (await cat.tier_progress("ICE", S)).pending == 1
        assert await cat.tier_pending_claim(S + 600 * S - 1, 10, S) == []  # the write's request moves it first
        (item,) = await cat.tier_pending_claim(S + 600 * S, 10, S)
        assert (item.bucket, item.key, item.version_id, item.tier, item.attempts) == ("notes", "ice", "null", "ICE", 0)

    run(dsn, body)
