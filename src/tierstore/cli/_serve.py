"""``tierstore serve``: its options, declared once, settable by flag, ``TIERSTORE_*`` env var or TOML file.

Every option is one ``Option`` line in ``SERVE_OPTIONS``. From it come the flag, its ``--help``
line (with the env var), the env var (``--idle-timeout-s`` -> ``TIERSTORE_IDLE_TIMEOUT_S``), the
config-file key (``idle-timeout-s``, or ``idle_timeout_s``) and the ``ServerConfig`` field it sets
(the name with underscores, unless ``field`` says otherwise). Precedence: flag > env > file >
default (docs/operations.md).
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tierstore.cli._duration import parse_duration

__all__ = [
    "SERVE_OPTIONS",
    "ConfigError",
    "Option",
    "add_serve_command",
    "config_fields",
    "print_config",
    "resolve_options",
]


class ConfigError(ValueError):
    """A bad value or key in a flag, env var or config file: one line, exit 2."""


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _catalog_url(value: str) -> str:
    """``--catalog``: empty (SQLite in the data dir) or a PostgreSQL URL; a bad one is named masked."""
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"expected postgresql://USER[:PASSWORD]@HOST:PORT/DB, got {_shown_dsn(value)!r}")
    return value


def _store_url(value: str) -> str:
    """``--store``: empty (blobs on --data or --drives) or ``s3://BUCKET/PREFIX?endpoint=URL``."""
    if value:
        from tierstore.blob import parse_store_url

        parse_store_url(value)
    return value


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _words(value: str) -> list[str]:
    """A list from an env var: comma- or whitespace-separated."""
    return [w for w in value.replace(",", " ").split() if w]


