"""The authorization hook (api/_authorize.py): called by the dispatcher exactly once per request,
after authentication and before any handler, with the IAM action(s), resource ARN(s) and
condition keys of the request.

In-process: ``S3App`` is driven directly with a fake ASGI receive/send (no HTTP), so a test can
inject an ``Authorizer`` through the constructor and see whether the body was ever read."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.s3http import sign_v4
from tierstore import errors as e
from tierstore.api import S3App
from tierstore.api._authorize import AllowAuthenticated, RequestContext
from tierstore.catalog import SqliteCatalog
from tierstore.server import ServerConfig, build_app, prepare_master_key

PORT = 9000
B = "authz"


@dataclass
class Recorder:
    """Records every request it is asked about; denies those whose IAM actions meet ``deny``."""

    deny: set[str] = field(default_factory=set)
    seen: list[RequestContext] = field(default_factory=list)

    async def authorize(self, request: RequestContext) -> None:
        self.seen.append(request)
        if "*" in self.deny or any(c.action in self.deny for c in request.checks):
            raise e.AccessDenied()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    body_reads: int  # receive() calls: 0 when the body was never read

    def code(self) -> str:
        return ET.fromstring(self.body).findtext("Code") or ""


_RUNNER: list[asyncio.Runner] = []  # one event loop for the module: the app's services outlive a request


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3App]:
    data = tmp_path_factory.mktemp("authz")
    config = ServerConfig(data_dir=str(Path(data)), access_key=ACCESS_KEY, secret_key=SECRET_KEY, access_log=False)
    catalog = SqliteCatalog(Path(data) / "catalog.db")
    asyncio.run(prepare_master_key(config, catalog))  # what serve() does before the workers start
    catalog.close()
    app = build_app(config)
    with asyncio.Runner() as runner:
        _RUNNER.append(runner)
        try:
            yield app
        finally:
            _RUNNER.clear()


def app_with(base: S3App, authorizer: Recorder) -> S3App:
    return S3App(
        base.service,
        base.auth,
        admin=base.admin,
        datasets=base.datasets,
        models=base.models,
        metrics=base.metrics,
        authorizer=authorizer,
    )


def call(
    app: S3App,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    query: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
    sign: bool = True,
) -> Answer:
    """``sign=False``: an unsigned (anonymous) request."""
    if sign:
        digest = hashlib.sha256(body).hexdigest()
        signed = sign_v4(PORT, method, path, payload_hash=digest, query=query, headers=headers)
        target, sent_headers = signed.target, signed.headers
    else:
        target = path + ("?" + urlencode(query) if query else "")
        sent_headers = {"host": f"127.0.0.1:{PORT}", **(headers or {})}
    raw_path, _, qs = target.partition("?")
    hdrs = [(k.encode(), v.encode()) for k, v in sent_headers.items()]
    if body:
        hdrs.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": raw_path.encode(),
        "query_string": qs.encode(),
        "headers": hdrs,
        "client": ("127.0.0.5", 4242),
        "scheme": "http",
    }
    reads = [0]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        reads[0] += 1
        if reads[0] == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the app waits for a disconnect
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    _RUNNER[0].run(app(scope, receive, send))
    start = sent[0]
    out = b"".join(m.get("body", b"") for m in sent[1:])
    headers_out = {k.decode(): v.decode("latin-1") for k, v in start["headers"]}
    return Answer(start["status"], headers_out, out, reads[0])


def arn(path: str) -> str:
    return f"arn:aws:s3:::{path}"


CS = {"x-amz-copy-source": f"/{B}/src?versionId=v1"}
# (method, path, query, headers) -> (API name, [(IAM action, resource), ...])
TABLE: list[tuple[str, str, list[tuple[str, str]], dict[str, str], str, list[tuple[str, str]]]] = [
    ("GET", "/", [], {}, "ListBuckets", [("s3:ListAllMyBuckets", "*")]),
    ("PUT", f"/{B}x", [], {}, "CreateBucket", [("s3:CreateBucket", arn(f"{B}x"))]),
    ("HEAD", f"/{B}", [], {}, "HeadBucket", [("s3:ListBucket", arn(B))]),
    ("DELETE", f"/{B}", [], {}, "DeleteBucket", [("s3:DeleteBucket", arn(B))]),
    ("GET", f"/{B}", [("list-type", "2"), ("prefix", "a/")], {}, "ListObjectsV2", [("s3:ListBucket", arn(B))]),
    ("GET", f"/{B}", [], {}, "ListObjects", [("s3:ListBucket", arn(B))]),
    ("GET", f"/{B}", [("versions", "")], {}, "ListObjectVersions", [("s3:ListBucketVersions", arn(B))]),
    ("GET", f"/{B}", [("uploads", "")], {}, "ListMultipartUploads", [("s3:ListBucketMultipartUploads", arn(B))]),
    ("GET", f"/{B}", [("location", "")], {}, "GetBucketLocation", [("s3:GetBucketLocation", arn(B))]),
    ("PUT", f"/{B}", [("versioning", "")], {}, "PutBucketVersioning", [("s3:PutBucketVersioning", arn(B))]),
    ("DELETE", f"/{B}", [("tagging", "")], {}, "DeleteBucketTagging", [("s3:PutBucketTagging", arn(B))]),
    (
        "GET",
        f"/{B}",
        [("object-lock", "")],
        {},
        "GetObjectLockConfiguration",
        [("s3:GetBucketObjectLockConfiguration", arn(B))],
    ),
    ("POST", f"/{B}", [("delete", "")], {}, "DeleteObjects", []),  # per key, in the handler
    ("GET", f"/{B}/k", [], {}, "GetObject", [("s3:GetObject", arn(f"{B}/k"))]),
    ("GET", f"/{B}/k", [("versionId", "v")], {}, "GetObject", [("s3:GetObjectVersion", arn(f"{B}/k"))]),
    ("HEAD", f"/{B}/a/b c", [], {}, "HeadObject", [("s3:GetObject", arn(f"{B}/a/b c"))]),
    ("PUT", f"/{B}/k", [], {}, "PutObject", [("s3:PutObject", arn(f"{B}/k"))]),
    (
        "PUT",
        f"/{B}/k",
        [],
        {"x-amz-tagging": "a=b", "x-amz-object-lock-legal-hold": "ON"},
        "PutObject",
        [
            ("s3:PutObject", arn(f"{B}/k")),
            ("s3:PutObjectTagging", arn(f"{B}/k")),
            ("s3:PutObjectLegalHold", arn(f"{B}/k")),
        ],
    ),
    (
        "PUT",
        f"/{B}/dst",
        [],
        CS,
        "CopyObject",
        [("s3:GetObjectVersion", arn(f"{B}/src")), ("s3:PutObject", arn(f"{B}/dst"))],
    ),
    ("DELETE", f"/{B}/k", [], {}, "DeleteObject", [("s3:DeleteObject", arn(f"{B}/k"))]),
    (
        "DELETE",
        f"/{B}/k",
        [("versionId", "v")],
        {"x-amz-bypass-governance-retention": "true"},
        "DeleteObject",
        [("s3:DeleteObjectVersion", arn(f"{B}/k")), ("s3:BypassGovernanceRetention", arn(f"{B}/k"))],
    ),
    (
        "GET",
        f"/{B}/k",
        [("attributes", "")],
        {"x-amz-object-attributes": "ETag"},
        "GetObjectAttributes",
        [("s3:GetObject", arn(f"{B}/k")), ("s3:GetObjectAttributes", arn(f"{B}/k"))],
    ),
    ("GET", f"/{B}/k", [("tagging", "")], {}, "GetObjectTagging", [("s3:GetObjectTagging", arn(f"{B}/k"))]),
    (
        "PUT",
        f"/{B}/k",
        [("tagging", ""), ("versionId", "v")],
        {},
        "PutObjectTagging",
        [("s3:PutObjectVersionTagging", arn(f"{B}/k"))],
    ),
    ("PUT", f"/{B}/k", [("retention", "")], {}, "PutObjectRetention", [("s3:PutObjectRetention", arn(f"{B}/k"))]),
    ("GET", f"/{B}/k", [("legal-hold", "")], {}, "GetObjectLegalHold", [("s3:GetObjectLegalHold", arn(f"{B}/k"))]),
    ("POST", f"/{B}/k", [("uploads", "")], {}, "CreateMultipartUpload", [("s3:PutObject", arn(f"{B}/k"))]),
    ("PUT", f"/{B}/k", [("partNumber", "1"), ("uploadId", "u")], {}, "UploadPart", [("s3:PutObject", arn(f"{B}/k"))]),
    (
        "PUT",
        f"/{B}/k",
        [("partNumber", "1"), ("uploadId", "u")],
        CS,
        "UploadPartCopy",
        [("s3:GetObjectVersion", arn(f"{B}/src")), ("s3:PutObject", arn(f"{B}/k"))],
    ),
    ("POST", f"/{B}/k", [("uploadId", "u")], {}, "CompleteMultipartUpload", [("s3:PutObject", arn(f"{B}/k"))]),
    (
        "DELETE",
        f"/{B}/k",
        [("uploadId", "u")],
        {},
        "AbortMultipartUpload",
        [("s3:AbortMultipartUpload", arn(f"{B}/k"))],
    ),
    ("GET", f"/{B}/k", [("uploadId", "u")], {}, "ListParts", [("s3:ListMultipartUploadParts", arn(f"{B}/k"))]),
    ("POST", "/_tierstore/query", [], {}, "tierstore:Query", []),
    ("POST", "/_tierstore/batch", [], {}, "tierstore:Batch", []),
    ("GET", "/_tierstore/admin/info", [], {}, "tierstore:AdminInfo", [("tierstore:Admin", "*")]),
    ("POST", "/_tierstore/admin/heal", [], {}, "tierstore:AdminHeal", [("tierstore:Admin", "*")]),
    ("POST", "/_tierstore/datasets", [], {}, "tierstore:CreateDataset", [("tierstore:CreateDataset", "*")]),
    (
        "DELETE",
        "/_tierstore/models/m/aliases/prod",
        [],
        {},
        "tierstore:DeleteModelAlias",
        [("tierstore:DeleteModelAlias", "*")],
    ),
]


@pytest.mark.parametrize(("method", "path", "query", "headers", "api", "checks"), TABLE)
def test_called_once_before_the_handler(
    base: S3App,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    api: str,
    checks: list[tuple[str, str]],
) -> None:
    """Every dispatched request is authorized exactly once, with its IAM checks; denied, it is a
    403 AccessDenied whatever the handler would have said (no bucket exists here)."""
    rec = Recorder(deny={"*"})
    body = b"<x/>" if method in ("PUT", "POST") else b""
    answer = call(app_with(base, rec), method, path, body, query=query, headers=headers)
    assert len(rec.seen) == 1, [r.api for r in rec.seen]
    seen = rec.seen[0]
    assert seen.api == api
    assert [(c.action, c.resource) for c in seen.checks] == checks
    assert seen.principal.access_key == ACCESS_KEY
    assert answer.status == 403
    if method != "HEAD":
        assert answer.code() == "AccessDenied"


@pytest.mark.parametrize(
    ("method", "path", "query", "status", "code"),
    [
        ("GET", f"/{B}", [("website", "")], 501, "NotImplemented"),  # known, not implemented
        ("PUT", f"/{B}/k", [("renameObject", "")], 501, "NotImplemented"),
        ("POST", f"/{B}/k", [], 405, "MethodNotAllowed"),  # no such operation
        ("PUT", "/", [], 405, "MethodNotAllowed"),
        ("GET", "/_tierstore/batch", [], 405, "MethodNotAllowed"),
        ("GET", "/_tierstore/nothing", [], 501, "NotImplemented"),
    ],
)
def test_refused_routes_are_not_authorized(
    base: S3App, method: str, path: str, query: list[tuple[str, str]], status: int, code: str
) -> None:
    """What the table does not dispatch is refused as before, touching nothing: no authorization."""
    rec = Recorder(deny={"*"})
    answer = call(app_with(base, rec), method, path, query=query)
    assert (answer.status, answer.code()) == (status, code)
    assert rec.seen == []


def test_unsigned_requests_are_authorized_as_the_anonymous_principal(base: S3App) -> None:
    """An unsigned request is not refused by the authenticator: it reaches the hook as the
    anonymous principal, and the hook decides (here: allowed, so the handler answers)."""
    rec = Recorder()
    answer = call(app_with(base, rec), "GET", f"/{B}/k", sign=False, headers={"if-match": '"x"'})
    assert answer.status == 404 and answer.code() == "NoSuchBucket"  # the handler ran
    [seen] = rec.seen
    assert seen.principal.is_anonymous and seen.principal.access_key == ""
    assert seen.scheme == "anonymous"
    assert [(c.action, c.resource) for c in seen.checks] == [("s3:GetObject", f"arn:aws:s3:::{B}/k")]
    assert "s3:signatureversion" not in seen.conditions()


def test_anonymous_refused_by_the_default_authorizer_and_on_refused_routes(base: S3App) -> None:
    """``AllowAuthenticated`` refuses anonymous callers; a route the table does not dispatch
    answers an anonymous caller AccessDenied (not 501/405: it learns nothing)."""
    app = S3App(base.service, base.auth, admin=base.admin, metrics=base.metrics, authorizer=AllowAuthenticated())
    for method, path, query in (
        ("GET", "/", []),
        ("GET", f"/{B}/k", []),
        ("PUT", f"/{B}", []),
        ("GET", f"/{B}", [("website", "")]),
        ("GET", "/_tierstore/nothing", []),
    ):
        answer = call(app, method, path, query=query, sign=False)
        assert (answer.status, answer.code()) == (403, "AccessDenied"), (method, path, query)
    assert call(app, "PUT", f"/{B}").status == 200  # signed: allowed
    assert call(app, "DELETE", f"/{B}").status == 204


def test_condition_keys(base: S3App) -> None:
    rec = Recorder()
    app = app_with(base, rec)
    call(app, "PUT", f"/{B}")
    call(
        app,
        "GET",
        f"/{B}",
        query=[("list-type", "2"), ("prefix", "a/"), ("delimiter", "/"), ("max-keys", "5")],
        headers={"user-agent": "ua/1", "referer": "http://r"},
    )
    call(app, "GET", f"/{B}/k", query=[("versionId", "v9")])
    listing, get = rec.seen[1].conditions(), rec.seen[2].conditions()
    assert listing["s3:prefix"] == "a/" and listing["s3:delimiter"] == "/" and listing["s3:max-keys"] == "5"
    assert listing["aws:UserAgent"] == "ua/1" and listing["aws:Referer"] == "http://r"
    assert listing["aws:SourceIp"] == "127.0.0.5" and listing["aws:SecureTransport"] == "false"
    assert listing["s3:signatureversion"] == "AWS4-HMAC-SHA256" and listing["s3:authType"] == "REST-HEADER"
    assert listing["aws:CurrentTime"].endswith("Z") and listing["aws:EpochTime"].isdigit()
    assert "s3:versionid" not in listing and "s3:prefix" not in get
    assert get["s3:versionid"] == "v9"


def test_denied_reads_leak_nothing(base: S3App) -> None:
    """A caller denied s3:GetObject gets the same 403 for an existing and a missing key, with or
    without If-Match / If-None-Match: no 304, 412 or 404 tells it the key exists or its ETag."""
    rec = Recorder()
    app = app_with(base, rec)
    assert call(app, "PUT", f"/{B}").status in (200, 409)
    put = call(app, "PUT", f"/{B}/there", b"secret bytes")
    assert put.status == 200
    etag = put.headers["etag"]
    rec.deny = {"s3:GetObject"}
    answers = []
    for key in ("there", "missing"):
        for cond in ({}, {"if-none-match": etag}, {"if-match": etag}, {"if-match": '"0"'}, {"if-none-match": '"0"'}):
            for method in ("GET", "HEAD"):
                a = call(app, method, f"/{B}/{key}", headers=cond)
                body = a.code() if method == "GET" else a.body
                leaked = {
                    h for h in ("etag", "last-modified", "x-amz-version-id", "x-amz-delete-marker") if h in a.headers
                }
                answers.append((method, a.status, body, leaked))
    assert all(a[1:] == (403, "AccessDenied", set()) for a in answers if a[0] == "GET"), answers
    assert all(a[1:] == (403, b"", set()) for a in answers if a[0] == "HEAD"), answers


def test_denied_put_never_reads_the_body(base: S3App) -> None:
    """Expect: 100-continue: a denied upload is refused without asking for the body (the client
    is never invited to send it) and nothing is written."""
    rec = Recorder()
    app = app_with(base, rec)
    call(app, "PUT", f"/{B}")
    rec.deny = {"s3:PutObject"}
    a = call(app, "PUT", f"/{B}/up", b"x" * 5000, headers={"expect": "100-continue"})
    assert (a.status, a.code()) == (403, "AccessDenied")
    assert a.body_reads == 0
    assert a.headers.get("connection") == "close"
    rec.deny = set()
    assert call(app, "HEAD", f"/{B}/up").status == 404


def test_delete_objects_authorizes_each_key(base: S3App) -> None:
    """DeleteObjects needs s3:DeleteObject per key: a denied key is an AccessDenied entry and
    stays; the others are deleted."""
    rec = Recorder()
    app = app_with(base, rec)
    call(app, "PUT", f"/{B}")
    for k in ("keep/1", "go/1"):
        assert call(app, "PUT", f"/{B}/{k}", b"v").status == 200

    class DenyKeep(Recorder):
        async def authorize(self, request: RequestContext) -> None:
            self.seen.append(request)
            if any(c.action == "s3:DeleteObject" and c.resource.startswith(arn(f"{B}/keep/")) for c in request.checks):
                raise e.AccessDenied()

    deny = DenyKeep()
    doc = b"<Delete><Object><Key>keep/1</Key></Object><Object><Key>go/1</Key></Object></Delete>"
    md5 = base64.b64encode(hashlib.md5(doc).digest()).decode()
    a = call(app_with(base, deny), "POST", f"/{B}", doc, query=[("delete", "")], headers={"content-md5": md5})
    assert a.status == 200, a.body
    root = ET.fromstring(a.body)
    ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
    errors = {x.findtext(f"{ns}Key"): x.findtext(f"{ns}Code") for x in root.iter(f"{ns}Error")}
    deleted = {x.findtext(f"{ns}Key") for x in root.iter(f"{ns}Deleted")}
    assert errors == {"keep/1": "AccessDenied"} and deleted == {"go/1"}
    assert [r.api for r in deny.seen] == ["DeleteObjects"] * 3  # the request, then each key
    assert call(app, "HEAD", f"/{B}/keep/1").status == 200
    assert call(app, "HEAD", f"/{B}/go/1").status == 404


HEADERS_OF_NO_FORM = {"x-amz-tagging": "a=b", "x-amz-acl": "bucket-owner-full-control", "user-agent": "form-test"}


def test_a_post_form_is_authorized_on_its_key_before_the_file_is_read(base: S3App) -> None:
    """POST Object: the key and the signer come from the form; the dispatcher authorizes
    s3:PutObject (and s3:PutObjectTagging for a ``tagging`` field) on the form's key, with the
    form's signature version, before the handler stores anything."""
    from tests.api.test_post_object import multipart, v2_form

    bucket = "authz-no-such-bucket"

    tagging = "<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>"
    conditions = [["starts-with", "$key", "in/"], {"tagging": tagging}]
    fields = v2_form(bucket, conditions, [("key", "in/${filename}"), ("tagging", tagging)])
    body, ctype = multipart(fields, b"file bytes", filename="a.txt")
    rec = Recorder(deny={"s3:PutObject"})
    answer = call(app_with(base, rec), "POST", f"/{bucket}", body, headers={"content-type": ctype})
    assert (answer.status, answer.code()) == (403, "AccessDenied")
    assert len(rec.seen) == 1
    seen = rec.seen[0]
    assert seen.api == "PostObject"
    assert [(c.action, c.resource) for c in seen.checks] == [
        ("s3:PutObject", arn(f"{bucket}/in/a.txt")),
        ("s3:PutObjectTagging", arn(f"{bucket}/in/a.txt")),
    ]
    assert (seen.principal.access_key, seen.scheme) == (ACCESS_KEY, "v2-post")
    assert seen.conditions()["s3:authType"] == "POST"
    # request headers never speak for the form's object: no tagging check, no acl condition
    untagged, ctype = multipart(v2_form(bucket, [{"key": "k"}], [("key", "k")]), b"x")
    call(app_with(base, rec), "POST", f"/{bucket}", untagged, headers={"content-type": ctype, **HEADERS_OF_NO_FORM})
    assert [(c.action, c.resource) for c in rec.seen[1].checks] == [("s3:PutObject", arn(f"{bucket}/k"))]
    assert "s3:x-amz-acl" not in rec.seen[1].conditions()
    assert rec.seen[1].conditions()["aws:UserAgent"] == "form-test"
    allowed = Recorder()
    body, ctype = multipart(fields, b"file bytes", filename="a.txt")
    answer = call(app_with(base, allowed), "POST", f"/{bucket}", body, headers={"content-type": ctype})
    assert (answer.status, answer.code()) == (404, "NoSuchBucket")  # authorized first, then the handler
    assert len(allowed.seen) == 1


def test_lazy_conditions_are_the_request_conditions_computed_on_first_read() -> None:
    """What IamAuthorizer hands iam.evaluate: the same keys and values as
    RequestContext.conditions(), computed only when first read (most policies read none)."""
    from tierstore.api._authorize import Check, LazyConditions, Principal

    ctx = RequestContext(
        Principal("AKUSER"),
        "GetObject",
        (Check("s3:GetObject", "arn:aws:s3:::b/k"),),
        scheme="v4-header",
        headers={"user-agent": "ua/1", "x-amz-acl": "private"},
        query={"versionId": "v1"},
        scope={"client": ("10.0.0.7", 1), "scheme": "http"},
    )
    lazy = LazyConditions(ctx)
    assert ctx._conditions is None  # nothing computed yet
    items = dict(lazy.items())
    assert ctx._conditions is not None
    assert items == ctx.conditions() == dict(lazy)
    assert len(lazy) == len(items)
    assert lazy["aws:SourceIp"] == "10.0.0.7" and lazy["s3:versionid"] == "v1" and lazy["s3:x-amz-acl"] == "private"
    assert lazy.get("s3:prefix") is None and "aws:UserAgent" in lazy
