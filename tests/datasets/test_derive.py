"""Derived datasets (datasets/_derive.py) against a real server, with a real process pool: outputs
as objects (mapped, chipped, dropped, renamed) and as WebDataset tar shards, read back through
``RemoteSource`` sample by sample and by ``webdataset`` itself; lineage; a shard uploaded in parts
into a versioned bucket and pinned by version; spawned workers reading from ``EmbeddedSource``;
bad transform specs refused before anything is written, and failing transforms publishing nothing.
"""

from __future__ import annotations

import gc
import random
import tarfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tests.datasets import transforms
from tierstore.client import TierstoreClient
from tierstore.datasets import DatasetRef, EmbeddedSource, RemoteSource
from tierstore.datasets import _derive as derive_module
from tierstore.datasets._derive import DeriveError, DeriveReport, derive

T = "tests.datasets.transforms"




@pytest.fixture(scope="module")
def source(server: ServerProcess) -> RemoteSource:
    return RemoteSource(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)


@pytest.fixture
def name() -> str:
    return f"dv-{uuid.uuid4().hex[:12]}"


_LOWER = bytes(97 + b % 26 for b in range(256))  # random bytes -> a-z, so upper() changes every one


def _label(i: int) -> str | None:
    return None if i % 5 == 4 else ("cat", "dog")[i % 2]


def _make_source(
    s3: Any, client: TierstoreClient, bucket: str, rng: random.Random, n: int = 24, sizes: tuple[int, int] = (0, 3000)
) -> tuple[str, list[dict[str, Any]]]:
    """A source dataset of ``n`` lower-case samples (every fifth unlabelled); returns its ref and
    the samples as the transform sees them."""
    samples = []
    for i in range(n):
        key = f"train/{i:03d}.jpg"
        data = rng.randbytes(rng.randint(*sizes)).translate(_LOWER)
        label = _label(i)
        s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={} if label is None else {"label": label})
        samples.append({"index": i, "key": key, "data": data, "label": label, "member": None})
    rec = client.create_dataset(f"src-{uuid.uuid4().hex[:8]}", bucket=bucket, prefix="train/", label="meta:label")
    return rec["ref"], samples


def _expected(fn: Callable[[dict[str, Any]], Any], samples: list[dict[str, Any]]) -> list[tuple[bytes, str | None]]:
    """(data, label) of every output, in order, computed in this process."""
    out: list[tuple[bytes, str | None]] = []
    for s in samples:
        result = fn(dict(s))
        items = [] if result is None else result if isinstance(result, list) else [result]
        for item in items:
            out.append((item, s["label"]) if isinstance(item, bytes) else (item["data"], item.get("label", s["label"])))
    return out


def _read_all(source: RemoteSource, ref: DatasetRef, rng: random.Random) -> list[bytes]:
    """Every sample of ``ref``, read in a shuffled order, put back in row order."""
    n = len(source.open_manifest(ref))
    order = list(range(n))
    rng.shuffle(order)
    got: list[bytes] = [b""] * n
    for pos, data in source.read_rows(ref, order):
        got[order[pos]] = data
    return got


