"""Instructions per GET (4 KiB, or `--size-bytes`) in-process, counted by valgrind (deterministic, unlike CPU time on a
shared machine): the app ``server.build_app`` builds (access log and authorization on, as
``tierstore serve`` runs), signed GETs straight into the ASGI app, one at a time.

    benchmarks/get_instructions.py                      # root key; then the same with --user
    benchmarks/get_instructions.py --src ../base/src    # another tree (a worktree's src/)
    benchmarks/get_instructions.py --sse                # the objects PUT with SSE-S3 (issue 16)

Runs the script under ``valgrind --tool=callgrind`` twice, with 1 and with 5 GET passes over
``--objects`` objects, and prints the difference per GET: start-up, the PUTs and the first pass's
cold caches cancel out (``PYTHONHASHSEED=0`` unless set: unseeded runs of one tree differ by up
to ~3%). ``--user``: the GETs are signed by an IAM user allowed by one attached policy
(``s3:GetObject`` and ``s3:ListBucket`` on the bucket), not by the root key. The access log
(stderr) goes to /dev/null: its buffered writes are counted, a terminal is not. ``--sse``: every
object is PUT with ``x-amz-server-side-encryption: AES256`` (4 KiB: inline, as plain ones), so a
GET unwraps its data key, checks the binding MAC and opens one package; compare with a plain run
of the same tree (docs/benchmarks.md, issue 16's "4 KiB GET server CPU, SSE-S3 / plain").
Every GET after the first pass rereads an object, so it hits the worker's data key cache and
verified-binding memo (docs/encryption.md "The data key cache"); ``--sse --cold`` switches both
off: what a read of an object not read before costs (s3bench's small_get_4k reads each once).

``--cache-ttl-s``: the lifetime of the identity cache (keys, secrets, policies) and of the
bucket-settings cache (default: the server's 1 s). They reload per second of wall time, not per
request: under callgrind (~50x slower) a user's GETs pay one reload (catalog reads, the sealed
secret opened) every ~50 requests, where a worker serving thousands a second pays it every few
thousand. ``--cache-ttl-s 50`` scales the TTL by that slowdown; the report gives both.

``--fast``: one valgrind run instead of two, started with instrumentation off and switched on
(``callgrind_control -i on``) for 2 passes after the first, so start-up, the PUTs and the warm-up
pass run at valgrind's uninstrumented speed (~3x less wall time); within ~1k of the two-run
difference for the root. Not with ``--first-read``.

``--first-read``: every GET reads a key not read before (``--objects`` x 5 objects PUT in both
runs, pass i reads the i-th fifth), as a job reading each object once does: a user's remembered
allow per (action, key) never hits then; a bucket-wide one does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MAX_PASSES = 5  # the longer of the two runs
FAST_PASSES = 2  # --fast: the instrumented passes
HOST = "127.0.0.1:9000"
USER_AGENT = "Boto3/1.35 md/Botocore#1.35 ua/2.0 os/linux"  # the access log escapes it per line
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": ["arn:aws:s3:::bench", "arn:aws:s3:::bench/*"],
        }
    ],
}


def signed(
    method: str, path: str, access_key: str, secret: str, body: bytes = b"", extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """An ASGI scope of a request signed as boto3 signs it (SigV4 header, its User-Agent);
    ``extra``: more headers, signed too."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method=method,
        url=f"http://{HOST}{path}",
        data=body,
        headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "user-agent": USER_AGENT, **(extra or {})},
    )
    SigV4Auth(Credentials(access_key, secret), "s3", "us-east-1").add_auth(request)
    headers = [(k.lower().encode(), str(v).encode()) for k, v in request.headers.items()]
    headers.append((b"host", HOST.encode()))
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers, "client": ("127.0.0.1", 1)}  # fmt: skip


