"""What a per-worker cache answers when it does not hold a value: the synchronous hot paths
(the authenticator, the authorizer) ask the cache first and await the catalog only on a miss,
so a hit costs no coroutine (docs/scale-out.md: every catalog read is awaitable)."""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["NOT_CACHED", "NotCached", "SecretNotLoaded"]


class NotCached(enum.Enum):
    NOT_CACHED = "not cached"


NOT_CACHED: Final = NotCached.NOT_CACHED


class SecretNotLoaded(LookupError):
    """The secret of ``access_key`` is not in this worker's cache: ``await secret_for`` reads it."""

    def __init__(self, access_key: str) -> None:
        super().__init__(access_key)
        self.access_key = access_key
