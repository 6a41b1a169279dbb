"""Model versions and aliases in the catalog (catalog/sqlite/_datasets.py, docs/checkpoints.md): a model
version pins bytes through the same code as a dataset version (``table="models"``); an alias is
created and moved in one transaction and only onto a version that exists; a version an alias
points at cannot be deleted, and deleting it afterwards releases its pins."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierstore.catalog import BlobRef, DatasetRecord, ModelAliasInUse, PinGone, SqliteCatalog, VersionRecord
from tierstore.errors import NoSuchDataset, NoSuchModel
from tierstore.types import BucketInfo, ObjectMeta


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[SqliteCatalog]:
    c = SqliteCatalog(tmp_path / "catalog.db")
    asyncio.run(c.create_bucket(BucketInfo("b", 1, "us-east-1")))
    yield c
    c.close()


def _put(cat: SqliteCatalog, key: str, n: int) -> VersionRecord:
    meta = ObjectMeta(bucket="b", key=key, version_id=f"{n:024d}", size_bytes=3, etag=f'"e{n}"', modified_ns=n)
    asyncio.run(cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(f"blob{n:012d}", 3)])))
    found = asyncio.run(cat.get_latest("b", key))
    assert found is not None
    return found


def _model(version: int, manifest: str = "manifest0000000001") -> DatasetRecord:
    return DatasetRecord("m", version, manifest, 10, version, 1, 3, {"checkpoint": {"step": version}})


def _refs(cat: SqliteCatalog, blob_id: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(cat.path) as conn:
        return conn.execute("SELECT refs FROM blobs WHERE blob_id=?", (blob_id,)).fetchall()


def test_models_and_datasets_are_separate_tables_sharing_the_pin_code(cat: SqliteCatalog) -> None:
    blob = _put(cat, "ckpt/data", 1).blobs[0].blob_id
    asyncio.run(cat.create_dataset(_model(1), [blob], [], table="models"))
    assert asyncio.run(cat.list_datasets()) == [] and asyncio.run(cat.get_dataset("m")) is None  # not a dataset
    assert [r.version for r in asyncio.run(cat.list_datasets(table="models"))] == [1]
    assert asyncio.run(cat.get_dataset("m", table="models")) == _model(1)
    assert asyncio.run(cat.next_dataset_version("m", table="models")) == 2
    assert _refs(cat, blob) == [(2,)]
    _put(cat, "ckpt/data", 2)  # overwritten: the pinned blob stays
    assert _refs(cat, blob) == [(1,)]
    with pytest.raises(PinGone):  # a pin on a blob that is gone refuses the whole publish
        asyncio.run(cat.create_dataset(_model(2, "manifest0000000002"), ["nosuchblob000000"], [], table="models"))
    assert asyncio.run(cat.get_dataset("m", 2, table="models")) is None
    with pytest.raises(ValueError, match="pinning table"):
        asyncio.run(cat.get_dataset("m", table="versions; DROP TABLE blobs"))


def test_aliases_move_atomically_and_guard_deletion(cat: SqliteCatalog) -> None:
    blob = _put(cat, "ckpt/data", 1).blobs[0].blob_id
    asyncio.run(cat.create_dataset(_model(1), [blob], [], table="models"))
    asyncio.run(cat.create_dataset(_model(2, "manifest0000000002"), [blob], [], table="models"))
    assert asyncio.run(cat.set_model_alias("m", "production", 1, 10)) is None
    assert asyncio.run(cat.set_model_alias("m", "production", 2, 11)) == 1  # moved: returns the old one
    assert asyncio.run(cat.set_model_alias("m", "staging", 2, 12)) is None
    assert asyncio.run(cat.model_alias("m", "production")) == 2
    assert asyncio.run(cat.model_aliases("m")) == [("m", "production", 2, 11), ("m", "staging", 2, 12)]
    with pytest.raises(NoSuchModel):
        asyncio.run(cat.set_model_alias("m", "production", 7, 13))  # onto a version that does not exist
    assert asyncio.run(cat.model_alias("m", "production")) == 2

    with pytest.raises(ModelAliasInUse) as info:
        asyncio.run(cat.delete_dataset("m", 2, [blob], [], table="models"))
    assert info.value.aliases == ["production", "staging"]
    assert asyncio.run(cat.get_dataset("m", 2, table="models")) is not None
    assert _refs(cat, blob) == [(3,)]  # nothing released

    assert asyncio.run(cat.delete_model_alias("m", "production")) == 2
    assert asyncio.run(cat.delete_model_alias("m", "staging")) == 2
    with pytest.raises(NoSuchModel):
        asyncio.run(cat.delete_model_alias("m", "staging"))
    asyncio.run(cat.delete_dataset("m", 2, [blob], [], table="models"))
    assert _refs(cat, blob) == [(2,)]
    with pytest.raises(NoSuchModel):
        asyncio.run(cat.delete_dataset("m", 2, [blob], [], table="models"))
    with pytest.raises(NoSuchDataset):
        asyncio.run(cat.delete_dataset("m", 1, [blob], []))  # the datasets table has no "m"
