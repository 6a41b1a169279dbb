"""The AWS IAM query API (the subset ``boto3.client("iam")`` and ``aws iam`` use) over
``IdentityService``: users and their tags, access keys, groups and membership, inline and
managed policies and their attachments, permissions boundaries, roles and OpenID Connect
providers (docs/identities.md, docs/security.md "The IAM API").

Each action is registered with the query dispatcher (``_query.register``) with its IAM checks:
``iam:<Action>`` on the ARN of the entity it names (``arn:aws:iam::000000000000:user/NAME``,
``group/``, ``policy/``, ``role/``, ``oidc-provider/HOST/PATH``; ``*`` for listings of all).
Managing identities is therefore a policy decision of the one ``Authorizer``: the root may do
everything, a user needs the action in a policy (an "admin policy" made with CreatePolicy).
Handlers check nothing about the caller, except that a key named by id belongs to the user the
request names (or the caller), so a permission on one's own user never reaches another's keys.

Responses follow botocore's ``iam/2010-05-08/service-2.json`` shapes: lists are ``<member>``
elements, list calls paginate with ``Marker``/``MaxItems``/``IsTruncated``, policy documents go
out URL-encoded as AWS returns them, and a secret key appears only in CreateAccessKey's answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from tierstore import errors as e
from tierstore.api._authorize import Check
from tierstore.api._iam_authorizer import ACCOUNT_ID
from tierstore.api._query import IAM, QueryAction, QueryCall, QueryHandler, register
from tierstore.api._xml import E, iso8601
from tierstore.engine import AccessKeyInfo, IdentityService, UserRecord, provider_key
from tierstore.engine import Principal as EnginePrincipal

__all__ = ["ARN_PREFIX", "policy_name_of"]

ARN_PREFIX = f"arn:aws:iam::{ACCOUNT_ID}:"
MAX_ITEMS = 1000
DEFAULT_ITEMS = 100
MAX_KEYS_PER_USER = 2  # IAM's quota of access keys per user (LimitExceeded past it)
T = TypeVar("T")


# --- helpers: parameters, ARNs, XML ---------------------------------------------------------
def _ids(call: QueryCall) -> IdentityService:
    ids = call.ctx.identities
    if ids is None:
        raise e.NotImplementedOperation("This server has no identities.")
    return ids


async def _caller(call: QueryCall) -> EnginePrincipal | None:
    """Who signed the request (None: the key stopped authenticating since)."""
    return await _ids(call).principal_for(call.access_key) if call.access_key else None


async def _user_or_caller(call: QueryCall) -> str | None:
    """``UserName``, else the caller's own user (None: the caller is the root)."""
    name = call.get("UserName")
    if name:
        return name
    caller = await _caller(call)
    return caller.user_name if caller is not None else None


def _arn(kind: str, name: str) -> str:
    return f"{ARN_PREFIX}{kind}/{name}"


def policy_name_of(arn: str) -> str:
    """The managed policy an ARN names (``arn:aws:iam::000000000000:policy/[PATH/]NAME``);
    ``NoSuchEntity`` for another account's (AWS-managed policies do not exist here)."""
    prefix = ARN_PREFIX + "policy/"
    if not arn.startswith(prefix) or len(arn) > 2048:
        raise e.NoSuchEntity(f"Policy {arn[:256]} does not exist or is not attachable.")
    return arn[len(prefix) :].rsplit("/", 1)[-1]


def _oidc_url(arn: str) -> str:
    prefix = ARN_PREFIX + "oidc-provider/"
    if not arn.startswith(prefix) or len(arn) > 2048:
        raise e.NoSuchEntity(f"OpenIDConnect provider {arn[:256]} was not found.")
    return "https://" + arn[len(prefix) :]


def _oidc_arn(url: str) -> str:
    return _arn("oidc-provider", provider_key(url))  # HOST/PATH (a loopback provider may be http://)


def _members(tag: str, items: Iterable[str]) -> str:
    return E(tag, None, *(E("member", None, item) for item in items))


def _doc(document: str) -> str:
    """A policy document as AWS returns it: URL-encoded (botocore decodes it)."""
    return quote(document, safe="")


def _int(call: QueryCall, name: str, low: int, high: int, default: int | None = None) -> int | None:
    raw = call.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise e.ValidationError(f"{name} must be an integer from {low} to {high}.")
    return int(raw)


