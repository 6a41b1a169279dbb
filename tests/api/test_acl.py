"""ACLs and Object Ownership end to end through boto3 (and raw HTTP where the bytes matter):
Get/Put bucket and object ACLs, the canned ACL matrix, grant headers, the XML round trip, ACLs on
multipart uploads and copies, Object Ownership BucketOwnerEnforced, and an ACL grant as an Allow
for a user with no policies (docs/security.md "ACLs and Object Ownership")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.s3http import Resp, send, signed_request
from tests.test_clients import Aws
from tierstore.client import TierstoreClient, resolve_settings

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTH_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One worker: a bucket setting changed through it (ACL, Object Ownership) applies to the
    next request at once; other workers see it within ~1 s (their cache of bucket settings,
    tested with bucket policies in test_bucket_policy.py)."""
    proc = ServerProcess(Path(tmp_path_factory.mktemp("acl")) / "data", extra_args=["--workers", "1"])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def s3(server: ServerProcess) -> Any:
    return make_client(server.endpoint)


def err(call: Callable[[], Any]) -> tuple[str, int]:
    with pytest.raises(ClientError) as exc:
        call()
    r = exc.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def grants(acl: dict[str, Any]) -> set[tuple[str, str]]:
    """(grantee ID or URI, permission) of a Get*Acl answer."""
    out = set()
    for g in acl["Grants"]:
        who = g["Grantee"].get("URI") or g["Grantee"].get("ID")
        out.add((who, g["Permission"]))
    return out


def owner_id(s3: Any) -> str:
    return str(s3.list_buckets()["Owner"]["ID"])


