"""Identities (catalog/sqlite/_identity.py, catalog/postgres/_identity.py) on both catalogs, one behaviour:
users, access keys and their sealed secrets, groups, managed and inline policies, attachments,
boundaries, roles, OIDC providers; names unique case-insensitively; the generation counter
moves with identity writes only; concurrent creates of one name: one winner, the others
``EntityAlreadyExists`` (never a driver error)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.catalog.conftest import Opener, aw
from tierstore.catalog import AccessKeyRecord, RoleRecord, UserRecord
from tierstore.errors import DeleteConflict, EntityAlreadyExists, NoSuchEntity


def uid() -> str:
    return uuid.uuid4().hex[:10]


def key(
    access_key_id: str, user: str | None, *, kind: str = "user", sealed: bytes = b"\x01SEAL-secret"
) -> AccessKeyRecord:
    return AccessKeyRecord(access_key_id, user, kind, sealed, "Active", 5, None, None, None, "")


def test_users_and_access_keys(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            alice, bob, carol = f"alice{n}", f"Bob{n}", f"carol{n}"
            gen0 = await aw(cat.iam_generation())
            await cat.iam_create_user(UserRecord(alice, f"AIDA{n}1", True, {"team": "ml"}, 5))
            gen1 = await aw(cat.iam_generation())
            assert gen1 not in (gen0, "")
            with pytest.raises(EntityAlreadyExists):
                await cat.iam_create_user(UserRecord(alice.upper(), f"AIDA{n}2", True, {}, 6))
            assert await aw(cat.iam_generation()) == gen1  # a refused write changes nothing
            await cat.iam_create_user(UserRecord(carol, f"AIDA{n}3", False, {}, 7))
            await cat.iam_create_user(UserRecord(bob, f"AIDA{n}4", True, {}, 8))

            got = await aw(cat.iam_get_user(alice.upper()))  # case-insensitive lookup, stored spelling
            assert got == UserRecord(alice, f"AIDA{n}1", True, {"team": "ml"}, 5)
            assert await aw(cat.iam_get_user(f"nobody{n}")) is None
            # Case-insensitive order, as IAM lists them.
            mine = [u.name for u in await aw(cat.iam_list_users()) if u.name.endswith(n)]
            assert mine == [alice, bob, carol]
            assert next(u.name for u in await aw(cat.iam_list_users(after=alice.upper(), limit=1))) == bob

            await cat.iam_update_user(carol, enabled=True, tags={"a": "b"})
            assert await aw(cat.iam_get_user(carol)) == UserRecord(carol, f"AIDA{n}3", True, {"a": "b"}, 7)
            await cat.iam_update_user(carol, enabled=False)
            assert await aw(cat.iam_get_user(carol)) == UserRecord(carol, f"AIDA{n}3", False, {"a": "b"}, 7)
            with pytest.raises(NoSuchEntity):
                await cat.iam_update_user(f"nobody{n}", enabled=True)

            # Keys: a user's, a service account's, the root's.
            k1, k2, k3 = f"AK{n}1", f"AK{n}2", f"AK{n}3"
            with pytest.raises(NoSuchEntity):
                await cat.iam_create_key(key(k1, f"nobody{n}"))
            await cat.iam_create_key(key(k1, alice, sealed=b"\x01AAAA-one"))
            await cat.iam_create_key(key(k2, alice.upper(), kind="service", sealed=b"\x01BBBB-two"))
            await cat.iam_create_key(key(k3, None, sealed=b"\x01AAAA-three"))
            with pytest.raises(EntityAlreadyExists):
                await cat.iam_create_key(key(k1, bob))
            assert await aw(cat.iam_get_key(k1)) == key(k1, alice, sealed=b"\x01AAAA-one")
            assert await aw(cat.iam_get_key(f"AK{n}none")) is None
            assert [k.access_key_id for k in await aw(cat.iam_list_keys(alice))] == [k1, k2]
            assert [k.access_key_id for k in await aw(cat.iam_list_keys(alice, kind="service"))] == [k2]
            assert k3 in [k.access_key_id for k in await aw(cat.iam_list_keys(None))]
            assert k1 not in [k.access_key_id for k in await aw(cat.iam_list_keys(None))]
            assert {b"\x01AAAA", b"\x01BBBB"} <= set(await aw(cat.iam_sealed_key_ids()))

            await cat.iam_set_key_status(k1, "Inactive")
            assert (await aw(cat.iam_get_key(k1))).status == "Inactive"
            with pytest.raises(NoSuchEntity):
                await cat.iam_set_key_status(f"AK{n}none", "Active")

            gen = await aw(cat.iam_generation())
            await cat.iam_touch_keys({k1: 100, k2: 50})
            await cat.iam_touch_keys({k1: 90})  # only ever forward
            assert (await aw(cat.iam_get_key(k1))).last_used_ns == 100
            assert (await aw(cat.iam_get_key(k2))).last_used_ns == 50
            assert await aw(cat.iam_generation()) == gen  # last-used times are no identity change
            await cat.iam_touch_keys({})

            with pytest.raises(DeleteConflict, match="access keys"):
                await cat.iam_delete_user(alice)
            await cat.iam_delete_key(k1)
            await cat.iam_delete_key(k2)
            with pytest.raises(NoSuchEntity):
                await cat.iam_delete_key(k1)
            await cat.iam_delete_user(alice.upper())
            assert await aw(cat.iam_get_user(alice)) is None
            with pytest.raises(NoSuchEntity):
                await cat.iam_delete_user(alice)
            await cat.iam_delete_key(k3)

    asyncio.run(main())


def test_groups_policies_boundaries(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            user, group, pol, cap = f"u{n}", f"g{n}", f"Read{n}", f"cap{n}"
            await cat.iam_create_user(UserRecord(user, f"AIDA{n}", True, {}, 1))
            await cat.iam_create_group(group, f"AGPA{n}", 2)
            with pytest.raises(EntityAlreadyExists):
                await cat.iam_create_group(group.upper(), f"AGPA{n}x", 3)
            assert (group, f"AGPA{n}", 2) in await aw(cat.iam_list_groups())
            with pytest.raises(NoSuchEntity):
                await cat.iam_set_membership(f"none{n}", user, member=True)
            with pytest.raises(NoSuchEntity):
                await cat.iam_set_membership(group, f"none{n}", member=True)
            await cat.iam_set_membership(group, user, member=True)
            await cat.iam_set_membership(group.upper(), user.upper(), member=True)  # already a member
            assert await aw(cat.iam_groups_of(user.upper())) == [group]
            assert await aw(cat.iam_members_of(group)) == [user]

            doc = '{"Version": "2012-10-17", "Statement": []}'
            await cat.iam_create_policy(pol, f"ANPA{n}1", doc, "reads", 10)
            await cat.iam_create_policy(cap, f"ANPA{n}2", '{"Statement": [1]}', "", 11)
            with pytest.raises(EntityAlreadyExists):
                await cat.iam_create_policy(pol.lower(), f"ANPA{n}3", doc, "", 12)
            assert await aw(cat.iam_get_policy(pol.lower())) == (pol, f"ANPA{n}1", doc, 10)
            assert await aw(cat.iam_get_policy(f"none{n}")) is None
            mine = [p for p in await aw(cat.iam_list_policies()) if p.endswith(n)]
            assert mine == [cap, pol]  # case-insensitive order

            with pytest.raises(NoSuchEntity):
                await cat.iam_attach("user", user, f"none{n}", attach=True)
            with pytest.raises(NoSuchEntity):
                await cat.iam_attach("group", f"none{n}", pol, attach=True)
            await cat.iam_attach("user", user, pol, attach=True)
            await cat.iam_attach("user", user.upper(), pol.lower(), attach=True)  # once
            await cat.iam_attach("group", group, pol, attach=True)
            await cat.iam_attach("user", user, cap, attach=True)
            assert await aw(cat.iam_attached("user", user)) == [(cap, '{"Statement": [1]}'), (pol, doc)]
            assert await aw(cat.iam_policy_entities(pol)) == [("group", group), ("user", user)]
            with pytest.raises(DeleteConflict, match="attached"):
                await cat.iam_delete_policy(pol)
            await cat.iam_attach("user", user, cap, attach=False)
            with pytest.raises(NoSuchEntity, match="not attached"):
                await cat.iam_attach("user", user, cap, attach=False)

            # Boundaries: set, replace, read, block the policy's deletion, remove.
            await cat.iam_set_boundary("user", user, pol)
            await cat.iam_set_boundary("user", user.upper(), cap)
            assert await aw(cat.iam_boundary("user", user)) == (cap, '{"Statement": [1]}')
            with pytest.raises(NoSuchEntity):
                await cat.iam_set_boundary("user", user, f"none{n}")
            with pytest.raises(NoSuchEntity):
                await cat.iam_set_boundary("role", f"none{n}", cap)
            with pytest.raises(DeleteConflict, match="boundary"):
                await cat.iam_delete_policy(cap)
            await cat.iam_set_boundary("user", user, None)
            assert await aw(cat.iam_boundary("user", user)) is None

            # Inline policies: put, replace, list, delete.
            await cat.iam_put_inline("user", user, "b-inline", "{1}")
            await cat.iam_put_inline("user", user, "A-inline", "{2}")
            await cat.iam_put_inline("user", user.upper(), "b-INLINE", "{3}")  # replaces
            assert await aw(cat.iam_inline("user", user)) == [("A-inline", "{2}"), ("b-inline", "{3}")]
            with pytest.raises(NoSuchEntity):
                await cat.iam_put_inline("group", f"none{n}", "x", "{}")
            with pytest.raises(NoSuchEntity):
                await cat.iam_delete_inline("user", user, "nope")

            # Deletion order: whatever names a principal goes first (IAM's DeleteConflict).
            with pytest.raises(DeleteConflict, match="users"):
                await cat.iam_delete_group(group)
            await cat.iam_set_membership(group, user, member=False)
            assert await aw(cat.iam_groups_of(user)) == []
            with pytest.raises(DeleteConflict, match="attached policies"):
                await cat.iam_delete_group(group)
            await cat.iam_attach("group", group, pol, attach=False)
            await cat.iam_put_inline("group", group, "g", "{}")
            with pytest.raises(DeleteConflict, match="inline policies"):
                await cat.iam_delete_group(group)
            await cat.iam_delete_inline("group", group, "G")
            await cat.iam_delete_group(group)
            with pytest.raises(NoSuchEntity):
                await cat.iam_delete_group(group)

            with pytest.raises(DeleteConflict, match="attached policies"):
                await cat.iam_delete_user(user)
            await cat.iam_attach("user", user, pol, attach=False)
            with pytest.raises(DeleteConflict, match="inline policies"):
                await cat.iam_delete_user(user)
            await cat.iam_delete_inline("user", user, "a-inline")
            await cat.iam_delete_inline("user", user, "b-inline")
            await cat.iam_set_boundary("user", user, cap)
            await cat.iam_delete_user(user)  # its boundary goes with it
            await cat.iam_delete_policy(cap)
            await cat.iam_delete_policy(pol)
            assert await aw(cat.iam_get_policy(pol)) is None
            with pytest.raises(NoSuchEntity):
                await cat.iam_delete_policy(pol)

    asyncio.run(main())


def test_roles_and_oidc_providers(catalogs: Opener) -> None:
    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            role = RoleRecord(f"Trainer{n}", f"AROA{n}", '{"trust": 1}', 3600, "jobs", 9)
            await cat.iam_create_role(role)
            with pytest.raises(EntityAlreadyExists):
                await cat.iam_create_role(RoleRecord(role.name.lower(), f"AROA{n}x", "{}", 60, "", 1))
            assert await aw(cat.iam_get_role(role.name.upper())) == role
            assert await aw(cat.iam_get_role(f"none{n}")) is None
            assert role in await aw(cat.iam_list_roles())
            await cat.iam_update_role(role.name, max_session_s=7200)
            await cat.iam_update_role(role.name, trust_policy='{"trust": 2}', description="")
            want = RoleRecord(role.name, role.role_id, '{"trust": 2}', 7200, "", 9)
            assert await aw(cat.iam_get_role(role.name)) == want
            with pytest.raises(NoSuchEntity):
                await cat.iam_update_role(f"none{n}", description="x")

            pol = f"p{n}"
            await cat.iam_create_policy(pol, f"ANPA{n}", "{}", "", 1)
            await cat.iam_attach("role", role.name, pol, attach=True)
            await cat.iam_set_boundary("role", role.name, pol)
            with pytest.raises(DeleteConflict, match="attached policies"):
                await cat.iam_delete_role(role.name)
            await cat.iam_attach("role", role.name, pol, attach=False)
            await cat.iam_put_inline("role", role.name, "i", "{}")
            with pytest.raises(DeleteConflict, match="inline policies"):
                await cat.iam_delete_role(role.name)
            await cat.iam_delete_inline("role", role.name, "i")
            await cat.iam_delete_role(role.name)  # and its boundary
            assert await aw(cat.iam_boundary("role", role.name)) is None
            await cat.iam_delete_policy(pol)  # no boundary left to block it
            with pytest.raises(NoSuchEntity):
                await cat.iam_delete_role(role.name)

            url = f"https://idp.example/{n}"
            gen = await aw(cat.iam_generation())
            await cat.iam_put_oidc_provider(url, ["aud-1", "aud-2"], ["ab" * 20], 77)
            assert await aw(cat.iam_generation()) != gen
            with pytest.raises(EntityAlreadyExists):
                await cat.iam_put_oidc_provider(url, [], [], 78)
            assert (url, ["aud-1", "aud-2"], ["ab" * 20], 77) in await aw(cat.iam_oidc_providers())
            await cat.iam_delete_oidc_provider(url)
            assert url not in [p[0] for p in await aw(cat.iam_oidc_providers())]
            with pytest.raises(NoSuchEntity):
                await cat.iam_delete_oidc_provider(url)

    asyncio.run(main())


def test_concurrent_creates_of_one_name_have_one_winner(catalogs: Opener) -> None:
    """Through one catalog's pool (PostgreSQL: several connections at once): 12 creates of one
    user name (in different cases) -> one created, 11 ``EntityAlreadyExists``; the generation
    moved once per successful write."""

    async def main() -> None:
        async with catalogs() as cat:
            n = uid()
            gen = await aw(cat.iam_generation())
            names = [f"race{n}".upper() if i % 2 else f"race{n}" for i in range(12)]
            results = await asyncio.gather(
                *(cat.iam_create_user(UserRecord(name, f"AIDA{n}{i}", True, {}, i)) for i, name in enumerate(names)),
                return_exceptions=True,
            )
            assert sum(r is None for r in results) == 1
            assert all(isinstance(r, EntityAlreadyExists) for r in results if r is not None), results
            assert int(await aw(cat.iam_generation())) == int(gen or 0) + 1

    asyncio.run(main())
