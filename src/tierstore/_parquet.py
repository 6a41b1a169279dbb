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

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["read_parquet", "read_parquet_head"]


def read_parquet(data: bytes, columns: Sequence[str] | None = None) -> pa.Table:
    """The table in ``data`` (all columns, or ``columns``), read on the calling thread only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(pa.BufferReader(data))
    return reader.read(columns=list(columns) if columns is not None else None, use_threads=False)


def read_parquet_head(data: bytes, rows: int) -> pa.Table:
    """The first ``rows`` rows of the table in ``data``, decoding only the row groups they are in
    (a preview of a million-row manifest decodes one row group of 64k rows, not all of them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(pa.BufferReader(data))
    groups: list[int] = []
    seen = 0
    for i in range(reader.num_row_groups):
        if seen >= rows:
            break
        groups.append(i)
        seen += reader.metadata.row_group(i).num_rows
    table = reader.read_row_groups(groups, use_threads=False) if groups else reader.schema_arrow.empty_table()
    return table.slice(0, rows)
