"""The two ``SampleSource`` implementations: a server over HTTP, and the engine in-process.

Both are picklable and open what they need lazily, once per process: a torch DataLoader worker
(forked or spawned) gets its own connection pool or its own engine, never its parent's.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from tierstore.datasets._manifest import DatasetReadError, DatasetRef, Manifest

__all__ = ["MAX_ROWS_PER_REQUEST", "EmbeddedSource", "RemoteSource"]

MAX_ROWS_PER_REQUEST = 10_000  # the server's batch limit
T = TypeVar("T")


def _chunks(rows: Sequence[int]) -> Iterator[tuple[int, Sequence[int]]]:
    for start in range(0, len(rows), MAX_ROWS_PER_REQUEST):
        yield start, rows[start : start + MAX_ROWS_PER_REQUEST]


class RemoteSource:
    """Samples from a tierstore server through ``/_tierstore/batch`` (one request per up to
    10,000 rows). ``endpoint``: a URL or full ``S3Settings``; None resolves flags/env like the CLI."""

    def __init__(self, endpoint: Any = None, *, access_key: str | None = None, secret_key: str | None = None) -> None:
        from tierstore.client import S3Settings, resolve_settings

        if isinstance(endpoint, S3Settings):
            self.settings = endpoint
        else:
            self.settings = resolve_settings(endpoint, access_key=access_key, secret_key=secret_key)
        self._client: Any = None
        self._pid = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self._client, self._pid = None, 0

    @property
    def client(self) -> Any:
        """This process's ``TierstoreClient`` (thread-safe; a forked child makes its own)."""
        if self._client is None or self._pid != os.getpid():
            from tierstore.client import TierstoreClient

            self._client, self._pid = TierstoreClient(self.settings), os.getpid()
        return self._client

    def open_manifest(self, ref: DatasetRef | str) -> Manifest:
        return Manifest.from_parquet(self.client.dataset_manifest(str(DatasetRef.parse(ref))))

    def read_rows(self, ref: DatasetRef, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        ref = DatasetRef.parse(ref)
        if ref.version is None:
            raise ValueError(f"read_rows needs a dataset version: {ref}@N")
        rows = [int(r) for r in rows]
        from tierstore.client import TierstoreClientError

        for start, part in _chunks(rows):
            try:
                items = self.client.read_rows(str(ref), list(part), fail_fast=True)
            except TierstoreClientError as exc:  # the whole request: no such dataset, bad row number
                raise DatasetReadError(part[0] if part else -1, exc.status, exc.code, exc.message) from exc
            for item in items:
                if not item.ok:
                    err = item.error or {}
                    row = part[item.index]
                    raise DatasetReadError(row, item.status, err.get("code", "Error"), err.get("message", ""))
                yield start + item.index, item.data


class EmbeddedSource:
    """Samples read by the engine inside this process, straight from a store's data directory
    (or drive set): no server, no HTTP. Safe beside a server running on the same store (the
    catalog is read through its own SQLite connections; blobs are immutable files)."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *, drives: Sequence[str] = ()) -> None:
        if (data_dir is None) == (not drives):
            raise ValueError("give a data directory or drives, not both")
        self.data_dir = os.fspath(data_dir) if data_dir is not None else ""
        self.drives = [os.fspath(d) for d in drives]
        self._engine: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "drives": self.drives}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data_dir, self.drives = state["data_dir"], state["drives"]
        self._engine, self._loop, self._thread, self._pid = None, None, None, 0
        self._lock = threading.Lock()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this process's engine loop (a daemon thread), from any thread."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                from tierstore.server import ServerConfig, open_service

                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="tierstore-embedded", daemon=True)
                thread.start()
                config = ServerConfig(data_dir=self.data_dir or "./tierstore-data", drives=list(self.drives))

                async def start() -> Any:
                    return open_service(config)

                self._engine = asyncio.run_coroutine_threadsafe(start(), loop).result()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Stop this process's engine (a later call opens it again)."""
        with self._lock:
            if self._loop is not None and self._thread is not None and self._pid == os.getpid():
                self._engine[0].catalog.close()
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()
            self._engine, self._loop, self._thread, self._pid = None, None, None, 0

    def open_manifest(self, ref: DatasetRef | str) -> Manifest:
        ref = DatasetRef.parse(ref)

        async def fetch() -> bytes:
            datasets = self._engine[1]
            return await datasets.manifest_bytes(await datasets.get(ref.name, ref.version))  # type: ignore[no-any-return]

        return Manifest.from_parquet(self._run(fetch()))

    def read_rows(self, ref: DatasetRef, rows: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        ref = DatasetRef.parse(ref)
        if ref.version is None:
            raise ValueError(f"read_rows needs a dataset version: {ref}@N")
        version = ref.version
        rows = [int(r) for r in rows]
        for start, part in _chunks(rows):

            async def collect(part: Sequence[int] = part) -> list[bytes | DatasetReadError]:
                out: list[bytes | DatasetReadError] = []
                reads = await self._engine[1].open_rows(ref.name, version, part)
                async for i, item in _enumerate(reads):
                    if item.error is not None:
                        exc = item.error
                        status = 404 if isinstance(exc, KeyError) else 500  # api/'s table is for HTTP
                        out.append(DatasetReadError(part[i], status, exc.code, exc.message))
                        break
                    out.append(item.data if item.data is not None else b"".join([c async for c in item.body]))
                return out

            for i, data in enumerate(self._run(collect())):
                if isinstance(data, DatasetReadError):
                    raise data
                yield start + i, data


async def _enumerate(items: Any) -> Any:
    i = 0
    async for item in items:
        yield i, item
        i += 1
