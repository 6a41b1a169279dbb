"""``tierstore heal``, ``tierstore admin info``: operate a running server's drives; ``tierstore admin
user|key|policy ...``: manage users, their access keys (and service accounts) and inline policies
(those IAM permissions, or the root; docs/identities.md); ``admin group|role ...`` and the managed
policies of ``admin policy ...``: ``cli/_iam.py``; ``admin kms key ...``: ``cli/_kms.py``; ``admin
tier ...``: ``cli/_tiers.py``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tierstore.cli._client import _connection_options, describe
from tierstore.cli._duration import duration_arg
from tierstore.cli._iam import add_iam_commands, add_managed_policy_commands
from tierstore.cli._kms import add_kms_commands
from tierstore.cli._migrate import add_migrate_command
from tierstore.cli._tiers import add_tier_commands
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings

__all__ = ["add_admin_commands"]


def add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    h = sub.add_parser(
        "heal",
        parents=[_connection_options()],
        help="verify every blob and rebuild missing or corrupt shards (also onto a replaced drive)",
        description="Ask the server to heal its store: format replaced (empty) drives, re-seed their "
        "catalog copies, then verify every blob the catalog references and rebuild what is missing "
        "or corrupt. Shows a progress bar, then a summary (--json: the final report as JSON on stdout). "
        "Exit status: 0 all healthy or repaired, 1 some blobs are still degraded or lost (or, with "
        "--verify-encryption, some encrypted packages do not open), 2 cannot run.",
    )
    h.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    h.add_argument(
        "--verify-encryption",
        action="store_true",
        help="also open every package of every SSE-S3/SSE-KMS object (finds tampering the CRCs cannot see)",
    )
    h.add_argument("--json", action="store_true", help="print the final report as JSON instead of a summary")
    h.set_defaults(func=_cmd_heal)
    a = sub.add_parser(
        "admin", help="server administration (admin info, user, key, policy, group, role, kms, tier)"
    )
    asub = a.add_subparsers(dest="admin_command", required=True)
    info = asub.add_parser(
        "info",
        parents=[_connection_options()],
        help="drives, their state and capacity, catalog copies, last heal",
        description="Show the server's drives (state, capacity, catalog copy), the erasure set layout "
        "and the last heal or scrub report.",
    )
    info.add_argument("--json", action="store_true", help="the raw JSON document")
    info.set_defaults(func=_cmd_info, command="admin info")
    _add_identity_commands(asub)
    add_iam_commands(asub)
    add_kms_commands(asub)
    add_tier_commands(asub)
    add_migrate_command(asub)


def _add_identity_commands(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``admin user ...`` and ``admin key ...`` (the root, or the iam: actions in a policy): thin
    faces over /_tierstore/admin/."""
    conn = _connection_options()
    user = asub.add_parser("user", help="users: create, list, info, enable, disable, delete")
    usub = user.add_subparsers(dest="user_command", required=True)
    for verb, helptext in (
        ("create", "create a user"),
        ("info", "show a user, its keys (never their secrets) and its groups"),
        ("enable", "let a user's keys authenticate again"),
        ("disable", "stop every key of a user from authenticating (within about a second)"),
        ("delete", "delete a user (its keys must be deleted first)"),
    ):
        p = usub.add_parser(verb, parents=[conn], help=helptext)
        p.add_argument("name")
        p.set_defaults(func=_cmd_identity, command=f"admin user {verb}")
    p = usub.add_parser("list", parents=[conn], help="list users")
    p.set_defaults(func=_cmd_identity, command="admin user list")
    key = asub.add_parser("key", help="access keys: create, list, enable, disable, delete")
    ksub = key.add_subparsers(dest="key_command", required=True)
    p = ksub.add_parser(
        "create",
        parents=[conn],
        help="create an access key for a user; prints its secret, which is never shown again",
    )
    p.add_argument("user")
    p.add_argument("--service", action="store_true", help="a service account acting as the user")
    p.add_argument("--policy", metavar="FILE", help="service account: a policy (JSON file) that narrows its rights")
    p.add_argument("--expires", metavar="DURATION", type=duration_arg, help="service account: expires after (1h, 30d)")
    p.add_argument("--name", default="", help="service account: a label")
    p.set_defaults(func=_cmd_identity, command="admin key create")
    p = ksub.add_parser("list", parents=[conn], help="list a user's keys (never their secrets)")
    p.add_argument("user")
    p.set_defaults(func=_cmd_identity, command="admin key list")
    for verb in ("enable", "disable", "delete"):
        p = ksub.add_parser(verb, parents=[conn], help=f"{verb} an access key")
        p.add_argument("access_key_id")
        p.set_defaults(func=_cmd_identity, command=f"admin key {verb}")
    policy = asub.add_parser(
        "policy",
        help="IAM policies: a user's inline ones (put, ls, rm); managed ones "
        "(create, managed, info, delete, attach, detach)",
    )
    psub = policy.add_subparsers(dest="policy_command", required=True)
    p = psub.add_parser("put", parents=[conn], help="set a user's inline policy from a JSON file (IAM policy language)")
    p.add_argument("user")
    p.add_argument("name")
    p.add_argument("file", help="the policy document (JSON)")
    p.set_defaults(func=_cmd_identity, command="admin policy put")
    p = psub.add_parser("ls", parents=[conn], help="list a user's inline policies (name -> document)")
    p.add_argument("user")
    p.set_defaults(func=_cmd_identity, command="admin policy ls")
    p = psub.add_parser("rm", parents=[conn], help="delete a user's inline policy")
    p.add_argument("user")
    p.add_argument("name")
    p.set_defaults(func=_cmd_identity, command="admin policy rm")
    add_managed_policy_commands(psub, conn)


