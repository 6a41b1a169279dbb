"""Identities: users, access keys, service accounts, groups, policies and roles, kept in the
catalog, with the secrets sealed under the server master key (docs/identities.md).

``IdentityService`` is what the IAM faces (the admin extension now, the IAM query API later)
call, and what the authenticator asks on every request: ``secret_for(access_key_id)`` and
``principal_for(access_key_id)`` are answered from a per-process cache that lives
``cache_ttl_s`` (1 s), so a key disabled through one worker stops working in every worker
within about a second, while the hot path does no catalog read for a key seen recently. When an
answer's second is over, one read of the catalog's identity generation (``iam_generation``: it
moves with every identity write, once per ``cache_ttl_s`` for all keys) tells whether anything
changed; if not, the answer is kept for another second (its key's expiry checked again) instead
of re-reading the key, user, groups and policies and re-opening the sealed secret. On
PostgreSQL, answers are kept as long as ``watch`` says (tierstore/_watch.py: until an ``iam``
notification, never past the key's expiry).

Policy documents are stored as text. ``validate_policy(document, kind)`` (given by the
composition root: ``tierstore.iam.parse_policy``; by default: any JSON object) vets them before
they are stored (``kind``: ``identity``, ``session`` for a service account's, ``trust``); the evaluator (iam/) reads the
documents of ``Principal.policies``.

A secret is returned exactly once, by the call that creates its key (``NewAccessKey``); it
never reaches a log, an error message, a ``repr`` or a listing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tierstore._watch import ConfigWatch
from tierstore.catalog import AccessKeyRecord, Catalog, RoleRecord, UserRecord
from tierstore.crypto import MasterKey, SealedSecretError
from tierstore.engine._cached import NOT_CACHED, NotCached, SecretNotLoaded
from tierstore.errors import AccessDenied, InvalidArgument, LimitExceeded, MalformedPolicyDocument, NoSuchEntity

__all__ = [
    "AccessKeyInfo",
    "AppliedPolicy",
    "IdentityService",
    "NewAccessKey",
    "Principal",
    "UserRecord",
    "accept_json_object",
    "oidc_url_allowed",
]

log = logging.getLogger("tierstore.identity")

_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)  # IAM's user, group and role names
_POLICY_NAME = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
MAX_POLICY_CHARS = 20_480
MAX_TAGS = 50
PRINCIPAL_TYPES = ("user", "group", "role")
LAST_USED_INTERVAL_S = 60.0  # a key's last-used time is written at most this often (per process)
_T = TypeVar("_T")
_CACHE_MAX = 10_000  # entries; past it the cache starts over (unknown key ids are cached too)


def accept_json_object(document: str, kind: str = "identity") -> None:
    """The default policy check until the policy language is wired in: a JSON object of
    bounded size. ``MalformedPolicyDocument`` otherwise."""
    if len(document) > MAX_POLICY_CHARS:
        raise MalformedPolicyDocument(f"The policy document is longer than {MAX_POLICY_CHARS} characters.")
    try:
        doc = json.loads(document)
    except (ValueError, RecursionError):
        raise MalformedPolicyDocument("The policy document is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise MalformedPolicyDocument("The policy document must be a JSON object.")


@dataclass(frozen=True, slots=True)
class AppliedPolicy:
    """One identity policy that applies to a principal. ``source`` says where it comes from:
    ``user-managed``, ``user-inline``, ``group-managed``, ``group-inline``; ``via`` is the user or
    group it is attached to; ``name`` the policy's name."""

    name: str
    source: str
    via: str
    document: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an access key acts as, and the identity policies that apply.

    ``kind``: ``root`` (the bootstrap credentials, or a catalog key of the root), ``user`` (a
    user's own key) or ``service`` (a service account: ``user_name`` is its parent, and
    ``session_policy``, when set, can only narrow the parent's rights)."""

    access_key_id: str
    kind: str
    user_name: str | None
    user_id: str | None
    groups: tuple[str, ...] = ()
    policies: tuple[AppliedPolicy, ...] = ()
    session_policy: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    boundary: AppliedPolicy | None = None  # the user's permissions boundary: caps its identity policies

    @property
    def is_root(self) -> bool:
        return self.user_name is None


@dataclass(frozen=True, slots=True)
class AccessKeyInfo:
    """An access key as listings show it: never its secret."""

    access_key_id: str
    user_name: str | None
    kind: str
    status: str
    created_ns: int
    last_used_ns: int | None
    expires_ns: int | None
    policy: str | None
    name: str

    @classmethod
    def of(cls, rec: AccessKeyRecord) -> AccessKeyInfo:
        return cls(
            rec.access_key_id,
            rec.user_name,
            rec.kind,
            rec.status,
            rec.created_ns,
            rec.last_used_ns,
            rec.expires_ns,
            rec.policy,
            rec.name,
        )


@dataclass(frozen=True, slots=True)
class NewAccessKey:
    """A key just created: the only value that ever carries its secret."""

    info: AccessKeyInfo
    secret_key: str = field(repr=False)


def _check_name(name: str, what: str, pattern: re.Pattern[str] = _NAME) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise InvalidArgument(
            f"The {what} name must be 1 to {pattern.pattern[-3:-1]} characters of [A-Za-z0-9+=,.@_-]."
        )
    return name


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(17))


