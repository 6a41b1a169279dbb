"""The server master key and sealing of secrets under it.

The master key is 32 random bytes in a file (``master.key``, mode 0600) next to the catalog: in
the data dir, or in ``.tierstore/`` on every drive of an erasure set. It is created once, when the
store has no sealed secret yet; a store whose catalog holds sealed secrets refuses to start
without it (a new key would orphan every secret). Gateways sharing a catalog read one key from a
file of the operator's (``--master-key-file``: a mounted secret) instead: ``load_master_key_file``
never creates it, refuses a file other users may read and warns of one its group may.

A sealed blob is ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext + tag``,
AES-256-GCM. The key id names the key that sealed it (the first 4 bytes of a SHA-256 over the
key), so a later rotation can keep old keys for opening while new seals use the new one. The
associated data is the version, the key id and the caller's ``context`` (for an access key's
secret: its access key id), so a sealed secret copied onto another row does not open.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tierstore.drives import fsync_dir

__all__ = [
    "MASTER_KEY_FILE",
    "MasterKey",
    "MasterKeyError",
    "SealedSecretError",
    "load_master_key",
    "load_master_key_file",
    "load_or_create_master_key",
    "sealed_key_id",
]

MASTER_KEY_FILE = "master.key"
KEY_BYTES = 32
_VERSION = 1
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_HEADER_BYTES = 1 + _KEY_ID_BYTES + _NONCE_BYTES
_TAG_BYTES = 16


class MasterKeyError(RuntimeError):
    """The master key file is missing, unreadable, malformed or not the key that sealed the
    catalog's secrets: the server must not start. The message is for the operator (no key bytes)."""


class SealedSecretError(ValueError):
    """A sealed secret does not open: damaged, sealed under another key, or moved to another row."""


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"tierstore master key id\x00" + key).digest()[:_KEY_ID_BYTES]


def sealed_key_id(blob: bytes) -> str:
    """The id (hex) of the master key that sealed ``blob`` (its first 5 bytes suffice)."""
    if len(blob) < 1 + _KEY_ID_BYTES or blob[0] != _VERSION:
        raise SealedSecretError("not a sealed secret of a known format")
    return blob[1 : 1 + _KEY_ID_BYTES].hex()


class MasterKey:
    """One 256-bit key; ``seal``/``open_sealed`` with AES-256-GCM bound to a context."""

    __slots__ = ("_aead", "_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"a master key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._id = _key_id(key)

    def __repr__(self) -> str:  # never the key bytes
        return f"MasterKey(id={self.key_id})"

    @property
    def key_id(self) -> str:
        return self._id.hex()

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        """``plaintext`` encrypted and authenticated, bound to ``context`` (e.g. an access key id)."""
        header = bytes([_VERSION]) + self._id + os.urandom(_NONCE_BYTES)
        aad = header[: 1 + _KEY_ID_BYTES] + context
        return header + self._aead.encrypt(header[1 + _KEY_ID_BYTES :], plaintext, aad)

    def open_sealed(self, blob: bytes, *, context: bytes) -> bytes:
        """The plaintext of ``blob``; ``SealedSecretError`` unless it was sealed by this key for ``context``."""
        if len(blob) < _HEADER_BYTES + _TAG_BYTES:
            raise SealedSecretError("the sealed secret is truncated")
        if sealed_key_id(blob) != self.key_id:
            raise SealedSecretError(f"sealed under master key {sealed_key_id(blob)}, not {self.key_id}")
        aad = blob[: 1 + _KEY_ID_BYTES] + context
        try:
            return self._aead.decrypt(blob[1 + _KEY_ID_BYTES : _HEADER_BYTES], blob[_HEADER_BYTES:], aad)
        except InvalidTag:
            raise SealedSecretError("the sealed secret does not open (damaged or bound to another context)") from None


def _read_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc.strerror}") from None
    if len(data) != KEY_BYTES:
        raise MasterKeyError(f"the master key file {path} is damaged ({len(data)} bytes, expected {KEY_BYTES})")
    return data


