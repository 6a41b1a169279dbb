"""JSON request bodies whose one big array is parsed lazily, element by element.

``json.loads`` of a 200 MiB ``{"name": ..., "rows": [...]}`` holds the text, a decoded copy
and a Python dict per row: the server grew by 1.4 GiB. ``loads_lazy`` parses the object
member by member from the bytes through a 1 MiB decoded window and leaves the named array as a
``LazyArray``: its elements are checked (and counted) once, then parsed again each time it is
iterated, one at a time. What stays resident is the request's bytes, read once into one buffer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["JSONTooLarge", "LazyArray", "loads_lazy"]

_WINDOW_BYTES = 1 << 20
_MAX_VALUE_BYTES = 4 << 20  # one member or element: larger is refused rather than decoded whole
_MAX_OTHER_CHARS = 1 << 20  # all members but the lazy array together: they are held as objects
_NOT_WS = re.compile(r"[^ \t\n\r]")
_SEPARATOR = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_NUMBER = "0123456789+-.eE"
_DECODER = json.JSONDecoder()
# raw_decode's own scanner: (value, end) or StopIteration, without building a JSONDecodeError.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


class JSONShapeError(ValueError):
    """Not valid JSON."""


class JSONTooLarge(JSONShapeError):
    """Valid so far, but a part of it is larger than this parser holds (the message says which)."""


class _Cursor:
    """A read position in UTF-8 JSON bytes, seen through a decoded window of text."""

    def __init__(self, buf: bytes | bytearray, pos: int) -> None:
        self.buf = buf
        self.base = pos  # byte offset of text[0]
        self.size = _WINDOW_BYTES
        self.text = ""
        self.end = pos
        self.i = 0
        self.last_chars = 0  # length of the text of the last value()
        self._fill()

    def _fill(self) -> None:
        buf = self.buf
        end = min(len(buf), self.base + self.size)
        while self.base < end < len(buf) and buf[end] & 0xC0 == 0x80:  # not inside a character
            end -= 1
        self.end = end
        self.text = bytes(memoryview(buf)[self.base : end]).decode("utf-8")
        self.i = 0

    @property
    def _whole(self) -> bool:
        return self.end >= len(self.buf)

    def _more(self) -> None:
        """Bring more text into view: drop what was read, else widen the window."""
        if self.i:
            self.base += len(self.text[: self.i].encode("utf-8"))
        elif self.size >= _MAX_VALUE_BYTES:
            raise JSONTooLarge(f"A JSON value in the request body is larger than {_MAX_VALUE_BYTES} bytes.")
        else:
            self.size *= 2
        self._fill()

    def offset(self) -> int:
        return self.base + len(self.text[: self.i].encode("utf-8"))

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            found = _NOT_WS.search(self.text, self.i)
            if found is not None:
                self.i = found.start()
                return self.text[self.i]
            self.i = len(self.text)
            if self._whole:
                return ""
            self._more()

    def take(self, char: str) -> None:
        if self.peek() != char:
            raise JSONShapeError(f"Expected {char!r} at byte {self.offset()}.")
        self.i += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                obj, j = _DECODER.raw_decode(self.text, self.i)
            except json.JSONDecodeError as exc:
                if self._whole:
                    raise JSONShapeError(str(exc)) from exc
                self._more()  # maybe cut by the window's end
                continue
            if not self._whole and len(self.text) - j < 64 and not self.text[j:].strip(_NUMBER):
                self._more()  # the window may have cut a number ("1.5e" of "1.5e+10")
                continue
            self.last_chars = j - self.i
            self.i = j
            return obj


class LazyArray:
    """The elements of one JSON array inside ``buf``, parsed one at a time on each iteration."""

    def __init__(self, buf: bytes | bytearray, start: int, count: int) -> None:
        self._buf = buf
        self._start = start
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        return _elements(_Cursor(self._buf, self._start))


def _elements(cur: _Cursor) -> Iterator[Any]:
    cur.take("[")
    if cur.peek() == "]":
        cur.i += 1
        return
    scan, separator = _SCAN, _SEPARATOR.match
    while True:
        # Fast path: the element and the separator after it are both inside the window (a value
        # followed by "," or "]" was not cut by the window's end). scan_once: raw_decode without
        # the JSONDecodeError, whose line count costs a pass over the window.
        try:
            obj, j = scan(cur.text, cur.i)
            sep = separator(cur.text, j)
        except (StopIteration, json.JSONDecodeError):
            sep = None
        if sep is not None:
            cur.i = sep.end()
            yield obj
            if sep.group(1) == "]":
                return
            continue
        yield cur.value()  # at the window's edge, or an error to report
        if cur.peek() == "]":
            cur.i += 1
            return
        cur.take(",")
        cur.peek()  # the fast path starts at the value itself


def loads_lazy(buf: bytes | bytearray, lazy: str) -> Any:
    """Parse the JSON document in ``buf`` (UTF-8) as ``json.loads`` would, except that an array
    member named ``lazy`` of the top-level object becomes a ``LazyArray``. Raises ValueError
    (``UnicodeDecodeError`` or ``JSONShapeError``) or RecursionError like ``json.loads``."""
    if buf[:3] == b"\xef\xbb\xbf":
        raise JSONShapeError("Unexpected UTF-8 BOM.")
    cur = _Cursor(buf, 0)
    if cur.peek() != "{":
        doc = cur.value()
    else:
        cur.i += 1
        doc = {}
        held = 0
        if cur.peek() == "}":
            cur.i += 1
        else:
            while True:
                key = cur.value()
                if not isinstance(key, str):
                    raise JSONShapeError(f"Expected a member name at byte {cur.offset()}.")
                held += cur.last_chars
                cur.take(":")
                if key == lazy and cur.peek() == "[":
                    start = cur.offset()
                    count = 0
                    for _ in _elements(cur):  # checked and counted, not kept
                        count += 1
                    doc[key] = LazyArray(buf, start, count)
                else:
                    doc[key] = cur.value()
                    held += cur.last_chars
                if held > _MAX_OTHER_CHARS:
                    raise JSONTooLarge(f"The members besides {lazy!r} are larger than {_MAX_OTHER_CHARS} characters.")
                if cur.peek() == "}":
                    cur.i += 1
                    break
                cur.take(",")
    if cur.peek() != "":
        raise JSONShapeError(f"Extra data at byte {cur.offset()}.")
    return doc
