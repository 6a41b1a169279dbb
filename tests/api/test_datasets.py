"""Datasets over HTTP (docs/datasets.md): create from a prefix, a query or explicit rows; list,
show, manifest, delete; batched reads by manifest row through the bytes the dataset pinned —
which stay readable after their keys are overwritten or deleted — and the errors of each call.
Both sample sources (``RemoteSource`` over HTTP, ``EmbeddedSource`` in-process) read the same bytes.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tests.s3http import signed_request
from tierstore.client import TierstoreClient, TierstoreClientError
from tierstore.datasets import DatasetReadError, DatasetRef, EmbeddedSource, Manifest, RemoteSource

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)

# Sizes on both sides of the inline limit (16 KiB) and one stored in several blob pieces.
SIZES = [0, 1, 700, 16 * 1024, 16 * 1024 + 1, 90_000, 3 * 1024 * 1024 + 5]




@pytest.fixture
def name() -> str:
    return f"ds-{uuid.uuid4().hex[:12]}"


def _fill(s3: Any, bucket: str, rng: random.Random, prefix: str = "train/") -> dict[str, bytes]:
    bodies = {}
    for i, size in enumerate(SIZES):
        key = f"{prefix}{'cat' if i % 2 else 'dog'}/{i:03d}.bin"
        bodies[key] = rng.randbytes(size)
        s3.put_object(Bucket=bucket, Key=key, Body=bodies[key], Metadata={"label": str(i % 3), "split": "a"})
    s3.put_object(Bucket=bucket, Key="other/x.bin", Body=b"not in the prefix")
    return bodies


@pytest.mark.sqlite_catalog  # reads through EmbeddedSource (the data dir's own catalog) too
def test_create_from_prefix_and_read_rows(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str, rng: random.Random
) -> None:
    bodies = _fill(s3, bucket, rng)
    rec = client.create_dataset(name, bucket=bucket, prefix="train/", label="dir", columns=["meta:split"])
    assert rec["ref"] == f"{name}@1" and rec["version"] == 1
    assert rec["rows"] == len(bodies) and rec["bytes"] == sum(map(len, bodies.values()))
    assert rec["source"] == {"bucket": bucket, "prefix": "train/"}

    source = RemoteSource(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    manifest = source.open_manifest(name)  # the latest version
    assert manifest.ref == DatasetRef(name, 1) and len(manifest) == len(bodies)
    assert manifest.column("key") == sorted(bodies)
    assert manifest.column("label") == [k.split("/")[1] for k in sorted(bodies)]  # label="dir"
    assert manifest.column("meta.split") == ["a"] * len(SIZES)
    assert manifest.column("size") == [len(bodies[k]) for k in sorted(bodies)]
    heads = [s3.head_object(Bucket=bucket, Key=k) for k in sorted(bodies)]
    assert manifest.column("etag") == [h["ETag"] for h in heads]  # quoted, as S3 lists them

    keys = manifest.column("key")
    order = list(range(len(keys))) * 2
    rng.shuffle(order)
    got = list(source.read_rows(manifest.ref, order))
    assert [pos for pos, _ in got] == list(range(len(order)))
    for (_, data), row in zip(got, order, strict=True):
        assert data == bodies[keys[row]], keys[row]

    # The same rows in-process, beside the running server.
    embedded = EmbeddedSource(server.data_dir)
    try:
        assert embedded.open_manifest(f"{name}@1").column("key") == keys
        assert [d for _, d in embedded.read_rows(manifest.ref, order)] == [d for _, d in got]
    finally:
        embedded.close()


def test_versions_list_show_and_manifest_file(
    s3: Any, bucket: str, client: TierstoreClient, name: str, rng: random.Random
) -> None:
    _fill(s3, bucket, rng)
    first = client.create_dataset(name, bucket=bucket, prefix="train/")
    s3.put_object(Bucket=bucket, Key="train/dog/999.bin", Body=b"one more")
    second = client.create_dataset(name, bucket=bucket, prefix="train/", lineage={"note": "added one"})
    assert (first["version"], second["version"]) == (1, 2)
    assert second["rows"] == first["rows"] + 1
    assert [d["ref"] for d in client.list_datasets(name)] == [f"{name}@1", f"{name}@2"]
    assert f"{name}@2" in [d["ref"] for d in client.list_datasets()]
    assert client.dataset_info(name)["ref"] == f"{name}@2"
    assert client.dataset_info(f"{name}@1")["rows"] == first["rows"]
    assert client.dataset_info(f"{name}@2")["lineage"] == {"note": "added one"}
    manifest = Manifest.from_parquet(client.dataset_manifest(f"{name}@1"))
    assert manifest.info["name"] == name and manifest.info["version"] == 1
    assert len(manifest) == first["rows"]


def test_pinned_bytes_survive_overwrite_and_delete(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str, rng: random.Random
) -> None:
    bodies = _fill(s3, bucket, rng)
    client.create_dataset(name, bucket=bucket, prefix="train/")
    keys = sorted(bodies)
    for i, key in enumerate(keys):  # an unversioned bucket: the old bytes have no version left
        if i % 2:
            s3.put_object(Bucket=bucket, Key=key, Body=b"overwritten")
        else:
            s3.delete_object(Bucket=bucket, Key=key)
    assert s3.get_object(Bucket=bucket, Key=keys[1])["Body"].read() == b"overwritten"
    source = RemoteSource(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    ref = DatasetRef(name, 1)
    got = [d for _, d in source.read_rows(ref, range(len(keys)))]
    assert got == [bodies[k] for k in keys]

    # Deleting the dataset releases the pins: the replaced bytes are collected.
    before = _counts(server)
    client.delete_dataset(f"{name}@1")
    after = _counts(server)
    inline_only_pinned = sum(1 for k in keys if len(bodies[k]) <= 16 * 1024)  # empty bodies too
    assert before["inline"] - after["inline"] == inline_only_pinned
    assert after["blobs"] < before["blobs"]
    with pytest.raises(TierstoreClientError) as info:
        client.dataset_info(f"{name}@1")
    assert (info.value.status, info.value.code) == (404, "NoSuchDataset")
    with pytest.raises(DatasetReadError) as read_info:
        list(source.read_rows(ref, [0]))
    assert read_info.value.status == 404


def _counts(server: ServerProcess) -> dict[str, int]:
    """Rows of the catalog (SQLite's file or PostgreSQL's database): inline bodies, blobs."""
    (row,) = server.catalog_sql("SELECT (SELECT count(*) FROM inline_blobs), (SELECT count(*) FROM blobs)")
    return {"inline": int(row[0]), "blobs": int(row[1])}


def test_versioned_bucket_pins_a_version_not_the_key(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str
) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["VersionId"]
    client.create_dataset(name, bucket=bucket, prefix="k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second")
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v1)  # even the pinned version is deleted
    source = RemoteSource(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    manifest = source.open_manifest(f"{name}@1")
    assert manifest.column("version_id") == [v1]
    assert [d for _, d in source.read_rows(manifest.ref, [0])] == [b"first"]
    client.delete_dataset(f"{name}@1")


def test_create_from_query_with_label(s3: Any, bucket: str, client: TierstoreClient, name: str) -> None:
    for i in range(10):
        s3.put_object(Bucket=bucket, Key=f"img/{i}", Body=bytes([i]) * 10, Metadata={"label": str(i % 2)})
    rec = client.create_dataset(name, bucket=bucket, query="meta.label = '1'", label="meta:label")
    assert rec["rows"] == 5 and rec["source"] == {"bucket": bucket, "query": "meta.label = '1'"}
    manifest = Manifest.from_parquet(client.dataset_manifest(rec["ref"]))
    assert sorted(manifest.column("key")) == [f"img/{i}" for i in range(1, 10, 2)]
    assert manifest.column("label") == ["1"] * 5


def test_create_from_rows_with_ranges(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str
) -> None:
    shard = b"".join(bytes([65 + i]) * (100 + i) for i in range(5))
    s3.put_object(Bucket=bucket, Key="shard-0.tar", Body=shard)
    rows, offset = [], 0
    for i in range(5):
        rows.append({"bucket": bucket, "key": "shard-0.tar", "offset": offset, "size": 100 + i,
                     "member": f"s{i}.bin", "label": str(i)})  # fmt: skip
        offset += 100 + i
    rec = client.create_dataset(name, rows=rows, lineage={"source": "x@1", "transform": "m:f"})
    assert rec["rows"] == 5 and rec["bytes"] == len(shard) and rec["lineage"]["transform"] == "m:f"
    source = RemoteSource(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    manifest = source.open_manifest(rec["ref"])
    assert manifest.column("member") == [f"s{i}.bin" for i in range(5)]
    got = [d for _, d in source.read_rows(manifest.ref, [4, 0, 2])]
    assert got == [bytes([69]) * 104, bytes([65]) * 100, bytes([67]) * 102]

    bad = [{**rows[0], "size": len(shard) + 1}]
    with pytest.raises(TierstoreClientError) as info:
        client.create_dataset(name, rows=bad)
    assert (info.value.status, info.value.code) == (400, "InvalidRequest")
    with pytest.raises(TierstoreClientError) as info:
        client.create_dataset(name, rows=[{"bucket": bucket, "key": "nope"}])
    assert info.value.status == 400 and "nope" in info.value.message


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ({"name": "bad name!", "bucket": "b", "prefix": ""}, "InvalidArgument"),
        ({"name": "x"}, "InvalidRequest"),  # no source
        ({"name": "x", "bucket": "b", "prefix": "", "query": "meta.a = '1'"}, "InvalidRequest"),
        ({"name": "x", "prefix": ""}, "InvalidRequest"),  # no bucket
        ({"name": "x@3", "bucket": "b", "prefix": ""}, "InvalidRequest"),  # versions are numbered by the store
        ({"name": "x", "bucket": "b", "prefix": "", "label": "size"}, "InvalidRequest"),
        ({"name": "x", "bucket": "b", "prefix": "", "columns": "meta:a"}, "InvalidRequest"),
        ({"name": "x", "rows": [7]}, "InvalidRequest"),
        ({"name": "x", "bucket": "no-such-bucket-zz", "prefix": ""}, "NoSuchBucket"),
    ],
)
def test_bad_create_requests(server: ServerProcess, doc: dict[str, Any], code: str) -> None:
    resp = signed_request(server, "POST", "/_tierstore/datasets", body=json.dumps(doc).encode())
    assert resp.status in (400, 404), resp.body
    assert f"<Code>{code}</Code>".encode() in resp.body


def test_bad_reads_and_routes(s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"A")
    client.create_dataset(name, bucket=bucket, prefix="a")
    cases = [
        ("POST", "/_tierstore/batch", {"dataset": f"{name}@1", "rows": [1]}, 400, "InvalidRequest"),  # out of range
        ("POST", "/_tierstore/batch", {"dataset": f"{name}@1", "rows": ["0"]}, 400, "InvalidRequest"),
        ("POST", "/_tierstore/batch", {"dataset": name, "rows": [0]}, 400, "InvalidRequest"),  # no version
        ("POST", "/_tierstore/batch", {"dataset": f"{name}@9", "rows": [0]}, 404, "NoSuchDataset"),
        ("POST", "/_tierstore/batch", {"dataset": f"{name}@1", "rows": [0] * 10_001}, 400, "InvalidRequest"),
        ("GET", f"/_tierstore/datasets/{name}/0", None, 400, "InvalidRequest"),
        ("GET", "/_tierstore/datasets/no-such-ds", None, 404, "NoSuchDataset"),
        ("PUT", f"/_tierstore/datasets/{name}/1", None, 405, "MethodNotAllowed"),
        ("DELETE", "/_tierstore/datasets", None, 405, "MethodNotAllowed"),
        ("POST", f"/_tierstore/datasets/{name}/1/manifest", None, 405, "MethodNotAllowed"),
        ("GET", f"/_tierstore/datasets/{name}/1/other", None, 501, "NotImplemented"),
        ("DELETE", f"/_tierstore/datasets/{name}/2", None, 404, "NoSuchDataset"),
    ]
    for method, path, doc, status, code in cases:
        body = b"" if doc is None else json.dumps(doc).encode()
        resp = signed_request(server, method, path, body=body)
        assert (resp.status, f"<Code>{code}</Code>".encode() in resp.body) == (status, True), (method, path, resp)
    resp = signed_request(server, "POST", "/_tierstore/datasets", body=b"{not json")
    assert resp.status == 400 and b"<Code>InvalidRequest</Code>" in resp.body
    # Nothing above changed the dataset.
    assert [d["ref"] for d in client.list_datasets(name)] == [f"{name}@1"]


def test_a_batch_body_over_its_limit_is_refused(server: ServerProcess) -> None:
    body = json.dumps({"dataset": "x@1", "rows": [0] * (4 * 1024 * 1024 // 3)}).encode()  # > 4 MiB
    resp = signed_request(server, "POST", "/_tierstore/batch", body=body)
    assert resp.status == 400 and b"<Code>InvalidRequest</Code>" in resp.body and b"larger than" in resp.body


def test_a_damaged_pinned_body_is_an_error_frame_naming_its_key(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str
) -> None:
    s3.put_object(Bucket=bucket, Key="ok", Body=b"fine")
    s3.put_object(Bucket=bucket, Key="rot", Body=b"x" * 100)
    rec = client.create_dataset(name, bucket=bucket, prefix="")
    manifest = Manifest.from_parquet(client.dataset_manifest(rec["ref"]))
    locs = dict(zip(manifest.column("key"), manifest.column("loc"), strict=True))
    assert locs["rot"].startswith("i:") and locs["ok"].startswith("i:")
    # Bitrot in the catalog's row (SQLite's file or PostgreSQL's database): "rot" gets ok's bytes.
    rot, ok = locs["rot"][2:], locs["ok"][2:]  # blob ids: hex, nothing to quote
    server.catalog_sql(
        f"UPDATE inline_blobs SET data=(SELECT data FROM inline_blobs WHERE blob_id='{ok}') WHERE blob_id='{rot}'"
    )
    items = list(client.read_rows(rec["ref"], [0, 1]))
    by_key = dict(zip(manifest.column("key"), items, strict=True))
    assert by_key["ok"].ok and by_key["ok"].data == b"fine"
    assert by_key["rot"].status == 500 and by_key["rot"].error is not None
    assert by_key["rot"].error["key"] == "rot" and by_key["rot"].data == b""
