"""Buckets of the embedded catalog: their rows and properties (versioning, lifecycle rules, ...)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from tierstore.catalog.sqlite._tables import Tables
from tierstore.errors import BucketAlreadyOwnedByYou, BucketNotEmpty, NoSuchBucket
from tierstore.types import BucketInfo


class BucketTables(Tables):
    """The bucket part of ``SqliteCatalog`` (a mixin: ``_tables.py``)."""

    async def create_bucket(self, info: BucketInfo, props: dict[str, Any] | None = None) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM buckets WHERE name=?", (info.name,)).fetchone():
                raise BucketAlreadyOwnedByYou(resource=info.name)
            c.execute(
                "INSERT INTO buckets(name, created_ns, region, props) VALUES(?,?,?,?)",
                (info.name, info.created_ns, info.region, json.dumps(props or {})),
            )

        await self._write(fn)

    async def delete_bucket(self, name: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if not c.execute("SELECT 1 FROM buckets WHERE name=?", (name,)).fetchone():
                raise NoSuchBucket(resource=name)
            if c.execute("SELECT 1 FROM versions WHERE bucket=? LIMIT 1", (name,)).fetchone():
                raise BucketNotEmpty(resource=name)
            # S3 refuses while uploads are in progress only in some cases; we abort them.
            for (upload_id,) in c.execute("SELECT upload_id FROM uploads WHERE bucket=?", (name,)).fetchall():
                self._drop_upload(c, upload_id)
            c.execute("DELETE FROM completed_uploads WHERE bucket=?", (name,))
            self._lifecycle_bucket_gone(c, name)
            c.execute("DELETE FROM buckets WHERE name=?", (name,))

        await self._write(fn)

    async def get_bucket(self, name: str) -> BucketInfo | None:
        row = self._reader().execute("SELECT name, created_ns, region FROM buckets WHERE name=?", (name,)).fetchone()
        return BucketInfo(*row) if row else None

    async def list_buckets(
        self, *, after: str = "", prefix: str = "", region: str | None = None, limit: int = -1
    ) -> list[BucketInfo]:
        """Buckets by name: those after ``after`` whose name starts with ``prefix`` (and in
        ``region``), at most ``limit`` (-1: all)."""
        sql = "SELECT name, created_ns, region FROM buckets WHERE name > ? AND substr(name, 1, ?) = ?"
        args: list[Any] = [after, len(prefix), prefix]
        if region is not None:
            sql += " AND region = ?"
            args.append(region)
        rows = self._reader().execute(sql + " ORDER BY name LIMIT ?", (*args, limit)).fetchall()
        return [BucketInfo(*r) for r in rows]

    async def bucket_props(self, name: str) -> dict[str, Any]:
        row = self._reader().execute("SELECT props FROM buckets WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NoSuchBucket(resource=name)
        props: dict[str, Any] = json.loads(row[0])
        return props

    async def update_bucket_props(
        self, name: str, update: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read-modify-write of a bucket's properties in one transaction; ``update`` may raise."""

        def fn(c: sqlite3.Connection) -> dict[str, Any]:
            props = self._props(c, name)
            new = update(dict(props))
            c.execute("UPDATE buckets SET props=? WHERE name=?", (json.dumps(new), name))
            self._lifecycle_rules_changed(c, name, props.get("lifecycle"), new.get("lifecycle"))
            return new

        return await self._write(fn)

    @staticmethod
    def _props(c: sqlite3.Connection, bucket: str) -> dict[str, Any]:
        row = c.execute("SELECT props FROM buckets WHERE name=?", (bucket,)).fetchone()
        if row is None:
            raise NoSuchBucket(resource=bucket)
        props: dict[str, Any] = json.loads(row[0])
        return props
