"""A dataset version's head (``manifest?head=K``) and the diff of two versions (``NAME/diff``)
over HTTP (docs/datasets.md "Previews and diffs"), and the ranged manifest reads behind them
(engine/_manifest_reads.py) on a manifest of several row groups.

The diff is checked against the per-row dict diff it replaced (``_dict_diff``, kept here as the
oracle) on random pairs of manifests with members, repeated samples and changed ETags; the head
and the diff are authorized for what they reveal: the objects the head's rows name, every object
of both versions."""

from __future__ import annotations

import asyncio
import io
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.api.test_breaches import _ext, _policy, _status
from tests.api.test_breaches import _user as _new_user
from tests.conftest import ServerProcess
from tests.s3http import signed_request
from tierstore.blob import MemoryBlobStore
from tierstore.catalog import DatasetRecord
from tierstore.client import TierstoreClient
from tierstore.datasets import Manifest
from tierstore.engine._manifest_reads import ManifestReads
from tierstore.runtime import new_blob_id

Sample = tuple[str, str, str]


def _dict_diff(a: Manifest, b: Manifest) -> tuple[list[Sample], list[Sample], list[Sample], int]:
    """The diff as ``Manifest.diff`` computed it before: a dict per manifest, row by row."""

    def index(m: Manifest) -> dict[Sample, tuple[str, str]]:
        members = [x or "" for x in m.column("member")]
        keys = zip(m.column("bucket"), m.column("key"), members, strict=True)
        return dict(zip(keys, zip(m.column("version_id"), m.column("etag"), strict=True), strict=True))

    ia, ib = index(a), index(b)
    added = [k for k in ib if k not in ia]
    removed = [k for k in ia if k not in ib]
    changed = [k for k in ib if k in ia and ia[k] != ib[k]]
    return added, removed, changed, len(ib) - len(added) - len(changed)


def _keys(items: list[dict[str, str]]) -> list[Sample]:
    return [(x["bucket"], x["key"], x["member"]) for x in items]


def _user(root: TierstoreClient, server: ServerProcess, statements: list[dict[str, Any]]) -> TierstoreClient:
    return _ext(server, _new_user(root, _policy(*statements)))


READ_DATASETS = {"Effect": "Allow", "Action": ["tierstore:GetDataset", "tierstore:GetDatasetManifest"], "Resource": "*"}


def _allow_all(bucket: str) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}


def _deny(bucket: str, key: str) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/{key}"}


def test_the_head_is_the_first_rows_for_whoever_may_read_them(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess
) -> None:
    for i in range(6):
        s3.put_object(Bucket=bucket, Key=f"{'shown' if i < 3 else 'rest'}/{i}", Body=b"x" * i, Metadata={"c": str(i)})
    name = f"ds-{uuid.uuid4().hex[:10]}"
    rows = [{"bucket": bucket, "key": f"{'shown' if i < 3 else 'rest'}/{i}", "label": f"l{i}"} for i in range(6)]
    ref = client.create_dataset(name, rows=rows, columns=["meta:c"])["ref"]
    whole = Manifest.from_parquet(client.dataset_manifest(ref)).table.to_pylist()
    head = client.dataset_head(ref, 3)
    assert head["ref"] == ref and head["rows"] == 6
    assert head["head"] == whole[:3]  # every column of the manifest, the same values
    assert [r["meta.c"] for r in head["head"]] == ["0", "1", "2"]
    assert client.dataset_head(ref, 1000)["head"] == whole
    assert client.dataset_head(ref, 0)["head"] == []
    path = f"/_tierstore/datasets/{name}/1/manifest"
    for bad in ("1001", "x", "-1", "", "²"):
        r = signed_request(server, "GET", path, query=[("head", bad)])
        assert (r.status, b"InvalidRequest" in r.body) == (400, True), bad
    assert signed_request(server, "GET", f"/_tierstore/datasets/{name}/9/manifest", query=[("head", "3")]).status == 404

    # Allowed the three shown objects only: their head, not a row more, not the whole manifest.
    shown = _user(client, server, [READ_DATASETS, {"Effect": "Allow", "Action": "s3:GetObject",
                                                    "Resource": f"arn:aws:s3:::{bucket}/shown/*"}])  # fmt: skip
    assert shown.dataset_head(ref, 3)["head"] == whole[:3]
    assert _status(lambda: shown.dataset_head(ref, 4)) == (403, "AccessDenied")
    assert _status(lambda: shown.dataset_manifest(ref)) == (403, "AccessDenied")
    # Denied one of the shown objects (an explicit deny beats the allow): no head at all.
    denied = _user(client, server, [READ_DATASETS, _allow_all(bucket), _deny(bucket, "shown/1")])
    assert _status(lambda: denied.dataset_head(ref, 3)) == (403, "AccessDenied")
    assert denied.dataset_head(ref, 1)["head"] == whole[:1]
    # Without tierstore:GetDatasetManifest: refused before anything about the dataset is read.
    plain = _user(client, server, [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}])
    assert _status(lambda: plain.dataset_head(ref, 1)) == (403, "AccessDenied")
    assert _status(lambda: plain.dataset_head(f"{name}-missing@1", 1)) == (403, "AccessDenied")
    client.delete_dataset(ref)


