"""Group commit in the catalog writer (catalog/sqlite/_db.py ``_writer_loop``, catalog/sqlite/_mirror.py
``transact``): every write job queued while the writer is busy shares one transaction, each in
its own savepoint. Real SQLite files throughout.

To make a batch deterministic, a test first parks the writer thread on an ``alone`` job that
waits for an event, queues its writes behind it, then releases it: the writes that queued are
one batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.catalog.test_mirror import dump
from tierstore.catalog import BlobRef, SqliteCatalog, VersionRecord
from tierstore.drives import DriveSet
from tierstore.errors import InternalError, NoSuchBucket, NoSuchKey, PreconditionFailed
from tierstore.types import BucketInfo, ObjectMeta

N = 4


def record(key: str, n: int, bucket: str = "b") -> VersionRecord:
    meta = ObjectMeta(bucket=bucket, key=key, version_id=f"{n:024d}", size_bytes=3, etag=f'"e{n}"', modified_ns=n)
    return VersionRecord(meta=meta, blobs=[BlobRef(f"blob{n:012d}", 3)])


@contextmanager
def parked(cat: SqliteCatalog) -> Iterator[threading.Event]:
    """Hold the writer thread until the block ends (or the event is set)."""
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    cat._submit(hold)
    assert started.wait(10)
    try:
        yield release
    finally:
        release.set()


async def in_one_batch(cat: SqliteCatalog, calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Start every call while the writer is parked, then let them run as one batch."""
    before = cat.write_batches
    with parked(cat):
        tasks = [asyncio.ensure_future(c()) for c in calls]
        await asyncio.sleep(0.05)  # every task has queued its job
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert cat.write_batches == before + 1, "the queued writes ran as one batch"
    return results


def refuse_if(n: int) -> Callable[[VersionRecord | None], None]:
    def check(current: VersionRecord | None) -> None:
        if n % 3 == 0:
            raise PreconditionFailed(resource=f"k{n}")

    return check


def test_concurrent_writes_share_a_transaction_and_fail_alone(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.db")
    try:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))

        async def main() -> list[Any]:
            calls: list[Callable[[], Awaitable[Any]]] = []
            for n in range(40):
                calls.append(lambda n=n: cat.put_version(record(f"k{n}", n), check=refuse_if(n)))
            # A job whose SQL fails (a duplicate primary key) is rolled back to its savepoint.
            calls.append(lambda: cat.create_bucket(BucketInfo("b", 2)))
            calls.append(lambda: cat._write(lambda c: c.execute("INSERT INTO buckets(name) VALUES('no-region')")))
            calls.append(lambda: cat.put_version(record("x", 99, bucket="nope")))
            return await in_one_batch(cat, calls)

        results = asyncio.run(main())
        for n in range(40):
            if n % 3 == 0:
                assert isinstance(results[n], PreconditionFailed), results[n]
                assert asyncio.run(cat.get_latest("b", f"k{n}")) is None
            else:
                assert results[n] == "null"
                got = asyncio.run(cat.get_latest("b", f"k{n}"))
                assert got is not None and got.meta.etag == f'"e{n}"'
        assert type(results[40]).__name__ == "BucketAlreadyOwnedByYou"
        assert isinstance(results[41], InternalError)  # sqlite3.IntegrityError, translated
        assert isinstance(results[41].__cause__, sqlite3.IntegrityError)
        assert isinstance(results[42], NoSuchBucket)
        assert asyncio.run(cat.counts())["versions"] == 26 and asyncio.run(cat.counts())["blobs"] == 26
        assert [b.name for b in asyncio.run(cat.list_buckets())] == ["b"]
    finally:
        cat.close()


def test_a_failed_commit_fails_every_job_of_the_batch(tmp_path: Path) -> None:
    """A deferred foreign key makes COMMIT itself fail (real SQLite, no mocks): every job of the
    batch gets the error, none of their changes remain, and the next batch commits."""
    cat = SqliteCatalog(tmp_path / "c.db")
    try:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))

        def schema(c: sqlite3.Connection) -> None:
            c.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
            c.execute(
                "CREATE TABLE child(id INTEGER PRIMARY KEY,"
                " parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
            )

        asyncio.run(cat._write(schema))
        assert cat._wconn is not None
        wconn = cat._wconn
        cat._run_alone(lambda: wconn.execute("PRAGMA foreign_keys=ON"))
        before = asyncio.run(cat.counts())

        async def main() -> list[Any]:
            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda n=n: cat.put_version(record(f"k{n}", n)) for n in range(10)
            ]
            calls.insert(5, lambda: cat._write(lambda c: c.execute("INSERT INTO child(id, parent) VALUES(1, 42)")))
            return await in_one_batch(cat, calls)

        results = asyncio.run(main())
        assert all(isinstance(r, InternalError) for r in results), results
        assert all(isinstance(r.__cause__, sqlite3.IntegrityError) for r in results)
        assert len({id(r) for r in results}) == len(results)  # each caller its own exception
        assert asyncio.run(cat.counts()) == before
        assert asyncio.run(cat.get_latest("b", "k0")) is None
        conn = sqlite3.connect(tmp_path / "c.db")
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)
        conn.close()
        # The writer goes on.
        assert asyncio.run(cat.put_version(record("after", 100))) == "null"
        assert asyncio.run(cat.counts())["versions"] == before["versions"] + 1
    finally:
        cat.close()


