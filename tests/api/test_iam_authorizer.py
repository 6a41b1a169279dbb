"""IamAuthorizer in-process: root keys, users' policies, service accounts, stored documents that
no longer parse, condition keys from the request, and the ~1 s refresh (the end-to-end matrix
through boto3 is tests/api/test_iam_e2e.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tierstore import errors as e
from tierstore.api._authorize import Check, Principal, RequestContext
from tierstore.api._iam_authorizer import IamAuthorizer, validate_policy
from tierstore.catalog import SqliteCatalog
from tierstore.crypto import MasterKey
from tierstore.engine import BucketAccessService, IdentityService
from tierstore.types import BucketInfo


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[IdentityService, IamAuthorizer, Clock]]:
    catalog = SqliteCatalog(tmp_path / "catalog.db")
    clock = Clock()
    # The default validator (any JSON object): lets a test store documents that do not parse.
    ids = IdentityService(catalog, MasterKey(b"m" * 32), root_keys={"ROOT": "s"}, monotonic=clock)
    try:
        yield ids, IamAuthorizer(ids), clock
    finally:
        catalog.close()


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str, resource: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def request(key: str, *checks: tuple[str, str], client: str = "10.0.0.1") -> RequestContext:
    scope = {"client": (client, 1234), "scheme": "http"}
    return RequestContext(Principal(key), "Test", tuple(Check(a, r) for a, r in checks), scope=scope)


def allowed(authz: IamAuthorizer, req: RequestContext) -> bool:
    try:
        asyncio.run(authz.authorize(req))
    except e.AccessDenied as exc:
        assert exc.message == "Access Denied"  # the same words whatever the resource
        return False
    return True


def user_key(ids: IdentityService, name: str, *policies: str) -> str:
    async def make() -> str:
        await ids.create_user(name)
        for i, doc in enumerate(policies):
            await ids.put_inline_policy("user", name, f"p{i}", doc)
        return (await ids.create_access_key(name)).info.access_key_id

    return asyncio.run(make())


OBJ = "arn:aws:s3:::b/k"


def test_root_keys_pass_and_users_need_every_check(setup: tuple[IdentityService, IamAuthorizer, Clock]) -> None:
    ids, authz, _ = setup
    root = request("ROOT", ("s3:DeleteBucket", "arn:aws:s3:::b"))
    assert allowed(authz, root) and root.decision is not None and root.decision.source == "root"
    nobody = request(user_key(ids, "nobody"), ("s3:GetObject", OBJ))
    assert not allowed(authz, nobody) and nobody.decision is not None and nobody.decision.reason == "implicit_deny"
    key = user_key(ids, "u", policy(allow("s3:GetObject", "arn:aws:s3:::b/*")))
    assert allowed(authz, request(key, ("s3:GetObject", OBJ)))
    copy = request(key, ("s3:GetObject", OBJ), ("s3:PutObject", "arn:aws:s3:::b/copy"))
    assert not allowed(authz, copy)  # all checks must be allowed
    assert not allowed(authz, request("UNKNOWNKEY", ("s3:GetObject", OBJ)))


def test_condition_keys_come_from_the_request(setup: tuple[IdentityService, IamAuthorizer, Clock]) -> None:
    ids, authz, _ = setup
    doc = policy(allow("s3:GetObject", "*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    key = user_key(ids, "net", doc)
    assert allowed(authz, request(key, ("s3:GetObject", OBJ), client="10.1.2.3"))
    assert not allowed(authz, request(key, ("s3:GetObject", OBJ), client="192.168.1.1"))


def test_a_stored_document_that_no_longer_parses_grants_nothing(
    setup: tuple[IdentityService, IamAuthorizer, Clock],
) -> None:
    ids, authz, _ = setup
    broken = policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Condition": {"Nope": {}}})
    key = user_key(ids, "old", broken, policy(allow("s3:ListBucket", "*")))
    assert not allowed(authz, request(key, ("s3:GetObject", OBJ)))
    assert allowed(authz, request(key, ("s3:ListBucket", "arn:aws:s3:::b")))  # the other policy still applies
    sa = asyncio.run(ids.create_service_account("old", policy=broken)).info.access_key_id
    assert not allowed(authz, request(sa, ("s3:ListBucket", "arn:aws:s3:::b")))  # narrows to nothing


def test_a_root_service_account_is_narrowed(setup: tuple[IdentityService, IamAuthorizer, Clock]) -> None:
    ids, authz, _ = setup
    sa = asyncio.run(ids.create_service_account(None, policy=policy(allow("s3:GetObject", "arn:aws:s3:::b/*"))))
    key = sa.info.access_key_id
    assert allowed(authz, request(key, ("s3:GetObject", OBJ)))
    assert not allowed(authz, request(key, ("s3:PutObject", OBJ)))


def test_a_policy_change_is_seen_after_the_cache_lifetime(
    setup: tuple[IdentityService, IamAuthorizer, Clock],
) -> None:
    ids, authz, clock = setup
    key = user_key(ids, "v", policy(allow("s3:GetObject", "*")))
    assert allowed(authz, request(key, ("s3:GetObject", OBJ)))
    # Another worker changes the policy: this worker's caches know nothing of it...
    asyncio.run(ids.catalog.iam_put_inline("user", "v", "p0", policy(allow("s3:PutObject", "*"))))
    assert allowed(authz, request(key, ("s3:GetObject", OBJ)))
    clock.now += ids.cache_ttl_s + 0.01  # ...until the identity cache's lifetime has passed
    assert not allowed(authz, request(key, ("s3:GetObject", OBJ)))
    assert allowed(authz, request(key, ("s3:PutObject", OBJ)))


def test_validate_policy_is_the_parser_with_the_iam_error() -> None:
    validate_policy(policy(allow("s3:GetObject", "*")))
    with pytest.raises(e.MalformedPolicyDocument, match="StringEqualz"):
        validate_policy(policy(allow("s3:GetObject", "*", Condition={"StringEqualz": {"aws:username": "a"}})))
    with pytest.raises(e.MalformedPolicyDocument):
        validate_policy(policy(allow("s3:GetObject", "*", Principal="*")), "session")


def test_group_and_managed_policies_apply(setup: tuple[IdentityService, IamAuthorizer, Clock]) -> None:
    ids, authz, clock = setup
    key = user_key(ids, "member")
    assert not allowed(authz, request(key, ("s3:GetObject", OBJ)))

    async def grant() -> None:
        await ids.create_group("readers")
        await ids.add_user_to_group("readers", "member")
        await ids.put_inline_policy("group", "readers", "read", policy(allow("s3:GetObject", "*")))
        await ids.create_policy("Lister", policy(allow("s3:ListBucket", "arn:aws:s3:::b")))
        await ids.attach_policy("user", "member", "Lister")

    asyncio.run(grant())
    clock.now += ids.cache_ttl_s + 0.01
    assert allowed(authz, request(key, ("s3:GetObject", OBJ)))  # the group's inline policy
    assert allowed(authz, request(key, ("s3:ListBucket", "arn:aws:s3:::b")))  # the attached managed one
    assert not allowed(authz, request(key, ("s3:ListBucket", "arn:aws:s3:::other")))


# --- bucket policies and the anonymous principal ---------------------------------------------


def bucket_policy(*statements: dict[str, Any]) -> str:
    return policy(*({"Principal": "*", **s} for s in statements))


def anon(action: str, resource: str = OBJ) -> RequestContext:
    """An unsigned request's context."""
    return RequestContext(Principal.anonymous(), "Test", (Check(action, resource),))