def new_user(server: ServerProcess, policy: str | None = None) -> Any:
    """A user (no policy unless given) and a boto3 client signing with its key."""
    root = TierstoreClient(resolve_settings(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    name = f"acl-{uuid.uuid4().hex[:8]}"
    root.create_user(name)
    if policy is not None:
        root.put_user_policy(name, "main", policy)
    key = root.create_access_key(name)
    return make_client(server.endpoint, access_key=key["access_key_id"], secret_key=key["secret_key"])


def test_owner_is_one_canonical_user_everywhere(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    me = s3.list_buckets()["Owner"]
    assert len(me["ID"]) == 64 and me["DisplayName"]
    assert s3.get_bucket_acl(Bucket=bucket)["Owner"] == me
    assert s3.get_object_acl(Bucket=bucket, Key="k")["Owner"] == me
    assert s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]["Owner"] == me
    # Nothing set: private, the owner's FULL_CONTROL.
    assert grants(s3.get_bucket_acl(Bucket=bucket)) == {(me["ID"], "FULL_CONTROL")}
    assert grants(s3.get_object_acl(Bucket=bucket, Key="k")) == {(me["ID"], "FULL_CONTROL")}


CANNED = {
    "private": set(),
    "public-read": {(ALL_USERS, "READ")},
    "public-read-write": {(ALL_USERS, "READ"), (ALL_USERS, "WRITE")},
    "authenticated-read": {(AUTH_USERS, "READ")},
    "aws-exec-read": set(),
    "bucket-owner-read": set(),
    "bucket-owner-full-control": set(),
    "log-delivery-write": {(LOG_DELIVERY, "WRITE"), (LOG_DELIVERY, "READ_ACP")},
}


def test_canned_acl_matrix(s3: Any, bucket: str) -> None:
    me = owner_id(s3)
    for name, extra in CANNED.items():
        expected = {(me, "FULL_CONTROL"), *extra}
        s3.put_bucket_acl(Bucket=bucket, ACL=name)
        assert grants(s3.get_bucket_acl(Bucket=bucket)) == expected, name
        s3.put_object(Bucket=bucket, Key=name, Body=b"x", ACL=name)
        assert grants(s3.get_object_acl(Bucket=bucket, Key=name)) == expected, name
        s3.put_object_acl(Bucket=bucket, Key=name, ACL="private")
        assert grants(s3.get_object_acl(Bucket=bucket, Key=name)) == {(me, "FULL_CONTROL")}, name
    assert err(lambda: s3.put_bucket_acl(Bucket=bucket, ACL="public")) == ("InvalidArgument", 400)


def test_grant_headers(s3: Any, bucket: str) -> None:
    me = owner_id(s3)
    s3.put_object(
        Bucket=bucket, Key="g", Body=b"x", GrantRead=f'uri="{ALL_USERS}"', GrantFullControl=f'id="{me}"'
    )
    assert grants(s3.get_object_acl(Bucket=bucket, Key="g")) == {(ALL_USERS, "READ"), (me, "FULL_CONTROL")}
    s3.put_bucket_acl(Bucket=bucket, GrantReadACP=f"uri={AUTH_USERS}", GrantWrite=f'uri="{LOG_DELIVERY}"')
    assert grants(s3.get_bucket_acl(Bucket=bucket)) == {(AUTH_USERS, "READ_ACP"), (LOG_DELIVERY, "WRITE")}
    both = lambda: s3.put_object(Bucket=bucket, Key="g2", Body=b"x", ACL="private", GrantRead=f"uri={ALL_USERS}")  # noqa: E731
    assert err(both) == ("InvalidRequest", 400)
    email = lambda: s3.put_object_acl(Bucket=bucket, Key="g", GrantRead='emailAddress="a@example.com"')  # noqa: E731
    assert err(email) == ("UnresolvableGrantByEmailAddress", 400)
    assert err(lambda: s3.put_object_acl(Bucket=bucket, Key="g", GrantRead='id="0000"')) == ("InvalidArgument", 400)
    # Refused writes changed nothing.
    assert err(lambda: s3.head_object(Bucket=bucket, Key="g2"))[1] == 404
    assert grants(s3.get_object_acl(Bucket=bucket, Key="g")) == {(ALL_USERS, "READ"), (me, "FULL_CONTROL")}


def test_xml_round_trip_and_malformed(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    me = s3.list_buckets()["Owner"]
    policy = {
        "Owner": me,
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": me["ID"]}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"},
        ],
    }
    s3.put_object_acl(Bucket=bucket, Key="x", AccessControlPolicy=policy)
    got = s3.get_object_acl(Bucket=bucket, Key="x")
    assert grants(got) == {(me["ID"], "FULL_CONTROL"), (ALL_USERS, "READ")}
    s3.put_object_acl(Bucket=bucket, Key="x", AccessControlPolicy={"Owner": got["Owner"], "Grants": got["Grants"]})
    assert grants(s3.get_object_acl(Bucket=bucket, Key="x")) == grants(got)

    def put(body: bytes, **headers: str) -> tuple[int, str]:
        r = signed_request(server, "PUT", f"/{bucket}/x", body, query=[("acl", "")], headers=headers)
        return r.status, r.error()["Code"] if r.status >= 300 else ""

    doc = (
        f"<AccessControlPolicy><Owner><ID>{me['ID']}</ID></Owner><AccessControlList><Grant>"
        f'<Grantee {XSI} xsi:type="Group"><URI>{ALL_USERS}</URI></Grantee><Permission>PERM</Permission>'
        "</Grant></AccessControlList></AccessControlPolicy>"
    )
    assert put(b"<AccessControlPolicy><Owner>") == (400, "MalformedACLError")
    assert put(doc.replace("PERM", "EVERYTHING").encode()) == (400, "MalformedACLError")
    assert put(doc.replace(me["ID"], "f" * 64).replace("PERM", "READ").encode()) == (403, "AccessDenied")
    assert put(b"") == (400, "MissingSecurityHeader")
    assert put(doc.replace("PERM", "READ").encode(), **{"x-amz-acl": "private"}) == (400, "UnexpectedContent")
    assert grants(s3.get_object_acl(Bucket=bucket, Key="x")) == grants(got)  # nothing changed
    assert put(doc.replace("PERM", "WRITE_ACP").encode()) == (200, "")
    assert grants(s3.get_object_acl(Bucket=bucket, Key="x")) == {(ALL_USERS, "WRITE_ACP")}


def test_object_acl_by_version(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"2", ACL="public-read")["VersionId"]
    s3.put_object_acl(Bucket=bucket, Key="v", VersionId=v1, ACL="authenticated-read")
    assert (AUTH_USERS, "READ") in grants(s3.get_object_acl(Bucket=bucket, Key="v", VersionId=v1))
    current = grants(s3.get_object_acl(Bucket=bucket, Key="v"))
    assert current == grants(s3.get_object_acl(Bucket=bucket, Key="v", VersionId=v2))
    assert (ALL_USERS, "READ") in current and (AUTH_USERS, "READ") not in current
    assert err(lambda: s3.get_object_acl(Bucket=bucket, Key="nope")) == ("NoSuchKey", 404)


def test_multipart_and_copy_acls(s3: Any, bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ACL="public-read")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"part")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert (ALL_USERS, "READ") in grants(s3.get_object_acl(Bucket=bucket, Key="mp"))
    # A copy takes the request's ACL, never the source's.
    s3.copy_object(Bucket=bucket, Key="plain", CopySource={"Bucket": bucket, "Key": "mp"})
    assert len(grants(s3.get_object_acl(Bucket=bucket, Key="plain"))) == 1
    s3.copy_object(Bucket=bucket, Key="auth", CopySource={"Bucket": bucket, "Key": "mp"}, ACL="authenticated-read")
    assert (AUTH_USERS, "READ") in grants(s3.get_object_acl(Bucket=bucket, Key="auth"))
    assert (ALL_USERS, "READ") not in grants(s3.get_object_acl(Bucket=bucket, Key="auth"))


