"""CheckpointStore: a state_dict as data files uploaded in parallel plus one commit object written
last with ``If-None-Match: *`` (docs/checkpoints.md).

The tensors' bytes, laid end to end (each at a 64-byte boundary), form one stream cut into data
files of ``file_bytes``; a tensor may span two files. Everything else in the state_dict is a JSON
tree in the commit's body, tensors referenced by their index in the tensor table. Bytes go from
tensor memory to the socket and from the socket to tensor memory without intermediate copies
(``S3Objects`` takes lists of buffers and reads into buffers). A checkpoint exists exactly when
its commit does, so a kill -9 mid-save leaves only unreferenced data files, which ``gc`` collects.
"""

from __future__ import annotations

import base64
import builtins
import io
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import torch

from tierstore.checkpoints._commit import (
    COMMITS_DIR,
    DATA_DIR,
    Commit,
    CommitFile,
    CommitFormatError,
    check_metric_name,
    check_run,
    checkpoint_name,
    parse_name,
)
from tierstore.checkpoints._objects import ObjectError, PreconditionFailed, PutResult, S3Objects, StoreUri, crc64nvme
from tierstore.client._ext import TierstoreClient
from tierstore.client._s3 import S3Settings, resolve_settings
from tierstore.torch._lineage import opened_datasets
from tierstore.types import MODEL_COMMIT_MEMBER

__all__ = [
    "CheckpointCorrupt",
    "CheckpointExists",
    "CheckpointInfo",
    "CheckpointNotFound",
    "CheckpointStore",
    "load_pulled",
    "opened_datasets",
]

log = logging.getLogger("tierstore.checkpoints")

KIND = "state_dict"
ALIGN = 64  # every tensor starts at a multiple of this in the data stream
FILE_BYTES = 256 << 20
_ZEROS = memoryview(bytes(ALIGN))
# user metadata this module adds next to Commit.user_metadata(); no metric may use these names
_META_BYTES = "bytes"
_META_CREATED = "created-ns"
_OWN_META = {"step", "run", "kind", "format", "datasets", _META_BYTES, _META_CREATED}
# loads: a tensor piece below this is read together with its neighbours into a scratch buffer
_SMALL_READ = 1 << 20
_GROUP_READ = 8 << 20


class CheckpointExists(FileExistsError):
    """A checkpoint of this step and run is already committed (it is left untouched)."""


class CheckpointNotFound(FileNotFoundError):
    """No committed checkpoint matches."""


class CheckpointCorrupt(ValueError):
    """A data file does not hold what its commit says (checksum, size), or a malformed commit."""


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """A committed checkpoint, as its commit object's metadata and tags describe it."""

    name: str
    step: int
    run: str
    key: str  # of the commit object
    version_id: str | None  # of the commit object
    size_bytes: int  # of the data files
    created_ns: int
    kind: str = KIND
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    storage_class: str = "STANDARD"  # of the commit object: a tier's name once archived (archive_to)


@dataclass(slots=True)
class _Prepared:
    """A save with everything taken from the caller's objects: tensor bytes (views or copies)
    and the encoded tree; what remains is I/O."""

    commit: Commit
    views: list[memoryview]


# --- the tree: a state_dict as JSON, tensors as indexes --------------------------------------


