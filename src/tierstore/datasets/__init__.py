"""Datasets: immutable, versioned manifests of samples, and the sources loaders read them through
(docs/datasets.md). ``RemoteSource`` reads from a server, ``EmbeddedSource`` from a store's
directory in-process; both satisfy ``SampleSource``."""

from tierstore.datasets._cache import CacheStats, SampleCache, read_samples
from tierstore.datasets._derive import DeriveError, DeriveReport, derive
from tierstore.datasets._manifest import MANIFEST_COLUMNS, DatasetReadError, DatasetRef, Manifest, SampleSource
from tierstore.datasets._sources import EmbeddedSource, RemoteSource
from tierstore.datasets._stage import StageReport, is_staged, stage, staged_manifest, unstage

__all__ = [
    "MANIFEST_COLUMNS",
    "CacheStats",
    "DatasetReadError",
    "DatasetRef",
    "DeriveError",
    "DeriveReport",
    "EmbeddedSource",
    "Manifest",
    "RemoteSource",
    "SampleCache",
    "SampleSource",
    "StageReport",
    "derive",
    "is_staged",
    "read_samples",
    "stage",
    "staged_manifest",
    "unstage",
]
