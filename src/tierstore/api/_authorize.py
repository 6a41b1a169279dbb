"""Authorization: one hook, called by the dispatcher once per request, after authentication and
before any handler runs — so before a precondition, an existence check or a body read can tell
an unauthorized caller anything (whether a key exists, its ETag, its version).

The dispatcher builds a ``RequestContext`` from the route table's IAM column
(``_routes.ACTIONS``): who asks (``principal``), and each (IAM action, resource ARN) the request
needs (``checks``: CopyObject needs ``s3:GetObject`` on the source and ``s3:PutObject`` on the
target). The condition keys known before the body (``s3:prefix``, ``aws:SourceIp``, ...) are
computed only when an authorizer asks for them. An ``Authorizer`` raises ``AccessDenied`` or
returns. Requests that name more resources in their body (DeleteObjects' keys) are checked
again per entry by their handler, with ``RequestContext.entry``.

An unsigned request reaches this hook too, as the anonymous principal (``Principal.anonymous()``:
no access key, ``scheme`` "anonymous"): whether it may do anything is the authorizer's decision
(a bucket policy or an ACL grant to everyone), never the authenticator's.

``AllowAuthenticated`` (the default) allows every signed principal and refuses the anonymous one.
``IamAuthorizer`` (``_iam_authorizer.py``, what ``server.py`` plugs in) evaluates the caller's IAM
policies and the bucket's policy with ``tierstore.iam``.
"""

from __future__ import annotations

import math
import time
from collections.abc import ItemsView, Iterator, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote

from tierstore.engine import format_retain_until, parse_retain_until, parse_tagging_header
from tierstore.errors import AccessDenied, InvalidArgument, InvalidTag

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_DENIED",
    "AllowAuthenticated",
    "Authorizer",
    "Check",
    "LazyConditions",
    "Principal",
    "RequestContext",
    "bucket_arn",
    "object_arn",
]

