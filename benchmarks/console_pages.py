"""The web console's page times with 1,000,000 objects in the bucket (issue 19: every page's
server time under 300 ms).

The bucket is bulk-loaded as benchmarks/dataset_1m.py does it (the write path's statements,
large transactions: PUTting a million objects would take most of an hour here): keys
``train/clsNNN/NNNNNNN.bin`` in 1000 prefixes. Then ``tierstore serve`` runs on that data dir,
the benchmark signs in to the console over HTTP like a browser (form, cookie, CSRF) and times
each page (pages 1 to 9) on a kept-alive loopback connection: the time from the request to the last byte of
the page, an upper bound of the server's time. Pages 7-9 too (helper consops19): Identity (with
a user to show), Tiers and lifecycle, and Health and metrics, whose audit log section reads the
newest lines of an audit log pre-filled with ``AUDIT_LINES`` synthetic lines (over the 8 MiB it
scans at most), unfiltered and filtered by a principal that matches none (the whole tail
scanned). Each page once to warm up (the Buckets page's usage aggregate is computed once per
worker, then refreshed in the background), then ``--repeat`` times; the median and the
maximum are printed against the 300 ms target.

    .venv/bin/python benchmarks/console_pages.py                   # 1,000,000 objects
    .venv/bin/python benchmarks/console_pages.py --objects 100000
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from dataset_1m import BUCKET, PREFIX, key_of, load  # noqa: E402
from s3_side_by_side import AK, SK, Tierstore, loadavg, machine  # noqa: E402

TARGET_MS = 300.0
AUDIT_LINES = 30_000  # ~9 MiB of audit lines: past the 8 MiB tail the audit section scans


class Browser:
    """A cookie-keeping HTTP client of the console (one kept-alive connection)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str, dict[str, str]]:
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["content-type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        text = resp.read().decode()
        for value in resp.headers.get_all("set-cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return resp.status, text, dict(resp.headers)

    def sign_in(self) -> None:
        _, form, _ = self.request("GET", "/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token is not None
        body = urlencode({"access_key": AK, "secret_key": SK, "csrf": token.group(1), "next": "/console/buckets"})
        status, _, headers = self.request("POST", "/console/login", body)
        assert status == 303 and "tierstore_console" in self.cookies, (status, headers)


def fill_audit_log(path: Path) -> None:
    """``AUDIT_LINES`` lines shaped as the server writes them (api/_audit.py), before it starts."""
    with open(path, "w") as f:
        for i in range(AUDIT_LINES):
            f.write(
                f'{{"time": "2026-12-07T00:00:{i % 60:02d}.000Z", "request_id": "{i:016x}", "source_ip": "127.0.0.1", '
                f'"access_key": "AKIABENCHMARK{i % 97:07d}", "principal_type": "user", "user": "bench-{i % 97}", '
                f'"parent_user": null, "role_session": null, "action": "s3:GetObject", "api": "GetObject", '
                f'"resource": "arn:aws:s3:::{BUCKET}/{key_of(i)}", "decision": "allow", "policy": "read", '
                f'"status": 200, "error": ""}}\n'
            )


def make_user(port: int) -> str:
    """A user with a key, an inline policy and a group, for the Identity user page."""
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=AK, aws_secret_access_key=SK,
        region_name="us-east-1",
    )  # fmt: skip
    iam.create_user(UserName="bench-user")
    iam.create_access_key(UserName="bench-user")
    iam.create_group(GroupName="bench-group")
    iam.add_user_to_group(UserName="bench-user", GroupName="bench-group")
    doc = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
    arn = iam.create_policy(PolicyName="bench-policy", PolicyDocument=doc)["Policy"]["Arn"]
    iam.attach_user_policy(UserName="bench-user", PolicyArn=arn)
    return "bench-user"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    print(f"# console pages with {args.objects:,} objects; {machine()}; load at start {loadavg()}")
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        work = Path(tmp)
        (work / "tierstore").mkdir()
        load_s = load(work / "tierstore", args.objects, args.seed)
        print(f"bulk load: {load_s:.0f} s")
        audit = work / "audit.log"
        fill_audit_log(audit)
        server = Tierstore(work, args.workers, 0, ("--audit-log", str(audit)))
        server.start()
        try:
            browser = Browser(server.port)
            browser.sign_in()
            one = key_of(7)  # train/cls007/0000007.bin
            folder = one.rpartition("/")[0] + "/"
            _, first_page, _ = browser.request("GET", f"/console/browse/{BUCKET}?prefix={quote(folder, safe='')}")
            nxt = re.search(r'id="next-page" href="([^"]+)"', first_page)
            pages = {
                "buckets": "/console/buckets",
                "bucket settings": f"/console/buckets/{BUCKET}",
                "browse /": f"/console/browse/{BUCKET}",
                f"browse {PREFIX} (1000 prefixes)": f"/console/browse/{BUCKET}?prefix={quote(PREFIX, safe='')}",
                f"browse {folder}": f"/console/browse/{BUCKET}?prefix={quote(folder, safe='')}",
                f"browse {folder} next page": nxt.group(1).replace("&amp;", "&") if nxt else "",
                "object page": f"/console/object/{BUCKET}?key={quote(one, safe='')}",
                # pages 3-6: a query over one folder, the checkpoints of a bucket with no checkpoint
                # among its objects (the query over commit keys finds none), datasets, models
                "query (one folder, by size)": "/console/query?"
                + urlencode({"bucket": BUCKET, "q": f"key STARTS WITH '{folder}' ORDER BY size DESC LIMIT 100"}),
                "checkpoints of the bucket": f"/console/checkpoints?bucket={BUCKET}",
                "datasets": "/console/datasets",
                "models": "/console/models",
                "identity": "/console/identity",
                "identity: a user": f"/console/identity/user/{make_user(server.port)}",
                "tiers and lifecycle": "/console/tiers",
                "health and metrics + audit log": "/console/health",
                "health, audit filtered (no match)": "/console/health?principal=nobody-at-all",
            }
            print(f"{'page':<40} {'median ms':>10} {'max ms':>8}  target {TARGET_MS:.0f} ms")
            worst = 0.0
            for name, path in pages.items():
                if not path:  # fewer keys than one page under the folder
                    continue
                status, _, _ = browser.request("GET", path)  # warm up (usage aggregate, caches)
                assert status == 200, (name, status)
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    status, _, _ = browser.request("GET", path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert status == 200, (name, status)
                med, top = statistics.median(times), max(times)
                worst = max(worst, med)
                print(f"{name:<40} {med:>10.1f} {top:>8.1f}  {'met' if med < TARGET_MS else 'MISSED'}")
            print(f"worst median / target: {worst / TARGET_MS:.2f}x; load at end {loadavg()}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
