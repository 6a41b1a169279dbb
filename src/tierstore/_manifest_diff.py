"""The difference between two dataset manifests, computed column-wise with pyarrow.

A sample's identity is (bucket, key, member or ""); its state is (version_id, etag). Between an
older manifest A and a newer B a sample is *added* (in B only), *removed* (in A only), *changed*
(in both, another state) or *unchanged*. A manifest may name one identity more than once: like
a dict built row by row, its first row places it and its last row gives its state.

Only the identity and state columns are read, and no Python object is made per row: the
identities are joined into one string column (``bucket\\0len(key)\\0key\\0member``: the key's
byte length keeps a key holding NUL apart from a member), B's rows are looked up in a hash
table of A's (``pc.index_in``) and the states compared by the positions found. A 1,000,000 x
1,000,000 diff takes a few hundred milliseconds (docs/benchmarks.md); the per-row Python dicts
it replaced took seconds. Used by the server (``DatasetService.diff``) and by ``Manifest.diff``
(the CLI and SDK); below both (``engine/`` may not import ``datasets/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DIFF_COLUMNS", "Sample", "TableDiff", "diff_tables"]

DIFF_COLUMNS = ("bucket", "key", "member", "version_id", "etag")  # what a diff reads of a manifest
Sample = tuple[str, str, str]  # (bucket, key, member or "")


@dataclass(frozen=True, slots=True)
class TableDiff:
    """Exact counts of each kind, and the first ``limit`` samples of each in manifest order
    (added and changed in B's order, removed in A's)."""

    added: int
    removed: int
    changed: int
    unchanged: int
    added_keys: list[Sample]
    removed_keys: list[Sample]
    changed_keys: list[Sample]

    def to_json(self) -> dict[str, Any]:
        def keys(samples: list[Sample]) -> list[dict[str, str]]:
            return [{"bucket": b, "key": k, "member": m} for b, k, m in samples]

        return {
            "added": self.added, "removed": self.removed, "changed": self.changed, "unchanged": self.unchanged,
            "added_keys": keys(self.added_keys), "removed_keys": keys(self.removed_keys),
            "changed_keys": keys(self.changed_keys),
        }  # fmt: skip

    def limited(self, limit: int) -> TableDiff:
        """The same counts with at most ``limit`` samples of each kind."""
        return TableDiff(self.added, self.removed, self.changed, self.unchanged, self.added_keys[:limit],
                         self.removed_keys[:limit], self.changed_keys[:limit])  # fmt: skip


def _identities(table: pa.Table) -> Any:
    """One string per row naming its sample: the key alone when the table has one bucket and no
    member (a manifest made from a prefix or a query), else ``bucket\0len(key)\0key\0member``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = table.column("key")
    return pc.binary_join_element_wise(
        table.column("bucket"), pc.cast(pc.binary_length(key), pa.string()), key,
        pc.fill_null(table.column("member"), ""), "\x00",
    )  # fmt: skip


def _plain(table: pa.Table) -> str | None:
    """The one bucket of ``table`` when its rows have no member (identity = key), else None."""
    import pyarrow.compute as pc

    member = table.column("member")
    if table.num_rows == 0 or member.null_count != len(member):
        return None
    bounds = pc.min_max(table.column("bucket"))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return low if low == high else None