# How the signature travelled (AuthResult.scheme) -> s3:signatureversion, s3:authType.
_SIGNATURE_VERSION = {
    "v4-header": "AWS4-HMAC-SHA256",
    "v4-query": "AWS4-HMAC-SHA256",
    "v2-header": "AWS",
    "v2-query": "AWS",
    "v4-post": "AWS4-HMAC-SHA256",
    "v2-post": "AWS",
}
_AUTH_TYPE = {
    "v4-header": "REST-HEADER",
    "v2-header": "REST-HEADER",
    "v4-query": "REST-QUERY-STRING",
    "v2-query": "REST-QUERY-STRING",
    "v4-post": "POST",
    "v2-post": "POST",
}
# Request headers that are condition keys as they are (s3:x-amz-acl, s3:x-amz-grant-read, ...).
_HEADER_KEYS = (
    ("user-agent", "aws:UserAgent"),
    ("referer", "aws:Referer"),
    *((h, f"s3:{h}") for h in (
        "x-amz-acl",
        "x-amz-grant-read",
        "x-amz-grant-write",
        "x-amz-grant-read-acp",
        "x-amz-grant-write-acp",
        "x-amz-grant-full-control",
        "x-amz-server-side-encryption",
        "x-amz-server-side-encryption-aws-kms-key-id",
        "x-amz-server-side-encryption-customer-algorithm",
        "x-amz-storage-class",
        "x-amz-metadata-directive",
    )),
    ("x-amz-object-lock-mode", "s3:object-lock-mode"),
    ("x-amz-object-lock-legal-hold", "s3:object-lock-legal-hold"),
)
# Query parameters of a bucket request that are condition keys (s3:prefix, ...).
_LIST_KEYS = (("prefix", "s3:prefix"), ("delimiter", "s3:delimiter"), ("max-keys", "s3:max-keys"))
# Parameters of an STS query form that are condition keys (trust policies).
_STS_KEYS = (
    ("RoleSessionName", "sts:RoleSessionName"),
    ("ExternalId", "sts:ExternalId"),
    ("SourceIdentity", "sts:SourceIdentity"),
)


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def object_arn(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


# The ``identity`` of the principal of an unsigned request (no access key).
ANONYMOUS = "anonymous"
# What an anonymous caller is told when refused: the same whatever the bucket or object.
ANONYMOUS_DENIED = "Access Denied"


class Principal(NamedTuple):
    """Who signed the request: the access key (the authorizer looks up the user, role or service
    account behind it). An unsigned request is ``Principal.anonymous()``: access key "",
    ``identity`` ``ANONYMOUS``."""

    access_key: str
    identity: Any = None

    @classmethod
    def anonymous(cls) -> Principal:
        return cls("", ANONYMOUS)

    @property
    def is_anonymous(self) -> bool:
        return self.identity == ANONYMOUS and not self.access_key


class Check(NamedTuple):
    """One permission a request needs: an IAM action (``s3:GetObject``) on a resource ARN.
    (The request path builds one per request with ``tuple.__new__(Check, (action, resource))``:
    a NamedTuple's own ``__new__`` is a Python call, about twice the cost.)"""

    action: str
    resource: str


class RequestContext:
    """What an authorizer decides on. ``api`` is the S3 API name (``HeadObject``); ``checks`` the
    IAM actions and resources it needs, all of which must be allowed."""

    __slots__ = (
        "_bucket_request",
        "_conditions",
        "_headers",
        "_query",
        "_scope",
        "api",
        "checks",
        "decision",
        "principal",
        "scheme",
    )

    def __init__(
        self,
        principal: Principal,
        api: str,
        checks: tuple[Check, ...],
        scheme: str = "",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        scope: Mapping[str, Any] | None = None,
        bucket_request: bool = False,
    ) -> None:
        self.principal = principal
        self.api = api
        self.checks = checks
        self.scheme = scheme  # AuthResult.scheme
        self._headers = headers if headers is not None else {}
        self._query = query if query is not None else {}
        self._bucket_request = bucket_request  # s3:prefix & co. are a listing's keys
        self._scope = scope if scope is not None else {}
        self._conditions: dict[str, str | tuple[str, ...]] | None = None
        self.decision: Any = None  # what the authorizer decided (tierstore.iam.Decision), for the log

    @property
    def action(self) -> str:
        """The first IAM action (the one the request is named for)."""
        return self.checks[0].action if self.checks else ""

    @property
    def resource(self) -> str:
        return self.checks[0].resource if self.checks else ""

    def entry(self, checks: tuple[Check, ...]) -> RequestContext:
        """The same caller and conditions, for one entry a handler found in the body."""
        out = RequestContext(
            self.principal,
            self.api,
            checks,
            scheme=self.scheme,
            headers=self._headers,
            query=self._query,
            scope=self._scope,
            bucket_request=self._bucket_request,
        )
        out._conditions = self._conditions  # computed (once) only if an authorizer asks
        return out

    def version_for(self, resource: str) -> str | None:
        """The version the request names of the object ``resource``: a copy's source names its
        own in ``x-amz-copy-source``; otherwise the ``versionId`` parameter (None: the current)."""
        source = self._headers.get("x-amz-copy-source")
        if source is not None:
            path, _, params = source.partition("?")
            if resource == object_arn(*unquote(path).removeprefix("/").partition("/")[::2]):
                return dict(parse_qsl(params)).get("versionId")
        return self._query.get("versionId")

    def conditions(self) -> dict[str, str | tuple[str, ...]]:
        """The condition keys known before the body, present only when the request carries them
        (computed on first use: the default authorizer never asks)."""
        if self._conditions is not None:
            return self._conditions
        h, q, scope = self._headers, self._query, self._scope
        now = time.time()
        out: dict[str, str | tuple[str, ...]] = {
            "aws:CurrentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "aws:EpochTime": str(int(now)),
            "aws:SecureTransport": "true" if scope.get("scheme") == "https" else "false",
        }
        client = scope.get("client")
        if client:
            out["aws:SourceIp"] = str(client[0])
        for header, key in _HEADER_KEYS:
            if header in h:
                out[key] = h[header]
        if "x-amz-tagging" in h:
            _request_tags(h["x-amz-tagging"], out)
        until = h.get("x-amz-object-lock-retain-until-date")
        if until is not None:
            _retention_keys(until, now, out)
        if self.scheme in _SIGNATURE_VERSION:
            out["s3:signatureversion"] = _SIGNATURE_VERSION[self.scheme]
            out["s3:authType"] = _AUTH_TYPE[self.scheme]
        if self._bucket_request:
            for param, key in _LIST_KEYS:
                if param in q:
                    out[key] = q[param]
        elif "versionId" in q:
            out["s3:versionid"] = q["versionId"]
        if "Action" in q:  # a query-API form (IAM, STS)
            for param, key in _STS_KEYS:
                if param in q:
                    out[key] = q[param]
        self._conditions = out
        return out


class LazyConditions(Mapping[str, "str | tuple[str, ...]"]):
    """``request.conditions()`` as a mapping computed on first use: most policies have no
    Condition (nor policy variable), and ``iam.evaluate`` reads the context only for one that
    does — then the keys are computed once (``RequestContext.conditions`` caches them). Building
    them (two clock reads, a time format, a scan of the condition headers) for every request a
    user signs cost more than evaluating the policy."""

    __slots__ = ("_request",)

    def __init__(self, request: RequestContext) -> None:
        self._request = request

    def __getitem__(self, key: str) -> str | tuple[str, ...]:
        return self._request.conditions()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._request.conditions())

    def __len__(self) -> int:
        return len(self._request.conditions())

    def items(self) -> ItemsView[str, str | tuple[str, ...]]:
        return self._request.conditions().items()


