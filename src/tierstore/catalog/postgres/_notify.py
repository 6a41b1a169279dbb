"""Config cache invalidation through ``LISTEN``/``NOTIFY`` (docs/scale-out.md "Config caches").

Writers: every transaction that changes what a worker caches (a bucket's properties, its
creation or deletion; any identity; a KMS key; a tier) runs ``pg_notify('tierstore_config',
'<kind>:<name>')`` (``notify_sql``/``notify``). PostgreSQL delivers it at commit, to every
session listening, and not at all if the transaction rolls back.

Readers: ``ConfigListener`` holds one connection per worker outside the pool that ``LISTEN``s and
hands each notification to ``ConfigEvents.changed(kind, name)``. It calls ``live()`` once it is
listening (the caches are cleared: changes may have been missed while it was not) and ``down()``
when the connection is lost (the caches are bypassed until it is back). It reconnects with
backoff, logs one line when it loses the connection and one when it is back (no traceback), and
checks an idle connection every ``HEARTBEAT_S`` (a peer that vanished without closing it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import asyncpg

from tierstore.catalog.postgres._pool import redact_dsn

__all__ = ["APPLICATION_NAME", "CHANNEL", "ConfigEvents", "ConfigListener", "notify", "notify_sql"]

log = logging.getLogger("tierstore.catalog.postgres")

CHANNEL = "tierstore_config"
APPLICATION_NAME = "tierstore-listen"  # pg_stat_activity tells the LISTEN connections by it
HEARTBEAT_S = 10.0  # an idle LISTEN connection is checked this often (SELECT 1)
_BACKOFF_S = (0.1, 5.0)  # reconnect delays: first, longest (doubling in between)


def notify_sql(kind: str, name: str) -> str:
    """The statement announcing a change of ``kind`` named ``name``, without parameters: for
    ``Pool.write(first=...)`` and multi-statement strings (one round trip with what it joins)."""
    payload = f"{kind}:{name}".replace("'", "''")  # standard_conforming_strings: '' is the only escape
    return f"SELECT pg_notify('{CHANNEL}', '{payload}')"


async def notify(c: Any, kind: str, name: str) -> None:
    """Announce a change of ``kind`` named ``name`` inside the transaction on ``c`` (at commit)."""
    await c.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{kind}:{name}")


class ConfigEvents(Protocol):
    """What the listener tells (tierstore/_watch.py's ``ConfigWatch``)."""

    def changed(self, kind: str, name: str) -> None: ...
    def live(self) -> None: ...
    def down(self) -> None: ...


class ConfigListener:
    """One ``LISTEN`` connection for this worker (module docstring). ``start()`` in the event loop
    that serves (it returns at once: connecting is the background task's), ``await close()``."""

    def __init__(self, dsn: str, events: ConfigEvents, *, connect_timeout_s: float = 10.0) -> None:
        self._dsn = dsn
        self._shown = redact_dsn(dsn)
        self._events = events
        self._connect_timeout_s = connect_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self.connects = 0  # LISTEN connections made so far (metrics: the reconnects are the rest)
        self.listening = False  # a LISTEN connection is up now (metrics)

    def __repr__(self) -> str:
        return f"ConfigListener({self._shown}, {'listening' if self._conn is not None else 'not listening'})"

    def start(self) -> None:
        self._events.down()  # until the first LISTEN: nothing cached
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop listening and close the connection (a second call is a no-op)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop()

    async def _drop(self) -> None:
        self.listening = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), self._connect_timeout_s)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    async def _run(self) -> None:
        delay_s = _BACKOFF_S[0]
        told = False  # the outage was logged: one line per outage
        while True:
            lost = asyncio.Event()
            try:
                await self._listen(lost)
            except Exception as exc:  # whatever failed, the listener retries (caches bypassed meanwhile)
                if not told:
                    log.warning("config notifications from %s unavailable (%s): caches bypassed, retrying",
                                self._shown, type(exc).__name__)  # fmt: skip
                    told = True
                await self._drop()
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, _BACKOFF_S[1])
                continue
            if told or self.connects > 1:
                log.warning("config notifications from %s: listening again, caches cleared", self._shown)
            delay_s, told = _BACKOFF_S[0], False
            await self._watch(lost)
            self.listening = False
            self._events.down()
            log.warning("config notifications from %s lost: caches bypassed until reconnected", self._shown)
            told = True
            await self._drop()

    async def _listen(self, lost: asyncio.Event) -> None:
        """Connect, ``LISTEN``, then tell ``live()`` (after ``LISTEN``: nothing committed since the
        caches are cleared can be missed)."""
        self._conn = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout_s, server_settings={"application_name": APPLICATION_NAME}
        )
        self._conn.add_termination_listener(lambda _conn: lost.set())
        await self._conn.add_listener(CHANNEL, self._notified)
        self.connects += 1
        self.listening = True
        self._events.live()

    async def _watch(self, lost: asyncio.Event) -> None:
        """Return when the connection is lost (closed by the server, or a heartbeat fails)."""
        while True:
            try:
                await asyncio.wait_for(lost.wait(), HEARTBEAT_S)
                return
            except TimeoutError:
                pass
            try:
                await self._conn.execute("SELECT 1", timeout=self._connect_timeout_s)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, name = payload.partition(":")
        self._events.changed(kind, name)
