"""The catalog mirror: one SQLite copy per drive, so losing any m drives loses no metadata.

``SqliteCatalog.on_drives(drives)`` keeps a copy at ``drives.paths[i] / relpath`` on every
drive and runs each write transaction on every *live* copy (docs/erasure.md, "Catalog
mirror"). This module owns the copies: which are live in this process, the fan-out
transaction, the reader's choice of copy, and re-seeding a copy from the newest one. It knows
nothing about the catalog's tables except the ``meta`` row ``catalog_seq``.

Rules, in one place:

* A write locks (``BEGIN IMMEDIATE``) every live copy and every rejoin candidate in drive-index
  order — one total order, so several processes sharing the drives serialize without deadlock
  — then compares ``catalog_seq``: copies behind the highest are stale. The batch of jobs
  (the catalog writer's group commit: whatever queued while the previous commit ran) runs on
  each copy at the highest seq, in the same order, each job in its own savepoint; the first
  copy's outcomes are returned (a job that raised there is rolled back to its savepoint and
  fails alone), a later copy whose outcome of any job differs (result, exception type and
  message, or rows changed) or that hits an I/O-class error is rolled back and marked stale.
  ``catalog_seq`` is bumped to the same value on all, then each commits: one seq step, one
  fsync per copy, for the whole batch. Fewer than ``write_quorum`` copies → everything rolls
  back and every job of the batch gets ``SlowDown`` (503): read-only rather than acknowledge a
  write that m drive losses could erase.
* A copy is stale in this process once its drive is seen not ONLINE, its file is replaced
  (another inode at the path), it raises an I/O-class error, or it is behind. Only a write
  transaction brings it back, and only if its seq equals the live seq (the rejoin check).
* Reads use a per-thread connection to the lowest-index live copy; every read re-checks that
  copy's drive (one stat of the format file) and file identity (one stat).
* ``reconcile`` (server start, before workers; ``tierstore heal``) and ``reseed`` (runtime)
  rebuild a copy from the newest one with SQLite's backup API: temp file, fsync, rename,
  directory fsync.

Callbacks inside a job (``check``, ``guard``, ``update``) therefore run once per copy: they
must be deterministic and side-effect free beyond mutating the record they are given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tierstore.drives import DriveSet, DriveState, fsync_dir
from tierstore.errors import InsufficientStorage, InternalError, SlowDown

__all__ = [
    "DEFAULT_RELPATH",
    "MMAP_BYTES",
    "CatalogMirror",
    "CatalogMirrorError",
    "Failed",
    "ReconcileReport",
    "run_jobs",
]

T = TypeVar("T")
log = logging.getLogger("tierstore.catalog")

DEFAULT_RELPATH = "catalog/catalog.db"
SEQ_NAME = "catalog_seq"
# Entries of a drive that say nothing about whether it ever held data.
_EMPTY_DRIVE_ENTRIES = frozenset({".tierstore", "tmp", "catalog"})
# SQLite result codes that mean "this copy (its drive or file) is bad", not "the statement is
# wrong" or "another process holds the lock".
_COPY_FAILURES = (
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
)


class CatalogMirrorError(InternalError):
    """The catalog copies cannot be opened or brought up to date safely."""

    code = "InternalError"


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What ``CatalogMirror.reconcile`` found and did (logged at server start, shown by heal)."""

    seq: int  # catalog_seq of the winning copy (0 for a new catalog)
    source: int | None  # drive index the others were copied from
    created: list[int] = field(default_factory=list)  # a new, empty catalog was created here
    reseeded: list[int] = field(default_factory=list)  # copy was missing, unreadable or behind
    current: list[int] = field(default_factory=list)  # copy was already at ``seq``
    offline: list[int] = field(default_factory=list)  # drive not ONLINE: left alone

    def __str__(self) -> str:
        parts = [f"catalog_seq {self.seq}"]
        if self.created:
            parts.append(f"created on drives {self.created}")
        if self.current:
            parts.append(f"current on drives {self.current}")
        if self.reseeded:
            parts.append(f"re-seeded drives {self.reseeded} from drive {self.source}")
        if self.offline:
            parts.append(f"drives {self.offline} offline")
        return "; ".join(parts)


