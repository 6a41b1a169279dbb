"""Dataset versions in the catalog (catalog/sqlite/_datasets.py, docs/datasets.md): publishing pins every
blob and inline body a manifest reads, in the same transaction; a pinned inline body outlives its
version; deleting the dataset releases the pins and collects what nothing else references; a
pin on something already deleted, or a version number already taken, refuses the whole publish."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierstore.catalog import BlobRef, DatasetRecord, PinGone, SqliteCatalog, VersionRecord, VersionTaken
from tierstore.errors import NoSuchDataset
from tierstore.types import BucketInfo, ObjectMeta


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[SqliteCatalog]:
    c = SqliteCatalog(tmp_path / "catalog.db")
    asyncio.run(c.create_bucket(BucketInfo("b", 1, "us-east-1")))
    yield c
    c.close()


def _put(cat: SqliteCatalog, key: str, n: int, *, inline: bytes | None = None) -> VersionRecord:
    meta = ObjectMeta(bucket="b", key=key, version_id=f"{n:024d}", size_bytes=3, etag=f'"e{n}"', modified_ns=n)
    rec = VersionRecord(meta=meta, inline_data=inline) if inline is not None else VersionRecord(
        meta=meta, blobs=[BlobRef(f"blob{n:012d}", 3)]
    )
    asyncio.run(cat.put_version(rec))
    found = asyncio.run(cat.get_latest("b", key))
    assert found is not None
    return found


def _record(name: str, version: int, manifest: str = "manifest0000000001") -> DatasetRecord:
    return DatasetRecord(name, version, manifest, 10, 1, 2, 6, {"source": {"rows": 2}})


def _rows(cat: SqliteCatalog, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(cat.path) as conn:
        return conn.execute(sql).fetchall()


def test_pins_outlive_versions_and_are_released_with_the_dataset(cat: SqliteCatalog) -> None:
    small = _put(cat, "small", 1, inline=b"abc")
    big = _put(cat, "big", 2)
    assert small.inline_id is not None
    asyncio.run(cat.create_dataset(_record("ds", 1), [big.blobs[0].blob_id], [small.inline_id]))
    assert [r.version for r in asyncio.run(cat.list_datasets("ds"))] == [1]
    assert _rows(cat, "SELECT refs FROM blobs WHERE blob_id='blob000000000002'") == [(2,)]

    # Overwrite both keys: the version rows go, the pinned bytes stay.
    _put(cat, "small", 3, inline=b"new")
    _put(cat, "big", 4)
    assert asyncio.run(cat.inline_bodies([small.inline_id])) == {small.inline_id: b"abc"}
    assert _rows(cat, f"SELECT pins, released FROM inline_blobs WHERE blob_id='{small.inline_id}'") == [(1, 1)]
    assert _rows(cat, "SELECT refs FROM blobs WHERE blob_id='blob000000000002'") == [(1,)]
    assert "blob000000000002" not in asyncio.run(cat.trash_batch())

    asyncio.run(cat.delete_dataset("ds", 1, [big.blobs[0].blob_id], [small.inline_id]))
    assert asyncio.run(cat.inline_bodies([small.inline_id])) == {}
    assert {"blob000000000002", "manifest0000000001"} <= set(asyncio.run(cat.trash_batch()))
    assert asyncio.run(cat.list_datasets()) == []
    with pytest.raises(NoSuchDataset):
        asyncio.run(cat.delete_dataset("ds", 1, [], []))


def test_a_body_still_owned_by_its_version_survives_the_dataset(cat: SqliteCatalog) -> None:
    small = _put(cat, "small", 1, inline=b"abc")
    assert small.inline_id is not None
    asyncio.run(cat.create_dataset(_record("ds", 1), [], [small.inline_id]))
    asyncio.run(cat.delete_dataset("ds", 1, [], [small.inline_id]))
    now = asyncio.run(cat.get_latest("b", "small", data=True))
    assert now is not None and now.inline_data == b"abc"
    assert _rows(cat, f"SELECT pins, released FROM inline_blobs WHERE blob_id='{small.inline_id}'") == [(0, 0)]


def test_a_pin_on_deleted_bytes_refuses_the_publish(cat: SqliteCatalog) -> None:
    small = _put(cat, "small", 1, inline=b"abc")
    big = _put(cat, "big", 2)
    assert small.inline_id is not None
    with pytest.raises(PinGone):
        asyncio.run(cat.create_dataset(_record("ds", 1), [big.blobs[0].blob_id, "blob-that-is-gone"], []))
    with pytest.raises(PinGone):
        asyncio.run(cat.create_dataset(_record("ds", 1), [], [small.inline_id, "inline-that-is-gone"]))
    # Nothing of either attempt stayed: no dataset, no extra reference, no pin.
    assert asyncio.run(cat.list_datasets()) == []
    assert _rows(cat, "SELECT refs FROM blobs WHERE blob_id='blob000000000002'") == [(1,)]
    assert _rows(cat, f"SELECT pins FROM inline_blobs WHERE blob_id='{small.inline_id}'") == [(0,)]


def test_versions_are_numbered_in_order(cat: SqliteCatalog) -> None:
    asyncio.run(cat.create_dataset(_record("ds", 1, "m1"), [], []))
    with pytest.raises(VersionTaken):
        asyncio.run(cat.create_dataset(_record("ds", 1, "m2"), [], []))
    with pytest.raises(VersionTaken):
        asyncio.run(cat.create_dataset(_record("ds", 3, "m3"), [], []))
    assert asyncio.run(cat.next_dataset_version("ds")) == 2 and asyncio.run(cat.next_dataset_version("other")) == 1
    asyncio.run(cat.create_dataset(_record("ds", 2, "m2"), [], []))
    latest = asyncio.run(cat.get_dataset("ds"))
    assert latest is not None and (latest.version, latest.manifest_blob) == (2, "m2")
    first = asyncio.run(cat.get_dataset("ds", 1))
    assert first is not None and first.info == {"source": {"rows": 2}}
