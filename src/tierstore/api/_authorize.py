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

import time
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from tierstore.errors import AccessDenied

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_DENIED",
    "AllowAuthenticated",
    "Authorizer",
    "Check",
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
# Query parameters of a bucket request that are condition keys (s3:prefix, ...).
_LIST_KEYS = (("prefix", "s3:prefix"), ("delimiter", "s3:delimiter"), ("max-keys", "s3:max-keys"))


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
    """One permission a request needs: an IAM action (``s3:GetObject``) on a resource ARN."""

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
        *,
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
        self._conditions: dict[str, str] | None = None
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

    def conditions(self) -> dict[str, str]:
        """The condition keys known before the body, present only when the request carries them
        (computed on first use: the default authorizer never asks)."""
        if self._conditions is not None:
            return self._conditions
        h, q, scope = self._headers, self._query, self._scope
        now = time.time()
        out = {
            "aws:CurrentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "aws:EpochTime": str(int(now)),
            "aws:SecureTransport": "true" if scope.get("scheme") == "https" else "false",
        }
        client = scope.get("client")
        if client:
            out["aws:SourceIp"] = str(client[0])
        for header, key in (("user-agent", "aws:UserAgent"), ("referer", "aws:Referer"), ("x-amz-acl", "s3:x-amz-acl")):
            if header in h:
                out[key] = h[header]
        if self.scheme in _SIGNATURE_VERSION:
            out["s3:signatureversion"] = _SIGNATURE_VERSION[self.scheme]
            out["s3:authType"] = _AUTH_TYPE[self.scheme]
        if self._bucket_request:
            for param, key in _LIST_KEYS:
                if param in q:
                    out[key] = q[param]
        elif "versionId" in q:
            out["s3:versionid"] = q["versionId"]
        self._conditions = out
        return out


class Authorizer(Protocol):
    def authorize(self, request: RequestContext) -> None:
        """Return when every check of ``request`` is allowed; raise ``errors.AccessDenied`` otherwise."""
        ...


class AllowAuthenticated:
    """Every signed principal may do everything (one account, no policies); anonymous callers
    nothing."""

    def authorize(self, request: RequestContext) -> None:
        if request.principal.is_anonymous:
            raise AccessDenied(ANONYMOUS_DENIED)