class _Encoder:
    """Walks a state_dict; ``tensors`` gets each distinct tensor once (tied weights: the same
    object, or the same view of the same memory, are one entry)."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []
        self._by_id: dict[int, int] = {}
        self._by_view: dict[tuple[Any, ...], int] = {}

    def encode(self, obj: Any) -> Any:
        kind = type(obj)
        if obj is None or kind in (str, int, bool):
            return obj
        if kind is float:
            return obj if math.isfinite(obj) else {"$f": repr(obj)}
        if isinstance(obj, torch.Tensor) and _plain(obj):
            return {"$t": self._tensor(obj)}
        if isinstance(obj, torch.dtype):
            return {"$dtype": _dtype_name(obj)}
        if isinstance(obj, torch.Size):
            return {"$size": list(obj)}
        if kind is list:
            return [self.encode(v) for v in obj]
        if kind is tuple:
            return {"$tuple": [self.encode(v) for v in obj]}
        if isinstance(obj, dict):
            doc: dict[str, Any] = {"$d": [[self.encode(k), self.encode(v)] for k, v in obj.items()]}
            if isinstance(obj, OrderedDict):  # a module's state_dict: keep its _metadata (versions)
                doc["$ordered"] = True
                meta = getattr(obj, "_metadata", None)
                if meta is not None:
                    doc["$meta"] = self.encode(meta)
            return doc
        if kind is bytes:
            return {"$b": base64.b64encode(obj).decode()}
        buf = io.BytesIO()
        torch.save(obj, buf)
        return {"$pickle": base64.b64encode(buf.getvalue()).decode()}

    def _tensor(self, t: torch.Tensor) -> int:
        index = self._by_id.get(id(t))
        if index is not None:
            return index
        view = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride()) if t.numel() else None
        index = self._by_view.get(view) if view is not None else None
        if index is None:
            index = len(self.tensors)
            self.tensors.append(t)
            if view is not None:
                self._by_view[view] = index
        self._by_id[id(t)] = index  # the tree holds t, so its id is not reused during the walk
        return index


def _plain(t: torch.Tensor) -> bool:
    """A dense tensor whose bytes we can take (others go through torch.save)."""
    return t.layout == torch.strided and not t.is_quantized and t.device.type != "meta"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointCorrupt(f"unknown dtype {name!r} in the commit")
    return dtype


def _decode(doc: Any, tensors: Sequence[torch.Tensor], weights_only: bool) -> Any:
    if isinstance(doc, list):
        return [_decode(v, tensors, weights_only) for v in doc]
    if not isinstance(doc, dict):
        return doc
    if "$t" in doc:
        return tensors[doc["$t"]]
    if "$d" in doc:
        pairs = ((_decode(k, tensors, weights_only), _decode(v, tensors, weights_only)) for k, v in doc["$d"])
        if not doc.get("$ordered"):
            return dict(pairs)
        out: OrderedDict[Any, Any] = OrderedDict(pairs)
        if "$meta" in doc:
            out._metadata = _decode(doc["$meta"], tensors, weights_only)  # type: ignore[attr-defined]
        return out
    if "$tuple" in doc:
        return tuple(_decode(v, tensors, weights_only) for v in doc["$tuple"])
    if "$f" in doc:
        return float(doc["$f"])
    if "$dtype" in doc:
        return _dtype(doc["$dtype"])
    if "$size" in doc:
        return torch.Size(doc["$size"])
    if "$b" in doc:
        return base64.b64decode(doc["$b"])
    if "$pickle" in doc:
        return torch.load(io.BytesIO(base64.b64decode(doc["$pickle"])), weights_only=weights_only)
    raise CheckpointCorrupt(f"unknown node in the commit's tree: {sorted(doc)}")


# --- bytes of tensors ---------------------------------------------------------------------------


def _bytes_view(t: torch.Tensor) -> memoryview:
    """The tensor's bytes, without a copy when it is a contiguous CPU tensor."""
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.device.type != "cpu":
        t = t.cpu()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().data  # the array (the view's owner) keeps t alive


def _copy_view(t: torch.Tensor) -> memoryview:
    """The tensor's bytes in fresh CPU memory (save_async: the caller may mutate t right after)."""
    out = torch.empty(t.shape, dtype=t.dtype)
    out.copy_(t.detach())
    return out.reshape(-1).view(torch.uint8).numpy().data


def _layout_files(views: Sequence[memoryview], file_bytes: int) -> tuple[list[int], list[list[memoryview]]]:
    """Each tensor's offset in the data stream, and the stream cut into files of ``file_bytes``
    (the last shorter), each a list of slices of the tensors' memory and zero padding."""
    offsets: list[int] = []
    stream: list[memoryview] = []
    pos = 0
    for view in views:
        pad = -pos % ALIGN
        if pad and view.nbytes:
            stream.append(_ZEROS[:pad])
            pos += pad
        offsets.append(pos)
        if view.nbytes:
            stream.append(view)
            pos += view.nbytes
    files: list[list[memoryview]] = []
    current: list[memoryview] = []
    room = file_bytes
    for piece in stream:
        rest = piece
        while rest.nbytes:
            take = rest[:room]
            current.append(take)
            room -= take.nbytes
            rest = rest[take.nbytes :]
            if room == 0:
                files.append(current)
                current, room = [], file_bytes
    if current:
        files.append(current)
    return offsets, files


def _upload_files(
    objects: S3Objects, bucket: str, keys: Sequence[str], files: Sequence[list[memoryview]], pools: _Pools
) -> list[PutResult]:
    """PUT every file: small ones as tasks on the I/O pool, big ones (multipart) from a waiter
    thread of their own whose parts run on the I/O pool — a task never waits on its own pool,
    so a full pool cannot deadlock."""
    futures: list[Future[PutResult]] = []
    for key, pieces in zip(keys, files, strict=True):
        size = sum(p.nbytes for p in pieces)
        if size > objects.part_bytes:
            futures.append(pools.waiters.submit(objects.put, bucket, key, pieces, pool=pools.io))
        else:
            futures.append(pools.io.submit(objects.put, bucket, key, pieces))
    _, pending = wait(futures, return_when=FIRST_EXCEPTION)
    for f in pending:
        f.cancel()
    return [f.result() for f in futures]


