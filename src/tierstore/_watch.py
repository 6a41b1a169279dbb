"""``ConfigWatch``: how long a worker's config caches keep an entry, and who drops entries when
the configuration changes (docs/scale-out.md "Config caches: LISTEN/NOTIFY").

The caches (bucket properties, identities and their STS sessions, KMS key state, tiers) each
keep an entry for ``lifetime(ttl_s)`` and register what drops theirs for a kind of change
(``on("bucket", forget)``). The watch is in one of three states:

- **polling** (the default; the embedded SQLite catalog): each cache keeps an entry its own
  ``ttl_s`` (1 s), so a change through any worker is seen by every worker within about a
  second — how the workers of one server on SQLite see each other's changes.
- **live** (PostgreSQL, its ``LISTEN`` connection up): an entry is kept ``LIVE_HOLD_S`` and
  dropped when a notification names it (``changed(kind, name)``, in milliseconds).
- **down** (the ``LISTEN`` connection lost: a notification may be missed): nothing is kept, every
  read goes to the catalog, until ``live()`` clears everything and holds again.

``epoch`` moves with every drop and state change: a cache that read the catalog stores what it
read only if ``epoch`` did not move meanwhile (``current(epoch)``), so a read that started
before a change and ended after its notification cannot put the old value back for a
``LIVE_HOLD_S``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["KINDS", "LIVE_HOLD_S", "ConfigWatch"]

log = logging.getLogger("tierstore.config_watch")

# Kinds of change (the part of a notification before its first colon); ``*`` drops everything.
KINDS = ("bucket", "iam", "kms", "tier", "console")  # console: a signed-out console session
# While notifications arrive, an entry is kept this long: a bound for a change that no
# notification announces (a row edited by hand; then ``NOTIFY tierstore_config, '*:'`` drops all).
LIVE_HOLD_S = 60.0


class ConfigWatch:
    """The state of one worker's config caches (module docstring)."""

    def __init__(self) -> None:
        self.epoch = 0
        self._hold_s: float | None = None  # None: polling (each cache's own ttl)
        self._drops: dict[str, list[Callable[[str | None], None]]] = {kind: [] for kind in KINDS}

    def __repr__(self) -> str:
        return f"ConfigWatch({self.state}, epoch={self.epoch})"

    @property
    def state(self) -> str:
        """``polling``, ``live`` or ``down``."""
        return "polling" if self._hold_s is None else "live" if self._hold_s > 0 else "down"

    def lifetime(self, ttl_s: float) -> float:
        """How long an entry read now is kept by a cache whose own time is ``ttl_s``."""
        return ttl_s if self._hold_s is None else self._hold_s

    def current(self, epoch: int) -> bool:
        """Whether nothing was dropped since ``epoch`` was read: a value read meanwhile may be kept."""
        return epoch == self.epoch

    def on(self, kind: str, drop: Callable[[str | None], None]) -> None:
        """Call ``drop(name)`` when a change of ``kind`` names ``name``; ``drop(None)``: all."""
        self._drops[kind].append(drop)

    def changed(self, kind: str, name: str) -> None:
        """A committed change of ``kind`` named ``name`` (an empty name, or the kind ``*``: all)."""
        self.epoch += 1
        if kind == "*":
            self._drop_all()
            return
        drops = self._drops.get(kind)
        if drops is None:
            log.warning("config change of unknown kind %r ignored", kind[:40])
            return
        for drop in drops:
            drop(name or None)

    def live(self) -> None:
        """Notifications arrive again: drop everything (changes may have been missed), then hold."""
        self._hold_s = LIVE_HOLD_S
        self.epoch += 1
        self._drop_all()

    def down(self) -> None:
        """Notifications may be missed: drop everything and keep nothing until ``live()``."""
        self._hold_s = 0.0
        self.epoch += 1
        self._drop_all()

    def _drop_all(self) -> None:
        for drops in self._drops.values():
            for drop in drops:
                drop(None)
