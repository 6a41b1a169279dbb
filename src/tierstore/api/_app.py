"""The S3 HTTP API as a plain ASGI application (no framework on the hot path).

``S3App`` parses the request (path-style or virtual-hosted), authenticates it, dispatches to
one handler per S3 operation, and turns every domain error into S3 XML through the one table
in ``_errors``. It sees only ``engine.ObjectService`` and ``types``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import email.utils
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote
from xml.etree.ElementTree import Element

from tierstore import errors as e
from tierstore.api import _sse
from tierstore.api._accesslog import AccessLog, Exchange, access_line
from tierstore.api._auth import Authenticator, AuthRequest, AuthResult, wrap_body
from tierstore.api._datasets import dataset_request
from tierstore.api._errors import error_body, status_of
from tierstore.api._health import probe
from tierstore.api._identity_ext import identity_request
from tierstore.api._json import JSONTooLarge, loads_lazy
from tierstore.api._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tierstore.api._metrics import Metrics
from tierstore.api._models import model_request
from tierstore.api._routes import METRICS_ACTIONS, PROBE_ACTIONS, SUBRESOURCES, UNKNOWN, route
from tierstore.api._xml import E, children, document, esc, iso8601, parse_xml, text_of, url_encode_key
from tierstore.engine import (
    CompletedPart,
    CopyOptions,
    DatasetService,
    DefaultRetention,
    GetResult,
    LockConfig,
    LockRequest,
    ModelService,
    ObjectService,
    Repairer,
    Retention,
    RowRead,
    format_retain_until,
    parse_legal_hold,
    parse_lock_headers,
    parse_mode,
    parse_retain_until,
    parse_tagging_header,
    stream_progress,
)
from tierstore.runtime import new_request_id
from tierstore.types import (
    BATCH_FRAME,
    BATCH_TRAILER,
    CHECKSUM_ALGORITHMS,
    MAX_PUT_BYTES,
    NULL_VERSION,
    STANDARD_HEADERS,
    ByteRange,
    ChecksumExpectation,
    Conditions,
    DatasetRef,
    GetOptions,
    ListOptions,
    ModelRef,
    ObjectMeta,
    PutOptions,
)

__all__ = ["S3App", "note_send_failure"]

log = logging.getLogger("tierstore.api")

# The response being streamed by this task, if any: set while ``_send`` streams a body, and
# flagged by ``note_send_failure`` (server.py calls it from granian's log record of a send that
# found the client gone, which granian emits inside that send() call, in the sending task's
# context). granian's receive() reports the hang-up too, but only after tens of MiB more were
# read from the page cache and dropped.
_streaming: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("tierstore_streaming", default=None)


def note_send_failure() -> None:
    """The transport refused the current task's last send: its client is gone."""
    flag = _streaming.get()
    if flag is not None:
        flag[0] = True


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_XML_BODY = 2 * 1024 * 1024  # DeleteObjects of 1000 long keys fits comfortably
MAX_HEADER_BYTES = 64 * 1024
MAX_DRAIN_BYTES = 1024 * 1024  # unread request body we read and drop rather than close the connection
MAX_DELETE_KEYS = 1000
MAX_LIST_BUCKETS = 10_000  # ListBuckets max-buckets, and its page size when paginating without it
MAX_PART_NUMBER = 10_000
MAX_BATCH_ENTRIES = 10_000
MAX_BATCH_BODY = 4 * 1024 * 1024
MAX_DATASET_BODY = 256 * 1024 * 1024  # a dataset made of explicit rows (derive): ~150 bytes a row
BATCH_SEND_BYTES = 256 * 1024  # small entries are sent together in chunks of about this size
EXTENSION_PREFIX = "_tierstore"
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "OUTPOSTS",
        "SNOW",
        "EXPRESS_ONEZONE",
    }
)
# Query parameters that select another operation (one list, the route table's). A known one we
# lack answers 501; any other parameter is ignored, as S3 does.
_SUBRESOURCES = SUBRESOURCES
_RESPONSE_OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
_OBJECT_ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})
_ACCEPTED_ACLS = frozenset({"private", "bucket-owner-full-control"})
_UNSUPPORTED_HEADERS = (  # server-side encryption headers: api/_sse.py
    "x-amz-website-redirect-location",
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-full-control",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
)


@dataclass(slots=True)
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    first_chunk: bytes = b""


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

    @property
    def resource(self) -> str:
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}"


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


def _int_param(query: dict[str, str], name: str, default: int, *, lo: int = 0, hi: int | None = None) -> int:
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


def _meta_value(wire: str) -> str:
    """An ``x-amz-meta-*`` value as text. Header values reach the app latin-1 decoded (one code
    point per byte); user metadata is UTF-8, stored as the text it spells and sent back as the
    same bytes. Bytes that are not UTF-8 cannot be stored as text: refused, never altered."""
    try:
        return wire.encode("latin-1").decode("utf-8")
    except UnicodeError as exc:
        raise e.InvalidArgument("User metadata values must be UTF-8.") from exc


