"""Catalog: all metadata, transactional. SQLite is the embedded default."""

from tierstore.catalog._sqlite import BlobRef, SqliteCatalog, VersionRecord

__all__ = ["BlobRef", "SqliteCatalog", "VersionRecord"]
