"""S3Objects (the byte mover of checkpoints and model pulls) and the commit object, against the
real server: buffers in and out without joins, the CRC64NVME the server verifies, multipart
with parts on a pool, conditional commits and their idempotent retry."""

from __future__ import annotations

import pickle
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tierstore.checkpoints import (
    Commit,
    CommitFile,
    CommitFormatError,
    ObjectError,
    PreconditionFailed,
    S3Objects,
    StoreUri,
    checkpoint_name,
    crc64nvme,
    parse_name,
)
from tierstore.checkpoints._objects import crc64nvme_combine, crc_b64
from tierstore.client import resolve_settings

MiB = 1 << 20


@pytest.fixture(scope="module")
def objects(server: ServerProcess) -> S3Objects:
    return S3Objects(
        resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY), part_bytes=5 * MiB
    )


def test_buffers_go_up_unjoined_come_back_exact(objects: S3Objects, s3: Any, bucket: str, rng: random.Random) -> None:
    gen = np.random.default_rng(rng.randrange(2**32))
    pieces = [
        gen.integers(0, 2**31, 1000, dtype=np.int32),
        gen.random(333).astype(np.float16),
        b"tail",
        bytearray(b"x"),
    ]
    whole = b"".join(memoryview(p).cast("B").tobytes() if isinstance(p, np.ndarray) else bytes(p) for p in pieces)
    res = objects.put(bucket, "a/one", pieces, metadata={"loss": "0.25"}, tags={"status": "tested"})
    assert res.size == len(whole)
    assert res.crc64nvme == crc_b64(crc64nvme(whole))
    head = s3.head_object(Bucket=bucket, Key="a/one", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == res.crc64nvme  # what we sent, the server checked and kept
    assert head["Metadata"] == {"loss": "0.25"}
    assert objects.get_tags(bucket, "a/one") == {"status": "tested"}
    assert objects.get(bucket, "a/one") == whole
    assert objects.get(bucket, "a/one", byte_range=(7, 100)) == whole[7:107]
    out = bytearray(50)
    objects.get_into(bucket, "a/one", memoryview(out), offset=1000)
    assert bytes(out) == whole[1000:1050]


def test_large_bodies_go_multipart_with_parts_on_a_pool(
    objects: S3Objects, s3, bucket: str, rng: random.Random
) -> None:  # type: ignore[no-untyped-def]
    gen = np.random.default_rng(rng.randrange(2**32))
    data = gen.integers(0, 256, 12 * MiB + 12345, dtype=np.uint8)
    cut = rng.randrange(1, data.nbytes)
    with ThreadPoolExecutor(3) as pool:
        res = objects.put(bucket, "big", [data[:cut], data[cut:]], pool=pool)
    assert res.etag.strip('"').endswith("-3")  # 5 + 5 + 2 MiB parts
    assert res.crc64nvme == crc_b64(crc64nvme(data))  # the whole object's CRC, combined from the parts'
    head = s3.head_object(Bucket=bucket, Key="big", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == res.crc64nvme
    back = np.empty_like(data)
    objects.get_into(bucket, "big", memoryview(back))
    assert np.array_equal(back, data)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_a_conditional_put_lands_once_and_its_retry_is_recognised(objects: S3Objects, bucket: str) -> None:
    first = objects.put(bucket, "commits/x.json", b'{"a": 1}', if_none_match=True)
    with pytest.raises(PreconditionFailed) as info:
        objects.put(bucket, "commits/x.json", b'{"a": 2}', if_none_match=True)
    assert info.value.status == 412
    # the same bytes from another writer: still a conflict (only a retry of our own may match)
    with pytest.raises(PreconditionFailed):
        objects.put(bucket, "commits/x.json", b'{"a": 1}', if_none_match=True)
    assert first.crc64nvme == crc_b64(crc64nvme(b'{"a": 1}'))
    assert objects.get(bucket, "commits/x.json") == b'{"a": 1}'
    with pytest.raises(ValueError, match="conditional"):
        objects.put(bucket, "commits/big.json", bytes(6 * MiB), if_none_match=True)


def test_the_server_refuses_bytes_that_do_not_match_the_crc_sent(objects: S3Objects, bucket: str) -> None:
    with pytest.raises(ObjectError) as info:
        objects._request(  # the header put() computes, here deliberately wrong
            "PUT", bucket, "bad", headers={"x-amz-checksum-crc64nvme": crc_b64(crc64nvme(b"other"))},
            body=[b"payload"], size=7,
        )  # fmt: skip
    assert (info.value.status, info.value.code) == (400, "BadDigest")
    with pytest.raises(ObjectError) as missing:
        objects.get(bucket, "bad")
    assert (missing.value.status, missing.value.code) == (404, "NoSuchKey")


def test_list_delete_and_stale_upload_abort(objects: S3Objects, s3: Any, bucket: str) -> None:
    for i in range(5):
        objects.put(bucket, f"d/{i}", bytes([i]) * (i + 1))
    listed = list(objects.list(bucket, "d/"))
    assert [o.key for o in listed] == [f"d/{i}" for i in range(5)]
    assert [o.size for o in listed] == [1, 2, 3, 4, 5]
    objects.delete(bucket, ["d/1", "d/3", "d/missing"])
    assert [o.key for o in objects.list(bucket, "d/")] == ["d/0", "d/2", "d/4"]
    s3.create_multipart_upload(Bucket=bucket, Key="d/partial")
    assert objects.abort_uploads(bucket, "d/", older_than_ns=0) == 0  # not older than the grace
    assert objects.abort_uploads(bucket, "d/", older_than_ns=time.time_ns() + 60 * 10**9) == 1
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_objects_pickle_without_their_connections(objects: S3Objects, bucket: str) -> None:
    objects.put(bucket, "p", b"pickled")
    twin = pickle.loads(pickle.dumps(objects))
    assert twin.get(bucket, "p") == b"pickled"
    assert twin.part_bytes == objects.part_bytes


def test_crc_combine_matches_the_crc_of_the_concatenation(rng: random.Random) -> None:
    for _ in range(20):
        a, b = rng.randbytes(rng.randrange(0, 3000)), rng.randbytes(rng.randrange(0, 3000))
        assert crc64nvme_combine(crc64nvme(a), crc64nvme(b), len(b)) == crc64nvme(a + b)
        assert crc64nvme([a, b]) == crc64nvme(a + b)


def test_store_uri_and_checkpoint_names() -> None:
    uri = StoreUri.parse("s3://ckpts/runs/resnet/")
    assert (uri.bucket, uri.prefix, uri.key("commits/x.json")) == ("ckpts", "runs/resnet", "runs/resnet/commits/x.json")
    assert uri.rel(uri.key("data/a")) == "data/a"
    assert str(StoreUri.parse("s3://b")) == "s3://b" and StoreUri.parse("s3://b").key("k") == "k"
    for bad in ("ckpts/x", "s3://", "s3:///x", "file:///tmp"):
        with pytest.raises(ValueError):
            StoreUri.parse(bad)
    assert checkpoint_name(1234, "run-a") == "000000001234-run-a"
    assert parse_name("000000001234-run-a") == (1234, "run-a")
    for bad_name in ("1234-run", "000000001234-Run", "000000001234-", "x"):
        with pytest.raises(CommitFormatError):
            parse_name(bad_name)
    for bad_step, run in ((-1, "r"), (10**12, "r"), (1, "Bad Run"), (1, "")):
        with pytest.raises(ValueError):
            checkpoint_name(bad_step, run)


def test_commit_round_trip_and_refusals() -> None:
    commit = Commit(
        step=7, run="r1", kind="state_dict", created_ns=123,
        files=[CommitFile("data-000.bin", "p/data/000000000007-r1/data-000.bin", "v1", 10, crc_b64(1))],
        metrics={"loss": 0.5, "acc": float("nan")}, tags={"status": "tested"}, datasets=["imnet@3"],
        body={"tree": {"$t": 0}},
    )  # fmt: skip
    back = Commit.from_json(commit.to_json())
    assert back.files == commit.files and back.body == commit.body and back.datasets == ["imnet@3"]
    assert back.metrics["loss"] == 0.5 and back.metrics["acc"] != back.metrics["acc"]  # nan survives
    assert commit.user_metadata() == {"step": "7", "run": "r1", "kind": "state_dict", "datasets": "imnet@3",
                                      "loss": "0.5", "acc": "nan"}  # fmt: skip
    for bad in (b"not json", b"[]", b'{"format": "other/1"}', b'{"format": "tierstore.checkpoint/1", "step": 1}'):
        with pytest.raises(CommitFormatError):
            Commit.from_json(bad)
    for metric in ("Loss", "step", "a b", ""):
        with pytest.raises(ValueError, match="metric name"):
            Commit(1, "r", "state_dict", 0, [], metrics={metric: 1.0}).user_metadata()


def test_reads_into_memory_keep_the_connection_usable(server: ServerProcess, bucket: str, rng: random.Random) -> None:
    """get_into receives straight into the buffer (below urllib3's copying readinto): with one
    pooled connection, ranged reads, whole reads and writes keep alternating correctly."""
    settings = resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    one = S3Objects(settings, max_connections=1)
    data = rng.randbytes(3 * MiB + 7)
    one.put(bucket, "r", data)
    for _ in range(5):
        start = rng.randrange(0, len(data) - 1)
        n = rng.randrange(1, len(data) - start + 1)
        out = bytearray(n)
        one.get_into(bucket, "r", memoryview(out), offset=start)
        assert bytes(out) == data[start : start + n]
        assert one.get(bucket, "r", byte_range=(0, 10)) == data[:10]
        one.put(bucket, "w", b"between reads")
    assert one.get(bucket, "w") == b"between reads"
