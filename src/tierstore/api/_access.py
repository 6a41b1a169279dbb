"""ACL and Object Ownership handlers: Get/PutBucketAcl, Get/PutObjectAcl (with versionId),
Get/Put/DeleteBucketOwnershipControls, and ``request_acl``, which the write handlers
(CreateBucket, PutObject, CopyObject, CreateMultipartUpload) use for their ACL headers.

What a bucket's settings allow an ACL to be (``check_settable``):
- Object Ownership ``BucketOwnerEnforced`` disables ACLs: only ``private`` /
  ``bucket-owner-full-control`` (owner FULL_CONTROL alone) may be set, anything else is 400
  AccessControlListNotSupported. Without a setting a bucket behaves as ``ObjectWriter`` (ACLs
  work), as MinIO and Ceph do.
- Block Public Access ``BlockPublicAcls``: a public ACL (a grant to AllUsers or
  AuthenticatedUsers) is 403 AccessDenied.
"""

from __future__ import annotations

from typing import Any

from tierstore import errors as e
from tierstore.api import _acl
from tierstore.api._common import config_body, version_header
from tierstore.api._request import Context, Request, Response
from tierstore.api._xml import E, children, document, text_of

__all__ = [
    "OWNERSHIPS",
    "check_settable",
    "creation_settings",
    "delete_bucket_ownership_controls",
    "get_bucket_acl",
    "get_bucket_ownership_controls",
    "get_object_acl",
    "put_bucket_acl",
    "put_bucket_ownership_controls",
    "put_object_acl",
    "request_acl",
]

OWNERSHIPS = frozenset({"BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"})
ENFORCED = "BucketOwnerEnforced"
_XML = [("content-type", "application/xml")]


def check_settable(acl: _acl.Acl, props: dict[str, Any]) -> None:
    """Raise unless a bucket with settings ``props`` accepts ``acl`` (see the module docstring)."""
    if props.get("ownership") == ENFORCED and not _acl.is_owner_only(acl):
        raise e.AccessControlListNotSupported()
    if (props.get("public_access_block") or {}).get("BlockPublicAcls") and _acl.is_public(acl):
        raise e.AccessDenied("Access Denied")


async def request_acl(req: Request, ctx: Context, bucket: str) -> list[list[str]] | None:
    """The ACL a write's headers set, checked against the bucket (stored form); None without
    ACL headers (the bucket's settings are then not read)."""
    acl = _acl.from_headers(req.headers)
    if acl is None:
        return None
    check_settable(acl, await ctx.service.bucket_props(bucket))
    return _acl.to_stored(acl)


def creation_settings(req: Request) -> tuple[list[list[str]] | None, str | None]:
    """CreateBucket's ACL and ``x-amz-object-ownership``: an unknown ownership is 400
    InvalidArgument; ACL grants with BucketOwnerEnforced are 400 InvalidBucketAclWithObjectOwnership."""
    ownership = req.headers.get("x-amz-object-ownership")
    if ownership is not None and ownership not in OWNERSHIPS:
        raise e.InvalidArgument(
            "Invalid x-amz-object-ownership header",
            fields={"ArgumentName": "x-amz-object-ownership", "ArgumentValue": ownership[:64]},
        )
    acl = _acl.from_headers(req.headers)
    if acl is None:
        return None, ownership
    if ownership == ENFORCED and not _acl.is_owner_only(acl):
        raise e.InvalidBucketAclWithObjectOwnership()
    return _acl.to_stored(acl), ownership


async def _requested(req: Request) -> _acl.Acl:
    """The ACL a Put*Acl request sets: its XML body or its headers, exactly one of them."""
    body = await req.read_small()
    headers = _acl.from_headers(req.headers)
    if body.strip():
        if headers is not None:
            raise e.UnexpectedContent()
        return _acl.parse_acl(body)
    if headers is None:
        raise e.MissingSecurityHeader(fields={"MissingHeaderName": "x-amz-acl"})
    return headers


async def get_bucket_acl(req: Request, ctx: Context) -> Response:
    props = await ctx.service.bucket_props(req.bucket or "")
    return Response(200, list(_XML), _acl.acl_document(_acl.from_stored(props.get("acl"))))


async def put_bucket_acl(req: Request, ctx: Context) -> Response:
    bucket = req.bucket or ""
    await ctx.service.head_bucket(bucket)  # NoSuchBucket before the body's errors
    acl = await _requested(req)

    def update(props: dict[str, Any]) -> dict[str, Any]:
        check_settable(acl, props)
        props["acl"] = _acl.to_stored(acl)
        return props

    await ctx.service.update_bucket_props(bucket, update)
    return Response(200)


async def get_object_acl(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    version = req.query.get("versionId")
    stored = await ctx.service.object_acl(req.bucket, req.key, version)
    if (await ctx.service.bucket_props(req.bucket)).get("ownership") == ENFORCED:
        stored = []  # ACLs disabled: the owner's FULL_CONTROL is what applies (S3 answers so)
    headers = list(_XML)
    if version is not None:
        headers.append(("x-amz-version-id", version))
    return Response(200, headers, _acl.acl_document(_acl.from_stored(stored)))


async def put_object_acl(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    acl = await _requested(req)
    check_settable(acl, await ctx.service.bucket_props(req.bucket))
    meta = await ctx.service.put_object_acl(req.bucket, req.key, _acl.to_stored(acl), req.query.get("versionId"))
    return Response(200, version_header(meta))


async def get_bucket_ownership_controls(req: Request, ctx: Context) -> Response:
    """OwnershipControlsNotFoundError (404) when the bucket has no setting."""
    ownership = (await ctx.service.bucket_props(req.bucket or "")).get("ownership")
    if ownership is None:
        raise e.OwnershipControlsNotFoundError()
    rule = E("Rule", None, E("ObjectOwnership", ownership))
    return Response(200, list(_XML), document("OwnershipControls", rule))


async def put_bucket_ownership_controls(req: Request, ctx: Context) -> Response:
    """One Rule with a known ObjectOwnership, else MalformedXML. BucketOwnerEnforced over a
    bucket ACL that grants more than the owner's FULL_CONTROL: 400
    InvalidBucketAclWithObjectOwnership (S3: migrate the ACL first)."""
    bucket = req.bucket or ""
    await ctx.service.head_bucket(bucket)
    el = await config_body(req, "OwnershipControls")
    rules = list(children(el, "Rule"))
    if len(rules) != 1:
        raise e.MalformedXML()
    ownership = (text_of(rules[0], "ObjectOwnership") or "").strip()
    if ownership not in OWNERSHIPS:
        raise e.MalformedXML()

    def update(props: dict[str, Any]) -> dict[str, Any]:
        if ownership == ENFORCED and not _acl.is_owner_only(_acl.from_stored(props.get("acl"))):
            raise e.InvalidBucketAclWithObjectOwnership()
        props["ownership"] = ownership
        return props

    await ctx.service.update_bucket_props(bucket, update)
    return Response(200)


async def delete_bucket_ownership_controls(req: Request, ctx: Context) -> Response:
    def update(props: dict[str, Any]) -> dict[str, Any]:
        props.pop("ownership", None)
        return props

    await ctx.service.update_bucket_props(req.bucket or "", update)
    return Response(204)
