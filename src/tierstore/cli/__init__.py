"""The ``tierstore`` command: ``serve`` runs the server; ``ls``/``cp``/``rm`` talk to any endpoint."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

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
        help="data directory (default: %(default)s)",
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
        default=int(os.environ.get("TIERSTORE_WORKERS", "1")),
        help="server processes (default: %(default)s)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--gc-grace", type=float, default=86_400.0, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tierstore.server import ServerConfig, load_or_create_credentials, serve

    if isinstance(args.address, str):
        args.address = _address(args.address)
    host, port = args.address
    ak, sk = args.access_key, args.secret_key
    if bool(ak) != bool(sk):
        print("tierstore: give both --access-key and --secret-key (or neither)", file=sys.stderr)
        return 2
    if not ak:
        ak, sk, created = load_or_create_credentials(Path(args.data))
        what = "generated" if created else "loaded"
        print(f"credentials ({what}, kept in {Path(args.data) / 'credentials.json'}):", flush=True)
        print(f"  access key: {ak}\n  secret key: {sk}", flush=True)
    print(f"endpoint: http://{host}:{port}", flush=True)
    serve(
        ServerConfig(
            data_dir=args.data,
            host=host,
            port=port,
            access_key=ak,
            secret_key=sk,
            domain=args.domain,
            region=args.region,
            workers=max(1, args.workers),
            log_level=args.log_level,
            access_log=args.access_log,
            gc_grace_s=args.gc_grace,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierstore", description="S3-compatible object store for ML teams")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    try:
        from tierstore.cli._client import add_client_commands
    except ImportError:  # pragma: no cover - during bring-up only
        pass
    else:
        add_client_commands(sub)
    from tierstore.cli._query import add_query_command

    add_query_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
