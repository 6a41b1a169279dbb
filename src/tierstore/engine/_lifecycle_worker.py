"""The lifecycle worker: acts on the due index (docs/tiers.md "Lifecycle").

``LifecyclePlan`` is the catalog's planner (catalog/sqlite/_lifecycle.py): the pure rules of
engine/_lifecycle.py applied to one key's versions, with object lock folded in — an expiration
(expire, expire-noncurrent, remove-delete-marker) of a version under retention is due no earlier
than its retain-until, and a version under legal hold has none (lifting the hold rewrites the
version, which recomputes its key). ``ObjectService`` installs it on its catalog.

``LifecycleWorker.run_once`` (server.py calls it every few seconds in every worker process):
recompute a page of each bucket whose rules changed, then claim due rows in pages (a claim is a
transaction that leases them, so several processes share the work), and apply each in its own
transaction (re-checked against the current state and rules there). A due transition calls the
mover outside the transaction, a page's transitions to a tier in one batch
(``ObjectService.transition_many``: their commits share one catalog transaction, which also
recomputes each key's rows); a failure backs the row off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tierstore.catalog import DueRow, KeyVersion, Outcome, PlannedAction
from tierstore.engine._leases import LeaseHolder, LeaseLost, while_leased
from tierstore.engine._lifecycle import (
    DAY_S,
    EXPIRE_CURRENT,
    EXPIRE_NONCURRENT,
    REMOVE_DELETE_MARKER,
    LifecycleConfig,
    VersionState,
    next_action,
    upload_abort,
)
from tierstore.engine._lock import retention_of
from tierstore.runtime import new_version_id
from tierstore.types import ObjectMeta

__all__ = ["LifecyclePlan", "LifecycleStats", "LifecycleWorker"]

log = logging.getLogger("tierstore.lifecycle")

_NS = 1_000_000_000
_DESTROYS = frozenset({EXPIRE_CURRENT, EXPIRE_NONCURRENT, REMOVE_DELETE_MARKER})


class LifecyclePlan:
    """The rules as the catalog's ``LifecyclePlanner``; ``day_s``: serve --lifecycle-day-seconds.
    A configuration is parsed once per distinct document (writes of one bucket reuse it)."""

    def __init__(self, day_s: int = DAY_S) -> None:
        self.day_s = day_s
        self._parsed: tuple[Any, LifecycleConfig] | None = None

    def _config(self, rules: dict[str, Any]) -> LifecycleConfig:
        cached = self._parsed
        if cached is not None and cached[0] == rules:
            return cached[1]
        config = LifecycleConfig.from_props(rules)
        assert config is not None
        self._parsed = (rules, config)
        return config

    def versions(self, rules: dict[str, Any], key: str, versions: Sequence[KeyVersion]) -> list[PlannedAction]:
        config = self._config(rules)
        out = []
        for i, v in enumerate(versions):
            state = VersionState(
                key=key,
                created_ns=v.modified_ns,
                size_bytes=v.size_bytes,
                tags=v.meta.get("t", {}),
                storage_class=v.meta.get("sc", "STANDARD"),
                is_delete_marker=v.is_delete_marker,
                noncurrent_since_ns=versions[i - 1].modified_ns if i else None,
                newer_noncurrent=max(0, i - 1),
                only_version=len(versions) == 1,
            )
            due = next_action(config, state, self.day_s)
            if due is None:
                continue
            due_ns = due.due_ns
            lock = v.meta.get("l") or {}
            if due.action in _DESTROYS and lock:
                if lock.get("legal_hold"):
                    continue  # never while held; lifting the hold recomputes the key
                retention = retention_of(lock)
                if retention is not None:
                    due_ns = max(due_ns, retention.until_ns)
            out.append(PlannedAction(v.version_id, due.action, due_ns, due.storage_class))
        return out

    def may_apply(self, rules: dict[str, Any], key: str) -> bool:
        return any(r.enabled and key.startswith(r.filter.prefix or "") for r in self._config(rules).rules)

    def upload(self, rules: dict[str, Any], key: str, initiated_ns: int) -> int | None:
        due = upload_abort(self._config(rules), key, initiated_ns, self.day_s)
        return None if due is None else due.due_ns


@dataclass
class LifecycleStats:
    """Counts since the process started (metrics; ``actions`` by action name)."""

    actions: dict[str, int] = field(default_factory=dict)
    rechecked: int = 0  # claimed rows that were no longer due (rules or state changed)
    failed: int = 0  # rows whose action raised (lock, mover): backed off
    recomputed_keys: int = 0

    def count(self, action: str) -> None:
        self.actions[action] = self.actions.get(action, 0) + 1


class LifecycleWorker:
    """Acts on due rows. ``service`` is the ObjectService (its catalog, clock, lock guard, trash
    drain and, once the tier data path is merged, ``transition``)."""

    def __init__(
        self,
        service: Any,
        *,
        page: int = 200,
        lease_s: float = 600.0,
        backoff_s: float = 300.0,
        recompute_keys: int = 1000,
    ) -> None:
        self.service = service
        self.catalog = service.catalog
        self.page = page
        self.lease_ns = int(lease_s * _NS)
        self.backoff_ns = int(backoff_s * _NS)
        self.recompute_keys = recompute_keys
        self.stats = LifecycleStats()
        # Rows are leased to this process's gateway id (engine/_leases.py): applies, defers and a
        # transition's heartbeat act only on rows still ours.
        self.leases: LeaseHolder = getattr(service, "leases", None) or LeaseHolder(lease_s=lease_s)
        # The mover of the tier data path (docs/tiers.md "The mover"); the one place it is looked up.
        self._transition_many: _MoveMany | None = getattr(service, "transition_many", None)
        self._warned_no_mover = False

    async def run_once(self, max_pages: int = 50) -> int:
        """Recompute queued buckets, then act on what is due now; returns the rows handled."""
        if not await self.catalog.lifecycle_pending(self.service.clock.now_ns()):
            return 0  # the common case: two index reads, no write transaction
        for _ in range(max_pages):
            page = await self.catalog.lifecycle_recompute_page(self.recompute_keys)
            if page is None:
                break
            bucket, keys, finished = page
            self.stats.recomputed_keys += keys
            log.info("lifecycle: recomputed %d keys of %s%s", keys, bucket, " (done)" if finished else "")
        handled = 0
        for _ in range(max_pages):
            now_ns = self.service.clock.now_ns()
            rows = await self.catalog.lifecycle_claim(now_ns, self.page, self.lease_ns, owner=self.leases.owner)
            if not rows:
                break
            self.leases.fault("lifecycle")
            applied = await asyncio.gather(*(self._apply(r, now_ns) for r in rows))
            outcomes = [o for o in applied if isinstance(o, str)]
            moves: dict[str, list[DueRow]] = {}
            for row, o in zip(rows, applied, strict=True):
                if not isinstance(o, str):
                    moves.setdefault(o.storage_class, []).append(row)
            for storage_class, moving in moves.items():  # a page's moves to a tier: one batch
                outcomes += await self._move(moving, storage_class, now_ns)
            handled += len(rows)
            done: dict[str, int] = {}
            for o in outcomes:
                done[o] = done.get(o, 0) + 1
            log.info("lifecycle: %d due rows: %s", len(rows), ", ".join(f"{k} {v}" for k, v in sorted(done.items())))
            if any(o not in ("rechecked", "failed", "deferred", "lost") for o in outcomes):
                await self.service._drain_after_commit()
            if len(rows) < self.page:
                break
        return handled

    async def _apply(self, row: DueRow, now_ns: int) -> str | _Move:
        marker = ObjectMeta(
            bucket=row.bucket,
            key=row.key,
            version_id=new_version_id(),
            size_bytes=0,
            etag="",
            modified_ns=now_ns,
            is_delete_marker=True,
        )
        try:
            outcome: Outcome = await self.catalog.lifecycle_apply(
                row, now_ns, marker, self.service._guard, self.lease_ns, owner=self.leases.owner
            )
        except Exception as exc:  # a lock the planner did not foresee, a catalog error: retried later
            log.warning("lifecycle: %s of %s/%s %s failed: %s", row.action, row.bucket, row.key, row.version_id, exc)
            self.stats.failed += 1
            await self.catalog.lifecycle_defer(row, now_ns + self.backoff_ns, owner=self.leases.owner)
            return "failed"
        if outcome.transition is not None:
            return _Move(outcome.transition)  # moved with the page's others (run_once)
        if outcome.done is None:
            self.stats.rechecked += 1
            return "rechecked"
        self.stats.count(outcome.done)
        return outcome.done

    async def _move(self, rows: list[DueRow], storage_class: str, now_ns: int) -> list[str]:
        """Move the versions of ``rows`` (claimed, re-checked) to ``storage_class`` in one batch
        (``ObjectService.transition_many``: one catalog transaction for their commits, which
        also recompute each key's rows); a row whose move failed is backed off."""
        if self._transition_many is None:
            if not self._warned_no_mover:
                log.warning(
                    "lifecycle: no mover in this build: transitions wait (retried every %d s)", self.backoff_ns // _NS
                )
                self._warned_no_mover = True
            await self._defer(rows, now_ns)
            return ["deferred"] * len(rows)
        owner = self.leases.owner

        async def renew() -> bool:  # the batch runs while any of its rows is still ours
            until_ns = self.service.clock.now_ns() + self.lease_ns
            kept: int = await self.catalog.lifecycle_renew(rows, owner, until_ns)
            return kept > 0

        moving = self._transition_many(storage_class, [(r.bucket, r.key, r.version_id) for r in rows])
        try:
            results: list[bool | Exception] = await while_leased(
                moving, renew, self.lease_ns / _NS, f"lifecycle: transition of {len(rows)} versions to {storage_class}"
            )
        except LeaseLost:  # every row was taken over: their new holders move them
            return ["lost"] * len(rows)
        except Exception as exc:  # the tier is gone: every row waits
            results = [exc] * len(rows)
        out: list[str] = []
        deferred: list[DueRow] = []
        for row, moved in zip(rows, results, strict=True):
            if moved is True:
                self.stats.count(row.action)
                out.append(row.action)
                continue
            if isinstance(moved, Exception):
                log.warning(
                    "lifecycle: transition of %s/%s %s to %s failed: %s",
                    row.bucket, row.key, row.version_id, storage_class, moved,
                )  # fmt: skip
            self.stats.failed += 1
            deferred.append(row)
            out.append("failed")
        await self._defer(deferred, now_ns)
        return out

    async def _defer(self, rows: Sequence[DueRow], now_ns: int) -> None:
        """Back ``rows`` off (those still ours)."""
        owner = self.leases.owner
        await asyncio.gather(*(self.catalog.lifecycle_defer(r, now_ns + self.backoff_ns, owner=owner) for r in rows))


@dataclass(frozen=True, slots=True)
class _Move:
    """A row ``lifecycle_apply`` found due as a transition to ``storage_class``."""

    storage_class: str


_MoveMany = Callable[[str, Sequence[tuple[str, str, str]]], Awaitable[list[bool | Exception]]]
