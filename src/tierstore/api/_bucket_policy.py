"""Bucket policy and Block Public Access handlers (Put/Get/DeleteBucketPolicy,
GetBucketPolicyStatus, Put/Get/DeletePublicAccessBlock), and the two pure checks the authorizer
shares with them: ``validate_bucket_policy`` and ``is_public``.

A bucket policy is validated once, at PUT, with the IAM policy parser (``kind="resource"``:
a Principal is required) plus AWS's bucket-policy rules: every Resource names this bucket or an
object in it, every Action is an ``s3:`` action. Anything else is ``MalformedPolicy`` (400) with
the parser's message; nothing is stored. The document is stored as sent and returned as sent.

"Public" is AWS's definition (S3 user guide, "The meaning of public"): an Allow statement whose
Principal is ``*`` (or ``{"AWS": "*"}``, or a NotPrincipal) is public unless one of its
conditions fixes who may use it: ``aws:SourceIp`` limited to CIDRs (IpAddress, none broader
than /8 for IPv4 or /32 for IPv6), or an exact value (StringEquals, StringEqualsIgnoreCase,
ArnEquals, or StringLike/ArnLike without a wildcard) of ``aws:SourceVpc``, ``aws:SourceVpce``,
``aws:PrincipalAccount``, ``aws:PrincipalArn``, ``aws:userid`` or
``s3:x-amz-server-side-encryption-aws-kms-key-id``. ``...IfExists`` and ``ForAnyValue:``/
``ForAllValues:`` conditions fix nothing (they pass when the key is absent).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from tierstore import errors as e
from tierstore import iam
from tierstore.api._common import check_body_digest, config_body
from tierstore.api._request import Context, Request, Response
from tierstore.api._xml import E, document, text_of
from tierstore.engine import PUBLIC_ACCESS_BLOCK_FLAGS

__all__ = [
    "delete_bucket_policy",
    "delete_public_access_block",
    "get_bucket_policy",
    "get_bucket_policy_status",
    "get_public_access_block",
    "is_public",
    "put_bucket_policy",
    "put_public_access_block",
    "validate_bucket_policy",
]

_XML = [("content-type", "application/xml")]
_S3_ARN = "arn:aws:s3:::"
_MAX_BODY_BYTES = 64 * 1024  # read at most this much; the parser refuses past 20 KiB with its message
# Condition keys whose exact value fixes who may use a statement (AWS's list, the keys we know).
_FIXING_KEYS = frozenset(
    {
        "aws:sourcevpc",
        "aws:sourcevpce",
        "aws:principalaccount",
        "aws:principalarn",
        "aws:userid",
        "s3:x-amz-server-side-encryption-aws-kms-key-id",
    }
)
_EXACT_OPERATORS = frozenset({"stringequals", "stringequalsignorecase", "arnequals", "stringlike", "arnlike"})
_MIN_PREFIX = {4: 8, 6: 32}  # a SourceIp range broader than this is as good as everyone


def validate_bucket_policy(document: bytes | str, bucket: str) -> iam.Policy:
    """The parsed policy, or ``MalformedPolicy``: the IAM parser's message, "Policy has invalid
    resource" for a Resource outside ``bucket``, "Policy has invalid action" for a non-S3 action."""
    if isinstance(document, bytes):
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError:
            raise e.MalformedPolicy("Policies must be valid JSON and the first byte must be '{'") from None
    policy = iam.parse_policy(document, kind="resource", name=f"bucket-policy:{bucket}")
    own = f"{_S3_ARN}{bucket}"
    for stmt in policy.statements:
        for pattern in stmt.resources or ():
            if pattern.text != own and not pattern.text.startswith(own + "/"):
                raise e.MalformedPolicy("Policy has invalid resource")
        for pattern in stmt.actions:
            if pattern.text != "*" and not pattern.text.lower().startswith("s3:"):
                raise e.MalformedPolicy("Policy has invalid action")
    return policy


def is_public(policy: iam.Policy) -> bool:
    """Whether ``policy`` grants public access (see the module docstring)."""
    raw = policy.document.get("Statement")
    statements = raw if isinstance(raw, list) else [raw]
    return any(_public_statement(s) for s in statements if isinstance(s, Mapping))


