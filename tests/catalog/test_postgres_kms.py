"""The key service's keys (catalog/sqlite/_kms.py, catalog/postgres/_kms.py) and the encryption walks
(catalog/sqlite/_sse.py, catalog/postgres/_sse.py) on both catalogs, one behaviour: keys created once,
rotated (concurrent rotations make distinct versions), enabled and disabled, their sealed
material by version; encrypted versions walked in (bucket, key, version) order, by key id,
re-wrapped by compare and swap; the versions a blob belongs to."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.catalog.conftest import Opener, aw
from tierstore.catalog import BlobRef, VersionRecord
from tierstore.runtime import new_version_id
from tierstore.types import BucketInfo, ObjectMeta


def uid() -> str:
    return uuid.uuid4().hex[:10]


def test_keys_created_rotated_disabled(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            kid, other = f"key-{n}", f"Key-{n}"  # case-sensitive ids
            assert await cat.kms_create_key(kid, b"\x02MKEY-v1", 10, "training data")
            assert not await cat.kms_create_key(kid, b"\x02MKEY-again", 11)  # exists: nothing changed
            assert await cat.kms_create_key(other, b"\x02OTHR-v1", 12)
            rec = await aw(cat.kms_get_key(kid))
            assert (rec.key_id, rec.enabled, rec.description, rec.created_ns, rec.updated_ns) == (
                kid, True, "training data", 10, 10,
            )  # fmt: skip
            assert (rec.newest_version, rec.rotated_ns) == (1, None)
            assert await aw(cat.kms_get_key(f"none-{n}")) is None
            assert await aw(cat.kms_sealed_material(kid, 1)) == b"\x02MKEY-v1"
            assert await aw(cat.kms_sealed_material(kid, 2)) is None

            sealed: dict[int, bytes] = {}

            def seal(version: int) -> bytes:
                sealed[version] = f"\x02MKEY-v{version}".encode()
                return sealed[version]

            # Eight rotations at once: eight new versions, each number once, none overwritten.
            got = await asyncio.gather(*(cat.kms_add_version(kid, seal, 20 + i) for i in range(8)))
            assert sorted(got) == list(range(2, 10))
            for version in range(1, 10):
                assert await aw(cat.kms_sealed_material(kid, version)) == f"\x02MKEY-v{version}".encode()
            rec = await aw(cat.kms_get_key(kid))
            assert rec.newest_version == 9 and rec.rotated_ns is not None and rec.updated_ns >= 20
            assert await cat.kms_add_version(f"none-{n}", seal, 30) is None

            assert await cat.kms_set_enabled(kid, False, 40)
            rec = await aw(cat.kms_get_key(kid))
            assert (rec.enabled, rec.updated_ns) == (False, 40)
            assert not await cat.kms_set_enabled(f"none-{n}", True, 41)
            listed = [k.key_id for k in await aw(cat.kms_list_keys())]
            assert [k for k in listed if k.endswith(n)] == [other, kid]  # byte order: "K" < "k"
            assert {b"\x02MKEY", b"\x02OTHR"} <= set(await aw(cat.kms_sealed_key_ids()))

    asyncio.run(main())


def _put(cat: Any, bucket: str, key: str, blob_id: str, encryption: dict[str, Any] | None = None) -> Any:
    meta = ObjectMeta(
        bucket=bucket, key=key, version_id=new_version_id(), size_bytes=3, etag='"e"', modified_ns=1,
        encryption=encryption or {},
    )  # fmt: skip
    return cat.put_version(VersionRecord(meta=meta, blobs=[BlobRef(blob_id, 3)]))


def test_encrypted_versions_walked_rewrapped_and_found_by_blob(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            b1, b2 = f"sse-a-{n}", f"sse-b-{n}"
            for b in (b1, b2):
                await cat.create_bucket(BucketInfo(b, 1, "us-east-1"), {"versioning": "Enabled"})

            def e(kid: str | None, wk: str) -> dict[str, Any]:
                doc: dict[str, Any] = {"v": 1, "wk": wk, "n": "nonce"}
                if kid is not None:
                    doc["kid"] = kid
                return doc

            shared = f"blob-{n}-shared"
            v_a = await _put(cat, b1, "é/a", shared, e(f"k1-{n}", "WK-a"))
            v_b = await _put(cat, b1, "z", f"blob-{n}-z", e(f"k2-{n}", "WK-b"))
            await _put(cat, b1, "plain", f"blob-{n}-p")  # not encrypted: never walked
            v_c = await _put(cat, b2, "a", shared, e(None, "WK-c"))  # a copy sharing the blob
            v_d = await _put(cat, b1, "é/a", f"blob-{n}-d", e(f"k1-{n}", "WK-d"))  # a second version

            mine = [v for v in await aw(cat.sse_versions_page(limit=10_000)) if v.bucket.endswith(n)]
            want = sorted([(b1, "é/a", v_a), (b1, "é/a", v_d), (b1, "z", v_b), (b2, "a", v_c)])
            assert [v.name for v in mine] == want
            assert next(v for v in mine if v.version_id == v_b).encryption == e(f"k2-{n}", "WK-b")

            by_key = await aw(cat.sse_versions_page(key_id=f"k1-{n}"))
            assert sorted(v.name for v in by_key) == sorted([(b1, "é/a", v_a), (b1, "é/a", v_d)])
            first = await aw(cat.sse_versions_page(key_id=f"k1-{n}", limit=1))
            rest = await aw(cat.sse_versions_page(key_id=f"k1-{n}", after=first[0].name, limit=10))
            assert [v.name for v in first + rest] == [v.name for v in by_key]  # pages continue in order

            name = (b1, "z", v_b)
            assert not await cat.sse_replace_wrapped_key(name, "WK-stale", "WK-new")
            assert await cat.sse_replace_wrapped_key(name, "WK-b", "WK-new")
            assert not await cat.sse_replace_wrapped_key(name, "WK-b", "WK-other")  # swapped once
            got = await aw(cat.get_version(b1, "z", v_b))
            assert got.meta.encryption == {**e(f"k2-{n}", "WK-b"), "wk": "WK-new"}  # nothing else changed
            assert not await cat.sse_replace_wrapped_key((b1, "gone", v_b), "WK-new", "x")

            assert sorted(await aw(cat.versions_of_blob(shared))) == sorted([(b1, "é/a", v_a), (b2, "a", v_c)])
            assert await aw(cat.versions_of_blob(shared, limit=1)) == [min((b1, "é/a", v_a), (b2, "a", v_c))]
            assert await aw(cat.versions_of_blob(f"blob-{n}")) == []  # a prefix of ids is no id
            small = ObjectMeta(
                bucket=b2, key="small", version_id=new_version_id(), size_bytes=2, etag='"s"', modified_ns=1
            )
            v_s = await cat.put_version(VersionRecord(meta=small, inline_data=b"hi"))
            inline_id = (await aw(cat.get_version(b2, "small", v_s))).inline_id
            assert inline_id is not None and await aw(cat.versions_of_blob(inline_id)) == [(b2, "small", v_s)]

    asyncio.run(main())
