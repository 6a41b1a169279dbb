"""``/_tierstore/datasets``: create, list, show and delete dataset versions; fetch manifests.

- ``GET    /_tierstore/datasets[?name=NAME]``        -> ``{"datasets": [record, ...]}``
- ``POST   /_tierstore/datasets``                    -> the new version's record (201). Body:
  ``{"name", "bucket"?, "prefix"? | "query"? | "rows"?, "label"?, "columns"?, "lineage"?}``
- ``GET    /_tierstore/datasets/NAME[/N]``           -> the record of NAME@N (latest without N)
- ``GET    /_tierstore/datasets/NAME/N/manifest``    -> the Parquet manifest
- ``GET    /_tierstore/datasets/NAME/N/manifest?head=K`` -> ``{"ref", "rows", "head": [row, ...]}``:
  the first K rows (K <= 1000) as JSON, read from the manifest's footer and first row group(s)
  only; given to a caller who may read the objects those rows name
- ``GET    /_tierstore/datasets/NAME/diff?a=N&b=M[&limit=L]`` -> ``{"a", "b", "added", "removed",
  "changed", "unchanged", "added_keys", "removed_keys", "changed_keys", "limit"}``: exact counts
  from NAME@N to NAME@M and up to L (default 200, at most 1000) samples of each kind
  (``{"bucket", "key", "member"}``); authorized as reading both manifests
  (``tierstore:GetDatasetManifest`` and every object of both versions). ``&wait_ms=W`` (W <=
  10000): when the diff is not computed within W ms, 202 ``{"a", "b", "state": "computing"}``
  at once; the computation goes on in the worker and a later call answers it (``state`` done)
- ``DELETE /_tierstore/datasets/NAME/N``             -> 204; the pins are released
- ``POST   /_tierstore/datasets/NAME/N/archive?to=CLASS`` -> NDJSON progress lines, the final one
  last (``state`` done or failed, with ``error``); moves every blob and inline body of NAME@N to
  tier CLASS (``tierstore:ArchiveDataset``; docs/tiers.md "Dataset archive")
- ``POST   /_tierstore/datasets/NAME/N/pin?job=JOB[&ttl=SECONDS]`` -> NDJSON progress, as archive:
  every blob of NAME@N held for JOB and copied locally (``tierstore:PinDataset``; "Job pins")
- ``DELETE /_tierstore/datasets/NAME/N/pin?job=JOB`` -> 204; the pin is dropped (``tierstore:UnpinDataset``)
- ``GET    /_tierstore/jobs``                        -> ``{"pins": [pin, ...]}`` (``tierstore:ListJobs``):
  ``{"job", "dataset", "blobs", "bytes", "cached_blobs", "cached_bytes", "state", "expires"?}``
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tierstore import errors as e
from tierstore.api._json import LazyArray
from tierstore.api._xml import iso8601
from tierstore.engine import (
    DIFF_KEYS_MAX,
    HEAD_ROWS_MAX,
    DatasetRecord,
    DatasetService,
    DatasetSpec,
    DiffNotReady,
    MoveProgress,
)
from tierstore.types import DatasetRef

__all__ = [
    "DATASET_MOVES", "ObjectReads", "check_reads",
    "dataset_request", "is_move", "jobs_answer", "manifest_answer", "move_request", "record_json",
    "refuse",
]

# ``NAME/N/<verb>``: method -> IAM action (the route name) of the requests that move a version's bytes
DATASET_MOVES: dict[str, dict[str, str]] = {
    "archive": {"POST": "tierstore:ArchiveDataset"},
    "pin": {"POST": "tierstore:PinDataset", "DELETE": "tierstore:UnpinDataset"},
}

_JSON = "application/json"


class ObjectReads(Protocol):
    """The read rights ``_extensions`` hands the dataset and model answers: a ``MayRead`` that
    also tells when every object of a bucket may be read in this request (``covers``)."""

    async def __call__(self, bucket: str, key: str | None, version_id: str | None) -> None: ...

    def covers(self, bucket: str) -> bool: ...


DIFF_KEYS_DEFAULT = 200
DIFF_WAIT_MS_MAX = 10_000  # the longest a diff call waits for its computation when asked to


def record_json(r: DatasetRecord) -> dict[str, Any]:
    return {
        "name": r.name,
        "version": r.version,
        "ref": f"{r.name}@{r.version}",
        "rows": r.rows,
        "bytes": r.bytes,
        "manifest_bytes": r.manifest_bytes,
        "created": iso8601(r.created_ns),
        "created_ns": r.created_ns,
        **r.info,
    }


def _spec(doc: dict[str, Any]) -> DatasetSpec:
    strings = ("bucket", "prefix", "query", "label")
    if not all(isinstance(doc.get(k), (str, type(None))) for k in strings):
        raise e.InvalidRequest(f"{', '.join(strings)} are strings.")
    rows, columns, lineage = doc.get("rows"), doc.get("columns") or [], doc.get("lineage")
    if rows is not None and not isinstance(rows, (list, LazyArray)):
        raise e.InvalidRequest("rows is a list of objects.")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise e.InvalidRequest("columns is a list of strings.")
    if lineage is not None and not isinstance(lineage, dict):
        raise e.InvalidRequest("lineage is an object.")
    return DatasetSpec(
        bucket=doc.get("bucket"),
        prefix=doc.get("prefix"),
        query=doc.get("query"),
        rows=rows,
        label=doc.get("label"),
        columns=columns,
        lineage=lineage,
    )


def _version(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise e.InvalidRequest(f"Bad dataset version {text[:20]!r}: a number from 1.")
    return int(text)


async def dataset_request(
    method: str,
    key: str,
    query: dict[str, str],
    read_json: Callable[[], Awaitable[dict[str, Any]]],
    datasets: DatasetService,
    may_read: ObjectReads | None = None,
) -> tuple[int, str, bytes]:
    """Answer one request under ``/_tierstore/datasets``: (status, content type, body).
    ``may_read``: the caller's read rights on objects (None: the root's, all): a dataset is made
    only of objects the caller may read, and its manifest (which names every object) is given
    only to a caller who may read each of them (docs/security.md "Datasets")."""
    parts = key.split("/")[1:]  # after "datasets"
    if not parts:
        if method == "GET":
            name = query.get("name")
            if name is not None:
                DatasetRef.parse(name)
            found = [record_json(r) for r in await datasets.list(name)]
            return 200, _JSON, json.dumps({"datasets": found}).encode()
        if method == "POST":
            doc = await read_json()
            name = doc.get("name")
            if not isinstance(name, str):
                raise e.InvalidRequest("A dataset needs a name.")
            record = await datasets.create(name, _spec(doc), may_read=may_read)
            return 201, _JSON, json.dumps(record_json(record)).encode()
        raise e.MethodNotAllowed()
    name = DatasetRef.parse(parts[0]).name
    if len(parts) == 1:
        if method != "GET":
            raise e.MethodNotAllowed()
        return 200, _JSON, json.dumps(record_json(await datasets.get(name))).encode()
    if len(parts) == 2 and parts[1] == "diff":
        if method != "GET":
            raise e.MethodNotAllowed()
        return await diff_answer(datasets, name, query, may_read)
    version = _version(parts[1])
    if len(parts) == 2:
        if method == "GET":
            return 200, _JSON, json.dumps(record_json(await datasets.get(name, version))).encode()
        if method == "DELETE":
            await datasets.delete(name, version)
            return 204, _JSON, b""
        raise e.MethodNotAllowed()
    if len(parts) == 3 and parts[2] == "manifest":
        if method != "GET":
            raise e.MethodNotAllowed()
        return await manifest_answer(datasets, await datasets.get(name, version), may_read, query)
    raise e.NotImplementedOperation(f"No dataset operation {key[:60]!r}.")


def _count(query: dict[str, str], name: str, default: int | None, most: int) -> int:
    """Query parameter ``name``: a whole number from 0 to ``most`` (``default`` when absent)."""
    text = query.get(name)
    if text is None and default is not None:
        return default
    if text is None or not (text.isascii() and text.isdigit()) or int(text) > most:
        raise e.InvalidRequest(f"Bad {name} {(text or '')[:20]!r}: a number from 0 to {most}.")
    return int(text)


async def manifest_answer(
    service: DatasetService, record: DatasetRecord, may_read: ObjectReads | None, query: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """A dataset's (model's) Parquet manifest, given only to a caller who may read every object
    it names (``may_read`` raises AccessDenied; None: the root). With ``?head=K``: its first K
    rows as JSON, read from the footer and the row groups they are in only, given to a caller
    who may read the objects those rows name (they are all it reveals; the counts and sizes
    are the record's)."""
    if query is not None and "head" in query:
        rows = _count(query, "head", None, HEAD_ROWS_MAX)
        table = await service.reads.head(record, rows)
        if may_read is not None:
            buckets, keys = table.column("bucket").to_pylist(), table.column("key").to_pylist()
            for bucket, key in dict.fromkeys(zip(buckets, keys, strict=True)):
                await may_read(bucket, key, None)
        head = table.drop_columns([c for c in ("enc",) if c in table.column_names]).to_pylist()
        doc = {"ref": f"{record.name}@{record.version}", "rows": record.rows, "head": head}
        return 200, _JSON, json.dumps(doc).encode()
    if may_read is not None:
        await check_reads(may_read, [await service.source_columns(record)])
    return 200, "application/vnd.apache.parquet", await service.manifest_bytes(record)


async def check_reads(may_read: ObjectReads, columns: list[tuple[Any, Any]]) -> None:
    """``may_read`` (s3:GetObject) on every distinct object of ``columns`` (pairs of Arrow
    columns: bucket, key), bucket by bucket: the bucket's first object is checked, and when that
    check showed the caller may read every object of the bucket (``covers``: an allow that tells
    none of its keys apart), its other objects need none; otherwise each is checked."""
    import pyarrow.compute as pc

    covered: set[str] = set()
    for buckets, keys in columns:
        for bucket in pc.unique(buckets).to_pylist():
            if bucket in covered:
                continue
            first, *others = dict.fromkeys(keys.filter(pc.equal(buckets, bucket)).to_pylist())
            await may_read(bucket, first, None)
            if may_read.covers(bucket):
                covered.add(bucket)
                continue
            for key in others:
                await may_read(bucket, key, None)


async def diff_answer(
    service: DatasetService, name: str, query: dict[str, str], may_read: ObjectReads | None
) -> tuple[int, str, bytes]:
    """``NAME/diff?a=N&b=M[&limit=L]``: what changed from NAME@N to NAME@M, computed on the server
    from the two manifests' identity columns. A diff reveals parts of both manifests, so it is
    authorized as reading both: every object of both versions (None: the root)."""
    a, b = _version(query.get("a", "")), _version(query.get("b", ""))
    limit = _count(query, "limit", DIFF_KEYS_DEFAULT, DIFF_KEYS_MAX)
    older, newer = await service.get(name, a), await service.get(name, b)
    if may_read is not None:  # every object of both versions
        await check_reads(may_read, await service.reads.object_columns(older, newer))
    wait_ms = _count(query, "wait_ms", None, DIFF_WAIT_MS_MAX) if "wait_ms" in query else None
    try:
        d = await service.reads.diff(older, newer, limit, wait=None if wait_ms is None else wait_ms / 1000)
    except DiffNotReady:
        computing = {"a": f"{name}@{a}", "b": f"{name}@{b}", "state": "computing"}
        return 202, _JSON, json.dumps(computing).encode()
    doc: dict[str, Any] = {"a": f"{name}@{a}", "b": f"{name}@{b}", "state": "done", **d.to_json(), "limit": limit}
    return 200, _JSON, json.dumps(doc).encode()


def is_move(key: str) -> bool:
    """Whether ``key`` (``datasets/...``) names a move of a version's bytes (``move_request``)."""
    parts = key.split("/")[1:]
    return len(parts) == 3 and parts[2] in DATASET_MOVES


async def move_request(
    method: str, key: str, query: dict[str, str], datasets: DatasetService
) -> tuple[asyncio.Task[MoveProgress], MoveProgress] | None:
    """``.../NAME/N/archive?to=CLASS``, ``.../NAME/N/pin?job=JOB[&ttl=S]`` (POST: start or join;
    the task and its live progress, streamed by the caller; DELETE of a pin: None, 204). A bad
    name, version, tier or job, a missing version: raised here, before anything streams."""
    parts = key.split("/")[1:]
    name, version = DatasetRef.parse(parts[0]).name, _version(parts[1])
    if parts[2] == "archive":
        tier = query.get("to")
        if not tier:
            raise e.InvalidRequest('An archive needs the tier: "?to=CLASS".')
        return await datasets.archive(name, version, tier)
    job = query.get("job")
    if not job:
        raise e.InvalidRequest('A pin needs the job: "?job=JOB".')
    if method == "DELETE":
        await datasets.unpin(name, version, job)
        return None
    ttl = query.get("ttl")
    try:
        ttl_s = float(ttl) if ttl is not None else None
    except ValueError:
        raise e.InvalidRequest(f"Bad ttl {(ttl or '')[:20]!r}: seconds.") from None
    return await datasets.pin(name, version, job, ttl_s=ttl_s)


async def jobs_answer(datasets: DatasetService) -> bytes:
    """``GET /_tierstore/jobs``: every job's pins."""
    pins = []
    for job, ref, info in await datasets.jobs():
        doc: dict[str, Any] = {
            "job": job, "dataset": ref, "blobs": info.blobs, "bytes": info.bytes, "cached_blobs": info.cached_blobs,
            "cached_bytes": info.cached_bytes, "state": "copying" if info.ongoing else "pinned",
        }  # fmt: skip
        if info.expires_ns is not None:
            doc["expires"] = iso8601(info.expires_ns)
        if datasets.gateway_pins is not None:  # --store: each gateway's cache of it
            doc["gateways"] = [p.to_dict() for p in await datasets.gateway_pins.progress(info.holder)]
        pins.append(doc)
    return json.dumps({"pins": pins}).encode()


def refuse(key: str) -> None:
    """Raise the error of a request under ``/_tierstore/datasets`` that names no action (the
    route table's Unknown): the name and version are checked first, as ``dataset_request`` does,
    then 501 for a path it does not know, else 405."""
    parts = key.split("/")[1:]
    if parts:
        DatasetRef.parse(parts[0])
    if len(parts) == 2 and parts[1] == "diff":
        raise e.MethodNotAllowed()
    if len(parts) >= 2:
        _version(parts[1])
    if len(parts) > 3 or (len(parts) == 3 and parts[2] != "manifest" and parts[2] not in DATASET_MOVES):
        raise e.NotImplementedOperation(f"No dataset operation {key[:60]!r}.")
    raise e.MethodNotAllowed()
