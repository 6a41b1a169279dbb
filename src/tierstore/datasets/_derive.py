"""Derived ("chipped") datasets: a transform mapped over a dataset version's samples in a process
pool, its outputs written as objects or as WebDataset tar shards, then published as a new dataset
with a lineage record pointing at the source (``tierstore dataset derive``, docs/datasets.md).

The transform contract
----------------------
``transform`` names a function as ``"module:function"`` (``module:Class.method`` works too). The
module is imported by name in every pool worker, so it must be importable there: on ``sys.path``
(workers inherit the parent's, under fork and spawn alike), not defined in an interactive session.

The function is called once per source sample with a fresh dict::

    {"index": int,          # the sample's row in SRC@N
     "key": str,            # the object key it was read from (a shard's key for a shard member)
     "data": bytes,         # the sample's bytes
     "label": str | None,   # its label
     "member": str | None}  # its member name inside a shard, None for a whole object

and returns one of:

- ``bytes`` (or bytearray/memoryview): the new data; key and label stay the sample's;
- a dict ``{"data": bytes, "key"?: str, "label"?: str | None, "ext"?: str}``: ``key`` replaces
  the output's name, ``label`` its label (None: no label), ``ext`` its extension (``npy``,
  ``seg.png``: letters, digits, ``_``, ``-``, dots between);
- a list or tuple of those: one sample becomes several ("chips"). Chip ``j`` without a ``key`` of
  its own gets ``-<j>`` on the stem of the sample's name (``img/cat/001.jpg`` ->
  ``img/cat/001-2.jpg``), even in a list of one;
- ``None``: the sample is dropped.

Anything else, or an exception in the function, stops the run with ``DeriveError`` naming the
sample. Outputs keep source row order, then list order within a sample.

Output as objects (``shards_bytes`` None): each output is put at ``<prefix><name>`` where ``name``
is the output's ``key``, or else the sample's key (``<shard key without extension>/<member>`` for
a shard member), with the chip suffix and ``ext`` applied. The label is also stored as
``x-amz-meta-label`` when it fits an HTTP header (printable ASCII); the manifest always carries it.
Two outputs landing on one key are an error.

Output as shards: tar files of about ``shards_bytes`` (a sample's members never straddle two),
``<prefix>shard-000000.tar`` and on, GNU tar format as ``webdataset`` and ``tar`` read it. Sample
``i`` (chip ``j``) is the members ``<stem>.<ext>`` and, when it has a label, ``<stem>.cls`` for an
integer label or ``<stem>.txt`` for any other (UTF-8 text), as webdataset's decoders expect: it
turns ``cls`` into an int and ``txt`` into a str. ``stem`` is ``<i, 9 digits>[-<j>][_<name slug>]``:
dot-free and unique by construction, since webdataset groups members by the text before the
first dot of the base name. ``ext``: the output's, or the name's own extension, or ``bin``.
The new dataset's rows are ranges of the shards (``offset``, ``size``, ``member``), so tierstore
loaders still read one sample at a time, in a true per-sample shuffle.

Data first, manifest last: nothing is published until every output is written and checked, and
the new manifest is then read back and compared (key, size, ETag) with what was written: a key
overwritten by another writer in between is an error, and the version is deleted again. A failed
run leaves the outputs it wrote under the prefix (a rerun overwrites them; published datasets
pin their own bytes, so overwriting an older derivation's keys does not break it).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

from tierstore.datasets._manifest import DatasetReadError, DatasetRef, Manifest, SampleSource
from tierstore.types import ObjectKey

if TYPE_CHECKING:
    from tierstore.client import TierstoreClient

__all__ = ["DeriveError", "DeriveReport", "derive"]

#: Shards up to this size are one PUT; larger ones a multipart upload of parts this size.
_MULTIPART_BYTES = 64 * 1024 * 1024
_PART_BYTES = 64 * 1024 * 1024
_MAX_PARTS = 10_000  # S3's limit per upload: bigger shards get bigger parts
#: Concurrent PUTs of the objects output (under botocore's default pool of 10 connections).
_PUT_THREADS = 8
_BLOCK = tarfile.BLOCKSIZE
_EXT_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_INT_LABEL = re.compile(r"-?[0-9]+")
_SLUG_DROP = re.compile(r"[^A-Za-z0-9_-]+")
_SLUG_CHARS = 64
_OUTPUT_KEYS = frozenset({"data", "key", "label", "ext"})

#: One output of the transform, normalized in the worker: (data, key, label, ext, chip).
_Output = tuple[bytes, str | None, str | None, str | None, int | None]


class DeriveError(RuntimeError):
    """The run failed after it started: the transform raised or returned something outside the
    contract for a sample, two outputs collided, or a written output changed before publishing."""


@dataclass(frozen=True, slots=True)
class DeriveReport:
    """What ``derive`` made: the new version ``ref`` from ``source`` (both pinned), how many
    samples went in and came out, the outputs' data bytes (without tar headers or labels), and
    where they went (``shard_keys``: the shards in order, empty for objects output)."""

    ref: DatasetRef
    source: DatasetRef
    bucket: str
    prefix: str
    samples_in: int
    samples_out: int
    bytes_out: int
    shard_keys: tuple[str, ...] = ()

    @property
    def shards(self) -> int:
        """Shards written (0 for objects output)."""
        return len(self.shard_keys)


def derive(
    source: SampleSource,
    client: TierstoreClient,
    s3: Any,
    src_ref: DatasetRef | str,
    transform: str,
    to: str,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    shards_bytes: int | None = None,
    workers: int | None = None,
    batch_rows: int = 256,
    progress: bool = True,
    mp_context: str | None = None,
) -> DeriveReport:
    """Map ``transform`` (``"module:function"``, see the module docstring for its contract) over
    every sample of ``src_ref`` and publish the outputs as the next version of dataset ``to``.

    ``source`` reads the samples, ``client`` publishes, ``s3`` (a boto3 client) writes the outputs
    to ``bucket`` (default: the source rows' bucket, when they share one) under ``prefix``
    (default ``derived/<to>/``; a ``/`` is added when missing). ``shards_bytes``: write WebDataset
    tar shards of about that size instead of one object per output. ``workers``: transform
    processes (default: one per core; 0 runs the transform in this process), started with
    ``mp_context`` (``fork``, ``spawn``, ``forkserver``; default: multiprocessing's). Samples are
    read ``batch_rows`` at a time; at most two batches per worker are in flight, so memory stays
    bounded. ``progress``: a tqdm bar of samples on stderr.

    Raises ``ValueError`` for bad arguments (a transform that cannot be imported, a bad dataset
    name, no such bucket) before anything is written, ``DeriveError`` when the run fails."""
    from tqdm import tqdm

    _resolve(transform)
    new = DatasetRef.parse(to)
    if new.version is not None:
        raise ValueError(f"--to names a dataset, not a version: {to!r} (versions are numbered by the store)")
    if shards_bytes is not None and shards_bytes < 1:
        raise ValueError(f"shards_bytes must be >= 1, not {shards_bytes}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, not {batch_rows}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0, not {workers}")
    manifest = source.open_manifest(src_ref)
    pinned = manifest.ref
    n = len(manifest)
    workers = min(workers, -(-n // batch_rows))  # no idle processes for a small dataset
    bucket = bucket if bucket is not None else _source_bucket(manifest)
    _check_bucket(s3, bucket)
    prefix = f"derived/{new.name}/" if prefix is None else prefix
    if prefix and not prefix.endswith("/"):
        prefix += "/"

    samples_out = bytes_out = 0
    with contextlib.ExitStack() as stack:
        sink: _Sink
        if shards_bytes is None:
            sink = stack.enter_context(_ObjectSink(s3, bucket, prefix))
        else:
            sink = stack.enter_context(_ShardSink(s3, bucket, prefix, shards_bytes))
        run = _runner(stack, transform, workers, mp_context)
        bar = stack.enter_context(
            tqdm(total=n, unit="sample", desc=f"derive {pinned} -> {new.name}", file=sys.stderr, disable=not progress)
        )
        in_flight = max(1, 2 * workers)
        pending: deque[tuple[Future[list[list[_Output]]], list[tuple[int, str, str | None]]]] = deque()

        def settle() -> None:
            nonlocal samples_out, bytes_out
            future, ids = pending.popleft()
            try:
                results = future.result()
            except BrokenProcessPool as exc:
                raise DeriveError(
                    f"a transform worker died (killed, or crashed in native code) on samples {ids[0][0]}..{ids[-1][0]}"
                ) from exc
            for (index, key, member), outputs in zip(ids, results, strict=True):
                for out in outputs:
                    sink.add(index, key, member, out)
                    samples_out += 1
                    bytes_out += len(out[0])
            bar.update(len(ids))
            bar.set_postfix(out=samples_out, refresh=False)

        for samples in _batches(source, manifest, batch_rows):
            ids = [(s["index"], s["key"], s["member"]) for s in samples]
            try:
                future = run(samples)
            except BrokenProcessPool as exc:
                # The pool broke on an earlier batch before this one could be queued: settling
                # reports the batch that killed it; none pending means this one did.
                while pending:
                    settle()
                raise DeriveError(
                    f"a transform worker died (killed, or crashed in native code) on samples {ids[0][0]}..{ids[-1][0]}"
                ) from exc
            pending.append((future, ids))
            while len(pending) >= in_flight:
                settle()
        while pending:
            settle()
        rows, checks = sink.finish()

    lineage = {
        "source": str(pinned),
        "transform": transform,
        "output": "objects" if shards_bytes is None else "shards",
        "shards_bytes": shards_bytes,
        "samples_in": n,
        "samples_out": samples_out,
    }
    record = client.create_dataset(new.name, rows=rows, lineage=lineage)
    ref = DatasetRef.parse(record["ref"])
    _check_published(client, ref, rows, checks)
    shard_keys = sink.shard_keys if isinstance(sink, _ShardSink) else []
    return DeriveReport(ref, pinned, bucket, prefix, n, samples_out, bytes_out, tuple(shard_keys))


# --- the transform, in the workers ---------------------------------------------------------------
_FUNCTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {}


def _resolve(spec: str) -> Callable[[dict[str, Any]], Any]:
    """The function ``spec`` names (cached per process); ValueError saying what is missing."""
    found = _FUNCTIONS.get(spec)
    if found is not None:
        return found
    module_name, sep, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise ValueError(f"transform must be 'module:function', not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ValueError(f"transform {spec!r}: no module named {module_name!r} (is it on sys.path?)") from exc
        raise ValueError(f"transform {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the module's own code failed: report it as a bad spec, with its cause
        raise ValueError(f"transform {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"transform {spec!r}: module {module_name!r} has no function {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"transform {spec!r}: {module_name}.{attr} is not callable (it is a {type(obj).__name__})")
    _FUNCTIONS[spec] = obj
    return obj  # type: ignore[no-any-return]


def _transform_batch(spec: str, samples: list[dict[str, Any]]) -> list[list[_Output]]:
    """Run in a pool worker: the outputs of each sample, normalized and checked."""
    try:
        fn = _resolve(spec)
    except ValueError as exc:  # imported in the parent, not here: a spawned worker's sys.path differs
        raise DeriveError(f"a worker process could not load the transform: {exc}") from None
    results = []
    for sample in samples:
        index, key, label = sample["index"], sample["key"], sample["label"]
        try:
            result = fn(sample)
        except Exception as exc:
            raise DeriveError(f"{spec} raised on sample {index} ({key!r}): {type(exc).__name__}: {exc}") from exc
        results.append(_normalize(spec, index, label, result))
    return results


def _normalize(spec: str, index: int, label: str | None, result: Any) -> list[_Output]:
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return [_one(spec, index, label, item, j) for j, item in enumerate(result)]
    return [_one(spec, index, label, result, None)]


def _one(spec: str, index: int, label: str | None, item: Any, chip: int | None) -> _Output:
    where = f"{spec} returned for sample {index}" + ("" if chip is None else f" (item {chip})")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item), None, label, None, chip
    if not isinstance(item, dict):
        kinds = "bytes or a dict" if chip is not None else "bytes, a dict, a list of those, or None"
        raise DeriveError(f"{where} a {type(item).__name__}: expected {kinds}")
    unknown = set(item) - _OUTPUT_KEYS
    if unknown:
        raise DeriveError(f"{where} a dict with unknown keys {sorted(unknown)} (allowed: {sorted(_OUTPUT_KEYS)})")
    data, key, ext = item.get("data"), item.get("key"), item.get("ext")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DeriveError(f"{where} a dict whose 'data' is a {type(data).__name__}, not bytes")
    if key is not None and (not isinstance(key, str) or not key):
        raise DeriveError(f"{where} a 'key' that is not a non-empty string: {key!r}")
    new_label = item.get("label", label)
    if new_label is not None and not isinstance(new_label, str):
        raise DeriveError(f"{where} a 'label' that is not a string or None: {new_label!r}")
    if ext is not None and (not isinstance(ext, str) or len(ext) > 32 or not _EXT_RE.fullmatch(ext)):
        raise DeriveError(f"{where} a bad 'ext' {ext!r}: letters, digits, _ and -, dots between, at most 32")
    return bytes(data), key, new_label, ext, chip


# --- the parent: read, dispatch, publish ---------------------------------------------------------
def _runner(
    stack: contextlib.ExitStack, spec: str, workers: int, mp_context: str | None
) -> Callable[[list[dict[str, Any]]], Future[list[list[_Output]]]]:
    if workers == 0:

        def inline(samples: list[dict[str, Any]]) -> Future[list[list[_Output]]]:
            done: Future[list[list[_Output]]] = Future()
            try:
                done.set_result(_transform_batch(spec, samples))
            except Exception as exc:
                done.set_exception(exc)
            return done

        return inline
    import multiprocessing

    context = multiprocessing.get_context(mp_context)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    # On failure, drop what is queued rather than transform it for nothing.
    stack.callback(pool.shutdown, wait=True, cancel_futures=True)
    return lambda samples: pool.submit(_transform_batch, spec, samples)


def _batches(source: SampleSource, manifest: Manifest, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    """Samples (the transform's dicts), ``batch_rows`` at a time, in row order."""
    n = len(manifest)
    for start in range(0, n, batch_rows):
        part = manifest.table.slice(start, min(batch_rows, n - start))
        keys = part.column("key").to_pylist()
        labels = part.column("label").to_pylist()
        members = part.column("member").to_pylist()
        sizes = part.column("size").to_pylist()
        rows = list(range(start, start + len(keys)))
        datas: list[bytes | None] = [None] * len(rows)
        for pos, data in source.read_rows(manifest.ref, rows):
            if len(data) != sizes[pos]:
                raise DatasetReadError(
                    rows[pos], 502, "SizeMismatch", f"read {len(data)} bytes, the manifest says {sizes[pos]}"
                )
            datas[pos] = data
        assert all(d is not None for d in datas), "read_rows yields every row asked for"
        yield [
            {"index": row, "key": key, "data": data, "label": label, "member": member}
            for row, key, data, label, member in zip(rows, keys, datas, labels, members, strict=True)
        ]


def _source_bucket(manifest: Manifest) -> str:
    import pyarrow.compute as pc

    buckets = pc.unique(manifest.table.column("bucket")).to_pylist()
    if len(buckets) != 1:
        found = "no rows" if not buckets else f"rows in {len(buckets)} buckets"
        raise ValueError(f"{manifest.ref} has {found}: give the bucket to write to")
    return str(buckets[0])


def _check_bucket(s3: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            raise ValueError(f"no such bucket {bucket!r} to write the outputs to") from None
        raise


def _check_published(client: TierstoreClient, ref: DatasetRef, rows: list[dict[str, Any]], checks: list[Any]) -> None:
    """Read the new manifest back: every row must pin exactly the bytes written (key, range,
    member, ETag). An unversioned key overwritten between our PUT and the publish would pin someone
    else's bytes."""
    manifest = Manifest.from_parquet(client.dataset_manifest(str(ref)))
    columns = [manifest.column(c) for c in ("key", "offset", "size", "member", "etag")]
    got = list(zip(*columns, strict=True))
    expected = [
        (row["key"], row.get("offset"), size, row.get("member"), etag)
        for row, (size, etag) in zip(rows, checks, strict=True)
    ]
    if got != expected:
        client.delete_dataset(str(ref))
        bad = [i for i, (want, have) in enumerate(zip(expected, got, strict=False)) if want != have]
        first = f"row {bad[0]}: wrote {expected[bad[0]]}, manifest has {got[bad[0]]}" if bad else "rows differ"
        raise DeriveError(
            f"{ref} did not pin what was written ({len(expected)} rows written, {len(got)} in the manifest; "
            f"{first}): were the outputs overwritten meanwhile? {ref} was deleted again"
        )


# --- sinks: where outputs go ---------------------------------------------------------------------
class _Sink(Protocol):
    def add(self, index: int, key: str, member: str | None, out: _Output) -> None: ...

    def finish(self) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        """The new dataset's rows in output order, and per row the (size, ETag) written."""
        ...


def _split(name: str) -> tuple[str, str, str]:
    """``a/b/c.d.e`` -> (``a/b/``, ``c``, ``d.e``): webdataset's split, at the base name's first dot."""
    head, slash, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return head + slash, stem, ext


def _sample_name(key: str, member: str | None) -> str:
    """A sample's name: its key, or for a shard member ``<shard key without extension>/<member>``."""
    if member is None:
        return key
    head, stem, _ = _split(key)
    return f"{head}{stem}/{member}"


def _header_safe(text: str) -> bool:
    return len(text) <= 1024 and text.isascii() and text.isprintable() and text == text.strip()


class _ObjectSink:
    """One object per output, PUT from a few threads; rows settle in output order."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self._s3, self._bucket, self._prefix = s3, bucket, prefix
        self._pool = ThreadPoolExecutor(_PUT_THREADS, thread_name_prefix="tierstore-derive-put")
        self._pending: deque[tuple[Future[tuple[str, str | None]], dict[str, Any], int]] = deque()
        self._keys: set[str] = set()
        self._rows: list[dict[str, Any]] = []
        self._checks: list[tuple[int, str]] = []

    def __enter__(self) -> _ObjectSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def add(self, index: int, key: str, member: str | None, out: _Output) -> None:
        data, out_key, label, ext, chip = out
        head, stem, old_ext = _split(out_key if out_key is not None else _sample_name(key, member))
        if out_key is None and chip is not None:
            stem = f"{stem}-{chip}"
        ext = old_ext if ext is None else ext
        name = self._prefix + head + stem + (f".{ext}" if ext else "")
        try:
            ObjectKey(name)
        except ValueError as exc:
            raise DeriveError(f"sample {index}: bad output key {name[:100]!r}: {exc}") from None
        if name in self._keys:
            raise DeriveError(f"sample {index}: a second output named {name!r} (give chips keys of their own)")
        self._keys.add(name)
        meta = {"label": label} if label is not None and _header_safe(label) else {}
        future = self._pool.submit(self._put, name, data, meta)
        self._pending.append((future, {"bucket": self._bucket, "key": name, "label": label}, len(data)))
        while len(self._pending) > 4 * _PUT_THREADS:
            self._settle()

    def _put(self, key: str, data: bytes, meta: dict[str, str]) -> tuple[str, str | None]:
        resp = self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, Metadata=meta)
        return resp["ETag"], resp.get("VersionId")

    def _settle(self) -> None:
        future, row, size = self._pending.popleft()
        etag, version_id = future.result()
        if version_id is not None:
            row["version_id"] = version_id
        self._rows.append(row)
        self._checks.append((size, etag))

    def finish(self) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        while self._pending:
            self._settle()
        return self._rows, self._checks


@dataclass(slots=True)
class _Member:
    member: str
    offset: int
    size: int
    label: str | None


class _ShardSink:
    """Outputs streamed into tar files of about ``shards_bytes`` (spooled to a temporary file,
    read back to check each member's offset, then uploaded); rows are ranges of the shards."""

    def __init__(self, s3: Any, bucket: str, prefix: str, shards_bytes: int) -> None:
        self._s3, self._bucket, self._prefix, self._shards_bytes = s3, bucket, prefix, shards_bytes
        self._file: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None
        self._members: list[_Member] = []  # the open shard's samples
        self._written: list[tuple[str, int, int]] = []  # and every member in it: (name, data offset, size)
        self._rows: list[dict[str, Any]] = []
        self._checks: list[tuple[int, str]] = []
        self.shard_keys: list[str] = []

    def __enter__(self) -> _ShardSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self._discard()

    def _discard(self) -> None:
        self._tar = None  # a TarFile on a file it did not open holds nothing to release
        if self._file is not None:
            self._file.close()
            self._file = None
        self._members, self._written = [], []

    def add(self, index: int, key: str, member: str | None, out: _Output) -> None:
        data, out_key, label, ext, chip = out
        name = out_key if out_key is not None else _sample_name(key, member)
        _, _, own_ext = _split(name)
        if ext is None:
            label_ext = own_ext.lower() in ("cls", "txt")
            ext = own_ext if _EXT_RE.fullmatch(own_ext) and len(own_ext) <= 32 and not label_ext else "bin"
        elif label is not None and ext.lower() in ("cls", "txt"):
            raise DeriveError(f"sample {index}: ext {ext!r} names the label's member in a shard; choose another")
        slug = _SLUG_DROP.sub("_", "".join(_split(name)[:2])).strip("_")[:_SLUG_CHARS]
        stem = f"{index:09d}" + ("" if chip is None else f"-{chip}") + (f"_{slug}" if slug else "")
        text = None if label is None else label.encode()
        # Header + data, the label's header + text, a long-name header each, the end-of-archive blocks.
        need = 4 * _BLOCK + _padded(len(data)) + (0 if text is None else 2 * _BLOCK + _padded(len(text)))
        if self._tar is not None and self._members and self._tar.offset + need > self._shards_bytes:
            self._close_shard()
        tar = self._tar if self._tar is not None else self._open_shard()
        offset = _add_member(tar, f"{stem}.{ext}", data)
        self._written.append((f"{stem}.{ext}", offset, len(data)))
        if text is not None:
            assert label is not None
            label_member = f"{stem}.{'cls' if _INT_LABEL.fullmatch(label) else 'txt'}"
            self._written.append((label_member, _add_member(tar, label_member, text), len(text)))
        self._members.append(_Member(f"{stem}.{ext}", offset, len(data), label))

    def _open_shard(self) -> tarfile.TarFile:
        self._file = tempfile.TemporaryFile(prefix="tierstore-shard-")  # noqa: SIM115 - closed by _close_shard/_discard
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)  # noqa: SIM115 - likewise
        return self._tar

    def _close_shard(self) -> None:
        assert self._tar is not None and self._file is not None
        self._tar.close()  # the end-of-archive blocks; the file stays open
        f = self._file
        size = f.tell()
        f.seek(0)
        with tarfile.open(fileobj=f, mode="r:") as check:  # the offsets we computed are the tar's own
            read = [(m.name, m.offset_data, m.size) for m in check]
        assert read == self._written, f"tar members: wrote {self._written[:3]}..., read {read[:3]}..."
        key = f"{self._prefix}shard-{len(self.shard_keys):06d}.tar"
        f.seek(0)
        etag, version_id = _upload(self._s3, self._bucket, key, f, size)
        for m in self._members:
            row: dict[str, Any] = {"bucket": self._bucket, "key": key, "offset": m.offset, "size": m.size,
                                   "member": m.member, "label": m.label}  # fmt: skip
            if version_id is not None:
                row["version_id"] = version_id
            self._rows.append(row)
            self._checks.append((m.size, etag))
        self.shard_keys.append(key)
        self._tar = None
        self._discard()

    def finish(self) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        if self._tar is not None and self._members:
            self._close_shard()
        self._discard()
        return self._rows, self._checks


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append a regular file; returns its data's offset in the archive. Fixed owner, mode and
    mtime, so the same outputs make the same shard bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))
    return tar.offset - _padded(len(data))  # the data ends the member, padded to a block


def _upload(s3: Any, bucket: str, key: str, f: IO[bytes], size: int) -> tuple[str, str | None]:
    """PUT the shard, or upload it in parts when large; returns (ETag, VersionId or None).
    Not ``upload_fileobj``: its result does not say which version it created, and the dataset
    must pin exactly that one in a versioned bucket."""
    if size <= _MULTIPART_BYTES:
        resp = s3.put_object(Bucket=bucket, Key=key, Body=f.read(), ContentType="application/x-tar")
        return resp["ETag"], resp.get("VersionId")
    part_bytes = max(_PART_BYTES, -(-size // _MAX_PARTS))
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-tar")["UploadId"]
    try:
        parts = []
        for number in range(1, -(-size // part_bytes) + 1):
            chunk = f.read(part_bytes)
            resp = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk)
            parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        resp = s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        with contextlib.suppress(Exception):
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return resp["ETag"], resp.get("VersionId")