def test_the_diff_is_the_dict_diff_with_exact_counts(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess
) -> None:
    rng = random.Random(19)
    keys = [f"k/{i:02d}" for i in range(12)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode() * 4)

    def rows() -> list[dict[str, Any]]:
        out = []
        for _ in range(rng.randint(20, 40)):  # repeats allowed: a sample may be named twice
            row: dict[str, Any] = {"bucket": bucket, "key": rng.choice(keys)}
            member = rng.choice([None, "a.jpg", "b.jpg", "a.jpg\x00"])
            if member is not None:
                row |= {"member": member, "offset": 0, "size": 2}
            out.append(row)
        return out

    name = f"ds-{uuid.uuid4().hex[:10]}"
    first = client.create_dataset(name, rows=rows())
    for k in rng.sample(keys, 4):  # another ETag for these samples from now on
        s3.put_object(Bucket=bucket, Key=k, Body=b"changed " + k.encode())
    second = client.create_dataset(name, rows=rows())
    a, b = (Manifest.from_parquet(client.dataset_manifest(r["ref"])) for r in (first, second))
    want = _dict_diff(a, b)
    assert want[2], "some samples changed"  # the test compares something
    got = client.dataset_diff(name, 1, 2, limit=1000)
    assert (_keys(got["added_keys"]), _keys(got["removed_keys"]), _keys(got["changed_keys"]), got["unchanged"]) == want
    assert (got["added"], got["removed"], got["changed"]) == tuple(len(x) for x in want[:3])
    assert (got["a"], got["b"], got["limit"]) == (first["ref"], second["ref"], 1000)
    d = a.diff(b)  # the SDK's, vectorized the same way
    assert (d.added, d.removed, d.changed, d.unchanged) == want
    back = client.dataset_diff(name, 2, 1)
    assert (back["added"], back["removed"]) == (len(want[1]), len(want[0]))
    one = client.dataset_diff(name, 1, 2, limit=1)  # counts stay exact; one sample of each kind
    assert (one["added"], one["removed"], one["changed"]) == (got["added"], got["removed"], got["changed"])
    assert [_keys(one[f"{k}_keys"]) for k in ("added", "removed", "changed")] == [w[:1] for w in want[:3]]
    same = client.dataset_diff(name, 2, 2)
    assert (same["added"], same["removed"], same["changed"]) == (0, 0, 0)
    path = f"/_tierstore/datasets/{name}/diff"
    for query, status, code in (
        ([("a", "1")], 400, "InvalidRequest"), ([("a", "1"), ("b", "x")], 400, "InvalidRequest"),
        ([("a", "1"), ("b", "2"), ("limit", "1001")], 400, "InvalidRequest"),
        ([("a", "1"), ("b", "3")], 404, "NoSuchDataset"),
        ([("a", "1"), ("b", "²")], 400, "InvalidRequest"),
    ):  # fmt: skip
        r = signed_request(server, "GET", path, query=query)
        assert (r.status, code.encode() in r.body) == (status, True), query
    assert signed_request(server, "POST", path, query=[("a", "1"), ("b", "2")]).status == 405

    # A diff reveals parts of both manifests: a caller must be allowed every object of both.
    allowed = _user(client, server, [READ_DATASETS, {"Effect": "Allow", "Action": "s3:GetObject",
                                                      "Resource": f"arn:aws:s3:::{bucket}/k/*"}])  # fmt: skip
    assert allowed.dataset_diff(name, 1, 2)["changed"] == got["changed"]
    one_key = rng.choice([r["key"] for r in a.table.select(["key"]).to_pylist()])
    denied = _user(client, server, [READ_DATASETS, _allow_all(bucket), _deny(bucket, one_key)])
    assert _status(lambda: denied.dataset_diff(name, 1, 2)) == (403, "AccessDenied")
    no_manifest = _user(client, server, [{"Effect": "Allow", "Action": ["tierstore:GetDataset", "s3:GetObject"],
                                          "Resource": "*"}])  # fmt: skip
    assert _status(lambda: no_manifest.dataset_diff(name, 1, 2)) == (403, "AccessDenied")

    # Deleted and made again, version 2 is another manifest: its diff is computed afresh.
    client.delete_dataset(second["ref"])
    again = client.create_dataset(name, rows=[{"bucket": bucket, "key": keys[0]}])
    assert again["ref"] == f"{name}@2"
    # wait_ms: a diff no worker has computed yet answers 202 "computing" at once; asked again, done.
    r = signed_request(server, "GET", path, query=[("a", "1"), ("b", "2"), ("wait_ms", "0")])
    assert (r.status, json.loads(r.body)["state"]) == (202, "computing")
    for _ in range(200):
        r = signed_request(server, "GET", path, query=[("a", "1"), ("b", "2"), ("wait_ms", "200"), ("limit", "1000")])
        if r.status == 200:
            break
        assert (r.status, json.loads(r.body)["state"]) == (202, "computing")
    polled = json.loads(r.body)
    assert (r.status, polled["state"]) == (200, "done")
    assert signed_request(server, "GET", path, query=[("a", "1"), ("b", "2"), ("wait_ms", "10001")]).status == 400
    fresh = client.dataset_diff(name, 1, 2, limit=1000)
    assert {k: v for k, v in polled.items() if k != "state"} == {k: v for k, v in fresh.items() if k != "state"}
    added, removed, changed, unchanged = _dict_diff(a, Manifest.from_parquet(client.dataset_manifest(again["ref"])))
    assert (_keys(fresh["added_keys"]), _keys(fresh["removed_keys"]), _keys(fresh["changed_keys"])) == (
        added,
        removed,
        changed,
    )
    assert fresh["unchanged"] == unchanged
    for ref in (first["ref"], again["ref"]):
        client.delete_dataset(ref)


