"""Signed-out console sessions (docs/console.md "Sign-out"), in the generic ``meta`` table: no
schema step. A row ``console-signed-out:ID`` whose value is the session's expiry (Unix seconds,
20 digits zero-padded: compared as text, so no cast touches another row's value) says the
console session ``ID`` (its temporary access key id) was signed out; rows past their expiry go
whenever another session signs out."""

from __future__ import annotations

import sqlite3

from tierstore.catalog._rules import SIGNED_OUT_PREFIX
from tierstore.catalog.sqlite._tables import Tables

__all__ = ["ConsoleSessionTables"]


class ConsoleSessionTables(Tables):
    """The console's signed-out sessions (a mixin: ``_reader()``, ``_write(fn)``)."""

    async def console_sign_out(self, session_id: str, expires_s: int, now_s: int) -> None:
        """Record that ``session_id`` was signed out (until ``expires_s``); forget expired records."""

        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "DELETE FROM meta WHERE name >= ? AND name < ? AND value <= ?",
                (SIGNED_OUT_PREFIX, SIGNED_OUT_PREFIX[:-1] + ";", f"{now_s:020d}"),
            )
            c.execute(
                "INSERT OR REPLACE INTO meta(name, value) VALUES(?, ?)",
                (SIGNED_OUT_PREFIX + session_id, f"{expires_s:020d}"),
            )

        await self._write(fn)

    async def console_signed_out(self, session_id: str) -> bool:
        row = self._reader().execute("SELECT 1 FROM meta WHERE name = ?", (SIGNED_OUT_PREFIX + session_id,)).fetchone()
        return row is not None