def _listing(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_objects_output_maps_every_sample(
    s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource, name: str, rng: random.Random
) -> None:
    src, samples = _make_source(s3, client, bucket, rng)
    report = derive(source, client, s3, src, f"{T}:upper", name, bucket=bucket, workers=2, batch_rows=5)
    assert isinstance(report, DeriveReport)
    expected = _expected(transforms.upper, samples)
    assert (report.ref, report.source) == (DatasetRef(name, 1), DatasetRef.parse(src))
    assert (report.samples_in, report.samples_out, report.shards) == (24, 24, 0)
    assert report.bytes_out == sum(len(d) for d, _ in expected)
    assert (report.bucket, report.prefix) == (bucket, f"derived/{name}/")

    manifest = source.open_manifest(report.ref)
    assert manifest.column("key") == [f"derived/{name}/{s['key']}" for s in samples]
    assert manifest.column("label") == [label for _, label in expected]
    assert manifest.column("offset") == [None] * 24 and manifest.column("member") == [None] * 24
    assert _read_all(source, report.ref, rng) == [d for d, _ in expected]
    head = s3.head_object(Bucket=bucket, Key=f"derived/{name}/train/000.jpg")
    assert head["Metadata"] == {"label": "cat"}
    assert s3.head_object(Bucket=bucket, Key=f"derived/{name}/train/004.jpg")["Metadata"] == {}

    info = client.dataset_info(str(report.ref))
    assert info["lineage"] == {"source": src, "transform": f"{T}:upper", "output": "objects",
                               "shards_bytes": None, "samples_in": 24, "samples_out": 24}  # fmt: skip

    # NAME (the latest) is recorded as the concrete version it resolved to; a second run is @2.
    again = derive(source, client, s3, src.split("@")[0], f"{T}:upper", name, bucket=bucket, workers=2,
                   progress=False)  # fmt: skip
    assert again.ref == DatasetRef(name, 2)
    assert client.dataset_info(str(again.ref))["lineage"]["source"] == src


def test_chips_drops_and_renames_as_objects(
    s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource, name: str, rng: random.Random
) -> None:
    src, samples = _make_source(s3, client, bucket, rng, n=12)

    chips = derive(source, client, s3, src, f"{T}:chip", name, bucket=bucket, prefix="c", workers=2,
                   batch_rows=4, progress=False)  # fmt: skip
    assert (chips.samples_in, chips.samples_out, chips.prefix) == (12, 36, "c/")
    manifest = source.open_manifest(chips.ref)
    assert manifest.column("key") == [f"c/train/{i:03d}-{j}.jpg" for i in range(12) for j in range(3)]
    expected = _expected(transforms.chip, samples)
    assert manifest.column("label") == [label for _, label in expected]
    assert _read_all(source, chips.ref, rng) == [d for d, _ in expected]
    assert client.dataset_info(str(chips.ref))["lineage"]["samples_out"] == 36

    # No bucket given: the source's own.
    dropped = derive(source, client, s3, src, f"{T}:drop_odd", name, prefix="d/", workers=2, batch_rows=5,
                     progress=False)  # fmt: skip
    assert (dropped.ref.version, dropped.samples_in, dropped.samples_out, dropped.bucket) == (2, 12, 6, bucket)
    assert source.open_manifest(dropped.ref).column("key") == [f"d/train/{i:03d}.jpg" for i in range(0, 12, 2)]
    assert _read_all(source, dropped.ref, rng) == [s["data"] for s in samples[::2]]

    renamed = derive(source, client, s3, src, f"{T}:renamed", name, bucket=bucket, prefix="r/", workers=0,
                     progress=False)  # fmt: skip
    manifest = source.open_manifest(renamed.ref)
    assert manifest.column("key") == [f"r/flat/{i:04d}.rev" for i in range(12)]
    assert manifest.column("label") == [None] * 12
    assert _read_all(source, renamed.ref, rng) == [s["data"][::-1] for s in samples]

    empty = derive(source, client, s3, src, f"{T}:drop_all", name, bucket=bucket, workers=0, progress=False)
    assert (empty.samples_out, len(source.open_manifest(empty.ref))) == (0, 0)


def _webdataset_samples(paths: list[Path]) -> list[dict[str, Any]]:
    """Every sample of the shards, as ``webdataset.WebDataset`` reads them (raw bytes, no decoding)."""
    import webdataset as wds

    # webdataset 1.0.2 opens local shards (cache.StreamingOpen) and never closes them: its files
    # are collected unclosed. That ResourceWarning is its own, not ours; silence only that.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        got = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False))
        gc.collect()
    return got


def test_shards_read_by_loaders_and_by_webdataset(
    s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource, name: str, rng: random.Random,
    tmp_path: Path,
) -> None:  # fmt: skip
    src, samples = _make_source(s3, client, bucket, rng, n=30)
    report = derive(source, client, s3, src, f"{T}:chip", name, bucket=bucket, shards_bytes=16 * 1024,
                    workers=2, batch_rows=7, progress=False)  # fmt: skip
    expected = _expected(transforms.chip, samples)
    assert (report.samples_in, report.samples_out) == (30, 90)
    assert report.shards > 2
    assert list(report.shard_keys) == [f"derived/{name}/shard-{k:06d}.tar" for k in range(report.shards)]
    assert sorted(_listing(s3, bucket)) == sorted([*report.shard_keys, *(s["key"] for s in samples)])
    for key in report.shard_keys[:-1]:  # about the size asked: never over by more than tar's end padding
        size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        assert 8 * 1024 <= size <= 16 * 1024 + tarfile.RECORDSIZE, (key, size)

    # (a) tierstore's own reads: one sample at a time out of the shards, in any order.
    manifest = source.open_manifest(report.ref)
    stems = [f"{i:09d}-{j}_train_{i:03d}" for i in range(30) for j in range(3)]
    assert manifest.column("member") == [f"{stem}.jpg" for stem in stems]
    assert manifest.column("label") == [label for _, label in expected]
    assert set(manifest.column("key")) == set(report.shard_keys)
    assert _read_all(source, report.ref, rng) == [d for d, _ in expected]
    lineage = client.dataset_info(str(report.ref))["lineage"]
    assert (lineage["output"], lineage["shards_bytes"], lineage["samples_out"]) == ("shards", 16 * 1024, 90)

    # (b) webdataset itself, over the downloaded shards in order.
    paths = []
    for key in report.shard_keys:
        paths.append(tmp_path / key.rpartition("/")[2])
        s3.download_file(bucket, key, str(paths[-1]))
    got = _webdataset_samples(paths)
    assert [g["__key__"] for g in got] == stems
    assert [g["jpg"] for g in got] == [d for d, _ in expected]
    # Text labels ("<label>/<j>") are .txt members; an integer label would be .cls.
    assert [g["txt"].decode() if "txt" in g else None for g in got] == [label for _, label in expected]
    assert not any("cls" in g for g in got)

    # The same outputs make the same shard bytes (fixed tar headers): a rerun is comparable.
    again = derive(source, client, s3, src, f"{T}:chip", name, bucket=bucket, prefix="again/",
                   shards_bytes=16 * 1024, workers=2, batch_rows=30, progress=False)  # fmt: skip
    etags = [s3.head_object(Bucket=bucket, Key=k)["ETag"] for k in (*report.shard_keys, *again.shard_keys)]
    assert etags[: report.shards] == etags[report.shards :]

    # A derived dataset of shard members: default names are <shard>/<member>.
    flat = derive(source, client, s3, str(report.ref), f"{T}:upper", f"{name}-up", bucket=bucket, prefix="up/",
                  workers=2, progress=False)  # fmt: skip
    keys = source.open_manifest(flat.ref).column("key")
    shard_of, members = manifest.column("key"), manifest.column("member")
    assert keys == [f"up/{k.removesuffix('.tar')}/{m}" for k, m in zip(shard_of, members, strict=True)]
    assert keys[0] == f"up/derived/{name}/shard-000000/{stems[0]}.jpg"
    assert _read_all(source, flat.ref, rng) == [d.upper() for d, _ in expected]


def test_big_shard_uploads_in_parts_and_pins_its_version(
    s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource, name: str, rng: random.Random,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    monkeypatch.setattr(derive_module, "_MULTIPART_BYTES", 5 * 1024 * 1024)
    monkeypatch.setattr(derive_module, "_PART_BYTES", 5 * 1024 * 1024)
    # 12 x ~1 MiB: one shard of ~12 MiB, three parts.
    src, samples = _make_source(s3, client, bucket, rng, n=12, sizes=(1 << 20, (1 << 20) + 1000))
    report = derive(source, client, s3, src, f"{T}:upper", name, bucket=bucket, shards_bytes=64 * 1024 * 1024,
                    workers=2, batch_rows=4, progress=False)  # fmt: skip
    assert report.shards == 1
    (key,) = report.shard_keys
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].endswith('-3"'), head["ETag"]  # a multipart ETag: three parts
    manifest = source.open_manifest(report.ref)
    assert manifest.column("version_id") == [head["VersionId"]] * 12

    # Objects output in a versioned bucket pins the versions written, too.
    objects = derive(source, client, s3, src, f"{T}:upper", name, bucket=bucket, workers=2, progress=False)
    versions = [
        s3.head_object(Bucket=bucket, Key=k)["VersionId"] for k in source.open_manifest(objects.ref).column("key")
    ]
    assert source.open_manifest(objects.ref).column("version_id") == versions

    # Overwritten and their pinned versions deleted: both datasets still read what derive wrote.
    s3.put_object(Bucket=bucket, Key=key, Body=b"not a tar")
    s3.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])
    first = source.open_manifest(objects.ref).column("key")[0]
    s3.put_object(Bucket=bucket, Key=first, Body=b"changed")
    s3.delete_object(Bucket=bucket, Key=first, VersionId=versions[0])
    assert _read_all(source, report.ref, rng) == [s["data"].upper() for s in samples]
    assert _read_all(source, objects.ref, rng) == [s["data"].upper() for s in samples]


