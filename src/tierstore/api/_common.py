"""Request-reading helpers that several S3 resources share (owner, continuation tokens, body
digests, tag sets, unsupported headers)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from xml.etree.ElementTree import Element

from tierstore import errors as e
from tierstore.api._acl import OWNER_ID, OWNER_NAME
from tierstore.api._request import Request, parse_http_date
from tierstore.api._xml import E, children, document, parse_xml, text_of
from tierstore.types import NULL_VERSION, Conditions, ObjectMeta

__all__ = [
    "bypass_governance",
    "check_body_digest",
    "config_body",
    "decode_token",
    "encode_token",
    "owner",
    "parse_tag_set",
    "read_conditions",
    "reject_unsupported",
    "tag_set",
    "tagging_document",
    "version_header",
    "xml_int",
]

_UNSUPPORTED_HEADERS = ("x-amz-website-redirect-location",)


# One account: everything is owned by the store's canonical user (api/_acl.py), whoever asks.
_OWNER = E("Owner", None, E("ID", OWNER_ID), E("DisplayName", OWNER_NAME))


def owner(req: Request) -> str:
    return _OWNER


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_token(token: str) -> str:
    try:
        # validate=True: a junk token must not decode to "" and restart the listing.
        key = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
        if not key:
            raise ValueError("empty continuation token")
        return key
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise e.InvalidArgument("The continuation token provided is incorrect") from exc


def check_body_digest(req: Request, body: bytes) -> None:
    md5 = req.headers.get("content-md5")
    if md5 is not None:
        try:
            raw = base64.b64decode(md5, validate=True)
        except ValueError as exc:
            raise e.InvalidDigest() from exc
        if len(raw) != 16:  # not an MD5 at all: S3 says InvalidDigest, as for PutObject
            raise e.InvalidDigest()
        if raw != hashlib.md5(body).digest():  # noqa: S324 - protocol-defined
            raise e.BadDigest()


def reject_unsupported(req: Request) -> None:
    """Headers of a write that we do not implement (server-side encryption: api/_sse.py)."""
    for h in _UNSUPPORTED_HEADERS:
        if h in req.headers:
            raise e.NotImplementedOperation(f"The header {h} is not implemented yet.")


def bypass_governance(req: Request) -> bool:
    return req.headers.get("x-amz-bypass-governance-retention", "").lower() == "true"


def read_conditions(req: Request, prefix: str = "") -> Conditions:
    h = req.headers
    return Conditions(
        if_match=h.get(f"{prefix}if-match"),
        if_none_match=h.get(f"{prefix}if-none-match"),
        if_modified_since_ns=parse_http_date(h.get(f"{prefix}if-modified-since")),
        if_unmodified_since_ns=parse_http_date(h.get(f"{prefix}if-unmodified-since")),
    )


def version_header(meta: ObjectMeta) -> list[tuple[str, str]]:
    return [("x-amz-version-id", meta.version_id)] if meta.version_id != NULL_VERSION else []


def xml_int(text: str | None) -> int | None:
    """An integer element of a request document (absent -> None); anything else is MalformedXML."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError as exc:
        raise e.MalformedXML() from exc


async def config_body(req: Request, root: str) -> Element:
    body = await req.read_small()
    check_body_digest(req, body)
    return parse_xml(body, root)


async def tag_set(req: Request) -> list[tuple[str, str]]:
    body = await req.read_small()
    check_body_digest(req, body)
    return parse_tag_set(body)


def parse_tag_set(body: bytes) -> list[tuple[str, str]]:
    """The (key, value) pairs of a ``Tagging`` document (a request body, a POST form's field)."""
    el = parse_xml(body, "Tagging")
    tags = next(iter(children(el, "TagSet")), None)
    if tags is None:
        raise e.MalformedXML()
    pairs = []
    for tag in children(tags, "Tag"):
        key, value = text_of(tag, "Key"), text_of(tag, "Value")
        if key is None or value is None:
            raise e.MalformedXML()
        pairs.append((key, value))
    return pairs


def tagging_document(tags: dict[str, str]) -> bytes:
    # S3 answers tags sorted by key (code point order, which is UTF-8 byte order).
    items = [E("Tag", None, E("Key", k), E("Value", v)) for k, v in sorted(tags.items())]
    return document("Tagging", E("TagSet", None, *items) if items else "<TagSet></TagSet>")