class _Side:
    """One manifest's rows as codes of their identities (shared with the other side), and per
    code the row that names it first and the row that gives its state (the last; -1: none)."""

    def __init__(self, table: pa.Table, codes: Any, distinct: int) -> None:
        import numpy as np

        n = len(codes)
        self.table = table
        self.codes = codes
        self.first = np.full(distinct, -1, dtype=np.int64)
        self.last = np.full(distinct, -1, dtype=np.int64)
        rows = np.arange(n, dtype=np.int64)
        counts = np.bincount(codes, minlength=distinct)
        if n == 0 or counts.max() <= 1:  # each identity once (the common case)
            self.first[codes] = rows
            self.last[codes] = rows
        else:
            order = np.argsort(codes, kind="stable")  # rows of each identity together, in row order
            by_code = codes[order]
            starts = np.flatnonzero(np.r_[True, by_code[1:] != by_code[:-1]])
            ends = np.r_[starts[1:], n] - 1
            self.first[by_code[starts]] = order[starts]
            self.last[by_code[starts]] = order[ends]
        self.present = self.first >= 0
        self.is_first = self.first[codes] == rows  # a row that places its identity

    def samples(self, mask: Any, limit: int | None) -> list[Sample]:
        """(bucket, key, member) of the first ``limit`` rows where ``mask`` is true."""
        import numpy as np
        import pyarrow as pa

        picked = np.flatnonzero(mask)
        if limit is not None:
            picked = picked[:limit]
        got = self.table.select(["bucket", "key", "member"]).take(pa.array(picked, type=pa.int64()))
        buckets, keys, members = (got.column(c).to_pylist() for c in ("bucket", "key", "member"))
        return [(b, k, m or "") for b, k, m in zip(buckets, keys, members, strict=True)]


def _differs(a: Any, b: Any) -> Any:
    """Element-wise ``a != b`` as Python compares them (null equals only null), as numpy bools."""
    import pyarrow.compute as pc

    ne = pc.fill_null(pc.not_equal(a, b), False)
    one_null = pc.xor(pc.is_null(a), pc.is_null(b))
    return pc.or_(ne, one_null).to_numpy(zero_copy_only=False)


def diff_tables(older: pa.Table, newer: pa.Table, limit: int | None = None) -> TableDiff:
    """What changed from manifest table ``older`` to ``newer`` (each with at least the columns
    ``DIFF_COLUMNS``): exact counts, and at most ``limit`` samples of each kind (None: all).

    Both sides' identities are dictionary-encoded together (one hash pass over both), so every
    later step is integer work in numpy: which codes each side has, the row placing each and
    the row giving its state; only the states of identities in both are compared as strings."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    plain_a, plain_b = _plain(older), _plain(newer)
    if plain_a is not None and plain_a == plain_b:
        ids_a, ids_b = older.column("key"), newer.column("key")
    else:
        ids_a, ids_b = _identities(older), _identities(newer)
    encoded = pc.dictionary_encode(pa.chunked_array([*ids_a.chunks, *ids_b.chunks], type=pa.string()))
    codes = np.concatenate([c.indices.to_numpy() for c in encoded.chunks]) if encoded.num_chunks else np.array([])
    codes = codes.astype(np.int64)
    distinct = int(codes.max()) + 1 if len(codes) else 0
    n_a = older.num_rows
    a, b = _Side(older, codes[:n_a], distinct), _Side(newer, codes[n_a:], distinct)
    added = b.is_first & ~a.present[b.codes]
    removed = a.is_first & ~b.present[a.codes]
    both = np.flatnonzero(a.present & b.present)  # codes in both, compared by their last rows
    changed = np.zeros(newer.num_rows, dtype=bool)
    if len(both):
        rows_a, rows_b = pa.array(a.last[both]), pa.array(b.last[both])
        ne = np.zeros(len(both), dtype=bool)
        for column in ("version_id", "etag"):
            ne |= _differs(older.column(column).take(rows_a), newer.column(column).take(rows_b))
        changed[b.first[both[ne]]] = True
    n_added, n_removed, n_changed = int(added.sum()), int(removed.sum()), int(changed.sum())
    return TableDiff(
        added=n_added,
        removed=n_removed,
        changed=n_changed,
        unchanged=len(both) - n_changed,
        added_keys=b.samples(added, limit) if n_added else [],
        removed_keys=a.samples(removed, limit) if n_removed else [],
        changed_keys=b.samples(changed, limit) if n_changed else [],
    )
