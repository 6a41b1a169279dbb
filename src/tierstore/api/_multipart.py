"""Multipart upload handlers: create, upload part (and part copy), complete, abort, list
parts, list uploads."""

from __future__ import annotations

from urllib.parse import quote

from tierstore import errors as e
from tierstore.api import _sse
from tierstore.api._access import request_acl
from tierstore.api._common import owner, reject_unsupported
from tierstore.api._objects import (
    copy_options,
    copy_source,
    lock_headers,
    object_headers,
    put_options,
    tagging_header,
    tier_classes,
)
from tierstore.api._request import Context, Request, Response, int_param
from tierstore.api._xml import E, children, document, iso8601, parse_xml, text_of, url_encode_key
from tierstore.engine import CompletedPart
from tierstore.types import CHECKSUM_ALGORITHMS, NULL_VERSION, Conditions

__all__ = [
    "abort_multipart_upload",
    "complete_multipart_upload",
    "create_multipart_upload",
    "list_multipart_uploads",
    "list_parts",
    "upload_part",
    "upload_part_copy",
]


async def create_multipart_upload(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    sse = await _sse.write_request(req, ctx)
    reject_unsupported(req)
    headers, user_meta, sc = object_headers(req, await tier_classes(req.headers, ctx))
    alg = req.headers.get("x-amz-checksum-algorithm", "").lower() or None
    if alg is not None and alg not in CHECKSUM_ALGORITHMS:
        raise e.InvalidRequest("Invalid x-amz-checksum-algorithm")
    info = await ctx.service.create_multipart_upload(
        req.bucket,
        req.key,
        headers=headers,
        user_meta=user_meta,
        checksum_algorithm=alg,
        checksum_type=req.headers.get("x-amz-checksum-type"),
        storage_class=sc,
        tags=tagging_header(req),
        lock=lock_headers(req),
        acl=await request_acl(req, ctx, req.bucket),
        encryption=_sse.engine_request(sse),
    )
    body = document(
        "InitiateMultipartUploadResult", E("Bucket", req.bucket), E("Key", req.key), E("UploadId", info.upload_id)
    )
    out = [("content-type", "application/xml")]
    if alg:
        out += [("x-amz-checksum-algorithm", alg.upper()), ("x-amz-checksum-type", info.checksum_type or "")]
    out += _sse.response_headers(_sse.stored_doc(info.encryption, ctx.service.region), "CreateMultipartUpload")
    return Response(200, out, body)


def _part_number(req: Request) -> int:
    try:
        n = int(req.query["partNumber"])
    except ValueError as exc:
        raise e.InvalidArgument("Part number must be an integer between 1 and 10000, inclusive") from exc
    return n


async def _part_encryption(
    req: Request, ctx: Context, *, copy: bool = False
) -> tuple[_sse.SseRequest, _sse.StoredEncryption | None]:
    """The SSE headers of a part (or a completion) and the upload's encryption they must agree
    with: the upload's was fixed when it was created; a part carries only an SSE-C upload's key
    (checked by the engine) and, for UploadPartCopy, an SSE-C source's key."""
    assert req.bucket is not None and req.key is not None
    sse = await _sse.write_request(req, ctx, copy=copy, default=False)
    upload = await ctx.service.upload_info(req.bucket, req.key, req.query["uploadId"])
    stored = _sse.stored_doc(upload.encryption, ctx.service.region)
    _sse.check_part_request(sse, stored)
    _sse.require_sigv4(req, upload.encryption)
    return sse, stored


async def upload_part(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    sse, stored = await _part_encryption(req, ctx)
    body, trailers = req.payload()
    opts = put_options(req, trailers)
    from_checksum = req.headers.get("x-tierstore-etag", "").lower() == "checksum"
    part = await ctx.service.upload_part(
        req.bucket, req.key, req.query["uploadId"], _part_number(req), body, opts,
        etag_from_checksum=from_checksum, customer_key=_sse.key_of(sse.customer),
    )  # fmt: skip
    out = [("etag", part.etag)]
    out += [(f"x-amz-checksum-{a}", v) for a, v in part.checksums.items()]
    out += _sse.response_headers(stored, "UploadPart")
    return Response(200, out)


async def upload_part_copy(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    sse, stored = await _part_encryption(req, ctx, copy=True)
    await req.read_small(limit=0)
    src_bucket, src_key, src_version = copy_source(req)
    await _sse.require_sigv4_source(req, ctx, src_bucket, src_key, src_version, sse.source_key)
    part = await ctx.service.upload_part_copy(
        req.bucket,
        req.key,
        req.query["uploadId"],
        _part_number(req),
        src_bucket,
        src_key,
        copy_options(req),
        src_version_id=src_version,
        customer_key=_sse.key_of(sse.customer),
        source_key=_sse.key_of(sse.source_key),
    )
    extra = [E(f"Checksum{a.upper()}", v) for a, v in part.checksums.items()]
    body = document("CopyPartResult", E("LastModified", iso8601(part.modified_ns)), E("ETag", part.etag), *extra)
    headers = [("content-type", "application/xml"), *_sse.response_headers(stored, "UploadPartCopy")]
    return Response(200, headers, body)


async def complete_multipart_upload(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    sse = await _sse.write_request(req, ctx, default=False)
    if sse.kind in ("s3", "kms"):  # the upload's encryption was fixed when it was created
        raise e.InvalidArgument("x-amz-server-side-encryption header is not supported for this operation.")
    await _sse.require_sigv4_upload(req, ctx)
    body = await req.read_small()
    el = parse_xml(body, "CompleteMultipartUpload")
    parts: list[CompletedPart] = []
    for p in children(el, "Part"):
        num = text_of(p, "PartNumber")
        etag = text_of(p, "ETag")
        if num is None or etag is None:
            raise e.MalformedXML()
        try:
            n = int(num)
        except ValueError as exc:
            raise e.MalformedXML() from exc
        sums = {a: v for a in CHECKSUM_ALGORITHMS if (v := text_of(p, f"Checksum{a.upper()}")) is not None}
        parts.append(CompletedPart(n, etag, sums))
    if not parts:
        raise e.MalformedXML()
    full = full_alg = None
    for a in CHECKSUM_ALGORITHMS:
        if f"x-amz-checksum-{a}" in req.headers:
            full, full_alg = req.headers[f"x-amz-checksum-{a}"], a
    meta = await ctx.service.complete_multipart_upload(
        req.bucket,
        req.key,
        req.query["uploadId"],
        parts,
        conditions=Conditions(if_match=req.headers.get("if-match"), if_none_match=req.headers.get("if-none-match")),
        checksum_type=req.headers.get("x-amz-checksum-type"),
        full_object_checksum=full,
        object_checksum_algorithm=full_alg,
        customer_key=_sse.key_of(sse.customer),
    )
    loc = f"/{quote(req.bucket)}/{quote(req.key)}"
    extra = [E(f"Checksum{a.upper()}", v) for a, v in meta.checksums.items() if a != "crc64nvme" or meta.parts]
    if meta.checksum_type and extra:
        extra.append(E("ChecksumType", meta.checksum_type))
    body = document(
        "CompleteMultipartUploadResult",
        E("Location", loc),
        E("Bucket", req.bucket),
        E("Key", req.key),
        E("ETag", meta.etag),
        *extra,
    )
    headers = [("content-type", "application/xml")]
    if meta.version_id != NULL_VERSION:
        headers.append(("x-amz-version-id", meta.version_id))
    headers += _sse.response_headers(_sse.stored_of(meta, ctx.service.region), "CompleteMultipartUpload")
    return Response(200, headers, body)


async def abort_multipart_upload(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    await ctx.service.abort_multipart_upload(req.bucket, req.key, req.query["uploadId"])
    return Response(204)


async def list_parts(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    q = req.query
    max_parts = int_param(q, "max-parts", 1000, hi=1000)
    marker = int_param(q, "part-number-marker", 0)
    upload, parts, truncated = await ctx.service.list_parts(
        req.bucket, req.key, q["uploadId"], after_part=marker, max_parts=max_parts
    )
    items = [
        E(
            "Part",
            None,
            E("PartNumber", p.part_number),
            E("LastModified", iso8601(p.modified_ns)),
            E("ETag", p.etag),
            E("Size", p.size_bytes),
            *[E(f"Checksum{a.upper()}", v) for a, v in p.checksums.items()],
        )
        for p in parts
    ]
    owner_el = owner(req)
    fields = [
        E("Bucket", req.bucket),
        E("Key", req.key),
        E("UploadId", upload.upload_id),
        E("Initiator", None, E("ID", req.auth.access_key if req.auth else ""), E("DisplayName", "")),
        owner_el,
        E("StorageClass", upload.storage_class),
        E("PartNumberMarker", marker),
        E("NextPartNumberMarker", parts[-1].part_number if parts else 0),
        E("MaxParts", max_parts),
        E("IsTruncated", "true" if truncated else "false"),
    ]
    if upload.checksum_algorithm:
        fields.append(E("ChecksumAlgorithm", upload.checksum_algorithm.upper()))
        fields.append(E("ChecksumType", upload.checksum_type or ""))
    body = document("ListPartsResult", *fields, *items)
    return Response(200, [("content-type", "application/xml")], body)


async def list_multipart_uploads(req: Request, ctx: Context) -> Response:
    q = req.query
    bucket = req.bucket or ""
    max_uploads = int_param(q, "max-uploads", 1000, hi=1000)
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter", "")
    url = q.get("encoding-type") == "url"
    uploads, prefixes, truncated = await ctx.service.list_multipart_uploads(
        bucket,
        prefix=prefix,
        delimiter=delimiter,
        key_marker=q.get("key-marker", ""),
        upload_id_marker=q.get("upload-id-marker", ""),
        max_uploads=max_uploads,
    )
    items: list[str] = []
    cps = [E("CommonPrefixes", None, E("Prefix", url_encode_key(cp, url))) for cp in prefixes]
    for u in uploads:
        items.append(
            E(
                "Upload",
                None,
                E("Key", url_encode_key(u.key, url)),
                E("UploadId", u.upload_id),
                E("Initiator", None, E("ID", ""), E("DisplayName", "")),
                owner(req),
                E("StorageClass", u.storage_class),
                E("Initiated", iso8601(u.initiated_ns)),
                *([E("ChecksumAlgorithm", u.checksum_algorithm.upper())] if u.checksum_algorithm else []),
            )
        )
    fields = [
        E("Bucket", bucket),
        E("KeyMarker", q.get("key-marker", "")),
        E("UploadIdMarker", q.get("upload-id-marker", "")),
    ]
    if truncated and (uploads or prefixes):
        # The last item of the page: an upload, or a common prefix (then without upload id).
        if prefixes and (not uploads or prefixes[-1].encode() > uploads[-1].key.encode()):
            fields += [E("NextKeyMarker", url_encode_key(prefixes[-1], url)), E("NextUploadIdMarker", "")]
        else:
            last = uploads[-1]
            fields += [E("NextKeyMarker", url_encode_key(last.key, url)), E("NextUploadIdMarker", last.upload_id)]
    fields += [E("Prefix", prefix), E("MaxUploads", max_uploads)]
    if delimiter:
        fields.append(E("Delimiter", delimiter))
    if url:
        fields.append(E("EncodingType", "url"))
    fields.append(E("IsTruncated", "true" if truncated else "false"))
    body = document("ListMultipartUploadsResult", *fields, *items, *cps)
    return Response(200, [("content-type", "application/xml")], body)
