"""The object browser on a bucket of 100,000 keys: one delimiter page at a time, continuation
tokens to the last page (a file of its own: filling the bucket is the suite's longest wait for
the server, so ``LONG_FILES`` starts it first)."""

from __future__ import annotations

import http.client
import json
import threading
import uuid

import pytest

from tests.conftest import ServerProcess, make_client
from tests.console.conftest import sign_in


def _fill(server: ServerProcess, s3, bucket: str, n: int) -> None:  # type: ignore[no-untyped-def]
    """``n`` empty objects ``dNN/kNNNNNN`` through the S3 API, fast: unsigned PUTs from 16
    threads on kept-alive connections, under a bucket policy that lets anyone put (removed
    after): signing each with botocore would cost the test more than the server does."""
    allow = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(allow))
    failures: list[int] = []

    def work(first: int, step: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for i in range(first, n, step):
            conn.request("PUT", f"/{bucket}/d{i % 50:02d}/k{i:06d}", body=b"")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(resp.status)
        conn.close()

    threads = [threading.Thread(target=work, args=(t, 16)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s3.delete_bucket_policy(Bucket=bucket)
    assert not failures, failures[:5]


@pytest.mark.slow
@pytest.mark.timeout(900)  # 100,000 PUTs, then a browser: minutes on a loaded 2-core machine
def test_browse_a_bucket_of_100000_keys(page, server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    s3 = make_client(server.endpoint)
    bucket = f"big-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    _fill(server, s3, bucket, 100_000)
    s3.put_object(Bucket=bucket, Key="top.txt", Body=b"top")
    sign_in(page, server)
    page.goto(f"{server.endpoint}/console/browse/{bucket}")
    assert page.locator("#listing tr.folder").count() == 50  # d00/ .. d49/: one delimiter page
    assert page.locator("#listing tr.object a:text-is('top.txt')").count() == 1
    page.click("#listing a:text-is('d07/')")
    rows = page.locator("#listing tr.object td:first-child a")
    assert rows.count() == 200  # 2,000 keys under d07/: the first page of 200
    first = rows.all_inner_texts()
    assert first[0] == "k000007" and first[1] == "k000057"
    page.click("#next-page")
    second = page.locator("#listing tr.object td:first-child a").all_inner_texts()
    assert len(second) == 200 and second[0] == "k010007"  # continues where the first page ended
    for _ in range(9):  # pages 3..10 of d07/, and the last has no next link
        if page.locator("#next-page").count() == 0:
            break
        page.click("#next-page")
    assert page.locator("#next-page").count() == 0
    assert page.locator("#listing tr.object td:first-child a").last.inner_text() == "k099957"
