"""The Catalog conformance suite (tierstore.testing.catalog) on SqliteCatalog (one file, and
mirrored on two drives: one copy per drive, catalog/sqlite/_mirror.py) and on PostgresCatalog (a real
PostgreSQL, the session's ``postgres``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

pytest.register_assert_rewrite("tierstore.testing.catalog")  # the suite's asserts explain their failures

from tests.postgres import PostgreSQL  # noqa: E402 - after the rewrite hook
from tierstore.catalog import SqliteCatalog  # noqa: E402
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


# Every table but the schema's own (meta, migrations) emptied, in one statement: a test starts on
# an empty, migrated database (a database per test costs PostgreSQL a copy through its WAL, and a
# TRUNCATE new files for every table: ~1.3 s a test at load; a DELETE of the few rows a test
# left is ~20x cheaper). Tables that reference others first.
_EMPTY = """DO $$ DECLARE t text; BEGIN
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname NOT IN ('meta', 'migrations')
             ORDER BY EXISTS(SELECT 1 FROM pg_constraint f WHERE f.conrelid = c.oid AND f.contype = 'f') DESC
    LOOP
        EXECUTE 'DELETE FROM ' || quote_ident(t);
    END LOOP;
END $$"""


@pytest.fixture(scope="module")
def conformance_dsn(postgres: PostgreSQL) -> str:
    """The conformance tests' own database, migrated once."""
    from tierstore.catalog.postgres import PostgresCatalog  # the [postgres] extra: only when asked

    dsn = postgres.create_database("conformance")

    async def migrate() -> None:
        await (await PostgresCatalog.open(dsn)).close()

    asyncio.run(migrate())
    return dsn


async def _execute(dsn: str, statement: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.peer
class TestPostgresCatalog(CatalogConformance):
    @pytest.fixture
    def catalog(self, conformance_dsn: str) -> CatalogFactory:
        from tierstore.catalog.postgres import PostgresCatalog

        asyncio.run(_execute(conformance_dsn, _EMPTY))

        @contextlib.asynccontextmanager
        async def open_catalog() -> AsyncIterator[PostgresCatalog]:
            cat = await PostgresCatalog.open(conformance_dsn)
            try:
                yield cat
            finally:
                await cat.close()

        return open_catalog
