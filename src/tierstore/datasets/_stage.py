"""Staging: a dataset version fetched ahead into a local directory, so loaders read it offline.

A staged directory (marked like a cache directory, ``_cache.MARKER``) holds, per version::

    packs/NAME@N/pack-000000.bin   the samples of rows [0, ROWS_PER_PACK), back to back in row order
    packs/NAME@N/pack-000000.crc   their CRC32Cs (uint32 little-endian, one per row)
    manifests/NAME@N.parquet       a copy of the manifest (with its tierstore.dataset metadata)
    manifests/NAME@N.json          written last, when every pack is in place: {"rows", "bytes", "staged_ns"}
    manifests/NAME.latest          "N", when staged as NAME (the latest version at staging time)

Packs, not a file per sample: a loader reads a staged sample as a slice of a memory-mapped pack
(offsets follow from the manifest's sizes) and checks its CRC32C — no open/read/close per
sample, which is what made a file per sample cost as much as plain local files. Loaders given
``cache_dir=<staged dir>`` take the manifest from there and make no source call at all; a
sample whose CRC fails is read from the source instead, never returned damaged. Staging is
resumable: each pack is written to a temp file and renamed into place with its CRCs; packs
already present are verified and kept, damaged ones fetched again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierstore.datasets._cache import MARKER, SampleCache
from tierstore.datasets._manifest import META_KEY, DatasetReadError, DatasetRef, Manifest, SampleSource

__all__ = ["ROWS_PER_PACK", "StageReport", "StagedPacks", "is_staged", "stage", "staged_manifest", "unstage"]


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


ROWS_PER_PACK = 4096  # 64 MiB of 16 KiB samples: few files, each mapped once per process
_CRC = "<u4"


def _pack_dir(dest: Path, ref: DatasetRef) -> Path:
    return dest / "packs" / str(ref)


def _pack_paths(dest: Path, ref: DatasetRef, k: int) -> tuple[Path, Path]:
    base = _pack_dir(dest, ref) / f"pack-{k:06d}"
    return base.with_suffix(".bin"), base.with_suffix(".crc")


def _pack_ok(bin_path: Path, crc_path: Path, sizes: Any) -> bool:
    """True when a pack holds exactly its rows' bytes and every CRC32C matches."""
    import numpy as np
    from awscrt.checksums import crc32c

    try:
        if bin_path.stat().st_size != int(sizes.sum()):
            return False
        crcs = np.fromfile(crc_path, dtype=_CRC)
        if len(crcs) != len(sizes):
            return False
        with open(bin_path, "rb") as f:
            return all(crc32c(f.read(int(size))) == int(crc) for size, crc in zip(sizes, crcs, strict=True))
    except OSError:
        return False


