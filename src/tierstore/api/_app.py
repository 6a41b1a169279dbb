"""The S3 HTTP API as a plain ASGI application (no framework on the hot path).

``S3App`` is the plumbing around the route table (``_routes``): it answers health probes and
metrics scrapes, parses the request (path-style or virtual-hosted), names it through the route
table, authenticates it, authorizes it once (``_authorize``: before any handler, precondition,
existence check or body read), runs the action's handler (one module per resource), turns every
domain error into S3 XML through the one table in ``_errors``, sends the answer and counts it
(metrics, access log). Handlers see only the engine's services (``_request.Context``).
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

from tierstore import errors as e
from tierstore.api import (
    _cors,
    _extensions,
    _iam_api,  # noqa: F401 - registers the IAM query actions (_query)
    _sts,  # noqa: F401 - registers the STS query actions
)
from tierstore.api._accesslog import AccessLog, Exchange, access_line
from tierstore.api._audit import AuditLog, audit_line
from tierstore.api._auth import Authenticator
from tierstore.api._authorize import (
    ANONYMOUS_DENIED,
    AllowAuthenticated,
    Authorizer,
    Check,
    Principal,
    RequestContext,
    bucket_arn,
    object_arn,
)
from tierstore.api._errors import error_body, status_of
from tierstore.api._health import probe
from tierstore.api._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tierstore.api._metrics import Metrics
from tierstore.api._query import (
    QUERY_API,
    QueryAction,
    QueryCall,
    QueryService,
    is_query_request,
    lookup,
    read_form,
)
from tierstore.api._query import error_body as query_error_body
from tierstore.api._query import response_body as query_response_body
from tierstore.api._request import Context, Receive, Request, Response, parse_query
from tierstore.api._routes import (
    ACTIONS,
    EXTENSION_PREFIX,
    METRICS_ACTIONS,
    PREFLIGHT,
    PROBE_ACTIONS,
    UNAUTHENTICATED,
    UNKNOWN,
    checks,
    refuse,
    route,
)
from tierstore.api._sse import refuse_customer_key_over_http
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
from tierstore.runtime import new_request_id

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
Send = Callable[[dict[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_HEADER_BYTES = 64 * 1024
MAX_DRAIN_BYTES = 1024 * 1024  # unread request body we read and drop rather than close the connection
_ANONYMOUS = Principal.anonymous()  # an unsigned request's principal (a tuple: one for all)
_KEY_READS = frozenset({"GetObject", "HeadObject"})  # a missing key: 404 or 403 (``_may_list``)
_DOCUMENT_DESTS = frozenset({"document", "iframe", "frame", "embed", "object"})  # Sec-Fetch-Dest of a page
_YIELD_BYTES = 1024 * 1024  # a streamed body yields to the event loop at least this often (``_send``)


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
        audit_log: AuditLog | None = None,
        idle_timeout_s: float | None = None,
        authorizer: Authorizer | None = None,
        identities: IdentityService | None = None,
        sts: StsService | None = None,
        oidc: OidcVerifier | None = None,
        kms: LocalKeyStore | None = None,
        sse_c_over_http: bool = False,
    ) -> None:
        """``metrics_token``: when set, the metrics endpoints require ``Authorization: Bearer TOKEN``;
        ``access_log``: where the JSON access log goes (None: nowhere); ``audit_log``: the
        audit log's rotated file (None: none); ``authorizer``: decides
        each authenticated request (default: every authenticated principal may do everything)."""
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
        self.audit_log = audit_log
        self._metrics_task: asyncio.Task[None] | None = None
        self.authorizer: Authorizer = authorizer or AllowAuthenticated()
        self.sse_c_over_http = sse_c_over_http  # else SSE-C keys only over TLS (api/_sse.py)
        self._mounted: tuple[Callable[[Scope], bool], Asgi] | None = None
        self.ctx = Context(
            service, self.metrics, admin, datasets, models, self.authorizer, identities, sts=sts, oidc=oidc, kms=kms,
            audit=audit_log,
        )

    def mount(self, wants: Callable[[Scope], bool], app: Asgi) -> None:
        """Hand the requests ``wants`` (the web console's) to ``app``, which acts by calling this
        app back with signed requests: it adds no path around the dispatcher (docs/console.md)."""
        self._mounted = (wants, app)

    # --- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._mounted is not None and self._mounted[0](scope):  # the web console (docs/console.md)
            await self._mounted[1](scope, receive, send)
            return
        request_id = new_request_id()
        x = Exchange(receive)  # counts request body bytes; _send notes the response's bytes and first byte
        receive = x.receive
        req: Request | None = None
        error_code = ""
        try:
            req = self._parse(scope, receive)
            virtual = req.virtual_bucket is not None
            req.action = route(req.method, req.bucket, req.key, req.query, req.headers, virtual).action
            if req.action in PROBE_ACTIONS:  # health and metrics: before authentication, not logged
                resp = await self._probe(req, scope)
            elif req.action == QUERY_API:  # IAM/STS: the form names the action
                try:
                    named = await self._name_query(req)
                finally:
                    self.metrics.started(req.action)  # QUERY_API if the form named nothing
                resp = await self._handle_query(req, scope, *named, request_id)
            else:
                self.metrics.started(req.action)
                resp = await self._handle(req, scope)
                if self._mounted is not None and req.headers.get("sec-fetch-dest") in _DOCUMENT_DESTS:
                    # An object opened as a page shares the console's origin: sandboxed, its
                    # script (if any) runs in an opaque origin, away from the console (docs/console.md).
                    resp.headers.append(("content-security-policy", "sandbox"))
        except e.TierstoreError as exc:
            error_code = exc.code
            resp = self._error(exc, req, request_id)
        except Exception:
            log.exception("internal error (request %s)", request_id)
            error_code = "InternalError"
            resp = self._error(e.InternalError(), req, request_id)
        if req is not None and req.bucket not in (None, EXTENSION_PREFIX) and "origin" in req.headers:
            await self._cors(req, resp)
        if req is None or (not req.body_done and not req.bodiless):
            if not (req is not None and req.body_started) and _expects_continue(scope):
                # The client holds the body back until "100 Continue", which the HTTP layer sends
                # when the body is first read: answer without reading it (a refusal must never
                # invite the upload) and close, as whether the body follows is now unknown.
                resp.headers.append(("connection", "close"))
            else:
                await self._discard_body(scope, receive, resp)
        head = scope["method"] == "HEAD"
        try:
            await self._send(send, resp, request_id, head=head, receive=receive, x=x)
        finally:
            if req is None or req.action not in PROBE_ACTIONS:
                decided = self._observe(scope, req, resp, x, request_id, error_code)
                if self.audit_log is not None:
                    await self._audit(scope, req, resp, x, request_id, error_code, decided)

    async def _cors(self, req: Request, resp: Response) -> None:
        """An actual request with ``Origin`` gets its bucket's matching CORS rule's headers, also
        on an error (a preflight answered its own)."""
        if req.action != PREFLIGHT and req.bucket is not None:
            await _cors.apply(self.service, req.bucket, req.method, req.headers, resp)

    def _observe(
        self, scope: Scope, req: Request | None, resp: Response, x: Exchange, request_id: str, error_code: str
    ) -> Any:
        """Count the request in the metrics and write its access log line (every request: the
        values are looked up once, and passed positionally). Returns the authorizer's decision
        (for the audit line)."""
        now = time.perf_counter()
        started = x.started
        first_byte = x.first_byte
        ttfb_s = (first_byte if first_byte is not None else now) - started
        total_s = now - started
        status = resp.status
        if req is not None:
            api = req.action
            authz = req.authz
            decided = authz.decision if authz is not None else None
        else:
            api, decided = UNKNOWN, None
        self.metrics.finished(api, status, error_code, x.bytes_in, x.bytes_out, ttfb_s, total_s, req is not None)
        if self.access_log is not None:
            client = scope.get("client")
            if req is not None:
                auth = req.auth
                access_key = (auth.access_key or "") if auth is not None else ""
                bucket, key, user_agent = req.bucket, req.key, req.headers.get("user-agent")
            else:
                access_key, bucket, key, user_agent = "", None, None, None
            if decided is not None:  # _decided_by, inline
                reason = decided.reason
                policy = f"{decided.policy}:{decided.statement}" if decided.policy else None
            else:
                reason, policy = "", None
            self.access_log.write(
                access_line(
                    x,
                    request_id,
                    str(client[0]) if client else "",
                    scope["method"],
                    access_key,
                    api,
                    bucket,
                    key,
                    status,
                    error_code,
                    ttfb_s,
                    total_s,
                    user_agent,
                    reason,
                    policy,
                )
            )
        return decided

    async def _audit(
        self,
        scope: Scope,
        req: Request | None,
        resp: Response,
        x: Exchange,
        request_id: str,
        error_code: str,
        decided: Any,
    ) -> None:
        """Write the request's audit line (``_audit``): who, what, on which resource, decided how."""
        assert self.audit_log is not None
        authz = req.authz if req is not None else None
        access_key = (req.auth.access_key or "") if req is not None and req.auth is not None else ""
        identity = authz.principal.identity if authz is not None else None
        if identity is None and access_key and self.ctx.identities is not None:
            try:
                identity = await self.ctx.identities.principal_for(access_key)  # cached: the authorizer just asked
            except Exception:  # the catalog failed: the line goes out without the user
                log.exception("audit: no principal for request %s", request_id)
        if authz is not None and authz.checks:
            action, resource = authz.action, authz.resource
        else:  # refused before authorization (authentication, an unknown operation)
            action = ""
            bucket = req.bucket if req is not None else None
            key = req.key if req is not None else None
            resource = "" if not bucket else object_arn(bucket, key) if key else bucket_arn(bucket)
        self.audit_log.write(
            audit_line(
                x,
                request_id=request_id,
                source_ip=str((scope.get("client") or ("",))[0]),
                access_key=access_key,
                principal=identity,
                action=action,
                api=req.action if req is not None else UNKNOWN,
                resource=resource,
                status=resp.status,
                error_code=error_code,
                decision=decided.reason if decided is not None else "",
                policy=_decided_by(decided),
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
                flush_log = self._flush_logs if self.access_log is not None or self.audit_log is not None else None
                self._metrics_task = asyncio.get_running_loop().create_task(self.metrics.run(self.admin, flush_log))
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self._metrics_task is not None:
                    self._metrics_task.cancel()
                self.metrics.flush()
                self._flush_logs()
                if self._on_shutdown:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _flush_logs(self) -> None:
        for sink in (self.access_log, self.audit_log):
            if sink is not None:
                sink.flush()

    def _error(self, exc: e.TierstoreError, req: Request | None, request_id: str) -> Response:
        if is_query_request(req):
            assert req is not None
            status, body = query_error_body(exc, request_id, req.form)
            return Response(status, [("content-type", "text/xml")], body)
        status = status_of(exc)
        if status == 304:
            return Response(304, list(exc.headers.items()))
        resource = req.resource if req is not None else "/"
        body = error_body(exc, resource, request_id)
        headers = [("content-type", "application/xml"), *exc.headers.items()]
        if status == 503 and not any(k.lower() == "retry-after" for k in exc.headers):
            headers.append(("retry-after", "1"))  # a remote tier's error names its own (TierUnavailable)
        return Response(status, headers, body)

    async def _send(
        self,
        send: Send,
        resp: Response,
        request_id: str,
        *,
        head: bool,
        receive: Receive | None = None,
        x: Exchange | None = None,
    ) -> None:
        """Send ``resp``; ``x`` (the request's Exchange) is told when the head went out and how
        many body bytes followed (counted here, not by wrapping ``send``: two fewer coroutines
        per small response)."""
        rid = request_id.encode()
        headers = [(b"x-amz-request-id", rid), (b"x-amz-id-2", rid), (b"server", b"tierstore")]
        has_length = False
        for k, v in resp.headers:  # one pass: encode, and look for a Content-Length
            if k == "content-length":
                has_length = True
            headers.append((k.encode(), v.encode("latin-1", "replace")))
        if not has_length and resp.status != 304 and resp.stream is None:
            headers.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        if x is not None:
            x.first_byte = time.perf_counter()
        if head or resp.status == 304:
            if resp.stream is not None:
                await resp.stream.aclose()  # type: ignore[attr-defined]
            await send({"type": "http.response.body", "body": b""})
            return
        if resp.stream is None:
            if x is not None:
                x.bytes_out = len(resp.body)
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
                if x is not None:
                    x.bytes_out += len(resp.first_chunk)
                await send({"type": "http.response.body", "body": resp.first_chunk, "more_body": True})
            unyielded = 0
            async for chunk in resp.stream:
                # Pieces read from the page cache arrive without a thread hop, and send() may
                # complete at once: yield so the watcher can see a disconnect, once per
                # _YIELD_BYTES (every 1 MiB piece of a plain read; an encrypted body comes in
                # 64 KiB packages: a loop iteration each was 5% of its instructions in-process).
                unyielded += len(chunk)
                if unyielded >= _YIELD_BYTES:
                    unyielded = 0
                    await asyncio.sleep(0)
                if gone.is_set() or refused[0]:
                    return
                if x is not None:
                    x.bytes_out += len(chunk)
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
            idle_timeout_s=self.idle_timeout_s,
        )

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

    # --- dispatch --------------------------------------------------------------------
    async def _handle(self, req: Request, scope: Scope) -> Response:
        """Authenticate, refuse what the table does not dispatch, authorize once, run the handler.

        A CORS preflight (``_routes.UNAUTHENTICATED``) is answered without credentials. A browser
        POST form (an action with a ``form`` step) carries its credentials and its key in the
        body: the step reads the fields before the file and verifies them, and the key and the
        fields (as headers) it found are what is authorized, before a byte of the file is stored.
        An unsigned request (or form) is authorized as the anonymous principal (a bucket policy
        may allow it)."""
        unauthenticated = UNAUTHENTICATED.get(req.action)
        if unauthenticated is not None:
            return await unauthenticated(req, self.ctx)
        action = ACTIONS.get(req.action)
        headers = req.headers
        if action is not None and action.form is not None:
            found = await action.form(req, self.auth)
            auth = req.auth = found.auth
            req.key = found.key
            headers = found.headers
        else:
            auth = req.auth = await self.auth.verify(req)  # a SignedRequest: no copy of its parts
        if not self.sse_c_over_http:
            refuse_customer_key_over_http(headers, scope)
        # identity: an STS session's claims (temporary credentials), or None for a long-term key.
        if auth.access_key is not None:
            principal = tuple.__new__(Principal, (auth.access_key, auth.session))  # NamedTuple, no Python __new__
        elif action is None or req.bucket == EXTENSION_PREFIX:
            # An unsigned caller learns nothing of what we lack, and the /_tierstore/ extensions
            # (batch, query, datasets, admin) are for signed callers only.
            raise e.AccessDenied(ANONYMOUS_DENIED)
        else:
            principal = _ANONYMOUS
        if action is None:  # a known operation we lack, or none at all: touches nothing
            if req.bucket == EXTENSION_PREFIX:
                _extensions.refuse(req, self.ctx)
            refuse(req.method, req.bucket, req.key, req.query)
            raise AssertionError(req.action)  # refuse() always raises
        req.authz = RequestContext(  # positional: principal, api, checks, scheme, headers, query, scope, bucket_request
            principal,
            req.action,
            checks(action, req.bucket, req.key, req.query, headers),
            auth.scheme,
            headers,
            req.query,
            scope,
            req.key is None,
        )
        await self.authorizer.authorize(req.authz)
        try:
            return await action.handler(req, self.ctx)
        except e.NoSuchKey:
            if req.action in _KEY_READS and not await self._may_list(req):
                raise e.AccessDenied(ANONYMOUS_DENIED) from None
            raise

    async def _may_list(self, req: Request) -> bool:
        """AWS: a read of a missing key is 404 only for a caller who may list the bucket
        (``s3:ListBucket``), which could learn the answer anyway; anyone else gets 403, so a
        grant to read some keys is no oracle for which other keys exist."""
        assert req.authz is not None and req.bucket is not None
        return await self.ctx.entry_allowed(req, Check("s3:ListBucket", bucket_arn(req.bucket)))

    @staticmethod
    async def _name_query(req: Request) -> tuple[QueryService, QueryAction, str]:
        """Read a query-API request's (small) form and name the request after its action."""
        req.form, payload_sha256 = await read_form(req)
        service, name, action = lookup(req.form)
        req.action = f"{service.name}:{name}"
        return service, action, payload_sha256

    async def _handle_query(
        self,
        req: Request,
        scope: Scope,
        service: QueryService,
        action: QueryAction,
        payload_sha256: str,
        request_id: str,
    ) -> Response:
        """A query-API request (``_query``) whose form is read: authenticate it for its service,
        authorize its checks once, run its handler, answer AWS's XML."""
        assert req.form is not None
        auth = req.auth = await self.auth.verify_query(req, service.name, payload_sha256)
        call = QueryCall(req.action.partition(":")[2], req.form, auth.access_key, self.ctx, req)
        if auth.access_key is not None:
            req.authz = RequestContext(
                Principal(auth.access_key, auth.session),
                req.action,
                await action.checks(call),
                scheme=auth.scheme,
                headers=req.headers,
                query=req.form,  # the form's condition keys (sts:RoleSessionName, ...)
                scope=scope,
            )
            await self.authorizer.authorize(req.authz)
        elif not action.anonymous:
            raise e.MissingAuthenticationToken()
        result = await action.handler(call)
        body = query_response_body(service, call.action, result, request_id)
        return Response(200, [("content-type", "text/xml")], body)


def _decided_by(decision: Any) -> str | None:
    """``POLICY:STATEMENT`` that made the authorizer's decision (None: no policy did)."""
    return f"{decision.policy}:{decision.statement}" if decision is not None and decision.policy else None


def _expects_continue(scope: Scope) -> bool:
    return any(k.lower() == b"expect" and v.strip().lower() == b"100-continue" for k, v in scope["headers"])


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (any unread request body is discarded)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()
