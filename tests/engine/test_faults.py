"""An embedded ObjectService over a FaultyBlobStore (testing/faulty.py) against a dict model.

Every operation either succeeds and the model advances, or raises a domain error and the model
stays as it was. Afterwards, with faults off, every key reads back what the model says (or
CorruptBlob if one of its blobs was bit-flipped: never wrong bytes), GC leaves no orphan blob,
and no catalog row names a missing blob. Replay a failure with TIERSTORE_TEST_SEED=<seed>.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tierstore.blob import LocalBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.engine import ObjectService
from tierstore.engine._service import MIN_PART_BYTES, CompletedPart
from tierstore.errors import CorruptBlob, InsufficientStorage, InternalError, InvalidPart, NoSuchKey, NoSuchUpload
from tierstore.testing.faulty import FaultPlan, FaultyBlobStore, Trigger, seeds
from tierstore.types import ObjectMeta, PartInfo

BUCKET = "faults"
KEYS = [f"k{i}" for i in range(8)]
OPS = 300
DOMAIN_ERRORS = (InternalError, InsufficientStorage)  # CorruptBlob is an InternalError

# EIO on delete is left out of the random plan: see test_failed_trash_drain_reports_a_committed_write.
PLAN = FaultPlan(
    eio={"put": Trigger(p=0.08), "get": Trigger(p=0.08), "read": Trigger(p=0.08), "stat": Trigger(p=0.08)},
    enospc=Trigger(p=0.05),
    torn=Trigger(p=0.05),
    bitflip=Trigger(p=0.04),
)


async def _body(data: bytes, piece: int = 16 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


class _Env:
    """Bodies of 0, 1 and 100 bytes are stored inline (docs/inline.md) unless ``inline_max_bytes=0``:
    the random workload mixes both kinds; faults only ever hit the blob ones."""

    def __init__(self, tmp_path: Path, plan: FaultPlan, seed: int, *, inline_max_bytes: int = 16 * 1024) -> None:
        self.root = tmp_path / "data"
        self.local = LocalBlobStore(self.root)
        self.blobs = FaultyBlobStore(self.local, plan, seed=seed)
        self.catalog = SqliteCatalog(tmp_path / "catalog.db")
        self.service = ObjectService(self.catalog, self.blobs, inline_max_bytes=inline_max_bytes)
        self.db = tmp_path / "catalog.db"

    def close(self) -> None:
        self.catalog.close()

    def referenced(self) -> set[str]:
        """Every blob id the catalog's ``blobs`` table or its trash names."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT blob_id FROM blobs UNION SELECT blob_id FROM trash").fetchall()
        conn.close()
        return {r[0] for r in rows}

    async def key_blobs(self, key: str) -> list[str]:
        record = await self.catalog.get_latest(BUCKET, key)
        assert record is not None
        return [b.blob_id for b in record.blobs]


async def _workload(env: _Env, rng: random.Random, model: dict[str, bytes]) -> dict[str, int]:
    svc = env.service
    stats = {"ok": 0, "failed": 0}
    for step in range(OPS):
        key = rng.choice(KEYS)
        before = dict(model)
        roll = rng.random()
        try:
            if roll < 0.35:  # put / overwrite
                data = rng.randbytes(rng.choice([0, 1, 100, 70_000, 200_000]))
                await svc.put_object(BUCKET, key, _body(data))
                model[key] = data
            elif roll < 0.60:  # get
                try:
                    _, got = await svc.read_object(BUCKET, key)
                except NoSuchKey:
                    assert key not in model, f"step {step}: {key} vanished"
                else:
                    assert got == model[key], f"step {step}: {key} read wrong bytes"
            elif roll < 0.72:  # delete
                await svc.delete_object(BUCKET, key)
                model.pop(key, None)
            elif roll < 0.82:  # copy
                src = rng.choice(KEYS)
                if src == key or src not in model:
                    continue
                await svc.copy_object(BUCKET, src, BUCKET, key)
                model[key] = model[src]
            else:  # multipart: upload_part(s) + complete; a failed part aborts the upload
                two = rng.random() < 0.15
                parts = [rng.randbytes(MIN_PART_BYTES), rng.randbytes(1000)] if two else [rng.randbytes(90_000)]
                upload = await svc.create_multipart_upload(BUCKET, key)
                try:
                    done = []
                    for n, part in enumerate(parts, 1):
                        info = await svc.upload_part(BUCKET, key, upload.upload_id, n, _body(part))
                        done.append(CompletedPart(n, info.etag))
                    await svc.complete_multipart_upload(BUCKET, key, upload.upload_id, done)
                except DOMAIN_ERRORS:
                    await svc.abort_multipart_upload(BUCKET, key, upload.upload_id)
                    raise
                model[key] = b"".join(parts)
            stats["ok"] += 1
        except DOMAIN_ERRORS:
            stats["failed"] += 1
            assert model == before
    return stats


