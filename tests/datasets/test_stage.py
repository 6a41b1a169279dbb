"""Staging (tierstore/datasets/_stage.py) from a real server: a staged dataset is read by the
loaders, in DataLoader worker processes, with no source call at all; a killed stage resumes
without fetching again what it already has; unstage removes only what staging made."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import DataLoader

from tests.conftest import ServerProcess
from tests.torch.sources import CountingSource, Served, create_served
from tierstore.datasets import DatasetRef, Manifest, SampleSource
from tierstore.datasets import _stage as stage_module
from tierstore.datasets._stage import is_staged, stage, staged_manifest, unstage
from tierstore.torch import IterableDataset, MapDataset, ShuffleSampler

N = 300


@pytest.fixture(scope="module")
def served(server: ServerProcess, s3: Any) -> Served:
    return create_served(server, s3, N)


class Killed(Exception):
    pass


class DiesAfter:
    """A source that fails (like a killed process) at its ``calls``-th read_rows call."""

    def __init__(self, inner: SampleSource, calls: int) -> None:
        self.inner = inner
        self.left = calls

    def open_manifest(self, ref: DatasetRef | str) -> Manifest:
        return self.inner.open_manifest(ref)

    def read_rows(self, ref: DatasetRef, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        self.left -= 1
        if self.left == 0:
            raise Killed
        yield from self.inner.read_rows(ref, rows)


def test_staged_dataset_is_read_without_the_source(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "stage"
    counting = CountingSource(served.source, tmp_path / "calls.log")
    assert not is_staged(dest, served.ref)
    report = stage(counting, served.ref.name, dest, progress=False)  # NAME: the latest, pinned
    assert (report.ref, report.rows, report.rows_fetched) == (served.ref, N, N)
    assert report.bytes_total == report.bytes_fetched == sum(map(len, served.bodies))
    reads = counting.row_reads()
    assert len(reads) == -(-N // 256) and sorted(r for rows in reads for r in rows) == list(range(N))
    assert is_staged(dest, served.ref) and is_staged(dest, served.ref.name) and is_staged(dest, served.ref, verify=True)
    assert not is_staged(dest, DatasetRef(served.ref.name, (served.ref.version or 0) + 1))

    counting.reset()
    ds = IterableDataset(served.ref.name, counting, batch_size=32, cache_dir=dest)
    assert ds.ref == served.ref
    rows = []
    for batch in DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork"):
        assert all(s["data"] == served.bodies[s["index"]] for s in batch)
        rows += [s["index"] for s in batch]
    assert sorted(rows) == list(range(N))
    m = MapDataset(served.ref, counting, cache_dir=dest, transform=lambda s: s["data"])
    dl = DataLoader(m, batch_size=64, sampler=ShuffleSampler(m), num_workers=2, multiprocessing_context="fork")
    assert sum(len(b) for b in dl) == N
    assert counting.calls() == [], "no manifest and no row read from the source"


def test_killed_stage_resumes_where_it_stopped(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage_module, "ROWS_PER_PACK", 50)  # 6 packs of 50 rows
    dest = tmp_path / "stage"
    with pytest.raises(Killed):
        stage(DiesAfter(served.source, calls=3), served.ref, dest, progress=False, batch_rows=50)
    assert not is_staged(dest, served.ref), "the manifest is published last"
    assert staged_manifest(dest, served.ref) is None
    assert not list((dest / "tmp").iterdir()), "the pack being written when it died is gone"

    pack0 = dest / "packs" / str(served.ref) / "pack-000000.bin"
    raw = bytearray(pack0.read_bytes())
    raw[len(served.bodies[0]) + 3] ^= 0x40  # a flipped bit in row 1: the whole pack is fetched again
    pack0.write_bytes(bytes(raw))

    counting = CountingSource(served.source, tmp_path / "calls.log")
    report = stage(counting, served.ref, dest, progress=False, batch_rows=50)
    fetched = sorted(r for rows in counting.row_reads() for r in rows)
    assert fetched == [*range(50), *range(100, N)], "pack 1 (rows 50-99) was complete before the kill"
    assert (report.rows_fetched, report.rows_skipped) == (N - 50, 50)
    assert is_staged(dest, served.ref, verify=True)
    counting.reset()
    again = stage(counting, served.ref, dest, progress=False)
    assert again.rows_fetched == 0 and counting.row_reads() == []


def test_damage_in_a_staged_pack_is_read_from_the_source(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stage_module, "ROWS_PER_PACK", 64)
    dest = tmp_path / "stage"
    stage(served.source, served.ref, dest, progress=False)
    pack1 = dest / "packs" / str(served.ref) / "pack-000001.bin"
    raw = bytearray(pack1.read_bytes())
    raw[len(served.bodies[64]) + 1] ^= 0x01  # row 65
    pack1.write_bytes(bytes(raw))
    assert not is_staged(dest, served.ref, verify=True)

    counting = CountingSource(served.source, tmp_path / "calls.log")
    ds = MapDataset(served.ref, counting, cache_dir=dest)
    got = ds.__getitems__(list(range(60, 70)))
    assert [s["data"] for s in got] == served.bodies[60:70], "never the damaged bytes"
    assert counting.row_reads() == [[65]], "only the damaged row came from the source"


def test_progress_bar_and_unstage(served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "stage"
    stage(served.source, served.ref, dest, progress=True)
    err = capsys.readouterr().err
    assert f"stage {served.ref}" in err and "100%" in err
    elsewhere = tmp_path / "not-a-stage"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a tierstore"):
        unstage(elsewhere)
    assert (elsewhere / "precious.txt").exists()
    unstage(dest)
    assert not dest.exists() and not is_staged(dest, served.ref)
    unstage(dest)  # already gone: nothing to do
