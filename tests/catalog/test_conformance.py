"""The Catalog conformance suite (tierstore.testing.catalog) on SqliteCatalog: one file, and
mirrored on two drives (one copy per drive, catalog/_mirror.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tierstore.testing.catalog")  # the suite's asserts explain their failures

from tierstore.catalog import SqliteCatalog  # noqa: E402 - after the rewrite hook
from tierstore.drives import DriveSet  # noqa: E402
from tierstore.testing.catalog import CatalogConformance, CatalogFactory  # noqa: E402


class TestSqliteCatalog(CatalogConformance):
    @pytest.fixture
    def catalog(self, tmp_path: Path) -> CatalogFactory:
        @contextlib.asynccontextmanager
        async def open_catalog() -> AsyncIterator[SqliteCatalog]:
            cat = SqliteCatalog(tmp_path / "catalog.db")
            try:
                yield cat
            finally:
                cat.close()

        return open_catalog


class TestMirroredSqliteCatalog(CatalogConformance):
    @pytest.fixture
    def catalog(self, tmp_path: Path) -> CatalogFactory:
        drives = DriveSet.open([tmp_path / "d0", tmp_path / "d1"])
        SqliteCatalog.reconcile(drives)

        @contextlib.asynccontextmanager
        async def open_catalog() -> AsyncIterator[SqliteCatalog]:
            cat = SqliteCatalog.on_drives(drives)
            try:
                assert cat.mirrored
                yield cat
            finally:
                cat.close()

        return open_catalog