async def _check(env: _Env, model: dict[str, bytes]) -> None:
    env.blobs.active = False
    svc = env.service
    for key in KEYS:
        if key not in model:
            with pytest.raises(NoSuchKey):
                await svc.read_object(BUCKET, key)
            continue
        if env.blobs.flipped & set(await env.key_blobs(key)):
            with pytest.raises(CorruptBlob):
                await svc.read_object(BUCKET, key)
        else:
            _, got = await svc.read_object(BUCKET, key)
            assert got == model[key], f"{key} reads wrong bytes"
    assert (await svc.list_multipart_uploads(BUCKET))[0] == []
    await svc.collect_garbage(grace_s=0)
    on_disk = {info.blob_id async for info in env.local.scan()}
    referenced = env.referenced()
    assert on_disk - referenced == set(), "orphan blobs survived GC"
    assert referenced - on_disk == set(), "the catalog names blobs that are gone"
    assert os.listdir(env.root / "tmp") == [], "temp files left behind"
    live = {b for key in model for b in await env.key_blobs(key)}
    assert live <= on_disk


def _run(tmp_path: Path, seed: int) -> tuple[dict[str, bytes], dict[str, int], FaultyBlobStore]:
    print(f"seed={seed}")
    env = _Env(tmp_path, PLAN, seed)
    try:

        async def body() -> tuple[dict[str, bytes], dict[str, int]]:
            await env.service.create_bucket(BUCKET)
            model: dict[str, bytes] = {}
            stats = await _workload(env, random.Random(seed), model)
            await _check(env, model)
            return model, stats

        model, stats = asyncio.run(body())
    finally:
        env.close()
    return model, stats, env.blobs


@pytest.mark.parametrize("seed", seeds(11, 22, 33))
def test_random_faults_against_model(tmp_path: Path, seed: int) -> None:
    _, stats, blobs = _run(tmp_path, seed)
    kinds = {r.kind for r in blobs.log}
    print(f"seed={seed} {stats} faults={len(blobs.log)} kinds={sorted(kinds)} flipped={len(blobs.flipped)}")
    assert stats["failed"] > 0
    assert {"eio", "enospc", "torn"} <= kinds


def test_replays_from_seed(tmp_path: Path) -> None:
    seed = seeds(44)[-1]
    model_a, stats_a, blobs_a = _run(tmp_path / "a", seed)
    model_b, stats_b, blobs_b = _run(tmp_path / "b", seed)
    assert stats_a == stats_b
    assert model_a == model_b
    assert [r.replayable() for r in blobs_a.log] == [r.replayable() for r in blobs_b.log]


