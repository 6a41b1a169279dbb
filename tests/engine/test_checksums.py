"""CRC combination (the FULL_OBJECT checksum of a multipart object from its parts' CRCs)."""

from __future__ import annotations

import random
import zlib

import pytest
from awscrt import checksums as crt

from tierstore.engine._checksums import combine_crc

CRC = {"crc32": zlib.crc32, "crc32c": crt.crc32c, "crc64nvme": crt.crc64nvme}


@pytest.mark.parametrize("algorithm", sorted(CRC))
def test_combine_is_the_crc_of_the_concatenation(algorithm: str, rng: random.Random) -> None:
    crc = CRC[algorithm]
    for _ in range(50):
        a, b = rng.randbytes(rng.randrange(0, 5000)), rng.randbytes(rng.randrange(0, 5000))
        assert combine_crc(algorithm, crc(a), crc(b), len(b)) == crc(a + b)
