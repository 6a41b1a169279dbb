"""``/_tierstore/admin/users`` and ``/_tierstore/admin/keys``: a small JSON face of the
identity store (the IAM query API, ``_iam_api``, is the full one; docs/identities.md).

Who may call each endpoint is a policy decision, like every request: each endpoint has its own
route name and the IAM action it needs (``ENDPOINTS``: ``iam:ListUsers``, ``iam:CreateAccessKey``,
...). When the user is in the path, the dispatcher authorizes the action on that user's ARN
before the handler runs; when the body, the query or a key id names it, the handler authorizes
it (through the same ``Authorizer``) before it reads or changes anything else, as DeleteObjects
does per key. The root may do everything; a user needs the actions in a policy; a service
account never manages identities (``_iam_authorizer``). A new key's secret is in the answer of
the call that creates it and nowhere else, ever.

- ``GET    /_tierstore/admin/users``               -> ``{"users": [user, ...]}``
- ``POST   /_tierstore/admin/users``               -> 201 ``user``; body ``{"name", "tags"?}``
- ``GET    /_tierstore/admin/users/NAME``          -> ``user`` with its ``keys`` and ``groups``
- ``PUT    /_tierstore/admin/users/NAME``          -> ``user``; body ``{"enabled": bool}``
- ``DELETE /_tierstore/admin/users/NAME``          -> 204 (``DeleteConflict`` while it has keys)
- ``GET    /_tierstore/admin/users/NAME/policies`` -> ``{"policies": {name: document, ...}}`` (inline)
- ``GET    /_tierstore/admin/users/NAME/policies/P`` -> ``{"name", "document"}``
- ``PUT    /_tierstore/admin/users/NAME/policies/P`` -> ``{"name", "document"}``; body: the policy
  document (JSON), refused with ``MalformedPolicyDocument`` (400) when it does not parse
- ``DELETE /_tierstore/admin/users/NAME/policies/P`` -> 204
- ``GET    /_tierstore/admin/keys?user=NAME``      -> ``{"keys": [key, ...]}`` (no secrets)
- ``POST   /_tierstore/admin/keys``                -> 201 ``key`` + ``secret_key``; body ``{"user",
  "service"?: bool, "policy"?: str, "expires_s"?: seconds from now, "name"?}``
- ``PUT    /_tierstore/admin/keys/ID``             -> ``key``; body ``{"status": "Active"|"Inactive"}``
- ``DELETE /_tierstore/admin/keys/ID``             -> 204
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from tierstore import errors as e
from tierstore.api._auth import Authenticator, AuthResult, SignedRequest
from tierstore.api._authorize import Check
from tierstore.api._iam_authorizer import ACCOUNT_ID
from tierstore.api._xml import iso8601
from tierstore.engine import AccessKeyInfo, IdentityService, UserRecord

if TYPE_CHECKING:
    from tierstore.api._request import Request

__all__ = ["ENDPOINTS", "IdentityAuthenticator", "endpoint", "identity_request", "path_user_arn"]

_PREFIXES = ("admin/users", "admin/keys")
UNROUTED = "tierstore:AdminIdentities"  # a method or path no endpoint has: needs tierstore:Admin
# Route name -> (the IAM actions it needs, where their resource is): "any" ("*"), "path" (the user
# in the path: checked by the dispatcher), "entry" (named by the body, the query or a key id:
# checked by the handler first).
ENDPOINTS: dict[str, tuple[tuple[str, ...], str]] = {
    "tierstore:AdminListUsers": (("iam:ListUsers",), "any"),
    "tierstore:AdminCreateUser": (("iam:CreateUser",), "entry"),
    "tierstore:AdminGetUser": (("iam:GetUser", "iam:ListAccessKeys", "iam:ListGroupsForUser"), "path"),
    "tierstore:AdminUpdateUser": (("iam:UpdateUser",), "path"),
    "tierstore:AdminDeleteUser": (("iam:DeleteUser",), "path"),
    "tierstore:AdminListUserPolicies": (("iam:ListUserPolicies",), "path"),
    "tierstore:AdminGetUserPolicy": (("iam:GetUserPolicy",), "path"),
    "tierstore:AdminPutUserPolicy": (("iam:PutUserPolicy",), "path"),
    "tierstore:AdminDeleteUserPolicy": (("iam:DeleteUserPolicy",), "path"),
    "tierstore:AdminListAccessKeys": (("iam:ListAccessKeys",), "entry"),
    "tierstore:AdminCreateAccessKey": (("iam:CreateAccessKey",), "entry"),
    "tierstore:AdminGetAccessKey": (("iam:GetAccessKeyLastUsed",), "entry"),
    "tierstore:AdminUpdateAccessKey": (("iam:UpdateAccessKey",), "entry"),
    "tierstore:AdminDeleteAccessKey": (("iam:DeleteAccessKey",), "entry"),
}
_ROUTES: dict[tuple[str, int, str], dict[str, str]] = {  # (area, path depth, policies?) -> method -> route
    ("users", 0, ""): {"GET": "ListUsers", "POST": "CreateUser"},
    ("users", 1, ""): {"GET": "GetUser", "PUT": "UpdateUser", "DELETE": "DeleteUser"},
    ("users", 2, "policies"): {"GET": "ListUserPolicies"},
    ("users", 3, "policies"): {"GET": "GetUserPolicy", "PUT": "PutUserPolicy", "DELETE": "DeleteUserPolicy"},
    ("keys", 0, ""): {"GET": "ListAccessKeys", "POST": "CreateAccessKey"},
    ("keys", 1, ""): {"GET": "GetAccessKey", "PUT": "UpdateAccessKey", "DELETE": "DeleteAccessKey"},
}


def endpoint(method: str, key: str) -> str:
    """The route name of ``METHOD /_tierstore/<key>`` (``key``: ``admin/users...``); ``UNROUTED``
    for what no endpoint answers (the handler refuses it)."""
    rest = key.split("/")[2:]
    if rest == [""]:
        rest = []
    area = key.split("/")[1]
    sub = rest[1] if len(rest) >= 2 else ""
    found = _ROUTES.get((area, len(rest), sub), {}).get(method)
    return f"tierstore:Admin{found}" if found and all(rest) else UNROUTED


def user_arn(name: str | None) -> str:
    """The ARN an action on user ``name`` is checked on (the root's for None)."""
    return f"arn:aws:iam::{ACCOUNT_ID}:user/{name}" if name else f"arn:aws:iam::{ACCOUNT_ID}:root"


def path_user_arn(key: str) -> str:
    """The ARN of the user ``admin/users/NAME/...`` names."""
    return user_arn(key.split("/")[2])
_MAX_POLICY_BODY = 64 * 1024  # the identity policy limit is 6,144 characters (whitespace not counted)


class IdentityAuthenticator(Authenticator):
    """The authenticator over an ``IdentityService``: the root keys and every active catalog key
    authenticate; a key that did is noted as used (written at most once a minute)."""

    def __init__(self, identities: IdentityService, **kwargs: Any) -> None:
        super().__init__(identities.cached_secret, fetch_secret=identities.secret_for, **kwargs)
        self.identities = identities

    def authenticate(self, req: SignedRequest) -> AuthResult:
        result = super().authenticate(req)
        if result.access_key is not None and result.session is None:  # temporary credentials have no row
            self.identities.note_used(result.access_key)
        return result

    def authenticate_query(self, req: SignedRequest, service: str, payload_sha256: str) -> AuthResult:
        result = super().authenticate_query(req, service, payload_sha256)
        if result.access_key is not None:
            self.identities.note_used(result.access_key)
        return result

    def authenticate_form(self, fields: Mapping[str, str]) -> AuthResult:
        result = super().authenticate_form(fields)
        if result.access_key is not None:
            self.identities.note_used(result.access_key)
        return result


def _ns(ns: int | None) -> str | None:
    return iso8601(ns) if ns is not None else None


def _user_json(u: UserRecord) -> dict[str, Any]:
    return {"name": u.name, "user_id": u.user_id, "enabled": u.enabled, "tags": u.tags, "created": _ns(u.created_ns)}


def _key_json(k: AccessKeyInfo) -> dict[str, Any]:
    return {
        "access_key_id": k.access_key_id,
        "user": k.user_name,
        "kind": k.kind,
        "status": k.status,
        "created": _ns(k.created_ns),
        "last_used": _ns(k.last_used_ns),
        "expires": _ns(k.expires_ns),
        "policy": k.policy,
        "name": k.name,
    }


def _reply(status: int, doc: dict[str, Any] | None = None) -> tuple[int, bytes]:
    return status, b"" if doc is None else json.dumps(doc).encode()


async def _key_owner_arn(ids: IdentityService, access_key_id: str) -> str:
    """The ARN a key-id request is authorized on: its user's (the root's for a root key); for
    an unknown key, every user's, so a refusal does not tell whether the key exists."""
    try:
        return user_arn((await ids.get_access_key(access_key_id)).user_name)
    except e.NoSuchEntity:
        return f"arn:aws:iam::{ACCOUNT_ID}:user/*"


async def identity_request(
    ids: IdentityService, req: Request, authorize: Callable[[Check], Awaitable[None]]
) -> tuple[int, bytes]:
    """Answer one request to these paths (the route table sends them here): status, JSON body.
    ``authorize`` decides an "entry" endpoint's check (``ENDPOINTS``) through the Authorizer."""
    key = req.key or ""
    if not (key in _PREFIXES or key.startswith(_prefixed())):
        raise e.NotImplementedOperation(f"No tierstore extension named '{key[:60]}'.")
    caller = req.auth.access_key if req.auth is not None else None
    area, _, name = key.removeprefix("admin/").partition("/")
    named = ENDPOINTS.get(endpoint(req.method, key))
    if area == "keys" and name and named is not None:  # a key id names the user: check it first
        await authorize(Check(named[0][0], await _key_owner_arn(ids, name)))
    m = req.method
    if area == "users" and "/" in name:
        return await _user_policies(ids, req, name)
    if area == "users":
        if not name:
            if m == "GET":
                return _reply(200, {"users": [_user_json(u) for u in await ids.list_users()]})
            if m != "POST":
                raise e.MethodNotAllowed()
            doc = await req.json_body()
            user_name, tags = doc.get("name"), doc.get("tags") or {}
            if not isinstance(user_name, str) or not isinstance(tags, dict):
                raise e.InvalidRequest('Expected {"name": str, "tags"?: {str: str}}.')
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
                raise e.InvalidRequest("Tags are strings.")
            await authorize(Check("iam:CreateUser", user_arn(user_name)))
            return _reply(201, _user_json(await ids.create_user(user_name, tags=tags)))
        if m == "GET":
            out = _user_json(await ids.get_user(name))
            out["keys"] = [_key_json(k) for k in await ids.list_access_keys(name)]
            out["groups"] = await ids.groups_for_user(name)
            return _reply(200, out)
        if m == "PUT":
            doc = await req.json_body()
            if not isinstance(doc.get("enabled"), bool):
                raise e.InvalidRequest('Expected {"enabled": bool}.')
            await ids.set_user_enabled(name, doc["enabled"])
            return _reply(200, _user_json(await ids.get_user(name)))
        if m == "DELETE":
            await ids.delete_user(name)
            return _reply(204)
        raise e.MethodNotAllowed()
    if not name:
        if m == "GET":
            user = req.query.get("user")
            await authorize(Check("iam:ListAccessKeys", user_arn(user)))
            return _reply(200, {"keys": [_key_json(k) for k in await ids.list_access_keys(user or None)]})
        if m != "POST":
            raise e.MethodNotAllowed()
        doc = await req.json_body()
        user, policy, expires_s, label = doc.get("user"), doc.get("policy"), doc.get("expires_s"), doc.get("name", "")
        if (
            not isinstance(user, str)
            or not isinstance(policy, (str, type(None)))
            or not isinstance(expires_s, (int, float, type(None)))
            or isinstance(expires_s, bool)
            or not isinstance(label, str)
        ):
            raise e.InvalidRequest('Expected {"user": str, "service"?: bool, "policy"?: str, "expires_s"?: number}.')
        await authorize(Check("iam:CreateAccessKey", user_arn(user)))
        if doc.get("service"):
            expires_ns = int((time.time() + expires_s) * 1e9) if expires_s is not None else None
            new = await ids.create_service_account(
                user, policy=policy, expires_ns=expires_ns, name=label, caller=caller
            )
        else:
            if policy is not None or expires_s is not None:
                raise e.InvalidRequest("Only a service account has a policy or an expiry.")
            new = await ids.create_access_key(user, caller=caller)
        return _reply(201, {**_key_json(new.info), "secret_key": new.secret_key})
    if m == "PUT":
        doc = await req.json_body()
        if doc.get("status") not in ("Active", "Inactive"):
            raise e.InvalidRequest('Expected {"status": "Active" | "Inactive"}.')
        await ids.set_access_key_status(name, active=doc["status"] == "Active", caller=caller)
        return _reply(200, _key_json(await ids.get_access_key(name)))
    if m == "DELETE":
        await ids.delete_access_key(name, caller=caller)
        return _reply(204)
    if m == "GET":
        return _reply(200, _key_json(await ids.get_access_key(name)))
    raise e.MethodNotAllowed()


async def _user_policies(ids: IdentityService, req: Request, path: str) -> tuple[int, bytes]:
    """``users/NAME/policies[/POLICY]``: a user's inline policies."""
    user, sub, policy = [*path.split("/", 2), ""][:3]
    if sub != "policies" or "/" in policy:
        raise e.NotImplementedOperation("No tierstore extension by that name.")
    await ids.get_user(user)  # NoSuchEntity first
    m = req.method
    if not policy:
        if m != "GET":
            raise e.MethodNotAllowed()
        return _reply(200, {"policies": await ids.inline_policies("user", user)})
    if m == "GET":
        document = (await ids.inline_policies("user", user)).get(policy)
        if document is None:
            raise e.NoSuchEntity(f"The user policy with name {policy} cannot be found.", resource=policy)
        return _reply(200, {"name": policy, "document": document})
    if m == "PUT":
        raw = await req.read_small(_MAX_POLICY_BODY, json_body=True)
        try:
            document = raw.decode()
        except UnicodeDecodeError:
            raise e.MalformedPolicyDocument("The policy document is not UTF-8 text.") from None
        await ids.put_inline_policy("user", user, policy, document)
        return _reply(200, {"name": policy, "document": document})
    if m == "DELETE":
        await ids.delete_inline_policy("user", user, policy)
        return _reply(204)
    raise e.MethodNotAllowed()


def _prefixed() -> tuple[str, ...]:
    return tuple(p + "/" for p in _PREFIXES)
