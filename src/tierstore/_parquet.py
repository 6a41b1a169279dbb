"""Reading a Parquet manifest from bytes, the one way every part of tierstore does it.

``pq.ParquetFile(...).read(use_threads=False)``, not ``pq.read_table``: since pyarrow 15
``read_table`` goes through the dataset scanner, which runs its reads on pyarrow's IO thread pool
whatever ``use_threads`` says. With pyarrow 26 a process that had used those pools ended with
SIGABRT ("terminate called without an active exception") about once in 6 exits with threads
on, and about once in 200 under load with ``use_threads=False`` alone
(tests/datasets/test_manifest.py). The plain Parquet reader starts no thread at all; a manifest
of 1M rows reads as fast either way (0.25-0.44 s here).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = ["SeekableReader", "head_row_groups", "read_parquet"]


class SeekableReader(io.RawIOBase):
    """A read-only, seekable file of ``size`` bytes for pyarrow's Parquet reader, which seeks to
    the footer and then to the row groups it needs; a subclass fills ``readinto`` from wherever
    the bytes are (ranged reads of a blob, ranged GETs)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size, self._pos = size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos


def read_parquet(data: bytes, columns: Sequence[str] | None = None) -> pa.Table:
    """The table in ``data`` (all columns, or ``columns``), read on the calling thread only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(pa.BufferReader(data))
    return reader.read(columns=list(columns) if columns is not None else None, use_threads=False)


def head_row_groups(meta: pq.FileMetaData, rows: int) -> list[int]:
    """The row groups the first ``rows`` rows of a Parquet file are in (its metadata ``meta``):
    a preview of a million-row manifest decodes one row group of 64k rows, not all of them."""
    groups: list[int] = []
    seen = 0
    for i in range(meta.num_row_groups):
        if seen >= rows:
            break
        groups.append(i)
        seen += meta.row_group(i).num_rows
    return groups
