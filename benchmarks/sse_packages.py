"""The SSE package format's CPU cost (issue 16): can encrypted 64 MiB GET/PUT stay >= 0.7x plain?

In-process, one thread, no HTTP and no disk: what ``crypto.PackageSealer`` / ``PackageOpener``
add to a request, next to what the plain path already spends on the same bytes.

The process sets the server workers' malloc thresholds first (``server.tune_malloc``): without
them glibc trims the freed packages' heap back to the kernel after every chunk and each chunk
faults its pages in again, halving every rate here.

- **seal / open 64 MiB**: the body fed in 1 MiB chunks (the size the engine streams), MB/s
  (10^6 bytes of plaintext per CPU second of this process: the machine is shared, and CPU is
  what a request costs), best of ``--repeat``; every opened body is compared with
  the input. A "raw AES-GCM" row seals the same packages with ``AESGCM.encrypt`` in a bare loop:
  the difference is the module's own Python overhead.
- **baselines in the same run**: a copy of the body (1 MiB chunks copied, the cheapest
  thing a request does with a body), MD5 (what a plain PUT computes for the ETag) and CRC32C
  (awscrt, what every blob read verifies per 64 KiB block).
- **4 KiB range**: CPU per call (``time.process_time``) to open the one package holding a
  4 KiB range and slice it, vs CRC32C of the 64 KiB block a plain 4 KiB range GET verifies.
- **package size**: seal + open MB/s at 16, 64 and 256 KiB packages.
- **AEADs**: AES-GCM, AES-GCM-SIV and ChaCha20-Poly1305 sealing one 64 KiB package that stays
  in cache (the cipher alone, no memory traffic).
- **projection**: the end-to-end ratio encrypted/plain for a CPU-bound 64 MiB GET and PUT,
  from the plain server CPU per request (``--plain-get-ms``, ``--plain-put-ms``, defaults from
  docs/benchmarks.md and server.py's malloc note) plus the measured seal/open CPU. A projection,
  not a server measurement: the engine slice measures the real thing.

    .venv/bin/python benchmarks/sse_packages.py [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV, ChaCha20Poly1305

from tierstore.blob._protocol import crc32c
from tierstore.crypto import PACKAGE_BYTES, PackageOpener, PackageSealer, ciphertext_size, package_span
from tierstore.server import tune_malloc

MIB = 1024 * 1024
CHUNK = MIB


def best_seconds(fn: Callable[[], object], repeat: int) -> float:
    """The least CPU time (this process, user + system) of ``repeat`` calls: on a shared machine
    wall time measures the neighbours, CPU time what a request would cost."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def seal(body: bytes, key: bytes, prefix: bytes, package_bytes: int = PACKAGE_BYTES) -> list[bytes]:
    """The sealed packages, kept (for the check and the range rows)."""
    sealer = PackageSealer(key, prefix, package_bytes=package_bytes)
    view = memoryview(body)
    out = [p for i in range(0, len(body), CHUNK) for p in sealer.update(view[i : i + CHUNK])]
    out.append(sealer.finish())
    return out


def seal_stream(body: bytes, key: bytes, prefix: bytes, package_bytes: int = PACKAGE_BYTES) -> int:
    """Seal as a PUT does: each package handed on (here: counted) and dropped."""
    sealer = PackageSealer(key, prefix, package_bytes=package_bytes)
    view = memoryview(body)
    n = 0
    for i in range(0, len(body), CHUNK):
        for piece in sealer.update(view[i : i + CHUNK]):
            n += len(piece)
    return n + len(sealer.finish())


def seal_joined(body: bytes, key: bytes, prefix: bytes) -> int:
    """Seal as a PUT does (``seal_chunks``): each chunk's packages sealed in place into one
    ``bytes`` (``update_joined``)."""
    sealer = PackageSealer(key, prefix)
    view = memoryview(body)
    n = 0
    for i in range(0, len(body), CHUNK):
        n += len(sealer.update_joined(view[i : i + CHUNK]))
    return n + len(sealer.finish())


def open_joined(sealed: bytes, size: int, key: bytes, prefix: bytes) -> int:
    """Open as a GET does (``open_range``): each chunk's packages opened in place into one ``bytes``."""
    opener = PackageOpener(key, prefix, plaintext_size=size)
    view = memoryview(sealed)
    n = 0
    for i in range(0, len(sealed), CHUNK):
        n += len(opener.update_joined(view[i : i + CHUNK]))
    opener.finish()
    return n


def open_stream(sealed: bytes, size: int, key: bytes, prefix: bytes, package_bytes: int = PACKAGE_BYTES) -> int:
    """Open package by package: ciphertext in 1 MiB chunks, each package's plaintext handed on and dropped."""
    opener = PackageOpener(key, prefix, plaintext_size=size, package_bytes=package_bytes)
    view = memoryview(sealed)
    n = 0
    for i in range(0, len(sealed), CHUNK):
        for piece in opener.update(view[i : i + CHUNK]):
            n += len(piece)
    opener.finish()
    return n


def raw_gcm(body: bytes, key: bytes) -> None:
    aead = AESGCM(key)
    view = memoryview(body)
    for i in range(0, len(body), PACKAGE_BYTES):
        aead.encrypt(i.to_bytes(12, "big"), view[i : i + PACKAGE_BYTES], b"aad")


def copy_body(body: bytes) -> None:
    view = memoryview(body)
    for i in range(0, len(body), CHUNK):
        bytes(view[i : i + CHUNK])


def crc_blocks(body: bytes) -> None:
    view = memoryview(body)
    for i in range(0, len(body), 64 * 1024):
        crc32c(view[i : i + 64 * 1024])


