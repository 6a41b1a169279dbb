"""IamAuthorizer with ACLs in-process, over a real catalog and ObjectService: ACL grants are one
more Allow source after the policies' implicit deny (explicit Deny still wins), Object Ownership
BucketOwnerEnforced and Block Public Access IgnorePublicAcls turn them off, and the ACL (or an
object's tags, for s3:ExistingObjectTag) is read only when needed — counted here: a request by
the root or by a user whose policy allows reads no ACL at all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tierstore import errors as e
from tierstore.api import _acl
from tierstore.api._authorize import Check, Principal, RequestContext
from tierstore.api._iam_authorizer import IamAuthorizer
from tierstore.blob import MemoryBlobStore
from tierstore.catalog import SqliteCatalog
from tierstore.crypto import MasterKey
from tierstore.engine import IdentityService, ObjectService

B = "acl-bucket"


class CountingObjects:
    """The real ObjectService, counting the reads the authorizer makes through it (the bucket's
    settings come from the per-worker cache its policy is read through: ``bucket_access``)."""

    def __init__(self, service: ObjectService) -> None:
        self.service = service
        self.reads: list[str] = []

    def object_acl(self, bucket: str, key: str, version_id: str | None = None) -> list[list[str]]:
        self.reads.append("object_acl")
        return self.service.object_acl(bucket, key, version_id)

    def get_object_tagging(self, bucket: str, key: str, version_id: str | None = None) -> Any:
        self.reads.append("tags")
        return self.service.get_object_tagging(bucket, key, version_id)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.catalog = SqliteCatalog(tmp / "catalog.db")
        self.service = ObjectService(self.catalog, MemoryBlobStore())
        self.ids = IdentityService(self.catalog, MasterKey(b"m" * 32), root_keys={"ROOT": "s"})
        self.objects = CountingObjects(self.service)
        self.authz = IamAuthorizer(
            self.ids, buckets=self.service.bucket_access, objects=self.objects  # type: ignore[arg-type]
        )

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def put(self, key: str, acl: str = "private", tags: list[tuple[str, str]] | None = None) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield b"x"

        stored = _acl.to_stored(_acl.canned(acl))
        self.run(self.service.put_object(B, key, body(), tags=tags or [], acl=stored))

    def set_props(self, **changes: Any) -> None:
        def update(props: dict[str, Any]) -> dict[str, Any]:
            props.update(changes)
            return props

        self.run(self.service.update_bucket_props(B, update))

    def user(self, name: str, *statements: dict[str, Any]) -> str:
        async def make() -> str:
            await self.ids.create_user(name)
            if statements:
                doc = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
                await self.ids.put_inline_policy("user", name, "p", doc)
            return (await self.ids.create_access_key(name)).info.access_key_id

        return str(self.run(make()))

    def allowed(self, key: str, action: str, resource: str) -> bool:
        self.objects.reads.clear()
        req = RequestContext(Principal(key), "Test", (Check(action, resource),), scope={"client": ("10.0.0.1", 1)})
        try:
            self.run(self.authz.authorize(req))
        except e.AccessDenied:
            return False
        return True


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    env = Env(tmp_path)
    env.run(env.service.create_bucket(B))
    try:
        yield env
    finally:
        env.catalog.close()


def obj(key: str) -> str:
    return f"arn:aws:s3:::{B}/{key}"


def test_acl_read_only_when_policies_do_not_allow(env: Env) -> None:
    env.put("private")
    env.put("public", "public-read")
    assert env.allowed("ROOT", "s3:GetObject", obj("private")) and env.objects.reads == []
    reader = env.user("reader", {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{B}/*"})
    assert env.allowed(reader, "s3:GetObject", obj("private")) and env.objects.reads == []
    nobody = env.user("nobody")
    assert not env.allowed(nobody, "s3:GetObject", obj("private"))
    assert env.objects.reads == ["object_acl"]  # one version read
    assert env.allowed(nobody, "s3:GetObject", obj("public"))
    assert not env.allowed(nobody, "s3:GetObjectTagging", obj("public"))  # READ is the bytes only
    assert env.objects.reads == []  # no ACL grants that action: nothing read
    assert not env.allowed(nobody, "s3:GetObject", obj("missing"))  # no such key: denied, same words


def test_authenticated_read_and_bucket_grants(env: Env) -> None:
    env.put("k", "authenticated-read")
    nobody = env.user("nobody")
    assert env.allowed(nobody, "s3:GetObject", obj("k"))
    assert not env.allowed(nobody, "s3:ListBucket", f"arn:aws:s3:::{B}")
    env.set_props(acl=_acl.to_stored(_acl.canned("public-read-write")))
    assert env.allowed(nobody, "s3:ListBucket", f"arn:aws:s3:::{B}")
    assert env.allowed(nobody, "s3:PutObject", obj("new"))  # bucket WRITE
    assert env.allowed(nobody, "s3:DeleteObject", obj("k"))
    assert not env.allowed(nobody, "s3:PutBucketAcl", f"arn:aws:s3:::{B}")


def test_explicit_deny_beats_an_acl_grant(env: Env) -> None:
    env.put("k", "public-read")
    denied = env.user("denied", {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*"})
    assert not env.allowed(denied, "s3:GetObject", obj("k"))
    assert env.objects.reads == []  # an explicit deny is final: the ACL is not even read


def test_ownership_enforced_and_ignore_public_acls_turn_grants_off(env: Env) -> None:
    env.put("k", "public-read")
    nobody = env.user("nobody")
    assert env.allowed(nobody, "s3:GetObject", obj("k"))
    env.set_props(ownership="BucketOwnerEnforced")
    assert not env.allowed(nobody, "s3:GetObject", obj("k"))
    env.set_props(ownership="ObjectWriter", public_access_block={"IgnorePublicAcls": True})
    assert not env.allowed(nobody, "s3:GetObject", obj("k"))
    env.set_props(public_access_block={"IgnorePublicAcls": False, "BlockPublicAcls": True})
    assert env.allowed(nobody, "s3:GetObject", obj("k"))  # BlockPublicAcls stops new ones only


def test_existing_object_tag_is_read_only_when_a_statement_names_it(env: Env) -> None:
    env.put("ml", tags=[("team", "ml")])
    env.put("web", tags=[("team", "web")])
    cond = {"StringEquals": {"s3:ExistingObjectTag/team": "ml"}}
    key = env.user(
        "tagged",
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{B}/*", "Condition": cond},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{B}"},
    )
    assert env.allowed(key, "s3:GetObject", obj("ml")) and env.objects.reads == ["tags"]
    assert not env.allowed(key, "s3:GetObject", obj("web"))
    assert env.allowed(key, "s3:ListBucket", f"arn:aws:s3:::{B}") and env.objects.reads == []
