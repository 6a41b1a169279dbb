"""docs/security.md part 1: its Python example runs and prints what the page says it prints."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

PART1 = re.compile(r"^## Part 1:.*?(?=^## |\Z)", re.S | re.M)
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_part1_example_runs_as_documented(capsys: pytest.CaptureFixture[str]) -> None:
    part1 = PART1.search((REPO / "docs" / "security.md").read_text())
    assert part1 is not None
    (code,) = BLOCK.findall(part1.group(0))
    expected = [line.removeprefix("# ") for line in code.splitlines() if line.startswith("# home/")]
    assert len(expected) == 3
    exec(compile(code, "docs/security.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == expected
