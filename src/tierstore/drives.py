"""A set of drives: which directory is which member of an erasure set, and is it there now.

``tierstore serve --drives D1 ... Dn`` turns n directories (one per physical drive) into one
set. Each member carries ``.tierstore/format.json``::

    {"format": 1, "set_id": "<uuid>", "index": i, "drive_id": "<uuid>",
     "drives": n, "parity": m, "stripe_bytes": 1048576, "small_object_bytes": 131072}

The index, not the position on the command line, says which shards a drive holds, so drives
may be listed in any order. Both the blob layer (shards) and the catalog layer (its mirrored
copies) ask a ``DriveSet`` whether drive ``i`` is usable *right now*: one ``stat`` of its
format file, no cache, so a drive pulled (or a directory removed) is noticed by the next
operation, not after a timeout. A directory that exists but has no format file is a
replacement waiting for ``tierstore heal`` (or the next start) to format it; a missing
directory is offline and is never recreated behind the operator's back (an unmounted drive's
mount point must not quietly fill the root filesystem).

Layers above treat this module like ``runtime``: it knows paths and nothing about blobs,
keys or SQL.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SMALL_OBJECT_BYTES",
    "DEFAULT_STRIPE_BYTES",
    "FORMAT_DIR",
    "FORMAT_VERSION",
    "RESERVE_FILE",
    "DiskReserve",
    "DriveSet",
    "DriveSetError",
    "DriveState",
    "SetFormat",
    "default_parity",
    "fsync_dir",
    "write_file_durably",
]

FORMAT_VERSION = 1
FORMAT_DIR = ".tierstore"
FORMAT_FILE = "format.json"
DEFAULT_STRIPE_BYTES = 1024 * 1024
DEFAULT_SMALL_OBJECT_BYTES = 128 * 1024
MAX_PARITY = 4
RESERVE_FILE = "space.reserve"


class DriveSetError(ValueError):
    """The drives given do not form a usable set (bad count, mixed sets, bad parity)."""


class DriveState(enum.Enum):
    ONLINE = "online"  # formatted as this member of this set
    OFFLINE = "offline"  # directory missing or unreadable
    UNFORMATTED = "unformatted"  # directory present but empty of a format: a replacement
    FOREIGN = "foreign"  # formatted for another set or another index: never touched


def default_parity(drives: int) -> int:
    """m for n drives: n // 2, at most 4; below 4 drives every blob is a full replica (m = n - 1)."""
    if drives < 4:
        return drives - 1
    return min(MAX_PARITY, drives // 2)


class DiskReserve:
    """A file of ``size_bytes`` kept next to the catalog on each drive, so that a delete can still
    commit when the disk is full: the engine deletes the file (``release``) when a delete or an
    abort finds no space, retries, and the file comes back (``restore``) once there is room for
    it twice over. Several processes share the file; whoever finds it missing may recreate it."""

    def __init__(self, dirs: list[Path], size_bytes: int) -> None:
        self.paths = [d / RESERVE_FILE for d in dirs]
        self.size_bytes = max(0, size_bytes)
        self.released = False

    def release(self) -> bool:
        """Delete the reserve files; True if any existed (a retry may now fit)."""
        freed = False
        for path in self.paths:
            try:
                path.unlink()
                freed = True
            except FileNotFoundError:
                pass
            except OSError:
                continue
        self.released = True
        return freed

    def restore(self) -> None:
        """(Re)create each missing reserve file while the disk has room for it twice over."""
        if not self.size_bytes:
            return
        complete = True
        for path in self.paths:
            try:
                if path.stat().st_size == self.size_bytes:
                    continue
            except FileNotFoundError:
                pass
            except OSError:
                continue  # an offline drive
            try:
                st = os.statvfs(path.parent)
                if st.f_bavail * st.f_frsize < 2 * self.size_bytes:
                    complete = False
                    continue
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, self.size_bytes)  # really allocated, not a sparse file
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except OSError:
                complete = False
                with contextlib.suppress(OSError):
                    tmp.unlink()
        self.released = not complete


