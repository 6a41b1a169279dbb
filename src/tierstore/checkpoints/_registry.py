"""The model registry from Python, without torch: register a checkpoint as ``NAME@N``, pull a
model version into a directory for an inference server, walk its lineage (docs/checkpoints.md).

The server keeps the registry (``/_tierstore/models``, engine/_models.py) and pins the bytes;
this module knows the checkpoint layout (``_commit.py``): it reads the commit object, turns its
files into manifest rows (byte ranges of at most ``split_bytes``, ``member``: the file's path)
plus one row for the commit itself (``member`` ``COMMIT.json``), and sends them. A pull reads the
rows back in batches, writes each at its offset, verifies every file's size and CRC64NVME against
the pinned commit, and only then renames the directory into place.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tierstore.checkpoints._commit import COMMITS_DIR, Commit, CommitFile, parse_name
from tierstore.checkpoints._objects import S3Objects, StoreUri, crc64nvme, crc_b64
from tierstore.client import TierstoreClient
from tierstore.types import MODEL_COMMIT_MEMBER, DatasetRef, ModelRef

__all__ = [
    "CommitLocation",
    "ModelPullError",
    "file_changed",
    "lineage",
    "model_info",
    "model_rows",
    "pull_model",
    "register_model",
    "resolve_commit",
]

log = logging.getLogger("tierstore.checkpoints")

SPLIT_BYTES = 64 << 20  # a manifest row covers at most this much of a file
BATCH_BYTES = 256 << 20  # a pull asks for at most this much per batch request
_BATCH_ROWS = 10_000  # the server's limit on rows per batch
_VERIFY_CHUNK = 8 << 20
_LINEAGE_DEPTH = 16


class ModelPullError(Exception):
    """A pull that could not produce a verified copy (nothing is left in the destination)."""


@dataclass(frozen=True, slots=True)
class CommitLocation:
    bucket: str
    key: str


def resolve_commit(objects: S3Objects, checkpoint: str) -> CommitLocation:
    """The commit object ``checkpoint`` names: ``s3://BUCKET/PREFIX`` (the latest checkpoint:
    highest step, then run id), ``s3://BUCKET/PREFIX@STEP`` (the one at that step) or the commit
    object's own key ``s3://BUCKET/.../commits/<name>.json``."""
    base, sep, step_text = checkpoint.rpartition("@")
    step: int | None = None
    if sep and step_text.isdigit():
        checkpoint, step = base, int(step_text)
    uri = StoreUri.parse(checkpoint)
    parent, _, leaf = uri.prefix.rpartition("/")
    if step is None and leaf.endswith(".json") and parent.rpartition("/")[2] == COMMITS_DIR:
        return CommitLocation(uri.bucket, uri.prefix)
    commits_prefix = uri.key(COMMITS_DIR + "/")
    found: list[tuple[int, str, str]] = []
    for obj in objects.list(uri.bucket, commits_prefix):
        name = obj.key[len(commits_prefix) :].removesuffix(".json")
        try:
            s, run = parse_name(name)
        except ValueError:
            continue
        if step is None or s == step:
            found.append((s, run, obj.key))
    if not found:
        at = f" at step {step}" if step is not None else ""
        raise FileNotFoundError(f"no checkpoint{at} under {uri} (no commit object in {commits_prefix})")
    if step is not None and len(found) > 1:
        runs = ", ".join(run for _, run, _ in found)
        raise ValueError(f"step {step} under {uri} has several checkpoints (runs {runs}): name the commit object")
    return CommitLocation(uri.bucket, max(found)[2])


def _read_commit(objects: S3Objects, where: CommitLocation) -> tuple[Commit, str | None]:
    resp = objects.s3.get_object(Bucket=where.bucket, Key=where.key)
    data = resp["Body"].read()
    version_id = resp.get("VersionId")
    return Commit.from_json(data), (None if version_id in (None, "null") else version_id)


