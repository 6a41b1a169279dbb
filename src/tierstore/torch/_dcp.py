"""``torch.distributed.checkpoint`` (DCP) storage over the checkpoint layout (docs/checkpoints.md).

::

    PREFIX/data/<name>/__<rank>_<n>.<save id>.distcp   each rank's data files, uploaded in parallel
    PREFIX/data/<name>/.metadata                        DCP's pickled Metadata, written by rank 0
    PREFIX/commits/<name>.json                          the one commit object (kind "dcp"), last

The data files have FileSystemWriter's format (each item's ``torch.save`` bytes, or its raw
``BytesIO`` bytes, back to back; ``_StorageInfo(relative_path, offset, length)`` locates it), so a
pulled checkpoint directory also loads with ``FileSystemReader``. N ranks write their own files;
rank 0's ``finish`` writes ``.metadata`` and then the commit object with ``If-None-Match: *``, so
the checkpoint becomes visible once, all or nothing. The reader looks at ``commits/`` only: data
without a commit (a save that died) is invisible.

The save id in the data file names keeps two saves of the same step and run (a retry after a
crash, or a racing duplicate) from overwriting each other's data: only one of them commits, and
the commit names its own files. ``.metadata`` keeps DCP's fixed name; the commit pins it by
version id and CRC64NVME, so on an unversioned bucket a duplicate save racing past the commit
check is detected (checksum mismatch on load), not silently mixed in.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import secrets
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.filesystem import (
    CURRENT_DCP_VERSION,
    DEFAULT_SUFFIX,
    _split_by_size_and_type,
    _StorageInfo,
)
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from tierstore.checkpoints._commit import (
    COMMITS_DIR,
    DATA_DIR,
    Commit,
    CommitFile,
    CommitFormatError,
    check_run,
    checkpoint_name,
    parse_name,
)
from tierstore.checkpoints._objects import ObjectError, PreconditionFailed, S3Objects, StoreUri, crc64nvme, crc_b64
from tierstore.client._s3 import S3Settings
from tierstore.torch._lineage import opened_datasets

__all__ = ["CheckpointExistsError", "CheckpointNotFoundError", "TierstoreReader", "TierstoreWriter"]

log = logging.getLogger("tierstore.checkpoints")

METADATA_FILE = ".metadata"  # DCP's name for it (FileSystemWriter), so a pulled directory loads as is
KIND = "dcp"


class CheckpointExistsError(FileExistsError):
    """A commit for this step and run is already there (the first save is left as it was)."""


class CheckpointNotFoundError(FileNotFoundError):
    """No committed DCP checkpoint matches."""


def _parse_id(checkpoint_id: str | os.PathLike[str]) -> tuple[StoreUri, str | None]:
    """``s3://BUCKET/PREFIX`` (a store) or ``s3://BUCKET/PREFIX/commits/<name>.json`` (one
    checkpoint in it): the store and the checkpoint name, if one is named."""
    uri = StoreUri.parse(os.fspath(checkpoint_id))
    head, sep, last = uri.prefix.rpartition(f"{COMMITS_DIR}/")
    if sep and last.endswith(".json") and (not head or head.endswith("/")):
        name = last[: -len(".json")]
        parse_name(name)  # CommitFormatError (a ValueError) if it is not a checkpoint name
        return StoreUri(uri.bucket, head.rstrip("/")), name
    return uri, None


def _validate_id(checkpoint_id: str | os.PathLike[str]) -> bool:
    try:
        _parse_id(checkpoint_id)
    except (TypeError, ValueError):
        return False
    return True


def _default_run() -> str:
    """A run id for a save that was not given one: UTC time plus randomness (rank 0 picks it)."""
    return f"{time.strftime('%Y%m%dt%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


# --- what crosses between ranks (pickled by DCP's collectives) --------------------------------
@dataclass(frozen=True)
class _PlanData:
    """Rank 0's choice, sent to every rank in its SavePlan: where its files go."""

    run: str
    save_id: str
    file_prefix: str  # "__<rank>_"


@dataclass(frozen=True)
class _WrittenFile:
    path: str  # relative to data/<name>/
    key: str
    version_id: str | None
    size: int
    crc64nvme: str

    def commit_file(self) -> CommitFile:
        return CommitFile(self.path, self.key, self.version_id, self.size, self.crc64nvme)


