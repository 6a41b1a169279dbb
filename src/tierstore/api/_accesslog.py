"""One request as the access log and the metrics see it: bytes each way, time to first byte.

``Exchange`` wraps the ASGI ``receive``/``send`` of a request to count body bytes and note when
the response started; ``access_line`` renders the JSON line (docs/observability.md). Nothing
from the request's headers or query string goes into it but the User-Agent: no signature, no
credential, no presigned query ever reaches the log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Exchange", "access_line"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_LOGGED_CHARS = 1024  # a key or user agent longer than this is cut (S3 keys are at most 1024 bytes)


class Exchange:
    __slots__ = ("_receive", "_send", "bytes_in", "bytes_out", "first_byte", "started", "wall_started")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.started = time.perf_counter()
        self.wall_started = time.time()
        self.bytes_in = 0
        self.bytes_out = 0
        self.first_byte: float | None = None

    async def receive(self) -> dict[str, Any]:
        msg = await self._receive()
        if msg["type"] == "http.request":
            self.bytes_in += len(msg.get("body", b""))
        return msg

    async def send(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            self.first_byte = time.perf_counter()
        elif msg["type"] == "http.response.body":
            self.bytes_out += len(msg.get("body", b""))
        await self._send(msg)

    @property
    def ttfb_s(self) -> float:
        return (self.first_byte or time.perf_counter()) - self.started


def _cut(text: str | None) -> str:
    return (text or "")[:MAX_LOGGED_CHARS]


def access_line(
    x: Exchange,
    *,
    request_id: str,
    remote: str,
    method: str,
    access_key: str,
    api: str,
    bucket: str | None,
    key: str | None,
    status: int,
    error_code: str,
    total_s: float,
    user_agent: str | None,
) -> str:
    t = x.wall_started
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
    return json.dumps(
        {
            "time": when,
            "request_id": request_id,
            "remote": remote,
            "access_key": access_key,
            "method": method,
            "api": api,
            "bucket": _cut(bucket),
            "key": _cut(key),
            "status": status,
            "error": error_code,
            "bytes_in": x.bytes_in,
            "bytes_out": x.bytes_out,
            "ttfb_s": round(x.ttfb_s, 6),
            "total_s": round(total_s, 6),
            "user_agent": _cut(user_agent),
        },
        ensure_ascii=False,
    )