def cpu_us_per_call(fn: Callable[[], object], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000, help="4 KiB range opens per sample")
    parser.add_argument("--plain-get-ms", type=float, default=26.0, help="plain server CPU per 64 MiB GET")
    parser.add_argument("--plain-put-ms", type=float, default=165.0, help="plain server CPU per 64 MiB PUT")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    tune_malloc()  # the server's workers run with these malloc thresholds (server.py)

    size = args.size_mib * MIB
    body = os.urandom(size)
    key, prefix = os.urandom(32), os.urandom(7)
    sealed = b"".join(seal(body, key, prefix))
    assert len(sealed) == ciphertext_size(size) == seal_stream(body, key, prefix)
    opener = PackageOpener(key, prefix, plaintext_size=size)
    assert b"".join(opener.update(sealed)) == body, "the opened body differs"
    assert open_stream(sealed, size, key, prefix) == size == open_joined(sealed, size, key, prefix)

    rows: dict[str, float] = {}

    def rate(name: str, fn: Callable[[], object]) -> float:
        seconds = best_seconds(fn, args.repeat)
        rows[name] = size / seconds / 1e6
        print(f"{name:<34} {rows[name]:>8,.0f} MB/s   {seconds * 1e3:7.1f} ms CPU per {args.size_mib} MiB")
        return seconds

    print(f"{args.size_mib} MiB, 1 MiB chunks, best of {args.repeat}, one thread, MB per CPU second")
    seal_s = rate("seal (PackageSealer)", lambda: seal_stream(body, key, prefix))
    open_s = rate("open (PackageOpener)", lambda: open_stream(sealed, size, key, prefix))
    rate("seal, update_joined (a PUT)", lambda: seal_joined(body, key, prefix))
    rate("open, update_joined (a GET)", lambda: open_joined(sealed, size, key, prefix))
    rate("raw AES-GCM, 64 KiB one-shot calls", lambda: raw_gcm(body, key))
    rate("baseline: copy (1 MiB chunks)", lambda: copy_body(body))
    rate("baseline: MD5 (plain PUT's ETag)", lambda: hashlib.md5(body).digest())
    rate("baseline: CRC32C per 64 KiB block", lambda: crc_blocks(body))

    print("AEADs on one hot 64 KiB package (the alternatives of docs/encryption.md)")
    aeads: dict[str, float] = {}
    package = body[:PACKAGE_BYTES]
    for cls in (AESGCM, AESGCMSIV, ChaCha20Poly1305):
        aead = cls(key)
        us = cpu_us_per_call(lambda aead=aead: aead.encrypt(bytes(12), package, b"aad"), 200, args.repeat)
        aeads[cls.__name__] = PACKAGE_BYTES / us
        print(f"  {cls.__name__:<18} {PACKAGE_BYTES / us:>8,.0f} MB/s")

    print("package size (seal + open, MB/s each)")
    sizes: dict[str, list[float]] = {}
    for kib in (16, 64, 256):
        ps = kib * 1024
        ct = b"".join(seal(body, key, prefix, ps))
        s = best_seconds(lambda ps=ps: seal_stream(body, key, prefix, ps), max(2, args.repeat // 2))
        o = best_seconds(lambda ct=ct, ps=ps: open_stream(ct, size, key, prefix, ps), max(2, args.repeat // 2))
        sizes[f"{kib} KiB"] = [size / s / 1e6, size / o / 1e6]
        print(f"  {kib:>3} KiB packages: seal {size / s / 1e6:,.0f}  open {size / o / 1e6:,.0f}")

    # A 4 KiB range in the middle of a package: the span's ciphertext, opened and sliced.
    start = 1000 * PACKAGE_BYTES + 12_345
    span = package_span(start, start + 4096, size)
    piece = sealed[span.cipher_start : span.cipher_end]

    def range_open() -> bytes:
        opener = PackageOpener(key, prefix, plaintext_size=size, plain_start=start, plain_end=start + 4096)
        out = opener.update(piece)
        opener.finish()
        return out[0]

    assert range_open() == body[start : start + 4096]
    block = memoryview(body)[1000 * PACKAGE_BYTES : 1001 * PACKAGE_BYTES]
    range_us = cpu_us_per_call(range_open, args.calls, args.repeat)
    crc_us = cpu_us_per_call(lambda: crc32c(block), args.calls, args.repeat)
    print(f"4 KiB range: open its package {range_us:.1f} us CPU; plain: CRC32C of its 64 KiB block {crc_us:.1f} us")

    get_ms = open_s * 1e3 * 64 * MIB / size
    put_ms = seal_s * 1e3 * 64 * MIB / size
    get_ratio = args.plain_get_ms / (args.plain_get_ms + get_ms)
    put_ratio = args.plain_put_ms / (args.plain_put_ms + put_ms)
    print(
        f"projection, CPU-bound 64 MiB: GET {args.plain_get_ms:.0f} -> {args.plain_get_ms + get_ms:.0f} ms "
        f"= {get_ratio:.2f}x plain; PUT {args.plain_put_ms:.0f} -> {args.plain_put_ms + put_ms:.0f} ms "
        f"= {put_ratio:.2f}x plain (target >= 0.7x)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "node": platform.node()},
                    "size_mib": args.size_mib,
                    "rates_mb_s": rows,
                    "package_sizes_mb_s": sizes,
                    "aeads_hot_package_mb_s": aeads,
                    "range_4k_open_us": range_us,
                    "range_4k_plain_crc_us": crc_us,
                    "projection": {"get": get_ratio, "put": put_ratio},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
