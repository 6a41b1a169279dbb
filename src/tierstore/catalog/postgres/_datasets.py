"""Datasets, models and model aliases on PostgreSQL (docs/datasets.md, docs/checkpoints.md), as
catalog/sqlite/_datasets.py keeps them: a version pins the blobs and inline bodies its manifest reads.

A version number is ``max + 1`` under the ``(name, version)`` primary key: two writers racing
for one number both read the same max, and the second INSERT's conflict is ``VersionTaken``
(no counter row). Pinned rows are locked in id order before they are counted, so two versions
pinning overlapping sets wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from tierstore.catalog.postgres._blobs import ref, unref_all
from tierstore.catalog.postgres._pool import Pool
from tierstore.errors import NoSuchDataset, NoSuchModel

from tierstore.catalog import PINNING_TABLES, DatasetRecord, ModelAliasInUse, PinGone, VersionTaken  # isort: skip

__all__ = ["DatasetTables"]

_COLS = "name, version, manifest_blob, manifest_bytes, created_ns, rows, bytes, info"


def _pinning(table: str) -> str:
    """``table`` checked against PINNING_TABLES (it is put into SQL text)."""
    if table not in PINNING_TABLES:
        raise ValueError(f"not a pinning table: {table!r}")
    return table


async def _pin(c: Any, table: str, column: str, ids: Sequence[str]) -> None:
    """One more ``column`` on each row of ``ids`` (an id listed twice: two); ``PinGone`` if one is missing."""
    if not ids:
        return
    await c.execute(f"SELECT 1 FROM {table} WHERE blob_id = ANY($1::text[]) ORDER BY blob_id FOR UPDATE", list(ids))  # noqa: S608
    pinned = await c.fetchval(
        f"WITH u AS (SELECT id, count(*) AS n FROM unnest($1::text[]) AS id GROUP BY id),"  # noqa: S608 - constants
        f" p AS (UPDATE {table} t SET {column} = t.{column} + u.n FROM u WHERE t.blob_id = u.id RETURNING u.n)"
        " SELECT COALESCE(sum(n), 0) FROM p",
        list(ids),
    )
    if pinned != len(ids):
        raise PinGone(f"a pinned {table} row is gone")


class DatasetTables:
    """The dataset, model and model-alias calls of the catalog protocol."""

    _pool: Pool

    async def manifest_rows(
        self, bucket: str, prefix: bytes, after: bytes | None, limit: int
    ) -> list[tuple[bytes, str, int, str, str, str, str | None]]:
        """Live latest versions under ``prefix`` after key ``after`` (None: from the start), in
        key order: (key, version_id, size, etag, meta JSON, blobs JSON, inline_id)."""
        below = prefix + b"\xff"  # never in UTF-8: after every key that starts with the prefix
        start, op = (prefix, ">=") if after is None else (after, ">")
        rows = await self._pool.fetch(
            "SELECT key, version_id, size, etag, meta, blobs, inline_id FROM versions"  # noqa: S608 - constant
            " WHERE bucket_id = (SELECT id FROM buckets WHERE name = $1) AND is_latest AND NOT is_delete_marker"
            f" AND key {op} $2 AND key < $3 ORDER BY key LIMIT $4",
            bucket, start, below, limit,
        )  # fmt: skip
        return [tuple(r) for r in rows]

    async def get_dataset(
        self, name: str, version: int | None = None, *, table: str = "datasets"
    ) -> DatasetRecord | None:
        """Version ``version`` of dataset ``name``, or its latest version (None). ``table``:
        ``datasets`` or ``models``."""
        table = _pinning(table)
        if version is None:
            sql = f"SELECT {_COLS} FROM {table} WHERE name = $1 ORDER BY version DESC LIMIT 1"  # noqa: S608
            row = await self._pool.fetchrow(sql, name)
        else:
            sql = f"SELECT {_COLS} FROM {table} WHERE name = $1 AND version = $2"  # noqa: S608 - constant
            row = await self._pool.fetchrow(sql, name, version)
        return DatasetRecord.from_row(row) if row else None

    async def list_datasets(self, name: str | None = None, *, table: str = "datasets") -> list[DatasetRecord]:
        """Every dataset version (or every version of ``name``), by name then version."""
        table = _pinning(table)
        sql = f"SELECT {_COLS} FROM {table} WHERE $1::text IS NULL OR name = $1 ORDER BY name, version"  # noqa: S608
        return [DatasetRecord.from_row(r) for r in await self._pool.fetch(sql, name)]

    async def next_dataset_version(self, name: str, *, table: str = "datasets") -> int:
        sql = f"SELECT MAX(version) FROM {_pinning(table)} WHERE name = $1"  # noqa: S608 - constant
        return int(await self._pool.fetchval(sql, name) or 0) + 1

    async def create_dataset(
        self, record: DatasetRecord, blobs: Sequence[str], inline: Sequence[str], *, table: str = "datasets"
    ) -> None:
        """Publish ``record`` (its manifest blob already durable) and pin what its rows read, in
        one transaction; ``PinGone`` if a pinned blob or body is gone, ``VersionTaken`` if
        another writer published ``record.version`` first."""
        table = _pinning(table)

        async def fn(c: Any) -> None:
            latest = await c.fetchval(f"SELECT MAX(version) FROM {table} WHERE name = $1", record.name)  # noqa: S608
            if int(latest or 0) + 1 != record.version:
                raise VersionTaken(record.name)
            await _pin(c, "blobs", "refs", blobs)
            await _pin(c, "inline_blobs", "pins", inline)
            await ref(c, record.manifest_blob, record.manifest_bytes)
            try:
                async with c.transaction():  # a savepoint: the conflict is ours to name
                    await c.execute(
                        f"INSERT INTO {table}({_COLS}) VALUES($1, $2, $3, $4, $5, $6, $7, $8)",
                        *record.to_row(),
                    )
            except asyncpg.UniqueViolationError:
                raise VersionTaken(record.name) from None

        await self._pool.write(fn)

    async def delete_dataset(
        self, name: str, version: int, blobs: Sequence[str], inline: Sequence[str], *, table: str = "datasets"
    ) -> None:
        """Remove ``name@version`` and release its pins (the lists ``create_dataset`` was given);
        a model version an alias points at is refused (``ModelAliasInUse``)."""
        table = _pinning(table)

        async def fn(c: Any) -> None:
            manifest = await c.fetchval(
                f"DELETE FROM {table} WHERE name = $1 AND version = $2 RETURNING manifest_blob",  # noqa: S608
                name, version,
            )  # fmt: skip
            if manifest is None:
                missing = NoSuchModel if table == "models" else NoSuchDataset
                raise missing(resource=f"{name}@{version}")
            if table == "models":
                rows = await c.fetch(
                    "SELECT alias FROM model_aliases WHERE name = $1 AND version = $2 ORDER BY alias", name, version
                )
                if rows:
                    raise ModelAliasInUse(name, version, [r[0] for r in rows])
            await unref_all(c, [*blobs, manifest])
            ids = sorted(inline)
            await c.execute(
                "UPDATE inline_blobs t SET pins = t.pins - u.n FROM (SELECT id, count(*) AS n"
                " FROM unnest($1::text[]) AS id GROUP BY id) u WHERE t.blob_id = u.id",
                ids,
            )
            await c.execute("DELETE FROM inline_blobs WHERE blob_id = ANY($1::text[]) AND pins <= 0 AND released", ids)

        await self._pool.write(fn)

    async def model_aliases(self, name: str | None = None) -> list[tuple[str, str, int, int]]:
        """(name, alias, version, updated_ns) of every alias (of model ``name``), by name and alias."""
        rows = await self._pool.fetch(
            "SELECT name, alias, version, updated_ns FROM model_aliases WHERE $1::text IS NULL OR name = $1"
            " ORDER BY name, alias",
            name,
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    async def model_alias(self, name: str, alias: str) -> int | None:
        """The version ``name@alias`` points at (None: no such alias)."""
        value = await self._pool.fetchval(
            "SELECT version FROM model_aliases WHERE name = $1 AND alias = $2", name, alias
        )
        return int(value) if value is not None else None

    async def set_model_alias(self, name: str, alias: str, version: int, updated_ns: int) -> int | None:
        """Point ``name@alias`` at ``version`` in one transaction; returns the version it pointed
        at before (None: a new alias). ``NoSuchModel`` if ``name@version`` does not exist."""

        async def fn(c: Any) -> int | None:
            # FOR KEY SHARE: the model version cannot be deleted until this commits.
            found = await c.fetchval(
                "SELECT 1 FROM models WHERE name = $1 AND version = $2 FOR KEY SHARE", name, version
            )
            if found is None:
                raise NoSuchModel(f"No model version {name}@{version}.", resource=f"{name}@{version}")
            before = await c.fetchval(
                "SELECT version FROM model_aliases WHERE name = $1 AND alias = $2 FOR UPDATE", name, alias
            )
            await c.execute(
                "INSERT INTO model_aliases(name, alias, version, updated_ns) VALUES($1, $2, $3, $4)"
                " ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version, updated_ns = excluded.updated_ns",
                name, alias, version, updated_ns,
            )  # fmt: skip
            return int(before) if before is not None else None

        return await self._pool.write(fn)

    async def delete_model_alias(self, name: str, alias: str) -> int:
        """Remove ``name@alias``; returns the version it pointed at (``NoSuchModel`` if none)."""

        async def fn(c: Any) -> int:
            value = await c.fetchval(
                "DELETE FROM model_aliases WHERE name = $1 AND alias = $2 RETURNING version", name, alias
            )
            if value is None:
                raise NoSuchModel(f"No alias {name}@{alias}.", resource=f"{name}@{alias}")
            return int(value)

        return await self._pool.write(fn)
