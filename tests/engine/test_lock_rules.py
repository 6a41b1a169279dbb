"""Object lock rules (engine/_lock.py), table-driven, with time moved by hand; and the same rules
through an embedded ObjectService whose clock the test controls (no sleeping)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tierstore.blob import MemoryBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.engine import ObjectService
from tierstore.engine._lock import (
    COMPLIANCE,
    GOVERNANCE,
    DefaultRetention,
    LockConfig,
    LockRequest,
    Retention,
    change_legal_hold,
    change_retention,
    format_retain_until,
    locked_reason,
    new_version_lock,
    parse_lock_headers,
    parse_retain_until,
)
from tierstore.errors import (
    AccessDenied,
    InvalidArgument,
    InvalidBucketState,
    InvalidRequest,
    InvalidRetentionPeriod,
    MalformedXML,
)
from tierstore.runtime import Clock

S = 1_000_000_000
NOW = 1_700_000_000 * S  # 2023-11-14T22:13:20Z
DAY = 86_400 * S


def lock(mode: str | None = None, until_ns: int = 0, hold: bool | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if mode is not None:
        out.update(mode=mode, until_ns=until_ns)
    if hold is not None:
        out["legal_hold"] = hold
    return out


# --- may this version be destroyed? ---------------------------------------------------------
@pytest.mark.parametrize(
    ("current", "bypass", "locked"),
    [
        ({}, False, False),
        (lock(hold=False), False, False),
        (lock(hold=True), True, True),  # a legal hold yields to nothing
        (lock(GOVERNANCE, NOW + S), False, True),
        (lock(GOVERNANCE, NOW + S), True, False),
        (lock(COMPLIANCE, NOW + S), True, True),
        (lock(COMPLIANCE, NOW), False, False),  # expired exactly now
        (lock(COMPLIANCE, NOW - S), False, False),
        (lock(GOVERNANCE, NOW - S, hold=True), True, True),
    ],
)
def test_locked_reason(current: dict[str, Any], bypass: bool, locked: bool) -> None:
    assert (locked_reason(current, NOW, bypass_governance=bypass) is not None) is locked


# --- PutObjectRetention transitions ---------------------------------------------------------
ALLOW, DENY, BAD = "allow", "deny", "bad"


@pytest.mark.parametrize(
    ("current", "new", "bypass", "outcome"),
    [
        # nothing, or an expired retention: anything in the future goes, removal too
        ({}, Retention(GOVERNANCE, NOW + DAY), False, ALLOW),
        ({}, Retention(COMPLIANCE, NOW + DAY), False, ALLOW),
        ({}, None, False, ALLOW),
        (lock(COMPLIANCE, NOW - S), Retention(GOVERNANCE, NOW + S), False, ALLOW),
        (lock(COMPLIANCE, NOW - S), None, False, ALLOW),
        # a new date must lie in the future
        ({}, Retention(GOVERNANCE, NOW), False, BAD),
        ({}, Retention(GOVERNANCE, NOW - DAY), True, BAD),
        # COMPLIANCE: keep or extend, in COMPLIANCE, bypass or not
        (lock(COMPLIANCE, NOW + DAY), Retention(COMPLIANCE, NOW + DAY), False, ALLOW),
        (lock(COMPLIANCE, NOW + DAY), Retention(COMPLIANCE, NOW + 2 * DAY), False, ALLOW),
        (lock(COMPLIANCE, NOW + DAY), Retention(COMPLIANCE, NOW + DAY - S), False, DENY),
        (lock(COMPLIANCE, NOW + DAY), Retention(COMPLIANCE, NOW + DAY - S), True, DENY),
        (lock(COMPLIANCE, NOW + DAY), Retention(GOVERNANCE, NOW + 2 * DAY), False, DENY),
        (lock(COMPLIANCE, NOW + DAY), Retention(GOVERNANCE, NOW + 2 * DAY), True, DENY),
        (lock(COMPLIANCE, NOW + DAY), None, False, DENY),
        (lock(COMPLIANCE, NOW + DAY), None, True, DENY),
        # GOVERNANCE: extend freely; shorten, remove or move to COMPLIANCE only with the bypass
        (lock(GOVERNANCE, NOW + DAY), Retention(GOVERNANCE, NOW + 2 * DAY), False, ALLOW),
        (lock(GOVERNANCE, NOW + DAY), Retention(COMPLIANCE, NOW + DAY), False, DENY),
        (lock(GOVERNANCE, NOW + DAY), Retention(COMPLIANCE, NOW + 2 * DAY), False, DENY),
        (lock(GOVERNANCE, NOW + DAY), Retention(COMPLIANCE, NOW + DAY), True, ALLOW),
        (lock(GOVERNANCE, NOW - S), Retention(COMPLIANCE, NOW + DAY), False, ALLOW),  # expired: no lock left
        (lock(GOVERNANCE, NOW + DAY), Retention(GOVERNANCE, NOW + S), False, DENY),
        (lock(GOVERNANCE, NOW + DAY), Retention(GOVERNANCE, NOW + S), True, ALLOW),
        (lock(GOVERNANCE, NOW + DAY), Retention(COMPLIANCE, NOW + S), False, DENY),
        (lock(GOVERNANCE, NOW + DAY), Retention(COMPLIANCE, NOW + S), True, ALLOW),
        (lock(GOVERNANCE, NOW + DAY), None, False, DENY),
        (lock(GOVERNANCE, NOW + DAY), None, True, ALLOW),
    ],
)
def test_change_retention(current: dict[str, Any], new: Retention | None, bypass: bool, outcome: str) -> None:
    current = {**current, "legal_hold": False}
    if outcome == DENY:
        with pytest.raises(AccessDenied):
            change_retention(current, new, NOW, bypass_governance=bypass)
        return
    if outcome == BAD:
        with pytest.raises(InvalidArgument):
            change_retention(current, new, NOW, bypass_governance=bypass)
        return
    out = change_retention(current, new, NOW, bypass_governance=bypass)
    expected: dict[str, Any] = {"legal_hold": False}
    if new is not None:
        expected.update(mode=new.mode, until_ns=new.until_ns)
    assert out == expected


def test_legal_hold_is_independent_of_retention() -> None:
    current = lock(COMPLIANCE, NOW + DAY)
    held = change_legal_hold(current, True)
    assert held == {**current, "legal_hold": True}
    assert change_legal_hold(held, False) == {**current, "legal_hold": False}


# --- new versions ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_", "config", "expected"),
    [
        (None, None, {}),
        (LockRequest(), LockConfig(), {}),
        (None, LockConfig(DefaultRetention(GOVERNANCE, days=2)), lock(GOVERNANCE, NOW + 2 * DAY)),
        (
            LockRequest(Retention(COMPLIANCE, NOW + S)),
            LockConfig(DefaultRetention(GOVERNANCE, days=2)),
            lock(COMPLIANCE, NOW + S),
        ),
        (
            LockRequest(legal_hold=True),
            LockConfig(DefaultRetention(COMPLIANCE, days=1)),
            lock(COMPLIANCE, NOW + DAY, hold=True),
        ),
        (LockRequest(legal_hold=False), LockConfig(), lock(hold=False)),
    ],
)
def test_new_version_lock(request_: LockRequest | None, config: LockConfig | None, expected: dict[str, Any]) -> None:
    assert new_version_lock(request_, config, NOW) == expected


def test_new_version_lock_refusals() -> None:
    with pytest.raises(InvalidRequest, match="missing Object Lock Configuration"):
        new_version_lock(LockRequest(legal_hold=False), None, NOW)
    with pytest.raises(InvalidArgument, match="future"):
        new_version_lock(LockRequest(Retention(GOVERNANCE, NOW)), LockConfig(), NOW)
    # Checked when the multipart upload was created; applied as it was at completion.
    assert new_version_lock(LockRequest(Retention(GOVERNANCE, NOW)), LockConfig(), NOW + S, require_future=False) == (
        lock(GOVERNANCE, NOW)
    )


def test_default_retention_in_years_is_calendar_years() -> None:
    leap = int(dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC).timestamp()) * S
    r = DefaultRetention(COMPLIANCE, years=1).retention(leap)
    assert format_retain_until(r.until_ns) == "2025-02-28T12:00:00.000Z"
    r = DefaultRetention(GOVERNANCE, years=4).retention(leap)
    assert format_retain_until(r.until_ns) == "2028-02-29T12:00:00.000Z"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"mode": GOVERNANCE, "days": 0}, InvalidRetentionPeriod),
        ({"mode": GOVERNANCE, "days": -1}, InvalidRetentionPeriod),
        ({"mode": GOVERNANCE, "years": 0}, InvalidRetentionPeriod),
        ({"mode": GOVERNANCE, "days": 36_501}, InvalidRetentionPeriod),
        ({"mode": GOVERNANCE, "years": 101}, InvalidRetentionPeriod),
        ({"mode": GOVERNANCE, "days": 1, "years": 1}, MalformedXML),
        ({"mode": GOVERNANCE}, MalformedXML),
        ({"mode": "LEGAL", "days": 1}, MalformedXML),
    ],
)
def test_default_retention_validation(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        DefaultRetention(**kwargs)


def test_lock_config_round_trips_through_props() -> None:
    configs = [
        LockConfig(),
        LockConfig(DefaultRetention(COMPLIANCE, days=3)),
        LockConfig(DefaultRetention(GOVERNANCE, years=2)),
    ]
    for config in configs:
        assert LockConfig.from_props({"object_lock": config.to_props()}) == config
    assert LockConfig.from_props({}) is None


# --- header parsing -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-02T03:04:05Z", "2030-01-02T03:04:05.000Z"),
        ("2030-01-02T03:04:05.123456Z", "2030-01-02T03:04:05.123Z"),
        ("2030-01-02T05:04:05+02:00", "2030-01-02T03:04:05.000Z"),
        ("2030-01-02T03:04:05", "2030-01-02T03:04:05.000Z"),
    ],
)
def test_retain_until_parses_iso8601_to_the_millisecond(value: str, expected: str) -> None:
    assert format_retain_until(parse_retain_until(value)) == expected


@pytest.mark.parametrize(
    ("mode", "until", "hold"),
    [
        ("GOVERNANCE", None, None),
        (None, "2030-01-01T00:00:00Z", None),
        ("FOREVER", "2030-01-01T00:00:00Z", None),
        ("GOVERNANCE", "next tuesday", None),
        (None, None, "on"),
    ],
)
def test_lock_headers_refused(mode: str | None, until: str | None, hold: str | None) -> None:
    with pytest.raises(InvalidArgument):
        parse_lock_headers(mode, until, hold)


def test_lock_headers_parsed() -> None:
    got = parse_lock_headers("COMPLIANCE", "2030-01-01T00:00:00Z", "ON")
    assert got == LockRequest(Retention(COMPLIANCE, parse_retain_until("2030-01-01T00:00:00Z")), True)
    assert parse_lock_headers(None, None, None).is_empty()


# --- through the embedded service, with a hand-moved clock -------------------------------------
class FakeClock(Clock):
    def __init__(self, now_ns: int) -> None:
        self.ns = now_ns

    def now_ns(self) -> int:
        return self.ns

    def now_s(self) -> float:
        return self.ns / S


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def run_service(tmp_path: Path, test: Callable[[ObjectService, FakeClock], Awaitable[None]]) -> None:
    clock = FakeClock(NOW)
    catalog = SqliteCatalog(tmp_path / "catalog.db")
    service = ObjectService(catalog, MemoryBlobStore(), clock=clock)
    try:
        asyncio.run(test(service, clock))
    finally:
        catalog.close()


def test_service_retention_expires_with_the_clock(tmp_path: Path) -> None:
    async def test(svc: ObjectService, clock: FakeClock) -> None:
        await svc.create_bucket("locked", object_lock=True)
        await svc.put_object_lock_configuration("locked", LockConfig(DefaultRetention(COMPLIANCE, days=1)))
        meta = await svc.put_object("locked", "k", _body(b"v"))
        assert meta.lock == lock(COMPLIANCE, NOW + DAY)
        with pytest.raises(AccessDenied):
            await svc.delete_object("locked", "k", version_id=meta.version_id, bypass_governance=True)
        with pytest.raises(InvalidBucketState):
            await svc.set_bucket_versioning("locked", "Suspended")
        clock.ns = NOW + DAY  # retain-until reached: the version may go
        result = await svc.delete_object("locked", "k", version_id=meta.version_id)
        assert result.version_id == meta.version_id

    run_service(tmp_path, test)


def test_service_legal_hold_outlives_retention(tmp_path: Path) -> None:
    async def test(svc: ObjectService, clock: FakeClock) -> None:
        await svc.create_bucket("held", object_lock=True)
        meta = await svc.put_object(
            "held", "k", _body(b"v"), lock=LockRequest(Retention(GOVERNANCE, NOW + S), legal_hold=True)
        )
        clock.ns = NOW + DAY
        with pytest.raises(AccessDenied):
            await svc.delete_object("held", "k", version_id=meta.version_id)
        await svc.put_object_legal_hold("held", "k", False, version_id=meta.version_id)
        await svc.delete_object("held", "k", version_id=meta.version_id)

    run_service(tmp_path, test)


def test_service_lock_needs_versioning_or_creation(tmp_path: Path) -> None:
    async def test(svc: ObjectService, clock: FakeClock) -> None:
        await svc.create_bucket("plain")
        with pytest.raises(InvalidBucketState):
            await svc.put_object_lock_configuration("plain", LockConfig())
        with pytest.raises(InvalidRequest):
            await svc.put_object("plain", "k", _body(b"v"), lock=LockRequest(legal_hold=True))
        await svc.set_bucket_versioning("plain", "Enabled")
        await svc.put_object_lock_configuration("plain", LockConfig())  # S3 allows it once versioned
        meta = await svc.put_object("plain", "k", _body(b"v"), lock=LockRequest(legal_hold=True))
        assert meta.lock == {"legal_hold": True}

    run_service(tmp_path, test)
