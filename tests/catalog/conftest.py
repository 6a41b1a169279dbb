"""``catalogs``: the same test against ``SqliteCatalog`` and ``PostgresCatalog`` (a real
PostgreSQL, one database per test module), so both engines are held to one behaviour.

A test gets an opener: ``async with catalogs() as cat`` inside its own ``asyncio.run`` (an
asyncpg pool belongs to the loop that opened it). ``aw(x)`` awaits ``x`` if it is awaitable, so
one test body reads SQLite's synchronous reads (until they become coroutines) and PostgreSQL's.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import PostgreSQL
from tierstore.catalog import SqliteCatalog

Opener = Callable[[], AbstractAsyncContextManager[Any]]


async def aw(value: Any) -> Any:
    """``value``, awaited if it is awaitable (a read of either catalog)."""
    return await value if inspect.isawaitable(value) else value


@pytest.fixture(scope="module")
def module_pg_dsn(postgres: PostgreSQL, request: pytest.FixtureRequest) -> str:
    """A fresh database for this test module."""
    return postgres.create_database(request.module.__name__.rpartition(".")[2])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.peer)])
def catalogs(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """An opener of this test's catalog: a fresh SQLite file, or the module's PostgreSQL database
    (names in a test must then be unique in the module: tests share the database)."""
    if request.param == "sqlite":

        @contextlib.asynccontextmanager
        async def sqlite() -> AsyncIterator[Any]:
            cat = SqliteCatalog(tmp_path / "catalog.db")
            try:
                yield cat
            finally:
                cat.close()

        return sqlite
    dsn: str = request.getfixturevalue("module_pg_dsn")

    @contextlib.asynccontextmanager
    async def pg() -> AsyncIterator[Any]:
        from tierstore.catalog.postgres import PostgresCatalog  # the [postgres] extra: only when asked

        cat = await PostgresCatalog.open(dsn)
        try:
            yield cat
        finally:
            await cat.close()

    return pg
