"""Signed-out console sessions across workers (engine/_console_sessions.py) on a real SQLite
catalog: two services stand for two workers sharing it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tierstore._watch import ConfigWatch
from tierstore.catalog import SqliteCatalog
from tierstore.engine._console_sessions import SignedOutSessions


def test_a_sign_out_in_one_worker_is_refused_by_the_others(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "catalog.db")

    async def main() -> None:
        one, two = SignedOutSessions(cat), SignedOutSessions(cat)
        polling, live = ConfigWatch(), ConfigWatch()
        one.watch_with(polling)
        two.watch_with(live)
        live.live()  # notified (PostgreSQL): a "not signed out" answer is kept until a notification
        assert not await one.signed_out("ASIAAAA") and not await two.signed_out("ASIAAAA")
        await one.sign_out("ASIAAAA", expires_s=4_000_000_000)
        assert await one.signed_out("ASIAAAA")
        assert not await two.signed_out("ASIAAAA")  # kept: no notification came yet
        live.changed("console", "ASIAAAA")  # what the catalog's NOTIFY delivers
        assert await two.signed_out("ASIAAAA")
        await two.sign_out("ASIABBB", expires_s=4_000_000_000)
        assert await one.signed_out("ASIABBB")  # polling (SQLite): nothing kept, the next page sees it

    try:
        asyncio.run(main())
    finally:
        cat.close()