def _create_exclusively(path: Path, data: bytes) -> bool:
    """Write ``path`` durably (mode 0600) unless it exists; True if this call created it.

    The file appears whole or not at all (temp file, fsync, hard link, fsync the directory), and
    of several processes racing, exactly one creates it: the link fails for the others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return True


def load_master_key(dirs: list[Path]) -> MasterKey:
    """The master key kept in ``dirs`` (every copy that exists must agree). ``MasterKeyError``
    when no directory has it or the copies differ."""
    found = [(d / MASTER_KEY_FILE, _read_key(d / MASTER_KEY_FILE)) for d in dirs if (d / MASTER_KEY_FILE).exists()]
    if not found:
        where = ", ".join(str(d / MASTER_KEY_FILE) for d in dirs) or "(no directory)"
        raise MasterKeyError(
            f"the master key file is missing ({where}): restore it from your backup; "
            "without it the secrets of every user's access keys cannot be read"
        )
    first_path, key = found[0]
    for path, other in found[1:]:
        if other != key:
            raise MasterKeyError(f"the master key files {first_path} and {path} differ: keep the right one everywhere")
    return MasterKey(key)


def load_master_key_file(path: Path) -> tuple[MasterKey, str]:
    """The key in ``path`` (``--master-key-file``: 32 bytes, e.g. a mounted Kubernetes Secret, a
    symlink followed) and a warning for the log ("" if none). ``MasterKeyError`` when it is
    missing (it is never created here: every gateway must read the same one), not a regular file,
    or readable or writable by other users; its group may read it (a Secret mounted for an
    ``fsGroup`` is mode 0440), with a warning."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MasterKeyError(
            f"the master key file {path} is missing: make one once with "
            f"`(umask 077; head -c 32 /dev/urandom > {path})` (or copy a data dir's {MASTER_KEY_FILE}) "
            "and give every gateway the same file"
        ) from None
    except OSError as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MasterKeyError(f"the master key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise MasterKeyError(
            f"the master key file {path} is open to other users (mode {mode:04o}): chmod 600 it "
            "(a Kubernetes Secret: defaultMode 0400)"
        )
    warning = ""
    if mode & 0o070:
        warning = (
            f"the master key file {path} is open to its group (mode {mode:04o}, gid {st.st_gid}): "
            "chmod 600 it unless that group is the gateway's own"
        )
    return MasterKey(_read_key(path)), warning


def load_or_create_master_key(dirs: list[Path], *, sealed_key_ids: set[str]) -> tuple[MasterKey, bool]:
    """The master key of a store whose catalog holds secrets sealed under ``sealed_key_ids``;
    returns (key, created). A store without a key file gets a new key only when it has no
    sealed secret yet; the key is then written to every directory lacking it (a replaced drive
    gets its copy the same way). ``MasterKeyError`` when the file is missing while secrets
    exist, or when it is not the key that sealed them."""
    assert dirs, "no directory for the master key"
    created = False
    if not any((d / MASTER_KEY_FILE).exists() for d in dirs):
        if sealed_key_ids:
            load_master_key(dirs)  # raises: missing
        created = _create_exclusively(dirs[0] / MASTER_KEY_FILE, secrets.token_bytes(KEY_BYTES))
    key = load_master_key(dirs)
    if sealed_key_ids and key.key_id not in sealed_key_ids:
        raise MasterKeyError(
            f"the master key file ({dirs[0] / MASTER_KEY_FILE}, key id {key.key_id}) is not the key that sealed "
            f"the catalog's secrets (key id {', '.join(sorted(sealed_key_ids))}): restore the right file from backup"
        )
    raw = next((d / MASTER_KEY_FILE).read_bytes() for d in dirs if (d / MASTER_KEY_FILE).exists())
    for d in dirs:
        if not (d / MASTER_KEY_FILE).exists():
            _create_exclusively(d / MASTER_KEY_FILE, raw)
    return key, created
