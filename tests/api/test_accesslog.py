"""The access log (api/_accesslog.py): JSON lines with the S3 API name; no secret in any log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.s3http import fetch, signed_request

FIELDS = {
    "time", "request_id", "remote", "access_key", "method", "api", "bucket", "key", "status", "error",
    "bytes_in", "bytes_out", "ttfb_s", "total_s", "user_agent", "decision", "policy",
}  # fmt: skip


def _lines(path: Path, want: int, bucket: str | None = None) -> list[dict[str, Any]]:
    """The log's lines once ``want`` of them (of ``bucket``'s requests, when given) are there: the
    server's readiness probes are logged too, and each worker writes its lines every 0.25 s."""
    deadline = time.monotonic() + 10
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines()]
        if sum(bucket is None or line["bucket"] == bucket for line in lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_access_log_to_a_file(tmp_path: Path) -> None:
    log_file = tmp_path / "access.jsonl"
    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "1", "--access-log-file", str(log_file)])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="logged")
        s3.put_object(Bucket="logged", Key="dir/a b", Body=b"12345")
        up = s3.create_multipart_upload(Bucket="logged", Key="mp")["UploadId"]
        etag = s3.upload_part(Bucket="logged", Key="mp", UploadId=up, PartNumber=1, Body=b"p" * 7)["ETag"]
        s3.complete_multipart_upload(
            Bucket="logged", Key="mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
        )
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "logged", "Key": "dir/a b"}, ExpiresIn=60)
        signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
        got = fetch(url)
        assert got.body == b"12345"
        missing = signed_request(srv, "GET", "/logged/missing")
        assert missing.status == 404
        lines = _lines(log_file, 7, bucket="logged")
    finally:
        srv.stop()

    by_id = {line["request_id"]: line for line in lines}
    assert all(set(line) == FIELDS for line in lines), lines[0]
    apis = [line["api"] for line in lines if line["bucket"] == "logged"]
    assert apis == [
        "CreateBucket", "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
        "GetObject", "GetObject",
    ]  # fmt: skip
    put = next(line for line in lines if line["api"] == "PutObject")
    assert (put["access_key"], put["bucket"], put["key"], put["status"], put["bytes_in"]) == (
        ACCESS_KEY, "logged", "dir/a b", 200, 5,
    )  # fmt: skip
    assert put["method"] == "PUT" and put["remote"] == "127.0.0.1" and put["user_agent"].startswith("Boto3/")
    assert (put["decision"], put["policy"]) == ("allow", "")  # the root
    assert 0 < put["ttfb_s"] <= put["total_s"]
    assert put["time"].endswith("Z") and put["time"][:4].isdigit()
    part = next(line for line in lines if line["api"] == "UploadPart")
    assert (part["key"], part["bytes_in"]) == ("mp", 7)
    presigned = by_id[got.headers["x-amz-request-id"]]
    assert (presigned["access_key"], presigned["bytes_out"], presigned["status"]) == (ACCESS_KEY, 5, 200)
    error = by_id[missing.headers["x-amz-request-id"]]
    assert (error["status"], error["error"], error["bytes_out"]) == (404, "NoSuchKey", len(missing.body))
    anonymous = next(line for line in lines if line["bucket"] == "" and line["api"] == "ListBuckets")
    assert (anonymous["access_key"], anonymous["error"]) == ("", "AccessDenied")  # the readiness probe of ServerProcess
    # Secrets and signatures are in no log: not the access log, not the server's own output.
    for text in (log_file.read_text(), srv.log_path.read_text()):
        assert SECRET_KEY not in text
        assert signature not in text
        assert "Signature=" not in text and "X-Amz-Credential" not in text


def test_no_access_log(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "1", "--no-access-log"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="quiet")
        assert s3.list_buckets()["Buckets"][0]["Name"] == "quiet"
    finally:
        srv.stop()
    assert '"api"' not in srv.log_path.read_text()


def test_access_line_escapes_repeated_client_strings_the_same_every_time() -> None:
    """The strings a client repeats (key id, bucket, User-Agent, policy) are escaped once and
    remembered: every line still parses to exactly what was sent, the cache stays bounded."""
    from tierstore.api import _accesslog
    from tierstore.api._accesslog import Exchange, access_line

    x = Exchange(lambda: None)  # type: ignore[arg-type,return-value]
    x.bytes_out = 7
    agents = ['ua "quoted" \\ é\n', "", None, "x" * 2000]
    for _ in range(2):
        for ua in agents:
            args = ("RID", "10.0.0.1", "GET", "AK", "GetObject", "b", "k\t", 206, "", 0.001, 0.002, ua)
            line = json.loads(access_line(x, *args, "allow", 'p"1:#0'))
            assert line["user_agent"] == (ua or "")[: _accesslog.MAX_LOGGED_CHARS]
            assert (line["access_key"], line["bucket"], line["key"], line["policy"]) == ("AK", "b", "k\t", 'p"1:#0')
            assert (line["status"], line["bytes_out"], line["ttfb_s"], line["total_s"]) == (206, 7, 0.001, 0.002)
    for i in range(3 * _accesslog._ESCAPED_MAX):
        access_line(x, "RID", "10.0.0.1", "GET", "AK", "GetObject", "b", "k", 200, "", 0, 0, f"ua-{i}")
    assert len(_accesslog._ESCAPED) <= _accesslog._ESCAPED_MAX


def test_iso_time_is_utc_to_the_millisecond_across_seconds() -> None:
    """``iso_time`` formats each second once and looks its milliseconds up: the text must be
    strftime's for every value, also when the second goes back (workers share no clock state)."""
    from tierstore.api._accesslog import iso_time

    for t in (1796614716.0, 1796614716.9994, 1796614717.0005, 1796614716.5, 1.25, 1796614799.999):
        seconds, millis = divmod(int(t * 1000), 1000)
        assert iso_time(t) == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
