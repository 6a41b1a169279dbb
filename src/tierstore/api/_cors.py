"""CORS: Put/Get/DeleteBucketCors, the preflight ``OPTIONS``, and the CORS headers of actual
requests.

A bucket's ``CORSConfiguration`` (up to 100 ``CORSRule``: ``ID``, ``AllowedOrigin`` and
``AllowedHeader`` with at most one ``*`` wildcard each, ``AllowedMethod`` among GET, PUT, HEAD,
POST, DELETE, ``ExposeHeader``, ``MaxAgeSeconds``) is validated here and stored with the bucket's
properties (``props["cors"]``). The first rule that matches the request's origin, method and (for
a preflight) requested headers decides, as in S3.

- ``preflight`` answers ``OPTIONS /bucket[/key]`` without authentication: a browser sends it
  without credentials by design, and it tells only what the bucket's CORS rules allow. It never
  looks at the key, and a missing bucket answers as a bucket without CORS: nothing about an
  object or a bucket's existence shows.
- ``apply`` adds the matching rule's headers to the answer of an actual request that carries
  ``Origin`` (errors included, so a browser can read them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree.ElementTree import Element

from tierstore import errors as e
from tierstore.api._common import config_body
from tierstore.api._request import Context, Request, Response
from tierstore.api._xml import E, children, document, text_of
from tierstore.engine import ObjectService

__all__ = ["MAX_RULES", "apply", "delete_bucket_cors", "get_bucket_cors", "parse_cors", "preflight", "put_bucket_cors"]

MAX_RULES = 100
METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")
_MAX_ID = 255
_VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
_NOT_ENABLED = "CORSResponse: CORS is not enabled for this bucket."
_NOT_ALLOWED = (
    "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request "
    "method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the "
    "resource's CORS spec."
)
Rule = dict[str, Any]  # id, origins, methods, headers, expose, max_age (as stored in props["cors"])


# --- the configuration document ----------------------------------------------------------------
def parse_cors(root: Element) -> list[Rule]:
    """The rules of a ``CORSConfiguration`` element; S3's errors for a bad one."""
    rules: list[Rule] = []
    for el in children(root, "CORSRule"):
        methods = [(m.text or "").strip() for m in children(el, "AllowedMethod")]
        origins = [(o.text or "").strip() for o in children(el, "AllowedOrigin")]
        if not methods or not origins:
            raise e.MalformedXML()
        for method in methods:
            if method not in METHODS:
                unsupported = f"Unsupported method is {method[:20]}"
                raise e.InvalidRequest(f"Found unsupported HTTP method in CORS config. {unsupported}")
        for origin in origins:
            if origin.count("*") > 1:
                raise e.InvalidRequest(f'AllowedOrigin "{origin[:100]}" can not have more than one wildcard.')
        headers = [(h.text or "").strip() for h in children(el, "AllowedHeader")]
        for header in headers:
            if header.count("*") > 1:
                raise e.InvalidRequest(f'AllowedHeader "{header[:100]}" can not have more than one wildcard.')
        rule_id = text_of(el, "ID")
        if rule_id is not None and len(rule_id) > _MAX_ID:
            raise e.InvalidArgument(f"The ID of a CORS rule can be at most {_MAX_ID} characters.")
        max_age = text_of(el, "MaxAgeSeconds")
        try:
            age = int(max_age) if max_age is not None else None
        except ValueError:
            raise e.MalformedXML() from None
        rules.append(
            {
                "id": rule_id,
                "origins": origins,
                "methods": methods,
                "headers": headers,
                "expose": [(x.text or "").strip() for x in children(el, "ExposeHeader")],
                "max_age": age,
            }
        )
    if not rules:
        raise e.MalformedXML()
    if len(rules) > MAX_RULES:
        raise e.InvalidRequest(f"A CORS configuration can have at most {MAX_RULES} rules.")
    return rules


def _document(rules: Sequence[Rule]) -> bytes:
    out = []
    for r in rules:
        parts = [E("ID", r["id"])] if r.get("id") is not None else []
        parts += [E("AllowedHeader", h) for h in r["headers"]]
        parts += [E("AllowedMethod", m) for m in r["methods"]]
        parts += [E("AllowedOrigin", o) for o in r["origins"]]
        parts += [E("ExposeHeader", x) for x in r["expose"]]
        if r.get("max_age") is not None:
            parts.append(E("MaxAgeSeconds", r["max_age"]))
        out.append(E("CORSRule", None, *parts))
    return document("CORSConfiguration", *out)


