"""Composition root: configuration -> stores -> service -> ASGI app -> HTTP server.

This is the only module that chooses implementations (DESIGN.md). ``serve`` runs granian;
each worker process calls ``app_factory``, which reads the configuration that ``serve``
put into the environment and builds its own catalog connection and blob store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import string
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tierstore.api import Authenticator, S3App
from tierstore.blob import LocalBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.engine import ObjectService

__all__ = ["ServerConfig", "app_factory", "build_app", "load_or_create_credentials", "serve"]

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


def _random_string(n: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def load_or_create_credentials(data_dir: Path) -> tuple[str, str, bool]:
    """The key pair kept in the data dir (mode 0600), created on first use. Returns (ak, sk, created)."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        doc = json.loads(path.read_text())
        return doc["access_key"], doc["secret_key"], False
    data_dir.mkdir(parents=True, exist_ok=True)
    ak = "TS" + _random_string(18, string.ascii_uppercase + string.digits)
    sk = _random_string(40, string.ascii_letters + string.digits)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"access_key": ak, "secret_key": sk}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path.with_suffix(".tmp"), path)
    return ak, sk, True


def build_app(config: ServerConfig) -> S3App:
    """Wire one process's stores, service and app."""
    data = Path(config.data_dir)
    catalog = SqliteCatalog(data / "catalog.db")
    blobs = LocalBlobStore(data)
    service = ObjectService(catalog, blobs, region=config.region)
    keys = {config.access_key: config.secret_key, **config.extra_keys}
    authenticator = Authenticator(keys.get, region=config.region)
    gc_task: asyncio.Task[None] | None = None

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

    async def on_startup() -> None:
        nonlocal gc_task
        gc_task = asyncio.get_running_loop().create_task(gc_loop())

    async def on_shutdown() -> None:
        if gc_task is not None:
            gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gc_task
        catalog.close()

    return S3App(service, authenticator, domain=config.domain, on_startup=on_startup, on_shutdown=on_shutdown)


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


def app_factory() -> S3App:
    """Entry point for each granian worker process."""
    _die_with_parent()
    config = ServerConfig(**json.loads(os.environ[_ENV]))
    _configure_logging(config.log_level)
    if not config.access_log:
        logging.getLogger("tierstore.access").setLevel(logging.WARNING)
    return build_app(config)


def serve(config: ServerConfig) -> None:
    """Run the HTTP server in the foreground until SIGINT/SIGTERM (granian drains in-flight requests)."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    _configure_logging(config.log_level)
    data = Path(config.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    # Open the stores once in the parent: creates the schema and fails fast on a bad data dir.
    SqliteCatalog(data / "catalog.db").close()
    LocalBlobStore(data)
    os.environ[_ENV] = json.dumps(asdict(config))
    log.info(
        "tierstore serving S3 at http://%s:%d (data: %s, workers: %d)",
        config.host,
        config.port,
        data.resolve(),
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
