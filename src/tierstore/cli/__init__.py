"""The ``tierstore`` command: ``serve`` runs the server; ``ls``/``cp``/``rm`` talk to any endpoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tierstore.cli._serve import add_serve_command

__all__ = ["main"]


def _cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tierstore.cli._serve import ConfigError, config_fields, print_config, resolve_options
    from tierstore.drives import DriveSetError
    from tierstore.server import (
        ServeError,
        ServerConfig,
        claim_store_and_port,
        credential_dirs,
        load_or_create_credentials,
        serve,
    )

    try:
        resolved = resolve_options(args)
    except ConfigError as exc:
        print(f"tierstore serve: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print_config(resolved)
        return 0
    host, port = resolved["address"][0]
    ak, sk = resolved["access_key"][0], resolved["secret_key"][0]
    if bool(ak) != bool(sk):
        print("tierstore: give both --access-key and --secret-key (or neither)", file=sys.stderr)
        return 2
    config = ServerConfig(host=host, port=port, **config_fields(resolved))
    try:
        claim = claim_store_and_port(config)  # before anything else: a second server stops here
    except ServeError as exc:
        print(f"tierstore serve: {exc}", file=sys.stderr)
        return 1
    try:
        if not ak:
            dirs = credential_dirs(config)
            if not dirs:
                print("tierstore serve: no drive is online", file=sys.stderr)
                return 2
            ak, sk, created = load_or_create_credentials(dirs)
            where = dirs[0] / "credentials.json" if len(dirs) == 1 else f"credentials.json on {len(dirs)} drives"
            if created:  # the only time the secret is shown
                print(f"credentials generated (kept in {where}, mode 0600; shown only now):", flush=True)
                print(f"  access key: {ak}\n  secret key: {sk}", flush=True)
            else:
                print(f"credentials: access key {ak}; the secret key is kept in {where}", flush=True)
        print(f"endpoint: http://{host}:{port}", flush=True)
        serve(replace(config, access_key=ak, secret_key=sk), claim)
    except DriveSetError as exc:
        print(f"tierstore serve: {exc}", file=sys.stderr)
        return 2
    except ServeError as exc:
        print(f"tierstore serve: {exc}", file=sys.stderr)
        return 1
    finally:
        claim.release()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierstore", description="S3-compatible object store for ML teams")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_command(sub, _cmd_serve)
    try:
        from tierstore.cli._client import add_client_commands
    except ImportError:  # pragma: no cover - during bring-up only
        pass
    else:
        add_client_commands(sub)
    from tierstore.cli._admin import add_admin_commands
    from tierstore.cli._datasets import add_dataset_commands
    from tierstore.cli._models import add_model_commands
    from tierstore.cli._query import add_query_command

    add_query_command(sub)
    add_dataset_commands(sub)
    add_model_commands(sub)
    add_admin_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