def test_a_cancelled_job_that_has_not_started_never_runs(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.db")
    try:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))

        async def main() -> None:
            with parked(cat):
                doomed = asyncio.ensure_future(cat.put_version(record("doomed", 1)))
                kept = asyncio.ensure_future(cat.put_version(record("kept", 2)))
                await asyncio.sleep(0.05)
                doomed.cancel()
                await asyncio.sleep(0.01)  # the cancellation reaches the job's future
            assert await kept == "null"
            with pytest.raises(asyncio.CancelledError):
                await doomed

        asyncio.run(main())
        assert asyncio.run(cat.get_latest("b", "doomed")) is None
        assert asyncio.run(cat.get_latest("b", "kept")) is not None
    finally:
        cat.close()


def test_alone_jobs_split_batches_and_the_batch_size_is_capped(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.db", max_batch=4)
    try:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
        order: list[str] = []

        def job(name: str) -> Callable[[sqlite3.Connection], None]:
            return lambda c: order.append(name)

        async def main() -> None:
            batches = cat.write_batches
            with parked(cat):
                first = [asyncio.ensure_future(cat._write(job(f"w{i}"))) for i in range(6)]
                await asyncio.sleep(0.05)
                alone = cat._submit(lambda: order.append("alone"))
                second = [asyncio.ensure_future(cat._write(job(f"v{i}"))) for i in range(2)]
                await asyncio.sleep(0.05)
            await asyncio.gather(*first, *second, asyncio.wrap_future(alone))
            # 6 writes capped at 4 per batch: 4 + 2; then the alone job; then 2.
            assert cat.write_batches - batches == 3

        asyncio.run(main())
        assert order == [f"w{i}" for i in range(6)] + ["alone", "v0", "v1"]
    finally:
        cat.close()


def test_a_closed_catalog_refuses_work(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.db")
    cat.close()
    cat.close()  # idempotent
    with pytest.raises(InternalError):
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))


# --- the mirror: one fan-out transaction per batch ---------------------------------------------
def test_a_mirrored_batch_is_one_transaction_on_every_copy(tmp_path: Path) -> None:
    drives = DriveSet.open([tmp_path / f"d{i}" for i in range(N)])
    SqliteCatalog.reconcile(drives)
    cat = SqliteCatalog.on_drives(drives)
    try:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
        seqs = [c["seq"] for c in cat.copies_state()]
        assert seqs == [1] * N

        async def main() -> list[Any]:
            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda n=n: cat.put_version(record(f"k{n % 7}", n), check=refuse_if(n)) for n in range(30)
            ]
            calls.append(lambda: cat.put_version(record("x", 99, bucket="nope")))
            return await in_one_batch(cat, calls)

        results = asyncio.run(main())
        assert [isinstance(r, PreconditionFailed) for r in results[:30]] == [n % 3 == 0 for n in range(30)]
        assert isinstance(results[30], NoSuchBucket)
        # One batch: catalog_seq moved by one on every copy, and the copies are identical.
        assert [c["seq"] for c in cat.copies_state()] == [2] * N
        assert [c["state"] for c in cat.copies_state()] == ["live"] * N
        dumps = [dump(drives.paths[i] / "catalog" / "catalog.db") for i in range(N)]
        assert all(d == dumps[0] for d in dumps[1:])
        # The last successful write of each key won, in queue order.
        for k in range(7):
            last = max(n for n in range(30) if n % 7 == k and n % 3 != 0)
            got = asyncio.run(cat.get_latest("b", f"k{k}"))
            assert got is not None and got.meta.etag == f'"e{last}"'

        # A batch in which every job fails commits nowhere: the seq does not move.
        async def failing() -> list[Any]:
            calls = [lambda n=n: cat.put_version(record("y", n, bucket="nope")) for n in range(3)]
            return await in_one_batch(cat, calls)

        assert all(isinstance(r, NoSuchBucket) for r in asyncio.run(failing()))
        assert [c["seq"] for c in cat.copies_state()] == [2] * N
    finally:
        cat.close()


def test_a_copy_behind_the_delete_of_its_source_in_one_batch_fails(tmp_path: Path) -> None:
    """The copy's "are the source's blobs still live" check runs inside the transaction, so it
    sees the delete queued before it in the same batch (a reader connection would not)."""
    cat = SqliteCatalog(tmp_path / "c.db")
    try:
        asyncio.run(cat.create_bucket(BucketInfo("b", 1)))
        asyncio.run(cat.put_version(record("src", 1)))
        src = asyncio.run(cat.get_latest("b", "src"))
        assert src is not None

        def copy() -> Awaitable[Any]:
            meta = ObjectMeta(bucket="b", key="dst", version_id="2" * 24, size_bytes=3, etag='"e1"', modified_ns=2)
            return cat.put_version(
                VersionRecord(meta=meta, blobs=list(src.blobs)), shared_gone=lambda: NoSuchKey(resource="src")
            )

        marker = ObjectMeta(bucket="b", key="src", version_id="3" * 24, size_bytes=0, etag="", modified_ns=3)

        async def main() -> list[Any]:
            return await in_one_batch(
                cat, [lambda: cat.delete_object("b", "src", version_id=None, marker=marker), copy]
            )

        deleted, copied = asyncio.run(main())
        assert deleted[0] is not None and isinstance(copied, NoSuchKey)
        assert asyncio.run(cat.get_latest("b", "dst")) is None
        assert asyncio.run(cat.trash_batch()) == [src.blobs[0].blob_id]
    finally:
        cat.close()
