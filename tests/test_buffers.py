"""``tierstore._buffers.filled_bytes``: new ``bytes`` objects written in place."""

from __future__ import annotations

import os
import sys

import pytest

from tierstore import _buffers
from tierstore._buffers import filled_bytes


def test_in_place_on_cpython() -> None:
    # The fast path (no zeroing, no copy) is the one the server runs on this interpreter.
    assert sys.implementation.name == "cpython"
    assert _buffers._fill is _buffers._filled_in_place


@pytest.mark.parametrize("size", [0, 1, 2, 7, 4096, (1 << 20) + 3])
def test_the_bytes_hold_what_fill_wrote(size: int) -> None:
    want = os.urandom(size)
    seen: list[int] = []

    def fill(view: memoryview) -> None:
        seen.append(len(view))
        assert not view.readonly and view.format == "B"
        view[:] = want

    got = filled_bytes(size, fill)
    assert type(got) is bytes
    assert got == want and hash(got) == hash(want)
    assert seen == [size]


def test_each_call_is_a_new_object_and_the_view_dies_with_the_call() -> None:
    kept: list[memoryview] = []

    def fill(view: memoryview) -> None:
        view[:] = b"ab" * (len(view) // 2)
        kept.append(view)

    first = filled_bytes(64, fill)
    second = filled_bytes(64, fill)
    assert first is not second and first == second == b"ab" * 32
    for view in kept:  # released: a view kept past the call cannot write into the bytes
        with pytest.raises(ValueError, match="released"):
            view[0] = 0
    assert first == b"ab" * 32


def test_an_error_in_fill_propagates() -> None:
    def fill(view: memoryview) -> None:
        raise OSError("read failed")

    with pytest.raises(OSError, match="read failed"):
        filled_bytes(4096, fill)
