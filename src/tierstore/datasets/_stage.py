"""Staging: a dataset version fetched ahead into a local directory, so loaders read it offline.

A staged directory is a cache directory (``_cache.py``: same sample files, same byte counter)
plus, under ``manifests/``::

    NAME@N.parquet        a copy of the manifest (with its tierstore.dataset metadata)
    NAME@N.json           written last, when every sample is in place: {"rows", "bytes", "staged_ns"}
    NAME.latest           "N", when staged as NAME (the latest version at staging time)

Loaders given ``cache_dir=<staged dir>`` take the manifest from there and find every sample, so
they make no source call at all. Staging is resumable: files already present and intact are
skipped (a killed stage loses at most the file being written), damaged ones are fetched again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tierstore.datasets._cache import MARKER, SampleCache, sample_ids
from tierstore.datasets._manifest import META_KEY, DatasetReadError, DatasetRef, Manifest, SampleSource

__all__ = ["StageReport", "is_staged", "stage", "staged_manifest", "unstage"]


@dataclass(frozen=True, slots=True)
class StageReport:
    """What ``stage`` did: the pinned ``ref``, the dataset's size, and what it had to fetch (the
    rest was already staged)."""

    ref: DatasetRef
    directory: Path
    rows: int
    bytes_total: int
    rows_fetched: int
    bytes_fetched: int

    @property
    def rows_skipped(self) -> int:
        return self.rows - self.rows_fetched


def stage(
    source: SampleSource,
    ref: DatasetRef | str,
    dest_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    batch_rows: int = 256,
) -> StageReport:
    """Fetch every sample of ``ref`` into ``dest_dir`` (one ``read_rows`` call per ``batch_rows``
    rows not already there), then the manifest copy and the completion record, in that order.
    ``progress``: a tqdm bar of bytes on stderr."""
    from tqdm import tqdm

    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, not {batch_rows}")
    asked = DatasetRef.parse(ref)
    manifest = source.open_manifest(asked)
    pinned = manifest.ref
    dest = Path(dest_dir)
    cache = SampleCache(dest)
    cache.ensure()
    sizes = manifest.sizes
    n = len(manifest)
    bytes_total = int(sizes.sum()) if n else 0
    rows_fetched = bytes_fetched = 0
    bar_args = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "file": sys.stderr}
    with tqdm(total=bytes_total, desc=f"stage {pinned}", disable=not progress, **bar_args) as bar:
        for start in range(0, n, batch_rows):
            rows = list(range(start, min(n, start + batch_rows)))
            ids = sample_ids(manifest, rows)
            fetch: list[int] = []  # rows to fetch: one per missing sample id
            seen: set[str] = set()
            for row, sid in zip(rows, ids, strict=True):
                if sid is None:
                    raise ValueError(f"{pinned} row {row} has no loc: its bytes have no identity to stage under")
                if sid in seen or cache.contains(sid, int(sizes[row])):
                    bar.update(int(sizes[row]))
                    continue
                seen.add(sid)
                fetch.append(row)
            if not fetch:
                continue
            for pos, data in source.read_rows(pinned, fetch):
                row = fetch[pos]
                if len(data) != int(sizes[row]):
                    raise DatasetReadError(
                        row, 502, "SizeMismatch", f"read {len(data)} bytes, the manifest says {int(sizes[row])}"
                    )
                sid = ids[row - start]
                assert sid is not None
                admitted = cache.put(sid, data)
                assert admitted, "an unbounded cache admits every sample"
                rows_fetched += 1
                bytes_fetched += len(data)
                bar.update(len(data))
    _publish(dest, manifest, asked, bytes_total)
    return StageReport(pinned, dest, n, bytes_total, rows_fetched, bytes_fetched)


def _publish(dest: Path, manifest: Manifest, asked: DatasetRef, bytes_total: int) -> None:
    """Manifest copy, then the completion record, then the NAME pointer: each an atomic rename."""
    import pyarrow.parquet as pq

    pinned = manifest.ref
    mdir = dest / "manifests"
    mdir.mkdir(exist_ok=True)
    table = manifest.table
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(manifest.info).encode()
    tmp = dest / "tmp" / f"manifest.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
    tmp.replace(mdir / f"{pinned}.parquet")
    record = {"rows": len(manifest), "bytes": bytes_total, "staged_ns": time.time_ns()}
    _write_atomic(dest, mdir / f"{pinned}.json", json.dumps(record) + "\n")
    if asked.version is None:
        _write_atomic(dest, mdir / f"{pinned.name}.latest", f"{pinned.version}\n")


def _write_atomic(dest: Path, path: Path, text: str) -> None:
    tmp = dest / "tmp" / f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(text)
    tmp.replace(path)


def _staged_version(dest: Path, ref: DatasetRef) -> int | None:
    if ref.version is not None:
        return ref.version
    try:
        return int((dest / "manifests" / f"{ref.name}.latest").read_text())
    except (FileNotFoundError, ValueError):
        return None


def is_staged(dest_dir: str | os.PathLike[str], ref: DatasetRef | str, *, verify: bool = False) -> bool:
    """True when ``ref`` was staged completely into ``dest_dir`` (``NAME``: staged as ``NAME``).
    ``verify``: also read and check every sample file (slow; a damaged one is removed)."""
    dest = Path(dest_dir)
    manifest = staged_manifest(dest, ref)
    if manifest is None:
        return False
    if not verify:
        return True
    cache = SampleCache(dest)
    sizes = manifest.sizes.tolist()
    ids = sample_ids(manifest, range(len(manifest)))
    return all(sid is not None and cache.contains(sid, size) for sid, size in zip(ids, sizes, strict=True))


def staged_manifest(dest_dir: str | os.PathLike[str], ref: DatasetRef | str) -> Manifest | None:
    """The manifest of ``ref`` if it is completely staged in ``dest_dir``, else None."""
    dest = Path(dest_dir)
    parsed = DatasetRef.parse(ref)
    version = _staged_version(dest, parsed)
    if version is None:
        return None
    pinned = DatasetRef(parsed.name, version)
    if not (dest / "manifests" / f"{pinned}.json").exists():
        return None
    manifest = Manifest.from_parquet((dest / "manifests" / f"{pinned}.parquet").read_bytes())
    assert manifest.ref == pinned, f"{dest} holds {manifest.ref} under the name of {pinned}"
    return manifest


def unstage(dest_dir: str | os.PathLike[str]) -> None:
    """Remove a staged (or cache) directory. Refuses a directory without the cache marker, so a
    wrong path cannot delete unrelated files; a missing directory is already unstaged."""
    dest = Path(dest_dir)
    if not dest.exists():
        return
    if not (dest / MARKER).is_file():
        raise ValueError(f"{dest} is not a tierstore stage or cache directory (no {MARKER}): not removing it")
    shutil.rmtree(dest)
