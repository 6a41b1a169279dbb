"""Erasure-code libraries compared for issue 4 (multi-drive erasure coding).

For each candidate that imports here, and each layout k data + m parity in 2+2, 4+2, 4+4, 8+4,
at stripe sizes of 64 KiB and 1 MiB of object data (each shard block is stripe / k bytes):

- **encode**: object bytes -> k + m shard blocks;
- **decode**: the object bytes back from any k shards, with the *m lowest-numbered shards
  missing* — always data shards, so the decoder must really reconstruct (for 2+2 and 4+4
  every data shard is gone and the object comes back from parity alone);
- **rebuild**: the one shard of a replaced drive (data shard 0) from k survivors — what
  heal does per stripe.

Rates are MB/s (10^6 bytes) of object data per single-threaded call stream, repeated for
``--seconds`` per cell. Every decoded object and every rebuilt shard is compared byte for byte
with the input (a mismatch aborts the run). The ratio column is against zfec, the oldest of
the candidates, measured in the same run. A CRC32C (awscrt) line gives the cost of the per-block
checksum every shard block carries anyway.

    .venv/bin/python benchmarks/erasure_libs.py                 # ~2 minutes
    .venv/bin/python benchmarks/erasure_libs.py --seconds 0.2 --json out.json

Candidates missing from the environment are reported and skipped. reedsolo (pure Python) only
runs the 64 KiB cells, once each: it is three orders of magnitude off.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

LAYOUTS: tuple[tuple[int, int], ...] = ((2, 2), (4, 2), (4, 4), (8, 4))
STRIPES: tuple[int, ...] = (64 * 1024, 1024 * 1024)


@dataclass
class Codec:
    """One library behind a uniform shape: shard blocks are equal-length bytes-likes."""

    name: str
    package: str
    # encode(data_shards) -> parity shards
    encode: Callable[[Sequence[bytes]], list[bytes]]
    # decode({index: shard} with >= k entries) -> the k data shards in order
    decode: Callable[[dict[int, bytes]], list[bytes]]
    # rebuild({index: shard}, lost index) -> that shard
    rebuild: Callable[[dict[int, bytes], int], bytes]
    slow: bool = False


def make_zfec(k: int, m: int) -> Codec | None:
    try:
        import zfec
    except ImportError:
        return None
    enc = zfec.Encoder(k, k + m)
    dec = zfec.Decoder(k, k + m)
    parity_nums = list(range(k, k + m))

    def encode(data: Sequence[bytes]) -> list[bytes]:
        return list(enc.encode(list(data), parity_nums))

    def decode(shards: dict[int, bytes]) -> list[bytes]:
        nums = sorted(shards)[:k]
        return list(dec.decode([shards[i] for i in nums], nums))

    def rebuild(shards: dict[int, bytes], lost: int) -> bytes:
        data = decode(shards)
        if lost < k:
            return data[lost]
        return bytes(enc.encode(data, [lost])[0])

    return Codec("zfec", "zfec", encode, decode, rebuild)


def make_leopard(k: int, m: int) -> Codec | None:
    try:
        import reed_solomon_leopard as rsl
    except ImportError:
        return None

    def encode(data: Sequence[bytes]) -> list[bytes]:
        return list(rsl.encode(list(data), m))

    def decode(shards: dict[int, bytes]) -> list[bytes]:
        original = {i: s for i, s in shards.items() if i < k}
        if len(original) == k:
            return [original[i] for i in range(k)]
        recovery = {i - k: s for i, s in shards.items() if i >= k}
        restored = rsl.decode(k, m, original, recovery)
        return [original[i] if i in original else restored[i] for i in range(k)]

    def rebuild(shards: dict[int, bytes], lost: int) -> bytes:
        data = decode(shards)
        if lost < k:
            return data[lost]
        return bytes(rsl.encode(data, m)[lost - k])

    return Codec("reed-solomon-leopard", "reed-solomon-leopard", encode, decode, rebuild)


def make_pyeclib(backend: str) -> Callable[[int, int], Codec | None]:
    def factory(k: int, m: int) -> Codec | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from pyeclib.ec_iface import ECDriver

                driver = ECDriver(k=k, m=m, ec_type=backend)
        except Exception:  # backend not built into this liberasurecode
            return None
        # pyeclib works on whole fragments: encode(bytes) -> k + m fragments, each with an
        # 80-byte header (index, size, backend, checksum slot). The shard blocks we hand around
        # are those fragments, so the header is part of what a drive would store.
        state: dict[str, list[bytes]] = {}

        def encode(data: Sequence[bytes]) -> list[bytes]:
            frags = driver.encode(b"".join(data))
            state["last"] = frags
            return frags[k:]

        def decode(shards: dict[int, bytes]) -> list[bytes]:
            raw = driver.decode([shards[i] for i in sorted(shards)[:k]])
            step = len(raw) // k
            return [raw[i * step : (i + 1) * step] for i in range(k)]

        def rebuild(shards: dict[int, bytes], lost: int) -> bytes:
            return bytes(driver.reconstruct([shards[i] for i in sorted(shards)[:k]], [lost])[0])

        codec = Codec(f"pyeclib/{backend}", "pyeclib", encode, decode, rebuild)
        codec.encode_fragments = driver.encode  # type: ignore[attr-defined]
        return codec

    return factory


def make_reedsolo(k: int, m: int) -> Codec | None:
    try:
        import reedsolo
    except ImportError:
        return None
    rs = reedsolo.RSCodec(nsym=m, nsize=k + m)

    def encode(data: Sequence[bytes]) -> list[bytes]:
        # One codeword per byte column: column j = (data[0][j], ..., data[k-1][j]).
        n = len(data[0])
        parity = [bytearray(n) for _ in range(m)]
        for j in range(n):
            cw = rs.encode(bytearray(d[j] for d in data))
            for p in range(m):
                parity[p][j] = cw[k + p]
        return [bytes(p) for p in parity]

    def decode(shards: dict[int, bytes]) -> list[bytes]:
        erase = [i for i in range(k + m) if i not in shards]
        n = len(next(iter(shards.values())))
        out = [bytearray(n) for _ in range(k)]
        zero = b"\0" * n
        cols = [shards.get(i, zero) for i in range(k + m)]
        for j in range(n):
            msg = rs.decode(bytearray(c[j] for c in cols), erase_pos=erase)[0]
            for i in range(k):
                out[i][j] = msg[i]
        return [bytes(o) for o in out]

    def rebuild(shards: dict[int, bytes], lost: int) -> bytes:
        return decode(shards)[lost]

    return Codec("reedsolo (pure Python)", "reedsolo", encode, decode, rebuild, slow=True)


FACTORIES: list[Callable[[int, int], Codec | None]] = [
    make_zfec,
    make_pyeclib("isa_l_rs_cauchy"),
    make_pyeclib("isa_l_rs_vand"),
    make_pyeclib("liberasurecode_rs_vand"),
    make_pyeclib("jerasure_rs_cauchy"),
    make_leopard,
    make_reedsolo,
]
NAMES = [
    "zfec",
    "pyeclib/isa_l_rs_cauchy",
    "pyeclib/isa_l_rs_vand",
    "pyeclib/liberasurecode_rs_vand",
    "pyeclib/jerasure_rs_cauchy",
    "reed-solomon-leopard",
    "reedsolo (pure Python)",
]


def timed(fn: Callable[[], object], seconds: float, once: bool) -> float:
    """Seconds per call, averaged over as many calls as fit in ``seconds`` (at least 1)."""
    fn()  # warm up (tables, allocations)
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if once or elapsed >= seconds:
            return elapsed / calls


def run_cell(codec: Codec, k: int, m: int, stripe: int, seconds: float) -> dict[str, float]:
    shard_len = -(-stripe // k)
    shard_len += shard_len % 2  # leopard wants even shard lengths; zero padding as stored
    obj = os.urandom(stripe)
    padded = obj + b"\0" * (shard_len * k - stripe)
    data = [padded[i * shard_len : (i + 1) * shard_len] for i in range(k)]

    parity = codec.encode(data)
    frags = getattr(codec, "encode_fragments", None)
    all_shards = frags(b"".join(data)) if frags else data + parity
    assert len(all_shards) == k + m
    survivors = {i: s for i, s in enumerate(all_shards) if i >= m}  # shards 0..m-1 lost

    decoded = b"".join(codec.decode(survivors))
    if decoded[:stripe] != obj:
        raise SystemExit(f"{codec.name} {k}+{m} {stripe}: decoded bytes differ from the input")
    lost = 0
    rebuild_from = {i: s for i, s in enumerate(all_shards) if i != lost}
    rebuild_from = dict(sorted(rebuild_from.items())[:k])
    if bytes(codec.rebuild(rebuild_from, lost)) != bytes(all_shards[lost]):
        raise SystemExit(f"{codec.name} {k}+{m} {stripe}: rebuilt shard differs")

    once = codec.slow
    t_enc = timed(lambda: codec.encode(data), seconds, once)
    t_dec = timed(lambda: b"".join(codec.decode(survivors)), seconds, once)
    t_reb = timed(lambda: codec.rebuild(rebuild_from, lost), seconds, once)
    return {
        "encode_MBps": stripe / t_enc / 1e6,
        "decode_MBps": stripe / t_dec / 1e6,
        "rebuild_MBps": stripe / t_reb / 1e6,
        "shard_bytes": len(all_shards[0]),
    }


def crc32c_rate(seconds: float) -> float | None:
    try:
        from awscrt import checksums
    except ImportError:
        return None
    buf = os.urandom(1024 * 1024)
    return len(buf) / timed(lambda: checksums.crc32c(buf), seconds, False) / 1e6


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.35, help="timing budget per op per cell")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--only", help="comma-separated substrings of codec names to run")
    args = ap.parse_args()

    results: list[dict[str, object]] = []
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for factory, name in zip(FACTORIES, NAMES, strict=True):
        if args.only and not any(s in name for s in args.only.split(",")):
            continue
        for k, m in LAYOUTS:
            codec = factory(k, m)
            if codec is None:
                skipped[name] = "not importable / backend not available"
                break
            for stripe in STRIPES:
                if codec.slow and stripe > 64 * 1024:
                    continue
                cell = run_cell(codec, k, m, stripe, args.seconds)
                row = {
                    "codec": name,
                    "package": codec.package,
                    "version": version(codec.package),
                    "k": k,
                    "m": m,
                    "stripe_bytes": stripe,
                    **cell,
                }
                results.append(row)
                print(
                    f"  {name:32} {k}+{m} {stripe // 1024:5} KiB  enc {cell['encode_MBps']:9.1f}"
                    f"  dec {cell['decode_MBps']:9.1f}  rebuild {cell['rebuild_MBps']:9.1f} MB/s",
                    file=sys.stderr,
                    flush=True,
                )

    base = {(r["k"], r["m"], r["stripe_bytes"]): r for r in results if r["codec"] == "zfec"}

    def ratio(r: dict[str, object], key: str) -> str:
        rate = float(r[key])  # type: ignore[arg-type]
        text = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}"
        b = base.get((r["k"], r["m"], r["stripe_bytes"]))
        if not b:
            return text
        x = rate / float(b[key])  # type: ignore[arg-type]
        return f"{text} ({x:.1f}x)" if x >= 0.1 else f"{text} ({x:.4f}x)"

    print(
        "| codec | k+m | stripe | shard block | encode MB/s | decode, m data shards lost, MB/s | rebuild 1 shard MB/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['codec']} {r['version']} | {r['k']}+{r['m']} "
            f"| {int(r['stripe_bytes']) // 1024} KiB | {r['shard_bytes']} B "  # type: ignore[call-overload]
            f"| {ratio(r, 'encode_MBps')} | {ratio(r, 'decode_MBps')} "
            f"| {ratio(r, 'rebuild_MBps')} |"
        )
    crc = crc32c_rate(args.seconds)
    if crc:
        print(f"\nreference: CRC32C (awscrt {version('awscrt')}) over 1 MiB: {crc:,.0f} MB/s")
    for name, why in skipped.items():
        print(f"skipped: {name}: {why}")
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "?",
        ),
        "seconds_per_op": args.seconds,
        "crc32c_MBps": crc,
        "skipped": skipped,
        "results": results,
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    print("\n" + json.dumps(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
