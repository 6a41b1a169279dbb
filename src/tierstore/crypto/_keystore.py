"""The built-in key service: key-encryption keys (KEKs) kept in the catalog, sealed under the
server master key (docs/security.md "Key service").

Each key id has versions: 32 random bytes each, stored sealed (``MasterKey.seal``, bound to the
key id and version, as an access key's secret is bound to its id), so the catalog file holds no
key material in clear. Rotation adds a version; the newest wraps new data keys; data keys
wrapped by an older version still open, and ``rewrap`` moves one to the newest version without
touching the data it encrypts.

A wrapped data key is ``format (1 byte) | KEK version (4 bytes, big-endian) | nonce (12 bytes) |
ciphertext + tag (48 bytes)``, AES-256-GCM under that version's KEK. Its associated data is a
fixed label, the key id, the first 5 bytes and the canonical encryption context
(``canonical_context``): a wrapped key moved to another key id, version or context does not
open (``WrappedKeyError``).

Each process (worker) caches a key's status for ``cache_ttl_s`` (1 s, as identities; on
PostgreSQL until a ``kms`` notification, tierstore/_watch.py) and each
opened KEK version for its lifetime (a version's material never changes): a key disabled,
created or rotated through one worker is seen by every worker within about a second, while a
PUT or GET reads the catalog at most once a second per key. The reserved key of SSE-S3
(``SSE_S3_KEY_ID``) is created on first use.

It also keeps the data keys it unwrapped (``DataKeyCache``: at most ``data_key_cache`` of them,
each for ``data_key_ttl_s`` from its unwrap), keyed by the wrapped bytes and the exact
associated data they opened under, so a repeated read (training epochs, a reader's several
passes) skips the AES-GCM unwrap. The key's status is checked first on every call, cached or
not: a disabled or deleted key unwraps nothing, from the cache either, within ``cache_ttl_s``.
Why this is safe: docs/encryption.md "The data key cache".
"""

from __future__ import annotations

import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tierstore._watch import ConfigWatch
from tierstore.crypto._kms import (
    DATA_KEY_BYTES,
    RESERVED_KEY_PREFIX,
    SSE_S3_KEY_ID,
    DataKey,
    KeyStatus,
    KmsKeyDisabled,
    KmsKeyExists,
    NoSuchKmsKey,
    WrappedKeyError,
    canonical_context,
    check_key_id,
)
from tierstore.crypto._sealing import MasterKey, SealedSecretError
from tierstore.errors import InternalError, InvalidArgument

if TYPE_CHECKING:
    from tierstore.catalog._records import KmsKeyRecord

__all__ = ["DataKeyCache", "KeyTable", "LocalKeyStore", "wrapped_key_version"]

KEK_BYTES = 32
_FORMAT = 1
_HEAD = struct.Struct(">BI")  # format, KEK version
_NONCE_BYTES = 12
_TAG_BYTES = 16
WRAPPED_BYTES = _HEAD.size + _NONCE_BYTES + DATA_KEY_BYTES + _TAG_BYTES
_AAD_LABEL = b"tierstore kms data key v1\x00"
_CACHE_MAX = 10_000  # key ids; past it the status cache starts over
DATA_KEY_CACHE_ENTRIES = 4096  # unwrapped data keys kept per process (~2 MiB with their keys)
DATA_KEY_TTL_S = 60.0  # how long one stays, from its unwrap


class KeyTable(Protocol):
    """The catalog's key tables (``Catalog``, catalog/_protocol.py), as the key store uses them."""

    async def kms_create_key(self, key_id: str, sealed_material: bytes, now_ns: int, description: str = "") -> bool: ...

    async def kms_get_key(self, key_id: str) -> KmsKeyRecord | None: ...

    async def kms_list_keys(self) -> list[KmsKeyRecord]: ...

    async def kms_sealed_material(self, key_id: str, version: int) -> bytes | None: ...

    async def kms_add_version(self, key_id: str, seal: Callable[[int], bytes], now_ns: int) -> int | None: ...

    async def kms_set_enabled(self, key_id: str, enabled: bool, now_ns: int) -> bool: ...


