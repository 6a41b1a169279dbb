"""The query-protocol dispatcher (api/_query.py) in-process: what a service registering actions
(IAM now, STS next) can rely on. ``S3App`` is driven with a fake ASGI receive/send and a
recording authorizer; a test service registers two actions, one anonymous."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.api import test_authorize
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tierstore import errors as e
from tierstore.api import S3App
from tierstore.api._authorize import Check, RequestContext
from tierstore.api._query import QueryAction, QueryCall, QueryService, register
from tierstore.api._xml import E

TEST = QueryService("tst", "2000-01-01", "urn:tierstore:test")
RAN: list[str] = []
_RUNNER = test_authorize._RUNNER
base = test_authorize.base  # the fixture: test_authorize's in-process app (module-scoped here too)


async def _echo(call: QueryCall) -> str:
    RAN.append(call.action)
    return E("Said", call.require("Say")) + E("Caller", call.access_key or "anonymous")


async def _checks(call: QueryCall) -> tuple[Check, ...]:
    return (Check(f"tst:{call.action}", f"arn:aws:tst:::{call.get('Say') or ''}"),)


register(
    TEST,
    {
        "TierstoreTestOpen": QueryAction(_echo, _checks, anonymous=True),
        "TierstoreTestSigned": QueryAction(_echo, _checks),
    },
)


@dataclass
class Recorder:
    deny: bool = False
    seen: list[RequestContext] = field(default_factory=list)

    async def authorize(self, request: RequestContext) -> None:
        self.seen.append(request)
        if self.deny:
            raise e.AccessDenied()


def _app(base: S3App, authorizer: Recorder) -> S3App:
    return S3App(base.service, base.auth, metrics=base.metrics, authorizer=authorizer)


def call(app: S3App, form: dict[str, str], *, service: str | None = "tst") -> tuple[int, str]:
    """POST / with ``form``, signed by botocore for ``service`` (None: unsigned)."""
    body = urlencode(form).encode()
    req = AWSRequest("POST", "http://127.0.0.1:9000/", data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})  # fmt: skip
    if service is not None:
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, "us-east-1").add_auth(req)
    headers = [(k.lower().encode(), v.encode()) for k, v in req.headers.items()]
    headers += [(b"host", b"127.0.0.1:9000"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "raw_path": b"/", "query_string": b"",
             "headers": headers, "client": ("127.0.0.5", 4242), "scheme": "http"}  # fmt: skip
    sent: list[dict[str, Any]] = []
    reads = [0]

    async def receive() -> dict[str, Any]:
        reads[0] += 1
        if reads[0] == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    _RUNNER[0].run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]).decode()


def test_a_signed_action_is_authorized_once_before_its_handler(base: S3App) -> None:
    rec = Recorder()
    RAN.clear()
    status, body = call(_app(base, rec), {"Action": "TierstoreTestSigned", "Version": "2000-01-01", "Say": "hi"})
    assert status == 200, body
    assert '<TierstoreTestSignedResponse xmlns="urn:tierstore:test">' in body
    assert f"<TierstoreTestSignedResult><Said>hi</Said><Caller>{ACCESS_KEY}</Caller>" in body
    ((ctx),) = rec.seen
    assert ctx.api == "tst:TierstoreTestSigned" and ctx.principal.access_key == ACCESS_KEY
    assert ctx.checks == (Check("tst:TierstoreTestSigned", "arn:aws:tst:::hi"),)
    denied = Recorder(deny=True)
    RAN.clear()
    status, body = call(_app(base, denied), {"Action": "TierstoreTestSigned", "Version": "2000-01-01", "Say": "x"})
    assert status == 403 and "<Code>AccessDenied</Code>" in body and "<ErrorResponse" in body
    assert RAN == []  # the handler never ran


def test_unsigned_requests_reach_only_anonymous_actions(base: S3App) -> None:
    rec = Recorder()
    RAN.clear()
    status, body = call(_app(base, rec), {"Action": "TierstoreTestSigned", "Version": "2000-01-01", "Say": "x"},
                        service=None)  # fmt: skip
    assert (status, "<Code>MissingAuthenticationToken</Code>" in body) == (403, True)
    assert RAN == [] and rec.seen == []
    status, body = call(_app(base, rec), {"Action": "TierstoreTestOpen", "Version": "2000-01-01", "Say": "yo"},
                        service=None)  # fmt: skip
    assert status == 200 and "<Said>yo</Said><Caller>anonymous</Caller>" in body
    assert RAN == ["TierstoreTestOpen"] and rec.seen == []  # no principal to authorize: the handler decides


def test_the_signature_must_be_for_the_actions_service(base: S3App) -> None:
    rec = Recorder()
    for service in ("s3", "iam"):
        status, body = call(_app(base, rec), {"Action": "TierstoreTestOpen", "Version": "2000-01-01", "Say": "a"},
                            service=service)  # fmt: skip
        assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
        assert "scoped to correct service: 'tst'" in body
    assert rec.seen == []


def test_an_action_belongs_to_one_service() -> None:
    other = QueryService("other", "2001-01-01", "urn:other")
    with pytest.raises(ValueError, match="already registered"):
        register(other, {"TierstoreTestOpen": QueryAction(_echo, _checks)})