@dataclass(frozen=True, slots=True)
class SetFormat:
    """What every member of one set agrees on."""

    set_id: str
    drives: int
    parity: int
    stripe_bytes: int = DEFAULT_STRIPE_BYTES
    small_object_bytes: int = DEFAULT_SMALL_OBJECT_BYTES

    @property
    def data_shards(self) -> int:
        return self.drives - self.parity

    @property
    def write_quorum(self) -> int:
        """Drives that must take a write: k + 1, so an acknowledged write survives one more loss."""
        return min(self.drives, self.data_shards + 1)

    def validate(self) -> None:
        n, m = self.drives, self.parity
        if n < 2:
            raise DriveSetError("an erasure set needs at least 2 drives")
        if n < 4 and m != n - 1:
            raise DriveSetError(f"with {n} drives every blob is replicated to all of them (parity {n - 1})")
        if n >= 4 and not 1 <= m <= min(MAX_PARITY, n // 2):
            raise DriveSetError(f"parity for {n} drives must be 1..{min(MAX_PARITY, n // 2)}, not {m}")
        if self.stripe_bytes < 4096 or self.stripe_bytes % 4096:
            raise DriveSetError("stripe_bytes must be a positive multiple of 4096")
        if self.small_object_bytes < 0:
            raise DriveSetError("small_object_bytes must be >= 0")


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` atomically (temp file, fsync, rename, fsync the directory)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class _Seen:
    """The format file as last read: its identity and what it said."""

    ino: int
    dev: int
    mtime_ns: int
    state: DriveState


class DriveSet:
    """The members of one set, ordered by index; ``state(i)`` says whether drive i is usable now.

    Build it with ``DriveSet.open(paths, ...)``. Thread-safe; shared by the blob store and the
    catalog of one process (each process builds its own).
    """

    def __init__(self, fmt: SetFormat, paths: list[Path]) -> None:
        assert len(paths) == fmt.drives
        self.format = fmt
        self.paths = paths  # paths[i] is the member with index i
        self._seen: list[_Seen | None] = [None] * fmt.drives
        # plain strings: state() runs per operation per drive, and pathlib joins cost ~10 us
        self._format_paths = [os.path.join(p, FORMAT_DIR, FORMAT_FILE) for p in paths]
        self._dir_paths = [str(p) for p in paths]
        self._lock = threading.Lock()

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        paths: list[str] | list[Path],
        *,
        parity: int | None = None,
        stripe_bytes: int = DEFAULT_STRIPE_BYTES,
        small_object_bytes: int = DEFAULT_SMALL_OBJECT_BYTES,
        format_new: bool = True,
    ) -> DriveSet:
        """Recognise the members of ``paths``; format a new set, or empty replacement drives.

        A brand-new set (no drive has a format) is created with ``parity`` (default
        ``default_parity(n)``), creating missing directories. In an existing set, ``parity`` must
        match if given; drives with no format whose directory exists take the free indexes in
        command-line order (``format_new=False`` leaves them alone, for read-only tools); missing
        directories stay offline.
        """
        resolved = [Path(p).absolute() for p in paths]
        if len(set(resolved)) != len(resolved):
            raise DriveSetError("the same drive is listed twice")
        n = len(resolved)
        docs = [_read_format(p) for p in resolved]
        found = [d for d in docs if d is not None]
        if not found:
            m = default_parity(n) if parity is None else parity
            fmt = SetFormat(str(uuid.uuid4()), n, m, stripe_bytes, small_object_bytes)
            fmt.validate()
            if not format_new:
                raise DriveSetError("none of the drives is formatted")
            for i, p in enumerate(resolved):
                p.mkdir(parents=True, exist_ok=True)
                _write_format(p, fmt, i)
            return cls(fmt, resolved)
        fmt = _set_format(found[0])
        for d in found[1:]:
            if _set_format(d) != fmt:
                raise DriveSetError("the drives belong to different sets (format.json differs)")
        if fmt.drives != n:
            raise DriveSetError(f"this set has {fmt.drives} drives; {n} were given")
        if parity is not None and parity != fmt.parity:
            raise DriveSetError(f"this set was created with parity {fmt.parity}, not {parity}")
        by_index: dict[int, Path] = {}
        for p, doc in zip(resolved, docs, strict=True):
            if doc is not None:
                index = int(doc["index"])
                if index in by_index:
                    raise DriveSetError(f"two drives claim index {index}: {by_index[index]} and {p}")
                by_index[index] = p
        free = [i for i in range(n) if i not in by_index]
        unformatted = [p for p, d in zip(resolved, docs, strict=True) if d is None]
        for i, p in zip(free, unformatted, strict=True):
            by_index[i] = p
        drive_set = cls(fmt, [by_index[i] for i in range(n)])
        if format_new:
            for i in free:
                if drive_set.state(i) is DriveState.UNFORMATTED:
                    drive_set.format_drive(i)
        return drive_set

    # --- state ----------------------------------------------------------------------------
    def format_path(self, index: int) -> Path:
        return self.paths[index] / FORMAT_DIR / FORMAT_FILE

    def state(self, index: int) -> DriveState:
        """Drive ``index`` as it is now: one stat (a re-read only if the format file changed)."""
        return self.probe(index)[0]

    def probe(self, index: int) -> tuple[DriveState, tuple[int, int, int] | None]:
        """``state(index)`` and the identity of the drive's format file (dev, inode, mtime).

        The identity changes whenever the drive is formatted again (a replaced drive, a
        recreated directory), so callers caching per-drive state compare it to know when to
        drop their caches. None unless the drive has a format file."""
        try:
            st = os.stat(self._format_paths[index])
        except FileNotFoundError:
            self._seen[index] = None
            state = DriveState.UNFORMATTED if os.path.isdir(self._dir_paths[index]) else DriveState.OFFLINE
            return state, None
        except OSError:
            self._seen[index] = None
            return DriveState.OFFLINE, None
        identity = (st.st_dev, st.st_ino, st.st_mtime_ns)
        seen = self._seen[index]
        if seen is not None and (seen.dev, seen.ino, seen.mtime_ns) == identity:
            return seen.state, identity
        try:
            doc = _read_format(self.paths[index])
        except DriveSetError:
            doc = None  # damaged: not ours to use (admin info shows it foreign; open() names it)
        ok = doc is not None and _set_format(doc) == self.format and int(doc["index"]) == index
        state = DriveState.ONLINE if ok else DriveState.FOREIGN
        self._seen[index] = _Seen(st.st_ino, st.st_dev, st.st_mtime_ns, state)
        return state, identity

    def online(self) -> list[int]:
        return [i for i in range(self.format.drives) if self.state(i) is DriveState.ONLINE]

    def is_online(self, index: int) -> bool:
        return self.state(index) is DriveState.ONLINE

    def format_drive(self, index: int) -> None:
        """Make an empty (UNFORMATTED) directory member ``index`` of this set."""
        with self._lock:
            state = self.state(index)
            if state is DriveState.ONLINE:
                return
            if state is not DriveState.UNFORMATTED:
                raise DriveSetError(f"drive {self.paths[index]} is {state.value}; only an empty directory is formatted")
            _write_format(self.paths[index], self.format, index)

    def capacity(self, index: int) -> tuple[int, int] | None:
        """(total bytes, free bytes) of the filesystem under drive ``index``; None if unreachable."""
        try:
            st = os.statvfs(self.paths[index])
        except OSError:
            return None
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def describe(self) -> list[dict[str, Any]]:
        """One dict per drive for ``admin info``: path, index, state, capacity."""
        out = []
        for i, p in enumerate(self.paths):
            cap = self.capacity(i)
            out.append(
                {
                    "index": i,
                    "path": str(p),
                    "state": self.state(i).value,
                    "total_bytes": cap[0] if cap else None,
                    "free_bytes": cap[1] if cap else None,
                }
            )
        return out


def _read_format(path: Path) -> dict[str, Any] | None:
    try:
        text = (path / FORMAT_DIR / FORMAT_FILE).read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT_VERSION:
            raise DriveSetError(f"{path}: unsupported format {doc.get('format')!r}")
        _set_format(doc)
        int(doc["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DriveSetError(f"{path / FORMAT_DIR / FORMAT_FILE} is damaged: {exc}") from exc
    result: dict[str, Any] = doc
    return result


def _set_format(doc: dict[str, Any]) -> SetFormat:
    return SetFormat(
        set_id=str(doc["set_id"]),
        drives=int(doc["drives"]),
        parity=int(doc["parity"]),
        stripe_bytes=int(doc["stripe_bytes"]),
        small_object_bytes=int(doc["small_object_bytes"]),
    )


def _write_format(path: Path, fmt: SetFormat, index: int) -> None:
    meta = path / FORMAT_DIR
    with contextlib.suppress(FileExistsError):
        meta.mkdir()
        fsync_dir(path)
    doc = {"format": FORMAT_VERSION, **asdict(fmt), "index": index, "drive_id": str(uuid.uuid4())}
    write_file_durably(meta / FORMAT_FILE, (json.dumps(doc, indent=1) + "\n").encode())
