"""``tierstore serve --stale-uploads-expiry``: the server aborts multipart uploads older than the
expiry by itself (every worker runs the pass; the catalog gives each upload to one of them), and
their parts' space is freed."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import ServerProcess, make_client


def _blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def test_stale_uploads_are_aborted_and_their_space_freed(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_args=["--stale-uploads-expiry", "4s", "--workers", "2"])
    srv.start()
    try:
        s3 = make_client(srv.endpoint)
        s3.create_bucket(Bucket="uploads")
        old = s3.create_multipart_upload(Bucket="uploads", Key="abandoned")["UploadId"]
        s3.upload_part(Bucket="uploads", Key="abandoned", UploadId=old, PartNumber=1, Body=b"a" * (1 << 20))
        assert len(_blob_files(srv.data_dir)) == 1  # the part, on disk

        deadline = time.monotonic() + 60
        while s3.list_multipart_uploads(Bucket="uploads").get("Uploads") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert s3.list_multipart_uploads(Bucket="uploads").get("Uploads") is None, "the stale upload was not aborted"
        while _blob_files(srv.data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _blob_files(srv.data_dir) == [], "the aborted upload's part still holds disk"

        # a fresh upload is left alone, and the aborted one is gone for S3 clients too
        fresh = s3.create_multipart_upload(Bucket="uploads", Key="fresh")["UploadId"]
        assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="uploads")["Uploads"]] == [fresh]
        try:
            s3.list_parts(Bucket="uploads", Key="abandoned", UploadId=old)
        except s3.exceptions.NoSuchUpload as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        else:
            raise AssertionError("ListParts of an aborted upload answered")
    finally:
        srv.stop()
    log = srv.log()
    assert "stale upload pass failed" not in log
    assert log.count(f"aborted stale upload {old}") == 1, log  # by one of the two workers
