"""Key tables of the catalog (schema v9): the key-encryption keys (KEKs) of the built-in key
service, ``crypto.LocalKeyStore`` (docs/security.md "Key service").

A key id has one row in ``kms_keys`` (its status) and one row per version in
``kms_key_versions``: rotation adds a version, the newest wraps new data keys, and every older
version stays so that data keys it wrapped still open. A version's key material is stored
sealed under the server master key, bound to its key id and version (crypto/ seals and opens
it: this module only moves bytes and reports what it found; the key store raises the errors).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from tierstore.catalog._records import KmsKeyRecord
from tierstore.catalog._rules import kms_key_of
from tierstore.catalog.sqlite._tables import Tables

__all__ = ["KMS_DDL", "KmsTables"]

T = TypeVar("T")

KMS_DDL = """
CREATE TABLE IF NOT EXISTS kms_keys(  -- v9: the local key service's key ids (crypto/_keystore.py)
    key_id TEXT PRIMARY KEY,  -- case-sensitive, as KMS aliases are
    enabled INTEGER NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL  -- the last status change or rotation
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kms_key_versions(
    key_id TEXT NOT NULL,
    version INTEGER NOT NULL,  -- 1, 2, ...: the highest wraps new data keys
    sealed_material BLOB NOT NULL,  -- 32 bytes sealed under the master key, bound to (key_id, version)
    created_ns INTEGER NOT NULL,
    PRIMARY KEY(key_id, version)
) WITHOUT ROWID;
"""


_KEY_SELECT = (
    "SELECT k.key_id, k.enabled, k.description, k.created_ns, k.updated_ns, MAX(v.version), MAX(v.created_ns)"
    " FROM kms_keys k JOIN kms_key_versions v ON v.key_id = k.key_id"
)


class KmsTables(Tables):
    """The key part of ``SqliteCatalog`` (a mixin, like ``IdentityTables``: reads through
    ``_reader()``, writes through ``_write(fn)``, so a drive set changes every catalog copy)."""

    async def kms_create_key(self, key_id: str, sealed_material: bytes, now_ns: int, description: str = "") -> bool:
        """Add ``key_id`` with its version 1; False (and nothing changed) when it exists."""

        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT OR IGNORE INTO kms_keys(key_id, enabled, description, created_ns, updated_ns)"
                " VALUES(?,1,?,?,?)",
                (key_id, description, now_ns, now_ns),
            )
            if cur.rowcount == 0:
                return False
            c.execute(
                "INSERT INTO kms_key_versions(key_id, version, sealed_material, created_ns) VALUES(?,1,?,?)",
                (key_id, sealed_material, now_ns),
            )
            return True

        return await self._write(fn)

    async def kms_get_key(self, key_id: str) -> KmsKeyRecord | None:
        row = self._reader().execute(f"{_KEY_SELECT} WHERE k.key_id=? GROUP BY k.key_id", (key_id,)).fetchone()
        return kms_key_of(row) if row else None

    async def kms_list_keys(self) -> list[KmsKeyRecord]:
        rows = self._reader().execute(f"{_KEY_SELECT} GROUP BY k.key_id ORDER BY k.key_id").fetchall()
        return [kms_key_of(r) for r in rows]

    async def kms_sealed_material(self, key_id: str, version: int) -> bytes | None:
        """The sealed material of one version of ``key_id`` (None: no such version)."""
        sql = "SELECT sealed_material FROM kms_key_versions WHERE key_id=? AND version=?"
        row = self._reader().execute(sql, (key_id, version)).fetchone()
        return bytes(row[0]) if row else None

    async def kms_add_version(self, key_id: str, seal: Callable[[int], bytes], now_ns: int) -> int | None:
        """Rotate: add the next version of ``key_id``, its material ``seal(version)``; returns the
        new version (None: no such key). The number is chosen inside the write transaction, so
        two rotations at once make two versions, never one overwritten."""

        def fn(c: sqlite3.Connection) -> int | None:
            row = c.execute("SELECT MAX(version) FROM kms_key_versions WHERE key_id=?", (key_id,)).fetchone()
            if row is None or row[0] is None:
                return None
            version = int(row[0]) + 1
            c.execute(
                "INSERT INTO kms_key_versions(key_id, version, sealed_material, created_ns) VALUES(?,?,?,?)",
                (key_id, version, seal(version), now_ns),
            )
            c.execute("UPDATE kms_keys SET updated_ns=? WHERE key_id=?", (now_ns, key_id))
            return version

        return await self._write(fn)

    async def kms_set_enabled(self, key_id: str, enabled: bool, now_ns: int) -> bool:
        """Enable or disable ``key_id``; False when there is no such key."""

        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE kms_keys SET enabled=?, updated_ns=? WHERE key_id=?", (int(enabled), now_ns, key_id)
            )
            return cur.rowcount > 0

        return await self._write(fn)

    async def kms_sealed_key_ids(self) -> list[bytes]:
        """The sealing headers (first 5 bytes: format, master key id) of the stored key material:
        which master keys sealed it (``server.prepare_master_key`` checks them at start)."""
        sql = "SELECT DISTINCT substr(sealed_material, 1, 5) FROM kms_key_versions"
        return [bytes(r[0]) for r in self._reader().execute(sql).fetchall()]