def _xml_int(text: str | None) -> int | None:
    """An integer element of a request document (absent -> None); anything else is MalformedXML."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError as exc:
        raise e.MalformedXML() from exc


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


class S3App:
    """ASGI application. ``authenticator`` verifies requests; ``domain`` enables virtual-hosted style."""

    def __init__(
        self,
        service: ObjectService,
        authenticator: Authenticator,
        *,
        domain: str | None = None,
        admin: Repairer | None = None,
        datasets: DatasetService | None = None,
        models: ModelService | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        metrics: Metrics | None = None,
        metrics_token: str = "",
        access_log: AccessLog | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        """``metrics_token``: when set, the metrics endpoints require ``Authorization: Bearer TOKEN``;
        ``access_log``: where the JSON access log goes (None: nowhere)."""
        self.service = service
        self.idle_timeout_s = idle_timeout_s  # a request body that sends nothing this long: RequestTimeout
        self.auth = authenticator
        self.domain = domain.lower().strip(".") if domain else None
        self.admin = admin
        self.datasets = datasets
        self.models = models
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self.metrics = metrics or Metrics()
        self._metrics_token = metrics_token
        self.access_log = access_log
        self._metrics_task: asyncio.Task[None] | None = None

    # --- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = new_request_id()
        x = Exchange(receive, send)  # counts bytes and the time to first byte
        receive, send = x.receive, x.send
        req: Request | None = None
        error_code = ""
        try:
            req = self._parse(scope, receive)
            req.action = route(
                req.method, req.bucket, req.key, req.query, req.headers, virtual=req.virtual_bucket is not None
            ).action
            if req.action in PROBE_ACTIONS:  # health and metrics: before authentication, not logged
                resp = await self._probe(req, scope)
            else:
                self.metrics.started(req.action)
                resp = await self._handle(req)
        except e.TierstoreError as exc:
            error_code = exc.code
            resp = self._error(exc, req, request_id)
        except Exception:
            log.exception("internal error (request %s)", request_id)
            error_code = "InternalError"
            resp = self._error(e.InternalError(), req, request_id)
        if req is None or not req.body_done:
            if not (req is not None and req.body_started) and _expects_continue(scope):
                # The client holds the body back until "100 Continue", which the HTTP layer sends
                # when the body is first read: answer without reading it (a refusal must never
                # invite the upload) and close, as whether the body follows is now unknown.
                resp.headers.append(("connection", "close"))
            else:
                await self._discard_body(scope, receive, resp)
        head = scope["method"] == "HEAD"
        try:
            await self._send(send, resp, request_id, head=head, receive=receive)
        finally:
            if req is None or req.action not in PROBE_ACTIONS:
                self._observe(scope, req, resp, x, request_id, error_code)

    def _observe(
        self, scope: Scope, req: Request | None, resp: Response, x: Exchange, request_id: str, error_code: str
    ) -> None:
        """Count the request in the metrics and write its access log line."""
        total_s = time.perf_counter() - x.started
        api = req.action if req is not None else UNKNOWN
        self.metrics.finished(
            api,
            status=resp.status,
            error_code=error_code,
            bytes_in=x.bytes_in,
            bytes_out=x.bytes_out,
            ttfb_s=x.ttfb_s,
            total_s=total_s,
            inflight=req is not None,
        )
        if self.access_log is not None:
            headers = req.headers if req is not None else {}
            self.access_log.write(
                access_line(
                    x,
                    request_id=request_id,
                    remote=str((scope.get("client") or ("",))[0]),
                    method=scope["method"],
                    access_key=(req.auth.access_key or "") if req is not None and req.auth is not None else "",
                    api=api,
                    bucket=req.bucket if req is not None else None,
                    key=req.key if req is not None else None,
                    status=resp.status,
                    error_code=error_code,
                    total_s=total_s,
                    user_agent=headers.get("user-agent"),
                )
            )

    async def _probe(self, req: Request, scope: Scope) -> Response:
        """A health or metrics endpoint (``_routes.PROBES``): unauthenticated S3-wise."""
        if req.action in METRICS_ACTIONS:
            if self._metrics_token:
                given = req.headers.get("authorization", "")
                expected = f"Bearer {self._metrics_token}"
                if not hmac.compare_digest(given.encode("latin-1", "replace"), expected.encode()):
                    raise e.AccessDenied("The metrics endpoint requires its bearer token.")
            view = {
                "tierstore:MinioClusterMetrics": "minio-cluster",
                "tierstore:MinioNodeMetrics": "minio-cluster",
                "tierstore:MinioBucketMetrics": "minio-bucket",
            }
            host, port = scope.get("server") or ("", None)
            body = await self.metrics.render(
                self.service,
                self.admin,
                view=view.get(req.action, "tierstore"),
                server=f"{host}:{port}" if port is not None else str(host),
            )
            return Response(200, [("content-type", METRICS_CONTENT_TYPE)], body)
        status, headers, text = await probe(req.action, self.service, self.admin)
        return Response(status, [("content-type", "text/plain; charset=utf-8"), *headers], (text + "\n").encode())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if self._on_startup:
                    await self._on_startup()
                flush_log = self.access_log.flush if self.access_log is not None else None
                self._metrics_task = asyncio.get_running_loop().create_task(self.metrics.run(self.admin, flush_log))
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self._metrics_task is not None:
                    self._metrics_task.cancel()
                self.metrics.flush()
                if self.access_log is not None:
                    self.access_log.flush()
                if self._on_shutdown:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _error(self, exc: e.TierstoreError, req: Request | None, request_id: str) -> Response:
        status = status_of(exc)
        if status == 304:
            return Response(304, list(exc.headers.items()))
        resource = req.resource if req is not None else "/"
        body = error_body(exc, resource, request_id)
        headers = [("content-type", "application/xml"), *exc.headers.items()]
        if status == 503:
            headers.append(("retry-after", "1"))
        return Response(status, headers, body)

    async def _send(
        self, send: Send, resp: Response, request_id: str, *, head: bool, receive: Receive | None = None
    ) -> None:
        headers = [
            (b"x-amz-request-id", request_id.encode()),
            (b"x-amz-id-2", request_id.encode()),
            (b"server", b"tierstore"),
        ]
        headers += [(k.encode(), v.encode("latin-1", "replace")) for k, v in resp.headers]
        has_length = any(k == "content-length" for k, _ in resp.headers)
        if not has_length and resp.status != 304 and resp.stream is None:
            headers.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        if head or resp.status == 304:
            if resp.stream is not None:
                await resp.stream.aclose()  # type: ignore[attr-defined]
            await send({"type": "http.response.body", "body": b""})
            return
        if resp.stream is None:
            await send({"type": "http.response.body", "body": resp.body})
            return
        # Streaming: the first chunk was verified before the headers went out. A later
        # failure (e.g. bitrot found deeper in a large object) aborts the connection, so the
        # client sees a short body against Content-Length — never wrong bytes.
        # granian's send() does not fail once the client is gone (it logs and drops the bytes),
        # so watch receive() for http.disconnect and stop reading the object from disk then.
        gone = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, gone)) if receive else None
        refused = [False]
        token = _streaming.set(refused)
        try:
            if resp.first_chunk:
                await send({"type": "http.response.body", "body": resp.first_chunk, "more_body": True})
            async for chunk in resp.stream:
                # Pieces read from the page cache arrive without a thread hop, and send() may
                # complete at once: yield so the watcher can see a disconnect.
                await asyncio.sleep(0)
                if gone.is_set() or refused[0]:
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            _streaming.reset(token)
            if watcher is not None:
                watcher.cancel()
            await resp.stream.aclose()  # type: ignore[attr-defined]

    # --- parsing ---------------------------------------------------------------------
    def _parse(self, scope: Scope, receive: Receive) -> Request:
        headers: dict[str, str] = {}
        total = 0
        for k, v in scope["headers"]:
            total += len(k) + len(v)
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        if total > MAX_HEADER_BYTES:
            raise e.RequestHeaderSectionTooLarge()
        raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode()
        raw_path = raw_path.split(b"?", 1)[0]
        query_string: bytes = scope.get("query_string", b"")
        query = parse_query(query_string)
        try:
            path = unquote(raw_path.decode("utf-8"), errors="strict")
        except UnicodeDecodeError as exc:
            raise e.InvalidURI("Couldn't parse the specified URI.") from exc
        virtual_bucket = None
        host = headers.get("host", "").split(":", 1)[0].lower()
        if self.domain and host.endswith("." + self.domain):
            virtual_bucket = host[: -len(self.domain) - 1]
            bucket: str | None = virtual_bucket
            key = path[1:] if path.startswith("/") else path
        else:
            rest = path[1:] if path.startswith("/") else path
            bucket_s, _, key = rest.partition("/")
            bucket = bucket_s or None
        return Request(
            method=scope["method"],
            raw_path=raw_path,
            query_string=query_string,
            headers=headers,
            query=query,
            bucket=bucket,
            key=key or None,
            receive=receive,
            virtual_bucket=virtual_bucket,
        )

    async def _body(self, req: Request) -> AsyncIterator[bytes]:
        receive = req.receive
        req.body_started = True
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
                    req.body_done = True  # not drained: the connection closes after the answer
                    raise e.RequestTimeout() from None
                if watchdog is not None:
                    watchdog.waiting_since = None
                if msg["type"] == "http.disconnect":
                    req.body_done = True  # nothing more will arrive
                    raise e.IncompleteBody("The client disconnected before the body was complete.")
                more = bool(msg.get("more_body", False))
                # Set before the yield: a consumer may stop pulling after the last chunk.
                req.body_done = not more
                chunk = msg.get("body", b"")
                if chunk:
                    yield chunk
                if not more:
                    return
        finally:
            if watchdog is not None:
                watchdog.stop()

    @staticmethod
    async def _discard_body(scope: Scope, receive: Receive, resp: Response) -> None:
        """Read what a handler left unread of the request body (e.g. it failed before the
        body), so the connection can carry the next request: unread bytes kept on a kept-alive
        connection would be parsed as the next request. Past MAX_DRAIN_BYTES, close instead."""
        declared: int | None = None
        chunked = False
        for k, v in scope["headers"]:
            name = k.lower()
            if name == b"content-length" and v.strip().isdigit():
                declared = int(v)
            elif name == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if not chunked and not declared:
            return
        if declared is not None and declared > MAX_DRAIN_BYTES:
            resp.headers.append(("connection", "close"))
            return
        drained = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            drained += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return
            if drained > MAX_DRAIN_BYTES:
                resp.headers.append(("connection", "close"))
                return

    def _payload(self, req: Request) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        assert req.auth is not None
        return wrap_body(self._body(req), req.auth, req.headers)

    async def _read_small(self, req: Request, limit: int = MAX_XML_BODY, *, json_body: bool = False) -> bytes:
        return bytes(await self._read_buffer(req, limit, json_body=json_body))

    async def _read_buffer(self, req: Request, limit: int, *, json_body: bool = False) -> bytearray:
        """The whole body in one buffer grown in place (a list of chunks joined at the end holds
        it twice: a 200 MiB dataset document must not cost 400 MiB before it is parsed)."""
        body, _ = self._payload(req)
        buf = bytearray()
        async for chunk in body:
            if len(buf) + len(chunk) > limit:
                if json_body:
                    raise e.InvalidRequest(f"The request body is larger than {limit} bytes.")
                raise e.MalformedXML("The request body is too large.")
            buf += chunk
        return buf

    # --- dispatch --------------------------------------------------------------------
    async def _handle(self, req: Request) -> Response:
        req.auth = self.auth.authenticate(
            AuthRequest(
                method=req.method,
                raw_path=req.raw_path,
                query_string=req.query_string,
                headers=req.headers,
                virtual_bucket=req.virtual_bucket,
            )
        )
        if req.auth.access_key is None:
            raise e.AccessDenied("Anonymous access is not allowed.")
        if req.bucket == EXTENSION_PREFIX:
            return await self._extension(req)
        sub = [k for k in req.query if k in _SUBRESOURCES]
        m = req.method
        if req.bucket is None:
            if m == "GET" and not sub:
                return self.list_buckets(req)
            raise e.MethodNotAllowed() if not sub else e.NotImplementedOperation()
        if req.key is None:
            return await self._bucket_op(req, m, sub)
        return await self._object_op(req, m, sub)

    # --- /_tierstore/ extensions (JSON) --------------------------------------------------
    async def _extension(self, req: Request) -> Response:
        if req.key == "query":
            if req.method != "POST":
                raise e.MethodNotAllowed()
            return await self.query(req)
        if req.key == "batch":
            if req.method != "POST":
                raise e.MethodNotAllowed()
            return await self.batch(req)
        if (identity := await identity_request(self.auth, req, self._json_body)) is not None:
            return Response(identity[0], [("content-type", "application/json")], identity[1])
        area = (req.key or "").partition("/")[0]
        if area in ("datasets", "models"):
            # A dataset's explicit rows stay in the body's bytes until read (api/_json.py).
            lazy = "rows" if area == "datasets" else None
            body_of = functools.partial(self._json_body, req, limit=MAX_DATASET_BODY, lazy=lazy)
            if area == "datasets":
                reply = await dataset_request(req.method, req.key or "", req.query, body_of, self._datasets())
            else:
                reply = await model_request(req.method, req.key or "", req.query, body_of, self._models())
            status, content_type, body = reply
            return Response(status, [("content-type", content_type)], body)
        if req.key in ("admin/info", "admin/heal") and self.admin is not None:
            # Every authenticated key is an admin until policies exist (docs/durability.md).
            if req.key == "admin/info":
                if req.method != "GET":
                    raise e.MethodNotAllowed()
                body = json.dumps(await asyncio.to_thread(self.admin.info)).encode()
                return Response(200, [("content-type", "application/json")], body)
            if req.method != "POST":
                raise e.MethodNotAllowed()
            task = self.admin.start(kind="heal")
            admin = self.admin
            return Response(
                200,
                [("content-type", "application/x-ndjson")],
                stream=stream_progress(task, lambda: admin.current),
            )
        raise e.NotImplementedOperation(f"No tierstore extension named '{(req.key or '')[:60]}'.")

    async def _json_body(self, req: Request, limit: int = 64 * 1024, lazy: str | None = None) -> dict[str, Any]:
        body = await self._read_buffer(req, limit, json_body=True)
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

    async def query(self, req: Request) -> Response:
        """POST /_tierstore/query {"bucket", "query", "cursor"?} -> {"objects": [...], "next_cursor"}."""
        doc = await self._json_body(req)
        bucket, text, cursor = doc.get("bucket"), doc.get("query"), doc.get("cursor")
        if not isinstance(bucket, str) or not isinstance(text, str) or not isinstance(cursor, (str, type(None))):
            raise e.InvalidRequest('Expected {"bucket": str, "query": str, "cursor": str | null}.')
        # Every authenticated caller may read every bucket until bucket policies exist.
        metas, next_cursor = self.service.query(bucket, text, cursor)
        objects = [
            {
                "key": m.key,
                "version_id": m.version_id,
                "size": m.size_bytes,
                "etag": m.etag,
                "last_modified": iso8601(m.modified_ns),
                "content_type": m.content_type,
                "storage_class": m.storage_class,
                "meta": m.user_meta,
                "tags": m.tags,
            }
            for m in metas
        ]
        body = json.dumps({"bucket": bucket, "objects": objects, "next_cursor": next_cursor}).encode()
        return Response(200, [("content-type", "application/json")], body)

    async def batch(self, req: Request) -> Response:
        """POST /_tierstore/batch: many objects (or ranges) in one response, in order.

        Request: ``{"entries": [{"bucket", "key", "version_id"?, "range"?: "bytes=a-b"}], "fail_fast"?}``.
        Response (``application/x-tierstore-batch``): per entry a frame ``BATCH_FRAME`` (entry
        index, HTTP-style status, length) and that many bytes — the object's, or for a failed
        entry a JSON ``{"code", "message"}`` — then a trailer frame (index ``BATCH_TRAILER``)
        with a JSON summary. A failed entry does not fail the request unless ``fail_fast``,
        which ends the stream after it. Entries are read one after another: memory is bounded
        by one piece of one object, whatever the batch holds."""
        doc = await self._json_body(req, limit=MAX_BATCH_BODY)
        if "dataset" in doc or "model" in doc:
            return await self._dataset_batch(doc)
        entries, fail_fast = doc.get("entries"), doc.get("fail_fast", False)
        if not isinstance(entries, list) or not isinstance(fail_fast, bool):
            raise e.InvalidRequest('Expected {"entries": [...], "fail_fast": bool}.')
        if len(entries) > MAX_BATCH_ENTRIES:
            raise e.InvalidRequest(f"A batch holds at most {MAX_BATCH_ENTRIES} entries.")
        wanted: list[tuple[str, str, GetOptions]] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise e.InvalidRequest(f"Entry {i} is not an object.")
            bucket, key = entry.get("bucket"), entry.get("key")
            version_id, byte_range = entry.get("version_id"), entry.get("range")
            if not isinstance(bucket, str) or not isinstance(key, str) or not key:
                raise e.InvalidRequest(f"Entry {i} needs a bucket and a key.")
            if not isinstance(version_id, (str, type(None))) or not isinstance(byte_range, (str, type(None))):
                raise e.InvalidRequest(f"Entry {i}: version_id and range are strings.")
            opts = GetOptions(version_id=version_id, byte_range=ByteRange.parse(byte_range) if byte_range else None)
            wanted.append((bucket, key, opts))
        frames = self._batch_frames(self._entry_reads(wanted), len(wanted), fail_fast)
        return Response(200, [("content-type", "application/x-tierstore-batch")], stream=frames)

    async def _entry_reads(self, wanted: list[tuple[str, str, GetOptions]]) -> AsyncIterator[RowRead]:
        for bucket, key, opts in wanted:
            try:
                result = await self.service.get_object(bucket, key, opts)
            except e.TierstoreError as exc:
                yield RowRead(error=exc, key=key)
                continue
            yield RowRead(result.length, body=result.body, status=result_status(result), key=key)

    async def _dataset_batch(self, doc: dict[str, Any]) -> Response:
        """The dataset form of ``batch``: ``{"dataset": "NAME@N", "rows": [int, ...], "fail_fast"?}``
        (or ``"model": "NAME@N"``: a model version's rows, docs/checkpoints.md). Rows are read
        through the bytes the dataset (model) pinned, not by key (docs/datasets.md)."""
        field = "model" if "model" in doc else "dataset"
        rows, fail_fast, name = doc.get("rows"), doc.get("fail_fast", False), doc.get(field)
        if not isinstance(name, str) or not isinstance(rows, list) or not isinstance(fail_fast, bool):
            raise e.InvalidRequest(f'Expected {{"{field}": "NAME@N", "rows": [int, ...], "fail_fast": bool}}.')
        if len(rows) > MAX_BATCH_ENTRIES:
            raise e.InvalidRequest(f"A batch holds at most {MAX_BATCH_ENTRIES} entries.")
        if not all(type(r) is int for r in rows):
            raise e.InvalidRequest("Rows are integers.")
        ref = ModelRef.parse(name) if field == "model" else DatasetRef.parse(name)
        if ref.version is None:
            raise e.InvalidRequest(f"A batch names one {field} version: NAME@N.")
        source = self._models() if field == "model" else self._datasets()
        reads = await source.open_rows(ref.name, ref.version, rows)
        frames = self._batch_frames(reads, len(rows), fail_fast)
        return Response(200, [("content-type", "application/x-tierstore-batch")], stream=frames)

    async def _batch_frames(self, reads: AsyncIterator[RowRead], count: int, fail_fast: bool) -> AsyncIterator[bytes]:
        """The frames of ``batch``. Small entries are coalesced into sends of about
        ``BATCH_SEND_BYTES`` (one send per sample would cost more than the sample), gathered as a
        list of pieces joined once per send (a growing buffer would copy every byte twice); an
        entry larger than that streams piece by piece after what was gathered before it."""
        pack = BATCH_FRAME.pack
        out: list[bytes] = []
        pending = 0  # bytes in ``out``
        served = failed = size = 0
        index = -1
        async for item in reads:
            index += 1
            if item.error is not None:
                exc = item.error
                body = json.dumps({"code": exc.code, "message": exc.message, "key": item.key}).encode()
                failed += 1
                out += (pack(index, status_of(exc), len(body)), body)
                pending += BATCH_FRAME.size + len(body)
                if fail_fast:
                    break
                continue
            served += 1
            size += item.length
            out.append(pack(index, item.status, item.length))
            pending += BATCH_FRAME.size + item.length
            if item.data is not None:
                out.append(item.data)
            elif item.length > BATCH_SEND_BYTES:
                assert item.body is not None
                yield b"".join(out)
                out.clear()
                pending = 0
                # Bytes already sent cannot be taken back: damage found mid-object ends the
                # stream short, as a plain GET does (a truncated frame, never wrong bytes).
                async for chunk in item.body:
                    yield chunk
                continue
            else:
                assert item.body is not None
                async for chunk in item.body:
                    out.append(chunk)
            if pending >= BATCH_SEND_BYTES:
                yield b"".join(out)
                out.clear()
                pending = 0
        self.metrics.batch_served(served, failed, size)
        summary = json.dumps({"entries": count, "served": served, "failed": failed, "bytes": size}).encode()
        out += (pack(BATCH_TRAILER, 200, len(summary)), summary)
        yield b"".join(out)

    def _datasets(self) -> DatasetService:
        if self.datasets is None:
            raise e.NotImplementedOperation("This server has no datasets.")
        return self.datasets

    def _models(self) -> ModelService:
        if self.models is None:
            raise e.NotImplementedOperation("This server has no model registry.")
        return self.models

    async def _bucket_op(self, req: Request, m: str, sub: list[str]) -> Response:
        if not sub:
            if m == "GET":
                return self.list_objects(req)
            if m == "PUT":
                return await self.create_bucket(req)
            if m == "HEAD":
                return self.head_bucket(req)
            if m == "DELETE":
                return await self.delete_bucket(req)
            raise e.MethodNotAllowed()
        op = sub[0] if len(sub) == 1 else None
        if m == "GET" and op == "location":
            return self.get_bucket_location(req)
        if m == "GET" and op == "uploads":
            return self.list_multipart_uploads(req)
        if op == "versioning" and m == "GET":
            status = self.service.get_bucket_versioning(req.bucket or "")
            body = document("VersioningConfiguration", E("Status", status) if status else "")
            return Response(200, [("content-type", "application/xml")], body)
        if op == "versioning" and m == "PUT":
            return await self.put_bucket_versioning(req)
        if op == "versions" and m == "GET":
            return self.list_object_versions(req)
        if m == "POST" and op == "delete":
            return await self.delete_objects(req)
        if op == "tagging" and m in ("GET", "PUT", "DELETE"):
            return await self.bucket_tagging(req, m)
        if op == "object-lock" and m in ("GET", "PUT"):
            return await self.object_lock_configuration(req, m)
        raise e.NotImplementedOperation(f"The bucket operation '{','.join(sub)[:60]}' is not implemented.")

    async def _object_op(self, req: Request, m: str, sub: list[str]) -> Response:
        q = req.query
        if sub:
            if m == "POST" and sub == ["uploads"]:
                return await self.create_multipart_upload(req)
            if sub == ["tagging"] and m in ("GET", "PUT", "DELETE"):
                return await self.object_tagging(req, m)
            if sub == ["retention"] and m in ("GET", "PUT"):
                return await self.object_retention(req, m)
            if sub == ["legal-hold"] and m in ("GET", "PUT"):
                return await self.object_legal_hold(req, m)
            if sub == ["attributes"] and m == "GET":
                return self.get_object_attributes(req)
            raise e.NotImplementedOperation(f"The object operation '{','.join(sub)[:60]}' is not implemented.")
        if "uploadId" in q:
            if m == "PUT" and "partNumber" in q:
                if "x-amz-copy-source" in req.headers:
                    return await self.upload_part_copy(req)
                return await self.upload_part(req)
            if m == "POST":
                return await self.complete_multipart_upload(req)
            if m == "DELETE":
                return await self.abort_multipart_upload(req)
            if m == "GET":
                return self.list_parts(req)
            raise e.MethodNotAllowed()
        if m in ("GET", "HEAD"):
            return await self.get_object(req, head=m == "HEAD")
        if m == "PUT":
            if "x-amz-copy-source" in req.headers:
                return await self.copy_object(req)
            return await self.put_object(req)
        if m == "DELETE":
            return await self.delete_object(req)
        raise e.MethodNotAllowed()

    # --- buckets ---------------------------------------------------------------------
    def list_buckets(self, req: Request) -> Response:
        """ListBuckets, paginated as S3 since 2024: ``max-buckets`` (1..10000), ``continuation-token``,
        ``prefix``, ``bucket-region``. Without any of them every bucket is listed; with one of
        them but no ``max-buckets`` a page holds 10000."""
        q = req.query
        token = q.get("continuation-token") or None
        prefix = q.get("prefix", "")
        region = q.get("bucket-region") or None
        max_buckets: int | None = None
        if "max-buckets" in q:
            max_buckets = _int_param(q, "max-buckets", MAX_LIST_BUCKETS, lo=1)
            if max_buckets > MAX_LIST_BUCKETS:
                raise e.InvalidArgument(f"Argument max-buckets must be an integer between 1 and {MAX_LIST_BUCKETS}")
        elif token is not None or prefix or region is not None:
            max_buckets = MAX_LIST_BUCKETS
        after = self._decode_token(token) if token is not None else ""
        buckets, truncated = self.service.list_buckets(
            after=after, prefix=prefix, region=region, max_buckets=max_buckets
        )
        items = [
            E("Bucket", None, E("Name", b.name), E("CreationDate", iso8601(b.created_ns)), E("BucketRegion", b.region))
            for b in buckets
        ]
        fields = [self._owner(req), E("Buckets", None, *items) if items else "<Buckets></Buckets>"]
        if truncated:
            fields.append(E("ContinuationToken", self._encode_token(buckets[-1].name)))
        if "prefix" in q:
            fields.append(E("Prefix", prefix))
        body = document("ListAllMyBucketsResult", *fields)
        return Response(200, [("content-type", "application/xml")], body)

    @staticmethod
    def _owner(req: Request) -> str:
        ak = req.auth.access_key if req.auth else ""
        return E("Owner", None, E("ID", ak), E("DisplayName", ak))

    async def create_bucket(self, req: Request) -> Response:
        assert req.bucket is not None
        self._reject_unsupported(req)
        body = await self._read_small(req)
        region = None
        if body.strip():
            el = parse_xml(body, "CreateBucketConfiguration")
            region = text_of(el, "LocationConstraint") or None
        lock = req.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true"
        await self.service.create_bucket(req.bucket, region, object_lock=lock)
        return Response(200, [("location", f"/{req.bucket}")])

    def head_bucket(self, req: Request) -> Response:
        info = self.service.head_bucket(req.bucket or "")
        return Response(200, [("x-amz-bucket-region", info.region)])

    async def delete_bucket(self, req: Request) -> Response:
        await self.service.delete_bucket(req.bucket or "")
        return Response(204)

    def get_bucket_location(self, req: Request) -> Response:
        info = self.service.head_bucket(req.bucket or "")
        loc = "" if info.region == "us-east-1" else info.region
        return Response(200, [("content-type", "application/xml")], document("LocationConstraint", loc))

    def list_objects(self, req: Request) -> Response:
        q = req.query
        bucket = req.bucket or ""
        v2 = q.get("list-type") == "2"
        if "list-type" in q and not v2:
            raise e.InvalidArgument("Invalid list-type")
        enc = q.get("encoding-type")
        if enc not in (None, "url"):
            raise e.InvalidArgument("Invalid Encoding Method specified in Request")
        url = enc == "url"
        max_keys = _int_param(q, "max-keys", 1000, hi=1000)
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        if v2:
            token = q.get("continuation-token") or None  # empty: absent, as S3 treats it
            start = self._decode_token(token) if token is not None else q.get("start-after", "")
        else:
            start = q.get("marker", "")
        page = self.service.list_objects(
            bucket, ListOptions(prefix=prefix, delimiter=delimiter, start_after=start, max_keys=max_keys)
        )
        owner = self._owner(req) if (not v2 or q.get("fetch-owner") == "true") else ""
        # One f-string per entry (the same elements E() would build): a 1000-key page is hot.
        contents = [
            f"<Contents><Key>{esc(url_encode_key(x.key, url))}</Key>"
            f"<LastModified>{iso8601(x.modified_ns)}</LastModified><ETag>{esc(x.etag)}</ETag>"
            f"<Size>{x.size_bytes}</Size>{owner}<StorageClass>{esc(x.storage_class)}</StorageClass></Contents>"
            for x in page.entries
        ]
        cps = [E("CommonPrefixes", None, E("Prefix", url_encode_key(p, url))) for p in page.common_prefixes]
        parts = [
            E("Name", bucket),
            E("Prefix", url_encode_key(prefix, url)),
        ]
        if v2:
            if token is not None:
                parts.append(E("ContinuationToken", token))
            if "start-after" in q:
                parts.append(E("StartAfter", url_encode_key(q["start-after"], url)))
            parts.append(E("KeyCount", len(page.entries) + len(page.common_prefixes)))
        else:
            parts.append(E("Marker", url_encode_key(q.get("marker", ""), url)))
        parts.append(E("MaxKeys", max_keys))
        if delimiter:
            parts.append(E("Delimiter", url_encode_key(delimiter, url)))
        if url:
            parts.append(E("EncodingType", "url"))
        parts.append(E("IsTruncated", "true" if page.is_truncated else "false"))
        if page.is_truncated and page.next_marker is not None:
            if v2:
                parts.append(E("NextContinuationToken", self._encode_token(page.next_marker)))
            elif delimiter:
                parts.append(E("NextMarker", url_encode_key(page.next_marker, url)))
        body = document("ListBucketResult", *parts, *contents, *cps)
        return Response(200, [("content-type", "application/xml")], body)

    async def put_bucket_versioning(self, req: Request) -> Response:
        body = await self._read_small(req)
        el = parse_xml(body, "VersioningConfiguration")
        if (text_of(el, "MfaDelete") or "Disabled") == "Enabled":
            raise e.NotImplementedOperation("MFA delete is not implemented.")
        status = text_of(el, "Status")
        if status is None:
            raise e.MalformedXML()
        await self.service.set_bucket_versioning(req.bucket or "", status)
        return Response(200)

    def list_object_versions(self, req: Request) -> Response:
        q = req.query
        bucket = req.bucket or ""
        enc = q.get("encoding-type")
        if enc not in (None, "url"):
            raise e.InvalidArgument("Invalid Encoding Method specified in Request")
        url = enc == "url"
        max_keys = _int_param(q, "max-keys", 1000, hi=1000)
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        key_marker, vid_marker = q.get("key-marker", ""), q.get("version-id-marker", "")
        page = self.service.list_object_versions(
            bucket,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            version_id_marker=vid_marker,
            max_keys=max_keys,
        )
        owner = self._owner(req)
        items: list[str] = []
        for meta, is_latest in page.versions:
            common = [
                E("Key", url_encode_key(meta.key, url)),
                E("VersionId", meta.version_id),
                E("IsLatest", "true" if is_latest else "false"),
                E("LastModified", iso8601(meta.modified_ns)),
            ]
            if meta.is_delete_marker:
                items.append(E("DeleteMarker", None, *common, owner))
            else:
                items.append(
                    E(
                        "Version",
                        None,
                        *common,
                        E("ETag", meta.etag),
                        E("Size", meta.size_bytes),
                        E("StorageClass", meta.storage_class),
                        owner,
                    )
                )
        cps = [E("CommonPrefixes", None, E("Prefix", url_encode_key(p, url))) for p in page.common_prefixes]
        fields = [
            E("Name", bucket),
            E("Prefix", url_encode_key(prefix, url)),
            E("KeyMarker", url_encode_key(key_marker, url)),
            E("VersionIdMarker", vid_marker),
        ]
        if page.is_truncated and page.next_key_marker is not None:
            fields.append(E("NextKeyMarker", url_encode_key(page.next_key_marker, url)))
            if page.next_version_id_marker is not None:
                fields.append(E("NextVersionIdMarker", page.next_version_id_marker))
        fields.append(E("MaxKeys", max_keys))
        if delimiter:
            fields.append(E("Delimiter", url_encode_key(delimiter, url)))
        if url:
            fields.append(E("EncodingType", "url"))
        fields.append(E("IsTruncated", "true" if page.is_truncated else "false"))
        body = document("ListVersionsResult", *fields, *items, *cps)
        return Response(200, [("content-type", "application/xml")], body)

    @staticmethod
    def _encode_token(key: str) -> str:
        return base64.urlsafe_b64encode(key.encode()).decode()

    @staticmethod
    def _decode_token(token: str) -> str:
        try:
            # validate=True: a junk token must not decode to "" and restart the listing.
            key = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
            if not key:
                raise ValueError("empty continuation token")
            return key
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise e.InvalidArgument("The continuation token provided is incorrect") from exc

    async def delete_objects(self, req: Request) -> Response:
        bucket = req.bucket or ""
        if (
            "content-md5" not in req.headers
            and not any(h.startswith("x-amz-checksum-") or h == "x-amz-sdk-checksum-algorithm" for h in req.headers)
            and "x-amz-trailer" not in req.headers
        ):
            raise e.InvalidRequest("Missing required header for this request: Content-MD5")
        body = await self._read_small(req)
        self._check_body_digest(req, body)
        el = parse_xml(body, "Delete")
        quiet = (text_of(el, "Quiet") or "false").strip().lower() == "true"
        objs = list(children(el, "Object"))
        if not objs:  # S3 requires at least one <Object>
            raise e.MalformedXML()
        if len(objs) > MAX_DELETE_KEYS:
            raise e.MalformedXML("You may delete at most 1000 objects in one request.")
        self.service.head_bucket(bucket)
        out: list[str] = []
        for o in objs:
            key = text_of(o, "Key")
            version = text_of(o, "VersionId")
            if key is None:
                raise e.MalformedXML()
            try:
                result = await self.service.delete_object(
                    bucket, key, version_id=version, bypass_governance=self._bypass_governance(req)
                )
                if not quiet:
                    fields = [E("Key", key)]
                    if version is not None:
                        fields.append(E("VersionId", version))
                        if result.delete_marker:  # S3 names the removed marker as the marker version
                            fields += [E("DeleteMarker", "true"), E("DeleteMarkerVersionId", version)]
                    elif result.delete_marker:
                        fields += [E("DeleteMarker", "true"), E("DeleteMarkerVersionId", result.version_id)]
                    out.append(E("Deleted", None, *fields))
            except e.TierstoreError as exc:
                vid = [E("VersionId", version)] if version is not None else []
                out.append(E("Error", None, E("Key", key), *vid, E("Code", exc.code), E("Message", exc.message)))
        return Response(200, [("content-type", "application/xml")], document("DeleteResult", *out))

    def _check_body_digest(self, req: Request, body: bytes) -> None:
        md5 = req.headers.get("content-md5")
        if md5 is not None:
            try:
                raw = base64.b64decode(md5, validate=True)
            except ValueError as exc:
                raise e.InvalidDigest() from exc
            if len(raw) != 16:  # not an MD5 at all: S3 says InvalidDigest, as for PutObject
                raise e.InvalidDigest()
            if raw != hashlib.md5(body).digest():  # noqa: S324 - protocol-defined
                raise e.BadDigest()

    # --- objects ---------------------------------------------------------------------
    def _reject_unsupported(self, req: Request) -> None:
        _sse.check_write(req.headers)
        for h in _UNSUPPORTED_HEADERS:
            if h in req.headers:
                raise e.NotImplementedOperation(f"The header {h} is not implemented yet.")
        acl = req.headers.get("x-amz-acl")
        if acl is not None and acl not in _ACCEPTED_ACLS:
            raise e.NotImplementedOperation(f"The canned ACL '{acl[:40]}' is not implemented.")

    def _object_headers(self, req: Request) -> tuple[dict[str, str], dict[str, str], str]:
        headers = {h: req.headers[h] for h in STANDARD_HEADERS if h in req.headers}
        user_meta = {
            k[len("x-amz-meta-") :]: _meta_value(v) for k, v in req.headers.items() if k.startswith("x-amz-meta-")
        }
        sc = req.headers.get("x-amz-storage-class", "STANDARD")
        if sc not in STORAGE_CLASSES:
            raise e.InvalidStorageClass()
        return headers, user_meta, sc

    def _checksum_expectation(self, req: Request, trailers: dict[str, str]) -> ChecksumExpectation | None:
        found = [a for a in CHECKSUM_ALGORITHMS if f"x-amz-checksum-{a}" in req.headers]
        trailer = req.headers.get("x-amz-trailer", "").strip().lower()
        if len(found) > 1:
            raise e.InvalidRequest(
                "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
            )
        if found:
            alg = found[0]
            return ChecksumExpectation(alg, value=req.headers[f"x-amz-checksum-{alg}"])
        if trailer:
            alg = trailer.removeprefix("x-amz-checksum-")
            if alg not in CHECKSUM_ALGORITHMS:
                raise e.InvalidRequest(
                    f"The value specified in the x-amz-trailer header is not supported: {trailer[:40]}"
                )
            return ChecksumExpectation(alg, trailers=trailers)
        sdk = req.headers.get("x-amz-sdk-checksum-algorithm", "").lower()
        if sdk:
            if sdk not in CHECKSUM_ALGORITHMS:
                raise e.InvalidRequest("Invalid x-amz-sdk-checksum-algorithm")
            return ChecksumExpectation(sdk)
        return None

    def _content_length(self, req: Request) -> int | None:
        h = req.headers
        raw = h.get("x-amz-decoded-content-length") or (
            None if "aws-chunked" in h.get("content-encoding", "") else h.get("content-length")
        )
        if raw is None:
            if h.get("content-length") is None and "chunked" not in h.get("transfer-encoding", ""):
                raise e.MissingContentLength()
            return None
        try:
            n = int(raw)
        except ValueError as exc:
            raise e.InvalidArgument("Invalid Content-Length") from exc
        if n < 0:
            raise e.InvalidArgument("Invalid Content-Length")
        if n > MAX_PUT_BYTES:
            raise e.EntityTooLarge()
        return n

    def _put_options(self, req: Request, trailers: dict[str, str]) -> PutOptions:
        headers, user_meta, sc = self._object_headers(req)
        tokens = headers.get("content-encoding", "").split(",")
        if any(t.strip().lower() == "aws-chunked" for t in tokens):
            # aws-chunked is transfer framing, not part of the object's encoding: drop that token
            # only; any other value is stored exactly as sent ("deflate, gzip" keeps its space).
            enc = ",".join(t for t in tokens if t.strip().lower() != "aws-chunked").strip()
            if enc:
                headers["content-encoding"] = enc
            else:
                del headers["content-encoding"]
        return PutOptions(
            headers=headers,
            user_meta=user_meta,
            conditions=Conditions(if_match=req.headers.get("if-match"), if_none_match=req.headers.get("if-none-match")),
            content_md5=req.headers.get("content-md5"),
            checksum=self._checksum_expectation(req, trailers),
            content_length=self._content_length(req),
            storage_class=sc,
        )

    async def put_object(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        self._reject_unsupported(req)
        body, trailers = self._payload(req)
        opts = self._put_options(req, trailers)
        meta = await self.service.put_object(
            req.bucket, req.key, body, opts, tags=self._tagging_header(req), lock=self._lock_headers(req)
        )
        return Response(200, self._write_headers(meta, opts.checksum))

    @staticmethod
    def _write_headers(meta: ObjectMeta, checksum: ChecksumExpectation | None) -> list[tuple[str, str]]:
        out = [("etag", meta.etag)]
        if checksum is not None and checksum.algorithm in meta.checksums:
            out.append((f"x-amz-checksum-{checksum.algorithm}", meta.checksums[checksum.algorithm]))
            if meta.checksum_type:
                out.append(("x-amz-checksum-type", meta.checksum_type))
        if meta.version_id != NULL_VERSION:
            out.append(("x-amz-version-id", meta.version_id))
        return out

    def _read_conditions(self, req: Request, prefix: str = "") -> Conditions:
        h = req.headers
        return Conditions(
            if_match=h.get(f"{prefix}if-match"),
            if_none_match=h.get(f"{prefix}if-none-match"),
            if_modified_since_ns=parse_http_date(h.get(f"{prefix}if-modified-since")),
            if_unmodified_since_ns=parse_http_date(h.get(f"{prefix}if-unmodified-since")),
        )

    async def get_object(self, req: Request, *, head: bool) -> Response:
        assert req.bucket is not None and req.key is not None
        _sse.check_read(req.headers)
        q = req.query
        part_number = _int_param(q, "partNumber", 0, lo=1) if "partNumber" in q else None
        if part_number is not None and part_number > MAX_PART_NUMBER:
            raise e.InvalidArgument(f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive")
        opts = GetOptions(
            byte_range=ByteRange.parse(req.headers.get("range")),
            conditions=self._read_conditions(req),
            part_number=part_number,
            version_id=q.get("versionId"),
        )
        try:
            if head:
                result = self.service.head_object(req.bucket, req.key, opts)
            else:
                result = await self.service.get_object(req.bucket, req.key, opts)
        except e.NotModified:
            meta = self.service.head_object(req.bucket, req.key, GetOptions(version_id=opts.version_id)).meta
            return Response(304, [("etag", meta.etag), ("last-modified", http_date(meta.modified_ns))])
        except e.InvalidRange as exc:
            # The engine names the object's size (ActualObjectSize, Content-Range: bytes */size);
            # S3's body also echoes the range asked for, first.
            if part_number is None and "range" in req.headers:
                exc.fields = {"RangeRequested": req.headers["range"], **exc.fields}
            raise
        headers = self._read_headers(req, result)
        if head:
            return Response(result_status(result), headers)
        assert result.body is not None
        first = b""
        if result.length:
            # Pull the first verified chunk before committing to a status line.
            try:
                first = await anext(result.body)
            except StopAsyncIteration:
                first = b""
        if len(first) == result.length:  # all of it (small objects): a plain response, no stream
            await result.body.aclose()  # type: ignore[attr-defined]
            return Response(result_status(result), headers, first)
        return Response(result_status(result), headers, stream=result.body, first_chunk=first)

    def _read_headers(self, req: Request, result: GetResult) -> list[tuple[str, str]]:
        meta = result.meta
        out = [
            ("content-length", str(result.length)),
            ("etag", meta.etag),
            ("last-modified", http_date(meta.modified_ns)),
            ("accept-ranges", "bytes"),
        ]
        hdrs = dict(meta.headers)
        hdrs.setdefault("content-type", "binary/octet-stream")
        for q, h in _RESPONSE_OVERRIDES.items():
            if q in req.query:
                hdrs[h] = req.query[q].encode("utf-8").decode("latin-1")  # the UTF-8 bytes it was sent as
        out += list(hdrs.items())
        # User metadata is text (UTF-8 on the wire); _send writes header strings as latin-1, so hand
        # it the UTF-8 bytes as latin-1 code points: the client gets back the bytes it sent.
        out += [(f"x-amz-meta-{k}", v.encode("utf-8").decode("latin-1")) for k, v in meta.user_meta.items()]
        if result.partial:
            end = result.offset + result.length - 1
            out.append(("content-range", f"bytes {result.offset}-{end}/{meta.size_bytes}"))
        if result.parts_count is not None and req.query.get("partNumber"):
            out.append(("x-amz-mp-parts-count", str(result.parts_count)))
        if meta.storage_class != "STANDARD":
            out.append(("x-amz-storage-class", meta.storage_class))
        # S3 reads answer "null" for the null version once the bucket has a versioning state
        # (writes to a suspended bucket answer no version id at all).
        if meta.version_id != NULL_VERSION or result.bucket_versioning:
            out.append(("x-amz-version-id", meta.version_id))
        if meta.tags:
            out.append(("x-amz-tagging-count", str(len(meta.tags))))
        out += self._lock_read_headers(meta)
        # The object's checksum describes the bytes sent only when they are all of it (part 1 of
        # an object stored in one PUT is a 206 of the whole object).
        whole = not result.partial or ("partNumber" in req.query and result.length == meta.size_bytes)
        if req.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED" and whole:
            # S3 reports one checksum per object: the client's algorithm, else the crc64nvme default.
            chosen = [a for a in meta.checksums if a != "crc64nvme"] or list(meta.checksums)
            for alg in chosen[:1]:
                out.append((f"x-amz-checksum-{alg}", meta.checksums[alg]))
            if meta.checksum_type and chosen:
                out.append(("x-amz-checksum-type", meta.checksum_type))
        return out

    def get_object_attributes(self, req: Request) -> Response:
        """GetObjectAttributes: the attributes named in ``x-amz-object-attributes`` (ETag, Checksum,
        ObjectParts, StorageClass, ObjectSize) of the current version or ``versionId``.

        As in S3: the ETag without quotes; a composite checksum without its ``-N``; ObjectParts
        only for a multipart object, paged by ``x-amz-max-parts`` / ``x-amz-part-number-marker``,
        its Part elements only when the upload had a checksum algorithm."""
        assert req.bucket is not None and req.key is not None
        h = req.headers
        wanted = {a.strip() for a in h.get("x-amz-object-attributes", "").split(",") if a.strip()}
        if not wanted:
            raise e.InvalidArgument("Missing required header for this request: x-amz-object-attributes")
        unknown = wanted - _OBJECT_ATTRIBUTES
        if unknown:
            raise e.InvalidArgument(f"Invalid attribute name specified: {sorted(unknown)[0][:40]}")
        max_parts = _int_param(h, "x-amz-max-parts", 1000, hi=1000)
        marker = _int_param(h, "x-amz-part-number-marker", 0)
        opts = GetOptions(conditions=self._read_conditions(req), version_id=req.query.get("versionId"))
        result = self.service.head_object(req.bucket, req.key, opts)
        meta = result.meta
        fields: list[str] = []
        if "ETag" in wanted:
            fields.append(E("ETag", meta.etag.strip('"')))
        if "Checksum" in wanted:
            chosen = [a for a in meta.checksums if a != "crc64nvme"] or list(meta.checksums)
            if chosen:
                alg = chosen[0]
                value = meta.checksums[alg]
                if meta.checksum_type == "COMPOSITE":
                    value = value.partition("-")[0]  # base64 has no "-": this drops the part count
                extra = [E("ChecksumType", meta.checksum_type)] if meta.checksum_type else []
                fields.append(E("Checksum", None, E(f"Checksum{alg.upper()}", value), *extra))
        if "ObjectParts" in wanted and meta.parts:
            fields.append(self._object_parts(meta, max_parts, marker))
        if "StorageClass" in wanted:
            fields.append(E("StorageClass", meta.storage_class))
        if "ObjectSize" in wanted:
            fields.append(E("ObjectSize", meta.size_bytes))
        headers = [("content-type", "application/xml"), ("last-modified", http_date(meta.modified_ns))]
        if meta.version_id != NULL_VERSION or result.bucket_versioning:
            headers.append(("x-amz-version-id", meta.version_id))
        return Response(200, headers, document("GetObjectAttributesResponse", *fields))

    @staticmethod
    def _object_parts(meta: ObjectMeta, max_parts: int, marker: int) -> str:
        """The ObjectParts element of GetObjectAttributes: parts after ``marker``, at most ``max_parts``."""
        count = len(meta.parts)
        numbers = list(range(marker + 1, min(count, marker + max_parts) + 1))
        truncated = bool(numbers) and numbers[-1] < count
        fields = [
            E("PartsCount", count),
            E("PartNumberMarker", marker),
            E("NextPartNumberMarker", numbers[-1] if numbers else marker),
            E("MaxParts", max_parts),
            E("IsTruncated", "true" if truncated else "false"),
        ]
        # S3 lists the parts themselves only when the upload had a checksum algorithm.
        for alg, sums in meta.part_checksums.items():
            checksum = f"Checksum{alg.upper()}"
            fields += [
                E("Part", None, E("PartNumber", n), E("Size", meta.parts[n - 1]), E(checksum, sums[n - 1]))
                for n in numbers
            ]
        return E("ObjectParts", None, *fields)

    async def delete_object(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        result = await self.service.delete_object(
            req.bucket,
            req.key,
            version_id=req.query.get("versionId"),
            if_match=req.headers.get("if-match"),
            bypass_governance=self._bypass_governance(req),
        )
        headers = []
        if result.version_id is not None:
            headers.append(("x-amz-version-id", result.version_id))
        if result.delete_marker:
            headers.append(("x-amz-delete-marker", "true"))
        return Response(204, headers)

    @staticmethod
    def _bypass_governance(req: Request) -> bool:
        return req.headers.get("x-amz-bypass-governance-retention", "").lower() == "true"

    def _copy_source(self, req: Request) -> tuple[str, str, str | None]:
        raw = req.headers["x-amz-copy-source"]
        path, _, query = raw.partition("?")
        src = unquote(path)
        src = src[1:] if src.startswith("/") else src
        bucket, _, key = src.partition("/")
        if not bucket or not key:
            raise e.InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
        version = parse_query(query.encode()).get("versionId") if query else None
        return bucket, key, version

    @staticmethod
    def _copy_source_range(req: Request) -> ByteRange | None:
        raw = req.headers.get("x-amz-copy-source-range")
        parsed = ByteRange.parse(raw)
        if raw is not None and (parsed is None or parsed.first is None or parsed.last is None):
            # Unlike a GET Range, a bad copy range is an error, never "copy everything".
            raise e.InvalidArgument(
                "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last"
                " are the zero-based offsets of the first and last bytes to copy"
            )
        return parsed

    def _copy_options(self, req: Request) -> CopyOptions:
        directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise e.InvalidArgument("Unknown metadata directive.")
        headers, user_meta, _ = self._object_headers(req)
        sc = req.headers.get("x-amz-storage-class")
        if sc is not None and sc not in STORAGE_CLASSES:
            raise e.InvalidStorageClass()
        alg = req.headers.get("x-amz-checksum-algorithm", "").lower() or None
        if alg is not None and alg not in CHECKSUM_ALGORITHMS:
            raise e.InvalidRequest("Invalid x-amz-checksum-algorithm")
        return CopyOptions(
            source_conditions=self._read_conditions(req, "x-amz-copy-source-"),
            replace_metadata=directive == "REPLACE",
            headers=headers,
            user_meta=user_meta,
            conditions=Conditions(if_match=req.headers.get("if-match"), if_none_match=req.headers.get("if-none-match")),
            source_range=self._copy_source_range(req),
            checksum_algorithm=alg,
            storage_class=sc,
        )

    async def copy_object(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        self._reject_unsupported(req)
        await self._read_small(req, limit=0)
        src_bucket, src_key, src_version = self._copy_source(req)
        opts = self._copy_options(req)
        directive = req.headers.get("x-amz-tagging-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise e.InvalidArgument("Unknown tagging directive.")
        opts.replace_tags = directive == "REPLACE"
        opts.tags = self._tagging_header(req) if opts.replace_tags else []
        opts.lock = self._lock_headers(req)
        copied = await self.service.copy_object(
            src_bucket, src_key, req.bucket, req.key, opts, src_version_id=src_version
        )
        meta = copied.meta
        extra = [E(f"Checksum{a.upper()}", v) for a, v in meta.checksums.items() if a == opts.checksum_algorithm]
        body = document("CopyObjectResult", E("LastModified", iso8601(meta.modified_ns)), E("ETag", meta.etag), *extra)
        headers = [("content-type", "application/xml")]
        if meta.version_id != NULL_VERSION:
            headers.append(("x-amz-version-id", meta.version_id))
        if src_version is not None or copied.source_version_id != NULL_VERSION:
            headers.append(("x-amz-copy-source-version-id", copied.source_version_id))
        return Response(200, headers, body)

    # --- tags and object lock ----------------------------------------------------------
    @staticmethod
    def _tagging_header(req: Request) -> list[tuple[str, str]]:
        raw = req.headers.get("x-amz-tagging")
        return parse_tagging_header(raw) if raw else []

    @staticmethod
    def _lock_headers(req: Request) -> LockRequest:
        h = req.headers
        return parse_lock_headers(
            h.get("x-amz-object-lock-mode"),
            h.get("x-amz-object-lock-retain-until-date"),
            h.get("x-amz-object-lock-legal-hold"),
        )

    @staticmethod
    def _lock_read_headers(meta: ObjectMeta) -> list[tuple[str, str]]:
        out = []
        lock = meta.lock
        if "mode" in lock:
            out.append(("x-amz-object-lock-mode", str(lock["mode"])))
            out.append(("x-amz-object-lock-retain-until-date", format_retain_until(int(lock["until_ns"]))))
        if "legal_hold" in lock:
            out.append(("x-amz-object-lock-legal-hold", "ON" if lock["legal_hold"] else "OFF"))
        return out

    @staticmethod
    def _version_header(meta: ObjectMeta) -> list[tuple[str, str]]:
        return [("x-amz-version-id", meta.version_id)] if meta.version_id != NULL_VERSION else []

    async def _config_body(self, req: Request, root: str) -> Element:
        body = await self._read_small(req)
        self._check_body_digest(req, body)
        return parse_xml(body, root)

    async def _tag_set(self, req: Request) -> list[tuple[str, str]]:
        el = await self._config_body(req, "Tagging")
        tag_set = next(iter(children(el, "TagSet")), None)
        if tag_set is None:
            raise e.MalformedXML()
        pairs = []
        for tag in children(tag_set, "Tag"):
            key, value = text_of(tag, "Key"), text_of(tag, "Value")
            if key is None or value is None:
                raise e.MalformedXML()
            pairs.append((key, value))
        return pairs

    @staticmethod
    def _tagging_document(tags: dict[str, str]) -> bytes:
        # S3 answers tags sorted by key (code point order, which is UTF-8 byte order).
        items = [E("Tag", None, E("Key", k), E("Value", v)) for k, v in sorted(tags.items())]
        return document("Tagging", E("TagSet", None, *items) if items else "<TagSet></TagSet>")

    async def object_tagging(self, req: Request, m: str) -> Response:
        """GetObjectTagging, PutObjectTagging, DeleteObjectTagging (optionally by versionId)."""
        assert req.bucket is not None and req.key is not None
        version = req.query.get("versionId")
        if m == "GET":
            meta = self.service.get_object_tagging(req.bucket, req.key, version)
            headers = [("content-type", "application/xml"), *self._version_header(meta)]
            return Response(200, headers, self._tagging_document(meta.tags))
        if m == "PUT":
            meta = await self.service.put_object_tagging(req.bucket, req.key, await self._tag_set(req), version)
            return Response(200, self._version_header(meta))
        meta = await self.service.delete_object_tagging(req.bucket, req.key, version)
        return Response(204, self._version_header(meta))

    async def bucket_tagging(self, req: Request, m: str) -> Response:
        """GetBucketTagging (NoSuchTagSet when none), PutBucketTagging, DeleteBucketTagging."""
        bucket = req.bucket or ""
        if m == "GET":
            tags = self.service.get_bucket_tagging(bucket)
            return Response(200, [("content-type", "application/xml")], self._tagging_document(tags))
        if m == "PUT":
            await self.service.put_bucket_tagging(bucket, await self._tag_set(req))
            return Response(204)
        await self.service.delete_bucket_tagging(bucket)
        return Response(204)

    async def object_lock_configuration(self, req: Request, m: str) -> Response:
        """Get/PutObjectLockConfiguration: ObjectLockEnabled=Enabled, optional default retention."""
        bucket = req.bucket or ""
        if m == "GET":
            config = self.service.get_object_lock_configuration(bucket)
            rule = ""
            if config.default is not None:
                d = config.default
                period = E("Days", d.days) if d.days is not None else E("Years", d.years)
                rule = E("Rule", None, E("DefaultRetention", None, E("Mode", d.mode), period))
            body = document("ObjectLockConfiguration", E("ObjectLockEnabled", "Enabled"), rule)
            return Response(200, [("content-type", "application/xml")], body)
        el = await self._config_body(req, "ObjectLockConfiguration")
        if text_of(el, "ObjectLockEnabled") != "Enabled":
            raise e.MalformedXML()
        default = None
        rule_el = next(iter(children(el, "Rule")), None)
        if rule_el is not None:
            dr = next(iter(children(rule_el, "DefaultRetention")), None)
            if dr is None:
                raise e.MalformedXML()
            mode, days, years = text_of(dr, "Mode"), text_of(dr, "Days"), text_of(dr, "Years")
            if mode is None:
                raise e.MalformedXML()
            default = DefaultRetention(mode, _xml_int(days), _xml_int(years))
        await self.service.put_object_lock_configuration(bucket, LockConfig(default))
        return Response(200)

    async def object_retention(self, req: Request, m: str) -> Response:
        """Get/PutObjectRetention. An empty <Retention/> removes it (in GOVERNANCE only with the bypass)."""
        assert req.bucket is not None and req.key is not None
        version = req.query.get("versionId")
        if m == "GET":
            r = self.service.get_object_retention(req.bucket, req.key, version)
            body = document("Retention", E("Mode", r.mode), E("RetainUntilDate", format_retain_until(r.until_ns)))
            return Response(200, [("content-type", "application/xml")], body)
        el = await self._config_body(req, "Retention")
        mode, until = text_of(el, "Mode"), text_of(el, "RetainUntilDate")
        if (mode is None) != (until is None):
            raise e.MalformedXML()
        retention = None
        if mode is not None and until is not None:
            if mode not in ("GOVERNANCE", "COMPLIANCE"):
                raise e.MalformedXML()
            retention = Retention(parse_mode(mode), parse_retain_until(until))
        meta = await self.service.put_object_retention(
            req.bucket, req.key, retention, version_id=version, bypass_governance=self._bypass_governance(req)
        )
        return Response(200, self._version_header(meta))

    async def object_legal_hold(self, req: Request, m: str) -> Response:
        """Get/PutObjectLegalHold (ON / OFF)."""
        assert req.bucket is not None and req.key is not None
        version = req.query.get("versionId")
        if m == "GET":
            on = self.service.get_object_legal_hold(req.bucket, req.key, version)
            body = document("LegalHold", E("Status", "ON" if on else "OFF"))
            return Response(200, [("content-type", "application/xml")], body)
        el = await self._config_body(req, "LegalHold")
        status = text_of(el, "Status")
        if status not in ("ON", "OFF"):
            raise e.MalformedXML()
        meta = await self.service.put_object_legal_hold(
            req.bucket, req.key, parse_legal_hold(status), version_id=version
        )
        return Response(200, self._version_header(meta))

    # --- multipart -------------------------------------------------------------------
    async def create_multipart_upload(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        self._reject_unsupported(req)
        headers, user_meta, sc = self._object_headers(req)
        alg = req.headers.get("x-amz-checksum-algorithm", "").lower() or None
        if alg is not None and alg not in CHECKSUM_ALGORITHMS:
            raise e.InvalidRequest("Invalid x-amz-checksum-algorithm")
        info = await self.service.create_multipart_upload(
            req.bucket,
            req.key,
            headers=headers,
            user_meta=user_meta,
            checksum_algorithm=alg,
            checksum_type=req.headers.get("x-amz-checksum-type"),
            storage_class=sc,
            tags=self._tagging_header(req),
            lock=self._lock_headers(req),
        )
        body = document(
            "InitiateMultipartUploadResult", E("Bucket", req.bucket), E("Key", req.key), E("UploadId", info.upload_id)
        )
        out = [("content-type", "application/xml")]
        if alg:
            out += [("x-amz-checksum-algorithm", alg.upper()), ("x-amz-checksum-type", info.checksum_type or "")]
        return Response(200, out, body)

    def _part_number(self, req: Request) -> int:
        try:
            n = int(req.query["partNumber"])
        except ValueError as exc:
            raise e.InvalidArgument("Part number must be an integer between 1 and 10000, inclusive") from exc
        return n

    async def upload_part(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        _sse.check_write(req.headers)
        body, trailers = self._payload(req)
        opts = self._put_options(req, trailers)
        from_checksum = req.headers.get("x-tierstore-etag", "").lower() == "checksum"
        part = await self.service.upload_part(
            req.bucket, req.key, req.query["uploadId"], self._part_number(req), body, opts,
            etag_from_checksum=from_checksum,
        )  # fmt: skip
        out = [("etag", part.etag)]
        out += [(f"x-amz-checksum-{a}", v) for a, v in part.checksums.items()]
        return Response(200, out)

    async def upload_part_copy(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        _sse.check_write(req.headers)
        await self._read_small(req, limit=0)
        src_bucket, src_key, src_version = self._copy_source(req)
        part = await self.service.upload_part_copy(
            req.bucket,
            req.key,
            req.query["uploadId"],
            self._part_number(req),
            src_bucket,
            src_key,
            self._copy_options(req),
            src_version_id=src_version,
        )
        extra = [E(f"Checksum{a.upper()}", v) for a, v in part.checksums.items()]
        body = document("CopyPartResult", E("LastModified", iso8601(part.modified_ns)), E("ETag", part.etag), *extra)
        return Response(200, [("content-type", "application/xml")], body)

    async def complete_multipart_upload(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        _sse.check_write(req.headers)
        body = await self._read_small(req)
        el = parse_xml(body, "CompleteMultipartUpload")
        parts: list[CompletedPart] = []
        for p in children(el, "Part"):
            num = text_of(p, "PartNumber")
            etag = text_of(p, "ETag")
            if num is None or etag is None:
                raise e.MalformedXML()
            try:
                n = int(num)
            except ValueError as exc:
                raise e.MalformedXML() from exc
            sums = {a: v for a in CHECKSUM_ALGORITHMS if (v := text_of(p, f"Checksum{a.upper()}")) is not None}
            parts.append(CompletedPart(n, etag, sums))
        if not parts:
            raise e.MalformedXML()
        full = full_alg = None
        for a in CHECKSUM_ALGORITHMS:
            if f"x-amz-checksum-{a}" in req.headers:
                full, full_alg = req.headers[f"x-amz-checksum-{a}"], a
        meta = await self.service.complete_multipart_upload(
            req.bucket,
            req.key,
            req.query["uploadId"],
            parts,
            conditions=Conditions(if_match=req.headers.get("if-match"), if_none_match=req.headers.get("if-none-match")),
            checksum_type=req.headers.get("x-amz-checksum-type"),
            full_object_checksum=full,
            object_checksum_algorithm=full_alg,
        )
        loc = f"/{quote(req.bucket)}/{quote(req.key)}"
        extra = [E(f"Checksum{a.upper()}", v) for a, v in meta.checksums.items() if a != "crc64nvme" or meta.parts]
        if meta.checksum_type and extra:
            extra.append(E("ChecksumType", meta.checksum_type))
        body = document(
            "CompleteMultipartUploadResult",
            E("Location", loc),
            E("Bucket", req.bucket),
            E("Key", req.key),
            E("ETag", meta.etag),
            *extra,
        )
        headers = [("content-type", "application/xml")]
        if meta.version_id != NULL_VERSION:
            headers.append(("x-amz-version-id", meta.version_id))
        return Response(200, headers, body)

    async def abort_multipart_upload(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        await self.service.abort_multipart_upload(req.bucket, req.key, req.query["uploadId"])
        return Response(204)

    def list_parts(self, req: Request) -> Response:
        assert req.bucket is not None and req.key is not None
        q = req.query
        max_parts = _int_param(q, "max-parts", 1000, hi=1000)
        marker = _int_param(q, "part-number-marker", 0)
        upload, parts, truncated = self.service.list_parts(
            req.bucket, req.key, q["uploadId"], after_part=marker, max_parts=max_parts
        )
        items = [
            E(
                "Part",
                None,
                E("PartNumber", p.part_number),
                E("LastModified", iso8601(p.modified_ns)),
                E("ETag", p.etag),
                E("Size", p.size_bytes),
                *[E(f"Checksum{a.upper()}", v) for a, v in p.checksums.items()],
            )
            for p in parts
        ]
        owner = self._owner(req)
        fields = [
            E("Bucket", req.bucket),
            E("Key", req.key),
            E("UploadId", upload.upload_id),
            E("Initiator", None, E("ID", req.auth.access_key if req.auth else ""), E("DisplayName", "")),
            owner,
            E("StorageClass", upload.storage_class),
            E("PartNumberMarker", marker),
            E("NextPartNumberMarker", parts[-1].part_number if parts else 0),
            E("MaxParts", max_parts),
            E("IsTruncated", "true" if truncated else "false"),
        ]
        if upload.checksum_algorithm:
            fields.append(E("ChecksumAlgorithm", upload.checksum_algorithm.upper()))
            fields.append(E("ChecksumType", upload.checksum_type or ""))
        body = document("ListPartsResult", *fields, *items)
        return Response(200, [("content-type", "application/xml")], body)

    def list_multipart_uploads(self, req: Request) -> Response:
        q = req.query
        bucket = req.bucket or ""
        max_uploads = _int_param(q, "max-uploads", 1000, hi=1000)
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        url = q.get("encoding-type") == "url"
        uploads, prefixes, truncated = self.service.list_multipart_uploads(
            bucket,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=q.get("key-marker", ""),
            upload_id_marker=q.get("upload-id-marker", ""),
            max_uploads=max_uploads,
        )
        items: list[str] = []
        cps = [E("CommonPrefixes", None, E("Prefix", url_encode_key(cp, url))) for cp in prefixes]
        for u in uploads:
            items.append(
                E(
                    "Upload",
                    None,
                    E("Key", url_encode_key(u.key, url)),
                    E("UploadId", u.upload_id),
                    E("Initiator", None, E("ID", ""), E("DisplayName", "")),
                    self._owner(req),
                    E("StorageClass", u.storage_class),
                    E("Initiated", iso8601(u.initiated_ns)),
                    *([E("ChecksumAlgorithm", u.checksum_algorithm.upper())] if u.checksum_algorithm else []),
                )
            )
        fields = [
            E("Bucket", bucket),
            E("KeyMarker", q.get("key-marker", "")),
            E("UploadIdMarker", q.get("upload-id-marker", "")),
        ]
        if truncated and (uploads or prefixes):
            # The last item of the page: an upload, or a common prefix (then without upload id).
            if prefixes and (not uploads or prefixes[-1].encode() > uploads[-1].key.encode()):
                fields += [E("NextKeyMarker", url_encode_key(prefixes[-1], url)), E("NextUploadIdMarker", "")]
            else:
                last = uploads[-1]
                fields += [E("NextKeyMarker", url_encode_key(last.key, url)), E("NextUploadIdMarker", last.upload_id)]
        fields += [E("Prefix", prefix), E("MaxUploads", max_uploads)]
        if delimiter:
            fields.append(E("Delimiter", delimiter))
        if url:
            fields.append(E("EncodingType", "url"))
        fields.append(E("IsTruncated", "true" if truncated else "false"))
        body = document("ListMultipartUploadsResult", *fields, *items, *cps)
        return Response(200, [("content-type", "application/xml")], body)


def _expects_continue(scope: Scope) -> bool:
    return any(k.lower() == b"expect" and v.strip().lower() == b"100-continue" for k, v in scope["headers"])


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (any unread request body is discarded)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


def result_status(result: GetResult) -> int:
    return 206 if result.partial else 200
