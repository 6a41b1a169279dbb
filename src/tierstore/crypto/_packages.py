"""The SSE body format: a stream sealed in 64 KiB AES-256-GCM packages (docs/encryption.md).

A *stream* is what one blob holds (a single PUT's body, or one multipart part). Its plaintext is
cut into packages of ``package_bytes`` (the last may be shorter; an empty body is one empty
package), each sealed on its own with AES-256-GCM::

    nonce_i = nonce prefix (7 bytes) | final (1 byte: 1 for the last package, else 0) | u32be(i)
    aad     = b"tierstore-sse/1" | u32be(part number)            (0 for a single PUT)

and the stream is the concatenation of the sealed packages, nothing else: offsets are arithmetic,
a ranged read opens only the packages it touches, and a flipped, reordered, moved, cut or
appended package does not open. Everything here is pure (no I/O): the engine feeds bytes in and
out. ``RowBinding`` ties a version's encryption metadata to its row; ``keyed_etag`` is the
ETag of SSE-KMS/SSE-C objects.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tierstore._buffers import filled_bytes
from tierstore.crypto._kms import DATA_KEY_BYTES  # one data key size for the key service and the packages

__all__ = [
    "FORMAT_VERSION",
    "MAX_PART_NUMBER",
    "NONCE_PREFIX_BYTES",
    "PACKAGE_BYTES",
    "TAG_BYTES",
    "HmacSha256Keys",
    "IntegrityError",
    "PackageOpener",
    "PackageSealer",
    "PackageSpan",
    "RowBinding",
    "StreamLayout",
    "ciphertext_size",
    "derive_part_key",
    "keyed_etag",
    "open_packages",
    "package_count",
    "package_span",
    "verify_row_binding",
]

FORMAT_VERSION = 1
PACKAGE_BYTES = 64 * 1024
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 7
MAX_PART_NUMBER = 10_000
_MAX_PACKAGES = 2**32  # the package number is a u32 in the nonce
_LABEL = b"tierstore-sse/1"
_PART_KEY_INFO = _LABEL + b" part key"
_BINDING_KEY_INFO = _LABEL + b" binding key"
_BINDING_LABEL = _LABEL + b" binding"
_ETAG_KEY_INFO = _LABEL + b" etag key"


class IntegrityError(ValueError):
    """Sealed bytes or their metadata do not open: damaged, tampered, truncated, reordered, moved
    from another object, or opened with the wrong key. ``package`` is the package number of the
    stream that failed (None when the failure is not one package's, e.g. a binding mismatch).
    The message never holds key or plaintext bytes."""

    def __init__(self, message: str, *, package: int | None = None) -> None:
        super().__init__(message)
        self.package = package


class PackageSpan(NamedTuple):
    """The packages a plaintext range touches and the ciphertext bytes that hold them
    (``cipher_start`` inclusive, ``cipher_end`` exclusive, offsets in the stream)."""

    first_package: int
    last_package: int
    cipher_start: int
    cipher_end: int


class StreamLayout(NamedTuple):
    """One stream of a version, as the binding MAC covers it: its part number (0 for a single
    PUT), plaintext size and nonce prefix."""

    part_number: int
    plaintext_size: int
    nonce_prefix: bytes


def _check_package_bytes(package_bytes: int) -> None:
    if not 0 < package_bytes < 2**32:
        raise ValueError(f"a package holds 1 .. 2^32-1 plaintext bytes, not {package_bytes}")


def package_count(plaintext_size: int, *, package_bytes: int = PACKAGE_BYTES) -> int:
    """How many packages a stream of ``plaintext_size`` bytes has (an empty stream has one)."""
    _check_package_bytes(package_bytes)
    if plaintext_size < 0:
        raise ValueError(f"a plaintext size cannot be negative: {plaintext_size}")
    count = max(1, -(-plaintext_size // package_bytes))
    if count > _MAX_PACKAGES:
        raise ValueError(f"a stream holds at most 2^32 packages; {plaintext_size} bytes need {count}")
    return count


def ciphertext_size(plaintext_size: int, *, package_bytes: int = PACKAGE_BYTES) -> int:
    """The sealed size of a stream of ``plaintext_size`` bytes: one tag per package."""
    return plaintext_size + TAG_BYTES * package_count(plaintext_size, package_bytes=package_bytes)


def package_span(
    plain_start: int, plain_end: int, plaintext_size: int, *, package_bytes: int = PACKAGE_BYTES
) -> PackageSpan:
    """The packages holding plaintext ``[plain_start, plain_end)`` of a stream of
    ``plaintext_size`` bytes, and their ciphertext range. The range must not be empty, except
    ``[0, 0)`` of an empty stream: its one (empty, final) package, so that reading an empty
    object still checks its tag."""
    count = package_count(plaintext_size, package_bytes=package_bytes)
    if not 0 <= plain_start <= plain_end <= plaintext_size:
        raise ValueError(f"range [{plain_start}, {plain_end}) is not within a stream of {plaintext_size} bytes")
    if plain_start == plain_end:
        if plaintext_size != 0:
            raise ValueError("an empty range touches no package")
        return PackageSpan(0, 0, 0, TAG_BYTES)
    first = plain_start // package_bytes
    last = (plain_end - 1) // package_bytes
    sealed = package_bytes + TAG_BYTES
    end = min((last + 1) * sealed, ciphertext_size(plaintext_size, package_bytes=package_bytes))
    assert last < count
    return PackageSpan(first, last, first * sealed, end)


def _nonce(prefix: bytes, number: int, *, final: bool) -> bytes:
    return prefix + (b"\x01" if final else b"\x00") + number.to_bytes(4, "big")


def _aad(part_number: int) -> bytes:
    return _LABEL + part_number.to_bytes(4, "big")


_FINAL_FIRST = b"\x01" + bytes(4)  # ``_nonce``'s tail for package 0 when it is the last
_AAD_SINGLE = _aad(0)  # a single PUT's stream


def _aead(stream_key: bytes, nonce_prefix: bytes, part_number: int) -> AESGCM:
    if len(stream_key) != DATA_KEY_BYTES:
        raise ValueError(f"a stream key is {DATA_KEY_BYTES} bytes, not {len(stream_key)}")
    if len(nonce_prefix) != NONCE_PREFIX_BYTES:
        raise ValueError(f"a nonce prefix is {NONCE_PREFIX_BYTES} bytes, not {len(nonce_prefix)}")
    if not 0 <= part_number <= MAX_PART_NUMBER:
        raise ValueError(f"a part number is 0 (single PUT) or 1 .. {MAX_PART_NUMBER}, not {part_number}")
    return AESGCM(stream_key)


class PackageSealer:
    """Seals one stream: feed plaintext in chunks of any size to ``update`` (it returns the
    sealed packages completed so far), then ``finish`` once (the final package,
    also for an empty stream). A full package is held back until more plaintext arrives, since
    only then is it known not to be the last: the sealer holds at most one package."""

    __slots__ = ("_aad", "_aead", "_done", "_number", "_package_bytes", "_pending", "_prefix", "plaintext_bytes")

    def __init__(
        self, stream_key: bytes, nonce_prefix: bytes, *, part_number: int = 0, package_bytes: int = PACKAGE_BYTES
    ) -> None:
        _check_package_bytes(package_bytes)
        self._aead = _aead(stream_key, nonce_prefix, part_number)
        self._prefix = bytes(nonce_prefix)
        self._aad = _aad(part_number)
        self._package_bytes = package_bytes
        self._pending = bytearray()
        self._number = 0
        self._done = False
        self.plaintext_bytes = 0  # fed so far

    def _seal(self, plaintext: bytes | bytearray | memoryview, *, final: bool) -> bytes:
        if self._number >= _MAX_PACKAGES:
            raise ValueError("a stream holds at most 2^32 packages")
        sealed = self._aead.encrypt(_nonce(self._prefix, self._number, final=final), plaintext, self._aad)
        self._number += 1
        return sealed

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The sealed packages ``data`` completes, one ``bytes`` each (possibly none). A list, not
        one joined buffer: joining costs a copy of every byte, and the blob writer takes chunks."""
        if self._done:
            raise ValueError("the stream is already finished")
        view = memoryview(data).cast("B")
        self.plaintext_bytes += len(view)
        size = self._package_bytes
        out: list[bytes] = []
        if self._pending:
            room = size - len(self._pending)
            if len(view) <= room:  # still at most one package: it may be the last
                self._pending += view
                return []
            self._pending += view[:room]
            view = view[room:]
            out.append(self._seal(self._pending, final=False))  # more follows: not the last
            self._pending = bytearray()
        # Seal every whole package of ``view`` that is followed by at least one more byte.
        whole = (len(view) - 1) // size if view else 0
        for i in range(whole):
            out.append(self._seal(view[i * size : (i + 1) * size], final=False))
        self._pending += view[whole * size :]
        return out

    def update_joined(self, data: bytes | bytearray | memoryview) -> bytes:
        """As ``update``, the packages ``data`` completes, sealed, but joined in one ``bytes``
        (empty when none completes): each sealed with ``AESGCM.encrypt_into`` straight into it
        (``filled_bytes``: not zeroed first, no copy; ``encrypt`` zeroes each package's output
        before writing it). A 1 MiB chunk in is one chunk out, not 16."""
        if self._done:
            raise ValueError("the stream is already finished")
        view = memoryview(data).cast("B")
        self.plaintext_bytes += len(view)
        size = self._package_bytes
        plain: list[bytearray | memoryview] = []
        if self._pending:
            room = size - len(self._pending)
            if len(view) <= room:  # still at most one package: it may be the last
                self._pending += view
                return b""
            self._pending += view[:room]
            view = view[room:]
            plain.append(self._pending)  # more follows: not the last
            self._pending = bytearray()
        whole = (len(view) - 1) // size if view else 0  # each followed by at least one more byte
        plain.extend([view[i * size : (i + 1) * size] for i in range(whole)])
        self._pending += view[whole * size :]
        if not plain:
            return b""
        return filled_bytes(sum(map(len, plain)) + TAG_BYTES * len(plain), partial(self._seal_into, plain))

    def _seal_into(self, plain: list[bytearray | memoryview], out: memoryview) -> None:
        """Seal the packages ``plain`` (none of them the last) into ``out``, one after another."""
        aead, aad, prefix = self._aead, self._aad, self._prefix
        at = 0
        for package in plain:
            if self._number >= _MAX_PACKAGES:
                raise ValueError("a stream holds at most 2^32 packages")
            sealed = len(package) + TAG_BYTES
            aead.encrypt_into(_nonce(prefix, self._number, final=False), package, aad, out[at : at + sealed])
            self._number += 1
            at += sealed
        assert at == len(out)

    def finish(self) -> bytes:
        """The final package (the plaintext still held back, possibly none)."""
        if self._done:
            raise ValueError("the stream is already finished")
        self._done = True
        last = self._seal(self._pending, final=True)
        self._pending = bytearray()
        return last


class PackageOpener:
    """Opens the packages of one stream that hold plaintext ``[plain_start, plain_end)``.

    Feed ``update`` the ciphertext of ``span`` (``cipher_start`` .. ``cipher_end`` of the stream)
    in chunks of any size; it returns the requested plaintext of every package completed, each
    verified before a byte of it is returned. ``finish`` raises ``IntegrityError`` if the
    ciphertext ended early. A package opens only under the right key, prefix, part number, at
    its own position, and with the final flag exactly on the stream's last package."""

    __slots__ = (
        "_aad",
        "_aead",
        "_count",
        "_number",
        "_package_bytes",
        "_pending",
        "_prefix",
        "_received",
        "_skip_head",
        "_want",
        "span",
    )

    def __init__(
        self,
        stream_key: bytes,
        nonce_prefix: bytes,
        *,
        plaintext_size: int,
        plain_start: int = 0,
        plain_end: int | None = None,
        part_number: int = 0,
        package_bytes: int = PACKAGE_BYTES,
    ) -> None:
        end = plaintext_size if plain_end is None else plain_end
        self.span = package_span(plain_start, end, plaintext_size, package_bytes=package_bytes)
        self._aead = _aead(stream_key, nonce_prefix, part_number)
        self._prefix = bytes(nonce_prefix)
        self._aad = _aad(part_number)
        self._package_bytes = package_bytes
        self._count = package_count(plaintext_size, package_bytes=package_bytes)
        self._number = self.span.first_package
        self._pending = bytearray()
        self._received = 0
        # bytes of the first package before the range, then the plaintext bytes still to return
        self._skip_head = plain_start - self.span.first_package * package_bytes
        self._want = end - plain_start

    def _open(self, sealed: bytes | bytearray | memoryview) -> bytes:
        number = self._number
        nonce = _nonce(self._prefix, number, final=number == self._count - 1)
        try:
            plain = self._aead.decrypt(nonce, sealed, self._aad)
        except InvalidTag:
            raise IntegrityError(
                f"package {number} does not open (damaged, tampered, moved, truncated or another key)", package=number
            ) from None
        self._number += 1
        if self._skip_head:
            plain = plain[self._skip_head :]
            self._skip_head = 0
        if len(plain) > self._want:
            plain = plain[: self._want]
        self._want -= len(plain)
        return plain

    def _sealed_size(self, number: int) -> int:
        if number < self._count - 1:
            return self._package_bytes + TAG_BYTES
        return self.span.cipher_end - (self._count - 1) * (self._package_bytes + TAG_BYTES)

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The requested plaintext of each package ``data`` completes (possibly none), verified."""
        view = memoryview(data).cast("B")
        self._received += len(view)
        if self._received > self.span.cipher_end - self.span.cipher_start:
            raise IntegrityError(
                f"more ciphertext than packages {self.span.first_package}..{self.span.last_package} hold",
                package=self.span.last_package,
            )
        out: list[bytes] = []
        while view:
            need = self._sealed_size(self._number) - len(self._pending)
            if len(view) < need:
                self._pending += view
                break
            if self._pending:
                self._pending += view[:need]
                out.append(self._open(self._pending))
                self._pending = bytearray()
            else:
                out.append(self._open(view[:need]))
            view = view[need:]
        return out

    def update_joined(self, data: bytes | bytearray | memoryview) -> bytes:
        """As ``update``, the requested plaintext of every package ``data`` completes, verified,
        but joined in one ``bytes`` (empty when none completes): the packages are opened with
        ``AESGCM.decrypt_into`` straight into the ``bytes`` returned (``filled_bytes``: not
        zeroed first, no copy out; ``decrypt`` zeroes each package's output before writing it).
        Fewer, larger chunks for the caller (a 1 MiB read: one chunk, not 16), no allocation
        per package. The cipher runs without the GIL. A package that does not open raises
        ``IntegrityError``; the plaintext of the packages before it in ``data`` is not returned
        (the caller reads again from its position)."""
        view = memoryview(data).cast("B")
        received = self._received + len(view)
        if received > self.span.cipher_end - self.span.cipher_start:
            raise IntegrityError(
                f"more ciphertext than packages {self.span.first_package}..{self.span.last_package} hold",
                package=self.span.last_package,
            )
        self._received = received
        # The packages ``data`` completes: the one held back (if ``data`` completes it), then
        # the whole ones in ``data``; what is left of ``data`` is held back.
        sealed: list[bytearray | memoryview] = []
        number = self._number
        pos = 0
        pending = self._pending
        if pending:
            need = self._sealed_size(number) - len(pending)
            if len(view) < need:
                pending += view
                return b""
            pending += view[:need]
            sealed.append(pending)
            self._pending = bytearray()
            pos, number = need, number + 1
        full = self._package_bytes + TAG_BYTES
        while pos < len(view):
            size = full if number < self._count - 1 else self._sealed_size(number)
            if len(view) - pos < size:
                self._pending = bytearray(view[pos:])
                break
            sealed.append(view[pos : pos + size])
            pos += size
            number += 1
        if not sealed:
            return b""
        plain_bytes = sum(map(len, sealed)) - TAG_BYTES * len(sealed)
        plain = filled_bytes(plain_bytes, partial(self._open_into, sealed))
        start = min(self._skip_head, plain_bytes)
        self._skip_head -= start
        end = min(plain_bytes, start + self._want)
        self._want -= end - start
        if start or end != plain_bytes:  # the edges of a range: the packages' bytes outside it
            return plain[start:end]
        return plain

    def _open_into(self, sealed: list[bytearray | memoryview], out: memoryview) -> None:
        """Open the packages ``sealed`` (from ``self._number`` on) into ``out``, one after another."""
        aead, aad, prefix, last = self._aead, self._aad, self._prefix, self._count - 1
        number = self._number
        at = 0
        for package in sealed:
            plain = len(package) - TAG_BYTES
            try:
                aead.decrypt_into(_nonce(prefix, number, final=number == last), package, aad, out[at : at + plain])
            except InvalidTag:
                raise IntegrityError(
                    f"package {number} does not open (damaged, tampered, moved, truncated or another key)",
                    package=number,
                ) from None
            self._number = number = number + 1
            at += plain
        assert at == len(out)

    def finish(self) -> None:
        """Check that every package of the span arrived (``IntegrityError`` naming the first missing)."""
        if self._number <= self.span.last_package:
            raise IntegrityError(f"the ciphertext ends inside package {self._number}", package=self._number)
        assert self._want == 0 and not self._pending


def open_packages(
    stream_key: bytes,
    nonce_prefix: bytes,
    ciphertext: bytes | bytearray | memoryview,
    *,
    plaintext_size: int,
    plain_start: int = 0,
    plain_end: int | None = None,
    part_number: int = 0,
    package_bytes: int = PACKAGE_BYTES,
) -> bytes:
    """Plaintext ``[plain_start, plain_end)`` of a stream, from exactly the ciphertext of its
    ``package_span`` (one call; ``PackageOpener`` streams). A range within one package (every
    inline body, a small ranged read) is opened with one ``decrypt``, no opener: the same
    nonce, associated data and checks."""
    end = plaintext_size if plain_end is None else plain_end
    if (
        plain_start == 0
        and end == plaintext_size == len(ciphertext) - TAG_BYTES
        and 0 < plaintext_size <= package_bytes < 2**32
        and part_number == 0
    ):  # the whole of a one-package single-PUT stream (a 4 KiB GET): its nonce and AAD without calls
        if len(stream_key) != DATA_KEY_BYTES or len(nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError("a stream key is 32 bytes and a nonce prefix 7")
        try:
            return AESGCM(stream_key).decrypt(nonce_prefix + _FINAL_FIRST, ciphertext, _AAD_SINGLE)
        except InvalidTag:
            raise IntegrityError(
                "package 0 does not open (damaged, tampered, moved, truncated or another key)", package=0
            ) from None
    if 0 < plaintext_size <= package_bytes < 2**32 and 0 <= plain_start < end <= plaintext_size:
        # A stream of one package (every inline body): what package_span answers, without its
        # arithmetic: package 0, the final one, all of the stream's sealed bytes.
        number, sealed_bytes, final = 0, plaintext_size + TAG_BYTES, True
    else:
        span = package_span(plain_start, end, plaintext_size, package_bytes=package_bytes)
        if span.first_package != span.last_package:
            opener = PackageOpener(
                stream_key,
                nonce_prefix,
                plaintext_size=plaintext_size,
                plain_start=plain_start,
                plain_end=plain_end,
                part_number=part_number,
                package_bytes=package_bytes,
            )
            joined = opener.update_joined(ciphertext)
            opener.finish()
            return joined
        number = span.first_package
        sealed_bytes = span.cipher_end - span.cipher_start
        final = (number + 1) * package_bytes >= plaintext_size  # the stream's last package
    if len(ciphertext) != sealed_bytes:
        raise IntegrityError(f"package {number} is {sealed_bytes} sealed bytes, not {len(ciphertext)}", package=number)
    try:
        plain = _aead(stream_key, nonce_prefix, part_number).decrypt(
            _nonce(nonce_prefix, number, final=final), ciphertext, _aad(part_number)
        )
    except InvalidTag:
        raise IntegrityError(
            f"package {number} does not open (damaged, tampered, moved, truncated or another key)", package=number
        ) from None
    skip = plain_start - number * package_bytes
    if skip or len(plain) != end - plain_start:
        plain = plain[skip : skip + end - plain_start]
    return plain


# HMAC-SHA256 (RFC 2104) written out over hashlib: every encrypted read computes three (the
# binding key's HKDF extract and expand, then the MAC), and ``hmac.digest`` sets up an OpenSSL
# MAC context per call (~28k instructions), about twice what two SHA-256 passes cost. The
# extract step's key is the constant "no salt", so its padded blocks are hashed once, here.
_SHA256_BLOCK = 64
_IPAD = bytes(b ^ 0x36 for b in range(256))  # translate tables: key XOR ipad / opad per byte
_OPAD = bytes(b ^ 0x5C for b in range(256))
_HKDF_NO_SALT = bytes(hashlib.sha256().digest_size)  # RFC 5869: no salt = HashLen zero bytes
_EXTRACT_INNER = hashlib.sha256(_HKDF_NO_SALT.ljust(_SHA256_BLOCK, b"\0").translate(_IPAD))
_EXTRACT_OUTER = hashlib.sha256(_HKDF_NO_SALT.ljust(_SHA256_BLOCK, b"\0").translate(_OPAD))


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key`` (at most 64 bytes: every key here is 32), the
    bytes ``hmac.digest(key, message, "sha256")`` gives (``tests/crypto/test_hkdf.py``)."""
    assert len(key) <= _SHA256_BLOCK, "a longer HMAC key is hashed first: not needed here"
    block = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(block.translate(_IPAD) + message).digest()
    return hashlib.sha256(block.translate(_OPAD) + inner).digest()


class HmacSha256Keys:
    """HMAC-SHA256 under keys that sign again and again (the SigV4 signing key of a caller and
    day: one HMAC per request): each key's two padded blocks hashed once, then copied per
    message: ~15k instructions per HMAC against ~28k for ``hmac.digest`` (an OpenSSL MAC
    context per call) and ~23k for ``_hmac_sha256``. At most ``entries`` keys (all dropped when
    full); the same bytes as ``hmac.digest(key, message, "sha256")`` (tests/crypto/test_hkdf.py)."""

    __slots__ = ("_pads", "entries")

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._pads: dict[bytes, tuple[Any, Any]] = {}

    def __repr__(self) -> str:  # never key material
        return f"HmacSha256Keys({len(self._pads)}/{self.entries})"

    def digest(self, key: bytes, message: bytes) -> bytes:
        pads = self._pads.get(key)
        if pads is None:
            assert len(key) <= _SHA256_BLOCK, "a longer HMAC key is hashed first: not needed here"
            block = key.ljust(_SHA256_BLOCK, b"\0")
            pads = (hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD)))
            if len(self._pads) >= self.entries:
                self._pads.clear()
            self._pads[key] = pads
        inner = pads[0].copy()
        inner.update(message)
        outer = pads[1].copy()
        outer.update(inner.digest())
        return outer.digest()


