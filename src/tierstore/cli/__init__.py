"""The ``tierstore`` command: ``serve`` runs the server; ``ls``/``cp``/``rm`` talk to any endpoint."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tierstore.cli._duration import duration_arg

__all__ = ["main"]


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the S3 server on the embedded default (SQLite catalog, local drive)",
        description="Run an S3-compatible endpoint. Data lives in --data; credentials come from "
        "--access-key/--secret-key, TIERSTORE_ACCESS_KEY/TIERSTORE_SECRET_KEY, or a key pair "
        "generated once and kept in the data dir (mode 0600).",
    )
    p.add_argument(
        "--data",
        default=os.environ.get("TIERSTORE_DATA", "./tierstore-data"),
        help="data directory on one drive (default: %(default)s); ignored with --drives",
    )
    p.add_argument(
        "--drives",
        nargs="+",
        metavar="DIR",
        help="an erasure set: one directory per drive (n >= 4: k data + m parity shards; n = 2, 3: full "
        "replicas). Catalog and credentials are mirrored on every drive. See docs/durability.md",
    )
    p.add_argument(
        "--parity",
        type=int,
        metavar="M",
        help="parity shards per stripe for a new set (default: n // 2, at most 4); any M drives may fail",
    )
    p.add_argument(
        "--scrub-interval",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="start a background scrub (verify and repair every blob) this long after the last "
        "one ended; 0 disables (default: %(default)s)",
    )
    p.add_argument(
        "--scrub-rate",
        type=float,
        default=64.0,
        metavar="MB_S",
        help="the scrubber's read budget in MB/s (default: %(default)s)",
    )
    p.add_argument("--stripe-bytes", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--small-object-bytes", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--heal-queue-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--inline-max-bytes",
        type=int,
        default=None,
        metavar="N",
        help="objects up to N bytes are stored inside the catalog (one commit, no file; docs/inline.md); "
        "0 turns it off (default: 16384)",
    )
    p.add_argument(
        "--address",
        type=_address,
        default=os.environ.get("TIERSTORE_ADDRESS", "127.0.0.1:9000"),
        help="HOST:PORT to listen on (default: %(default)s)",
    )
    p.add_argument("--access-key", default=os.environ.get("TIERSTORE_ACCESS_KEY", ""), help="access key id")
    p.add_argument(
        "--secret-key", default=os.environ.get("TIERSTORE_SECRET_KEY", ""), help="secret key (prefer the env var)"
    )
    p.add_argument(
        "--domain", default=os.environ.get("TIERSTORE_DOMAIN"), help="enable virtual-hosted style: BUCKET.DOMAIN"
    )
    p.add_argument("--region", default="us-east-1", help="region reported to clients (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("TIERSTORE_WORKERS", "0")),
        help="server processes sharing the port (default: one per CPU core; env TIERSTORE_WORKERS)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--gc-grace", type=float, default=86_400.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--stale-uploads-expiry",
        type=duration_arg,
        default=duration_arg("7d"),
        metavar="DURATION",
        help="abort multipart uploads started longer ago than this (e.g. 24h, 7d; 0 = never; default: 7d)",
    )
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tierstore.drives import DEFAULT_SMALL_OBJECT_BYTES, DEFAULT_STRIPE_BYTES, DriveSetError
    from tierstore.server import ServerConfig, credential_dirs, load_or_create_credentials, serve

    if isinstance(args.address, str):
        args.address = _address(args.address)
    host, port = args.address
    ak, sk = args.access_key, args.secret_key
    if bool(ak) != bool(sk):
        print("tierstore: give both --access-key and --secret-key (or neither)", file=sys.stderr)
        return 2
    config = ServerConfig(
        data_dir=args.data,
        drives=list(args.drives or []),
        parity=args.parity,
        stripe_bytes=args.stripe_bytes or DEFAULT_STRIPE_BYTES,
        small_object_bytes=DEFAULT_SMALL_OBJECT_BYTES if args.small_object_bytes is None else args.small_object_bytes,
        scrub_interval_s=args.scrub_interval * 3600.0,
        scrub_rate_bytes_s=args.scrub_rate * 1e6,
        heal_queue_interval_s=args.heal_queue_interval,
    )
    if args.inline_max_bytes is not None:
        config.inline_max_bytes = max(0, args.inline_max_bytes)
    if not ak:
        try:
            dirs = credential_dirs(config)
        except DriveSetError as exc:
            print(f"tierstore serve: {exc}", file=sys.stderr)
            return 2
        if not dirs:
            print("tierstore serve: no drive is online", file=sys.stderr)
            return 2
        ak, sk, created = load_or_create_credentials(dirs)
        what = "generated" if created else "loaded"
        where = dirs[0] / "credentials.json" if len(dirs) == 1 else f"credentials.json on {len(dirs)} drives"
        print(f"credentials ({what}, kept in {where}):", flush=True)
        print(f"  access key: {ak}\n  secret key: {sk}", flush=True)
    print(f"endpoint: http://{host}:{port}", flush=True)
    try:
        serve(
            replace(
                config,
                host=host,
                port=port,
                access_key=ak,
                secret_key=sk,
                domain=args.domain,
                region=args.region,
                workers=args.workers if args.workers > 0 else (os.cpu_count() or 1),
                log_level=args.log_level,
                access_log=args.access_log,
                gc_grace_s=args.gc_grace,
                stale_uploads_expiry_s=args.stale_uploads_expiry,
            )
        )
    except DriveSetError as exc:
        print(f"tierstore serve: {exc}", file=sys.stderr)
        return 2
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
    _add_serve(sub)
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
