"""The docs' examples run: every ```python block of a walkthrough, in order, as one program,
against a real server of its own (docs/ml-data.md, docs/checkpoints.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _program(doc: Path) -> str:
    blocks = BLOCK.findall(doc.read_text())
    assert blocks, f"{doc} has no python blocks"
    return "\n".join(blocks)


def _run(doc: str, server: ServerProcess, tmp_path: Path) -> list[str]:
    script = tmp_path / "walkthrough.py"
    script.write_text(_program(REPO / "docs" / doc))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(TIERSTORE_ENDPOINT=server.endpoint, TIERSTORE_ACCESS_KEY=ACCESS_KEY)
    env.update(TIERSTORE_SECRET_KEY=SECRET_KEY)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_ml_data_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    out = _run("ml-data.md", fresh_server, tmp_path)
    assert out[0] == "pets@1 600 samples"
    assert "256 + 344 = 600" in out
    assert "600 samples in one epoch" in out
    assert "600 samples staged" in out


def test_checkpoints_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    out = _run("checkpoints.md", fresh_server, tmp_path)
    assert out == [
        "[3, 4, 5]",
        "best tested: 3",
        "demo@1 -> 3",
        "serving matches: True",
        "trained on: ['demo-data@1']",
    ]