def _hkdf(key: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``key`` with no salt, 32 bytes: extract, then the one expand
    block. Written out because every encrypted read derives the binding key and
    ``cryptography``'s HKDF object costs ~20 us per call here against ~2 us; the output is the
    same (``tests/crypto/test_hkdf.py`` compares the two)."""
    inner = _EXTRACT_INNER.copy()
    inner.update(key)
    outer = _EXTRACT_OUTER.copy()
    outer.update(inner.digest())
    return _hmac_sha256(outer.digest(), info + b"\x01")


def derive_part_key(data_key: bytes, part_number: int, nonce_prefix: bytes) -> bytes:
    """The stream key of multipart part ``part_number`` sealed with ``nonce_prefix``:
    HKDF-SHA256 of the upload's data key over the part number and the part's random prefix, so
    a re-uploaded part (a fresh prefix) never reuses a key and nonce of an earlier attempt."""
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes, not {len(data_key)}")
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise ValueError(f"a part number is 1 .. {MAX_PART_NUMBER}, not {part_number}")
    if len(nonce_prefix) != NONCE_PREFIX_BYTES:
        raise ValueError(f"a nonce prefix is {NONCE_PREFIX_BYTES} bytes, not {len(nonce_prefix)}")
    return _hkdf(data_key, _PART_KEY_INFO + part_number.to_bytes(4, "big") + nonce_prefix)


_STREAM = struct.Struct(">IQ")  # a stream in the binding: part number, plaintext size (then its prefix)
_SIZES = struct.Struct(">QI")  # the binding's plaintext size and package size
_ONE_STREAM = struct.Struct(">IIQ")  # a one-stream layout: the stream count (1), then ``_STREAM``
_U32 = struct.Struct(">I").pack  # a field's length


def length_prefixed(text: str) -> bytes:
    """``u32be(len) | utf-8 bytes``: fields that cannot run into each other when concatenated."""
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


@dataclass(frozen=True, slots=True)
class RowBinding:
    """The row an encrypted version lives in, as its binding MAC covers it: bucket, key, version
    id, SSE kind, package size and every stream (part number, plaintext size, nonce prefix).
    Metadata moved to another row, or edited, no longer matches the MAC stored with it."""

    bucket: str
    key: str
    version_id: str
    kind: str
    streams: tuple[StreamLayout, ...]
    package_bytes: int = PACKAGE_BYTES

    def __post_init__(self) -> None:
        _check_row(self.streams, self.package_bytes)

    def _canonical(self) -> bytes:
        return _canonical_row(self.bucket, self.key, self.version_id, self.kind, self.streams, self.package_bytes)

    def mac(self, data_key: bytes) -> bytes:
        """HMAC-SHA256 of the row under a key derived from the version's data key."""
        return _hmac_sha256(_hkdf(data_key, _BINDING_KEY_INFO), self._canonical())

    def verify(self, mac: bytes, data_key: bytes) -> None:
        """``IntegrityError`` unless ``mac`` is this row's binding MAC (compared in constant time)."""
        _verify_mac(mac, self.mac(data_key))


def verify_row_binding(
    mac: bytes,
    data_key: bytes,
    bucket: str,
    key: str,
    version_id: str,
    kind: str,
    streams: tuple[StreamLayout, ...],
    package_bytes: int = PACKAGE_BYTES,
) -> None:
    """``RowBinding(bucket, key, version_id, kind, streams, package_bytes).verify(mac, data_key)``
    without building the object: the same checks and MAC (every first read of an encrypted
    object runs this)."""
    if len(streams) == 1 and 0 < package_bytes < 2**32:  # ``_check_row`` of a single stream, inline
        if len(streams[0].nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError(f"a nonce prefix is {NONCE_PREFIX_BYTES} bytes")
    else:
        _check_row(streams, package_bytes)
    canonical = _canonical_row(bucket, key, version_id, kind, streams, package_bytes)
    if not hmac.compare_digest(mac, _hmac_sha256(_hkdf(data_key, _BINDING_KEY_INFO), canonical)):  # ``_verify_mac``
        raise IntegrityError(_MOVED)


def _check_row(streams: tuple[StreamLayout, ...], package_bytes: int) -> None:
    _check_package_bytes(package_bytes)
    if not streams:
        raise ValueError("a version has at least one stream")
    for s in streams:
        if len(s.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError(f"a nonce prefix is {NONCE_PREFIX_BYTES} bytes")


def _canonical_row(
    bucket: str, key: str, version_id: str, kind: str, streams: tuple[StreamLayout, ...], package_bytes: int
) -> bytes:
    b, k, v, kd = bucket.encode(), key.encode(), version_id.encode(), kind.encode()
    if len(streams) == 1:  # a single PUT (every first read of a small object): no generator, one join
        part_number, total, prefix = streams[0]
        layout = _ONE_STREAM.pack(1, part_number, total) + prefix
    else:
        total = sum(s.plaintext_size for s in streams)
        layout = len(streams).to_bytes(4, "big") + b"".join(
            [_STREAM.pack(s.part_number, s.plaintext_size) + s.nonce_prefix for s in streams]
        )
    return b"".join(
        (_BINDING_LABEL, _U32(len(b)), b, _U32(len(k)), k, _U32(len(v)), v, _SIZES.pack(total, package_bytes),
         _U32(len(kd)), kd, layout)
    )  # fmt: skip


def _verify_mac(mac: bytes, expected: bytes) -> None:
    if not hmac.compare_digest(mac, expected):
        raise IntegrityError(_MOVED)


_MOVED = "the encryption metadata does not belong to this object version (moved or edited)"


def keyed_etag(data_key: bytes, plaintext_md5: bytes) -> str:
    """The ETag of an SSE-KMS/SSE-C stream (32 hex digits, unquoted): not the plaintext's MD5,
    which would confirm a guess of the content, but deterministic for the stored object."""
    if len(plaintext_md5) != 16:
        raise ValueError("an MD5 digest is 16 bytes")
    return _hmac_sha256(_hkdf(data_key, _ETAG_KEY_INFO), plaintext_md5).hex()[:32]