@dataclass(slots=True)
class _Read:
    """One ranged GET of a data file: ``dest`` is tensor memory, or a scratch buffer whose
    slices are then copied to ``copies`` (scratch offset, tensor memory)."""

    file: CommitFile
    offset: int
    dest: memoryview
    copies: list[tuple[int, memoryview]] = field(default_factory=list)


def _plan_reads(
    files: Sequence[CommitFile], offsets: Sequence[int], dests: Sequence[memoryview]
) -> tuple[list[_Read], list[list[memoryview]]]:
    """The GETs that fill ``dests`` (each tensor's memory; its bytes at ``offsets`` in the data
    stream), and per file the buffers that hold its content once they are done (tensor memory
    and zero padding), to check against the file's CRC64NVME."""
    starts = [0]
    for f in files:
        starts.append(starts[-1] + f.size)
    # (stream position, memory) of each tensor, in stream order, cut at file boundaries
    pieces: list[list[tuple[int, memoryview]]] = [[] for _ in files]
    fi = 0
    for offset, dest in sorted(zip(offsets, dests, strict=True), key=lambda p: p[0]):
        pos, rest = offset, dest
        while rest.nbytes:
            while fi < len(files) and pos >= starts[fi + 1]:
                fi += 1
            if fi == len(files):
                raise CheckpointCorrupt(f"the tensors need {pos + rest.nbytes} bytes, the files hold {starts[-1]}")
            take = rest[: starts[fi + 1] - pos]
            pieces[fi].append((pos - starts[fi], take))
            pos += take.nbytes
            rest = rest[take.nbytes :]
    reads: list[_Read] = []
    contents: list[list[memoryview]] = []
    for f, file_pieces in zip(files, pieces, strict=True):
        content: list[memoryview] = []
        at = 0
        group: list[tuple[int, memoryview]] = []
        for off, mem in file_pieces:
            if off < at:
                raise CheckpointCorrupt(f"tensors overlap in {f.key}")
            content += _zero_pad(off - at, f)
            content.append(mem)
            at = off + mem.nbytes
            if mem.nbytes >= _SMALL_READ:
                reads.append(_Read(f, off, mem))
                continue
            if group and off + mem.nbytes - group[0][0] > _GROUP_READ:
                reads.append(_grouped(f, group))
                group = []
            group.append((off, mem))
        if group:
            reads.append(_grouped(f, group))
        content += _zero_pad(f.size - at, f)
        contents.append(content)
    return reads, contents


def _zero_pad(n: int, f: CommitFile) -> list[memoryview]:
    if n < 0:
        raise CheckpointCorrupt(f"{f.key} is shorter ({f.size} bytes) than its tensors")
    if n >= ALIGN:
        raise CheckpointCorrupt(f"{f.key}: a gap of {n} bytes between tensors (at most {ALIGN - 1} is padding)")
    return [_ZEROS[:n]] if n else []


def _grouped(f: CommitFile, group: list[tuple[int, memoryview]]) -> _Read:
    start = group[0][0]
    end = group[-1][0] + group[-1][1].nbytes
    scratch = memoryview(bytearray(end - start))
    return _Read(f, start, scratch, [(off - start, mem) for off, mem in group])


@dataclass(slots=True)
class _Pools:
    io: ThreadPoolExecutor  # every request: whole files, parts, ranged reads
    waiters: ThreadPoolExecutor  # multipart uploads waiting on their parts (never do I/O themselves)


def _read_tensors(commit: Commit, read: Callable[[_Read], None], pool: Executor) -> list[torch.Tensor]:
    """Every tensor of ``commit``, its bytes read by ``read`` (ranged reads of data files, run on
    ``pool``) straight into its memory; then each data file's CRC64NVME is checked."""
    try:
        table = commit.body["tensors"]
        tensors = [torch.empty(e["shape"], dtype=_dtype(e["dtype"])) for e in table]
        offsets = [int(e["offset"]) for e in table]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorrupt(f"a malformed tensor table in {commit.name}: {exc!r}") from exc
    dests = [t.reshape(-1).view(torch.uint8).numpy().data for t in tensors]
    for e, d in zip(table, dests, strict=True):
        if d.nbytes != e["nbytes"]:
            raise CheckpointCorrupt(f"{commit.name}: a {e['dtype']} {e['shape']} tensor of {e['nbytes']} bytes")
    reads, contents = _plan_reads(commit.files, offsets, dests)
    futures = [pool.submit(read, r) for r in reads]
    _, pending = wait(futures, return_when=FIRST_EXCEPTION)
    for f in pending:
        f.cancel()
    for f in futures:
        f.result()
    checks = [pool.submit(_check_crc, f, c) for f, c in zip(commit.files, contents, strict=True)]
    for check in checks:
        check.result()
    return tensors


