"""Composition root: configuration -> stores -> service -> ASGI app -> HTTP server.

This is the only module that chooses implementations (DESIGN.md). ``serve`` runs granian;
each worker process calls ``app_factory``, which reads the configuration that ``serve``
put into the environment and builds its own catalog connection and blob store.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import fcntl
import functools
import gc
import hashlib
import json
import logging
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import string
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tierstore._watch import ConfigWatch
from tierstore.api import AccessLog, AuditLog, Metrics, S3App, note_send_failure
from tierstore.api._audit import DEFAULT_BACKUPS as DEFAULT_AUDIT_BACKUPS
from tierstore.api._audit import DEFAULT_MAX_BYTES as DEFAULT_AUDIT_MAX_BYTES
from tierstore.api._iam_authorizer import IamAuthorizer, validate_policy
from tierstore.api._identity_ext import IdentityAuthenticator  # the composition root picks it
from tierstore.blob import (
    BlobStore,
    CachedBlobStore,
    ErasureBlobStore,
    LocalBlobStore,
    RemoteBlobStore,
    S3BlobStore,
    S3StoreConfig,
    StoreRefused,
    check_endpoint,
    parse_store_url,
)
from tierstore.catalog import Catalog, SqliteCatalog
from tierstore.console import ConsoleApp, is_console_request
from tierstore.console._oidc import OidcSignIn, config_problem
from tierstore.crypto import (
    MASTER_KEY_FILE,
    LocalKeyStore,
    MasterKey,
    MasterKeyError,
    SealedSecretError,
    check_key_id,
    load_master_key,
    load_master_key_file,
    load_or_create_master_key,
    sealed_key_id,
)
from tierstore.drives import (
    DEFAULT_SMALL_OBJECT_BYTES,
    DEFAULT_STRIPE_BYTES,
    FORMAT_DIR,
    DiskReserve,
    DriveSet,
    write_file_durably,
)
from tierstore.engine import (
    DEFAULT_INLINE_MAX_BYTES,
    DEFAULT_LEASE_S,
    Checkpoint,
    DatasetService,
    Gateway,
    IdentityService,
    LeaseHolder,
    LifecycleWorker,
    ModelService,
    ObjectService,
    OidcVerifier,
    Repairer,
    StsService,
    TierConfig,
    TierService,
    periodic_job,
    run_job,
)
from tierstore.engine._console_sessions import SignedOutSessions
from tierstore.engine._gateway_pins import GatewayPins
from tierstore.errors import SlowDown, TierstoreError, TierUnavailable

if TYPE_CHECKING:  # the [postgres] extra: imported only when --catalog names PostgreSQL
    from tierstore.catalog.postgres import PostgresCatalog

__all__ = [
    "CACHE_DIR",
    "STORE_WITHOUT_CATALOG",
    "STORE_WITH_DRIVES",
    "Claim",
    "ServeError",
    "ServerConfig",
    "app_factory",
    "build_app",
    "check_audit_log",
    "claim_store_and_port",
    "credential_dirs",
    "default_cache_bytes",
    "load_or_create_credentials",
    "lock_store",
    "master_key_dirs",
    "open_drive_set",
    "open_service",
    "serve",
    "server_master_key",
    "start_store",
    "store_blobs",
    "tune_malloc",
]

log = logging.getLogger("tierstore.server")
_ENV = "TIERSTORE_SERVE_CONFIG"
_METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LISTEN_FDS_ENV = "TIERSTORE_LISTEN_FDS"  # every worker's listening socket (file descriptors)
_LISTEN_FD_ENV = "TIERSTORE_LISTEN_FD"  # this worker's
CREDENTIALS_FILE = "credentials.json"
LOCK_FILE = "server.lock"  # in the data dir, or in .tierstore/ on every drive of a set
_MOVER_KILL_ENV = "TIERSTORE_TEST_KILL_MOVER_AT"  # "uploaded" | "committed" (engine/_mover.py)
_HOT_KILL_ENV = "TIERSTORE_TEST_KILL_HOT_AT"  # "copied" (engine/_hot.py)
_LEASE_KILL_ENV = "TIERSTORE_TEST_KILL_AFTER_CLAIM"  # "trash" | "outbox" | "lifecycle" | "pending" (engine/_leases.py)
GATEWAY_PINS_INTERVAL_S = 2.0  # --store: this gateway's pass over the live pins (a stat per blob)
HOT_COPIES_INTERVAL_S = 1.0  # the hot-copy loop: two indexed queries per pass when nothing is due
TIER_OUTBOX_INTERVAL_S = 1.0  # the outbox loop: one indexed query per pass when nothing is due


@dataclass(slots=True)
class ServerConfig:
    data_dir: str = "./tierstore-data"
    host: str = "127.0.0.1"
    port: int = 9000
    access_key: str = ""
    secret_key: str = ""
    domain: str | None = None
    region: str = "us-east-1"
    workers: int = 1
    gc_interval_s: float = 60.0
    gc_grace_s: float = 86_400.0
    log_level: str = "info"
    access_log: bool = True  # JSON lines (docs/observability.md)
    access_log_file: str = ""  # append the access log here; empty: stderr
    audit_log: str = ""  # the audit log's file (docs/security.md "Audit log"); empty: no audit log
    audit_log_max_bytes: int = DEFAULT_AUDIT_MAX_BYTES  # rotated when a line would take it past this
    audit_log_backups: int = DEFAULT_AUDIT_BACKUPS  # rotated files kept: FILE.1 (newest) ... FILE.N
    metrics_token: str = ""  # when set, /metrics requires "Authorization: Bearer <token>"
    extra_keys: dict[str, str] = field(default_factory=dict)
    # The catalog in PostgreSQL (``--catalog postgresql://...``, docs/scale-out.md); empty: SQLite in the
    # data dir (or mirrored on the drives). Blobs stay on the data dir or the drive set either way.
    catalog: str = ""
    catalog_pool: int = 8  # connections at most per worker process
    catalog_timeout_s: float = 10.0  # a checkout (or a connect) waits this long, then 503
    catalog_start_timeout_s: float = 60.0  # PostgreSQL unreachable at start: retried this long, then exit
    # An object store as the standard tier (``--store s3://BUCKET/PREFIX?endpoint=URL``, only with a
    # PostgreSQL catalog): every blob lives there; the data dir holds its bounded read cache.
    store: str = ""
    store_access_key: str = ""  # both or neither; neither: the standard AWS credential chain
    store_secret_key: str = ""
    cache_bytes: int = 0  # the cache's bound; 0: chosen at start from the data dir's free space
    # The master key from this file (a mounted secret, the same on every gateway) instead of the data
    # dir's master.key; never created (crypto/_sealing.py ``load_master_key_file``).
    master_key_file: str = ""
    # An erasure set (``--drives``): data_dir is then unused.
    drives: list[str] = field(default_factory=list)
    parity: int | None = None
    stripe_bytes: int = DEFAULT_STRIPE_BYTES
    small_object_bytes: int = DEFAULT_SMALL_OBJECT_BYTES
    scrub_interval_s: float = 86_400.0  # a scrub pass starts this long after the last one ended; 0: never
    scrub_rate_bytes_s: float = 64e6  # the scrubber's read budget
    heal_queue_interval_s: float = 2.0  # how often blobs reported by reads and writes are healed
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES  # bodies up to this size live in the catalog; 0: never
    # Connections (docs/operations.md): in-flight requests get this long to finish at SIGTERM/SIGINT;
    # a connection must send a complete request head within header_timeout_s of opening or of its
    # previous response (this closes idle and keep-alive connections too); a request whose body
    # stalls for idle_timeout_s is answered RequestTimeout; at most max_connections are served at
    # once (shared by the workers), the others wait in the listen queue.
    shutdown_grace_s: float = 30.0
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_connections: int = 4096
    # Kept free next to the catalog (on every drive) so that deletes commit on a full disk; at most
    # 1/16 of the filesystem.
    disk_reserve_bytes: int = 64 * 1024 * 1024
    stale_uploads_expiry_s: float = 7 * 86_400.0  # multipart uploads older than this are aborted; 0: never
    # Background work's leases (docs/scale-out.md "Background work"): a gateway that dies holding
    # work leaves it to the others after this long; heartbeats come a third of it apart. Tests shorten it.
    lease_s: float = DEFAULT_LEASE_S
    # The orphan sweeps (local blobs, each tier's remote objects) are leased jobs that run at a
    # start and this long after the last one ended (docs/scale-out.md "Background work").
    orphan_sweep_interval_s: float = 86_400.0
    # Key ids of the local key service created at start unless they exist (test suites: testkey-1, testkey-2).
    kms_create_keys: list[str] = field(default_factory=list)
    # A lifecycle rule's day, in seconds (tests shorten it; docs/tiers.md "Lifecycle"); 1..86,400.
    lifecycle_day_s: int = 86_400
    # Accept SSE-C (customer keys in headers) over plain HTTP; off: 400 InvalidRequest, as AWS (docs/encryption-s3.md).
    sse_c_over_http: bool = False
    # The web console at /console (docs/console.md); off: /console is S3's like any other path.
    console: bool = True
    # Console sign-in with an OIDC provider (docs/console.md): its issuer (registered as an IAM
    # OIDC provider), the console's client id (one of its audiences) and secret, the role to assume.
    console_oidc_issuer: str = ""
    console_oidc_client_id: str = ""
    console_oidc_client_secret: str = field(default="", repr=False)
    console_oidc_role: str = ""
    console_oidc_name: str = ""  # on the button; empty: the issuer's host
    console_oidc_redirect_url: str = ""  # empty: derived from the request (https://HOST/console/login/oidc/callback)


def _random_string(n: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def load_or_create_credentials(data_dir: Path | list[Path]) -> tuple[str, str, bool]:
    """The key pair kept in the data dir (mode 0600), created on first use. Returns (ak, sk, created).

    Given several directories (the ``.tierstore`` dir of every drive of a set), the pair is read
    from the first that has it and written to every one that lacks it."""
    dirs = data_dir if isinstance(data_dir, list) else [data_dir]
    found = next((d / CREDENTIALS_FILE for d in dirs if (d / CREDENTIALS_FILE).exists()), None)
    if found is not None:
        doc = json.loads(found.read_text())
        ak, sk, created = doc["access_key"], doc["secret_key"], False
    else:
        ak = "TS" + _random_string(18, string.ascii_uppercase + string.digits)
        sk = _random_string(40, string.ascii_letters + string.digits)
        created = True
    data = json.dumps({"access_key": ak, "secret_key": sk}).encode()
    for d in dirs:
        if not (d / CREDENTIALS_FILE).exists():
            d.mkdir(parents=True, exist_ok=True)
            write_file_durably(d / CREDENTIALS_FILE, data, mode=0o600)
    return ak, sk, created


def open_drive_set(config: ServerConfig, *, format_new: bool = True) -> DriveSet:
    """The configured erasure set; formats a new set or replacement drives unless told not to."""
    return DriveSet.open(
        config.drives,
        parity=config.parity,
        stripe_bytes=config.stripe_bytes,
        small_object_bytes=config.small_object_bytes,
        format_new=format_new,
    )


def credential_dirs(config: ServerConfig) -> list[Path]:
    """Where the generated key pair is kept: the data dir, or ``.tierstore/`` on every online drive."""
    if not config.drives:
        return [Path(config.data_dir)]
    drive_set = open_drive_set(config)
    return [drive_set.paths[i] / FORMAT_DIR for i in drive_set.online()]


def master_key_dirs(config: ServerConfig) -> list[Path]:
    """Where the master key file is kept: the data dir, or ``.tierstore/`` on every online drive."""
    if not config.drives:
        return [Path(config.data_dir)]
    drive_set = open_drive_set(config, format_new=False)
    return [drive_set.paths[i] / FORMAT_DIR for i in drive_set.online()]


def server_master_key(config: ServerConfig) -> MasterKey:
    """The master key of a started server: ``--master-key-file``'s, else the data dir's (drives')."""
    if config.master_key_file:
        return load_master_key_file(Path(config.master_key_file))[0]
    return load_master_key(master_key_dirs(config))


async def prepare_master_key(config: ServerConfig, catalog: Catalog, *, recorded_id: str = "") -> MasterKey:
    """At server start, before any worker: load the master key (``--master-key-file``'s, checked
    and never created), or create it in the data dir while the catalog holds no sealed secret (access
    key secrets, KMS key material, tier credentials; docs/identities.md) and records no key id
    (``recorded_id``: a shared catalog's, docs/scale-out.md). Then create the KMS keys the configuration names
    (``kms_create_keys``) unless they exist. ``ServeError`` when the key is missing or wrong, or a
    configured key id is not valid."""
    wanted = _configured_key_ids(config.kms_create_keys)
    dirs = [] if config.master_key_file else master_key_dirs(config)
    if not dirs and not config.master_key_file:
        raise ServeError("no drive is online to hold the master key")
    try:
        heads = [
            *await catalog.iam_sealed_key_ids(),
            *await catalog.kms_sealed_key_ids(),
            *await catalog.tier_sealed_key_ids(),
        ]
        sealed = {sealed_key_id(h) for h in heads}
        if config.master_key_file:
            key, warning = load_master_key_file(Path(config.master_key_file))
            if warning:
                log.warning("%s", warning)
            if sealed and key.key_id not in sealed:
                raise ServeError(
                    f"the master key file {config.master_key_file} (key id {key.key_id}) is not the key that "
                    f"sealed the catalog's secrets (key id {', '.join(sorted(sealed))})"
                )
            created = False
        elif recorded_id and not any((d / MASTER_KEY_FILE).exists() for d in dirs):
            raise ServeError(
                f"no master key in {dirs[0] / MASTER_KEY_FILE}: the catalog's is key id {recorded_id}; give this "
                "gateway the same key as the others (--master-key-file, or a copy of their master.key)"
            )
        else:
            key, created = load_or_create_master_key(dirs, sealed_key_ids=sealed)
    except (MasterKeyError, SealedSecretError) as exc:
        raise ServeError(str(exc)) from None
    if created:
        where = dirs[0] / MASTER_KEY_FILE if len(dirs) == 1 else f"{MASTER_KEY_FILE} on {len(dirs)} drives"
        log.info("master key %s created (%s): back it up with the catalog", key.key_id, where)
    keys = LocalKeyStore(catalog, key)
    for key_id in wanted:
        if await keys.ensure_key(key_id):
            log.info("KMS key %s created (--kms-create-keys)", key_id)
    return key


def _configured_key_ids(items: list[str]) -> list[str]:
    """The key ids of ``--kms-create-keys`` (comma- or space-separated); ``ServeError`` for a bad one."""
    wanted = [k for item in items for k in item.replace(",", " ").split()]
    for key_id in wanted:
        try:
            check_key_id(key_id)
        except ValueError as exc:
            raise ServeError(f"--kms-create-keys {key_id!r}: {exc}") from None
    return wanted


class ServeError(RuntimeError):
    """The server cannot start (port in use, store locked by another server): one line for the operator."""


@dataclass(slots=True)
class Claim:
    """What one server holds for its lifetime: its listening sockets (one per worker) and the
    store's lock files. Both die with the process (the kernel closes the sockets and drops the
    flocks, also on kill -9); the workers inherit them."""

    socks: list[socket.socket]
    lock_fds: dict[Path, int] = field(default_factory=dict)

    def release(self) -> None:
        for sock in self.socks:
            sock.close()
        for fd in self.lock_fds.values():
            os.close(fd)
        self.lock_fds.clear()


def _lock_file(path: Path, what: str) -> int:
    """An exclusive flock on ``path`` holding our pid; ServeError naming the holder if another has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ServeError(f"{what} is in use by another tierstore server (pid {holder}; lock {path})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _lock_store(config: ServerConfig, held: dict[Path, int]) -> None:
    """Lock the data dir, or every drive of the set whose directory exists (idempotent per path)."""
    if config.drives:
        targets = [(Path(d) / FORMAT_DIR, f"drive {d}") for d in config.drives if Path(d).is_dir()]
    else:
        targets = [(Path(config.data_dir), f"data directory {config.data_dir}")]
    for directory, what in targets:
        directory.mkdir(parents=True, exist_ok=True)
        path = (directory / LOCK_FILE).resolve()
        if path not in held:
            held[path] = _lock_file(path, what)


def _bind(host: str, port: int, count: int, backlog: int = 1024) -> list[socket.socket]:
    """``count`` listening sockets on the port, one per worker (SO_REUSEPORT: the kernel spreads
    connections evenly over them), after checking that nothing else listens there.

    SO_REUSEPORT alone would let a second server join the group and take a share of the traffic.
    So first a socket without it must bind: that fails while any socket listens on the port. A
    lock file held from that check until our sockets listen keeps two starting servers from both
    passing it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lock_path = Path(tempfile.gettempdir()) / f"tierstore-port-{host.replace(':', '_')}-{port}.lock"
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    socks: list[socket.socket] = []
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no server
            probe.bind((host, port))
        for _ in range(max(1, count)):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in socks:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"port {host}:{port} is in use") from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        os.close(lock_fd)
    return socks


