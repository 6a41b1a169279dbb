"""``/_tierstore/admin/kms/keys``: the JSON face of the built-in key service
(``crypto.LocalKeyStore``; docs/security.md "Key service").

Each endpoint has its own route name and the AWS KMS action it needs (``ENDPOINTS``). Listing and
creating are checked by the dispatcher on ``*`` (as in AWS, whose ``kms:CreateKey`` and
``kms:ListKeys`` have no resource); an endpoint whose path names a key is checked by the handler
on that key's ARN (``arn:aws:kms:REGION:ACCOUNT:key/ID``), through the same ``Authorizer``, before
it looks the key up, so a refusal tells nothing about whether the key exists. The root may do
everything; a user needs the actions in a policy. No answer ever carries key material.

- ``GET  /_tierstore/admin/kms/keys``              -> ``{"keys": [key, ...]}``         (kms:ListKeys)
- ``POST /_tierstore/admin/kms/keys``              -> 201 ``key``; body ``{"key_id", "description"?}``
  (kms:CreateKey; ``KMS.AlreadyExistsException`` when taken)
- ``GET  /_tierstore/admin/kms/keys/ID``           -> ``key``                           (kms:DescribeKey)
- ``POST /_tierstore/admin/kms/keys/ID/enable``    -> ``key``                           (kms:EnableKey)
- ``POST /_tierstore/admin/kms/keys/ID/disable``   -> ``key``                           (kms:DisableKey)
- ``POST /_tierstore/admin/kms/keys/ID/rotate``    -> ``key`` with one more version     (kms:RotateKeyOnDemand)
- ``POST /_tierstore/admin/kms/keys/ID/rewrap``    -> one page of the re-wrap walk       (kms:ReEncryptFrom)
  body ``{"after"?: cursor, "limit"?: int}``; answer ``engine.RewrapPage``: counts and ``next``
  (the cursor to pass on; null when every version under the key is at its newest version)

A ``key`` is ``{"key_id", "arn", "enabled", "state": "Enabled" | "Disabled", "created", "versions",
"rotated", "description"}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tierstore import errors as e
from tierstore.api._authorize import Check
from tierstore.api._iam_authorizer import ACCOUNT_ID
from tierstore.api._xml import iso8601
from tierstore.crypto import KeyStatus, LocalKeyStore, kms_key_arn

if TYPE_CHECKING:
    from tierstore.api._request import Request

__all__ = ["ENDPOINTS", "UNROUTED", "endpoint", "kms_request"]

UNROUTED = "tierstore:AdminKms"  # a method or path no endpoint has: needs tierstore:Admin
_KEYS = "admin/kms/keys"
# Route name -> (the KMS action it needs, where its resource is): "any" ("*": the dispatcher
# checks it) or "key" (the key in the path: the handler checks it first).
ENDPOINTS: dict[str, tuple[str, str]] = {
    "tierstore:AdminKmsListKeys": ("kms:ListKeys", "any"),
    "tierstore:AdminKmsCreateKey": ("kms:CreateKey", "any"),
    "tierstore:AdminKmsDescribeKey": ("kms:DescribeKey", "key"),
    "tierstore:AdminKmsEnableKey": ("kms:EnableKey", "key"),
    "tierstore:AdminKmsDisableKey": ("kms:DisableKey", "key"),
    "tierstore:AdminKmsRotateKey": ("kms:RotateKeyOnDemand", "key"),
    "tierstore:AdminKmsRewrapKey": ("kms:ReEncryptFrom", "key"),  # AWS: ReEncrypt needs From (and To: the same key)
}
_VERBS = {"enable": "EnableKey", "disable": "DisableKey", "rotate": "RotateKey", "rewrap": "RewrapKey"}
_MAX_DESCRIPTION = 8192  # AWS KMS's limit


def _parts(key: str) -> list[str] | None:
    """The path below ``admin/kms/keys`` (``[]``, ``[ID]``, ``[ID, VERB]``); None when it is not there."""
    if key == _KEYS:
        return []
    if not key.startswith(_KEYS + "/"):
        return None
    return key[len(_KEYS) + 1 :].split("/")


def endpoint(method: str, key: str) -> str:
    """The route name of ``METHOD /_tierstore/<key>`` (``key``: ``admin/kms/...``); ``UNROUTED``
    for what no endpoint answers (the handler refuses it)."""
    parts = _parts(key)
    found: str | None = None
    if parts == []:
        found = {"GET": "ListKeys", "POST": "CreateKey"}.get(method)
    elif parts is not None and all(parts) and len(parts) == 1:
        found = "DescribeKey" if method == "GET" else None
    elif parts is not None and all(parts) and len(parts) == 2 and method == "POST":
        found = _VERBS.get(parts[1])
    return f"tierstore:AdminKms{found}" if found else UNROUTED


def _key_json(s: KeyStatus, region: str) -> dict[str, Any]:
    return {
        "key_id": s.key_id,
        "arn": kms_key_arn(s.key_id, region, ACCOUNT_ID),
        "enabled": s.enabled,
        "state": "Enabled" if s.enabled else "Disabled",
        "created": iso8601(s.created_ns),
        "versions": s.versions,
        "rotated": iso8601(s.rotated_ns) if s.rotated_ns is not None else None,
        "description": s.description,
    }


Rewrap = Callable[[str, "str | None", int], Awaitable[dict[str, Any]]]
"""(key id, cursor, page size) -> one page of the re-wrap walk (``engine.rewrap_page``)."""


async def kms_request(
    keys: LocalKeyStore,
    req: Request,
    region: str,
    authorize: Callable[[Check], Awaitable[None]],
    rewrap: Rewrap | None = None,
) -> tuple[int, bytes]:
    """Answer one request to these paths (the route table sends them here): status, JSON body.
    ``authorize`` decides a "key" endpoint's check (``ENDPOINTS``) through the Authorizer;
    ``rewrap`` runs the re-wrap walk (None: this server cannot)."""
    route = endpoint(req.method, req.key or "")
    named = ENDPOINTS.get(route)
    if named is None:
        if _parts(req.key or "") is None:
            raise e.NotImplementedOperation(f"No tierstore extension named '{(req.key or '')[:60]}'.")
        raise e.MethodNotAllowed()
    action, on = named
    if on == "key":
        key_id = (req.key or "").split("/")[3]
        await authorize(Check(action, kms_key_arn(key_id, region, ACCOUNT_ID)))  # before anything is looked up
        if route == "tierstore:AdminKmsRewrapKey":
            return 200, json.dumps(await _rewrap(req, key_id, rewrap)).encode()
        if route == "tierstore:AdminKmsDescribeKey":
            status = await keys.describe(key_id)
        elif route == "tierstore:AdminKmsRotateKey":
            status = await keys.rotate(key_id)
        else:
            status = await keys.set_enabled(key_id, route == "tierstore:AdminKmsEnableKey")
        return 200, json.dumps(_key_json(status, region)).encode()
    if route == "tierstore:AdminKmsListKeys":
        return 200, json.dumps({"keys": [_key_json(s, region) for s in await keys.list_keys()]}).encode()
    doc = await req.json_body()
    new_id, description = doc.get("key_id"), doc.get("description", "")
    if not isinstance(new_id, str) or not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
        raise e.InvalidRequest(f'Expected {{"key_id": str, "description"?: str of at most {_MAX_DESCRIPTION}}}.')
    return 201, json.dumps(_key_json(await keys.create_key(new_id, description), region)).encode()


async def _rewrap(req: Request, key_id: str, rewrap: Rewrap | None) -> dict[str, Any]:
    if rewrap is None:
        raise e.NotImplementedOperation("This server cannot re-wrap data keys.")
    doc = await req.json_body()
    after, limit = doc.get("after"), doc.get("limit", 200)
    if (after is not None and not isinstance(after, str)) or not isinstance(limit, int) or isinstance(limit, bool):
        raise e.InvalidRequest('Expected {"after"?: str, "limit"?: int}.')
    return await rewrap(key_id, after, limit)
