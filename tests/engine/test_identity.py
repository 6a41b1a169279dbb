"""IdentityService in-process over a real SQLite catalog: users, keys (secret shown once, sealed
at rest), service accounts (narrowing policy, expiry, never managing keys), groups, policies
and the principal they add up to, roles and OIDC providers, and the 1 s cache."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierstore.catalog import SqliteCatalog
from tierstore.crypto import MasterKey
from tierstore.engine import IdentityService
from tierstore.errors import (
    AccessDenied,
    DeleteConflict,
    EntityAlreadyExists,
    InvalidArgument,
    MalformedPolicyDocument,
    NoSuchEntity,
)

ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
READ_ONLY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqliteCatalog]:
    cat = SqliteCatalog(tmp_path / "catalog.db")
    yield cat
    cat.close()


@pytest.fixture
def ids(catalog: SqliteCatalog, clock: Clock) -> IdentityService:
    return IdentityService(
        catalog, MasterKey(b"m" * 32), root_keys={"ROOTKEY": "rootsecret"}, clock=clock, monotonic=clock
    )


def test_users_and_keys_secret_shown_once_and_sealed(ids: IdentityService, tmp_path: Path) -> None:
    user = asyncio.run(ids.create_user("alice", tags={"team": "ml"}))
    assert user.enabled and user.user_id.startswith("AIDA")
    with pytest.raises(EntityAlreadyExists):
        asyncio.run(ids.create_user("ALICE"))  # unique regardless of case, as IAM
    with pytest.raises(InvalidArgument):
        asyncio.run(ids.create_user("bad/name"))
    new = asyncio.run(ids.create_access_key("alice"))
    assert new.secret_key not in repr(new)
    assert asyncio.run(ids.secret_for(new.info.access_key_id)) == new.secret_key
    assert asyncio.run(ids.secret_for("ROOTKEY")) == "rootsecret" and asyncio.run(ids.secret_for("NOSUCHKEY")) is None
    listed = asyncio.run(ids.list_access_keys("alice"))
    assert [k.access_key_id for k in listed] == [new.info.access_key_id] and listed[0].status == "Active"
    assert new.secret_key not in repr(listed)
    ids.catalog.close()  # the secret is nowhere in the database files in the clear
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("catalog.db"))
    assert new.secret_key.encode() not in blob


def test_key_status_user_disable_and_delete_take_effect_within_the_ttl(ids: IdentityService, clock: Clock) -> None:
    asyncio.run(ids.create_user("bob"))
    new = asyncio.run(ids.create_access_key("bob"))
    ak = new.info.access_key_id
    other = IdentityService(ids.catalog, MasterKey(b"m" * 32), clock=clock, monotonic=clock)  # another worker
    assert asyncio.run(other.secret_for(ak)) == new.secret_key
    asyncio.run(ids.set_access_key_status(ak, active=False))
    assert asyncio.run(ids.secret_for(ak)) is None  # this process forgets at once
    assert asyncio.run(other.secret_for(ak)) == new.secret_key  # another one within the TTL...
    clock.now += 1.01
    assert asyncio.run(other.secret_for(ak)) is None  # ...and not after it
    asyncio.run(ids.set_access_key_status(ak, active=True))
    asyncio.run(ids.set_user_enabled("bob", False))
    assert asyncio.run(ids.secret_for(ak)) is None and asyncio.run(ids.principal_for(ak)) is None
    asyncio.run(ids.set_user_enabled("bob", True))
    assert asyncio.run(ids.secret_for(ak)) == new.secret_key
    with pytest.raises(DeleteConflict):
        asyncio.run(ids.delete_user("bob"))
    asyncio.run(ids.delete_access_key(ak))
    assert asyncio.run(ids.secret_for(ak)) is None
    with pytest.raises(NoSuchEntity):
        asyncio.run(ids.delete_access_key(ak))
    asyncio.run(ids.delete_user("bob"))
    with pytest.raises(NoSuchEntity):
        asyncio.run(ids.get_user("bob"))


def test_an_unchanged_catalog_keeps_answers_past_the_ttl(
    ids: IdentityService, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``cache_ttl_s`` a worker reads the catalog's identity generation (once for all keys)
    and keeps its answers while nothing changed: no key row read, no secret opened again. Any
    identity write through any worker moves the generation (a last-used time does not), and is
    seen within the TTL; a key's expiry still ends its answers."""
    asyncio.run(ids.create_user("gail"))
    new = asyncio.run(ids.create_access_key("gail"))
    ak = new.info.access_key_id
    soon = asyncio.run(ids.create_service_account("gail", expires_ns=int((clock.now + 1.5) * 1e9)))
    other = IdentityService(ids.catalog, MasterKey(b"m" * 32), clock=clock, monotonic=clock)  # another worker
    principal = asyncio.run(other.principal_for(ak))
    assert principal is not None and asyncio.run(other.secret_for(ak)) == new.secret_key
    assert asyncio.run(other.secret_for(soon.info.access_key_id)) == soon.secret_key
    loads: list[str] = []
    read_key = ids.catalog.iam_get_key
    monkeypatch.setattr(ids.catalog, "iam_get_key", lambda key: loads.append(key) or read_key(key))
    generation = asyncio.run(ids.catalog.iam_generation())
    clock.now += 1.01
    assert asyncio.run(other.principal_for(ak)) is principal and asyncio.run(other.secret_for(ak)) == new.secret_key
    assert asyncio.run(other.secret_for(soon.info.access_key_id)) == soon.secret_key  # not expired yet
    assert loads == []
    clock.now += 1.01  # the service account's key expired meanwhile: its answer is not kept
    assert asyncio.run(other.secret_for(soon.info.access_key_id)) is None and loads == [soon.info.access_key_id]
    asyncio.run(ids.catalog.iam_touch_keys({ak: 5}))
    assert asyncio.run(ids.catalog.iam_generation()) == generation
    asyncio.run(ids.put_inline_policy("user", "gail", "read", READ_ONLY))  # through the first worker
    assert asyncio.run(ids.catalog.iam_generation()) != generation
    assert asyncio.run(other.principal_for(ak)) is principal  # within the TTL: as before
    clock.now += 1.01
    changed = asyncio.run(other.principal_for(ak))
    assert changed is not None and [p.name for p in changed.policies] == ["read"]
    assert asyncio.run(other.secret_for(ak)) == new.secret_key and loads.count(ak) == 2  # both answers reloaded