def check_console(config: ServerConfig) -> None:
    """``ServeError`` when the console's OIDC sign-in options do not fit together (before serving)."""
    if config.console and config.console_oidc_issuer:
        problem = config_problem(config.console_oidc_issuer, config.console_oidc_client_id, config.console_oidc_role)
        if problem:
            raise ServeError(problem)


def check_audit_log(config: ServerConfig) -> None:
    """Open (create, mode 0600) the audit log once before any worker starts: a path that cannot be
    written is one line for the operator at start, not a crash in every worker."""
    try:
        audit_log = _open_audit_log(config)
    except OSError as exc:
        raise ServeError(f"cannot open the audit log {config.audit_log}: {exc.strerror}") from None
    if audit_log is not None:
        audit_log.close()


def _open_audit_log(config: ServerConfig) -> AuditLog | None:
    if not config.audit_log:
        return None
    return AuditLog(config.audit_log, max_bytes=config.audit_log_max_bytes, backups=config.audit_log_backups)


def lock_store(config: ServerConfig) -> Claim:
    """Only the store's locks, no port (``tierstore admin migrate``): ServeError while a server
    runs on it; ``release()`` them."""
    return Claim([], _held_locks(config))


def _held_locks(config: ServerConfig) -> dict[Path, int]:
    held: dict[Path, int] = {}
    try:
        _lock_store(config, held)
    except BaseException:
        for fd in held.values():
            os.close(fd)
        raise
    return held


