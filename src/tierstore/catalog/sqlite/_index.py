"""The metadata-query index rows (``obj_attrs``) of a version: what the compiler in
``catalog/_query.py`` searches, kept in step with each key's current live version."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tierstore.catalog._query import attr_num


def index_rows(doc: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    """(name, value, number) rows of ``obj_attrs`` for a version's metadata document."""
    return [(name, value, attr_num(value)) for name, value in index_attrs(doc)]


def index_attrs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The (name, value) pairs the metadata index keeps for a version's metadata document."""
    out = [(f"meta.{k}", v) for k, v in doc.get("u", {}).items()]
    out += [(f"tag.{k}", v) for k, v in doc.get("t", {}).items()]
    out.append(("content_type", doc.get("h", {}).get("content-type", "binary/octet-stream")))
    out.append(("storage_class", doc.get("sc", "STANDARD")))
    return out


def reindex(
    c: sqlite3.Connection,
    bucket: str,
    key_b: bytes,
    attrs: list[tuple[str, str, float | None]] | None = None,
    *,
    stale: bool = True,
) -> None:
    """Make the metadata index show the key's current live version (or nothing).

    A caller that just made a live version current passes its ``attrs`` (``index_rows``),
    and ``stale=False`` if the key had no live current version before (no rows to delete)."""
    if stale:
        c.execute("DELETE FROM obj_attrs WHERE bucket=? AND key=?", (bucket, key_b))
    if attrs is None:
        row = c.execute(
            "SELECT meta FROM versions WHERE bucket=? AND key=? AND is_latest=1 AND is_delete_marker=0",
            (bucket, key_b),
        ).fetchone()
        if row is None:
            return
        attrs = index_rows(json.loads(row[0]))
    c.executemany(
        "INSERT INTO obj_attrs(bucket, key, name, value, num) VALUES(?,?,?,?,?)",
        [(bucket, key_b, name, value, num) for name, value, num in attrs],
    )