def wrapped_key_version(wrapped: bytes) -> int:
    """The KEK version that wrapped ``wrapped`` (a re-wrap pass skips those at the newest)."""
    if len(wrapped) != WRAPPED_BYTES or wrapped[0] != _FORMAT:
        raise WrappedKeyError("not a wrapped data key of a known format")
    return int(_HEAD.unpack_from(wrapped)[1])


class Doorkeeper:
    """Admission to a cache on the second sighting (TinyLFU's "doorkeeper"): ``again(name)`` is
    True when ``name`` was offered before, among the last ``entries`` names offered (the set is
    emptied when full). A read that never comes back (a job reading each object once, a dataset
    larger than the cache) then costs a set insert, not an entry that is kept, evicted and never
    hit: measured, a cache of 4,096 data keys and bindings that never hit cost an encrypted 4 KiB
    GET ~13 us (docs/benchmarks.md "Issue 16, session 13"). Names only (wrapped keys, stored MACs:
    catalog data), never key material."""

    __slots__ = ("_names", "entries")

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._names: set[Any] = set()

    def __len__(self) -> int:
        return len(self._names)

    def again(self, name: Any) -> bool:
        names = self._names
        if name in names:
            names.discard(name)
            return True
        if len(names) >= self.entries:
            names.clear()
        names.add(name)
        return False

    def clear(self) -> None:
        self._names.clear()


class DataKeyCache:
    """Data keys this process unwrapped, by (wrapped key, associated data): a bounded LRU whose
    entries expire ``ttl_s`` after they were added (not after their last use). AES-GCM
    decryption is a function of the KEK version (named in the wrapped bytes, its material
    immutable), the wrapped bytes and the associated data, so a hit returns exactly what the
    unwrap would; only successful unwraps are added. ``entries`` 0 keeps nothing."""

    __slots__ = ("_clock", "_keys", "_seen", "entries", "ttl_s")

    def __init__(self, entries: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self.entries = entries
        self.ttl_s = ttl_s
        self._clock = clock
        # by the wrapped bytes alone (hashing them is half the cost of hashing both), the
        # associated data kept beside the key and compared on a hit: the same answers
        self._keys: OrderedDict[bytes, tuple[float, bytes, bytes]] = OrderedDict()
        self._seen = Doorkeeper(entries)

    def __repr__(self) -> str:  # never key material
        return f"DataKeyCache({len(self._keys)}/{self.entries}, ttl_s={self.ttl_s})"

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, wrapped: bytes, aad: bytes) -> bytes | None:
        hit = self._keys.get(wrapped)
        if hit is None or hit[1] != aad:  # not kept, or kept for other associated data
            return None
        if hit[0] <= self._clock():
            del self._keys[wrapped]
            return None
        self._keys.move_to_end(wrapped)
        return hit[2]

    def put(self, wrapped: bytes, aad: bytes, data_key: bytes) -> None:
        """Keep ``data_key`` if ``wrapped`` was unwrapped before (``Doorkeeper``)."""
        if self.entries <= 0 or not self._seen.again(wrapped):
            return
        self._keys[wrapped] = (self._clock() + self.ttl_s, aad, data_key)
        self._keys.move_to_end(wrapped)
        while len(self._keys) > self.entries:
            self._keys.popitem(last=False)

    def clear(self) -> None:
        self._keys.clear()
        self._seen.clear()


def _sealing_context(key_id: str, version: int) -> bytes:
    return f"tierstore kms key {key_id} v{version}".encode()


def _status(rec: KmsKeyRecord) -> KeyStatus:
    return KeyStatus(rec.key_id, rec.enabled, rec.created_ns, rec.newest_version, rec.rotated_ns, rec.description)


