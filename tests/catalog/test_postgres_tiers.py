"""The tier registry and the tier data path (catalog/sqlite/_tiers.py, _tier_data.py and their
catalog/postgres/ twins) on both catalogs, one behaviour: tiers created, listed and removed only
while nothing names them (their counters and pending writes going with them); the mover's commit
(local -> tier, tier -> tier, an inline body -> a remote blob) and every reason it refuses; blobs
moved by id; a dataset's inline bodies archived; the outbox."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.catalog.conftest import Opener, aw
from tierstore.catalog import (
    BlobRef,
    BlobTier,
    DatasetRecord,
    InlineMove,
    OutboxEntry,
    TierRecord,
    TierUsage,
    VersionRecord,
)
from tierstore.runtime import new_blob_id, new_upload_id, new_version_id
from tierstore.types import BucketInfo, ObjectMeta, UploadInfo


def uid() -> str:
    return uuid.uuid4().hex[:8].upper()


def meta(bucket: str, key: str, size: int = 3) -> ObjectMeta:
    return ObjectMeta(bucket=bucket, key=key, version_id=new_version_id(), size_bytes=size, etag='"e"', modified_ns=1)


async def put(cat: Any, bucket: str, key: str, *blob_ids: str) -> str:
    version_id: str = await cat.put_version(
        VersionRecord(meta=meta(bucket, key), blobs=[BlobRef(b, 3) for b in blob_ids])
    )
    return version_id


def test_tiers_created_listed_removed(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            cold, warm, b = f"COLD{n}", f"WARM{n}", f"tiers-{n}".lower()
            record = TierRecord(
                cold, {"endpoint": "http://127.0.0.1:1", "bucket": "b", "prefix": "p/"}, b"\x01TIER-s", 7
            )
            assert await cat.tier_create(record)
            assert not await cat.tier_create(TierRecord(cold, {"bucket": "other"}, None, 8))  # exists: unchanged
            assert await cat.tier_create(TierRecord(warm, {"bucket": "w"}, None, 9))
            got = await aw(cat.tier_get(cold))
            assert (got.name, got.config, got.sealed_secret, got.created_ns) == (cold, record.config, b"\x01TIER-s", 7)
            assert "TIER-s" not in repr(got)
            assert await aw(cat.tier_get(f"NONE{n}")) is None
            assert [t.name for t in await aw(cat.tier_list()) if t.name.endswith(n)] == [cold, warm]
            assert [t for t in await aw(cat.tier_names()) if t.endswith(n)] == [cold, warm]
            assert b"\x01TIER" in await aw(cat.tier_sealed_key_ids())

            # What names a tier keeps it: a blob in it, an outbox entry, an upload in its class.
            await cat.create_bucket(BucketInfo(b, 1, "us-east-1"))
            blob = new_blob_id()
            vid = await put(cat, b, "k", blob)
            assert await cat.transition_commit(b, "k", vid, cold, [(blob, None)])
            assert await aw(cat.tier_usage(cold)) == TierUsage(blobs=1, bytes=3)
            assert await cat.tier_delete(cold) == TierUsage(blobs=1, bytes=3)
            await cat.outbox_add(warm, ["gone-object"])
            assert await cat.tier_delete(warm) == TierUsage(outbox=1)
            await cat.outbox_done([OutboxEntry(warm, "gone-object", 0)])
            upload = UploadInfo(b, "up", new_upload_id(), 1, storage_class=warm)
            await cat.create_upload(upload)
            assert await cat.tier_delete(warm) == TierUsage(uploads=1)
            await cat.abort_upload(upload.upload_id)
            # Its counters and the writes waiting for it go with it (the writes stay local).
            await cat.tier_error(warm, "TierUnavailable: x", 5)
            await cat.tier_pending_add(b, "k", vid, warm, 5)
            progress = await aw(cat.tier_progress(warm, 10))
            assert (progress.errors, progress.pending) == (1, 1)
            assert await cat.tier_delete(warm) == "deleted"
            progress = await aw(cat.tier_progress(warm, 10))
            assert (progress.errors, progress.last_error, progress.pending) == (0, None, 0)
            assert await cat.tier_delete(warm) == "missing"
            assert await aw(cat.tier_get(warm)) is None

    asyncio.run(main())


def test_the_movers_commit(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            cold, glacier, b = f"COLD{n}", f"GLACIER{n}", f"move-{n}".lower()
            for tier in (cold, glacier):
                await cat.tier_create(TierRecord(tier, {"bucket": "t"}, None, 1))
            await cat.create_bucket(BucketInfo(b, 1, "us-east-1"), {"versioning": "Enabled"})
            one, two = new_blob_id(), new_blob_id()
            vid = await put(cat, b, "k", one, two)

            # Refused, nothing changed: no such version, a blob it does not name, a blob not
            # where the mover says it was.
            assert not await cat.transition_commit(b, "k", new_version_id(), cold, [(one, None)])
            assert not await cat.transition_commit(b, "nokey", vid, cold, [(one, None)])
            assert not await cat.transition_commit(f"none-{n}".lower(), "k", vid, cold, [(one, None)])
            assert not await cat.transition_commit(b, "k", vid, cold, [(new_blob_id(), None)])
            assert not await cat.transition_commit(b, "k", vid, cold, [(one, glacier)])
            assert await aw(cat.blob_tiers([one, two])) == {}

            assert await cat.transition_commit(b, "k", vid, cold, [(one, None), (two, None)])
            assert await aw(cat.blob_tiers([one, two, "unknown"])) == {one: BlobTier(cold), two: BlobTier(cold)}
            assert (await aw(cat.get_version(b, "k", vid))).meta.storage_class == cold
            trash = await aw(cat.trash_batch(100_000))
            assert one in trash and two in trash  # the local copies go (no hot copy holds them)
            assert await aw(cat.remote_blob_known(cold, one))
            assert not await aw(cat.remote_blob_known(cold, "unknown"))
            # Again with the blobs already there: still true (another mover was first), nothing more.
            assert await cat.transition_commit(b, "k", vid, cold, [(one, None)])

            # On to another tier: the old remote copies go to the first tier's outbox.
            assert await cat.transition_commit(b, "k", vid, glacier, [(one, cold), (two, cold)])
            assert await aw(cat.blob_tiers([one, two])) == {one: BlobTier(glacier), two: BlobTier(glacier)}
            assert (await aw(cat.get_version(b, "k", vid))).meta.storage_class == glacier
            assert await aw(cat.outbox_holds(cold, ["x", two, one])) == two
            assert await aw(cat.remote_blob_known(cold, one))
            # Back to the first tier while an old copy of a blob waits in its outbox: refused.
            assert not await cat.transition_commit(b, "k", vid, cold, [(one, glacier)])
            due = [e for e in await aw(cat.outbox_due(2**62, 100_000)) if e.tier == cold]
            assert sorted(e.blob_id for e in due) == sorted([one, two]) and {e.attempts for e in due} == {0}

            # The outbox: retried later with one more attempt, then done.
            await cat.outbox_retry(due, lambda attempts: 10**18 + attempts)
            assert [e for e in await aw(cat.outbox_due(10**18, 100_000)) if e.tier == cold] == []
            later = [e for e in await aw(cat.outbox_due(10**18 + 1, 100_000)) if e.tier == cold]
            assert {(e.blob_id, e.attempts) for e in later} == {(one, 1), (two, 1)}
            await cat.outbox_done(later)
            assert await aw(cat.outbox_holds(cold, [one, two])) is None
            # outbox_add skips what the catalog references in that tier (another mover published it).
            await cat.outbox_add(glacier, [one, "stray", "stray"])
            assert [e.blob_id for e in await aw(cat.outbox_due(2**62, 100_000)) if e.tier == glacier] == ["stray"]
            await cat.outbox_done([OutboxEntry(glacier, "stray", 0)])

    asyncio.run(main())


def test_an_inline_body_becomes_a_remote_blob(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            cold, b = f"COLD{n}", f"inl-{n}".lower()
            await cat.tier_create(TierRecord(cold, {"bucket": "t"}, None, 1))
            await cat.create_bucket(BucketInfo(b, 1, "us-east-1"))
            vid = await cat.put_version(VersionRecord(meta=meta(b, "small", 5), inline_data=b"hello"))
            inline_id = (await aw(cat.get_version(b, "small", vid))).inline_id
            assert inline_id is not None
            new = new_blob_id()
            wrong = InlineMove("not-the-body", new, 5)
            assert not await cat.transition_commit(b, "small", vid, cold, [], wrong)
            assert await cat.transition_commit(b, "small", vid, cold, [], InlineMove(inline_id, new, 5))
            got = await aw(cat.get_version(b, "small", vid))
            assert got.inline_id is None and [x.blob_id for x in got.blobs] == [new]
            assert got.meta.storage_class == cold
            assert await aw(cat.blob_tiers([new])) == {new: BlobTier(cold)}
            assert await aw(cat.inline_bodies([inline_id])) == {}  # released: no dataset pinned it

    asyncio.run(main())


def test_blobs_moved_by_id_and_a_datasets_inline_bodies(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            cold, other, b = f"COLD{n}", f"OTHER{n}", f"ds-{n}".lower()
            for tier in (cold, other):
                await cat.tier_create(TierRecord(tier, {"bucket": "t"}, None, 1))
            await cat.create_bucket(BucketInfo(b, 1, "us-east-1"))
            local, elsewhere = new_blob_id(), new_blob_id()
            await put(cat, b, "a", local)
            vid = await put(cat, b, "b", elsewhere)
            assert await cat.transition_commit(b, "b", vid, other, [(elsewhere, None)])
            lost = await cat.blobs_to_tier(cold, [(local, None), ("unknown", None), (elsewhere, None), (local, None)])
            assert lost == ["unknown", elsewhere]  # elsewhere is not local, as said, but in OTHER
            assert await aw(cat.blob_tiers([local])) == {local: BlobTier(cold)}
            assert local in await aw(cat.trash_batch(100_000))
            assert await cat.blobs_to_tier(cold, [(local, None)]) == []  # already there: nothing to do
            # Tier -> tier: the old remote copy goes to its tier's outbox.
            assert await cat.blobs_to_tier(cold, [(elsewhere, other)]) == []
            assert await aw(cat.blob_tiers([elsewhere, local])) == {elsewhere: BlobTier(cold), local: BlobTier(cold)}
            assert await aw(cat.outbox_holds(other, [elsewhere])) == elsewhere
            # Back while that old copy waits to be deleted (it would take the new one): not moved.
            assert await cat.blobs_to_tier(other, [(elsewhere, cold)]) == [elsewhere]
            assert await aw(cat.blob_tiers([elsewhere])) == {elsewhere: BlobTier(cold)}
            await cat.outbox_done([OutboxEntry(other, elsewhere, 0)])

            # A dataset version pinning an inline body: the body becomes a remote blob.
            body_vid = await cat.put_version(VersionRecord(meta=meta(b, "row", 2), inline_data=b"hi"))
            inline_id = (await aw(cat.get_version(b, "row", body_vid))).inline_id
            manifest = new_blob_id()
            name = f"set-{n}".lower()
            await cat.create_dataset(DatasetRecord(name, 1, manifest, 9, 5, 1, 2), [], [inline_id])
            await cat.delete_object(b, "row", version_id=None, marker=meta(b, "row"))  # the pin keeps the body
            assert set(await aw(cat.inline_bodies([inline_id]))) == {inline_id}
            new_manifest, remote = new_blob_id(), new_blob_id()
            moves = [InlineMove(inline_id, remote, 2)]
            assert not await cat.dataset_inline_to_tier("datasets", name, 1, ("stale", (new_manifest, 10)), cold, moves)
            assert not await cat.dataset_inline_to_tier(
                "datasets", name, 2, (manifest, (new_manifest, 10)), cold, moves
            )
            assert await cat.dataset_inline_to_tier("datasets", name, 1, (manifest, (new_manifest, 10)), cold, moves)
            got = await aw(cat.get_dataset(name, 1))
            assert (got.manifest_blob, got.manifest_bytes) == (new_manifest, 10)
            assert await aw(cat.blob_tiers([remote])) == {remote: BlobTier(cold)}
            assert await aw(cat.inline_bodies([inline_id])) == {}  # released and no longer pinned: gone
            assert manifest in await aw(cat.trash_batch(100_000))  # the old manifest lost its reference
            with pytest.raises(ValueError, match="not a pinning table"):
                await cat.dataset_inline_to_tier("versions", name, 1, (manifest, (new_manifest, 10)), cold, moves)

    asyncio.run(main())


@pytest.mark.peer
def test_tiers_of_blobs_column_on_postgresql(module_pg_dsn: str) -> None:
    """``TIERS_OF_BLOBS`` (the column a version read adds, for the core's reads) in SQLite's
    format: ``located`` reads which blobs are remote, and which of those have a local copy."""
    from tierstore.catalog._rules import located
    from tierstore.catalog.postgres import PostgresCatalog
    from tierstore.catalog.postgres._tier_data import TIERS_OF_BLOBS

    sql = (
        f"SELECT {TIERS_OF_BLOBS} FROM versions v JOIN buckets b ON b.id = v.bucket_id WHERE b.name = $1 AND v.key = $2"
    )

    async def main() -> None:
        cat = await PostgresCatalog.open(module_pg_dsn)
        try:
            n = uid()
            cold, b = f"COLD{n}", f"col-{n}".lower()
            await cat.tier_create(TierRecord(cold, {"bucket": "t"}, None, 1))
            await cat.create_bucket(BucketInfo(b, 1, "us-east-1"))
            one, two, three = new_blob_id(), new_blob_id(), new_blob_id()
            vid = await put(cat, b, "k", one, two, three)
            refs = [BlobRef(x, 3) for x in (one, two, three)]
            assert await cat._pool.fetchval(sql, b, b"k") is None  # all local
            assert await cat.transition_commit(b, "k", vid, cold, [(one, None), (three, None)])
            await cat._pool.fetchval("UPDATE blobs SET cached = true WHERE blob_id = $1", three)  # a hot copy's mark
            got = located(refs, await cat._pool.fetchval(sql, b, b"k"))
            assert [(r.blob_id, r.tier, r.cached) for r in got] == [
                (one, cold, False),
                (two, None, False),
                (three, cold, True),
            ]
            await cat.put_version(VersionRecord(meta=meta(b, "small"), inline_data=b"abc"))
            assert await cat._pool.fetchval(sql, b, b"small") is None  # inline: no blobs, no subquery
        finally:
            await cat.close()

    asyncio.run(main())
