"""Dataset pins on every gateway (issue 18 with issue 17's job pins; docs/scale-out.md "Dataset
pins on every gateway"): a pin made through A fills the local cache of every live gateway with
the version's blobs and holds them there; a gateway started after the pin catches up; the
pinned dataset reads through a gateway that has lost the store; unpinned blobs are evictable.

``two_gateways`` (tests/conftest.py) is shared with tests/test_gateways.py; gateway C is this
test's own (a small cache, the store through a forwarder)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import ACCESS_KEY, SECRET_KEY, Gateways, make_client
from tests.test_gateways import _Forwarder, _third_gateway, _tierstore_client, _until
from tierstore.datasets import RemoteSource
from tierstore.server import CACHE_DIR

KIB = 1024
SAMPLE_BYTES = [20 * KIB, 33 * KIB, 41 * KIB, 64 * KIB + 7, 50 * KIB, 27 * KIB]  # blobs (> 16 KiB inline)
OTHER_BYTES = 40 * KIB  # objects read through C to push its cache past its bound
C_CACHE_BYTES = 600 * KIB  # C's bound: the pinned blobs fit, the other reads do not


def _cache_files(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / CACHE_DIR / "blobs").rglob("*") if p.is_file()}


def _blob_ids(locs: list[str]) -> set[str]:
    """The blob ids manifest locations name (``b:ID:SIZE[,ID:SIZE...]``; ``i:`` is inline)."""
    ids = set()
    for loc in locs:
        if not loc.startswith("i:") and len(loc) > 2:
            ids |= {piece.rpartition(":")[0] for piece in loc[2:].split(",")}
    return ids


def test_a_pin_fills_every_gateways_cache_and_holds_it(
    two_gateways: Gateways, rng: random.Random, tmp_path: Path
) -> None:
    gw = two_gateways
    s3a = make_client(gw.a.endpoint)
    bucket = f"pins-{uuid.uuid4().hex[:12]}"
    s3a.create_bucket(Bucket=bucket)
    bodies = {f"train/{i:02d}.bin": rng.randbytes(size) for i, size in enumerate(SAMPLE_BYTES)}
    for key, body in bodies.items():
        s3a.put_object(Bucket=bucket, Key=key, Body=body)
    on_a = _tierstore_client(gw.a.endpoint)
    ref = on_a.create_dataset(f"pins-{uuid.uuid4().hex[:8]}", bucket=bucket, prefix="train/")["ref"]
    manifest = RemoteSource(gw.a.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY).open_manifest(ref)
    samples = _blob_ids(manifest.column("loc"))
    assert len(samples) == len(SAMPLE_BYTES)
    job = f"train-{uuid.uuid4().hex[:6]}"
    assert list(on_a.pin_dataset(ref, job))[-1]["state"] == "done"

    # 1. Both gateways' cache directories end up holding every sample blob (the pin does not wait for them).
    for srv in gw.both:
        _until(lambda srv=srv: samples <= _cache_files(srv.data_dir), "every sample cached", srv)

    # 2. A third gateway, started after the pin, catches up; then it loses the store and the
    # pinned dataset still reads through it (batch reads, a ranged GET).
    weed = gw.weed
    forwarder = _Forwarder(int(weed.endpoint.rsplit(":", 1)[1]))
    forwarder.start()
    config = gw.config_file.read_text().replace(weed.endpoint, f"http://127.0.0.1:{forwarder.port}")
    c = _third_gateway(gw, tmp_path / "c", config + f"cache-bytes = {C_CACHE_BYTES}\n")
    c.start(timeout_s=120)
    try:
        _until(lambda: samples <= _cache_files(c.data_dir), "C caught up", c)
        held = set((c.data_dir / CACHE_DIR / "held").read_text().split())
        assert samples < held  # and the manifest

        def every_gateway_done() -> bool:
            pin = next(p for p in on_a.jobs() if p["job"] == job)
            done = [g for g in pin["gateways"] if g["copied"] == g["total"] == len(samples) + 1]
            return len(done) >= 3

        _until(every_gateway_done, "per-gateway progress in jobs", gw.a)
        forwarder.stop()
        source = RemoteSource(c.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        keys = source.open_manifest(ref).column("key")
        order = list(range(len(keys))) * 2
        rng.shuffle(order)
        got = list(source.read_rows(source.open_manifest(ref).ref, order))
        assert [data for _, data in got] == [bodies[keys[r]] for r in order]
        s3c = make_client(c.endpoint)
        key = "train/03.bin"
        ranged = s3c.get_object(Bucket=bucket, Key=key, Range="bytes=1000-40999")["Body"].read()
        assert ranged == bodies[key][1000:41000]
        forwarder.start()

        # 3. Reads of other objects push C's cache past its bound: the pinned blobs stay.
        others = _put_others(s3a, bucket, rng, "other1", 16)
        _read_all(s3c, bucket, others)
        assert samples <= _cache_files(c.data_dir)
        assert len(_cache_files(c.data_dir)) < len(samples) + len(others)  # eviction ran

        # 4. Unpinned: the held set empties and LRU reads drop the samples' files.
        on_a.unpin_dataset(ref, job)
        _until(lambda: not (c.data_dir / CACHE_DIR / "held").read_text().split(), "held set emptied", c)
        _read_all(s3c, bucket, _put_others(s3a, bucket, rng, "other2", 16))
        assert not samples <= _cache_files(c.data_dir)
    finally:
        forwarder.stop()
        c.stop()
    assert "Traceback" not in c.log()


def _put_others(s3: Any, bucket: str, rng: random.Random, prefix: str, n: int) -> dict[str, bytes]:
    others = {f"{prefix}/{i:02d}": rng.randbytes(OTHER_BYTES) for i in range(n)}
    for key, body in others.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return others


def _read_all(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
