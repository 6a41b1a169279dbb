"""The ``/_tierstore/`` extensions (JSON): metadata query, batch reads, datasets and models
(their own modules, ``_datasets``/``_models``), admin info and heal, the admin faces of
identities, the key service and tiers (``_identity_ext``, ``_kms_ext``, ``_tiers_ext``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from tierstore import errors as e
from tierstore.api import _datasets, _models
from tierstore.api._authorize import BucketWideAllows, Check, bucket_arn, object_arn
from tierstore.api._errors import status_of
from tierstore.api._identity_ext import identity_request
from tierstore.api._kms_ext import kms_request
from tierstore.api._objects import result_status
from tierstore.api._request import Context, Request, Response
from tierstore.api._tiers_ext import tier_request
from tierstore.api._xml import iso8601
from tierstore.engine import Repairer, RowRead, rewrap_page, stream_progress
from tierstore.types import BATCH_FRAME, BATCH_TRAILER, ByteRange, DatasetRef, GetOptions, ModelRef

__all__ = [
    "admin_heal", "admin_info", "batch", "datasets", "identities", "jobs", "kms_keys", "models", "query", "refuse",
    "tiers", "usage",
]

MAX_BATCH_ENTRIES = 10_000
_OPS = ("admin/metrics", "admin/audit", "admin/restores")  # _ops_ext: GET only
MAX_BATCH_BODY = 4 * 1024 * 1024
MAX_DATASET_BODY = 256 * 1024 * 1024  # a dataset made of explicit rows (derive): ~150 bytes a row
BATCH_SEND_BYTES = 256 * 1024  # small entries are sent together in chunks of about this size


async def datasets(req: Request, ctx: Context) -> Response:
    """Every ``tierstore:*Dataset*`` action: ``_datasets.dataset_request`` answers by path."""
    service = ctx.dataset_service()
    if _datasets.is_move(req.key or ""):
        started = await _datasets.move_request(req.method, req.key or "", req.query, service)
        if started is None:
            return Response(204, [], b"")
        task, progress = started
        return Response(200, [("content-type", "application/x-ndjson")], stream=stream_progress(task, lambda: progress))
    # A dataset's explicit rows stay in the body's bytes until read (api/_json.py).
    read_json = lambda: req.json_body(MAX_DATASET_BODY, "rows")  # noqa: E731
    status, content_type, body = await _datasets.dataset_request(
        req.method, req.key or "", req.query, read_json, service, _may_read(req, ctx)
    )
    return Response(status, [("content-type", content_type)], body)


async def jobs(req: Request, ctx: Context) -> Response:
    """``GET /_tierstore/jobs`` (tierstore:ListJobs): every job's dataset pins."""
    return Response(200, [("content-type", "application/json")], await _datasets.jobs_answer(ctx.dataset_service()))


async def usage(req: Request, ctx: Context) -> Response:
    """``GET /_tierstore/usage`` (tierstore:BucketUsage): objects, versions and bytes of each
    bucket the caller may list (s3:ListBucket), from the metrics' cached aggregate (recomputed
    in the background, never per request, at most every 30 s: docs/observability.md).
    ``{"buckets": [{"bucket", "objects", "object_bytes", "versions", "delete_markers",
    "stored_bytes"}], "complete": bool}``; complete is false when the store
    has more buckets than the aggregate covers."""
    cached = await ctx.metrics.usage(ctx.service)
    rows = []
    for u in cached.buckets if cached is not None else []:
        if await ctx.entry_allowed(req, Check("s3:ListBucket", bucket_arn(u.bucket))):
            rows.append({
                "bucket": u.bucket, "objects": u.objects, "object_bytes": u.object_bytes, "versions": u.versions,
                "delete_markers": u.delete_markers, "stored_bytes": u.stored_bytes,
            })  # fmt: skip
    complete = cached is not None and cached.total_buckets <= len(cached.buckets)
    body = json.dumps({"buckets": rows, "complete": complete}).encode()
    return Response(200, [("content-type", "application/json")], body)