# --- handlers ----------------------------------------------------------------------------------
async def put_bucket_cors(req: Request, ctx: Context) -> Response:
    root = await config_body(req, "CORSConfiguration")
    await ctx.service.put_bucket_cors(req.bucket or "", parse_cors(root))
    return Response(200)


async def get_bucket_cors(req: Request, ctx: Context) -> Response:
    """``NoSuchCORSConfiguration`` (404) when the bucket has none."""
    rules = await ctx.service.get_bucket_cors(req.bucket or "")
    if rules is None:
        raise e.NoSuchCORSConfiguration(resource=req.bucket or "")
    return Response(200, [("content-type", "application/xml")], _document(rules))


async def delete_bucket_cors(req: Request, ctx: Context) -> Response:
    await ctx.service.delete_bucket_cors(req.bucket or "")
    return Response(204)


# --- matching ----------------------------------------------------------------------------------
def _wildcard(pattern: str, value: str) -> bool:
    """``pattern`` with at most one ``*`` (any run of characters) matches all of ``value``."""
    head, star, tail = pattern.partition("*")
    if not star:
        return pattern == value
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def _match(rules: Sequence[Rule], origin: str, method: str, requested: Sequence[str]) -> Rule | None:
    for rule in rules:
        if method not in rule["methods"] or not any(_wildcard(o, origin) for o in rule["origins"]):
            continue
        allowed = [h.lower() for h in rule["headers"]]
        if all(any(_wildcard(a, h) for a in allowed) for h in requested):
            return rule
    return None


def _headers(rule: Rule, origin: str, requested: Sequence[str], *, preflight: bool) -> list[tuple[str, str]]:
    """The CORS headers of ``rule`` for ``origin`` (S3: a ``*`` origin rule answers ``*`` and no
    credentials; any other echoes the origin and allows credentials)."""
    wildcard = "*" in rule["origins"]
    out = [("access-control-allow-origin", "*" if wildcard else origin)]
    if not wildcard:
        out.append(("access-control-allow-credentials", "true"))
    out.append(("access-control-allow-methods", ", ".join(rule["methods"])))
    if preflight and requested:
        out.append(("access-control-allow-headers", ", ".join(requested)))
    if rule["expose"]:
        out.append(("access-control-expose-headers", ", ".join(rule["expose"])))
    if rule.get("max_age") is not None:
        out.append(("access-control-max-age", str(rule["max_age"])))
    out.append(("vary", _VARY))
    return out


async def _rules(service: ObjectService, bucket: str) -> list[Rule] | None:
    """The bucket's rules from the per-worker cache (no bucket: None, answered as a bucket
    without CORS, so existence does not show)."""
    return await service.cached_bucket_cors(bucket)


async def preflight(req: Request, ctx: Context) -> Response:
    """``OPTIONS``: 200 with the matching rule's headers, else 403 (see the module docstring)."""
    origin = req.headers.get("origin")
    if not origin:
        raise e.BadRequest("Insufficient information. Origin request header needed.")
    method = req.headers.get("access-control-request-method")
    if method not in METHODS:
        raise e.BadRequest(f"Invalid Access-Control-Request-Method: {(method or 'null')[:20]}")
    requested = [h.strip().lower() for h in req.headers.get("access-control-request-headers", "").split(",")]
    requested = [h for h in requested if h]
    fields = {"Method": method, "ResourceType": "OBJECT" if req.key else "BUCKET"}
    rules = await _rules(ctx.service, req.bucket or "")
    if rules is None:
        raise e.CORSResponse(_NOT_ENABLED, fields=fields)
    rule = _match(rules, origin, method, requested)
    if rule is None:
        raise e.CORSResponse(_NOT_ALLOWED, fields=fields)
    return Response(200, _headers(rule, origin, requested, preflight=True))


async def apply(service: ObjectService, bucket: str, method: str, headers: Mapping[str, str], resp: Response) -> None:
    """Add the CORS headers of the rule matching an actual request with ``Origin`` (no rule, no
    configuration or no bucket: nothing is added)."""
    origin = headers.get("origin")
    if not origin or any(k.startswith("access-control-") for k, _ in resp.headers):
        return
    with contextlib.suppress(e.TierstoreError):  # a catalog hiccup must not turn the answer into an error
        rules = await _rules(service, bucket)
        rule = _match(rules, origin, method, ()) if rules else None
        if rule is not None:
            resp.headers.extend(_headers(rule, origin, (), preflight=False))