def test_authenticated_read_lets_a_user_without_policies_read(server: ServerProcess, s3: Any, bucket: str) -> None:
    user = new_user(server)
    s3.put_object(Bucket=bucket, Key="private", Body=b"p")
    s3.put_object(Bucket=bucket, Key="shared", Body=b"s", ACL="authenticated-read")
    assert user.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"s"
    assert err(lambda: user.get_object(Bucket=bucket, Key="private")) == ("AccessDenied", 403)
    assert err(lambda: user.get_object(Bucket=bucket, Key="missing")) == ("AccessDenied", 403)  # no leak
    assert err(lambda: user.get_object_acl(Bucket=bucket, Key="shared")) == ("AccessDenied", 403)  # READ != READ_ACP
    assert err(lambda: user.list_objects_v2(Bucket=bucket)) == ("AccessDenied", 403)
    assert err(lambda: user.put_object(Bucket=bucket, Key="new", Body=b"n")) == ("AccessDenied", 403)
    s3.put_bucket_acl(Bucket=bucket, ACL="authenticated-read")
    assert [o["Key"] for o in user.list_objects_v2(Bucket=bucket)["Contents"]] == ["private", "shared"]
    s3.put_bucket_acl(Bucket=bucket, GrantWrite=f"uri={AUTH_USERS}", GrantReadACP=f"uri={AUTH_USERS}")
    user.put_object(Bucket=bucket, Key="new", Body=b"n")
    assert grants(user.get_bucket_acl(Bucket=bucket)) == {(AUTH_USERS, "WRITE"), (AUTH_USERS, "READ_ACP")}
    # Setting an ACL on the write needs s3:PutObjectAcl too, which no grant of the bucket gives.
    assert err(lambda: user.put_object(Bucket=bucket, Key="new2", Body=b"n", ACL="private")) == ("AccessDenied", 403)


def test_explicit_deny_beats_an_acl(server: ServerProcess, s3: Any, bucket: str) -> None:
    statement = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    deny = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    user = new_user(server, deny)
    s3.put_object(Bucket=bucket, Key="pub", Body=b"p", ACL="public-read")
    assert err(lambda: user.get_object(Bucket=bucket, Key="pub")) == ("AccessDenied", 403)