def model_rows(bucket: str, commit_key: str, commit_version_id: str | None, commit: Commit,
               split_bytes: int = SPLIT_BYTES) -> list[dict[str, Any]]:  # fmt: skip
    """The manifest rows of a model version of ``commit``: each data file in ranges of at most
    ``split_bytes`` (``member``: its path), then the commit object whole."""
    if split_bytes < 1:
        raise ValueError("split_bytes must be >= 1")
    rows: list[dict[str, Any]] = []
    for f in commit.files:
        _check_path(f.path)
        offsets = range(0, f.size, split_bytes) if f.size else [0]
        for offset in offsets:
            rows.append({"bucket": bucket, "key": f.key, "version_id": f.version_id, "offset": offset,
                         "size": min(split_bytes, f.size - offset), "member": f.path})  # fmt: skip
    rows.append({"bucket": bucket, "key": commit_key, "version_id": commit_version_id, "member": MODEL_COMMIT_MEMBER})
    return rows


def _check_unchanged(objects: S3Objects, bucket: str, commit: Commit) -> None:
    """Every data file is still what the commit recorded (size and CRC64NVME, by HEAD): on an
    unversioned bucket a file overwritten since the save would otherwise be pinned as the model."""
    for f in commit.files:
        try:
            head = objects.s3.head_object(
                Bucket=bucket,
                Key=f.key,
                ChecksumMode="ENABLED",
                **({"VersionId": f.version_id} if f.version_id else {}),
            )
        except Exception as exc:
            raise ValueError(
                f"checkpoint {commit.name}: data file s3://{bucket}/{f.key} cannot be read: {exc}"
            ) from exc
        stored = head.get("ChecksumCRC64NVME")
        if stored is None and int(head["ContentLength"]) == f.size:
            # written without a CRC64NVME (not by a tierstore checkpoint writer): read it once
            stored = crc_b64(_read_crc(objects, bucket, f.key, f.version_id, f.size))
        problem = file_changed(commit, bucket, f, int(head["ContentLength"]), stored)
        if problem:
            raise ValueError(problem)


def file_changed(commit: Commit, bucket: str, f: CommitFile, size: int, crc: str | None) -> str | None:
    """Why data file ``f`` (now ``size`` bytes with CRC64NVME ``crc``) is not what ``commit``
    recorded, or None when it is."""
    if size != f.size or crc != f.crc64nvme:
        return (f"checkpoint {commit.name}: data file s3://{bucket}/{f.key} changed since it was committed"
                f" ({size} bytes, CRC64NVME {crc}; the commit says {f.size}, {f.crc64nvme})")  # fmt: skip
    return None


def _read_crc(objects: S3Objects, bucket: str, key: str, version_id: str | None, size: int) -> int:
    """CRC64NVME of an object's bytes, read in ranges of at most 64 MiB into one buffer."""
    buf = memoryview(bytearray(min(size, 64 << 20)))
    crc = 0
    for offset in range(0, size, len(buf) or 1):
        n = min(len(buf), size - offset)
        objects.get_into(bucket, key, buf[:n], version_id=version_id, offset=offset)
        crc = crc64nvme(buf[:n], crc)
    return crc


