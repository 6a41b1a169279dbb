"""In-process IAM evaluation micro-benchmark (issue 15: under 10 us per authorization).

A user with 20 attached identity policies of 10 statements each (Allow and Deny, several
actions and bucket/prefix resources, a quarter of them with conditions or ${aws:username}),
plus a bucket policy of 10 statements. Times ``evaluate()`` for a mix of requests (allowed by
the first or the last policy, explicitly denied, implicitly denied) with timeit; reports the
median and p99 per call in microseconds, passing the policies as a list (``evaluate`` finds the
compiled set in its cache) and as a ``PolicySet`` the caller keeps. No peer: the figure is
absolute (the bound is the issue's).

    .venv/bin/python benchmarks/iam_eval.py [--calls 2000] [--repeat 200] [--json out.json] [--cpu]

``--cpu``: time with the process's CPU clock (``time.process_time``) instead of wall time, for a
shared machine where other jobs' load stretches wall time but not this process's CPU time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import timeit
from datetime import UTC, datetime

from tierstore.iam import AuthzRequest, Policy, PolicySet, Principal, compile_policies, evaluate, parse_policy

ACCOUNT = "000000000000"
ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject", "s3:GetObjectTagging"]


def identity_policies(n_policies: int, n_statements: int) -> list[Policy]:
    out = []
    for p in range(n_policies):
        statements: list[dict[str, object]] = []
        for s in range(n_statements):
            bucket = f"team{p}-data{s}"
            stmt: dict[str, object] = {
                "Sid": f"P{p}S{s}",
                "Effect": "Deny" if s == n_statements - 1 else "Allow",
                "Action": [ACTIONS[(p + s) % len(ACTIONS)], f"s3:Get{'Object' if s % 2 else '*'}"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/prefix{s}/*"],
            }
            if s % 4 == 1:
                stmt["Condition"] = {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]},
                                     "Bool": {"aws:SecureTransport": "true"}}
            if s % 4 == 2:
                stmt["Resource"] = f"arn:aws:s3:::{bucket}/home/${{aws:username}}/*"
            statements.append(stmt)
        doc = {"Version": "2012-10-17", "Statement": statements}
        out.append(parse_policy(doc, kind="identity", name=f"policy-{p}"))
    return out


def bucket_policy() -> Policy:
    statements = [
        {"Sid": f"B{s}", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/u{s}"},
         "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::shared/u{s}/*"} for s in range(9)
    ]
    statements.append({"Sid": "DenyPlain", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                       "Resource": ["arn:aws:s3:::shared", "arn:aws:s3:::shared/*"],
                       "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
    return parse_policy({"Version": "2012-10-17", "Statement": statements}, kind="resource", name="shared")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--statements", type=int, default=10)
    ap.add_argument("--calls", type=int, default=2000, help="evaluate() calls per timing sample")
    ap.add_argument("--repeat", type=int, default=200, help="timing samples")
    ap.add_argument("--json")
    ap.add_argument("--cpu", action="store_true", help="time CPU (process_time), not wall time")
    args = ap.parse_args()
    identity = identity_policies(args.policies, args.statements)
    resource = bucket_policy()
    alice = Principal(arn=f"arn:aws:iam::{ACCOUNT}:user/alice", account=ACCOUNT, type="User",
                      username="alice", userid="AIDAALICE", tags={"team": "ml"})
    ctx = {"aws:SourceIp": ["10.1.2.3"], "aws:SecureTransport": ["true"], "aws:UserAgent": ["boto3"]}
    now = datetime(2026, 12, 7, tzinfo=UTC)
    last = args.policies - 1
    cases = {
        "allow_first_policy": ("s3:GetObject", "arn:aws:s3:::team0-data0/prefix0/x.bin"),
        "allow_last_policy": ("s3:GetObject", f"arn:aws:s3:::team{last}-data2/home/alice/a.txt"),
        "explicit_deny": ("s3:GetObject", f"arn:aws:s3:::team{last}-data{args.statements - 1}"),
        "implicit_deny": ("s3:PutObject", "arn:aws:s3:::elsewhere/key"),
    }
    results: dict[str, dict[str, float]] = {}
    compiled = compile_policies(identity)
    timer = time.process_time if args.cpu else time.perf_counter
    for name, (action, arn) in cases.items():
        for form, policies in (("list", identity), ("PolicySet", compiled)):
            def call(action: str = action, arn: str = arn, policies: list[Policy] | PolicySet = policies) -> None:
                evaluate(AuthzRequest(alice, action, arn, ctx, now), identity=policies, resource=resource)
            decision = evaluate(AuthzRequest(alice, action, arn, ctx, now), identity=policies, resource=resource)
            times = timeit.repeat(call, timer=timer, number=args.calls, repeat=args.repeat)
            samples = sorted(t / args.calls * 1e6 for t in times)
            row = results[f"{name}/{form}"] = {
                "median_us": statistics.median(samples),
                "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
            }
            print(f"{name:20s} {form:10s} {decision.reason:14s} median {row['median_us']:6.2f} us"
                  f"   p99 {row['p99_us']:6.2f} us   (by {decision.policy} {decision.statement})")
    print(f"{args.policies} policies x {args.statements} statements; python {platform.python_version()}"
          f" on {platform.machine()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