class LocalKeyStore:
    """``KeyService`` over the catalog (module docstring), plus what the admin endpoints do:
    create, list, enable/disable, rotate."""

    def __init__(
        self,
        table: KeyTable,
        master_key: MasterKey,
        *,
        cache_ttl_s: float = 1.0,
        data_key_cache: int = DATA_KEY_CACHE_ENTRIES,
        data_key_ttl_s: float = DATA_KEY_TTL_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._master = master_key
        self.cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._monotonic = monotonic
        self._records: dict[str, tuple[float, KmsKeyRecord | None]] = {}
        self._keks: dict[tuple[str, int], AESGCM] = {}
        self.data_keys = DataKeyCache(data_key_cache, data_key_ttl_s, monotonic)
        self.watch = ConfigWatch()

    def watch_with(self, watch: ConfigWatch) -> None:
        """Keep key status as ``watch`` says (tierstore/_watch.py), dropped by its ``kms`` changes."""
        self.watch = watch
        watch.on("kms", self.forget)

    def __repr__(self) -> str:  # never key material
        return f"LocalKeyStore(master_key={self._master!r})"

    def _now_ns(self) -> int:
        return int(self._clock() * 1e9)

    def forget(self, key_id: str | None = None) -> None:
        """Drop this process's cached status (of one key; or of all, and every cached data key);
        opened KEKs stay (immutable)."""
        if key_id is None:
            self._records.clear()
            self.data_keys.clear()
        else:
            self._records.pop(key_id, None)

    # --- the data path (KeyService) --------------------------------------------------------
    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> DataKey:
        rec = await self._usable(key_id)
        plaintext = os.urandom(DATA_KEY_BYTES)
        head = _HEAD.pack(_FORMAT, rec.newest_version)
        nonce = os.urandom(_NONCE_BYTES)
        kek = await self._kek(key_id, rec.newest_version)
        sealed = kek.encrypt(nonce, plaintext, self._aad(key_id, head, context))
        return DataKey(plaintext, head + nonce + sealed)

    async def decrypt_data_key(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        # ``_usable`` inline while the status cache holds an enabled key (every encrypted read):
        # the same answer without its two coroutines; anything else (expired, missing, disabled)
        # goes through it.
        hit = self._records.get(key_id)
        if hit is not None and hit[0] > self._monotonic() and hit[1] is not None and hit[1].enabled:
            rec = hit[1]
        else:
            rec = await self._usable(key_id)
        version = wrapped_key_version(wrapped)
        if version > rec.newest_version:  # rotated through another worker since this one looked
            self.forget(key_id)
            rec = await self._usable(key_id)
        if not 1 <= version <= rec.newest_version:
            raise WrappedKeyError(f"The data key was wrapped under version {version}, which key '{key_id}' lacks.")
        head = wrapped[: _HEAD.size]
        aad = self._aad(key_id, head, context)
        plaintext = self.data_keys.get(wrapped, aad)  # after the status check above: never for a disabled key
        if plaintext is not None:
            return plaintext
        nonce, sealed = wrapped[_HEAD.size : _HEAD.size + _NONCE_BYTES], wrapped[_HEAD.size + _NONCE_BYTES :]
        kek = self._keks.get((key_id, version))  # opened before (every read but a worker's first): no coroutine
        if kek is None:
            kek = await self._kek(key_id, version)
        try:
            plaintext = kek.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise WrappedKeyError() from None
        self.data_keys.put(wrapped, aad, plaintext)
        return plaintext

    async def key_status(self, key_id: str) -> KeyStatus:
        return _status(await self._existing(key_id))

    async def rewrap(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """``wrapped`` re-wrapped under the newest version of ``key_id`` (after a rotation), the
        same data key inside: the object it encrypts is not touched. Unchanged when it already is
        at the newest version. Raises as ``decrypt_data_key``."""
        plaintext = await self.decrypt_data_key(key_id, wrapped, context)
        rec = await self._usable(key_id)
        if wrapped_key_version(wrapped) == rec.newest_version:
            return wrapped
        head = _HEAD.pack(_FORMAT, rec.newest_version)
        nonce = os.urandom(_NONCE_BYTES)
        return (
            head
            + nonce
            + (await self._kek(key_id, rec.newest_version)).encrypt(nonce, plaintext, self._aad(key_id, head, context))
        )

    @staticmethod
    def _aad(key_id: str, head: bytes, context: Mapping[str, str]) -> bytes:
        return _AAD_LABEL + key_id.encode() + b"\x00" + head + canonical_context(context)

    async def _record(self, key_id: str) -> KmsKeyRecord | None:
        now = self._monotonic()
        hit = self._records.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        epoch = self.watch.epoch
        rec = await self._table.kms_get_key(key_id)
        if self.watch.current(epoch):
            if len(self._records) >= _CACHE_MAX:
                self._records.clear()
            self._records[key_id] = (now + self.watch.lifetime(self.cache_ttl_s), rec)
        return rec

    async def _existing(self, key_id: str) -> KmsKeyRecord:
        """``key_id``'s record (the SSE-S3 key is created on first use); ``NoSuchKmsKey``."""
        rec = await self._record(key_id)
        if rec is None and key_id == SSE_S3_KEY_ID:
            await self.ensure_key(key_id)
            rec = await self._record(key_id)
        if rec is None:
            raise NoSuchKmsKey(f"Key '{key_id}' does not exist.", resource=key_id)
        return rec

    async def _usable(self, key_id: str) -> KmsKeyRecord:
        rec = await self._existing(key_id)
        if not rec.enabled:
            raise KmsKeyDisabled(f"Key '{key_id}' is disabled.", resource=key_id)
        return rec

    async def _kek(self, key_id: str, version: int) -> AESGCM:
        """Version ``version`` of ``key_id``'s KEK, opened once per process."""
        kek = self._keks.get((key_id, version))
        if kek is not None:
            return kek
        sealed = await self._table.kms_sealed_material(key_id, version)
        if sealed is None:
            raise WrappedKeyError(f"Key '{key_id}' has no version {version}.", resource=key_id)
        try:
            material = self._master.open_sealed(sealed, context=_sealing_context(key_id, version))
        except SealedSecretError as exc:
            raise InternalError(f"The material of key '{key_id}' version {version} does not open: {exc}") from None
        kek = self._keks[(key_id, version)] = AESGCM(material)
        return kek

    def _seal_new(self, key_id: str, version: int) -> bytes:
        return self._master.seal(os.urandom(KEK_BYTES), context=_sealing_context(key_id, version))

    # --- administration ----------------------------------------------------------------------
    async def ensure_key(self, key_id: str) -> bool:
        """Create ``key_id`` unless it exists (the SSE-S3 key, the ids configured with
        ``--kms-create-keys``); True when this call created it."""
        created = await self._table.kms_create_key(check_key_id(key_id), self._seal_new(key_id, 1), self._now_ns())
        self.forget(key_id)
        return created

    async def create_key(self, key_id: str, description: str = "") -> KeyStatus:
        """A new key (version 1, enabled); ``KmsKeyExists`` when the id is taken."""
        check_key_id(key_id)
        if key_id.startswith(RESERVED_KEY_PREFIX):
            raise InvalidArgument(f"Key ids starting with '{RESERVED_KEY_PREFIX}' are reserved for the server.")
        if not await self._table.kms_create_key(key_id, self._seal_new(key_id, 1), self._now_ns(), description):
            raise KmsKeyExists(f"Key '{key_id}' already exists.", resource=key_id)
        self.forget(key_id)
        return await self.key_status(key_id)

    async def list_keys(self) -> list[KeyStatus]:
        return [_status(r) for r in await self._table.kms_list_keys()]

    async def describe(self, key_id: str) -> KeyStatus:
        """The status as the catalog has it now (no cache: what an admin asks for)."""
        self.forget(key_id)
        return await self.key_status(key_id)

    async def set_enabled(self, key_id: str, enabled: bool) -> KeyStatus:
        """Enable or disable ``key_id``: a disabled key wraps and unwraps nothing (every worker
        within ``cache_ttl_s``). The server's own keys cannot be disabled."""
        if key_id.startswith(RESERVED_KEY_PREFIX):
            raise InvalidArgument(f"Key '{key_id}' is managed by the server: it cannot be disabled or enabled.")
        if not await self._table.kms_set_enabled(key_id, enabled, self._now_ns()):
            raise NoSuchKmsKey(f"Key '{key_id}' does not exist.", resource=key_id)
        return await self.describe(key_id)

    async def rotate(self, key_id: str) -> KeyStatus:
        """Add a version: new data keys are wrapped by it; those of older versions still open."""
        self.forget(key_id)  # an admin acts on the catalog's state, not this worker's cached one
        await self._usable(key_id)  # a missing or disabled key is not rotated
        if await self._table.kms_add_version(key_id, lambda v: self._seal_new(key_id, v), self._now_ns()) is None:
            raise NoSuchKmsKey(f"Key '{key_id}' does not exist.", resource=key_id)
        return await self.describe(key_id)