def test_bucket_owner_enforced(server: ServerProcess, s3: Any) -> None:
    name = f"acl-enforced-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, ObjectOwnership="BucketOwnerEnforced")
    user = new_user(server)
    try:
        rule = s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"]
        assert rule == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        public = lambda: s3.put_object(Bucket=name, Key="k", Body=b"x", ACL="public-read")  # noqa: E731
        assert err(public) == ("AccessControlListNotSupported", 400)
        s3.put_object(Bucket=name, Key="k", Body=b"x", ACL="bucket-owner-full-control")
        assert err(lambda: s3.put_bucket_acl(Bucket=name, ACL="public-read")) == ("AccessControlListNotSupported", 400)
        assert len(grants(s3.get_bucket_acl(Bucket=name))) == 1  # still answers
        # Back to ObjectWriter: a public object ACL; enforced again: the grant is ignored.
        writer = {"Rules": [{"ObjectOwnership": "ObjectWriter"}]}
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=writer)
        s3.put_object_acl(Bucket=name, Key="k", ACL="authenticated-read")
        assert user.get_object(Bucket=name, Key="k")["Body"].read() == b"x"
        enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=enforced)
        assert err(lambda: user.get_object(Bucket=name, Key="k")) == ("AccessDenied", 403)
        assert len(grants(s3.get_object_acl(Bucket=name, Key="k"))) == 1  # the owner's FULL_CONTROL
        # A bucket ACL with grants must be migrated first.
        s3.delete_bucket_ownership_controls(Bucket=name)
        code = err(lambda: s3.get_bucket_ownership_controls(Bucket=name))
        assert code == ("OwnershipControlsNotFoundError", 404)
        s3.put_bucket_acl(Bucket=name, ACL="public-read")
        again = lambda: s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=enforced)  # noqa: E731
        assert err(again) == ("InvalidBucketAclWithObjectOwnership", 400)
        bad = {"Rules": [{"ObjectOwnership": "Nobody"}]}
        malformed = lambda: s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=bad)  # noqa: E731
        assert err(malformed) == ("MalformedXML", 400)
    finally:
        for o in s3.list_objects_v2(Bucket=name).get("Contents", []):
            s3.delete_object(Bucket=name, Key=o["Key"])
        s3.delete_bucket(Bucket=name)


def test_create_bucket_acl_and_ownership_headers(s3: Any) -> None:
    name = f"acl-create-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, ACL="public-read")
    try:
        assert (ALL_USERS, "READ") in grants(s3.get_bucket_acl(Bucket=name))
        assert err(lambda: s3.get_bucket_ownership_controls(Bucket=name))[1] == 404
    finally:
        s3.delete_bucket(Bucket=name)
    other = f"acl-create-{uuid.uuid4().hex[:8]}"
    conflict = lambda: s3.create_bucket(Bucket=other, ACL="public-read", ObjectOwnership="BucketOwnerEnforced")  # noqa: E731
    assert err(conflict) == ("InvalidBucketAclWithObjectOwnership", 400)
    assert err(lambda: s3.create_bucket(Bucket=other, ACL="open")) == ("InvalidArgument", 400)
    assert err(lambda: s3.head_bucket(Bucket=other))[1] == 404  # nothing was created


def anonymous(server: ServerProcess, method: str, path: str, body: bytes | None = None) -> Resp:
    """An unsigned request: the anonymous principal."""
    return send(server.port, method, path, {"Host": f"127.0.0.1:{server.port}"}, body)


def test_public_acls_and_anonymous_callers(server: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="pub", Body=b"public bytes", ACL="public-read")
    s3.put_object(Bucket=bucket, Key="priv", Body=b"private")
    got = anonymous(server, "GET", f"/{bucket}/pub")
    assert (got.status, got.body) == (200, b"public bytes")
    assert anonymous(server, "HEAD", f"/{bucket}/pub").status == 200
    # Private, missing, the ACL itself, a listing, a write: the same 403 whatever exists.
    for method, path in [
        ("GET", f"/{bucket}/priv"),
        ("GET", f"/{bucket}/missing"),
        ("GET", f"/{bucket}/pub?acl"),
        ("GET", f"/{bucket}"),
        ("PUT", f"/{bucket}/new"),
        ("DELETE", f"/{bucket}/pub"),
    ]:
        r = anonymous(server, method, path, b"x" if method == "PUT" else None)
        assert (r.status, r.error()["Code"], r.error()["Message"]) == (403, "AccessDenied", "Access Denied"), path
    # AuthenticatedUsers is not everyone.
    s3.put_object_acl(Bucket=bucket, Key="pub", ACL="authenticated-read")
    assert anonymous(server, "GET", f"/{bucket}/pub").status == 403
    # A public-read-write bucket: anonymous listing and writes.
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    assert anonymous(server, "PUT", f"/{bucket}/dropped", b"anon").status == 200
    assert s3.get_object(Bucket=bucket, Key="dropped")["Body"].read() == b"anon"
    listing = anonymous(server, "GET", f"/{bucket}?list-type=2")
    assert listing.status == 200 and b"<Key>dropped</Key>" in listing.body
    assert anonymous(server, "GET", f"/{bucket}/dropped").status == 403  # its own ACL: private
    assert anonymous(server, "DELETE", f"/{bucket}/dropped").status == 204