# --- regressions -----------------------------------------------------------------------------------
def test_failed_trash_drain_does_not_fail_a_committed_write(tmp_path: Path) -> None:
    """Draining the trash after a commit is housekeeping: a failed blob delete there must not
    report the (committed) write as failed; GC collects the blob later."""
    env = _Env(tmp_path, FaultPlan(eio={"delete": Trigger.on(1)}), seed=0, inline_max_bytes=0)
    svc = env.service

    async def body() -> None:
        await svc.create_bucket(BUCKET)
        await svc.put_object(BUCKET, "src", _body(b"new"))
        await svc.put_object(BUCKET, "dst", _body(b"old"))
        old_blobs = await env.key_blobs("dst")
        await svc.copy_object(BUCKET, "src", BUCKET, "dst")  # the old "dst" blob goes to the trash
        assert [f.kind for f in env.blobs.log] == ["eio"], env.blobs.log  # the drain did fail
        _, got = await svc.read_object(BUCKET, "dst")
        assert got == b"new"
        assert await env.catalog.trash_batch() == old_blobs  # still queued, not forgotten
        env.blobs.active = False
        await svc.collect_garbage(grace_s=0)
        assert await env.catalog.trash_batch() == []
        assert not any(env.local.blob_path(b).exists() for b in old_blobs)

    try:
        asyncio.run(body())
    finally:
        env.close()


class _PartsTakenCatalog(SqliteCatalog):
    """The first ``list_parts`` lets ``before_first_list`` (a concurrent completion) run to its
    end first: the window between a completion finding its upload and reading its parts."""

    before_first_list: Callable[[], Awaitable[object]] | None = None

    async def list_parts(self, upload_id: str, after_part: int = 0, limit: int = 10_000) -> list[PartInfo]:
        hook, self.before_first_list = self.before_first_list, None
        if hook is not None:
            await hook()
        return await super().list_parts(upload_id, after_part, limit)


def test_completion_whose_parts_a_concurrent_completion_took_answers_its_result(tmp_path: Path) -> None:
    """Two CompleteMultipartUpload calls of one upload with the same parts: the one that finds
    the parts gone (the other committed after this one found the upload) answers the other's
    result, not InvalidPart; with other parts than the winner's, NoSuchUpload (as a later retry
    is answered)."""
    catalog = _PartsTakenCatalog(tmp_path / "catalog.db")
    svc = ObjectService(catalog, LocalBlobStore(tmp_path / "data"), inline_max_bytes=0)

    async def body() -> None:
        await svc.create_bucket(BUCKET)
        await svc.set_bucket_versioning(BUCKET, "Enabled")
        up = await svc.create_multipart_upload(BUCKET, "race")
        done = [CompletedPart(1, (await svc.upload_part(BUCKET, "race", up.upload_id, 1, _body(b"raced"))).etag)]
        won: list[ObjectMeta] = []

        async def other() -> None:
            won.append(await svc.complete_multipart_upload(BUCKET, "race", up.upload_id, done))

        catalog.before_first_list = other
        late = await svc.complete_multipart_upload(BUCKET, "race", up.upload_id, done)
        assert [(late.version_id, late.etag)] == [(m.version_id, m.etag) for m in won]
        _, got = await svc.read_object(BUCKET, "race")
        assert got == b"raced"

        up2 = await svc.create_multipart_upload(BUCKET, "race2")
        part = await svc.upload_part(BUCKET, "race2", up2.upload_id, 1, _body(b"a"))
        part2 = await svc.upload_part(BUCKET, "race2", up2.upload_id, 2, _body(b"b"))
        first = [CompletedPart(1, part.etag)]

        async def other2() -> None:
            await svc.complete_multipart_upload(BUCKET, "race2", up2.upload_id, first)

        catalog.before_first_list = other2
        with pytest.raises(NoSuchUpload):  # the winner completed with other parts: as a later retry is answered
            await svc.complete_multipart_upload(BUCKET, "race2", up2.upload_id, [*first, CompletedPart(2, part2.etag)])
        up3 = await svc.create_multipart_upload(BUCKET, "race3")
        part3 = await svc.upload_part(BUCKET, "race3", up3.upload_id, 1, _body(b"c"))
        with pytest.raises(InvalidPart):  # a part never uploaded, the upload still there: InvalidPart
            await svc.complete_multipart_upload(BUCKET, "race3", up3.upload_id, [CompletedPart(2, part3.etag)])

    try:
        asyncio.run(body())
    finally:
        catalog.close()
