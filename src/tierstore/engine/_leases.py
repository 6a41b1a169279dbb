"""Who takes leases in this process, the gateway registry's heartbeat, and named jobs run under a
lease (docs/scale-out.md "Background work: leases, for every job").

Each serving process (every granian worker: each has its own catalog pool and runs its own
background loops, so each is the unit that dies and whose work must be taken over) is one
gateway: ``Gateway`` registers it in the catalog and heartbeats; its id is ``LeaseHolder.owner``,
the owner of every lease the engine takes (trash rows, outbox rows, named jobs). A lease lasts
``LeaseHolder.lease_s`` (``--lease-seconds``, default 60 s); a job heartbeats a third of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tierstore.catalog import Catalog, GatewayInfo

__all__ = [
    "DEFAULT_LEASE_S",
    "Checkpoint",
    "Gateway",
    "LeaseHolder",
    "LeaseLost",
    "periodic_job",
    "run_job",
    "while_leased",
]

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0

T = TypeVar("T")


class LeaseLost(Exception):
    """The lease of a long item ran out and another holder took it: the item was stopped."""


def _new_owner() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class LeaseHolder:
    """The owner id this process's leases carry (its gateway id) and their length."""

    owner: str = field(default_factory=_new_owner)
    lease_s: float = DEFAULT_LEASE_S
    # Tests: called after a claim took rows, with what it claimed ("trash", "outbox").
    fault: Callable[[str], None] = field(default=lambda what: None)
    # The named jobs this process holds now (``run_job``), and how many it has run (metrics).
    jobs_held: set[str] = field(default_factory=set)
    jobs_run: int = 0

    @property
    def lease_ns(self) -> int:
        return int(self.lease_s * 1e9)


class Gateway:
    """This process in the gateway registry: ``register()`` at start, ``run()`` heartbeats (a
    third of the lease; re-registering if the row went), ``forget()`` at a clean shutdown."""

    def __init__(self, catalog: Catalog, holder: LeaseHolder, *, now_ns: Callable[[], int] = time.time_ns) -> None:
        self.catalog = catalog
        self.holder = holder
        self._now_ns = now_ns
        self.info = GatewayInfo(holder.owner, socket.gethostname(), os.getpid(), now_ns(), now_ns())

    async def register(self) -> None:
        now = self._now_ns()
        info = self.info
        self.info = GatewayInfo(info.id, info.host, info.pid, info.started_ns, now)
        await self.catalog.gateway_register(self.info)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.holder.lease_s / 3)
            try:
                if not await self.catalog.gateway_seen(self.holder.owner, self._now_ns()):
                    await self.register()
            except Exception as exc:  # PostgreSQL restarting: the next beat tries again
                log.warning("gateway heartbeat failed: %s", exc)

    async def forget(self) -> None:
        await self.catalog.gateway_forget(self.holder.owner)


Checkpoint = Callable[[str], Awaitable[bool]]


async def _awaited(step: Awaitable[T]) -> T:
    return await step


async def run_job(
    catalog: Catalog,
    holder: LeaseHolder,
    name: str,
    body: Callable[[str, Checkpoint], Awaitable[str]],
    *,
    now_ns: Callable[[], int] = time.time_ns,
) -> bool:
    """Run job ``name`` if its lease is ours to take: ``body(cursor, checkpoint)`` starts at the
    cursor the last holder saved ("" the first time) and returns the cursor to hand back;
    ``checkpoint(cursor)`` saves its progress (and renews the lease), answering False once the
    lease was lost (the body should stop). A task renews the lease meanwhile, a third of its
    length apart, and cancels the body if it is lost; a body that raises hands the job back at
    its last checkpoint. False if another holder had the job (nothing ran)."""
    claim = await catalog.job_claim(name, holder.owner, now_ns(), holder.lease_ns)
    if claim is None:
        return False
    saved = claim.cursor

    async def checkpoint(cursor: str) -> bool:
        nonlocal saved
        if not await catalog.job_renew(name, holder.owner, now_ns(), holder.lease_ns, cursor):
            return False
        saved = cursor
        return True

    def renew() -> Awaitable[bool]:
        return catalog.job_renew(name, holder.owner, now_ns(), holder.lease_ns)

    holder.jobs_held.add(name)  # /metrics: tierstore_lease_jobs_held, _run
    holder.jobs_run += 1
    try:
        final = await while_leased(body(claim.cursor, checkpoint), renew, holder.lease_s, f"job {name}")
    except LeaseLost:  # another holder runs the job now
        return True
    except Exception:
        with contextlib.suppress(Exception):
            await catalog.job_release(name, holder.owner, saved)
        raise
    finally:
        holder.jobs_held.discard(name)
    await catalog.job_release(name, holder.owner, final)
    return True