def _public_statement(stmt: Mapping[str, Any]) -> bool:
    if stmt.get("Effect") != "Allow":
        return False
    if "NotPrincipal" not in stmt and not _names_everyone(stmt.get("Principal")):
        return False
    conditions = stmt.get("Condition") or {}
    return not any(
        _fixes(operator, key, values)
        for operator, block in conditions.items()
        if isinstance(block, Mapping)
        for key, values in block.items()
    )


def _names_everyone(principal: object) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        ids = principal.get("AWS")
        return ids == "*" or (isinstance(ids, list) and "*" in ids)
    return False


def _fixes(operator: str, key: str, values: object) -> bool:
    """Whether one condition limits a statement to fixed callers."""
    op, key = operator.lower(), key.lower()
    items = [values] if isinstance(values, str) else values if isinstance(values, list) else []
    if not items or not all(isinstance(v, str) for v in items):
        return False
    if key == "aws:sourceip":
        return op == "ipaddress" and all(_narrow_cidr(v) for v in items)
    if key not in _FIXING_KEYS or op not in _EXACT_OPERATORS:
        return False
    return not (op.endswith("like") and any("*" in v or "?" in v for v in items))


def _narrow_cidr(value: str) -> bool:
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return False
    return net.prefixlen >= _MIN_PREFIX[net.version]


# --- handlers --------------------------------------------------------------------------------
async def put_bucket_policy(req: Request, ctx: Context) -> Response:
    """Validate, refuse a public policy under BlockPublicPolicy (403 AccessDenied), store. 204."""
    bucket = req.bucket or ""
    try:
        body = bytes(await req.read_buffer(_MAX_BODY_BYTES, json_body=True))
    except e.InvalidRequest:
        raise e.MalformedPolicy(f"Policies must be at most {iam.MAX_POLICY_CHARS['resource']} bytes") from None
    check_body_digest(req, body)
    policy = validate_bucket_policy(body, bucket)
    await ctx.service.bucket_access.put_policy(bucket, body.decode("utf-8"), public=is_public(policy))
    return Response(204)


async def get_bucket_policy(req: Request, ctx: Context) -> Response:
    """The document as it was put; 404 NoSuchBucketPolicy when there is none."""
    text = await ctx.service.bucket_access.get_policy(req.bucket or "")
    return Response(200, [("content-type", "application/json")], text.encode())


async def delete_bucket_policy(req: Request, ctx: Context) -> Response:
    await ctx.service.bucket_access.delete_policy(req.bucket or "")
    return Response(204)


async def get_bucket_policy_status(req: Request, ctx: Context) -> Response:
    """``IsPublic`` of the bucket's policy; 404 NoSuchBucketPolicy when there is none (as AWS)."""
    bucket = req.bucket or ""
    text = await ctx.service.bucket_access.get_policy(bucket)
    try:
        public = is_public(iam.parse_policy(text, kind="resource"))
    except e.MalformedPolicy:
        public = False  # stored before validation: it grants nothing (the authorizer skips it)
    body = document("PolicyStatus", E("IsPublic", "true" if public else "false"))
    return Response(200, list(_XML), body)


async def put_public_access_block(req: Request, ctx: Context) -> Response:
    """The four flags, each ``true`` or ``false`` (absent: false). 200."""
    el = await config_body(req, "PublicAccessBlockConfiguration")
    flags: dict[str, bool] = {}
    for flag in PUBLIC_ACCESS_BLOCK_FLAGS:
        value = text_of(el, flag)
        if value is None:
            continue
        if value.strip().lower() not in ("true", "false"):
            raise e.MalformedXML()
        flags[flag] = value.strip().lower() == "true"
    await ctx.service.bucket_access.put_public_access_block(req.bucket or "", flags)
    return Response(200)


async def get_public_access_block(req: Request, ctx: Context) -> Response:
    """404 NoSuchPublicAccessBlockConfiguration when none was put."""
    flags = await ctx.service.bucket_access.get_public_access_block(req.bucket or "")
    body = document(
        "PublicAccessBlockConfiguration",
        *(E(flag, "true" if flags[flag] else "false") for flag in PUBLIC_ACCESS_BLOCK_FLAGS),
    )
    return Response(200, list(_XML), body)


async def delete_public_access_block(req: Request, ctx: Context) -> Response:
    await ctx.service.bucket_access.delete_public_access_block(req.bucket or "")
    return Response(204)
