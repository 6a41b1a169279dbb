"""Signed-out console sessions (docs/console.md "Sign-out"), in the generic ``meta`` table: no
schema step (as catalog/sqlite/_console.py). Recording one notifies ``console:ID``, so every
worker's cache of the answer for that session drops it at once."""

from __future__ import annotations

from typing import Any

from tierstore.catalog._rules import SIGNED_OUT_PREFIX
from tierstore.catalog.postgres._notify import notify
from tierstore.catalog.postgres._pool import Pool

__all__ = ["ConsoleSessionTables"]


class ConsoleSessionTables:
    """The console's signed-out sessions (a mixin over ``_pool``)."""

    _pool: Pool

    async def console_sign_out(self, session_id: str, expires_s: int, now_s: int) -> None:
        """Record that ``session_id`` was signed out (until ``expires_s``); forget expired records."""

        async def fn(c: Any) -> None:
            await c.execute(
                "DELETE FROM meta WHERE name >= $1 AND name < $2 AND value <= $3",  # as text: no cast of other rows
                SIGNED_OUT_PREFIX, SIGNED_OUT_PREFIX[:-1] + ";", f"{now_s:020d}",
            )  # fmt: skip
            await c.execute(
                "INSERT INTO meta(name, value) VALUES($1, $2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                SIGNED_OUT_PREFIX + session_id, f"{expires_s:020d}",
            )  # fmt: skip
            await notify(c, "console", session_id)

        await self._pool.write(fn)

    async def console_signed_out(self, session_id: str) -> bool:
        return bool(await self._pool.fetchval("SELECT 1 FROM meta WHERE name = $1", SIGNED_OUT_PREFIX + session_id))
