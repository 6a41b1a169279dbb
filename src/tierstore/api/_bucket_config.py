"""Bucket configuration handlers: versioning, bucket tagging, object lock configuration."""

from __future__ import annotations

from tierstore import errors as e
from tierstore.api._common import config_body, tag_set, tagging_document, xml_int
from tierstore.api._request import Context, Request, Response
from tierstore.api._xml import E, children, document, parse_xml, text_of
from tierstore.engine import DefaultRetention, LockConfig

__all__ = [
    "delete_bucket_tagging",
    "get_bucket_tagging",
    "get_bucket_versioning",
    "get_object_lock_configuration",
    "put_bucket_tagging",
    "put_bucket_versioning",
    "put_object_lock_configuration",
]

_XML = [("content-type", "application/xml")]


async def get_bucket_versioning(req: Request, ctx: Context) -> Response:
    status = await ctx.service.get_bucket_versioning(req.bucket or "")
    body = document("VersioningConfiguration", E("Status", status) if status else "")
    return Response(200, list(_XML), body)


async def put_bucket_versioning(req: Request, ctx: Context) -> Response:
    body = await req.read_small()
    el = parse_xml(body, "VersioningConfiguration")
    if (text_of(el, "MfaDelete") or "Disabled") == "Enabled":
        raise e.NotImplementedOperation("MFA delete is not implemented.")
    status = text_of(el, "Status")
    if status is None:
        raise e.MalformedXML()
    await ctx.service.set_bucket_versioning(req.bucket or "", status)
    return Response(200)


async def get_bucket_tagging(req: Request, ctx: Context) -> Response:
    """NoSuchTagSet when the bucket has none."""
    tags = await ctx.service.get_bucket_tagging(req.bucket or "")
    return Response(200, list(_XML), tagging_document(tags))


async def put_bucket_tagging(req: Request, ctx: Context) -> Response:
    await ctx.service.put_bucket_tagging(req.bucket or "", await tag_set(req))
    return Response(204)


async def delete_bucket_tagging(req: Request, ctx: Context) -> Response:
    await ctx.service.delete_bucket_tagging(req.bucket or "")
    return Response(204)


async def get_object_lock_configuration(req: Request, ctx: Context) -> Response:
    """ObjectLockEnabled=Enabled, and the default retention if any."""
    config = await ctx.service.get_object_lock_configuration(req.bucket or "")
    rule = ""
    if config.default is not None:
        d = config.default
        period = E("Days", d.days) if d.days is not None else E("Years", d.years)
        rule = E("Rule", None, E("DefaultRetention", None, E("Mode", d.mode), period))
    body = document("ObjectLockConfiguration", E("ObjectLockEnabled", "Enabled"), rule)
    return Response(200, list(_XML), body)


async def put_object_lock_configuration(req: Request, ctx: Context) -> Response:
    el = await config_body(req, "ObjectLockConfiguration")
    if text_of(el, "ObjectLockEnabled") != "Enabled":
        raise e.MalformedXML()
    default = None
    rule_el = next(iter(children(el, "Rule")), None)
    if rule_el is not None:
        dr = next(iter(children(rule_el, "DefaultRetention")), None)
        if dr is None:
            raise e.MalformedXML()
        mode, days, years = text_of(dr, "Mode"), text_of(dr, "Days"), text_of(dr, "Years")
        if mode is None:
            raise e.MalformedXML()
        default = DefaultRetention(mode, xml_int(days), xml_int(years))
    await ctx.service.put_object_lock_configuration(req.bucket or "", LockConfig(default))
    return Response(200)
