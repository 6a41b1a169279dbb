"""The catalog's connections to PostgreSQL: one bounded asyncpg pool per process, and the one
place where driver and connection errors become domain errors (docs/scale-out.md "Failure
behaviour", "The connection pool bound").

- At most ``pool_size`` connections; a checkout waits at most ``checkout_timeout_s`` and then
  answers ``SlowDown`` (503) instead of queueing without bound.
- PostgreSQL unreachable, restarting or gone mid-statement (refused connections,
  ``CannotConnectNowError``, ``ConnectionDoesNotExistError``, administrator shutdown, timeouts,
  too many connections, a read-only standby during a failover) -> ``SlowDown`` with
  ``Retry-After``. The pool replaces dead connections at the next checkout, so the catalog
  recovers by itself once PostgreSQL is back.
- PostgreSQL's disk full -> ``InsufficientStorage`` (507), as SQLite's; invalid connection
  settings (a malformed DSN) -> ``InternalError`` naming the DSN without its password.
- Any other driver error is a bug or a broken database -> ``InternalError("Catalog error.")``,
  logged with its class; the client never sees the driver's text.
- The pool's reset is a no-op: the catalog keeps no session state on pooled connections
  (advisory locks are transaction-scoped, no LISTEN, no session ``SET``), so asyncpg's default
  reset (four statements, one round trip per release) would be pure cost
  (benchmarks/pg_driver.py).
- The DSN's password never appears in a message or log: ``redact_dsn`` shows it as ``***``.
- ``Pool.stats`` counts, for /metrics (docs/observability.md "Cluster"): connections in use, the
  checkouts that found every connection in use and how long they waited, the checkouts that timed
  out (the 503s) and the errors that made PostgreSQL unavailable. Plain integer arithmetic: a
  checkout that finds a connection free adds one comparison and two increments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from tierstore.errors import InsufficientStorage, InternalError, SlowDown, TierstoreError

__all__ = ["RETRY_AFTER_S", "Pool", "PoolSettings", "PoolStats", "connect_error", "redact_dsn", "translate"]

log = logging.getLogger("tierstore.catalog.postgres")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The pool's bound and waits (docs/scale-out.md "The connection pool bound")."""

    pool_size: int = 8  # connections at most, per process
    checkout_timeout_s: float = 10.0  # a checkout (or a connect) waits this long, then 503
    statement_timeout_s: float = 60.0  # a statement that has not answered by then: 503

    def __post_init__(self) -> None:
        if self.pool_size < 1 or self.checkout_timeout_s <= 0 or self.statement_timeout_s <= 0:
            raise ValueError(f"invalid catalog pool settings: {self}")


@dataclass(slots=True)
class PoolStats:
    """What one process's pool did (counters since it opened; ``in_use`` now)."""

    size: int = 0  # the bound (pool_size)
    in_use: int = 0  # connections checked out now
    waits: int = 0  # checkouts that found every connection in use and waited
    wait_s: float = 0.0  # the time those checkouts waited (until a connection, or their timeout)
    timeouts: int = 0  # checkouts that waited checkout_timeout_s and were answered 503
    errors: int = 0  # errors that made PostgreSQL unavailable (503), the timeouts included


RETRY_AFTER_S = 2  # a PostgreSQL restart (crash recovery of a small WAL) takes about this long
# Transactions that lost a deadlock or a serialization check are run again, at most this often.
_RETRIES = 3

# PostgreSQL gone, refusing or restarting: the request may succeed if retried later.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (asyncpg raises the socket's error as is)
    TimeoutError,  # the pool checkout, a connect or a statement that timed out
    asyncpg.PostgresConnectionError,  # class 08: ConnectionDoesNotExistError, ConnectionFailureError, ...
    asyncpg.OperatorInterventionError,  # class 57: AdminShutdown, CrashShutdown, CannotConnectNow, canceled
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, out of memory
    asyncpg.ReadOnlySQLTransactionError,  # a standby answering during a failover (the DSN's host moved)
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing": the client side of the same
    asyncpg.exceptions.InternalClientError,
)
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password (in the userinfo or a ``password=`` parameter) shown as ``***``."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "postgresql://***"  # not a URL we can take apart: show nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def translate(exc: BaseException, shown_dsn: str) -> BaseException:
    """The domain error for ``exc`` raised while talking to PostgreSQL; domain errors (and
    anything the catalog's own code or its callers' callbacks raised) pass through unchanged."""
    if isinstance(exc, TierstoreError) or not isinstance(exc, (*_UNAVAILABLE, asyncpg.PostgresError)):
        return exc
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return _invalid_settings(exc, shown_dsn)
    if isinstance(exc, asyncpg.DiskFullError):  # 507, as SQLite's full disk
        log.error("catalog %s: PostgreSQL's disk is full", shown_dsn)
        out: TierstoreError = InsufficientStorage("The catalog could not be written: its disk is full.")
    elif isinstance(exc, _UNAVAILABLE) and not isinstance(exc, asyncpg.ProtocolViolationError):  # 08P01: a bug
        log.warning("catalog %s unavailable: %s", shown_dsn, type(exc).__name__)
        out = SlowDown("The catalog is unavailable; retry later.", headers={"Retry-After": str(RETRY_AFTER_S)})
    else:
        log.error("catalog %s: %s (sqlstate %s)", shown_dsn, type(exc).__name__, getattr(exc, "sqlstate", None))
        out = InternalError("Catalog error.")
    out.__cause__ = exc
    return out


def _invalid_settings(exc: BaseException, shown_dsn: str) -> TierstoreError:
    """A bad DSN or option: no retry helps. The driver's text may quote the DSN: not shown."""
    log.error("catalog %s: invalid connection settings (%s)", shown_dsn, type(exc).__name__)
    return InternalError(f"The catalog's connection settings are invalid: {shown_dsn}")


