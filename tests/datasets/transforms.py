"""Transforms for tests/datasets/test_derive.py, imported by name in derive's pool workers
(``tests.datasets.transforms:upper``), as a user's module would be."""

from __future__ import annotations

import os
from typing import Any

NOT_A_FUNCTION = 3


def upper(sample: dict[str, Any]) -> bytes:
    """New bytes, same key and label."""
    return bytes(sample["data"]).upper()


def chip(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """One sample -> 3 chips: every third byte from offset j, labelled ``<label>/<j>``."""
    data, label = sample["data"], sample["label"]
    return [{"data": data[j::3], "label": None if label is None else f"{label}/{j}"} for j in range(3)]


def drop_odd(sample: dict[str, Any]) -> bytes | None:
    """Odd rows are dropped."""
    return None if sample["index"] % 2 else sample["data"]


def drop_all(sample: dict[str, Any]) -> None:
    return None


def renamed(sample: dict[str, Any]) -> dict[str, Any]:
    """Reversed bytes under a key of its own, extension ``rev``, no label."""
    return {"data": sample["data"][::-1], "key": f"flat/{sample['index']:04d}.x", "label": None, "ext": "rev"}


def boom(sample: dict[str, Any]) -> bytes:
    if sample["index"] == 3:
        raise ZeroDivisionError("sample three is cursed")
    return bytes(sample["data"])


def bad_return(sample: dict[str, Any]) -> int:
    return 42


def misspelt(sample: dict[str, Any]) -> dict[str, Any]:
    return {"data": sample["data"], "lable": "x"}


def crash(sample: dict[str, Any]) -> bytes:
    """The worker process dies on row 2, as a segfault in native code would end it."""
    if sample["index"] == 2:
        os._exit(3)
    return bytes(sample["data"])
