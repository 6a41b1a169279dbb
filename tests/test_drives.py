"""DriveSet: formatting, recognising members in any order, live state, replacements."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tierstore.drives import DriveSet, DriveSetError, DriveState, SetFormat, default_parity


def _paths(tmp_path: Path, n: int) -> list[Path]:
    return [tmp_path / f"d{i}" for i in range(n)]


@pytest.mark.parametrize(("n", "m"), [(2, 1), (3, 2), (4, 2), (5, 2), (6, 3), (8, 4), (12, 4), (16, 4)])
def test_default_parity(n: int, m: int) -> None:
    assert default_parity(n) == m
    SetFormat("x", n, m).validate()


@pytest.mark.parametrize(("n", "m"), [(1, 0), (3, 1), (4, 0), (4, 3), (10, 5), (12, 6)])
def test_bad_parity_is_refused(n: int, m: int) -> None:
    with pytest.raises(DriveSetError):
        SetFormat("x", n, m).validate()


def test_new_set_formats_every_drive(tmp_path: Path) -> None:
    paths = _paths(tmp_path, 6)
    ds = DriveSet.open(paths, parity=2)
    assert (ds.format.drives, ds.format.parity, ds.format.data_shards, ds.format.write_quorum) == (6, 2, 4, 5)
    assert ds.online() == list(range(6))
    ids = set()
    for i, p in enumerate(paths):
        doc = json.loads((p / ".tierstore" / "format.json").read_text())
        assert doc["index"] == i and doc["set_id"] == ds.format.set_id
        ids.add(doc["drive_id"])
    assert len(ids) == 6


def test_members_are_recognised_in_any_order(tmp_path: Path) -> None:
    paths = _paths(tmp_path, 4)
    ds = DriveSet.open(paths)
    again = DriveSet.open([paths[2], paths[0], paths[3], paths[1]])
    assert again.paths == ds.paths and again.format == ds.format


def test_state_follows_the_directory(tmp_path: Path) -> None:
    paths = _paths(tmp_path, 4)
    ds = DriveSet.open(paths)
    shutil.rmtree(paths[1])
    assert ds.state(1) is DriveState.OFFLINE
    assert ds.online() == [0, 2, 3]
    paths[1].mkdir()
    assert ds.state(1) is DriveState.UNFORMATTED
    ds.format_drive(1)
    assert ds.state(1) is DriveState.ONLINE
    # a member of another set in the slot is foreign and never formatted over
    shutil.rmtree(paths[1])
    other = DriveSet.open(_paths(tmp_path / "other", 4))
    shutil.copytree(other.paths[1], paths[1])
    assert ds.state(1) is DriveState.FOREIGN
    with pytest.raises(DriveSetError):
        ds.format_drive(1)


def test_replacement_takes_the_free_index_and_missing_dirs_stay_missing(tmp_path: Path) -> None:
    paths = _paths(tmp_path, 4)
    DriveSet.open(paths)
    shutil.rmtree(paths[2])
    shutil.rmtree(paths[0])
    paths[2].mkdir()  # replaced; drive 0 is still missing (e.g. not mounted)
    ds = DriveSet.open(paths)
    assert ds.state(2) is DriveState.ONLINE
    assert ds.state(0) is DriveState.OFFLINE
    assert not paths[0].exists(), "a missing drive directory is never created"


def test_mismatched_sets_and_counts_are_refused(tmp_path: Path) -> None:
    a = DriveSet.open(_paths(tmp_path / "a", 4))
    b = DriveSet.open(_paths(tmp_path / "b", 4))
    with pytest.raises(DriveSetError, match="different sets"):
        DriveSet.open([a.paths[0], a.paths[1], b.paths[2], b.paths[3]])
    with pytest.raises(DriveSetError, match="4 drives"):
        DriveSet.open([*a.paths, tmp_path / "extra"])
    with pytest.raises(DriveSetError, match="parity"):
        DriveSet.open(a.paths, parity=1)
    with pytest.raises(DriveSetError, match="twice"):
        DriveSet.open([a.paths[0], a.paths[0], a.paths[1], a.paths[2]])


def test_damaged_format_file_is_a_clear_error(tmp_path: Path) -> None:
    paths = _paths(tmp_path, 4)
    DriveSet.open(paths)
    (paths[3] / ".tierstore" / "format.json").write_text("{not json")
    with pytest.raises(DriveSetError, match="damaged"):
        DriveSet.open(paths)
