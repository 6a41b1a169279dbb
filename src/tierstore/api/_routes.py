"""The route table: the one place that names a request (its S3 API action) and dispatches it.

``route`` is a pure function of what the dispatcher looks at — method, bucket, key, query
parameters, and the one header that splits a branch (``x-amz-copy-source``) — and answers the
action (``PutObject``, ``UploadPart``, ``tierstore:Batch``, ...), with AWS's names. ``S3App``
calls it once per request and keeps the answer on the request (``req.action``): the access log,
the metrics and authorization use that name. ``ACTIONS`` maps each implemented action to its
handler and to the IAM permissions it needs (``checks``: the authorizer's input).

Requests the dispatcher refuses still get a name: a known S3 operation we do not implement gets
its AWS name with ``implemented=False`` (answered 501 NotImplemented), anything else is
``UNKNOWN`` (405 MethodNotAllowed or 501, ``refuse``). Both are refused after authentication and
before authorization: they touch no bucket or key, so they tell nobody anything.

Two requests are dispatched outside ``ACTIONS``' usual path. A browser POST form (``PostObject``)
carries its credentials and its key in the body: its ``Action.form`` step reads and verifies them,
and the dispatcher authorizes that key. A CORS preflight (``OPTIONS``, ``UNAUTHENTICATED``) is
answered without credentials (api/_cors.py says why that reveals nothing).

Health and metrics endpoints (``PROBES``) are named here too: an *unsigned* GET or HEAD of one of
their paths, path-style. A signed request to the same path is an ordinary S3 request, so buckets
named ``minio``, ``health`` or ``metrics`` keep working for every S3 client (docs/observability.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple
from urllib.parse import unquote

from tierstore import errors as e
from tierstore.api import (
    _access,
    _bucket_config,
    _bucket_encryption,
    _bucket_policy,
    _buckets,
    _cors,
    _extensions,
    _lifecycle,
    _multipart,
    _objects,
    _ops_ext,
    _post_object,
    _restore,
)
from tierstore.api._auth import Authenticator
from tierstore.api._authorize import Check
from tierstore.api._datasets import DATASET_MOVES
from tierstore.api._identity_ext import ENDPOINTS as IDENTITY_ENDPOINTS
from tierstore.api._identity_ext import UNROUTED as UNROUTED_IDENTITIES
from tierstore.api._identity_ext import endpoint as identity_endpoint
from tierstore.api._identity_ext import path_user_arn
from tierstore.api._kms_ext import ENDPOINTS as KMS_ENDPOINTS
from tierstore.api._kms_ext import UNROUTED as UNROUTED_KMS
from tierstore.api._kms_ext import endpoint as kms_endpoint
from tierstore.api._ops_ext import ENDPOINTS as OPS_ENDPOINTS
from tierstore.api._query import QUERY_API, is_query_route
from tierstore.api._request import Handler, Request
from tierstore.api._tiers_ext import ENDPOINTS as TIER_ENDPOINTS
from tierstore.api._tiers_ext import TRANSITION_MANY
from tierstore.api._tiers_ext import UNROUTED as UNROUTED_TIERS
from tierstore.api._tiers_ext import endpoint as tier_endpoint

__all__ = [
    "ACTIONS",
    "EXTENSION_PREFIX",
    "METRICS_ACTIONS",
    "PREFLIGHT",
    "PROBES",
    "PROBE_ACTIONS",
    "SUBRESOURCES",
    "UNAUTHENTICATED",
    "UNKNOWN",
    "Action",
    "Perm",
    "Route",
    "checks",
    "is_signed",
    "refuse",
    "route",
]

EXTENSION_PREFIX = "_tierstore"
UNKNOWN = "Unknown"
PREFLIGHT = "PreflightCorsRequest"  # OPTIONS /bucket[/key] (UNAUTHENTICATED)

# Query parameters that select another operation (the SigV2 signer signs them too). A known
# one we lack answers 501; any other parameter is ignored, as S3 does.
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
_PROBE_FIRST_SEGMENTS = frozenset(path.split("/")[1] for path in PROBES)  # what a probe's "bucket" is
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
    "acl": _crud("BucketAcl", "GET", "PUT"),
    "ownershipControls": _crud("BucketOwnershipControls", "GET", "PUT", "DELETE"),
    "policy": _crud("BucketPolicy", "GET", "PUT", "DELETE"),
    "policyStatus": {"GET": "GetBucketPolicyStatus"},
    "publicAccessBlock": _crud("PublicAccessBlock", "GET", "PUT", "DELETE"),
    "cors": _crud("BucketCors", "GET", "PUT", "DELETE"),
    "encryption": _crud("BucketEncryption", "GET", "PUT", "DELETE"),
    "lifecycle": {**_crud("BucketLifecycleConfiguration", "GET", "PUT"), "DELETE": "DeleteBucketLifecycle"},
}
# Known S3 bucket operations we do not implement (501 NotImplemented), by their AWS names.
_BUCKET_UNIMPLEMENTED: dict[str, dict[str, str]] = {
    "accelerate": _crud("BucketAccelerateConfiguration", "GET", "PUT"),
    "analytics": _crud("BucketAnalyticsConfiguration", "GET", "PUT", "DELETE"),
    "intelligent-tiering": _crud("BucketIntelligentTieringConfiguration", "GET", "PUT", "DELETE"),
    "inventory": _crud("BucketInventoryConfiguration", "GET", "PUT", "DELETE"),
    "logging": _crud("BucketLogging", "GET", "PUT"),
    "metadataTable": {
        **_crud("BucketMetadataTableConfiguration", "GET", "DELETE"),
        "POST": "CreateBucketMetadataTableConfiguration",
    },
    "metrics": _crud("BucketMetricsConfiguration", "GET", "PUT", "DELETE"),
    "notification": _crud("BucketNotificationConfiguration", "GET", "PUT"),
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
    "acl": _crud("ObjectAcl", "GET", "PUT"),
    "restore": {"POST": "RestoreObject"},
}
_OBJECT_UNIMPLEMENTED: dict[frozenset[str], dict[str, str]] = {
    frozenset({"torrent"}): {"GET": "GetObjectTorrent"},
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
    virtual: bool = False,
) -> Route:
    """The action of a request. ``bucket``/``key`` as parsed (path-style or virtual-hosted:
    ``virtual``), ``query`` the decoded parameters in request order, ``headers`` lower-cased."""
    if not virtual and bucket in _PROBE_FIRST_SEGMENTS and method in ("GET", "HEAD") and not is_signed(query, headers):
        path = f"/{bucket or ''}/{key}" if key else f"/{bucket or ''}"
        probe = PROBES.get(path)
        if probe is not None:
            return Route(probe)
    if bucket == EXTENSION_PREFIX:
        return _extension(method, key or "")
    if bucket is None and not virtual and is_query_route(method, bucket, query, headers):
        return Route(QUERY_API)  # IAM/STS: named after its form is read (_query.lookup)
    if method == "OPTIONS" and bucket is not None:
        return Route(PREFLIGHT)
    sub = [k for k in query if k in SUBRESOURCES] if query else []
    if bucket is None:
        return Route("ListBuckets") if method == "GET" and not sub else _NO_ROUTE
    if key is None:
        return _bucket(method, sub, query)
    return _object(method, sub, query, headers)


def _bucket(method: str, sub: list[str], query: Mapping[str, str]) -> Route:
    if not sub:
        if method == "GET":
            return Route("ListObjectsV2" if query.get("list-type") == "2" else "ListObjects")
        action = {
            "PUT": "CreateBucket",
            "HEAD": "HeadBucket",
            "DELETE": "DeleteBucket",
            "POST": "PostObject",  # a browser form upload (api/_post_object.py)
        }.get(method)
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
    return _KEY_ROUTES.get(method, _NO_ROUTE)


# A request on a key without subresource or upload (most requests): its Route, built once.
_KEY_ROUTES = {m: Route(a) for m, a in (("GET", "GetObject"), ("HEAD", "HeadObject"), ("DELETE", "DeleteObject"))}


def _extension(method: str, key: str) -> Route:
    """``/_tierstore/...`` (api/_extensions.py, api/_datasets.py, api/_models.py)."""
    if key in ("query", "batch"):
        return Route(f"tierstore:{key.capitalize()}") if method == "POST" else _NO_ROUTE
    if key == "admin/info":
        return Route("tierstore:AdminInfo") if method == "GET" else _NO_ROUTE
    if key == "admin/heal":
        return Route("tierstore:AdminHeal") if method == "POST" else _NO_ROUTE
    if key in OPS_ENDPOINTS:  # metrics, audit log, restores (_ops_ext)
        return Route(OPS_ENDPOINTS[key]) if method == "GET" else _NO_ROUTE
    if key.split("/")[:2] in (["admin", "users"], ["admin", "keys"]):
        return Route(identity_endpoint(method, key))  # one name per endpoint (_identity_ext.ENDPOINTS)
    if key.split("/")[:2] == ["admin", "kms"]:
        return Route(kms_endpoint(method, key))  # one name per endpoint (_kms_ext.ENDPOINTS)
    if key == "admin/tiers" or key.startswith("admin/tiers/"):
        return Route(tier_endpoint(method, key))  # the route name is the IAM action (_tiers_ext.ENDPOINTS)
    if key == "jobs":
        return Route("tierstore:ListJobs") if method == "GET" else _NO_ROUTE
    if key == "usage":
        return Route("tierstore:BucketUsage") if method == "GET" else _NO_ROUTE
    area = key.partition("/")[0]
    if area == "datasets":
        return _datasets(method, key.split("/")[1:])
    if area == "models":
        return _models(method, key.split("/")[1:])
    return _NO_ROUTE


def _versioned(method: str, parts: list[str], kind: str, create: str) -> str | None:
    """The routes datasets and models share: list and ``create``, show, delete, the manifest."""
    if not parts:
        return {"GET": f"tierstore:List{kind}s", "POST": create}.get(method)
    if len(parts) == 1:
        return f"tierstore:Get{kind}" if method == "GET" else None
    if len(parts) == 2:
        return {"GET": f"tierstore:Get{kind}", "DELETE": f"tierstore:Delete{kind}"}.get(method)
    if len(parts) == 3 and parts[2] == "manifest":
        return f"tierstore:Get{kind}Manifest" if method == "GET" else None
    return None


def _datasets(method: str, parts: list[str]) -> Route:
    """The shared routes, moving or holding a version's bytes (``NAME/N/archive``, ``NAME/N/pin``),
    and the diff of two versions (``NAME/diff``)."""
    if len(parts) == 3 and parts[2] in DATASET_MOVES:
        action = DATASET_MOVES[parts[2]].get(method)
    elif len(parts) == 2 and parts[1] == "diff":  # reveals parts of two manifests: read as them
        action = "tierstore:GetDatasetManifest" if method == "GET" else None
    else:
        action = _versioned(method, parts, "Dataset", "tierstore:CreateDataset")
    return Route(action) if action else _NO_ROUTE


def _models(method: str, parts: list[str]) -> Route:
    """Models add aliases (``NAME/aliases[/ALIAS]``) to the dataset routes."""
    action: str | None
    if len(parts) >= 2 and parts[1] == "aliases":
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
    else:
        action = _versioned(method, parts, "Model", "tierstore:RegisterModel")
    return Route(action) if action else _NO_ROUTE


# --- dispatch: action -> handler and IAM permissions ------------------------------------------
class Perm(NamedTuple):
    """One IAM permission an action needs (AWS's "Actions, resources, and condition keys for
    Amazon S3": HeadObject is ``s3:GetObject``, ListObjectsV2 ``s3:ListBucket``, ...)."""

    action: str
    versioned: str = ""  # the IAM action instead when the request (or its copy source) names a version
    # "request": the request's bucket or object; "source": x-amz-copy-source; "any": "*";
    # "iam-user": the user an /_tierstore/admin/users/NAME path names; "query-object": the object
    # the query's bucket and key name (a tier transition)
    on: str = "request"
    if_header: str = ""  # needed only when the request carries this header


FormStep = Callable[[Request, Authenticator], Awaitable[_post_object.FormAuth]]


class Action(NamedTuple):
    handler: Handler
    perms: tuple[Perm, ...]
    # IAM actions the handler checks per entry of the body (DeleteObjects: per key; a batch:
    # per entry, or its dataset/model; the query: the bucket, then each result).
    per_entry: tuple[str, ...] = ()
    # An action whose credentials and key travel in its body (a browser POST form): the
    # dispatcher runs this step instead of header authentication, then authorizes ``perms`` on
    # the key it found, with the headers it answers: the form's fields stand for the object's
    # (_app.S3App._handle, api/_post_object.py).
    form: FormStep | None = None


_GET = Perm("s3:GetObject", "s3:GetObjectVersion")
_PUT = Perm("s3:PutObject")
_SOURCE = Perm("s3:GetObject", "s3:GetObjectVersion", on="source")
_BYPASS = Perm("s3:BypassGovernanceRetention", if_header="x-amz-bypass-governance-retention")
# Headers that set an ACL (api/_acl.py): a write carrying one needs the Put*Acl permission too.
_ACL_HEADERS = ("x-amz-acl", "x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp",
                "x-amz-grant-write-acp", "x-amz-grant-full-control")
# A write that sets tags, a retention, a legal hold or an ACL needs those permissions too.
_WRITE_EXTRAS = (
    Perm("s3:PutObjectTagging", if_header="x-amz-tagging"),
    Perm("s3:PutObjectRetention", if_header="x-amz-object-lock-mode"),
    Perm("s3:PutObjectLegalHold", if_header="x-amz-object-lock-legal-hold"),
    *(Perm("s3:PutObjectAcl", if_header=h) for h in _ACL_HEADERS),
)
_ANY = "any"
_IAM_USER = "iam-user"  # the IAM user an /_tierstore/admin/users/NAME path names
_QUERY_OBJECT = "query-object"  # the object named by the ?bucket=&key= of the query ("*" without both)
_TRANSITION = "tierstore:TransitionObject"
# Headers whose permission is needed only when they say "true".
_TRUE_HEADERS = frozenset({"x-amz-bypass-governance-retention", "x-amz-bucket-object-lock-enabled"})


def _ext(handler: Handler, action: str) -> Action:
    return Action(handler, (Perm(action, on=_ANY),))


ACTIONS: dict[str, Action] = {
    # service and buckets (_buckets)
    "ListBuckets": Action(_buckets.list_buckets, (Perm("s3:ListAllMyBuckets", on=_ANY),)),
    "CreateBucket": Action(
        _buckets.create_bucket,
        (
            Perm("s3:CreateBucket"),
            Perm("s3:PutBucketObjectLockConfiguration", if_header="x-amz-bucket-object-lock-enabled"),
            Perm("s3:PutBucketVersioning", if_header="x-amz-bucket-object-lock-enabled"),
            Perm("s3:PutBucketOwnershipControls", if_header="x-amz-object-ownership"),
            *(Perm("s3:PutBucketAcl", if_header=h) for h in _ACL_HEADERS),
        ),
    ),
    "HeadBucket": Action(_buckets.head_bucket, (Perm("s3:ListBucket"),)),
    "DeleteBucket": Action(_buckets.delete_bucket, (Perm("s3:DeleteBucket"),)),
    "GetBucketLocation": Action(_buckets.get_bucket_location, (Perm("s3:GetBucketLocation"),)),
    "ListObjects": Action(_buckets.list_objects, (Perm("s3:ListBucket"),)),
    "ListObjectsV2": Action(_buckets.list_objects, (Perm("s3:ListBucket"),)),
    "ListObjectVersions": Action(_buckets.list_object_versions, (Perm("s3:ListBucketVersions"),)),
    "DeleteObjects": Action(
        _buckets.delete_objects, (), ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention")
    ),
    # bucket configuration (_bucket_config)
    "GetBucketVersioning": Action(_bucket_config.get_bucket_versioning, (Perm("s3:GetBucketVersioning"),)),
    "PutBucketVersioning": Action(_bucket_config.put_bucket_versioning, (Perm("s3:PutBucketVersioning"),)),
    "GetBucketTagging": Action(_bucket_config.get_bucket_tagging, (Perm("s3:GetBucketTagging"),)),
    "PutBucketTagging": Action(_bucket_config.put_bucket_tagging, (Perm("s3:PutBucketTagging"),)),
    "DeleteBucketTagging": Action(_bucket_config.delete_bucket_tagging, (Perm("s3:PutBucketTagging"),)),
    "GetObjectLockConfiguration": Action(
        _bucket_config.get_object_lock_configuration, (Perm("s3:GetBucketObjectLockConfiguration"),)
    ),
    "PutObjectLockConfiguration": Action(
        _bucket_config.put_object_lock_configuration, (Perm("s3:PutBucketObjectLockConfiguration"),)
    ),
    # ACLs and Object Ownership (_access)
    "GetBucketAcl": Action(_access.get_bucket_acl, (Perm("s3:GetBucketAcl"),)),
    "PutBucketAcl": Action(_access.put_bucket_acl, (Perm("s3:PutBucketAcl"),)),
    "GetObjectAcl": Action(_access.get_object_acl, (Perm("s3:GetObjectAcl", "s3:GetObjectVersionAcl"),)),
    "PutObjectAcl": Action(_access.put_object_acl, (Perm("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),)),
    "GetBucketOwnershipControls": Action(
        _access.get_bucket_ownership_controls, (Perm("s3:GetBucketOwnershipControls"),)
    ),
    "PutBucketOwnershipControls": Action(
        _access.put_bucket_ownership_controls, (Perm("s3:PutBucketOwnershipControls"),)
    ),
    "DeleteBucketOwnershipControls": Action(
        _access.delete_bucket_ownership_controls, (Perm("s3:PutBucketOwnershipControls"),)
    ),
    # bucket policy and Block Public Access (_bucket_policy)
    "GetBucketPolicy": Action(_bucket_policy.get_bucket_policy, (Perm("s3:GetBucketPolicy"),)),
    "PutBucketPolicy": Action(_bucket_policy.put_bucket_policy, (Perm("s3:PutBucketPolicy"),)),
    "DeleteBucketPolicy": Action(_bucket_policy.delete_bucket_policy, (Perm("s3:DeleteBucketPolicy"),)),
    "GetBucketPolicyStatus": Action(_bucket_policy.get_bucket_policy_status, (Perm("s3:GetBucketPolicyStatus"),)),
    "GetPublicAccessBlock": Action(
        _bucket_policy.get_public_access_block, (Perm("s3:GetBucketPublicAccessBlock"),)
    ),
    "PutPublicAccessBlock": Action(
        _bucket_policy.put_public_access_block, (Perm("s3:PutBucketPublicAccessBlock"),)
    ),
    # AWS: DeletePublicAccessBlock needs s3:PutBucketPublicAccessBlock (there is no Delete action)
    "DeletePublicAccessBlock": Action(
        _bucket_policy.delete_public_access_block, (Perm("s3:PutBucketPublicAccessBlock"),)
    ),
    # objects (_objects)
    "GetObject": Action(_objects.get_object, (_GET,)),
    "HeadObject": Action(_objects.head_object, (_GET,)),
    "PutObject": Action(_objects.put_object, (_PUT, *_WRITE_EXTRAS)),
    "CopyObject": Action(_objects.copy_object, (_SOURCE, _PUT, *_WRITE_EXTRAS)),
    "DeleteObject": Action(_objects.delete_object, (Perm("s3:DeleteObject", "s3:DeleteObjectVersion"), _BYPASS)),
    "GetObjectAttributes": Action(
        _objects.get_object_attributes, (_GET, Perm("s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"))
    ),
    "GetObjectTagging": Action(
        _objects.get_object_tagging, (Perm("s3:GetObjectTagging", "s3:GetObjectVersionTagging"),)
    ),
    "PutObjectTagging": Action(
        _objects.put_object_tagging, (Perm("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),)
    ),
    "DeleteObjectTagging": Action(
        _objects.delete_object_tagging, (Perm("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),)
    ),
    "GetObjectRetention": Action(_objects.get_object_retention, (Perm("s3:GetObjectRetention"),)),
    "PutObjectRetention": Action(_objects.put_object_retention, (Perm("s3:PutObjectRetention"), _BYPASS)),
    "GetObjectLegalHold": Action(_objects.get_object_legal_hold, (Perm("s3:GetObjectLegalHold"),)),
    "PutObjectLegalHold": Action(_objects.put_object_legal_hold, (Perm("s3:PutObjectLegalHold"),)),
    # RestoreObject of a version in a restore-required tier (_restore; docs/tiers.md "Restore")
    "RestoreObject": Action(_restore.restore_object, (Perm("s3:RestoreObject"),)),
    # browser form uploads (_post_object): s3:PutObject on the form's key, for the form's signer
    "PostObject": Action(_post_object.post_object, (_PUT, *_WRITE_EXTRAS), form=_post_object.authenticate_form),
    # default encryption (_bucket_encryption); AWS: the Delete needs s3:PutEncryptionConfiguration
    "GetBucketEncryption": Action(
        _bucket_encryption.get_bucket_encryption, (Perm("s3:GetEncryptionConfiguration"),)
    ),
    "PutBucketEncryption": Action(
        _bucket_encryption.put_bucket_encryption, (Perm("s3:PutEncryptionConfiguration"),)
    ),
    "DeleteBucketEncryption": Action(
        _bucket_encryption.delete_bucket_encryption, (Perm("s3:PutEncryptionConfiguration"),)
    ),
    # lifecycle configuration (_lifecycle); AWS: the Delete needs s3:PutLifecycleConfiguration
    "GetBucketLifecycleConfiguration": Action(
        _lifecycle.get_bucket_lifecycle_configuration, (Perm("s3:GetLifecycleConfiguration"),)
    ),
    "PutBucketLifecycleConfiguration": Action(
        _lifecycle.put_bucket_lifecycle_configuration, (Perm("s3:PutLifecycleConfiguration"),)
    ),
    "DeleteBucketLifecycle": Action(_lifecycle.delete_bucket_lifecycle, (Perm("s3:PutLifecycleConfiguration"),)),
    # CORS configuration (_cors)
    "GetBucketCors": Action(_cors.get_bucket_cors, (Perm("s3:GetBucketCORS"),)),
    "PutBucketCors": Action(_cors.put_bucket_cors, (Perm("s3:PutBucketCORS"),)),
    "DeleteBucketCors": Action(_cors.delete_bucket_cors, (Perm("s3:PutBucketCORS"),)),
    # multipart uploads (_multipart)
    "CreateMultipartUpload": Action(_multipart.create_multipart_upload, (_PUT, *_WRITE_EXTRAS)),
    "UploadPart": Action(_multipart.upload_part, (_PUT,)),
    "UploadPartCopy": Action(_multipart.upload_part_copy, (_SOURCE, _PUT)),
    "CompleteMultipartUpload": Action(_multipart.complete_multipart_upload, (_PUT,)),
    "AbortMultipartUpload": Action(_multipart.abort_multipart_upload, (Perm("s3:AbortMultipartUpload"),)),
    "ListParts": Action(_multipart.list_parts, (Perm("s3:ListMultipartUploadParts"),)),
    "ListMultipartUploads": Action(_multipart.list_multipart_uploads, (Perm("s3:ListBucketMultipartUploads"),)),
    # /_tierstore/ extensions (_extensions, _datasets, _models): IAM names in the tierstore: namespace
    # The query and the batch name their buckets and keys in the body: checked by the handler.
    "tierstore:Query": Action(_extensions.query, (), ("s3:ListBucket", "s3:GetObject")),
    "tierstore:Batch": Action(_extensions.batch, (), ("s3:GetObject", "tierstore:ReadDataset", "tierstore:ReadModel")),
    "tierstore:AdminInfo": _ext(_extensions.admin_info, "tierstore:Admin"),
    "tierstore:AdminHeal": _ext(_extensions.admin_heal, "tierstore:Admin"),
    "tierstore:AdminMetrics": _ext(_ops_ext.metrics, "tierstore:Admin"),
    "tierstore:AdminAudit": _ext(_ops_ext.audit, "tierstore:Admin"),
    "tierstore:AdminRestores": _ext(_ops_ext.restores, "tierstore:Admin"),
    UNROUTED_IDENTITIES: _ext(_extensions.identities, "tierstore:Admin"),
    **{
        name: Action(
            _extensions.identities,
            tuple(Perm(a, on=_IAM_USER if on == "path" else _ANY) for a in iam_actions) if on != "entry" else (),
            iam_actions if on == "entry" else (),
        )
        for name, (iam_actions, on) in IDENTITY_ENDPOINTS.items()
    },
    UNROUTED_KMS: _ext(_extensions.kms_keys, "tierstore:Admin"),
    **{  # the key service (_kms_ext): kms:ListKeys/CreateKey on "*" here, the others on the key, by the handler
        name: Action(_extensions.kms_keys, (Perm(kms_action, on=_ANY),) if on == _ANY else (), (kms_action,))
        for name, (kms_action, on) in KMS_ENDPOINTS.items()
    },
    # the tier registry (_tiers_ext): each route is its IAM action, on "*"; a transition on the
    # object it moves (arn:aws:s3:::BUCKET/KEY from its query)
    UNROUTED_TIERS: _ext(_extensions.tiers, "tierstore:Admin"),
    "tierstore:ListJobs": _ext(_extensions.jobs, "tierstore:ListJobs"),
    # each bucket's usage is shown to whoever may list that bucket (s3:ListBucket), by the handler
    "tierstore:BucketUsage": Action(_extensions.usage, (), ("s3:ListBucket",)),
    **{a: _ext(_extensions.tiers, a) for a in TIER_ENDPOINTS if a not in (_TRANSITION, TRANSITION_MANY)},
    _TRANSITION: Action(_extensions.tiers, (Perm(_TRANSITION, on=_QUERY_OBJECT),)),
    TRANSITION_MANY: Action(_extensions.tiers, (), (_TRANSITION,)),  # each entry's, by the handler
    **{
        a: _ext(_extensions.datasets, a)
        for a in (
            "tierstore:ListDatasets",
            "tierstore:CreateDataset",
            "tierstore:GetDataset",
            "tierstore:DeleteDataset",
            "tierstore:GetDatasetManifest",
            *(a for actions in DATASET_MOVES.values() for a in actions.values()),
        )
    },
    **{
        a: _ext(_extensions.models, a)
        for a in (
            "tierstore:ListModels",
            "tierstore:RegisterModel",
            "tierstore:GetModel",
            "tierstore:DeleteModel",
            "tierstore:GetModelManifest",
            "tierstore:ListModelAliases",
            "tierstore:GetModelAlias",
            "tierstore:PutModelAlias",
            "tierstore:DeleteModelAlias",
        )
    },
}


# Actions answered without authentication or authorization. A CORS preflight: browsers send it
# without credentials by design (the Fetch standard), and its answer is only what the bucket's CORS
# rules allow; it never looks at the key, so it cannot tell whether an object exists (api/_cors.py).
UNAUTHENTICATED: dict[str, Handler] = {PREFLIGHT: _cors.preflight}


def _copy_source(headers: Mapping[str, str]) -> tuple[str, str | None]:
    """The ARN and version id ``x-amz-copy-source`` names (leniently: the handler rejects a
    malformed one, after authorization)."""
    path, _, query = headers.get("x-amz-copy-source", "").partition("?")
    path = unquote(path).removeprefix("/")
    version = None
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name == "versionId":
            version = unquote(value)
    return f"arn:aws:s3:::{path}", version


def checks(
    action: Action, bucket: str | None, key: str | None, query: Mapping[str, str], headers: Mapping[str, str]
) -> tuple[Check, ...]:
    """The (IAM action, resource ARN) pairs a request for ``action`` needs, from its ``perms``."""
    if bucket is None or bucket == EXTENSION_PREFIX:
        target = "*"
    else:
        target = f"arn:aws:s3:::{bucket}/{key}" if key is not None else f"arn:aws:s3:::{bucket}"
    version = query.get("versionId")
    perms = action.perms
    if len(perms) == 1 and perms[0].on == "request" and not perms[0].if_header:  # most requests
        p = perms[0]
        return (tuple.__new__(Check, (p.versioned if p.versioned and version is not None else p.action, target)),)
    out = []
    for p in perms:
        if p.if_header:
            value = headers.get(p.if_header)
            if value is None or (p.if_header in _TRUE_HEADERS and value.lower() != "true"):
                continue
        resource, named = target, version
        if p.on == "source":
            resource, named = _copy_source(headers)
        elif p.on == _ANY:
            resource = "*"
        elif p.on == _IAM_USER:
            resource = path_user_arn(key or "")
        elif p.on == _QUERY_OBJECT:
            q_bucket, q_key = query.get("bucket"), query.get("key")
            resource = f"arn:aws:s3:::{q_bucket}/{q_key}" if q_bucket and q_key else "*"
        out.append(Check(p.versioned if p.versioned and named is not None else p.action, resource))
    return tuple(out)


def refuse(method: str, bucket: str | None, key: str | None, query: Mapping[str, str]) -> None:
    """Raise the error of an S3 request the table does not dispatch: a known operation we do not
    implement (501), or no operation at all (405 MethodNotAllowed, or 501 when it names a
    subresource)."""
    sub = [k for k in query if k in SUBRESOURCES]
    if bucket is None:
        raise e.NotImplementedOperation() if sub else e.MethodNotAllowed()
    if not sub:
        raise e.MethodNotAllowed()
    kind = "bucket" if key is None else "object"
    raise e.NotImplementedOperation(f"The {kind} operation '{','.join(sub)[:60]}' is not implemented.")
