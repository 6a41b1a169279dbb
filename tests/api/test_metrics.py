"""Prometheus metrics (api/_metrics.py), scraped with Prometheus's own text parser."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, make_client
from tests.s3http import assert_error, send, signed_request
from tierstore.api._metrics import FLUSH_INTERVAL_S

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: ServerProcess, path: str = "/metrics", token: str | None = None) -> Samples:
    headers = {"Host": f"127.0.0.1:{server.port}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    r = send(server.port, "GET", path, headers)
    assert r.status == 200, r.body[:300]
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def settled(server: ServerProcess) -> Samples:
    """A scrape once every worker has flushed what earlier tests did (each worker counts in
    memory and flushes every FLUSH_INTERVAL_S): two scrapes a few flushes apart agree."""
    deadline = time.monotonic() + 20
    last = scrape(server)
    while True:
        time.sleep(3 * FLUSH_INTERVAL_S)
        now = scrape(server)
        if value(now, "tierstore_s3_ttfb_seconds_count") == value(last, "tierstore_s3_ttfb_seconds_count"):
            return now
        assert time.monotonic() < deadline, "the request counters never settled"
        last = now


def scrape_until(
    server: ServerProcess, done: Callable[[Samples], bool], path: str = "/metrics", token: str | None = None
) -> Samples:
    """Scrape until ``done`` (the other workers' counts arrive within FLUSH_INTERVAL_S)."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(server, path, token)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample summed over the labels not given (0 when absent)."""
    want = set(labels.items())
    return sum(v for (n, lb), v in samples.items() if n == name and want <= lb)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_request_counters_move(server: ServerProcess, bucket: str) -> None:
    body = b"m" * 1234
    before = settled(server)
    for i in range(3):
        assert signed_request(server, "PUT", f"/{bucket}/k{i}", body).status == 200
    got = signed_request(server, "GET", f"/{bucket}/k0")
    assert got.body == body
    missing = signed_request(server, "GET", f"/{bucket}/nope")
    assert_error(missing, 404, "NoSuchKey")
    after = scrape_until(
        server,
        # Each worker flushes its counters and histograms every FLUSH_INTERVAL_S, not together:
        # wait for every family this test checks.
        lambda m: delta(before, m, "tierstore_s3_requests_total", api="PutObject") >= 3
        and delta(before, m, "tierstore_s3_requests_total", api="GetObject") >= 2
        and delta(before, m, "tierstore_s3_ttfb_seconds_count", api="GetObject") >= 2
        and delta(before, m, "tierstore_s3_request_duration_seconds_count", api="PutObject") >= 3
        and delta(before, m, "tierstore_s3_sent_bytes_total", api="GetObject") >= len(body) + len(missing.body)
        and delta(before, m, "tierstore_s3_received_bytes_total", api="PutObject") >= 3 * len(body),
    )

    assert delta(before, after, "tierstore_s3_requests_total", api="PutObject", status_class="2xx") == 3
    assert delta(before, after, "tierstore_s3_requests_total", api="GetObject", status_class="2xx") == 1
    assert delta(before, after, "tierstore_s3_requests_total", api="GetObject", status_class="4xx") == 1
    assert delta(before, after, "tierstore_s3_errors_total", api="GetObject", code="NoSuchKey") == 1
    assert delta(before, after, "tierstore_s3_received_bytes_total", api="PutObject") == 3 * len(body)
    assert delta(before, after, "tierstore_s3_sent_bytes_total", api="GetObject") == len(body) + len(missing.body)
    assert delta(before, after, "tierstore_s3_ttfb_seconds_count", api="GetObject") == 2
    assert delta(before, after, "tierstore_s3_request_duration_seconds_count", api="PutObject") == 3
    le_inf = delta(before, after, "tierstore_s3_request_duration_seconds_bucket", api="PutObject", le="+Inf")
    assert le_inf == 3
    assert value(after, "tierstore_s3_requests_inflight", api="PutObject") == 0
    # Scrapes and probes are not S3 requests: they are not counted.
    assert not any(n == "tierstore_s3_requests_total" and ("api", "tierstore:Metrics") in lb for n, lb in after)
    # The store as it is now
    assert value(after, "tierstore_drive_online") == 1
    assert value(after, "tierstore_drive_free_bytes") > 0
    assert value(after, "tierstore_writable") == 1


def test_batch_reads_are_counted(server: ServerProcess, bucket: str) -> None:
    for key, data in (("a", b"1" * 100), ("b", b"2" * 50)):
        assert signed_request(server, "PUT", f"/{bucket}/{key}", data).status == 200
    entries = [{"bucket": bucket, "key": k} for k in ("a", "b", "missing")]
    before = settled(server)
    r = signed_request(server, "POST", "/_tierstore/batch", json.dumps({"entries": entries}).encode())
    assert r.status == 200
    after = scrape_until(server, lambda m: delta(before, m, "tierstore_batch_bytes_total") > 0)
    assert delta(before, after, "tierstore_batch_entries_total", outcome="served") == 2
    assert delta(before, after, "tierstore_batch_entries_total", outcome="failed") == 1
    assert delta(before, after, "tierstore_batch_bytes_total") == 150
    assert delta(before, after, "tierstore_s3_requests_total", api="tierstore:Batch") == 1


def test_token_workers_usage_and_minio_names(tmp_path: Path) -> None:
    """Two workers, one set of counters: 20 PUTs on 20 connections (both workers serve some)
    are 20 in any worker's scrape. The bearer token is enforced; bucket usage is computed from
    the catalog when scraped; MinIO's v2 names carry the same numbers."""
    token = uuid.uuid4().hex
    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "2", "--metrics-token", token])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="usage")
        for i in range(20):
            assert signed_request(srv, "PUT", f"/usage/k{i:02d}", b"x" * (i + 1)).status == 200
        signed_request(srv, "DELETE", "/usage/k00")
        heal = signed_request(srv, "POST", "/_tierstore/admin/heal", b"")  # leaves a heal report
        assert heal.status == 200 and b'"state": "done"' in heal.body.splitlines()[-1]

        for path in ("/metrics", "/minio/v2/metrics/cluster", "/minio/v2/metrics/node", "/minio/v2/metrics/bucket"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                r = send(srv.port, "GET", path, {"Host": f"127.0.0.1:{srv.port}", **headers})
                assert_error(r, 403, "AccessDenied")
                assert token.encode() not in r.body

        def all_counted(m: Samples) -> bool:
            return value(m, "tierstore_s3_requests_total", api="PutObject", status_class="2xx") >= 20

        scrape_until(srv, all_counted, token=token)
        for _ in range(6):  # both workers answer scrapes with the same sums
            m = scrape(srv, token=token)
            assert value(m, "tierstore_s3_requests_total", api="PutObject", status_class="2xx") == 20
            assert value(m, "tierstore_s3_received_bytes_total", api="PutObject") == sum(range(1, 21))
            assert value(m, "tierstore_s3_requests_total", api="DeleteObject") == 1
            assert value(m, "tierstore_bucket_objects", bucket="usage") == 19
            assert value(m, "tierstore_bucket_object_bytes", bucket="usage") == sum(range(2, 21))
            assert value(m, "tierstore_bucket_versions", bucket="usage") == 19
            assert value(m, "tierstore_buckets") == 1
            assert value(m, "tierstore_heal_last_info", state="done") == 1
            assert value(m, "tierstore_heal_last_blobs_done") >= 0

        cluster = scrape(srv, "/minio/v2/metrics/cluster", token=token)
        assert value(cluster, "minio_s3_requests_total", api="putobject") == 20
        assert value(cluster, "minio_s3_requests_errors_total") == value(
            cluster, "minio_s3_requests_4xx_errors_total"
        ) + value(cluster, "minio_s3_requests_5xx_errors_total")
        assert value(cluster, "minio_s3_traffic_received_bytes") == sum(range(1, 21))
        assert value(cluster, "minio_s3_requests_ttfb_seconds_distribution", api="putobject", le="+Inf") == 20
        assert value(cluster, "minio_node_drive_total_bytes") > value(cluster, "minio_node_drive_free_bytes") > 0
        assert value(cluster, "minio_cluster_drive_online_total") == 1
        assert value(cluster, "minio_bucket_usage_object_total", bucket="usage") == 19
        assert value(cluster, "minio_cluster_usage_object_total") == 19
        assert all(("server", f"127.0.0.1:{srv.port}") in lb for _, lb in cluster)
        node = scrape(srv, "/minio/v2/metrics/node", token=token)
        assert value(node, "minio_node_drive_online_total") == 1
        bucket = scrape(srv, "/minio/v2/metrics/bucket", token=token)
        assert value(bucket, "minio_bucket_usage_total_bytes", bucket="usage") == sum(range(2, 21))
        assert not any(n.startswith("minio_s3_") for n, _ in bucket)
        workers = set(Path(f"/proc/{srv.pid}/task/{srv.pid}/children").read_text().split())
        assert len(workers) == 2
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_s3_unaffected_by_metrics_paths(server: ServerProcess, s3: Any) -> None:
    """A bucket named ``metrics`` lists normally through a signed request."""
    s3.create_bucket(Bucket="metrics")
    try:
        s3.put_object(Bucket="metrics", Key="x", Body=b"1")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="metrics")["Contents"]] == ["x"]
        assert b"tierstore_s3_requests_total" in send(server.port, "GET", "/metrics", {"Host": "x"}).body
    finally:
        s3.delete_object(Bucket="metrics", Key="x")
        s3.delete_bucket(Bucket="metrics")