def claim_store_and_port(config: ServerConfig) -> Claim:
    """Lock the store, then bind the port: the first things a server does, so that a second server
    on the same data or port fails at once, before it generates credentials or opens a catalog."""
    claim = lock_store(config)
    try:
        claim.socks = _bind(config.host, config.port, config.workers)
    except BaseException:
        claim.release()
        raise
    return claim


def _raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection is a file descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _scrub_lock(key: str) -> int | None:
    """Only one process per store runs the scrubber: the one that holds this lock (never released)."""
    path = Path(tempfile.gettempdir()) / f"tierstore-scrub-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def postgres_catalog(config: ServerConfig) -> PostgresCatalog:
    """The configured PostgreSQL catalog, not connected yet: ``start_postgres`` opens it in the
    event loop that will use it (an asyncpg pool is bound to its loop: each worker opens its own)."""
    try:
        from tierstore.catalog.postgres import PostgresCatalog
    except ImportError:
        raise ServeError("--catalog postgresql://... needs its driver: pip install 'tierstore[postgres]'") from None
    return PostgresCatalog(config.catalog, pool_size=config.catalog_pool, checkout_timeout_s=config.catalog_timeout_s)


async def start_postgres(catalog: PostgresCatalog, timeout_s: float) -> None:
    """Migrate (under the advisory lock) and open ``catalog``'s pool. PostgreSQL unreachable: a log
    line, and again until ``timeout_s`` has passed, then ``ServeError``; wrong settings (no such
    database, refused login, a schema newer than this code): ``ServeError`` at once. Neither
    message holds the URL's password."""

    async def attempt() -> None:
        try:
            await catalog.start()
        except SlowDown:
            raise
        except TierstoreError as exc:
            raise ServeError(f"cannot open the catalog {catalog.shown_dsn}: {_catalog_cause(exc)}") from None

    await _retry_while_down(attempt, SlowDown, f"the catalog {catalog.shown_dsn}", timeout_s)


