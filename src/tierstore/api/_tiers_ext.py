"""``/_tierstore/admin/tiers``: the JSON face of the tier registry (``engine.TierService``;
docs/tiers.md "Tiers").

Each endpoint's route name is the IAM action it needs, checked by the dispatcher on ``*`` —
a transition on the object it moves, ``arn:aws:s3:::BUCKET/KEY`` (``ENDPOINTS``; the route
table authorizes it once, before this module runs). The root may do
everything; a user needs the action in a policy. No answer carries a tier's secret key: a tier
shows its ``access_key_id`` and whether keys are set (``keys_set``).

- ``GET    /_tierstore/admin/tiers``              -> ``{"tiers": [tier, ...]}``          (tierstore:ListTiers)
- ``POST   /_tierstore/admin/tiers``              -> 201 ``tier``                         (tierstore:CreateTier)
  body ``{"name", "endpoint", "bucket", "prefix"?, "region"?, "access_key_id"?, "secret_key"?,
  "restore_required"?, "allow_private"?}``
- ``DELETE /_tierstore/admin/tiers/NAME``         -> 204 (409 ``TierInUse`` while it holds data)
  (tierstore:DeleteTier)
- ``GET    /_tierstore/admin/tiers/status``       -> ``{"tiers": [status, ...]}``        (tierstore:GetTierStatus)
- ``GET    /_tierstore/admin/tiers/NAME/status``  -> ``{"tiers": [status]}``             (tierstore:GetTierStatus)
- ``POST   /_tierstore/admin/tiers/NAME/transition?bucket=B&key=K[&versionId=V]`` -> ``{"moved": bool, "version_id"}``
  (tierstore:TransitionObject on ``arn:aws:s3:::B/K``): moves that version (default: the current
  one) to the tier now — from the local drives or another tier —, as the lifecycle mover does
  (``ObjectService.transition``; ``moved`` false: nothing to do)
- ``POST   /_tierstore/admin/tiers/NAME/transitions`` body ``{"objects": [{"bucket", "key",
  "version_id"?}, ...]}`` (at most 1,000) -> ``{"results": [{"bucket", "key", "version_id",
  "moved"} or {"bucket", "key", "error": {"code", "message"}}, ...]}`` in the body's order: many
  transitions in one request, as the lifecycle worker moves a page (``ObjectService.transition_many``:
  their commits in one catalog transaction). Route ``tierstore:TransitionObjects``, which is no IAM
  action: the handler authorizes each entry as its own ``tierstore:TransitionObject`` on
  ``arn:aws:s3:::B/K`` before looking it up (a denied one is an ``AccessDenied`` entry), as
  DeleteObjects does its keys

A ``tier`` is ``{"name", "endpoint", "bucket", "prefix", "region", "restore_required",
"allow_private", "access_key_id", "keys_set", "created"}``; a ``status`` is ``{"name", "blobs",
"bytes", "outbox", "uploads", "backlog": {"total", "due", "pending", "outbox"}, "moved_bytes",
"moved_objects", "errors", "last_error", "last_error_at"}`` (``TierStatus.to_dict``; the movers'
progress of every process, from the catalog; ``last_error_at`` ISO 8601 or null). Tier names
are uppercase, so ``status`` never names a tier.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tierstore import errors as e
from tierstore.api._xml import iso8601
from tierstore.engine import TierInfo, TierSpec, TierStatus

if TYPE_CHECKING:
    from tierstore.api._request import Request
    from tierstore.engine import ObjectService

__all__ = ["ENDPOINTS", "UNROUTED", "endpoint", "tier_request"]

UNROUTED = "tierstore:AdminTiers"  # a method or path no endpoint has: needs tierstore:Admin
_TIERS = "admin/tiers"
ENDPOINTS = (
    "tierstore:ListTiers",
    "tierstore:CreateTier",
    "tierstore:DeleteTier",
    "tierstore:GetTierStatus",
    "tierstore:TransitionObject",
    "tierstore:TransitionObjects",
)
TRANSITION_MANY = "tierstore:TransitionObjects"  # the batch's route: authorized per entry, by the handler
MAX_TRANSITIONS = 1000
_STRINGS = ("name", "endpoint", "bucket", "prefix", "region", "access_key_id", "secret_key")
_FLAGS = ("restore_required", "allow_private")
_MAX_BODY = 16 * 1024
_MAX_BATCH_BODY = 1024 * 1024


def _parts(key: str) -> list[str] | None:
    """The path below ``admin/tiers`` (``[]``, ``[NAME]``, ``[NAME, "status"]``); None when not there."""
    if key == _TIERS:
        return []
    if not key.startswith(_TIERS + "/"):
        return None
    return key[len(_TIERS) + 1 :].split("/")


def endpoint(method: str, key: str) -> str:
    """The route name of ``METHOD /_tierstore/<key>`` (``key``: ``admin/tiers...``); ``UNROUTED``
    for what no endpoint answers (the handler refuses it)."""
    parts = _parts(key)
    if parts == []:
        return {"GET": "tierstore:ListTiers", "POST": "tierstore:CreateTier"}.get(method, UNROUTED)
    if parts is None or not all(parts):
        return UNROUTED
    if parts == ["status"] or (len(parts) == 2 and parts[1] == "status"):
        return "tierstore:GetTierStatus" if method == "GET" else UNROUTED
    if len(parts) == 2 and parts[1] == "transition":
        return "tierstore:TransitionObject" if method == "POST" else UNROUTED
    if len(parts) == 2 and parts[1] == "transitions":
        return TRANSITION_MANY if method == "POST" else UNROUTED
    if len(parts) == 1 and method == "DELETE":
        return "tierstore:DeleteTier"
    return UNROUTED


def _tier_json(t: TierInfo) -> dict[str, Any]:
    doc = t.to_dict()
    doc["created"] = iso8601(doc.pop("created_ns"))
    return doc


def _status_json(s: TierStatus) -> dict[str, Any]:
    doc = s.to_dict()
    at = doc.pop("last_error_ns")
    doc["last_error_at"] = iso8601(at) if at is not None else None
    return doc


def _spec(doc: dict[str, Any]) -> TierSpec:
    unknown = sorted(set(doc) - set(_STRINGS) - set(_FLAGS))
    if unknown:
        raise e.InvalidRequest(f"Unknown field {unknown[0][:40]!r} in the tier.")
    for name in _STRINGS:
        if name in doc and doc[name] is not None and not isinstance(doc[name], str):
            raise e.InvalidRequest(f'The tier field "{name}" must be a string.')
    for name in _FLAGS:
        if not isinstance(doc.get(name, False), bool):
            raise e.InvalidRequest(f'The tier field "{name}" must be true or false.')
    if not doc.get("name") or not doc.get("endpoint") or not doc.get("bucket"):
        raise e.InvalidRequest('A tier needs "name", "endpoint" and "bucket".')
    return TierSpec(
        name=doc["name"],
        endpoint=doc["endpoint"],
        bucket=doc["bucket"],
        prefix=doc.get("prefix") or "",
        region=doc.get("region") or "us-east-1",
        access_key_id=doc.get("access_key_id"),
        secret_key=doc.get("secret_key"),
        restore_required=doc.get("restore_required", False),
        allow_private=doc.get("allow_private", False),
    )


async def tier_request(
    service: ObjectService, req: Request, authorize_object: Callable[[str, str], Awaitable[None]]
) -> tuple[int, bytes]:
    """Answer one request to these paths (the route table sends them here, authorized): status
    and JSON body (empty for 204). ``authorize_object(bucket, key)``: raises AccessDenied unless
    the caller may transition that object (a batch's entries)."""
    tiers = service.tiers
    key = req.key or ""
    route = endpoint(req.method, key)
    if route == UNROUTED:
        if _parts(key) is None:
            raise e.NotImplementedOperation(f"No tierstore extension named '{key[:60]}'.")
        raise e.MethodNotAllowed()
    parts = _parts(key) or []
    if route == "tierstore:ListTiers":
        return 200, json.dumps({"tiers": [_tier_json(t) for t in await tiers.list()]}).encode()
    if route == "tierstore:GetTierStatus":
        statuses = await tiers.status(parts[0] if len(parts) == 2 else None)
        return 200, json.dumps({"tiers": [_status_json(s) for s in statuses]}).encode()
    if route == "tierstore:DeleteTier":
        await tiers.remove(parts[0])
        service.tier_stores.forget(parts[0])
        return 204, b""
    if route == "tierstore:TransitionObject":
        return await _transition(service, parts[0], req)
    if route == TRANSITION_MANY:
        return await _transition_many(service, parts[0], req, authorize_object)
    spec = _spec(await req.json_body(_MAX_BODY))
    return 201, json.dumps(_tier_json(await tiers.add(spec))).encode()


async def _transition(service: ObjectService, tier: str, req: Request) -> tuple[int, bytes]:
    bucket, key = req.query.get("bucket"), req.query.get("key")
    if not bucket or not key:
        raise e.InvalidRequest('A transition needs the "bucket" and "key" query parameters.')
    tiers = service.tiers
    await tiers.get(tier)  # NoSuchTier (404) for a name that is none
    version_id = (await service.version_record(bucket, key, req.query.get("versionId"))).meta.version_id
    moved = await service.transition(bucket, key, version_id, tier)
    return 200, json.dumps({"moved": moved, "version_id": version_id}).encode()


def _entries(doc: Any) -> list[tuple[str, str, str | None]]:
    """A batch body's ``(bucket, key, version_id)`` entries (InvalidRequest when malformed)."""
    objs = doc.get("objects") if isinstance(doc, dict) and set(doc) == {"objects"} else None
    if not isinstance(objs, list) or not objs:
        raise e.InvalidRequest('A batch of transitions is {"objects": [{"bucket", "key", "version_id"?}, ...]}.')
    if len(objs) > MAX_TRANSITIONS:
        raise e.InvalidRequest(f"At most {MAX_TRANSITIONS} transitions in one request.")
    out = []
    for o in objs:
        if not isinstance(o, dict) or set(o) - {"bucket", "key", "version_id"}:
            raise e.InvalidRequest('Each transition is {"bucket", "key", "version_id"?}.')
        bucket, key, version_id = o.get("bucket"), o.get("key"), o.get("version_id")
        if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
            raise e.InvalidRequest('Each transition needs "bucket" and "key" (strings).')
        if version_id is not None and not isinstance(version_id, str):
            raise e.InvalidRequest('The "version_id" of a transition must be a string.')
        out.append((bucket, key, version_id))
    return out


async def _transition_many(
    service: ObjectService, tier: str, req: Request, authorize_object: Callable[[str, str], Awaitable[None]]
) -> tuple[int, bytes]:
    entries = _entries(await req.json_body(_MAX_BATCH_BODY))
    # Every entry authorized before anything is looked up (DeleteObjects' rule): a caller denied
    # them all learns nothing, not even whether the tier exists.
    denied: list[e.TierstoreError | None] = []
    for bucket, key, _ in entries:
        try:
            await authorize_object(bucket, key)
            denied.append(None)
        except e.AccessDenied as exc:
            denied.append(exc)
    if any(d is None for d in denied):
        await service.tiers.get(tier)  # NoSuchTier (404) for a name that is none
    results: list[dict[str, Any]] = []
    todo: list[tuple[int, tuple[str, str, str]]] = []  # (index in results, the version to move)
    for (bucket, key, version_id), refused in zip(entries, denied, strict=True):
        entry: dict[str, Any] = {"bucket": bucket, "key": key}
        try:
            if refused is not None:
                raise refused
            found = (await service.version_record(bucket, key, version_id)).meta.version_id
        except e.TierstoreError as exc:
            entry["error"] = {"code": exc.code, "message": exc.message}
        else:
            entry["version_id"] = found
            todo.append((len(results), (bucket, key, found)))
        results.append(entry)
    moved = await service.transition_many(tier, [v for _, v in todo]) if todo else []
    for (i, _), outcome in zip(todo, moved, strict=True):
        if isinstance(outcome, e.TierstoreError):
            results[i]["error"] = {"code": outcome.code, "message": outcome.message}
        elif isinstance(outcome, Exception):
            raise outcome  # not a domain error: the dispatcher's 500
        else:
            results[i]["moved"] = outcome
    return 200, json.dumps({"results": results}).encode()
