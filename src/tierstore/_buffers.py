"""``filled_bytes``: a new ``bytes`` object written in place, without zeroing it or copying into it.

A 64 MiB GET moves every byte through a few buffers (page cache -> the read, ciphertext ->
plaintext, plaintext -> granian's send buffer -> the socket), and at 2 GB/s one extra pass over
64 MiB is ~5 ms of a GET's ~40 ms of server CPU. Python offers no way to *fill* a new ``bytes``:
``os.preadv`` and ``AESGCM.decrypt_into`` write into a writable buffer, and turning a
``bytearray`` into the immutable ``bytes`` every reader of a blob expects costs a copy (and a
fresh ``bytearray`` is zeroed first: one more pass). C code builds a ``bytes`` as
``PyBytes_FromStringAndSize(NULL, n)`` and writes its payload before anyone else sees it; this
module does the same through ``ctypes``, behind one function whose callback never lets the
writable view escape. Where the interpreter's layout is not CPython's (checked at import), it
falls back to a ``bytearray`` and a copy: the same result, slower.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["filled_bytes"]


def _filled_by_copy(size: int, fill: Callable[[memoryview], None]) -> bytes:
    buf = bytearray(size)
    with memoryview(buf) as view:
        fill(view)
    return bytes(buf)


_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_view_of = ctypes.pythonapi.PyMemoryView_FromMemory
_view_of.restype = ctypes.py_object
_view_of.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
_PYBUF_WRITE = 0x200
_PAYLOAD_OFFSET = bytes.__basicsize__ - 1  # CPython: the header, then ob_sval (size + 1 bytes: a NUL)


def _filled_in_place(size: int, fill: Callable[[memoryview], None]) -> bytes:
    if size <= 1:  # CPython shares its empty and 1-byte objects: never write into those
        return _filled_by_copy(size, fill)
    data: bytes = _new_bytes(None, size)  # a new object (refcount 1, payload not initialised)
    with _view_of(id(data) + _PAYLOAD_OFFSET, size, _PYBUF_WRITE) as view:  # format "B", writable
        fill(view)
    return data


def _in_place_works() -> bool:
    want = bytes(range(7, 7 + 64))
    try:
        got = _filled_in_place(len(want), lambda view: view.__setitem__(slice(None), want))
    except (AttributeError, TypeError, ValueError, OSError):
        return False
    return type(got) is bytes and got == want and hash(got) == hash(want)


def filled_bytes(size: int, fill: Callable[[memoryview], None]) -> bytes:
    """A new ``bytes`` of ``size`` bytes whose content ``fill(view)`` writes: ``view`` is a
    writable byte view of exactly ``size`` bytes, valid only during the call (``fill`` must write
    every byte and keep no reference to it). An exception from ``fill`` propagates and no object
    is returned."""
    return _fill(size, fill)


_fill = _filled_in_place if _in_place_works() else _filled_by_copy