class IdentityService:
    """Users, keys, groups, policies and roles over the catalog; the authenticator's lookups.

    ``root_keys``: the bootstrap key pairs (``--access-key``/``credentials.json`` and any extra
    configured keys), which act as the root and are never stored in the catalog."""

    def __init__(
        self,
        catalog: Catalog,
        master_key: MasterKey,
        *,
        root_keys: Mapping[str, str] = {},
        validate_policy: Callable[[str, str], object] = accept_json_object,
        cache_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self._key = master_key
        self._root_keys = dict(root_keys)
        self.root_key_ids = frozenset(self._root_keys)  # ``is_root_key`` as a set (the authorizer's hot path)
        self.validate_policy = validate_policy
        self.cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._monotonic = monotonic
        # access key id -> (valid until, identity generation it was loaded at, the key's
        # expiry in ns or None, the answer)
        self._secrets: dict[str, tuple[float, str, int | None, str | None]] = {}
        self._principals: dict[str, tuple[float, str, int | None, Principal | None]] = {}
        self._generation = ""  # the catalog's iam_generation as last read ...
        self._generation_until = float("-inf")  # ... and until when it stands for the catalog's
        self._touched: dict[str, float] = {}
        self._pending_used: dict[str, int] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self.watch = ConfigWatch()

    def watch_with(self, watch: ConfigWatch) -> None:
        """Keep answers as ``watch`` says (tierstore/_watch.py); every ``iam`` change drops them all."""
        self.watch = watch
        watch.on("iam", lambda _name: self.forget())

    def __repr__(self) -> str:
        return f"IdentityService(root_keys={len(self._root_keys)}, master_key={self._key!r})"

    def _now_ns(self) -> int:
        return int(self._clock() * 1e9)

    def forget(self, access_key_id: str | None = None) -> None:
        """Drop this process's cached answers (for one key, or all)."""
        if access_key_id is None:
            self._secrets.clear()
            self._principals.clear()
        else:
            self._secrets.pop(access_key_id, None)
            self._principals.pop(access_key_id, None)
        self._generation_until = float("-inf")  # this worker just wrote: the next load reads it anew

    async def _current_generation(self, now: float) -> str:
        """The catalog's identity generation, read at most once per ``cache_ttl_s``."""
        if now >= self._generation_until:
            epoch = self.watch.epoch
            generation = await self.catalog.iam_generation()
            if not self.watch.current(epoch):
                return generation  # a change was announced meanwhile: read it again next time
            self._generation = generation
            self._generation_until = now + self.watch.lifetime(self.cache_ttl_s)
        return self._generation

    async def _still(self, hit: tuple[float, str, int | None, Any], now: float) -> bool:
        """Whether an expired cache entry still holds: no identity changed since it was loaded
        and its key has not expired. Then it stands until the generation is read again, so an
        answer is never older than ``cache_ttl_s`` behind the catalog."""
        return hit[1] == await self._current_generation(now) and (hit[2] is None or hit[2] > self._now_ns())
    # --- the authenticator's hot path ----------------------------------------------------
    def is_root_key(self, access_key_id: str) -> bool:
        """Whether ``access_key_id`` is one of the bootstrap root keys."""
        return access_key_id in self._root_keys

    def cached_secret(self, access_key_id: str) -> str | None:
        """``secret_for``'s answer while this worker holds it (the root's keys always; a catalog
        key's for ``cache_ttl_s``): the authenticator's synchronous hot path. ``SecretNotLoaded``
        when it must be read first (``await secret_for``)."""
        root = self._root_keys.get(access_key_id)
        if root is not None:
            return root
        hit = self._secrets.get(access_key_id)
        if hit is not None and hit[0] > self._monotonic():
            return hit[3]
        raise SecretNotLoaded(access_key_id)

    async def secret_for(self, access_key_id: str) -> str | None:
        """The secret of an active, unexpired key of an enabled user (or of the root); None
        otherwise. Cached for ``cache_ttl_s``."""
        try:
            return self.cached_secret(access_key_id)
        except SecretNotLoaded:
            return await self._refresh(self._secrets, access_key_id, self._load_secret)

    async def _refresh(
        self,
        cache: dict[str, tuple[float, str, int | None, _T]],
        access_key_id: str,
        load: Callable[[str], Awaitable[tuple[_T, int | None]]],
    ) -> _T:
        """The answer for ``access_key_id`` once its cache entry's time is over: the same one
        again while the identity generation has not moved and the key has not expired (until the
        generation is read again), else ``load``'s (tagged with the generation read before it, so
        a change made meanwhile reloads next time)."""
        now = self._monotonic()
        epoch = self.watch.epoch
        hit = cache.get(access_key_id)
        if hit is not None and await self._still(hit, now):
            if self.watch.current(epoch):
                cache[access_key_id] = (self._until(self._generation_until, now, hit[2]), *hit[1:])
            return hit[3]
        generation = await self._current_generation(now)
        value, expires_ns = await load(access_key_id)
        if self.watch.current(epoch):  # else a change was announced meanwhile: not kept
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            until = self._until(now + self.watch.lifetime(self.cache_ttl_s), now, expires_ns)
            cache[access_key_id] = (until, generation, expires_ns, value)
        return value

    def _until(self, until: float, now: float, expires_ns: int | None) -> float:
        """``until``, but not past the key's expiry (``now``: the monotonic clock's): an entry
        held long (``watch``) must not outlive its key."""
        if expires_ns is None:
            return until
        return min(until, now + (expires_ns - self._now_ns()) / 1e9)

    async def _usable(self, rec: AccessKeyRecord | None) -> tuple[bool, UserRecord | None]:
        """(whether ``rec`` may authenticate now, its user: None for the root's keys)."""
        if rec is None or rec.status != "Active":
            return False, None
        if rec.expires_ns is not None and rec.expires_ns <= self._now_ns():
            return False, None
        if rec.user_name is None:
            return True, None
        user = await self.catalog.iam_get_user(rec.user_name)
        if user is None or not user.enabled:
            return False, None
        return True, user

    async def _load_secret(self, access_key_id: str) -> tuple[str | None, int | None]:
        """(the secret or None, the key's expiry)."""
        rec = await self.catalog.iam_get_key(access_key_id)
        if rec is None or not (await self._usable(rec))[0]:
            return None, None
        try:
            return self._key.open_sealed(rec.sealed_secret, context=access_key_id.encode()).decode(), rec.expires_ns
        except SealedSecretError as exc:
            log.warning("access key %s: its sealed secret does not open: %s", access_key_id, exc)
            return None, None

    def cached_principal(self, access_key_id: str) -> Principal | NotCached | None:
        """``principal_for``'s answer while this worker holds it; ``NOT_CACHED`` when it must be
        read (the authorizer's synchronous hot path: no coroutine on a hit)."""
        if access_key_id in self._root_keys:
            return Principal(access_key_id, "root", None, None)
        hit = self._principals.get(access_key_id)
        if hit is not None and hit[0] > self._monotonic():
            return hit[3]
        return NOT_CACHED

    async def principal_for(self, access_key_id: str) -> Principal | None:
        """Who ``access_key_id`` acts as and the identity policies that apply (None: the key
        cannot authenticate now). Cached for ``cache_ttl_s``."""
        found = self.cached_principal(access_key_id)
        if found is NOT_CACHED:
            return await self._refresh(self._principals, access_key_id, self._load_principal)
        return found

    async def _load_principal(self, access_key_id: str) -> tuple[Principal | None, int | None]:
        """(who the key acts as or None, the key's expiry)."""
        rec = await self.catalog.iam_get_key(access_key_id)
        usable, user = await self._usable(rec)
        if rec is None or not usable:
            return None, None
        session = rec.policy if rec.kind == "service" else None
        kind = "service" if rec.kind == "service" else "root" if user is None else "user"
        if user is None:  # the root's catalog key (a service account of the root: still narrowed)
            return Principal(access_key_id, kind, None, None, (), (), session), rec.expires_ns
        return await self._user_principal(access_key_id, kind, user, session), rec.expires_ns

    async def _user_principal(self, access_key_id: str, kind: str, user: UserRecord, session: str | None) -> Principal:
        """``user``'s principal with every identity policy that applies (its own and its groups')."""
        cat = self.catalog
        groups = tuple(await cat.iam_groups_of(user.name))
        applied = [AppliedPolicy(n, "user-managed", user.name, d) for n, d in await cat.iam_attached("user", user.name)]
        applied += [AppliedPolicy(n, "user-inline", user.name, d) for n, d in await cat.iam_inline("user", user.name)]
        for g in groups:
            applied += [AppliedPolicy(n, "group-managed", g, d) for n, d in await cat.iam_attached("group", g)]
            applied += [AppliedPolicy(n, "group-inline", g, d) for n, d in await cat.iam_inline("group", g)]
        bound = await cat.iam_boundary("user", user.name)
        boundary = AppliedPolicy(bound[0], "user-boundary", user.name, bound[1]) if bound is not None else None
        return Principal(
            access_key_id, kind, user.name, user.user_id, groups, tuple(applied), session, user.tags, boundary
        )

    async def user_principal(self, user_name: str, access_key_id: str) -> Principal | None:
        """The principal of an enabled user, for temporary credentials (``access_key_id``) issued to
        it by GetSessionToken; None when the user is gone or disabled. Not cached: the caller
        (``StsService``) caches it as ``principal_for`` does."""
        user = await self.catalog.iam_get_user(user_name)
        if user is None or not user.enabled:
            return None
        return await self._user_principal(access_key_id, "session", user, None)

    async def role_policies(self, role_name: str) -> tuple[AppliedPolicy, ...]:
        """The identity policies of a role (attached managed ones, then inline ones)."""
        cat = self.catalog
        applied = [AppliedPolicy(n, "role-managed", role_name, d) for n, d in await cat.iam_attached("role", role_name)]
        applied += [AppliedPolicy(n, "role-inline", role_name, d) for n, d in await cat.iam_inline("role", role_name)]
        return tuple(applied)

    def note_used(self, access_key_id: str) -> None:
        """A request signed with ``access_key_id`` authenticated: its last-used time is written
        (in the background) at most once a minute per key, so the hot path writes nothing."""
        if access_key_id in self._root_keys:
            return
        now = self._monotonic()
        last = self._touched.get(access_key_id)
        if last is not None and now - last < LAST_USED_INTERVAL_S:
            return
        if len(self._touched) >= _CACHE_MAX:
            self._touched.clear()
        self._touched[access_key_id] = now
        self._pending_used[access_key_id] = self._now_ns()
        if self._flush_task is None or self._flush_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_task = loop.create_task(self.flush_last_used())

    async def flush_last_used(self) -> None:
        """Write the last-used times noted since the previous flush."""
        while self._pending_used:
            pending, self._pending_used = self._pending_used, {}
            try:
                await self.catalog.iam_touch_keys(pending)
            except Exception:
                log.exception("recording when %d access keys were last used failed", len(pending))
                return

    # --- users ---------------------------------------------------------------------------
    async def create_user(self, name: str, *, tags: Mapping[str, str] | None = None) -> UserRecord:
        user = UserRecord(_check_name(name, "user"), _new_id("AIDA"), True, dict(tags or {}), self._now_ns())
        await self.catalog.iam_create_user(user)
        return user

    async def get_user(self, name: str) -> UserRecord:
        user = await self.catalog.iam_get_user(name)
        if user is None:
            raise NoSuchEntity(f"The user with name {name} cannot be found.", resource=name)
        return user

    async def list_users(self, after: str = "", limit: int = 1000) -> list[UserRecord]:
        return await self.catalog.iam_list_users(after, limit)

    async def set_user_enabled(self, name: str, enabled: bool) -> None:
        """A disabled user's keys stop authenticating (within ``cache_ttl_s`` everywhere)."""
        await self.catalog.iam_update_user(name, enabled=enabled)
        self.forget()

    async def tag_user(self, name: str, tags: Mapping[str, str]) -> None:
        """Add or overwrite tags of ``name`` (IAM's limit: 50 tags, keys of 128 and values of
        256 characters)."""
        merged = {**(await self.get_user(name)).tags, **tags}
        if len(merged) > MAX_TAGS:
            raise LimitExceeded(f"A user can have at most {MAX_TAGS} tags.")
        if any(not k or len(k) > 128 or len(v) > 256 for k, v in tags.items()):
            raise InvalidArgument("A tag key is 1 to 128 characters, its value at most 256.")
        await self.catalog.iam_update_user(name, tags=merged)
        self.forget()

    async def untag_user(self, name: str, keys: list[str]) -> None:
        tags = {k: v for k, v in (await self.get_user(name)).tags.items() if k not in set(keys)}
        await self.catalog.iam_update_user(name, tags=tags)
        self.forget()

    async def delete_user(self, name: str) -> None:
        """``DeleteConflict`` while the user has keys, groups or policies."""
        await self.catalog.iam_delete_user(name)
        self.forget()

    # --- access keys and service accounts ------------------------------------------------
    async def _refuse_service_caller(self, caller: str | None) -> None:
        """A service account never manages keys: not its own, its parent's or anyone's."""
        if caller is None or caller in self._root_keys:
            return
        rec = await self.catalog.iam_get_key(caller)
        if rec is not None and rec.kind == "service":
            raise AccessDenied("A service account cannot manage access keys.")

    async def _new_key(
        self,
        user_name: str | None,
        kind: str,
        *,
        policy: str | None = None,
        expires_ns: int | None = None,
        name: str = "",
    ) -> NewAccessKey:
        while True:
            access_key_id = "TK" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))
            if access_key_id not in self._root_keys:
                break
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        sealed = self._key.seal(secret.encode(), context=access_key_id.encode())
        rec = AccessKeyRecord(
            access_key_id, user_name, kind, sealed, "Active", self._now_ns(), None, expires_ns, policy, name
        )
        await self.catalog.iam_create_key(rec)
        self.forget(access_key_id)
        return NewAccessKey(AccessKeyInfo.of(rec), secret)

    async def create_access_key(self, user_name: str, *, caller: str | None = None) -> NewAccessKey:
        """A new active key of ``user_name``; the result carries the secret, shown only now.
        ``caller``: the access key id asking (a service account is refused)."""
        await self._refuse_service_caller(caller)
        await self.get_user(user_name)
        return await self._new_key(user_name, "user")

    async def create_service_account(
        self,
        parent: str | None,
        *,
        policy: str | None = None,
        expires_ns: int | None = None,
        name: str = "",
        caller: str | None = None,
    ) -> NewAccessKey:
        """A key acting as ``parent`` (a user; None: the root) whose rights are the parent's,
        narrowed by ``policy`` when given, until ``expires_ns`` when given."""
        await self._refuse_service_caller(caller)
        if parent is not None:
            await self.get_user(parent)
        if policy is not None:
            self.validate_policy(policy, "session")
        if expires_ns is not None and expires_ns <= self._now_ns():
            raise InvalidArgument("The expiry of a service account must be in the future.")
        if len(name) > 64:
            raise InvalidArgument("A service account's name is at most 64 characters.")
        return await self._new_key(parent, "service", policy=policy, expires_ns=expires_ns, name=name)

    async def get_access_key(self, access_key_id: str) -> AccessKeyInfo:
        rec = await self.catalog.iam_get_key(access_key_id)
        if rec is None:
            raise NoSuchEntity(f"The Access Key with id {access_key_id} cannot be found.", resource=access_key_id)
        return AccessKeyInfo.of(rec)

    async def list_access_keys(self, user_name: str | None, *, kind: str | None = None) -> list[AccessKeyInfo]:
        """The keys of ``user_name`` (None: the root's catalog keys), without secrets."""
        if user_name is not None:
            await self.get_user(user_name)
        return [AccessKeyInfo.of(r) for r in await self.catalog.iam_list_keys(user_name, kind=kind)]

    async def set_access_key_status(self, access_key_id: str, *, active: bool, caller: str | None = None) -> None:
        await self._refuse_service_caller(caller)
        await self.catalog.iam_set_key_status(access_key_id, "Active" if active else "Inactive")
        self.forget(access_key_id)

    async def delete_access_key(self, access_key_id: str, *, caller: str | None = None) -> None:
        await self._refuse_service_caller(caller)
        await self.catalog.iam_delete_key(access_key_id)
        self.forget(access_key_id)

    # --- groups --------------------------------------------------------------------------
    async def create_group(self, name: str) -> str:
        """Returns the new group's id."""
        group_id = _new_id("AGPA")
        await self.catalog.iam_create_group(_check_name(name, "group"), group_id, self._now_ns())
        return group_id

    async def list_groups(self) -> list[tuple[str, str, int]]:
        return await self.catalog.iam_list_groups()

    async def get_group(self, name: str) -> tuple[str, str, int]:
        """(name, id, created_ns) of group ``name``."""
        for group in await self.catalog.iam_list_groups():
            if group[0].lower() == name.lower():
                return group
        raise NoSuchEntity(f"The group with name {name} cannot be found.", resource=name)

    async def delete_group(self, name: str) -> None:
        await self.catalog.iam_delete_group(name)
        self.forget()

    async def add_user_to_group(self, group: str, user: str) -> None:
        await self.catalog.iam_set_membership(group, user, member=True)
        self.forget()

    async def remove_user_from_group(self, group: str, user: str) -> None:
        await self.catalog.iam_set_membership(group, user, member=False)
        self.forget()

    async def groups_for_user(self, user: str) -> list[str]:
        await self.get_user(user)
        return await self.catalog.iam_groups_of(user)

    async def group_members(self, group: str) -> list[str]:
        return await self.catalog.iam_members_of(group)

    # --- policies ------------------------------------------------------------------------
    async def create_policy(self, name: str, document: str, *, description: str = "") -> str:
        """A managed policy; returns its id. The document passes ``validate_policy`` first."""
        _check_name(name, "policy", _POLICY_NAME)
        self.validate_policy(document, "identity")
        policy_id = _new_id("ANPA")
        await self.catalog.iam_create_policy(name, policy_id, document, description, self._now_ns())
        return policy_id

    async def get_policy(self, name: str) -> tuple[str, str, str, int]:
        """(name, id, document, updated_ns)."""
        found = await self.catalog.iam_get_policy(name)
        if found is None:
            raise NoSuchEntity(f"Policy {name} was not found.", resource=name)
        return found

    async def list_policies(self) -> list[str]:
        return await self.catalog.iam_list_policies()

    async def delete_policy(self, name: str) -> None:
        await self.catalog.iam_delete_policy(name)

    async def attach_policy(self, principal_type: str, principal_name: str, policy_name: str) -> None:
        await self.catalog.iam_attach(_check_type(principal_type), principal_name, policy_name, attach=True)
        self.forget()

    async def detach_policy(self, principal_type: str, principal_name: str, policy_name: str) -> None:
        await self.catalog.iam_attach(_check_type(principal_type), principal_name, policy_name, attach=False)
        self.forget()

    async def policy_entities(self, name: str) -> list[tuple[str, str]]:
        """(principal type, name) of everything managed policy ``name`` is attached to."""
        await self.get_policy(name)
        return await self.catalog.iam_policy_entities(name)

    async def set_boundary(self, principal_type: str, principal_name: str, policy_name: str | None) -> None:
        """Set (a managed policy's name) or remove (None) the permissions boundary of a user or
        role: the most its identity policies can grant."""
        if principal_type not in ("user", "role"):
            raise InvalidArgument("A permissions boundary applies to a user or a role.")
        await self.catalog.iam_set_boundary(principal_type, principal_name, policy_name)
        self.forget()

    async def boundary(self, principal_type: str, principal_name: str) -> str | None:
        """The name of the managed policy bounding a user or role, if any."""
        found = await self.catalog.iam_boundary(principal_type, principal_name)
        return found[0] if found is not None else None

    async def attached_policies(self, principal_type: str, principal_name: str) -> list[str]:
        return [n for n, _doc in await self.catalog.iam_attached(_check_type(principal_type), principal_name)]

    async def put_inline_policy(
        self, principal_type: str, principal_name: str, policy_name: str, document: str
    ) -> None:
        _check_name(policy_name, "policy", _POLICY_NAME)
        self.validate_policy(document, "identity")
        await self.catalog.iam_put_inline(_check_type(principal_type), principal_name, policy_name, document)
        self.forget()

    async def delete_inline_policy(self, principal_type: str, principal_name: str, policy_name: str) -> None:
        await self.catalog.iam_delete_inline(_check_type(principal_type), principal_name, policy_name)
        self.forget()

    async def inline_policies(self, principal_type: str, principal_name: str) -> dict[str, str]:
        return dict(await self.catalog.iam_inline(_check_type(principal_type), principal_name))

    # --- roles and OIDC providers --------------------------------------------------------
    async def create_role(
        self, name: str, trust_policy: str, *, max_session_s: int = 3600, description: str = ""
    ) -> RoleRecord:
        _check_name(name, "role")
        self.validate_policy(trust_policy, "trust")
        if not 900 <= max_session_s <= 43_200:
            raise InvalidArgument("The maximum session duration is 900 to 43200 seconds.")
        role = RoleRecord(name, _new_id("AROA"), trust_policy, max_session_s, description, self._now_ns())
        await self.catalog.iam_create_role(role)
        return role

    async def get_role(self, name: str) -> RoleRecord:
        role = await self.catalog.iam_get_role(name)
        if role is None:
            raise NoSuchEntity(f"The role with name {name} cannot be found.", resource=name)
        return role

    async def list_roles(self) -> list[RoleRecord]:
        return await self.catalog.iam_list_roles()

    async def update_role(
        self,
        name: str,
        *,
        trust_policy: str | None = None,
        max_session_s: int | None = None,
        description: str | None = None,
    ) -> None:
        """Change a role's trust policy (validated as at creation), maximum session or description."""
        if trust_policy is not None:
            self.validate_policy(trust_policy, "trust")
        if max_session_s is not None and not 900 <= max_session_s <= 43_200:
            raise InvalidArgument("The maximum session duration is 900 to 43200 seconds.")
        await self.catalog.iam_update_role(
            name, trust_policy=trust_policy, max_session_s=max_session_s, description=description
        )

    async def delete_role(self, name: str) -> None:
        await self.catalog.iam_delete_role(name)

    async def create_oidc_provider(self, url: str, client_ids: list[str], thumbprints: list[str]) -> None:
        if not oidc_url_allowed(url):
            raise InvalidArgument(
                "The provider URL must be an https:// URL of at most 255 characters "
                "(http:// only for a provider on this host: 127.0.0.1, [::1] or localhost)."
            )
        await self.catalog.iam_put_oidc_provider(url, list(client_ids), list(thumbprints), self._now_ns())

    async def list_oidc_providers(self) -> list[dict[str, Any]]:
        return [
            {"url": url, "client_ids": ids, "thumbprints": prints, "created_ns": created}
            for url, ids, prints, created in await self.catalog.iam_oidc_providers()
        ]

    async def delete_oidc_provider(self, url: str) -> None:
        await self.catalog.iam_delete_oidc_provider(url)


def oidc_url_allowed(url: str) -> bool:
    """Whether ``url`` may name an OpenID Connect provider (its issuer): https, or plain http to a
    loopback host (a local identity provider; nothing off the host can read or alter its keys)."""
    if len(url) > 255:
        return False
    if url.startswith("https://"):
        return len(url) > len("https://")
    if not url.startswith("http://"):
        return False
    host = urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "::1", "localhost")


def _check_type(principal_type: str) -> str:
    if principal_type not in PRINCIPAL_TYPES:
        raise InvalidArgument("A policy attaches to a user, a group or a role.")
    return principal_type