def _errorname(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def is_copy_failure(exc: BaseException) -> bool:
    """True for an error that condemns one copy (I/O, full disk, corrupt or moved file)."""
    if not isinstance(exc, sqlite3.Error):
        return isinstance(exc, OSError) and not hasattr(exc, "code")  # a drive error, not a domain error
    name = _errorname(exc)
    if name:
        return name.startswith(_COPY_FAILURES)
    msg = str(exc).lower()
    return any(s in msg for s in ("disk i/o", "is full", "malformed", "not a database", "unable to open"))


def _is_busy(exc: sqlite3.Error) -> bool:
    name = _errorname(exc)
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc).lower()


def _ident(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path`` now, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


# Reads map the database instead of read() per page: a 16 KiB inline body spans 5 pages, and a
# dataset batch reads 256 of them (13 -> 6 us per body, docs/datasets.md). Writes stay pwrite().
MMAP_BYTES = 1 << 30


def _open(path: Path, busy_timeout_ms: int, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to an existing copy (``mode=rw``: never creates a file behind our back)."""
    mode = "ro" if readonly else "rw"
    conn = sqlite3.connect(f"{path.as_uri()}?mode={mode}", uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    except BaseException:
        conn.close()
        raise
    return conn


def _close(conn: sqlite3.Connection | None) -> None:
    if conn is None:
        return
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    with contextlib.suppress(sqlite3.Error):
        conn.close()


def read_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE name=?", (SEQ_NAME,)).fetchone()
    if row is None:
        raise CatalogMirrorError("catalog copy has no catalog_seq row")
    return int(row[0])


def _seq_of(path: Path, busy_timeout_ms: int) -> int | None:
    """The committed seq of the copy at ``path``; None if it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        conn = _open(path, busy_timeout_ms, readonly=True)
    except sqlite3.Error:
        return None
    try:
        return read_seq(conn)
    except (sqlite3.Error, CatalogMirrorError, ValueError):
        return None
    finally:
        _close(conn)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _publish(tmp: Path, dest: Path) -> None:
    """Make the finished database file ``tmp`` durable and move it to ``dest`` atomically.

    A leftover ``-wal``/``-shm`` of an older file at ``dest`` goes first: SQLite would replay
    that WAL onto the new file."""
    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _unlink(Path(f"{dest}-wal"))
    _unlink(Path(f"{dest}-shm"))
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def seed_copy(source: Path, dest: Path, busy_timeout_ms: int = 30_000) -> None:
    """Make ``dest`` a copy of the committed state of ``source``: SQLite backup into a temp
    file, fsync, rename over ``dest``, fsync the directory.

    The caller guarantees no process writes ``dest`` meanwhile (it holds the copies' write
    locks, or no other process exists). ``dest``'s old WAL and shared-memory files are removed
    before the rename: SQLite does not check that a WAL belongs to its database, and replaying
    the old copy's frames onto the new file would corrupt it.
    """
    if not dest.parent.is_dir():
        dest.parent.mkdir()
        fsync_dir(dest.parent.parent)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.seed")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
        _unlink(p)
    src = _open(source, busy_timeout_ms, readonly=True)
    try:
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            dst.execute("PRAGMA synchronous=FULL")
            src.backup(dst)
            mode = dst.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            assert str(mode).lower() == "wal", mode
        finally:
            dst.close()
    finally:
        _close(src)
    _publish(tmp, dest)


def _looks_used(drive: Path, relpath: str) -> bool:
    """Whether a drive without a catalog copy shows signs of having held data."""
    cat_dir = (drive / relpath).parent
    try:
        if cat_dir.is_dir() and any(cat_dir.iterdir()):
            return True
        for entry in drive.iterdir():
            if entry.name in _EMPTY_DRIVE_ENTRIES:
                continue
            if not entry.is_dir() or any(entry.iterdir()):
                return True
    except OSError:
        return True
    return False


@dataclass(slots=True)
class _Copy:
    index: int
    path: Path
    conn: sqlite3.Connection | None = None  # the writer's connection (writer thread only)
    ident: tuple[int, int] | None = None  # (dev, inode) of the file when it (re)joined
    live: bool = False
    generation: int = 0  # bumped when the copy leaves the live set: readers reopen
    reason: str = "not opened"  # why it is not live


class CatalogMirror:
    """The copies of one catalog on a drive set, as seen by one process.

    ``open``, ``transact``, ``reseed`` and ``close`` run on the catalog's single writer
    thread; ``reader``, ``copies_state`` and ``close_readers`` on any thread.
    """

    def __init__(self, drives: DriveSet, relpath: str = DEFAULT_RELPATH, *, busy_timeout_ms: int = 30_000) -> None:
        self.drives = drives
        self.relpath = relpath
        self.busy_timeout_ms = busy_timeout_ms
        self.copies = [_Copy(i, Path(p) / relpath) for i, p in enumerate(drives.paths)]
        self._lock = threading.Lock()  # guards live/generation/ident and the reader list
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._committers: ThreadPoolExecutor | None = None

    # --- state --------------------------------------------------------------------------
    def _online(self, c: _Copy) -> bool:
        return self.drives.state(c.index) is DriveState.ONLINE

    def _mark_stale(self, c: _Copy, reason: str) -> None:
        with self._lock:
            if c.live:
                c.live = False
                c.generation += 1
                log.warning("catalog copy on drive %d (%s) excluded: %s", c.index, c.path, reason)
            c.reason = reason

    def _mark_live(self, c: _Copy, ident: tuple[int, int]) -> None:
        with self._lock:
            if not c.live:
                log.info("catalog copy on drive %d (%s) is live", c.index, c.path)
            c.ident = ident
            c.live = True
            c.reason = ""

    def _drop(self, c: _Copy, reason: str) -> None:
        """Writer thread: exclude ``c`` and close its connection."""
        self._mark_stale(c, reason)
        _close(c.conn)
        c.conn = None

    # --- open / close (writer thread) -------------------------------------------------------
    def open(self, check: Callable[[sqlite3.Connection], None]) -> None:
        """Open every reachable copy; the copies at the highest seq are live. ``check`` vets one
        connection (schema version) and raises if the catalog cannot be used."""
        seqs: dict[int, int] = {}
        for c in self.copies:
            if not self._online(c):
                c.reason = "drive offline"
                continue
            before = _ident(c.path)
            if before is None:
                c.reason = "no catalog file"
                continue
            conn: sqlite3.Connection | None = None
            try:
                conn = _open(c.path, self.busy_timeout_ms)
                seqs[c.index] = read_seq(conn)
            except (sqlite3.Error, CatalogMirrorError, ValueError) as exc:
                c.reason = f"unreadable: {exc}"
                _close(conn)
                continue
            c.conn, c.ident = conn, before
        if not seqs:
            raise CatalogMirrorError(
                "no readable catalog copy on any drive ("
                + ", ".join(f"{c.path}: {c.reason}" for c in self.copies)
                + "); `tierstore serve` creates or repairs them at start (SqliteCatalog.reconcile)"
            )
        top = max(seqs.values())
        for c in self.copies:
            if c.index not in seqs:
                continue
            if seqs[c.index] < top:
                self._drop(c, f"behind: catalog_seq {seqs[c.index]} < {top}")
                continue
            assert c.conn is not None and c.ident is not None
            self._mark_live(c, c.ident)
        first = next(c for c in self.copies if c.live)
        assert first.conn is not None
        try:
            check(first.conn)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for c in self.copies:
            _close(c.conn)
            c.conn = None
        if self._committers is not None:
            self._committers.shutdown(wait=True)
            self._committers = None

    def close_readers(self) -> None:
        with self._lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            _close(conn)
        self._local = threading.local()

    # --- reads (any thread) ---------------------------------------------------------------
    def reader(self) -> sqlite3.Connection:
        """This thread's connection to a live copy whose drive is there right now."""
        held: tuple[sqlite3.Connection, _Copy, int] | None = getattr(self._local, "held", None)
        if held is not None:
            conn, c, generation = held
            if c.live and c.generation == generation:
                if self._online(c) and _ident(c.path) == c.ident:
                    return conn
                self._mark_stale(c, "drive offline or catalog file replaced (seen by a reader)")
            self._forget_reader(conn)
            self._local.held = None
        for c in self.copies:
            if not c.live:
                continue
            generation = c.generation
            if not self._online(c):
                self._mark_stale(c, "drive offline (seen by a reader)")
                continue
            try:
                conn = _open(c.path, self.busy_timeout_ms)
            except sqlite3.Error as exc:
                self._mark_stale(c, f"cannot open for reading: {exc}")
                continue
            if _ident(c.path) != c.ident:
                _close(conn)
                self._mark_stale(c, "catalog file replaced (seen by a reader)")
                continue
            with self._lock:
                self._readers.append(conn)
            self._local.held = (conn, c, generation)
            return conn
        raise SlowDown("The catalog is unavailable: no catalog copy is readable on the drives that are online.")

    def _forget_reader(self, conn: sqlite3.Connection) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._readers.remove(conn)
        _close(conn)

    # --- the fan-out transaction (writer thread) --------------------------------------------
    def _lock_all(self, failures: list[str]) -> tuple[list[_Copy], int, dict[int, tuple[int, int]]]:
        """BEGIN IMMEDIATE on every live copy and rejoin candidate, in drive-index order, then
        keep those at the highest catalog_seq. Returns (copies in a transaction, that seq, the
        file identity of each)."""
        locked: list[_Copy] = []
        idents: dict[int, tuple[int, int]] = {}

        def exclude(c: _Copy, reason: str) -> None:
            self._drop(c, reason)
            failures.append(f"drive {c.index} ({c.path}): {reason}")

        try:
            for c in self.copies:
                if not self._online(c):
                    exclude(c, "drive offline")
                    continue
                if c.live and _ident(c.path) != c.ident:  # replaced (re-seeded by another process)
                    self._drop(c, "catalog file replaced")
                if c.live:
                    before = c.ident
                else:  # a rejoin candidate: always a fresh connection to whatever file is there now
                    _close(c.conn)
                    c.conn = None
                    before = _ident(c.path)
                    if before is None:
                        exclude(c, "no catalog copy")
                        continue
                try:
                    if c.conn is None:
                        c.conn = _open(c.path, self.busy_timeout_ms)
                    c.conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    if _is_busy(exc):
                        raise
                    exclude(c, f"cannot lock: {exc}")
                    continue
                if before is None or _ident(c.path) != before:  # re-seeded by another process, or pulled
                    exclude(c, "catalog file replaced")
                    continue
                locked.append(c)
                idents[c.index] = before
            seqs: dict[int, int] = {}
            for c in list(locked):
                assert c.conn is not None
                try:
                    seqs[c.index] = read_seq(c.conn)
                except (sqlite3.Error, CatalogMirrorError, ValueError) as exc:
                    if isinstance(exc, sqlite3.Error) and _is_busy(exc):
                        raise
                    exclude(c, f"unreadable: {exc}")
                    locked.remove(c)
            top = max(seqs.values(), default=-1)
            for c in list(locked):
                if seqs[c.index] < top:
                    exclude(c, f"behind: catalog_seq {seqs[c.index]} < {top}")
                    locked.remove(c)
        except BaseException:
            for c in locked:
                _close_tx(c.conn)
            raise
        return locked, top, idents

    def _release(self, locked: list[_Copy]) -> None:
        for c in locked:
            _close_tx(c.conn)
            if not c.live:
                _close(c.conn)
                c.conn = None

    def _commit_all(self, copies: list[_Copy]) -> list[sqlite3.Error | None]:
        """COMMIT every copy, in parallel: each is one fsync of its own drive's WAL, so the
        latency is the slowest drive's, not the sum (every lock is already held, so the order
        does not matter; a crash may leave any subset committed, which reconcile repairs)."""

        def commit(c: _Copy) -> sqlite3.Error | None:
            assert c.conn is not None
            try:
                c.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                return exc
            return None

        if len(copies) == 1:
            return [commit(copies[0])]
        if self._committers is None:
            self._committers = ThreadPoolExecutor(len(self.copies), thread_name_prefix="catalog-commit")
        return list(self._committers.map(commit, copies))

    def _quorum_error(self, have: int, failures: list[str], what: str) -> Exception:
        need = self.drives.format.write_quorum
        detail = "; ".join(failures) or "no other reason recorded"
        msg = (
            f"The catalog is read-only: {what} {have} of {len(self.copies)} catalog copies "
            f"(write quorum {need}). Unavailable: {detail}. Replace or reconnect drives and run `tierstore heal`."
        )
        if any("disk is full" in f for f in failures):
            return InsufficientStorage(msg)
        return SlowDown(msg)

    def transact(self, fns: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """Run the batch ``fns`` in one transaction on every live copy (see the module docstring).

        Each job runs in its own savepoint (``run_jobs``): the returned list holds each job's
        result, or a ``Failed`` with what it raised on the first copy (rolled back to its
        savepoint; the batch goes on). Exceptions from here fail the whole batch (quorum lost,
        lock timeout). A batch in which every job failed on the first copy changes nothing and
        commits nowhere, as a single failed job always did."""
        failures: list[str] = []
        locked, top, idents = self._lock_all(failures)
        quorum = self.drives.format.write_quorum
        try:
            if len(locked) < quorum:
                raise self._quorum_error(len(locked), failures, "only")
            done: list[_Copy] = []
            outcomes: list[Any] = []
            changes: list[int] = []
            for c in locked:
                conn = c.conn
                assert conn is not None
                try:
                    outs, chg = run_jobs(conn, fns, fatal=is_copy_failure)
                    if not done and all(isinstance(o, Failed) for o in outs):
                        return outs  # nothing to commit anywhere (the finally rolls every copy back)
                    conn.execute("UPDATE meta SET value=? WHERE name=?", (str(top + 1), SEQ_NAME))
                except BaseException as exc:
                    if not done and not is_copy_failure(exc):
                        raise  # the first copy's answer to the whole batch
                    why = f"failed: {exc}" if is_copy_failure(exc) else f"diverged: raised {exc!r}"
                    self._drop(c, why)
                    failures.append(f"drive {c.index} ({c.path}): {why}")
                    continue
                if not done:
                    outcomes, changes = outs, chg
                elif chg != changes or not all(_same(a, b) for a, b in zip(outs, outcomes, strict=True)):
                    self._drop(c, "diverged: different result from the first copy")
                    failures.append(f"drive {c.index} ({c.path}): diverged")
                    continue
                done.append(c)
            if len(done) < quorum:
                raise self._quorum_error(len(done), failures, "only")
            committed: list[_Copy] = []
            for c, error in zip(done, self._commit_all(done), strict=True):
                if error is not None:
                    self._drop(c, f"commit failed: {error}")
                    failures.append(f"drive {c.index} ({c.path}): commit failed: {error}")
                    continue
                committed.append(c)
            for c in committed:
                self._mark_live(c, idents[c.index])
            for c in self.copies:
                if c.live and c not in committed:
                    self._drop(c, "not in the last transaction")
            if len(committed) < quorum:
                # Durable on some copies, not acknowledged: it may become visible after a
                # reconcile (its blobs were written first, so that is safe).
                raise self._quorum_error(len(committed), failures, "the transaction committed on only")
            return outcomes
        finally:
            self._release(locked)

    def read_elsewhere(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
        """(drive index, rows of ``sql``) from every live copy except the one this thread reads,
        each through a short-lived read-only connection. For second opinions when a row read
        from the usual copy fails its checksum, and for the scrub's per-copy check; a copy that
        cannot be read is skipped."""
        held: tuple[sqlite3.Connection, _Copy, int] | None = getattr(self._local, "held", None)
        usual = held[1].index if held is not None else None
        for c in self.copies:
            if not c.live or c.index == usual or not self._online(c):
                continue
            try:
                conn = _open(c.path, self.busy_timeout_ms, readonly=True)
            except sqlite3.Error:
                continue
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.Error:
                continue
            finally:
                _close(conn)
            yield c.index, rows

    # --- re-seeding (writer thread) ------------------------------------------------------------
    def reseed(self, index: int) -> None:
        """Copy the newest live copy onto drive ``index`` while holding every copy's write lock,
        then make it live. Other processes pick it up through their rejoin check."""
        target = self.copies[index]
        if not self._online(target):
            raise CatalogMirrorError(f"drive {index} ({self.drives.paths[index]}) is not online; cannot re-seed it")
        online = self.drives.online()
        if len(online) < self.drives.format.data_shards:
            raise CatalogMirrorError(
                f"only {len(online)} drives are online, fewer than {self.drives.format.data_shards}:"
                " the newest catalog transaction may be missing from all of them"
            )
        failures: list[str] = []
        locked, _top, idents = self._lock_all(failures)
        try:
            if target in locked:  # already at the newest seq: live without copying
                self._mark_live(target, idents[index])
                return
            source = next((c for c in locked if c is not target), None)
            if source is None:
                raise self._quorum_error(0, failures, "no readable source among")
            seed_copy(source.path, target.path, self.busy_timeout_ms)
            conn = _open(target.path, self.busy_timeout_ms)
            ident = _ident(target.path)
            assert ident is not None
            target.conn = conn
            self._mark_live(target, ident)
            log.info("catalog copy on drive %d re-seeded from drive %d", index, source.index)
        finally:
            self._release(locked)

    # --- reporting (any thread) ----------------------------------------------------------------
    def copies_state(self) -> list[dict[str, Any]]:
        """One dict per copy. A copy this process has not rejoined yet (it does so in its next
        write) but that is at the live copies' seq — another process re-seeded it, or its
        drive came back with nothing missed — is reported live: the store has it."""
        out: list[dict[str, Any]] = []
        seqs: list[int | None] = []
        for c in self.copies:
            if not self._online(c):
                state = "offline"
            elif not c.path.exists():
                state = "missing"
            else:
                state = "live" if c.live else "stale"
            seqs.append(_seq_of(c.path, self.busy_timeout_ms) if state in ("live", "stale") else None)
            out.append({"index": c.index, "path": str(c.path), "state": state, "seq": seqs[-1], "reason": c.reason})
            out[-1]["joined"] = c.live  # this process reads and writes it
        top = max((q for q, d in zip(seqs, out, strict=True) if q is not None and d["joined"]), default=None)
        for q, d in zip(seqs, out, strict=True):
            if d["state"] == "stale" and top is not None and q == top:
                d["state"], d["reason"] = "live", "current; this process joins it with its next write"
        return out

    # --- start-up ----------------------------------------------------------------------------
    @classmethod
    def reconcile(
        cls,
        drives: DriveSet,
        init: Callable[[sqlite3.Connection], None],
        relpath: str = DEFAULT_RELPATH,
        *,
        busy_timeout_ms: int = 30_000,
    ) -> ReconcileReport:
        """Bring every online drive's copy up to the newest one; create the catalog if no copy
        exists anywhere. Run with no other process using the drives (server start, heal).

        ``init`` builds the schema on a new, empty database (and sets catalog_seq 0).
        """
        fmt = drives.format
        online = drives.online()
        offline = [i for i in range(fmt.drives) if i not in online]
        if len(online) < fmt.data_shards:
            raise CatalogMirrorError(
                f"only {len(online)} of {fmt.drives} drives are online, fewer than the {fmt.data_shards} data shards:"
                " the newest catalog transaction may be on none of them. Reconnect drives"
                f" ({', '.join(str(drives.paths[i]) for i in offline)}) and start again."
            )
        paths = {i: Path(drives.paths[i]) / relpath for i in range(fmt.drives)}
        seqs = {i: _seq_of(paths[i], busy_timeout_ms) for i in online}
        readable = {i: s for i, s in seqs.items() if s is not None}
        if not readable:
            used = [i for i in online if _looks_used(Path(drives.paths[i]), relpath)]
            if used or offline:
                raise CatalogMirrorError(
                    "no readable catalog copy on the online drives, but "
                    + (f"drives {used} hold data" if used else f"drives {offline} are offline and may hold it")
                    + ": refusing to create an empty catalog over it. Restore a catalog copy"
                    f" ({relpath} on a drive) or reconnect the drives."
                )
            first = online[0]
            _create(paths[first], init)
            for i in online[1:]:
                seed_copy(paths[first], paths[i], busy_timeout_ms)
            return ReconcileReport(seq=0, source=first, created=list(online), offline=offline)
        top = max(readable.values())
        source = min(i for i, s in readable.items() if s == top)
        current, reseeded = [], []
        for i in online:
            if readable.get(i) == top:
                current.append(i)
                continue
            log.warning(
                "catalog copy on drive %d is %s; re-seeding it from drive %d (catalog_seq %d)",
                i,
                "missing or unreadable" if i not in readable else f"behind (catalog_seq {readable[i]})",
                source,
                top,
            )
            seed_copy(paths[source], paths[i], busy_timeout_ms)
            reseeded.append(i)
        return ReconcileReport(seq=top, source=source, reseeded=reseeded, current=current, offline=offline)


@dataclass(frozen=True, slots=True)
class Failed:
    """A job's outcome when it raised: ``exc``, after its savepoint was rolled back."""

    exc: BaseException


def run_jobs(
    conn: sqlite3.Connection,
    fns: Sequence[Callable[[sqlite3.Connection], Any]],
    *,
    fatal: Callable[[BaseException], bool] = lambda exc: False,
) -> tuple[list[Any], list[int]]:
    """Run each of ``fns`` inside the open transaction on ``conn``, each in its own savepoint.

    A job that raises is rolled back to its savepoint and its outcome is ``Failed(exc)``; the
    next job sees the database as if it had not run. Returns (outcomes, rows changed per job).
    Raises instead (the transaction is unusable, or the caller wants it so) when ``fatal(exc)``
    or when SQLite rolled the whole transaction back by itself (a full disk, an I/O error).
    """
    outcomes: list[Any] = []
    changes: list[int] = []
    for fn in fns:
        before = conn.total_changes
        conn.execute("SAVEPOINT job")
        try:
            result = fn(conn)
        except Exception as exc:
            if fatal(exc) or not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            outcomes.append(Failed(exc))
        else:
            conn.execute("RELEASE job")
            outcomes.append(result)
        changes.append(conn.total_changes - before)
    return outcomes, changes


def _same(a: Any, b: Any) -> bool:
    """Whether two copies gave one job the same outcome (results equal, or the same error)."""
    if isinstance(a, Failed) or isinstance(b, Failed):
        return (
            isinstance(a, Failed) and isinstance(b, Failed) and type(a.exc) is type(b.exc) and str(a.exc) == str(b.exc)
        )
    return bool(a == b)


def _close_tx(conn: sqlite3.Connection | None) -> None:
    if conn is not None and conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _create(path: Path, init: Callable[[sqlite3.Connection], None]) -> None:
    """A new catalog at ``path`` (temp file, fsync, rename, directory fsync)."""
    if not path.parent.is_dir():
        path.parent.mkdir()
        fsync_dir(path.parent.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
        _unlink(p)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA journal_mode=WAL")
        init(conn)
        conn.execute("INSERT OR IGNORE INTO meta(name, value) VALUES(?, '0')", (SEQ_NAME,))
    finally:
        conn.close()
    _publish(tmp, path)