def _finish_load(
    commit: Commit, tensors: list[torch.Tensor], map_location: str | torch.device, weights_only: bool
) -> Any:
    device = torch.device(map_location)
    if device.type != "cpu":
        tensors = [t.to(device) for t in tensors]
    return _decode(commit.body["tree"], tensors, weights_only)


def load_pulled(
    directory: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", weights_only: bool = True
) -> Any:
    """The state_dict of a checkpoint in a local directory — what ``tierstore models pull``
    (``tierstore.checkpoints.pull_model``) writes for an inference server: ``COMMIT.json`` plus
    the data files at their paths. Each file's CRC64NVME is checked again as it is read."""
    root = Path(directory)
    try:
        commit = Commit.from_json((root / MODEL_COMMIT_MEMBER).read_bytes())
    except FileNotFoundError as exc:
        raise CheckpointNotFound(f"{root} has no {MODEL_COMMIT_MEMBER}: not a pulled checkpoint") from exc
    except CommitFormatError as exc:
        raise CheckpointCorrupt(f"{root / MODEL_COMMIT_MEMBER}: {exc}") from exc
    if commit.kind != KIND:
        raise CheckpointCorrupt(
            f"{root} holds a {commit.kind!r} checkpoint; load it with torch.distributed.checkpoint"
            " (FileSystemReader reads a pulled DCP directory)"
            if commit.kind == "dcp" else f"{root} holds a {commit.kind!r} checkpoint, not a {KIND!r} one"
        )  # fmt: skip

    def read(r: _Read) -> None:
        path = root / PurePosixPath(r.file.path)
        with open(path, "rb") as f:
            f.seek(r.offset)
            got = f.readinto(r.dest)
        if got != r.dest.nbytes:
            raise CheckpointCorrupt(f"{path}: {got} of {r.dest.nbytes} bytes at {r.offset} (truncated?)")
        for at, mem in r.copies:
            mem[:] = r.dest[at : at + mem.nbytes]

    with ThreadPoolExecutor(4, thread_name_prefix="ckpt-local") as pool:
        tensors = _read_tensors(commit, read, pool)
    return _finish_load(commit, tensors, map_location, weights_only)


# --- the store ------------------------------------------------------------------------------


