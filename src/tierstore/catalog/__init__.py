"""Catalog: all metadata, transactional. SQLite is the embedded default; on a drive set it is
mirrored, one copy per drive (``SqliteCatalog.on_drives``, catalog/_mirror.py)."""

from tierstore.catalog._hot import HeldBlob, HoldInfo
from tierstore.catalog._identity import AccessKeyRecord, RoleRecord, UserRecord
from tierstore.catalog._lifecycle import DueRow, KeyVersion, Outcome, PlannedAction
from tierstore.catalog._mirror import CatalogMirrorError, ReconcileReport
from tierstore.catalog._sqlite import (
    PINNING_TABLES,
    BlobRef,
    DatasetRecord,
    ModelAliasInUse,
    PinGone,
    SqliteCatalog,
    VersioningChanged,
    VersionRecord,
    VersionTaken,
)
from tierstore.catalog._tier_data import InlineMove, OutboxEntry
from tierstore.catalog._tier_progress import PendingWrite, TierProgress
from tierstore.catalog._tiers import TierRecord, TierUsage

__all__ = [
    "PINNING_TABLES",
    "AccessKeyRecord",
    "BlobRef",
    "CatalogMirrorError",
    "DatasetRecord",
    "DueRow",
    "HeldBlob",
    "HoldInfo",
    "InlineMove",
    "KeyVersion",
    "ModelAliasInUse",
    "OutboxEntry",
    "Outcome",
    "PendingWrite",
    "PinGone",
    "PlannedAction",
    "ReconcileReport",
    "RoleRecord",
    "SqliteCatalog",
    "TierProgress",
    "TierRecord",
    "TierUsage",
    "UserRecord",
    "VersionRecord",
    "VersionTaken",
    "VersioningChanged",
]