def _page(call: QueryCall, items: Sequence[T], key: Callable[[T], str]) -> tuple[list[T], str]:
    """One page of ``items`` (sorted by ``key``) after ``Marker``, at most ``MaxItems``; and the
    ``IsTruncated``/``Marker`` elements (the marker: the last name returned)."""
    limit = _int(call, "MaxItems", 1, MAX_ITEMS, DEFAULT_ITEMS)
    assert limit is not None
    marker = (call.get("Marker") or "").lower()  # names are unique case-insensitively
    ordered = sorted(items, key=lambda item: key(item).lower())
    rest = [item for item in ordered if key(item).lower() > marker] if marker else ordered
    page = rest[:limit]
    if len(rest) > limit:
        return page, E("IsTruncated", "true") + E("Marker", key(page[-1]))
    return page, E("IsTruncated", "false")


def _tags_param(call: QueryCall) -> dict[str, str]:
    """``Tags.member.N.Key`` / ``Tags.member.N.Value``."""
    tags: dict[str, str] = {}
    i = 1
    while f"Tags.member.{i}.Key" in call.params:
        tags[call.params[f"Tags.member.{i}.Key"]] = call.params.get(f"Tags.member.{i}.Value", "")
        i += 1
    return tags


def _tags_xml(tags: dict[str, str]) -> str:
    return E("Tags", None, *(E("member", None, E("Key", k), E("Value", v)) for k, v in sorted(tags.items())))


async def _user_xml(ids: IdentityService, user: UserRecord) -> str:
    boundary = await ids.boundary("user", user.name)
    parts = [
        E("Path", "/"),
        E("UserName", user.name),
        E("UserId", user.user_id),
        E("Arn", _arn("user", user.name)),
        E("CreateDate", iso8601(user.created_ns)),
    ]
    if boundary is not None:
        parts.append(_boundary_xml(boundary))
    if user.tags:
        parts.append(_tags_xml(user.tags))
    return "".join(parts)


def _boundary_xml(policy: str) -> str:
    return E(
        "PermissionsBoundary",
        None,
        E("PermissionsBoundaryType", "PermissionsBoundaryPolicy"),
        E("PermissionsBoundaryArn", _arn("policy", policy)),
    )


def _key_xml(info: AccessKeyInfo, user_name: str) -> str:
    return (
        E("UserName", user_name)
        + E("AccessKeyId", info.access_key_id)
        + E("Status", info.status)
        + E("CreateDate", iso8601(info.created_ns))
    )


async def _user_key(call: QueryCall, user: str | None) -> AccessKeyInfo:
    """The user key ``AccessKeyId`` names, which must belong to ``user`` (the named user or the
    caller): ``NoSuchEntity`` otherwise, as IAM answers."""
    key_id = call.require("AccessKeyId")
    info = await _ids(call).get_access_key(key_id)
    if info.kind != "user" or user is None or info.user_name is None or info.user_name.lower() != user.lower():
        raise e.NoSuchEntity(f"The Access Key with id {key_id} cannot be found.")
    return info


async def _need_user(call: QueryCall) -> str:
    """The user the request is about (``UserName`` or the caller's); the root names one."""
    user = await _user_or_caller(call)
    if user is None:
        raise e.ValidationError("The root has no IAM user: give UserName.")
    return user


# --- checks: the IAM permission each action needs -------------------------------------------
def _on(kind: str, param: str, *, self_default: bool = False) -> Callable[[QueryCall], Awaitable[tuple[Check, ...]]]:
    """``iam:<Action>`` on the ARN of the ``kind`` entity named by ``param`` (or, with
    ``self_default``, the caller's own user when absent)."""

    async def checks(call: QueryCall) -> tuple[Check, ...]:
        name = call.get(param) or ""
        if not name and self_default:
            name = await _user_or_caller(call) or ""
            if not name:  # the root, about itself
                return (Check(f"iam:{call.action}", f"arn:aws:iam::{ACCOUNT_ID}:root"),)
        if kind in ("policy", "oidc-provider"):  # the parameter is the ARN
            return (Check(f"iam:{call.action}", name or "*"),)
        return (Check(f"iam:{call.action}", _arn(kind, name) if name else "*"),)

    return checks


async def _anywhere(call: QueryCall) -> tuple[Check, ...]:
    return (Check(f"iam:{call.action}", "*"),)


