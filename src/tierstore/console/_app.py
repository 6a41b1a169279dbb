"""The web console's ASGI app: sessions, CSRF, routing, rendering (docs/console.md).

``ConsoleApp`` answers ``/console`` and below. Sign-in and the static files are the only paths
open without a session; every other page redirects to sign-in. Every POST carries the session's
CSRF token (form field ``csrf`` or header ``X-CSRF-Token``). Pages act only through
``Dispatch``: S3/STS calls signed with the session's credentials and answered by the server's
own dispatcher, so the console can do exactly what the same key can do with boto3.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from defusedxml import ElementTree

from tierstore.console._dispatch import Asgi, Credentials, Dispatch, S3Error
from tierstore.console._oidc import FLOW_COOKIE, FLOW_S, OidcFailed, OidcSignIn, session_name_of
from tierstore.console._session import COOKIE, LOGIN_COOKIE, Session, SessionSealer, same_token
from tierstore.crypto import MasterKey
from tierstore.engine._console_sessions import SignedOutSessions

__all__ = ["CONSOLE_PATH", "PAGES", "ConsoleApp", "Page", "Reply", "Web", "is_console_request", "route"]

log = logging.getLogger("tierstore.console")

CONSOLE_PATH = "/console"
SESSION_S = 3600  # a console session lasts an hour (GetSessionToken's DurationSeconds)
MAX_FORM_BYTES = 1024 * 1024  # a form or JSON body the console reads (policies, lifecycle XML, tags)
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SIGN_IN_FAILED = "Sign-in failed: that access key and secret do not open a session here."

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Page:
    """A nav entry: its path under /console, its title, and whether it is built yet."""

    slug: str
    title: str
    built: bool


# The nine pages of issue 19, in the order people rely on them.
PAGES = (
    Page("buckets", "Buckets", True),
    Page("browse", "Objects", True),
    Page("query", "Query", True),
    Page("datasets", "Datasets", True),
    Page("checkpoints", "Checkpoints", True),
    Page("models", "Models", True),
    Page("identity", "Identity", True),
    Page("tiers", "Tiers and lifecycle", True),
    Page("health", "Health and metrics", True),
)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


class Web:
    """One console request: what the handler reads (path, query, form, session) and how it acts
    (``s3``/``presign``: through the dispatcher as the session's principal) and answers."""

    def __init__(self, app: ConsoleApp, scope: dict[str, Any], receive: Receive, session: Session | None) -> None:
        self.app = app
        self.scope = scope
        self._receive = receive
        self.session = session
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: dict[str, str] = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        self.headers: dict[str, str] = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.cookies = _cookies(self.headers.get("cookie", ""))
        host = self.headers.get("host", "127.0.0.1")
        # Behind a TLS-terminating proxy the app sees http: the proxy's X-Forwarded-Proto says
        # https, so cookies get Secure and presigned URLs the page uses are https (not mixed content).
        forwarded = self.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        self.secure = scope.get("scheme") == "https" or forwarded == "https"
        self.endpoint = f"{'https' if self.secure else 'http'}://{host}"
        client = scope.get("client")
        self.client_addr: tuple[str, int] | None = (str(client[0]), int(client[1])) if client else None
        self.params: dict[str, str] = {}  # the route's path parameters
        self._body: bytes | None = None
        self._form: dict[str, str] | None = None

    # --- input --------------------------------------------------------------------------
    async def body(self) -> bytes:
        if self._body is None:
            parts: list[bytes] = []
            size = 0
            while True:
                msg = await self._receive()
                if msg["type"] == "http.disconnect":
                    break
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > MAX_FORM_BYTES:
                    raise Refused(413, "The form is too large.")
                parts.append(chunk)
                if not msg.get("more_body", False):
                    break
            self._body = b"".join(parts)
        return self._body

    async def form(self) -> dict[str, str]:
        if self._form is None:
            self._form = dict(parse_qsl((await self.body()).decode("utf-8", "replace"), keep_blank_values=True))
        return self._form

    async def json(self) -> Any:
        try:
            return json.loads(await self.body())
        except ValueError:
            raise Refused(400, "The request body is not JSON.") from None

    # --- acting as the session's principal ------------------------------------------------
    @property
    def creds(self) -> Credentials:
        assert self.session is not None
        return self.session.creds

    async def s3(self, operation: str, **params: Any) -> dict[str, Any]:
        """One S3 call through the dispatcher, as the session's principal; ``S3Error`` on refusal."""
        client = self.app.dispatch.client("s3", self.endpoint, self.creds)
        return await self.app.dispatch.call(client, operation, self.client_addr, **params)

    async def extension(self, method: str, path: str, query: str = "", body: bytes = b"", *, text: bool = False) -> Any:
        """A ``/_tierstore/`` extension call through the dispatcher, as the session's principal:
        its JSON answer (``text``: the body as text); ``S3Error`` (the S3 XML error's code and
        message) on refusal."""
        status, data = await self.app.dispatch.extension(
            self.endpoint, self.creds, method, path, self.client_addr, query=query, body=body
        )
        if status >= 300:
            raise _xml_error(status, data)
        if text:
            return data.decode("utf-8", "replace")
        return json.loads(data) if data else None

    def presign(self, operation: str, expires_s: int, **params: Any) -> str:
        """A presigned URL for ``operation`` signed with the session's credentials (valid while
        both its expiry and the session last: the dispatcher checks the session token)."""
        client = self.app.dispatch.client("s3", self.endpoint, self.creds)
        url: str = client.generate_presigned_url(operation, Params=params, ExpiresIn=expires_s)
        return url

    # --- answers --------------------------------------------------------------------------
    def render(self, template: str, status: int = 200, **values: Any) -> Reply:
        page = values.pop("page", None)
        html = self.app.templates.get_template(template).render(
            pages=PAGES,
            page=page,
            session=self.session,
            csrf=self.session.csrf if self.session else "",
            url=console_url,
            **values,
        )
        return Reply(status, html.encode())

    def redirect(self, location: str) -> Reply:
        return Reply(303, headers=[("location", location)])


def _xml_error(status: int, data: bytes) -> S3Error:
    try:
        root = ElementTree.fromstring(data)
        return S3Error(root.findtext("Code") or "Error", root.findtext("Message") or "", status)
    except ElementTree.ParseError:
        return S3Error("Error", data[:200].decode("utf-8", "replace"), status)


class Refused(Exception):
    """A console request refused before it acted (status, a message for the page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[Web], Awaitable[Reply]]
_ROUTES: list[tuple[str, tuple[str, ...], Handler]] = []


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    """Register a handler for ``METHOD /console/PATH``; ``{name}`` segments are parameters."""

    def register(handler: Handler) -> Handler:
        _ROUTES.append((method, tuple(p for p in path.split("/") if p), handler))
        return handler

    return register


def _match(method: str, parts: list[str]) -> tuple[Handler, dict[str, str]] | bool | None:
    """The handler and parameters; False when the path exists for another method; None: no such path."""
    other = False
    for m, pattern, handler in _ROUTES:
        if len(pattern) != len(parts):
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{"):
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            if m == method:
                return handler, params
            other = True
    return False if other else None


def console_url(path: str = "", **query: Any) -> str:
    """``/console/PATH?QUERY`` with each path segment and query value escaped (templates use it)."""
    segments = "/".join(quote(str(p), safe="") for p in path.split("/") if p) if path else ""
    url = f"{CONSOLE_PATH}/{segments}" if segments else CONSOLE_PATH + "/"
    items = {k: v for k, v in query.items() if v is not None and v != ""}
    return f"{url}?{urlencode(items)}" if items else url


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value
    return out


def _cookie(name: str, value: str, *, max_age_s: int, path: str, secure: bool, same_site: str = "Strict") -> str:
    attrs = f"{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite={same_site}"
    return attrs + ("; Secure" if secure else "")


class ConsoleApp:
    """``/console`` (docs/console.md). ``app`` is the server's S3 app, which every action goes
    through; ``master_key`` seals the session cookies; ``oidc``: sign-in with an OIDC provider
    when configured; ``signed_out``: the catalog's record of signed-out sessions (None: sign-out
    only drops the cookie)."""

    def __init__(
        self,
        app: Asgi,
        master_key: MasterKey,
        *,
        region: str,
        oidc: OidcSignIn | None = None,
        signed_out: SignedOutSessions | None = None,
    ) -> None:
        # the page modules register their routes when imported
        from tierstore.console import (  # noqa: F401
            _buckets,
            _checkpoints,
            _datasets,
            _health,
            _identity,
            _models,
            _objects,
            _pages,
            _query,
            _tiers,
        )

        self.dispatch = Dispatch(app, region=region)
        self.sealer = SessionSealer(master_key)
        self.oidc = oidc
        self.signed_out = signed_out
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("tierstore.console", "templates"),
            autoescape=True,  # every template, whatever its name: keys, metadata and tags are attacker input
        )
        self.templates.filters["size"] = human_size

    def __repr__(self) -> str:
        return "ConsoleApp()"

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        web = Web(self, scope, receive, None)
        try:
            reply = await self._answer(web)
        except Refused as exc:
            reply = _failure(web, exc.status, "Refused", exc.message)
        except S3Error as exc:
            if exc.code in ("ExpiredToken", "InvalidToken") and web.method != "POST":  # the session ended
                reply = web.redirect(console_url("login", next=_next_of(web)))
            else:
                reply = _failure(web, exc.status or 500, exc.code, exc.message)
        except Exception:
            log.exception("console: internal error on %s %s", scope["method"], scope["path"])
            reply = web.render(
                "message.html", 500, title="Internal error", message="The console failed; see the server log."
            )
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(len(reply.body)).encode()),
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"server", b"tierstore"),
        ]
        if not any(k == "cache-control" for k, _ in reply.headers):
            headers.append((b"cache-control", b"no-store"))
        headers += [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else reply.body})

    async def _answer(self, web: Web) -> Reply:
        rest = web.path[len(CONSOLE_PATH) :]
        parts = [p for p in rest.split("/") if p]
        if web.method not in ("GET", "HEAD", "POST"):
            raise Refused(405, "The console answers GET and POST only.")
        if parts[:1] == ["static"]:
            return _static(parts[1:])
        if parts == ["login"]:
            return await (_login_form(web) if web.method != "POST" else _login(web))
        if parts[:1] == ["login"] and web.method != "POST":
            return await _login_step(web, parts[1:])
        web.session = self.sealer.open(web.cookies.get(COOKIE, ""))
        out = self.signed_out
        if web.session is not None and out is not None and await out.signed_out(web.session.creds.access_key):
            web.session = None  # signed out (here or in any other worker or gateway)
        if web.session is None:  # no page without a session
            if web.method == "POST":
                raise Refused(401, "Your console session has ended; sign in again.")
            return web.redirect(console_url("login", next=_next_of(web)))
        if web.method == "POST":
            given = web.headers.get("x-csrf-token", "") or (await web.form()).get("csrf", "")
            if not same_token(given, web.session.csrf):
                raise Refused(
                    403, "This form did not come from your console session (its CSRF token is missing or wrong)."
                )
        if not parts:
            return web.redirect(console_url("buckets"))
        if parts == ["logout"]:
            if web.method != "POST":
                raise Refused(405, "Sign out with the button.")
            if self.signed_out is not None:  # every worker and gateway refuses the cookie from now on
                await self.signed_out.sign_out(web.session.creds.access_key, web.session.expires_s)
            reply = web.redirect(console_url("login"))
            reply.headers.append(("set-cookie", _cookie(COOKIE, "", max_age_s=0, path=CONSOLE_PATH, secure=web.secure)))
            return reply
        found = _match("GET" if web.method == "HEAD" else web.method, parts)
        if found is None:
            raise Refused(404, "There is no such console page.")
        if found is False:
            raise Refused(405, "That page does not take this method.")
        assert not isinstance(found, bool)
        handler, web.params = found
        return await handler(web)


def _failure(web: Web, status: int, title: str, message: str) -> Reply:
    """An error page, or ``{"error"}`` for console.js's JSON calls."""
    if web.headers.get("content-type", "").startswith("application/json"):
        return Reply(status, json.dumps({"error": f"{title}: {message}"}).encode(), "application/json")
    return web.render("message.html", status, title=title, message=message)


