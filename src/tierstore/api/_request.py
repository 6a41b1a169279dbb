"""What a handler sees: the parsed ``Request`` (with its body readers), the ``Response`` it
returns, and the ``Context`` holding the services. Handlers are ``async (Request, Context) ->
Response`` functions in one module per resource (``_objects``, ``_buckets``, ``_multipart``,
``_bucket_config``, ``_extensions``); the route table (``_routes.ACTIONS``) names them."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tierstore import errors as e
from tierstore.api._audit import AuditLog
from tierstore.api._auth import AuthResult, wrap_body
from tierstore.api._authorize import AllowAuthenticated, Authorizer, Check, RequestContext
from tierstore.api._json import JSONTooLarge, loads_lazy
from tierstore.api._metrics import Metrics
from tierstore.crypto import LocalKeyStore
from tierstore.engine import (
    DatasetService,
    IdentityService,
    ModelService,
    ObjectService,
    OidcVerifier,
    Repairer,
    StsService,
)

__all__ = [
    "MAX_XML_BODY",
    "Context",
    "Handler",
    "Receive",
    "Request",
    "Response",
    "http_date",
    "int_param",
    "parse_http_date",
    "parse_query",
]

Receive = Callable[[], Awaitable[dict[str, Any]]]

MAX_XML_BODY = 2 * 1024 * 1024  # DeleteObjects of 1000 long keys fits comfortably
UNKNOWN = "Unknown"  # _routes.UNKNOWN (not imported: _routes imports the handler modules)


@dataclass(slots=True)
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    first_chunk: bytes = b""


@dataclass(slots=True)
class Context:
    """The services a handler may use (``server.py`` chooses them); nothing else."""

    service: ObjectService
    metrics: Metrics
    admin: Repairer | None = None
    datasets: DatasetService | None = None
    models: ModelService | None = None
    authorizer: Authorizer = field(default_factory=AllowAuthenticated)
    identities: IdentityService | None = None
    sts: StsService | None = None  # temporary credentials (api/_sts.py)
    oidc: OidcVerifier | None = None  # AssumeRoleWithWebIdentity's token verification
    kms: LocalKeyStore | None = None  # the built-in key service (api/_kms_ext.py)
    audit: AuditLog | None = None  # the audit log, which GET /_tierstore/admin/audit reads (api/_ops_ext.py)

    async def authorize_entry(self, req: Request, *checks: Check) -> None:
        """Authorize one entry named in the body (a DeleteObjects key): raises AccessDenied."""
        assert req.authz is not None  # the dispatcher authorized the request itself first
        await self.authorizer.authorize(req.authz.entry(checks))

    async def entry_allowed(self, req: Request, *checks: Check) -> bool:
        """Whether one entry is authorized (filtering results: a query's objects)."""
        try:
            await self.authorize_entry(req, *checks)
        except e.AccessDenied:
            return False
        return True

    def dataset_service(self) -> DatasetService:
        if self.datasets is None:
            raise e.NotImplementedOperation("This server has no datasets.")
        return self.datasets

    def model_service(self) -> ModelService:
        if self.models is None:
            raise e.NotImplementedOperation("This server has no model registry.")
        return self.models


@dataclass(slots=True)
class Request:
    method: str
    raw_path: bytes
    query_string: bytes
    headers: dict[str, str]
    query: dict[str, str]
    bucket: str | None
    key: str | None
    receive: Receive
    virtual_bucket: str | None = None
    auth: AuthResult | None = None
    body_done: bool = False  # the last body message was received
    action: str = UNKNOWN  # the S3 API name from the route table (_routes.route)
    body_started: bool = False  # the body was asked for (an Expect: 100-continue client was invited)
    idle_timeout_s: float | None = None  # a body that sends nothing this long: RequestTimeout
    authz: RequestContext | None = None  # what the dispatcher authorized
    form: dict[str, str] | None = None  # a query-API request's parameters (_query.read_form)
    post_form: Any = None  # a POST Object form read up to its file (_post_object.PostForm)

    @property
    def bodiless(self) -> bool:
        """No body was announced (no Content-Length, Transfer-Encoding or Expect header): the
        dispatcher has nothing to drain after the handler, which it checks here, not by scanning
        the raw headers again (most requests are GETs)."""
        h = self.headers
        return "content-length" not in h and "transfer-encoding" not in h and "expect" not in h

    @property
    def resource(self) -> str:
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}"

    # --- the body (read only by handlers, after authorization) ---------------------------
    async def body(self) -> AsyncIterator[bytes]:
        receive = self.receive
        self.body_started = True
        watchdog = _StallWatchdog.start(self.idle_timeout_s)
        try:
            while True:
                if watchdog is not None:
                    watchdog.waiting_since = watchdog.loop.time()
                try:
                    msg = await receive()
                except asyncio.CancelledError:
                    if watchdog is None or not watchdog.fired:
                        raise
                    watchdog.task.uncancel()
                    self.body_done = True  # not drained: the connection closes after the answer
                    raise e.RequestTimeout() from None
                if watchdog is not None:
                    watchdog.waiting_since = None
                if msg["type"] == "http.disconnect":
                    self.body_done = True  # nothing more will arrive
                    raise e.IncompleteBody("The client disconnected before the body was complete.")
                more = bool(msg.get("more_body", False))
                # Set before the yield: a consumer may stop pulling after the last chunk.
                self.body_done = not more
                chunk = msg.get("body", b"")
                if chunk:
                    yield chunk
                if not more:
                    return
        finally:
            if watchdog is not None:
                watchdog.stop()

    def payload(self) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """The body as the object's bytes (aws-chunked framing removed, signatures checked) and
        the trailers it will carry."""
        assert self.auth is not None
        return wrap_body(self.body(), self.auth, self.headers)

    async def read_small(self, limit: int = MAX_XML_BODY, *, json_body: bool = False) -> bytes:
        return bytes(await self.read_buffer(limit, json_body=json_body))

    async def read_buffer(self, limit: int, *, json_body: bool = False) -> bytearray:
        """The whole body in one buffer grown in place (a list of chunks joined at the end holds
        it twice: a 200 MiB dataset document must not cost 400 MiB before it is parsed)."""
        body, _ = self.payload()
        buf = bytearray()
        async for chunk in body:
            if len(buf) + len(chunk) > limit:
                if json_body:
                    raise e.InvalidRequest(f"The request body is larger than {limit} bytes.")
                raise e.MalformedXML("The request body is too large.")
            buf += chunk
        return buf

    async def json_body(self, limit: int = 64 * 1024, lazy: str | None = None) -> dict[str, Any]:
        body = await self.read_buffer(limit, json_body=True)
        try:
            doc = json.loads(body) if lazy is None else loads_lazy(body, lazy)
        except RecursionError as exc:  # nested past the interpreter's limit: input, not a server fault
            raise e.InvalidRequest("The request body is nested too deeply.") from exc
        except JSONTooLarge as exc:
            raise e.InvalidRequest(str(exc)) from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise e.InvalidRequest("The request body is not valid JSON.") from exc
        if not isinstance(doc, dict):
            raise e.InvalidRequest("The request body must be a JSON object.")
        return doc


