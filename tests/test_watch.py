"""``ConfigWatch`` (tierstore/_watch.py) and the caches that follow it, in-process over a real
SQLite catalog with a controlled clock: polling keeps an entry its 1 s, live holds it until a
change names it, down keeps nothing; a change announced while a read is in flight is not
cached; an access key's expiry still ends its held entry. (The notifications themselves, from
PostgreSQL to every worker: tests/test_config_notify.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tierstore._watch import LIVE_HOLD_S, ConfigWatch
from tierstore.catalog import SqliteCatalog
from tierstore.crypto import MasterKey
from tierstore.engine import BucketAccessService, IdentityService
from tierstore.types import BucketInfo


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class AnnouncingCatalog(SqliteCatalog):
    """A real catalog whose next bucket read is overtaken by a change's notification."""

    watch: ConfigWatch | None = None

    async def bucket_props(self, name: str) -> dict[str, Any]:
        props = await super().bucket_props(name)
        if self.watch is not None:
            watch, self.watch = self.watch, None
            watch.changed("bucket", name)  # committed and announced after our read
        return props


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[AnnouncingCatalog]:
    cat = AnnouncingCatalog(tmp_path / "catalog.db")
    asyncio.run(cat.create_bucket(BucketInfo("b", 1, "us-east-1"), {"policy": "old"}))
    yield cat
    cat.close()


def _policy(access: BucketAccessService) -> Any:
    props = asyncio.run(access.props("b"))
    return None if props is None else props.get("policy")


def _set_policy(catalog: SqliteCatalog, policy: str) -> None:  # another worker's write: no local forget
    asyncio.run(catalog.update_bucket_props("b", lambda p: {**p, "policy": policy}))


def test_states_and_lifetimes() -> None:
    watch = ConfigWatch()
    assert (watch.state, watch.lifetime(1.0)) == ("polling", 1.0)
    watch.down()
    assert (watch.state, watch.lifetime(1.0)) == ("down", 0.0)
    watch.live()
    assert (watch.state, watch.lifetime(1.0)) == ("live", LIVE_HOLD_S)
    assert repr(watch).startswith("ConfigWatch(live")


def test_drops_by_kind_and_name(caplog: pytest.LogCaptureFixture) -> None:
    watch = ConfigWatch()
    dropped: list[tuple[str, str | None]] = []
    for kind in ("bucket", "iam"):
        watch.on(kind, lambda name, kind=kind: dropped.append((kind, name)))
    epoch = watch.epoch
    watch.changed("bucket", "b1")
    watch.changed("iam", "")
    assert dropped == [("bucket", "b1"), ("iam", None)] and not watch.current(epoch)
    dropped.clear()
    watch.changed("*", "")
    assert sorted(dropped, key=str) == [("bucket", None), ("iam", None)]
    dropped.clear()
    with caplog.at_level(logging.WARNING, "tierstore.config_watch"):
        watch.changed("nonsense", "x")
    assert dropped == [] and "unknown kind" in caplog.text
    watch.live()  # and down(): everything dropped
    assert sorted(dropped, key=str) == [("bucket", None), ("iam", None)]


def test_bucket_settings_polling_live_and_down(catalog: AnnouncingCatalog) -> None:
    clock = Clock()
    access = BucketAccessService(catalog, monotonic=clock)
    watch = ConfigWatch()
    access.watch_with(watch)
    assert _policy(access) == "old"
    _set_policy(catalog, "new")
    assert _policy(access) == "old"  # polling: held its second
    clock.now += 1.01
    assert _policy(access) == "new"

    watch.live()
    assert _policy(access) == "new"
    _set_policy(catalog, "newer")
    clock.now += LIVE_HOLD_S / 2  # far past the polling second: still held
    assert _policy(access) == "new" and access.cached("b") == {"policy": "new"}
    watch.changed("bucket", "b")  # the notification
    assert _policy(access) == "newer"

    watch.down()
    _set_policy(catalog, "newest")
    assert _policy(access) == "newest"  # read through: nothing kept
    _set_policy(catalog, "again")
    assert _policy(access) == "again"


def test_a_change_announced_during_a_read_is_not_cached(catalog: AnnouncingCatalog) -> None:
    clock = Clock()
    access = BucketAccessService(catalog, monotonic=clock)
    watch = ConfigWatch()
    access.watch_with(watch)
    watch.live()
    catalog.watch = watch  # the next read is overtaken by a notification
    assert _policy(access) == "old"  # what it read is answered ...
    _set_policy(catalog, "new")
    assert _policy(access) == "new"  # ... but not kept for a minute


def test_a_held_key_still_expires(tmp_path: Path) -> None:
    clock = Clock()
    catalog = SqliteCatalog(tmp_path / "ids.db")
    try:
        ids = IdentityService(catalog, MasterKey(b"m" * 32), clock=clock, monotonic=clock)
        watch = ConfigWatch()
        ids.watch_with(watch)
        watch.live()

        async def scenario() -> tuple[str | None, str | None, str | None]:
            await ids.create_user("alice")
            new = await ids.create_service_account("alice", expires_ns=int((clock.now + 10) * 1e9))
            key_id = new.info.access_key_id
            before = await ids.secret_for(key_id)
            clock.now += 5
            held = ids.cached_secret(key_id)
            clock.now += 6  # past the key's expiry, far within the hold
            return before, held, await ids.secret_for(key_id)

        before, held, after = asyncio.run(scenario())
        assert before is not None and held == before and after is None
    finally:
        catalog.close()
