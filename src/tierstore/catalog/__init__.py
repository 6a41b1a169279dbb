"""Catalog: all metadata, transactional. SQLite is the embedded default; on a drive set it is
mirrored, one copy per drive (``SqliteCatalog.on_drives``, catalog/_mirror.py)."""

from tierstore.catalog._mirror import CatalogMirrorError, ReconcileReport
from tierstore.catalog._sqlite import (
    PINNING_TABLES,
    BlobRef,
    DatasetRecord,
    ModelAliasInUse,
    PinGone,
    SqliteCatalog,
    VersionRecord,
    VersionTaken,
)

__all__ = [
    "PINNING_TABLES",
    "BlobRef",
    "CatalogMirrorError",
    "DatasetRecord",
    "ModelAliasInUse",
    "PinGone",
    "ReconcileReport",
    "SqliteCatalog",
    "VersionRecord",
    "VersionTaken",
]
