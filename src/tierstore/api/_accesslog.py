"""One request as the access log and the metrics see it: bytes each way, time to first byte.

``Exchange`` holds a request's body byte counts and when its response started; ``access_line``
renders the JSON line (docs/observability.md). Nothing from the request's headers or query
string goes into it but the User-Agent: no signature, no credential, no presigned query ever
reaches the log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring_ascii
from typing import Any

__all__ = ["AccessLog", "Exchange", "access_line", "iso_time", "json_str"]

Receive = Callable[[], Awaitable[dict[str, Any]]]

MAX_LOGGED_CHARS = 1024  # a key or user agent longer than this is cut (S3 keys are at most 1024 bytes)
FLUSH_LINES = 256  # the buffer is written out at this many lines, and by the app every FLUSH_INTERVAL_S

_EMPTY = '""'  # a JSON empty string
_PIPE_BUF = 4096  # POSIX: writes up to this size to a pipe are not interleaved with others


class AccessLog:
    """Lines gathered in memory and appended to a file descriptor in one write(): per request a
    list append, not a logging record and a syscall (the log is on by default). The app flushes
    it every ``Metrics.run`` tick and at shutdown; a crash loses at most that tick's lines."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines: list[str] = []

    @classmethod
    def open(cls, path: str | None) -> AccessLog:
        """Append to ``path`` (created 0644), or to a duplicate of stderr when None."""
        if path is None:
            return cls(os.dup(2))
        return cls(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))

    def write(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines in writes of at most PIPE_BUF bytes, cut between lines: the
        workers share the log, and a pipe keeps each such write whole (a file opened O_APPEND
        keeps any write whole)."""
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            data = line.encode() + b"\n"
            if size + len(data) > _PIPE_BUF and chunk:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


class Exchange:
    """One request's byte counts and times. ``receive`` wraps the ASGI receive (the request body
    is counted as it is read); the app's ``_send`` sets ``first_byte`` and ``bytes_out`` itself
    (a ``send`` wrapper cost two coroutines per small response)."""

    __slots__ = ("_receive", "bytes_in", "bytes_out", "first_byte", "started", "wall_started")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
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

    @property
    def ttfb_s(self) -> float:
        return (self.first_byte or time.perf_counter()) - self.started


def json_str(text: str | None, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` (cut at ``limit`` characters) as a JSON string, by json's C escaper (quotes,
    backslashes, control and non-ASCII characters escaped; the same output as json.dumps, at
    half the cost of checking for a plain string in Python first)."""
    return encode_basestring_ascii(text[:limit]) if text else _EMPTY


def access_line(
    x: Exchange,
    request_id: str,
    remote: str,
    method: str,
    access_key: str,
    api: str,
    bucket: str | None,
    key: str | None,
    status: int,
    error_code: str,
    ttfb_s: float,
    total_s: float,
    user_agent: str | None,
    decision: str = "",
    policy: str | None = None,
) -> str:
    """One JSON object (the keys in this order), built by hand: the log is on for every request.
    ``request_id``, ``api`` and ``error_code`` are the server's own tokens, ``method`` an HTTP
    token and ``remote`` an address: quoted as they are; the client's strings are escaped
    (``json_str``, inlined: this runs for every request). ``decision``: the authorizer's
    (``allow``, ``explicit_deny``, ``implicit_deny``; empty when the request was not authorized
    as a whole), ``policy``: ``POLICY:STATEMENT`` that decided. Positional (a call with a dozen
    keywords costs more than the line's escaping)."""
    # The strings a client repeats all day (its key, the bucket, its User-Agent, the deciding
    # statement) escaped once each (``_escaped``); the object key, new on every line, each time.
    seen = _ESCAPED
    # Plain ``{int}`` fields (a ``:d`` spec costs a format-spec parse per field), the two floats
    # through one ``%`` (cheaper than two ``:.6f`` specs), the time from a per-second prefix.
    return (
        f'{{"time": "{iso_time(x.wall_started)}", "request_id": "{request_id}", '
        f'"remote": "{remote}", "access_key": {seen.get(access_key) or _escaped(access_key)}, '
        f'"method": "{method}", "api": "{api}", "bucket": {seen.get(bucket) or _escaped(bucket)}, '
        f'"key": {encode_basestring_ascii(key[:MAX_LOGGED_CHARS]) if key else _EMPTY}, "status": {status}, '
        f'"error": "{error_code}", "bytes_in": {x.bytes_in}, "bytes_out": {x.bytes_out}, '
        f'{_TIMES % (ttfb_s, total_s)}, '
        f'"user_agent": {seen.get(user_agent) or _escaped(user_agent)}, '
        f'"decision": "{decision}", "policy": {seen.get(policy) or _escaped(policy)}}}'
    )


_TIMES = '"ttfb_s": %.6f, "total_s": %.6f'
_ESCAPED: dict[str | None, str] = {None: _EMPTY, "": _EMPTY}  # a string -> json_str(string)
_ESCAPED_MAX = 256  # a few KiB at most: a User-Agent is cut at MAX_LOGGED_CHARS


def _escaped(text: str | None) -> str:
    """``json_str(text)``, remembered (up to ``_ESCAPED_MAX`` strings, then forgotten at once)."""
    found = json_str(text)
    if len(_ESCAPED) >= _ESCAPED_MAX:
        _ESCAPED.clear()
        _ESCAPED[None] = _ESCAPED[""] = _EMPTY
    _ESCAPED[text] = found
    return found


def iso_time(t: float) -> str:
    """``t`` (seconds since the epoch) as ``2026-12-07T02:38:36.123Z``: the second's text is
    formatted once per second (``_second``), the milliseconds looked up (``_MILLIS``)."""
    millis = int(t * 1000)
    seconds = millis // 1000
    second = _second
    if second[0] != seconds:
        second = _new_second(seconds)
    return second[1] + _MILLIS[millis - seconds * 1000]


_MILLIS = tuple(f".{i:03d}Z" for i in range(1000))
_second: tuple[int, str] = (-1, "")  # the last second logged, and its text


def _new_second(seconds: int) -> tuple[int, str]:
    global _second
    _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return _second
