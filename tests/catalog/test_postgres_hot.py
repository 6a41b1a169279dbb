"""Hot copies on PostgreSQL (catalog/postgres/_hot.py) with SqliteCatalog's semantics
(tests/catalog/test_hot.py): holds, copies marked cached, release and expiry free (into the
trash) only the copies no live hold needs; claims are leases. And what SQLite's single writer
gave for free: claimers in parallel never take the same copy, and a copy marked cached while
its last hold is released concurrently is never left cached without a hold.

The blobs are published in the remote tier directly (``BlobRef(tier=...)``): moving them there
(``transition_commit``) is the tiers' module's, not this one's."""

from __future__ import annotations

import asyncio

import pytest

from tests.catalog.test_postgres_catalog import run
from tests.postgres import PostgreSQL
from tierstore.catalog import BlobRef, HeldBlob, VersionRecord
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


def test_holds_copies_release_and_expiry(dsn: str) -> None:
    async def body(cat: PostgresCatalog) -> None:
        await store(cat, "b", [BlobRef(A, 5, "COLD"), BlobRef(B, 4, "COLD"), BlobRef(L, 3)])
        # A restore: its expiry counts from the end of the copy.
        assert await cat.hot_hold("restore:b/k", [A, B, L], now_ns=100, ttl_ns=50) == "new"
        assert await cat.hot_hold("restore:b/k", [A, B], now_ns=101, renew=False) == "ongoing"
        # By id; a worker that helps takes them from the other end.
        assert [b.blob_id for b in await cat.hot_missing("restore:b/k")] == [A, B]
        assert [b.blob_id for b in await cat.hot_missing("restore:b/k", 1, descending=True)] == [B]
        assert await cat.hot_due(100) == (False, True)
        assert await cat.hot_leased(100) == []  # no worker has it: nothing to help
        assert await cat.hot_claim(100, 10) == ["restore:b/k"]
        assert await cat.hot_due(105) == (False, False)
        assert await cat.hot_claim(105, 10) == []  # leased
        assert await cat.hot_leased(105) == ["restore:b/k"]  # others may help it
        assert await cat.hot_leased(110) == []  # the lease ran out: claimed again, not helped
        await cat.hot_renew("restore:b/k", 120)
        assert await cat.hot_leased(110) == ["restore:b/k"]
        assert await cat.hot_cached([A], 110) == [A]
        assert not await cat.hot_settle("restore:b/k", 111)  # B is missing
        info = await cat.hot_request("restore:b/k")
        assert info is not None and info.ongoing and (info.blobs, info.bytes, info.cached_blobs) == (2, 9, 1)
        assert info.cached_bytes == 5 and (info.created_ns, info.ttl_ns) == (100, 50)
        assert await cat.blob_cached(A) and not await cat.blob_cached(B)
        assert await cat.hot_cached([B], 120) == [B]
        assert await cat.hot_settle("restore:b/k", 121)
        assert await cat.hot_state("restore:b/k") == (121, 171)  # done, expires 50 after
        assert [b for b, _ in await cat.blob_page()] == [A, B, L]  # the heal walk checks the copies

        # A pin holds A too, until released.
        assert await cat.hot_hold("pin:j", [A], now_ns=130) == "new"
        assert await cat.hot_settle("pin:j", 130)  # A is copied already
        assert [h.holder for h in await cat.hot_list("pin:")] == ["pin:j"]
        assert [h.holder for h in await cat.hot_list()] == ["pin:j", "restore:b/k"]
        assert await cat.hot_hold("pin:j", [A], now_ns=131) == "done"

        # The restore expires: B's copy is freed (trash), A's stays (the pin needs it).
        assert await cat.hot_due(170) == (False, False) and await cat.hot_due(171) == (True, False)
        assert await cat.hot_sweep(170) == ([], 0)
        assert await cat.hot_sweep(171) == (["restore:b/k"], 1)
        assert await cat.trash_batch() == [B] and await cat.blob_cached(A) and not await cat.blob_cached(B)
        assert await cat.hot_request("restore:b/k") is None and await cat.hot_state("restore:b/k") is None
        # B is not copied again while its old copy waits in the trash.
        assert await cat.hot_hold("restore:b/k", [B], now_ns=172) == "new"
        assert await cat.hot_missing("restore:b/k") == []
        await cat.trash_done([B])
        assert await cat.hot_missing("restore:b/k") == [HeldBlob(B, 4, "COLD")]
        assert await cat.hot_release("restore:b/k", 173)
        assert not await cat.hot_release("restore:b/k", 173)

        # A copy that lands after its hold is gone goes straight to the trash.
        assert await cat.hot_cached([B], 174) == [] and await cat.trash_batch() == [B]
        await cat.trash_done([B])

        # The scrub finds A's copy damaged: dropped, its holder's copy reopened.
        assert await cat.hot_lost(A) and await cat.trash_batch() == [A]
        assert not await cat.hot_lost(A)  # once
        pin = await cat.hot_request("pin:j")
        assert pin is not None and pin.ongoing
        await cat.trash_done([A])
        assert await cat.hot_cached([A], 180) == [A] and await cat.hot_settle("pin:j", 180)
        assert await cat.hot_release("pin:j", 190) and await cat.hot_list() == []
        assert await cat.trash_batch() == [A] and not await cat.blob_cached(A)  # its last hold went

    run(dsn, body)


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
