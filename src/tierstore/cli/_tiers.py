"""``tierstore admin tier add|ls|rm|status``: the registry of remote tiers (the root, or the
tierstore:*Tier* actions in a policy; docs/tiers.md). Thin faces over ``/_tierstore/admin/tiers``;
answers are JSON on stdout, expected failures one line on stderr and exit status 2.

``tier add`` takes the tier's own ``--endpoint``, ``--access-key``, ``--secret-key`` and
``--region`` (the names docs/tiers.md gives them), so on ``add`` the tierstore server is named
by ``--server`` / ``--server-access-key`` / ``--server-secret-key`` / ``--server-region``, or, as
for every command, by ``$TIERSTORE_ENDPOINT`` and ``$TIERSTORE_ACCESS_KEY``/``_SECRET_KEY``.
The tier's secret key, so it stays out of shell history, may come instead of ``--secret-key``
from ``$TIERSTORE_TIER_SECRET_KEY`` or, on a terminal, from a prompt (``--access-key`` without
a secret key asks for it). No command ever prints a secret key: the server never sends it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

from tierstore.cli._client import _connection_options
from tierstore.client import TierstoreClient, resolve_settings

__all__ = ["TIER_SECRET_ENV", "add_tier_commands"]

TIER_SECRET_ENV = "TIERSTORE_TIER_SECRET_KEY"  # noqa: S105 - the name of an env var, not a secret


def add_tier_commands(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``admin tier ...``."""
    conn = _connection_options()
    tier = asub.add_parser(
        "tier",
        help="remote tiers (storage classes on other S3 services): tier add, ls, rm, status",
        description="Manage the remote tiers: a tier is a bucket (and prefix) on any S3-compatible service, "
        "named by a storage class. Its credentials are kept sealed under the server master key.",
    )
    tsub = tier.add_subparsers(dest="tier_command", required=True)
    add = tsub.add_parser(
        "add",
        help="register a tier: NAME becomes a storage class",
        description="Register a remote tier. The endpoint is checked by the server: cloud metadata and "
        "link-local addresses are refused; loopback, private and CGNAT addresses need "
        "--allow-private-endpoint. The secret key may come from --secret-key, $" + TIER_SECRET_ENV + ", or a "
        "prompt. The tierstore server is --server (or $TIERSTORE_ENDPOINT).",
    )
    add.add_argument("name", metavar="NAME", help="the storage class: an uppercase letter, then up to 31 of A-Z 0-9 _")
    t = add.add_argument_group("the tier")
    t.add_argument("--endpoint", required=True, metavar="URL", help="the tier service's S3 endpoint (http or https)")
    t.add_argument("--bucket", required=True, help="the bucket on that service")
    t.add_argument("--prefix", default="", help="a key prefix inside the bucket (default: none)")
    t.add_argument("--access-key", metavar="KEY", help="the tier's access key id (default: the server's AWS chain)")
    t.add_argument(
        "--secret-key", metavar="KEY", help=f"the tier's secret key (prefer ${TIER_SECRET_ENV} or the prompt)"
    )
    t.add_argument("--region", default="us-east-1", help="the tier's signing region (default: %(default)s)")
    t.add_argument("--restore-required", action="store_true", help="an archive: GETs need a RestoreObject first")
    t.add_argument(
        "--allow-private-endpoint", action="store_true", help="allow loopback, private and CGNAT endpoint addresses"
    )
    s = add.add_argument_group("the tierstore server")
    s.add_argument("--server", metavar="URL", help="its endpoint (default: $TIERSTORE_ENDPOINT, ...)")
    s.add_argument("--server-access-key", metavar="KEY", help="its access key id (default: $TIERSTORE_ACCESS_KEY)")
    s.add_argument("--server-secret-key", metavar="KEY", help="its secret key (default: $TIERSTORE_SECRET_KEY)")
    s.add_argument("--server-region", default="us-east-1", help="its signing region (default: %(default)s)")
    add.set_defaults(func=_cmd_add, command="admin tier add")
    p = tsub.add_parser("ls", parents=[conn], help="list tiers (never their secrets)")
    p.set_defaults(func=_cmd_tier, command="admin tier ls")
    p = tsub.add_parser("rm", parents=[conn], help="remove a tier (refused while data is in it)")
    p.add_argument("name", metavar="NAME", help="the tier")
    p.set_defaults(func=_cmd_tier, command="admin tier rm")
    p = tsub.add_parser(
        "status",
        parents=[conn],
        help="what each tier holds and the movers' progress: blobs, bytes, backlog, bytes moved, errors",
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="one tier (default: every tier)")
    p.set_defaults(func=_cmd_tier, command="admin tier status")


class _NoSecret(Exception):
    """The tier's access key was given without a way to read its secret key."""


def _tier_secret(args: argparse.Namespace) -> str | None:
    """The tier's secret key: --secret-key, the env var, or a prompt on a terminal."""
    if args.secret_key is not None:
        return str(args.secret_key)
    if args.access_key is None:
        return None
    from_env = os.environ.get(TIER_SECRET_ENV)
    if from_env:
        return from_env
    if sys.stdin.isatty():
        return getpass.getpass(f"secret key of tier {args.name}: ")
    raise _NoSecret(f"--access-key needs the tier's secret key: --secret-key, ${TIER_SECRET_ENV}, or a terminal")


def _cmd_add(args: argparse.Namespace) -> int:
    from tierstore.cli._admin import _expected, _failed

    try:
        secret = _tier_secret(args)
        if secret is not None and args.access_key is None:
            raise _NoSecret("a secret key needs its --access-key")
    except _NoSecret as exc:
        return _failed(args.command, exc)
    try:
        settings = resolve_settings(
            args.server,
            access_key=args.server_access_key,
            secret_key=args.server_secret_key,
            region=args.server_region,
        )
        doc = TierstoreClient(settings, timeout_s=120.0).tier_add(
            args.name,
            args.endpoint,
            args.bucket,
            prefix=args.prefix,
            region=args.region,
            access_key_id=args.access_key,
            secret_key=secret,
            restore_required=args.restore_required,
            allow_private=args.allow_private_endpoint,
        )
    except _expected() as exc:
        return _failed(args.command, exc)
    print(json.dumps(doc, indent=1))
    return 0


def _cmd_tier(args: argparse.Namespace) -> int:
    from tierstore.cli._admin import _client, _expected, _failed

    command: str = args.command
    verb = command.rsplit(" ", 1)[1]
    try:
        client = _client(args)
        doc: Any
        if verb == "ls":
            doc = client.tier_list()
        elif verb == "rm":
            client.tier_remove(args.name)
            doc = {"removed": args.name}
        else:
            doc = client.tier_status(args.name)
    except _expected() as exc:
        return _failed(command, exc)
    print(json.dumps(doc, indent=1))
    return 0