def _cmd_identity(args: argparse.Namespace) -> int:
    command: str = args.command
    verb = command.rsplit(" ", 1)[1]
    try:
        client = _client(args)
        doc: Any
        if command.startswith("admin policy"):
            if verb == "put":
                with open(args.file, encoding="utf-8") as f:
                    doc = client.put_user_policy(args.user, args.name, f.read())
            elif verb == "ls":
                doc = client.user_policies(args.user)
            else:
                client.delete_user_policy(args.user, args.name)
                doc = {"deleted": args.name}
        elif command.startswith("admin user"):
            if verb == "create":
                doc = client.create_user(args.name)
            elif verb == "list":
                doc = client.list_users()
            elif verb == "info":
                doc = client.user_info(args.name)
            elif verb in ("enable", "disable"):
                doc = client.set_user_enabled(args.name, verb == "enable")
            else:
                client.delete_user(args.name)
                doc = {"deleted": args.name}
        elif verb == "create":
            policy = None
            if args.policy:
                with open(args.policy, encoding="utf-8") as f:
                    policy = f.read()
            doc = client.create_access_key(
                args.user, service=args.service, policy=policy, expires_s=args.expires, name=args.name
            )
        elif verb == "list":
            doc = client.list_access_keys(args.user)
        elif verb in ("enable", "disable"):
            doc = client.set_access_key_status(args.access_key_id, active=verb == "enable")
        else:
            client.delete_access_key(args.access_key_id)
            doc = {"deleted": args.access_key_id}
    except _expected() as exc:
        return _failed(command, exc)
    print(json.dumps(doc, indent=1))
    return 0


def _client(args: argparse.Namespace) -> TierstoreClient:
    settings = resolve_settings(
        args.endpoint, access_key=args.access_key, secret_key=args.secret_key, region=args.region
    )
    return TierstoreClient(settings, timeout_s=3600.0)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:,.1f} GiB"


