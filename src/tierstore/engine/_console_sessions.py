"""Signed-out web console sessions (docs/console.md "Sign-out"): a console session that was
signed out is refused by every worker and every gateway sharing the catalog, not only by the
browser that dropped its cookie.

``sign_out(id, expires_s)`` records the session's id (its temporary access key id) with its
expiry in the catalog (``meta`` rows; the record goes after the expiry). ``signed_out(id)``
answers from this worker's cache when it can: a "signed out" answer is kept until the session
expires (it never changes back); a "not signed out" answer is kept as ``ConfigWatch`` says with
a time of 0 — not at all while polling (SQLite: one point read per console page, so another
worker of the server refuses the session from the next page on) and until a ``console``
notification (PostgreSQL, live) names the session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from tierstore._watch import ConfigWatch

__all__ = ["ConsoleSessionStore", "SignedOutSessions"]

_CACHE_MAX = 10_000


class ConsoleSessionStore(Protocol):
    async def console_sign_out(self, session_id: str, expires_s: int, now_s: int) -> None: ...
    async def console_signed_out(self, session_id: str) -> bool: ...


class SignedOutSessions:
    """See the module docstring."""

    def __init__(
        self,
        catalog: ConsoleSessionStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._clock = clock
        self._monotonic = monotonic
        self._known: dict[str, tuple[float, bool]] = {}  # session id -> (kept until, signed out)
        self.watch = ConfigWatch()

    def __repr__(self) -> str:
        return f"SignedOutSessions(cached={len(self._known)})"

    def watch_with(self, watch: ConfigWatch) -> None:
        self.watch = watch
        watch.on("console", self.forget)

    def forget(self, session_id: str | None = None) -> None:
        """Drop the cached "not signed out" answers (for ``session_id``, or all)."""
        if session_id is None:
            self._known = {k: v for k, v in self._known.items() if v[1]}
        else:
            hit = self._known.get(session_id)
            if hit is not None and not hit[1]:
                del self._known[session_id]

    async def sign_out(self, session_id: str, expires_s: int) -> None:
        now = self._clock()
        await self._catalog.console_sign_out(session_id, expires_s, int(now))
        self._keep(session_id, self._monotonic() + max(0.0, expires_s - now), True)

    async def signed_out(self, session_id: str) -> bool:
        now = self._monotonic()
        hit = self._known.get(session_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        epoch = self.watch.epoch
        out = await self._catalog.console_signed_out(session_id)
        lifetime = 3600.0 if out else self.watch.lifetime(0.0)
        if lifetime > 0 and self.watch.current(epoch):
            self._keep(session_id, now + lifetime, out)
        return out

    def _keep(self, session_id: str, until: float, out: bool) -> None:
        if len(self._known) >= _CACHE_MAX:
            self._known.clear()
        self._known[session_id] = (until, out)