def test_bucket_policy_grants_anonymous_and_users_and_reaches_other_workers(
    setup: tuple[IdentityService, IamAuthorizer, Clock],
) -> None:
    """Two ``BucketAccessService`` over one catalog stand for two workers: the policy put through
    one is enforced by the other once that worker's 1 s cache of the bucket has expired."""
    ids, _, clock = setup
    asyncio.run(ids.catalog.create_bucket(BucketInfo("b", 0)))
    here, there = (BucketAccessService(ids.catalog, monotonic=clock) for _ in range(2))
    authz = IamAuthorizer(ids, buckets=there)
    anonymous = anon("s3:GetObject")
    assert not allowed(authz, anonymous)  # no policy (and "there" now caches that)
    doc = bucket_policy(allow("s3:GetObject", "arn:aws:s3:::b/*"))
    asyncio.run(here.put_policy("b", doc, public=True))
    props = asyncio.run(here.props("b"))
    assert props is not None and props["policy"] == doc  # this worker: at once
    assert not allowed(authz, anonymous)
    clock.now += there.cache_ttl_s + 0.01
    assert allowed(authz, anonymous)
    assert anonymous.decision.source == "resource" and anonymous.decision.policy == "bucket-policy:b"
    assert not allowed(authz, anon("s3:PutObject"))
    assert not allowed(authz, anon("s3:ListAllMyBuckets", "*"))
    # A user with no identity policy gets what the bucket policy grants "*" too; a service
    # account of it is still narrowed by its own policy.
    assert allowed(authz, request(user_key(ids, "u"), ("s3:GetObject", OBJ)))
    sa = asyncio.run(ids.create_service_account("u", policy=policy(allow("s3:ListBucket", "*"))))
    assert not allowed(authz, request(sa.info.access_key_id, ("s3:GetObject", OBJ)))
    # A bucket-policy Deny beats the user's own Allow; the root is never restricted.
    key = user_key(ids, "w", policy(allow("s3:*", "*")))
    deny = bucket_policy({"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"})
    asyncio.run(here.put_policy("b", deny, public=False))
    clock.now += there.cache_ttl_s + 0.01
    assert not allowed(authz, request(key, ("s3:GetObject", OBJ)))
    assert allowed(authz, request(key, ("s3:GetObject", "arn:aws:s3:::c/k")))
    assert allowed(authz, request("ROOT", ("s3:GetObject", OBJ)))