# --- users ------------------------------------------------------------------------------------
async def create_user(call: QueryCall) -> str:
    ids = _ids(call)
    user = await ids.create_user(call.require("UserName"), tags=_tags_param(call))
    return E("User", None, await _user_xml(ids, user))


async def get_user(call: QueryCall) -> str:
    ids = _ids(call)
    name = await _user_or_caller(call)
    if name is None:  # the root: the account's identity
        root = E("Path", "/") + E("UserId", ACCOUNT_ID) + E("Arn", f"arn:aws:iam::{ACCOUNT_ID}:root")
        return E("User", None, root + E("CreateDate", iso8601(0)))
    return E("User", None, await _user_xml(ids, await ids.get_user(name)))


async def list_users(call: QueryCall) -> str:
    ids = _ids(call)
    limit = _int(call, "MaxItems", 1, MAX_ITEMS, DEFAULT_ITEMS)
    assert limit is not None
    users = await ids.list_users(after=call.get("Marker") or "", limit=limit + 1)
    prefix = call.get("PathPrefix") or "/"
    if prefix != "/":
        users = []  # every user's path is "/"
    page, more = users[:limit], len(users) > limit
    tail = E("IsTruncated", "true") + E("Marker", page[-1].name) if more else E("IsTruncated", "false")
    return E("Users", None, *[E("member", None, await _user_xml(ids, u)) for u in page]) + tail


async def delete_user(call: QueryCall) -> None:
    await _ids(call).delete_user(call.require("UserName"))


async def tag_user(call: QueryCall) -> None:
    tags = _tags_param(call)
    if not tags:
        raise e.ValidationError("Tags must name at least one tag.")
    await _ids(call).tag_user(call.require("UserName"), tags)


async def untag_user(call: QueryCall) -> None:
    await _ids(call).untag_user(call.require("UserName"), call.members("TagKeys"))


async def list_user_tags(call: QueryCall) -> str:
    tags = (await _ids(call).get_user(call.require("UserName"))).tags
    page, tail = _page(call, sorted(tags.items()), lambda kv: kv[0])
    return _tags_xml(dict(page)) + tail


# --- access keys --------------------------------------------------------------------------
async def create_access_key(call: QueryCall) -> str:
    ids = _ids(call)
    user = await _need_user(call)
    if len(await ids.list_access_keys(user, kind="user")) >= MAX_KEYS_PER_USER:
        raise e.LimitExceeded(f"Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}")
    new = await ids.create_access_key(user, caller=call.access_key)
    return E("AccessKey", None, _key_xml(new.info, user), E("SecretAccessKey", new.secret_key))


async def list_access_keys(call: QueryCall) -> str:
    ids = _ids(call)
    user = await _need_user(call)
    keys = await ids.list_access_keys(user, kind="user")
    page, tail = _page(call, sorted(keys, key=lambda k: k.access_key_id), lambda k: k.access_key_id)
    return E("AccessKeyMetadata", None, *(E("member", None, _key_xml(k, user)) for k in page)) + tail


async def update_access_key(call: QueryCall) -> None:
    status = call.require("Status")
    if status not in ("Active", "Inactive"):
        raise e.ValidationError("Status must be Active or Inactive.")
    info = await _user_key(call, await _user_or_caller(call))
    await _ids(call).set_access_key_status(info.access_key_id, active=status == "Active", caller=call.access_key)


async def delete_access_key(call: QueryCall) -> None:
    info = await _user_key(call, await _user_or_caller(call))
    await _ids(call).delete_access_key(info.access_key_id, caller=call.access_key)


async def get_access_key_last_used(call: QueryCall) -> str:
    info = await _ids(call).get_access_key(call.require("AccessKeyId"))
    used = [E("LastUsedDate", iso8601(info.last_used_ns))] if info.last_used_ns is not None else []
    last = E("AccessKeyLastUsed", None, *used, E("ServiceName", "s3" if used else "N/A"), E("Region", "N/A"))
    return (E("UserName", info.user_name) if info.user_name else "") + last


