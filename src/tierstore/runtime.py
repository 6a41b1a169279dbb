"""Clock and id sources, injectable for tests."""

from __future__ import annotations

import itertools
import os
import random
import time

__all__ = ["Clock", "new_blob_id", "new_request_id", "new_upload_id", "new_version_id"]


class Clock:
    """Wall clock in nanoseconds since the epoch. Tests may subclass to control time."""

    def now_ns(self) -> int:
        return time.time_ns()

    def now_s(self) -> float:
        return time.time()


# Blob and version ids need to be unique, not secret (every access is authenticated), so their
# random part comes from a per-process generator seeded from os.urandom (and re-seeded in every
# forked worker): no getrandom() syscall per id. Upload ids stay os.urandom.
_ids = random.Random()


def _reseed() -> None:
    _ids.seed(os.urandom(32))


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_blob_id() -> str:
    """32 lowercase hex chars; the time prefix keeps ids of one period near each other."""
    return f"{time.time_ns() // 1_000_000_000:08x}{_ids.getrandbits(96):024x}"


def new_upload_id() -> str:
    return os.urandom(16).hex()


def new_version_id() -> str:
    # sortable by time, unique: 16 hex digits of ns time + 8 random
    return f"{time.time_ns():016x}{_ids.getrandbits(32):08x}"


class _RequestIds:
    """16 upper-case hex chars: a random per-process prefix (new in every forked worker) and a
    counter. Unique like random ids, without a getrandom() call per request."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(4).hex().upper()
        self.counter = itertools.count(int.from_bytes(os.urandom(3), "big"))

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFF:08X}"


_request_ids = _RequestIds()


def new_request_id() -> str:
    return _request_ids.next()
