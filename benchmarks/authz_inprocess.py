"""The authorization step in-process: ``IamAuthorizer.authorize`` for the root and for a user
with 20 attached policies of 10 statements each, against ``AllowAuthenticated``.

    .venv/bin/python benchmarks/authz_inprocess.py

Prints the best of 7 runs, in microseconds per request, each including the ``RequestContext``
the dispatcher builds (printed alone too). The user's request matches the last statement of
the last policy (the worst case for a scan; the evaluator indexes statements by bucket).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import timeit
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from tierstore.api._authorize import AllowAuthenticated, Check, Principal, RequestContext  # noqa: E402
from tierstore.api._iam_authorizer import IamAuthorizer, validate_policy  # noqa: E402
from tierstore.catalog import SqliteCatalog  # noqa: E402
from tierstore.crypto import MasterKey  # noqa: E402
from tierstore.engine import IdentityService  # noqa: E402

SCOPE = {"client": ("127.0.0.1", 1), "scheme": "http"}


def context(key: str, bucket: str) -> RequestContext:
    checks = (Check("s3:GetObject", f"arn:aws:s3:::{bucket}/k"),)
    return RequestContext(
        Principal(key), "GetObject", checks, scheme="v4-header", headers={"user-agent": "bench"}, scope=SCOPE
    )


def drive(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that finishes without waiting (the authorizer: its caches hit, and the
    embedded catalog's reads run inline) with no event loop in the measurement."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise AssertionError("the authorizer waited")


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="ts-authz-bench-"))
    catalog = SqliteCatalog(data / "catalog.db")
    ids = IdentityService(
        catalog, MasterKey(b"m" * 32), root_keys={"root": "s"}, validate_policy=validate_policy, cache_ttl_s=3600
    )

    async def setup() -> str:
        await ids.create_user("u")
        for i in range(20):
            statements = [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::b{i}-{j}/*"} for j in range(10)
            ]
            await ids.create_policy(f"p{i}", json.dumps({"Version": "2012-10-17", "Statement": statements}))
            await ids.attach_policy("user", "u", f"p{i}")
        return (await ids.create_access_key("u")).info.access_key_id

    user = asyncio.run(setup())
    iam, allow = IamAuthorizer(ids), AllowAuthenticated()
    cases: list[tuple[str, Callable[[], object]]] = [
        ("RequestContext alone", lambda: context("root", "b19-9")),
        ("AllowAuthenticated", lambda: drive(allow.authorize(context("root", "b19-9")))),
        ("IamAuthorizer, root key", lambda: drive(iam.authorize(context("root", "b19-9")))),
        ("IamAuthorizer, user with 20 x 10 statements", lambda: drive(iam.authorize(context(user, "b19-9")))),
    ]
    n = 20_000
    for name, fn in cases:
        fn()
        best = min(timeit.repeat(fn, number=n, repeat=7)) / n
        print(f"{name:48s} {best * 1e6:6.2f} us")
    catalog.close()


if __name__ == "__main__":
    main()
