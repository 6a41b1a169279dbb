"""The route table (api/_routes.py): every request's name, and the dispatch by that name — each
implemented action has its handler (the dispatcher runs nothing else), and the compatibility
matrix (docs/s3-compatibility.md) names every S3 action we implement."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tierstore.api._query import QUERY_API
from tierstore.api._routes import ACTIONS, PROBE_ACTIONS, PROBES, UNAUTHENTICATED, UNKNOWN, Route, checks, route

CS = {"x-amz-copy-source": "/b/k"}

# (method, bucket, key, query, headers) -> (action, implemented)
TABLE: list[tuple[str, str | None, str | None, dict[str, str], dict[str, str], str, bool]] = [
    # service
    ("GET", None, None, {}, {}, "ListBuckets", True),
    ("GET", None, None, {"max-buckets": "5", "prefix": "a"}, {}, "ListBuckets", True),
    ("PUT", None, None, {}, {}, UNKNOWN, False),
    ("GET", None, None, {"acl": ""}, {}, UNKNOWN, False),
    # bucket, no subresource
    ("GET", "b", None, {}, {}, "ListObjects", True),
    ("GET", "b", None, {"list-type": "2"}, {}, "ListObjectsV2", True),
    ("GET", "b", None, {"list-type": "1"}, {}, "ListObjects", True),
    ("GET", "b", None, {"whatever": "1"}, {}, "ListObjects", True),
    ("PUT", "b", None, {}, {}, "CreateBucket", True),
    ("HEAD", "b", None, {}, {}, "HeadBucket", True),
    ("DELETE", "b", None, {}, {}, "DeleteBucket", True),
    ("POST", "b", None, {}, {}, "PostObject", True),  # a browser form upload
    ("OPTIONS", "b", None, {}, {}, "PreflightCorsRequest", True),
    ("OPTIONS", "b", "k", {"uploads": ""}, {}, "PreflightCorsRequest", True),
    ("GET", "b", None, {"cors": ""}, {}, "GetBucketCors", True),
    ("PUT", "b", None, {"cors": ""}, {}, "PutBucketCors", True),
    ("DELETE", "b", None, {"cors": ""}, {}, "DeleteBucketCors", True),
    ("GET", "b", None, {"encryption": ""}, {}, "GetBucketEncryption", True),
    ("PUT", "b", None, {"encryption": ""}, {}, "PutBucketEncryption", True),
    ("DELETE", "b", None, {"encryption": ""}, {}, "DeleteBucketEncryption", True),
    # bucket subresources
    ("GET", "b", None, {"location": ""}, {}, "GetBucketLocation", True),
    ("GET", "b", None, {"uploads": ""}, {}, "ListMultipartUploads", True),
    ("GET", "b", None, {"versioning": ""}, {}, "GetBucketVersioning", True),
    ("PUT", "b", None, {"versioning": ""}, {}, "PutBucketVersioning", True),
    ("GET", "b", None, {"versions": "", "prefix": "x"}, {}, "ListObjectVersions", True),
    ("POST", "b", None, {"delete": ""}, {}, "DeleteObjects", True),
    ("GET", "b", None, {"tagging": ""}, {}, "GetBucketTagging", True),
    ("PUT", "b", None, {"tagging": ""}, {}, "PutBucketTagging", True),
    ("DELETE", "b", None, {"tagging": ""}, {}, "DeleteBucketTagging", True),
    ("GET", "b", None, {"object-lock": ""}, {}, "GetObjectLockConfiguration", True),
    ("PUT", "b", None, {"object-lock": ""}, {}, "PutObjectLockConfiguration", True),
    ("DELETE", "b", None, {"object-lock": ""}, {}, UNKNOWN, False),
    ("PUT", "b", None, {"location": ""}, {}, UNKNOWN, False),
    ("GET", "b", None, {"delete": ""}, {}, UNKNOWN, False),
    ("GET", "b", None, {"tagging": "", "versioning": ""}, {}, UNKNOWN, False),
    ("GET", "b", None, {"acl": ""}, {}, "GetBucketAcl", True),
    ("PUT", "b", None, {"acl": ""}, {}, "PutBucketAcl", True),
    ("GET", "b", None, {"ownershipControls": ""}, {}, "GetBucketOwnershipControls", True),
    ("PUT", "b", None, {"ownershipControls": ""}, {}, "PutBucketOwnershipControls", True),
    ("DELETE", "b", None, {"ownershipControls": ""}, {}, "DeleteBucketOwnershipControls", True),
    ("PUT", "b", None, {"policy": ""}, {}, "PutBucketPolicy", True),
    ("GET", "b", None, {"policy": ""}, {}, "GetBucketPolicy", True),
    ("DELETE", "b", None, {"policy": ""}, {}, "DeleteBucketPolicy", True),
    ("GET", "b", None, {"policyStatus": ""}, {}, "GetBucketPolicyStatus", True),
    ("PUT", "b", None, {"policyStatus": ""}, {}, UNKNOWN, False),
    ("GET", "b", None, {"publicAccessBlock": ""}, {}, "GetPublicAccessBlock", True),
    ("PUT", "b", None, {"publicAccessBlock": ""}, {}, "PutPublicAccessBlock", True),
    ("DELETE", "b", None, {"publicAccessBlock": ""}, {}, "DeletePublicAccessBlock", True),
    ("PUT", "b", "k", {"policy": ""}, {}, UNKNOWN, False),
    ("DELETE", "b", None, {"lifecycle": ""}, {}, "DeleteBucketLifecycle", True),
    ("GET", "b", None, {"lifecycle": ""}, {}, "GetBucketLifecycleConfiguration", True),
    ("PUT", "b", None, {"lifecycle": ""}, {}, "PutBucketLifecycleConfiguration", True),
    ("PUT", "b", None, {"logging": ""}, {}, "PutBucketLogging", False),
    ("GET", "b", None, {"website": ""}, {}, "GetBucketWebsite", False),
    ("GET", "b", None, {"session": ""}, {}, "CreateSession", False),
    ("POST", "b", None, {"acl": ""}, {}, UNKNOWN, False),
    # object subresources
    ("POST", "b", "k", {"uploads": ""}, {}, "CreateMultipartUpload", True),
    ("GET", "b", "k", {"uploads": ""}, {}, UNKNOWN, False),
    ("GET", "b", "k", {"tagging": ""}, {}, "GetObjectTagging", True),
    ("PUT", "b", "k", {"tagging": "", "versionId": "v"}, {}, "PutObjectTagging", True),
    ("DELETE", "b", "k", {"tagging": ""}, {}, "DeleteObjectTagging", True),
    ("GET", "b", "k", {"retention": ""}, {}, "GetObjectRetention", True),
    ("PUT", "b", "k", {"retention": ""}, {}, "PutObjectRetention", True),
    ("GET", "b", "k", {"legal-hold": ""}, {}, "GetObjectLegalHold", True),
    ("PUT", "b", "k", {"legal-hold": ""}, {}, "PutObjectLegalHold", True),
    ("DELETE", "b", "k", {"legal-hold": ""}, {}, UNKNOWN, False),
    ("GET", "b", "k", {"tagging": "", "retention": ""}, {}, UNKNOWN, False),
    ("GET", "b", "k", {"acl": ""}, {}, "GetObjectAcl", True),
    ("PUT", "b", "k", {"acl": "", "versionId": "v"}, {}, "PutObjectAcl", True),
    ("GET", "b", "k", {"attributes": ""}, {}, "GetObjectAttributes", True),
    ("POST", "b", "k", {"restore": ""}, {}, "RestoreObject", True),
    ("POST", "b", "k", {"restore": "", "versionId": "v"}, {}, "RestoreObject", True),
    ("POST", "b", "k", {"select": "", "select-type": "2"}, {}, "SelectObjectContent", False),
    ("PUT", "b", "k", {"renameObject": ""}, {}, "RenameObject", False),
    ("GET", "b", "k", {"torrent": ""}, {}, "GetObjectTorrent", False),
    # multipart by upload id
    ("PUT", "b", "k", {"uploadId": "u", "partNumber": "1"}, {}, "UploadPart", True),
    ("PUT", "b", "k", {"partNumber": "1", "uploadId": "u"}, CS, "UploadPartCopy", True),
    ("POST", "b", "k", {"uploadId": "u"}, {}, "CompleteMultipartUpload", True),
    ("DELETE", "b", "k", {"uploadId": "u"}, {}, "AbortMultipartUpload", True),
    ("GET", "b", "k", {"uploadId": "u", "max-parts": "2"}, {}, "ListParts", True),
    ("PUT", "b", "k", {"uploadId": "u"}, {}, UNKNOWN, False),
    ("HEAD", "b", "k", {"uploadId": "u"}, {}, UNKNOWN, False),
    # objects
    ("GET", "b", "k", {}, {}, "GetObject", True),
    ("GET", "b", "k", {"versionId": "v", "partNumber": "1"}, {}, "GetObject", True),
    ("HEAD", "b", "k", {}, {}, "HeadObject", True),
    ("PUT", "b", "k", {}, {}, "PutObject", True),
    ("PUT", "b", "k", {}, CS, "CopyObject", True),
    ("DELETE", "b", "k", {"versionId": "v"}, {}, "DeleteObject", True),
    ("POST", "b", "k", {}, {}, UNKNOWN, False),
    ("PATCH", "b", "k", {}, {}, UNKNOWN, False),
    # extensions
    ("POST", "_tierstore", "query", {}, {}, "tierstore:Query", True),
    ("GET", "_tierstore", "query", {}, {}, UNKNOWN, False),
    ("POST", "_tierstore", "batch", {"acl": ""}, {}, "tierstore:Batch", True),
    ("GET", "_tierstore", "admin/info", {}, {}, "tierstore:AdminInfo", True),
    ("POST", "_tierstore", "admin/heal", {}, {}, "tierstore:AdminHeal", True),
    ("GET", "_tierstore", "admin/heal", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "admin/metrics", {}, {}, "tierstore:AdminMetrics", True),
    ("GET", "_tierstore", "admin/audit", {"principal": "x"}, {}, "tierstore:AdminAudit", True),
    ("GET", "_tierstore", "admin/restores", {}, {}, "tierstore:AdminRestores", True),
    ("POST", "_tierstore", "admin/audit", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "admin/users", {}, {}, "tierstore:AdminListUsers", True),
    ("POST", "_tierstore", "admin/users", {}, {}, "tierstore:AdminCreateUser", True),
    ("GET", "_tierstore", "admin/users/al", {}, {}, "tierstore:AdminGetUser", True),
    ("PUT", "_tierstore", "admin/users/al", {}, {}, "tierstore:AdminUpdateUser", True),
    ("DELETE", "_tierstore", "admin/users/al", {}, {}, "tierstore:AdminDeleteUser", True),
    ("GET", "_tierstore", "admin/users/al/policies", {}, {}, "tierstore:AdminListUserPolicies", True),
    ("GET", "_tierstore", "admin/users/al/policies/p", {}, {}, "tierstore:AdminGetUserPolicy", True),
    ("PUT", "_tierstore", "admin/users/al/policies/p", {}, {}, "tierstore:AdminPutUserPolicy", True),
    ("DELETE", "_tierstore", "admin/users/al/policies/p", {}, {}, "tierstore:AdminDeleteUserPolicy", True),
    ("GET", "_tierstore", "admin/keys", {"user": "al"}, {}, "tierstore:AdminListAccessKeys", True),
    ("POST", "_tierstore", "admin/keys", {}, {}, "tierstore:AdminCreateAccessKey", True),
    ("GET", "_tierstore", "admin/keys/AKID", {}, {}, "tierstore:AdminGetAccessKey", True),
    ("PUT", "_tierstore", "admin/keys/AKID", {}, {}, "tierstore:AdminUpdateAccessKey", True),
    ("DELETE", "_tierstore", "admin/keys/AKID", {}, {}, "tierstore:AdminDeleteAccessKey", True),
    ("POST", "_tierstore", "admin/users/al", {}, {}, "tierstore:AdminIdentities", True),  # needs tierstore:Admin
    ("GET", "_tierstore", "admin/users/al/x/y/z", {}, {}, "tierstore:AdminIdentities", True),
    ("GET", "_tierstore", "admin/kms/keys", {}, {}, "tierstore:AdminKmsListKeys", True),
    ("POST", "_tierstore", "admin/kms/keys", {}, {}, "tierstore:AdminKmsCreateKey", True),
    ("GET", "_tierstore", "admin/kms/keys/k1", {}, {}, "tierstore:AdminKmsDescribeKey", True),
    ("POST", "_tierstore", "admin/kms/keys/k1/enable", {}, {}, "tierstore:AdminKmsEnableKey", True),
    ("POST", "_tierstore", "admin/kms/keys/k1/disable", {}, {}, "tierstore:AdminKmsDisableKey", True),
    ("POST", "_tierstore", "admin/kms/keys/k1/rotate", {}, {}, "tierstore:AdminKmsRotateKey", True),
    ("POST", "_tierstore", "admin/kms/keys/k1/rewrap", {}, {}, "tierstore:AdminKmsRewrapKey", True),
    ("GET", "_tierstore", "admin/kms/keys/k1/rewrap", {}, {}, "tierstore:AdminKms", True),  # needs tierstore:Admin
    ("GET", "_tierstore", "admin/kms/keys/k1/rotate", {}, {}, "tierstore:AdminKms", True),  # needs tierstore:Admin
    ("DELETE", "_tierstore", "admin/kms/keys/k1", {}, {}, "tierstore:AdminKms", True),
    ("POST", "_tierstore", "admin/kms/keys//rotate", {}, {}, "tierstore:AdminKms", True),
    ("GET", "_tierstore", "admin/kms", {}, {}, "tierstore:AdminKms", True),
    ("GET", "_tierstore", "admin/tiers", {}, {}, "tierstore:ListTiers", True),
    ("POST", "_tierstore", "admin/tiers", {}, {}, "tierstore:CreateTier", True),
    ("DELETE", "_tierstore", "admin/tiers/COLD", {}, {}, "tierstore:DeleteTier", True),
    ("GET", "_tierstore", "admin/tiers/status", {}, {}, "tierstore:GetTierStatus", True),
    ("GET", "_tierstore", "admin/tiers/COLD/status", {}, {}, "tierstore:GetTierStatus", True),
    (
        "POST",
        "_tierstore",
        "admin/tiers/COLD/transition",
        {"bucket": "b", "key": "k"},
        {},
        "tierstore:TransitionObject",
        True,
    ),
    ("GET", "_tierstore", "admin/tiers/COLD/transition", {}, {}, "tierstore:AdminTiers", True),
    ("POST", "_tierstore", "admin/tiers/COLD/transitions", {}, {}, "tierstore:TransitionObjects", True),
    ("GET", "_tierstore", "admin/tiers/COLD/transitions", {}, {}, "tierstore:AdminTiers", True),
    ("GET", "_tierstore", "admin/tiers/COLD", {}, {}, "tierstore:AdminTiers", True),  # needs tierstore:Admin
    ("DELETE", "_tierstore", "admin/tiers", {}, {}, "tierstore:AdminTiers", True),
    ("POST", "_tierstore", "admin/tiers/COLD/status", {}, {}, "tierstore:AdminTiers", True),
    ("DELETE", "_tierstore", "admin/tiers//status", {}, {}, "tierstore:AdminTiers", True),
    ("GET", "_tierstore", "admin/other", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "admin", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", None, {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "nothing", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "datasets", {"name": "d"}, {}, "tierstore:ListDatasets", True),
    ("POST", "_tierstore", "datasets", {}, {}, "tierstore:CreateDataset", True),
    ("PUT", "_tierstore", "datasets", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "datasets/d", {}, {}, "tierstore:GetDataset", True),
    ("GET", "_tierstore", "datasets/d/3", {}, {}, "tierstore:GetDataset", True),
    ("DELETE", "_tierstore", "datasets/d/3", {}, {}, "tierstore:DeleteDataset", True),
    ("DELETE", "_tierstore", "datasets/d", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "datasets/d/3/manifest", {}, {}, "tierstore:GetDatasetManifest", True),
    ("GET", "_tierstore", "datasets/d/3/other", {}, {}, UNKNOWN, False),
    ("POST", "_tierstore", "datasets/d/3/archive", {"to": "COLD"}, {}, "tierstore:ArchiveDataset", True),
    ("GET", "_tierstore", "datasets/d/3/archive", {}, {}, UNKNOWN, False),
    ("POST", "_tierstore", "datasets/d/3/pin", {"job": "j"}, {}, "tierstore:PinDataset", True),
    ("DELETE", "_tierstore", "datasets/d/3/pin", {"job": "j"}, {}, "tierstore:UnpinDataset", True),
    ("PUT", "_tierstore", "datasets/d/3/pin", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "jobs", {}, {}, "tierstore:ListJobs", True),
    ("GET", "_tierstore", "usage", {}, {}, "tierstore:BucketUsage", True),
    ("PUT", "_tierstore", "usage", {}, {}, UNKNOWN, False),
    ("POST", "_tierstore", "jobs", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "models", {}, {}, "tierstore:ListModels", True),
    ("POST", "_tierstore", "models", {}, {}, "tierstore:RegisterModel", True),
    ("GET", "_tierstore", "models/m", {}, {}, "tierstore:GetModel", True),
    ("GET", "_tierstore", "models/m/aliases", {}, {}, "tierstore:ListModelAliases", True),
    ("GET", "_tierstore", "models/m/aliases/prod", {}, {}, "tierstore:GetModelAlias", True),
    ("PUT", "_tierstore", "models/m/aliases/prod", {}, {}, "tierstore:PutModelAlias", True),
    ("DELETE", "_tierstore", "models/m/aliases/prod", {}, {}, "tierstore:DeleteModelAlias", True),
    ("GET", "_tierstore", "models/m/aliases/a/b", {}, {}, UNKNOWN, False),
    ("GET", "_tierstore", "models/m/2", {}, {}, "tierstore:GetModel", True),
    ("GET", "_tierstore", "models/m/prod", {}, {}, "tierstore:GetModel", True),
    ("DELETE", "_tierstore", "models/m/2", {}, {}, "tierstore:DeleteModel", True),
    ("GET", "_tierstore", "models/m/2/manifest", {}, {}, "tierstore:GetModelManifest", True),
    ("POST", "_tierstore", "models/m/2/manifest", {}, {}, UNKNOWN, False),
    # probes: unsigned GET/HEAD, path-style only
    ("GET", "minio", "health/live", {}, {}, "tierstore:HealthLive", True),
    ("HEAD", "health", "live", {}, {}, "tierstore:HealthLive", True),
    ("GET", "minio", "health/ready", {}, {}, "tierstore:HealthReady", True),
    ("GET", "health", "ready", {"x": "1"}, {}, "tierstore:HealthReady", True),
    ("GET", "minio", "health/cluster", {}, {}, "tierstore:HealthCluster", True),
    ("GET", "minio", "health/cluster/read", {}, {}, "tierstore:HealthClusterRead", True),
    ("GET", "metrics", None, {}, {"authorization": "Bearer t"}, "tierstore:Metrics", True),
    ("GET", "minio", "v2/metrics/cluster", {}, {}, "tierstore:MinioClusterMetrics", True),
    ("GET", "minio", "v2/metrics/bucket", {}, {}, "tierstore:MinioBucketMetrics", True),
    ("GET", "minio", "v2/metrics/node", {}, {}, "tierstore:MinioNodeMetrics", True),
    # ... a signed request to the same path is S3
    ("GET", "minio", "health/live", {}, {"authorization": "AWS4-HMAC-SHA256 Credential=x"}, "GetObject", True),
    ("GET", "metrics", None, {"X-Amz-Signature": "ab"}, {}, "ListObjects", True),
    ("HEAD", "health", "ready", {"Signature": "x", "AWSAccessKeyId": "a"}, {}, "HeadObject", True),
    ("GET", "metrics", None, {}, {"authorization": "AWS ak:sig"}, "ListObjects", True),
    ("PUT", "health", "live", {}, {}, "PutObject", True),
    ("DELETE", "metrics", None, {}, {}, "DeleteBucket", True),
    ("GET", "minio", "health", {}, {}, "GetObject", True),
]


@pytest.mark.parametrize(("method", "bucket", "key", "query", "headers", "action", "implemented"), TABLE)
def test_route_table(
    method: str,
    bucket: str | None,
    key: str | None,
    query: dict[str, str],
    headers: dict[str, str],
    action: str,
    implemented: bool,
) -> None:
    assert route(method, bucket, key, query, headers) == Route(action, implemented)


def test_probes_only_path_style() -> None:
    """Virtual-hosted, ``/metrics`` is the key ``metrics`` of the host's bucket."""
    assert route("GET", "minio", "health/live", {}, {}, virtual=True).action == "GetObject"
    assert route("GET", "metrics", None, {}, {}, virtual=True).action == "ListObjects"
    assert set(PROBES) >= {"/minio/health/live", "/minio/health/ready", "/minio/health/cluster", "/health/live"}


