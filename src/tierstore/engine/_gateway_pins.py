"""Dataset pins on every gateway (docs/scale-out.md "Dataset pins on every gateway"): with
``--store`` each gateway's local drives are its hot tier (a ``CachedBlobStore``), so a pin is
executed by every gateway for its own cache.

The pin itself is shared: ``tierstore dataset pin`` holds the version's blobs in the catalog
(``hot_holds``) and copies its blobs that sit in a remote tier into the store (the cluster's
standard tier: ``engine/_hot.py`` puts them through ``CachedBlobStore.put``), once, for every
gateway. Then each gateway, in its hot-copy loop (``GatewayPins.run_once``, every worker):

- makes the held set of its cache directory the blobs of every live pin (the samples and the
  manifest), so eviction skips them in every worker sharing the directory; an unpinned or
  expired version's blobs become evictable at once (``CachedBlobStore.hold``);
- for each live pin, runs the named job ``pin-cache:<node>:<holder>`` (a lease in the shared
  ``jobs`` table, so one worker of this gateway fills it at a time, and a worker that dies is
  taken over): every blob without a cache file is read whole from the store, verified, into the
  cache (``prefetch``); the job's cursor is its progress (JSON: copied, total, bytes, failed),
  what ``tierstore jobs`` shows per gateway. A blob still in a remote tier (the pin's copy into
  the store not done yet) is left for a later pass. A gateway started after the pin catches up
  at its first pass; the pin's request does not wait for the gateways.
- ``<node>`` is the cache directory's id (``CachedBlobStore.node_id``: one per gateway, shared by
  its workers); the node registers itself, with its host, in the cursor of the job
  ``pin-nodes`` (``{node: {host, seen_ns}}``), and a node not seen for ``_NODE_AGE`` leases is
  dropped from it (a dead gateway's progress ages out with it).

Without ``--store`` there is no ``GatewayPins``: a pin is the hot copy of engine/_hot.py alone.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tierstore.blob._cached import CachedBlobStore
from tierstore.catalog import Catalog
from tierstore.engine._dataset_tiers import parse_holder
from tierstore.engine._leases import Checkpoint, LeaseHolder, run_job
from tierstore.errors import TierstoreError, TierUnavailable

__all__ = ["GatewayPins", "NodeProgress"]

log = logging.getLogger("tierstore.hot")

NODES_JOB = "pin-nodes"
_NODE_AGE = 3  # leases: a node not seen for this long is dropped from the registry
_CHECKPOINT_EVERY = 32  # blobs between progress checkpoints


def job_name(node: str, holder: str) -> str:
    return f"pin-cache:{node}:{holder}"


@dataclass(slots=True)
class NodeProgress:
    """One gateway's fill of one pin."""

    node: str
    host: str
    copied: int
    total: int
    copied_bytes: int
    failed: int

    def to_dict(self) -> dict[str, Any]:
        return {"gateway": self.node, "host": self.host, "copied": self.copied, "total": self.total,
                "copied_bytes": self.copied_bytes, "failed": self.failed}  # fmt: skip


