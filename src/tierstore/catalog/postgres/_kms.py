"""The built-in key service's keys on PostgreSQL (docs/security.md "Key service"), as
catalog/sqlite/_kms.py keeps them: a key id's status in ``kms_keys``, one row per version in
``kms_key_versions`` with the material sealed by crypto/ (bytes here).

A rotation locks the key's row (``FOR UPDATE``) before it reads the highest version, so two
rotations at once, through any gateways, make two versions, never one overwritten or a
conflict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tierstore.catalog._records import KmsKeyRecord
from tierstore.catalog._rules import kms_key_of
from tierstore.catalog.postgres._notify import notify_sql
from tierstore.catalog.postgres._pool import Pool

__all__ = ["DDL", "KmsTables"]

DDL = (
    """CREATE TABLE kms_keys(  -- the local key service's key ids (crypto/_keystore.py)
        key_id text COLLATE "C" PRIMARY KEY,  -- case-sensitive, as KMS aliases are
        enabled boolean NOT NULL DEFAULT true,
        description text NOT NULL DEFAULT '',
        created_ns bigint NOT NULL,
        updated_ns bigint NOT NULL  -- the last status change or rotation
    )""",
    """CREATE TABLE kms_key_versions(
        key_id text COLLATE "C" NOT NULL,
        version integer NOT NULL,  -- 1, 2, ...: the highest wraps new data keys
        sealed_material bytea NOT NULL,  -- sealed under the master key, bound to (key_id, version)
        created_ns bigint NOT NULL,
        PRIMARY KEY(key_id, version)
    )""",
)

_KEY_SELECT = (
    "SELECT k.key_id, k.enabled, k.description, k.created_ns, k.updated_ns, max(v.version), max(v.created_ns)"
    " FROM kms_keys k JOIN kms_key_versions v ON v.key_id = k.key_id"
)


class KmsTables:
    """The key-service calls of the catalog protocol."""

    _pool: Pool

    async def kms_create_key(self, key_id: str, sealed_material: bytes, now_ns: int, description: str = "") -> bool:
        """Add ``key_id`` with its version 1; False (and nothing changed) when it exists."""

        async def fn(c: Any) -> bool:
            done = await c.execute(
                "INSERT INTO kms_keys(key_id, enabled, description, created_ns, updated_ns)"
                " VALUES($1, true, $2, $3, $3) ON CONFLICT(key_id) DO NOTHING",
                key_id, description, now_ns,
            )  # fmt: skip
            if done == "INSERT 0 0":
                return False
            await c.execute(
                "INSERT INTO kms_key_versions(key_id, version, sealed_material, created_ns) VALUES($1, 1, $2, $3)",
                key_id, sealed_material, now_ns,
            )  # fmt: skip
            return True

        return await self._pool.write(fn, first=notify_sql("kms", key_id))

    async def kms_get_key(self, key_id: str) -> KmsKeyRecord | None:
        row = await self._pool.fetchrow(f"{_KEY_SELECT} WHERE k.key_id = $1 GROUP BY k.key_id", key_id)
        return kms_key_of(row) if row else None

    async def kms_list_keys(self) -> list[KmsKeyRecord]:
        return [kms_key_of(r) for r in await self._pool.fetch(f"{_KEY_SELECT} GROUP BY k.key_id ORDER BY k.key_id")]

    async def kms_sealed_material(self, key_id: str, version: int) -> bytes | None:
        """The sealed material of one version of ``key_id`` (None: no such version)."""
        value = await self._pool.fetchval(
            "SELECT sealed_material FROM kms_key_versions WHERE key_id = $1 AND version = $2", key_id, version
        )
        return bytes(value) if value is not None else None

    async def kms_add_version(self, key_id: str, seal: Callable[[int], bytes], now_ns: int) -> int | None:
        """Rotate: add the next version of ``key_id``, its material ``seal(version)``; returns the
        new version (None: no such key). The number is chosen under the key row's lock."""

        async def fn(c: Any) -> int | None:
            if await c.fetchval("SELECT 1 FROM kms_keys WHERE key_id = $1 FOR UPDATE", key_id) is None:
                return None
            newest = await c.fetchval("SELECT max(version) FROM kms_key_versions WHERE key_id = $1", key_id)
            if newest is None:
                return None
            version = int(newest) + 1
            await c.execute(
                "INSERT INTO kms_key_versions(key_id, version, sealed_material, created_ns) VALUES($1, $2, $3, $4)",
                key_id, version, seal(version), now_ns,
            )  # fmt: skip
            await c.execute("UPDATE kms_keys SET updated_ns = $1 WHERE key_id = $2", now_ns, key_id)
            return version

        return await self._pool.write(fn, first=notify_sql("kms", key_id))

    async def kms_set_enabled(self, key_id: str, enabled: bool, now_ns: int) -> bool:
        """Enable or disable ``key_id``; False when there is no such key."""

        async def fn(c: Any) -> bool:
            done = await c.execute(
                "UPDATE kms_keys SET enabled = $1, updated_ns = $2 WHERE key_id = $3", enabled, now_ns, key_id
            )
            return bool(done != "UPDATE 0")

        return await self._pool.write(fn, first=notify_sql("kms", key_id))

    async def kms_sealed_key_ids(self) -> list[bytes]:
        """The sealing headers (first 5 bytes: format, master key id) of the stored key material:
        which master keys sealed it (``server.prepare_master_key`` checks them at start)."""
        rows = await self._pool.fetch("SELECT DISTINCT substring(sealed_material FROM 1 FOR 5) FROM kms_key_versions")
        return [bytes(r[0]) for r in rows]
