"""Hot copies on PostgreSQL (catalog/postgres/_hot.py): SqliteCatalog's semantics are
tests/catalog/test_hot.py's (run on both catalogs); here what SQLite's single writer gave for
free: claimers in parallel never take the same copy, and a copy marked cached while its last
hold is released concurrently is never left cached without a hold.

The blobs are published in the remote tier directly (``BlobRef(tier=...)``)."""

from __future__ import annotations

import asyncio

import pytest

from tests.catalog.test_postgres_catalog import run
from tests.postgres import PostgreSQL
from tierstore.catalog import BlobRef, VersionRecord
from tierstore.catalog.postgres import PostgresCatalog
from tierstore.types import BucketInfo, ObjectMeta

pytestmark = pytest.mark.peer

A = "0000000000000000aaaa"
B = "0000000000000000bbbb"
L = "0000000000000000llll"  # stays local


@pytest.fixture(scope="module")
def dsn(postgres: PostgreSQL) -> str:
    return postgres.create_database("pghot")


async def store(cat: PostgresCatalog, bucket: str, refs: list[BlobRef]) -> None:
    await cat.create_bucket(BucketInfo(bucket, 1, "us-east-1"))
    meta = ObjectMeta(bucket=bucket, key="k", version_id="null", size_bytes=12, etag='"x"', modified_ns=9)
    await cat.put_version(VersionRecord(meta=meta, blobs=refs))


def test_parallel_claims_never_take_one_copy_twice(dsn: str) -> None:
    """Claims from many connections at once (SKIP LOCKED): every ongoing copy is claimed by
    exactly one of them."""
    holders = [f"pin:claim-{i:02d}" for i in range(24)]

    async def body(cat: PostgresCatalog) -> None:
        for h in holders:
            await cat.hot_hold(h, [], now_ns=1)  # holds nothing remote yet: opened and done at once
        # Reopen them all (a lost copy reopens its holders' copies), with one remote blob each.
        await store(cat, "claims", [BlobRef(f"claim-blob-{i:02d}", 1, "COLD") for i in range(24)])
        for i, h in enumerate(holders):
            assert await cat.hot_hold(h, [f"claim-blob-{i:02d}"], now_ns=2) == "done"
        claims = await asyncio.gather(*(cat.hot_claim(10, 1000, limit=5) for _ in range(8)))
        taken = [h for claim in claims for h in claim]
        assert sorted(taken) == holders  # none twice, none left
        assert await cat.hot_claim(10, 1000) == []
        for h in holders:
            assert await cat.hot_release(h, 20)

    run(dsn, body)


def test_a_copy_marked_while_its_hold_goes_is_never_left_cached(dsn: str) -> None:
    """``hot_cached`` and ``hot_release`` of the only hold, in parallel, many times: whichever
    commits second sees the other, so the copy ends either freed into the trash or not cached —
    never cached without a live hold (SQLite's single writer ran them one after the other)."""
    blobs = [f"race-blob-{i:02d}" for i in range(20)]

    async def body(cat: PostgresCatalog) -> None:
        await store(cat, "race", [BlobRef(b, 1, "COLD") for b in blobs])
        for i, blob in enumerate(blobs):
            holder = f"pin:race-{i:02d}"
            assert await cat.hot_hold(holder, [blob], now_ns=1) == "new"
            await asyncio.gather(cat.hot_cached([blob], 2), cat.hot_release(holder, 2))
            assert not await cat.blob_cached(blob), blob
            assert blob in await cat.trash_batch(10_000), blob  # the copy's bytes are deleted
        await cat.trash_done(blobs)

    run(dsn, body)
