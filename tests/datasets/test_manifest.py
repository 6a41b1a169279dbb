"""Manifest.from_parquet in a process of its own: the process must exit cleanly.

pyarrow 26's thread pools made about 1 exit in 6 abort ("terminate called without an active
exception", SIGABRT) after a threaded read, and about 1 in 200 under load after
``read_table(use_threads=False)`` (the dataset scanner's IO pool): every `tierstore dataset diff`,
and any training script that opened a dataset, could end with exit status 134. Manifests are now
read by tierstore._parquet, which starts no thread."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tierstore.types import MANIFEST_META_KEY as META_KEY

READ = (
    "import pathlib, sys; from tierstore.datasets import Manifest; "
    "m = Manifest.from_parquet(pathlib.Path(sys.argv[1]).read_bytes()); print(len(m))"
)


def test_reading_a_manifest_never_aborts_the_process_at_exit(tmp_path: Path) -> None:
    n = 50  # a manifest's nine columns (each a decode task on pyarrow's pool); few rows
    table = pa.table(
        {
            **{c: [f"{c}-{i}" for i in range(n)] for c in ("bucket", "key", "version_id", "etag")},
            "offset": list(range(n)),
            "size": list(range(n)),
            **{c: [f"{c}-{i}" for i in range(n)] for c in ("member", "label", "loc")},
        }
    )
    table = table.replace_schema_metadata({META_KEY: json.dumps({"name": "t", "version": 1})})
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    path = tmp_path / "m.parquet"
    path.write_bytes(out.getvalue())

    def run(_: int) -> tuple[int, str, str]:
        p = subprocess.run(
            [sys.executable, "-c", READ, str(path)], check=False, capture_output=True, text=True, timeout=120
        )
        return p.returncode, p.stdout.strip(), p.stderr[-300:]

    # Before the fix 20 runs saw an abort with probability ~97% (8 in 50 here).
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(20)))
    assert all(r == (0, str(n), "") for r in results), [r for r in results if r[0] != 0][:3]