_DONE = "done:"  # a periodic job's cursor once a run ended: "done:<unix seconds>"
_DUE = "due"  # ... while a run goes on: a holder that dies leaves it due to the next


def _periodic_due(cursor: str, interval_s: float, started_s: float, now_s: float) -> bool:
    if not cursor.startswith(_DONE):
        return True  # never ran, or its last holder did not finish
    ended_s = float(cursor[len(_DONE) :])
    return ended_s < started_s or now_s >= ended_s + interval_s


async def periodic_job(
    catalog: Catalog,
    holder: LeaseHolder,
    name: str,
    run: Callable[[], Awaitable[None]],
    interval_s: float,
    started_s: float,
    *,
    now_s: Callable[[], float] = time.time,
) -> bool:
    """Run the job ``name`` (an orphan sweep) under its lease if it is due: it never ran, its
    last holder died or failed mid-run, its last run ended before this process started
    (``started_s``: a start sweeps once, whichever worker or gateway gets the lease), or
    ``interval_s`` passed since. The cursor says which: ``due`` while a run goes on (saved first,
    so a holder that dies leaves it due), ``done:<time>`` when it ended; a run that raises hands
    the job back due. One read when the job is not due or runs elsewhere; True if it ran."""
    job = await catalog.job_get(name)
    if job is not None:
        if job.owner is not None and job.owner != holder.owner and job.lease_until_ns >= time.time_ns():
            return False  # running elsewhere
        if not _periodic_due(job.cursor, interval_s, started_s, now_s()):
            return False
    ran = False

    async def body(cursor: str, checkpoint: Checkpoint) -> str:
        nonlocal ran
        if not _periodic_due(cursor, interval_s, started_s, now_s()):
            return cursor  # another holder ran it between the read and the claim
        if not await checkpoint(_DUE):
            return cursor
        await run()
        ran = True
        return f"{_DONE}{now_s()}"

    await run_job(catalog, holder, name, body)
    return ran


async def while_leased(body: Awaitable[T], renew: Callable[[], Awaitable[bool]], lease_s: float, what: str) -> T:
    """Await ``body`` (a long item: a tier move, a pin fill) while a task renews its lease a
    third of ``lease_s`` apart (``renew()``: False once the lease is lost). A lost lease cancels
    the body and raises ``LeaseLost``; the holder then finishes nothing (its finishing calls are
    fenced anyway). A failed renew (the catalog unreachable) is retried at the next beat."""
    loop = asyncio.get_running_loop()
    work: asyncio.Task[T] = loop.create_task(_awaited(body))
    lost = False

    async def beat() -> None:
        nonlocal lost
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                kept = await renew()
            except Exception as exc:
                log.warning("%s: lease heartbeat failed: %s", what, exc)
                continue
            if not kept:
                log.warning("%s: the lease was taken over; stopping", what)
                lost = True
                work.cancel()
                return

    beating = loop.create_task(beat())
    try:
        return await work
    except asyncio.CancelledError:
        me = asyncio.current_task()
        if lost and (me is None or not me.cancelling()):
            raise LeaseLost(what) from None
        raise
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
