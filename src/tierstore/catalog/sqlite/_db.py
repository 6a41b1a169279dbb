"""The embedded catalog's database: ``SqliteDb``, the base ``SqliteCatalog`` is composed on.

One database file in WAL mode with ``synchronous=FULL`` (or one copy per drive: ``_mirror.py``):
a transaction that returned is on disk. Writes run on one dedicated thread per process (``BEGIN
IMMEDIATE``, so several server processes sharing the file serialize through SQLite's lock and
``busy_timeout``); point reads and listings run inline on the caller's thread with their own
connection (WAL readers never block the writer and see only committed state).

Group commit: when the writer thread becomes free it takes every write job queued meanwhile
(at most ``max_batch``) and runs them in one transaction, each in its own savepoint, so one
WAL fsync (one fan-out commit on a mirror) acknowledges them all. A job that raises is rolled
back to its savepoint and fails alone; a failed COMMIT fails the whole batch. There is no
timer: an idle writer starts a lone job at once. Jobs that are not plain writes (open, close,
migrations, reseed) run alone, between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import queue
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Self, TypeVar

from tierstore.catalog.sqlite._mirror import (
    DEFAULT_RELPATH,
    MMAP_BYTES,
    CatalogMirror,
    Failed,
    ReconcileReport,
    run_jobs,
)
from tierstore.catalog.sqlite._schema import SCHEMA_VERSION, check_schema, init_schema, schema_version, upgrade
from tierstore.drives import DriveSet
from tierstore.errors import InsufficientStorage, InternalError

log = logging.getLogger("tierstore.catalog")

T = TypeVar("T")


def _translate(exc: sqlite3.Error) -> Exception:
    msg = str(exc).lower()
    if "disk is full" in msg or "database or disk is full" in msg:
        return InsufficientStorage("The catalog could not be written: the disk is full.")
    return InternalError("Catalog error.")


def _translated(exc: BaseException) -> BaseException:
    """What a writer's caller sees: sqlite errors become domain errors (a fresh one per caller)."""
    if isinstance(exc, sqlite3.Error):
        out = _translate(exc)
        out.__cause__ = exc
        return out
    return exc


