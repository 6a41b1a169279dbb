"""Multipart uploads through boto3 against a real server."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import zlib
from pathlib import Path
from typing import Any

import pytest
from awscrt import checksums as crt
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

pytestmark = pytest.mark.both_catalogs  # the S3 API core on SQLite and on PostgreSQL (tests/conftest.py)

SEED = int(os.environ.get("TIERSTORE_TEST_SEED", "20240611"))
print(f"test_multipart seed: {SEED}")  # replay with TIERSTORE_TEST_SEED


@pytest.fixture(autouse=True)
def _show_seed() -> None:
    print(f"test_multipart seed: {SEED} (replay with TIERSTORE_TEST_SEED={SEED})")


MIB = 1024 * 1024
PART = 5 * MIB  # the smallest part allowed before the last


def _rng(salt: str) -> random.Random:
    return random.Random(f"{SEED}-{salt}")


def _err(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def _md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def multipart_etag(parts: list[bytes]) -> str:
    """S3's multipart ETag: MD5 of the concatenated binary part MD5s, then "-<part count>"."""
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def crc_digest(algorithm: str, data: bytes) -> bytes:
    if algorithm == "CRC32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm == "CRC32C":
        return crt.crc32c(data).to_bytes(4, "big")
    assert algorithm == "CRC64NVME"
    return crt.crc64nvme(data).to_bytes(8, "big")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _upload(s3: Any, bucket: str, key: str, parts: list[bytes], **create: Any) -> tuple[str, list[dict[str, Any]]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    done = []
    for n, data in enumerate(parts, start=1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data)
        assert r["ETag"] == _md5(data)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    return upload_id, done


# --- the basic flow ---------------------------------------------------------------------
def test_multipart_round_trip(s3: Any, bucket: str) -> None:
    rng = _rng("basic")
    parts = [rng.randbytes(PART), rng.randbytes(PART), rng.randbytes(1234)]
    create = s3.create_multipart_upload(
        Bucket=bucket, Key="mp/obj", ContentType="application/x-test", Metadata={"origin": "multipart"}
    )
    assert create["Bucket"] == bucket
    assert create["Key"] == "mp/obj"
    upload_id = create["UploadId"]
    done = []
    for n, data in enumerate(parts, start=1):
        r = s3.upload_part(Bucket=bucket, Key="mp/obj", UploadId=upload_id, PartNumber=n, Body=data)
        assert r["ETag"] == _md5(data)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    # Not visible before completion.
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="mp/obj")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    r = s3.complete_multipart_upload(Bucket=bucket, Key="mp/obj", UploadId=upload_id, MultipartUpload={"Parts": done})
    expected_etag = multipart_etag(parts)
    assert r["ETag"] == expected_etag
    assert r["Bucket"] == bucket
    assert r["Key"] == "mp/obj"
    data = b"".join(parts)
    got = s3.get_object(Bucket=bucket, Key="mp/obj")
    assert got["Body"].read() == data
    assert got["ETag"] == expected_etag
    assert got["ContentLength"] == len(data)
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"origin": "multipart"}
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="mp/")["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("mp/obj", len(data), expected_etag)]
    # The upload is gone.
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="mp/obj", UploadId=upload_id)
    assert _err(exc) == ("NoSuchUpload", 404)
    # A range across a part boundary.
    r = s3.get_object(Bucket=bucket, Key="mp/obj", Range=f"bytes={PART - 10}-{PART + 9}")
    assert r["Body"].read() == data[PART - 10 : PART + 10]


