"""Bucket lifecycle rules as data, and their evaluation: pure functions, no I/O.

A ``LifecycleConfig`` is what PutBucketLifecycleConfiguration stored (api/_lifecycle.py parses
and validates the XML, with S3's errors, into it; ``to_props`` / ``from_props`` keep it in the
bucket's properties as normalised JSON). This module answers, for one version (or one multipart
upload), which enabled rules apply and what the next action is and when it falls due:

- expiration of the current version: ``Days`` after creation or on a ``Date``;
- expiration of a noncurrent version: ``NoncurrentDays`` after it became noncurrent, once
  ``NewerNoncurrentVersions`` newer noncurrent versions exist;
- transitions (current: ``Days`` / ``Date``; noncurrent: ``NoncurrentDays``, ``NewerNoncurrentVersions``);
- removal of an expired delete marker (a delete marker that is the only version of its key);
- abort of an incomplete multipart upload ``DaysAfterInitiation`` after it started.

Days are counted as AWS counts them: the start time plus N days, rounded up to the next midnight
UTC (an object created 2014-01-15 10:30 with ``Days`` 3 is due 2014-01-19 00:00). ``day_s`` shortens
the day for tests (``tierstore serve --lifecycle-day-seconds N``); with a day shorter than 86,400 s
nothing is rounded (a midnight would swallow every short day). ``Date`` actions are due at that
midnight whatever the day length. When several actions are due at the same time, deletion wins
over transition (AWS: "permanent deletion takes precedence over transition").

Object lock and legal holds are not looked at here: the worker that acts re-checks the version
(docs/tiers.md), and never overrides them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ABORT_UPLOAD",
    "DAY_S",
    "EXPIRE_CURRENT",
    "EXPIRE_NONCURRENT",
    "MIN_SIZE_ALL_128K",
    "MIN_SIZE_BY_CLASS",
    "REMOVE_DELETE_MARKER",
    "SMALL_OBJECT_BYTES",
    "TRANSITION_CURRENT",
    "TRANSITION_NONCURRENT",
    "DueAction",
    "LifecycleConfig",
    "LifecycleExpiration",
    "LifecycleFilter",
    "LifecycleRule",
    "LifecycleTransition",
    "NoncurrentExpiration",
    "NoncurrentTransition",
    "VersionState",
    "current_expiration",
    "due_after",
    "matching_rules",
    "next_action",
    "upload_abort",
]

DAY_S = 86_400
_NS = 1_000_000_000
_DAY_NS = DAY_S * _NS

# x-amz-transition-default-minimum-object-size: AWS's default keeps objects under 128 KB from
# transitioning unless a rule's filter names a size; "varies_by_storage_class" exempts AWS's
# archive classes. Tiers have no per-class minimum, so with it every size transitions.
MIN_SIZE_ALL_128K = "all_storage_classes_128K"
MIN_SIZE_BY_CLASS = "varies_by_storage_class"
SMALL_OBJECT_BYTES = 128 * 1024

# Actions, in the order that breaks ties between actions due at the same time.
EXPIRE_NONCURRENT = "expire-noncurrent"
REMOVE_DELETE_MARKER = "remove-delete-marker"
EXPIRE_CURRENT = "expire"
ABORT_UPLOAD = "abort-upload"
TRANSITION_NONCURRENT = "transition-noncurrent"
TRANSITION_CURRENT = "transition"
_ORDER = (
    EXPIRE_NONCURRENT, REMOVE_DELETE_MARKER, EXPIRE_CURRENT, ABORT_UPLOAD, TRANSITION_NONCURRENT, TRANSITION_CURRENT
)
_PRECEDENCE = {a: i for i, a in enumerate(_ORDER)}


@dataclass(frozen=True, slots=True)
class LifecycleFilter:
    """Which objects a rule applies to: every predicate must hold. ``shape`` is how the rule
    said it, so GetBucketLifecycleConfiguration answers the form that was put: ``legacy`` (the
    rule's own ``Prefix``), ``all`` (an empty ``Filter``), ``prefix``, ``tag``, ``gt``, ``lt``
    or ``and``."""

    shape: str = "all"
    prefix: str | None = None  # None: the filter names no prefix
    tags: tuple[tuple[str, str], ...] = ()
    size_gt: int | None = None  # ObjectSizeGreaterThan: sizes strictly above
    size_lt: int | None = None  # ObjectSizeLessThan: sizes strictly below

    def matches(self, key: str, tags: Mapping[str, str], size_bytes: int) -> bool:
        if self.prefix and not key.startswith(self.prefix):
            return False
        if self.size_gt is not None and not size_bytes > self.size_gt:
            return False
        if self.size_lt is not None and not size_bytes < self.size_lt:
            return False
        return all(tags.get(k) == v for k, v in self.tags)

    @property
    def names_size(self) -> bool:
        return self.size_gt is not None or self.size_lt is not None


@dataclass(frozen=True, slots=True)
class LifecycleTransition:
    """``Transition``: to ``storage_class`` ``days`` after creation, or on ``date_s`` (a midnight UTC)."""

    storage_class: str
    days: int | None = None
    date_s: int | None = None


@dataclass(frozen=True, slots=True)
class NoncurrentTransition:
    storage_class: str
    days: int  # NoncurrentDays
    newer: int | None = None  # NewerNoncurrentVersions


@dataclass(frozen=True, slots=True)
class LifecycleExpiration:
    """Exactly one of ``days``, ``date_s`` and ``delete_marker`` (ExpiredObjectDeleteMarker) is set."""

    days: int | None = None
    date_s: int | None = None
    delete_marker: bool | None = None


@dataclass(frozen=True, slots=True)
class NoncurrentExpiration:
    days: int  # NoncurrentDays
    newer: int | None = None  # NewerNoncurrentVersions


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    id: str
    enabled: bool
    filter: LifecycleFilter = field(default_factory=LifecycleFilter)
    expiration: LifecycleExpiration | None = None
    transitions: tuple[LifecycleTransition, ...] = ()
    noncurrent_transitions: tuple[NoncurrentTransition, ...] = ()
    noncurrent_expiration: NoncurrentExpiration | None = None
    abort_days: int | None = None  # AbortIncompleteMultipartUpload's DaysAfterInitiation


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    rules: tuple[LifecycleRule, ...]
    min_size: str = MIN_SIZE_ALL_128K  # x-amz-transition-default-minimum-object-size

    # --- the bucket property (JSON) ----------------------------------------------------------
    def to_props(self) -> dict[str, Any]:
        return {"rules": [_rule_doc(r) for r in self.rules], "min_size": self.min_size}

    @classmethod
    def from_props(cls, doc: Mapping[str, Any] | None) -> LifecycleConfig | None:
        if not doc:
            return None
        return cls(tuple(_rule_of(r) for r in doc["rules"]), doc.get("min_size", MIN_SIZE_ALL_128K))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _rule_doc(r: LifecycleRule) -> dict[str, Any]:
    f = r.filter
    doc: dict[str, Any] = {
        "id": r.id,
        "enabled": r.enabled,
        "filter": _drop_none(
            {"shape": f.shape, "prefix": f.prefix, "tags": [list(t) for t in f.tags], "gt": f.size_gt, "lt": f.size_lt}
        ),
    }
    if r.expiration is not None:
        e = r.expiration
        doc["expiration"] = _drop_none({"days": e.days, "date_s": e.date_s, "delete_marker": e.delete_marker})
    if r.transitions:
        doc["transitions"] = [
            _drop_none({"class": t.storage_class, "days": t.days, "date_s": t.date_s}) for t in r.transitions
        ]
    if r.noncurrent_transitions:
        doc["noncurrent_transitions"] = [
            _drop_none({"class": t.storage_class, "days": t.days, "newer": t.newer}) for t in r.noncurrent_transitions
        ]
    if r.noncurrent_expiration is not None:
        n = r.noncurrent_expiration
        doc["noncurrent_expiration"] = _drop_none({"days": n.days, "newer": n.newer})
    if r.abort_days is not None:
        doc["abort_days"] = r.abort_days
    return doc


def _rule_of(doc: Mapping[str, Any]) -> LifecycleRule:
    f = doc["filter"]
    e = doc.get("expiration")
    n = doc.get("noncurrent_expiration")
    return LifecycleRule(
        id=doc["id"],
        enabled=doc["enabled"],
        filter=LifecycleFilter(
            f["shape"], f.get("prefix"), tuple((k, v) for k, v in f.get("tags", ())), f.get("gt"), f.get("lt")
        ),
        expiration=(
            LifecycleExpiration(e.get("days"), e.get("date_s"), e.get("delete_marker")) if e is not None else None
        ),
        transitions=tuple(
            LifecycleTransition(t["class"], t.get("days"), t.get("date_s")) for t in doc.get("transitions", ())
        ),
        noncurrent_transitions=tuple(
            NoncurrentTransition(t["class"], t["days"], t.get("newer")) for t in doc.get("noncurrent_transitions", ())
        ),
        noncurrent_expiration=NoncurrentExpiration(n["days"], n.get("newer")) if n is not None else None,
        abort_days=doc.get("abort_days"),
    )


# --- evaluation ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VersionState:
    """What the rules look at in one version. ``noncurrent_since_ns`` is None for the current
    version (else when its successor was written); ``newer_noncurrent`` counts the noncurrent
    versions newer than it; ``only_version``: nothing else of its key is left (what makes a
    current delete marker an expired one)."""

    key: str
    created_ns: int
    size_bytes: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)
    storage_class: str = "STANDARD"
    is_delete_marker: bool = False
    noncurrent_since_ns: int | None = None
    newer_noncurrent: int = 0
    only_version: bool = False


@dataclass(frozen=True, slots=True)
class DueAction:
    due_ns: int
    action: str  # EXPIRE_CURRENT, EXPIRE_NONCURRENT, TRANSITION_*, REMOVE_DELETE_MARKER, ABORT_UPLOAD
    rule_id: str
    storage_class: str | None = None  # the target of a transition

    def sort_key(self) -> tuple[int, int]:
        return self.due_ns, _PRECEDENCE[self.action]


def due_after(start_ns: int, days: int, day_s: int = DAY_S) -> int:
    """``start_ns`` plus ``days`` days, rounded up to the next midnight UTC when a day is a real
    day (AWS); a shortened day (``day_s`` < 86,400) is not rounded."""
    t = start_ns + days * day_s * _NS
    if day_s < DAY_S:
        return t
    return -(-t // _DAY_NS) * _DAY_NS


def matching_rules(config: LifecycleConfig, key: str, tags: Mapping[str, str], size_bytes: int) -> list[LifecycleRule]:
    """The enabled rules whose filter holds for an object, in configuration order."""
    return [r for r in config.rules if r.enabled and r.filter.matches(key, tags, size_bytes)]


def current_expiration(
    config: LifecycleConfig, key: str, tags: Mapping[str, str], size_bytes: int, created_ns: int, day_s: int = DAY_S
) -> DueAction | None:
    """The expiration of a current version (``x-amz-expiration``): the earliest of the
    ``Expiration`` ``Days`` / ``Date`` of the rules that apply; None when none does."""
    best: DueAction | None = None
    for rule in matching_rules(config, key, tags, size_bytes):
        e = rule.expiration
        if e is None:
            continue
        if e.days is not None:
            due = due_after(created_ns, e.days, day_s)
        elif e.date_s is not None:
            due = e.date_s * _NS
        else:
            continue
        if best is None or due < best.due_ns:
            best = DueAction(due, EXPIRE_CURRENT, rule.id)
    return best


def next_action(config: LifecycleConfig, version: VersionState, day_s: int = DAY_S) -> DueAction | None:
    """The next lifecycle action of one version and when it falls due (possibly in the past:
    due now); None when no enabled rule will ever act on it as it stands."""
    v = version
    rules = matching_rules(config, v.key, v.tags, 0 if v.is_delete_marker else v.size_bytes)
    found: list[DueAction] = []
    if v.noncurrent_since_ns is not None:
        found += _noncurrent(rules, v, v.noncurrent_since_ns, day_s)
    elif v.is_delete_marker:
        if v.only_version:
            found += _expired_marker(rules, v, day_s)
    else:
        found += _current(rules, v, day_s, config.min_size)
    return min(found, key=DueAction.sort_key, default=None)


def _noncurrent(rules: Sequence[LifecycleRule], v: VersionState, since_ns: int, day_s: int) -> list[DueAction]:
    out = []
    for rule in rules:
        n = rule.noncurrent_expiration
        if n is not None and v.newer_noncurrent >= (n.newer or 0):
            out.append(DueAction(due_after(since_ns, n.days, day_s), EXPIRE_NONCURRENT, rule.id))
    if v.is_delete_marker:
        return out
    steps = [
        (DueAction(due_after(since_ns, t.days, day_s), TRANSITION_NONCURRENT, rule.id, t.storage_class), i)
        for rule in rules
        for i, t in enumerate(rule.noncurrent_transitions)
        if v.newer_noncurrent >= (t.newer or 0)
    ]
    return out + _pending_transitions(steps, v.storage_class)


def _expired_marker(rules: Sequence[LifecycleRule], v: VersionState, day_s: int) -> list[DueAction]:
    """A delete marker with no versions left: removed by ExpiredObjectDeleteMarker at once, or
    by an ``Expiration`` ``Days`` once it is that old (AWS does both)."""
    out = []
    for rule in rules:
        e = rule.expiration
        if e is None:
            continue
        if e.delete_marker:
            out.append(DueAction(v.created_ns, REMOVE_DELETE_MARKER, rule.id))
        elif e.days is not None:
            out.append(DueAction(due_after(v.created_ns, e.days, day_s), REMOVE_DELETE_MARKER, rule.id))
    return out


def _current(rules: Sequence[LifecycleRule], v: VersionState, day_s: int, min_size: str) -> list[DueAction]:
    out = []
    expiry = current_expiration(LifecycleConfig(tuple(rules)), v.key, v.tags, v.size_bytes, v.created_ns, day_s)
    if expiry is not None:
        out.append(expiry)
    small = v.size_bytes < SMALL_OBJECT_BYTES and min_size == MIN_SIZE_ALL_128K
    steps = []
    for rule in rules:
        if small and not rule.filter.names_size:
            continue  # AWS's default minimum; a rule that names a size decides for itself
        for i, t in enumerate(rule.transitions):
            due = due_after(v.created_ns, t.days, day_s) if t.days is not None else (t.date_s or 0) * _NS
            steps.append((DueAction(due, TRANSITION_CURRENT, rule.id, t.storage_class), i))
    return out + _pending_transitions(steps, v.storage_class)


def _pending_transitions(steps: list[tuple[DueAction, int]], storage_class: str) -> list[DueAction]:
    """The transitions still to come for a version now in ``storage_class``: those after the
    last one that would have put it there (in due order); none to the class it is in."""
    steps.sort(key=lambda s: (s[0].due_ns, s[1]))
    done = max((i for i, (a, _) in enumerate(steps) if a.storage_class == storage_class), default=-1)
    return [a for a, _ in steps[done + 1 :] if a.storage_class != storage_class]


def upload_abort(config: LifecycleConfig, key: str, initiated_ns: int, day_s: int = DAY_S) -> DueAction | None:
    """When an incomplete multipart upload of ``key`` is aborted (earliest rule), or None.
    Abort rules filter by prefix only (S3 refuses one with tags or sizes)."""
    best: DueAction | None = None
    for rule in config.rules:
        if rule.enabled and rule.abort_days is not None and key.startswith(rule.filter.prefix or ""):
            due = due_after(initiated_ns, rule.abort_days, day_s)
            if best is None or due < best.due_ns:
                best = DueAction(due, ABORT_UPLOAD, rule.id)
    return best
