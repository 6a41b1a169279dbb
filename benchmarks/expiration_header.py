"""What ``x-amz-expiration`` costs a GET/HEAD (api/_lifecycle.py ``expiration_headers``), in
process: for a bucket without lifecycle (one lookup in the per-worker cache of bucket settings)
and for one with N rules, against a bare ``dict.get`` measured in the same run (the machine is
shared: compare the ratios).

    .venv/bin/python benchmarks/expiration_header.py [--rules 10] [--calls 200000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from tierstore.api._lifecycle import expiration_headers
from tierstore.api._metrics import Metrics
from tierstore.api._request import Context
from tierstore.engine import (
    BucketAccessService,
    LifecycleConfig,
    LifecycleExpiration,
    LifecycleFilter,
    LifecycleRule,
)
from tierstore.types import ObjectMeta


class _Catalog:
    """Only what ``BucketAccessService.props`` reads: one bucket's settings."""

    def __init__(self, props: dict[str, Any]) -> None:
        self.props = props

    def bucket_props(self, bucket: str) -> dict[str, Any]:
        return self.props


class _Service:
    def __init__(self, props: dict[str, Any]) -> None:
        self.bucket_access = BucketAccessService(_Catalog(props))  # type: ignore[arg-type]


def _ns_per_call(fn: Callable[[], object], calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10, help="rules of the bucket with lifecycle (the first matches)")
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    meta = ObjectMeta("b", "tmp/k", "null", 10, '"e"', time.time_ns())
    prefixes = ["tmp/", *(f"p{i}/" for i in range(1, args.rules))]
    rules = tuple(
        LifecycleRule(f"r{i}", True, LifecycleFilter("prefix", p), LifecycleExpiration(days=3))
        for i, p in enumerate(prefixes)
    )
    cases = {
        "no lifecycle": {"versioning": "Enabled"},
        f"{args.rules} rules": {"lifecycle": LifecycleConfig(rules).to_props()},
    }
    empty: dict[str, int] = {}
    base = _ns_per_call(lambda: empty.get("b"), args.calls)
    print(f"{'case':<16} {'ns/call':>9} {'x dict.get':>11}")
    print(f"{'dict.get':<16} {base:>9.0f} {1.0:>11.1f}")
    for name, props in cases.items():
        ctx = Context(_Service(props), Metrics())  # type: ignore[arg-type]
        ns = _ns_per_call(lambda ctx=ctx: expiration_headers(ctx, "b", meta), args.calls)  # type: ignore[misc]
        print(f"{name:<16} {ns:>9.0f} {ns / base:>11.1f}")


if __name__ == "__main__":
    main()
