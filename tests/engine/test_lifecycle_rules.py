"""engine/_lifecycle.py: which rules apply to a version and its next action, as pure tables,
plus properties of the day arithmetic and of the stored form (Hypothesis)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierstore.engine import (
    MIN_SIZE_BY_CLASS,
    LifecycleConfig,
    LifecycleExpiration,
    LifecycleFilter,
    LifecycleRule,
    LifecycleTransition,
    NoncurrentExpiration,
    NoncurrentTransition,
    VersionState,
    current_expiration,
    next_action,
)
from tierstore.engine._lifecycle import (
    ABORT_UPLOAD,
    DAY_S,
    EXPIRE_CURRENT,
    EXPIRE_NONCURRENT,
    REMOVE_DELETE_MARKER,
    TRANSITION_CURRENT,
    TRANSITION_NONCURRENT,
    due_after,
    matching_rules,
    upload_abort,
)

NS = 1_000_000_000
BIG = 1 << 20  # above AWS's 128 KB default transition minimum


def at(text: str) -> int:
    """Nanoseconds of an ISO time in UTC."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()) * NS


def config(*rules: LifecycleRule, min_size: str | None = None) -> LifecycleConfig:
    return LifecycleConfig(rules) if min_size is None else LifecycleConfig(rules, min_size)


def rule(rule_id: str = "r", **kw: object) -> LifecycleRule:
    return LifecycleRule(rule_id, kw.pop("enabled", True), **kw)  # type: ignore[arg-type]


# --- days ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("start", "days", "day_s", "due"),
    [
        ("2014-01-15T10:30:00", 3, DAY_S, "2014-01-19T00:00:00"),  # AWS's own example
        ("2014-01-15T00:00:00", 3, DAY_S, "2014-01-18T00:00:00"),  # already midnight: stays
        ("2014-01-15T23:59:59", 1, DAY_S, "2014-01-17T00:00:00"),
        ("2014-01-15T10:30:00", 0, DAY_S, "2014-01-16T00:00:00"),  # a 0-day transition: next midnight
        ("2014-01-15T10:30:00", 3, 10, "2014-01-15T10:30:30"),  # a test's short day: no rounding
    ],
)
def test_due_after_rounds_to_the_next_midnight_utc(start: str, days: int, day_s: int, due: str) -> None:
    assert due_after(at(start), days, day_s) == at(due)


@given(st.integers(0, 4_000_000_000), st.integers(0, 10_000))
def test_due_after_is_the_first_midnight_not_before_the_age(start_s: int, days: int) -> None:
    start = start_s * NS + 123
    due = due_after(start, days)
    age = start + days * DAY_S * NS
    assert due % (DAY_S * NS) == 0
    assert age <= due < age + DAY_S * NS


# --- filters ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("f", "key", "tags", "size", "matches"),
    [
        (LifecycleFilter("all"), "any/key", {}, 0, True),
        (LifecycleFilter("prefix", "logs/"), "logs/a", {}, 5, True),
        (LifecycleFilter("prefix", "logs/"), "log/a", {}, 5, False),
        (LifecycleFilter("legacy", ""), "x", {}, 5, True),
        (LifecycleFilter("tag", tags=(("team", "ml"),)), "x", {"team": "ml", "o": "1"}, 5, True),
        (LifecycleFilter("tag", tags=(("team", "ml"),)), "x", {"team": "web"}, 5, False),
        (LifecycleFilter("gt", size_gt=100), "x", {}, 100, False),  # strictly greater
        (LifecycleFilter("gt", size_gt=100), "x", {}, 101, True),
        (LifecycleFilter("lt", size_lt=100), "x", {}, 100, False),  # strictly less
        (LifecycleFilter("lt", size_lt=100), "x", {}, 99, True),
        (LifecycleFilter("and", "a/", (("k", "v"), ("k2", "v2")), 10, 20), "a/b", {"k": "v", "k2": "v2"}, 15, True),
        (LifecycleFilter("and", "a/", (("k", "v"), ("k2", "v2")), 10, 20), "a/b", {"k": "v"}, 15, False),
        (LifecycleFilter("and", "a/", (("k", "v"),), 10, 20), "a/b", {"k": "v"}, 20, False),
        (LifecycleFilter("and", None, (("k", "v"),), None, 20), "zzz", {"k": "v"}, 0, True),
    ],
)
def test_filters(f: LifecycleFilter, key: str, tags: dict[str, str], size: int, matches: bool) -> None:
    assert f.matches(key, tags, size) is matches


def test_disabled_rules_never_match() -> None:
    cfg = config(rule("on", expiration=LifecycleExpiration(days=1)), rule("off", enabled=False))
    assert [r.id for r in matching_rules(cfg, "k", {}, 0)] == ["on"]


