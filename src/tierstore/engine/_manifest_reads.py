"""Reading parts of a stored manifest: its head (the first rows) and chosen columns, by ranged
reads of its blob, and diffs between two manifests (docs/datasets.md "Previews and diffs").

A manifest of 1,000,000 samples is ~32 MiB of Parquet in 16 row groups. A preview of 20 rows
needs the footer and the first row group (~2 MiB): ``read_head`` fetches the last 64 KiB (the
footer; more if it is longer), then only the byte range of the row groups the rows are in. A
diff needs the identity and state columns (``DIFF_COLUMNS``), not the locations, labels or
metadata columns: ``read_columns`` fetches only those column chunks (neighbouring ranges read
together). The fetched ranges are handed to pyarrow's Parquet reader as a sparse file; a read
outside them (a file laid out otherwise than planned) falls back to the whole blob.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tierstore._manifest_diff import DIFF_COLUMNS, TableDiff, diff_tables
from tierstore._parquet import SeekableReader, head_row_groups
from tierstore.catalog import DatasetRecord
from tierstore.types import MANIFEST_HEAD_ROWS_MAX

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tierstore.engine._service import ObjectService

__all__ = ["DIFF_KEYS_MAX", "HEAD_ROWS_MAX", "DiffNotReady", "ManifestReads"]

HEAD_ROWS_MAX = MANIFEST_HEAD_ROWS_MAX  # rows a head read answers at most
DIFF_KEYS_MAX = 1000  # samples of each kind a diff lists at most (its counts are exact)
_TAIL = 64 * 1024  # pyarrow's first read of a Parquet footer
_GAP = 64 * 1024  # column chunks closer than this are fetched in one range
_CACHED_DIFFS = 16


class DiffNotReady(Exception):
    """``ManifestReads.diff(..., wait=S)``: the diff is still being computed after ``S`` seconds
    (it goes on in the background; ask again)."""


class _Missing(Exception):
    """The Parquet reader asked for bytes that were not fetched."""


class _Sparse(SeekableReader):
    """A read-only file of ``size`` bytes of which only some ranges are known."""

    def __init__(self, size: int, ranges: dict[int, bytes]) -> None:
        super().__init__(size)
        self._starts = sorted(ranges)
        self._ranges = ranges

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        i = bisect.bisect_right(self._starts, self._pos) - 1
        if i < 0:
            raise _Missing(self._pos)
        start = self._starts[i]
        data = self._ranges[start]
        if end > start + len(data):
            raise _Missing(self._pos)
        out = data[self._pos - start : end - start]
        self._pos = end
        return out

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _chunk_range(rg: Any, column: int) -> tuple[int, int]:
    """The byte range [start, end) of column chunk ``column`` of row group metadata ``rg``."""
    col = rg.column(column)
    start = col.data_page_offset
    if col.has_dictionary_page and 0 < col.dictionary_page_offset < start:
        start = col.dictionary_page_offset
    return start, start + col.total_compressed_size


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start - out[-1][1] <= _GAP:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


class ManifestReads:
    """The head, columns and diffs of stored manifests (one per ``DatasetService``)."""

    def __init__(self, service: ObjectService) -> None:
        self.service = service
        # Manifests never change: a diff is remembered by the two manifest blobs it compared
        # (a deleted and re-made version has another blob), not by version numbers.
        self._diffs: dict[tuple[str, str], TableDiff] = {}
        self._computing: dict[tuple[str, str], asyncio.Task[TableDiff]] = {}

    async def _range(self, record: DatasetRecord, start: int, end: int) -> bytes:
        blobs = self.service.blobs
        return b"".join([c async for c in await blobs.get(record.manifest_blob, start, end - start)])

    async def _whole(self, record: DatasetRecord) -> bytes:
        return await self._range(record, 0, record.manifest_bytes)

    async def _footer(self, record: DatasetRecord) -> tuple[dict[int, bytes], pq.FileMetaData]:
        """The fetched tail (what pyarrow reads first) and the file's metadata."""
        import pyarrow.parquet as pq

        size = record.manifest_bytes
        start = max(0, size - _TAIL)
        tail = await self._range(record, start, size)
        footer = int.from_bytes(tail[-8:-4], "little") + 8
        if footer > len(tail) and footer <= size:  # a footer longer than pyarrow's first read
            start = size - footer
            tail = await self._range(record, start, size)
        ranges = {start: tail}
        meta = await asyncio.to_thread(lambda: pq.ParquetFile(_Sparse(size, ranges)).metadata)
        return ranges, meta

    async def _read(
        self,
        record: DatasetRecord,
        fetched: tuple[dict[int, bytes], pq.FileMetaData],
        groups: Sequence[int],
        columns: Sequence[str] | None,
    ) -> pa.Table:
        """Row groups ``groups`` (columns ``columns``, None: all) of the manifest whose footer
        ``_footer`` fetched, fetching only their column chunks."""
        import pyarrow.parquet as pq

        ranges, meta = fetched
        schema = meta.schema.to_arrow_schema()
        names = schema.names if columns is None else [c for c in columns if c in schema.names]
        wanted = [schema.names.index(c) for c in names]
        spans = [_chunk_range(meta.row_group(g), c) for g in groups for c in wanted]
        for start, end in _coalesce(spans):
            ranges[start] = await self._range(record, start, end)
        size = record.manifest_bytes

        def decode(file: Any) -> pa.Table:
            reader = pq.ParquetFile(file)
            if not groups:
                return reader.schema_arrow.empty_table().select(names)
            return reader.read_row_groups(list(groups), columns=names, use_threads=False)

        try:
            return await asyncio.to_thread(decode, _Sparse(size, ranges))
        except (_Missing, OSError):  # laid out otherwise than planned: read it whole
            import pyarrow as pa

            data = await self._whole(record)
            return await asyncio.to_thread(decode, pa.BufferReader(data))

    async def head(self, record: DatasetRecord, rows: int) -> pa.Table:
        """The first ``rows`` rows of the manifest of ``record`` (every column): the footer
        and the row groups they are in are all that is fetched and decoded."""
        fetched = await self._footer(record)
        table = await self._read(record, fetched, head_row_groups(fetched[1], rows), None)
        return table.slice(0, rows)

    async def columns(self, record: DatasetRecord, columns: Sequence[str]) -> pa.Table:
        """Columns ``columns`` of every row of the manifest of ``record`` (no other column chunk
        is fetched); a column the manifest lacks is left out."""
        fetched = await self._footer(record)
        return await self._read(record, fetched, range(fetched[1].num_row_groups), columns)

    async def object_columns(self, *records: DatasetRecord) -> list[tuple[Any, Any]]:
        """The bucket and key of every row of each of ``records`` (what a caller must be allowed
        to read to see them): two Arrow columns per record, row order, nothing decoded."""
        tables = [await self.columns(record, ("bucket", "key")) for record in records]
        return [(t.column("bucket"), t.column("key")) for t in tables]

    async def diff(
        self, older: DatasetRecord, newer: DatasetRecord, limit: int, *, wait: float | None = None
    ) -> TableDiff:
        """What changed from ``older`` to ``newer``: exact counts and at most ``limit`` samples
        of each kind (``limit`` <= ``DIFF_KEYS_MAX``). Computed once per pair of manifests in
        this process (``_CACHED_DIFFS`` remembered), off the event loop, by one task that every
        caller asking for the same pair meanwhile shares. ``wait``: raise ``DiffNotReady`` when
        the diff is not done within so many seconds (the task goes on; a later call finds it)."""
        assert 0 <= limit <= DIFF_KEYS_MAX
        key = (older.manifest_blob, newer.manifest_blob)
        found = self._diffs.get(key)
        if found is not None:
            self._remember(key, found)  # the newest last
            return found.limited(limit)
        task = self._computing.get(key)
        if task is None:  # _compute remembers what it found
            task = asyncio.create_task(self._compute(key, older, newer))
            self._computing[key] = task
        if wait is not None:
            await asyncio.wait((task,), timeout=wait)
            if not task.done():
                raise DiffNotReady()
        return (await asyncio.shield(task)).limited(limit)  # a caller gone does not cancel the others' diff

    async def _compute(self, key: tuple[str, str], older: DatasetRecord, newer: DatasetRecord) -> TableDiff:
        try:
            a, b = await asyncio.gather(self.columns(older, DIFF_COLUMNS), self.columns(newer, DIFF_COLUMNS))
            found = await asyncio.to_thread(diff_tables, a, b, DIFF_KEYS_MAX)
        finally:
            del self._computing[key]
        self._remember(key, found)
        return found

    def _remember(self, key: tuple[str, str], found: TableDiff) -> None:
        self._diffs.pop(key, None)
        self._diffs[key] = found  # the newest last
        while len(self._diffs) > _CACHED_DIFFS:
            del self._diffs[next(iter(self._diffs))]
