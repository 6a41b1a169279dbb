"""The batch frame parser of client/_ext.py, against every way a stream can be cut into chunks."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tierstore.client._ext import _frames
from tierstore.types import BATCH_FRAME, BATCH_TRAILER

frames_st = st.lists(st.tuples(st.integers(0, 2**32 - 2), st.sampled_from([200, 206, 404]), st.binary(max_size=300)))


@settings(max_examples=300, deadline=None)
@given(frames=frames_st, cuts=st.lists(st.integers(0, 4000), max_size=30))
def test_frames_survive_any_chunking(frames: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(BATCH_FRAME.pack(i, s, len(d)) + d for i, s, d in frames)
    stream += BATCH_FRAME.pack(BATCH_TRAILER, 200, 2) + b"{}"
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    got = list(_frames(iter(chunks)))
    assert got == [*frames, (BATCH_TRAILER, 200, b"{}")]


def test_a_stream_cut_short_ends_without_the_rest() -> None:
    stream = BATCH_FRAME.pack(0, 200, 5) + b"abcde" + BATCH_FRAME.pack(1, 200, 10) + b"xyz"
    assert list(_frames(iter([stream[:7], stream[7:]]))) == [(0, 200, b"abcde")]
    assert list(_frames(iter([stream[:20]]))) == [(0, 200, b"abcde")]  # a header cut short