def test_a_sealed_secret_moved_to_another_row_does_not_open(ids: IdentityService) -> None:
    asyncio.run(ids.create_user("carol"))
    a = asyncio.run(ids.create_access_key("carol")).info.access_key_id
    b = asyncio.run(ids.create_access_key("carol")).info.access_key_id

    def swap(c: sqlite3.Connection) -> None:
        (sealed,) = c.execute("SELECT sealed_secret FROM iam_access_keys WHERE access_key_id=?", (a,)).fetchone()
        c.execute("UPDATE iam_access_keys SET sealed_secret=? WHERE access_key_id=?", (sealed, b))

    asyncio.run(ids.catalog._write(swap))
    ids.forget()
    assert asyncio.run(ids.secret_for(b)) is None and asyncio.run(ids.secret_for(a)) is not None


def test_service_accounts_narrow_expire_and_never_manage_keys(ids: IdentityService, clock: Clock) -> None:
    asyncio.run(ids.create_user("dave"))
    asyncio.run(ids.create_user("erin"))
    own = asyncio.run(ids.create_access_key("dave")).info.access_key_id
    expires_ns = int((clock.now + 3600) * 1e9)
    sa = asyncio.run(ids.create_service_account("dave", policy=READ_ONLY, expires_ns=expires_ns, caller=own))
    sa_id = sa.info.access_key_id
    principal = asyncio.run(ids.principal_for(sa_id))
    assert principal is not None and principal.kind == "service" and principal.user_name == "dave"
    assert principal.session_policy == READ_ONLY
    for attempt in (
        lambda: ids.create_access_key("dave", caller=sa_id),
        lambda: ids.create_access_key("erin", caller=sa_id),
        lambda: ids.create_service_account("dave", caller=sa_id),
        lambda: ids.set_access_key_status(own, active=False, caller=sa_id),
        lambda: ids.delete_access_key(own, caller=sa_id),
    ):
        with pytest.raises(AccessDenied):
            asyncio.run(attempt())
    assert [k.access_key_id for k in asyncio.run(ids.list_access_keys("dave"))] == sorted([own, sa_id])
    with pytest.raises(MalformedPolicyDocument):
        asyncio.run(ids.create_service_account("dave", policy="[1]"))
    with pytest.raises(InvalidArgument):
        asyncio.run(ids.create_service_account("dave", expires_ns=int(clock.now * 1e9) - 1))
    assert asyncio.run(ids.secret_for(sa_id)) == sa.secret_key
    clock.now += 3601
    assert asyncio.run(ids.secret_for(sa_id)) is None and asyncio.run(ids.principal_for(sa_id)) is None  # expired


