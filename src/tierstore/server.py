"""Composition root: configuration -> stores -> service -> ASGI app -> HTTP server.

This is the only module that chooses implementations (DESIGN.md). ``serve`` runs granian;
each worker process calls ``app_factory``, which reads the configuration that ``serve``
put into the environment and builds its own catalog connection and blob store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import string
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tierstore.api import Authenticator, S3App, note_send_failure
from tierstore.blob import BlobStore, ErasureBlobStore, LocalBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.drives import (
    DEFAULT_SMALL_OBJECT_BYTES,
    DEFAULT_STRIPE_BYTES,
    FORMAT_DIR,
    DriveSet,
    write_file_durably,
)
from tierstore.engine import DEFAULT_INLINE_MAX_BYTES, DatasetService, ModelService, ObjectService, Repairer

__all__ = [
    "ServerConfig",
    "app_factory",
    "build_app",
    "credential_dirs",
    "load_or_create_credentials",
    "open_drive_set",
    "open_service",
    "serve",
    "tune_malloc",
]

log = logging.getLogger("tierstore.server")
_ENV = "TIERSTORE_SERVE_CONFIG"
CREDENTIALS_FILE = "credentials.json"


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
    access_log: bool = False
    extra_keys: dict[str, str] = field(default_factory=dict)
    # An erasure set (``--drives``): data_dir is then unused.
    drives: list[str] = field(default_factory=list)
    parity: int | None = None
    stripe_bytes: int = DEFAULT_STRIPE_BYTES
    small_object_bytes: int = DEFAULT_SMALL_OBJECT_BYTES
    scrub_interval_s: float = 86_400.0  # a scrub pass starts this long after the last one ended; 0: never
    scrub_rate_bytes_s: float = 64e6  # the scrubber's read budget
    heal_queue_interval_s: float = 2.0  # how often blobs reported by reads and writes are healed
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES  # bodies up to this size live in the catalog; 0: never
    stale_uploads_expiry_s: float = 7 * 86_400.0  # multipart uploads older than this are aborted; 0: never


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


def _stores(config: ServerConfig) -> tuple[SqliteCatalog, BlobStore, Repairer, str]:
    """The catalog, blob store and repairer of the configured store, and a key naming it."""
    blobs: BlobStore
    if config.drives:
        drive_set = open_drive_set(config, format_new=False)
        catalog = SqliteCatalog.on_drives(drive_set)
        blobs = ErasureBlobStore(drive_set)
        repairer = Repairer(catalog, blobs, drives=drive_set, meta_files=(CREDENTIALS_FILE,))
        store_key = drive_set.format.set_id
    else:
        data = Path(config.data_dir)
        catalog = SqliteCatalog(data / "catalog.db")
        blobs = LocalBlobStore(data)
        repairer = Repairer(catalog, blobs, meta_dirs=[data])
        store_key = str(data.resolve())
    return catalog, blobs, repairer, store_key


def open_service(config: ServerConfig) -> tuple[ObjectService, DatasetService]:
    """The engine of the configured store, embedded in the calling process (no HTTP): what
    ``tierstore.datasets.EmbeddedSource`` reads through. Close with ``service.catalog.close()``."""
    catalog, blobs, _repairer, _key = _stores(config)
    service = ObjectService(catalog, blobs, region=config.region, inline_max_bytes=config.inline_max_bytes)
    return service, DatasetService(service)


def build_app(config: ServerConfig) -> S3App:
    """Wire one process's stores, service and app."""
    catalog, blobs, repairer, store_key = _stores(config)
    service = ObjectService(catalog, blobs, region=config.region, inline_max_bytes=config.inline_max_bytes)
    keys = {config.access_key: config.secret_key, **config.extra_keys}
    authenticator = Authenticator(keys.get, region=config.region)
    tasks: list[asyncio.Task[None]] = []

    async def gc_loop() -> None:
        first = True
        while True:
            try:
                if first:
                    report = await service.collect_garbage(grace_s=config.gc_grace_s)
                    log.debug("startup GC: %s", report)
                    first = False
                else:
                    await service.drain_trash()
            except Exception:
                log.exception("GC pass failed")
            await asyncio.sleep(config.gc_interval_s)

    async def heal_loop() -> None:
        """Heal what reads and writes reported; in one process, also scrub everything now and then."""
        scrubber = config.scrub_interval_s > 0 and _scrub_lock(store_key) is not None
        last = repairer.last_report()
        next_scrub = (float(last["finished_s"] or 0) if last else time.time()) + config.scrub_interval_s
        while True:
            await asyncio.sleep(config.heal_queue_interval_s)
            try:
                await repairer.heal_queued()
                if scrubber and time.time() >= next_scrub:
                    if repairer.current is None or repairer.current.state != "running":
                        await repairer.heal(kind="scrub", rate_bytes_s=config.scrub_rate_bytes_s)
                    next_scrub = time.time() + config.scrub_interval_s
            except Exception:
                log.exception("heal pass failed")

    async def stale_uploads_loop() -> None:
        """Abort abandoned multipart uploads so their parts stop holding disk. Every worker runs
        it; the catalog hands each stale upload to one of them. Checked a few times per expiry
        period, at most hourly."""
        expiry_s = config.stale_uploads_expiry_s
        interval_s = min(3600.0, max(0.2, expiry_s / 4))
        while True:
            try:
                await service.abort_stale_uploads(older_than_s=expiry_s)
            except Exception:
                log.exception("stale upload pass failed")
            await asyncio.sleep(interval_s)

    async def on_startup() -> None:
        loop = asyncio.get_running_loop()
        tasks.append(loop.create_task(gc_loop()))
        tasks.append(loop.create_task(heal_loop()))
        if config.stale_uploads_expiry_s > 0:
            tasks.append(loop.create_task(stale_uploads_loop()))

    async def on_shutdown() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        catalog.close()

    return S3App(
        service,
        authenticator,
        domain=config.domain,
        admin=repairer,
        datasets=DatasetService(service),
        models=ModelService(service),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )


