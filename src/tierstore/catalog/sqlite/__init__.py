"""The embedded catalog: SQLite, one file (or one copy per drive, ``_mirror.py``). ``_catalog.py``
composes ``SqliteCatalog`` from the per-resource modules beside it (docs/architecture.md)."""

from tierstore.catalog.sqlite._catalog import SqliteCatalog

__all__ = ["SqliteCatalog"]
