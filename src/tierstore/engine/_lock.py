"""Object lock (WORM): the pure rules. No I/O and no clock of its own — every rule that depends on
time takes ``now_ns``, so tests move time freely and the engine passes ``self.clock.now_ns()``.

A version's lock is ``ObjectMeta.lock``: ``{"mode": "GOVERNANCE"|"COMPLIANCE", "until_ns": int}``
when it has a retention, plus ``"legal_hold": bool`` once a legal hold was set (ON or OFF).
A bucket's configuration is ``props["object_lock"]``: ``{"enabled": True}`` plus an optional
``"default": {"mode": ..., "days"|"years": n}``.

Rules (AWS S3 is the reference):
- a version under legal hold, or with an unexpired retention, cannot be destroyed; GOVERNANCE
  yields to ``x-amz-bypass-governance-retention``, COMPLIANCE to nothing;
- an active COMPLIANCE retention can only be kept or extended, in COMPLIANCE mode;
- an active GOVERNANCE retention can be extended; shortening or removing it, or moving it to
  COMPLIANCE, needs the bypass (as AWS, RGW and SeaweedFS);
- a new retention date must lie in the future;
- a new version gets the retention its request names, else the bucket's default retention.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from tierstore.errors import (
    AccessDenied,
    InvalidArgument,
    InvalidRequest,
    InvalidRetentionPeriod,
    MalformedXML,
)

__all__ = [
    "COMPLIANCE",
    "GOVERNANCE",
    "MAX_DEFAULT_DAYS",
    "MAX_DEFAULT_YEARS",
    "DefaultRetention",
    "LockConfig",
    "LockRequest",
    "Retention",
    "change_legal_hold",
    "change_retention",
    "format_retain_until",
    "locked_reason",
    "new_version_lock",
    "parse_legal_hold",
    "parse_lock_headers",
    "parse_mode",
    "parse_retain_until",
    "retention_of",
]

GOVERNANCE = "GOVERNANCE"
COMPLIANCE = "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
MAX_DEFAULT_DAYS = 36_500
MAX_DEFAULT_YEARS = 100
_NS_PER_MS = 1_000_000
_NS_PER_DAY = 86_400 * 1_000_000_000
MISSING_CONFIGURATION = "Bucket is missing Object Lock Configuration"


@dataclass(frozen=True, slots=True)
class Retention:
    """A retention period on one version: ``mode`` until ``until_ns`` (ns since the epoch)."""

    mode: str
    until_ns: int

    def active(self, now_ns: int) -> bool:
        return self.until_ns > now_ns


@dataclass(frozen=True, slots=True)
class DefaultRetention:
    """A bucket's default retention: exactly one of ``days`` / ``years``, positive."""

    mode: str
    days: int | None = None
    years: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise MalformedXML("The default retention mode must be GOVERNANCE or COMPLIANCE.")
        if (self.days is None) == (self.years is None):
            raise MalformedXML("The default retention needs exactly one of Days and Years.")
        n, hi = (self.days, MAX_DEFAULT_DAYS) if self.days is not None else (self.years, MAX_DEFAULT_YEARS)
        assert n is not None
        if n <= 0:
            raise InvalidRetentionPeriod()
        if n > hi:
            unit = "days" if self.days is not None else "years"
            raise InvalidRetentionPeriod(f"Default retention period must not exceed {hi} {unit}.")

    def retention(self, now_ns: int) -> Retention:
        """The retention a version written at ``now_ns`` gets. Years are calendar years
        (29 February becomes 28 February in a common year)."""
        if self.days is not None:
            return Retention(self.mode, _ms(now_ns + self.days * _NS_PER_DAY))
        assert self.years is not None
        t = dt.datetime.fromtimestamp(now_ns // 1_000_000_000, tz=dt.UTC)
        year = t.year + self.years
        try:
            later = t.replace(year=year)
        except ValueError:  # 29 February
            later = t.replace(year=year, day=28)
        return Retention(self.mode, _ms(int(later.timestamp()) * 1_000_000_000 + now_ns % 1_000_000_000))

    def to_props(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mode": self.mode}
        if self.days is not None:
            doc["days"] = self.days
        else:
            doc["years"] = self.years
        return doc


@dataclass(frozen=True, slots=True)
class LockConfig:
    """A bucket's object lock configuration (only ever exists enabled: S3 cannot disable it)."""

    default: DefaultRetention | None = None

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> LockConfig | None:
        doc = props.get("object_lock")
        if not doc or not doc.get("enabled"):
            return None
        d = doc.get("default")
        if not d:
            return cls()
        return cls(DefaultRetention(d["mode"], d.get("days"), d.get("years")))

    def to_props(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"enabled": True}
        if self.default is not None:
            doc["default"] = self.default.to_props()
        return doc


@dataclass(frozen=True, slots=True)
class LockRequest:
    """What a write (PUT, COPY, CreateMultipartUpload) asks for in its x-amz-object-lock-* headers."""

    retention: Retention | None = None
    legal_hold: bool | None = None

    def is_empty(self) -> bool:
        return self.retention is None and self.legal_hold is None


# --- parsing (syntax only; "in the future" needs the clock) --------------------------------
def _ms(ns: int) -> int:
    """Retain-until dates are kept to the millisecond, the precision they are written back in, so
    a date read from GET can be sent again unchanged (and is not a shortening)."""
    return ns - ns % _NS_PER_MS


def parse_mode(value: str) -> str:
    if value not in MODES:
        raise InvalidArgument("Unknown wormMode directive.", resource=value[:40])
    return value


def parse_retain_until(value: str) -> int:
    """An ISO 8601 timestamp (``2030-01-01T00:00:00Z``, with or without fraction or offset) as ns;
    a time without an offset is UTC."""
    try:
        t = dt.datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidArgument("The retain until date must be provided in ISO 8601 format", resource=value[:40]) from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return _ms(ns)


def format_retain_until(until_ns: int) -> str:
    t = dt.datetime.fromtimestamp(until_ns // 1_000_000_000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{until_ns // _NS_PER_MS % 1000:03d}Z"


def parse_legal_hold(value: str) -> bool:
    if value not in ("ON", "OFF"):
        raise InvalidArgument("Legal Hold must be either of 'ON' or 'OFF'", resource=value[:40])
    return value == "ON"


def parse_lock_headers(mode: str | None, retain_until: str | None, legal_hold: str | None) -> LockRequest:
    """The x-amz-object-lock-{mode,retain-until-date,legal-hold} headers of a write."""
    if (mode is None) != (retain_until is None):
        raise InvalidArgument("x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied")
    retention = None
    if mode is not None and retain_until is not None:
        retention = Retention(parse_mode(mode), parse_retain_until(retain_until))
    return LockRequest(retention, parse_legal_hold(legal_hold) if legal_hold is not None else None)


# --- rules ---------------------------------------------------------------------------------
def retention_of(lock: dict[str, Any]) -> Retention | None:
    if not lock or "mode" not in lock:
        return None
    return Retention(str(lock["mode"]), int(lock.get("until_ns", 0)))


def locked_reason(lock: dict[str, Any], now_ns: int, *, bypass_governance: bool) -> str | None:
    """Why a version with ``lock`` may not be destroyed now, or None if it may."""
    if not lock:
        return None
    if lock.get("legal_hold"):
        return "the object version is under legal hold"
    retention = retention_of(lock)
    if retention is None or not retention.active(now_ns):
        return None
    if retention.mode == COMPLIANCE or not bypass_governance:
        return f"the object version is locked in {retention.mode} mode"
    return None


def _check_future(retention: Retention, now_ns: int) -> None:
    if not retention.active(now_ns):
        raise InvalidArgument("The retain until date must be in the future!")


def new_version_lock(
    request: LockRequest | None, config: LockConfig | None, now_ns: int, *, require_future: bool = True
) -> dict[str, Any]:
    """The lock of a version written at ``now_ns``: the request's retention, else the bucket's
    default; the request's legal hold. Lock headers on a bucket without lock are InvalidRequest.
    ``require_future=False`` when the request was checked earlier (CreateMultipartUpload)."""
    request = request or LockRequest()
    if config is None:
        if not request.is_empty():
            raise InvalidRequest(MISSING_CONFIGURATION)
        return {}
    lock: dict[str, Any] = {}
    retention = request.retention
    if retention is not None:
        if require_future:
            _check_future(retention, now_ns)
    elif config.default is not None:
        retention = config.default.retention(now_ns)
    if retention is not None:
        lock.update(mode=retention.mode, until_ns=retention.until_ns)
    if request.legal_hold is not None:
        lock["legal_hold"] = request.legal_hold
    return lock


def change_retention(
    lock: dict[str, Any], new: Retention | None, now_ns: int, *, bypass_governance: bool
) -> dict[str, Any]:
    """PutObjectRetention: the version's new lock, or AccessDenied / InvalidArgument.
    ``new=None`` removes the retention."""
    if new is not None:
        _check_future(new, now_ns)
    current = retention_of(lock)
    if current is not None and current.active(now_ns):
        shortens = new is None or new.until_ns < current.until_ns
        if current.mode == COMPLIANCE:
            if new is None or new.mode != COMPLIANCE or shortens:
                raise AccessDenied(
                    "Access Denied because the object version is locked in COMPLIANCE mode: its retention can"
                    " only be extended."
                )
        elif (new is None or shortens or new.mode != GOVERNANCE) and not bypass_governance:
            raise AccessDenied(
                "Access Denied because the object version is locked in GOVERNANCE mode: shortening, removing"
                " or moving its retention to COMPLIANCE needs x-amz-bypass-governance-retention."
            )
    out = {k: v for k, v in lock.items() if k not in ("mode", "until_ns")}
    if new is not None:
        out.update(mode=new.mode, until_ns=new.until_ns)
    return out


def change_legal_hold(lock: dict[str, Any], on: bool) -> dict[str, Any]:
    """PutObjectLegalHold: a legal hold may always be placed or lifted."""
    return {**lock, "legal_hold": on}
