"""``tierstore admin kms key create|ls|status|enable|disable|rotate|rewrap``: the server's built-in
key service (the root, or the kms: actions in a policy; docs/security.md "Key service"). Thin faces
over ``/_tierstore/admin/kms/keys``; answers are JSON on stdout, expected failures one line on
stderr and exit status 2. No command ever shows key material: the server never sends it.

``rewrap NAME`` (and ``rotate NAME --rewrap``, after the rotation) walks every version under the
key, a page per request, moving its wrapped data key to the key's newest version (no object
bytes are rewritten; docs/encryption.md "Rotation"), with a progress line on stderr and the
totals as JSON on stdout; exit status 1 if some wrapped keys did not open. Interrupted, it is
run again: versions already moved are skipped without a key service call (``--after`` resumes
from the cursor a page printed)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tierstore.cli._client import _connection_options

__all__ = ["add_kms_commands"]

_VERBS = (
    ("create", "create a key (its first version; enabled)"),
    ("status", "show a key: state, versions, created and rotated times, ARN"),
    ("enable", "let a disabled key wrap and unwrap data keys again"),
    ("disable", "stop a key from wrapping and unwrapping data keys (every worker within about a second)"),
    ("rotate", "add a key version: new data keys use it, those of older versions still open"),
)


def add_kms_commands(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``admin kms key ...``."""
    conn = _connection_options()
    kms = asub.add_parser("kms", help="the built-in key service (SSE-KMS keys): kms key ...")
    ksub = kms.add_subparsers(dest="kms_command", required=True)
    key = ksub.add_parser(
        "key",
        help="keys: create, ls, status, enable, disable, rotate",
        description="Manage the keys of the server's key service. Each key wraps the data keys of the "
        "objects encrypted under it; its material is kept sealed under the server master key and is "
        "never shown.",
    )
    vsub = key.add_subparsers(dest="kms_key_command", required=True)
    for verb, helptext in _VERBS:
        p = vsub.add_parser(verb, parents=[conn], help=helptext)
        p.add_argument("key_id", metavar="NAME", help="the key id: 1 to 256 of [A-Za-z0-9_.-]")
        if verb == "create":
            p.add_argument("--description", default="", help="a note kept with the key")
        if verb == "rotate":
            p.add_argument("--rewrap", action="store_true", help="then re-wrap every data key under it (rewrap)")
        p.set_defaults(func=_cmd_kms, command=f"admin kms key {verb}")
    p = vsub.add_parser(
        "rewrap",
        parents=[conn],
        help="move every data key wrapped by NAME to its newest version (after a rotation)",
        description="Re-wrap the data key of every object version encrypted under NAME with NAME's newest "
        "version, a page at a time (no object data is rewritten). Resumable: run it again, or pass --after. "
        "Exit status: 0 done, 1 some wrapped keys did not open (named in the output), 2 cannot run.",
    )
    p.add_argument("key_id", metavar="NAME", help="the key id")
    p.add_argument("--after", default=None, help="resume after this cursor (a page's 'next')")
    p.add_argument("--page", type=int, default=200, help="versions per request (1 to 1000; default 200)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_rewrap, command="admin kms key rewrap")
    p = vsub.add_parser("ls", parents=[conn], help="list keys")
    p.set_defaults(func=_cmd_kms, command="admin kms key ls")


def _cmd_kms(args: argparse.Namespace) -> int:
    from tierstore.cli._admin import _client, _expected, _failed  # _admin imports this module

    command: str = args.command
    verb = command.rsplit(" ", 1)[1]
    try:
        client = _client(args)
        doc: Any
        if verb == "ls":
            doc = client.kms_list_keys()
        elif verb == "create":
            doc = client.kms_create_key(args.key_id, description=args.description)
        elif verb == "status":
            doc = client.kms_key_status(args.key_id)
        elif verb == "rotate":
            doc = client.kms_rotate_key(args.key_id)
        else:
            doc = client.kms_set_key_enabled(args.key_id, verb == "enable")
    except _expected() as exc:
        return _failed(command, exc)
    print(json.dumps(doc, indent=1))
    if verb == "rotate" and args.rewrap:
        args.after, args.page, args.quiet = None, 200, False
        return _cmd_rewrap(args, command="admin kms key rotate --rewrap")
    return 0


_COUNTS = ("scanned", "rewrapped", "current", "changed", "failed")


def _cmd_rewrap(args: argparse.Namespace, command: str = "admin kms key rewrap") -> int:
    """Page through the walk until the server says it is done; totals (and every failure the
    pages named) as JSON on stdout."""
    from tierstore.cli._admin import _client, _expected, _failed

    totals: dict[str, Any] = dict.fromkeys(_COUNTS, 0)
    totals["key_id"], totals["failures"] = args.key_id, []
    after: str | None = args.after
    try:
        client = _client(args)
        while True:
            page = client.kms_rewrap_key(args.key_id, after=after, limit=args.page)
            for name in _COUNTS:
                totals[name] += page[name]
            totals["failures"] += page["failures"]
            totals["newest_version"] = page["newest_version"]
            after = page["next"]
            if not args.quiet:
                counts = ", ".join(f"{totals[n]:,} {n}" for n in _COUNTS)
                print(f"\rrewrap {args.key_id}: {counts}", end="" if after else "\n", file=sys.stderr, flush=True)
            if after is None:
                break
    except _expected() as exc:
        if not args.quiet and after:
            print(f"\nresume with: --after {after}", file=sys.stderr)
        return _failed(command, exc)
    print(json.dumps(totals, indent=1))
    return 1 if totals["failed"] else 0