@pytest.mark.parametrize("mp_context", ["fork", "spawn", "forkserver"])
def test_worker_start_methods_with_an_embedded_source(
    s3: Any, bucket: str, client: TierstoreClient, server: ServerProcess, name: str, rng: random.Random, mp_context: str
) -> None:
    # The embedded engine's thread runs in the parent while workers start: forked ones must not need it.
    src, samples = _make_source(s3, client, bucket, rng, n=10)
    embedded = EmbeddedSource(server.data_dir)
    try:
        report = derive(embedded, client, s3, src, f"{T}:chip", name, bucket=bucket, shards_bytes=1 << 20,
                        workers=2, batch_rows=3, mp_context=mp_context, progress=False)  # fmt: skip
        assert (report.samples_out, report.shards) == (30, 1)
        got = [d for _, d in embedded.read_rows(report.ref, range(30))]
    finally:
        embedded.close()
    assert got == [d for d, _ in _expected(transforms.chip, samples)]


@pytest.mark.parametrize(
    ("spec", "to", "message"),
    [
        ("upper", "x", "must be 'module:function'"),
        (f"{T}:", "x", "must be 'module:function'"),
        ("tests.datasets.no_such_module:upper", "x", "no module named 'tests.datasets.no_such_module'"),
        (f"{T}:no_such_function", "x", f"module '{T}' has no function 'no_such_function'"),
        (f"{T}:NOT_A_FUNCTION", "x", "tests.datasets.transforms.NOT_A_FUNCTION is not callable (it is a int)"),
        (f"{T}:upper", "x@2", "names a dataset, not a version"),
        (f"{T}:upper", "bad name!", "bad dataset name"),
    ],
)
def test_bad_arguments_fail_before_writing(
    s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource, spec: str, to: str, message: str,
    rng: random.Random,
) -> None:  # fmt: skip
    src, _ = _make_source(s3, client, bucket, rng, n=3)
    before = _listing(s3, bucket)
    with pytest.raises(ValueError) as info:
        derive(source, client, s3, src, spec, to, bucket=bucket, workers=2, progress=False)
    assert message in str(info.value)
    assert _listing(s3, bucket) == before