def _check_path(path: str) -> PurePosixPath:
    """A checkpoint file's path, safe to write below a directory (relative, no ``..``)."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or str(p) == MODEL_COMMIT_MEMBER:
        raise ValueError(f"a checkpoint file path that cannot be pulled: {path!r}")
    return p


def model_info(where: CommitLocation, version_id: str | None, commit: Commit) -> dict[str, Any]:
    """What a model version records about the checkpoint it was registered from."""
    return {"checkpoint": f"s3://{where.bucket}/{where.key}", "commit_version_id": version_id, "step": commit.step,
            "run": commit.run, "kind": commit.kind, "created_ns": commit.created_ns, "metrics": commit.metrics,
            "datasets": commit.datasets, "tags": commit.tags}  # fmt: skip


def register_model(
    client: TierstoreClient,
    name: str,
    checkpoint: str,
    *,
    alias: str | None = None,
    objects: S3Objects | None = None,
    split_bytes: int = SPLIT_BYTES,
) -> dict[str, Any]:
    """Register ``checkpoint`` (``s3://BUCKET/PREFIX``: its latest; ``...@STEP``; or the commit
    object's key) as the next version of model ``name``; the server pins every byte of it.
    ``alias``: also point ``name@alias`` at the new version. Returns the version's record."""
    parsed = ModelRef.parse(name)
    if parsed.version is not None or parsed.alias is not None:
        raise ValueError(f"register takes a model name without @: {name!r}")
    objects = objects or S3Objects(client.settings)
    where = resolve_commit(objects, checkpoint)
    commit, version_id = _read_commit(objects, where)
    _check_unchanged(objects, where.bucket, commit)
    rows = model_rows(where.bucket, where.key, version_id, commit, split_bytes)
    record = client.create_model(name, rows, model_info(where, version_id, commit))
    if alias is not None:
        client.set_model_alias(name, alias, record["version"])
        record["aliases"] = [alias]
    return record


# --- pull ---------------------------------------------------------------------------------
def _batches(sizes: list[int], batch_bytes: int) -> Iterator[list[int]]:
    batch: list[int] = []
    total = 0
    for row, size in enumerate(sizes):
        if batch and (total + size > batch_bytes or len(batch) >= _BATCH_ROWS):
            yield batch
            batch, total = [], 0
        batch.append(row)
        total += size
    if batch:
        yield batch


def pull_model(
    client: TierstoreClient,
    ref: str,
    directory: str | os.PathLike[str],
    *,
    progress: bool = True,
    replace: bool = False,
    batch_bytes: int = BATCH_BYTES,
) -> Path:
    """Fetch model version ``ref`` (``NAME@N``, ``NAME@ALIAS`` or ``NAME``) into ``directory``:
    the checkpoint's files under their paths plus ``COMMIT.json``. Every file's size and
    CRC64NVME are checked against the commit before the directory appears (it is written as
    ``DIRECTORY.partial`` and renamed), so a reader never sees a half or damaged pull; on a
    mismatch ``ModelPullError`` is raised and nothing is left. An existing ``directory`` is
    refused unless ``replace``. Returns the directory."""
    from tqdm import tqdm

    from tierstore._parquet import read_parquet

    dest = Path(directory)
    if dest.exists() and not replace:
        raise FileExistsError(f"{dest} exists (pass replace=True to swap in the new version)")
    record = client.model_info(ref)  # resolve an alias once: the pull reads that version even if it moves
    version_ref = record["ref"]
    table = read_parquet(client.model_manifest(version_ref), ["member", "offset", "size"])
    members: list[str] = table.column("member").to_pylist()
    offsets: list[int | None] = table.column("offset").to_pylist()
    sizes: list[int] = table.column("size").to_pylist()
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # a pull that died earlier
    partial.mkdir(parents=True)
    fds: dict[str, int] = {}
    try:
        for member in dict.fromkeys(members):
            rel = PurePosixPath(MODEL_COMMIT_MEMBER) if member == MODEL_COMMIT_MEMBER else _check_path(member)
            path = partial.joinpath(*rel.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            fds[member] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with tqdm(total=sum(sizes), unit="B", unit_scale=True, unit_divisor=1024, desc=version_ref,
                  disable=not progress) as bar:  # fmt: skip
            for batch in _batches(sizes, batch_bytes):
                got = 0
                for item in client.read_model_rows(version_ref, batch, fail_fast=True):
                    row = batch[item.index]
                    if not item.ok:
                        raise ModelPullError(f"{version_ref}: row {row} ({members[row]}): {item.error}")
                    if len(item.data) != sizes[row]:
                        raise ModelPullError(f"{version_ref}: row {row} ({members[row]}): {len(item.data)} bytes, "
                                             f"expected {sizes[row]}")  # fmt: skip
                    _pwrite_all(fds[members[row]], item.data, offsets[row] or 0)
                    bar.update(len(item.data))
                    got += 1
                if got != len(batch):
                    raise ModelPullError(f"{version_ref}: {got} of {len(batch)} rows came back")
        for fd in fds.values():
            os.fsync(fd)
        for fd in list(fds.values()):
            os.close(fd)
        fds.clear()
        _verify(partial, version_ref)
        _fsync_dir(partial)
        if dest.exists():  # replace: the old directory goes only once the new one is complete
            old = dest.with_name(dest.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            dest.rename(old)
            partial.rename(dest)
            shutil.rmtree(old)
        else:
            partial.rename(dest)
        _fsync_dir(dest.parent)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dest


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify(root: Path, ref: str) -> None:
    """Every file the pulled commit names has its size and CRC64NVME; nothing else is there."""
    try:
        commit = Commit.from_json((root / MODEL_COMMIT_MEMBER).read_bytes())
    except ValueError as exc:
        raise ModelPullError(f"{ref}: the pulled commit object is not readable: {exc}") from exc
    expected = {str(_check_path(f.path)): f for f in commit.files}
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MODEL_COMMIT_MEMBER}
    if present != set(expected):
        raise ModelPullError(f"{ref}: the files pulled differ from the commit's: {sorted(present ^ set(expected))[:5]}")
    for rel, f in expected.items():
        path = root / rel
        size = path.stat().st_size
        if size != f.size:
            raise ModelPullError(f"{ref}: {rel}: {size} bytes, the commit says {f.size}")
        crc = 0
        with path.open("rb") as fh:
            while chunk := fh.read(_VERIFY_CHUNK):
                crc = crc64nvme(chunk, crc)
        if crc_b64(crc) != f.crc64nvme:
            raise ModelPullError(f"{ref}: {rel}: CRC64NVME {crc_b64(crc)}, the commit says {f.crc64nvme}")


# --- lineage ------------------------------------------------------------------------------
def _dataset_node(client: TierstoreClient, ref: str, depth: int) -> dict[str, Any]:
    """``ref``'s record summary and, for a derived dataset, its source's node (recursively)."""
    from tierstore.client import TierstoreClientError

    node: dict[str, Any] = {"ref": ref, "found": False}
    try:
        DatasetRef.parse(ref)
        rec = client.dataset_info(ref)
    except (ValueError, TierstoreClientError) as exc:
        node["error"] = str(exc)
        return node
    lineage_doc = rec.get("lineage") or {}
    node.update(found=True, ref=rec["ref"], rows=rec["rows"], bytes=rec["bytes"], source=rec.get("source"),
                lineage=rec.get("lineage"), record=rec)  # fmt: skip
    src = lineage_doc.get("source")
    if isinstance(src, str) and depth > 0:
        node["derived_from"] = _dataset_node(client, src, depth - 1)
    return node


def lineage(client: TierstoreClient, ref: str) -> dict[str, Any]:
    """What model version ``ref`` came from: ``{"model": record summary, "checkpoint": {uri,
    version_id, step, run, kind, metrics, tags}, "datasets": [node, ...]}``; a dataset node is
    ``{ref, found, rows, bytes, source, lineage, record, derived_from?: node}`` (``found`` False
    and ``error`` for a dataset version that is gone), following derived datasets to their source."""
    rec = client.model_info(ref)
    checkpoint = dict(rec.get("checkpoint") or {})
    datasets = [_dataset_node(client, d, _LINEAGE_DEPTH) for d in checkpoint.pop("datasets", None) or []]
    model = {k: rec.get(k) for k in ("ref", "name", "version", "aliases", "created", "rows", "bytes")}
    return {"model": model, "checkpoint": checkpoint, "datasets": datasets}
