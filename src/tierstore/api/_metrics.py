"""Prometheus metrics: ``/metrics`` (tierstore's names) and MinIO's v2 names at
``/minio/v2/metrics/cluster`` and ``/minio/v2/metrics/bucket`` (docs/observability.md).

Request metrics are counted by each granian worker into ``prometheus_client``'s multiprocess
files (``PROMETHEUS_MULTIPROC_DIR``, a private directory ``serve`` creates before the workers
start and removes at exit), so a scrape answered by any worker sums every worker. What the store
*is* — drive states and capacity, bucket usage, the last heal report — is read when scraped, by
the worker answering: drives with one stat/statvfs each, bucket usage from one aggregate catalog
query, cached (it reads every version row of the first ``USAGE_BUCKET_LIMIT`` buckets).

What each worker's parts count themselves (the catalog pool, the LISTEN connection, the leases it
holds, the ``--store`` cache) is read from them with ``follow`` at each flush and written to the
shared files as counters and gauges (per worker, or the largest of the live workers'), so the
request path only increments plain integers. The work every gateway shares (the leased queues'
backlog, the lifecycle due index, the live gateways) is read from the catalog as the bucket usage
is: cached, refreshed in the background at most every ``BACKLOG_MIN_AGE_S`` (docs/observability.md
"Cluster").
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import math
import os
import re
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from tierstore.engine import Backlog, BucketUsage, HealProgress, ObjectService, Repairer, StoreHealth, TierProgress

__all__ = ["CONTENT_TYPE", "USAGE_BUCKET_LIMIT", "Metrics"]

log = logging.getLogger("tierstore.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
USAGE_BUCKET_LIMIT = 1000  # bucket usage covers the first N buckets by name (bounded scrape cost)
USAGE_MIN_AGE_S = 30.0  # bucket usage is recomputed at most this often...
USAGE_COST_SHARE = 0.05  # ...and so that it costs at most ~5% of one core however big the catalog
FLUSH_INTERVAL_S = 0.25  # requests are counted in a dict and flushed to the shared files this often
HEAL_PUBLISH_INTERVAL_S = 2.0
BACKLOG_MIN_AGE_S = 10.0  # the shared backlog is recounted at most this often (and at most 5% of a core)
BACKLOG_BOUND = 100_000  # each leased queue is counted up to this many rows
_TTFB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DURATION_BUCKETS = (*_TTFB_BUCKETS, 30.0, 60.0, 300.0)
_TTFB_BOUNDS = (*_TTFB_BUCKETS, math.inf)
_DURATION_BOUNDS = (*_DURATION_BUCKETS, math.inf)
_STATUS_CLASS = {n: f"{n}xx" for n in range(10)}
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db$")


@dataclass(slots=True)
class _UsageCache:
    buckets: list[BucketUsage]
    total_buckets: int
    computed_at: float  # time.monotonic()
    took_s: float


@dataclass(slots=True)
class _BacklogCache:
    backlog: Backlog
    computed_at: float  # time.monotonic()
    took_s: float


@dataclass(slots=True)
class _Followed:
    """A metric whose value ``read`` reports (a number, or one per label value), and what was last
    written of it."""

    metric: Counter | Gauge
    read: Callable[[], float | dict[str, float]]
    last: dict[str, float]


class _Pending:
    """What one API counted since the last flush: requests per status class (index: status //
    100), body bytes each way, and per histogram the observations per bucket (+Inf last), then
    their sum."""

    __slots__ = ("bytes_in", "bytes_out", "duration", "statuses", "ttfb")

    def __init__(self) -> None:
        self.statuses = [0] * 10
        self.bytes_in = 0
        self.bytes_out = 0
        self.ttfb = [0.0] * (len(_TTFB_BOUNDS) + 1)
        self.duration = [0.0] * (len(_DURATION_BOUNDS) + 1)


class Metrics:
    """The metrics of one worker process. ``multiproc_dir``: the directory shared by the server's
    workers (None: this process only, e.g. an app built in a test)."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        if multiproc_dir:
            # prometheus_client picks its value class when first imported; the server's parent
            # may have imported it before it created the directory, and its workers are forks.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
            reg: CollectorRegistry | None = None
        else:
            self._registry = CollectorRegistry()
            reg = self._registry
        self.requests = Counter(
            "tierstore_s3_requests", "S3 requests answered, by API and status class.", ["api", "status_class"],
            registry=reg,
        )  # fmt: skip
        self.errors = Counter(
            "tierstore_s3_errors", "Requests answered with an S3 error, by API and S3 error code.", ["api", "code"],
            registry=reg,
        )  # fmt: skip
        self.received = Counter(
            "tierstore_s3_received_bytes", "Request body bytes received, by API.", ["api"], registry=reg
        )
        self.sent = Counter("tierstore_s3_sent_bytes", "Response body bytes sent, by API.", ["api"], registry=reg)
        self.ttfb = Histogram(
            "tierstore_s3_ttfb_seconds", "Time from the request to the response headers, by API.", ["api"],
            buckets=_TTFB_BUCKETS, registry=reg,
        )  # fmt: skip
        self.duration = Histogram(
            "tierstore_s3_request_duration_seconds", "Time from the request to the last response byte, by API.",
            ["api"], buckets=_DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.inflight = Gauge(
            "tierstore_s3_requests_inflight", "Requests being answered now, by API.", ["api"],
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.batch_entries = Counter(
            "tierstore_batch_entries", "Entries (samples) served by batch reads, by outcome.", ["outcome"],
            registry=reg,
        )  # fmt: skip
        self.batch_bytes = Counter("tierstore_batch_bytes", "Object bytes served by batch reads.", registry=reg)
        self.lifecycle_actions = Counter(
            "tierstore_lifecycle_actions", "Lifecycle actions taken by the worker, by action.", ["action"], registry=reg
        )

        def heal(name: str, doc: str) -> Gauge:  # the worker running a pass sets them; max over live workers
            return Gauge(name, doc, ["kind"], multiprocess_mode="livemax", registry=reg)

        self.heal_running = heal("tierstore_heal_running", "1 while a heal/scrub pass runs, by kind.")
        self.heal_blobs_total = heal("tierstore_heal_blobs_total", "Blobs the running pass will visit.")
        self.heal_blobs_done = heal("tierstore_heal_blobs_done", "Blobs the running pass has visited.")
        self.heal_bytes_done = heal("tierstore_heal_bytes_done", "Bytes the running pass has read.")
        self._declare_worker_metrics(reg)
        self._followed: list[_Followed] = []
        self._backlog: _Refreshed[_BacklogCache] = _Refreshed("the shared backlog", BACKLOG_MIN_AGE_S)
        self._counts: dict[tuple[Any, ...], float] = {}  # (metric, *labels) -> not yet flushed
        self._by_api: dict[str, _Pending] = {}  # api -> what it counted since the flush
        self._inflight: dict[str, int] = {}
        self._inflight_flushed: dict[str, int] = {}
        self._usage: _Refreshed[_UsageCache] = _Refreshed("bucket usage", USAGE_MIN_AGE_S)
        self._heal_kinds: set[str] = set()

    def _declare_worker_metrics(self, reg: CollectorRegistry | None) -> None:
        """What the worker's parts count (read by ``follow``): per worker (a ``pid`` label across
        workers), or summed, or the largest of the live workers' (the cache's shared directory)."""

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=reg)

        def gauge(name: str, doc: str, mode: Any, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, multiprocess_mode=mode, registry=reg)

        self.pool_size = gauge("tierstore_catalog_pool_size", "Catalog connections at most, per worker.", "liveall")
        self.pool_in_use = gauge(
            "tierstore_catalog_pool_in_use", "Catalog connections checked out now, per worker.", "liveall"
        )
        self.pool_waits = counter(
            "tierstore_catalog_pool_waits", "Catalog checkouts that found every connection in use and waited."
        )
        self.pool_wait_seconds = counter(
            "tierstore_catalog_pool_wait_seconds", "Time those checkouts waited for a connection."
        )
        self.pool_timeouts = counter(
            "tierstore_catalog_pool_timeouts", "Catalog checkouts that timed out (answered 503 SlowDown)."
        )
        self.pool_errors = counter(
            "tierstore_catalog_unavailable_errors", "Catalog errors answered 503: PostgreSQL unreachable, timeouts."
        )
        self.listen_up = gauge(
            "tierstore_catalog_listen_up", "1 while the worker's LISTEN connection (config caches) is up.", "liveall"
        )
        self.listen_reconnects = counter(
            "tierstore_catalog_listen_reconnects", "LISTEN connections made again after one was lost."
        )
        self.jobs_held = gauge(
            "tierstore_lease_jobs_held", "Named jobs this gateway's workers hold a lease on now, by job.", "livesum",
            ("job",),
        )  # fmt: skip
        self.jobs_run = counter(
            "tierstore_lease_jobs_run", "Named jobs this gateway's workers took a lease on and ran."
        )
        self.cache_bytes = gauge(
            "tierstore_store_cache_bytes", "Bytes of the --store cache's files (as its workers count them).", "livemax"
        )
        self.cache_bound = gauge("tierstore_store_cache_bound_bytes", "The --store cache's bound.", "livemax")
        self.cache_hits = counter("tierstore_store_cache_hits", "Blob reads the --store cache answered.")
        self.cache_misses = counter("tierstore_store_cache_misses", "Blob reads that went to the store.")
        self.cache_fills = counter("tierstore_store_cache_fills", "Blobs written to the --store cache.")
        self.cache_evictions = counter("tierstore_store_cache_evictions", "Blobs evicted from the --store cache.")
        self.store_errors = counter(
            "tierstore_store_unavailable_errors", "Store operations that failed as unavailable (503 TierUnavailable)."
        )

    def follow(self, metric: Counter | Gauge, read: Callable[[], float | dict[str, float]]) -> None:
        """Write what ``read()`` reports to ``metric`` at each flush: a counter grows by what its
        reading grew (a plain total the part keeps); a gauge is set (per label value when ``read``
        answers a dict: a value missing from a later reading is set to 0)."""
        self._followed.append(_Followed(metric, read, {}))

    def _publish_followed(self) -> None:
        for f in self._followed:
            reading = f.read()
            now = reading if isinstance(reading, dict) else {"": reading}
            for label in f.last.keys() - now.keys():
                now[label] = 0.0
            for label, value in now.items():
                last = f.last.get(label)
                if last == value:
                    continue
                child = f.metric.labels(label) if label else f.metric
                if isinstance(child, Counter):
                    if value > (last or 0.0):
                        child.inc(value - (last or 0.0))
                else:
                    child.set(value)
                f.last[label] = value

    # --- per request (hot path): plain dict arithmetic, flushed to prometheus_client every second
    def started(self, api: str) -> None:
        self._inflight[api] = self._inflight.get(api, 0) + 1

    def finished(
        self,
        api: str,
        status: int,
        error_code: str,
        bytes_in: int,
        bytes_out: int,
        ttfb_s: float,
        total_s: float,
        inflight: bool = True,
    ) -> None:
        """Count one answered request; ``inflight``: ``started`` was called for it. Positional
        (the dispatcher calls it for every request: a call with keywords costs more)."""
        if inflight:
            self._inflight[api] -= 1
        if error_code:
            key = (self.errors, api, error_code)
            self._counts[key] = self._counts.get(key, 0) + 1
        # Everything else the API counted in one record, found with one lookup (no tuple keys
        # built and hashed per request: this runs for every request).
        pending = self._by_api.get(api)
        if pending is None:
            pending = self._by_api[api] = _Pending()
        pending.statuses[status // 100] += 1
        if bytes_in:
            pending.bytes_in += bytes_in
        if bytes_out:
            pending.bytes_out += bytes_out
        ttfb = pending.ttfb
        ttfb[bisect_left(_TTFB_BOUNDS, ttfb_s)] += 1
        ttfb[-1] += ttfb_s
        duration = pending.duration
        duration[bisect_left(_DURATION_BOUNDS, total_s)] += 1
        duration[-1] += total_s

    def batch_served(self, served: int, failed: int, size_bytes: int) -> None:
        counts = self._counts
        for key, n in (((self.batch_entries, "served"), served), ((self.batch_entries, "failed"), failed)):
            if n:
                counts[key] = counts.get(key, 0) + n
        counts[(self.batch_bytes,)] = counts.get((self.batch_bytes,), 0) + size_bytes

    def flush(self) -> None:
        """Move what this process counted since the last flush into prometheus_client (the
        shared files in multiprocess mode): one update per series, not per request."""
        counts, self._counts = self._counts, {}
        for (metric, *labels), n in counts.items():
            (metric.labels(*labels) if labels else metric).inc(n)
        by_api, self._by_api = self._by_api, {}
        for api, counted in by_api.items():
            for status_class, n in enumerate(counted.statuses):
                if n:
                    self.requests.labels(api, _STATUS_CLASS[status_class]).inc(n)
            if counted.bytes_in:
                self.received.labels(api).inc(counted.bytes_in)
            if counted.bytes_out:
                self.sent.labels(api).inc(counted.bytes_out)
            for histogram, pending in ((self.ttfb, counted.ttfb), (self.duration, counted.duration)):
                child = histogram.labels(api)
                # Histogram.observe() adds 1 to the first bucket whose bound holds the value (the
                # exposition makes them cumulative) and the value to the sum: the same, n at a time.
                for i, n in enumerate(pending[:-1]):
                    if n:
                        child._buckets[i].inc(n)
                child._sum.inc(pending[-1])
        for api, n in self._inflight.items():
            if self._inflight_flushed.get(api) != n:
                self.inflight.labels(api).set(n)
                self._inflight_flushed[api] = n
        self._publish_followed()

    # --- background: flushes, and this worker's heal/scrub progress for whichever worker is scraped
    def publish_heal(self, progress: HealProgress | None) -> None:
        running = progress is not None and progress.state == "running"
        for kind in self._heal_kinds:  # passes that ended: nothing running (the last report says how it went)
            for gauge in (self.heal_running, self.heal_blobs_total, self.heal_blobs_done, self.heal_bytes_done):
                gauge.labels(kind).set(0)
        if progress is None or not running:
            return
        self._heal_kinds.add(progress.kind)
        self.heal_running.labels(progress.kind).set(1)
        self.heal_blobs_total.labels(progress.kind).set(progress.blobs_total)
        self.heal_blobs_done.labels(progress.kind).set(progress.blobs_done)
        self.heal_bytes_done.labels(progress.kind).set(progress.bytes_done)

    async def run(self, admin: Repairer | None, on_tick: Callable[[], None] | None = None) -> None:
        """Every FLUSH_INTERVAL_S: ``on_tick`` (the access log's flush), and the metrics flush;
        every HEAL_PUBLISH_INTERVAL_S the heal progress. Cancel to stop (then call ``flush``)."""
        ticks = 0
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            ticks += 1
            try:
                if on_tick is not None:
                    on_tick()
                self.flush()
                if admin is not None and ticks % round(HEAL_PUBLISH_INTERVAL_S / FLUSH_INTERVAL_S) == 0:
                    self.publish_heal(admin.current)
            except Exception:
                log.exception("metrics flush failed")

    # --- scrape -------------------------------------------------------------------------------
    async def render(
        self, service: ObjectService, admin: Repairer | None, *, view: str = "tierstore", server: str = ""
    ) -> bytes:
        """The exposition text: ``view`` is ``tierstore`` (/metrics), ``minio-cluster`` or ``minio-bucket``."""
        self.flush()
        health = await asyncio.to_thread(admin.health) if admin is not None else None
        report = await asyncio.to_thread(admin.last_report) if admin is not None else None
        usage = await self._bucket_usage(service)
        registry = CollectorRegistry(auto_describe=False)
        if self.multiproc_dir:
            self._forget_dead_workers()
            MultiProcessCollector(registry, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
            source: Iterable[Metric] = list(registry.collect())
        else:
            source = list(self._registry.collect())
        backlog = await self._shared_backlog(service)
        families = [*source, *_store_families(health, usage, report), *_backlog_families(backlog)]
        families.extend(_tier_families(await service.tier_progress()))
        if view != "tierstore":
            families = list(_minio_families(families, server=server, bucket_only=view == "minio-bucket"))
        out = CollectorRegistry(auto_describe=False)
        out.register(_Fixed(families))
        return generate_latest(out)

    def lifecycle_acted(self, before: dict[str, int], after: dict[str, int]) -> None:
        """Count the lifecycle worker's actions of one pass (``after`` minus ``before``)."""
        for action, n in after.items():
            if n > before.get(action, 0):
                self.lifecycle_actions.labels(action).inc(n - before.get(action, 0))

    def _forget_dead_workers(self) -> None:
        """Drop the in-flight and heal gauges of workers that died (granian respawns them)."""
        assert self.multiproc_dir is not None
        dead: set[int] = set()
        for path in glob.glob(os.path.join(self.multiproc_dir, "gauge_live*.db")):
            m = _LIVE_GAUGE_FILE.search(path)
            if m is None:
                continue
            pid = int(m.group(1))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead.add(pid)
            except PermissionError:
                pass
        for pid in dead:
            mark_process_dead(pid, self.multiproc_dir)  # type: ignore[no-untyped-call]

    async def usage(self, service: ObjectService) -> _UsageCache | None:
        """The cached bucket usage (``GET /_tierstore/usage`` reads it; refreshed as for a scrape)."""
        return await self._bucket_usage(service)

    async def _bucket_usage(self, service: ObjectService) -> _UsageCache | None:
        """The cached usage, recomputed once older than USAGE_MIN_AGE_S (``_Refreshed``)."""
        return await self._usage.get(lambda: self._compute_usage(service))

    async def _shared_backlog(self, service: ObjectService) -> _BacklogCache | None:
        """The cached backlog, recomputed once older than BACKLOG_MIN_AGE_S (``_Refreshed``)."""
        return await self._backlog.get(lambda: self._compute_backlog(service))

    @staticmethod
    async def _compute_usage(service: ObjectService) -> _UsageCache:
        began = time.monotonic()
        buckets, total = await service.bucket_usage(USAGE_BUCKET_LIMIT), await service.bucket_count()
        return _UsageCache(buckets, total, time.monotonic(), time.monotonic() - began)

    @staticmethod
    async def _compute_backlog(service: ObjectService) -> _BacklogCache:
        began = time.monotonic()
        backlog = await service.backlog(BACKLOG_BOUND)
        return _BacklogCache(backlog, time.monotonic(), time.monotonic() - began)


class _Timed(Protocol):
    computed_at: float  # time.monotonic()
    took_s: float


_T = TypeVar("_T", bound=_Timed)


class _Refreshed(Generic[_T]):
    """A catalog-derived value computed in a task (never blocking requests) once it is older than
    ``min_age_s`` and than 1/USAGE_COST_SHARE times the last computation took. The first scrape
    waits for it; later ones answer from the cache while it refreshes."""

    def __init__(self, what: str, min_age_s: float) -> None:
        self.what = what
        self.min_age_s = min_age_s
        self.value: _T | None = None
        self._task: asyncio.Task[None] | None = None

    async def get(self, compute: Callable[[], Awaitable[_T]]) -> _T | None:
        cached = self.value
        if cached is not None and time.monotonic() - cached.computed_at < max(
            self.min_age_s, cached.took_s / USAGE_COST_SHARE
        ):
            return cached
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh(compute))
        if cached is None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
        return self.value

    async def _refresh(self, compute: Callable[[], Awaitable[_T]]) -> None:
        try:
            self.value = await compute()
        except Exception:
            log.exception("%s for metrics failed", self.what)


class _Fixed:
    """A collector that yields families already built."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _store_families(
    health: StoreHealth | None, usage: _UsageCache | None, report: dict[str, Any] | None
) -> Iterator[Metric]:
    if health is not None:
        state = _gauge("tierstore_drive_state", "1 for each drive's current state.", ["drive", "path", "state"])
        online = _gauge("tierstore_drive_online", "1 if the drive is online.", ["drive", "path"])
        total = _gauge("tierstore_drive_total_bytes", "Capacity of the drive's filesystem.", ["drive", "path"])
        free = _gauge("tierstore_drive_free_bytes", "Free bytes on the drive's filesystem.", ["drive", "path"])
        for d in health.drives:
            labels = [str(d.index), d.path]
            state.add_metric([*labels, d.state], 1)
            online.add_metric(labels, 1 if d.state == "online" else 0)
            if d.total_bytes is not None and d.free_bytes is not None:
                total.add_metric(labels, d.total_bytes)
                free.add_metric(labels, d.free_bytes)
        yield from (state, online, total, free)
        yield _single("tierstore_drives", "Drives in the set.", len(health.drives))
        yield _single("tierstore_drives_online", "Drives online now.", health.online)
        yield _single("tierstore_write_quorum", "Drives that must be online to write.", health.write_quorum)
        yield _single("tierstore_read_quorum", "Drives that must be online to read.", health.read_quorum)
        yield _single("tierstore_writable", "1 if a write quorum of drives is online.", int(health.writable))
        yield _single("tierstore_readable", "1 if a read quorum of drives is online.", int(health.readable))
    if usage is not None:
        yield _single("tierstore_buckets", "Buckets in the store.", usage.total_buckets)
        yield _single(
            "tierstore_bucket_usage_age_seconds", "How old the bucket usage figures are.",
            time.monotonic() - usage.computed_at,
        )  # fmt: skip
        yield _single("tierstore_bucket_usage_scan_seconds", "How long computing the bucket usage took.", usage.took_s)
        per_bucket = [
            ("tierstore_bucket_objects", "Current objects (not delete markers).", "objects"),
            ("tierstore_bucket_object_bytes", "Bytes of the current objects.", "object_bytes"),
            ("tierstore_bucket_versions", "Versions, delete markers included.", "versions"),
            ("tierstore_bucket_delete_markers", "Delete markers.", "delete_markers"),
            ("tierstore_bucket_stored_bytes", "Bytes of every version.", "stored_bytes"),
        ]
        for name, doc, attr in per_bucket:
            fam = _gauge(name, f"{doc} First {USAGE_BUCKET_LIMIT} buckets by name.", ["bucket"])
            for b in usage.buckets:
                fam.add_metric([b.bucket], getattr(b, attr))
            yield fam
    if report:
        finished = float(report.get("finished_s") or 0)
        info = _gauge("tierstore_heal_last_info", "The last finished heal/scrub pass.", ["kind", "state"])
        info.add_metric([str(report.get("kind", "")), str(report.get("state", ""))], 1)
        yield info
        yield _single("tierstore_heal_last_finished_timestamp_seconds", "When the last pass ended.", finished)
        yield _single(
            "tierstore_heal_last_duration_seconds", "How long the last pass took.",
            max(0.0, finished - float(report.get("started_s") or finished)),
        )  # fmt: skip
        blobs = _gauge("tierstore_heal_last_blobs", "Blobs of the last pass, by outcome.", ["outcome"])
        for outcome in ("healthy", "repaired", "degraded", "lost"):
            blobs.add_metric([outcome], int(report.get(f"blobs_{outcome}") or 0))
        yield blobs
        done, rebuilt = int(report.get("blobs_done") or 0), int(report.get("shards_rebuilt") or 0)
        yield _single("tierstore_heal_last_blobs_done", "Blobs the last pass visited.", done)
        yield _single("tierstore_heal_last_shards_rebuilt", "Shards the last pass rebuilt.", rebuilt)


def _backlog_families(cached: _BacklogCache | None) -> Iterator[Metric]:
    """The work every gateway shares (docs/observability.md "Cluster")."""
    if cached is None:
        return
    b, leases = cached.backlog, cached.backlog.leases
    yield _single("tierstore_lifecycle_due_rows", "Rows in the lifecycle due index.", b.lifecycle_due)
    yield _single("tierstore_gateways_live", "Gateway processes that heartbeat within a lease.", b.gateways)
    queue = _gauge(
        "tierstore_lease_backlog", f"Rows waiting in the leased queues (each counted up to {BACKLOG_BOUND}), by queue.",
        ["queue"],
    )  # fmt: skip
    queue.add_metric(["trash"], leases.trash)
    queue.add_metric(["outbox_due"], leases.outbox_due)
    yield queue
    expired = _gauge(
        "tierstore_lease_expired", "Leases that ran out unfinished (their holder died or stalled), by queue.",
        ["queue"],
    )  # fmt: skip
    expired.add_metric(["trash"], leases.trash_expired)
    expired.add_metric(["outbox"], leases.outbox_expired)
    expired.add_metric(["jobs"], leases.jobs_expired)
    yield expired
    yield _single(
        "tierstore_backlog_age_seconds", "How old the backlog figures are.", time.monotonic() - cached.computed_at
    )


def _tier_families(progress: dict[str, TierProgress]) -> Iterator[Metric]:
    """The movers' progress per tier, from the catalog (docs/tiers.md "The mover")."""
    moved_bytes = CounterMetricFamily("tierstore_tier_moved_bytes", "Bytes moved to the tier.", labels=["tier"])
    moved = CounterMetricFamily("tierstore_tier_moved_objects", "Versions moved to the tier.", labels=["tier"])
    errors = CounterMetricFamily("tierstore_tier_errors", "Failed moves to the tier.", labels=["tier"])
    backlog = _gauge(
        "tierstore_tier_backlog",
        "Work waiting for the tier: transitions due, writes that stayed local, remote deletes.",
        ["tier"],
    )
    for tier, p in progress.items():
        moved_bytes.add_metric([tier], p.moved_bytes)
        moved.add_metric([tier], p.moved_objects)
        errors.add_metric([tier], p.errors)
        backlog.add_metric([tier], p.backlog)
    yield from (moved_bytes, moved, errors, backlog)


def _single(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


# --- MinIO's v2 names ----------------------------------------------------------------------------
def _minio_metric(name: str, doc: str, typ: str) -> Metric:
    """A family exposed under exactly ``name``: counters not named ``*_total`` are untyped (as the
    Prometheus text format would otherwise rename them)."""
    if typ == "counter" and name.endswith("_total"):
        return Metric(name[: -len("_total")], doc, "counter")
    return Metric(name, doc, "gauge" if typ == "gauge" else "unknown")


def _minio_families(families: list[Metric], *, server: str, bucket_only: bool) -> Iterator[Metric]:
    """Translate tierstore's families to MinIO's v2 names (api names lower-cased, as MinIO's are;
    every sample carries ``server``) so MinIO's Grafana dashboards work unchanged."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in families:
        for s in fam.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))

    def metric(name: str, doc: str, typ: str, rows: Iterable[tuple[dict[str, str], float]]) -> Metric:
        out = _minio_metric(name, doc, typ)
        for labels, value in rows:
            out.add_sample(name, {**labels, "server": server}, value)
        return out

    def total(name: str) -> float:
        return sum(v for _, v in samples.get(name, []))

    def by_api(name: str, keep: Any = lambda labels: True) -> list[tuple[dict[str, str], float]]:
        sums: dict[str, float] = {}
        for labels, value in samples.get(name, []):
            if keep(labels):
                api = labels["api"].lower()
                sums[api] = sums.get(api, 0.0) + value
        return [({"api": api}, v) for api, v in sorted(sums.items())]

    def by_bucket(name: str) -> list[tuple[dict[str, str], float]]:
        return [({"bucket": labels["bucket"]}, v) for labels, v in samples.get(name, [])]

    yield metric("minio_bucket_usage_object_total", "Total number of objects.", "gauge",
                 by_bucket("tierstore_bucket_objects"))  # fmt: skip
    yield metric("minio_bucket_usage_version_total", "Total number of versions (includes delete marker).", "gauge",
                 by_bucket("tierstore_bucket_versions"))  # fmt: skip
    yield metric("minio_bucket_usage_deletemarker_total", "Total number of delete markers.", "gauge",
                 by_bucket("tierstore_bucket_delete_markers"))  # fmt: skip
    yield metric("minio_bucket_usage_total_bytes", "Total bucket size in bytes.", "gauge",
                 by_bucket("tierstore_bucket_stored_bytes"))  # fmt: skip
    if bucket_only:
        return
    requests = "tierstore_s3_requests_total"
    yield metric("minio_s3_requests_total", "Total number of S3 requests.", "counter", by_api(requests))
    yield metric("minio_s3_requests_errors_total", "Total number of S3 requests with (4xx and 5xx) errors.",
                 "counter", by_api(requests, lambda lb: lb["status_class"] in ("4xx", "5xx")))  # fmt: skip
    yield metric("minio_s3_requests_4xx_errors_total", "Total number of S3 requests with (4xx) errors.",
                 "counter", by_api(requests, lambda lb: lb["status_class"] == "4xx"))  # fmt: skip
    yield metric("minio_s3_requests_5xx_errors_total", "Total number of S3 requests with (5xx) errors.",
                 "counter", by_api(requests, lambda lb: lb["status_class"] == "5xx"))  # fmt: skip
    yield metric("minio_s3_requests_inflight_total", "Total number of S3 requests currently in flight.",
                 "gauge", by_api("tierstore_s3_requests_inflight"))  # fmt: skip
    yield metric("minio_s3_traffic_received_bytes", "Total number of s3 bytes received.", "counter",
                 [({}, total("tierstore_s3_received_bytes_total"))])  # fmt: skip
    yield metric("minio_s3_traffic_sent_bytes", "Total number of s3 bytes sent.", "counter",
                 [({}, total("tierstore_s3_sent_bytes_total"))])  # fmt: skip
    ttfb = [
        ({"api": labels["api"].lower(), "le": labels["le"]}, v)
        for labels, v in samples.get("tierstore_s3_ttfb_seconds_bucket", [])
    ]
    yield metric("minio_s3_requests_ttfb_seconds_distribution", "Distribution of the time to first byte across "
                 "API calls.", "gauge", ttfb)  # fmt: skip
    drives = samples.get("tierstore_drive_online", [])
    online = sum(v for _, v in drives)
    for scope in ("cluster", "node"):
        yield metric(f"minio_{scope}_drive_online_total", "Drives online.", "gauge", [({}, online)])
        yield metric(f"minio_{scope}_drive_offline_total", "Drives offline.", "gauge", [({}, len(drives) - online)])
        yield metric(f"minio_{scope}_drive_total", "Drives.", "gauge", [({}, len(drives))])
    free = {labels["path"]: v for labels, v in samples.get("tierstore_drive_free_bytes", [])}
    size = {labels["path"]: v for labels, v in samples.get("tierstore_drive_total_bytes", [])}
    yield metric("minio_node_drive_free_bytes", "Total storage available on a drive.", "gauge",
                 [({"drive": p}, v) for p, v in free.items()])  # fmt: skip
    yield metric("minio_node_drive_total_bytes", "Total storage on a drive.", "gauge",
                 [({"drive": p}, v) for p, v in size.items()])  # fmt: skip
    yield metric("minio_node_drive_used_bytes", "Total storage used on a drive.", "gauge",
                 [({"drive": p}, v - free.get(p, 0.0)) for p, v in size.items()])  # fmt: skip
    yield metric("minio_cluster_capacity_raw_total_bytes", "Total capacity online in the cluster.", "gauge",
                 [({}, sum(size.values()))])  # fmt: skip
    yield metric("minio_cluster_capacity_raw_free_bytes", "Total free capacity online in the cluster.", "gauge",
                 [({}, sum(free.values()))])  # fmt: skip
    quorum = samples.get("tierstore_write_quorum", [])
    yield metric("minio_cluster_write_quorum", "Maximum write quorum across all pools and sets.", "gauge", quorum)
    yield metric("minio_cluster_health_status", "Get current cluster health status.", "gauge",
                 samples.get("tierstore_writable", []))  # fmt: skip
    yield metric("minio_cluster_buckets_total", "Total number of buckets in the cluster.", "gauge",
                 samples.get("tierstore_buckets", []))  # fmt: skip
    for name, source in (
        ("minio_cluster_usage_object_total", "tierstore_bucket_objects"),
        ("minio_cluster_usage_version_total", "tierstore_bucket_versions"),
        ("minio_cluster_usage_deletemarker_total", "tierstore_bucket_delete_markers"),
        ("minio_cluster_usage_total_bytes", "tierstore_bucket_stored_bytes"),
    ):
        if source in samples:
            yield metric(name, f"Cluster total of {source}.", "gauge", [({}, total(source))])
    if "tierstore_heal_last_blobs_done" in samples:
        lost = [v for labels, v in samples.get("tierstore_heal_last_blobs", []) if labels["outcome"] == "lost"]
        repaired = [v for labels, v in samples.get("tierstore_heal_last_blobs", []) if labels["outcome"] == "repaired"]
        finished = total("tierstore_heal_last_finished_timestamp_seconds")
        yield metric("minio_heal_objects_total", "Objects scanned in the last self-healing run.", "gauge",
                     samples["tierstore_heal_last_blobs_done"])  # fmt: skip
        yield metric("minio_heal_objects_heal_total", "Objects healed in the last self-healing run.", "gauge",
                     [({}, sum(repaired))])  # fmt: skip
        yield metric("minio_heal_objects_errors_total", "Objects healing failed in the last self-healing run.",
                     "gauge", [({}, sum(lost))])  # fmt: skip
        yield metric("minio_heal_time_last_activity_nano_seconds", "Time since the last self-healing activity.",
                     "gauge", [({}, max(0.0, time.time() - finished) * 1e9)])  # fmt: skip
