"""The CRC-off fast read of encrypted bodies (``engine/_encryption.open_range``, docs/encryption.md
"A speed lever for GET"): ciphertext is read with ``verify=False``; a package that does not open
makes the rest of the stream be read again with ``verify=True`` from that package on, and only
a package that still does not open is damage. Pure: the "store" is a function over bytes."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import pytest

from tierstore.crypto import PACKAGE_BYTES, PackageSealer, StreamLayout
from tierstore.engine._encryption import open_range
from tierstore.errors import InternalError

SEALED = PACKAGE_BYTES + 16
KEY, PREFIX = bytes(range(32)), b"prefix7"


def sealed(body: bytes) -> bytes:
    sealer = PackageSealer(KEY, PREFIX)
    return b"".join([*sealer.update(body), sealer.finish()])


class Store:
    """Ciphertext whose unchecked reads return ``unchecked`` and checked reads ``checked``
    (bitrot: they differ; tampering: both are bad); every read is recorded."""

    def __init__(self, checked: bytes, unchecked: bytes) -> None:
        self.checked, self.unchecked = checked, unchecked
        self.reads: list[tuple[int, int, bool]] = []

    async def read(self, start: int, size: int, verify: bool) -> AsyncIterator[bytes]:
        self.reads.append((start, size, verify))
        data = self.checked if verify else self.unchecked
        for i in range(start, start + size, 100_000):  # several chunks, not package-aligned
            yield data[i : min(start + size, i + 100_000)]


def run(store: Store, body_size: int, offset: int, length: int) -> bytes:
    async def collect() -> bytes:
        streams = (StreamLayout(0, body_size, PREFIX),)
        it = open_range(store.read, KEY, streams, offset, length, name=("b", "k", "v"))
        return b"".join([chunk async for chunk in it])

    return asyncio.run(collect())


def flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 1
    return bytes(out)


BODY = os.urandom(5 * PACKAGE_BYTES + 123)
CIPHER = sealed(BODY)


def test_healthy_reads_are_unchecked_only() -> None:
    store = Store(CIPHER, CIPHER)
    assert run(store, len(BODY), 0, len(BODY)) == BODY
    assert run(store, len(BODY), 3 * PACKAGE_BYTES + 5, 4096) == BODY[3 * PACKAGE_BYTES + 5 :][:4096]
    assert store.reads and all(not verify for _, _, verify in store.reads)


@pytest.mark.parametrize("bad_package", [0, 3, 5])
def test_bitrot_is_read_again_with_checks_from_the_failing_package(
    bad_package: int, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(CIPHER, flipped(CIPHER, bad_package * SEALED + 7))
    with caplog.at_level(logging.WARNING, logger="tierstore.engine.sse"):
        assert run(store, len(BODY), 0, len(BODY)) == BODY
    first, *again = store.reads
    assert first == (0, len(CIPHER), False)
    ((start, size, verify),) = again  # one checked re-read, of the rest of the stream only:
    assert verify and start + size == len(CIPHER)
    assert start % SEALED == 0 and start <= bad_package * SEALED  # from the first package not yet returned
    assert "reading it again with checksums" in caplog.text and "sse integrity" not in caplog.text


def test_a_range_rereads_only_its_own_remainder() -> None:
    start = 2 * PACKAGE_BYTES + 10
    store = Store(CIPHER, flipped(CIPHER, 3 * SEALED + 1))
    assert run(store, len(BODY), start, 2 * PACKAGE_BYTES) == BODY[start : start + 2 * PACKAGE_BYTES]
    assert [r[2] for r in store.reads] == [False, True]
    assert store.reads[1][0] == 3 * SEALED  # from the package that failed, not from the range's start
    assert store.reads[1][1] == 2 * SEALED  # to the range's last package, no further


def test_tampering_that_checksums_cannot_see_is_damage(caplog: pytest.LogCaptureFixture) -> None:
    bad = flipped(CIPHER, 4 * SEALED + 3)
    store = Store(bad, bad)  # CRC-valid tampering: the checked read returns the same bytes
    got = bytearray()

    async def collect() -> None:
        streams = (StreamLayout(0, len(BODY), PREFIX),)
        async for chunk in open_range(store.read, KEY, streams, 0, len(BODY), name=("b", "k", "v")):
            got.extend(chunk)

    with caplog.at_level(logging.ERROR, logger="tierstore.engine.sse"), pytest.raises(InternalError) as exc:
        asyncio.run(collect())
    assert "b/k" in str(exc.value)
    assert bytes(got) == BODY[: 4 * PACKAGE_BYTES]  # never a byte of the bad package
    assert [r[2] for r in store.reads] == [False, True]
    assert "sse integrity: b/k version v package 4" in caplog.text
