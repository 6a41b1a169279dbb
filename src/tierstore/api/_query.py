"""The AWS query protocol (IAM, STS) on the S3 port: ``Action=...&Version=...`` forms.

A POST to ``/`` with an ``application/x-www-form-urlencoded`` body, or a GET of
``/?Action=...``, is a query-API request (S3 has no POST on ``/`` and its ListBuckets takes no
``Action``, so nothing collides). The route table names it ``QUERY_API``; the dispatcher then
reads the small form (``read_form``, at most ``MAX_FORM_BYTES``), names the request after its
action (``lookup``: ``iam:CreateUser``), authenticates it for the action's service (the SigV4
credential scope must say ``iam`` or ``sts``; unsigned only where the action is ``anonymous``),
authorizes its ``checks`` through the one ``Authorizer`` hook and only then runs the handler —
exactly as an S3 request.

Services register their actions: ``register(SERVICE, {"CreateUser": QueryAction(handler,
checks)})``. A handler returns the inner XML of ``<ActionResult>`` (None: the response has no
result element) and raises domain errors, which ``error_body`` renders as AWS's
``<ErrorResponse>`` (``Type`` Sender/Receiver, ``Code``, ``Message``) with the statuses of
``_errors.status_of``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from tierstore import errors as e
from tierstore.api._authorize import Check
from tierstore.api._errors import status_of
from tierstore.api._request import Context, Request
from tierstore.api._xml import E

__all__ = [
    "IAM",
    "MAX_FORM_BYTES",
    "QUERY_API",
    "STS",
    "QueryAction",
    "QueryCall",
    "QueryService",
    "error_body",
    "is_query_request",
    "lookup",
    "read_form",
    "register",
    "response_body",
]

QUERY_API = "QueryAPI"  # the route's name until the form names the action
MAX_FORM_BYTES = 256 * 1024  # a 20 KiB policy document, URL-encoded, fits several times over
FORM_TYPE = "application/x-www-form-urlencoded"
_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


@dataclass(frozen=True, slots=True)
class QueryService:
    """One query API: its SigV4 service name (``iam``), API version and XML namespace."""

    name: str
    version: str
    namespace: str


IAM = QueryService("iam", "2010-05-08", "https://iam.amazonaws.com/doc/2010-05-08/")
STS = QueryService("sts", "2011-06-15", "https://sts.amazonaws.com/doc/2011-06-15/")


@dataclass(slots=True)
class QueryCall:
    """What a query handler (and its ``checks``) sees: the form's parameters, who signed it
    (``access_key`` None: an unsigned request of an anonymous action) and the services."""

    action: str
    params: Mapping[str, str]
    access_key: str | None
    ctx: Context
    request: Request | None = field(default=None, repr=False)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)

    def require(self, name: str) -> str:
        """A required parameter: ``ValidationError`` when absent or empty."""
        value = self.params.get(name)
        if not value:
            raise e.ValidationError(f"1 validation error detected: Value null at '{name}' failed to satisfy constraint")
        return value

    def members(self, name: str) -> list[str]:
        """A list parameter (``Name.member.1``, ``Name.member.2``, ...), in order."""
        out = []
        i = 1
        while f"{name}.member.{i}" in self.params:
            out.append(self.params[f"{name}.member.{i}"])
            i += 1
        return out


QueryHandler = Callable[[QueryCall], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class QueryAction:
    """One action: its handler, the IAM checks it needs (authorized before the handler runs),
    and whether an unsigned request may reach it (STS's AssumeRoleWithWebIdentity: the token in
    the form is the credential, which the handler verifies)."""

    handler: QueryHandler
    checks: Callable[[QueryCall], Awaitable[tuple[Check, ...]]]
    anonymous: bool = False


_ACTIONS: dict[str, tuple[QueryService, QueryAction]] = {}


def register(service: QueryService, actions: Mapping[str, QueryAction]) -> None:
    """Add ``actions`` of ``service`` (an action name belongs to one service only)."""
    for name, action in actions.items():
        known = _ACTIONS.get(name)
        if known is not None and known[0] != service:
            raise ValueError(f"query action {name} is already registered for {known[0].name}")
        _ACTIONS[name] = (service, action)


def is_query_route(method: str, bucket: str | None, query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
    """Whether a request to the service root is a query-API request (``_routes.route``)."""
    if bucket is not None:
        return False
    if method == "POST":
        return headers.get("content-type", "").split(";", 1)[0].strip().lower() == FORM_TYPE
    return method == "GET" and "Action" in query


def is_query_request(req: Request | None) -> bool:
    """Whether ``req``'s errors are rendered as a query API's ``ErrorResponse``."""
    return req is not None and (req.action == QUERY_API or req.form is not None)


async def read_form(req: Request) -> tuple[dict[str, str], str]:
    """The request's parameters (a POST's form body; a GET's query) and the SHA-256 hex of the
    body (the SigV4 payload hash). The body is capped at ``MAX_FORM_BYTES``."""
    declared = req.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise e.ValidationError(f"The request body is larger than {MAX_FORM_BYTES} bytes.")
    body = bytearray()
    if req.method == "POST":
        async for chunk in req.body():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise e.ValidationError(f"The request body is larger than {MAX_FORM_BYTES} bytes.")
    try:
        text = bytes(body).decode("utf-8") if req.method == "POST" else ""
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise e.ValidationError("The request body is not a UTF-8 URL-encoded form.") from None
    params: dict[str, str] = dict(req.query) if req.method == "GET" else {}
    for name, value in pairs:
        if name in params:
            raise e.ValidationError(f"The parameter {name[:64]} is given more than once.")
        params[name] = value
    return params, hashlib.sha256(bytes(body)).hexdigest()


def lookup(params: Mapping[str, str]) -> tuple[QueryService, str, QueryAction]:
    """The service and action a form names; ``InvalidAction`` for none or an unknown one (or a
    ``Version`` that is not the action's service's)."""
    name = params.get("Action", "")
    found = _ACTIONS.get(name)
    if not name:
        raise e.InvalidAction("The request must contain the parameter Action.")
    version = params.get("Version")
    if found is None or (version is not None and version != found[0].version):
        raise e.InvalidAction(f"Could not find operation {name[:64]} for version {(version or 'NO_VERSION')[:16]}")
    return found[0], name, found[1]


def response_body(service: QueryService, action: str, result: str | None, request_id: str) -> bytes:
    """``<ActionResponse xmlns=...><ActionResult>...</ActionResult><ResponseMetadata>...``."""
    inner = E(f"{action}Result", None, result) if result is not None else ""
    meta = E("ResponseMetadata", None, E("RequestId", request_id))
    return f'{_HEAD}<{action}Response xmlns="{service.namespace}">{inner}{meta}</{action}Response>'.encode()


# Domain errors whose query-API code differs from the S3 one.
_CODES = {
    "InvalidArgument": "ValidationError",
    "InvalidAccessKeyId": "InvalidClientTokenId",
    "AuthorizationHeaderMalformed": "IncompleteSignature",
    "MalformedPolicy": "MalformedPolicyDocument",
}


def error_body(exc: e.TierstoreError, request_id: str, params: Mapping[str, str] | None) -> tuple[int, bytes]:
    """The status and ``<ErrorResponse>`` of a query-API error (the namespace of the service
    the form names, IAM's when it names none we know)."""
    status = status_of(exc)
    found = _ACTIONS.get((params or {}).get("Action", ""))
    namespace = (found[0] if found is not None else IAM).namespace
    error = E(
        "Error",
        None,
        E("Type", "Receiver" if status >= 500 else "Sender"),
        E("Code", _CODES.get(exc.code, exc.code)),
        E("Message", exc.message),
    )
    body = f'{_HEAD}<ErrorResponse xmlns="{namespace}">{error}{E("RequestId", request_id)}</ErrorResponse>'
    return status, body.encode()