async def _retry_while_down(
    attempt: Callable[[], Awaitable[None]], down: type[Exception], what: str, timeout_s: float
) -> None:
    """``await attempt()`` until it returns. While it raises ``down``: a log line, and again
    (backing off to 5 s) until ``timeout_s`` has passed, then ``ServeError``."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.5
    while True:
        try:
            await attempt()
            return
        except down:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise ServeError(f"{what} is unreachable: gave up after {timeout_s:g}s") from None
            log.warning("%s is unreachable; retrying for %.0f s more", what, left_s)
            await asyncio.sleep(min(delay_s, left_s))
            delay_s = min(delay_s * 2, 5.0)


async def _claim_blob_store(config: ServerConfig, pg: PostgresCatalog) -> None:
    """Record where the catalog's blobs live at its first start; ``ServeError`` (one line) for a
    gateway started with another store (or none) against it: its blobs would not be where the
    catalog's versions say. The endpoint is not compared: each host may reach one store its own way."""
    mine = parse_store_url(config.store).location if config.store else ""
    recorded = await pg.claim_blob_store(mine)
    if recorded != mine:
        theirs = f"in the store {recorded}" if recorded else "on its first gateway's local drives (no --store)"
        this = f"--store {mine}" if mine else "no --store"
        raise ServeError(f"the catalog {pg.shown_dsn} keeps its blobs {theirs}; this gateway has {this}")


async def _claim_master_key(config: ServerConfig, pg: PostgresCatalog, key: MasterKey) -> None:
    """Record the master key's id (a hash of it, never the key) at the catalog's first start;
    ``ServeError`` (one line) for a gateway with another key: it could open none of the secrets
    the others seal (access keys, KMS keys, tier credentials), even before any exists."""
    recorded = await pg.claim_master_key(key.key_id)
    if recorded != key.key_id:
        where = config.master_key_file or master_key_dirs(config)[0] / MASTER_KEY_FILE
        raise ServeError(
            f"this gateway's master key ({where}, key id {key.key_id}) is not the catalog's (key id {recorded}): "
            "give every gateway the same key (--master-key-file)"
        )


def _check_store_apart(config: ServerConfig) -> None:
    """``start_store`` in a spawned process: obstore's runtime (Rust threads) does not survive a
    fork, so the main process, which forks the granian workers, must never start it itself."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        error = pool.submit(_check_store_main, json.dumps(asdict(config))).result()
    if error is not None:
        raise ServeError(error)


def _check_store_main(config_json: str) -> str | None:
    """The spawned process of ``_check_store_apart``: what went wrong, or None."""
    config = ServerConfig(**json.loads(config_json))
    _configure_logging(config.log_level)
    try:
        asyncio.run(start_store(_object_store(config), config.catalog_start_timeout_s))
    except ServeError as exc:
        return str(exc)
    return None


async def start_store(store: S3BlobStore, timeout_s: float) -> None:
    """Check that the store answers and lets us in (``S3BlobStore.check``). Unreachable: a log
    line, and again until ``timeout_s`` has passed, then ``ServeError``; a refusal (no such bucket,
    bad keys): ``ServeError`` at once. Neither message holds the store's secret key."""
    where = f"the store {store.config.endpoint} bucket {store.config.bucket}"

    async def attempt() -> None:
        try:
            await store.check()
        except StoreRefused as exc:
            raise ServeError(f"cannot use the store: {exc}") from None

    await _retry_while_down(attempt, TierstoreError, where, timeout_s)
    log.info("%s (prefix %r) answers", where, store.config.prefix)


def _catalog_cause(exc: TierstoreError) -> str:
    """What PostgreSQL said (its message never holds the client's password), else the error's text."""
    cause = exc.__cause__ or exc.__context__  # connect errors are raised ``from None``: their context
    text = getattr(cause, "message", None) if cause is not None else None
    if isinstance(text, str) and type(cause).__module__.startswith("asyncpg"):
        return f"{text} ({type(cause).__name__})"
    return str(exc)


def _stores(config: ServerConfig) -> tuple[Catalog, BlobStore, Repairer, str, DiskReserve, PostgresCatalog | None]:
    """The catalog, blob store and repairer of the configured store, a key naming it, the space
    reserve next to its catalog (or next to the blobs, with the catalog in PostgreSQL), and the
    PostgreSQL catalog (not connected yet) when the configuration names one."""
    blobs: BlobStore
    pg = postgres_catalog(config) if config.catalog else None
    # PostgresCatalog is the protocol's CatalogOperations (mypy checks it in catalog/_protocol.py);
    # its close() is a coroutine (the pool lives in the event loop) that build_app's shutdown
    # awaits, so it is not Catalog's synchronous close(), which the engine's types ask for.
    shared = cast("Catalog", pg) if pg is not None else None
    if config.drives:
        drive_set = open_drive_set(config, format_new=False)
        catalog = shared or SqliteCatalog.on_drives(drive_set)
        blobs = ErasureBlobStore(drive_set)
        repairer = Repairer(catalog, blobs, drives=drive_set, meta_files=(CREDENTIALS_FILE, MASTER_KEY_FILE))
        store_key = drive_set.format.set_id
        reserve_dirs = [drive_set.paths[i] / FORMAT_DIR for i in drive_set.online()]
    elif config.store:  # the blobs in the object store; the data dir holds its read cache
        if shared is None:
            raise ServeError(STORE_WITHOUT_CATALOG)
        data = Path(config.data_dir)
        catalog = shared
        blobs = store_blobs(config)
        repairer = Repairer(catalog, blobs, meta_dirs=[data])
        store_key = parse_store_url(config.store).location
        reserve_dirs = []  # the catalog is PostgreSQL's and the blobs the store's: no local delete needs room
    else:
        data = Path(config.data_dir)
        catalog = shared or SqliteCatalog(data / "catalog.db")
        blobs = LocalBlobStore(data)
        repairer = Repairer(catalog, blobs, meta_dirs=[data])
        store_key = str(data.resolve())
        reserve_dirs = [data]
    reserve = DiskReserve(reserve_dirs, _reserve_bytes(config, reserve_dirs))
    return catalog, blobs, repairer, store_key, reserve, pg


def _follow_parts(
    metrics: Metrics, pg: PostgresCatalog | None, blobs: BlobStore, leases: LeaseHolder
) -> None:
    """What this worker's parts count, into /metrics (docs/observability.md "Cluster"): the
    catalog pool and LISTEN connection (PostgreSQL), the leases it holds, the ``--store`` cache."""
    m = metrics
    m.follow(m.jobs_held, lambda: dict.fromkeys(leases.jobs_held, 1.0))
    m.follow(m.jobs_run, lambda: leases.jobs_run)
    if pg is not None:  # the pool and the listener exist once the worker started them: 0 until then

        def stat(name: str) -> Callable[[], float]:
            return lambda: float(getattr(pg.pool_stats, name, 0))

        for metric, name in ((m.pool_size, "size"), (m.pool_in_use, "in_use"), (m.pool_waits, "waits"),
                             (m.pool_wait_seconds, "wait_s"), (m.pool_timeouts, "timeouts"),
                             (m.pool_errors, "errors")):  # fmt: skip
            m.follow(metric, stat(name))
        m.follow(m.listen_up, lambda: float(pg.listener is not None and pg.listener.listening))
        m.follow(m.listen_reconnects, lambda: max(0, pg.listener.connects - 1) if pg.listener is not None else 0)
    if isinstance(blobs, CachedBlobStore):
        cached = blobs
        for metric, read in (
            (m.cache_bytes, lambda: cached.cached_bytes),
            (m.cache_bound, lambda: cached.cache_bytes),
            (m.cache_hits, lambda: cached.hits),
            (m.cache_misses, lambda: cached.store_gets),
            (m.cache_fills, lambda: cached.fills),
            (m.cache_evictions, lambda: cached.evictions),
            (m.store_errors, lambda: cached.store.unavailable),
        ):
            m.follow(metric, read)