def _die_with_parent() -> None:
    """Ask the kernel to kill this worker if the server's main process dies (Linux).

    Without it, a SIGKILLed main process leaves its workers serving the port (SO_REUSEPORT):
    a restarted server would share the port with stale workers of the dead one."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
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
    tune_malloc()
    config = ServerConfig(**json.loads(os.environ[_ENV]))
    _configure_logging(config.log_level)
    hang_ups = _HangUpFilter()
    granian_log = logging.getLogger("_granian")  # its child loggers propagate to its handlers
    for handler in [*granian_log.handlers, *logging.getLogger().handlers]:
        handler.addFilter(hang_ups)
    if not config.access_log:
        logging.getLogger("tierstore.access").setLevel(logging.WARNING)
    return build_app(config)


def serve(config: ServerConfig) -> None:
    """Run the HTTP server in the foreground until SIGINT/SIGTERM (granian drains in-flight requests)."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    _configure_logging(config.log_level)
    # Open the stores once in the parent: creates the schema and fails fast on a bad data dir;
    # on an erasure set, formats replacement drives and brings every catalog copy up to date
    # before any worker exists.
    if config.drives:
        drive_set = open_drive_set(config)
        report = SqliteCatalog.reconcile(drive_set)
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
    else:
        data = Path(config.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        SqliteCatalog(data / "catalog.db").close()
        LocalBlobStore(data)
        where = str(data.resolve())
    os.environ[_ENV] = json.dumps(asdict(config))
    log.info(
        "tierstore serving S3 at http://%s:%d (data: %s, workers: %d)",
        config.host,
        config.port,
        where,
        config.workers,
    )
    Granian(
        "tierstore.server:app_factory",
        address=config.host,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=config.workers,
        factory=True,
        loop=Loops.uvloop,
        log_enabled=True,
        log_level=config.log_level,  # type: ignore[arg-type]
        log_access=False,
        workers_kill_timeout=30,
    ).serve()