def test_copy_source_acl_of_the_named_version(server: ServerProcess, s3: Any, bucket: str) -> None:
    """CopyObject reads its source through the ACL of the version ``x-amz-copy-source`` names."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket=bucket, Key="src", Body=b"old", ACL="authenticated-read")["VersionId"]
    s3.put_object(Bucket=bucket, Key="src", Body=b"new")  # private
    write = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/copies/*"}
    user = new_user(server, json.dumps({"Version": "2012-10-17", "Statement": [write]}))
    source = {"Bucket": bucket, "Key": "src", "VersionId": old}
    user.copy_object(Bucket=bucket, Key="copies/a", CopySource=source)
    assert s3.get_object(Bucket=bucket, Key="copies/a")["Body"].read() == b"old"
    current = lambda: user.copy_object(Bucket=bucket, Key="copies/b", CopySource={"Bucket": bucket, "Key": "src"})  # noqa: E731
    assert err(current) == ("AccessDenied", 403)


def test_block_public_access_acl_flags(server: ServerProcess, s3: Any, bucket: str) -> None:
    user = new_user(server)
    s3.put_object(Bucket=bucket, Key="pub", Body=b"p", ACL="public-read")
    s3.put_object(Bucket=bucket, Key="auth", Body=b"a", ACL="authenticated-read")
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
    # BlockPublicAcls: no new public ACL, by canned name or grant, on any write; others pass.
    refused = [
        lambda: s3.put_object(Bucket=bucket, Key="n", Body=b"x", ACL="public-read"),
        lambda: s3.put_object(Bucket=bucket, Key="n", Body=b"x", GrantRead=f"uri={AUTH_USERS}"),
        lambda: s3.put_object_acl(Bucket=bucket, Key="pub", ACL="public-read-write"),
        lambda: s3.put_bucket_acl(Bucket=bucket, ACL="authenticated-read"),
        lambda: s3.create_multipart_upload(Bucket=bucket, Key="n", ACL="public-read"),
        lambda: s3.copy_object(Bucket=bucket, Key="n", CopySource={"Bucket": bucket, "Key": "pub"}, ACL="public-read"),
    ]
    for i, call in enumerate(refused):
        assert err(call) == ("AccessDenied", 403), i
    assert err(lambda: s3.head_object(Bucket=bucket, Key="n"))[1] == 404  # nothing was written
    s3.put_object(Bucket=bucket, Key="n", Body=b"x", ACL="log-delivery-write")  # not public
    # ...but the ACLs already there still work.
    assert anonymous(server, "GET", f"/{bucket}/pub").status == 200
    assert user.get_object(Bucket=bucket, Key="auth")["Body"].read() == b"a"
    # IgnorePublicAcls: they allow nothing any more (and are kept).
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
    assert anonymous(server, "GET", f"/{bucket}/pub").status == 403
    assert err(lambda: user.get_object(Bucket=bucket, Key="auth")) == ("AccessDenied", 403)
    assert (ALL_USERS, "READ") in grants(s3.get_object_acl(Bucket=bucket, Key="pub"))
    s3.delete_public_access_block(Bucket=bucket)
    assert anonymous(server, "GET", f"/{bucket}/pub").status == 200


def test_aws_cli_acls(server: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    """`aws s3 cp --acl`, `aws s3api put-object-acl --grant-read` and `get-object-acl`."""
    cli = Aws(server, tmp_path / "home")
    (tmp_path / "f.txt").write_text("cli")
    cli.run("s3", "cp", str(tmp_path / "f.txt"), f"s3://{bucket}/f.txt", "--acl", "public-read")
    assert anonymous(server, "GET", f"/{bucket}/f.txt").body == b"cli"
    cli.run("s3api", "put-object-acl", "--bucket", bucket, "--key", "f.txt", "--grant-read", f"uri={AUTH_USERS}")
    got = json.loads(cli.run("s3api", "get-object-acl", "--bucket", bucket, "--key", "f.txt").stdout)
    assert grants(got) == {(AUTH_USERS, "READ")}
    assert anonymous(server, "GET", f"/{bucket}/f.txt").status == 403