class _Job:
    """One unit of work for the writer thread. A write job is ``fn(conn)`` run inside a batch
    transaction and answered through an asyncio future of its caller's ``loop``; an ``alone``
    job is ``fn()`` run by itself, outside any transaction (open, close, migrations, reseed),
    answered through a concurrent future."""

    __slots__ = ("alone", "fn", "future", "loop", "waiter")

    def __init__(self, fn: Callable[..., Any], *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.fn = fn
        self.alone = loop is None
        self.loop = loop
        self.future: Future[Any] | None = Future() if loop is None else None
        self.waiter: asyncio.Future[Any] | None = loop.create_future() if loop is not None else None

    def cancelled(self) -> bool:
        """Whether the caller gave up before the job started (it is then skipped). Read from the
        writer thread: a cancellation racing the start is one that came after it."""
        assert self.waiter is not None
        return self.waiter.cancelled()


class _WriterLock:
    """An flock() shared by every process writing the same catalog, held around each batch.

    SQLite alone would serialize them too, but a writer that finds the database locked polls
    with sleeps of 1 to 100 ms (its busy handler): with one worker per core, small PUTs then
    waited tens of milliseconds for nothing. A writer blocked in flock() wakes the moment the
    other one's COMMIT is done, and meanwhile its queue grows into the next batch."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _deliver(answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the callers' loop: resolve each waiter with its job's result or exception."""
    for waiter, failed, value in answers:
        if waiter.done():  # cancelled while the batch ran
            continue
        if failed:
            waiter.set_exception(value)
        else:
            waiter.set_result(value)


_STOP = _Job(lambda: None)  # ends the writer thread


DEFAULT_MAX_BATCH = 256


class SqliteDb:
    """Connections, the writer thread and group commit (the module docstring); ``SqliteCatalog(path)``
    or ``SqliteCatalog.on_drives(drives)`` opens it. ``max_batch`` caps how many queued write jobs
    share one transaction."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._setup(busy_timeout_ms, max_batch, None, lock_path=f"{self.path}.writer-lock")
        try:
            self._run_alone(self._open_writer)
        except BaseException:
            self._stop_writer()
            raise

    def _setup(self, busy_timeout_ms: int, max_batch: int, mirror: CatalogMirror | None, *, lock_path: str) -> None:
        self._writer_lock = _WriterLock(lock_path)
        assert max_batch >= 1
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._mirror = mirror
        self._wconn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._closed = False
        self.write_batches = 0  # transactions the writer ran (observability: jobs per batch)
        self.write_jobs = 0
        self._damaged_lock = threading.Lock()
        self._damaged_inline: set[str] = set()  # inline ids a read found damaged (mirror: served around)
        self._thread = threading.Thread(target=self._writer_loop, name="catalog-writer", daemon=True)
        self._thread.start()

    @classmethod
    def on_drives(
        cls,
        drives: DriveSet,
        relpath: str = DEFAULT_RELPATH,
        *,
        busy_timeout_ms: int = 30_000,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> Self:
        """The catalog mirrored on every drive of ``drives`` (one copy at ``paths[i] / relpath``).

        Opens the copies that exist; those at the highest ``catalog_seq`` are live. It creates
        nothing: ``reconcile`` (run once at server start) creates or repairs the copies.
        """
        self = cls.__new__(cls)
        mirror = CatalogMirror(drives, relpath, busy_timeout_ms=busy_timeout_ms)
        self.path = Path(drives.paths[0]) / relpath  # where copy 0 lives; informational
        # No one drive holds the lock file (any may be gone): the temp directory, named after the set.
        digest = hashlib.sha256(drives.format.set_id.encode()).hexdigest()[:16]
        lock_path = os.path.join(tempfile.gettempdir(), f"tierstore-catalog-{digest}.lock")
        self._setup(busy_timeout_ms, max_batch, mirror, lock_path=lock_path)
        try:
            self._run_alone(lambda: mirror.open(functools.partial(check_schema, upgradable=True)))
            self._upgrade_mirror()
        except BaseException:
            self._stop_writer()
            raise
        return self

    @staticmethod
    def reconcile(drives: DriveSet, relpath: str = DEFAULT_RELPATH) -> ReconcileReport:
        """Create the mirrored catalog, or bring every online drive's copy up to the newest one
        (highest ``catalog_seq``). Run before any process opens the catalog (server start, heal);
        refuses when fewer than k drives are online or when data exists but no copy does."""
        return CatalogMirror.reconcile(drives, init_schema, relpath)

    @property
    def mirrored(self) -> bool:
        return self._mirror is not None

    async def reseed(self, index: int) -> None:
        """Mirrored mode: rebuild drive ``index``'s copy from the newest live one while holding
        every copy's write lock, and make it live (``tierstore heal`` on a replaced drive)."""
        mirror = self._require_mirror()
        await asyncio.wrap_future(self._submit(lambda: mirror.reseed(index)))

    def copies_state(self) -> list[dict[str, Any]]:
        """Mirrored mode: one dict per drive — index, path, state (live/stale/missing/offline),
        seq (its catalog_seq, None unless readable), why it is not live, and ``joined``: whether
        this process uses it now (a copy at the live seq that this process has not rejoined yet,
        e.g. re-seeded by another process, is live but not joined until this process's next write)."""
        return self._require_mirror().copies_state()

    def _require_mirror(self) -> CatalogMirror:
        if self._mirror is None:
            raise InternalError("this catalog is a single file, not mirrored on drives")
        return self._mirror

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        return conn

    def _open_writer(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        init_schema(conn)
        check_schema(conn)
        self._wconn = conn

    def _upgrade_mirror(self) -> None:
        """A mirrored older catalog (v2, v3, v4) becomes current in one fan-out transaction (every copy, one seq
        step). Several processes may race here: the job re-checks inside the transaction."""
        mirror = self._mirror
        assert mirror is not None
        if schema_version(mirror.reader()) == SCHEMA_VERSION:
            return
        (outcome,) = self._run_alone(lambda: mirror.transact([upgrade]))
        if isinstance(outcome, Failed):
            raise outcome.exc

    def _reader(self) -> sqlite3.Connection:
        if self._mirror is not None:
            return self._mirror.reader()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        if self._closed:
            return
        mirror = self._mirror

        def _close() -> None:
            if mirror is not None:
                mirror.close()
            if self._wconn is not None:
                self._wconn.close()
                self._wconn = None

        self._run_alone(_close)
        self._stop_writer()
        if mirror is not None:
            mirror.close_readers()
            return
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _enqueue(self, job: _Job) -> None:
        if self._closed:
            raise InternalError("the catalog is closed")
        self._jobs.put(job)

    def _submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue ``fn()`` to run on the writer thread by itself, between batches."""
        job = _Job(fn)
        self._enqueue(job)
        assert job.future is not None
        return job.future

    def _run_alone(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer thread, by itself, and wait for it (from a non-async caller)."""
        return self._submit(fn).result()

    def _stop_writer(self) -> None:
        self._closed = True
        self._jobs.put(_STOP)
        self._thread.join()
        self._writer_lock.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction on the writer thread; returns once it is committed.

        ``fn`` shares its transaction (and its commit's fsync) with the other jobs queued at the
        time, inside its own savepoint: if it raises, only its changes are rolled back and only
        its caller gets the exception (sqlite errors translated). A failed commit fails every job
        of the batch. Cancelling the caller before the batch starts drops the job."""
        job = _Job(fn, loop=asyncio.get_running_loop())
        self._enqueue(job)
        assert job.waiter is not None
        result: T = await job.waiter
        return result

    def _writer_loop(self) -> None:
        """Take the next job; if it is a write, add every write queued behind it (up to
        ``max_batch``) and run them as one transaction. No timer: the batch is what arrived
        while the previous one ran, so a lone write on an idle catalog waits for nothing."""
        jobs = self._jobs
        carry: _Job | None = None
        while True:
            job = carry if carry is not None else jobs.get()
            carry = None
            if job is _STOP:
                return
            if job.future is not None:  # an alone job
                if job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(job.fn())
                    except BaseException as exc:
                        job.future.set_exception(exc)
                continue
            batch = [job]
            with self._writer_lock:  # other processes' writers: take turns, whole batches each
                # Collected after the lock is ours: what queued while another process committed
                # joins this batch.
                while len(batch) < self._max_batch:
                    try:
                        nxt = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt.alone:
                        carry = nxt
                        break
                    batch.append(nxt)
                try:
                    self._run_batch(batch)
                except BaseException:  # a bug here must neither stop the writer nor leave callers waiting
                    log.exception("catalog writer: a batch of %d jobs failed unexpectedly", len(batch))
                    self._answer(batch, [Failed(InternalError("Catalog error."))] * len(batch))

    def _run_batch(self, batch: list[_Job]) -> None:
        batch = [j for j in batch if not j.cancelled()]
        if not batch:
            return
        fns = [j.fn for j in batch]
        self.write_batches += 1
        self.write_jobs += len(batch)
        try:
            outcomes = self._mirror.transact(fns) if self._mirror is not None else self._transact(fns)
        except BaseException as exc:
            outcomes = [Failed(exc)] * len(batch)
        self._answer(batch, outcomes)

    @staticmethod
    def _answer(batch: list[_Job], outcomes: list[Any]) -> None:
        """Resolve each job's waiter: one wake-up per event loop for the whole batch, not one per job."""
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for j, outcome in zip(batch, outcomes, strict=True):
            assert j.loop is not None and j.waiter is not None
            failed = isinstance(outcome, Failed)
            value = _translated(outcome.exc) if failed else outcome
            answers.setdefault(j.loop, []).append((j.waiter, failed, value))
        for loop, items in answers.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_deliver, items)

    def _transact(self, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """One transaction on the single database file: BEGIN IMMEDIATE, the jobs, one COMMIT."""
        conn = self._wconn
        assert conn is not None, "catalog is closed"
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes, _changes = run_jobs(conn, fns)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return outcomes
