"""Page 9, Health and metrics: drives and their state, capacity, request rate and latency,
heal and scrub, read from the same metrics Prometheus scrapes (``GET /_tierstore/admin/metrics``:
``Metrics.render``'s exposition text, parsed here) and ``/_tierstore/admin/info``; and the audit
log, filterable (``GET /_tierstore/admin/audit``). Each section is the session's principal's
request through the dispatcher (``tierstore:Admin``): one it may not read says "not allowed"."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families

from tierstore.console._admin import section
from tierstore.console._app import Reply, Web, route

__all__: list[str] = []

_AUDIT_FILTERS = ("principal", "action", "resource", "decision")
_TOP_APIS = 20


@dataclass
class ApiStats:
    api: str
    requests: float = 0.0
    errors_4xx: float = 0.0
    errors_5xx: float = 0.0
    rate: float | None = None  # requests per second since the previous view of this page
    mean_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)


@dataclass
class Summary:
    """What the page shows of the exposition text."""

    apis: list[ApiStats]
    total_requests: float
    total_rate: float | None
    rate_window_s: float | None
    inflight: float
    heal: list[dict[str, Any]]
    lifecycle_due: float | None
    buckets: float | None


# The previous view's request counters (per worker process): the rate is their difference over
# the time between two views, as Prometheus's rate() is over two scrapes.
_LAST: dict[str, Any] = {}
_LAST_LOCK = threading.Lock()


def summarize(text: str, now: float) -> Summary:
    stats: dict[str, ApiStats] = {}
    hist: dict[str, dict[float, float]] = defaultdict(dict)
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    heal: dict[str, dict[str, Any]] = defaultdict(dict)
    inflight = 0.0
    singles: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            api = s.labels.get("api", "")
            if s.name == "tierstore_s3_requests_total":
                st = stats.setdefault(api, ApiStats(api))
                st.requests += s.value
                if s.labels.get("status_class") == "4xx":
                    st.errors_4xx += s.value
                elif s.labels.get("status_class") == "5xx":
                    st.errors_5xx += s.value
            elif s.name == "tierstore_s3_request_duration_seconds_bucket":
                hist[api][float(s.labels["le"])] = s.value
            elif s.name == "tierstore_s3_request_duration_seconds_sum":
                sums[api] = s.value
            elif s.name == "tierstore_s3_request_duration_seconds_count":
                counts[api] = s.value
            elif s.name == "tierstore_s3_requests_inflight":
                inflight += s.value
            elif s.name.startswith("tierstore_heal_") and "kind" in s.labels and "_last_" not in s.name:
                heal[s.labels["kind"]][s.name.removeprefix("tierstore_heal_")] = s.value
            elif s.name in ("tierstore_lifecycle_due_rows", "tierstore_buckets"):
                singles[s.name] = s.value
    for api, st in stats.items():
        if counts.get(api):
            st.mean_ms = 1000 * sums.get(api, 0.0) / counts[api]
            st.buckets = sorted(hist.get(api, {}).items())
            st.p50_ms, st.p99_ms = _quantile(st.buckets, 0.5), _quantile(st.buckets, 0.99)
    with _LAST_LOCK:
        prev_at, prev = _LAST.get("at"), _LAST.get("requests", {})
        _LAST["at"], _LAST["requests"] = now, {a: st.requests for a, st in stats.items()}
    window = now - prev_at if prev_at is not None and now > prev_at else None
    total_rate = None
    if window:
        total_rate = 0.0
        for api, st in stats.items():
            st.rate = max(0.0, st.requests - prev.get(api, 0.0)) / window
            total_rate += st.rate
    apis = sorted(stats.values(), key=lambda st: -st.requests)[:_TOP_APIS]
    return Summary(
        apis=apis,
        total_requests=sum(st.requests for st in stats.values()),
        total_rate=total_rate,
        rate_window_s=window,
        inflight=inflight,
        heal=[{"kind": k, **v} for k, v in sorted(heal.items())],
        lifecycle_due=singles.get("tierstore_lifecycle_due_rows"),
        buckets=singles.get("tierstore_buckets"),
    )


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding quantile ``q`` (None: no requests;
    inf: above the largest bound), as ``histogram_quantile`` bounds it without interpolating."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    want = q * buckets[-1][1]
    for le, cumulative in buckets:
        if cumulative >= want:
            return le * 1000 if not math.isinf(le) else math.inf
    return math.inf


@route("GET", "health")
async def health(web: Web) -> Reply:
    info = await section(web.extension("GET", "/_tierstore/admin/info"))
    metrics = await section(web.extension("GET", "/_tierstore/admin/metrics", text=True))
    summary = summarize(metrics.data, time.monotonic()) if metrics.data is not None else None
    filters = {k: web.query.get(k, "").strip() for k in _AUDIT_FILTERS}
    query = urlencode({**{k: v for k, v in filters.items() if v}, "limit": "200"})
    audit = await section(web.extension("GET", "/_tierstore/admin/audit", query=query))
    drives = (info.data or {}).get("drives", [])
    total = sum(d.get("total_bytes") or 0 for d in drives)
    free = sum(d.get("free_bytes") or 0 for d in drives)
    return web.render(
        "health.html", page="health", title="Health and metrics", info=info, metrics=metrics, m=summary,
        capacity={"total": total, "free": free, "used": total - free}, audit=audit, filters=filters,
    )  # fmt: skip
