"""``tierstore admin kms key create|ls|status|enable|disable|rotate``: the server's built-in key
service (the root, or the kms: actions in a policy; docs/security.md "Key service"). Thin faces
over ``/_tierstore/admin/kms/keys``; answers are JSON on stdout, expected failures one line on
stderr and exit status 2. No command ever shows key material: the server never sends it."""

from __future__ import annotations

import argparse
import json
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
        p.set_defaults(func=_cmd_kms, command=f"admin kms key {verb}")
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
    return 0