class CheckpointStore:
    """Checkpoints under ``s3://BUCKET/PREFIX``.

    >>> store = CheckpointStore("s3://ckpts/run-a", keep_last=3)
    >>> store.save(model.state_dict(), step=100, metrics={"loss": 0.31})
    >>> model.load_state_dict(store.load())
    """

    def __init__(
        self,
        uri: str,
        *,
        settings: S3Settings | None = None,
        run: str | None = None,
        keep_last: int | None = None,
        archive_to: str | None = None,
        file_bytes: int = FILE_BYTES,
        max_workers: int = 8,
        objects: S3Objects | None = None,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last={keep_last}: keep at least one checkpoint")
        if archive_to is not None and (keep_last is None or not archive_to):
            raise ValueError("archive_to=CLASS moves what keep_last would delete: give keep_last too")
        if file_bytes < ALIGN:
            raise ValueError(f"file_bytes={file_bytes}: at least {ALIGN}")
        if max_workers < 1:
            raise ValueError(f"max_workers={max_workers}: at least 1")
        self.uri = StoreUri.parse(uri)
        self.run = check_run(run if run is not None else secrets.token_hex(6))
        self.keep_last = keep_last
        self.archive_to = archive_to
        self.file_bytes = file_bytes
        self.settings = settings or (objects.settings if objects is not None else resolve_settings())
        self.objects = objects or S3Objects(self.settings, max_connections=max_workers)
        self._client = TierstoreClient(self.settings)
        self._pools = _Pools(
            ThreadPoolExecutor(max_workers, thread_name_prefix="ckpt-io"),
            ThreadPoolExecutor(max_workers, thread_name_prefix="ckpt-multipart"),
        )
        self._background = ThreadPoolExecutor(1, thread_name_prefix="ckpt-save")
        self._async_lock = threading.Lock()
        self._in_flight: Future[CheckpointInfo] | None = None
        # keep_last retention runs after a commit, off the caller's path (deletes are housekeeping:
        # 2 GiB of data files took ~0.4 s to delete); wait() and close() join it
        self._housekeeping = ThreadPoolExecutor(1, thread_name_prefix="ckpt-retain")
        self._retention: Future[None] | None = None
        self._retention_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.uri)!r}, run={self.run!r})"

    # --- saving -------------------------------------------------------------------------
    def save(
        self,
        state_dict: Any,
        *,
        step: int,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        datasets: Sequence[str] | None = None,
    ) -> CheckpointInfo:
        """Upload ``state_dict``'s tensors, then commit; visible all at once or not at all.
        ``CheckpointExists`` if this step of this run is already committed."""
        with self._async_lock:
            self._check_open()
            self._settle()
            prepared = self._prepare(state_dict, step, metrics, tags, datasets, copy=False)
            return self._write(prepared)

    def save_async(
        self,
        state_dict: Any,
        *,
        step: int,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        datasets: Sequence[str] | None = None,
    ) -> Future[CheckpointInfo]:
        """Copy the tensors to fresh CPU memory now (training may change its tensors as soon as
        this returns), upload and commit in the background. One save in flight at a time: a
        second call first waits for the previous one, so at most one copy is held."""
        with self._async_lock:
            self._check_open()
            self._settle()
            prepared = self._prepare(state_dict, step, metrics, tags, datasets, copy=True)
            future = self._background.submit(self._write, prepared)
            self._in_flight = future
            return future

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed (make a new CheckpointStore to save or load)")

    def _settle(self) -> None:
        """Wait for the save in flight (its error stays in its future)."""
        if self._in_flight is not None:
            wait([self._in_flight])
            self._in_flight = None

    def wait(self) -> CheckpointInfo | None:
        """Wait for the save in flight and for retention; the save's CheckpointInfo (or its
        error), None if there is none."""
        with self._async_lock:
            future, self._in_flight = self._in_flight, None
        try:
            return future.result() if future is not None else None
        finally:
            self._join_retention()

    def close(self) -> None:
        """Wait for the save in flight, then stop the threads. A failure of that save is logged,
        not raised: it belongs to its future (``wait()`` before ``close()`` raises it)."""
        with self._async_lock:
            future, self._in_flight = self._in_flight, None
            self._closed = True
        try:
            if future is not None and future.exception() is not None:
                log.error("the last save_async failed", exc_info=future.exception())
            self._join_retention()
        finally:
            self._housekeeping.shutdown()
            self._background.shutdown()
            self._pools.waiters.shutdown()
            self._pools.io.shutdown()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _prepare(
        self,
        state_dict: Any,
        step: int,
        metrics: Mapping[str, float] | None,
        tags: Mapping[str, str] | None,
        datasets: Sequence[str] | None,
        *,
        copy: bool,
    ) -> _Prepared:
        checkpoint_name(step, self.run)  # validates the step
        metrics = {check_metric_name(k): float(v) for k, v in (metrics or {}).items()}
        if _OWN_META & metrics.keys():
            raise ValueError(f"metric names {sorted(_OWN_META & metrics.keys())} are taken by the checkpoint itself")
        tags = {str(k): str(v) for k, v in (tags or {}).items()}
        if isinstance(datasets, str):
            raise TypeError("datasets: a list of NAME@N, not one string")
        lineage = sorted(set(datasets or ()) | set(opened_datasets()))
        enc = _Encoder()
        tree = enc.encode(state_dict)
        views = [(_copy_view if copy else _bytes_view)(t) for t in enc.tensors]
        table = [
            {"dtype": _dtype_name(t.dtype), "shape": list(t.shape), "nbytes": v.nbytes}
            for t, v in zip(enc.tensors, views, strict=True)
        ]
        body = {"tensors": table, "tree": tree, "align": ALIGN}
        commit = Commit(step, self.run, KIND, time.time_ns(), [], metrics, tags, lineage, body)
        return _Prepared(commit, views)

    def _write(self, prepared: _Prepared) -> CheckpointInfo:
        commit = prepared.commit
        offsets, files = _layout_files(prepared.views, self.file_bytes)
        for entry, offset in zip(commit.body["tensors"], offsets, strict=True):
            entry["offset"] = offset
        key = self._commit_key(commit.name)
        if self._exists(key):  # fail before uploading anything (the conditional commit still decides)
            raise self._exists_error(commit)
        # each attempt writes under a directory of its own: a second save of a committed step
        # (refused at its commit) never overwrites the first one's data
        attempt = secrets.token_hex(6)
        data_dir = self.uri.key(f"{DATA_DIR}/{commit.name}/")
        paths = [f"{attempt}/{i:06d}.bin" for i in range(len(files))]
        results = _upload_files(self.objects, self.uri.bucket, [data_dir + p for p in paths], files, self._pools)
        commit.files = [
            CommitFile(path, r.key, r.version_id, r.size, r.crc64nvme) for path, r in zip(paths, results, strict=True)
        ]
        meta = commit.user_metadata() | {_META_BYTES: str(commit.size), _META_CREATED: str(commit.created_ns)}
        try:
            put = self.objects.put(
                self.uri.bucket, key, commit.to_json(), if_none_match=True, metadata=meta,
                tags=commit.tags or None, content_type="application/json",
            )  # fmt: skip
        except PreconditionFailed:
            raise self._exists_error(commit) from None
        info = CheckpointInfo(
            commit.name, commit.step, commit.run, key, _version(put.version_id), commit.size, commit.created_ns,
            KIND, dict(commit.metrics), dict(commit.tags), list(commit.datasets),
        )  # fmt: skip
        if self.keep_last is not None:
            self._schedule_retention(self.keep_last, commit.name)
        return info

    def _schedule_retention(self, keep: int, after: str) -> None:
        def run() -> None:
            try:
                self._retain(keep)
            except Exception:  # the checkpoint is committed; retention runs again after the next save
                log.warning("retention after %s failed", after, exc_info=True)

        with self._retention_lock:
            pending = self._retention
            if pending is not None and not pending.running() and not pending.done():
                return  # one queued pass is enough: it lists the store when it starts
            self._retention = self._housekeeping.submit(run)

    def _join_retention(self) -> None:
        with self._retention_lock:
            future = self._retention
        if future is not None:
            future.result()  # run() logs its own failures

    def _exists_error(self, commit: Commit) -> CheckpointExists:
        return CheckpointExists(
            f"checkpoint {commit.name} is already committed in {self.uri} (step {commit.step}, run {commit.run});"
            " it is left as it was"
        )

    def _exists(self, key: str) -> bool:
        try:
            self.objects.s3.head_object(Bucket=self.uri.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def _retain(self, keep: int) -> None:
        """Delete every checkpoint older than the newest ``keep`` that has no tag and is not
        registered as a model: its commit first, so no reader sees a commit without data.
        (Registration tags the commit ``model=NAME@N``; the registry is asked as well, so a
        registered checkpoint whose tag was removed or never set is still kept.) With
        ``archive_to``, move it to that tier instead (``_archive``)."""
        doomed = [info for info in self.list()[:-keep] if not info.tags and info.storage_class != self.archive_to]
        if not doomed:
            return
        registered = self._registered()
        for info in doomed:
            if info.key in registered:
                continue
            try:
                if self.objects.get_tags(self.uri.bucket, info.key):  # tagged since the listing
                    continue
            except Exception as exc:
                if _is_missing(exc):
                    continue  # another writer's retention got there first
                raise
            if self.archive_to is not None:
                self._archive(info, self.archive_to)
                continue
            self.objects.delete(self.uri.bucket, [info.key])
            self._delete_data(info.name)

    def _archive(self, info: CheckpointInfo, tier: str) -> None:
        """Move a checkpoint's data files, then its commit object, to ``tier`` (the server's
        mover, ``TierstoreClient.tier_transition``: the same version ids, so it still loads,
        through the tier). The commit's class goes last: a pass cut short is done again."""
        commit = Commit.from_json(self.objects.get(self.uri.bucket, info.key, version_id=info.version_id))
        for f in commit.files:
            self._client.tier_transition(tier, self.uri.bucket, f.key, f.version_id)
        self._client.tier_transition(tier, self.uri.bucket, info.key, info.version_id)

    def _registered(self) -> set[str]:
        """The commit keys in this bucket that a model version was registered from."""
        prefix = f"s3://{self.uri.bucket}/"
        uris = ((rec.get("checkpoint") or {}).get("uri", "") for rec in self._client.list_models())
        return {uri.removeprefix(prefix) for uri in uris if isinstance(uri, str) and uri.startswith(prefix)}

    def _delete_data(self, name: str) -> int:
        prefix = self.uri.key(f"{DATA_DIR}/{name}/")
        keys = [o.key for o in self.objects.list(self.uri.bucket, prefix)]
        self.objects.delete(self.uri.bucket, keys)
        return len(keys)

    # --- reading ------------------------------------------------------------------------
    def list(self) -> builtins.list[CheckpointInfo]:
        """Every committed checkpoint, oldest step first (one metadata query, no commit read)."""
        query = f"key STARTS WITH {_literal(self.uri.key(COMMITS_DIR + '/'))} LIMIT 1000"
        infos = [info for obj in self._client.query_all(self.uri.bucket, query) if (info := self._info(obj))]
        return sorted(infos, key=lambda i: (i.step, i.created_ns, i.run))

    def latest(self, tag: str | None = None) -> CheckpointInfo | None:
        """The newest checkpoint (with ``tag``: ``key`` present, or ``key=value``), or None."""
        found = [i for i in self.list() if _has_tag(i.tags, tag)]
        return found[-1] if found else None

    def best(self, metric: str, mode: str = "min", tag: str | None = None) -> CheckpointInfo | None:
        """The checkpoint with the lowest (``mode="max"``: highest) ``metric``, by the metadata query."""
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r}: 'min' or 'max'")
        name = _quoted_name(check_metric_name(metric))
        query = f"key STARTS WITH {_literal(self.uri.key(COMMITS_DIR + '/'))} AND meta.{name} IS NOT NULL"
        if tag is not None:
            k, v = _tag_filter(tag)
            query += f" AND tag.{_quoted_name(k)} " + ("IS NOT NULL" if v is None else f"= {_literal(v)}")
        query += f" ORDER BY meta.{name}{' DESC' if mode == 'max' else ''}, key DESC LIMIT 1"
        for obj in self._client.query(self.uri.bucket, query).objects:  # LIMIT is the page size: one page
            info = self._info(obj)
            if info is not None:
                return info
        return None

    def load(
        self,
        step: int | CheckpointInfo | None = None,
        *,
        tag: str | None = None,
        run: str | None = None,
        map_location: str | torch.device = "cpu",
        weights_only: bool = True,
    ) -> Any:
        """The state_dict of a checkpoint: ``step`` (the newest of that step across runs unless
        ``run``), else the newest, with ``tag`` if given. Tensors are read straight into their
        memory and every data file's CRC64NVME is checked; tied tensors come back tied.
        ``weights_only`` applies to the few values stored with torch.save (as in torch.load)."""
        self._check_open()
        info = self._select(step, tag, run)
        try:
            commit = Commit.from_json(self.objects.get(self.uri.bucket, info.key, version_id=info.version_id))
        except CommitFormatError as exc:
            raise CheckpointCorrupt(f"{info.key}: {exc}") from exc
        if commit.kind != KIND:
            raise CheckpointCorrupt(f"{info.key} is a {commit.kind!r} checkpoint, not a {KIND!r} one")
        tensors = _read_tensors(commit, self._read, self._pools.io)
        return _finish_load(commit, tensors, map_location, weights_only)

    def _read(self, r: _Read) -> None:
        try:
            self.objects.get_into(self.uri.bucket, r.file.key, r.dest, version_id=r.file.version_id, offset=r.offset)
        except ObjectError as exc:
            raise CheckpointCorrupt(f"data file {r.file.key} could not be read: {exc}") from exc
        for at, mem in r.copies:
            mem[:] = r.dest[at : at + mem.nbytes]

    def _select(self, step: int | CheckpointInfo | None, tag: str | None, run: str | None) -> CheckpointInfo:
        if isinstance(step, CheckpointInfo):
            return step
        found = [
            i
            for i in self.list()
            if (step is None or i.step == step) and (run is None or i.run == run) and _has_tag(i.tags, tag)
        ]
        if not found:
            raise CheckpointNotFound(f"no checkpoint in {self.uri} with step={step} tag={tag} run={run}")
        return found[-1]

    def _info(self, obj: Mapping[str, Any]) -> CheckpointInfo | None:
        """A query result as a CheckpointInfo (None: not a commit object of this store)."""
        rel = self.uri.rel(obj["key"])
        name = rel.removeprefix(COMMITS_DIR + "/").removesuffix(".json")
        try:
            step, run = parse_name(name)
        except CommitFormatError:
            return None
        meta: dict[str, str] = obj.get("meta") or {}
        metrics: dict[str, float] = {}
        for k, v in meta.items():
            if k not in _OWN_META:
                try:
                    metrics[k] = float(v)
                except ValueError:
                    continue
        return CheckpointInfo(
            name=name,
            step=step,
            run=run,
            key=obj["key"],
            version_id=_version(obj.get("version_id")),
            size_bytes=int(meta.get(_META_BYTES, 0)),
            created_ns=int(meta.get(_META_CREATED, 0)),
            kind=meta.get("kind", KIND),
            metrics=metrics,
            tags=dict(obj.get("tags") or {}),
            datasets=meta["datasets"].split() if meta.get("datasets") else [],
            storage_class=obj.get("storage_class") or "STANDARD",
        )

    def _commit_key(self, name: str) -> str:
        return self.uri.key(f"{COMMITS_DIR}/{name}.json")

    # --- tags and housekeeping -------------------------------------------------------------
    def tag(self, which: int | CheckpointInfo, **tags: str) -> dict[str, str]:
        """Add ``tags`` to a checkpoint's commit object (merged with its tags); the new tag set."""
        info = self._select(which, None, None)
        current = self.objects.get_tags(self.uri.bucket, info.key)
        current.update({k: str(v) for k, v in tags.items()})
        self.objects.put_tags(self.uri.bucket, info.key, current)
        return current

    def untag(self, which: int | CheckpointInfo, *keys: str) -> dict[str, str]:
        """Remove tag ``keys`` from a checkpoint's commit object; the new tag set."""
        info = self._select(which, None, None)
        current = self.objects.get_tags(self.uri.bucket, info.key)
        for k in keys:
            current.pop(k, None)
        self.objects.put_tags(self.uri.bucket, info.key, current)
        return current

    def gc(self, older_than_s: float = 3600.0) -> dict[str, int]:
        """Delete the data of saves that never committed (killed mid-save, or refused at the commit)
        whose newest object is older than ``older_than_s``, and abort such multipart uploads. A
        save younger than that may still be running and is left alone. Counts of what went."""
        cutoff_ns = time.time_ns() - int(older_than_s * 1e9)
        data_prefix = self.uri.key(DATA_DIR + "/")
        # data first, then commits: a commit that lands in between is seen
        attempts: dict[str, dict[str, list[str]]] = {}  # name -> attempt -> keys
        newest: dict[tuple[str, str], int] = {}
        for obj in self.objects.list(self.uri.bucket, data_prefix):
            name, _, path = obj.key[len(data_prefix) :].partition("/")
            attempt = path.partition("/")[0] if "/" in path else ""
            attempts.setdefault(name, {}).setdefault(attempt, []).append(obj.key)
            newest[name, attempt] = max(newest.get((name, attempt), 0), obj.modified_ns)
        commits_prefix = self.uri.key(COMMITS_DIR + "/")
        committed = {
            o.key[len(commits_prefix) :].removesuffix(".json")
            for o in self.objects.list(self.uri.bucket, commits_prefix)
        }
        doomed: list[str] = []
        dirs = 0
        for name, by_attempt in sorted(attempts.items()):
            if name in committed and len(by_attempt) == 1:
                continue  # the committed save's own data (the usual case: no commit read)
            keep = self._referenced_attempts(name) if name in committed else set()
            if keep is None:
                continue
            for attempt, found in sorted(by_attempt.items()):
                if attempt not in keep and newest[name, attempt] < cutoff_ns:
                    doomed += found
                    dirs += 1
        self.objects.delete(self.uri.bucket, doomed)
        uploads = self.objects.abort_uploads(self.uri.bucket, data_prefix, older_than_ns=cutoff_ns)
        return {"saves": dirs, "objects": len(doomed), "uploads": uploads}

    def _referenced_attempts(self, name: str) -> set[str] | None:
        """The attempt directories a committed checkpoint's files are in (None: unreadable now)."""
        try:
            commit = Commit.from_json(self.objects.get(self.uri.bucket, self._commit_key(name)))
        except (ObjectError, CommitFormatError):
            return None
        return {f.path.partition("/")[0] if "/" in f.path else "" for f in commit.files}


def _check_crc(f: CommitFile, content: Sequence[memoryview]) -> None:
    got = base64.b64encode(crc64nvme(content).to_bytes(8, "big")).decode()
    if got != f.crc64nvme:
        raise CheckpointCorrupt(f"data file {f.key}: CRC64NVME {got}, its commit says {f.crc64nvme}")


def _version(version_id: str | None) -> str | None:
    return None if version_id in (None, "", "null") else version_id


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("NoSuchKey", "404", "NoSuchVersion")


def _tag_filter(tag: str) -> tuple[str, str | None]:
    """``key=value`` -> (key, value); ``key`` -> (key, None): the key present, any value."""
    k, eq, v = tag.partition("=")
    return (k, v) if eq else (k, None)


def _has_tag(tags: Mapping[str, str], tag: str | None) -> bool:
    if tag is None:
        return True
    k, v = _tag_filter(tag)
    return k in tags and (v is None or tags[k] == v)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quoted_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
