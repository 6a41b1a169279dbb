"""api/_acl.py, the pure part: canned ACLs, grant headers, the AccessControlPolicy XML both ways,
and the permission -> action table of ``acl_allows`` (AWS "Mapping of ACL permissions and access
policy permissions"), table-driven. End to end: tests/api/test_acl.py."""

from __future__ import annotations

import pytest

from tierstore import errors as e
from tierstore.api import _acl
from tierstore.api._access import check_settable
from tierstore.api._acl import ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY, OWNER_ID, Grant

OWNER = Grant("CanonicalUser", OWNER_ID, "FULL_CONTROL")


def group(uri: str, permission: str) -> Grant:
    return Grant("Group", uri, permission)


@pytest.mark.parametrize(
    ("name", "grants"),
    [
        ("private", {OWNER}),
        ("public-read", {OWNER, group(ALL_USERS, "READ")}),
        ("public-read-write", {OWNER, group(ALL_USERS, "READ"), group(ALL_USERS, "WRITE")}),
        ("authenticated-read", {OWNER, group(AUTHENTICATED_USERS, "READ")}),
        ("aws-exec-read", {OWNER}),
        ("bucket-owner-read", {OWNER}),
        ("bucket-owner-full-control", {OWNER}),
        ("log-delivery-write", {OWNER, group(LOG_DELIVERY, "WRITE"), group(LOG_DELIVERY, "READ_ACP")}),
    ],
)
def test_canned(name: str, grants: set[Grant]) -> None:
    assert set(_acl.canned(name)) == grants
    assert set(_acl.from_headers({"x-amz-acl": name}) or ()) == grants


def test_unknown_canned_acl_is_invalid_argument() -> None:
    with pytest.raises(e.InvalidArgument):
        _acl.canned("public")


def test_grant_headers() -> None:
    acl = _acl.from_headers(
        {
            "x-amz-grant-read": f'uri="{ALL_USERS}", uri={AUTHENTICATED_USERS}',
            "x-amz-grant-full-control": f'id="{OWNER_ID}"',
        }
    )
    assert acl is not None
    assert set(acl) == {group(ALL_USERS, "READ"), group(AUTHENTICATED_USERS, "READ"), OWNER}
    assert _acl.from_headers({"content-type": "x"}) is None


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"x-amz-acl": "private", "x-amz-grant-read": f'uri="{ALL_USERS}"'}, e.InvalidRequest),
        ({"x-amz-grant-read": 'emailAddress="a@example.com"'}, e.UnresolvableGrantByEmailAddress),
        ({"x-amz-grant-read": 'id="0123"'}, e.InvalidArgument),  # no such canonical user
        ({"x-amz-grant-read": 'uri="http://acs.amazonaws.com/groups/global/Everyone"'}, e.InvalidArgument),
        ({"x-amz-grant-write": "garbage"}, e.InvalidArgument),
        ({"x-amz-grant-write": ""}, e.InvalidArgument),
    ],
)
def test_bad_grant_headers(headers: dict[str, str], error: type[e.TierstoreError]) -> None:
    with pytest.raises(error):
        _acl.from_headers(headers)


def test_document_round_trip() -> None:
    acl = (OWNER, group(ALL_USERS, "READ"), group(LOG_DELIVERY, "WRITE"))
    assert _acl.parse_acl(_acl.acl_document(acl)) == acl
    assert _acl.parse_acl(_acl.acl_document(())) == _acl.PRIVATE  # nothing stored reads as private


def _doc(grants: str, owner: str = OWNER_ID) -> bytes:
    xsi = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    return (
        f"<AccessControlPolicy><Owner><ID>{owner}</ID></Owner><AccessControlList>"
        + grants.replace("XSI", xsi)
        + "</AccessControlList></AccessControlPolicy>"
    ).encode()


def _grant(grantee: str, permission: str = "READ") -> str:
    return f"<Grant>{grantee}<Permission>{permission}</Permission></Grant>"


GROUP = f'<Grantee XSI xsi:type="Group"><URI>{ALL_USERS}</URI></Grantee>'
ROBOT = '<Grantee XSI xsi:type="Robot"><ID>x</ID></Grantee>'
EMAIL = '<Grantee XSI xsi:type="AmazonCustomerByEmail"><EmailAddress>a@b.c</EmailAddress></Grantee>'


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<AccessControlPolicy><Owner>", e.MalformedACLError),
        (b"<Other/>", e.MalformedACLError),
        (b"<AccessControlPolicy><AccessControlList/></AccessControlPolicy>", e.MalformedACLError),
        (_doc(_grant(GROUP, "ALL")), e.MalformedACLError),
        (_doc(_grant(ROBOT)), e.MalformedACLError),
        (_doc(_grant(EMAIL)), e.UnresolvableGrantByEmailAddress),
        (_doc("", owner="someone-else"), e.AccessDenied),
    ],
)
def test_bad_documents(body: bytes, error: type[e.TierstoreError]) -> None:
    with pytest.raises(error):
        _acl.parse_acl(body)


def test_public_and_owner_only() -> None:
    assert _acl.is_public(_acl.canned("public-read")) and _acl.is_public(_acl.canned("authenticated-read"))
    assert not _acl.is_public(_acl.canned("log-delivery-write"))
    assert _acl.is_owner_only(()) and _acl.is_owner_only(_acl.canned("bucket-owner-full-control"))
    assert not _acl.is_owner_only(_acl.canned("public-read"))