async def models(req: Request, ctx: Context) -> Response:
    """Every ``tierstore:*Model*`` action: ``_models.model_request`` answers by path."""
    service = ctx.model_service()
    status, content_type, body = await _models.model_request(
        req.method, req.key or "", req.query, lambda: req.json_body(MAX_DATASET_BODY), service, _may_read(req, ctx)
    )
    return Response(status, [("content-type", content_type)], body)


def _is_root(req: Request) -> bool:
    """Whether the root was authorized (it may read everything: per-object checks are skipped)."""
    decided = req.authz.decision if req.authz is not None else None
    return getattr(decided, "source", None) == "root"


def _may_read(req: Request, ctx: Context) -> _ObjectReads | None:
    """The caller's read rights for a dataset's sources, checked by the authorizer per entry:
    ``s3:ListBucket`` on a bucket listed whole, ``s3:GetObject`` (``s3:GetObjectVersion``) on
    an object. None for the root."""
    if _is_root(req):
        return None
    return _ObjectReads(req, ctx)


class _ObjectReads:
    """``MayRead`` for one request (``_may_read``). Once one object's check is allowed by an
    allow the authorizer remembers bucket-wide (``IamAuthorizer.allows_every_object``: no
    statement tells the bucket's keys apart), the other objects of that bucket need no check:
    a manifest of 1,000,000 objects is one check per bucket (``covers``, api/_datasets.py
    ``check_reads``), not a million. Per request: what a later policy change allows or denies
    applies to the next request."""

    __slots__ = ("ctx", "every", "req", "wide")

    def __init__(self, req: Request, ctx: Context) -> None:
        self.req, self.ctx = req, ctx
        self.every: set[tuple[str, str]] = set()  # (action, bucket) allowed on every object of it
        self.wide = ctx.authorizer if isinstance(ctx.authorizer, BucketWideAllows) else None

    async def __call__(self, bucket: str, key: str | None, version_id: str | None) -> None:
        req, ctx = self.req, self.ctx
        if key is None:
            await ctx.authorize_entry(req, Check("s3:ListBucket", bucket_arn(bucket)))
            return
        action = "s3:GetObject" if version_id is None else "s3:GetObjectVersion"
        if (action, bucket) in self.every:
            return
        await ctx.authorize_entry(req, Check(action, object_arn(bucket, key)))
        wide = self.wide
        if wide is not None and req.authz is not None and await wide.allows_every_object(req.authz, action, bucket):
            self.every.add((action, bucket))

    def covers(self, bucket: str) -> bool:
        """Whether every object of ``bucket`` may be read (s3:GetObject) in this request."""
        return ("s3:GetObject", bucket) in self.every


def _admin(req: Request, ctx: Context) -> Repairer:
    # The dispatcher authorized tierstore:Admin (the root, or a user's policy).
    if ctx.admin is None:
        raise e.NotImplementedOperation(f"No tierstore extension named '{(req.key or '')[:60]}'.")
    return ctx.admin


async def admin_info(req: Request, ctx: Context) -> Response:
    admin = _admin(req, ctx)
    body = json.dumps(await admin.info()).encode()  # async: it reads the catalog
    return Response(200, [("content-type", "application/json")], body)


async def admin_heal(req: Request, ctx: Context) -> Response:
    """POST /_tierstore/admin/heal ``{"verify_encryption"?: bool}`` -> NDJSON progress, the final
    report last (engine/_repair.py)."""
    admin = _admin(req, ctx)
    raw = await req.read_buffer(4096, json_body=True)
    try:
        doc = json.loads(raw) if raw.strip() else {}  # no body: a plain heal, as before
    except ValueError:
        doc = None
    verify_encryption = doc.get("verify_encryption", False) if isinstance(doc, dict) else None
    if not isinstance(verify_encryption, bool):
        raise e.InvalidRequest('Expected {"verify_encryption"?: bool}.')
    task = admin.start(kind="heal", verify_encryption=verify_encryption)
    return Response(
        200, [("content-type", "application/x-ndjson")], stream=stream_progress(task, lambda: admin.current)
    )


