"""Ports for the servers the tests start (tierstore, SeaweedFS, PostgreSQL): picked at random
below the kernel's ephemeral range, never by binding port 0. A test that stops a server and
starts it again on the same ports (a tier going away and coming back, a kill -9 and restart)
would otherwise find a port taken meanwhile by some client connection's ephemeral port — more
likely with ./dev test's 3 pytest processes connecting at once."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOW = 20000  # above the well-known and most registered service ports


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(n: int = 1) -> int:
    """A port ``p`` such that ``p .. p+n-1`` are free on 127.0.0.1 right now, outside the
    ephemeral range."""
    high = _ephemeral_low()
    low = _LOW if high - _LOW >= 1000 else 10000
    pick = random.SystemRandom()
    for _ in range(1000):
        base = pick.randrange(low, high - n)
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports on 127.0.0.1")


def free_port() -> int:
    return free_port_block(1)
