"""``Grouped`` (engine/_mover.py): the grouped trash pass after moves. Calls
that arrive while a run is going wait and go together in the next; each caller gets its own
item's result, or its batch's exception, and never a result of a run that started before it."""

from __future__ import annotations

import asyncio

import pytest

from tierstore.engine._mover import Grouped


def test_calls_during_a_run_go_together_in_the_next() -> None:
    runs: list[list[int]] = []

    async def body() -> None:
        release, started = asyncio.Event(), asyncio.Event()

        async def run(items: list[int]) -> list[int]:
            runs.append(items)
            started.set()
            if len(runs) == 1:
                await release.wait()  # the first run is "writing" while more arrive
            if 13 in items:
                raise ValueError("a batch that fails")
            return [i * 10 for i in items]

        grouped: Grouped[int, int] = Grouped(run)
        first = asyncio.create_task(grouped(1))
        await started.wait()
        assert runs == [[1]]
        rest = [asyncio.create_task(grouped(i)) for i in (2, 3, 4)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert runs == [[1]]  # they wait for the run going on
        release.set()
        assert await first == 10
        assert [await t for t in rest] == [20, 30, 40]
        assert runs == [[1], [2, 3, 4]]
        failing = [asyncio.create_task(grouped(i)) for i in (12, 13)]
        for t in failing:
            with pytest.raises(ValueError, match="a batch that fails"):
                await t
        assert await grouped(5) == 50  # a failed batch does not stop the next
        assert runs[-2:] == [[12, 13], [5]]

    asyncio.run(body())
