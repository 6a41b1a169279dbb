"""``/_tierstore/admin/metrics|audit|restores`` (api/_ops_ext.py: what the console's pages 8-9
read) and the console sign-in's session, which may call IAM where a plain GetSessionToken
session may not (docs/console.md, docs/security.md)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess
from tierstore.client import TierstoreClient, TierstoreClientError, resolve_settings


def _iam(server: ServerProcess, key: str, secret: str, token: str | None = None) -> Any:
    return boto3.client(
        "iam", endpoint_url=server.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
        aws_session_token=token, region_name="us-east-1",
    )  # fmt: skip


def _session(server: ServerProcess, *, console: bool) -> dict[str, str]:
    sts = boto3.client(
        "sts", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )  # fmt: skip
    if console:  # what the console's sign-in adds to the form (signed with it)
        sts.meta.events.register(
            "before-call.sts.GetSessionToken", lambda params, **_: params["body"].update(TierstoreConsole="true")
        )
    creds: dict[str, str] = sts.get_session_token(DurationSeconds=900)["Credentials"]
    return creds


def test_only_a_console_session_may_call_iam(server: ServerProcess) -> None:
    plain = _session(server, console=False)
    with pytest.raises(ClientError) as info:
        _iam(server, plain["AccessKeyId"], plain["SecretAccessKey"], plain["SessionToken"]).list_users()
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    console = _session(server, console=True)
    users = _iam(server, console["AccessKeyId"], console["SecretAccessKey"], console["SessionToken"]).list_users()
    assert isinstance(users["Users"], list)


def test_admin_endpoints_need_tierstore_admin(server: ServerProcess, client: TierstoreClient) -> None:
    text = client._send("GET", "/_tierstore/admin/metrics", None).data.decode()
    assert "# TYPE tierstore_s3_requests_total counter" in text
    assert client._call("GET", "/_tierstore/admin/restores", None) == {"restores": []}
    with pytest.raises(TierstoreClientError) as refused:  # the shared server writes no audit log
        client._call("GET", "/_tierstore/admin/audit", None)
    assert (refused.value.status, refused.value.code) == (501, "NotImplemented")
    with pytest.raises(TierstoreClientError) as wrong:
        client._call("POST", "/_tierstore/admin/audit", {})
    assert (wrong.value.status, wrong.value.code) == (405, "MethodNotAllowed")
    iam = _iam(server, ACCESS_KEY, SECRET_KEY)
    user = f"ops-{uuid.uuid4().hex[:10]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    settings = resolve_settings(server.endpoint, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    someone = TierstoreClient(settings)
    for path in ("metrics", "audit", "restores"):
        with pytest.raises(TierstoreClientError) as denied:
            someone._send("GET", f"/_tierstore/admin/{path}", None)
        assert (denied.value.status, denied.value.code) == (403, "AccessDenied")
