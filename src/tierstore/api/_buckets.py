"""Bucket handlers: ListBuckets, Create/Head/DeleteBucket, GetBucketLocation, ListObjects (v1
and v2), ListObjectVersions, DeleteObjects."""

from __future__ import annotations

from tierstore import errors as e
from tierstore.api import _sse
from tierstore.api._access import creation_settings
from tierstore.api._authorize import Check, object_arn
from tierstore.api._common import (
    bypass_governance,
    check_body_digest,
    decode_token,
    encode_token,
    owner,
    reject_unsupported,
)
from tierstore.api._request import Context, Request, Response, int_param
from tierstore.api._restore import restore_status_element, wants_restore_status
from tierstore.api._xml import E, children, document, esc, iso8601, parse_xml, text_of, url_encode_key
from tierstore.types import ListOptions

__all__ = [
    "create_bucket",
    "delete_bucket",
    "delete_objects",
    "get_bucket_location",
    "head_bucket",
    "list_buckets",
    "list_object_versions",
    "list_objects",
]

MAX_DELETE_KEYS = 1000
MAX_LIST_BUCKETS = 10_000  # ListBuckets max-buckets, and its page size when paginating without it


async def list_buckets(req: Request, ctx: Context) -> Response:
    """ListBuckets, paginated as S3 since 2024: ``max-buckets`` (1..10000), ``continuation-token``,
    ``prefix``, ``bucket-region``. Without any of them every bucket is listed; with one of
    them but no ``max-buckets`` a page holds 10000."""
    q = req.query
    token = q.get("continuation-token") or None
    prefix = q.get("prefix", "")
    region = q.get("bucket-region") or None
    max_buckets: int | None = None
    if "max-buckets" in q:
        max_buckets = int_param(q, "max-buckets", MAX_LIST_BUCKETS, lo=1)
        if max_buckets > MAX_LIST_BUCKETS:
            raise e.InvalidArgument(f"Argument max-buckets must be an integer between 1 and {MAX_LIST_BUCKETS}")
    elif token is not None or prefix or region is not None:
        max_buckets = MAX_LIST_BUCKETS
    after = decode_token(token) if token is not None else ""
    buckets, truncated = await ctx.service.list_buckets(
        after=after, prefix=prefix, region=region, max_buckets=max_buckets
    )
    items = [
        E("Bucket", None, E("Name", b.name), E("CreationDate", iso8601(b.created_ns)), E("BucketRegion", b.region))
        for b in buckets
    ]
    fields = [owner(req), E("Buckets", None, *items) if items else "<Buckets></Buckets>"]
    if truncated:
        fields.append(E("ContinuationToken", encode_token(buckets[-1].name)))
    if "prefix" in q:
        fields.append(E("Prefix", prefix))
    body = document("ListAllMyBucketsResult", *fields)
    return Response(200, [("content-type", "application/xml")], body)