async def identities(req: Request, ctx: Context) -> Response:
    """``/_tierstore/admin/users`` and ``/_tierstore/admin/keys``: ``_identity_ext`` (each
    endpoint's IAM action is authorized by the dispatcher, or by ``authorize_entry`` when the
    body or a key id names its user)."""
    if ctx.identities is None:
        raise e.NotImplementedOperation(f"No tierstore extension named '{(req.key or '')[:60]}'.")
    status, body = await identity_request(ctx.identities, req, lambda check: ctx.authorize_entry(req, check))
    return Response(status, [("content-type", "application/json")], body)


async def kms_keys(req: Request, ctx: Context) -> Response:
    """``/_tierstore/admin/kms/keys``: ``_kms_ext`` (listing and creating are authorized by the
    dispatcher; an endpoint naming a key, by ``authorize_entry`` on the key's ARN)."""
    if ctx.kms is None:
        raise e.NotImplementedOperation(f"No tierstore extension named '{(req.key or '')[:60]}'.")
    region = ctx.service.region
    kms = ctx.kms

    async def rewrap(key_id: str, after: str | None, limit: int) -> dict[str, Any]:
        page = await rewrap_page(ctx.service.catalog, kms, key_id, after=after, limit=limit)
        return page.to_dict()

    status, body = await kms_request(kms, req, region, lambda check: ctx.authorize_entry(req, check), rewrap)
    return Response(status, [("content-type", "application/json")], body)


async def tiers(req: Request, ctx: Context) -> Response:
    """``/_tierstore/admin/tiers``: ``_tiers_ext`` (each endpoint's tierstore: action was
    authorized by the dispatcher; a batch of transitions, each entry's here)."""
    status, body = await tier_request(
        ctx.service, req, lambda b, k: ctx.authorize_entry(req, Check("tierstore:TransitionObject", object_arn(b, k)))
    )
    return Response(status, [("content-type", "application/json")], body)


def refuse(req: Request, ctx: Context) -> None:
    """Raise the error of an extension request that names no action (the route table's Unknown)."""
    key = req.key or ""
    area = key.partition("/")[0]
    if key in ("query", "batch") or (key in ("admin/info", "admin/heal") and ctx.admin is not None) or key in _OPS:
        raise e.MethodNotAllowed()
    if area == "datasets":
        ctx.dataset_service()
        _datasets.refuse(key)
    if area == "models":
        _models.refuse(key, ctx.model_service())
    raise e.NotImplementedOperation(f"No tierstore extension named '{key[:60]}'.")


async def query(req: Request, ctx: Context) -> Response:
    """POST /_tierstore/query {"bucket", "query", "cursor"?} -> {"objects": [...], "next_cursor"}."""
    doc = await req.json_body()
    bucket, text, cursor = doc.get("bucket"), doc.get("query"), doc.get("cursor")
    if not isinstance(bucket, str) or not isinstance(text, str) or not isinstance(cursor, (str, type(None))):
        raise e.InvalidRequest('Expected {"bucket": str, "query": str, "cursor": str | null}.')
    # s3:ListBucket on the bucket; then only the objects the caller may s3:GetObject.
    await ctx.authorize_entry(req, Check("s3:ListBucket", bucket_arn(bucket)))
    metas, next_cursor = await ctx.service.query(bucket, text, cursor)
    if not _is_root(req):  # the root may read everything: no filter
        metas = [m for m in metas if await ctx.entry_allowed(req, Check("s3:GetObject", object_arn(bucket, m.key)))]
    objects = [
        {
            "key": m.key,
            "version_id": m.version_id,
            "size": m.size_bytes,
            "etag": m.etag,
            "last_modified": iso8601(m.modified_ns),
            "content_type": m.content_type,
            "storage_class": m.storage_class,
            "meta": m.user_meta,
            "tags": m.tags,
        }
        for m in metas
    ]
    body = json.dumps({"bucket": bucket, "objects": objects, "next_cursor": next_cursor}).encode()
    return Response(200, [("content-type", "application/json")], body)


