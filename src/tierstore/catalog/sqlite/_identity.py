"""Identity tables of the catalog (schema v7; v8 added permissions boundaries): users, access
keys, groups, managed and inline policies and their attachments, roles, OpenID Connect providers
(docs/identities.md).

Secrets are stored sealed (crypto/): this module only moves bytes. Policy documents are stored
as text; the engine validates them before they get here. Names are case-sensitive, as IAM's
are unique case-insensitively: ``COLLATE NOCASE`` on every name column enforces that.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from tierstore.catalog._records import AccessKeyRecord, RoleRecord, UserRecord
from tierstore.catalog._rules import key_of, user_of
from tierstore.catalog.sqlite._tables import Tables
from tierstore.errors import DeleteConflict, EntityAlreadyExists, NoSuchEntity

__all__ = ["IDENTITY_DDL", "IdentityTables"]

T = TypeVar("T")

IDENTITY_DDL = """
CREATE TABLE IF NOT EXISTS iam_users(
    name TEXT PRIMARY KEY COLLATE NOCASE,
    user_id TEXT NOT NULL UNIQUE,
    enabled INTEGER NOT NULL DEFAULT 1,
    tags TEXT NOT NULL DEFAULT '{}',  -- JSON object
    created_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iam_access_keys(
    access_key_id TEXT PRIMARY KEY,
    user_name TEXT COLLATE NOCASE,  -- the user it acts as (a service account's parent); NULL: the root
    kind TEXT NOT NULL DEFAULT 'user',  -- 'user': the user's own key; 'service': a service account
    sealed_secret BLOB NOT NULL,  -- crypto/: sealed under the master key, bound to access_key_id
    status TEXT NOT NULL DEFAULT 'Active',  -- 'Active' | 'Inactive'
    created_ns INTEGER NOT NULL,
    last_used_ns INTEGER,  -- written at most once a minute per key
    expires_ns INTEGER,  -- NULL: never
    policy TEXT,  -- a service account's inline policy: it can only narrow the parent's rights
    name TEXT NOT NULL DEFAULT ''  -- a service account's label
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS iam_access_keys_user ON iam_access_keys(user_name);
CREATE TABLE IF NOT EXISTS iam_groups(
    name TEXT PRIMARY KEY COLLATE NOCASE,
    group_id TEXT NOT NULL UNIQUE,
    created_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iam_group_members(
    group_name TEXT NOT NULL COLLATE NOCASE,
    user_name TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY(group_name, user_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS iam_group_members_user ON iam_group_members(user_name);
CREATE TABLE IF NOT EXISTS iam_policies(  -- managed policies (one version for now)
    name TEXT PRIMARY KEY COLLATE NOCASE,
    policy_id TEXT NOT NULL UNIQUE,
    document TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iam_attachments(  -- managed policy -> user | group | role
    principal_type TEXT NOT NULL,
    principal_name TEXT NOT NULL COLLATE NOCASE,
    policy_name TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY(principal_type, principal_name, policy_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS iam_attachments_policy ON iam_attachments(policy_name);
CREATE TABLE IF NOT EXISTS iam_inline_policies(
    principal_type TEXT NOT NULL,
    principal_name TEXT NOT NULL COLLATE NOCASE,
    policy_name TEXT NOT NULL COLLATE NOCASE,
    document TEXT NOT NULL,
    PRIMARY KEY(principal_type, principal_name, policy_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iam_roles(
    name TEXT PRIMARY KEY COLLATE NOCASE,
    role_id TEXT NOT NULL UNIQUE,
    trust_policy TEXT NOT NULL,
    max_session_s INTEGER NOT NULL DEFAULT 3600,
    description TEXT NOT NULL DEFAULT '',
    created_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iam_boundaries(  -- v8: a user's or role's permissions boundary (a managed policy)
    principal_type TEXT NOT NULL,  -- 'user' | 'role'
    principal_name TEXT NOT NULL COLLATE NOCASE,
    policy_name TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY(principal_type, principal_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS iam_boundaries_policy ON iam_boundaries(policy_name);
CREATE TABLE IF NOT EXISTS iam_oidc_providers(
    url TEXT PRIMARY KEY,  -- the issuer
    client_ids TEXT NOT NULL DEFAULT '[]',  -- JSON list (audiences)
    thumbprints TEXT NOT NULL DEFAULT '[]',  -- JSON list
    created_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""

PRINCIPAL_TYPES = ("user", "group", "role")
_PRINCIPAL_TABLES = {"user": "iam_users", "group": "iam_groups", "role": "iam_roles"}


_KEY_COLUMNS = (
    "access_key_id, user_name, kind, sealed_secret, status, created_ns, last_used_ns, expires_ns, policy, name"
)


# A counter, the same on every copy of a mirrored catalog (a job runs once per copy and must be
# deterministic: catalog/sqlite/_mirror.py).
_NEW_GENERATION = (
    "INSERT INTO meta(name, value) VALUES('iam_generation', '1')"
    " ON CONFLICT(name) DO UPDATE SET value=CAST(value AS INTEGER) + 1"
)


def _must_exist(c: sqlite3.Connection, principal_type: str, name: str) -> None:
    table = _PRINCIPAL_TABLES[principal_type]
    if c.execute(f"SELECT 1 FROM {table} WHERE name=?", (name,)).fetchone() is None:  # noqa: S608
        raise NoSuchEntity(f"The {principal_type} with name {name} cannot be found.", resource=name)


class IdentityTables(Tables):
    """The identity part of ``SqliteCatalog`` (a mixin: it reads through ``_reader()`` and
    writes through ``_write(fn)``, so writes share the group commit and, on a drive set, go to
    every catalog copy)."""

    async def _iam_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``_write`` for a change of identities: ``fn`` and a new ``iam_generation`` in one
        transaction (savepoint), so a reader that sees the old generation saw the old rows."""

        def changed(c: sqlite3.Connection) -> T:
            result = fn(c)
            c.execute(_NEW_GENERATION)
            return result

        return await self._write(changed)

    async def iam_generation(self) -> str:
        """A counter that moves with every committed change of users, keys, groups, policies,
        attachments, boundaries, roles or OIDC providers (not with last-used times): a worker
        that saw the same value before has nothing to reload ("" until the first change)."""
        row = self._reader().execute("SELECT value FROM meta WHERE name='iam_generation'").fetchone()
        return str(row[0]) if row else ""

    # --- users ---------------------------------------------------------------------------
    async def iam_create_user(self, user: UserRecord) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM iam_users WHERE name=?", (user.name,)).fetchone() is not None:
                raise EntityAlreadyExists(f"User with name {user.name} already exists.", resource=user.name)
            c.execute(
                "INSERT INTO iam_users(name, user_id, enabled, tags, created_ns) VALUES(?,?,?,?,?)",
                (user.name, user.user_id, int(user.enabled), json.dumps(user.tags), user.created_ns),
            )

        await self._iam_write(fn)

    async def iam_get_user(self, name: str) -> UserRecord | None:
        sql = "SELECT name, user_id, enabled, tags, created_ns FROM iam_users WHERE name=?"
        row = self._reader().execute(sql, (name,)).fetchone()
        return user_of(row) if row else None

    async def iam_list_users(self, after: str = "", limit: int = 1000) -> list[UserRecord]:
        sql = "SELECT name, user_id, enabled, tags, created_ns FROM iam_users WHERE name > ? ORDER BY name LIMIT ?"
        return [user_of(r) for r in self._reader().execute(sql, (after, limit)).fetchall()]

    async def iam_update_user(
        self, name: str, *, enabled: bool | None = None, tags: dict[str, str] | None = None
    ) -> None:
        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, "user", name)
            if enabled is not None:
                c.execute("UPDATE iam_users SET enabled=? WHERE name=?", (int(enabled), name))
            if tags is not None:
                c.execute("UPDATE iam_users SET tags=? WHERE name=?", (json.dumps(tags), name))

        await self._iam_write(fn)

    async def iam_delete_user(self, name: str) -> None:
        """Delete a user that has no access keys, group memberships or policies (IAM's
        ``DeleteConflict`` otherwise: the caller removes them first)."""

        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, "user", name)
            for what, sql in (
                ("access keys", "SELECT 1 FROM iam_access_keys WHERE user_name=?"),
                ("group memberships", "SELECT 1 FROM iam_group_members WHERE user_name=?"),
                ("attached policies", "SELECT 1 FROM iam_attachments WHERE principal_type='user' AND principal_name=?"),
                (
                    "inline policies",
                    "SELECT 1 FROM iam_inline_policies WHERE principal_type='user' AND principal_name=?",
                ),
            ):
                if c.execute(sql, (name,)).fetchone() is not None:
                    raise DeleteConflict(f"Cannot delete entity, must remove {what} first.", resource=name)
            c.execute("DELETE FROM iam_users WHERE name=?", (name,))
            c.execute("DELETE FROM iam_boundaries WHERE principal_type='user' AND principal_name=?", (name,))

        await self._iam_write(fn)

    # --- access keys ---------------------------------------------------------------------
    async def iam_create_key(self, key: AccessKeyRecord) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if key.user_name is not None:
                _must_exist(c, "user", key.user_name)
            if c.execute("SELECT 1 FROM iam_access_keys WHERE access_key_id=?", (key.access_key_id,)).fetchone():
                raise EntityAlreadyExists("The access key id is taken.", resource=key.access_key_id)
            c.execute(
                f"INSERT INTO iam_access_keys({_KEY_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?)",
                (
                    key.access_key_id,
                    key.user_name,
                    key.kind,
                    key.sealed_secret,
                    key.status,
                    key.created_ns,
                    key.last_used_ns,
                    key.expires_ns,
                    key.policy,
                    key.name,
                ),
            )

        await self._iam_write(fn)

    async def iam_get_key(self, access_key_id: str) -> AccessKeyRecord | None:
        sql = f"SELECT {_KEY_COLUMNS} FROM iam_access_keys WHERE access_key_id=?"  # noqa: S608
        row = self._reader().execute(sql, (access_key_id,)).fetchone()
        return key_of(row) if row else None

    async def iam_list_keys(self, user_name: str | None, *, kind: str | None = None) -> list[AccessKeyRecord]:
        """The keys acting as ``user_name`` (None: the root's), of ``kind`` if given, by id."""
        where = "user_name IS NULL" if user_name is None else "user_name=?"
        args: list[Any] = [] if user_name is None else [user_name]
        if kind is not None:
            where += " AND kind=?"
            args.append(kind)
        sql = f"SELECT {_KEY_COLUMNS} FROM iam_access_keys WHERE {where} ORDER BY access_key_id"  # noqa: S608
        return [key_of(r) for r in self._reader().execute(sql, args).fetchall()]

    async def iam_sealed_key_ids(self) -> list[bytes]:
        """One sealed secret per distinct sealing header prefix is enough to tell which master
        keys sealed the catalog's secrets: the first 5 bytes (version, key id) of each."""
        sql = "SELECT DISTINCT substr(sealed_secret, 1, 5) FROM iam_access_keys"
        return [bytes(r[0]) for r in self._reader().execute(sql).fetchall()]

    async def iam_set_key_status(self, access_key_id: str, status: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            cur = c.execute("UPDATE iam_access_keys SET status=? WHERE access_key_id=?", (status, access_key_id))
            if cur.rowcount == 0:
                raise NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found.", resource=access_key_id)

        await self._iam_write(fn)

    async def iam_delete_key(self, access_key_id: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            cur = c.execute("DELETE FROM iam_access_keys WHERE access_key_id=?", (access_key_id,))
            if cur.rowcount == 0:
                raise NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found.", resource=access_key_id)

        await self._iam_write(fn)

    async def iam_touch_keys(self, used: dict[str, int]) -> None:
        """Record last-used times (only ever forward)."""

        def fn(c: sqlite3.Connection) -> None:
            c.executemany(
                "UPDATE iam_access_keys SET last_used_ns=? WHERE access_key_id=?"
                " AND (last_used_ns IS NULL OR last_used_ns < ?)",
                [(ns, ak, ns) for ak, ns in used.items()],
            )

        await self._write(fn)  # last-used times: no new generation (nothing any answer depends on)

    # --- groups --------------------------------------------------------------------------
    async def iam_create_group(self, name: str, group_id: str, created_ns: int) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM iam_groups WHERE name=?", (name,)).fetchone() is not None:
                raise EntityAlreadyExists(f"Group with name {name} already exists.", resource=name)
            c.execute("INSERT INTO iam_groups(name, group_id, created_ns) VALUES(?,?,?)", (name, group_id, created_ns))

        await self._iam_write(fn)

    async def iam_list_groups(self) -> list[tuple[str, str, int]]:
        """(name, group id, created_ns) of every group, by name."""
        sql = "SELECT name, group_id, created_ns FROM iam_groups ORDER BY name"
        return [tuple(r) for r in self._reader().execute(sql).fetchall()]

    async def iam_delete_group(self, name: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, "group", name)
            for what, sql in (
                ("users", "SELECT 1 FROM iam_group_members WHERE group_name=?"),
                (
                    "attached policies",
                    "SELECT 1 FROM iam_attachments WHERE principal_type='group' AND principal_name=?",
                ),
                (
                    "inline policies",
                    "SELECT 1 FROM iam_inline_policies WHERE principal_type='group' AND principal_name=?",
                ),
            ):
                if c.execute(sql, (name,)).fetchone() is not None:
                    raise DeleteConflict(f"Cannot delete entity, must remove {what} first.", resource=name)
            c.execute("DELETE FROM iam_groups WHERE name=?", (name,))

        await self._iam_write(fn)

    async def iam_set_membership(self, group_name: str, user_name: str, *, member: bool) -> None:
        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, "group", group_name)
            _must_exist(c, "user", user_name)
            if member:
                c.execute(
                    "INSERT OR IGNORE INTO iam_group_members(group_name, user_name) VALUES(?,?)",
                    (group_name, user_name),
                )
            else:
                c.execute("DELETE FROM iam_group_members WHERE group_name=? AND user_name=?", (group_name, user_name))

        await self._iam_write(fn)

    async def iam_groups_of(self, user_name: str) -> list[str]:
        sql = "SELECT group_name FROM iam_group_members WHERE user_name=? ORDER BY group_name"
        return [r[0] for r in self._reader().execute(sql, (user_name,)).fetchall()]

    async def iam_members_of(self, group_name: str) -> list[str]:
        sql = "SELECT user_name FROM iam_group_members WHERE group_name=? ORDER BY user_name"
        return [r[0] for r in self._reader().execute(sql, (group_name,)).fetchall()]

    # --- managed and inline policies -----------------------------------------------------
    async def iam_create_policy(self, name: str, policy_id: str, document: str, description: str, now_ns: int) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM iam_policies WHERE name=?", (name,)).fetchone() is not None:
                raise EntityAlreadyExists(f"A policy called {name} already exists.", resource=name)
            c.execute(
                "INSERT INTO iam_policies(name, policy_id, document, description, created_ns, updated_ns)"
                " VALUES(?,?,?,?,?,?)",
                (name, policy_id, document, description, now_ns, now_ns),
            )

        await self._iam_write(fn)

    async def iam_get_policy(self, name: str) -> tuple[str, str, str, int] | None:
        """(name, policy id, document, updated_ns) of managed policy ``name``."""
        sql = "SELECT name, policy_id, document, updated_ns FROM iam_policies WHERE name=?"
        row = self._reader().execute(sql, (name,)).fetchone()
        return (row[0], row[1], row[2], row[3]) if row else None

    async def iam_list_policies(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT name FROM iam_policies ORDER BY name").fetchall()]

    async def iam_delete_policy(self, name: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM iam_policies WHERE name=?", (name,)).fetchone() is None:
                raise NoSuchEntity(f"Policy {name} was not found.", resource=name)
            if c.execute("SELECT 1 FROM iam_attachments WHERE policy_name=?", (name,)).fetchone() is not None:
                raise DeleteConflict("Cannot delete a policy attached to entities.", resource=name)
            if c.execute("SELECT 1 FROM iam_boundaries WHERE policy_name=?", (name,)).fetchone() is not None:
                raise DeleteConflict("Cannot delete a policy used as a permissions boundary.", resource=name)
            c.execute("DELETE FROM iam_policies WHERE name=?", (name,))

        await self._iam_write(fn)

    async def iam_attach(self, principal_type: str, principal_name: str, policy_name: str, *, attach: bool) -> None:
        assert principal_type in PRINCIPAL_TYPES

        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, principal_type, principal_name)
            if c.execute("SELECT 1 FROM iam_policies WHERE name=?", (policy_name,)).fetchone() is None:
                raise NoSuchEntity(f"Policy {policy_name} was not found.", resource=policy_name)
            args = (principal_type, principal_name, policy_name)
            if attach:
                c.execute(
                    "INSERT OR IGNORE INTO iam_attachments(principal_type, principal_name, policy_name) VALUES(?,?,?)",
                    args,
                )
                return
            cur = c.execute(
                "DELETE FROM iam_attachments WHERE principal_type=? AND principal_name=? AND policy_name=?", args
            )
            if cur.rowcount == 0:
                raise NoSuchEntity(f"Policy {policy_name} is not attached to {principal_name}.", resource=policy_name)

        await self._iam_write(fn)

    async def iam_attached(self, principal_type: str, principal_name: str) -> list[tuple[str, str]]:
        """(policy name, document) of the managed policies attached to a principal, by name."""
        sql = (
            "SELECT p.name, p.document FROM iam_attachments a JOIN iam_policies p ON p.name = a.policy_name"
            " WHERE a.principal_type=? AND a.principal_name=? ORDER BY p.name"
        )
        return [(r[0], r[1]) for r in self._reader().execute(sql, (principal_type, principal_name)).fetchall()]

    async def iam_policy_entities(self, policy_name: str) -> list[tuple[str, str]]:
        """(principal type, name) of everything managed policy ``policy_name`` is attached to."""
        sql = "SELECT principal_type, principal_name FROM iam_attachments WHERE policy_name=? ORDER BY 1, 2"
        return [(r[0], r[1]) for r in self._reader().execute(sql, (policy_name,)).fetchall()]

    async def iam_set_boundary(self, principal_type: str, principal_name: str, policy_name: str | None) -> None:
        """Set (``policy_name``) or remove (None) the permissions boundary of a user or role."""
        assert principal_type in ("user", "role")

        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, principal_type, principal_name)
            if policy_name is None:
                c.execute(
                    "DELETE FROM iam_boundaries WHERE principal_type=? AND principal_name=?",
                    (principal_type, principal_name),
                )
                return
            if c.execute("SELECT 1 FROM iam_policies WHERE name=?", (policy_name,)).fetchone() is None:
                raise NoSuchEntity(f"Policy {policy_name} was not found.", resource=policy_name)
            c.execute(
                "INSERT INTO iam_boundaries(principal_type, principal_name, policy_name) VALUES(?,?,?)"
                " ON CONFLICT(principal_type, principal_name) DO UPDATE SET policy_name=excluded.policy_name",
                (principal_type, principal_name, policy_name),
            )

        await self._iam_write(fn)

    async def iam_boundary(self, principal_type: str, principal_name: str) -> tuple[str, str] | None:
        """(policy name, document) of the permissions boundary of a user or role, if any."""
        sql = (
            "SELECT p.name, p.document FROM iam_boundaries b JOIN iam_policies p ON p.name = b.policy_name"
            " WHERE b.principal_type=? AND b.principal_name=?"
        )
        row = self._reader().execute(sql, (principal_type, principal_name)).fetchone()
        return (row[0], row[1]) if row else None

    async def iam_put_inline(self, principal_type: str, principal_name: str, policy_name: str, document: str) -> None:
        assert principal_type in PRINCIPAL_TYPES

        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, principal_type, principal_name)
            c.execute(
                "INSERT INTO iam_inline_policies(principal_type, principal_name, policy_name, document) VALUES(?,?,?,?)"
                " ON CONFLICT(principal_type, principal_name, policy_name) DO UPDATE SET document=excluded.document",
                (principal_type, principal_name, policy_name, document),
            )

        await self._iam_write(fn)

    async def iam_delete_inline(self, principal_type: str, principal_name: str, policy_name: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "DELETE FROM iam_inline_policies WHERE principal_type=? AND principal_name=? AND policy_name=?",
                (principal_type, principal_name, policy_name),
            )
            if cur.rowcount == 0:
                raise NoSuchEntity(f"The policy {policy_name} cannot be found.", resource=policy_name)

        await self._iam_write(fn)

    async def iam_inline(self, principal_type: str, principal_name: str) -> list[tuple[str, str]]:
        """(policy name, document) of a principal's inline policies, by name."""
        sql = (
            "SELECT policy_name, document FROM iam_inline_policies"
            " WHERE principal_type=? AND principal_name=? ORDER BY policy_name"
        )
        return [(r[0], r[1]) for r in self._reader().execute(sql, (principal_type, principal_name)).fetchall()]

    # --- roles and OIDC providers --------------------------------------------------------
    async def iam_create_role(self, role: RoleRecord) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM iam_roles WHERE name=?", (role.name,)).fetchone() is not None:
                raise EntityAlreadyExists(f"Role with name {role.name} already exists.", resource=role.name)
            c.execute(
                "INSERT INTO iam_roles(name, role_id, trust_policy, max_session_s, description, created_ns)"
                " VALUES(?,?,?,?,?,?)",
                (role.name, role.role_id, role.trust_policy, role.max_session_s, role.description, role.created_ns),
            )

        await self._iam_write(fn)

    async def iam_get_role(self, name: str) -> RoleRecord | None:
        sql = "SELECT name, role_id, trust_policy, max_session_s, description, created_ns FROM iam_roles WHERE name=?"
        row = self._reader().execute(sql, (name,)).fetchone()
        return RoleRecord(*row) if row else None

    async def iam_list_roles(self) -> list[RoleRecord]:
        sql = "SELECT name, role_id, trust_policy, max_session_s, description, created_ns FROM iam_roles ORDER BY name"
        return [RoleRecord(*r) for r in self._reader().execute(sql).fetchall()]

    async def iam_update_role(
        self,
        name: str,
        *,
        trust_policy: str | None = None,
        max_session_s: int | None = None,
        description: str | None = None,
    ) -> None:
        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, "role", name)
            for column, value in (
                ("trust_policy", trust_policy),
                ("max_session_s", max_session_s),
                ("description", description),
            ):
                if value is not None:
                    c.execute(f"UPDATE iam_roles SET {column}=? WHERE name=?", (value, name))  # noqa: S608

        await self._iam_write(fn)

    async def iam_delete_role(self, name: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            _must_exist(c, "role", name)
            for what, sql in (
                ("attached policies", "SELECT 1 FROM iam_attachments WHERE principal_type='role' AND principal_name=?"),
                (
                    "inline policies",
                    "SELECT 1 FROM iam_inline_policies WHERE principal_type='role' AND principal_name=?",
                ),
            ):
                if c.execute(sql, (name,)).fetchone() is not None:
                    raise DeleteConflict(f"Cannot delete entity, must remove {what} first.", resource=name)
            c.execute("DELETE FROM iam_roles WHERE name=?", (name,))
            c.execute("DELETE FROM iam_boundaries WHERE principal_type='role' AND principal_name=?", (name,))

        await self._iam_write(fn)

    async def iam_put_oidc_provider(self, url: str, client_ids: list[str], thumbprints: list[str], now_ns: int) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM iam_oidc_providers WHERE url=?", (url,)).fetchone() is not None:
                raise EntityAlreadyExists(f"Provider with url {url} already exists.", resource=url)
            c.execute(
                "INSERT INTO iam_oidc_providers(url, client_ids, thumbprints, created_ns) VALUES(?,?,?,?)",
                (url, json.dumps(client_ids), json.dumps(thumbprints), now_ns),
            )

        await self._iam_write(fn)

    async def iam_oidc_providers(self) -> list[tuple[str, list[str], list[str], int]]:
        """(issuer url, client ids, thumbprints, created_ns) of every provider, by url."""
        sql = "SELECT url, client_ids, thumbprints, created_ns FROM iam_oidc_providers ORDER BY url"
        return [(r[0], json.loads(r[1]), json.loads(r[2]), r[3]) for r in self._reader().execute(sql).fetchall()]

    async def iam_delete_oidc_provider(self, url: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM iam_oidc_providers WHERE url=?", (url,)).rowcount == 0:
                raise NoSuchEntity(f"OpenIDConnect provider {url} was not found.", resource=url)

        await self._iam_write(fn)