def _next_of(web: Web) -> str:
    qs = web.scope.get("query_string", b"").decode("latin-1")
    return web.path + (f"?{qs}" if qs else "")


def _safe_next(value: str) -> str:
    """Where to go after sign-in: a console path only (never another site: an open redirect)."""
    if value.startswith(CONSOLE_PATH + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return console_url("buckets")


async def _login_form(web: Web, *, status: int = 200, error: str = "") -> Reply:
    token = secrets.token_urlsafe(24)
    oidc_name = web.app.oidc.name if web.app.oidc is not None else ""
    reply = web.render(
        "login.html", status, login_csrf=token, error=error, next=_safe_next(web.query.get("next", "")),
        oidc_name=oidc_name,
    )  # fmt: skip
    reply.headers.append(
        ("set-cookie", _cookie(LOGIN_COOKIE, token, max_age_s=3600, path=CONSOLE_PATH, secure=web.secure))
    )
    return reply


async def _login(web: Web) -> Reply:
    """Sign in: the access key and secret sign a GetSessionToken call through the dispatcher
    (verified as any request signature is); its temporary credentials become the session.
    A wrong key and a wrong secret get the same answer; neither is logged."""
    form = await web.form()
    if not same_token(form.get("csrf", ""), web.cookies.get(LOGIN_COOKIE, "")):
        return await _login_form(web, status=403, error="The sign-in form expired; try again.")
    access_key = form.get("access_key", "").strip()
    secret = form.get("secret_key", "")
    if not access_key or not secret or not access_key.isascii() or not secret.isascii():
        return await _login_form(web, status=401, error=SIGN_IN_FAILED)
    dispatch = web.app.dispatch
    try:
        sts = dispatch.sign_in_client(web.endpoint, access_key, secret)
        answer = await dispatch.call(sts, "get_session_token", web.client_addr, DurationSeconds=SESSION_S)
    except S3Error as exc:
        if exc.code == "AccessDenied":  # the signature was good: say why this key has no session
            return await _login_form(web, status=403, error=f"This key cannot open a console session: {exc.message}")
        return await _login_form(web, status=401, error=SIGN_IN_FAILED)
    reply = web.redirect(_safe_next(form.get("next", "")))
    return await _start_session(web, answer["Credentials"], reply)


async def _start_session(web: Web, c: dict[str, Any], reply: Reply) -> Reply:
    """Seal STS credentials ``c`` (GetSessionToken's, or AssumeRoleWithWebIdentity's) into the
    session cookie that ``reply`` sets: the same session whichever way the user signed in."""
    dispatch = web.app.dispatch
    creds = Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    who_client = dispatch.client("sts", web.endpoint, creds)
    arn = str((await dispatch.call(who_client, "get_caller_identity", web.client_addr)).get("Arn", ""))
    if arn.endswith(":root"):
        who = "root"
    elif ":assumed-role/" in arn:  # ROLE/SESSION
        who = arn.partition(":assumed-role/")[2]
    else:
        who = arn.rpartition("/")[2] or arn
    expires_s = (
        int(c["Expiration"].timestamp()) if hasattr(c["Expiration"], "timestamp") else int(time.time()) + SESSION_S
    )
    value, _ = web.app.sealer.seal(creds, expires_s, who)
    max_age = max(0, expires_s - int(time.time()))
    reply.headers.append(
        ("set-cookie", _cookie(COOKIE, value, max_age_s=max_age, path=CONSOLE_PATH, secure=web.secure))
    )
    reply.headers.append(("set-cookie", _cookie(LOGIN_COOKIE, "", max_age_s=0, path=CONSOLE_PATH, secure=web.secure)))
    return reply


async def _login_step(web: Web, parts: list[str]) -> Reply:
    """``login/oidc`` (to the provider), ``login/oidc/callback`` (back from it), ``login/done``."""
    if parts == ["done"]:  # the first same-site page after a sign-in (see _oidc_callback)
        return web.render("signed_in.html", title="Signed in", next=_safe_next(web.query.get("next", "")))
    oidc = web.app.oidc
    if oidc is None or parts not in (["oidc"], ["oidc", "callback"]):
        raise Refused(404, "There is no such console page.")
    flow_path = CONSOLE_PATH + "/login/oidc"
    if parts == ["oidc"]:
        flow, value = oidc.new_flow(_safe_next(web.query.get("next", "")))
        try:
            location = await oidc.authorize_url(flow, web.endpoint)
        except OidcFailed as exc:
            return web.render("message.html", exc.status, title="Sign-in failed", message=exc.message)
        reply = web.redirect(location)
        # Lax, not Strict: the provider's redirect back is a cross-site navigation, on which a
        # Strict cookie is not sent. It holds only this flow's state, nonce and verifier.
        cookie = _cookie(FLOW_COOKIE, value, max_age_s=FLOW_S, path=flow_path, secure=web.secure, same_site="Lax")
        reply.headers.append(("set-cookie", cookie))
        return reply
    reply = await _oidc_callback(web, oidc)
    reply.headers.append(("set-cookie", _cookie(FLOW_COOKIE, "", max_age_s=0, path=flow_path, secure=web.secure)))
    return reply


async def _oidc_callback(web: Web, oidc: OidcSignIn) -> Reply:
    """Back from the provider: check the state, exchange the code (PKCE) for an ID token, and
    assume the configured role with it through the dispatcher (STS AssumeRoleWithWebIdentity:
    the server verifies the token, the role's trust policy decides)."""
    flow = oidc.open_flow(web.cookies.get(FLOW_COOKIE, ""))
    try:
        if flow is None or not same_token(web.query.get("state", ""), flow.state):
            raise OidcFailed(
                400, "This sign-in could not be verified (expired, or its state does not match); start again."
            )
        error = web.query.get("error", "")
        if error:
            shown = error if error.replace("_", "").isalnum() and len(error) <= 64 else "an error"
            raise OidcFailed(403, f"The identity provider did not sign you in ({shown}).")
        code = web.query.get("code", "")
        if not code:
            raise OidcFailed(400, "The identity provider sent no sign-in code.")
        token, subject = await oidc.id_token(code, flow, web.endpoint)
        sts = web.app.dispatch.anonymous_client(web.endpoint)
        try:
            answer = await web.app.dispatch.call(
                sts, "assume_role_with_web_identity", web.client_addr,
                RoleArn=oidc.role_arn, RoleSessionName=session_name_of(subject), WebIdentityToken=token,
                DurationSeconds=SESSION_S,
            )  # fmt: skip
        except S3Error as exc:
            if exc.code == "AccessDenied":
                raise OidcFailed(403, f"The role does not accept your identity: {exc.message}") from None
            raise OidcFailed(exc.status or 400, f"The role could not be assumed ({exc.code}: {exc.message})") from None
    except OidcFailed as exc:
        return web.render("message.html", exc.status, title="Sign-in failed", message=exc.message)
    # The provider's redirect made this a cross-site navigation: the browser would not send the
    # new SameSite=Strict cookie on a redirect from here. login/done is a page of ours whose
    # refresh is a same-site navigation; the address bar no longer shows the code either.
    reply = web.redirect(console_url("login/done", next=flow.next))
    return await _start_session(web, answer["Credentials"], reply)


_STATIC: dict[str, tuple[bytes, str]] = {}


def _static(parts: list[str]) -> Reply:
    """A file of the package's static/ directory (shipped in the wheel: no CDN)."""
    if len(parts) != 1 or parts[0].startswith("."):
        raise Refused(404, "There is no such file.")
    name = parts[0]
    if name not in _STATIC:
        item = resources.files("tierstore.console").joinpath("static", name)
        if not item.is_file():
            raise Refused(404, "There is no such file.")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind == "application/javascript":
            kind += "; charset=utf-8"
        _STATIC[name] = (item.read_bytes(), kind)
    body, kind = _STATIC[name]
    return Reply(200, body, kind, [("cache-control", "public, max-age=3600")])


def human_size(n: int | float | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"


# Query parameters that make a request presigned (SigV4, SigV2): an S3 request, not a page.
_PRESIGNED_PARAMS = frozenset({b"X-Amz-Signature", b"X-Amz-Credential", b"Signature", b"AWSAccessKeyId"})


def is_console_request(scope: dict[str, Any], domain: str | None = None) -> bool:
    """Whether the server hands this request to the console rather than the S3 API.

    ``/console`` is also a valid bucket name, so only a browser's request goes to the console:
    path-style, unsigned (no ``Authorization`` header, no presigned query). Signed requests for a
    bucket named ``console`` (and every virtual-hosted request) stay S3 requests; an anonymous
    request for such a bucket's objects is the one thing the console shadows (docs/console.md)."""
    path: str = scope["path"]
    if not (path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")):
        return False
    qs: bytes = scope.get("query_string", b"")
    if qs and any(p.partition(b"=")[0] in _PRESIGNED_PARAMS for p in qs.split(b"&")):
        return False
    for k, v in scope["headers"]:
        name = k.lower()
        if name == b"authorization":
            return False
        if domain and name == b"host" and v.decode("latin-1").split(":", 1)[0].lower().endswith("." + domain):
            return False
    return True
