"""The catalog mirror (catalog/sqlite/_mirror.py): one SQLite copy per drive, real files in tmp_path.

Drives are removed with rmtree, replaced with empty formatted directories, and saved aside and
put back, as an operator (or a failing disk) would. A second SqliteCatalog on the same drives
stands in for a second worker process: separate connections, its own view of which copies are
live. Four drives throughout: parity 2, k = 2, write quorum 3.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tierstore.blob import MemoryBlobStore
from tierstore.catalog import BlobRef, CatalogMirrorError, SqliteCatalog, VersionRecord
from tierstore.drives import DriveSet, DriveState
from tierstore.engine import ObjectService
from tierstore.errors import BucketAlreadyOwnedByYou, InternalError, NoSuchBucket, SlowDown
from tierstore.types import BucketInfo, ListOptions, ObjectMeta

N = 4
REL = "catalog/catalog.db"


def make_drives(tmp_path: Path, n: int = N) -> DriveSet:
    drives = DriveSet.open([tmp_path / f"d{i}" for i in range(n)])
    report = SqliteCatalog.reconcile(drives)
    assert report.created == list(range(n))
    return drives


@contextmanager
def mirrored(drives: DriveSet) -> Iterator[SqliteCatalog]:
    cat = SqliteCatalog.on_drives(drives)
    try:
        yield cat
    finally:
        cat.close()


def db(drives: DriveSet, i: int) -> Path:
    return drives.paths[i] / REL


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def seq(path: Path) -> int:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE name='catalog_seq'").fetchone()[0])
    finally:
        conn.close()


def assert_identical(drives: DriveSet, indexes: list[int]) -> list[str]:
    dumps = [dump(db(drives, i)) for i in indexes]
    for i, d in zip(indexes[1:], dumps[1:], strict=True):
        assert d == dumps[0], f"copy {i} differs from copy {indexes[0]}"
    return dumps[0]


def states(cat: SqliteCatalog) -> list[str]:
    return [c["state"] for c in cat.copies_state()]


def record(key: str, n: int, bucket: str = "b") -> VersionRecord:
    meta = ObjectMeta(bucket=bucket, key=key, version_id=f"{n:024d}", size_bytes=3, etag=f'"e{n}"', modified_ns=n)
    return VersionRecord(meta=meta, blobs=[BlobRef(f"blob{n:012d}", 3)])


def put(cat: SqliteCatalog, key: str, n: int) -> None:
    asyncio.run(cat.put_version(record(key, n)))


def rmtree(path: Path) -> None:
    shutil.rmtree(path)


# --- every write, every copy -------------------------------------------------------------------
def test_every_write_lands_identically_in_all_copies(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    with mirrored(drives) as cat:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
        for n in range(5):
            put(cat, f"k{n % 3}", n)
        asyncio.run(cat.update_bucket_props("b", lambda p: {**p, "versioning": "Enabled"}))
        put(cat, "k0", 10)
        marker = ObjectMeta(bucket="b", key="k1", version_id="9" * 24, size_bytes=0, etag="", modified_ns=11)
        asyncio.run(cat.delete_object("b", "k1", version_id=None, marker=marker))
        asyncio.run(cat.trash_done(asyncio.run(cat.trash_batch())))
        with pytest.raises(NoSuchBucket):  # refused on the first copy: rolled back everywhere
            asyncio.run(cat.put_version(record("x", 99, bucket="nope")))
        assert [c["seq"] for c in cat.copies_state()] == [10] * N
        assert states(cat) == ["live"] * N
        assert asyncio.run(cat.blob_count()) == 4  # k2: 2, k0: 3 (null) and 10, k1: 4 (under its marker)
        assert asyncio.run(cat.blob_page()) == [(f"blob{n:012d}", 3) for n in (2, 3, 4, 10)]
        assert asyncio.run(cat.blob_page("blob000000000003", 1)) == [("blob000000000004", 3)]
    assert_identical(drives, list(range(N)))


def test_reconcile_on_current_copies_changes_nothing(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    with mirrored(drives) as cat:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
    report = SqliteCatalog.reconcile(drives)
    assert (report.seq, report.current, report.reseeded, report.created) == (1, [0, 1, 2, 3], [], [])
    assert "catalog_seq 1" in str(report)


def test_a_single_file_catalog_is_not_mirrored(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.db")
    try:
        assert not cat.mirrored
        assert asyncio.run(cat.blob_count()) == 0 and asyncio.run(cat.blob_page()) == []
        with pytest.raises(InternalError):
            cat.copies_state()
    finally:
        cat.close()


# --- losing drives -------------------------------------------------------------------------------
def test_losing_the_readers_drive_and_then_the_write_quorum(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    with mirrored(drives) as cat:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
        put(cat, "before", 1)
        assert asyncio.run(cat.get_latest("b", "before")) is not None  # this thread's reader is on copy 0
        rmtree(drives.paths[0])
        assert asyncio.run(cat.get_latest("b", "before")) is not None  # switched to copy 1
        put(cat, "after", 2)
        got = asyncio.run(cat.get_latest("b", "after"))
        assert got is not None and got.meta.etag == '"e2"'  # read-your-writes
        assert states(cat) == ["offline", "live", "live", "live"]
        assert_identical(drives, [1, 2, 3])

        rmtree(drives.paths[1])  # 2 of 4 left, quorum is 3
        before = [dump(db(drives, i)) for i in (2, 3)]
        with pytest.raises(SlowDown, match=r"only 2 of 4 .*write quorum 3.*drive 0 .*offline"):
            put(cat, "refused", 3)
        assert [dump(db(drives, i)) for i in (2, 3)] == before
        assert asyncio.run(cat.get_latest("b", "refused")) is None
        assert asyncio.run(cat.get_latest("b", "after")) is not None  # reads still work
        assert [b.name for b in asyncio.run(cat.list_buckets())] == ["b"]


def test_a_replaced_drive_is_reseeded_and_rejoins_in_every_process(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    other_drives = DriveSet.open(drives.paths, format_new=False)  # the second process's own view
    with mirrored(drives) as cat, mirrored(other_drives) as other:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
        assert asyncio.run(other.get_bucket("b")) is not None  # other's reader sits on copy 0
        rmtree(drives.paths[0])
        put(cat, "while-degraded", 1)
        drives.paths[0].mkdir()  # the new, empty disk
        drives.format_drive(0)
        assert drives.state(0) is DriveState.ONLINE
        assert states(cat)[0] == "missing"
        put(cat, "still-degraded", 2)  # nothing to rejoin: no file

        asyncio.run(cat.reseed(0))
        assert states(cat) == ["live"] * N
        assert_identical(drives, list(range(N)))
        put(cat, "whole-again", 3)
        assert_identical(drives, list(range(N)))

        # The other process still holds connections to the removed copy 0: its reader notices
        # the file was replaced and moves on; its next write rejoins the new copy by seq.
        assert asyncio.run(other.get_latest("b", "whole-again")) is not None
        assert states(other)[0] == "live"  # current: the store has it ...
        assert other.copies_state()[0]["joined"] is False  # ... but this process joins it at its next write
        put(other, "from-other", 4)
        assert states(other) == ["live"] * N
        assert states(cat) == ["live"] * N
        dumped = assert_identical(drives, list(range(N)))
        assert any(b"from-other".hex() in line.lower() for line in dumped)
        assert seq(db(drives, 0)) == 5


def test_a_copy_that_diverges_is_excluded_and_the_write_still_acked(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    # Same seq, different content (a bug or a torn restore): copy 2 already has bucket "x".
    conn = sqlite3.connect(db(drives, 2), isolation_level=None)
    conn.execute("INSERT INTO buckets(name, created_ns, region) VALUES('x', 1, 'r')")
    conn.close()
    with mirrored(drives) as cat:
        asyncio.run(cat.create_bucket(BucketInfo("x", 1)))  # copy 0 says fine, copy 2 raises
        assert states(cat) == ["live", "live", "stale", "live"]
        with pytest.raises(BucketAlreadyOwnedByYou):
            asyncio.run(cat.create_bucket(BucketInfo("x", 1)))
        asyncio.run(cat.reseed(2))
        assert states(cat) == ["live"] * N
    assert_identical(drives, list(range(N)))


# --- stale copies ----------------------------------------------------------------------------------
def test_a_restored_stale_drive_is_never_read_nor_rejoined_until_reseeded(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    aside = tmp_path / "aside"
    with mirrored(drives) as cat:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
        put(cat, "old", 1)
        shutil.copytree(drives.paths[0], aside, ignore=shutil.ignore_patterns("*-shm"))
        rmtree(drives.paths[0])
        assert asyncio.run(cat.get_latest("b", "old")) is not None  # the reader saw drive 0 go
        put(cat, "new", 2)
        put(cat, "newer", 3)
        shutil.copytree(aside, drives.paths[0])  # the old disk comes back
        assert drives.state(0) is DriveState.ONLINE
        stale_dump = dump(db(drives, 0))

        def reads() -> None:
            assert asyncio.run(cat.get_latest("b", "new")) is not None
            assert asyncio.run(cat.get_latest("b", "newer")) is not None

        reads()
        worker = threading.Thread(target=reads)  # a fresh reader picks a copy from scratch
        worker.start()
        worker.join()
        put(cat, "newest", 4)  # copy 0 is locked and seq-checked, and stays out
        assert states(cat)[0] == "stale"
        assert dump(db(drives, 0)) == stale_dump
        assert seq(db(drives, 0)) == 2 < seq(db(drives, 1)) == 5

        with mirrored(DriveSet.open(drives.paths, format_new=False)) as late:  # opened now: 0 is behind
            assert states(late)[0] == "stale"
            assert asyncio.run(late.get_latest("b", "newest")) is not None

        asyncio.run(cat.reseed(0))
        assert states(cat) == ["live"] * N
        assert asyncio.run(cat.get_latest("b", "newest")) is not None
    assert_identical(drives, list(range(N)))


def test_crash_mid_fan_out_then_reconcile(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    with mirrored(drives) as cat:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
        put(cat, "k", 1)
    # The process died after committing the next transaction on copies 0 and 1 only.
    for i in (0, 1):
        conn = sqlite3.connect(db(drives, i), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO buckets(name, created_ns, region) VALUES('unacked', 2, 'r')")
        conn.execute("UPDATE meta SET value='3' WHERE name='catalog_seq'")
        conn.execute("COMMIT")
        conn.close()
    assert [seq(db(drives, i)) for i in range(N)] == [3, 3, 2, 2]

    # Without a reconcile a worker sees two copies at the top: below quorum, read-only.
    with mirrored(drives) as cat:
        assert states(cat) == ["live", "live", "stale", "stale"]
        assert asyncio.run(cat.get_bucket("unacked")) is not None
        with pytest.raises(SlowDown, match="behind"):
            put(cat, "k", 2)

    report = SqliteCatalog.reconcile(drives)
    assert (report.seq, report.source, report.current, report.reseeded) == (3, 0, [0, 1], [2, 3])
    dumped = assert_identical(drives, list(range(N)))
    assert any("unacked" in line for line in dumped)  # never acked, now visible: allowed
    with mirrored(drives) as cat:
        put(cat, "k", 2)
        assert [c["seq"] for c in cat.copies_state()] == [4] * N
    assert_identical(drives, list(range(N)))


def test_reconcile_reseeds_missing_and_unreadable_copies(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    with mirrored(drives) as cat:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
    db(drives, 1).unlink()
    db(drives, 3).write_bytes(b"not a database at all" * 100)
    report = SqliteCatalog.reconcile(drives)
    assert (report.current, report.reseeded) == ([0, 2], [1, 3])
    assert_identical(drives, list(range(N)))


def test_reconcile_refuses_to_guess(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    for i in (1, 2, 3):  # 1 of 4 online, k = 2
        rmtree(drives.paths[i])
    with pytest.raises(CatalogMirrorError, match="only 1 of 4 drives are online"):
        SqliteCatalog.reconcile(drives)

    used = DriveSet.open([tmp_path / f"u{i}" for i in range(N)])
    (used.paths[2] / "blobs" / "ab").mkdir(parents=True)
    (used.paths[2] / "blobs" / "ab" / "blob").write_bytes(b"x")
    with pytest.raises(CatalogMirrorError, match=r"drives \[2\] hold data"):
        SqliteCatalog.reconcile(used)
    with pytest.raises(CatalogMirrorError, match="no readable catalog copy"):
        SqliteCatalog.on_drives(used)


# --- several processes -------------------------------------------------------------------------------
def test_two_instances_writing_concurrently_stay_identical(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)
    per_writer = 25
    with mirrored(drives) as a, mirrored(DriveSet.open(drives.paths, format_new=False)) as b:
        asyncio.run(a.create_bucket(BucketInfo("b", 1)))
        errors: list[BaseException] = []

        def writer(cat: SqliteCatalog, name: str) -> None:
            async def run() -> None:
                for n in range(per_writer):
                    await cat.put_version(record(f"{name}/{n}", n))
                    assert await cat.get_latest("b", f"{name}/{n}") is not None

            try:
                asyncio.run(run())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(c, name)) for c, name in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert states(a) == states(b) == ["live"] * N
        assert asyncio.run(a.counts())["versions"] == asyncio.run(b.counts())["versions"] == 2 * per_writer
    assert_identical(drives, list(range(N)))
    assert seq(db(drives, 0)) == 1 + 2 * per_writer


# --- the engine on a mirrored catalog -------------------------------------------------------------
def _service_tests() -> list[str]:
    from tests.engine import test_lock_rules

    return sorted(n for n in dir(test_lock_rules) if n.startswith("test_service_"))


@pytest.mark.parametrize("name", _service_tests())
def test_engine_lock_rules_on_a_mirrored_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """tests/engine/test_lock_rules.py's service tests, with their catalog mirrored on 4 drives."""
    from tests.engine import test_lock_rules

    drives = make_drives(tmp_path / "drives")

    def on_drives(_path: Path) -> SqliteCatalog:
        return SqliteCatalog.on_drives(drives)

    monkeypatch.setattr(test_lock_rules, "SqliteCatalog", on_drives)
    test: Callable[[Path], Any] = getattr(test_lock_rules, name)
    test(tmp_path)
    assert_identical(drives, list(range(N)))


def test_object_service_on_a_mirrored_catalog_survives_a_drive_loss(tmp_path: Path) -> None:
    drives = make_drives(tmp_path)

    async def body(data: bytes) -> Any:
        yield data

    async def scenario(svc: ObjectService) -> None:
        await svc.create_bucket("bkt")
        await svc.put_object("bkt", "one", body(b"1"))
        rmtree(drives.paths[0])
        await svc.put_object("bkt", "two", body(b"22"))
        assert [m.key for m in (await svc.list_objects("bkt", ListOptions())).entries] == ["one", "two"]

    run: Callable[[ObjectService], Awaitable[None]] = scenario
    with mirrored(drives) as cat:
        asyncio.run(run(ObjectService(cat, MemoryBlobStore())))
    assert_identical(drives, [1, 2, 3])