def test_a_manifest_of_two_buckets_for_users_allowed_one_wholly(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess
) -> None:
    """A manifest is checked bucket by bucket (``check_reads``): a bucket the user may read
    wholly (one statement for all its keys) is one check; a bucket read per key (a prefix, or a
    Deny on one key) still has each of its objects checked, so one object out of reach refuses
    the whole manifest and the diff."""
    other = f"{bucket}-b"
    s3.create_bucket(Bucket=other)
    rows = []
    for b in (bucket, other):
        for k in ("shown/1", "shown/2", "rest/3"):
            s3.put_object(Bucket=b, Key=k, Body=k.encode())
            rows.append({"bucket": b, "key": k})
    name = f"ds-{uuid.uuid4().hex[:10]}"
    first = client.create_dataset(name, rows=rows[:4])
    second = client.create_dataset(name, rows=rows)
    whole = _user(client, server, [READ_DATASETS, _allow_all(bucket), _allow_all(other)])
    assert whole.dataset_manifest(second["ref"]) == client.dataset_manifest(second["ref"])
    assert whole.dataset_diff(name, 1, 2)["added"] == 2
    prefix = _user(client, server, [READ_DATASETS, _allow_all(bucket), {
        "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{other}/shown/*"}])  # fmt: skip
    assert prefix.dataset_manifest(first["ref"]) == client.dataset_manifest(first["ref"])  # other's shown/1 only
    assert _status(lambda: prefix.dataset_manifest(second["ref"])) == (403, "AccessDenied")  # other's rest/3
    assert _status(lambda: prefix.dataset_diff(name, 1, 2)) == (403, "AccessDenied")
    denied = _user(client, server, [READ_DATASETS, _allow_all(bucket), _allow_all(other), _deny(other, "rest/3")])
    assert _status(lambda: denied.dataset_manifest(second["ref"])) == (403, "AccessDenied")
    assert denied.dataset_manifest(first["ref"]) == client.dataset_manifest(first["ref"])
    for ref in (first["ref"], second["ref"]):
        client.delete_dataset(ref)
    s3.delete_objects(Bucket=other, Delete={"Objects": [{"Key": k} for k in ("shown/1", "shown/2", "rest/3")]})
    s3.delete_bucket(Bucket=other)