def _request_tags(header: str, out: dict[str, str | tuple[str, ...]]) -> None:
    """``x-amz-tagging`` as s3:RequestObjectTag/<k> and the multi-valued s3:RequestObjectTagKeys,
    parsed exactly as the handler parses it (a key without ``=`` is a tag with an empty value:
    it must be among the keys a policy sees). Not valid UTF-8: no keys (the handler refuses it)."""
    try:
        pairs = parse_tagging_header(header)
    except InvalidTag:
        return
    for k, v in pairs:
        out[f"s3:RequestObjectTag/{k}"] = v
    out["s3:RequestObjectTagKeys"] = tuple(dict.fromkeys(k for k, _ in pairs))


def _retention_keys(until: str, now: float, out: dict[str, str | tuple[str, ...]]) -> None:
    """s3:object-lock-retain-until-date (ISO 8601, UTC) and s3:object-lock-remaining-retention-days
    (whole days from now, rounded up), from the date parsed as the handler parses it: any date
    it accepts reaches a policy in one form Date* operators read. One it refuses gives no keys
    (the request fails anyway)."""
    try:
        until_ns = parse_retain_until(until)
    except InvalidArgument:
        return
    out["s3:object-lock-retain-until-date"] = format_retain_until(until_ns)
    out["s3:object-lock-remaining-retention-days"] = str(max(0, math.ceil((until_ns / 1e9 - now) / 86400)))


class Authorizer(Protocol):
    async def authorize(self, request: RequestContext) -> None:
        """Return when every check of ``request`` is allowed; raise ``errors.AccessDenied`` otherwise."""
        ...


@runtime_checkable
class BucketWideAllows(Protocol):
    """An ``Authorizer`` that can tell, after an allowed check on one object, that the same action
    is allowed on every object of the bucket (``IamAuthorizer``): what a check of many objects of
    one request (a dataset's manifest) asks once per bucket."""

    async def allows_every_object(self, request: RequestContext, action: str, bucket: str) -> bool: ...


class AllowAuthenticated:
    """Every signed principal may do everything (one account, no policies); anonymous callers
    nothing."""

    async def authorize(self, request: RequestContext) -> None:
        if request.principal.is_anonymous:
            raise AccessDenied(ANONYMOUS_DENIED)
