"""Instructions per GET (4 KiB, or `--size-bytes`) in-process, counted by valgrind (deterministic, unlike CPU time on a
shared machine): the app ``server.build_app`` builds (access log and authorization on, as
``tierstore serve`` runs), signed GETs straight into the ASGI app, one at a time.

    benchmarks/get_instructions.py                      # root key; then the same with --user
    benchmarks/get_instructions.py --src ../base/src    # another tree (a worktree's src/)

Runs the script under ``valgrind --tool=callgrind`` twice, with 1 and with 5 GET passes over
``--objects`` objects, and prints the difference per GET: start-up, the PUTs and the first pass's
cold caches cancel out (``PYTHONHASHSEED=0`` unless set: unseeded runs of one tree differ by up
to ~3%). ``--user``: the GETs are signed by an IAM user allowed by one attached policy
(``s3:GetObject`` and ``s3:ListBucket`` on the bucket), not by the root key. The access log
(stderr) goes to /dev/null: its buffered writes are counted, a terminal is not.
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


def signed(method: str, path: str, access_key: str, secret: str, body: bytes = b"") -> dict[str, Any]:
    """An ASGI scope of a request signed as boto3 signs it (SigV4 header, its User-Agent)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method=method,
        url=f"http://{HOST}{path}",
        data=body,
        headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "user-agent": USER_AGENT},
    )
    SigV4Auth(Credentials(access_key, secret), "s3", "us-east-1").add_auth(request)
    headers = [(k.lower().encode(), str(v).encode()) for k, v in request.headers.items()]
    headers.append((b"host", HOST.encode()))
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers, "client": ("127.0.0.1", 1)}  # fmt: skip


async def call(app: Any, scope: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app (``api_inprocess.call``'s twin: that module cannot be
    imported here, it imports this repository's tierstore, not the tree under ``--src``)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status: list[int] = []
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message.get("body"):
            parts.append(bytes(message["body"]))

    await app(scope, receive, send)
    return status[0], b"".join(parts)


async def run(objects: int, passes: int, user: bool, data_dir: Path, size_bytes: int = 4096) -> None:
    """The measured program (run under valgrind by ``main``)."""
    from tierstore import server
    from tierstore.catalog import SqliteCatalog

    config = server.ServerConfig(data_dir=str(data_dir), access_key="bench", secret_key="benchsecret")
    if hasattr(server, "prepare_master_key"):  # what serve() does first (trees before issue 15 had none)
        catalog = SqliteCatalog(data_dir / "catalog.db")
        server.prepare_master_key(config, catalog)
        catalog.close()
    app = server.build_app(config)
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
    keys = [f"/bench/k{i:07d}" for i in range(objects)]
    for key in keys:
        assert (await call(app, signed("PUT", key, "bench", "benchsecret", body), body))[0] == 200
    gets = [signed("GET", key, access_key, secret) for key in keys]
    for _ in range(passes):
        for scope in gets:
            code, got = await call(app, scope)
            assert code == 200 and got == body, (code, got[:200])


def instructions(src: Path, objects: int, passes: int, user: bool, size_bytes: int = 4096) -> int:
    with tempfile.TemporaryDirectory(prefix="ts-cg-") as tmp:
        log = Path(tmp) / "valgrind.log"
        cmd = ["valgrind", "--tool=callgrind", f"--log-file={log}", "--callgrind-out-file=/dev/null", sys.executable,
               __file__, "--run", str(passes), "--objects", str(objects), "--src", str(src),
               "--size-bytes", str(size_bytes)]  # fmt: skip
        if user:
            cmd.append("--user")
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
    ap.add_argument("--size-bytes", type=int, default=4096,
                    help="object size (default: %(default)s, inline; above 16 KiB: a blob)")  # fmt: skip
    ap.add_argument("--run", type=int, default=0, metavar="PASSES", help=argparse.SUPPRESS)  # under valgrind
    args = ap.parse_args()
    if args.run:
        sys.path.insert(0, str(args.src.resolve()))
        data_dir = Path(tempfile.mkdtemp(prefix="ts-cg-data-"))
        try:
            asyncio.run(run(args.objects, args.run, args.user, data_dir, args.size_bytes))
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        return 0
    one = instructions(args.src, args.objects, 1, args.user, args.size_bytes)
    five = instructions(args.src, args.objects, 5, args.user, args.size_bytes)
    who = "IAM user" if args.user else "root"
    per = (five - one) / (4 * args.objects) / 1000
    print(f"{args.src}: {per:.1f}k instructions per {args.size_bytes / 1024:g} KiB GET ({who})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