@dataclass(frozen=True, slots=True)
class Option:
    """One ``serve`` option. ``kind`` is str, int, float, bool (a switch), list (one or more
    values) or a parser from str (e.g. ``_address``); ``convert`` maps the value onto the
    ``ServerConfig`` field (e.g. hours -> seconds); ``field=""`` means _cmd_serve handles it."""

    flag: str
    kind: Any
    default: Any
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    field: str | None = None
    convert: Callable[[Any], Any] | None = None
    default_text: str | None = None  # what --help says the default is, when not the value itself
    hidden: bool = False

    @property
    def name(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return "TIERSTORE_" + self.name.upper()

    @property
    def config_field(self) -> str:
        return self.name if self.field is None else self.field

    def parse_text(self, text: str) -> Any:
        """A value from an env var."""
        if self.kind is bool:
            return _bool(text)
        if self.kind is list:
            return _words(text)
        return self.from_str(text.strip())

    def from_str(self, text: str) -> Any:
        try:
            value = self.kind(text)
        except ValueError as exc:
            if self.kind is int:
                raise ValueError(f"expected an integer, got {text!r}") from None
            if self.kind is float:
                raise ValueError(f"expected a number, got {text!r}") from None
            raise exc from None
        return self.check(value)

    def check_file_value(self, value: Any) -> Any:
        """A value from the TOML file: native TOML types, or a string to parse."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.kind is list:
            if isinstance(value, str):
                return [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"expected a list of strings, got {value!r}")
            return list(value)
        if self.kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return self.check(float(value))
        if self.kind is int and isinstance(value, int) and not isinstance(value, bool):
            return self.check(value)
        if isinstance(value, str):
            return self.from_str(value)
        raise ValueError(f"expected {_KIND_TEXT.get(self.kind, 'a string')}, got {value!r}")

    def default_value(self) -> Any:
        """The default, parsed like a value from the env when it is text for a parser (HOST:PORT, 7d)."""
        if isinstance(self.default, str) and self.kind not in (str, bool, list):
            return self.kind(self.default)
        return self.default

    def check(self, value: Any) -> Any:
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        return value


_KIND_TEXT = {int: "an integer", float: "a number", str: "a string"}


def _hours_to_s(hours: float) -> float:
    return hours * 3600.0


def _mb_to_bytes(mb_s: float) -> float:
    return mb_s * 1e6


def _workers(n: int) -> int:
    return n if n > 0 else (os.cpu_count() or 1)


# One line per option. To add one, append e.g.
#     Option("--metrics-token", str, "", "bearer token required by /metrics", metavar="TOKEN"),
# and a ServerConfig field of the same name (metrics_token), or say which with field="...";
# convert= maps the value (hours -> seconds); kind may be any parser from text (see _address), whose
# text default is parsed too. Flag, TIERSTORE_* env var, config-file key and --help line follow.
SERVE_OPTIONS: tuple[Option, ...] = (
    Option("--data", str, "./tierstore-data", "data directory on one drive; ignored with --drives", field="data_dir"),
    Option(
        "--drives",
        list,
        None,
        "an erasure set: one directory per drive (n >= 4: k data + m parity shards; n = 2, 3: full "
        "replicas). Catalog and credentials are mirrored on every drive. See docs/durability.md",
        metavar="DIR",
        convert=list,
        default_text="none",
    ),
    Option(
        "--parity",
        int,
        None,
        "parity shards per stripe for a new set; any M drives may fail",
        metavar="M",
        default_text="n // 2, at most 4",
    ),
    Option(
        "--scrub-interval",
        float,
        24.0,
        "start a background scrub (verify and repair every blob) this long after the last one ended; 0 disables",
        metavar="HOURS",
        field="scrub_interval_s",
        convert=_hours_to_s,
    ),
    Option(
        "--scrub-rate",
        float,
        64.0,
        "the scrubber's read budget in MB/s",
        metavar="MB_S",
        field="scrub_rate_bytes_s",
        convert=_mb_to_bytes,
    ),
    Option("--stripe-bytes", int, None, "", hidden=True),
    Option("--small-object-bytes", int, None, "", hidden=True),
    Option("--heal-queue-interval", float, 2.0, "", hidden=True, field="heal_queue_interval_s"),
    # Background work's leases (docs/scale-out.md "Background work"); tests shorten them.
    Option("--lease-seconds", float, 60.0, "", hidden=True, field="lease_s", convert=lambda s: max(0.5, s)),
    Option(
        "--orphan-sweep-interval",
        float,
        24.0,
        "sweep the stores for orphans (blobs, remote objects no version references, older than the GC grace)"
        " this long after the last sweep ended, and at each start; one worker of one gateway at a time",
        metavar="HOURS",
        field="orphan_sweep_interval_s",
        convert=_hours_to_s,
    ),
    Option(
        "--inline-max-bytes",
        int,
        None,
        "objects up to N bytes are stored inside the catalog (one commit, no file; docs/inline.md); 0 turns it off",
        metavar="N",
        convert=lambda n: max(0, n),
        default_text="16384",
    ),
    Option(
        "--catalog",
        _catalog_url,
        "",
        "the catalog in PostgreSQL, postgresql://USER[:PASSWORD]@HOST:PORT/DB; blobs stay on --data or "
        "--drives (one gateway; docs/scale-out.md). Needs tierstore[postgres]",
        metavar="URL",
        default_text="embedded SQLite in the data dir",
    ),
    Option(
        "--catalog-pool",
        int,
        8,
        "PostgreSQL connections at most per worker process (docs/scale-out.md, The connection pool bound)",
        metavar="N",
        convert=lambda n: max(1, n),
    ),
    Option(
        "--catalog-timeout",
        float,
        10.0,
        "a catalog connection checkout waits this long, then the request answers 503 SlowDown",
        metavar="S",
        field="catalog_timeout_s",
        convert=lambda s: max(0.1, s),
    ),
    Option(
        "--catalog-start-timeout",
        float,
        60.0,
        "at start, retry an unreachable PostgreSQL this long, then exit",
        metavar="S",
        field="catalog_start_timeout_s",
        convert=lambda s: max(0.0, s),
    ),
    Option(
        "--store",
        _store_url,
        "",
        "an object store as the standard tier, s3://BUCKET/PREFIX?endpoint=URL[&region=R]: every blob "
        "lives there, --data holds a bounded read cache; only with --catalog (docs/scale-out.md)",
        metavar="URL",
        default_text="none: blobs on --data or --drives",
    ),
    Option(
        "--store-access-key",
        str,
        "",
        "the store's access key id (with --store-secret-key)",
        metavar="ID",
        default_text="the AWS credential chain: AWS_ACCESS_KEY_ID..., shared files, roles",
    ),
    Option(
        "--store-secret-key",
        str,
        "",
        "the store's secret key (prefer the env or config file)",
        metavar="KEY",
        default_text="the AWS credential chain",
    ),
    Option(
        "--cache-bytes",
        int,
        0,
        "with --store: the bound on the read cache in the data dir",
        metavar="N",
        convert=lambda n: max(0, n),
        default_text="half the data dir's free space at start, at least 64 MiB",
    ),
    Option(
        "--master-key-file",
        str,
        "",
        "read the master key (32 bytes; it seals access keys, KMS keys, tier credentials) from FILE, e.g. a "
        "mounted secret: the same file on every gateway; never created; mode 0600 (docs/scale-out.md)",
        metavar="FILE",
        default_text="master.key in the data dir, created at first start",
    ),
    Option("--address", _address, "127.0.0.1:9000", "HOST:PORT to listen on", metavar="HOST:PORT", field=""),
    Option("--access-key", str, "", "access key id", field="", default_text="generated"),
    Option("--secret-key", str, "", "secret key (prefer the env or config file)", field="", default_text="generated"),
    Option("--domain", str, None, "enable virtual-hosted style: BUCKET.DOMAIN", default_text="none"),
    Option("--region", str, "us-east-1", "region reported to clients"),
    Option(
        "--workers",
        int,
        0,
        "server processes sharing the port; 0: one per CPU core",
        convert=_workers,
    ),
    Option("--log-level", str, "info", "log level", choices=("debug", "info", "warning", "error")),
    Option("--access-log", bool, True, "log every request as a JSON line (docs/observability.md)"),
    Option("--access-log-file", str, "", "append the access log to FILE", metavar="FILE", default_text="stderr"),
    Option(
        "--audit-log",
        str,
        "",
        "append one JSON line per request (who, action, resource, decision) to FILE, rotated by size "
        "(docs/security.md, Audit log)",
        metavar="FILE",
        default_text="off",
    ),
    Option(
        "--audit-log-max-bytes",
        int,
        100 * 1024 * 1024,
        "rotate the audit log before a line would take it past N bytes (at least 1)",
        metavar="N",
        convert=lambda n: max(1, n),
    ),
    Option(
        "--audit-log-backups",
        int,
        5,
        "rotated audit log files kept (FILE.1 ... FILE.N; 0: the file is emptied instead)",
        metavar="N",
        convert=lambda n: max(0, n),
    ),
    Option(
        "--metrics-token",
        str,
        "",
        "require 'Authorization: Bearer TOKEN' on /metrics",
        metavar="TOKEN",
        default_text="none: public",
    ),
    Option("--gc-grace", float, 86_400.0, "", hidden=True, field="gc_grace_s"),
    Option(
        "--stale-uploads-expiry",
        parse_duration,
        "7d",
        "abort multipart uploads started longer ago than this (e.g. 24h, 7d; 0 = never)",
        metavar="DURATION",
        field="stale_uploads_expiry_s",
    ),
    Option(
        "--shutdown-grace-s",
        float,
        30.0,
        "at SIGTERM/SIGINT, stop accepting and give in-flight requests this long to finish",
        metavar="S",
    ),
    Option(
        "--header-timeout-s",
        float,
        10.0,
        "close a connection that sends no complete request head within this long of opening or of "
        "its previous response (idle keep-alive connections included)",
        metavar="S",
    ),
    Option(
        "--idle-timeout-s",
        float,
        60.0,
        "answer RequestTimeout and close when a request body sends nothing for this long",
        metavar="S",
    ),
    Option(
        "--disk-reserve-bytes",
        int,
        64 * 1024 * 1024,
        "space kept free next to the catalog so that deletes still commit on a full disk (at most 1/16 of the disk)",
        metavar="N",
    ),
    Option(
        "--kms-create-keys",
        list,
        None,
        "create these keys of the built-in key service at start unless they exist (comma-separated; e.g. "
        "testkey-1,testkey-2 for test suites; docs/security.md, Key service)",
        metavar="ID",
        convert=list,
        default_text="none",
    ),
    Option(
        "--lifecycle-day-seconds",
        int,
        86_400,
        "length of a lifecycle rule's day in seconds, for tests (kept within 1..86400; a shorter day is not "
        "rounded to midnight UTC; docs/tiers.md)",
        metavar="N",
        field="lifecycle_day_s",
        convert=lambda n: min(max(n, 1), 86_400),
    ),
    Option(
        "--console",
        str,
        "on",
        "the web console at /console (docs/console.md); off: /console is an S3 path like any other",
        choices=("on", "off"),
        convert=lambda v: v == "on",
    ),
    Option(
        "--console-oidc-issuer",
        str,
        "",
        "console sign-in with this OIDC provider (its issuer URL, registered as an IAM OIDC provider; "
        "docs/console.md); needs --console-oidc-client-id and --console-oidc-role",
        metavar="URL",
    ),
    Option("--console-oidc-client-id", str, "", "the console's client id at the OIDC provider", metavar="ID"),
    Option(
        "--console-oidc-client-secret",
        str,
        "",
        "the console's client secret at the OIDC provider, if it has one (prefer the env var or the config file)",
        metavar="SECRET",
    ),
    Option(
        "--console-oidc-role",
        str,
        "",
        "the role ARN a console OIDC sign-in assumes (AssumeRoleWithWebIdentity: its trust policy decides)",
        metavar="ARN",
    ),
    Option("--console-oidc-name", str, "", "the provider's name on the sign-in button (default: its host)"),
    Option(
        "--console-oidc-redirect-url",
        str,
        "",
        "the callback URL registered at the provider (default: derived from the request: "
        "SCHEME://HOST/console/login/oidc/callback)",
        metavar="URL",
    ),
    Option(
        "--sse-c-over-http",
        bool,
        False,
        "accept SSE-C requests (customer keys in headers) over plain HTTP: behind a TLS-terminating proxy, or "
        "on loopback; off, they answer 400 InvalidRequest as AWS does (docs/encryption-s3.md)",
    ),
    Option(
        "--max-connections",
        int,
        4096,
        "connections served at once (shared by the workers; more wait in the listen queue)",
        metavar="N",
    ),
)

_BY_NAME = {o.name: o for o in SERVE_OPTIONS}


def add_serve_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], func: Callable[[argparse.Namespace], int]
) -> None:
    p = sub.add_parser(
        "serve",
        help="run the S3 server on the embedded default (SQLite catalog, local drive)",
        description="Run an S3-compatible endpoint. Every option can also be set by its TIERSTORE_* "
        "environment variable or in a TOML file given with --config (keys are the option names: "
        "idle-timeout-s = 30); a flag beats the env var, which beats the file. Credentials come "
        "from --access-key/--secret-key, or a key pair generated once and kept in the data dir "
        "(mode 0600). See docs/operations.md.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="a TOML file of serve options (env TIERSTORE_CONFIG)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved options and where each came from (secret masked), then exit",
    )
    for opt in SERVE_OPTIONS:
        kw: dict[str, Any] = {"dest": opt.name, "default": argparse.SUPPRESS}
        if opt.hidden:
            kw["help"] = argparse.SUPPRESS
        else:
            default = opt.default_text if opt.default_text is not None else opt.default
            kw["help"] = f"{opt.help} (default: {default}; env {opt.env})"
        if opt.kind is bool:
            kw["action"] = argparse.BooleanOptionalAction  # --access-log / --no-access-log
        else:
            if opt.kind is list:
                kw["nargs"] = "+"
            else:
                kw["type"] = _argparse_type(opt)
            if opt.metavar:
                kw["metavar"] = opt.metavar
            if opt.choices:
                kw["choices"] = opt.choices
        p.add_argument(opt.flag, **kw)
    p.set_defaults(func=func)


def _argparse_type(opt: Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return opt.from_str(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(opt.kind, "__name__", "value")
    return parse


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = key.replace("-", "_")
        if name not in _BY_NAME:
            raise ConfigError(f"config file {path}: unknown key {key!r} (see tierstore serve --help)")
        out[name] = value
    return out


def resolve_options(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """Each option's value and where it came from: flag > env > file > default."""
    env = os.environ if environ is None else environ
    config_path = getattr(args, "config", None) or env.get("TIERSTORE_CONFIG") or None
    from_file = _read_file(config_path) if config_path else {}
    out: dict[str, tuple[Any, str]] = {}
    for opt in SERVE_OPTIONS:
        if hasattr(args, opt.name):
            out[opt.name] = (getattr(args, opt.name), "flag")
            continue
        try:
            if env.get(opt.env, "") != "":
                where = opt.env
                out[opt.name] = (opt.parse_text(env[opt.env]), f"env {opt.env}")
            elif opt.name in from_file:
                where = f"config file {config_path}: {opt.flag[2:]}"
                out[opt.name] = (opt.check_file_value(from_file[opt.name]), f"file {config_path}")
            else:
                out[opt.name] = (opt.default_value(), "default")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return out


def config_fields(resolved: Mapping[str, tuple[Any, str]]) -> dict[str, Any]:
    """The ``ServerConfig`` fields the options set (a None value keeps the field's default)."""
    fields: dict[str, Any] = {}
    for opt in SERVE_OPTIONS:
        value = resolved[opt.name][0]
        if opt.config_field == "" or value is None:
            continue
        fields[opt.config_field] = opt.convert(value) if opt.convert else value
    return fields


def print_config(resolved: Mapping[str, tuple[Any, str]]) -> None:
    for opt in SERVE_OPTIONS:
        value, source = resolved[opt.name]
        if opt.name in ("secret_key", "store_secret_key", "metrics_token", "console_oidc_client_secret") and value:
            value = "********"
        if opt.name == "catalog" and value:
            value = _shown_dsn(value)
        if opt.kind is _address:
            value = f"{value[0]}:{value[1]}"
        shown = "(unset)" if value is None else repr(value)
        print(f"{opt.flag[2:]} = {shown}  # {source}")


def _shown_dsn(dsn: str) -> str:
    """``dsn`` with its password masked (all of it but the scheme without the ``[postgres]`` extra)."""
    try:
        from tierstore.catalog.postgres import redact_dsn
    except ImportError:
        return dsn.partition(":")[0] + "://***"
    return redact_dsn(dsn)