async def create_bucket(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None
    _sse.refuse_on_bucket(req.headers)  # an object's encryption header on CreateBucket: never ignored
    reject_unsupported(req)
    acl, ownership = creation_settings(req)  # bad ACL headers: refused before the body is read
    body = await req.read_small()
    region = None
    if body.strip():
        el = parse_xml(body, "CreateBucketConfiguration")
        region = text_of(el, "LocationConstraint") or None
    lock = req.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true"
    await ctx.service.create_bucket(req.bucket, region, object_lock=lock, acl=acl, ownership=ownership)
    return Response(200, [("location", f"/{req.bucket}")])


async def head_bucket(req: Request, ctx: Context) -> Response:
    info = await ctx.service.head_bucket(req.bucket or "")
    return Response(200, [("x-amz-bucket-region", info.region)])


async def delete_bucket(req: Request, ctx: Context) -> Response:
    await ctx.service.delete_bucket(req.bucket or "")
    return Response(204)


async def get_bucket_location(req: Request, ctx: Context) -> Response:
    info = await ctx.service.head_bucket(req.bucket or "")
    loc = "" if info.region == "us-east-1" else info.region
    return Response(200, [("content-type", "application/xml")], document("LocationConstraint", loc))


async def list_objects(req: Request, ctx: Context) -> Response:
    q = req.query
    bucket = req.bucket or ""
    v2 = q.get("list-type") == "2"
    if "list-type" in q and not v2:
        raise e.InvalidArgument("Invalid list-type")
    enc = q.get("encoding-type")
    if enc not in (None, "url"):
        raise e.InvalidArgument("Invalid Encoding Method specified in Request")
    url = enc == "url"
    max_keys = int_param(q, "max-keys", 1000, hi=1000)
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter", "")
    if v2:
        token = q.get("continuation-token") or None  # empty: absent, as S3 treats it
        start = decode_token(token) if token is not None else q.get("start-after", "")
    else:
        start = q.get("marker", "")
    page = await ctx.service.list_objects(
        bucket, ListOptions(prefix=prefix, delimiter=delimiter, start_after=start, max_keys=max_keys)
    )
    owner_el = owner(req) if (not v2 or q.get("fetch-owner") == "true") else ""
    # One f-string per entry (the same elements E() would build): a 1000-key page is hot.
    restore = wants_restore_status(req)  # only then: a point read per archived entry
    contents = [
        f"<Contents><Key>{esc(url_encode_key(x.key, url))}</Key>"
        f"<LastModified>{iso8601(x.modified_ns)}</LastModified><ETag>{esc(x.etag)}</ETag>"
        f"<Size>{x.size_bytes}</Size>{owner_el}<StorageClass>{esc(x.storage_class)}</StorageClass>"
        f"{await restore_status_element(ctx, bucket, x.key, None, x.storage_class) if restore else ''}</Contents>"
        for x in page.entries
    ]
    cps = [E("CommonPrefixes", None, E("Prefix", url_encode_key(p, url))) for p in page.common_prefixes]
    parts = [
        E("Name", bucket),
        E("Prefix", url_encode_key(prefix, url)),
    ]
    if v2:
        if token is not None:
            parts.append(E("ContinuationToken", token))
        if "start-after" in q:
            parts.append(E("StartAfter", url_encode_key(q["start-after"], url)))
        parts.append(E("KeyCount", len(page.entries) + len(page.common_prefixes)))
    else:
        parts.append(E("Marker", url_encode_key(q.get("marker", ""), url)))
    parts.append(E("MaxKeys", max_keys))
    if delimiter:
        parts.append(E("Delimiter", url_encode_key(delimiter, url)))
    if url:
        parts.append(E("EncodingType", "url"))
    parts.append(E("IsTruncated", "true" if page.is_truncated else "false"))
    if page.is_truncated and page.next_marker is not None:
        if v2:
            parts.append(E("NextContinuationToken", encode_token(page.next_marker)))
        elif delimiter:
            parts.append(E("NextMarker", url_encode_key(page.next_marker, url)))
    body = document("ListBucketResult", *parts, *contents, *cps)
    return Response(200, [("content-type", "application/xml")], body)


async def list_object_versions(req: Request, ctx: Context) -> Response:
    q = req.query
    bucket = req.bucket or ""
    enc = q.get("encoding-type")
    if enc not in (None, "url"):
        raise e.InvalidArgument("Invalid Encoding Method specified in Request")
    url = enc == "url"
    max_keys = int_param(q, "max-keys", 1000, hi=1000)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, vid_marker = q.get("key-marker", ""), q.get("version-id-marker", "")
    page = await ctx.service.list_object_versions(
        bucket,
        prefix=prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        version_id_marker=vid_marker,
        max_keys=max_keys,
    )
    owner_el = owner(req)
    restore = wants_restore_status(req)  # only then: a point read per archived version
    items: list[str] = []
    for meta, is_latest in page.versions:
        common = [
            E("Key", url_encode_key(meta.key, url)),
            E("VersionId", meta.version_id),
            E("IsLatest", "true" if is_latest else "false"),
            E("LastModified", iso8601(meta.modified_ns)),
        ]
        if meta.is_delete_marker:
            items.append(E("DeleteMarker", None, *common, owner_el))
        else:
            items.append(
                E(
                    "Version",
                    None,
                    *common,
                    E("ETag", meta.etag),
                    E("Size", meta.size_bytes),
                    E("StorageClass", meta.storage_class),
                    owner_el,
                    await restore_status_element(ctx, bucket, meta.key, meta.version_id, meta.storage_class)
                    if restore
                    else "",
                )
            )
    cps = [E("CommonPrefixes", None, E("Prefix", url_encode_key(p, url))) for p in page.common_prefixes]
    fields = [
        E("Name", bucket),
        E("Prefix", url_encode_key(prefix, url)),
        E("KeyMarker", url_encode_key(key_marker, url)),
        E("VersionIdMarker", vid_marker),
    ]
    if page.is_truncated and page.next_key_marker is not None:
        fields.append(E("NextKeyMarker", url_encode_key(page.next_key_marker, url)))
        if page.next_version_id_marker is not None:
            fields.append(E("NextVersionIdMarker", page.next_version_id_marker))
    fields.append(E("MaxKeys", max_keys))
    if delimiter:
        fields.append(E("Delimiter", url_encode_key(delimiter, url)))
    if url:
        fields.append(E("EncodingType", "url"))
    fields.append(E("IsTruncated", "true" if page.is_truncated else "false"))
    body = document("ListVersionsResult", *fields, *items, *cps)
    return Response(200, [("content-type", "application/xml")], body)


async def delete_objects(req: Request, ctx: Context) -> Response:
    bucket = req.bucket or ""
    if (
        "content-md5" not in req.headers
        and not any(h.startswith("x-amz-checksum-") or h == "x-amz-sdk-checksum-algorithm" for h in req.headers)
        and "x-amz-trailer" not in req.headers
    ):
        raise e.InvalidRequest("Missing required header for this request: Content-MD5")
    body = await req.read_small()
    check_body_digest(req, body)
    el = parse_xml(body, "Delete")
    quiet = (text_of(el, "Quiet") or "false").strip().lower() == "true"
    objs = list(children(el, "Object"))
    if not objs:  # S3 requires at least one <Object>
        raise e.MalformedXML()
    if len(objs) > MAX_DELETE_KEYS:
        raise e.MalformedXML("You may delete at most 1000 objects in one request.")
    bypass = bypass_governance(req)
    # Each key is authorized as its own DeleteObject (a denied key is an Error entry), all of
    # them before the bucket is looked at: a caller denied every key gets the same answer
    # whether the bucket exists or not.
    entries: list[tuple[str, str | None, e.TierstoreError | None]] = []
    for o in objs:
        key = text_of(o, "Key")
        version = text_of(o, "VersionId")
        if key is None:
            raise e.MalformedXML()
        arn = object_arn(bucket, key)
        checks = [Check("s3:DeleteObject" if version is None else "s3:DeleteObjectVersion", arn)]
        if bypass:
            checks.append(Check("s3:BypassGovernanceRetention", arn))
        try:
            await ctx.authorize_entry(req, *checks)
            entries.append((key, version, None))
        except e.AccessDenied as exc:
            entries.append((key, version, exc))
    if any(denied is None for _, _, denied in entries):
        await ctx.service.head_bucket(bucket)
    out: list[str] = []
    for key, version, denied in entries:
        try:
            if denied is not None:
                raise denied
            result = await ctx.service.delete_object(bucket, key, version_id=version, bypass_governance=bypass)
            if not quiet:
                fields = [E("Key", key)]
                if version is not None:
                    fields.append(E("VersionId", version))
                    if result.delete_marker:  # S3 names the removed marker as the marker version
                        fields += [E("DeleteMarker", "true"), E("DeleteMarkerVersionId", version)]
                elif result.delete_marker:
                    fields += [E("DeleteMarker", "true"), E("DeleteMarkerVersionId", result.version_id)]
                out.append(E("Deleted", None, *fields))
        except e.TierstoreError as exc:
            vid = [E("VersionId", version)] if version is not None else []
            out.append(E("Error", None, E("Key", key), *vid, E("Code", exc.code), E("Message", exc.message)))
    return Response(200, [("content-type", "application/xml")], document("DeleteResult", *out))
