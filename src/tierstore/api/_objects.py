"""Object handlers: Get/Head/Put/Copy/Delete object, GetObjectAttributes, object tagging,
retention and legal hold; and the request-to-options helpers multipart uploads share."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from tierstore import errors as e
from tierstore.api import _lifecycle, _restore, _sse
from tierstore.api._access import request_acl
from tierstore.api._common import (
    bypass_governance,
    config_body,
    read_conditions,
    reject_unsupported,
    tag_set,
    tagging_document,
    version_header,
)
from tierstore.api._request import Context, Request, Response, http_date, int_param, parse_query
from tierstore.api._xml import E, document, iso8601, text_of
from tierstore.engine import (
    CopyOptions,
    GetResult,
    LockRequest,
    Retention,
    format_retain_until,
    parse_legal_hold,
    parse_lock_headers,
    parse_mode,
    parse_retain_until,
    parse_tagging_header,
)
from tierstore.types import (
    CHECKSUM_ALGORITHMS,
    MAX_PUT_BYTES,
    NULL_VERSION,
    STANDARD_HEADERS,
    ByteRange,
    ChecksumExpectation,
    Conditions,
    GetOptions,
    ObjectMeta,
    PutOptions,
)

__all__ = [
    "copy_object",
    "copy_options",
    "copy_source",
    "delete_object",
    "delete_object_tagging",
    "get_object",
    "get_object_attributes",
    "get_object_legal_hold",
    "get_object_retention",
    "get_object_tagging",
    "head_object",
    "lock_headers",
    "object_headers",
    "put_object",
    "put_object_legal_hold",
    "put_object_retention",
    "put_object_tagging",
    "put_options",
    "result_status",
    "tagging_header",
]

MAX_PART_NUMBER = 10_000
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "OUTPOSTS",
        "SNOW",
        "EXPRESS_ONEZONE",
    }
)
_RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
# The precondition headers of a read (``read_conditions``): a GET without any gets Conditions().
_CONDITION_HEADERS = frozenset(("if-match", "if-none-match", "if-modified-since", "if-unmodified-since"))
_OBJECT_ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})


def _meta_value(wire: str) -> str:
    """An ``x-amz-meta-*`` value as text. Header values reach the app latin-1 decoded (one code
    point per byte); user metadata is UTF-8, stored as the text it spells and sent back as the
    same bytes. Bytes that are not UTF-8 cannot be stored as text: refused, never altered."""
    try:
        return wire.encode("latin-1").decode("utf-8")
    except UnicodeError as exc:
        raise e.InvalidArgument("User metadata values must be UTF-8.") from exc


def check_storage_class(sc: str, tier_classes: frozenset[str]) -> str:
    """``sc`` if it is S3's (a label: the bytes stay local) or a tier's (docs/tiers.md)."""
    if sc not in STORAGE_CLASSES and sc not in tier_classes:
        raise e.InvalidStorageClass()
    return sc


async def tier_classes(headers: Mapping[str, str], ctx: Context) -> frozenset[str]:
    """The tiers' storage classes, for a write whose ``x-amz-storage-class`` is not one of S3's
    (read only then: a write naming none or an S3 class asks the catalog nothing)."""
    if headers.get("x-amz-storage-class", "STANDARD") in STORAGE_CLASSES:
        return frozenset()
    return await ctx.service.tiers.class_names()


def object_headers(
    req: Request, tier_classes: frozenset[str] = frozenset()
) -> tuple[dict[str, str], dict[str, str], str]:
    """Standard headers, user metadata and storage class (one of S3's or a tier's) of a write."""
    headers = {h: req.headers[h] for h in STANDARD_HEADERS if h in req.headers}
    user_meta = {k[len("x-amz-meta-") :]: _meta_value(v) for k, v in req.headers.items() if k.startswith("x-amz-meta-")}
    sc = check_storage_class(req.headers.get("x-amz-storage-class", "STANDARD"), tier_classes)
    return headers, user_meta, sc


def _checksum_expectation(req: Request, trailers: dict[str, str]) -> ChecksumExpectation | None:
    found = [a for a in CHECKSUM_ALGORITHMS if f"x-amz-checksum-{a}" in req.headers]
    trailer = req.headers.get("x-amz-trailer", "").strip().lower()
    if len(found) > 1:
        raise e.InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    if found:
        alg = found[0]
        return ChecksumExpectation(alg, value=req.headers[f"x-amz-checksum-{alg}"])
    if trailer:
        alg = trailer.removeprefix("x-amz-checksum-")
        if alg not in CHECKSUM_ALGORITHMS:
            raise e.InvalidRequest(f"The value specified in the x-amz-trailer header is not supported: {trailer[:40]}")
        return ChecksumExpectation(alg, trailers=trailers)
    sdk = req.headers.get("x-amz-sdk-checksum-algorithm", "").lower()
    if sdk:
        if sdk not in CHECKSUM_ALGORITHMS:
            raise e.InvalidRequest("Invalid x-amz-sdk-checksum-algorithm")
        return ChecksumExpectation(sdk)
    return None


def _content_length(req: Request) -> int | None:
    h = req.headers
    raw = h.get("x-amz-decoded-content-length") or (
        None if "aws-chunked" in h.get("content-encoding", "") else h.get("content-length")
    )
    if raw is None:
        if h.get("content-length") is None and "chunked" not in h.get("transfer-encoding", ""):
            raise e.MissingContentLength()
        return None
    try:
        n = int(raw)
    except ValueError as exc:
        raise e.InvalidArgument("Invalid Content-Length") from exc
    if n < 0:
        raise e.InvalidArgument("Invalid Content-Length")
    if n > MAX_PUT_BYTES:
        raise e.EntityTooLarge()
    return n


def put_options(
    req: Request, trailers: dict[str, str], tier_classes: frozenset[str] = frozenset()
) -> PutOptions:
    headers, user_meta, sc = object_headers(req, tier_classes)
    tokens = headers.get("content-encoding", "").split(",")
    if any(t.strip().lower() == "aws-chunked" for t in tokens):
        # aws-chunked is transfer framing, not part of the object's encoding: drop that token
        # only; any other value is stored exactly as sent ("deflate, gzip" keeps its space).
        enc = ",".join(t for t in tokens if t.strip().lower() != "aws-chunked").strip()
        if enc:
            headers["content-encoding"] = enc
        else:
            del headers["content-encoding"]
    return PutOptions(
        headers=headers,
        user_meta=user_meta,
        conditions=Conditions(if_match=req.headers.get("if-match"), if_none_match=req.headers.get("if-none-match")),
        content_md5=req.headers.get("content-md5"),
        checksum=_checksum_expectation(req, trailers),
        content_length=_content_length(req),
        storage_class=sc,
    )


async def put_object(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    # The worker's cached copy of the bucket's properties (no round trip): the default encryption
    # and lock are decided from it, and the commit checks they are still the bucket's (the
    # engine's ``_put_deciding``). None (no bucket as cached): both read from the catalog.
    props = await ctx.service.bucket_access.props(req.bucket)
    sse = await _sse.write_request(req, ctx, props=props)
    reject_unsupported(req)
    acl = await request_acl(req, ctx, req.bucket)
    body, trailers = req.payload()
    opts = put_options(req, trailers, await tier_classes(req.headers, ctx))
    meta = await ctx.service.put_object(
        req.bucket, req.key, body, opts, tags=tagging_header(req), lock=lock_headers(req), acl=acl,
        encryption=_sse.engine_request(sse), props=props,
    )  # fmt: skip
    headers = _write_headers(meta, opts.checksum)
    headers += _sse.response_headers(_sse.stored_of(meta, ctx.service.region), "PutObject")
    headers += await _lifecycle.expiration_headers(ctx, req.bucket, meta)
    return Response(200, headers)


def _write_headers(meta: ObjectMeta, checksum: ChecksumExpectation | None) -> list[tuple[str, str]]:
    out = [("etag", meta.etag)]
    if checksum is not None and checksum.algorithm in meta.checksums:
        out.append((f"x-amz-checksum-{checksum.algorithm}", meta.checksums[checksum.algorithm]))
        if meta.checksum_type:
            out.append(("x-amz-checksum-type", meta.checksum_type))
    if meta.version_id != NULL_VERSION:
        out.append(("x-amz-version-id", meta.version_id))
    return out


async def get_object(req: Request, ctx: Context) -> Response:
    return await _get(req, ctx, head=False)


async def head_object(req: Request, ctx: Context) -> Response:
    return await _get(req, ctx, head=True)


async def _get(req: Request, ctx: Context, *, head: bool) -> Response:
    assert req.bucket is not None and req.key is not None
    h = req.headers
    customer = _sse.parse_read(h)  # checked against the object by the engine, first
    q = req.query
    part_number = int_param(q, "partNumber", 0, lo=1) if "partNumber" in q else None
    if part_number is not None and part_number > MAX_PART_NUMBER:
        raise e.InvalidArgument(f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive")
    # Positional, and the headers' parsers called only for headers sent (every GET runs this).
    opts = GetOptions(
        ByteRange.parse(h["range"]) if "range" in h else None,
        Conditions() if _CONDITION_HEADERS.isdisjoint(h) else read_conditions(req),
        part_number,
        q.get("versionId"),
        customer.key if customer is not None else None,
    )
    try:
        if head:
            result = await ctx.service.head_object(req.bucket, req.key, opts)
        else:
            result = await ctx.service.get_object(req.bucket, req.key, opts)
    except e.NotModified:
        again = GetOptions(version_id=opts.version_id, customer_key=opts.customer_key)
        meta = (await ctx.service.head_object(req.bucket, req.key, again)).meta
        return Response(304, [("etag", meta.etag), ("last-modified", http_date(meta.modified_ns))])
    except e.InvalidRange as exc:
        # The engine names the object's size (ActualObjectSize, Content-Range: bytes */size);
        # S3's body also echoes the range asked for, first.
        if part_number is None and "range" in req.headers:
            exc.fields = {"RangeRequested": req.headers["range"], **exc.fields}
        raise
    headers = _read_headers(req, result)
    if result.meta.encryption:
        try:
            _sse.require_sigv4(req, result.meta.encryption)  # a KMS object: SigV4 only
        except e.InvalidArgument:
            if result.body is not None:
                await result.body.aclose()  # type: ignore[attr-defined]
            raise
        headers += _sse.response_headers(
            _sse.stored_doc(result.meta.encryption, ctx.service.region), "HeadObject" if head else "GetObject"
        )
    if opts.version_id is None:  # the current version (docs/s3-compatibility.md "Lifecycle")
        headers += await _lifecycle.expiration_headers(ctx, req.bucket, result.meta)
    if result.meta.storage_class != "STANDARD":  # a restore is of a version in an archive tier
        headers += await _restore.restore_headers(ctx, result.meta)
    if head:
        return Response(result_status(result), headers)
    if result.data is not None:  # in memory (small objects): a plain response, no stream
        return Response(result_status(result), headers, result.data)
    assert result.body is not None
    first = b""
    if result.length:
        # Pull the first verified chunk before committing to a status line.
        try:
            first = await anext(result.body)
        except StopAsyncIteration:
            first = b""
    if len(first) == result.length:  # all of it (small objects): a plain response, no stream
        await result.body.aclose()  # type: ignore[attr-defined]
        return Response(result_status(result), headers, first)
    return Response(result_status(result), headers, stream=result.body, first_chunk=first)


def _read_headers(req: Request, result: GetResult) -> list[tuple[str, str]]:
    meta = result.meta
    out = [
        ("content-length", str(result.length)),
        ("etag", meta.etag),
        ("last-modified", http_date(meta.modified_ns)),
        ("accept-ranges", "bytes"),
    ]
    hdrs = dict(meta.headers)
    hdrs.setdefault("content-type", "binary/octet-stream")
    if req.query:
        for q, h in _RESPONSE_OVERRIDES.items():
            if q in req.query:
                hdrs[h] = req.query[q].encode("utf-8").decode("latin-1")  # the UTF-8 bytes it was sent as
    out += hdrs.items()
    # User metadata is text (UTF-8 on the wire); _send writes header strings as latin-1, so hand
    # it the UTF-8 bytes as latin-1 code points: the client gets back the bytes it sent.
    if meta.user_meta:
        out += [(f"x-amz-meta-{k}", v.encode("utf-8").decode("latin-1")) for k, v in meta.user_meta.items()]
    if result.partial:
        end = result.offset + result.length - 1
        out.append(("content-range", f"bytes {result.offset}-{end}/{meta.size_bytes}"))
    if result.parts_count is not None and req.query.get("partNumber"):
        out.append(("x-amz-mp-parts-count", str(result.parts_count)))
    if meta.storage_class != "STANDARD":
        out.append(("x-amz-storage-class", meta.storage_class))
    # S3 reads answer "null" for the null version once the bucket has a versioning state
    # (writes to a suspended bucket answer no version id at all).
    if meta.version_id != NULL_VERSION or result.bucket_versioning:
        out.append(("x-amz-version-id", meta.version_id))
    if meta.tags:
        out.append(("x-amz-tagging-count", str(len(meta.tags))))
    if meta.lock:
        out += _lock_read_headers(meta)
    # The object's checksum describes the bytes sent only when they are all of it (part 1 of
    # an object stored in one PUT is a 206 of the whole object).
    mode = req.headers.get("x-amz-checksum-mode")
    whole = not result.partial or ("partNumber" in req.query and result.length == meta.size_bytes)
    if mode is not None and mode.upper() == "ENABLED" and whole:
        # S3 reports one checksum per object: the client's algorithm, else the crc64nvme default.
        chosen = [a for a in meta.checksums if a != "crc64nvme"] or list(meta.checksums)
        for alg in chosen[:1]:
            out.append((f"x-amz-checksum-{alg}", meta.checksums[alg]))
        if meta.checksum_type and chosen:
            out.append(("x-amz-checksum-type", meta.checksum_type))
    return out


async def get_object_attributes(req: Request, ctx: Context) -> Response:
    """GetObjectAttributes: the attributes named in ``x-amz-object-attributes`` (ETag, Checksum,
    ObjectParts, StorageClass, ObjectSize) of the current version or ``versionId``.

    As in S3: the ETag without quotes; a composite checksum without its ``-N``; ObjectParts
    only for a multipart object, paged by ``x-amz-max-parts`` / ``x-amz-part-number-marker``,
    its Part elements only when the upload had a checksum algorithm."""
    assert req.bucket is not None and req.key is not None
    h = req.headers
    wanted = {a.strip() for a in h.get("x-amz-object-attributes", "").split(",") if a.strip()}
    if not wanted:
        raise e.InvalidArgument("Missing required header for this request: x-amz-object-attributes")
    unknown = wanted - _OBJECT_ATTRIBUTES
    if unknown:
        raise e.InvalidArgument(f"Invalid attribute name specified: {sorted(unknown)[0][:40]}")
    max_parts = int_param(h, "x-amz-max-parts", 1000, hi=1000)
    marker = int_param(h, "x-amz-part-number-marker", 0)
    customer = _sse.parse_read(req.headers)  # an SSE-C object answers only with its key, as AWS
    opts = GetOptions(
        conditions=read_conditions(req),
        version_id=req.query.get("versionId"),
        customer_key=customer.key if customer is not None else None,
    )
    result = await ctx.service.head_object(req.bucket, req.key, opts)
    meta = result.meta
    fields: list[str] = []
    if "ETag" in wanted:
        fields.append(E("ETag", meta.etag.strip('"')))
    if "Checksum" in wanted:
        chosen = [a for a in meta.checksums if a != "crc64nvme"] or list(meta.checksums)
        if chosen:
            alg = chosen[0]
            value = meta.checksums[alg]
            if meta.checksum_type == "COMPOSITE":
                value = value.partition("-")[0]  # base64 has no "-": this drops the part count
            extra = [E("ChecksumType", meta.checksum_type)] if meta.checksum_type else []
            fields.append(E("Checksum", None, E(f"Checksum{alg.upper()}", value), *extra))
    if "ObjectParts" in wanted and meta.parts:
        fields.append(_object_parts(meta, max_parts, marker))
    if "StorageClass" in wanted:
        fields.append(E("StorageClass", meta.storage_class))
    if "ObjectSize" in wanted:
        fields.append(E("ObjectSize", meta.size_bytes))
    headers = [("content-type", "application/xml"), ("last-modified", http_date(meta.modified_ns))]
    if meta.version_id != NULL_VERSION or result.bucket_versioning:
        headers.append(("x-amz-version-id", meta.version_id))
    return Response(200, headers, document("GetObjectAttributesResponse", *fields))


def _object_parts(meta: ObjectMeta, max_parts: int, marker: int) -> str:
    """The ObjectParts element of GetObjectAttributes: parts after ``marker``, at most ``max_parts``."""
    count = len(meta.parts)
    numbers = list(range(marker + 1, min(count, marker + max_parts) + 1))
    truncated = bool(numbers) and numbers[-1] < count
    fields = [
        E("PartsCount", count),
        E("PartNumberMarker", marker),
        E("NextPartNumberMarker", numbers[-1] if numbers else marker),
        E("MaxParts", max_parts),
        E("IsTruncated", "true" if truncated else "false"),
    ]
    # S3 lists the parts themselves only when the upload had a checksum algorithm.
    for alg, sums in meta.part_checksums.items():
        checksum = f"Checksum{alg.upper()}"
        fields += [
            E("Part", None, E("PartNumber", n), E("Size", meta.parts[n - 1]), E(checksum, sums[n - 1])) for n in numbers
        ]
    return E("ObjectParts", None, *fields)


async def delete_object(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    result = await ctx.service.delete_object(
        req.bucket,
        req.key,
        version_id=req.query.get("versionId"),
        if_match=req.headers.get("if-match"),
        bypass_governance=bypass_governance(req),
    )
    headers = []
    if result.version_id is not None:
        headers.append(("x-amz-version-id", result.version_id))
    if result.delete_marker:
        headers.append(("x-amz-delete-marker", "true"))
    return Response(204, headers)


def copy_source(req: Request) -> tuple[str, str, str | None]:
    raw = req.headers["x-amz-copy-source"]
    path, _, query = raw.partition("?")
    src = unquote(path)
    src = src[1:] if src.startswith("/") else src
    bucket, _, key = src.partition("/")
    if not bucket or not key:
        raise e.InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
    version = parse_query(query.encode()).get("versionId") if query else None
    return bucket, key, version


def _copy_source_range(req: Request) -> ByteRange | None:
    raw = req.headers.get("x-amz-copy-source-range")
    parsed = ByteRange.parse(raw)
    if raw is not None and (parsed is None or parsed.first is None or parsed.last is None):
        # Unlike a GET Range, a bad copy range is an error, never "copy everything".
        raise e.InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last"
            " are the zero-based offsets of the first and last bytes to copy"
        )
    return parsed


def copy_options(req: Request, tier_classes: frozenset[str] = frozenset()) -> CopyOptions:
    directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise e.InvalidArgument("Unknown metadata directive.")
    headers, user_meta, _ = object_headers(req, tier_classes)
    sc = req.headers.get("x-amz-storage-class")
    if sc is not None:
        check_storage_class(sc, tier_classes)
    alg = req.headers.get("x-amz-checksum-algorithm", "").lower() or None
    if alg is not None and alg not in CHECKSUM_ALGORITHMS:
        raise e.InvalidRequest("Invalid x-amz-checksum-algorithm")
    return CopyOptions(
        source_conditions=read_conditions(req, "x-amz-copy-source-"),
        replace_metadata=directive == "REPLACE",
        headers=headers,
        user_meta=user_meta,
        conditions=Conditions(if_match=req.headers.get("if-match"), if_none_match=req.headers.get("if-none-match")),
        source_range=_copy_source_range(req),
        checksum_algorithm=alg,
        storage_class=sc,
    )


async def copy_object(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    sse = await _sse.write_request(req, ctx, copy=True)  # the destination bucket's default, never the source's
    reject_unsupported(req)
    await req.read_small(limit=0)
    src_bucket, src_key, src_version = copy_source(req)
    await _sse.require_sigv4_source(req, ctx, src_bucket, src_key, src_version, sse.source_key)
    opts = copy_options(req, await tier_classes(req.headers, ctx))
    directive = req.headers.get("x-amz-tagging-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise e.InvalidArgument("Unknown tagging directive.")
    opts.replace_tags = directive == "REPLACE"
    opts.tags = tagging_header(req) if opts.replace_tags else []
    opts.lock = lock_headers(req)
    opts.acl = await request_acl(req, ctx, req.bucket) or []
    copied = await ctx.service.copy_object(
        src_bucket, src_key, req.bucket, req.key, opts, src_version_id=src_version,
        encryption=_sse.engine_request(sse), source_key=_sse.key_of(sse.source_key),
    )  # fmt: skip
    meta = copied.meta
    extra = [E(f"Checksum{a.upper()}", v) for a, v in meta.checksums.items() if a == opts.checksum_algorithm]
    body = document("CopyObjectResult", E("LastModified", iso8601(meta.modified_ns)), E("ETag", meta.etag), *extra)
    headers = [("content-type", "application/xml")]
    if meta.version_id != NULL_VERSION:
        headers.append(("x-amz-version-id", meta.version_id))
    if src_version is not None or copied.source_version_id != NULL_VERSION:
        headers.append(("x-amz-copy-source-version-id", copied.source_version_id))
    headers += _sse.response_headers(_sse.stored_of(meta, ctx.service.region), "CopyObject")
    headers += await _lifecycle.expiration_headers(ctx, req.bucket, meta)
    return Response(200, headers, body)


def tagging_header(req: Request) -> list[tuple[str, str]]:
    raw = req.headers.get("x-amz-tagging")
    return parse_tagging_header(raw) if raw else []


def lock_headers(req: Request) -> LockRequest:
    h = req.headers
    return parse_lock_headers(
        h.get("x-amz-object-lock-mode"),
        h.get("x-amz-object-lock-retain-until-date"),
        h.get("x-amz-object-lock-legal-hold"),
    )


def _lock_read_headers(meta: ObjectMeta) -> list[tuple[str, str]]:
    out = []
    lock = meta.lock
    if "mode" in lock:
        out.append(("x-amz-object-lock-mode", str(lock["mode"])))
        out.append(("x-amz-object-lock-retain-until-date", format_retain_until(int(lock["until_ns"]))))
    if "legal_hold" in lock:
        out.append(("x-amz-object-lock-legal-hold", "ON" if lock["legal_hold"] else "OFF"))
    return out


async def get_object_tagging(req: Request, ctx: Context) -> Response:
    """GetObjectTagging (optionally by versionId)."""
    assert req.bucket is not None and req.key is not None
    meta = await ctx.service.get_object_tagging(req.bucket, req.key, req.query.get("versionId"))
    headers = [("content-type", "application/xml"), *version_header(meta)]
    return Response(200, headers, tagging_document(meta.tags))


async def put_object_tagging(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    version = req.query.get("versionId")
    meta = await ctx.service.put_object_tagging(req.bucket, req.key, await tag_set(req), version)
    return Response(200, version_header(meta))


async def delete_object_tagging(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    meta = await ctx.service.delete_object_tagging(req.bucket, req.key, req.query.get("versionId"))
    return Response(204, version_header(meta))


async def get_object_retention(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    r = await ctx.service.get_object_retention(req.bucket, req.key, req.query.get("versionId"))
    body = document("Retention", E("Mode", r.mode), E("RetainUntilDate", format_retain_until(r.until_ns)))
    return Response(200, [("content-type", "application/xml")], body)


async def put_object_retention(req: Request, ctx: Context) -> Response:
    """An empty <Retention/> removes it (in GOVERNANCE only with the bypass)."""
    assert req.bucket is not None and req.key is not None
    el = await config_body(req, "Retention")
    mode, until = text_of(el, "Mode"), text_of(el, "RetainUntilDate")
    if (mode is None) != (until is None):
        raise e.MalformedXML()
    retention = None
    if mode is not None and until is not None:
        if mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise e.MalformedXML()
        retention = Retention(parse_mode(mode), parse_retain_until(until))
    meta = await ctx.service.put_object_retention(
        req.bucket,
        req.key,
        retention,
        version_id=req.query.get("versionId"),
        bypass_governance=bypass_governance(req),
    )
    return Response(200, version_header(meta))


async def get_object_legal_hold(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    on = await ctx.service.get_object_legal_hold(req.bucket, req.key, req.query.get("versionId"))
    body = document("LegalHold", E("Status", "ON" if on else "OFF"))
    return Response(200, [("content-type", "application/xml")], body)


async def put_object_legal_hold(req: Request, ctx: Context) -> Response:
    """ON / OFF."""
    assert req.bucket is not None and req.key is not None
    el = await config_body(req, "LegalHold")
    status = text_of(el, "Status")
    if status not in ("ON", "OFF"):
        raise e.MalformedXML()
    meta = await ctx.service.put_object_legal_hold(
        req.bucket, req.key, parse_legal_hold(status), version_id=req.query.get("versionId")
    )
    return Response(200, version_header(meta))


def result_status(result: GetResult) -> int:
    return 206 if result.partial else 200
