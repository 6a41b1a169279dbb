"""``/_tierstore/admin/users`` and ``/_tierstore/admin/keys``: a minimal JSON face of the
identity store for the root, until the IAM query API exists (docs/identities.md).

Only the root credentials may call it (``AccessDenied`` otherwise). A new key's secret is in
the answer of the call that creates it and nowhere else, ever.

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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tierstore import errors as e
from tierstore.api._auth import Authenticator, AuthRequest, AuthResult
from tierstore.api._xml import iso8601
from tierstore.engine import AccessKeyInfo, IdentityService, UserRecord

if TYPE_CHECKING:
    from tierstore.api._request import Request

__all__ = ["IdentityAuthenticator", "identity_request"]

_PREFIXES = ("admin/users", "admin/keys")
_MAX_POLICY_BODY = 64 * 1024  # the identity policy limit is 6,144 characters (whitespace not counted)


class IdentityAuthenticator(Authenticator):
    """The authenticator over an ``IdentityService``: the root keys and every active catalog key
    authenticate; a key that did is noted as used (written at most once a minute)."""

    def __init__(self, identities: IdentityService, **kwargs: Any) -> None:
        super().__init__(identities.secret_for, **kwargs)
        self.identities = identities

    def authenticate(self, req: AuthRequest) -> AuthResult:
        result = super().authenticate(req)
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


async def identity_request(ids: IdentityService, req: Request) -> tuple[int, bytes]:
    """Answer one request to these paths (the route table sends them here): status, JSON body."""
    key = req.key or ""
    if not (key in _PREFIXES or key.startswith(_prefixed())):
        raise e.NotImplementedOperation(f"No tierstore extension named '{key[:60]}'.")
    caller = req.auth.access_key if req.auth is not None else None
    if caller is None or not ids.is_root_key(caller):
        raise e.AccessDenied("Only the root credentials may manage identities.")
    area, _, name = key.removeprefix("admin/").partition("/")
    m = req.method
    if area == "users" and "/" in name:
        return await _user_policies(ids, req, name)
    if area == "users":
        if not name:
            if m == "GET":
                return _reply(200, {"users": [_user_json(u) for u in ids.list_users()]})
            if m != "POST":
                raise e.MethodNotAllowed()
            doc = await req.json_body()
            user_name, tags = doc.get("name"), doc.get("tags") or {}
            if not isinstance(user_name, str) or not isinstance(tags, dict):
                raise e.InvalidRequest('Expected {"name": str, "tags"?: {str: str}}.')
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
                raise e.InvalidRequest("Tags are strings.")
            return _reply(201, _user_json(await ids.create_user(user_name, tags=tags)))
        if m == "GET":
            out = _user_json(ids.get_user(name))
            out["keys"] = [_key_json(k) for k in ids.list_access_keys(name)]
            out["groups"] = ids.groups_for_user(name)
            return _reply(200, out)
        if m == "PUT":
            doc = await req.json_body()
            if not isinstance(doc.get("enabled"), bool):
                raise e.InvalidRequest('Expected {"enabled": bool}.')
            await ids.set_user_enabled(name, doc["enabled"])
            return _reply(200, _user_json(ids.get_user(name)))
        if m == "DELETE":
            await ids.delete_user(name)
            return _reply(204)
        raise e.MethodNotAllowed()
    if not name:
        if m == "GET":
            user = req.query.get("user")
            return _reply(200, {"keys": [_key_json(k) for k in ids.list_access_keys(user or None)]})
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
        return _reply(200, _key_json(ids.get_access_key(name)))
    if m == "DELETE":
        await ids.delete_access_key(name, caller=caller)
        return _reply(204)
    if m == "GET":
        return _reply(200, _key_json(ids.get_access_key(name)))
    raise e.MethodNotAllowed()


async def _user_policies(ids: IdentityService, req: Request, path: str) -> tuple[int, bytes]:
    """``users/NAME/policies[/POLICY]``: a user's inline policies."""
    user, sub, policy = [*path.split("/", 2), ""][:3]
    if sub != "policies" or "/" in policy:
        raise e.NotImplementedOperation("No tierstore extension by that name.")
    ids.get_user(user)  # NoSuchEntity first
    m = req.method
    if not policy:
        if m != "GET":
            raise e.MethodNotAllowed()
        return _reply(200, {"policies": ids.inline_policies("user", user)})
    if m == "GET":
        document = ids.inline_policies("user", user).get(policy)
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