class _Counting(MemoryBlobStore):
    """A memory blob store that notes the ranges read (what the manifest reads fetch)."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int | None]] = []

    async def get(
        self, blob_id: str, offset: int = 0, length: int | None = None, *, verify: bool = True
    ) -> AsyncIterator[bytes]:
        self.ranges.append((offset, length))
        return await super().get(blob_id, offset, length, verify=verify)


def test_ranged_reads_of_a_manifest_of_many_row_groups() -> None:
    n, group = 5000, 1000  # five row groups, as a 300,000-sample manifest has five of 65,536
    table = pa.table({
        "bucket": ["b"] * n, "key": [f"k/{i:05d}" for i in range(n)], "version_id": ["null"] * n,
        "etag": [f'"{i:032x}"' for i in range(n)], "offset": pa.nulls(n, pa.int64()), "size": list(range(n)),
        "member": [None if i % 3 else f"m{i % 7}" for i in range(n)], "label": [str(i % 10) for i in range(n)],
        "loc": [f"i:{random.Random(i).randbytes(100).hex()}" for i in range(n)],  # > 64 KiB a row group
    })  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=group)
    data = buf.getvalue()
    store = _Counting()

    async def run() -> None:
        async def body() -> AsyncIterator[bytes]:
            yield data

        first_id, second_id = new_blob_id(), new_blob_id()
        await store.put(first_id, body())
        reads = ManifestReads(type("Service", (), {"blobs": store})())  # type: ignore[arg-type]
        record = DatasetRecord("d", 1, first_id, len(data), 0, n, 0, {})
        store.ranges.clear()
        head = await reads.head(record, 1500)  # rows of the first two row groups
        assert head.to_pylist() == table.slice(0, 1500).to_pylist()
        fetched = sum(length or 0 for _, length in store.ranges)
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        first_two = meta.row_group(2).column(0).data_page_offset
        assert fetched < first_two + 64 * 1024 + 1 and fetched < len(data)  # the footer and two row groups
        store.ranges.clear()
        cols = await reads.columns(record, ("bucket", "key", "member", "version_id", "etag"))
        assert cols.to_pydict() == table.select(["bucket", "key", "member", "version_id", "etag"]).to_pydict()
        loc_bytes = sum(meta.row_group(g).column(8).total_compressed_size for g in range(meta.num_row_groups))
        # the footer (64 KiB, read first) and every column chunk but the locations
        assert sum(length or 0 for _, length in store.ranges) <= len(data) - loc_bytes + 64 * 1024
        # A read outside the planned ranges (here: no footer fetched) reads the whole blob instead.
        _, footer = await reads._footer(record)
        whole = await reads._read(record, ({}, footer), [3], ["key", "size"])
        assert whole.to_pydict() == table.slice(3000, 1000).select(["key", "size"]).to_pydict()
        assert store.ranges[-1] == (0, len(data))
        changed = table.set_column(3, "etag", pa.array(['"x"' if i % 500 == 0 else e for i, e in
                                                       enumerate(table.column("etag").to_pylist())]))  # fmt: skip
        buf2 = io.BytesIO()
        pq.write_table(changed.slice(100), buf2, compression="zstd", row_group_size=group)

        async def body2() -> AsyncIterator[bytes]:
            yield buf2.getvalue()

        await store.put(second_id, body2())
        other = DatasetRecord("d", 2, second_id, len(buf2.getvalue()), 0, n - 100, 0, {})
        d = await reads.diff(record, other, 5)
        want = _dict_diff(
            Manifest(table, {"name": "d", "version": 1}), Manifest(changed.slice(100), {"name": "d", "version": 2})
        )
        assert (d.added, d.removed, d.changed, d.unchanged) == (len(want[0]), len(want[1]), len(want[2]), want[3])
        assert (d.added_keys, d.removed_keys, d.changed_keys) == (want[0][:5], want[1][:5], want[2][:5])

    asyncio.run(run())
