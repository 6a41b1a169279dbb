"""Hot copies in the catalog (catalog/sqlite/_hot.py, schema v12): a v11 catalog (single file and mirrored
on a drive set) upgrades in place and keeps its rows; holds, copies marked cached, release and
expiry free (into the trash) only the copies no live hold needs; reads see a cached blob as one
to read locally; local GC and the heal walk count cached and held blobs as known."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from tests.catalog.conftest import Opener
from tests.catalog.migration import old_mirror
from tierstore.catalog import BlobRef, BlobTier, HeldBlob, SqliteCatalog, VersionRecord
from tierstore.types import BucketInfo, ObjectMeta

A = "0000000000000000aaaa"
B = "0000000000000000bbbb"
L = "0000000000000000llll"  # stays local
VID = "null"  # an unversioned bucket


async def _put_and_move(cat: Any) -> None:
    await cat.create_bucket(BucketInfo("b", 1, "us-east-1"))
    meta = ObjectMeta(bucket="b", key="k", version_id=VID, size_bytes=12, etag='"x"', modified_ns=9)
    refs = [BlobRef(A, 5), BlobRef(B, 4), BlobRef(L, 3)]
    await cat.put_version(VersionRecord(meta=meta, blobs=refs))
    for blob_id in (A, B):
        assert await cat.transition_commit("b", "k", VID, "COLD", [(blob_id, None)])
    await cat.trash_done(await cat.trash_batch())  # the moved blobs' local bytes are freed


def _store(cat: SqliteCatalog) -> None:
    asyncio.run(_put_and_move(cat))


def _back_to_v11(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE hot_holds")
    conn.execute("DROP TABLE hot_requests")
    conn.execute("DROP INDEX blobs_cached")
    conn.execute("ALTER TABLE blobs DROP COLUMN cached")
    conn.execute("UPDATE meta SET value='11' WHERE name='schema_version'")
    conn.commit()
    conn.close()


def _schema(db: Path) -> tuple[str, list[str], list[str]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        version = str(conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()[0])
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'hot_%' ORDER BY name")]
        return version, tables, [r[1] for r in conn.execute("PRAGMA table_info(blobs)")]
    finally:
        conn.close()


V12_TABLES = [
    "hot_holds",
    "hot_holds_blob",
    "hot_holds_expiry",
    "hot_requests",
    "hot_requests_expiry",
    "hot_requests_ongoing",
]


def _hold_one(cat: SqliteCatalog) -> None:
    rec = asyncio.run(cat.get_version("b", "k", VID))
    assert rec is not None and [(r.blob_id, r.tier, r.cached) for r in rec.blobs] == [
        (A, "COLD", False), (B, "COLD", False), (L, None, False),
    ]  # fmt: skip  # nothing lost by the upgrade
    assert asyncio.run(cat.hot_hold("pin:j", [A, L], now_ns=10)) == "new"
    assert asyncio.run(cat.hot_missing("pin:j")) == [HeldBlob(A, 5, "COLD")]  # L is local: nothing to copy


def test_v11_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    cat = SqliteCatalog(db)
    try:
        _store(cat)
    finally:
        cat.close()
    _back_to_v11(db)
    assert _schema(db) == ("11", [], ["blob_id", "size", "refs", "tier"])
    cat = SqliteCatalog(db)
    try:
        _hold_one(cat)
    finally:
        cat.close()
    assert _schema(db) == ("15", V12_TABLES, ["blob_id", "size", "refs", "tier", "cached"])
    SqliteCatalog(db).close()  # and it opens again as current


def test_mirrored_v11_catalog_is_migrated_on_every_copy(tmp_path: Path) -> None:
    drives, dbs = old_mirror(tmp_path, 3, _store, _back_to_v11)
    cat = SqliteCatalog.on_drives(drives)
    try:
        assert len({c["seq"] for c in cat.copies_state()}) == 1  # one fan-out transaction
        _hold_one(cat)
    finally:
        cat.close()
    for db in dbs:
        assert _schema(db)[:2] == ("15", V12_TABLES)
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("SELECT holder, blob_id FROM hot_holds ORDER BY blob_id").fetchall() == [
                ("pin:j", A), ("pin:j", L),
            ]  # fmt: skip
        finally:
            conn.close()


def test_holds_copies_release_and_expiry(catalogs: Opener) -> None:
    """On both catalogs (PostgreSQL: the mover's commit frees a moved blob's local copy through
    the hot module's ``free_unheld``; reads carry tiers; a held blob is known)."""

    async def main() -> None:
        async with catalogs() as cat:
            await _put_and_move(cat)
            # A restore: its expiry counts from the end of the copy.
            assert await cat.hot_hold("restore:b/k", [A, B, L], now_ns=100, ttl_ns=50) == "new"
            assert await cat.hot_hold("restore:b/k", [A, B], now_ns=101, renew=False) == "ongoing"
            # By id; a worker that helps takes them from the other end.
            assert [b.blob_id for b in (await cat.hot_missing("restore:b/k"))] == [A, B]
            assert [b.blob_id for b in (await cat.hot_missing("restore:b/k", 1, descending=True))] == [B]
            assert await cat.blob_known(A)  # held: a copy on its way is no orphan for local GC
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
            assert info is not None and info.ongoing and (info.blobs, info.bytes, info.cached_bytes) == (2, 9, 5)
            rec = await cat.get_version("b", "k", VID)
            assert rec is not None and [(r.tier, r.cached) for r in rec.blobs] == [
                ("COLD", True),
                ("COLD", False),
                (None, False),
            ]
            # Both in the tier; manifests read A from its local copy (cached).
            assert await cat.blob_tiers([A, B, L]) == {A: BlobTier("COLD", True), B: BlobTier("COLD", False)}
            assert await cat.hot_cached([B], 120) == [B]
            assert await cat.hot_settle("restore:b/k", 121)
            assert await cat.hot_state("restore:b/k") == (121, 171)  # done, expires 50 after
            assert [b for b, _ in (await cat.blob_page())] == [A, B, L]  # the heal walk checks the copies

            # A pin holds A too, until released.
            assert await cat.hot_hold("pin:j", [A], now_ns=130) == "new"
            assert await cat.hot_settle("pin:j", 130)  # A is copied already
            assert [h.holder for h in (await cat.hot_list("pin:"))] == ["pin:j"]
            assert [h.holder for h in (await cat.hot_list())] == ["pin:j", "restore:b/k"]
            assert await cat.hot_hold("pin:j", [A], now_ns=131) == "done"

            # The restore expires: B's copy is freed (trash), A's stays (the pin needs it).
            # an idle pass reads only
            assert await cat.hot_due(170) == (False, False) and (await cat.hot_due(171)) == (True, False)
            assert await cat.hot_sweep(170) == ([], 0)
            assert await cat.hot_sweep(171) == (["restore:b/k"], 1)
            assert await cat.trash_batch() == [B]
            assert await cat.blob_cached(A) and not (await cat.blob_cached(B))
            assert await cat.hot_request("restore:b/k") is None
            # B is not copied again while its old copy waits in the trash.
            assert await cat.hot_hold("restore:b/k", [B], now_ns=172) == "new"
            assert await cat.hot_missing("restore:b/k") == []
            await cat.trash_done([B])
            assert await cat.hot_missing("restore:b/k") == [HeldBlob(B, 4, "COLD")]
            # A real day: the expiry (the end of the copy + ttl_ns) is rounded up to a multiple
            # of round_ns (the next midnight UTC, as AWS rounds a restore's).
            assert await cat.hot_hold("restore:b/k", [B], now_ns=172, ttl_ns=50, round_ns=100) == "ongoing"
            assert await cat.hot_cached([B], 173) == [B]
            assert await cat.hot_settle("restore:b/k", 173, round_ns=100)
            assert await cat.hot_state("restore:b/k") == (173, 300)
            assert await cat.hot_release("restore:b/k", 173)
            assert await cat.trash_batch() == [B]
            await cat.trash_done([B])
            assert not await cat.hot_release("restore:b/k", 173)

            # A copy that lands after its hold is gone goes straight to the trash.
            assert await cat.hot_cached([B], 174) == [] and (await cat.trash_batch()) == [B]
            await cat.trash_done([B])

            # The scrub finds A's copy damaged: dropped, its holder's copy reopened.
            assert await cat.hot_lost(A) and (await cat.trash_batch()) == [A]
            assert not await cat.hot_lost(A)  # once
            pin = await cat.hot_request("pin:j")
            assert pin is not None and pin.ongoing
            await cat.trash_done([A])
            assert await cat.hot_cached([A], 180) == [A] and (await cat.hot_settle("pin:j", 180))

            # Deleting the version drops the blobs: the remote ones to the outbox, A's copy to the trash.
            marker = ObjectMeta(bucket="b", key="k", version_id="m", size_bytes=0, etag="", modified_ns=200)
            await cat.delete_object("b", "k", version_id=VID, marker=marker)
            assert set(await cat.trash_batch()) == {A, L}
            assert {(e.tier, e.blob_id) for e in (await cat.outbox_due(2**62))} == {("COLD", A), ("COLD", B)}
            assert await cat.hot_release("pin:j", 190) and (await cat.hot_list()) == []
            await cat.trash_done([A, L])

            # A local blob a pin holds keeps its bytes, as that copy, when the mover moves it.
            p = "0000000000000000pppp"
            meta = ObjectMeta(bucket="b", key="p", version_id=VID, size_bytes=2, etag='"p"', modified_ns=300)
            await cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(p, 2)]))
            assert await cat.hot_hold("pin:p", [p], now_ns=300) == "new"
            assert await cat.transition_commit("b", "p", VID, "COLD", [(p, None)])
            assert await cat.blob_cached(p) and await cat.trash_batch() == []
            assert await cat.hot_release("pin:p", 310) and await cat.trash_batch() == [p]

    asyncio.run(main())