def test_get_by_part_number(s3: Any, bucket: str) -> None:
    rng = _rng("partnumber")
    parts = [rng.randbytes(PART), rng.randbytes(PART + 17), rng.randbytes(99)]
    upload_id, done = _upload(s3, bucket, "pn", parts)
    s3.complete_multipart_upload(Bucket=bucket, Key="pn", UploadId=upload_id, MultipartUpload={"Parts": done})
    total = sum(len(p) for p in parts)
    offset = 0
    for n, data in enumerate(parts, start=1):
        r = s3.get_object(Bucket=bucket, Key="pn", PartNumber=n)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert r["PartsCount"] == 3
        assert r["ContentLength"] == len(data)
        assert r["ContentRange"] == f"bytes {offset}-{offset + len(data) - 1}/{total}"
        assert r["Body"].read() == data
        h = s3.head_object(Bucket=bucket, Key="pn", PartNumber=n)
        assert h["PartsCount"] == 3
        assert h["ContentLength"] == len(data)
        offset += len(data)
    # S3 answers InvalidPartNumber; the status is what clients act on.
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="pn", PartNumber=4)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert exc.value.response["Error"]["Code"] == "InvalidPartNumber"
    # A plain object is one part.
    s3.put_object(Bucket=bucket, Key="single", Body=b"one part")
    r = s3.get_object(Bucket=bucket, Key="single", PartNumber=1)
    assert r["Body"].read() == b"one part"
    assert r["ETag"] == _md5(b"one part")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="single", PartNumber=2)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert exc.value.response["Error"]["Code"] == "InvalidPartNumber"
    # partNumber with a Range is refused.
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="pn", PartNumber=1, Range="bytes=0-1")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_single_small_part(s3: Any, bucket: str) -> None:
    upload_id, done = _upload(s3, bucket, "tiny", [b"x"])
    r = s3.complete_multipart_upload(Bucket=bucket, Key="tiny", UploadId=upload_id, MultipartUpload={"Parts": done})
    assert r["ETag"] == multipart_etag([b"x"])
    assert s3.get_object(Bucket=bucket, Key="tiny")["Body"].read() == b"x"


# --- completion errors -----------------------------------------------------------------
def test_entity_too_small(s3: Any, bucket: str) -> None:
    upload_id, done = _upload(s3, bucket, "small", [b"a" * 1024, b"b" * 1024])
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=upload_id, MultipartUpload={"Parts": done})
    assert _err(exc) == ("EntityTooSmall", 400)
    # The upload survives a failed completion and can still be completed correctly.
    r = s3.complete_multipart_upload(
        Bucket=bucket, Key="small", UploadId=upload_id, MultipartUpload={"Parts": done[1:]}
    )
    assert r["ETag"] == multipart_etag([b"b" * 1024])
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"b" * 1024


def test_invalid_part_and_order(s3: Any, bucket: str) -> None:
    rng = _rng("invalid")
    parts = [rng.randbytes(PART), rng.randbytes(10)]
    upload_id, done = _upload(s3, bucket, "inv", parts)

    def complete(ps: list[dict[str, Any]]) -> Any:
        return s3.complete_multipart_upload(Bucket=bucket, Key="inv", UploadId=upload_id, MultipartUpload={"Parts": ps})

    wrong_etag = [done[0], {"PartNumber": 2, "ETag": _md5(b"not the part")}]
    missing = [done[0], {"PartNumber": 3, "ETag": done[1]["ETag"]}]
    for ps in (wrong_etag, missing):
        with pytest.raises(ClientError) as exc:
            complete(ps)
        assert _err(exc) == ("InvalidPart", 400)
    for ps in ([done[1], done[0]], [done[0], done[0]]):
        with pytest.raises(ClientError) as exc:
            complete(ps)
        assert _err(exc) == ("InvalidPartOrder", 400)
    with pytest.raises(ClientError) as exc:
        complete([])
    assert _err(exc) == ("MalformedXML", 400)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="inv")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # ETags compare without their quotes, as S3 does.
    r = complete([{"PartNumber": d["PartNumber"], "ETag": d["ETag"].strip('"')} for d in done])
    assert r["ETag"] == multipart_etag(parts)


def test_upload_part_content_md5(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="md5")["UploadId"]
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="md5", UploadId=upload_id, PartNumber=1, Body=b"data", ContentMD5=wrong)
    assert _err(exc) == ("BadDigest", 400)
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="md5", UploadId=upload_id)
    s3.abort_multipart_upload(Bucket=bucket, Key="md5", UploadId=upload_id)


def test_part_number_limits(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="lim")["UploadId"]
    for n in (0, 10_001):
        with pytest.raises(ClientError) as exc:
            s3.upload_part(Bucket=bucket, Key="lim", UploadId=upload_id, PartNumber=n, Body=b"x")
        assert _err(exc) == ("InvalidArgument", 400)
    r = s3.upload_part(Bucket=bucket, Key="lim", UploadId=upload_id, PartNumber=10_000, Body=b"x")
    assert r["ETag"] == _md5(b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="lim", UploadId=upload_id)


