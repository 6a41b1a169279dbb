"""The route table: the one place that names a request (its S3 API action).

``route`` is a pure function of what the dispatcher looks at — method, bucket, key, query
parameters, and the one header that splits a branch (``x-amz-copy-source``) — and answers the
action the dispatch in ``_app`` runs (``PutObject``, ``UploadPart``, ``tierstore:Batch``, ...),
with AWS's names. ``S3App`` calls it once per request and keeps the answer on the request
(``req.action``): the access log, the metrics and (issue 15) authorization use that name.

Requests the dispatcher refuses still get a name: a known S3 operation we do not implement gets
its AWS name with ``implemented=False`` (answered 501 NotImplemented), anything else is
``UNKNOWN`` (405 MethodNotAllowed or 501). tests/api/test_routes.py checks every branch against
the table, and the dispatch against the table for real requests.

Health and metrics endpoints (``PROBES``) are named here too: an *unsigned* GET or HEAD of one of
their paths, path-style. A signed request to the same path is an ordinary S3 request, so buckets
named ``minio``, ``health`` or ``metrics`` keep working for every S3 client (docs/observability.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = [
    "EXTENSION_PREFIX",
    "METRICS_ACTIONS",
    "PROBES",
    "PROBE_ACTIONS",
    "SUBRESOURCES",
    "UNKNOWN",
    "Route",
    "is_signed",
    "route",
]

EXTENSION_PREFIX = "_tierstore"
UNKNOWN = "Unknown"

# Query parameters that select another operation (the same set as ``_app._SUBRESOURCES``; a
# test keeps them equal). A known one we lack answers 501; any other parameter is ignored.
SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "attributes",
        "cors",
        "delete",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "lifecycle",
        "location",
        "logging",
        "metadataTable",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "renameObject",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "select-type",
        "session",
        "tagging",
        "torrent",
        "uploads",
        "versioning",
        "versions",
        "website",
    }
)

# Unauthenticated GET/HEAD endpoints, answered before authentication (path -> action).
PROBES: dict[str, str] = {
    "/minio/health/live": "tierstore:HealthLive",
    "/health/live": "tierstore:HealthLive",
    "/minio/health/ready": "tierstore:HealthReady",
    "/health/ready": "tierstore:HealthReady",
    "/minio/health/cluster": "tierstore:HealthCluster",
    "/minio/health/cluster/read": "tierstore:HealthClusterRead",
    "/metrics": "tierstore:Metrics",
    "/minio/v2/metrics/cluster": "tierstore:MinioClusterMetrics",
    "/minio/v2/metrics/node": "tierstore:MinioNodeMetrics",
    "/minio/v2/metrics/bucket": "tierstore:MinioBucketMetrics",
}
PROBE_ACTIONS = frozenset(PROBES.values())
METRICS_ACTIONS = frozenset(a for a in PROBE_ACTIONS if a.endswith("Metrics"))

# Query parameters that carry a presigned request's signature (SigV4 and SigV2).
_SIGNATURE_PARAMS = ("X-Amz-Signature", "X-Amz-Credential", "Signature", "AWSAccessKeyId")


class Route(NamedTuple):
    action: str
    implemented: bool = True


def _crud(name: str, *methods: str) -> dict[str, str]:
    verbs = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}
    return {m: f"{verbs[m]}{name}" for m in methods}


# Bucket subresources the dispatcher answers: subresource -> method -> action.
_BUCKET_OPS: dict[str, dict[str, str]] = {
    "location": {"GET": "GetBucketLocation"},
    "uploads": {"GET": "ListMultipartUploads"},
    "versioning": _crud("BucketVersioning", "GET", "PUT"),
    "versions": {"GET": "ListObjectVersions"},
    "delete": {"POST": "DeleteObjects"},
    "tagging": _crud("BucketTagging", "GET", "PUT", "DELETE"),
    "object-lock": _crud("ObjectLockConfiguration", "GET", "PUT"),
}
# Known S3 bucket operations we do not implement (501 NotImplemented), by their AWS names.
_BUCKET_UNIMPLEMENTED: dict[str, dict[str, str]] = {
    "acl": _crud("BucketAcl", "GET", "PUT"),
    "accelerate": _crud("BucketAccelerateConfiguration", "GET", "PUT"),
    "analytics": _crud("BucketAnalyticsConfiguration", "GET", "PUT", "DELETE"),
    "cors": _crud("BucketCors", "GET", "PUT", "DELETE"),
    "encryption": _crud("BucketEncryption", "GET", "PUT", "DELETE"),
    "intelligent-tiering": _crud("BucketIntelligentTieringConfiguration", "GET", "PUT", "DELETE"),
    "inventory": _crud("BucketInventoryConfiguration", "GET", "PUT", "DELETE"),
    "lifecycle": {**_crud("BucketLifecycleConfiguration", "GET", "PUT"), "DELETE": "DeleteBucketLifecycle"},
    "logging": _crud("BucketLogging", "GET", "PUT"),
    "metadataTable": {
        **_crud("BucketMetadataTableConfiguration", "GET", "DELETE"),
        "POST": "CreateBucketMetadataTableConfiguration",
    },
    "metrics": _crud("BucketMetricsConfiguration", "GET", "PUT", "DELETE"),
    "notification": _crud("BucketNotificationConfiguration", "GET", "PUT"),
    "ownershipControls": _crud("BucketOwnershipControls", "GET", "PUT", "DELETE"),
    "policy": _crud("BucketPolicy", "GET", "PUT", "DELETE"),
    "policyStatus": {"GET": "GetBucketPolicyStatus"},
    "publicAccessBlock": _crud("PublicAccessBlock", "GET", "PUT", "DELETE"),
    "replication": _crud("BucketReplication", "GET", "PUT", "DELETE"),
    "requestPayment": _crud("BucketRequestPayment", "GET", "PUT"),
    "session": {"GET": "CreateSession"},
    "website": _crud("BucketWebsite", "GET", "PUT", "DELETE"),
}
# Object subresources the dispatcher answers (exactly one subresource present).
_OBJECT_OPS: dict[str, dict[str, str]] = {
    "uploads": {"POST": "CreateMultipartUpload"},
    "tagging": _crud("ObjectTagging", "GET", "PUT", "DELETE"),
    "retention": _crud("ObjectRetention", "GET", "PUT"),
    "legal-hold": _crud("ObjectLegalHold", "GET", "PUT"),
    "attributes": {"GET": "GetObjectAttributes"},
}
_OBJECT_UNIMPLEMENTED: dict[frozenset[str], dict[str, str]] = {
    frozenset({"acl"}): _crud("ObjectAcl", "GET", "PUT"),
    frozenset({"torrent"}): {"GET": "GetObjectTorrent"},
    frozenset({"restore"}): {"POST": "RestoreObject"},
    frozenset({"select"}): {"POST": "SelectObjectContent"},
    frozenset({"select", "select-type"}): {"POST": "SelectObjectContent"},
    frozenset({"renameObject"}): {"PUT": "RenameObject"},
}
_NO_ROUTE = Route(UNKNOWN, implemented=False)


def is_signed(query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
    """The request carries AWS credentials (a SigV4/SigV2 Authorization header or a presigned query)."""
    auth = headers.get("authorization", "")
    return auth.startswith("AWS") or any(p in query for p in _SIGNATURE_PARAMS)


def route(
    method: str,
    bucket: str | None,
    key: str | None,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    virtual: bool = False,
) -> Route:
    """The action of a request. ``bucket``/``key`` as parsed (path-style or virtual-hosted:
    ``virtual``), ``query`` the decoded parameters in request order, ``headers`` lower-cased."""
    if not virtual and method in ("GET", "HEAD") and not is_signed(query, headers):
        path = f"/{bucket or ''}/{key}" if key else f"/{bucket or ''}"
        probe = PROBES.get(path)
        if probe is not None:
            return Route(probe)
    if bucket == EXTENSION_PREFIX:
        return _extension(method, key or "")
    sub = [k for k in query if k in SUBRESOURCES]
    if bucket is None:
        return Route("ListBuckets") if method == "GET" and not sub else _NO_ROUTE
    if key is None:
        return _bucket(method, sub, query)
    return _object(method, sub, query, headers)


def _bucket(method: str, sub: list[str], query: Mapping[str, str]) -> Route:
    if not sub:
        if method == "GET":
            return Route("ListObjectsV2" if query.get("list-type") == "2" else "ListObjects")
        action = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(method)
        return Route(action) if action else _NO_ROUTE
    if len(sub) == 1:
        action = _BUCKET_OPS.get(sub[0], {}).get(method)
        if action is not None:
            return Route(action)
        action = _BUCKET_UNIMPLEMENTED.get(sub[0], {}).get(method)
        if action is not None:
            return Route(action, implemented=False)
    return _NO_ROUTE


def _object(method: str, sub: list[str], query: Mapping[str, str], headers: Mapping[str, str]) -> Route:
    copy = "x-amz-copy-source" in headers
    if sub:
        action = _OBJECT_OPS.get(sub[0], {}).get(method) if len(sub) == 1 else None
        if action is not None:
            return Route(action)
        action = _OBJECT_UNIMPLEMENTED.get(frozenset(sub), {}).get(method)
        return Route(action, implemented=False) if action else _NO_ROUTE
    if "uploadId" in query:
        if method == "PUT" and "partNumber" in query:
            return Route("UploadPartCopy" if copy else "UploadPart")
        action = {"POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload", "GET": "ListParts"}.get(method)
        return Route(action) if action else _NO_ROUTE
    if method == "PUT":
        return Route("CopyObject" if copy else "PutObject")
    action = {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method)
    return Route(action) if action else _NO_ROUTE


def _extension(method: str, key: str) -> Route:
    """``/_tierstore/...`` (api/_app.py ``_extension``, api/_datasets.py, api/_models.py)."""
    if key in ("query", "batch"):
        return Route(f"tierstore:{key.capitalize()}") if method == "POST" else _NO_ROUTE
    if key == "admin/info":
        return Route("tierstore:AdminInfo") if method == "GET" else _NO_ROUTE
    if key == "admin/heal":
        return Route("tierstore:AdminHeal") if method == "POST" else _NO_ROUTE
    area = key.partition("/")[0]
    if area == "datasets":
        return _datasets(method, key.split("/")[1:])
    if area == "models":
        return _models(method, key.split("/")[1:])
    return _NO_ROUTE


def _datasets(method: str, parts: list[str]) -> Route:
    if not parts:
        action = {"GET": "tierstore:ListDatasets", "POST": "tierstore:CreateDataset"}.get(method)
    elif len(parts) == 1:
        action = "tierstore:GetDataset" if method == "GET" else None
    elif len(parts) == 2:
        action = {"GET": "tierstore:GetDataset", "DELETE": "tierstore:DeleteDataset"}.get(method)
    elif len(parts) == 3 and parts[2] == "manifest":
        action = "tierstore:GetDatasetManifest" if method == "GET" else None
    else:
        action = None
    return Route(action) if action else _NO_ROUTE


def _models(method: str, parts: list[str]) -> Route:
    action: str | None
    if not parts:
        action = {"GET": "tierstore:ListModels", "POST": "tierstore:RegisterModel"}.get(method)
    elif len(parts) == 1:
        action = "tierstore:GetModel" if method == "GET" else None
    elif parts[1] == "aliases":
        if len(parts) == 2:
            action = "tierstore:ListModelAliases" if method == "GET" else None
        elif len(parts) == 3:
            action = {
                "GET": "tierstore:GetModelAlias",
                "PUT": "tierstore:PutModelAlias",
                "DELETE": "tierstore:DeleteModelAlias",
            }.get(method)
        else:
            action = None
    elif len(parts) == 2:
        action = {"GET": "tierstore:GetModel", "DELETE": "tierstore:DeleteModel"}.get(method)
    elif len(parts) == 3 and parts[2] == "manifest":
        action = "tierstore:GetModelManifest" if method == "GET" else None
    else:
        action = None
    return Route(action) if action else _NO_ROUTE
