"""The metadata query end to end: /_tierstore/query over real HTTP, the client, the CLI.

The language itself is tested exhaustively against a reference evaluator in
tests/catalog/test_query.py; here: that the index follows every write path, that errors are
clear S3 errors, and that the faces (client, CLI) work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess
from tests.s3http import signed_request
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings


def keys(client: TierstoreClient, bucket: str, q: str) -> list[str]:
    return [o["key"] for o in client.query_all(bucket, q)]


def put(s3: Any, bucket: str, key: str, **meta: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode(), Metadata=meta)


def test_query_follows_put_overwrite_delete_and_copy(s3: Any, bucket: str, client: TierstoreClient) -> None:
    put(s3, bucket, "a", dataset="imagenet@3", loss="0.5")
    put(s3, bucket, "b", dataset="imagenet@3", loss="0.25")
    put(s3, bucket, "c", dataset="coco@1", loss="0.1")
    assert keys(client, bucket, "meta.dataset = 'imagenet@3' ORDER BY meta.loss") == ["b", "a"]
    put(s3, bucket, "a", dataset="coco@1", loss="0.5")  # overwrite moves it out
    assert keys(client, bucket, "meta.dataset = 'imagenet@3'") == ["b"]
    s3.delete_object(Bucket=bucket, Key="b")
    assert keys(client, bucket, "meta.dataset = 'imagenet@3'") == []
    s3.copy_object(Bucket=bucket, Key="d", CopySource={"Bucket": bucket, "Key": "c"})
    assert keys(client, bucket, "meta.dataset = 'coco@1' ORDER BY key") == ["a", "c", "d"]
    s3.copy_object(
        Bucket=bucket,
        Key="d",
        CopySource={"Bucket": bucket, "Key": "c"},
        MetadataDirective="REPLACE",
        Metadata={"dataset": "kinetics@2"},
    )
    assert keys(client, bucket, "meta.dataset = 'kinetics@2'") == ["d"]


def test_query_sees_only_current_versions(s3: Any, bucket: str, client: TierstoreClient) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put(s3, bucket, "m", stage="old")
    put(s3, bucket, "m", stage="new")
    assert keys(client, bucket, "meta.stage = 'old'") == []
    assert keys(client, bucket, "meta.stage = 'new'") == ["m"]
    marker = s3.delete_object(Bucket=bucket, Key="m")["VersionId"]
    assert keys(client, bucket, "meta.stage IS NOT NULL") == []
    s3.delete_object(Bucket=bucket, Key="m", VersionId=marker)  # undelete
    assert keys(client, bucket, "meta.stage = 'new'") == ["m"]


def test_query_multipart_and_standard_fields(s3: Any, bucket: str, client: TierstoreClient) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="big.bin", ContentType="application/x-tar", Metadata={"k": "v"})
    part = s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=up["UploadId"], PartNumber=1, Body=b"z" * 1000)
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big.bin",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    put(s3, bucket, "small.txt")
    assert keys(client, bucket, "content_type = 'application/x-tar'") == ["big.bin"]
    assert keys(client, bucket, "size >= 1000") == ["big.bin"]
    assert keys(client, bucket, "meta.k = 'v' AND size = 1000") == ["big.bin"]
    (obj,) = client.query(bucket, "key = 'big.bin'").objects
    assert obj["size"] == 1000 and obj["meta"] == {"k": "v"} and obj["etag"].endswith('-1"')


def test_pagination_over_http(s3: Any, bucket: str, client: TierstoreClient) -> None:
    for i in range(25):
        put(s3, bucket, f"k{i:02d}", epoch=str(i % 5))
    pages = []
    cursor = None
    while True:
        page = client.query(bucket, "meta.epoch >= 1 ORDER BY meta.epoch DESC LIMIT 4", cursor=cursor)
        pages.append([o["key"] for o in page.objects])
        cursor = page.next_cursor
        if cursor is None:
            break
    flat = [k for p in pages for k in p]
    expected = sorted(
        (k for k in (f"k{i:02d}" for i in range(25)) if int(k[1:]) % 5 >= 1), key=lambda k: (-(int(k[1:]) % 5), k)
    )
    assert flat == expected
    assert all(len(p) == 4 for p in pages[:-1])


def test_bad_query_is_400_invalid_query_with_position(bucket: str, client: TierstoreClient) -> None:
    with pytest.raises(TierstoreClientError) as ei:
        client.query(bucket, "meta.loss < ")
    assert (ei.value.status, ei.value.code) == (400, "InvalidQuery")
    assert "column" in ei.value.message
    with pytest.raises(TierstoreClientError) as ei:
        client.query(bucket, "nosuchfield = 1")
    assert (ei.value.status, ei.value.code) == (400, "InvalidQuery")
    with pytest.raises(TierstoreClientError) as ei:
        client.query(bucket, "size > 1", cursor="not-a-cursor")
    assert (ei.value.status, ei.value.code) == (400, "InvalidQuery")


@pytest.mark.parametrize(
    "hostile",
    [
        "meta.x = ''; DROP TABLE versions; --'",
        "meta.x = 'a' OR 1=1",
        "tag.\"x\" = 1 OR meta.y = '\\' OR ''='",
        "meta.x = '\x00'",
        "key LIKE '%' UNION SELECT * FROM buckets",
    ],
)
def test_hostile_queries_never_reach_sql(s3: Any, bucket: str, client: TierstoreClient, hostile: str) -> None:
    put(s3, bucket, "kept", x="1")
    try:
        result = client.query(bucket, hostile).objects
    except TierstoreClientError as exc:
        assert exc.status == 400 and exc.code == "InvalidQuery"
    else:
        assert [o["key"] for o in result] in ([], ["kept"])
    # Nothing was dropped or changed.
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"kept"
    assert keys(client, bucket, "meta.x = '1'") == ["kept"]


def test_errors_are_s3_errors(server: ServerProcess, client: TierstoreClient) -> None:
    with pytest.raises(TierstoreClientError) as ei:
        client.query("no-such-bucket-here", "size > 0")
    assert (ei.value.status, ei.value.code) == (404, "NoSuchBucket")
    r = signed_request(server, "POST", "/_tierstore/query", b"not json")
    assert r.status == 400 and r.error()["Code"] == "InvalidRequest"
    r = signed_request(server, "GET", "/_tierstore/query")
    assert r.status == 405
    r = signed_request(server, "POST", "/_tierstore/nothing", b"{}")
    assert r.status == 501 and r.error()["Code"] == "NotImplemented"
    wrong = TierstoreClient(resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key="wrong" * 8))
    with pytest.raises(TierstoreClientError) as ei:
        wrong.query("any-bucket", "size > 0")
    assert (ei.value.status, ei.value.code) == (403, "SignatureDoesNotMatch")


def test_cli_query_table_and_json(server: ServerProcess, s3: Any, bucket: str) -> None:
    put(s3, bucket, "ckpt/1", loss="0.3", dataset="imagenet@3")
    put(s3, bucket, "ckpt/2", loss="0.2", dataset="imagenet@3")
    env = dict(
        os.environ, TIERSTORE_ENDPOINT=server.endpoint, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY
    )
    q = "meta.dataset = 'imagenet@3' ORDER BY meta.loss"
    run = [sys.executable, "-m", "tierstore", "query", bucket, q]
    out = subprocess.run(run, capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["LAST", "MODIFIED"]
    assert [ln.split()[3] for ln in lines[1:]] == ["ckpt/2", "ckpt/1"]
    assert "meta.loss=0.2" in lines[1]
    out = subprocess.run([*run, "--json"], capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["key"] for d in docs] == ["ckpt/2", "ckpt/1"]
    bad = subprocess.run([*run[:-1], "meta.loss <"], capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("tierstore query: InvalidQuery:") and "Traceback" not in bad.stderr
