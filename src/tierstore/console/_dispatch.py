"""Console actions as S3/STS requests through the server's own dispatcher, in-process.

The console never calls the engine. Each action is a botocore call (the same client code boto3
users run), signed SigV4 with the session's temporary credentials, whose HTTP request is handed
to the server's ASGI app (``S3App``) in this process instead of a socket: botocore's
``before-send`` event returns the app's answer. So a console action is authenticated, authorized
(same action name, same policy evaluation), audited, logged and counted exactly as the same call
from boto3 would be, and fails with the same S3 error. botocore is synchronous: each call runs in
a worker thread and waits for the app, which runs on the event loop.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import botocore.session
from botocore import UNSIGNED
from botocore.awsrequest import AWSPreparedRequest, AWSRequest, AWSResponse, HeadersDict
from botocore.config import Config
from botocore.exceptions import ClientError

__all__ = ["Credentials", "Dispatch", "S3Error", "sync_call"]

Scope = dict[str, Any]
Asgi = Callable[
    [Scope, Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]
]

T = TypeVar("T")
_CLIENTS_MAX = 256  # cached botocore clients (one per credentials, endpoint and service)
_THREADS = 16  # console calls in flight per worker process (each waits for the app)


@dataclass(frozen=True)
class Credentials:
    """Temporary credentials of a console session (never logged: ``repr`` hides the secret)."""

    access_key: str
    secret_key: str
    session_token: str

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r})"


class S3Error(Exception):
    """An S3/STS error answer: its code, message and HTTP status, as a boto3 user would see them."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class _Body(io.BytesIO):
    """The response body as botocore reads it (``stream()`` for parsed answers, ``read()`` for
    a streamed GetObject body)."""

    def stream(self, amt: int = 64 * 1024, decode_content: bool = True) -> Iterator[bytes]:
        while chunk := self.read(amt):
            yield chunk