# (grants, action, on_object, authenticated) -> allowed
ALLOWS = [
    # bucket READ: the listings, nothing else
    ([group(ALL_USERS, "READ")], "s3:ListBucket", False, False, True),
    ([group(ALL_USERS, "READ")], "s3:ListBucketVersions", False, True, True),
    ([group(ALL_USERS, "READ")], "s3:ListBucketMultipartUploads", False, True, True),
    ([group(ALL_USERS, "READ")], "s3:PutObject", False, True, False),
    ([group(ALL_USERS, "READ")], "s3:GetBucketAcl", False, True, False),
    # bucket WRITE: create and delete objects
    ([group(ALL_USERS, "WRITE")], "s3:PutObject", False, False, True),
    ([group(ALL_USERS, "WRITE")], "s3:DeleteObject", False, False, True),
    ([group(ALL_USERS, "WRITE")], "s3:ListBucket", False, False, False),
    ([group(ALL_USERS, "READ_ACP")], "s3:GetBucketAcl", False, False, True),
    ([group(ALL_USERS, "WRITE_ACP")], "s3:PutBucketAcl", False, False, True),
    ([group(ALL_USERS, "FULL_CONTROL")], "s3:PutBucketAcl", False, False, True),
    ([group(ALL_USERS, "FULL_CONTROL")], "s3:DeleteBucket", False, False, False),  # not an ACL permission
    # object READ: the bytes (any version), not the tags
    ([group(ALL_USERS, "READ")], "s3:GetObject", True, False, True),
    ([group(ALL_USERS, "READ")], "s3:GetObjectVersion", True, False, True),
    ([group(ALL_USERS, "READ")], "s3:GetObjectTagging", True, False, False),
    ([group(ALL_USERS, "READ")], "s3:GetObjectAcl", True, False, False),
    ([group(ALL_USERS, "READ_ACP")], "s3:GetObjectVersionAcl", True, False, True),
    ([group(ALL_USERS, "WRITE_ACP")], "s3:PutObjectAcl", True, False, True),
    ([group(ALL_USERS, "WRITE")], "s3:PutObject", True, False, False),  # object WRITE means nothing
    ([group(ALL_USERS, "FULL_CONTROL")], "s3:GetObject", True, False, True),
    # who: AuthenticatedUsers needs a signature; LogDelivery and the owner's grant add nothing
    ([group(AUTHENTICATED_USERS, "READ")], "s3:GetObject", True, True, True),
    ([group(AUTHENTICATED_USERS, "READ")], "s3:GetObject", True, False, False),
    ([group(LOG_DELIVERY, "WRITE")], "s3:PutObject", False, True, False),
    ([OWNER], "s3:GetObject", True, True, False),
    ([], "s3:GetObject", True, True, False),
]


@pytest.mark.parametrize(("grants", "action", "on_object", "authenticated", "allowed"), ALLOWS)
def test_acl_allows(grants: list[Grant], action: str, on_object: bool, authenticated: bool, allowed: bool) -> None:
    assert _acl.acl_allows(grants, action, on_object=on_object, authenticated=authenticated) is allowed


def test_stored_form_round_trip() -> None:
    acl = _acl.canned("public-read-write")
    assert _acl.from_stored(_acl.to_stored(acl)) == acl
    assert _acl.from_stored(None) == () and _acl.from_stored("junk") == ()


# (bucket settings, canned ACL) -> the error setting it raises, or None
SETTABLE = [
    ({}, "public-read", None),  # no settings: ObjectWriter, ACLs work
    ({"ownership": "ObjectWriter"}, "public-read-write", None),
    ({"ownership": "BucketOwnerPreferred"}, "authenticated-read", None),
    ({"ownership": "BucketOwnerEnforced"}, "private", None),
    ({"ownership": "BucketOwnerEnforced"}, "bucket-owner-full-control", None),
    ({"ownership": "BucketOwnerEnforced"}, "log-delivery-write", e.AccessControlListNotSupported),
    ({"ownership": "BucketOwnerEnforced"}, "public-read", e.AccessControlListNotSupported),
    ({"public_access_block": {"BlockPublicAcls": True}}, "public-read", e.AccessDenied),
    ({"public_access_block": {"BlockPublicAcls": True}}, "authenticated-read", e.AccessDenied),
    ({"public_access_block": {"BlockPublicAcls": True}}, "log-delivery-write", None),  # not public
    ({"public_access_block": {"BlockPublicAcls": False, "IgnorePublicAcls": True}}, "public-read", None),
]


@pytest.mark.parametrize(("props", "name", "error"), SETTABLE)
def test_check_settable(props: dict[str, object], name: str, error: type[e.TierstoreError] | None) -> None:
    if error is None:
        check_settable(_acl.canned(name), props)
    else:
        with pytest.raises(error):
            check_settable(_acl.canned(name), props)


def test_canned_name_is_taken_exactly_as_policies_see_it() -> None:
    """s3:x-amz-acl is the header as sent: a name that only matches once trimmed or re-cased
    would slip past a policy's Deny on it."""
    for name in ("public-read ", "Public-Read", "public-read,public-read"):
        with pytest.raises(e.InvalidArgument):
            _acl.from_headers({"x-amz-acl": name})
