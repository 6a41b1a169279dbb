"""Object and bucket tags: the S3 limits, checked once here (STYLE.md #4).

An object version carries at most 10 tags, a bucket at most 50. A key is 1..128 characters, a
value 0..256, keys are unique, both use only letters, digits, whitespace and ``+ - = . _ : / @``,
and the ``aws:`` key prefix is reserved. Every violation is ``InvalidTag`` (400), as in S3.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlencode

from tierstore.errors import InvalidTag

__all__ = [
    "MAX_BUCKET_TAGS",
    "MAX_OBJECT_TAGS",
    "MAX_TAG_KEY_CHARS",
    "MAX_TAG_VALUE_CHARS",
    "encode_tagging_header",
    "parse_tagging_header",
    "validate_tags",
]

MAX_OBJECT_TAGS = 10
MAX_BUCKET_TAGS = 50
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256
# \w is Unicode letters, digits and "_"; \s is whitespace. S3 allows letters of any script.
_ALLOWED = re.compile(r"[\w\s+\-=.:/@]*")
_RESERVED_PREFIX = "aws:"


def validate_tags(pairs: Iterable[tuple[str, str]], *, max_tags: int = MAX_OBJECT_TAGS) -> dict[str, str]:
    """The tag set ``pairs`` as a dict, or ``InvalidTag`` naming the first rule it breaks."""
    tags: dict[str, str] = {}
    for key, value in pairs:
        if key in tags:
            raise InvalidTag("Cannot provide multiple Tags with the same key", resource=key[:MAX_TAG_KEY_CHARS])
        if not 1 <= len(key) <= MAX_TAG_KEY_CHARS:
            raise InvalidTag(
                f"The TagKey you have provided is invalid: it must be 1 to {MAX_TAG_KEY_CHARS} characters long",
                resource=key[:MAX_TAG_KEY_CHARS],
            )
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise InvalidTag(f"The TagValue you have provided is too long, max {MAX_TAG_VALUE_CHARS}", resource=key)
        if not _ALLOWED.fullmatch(key):
            raise InvalidTag("The TagKey you have provided is invalid", resource=key)
        if not _ALLOWED.fullmatch(value):
            raise InvalidTag("The TagValue you have provided is invalid", resource=key)
        if key.lower().startswith(_RESERVED_PREFIX):
            raise InvalidTag("Your TagKey cannot be prefixed with aws:", resource=key)
        tags[key] = value
    if len(tags) > max_tags:
        kind = "Object" if max_tags == MAX_OBJECT_TAGS else "Bucket"
        raise InvalidTag(f"{kind} tags cannot be greater than {max_tags}")
    return tags


def parse_tagging_header(value: str) -> list[tuple[str, str]]:
    """``x-amz-tagging: k1=v1&k2=v2`` (URL query encoding) as (key, value) pairs, in order.

    A pair without ``=`` is a key with an empty value; duplicates are kept so that
    ``validate_tags`` reports them."""
    try:
        return parse_qsl(value, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidTag("The x-amz-tagging header is not valid URL-encoded UTF-8") from exc


def encode_tagging_header(tags: Mapping[str, str]) -> str:
    """The inverse of ``parse_tagging_header``."""
    return urlencode(list(tags.items()), quote_via=quote)
