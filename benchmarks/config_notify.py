"""How soon a config change reaches another worker's caches on PostgreSQL (issue 18: within 1 s).

A real PostgreSQL on 127.0.0.1 (started here, tests/postgres.py) and tierstore's own code on both
ends: a writer ``PostgresCatalog`` changes a bucket's properties (``update_bucket_props``: its
``pg_notify`` rides in the transaction's first round trip), and a listener ``PostgresCatalog``
(``listen(watch)``: the worker's LISTEN connection, catalog/postgres/_notify.py) hands the
notification to a ``ConfigWatch`` whose drop records the time. Both in one event loop on uvloop,
as a granian worker runs; ``--rounds`` changes one after another.

Printed, in milliseconds: from the call (before BEGIN) and from the acknowledgement (the commit
returned) to the drop in the listener; negative from the acknowledgement means the listener
heard first. No peer: SeaweedFS's filer has no counterpart (it polls nothing; its gateways do not
cache bucket policies).

    benchmarks/config_notify.py [--rounds 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # tests/ for the PostgreSQL fixture


async def measure(dsn: str, rounds: int) -> tuple[list[float], list[float]]:
    from tierstore._watch import ConfigWatch
    from tierstore.catalog.postgres import PostgresCatalog
    from tierstore.types import BucketInfo

    writer = await PostgresCatalog.open(dsn, pool_size=2)
    reader = await PostgresCatalog.open(dsn, pool_size=1)
    watch = ConfigWatch()
    heard: asyncio.Queue[float] = asyncio.Queue()
    listening = asyncio.Event()

    def dropped(name: str | None) -> None:
        if name is not None:
            heard.put_nowait(time.perf_counter())
        elif watch.state == "live":  # live() drops everything once the LISTEN is in place
            listening.set()

    watch.on("bucket", dropped)
    reader.listen(watch)
    try:
        await listening.wait()
        await writer.create_bucket(BucketInfo("bench", time.time_ns(), "us-east-1"))
        await heard.get()
        from_call, from_ack = [], []
        for i in range(rounds):
            called = time.perf_counter()
            await writer.update_bucket_props("bench", lambda p, i=i: {**p, "n": i})
            acked = time.perf_counter()
            at = await asyncio.wait_for(heard.get(), 5.0)
            from_call.append((at - called) * 1000)
            from_ack.append((at - acked) * 1000)
        return from_call, from_ack
    finally:
        await reader.close()
        await writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=500)
    args = ap.parse_args()

    import uvloop
    from tests.postgres import PostgreSQL

    pg = PostgreSQL()
    pg.start()
    try:
        dsn = pg.create_database("notify_bench")
        from_call, from_ack = uvloop.run(measure(dsn, args.rounds))
    finally:
        pg.cleanup()
    print(f"config change -> another connection's cache drop, {args.rounds} changes (ms)")
    print("| from | median | p95 | p99 | max |")
    print("|---|---|---|---|---|")
    for name, xs in (("the call (BEGIN .. COMMIT)", from_call), ("the acknowledgement", from_ack)):
        q = statistics.quantiles(xs, n=100)
        print(f"| {name} | {statistics.median(xs):.3f} | {q[94]:.3f} | {q[98]:.3f} | {max(xs):.3f} |")


if __name__ == "__main__":
    main()
