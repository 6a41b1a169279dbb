"""``LazyPool``: a process's thread pool of one purpose, made on first use and made anew in a
forked child (granian forks its workers; the parent's threads do not exist there)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["LazyPool"]


class LazyPool:
    """``get()``: the pool of ``workers`` threads named ``name-N``, one per process."""

    __slots__ = ("_lock", "_pool", "name", "workers")

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        os.register_at_fork(after_in_child=self.forget)

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
            return self._pool

    def forget(self) -> None:
        """Drop the pool without waiting for it (after a fork: its threads are the parent's)."""
        self._lock = threading.Lock()  # a lock held by a parent's thread at the fork stays held
        self._pool = None