async def batch(req: Request, ctx: Context) -> Response:
    """POST /_tierstore/batch: many objects (or ranges) in one response, in order.

    Request: ``{"entries": [{"bucket", "key", "version_id"?, "range"?: "bytes=a-b"}], "fail_fast"?}``.
    Response (``application/x-tierstore-batch``): per entry a frame ``BATCH_FRAME`` (entry
    index, HTTP-style status, length) and that many bytes — the object's, or for a failed
    entry a JSON ``{"code", "message"}`` — then a trailer frame (index ``BATCH_TRAILER``)
    with a JSON summary. A failed entry does not fail the request unless ``fail_fast``,
    which ends the stream after it. Entries are read one after another: memory is bounded
    by one piece of one object, whatever the batch holds."""
    doc = await req.json_body(limit=MAX_BATCH_BODY)
    if "dataset" in doc or "model" in doc:
        return await _dataset_batch(doc, req, ctx)
    entries, fail_fast = doc.get("entries"), doc.get("fail_fast", False)
    if not isinstance(entries, list) or not isinstance(fail_fast, bool):
        raise e.InvalidRequest('Expected {"entries": [...], "fail_fast": bool}.')
    if len(entries) > MAX_BATCH_ENTRIES:
        raise e.InvalidRequest(f"A batch holds at most {MAX_BATCH_ENTRIES} entries.")
    wanted: list[tuple[str, str, GetOptions]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise e.InvalidRequest(f"Entry {i} is not an object.")
        bucket, key = entry.get("bucket"), entry.get("key")
        version_id, byte_range = entry.get("version_id"), entry.get("range")
        if not isinstance(bucket, str) or not isinstance(key, str) or not key:
            raise e.InvalidRequest(f"Entry {i} needs a bucket and a key.")
        if not isinstance(version_id, (str, type(None))) or not isinstance(byte_range, (str, type(None))):
            raise e.InvalidRequest(f"Entry {i}: version_id and range are strings.")
        opts = GetOptions(version_id=version_id, byte_range=ByteRange.parse(byte_range) if byte_range else None)
        wanted.append((bucket, key, opts))
    frames = _batch_frames(_entry_reads(wanted, req, ctx), len(wanted), fail_fast, ctx)
    return Response(200, [("content-type", "application/x-tierstore-batch")], stream=frames)


async def _entry_reads(
    wanted: list[tuple[str, str, GetOptions]], req: Request, ctx: Context
) -> AsyncIterator[RowRead]:
    for bucket, key, opts in wanted:
        try:
            # Each entry is its own GetObject: a denied one is a 403 frame, the rest are served.
            action = "s3:GetObject" if opts.version_id is None else "s3:GetObjectVersion"
            await ctx.authorize_entry(req, Check(action, object_arn(bucket, key)))
            result = await ctx.service.get_object(bucket, key, opts)
        except e.TierstoreError as exc:
            yield RowRead(error=exc, key=key)
            continue
        yield RowRead(result.length, body=result.body, status=result_status(result), key=key)


async def _dataset_batch(doc: dict[str, Any], req: Request, ctx: Context) -> Response:
    """The dataset form of ``batch``: ``{"dataset": "NAME@N", "rows": [int, ...], "fail_fast"?}``
    (or ``"model": "NAME@N"``: a model version's rows, docs/checkpoints.md). Rows are read
    through the bytes the dataset (model) pinned, not by key (docs/datasets.md)."""
    field = "model" if "model" in doc else "dataset"
    rows, fail_fast, name = doc.get("rows"), doc.get("fail_fast", False), doc.get(field)
    if not isinstance(name, str) or not isinstance(rows, list) or not isinstance(fail_fast, bool):
        raise e.InvalidRequest(f'Expected {{"{field}": "NAME@N", "rows": [int, ...], "fail_fast": bool}}.')
    if len(rows) > MAX_BATCH_ENTRIES:
        raise e.InvalidRequest(f"A batch holds at most {MAX_BATCH_ENTRIES} entries.")
    if not all(type(r) is int for r in rows):
        raise e.InvalidRequest("Rows are integers.")
    ref = ModelRef.parse(name) if field == "model" else DatasetRef.parse(name)
    if ref.version is None:
        raise e.InvalidRequest(f"A batch names one {field} version: NAME@N.")
    source = ctx.model_service() if field == "model" else ctx.dataset_service()
    # Rows are read through the dataset's pinned bytes: the caller needs tierstore:ReadDataset
    # (tierstore:ReadModel) on the dataset (model), not s3:GetObject per row (docs/security.md).
    kind = "Model" if field == "model" else "Dataset"
    await ctx.authorize_entry(req, Check(f"tierstore:Read{kind}", f"arn:aws:tierstore:::{field}/{ref.name}"))
    # ...and may read the object each row came from (a row it may not is a 403 frame).
    may_read = None
    if not _is_root(req):
        may_read = lambda b, k: ctx.entry_allowed(req, Check("s3:GetObject", object_arn(b, k)))  # noqa: E731
    reads = await source.open_rows(ref.name, ref.version, rows, may_read=may_read)
    frames = _batch_frames(reads, len(rows), fail_fast, ctx)
    return Response(200, [("content-type", "application/x-tierstore-batch")], stream=frames)


async def _batch_frames(
    reads: AsyncIterator[RowRead], count: int, fail_fast: bool, ctx: Context
) -> AsyncIterator[bytes]:
    """The frames of ``batch``. Small entries are coalesced into sends of about
    ``BATCH_SEND_BYTES`` (one send per sample would cost more than the sample), gathered as a
    list of pieces joined once per send (a growing buffer would copy every byte twice); an
    entry larger than that streams piece by piece after what was gathered before it."""
    pack = BATCH_FRAME.pack
    out: list[bytes] = []
    pending = 0  # bytes in ``out``
    served = failed = size = 0
    index = -1
    async for item in reads:
        index += 1
        if item.error is not None:
            exc = item.error
            body = json.dumps({"code": exc.code, "message": exc.message, "key": item.key}).encode()
            failed += 1
            out += (pack(index, status_of(exc), len(body)), body)
            pending += BATCH_FRAME.size + len(body)
            if fail_fast:
                break
            continue
        served += 1
        size += item.length
        out.append(pack(index, item.status, item.length))
        pending += BATCH_FRAME.size + item.length
        if item.data is not None:
            out.append(item.data)
        elif item.length > BATCH_SEND_BYTES:
            assert item.body is not None
            yield b"".join(out)
            out.clear()
            pending = 0
            # Bytes already sent cannot be taken back: damage found mid-object ends the
            # stream short, as a plain GET does (a truncated frame, never wrong bytes).
            async for chunk in item.body:
                yield chunk
            continue
        else:
            assert item.body is not None
            async for chunk in item.body:
                out.append(chunk)
        if pending >= BATCH_SEND_BYTES:
            yield b"".join(out)
            out.clear()
            pending = 0
    ctx.metrics.batch_served(served, failed, size)
    summary = json.dumps({"entries": count, "served": served, "failed": failed, "bytes": size}).encode()
    out += (pack(BATCH_TRAILER, 200, len(summary)), summary)
    yield b"".join(out)
