"""``run_job`` (engine/_leases.py): a named job under a lease, on a real SQLite catalog, and the
scrub's cursor (``Repairer.heal(resume=, checkpoint=)``); the catalog side of leases is the
conformance suite's ``LeaseContract`` (both catalogs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tierstore.blob import LocalBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.engine import (
    Checkpoint,
    LeaseHolder,
    LeaseLost,
    ObjectService,
    Repairer,
    periodic_job,
    run_job,
    while_leased,
)

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


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_a_leased_scrub_resumes_after_its_cursor_and_stops_when_the_lease_is_lost(tmp_path: Path) -> None:
    """``Repairer.heal(resume=, checkpoint=)``: the walk starts after the cursor a dead scrubber
    saved ("b:<blob id>"), saves its own after each page, and stops (state "stopped", the inline
    walk not begun) when its checkpoint answers False."""

    async def main() -> None:
        cat = SqliteCatalog(tmp_path / "catalog.db")
        blobs = LocalBlobStore(tmp_path / "data")
        try:
            svc = ObjectService(cat, blobs, inline_max_bytes=1024)
            await svc.create_bucket("scrubbed")
            for i in range(6):
                await svc.put_object("scrubbed", f"b{i}", _one(bytes([i]) * 4096))
            await svc.put_object("scrubbed", "small", _one(b"inline body"))
            ids = [b for b, _size in await cat.blob_page("", 100)]
            assert len(ids) == 6
            repairer = Repairer(cat, blobs, meta_dirs=[tmp_path / "data"])
            saved: list[str] = []

            async def keep(cursor: str) -> bool:
                saved.append(cursor)
                return True

            p = await repairer.heal(kind="scrub", resume=f"b:{ids[1]}", checkpoint=keep)
            assert p.state == "done" and p.blobs_done == 4 and p.blobs_healthy == 4  # after ids[1] only
            assert p.inline_checked == 1 and saved == [f"b:{ids[-1]}", saved[-1]] and saved[-1].startswith("i:")

            async def lost(cursor: str) -> bool:
                return False

            p = await repairer.heal(kind="scrub", checkpoint=lost)
            assert p.state == "stopped" and p.blobs_done == 6 and p.inline_checked == 0
            p = await repairer.heal(kind="scrub", resume=saved[-1])  # past the last inline body: nothing left
            assert p.state == "done" and p.blobs_done == 0 and p.inline_checked == 0
        finally:
            cat.close()

    asyncio.run(main())


def test_a_periodic_job_runs_at_a_start_every_interval_and_after_a_dead_holder(tmp_path: Path) -> None:
    """``periodic_job`` (the orphan sweeps): due when it never ran, when its last run ended before
    this process started, an interval after that, and when its holder died or failed mid-run (the
    cursor says ``due`` until a run ends); otherwise one read and nothing runs."""

    async def main() -> None:
        cat = SqliteCatalog(tmp_path / "catalog.db")
        try:
            a, b = LeaseHolder(lease_s=30), LeaseHolder(lease_s=30)
            clock = [1000.0]
            runs: list[str] = []

            def sweep(who: str, fail: bool = False) -> Callable[[], Awaitable[None]]:
                async def run() -> None:
                    runs.append(who)
                    if fail:
                        raise OSError("the store did not answer")

                return run

            def job(holder: LeaseHolder, who: str, started_s: float, fail: bool = False) -> Awaitable[bool]:
                return periodic_job(cat, holder, "sweep", sweep(who, fail), 3600, started_s, now_s=lambda: clock[0])

            assert await job(a, "a-start", 900)  # never ran
            assert not await job(b, "b-start", 900)  # ran since both started
            clock[0] = 2000.0
            assert await job(b, "b-restart", 1500)  # b restarted after the last run: a start sweeps once
            assert not await job(a, "a-later", 900)
            clock[0] = 2000.0 + 3600
            with pytest.raises(OSError):
                await job(a, "a-interval", 900, fail=True)  # due by the interval; failed: stays due
            failed = await cat.job_get("sweep")
            assert failed is not None and (failed.owner, failed.cursor) == (None, "due")
            assert await job(b, "b-retry", 1500)
            # A holder that dies mid-run leaves the job due; its lease runs out; the next holder runs it.
            past = time.time_ns() - 10**12
            assert await cat.job_claim("sweep", "dead", past, 10**9) is not None
            assert await cat.job_renew("sweep", "dead", past, 10**9, "due")
            assert await job(a, "a-takeover", 900)
            assert runs == ["a-start", "b-restart", "a-interval", "b-retry", "a-takeover"]
            done = await cat.job_get("sweep")
            assert done is not None and (done.owner, done.cursor) == (None, f"done:{clock[0]}")
        finally:
            cat.close()

    asyncio.run(main())


def test_a_long_item_is_heartbeated_and_stopped_once_its_lease_is_lost() -> None:
    """``while_leased`` (transitions, pending moves, hot-copy fills): the item's result comes
    back while the renewals keep it; once a renewal answers False the item is cancelled and
    ``LeaseLost`` raised; no renewal runs after it returned."""

    async def main() -> None:
        kept = [True, True, False]
        calls: list[bool] = []

        async def renew() -> bool:
            calls.append(kept[len(calls)])
            return calls[-1]

        async def quick() -> str:
            return "moved"

        assert await while_leased(quick(), renew, 0.3, "quick") == "moved"
        stopped = asyncio.Event()

        async def forever() -> str:
            try:
                await asyncio.Event().wait()
            finally:
                stopped.set()
            return "never"

        with pytest.raises(LeaseLost):
            await while_leased(forever(), renew, 0.3, "long")  # renewed twice, then lost
        assert stopped.is_set() and calls == [True, True, False]

    asyncio.run(main())