def test_a_missing_bucket_or_a_broken_stored_policy_grants_nothing(
    setup: tuple[IdentityService, IamAuthorizer, Clock],
) -> None:
    ids, _, clock = setup
    buckets = BucketAccessService(ids.catalog, monotonic=clock)
    authz = IamAuthorizer(ids, buckets=buckets)
    anonymous = anon("s3:GetObject", "arn:aws:s3:::gone/k")
    assert asyncio.run(buckets.props("gone")) is None and not allowed(authz, anonymous)
    asyncio.run(ids.catalog.create_bucket(BucketInfo("b", 0)))
    broken = bucket_policy(allow("s3:GetObject", "arn:aws:s3:::b/*", Condition={"Nope": {}}))
    asyncio.run(buckets.put_policy("b", broken, public=True))  # stored before validation existed
    assert not allowed(authz, anon("s3:GetObject"))


def test_remembered_allows_yield_to_a_new_deny_and_to_conditions(
    setup: tuple[IdentityService, IamAuthorizer, Clock],
) -> None:
    """An allow that read no condition key is remembered (the request path's 4 KiB GET skips the
    evaluation; here for the whole bucket: no statement tells its keys apart): it survives the
    identity cache's reload while the policies are the same, and yields to a bucket-policy Deny,
    a changed identity policy, and any statement whose condition decides."""
    ids, _, clock = setup
    asyncio.run(ids.catalog.create_bucket(BucketInfo("b", 0)))
    buckets = BucketAccessService(ids.catalog, monotonic=clock)
    authz = IamAuthorizer(ids, buckets=buckets)
    key = user_key(ids, "r", policy(allow("s3:GetObject", "arn:aws:s3:::b/*")))
    assert allowed(authz, request(key, ("s3:GetObject", OBJ)))
    remembered = authz._compiled[key].wide
    assert list(remembered) == [("s3:GetObject", "b")] and authz._compiled[key].allowed == {}
    clock.now += ids.cache_ttl_s + 0.01  # the identity cache reloads an equal principal: kept
    assert allowed(authz, request(key, ("s3:GetObject", OBJ)))
    assert authz._compiled[key].wide is remembered
    # A bucket-policy Deny for that very check wins over the remembered allow.
    deny = bucket_policy({"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": OBJ})
    asyncio.run(buckets.put_policy("b", deny, public=False))
    denied = request(key, ("s3:GetObject", OBJ))
    assert not allowed(authz, denied)
    assert denied.decision.reason == "explicit_deny" and denied.decision.policy == "bucket-policy:b"
    asyncio.run(buckets.delete_policy("b"))
    assert allowed(authz, request(key, ("s3:GetObject", OBJ)))
    # A condition that decides is evaluated every time (an allow that read it is not remembered).
    conditional = policy(allow("s3:GetObject", "*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    asyncio.run(ids.catalog.iam_put_inline("user", "r", "p0", conditional))
    clock.now += ids.cache_ttl_s + 0.01
    assert allowed(authz, request(key, ("s3:GetObject", OBJ), client="10.1.2.3"))
    assert authz._compiled[key].allowed == {} and authz._compiled[key].wide == {}
    assert not allowed(authz, request(key, ("s3:GetObject", OBJ), client="192.168.1.1"))
    assert allowed(authz, request(key, ("s3:GetObject", OBJ), client="10.9.9.9"))


def reads(authz: IamAuthorizer, key: str, *arns: str) -> list[bool]:
    return [allowed(authz, request(key, ("s3:GetObject", arn))) for arn in arns]


@pytest.mark.parametrize(
    ("statements", "bucket_statements", "per_key"),
    [
        # a Deny on one prefix
        ([allow("s3:GetObject", "arn:aws:s3:::b/*"),
          {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/no/*"}], [], True),
        # a resource with a prefix (and an Allow of everything else elsewhere)
        ([allow("s3:GetObject", ["arn:aws:s3:::b/ok*", "arn:aws:s3:::c/*"])], [], True),
        # a policy variable, only the caller's own folder: it reads the context, so never remembered
        ([allow("s3:GetObject", "arn:aws:s3:::b/${aws:username}*")], [], False),
        # NotResource
        ([{"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::b/no/*"}], [], True),
        # a bucket policy Deny on one prefix
        ([allow("s3:GetObject", "*")],
         [{"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/no/*"}], True),
    ],
)
def test_a_remembered_allow_never_decides_another_key_that_policies_tell_apart(
    setup: tuple[IdentityService, IamAuthorizer, Clock],
    statements: list[dict[str, Any]],
    bucket_statements: list[dict[str, Any]],
    per_key: bool,
) -> None:
    """After an allowed read of one object, every other object of the bucket is still decided by
    its own key, whichever order they come in (the user is "ok", so ``${aws:username}*`` is
    "ok*"); the remembered allows stay per key."""
    ids, _, clock = setup
    asyncio.run(ids.catalog.create_bucket(BucketInfo("b", 0)))
    buckets = BucketAccessService(ids.catalog, monotonic=clock)
    if bucket_statements:
        asyncio.run(buckets.put_policy("b", bucket_policy(*bucket_statements), public=False))
    authz = IamAuthorizer(ids, buckets=buckets)
    key = user_key(ids, "ok", policy(*statements))
    arns = ["arn:aws:s3:::b/ok1", "arn:aws:s3:::b/no/x", "arn:aws:s3:::b/ok2", "arn:aws:s3:::b/no/y"]
    assert reads(authz, key, *arns) == [True, False, True, False]
    assert reads(authz, key, *reversed(arns)) == [False, True, False, True]
    assert authz._compiled[key].wide == {}
    ok = {("s3:GetObject", "arn:aws:s3:::b/ok1"), ("s3:GetObject", "arn:aws:s3:::b/ok2")}
    assert set(authz._compiled[key].allowed) == (ok if per_key else set())


def test_a_bucket_wide_allow_covers_first_reads_and_yields_to_changes(
    setup: tuple[IdentityService, IamAuthorizer, Clock],
) -> None:
    """One allowed read of a bucket whose statements cover all of its objects alike answers the
    first read of any other object there (one lookup, no evaluation): not another bucket nor
    another action; a changed identity policy (from another worker: the catalog written
    directly) or a new bucket-policy Deny on a prefix is seen within the caches' lifetime."""
    ids, _, clock = setup
    for name in ("b", "c"):
        asyncio.run(ids.catalog.create_bucket(BucketInfo(name, 0)))
    buckets = BucketAccessService(ids.catalog, monotonic=clock)
    authz = IamAuthorizer(ids, buckets=buckets)
    key = user_key(ids, "w", policy(allow("s3:GetObject", ["arn:aws:s3:::b/*", "arn:aws:s3:::c/only"])))
    first = request(key, ("s3:GetObject", "arn:aws:s3:::b/one"))
    assert allowed(authz, first)
    compiled = authz._compiled[key]
    assert compiled.wide == {("s3:GetObject", "b"): (None, first.decision)}
    other = request(key, ("s3:GetObject", "arn:aws:s3:::b/two/with:colon"))
    assert allowed(authz, other) and other.decision is first.decision  # the remembered decision
    assert reads(authz, key, "arn:aws:s3:::c/only", "arn:aws:s3:::c/other") == [True, False]
    assert not allowed(authz, request(key, ("s3:PutObject", "arn:aws:s3:::b/one")))
    assert list(compiled.allowed) == [("s3:GetObject", "arn:aws:s3:::c/only")]  # c's keys differ: per key
    # What a check of many objects asks once per bucket (a dataset's manifest): b alike, c not.
    every = [asyncio.run(authz.allows_every_object(first, a, b)) for a, b in
             (("s3:GetObject", "b"), ("s3:GetObject", "c"), ("s3:PutObject", "b"), ("s3:GetObjectVersion", "b"))]
    assert every == [True, False, False, False]
    assert not asyncio.run(authz.allows_every_object(request("nobody", ("s3:GetObject", OBJ)), "s3:GetObject", "b"))
    # A bucket-policy Deny on a prefix: the other keys stay allowed, per key now.
    deny = bucket_policy({"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                          "Resource": "arn:aws:s3:::b/no/*"})
    asyncio.run(buckets.put_policy("b", deny, public=False))
    assert not asyncio.run(authz.allows_every_object(first, "s3:GetObject", "b"))  # another bucket policy now
    assert reads(authz, key, "arn:aws:s3:::b/no/x", "arn:aws:s3:::b/three") == [False, True]
    # Another worker narrows the user's policy: seen once the identity cache's lifetime passed.
    asyncio.run(ids.catalog.iam_put_inline("user", "w", "p0", policy(allow("s3:GetObject", "arn:aws:s3:::b/ok/*"))))
    assert reads(authz, key, "arn:aws:s3:::b/four") == [True]  # within the lifetime: as before
    clock.now += ids.cache_ttl_s + 0.01
    assert reads(authz, key, "arn:aws:s3:::b/five", "arn:aws:s3:::b/ok/1", "arn:aws:s3:::b/one") == [
        False, True, False]
