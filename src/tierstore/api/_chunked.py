"""Incremental decoder for S3 ``aws-chunked`` bodies (signed, signed with trailer, unsigned trailer).

Wire format::

    <hex-size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n ... 0[;chunk-signature=<sig>]\\r\\n
    [<name>:<value>\\r\\n ...][x-amz-trailer-signature:<sig>\\r\\n]\\r\\n

The decoder is push-based: ``feed`` takes pieces split at any byte boundary and returns views of
the payload bytes they carry; chunk data is streamed through (hashed incrementally), never
buffered whole. Only framing lines are buffered, and those are bounded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from tierstore.api._sigv4 import EMPTY_SHA256, ChunkVerifier
from tierstore.errors import IncompleteBody, InvalidRequest, SignatureDoesNotMatch

__all__ = ["ChunkedDecoder"]

_MAX_SIZE_LINE_BYTES = 256  # "10000;chunk-signature=<64 hex>\r\n" is 88 bytes
_MAX_TRAILER_LINE_BYTES = 1024
_MAX_TRAILERS = 16
_TRAILER_SIGNATURE = "x-amz-trailer-signature"

_SIGNED_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,16});chunk-signature=([0-9a-fA-F]{64})\r\n")
_UNSIGNED_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,16})(?:;[\x20-\x7e]*)?\r\n")  # extensions ignored

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)
_EMPTY_SHA256 = EMPTY_SHA256.encode("ascii")


class ChunkedDecoder:
    """Decodes one aws-chunked body.

    ``verifier`` is None for ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``. ``has_trailer`` says whether
    a trailer section may follow the last chunk (``...-TRAILER`` modes); in the signed trailer
    mode it must end with a valid ``x-amz-trailer-signature``.
    """

    __slots__ = (
        "_allowed",
        "_decoded_length",
        "_has_trailer",
        "_hasher",
        "_line",
        "_remaining",
        "_signature",
        "_state",
        "_total",
        "_trailer_signed",
        "_trailers",
        "_verifier",
    )

    def __init__(
        self,
        *,
        verifier: ChunkVerifier | None,
        has_trailer: bool,
        allowed_trailers: frozenset[str] = frozenset(),
        decoded_length: int | None = None,
    ) -> None:
        self._verifier = verifier
        self._has_trailer = has_trailer
        self._allowed = allowed_trailers
        self._decoded_length = decoded_length
        self._state = _SIZE
        self._line = bytearray()
        self._remaining = 0
        self._total = 0
        self._hasher: hashlib._Hash | None = None
        self._signature = b""
        self._trailers: dict[str, str] = {}
        self._trailer_signed = False

    @property
    def decoded_bytes(self) -> int:
        """Payload bytes declared by the chunks read so far."""
        return self._total

    def feed(self, piece: bytes) -> Iterator[memoryview]:
        """Consume ``piece``; yield the payload bytes in it (views into ``piece``)."""
        n = len(piece)
        pos = 0
        view = memoryview(piece)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - pos)
                segment = view[pos : pos + take]
                pos += take
                if self._hasher is not None:
                    self._hasher.update(segment)
                self._remaining -= take
                if not self._remaining:
                    self._end_of_data()
                yield segment
            elif state == _DONE:
                raise InvalidRequest("Unexpected bytes after the end of the aws-chunked body.")
            else:
                limit = _MAX_TRAILER_LINE_BYTES if state == _TRAILER else _MAX_SIZE_LINE_BYTES
                newline = piece.find(b"\n", pos, pos + limit + 1 - len(self._line))
                if newline < 0:
                    if len(self._line) + n - pos > limit:
                        raise InvalidRequest("Malformed aws-chunked framing: line too long.")
                    self._line += view[pos:]
                    return
                if self._line:
                    self._line += view[pos : newline + 1]
                    line = bytes(self._line)
                    self._line.clear()
                else:
                    line = piece[pos : newline + 1]
                pos = newline + 1
                self._on_line(line)

    def finish(self) -> dict[str, str]:
        """Call at the end of the input; raises unless the body was complete and consistent.
        Returns the (verified) trailers."""
        if self._state != _DONE:
            raise IncompleteBody("The aws-chunked body ended before its final chunk.")
        if self._decoded_length is not None and self._total != self._decoded_length:
            raise IncompleteBody(
                f"Decoded {self._total} bytes; x-amz-decoded-content-length says {self._decoded_length}."
            )
        return dict(self._trailers)

    # --- framing ---------------------------------------------------------------------------
    def _on_line(self, line: bytes) -> None:
        state = self._state
        if state == _SIZE:
            self._on_size_line(line)
        elif state == _DATA_END:
            if line != b"\r\n":
                raise InvalidRequest("Malformed aws-chunked framing: chunk data not followed by CRLF.")
            self._state = _SIZE
        else:
            assert state == _TRAILER
            self._on_trailer_line(line)

    def _on_size_line(self, line: bytes) -> None:
        if self._verifier is not None:
            match = _SIGNED_SIZE_LINE.fullmatch(line)
            if match is None:
                raise InvalidRequest("Malformed aws-chunked framing: bad chunk header.")
            self._signature = match.group(2)
        else:
            match = _UNSIGNED_SIZE_LINE.fullmatch(line)
            if match is None:
                raise InvalidRequest("Malformed aws-chunked framing: bad chunk size.")
        size = int(match.group(1), 16)
        self._total += size
        if self._decoded_length is not None and self._total > self._decoded_length:
            raise IncompleteBody("The aws-chunked body is longer than x-amz-decoded-content-length.")
        if size:
            self._remaining = size
            self._hasher = hashlib.sha256() if self._verifier is not None else None
            self._state = _DATA
            return
        if self._verifier is not None:
            self._verifier.verify_chunk(_EMPTY_SHA256, self._signature)
        self._state = _TRAILER

    def _end_of_data(self) -> None:
        if self._verifier is not None:
            assert self._hasher is not None
            self._verifier.verify_chunk(self._hasher.hexdigest().encode("ascii"), self._signature)
            self._hasher = None
        self._state = _DATA_END

    def _on_trailer_line(self, line: bytes) -> None:
        if line == b"\r\n":
            self._end_of_trailers()
            return
        if not self._has_trailer:
            raise InvalidRequest("Malformed aws-chunked framing: trailers in a body without x-amz-trailer.")
        if self._trailer_signed:
            raise InvalidRequest("Malformed aws-chunked framing: data after the trailer signature.")
        if not line.endswith(b"\r\n"):
            raise InvalidRequest("Malformed aws-chunked framing: trailer line not ended by CRLF.")
        name, sep, value = line[:-2].decode("latin-1").partition(":")
        name = name.strip().lower()
        value = value.strip()
        if not sep or not name:
            raise InvalidRequest("Malformed aws-chunked trailer.")
        if name == _TRAILER_SIGNATURE:
            if self._verifier is None:
                raise InvalidRequest("A trailer signature in an unsigned aws-chunked body.")
            canonical = "".join(f"{k}:{v}\n" for k, v in self._trailers.items()).encode("latin-1")
            digest = hashlib.sha256(canonical).hexdigest().encode("ascii")
            self._verifier.verify_trailer(digest, value.encode("latin-1"))
            self._trailer_signed = True
            return
        if name not in self._allowed:
            raise InvalidRequest(f"Trailer {name!r} was not declared in x-amz-trailer.")
        if name in self._trailers:
            raise InvalidRequest(f"Trailer {name!r} appears twice.")
        if len(self._trailers) >= _MAX_TRAILERS:
            raise InvalidRequest("Too many trailers.")
        self._trailers[name] = value

    def _end_of_trailers(self) -> None:
        if self._has_trailer and self._verifier is not None and not self._trailer_signed:
            raise SignatureDoesNotMatch("The aws-chunked body is missing its x-amz-trailer-signature.")
        missing = self._allowed - self._trailers.keys() if self._has_trailer else set()
        if missing:
            names = ", ".join(sorted(missing))
            raise IncompleteBody(f"Missing trailer(s) declared in x-amz-trailer: {names}.")
        self._state = _DONE