# --- the next action of a version -----------------------------------------------------------
T0 = at("2024-03-10T15:00:00")
DAY = DAY_S * NS
MIDNIGHT = at("2024-03-11T00:00:00")  # the first midnight after T0


def current(size: int = BIG, **kw: object) -> VersionState:
    return VersionState("data/a", T0, size, **kw)  # type: ignore[arg-type]


def noncurrent(since: int, newer: int = 0, **kw: object) -> VersionState:
    return VersionState("data/a", T0, BIG, noncurrent_since_ns=since, newer_noncurrent=newer, **kw)  # type: ignore[arg-type]


EXP3 = rule("exp3", expiration=LifecycleExpiration(days=3))
EXP_DATE = rule("date", expiration=LifecycleExpiration(date_s=at("2030-01-01T00:00:00") // NS))
TO_COLD = rule("cold", transitions=(LifecycleTransition("COLD", days=1), LifecycleTransition("ARCHIVE", days=5)))
NONCURRENT = rule(
    "nc",
    noncurrent_transitions=(NoncurrentTransition("COLD", 2, newer=1),),
    noncurrent_expiration=NoncurrentExpiration(7, newer=2),
)
MARKERS = rule("dm", expiration=LifecycleExpiration(delete_marker=True))
SMALL_TO_COLD = rule("s", filter=LifecycleFilter("lt", size_lt=2000), transitions=(LifecycleTransition("COLD", 0),))
TAGGED = rule("tag", filter=LifecycleFilter("tag", tags=(("t", "1"),)), expiration=LifecycleExpiration(days=1))


@pytest.mark.parametrize(
    ("cfg", "version", "expected"),
    [
        # current versions
        (config(EXP3), current(), (MIDNIGHT + 3 * DAY, EXPIRE_CURRENT, "exp3", None)),
        (config(EXP_DATE), current(), (at("2030-01-01T00:00:00"), EXPIRE_CURRENT, "date", None)),
        (config(EXP3, EXP_DATE), current(), (MIDNIGHT + 3 * DAY, EXPIRE_CURRENT, "exp3", None)),  # the earliest
        (config(TO_COLD), current(), (MIDNIGHT + DAY, TRANSITION_CURRENT, "cold", "COLD")),
        (config(TO_COLD), current(storage_class="COLD"), (MIDNIGHT + 5 * DAY, TRANSITION_CURRENT, "cold", "ARCHIVE")),
        (config(TO_COLD), current(storage_class="ARCHIVE"), None),  # every transition done
        (config(TO_COLD, EXP3), current(storage_class="COLD"), (MIDNIGHT + 3 * DAY, EXPIRE_CURRENT, "exp3", None)),
        # AWS's default minimum: a small object does not transition, unless the rule names a size
        (config(TO_COLD), current(size=1000), None),
        (
            config(TO_COLD, min_size=MIN_SIZE_BY_CLASS),
            current(size=1000),
            (MIDNIGHT + DAY, TRANSITION_CURRENT, "cold", "COLD"),
        ),
        (
            config(SMALL_TO_COLD),
            current(size=1000),
            (MIDNIGHT, TRANSITION_CURRENT, "s", "COLD"),
        ),
        # expiration and transition due together: deletion wins
        (
            config(rule("t", transitions=(LifecycleTransition("COLD", days=3),)), EXP3),
            current(),
            (MIDNIGHT + 3 * DAY, EXPIRE_CURRENT, "exp3", None),
        ),
        (config(NONCURRENT), current(), None),  # noncurrent rules leave the current version alone
        (config(MARKERS), current(), None),
        # noncurrent versions: NewerNoncurrentVersions newer ones must exist first
        (config(NONCURRENT), noncurrent(T0 + DAY, newer=0), None),
        (config(NONCURRENT), noncurrent(T0 + DAY, newer=1), (MIDNIGHT + 3 * DAY, TRANSITION_NONCURRENT, "nc", "COLD")),
        (config(NONCURRENT), noncurrent(T0 + DAY, newer=2), (MIDNIGHT + 3 * DAY, TRANSITION_NONCURRENT, "nc", "COLD")),
        (
            config(NONCURRENT),
            noncurrent(T0 + DAY, newer=2, storage_class="COLD"),
            (MIDNIGHT + 8 * DAY, EXPIRE_NONCURRENT, "nc", None),
        ),
        (config(EXP3), noncurrent(T0 + DAY), None),  # current-version rules leave noncurrent ones alone
        # delete markers
        (config(MARKERS), current(is_delete_marker=True, only_version=True), (T0, REMOVE_DELETE_MARKER, "dm", None)),
        (config(MARKERS), current(is_delete_marker=True, only_version=False), None),
        (
            config(EXP3),
            current(is_delete_marker=True, only_version=True),
            (MIDNIGHT + 3 * DAY, REMOVE_DELETE_MARKER, "exp3", None),
        ),
        (config(EXP_DATE), current(is_delete_marker=True, only_version=True), None),
        (
            config(NONCURRENT),
            noncurrent(T0 + DAY, newer=5, is_delete_marker=True),
            (MIDNIGHT + 8 * DAY, EXPIRE_NONCURRENT, "nc", None),
        ),
        # tag filters: a delete marker has no tags
        (
            config(TAGGED),
            current(tags={"t": "1"}),
            (MIDNIGHT + DAY, EXPIRE_CURRENT, "tag", None),
        ),
        (
            config(TAGGED),
            current(tags={"t": "2"}),
            None,
        ),
        (config(rule("off", enabled=False, expiration=LifecycleExpiration(days=1))), current(), None),
    ],
)
def test_next_action(
    cfg: LifecycleConfig, version: VersionState, expected: tuple[int, str, str, str | None] | None
) -> None:
    got = next_action(cfg, version)
    assert (None if got is None else (got.due_ns, got.action, got.rule_id, got.storage_class)) == expected


def test_a_short_day_is_not_rounded() -> None:
    got = next_action(config(EXP3), current(), day_s=10)
    assert got is not None and got.due_ns == T0 + 30 * NS


def test_current_expiration_is_what_x_amz_expiration_reports() -> None:
    cfg = config(TO_COLD, rule("late", expiration=LifecycleExpiration(days=9)), EXP3)
    got = current_expiration(cfg, "data/a", {}, 1, T0)
    assert got is not None and (got.due_ns, got.rule_id) == (MIDNIGHT + 3 * DAY, "exp3")
    assert current_expiration(config(TO_COLD, NONCURRENT), "data/a", {}, 1, T0) is None


def test_upload_abort_by_prefix() -> None:
    cfg = config(
        rule("a", filter=LifecycleFilter("prefix", "tmp/"), abort_days=2),
        rule("b", filter=LifecycleFilter("all"), abort_days=7),
        rule("c", enabled=False, abort_days=1),
    )
    got = upload_abort(cfg, "tmp/x", T0)
    assert got is not None and (got.due_ns, got.action, got.rule_id) == (MIDNIGHT + 2 * DAY, ABORT_UPLOAD, "a")
    other = upload_abort(cfg, "data/x", T0)
    assert other is not None and other.rule_id == "b"
    assert upload_abort(config(EXP3), "tmp/x", T0) is None


# --- the stored form -------------------------------------------------------------------------
_names = st.text(alphabet="abcXYZ09/-_ ", min_size=0, max_size=8)
_filters = st.one_of(
    st.just(LifecycleFilter("all")),
    st.builds(LifecycleFilter, st.sampled_from(["prefix", "legacy"]), _names),
    st.builds(
        LifecycleFilter,
        st.just("and"),
        st.none() | _names,
        st.lists(st.tuples(_names, _names), max_size=3).map(tuple),
        st.none() | st.integers(0, 10**6),
        st.none() | st.integers(10**6 + 1, 10**9),
    ),
)
_days = st.integers(0, 3650)
_rules = st.builds(
    LifecycleRule,
    _names,
    st.booleans(),
    _filters,
    st.none()
    | st.builds(LifecycleExpiration, days=_days)
    | st.builds(LifecycleExpiration, date_s=st.integers(0, 10**5).map(lambda d: d * DAY_S))
    | st.builds(LifecycleExpiration, delete_marker=st.booleans()),
    st.lists(st.builds(LifecycleTransition, st.sampled_from(["COLD", "ARCHIVE"]), _days), max_size=2).map(tuple),
    st.lists(st.builds(NoncurrentTransition, st.just("COLD"), _days, st.none() | st.integers(1, 100)), max_size=1).map(
        tuple
    ),
    st.none() | st.builds(NoncurrentExpiration, _days, st.none() | st.integers(1, 100)),
    st.none() | _days,
)


@given(st.lists(_rules, min_size=1, max_size=4), st.sampled_from(["all_storage_classes_128K", MIN_SIZE_BY_CLASS]))
def test_props_round_trip(rules: list[LifecycleRule], min_size: str) -> None:
    cfg = LifecycleConfig(tuple(rules), min_size)
    stored = json.loads(json.dumps(cfg.to_props()))  # what the catalog keeps
    assert LifecycleConfig.from_props(stored) == cfg
    assert LifecycleConfig.from_props(None) is None
