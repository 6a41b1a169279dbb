"""RestoreObject (``POST /bucket/key?restore[&versionId=]``) and ``x-amz-restore`` on HEAD and GET
(docs/tiers.md "Restore").

The request is a ``RestoreRequest`` document: ``Days`` (required, at least 1, counted in lifecycle
days: ``--lifecycle-day-seconds``), ``GlacierJobParameters/Tier`` (Standard, Bulk or Expedited:
accepted; every restore here is a local copy made at once), ``Tier`` likewise. A select restore
(``Type`` SELECT, ``SelectParameters``) or one to another place (``OutputLocation``) is
NotImplemented. Answers 202 when a restore starts, 200 when the version was restored already (the
expiry is renewed), 409 ``RestoreAlreadyInProgress`` while one runs, 403 ``InvalidObjectState``
for a version that is not in a restore-required tier (as AWS answers for a non-archive object).
"""

from __future__ import annotations

from tierstore import errors as e
from tierstore.api._common import check_body_digest, xml_int
from tierstore.api._request import Context, Request, Response, http_date
from tierstore.api._xml import E, children, iso8601, parse_xml, text_of
from tierstore.types import ObjectMeta

__all__ = ["restore_headers", "restore_object", "restore_status_element", "wants_restore_status"]

_TIERS = ("Standard", "Bulk", "Expedited")
_UNSUPPORTED = ("SelectParameters", "OutputLocation")


async def restore_object(req: Request, ctx: Context) -> Response:
    assert req.bucket is not None and req.key is not None
    body = await req.read_small()
    check_body_digest(req, body)
    el = parse_xml(body, "RestoreRequest")
    if text_of(el, "Type") is not None or any(next(iter(children(el, n)), None) is not None for n in _UNSUPPORTED):
        raise e.NotImplementedOperation("Select restores and restores to an output location are not implemented.")
    for job in children(el, "GlacierJobParameters"):
        if text_of(job, "Tier") not in _TIERS:
            raise e.MalformedXML()
    tier = text_of(el, "Tier")
    if tier is not None and tier not in _TIERS:
        raise e.MalformedXML()
    days = xml_int(text_of(el, "Days"))
    if days is None:  # AWS answers a restore of an archived object without Days so
        raise e.MalformedXML()
    if days < 1:
        raise e.InvalidArgument("The Days in a RestoreRequest must be at least 1.", fields={"ArgumentName": "Days"})
    started = await ctx.service.restore_object(req.bucket, req.key, req.query.get("versionId"), days)
    return Response(202 if started else 200)


async def restore_headers(ctx: Context, meta: ObjectMeta) -> list[tuple[str, str]]:
    """``x-amz-restore`` of a version in a restore-required tier that has a restore."""
    status = await ctx.service.restore_status(meta.bucket, meta.key, meta.version_id, meta.storage_class)
    if status is None:
        return []
    ongoing, expires_ns = status
    if ongoing or expires_ns is None:
        return [("x-amz-restore", 'ongoing-request="true"')]
    # Whole seconds, never before the copy is dropped.
    return [("x-amz-restore", f'ongoing-request="false", expiry-date="{http_date(expires_ns + 999_999_999)}"')]


def wants_restore_status(req: Request) -> bool:
    """``x-amz-optional-object-attributes: RestoreStatus`` on a listing."""
    value = req.headers.get("x-amz-optional-object-attributes", "")
    return "RestoreStatus" in (v.strip() for v in value.split(","))


async def restore_status_element(
    ctx: Context, bucket: str, key: str, version_id: str | None, storage_class: str
) -> str:
    """A listing entry's ``<RestoreStatus>`` (empty when the version has no restore)."""
    status = await ctx.service.restore_status(bucket, key, version_id, storage_class)
    if status is None:
        return ""
    ongoing, expires_ns = status
    if ongoing or expires_ns is None:
        return E("RestoreStatus", None, E("IsRestoreInProgress", "true"))
    expiry = iso8601(expires_ns + 999_999_999)
    return E("RestoreStatus", None, E("IsRestoreInProgress", "false"), E("RestoreExpiryDate", expiry))
