"""The built-in key service over a real SQLite catalog: data keys wrap and unwrap, bound to their
encryption context; tampering, unknown and disabled keys are refused with their own errors;
rotation keeps old data keys readable and ``rewrap`` moves them to the newest version; the
catalog file holds no key material in clear; a second process (worker) sees a change within its
cache time (docs/security.md "Key service")."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierstore.catalog import SqliteCatalog
from tierstore.crypto import (
    SSE_S3_KEY_ID,
    Doorkeeper,
    KeyService,
    KmsKeyDisabled,
    KmsKeyExists,
    LocalKeyStore,
    MasterKey,
    NoSuchKmsKey,
    WrappedKeyError,
    canonical_context,
    kms_key_name,
    wrapped_key_version,
)
from tierstore.errors import InternalError, InvalidArgument

CTX = {"aws:s3:arn": "arn:aws:s3:::bkt/obj", "team": "ml"}


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqliteCatalog]:
    cat = SqliteCatalog(tmp_path / "catalog.db")
    yield cat
    cat.close()


def _store(catalog: SqliteCatalog, key: bytes = b"m" * 32, **kw: object) -> LocalKeyStore:
    return LocalKeyStore(catalog, MasterKey(key), **kw)  # type: ignore[arg-type]


def test_data_key_round_trip_is_bound_to_key_and_context(catalog: SqliteCatalog) -> None:
    store = _store(catalog)
    service: KeyService = store  # the protocol the engine depends on

    async def run() -> None:
        await store.create_key("testkey-1")
        await store.create_key("testkey-2")
        dk = await service.generate_data_key("testkey-1", CTX)
        assert len(dk.plaintext) == 32 and dk.plaintext not in dk.wrapped and len(dk.wrapped) == 65
        assert await service.decrypt_data_key("testkey-1", dk.wrapped, dict(reversed(CTX.items()))) == dk.plaintext
        other = await service.generate_data_key("testkey-1", CTX)
        assert other.plaintext != dk.plaintext and other.wrapped[5:17] != dk.wrapped[5:17]  # fresh key and nonce
        for key_id, ctx in (
            ("testkey-1", {**CTX, "team": "ops"}),  # another context
            ("testkey-1", {}),
            ("testkey-2", CTX),  # another key
        ):
            with pytest.raises(WrappedKeyError) as info:
                await service.decrypt_data_key(key_id, dk.wrapped, ctx)
            assert info.value.code == "KMS.InvalidCiphertextException"
        status = await service.key_status("testkey-1")
        assert (status.key_id, status.enabled, status.versions, status.rotated_ns) == ("testkey-1", True, 1, None)

    asyncio.run(run())


def test_tampered_wrapped_keys_do_not_open(catalog: SqliteCatalog) -> None:
    store = _store(catalog)

    async def run() -> None:
        await store.create_key("k")
        wrapped = (await store.generate_data_key("k", CTX)).wrapped
        for i in range(len(wrapped)):  # every byte: format, version, nonce, ciphertext, tag
            bad = bytearray(wrapped)
            bad[i] ^= 0x01
            with pytest.raises(WrappedKeyError):
                await store.decrypt_data_key("k", bytes(bad), CTX)
        for bad in (wrapped[:-1], wrapped + b"\0", b""):
            with pytest.raises(WrappedKeyError):
                await store.decrypt_data_key("k", bad, CTX)

    asyncio.run(run())


def test_unknown_and_disabled_keys_are_refused(catalog: SqliteCatalog) -> None:
    store = _store(catalog)

    async def run() -> None:
        with pytest.raises(NoSuchKmsKey) as missing:
            await store.generate_data_key("nope", CTX)
        assert missing.value.code == "KMS.NotFoundException"
        with pytest.raises(NoSuchKmsKey):
            await store.key_status("nope")
        await store.create_key("k")
        with pytest.raises(KmsKeyExists):
            await store.create_key("k")
        dk = await store.generate_data_key("k", CTX)
        assert (await store.set_enabled("k", False)).enabled is False
        for call in (
            store.generate_data_key("k", CTX),
            store.decrypt_data_key("k", dk.wrapped, CTX),
            store.rotate("k"),
        ):
            with pytest.raises(KmsKeyDisabled) as info:
                await call
            assert info.value.code == "KMS.DisabledException"
        await store.set_enabled("k", True)
        assert await store.decrypt_data_key("k", dk.wrapped, CTX) == dk.plaintext  # nothing was lost
        with pytest.raises(NoSuchKmsKey):
            await store.set_enabled("nope", True)
        for bad in ("", "a/b", "-x", "x" * 257, "é"):
            with pytest.raises(InvalidArgument):
                await store.create_key(bad)
        with pytest.raises(InvalidArgument):  # the server's own names
            await store.create_key("tierstore-mine")

    asyncio.run(run())


def test_rotation_keeps_old_data_keys_and_rewrap_moves_them(catalog: SqliteCatalog) -> None:
    store = _store(catalog)

    async def run() -> None:
        await store.create_key("k")
        old = await store.generate_data_key("k", CTX)
        status = await store.rotate("k")
        assert status.versions == 2 and status.rotated_ns is not None
        new = await store.generate_data_key("k", CTX)
        assert (wrapped_key_version(old.wrapped), wrapped_key_version(new.wrapped)) == (1, 2)
        assert await store.decrypt_data_key("k", old.wrapped, CTX) == old.plaintext
        moved = await store.rewrap("k", old.wrapped, CTX)
        assert wrapped_key_version(moved) == 2 and moved != old.wrapped
        assert await store.decrypt_data_key("k", moved, CTX) == old.plaintext  # the same data key
        assert await store.rewrap("k", moved, CTX) == moved  # already at the newest
        with pytest.raises(WrappedKeyError):
            await store.rewrap("k", old.wrapped, {"other": "context"})
        # A version the key does not have (a wrapped key from the future, or forged).
        forged = bytes([1]) + (9).to_bytes(4, "big") + old.wrapped[5:]
        with pytest.raises(WrappedKeyError):
            await store.decrypt_data_key("k", forged, CTX)
        # Another process opens every version from the catalog.
        other = _store(catalog)
        assert await other.decrypt_data_key("k", old.wrapped, CTX) == old.plaintext
        assert await other.decrypt_data_key("k", new.wrapped, CTX) == new.plaintext
        assert [(s.key_id, s.versions) for s in await other.list_keys()] == [("k", 2)]

    asyncio.run(run())


def test_sse_s3_key_is_created_on_first_use_and_not_managed_by_admins(catalog: SqliteCatalog) -> None:
    store = _store(catalog)

    async def run() -> None:
        assert await catalog.kms_get_key(SSE_S3_KEY_ID) is None
        dk = await store.generate_data_key(SSE_S3_KEY_ID, {})
        assert await catalog.kms_get_key(SSE_S3_KEY_ID) is not None
        assert await _store(catalog).decrypt_data_key(SSE_S3_KEY_ID, dk.wrapped, {}) == dk.plaintext
        with pytest.raises(InvalidArgument):
            await store.set_enabled(SSE_S3_KEY_ID, False)
        assert (await store.rotate(SSE_S3_KEY_ID)).versions == 2  # rotation is allowed

    asyncio.run(run())


def test_catalog_holds_no_key_material_in_clear(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    catalog = SqliteCatalog(db)
    master = MasterKey(b"m" * 32)
    try:
        store = LocalKeyStore(catalog, master)
        asyncio.run(store.create_key("testkey-1"))
        asyncio.run(store.rotate("testkey-1"))
        sealed = [asyncio.run(catalog.kms_sealed_material("testkey-1", v)) for v in (1, 2)]
    finally:
        catalog.close()
    files = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("catalog.db"))
    for version, blob in enumerate(sealed, 1):
        assert blob is not None and blob in files  # the sealed form is what is stored...
        material = master.open_sealed(blob, context=f"tierstore kms key testkey-1 v{version}".encode())
        assert len(material) == 32 and material not in files  # ...never the material itself
    # Under another master key the material does not open: a clear error, not a crash.
    catalog = SqliteCatalog(db)
    try:
        with pytest.raises(InternalError, match="does not open"):
            asyncio.run(LocalKeyStore(catalog, MasterKey(b"x" * 32)).generate_data_key("testkey-1", CTX))
        assert len(asyncio.run(catalog.kms_sealed_key_ids())) == 1  # what the server checks its master key against
    finally:
        catalog.close()


def test_a_change_reaches_another_worker_within_its_cache_time(catalog: SqliteCatalog) -> None:
    now = [0.0]
    worker_a = _store(catalog)
    worker_b = _store(catalog, monotonic=lambda: now[0])

    async def run() -> None:
        with pytest.raises(NoSuchKmsKey):  # B caches "no such key"
            await worker_b.key_status("k")
        await worker_a.create_key("k")
        with pytest.raises(NoSuchKmsKey):
            await worker_b.key_status("k")
        now[0] += 1.01
        dk = await worker_b.generate_data_key("k", CTX)
        for _ in range(2):  # the second unwrap of the same wrapped key is kept (``Doorkeeper``)
            assert await worker_b.decrypt_data_key("k", dk.wrapped, CTX) == dk.plaintext
        assert len(worker_b.data_keys) == 1  # B holds the unwrapped data key now
        await worker_a.set_enabled("k", False)
        assert await worker_b.decrypt_data_key("k", dk.wrapped, CTX) == dk.plaintext  # cached: still enabled
        now[0] += 1.01
        with pytest.raises(KmsKeyDisabled):  # its data key is still cached: refused all the same
            await worker_b.decrypt_data_key("k", dk.wrapped, CTX)
        # A rotation through A: B opens A's new data keys at once, though its status is cached.
        await worker_a.set_enabled("k", True)
        now[0] += 1.01
        assert (await worker_b.key_status("k")).versions == 1
        await worker_a.rotate("k")
        fresh = await worker_a.generate_data_key("k", CTX)
        assert wrapped_key_version(fresh.wrapped) == 2
        assert await worker_b.decrypt_data_key("k", fresh.wrapped, CTX) == fresh.plaintext

    asyncio.run(run())


def test_unwrapped_data_keys_are_cached_bounded_and_expire(catalog: SqliteCatalog) -> None:
    """docs/encryption.md "The data key cache": a data key unwrapped a second time is kept and
    later unwraps are served from the worker's cache (the very same bytes object), only for the
    exact wrapped bytes and context that opened, at most ``data_key_cache`` keys (least recently
    used dropped first), each for ``data_key_ttl_s`` after its unwrap."""
    now = [0.0]
    store = _store(catalog, data_key_cache=2, data_key_ttl_s=60.0, monotonic=lambda: now[0])

    async def run() -> None:
        await store.create_key("k")
        one, two, three = [await store.generate_data_key("k", CTX) for _ in range(3)]
        assert len(store.data_keys) == 0  # a write caches nothing
        once = await store.decrypt_data_key("k", one.wrapped, CTX)
        assert once == one.plaintext and len(store.data_keys) == 0  # unwrapped once: not kept (Doorkeeper)
        first = await store.decrypt_data_key("k", one.wrapped, CTX)
        assert first == one.plaintext and first is not once and len(store.data_keys) == 1
        assert await store.decrypt_data_key("k", one.wrapped, CTX) is first  # a hit
        with pytest.raises(WrappedKeyError):  # cached under CTX only: another context still does not open
            await store.decrypt_data_key("k", one.wrapped, {**CTX, "team": "ops"})
        bad = bytearray(one.wrapped)
        bad[-1] ^= 1
        with pytest.raises(WrappedKeyError):
            await store.decrypt_data_key("k", bytes(bad), CTX)
        for _ in range(2):
            await store.decrypt_data_key("k", two.wrapped, CTX)
        assert await store.decrypt_data_key("k", one.wrapped, CTX) is first  # one is now the most recent
        for _ in range(2):
            await store.decrypt_data_key("k", three.wrapped, CTX)  # two is dropped, not one
        assert len(store.data_keys) == 2 and await store.decrypt_data_key("k", one.wrapped, CTX) is first
        now[0] += 60.0  # past its time: unwrapped again
        again = await store.decrypt_data_key("k", one.wrapped, CTX)
        assert again == first and again is not first
        store.forget()  # all of this worker's state, data keys included
        assert len(store.data_keys) == 0 and "DataKeyCache(0/2" in repr(store.data_keys)

    asyncio.run(run())


def test_doorkeeper_admits_a_name_offered_again_and_stays_bounded() -> None:
    """A cache's admission: the second offer of a name among the last ``entries`` offered, then
    the name starts over; a full set is emptied (a stream of names seen once keeps at most
    ``entries``)."""
    door = Doorkeeper(3)
    assert [door.again(n) for n in ("a", "b", "a", "a")] == [False, False, True, False]  # b, a
    assert door.again("c") is False and len(door) == 3
    assert door.again("d") is False and len(door) == 1  # full: emptied, then d
    assert door.again("b") is False  # forgotten with the rest
    assert [door.again(n) for n in ("d", "b")] == [True, True]
    door.clear()
    assert len(door) == 0 and door.again("d") is False


def test_context_and_key_names() -> None:
    assert canonical_context({"b": "2", "a": "1"}) == b'{"a":"1","b":"2"}' == canonical_context({"a": "1", "b": "2"})
    assert canonical_context({"k": "é"}) == '{"k":"é"}'.encode()
    tricky = {"z": 'q"uote\\back\nline\x00\x1f\u2028', "é": "", "": "e", "aws:s3:arn": "arn:aws:s3:::b/k"}
    reference = json.dumps(tricky, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_context(tricky) == reference  # the bytes wrapped keys already stored are bound to
    with pytest.raises(TypeError):
        canonical_context({"k": 1})  # type: ignore[dict-item]
    for value in (
        "testkey-1",
        "alias/testkey-1",
        "arn:aws:kms:us-east-1:000000000000:key/testkey-1",
        "arn:aws:kms:eu-west-1:123456789012:alias/testkey-1",
    ):
        assert kms_key_name(value) == "testkey-1"
    with pytest.raises(InvalidArgument):
        kms_key_name("arn:aws:kms:us-east-1:000000000000:key/")


def test_v8_catalog_gains_the_key_tables(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    SqliteCatalog(db).close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE kms_keys")
    conn.execute("DROP TABLE kms_key_versions")
    conn.execute("UPDATE meta SET value='8' WHERE name='schema_version'")
    conn.commit()
    conn.close()
    catalog = SqliteCatalog(db)
    try:
        store = _store(catalog)
        asyncio.run(store.create_key("k"))
        assert [s.key_id for s in asyncio.run(store.list_keys())] == ["k"]
    finally:
        catalog.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("15",)
    finally:
        conn.close()
