"""Datasets, models and model aliases of the embedded catalog (docs/datasets.md,
docs/checkpoints.md): versions that pin the blobs and inline bodies their manifests read."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from tierstore.catalog._records import PINNING_TABLES, DatasetRecord, ModelAliasInUse, PinGone, VersionTaken
from tierstore.catalog.sqlite._tables import Tables
from tierstore.errors import NoSuchDataset, NoSuchModel

_DATASET_COLS = "name, version, manifest_blob, manifest_bytes, created_ns, rows, bytes, info"


def _pinning(table: str) -> str:
    """``table`` checked against PINNING_TABLES (it is put into SQL text)."""
    if table not in PINNING_TABLES:
        raise ValueError(f"not a pinning table: {table!r}")
    return table


class DatasetTables(Tables):
    """The dataset and model part of ``SqliteCatalog`` (a mixin: ``_tables.py``)."""

    async def manifest_rows(
        self, bucket: str, prefix: bytes, after: bytes | None, limit: int
    ) -> list[tuple[bytes, str, int, str, str, str, str | None]]:
        """Live latest versions under ``prefix`` after key ``after`` (None: from the start), in
        key order: (key, version_id, size, etag, meta JSON, blobs JSON, inline_id)."""
        below = prefix + b"\xff"
        start, op = (prefix, ">=") if after is None else (after, ">")
        return (
            self._reader()
            .execute(
                "SELECT key, version_id, size, etag, meta, blobs, inline_id FROM versions"  # noqa: S608 - constant
                f" WHERE bucket=? AND is_latest=1 AND is_delete_marker=0 AND key{op}? AND key<? ORDER BY key LIMIT ?",
                (bucket, start, below, limit),
            )
            .fetchall()
        )

    async def get_dataset(
        self, name: str, version: int | None = None, *, table: str = "datasets"
    ) -> DatasetRecord | None:
        """Version ``version`` of dataset ``name``, or its latest version (None). ``table``:
        ``datasets`` or ``models`` (PINNING_TABLES; a model version has the same record shape)."""
        table = _pinning(table)
        if version is None:
            sql = f"SELECT {_DATASET_COLS} FROM {table} WHERE name=? ORDER BY version DESC LIMIT 1"  # noqa: S608
            row = self._reader().execute(sql, (name,)).fetchone()
        else:
            sql = f"SELECT {_DATASET_COLS} FROM {table} WHERE name=? AND version=?"  # noqa: S608 - constant
            row = self._reader().execute(sql, (name, version)).fetchone()
        return DatasetRecord.from_row(row) if row else None

    async def list_datasets(self, name: str | None = None, *, table: str = "datasets") -> list[DatasetRecord]:
        """Every dataset version (or every version of ``name``), by name then version."""
        table = _pinning(table)
        if name is None:
            rows = self._reader().execute(f"SELECT {_DATASET_COLS} FROM {table} ORDER BY name, version").fetchall()  # noqa: S608
        else:
            sql = f"SELECT {_DATASET_COLS} FROM {table} WHERE name=? ORDER BY version"  # noqa: S608 - constant
            rows = self._reader().execute(sql, (name,)).fetchall()
        return [DatasetRecord.from_row(r) for r in rows]

    async def next_dataset_version(self, name: str, *, table: str = "datasets") -> int:
        sql = f"SELECT MAX(version) FROM {_pinning(table)} WHERE name=?"  # noqa: S608 - constant
        row = self._reader().execute(sql, (name,)).fetchone()
        return int(row[0] or 0) + 1

    async def create_dataset(
        self, record: DatasetRecord, blobs: Sequence[str], inline: Sequence[str], *, table: str = "datasets"
    ) -> None:
        """Publish ``record`` (its manifest blob already durable) and pin what its rows read:
        one reference per distinct blob in ``blobs`` (``blobs.refs``, as versions count theirs)
        and one pin per inline body in ``inline``, in one transaction. Raises ``PinGone`` if a
        pinned blob or body was deleted since the manifest was built (the caller rebuilds it),
        ``VersionTaken`` if another writer published ``record.version`` first. ``table``:
        ``datasets`` or ``models`` — a model version pins its checkpoint's bytes the same way."""
        table = _pinning(table)

        def fn(c: sqlite3.Connection) -> None:
            sql = f"SELECT MAX(version) FROM {table} WHERE name=?"  # noqa: S608 - constant
            latest = c.execute(sql, (record.name,)).fetchone()[0]
            if int(latest or 0) + 1 != record.version:
                raise VersionTaken(record.name)
            # In bulk, in key order (a million pins: ~3 s instead of ~8 one statement each);
            # every id must hit its row, else something was deleted since the manifest was built.
            big = len(blobs) + len(inline) > 100_000
            if big:  # the pages a million updates touch, held at once: 8 s -> 3 s
                c.execute("PRAGMA cache_size=-262144")
            try:
                for pinned, column, ids in (("blobs", "refs", blobs), ("inline_blobs", "pins", inline)):
                    sql = f"UPDATE {pinned} SET {column} = {column} + 1 WHERE blob_id=?"  # noqa: S608 - constants
                    if c.executemany(sql, ((i,) for i in sorted(ids))).rowcount != len(ids):
                        raise PinGone(f"a pinned {pinned} row is gone")
            finally:
                if big:
                    c.execute("PRAGMA cache_size=-2000")  # SQLite's default again
            self._ref(c, record.manifest_blob, record.manifest_bytes)
            c.execute(f"INSERT INTO {table}({_DATASET_COLS}) VALUES(?,?,?,?,?,?,?,?)", record.to_row())

        await self._write(fn)

    async def delete_dataset(
        self, name: str, version: int, blobs: Sequence[str], inline: Sequence[str], *, table: str = "datasets"
    ) -> None:
        """Remove dataset version ``name@version`` and release its pins (``blobs`` and ``inline``:
        the same lists ``create_dataset`` was given). A blob or body no longer referenced by
        anything goes to the trash, or is deleted, in the same transaction. A model version an
        alias points at is refused (``ModelAliasInUse``), checked in the same transaction."""
        table = _pinning(table)

        def fn(c: sqlite3.Connection) -> None:
            sql = f"SELECT manifest_blob FROM {table} WHERE name=? AND version=?"  # noqa: S608 - constant
            row = c.execute(sql, (name, version)).fetchone()
            if row is None:
                missing = NoSuchModel if table == "models" else NoSuchDataset
                raise missing(resource=f"{name}@{version}")
            if table == "models":
                aliases = [a for (a,) in c.execute(
                    "SELECT alias FROM model_aliases WHERE name=? AND version=? ORDER BY alias", (name, version)
                )]  # fmt: skip
                if aliases:
                    raise ModelAliasInUse(name, version, aliases)
            c.execute(f"DELETE FROM {table} WHERE name=? AND version=?", (name, version))  # noqa: S608 - constant
            self._unref_all(c, [*blobs, row[0]])
            ids = [(i,) for i in sorted(inline)]
            c.executemany("UPDATE inline_blobs SET pins = pins - 1 WHERE blob_id=?", ids)
            c.executemany("DELETE FROM inline_blobs WHERE blob_id=? AND pins<=0 AND released=1", ids)

        await self._write(fn)

    async def model_aliases(self, name: str | None = None) -> list[tuple[str, str, int, int]]:
        """(name, alias, version, updated_ns) of every alias (of model ``name``), by name and alias."""
        if name is None:
            sql = "SELECT name, alias, version, updated_ns FROM model_aliases ORDER BY name, alias"
            return [tuple(r) for r in self._reader().execute(sql).fetchall()]
        sql = "SELECT name, alias, version, updated_ns FROM model_aliases WHERE name=? ORDER BY alias"
        return [tuple(r) for r in self._reader().execute(sql, (name,)).fetchall()]

    async def model_alias(self, name: str, alias: str) -> int | None:
        """The version ``name@alias`` points at (None: no such alias)."""
        sql = "SELECT version FROM model_aliases WHERE name=? AND alias=?"
        row = self._reader().execute(sql, (name, alias)).fetchone()
        return int(row[0]) if row else None

    async def set_model_alias(self, name: str, alias: str, version: int, updated_ns: int) -> int | None:
        """Point ``name@alias`` at ``version`` (creating or moving it) in one transaction, so a
        reader sees the old version or the new one, never neither; returns the version it
        pointed at before (None: a new alias). ``NoSuchModel`` if ``name@version`` does not exist."""

        def fn(c: sqlite3.Connection) -> int | None:
            if c.execute("SELECT 1 FROM models WHERE name=? AND version=?", (name, version)).fetchone() is None:
                raise NoSuchModel(f"No model version {name}@{version}.", resource=f"{name}@{version}")
            row = c.execute("SELECT version FROM model_aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            c.execute(
                "INSERT INTO model_aliases(name, alias, version, updated_ns) VALUES(?,?,?,?)"
                " ON CONFLICT(name, alias) DO UPDATE SET version=excluded.version, updated_ns=excluded.updated_ns",
                (name, alias, version, updated_ns),
            )
            return int(row[0]) if row else None

        return await self._write(fn)

    async def delete_model_alias(self, name: str, alias: str) -> int:
        """Remove ``name@alias``; returns the version it pointed at (``NoSuchModel`` if none)."""

        def fn(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT version FROM model_aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
            if row is None:
                raise NoSuchModel(f"No alias {name}@{alias}.", resource=f"{name}@{alias}")
            c.execute("DELETE FROM model_aliases WHERE name=? AND alias=?", (name, alias))
            return int(row[0])

        return await self._write(fn)
