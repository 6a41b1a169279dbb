"""The ``tierstore`` command: ``serve`` runs the server; ``ls``/``cp``/``rm`` talk to any endpoint."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tierstore.cli._serve import add_serve_command

__all__ = ["main"]


def _cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tierstore.cli._serve import ConfigError, config_fields, print_config, resolve_options
    from tierstore.drives import DriveSetError
    from tierstore.server import (
        STORE_WITH_DRIVES,
        STORE_WITHOUT_CATALOG,
        ServeError,
        ServerConfig,
        check_audit_log,
        check_console,
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
    if resolved["store"][0] and not resolved["catalog"][0]:
        print(f"tierstore serve: {STORE_WITHOUT_CATALOG}", file=sys.stderr)
        return 2
    if resolved["store"][0] and resolved["drives"][0]:
        print(f"tierstore serve: {STORE_WITH_DRIVES}", file=sys.stderr)
        return 2
    if bool(resolved["store_access_key"][0]) != bool(resolved["store_secret_key"][0]):
        print("tierstore serve: give both --store-access-key and --store-secret-key (or neither)", file=sys.stderr)
        return 2
    host, port = resolved["address"][0]
    ak, sk = resolved["access_key"][0], resolved["secret_key"][0]
    if bool(ak) != bool(sk):
        print("tierstore: give both --access-key and --secret-key (or neither)", file=sys.stderr)
        return 2
    config = ServerConfig(host=host, port=port, **config_fields(resolved))
    try:
        check_audit_log(config)
        check_console(config)
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tierstore")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierstore", description="S3-compatible object store for ML teams")
    parser.add_argument("--version", action="version", version=f"tierstore {_version()}")
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
    from tierstore.cli._iam import add_whoami_command
    from tierstore.cli._models import add_model_commands
    from tierstore.cli._query import add_query_command

    add_query_command(sub)
    add_dataset_commands(sub)
    add_model_commands(sub)
    add_admin_commands(sub)
    add_whoami_command(sub)
    return parser


EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _command_name(args: argparse.Namespace) -> str:
    """``tierstore dataset ls``, ``tierstore heal``...: how the one error line starts."""
    command = getattr(args, "command", "")
    group = getattr(args, f"{command}_command", None)
    return " ".join(["tierstore", command, *([group] if group else [])])


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What talking to a server or the filesystem can raise when the world, not the code, is at
    fault: refused or dropped connections, timeouts, a reader that went away, a server error."""
    import http.client

    import urllib3.exceptions
    from botocore.exceptions import BotoCoreError, ClientError

    from tierstore.client import TierstoreClientError

    return (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError, BotoCoreError, ClientError,
            TierstoreClientError)  # fmt: skip


def _describe(exc: BaseException) -> str:
    from tierstore.cli._client import describe

    if isinstance(exc, ConnectionError | TimeoutError):
        return f"cannot reach the server: {describe(exc)}"
    return describe(exc)


def _stdout_gone() -> None:
    """The reader of stdout went away (``tierstore ls | head -1``): point stdout at /dev/null so
    the interpreter's final flush does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. An expected failure (server gone, dropped connection, broken pipe,
    Ctrl-C) ends with one line on stderr and a non-zero exit code, never a traceback; each
    command may catch more of its own first, with a more precise message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    name = _command_name(args)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _stdout_gone()  # quiet, like any Unix filter whose reader stopped early
        return EXIT_FAILED
    except _expected_errors() as exc:
        print(f"{name}: {_describe(exc)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
