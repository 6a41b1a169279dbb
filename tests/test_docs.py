"""The docs' examples run: every ```python block of a walkthrough, in order, as one program,
against a real server of its own (docs/ml-data.md)."""

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


def test_ml_data_walkthrough_runs(fresh_server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "walkthrough.py"
    script.write_text(_program(REPO / "docs" / "ml-data.md"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERSTORE_"))}
    env.update(TIERSTORE_ENDPOINT=fresh_server.endpoint, TIERSTORE_ACCESS_KEY=ACCESS_KEY)
    env.update(TIERSTORE_SECRET_KEY=SECRET_KEY)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "pets@1 600 samples"
    assert "256 + 344 = 600" in out
    assert "600 samples in one epoch" in out
    assert "600 samples staged" in out