async def _key_checks(call: QueryCall) -> tuple[Check, ...]:
    """GetAccessKeyLastUsed names only the key: the check is on its user (the root's ARN for
    a key of the root; ``*`` for an unknown key, which the handler answers NoSuchEntity)."""
    ids = _ids(call)
    try:
        info = await ids.get_access_key(call.get("AccessKeyId") or "")
    except e.NoSuchEntity:
        return await _anywhere(call)
    arn = _arn("user", info.user_name) if info.user_name else f"arn:aws:iam::{ACCOUNT_ID}:root"
    return (Check(f"iam:{call.action}", arn),)


# --- groups -------------------------------------------------------------------------------
def _group_xml(group: tuple[str, str, int]) -> str:
    name, group_id, created_ns = group
    return (
        E("Path", "/")
        + E("GroupName", name)
        + E("GroupId", group_id)
        + E("Arn", _arn("group", name))
        + E("CreateDate", iso8601(created_ns))
    )


async def create_group(call: QueryCall) -> str:
    ids = _ids(call)
    name = call.require("GroupName")
    await ids.create_group(name)
    return E("Group", None, _group_xml(await ids.get_group(name)))


async def get_group(call: QueryCall) -> str:
    ids = _ids(call)
    group = await ids.get_group(call.require("GroupName"))
    users = [await ids.get_user(n) for n in await ids.group_members(group[0])]
    page, tail = _page(call, users, lambda u: u.name)
    return E("Group", None, _group_xml(group)) + E(
        "Users", None, *[E("member", None, await _user_xml(ids, u)) for u in page]
    ) + tail


async def list_groups(call: QueryCall) -> str:
    page, tail = _page(call, await _ids(call).list_groups(), lambda g: g[0])
    return E("Groups", None, *(E("member", None, _group_xml(g)) for g in page)) + tail


async def delete_group(call: QueryCall) -> None:
    await _ids(call).delete_group(call.require("GroupName"))


async def add_user_to_group(call: QueryCall) -> None:
    await _ids(call).add_user_to_group(call.require("GroupName"), call.require("UserName"))


async def remove_user_from_group(call: QueryCall) -> None:
    ids = _ids(call)
    group, user = call.require("GroupName"), call.require("UserName")
    if user.lower() not in {m.lower() for m in await ids.group_members((await ids.get_group(group))[0])}:
        raise e.NoSuchEntity(f"The user with name {user} is not in group {group}.")
    await ids.remove_user_from_group(group, user)


async def list_groups_for_user(call: QueryCall) -> str:
    ids = _ids(call)
    groups = [await ids.get_group(g) for g in await ids.groups_for_user(call.require("UserName"))]
    page, tail = _page(call, groups, lambda g: g[0])
    return E("Groups", None, *(E("member", None, _group_xml(g)) for g in page)) + tail


# --- inline policies (users, groups, roles) -------------------------------------------------
_KINDS = {"User": "user", "Group": "group", "Role": "role"}


async def _principal(call: QueryCall, kind: str) -> str:
    """The named user, group or role, which must exist."""
    ids = _ids(call)
    name = call.require(f"{kind}Name")
    if kind == "User":
        return (await ids.get_user(name)).name
    if kind == "Group":
        return (await ids.get_group(name))[0]
    return (await ids.get_role(name)).name


def _inline_handlers(kind: str) -> dict[str, QueryAction]:
    """Put/Get/List/Delete<Kind>Policy for ``kind`` (User, Group, Role)."""
    ptype = _KINDS[kind]

    async def put(call: QueryCall) -> None:
        await _ids(call).put_inline_policy(
            ptype, await _principal(call, kind), call.require("PolicyName"), call.require("PolicyDocument")
        )

    async def get(call: QueryCall) -> str:
        name = await _principal(call, kind)
        policy = call.require("PolicyName")
        policies = await _ids(call).inline_policies(ptype, name)
        found = {k.lower(): (k, v) for k, v in policies.items()}.get(policy.lower())
        if found is None:
            raise e.NoSuchEntity(f"The {ptype} policy with name {policy} cannot be found.")
        return E(f"{kind}Name", name) + E("PolicyName", found[0]) + E("PolicyDocument", _doc(found[1]))

    async def list_(call: QueryCall) -> str:
        names = sorted(await _ids(call).inline_policies(ptype, await _principal(call, kind)))
        page, tail = _page(call, names, lambda n: n)
        return _members("PolicyNames", page) + tail

    async def delete(call: QueryCall) -> None:
        await _ids(call).delete_inline_policy(ptype, await _principal(call, kind), call.require("PolicyName"))

    on = _on(ptype, f"{kind}Name")
    return {
        f"Put{kind}Policy": QueryAction(put, on),
        f"Get{kind}Policy": QueryAction(get, on),
        f"List{kind}Policies": QueryAction(list_, on),
        f"Delete{kind}Policy": QueryAction(delete, on),
    }


