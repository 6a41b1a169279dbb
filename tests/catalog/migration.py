"""Helpers for the schema-upgrade tests: a catalog mirrored on a drive set, taken back to an
older schema on every copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tierstore.catalog import SqliteCatalog
from tierstore.drives import DriveSet


def old_mirror(
    tmp_path: Path, copies: int, store: Callable[[SqliteCatalog], None], back: Callable[[Path], None]
) -> tuple[DriveSet, list[Path]]:
    """A drive set of ``copies`` drives whose catalog ``store`` filled, each copy then taken back
    by ``back(db)``: (the drives, the copies' database files)."""
    drives = DriveSet.open([tmp_path / f"d{i}" for i in range(copies)])
    SqliteCatalog.reconcile(drives)
    cat = SqliteCatalog.on_drives(drives)
    try:
        store(cat)
    finally:
        cat.close()
    dbs = [p / "catalog" / "catalog.db" for p in drives.paths]
    for db in dbs:
        back(db)
    return drives, dbs