@dataclass(frozen=True)
class _ItemData:
    """``WriteResult.storage_data``: where the item is (DCP's ``_StorageInfo``, what ``.metadata``
    keeps) and the file it is in (what the commit lists)."""

    info: _StorageInfo
    file: _WrittenFile


class TierstoreWriter(StorageWriter):
    """Writes a DCP checkpoint as ``step`` of ``run`` under ``s3://BUCKET/PREFIX``.

    Every rank uploads its own data files (``thread_count`` files per rank, in parallel, each
    from memory; multipart above 64 MiB); rank 0's ``finish`` writes ``.metadata`` and then the
    one commit object. A commit that already exists raises ``CheckpointExistsError`` (checked
    before any data is written, and again by the conditional PUT of the commit).

    ``run`` defaults to an id rank 0 makes up (UTC time plus randomness) in
    ``prepare_global_plan`` and sends to every rank in its plan's ``storage_data`` — the way
    FileSystemWriter hands out file prefixes — so all ranks agree without being told; pass
    ``run`` to group a training run's checkpoints (and to make a retry hit the same name).
    Needs DCP's collectives (``use_collectives=False`` would commit once per rank: refused).
    """

    def __init__(
        self,
        uri: str,
        *,
        step: int,
        run: str | None = None,
        settings: S3Settings | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        datasets: Sequence[str] | None = None,
        thread_count: int = 4,
    ) -> None:
        super().__init__()
        self.store, named = _parse_id(uri)
        if named is not None:
            raise ValueError(f"{uri!r} names a commit; a writer takes the store, s3://BUCKET/PREFIX")
        checkpoint_name(step, run or "x")  # validates step (and run, when given)
        if thread_count < 1:
            raise ValueError(f"thread_count {thread_count}: at least 1")
        self.step = step
        self.run = run
        self.metrics = dict(metrics or {})
        self.tags = dict(tags or {})
        self.datasets = list(datasets or [])
        Commit(step, "x", KIND, 0, [], metrics=self.metrics).user_metadata()  # validates metric names now
        self.thread_count = thread_count
        self.objects = S3Objects(settings, max_connections=2 * thread_count)
        self.is_coordinator = False
        self.rank = 0
        self._plan: _PlanData | None = None

    @property
    def name(self) -> str:
        """``<step>-<run>``, once the save's run is known (after planning)."""
        if self._plan is None:
            raise RuntimeError("the checkpoint name is known once DCP has planned the save")
        return checkpoint_name(self.step, self._plan.run)

    @property
    def checkpoint_id(self) -> str:
        return str(self.store)

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id:
            store, named = _parse_id(checkpoint_id)
            if named is not None:
                raise ValueError(f"{checkpoint_id!r} names a commit; a writer takes the store, s3://BUCKET/PREFIX")
            self.store = store
        self._plan = None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return _validate_id(checkpoint_id)

    def storage_meta(self) -> StorageMeta | None:
        return None

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if not kwargs.get("use_collectives", True):
            raise ValueError("TierstoreWriter needs DCP's collectives: one commit for all ranks")
        self.is_coordinator = is_coordinator
        self.rank = int(kwargs.get("rank") or 0)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        run = self.run or _default_run()
        self._check_not_committed(checkpoint_name(self.step, run))
        save_id = uuid.uuid4().hex[:12]
        return [dataclasses.replace(p, storage_data=_PlanData(run, save_id, f"__{i}_")) for i, p in enumerate(plans)]

    def _commit_key(self, name: str) -> str:
        return self.store.key(f"{COMMITS_DIR}/{name}.json")

    def _check_not_committed(self, name: str) -> None:
        key = self._commit_key(name)
        if any(o.key == key for o in self.objects.list(self.store.bucket, key)):
            raise CheckpointExistsError(f"checkpoint {name} is already committed in {self.store} ({key})")

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        pdata = plan.storage_data
        if not isinstance(pdata, _PlanData):
            raise TypeError(f"a save plan without TierstoreWriter's storage_data: {pdata!r}")
        self._plan = pdata
        data_dir = f"{DATA_DIR}/{self.name}"
        buckets = [b for b in _split_by_size_and_type(self.thread_count, plan.items) if b]
        results: list[WriteResult] = []
        with (
            ThreadPoolExecutor(self.thread_count, "tierstore-dcp-file") as files,
            ThreadPoolExecutor(self.thread_count, "tierstore-dcp-part") as parts,
        ):
            futures = []
            for n, items in enumerate(buckets):
                path = f"{pdata.file_prefix}{n}.{pdata.save_id}{DEFAULT_SUFFIX}"
                futures.append(files.submit(self._write_file, planner, items, path, data_dir, parts))
            for fut in futures:
                results += fut.result()
        done: Future[list[WriteResult]] = Future()
        done.set_result(results)
        return done

    def _write_file(
        self, planner: SavePlanner, items: list[WriteItem], path: str, data_dir: str, pool: ThreadPoolExecutor
    ) -> list[WriteResult]:
        """Serialize ``items`` as FileSystemWriter does (bytes items first, then tensors), then
        upload the pieces as one object without joining them."""
        pieces: list[memoryview] = []
        placed: list[tuple[MetadataIndex, int, int]] = []  # index, offset, length
        offset = 0
        ordered = [w for w in items if w.type == WriteItemType.BYTE_IO]
        ordered += [w for w in items if w.type != WriteItemType.BYTE_IO]
        for item in ordered:
            data = planner.resolve_data(item)
            buf = io.BytesIO()
            if item.type == WriteItemType.BYTE_IO:
                if not isinstance(data, io.BytesIO):
                    raise TypeError(f"{item.index.fqn}: a BYTE_IO item resolved to {type(data).__name__}")
                view = data.getbuffer()
            else:
                if not isinstance(data, torch.Tensor):
                    raise TypeError(f"{item.index.fqn}: a tensor item resolved to {type(data).__name__}")
                tensor = data.detach().cpu()
                if tensor.untyped_storage().nbytes() != tensor.nbytes:
                    tensor = tensor.clone()  # a view: save only its own bytes, not the whole storage
                torch.save(tensor, buf)
                view = buf.getbuffer()
            pieces.append(memoryview(view).cast("B"))
            placed.append((item.index, offset, view.nbytes))
            offset += view.nbytes
        key = self.store.key(f"{data_dir}/{path}")
        put = self.objects.put(self.store.bucket, key, pieces, pool=pool)
        assert put.size == offset, (put.size, offset)
        written = _WrittenFile(path, key, put.version_id, put.size, put.crc64nvme)
        return [
            WriteResult(
                index=index, size_in_bytes=length, storage_data=_ItemData(_StorageInfo(path, off, length), written)
            )
            for index, off, length in placed
        ]

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Rank 0: ``.metadata``, then the commit object (If-None-Match: *), written once."""
        if self._plan is None:
            raise RuntimeError("finish before write_data")
        name = self.name
        files: dict[str, CommitFile] = {}
        storage: dict[MetadataIndex, _StorageInfo] = {}
        for rank_results in results:
            for wr in rank_results:
                item = wr.storage_data
                if not isinstance(item, _ItemData):
                    raise TypeError(f"a write result without TierstoreWriter's storage_data: {item!r}")
                storage[wr.index] = item.info
                files[item.file.path] = item.file.commit_file()
        metadata.version = CURRENT_DCP_VERSION
        metadata.storage_data = storage
        metadata.storage_meta = self.storage_meta()
        self._check_not_committed(name)  # a duplicate that raced past planning writes no .metadata
        body = pickle.dumps(metadata)
        meta_key = self.store.key(f"{DATA_DIR}/{name}/{METADATA_FILE}")
        put = self.objects.put(self.store.bucket, meta_key, body)
        files[METADATA_FILE] = CommitFile(METADATA_FILE, meta_key, put.version_id, put.size, put.crc64nvme)
        commit = Commit(
            step=self.step,
            run=self._plan.run,
            kind=KIND,
            created_ns=time.time_ns(),
            files=[files[p] for p in sorted(files)],
            metrics=self.metrics,
            tags=self.tags,
            # explicit ones, plus every dataset version a tierstore loader opened in this (rank 0's) process
            datasets=sorted(set(self.datasets) | set(opened_datasets())),
            body={"metadata": METADATA_FILE, "save_id": self._plan.save_id, "world_size": len(results)},
        )
        key = self._commit_key(name)
        try:
            self.objects.put(
                self.store.bucket,
                key,
                commit.to_json(),
                if_none_match=True,
                metadata=commit.user_metadata(),
                tags=self.tags or None,
                content_type="application/json",
            )
        except PreconditionFailed as exc:
            raise CheckpointExistsError(
                f"checkpoint {name} was committed by another save while this one wrote its data"
                f" ({key}); this save's data files (save id {self._plan.save_id}) are not part of it"
            ) from exc
        log.info("committed DCP checkpoint %s (%d files, %d bytes) in %s", name, len(files), commit.size, self.store)


class TierstoreReader(StorageReader):
    """Reads a committed DCP checkpoint from ``s3://BUCKET/PREFIX``: ``step`` and ``run`` when
    given, else the newest step (and at one step, the most recently committed run).

    Only commit objects are looked at, so a save without a commit does not exist here. Every
    rank resolves the checkpoint when it reads the metadata; rank 0 then checks that all ranks
    resolved the same one (a commit landing mid-load fails the load instead of mixing two
    checkpoints). A file read whole is checked against the commit's CRC64NVME, a range by its
    length. Loading into another world size is DCP's resharding (the default planner).
    """

    def __init__(
        self,
        uri: str,
        *,
        step: int | None = None,
        run: str | None = None,
        settings: S3Settings | None = None,
        thread_count: int = 4,
    ) -> None:
        super().__init__()
        self.store, named = _parse_id(uri)
        self.step = step
        self.run = check_run(run) if run is not None else None
        if named is not None:
            self._pin(named)
        if thread_count < 1:
            raise ValueError(f"thread_count {thread_count}: at least 1")
        self.thread_count = thread_count
        self.objects = S3Objects(settings, max_connections=thread_count)
        self.commit: Commit | None = None
        self._storage: dict[MetadataIndex, _StorageInfo] = {}

    def _pin(self, name: str) -> None:
        step, run = parse_name(name)
        if (self.step is not None and self.step != step) or (self.run is not None and self.run != run):
            raise ValueError(f"checkpoint {name} but step={self.step}, run={self.run}")
        self.step, self.run = step, run

    @property
    def checkpoint_id(self) -> str:
        if self.commit is None:
            return str(self.store)
        return str(StoreUri(self.store.bucket, self.store.key(f"{COMMITS_DIR}/{self.commit.name}.json")))

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        self.commit = None
        self._storage = {}
        if checkpoint_id:
            self.store, named = _parse_id(checkpoint_id)
            if named is not None:
                self.step = self.run = None
                self._pin(named)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return _validate_id(checkpoint_id)

    # --- which checkpoint -------------------------------------------------------------
    def resolve(self) -> Commit:
        """The commit this reader loads: LIST ``commits/``, pick, GET it."""
        prefix = self.store.key(f"{COMMITS_DIR}/")
        best: tuple[int, int, str] | None = None  # step, modified, key
        for obj in self.objects.list(self.store.bucket, prefix):
            rel = obj.key[len(prefix) :]
            if "/" in rel or not rel.endswith(".json"):
                continue
            try:
                step, run = parse_name(rel[: -len(".json")])
            except CommitFormatError:
                log.warning("not a commit object: %s", obj.key)
                continue
            if (self.step is not None and step != self.step) or (self.run is not None and run != self.run):
                continue
            if best is None or (step, obj.modified_ns) > best[:2]:
                best = (step, obj.modified_ns, obj.key)
        if best is None:
            want = f" step {self.step}" if self.step is not None else ""
            want += f" run {self.run}" if self.run is not None else ""
            raise CheckpointNotFoundError(f"no committed checkpoint{want} in {self.store}")
        commit = Commit.from_json(self.objects.get(self.store.bucket, best[2]))
        if commit.kind != KIND:
            raise CheckpointNotFoundError(
                f"checkpoint {commit.name} in {self.store} is a {commit.kind!r} checkpoint, not a DCP one"
                " (load it with CheckpointStore)"
            )
        return commit

    def _file(self, path: str) -> CommitFile:
        assert self.commit is not None
        for f in self.commit.files:
            if f.path == path:
                return f
        raise CommitFormatError(f"checkpoint {self.commit.name}: {path!r} is not among its committed files")

    def _read_whole(self, f: CommitFile) -> bytes:
        data = self.objects.get(self.store.bucket, f.key, version_id=f.version_id)
        if len(data) != f.size or crc_b64(crc64nvme(data)) != f.crc64nvme:
            raise ObjectError(0, "ChecksumMismatch", f"{len(data)} bytes that do not match the commit", f.key)
        return data

    # --- StorageReader ------------------------------------------------------------------
    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if kwargs.get("rank") is not None:
            raise CheckpointNotFoundError("TierstoreReader reads the one global .metadata of a committed checkpoint")
        self.commit = self.resolve()
        meta_path = str(self.commit.body.get("metadata", METADATA_FILE))
        metadata = pickle.loads(self._read_whole(self._file(meta_path)))  # noqa: S301 - DCP's own format
        if not isinstance(metadata, Metadata):
            raise CommitFormatError(f"checkpoint {self.commit.name}: {meta_path} is not DCP Metadata")
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.checkpoint_id = self.checkpoint_id
        metadata.storage_meta.load_id = uuid.uuid4().hex
        return metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if metadata.storage_data is None:
            raise CommitFormatError("DCP metadata without storage_data")
        self._storage = cast(dict[MetadataIndex, _StorageInfo], metadata.storage_data)

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        assert self.commit is not None, "read_metadata first"
        return dataclasses.replace(plan, storage_data=self.commit.name)

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        names = {p.storage_data for p in plans}
        if len(names) != 1:
            raise CheckpointNotFoundError(
                f"ranks resolved different checkpoints {sorted(map(str, names))} (one was committed during the"
                " load); load again, or pass step= and run="
            )
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        per_file: dict[str, list[ReadItem]] = {}
        for item in plan.items:
            per_file.setdefault(self._info(item).relative_path, []).append(item)
        with ThreadPoolExecutor(self.thread_count, "tierstore-dcp-read") as pool:
            futures = {pool.submit(self._fetch, path, reqs): reqs for path, reqs in per_file.items()}
            for fut in as_completed(futures):
                for req, data in zip(futures[fut], fut.result(), strict=True):
                    self._apply(planner, req, data)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def _info(self, item: ReadItem) -> _StorageInfo:
        info = self._storage[item.storage_index]
        if info.transform_descriptors:
            raise CommitFormatError(f"{item.storage_index.fqn}: stream transforms {info.transform_descriptors}")
        return info

    def _fetch(self, path: str, reqs: list[ReadItem]) -> list[memoryview]:
        """Each request's bytes: the whole file (CRC checked) when the requests cover it, else
        one ranged GET per request (length checked)."""
        f = self._file(path)
        spans = [(self._info(r).offset, self._info(r).length) for r in reqs]
        for off, length in spans:
            if off < 0 or length < 0 or off + length > f.size:
                raise CommitFormatError(f"{path}: item at {off}+{length} outside the file's {f.size} bytes")
        if sum(length for _, length in set(spans)) >= f.size:
            whole = memoryview(self._read_whole(f))
            return [whole[off : off + length] for off, length in spans]
        out: list[memoryview] = []
        for off, length in spans:
            buf = bytearray(length)
            self.objects.get_into(self.store.bucket, f.key, memoryview(buf), version_id=f.version_id, offset=off)
            out.append(memoryview(buf))
        return out

    def _apply(self, planner: LoadPlanner, req: ReadItem, data: memoryview) -> None:
        if req.type == LoadItemType.BYTE_IO:
            planner.load_bytes(req, io.BytesIO(data))
            return
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(loaded, torch.Tensor):
            raise CommitFormatError(f"{req.storage_index.fqn}: not a tensor in the checkpoint")
        tensor = narrow_tensor_by_index(loaded, req.storage_offsets, req.lengths)
        target = planner.resolve_tensor(req).detach()
        if target.size() != tensor.size():
            raise CommitFormatError(f"{req.storage_index.fqn}: {tuple(tensor.size())} in the checkpoint, "
                                    f"{tuple(target.size())} to load into")  # fmt: skip
        target.copy_(tensor)
        planner.commit_tensor(req, target)
