"""What an operator watches on a cluster (docs/observability.md "Cluster"): a gateway of the
session's two (PostgreSQL + SeaweedFS as ``--store``) scraped after some traffic."""

from __future__ import annotations

import uuid

from tests.api.test_metrics import Samples, scrape, scrape_until, value
from tests.conftest import Gateways, make_client


def test_a_gateway_reports_its_pool_listener_cache_and_the_shared_backlog(two_gateways: Gateways) -> None:
    gw = two_gateways.a
    s3 = make_client(gw.endpoint)
    bucket = f"cm-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    body = b"c" * (64 * 1024)  # above the inline bound: a blob in the store
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    before = scrape(gw)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body  # a miss: the store, filling the cache
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body  # a hit

    def moved(samples: Samples) -> bool:  # counts reach the shared files within a flush; the jobs run at start
        hits = value(samples, "tierstore_store_cache_hits_total") > value(before, "tierstore_store_cache_hits_total")
        return hits and value(samples, "tierstore_lease_jobs_run_total") >= 1

    after = scrape_until(gw, moved)
    for name in ("hits", "misses", "fills"):
        full = f"tierstore_store_cache_{name}_total"
        assert value(after, full) >= value(before, full) + 1, name
    assert value(after, "tierstore_store_cache_bytes") >= len(body)
    assert value(after, "tierstore_store_cache_bound_bytes") >= value(after, "tierstore_store_cache_bytes")
    assert ("tierstore_store_cache_evictions_total", frozenset()) in after
    assert value(after, "tierstore_store_unavailable_errors_total") == 0  # SeaweedFS is up

    # The catalog pool of the gateway's one worker (a pid label per worker) and its LISTEN connection.
    sizes = [v for (n, _), v in after.items() if n == "tierstore_catalog_pool_size"]
    assert sizes and all(v >= 1 for v in sizes)
    assert 0 <= value(after, "tierstore_catalog_pool_in_use") <= sum(sizes)
    for name in ("waits", "wait_seconds", "timeouts"):
        assert value(after, f"tierstore_catalog_pool_{name}_total") >= 0
        assert any(n == f"tierstore_catalog_pool_{name}_total" for n, _ in after), name
    assert value(after, "tierstore_catalog_unavailable_errors_total") == 0
    assert value(after, "tierstore_catalog_listen_up") == 1
    assert ("tierstore_catalog_listen_reconnects_total", frozenset()) in after

    # The shared work: both gateways heartbeat; the queues and expired leases are counted.
    assert value(after, "tierstore_gateways_live") == 2
    for queue in ("trash", "outbox_due"):
        assert ("tierstore_lease_backlog", frozenset({("queue", queue)})) in after, queue
    for queue in ("trash", "outbox", "jobs"):
        assert value(after, "tierstore_lease_expired", queue=queue) >= 0
        assert ("tierstore_lease_expired", frozenset({("queue", queue)})) in after, queue
    assert ("tierstore_lifecycle_due_rows", frozenset()) in after
    assert value(after, "tierstore_lease_jobs_run_total") >= 1  # the store's orphan sweep, at start
