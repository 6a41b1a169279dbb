"""Sample sources for loader tests: a dataset created on a real server (``create_served``), an
in-memory ``SampleSource`` for edge cases, and a wrapper that logs every call of another source to
a file, so calls made in DataLoader worker processes are counted too."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tierstore.datasets import DatasetReadError, DatasetRef, Manifest, SampleSource
from tierstore.datasets._manifest import META_KEY


def sample_bytes(name: str, version: int, n: int, size: int = 200) -> list[bytes]:
    """n distinct samples of ``size`` bytes, each starting with its row number."""
    out = []
    for i in range(n):
        head = f"{name}@{version}#{i:06d}|".encode()
        out.append((head + hashlib.sha256(head).digest() * (size // 32 + 1))[:size])
    return out


def make_manifest(
    name: str, version: int, samples: Sequence[bytes], labels: Sequence[str | None] | None = None
) -> Manifest:
    n = len(samples)
    info = {"name": name, "version": version, "created_ns": 0, "source": "test", "lineage": None}
    table = pa.table(
        {
            "bucket": pa.array(["b"] * n, pa.string()),
            "key": pa.array([f"{name}/s{i:06d}.bin" for i in range(n)], pa.string()),
            "version_id": pa.array(["null"] * n, pa.string()),
            "etag": pa.array([hashlib.md5(s).hexdigest() for s in samples], pa.string()),
            "offset": pa.array([None] * n, pa.int64()),
            "size": pa.array([len(s) for s in samples], pa.int64()),
            "member": pa.array([None] * n, pa.string()),
            "label": pa.array(list(labels) if labels is not None else [None] * n, pa.string()),
            "loc": pa.array([f"mem:{name}@{version}:{i}" for i in range(n)], pa.string()),
        }
    ).replace_schema_metadata({META_KEY: json.dumps(info).encode()})
    return Manifest(table, info)


class MemorySource:
    """Datasets held in memory: ``add(name, samples)`` creates the next version."""

    def __init__(self) -> None:
        self.datasets: dict[DatasetRef, tuple[Manifest, list[bytes]]] = {}

    def add(self, name: str, samples: Sequence[bytes], labels: Sequence[str | None] | None = None) -> DatasetRef:
        version = 1 + max((r.version or 0 for r in self.datasets if r.name == name), default=0)
        ref = DatasetRef(name, version)
        self.datasets[ref] = (make_manifest(name, version, samples, labels), list(samples))
        return ref

    def open_manifest(self, ref: DatasetRef | str) -> Manifest:
        ref = DatasetRef.parse(ref)
        if ref.version is None:
            ref = max((r for r in self.datasets if r.name == ref.name), key=lambda r: r.version or 0)
        return self.datasets[ref][0]

    def read_rows(self, ref: DatasetRef, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        assert ref.version is not None, "loaders read pinned versions"
        data = self.datasets[ref][1]
        for pos, row in enumerate(rows):
            if not 0 <= row < len(data):
                raise DatasetReadError(row, 404, "NoSuchSample", "no such row")
            yield pos, data[row]


class CountingSource:
    """Logs each call of ``inner`` as a line of ``log`` (O_APPEND: lines from several processes
    stay whole): ``manifest REF`` or ``rows N ROW,ROW,...``."""

    def __init__(self, inner: SampleSource, log: Path) -> None:
        self.inner = inner
        self.log = log

    def _write(self, line: str) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def open_manifest(self, ref: DatasetRef | str) -> Manifest:
        self._write(f"manifest {ref}")
        return self.inner.open_manifest(ref)

    def read_rows(self, ref: DatasetRef, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        self._write(f"rows {len(rows)} {','.join(map(str, rows))}")
        yield from self.inner.read_rows(ref, rows)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def row_reads(self) -> list[list[int]]:
        """The rows of each read_rows call, in log order."""
        out = []
        for line in self.calls():
            if line.startswith("rows "):
                _, _count, rows = line.split(" ")
                out.append([int(r) for r in rows.split(",")] if rows else [])
        return out

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)


@dataclass
class Served:
    """A dataset created on a real server: its pinned ref, the source to read it through, and the
    bytes of each row (row i is the object ``s/{i:05d}``, label ``str(i % 10)``)."""

    ref: DatasetRef
    source: SampleSource
    bodies: list[bytes]

    def label(self, row: int) -> str:
        return str(row % 10)


def create_served(server: ServerProcess, s3: Any, n: int) -> Served:
    """A dataset of ``n`` samples of 150-249 bytes on ``server``, read through ``RemoteSource``."""
    from tierstore.client import TierstoreClient, resolve_settings
    from tierstore.datasets import RemoteSource

    name = f"ds-{uuid.uuid4().hex[:12]}"
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    bodies = [b[: 150 + i % 100] for i, b in enumerate(sample_bytes(name, 1, n, size=250))]
    for i, body in enumerate(bodies):
        s3.put_object(Bucket=bucket, Key=f"s/{i:05d}", Body=body, Metadata={"label": str(i % 10)})
    client = TierstoreClient(resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    rec = client.create_dataset(name, bucket=bucket, prefix="s/", label="meta:label")
    assert rec["rows"] == n
    source = RemoteSource(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    return Served(DatasetRef.parse(rec["ref"]), source, bodies)
