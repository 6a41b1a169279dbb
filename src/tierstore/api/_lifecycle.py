"""Bucket lifecycle configuration: Put/Get/DeleteBucketLifecycleConfiguration, and the
``x-amz-expiration`` header of object writes and reads.

The ``LifecycleConfiguration`` document is validated here with S3's answers (code, status and,
where S3's wording is known, its message; docs/s3-compatibility.md "Lifecycle") into an
``engine.LifecycleConfig``, kept normalised in the bucket's properties (``props["lifecycle"]``)
and given back in the form it was put (the rule's own ``Prefix`` or a ``Filter`` of the same
shape, tags in their order). The rules themselves are evaluated by engine/_lifecycle.py.

Two rules of S3 are deliberately not S3's:

- A transition's ``StorageClass`` must name a tier of this store (``_tier_classes``), whatever
  AWS's classes are; a name shaped like a tier that is none is ``InvalidStorageClass``. AWS's
  per-class minimums (``'Days' in Transition action must be greater than or equal to 30 for
  storageClass 'STANDARD_IA'``, the waterfall order of its classes) are about AWS's billing of
  its own classes and do not apply to tiers, even a tier named ``STANDARD_IA``; transitions of
  one rule must only differ in class and in when they fall due.
- ``x-amz-expiration`` is sent for the current version a request addresses by key only (a read
  that names a ``versionId`` does not know cheaply whether that version is the current one).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote
from xml.etree.ElementTree import Element

from tierstore import errors as e
from tierstore.api._common import check_body_digest, xml_int
from tierstore.api._request import Context, Request, Response, http_date
from tierstore.api._xml import E, document, parse_xml
from tierstore.engine import (
    MIN_SIZE_ALL_128K,
    MIN_SIZE_BY_CLASS,
    NOT_CACHED,
    LifecycleConfig,
    LifecycleExpiration,
    LifecycleFilter,
    LifecycleRule,
    LifecycleTransition,
    NoncurrentExpiration,
    NoncurrentTransition,
    current_expiration,
    decode_checksum,
    new_hasher,
)
from tierstore.types import CHECKSUM_ALGORITHMS, ObjectMeta

__all__ = [
    "MAX_RULES",
    "delete_bucket_lifecycle",
    "expiration_headers",
    "get_bucket_lifecycle_configuration",
    "parse_lifecycle",
    "put_bucket_lifecycle_configuration",
]

MAX_RULES = 1000
MAX_ID = 255
MAX_NEWER_VERSIONS = 100
MAX_FILTER_SIZE = 1_099_511_627_776_000  # S3: an object size filter is at most 1000 TiB
_MAX_INT = 2**31 - 1  # Days and counts are 32-bit integers in S3's schema
_ROOT = "LifecycleConfiguration"
_MIN_SIZE_HEADER = "x-amz-transition-default-minimum-object-size"
_PROP = "lifecycle"
_TIER_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")  # what a tier's name looks like (docs/tiers.md)
_NOT_TIERS = frozenset({"STANDARD", "REDUCED_REDUNDANCY"})  # S3: not a transition's target
_RULE_FIELDS = frozenset(
    {"ID", "Prefix", "Filter", "Status", "Transition", "NoncurrentVersionTransition", "Expiration",
     "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"}
)  # fmt: skip
_REPEATED = frozenset({"Rule", "Transition", "NoncurrentVersionTransition", "Tag"})


async def _tier_classes(ctx: Context) -> frozenset[str]:
    """The storage classes a transition may name: the tiers of this store."""
    return await ctx.service.tiers.class_names()


# --- reading the document ----------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _fields(el: Element, allowed: Iterable[str]) -> dict[str, list[Element]]:
    """``el``'s children by name; an unknown one, or a repeated one S3's schema has once, is
    MalformedXML (the schema S3 validates against)."""
    names = frozenset(allowed)
    out: dict[str, list[Element]] = {}
    for child in el:
        name = _local(child.tag)
        if name not in names:
            raise e.MalformedXML()
        out.setdefault(name, []).append(child)
        if len(out[name]) > 1 and name not in _REPEATED:
            raise e.MalformedXML()
    return out


def _text(found: Mapping[str, list[Element]], name: str) -> str | None:
    els = found.get(name)
    return None if not els else (els[0].text or "").strip()


def _int(found: Mapping[str, list[Element]], name: str) -> int | None:
    value = xml_int(_text(found, name))
    if value is not None and not -_MAX_INT - 1 <= value <= _MAX_INT:
        raise e.MalformedXML()
    return value


def _size(found: Mapping[str, list[Element]], name: str) -> int | None:
    return xml_int(_text(found, name))


def _invalid(message: str, name: str, value: object) -> e.InvalidArgument:
    return e.InvalidArgument(message, fields={"ArgumentName": name, "ArgumentValue": str(value)[:256]})


def _date_s(found: Mapping[str, list[Element]]) -> int | None:
    """A ``Date``: ISO 8601, which S3 requires to be a midnight UTC."""
    text = _text(found, "Date")
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise e.MalformedXML() from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = when.timestamp()
    if seconds % 86_400:
        raise _invalid("'Date' must be at midnight GMT", "Date", text)
    return int(seconds)


def _describe(f: LifecycleFilter, given_prefix: bool) -> str:
    """How S3 names a rule's filter in its messages: ``(prefix=logs/)``; the other predicates
    in the same style (S3's wording for them is not known to us)."""
    parts = [f"prefix={f.prefix}"] if given_prefix else []
    parts += [f"tag={k}:{v}" for k, v in f.tags]
    if f.size_gt is not None:
        parts.append(f"ObjectSizeGreaterThan={f.size_gt}")
    if f.size_lt is not None:
        parts.append(f"ObjectSizeLessThan={f.size_lt}")
    return "(" + ", ".join(parts) + ")"


def _tags(els: Iterable[Element]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for el in els:
        found = _fields(el, ("Key", "Value"))
        if "Key" not in found or "Value" not in found:
            raise e.MalformedXML()
        key, value = found["Key"][0].text or "", found["Value"][0].text or ""
        if not 1 <= len(key) <= 128:
            raise e.InvalidRequest("A Tag's Key must be a length between 1 and 128.")
        if len(value) > 256:
            raise e.InvalidRequest("A Tag's Value must be a length between 0 and 256.")
        if any(k == key for k, _ in out):
            raise e.InvalidRequest("Duplicate Tag Keys are not allowed.")
        out.append((key, value))
    return tuple(out)


def _filter(el: Element) -> tuple[LifecycleFilter, bool]:
    """A ``Filter``: empty, or exactly one of Prefix, Tag, the two sizes, And (of at least two
    predicates). Returns the filter and whether it named a prefix."""
    found = _fields(el, ("Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan", "And"))
    if len(found) > 1 or len(found.get("Tag", ())) > 1:
        raise e.MalformedXML()
    if not found:
        return LifecycleFilter("all"), False
    if "And" in found:
        inner = _fields(found["And"][0], ("Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan"))
        if sum(len(v) for v in inner.values()) < 2:
            raise e.MalformedXML()
        f = LifecycleFilter(
            "and", _text(inner, "Prefix"), _tags(inner.get("Tag", ())),
            _size(inner, "ObjectSizeGreaterThan"), _size(inner, "ObjectSizeLessThan"),
        )  # fmt: skip
        given = "Prefix" in inner
    else:
        shape = {"Prefix": "prefix", "Tag": "tag", "ObjectSizeGreaterThan": "gt", "ObjectSizeLessThan": "lt"}
        (name,) = found
        f = LifecycleFilter(
            shape[name], _text(found, "Prefix"), _tags(found.get("Tag", ())),
            _size(found, "ObjectSizeGreaterThan"), _size(found, "ObjectSizeLessThan"),
        )  # fmt: skip
        given = name == "Prefix"
    if f.size_gt is not None and not 0 <= f.size_gt <= MAX_FILTER_SIZE:
        raise e.InvalidRequest(f"'ObjectSizeGreaterThan' should be between 0 and {MAX_FILTER_SIZE}.")
    if f.size_lt is not None and not 1 <= f.size_lt <= MAX_FILTER_SIZE:
        raise e.InvalidRequest(f"'ObjectSizeLessThan' should be between 1 and {MAX_FILTER_SIZE}.")
    if f.size_gt is not None and f.size_lt is not None and f.size_gt >= f.size_lt:
        raise e.InvalidRequest("'ObjectSizeLessThan' has to be a value greater than 'ObjectSizeGreaterThan'.")
    return f, given


def _storage_class(found: Mapping[str, list[Element]], tiers: frozenset[str]) -> str:
    """A transition's target: a tier. S3's answers for the rest: a class that is never a
    target (STANDARD) is InvalidArgument; a name no class can have is MalformedXML (S3's schema
    lists its classes); a tier's name that is no tier here is InvalidStorageClass."""
    name = _text(found, "StorageClass")
    if name is None:
        raise e.MalformedXML()
    if name in tiers:
        return name
    if name in _NOT_TIERS:
        raise _invalid("Invalid target Storage class for Transition action", "StorageClass", name)
    if _TIER_NAME.fullmatch(name) is None:
        raise e.MalformedXML()
    raise e.InvalidStorageClass(f"The storage class you specified is not valid: {name} is not a tier of this store.")


def _newer(found: Mapping[str, list[Element]], v2: bool) -> int | None:
    newer = _int(found, "NewerNoncurrentVersions")
    if newer is None:
        return None
    if not v2:
        raise e.InvalidRequest("NewerNoncurrentVersions element can only be used in Lifecycle V2.")
    if newer <= 0:
        raise _invalid("'NewerNoncurrentVersions' must be a positive integer", "NewerNoncurrentVersions", newer)
    if newer > MAX_NEWER_VERSIONS:
        raise _invalid(
            f"'NewerNoncurrentVersions' must be less than or equal to {MAX_NEWER_VERSIONS}",
            "NewerNoncurrentVersions", newer,
        )  # fmt: skip
    return newer


def _expiration(el: Element) -> LifecycleExpiration:
    found = _fields(el, ("Days", "Date", "ExpiredObjectDeleteMarker"))
    if len(found) != 1:
        raise e.MalformedXML()
    days = _int(found, "Days")
    if days is not None and days <= 0:
        raise _invalid("'Days' for Expiration action must be a positive integer", "Days", days)
    marker = _text(found, "ExpiredObjectDeleteMarker")
    if marker is not None and marker not in ("true", "false"):
        raise e.MalformedXML()
    return LifecycleExpiration(days, _date_s(found), None if marker is None else marker == "true")


def _transition(el: Element, tiers: frozenset[str]) -> LifecycleTransition:
    found = _fields(el, ("Days", "Date", "StorageClass"))
    if ("Days" in found) == ("Date" in found):
        raise e.MalformedXML()
    days = _int(found, "Days")
    if days is not None and days < 0:
        raise _invalid("'Days' in Transition action must be nonnegative", "Days", days)
    date_s = _date_s(found)
    return LifecycleTransition(_storage_class(found, tiers), days, date_s)


def _noncurrent_transition(el: Element, tiers: frozenset[str], v2: bool) -> NoncurrentTransition:
    found = _fields(el, ("NoncurrentDays", "StorageClass", "NewerNoncurrentVersions"))
    days = _int(found, "NoncurrentDays")
    if days is None:
        raise e.MalformedXML()
    if days < 0:
        message = "'NoncurrentDays' in NoncurrentVersionTransition action must be nonnegative"
        raise _invalid(message, "NoncurrentDays", days)
    return NoncurrentTransition(_storage_class(found, tiers), days, _newer(found, v2))


def _noncurrent_expiration(el: Element, v2: bool) -> NoncurrentExpiration:
    found = _fields(el, ("NoncurrentDays", "NewerNoncurrentVersions"))
    days = _int(found, "NoncurrentDays")
    if days is None:
        raise e.MalformedXML()
    if days <= 0:
        raise _invalid(
            "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer", "NoncurrentDays", days
        )
    return NoncurrentExpiration(days, _newer(found, v2))


def _abort_days(el: Element) -> int:
    days = _int(_fields(el, ("DaysAfterInitiation",)), "DaysAfterInitiation")
    if days is None:
        raise e.MalformedXML()
    if days <= 0:
        raise _invalid(
            "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer",
            "DaysAfterInitiation", days,
        )  # fmt: skip
    return days


def _check_order(rule: LifecycleRule, desc: str) -> None:
    """Within one rule: transitions go to different classes at different times, all by Days or
    all by Date, and an expiration comes after every transition (S3's InvalidRequest and
    InvalidArgument answers)."""
    ts, of = rule.transitions, f"for filter '{desc}'"
    if len({t.storage_class for t in ts}) < len(ts):
        message = f"'StorageClass' must be different for 'Transition' actions in same 'Rule' with filter '{desc}'"
        raise e.InvalidRequest(message)
    if len({t.days is None for t in ts}) > 1:
        raise e.InvalidRequest(f"Found mixed 'Date' and 'Days' based Transition actions in lifecycle rule {of}")
    seen: dict[int | None, str] = {}
    for t in ts:
        when = t.days if t.days is not None else t.date_s
        field = "Days" if t.days is not None else "Date"
        if when in seen:
            raise _invalid(
                f"'{field}' in the 'Transition' action for StorageClass '{t.storage_class}' {of} must be "
                f"greater than '{field}' in the 'Transition' action for StorageClass '{seen[when]}' {of}",
                field, when,
            )  # fmt: skip
        seen[when] = t.storage_class
    x = rule.expiration
    if x is not None and x.delete_marker is None and ts:
        if (x.days is None) != (ts[0].days is None):
            raise e.InvalidRequest(
                f"Found mixed 'Date' and 'Days' based Expiration and Transition actions in lifecycle rule {of}"
            )
        field = "Days" if x.days is not None else "Date"
        expires = x.days if x.days is not None else x.date_s
        if any(expires is not None and when is not None and expires <= when for when in seen):
            raise _invalid(
                f"'{field}' in the Expiration action {of} must be greater than '{field}' in the Transition action",
                field, expires,
            )  # fmt: skip
    nts = rule.noncurrent_transitions
    if len({t.storage_class for t in nts}) < len(nts):
        raise e.InvalidRequest(
            "'StorageClass' must be different for 'NoncurrentVersionTransition' actions in same 'Rule' with "
            f"filter '{desc}'"
        )
    n = rule.noncurrent_expiration
    if n is not None and any(n.days <= t.days for t in nts):
        raise _invalid(
            f"'NoncurrentDays' in the NoncurrentVersionExpiration action {of} must be greater than "
            "'NoncurrentDays' in the NoncurrentVersionTransition action",
            "NoncurrentDays", n.days,
        )  # fmt: skip


def _rule(el: Element, tiers: frozenset[str], v2: bool, rule_id: str) -> LifecycleRule:
    found = _fields(el, _RULE_FIELDS)
    status = _text(found, "Status")
    if status not in ("Enabled", "Disabled"):
        raise e.MalformedXML()
    if ("Filter" in found) == ("Prefix" in found):
        raise e.MalformedXML()
    if "Filter" in found and not v2:
        raise e.InvalidRequest("Filter element can only be used in Lifecycle V2.")
    if "Prefix" in found and v2:
        raise e.InvalidRequest(
            "Base level prefix cannot be used in Lifecycle V2, prefixes are only supported in the Filter."
        )
    if "Filter" in found:
        f, given_prefix = _filter(found["Filter"][0])
    else:
        f, given_prefix = LifecycleFilter("legacy", (found["Prefix"][0].text or "")), True
    actions = ("Expiration", "Transition", "NoncurrentVersionTransition", "NoncurrentVersionExpiration",
               "AbortIncompleteMultipartUpload")  # fmt: skip
    if not any(a in found for a in actions):
        raise e.InvalidRequest("At least one action needs to be specified in a rule")
    expiration = _expiration(found["Expiration"][0]) if "Expiration" in found else None
    rule = LifecycleRule(
        id=rule_id,
        enabled=status == "Enabled",
        filter=f,
        expiration=expiration,
        transitions=tuple(_transition(t, tiers) for t in found.get("Transition", ())),
        noncurrent_transitions=tuple(
            _noncurrent_transition(t, tiers, v2) for t in found.get("NoncurrentVersionTransition", ())
        ),
        noncurrent_expiration=(
            _noncurrent_expiration(found["NoncurrentVersionExpiration"][0], v2)
            if "NoncurrentVersionExpiration" in found
            else None
        ),
        abort_days=_abort_days(found["AbortIncompleteMultipartUpload"][0])
        if "AbortIncompleteMultipartUpload" in found
        else None,
    )
    # Actions on delete markers and uploads, which have neither tags nor a size.
    unfiltered = [("ExpiredObjectDeleteMarker", expiration is not None and expiration.delete_marker is not None),
                  ("AbortIncompleteMultipartUpload", rule.abort_days is not None)]  # fmt: skip
    for action in (name for name, present in unfiltered if present):
        if f.tags:
            raise e.InvalidRequest(f"{action} cannot be specified with Tags.")
        if f.names_size:
            raise e.InvalidRequest(f"{action} cannot be specified with Object Size.")
    _check_order(rule, _describe(f, given_prefix))
    return rule


def _action_types(rule: LifecycleRule) -> list[str]:
    kinds = [("Expiration", rule.expiration is not None), ("Transition", bool(rule.transitions)),
             ("NoncurrentVersionTransition", bool(rule.noncurrent_transitions)),
             ("NoncurrentVersionExpiration", rule.noncurrent_expiration is not None),
             ("AbortIncompleteMultipartUpload", rule.abort_days is not None)]  # fmt: skip
    return [name for name, present in kinds if present]


def _check_overlaps(rules: list[LifecycleRule]) -> None:
    """Lifecycle V1 (rules with their own Prefix): two rules whose prefixes overlap may not take
    the same kind of action (S3's InvalidRequest). V2 filters may overlap (S3 resolves them)."""
    kinds = [_action_types(r) for r in rules]
    for i, later in enumerate(rules):
        for j, earlier in enumerate(rules[:i]):
            a, b = later.filter.prefix or "", earlier.filter.prefix or ""
            if not (a.startswith(b) or b.startswith(a)):
                continue
            shared = [t for t in kinds[i] if t in kinds[j]]
            if shared:
                raise e.InvalidRequest(f"Found overlapping prefixes '{a}' and '{b}' for same action type '{shared[0]}'")


def parse_lifecycle(
    root: Element,
    tiers: frozenset[str],
    *,
    min_size: str | None = None,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> LifecycleConfig:
    """A ``LifecycleConfiguration`` element as a config; S3's errors for a bad one. ``tiers``:
    the storage classes a transition may name; ``min_size``: the request's
    ``x-amz-transition-default-minimum-object-size``; ``new_id`` names a rule given no ID."""
    if min_size is not None and min_size not in (MIN_SIZE_ALL_128K, MIN_SIZE_BY_CLASS):
        raise e.InvalidRequest("Invalid TransitionDefaultMinimumObjectSize found")
    els = list(_fields(root, ("Rule",)).get("Rule", ()))
    if not els:
        raise e.MalformedXML()
    if len(els) > MAX_RULES:
        raise e.InvalidRequest(f"The number of lifecycle rules must not exceed the allowed limit of {MAX_RULES} rules.")
    ids: list[str] = []
    for el in els:
        rule_id = (next((c.text or "" for c in el if _local(c.tag) == "ID"), "")).strip()
        if len(rule_id) > MAX_ID:
            raise _invalid(f"ID length should not exceed allowed limit of {MAX_ID}", "ID", rule_id)
        if rule_id and rule_id in ids:
            raise _invalid("Rule ID must be unique. Found same ID for more than one rule", "ID", rule_id)
        ids.append(rule_id)
    # The first rule decides the form: V1 (each rule its own Prefix) or V2 (Filter).
    v2 = any(_local(c.tag) == "Filter" for c in els[0])
    rules = [_rule(el, tiers, v2, rule_id or new_id()) for el, rule_id in zip(els, ids, strict=True)]
    if not v2:
        _check_overlaps(rules)
    return LifecycleConfig(tuple(rules), min_size or MIN_SIZE_ALL_128K)


# --- writing the document ----------------------------------------------------------------------
def _date_text(date_s: int) -> str:
    return dt.datetime.fromtimestamp(date_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _tag_xml(k: str, v: str) -> str:
    return E("Tag", None, E("Key", k), E("Value", v))


def _filter_xml(f: LifecycleFilter) -> str:
    if f.shape == "legacy":
        return E("Prefix", f.prefix)
    if f.shape == "all":
        return E("Filter")
    sizes = [E("ObjectSizeGreaterThan", f.size_gt)] if f.size_gt is not None else []
    sizes += [E("ObjectSizeLessThan", f.size_lt)] if f.size_lt is not None else []
    if f.shape == "and":
        prefix = [E("Prefix", f.prefix)] if f.prefix is not None else []
        return E("Filter", None, E("And", None, *prefix, *(_tag_xml(k, v) for k, v in f.tags), *sizes))
    if f.shape == "prefix":
        return E("Filter", None, E("Prefix", f.prefix))
    if f.shape == "tag":
        return E("Filter", None, _tag_xml(*f.tags[0]))
    return E("Filter", None, *sizes)


def _when(days: int | None, date_s: int | None) -> list[str]:
    return [E("Days", days)] if days is not None else [E("Date", _date_text(date_s or 0))]


def _rule_xml(r: LifecycleRule) -> str:
    parts = [E("ID", r.id), _filter_xml(r.filter), E("Status", "Enabled" if r.enabled else "Disabled")]
    for t in r.transitions:
        parts.append(E("Transition", None, *_when(t.days, t.date_s), E("StorageClass", t.storage_class)))
    for nt in r.noncurrent_transitions:
        newer = [E("NewerNoncurrentVersions", nt.newer)] if nt.newer is not None else []
        inner = [E("NoncurrentDays", nt.days), E("StorageClass", nt.storage_class), *newer]
        parts.append(E("NoncurrentVersionTransition", None, *inner))
    x = r.expiration
    if x is not None:
        if x.delete_marker is not None:
            when = [E("ExpiredObjectDeleteMarker", "true" if x.delete_marker else "false")]
        else:
            when = _when(x.days, x.date_s)
        parts.append(E("Expiration", None, *when))
    n = r.noncurrent_expiration
    if n is not None:
        newer = [E("NewerNoncurrentVersions", n.newer)] if n.newer is not None else []
        parts.append(E("NoncurrentVersionExpiration", None, E("NoncurrentDays", n.days), *newer))
    if r.abort_days is not None:
        parts.append(E("AbortIncompleteMultipartUpload", None, E("DaysAfterInitiation", r.abort_days)))
    return E("Rule", None, *parts)


def lifecycle_document(config: LifecycleConfig) -> bytes:
    return document(_ROOT, *(_rule_xml(r) for r in config.rules))


# --- handlers ----------------------------------------------------------------------------------
def _require_checksum(req: Request, body: bytes) -> None:
    """S3 requires Content-MD5 or an x-amz-checksum-* of this body (botocore sends one), and
    checks it."""
    h = req.headers
    found = [a for a in CHECKSUM_ALGORITHMS if f"x-amz-checksum-{a}" in h]
    if "content-md5" not in h and not found and "x-amz-trailer" not in h:
        raise e.InvalidRequest("Missing required header for this request: Content-MD5")
    check_body_digest(req, body)
    for alg in found:
        expected = decode_checksum(alg, h[f"x-amz-checksum-{alg}"])
        hasher = new_hasher(alg)
        hasher.update(body)
        if hasher.digest() != expected:
            raise e.BadDigest(f"The {alg.upper()} you specified did not match the calculated checksum.")


async def put_bucket_lifecycle_configuration(req: Request, ctx: Context) -> Response:
    bucket = req.bucket or ""
    await ctx.service.bucket_props(bucket)  # NoSuchBucket before the document is looked at
    body = await req.read_small()
    _require_checksum(req, body)
    classes = await _tier_classes(ctx)
    config = parse_lifecycle(parse_xml(body, _ROOT), classes, min_size=req.headers.get(_MIN_SIZE_HEADER))
    doc = config.to_props()

    def update(props: dict[str, Any]) -> dict[str, Any]:
        props[_PROP] = doc
        return props

    await ctx.service.update_bucket_props(bucket, update)
    return Response(200, [(_MIN_SIZE_HEADER, config.min_size)])


async def get_bucket_lifecycle_configuration(req: Request, ctx: Context) -> Response:
    """``NoSuchLifecycleConfiguration`` (404) when the bucket has none."""
    config = LifecycleConfig.from_props((await ctx.service.bucket_props(req.bucket or "")).get(_PROP))
    if config is None:
        raise e.NoSuchLifecycleConfiguration(resource=req.bucket or "")
    headers = [("content-type", "application/xml"), (_MIN_SIZE_HEADER, config.min_size)]
    return Response(200, headers, lifecycle_document(config))


async def delete_bucket_lifecycle(req: Request, ctx: Context) -> Response:
    """204, also when there was none (as S3)."""

    def update(props: dict[str, Any]) -> dict[str, Any]:
        props.pop(_PROP, None)
        return props

    await ctx.service.update_bucket_props(req.bucket or "", update)
    return Response(204)


# --- x-amz-expiration --------------------------------------------------------------------------
# The parsed configuration of each bucket, for as long as the per-worker cache of its properties
# hands out the same document (engine/_bucket_access.py): parsed once per change, not per read.
_PARSED: dict[str, tuple[Mapping[str, Any], LifecycleConfig]] = {}
_PARSED_MAX = 4096


def _config(bucket: str, props: Mapping[str, Any] | None) -> LifecycleConfig | None:
    """The lifecycle configuration in ``bucket``'s properties ``props`` (None: none)."""
    doc = props.get(_PROP) if props is not None else None
    if not doc:
        return None  # no lifecycle: what every read of such a bucket costs is this lookup
    hit = _PARSED.get(bucket)
    if hit is not None and hit[0] is doc:
        return hit[1]
    config = LifecycleConfig.from_props(doc)
    assert config is not None
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[bucket] = (doc, config)
    return config


async def expiration_headers(ctx: Context, bucket: str, meta: ObjectMeta) -> list[tuple[str, str]]:
    """``x-amz-expiration: expiry-date="...", rule-id="..."`` when an enabled rule expires this
    (current) version; the rule id URL-encoded, as S3."""
    access = ctx.service.bucket_access
    props = access.cached(bucket)  # a hit (most requests): no coroutine
    if props is NOT_CACHED:
        props = await access.props(bucket)
    config = _config(bucket, props)
    if config is None or meta.is_delete_marker:
        return []
    day_s = ctx.service.lifecycle_day_s
    due = current_expiration(config, meta.key, meta.tags, meta.size_bytes, meta.modified_ns, day_s)
    if due is None:
        return []
    expiry = http_date(due.due_ns + 999_999_999)  # whole seconds, never before the due time
    return [("x-amz-expiration", f'expiry-date="{expiry}", rule-id="{quote(due.rule_id, safe="")}"')]
