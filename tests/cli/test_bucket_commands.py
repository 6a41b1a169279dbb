"""``tierstore mb``, ``rb [--force]`` and ``uploads ls|abort`` as real subprocesses against the
session server; the results checked through boto3."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.cli.test_client_commands import cli, ok, one_line_error, put_many
from tests.conftest import ServerProcess
from tierstore.cli._duration import parse_duration


@pytest.fixture
def name(s3: Any) -> Iterator[str]:
    """A bucket name the test creates (or not) itself; whatever is left of it goes afterwards."""
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    yield bucket
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True)
        s3.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchBucket"


def exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        return False
    return True


def test_mb_and_rb(server: ServerProcess, s3: Any, name: str) -> None:
    assert ok(cli(server, "mb", f"s3://{name}")) == f"make_bucket: {name}\n"
    assert exists(s3, name)
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    one_line_error(cli(server, "rb", f"s3://{name}"), "tierstore rb: BucketNotEmpty")
    assert exists(s3, name)
    s3.delete_object(Bucket=name, Key="k")
    assert ok(cli(server, "rb", f"s3://{name}/")) == f"remove_bucket: {name}\n"
    assert not exists(s3, name)

    one_line_error(cli(server, "rb", f"s3://{name}"), "tierstore rb: NoSuchBucket")
    one_line_error(cli(server, "mb", "s3://Not_A_Bucket"), "tierstore mb: InvalidBucketName")
    one_line_error(cli(server, "mb", f"s3://{name}/key"), "s3://BUCKET")
    one_line_error(cli(server, "mb", "not-a-uri"), "s3://BUCKET")


def test_rb_force_deletes_versions_markers_and_uploads(server: ServerProcess, s3: Any, name: str) -> None:
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    put_many(s3, name, [f"k/{i:04d}" for i in range(1000)])  # more than one listing page in all
    s3.put_object(Bucket=name, Key="k/0000", Body=b"second version")
    s3.delete_object(Bucket=name, Key="gone")  # a delete marker alone
    up = s3.create_multipart_upload(Bucket=name, Key="big")
    s3.upload_part(Bucket=name, Key="big", UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 1024)

    proc = cli(server, "rb", "--force", f"s3://{name}")
    assert ok(proc).splitlines() == [
        f"emptied {name}: 1,002 object versions and delete markers deleted, 1 uploads aborted",
        f"remove_bucket: {name}",
    ]
    assert not exists(s3, name)


def test_rb_force_keeps_a_bucket_with_locked_versions(server: ServerProcess, s3: Any, name: str) -> None:
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    s3.put_object(Bucket=name, Key="free", Body=b"1")
    until = "2099-01-01T00:00:00Z"
    s3.put_object(Bucket=name, Key="held", Body=b"2", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    one_line_error(cli(server, "rb", "--force", "-q", f"s3://{name}"), "could not be deleted", "held", "AccessDenied")
    assert exists(s3, name)
    assert [v["Key"] for v in s3.list_object_versions(Bucket=name)["Versions"]] == ["held"]


def test_uploads_ls_and_abort(server: ServerProcess, s3: Any, bucket: str) -> None:
    ids = {k: s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in ("p/a", "p/b", "q/c")}
    s3.upload_part(Bucket=bucket, Key="p/a", UploadId=ids["p/a"], PartNumber=1, Body=b"x" * 1000)

    lines = ok(cli(server, "uploads", "ls", f"s3://{bucket}")).splitlines()
    assert [line.split()[-2:] for line in lines] == [[ids[k], k] for k in ("p/a", "p/b", "q/c")]
    records = [json.loads(line) for line in ok(cli(server, "uploads", "ls", "--json", f"s3://{bucket}/p/")).splitlines()]
    assert [(r["key"], r["upload_id"]) for r in records] == [("p/a", ids["p/a"]), ("p/b", ids["p/b"])]
    assert all(r["initiated"].endswith("Z") for r in records)

    # none is an hour old; --older-than 0 takes every upload under the prefix, and only those
    assert ok(cli(server, "uploads", "abort", f"s3://{bucket}/p/", "--older-than", "1h")) == "aborted 0 uploads\n"
    out = ok(cli(server, "uploads", "abort", f"s3://{bucket}/p/", "--older-than", "0"))
    assert out.splitlines() == [
        f"abort: s3://{bucket}/p/a {ids['p/a']}",
        f"abort: s3://{bucket}/p/b {ids['p/b']}",
        "aborted 2 uploads",
    ]
    left = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in left] == [("q/c", ids["q/c"])]
    assert ok(cli(server, "uploads", "ls", f"s3://{bucket}/p/")) == ""

    bad = cli(server, "uploads", "abort", f"s3://{bucket}", "--older-than", "7 days")
    assert bad.returncode == 2 and "bad duration '7 days'" in bad.stderr and "Traceback" not in bad.stderr  # usage
    one_line_error(cli(server, "uploads", "ls", "s3://no-such-bucket-uploads"), "tierstore uploads ls: NoSuchBucket")


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("90", "2s", "0.5s", "30m", "12h", "7d", "1w", "0")] == [
        90.0, 2.0, 0.5, 1800.0, 43_200.0, 604_800.0, 604_800.0, 0.0,
    ]  # fmt: skip
    for bad in ("", "-1s", "7 days", "1y", "h"):
        with pytest.raises(ValueError, match="bad duration"):
            parse_duration(bad)
