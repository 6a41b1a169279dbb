"""``TierService`` in process (engine/_tiers.py): names, fields and endpoints validated; the
secret sealed under the master key and bound to the tier's name; listings without secrets;
``class_names`` cached for about a second; removal refused while a blob names the tier."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierstore.catalog import SqliteCatalog
from tierstore.crypto import MasterKey
from tierstore.engine import NoSuchTier, TierAlreadyExists, TierInUse, TierService, TierSpec
from tierstore.errors import InternalError, InvalidArgument

SECRET = "tier-Secret/0123456789abcdefghij"


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqliteCatalog]:
    cat = SqliteCatalog(tmp_path / "catalog.db")
    yield cat
    cat.close()


class Ticker:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _spec(name: str = "COLD", **kw: object) -> TierSpec:
    fields: dict[str, object] = {"endpoint": "http://127.0.0.1:8333/", "bucket": "archive", "allow_private": True}
    fields.update(kw)
    return TierSpec(name, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["", "cold", "Cold", "1COLD", "_COLD", "COLD-1", "C" * 33, "STANDARD", "COLD ", "CÖLD"]
)
def test_bad_names_are_refused(catalog: SqliteCatalog, name: str) -> None:
    tiers = TierService(catalog, MasterKey(os.urandom(32)))
    with pytest.raises(InvalidArgument):
        asyncio.run(tiers.add(_spec(name)))
    assert asyncio.run(tiers.list()) == []


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"bucket": "a"}, "bucket"),
        ({"bucket": "no/slash"}, "bucket"),
        ({"prefix": "/abs"}, "prefix"),
        ({"prefix": "a\nb"}, "control"),
        ({"region": "US EAST"}, "region"),
        ({"access_key_id": "AKIA1"}, "both"),
        ({"secret_key": SECRET}, "both"),
        ({"access_key_id": "AKIA1", "secret_key": "has space"}, "printable"),
        ({"endpoint": "http://127.0.0.1:8333/?x=1"}, "no query"),
        ({"endpoint": "http://169.254.169.254"}, "cloud metadata"),
        ({"endpoint": "http://[fe80::1]:80"}, "link-local"),
        ({"endpoint": "http://127.0.0.1:8333", "allow_private": False}, "loopback"),
    ],
)
def test_bad_fields_are_refused_without_echoing_the_secret(
    catalog: SqliteCatalog, fields: dict[str, object], fragment: str
) -> None:
    tiers = TierService(catalog, MasterKey(os.urandom(32)))
    with pytest.raises(InvalidArgument, match=fragment) as info:
        asyncio.run(tiers.add(_spec(**fields)))
    assert "has space" not in str(info.value) and SECRET not in str(info.value)
    assert asyncio.run(tiers.list()) == []


def test_add_list_config_and_remove(catalog: SqliteCatalog, tmp_path: Path) -> None:
    key = MasterKey(os.urandom(32))
    tiers = TierService(catalog, key)
    info = asyncio.run(tiers.add(_spec(access_key_id="AKIATIER", secret_key=SECRET, prefix="t/", region="eu-west-1")))
    assert (info.name, info.endpoint, info.bucket, info.prefix, info.region) == (
        "COLD",
        "http://127.0.0.1:8333",  # the trailing slash is dropped
        "archive",
        "t/",
        "eu-west-1",
    )
    assert (info.access_key_id, info.keys_set, info.allow_private) == ("AKIATIER", True, True)
    assert not info.restore_required
    plain = asyncio.run(tiers.add(_spec("GLACIER", restore_required=True)))
    assert (plain.keys_set, plain.access_key_id, plain.restore_required) == (False, None, True)
    assert [t.name for t in asyncio.run(tiers.list())] == ["COLD", "GLACIER"]
    listed = asyncio.run(tiers.list())
    assert SECRET not in repr(listed) and SECRET not in str([t.to_dict() for t in listed])
    with pytest.raises(TierAlreadyExists):
        asyncio.run(tiers.add(_spec()))

    config = asyncio.run(tiers.get_config("COLD"))
    assert (config.access_key_id, config.secret_key) == ("AKIATIER", SECRET)
    assert SECRET not in repr(config)
    assert asyncio.run(tiers.get_config("GLACIER")).secret_key is None
    with pytest.raises(NoSuchTier):
        asyncio.run(tiers.get_config("WARM"))

    # The secret is sealed at rest (not in the database file), bound to the tier's name.
    files = [p for p in tmp_path.iterdir() if p.name.startswith("catalog.db")]  # the database and its WAL
    assert files and all(SECRET.encode() not in p.read_bytes() for p in files)
    conn = sqlite3.connect(tmp_path / "catalog.db")
    conn.execute("UPDATE tiers SET secret=(SELECT secret FROM tiers WHERE name='COLD') WHERE name='GLACIER'")
    conn.commit()
    conn.close()
    with pytest.raises(InternalError, match="do not open"):  # moved to another tier's row: it does not open
        asyncio.run(tiers.get_config("GLACIER"))
    with pytest.raises(InternalError, match="do not open"):  # nor under another master key
        asyncio.run(TierService(catalog, MasterKey(os.urandom(32))).get_config("COLD"))
    heads = asyncio.run(catalog.tier_sealed_key_ids())
    assert heads and all(h[1:5].hex() == key.key_id for h in heads)

    statuses = asyncio.run(tiers.status())
    assert [(s.name, s.blobs, s.bytes, s.outbox) for s in statuses] == [("COLD", 0, 0, 0), ("GLACIER", 0, 0, 0)]
    asyncio.run(tiers.remove("GLACIER"))
    with pytest.raises(NoSuchTier):
        asyncio.run(tiers.remove("GLACIER"))
    with pytest.raises(NoSuchTier):
        asyncio.run(tiers.status("GLACIER"))


def test_remove_is_refused_while_a_blob_is_in_the_tier(catalog: SqliteCatalog, tmp_path: Path) -> None:
    tiers = TierService(catalog, MasterKey(os.urandom(32)))
    asyncio.run(tiers.add(_spec()))
    conn = sqlite3.connect(tmp_path / "catalog.db")
    conn.execute("INSERT INTO blobs(blob_id, size, refs, tier) VALUES('00000000000000000abc', 4096, 1, 'COLD')")
    conn.commit()
    with pytest.raises(TierInUse, match="1 blobs \\(4096 bytes\\)") as info:
        asyncio.run(tiers.remove("COLD"))
    assert info.value.code == "TierInUse"
    assert [(s.blobs, s.bytes) for s in asyncio.run(tiers.status("COLD"))] == [(1, 4096)]
    conn.execute("UPDATE blobs SET tier=NULL")
    conn.commit()
    conn.close()
    asyncio.run(tiers.remove("COLD"))
    assert asyncio.run(tiers.list()) == []


def test_class_names_are_cached_about_a_second(catalog: SqliteCatalog) -> None:
    ticker = Ticker()
    writer = TierService(catalog, MasterKey(os.urandom(32)))
    reader = TierService(catalog, None, monotonic=ticker)  # another worker's service
    assert asyncio.run(reader.class_names()) == frozenset()
    asyncio.run(writer.add(_spec()))
    assert asyncio.run(writer.class_names()) == frozenset({"COLD"})  # the worker that added it: at once
    assert asyncio.run(reader.class_names()) == frozenset()  # another: still cached...
    ticker.now += 1.01
    assert asyncio.run(reader.class_names()) == frozenset({"COLD"})  # ...for at most a second
    asyncio.run(writer.remove("COLD"))
    ticker.now += 1.01
    assert asyncio.run(reader.class_names()) == frozenset()


def test_without_a_master_key_keys_cannot_be_sealed(catalog: SqliteCatalog) -> None:
    tiers = TierService(catalog)
    with pytest.raises(InternalError, match="no master key"):
        asyncio.run(tiers.add(_spec(access_key_id="AKIATIER", secret_key=SECRET)))
    asyncio.run(tiers.add(_spec()))  # a tier without keys needs none
    assert [t.name for t in asyncio.run(tiers.list())] == ["COLD"]