async def call(
    app: Any, scope: dict[str, Any], body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, bytes]:
    """One request through the ASGI app (``api_inprocess.call``'s twin: that module cannot be
    imported here, it imports this repository's tierstore, not the tree under ``--src``);
    ``headers`` receives the response's headers."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status: list[int] = []
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected (a streamed body watches for a hang-up)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
            if headers is not None:
                headers.extend(message.get("headers", []))
        elif message.get("body"):
            parts.append(bytes(message["body"]))

    await app(scope, receive, send)
    return status[0], b"".join(parts)


async def run(
    objects: int,
    passes: int,
    user: bool,
    sse: bool,
    cold: bool,
    data_dir: Path,
    cache_ttl_s: float | None = None,
    size_bytes: int = 4096,
    first_read: bool = False,
    fast: bool = False,
) -> None:
    """The measured program (run under valgrind by ``main``)."""
    from tierstore import server
    from tierstore.catalog import SqliteCatalog

    config = server.ServerConfig(data_dir=str(data_dir), access_key="bench", secret_key="benchsecret")
    if hasattr(server, "prepare_master_key"):  # what serve() does first (trees before issue 15 had none)
        catalog = SqliteCatalog(data_dir / "catalog.db")
        prepared = server.prepare_master_key(config, catalog)
        if asyncio.iscoroutine(prepared):  # async since issue 18's Catalog protocol
            await prepared
        catalog.close()
    app = server.build_app(config)
    if cold:  # every read as if the object was not read before (trees without the caches: nothing to do)
        from tierstore.engine import _encryption

        if hasattr(_encryption, "verified_bindings"):
            _encryption.verified_bindings.entries = 0
        if hasattr(app.ctx.service.kms, "data_keys"):
            app.ctx.service.kms.data_keys.entries = 0
    if cache_ttl_s is not None:  # see --cache-ttl-s (trees before issue 15 have neither cache)
        for cache in (getattr(app.ctx, "identities", None), getattr(app.ctx.service, "bucket_access", None)):
            if cache is not None:
                cache.cache_ttl_s = cache_ttl_s
    assert (await call(app, signed("PUT", "/bench", "bench", "benchsecret")))[0] == 200
    access_key, secret = "bench", "benchsecret"
    if user:
        ids = app.ctx.identities
        await ids.create_user("reader")
        await ids.create_policy("read-bench", json.dumps(POLICY))
        await ids.attach_policy("user", "reader", "read-bench")
        new = await ids.create_access_key("reader")
        access_key, secret = new.info.access_key_id, new.secret_key
    body = os.urandom(size_bytes)
    # --first-read: the same objects PUT whatever ``passes`` (so the PUTs cancel out), one warm-up key
    keys = [f"/bench/k{i:07d}" for i in range(objects * MAX_PASSES + 1 if first_read else objects)]
    extra = {"x-amz-server-side-encryption": "AES256"} if sse else None
    for key in keys:
        assert (await call(app, signed("PUT", key, "bench", "benchsecret", body, extra), body))[0] == 200
    gets = [signed("GET", key, access_key, secret) for key in keys]
    answered: list[tuple[bytes, bytes]] = []
    assert (await call(app, gets[0], headers=answered))[0] == 200
    assert ((b"x-amz-server-side-encryption", b"AES256") in answered) == sse, answered  # what is measured
    if fast:  # a warm pass, then the measured ones with instrumentation on
        for scope in gets:
            assert (await call(app, scope))[0] == 200
        _instrument(True)
    for p in range(passes):
        for scope in gets[1 + p * objects:1 + (p + 1) * objects] if first_read else gets:
            code, got = await call(app, scope)
            assert code == 200 and got == body, (code, got[:200])
    if fast:
        _instrument(False)


def _instrument(on: bool) -> None:
    """Switch callgrind's instrumentation of this process on or off (``--fast``); the short wait
    lets valgrind see the command before the next request."""
    import time

    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.3)


def instructions(
    src: Path,
    objects: int,
    passes: int,
    user: bool,
    sse: bool,
    cold: bool,
    cache_ttl_s: float | None = None,
    size_bytes: int = 4096,
    first_read: bool = False,
    fast: bool = False,
) -> int:
    with tempfile.TemporaryDirectory(prefix="ts-cg-") as tmp:
        log = Path(tmp) / "valgrind.log"
        cmd = ["valgrind", "--tool=callgrind", f"--log-file={log}", "--callgrind-out-file=/dev/null", sys.executable,
               __file__, "--run", str(passes), "--objects", str(objects), "--src", str(src),
               "--size-bytes", str(size_bytes)]  # fmt: skip
        if fast:
            cmd[2:2] = ["--instr-atstart=no"]
            cmd.append("--fast")
        if user:
            cmd.append("--user")
        if sse:
            cmd.append("--sse")
        if cold:
            cmd.append("--cold")
        if cache_ttl_s is not None:
            cmd += ["--cache-ttl-s", str(cache_ttl_s)]
        if first_read:
            cmd.append("--first-read")
        env = dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))  # start-up varies less
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        found = re.search(r"Collected : (\d+)", log.read_text())
        assert found, log.read_text()
        return int(found.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=REPO / "src", help="the tree to measure (default: this one)")
    ap.add_argument("--objects", type=int, default=400, help="objects PUT, then GET per pass (default: %(default)s)")
    ap.add_argument("--user", action="store_true", help="GETs signed by an IAM user allowed by a policy")
    ap.add_argument("--sse", action="store_true", help="the objects PUT with SSE-S3 (AES256)")
    ap.add_argument("--cold", action="store_true", help="no data key cache, no verified-binding memo")
    ap.add_argument("--cache-ttl-s", type=float, default=None, help="identity and bucket-settings cache TTL "
                    "(default: the server's, 1 s; see above)")  # fmt: skip
    ap.add_argument("--size-bytes", type=int, default=4096,
                    help="object size (default: %(default)s, inline; above 16 KiB: a blob)")  # fmt: skip
    ap.add_argument("--first-read", action="store_true", help="every GET a key not read before (see above)")
    ap.add_argument("--fast", action="store_true", help="one run, instrumented only for 2 passes (see above)")
    ap.add_argument("--run", type=int, default=0, metavar="PASSES", help=argparse.SUPPRESS)  # under valgrind
    args = ap.parse_args()
    if args.run:
        sys.path.insert(0, str(args.src.resolve()))
        data_dir = Path(tempfile.mkdtemp(prefix="ts-cg-data-"))
        try:
            asyncio.run(
                run(args.objects, args.run, args.user, args.sse, args.cold, data_dir, args.cache_ttl_s, args.size_bytes,
                    args.first_read, args.fast)
            )
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        return 0
    opts = (args.user, args.sse, args.cold, args.cache_ttl_s, args.size_bytes, args.first_read)
    if args.fast:
        if args.first_read:
            ap.error("--fast measures rereads only")
        per = instructions(args.src, args.objects, FAST_PASSES, *opts, fast=True) / (FAST_PASSES * args.objects) / 1000
    else:
        one = instructions(args.src, args.objects, 1, *opts)
        five = instructions(args.src, args.objects, MAX_PASSES, *opts)
        per = (five - one) / ((MAX_PASSES - 1) * args.objects) / 1000
    who = ("IAM user" if args.user else "root") + (", SSE-S3" if args.sse else "") + (", cold" if args.cold else "")
    who += ", first reads" if args.first_read else ""
    if args.cache_ttl_s is not None:
        who += f", cache TTL {args.cache_ttl_s:g} s"
    who += ", fast" if args.fast else ""
    print(f"{args.src}: {per:.1f}k instructions per {args.size_bytes / 1024:g} KiB GET ({who})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
