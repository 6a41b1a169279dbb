"""Dataset references, manifests and the small protocol loaders read samples through.

A manifest is one Parquet file (docs/datasets.md). Row ``i`` is sample ``i``; its columns:

- ``bucket``, ``key``, ``version_id``, ``etag``: the object version the sample was taken from;
- ``offset`` (null: the whole object) and ``size``: the sample's bytes within that version
  (a member of a tar shard is a range of the shard object);
- ``member``: the member name inside a shard (null for whole objects);
- ``label``: the sample's label as text (null when the dataset has none);
- ``loc``: where the pinned bytes live, opaque to clients (the server reads through it, loaders
  use it as the cache identity of the sample's bytes);
- ``meta.<name>`` / ``tag.<name>``: chosen metadata columns, text.

The file's key-value metadata holds ``tierstore.dataset`` (JSON: name, version, created_ns,
source, lineage).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tierstore.types import MANIFEST_COLUMNS, DatasetRef
from tierstore.types import MANIFEST_META_KEY as META_KEY

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "MANIFEST_COLUMNS",
    "META_KEY",
    "DatasetReadError",
    "DatasetRef",
    "Manifest",
    "ManifestDiff",
    "SampleSource",
]


class DatasetReadError(Exception):
    """A sample could not be read: ``row`` (manifest row), S3 ``code`` and HTTP ``status``."""

    def __init__(self, row: int, status: int, code: str, message: str) -> None:
        super().__init__(f"sample {row}: {code} ({status}): {message}")
        self.row = row
        self.status = status
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[DatasetReadError], tuple[int, int, str, str]]:
        # Pickled across processes (DataLoader workers): rebuilt from the same four fields.
        return (type(self), (self.row, self.status, self.code, self.message))


class Manifest:
    """An opened manifest: a pyarrow Table plus the dataset's record. Immutable."""

    def __init__(self, table: pa.Table, info: dict[str, Any]) -> None:
        self.table = table
        self.info = info
        self.ref = DatasetRef(info["name"], int(info["version"]))
        self._sizes: Any = None

    @classmethod
    def from_parquet(cls, data: bytes) -> Manifest:
        from tierstore._parquet import read_parquet  # no thread pool: see its docstring

        table = read_parquet(data)
        meta = (table.schema.metadata or {}).get(META_KEY)
        if meta is None:
            raise ValueError("not a tierstore manifest (no tierstore.dataset metadata)")
        return cls(table, json.loads(meta))

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def column(self, name: str) -> list[Any]:
        return list(self.table.column(name).to_pylist())

    @property
    def sizes(self) -> Any:
        """Sample sizes as a numpy int64 array (cached)."""
        if self._sizes is None:
            self._sizes = self.table.column("size").to_numpy()
        return self._sizes

    def row(self, i: int) -> dict[str, Any]:
        return {name: self.table.column(name)[i].as_py() for name in self.table.column_names}

    def diff(self, newer: Manifest) -> ManifestDiff:
        """What changed from this manifest to ``newer``, by sample identity (bucket, key, member):
        added, removed, and changed (another version id or ETag); each as (bucket, key, member).
        Column-wise (``tierstore._manifest_diff``): no Python object per unchanged row."""
        from tierstore._manifest_diff import diff_tables

        d = diff_tables(self.table, newer.table)
        return ManifestDiff(d.added_keys, d.removed_keys, d.changed_keys, d.unchanged)


@dataclass(frozen=True, slots=True)
class ManifestDiff:
    """``Manifest.diff``: samples as (bucket, key, member or "")."""

    added: list[tuple[str, str, str]]
    removed: list[tuple[str, str, str]]
    changed: list[tuple[str, str, str]]
    unchanged: int


@runtime_checkable
class SampleSource(Protocol):
    """What loaders, staging and derive read through; satisfied by a remote server (HTTP) and by
    the embedded engine. Implementations are picklable and open their connections lazily, per
    process (torch DataLoader workers fork or spawn)."""

    def open_manifest(self, ref: DatasetRef | str) -> Manifest:
        """The manifest of ``ref`` (``NAME``: the latest version). Never LISTs."""
        ...

    def read_rows(self, ref: DatasetRef, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        """The bytes of manifest rows ``rows`` (any order, repeats allowed), yielded in request
        order as ``(position in rows, bytes)``. A row that cannot be read raises DatasetReadError."""
        ...