def test_conditional_complete(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="cond", Body=b"existing")
    upload_id, done = _upload(s3, bucket, "cond", [b"new"])
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="cond", UploadId=upload_id, MultipartUpload={"Parts": done}, IfNoneMatch="*"
        )
    assert _err(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="cond")["Body"].read() == b"existing"


# --- abort, replace, copy ---------------------------------------------------------------
def test_abort(s3: Any, bucket: str) -> None:
    upload_id, done = _upload(s3, bucket, "ab", [b"part one"])
    r = s3.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=upload_id)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    calls = [
        lambda: s3.upload_part(Bucket=bucket, Key="ab", UploadId=upload_id, PartNumber=2, Body=b"x"),
        lambda: s3.list_parts(Bucket=bucket, Key="ab", UploadId=upload_id),
        lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key="ab", UploadId=upload_id, MultipartUpload={"Parts": done}
        ),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=upload_id),
        lambda: s3.upload_part(Bucket=bucket, Key="ab", UploadId="0" * 32, PartNumber=1, Body=b"x"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as exc:
            call()
        assert _err(exc) == ("NoSuchUpload", 404)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="ab")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_upload_id_is_bound_to_its_key(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="bound")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="other", UploadId=upload_id, PartNumber=1, Body=b"x")
    assert _err(exc) == ("NoSuchUpload", 404)
    s3.abort_multipart_upload(Bucket=bucket, Key="bound", UploadId=upload_id)


def test_reupload_part_replaces_it(s3: Any, bucket: str) -> None:
    rng = _rng("replace")
    first, second, last = rng.randbytes(PART), rng.randbytes(PART + 1), b"tail"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="re")["UploadId"]
    old = s3.upload_part(Bucket=bucket, Key="re", UploadId=upload_id, PartNumber=1, Body=first)["ETag"]
    new = s3.upload_part(Bucket=bucket, Key="re", UploadId=upload_id, PartNumber=1, Body=second)["ETag"]
    tail = s3.upload_part(Bucket=bucket, Key="re", UploadId=upload_id, PartNumber=2, Body=last)["ETag"]
    listed = s3.list_parts(Bucket=bucket, Key="re", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [(1, new, len(second)), (2, tail, 4)]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="re",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": old}, {"PartNumber": 2, "ETag": tail}]},
        )
    assert _err(exc) == ("InvalidPart", 400)
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="re",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": new}, {"PartNumber": 2, "ETag": tail}]},
    )
    assert s3.get_object(Bucket=bucket, Key="re")["Body"].read() == second + last


def test_upload_part_copy(s3: Any, bucket: str) -> None:
    rng = _rng("partcopy")
    source = rng.randbytes(PART + 4321)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    src_etag = _md5(source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    whole = s3.upload_part_copy(
        Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=1, CopySource={"Bucket": bucket, "Key": "src"}
    )
    assert whole["CopyPartResult"]["ETag"] == src_etag
    ranged = s3.upload_part_copy(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange="bytes=100-1099",
    )
    assert ranged["CopyPartResult"]["ETag"] == _md5(source[100:1100])
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="dst",
            UploadId=upload_id,
            PartNumber=3,
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceIfMatch='"0000"',
        )
    assert _err(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(
            Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=3, CopySource={"Bucket": bucket, "Key": "gone"}
        )
    assert _err(exc) == ("NoSuchKey", 404)
    # A copy range must be bytes=first-last inside the source; anything else is refused, never
    # silently widened to the whole source.
    # Malformed -> InvalidArgument; well formed but past the source's end -> InvalidRange (416).
    cases = [(b, ("InvalidArgument", 400)) for b in ("bytes=0-", "bytes=-10", "bytes=10-5", "bytes=x-y")]
    for bad, expected in [*cases, (f"bytes=0-{len(source)}", ("InvalidRange", 416))]:
        with pytest.raises(ClientError) as exc:
            s3.upload_part_copy(
                Bucket=bucket,
                Key="dst",
                UploadId=upload_id,
                PartNumber=3,
                CopySource={"Bucket": bucket, "Key": "src"},
                CopySourceRange=bad,
            )
        assert _err(exc) == expected, bad
    listed = s3.list_parts(Bucket=bucket, Key="dst", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, len(source)), (2, 1000)]
    parts = [{"PartNumber": 1, "ETag": src_etag}, {"PartNumber": 2, "ETag": ranged["CopyPartResult"]["ETag"]}]
    # Deleting the source does not affect the copied parts.
    s3.delete_object(Bucket=bucket, Key="src")
    r = s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert r["ETag"] == multipart_etag([source, source[100:1100]])
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == source + source[100:1100]