# --- managed policies -----------------------------------------------------------------------
async def _policy_xml(ids: IdentityService, name: str) -> str:
    found_name, policy_id, _doc_text, updated_ns = await ids.get_policy(name)
    count = len(await ids.policy_entities(found_name))
    return (
        E("PolicyName", found_name)
        + E("PolicyId", policy_id)
        + E("Arn", _arn("policy", found_name))
        + E("Path", "/")
        + E("DefaultVersionId", "v1")
        + E("AttachmentCount", count)
        + E("PermissionsBoundaryUsageCount", 0)
        + E("IsAttachable", "true")
        + E("CreateDate", iso8601(updated_ns))
        + E("UpdateDate", iso8601(updated_ns))
    )


async def create_policy(call: QueryCall) -> str:
    ids = _ids(call)
    name = call.require("PolicyName")
    await ids.create_policy(name, call.require("PolicyDocument"), description=call.get("Description") or "")
    return E("Policy", None, await _policy_xml(ids, name))


async def get_policy(call: QueryCall) -> str:
    return E("Policy", None, await _policy_xml(_ids(call), policy_name_of(call.require("PolicyArn"))))


async def get_policy_version(call: QueryCall) -> str:
    name, _id, document, updated_ns = await _ids(call).get_policy(policy_name_of(call.require("PolicyArn")))
    version = call.require("VersionId")
    if version != "v1":
        raise e.NoSuchEntity(f"Policy {name} version {version[:16]} does not exist.")
    return E(
        "PolicyVersion",
        None,
        E("Document", _doc(document)),
        E("VersionId", "v1"),
        E("IsDefaultVersion", "true"),
        E("CreateDate", iso8601(updated_ns)),
    )


async def list_policies(call: QueryCall) -> str:
    ids = _ids(call)
    scope = call.get("Scope") or "All"
    if scope not in ("All", "AWS", "Local"):
        raise e.ValidationError("Scope must be All, AWS or Local.")
    names = [] if scope == "AWS" else await ids.list_policies()  # no AWS-managed policies here
    if (call.get("OnlyAttached") or "").lower() == "true":
        names = [n for n in names if await ids.policy_entities(n)]
    page, tail = _page(call, names, lambda n: n)
    return E("Policies", None, *[E("member", None, await _policy_xml(ids, n)) for n in page]) + tail


async def delete_policy(call: QueryCall) -> None:
    await _ids(call).delete_policy(policy_name_of(call.require("PolicyArn")))


async def list_entities_for_policy(call: QueryCall) -> str:
    ids = _ids(call)
    entities = await ids.policy_entities(policy_name_of(call.require("PolicyArn")))
    wanted = call.get("EntityFilter") or ""

    async def ident(kind: str, name: str) -> str:
        if kind == "User":
            return (await ids.get_user(name)).user_id
        if kind == "Group":
            return (await ids.get_group(name))[1]
        return (await ids.get_role(name)).role_id

    out: dict[str, list[str]] = {kind: [] for kind in ("User", "Group", "Role")}
    for ptype, name in entities:
        kind = ptype.capitalize()
        if wanted in ("", kind):
            out[kind].append(E("member", None, E(f"{kind}Name", name), E(f"{kind}Id", await ident(kind, name))))
    return (
        E("PolicyGroups", None, *out["Group"])
        + E("PolicyUsers", None, *out["User"])
        + E("PolicyRoles", None, *out["Role"])
        + E("IsTruncated", "false")
    )


