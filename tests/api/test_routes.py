"""The route table (api/_routes.py): every branch of the dispatcher has its name, and the
dispatcher and the table agree on real requests (the access log names what ran)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess
from tests.s3http import Resp, signed_request
from tierstore.api._routes import PROBES, UNKNOWN, Route, route

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
    ("POST", "b", None, {}, {}, UNKNOWN, False),
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
    ("GET", "b", None, {"acl": ""}, {}, "GetBucketAcl", False),
    ("PUT", "b", None, {"policy": ""}, {}, "PutBucketPolicy", False),
    ("DELETE", "b", None, {"lifecycle": ""}, {}, "DeleteBucketLifecycle", False),
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
    ("GET", "b", "k", {"acl": ""}, {}, "GetObjectAcl", False),
    ("GET", "b", "k", {"attributes": ""}, {}, "GetObjectAttributes", True),
    ("POST", "b", "k", {"restore": ""}, {}, "RestoreObject", False),
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


# --- the dispatch and the table agree on real requests --------------------------------------
def _logged(server: ServerProcess, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The access-log lines of ``request_ids`` (written right after each response)."""
    deadline = time.monotonic() + 10
    while True:
        lines = {}
        for line in server.log_path.read_text(errors="replace").splitlines():
            if line.startswith('{"time"'):
                doc = json.loads(line)
                lines[doc["request_id"]] = doc
        if all(r in lines for r in request_ids) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _rid(call: Any) -> str:
    try:
        out = call()
    except ClientError as exc:
        return str(exc.response["ResponseMetadata"]["RequestId"])
    return str(out["ResponseMetadata"]["RequestId"])


def _raw(r: Resp) -> str:
    return r.headers["x-amz-request-id"]


