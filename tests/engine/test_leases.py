"""``run_job`` (engine/_leases.py): a named job under a lease, on a real SQLite catalog; the
catalog side of leases is the conformance suite's ``LeaseContract`` (both catalogs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tierstore.catalog import SqliteCatalog
from tierstore.engine import Checkpoint, LeaseHolder, run_job

FAR_NS = 4 * 10**18  # a claim "much later" (year 2096): every lease has run out by then


def test_a_job_resumes_where_its_last_holder_stopped_and_is_not_run_twice(tmp_path: Path) -> None:
    async def main() -> None:
        cat = SqliteCatalog(tmp_path / "catalog.db")
        try:
            a, b = LeaseHolder(lease_s=30), LeaseHolder(lease_s=30)
            seen: list[str] = []

            async def first(cursor: str, checkpoint: Checkpoint) -> str:
                seen.append(cursor)
                assert await checkpoint("page-1")
                assert not await run_job(cat, b, "walk", second)  # held by a: b runs nothing
                raise RuntimeError("the walk failed")

            async def second(cursor: str, checkpoint: Checkpoint) -> str:
                seen.append(cursor)
                return "done"

            with pytest.raises(RuntimeError):
                await run_job(cat, a, "walk", first)
            held = await cat.job_get("walk")
            assert held is not None and (held.owner, held.cursor) == (None, "page-1")  # handed back there
            assert await run_job(cat, b, "walk", second)
            assert seen == ["", "page-1"]
            done = await cat.job_get("walk")
            assert done is not None and (done.owner, done.cursor) == (None, "done")
        finally:
            cat.close()

    asyncio.run(main())


def test_a_job_whose_lease_was_taken_over_is_stopped(tmp_path: Path) -> None:
    """The heartbeat finds the lease gone (another holder took it after it ran out, as when this
    process stalled): the job is cancelled, run_job returns, the new holder's row is untouched."""

    async def main() -> None:
        cat = SqliteCatalog(tmp_path / "catalog.db")
        try:
            a = LeaseHolder(lease_s=0.6)  # heartbeats every 0.2 s
            started = asyncio.Event()
            stopped = asyncio.Event()

            async def forever(cursor: str, checkpoint: Checkpoint) -> str:
                started.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    stopped.set()
                return "never"

            job = asyncio.create_task(run_job(cat, a, "scrub", forever))
            await started.wait()
            taken = await cat.job_claim("scrub", "gw-b", FAR_NS, 10**9)  # b, once a's lease ran out
            assert taken is not None
            assert await job  # returned: the job ran, and stopped when its lease was lost
            assert stopped.is_set()
            row = await cat.job_get("scrub")
            assert row is not None and row.owner == "gw-b"  # a's hand-back was fenced off
        finally:
            cat.close()

    asyncio.run(main())
