"""The SSE package format (crypto/_packages.py, docs/encryption.md): round trips at the package
boundaries, every range against a slice of the plaintext, and every kind of tampering refused
with IntegrityError naming the package."""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierstore.crypto import (
    PACKAGE_BYTES,
    IntegrityError,
    PackageOpener,
    PackageSealer,
    RowBinding,
    StreamLayout,
    ciphertext_size,
    derive_part_key,
    keyed_etag,
    open_packages,
    package_count,
    package_span,
)
from tierstore.crypto._packages import TAG_BYTES

KEY = bytes(range(32))
PREFIX = b"\x01\x02\x03\x04\x05\x06\x07"
SEALED = PACKAGE_BYTES + TAG_BYTES


def _plaintext(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _seal(
    data: bytes,
    *,
    key: bytes = KEY,
    prefix: bytes = PREFIX,
    part: int = 0,
    chunk: int = 1 << 20,
    ps: int = PACKAGE_BYTES,
) -> bytes:
    sealer = PackageSealer(key, prefix, part_number=part, package_bytes=ps)
    out = [piece for i in range(0, len(data), chunk) for piece in sealer.update(data[i : i + chunk])]
    out.append(sealer.finish())
    assert sealer.plaintext_bytes == len(data)
    return b"".join(out)


def _open(ciphertext: bytes, size: int, *, key: bytes = KEY, prefix: bytes = PREFIX, part: int = 0) -> bytes:
    return open_packages(key, prefix, ciphertext, plaintext_size=size, part_number=part)


@pytest.mark.parametrize(
    "size", [0, 1, PACKAGE_BYTES - 1, PACKAGE_BYTES, PACKAGE_BYTES + 1, 3 * 1024 * 1024 + 17, 4 * PACKAGE_BYTES]
)
@pytest.mark.parametrize("chunk", [1000, PACKAGE_BYTES, 1 << 20])
def test_round_trip_at_package_boundaries(size: int, chunk: int) -> None:
    data = _plaintext(size, seed=size)
    sealed = _seal(data, chunk=chunk)
    assert len(sealed) == ciphertext_size(size) == size + TAG_BYTES * package_count(size)
    assert package_count(size) == max(1, -(-size // PACKAGE_BYTES))
    if size >= 64:
        assert data[:64] not in sealed  # no plaintext on disk
    assert _open(sealed, size) == data
    # the same stream opened in ragged chunks of ciphertext
    opener = PackageOpener(KEY, PREFIX, plaintext_size=size)
    got = b"".join(b"".join(opener.update(sealed[i : i + 7777])) for i in range(0, len(sealed), 7777))
    opener.finish()
    assert got == data


def test_an_empty_stream_is_one_sealed_package_that_is_checked() -> None:
    sealed = _seal(b"")
    assert len(sealed) == TAG_BYTES
    assert package_span(0, 0, 0) == (0, 0, 0, TAG_BYTES)
    assert _open(sealed, 0) == b""
    with pytest.raises(IntegrityError):
        _open(bytes(TAG_BYTES), 0)
    with pytest.raises(IntegrityError):  # an empty object with its tag missing
        _open(b"", 0)


def test_sealing_is_the_same_however_the_plaintext_is_chunked() -> None:
    data = _plaintext(5 * PACKAGE_BYTES + 3)
    whole = _seal(data, chunk=len(data))
    for chunk in (1, 13, PACKAGE_BYTES - 1, PACKAGE_BYTES + 1):
        if chunk == 1:
            sealer = PackageSealer(KEY, PREFIX)
            pieces = [p for i in range(2 * PACKAGE_BYTES) for p in sealer.update(data[i : i + 1])]
            sealed = b"".join(pieces + sealer.update(data[2 * PACKAGE_BYTES :]))
            assert sealed + sealer.finish() == whole
        else:
            assert _seal(data, chunk=chunk) == whole
    sealer = PackageSealer(KEY, PREFIX)
    sealer.update(b"x")
    sealer.finish()
    with pytest.raises(ValueError, match="finished"):
        sealer.update(b"y")
    with pytest.raises(ValueError, match="finished"):
        sealer.update_joined(b"y")


@given(size=st.integers(0, 600), ps=st.integers(1, 70), chunks=st.lists(st.integers(0, 200), max_size=12))
def test_joined_sealing_is_the_same_bytes_as_per_package(size: int, ps: int, chunks: list[int]) -> None:
    # update_joined: one bytes per call holding exactly the packages update would return
    data = _plaintext(size, seed=size)
    cuts = sorted({min(c * 3, size) for c in chunks} | {0, size})
    per_package = PackageSealer(KEY, PREFIX, package_bytes=ps)
    joined = PackageSealer(KEY, PREFIX, package_bytes=ps)
    for lo, hi in itertools.pairwise(cuts):
        piece = bytearray(data[lo:hi])
        expected = b"".join(per_package.update(piece))
        got = joined.update_joined(piece)
        piece[:] = bytes(len(piece))  # the caller may reuse its buffer: nothing sealed later changes
        assert type(got) is bytes and got == expected
    assert joined.finish() == per_package.finish()
    assert joined.plaintext_bytes == per_package.plaintext_bytes == size


def test_package_span_maps_ranges_to_packages() -> None:
    size = 3 * PACKAGE_BYTES + 10
    assert package_span(0, 1, size) == (0, 0, 0, SEALED)
    assert package_span(PACKAGE_BYTES - 1, PACKAGE_BYTES + 1, size) == (0, 1, 0, 2 * SEALED)
    assert package_span(PACKAGE_BYTES, 2 * PACKAGE_BYTES, size) == (1, 1, SEALED, 2 * SEALED)
    assert package_span(size - 1, size, size) == (3, 3, 3 * SEALED, ciphertext_size(size))
    assert package_span(0, size, size) == (0, 3, 0, ciphertext_size(size))
    for bad in ((5, 4), (-1, 3), (0, size + 1), (7, 7)):
        with pytest.raises(ValueError):
            package_span(*bad, size)


def test_every_range_of_a_small_object_is_its_slice() -> None:
    ps = 16
    data = _plaintext(77, seed=3)
    sealed = _seal(data, ps=ps)
    for start in range(len(data)):
        for end in range(start + 1, len(data) + 1):
            span = package_span(start, end, len(data), package_bytes=ps)
            piece = sealed[span.cipher_start : span.cipher_end]
            got = open_packages(
                KEY, PREFIX, piece, plaintext_size=len(data), plain_start=start, plain_end=end, package_bytes=ps
            )
            assert got == data[start:end], (start, end)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 600),
    ps=st.integers(1, 70),
    chunk=st.integers(1, 200),
    bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    feed=st.integers(1, 100),
)
def test_any_range_any_chunking_is_the_slice(
    size: int, ps: int, chunk: int, bounds: tuple[float, float], feed: int
) -> None:
    data = _plaintext(size, seed=size)
    sealed = _seal(data, ps=ps, chunk=chunk)
    assert len(sealed) == ciphertext_size(size, package_bytes=ps)
    lo, hi = sorted(int(b * size) for b in bounds)
    if lo == hi:
        lo, hi = (0, 0) if size == 0 else (min(lo, size - 1), min(lo, size - 1) + 1)
    opener = PackageOpener(KEY, PREFIX, plaintext_size=size, plain_start=lo, plain_end=hi, package_bytes=ps)
    piece = sealed[opener.span.cipher_start : opener.span.cipher_end]
    got = b"".join(p for i in range(0, len(piece), feed) for p in opener.update(piece[i : i + feed]))
    opener.finish()
    assert got == data[lo:hi]
    # update_joined: the same bytes, one chunk per call, each its own bytes (opened in place
    # into a new object per call: no later call may change an earlier chunk)
    opener = PackageOpener(KEY, PREFIX, plaintext_size=size, plain_start=lo, plain_end=hi, package_bytes=ps)
    chunks = [opener.update_joined(piece[i : i + feed]) for i in range(0, len(piece), feed)]
    opener.finish()
    assert all(type(c) is bytes for c in chunks)
    assert b"".join(chunks) == data[lo:hi]


def _flip(data: bytes, index: int) -> bytes:
    damaged = bytearray(data)
    damaged[index] ^= 0x80
    return bytes(damaged)


def test_a_flipped_byte_in_a_body_or_tag_names_its_package() -> None:
    size = 3 * PACKAGE_BYTES + 100
    data = _plaintext(size)
    sealed = _seal(data)
    for package, offset in [(0, 0), (0, PACKAGE_BYTES - 1), (0, SEALED - 1), (1, SEALED + 5), (3, len(sealed) - 1)]:
        assert offset // SEALED == package
        with pytest.raises(IntegrityError, match=f"package {package} ") as info:
            _open(_flip(sealed, offset), size)
        assert info.value.package == package
    # a ranged read of an undamaged package is not affected by damage elsewhere, and never
    # returns the damaged package's bytes
    damaged = _flip(sealed, 2 * SEALED + 9)
    span = package_span(0, PACKAGE_BYTES, size)
    assert (
        open_packages(KEY, PREFIX, damaged[: span.cipher_end], plaintext_size=size, plain_end=PACKAGE_BYTES)
        == (data[:PACKAGE_BYTES])
    )
    opener = PackageOpener(KEY, PREFIX, plaintext_size=size)
    first = opener.update(damaged[: 2 * SEALED])
    assert first == [data[:PACKAGE_BYTES], data[PACKAGE_BYTES : 2 * PACKAGE_BYTES]]
    with pytest.raises(IntegrityError, match="package 2 "):
        opener.update(damaged[2 * SEALED :])


def test_update_joined_names_the_package_that_does_not_open() -> None:
    size = 40 * PACKAGE_BYTES + 100
    data = _plaintext(size)
    sealed = _seal(data)
    damaged = _flip(sealed, 20 * SEALED + 3)  # package 20, in the second 1 MiB read
    opener = PackageOpener(KEY, PREFIX, plaintext_size=size)
    first = opener.update_joined(damaged[: 1 << 20])  # packages 0..14 and most of 15
    assert first == data[: 15 * PACKAGE_BYTES]
    with pytest.raises(IntegrityError, match="package 20 ") as info:
        opener.update_joined(damaged[1 << 20 : 2 << 20])
    assert info.value.package == 20
    # a range that starts and ends inside packages, fed in one call and in ragged calls
    lo, hi = PACKAGE_BYTES + 5, 30 * PACKAGE_BYTES - 7
    for feed in (len(sealed), 100_000, SEALED):
        opener = PackageOpener(KEY, PREFIX, plaintext_size=size, plain_start=lo, plain_end=hi)
        piece = sealed[opener.span.cipher_start : opener.span.cipher_end]
        got = b"".join(opener.update_joined(piece[i : i + feed]) for i in range(0, len(piece), feed))
        opener.finish()
        assert got == data[lo:hi]
    opener = PackageOpener(KEY, PREFIX, plaintext_size=size)
    opener.update_joined(sealed[: 5 * SEALED + 9])
    with pytest.raises(IntegrityError, match="ends inside package 5"):
        opener.finish()
    with pytest.raises(IntegrityError, match="more ciphertext"):
        PackageOpener(KEY, PREFIX, plaintext_size=size).update_joined(sealed + b"x")


def test_wrong_key_prefix_or_part_number_do_not_open() -> None:
    data = _plaintext(PACKAGE_BYTES + 5)
    sealed = _seal(data)
    with pytest.raises(IntegrityError, match="package 0 "):
        _open(sealed, len(data), key=bytes(32))
    with pytest.raises(IntegrityError, match="package 0 "):  # the nonce prefix stored in meta, changed
        _open(sealed, len(data), prefix=_flip(PREFIX, 6))
    with pytest.raises(IntegrityError, match="package 0 "):  # the AAD (part number) differs
        _open(sealed, len(data), part=1)
    part = _seal(data, part=7)
    assert _open(part, len(data), part=7) == data
    with pytest.raises(IntegrityError):
        _open(part, len(data), part=8)


def test_one_package_reads_keep_every_check() -> None:
    """open_packages opens a range within one package with one decrypt, no opener: the same
    refusals as the streaming path (damage, key, prefix, part, the final flag, a wrong length)."""
    small = _plaintext(4096)
    one = _seal(small)
    assert _open(one, 4096) == small
    assert open_packages(KEY, PREFIX, one, plaintext_size=4096, plain_start=10, plain_end=20) == small[10:20]
    for bad in (
        lambda: _open(_flip(one, 100), 4096),
        lambda: _open(_flip(one, len(one) - 1), 4096),  # the tag
        lambda: _open(one, 4096, key=bytes(32)),
        lambda: _open(one, 4096, prefix=_flip(PREFIX, 0)),
        lambda: _open(one, 4096, part=3),
    ):
        with pytest.raises(IntegrityError, match="package 0 ") as info:
            bad()
        assert info.value.package == 0
    with pytest.raises(IntegrityError, match="package 0 is 4112 sealed bytes, not 4111"):
        _open(one[:-1], 4096)
    size = 2 * PACKAGE_BYTES + 7
    data = _plaintext(size, seed=5)
    sealed = _seal(data)
    middle = sealed[SEALED : 2 * SEALED]
    assert (
        open_packages(
            KEY, PREFIX, middle, plaintext_size=size, plain_start=PACKAGE_BYTES + 3, plain_end=PACKAGE_BYTES + 9
        )
        == data[PACKAGE_BYTES + 3 : PACKAGE_BYTES + 9]
    )
    with pytest.raises(IntegrityError, match="package 1 "):  # a middle package read as the stream's last
        open_packages(KEY, PREFIX, middle, plaintext_size=2 * PACKAGE_BYTES, plain_start=PACKAGE_BYTES)
    final = _seal(_plaintext(3 * PACKAGE_BYTES, seed=6))[2 * SEALED :]  # a whole package, sealed final
    with pytest.raises(IntegrityError, match="package 2 does not open"):  # read as a middle one
        open_packages(
            KEY,
            PREFIX,
            final,
            plaintext_size=4 * PACKAGE_BYTES,
            plain_start=2 * PACKAGE_BYTES,
            plain_end=3 * PACKAGE_BYTES,
        )
    with pytest.raises(IntegrityError, match="package 1 "):  # another package at this position
        open_packages(
            KEY, PREFIX, sealed[:SEALED], plaintext_size=size, plain_start=PACKAGE_BYTES, plain_end=PACKAGE_BYTES + 1
        )


def test_packages_swapped_within_an_object_do_not_open() -> None:
    size = 3 * PACKAGE_BYTES
    sealed = _seal(_plaintext(size))
    p = [sealed[i * SEALED : (i + 1) * SEALED] for i in range(3)]
    with pytest.raises(IntegrityError, match="package 0 "):
        _open(p[1] + p[0] + p[2], size)
    with pytest.raises(IntegrityError, match="package 1 "):  # the first one is right
        _open(p[0] + p[0] + p[2], size)
    with pytest.raises(IntegrityError, match="package 1 "):  # the final package moved up
        _open(p[0] + p[2] + p[1], size)


def test_packages_from_another_object_under_the_same_key_do_not_open() -> None:
    size = 2 * PACKAGE_BYTES
    a = _seal(_plaintext(size, seed=1), prefix=PREFIX)
    b = _seal(_plaintext(size, seed=2), prefix=b"\x09" * 7)
    with pytest.raises(IntegrityError, match="package 1 "):
        _open(a[:SEALED] + b[SEALED:], size)
    with pytest.raises(IntegrityError, match="package 0 "):  # b's bytes under a's metadata
        _open(b, size, prefix=PREFIX)
    c = _seal(_plaintext(size, seed=3), prefix=PREFIX, part=2)  # same key and prefix, other part
    with pytest.raises(IntegrityError, match="package 1 "):
        _open(a[:SEALED] + c[SEALED:], size)


def test_truncation_at_a_package_boundary_and_an_extra_package_are_detected() -> None:
    size = 3 * PACKAGE_BYTES
    data = _plaintext(size)
    sealed = _seal(data)
    cut = sealed[: 2 * SEALED]
    with pytest.raises(IntegrityError, match="ends inside package 2"):  # metadata still says 3 packages
        _open(cut, size)
    with pytest.raises(IntegrityError, match="package 1 "):  # metadata cut too: package 1 was not final
        _open(cut, 2 * PACKAGE_BYTES)
    longer = _seal(data + _plaintext(PACKAGE_BYTES, seed=9))
    with pytest.raises(IntegrityError, match="package 2 "):  # the stream's last package is sealed final
        _open(sealed + longer[3 * SEALED :], 4 * PACKAGE_BYTES)
    with pytest.raises(IntegrityError, match="more ciphertext"):  # bytes beyond what the metadata says
        _open(sealed + longer[3 * SEALED :], size)
    with pytest.raises(IntegrityError, match="ends inside package 2"):  # cut inside a package
        _open(sealed[:-1], size)


def test_part_keys_differ_per_part_attempt_and_data_key() -> None:
    dk = bytes(range(32, 64))
    keys = {derive_part_key(dk, n, PREFIX) for n in range(1, 101)}
    assert len(keys) == 100 and dk not in keys
    assert derive_part_key(dk, 5, PREFIX) == derive_part_key(dk, 5, PREFIX)  # deterministic
    assert derive_part_key(dk, 5, PREFIX) != derive_part_key(dk, 5, b"\x00" * 7)  # a retried part
    assert derive_part_key(dk, 5, PREFIX) != derive_part_key(bytes(32), 5, PREFIX)
    data = _plaintext(1000)
    sealed = _seal(data, key=derive_part_key(dk, 3, PREFIX), part=3)
    with pytest.raises(IntegrityError):
        _open(sealed, 1000, key=derive_part_key(dk, 4, PREFIX), part=3)
    for bad in (0, 10_001):
        with pytest.raises(ValueError):
            derive_part_key(dk, bad, PREFIX)
    with pytest.raises(ValueError):
        derive_part_key(dk[:16], 1, PREFIX)


def test_the_binding_mac_names_the_row_and_the_layout() -> None:
    dk = bytes(range(32, 64))
    streams = (StreamLayout(1, 5 << 20, PREFIX), StreamLayout(2, 100, b"\x02" * 7))
    row = RowBinding(bucket="b", key="k/x", version_id="v1", kind="kms", streams=streams)
    mac = row.mac(dk)
    assert len(mac) == 32
    row.verify(mac, dk)
    others = [
        replace(row, bucket="c"),
        replace(row, key="k/y"),
        replace(row, version_id="null"),
        replace(row, kind="s3"),
        replace(row, streams=streams[::-1]),
        replace(row, streams=streams[:1]),
        replace(row, streams=(streams[0], StreamLayout(2, 101, b"\x02" * 7))),
        replace(row, streams=(streams[0], StreamLayout(3, 100, b"\x02" * 7))),
        replace(row, streams=(streams[0], StreamLayout(2, 100, b"\x03" * 7))),
        replace(row, package_bytes=4096),
        replace(row, bucket="bk", key="/x"),  # length-prefixed: a character moved from key to bucket
    ]
    for other in others:
        with pytest.raises(IntegrityError, match="does not belong"):
            other.verify(mac, dk)
    with pytest.raises(IntegrityError):  # another data key
        row.verify(mac, bytes(32))
    with pytest.raises(ValueError, match="at least one stream"):
        replace(row, streams=())
    with pytest.raises(ValueError, match="nonce prefix"):
        replace(row, streams=(StreamLayout(1, 5, b"\x01"),))


def test_keyed_etag_is_not_the_md5_and_is_stable_per_data_key() -> None:
    md5 = hashlib.md5(b"hello").digest()
    etag = keyed_etag(KEY, md5)
    assert len(etag) == 32 and int(etag, 16) >= 0
    assert etag != md5.hex() and etag == keyed_etag(KEY, md5)
    assert etag != keyed_etag(bytes(32), md5)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="stream key"):
        PackageSealer(KEY[:16], PREFIX)
    with pytest.raises(ValueError, match="nonce prefix"):
        PackageSealer(KEY, PREFIX + b"x")
    with pytest.raises(ValueError, match="part number"):
        PackageSealer(KEY, PREFIX, part_number=10_001)
    with pytest.raises(ValueError):
        PackageSealer(KEY, PREFIX, package_bytes=0)
    with pytest.raises(ValueError):
        ciphertext_size(-1)
    assert package_count(2**32 * PACKAGE_BYTES) == 2**32
    with pytest.raises(ValueError, match="2\\^32 packages"):
        package_count(2**32 * PACKAGE_BYTES + 1)
