"""Page 1, Buckets: every bucket with its counts and size, create and delete, and each bucket's
settings (versioning, object lock, lifecycle, default encryption, policy, CORS), each read and
written by its own S3 call as the session's principal."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from tierstore.console._app import Refused, Reply, Web, console_url, route
from tierstore.console._dispatch import S3Error

__all__: list[str] = []

# The error codes that mean "this setting is not set" (AWS's, for each GET).
_NOT_SET = frozenset({
    "NoSuchLifecycleConfiguration", "ServerSideEncryptionConfigurationNotFoundError", "NoSuchBucketPolicy",
    "NoSuchCORSConfiguration", "ObjectLockConfigurationNotFoundError",
})  # fmt: skip


@route("GET", "buckets")
async def buckets(web: Web) -> Reply:
    answer, usage = await asyncio.gather(web.s3("list_buckets"), _usage(web))
    rows = []
    for b in answer.get("Buckets", []):
        rows.append({"name": b["Name"], "created": b.get("CreationDate"), "usage": usage.get(b["Name"])})
    return web.render(
        "buckets.html", page="buckets", title="Buckets", buckets=rows, ok=web.query.get("ok", ""),
    )  # fmt: skip


async def _usage(web: Web) -> dict[str, dict[str, Any]]:
    """Each bucket's counts and bytes (``GET /_tierstore/usage``), for the buckets this
    principal may list; nothing when it may not ask."""
    try:
        doc = await web.extension("GET", "/_tierstore/usage")
    except S3Error:
        return {}
    return {row["bucket"]: row for row in doc.get("buckets", [])}


@route("POST", "buckets")
async def create_bucket(web: Web) -> Reply:
    form = await web.form()
    name = form.get("name", "").strip()
    params: dict[str, Any] = {"Bucket": name}
    if form.get("object_lock") == "on":
        params["ObjectLockEnabledForBucket"] = True
    await web.s3("create_bucket", **params)
    if form.get("versioning") == "on" and not params.get("ObjectLockEnabledForBucket"):
        await web.s3("put_bucket_versioning", Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return web.redirect(console_url("buckets", ok=f"Created bucket {name}."))


@route("GET", "buckets/{bucket}")
async def settings(web: Web) -> Reply:
    bucket = web.params["bucket"]
    get = _getter(web, bucket)
    versioning, lock, lifecycle, encryption, policy, cors = await asyncio.gather(
        get("get_bucket_versioning"),
        get("get_object_lock_configuration"),
        get("get_bucket_lifecycle_configuration"),
        get("get_bucket_encryption"),
        get("get_bucket_policy"),
        get("get_bucket_cors"),
    )
    if isinstance(versioning, S3Error) and versioning.code == "NoSuchBucket":
        raise versioning
    values = {
        "versioning": _value(versioning, lambda v: v.get("Status") or "Never enabled"),
        "lock": _value(lock, lambda v: v.get("ObjectLockConfiguration", {})),
        "lifecycle": _value(lifecycle, lambda v: _pretty({"Rules": v.get("Rules", [])})),
        "encryption": _value(encryption, _encryption),
        "policy": _value(policy, lambda v: _pretty(json.loads(v.get("Policy", "{}")))),
        "cors": _value(cors, lambda v: _pretty({"CORSRules": v.get("CORSRules", [])})),
    }
    return web.render(
        "bucket.html", page="buckets", title=bucket, bucket=bucket, s=values, ok=web.query.get("ok", ""),
    )  # fmt: skip


def _getter(web: Web, bucket: str) -> Callable[[str], Awaitable[dict[str, Any] | S3Error]]:
    async def get(operation: str) -> dict[str, Any] | S3Error:
        try:
            return await web.s3(operation, Bucket=bucket)
        except S3Error as exc:
            return exc

    return get


def _value(answer: dict[str, Any] | S3Error, shape: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """A setting for the template: ``{"value"}``, ``{"unset": True}``, or ``{"error"}`` (e.g.
    AccessDenied: this principal may not read it)."""
    if isinstance(answer, S3Error):
        if answer.code in _NOT_SET:
            return {"unset": True, "value": None}
        return {"error": f"{answer.code}: {answer.message}", "value": None}
    return {"value": shape(answer)}


def _encryption(v: dict[str, Any]) -> dict[str, str]:
    rules = v.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    return {"algorithm": default.get("SSEAlgorithm", ""), "key": default.get("KMSMasterKeyID", "")}


def _pretty(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=str)


def _back(bucket: str, ok: str) -> str:
    return console_url(f"buckets/{bucket}", ok=ok)


def _json_field(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Refused(400, f"The {what} is not valid JSON: {exc}") from None


@route("POST", "buckets/{bucket}/delete")
async def delete_bucket(web: Web) -> Reply:
    bucket = web.params["bucket"]
    await web.s3("delete_bucket", Bucket=bucket)
    return web.redirect(console_url("buckets", ok=f"Deleted bucket {bucket}."))


@route("POST", "buckets/{bucket}/versioning")
async def versioning(web: Web) -> Reply:
    bucket = web.params["bucket"]
    status = (await web.form()).get("status", "")
    if status not in ("Enabled", "Suspended"):
        raise Refused(400, "Versioning is Enabled or Suspended.")
    await web.s3("put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": status})
    return web.redirect(_back(bucket, f"Versioning {status.lower()}."))


@route("POST", "buckets/{bucket}/object-lock")
async def object_lock(web: Web) -> Reply:
    bucket = web.params["bucket"]
    form = await web.form()
    config: dict[str, Any] = {"ObjectLockEnabled": "Enabled"}
    mode, days = form.get("mode", ""), form.get("days", "").strip()
    if mode:
        if mode not in ("GOVERNANCE", "COMPLIANCE") or not days.isdigit():
            raise Refused(400, "A default retention needs a mode (GOVERNANCE or COMPLIANCE) and a number of days.")
        config["Rule"] = {"DefaultRetention": {"Mode": mode, "Days": int(days)}}
    await web.s3("put_object_lock_configuration", Bucket=bucket, ObjectLockConfiguration=config)
    return web.redirect(_back(bucket, "Object lock saved."))


@route("POST", "buckets/{bucket}/encryption")
async def encryption(web: Web) -> Reply:
    bucket = web.params["bucket"]
    form = await web.form()
    algorithm, key = form.get("algorithm", ""), form.get("key", "").strip()
    if not algorithm:
        await web.s3("delete_bucket_encryption", Bucket=bucket)
        return web.redirect(_back(bucket, "Default encryption removed."))
    default: dict[str, str] = {"SSEAlgorithm": algorithm}
    if algorithm == "aws:kms" and key:
        default["KMSMasterKeyID"] = key
    config = {"Rules": [{"ApplyServerSideEncryptionByDefault": default}]}
    await web.s3("put_bucket_encryption", Bucket=bucket, ServerSideEncryptionConfiguration=config)
    return web.redirect(_back(bucket, "Default encryption saved."))


# The settings edited as one JSON document: what (saved/removed), the noun of its parse error,
# the put call and its parameter, the delete call. An empty document removes the setting; a policy
# goes to S3 as its text (the server validates it), the others as boto3's shapes.
_DOCUMENTS = {
    "lifecycle": ("Lifecycle rules", "lifecycle configuration", "put_bucket_lifecycle_configuration",
                  "LifecycleConfiguration", "delete_bucket_lifecycle"),
    "policy": ("Bucket policy", "policy", "put_bucket_policy", "Policy", "delete_bucket_policy"),
    "cors": ("CORS rules", "CORS configuration", "put_bucket_cors", "CORSConfiguration", "delete_bucket_cors"),
}  # fmt: skip


async def _document(web: Web, setting: str) -> Reply:
    bucket = web.params["bucket"]
    what, noun, put, field, delete = _DOCUMENTS[setting]
    text = (await web.form()).get("document", "").strip()
    if not text:
        await web.s3(delete, Bucket=bucket)
        return web.redirect(_back(bucket, f"{what} removed."))
    doc = _json_field(text, noun)
    await web.s3(put, Bucket=bucket, **{field: text if setting == "policy" else doc})
    return web.redirect(_back(bucket, f"{what} saved."))


for _setting in _DOCUMENTS:
    route("POST", f"buckets/{{bucket}}/{_setting}")(functools.partial(_document, setting=_setting))