def test_missing_bucket_fails_before_reading(s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource,
                                             rng: random.Random) -> None:  # fmt: skip
    src, _ = _make_source(s3, client, bucket, rng, n=3)
    with pytest.raises(ValueError, match="no such bucket 'no-such-bucket-zz'"):
        derive(source, client, s3, src, f"{T}:upper", "x", bucket="no-such-bucket-zz", workers=2, progress=False)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ("boom", "raised on sample 3 ('train/003.jpg'): ZeroDivisionError: sample three is cursed"),
        ("bad_return", "returned for sample 0 a int: expected bytes, a dict, a list of those, or None"),
        ("misspelt", "unknown keys ['lable']"),
    ],
)
@pytest.mark.parametrize("shards", [None, 4096])
def test_failing_transform_publishes_nothing(
    s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource, name: str, rng: random.Random, fn: str,
    message: str, shards: int | None,
) -> None:  # fmt: skip
    src, _ = _make_source(s3, client, bucket, rng, n=8)
    with pytest.raises(DeriveError) as info:
        derive(source, client, s3, src, f"{T}:{fn}", name, bucket=bucket, shards_bytes=shards, workers=2,
               batch_rows=2, progress=False)  # fmt: skip
    assert message in str(info.value)
    assert client.list_datasets(name) == []


def test_a_dying_worker_stops_the_run(
    s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource, name: str, rng: random.Random
) -> None:
    src, _ = _make_source(s3, client, bucket, rng, n=8)
    with pytest.raises(DeriveError, match=r"a transform worker died .* on samples 2\.\.3"):
        derive(source, client, s3, src, f"{T}:crash", name, bucket=bucket, workers=2, batch_rows=2, progress=False)
    assert client.list_datasets(name) == []


class _RacingClient(TierstoreClient):
    """A real client that, just before publishing, overwrites one output as a concurrent writer would."""

    def __init__(self, base: TierstoreClient, s3: Any, bucket: str, key: str) -> None:
        super().__init__(base.settings)
        self.s3, self.bucket, self.key = s3, bucket, key

    def create_dataset(self, name: str, **kw: Any) -> dict[str, Any]:
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=b"someone else's bytes")
        return super().create_dataset(name, **kw)


def test_an_output_overwritten_before_publishing_is_caught(
    s3: Any, bucket: str, client: TierstoreClient, source: RemoteSource, name: str, rng: random.Random
) -> None:
    src, _ = _make_source(s3, client, bucket, rng, n=6)
    racing = _RacingClient(client, s3, bucket, f"derived/{name}/train/004.jpg")
    with pytest.raises(DeriveError, match=rf"{name}@1 did not pin what was written .*row 4.* was deleted again"):
        derive(source, racing, s3, src, f"{T}:upper", name, bucket=bucket, workers=2, progress=False)
    assert client.list_datasets(name) == []
