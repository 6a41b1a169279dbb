"""Automatic lineage: every dataset version a tierstore loader opened in this process.

A loader records its pinned ``NAME@N`` when it opens the manifest (in the main process, where
the dataset object is built; DataLoader workers get copies and record nothing), and a checkpoint
saved later in the process lists them in its commit (docs/checkpoints.md, "Lineage")."""

from __future__ import annotations

import threading

__all__ = ["opened_datasets", "record_opened"]

_lock = threading.Lock()
_opened: set[str] = set()


def record_opened(ref: str) -> None:
    """Note that a loader opened dataset version ``ref`` (``NAME@N``)."""
    with _lock:
        _opened.add(ref)


def opened_datasets() -> list[str]:
    """Every dataset version a loader opened in this process so far, sorted."""
    with _lock:
        return sorted(_opened)