def _print_info(doc: dict[str, Any]) -> None:
    if "set" in doc:
        s = doc["set"]
        print(
            f"{doc['mode']} set {s['set_id']}: {s['drives']} drives, {s['data_shards']} data + "
            f"{s['parity_shards']} parity shards, write quorum {s['write_quorum']}, "
            f"stripe {s['stripe_bytes'] // 1024} KiB, objects <= {s['small_object_bytes'] // 1024} KiB as replicas"
        )
        state = "writable" if doc["writable"] else ("read-only" if doc["readable"] else "UNAVAILABLE")
        print(f"{doc['online']}/{s['drives']} drives online: {state}")
    else:
        print(f"{doc['mode']} data directory")
    rows = [["#", "STATE", "CATALOG", "FREE", "TOTAL", "PATH"]]
    for d in doc["drives"]:
        rows.append(
            [
                str(d["index"]),
                d["state"],
                d.get("catalog", "-"),
                _gib(d["free_bytes"]),
                _gib(d["total_bytes"]),
                d["path"],
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(f"{c:<{w}}" for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    print(f"blobs: {doc['blobs']:,}")
    last = doc.get("last_heal")
    if last:
        print(
            f"last {last['kind']}: {last['state']}, {last['blobs_done']:,} blobs: {last['blobs_healthy']:,} healthy, "
            f"{last['blobs_repaired']:,} repaired, {last['blobs_degraded']:,} degraded, {last['blobs_lost']:,} lost"
        )
    gateways = doc.get("gateways") or []
    if gateways:
        print(f"live gateways: {len(gateways)}")
        for g in gateways:
            print(f"  {g['id']}  {g['host']} pid {g['pid']}  up {_ago(g['started_ns'])}, seen {_ago(g['seen_ns'])} ago")


def _ago(when_ns: int) -> str:
    """How long ago ``when_ns`` was, in whole seconds."""
    import time

    return f"{max(0, time.time_ns() - when_ns) // 1_000_000_000} s"


def _print_heal_summary(report: dict[str, Any]) -> None:
    """What a person wants to know after ``tierstore heal``: counts, time, and what is not well."""
    took_s = (report.get("finished_s") or 0.0) - (report.get("started_s") or 0.0)
    print(
        f"heal {report['state']} in {max(took_s, 0.0):.1f} s: {report['blobs_done']:,} blobs checked, "
        f"{report['blobs_healthy']:,} healthy, {report['blobs_repaired']:,} repaired, "
        f"{report['blobs_degraded']:,} degraded, {report['blobs_lost']:,} lost"
    )
    if report.get("inline_checked"):
        print(f"catalog-held bodies: {report['inline_checked']:,} checked, {report['inline_repaired']:,} repaired")
    if report.get("shards_rebuilt"):
        print(f"shards rebuilt: {report['shards_rebuilt']:,} ({report['bytes_written']:,} bytes written)")
    if report.get("drives_formatted"):
        print(f"drives formatted: {', '.join(map(str, report['drives_formatted']))}")
    if report.get("catalog_reseeded"):
        print(f"catalog copies re-seeded on drives: {', '.join(map(str, report['catalog_reseeded']))}")
    if report.get("sse_checked") or report.get("sse_skipped"):
        print(
            f"encrypted objects: {report['sse_checked']:,} opened, {report['sse_failed']:,} do not open, "
            f"{report['sse_skipped']:,} skipped (SSE-C, or the key service refused)"
        )
    for what in ("degraded", "lost"):
        ids = report.get(what) or []
        if ids:
            more = report[f"blobs_{what}"] - len(ids)
            print(f"{what} blobs: {' '.join(ids)}" + (f" (and {more:,} more)" if more > 0 else ""))
    if report.get("lost_objects"):
        print(f"objects affected: {' '.join(report['lost_objects'])}")


def _failed(command: str, exc: Exception) -> int:
    """One line on stderr for a server that answered an error or could not be reached; exit 2."""
    import urllib3.exceptions

    if isinstance(exc, urllib3.exceptions.HTTPError):
        print(f"tierstore {command}: {describe(exc)}", file=sys.stderr)
    elif isinstance(exc, OSError):
        print(f"tierstore {command}: cannot reach the server: {exc}", file=sys.stderr)
    else:
        print(f"tierstore {command}: {exc}", file=sys.stderr)
    return 2


def _expected() -> tuple[type[Exception], ...]:
    """Failures that make the command end with one line and exit 2 (it cannot run)."""
    import http.client

    import urllib3.exceptions

    return (ValueError, TierstoreClientError, OSError, urllib3.exceptions.HTTPError, http.client.HTTPException)


def _cmd_info(args: argparse.Namespace) -> int:
    try:
        doc = _client(args).admin_info()
    except _expected() as exc:
        return _failed("admin info", exc)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        _print_info(doc)
    return 0


def _cmd_heal(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    final: dict[str, Any] | None = None
    bar = None
    try:
        client = _client(args)
        for p in client.heal(verify_encryption=args.verify_encryption):
            final = p
            if args.quiet:
                continue
            if bar is None:
                bar = tqdm(total=p["blobs_total"] or None, unit="blob", desc="heal", file=sys.stderr)
            if p["blobs_total"] and bar.total != p["blobs_total"]:
                bar.total = p["blobs_total"]
            bar.update(p["blobs_done"] - bar.n)
            bar.set_postfix(repaired=p["blobs_repaired"], lost=p["blobs_lost"], refresh=False)
    except _expected() as exc:
        return _failed("heal", exc)
    finally:
        if bar is not None:
            bar.close()
    if final is None or final.get("state") != "done":
        if args.json:
            print(json.dumps(final, indent=1) if final else "{}")
        print(
            f"tierstore heal: the pass did not finish: {final.get('error') if final else 'no report'}", file=sys.stderr
        )
        return 2
    if args.json:
        print(json.dumps(final, indent=1))
    else:
        _print_heal_summary(final)
    return 1 if final["blobs_lost"] or final["blobs_degraded"] or final.get("sse_failed") else 0
