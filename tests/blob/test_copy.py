"""``copy_blobs`` (the data half of ``tierstore admin migrate --store``, blob/_copy.py): local blobs
copied by id into the session's real SeaweedFS, verified by size and CRC32C, resumable, the
source untouched; a damaged local blob reported, never uploaded; a wrong object under an id
replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.blob import test_s3 as s3t
from tests.seaweed import SeaweedFS
from tierstore.blob import LocalBlobStore
from tierstore.blob._copy import CRC_META, copy_blobs
from tierstore.blob._protocol import crc32c
from tierstore.testing.blobstore import new_blob_id, payload, run, stream

pytestmark = pytest.mark.peer

MIB = 1024 * 1024
remote = s3t.remote  # the module's bucket on the session's SeaweedFS


def test_blobs_are_copied_by_id_verified_and_a_rerun_resumes(remote: SeaweedFS, tmp_path: Path) -> None:
    async def body() -> None:
        local = LocalBlobStore(tmp_path / "data")
        sizes = [0, 1, 4096, 70_000, s3t.PART + 123]  # the last one a multipart put
        blobs = {new_blob_id(): payload(n, seed=n) for n in sizes}
        for blob_id, data in blobs.items():
            await local.put(blob_id, stream(data, [MIB]))
        files = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
        target = s3t.make_store(remote)
        listed = [(blob_id, len(data)) for blob_id, data in blobs.items()]
        seen: list[int] = []
        first = await copy_blobs(local, target, listed[:2], on_blob=seen.append)  # a run that stopped early
        assert (first.copied, first.present, first.failed) == (2, 0, [])
        report = await copy_blobs(local, target, listed, concurrency=3, on_blob=seen.append)
        assert (report.copied, report.present, report.failed) == (3, 2, [])
        assert report.bytes_copied == sum(len(d) for d in list(blobs.values())[2:])
        assert sorted(seen) == sorted([len(d) for d in list(blobs.values())[:2]] + [len(d) for d in blobs.values()])
        for blob_id, data in blobs.items():
            assert await target.read(blob_id) == data
            assert (await target.head_meta(blob_id) or {})[CRC_META] == f"{crc32c(data):08x}"
        again = await copy_blobs(local, target, listed)
        assert (again.copied, again.present) == (0, len(blobs))
        assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()} == files  # untouched

    run(body())


def test_a_damaged_local_blob_is_reported_and_a_wrong_object_replaced(remote: SeaweedFS, tmp_path: Path) -> None:
    async def body() -> None:
        local = LocalBlobStore(tmp_path / "data")
        good, bad, short = new_blob_id(), new_blob_id(), new_blob_id()
        for blob_id in (good, bad, short):
            await local.put(blob_id, stream(payload(10_000, seed=len(blob_id)), [4096]))
        path = local.blob_path(bad)
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
        target = s3t.make_store(remote)
        await target.put(good, stream(b"a foreign object under the id"))  # not these bytes: replaced
        report = await copy_blobs(local, target, [(good, 10_000), (bad, 10_000), (short, 9_999)])
        assert report.copied == 1 and report.present == 0
        assert [(b, why.split(":")[0]) for b, why in sorted(report.failed)] == sorted(
            [(bad, "the local copy is damaged"), (short, "the local copy has 10000 bytes, the catalog says 9999")]
        )
        assert await target.read(good) == payload(10_000, seed=len(good))
        assert await target.stat(bad) is None and await target.stat(short) is None

    run(body())