class Dispatch:
    """Runs botocore calls against ``app`` in-process (see the module docstring).

    ``endpoint`` of a call is the URL the browser reached the console at (scheme and Host):
    requests are signed for it, and presigned URLs point at it, so the browser can use them."""

    def __init__(self, app: Asgi, *, region: str) -> None:
        self._app = app
        self.region = region
        self._session = botocore.session.get_session()
        self._clients: OrderedDict[tuple[str, str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # the app's loop (one per worker process)
        # A pool of its own: a call's thread waits for the app, which may itself need the loop's
        # default executor (file and catalog work); sharing it could starve the app of threads.
        self._pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="tierstore-console")

    def client(self, service: str, endpoint: str, creds: Credentials) -> Any:
        """A botocore client for ``service`` ("s3" or "sts") with a session's credentials whose
        requests go to the app (cached per credentials and endpoint)."""
        cache_key = (service, endpoint, creds.access_key, creds.session_token)
        with self._lock:
            client = self._clients.get(cache_key)
            if client is not None:
                self._clients.move_to_end(cache_key)
                return client
        client = self._new_client(service, endpoint, creds.access_key, creds.secret_key, creds.session_token)
        with self._lock:
            self._clients[cache_key] = client
            while len(self._clients) > _CLIENTS_MAX:
                self._clients.popitem(last=False)
        return client

    def sign_in_client(self, endpoint: str, access_key: str, secret_key: str) -> Any:
        """An STS client with long-term keys, for the sign-in call only (never cached). Its
        GetSessionToken carries ``TierstoreConsole=true`` (signed with the rest of the form): the
        session is a console sign-in's, which may call IAM as the key's policies allow (AWS's
        GetSessionToken sessions may not; its console sign-in may)."""
        client = self._new_client("sts", endpoint, access_key, secret_key, None)
        client.meta.events.register("before-call.sts.GetSessionToken", _console_session)
        return client

    def anonymous_client(self, endpoint: str) -> Any:
        """An unsigned STS client, for AssumeRoleWithWebIdentity (the ID token is the credential)."""
        return self._new_client("sts", endpoint, None, None, None)

    def _new_client(
        self, service: str, endpoint: str, access_key: str | None, secret_key: str | None, token: str | None
    ) -> Any:
        client = self._session.create_client(
            service,
            endpoint_url=endpoint,
            region_name=self.region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=token,
            config=Config(
                signature_version="s3v4" if access_key is not None else UNSIGNED,
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        client.meta.events.register("before-send", self._before_send)
        return client

    def _before_send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        """botocore's hook: answer ``request`` with the app (on its loop) instead of the network."""
        # The loop of the call running in this thread; a thread of a library's own (pyarrow reads
        # a file object from its I/O threads) falls back to the loop the app runs on.
        loop = _CALL.loop or self._loop
        assert loop is not None, "a console client used before any Dispatch.call"
        future = asyncio.run_coroutine_threadsafe(self._asgi(request, _CALL.client_addr), loop)
        return future.result()

    async def _asgi(self, request: AWSPreparedRequest, client_addr: tuple[str, int] | None) -> AWSResponse:
        url = urlsplit(request.url)
        headers: list[tuple[bytes, bytes]] = []
        has_host = False
        for name, value in request.headers.items():
            lname = name.lower()
            has_host = has_host or lname == "host"
            raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
            headers.append((lname.encode("latin-1"), raw))
        if not has_host:
            headers.append((b"host", url.netloc.encode("latin-1")))
        body = request.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:  # a file-like body (botocore wraps some): read it whole; console bodies are small
            data = body.read()
            if isinstance(data, str):
                data = data.encode()
        if data and not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(data)).encode()))
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": unquote(url.path),
            "raw_path": url.path.encode("latin-1"),
            "query_string": url.query.encode("latin-1"),
            "headers": headers,
            "client": client_addr,
            "server": None,
        }
        sent = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            await never.wait()  # the app watches for a disconnect while streaming: none comes
            return {"type": "http.disconnect"}

        status = 500
        out_headers = HeadersDict()
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    name, value = k.decode("latin-1"), v.decode("latin-1")
                    out_headers[name] = f"{out_headers[name]},{value}" if name in out_headers else value
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, send)
        return AWSResponse(request.url, status, out_headers, _Body(b"".join(chunks)))

    async def extension(
        self, endpoint: str, creds: Credentials, method: str, path: str, client_addr: tuple[str, int] | None = None,
        *, query: str = "", body: bytes = b"", content_type: str = "application/json",
    ) -> tuple[int, bytes]:  # fmt: skip
        """A ``/_tierstore/`` extension request (which botocore does not model), signed as the
        ``tierstore`` client signs it (SigV4, service ``s3``) and answered by the app:
        (status, body). The caller reads the JSON body, or the error in it."""
        from botocore.auth import S3SigV4Auth
        from botocore.credentials import Credentials as BotoCredentials

        url = f"{endpoint}{path}" + (f"?{query}" if query else "")
        headers = {"content-type": content_type} if body else {}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        boto_creds = BotoCredentials(creds.access_key, creds.secret_key, creds.session_token)
        S3SigV4Auth(boto_creds, "s3", self.region).add_auth(request)
        answer = await self._asgi(request.prepare(), client_addr)
        return answer.status_code, answer.content

    async def in_thread(self, fn: Callable[[], T], client_addr: tuple[str, int] | None = None) -> T:
        """Run ``fn`` in a worker thread that may use console clients (several calls, or a
        reader that calls them: the Parquet preview reads a footer through ranged GETs)."""
        loop = self._loop = asyncio.get_running_loop()

        def run() -> T:
            _CALL.loop, _CALL.client_addr = loop, client_addr
            try:
                return fn()
            finally:
                _CALL.loop, _CALL.client_addr = None, None

        return await loop.run_in_executor(self._pool, run)

    async def call(
        self, client: Any, operation: str, client_addr: tuple[str, int] | None = None, **params: Any
    ) -> dict[str, Any]:
        """Run ``client.OPERATION(**params)`` in a thread; an S3 error answer raises ``S3Error``.
        ``client_addr``: the browser's address (the access and audit logs name it)."""
        loop = self._loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _run, client, operation, loop, client_addr, params)


def _console_session(params: dict[str, Any], **_: Any) -> None:
    """botocore's hook before signing: the form's ``TierstoreConsole`` parameter (not in its model)."""
    params["body"]["TierstoreConsole"] = "true"


class _Call(threading.local):
    """The event loop (and browser address) of the call running in this thread."""

    loop: asyncio.AbstractEventLoop | None = None
    client_addr: tuple[str, int] | None = None


_CALL = _Call()


def _run(
    client: Any, operation: str, loop: asyncio.AbstractEventLoop, client_addr: tuple[str, int] | None,
    params: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    _CALL.loop, _CALL.client_addr = loop, client_addr
    try:
        return sync_call(client, operation, **params)
    finally:
        _CALL.loop, _CALL.client_addr = None, None


def sync_call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """``client.OPERATION(**params)`` in a thread run by ``Dispatch``; an error answer raises ``S3Error``."""
    try:
        result: dict[str, Any] = getattr(client, operation)(**params)
        return result
    except ClientError as exc:
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        raise S3Error(str(err.get("Code", "")), str(err.get("Message", "")), status) from None