def test_principal_gathers_user_group_managed_and_inline_policies(ids: IdentityService) -> None:
    asyncio.run(ids.create_user("frank", tags={"dept": "r&d"}))
    ak = asyncio.run(ids.create_access_key("frank")).info.access_key_id
    asyncio.run(ids.create_group("devs"))
    asyncio.run(ids.add_user_to_group("devs", "frank"))
    asyncio.run(ids.create_policy("ReadOnly", READ_ONLY))
    asyncio.run(ids.create_policy("All", ALLOW_ALL))
    asyncio.run(ids.attach_policy("user", "frank", "ReadOnly"))
    asyncio.run(ids.attach_policy("group", "devs", "All"))
    asyncio.run(ids.put_inline_policy("user", "frank", "mine", READ_ONLY))
    asyncio.run(ids.put_inline_policy("group", "devs", "theirs", ALLOW_ALL))
    p = asyncio.run(ids.principal_for(ak))
    assert p is not None and p.kind == "user" and not p.is_root and p.groups == ("devs",)
    assert p.tags == {"dept": "r&d"}
    assert [(a.source, a.via, a.name) for a in p.policies] == [
        ("user-managed", "frank", "ReadOnly"),
        ("user-inline", "frank", "mine"),
        ("group-managed", "devs", "All"),
        ("group-inline", "devs", "theirs"),
    ]
    root = asyncio.run(ids.principal_for("ROOTKEY"))
    assert root is not None and root.is_root and root.kind == "root"
    with pytest.raises(DeleteConflict):
        asyncio.run(ids.delete_policy("All"))
    with pytest.raises(MalformedPolicyDocument):
        asyncio.run(ids.create_policy("Bad", "not json"))
    with pytest.raises(NoSuchEntity):
        asyncio.run(ids.attach_policy("user", "nobody", "All"))
    asyncio.run(ids.detach_policy("group", "devs", "All"))
    asyncio.run(ids.remove_user_from_group("devs", "frank"))
    p = asyncio.run(ids.principal_for(ak))
    assert p is not None and [a.name for a in p.policies] == ["ReadOnly", "mine"]
    asyncio.run(ids.delete_policy("All"))
    assert asyncio.run(ids.list_policies()) == ["ReadOnly"]


def test_a_custom_policy_validator_is_used(catalog: SqliteCatalog) -> None:
    def refuse(text: str, kind: str) -> None:
        raise MalformedPolicyDocument("no")

    ids = IdentityService(catalog, MasterKey(b"m" * 32), validate_policy=refuse)
    with pytest.raises(MalformedPolicyDocument):
        asyncio.run(ids.create_policy("P", ALLOW_ALL))
    assert asyncio.run(ids.list_policies()) == []


def test_roles_and_oidc_providers(ids: IdentityService) -> None:
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*"}]})
    role = asyncio.run(ids.create_role("reader", trust, max_session_s=7200))
    assert role.role_id.startswith("AROA") and asyncio.run(ids.get_role("reader")).trust_policy == trust
    asyncio.run(ids.put_inline_policy("role", "reader", "read", READ_ONLY))
    with pytest.raises(DeleteConflict):
        asyncio.run(ids.delete_role("reader"))
    asyncio.run(ids.delete_inline_policy("role", "reader", "read"))
    asyncio.run(ids.delete_role("reader"))
    assert asyncio.run(ids.list_roles()) == []
    asyncio.run(ids.create_oidc_provider("https://idp.example", ["aud1"], ["ab" * 20]))
    assert [p["client_ids"] for p in asyncio.run(ids.list_oidc_providers())] == [["aud1"]]
    with pytest.raises(EntityAlreadyExists):
        asyncio.run(ids.create_oidc_provider("https://idp.example", [], []))
    asyncio.run(ids.delete_oidc_provider("https://idp.example"))
    assert asyncio.run(ids.list_oidc_providers()) == []


def test_last_used_is_written_at_most_once_a_minute(ids: IdentityService, clock: Clock) -> None:
    asyncio.run(ids.create_user("gina"))
    ak = asyncio.run(ids.create_access_key("gina")).info.access_key_id
    writes = []
    touch = ids.catalog.iam_touch_keys

    async def counting(used: dict[str, int]) -> None:
        writes.append(dict(used))
        await touch(used)

    ids.catalog.iam_touch_keys = counting  # type: ignore[method-assign]

    async def use(times: int) -> None:
        for _ in range(times):
            ids.note_used(ak)
        await ids.flush_last_used()

    asyncio.run(use(50))
    first = asyncio.run(ids.get_access_key(ak)).last_used_ns
    assert first == int(clock.now * 1e9) and len(writes) == 1
    clock.now += 30
    asyncio.run(use(50))
    assert len(writes) == 1
    clock.now += 31
    asyncio.run(use(1))
    assert len(writes) == 2 and asyncio.run(ids.get_access_key(ak)).last_used_ns == int(clock.now * 1e9)
