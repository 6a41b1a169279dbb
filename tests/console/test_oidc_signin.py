"""Console sign-in with an OIDC provider, and sign-out that ends the session everywhere, in a
real browser (docs/console.md "Sign-in with an OIDC provider", "Sign-out").

A server of its own (two workers) whose console signs in through the local provider of
tests/oidc.py (authorization code flow with PKCE; the provider consents at once for its
configured user) and assumes a role whose trust policy admits only ``alice``."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, ServerProcess, make_client
from tests.console.conftest import sign_in
from tests.oidc import OidcProvider

CLIENT_ID = "tierstore-console"
CLIENT_SECRET = "client-secret-" + uuid.uuid4().hex
ROLE = "console-readers"
ROLE_ARN = f"arn:aws:iam::000000000000:role/{ROLE}"
OPEN, CLOSED = "oidc-open", "oidc-closed"


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        provider.client_secret = CLIENT_SECRET
        yield provider


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider) -> Iterator[ServerProcess]:
    args = [
        "--workers", "2",
        "--console-oidc-issuer", idp.issuer, "--console-oidc-client-id", CLIENT_ID,
        "--console-oidc-role", ROLE_ARN, "--console-oidc-name", "Test IdP",
    ]  # fmt: skip
    srv = ServerProcess(tmp_path_factory.mktemp("oidc") / "data", extra_args=args)
    with pytest.MonkeyPatch.context() as env:  # the client secret from the environment, as an operator passes it
        env.setenv("TIERSTORE_CONSOLE_OIDC_CLIENT_SECRET", CLIENT_SECRET)
        srv.start()
    try:
        iam = boto3.client(
            "iam", endpoint_url=srv.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip
        iam.create_open_id_connect_provider(Url=idp.issuer, ClientIDList=[CLIENT_ID], ThumbprintList=[])
        trust = {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow", "Principal": {"Federated": f"arn:aws:iam::000000000000:oidc-provider/{idp.name}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{idp.name}:sub": "alice", f"{idp.name}:aud": CLIENT_ID}},
            }],
        }  # fmt: skip
        iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
        allowed = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"},
                {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
                 "Resource": [f"arn:aws:s3:::{OPEN}", f"arn:aws:s3:::{OPEN}/*"]},
            ],
        }  # fmt: skip
        iam.put_role_policy(RoleName=ROLE, PolicyName="read-open", PolicyDocument=json.dumps(allowed))
        s3 = make_client(srv.endpoint)
        for name in (OPEN, CLOSED):
            s3.create_bucket(Bucket=name)
            s3.put_object(Bucket=name, Key=f"in-{name}.txt", Body=b"x")
        yield srv
    finally:
        srv.stop()


def _get(server: ServerProcess, path: str, cookie: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # a new connection: any worker
    try:
        conn.request("GET", path, headers={"cookie": cookie})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("location", "")
    finally:
        conn.close()


def _session_cookie(page: Any) -> str:
    c = next(c for c in page.context.cookies() if c["name"] == "tierstore_console")
    return f"tierstore_console={c['value']}"


def test_oidc_sign_in_acts_as_the_role(page, oidc_server: ServerProcess, idp: OidcProvider) -> None:  # type: ignore[no-untyped-def]
    idp.user = "alice"
    refusals = idp.token_refusals
    page.goto(f"{oidc_server.endpoint}/console/browse/{OPEN}")  # no session: sign-in, then back here
    page.click("text=Sign in with Test IdP")
    page.wait_for_url(f"**/console/browse/{OPEN}")
    assert page.locator("header .who span").inner_text() == f"{ROLE}/alice"
    assert f"in-{OPEN}.txt" in page.locator("main").inner_text()
    assert idp.token_refusals == refusals  # the code was exchanged once, PKCE and client secret good
    cookie = next(c for c in page.context.cookies() if c["name"] == "tierstore_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "tierstore_console_oidc" not in {c["name"] for c in page.context.cookies()}  # the flow is over
    # What the role allows and not more: the other bucket's listing and a bucket creation are refused.
    page.goto(f"{oidc_server.endpoint}/console/browse/{CLOSED}")
    assert "AccessDenied" in page.locator("main").inner_text()
    page.goto(f"{oidc_server.endpoint}/console/buckets")
    page.fill("#create-bucket input[name=name]", f"made-by-role-{uuid.uuid4().hex[:8]}")
    page.click("#create-bucket button[type=submit]")
    assert "AccessDenied" in page.locator("main").inner_text()
    log = Path(oidc_server.log_path).read_text()
    assert CLIENT_SECRET not in log and "eyJ" not in log  # neither the client secret nor a token (JWT)


def test_a_role_that_refuses_the_user_says_so(page, oidc_server: ServerProcess, idp: OidcProvider) -> None:  # type: ignore[no-untyped-def]
    idp.user = "mallory"  # the trust policy admits alice only
    try:
        page.goto(f"{oidc_server.endpoint}/console/login")
        page.click("text=Sign in with Test IdP")
        page.wait_for_load_state()
        text = page.locator("main").inner_text()
        assert "Sign-in failed" in text and "does not accept your identity" in text
        assert "eyJ" not in page.content()  # the ID token (a JWT) is never shown
        assert "tierstore_console" not in {c["name"] for c in page.context.cookies()}
        idp.user = None  # the user declines at the provider
        page.goto(f"{oidc_server.endpoint}/console/login")
        page.click("text=Sign in with Test IdP")
        assert "did not sign you in (access_denied)" in page.locator("main").inner_text()
        idp.user, idp.client_secret = "alice", "another-secret"  # the provider refuses the exchange
        page.goto(f"{oidc_server.endpoint}/console/login")
        page.click("text=Sign in with Test IdP")
        assert "did not exchange the sign-in code (invalid_grant)" in page.locator("main").inner_text()
        assert "tierstore_console" not in {c["name"] for c in page.context.cookies()}
    finally:
        idp.user, idp.client_secret = "alice", CLIENT_SECRET


def test_a_callback_without_its_flow_is_refused(page, oidc_server: ServerProcess, idp: OidcProvider) -> None:  # type: ignore[no-untyped-def]
    # A callback this browser did not start (a forged or replayed redirect): no flow cookie, no session.
    page.goto(f"{oidc_server.endpoint}/console/login/oidc/callback?code=stolen&state=guessed")
    assert "state does not match" in page.locator("main").inner_text()
    assert "tierstore_console" not in {c["name"] for c in page.context.cookies()}


def test_sign_out_ends_the_session_in_every_worker(page, oidc_server: ServerProcess) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, oidc_server)
    assert page.url.endswith("/console/buckets")
    copied = _session_cookie(page)
    assert all(_get(oidc_server, "/console/buckets", copied)[0] == 200 for _ in range(4))
    page.click("header .who button")
    assert "/console/login" in page.url
    for _ in range(6):  # new connections: the workers take turns; none opens the signed-out session
        status, location = _get(oidc_server, "/console/buckets", copied)
        assert (status, location.split("?")[0]) == (303, "/console/login")


def test_serve_refuses_oidc_options_that_do_not_fit(tmp_path: Path) -> None:
    for extra, said in (
        ([], "needs --console-oidc-client-id and --console-oidc-role"),
        (["--console-oidc-client-id", CLIENT_ID, "--console-oidc-role", "console-readers"], "must be a role ARN"),
    ):
        args = ["serve", "--data", str(tmp_path / "data"), "--address", "127.0.0.1:0"]
        args += ["--console-oidc-issuer", "http://127.0.0.1:1/realm", *extra]
        env = dict(os.environ, TIERSTORE_ACCESS_KEY=ACCESS_KEY, TIERSTORE_SECRET_KEY=SECRET_KEY)
        proc = subprocess.run(
            [sys.executable, "-m", "tierstore", *args], check=False, capture_output=True, text=True, env=env, timeout=60
        )
        assert proc.returncode == 1 and said in proc.stderr, proc.stderr