class GatewayPins:
    """This gateway's side of every live pin (module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        cache: CachedBlobStore,
        leases: LeaseHolder,
        pin_blobs: Callable[[str, int], Awaitable[list[str]]],
        *,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """``pin_blobs(name, version)``: awaitable of the blob ids a pinned version needs on a
        gateway (its samples' blobs and its manifest)."""
        self.catalog = catalog
        self.cache = cache
        self.leases = leases
        self.pin_blobs = pin_blobs
        self.now_ns = now_ns
        self.node = cache.node_id
        self.host = socket.gethostname()
        self._registered_ns = 0

    async def run_once(self) -> dict[str, int]:
        """Hold every live pin's blobs in the cache, then fill what this gateway lacks."""
        await self._register()
        pins: dict[str, list[str]] = {}
        for info in await self.catalog.hot_list("pin:"):
            if info.expires_ns is not None and info.expires_ns <= self.now_ns():
                continue
            parsed = parse_holder(info.holder)
            if parsed is None:
                continue
            name, _, version = parsed[1].rpartition("@")
            try:
                pins[info.holder] = await self.pin_blobs(name, int(version))
            except (TierstoreError, ValueError) as exc:  # the version deleted meanwhile: its hold goes too
                log.warning("pin %s: cannot list its blobs: %s", info.holder, exc)
        await self.cache.hold({b for ids in pins.values() for b in ids})
        copied = failed = 0
        for holder, ids in pins.items():
            progress = await self._progress(holder)
            if (
                progress is not None
                and progress["copied"] == progress["total"] == len(ids)
                and all(self.cache.is_cached(b) for b in ids)
            ):
                continue  # done here already (a file the checks dropped is filled again)
            counts = [0, 0]
            body = functools.partial(self._fill, ids, counts)
            await run_job(self.catalog, self.leases, job_name(self.node, holder), body, now_ns=self.now_ns)
            copied += counts[0]
            failed += counts[1]
        return {"pins": len(pins), "copied": copied, "failed": failed}

    async def _fill(self, ids: list[str], counts: list[int], cursor_: str, checkpoint: Checkpoint) -> str:
        """The job's body: cache every blob of ``ids`` this gateway lacks (``counts``: copied and
        failed, added to); the cursor it returns is its progress."""
        done = done_bytes = failed = 0
        down = False

        def cursor() -> str:
            return json.dumps({"copied": done, "total": len(ids), "bytes": done_bytes, "failed": failed})

        remote = await self.catalog.blob_tiers(ids)  # in a tier, not yet copied into the store: later
        for i, blob_id in enumerate(ids):
            if self.cache.is_cached(blob_id):
                done += 1
            elif blob_id in remote or down:
                failed += 1
            else:
                try:
                    size = await self.cache.prefetch(blob_id)
                except TierUnavailable as exc:  # the store down: the rest waits for a later pass
                    failed += 1
                    down = True
                    log.warning("pin: the store is unavailable; the blobs not cached wait: %s", exc)
                except TierstoreError as exc:  # the blob deleted meanwhile, damaged: a later pass
                    failed += 1
                    log.warning("pin: could not cache blob %s on this gateway: %s", blob_id, exc)
                else:
                    done += 1
                    done_bytes += size
                    counts[0] += 1
            if i % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1 and not await checkpoint(cursor()):
                break
        counts[1] += failed
        return cursor()

    async def _progress(self, holder: str) -> dict[str, int] | None:
        job = await self.catalog.job_get(job_name(self.node, holder))
        return _parse(job.cursor) if job is not None else None

    async def _register(self) -> None:
        """This node in ``pin-nodes`` (at most a third of a lease apart; a claim lost to another
        worker is retried at the next pass)."""
        now = self.now_ns()
        if now - self._registered_ns < self.leases.lease_ns // 3:
            return

        async def body(cursor: str, checkpoint: Checkpoint) -> str:
            nodes = _nodes(cursor)
            oldest = now - _NODE_AGE * self.leases.lease_ns
            nodes = {n: v for n, v in nodes.items() if int(v.get("seen_ns", 0)) > oldest}
            nodes[self.node] = {"host": self.host, "seen_ns": now}
            return json.dumps(nodes, sort_keys=True)

        if await run_job(self.catalog, self.leases, NODES_JOB, body, now_ns=self.now_ns):
            self._registered_ns = now

    async def progress(self, holder: str) -> list[NodeProgress]:
        """Every live gateway's fill of ``holder`` (a gateway that has not started it: 0 copied)."""
        job = await self.catalog.job_get(NODES_JOB)
        oldest = self.now_ns() - _NODE_AGE * self.leases.lease_ns
        out = []
        for node, seen in sorted(_nodes(job.cursor if job else "").items()):
            if int(seen.get("seen_ns", 0)) <= oldest:
                continue
            fill = await self.catalog.job_get(job_name(node, holder))
            p = (_parse(fill.cursor) if fill is not None else None) or {}
            out.append(NodeProgress(node, str(seen.get("host", "")), p.get("copied", 0), p.get("total", 0),
                                    p.get("bytes", 0), p.get("failed", 0)))  # fmt: skip
        return out


def _nodes(cursor: str) -> dict[str, dict[str, Any]]:
    try:
        found = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _parse(cursor: str) -> dict[str, int] | None:
    try:
        found = json.loads(cursor) if cursor else None
    except ValueError:
        return None
    return {k: int(v) for k, v in found.items()} if isinstance(found, dict) else None
