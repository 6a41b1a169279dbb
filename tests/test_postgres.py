"""The PostgreSQL test fixture (tests/postgres.py) is a real server that does what the scale-out
catalog (docs/scale-out.md) relies on: a database per test module, keys as ``bytea`` that sort in
S3's byte order, advisory locks (migrations run once) and ``FOR UPDATE SKIP LOCKED`` (leases)."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.postgres import PostgreSQL

# S3 lists in UTF-8 byte order: 'B' < 'a' (case), '/' < '0', a prefix before its extensions,
# and non-ASCII (0xC3..., 0xE4...) after all of ASCII — not what a collation-aware text sort gives.
KEYS = ["a", "B", "a/b", "a0", "a.b", "é", "z", "日本", "a b", "~", "A"]
MIGRATION_LOCK = 0x7469_6572  # "tier": any 64-bit id, one per purpose


async def _check(dsn: str) -> None:
    one = await asyncpg.connect(dsn)
    two = await asyncpg.connect(dsn)
    try:
        assert await one.fetchval("SHOW listen_addresses") == "127.0.0.1"

        await one.execute('CREATE TABLE k(bucket text COLLATE "C", key bytea, PRIMARY KEY(bucket, key))')
        await one.executemany("INSERT INTO k VALUES ('b', $1)", [(k.encode(),) for k in KEYS])
        got = [bytes(r["key"]) for r in await one.fetch("SELECT key FROM k WHERE bucket = 'b' ORDER BY key")]
        assert got == sorted(k.encode() for k in KEYS)
        # a keyset page: strictly after a key, in order, through the primary key's index
        page = await one.fetch("SELECT key FROM k WHERE bucket = 'b' AND key > $1 ORDER BY key LIMIT 3", b"a")
        assert [bytes(r["key"]) for r in page] == [b"a b", b"a.b", b"a/b"]

        # the migration lock: whoever holds it runs migrations; the other gateway waits or skips
        assert await one.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK)
        assert not await two.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK)
        assert await one.fetchval("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        assert await two.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK)

        # leases: two claimers take different rows, neither waits for the other
        claim = "SELECT key FROM k WHERE bucket = 'b' ORDER BY key LIMIT 2 FOR UPDATE SKIP LOCKED"
        async with one.transaction(), two.transaction():
            first = {bytes(r["key"]) for r in await one.fetch(claim)}
            second = {bytes(r["key"]) for r in await two.fetch(claim)}
        assert len(first) == len(second) == 2
        assert not first & second
    finally:
        await one.close()
        await two.close()


def test_postgres_fixture(postgres: PostgreSQL) -> None:
    dsn = postgres.create_database("fixture_probe")
    asyncio.run(_check(dsn))
