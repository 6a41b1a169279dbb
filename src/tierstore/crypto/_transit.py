"""``KeyService`` over the transit secrets engine of HashiCorp Vault or OpenBao (the same HTTP
API): the key-encryption keys live in Vault and never leave it (docs/security.md "Key service").

- ``generate_data_key``: 32 random bytes made here, wrapped by ``POST /v1/MOUNT/encrypt/KEY``
  with the canonical encryption context as ``associated_data`` (transit's AES-GCM keys bind it;
  Vault 1.12+, every OpenBao). The wrapped key is transit's ciphertext (``vault:vN:...``): it
  names the key version, so a rotation in Vault keeps old data keys readable.
- ``decrypt_data_key``: ``POST /v1/MOUNT/decrypt/KEY`` with the same ``associated_data``.
- ``key_status``: ``GET /v1/MOUNT/keys/KEY`` (cached ``cache_ttl_s``). Transit has no disabled
  state: a key is refused in Vault by its policies, which this service sees as
  ``KmsUnavailable``.
- ``rewrap``: decrypt, then encrypt under the newest version (transit's own ``rewrap`` does not
  take ``associated_data``), the data key unchanged.

Transit's encrypt creates a missing key on the fly when the token may ("upsert"); this service
asks for the key first, so an unknown key id is ``NoSuchKmsKey`` as with the local keystore
(give the token only ``update`` on ``MOUNT/encrypt/*`` and ``MOUNT/decrypt/*`` and ``read`` on
``MOUNT/keys/*`` and no race can create one either). The token is sent in
``X-Vault-Token`` and never appears in an error, a log line or a ``repr``. The HTTP calls run
in a thread (urllib3), off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3

from tierstore.crypto._kms import (
    DATA_KEY_BYTES,
    DataKey,
    KeyStatus,
    KmsUnavailable,
    NoSuchKmsKey,
    WrappedKeyError,
    canonical_context,
    check_key_id,
)

__all__ = ["TransitKeyService"]

_KEY_NOT_FOUND = "encryption key not found"  # transit's words for an unknown key on encrypt/decrypt


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unix_ns(value: Any) -> int:
    """A key version's creation time as transit reports it: Unix seconds, or RFC 3339 text."""
    if isinstance(value, int):
        return value * 1_000_000_000
    return int(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1e9)


class TransitKeyService:
    """Data keys wrapped by a Vault/OpenBao transit engine at ``address`` (module docstring)."""

    def __init__(
        self,
        address: str,
        token: str,
        *,
        mount: str = "transit",
        timeout_s: float = 10.0,
        cache_ttl_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address.rstrip("/")
        self.mount = mount.strip("/")
        self._token = token
        self.cache_ttl_s = cache_ttl_s
        self._monotonic = monotonic
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout_s), retries=False)
        self._status: dict[str, tuple[float, KeyStatus]] = {}

    def __repr__(self) -> str:  # never the token
        return f"TransitKeyService(address={self.address!r}, mount={self.mount!r})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None, key_id: str) -> dict[str, Any]:
        """One transit request; its ``data``. Raises the ``KmsError`` its answer means."""
        url = f"{self.address}/v1/{self.mount}/{path}"
        try:
            resp = self._http.request(
                method,
                url,
                body=None if body is None else json.dumps(body).encode(),
                headers={"X-Vault-Token": self._token, "Content-Type": "application/json"},
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KmsUnavailable(f"The key service at {self.address} is unreachable: {type(exc).__name__}.") from None
        try:
            doc = json.loads(resp.data) if resp.data else {}
        except ValueError:
            doc = {}
        errors = " ".join(str(x) for x in doc.get("errors") or [])[:200] if isinstance(doc, dict) else ""
        if resp.status == 404 or _KEY_NOT_FOUND in errors:
            raise NoSuchKmsKey(f"Key '{key_id}' does not exist.", resource=key_id)
        if resp.status == 400 and path.startswith("decrypt/"):
            raise WrappedKeyError(f"The data key does not open under key '{key_id}': {errors}.", resource=key_id)
        if resp.status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            what = errors or "no data"
            raise KmsUnavailable(f"The key service at {self.address} answered HTTP {resp.status}: {what}.")
        data: dict[str, Any] = doc["data"]
        return data

    async def key_status(self, key_id: str) -> KeyStatus:
        check_key_id(key_id)
        now = self._monotonic()
        hit = self._status.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        data = await asyncio.to_thread(self._call, "GET", f"keys/{key_id}", None, key_id)
        try:
            versions = int(data["latest_version"])
            times = data["keys"]
            status = KeyStatus(
                key_id,
                True,
                _unix_ns(times["1"] if "1" in times else times[min(times, key=int)]),
                versions,
                _unix_ns(times[str(versions)]) if versions > 1 and str(versions) in times else None,
            )
        except (KeyError, TypeError, ValueError):
            raise KmsUnavailable(f"The key service at {self.address} described key '{key_id}' oddly.") from None
        self._status[key_id] = (now + self.cache_ttl_s, status)
        return status

    async def generate_data_key(self, key_id: str, context: Mapping[str, str]) -> DataKey:
        await self.key_status(key_id)  # an unknown key is NoSuchKmsKey, not created by transit's upsert
        plaintext = os.urandom(DATA_KEY_BYTES)
        return DataKey(plaintext, await self._encrypt(key_id, plaintext, context))

    async def _encrypt(self, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        body = {"plaintext": _b64(plaintext), "associated_data": _b64(canonical_context(context))}
        data = await asyncio.to_thread(self._call, "POST", f"encrypt/{key_id}", body, key_id)
        ciphertext = data.get("ciphertext")
        if not isinstance(ciphertext, str):
            raise KmsUnavailable(f"The key service at {self.address} returned no ciphertext.")
        return ciphertext.encode()

    def _wrapped_text(self, wrapped: bytes) -> str:
        try:
            text = wrapped.decode("ascii")
        except UnicodeDecodeError:
            raise WrappedKeyError("The wrapped data key is not a transit ciphertext.") from None
        if not text.startswith("vault:v"):
            raise WrappedKeyError("The wrapped data key is not a transit ciphertext.")
        return text

    async def decrypt_data_key(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        check_key_id(key_id)
        body = {"ciphertext": self._wrapped_text(wrapped), "associated_data": _b64(canonical_context(context))}
        data = await asyncio.to_thread(self._call, "POST", f"decrypt/{key_id}", body, key_id)
        try:
            plaintext = base64.b64decode(str(data.get("plaintext")), validate=True)
        except (binascii.Error, ValueError):
            raise WrappedKeyError(f"The data key under key '{key_id}' did not decode.") from None
        if len(plaintext) != DATA_KEY_BYTES:
            raise WrappedKeyError(f"The wrapped value under key '{key_id}' is not a data key.")
        return plaintext

    async def rewrap(self, key_id: str, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """``wrapped`` re-wrapped under the key's newest version, the data key inside unchanged.
        Transit's own ``rewrap`` does not take ``associated_data`` (it fails to open a ciphertext
        bound to one), so this is decrypt, then encrypt: the data key passes through this process,
        as it does on every read of the object."""
        plaintext = await self.decrypt_data_key(key_id, wrapped, context)
        return await self._encrypt(key_id, plaintext, context)