def stage(
    source: SampleSource,
    ref: DatasetRef | str,
    dest_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    batch_rows: int = 256,
) -> StageReport:
    """Fetch every sample of ``ref`` into packs in ``dest_dir`` (one ``read_rows`` call per
    ``batch_rows`` rows of a pack not already there), then the manifest copy and the completion
    record, in that order. ``progress``: a tqdm bar of bytes on stderr."""
    import numpy as np
    from awscrt.checksums import crc32c
    from tqdm import tqdm

    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, not {batch_rows}")
    asked = DatasetRef.parse(ref)
    manifest = source.open_manifest(asked)
    pinned = manifest.ref
    dest = Path(dest_dir)
    SampleCache(dest).ensure()  # the marker and tmp/: unstage recognises the directory
    _pack_dir(dest, pinned).mkdir(parents=True, exist_ok=True)
    sizes = manifest.sizes
    n = len(manifest)
    bytes_total = int(sizes.sum()) if n else 0
    rows_fetched = bytes_fetched = 0
    bar_args = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "file": sys.stderr}
    with tqdm(total=bytes_total, desc=f"stage {pinned}", disable=not progress, **bar_args) as bar:
        for k, first in enumerate(range(0, n, ROWS_PER_PACK)):
            last = min(n, first + ROWS_PER_PACK)
            bin_path, crc_path = _pack_paths(dest, pinned, k)
            pack_sizes = sizes[first:last]
            if _pack_ok(bin_path, crc_path, pack_sizes):
                bar.update(int(pack_sizes.sum()))
                continue
            tmp = dest / "tmp" / f"{bin_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            crcs = np.zeros(last - first, dtype=_CRC)
            try:
                with open(tmp, "wb") as f:
                    for start in range(first, last, batch_rows):
                        rows = list(range(start, min(last, start + batch_rows)))
                        got = 0
                        for pos, data in source.read_rows(pinned, rows):
                            row = rows[pos]
                            if pos != got or len(data) != int(sizes[row]):
                                raise DatasetReadError(
                                    row, 502, "SizeMismatch", f"read {len(data)} bytes, the manifest says {sizes[row]}"
                                )
                            f.write(data)
                            crcs[row - first] = crc32c(data)
                            got += 1
                            bar.update(len(data))
                        if got != len(rows):
                            raise RuntimeError(f"{type(source).__name__}.read_rows yielded {got} of {len(rows)} rows")
                        rows_fetched += got
                        bytes_fetched += int(sizes[rows].sum())
                crc_tmp = tmp.with_name(tmp.name + ".crc")
                crcs.tofile(crc_tmp)
                crc_tmp.replace(crc_path)  # the CRCs first: a pack file is only ever beside its own
                tmp.replace(bin_path)
            finally:
                tmp.unlink(missing_ok=True)
    _publish(dest, manifest, asked, bytes_total)
    return StageReport(pinned, dest, n, bytes_total, rows_fetched, bytes_fetched)


class StagedPacks:
    """Reads the samples of a completely staged version from its packs (memory-mapped once per
    process). Picklable: a DataLoader worker maps the packs itself."""

    def __init__(self, dest_dir: str | os.PathLike[str], manifest: Manifest) -> None:
        import numpy as np

        self.dest = Path(dest_dir)
        self.ref = manifest.ref
        sizes = manifest.sizes.astype(np.int64)
        self.sizes = sizes
        self.starts = np.concatenate(([0], np.cumsum(sizes)))  # global byte offset of each row
        self._maps: dict[int, Any] = {}
        self._crcs: dict[int, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"dest": self.dest, "ref": self.ref, "sizes": self.sizes, "starts": self.starts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._maps, self._crcs, self._pid = {}, {}, os.getpid()

    def _pack(self, k: int) -> tuple[Any, Any]:
        import mmap

        import numpy as np

        if self._pid != os.getpid():
            self._maps, self._crcs, self._pid = {}, {}, os.getpid()
        found = self._maps.get(k)
        if found is None:
            bin_path, crc_path = _pack_paths(self.dest, self.ref, k)
            with open(bin_path, "rb") as f:
                found = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
            self._maps[k] = found
            self._crcs[k] = np.fromfile(crc_path, dtype=_CRC).tolist()
        return found, self._crcs[k]

    def read(self, rows: Sequence[int]) -> list[bytes | None]:
        """The bytes of ``rows``; None for a row whose bytes fail their CRC32C (read it elsewhere)."""
        from awscrt.checksums import crc32c

        out: list[bytes | None] = []
        starts = self.starts
        for row in rows:
            k = row // ROWS_PER_PACK
            data, crcs = self._pack(k)
            base = int(starts[k * ROWS_PER_PACK])
            a, b = int(starts[row]) - base, int(starts[row + 1]) - base
            sample = data[a:b]
            out.append(sample if len(sample) == b - a and crc32c(sample) == crcs[row - k * ROWS_PER_PACK] else None)
        return out


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
    ``verify``: also read every pack and check every sample's CRC32C (slow)."""
    dest = Path(dest_dir)
    manifest = staged_manifest(dest, ref)
    if manifest is None:
        return False
    if not verify:
        return True
    sizes = manifest.sizes
    return all(
        _pack_ok(*_pack_paths(dest, manifest.ref, k), sizes[first : first + ROWS_PER_PACK])
        for k, first in enumerate(range(0, len(manifest), ROWS_PER_PACK))
    )


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
