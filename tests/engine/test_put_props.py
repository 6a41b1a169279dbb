"""A PUT decided from a worker's cached bucket properties (docs/scale-out.md "The PUT path"):
the default encryption and object-lock configuration it applied are checked in its commit, so a
default another gateway put a moment before (this worker's cache not told yet) is never missed.

Through ObjectService on a real SQLite catalog and blob store; "another gateway" is the catalog
changed directly, which drops nothing from this worker's cache (the catalogs' own check is in
the conformance suite, src/tierstore/testing/catalog.py, on both catalogs).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tierstore.blob import LocalBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.engine import ObjectService
from tierstore.engine._cached import NOT_CACHED
from tierstore.errors import NoSuchKey, SlowDown
from tierstore.types import GetOptions, PutOptions

B = "props"


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@contextmanager
def service(tmp_path: Path) -> Iterator[tuple[ObjectService, SqliteCatalog]]:
    catalog = SqliteCatalog(tmp_path / "catalog.db")
    try:
        yield ObjectService(catalog, LocalBlobStore(tmp_path / "data")), catalog
    finally:
        catalog.close()


def test_a_lock_default_put_meanwhile_applies(tmp_path: Path) -> None:
    async def main(svc: ObjectService, catalog: SqliteCatalog) -> None:
        await svc.create_bucket(B, object_lock=True)
        stale = await svc.bucket_access.props(B)  # this worker's copy: no default retention

        def default(props: dict[str, Any]) -> dict[str, Any]:
            props["object_lock"] = {"enabled": True, "default": {"mode": "GOVERNANCE", "days": 1}}
            return props

        await catalog.update_bucket_props(B, default)  # through another gateway
        assert svc.bucket_access.cached(B) is stale
        meta = await svc.put_object(B, "k", body(b"x" * 10), PutOptions(), props=stale)
        stored = (await svc.head_object(B, "k", GetOptions())).meta
        assert stored.lock["mode"] == meta.lock["mode"] == "GOVERNANCE"
        assert svc.bucket_access.cached(B) is NOT_CACHED  # dropped: the next PUT reads the new default

    with service(tmp_path) as (svc, catalog):
        asyncio.run(main(svc, catalog))


def test_an_encryption_default_put_meanwhile_refuses_the_stale_put(tmp_path: Path) -> None:
    async def main(svc: ObjectService, catalog: SqliteCatalog) -> None:
        await svc.create_bucket(B)
        stale = await svc.bucket_access.props(B)  # no default encryption: the body goes in clear
        await catalog.update_bucket_props(B, lambda p: p | {"encryption": {"algorithm": "AES256"}})
        with pytest.raises(SlowDown):
            await svc.put_object(B, "k", body(b"x" * 10), PutOptions(), props=stale)
        with pytest.raises(NoSuchKey):  # nothing was written in clear
            await svc.head_object(B, "k", GetOptions())
        fresh = await svc.bucket_access.props(B)  # dropped by the refusal: read again
        assert fresh is not None and fresh["encryption"] == {"algorithm": "AES256"}
        await svc.put_object(B, "k", body(b"x" * 10), PutOptions(), props=fresh)

    with service(tmp_path) as (svc, catalog):
        asyncio.run(main(svc, catalog))
