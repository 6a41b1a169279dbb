"""The lifecycle due index (catalog/sqlite/_lifecycle.py, catalog/postgres/_lifecycle.py) on both
catalogs, one behaviour: a key's rows recomputed from its versions and the bucket's rules; a
rule change recomputed a page at a time (with the uploads' abort rows); claims lease rows, and
concurrent claimers never take one row twice; an action re-checked and taken (expiration of an
unversioned object, a delete marker on a versioned bucket, an upload aborted), refused by object
lock, deferred; a bucket dropped takes its rows along.

The writes keep the rows in their own transactions on both catalogs (a PUT, a DELETE and a
metadata update the key's, creating an upload its abort row, a rule change queues the bucket's
recompute)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.catalog.conftest import Opener, aw
from tierstore.catalog import BlobRef, DueRow, Outcome, TierRecord, VersionRecord
from tierstore.engine import (
    LifecycleConfig,
    LifecycleExpiration,
    LifecycleFilter,
    LifecyclePlan,
    LifecycleRule,
    LifecycleTransition,
)
from tierstore.errors import AccessDenied, NoSuchUpload
from tierstore.types import BucketInfo, ObjectMeta, UploadInfo

S = 1_000_000_000
RULES = LifecycleConfig(
    (
        LifecycleRule("e", True, LifecycleFilter("prefix", "tmp/"), LifecycleExpiration(days=2)),
        LifecycleRule("u", True, LifecycleFilter("prefix", "tmp/"), abort_days=3),
    )
).to_props()


def uid() -> str:
    return uuid.uuid4().hex[:8]


def meta(bucket: str, key: str, t_s: int, version_id: str = "null") -> ObjectMeta:
    return ObjectMeta(bucket=bucket, key=key, version_id=version_id, size_bytes=1, etag='"e"', modified_ns=t_s * S)


async def put(cat: Any, bucket: str, key: str, t_s: int) -> str:
    version_id: str = await cat.put_version(
        VersionRecord(meta=meta(bucket, key, t_s, uuid.uuid4().hex), inline_data=b"x")
    )
    return version_id


async def rows(cat: Any, bucket: str) -> list[tuple[str, str, str, int]]:
    return [(r.key, r.version_id, r.action, r.due_ns // S) for r in await aw(cat.lifecycle_rows(bucket))]


async def set_rules(cat: Any, bucket: str, rules: Any) -> None:
    """Change the bucket's rules: the change queues the bucket's recompute."""

    def update(props: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in props.items() if k != "lifecycle"}
        if rules is not None:
            out["lifecycle"] = rules
        return out

    await cat.update_bucket_props(bucket, update)


async def recompute(cat: Any, keys: int) -> list[tuple[str, int, bool]]:
    pages = []
    while (page := await cat.lifecycle_recompute_page(keys=keys)) is not None:
        pages.append(page)
    return pages


def never(record: Any, props: dict[str, Any]) -> None:
    """An object-lock guard with nothing locked."""


def test_rows_recomputed_claimed_and_applied(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            cat.lifecycle_planner = LifecyclePlan(day_s=1)
            n = uid()
            ruled, plain = f"ruled-{n}", f"plain-{n}"
            await cat.create_bucket(BucketInfo(ruled, 1, "us-east-1"), {"lifecycle": RULES})
            await cat.create_bucket(BucketInfo(plain, 1, "us-east-1"))
            for bucket in (ruled, plain):
                await put(cat, bucket, "tmp/a", 100)
                await put(cat, bucket, "keep", 100)
            assert await rows(cat, plain) == []  # no rules: no rows
            assert await rows(cat, ruled) == [("tmp/a", "null", "expire", 102)]
            assert await aw(cat.lifecycle_due_count()) >= 1
            assert await aw(cat.lifecycle_due_count(101 * S)) == 0
            assert await aw(cat.lifecycle_due_count(102 * S)) == 1
            assert not await aw(cat.lifecycle_pending(101 * S))
            assert await aw(cat.lifecycle_pending(102 * S))

            # Rules put on a bucket with objects and an upload: queued, recomputed in pages.
            for i in range(5):
                await put(cat, plain, f"tmp/{i}", 10 + i)
            upload = UploadInfo(bucket=plain, key="tmp/u", upload_id=f"up-{n}", initiated_ns=50 * S)
            await cat.create_upload(upload)
            await set_rules(cat, plain, RULES)
            assert await aw(cat.lifecycle_pending(0))  # a recompute is queued
            assert await recompute(cat, keys=2) == [
                (plain, 2, False),
                (plain, 2, False),
                (plain, 2, False),
                (plain, 1, True),
            ]
            expected = [(f"tmp/{i}", "null", "expire", 12 + i) for i in range(5)]
            got = await rows(cat, plain)
            assert [r for r in got if r[2] == "expire"] == [*expected, ("tmp/a", "null", "expire", 102)]
            assert ("tmp/u", upload.upload_id, "abort-upload", 53) in got

            # A claim leases what is due: a second claim at the same time finds nothing.
            claimed = [r for r in await cat.lifecycle_claim(14 * S, limit=100, lease_ns=600 * S) if r.bucket == plain]
            assert [(r.key, r.due_ns // S) for r in claimed] == [("tmp/0", 12), ("tmp/1", 13), ("tmp/2", 14)]
            assert [
                r for r in await cat.lifecycle_claim(14 * S, limit=100, lease_ns=600 * S) if r.bucket == plain
            ] == []
            assert ("tmp/0", "null", "expire", 614) in await rows(cat, plain)
            await cat.lifecycle_defer(claimed[2], 20 * S)  # backed off, not dropped
            assert ("tmp/2", "null", "expire", 20) in await rows(cat, plain)

            # Applied: re-checked and taken; the key's rows go with the object.
            marker = meta(plain, "tmp/0", 700, uuid.uuid4().hex)
            assert await cat.lifecycle_apply(claimed[0], 700 * S, marker, never) == Outcome(done="expire")
            assert await aw(cat.get_latest(plain, "tmp/0")) is None
            assert "tmp/0" not in [r[0] for r in await rows(cat, plain)]
            # Not due any more (the object was overwritten meanwhile): nothing done, rows recomputed.
            await put(cat, plain, "tmp/1", 690)
            assert await cat.lifecycle_apply(claimed[1], 691 * S, marker, never) == Outcome()
            assert ("tmp/1", "null", "expire", 692) in await rows(cat, plain)
            # Object lock: the guard raises and nothing changes.
            row = DueRow(12 * S, plain, "tmp/3", "null", "expire")

            def locked(record: Any, props: dict[str, Any]) -> None:
                raise AccessDenied("locked")

            with pytest.raises(AccessDenied):
                await cat.lifecycle_apply(row, 700 * S, marker, locked)
            assert await aw(cat.get_latest(plain, "tmp/3")) is not None

            # The upload is aborted once due.
            abort = DueRow(53 * S, plain, "tmp/u", upload.upload_id, "abort-upload")
            assert await cat.lifecycle_apply(abort, 52 * S, marker, never) == Outcome()  # not yet
            assert await cat.lifecycle_apply(abort, 53 * S, marker, never) == Outcome(done="abort-upload")
            with pytest.raises(NoSuchUpload):
                await aw(cat.get_upload(plain, "tmp/u", upload.upload_id))
            assert "tmp/u" not in [r[0] for r in await rows(cat, plain)]

            # Rules removed: the recompute drops every row of the bucket.
            await set_rules(cat, plain, None)
            await recompute(cat, keys=2)
            assert await rows(cat, plain) == []

    asyncio.run(main())


def test_expiration_on_a_versioned_bucket_adds_a_marker(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            cat.lifecycle_planner = LifecyclePlan(day_s=1)
            n = uid()
            b = f"vers-{n}"
            await cat.create_bucket(BucketInfo(b, 1, "us-east-1"), {"lifecycle": RULES, "versioning": "Enabled"})
            vid = await put(cat, b, "tmp/x", 1000)
            assert await rows(cat, b) == [("tmp/x", vid, "expire", 1002)]
            row = next(r for r in await aw(cat.lifecycle_rows(b)) if r.key == "tmp/x")
            marker = meta(b, "tmp/x", 1003, uuid.uuid4().hex)
            outcome = await cat.lifecycle_apply(row, 1003 * S, marker, never)
            assert outcome == Outcome(done="expire", marker_id=marker.version_id)
            latest = await aw(cat.get_latest(b, "tmp/x"))
            assert latest is not None and latest.is_delete_marker and latest.meta.version_id == marker.version_id
            assert await aw(cat.get_version(b, "tmp/x", vid)) is not None  # kept, noncurrent
            # A bucket dropped takes its rows along.
            await cat.delete_object(b, "tmp/x", version_id=vid, marker=meta(b, "tmp/x", 1004, uuid.uuid4().hex))
            await cat.delete_object(b, "tmp/x", version_id=marker.version_id, marker=meta(b, "tmp/x", 1005, "m"))
            await cat.delete_bucket(b)
            assert await rows(cat, b) == []

    asyncio.run(main())


def test_concurrent_claimers_never_take_one_row_twice(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            cat.lifecycle_planner = LifecyclePlan(day_s=1)
            n = uid()
            b = f"claims-{n}"
            await cat.create_bucket(BucketInfo(b, 1, "us-east-1"), {"lifecycle": RULES})
            keys = [f"tmp/{i:02}" for i in range(24)]
            for key in keys:
                await put(cat, b, key, 5000)
            claims = await asyncio.gather(*(cat.lifecycle_claim(5002 * S, 4, 600 * S) for _ in range(8)))
            taken = [(r.bucket, r.key) for claim in claims for r in claim if r.bucket == b]
            assert len(taken) == len(set(taken)) == 24  # each row once, every row taken
            assert all(len(claim) <= 4 for claim in claims)

    asyncio.run(main())


def test_the_movers_commit_recomputes_the_keys_rows(catalogs: Opener) -> None:
    """The class a transition sets is an input of the rules: ``transition_commit`` recomputes the
    key's rows in its own transaction (the claimed transition row gives way to what is next)."""

    async def main() -> None:
        async with catalogs() as cat:
            cat.lifecycle_planner = LifecyclePlan(day_s=1)
            n = uid()
            b, cold = f"moves-{n}", f"COLD{n}".upper()
            to_cold = (LifecycleTransition(cold, days=1),)
            rule = LifecycleRule("t", True, LifecycleFilter("prefix", ""), LifecycleExpiration(days=9), to_cold)
            rules = LifecycleConfig((rule,)).to_props()
            await cat.tier_create(TierRecord(cold, {"bucket": "t"}, None, 1))
            await cat.create_bucket(BucketInfo(b, 1, "us-east-1"), {"lifecycle": rules})
            blob = uuid.uuid4().hex
            m = ObjectMeta(bucket=b, key="big", version_id="null", size_bytes=1 << 20, etag='"e"', modified_ns=100 * S)
            await cat.put_version(VersionRecord(meta=m, blobs=[BlobRef(blob, 1 << 20)]))
            assert await rows(cat, b) == [("big", "null", "transition", 101)]  # its next action
            assert await cat.transition_commit(b, "big", "null", cold, [(blob, None)])
            assert await rows(cat, b) == [("big", "null", "expire", 109)]  # in its class now: the next one

    asyncio.run(main())
