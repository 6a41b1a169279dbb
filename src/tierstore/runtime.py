"""Clock and id sources, injectable for tests."""

from __future__ import annotations

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


# Blob, version and request ids need to be unique, not secret (every access is authenticated),
# so their random part comes from a per-process generator seeded from os.urandom (and re-seeded in every
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


def new_request_id() -> str:
    return f"{_ids.getrandbits(64):016X}"