# --- listing parts and uploads ---------------------------------------------------------
def test_list_parts_pagination(s3: Any, bucket: str) -> None:
    bodies = [f"part {n}".encode() for n in range(1, 8)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="lp")["UploadId"]
    etags = {}
    for n in (3, 1, 7, 2, 5, 4, 6):  # out of order
        etags[n] = s3.upload_part(Bucket=bucket, Key="lp", UploadId=upload_id, PartNumber=n, Body=bodies[n - 1])["ETag"]
    seen = []
    marker = 0
    pages = 0
    while True:
        r = s3.list_parts(Bucket=bucket, Key="lp", UploadId=upload_id, MaxParts=3, PartNumberMarker=marker)
        pages += 1
        nums = [p["PartNumber"] for p in r["Parts"]]
        assert nums == list(range(marker + 1, min(marker + 3, 7) + 1))
        for p in r["Parts"]:
            assert p["ETag"] == etags[p["PartNumber"]]
            assert p["Size"] == len(bodies[p["PartNumber"] - 1])
        assert r["MaxParts"] == 3
        assert r["UploadId"] == upload_id
        seen += nums
        if not r["IsTruncated"]:
            break
        assert r["NextPartNumberMarker"] == nums[-1]
        marker = r["NextPartNumberMarker"]
    assert seen == list(range(1, 8))
    assert pages == 3
    via_paginator = [
        p["PartNumber"]
        for page in s3.get_paginator("list_parts").paginate(
            Bucket=bucket, Key="lp", UploadId=upload_id, PaginationConfig={"PageSize": 2}
        )
        for p in page["Parts"]
    ]
    assert via_paginator == list(range(1, 8))
    s3.abort_multipart_upload(Bucket=bucket, Key="lp", UploadId=upload_id)