def test_dispatch_and_table_agree(server: ServerProcess, s3: Any) -> None:
    """Each boto3 (and raw) call is logged with the API name the table gives; the calls the
    dispatcher refuses are answered 501/405 and the table says not implemented."""
    b = f"routes-{uuid.uuid4().hex[:12]}"
    calls: list[tuple[str, str]] = []  # (request id, expected action)

    def do(action: str, call: Any) -> None:
        calls.append((_rid(call), action))

    do("CreateBucket", lambda: s3.create_bucket(Bucket=b))
    do("ListBuckets", s3.list_buckets)
    do("HeadBucket", lambda: s3.head_bucket(Bucket=b))
    do("GetBucketLocation", lambda: s3.get_bucket_location(Bucket=b))
    do("PutBucketVersioning", lambda: s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"}))
    do("GetBucketVersioning", lambda: s3.get_bucket_versioning(Bucket=b))
    do("PutObject", lambda: s3.put_object(Bucket=b, Key="a", Body=b"abc"))
    do("GetObject", lambda: s3.get_object(Bucket=b, Key="a"))
    do("HeadObject", lambda: s3.head_object(Bucket=b, Key="a"))
    do("CopyObject", lambda: s3.copy_object(Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "a"}))
    do("ListObjects", lambda: s3.list_objects(Bucket=b))
    do("ListObjectsV2", lambda: s3.list_objects_v2(Bucket=b))
    do("ListObjectVersions", lambda: s3.list_object_versions(Bucket=b))
    do("PutObjectTagging", lambda: s3.put_object_tagging(Bucket=b, Key="a", Tagging={"TagSet": []}))
    do("GetObjectTagging", lambda: s3.get_object_tagging(Bucket=b, Key="a"))
    do("DeleteObjectTagging", lambda: s3.delete_object_tagging(Bucket=b, Key="a"))
    do("PutBucketTagging", lambda: s3.put_bucket_tagging(Bucket=b, Tagging={"TagSet": [{"Key": "k", "Value": "v"}]}))
    do("GetBucketTagging", lambda: s3.get_bucket_tagging(Bucket=b))
    do("DeleteBucketTagging", lambda: s3.delete_bucket_tagging(Bucket=b))
    do("GetObjectLockConfiguration", lambda: s3.get_object_lock_configuration(Bucket=b))
    do("GetObjectRetention", lambda: s3.get_object_retention(Bucket=b, Key="a"))
    do("GetObjectLegalHold", lambda: s3.get_object_legal_hold(Bucket=b, Key="a"))
    do("PutObjectLegalHold", lambda: s3.put_object_legal_hold(Bucket=b, Key="a", LegalHold={"Status": "OFF"}))
    up = s3.create_multipart_upload(Bucket=b, Key="mp")
    calls.append((up["ResponseMetadata"]["RequestId"], "CreateMultipartUpload"))
    uid = up["UploadId"]
    part = s3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=1, Body=b"x" * 10)
    calls.append((part["ResponseMetadata"]["RequestId"], "UploadPart"))
    do("UploadPartCopy", lambda: s3.upload_part_copy(
        Bucket=b, Key="mp", UploadId=uid, PartNumber=2, CopySource={"Bucket": b, "Key": "a"}))  # fmt: skip
    do("ListParts", lambda: s3.list_parts(Bucket=b, Key="mp", UploadId=uid))
    do("ListMultipartUploads", lambda: s3.list_multipart_uploads(Bucket=b))
    do("CompleteMultipartUpload", lambda: s3.complete_multipart_upload(
        Bucket=b, Key="mp", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}))  # fmt: skip
    up2 = s3.create_multipart_upload(Bucket=b, Key="mp2")["UploadId"]
    do("AbortMultipartUpload", lambda: s3.abort_multipart_upload(Bucket=b, Key="mp2", UploadId=up2))
    do("GetBucketAcl", lambda: s3.get_bucket_acl(Bucket=b))
    do("PutBucketPolicy", lambda: s3.put_bucket_policy(Bucket=b, Policy="{}"))
    do("GetObjectAcl", lambda: s3.get_object_acl(Bucket=b, Key="a"))
    do("GetObjectAttributes", lambda: s3.get_object_attributes(Bucket=b, Key="a", ObjectAttributes=["ETag"]))
    do("DeleteObject", lambda: s3.delete_object(Bucket=b, Key="c"))
    query_body = json.dumps({"bucket": b, "query": "size > 0"}).encode()
    raw = [
        (signed_request(server, "POST", f"/{b}/a", b""), UNKNOWN),
        (signed_request(server, "PUT", "/", b""), UNKNOWN),
        (signed_request(server, "POST", "/_tierstore/query", query_body), "tierstore:Query"),
        (signed_request(server, "GET", "/_tierstore/datasets"), "tierstore:ListDatasets"),
        (signed_request(server, "GET", "/_tierstore/models"), "tierstore:ListModels"),
        (signed_request(server, "GET", "/_tierstore/admin/info"), "tierstore:AdminInfo"),
        (signed_request(server, "GET", "/_tierstore/nothing"), UNKNOWN),
    ]
    for r, action in raw:
        calls.append((_raw(r), action))
    # What the table says of each action: a dispatcher that learns an operation (or loses one)
    # without the table following fails here.
    implemented = {row[5]: row[6] for row in TABLE}
    unimplemented = {rid for (rid, action) in calls if not implemented[action]}
    versions = s3.list_object_versions(Bucket=b)
    objs = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in [*versions.get("Versions", []),
                                                                       *versions.get("DeleteMarkers", [])]]  # fmt: skip
    do("DeleteObjects", lambda: s3.delete_objects(Bucket=b, Delete={"Objects": objs}))
    do("DeleteBucket", lambda: s3.delete_bucket(Bucket=b))

    logged = _logged(server, [rid for rid, _ in calls])
    for rid, action in calls:
        assert rid in logged, (rid, action)
        line = logged[rid]
        assert line["api"] == action, line
        if action == UNKNOWN:
            assert line["status"] in (405, 501), line
        elif rid in unimplemented:
            assert (line["status"], line["error"]) == (501, "NotImplemented"), line
        else:
            assert line["status"] < 500 and line["error"] != "NotImplemented", line
