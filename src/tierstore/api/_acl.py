"""S3 access control lists as pure functions: canned ACLs, ``x-amz-grant-*`` headers, the
``AccessControlPolicy`` XML both ways, and what a grant allows (AWS "Access control list (ACL)
overview": the permission -> action table).

One account: every bucket and object is owned by the store's canonical user (``OWNER_ID``,
``OWNER_NAME``), which is also the Owner that listings print. An ACL is a tuple of ``Grant``;
the empty tuple means "no ACL stored", read as ``private`` (owner FULL_CONTROL).

In authorization (``acl_allows``) only the group grants can add anything: the owner (the root)
is allowed everything anyway, and in one account IAM users are not the canonical user, so a
grant to the owner's ID gives them nothing (AWS: a user of the owning account needs an identity
or bucket policy). ``AllUsers`` grants allow anyone, anonymous callers included;
``AuthenticatedUsers`` grants any signed caller. ``LogDelivery`` is the log delivery service,
which tierstore does not run: it is stored and shown, never matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from xml.etree.ElementTree import Element

from tierstore import errors as e
from tierstore.api._xml import E, children, document, parse_xml, text_of

__all__ = [
    "ALL_USERS",
    "AUTHENTICATED_USERS",
    "CANNED",
    "GRANT_HEADERS",
    "LOG_DELIVERY",
    "OWNER_ID",
    "OWNER_NAME",
    "PRIVATE",
    "Acl",
    "Grant",
    "acl_allows",
    "acl_document",
    "canned",
    "from_headers",
    "from_stored",
    "is_owner_only",
    "is_public",
    "parse_acl",
    "to_stored",
]

OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
OWNER_NAME = "tierstore"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
_GROUPS = frozenset({ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY})
_PUBLIC = frozenset({ALL_USERS, AUTHENTICATED_USERS})
PERMISSIONS = ("FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP")
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_XSI_TYPE = f"{{{_XSI}}}type"


class Grant(NamedTuple):
    """One grant: ``kind`` "CanonicalUser" (``grantee`` its ID) or "Group" (its URI)."""

    kind: str
    grantee: str
    permission: str


Acl = tuple[Grant, ...]
_OWNER_FULL = Grant("CanonicalUser", OWNER_ID, "FULL_CONTROL")
PRIVATE: Acl = (_OWNER_FULL,)

# Canned ACLs (AWS "Canned ACL"). One account: bucket-owner-* name the owner again; aws-exec-read
# has no EC2 grantee here (no EC2), so it is the owner's FULL_CONTROL.
CANNED: dict[str, Acl] = {
    "private": PRIVATE,
    "public-read": (_OWNER_FULL, Grant("Group", ALL_USERS, "READ")),
    "public-read-write": (_OWNER_FULL, Grant("Group", ALL_USERS, "READ"), Grant("Group", ALL_USERS, "WRITE")),
    "authenticated-read": (_OWNER_FULL, Grant("Group", AUTHENTICATED_USERS, "READ")),
    "aws-exec-read": PRIVATE,
    "bucket-owner-read": PRIVATE,
    "bucket-owner-full-control": PRIVATE,
    "log-delivery-write": (
        _OWNER_FULL,
        Grant("Group", LOG_DELIVERY, "WRITE"),
        Grant("Group", LOG_DELIVERY, "READ_ACP"),
    ),
}
GRANT_HEADERS = {
    "x-amz-grant-read": "READ",
    "x-amz-grant-write": "WRITE",
    "x-amz-grant-read-acp": "READ_ACP",
    "x-amz-grant-write-acp": "WRITE_ACP",
    "x-amz-grant-full-control": "FULL_CONTROL",
}
# One grantee of a grant header: id="...", uri="...", emailAddress="..." (quotes optional).
_GRANTEE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*(?:"([^"]*)"|([^,"\s]+))\s*(?:,|$)', re.IGNORECASE)

# What each permission allows (AWS "Mapping of ACL permissions and access policy permissions").
_BUCKET_ACTIONS = {
    "READ": frozenset({"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads"}),
    "WRITE": frozenset({"s3:PutObject", "s3:DeleteObject"}),
    "READ_ACP": frozenset({"s3:GetBucketAcl"}),
    "WRITE_ACP": frozenset({"s3:PutBucketAcl"}),
}
_OBJECT_ACTIONS = {
    "READ": frozenset({"s3:GetObject", "s3:GetObjectVersion"}),
    "READ_ACP": frozenset({"s3:GetObjectAcl", "s3:GetObjectVersionAcl"}),
    "WRITE_ACP": frozenset({"s3:PutObjectAcl", "s3:PutObjectVersionAcl"}),
}
# Actions an ACL can grant, and whose ACL decides: the bucket's or the object's.
BUCKET_ACL_ACTIONS = frozenset().union(*_BUCKET_ACTIONS.values())
OBJECT_ACL_ACTIONS = frozenset().union(*_OBJECT_ACTIONS.values())


def canned(name: str) -> Acl:
    """The grants of a canned ACL; an unknown name is 400 InvalidArgument (as S3)."""
    acl = CANNED.get(name)
    if acl is None:
        raise e.InvalidArgument(
            "Invalid canned ACL.", fields={"ArgumentName": "x-amz-acl", "ArgumentValue": name[:64]}
        )
    return acl


def _grantee(kind: str, value: str) -> Grant:
    """The grantee of one ``kind=value`` item of a grant header (permission filled in later)."""
    low = kind.lower()
    if low == "emailaddress":
        raise e.UnresolvableGrantByEmailAddress()
    if low == "uri":
        if value not in _GROUPS:
            raise e.InvalidArgument("Invalid group uri", fields={"ArgumentName": "uri", "ArgumentValue": value[:128]})
        return Grant("Group", value, "")
    if value != OWNER_ID:  # one account: the only canonical user is the owner
        raise e.InvalidArgument("Invalid id", fields={"ArgumentName": "CanonicalUser/ID", "ArgumentValue": value[:128]})
    return Grant("CanonicalUser", value, "")


def _header_grants(header: str, permission: str, raw: str) -> list[Grant]:
    out: list[Grant] = []
    pos, raw = 0, raw.strip()
    while pos < len(raw):
        m = _GRANTEE.match(raw, pos)
        if m is None or m.end() == pos:
            raise e.InvalidArgument(
                f"Invalid value of the header {header}.", fields={"ArgumentName": header, "ArgumentValue": raw[:128]}
            )
        g = _grantee(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))
        out.append(g._replace(permission=permission))
        pos = m.end()
    if not out:
        raise e.InvalidArgument(f"Invalid value of the header {header}.", fields={"ArgumentName": header})
    return out


def from_headers(headers: Mapping[str, str]) -> Acl | None:
    """The ACL a request's ``x-amz-acl`` or ``x-amz-grant-*`` headers set, None without any.
    Both kinds at once is 400 InvalidRequest (S3). Grant headers are the whole ACL: the owner
    gets nothing unless a header names it (as S3)."""
    name = headers.get("x-amz-acl")
    grants: list[Grant] = []
    for header, permission in GRANT_HEADERS.items():
        raw = headers.get(header)
        if raw is not None:
            grants += _header_grants(header, permission, raw)
    if name is not None:
        if grants:
            raise e.InvalidRequest("Specifying both Canned ACLs and Header Grants is not allowed")
        return canned(name)  # exactly as s3:x-amz-acl shows it to policies
    return tuple(dict.fromkeys(grants)) if grants else None


def parse_acl(body: bytes) -> Acl:
    """An ``AccessControlPolicy`` document. Its shape wrong: MalformedACLError; an Owner other
    than the store's: AccessDenied (S3: you cannot give a resource away); a grantee by e-mail:
    UnresolvableGrantByEmailAddress."""
    try:
        root = parse_xml(body, "AccessControlPolicy")
    except e.MalformedXML as exc:
        raise e.MalformedACLError() from exc
    owner = next(iter(children(root, "Owner")), None)
    if owner is None or not (text_of(owner, "ID") or "").strip():
        raise e.MalformedACLError()
    if (text_of(owner, "ID") or "").strip() != OWNER_ID:
        raise e.AccessDenied("Access Denied")
    acl_el = next(iter(children(root, "AccessControlList")), None)
    if acl_el is None:
        raise e.MalformedACLError()
    grants: list[Grant] = []
    for grant_el in children(acl_el, "Grant"):
        grants.append(_parse_grant(grant_el))
    return tuple(dict.fromkeys(grants))


def _parse_grant(el: Element) -> Grant:
    grantee = next(iter(children(el, "Grantee")), None)
    permission = (text_of(el, "Permission") or "").strip()
    if grantee is None or permission not in PERMISSIONS:
        raise e.MalformedACLError()
    kind = grantee.get(_XSI_TYPE, "")
    if kind == "CanonicalUser":
        value = (text_of(grantee, "ID") or "").strip()
        if not value:
            raise e.MalformedACLError()
        return _grantee("id", value)._replace(permission=permission)
    if kind == "Group":
        value = (text_of(grantee, "URI") or "").strip()
        if not value:
            raise e.MalformedACLError()
        return _grantee("uri", value)._replace(permission=permission)
    if kind == "AmazonCustomerByEmail":
        raise e.UnresolvableGrantByEmailAddress()
    raise e.MalformedACLError()


def acl_document(acl: Acl) -> bytes:
    """The ``AccessControlPolicy`` S3 answers (GetBucketAcl/GetObjectAcl)."""
    items = []
    for g in acl or PRIVATE:
        if g.kind == "Group":
            who = f'<Grantee xmlns:xsi="{_XSI}" xsi:type="Group">{E("URI", g.grantee)}</Grantee>'
        else:
            name = E("DisplayName", OWNER_NAME) if g.grantee == OWNER_ID else ""
            who = f'<Grantee xmlns:xsi="{_XSI}" xsi:type="CanonicalUser">{E("ID", g.grantee)}{name}</Grantee>'
        items.append(E("Grant", None, who, E("Permission", g.permission)))
    owner = E("Owner", None, E("ID", OWNER_ID), E("DisplayName", OWNER_NAME))
    return document("AccessControlPolicy", owner, E("AccessControlList", None, *items))


def to_stored(acl: Acl) -> list[list[str]]:
    """The JSON form kept in bucket props / version meta (``[kind, grantee, permission]``)."""
    return [list(g) for g in acl]


def from_stored(raw: Any) -> Acl:
    """The stored form back; anything unreadable is no ACL (private)."""
    if not isinstance(raw, list):
        return ()
    return tuple(Grant(str(g[0]), str(g[1]), str(g[2])) for g in raw if isinstance(g, list) and len(g) == 3)


def is_public(acl: Iterable[Grant]) -> bool:
    """Whether an ACL grants anything to AllUsers or AuthenticatedUsers (Block Public Access)."""
    return any(g.kind == "Group" and g.grantee in _PUBLIC for g in acl)


def is_owner_only(acl: Sequence[Grant]) -> bool:
    """Whether an ACL is ``private`` / ``bucket-owner-full-control`` (what BucketOwnerEnforced accepts)."""
    return not acl or tuple(acl) == PRIVATE


def acl_allows(acl: Iterable[Grant], action: str, *, on_object: bool, authenticated: bool) -> bool:
    """Whether a group grant of ``acl`` allows ``action`` to a caller other than the owner.
    ``on_object``: ``acl`` is an object's (else its bucket's); ``authenticated``: the caller
    signed the request (AuthenticatedUsers grants apply), else it is anonymous."""
    table = _OBJECT_ACTIONS if on_object else _BUCKET_ACTIONS
    for g in acl:
        if g.kind != "Group" or not (g.grantee == ALL_USERS or (authenticated and g.grantee == AUTHENTICATED_USERS)):
            continue
        if g.permission == "FULL_CONTROL":
            if any(action in actions for actions in table.values()):
                return True
        elif action in table.get(g.permission, ()):
            return True
    return False