Handler = Callable[[Request, Context], Awaitable[Response]]


def parse_query(query_string: bytes) -> dict[str, str]:
    """Decode a query string as S3 (and the signature check) does: percent-decoding only, so a
    literal ``+`` stays ``+`` (SDKs send a space as ``%20``)."""
    out: dict[str, str] = {}
    if not query_string:
        return out
    try:
        text = query_string.decode("utf-8")
        for item in text.split("&"):
            if not item:
                continue
            name, _, value = item.partition("=")
            out.setdefault(unquote(name, errors="strict"), unquote(value, errors="strict"))
    except UnicodeDecodeError as exc:
        raise e.InvalidArgument("The query string is not valid UTF-8.") from exc
    return out


def http_date(ns: int) -> str:
    return _http_date_s(ns // 1_000_000_000)


@functools.lru_cache(maxsize=4096)
def _http_date_s(seconds: int) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def parse_http_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp() * 1e9)
    except (TypeError, ValueError, IndexError):
        return None  # S3 ignores unparsable dates in conditional headers


def int_param(query: dict[str, str], name: str, default: int, *, lo: int = 0, hi: int | None = None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise e.InvalidArgument(f"Provided {name} is not an integer: {raw[:40]}") from exc
    if value < lo:
        raise e.InvalidArgument(f"Argument {name} must be an integer >= {lo}")
    return min(value, hi) if hi is not None else value


class _StallWatchdog:
    """Cancels the task reading a request body when one receive() has waited ``timeout_s``.

    One timer per body, re-armed only when it fires early, instead of a timeout per chunk
    (asyncio.wait_for costs ~14 us a call, this ~0.3 us); it only cancels while the task waits
    in receive(), never while it stores what it read."""

    __slots__ = ("_handle", "fired", "loop", "task", "timeout_s", "waiting_since")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], timeout_s: float) -> None:
        self.loop, self.task, self.timeout_s = loop, task, timeout_s
        self.waiting_since: float | None = None
        self.fired = False
        self._handle = loop.call_later(timeout_s, self._check)

    @classmethod
    def start(cls, timeout_s: float | None) -> _StallWatchdog | None:
        task = asyncio.current_task()
        if not timeout_s or task is None:
            return None
        return cls(asyncio.get_running_loop(), task, timeout_s)

    def _check(self) -> None:
        if self.task.done():
            return
        since = self.waiting_since
        waited_s = 0.0 if since is None else self.loop.time() - since
        if waited_s >= self.timeout_s:
            self.fired = True
            self.task.cancel()
            return
        self._handle = self.loop.call_later(self.timeout_s - waited_s, self._check)

    def stop(self) -> None:
        self._handle.cancel()