def test_list_multipart_uploads(s3: Any, bucket: str) -> None:
    created: list[tuple[str, str]] = []
    for key in ("a/1", "a/2", "b/1", "same", "same", "same", "z"):
        created.append((key, s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]))
    r = s3.list_multipart_uploads(Bucket=bucket)
    # By key, and for one key by initiation time.
    assert [(u["Key"], u["UploadId"]) for u in r["Uploads"]] == created
    assert r["IsTruncated"] is False
    r = s3.list_multipart_uploads(Bucket=bucket, Prefix="a/")
    assert [u["Key"] for u in r["Uploads"]] == ["a/1", "a/2"]
    assert r["Prefix"] == "a/"
    r = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "b/"]
    assert [u["Key"] for u in r["Uploads"]] == ["same", "same", "same", "z"]
    # Pages of two, following NextKeyMarker/NextUploadIdMarker.
    seen: list[tuple[str, str]] = []
    args: dict[str, Any] = {"Bucket": bucket, "MaxUploads": 2}
    while True:
        r = s3.list_multipart_uploads(**args)
        page = [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
        assert len(page) <= 2
        seen += page
        if not r["IsTruncated"]:
            break
        assert (r["NextKeyMarker"], r["NextUploadIdMarker"]) == page[-1]
        args.update(KeyMarker=r["NextKeyMarker"], UploadIdMarker=r["NextUploadIdMarker"])
    assert seen == created
    # With a delimiter, common prefixes count toward MaxUploads and are not repeated.
    seen_prefixes: list[str] = []
    seen_keys: list[str] = []
    args = {"Bucket": bucket, "MaxUploads": 1, "Delimiter": "/"}
    while True:
        r = s3.list_multipart_uploads(**args)
        page_prefixes = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        page_keys = [u["Key"] for u in r.get("Uploads", [])]
        assert len(page_prefixes) + len(page_keys) == 1
        seen_prefixes += page_prefixes
        seen_keys += page_keys
        if not r["IsTruncated"]:
            break
        args.update(KeyMarker=r["NextKeyMarker"], UploadIdMarker=r["NextUploadIdMarker"])
    assert seen_prefixes == ["a/", "b/"]
    assert seen_keys == ["same", "same", "same", "z"]
    r = s3.list_multipart_uploads(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [u["Key"] for u in r["Uploads"]] == ["a/1", "a/2"]
    assert "CommonPrefixes" not in r
    # A key marker alone skips every upload of that key.
    r = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="same")
    assert [u["Key"] for u in r["Uploads"]] == ["z"]
    for key, upload_id in created:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


# --- checksums -------------------------------------------------------------------------
def test_composite_crc32(s3: Any, bucket: str) -> None:
    rng = _rng("composite")
    parts = [rng.randbytes(PART), rng.randbytes(777)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="cc", ChecksumAlgorithm="CRC32")["UploadId"]
    done = []
    for n, data in enumerate(parts, start=1):
        r = s3.upload_part(
            Bucket=bucket, Key="cc", UploadId=upload_id, PartNumber=n, Body=data, ChecksumAlgorithm="CRC32"
        )
        assert r["ChecksumCRC32"] == b64(crc_digest("CRC32", data))
        done.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    listed = s3.list_parts(Bucket=bucket, Key="cc", UploadId=upload_id)
    assert listed["ChecksumAlgorithm"] == "CRC32"
    assert [p["ChecksumCRC32"] for p in listed["Parts"]] == [d["ChecksumCRC32"] for d in done]
    # A part checksum that does not match what was stored fails the completion.
    bad = [done[0], {**done[1], "ChecksumCRC32": b64(crc_digest("CRC32", b"other"))}]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="cc", UploadId=upload_id, MultipartUpload={"Parts": bad})
    assert _err(exc) == ("InvalidPart", 400)
    r = s3.complete_multipart_upload(Bucket=bucket, Key="cc", UploadId=upload_id, MultipartUpload={"Parts": done})
    composite = crc_digest("CRC32", b"".join(crc_digest("CRC32", p) for p in parts))
    expected = f"{b64(composite)}-2"
    assert r["ChecksumCRC32"] == expected
    assert r["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=bucket, Key="cc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == expected
    assert head["ChecksumType"] == "COMPOSITE"
    got = s3.get_object(Bucket=bucket, Key="cc", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts)
    assert got["ChecksumCRC32"] == expected


@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32", "CRC32C"])
def test_full_object_checksum(s3: Any, bucket: str, algorithm: str) -> None:
    rng = _rng(f"full-{algorithm}")
    parts = [rng.randbytes(PART), rng.randbytes(PART + 3), rng.randbytes(5)]
    data = b"".join(parts)
    full = b64(crc_digest(algorithm, data))
    member = f"Checksum{algorithm}"
    key = f"full-{algorithm}"
    create = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm, ChecksumType="FULL_OBJECT")
    assert create["ChecksumType"] == "FULL_OBJECT"
    upload_id = create["UploadId"]
    done = []
    for n, part in enumerate(parts, start=1):
        r = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=part, ChecksumAlgorithm=algorithm
        )
        assert r[member] == b64(crc_digest(algorithm, part))
        done.append({"PartNumber": n, "ETag": r["ETag"], member: r[member]})
    wrong = b64(crc_digest(algorithm, b"not the object"))
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": done},
            ChecksumType="FULL_OBJECT",
            **{member: wrong},
        )
    assert _err(exc) == ("BadDigest", 400)
    r = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": done},
        ChecksumType="FULL_OBJECT",
        **{member: full},
    )
    assert r[member] == full
    assert r["ChecksumType"] == "FULL_OBJECT"
    assert r["ETag"] == multipart_etag(parts)
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got[member] == full
    assert got["ChecksumType"] == "FULL_OBJECT"