def _attach_handlers(kind: str) -> dict[str, QueryAction]:
    """Attach/Detach/ListAttached<Kind>Policies for ``kind`` (User, Group, Role)."""
    ptype = _KINDS[kind]

    async def attach(call: QueryCall) -> None:
        await _ids(call).attach_policy(ptype, call.require(f"{kind}Name"), policy_name_of(call.require("PolicyArn")))

    async def detach(call: QueryCall) -> None:
        await _ids(call).detach_policy(ptype, call.require(f"{kind}Name"), policy_name_of(call.require("PolicyArn")))

    async def list_(call: QueryCall) -> str:
        names = await _ids(call).attached_policies(ptype, await _principal(call, kind))
        page, tail = _page(call, names, lambda n: n)
        members = (E("member", None, E("PolicyName", n), E("PolicyArn", _arn("policy", n))) for n in page)
        return E("AttachedPolicies", None, *members) + tail

    on = _on(ptype, f"{kind}Name")
    return {
        f"Attach{kind}Policy": QueryAction(attach, on),
        f"Detach{kind}Policy": QueryAction(detach, on),
        f"ListAttached{kind}Policies": QueryAction(list_, on),
    }


def _boundary_handlers(kind: str) -> dict[str, QueryAction]:
    """Put/Delete<Kind>PermissionsBoundary for ``kind`` (User, Role)."""
    ptype = _KINDS[kind]

    async def put(call: QueryCall) -> None:
        policy = policy_name_of(call.require("PermissionsBoundary"))
        await _ids(call).set_boundary(ptype, call.require(f"{kind}Name"), policy)

    async def delete(call: QueryCall) -> None:
        ids = _ids(call)
        name = await _principal(call, kind)
        if await ids.boundary(ptype, name) is None:
            raise e.NoSuchEntity(f"The {ptype} {name} has no permissions boundary.")
        await ids.set_boundary(ptype, name, None)

    on = _on(ptype, f"{kind}Name")
    return {
        f"Put{kind}PermissionsBoundary": QueryAction(put, on),
        f"Delete{kind}PermissionsBoundary": QueryAction(delete, on),
    }


# --- roles ----------------------------------------------------------------------------------
async def _role_xml(ids: IdentityService, name: str) -> str:
    role = await ids.get_role(name)
    parts = [
        E("Path", "/"),
        E("RoleName", role.name),
        E("RoleId", role.role_id),
        E("Arn", _arn("role", role.name)),
        E("CreateDate", iso8601(role.created_ns)),
        E("AssumeRolePolicyDocument", _doc(role.trust_policy)),
        E("Description", role.description),
        E("MaxSessionDuration", role.max_session_s),
    ]
    boundary = await ids.boundary("role", role.name)
    if boundary is not None:
        parts.append(_boundary_xml(boundary))
    return "".join(parts)


async def create_role(call: QueryCall) -> str:
    ids = _ids(call)
    name = call.require("RoleName")
    max_session = _int(call, "MaxSessionDuration", 900, 43_200, 3600)
    assert max_session is not None
    await ids.create_role(
        name,
        call.require("AssumeRolePolicyDocument"),
        max_session_s=max_session,
        description=call.get("Description") or "",
    )
    boundary = call.get("PermissionsBoundary")
    if boundary:
        await ids.set_boundary("role", name, policy_name_of(boundary))
    return E("Role", None, await _role_xml(ids, name))


async def get_role(call: QueryCall) -> str:
    return E("Role", None, await _role_xml(_ids(call), call.require("RoleName")))


async def list_roles(call: QueryCall) -> str:
    ids = _ids(call)
    page, tail = _page(call, await ids.list_roles(), lambda r: r.name)
    return E("Roles", None, *[E("member", None, await _role_xml(ids, r.name)) for r in page]) + tail


async def delete_role(call: QueryCall) -> None:
    await _ids(call).delete_role(call.require("RoleName"))


async def update_assume_role_policy(call: QueryCall) -> None:
    await _ids(call).update_role(call.require("RoleName"), trust_policy=call.require("PolicyDocument"))


async def update_role(call: QueryCall) -> str:
    await _ids(call).update_role(
        call.require("RoleName"),
        max_session_s=_int(call, "MaxSessionDuration", 900, 43_200),
        description=call.get("Description"),
    )
    return ""  # an empty UpdateRoleResult, which botocore expects


# --- OpenID Connect providers -----------------------------------------------------------------
async def create_oidc_provider(call: QueryCall) -> str:
    url = call.require("Url")
    await _ids(call).create_oidc_provider(url, call.members("ClientIDList"), call.members("ThumbprintList"))
    return E("OpenIDConnectProviderArn", _oidc_arn(url))