STORE_WITHOUT_CATALOG = (
    "--store needs --catalog postgresql://...: an object store without a shared catalog is not a cluster"
)
STORE_WITH_DRIVES = "--store and --drives do not go together: the store keeps the blobs, --data holds its cache"
CACHE_DIR = "cache"  # the store's read cache, in the data dir
_MIN_CACHE_BYTES = 64 * 1024 * 1024


def store_blobs(config: ServerConfig) -> CachedBlobStore:
    """The standard tier of ``--store``: the object store, read through a bounded cache in the data
    dir (docs/scale-out.md "The store as the standard tier"). Connects at its first operation."""
    cache = LocalBlobStore(Path(config.data_dir) / CACHE_DIR, durable=False)  # its blobs live in the store
    return CachedBlobStore(_object_store(config), cache, cache_bytes=config.cache_bytes or default_cache_bytes(config))


def _object_store(config: ServerConfig) -> S3BlobStore:
    """``--store``'s bucket and prefix, with ``--store-access-key``/``--store-secret-key`` or, without
    them, the standard AWS credential chain (``AWS_ACCESS_KEY_ID``..., shared files, roles)."""
    url = parse_store_url(config.store)
    keys = (config.store_access_key, config.store_secret_key) if config.store_secret_key else (None, None)
    return S3BlobStore(url.config(*keys))


