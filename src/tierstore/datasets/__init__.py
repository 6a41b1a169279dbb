"""Datasets: immutable, versioned manifests of samples, and the sources loaders read them through
(docs/datasets.md). ``RemoteSource`` reads from a server, ``EmbeddedSource`` from a store's
directory in-process; both satisfy ``SampleSource``."""

from tierstore.datasets._manifest import MANIFEST_COLUMNS, DatasetReadError, DatasetRef, Manifest, SampleSource
from tierstore.datasets._sources import EmbeddedSource, RemoteSource

__all__ = [
    "MANIFEST_COLUMNS",
    "DatasetReadError",
    "DatasetRef",
    "EmbeddedSource",
    "Manifest",
    "RemoteSource",
    "SampleSource",
]
