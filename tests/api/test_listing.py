"""ListObjects (v1) and ListObjectsV2 through boto3, checked page by page against a model.

The model is a byte-ordered list of keys; ``model_items`` computes, for a prefix, delimiter and
exclusive start key, every key and common prefix S3 returns in order. Each server page must
be the next ``max_keys`` items of the model from the previous page's last item.
"""

from __future__ import annotations

import bisect
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, make_client

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)

SEED = int(os.environ.get("TIERSTORE_TEST_SEED", "20240611"))
print(f"test_listing seed: {SEED}")  # replay with TIERSTORE_TEST_SEED


@pytest.fixture(autouse=True)
def _show_seed() -> None:
    print(f"test_listing seed: {SEED} (replay with TIERSTORE_TEST_SEED={SEED})")


def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


# --- the model -------------------------------------------------------------------------
@dataclass
class Model:
    keys: list[str]  # sorted by UTF-8 bytes, as S3 lists

    @classmethod
    def of(cls, keys: set[str] | list[str]) -> Model:
        return cls(sorted(set(keys), key=lambda k: k.encode()))

    def items(self, prefix: str, delimiter: str, start_after: str) -> Iterator[tuple[str, str]]:
        """("key", k) and ("prefix", p) in listing order, strictly after ``start_after``."""
        encoded = [k.encode() for k in self.keys]
        i = bisect.bisect_right(encoded, start_after.encode())
        i = max(i, bisect.bisect_left(encoded, prefix.encode()))
        last_cp = None
        for k in self.keys[i:]:
            if not k.startswith(prefix):
                if k.encode() > prefix.encode():
                    break
                continue
            if delimiter:
                idx = k.find(delimiter, len(prefix))
                if idx >= 0:
                    cp = k[: idx + len(delimiter)]
                    # A common prefix is returned once; when it was the previous page's last
                    # item (the marker), it is not returned again.
                    if cp in (last_cp, start_after):
                        continue
                    last_cp = cp
                    yield ("prefix", cp)
                    continue
            yield ("key", k)

    def page(self, prefix: str, delimiter: str, start_after: str, max_keys: int) -> tuple[list[str], list[str], bool]:
        out: list[tuple[str, str]] = []
        truncated = False
        for item in self.items(prefix, delimiter, start_after):
            if len(out) == max_keys:
                truncated = True
                break
            out.append(item)
        return [v for t, v in out if t == "key"], [v for t, v in out if t == "prefix"], truncated


def _last_item(keys: list[str], prefixes: list[str]) -> str:
    return max([*keys, *prefixes], key=lambda s: s.encode())


def check_walk(
    client: Any,
    bucket: str,
    model: Model,
    *,
    v2: bool,
    prefix: str,
    delimiter: str,
    max_keys: int,
    start_after: str = "",
) -> int:
    """Walk every page and compare it with the model. Returns the number of pages."""
    cursor = start_after
    token: str | None = None
    pages = 0
    seen: list[str] = []
    while True:
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            args["Delimiter"] = delimiter
        if v2:
            if token is not None:
                args["ContinuationToken"] = token
            if start_after:
                args["StartAfter"] = start_after
            r = client.list_objects_v2(**args)
        else:
            if cursor:
                args["Marker"] = cursor
            r = client.list_objects(**args)
        pages += 1
        keys = [o["Key"] for o in r.get("Contents", [])]
        prefixes = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        exp_keys, exp_prefixes, exp_truncated = model.page(prefix, delimiter, cursor, max_keys)
        where = f"page {pages} v2={v2} prefix={prefix!r} delimiter={delimiter!r} max_keys={max_keys} after={cursor!r}"
        assert keys == exp_keys, where
        assert prefixes == exp_prefixes, where
        assert r["IsTruncated"] is exp_truncated, where
        assert r["MaxKeys"] == max_keys
        # botocore url-decodes Prefix for v2 only; S3 encodes it in v1 too.
        assert (r.get("Prefix", "") if v2 else unquote_plus(r.get("Prefix", ""))) == prefix, where
        assert r.get("Delimiter", "") == delimiter
        if v2:
            assert r["KeyCount"] == len(keys) + len(prefixes), where
            assert ("NextContinuationToken" in r) is exp_truncated, where
            token = r.get("NextContinuationToken")
        elif delimiter and exp_truncated:
            assert r["NextMarker"] == _last_item(keys, prefixes), where
        else:
            assert "NextMarker" not in r, where
        seen += sorted(keys + prefixes, key=lambda s: s.encode())
        if not exp_truncated:
            break
        cursor = _last_item(keys, prefixes)
    # Pages neither overlap nor skip: together they are the model's full listing.
    assert seen == [v for _, v in model.items(prefix, delimiter, start_after)]
    return pages