def connect_error(exc: BaseException, shown_dsn: str) -> BaseException:
    """``translate`` for an error while connecting, where the driver's ``ValueError`` (a port
    that is not a number, an unknown option) means the settings are wrong."""
    if isinstance(exc, ValueError) and not isinstance(exc, TierstoreError):
        return _invalid_settings(exc, shown_dsn)  # its callers raise it ``from None``: no chain
    return translate(exc, shown_dsn)


async def _transaction(conn: Any, first: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``BEGIN; first`` as one simple-protocol round trip, then ``fn``, then ``COMMIT`` (or
    ``ROLLBACK`` if anything raised; a connection released in a transaction is rolled back by
    the pool anyway)."""
    await conn.execute(f"BEGIN; {first}")
    try:
        result = await fn(conn)
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(*_UNAVAILABLE, asyncpg.PostgresError):
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
    return result


async def _no_reset(conn: Any) -> None:
    """Nothing to undo on a released connection (see the module docstring)."""


class Pool:
    """The bounded pool: ``connection()`` for a checkout, ``fetch``/``fetchrow``/``fetchval`` for
    one statement, ``write(fn)`` for a transaction; every error translated (``translate``)."""

    def __init__(self, pool: Any, shown_dsn: str, checkout_timeout_s: float, size: int) -> None:
        self._pool = pool
        self.shown_dsn = shown_dsn
        self._checkout_timeout_s = checkout_timeout_s
        self.stats = PoolStats(size=size)

    @classmethod
    async def open(cls, dsn: str, settings: PoolSettings) -> Pool:
        """A pool of at most ``settings.pool_size`` connections to ``dsn`` (one opened now, to fail
        early; idle ones are closed after asyncpg's 300 s, and made again at a checkout)."""
        shown = redact_dsn(dsn)
        pool = None
        try:
            # No floor (min_size 0): asyncpg >= 0.32 restores a floor from a background task that
            # logs a traceback per attempt while PostgreSQL is down; without one, connections are
            # made at checkout, where their errors are translated. The first is made now.
            pool = await asyncpg.create_pool(
                dsn,
                min_size=0,
                max_size=settings.pool_size,
                reset=_no_reset,
                command_timeout=settings.statement_timeout_s,
                timeout=settings.checkout_timeout_s,  # connecting
            )
            async with pool.acquire(timeout=settings.checkout_timeout_s):
                pass
        except BaseException as exc:
            if pool is not None:
                pool.terminate()
            raise connect_error(exc, shown) from None
        return cls(pool, shown, settings.checkout_timeout_s, settings.pool_size)

    async def close(self) -> None:
        with contextlib.suppress(*_UNAVAILABLE, asyncpg.PostgresError):
            await asyncio.wait_for(self._pool.close(), self._checkout_timeout_s)
        self._pool.terminate()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled connection for the block; errors inside are translated."""
        stats = self.stats
        began = time.monotonic() if stats.in_use >= stats.size else 0.0  # every connection in use: a wait
        held = False
        try:
            async with self._pool.acquire(timeout=self._checkout_timeout_s) as conn:
                held = True
                stats.in_use += 1
                if began:
                    self._waited(began)
                try:
                    yield conn
                finally:
                    stats.in_use -= 1
        except BaseException as exc:
            self._reraise(exc, None if held else began)

    def _waited(self, began: float) -> None:
        self.stats.waits += 1
        self.stats.wait_s += time.monotonic() - began

    def _reraise(self, exc: BaseException, checkout_began: float | None = None) -> NoReturn:
        """Raise ``exc`` translated; ``checkout_began``: it was raised before a connection was
        had (0.0: one was free at first; None: after)."""
        out = translate(exc, self.shown_dsn)
        if out is exc:
            raise exc
        if isinstance(out, SlowDown):
            self.stats.errors += 1
            if checkout_began is not None and isinstance(exc, TimeoutError):
                self.stats.timeouts += 1
                if checkout_began:
                    self._waited(checkout_began)
        raise out from exc

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def statement(self, sql: str, *args: Any) -> Any:
        """The value of one statement that writes, in its own transaction (autocommit: committed
        when this returns); run again if it lost a deadlock or a serialization check (as ``write``)."""
        attempt = 0
        while True:
            async with self.connection() as conn:
                try:
                    return await conn.fetchval(sql, *args)
                except _RETRYABLE:
                    if attempt >= _RETRIES:
                        raise
                    attempt += 1
                    log.info("catalog statement retried after a deadlock or serialization failure")

    async def write(self, fn: Callable[[Any], Awaitable[T]], *, first: str = "") -> T:
        """``await fn(conn)`` in one READ COMMITTED transaction, committed when this returns; run
        again (whole) if it lost a deadlock or a serialization check. ``first``: SQL without
        parameters (the advisory locks) sent with ``BEGIN`` in one round trip."""
        attempt = 0
        stats = self.stats
        while True:
            began = time.monotonic() if stats.in_use >= stats.size else 0.0  # as in ``connection``
            held = False
            try:
                async with self._pool.acquire(timeout=self._checkout_timeout_s) as conn:
                    held = True
                    stats.in_use += 1
                    if began:
                        self._waited(began)
                    try:
                        if not first:
                            async with conn.transaction():
                                return await fn(conn)
                        return await _transaction(conn, first, fn)
                    finally:
                        stats.in_use -= 1
            except BaseException as exc:
                if isinstance(exc, _RETRYABLE) and attempt < _RETRIES:
                    attempt += 1
                    log.info("catalog transaction retried after %s", type(exc).__name__)
                    continue
                self._reraise(exc, None if held else began)
