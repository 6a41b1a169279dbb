"""``s3bench.py`` (../shared/bench) that also records the CPU of named process groups per phase,
and knows 1 KiB and 16 KiB small-object scenarios. benchmarks/scale_out_side_by_side.py runs it.

Same arguments as s3bench. ``S3BENCH_CPU_GROUPS`` (JSON ``{"name": [root pid, ...], ...}``) names
the groups: each phase's JSON line gets ``cpu_us_per_op_by_group`` — for each group, the CPU
(user + system) of every process under its roots, children that exited and were reaped included
(``cutime``/``cstime``: a PostgreSQL backend that ends mid-phase is not lost), per request. A
PostgreSQL group is also split by database (``pg:DB``, from each backend's process title
``postgres: USER DB HOST(PORT) ...``; the postmaster, its helpers and exited backends are
``pg:-``). For ``list`` the requests are the walk's pages (1000 keys each).

Extra scenarios: ``small_put_1k``/``small_get_1k``/``small_put_16k``/``small_get_16k``: as the 4 KiB
ones (same count, same concurrency), with 1 KiB and 16 KiB bodies. The load itself is s3bench's.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _s3bench_encrypted import load_s3bench

CLK = os.sysconf("SC_CLK_TCK")
EXTRA_SIZES = (1, 16)  # KiB


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _stat(pid: int) -> tuple[float, float]:
    """(own CPU, reaped children's CPU) in seconds."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK, (int(f[13]) + int(f[14])) / CLK


def _pg_database(pid: int) -> str:
    """The database of a PostgreSQL backend from its process title; ``-`` for anything else."""
    with contextlib.suppress(OSError):
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        parts = title.split()
        if len(parts) >= 4 and parts[0] == "postgres:" and "(" in parts[3]:
            return parts[2]
    return "-"


def sample(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far per group (and per database for a group named ``postgres``)."""
    out: dict[str, float] = {}
    for name, roots in groups.items():
        todo, total = list(roots), 0.0
        while todo:
            pid = todo.pop()
            try:
                own, reaped = _stat(pid)
            except (OSError, IndexError):
                continue
            total += own + reaped
            if name == "postgres":
                db = "pg:" + _pg_database(pid)
                out[db] = out.get(db, 0.0) + own + reaped
            todo += _children(pid)
        out[name] = total
    return out


def per_op(before: dict[str, float], after: dict[str, float], ops: int) -> dict[str, float]:
    return {k: round((after[k] - before.get(k, 0.0)) / ops * 1e6, 1) for k in after if ops}


def main() -> int:
    s3bench = load_s3bench()
    groups: dict[str, list[int]] = json.loads(os.environ.get("S3BENCH_CPU_GROUPS", "{}"))
    run_phase = s3bench.run_phase

    def run_phase_grouped(tasks: Any, conc: int, procs: int) -> dict[str, Any]:
        before = sample(groups)
        st: dict[str, Any] = run_phase(tasks, conc, procs)
        if st.get("ops"):
            st["cpu_us_per_op_by_group"] = per_op(before, sample(groups), int(st["ops"]))
        return st

    list_all = s3bench.list_all
    walks: list[dict[str, float]] = []

    async def list_all_grouped(*args: Any) -> tuple[int, int]:
        before = sample(groups)
        t0 = time.perf_counter()
        keys, pages = await list_all(*args)
        wall_ms = (time.perf_counter() - t0) / max(1, pages) * 1e3
        walks.append({**per_op(before, sample(groups), pages), "wall_ms_per_page": wall_ms})
        return keys, pages

    emit = s3bench.Bench.emit

    def emit_grouped(self: Any, scen: str, extra: dict[str, Any], stats: dict[str, Any]) -> None:
        if scen == "list" and walks:
            stats = {**stats, "cpu_us_per_op_by_group": walks[-1]}
        emit(self, scen, extra, stats)

    run = s3bench.Bench.run

    def run_extra(self: Any, scenarios: list[str]) -> None:
        """s3bench's own scenarios through its ``run``; the 1 and 16 KiB ones after them, in the
        same bucket (s3bench's ``run`` deletes it at the end, so they go in first when mixed)."""
        extra = [s for s in scenarios if _extra_size(s)]
        own = [s for s in scenarios if not _extra_size(s)]
        if extra:
            s3bench.parent_run(self._mkbucket())
            self.a.bucket = self.bucket
            for rep in range(self.a.repeat):
                for s in extra:
                    self._small(_extra_size(s), self.n4k, rep, get=s.startswith("small_get"))
            if not own:
                s3bench.parent_run(s3bench.delete_everything(self.signer, self.host, self.port, self.bucket))
                return
            self._mkbucket = _noop  # the bucket exists; s3bench's run goes on in it and deletes it
        run(self, own)

    s3bench.run_phase = run_phase_grouped
    s3bench.list_all = list_all_grouped
    s3bench.Bench.emit = emit_grouped
    s3bench.Bench.run = run_extra
    for kib in EXTRA_SIZES:
        s3bench.ALL += [f"small_put_{kib}k", f"small_get_{kib}k"]
    result: int = s3bench.main()
    return result


async def _noop() -> None:
    return None


def _extra_size(scenario: str) -> int:
    for kib in EXTRA_SIZES:
        if scenario in (f"small_put_{kib}k", f"small_get_{kib}k"):
            return kib
    return 0


if __name__ == "__main__":
    sys.exit(main())