def default_cache_bytes(config: ServerConfig) -> int:
    """Half of what the data dir's filesystem has free now plus what the cache holds already
    (so a restart with a full cache keeps its bound), at least 64 MiB."""
    data = Path(config.data_dir)
    held = sum(_scan_files(data / CACHE_DIR / "blobs"))
    try:
        st = os.statvfs(data)
    except OSError:
        return _MIN_CACHE_BYTES
    return max(_MIN_CACHE_BYTES, (st.f_bavail * st.f_frsize + held) // 2)


def _scan_files(path: Path) -> list[int]:
    """The sizes of the files under ``path`` (none if it does not exist)."""
    sizes: list[int] = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                sizes.append(os.stat(os.path.join(root, name)).st_size)
    return sizes


def _reserve_bytes(config: ServerConfig, dirs: list[Path]) -> int:
    """The configured reserve, at most 1/16 of the smallest filesystem holding a catalog."""
    size = config.disk_reserve_bytes
    for d in dirs:
        with contextlib.suppress(OSError):
            st = os.statvfs(d)
            size = min(size, st.f_blocks * st.f_frsize // 16)
    return max(0, size)


def _pass_failed(what: str, exc: Exception) -> None:
    """Log a background pass that raised: one line when the catalog or the store is unavailable
    (PostgreSQL restarting, the store down: the pass runs again at its next interval, and the
    outage is logged where it is seen), a traceback for anything else (a bug)."""
    if isinstance(exc, (SlowDown, TierUnavailable)):
        log.warning("%s pass failed: %s", what, exc)
    else:
        log.error("%s pass failed", what, exc_info=exc)


def _kill_at(wanted: str, step: str) -> None:
    if step == wanted:
        os.kill(os.getpid(), signal.SIGKILL)


def tier_store(cfg: TierConfig) -> RemoteBlobStore:
    """A tier's remote blob store (ObjectService's ``tier_store`` factory): an ``S3BlobStore``
    whose SSRF guard honours the tier's ``allow_private`` at each (re)connection."""
    store_cfg = S3StoreConfig(
        endpoint=cfg.endpoint,
        bucket=cfg.bucket,
        prefix=cfg.prefix,
        access_key=cfg.access_key_id if cfg.secret_key is not None else None,
        secret_key=cfg.secret_key,
        region=cfg.region,
    )
    return S3BlobStore(store_cfg, endpoint_guard=functools.partial(check_endpoint, allow_private=cfg.allow_private))


def open_service(config: ServerConfig) -> tuple[ObjectService, DatasetService]:
    """The engine of the configured store, embedded in the calling process (no HTTP): what
    ``tierstore.datasets.EmbeddedSource`` reads through. Close with ``service.catalog.close()``.
    Embedded access is the embedded catalog's: with the catalog in PostgreSQL, read through a server."""
    if config.catalog:
        raise ServeError("an embedded engine is not applicable on PostgreSQL: read through the server (HTTP)")
    catalog, blobs, _repairer, _key, _reserve, _pg = _stores(config)
    try:  # the key service, to read encrypted objects too; a store never served has no master key
        kms: LocalKeyStore | None = LocalKeyStore(catalog, server_master_key(config))
    except MasterKeyError:
        kms = None
    service = ObjectService(
        catalog,
        blobs,
        region=config.region,
        inline_max_bytes=config.inline_max_bytes,
        kms=kms,
        lifecycle_day_s=config.lifecycle_day_s,
        tier_store=tier_store,
    )
    return service, DatasetService(service)


def build_app(config: ServerConfig) -> S3App:
    """Wire one process's stores, service and app. With the catalog in PostgreSQL, every engine
    object gets the one catalog now and ``on_startup`` opens it, in the worker's event loop."""
    catalog, blobs, repairer, store_key, reserve, pg = _stores(config)
    master_key = server_master_key(config)
    kms = LocalKeyStore(catalog, master_key)  # the built-in key service (docs/security.md "Key service")
    repairer.kms = kms  # heal --verify-encryption opens the data keys of SSE-S3/SSE-KMS objects
    service = ObjectService(
        catalog,
        blobs,
        region=config.region,
        inline_max_bytes=config.inline_max_bytes,
        reserve=reserve,
        kms=kms,
        lifecycle_day_s=config.lifecycle_day_s,
        tier_store=tier_store,
    )
    service.tiers = TierService(catalog, master_key)  # tier credentials are sealed under it (docs/tiers.md)
    kill_at = os.environ.get(_MOVER_KILL_ENV)  # tests only: kill -9 this worker at that step of a transition
    if kill_at:
        service.mover.fault = functools.partial(_kill_at, kill_at)
    kill_at = os.environ.get(_HOT_KILL_ENV)  # tests only: kill -9 this worker after a hot copy lands
    if kill_at:
        service.hot.fault = functools.partial(_kill_at, kill_at)
    kill_at = os.environ.get(_LEASE_KILL_ENV)  # tests only: kill -9 this worker once a claim took rows
    if kill_at:
        service.leases.fault = functools.partial(_kill_at, kill_at)
    # This worker in the gateway registry: its id owns every lease it takes (engine/_leases.py).
    service.leases.lease_s = config.lease_s
    gateway = Gateway(catalog, service.leases)
    # Jobs over the blobs are per store: --store's is shared by every gateway; a local data dir or
    # drive set is this host's alone.
    scope = store_key if config.store else f"{socket.gethostname()}:{store_key}"

    async def live_gateways() -> list[dict[str, Any]]:
        seen_after_ns = time.time_ns() - service.leases.lease_ns
        return [asdict(g) for g in await catalog.gateway_list(seen_after_ns)]

    repairer.gateways = live_gateways
    keys = {config.access_key: config.secret_key, **config.extra_keys}
    identities = IdentityService(catalog, master_key, root_keys=keys, validate_policy=validate_policy)
    sts = StsService(identities, master_key)  # temporary credentials: stateless, sealed tokens
    oidc = OidcVerifier(identities.list_oidc_providers, account=sts.account)
    authenticator = IdentityAuthenticator(identities, region=config.region, session_secret=sts.secret_for_token)
    watch = ConfigWatch()  # the config caches: 1 s on SQLite, until notified on PostgreSQL (tierstore/_watch.py)
    for cache in (service.bucket_access.watch_with, service.tiers.watch_with, service.tier_stores.watch_with,
                  kms.watch_with, identities.watch_with, sts.watch_with):  # fmt: skip
        cache(watch)
    tasks: list[asyncio.Task[None]] = []

    started_s = time.time()

    async def sweep_orphans() -> None:
        report = await service.sweep_orphans(grace_s=config.gc_grace_s)
        log.debug("orphan sweep: %s", report)

    def sweep_tier(name: str) -> Callable[[], Awaitable[None]]:
        async def sweep() -> None:
            await service.mover.sweep_remote_orphans(name, grace_s=config.gc_grace_s)

        return sweep

    async def gc_loop() -> None:
        """Drain the trash (leased rows); then the orphan sweeps that are due: the store's and each
        tier's, leased jobs (one worker of one gateway at a time) run at a start and every
        --orphan-sweep-interval; a sweeper that dies leaves its job to the next worker."""
        while True:
            try:
                await service.drain_trash()
                sweeps: list[tuple[str, Callable[[], Awaitable[None]]]] = [(f"gc-orphans:{scope}", sweep_orphans)]
                sweeps += [(f"tier-orphans:{n}", sweep_tier(n)) for n in await service.tiers.class_names()]
                every_s = config.orphan_sweep_interval_s
                for name, sweep in sweeps:
                    try:
                        await periodic_job(catalog, service.leases, name, sweep, every_s, started_s)
                    except Exception as exc:  # a tier down: its job stays due, tried at the next pass
                        log.warning("%s: orphan sweep failed: %s", name, exc)
                reserve.restore()
            except Exception as exc:
                _pass_failed("GC", exc)
            await asyncio.sleep(config.gc_interval_s)

    async def scrub_leased() -> None:
        """With the catalog in PostgreSQL the scrub is a leased job (``jobs``), not a flock: the
        holder saves its cursor after each page, so if it dies another worker or gateway resumes
        there once the lease runs out; a finished pass leaves "done:<time>" for the next one."""
        name = f"scrub:{scope}"
        job = await catalog.job_get(name)
        now_s = time.time()
        if job is not None and job.owner is not None and job.lease_until_ns >= time.time_ns():
            return  # running elsewhere
        done = job is not None and job.cursor.startswith("done:")
        if done and job is not None and now_s < float(job.cursor[5:]) + config.scrub_interval_s:
            return
        if repairer.current is not None and repairer.current.state == "running":
            return  # a heal this process runs (tierstore heal)

        async def body(cursor: str, checkpoint: Checkpoint) -> str:
            if not cursor:  # the store's first start: the first pass an interval from now
                return f"done:{now_s}"
            p = await repairer.heal(
                kind="scrub",
                rate_bytes_s=config.scrub_rate_bytes_s,
                resume="" if cursor.startswith("done:") else cursor,
                checkpoint=checkpoint,
            )
            return f"done:{p.finished_s or time.time()}"  # failed: tried again an interval later, as before

        await run_job(catalog, service.leases, name, body)

    async def heal_loop() -> None:
        """Heal what reads and writes reported; in one process, also scrub everything now and then
        (on SQLite the one holding the store's scrub flock; on PostgreSQL the scrub job's lease).
        With --store the store's own redundancy is its business: no background scrub of it from
        every gateway (``tierstore heal`` still verifies every blob against it, on demand)."""
        scrubs = config.scrub_interval_s > 0 and not config.store
        scrubber = scrubs and pg is None and _scrub_lock(store_key) is not None
        last = repairer.last_report()
        next_scrub = (float(last["finished_s"] or 0) if last else time.time()) + config.scrub_interval_s
        while True:
            await asyncio.sleep(config.heal_queue_interval_s)
            try:
                await repairer.heal_queued()
                if pg is not None and scrubs:
                    await scrub_leased()
                elif scrubber and time.time() >= next_scrub:
                    if repairer.current is None or repairer.current.state != "running":
                        await repairer.heal(kind="scrub", rate_bytes_s=config.scrub_rate_bytes_s)
                    next_scrub = time.time() + config.scrub_interval_s
            except Exception as exc:
                _pass_failed("heal", exc)

    async def stale_uploads_loop() -> None:
        """Abort abandoned multipart uploads so their parts stop holding disk. Every worker runs
        it; the catalog hands each stale upload to one of them. Checked a few times per expiry
        period, at most hourly."""
        expiry_s = config.stale_uploads_expiry_s
        interval_s = min(3600.0, max(0.2, expiry_s / 4))
        while True:
            try:
                await service.abort_stale_uploads(older_than_s=expiry_s)
            except Exception as exc:
                _pass_failed("stale upload", exc)
            await asyncio.sleep(interval_s)

    # A claimed row is leased to this gateway for --lease-seconds (less under a short test day: 10
    # days, at least 10 s); a page's transitions heartbeat it; a worker that dies leaves it to another.
    lifecycle = LifecycleWorker(service, lease_s=min(config.lease_s, max(10.0, config.lifecycle_day_s * 10.0)))
    metrics = Metrics(os.environ.get(_METRICS_DIR_ENV))
    _follow_parts(metrics, pg, blobs, service.leases)

    async def lifecycle_loop() -> None:
        """Act on due lifecycle rows (docs/tiers.md "Lifecycle"). Every worker runs it; rows are
        claimed in catalog transactions. A few times per (shortened) day, at most every 5 s."""
        interval_s = min(5.0, max(0.25, config.lifecycle_day_s / 4))
        while True:
            try:
                before = dict(lifecycle.stats.actions)
                await lifecycle.run_once()
                metrics.lifecycle_acted(before, lifecycle.stats.actions)
            except Exception as exc:
                _pass_failed("lifecycle", exc)
            await asyncio.sleep(interval_s)

    async def tier_outbox_loop() -> None:
        """Delete remote objects no one references (docs/tiers.md "Deleting remote bytes"; the
        remote orphans a crash mid-transition left are gc_loop's periodic sweep). Then retry the
        writes in a tier's class that stayed local ("Writes to a tier class"). One indexed read
        each when nothing is due."""
        while True:
            try:
                await service.mover.drain_outbox()
                await service.retry_tier_writes()  # writes in a tier's class that stayed local
            except Exception as exc:
                _pass_failed("tier outbox", exc)
            await asyncio.sleep(TIER_OUTBOX_INTERVAL_S)

    datasets = DatasetService(service)
    if isinstance(blobs, CachedBlobStore):  # each gateway caches every live pin (engine/_gateway_pins.py)
        datasets.gateway_pins = GatewayPins(catalog, blobs, service.leases, datasets.gateway_blobs)

    async def hot_copies_loop() -> None:
        """Hot copies (docs/tiers.md "Hot copies"): drop expired holds and the copies no live hold
        needs, and make the copies of ongoing restores and pins (claimed with a lease, so a restart
        or another worker resumes them); with --store, then this gateway's cache of every pin."""
        last_pins = 0.0
        while True:
            try:
                await service.sweep_holds()
                pins = datasets.gateway_pins
                if pins is not None and time.monotonic() - last_pins >= GATEWAY_PINS_INTERVAL_S:
                    last_pins = time.monotonic()
                    await pins.run_once()
            except Exception as exc:
                _pass_failed("hot copy", exc)
            await asyncio.sleep(HOT_COPIES_INTERVAL_S)

    async def on_startup() -> None:
        if pg is not None:  # the parent migrated the schema: this opens the worker's own pool
            await start_postgres(pg, config.catalog_start_timeout_s)
            pg.listen(watch)
        try:
            await gateway.register()
        except Exception as exc:  # a full disk, PostgreSQL restarting: the heartbeat registers it later
            log.warning("gateway registration failed: %s", exc)
        loop = asyncio.get_running_loop()
        tasks.append(loop.create_task(gateway.run()))
        tasks.append(loop.create_task(tier_outbox_loop()))
        tasks.append(loop.create_task(hot_copies_loop()))
        tasks.append(loop.create_task(gc_loop()))
        tasks.append(loop.create_task(heal_loop()))
        tasks.append(loop.create_task(lifecycle_loop()))
        if config.stale_uploads_expiry_s > 0:
            tasks.append(loop.create_task(stale_uploads_loop()))

    async def on_shutdown() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # best effort: last-used times noted since the last write
            await identities.flush_last_used()
        with contextlib.suppress(Exception):  # best effort: else it drops out of the live list a lease later
            await gateway.forget()
        if pg is not None:
            await pg.close()
        else:
            catalog.close()

    app = S3App(
        service,
        authenticator,
        domain=config.domain,
        admin=repairer,
        datasets=datasets,
        models=ModelService(service),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        metrics=metrics,
        metrics_token=config.metrics_token,
        access_log=AccessLog.open(config.access_log_file or None) if config.access_log else None,
        audit_log=_open_audit_log(config),
        idle_timeout_s=config.idle_timeout_s,
        identities=identities,
        authorizer=IamAuthorizer(identities, buckets=service.bucket_access, objects=service, sts=sts),
        sts=sts,
        oidc=oidc,
        kms=kms,
        sse_c_over_http=config.sse_c_over_http,
    )
    if config.console:
        domain = config.domain.lower().strip(".") if config.domain else None
        oidc_sign_in = None
        if config.console_oidc_issuer:
            oidc_sign_in = OidcSignIn(
                master_key, issuer=config.console_oidc_issuer, client_id=config.console_oidc_client_id,
                role_arn=config.console_oidc_role, client_secret=config.console_oidc_client_secret,
                redirect_url=config.console_oidc_redirect_url, name=config.console_oidc_name,
            )  # fmt: skip
        signed_out = SignedOutSessions(catalog)
        signed_out.watch_with(watch)
        # acts only by calling app (docs/console.md)
        console = ConsoleApp(app, master_key, region=config.region, oidc=oidc_sign_in, signed_out=signed_out)
        app.mount(functools.partial(is_console_request, domain=domain), console)
    return app


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )


def _die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to kill this worker if the server's main process (``parent``) dies (Linux).

    Without it, a SIGKILLed main process leaves its workers serving the port (SO_REUSEPORT):
    a restarted server would share the port with stale workers of the dead one. ``serve`` runs
    this in each worker right after the fork (the main process may die while a worker still
    imports the app); ``app_factory`` again, for other hosts."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid() if parent is None else parent
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class _HangUpFilter(logging.Filter):
    """granian logs every response chunk sent after the client hung up ('ASGI transport error:
    "Closed(..)"') at INFO, from inside the refused send() call. A client that leaves
    mid-download is not an error: the line is dropped, and the app is told, so the streaming
    response stops reading the object at once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(('ASGI transport error: "Closed', "ASGI transport error: SendError")):
            note_send_failure()
            log.debug("client hung up mid-response")
            return False
        return True


# glibc malloc tuning for a server that allocates 64 KiB..1 MiB buffers per request (object
# bodies, blob pieces). By default such a buffer is mmap()ed, or carved from heap that free()
# soon trims back to the kernel, and requests keep faulting in new pages: 32 page faults per
# 128 KiB GET in-process, ~40% of its CPU. Buffers below 4 MiB now come from the heap, trimmed
# only when 128 MiB of it are free. Measured: in-process 128 KiB GETs 165 -> 104 us of CPU when
# the heap settles without faults (it depends on the heap's layout: some runs still fault);
# over HTTP, large_get 31 -> 24-28 ms of CPU per 64 MiB. What stays mapped is bounded by the
# peak of buffers in flight, not by object sizes (tests/test_memory.py).
_MALLOC_MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
_MALLOC_TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024


def tune_malloc() -> None:
    """Set the malloc thresholds above (glibc only; a no-op elsewhere). Workers call it at start."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (
        mallopt(m_mmap_threshold, _MALLOC_MMAP_THRESHOLD_BYTES)
        and mallopt(m_trim_threshold, _MALLOC_TRIM_THRESHOLD_BYTES)
    ):
        log.warning("mallopt() refused the malloc thresholds")


