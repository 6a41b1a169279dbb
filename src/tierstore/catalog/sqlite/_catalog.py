"""SQLite catalog: the embedded default, ``SqliteCatalog``, composed of its parts.

``SqliteDb`` (``_db.py``) is the database: one file in WAL mode with ``synchronous=FULL`` (or one
copy per drive, ``_mirror.py``), readers inline on the caller's thread, and one writer thread that
runs write jobs as group commits. Each resource's reads and write jobs are a mixin beside it:
buckets (``_buckets.py``), versions (``_versions.py``), listings and metadata queries
(``_listing.py``), blob references, trash and inline bodies (``_blobs.py``), multipart uploads
(``_uploads.py``), datasets, models and aliases (``_datasets.py``), health and usage
(``_stats.py``), identities, KMS keys, SSE, tiers, tier data, the lifecycle due index, hot copies
and the mover's progress. The schema and its migrations are ``_schema.py``; the rules both
engines share (documents, row decoding) are ``catalog/_rules.py``.
"""

from __future__ import annotations

from tierstore.catalog.sqlite._blobs import BlobTables
from tierstore.catalog.sqlite._buckets import BucketTables
from tierstore.catalog.sqlite._console import ConsoleSessionTables
from tierstore.catalog.sqlite._datasets import DatasetTables
from tierstore.catalog.sqlite._db import SqliteDb
from tierstore.catalog.sqlite._hot import HotTables
from tierstore.catalog.sqlite._identity import IdentityTables
from tierstore.catalog.sqlite._kms import KmsTables
from tierstore.catalog.sqlite._leases import LeaseTables
from tierstore.catalog.sqlite._lifecycle import LifecycleTables
from tierstore.catalog.sqlite._listing import ListingTables
from tierstore.catalog.sqlite._sse import SseTables
from tierstore.catalog.sqlite._stats import StatsTables
from tierstore.catalog.sqlite._tier_data import TierDataTables
from tierstore.catalog.sqlite._tier_progress import TierProgressTables
from tierstore.catalog.sqlite._tiers import TierTables
from tierstore.catalog.sqlite._uploads import UploadTables
from tierstore.catalog.sqlite._versions import VersionTables

__all__ = ["SqliteCatalog"]


class SqliteCatalog(
    SqliteDb,  # first: its connections and writer are what every part's ``_reader``/``_write`` means
    BucketTables,
    VersionTables,
    ListingTables,
    BlobTables,
    UploadTables,
    DatasetTables,
    StatsTables,
    IdentityTables,
    KmsTables,
    SseTables,
    TierTables,
    TierDataTables,
    LifecycleTables,
    HotTables,
    TierProgressTables,
    LeaseTables,
    ConsoleSessionTables,
):
    """All metadata in one SQLite file: ``SqliteCatalog(path)``; or mirrored on every drive of a
    set: ``SqliteCatalog.on_drives(drives)`` (catalog/sqlite/_mirror.py). ``close()`` when done.

    ``max_batch`` caps how many queued write jobs share one transaction (group commit)."""
