"""Identities on PostgreSQL (docs/identities.md): users, access keys (their secrets sealed by
crypto/, bytes here), groups, managed and inline policies and their attachments, permissions
boundaries, roles and OpenID Connect providers — catalog/sqlite/_identity.py's semantics, call for call.

Names are case-sensitive and unique case-insensitively, as IAM's are (SQLite: ``COLLATE
NOCASE``): the columns are ``text COLLATE "C"`` and every comparison, unique index and order is
on ``lower(name)``, which under ``"C"`` folds ASCII only, as ``NOCASE`` does.

Every identity write runs in ``_iam_write``, which first bumps ``meta.iam_generation``: the
row's lock makes identity writes take turns (SQLite's single writer did), so a check that a name
is free and its INSERT cannot race another writer's; the counter moves only with identity
writes (never per request: last-used times do not bump it). The same statement announces the
change (``pg_notify``, catalog/postgres/_notify.py): every worker drops its cached identities.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

# The rows' decoders are the SQLite catalog's: one record format for both engines.
from tierstore.catalog._records import AccessKeyRecord, RoleRecord, UserRecord
from tierstore.catalog._rules import key_of, user_of
from tierstore.catalog.postgres._codec import dumps
from tierstore.catalog.postgres._notify import notify_sql
from tierstore.catalog.postgres._pool import Pool
from tierstore.errors import DeleteConflict, EntityAlreadyExists, NoSuchEntity

__all__ = ["DDL", "IdentityTables"]

T = TypeVar("T")

DDL = (
    """CREATE TABLE iam_users(
        name text COLLATE "C" NOT NULL,
        user_id text COLLATE "C" NOT NULL UNIQUE,
        enabled boolean NOT NULL DEFAULT true,
        tags jsonb NOT NULL DEFAULT '{}',
        created_ns bigint NOT NULL
    )""",
    "CREATE UNIQUE INDEX iam_users_name ON iam_users(lower(name))",
    """CREATE TABLE iam_access_keys(
        access_key_id text COLLATE "C" PRIMARY KEY,
        user_name text COLLATE "C",  -- the user it acts as (a service account's parent); NULL: the root
        kind text COLLATE "C" NOT NULL DEFAULT 'user',  -- 'user' | 'service'
        sealed_secret bytea NOT NULL,  -- crypto/: sealed under the master key, bound to access_key_id
        status text COLLATE "C" NOT NULL DEFAULT 'Active',  -- 'Active' | 'Inactive'
        created_ns bigint NOT NULL,
        last_used_ns bigint,  -- written at most once a minute per key
        expires_ns bigint,  -- NULL: never
        policy text,  -- a service account's inline policy
        name text NOT NULL DEFAULT ''  -- a service account's label
    )""",
    "CREATE INDEX iam_access_keys_user ON iam_access_keys(lower(user_name))",
    """CREATE TABLE iam_groups(
        name text COLLATE "C" NOT NULL,
        group_id text COLLATE "C" NOT NULL UNIQUE,
        created_ns bigint NOT NULL
    )""",
    "CREATE UNIQUE INDEX iam_groups_name ON iam_groups(lower(name))",
    """CREATE TABLE iam_group_members(
        group_name text COLLATE "C" NOT NULL,
        user_name text COLLATE "C" NOT NULL
    )""",
    "CREATE UNIQUE INDEX iam_group_members_pk ON iam_group_members(lower(group_name), lower(user_name))",
    "CREATE INDEX iam_group_members_user ON iam_group_members(lower(user_name))",
    """CREATE TABLE iam_policies(  -- managed policies (one version for now)
        name text COLLATE "C" NOT NULL,
        policy_id text COLLATE "C" NOT NULL UNIQUE,
        document text NOT NULL,
        description text NOT NULL DEFAULT '',
        created_ns bigint NOT NULL,
        updated_ns bigint NOT NULL
    )""",
    "CREATE UNIQUE INDEX iam_policies_name ON iam_policies(lower(name))",
    """CREATE TABLE iam_attachments(  -- managed policy -> user | group | role
        principal_type text COLLATE "C" NOT NULL,
        principal_name text COLLATE "C" NOT NULL,
        policy_name text COLLATE "C" NOT NULL
    )""",
    "CREATE UNIQUE INDEX iam_attachments_pk"
    " ON iam_attachments(principal_type, lower(principal_name), lower(policy_name))",
    "CREATE INDEX iam_attachments_policy ON iam_attachments(lower(policy_name))",
    """CREATE TABLE iam_inline_policies(
        principal_type text COLLATE "C" NOT NULL,
        principal_name text COLLATE "C" NOT NULL,
        policy_name text COLLATE "C" NOT NULL,
        document text NOT NULL
    )""",
    "CREATE UNIQUE INDEX iam_inline_policies_pk"
    " ON iam_inline_policies(principal_type, lower(principal_name), lower(policy_name))",
    """CREATE TABLE iam_roles(
        name text COLLATE "C" NOT NULL,
        role_id text COLLATE "C" NOT NULL UNIQUE,
        trust_policy text NOT NULL,
        max_session_s integer NOT NULL DEFAULT 3600,
        description text NOT NULL DEFAULT '',
        created_ns bigint NOT NULL
    )""",
    "CREATE UNIQUE INDEX iam_roles_name ON iam_roles(lower(name))",
    """CREATE TABLE iam_boundaries(  -- a user's or role's permissions boundary (a managed policy)
        principal_type text COLLATE "C" NOT NULL,  -- 'user' | 'role'
        principal_name text COLLATE "C" NOT NULL,
        policy_name text COLLATE "C" NOT NULL
    )""",
    "CREATE UNIQUE INDEX iam_boundaries_pk ON iam_boundaries(principal_type, lower(principal_name))",
    "CREATE INDEX iam_boundaries_policy ON iam_boundaries(lower(policy_name))",
    """CREATE TABLE iam_oidc_providers(
        url text COLLATE "C" PRIMARY KEY,  -- the issuer
        client_ids jsonb NOT NULL DEFAULT '[]',  -- audiences
        thumbprints jsonb NOT NULL DEFAULT '[]',
        created_ns bigint NOT NULL
    )""",
)

PRINCIPAL_TYPES = ("user", "group", "role")
_PRINCIPAL_TABLES = {"user": "iam_users", "group": "iam_groups", "role": "iam_roles"}

_KEY_COLUMNS = (
    "access_key_id, user_name, kind, sealed_secret, status, created_ns, last_used_ns, expires_ns, policy, name"
)
_USER_COLUMNS = "name, user_id, enabled, tags, created_ns"
_ROLE_COLUMNS = "name, role_id, trust_policy, max_session_s, description, created_ns"

# First in every identity write: the row lock serializes identity writers (see the module
# docstring), and the notification that drops every worker's cached identities at commit.
_NEW_GENERATION = (
    "INSERT INTO meta(name, value) VALUES('iam_generation', '1')"
    " ON CONFLICT(name) DO UPDATE SET value = (meta.value::bigint + 1)::text; "
) + notify_sql("iam", "")


async def _exists(c: Any, sql: str, *args: Any) -> bool:
    return await c.fetchval(sql, *args) is not None


async def _must_exist(c: Any, principal_type: str, name: str) -> None:
    table = _PRINCIPAL_TABLES[principal_type]
    if not await _exists(c, f"SELECT 1 FROM {table} WHERE lower(name) = lower($1)", name):  # noqa: S608
        raise NoSuchEntity(f"The {principal_type} with name {name} cannot be found.", resource=name)


async def _policy_must_exist(c: Any, name: str) -> None:
    if not await _exists(c, "SELECT 1 FROM iam_policies WHERE lower(name) = lower($1)", name):
        raise NoSuchEntity(f"Policy {name} was not found.", resource=name)


async def _no_dependents(c: Any, name: str, checks: tuple[tuple[str, str], ...]) -> None:
    """``DeleteConflict`` naming the first of ``checks`` ((what, SQL with $1 = name)) that finds a row."""
    for what, sql in checks:
        if await _exists(c, sql, name):
            raise DeleteConflict(f"Cannot delete entity, must remove {what} first.", resource=name)


def _of(principal_type: str, table: str) -> str:
    """A dependents check: a row of ``table`` for a principal of ``principal_type`` named $1."""
    assert principal_type in PRINCIPAL_TYPES
    return f"SELECT 1 FROM {table} WHERE principal_type = '{principal_type}' AND lower(principal_name) = lower($1)"  # noqa: S608


def _deleted(status: str) -> bool:
    return status != "DELETE 0"


class IdentityTables:
    """The identity calls of the catalog protocol."""

    _pool: Pool

    async def _iam_write(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """One transaction: a new ``iam_generation`` (first: it serializes identity writers),
        then ``fn``; a reader that sees the old generation saw the old rows."""

        async def changed(c: Any) -> T:
            await c.execute(_NEW_GENERATION)
            return await fn(c)

        return await self._pool.write(changed)

    async def iam_generation(self) -> str:
        """A counter that moves with every committed change of users, keys, groups, policies,
        attachments, boundaries, roles or OIDC providers (not with last-used times): a worker
        that saw the same value before has nothing to reload ("" until the first change)."""
        value = await self._pool.fetchval("SELECT value FROM meta WHERE name = 'iam_generation'")
        return str(value) if value is not None else ""

    # --- users ---------------------------------------------------------------------------
    async def iam_create_user(self, user: UserRecord) -> None:
        async def fn(c: Any) -> None:
            if await _exists(c, "SELECT 1 FROM iam_users WHERE lower(name) = lower($1)", user.name):
                raise EntityAlreadyExists(f"User with name {user.name} already exists.", resource=user.name)
            await c.execute(
                "INSERT INTO iam_users(name, user_id, enabled, tags, created_ns) VALUES($1, $2, $3, $4::jsonb, $5)",
                user.name, user.user_id, user.enabled, json.dumps(user.tags), user.created_ns,
            )  # fmt: skip

        await self._iam_write(fn)

    async def iam_get_user(self, name: str) -> UserRecord | None:
        sql = f"SELECT {_USER_COLUMNS} FROM iam_users WHERE lower(name) = lower($1)"  # noqa: S608 - constant
        row = await self._pool.fetchrow(sql, name)
        return user_of(row) if row else None

    async def iam_list_users(self, after: str = "", limit: int = 1000) -> list[UserRecord]:
        sql = (
            f"SELECT {_USER_COLUMNS} FROM iam_users WHERE lower(name) > lower($1)"  # noqa: S608 - constant
            " ORDER BY lower(name) LIMIT $2"
        )
        return [user_of(r) for r in await self._pool.fetch(sql, after, limit)]

    async def iam_update_user(
        self, name: str, *, enabled: bool | None = None, tags: dict[str, str] | None = None
    ) -> None:
        async def fn(c: Any) -> None:
            await _must_exist(c, "user", name)
            if enabled is not None:
                await c.execute("UPDATE iam_users SET enabled = $1 WHERE lower(name) = lower($2)", enabled, name)
            if tags is not None:
                await c.execute(
                    "UPDATE iam_users SET tags = $1::jsonb WHERE lower(name) = lower($2)", json.dumps(tags), name
                )

        await self._iam_write(fn)

    async def iam_delete_user(self, name: str) -> None:
        """Delete a user that has no access keys, group memberships or policies (IAM's
        ``DeleteConflict`` otherwise: the caller removes them first)."""

        async def fn(c: Any) -> None:
            await _must_exist(c, "user", name)
            await _no_dependents(c, name, (
                ("access keys", "SELECT 1 FROM iam_access_keys WHERE lower(user_name) = lower($1)"),
                ("group memberships", "SELECT 1 FROM iam_group_members WHERE lower(user_name) = lower($1)"),
                ("attached policies", _of("user", "iam_attachments")),
                ("inline policies", _of("user", "iam_inline_policies")),
            ))  # fmt: skip
            await c.execute("DELETE FROM iam_users WHERE lower(name) = lower($1)", name)
            await c.execute(
                "DELETE FROM iam_boundaries WHERE principal_type = 'user' AND lower(principal_name) = lower($1)", name
            )

        await self._iam_write(fn)

    # --- access keys ---------------------------------------------------------------------
    async def iam_create_key(self, key: AccessKeyRecord) -> None:
        async def fn(c: Any) -> None:
            if key.user_name is not None:
                await _must_exist(c, "user", key.user_name)
            if await _exists(c, "SELECT 1 FROM iam_access_keys WHERE access_key_id = $1", key.access_key_id):
                raise EntityAlreadyExists("The access key id is taken.", resource=key.access_key_id)
            await c.execute(
                f"INSERT INTO iam_access_keys({_KEY_COLUMNS}) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                key.access_key_id, key.user_name, key.kind, key.sealed_secret, key.status, key.created_ns,
                key.last_used_ns, key.expires_ns, key.policy, key.name,
            )  # fmt: skip

        await self._iam_write(fn)

    async def iam_get_key(self, access_key_id: str) -> AccessKeyRecord | None:
        sql = f"SELECT {_KEY_COLUMNS} FROM iam_access_keys WHERE access_key_id = $1"  # noqa: S608 - constant
        row = await self._pool.fetchrow(sql, access_key_id)
        return key_of(row) if row else None

    async def iam_list_keys(self, user_name: str | None, *, kind: str | None = None) -> list[AccessKeyRecord]:
        """The keys acting as ``user_name`` (None: the root's), of ``kind`` if given, by id."""
        # Two statements, not one with a CASE: each then uses its index (``iam_access_keys_user``).
        where = "user_name IS NULL AND $1::text IS NULL" if user_name is None else "lower(user_name) = lower($1)"
        sql = (
            f"SELECT {_KEY_COLUMNS} FROM iam_access_keys WHERE {where}"  # noqa: S608 - constants
            " AND ($2::text IS NULL OR kind = $2) ORDER BY access_key_id"
        )
        return [key_of(r) for r in await self._pool.fetch(sql, user_name, kind)]

    async def iam_sealed_key_ids(self) -> list[bytes]:
        """One sealed secret per distinct sealing header prefix is enough to tell which master
        keys sealed the catalog's secrets: the first 5 bytes (version, key id) of each."""
        rows = await self._pool.fetch("SELECT DISTINCT substring(sealed_secret FROM 1 FOR 5) FROM iam_access_keys")
        return [bytes(r[0]) for r in rows]

    async def iam_set_key_status(self, access_key_id: str, status: str) -> None:
        async def fn(c: Any) -> None:
            done = await c.execute(
                "UPDATE iam_access_keys SET status = $1 WHERE access_key_id = $2", status, access_key_id
            )
            if done == "UPDATE 0":
                raise NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found.", resource=access_key_id)

        await self._iam_write(fn)

    async def iam_delete_key(self, access_key_id: str) -> None:
        async def fn(c: Any) -> None:
            if not _deleted(await c.execute("DELETE FROM iam_access_keys WHERE access_key_id = $1", access_key_id)):
                raise NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found.", resource=access_key_id)

        await self._iam_write(fn)

    async def iam_touch_keys(self, used: dict[str, int]) -> None:
        """Record last-used times (only ever forward); no new generation (nothing any answer
        depends on), and one statement whatever the number of keys."""
        if not used:
            return

        async def fn(c: Any) -> None:
            await c.execute(
                "UPDATE iam_access_keys k SET last_used_ns = u.ns"
                " FROM unnest($1::text[], $2::bigint[]) AS u(id, ns)"
                " WHERE k.access_key_id = u.id AND (k.last_used_ns IS NULL OR k.last_used_ns < u.ns)",
                list(used), list(used.values()),
            )  # fmt: skip

        await self._pool.write(fn)

    # --- groups --------------------------------------------------------------------------
    async def iam_create_group(self, name: str, group_id: str, created_ns: int) -> None:
        async def fn(c: Any) -> None:
            if await _exists(c, "SELECT 1 FROM iam_groups WHERE lower(name) = lower($1)", name):
                raise EntityAlreadyExists(f"Group with name {name} already exists.", resource=name)
            await c.execute(
                "INSERT INTO iam_groups(name, group_id, created_ns) VALUES($1, $2, $3)", name, group_id, created_ns
            )

        await self._iam_write(fn)

    async def iam_list_groups(self) -> list[tuple[str, str, int]]:
        """(name, group id, created_ns) of every group, by name."""
        rows = await self._pool.fetch("SELECT name, group_id, created_ns FROM iam_groups ORDER BY lower(name)")
        return [(r[0], r[1], r[2]) for r in rows]

    async def iam_delete_group(self, name: str) -> None:
        async def fn(c: Any) -> None:
            await _must_exist(c, "group", name)
            await _no_dependents(c, name, (
                ("users", "SELECT 1 FROM iam_group_members WHERE lower(group_name) = lower($1)"),
                ("attached policies", _of("group", "iam_attachments")),
                ("inline policies", _of("group", "iam_inline_policies")),
            ))  # fmt: skip
            await c.execute("DELETE FROM iam_groups WHERE lower(name) = lower($1)", name)

        await self._iam_write(fn)

    async def iam_set_membership(self, group_name: str, user_name: str, *, member: bool) -> None:
        async def fn(c: Any) -> None:
            await _must_exist(c, "group", group_name)
            await _must_exist(c, "user", user_name)
            if member:
                await c.execute(
                    "INSERT INTO iam_group_members(group_name, user_name) VALUES($1, $2)"
                    " ON CONFLICT(lower(group_name), lower(user_name)) DO NOTHING",
                    group_name, user_name,
                )  # fmt: skip
            else:
                await c.execute(
                    "DELETE FROM iam_group_members"
                    " WHERE lower(group_name) = lower($1) AND lower(user_name) = lower($2)",
                    group_name, user_name,
                )  # fmt: skip

        await self._iam_write(fn)

    async def iam_groups_of(self, user_name: str) -> list[str]:
        sql = "SELECT group_name FROM iam_group_members WHERE lower(user_name) = lower($1) ORDER BY lower(group_name)"
        return [r[0] for r in await self._pool.fetch(sql, user_name)]

    async def iam_members_of(self, group_name: str) -> list[str]:
        sql = "SELECT user_name FROM iam_group_members WHERE lower(group_name) = lower($1) ORDER BY lower(user_name)"
        return [r[0] for r in await self._pool.fetch(sql, group_name)]

    # --- managed and inline policies -----------------------------------------------------
    async def iam_create_policy(self, name: str, policy_id: str, document: str, description: str, now_ns: int) -> None:
        async def fn(c: Any) -> None:
            if await _exists(c, "SELECT 1 FROM iam_policies WHERE lower(name) = lower($1)", name):
                raise EntityAlreadyExists(f"A policy called {name} already exists.", resource=name)
            await c.execute(
                "INSERT INTO iam_policies(name, policy_id, document, description, created_ns, updated_ns)"
                " VALUES($1, $2, $3, $4, $5, $5)",
                name, policy_id, document, description, now_ns,
            )  # fmt: skip

        await self._iam_write(fn)

    async def iam_get_policy(self, name: str) -> tuple[str, str, str, int] | None:
        """(name, policy id, document, updated_ns) of managed policy ``name``."""
        sql = "SELECT name, policy_id, document, updated_ns FROM iam_policies WHERE lower(name) = lower($1)"
        row = await self._pool.fetchrow(sql, name)
        return (row[0], row[1], row[2], row[3]) if row else None

    async def iam_list_policies(self) -> list[str]:
        return [r[0] for r in await self._pool.fetch("SELECT name FROM iam_policies ORDER BY lower(name)")]

    async def iam_delete_policy(self, name: str) -> None:
        async def fn(c: Any) -> None:
            await _policy_must_exist(c, name)
            if await _exists(c, "SELECT 1 FROM iam_attachments WHERE lower(policy_name) = lower($1)", name):
                raise DeleteConflict("Cannot delete a policy attached to entities.", resource=name)
            if await _exists(c, "SELECT 1 FROM iam_boundaries WHERE lower(policy_name) = lower($1)", name):
                raise DeleteConflict("Cannot delete a policy used as a permissions boundary.", resource=name)
            await c.execute("DELETE FROM iam_policies WHERE lower(name) = lower($1)", name)

        await self._iam_write(fn)

    async def iam_attach(self, principal_type: str, principal_name: str, policy_name: str, *, attach: bool) -> None:
        assert principal_type in PRINCIPAL_TYPES

        async def fn(c: Any) -> None:
            await _must_exist(c, principal_type, principal_name)
            await _policy_must_exist(c, policy_name)
            args = (principal_type, principal_name, policy_name)
            if attach:
                await c.execute(
                    "INSERT INTO iam_attachments(principal_type, principal_name, policy_name) VALUES($1, $2, $3)"
                    " ON CONFLICT(principal_type, lower(principal_name), lower(policy_name)) DO NOTHING",
                    *args,
                )
                return
            done = await c.execute(
                "DELETE FROM iam_attachments WHERE principal_type = $1 AND lower(principal_name) = lower($2)"
                " AND lower(policy_name) = lower($3)",
                *args,
            )
            if not _deleted(done):
                raise NoSuchEntity(f"Policy {policy_name} is not attached to {principal_name}.", resource=policy_name)

        await self._iam_write(fn)

    async def iam_attached(self, principal_type: str, principal_name: str) -> list[tuple[str, str]]:
        """(policy name, document) of the managed policies attached to a principal, by name."""
        sql = (
            "SELECT p.name, p.document FROM iam_attachments a"
            " JOIN iam_policies p ON lower(p.name) = lower(a.policy_name)"
            " WHERE a.principal_type = $1 AND lower(a.principal_name) = lower($2) ORDER BY lower(p.name)"
        )
        return [(r[0], r[1]) for r in await self._pool.fetch(sql, principal_type, principal_name)]

    async def iam_policy_entities(self, policy_name: str) -> list[tuple[str, str]]:
        """(principal type, name) of everything managed policy ``policy_name`` is attached to."""
        sql = (
            "SELECT principal_type, principal_name FROM iam_attachments WHERE lower(policy_name) = lower($1)"
            " ORDER BY principal_type, lower(principal_name)"
        )
        return [(r[0], r[1]) for r in await self._pool.fetch(sql, policy_name)]

    async def iam_set_boundary(self, principal_type: str, principal_name: str, policy_name: str | None) -> None:
        """Set (``policy_name``) or remove (None) the permissions boundary of a user or role."""
        assert principal_type in ("user", "role")

        async def fn(c: Any) -> None:
            await _must_exist(c, principal_type, principal_name)
            if policy_name is None:
                await c.execute(
                    "DELETE FROM iam_boundaries WHERE principal_type = $1 AND lower(principal_name) = lower($2)",
                    principal_type, principal_name,
                )  # fmt: skip
                return
            await _policy_must_exist(c, policy_name)
            await c.execute(
                "INSERT INTO iam_boundaries(principal_type, principal_name, policy_name) VALUES($1, $2, $3)"
                " ON CONFLICT(principal_type, lower(principal_name)) DO UPDATE SET policy_name = excluded.policy_name",
                principal_type, principal_name, policy_name,
            )  # fmt: skip

        await self._iam_write(fn)

    async def iam_boundary(self, principal_type: str, principal_name: str) -> tuple[str, str] | None:
        """(policy name, document) of the permissions boundary of a user or role, if any."""
        sql = (
            "SELECT p.name, p.document FROM iam_boundaries b"
            " JOIN iam_policies p ON lower(p.name) = lower(b.policy_name)"
            " WHERE b.principal_type = $1 AND lower(b.principal_name) = lower($2)"
        )
        row = await self._pool.fetchrow(sql, principal_type, principal_name)
        return (row[0], row[1]) if row else None

    async def iam_put_inline(self, principal_type: str, principal_name: str, policy_name: str, document: str) -> None:
        assert principal_type in PRINCIPAL_TYPES

        async def fn(c: Any) -> None:
            await _must_exist(c, principal_type, principal_name)
            await c.execute(
                "INSERT INTO iam_inline_policies(principal_type, principal_name, policy_name, document)"
                " VALUES($1, $2, $3, $4) ON CONFLICT(principal_type, lower(principal_name), lower(policy_name))"
                " DO UPDATE SET document = excluded.document",
                principal_type, principal_name, policy_name, document,
            )  # fmt: skip

        await self._iam_write(fn)

    async def iam_delete_inline(self, principal_type: str, principal_name: str, policy_name: str) -> None:
        async def fn(c: Any) -> None:
            done = await c.execute(
                "DELETE FROM iam_inline_policies WHERE principal_type = $1 AND lower(principal_name) = lower($2)"
                " AND lower(policy_name) = lower($3)",
                principal_type, principal_name, policy_name,
            )  # fmt: skip
            if not _deleted(done):
                raise NoSuchEntity(f"The policy {policy_name} cannot be found.", resource=policy_name)

        await self._iam_write(fn)

    async def iam_inline(self, principal_type: str, principal_name: str) -> list[tuple[str, str]]:
        """(policy name, document) of a principal's inline policies, by name."""
        sql = (
            "SELECT policy_name, document FROM iam_inline_policies"
            " WHERE principal_type = $1 AND lower(principal_name) = lower($2) ORDER BY lower(policy_name)"
        )
        return [(r[0], r[1]) for r in await self._pool.fetch(sql, principal_type, principal_name)]

    # --- roles and OIDC providers --------------------------------------------------------
    async def iam_create_role(self, role: RoleRecord) -> None:
        async def fn(c: Any) -> None:
            if await _exists(c, "SELECT 1 FROM iam_roles WHERE lower(name) = lower($1)", role.name):
                raise EntityAlreadyExists(f"Role with name {role.name} already exists.", resource=role.name)
            await c.execute(
                f"INSERT INTO iam_roles({_ROLE_COLUMNS}) VALUES($1, $2, $3, $4, $5, $6)",
                role.name, role.role_id, role.trust_policy, role.max_session_s, role.description, role.created_ns,
            )  # fmt: skip

        await self._iam_write(fn)

    async def iam_get_role(self, name: str) -> RoleRecord | None:
        sql = f"SELECT {_ROLE_COLUMNS} FROM iam_roles WHERE lower(name) = lower($1)"  # noqa: S608 - constant
        row = await self._pool.fetchrow(sql, name)
        return RoleRecord(*row) if row else None

    async def iam_list_roles(self) -> list[RoleRecord]:
        sql = f"SELECT {_ROLE_COLUMNS} FROM iam_roles ORDER BY lower(name)"  # noqa: S608 - constant
        return [RoleRecord(*r) for r in await self._pool.fetch(sql)]

    async def iam_update_role(
        self,
        name: str,
        *,
        trust_policy: str | None = None,
        max_session_s: int | None = None,
        description: str | None = None,
    ) -> None:
        async def fn(c: Any) -> None:
            await _must_exist(c, "role", name)
            await c.execute(
                "UPDATE iam_roles SET trust_policy = COALESCE($2, trust_policy),"
                " max_session_s = COALESCE($3, max_session_s), description = COALESCE($4, description)"
                " WHERE lower(name) = lower($1)",
                name, trust_policy, max_session_s, description,
            )  # fmt: skip

        await self._iam_write(fn)

    async def iam_delete_role(self, name: str) -> None:
        async def fn(c: Any) -> None:
            await _must_exist(c, "role", name)
            await _no_dependents(c, name, (
                ("attached policies", _of("role", "iam_attachments")),
                ("inline policies", _of("role", "iam_inline_policies")),
            ))  # fmt: skip
            await c.execute("DELETE FROM iam_roles WHERE lower(name) = lower($1)", name)
            await c.execute(
                "DELETE FROM iam_boundaries WHERE principal_type = 'role' AND lower(principal_name) = lower($1)", name
            )

        await self._iam_write(fn)

    async def iam_put_oidc_provider(self, url: str, client_ids: list[str], thumbprints: list[str], now_ns: int) -> None:
        async def fn(c: Any) -> None:
            if await _exists(c, "SELECT 1 FROM iam_oidc_providers WHERE url = $1", url):
                raise EntityAlreadyExists(f"Provider with url {url} already exists.", resource=url)
            await c.execute(
                "INSERT INTO iam_oidc_providers(url, client_ids, thumbprints, created_ns)"
                " VALUES($1, $2::jsonb, $3::jsonb, $4)",
                url, dumps(client_ids), dumps(thumbprints), now_ns,
            )  # fmt: skip

        await self._iam_write(fn)

    async def iam_oidc_providers(self) -> list[tuple[str, list[str], list[str], int]]:
        """(issuer url, client ids, thumbprints, created_ns) of every provider, by url."""
        rows = await self._pool.fetch(
            "SELECT url, client_ids, thumbprints, created_ns FROM iam_oidc_providers ORDER BY url"
        )
        return [(r[0], json.loads(r[1]), json.loads(r[2]), r[3]) for r in rows]

    async def iam_delete_oidc_provider(self, url: str) -> None:
        async def fn(c: Any) -> None:
            if not _deleted(await c.execute("DELETE FROM iam_oidc_providers WHERE url = $1", url)):
                raise NoSuchEntity(f"OpenIDConnect provider {url} was not found.", resource=url)

        await self._iam_write(fn)