def app_factory() -> S3App:
    """Entry point for each granian worker process."""
    _die_with_parent()
    _close_other_listeners()
    tune_malloc()
    config = ServerConfig(**json.loads(os.environ[_ENV]))
    _configure_logging(config.log_level)
    hang_ups = _HangUpFilter()
    granian_log = logging.getLogger("_granian")  # its child loggers propagate to its handlers
    for handler in [*granian_log.handlers, *logging.getLogger().handlers]:
        handler.addFilter(hang_ups)
    app = build_app(config)
    # The modules, routes and settings live as long as the worker: out of the collector's sight, a
    # full collection walks what requests leave, not the ~70,000 objects of the startup (docs/benchmarks.md
    # "Issue 18: the 4 KiB PUT, session 12 part 2").
    gc.freeze()
    return app


def _metrics_dir() -> str:
    """A fresh private directory for the workers' metric files (prometheus_client's multiprocess
    mode), removed when the server exits. A stale one would add a previous run's counters."""
    path = tempfile.mkdtemp(prefix="tierstore-metrics-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def serve(config: ServerConfig, claim: Claim | None = None) -> None:
    """Run the HTTP server in the foreground until SIGINT/SIGTERM.

    At the signal the listening sockets close (new connections are refused), in-flight requests
    get ``shutdown_grace_s`` to finish, then workers still busy are killed. ``claim`` is what
    ``claim_store_and_port`` returned (taken here when not given)."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    _configure_logging(config.log_level)
    if claim is None:
        claim = claim_store_and_port(config)
    fd_limit = _raise_fd_limit()
    # Open the stores once in the parent: creates the schema and fails fast on a bad data dir;
    # on an erasure set, formats replacement drives and brings every catalog copy up to date
    # before any worker exists.
    if config.store and not config.catalog:
        raise ServeError(STORE_WITHOUT_CATALOG)
    if config.store and config.drives:
        raise ServeError(STORE_WITH_DRIVES)
    if config.store and not config.cache_bytes:  # chosen once here, so every worker has the same bound
        config = replace(config, cache_bytes=default_cache_bytes(config))
    if config.drives:
        drive_set = open_drive_set(config)
        _lock_store(config, claim.lock_fds)  # drives a brand-new set just created
        report: object
        if config.catalog:
            report = _prepare_postgres(config)
        else:
            report = SqliteCatalog.reconcile(drive_set)
            catalog = SqliteCatalog.on_drives(drive_set)
            try:
                asyncio.run(_start_sqlite(config, catalog))
            finally:
                catalog.close()
        fmt = drive_set.format
        for i, p in enumerate(drive_set.paths):
            log.info("drive %d: %s (%s)", i, p, drive_set.state(i).value)
        log.info(
            "erasure set %s: %d drives, %d data + %d parity shards, write quorum %d; catalog: %s",
            fmt.set_id,
            fmt.drives,
            fmt.data_shards,
            fmt.parity,
            fmt.write_quorum,
            report,
        )
        where = f"{fmt.drives} drives"
        reserve_dirs = [drive_set.paths[i] / FORMAT_DIR for i in drive_set.online()]
    else:
        data = Path(config.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        if config.catalog:
            log.info("catalog: %s", _prepare_postgres(config))
        else:
            catalog = SqliteCatalog(data / "catalog.db")
            try:
                asyncio.run(_start_sqlite(config, catalog))
            finally:
                catalog.close()
        if config.store:
            cache = f"{data.resolve() / CACHE_DIR}, at most {config.cache_bytes} bytes"
            where = f"{parse_store_url(config.store).location}, cached in {cache}"
            reserve_dirs = []
        else:
            LocalBlobStore(data)
            where = str(data.resolve())
            reserve_dirs = [data]
    reserve = DiskReserve(reserve_dirs, _reserve_bytes(config, reserve_dirs))
    reserve.restore()
    if reserve.released:
        log.warning("no room for the %d-byte disk reserve: deletes may fail on a full disk", reserve.size_bytes)
    os.environ[_ENV] = json.dumps(asdict(config))
    os.environ[_METRICS_DIR_ENV] = _metrics_dir()
    workers = max(1, config.workers)
    per_worker = max(1, config.max_connections // workers)
    if per_worker > fd_limit - 256:
        per_worker = max(1, fd_limit - 256)
        log.warning("max connections lowered to %d per worker: the open-files limit is %d", per_worker, fd_limit)
    log.info(
        "tierstore serving S3 at http://%s:%d (data: %s, workers: %d, connections: %d per worker)",
        config.host,
        config.port,
        where,
        workers,
        per_worker,
    )
    server = _granian_server(
        claim.socks,
        "tierstore.server:app_factory",
        address=config.host,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        loop=Loops.uvloop,
        # HTTP/1.1 only: the auto mode's protocol sniffing waits for a first byte without any timeout
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=max(1, round(config.header_timeout_s * 1000))),
        backpressure=per_worker,
        log_enabled=True,
        log_level=config.log_level,
        log_access=False,
        workers_kill_timeout=max(1, math.ceil(config.shutdown_grace_s)),
    )
    os.register_at_fork(after_in_child=functools.partial(_die_with_parent, os.getpid()))
    try:
        server.serve()
    finally:
        claim.release()


async def _start_sqlite(config: ServerConfig, catalog: SqliteCatalog) -> None:
    """The main process, before any worker, on the embedded catalog: the master key, and the
    leases a killed server left (it held the store alone, so none of them has a live holder)."""
    await prepare_master_key(config, catalog)
    released = await catalog.release_dead_leases(time.time_ns())
    if released:
        log.info("catalog: %d leases of a previous run handed back", released)


def _prepare_postgres(config: ServerConfig) -> str:
    """In the server's main process, before any worker: wait for PostgreSQL (``start_postgres``),
    migrate its schema, prepare the master key against it; what to log about it."""

    async def prepare() -> str:
        pg = postgres_catalog(config)
        await start_postgres(pg, config.catalog_start_timeout_s)
        try:
            if config.store:  # before recording it: a store that never answered is not recorded
                await asyncio.to_thread(_check_store_apart, config)
            await _claim_blob_store(config, pg)
            key = await prepare_master_key(config, cast("Catalog", pg), recorded_id=await pg.master_key_id())
            await _claim_master_key(config, pg, key)
        finally:
            await pg.close()
        steps = f"{pg.migrated_steps} schema steps applied" if pg.migrated_steps else "schema current"
        return f"PostgreSQL {pg.shown_dsn} ({steps}; pool of {config.catalog_pool} per worker)"

    return asyncio.run(prepare())


def _bound_sockets_server() -> type[Any]:
    from granian._granian import SocketHolder
    from granian.server import Server

    class BoundSocketsServer(Server):  # type: ignore[misc,valid-type]
        """granian whose workers accept on the sockets bound by ``_bind`` (worker i on socket i)
        instead of binding their own."""

        def __init__(self, socks: list[socket.socket], *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._tierstore_socks = socks

        def _init_shared_socket(self) -> None:
            self._ssp = None
            self._sso = None
            os.environ[_LISTEN_FDS_ENV] = ",".join(str(s.fileno()) for s in self._tierstore_socks)

        def _spawn_worker(self, idx: int, target: Any, callback_loader: Any) -> Any:
            sock = self._tierstore_socks[idx % len(self._tierstore_socks)]
            self._sfd = sock.fileno()
            self._shd = SocketHolder(self._sfd, False, 1024)  # type: ignore[call-arg]  # (fd, uds, backlog)
            os.environ[_LISTEN_FD_ENV] = str(self._sfd)  # the worker is forked right after: its own socket
            return super()._spawn_worker(idx, target, callback_loader)

        def _drop_shared_socket(self) -> None:
            # At shutdown, before the workers are told to stop: they close theirs as they stop
            # accepting. (No shutdown(): it would fail their accept loops, which then never end.)
            for sock in self._tierstore_socks:
                sock.close()

    return BoundSocketsServer


def _close_other_listeners() -> None:
    """In a worker: close the inherited sockets of the other workers, so that each socket closes
    as soon as its own worker stops accepting (new connections are then refused, not queued)."""
    own = os.environ.get(_LISTEN_FD_ENV)
    for fd in os.environ.get(_LISTEN_FDS_ENV, "").split(","):
        if fd and fd != own:
            with contextlib.suppress(OSError):
                os.close(int(fd))


def _granian_server(socks: list[socket.socket], target: str, **kwargs: Any) -> Any:
    return _bound_sockets_server()(socks, target, **kwargs)