# --- 10,000 keys -----------------------------------------------------------------------
def _ten_thousand_keys() -> list[str]:
    rng = random.Random(f"{SEED}-10k")
    keys: set[str] = set()
    for split in ("train", "val"):
        for cls in range(30):
            for i in range(100):
                keys.add(f"ds/{split}/{cls:03d}/{i:04d}.jpg")  # 6000
    for day in range(1, 21):
        for hour in range(0, 24, 2):
            for n in range(8):
                keys.add(f"logs/2024-01-{day:02d}/{hour:02d}/{n}.log")  # 1920
    for i in range(1000):
        keys.add(f"k{i:05d}")
    alphabet = "ab/-._z/09é"
    while len(keys) < 10_000:
        depth = rng.randint(1, 4)
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(depth)]
        key = "r/" + "/".join(parts)
        keys.add(key)
    assert len(keys) == 10_000
    return sorted(keys)


def _fill(server: ServerProcess, bucket: str, keys: list[str]) -> None:
    local = threading.local()

    def put(key: str) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = make_client(server.endpoint, request_checksum_calculation="when_required")
        client.put_object(Bucket=bucket, Key=key, Body=key[-3:].encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))


@pytest.fixture(scope="module")
def list_server() -> Iterator[ServerProcess]:
    """A server of this module's own: its 10,000 keys go away with its data dir instead of
    10,000 deletes. The data dir is on tmpfs when there is one: listing does not test
    durability, and fsync dominates filling the buckets."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="tierstore-listing-", dir=shm if shm.is_dir() else None))
    srv = ServerProcess(base / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ls3(list_server: ServerProcess) -> Any:
    return make_client(list_server.endpoint)


@pytest.fixture(scope="module")
def big(list_server: ServerProcess, ls3: Any) -> tuple[str, Model]:
    bucket = "ten-thousand"
    ls3.create_bucket(Bucket=bucket)
    keys = _ten_thousand_keys()
    _fill(list_server, bucket, keys)
    return bucket, Model.of(keys)


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
@pytest.mark.parametrize("delimiter", ["", "/"], ids=["flat", "slash"])
@pytest.mark.parametrize("max_keys", [1000, 333])
def test_10k_full_walk(ls3: Any, big: tuple[str, Model], v2: bool, delimiter: str, max_keys: int) -> None:
    bucket, model = big
    pages = check_walk(ls3, bucket, model, v2=v2, prefix="", delimiter=delimiter, max_keys=max_keys)
    if not delimiter:
        assert pages == -(-10_000 // max_keys)


@pytest.mark.parametrize(
    ("prefix", "delimiter"),
    [
        ("ds/", "/"),
        ("ds/train/", "/"),
        ("ds/train/00", "/"),
        ("ds/val/029/", "/"),
        ("ds/", ""),
        ("logs/2024-01-1", "/"),
        ("logs/", "-"),
        ("logs/", "/0"),  # a delimiter of several characters
        ("r/", "/"),
        ("r/a", "."),
        ("k0", "5"),
        ("k", ""),
        ("nothing/", "/"),
        ("", "."),
    ],
)
@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
def test_10k_prefix_delimiter(ls3: Any, big: tuple[str, Model], prefix: str, delimiter: str, v2: bool) -> None:
    bucket, model = big
    check_walk(ls3, bucket, model, v2=v2, prefix=prefix, delimiter=delimiter, max_keys=500)


def test_10k_paginator_counts(ls3: Any, big: tuple[str, Model]) -> None:
    bucket, model = big
    listed = [
        o["Key"] for page in ls3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page["Contents"]
    ]
    assert listed == model.keys
    top = list(ls3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/"))
    assert [p["Prefix"] for page in top for p in page.get("CommonPrefixes", [])] == ["ds/", "logs/", "r/"]
    assert [o["Key"] for page in top for o in page.get("Contents", [])] == [f"k{i:05d}" for i in range(1000)]
    # 1003 items: "ds/" and 999 keys, then the last key, "logs/" and "r/".
    assert [page["KeyCount"] for page in top] == [1000, 3]
    # max-keys above 1000 is capped at 1000.
    r = ls3.list_objects_v2(Bucket=bucket, MaxKeys=5000)
    assert len(r["Contents"]) == 1000
    assert r["IsTruncated"] is True


@pytest.mark.parametrize("start_after", ["", "k00499", "ds/train/", "ds/val/015/0050.jpg", "logs/", "zzz", "a"])
@pytest.mark.parametrize("delimiter", ["", "/"])
def test_10k_start_after_and_marker(ls3: Any, big: tuple[str, Model], start_after: str, delimiter: str) -> None:
    bucket, model = big
    check_walk(ls3, bucket, model, v2=True, prefix="", delimiter=delimiter, max_keys=1000, start_after=start_after)
    check_walk(ls3, bucket, model, v2=False, prefix="", delimiter=delimiter, max_keys=1000, start_after=start_after)
    r = ls3.list_objects_v2(Bucket=bucket, StartAfter=start_after, MaxKeys=1)
    if start_after:
        assert r["StartAfter"] == start_after
    r1 = ls3.list_objects(Bucket=bucket, Marker=start_after, MaxKeys=1)
    assert r1["Marker"] == start_after


# --- a small set with tiny pages -------------------------------------------------------
@pytest.fixture(scope="module")
def small(list_server: ServerProcess, ls3: Any) -> tuple[str, Model]:
    rng = random.Random(f"{SEED}-300")
    keys: set[str] = set()
    segments = ["a", "b", "a.b", "ü", "x y", "0", "9", "a-", "-", ""]
    while len(keys) < 300:
        depth = rng.randint(1, 4)
        key = "/".join(rng.choice(segments) for _ in range(depth))
        if key:
            keys.add(key)
    bucket = "three-hundred"
    ls3.create_bucket(Bucket=bucket)
    _fill(list_server, bucket, sorted(keys))
    return bucket, Model.of(keys)


@pytest.mark.parametrize("max_keys", [1, 7])
@pytest.mark.parametrize(
    ("prefix", "delimiter"),
    [
        ("", ""),
        ("", "/"),
        ("a", "/"),
        ("a/", "/"),
        ("a/b/", "/"),
        ("x y/", "/"),
        ("", "."),
        ("ü", "/"),
        ("/", "/"),
        ("", "//"),
    ],
)
@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
def test_small_tiny_pages(
    ls3: Any, small: tuple[str, Model], prefix: str, delimiter: str, max_keys: int, v2: bool
) -> None:
    bucket, model = small
    check_walk(ls3, bucket, model, v2=v2, prefix=prefix, delimiter=delimiter, max_keys=max_keys)


# --- ordering, encoding, owner, errors -------------------------------------------------
ODD_KEYS = [
    "a",
    "b",
    "z",
    "~",
    "A",
    "0",
    " ",
    "a/b",
    "a-b",
    "a0",
    "é",
    "\u00ff",
    "\u0100",
    "\ue000",
    "\ufffd",
    "\uffff",
    "\U0001f600",
    "\U0010fffd",
    "\U0001f600/x",
    "\uffff/y",
]


def test_byte_order(s3: Any, bucket: str) -> None:
    for k in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    expected = sorted(ODD_KEYS, key=lambda k: k.encode())
    # UTF-16 order (Java, JavaScript) would put the astral characters before U+E000.
    assert expected.index("\U0001f600") > expected.index("\uffff") > expected.index("\ue000")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == expected
    model = Model.of(ODD_KEYS)
    for v2 in (True, False):
        check_walk(s3, bucket, model, v2=v2, prefix="", delimiter="", max_keys=1)
        check_walk(s3, bucket, model, v2=v2, prefix="", delimiter="/", max_keys=2)
        check_walk(s3, bucket, model, v2=v2, prefix="\uffff", delimiter="/", max_keys=1)


SPECIAL_KEYS = [
    "sp ace/x",
    "plus+sign",
    "pct%41",
    "uni/ü/😀",
    "ctrl\x01x",
    "tab\tx",
    "nl\nx",
    "cr\rx",
    "amp&<>\"'",
    "q?h#",
]


def test_encoding_type_url(s3: Any, bucket: str) -> None:
    for k in SPECIAL_KEYS:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    expected = sorted(SPECIAL_KEYS, key=lambda k: k.encode())
    # botocore requests encoding-type=url by itself and decodes the keys.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == expected
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == expected
    # Asked for explicitly, botocore leaves the encoding alone: the keys arrive encoded.
    for call in (s3.list_objects_v2, s3.list_objects):
        r = call(Bucket=bucket, EncodingType="url")
        assert r["EncodingType"] == "url"
        raw = [o["Key"] for o in r["Contents"]]
        for k in raw:
            assert all(c.isascii() and c.isprintable() and c not in " \t\r\n<>&\"'+?#" for c in k), k
        assert [unquote_plus(k) for k in raw] == expected
    # Prefix, delimiter and common prefixes are encoded too.
    r = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Prefix="uni/ü", Delimiter="/")
    assert unquote_plus(r["Prefix"]) == "uni/ü"
    assert r["Prefix"] != "uni/ü"
    assert [unquote_plus(p["Prefix"]) for p in r["CommonPrefixes"]] == ["uni/ü/"]
    r = s3.list_objects_v2(Bucket=bucket, Prefix="sp ace", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["sp ace/"]
    assert r["Prefix"] == "sp ace"
    r = s3.list_objects(Bucket=bucket, Delimiter=" ", MaxKeys=1)
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == []
    assert r["Delimiter"] == " "
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=bucket, EncodingType="base64")
    assert _err(exc) == ("InvalidArgument", 400)


def test_fetch_owner(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"12345")
    plain = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert "Owner" not in plain
    assert plain["Size"] == 5
    assert plain["ETag"] == '"827ccb0eea8a706c4c34a16891f84e7b"'
    assert plain["StorageClass"] == "STANDARD"
    owned = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]
    assert owned["Owner"]["ID"]
    v1 = s3.list_objects(Bucket=bucket)["Contents"][0]
    assert v1["Owner"]["ID"] == owned["Owner"]["ID"]
    # The same instant as HEAD reports it (S3 lists whole seconds).
    assert v1["LastModified"] == s3.head_object(Bucket=bucket, Key="o")["LastModified"]
    assert plain["LastModified"] == v1["LastModified"]


def test_listing_follows_writes(s3: Any, bucket: str) -> None:
    keys = {f"w/{i}" for i in range(12)}
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"1")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "w/3"}, {"Key": "w/7"}]})
    s3.put_object(Bucket=bucket, Key="w/5", Body=b"longer body")
    s3.copy_object(Bucket=bucket, Key="w/copy", CopySource={"Bucket": bucket, "Key": "w/5"})
    keys = (keys - {"w/3", "w/7"}) | {"w/copy"}
    model = Model.of(keys)
    check_walk(s3, bucket, model, v2=True, prefix="w/", delimiter="", max_keys=4)
    sizes = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert sizes["w/5"] == sizes["w/copy"] == len(b"longer body")
    assert sizes["w/0"] == 1


def test_listing_errors(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="!!!not-a-token!!!")
    assert _err(exc) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=bucket, MaxKeys=-1)
    assert _err(exc) == ("InvalidArgument", 400)
    empty = s3.list_objects_v2(Bucket=bucket)
    assert empty["KeyCount"] == 0
    assert "Contents" not in empty
    assert empty["IsTruncated"] is False