async def _provider(call: QueryCall) -> dict[str, Any]:
    url = _oidc_url(call.require("OpenIDConnectProviderArn"))
    for provider in await _ids(call).list_oidc_providers():
        if provider_key(str(provider["url"])) == provider_key(url):  # https://HOST/PATH or http:// (loopback)
            return provider
    raise e.NoSuchEntity(f"OpenIDConnect provider {url[:256]} was not found.")


async def get_oidc_provider(call: QueryCall) -> str:
    provider = await _provider(call)
    url = str(provider["url"])
    return (
        E("Url", provider_key(url))
        + _members("ClientIDList", provider["client_ids"])
        + _members("ThumbprintList", provider["thumbprints"])
        + E("CreateDate", iso8601(int(provider["created_ns"])))
    )


async def list_oidc_providers(call: QueryCall) -> str:
    providers = await _ids(call).list_oidc_providers()
    arns = (E("member", None, E("Arn", _oidc_arn(str(p["url"])))) for p in providers)
    return E("OpenIDConnectProviderList", None, *arns)


async def delete_oidc_provider(call: QueryCall) -> None:
    await _ids(call).delete_oidc_provider(str((await _provider(call))["url"]))


# --- the registry -----------------------------------------------------------------------------
def _actions() -> dict[str, QueryAction]:
    user = _on("user", "UserName")
    self_user = _on("user", "UserName", self_default=True)
    group = _on("group", "GroupName")
    role = _on("role", "RoleName")
    policy = _on("policy", "PolicyArn")
    provider = _on("oidc-provider", "OpenIDConnectProviderArn")
    table: dict[str, tuple[QueryHandler, Callable[[QueryCall], Awaitable[tuple[Check, ...]]]]] = {
        "CreateUser": (create_user, user),
        "GetUser": (get_user, self_user),
        "ListUsers": (list_users, _anywhere),
        "DeleteUser": (delete_user, user),
        "TagUser": (tag_user, user),
        "UntagUser": (untag_user, user),
        "ListUserTags": (list_user_tags, user),
        "CreateAccessKey": (create_access_key, self_user),
        "ListAccessKeys": (list_access_keys, self_user),
        "UpdateAccessKey": (update_access_key, self_user),
        "DeleteAccessKey": (delete_access_key, self_user),
        "GetAccessKeyLastUsed": (get_access_key_last_used, _key_checks),
        "CreateGroup": (create_group, group),
        "GetGroup": (get_group, group),
        "ListGroups": (list_groups, _anywhere),
        "DeleteGroup": (delete_group, group),
        "AddUserToGroup": (add_user_to_group, group),
        "RemoveUserFromGroup": (remove_user_from_group, group),
        "ListGroupsForUser": (list_groups_for_user, user),
        "CreatePolicy": (create_policy, _on_new_policy),
        "GetPolicy": (get_policy, policy),
        "GetPolicyVersion": (get_policy_version, policy),
        "ListPolicies": (list_policies, _anywhere),
        "DeletePolicy": (delete_policy, policy),
        "ListEntitiesForPolicy": (list_entities_for_policy, policy),
        "CreateRole": (create_role, role),
        "GetRole": (get_role, role),
        "ListRoles": (list_roles, _anywhere),
        "DeleteRole": (delete_role, role),
        "UpdateAssumeRolePolicy": (update_assume_role_policy, role),
        "UpdateRole": (update_role, role),
        "CreateOpenIDConnectProvider": (create_oidc_provider, _on_new_provider),
        "GetOpenIDConnectProvider": (get_oidc_provider, provider),
        "ListOpenIDConnectProviders": (list_oidc_providers, _anywhere),
        "DeleteOpenIDConnectProvider": (delete_oidc_provider, provider),
    }
    out = {name: QueryAction(handler, checks) for name, (handler, checks) in table.items()}
    for kind in ("User", "Group", "Role"):
        out.update(_inline_handlers(kind))
        out.update(_attach_handlers(kind))
    for kind in ("User", "Role"):
        out.update(_boundary_handlers(kind))
    return out


async def _on_new_policy(call: QueryCall) -> tuple[Check, ...]:
    return (Check("iam:CreatePolicy", _arn("policy", call.get("PolicyName") or "")),)


async def _on_new_provider(call: QueryCall) -> tuple[Check, ...]:
    return (Check("iam:CreateOpenIDConnectProvider", _oidc_arn(call.get("Url") or "")),)


ACTIONS = _actions()
register(IAM, ACTIONS)
