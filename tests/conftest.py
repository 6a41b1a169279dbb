"""Fixtures: a real tierstore server process on a free 127.0.0.1 port, and real clients."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, settings

from tests.ports import free_port
from tests.postgres import PostgreSQL
from tests.seaweed import SeaweedFS
from tierstore.client import TierstoreClient, resolve_settings

ACCESS_KEY = "TESTACCESSKEY0000001"
SECRET_KEY = "testsecretkey/0000000000000000000000000"
REPO = Path(__file__).resolve().parent.parent


# Hypothesis' deadline and its too-slow health check are timings: with ./dev test's 3 pytest
# processes on 2 cores they fail for the machine's load, not for a bug (no timed assertions).
settings.register_profile("tierstore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tierstore")


# The longest test files, started first: ./dev test hands whole files to 3 pytest processes in
# collection order (--no-loadscope-reorder: xdist's default order is by test count), so a long
# file collected last would run alone at the end (measured with --durations; the order changes
# how long the suite takes, never what a test sees).
LONG_FILES = (
    "test_crash.py",
    "console/test_browse_large.py",
    "torch/test_checkpoints.py",
    "test_docs.py",
    "api/test_tier_data.py",
    "api/test_mover.py",
    "cli/test_client_commands.py",
    "api/test_versions_state.py",
    "test_crash_sse.py",
    "test_memory.py",
    "api/test_restore.py",
    "api/test_dataset_tiers.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent

    def rank(item: pytest.Item) -> int:
        rel = item.path.relative_to(tests_dir).as_posix() if item.path.is_relative_to(tests_dir) else ""
        return LONG_FILES.index(rel) if rel in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


class ServerProcess:
    """``tierstore serve`` in a subprocess. Restartable on the same data dir and port."""

    def __init__(self, data_dir: Path, *, extra_args: list[str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.store: tuple[SeaweedFS, str] | None = None  # (service, bucket) of its --store, if it has one
        self.postgres: tuple[PostgreSQL, str] | None = None  # (cluster, database) of its --catalog, if on one

    def catalog_sql(self, sql: str) -> list[tuple[str, ...]]:
        """Run ``sql`` (a statement both dialects read alike) on this server's catalog from outside
        the server, as a test that damages or inspects rows must: its rows, each value as text."""
        if self.postgres is not None:
            cluster, database = self.postgres
            return [tuple(line.split("|")) for line in cluster.psql(sql, database).splitlines() if line]
        conn = sqlite3.connect(self.data_dir / "catalog.db", timeout=30)
        try:
            with conn:
                return [tuple(str(v) for v in row) for row in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    def blob_ids(self) -> set[str]:
        """The ids of the blobs where this server keeps them: the objects under ``blobs/`` of its
        store's bucket (``--store``), else the files under its data dir's ``blobs/``."""
        if self.store is None:
            return {p.name for p in (self.data_dir / "blobs").glob("*/*/*") if p.is_file()}
        weed, bucket = self.store
        pages = weed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="blobs/")
        return {o["Key"].removeprefix("blobs/") for page in pages for o in page.get("Contents", [])}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> None:
        env = dict(os.environ, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
        cmd = [
            sys.executable,
            "-m",
            "tierstore",
            "serve",
            "--data",
            str(self.data_dir),
            "--address",
            f"127.0.0.1:{self.port}",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        log.close()
        # Ready means the app answered a request (any S3 answer carries x-amz-request-id): right
        # after the port accepts, granian may still reset connections for a few milliseconds.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if self._answers():
                return
            time.sleep(0.02)
        raise RuntimeError(f"server did not start within {timeout_s}s:\n{self.log()}")

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            return resp.getheader("x-amz-request-id") is not None
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _descendants(self) -> list[int]:
        assert self.proc is not None
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        workers = self._descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The server's own session: whatever is left of it (nothing, unless it crashed) goes too,
        # and is waited for: a dying worker still holds its port and file locks for a moment.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")  # all of it: "not in" checks must see every line
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has released its ports and locks: not alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def admin_info(endpoint: str) -> dict[str, object]:
    """``tierstore admin info --json`` against ``endpoint`` (a subprocess, as a user runs it)."""
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTORE_")}
    env.update(TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
    out = subprocess.run(
        [sys.executable, "-m", "tierstore", "admin", "info", "--json", "--endpoint", endpoint],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def make_client(endpoint: str, *, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, **cfg: object):  # type: ignore[no-untyped-def]
    config = Config(
        signature_version=cfg.pop("signature_version", "s3v4"),
        s3={"addressing_style": cfg.pop("addressing_style", "path")},
        retries={"max_attempts": 1, "mode": "standard"},
        **cfg,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=config,
    )


# The two catalogs a server runs on (issue 18): the embedded SQLite, and PostgreSQL (docs/scale-out.md).
CATALOGS = ("sqlite", "postgres")
PG_SERVER_STORE_BUCKET = "tierstore-pg-server"  # pg_server's store: a bucket of the session SeaweedFS
# Test files marked ``pytestmark = pytest.mark.both_catalogs`` run each test that uses the shared
# server (``server``, ``s3``, ``client``, ``bucket``) twice, once per catalog: the end-to-end S3 API
# core and the core of every suite that stores something in the catalog (docs/scale-out.md "Test plan").
# The second configuration is the one users deploy: PostgreSQL and the object store (``pg_server``).
# A test there marked ``sqlite_catalog`` (it needs the data dir's catalog.db itself) runs on SQLite only;
# tests that touch catalog rows use ``ServerProcess.catalog_sql``, blobs ``ServerProcess.blob_ids``.


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both = metafunc.definition.get_closest_marker("both_catalogs")
    if "server" in metafunc.fixturenames and both and not metafunc.definition.get_closest_marker("sqlite_catalog"):
        metafunc.parametrize("server", CATALOGS, indirect=True, scope="module")


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The session's server on the embedded catalog (SQLite in its data dir)."""
    # SSE-C over plain HTTP: test_hostile and test_bucket_encryption send customer keys to it.
    srv = ServerProcess(tmp_path_factory.mktemp("srv") / "data", extra_args=["--sse-c-over-http"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pg_server(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgreSQL, seaweedfs: SeaweedFS
) -> Iterator[ServerProcess]:
    """The session's server in the scale-out configuration users deploy: its catalog in PostgreSQL
    (``--catalog``, a database of its own on the session's ``postgres``), its blobs in a bucket of
    the session's ``seaweedfs`` (``--store``; ``ServerProcess.blob_ids`` lists them), its data dir holding the
    read cache; otherwise configured as ``sqlite_server``."""
    dsn = postgres.create_database("pg_server")
    seaweedfs.client().create_bucket(Bucket=PG_SERVER_STORE_BUCKET)
    store = f"s3://{PG_SERVER_STORE_BUCKET}/blobs?endpoint={seaweedfs.endpoint}"
    args = ["--sse-c-over-http", "--catalog", dsn, "--store", store,
            "--store-access-key", seaweedfs.access_key, "--store-secret-key", seaweedfs.secret_key]  # fmt: skip
    srv = ServerProcess(tmp_path_factory.mktemp("pgsrv") / "data", extra_args=args)
    srv.store = (seaweedfs, PG_SERVER_STORE_BUCKET)
    srv.postgres = (postgres, "pg_server")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> ServerProcess:
    """The session's shared server: on SQLite, or per test file marked ``both_catalogs`` on each
    catalog in turn (``request.param``)."""
    catalog = getattr(request, "param", "sqlite")
    return request.getfixturevalue("pg_server" if catalog == "postgres" else "sqlite_server")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def s3(server: ServerProcess):  # type: ignore[no-untyped-def]
    return make_client(server.endpoint)


@pytest.fixture
def bucket(s3) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    with contextlib.suppress(Exception):
        # Every version and delete marker, so buckets that turned versioning on go too.
        # (Versions under object lock stay: such tests use buckets of their own.)
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            objs = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in items]
            if objs:
                s3.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True})
        s3.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real SeaweedFS on 127.0.0.1 (tests/seaweed.py), shared by the session: the remote tier's
    peer. ``.endpoint``, ``.access_key``, ``.secret_key``, ``.client()`` (boto3); stopped by PID."""
    weed = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    weed.start()
    yield weed
    weed.stop()


@pytest.fixture(scope="module")
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A seeded generator per test module; the seed is printed, ``TIERSTORE_TEST_SEED`` replays it."""
    seed = int(os.environ.get("TIERSTORE_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"{request.module.__name__} seed: {seed} (replay: TIERSTORE_TEST_SEED={seed})")
    return random.Random(seed)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> TierstoreClient:
    """The extensions client (``/_tierstore/``) of the session server."""
    return TierstoreClient(resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for restart and kill tests."""
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop()


def aws_cli() -> str:
    path = os.environ.get("TIERSTORE_AWS_CLI") or shutil.which("aws")
    if not path:
        pytest.fail("the aws cli is not installed: run the tests through ./dev test")
    return path


def serve_once(data_dir: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``tierstore serve`` on ``data_dir`` expected to refuse to start: its exit status and output."""
    env = dict(os.environ, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
    cmd = [sys.executable, "-m", "tierstore", "serve", "--data", str(data_dir), "--address", f"127.0.0.1:{free_port()}"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout_s, check=False
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgreSQL]:
    """A real PostgreSQL on 127.0.0.1 (tests/postgres.py), shared by the session and started only
    when a test asks for it: the scale-out catalog's peer. ``.dsn(db)``, ``.create_database(name)``
    (one per module keeps modules apart), ``.psql(sql)``, ``.stop()``/``.start()`` (same port)."""
    pg = PostgreSQL()
    pg.start()
    yield pg
    pg.cleanup()


@dataclass
class Gateways:
    """Two ``tierstore serve`` gateways (A and B) with the same settings: one PostgreSQL database,
    one SeaweedFS bucket as the store (``--store``), each its own data dir (its read cache)."""

    a: ServerProcess
    b: ServerProcess
    dsn: str
    weed: SeaweedFS
    store_bucket: str
    config_file: Path  # the settings both run with (the store's secret key is in it, mode 0600)

    @property
    def both(self) -> tuple[ServerProcess, ServerProcess]:
        return self.a, self.b


def start_gateways(
    root: Path, dsn: str, weed: SeaweedFS, store_bucket: str, *, extra_args: tuple[str, ...] = ()
) -> Gateways:
    """Gateways A and B over ``dsn`` and the SeaweedFS bucket ``store_bucket`` (created here),
    one config file, a data dir each under ``root``, one worker each, ``extra_args`` for both. A
    starts first (it migrates the schema and creates the master key and the KMS key
    ``testkey-1``); B gets A's master key, as every gateway of a deployment must."""
    weed.client().create_bucket(Bucket=store_bucket)
    config_file = root / "gateway.toml"
    config_file.write_text(
        f'catalog = "{dsn}"\n'
        f'store = "s3://{store_bucket}/blobs?endpoint={weed.endpoint}"\n'
        f'store-access-key = "{weed.access_key}"\n'
        f'store-secret-key = "{weed.secret_key}"\n'
        "workers = 1\n"
        'kms-create-keys = ["testkey-1"]\n'
    )
    config_file.chmod(0o600)
    args = ["--config", str(config_file), *extra_args]
    a = ServerProcess(root / "a", extra_args=args)
    b = ServerProcess(root / "b", extra_args=args)
    a.start(timeout_s=120)
    try:
        (root / "b").mkdir()
        shutil.copy2(root / "a" / "master.key", root / "b" / "master.key")
        b.start(timeout_s=120)
    except BaseException:
        a.stop()
        raise
    return Gateways(a, b, dsn, weed, store_bucket, config_file)


def stop_gateways(gw: Gateways) -> None:
    for srv in gw.both:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop()


@pytest.fixture(scope="session")
def two_gateways(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgreSQL, seaweedfs: SeaweedFS
) -> Iterator[Gateways]:
    """Two gateways over one PostgreSQL database and one SeaweedFS bucket (docs/scale-out.md "Test
    plan", ``start_gateways``), started once per session by the tests that ask."""
    gw = start_gateways(tmp_path_factory.mktemp("gateways"), postgres.create_database("two_gateways"),
                        seaweedfs, "tierstore-gateways")  # fmt: skip
    yield gw
    stop_gateways(gw)