# --- the table dispatches ------------------------------------------------------------------
def test_every_implemented_action_has_a_handler() -> None:
    """What ``route`` calls implemented is exactly what ``ACTIONS`` dispatches (probes and the
    unauthenticated preflight aside): a name without a handler, or a handler no request reaches,
    fails here."""
    named = {row[5] for row in TABLE if row[6]} - PROBE_ACTIONS - set(UNAUTHENTICATED)
    refused = {row[5] for row in TABLE if not row[6]}
    assert named == set(ACTIONS)
    assert not refused & set(ACTIONS)
    assert not set(UNAUTHENTICATED) & set(ACTIONS)  # answered without credentials: never in ACTIONS
    for name, action in ACTIONS.items():
        assert callable(action.handler), name
        assert action.perms or action.per_entry, f"{name} needs no permission at all"
        for perm in action.perms:
            assert re.fullmatch(r"(s3|tierstore|iam|kms):[A-Za-z]+", perm.action), (name, perm)
            assert perm.on in ("request", "source", "any", "iam-user", "query-object"), (name, perm)


def test_compatibility_matrix_names_every_s3_action() -> None:
    """docs/s3-compatibility.md names each implemented S3 action, alone or in its row's shorthand
    (``Put/Get/DeleteObjectTagging`` names PutObjectTagging, GetObjectTagging, DeleteObjectTagging)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "s3-compatibility.md").read_text()
    named = set(re.findall(r"\b[A-Z][A-Za-z0-9]+\b", doc))
    for group in re.findall(r"\b((?:(?:Put|Get|Delete)/)+)(Put|Get|Delete)([A-Z][A-Za-z]+)", doc):
        verbs, last, rest = group
        named |= {f"{verb}{rest}" for verb in [*verbs.strip("/").split("/"), last]}
    missing = sorted(a for a in ACTIONS if not a.startswith("tierstore:") and a not in named)
    assert not missing, f"not in docs/s3-compatibility.md: {missing}"


# --- the query APIs (IAM, STS) -----------------------------------------------------------------
FORM = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}


@pytest.mark.parametrize(
    ("method", "bucket", "query", "headers", "action"),
    [
        ("POST", None, {}, FORM, QUERY_API),
        ("GET", None, {"Action": "ListUsers"}, {}, QUERY_API),
        ("POST", None, {}, {"content-type": "application/xml"}, UNKNOWN),  # S3 has no POST /
        ("GET", None, {}, {}, "ListBuckets"),
        ("POST", "bkt", {}, FORM, "PostObject"),  # POST Object (its form step refuses it)
    ],
)
def test_query_api_requests_are_named_for_the_dispatcher(
    method: str, bucket: str | None, query: dict[str, str], headers: dict[str, str], action: str
) -> None:
    assert route(method, bucket, None, query, headers).action == action


def test_query_api_route_is_path_style_only() -> None:
    assert route("POST", None, None, {}, FORM, virtual=True).action == UNKNOWN


def test_a_transition_is_authorized_on_the_object_its_query_names() -> None:
    """tierstore:TransitionObject on arn:aws:s3:::BUCKET/KEY (not "*"); without both, on "*"."""
    action = ACTIONS["tierstore:TransitionObject"]
    query = {"bucket": "b", "key": "runs/a b", "versionId": "v1"}
    named = checks(action, "_tierstore", "admin/tiers/COLD/transition", query, {})
    assert [(c.action, c.resource) for c in named] == [("tierstore:TransitionObject", "arn:aws:s3:::b/runs/a b")]
    bare = checks(action, "_tierstore", "admin/tiers/COLD/transition", {"bucket": "b"}, {})
    assert [(c.action, c.resource) for c in bare] == [("tierstore:TransitionObject", "*")]
    # A batch names its objects in its body: each is authorized by the handler, none here.
    many = ACTIONS["tierstore:TransitionObjects"]
    assert checks(many, "_tierstore", "admin/tiers/COLD/transitions", query, {}) == ()
    assert many.per_entry == ("tierstore:TransitionObject",)