def test_checksum_type_mismatch(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(Bucket=bucket, Key="x", ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT")
    assert _err(exc) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(Bucket=bucket, Key="x", ChecksumAlgorithm="CRC64NVME", ChecksumType="COMPOSITE")
    assert _err(exc) == ("InvalidRequest", 400)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


# --- a large object through the transfer manager ---------------------------------------
@pytest.mark.slow
def test_upload_file_download_file_100mib(s3: Any, bucket: str, tmp_path: Path) -> None:
    size = 100 * MIB
    chunk = 8 * MIB  # boto3's default multipart threshold and chunk size
    rng = _rng("100mib")
    src = tmp_path / "src.bin"
    parts: list[bytes] = []
    with src.open("wb") as f:
        remaining = size
        while remaining:
            block = rng.randbytes(min(chunk, remaining))
            parts.append(block)
            f.write(block)
            remaining -= len(block)
    config = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk)
    s3.upload_file(str(src), bucket, "big/object.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big/object.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == size
    assert head["ETag"] == multipart_etag(parts)
    # boto3 sends CRC32 part checksums by default; the object reports the matching CRC32.
    if head.get("ChecksumType") == "FULL_OBJECT":
        assert head["ChecksumCRC32"] == b64(crc_digest("CRC32", b"".join(parts)))
    else:
        composite = crc_digest("CRC32", b"".join(crc_digest("CRC32", p) for p in parts))
        assert head["ChecksumCRC32"] == f"{b64(composite)}-{len(parts)}"
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "big/object.bin", str(dst), Config=config)
    assert dst.stat().st_size == size
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_part_etag_from_checksum_on_request(server: Any, bucket: str) -> None:
    """``x-tierstore-etag: checksum`` (what checkpoint uploads send): a part carrying its CRC and
    no Content-MD5 gets an ETag derived from that verified CRC, not the MD5 of its bytes; the
    object completes and reads back exact. Without the CRC value, or with Content-MD5, or
    without the header, a part's ETag stays its MD5."""
    from tests.conftest import make_client

    s3 = make_client(server.endpoint)
    s3.meta.events.register("before-sign.s3.UploadPart", _tierstore_etag_header)
    rng = _rng("etag-from-checksum")
    parts = [rng.randbytes(PART), rng.randbytes(PART), rng.randbytes(1000)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC64NVME")["UploadId"]
    sent = []
    for i, data in enumerate(parts[:2], 1):
        crc = b64(crc_digest("CRC64NVME", data))
        r = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=i, Body=data, ChecksumCRC64NVME=crc)
        assert r["ETag"] != _md5(parts[i - 1])
        same = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=i, Body=data, ChecksumCRC64NVME=crc)
        assert same["ETag"] == r["ETag"]  # the same bytes: the same ETag
        sent.append({"PartNumber": i, "ETag": r["ETag"], "ChecksumCRC64NVME": crc})
    with_md5 = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=3, Body=parts[2],
                              ContentMD5=base64.b64encode(hashlib.md5(parts[2]).digest()).decode(),
                              ChecksumCRC64NVME=b64(crc_digest("CRC64NVME", parts[2])))  # fmt: skip
    assert with_md5["ETag"] == _md5(parts[2])
    sent.append(
        {"PartNumber": 3, "ETag": with_md5["ETag"], "ChecksumCRC64NVME": b64(crc_digest("CRC64NVME", parts[2]))}
    )
    wrong = b64(crc_digest("CRC64NVME", b"other"))
    with pytest.raises(ClientError) as bad:  # the CRC the ETag comes from is still verified
        s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=4, Body=parts[2], ChecksumCRC64NVME=wrong)
    assert _err(bad) == ("BadDigest", 400)
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=up, MultipartUpload={"Parts": sent})
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"".join(parts)
    plain = make_client(server.endpoint)  # no header: MD5 part ETags, as S3
    up2 = plain.create_multipart_upload(Bucket=bucket, Key="k2")["UploadId"]
    r2 = plain.upload_part(Bucket=bucket, Key="k2", UploadId=up2, PartNumber=1, Body=parts[0],
                           ChecksumCRC64NVME=b64(crc_digest("CRC64NVME", parts[0])))  # fmt: skip
    assert r2["ETag"] == _md5(parts[0])
    plain.abort_multipart_upload(Bucket=bucket, Key="k2", UploadId=up2)


def _tierstore_etag_header(request: Any, **_: Any) -> None:
    request.headers["x-tierstore-etag"] = "checksum"
